/* mbpo-train: hybrid GRPO (or an ablation, or SFT) with checkpoints and resume (see
   mbpo_train in mbpo.h). Parses flags, calls mbpo_train, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>

static void usage(const mbpo_train_opts *d) {
    printf("usage: mbpo-train --model DIR --offline FILE --online FILE --image-root DIR --out DIR [options]\n"
           "  --model DIR          Hugging Face model directory to start from (also the frozen reference)\n"
           "  --offline FILE       offline pairs (offline.jsonl of mbpo-mine)\n"
           "  --online FILE        closed-ended prompts (online.jsonl of mbpo-mine)\n"
           "  --data FILE          --mode sft: a LLaVA-style dataset to fine-tune on (else the two sets' answers)\n"
           "  --image-root DIR     directory the image paths are relative to\n"
           "  --out DIR            metrics.jsonl and checkpoint-<step>/ directories; rerun to resume\n"
           "  --mode M             mbpo | offline | offline-rand | online | sft (default %s)\n"
           "  --lr X               AdamW learning rate (default %g)\n"
           "  --weight-decay X     (default %g)\n"
           "  --max-grad-norm X    clip the global gradient norm, 0 = off (default %g)\n"
           "  --schedule S         constant | warmup | cosine (default constant)\n"
           "  --warmup-steps N     (default %lld)\n"
           "  --beta X             KL weight (default %g)\n"
           "  --clip-eps X         ratio clip, with --updates-per-batch > 1 (default %g)\n"
           "  --updates-per-batch N optimizer steps on each sampled batch (default %d: ratio 1)\n"
           "  --G N                rollouts per online prompt (default %d)\n"
           "  --temperature T      rollout temperature (default %g)\n"
           "  --max-new-tokens N   longest rollout (default %d)\n"
           "  --batch N            prompts per micro-batch (default %d)\n"
           "  --grad-accum N       micro-batches per optimizer step (default %d)\n"
           "  --steps N            optimizer steps (default %lld)\n"
           "  --save-every N       checkpoint every N steps, 0 = only at the end (default %lld)\n"
           "  --iig-every N        log IIG of chosen/rejected every N steps, 0 = never (default %lld)\n"
           "  --max-bad-steps N    stop after N steps in a row with a non-finite gradient, 0 = never (default %lld)\n"
           "  --save-dtype T       f32 | bf16 checkpoints (default f32: resume is exact)\n"
           "  --seed S             (default %llu)\n"
           "  --strict             stop at the first bad dataset record (--mode sft --data)\n"
           "  --quiet              no progress lines\n",
           mbpo_mode_name(d->mode), d->adam.lr, d->adam.weight_decay, d->adam.max_grad_norm, (long long)d->adam.warmup_steps,
           d->beta, d->clip_eps, d->updates_per_batch, d->G, d->temperature, d->max_new_tokens, d->batch, d->grad_accum, (long long)d->steps,
           (long long)d->save_every, (long long)d->iig_every, (long long)d->max_bad_steps, (unsigned long long)d->seed);
}

int main(int argc, char **argv) {
    mbpo_train_opts o, d;
    int i, quiet = 0;
    mbpo_train_defaults(&o);
    d = o;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--model")) o.model_dir = v;
        else if (ARG("--offline")) o.offline = v;
        else if (ARG("--online")) o.online = v;
        else if (ARG("--data")) o.data = v;
        else if (ARG("--image-root")) o.image_root = v;
        else if (ARG("--out")) o.out_dir = v;
        else if (ARG("--mode")) { if (!mbpo_mode_parse(v, &o.mode)) { fprintf(stderr, "mbpo-train: %s\n", mbpo_failure_reason()); return 2; } }
        else if (ARG("--lr")) o.adam.lr = atof(v);
        else if (ARG("--weight-decay")) o.adam.weight_decay = atof(v);
        else if (ARG("--max-grad-norm")) o.adam.max_grad_norm = atof(v);
        else if (ARG("--schedule")) {
            if (!strcmp(v, "constant")) o.adam.schedule = MBPO_LR_CONSTANT;
            else if (!strcmp(v, "warmup")) o.adam.schedule = MBPO_LR_WARMUP;
            else if (!strcmp(v, "cosine")) o.adam.schedule = MBPO_LR_COSINE;
            else { fprintf(stderr, "mbpo-train: --schedule must be constant, warmup or cosine\n"); return 2; }
        }
        else if (ARG("--warmup-steps")) o.adam.warmup_steps = atoll(v);
        else if (ARG("--beta")) o.beta = atof(v);
        else if (ARG("--clip-eps")) o.clip_eps = atof(v);
        else if (ARG("--updates-per-batch")) o.updates_per_batch = atoi(v);
        else if (ARG("--G")) o.G = atoi(v);
        else if (ARG("--temperature")) o.temperature = atof(v);
        else if (ARG("--max-new-tokens")) o.max_new_tokens = atoi(v);
        else if (ARG("--batch")) o.batch = atoi(v);
        else if (ARG("--grad-accum")) o.grad_accum = atoi(v);
        else if (ARG("--steps")) o.steps = atoll(v);
        else if (ARG("--save-every")) o.save_every = atoll(v);
        else if (ARG("--iig-every")) o.iig_every = atoll(v);
        else if (ARG("--max-bad-steps")) o.max_bad_steps = atoll(v);
        else if (ARG("--save-dtype")) {
            if (!strcmp(v, "f32")) o.save_dtype = MBPO_DT_F32;
            else if (!strcmp(v, "bf16")) o.save_dtype = MBPO_DT_BF16;
            else { fprintf(stderr, "mbpo-train: --save-dtype must be f32 or bf16\n"); return 2; }
        }
        else if (ARG("--seed")) o.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(&d); return 0; }
        else { fprintf(stderr, "mbpo-train: unknown or incomplete flag '%s' (see --help)\n", a); return 2; }
#undef ARG
    }
    if (!o.model_dir || !o.out_dir) { fprintf(stderr, "mbpo-train: --model and --out are required (see --help)\n"); return 2; }
    o.adam.total_steps = o.steps;
    o.log = quiet ? NULL : stderr;
    if (!mbpo_train(&o)) { fprintf(stderr, "mbpo-train: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
