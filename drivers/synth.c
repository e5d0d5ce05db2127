/* mbpo-synth: write the shapes world (images + LLaVA-style JSONL with planted language
   priors; see mbpo_synth in mbpo.h). Parses flags, calls mbpo_synth, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"
#define MBPO_DEMO_IMPLEMENTATION
#include "../demo/mbpo_demo.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    mbpo_synth_opts o, d;
    mbpo_synth_model_opts mo;
    const char *model_out = NULL;
    int i;
    mbpo_synth_model_defaults(&mo);
    mbpo_synth_defaults(&o);
    d = o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--out")) o.out_dir = v;
        else if (ARG("--train")) o.n_train = atoi(v);
        else if (ARG("--test")) o.n_test = atoi(v);
        else if (ARG("--size")) o.size = atoi(v);
        else if (ARG("--prior")) o.prior_strength = atof(v);
        else if (ARG("--seed")) o.seed = mo.seed = strtoull(v, NULL, 10);
        else if (ARG("--model-out")) model_out = v;
        else if (ARG("--hidden")) mo.hidden = atoll(v);
        else if (ARG("--layers")) mo.layers = atoll(v);
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: mbpo-synth --out DIR [options]\n"
                   "  --out DIR      writes train.jsonl, test_prior.jsonl, test_counter.jsonl and images/<split>/\n"
                   "  --train N      training images (default %d; 4 records each)\n"
                   "  --test N       images in each test split (default %d)\n"
                   "  --size S       image side, a multiple of 28 (default %d)\n"
                   "  --prior P      how often circles are red in train and test_prior (default %g)\n"
                   "  --seed S       (default %llu)\n"
                   "  --model-out D  instead: write a randomly initialised tiny Qwen2-VL for the world, with its tokenizer\n"
                   "  --hidden H     its width (default 128)\n"
                   "  --layers L     its decoder layers (default 4)\n", d.n_train, d.n_test, d.size, d.prior_strength,
                   (unsigned long long)d.seed);
            return 0;
        }
        else { fprintf(stderr, "mbpo-synth: unknown or incomplete flag '%s' (see --help)\n", a); return 2; }
#undef ARG
    }
    if (model_out) {
        if (!mbpo_synth_model(model_out, &mo)) { fprintf(stderr, "mbpo-synth: %s\n", mbpo_failure_reason()); return 1; }
        printf("mbpo-synth: a tiny model (hidden %lld, %lld layers) in %s\n", (long long)mo.hidden, (long long)mo.layers, model_out);
        return 0;
    }
    if (!o.out_dir || o.n_train < 0 || o.n_test < 0) { fprintf(stderr, "mbpo-synth: --out is required (see --help)\n"); return 2; }
    if (!mbpo_synth(&o)) { fprintf(stderr, "mbpo-synth: %s\n", mbpo_failure_reason()); return 1; }
    printf("mbpo-synth: %d + 2 x %d images of %dx%d in %s (seed %llu)\n", o.n_train, o.n_test, o.size, o.size, o.out_dir,
           (unsigned long long)o.seed);
    return 0;
}
