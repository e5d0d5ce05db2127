/* mbpo-demo: the embedded default end to end - shapes world, mining, MBPO training, scoring,
   the before/after table and pictures (make demo), or the ablation over methods and seeds
   (make demo-ablation). Parses flags, calls mbpo_demo (see mbpo.h). */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"
#define MBPO_DEMO_IMPLEMENTATION
#include "../demo/mbpo_demo.h"

#include <stdlib.h>
#include <string.h>

static void usage(const mbpo_demo_opts *d) {
    printf("usage: mbpo-demo [options]\n"
           "  --model DIR          the SFT-warm-started tiny model to start from (default %s)\n"
           "  --out DIR            where everything goes; rerun to continue (default %s)\n"
           "  --ablation           SFT, offline-rand, offline, online and mbpo over --seeds seeds (default: the demo)\n"
           "  --seeds N            ablation seeds (default %d)\n"
           "  --pool N             images in the mining pool (default %d)\n"
           "  --test N             images per test split (default %d)\n"
           "  --world-seed S       the world's seed (default %llu; the SFT model saw seed 1)\n"
           "  --top-k N            chosen responses kept by IIG (default %d)\n"
           "  --mine-temperature T sampling of the rejected responses (default %g)\n"
           "  --steps N            training steps per run (default %lld)\n"
           "  --lr X               AdamW learning rate (default %g)\n"
           "  --batch N            prompts per step (default %d)\n"
           "  --G N                rollouts per online prompt (default %d)\n"
           "  --max-new-tokens N   longest response when mining, training and scoring (default %d)\n"
           "  --quiet              no progress lines\n",
           d->model_dir, d->out_dir, d->seeds, d->n_pool, d->n_test, (unsigned long long)d->world_seed, d->top_k,
           d->mine_temperature, (long long)d->steps, d->lr, d->batch, d->G, d->max_new_tokens);
}

int main(int argc, char **argv) {
    mbpo_demo_opts o, d;
    int i, quiet = 0;
    mbpo_demo_defaults(&o);
    d = o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--model")) o.model_dir = v;
        else if (ARG("--out")) o.out_dir = v;
        else if (!strcmp(a, "--ablation")) o.ablation = 1;
        else if (ARG("--seeds")) o.seeds = atoi(v);
        else if (ARG("--pool")) o.n_pool = atoi(v);
        else if (ARG("--test")) o.n_test = atoi(v);
        else if (ARG("--world-seed")) o.world_seed = strtoull(v, NULL, 10);
        else if (ARG("--top-k")) o.top_k = atoi(v);
        else if (ARG("--mine-temperature")) o.mine_temperature = atof(v);
        else if (ARG("--steps")) o.steps = atoll(v);
        else if (ARG("--lr")) o.lr = atof(v);
        else if (ARG("--batch")) o.batch = atoi(v);
        else if (ARG("--G")) o.G = atoi(v);
        else if (ARG("--max-new-tokens")) o.max_new_tokens = atoi(v);
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(&d); return 0; }
        else { fprintf(stderr, "mbpo-demo: unknown or incomplete flag '%s' (see --help)\n", a); return 2; }
#undef ARG
    }
    if (o.n_pool < 1 || o.n_test < 1 || o.steps < 1 || o.batch < 1 || o.G < 2 || o.max_new_tokens < 1 || o.seeds < 1) {
        fprintf(stderr, "mbpo-demo: --pool, --test, --steps, --batch, --seeds and --max-new-tokens must be positive, --G at least 2\n");
        return 2;
    }
    o.log = quiet ? NULL : stderr;
    o.report = stdout;
    if (!mbpo_demo(&o)) { fprintf(stderr, "mbpo-demo: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
