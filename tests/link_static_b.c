/* MBPO_STATIC link test, file 2 of 2: a second private copy in the same program. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int static_b_main(void) {
    mbpo_json *j = mbpo_json_parse("[1]", 3, "b");
    int ok = j != NULL && j->count == 1;
    mbpo_json_free(j);
    return ok;
}
