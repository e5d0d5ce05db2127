/* mbpo-score: per-sample IIG, greedy responses, closed-ended accuracy through the verifiers,
   and a summary line (see mbpo_score in mbpo.h). Parses flags, calls mbpo_score, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>

static void usage(const mbpo_score_opts *d) {
    printf("usage: mbpo-score --model DIR --data FILE --image-root DIR --out FILE [options]\n"
           "  --model DIR          Hugging Face model directory (config.json, model.safetensors, tokenizer.json)\n"
           "  --data FILE          LLaVA-style JSON or JSONL dataset\n"
           "  --image-root DIR     directory the dataset's image paths are relative to\n"
           "  --out FILE           JSONL: one line per sample, then a summary line (written atomically)\n"
           "  --max-new-tokens N   longest greedy response (default %d)\n"
           "  --strict             stop at the first bad dataset record (default: report and skip)\n"
           "  --quiet              no progress lines\n", d->max_new_tokens);
}

int main(int argc, char **argv) {
    mbpo_score_opts o, d;
    mbpo_score_summary sum;
    int i, quiet = 0;
    mbpo_score_defaults(&o);
    d = o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--model")) o.model_dir = v;
        else if (ARG("--data")) o.data = v;
        else if (ARG("--image-root")) o.image_root = v;
        else if (ARG("--out")) o.out_path = v;
        else if (ARG("--max-new-tokens")) o.max_new_tokens = atoi(v);
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(&d); return 0; }
        else { fprintf(stderr, "mbpo-score: unknown or incomplete flag '%s' (see --help)\n", a); return 2; }
#undef ARG
    }
    if (!o.model_dir || !o.data || !o.out_path || o.max_new_tokens < 1) {
        fprintf(stderr, "mbpo-score: --model, --data and --out are required (see --help)\n");
        return 2;
    }
    o.log = quiet ? NULL : stderr;
    if (!mbpo_score(&o, &sum)) { fprintf(stderr, "mbpo-score: %s\n", mbpo_failure_reason()); return 1; }
    printf("score: n=%lld yesno=%lld/%lld mc=%lld/%lld open=%lld iig_mean=%.4f\n", (long long)sum.n,
           (long long)sum.yesno_correct, (long long)sum.n_yesno, (long long)sum.mc_correct, (long long)sum.n_mc,
           (long long)sum.n_open, sum.iig_mean);
    return 0;
}
