/* MBPO_STATIC link test, file 1 of 2: a private copy of the library. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int static_b_main(void);
int main(void) {
    mbpo_rng rng;
    mbpo_rng_seed(&rng, 2);
    return static_b_main() && mbpo_rng_u64(&rng) != 0 ? 0 : 1;
}
