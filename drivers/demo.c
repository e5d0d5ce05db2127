/* mbpo-demo: the embedded default end to end - shapes world, mining, MBPO training, scoring,
   the before/after table and pictures (make demo), or the ablation over methods and seeds
   (make demo-ablation). Parses flags, calls mbpo_demo (see mbpo.h). */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"
#define MBPO_DEMO_IMPLEMENTATION
#include "../demo/mbpo_demo.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    mbpo_demo_opts o;
    int quiet = 0, device = 0, rc;
    mbpo_demo_defaults(&o);
    {
        mbpo_flag flags[] = {
            { "--model", "DIR", MBPO_FLAG_STRING, &o.model_dir, NULL, "the SFT-warm-started tiny model to start from" },
            { "--out", "DIR", MBPO_FLAG_STRING, &o.out_dir, NULL, "where everything goes; rerun to continue" },
            { "--ablation", NULL, MBPO_FLAG_SWITCH, &o.ablation, NULL,
              "SFT, offline-rand, offline, online and mbpo over --seeds seeds (default: the demo)" },
            { "--seeds", "N", MBPO_FLAG_INT, &o.seeds, "[1, 1000]", "ablation seeds" },
            { "--pool", "N", MBPO_FLAG_INT, &o.n_pool, ">= 1", "images in the mining pool" },
            { "--test", "N", MBPO_FLAG_INT, &o.n_test, ">= 1", "images per test split" },
            { "--world-seed", "S", MBPO_FLAG_UINT64, &o.world_seed, NULL, "the world's seed (the SFT model saw seed 1)" },
            { "--top-k", "N", MBPO_FLAG_INT, &o.top_k, ">= 0", "chosen responses kept by IIG, 0 = all" },
            { "--mine-temperature", "T", MBPO_FLAG_DOUBLE, &o.mine_temperature, ">= 0", "sampling of the rejected responses" },
            { "--steps", "N", MBPO_FLAG_INT64, &o.steps, ">= 1", "training steps per run" },
            { "--lr", "X", MBPO_FLAG_DOUBLE, &o.lr, "> 0", "AdamW learning rate" },
            { "--batch", "N", MBPO_FLAG_INT, &o.batch, ">= 1", "prompts per step" },
            { "--G", "N", MBPO_FLAG_INT, &o.G, ">= 2", "rollouts per online prompt" },
            { "--max-new-tokens", "N", MBPO_FLAG_INT, &o.max_new_tokens, ">= 1", "longest response when mining, training and scoring" },
            { "--device", "D", MBPO_FLAG_CHOICE, &device, "cpu|cuda",
              "where mining, training and scoring compute (cuda: bf16, the build of make cuda); IIG of the pairs stays on the CPU" },
            { "--quiet", NULL, MBPO_FLAG_SWITCH, &quiet, NULL, "no progress lines" },
        };
        if (!mbpo_flags_handle("mbpo-demo", "[options]", flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    o.device = (mbpo_device)device;   /* cpu, cuda = MBPO_DEVICE_CPU, _CUDA */
    o.log = quiet ? NULL : stderr;
    o.report = stdout;
    if (!mbpo_demo(&o)) { fprintf(stderr, "mbpo-demo: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
