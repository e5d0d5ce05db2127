/* mbpo-train: hybrid GRPO (or an ablation, or SFT) with checkpoints and resume (see
   mbpo_train in mbpo.h). Parses flags, calls mbpo_train, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int main(int argc, char **argv) {
    mbpo_train_opts o;
    int quiet = 0, processor = 0, device = 0, moments = 0, mode, schedule, bf16, rc;
    mbpo_train_defaults(&o);
    mode = (int)o.mode;   /* the choice's names are in mbpo_mode's order */
    schedule = (int)o.adam.schedule;
    bf16 = o.save_dtype == MBPO_DT_BF16;
    {
        mbpo_flag flags[] = {
            { "--model", "DIR", MBPO_FLAG_STRING, &o.model_dir, "required",
              "Hugging Face model directory to start from, also the frozen reference" },
            { "--offline", "FILE", MBPO_FLAG_STRING, &o.offline, NULL, "offline pairs (offline.jsonl of mbpo-mine)" },
            { "--online", "FILE", MBPO_FLAG_STRING, &o.online, NULL, "closed-ended prompts (online.jsonl of mbpo-mine)" },
            { "--data", "FILE", MBPO_FLAG_STRING, &o.data, NULL,
              "--mode sft: a LLaVA-style dataset to fine-tune on (else the two sets' answers)" },
            { "--image-root", "DIR", MBPO_FLAG_STRING, &o.image_root, NULL, "directory the image paths are relative to" },
            { "--out", "DIR", MBPO_FLAG_STRING, &o.out_dir, "required",
              "metrics.jsonl and checkpoint-<step>/ directories; rerun to resume" },
            { "--mode", "M", MBPO_FLAG_CHOICE, &mode, "mbpo|offline|offline-rand|online|sft", "the objective" },
            { "--lr", "X", MBPO_FLAG_DOUBLE, &o.adam.lr, "> 0", "AdamW learning rate" },
            { "--weight-decay", "X", MBPO_FLAG_DOUBLE, &o.adam.weight_decay, ">= 0", "AdamW weight decay" },
            { "--max-grad-norm", "X", MBPO_FLAG_DOUBLE, &o.adam.max_grad_norm, ">= 0",
              "clip the global gradient norm, 0 = off" },
            { "--schedule", "S", MBPO_FLAG_CHOICE, &schedule, "constant|warmup|cosine", "learning-rate schedule" },
            { "--warmup-steps", "N", MBPO_FLAG_INT64, &o.adam.warmup_steps, ">= 0", "linear warmup steps of --schedule warmup and cosine" },
            { "--beta", "X", MBPO_FLAG_DOUBLE, &o.beta, ">= 0", "KL weight" },
            { "--clip-eps", "X", MBPO_FLAG_DOUBLE, &o.clip_eps, "> 0", "ratio clip, used with --updates-per-batch > 1" },
            { "--updates-per-batch", "N", MBPO_FLAG_INT, &o.updates_per_batch, ">= 1",
              "optimizer steps on each sampled batch; 1 = ratio 1" },
            { "--G", "N", MBPO_FLAG_INT, &o.G, ">= 2", "rollouts per online prompt" },
            { "--temperature", "T", MBPO_FLAG_DOUBLE, &o.temperature, ">= 0", "rollout temperature, 0 = greedy" },
            { "--max-new-tokens", "N", MBPO_FLAG_INT, &o.max_new_tokens, ">= 1", "longest rollout" },
            { "--batch", "N", MBPO_FLAG_INT, &o.batch, ">= 1", "prompts per micro-batch" },
            { "--grad-accum", "N", MBPO_FLAG_INT, &o.grad_accum, ">= 1", "micro-batches per optimizer step" },
            { "--steps", "N", MBPO_FLAG_INT64, &o.steps, ">= 1", "optimizer steps" },
            { "--save-every", "N", MBPO_FLAG_INT64, &o.save_every, ">= 0", "checkpoint every N steps, 0 = only at the end" },
            { "--iig-every", "N", MBPO_FLAG_INT64, &o.iig_every, ">= 0", "log IIG of chosen/rejected every N steps, 0 = never" },
            { "--max-bad-steps", "N", MBPO_FLAG_INT64, &o.max_bad_steps, ">= 0",
              "stop after N steps in a row with a non-finite gradient, 0 = never" },
            { "--save-total-limit", "N", MBPO_FLAG_INT64, &o.save_total_limit, ">= 0",
              "keep the newest N whole checkpoints, remove older ones; 0 = keep all" },
            { "--final-weights-only", NULL, MBPO_FLAG_SWITCH, &o.final_weights_only, NULL,
              "the last checkpoint without Adam moments: a model to ship, not to resume" },
            { "--save-dtype", "T", MBPO_FLAG_CHOICE, &bf16, "f32|bf16", "checkpoint weights; f32 resumes exactly, bf16 halves the size" },
            { "--seed", "S", MBPO_FLAG_UINT64, &o.seed, NULL, "run seed" },
            { "--strict", NULL, MBPO_FLAG_SWITCH, &o.strict, NULL, "stop at the first bad dataset record, with --mode sft --data" },
            { "--device", "D", MBPO_FLAG_CHOICE, &device, "cpu|cuda",
              "where the model computes: cpu (fp32, the reference) or cuda (bf16 on the GPU; needs the build of make cuda,\n"
              "build/cuda/mbpo-*, and a GPU; without one it stops with the reason)" },
            { "--moments", "W", MBPO_FLAG_CHOICE, &moments, "device|host",
              "with --device cuda, where the Adam moments live: device (8 bytes per parameter there) or host\n"
              "(streamed through the GPU every step; the same arithmetic)" },
            { "--plan-image", "PX", MBPO_FLAG_INT, &o.plan_image, "[28, 16384]",
              "the memory plan's image side (pixels) of every prompt" },
            { "--plan-text", "N", MBPO_FLAG_INT, &o.plan_text, "[1, 1000000]", "the memory plan's text tokens of every prompt" },
            { "--recompute", NULL, MBPO_FLAG_SWITCH, &o.recompute, NULL,
              "activation recomputation: keep each decoder layer's input only and run its forward again in the\n"
              "backward (the same results; the activations of one layer instead of all)" },
            { "--exact-accum", NULL, MBPO_FLAG_SWITCH, &o.exact_accum, NULL,
              "one process: sum the micro-batches' gradients as data parallelism does (the same bits as any number\n"
              "of ranks; one more gradient copy). Several ranks (mpirun, srun, torchrun variables) always do" },
            { "--comm-timeout", "S", MBPO_FLAG_DOUBLE, &o.comm_timeout, "> 0",
              "several ranks: the longest wait for another rank, seconds; then every rank stops naming it (1800)" },
            { "--image-processor", "P", MBPO_FLAG_CHOICE, &processor, "auto|slow|fast",
              "which of transformers' image processors to match: auto (what transformers 4.57 picks for the model\n"
              "folder), slow (Pillow bicubic), fast (torchvision bicubic)" },
            { "--quiet", NULL, MBPO_FLAG_SWITCH, &quiet, NULL, "no progress lines (messages, e.g. why a record was skipped, stay)" },
        };
        if (!mbpo_flags_handle("mbpo-train", "--model DIR --offline FILE --online FILE --image-root DIR --out DIR [options]",
                               flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    o.mode = (mbpo_mode)mode;
    o.adam.schedule = (mbpo_lr_schedule)schedule;
    o.save_dtype = bf16 ? MBPO_DT_BF16 : MBPO_DT_F32;
    o.adam.total_steps = o.steps;
    o.log = stderr;
    o.quiet = quiet;
    o.processor = processor - 1;   /* auto, slow, fast = MBPO_PROCESSOR_AUTO, _SLOW, _FAST */
    o.device = (mbpo_device)device;   /* cpu, cuda = MBPO_DEVICE_CPU, _CUDA */
    o.stream_moments = moments;
    if (!mbpo_train(&o)) { fprintf(stderr, "mbpo-train: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
