/* Two-file link test, file 1 of 2: the one translation unit with the implementation. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int link_user_main(void);
int main(void) { return link_user_main() && mbpo_failure_reason() != NULL ? 0 : 1; }
