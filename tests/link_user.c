/* Two-file link test, file 2 of 2: a plain user of the API (declarations only). */
#include "../mbpo.h"

int link_user_main(void) {
    mbpo_rng rng;
    mbpo_config cfg;
    mbpo_rng_seed(&rng, 1);
    /* a call that fails, so the failure reason crosses the file boundary */
    return mbpo_config_load(&cfg, "/nonexistent/config.json") == 0 && mbpo_failure_reason()[0] != 0 &&
           mbpo_rng_u64(&rng) != 0;
}
