/* mbpo-mine: IIG -> selection -> PGD -> rejected responses; writes the offline and online
   sets (see mbpo_mine in mbpo.h). Parses flags, calls mbpo_mine, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>

static void usage(const mbpo_mine_opts *d) {
    printf("usage: mbpo-mine --model DIR --data FILE --image-root DIR --out DIR [options]\n"
           "  --model DIR          Hugging Face model directory (config.json, model.safetensors, tokenizer.json)\n"
           "  --data FILE          LLaVA-style JSON or JSONL dataset\n"
           "  --image-root DIR     directory the dataset's image paths are relative to\n"
           "  --out DIR            output directory (offline.jsonl, online.jsonl, adv/, iig.jsonl)\n"
           "  --top-k N            keep the N open-ended samples of highest IIG as chosen (default %d: all)\n"
           "  --pgd-iters K        PGD iterations (default %d)\n"
           "  --pgd-step A         PGD step in 1/255 units (default %g)\n"
           "  --pgd-eps E          L-inf budget in 1/255 units, 0 = none (default %g)\n"
           "  --random-start       start PGD at a random point of the eps ball (default off)\n"
           "  --negatives pgd|rand PGD, or uniform noise of the same budget ('offline rand.') (default pgd)\n"
           "  --temperature T      sampling temperature of the rejected response (default %g)\n"
           "  --top-p P            nucleus sampling (default %g)\n"
           "  --max-new-tokens N   longest rejected response (default %d)\n"
           "  --max-tries N        resamples while the rejected response is empty or equals the chosen (default %d)\n"
           "  --seed S             run seed; each sample draws from its own stream (default %llu)\n"
           "  --strict             stop at the first bad dataset record (default: report and skip)\n"
           "  --quiet              no progress lines\n",
           d->top_k, d->pgd.iters, d->pgd.step * 255.0, d->pgd.eps * 255.0, d->temperature, d->top_p, d->max_new_tokens,
           d->max_tries, (unsigned long long)d->seed);
}

int main(int argc, char **argv) {
    mbpo_mine_opts o, d;
    int i, quiet = 0;
    mbpo_mine_defaults(&o);
    d = o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--model")) o.model_dir = v;
        else if (ARG("--data")) o.data = v;
        else if (ARG("--image-root")) o.image_root = v;
        else if (ARG("--out")) o.out_dir = v;
        else if (ARG("--top-k")) o.top_k = atoi(v);
        else if (ARG("--pgd-iters")) o.pgd.iters = atoi(v);
        else if (ARG("--pgd-step")) o.pgd.step = atof(v) / 255.0;
        else if (ARG("--pgd-eps")) o.pgd.eps = atof(v) / 255.0;
        else if (!strcmp(a, "--random-start")) o.pgd.random_start = 1;
        else if (ARG("--negatives")) {
            if (strcmp(v, "pgd") && strcmp(v, "rand")) { fprintf(stderr, "mbpo-mine: --negatives must be pgd or rand\n"); return 2; }
            o.random_negatives = !strcmp(v, "rand");
        }
        else if (ARG("--temperature")) o.temperature = atof(v);
        else if (ARG("--top-p")) o.top_p = atof(v);
        else if (ARG("--max-new-tokens")) o.max_new_tokens = atoi(v);
        else if (ARG("--max-tries")) o.max_tries = atoi(v);
        else if (ARG("--seed")) o.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(&d); return 0; }
        else { fprintf(stderr, "mbpo-mine: unknown or incomplete flag '%s' (see --help)\n", a); return 2; }
#undef ARG
    }
    if (!o.model_dir || !o.data || !o.out_dir || o.pgd.iters < 0 || o.max_new_tokens < 1) {
        fprintf(stderr, "mbpo-mine: --model, --data and --out are required (see --help)\n");
        return 2;
    }
    o.log = quiet ? NULL : stderr;
    if (!quiet)
        fprintf(stderr, "mbpo-mine: model %s, data %s, out %s, top-k %d, %s K=%d alpha=%g/255 eps=%g/255, T=%g, seed %llu\n",
                o.model_dir, o.data, o.out_dir, o.top_k, o.random_negatives ? "noise" : "PGD", o.pgd.iters, o.pgd.step * 255,
                o.pgd.eps * 255, o.temperature, (unsigned long long)o.seed);
    if (!mbpo_mine(&o)) { fprintf(stderr, "mbpo-mine: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
