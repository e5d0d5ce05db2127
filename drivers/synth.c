/* mbpo-synth: write the shapes world (images + LLaVA-style JSONL with planted language
   priors; see mbpo_synth in mbpo.h). Parses flags, calls mbpo_synth, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"
#define MBPO_DEMO_IMPLEMENTATION
#include "../demo/mbpo_demo.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    mbpo_synth_opts o;
    mbpo_synth_model_opts mo;
    const char *model_out = NULL;
    uint64_t seed;
    int rc, arch = 0;   /* the index in --arch's names: 0 Qwen2-VL, 1 Qwen2.5-VL */
    mbpo_synth_model_defaults(&mo);
    mbpo_synth_defaults(&o);
    seed = o.seed;   /* the world's and the model's (both default to 1) */
    {
        mbpo_flag flags[] = {
            { "--out", "DIR", MBPO_FLAG_STRING, &o.out_dir, NULL,
              "writes train.jsonl, test_prior.jsonl, test_counter.jsonl and images/<split>/" },
            { "--train", "N", MBPO_FLAG_INT, &o.n_train, ">= 0", "training images (4 records each)" },
            { "--test", "N", MBPO_FLAG_INT, &o.n_test, ">= 0", "images in each test split" },
            { "--size", "S", MBPO_FLAG_INT, &o.size, ">= 28", "image side, a multiple of 28" },
            { "--prior", "P", MBPO_FLAG_DOUBLE, &o.prior_strength, "[0, 1]", "how often circles are red in train and test_prior" },
            { "--seed", "S", MBPO_FLAG_UINT64, &seed, NULL, "the world's (or the model's) seed" },
            { "--model-out", "D", MBPO_FLAG_STRING, &model_out, NULL,
              "instead: write a randomly initialised tiny Qwen2-VL (or Qwen2.5-VL) for the world, with its tokenizer" },
            { "--arch", "A", MBPO_FLAG_CHOICE, &arch, "qwen2_vl|qwen2_5_vl",
              "its family (model_type); qwen2_5_vl: RMSNorm/SwiGLU vision blocks with window attention" },
            { "--hidden", "H", MBPO_FLAG_INT64, &mo.hidden, ">= 1", "its width" },
            { "--layers", "L", MBPO_FLAG_INT64, &mo.layers, ">= 1", "its decoder layers" },
        };
        if (!mbpo_flags_handle("mbpo-synth", "--out DIR [--train N] [--test N] [--size S] [--prior P] [--seed S]\n"
                               "       mbpo-synth --model-out DIR [--arch A] [--hidden H] [--layers L] [--seed S]", flags,
                               (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    o.seed = mo.seed = seed;
    mo.arch = arch == 1 ? MBPO_ARCH_QWEN2_5_VL : MBPO_ARCH_QWEN2_VL;
    if (model_out) {
        if (!mbpo_synth_model(model_out, &mo)) { fprintf(stderr, "mbpo-synth: %s\n", mbpo_failure_reason()); return 1; }
        if (mo.arch == MBPO_ARCH_QWEN2_5_VL)
            printf("mbpo-synth: a tiny Qwen2.5-VL model (hidden %lld, %lld layers; vision windows of %lld px) in %s\n",
                   (long long)mo.hidden, (long long)mo.layers, (long long)mo.v_window, model_out);
        else
            printf("mbpo-synth: a tiny model (hidden %lld, %lld layers) in %s\n", (long long)mo.hidden, (long long)mo.layers, model_out);
        return 0;
    }
    if (!o.out_dir) { fprintf(stderr, "mbpo-synth: --out (or --model-out) is required (see --help)\n"); return 2; }
    if (!mbpo_synth(&o)) { fprintf(stderr, "mbpo-synth: %s\n", mbpo_failure_reason()); return 1; }
    printf("mbpo-synth: %d + 2 x %d images of %dx%d in %s (seed %llu)\n", o.n_train, o.n_test, o.size, o.size, o.out_dir,
           (unsigned long long)o.seed);
    return 0;
}
