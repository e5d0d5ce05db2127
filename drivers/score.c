/* mbpo-score: per-sample IIG, greedy responses, closed-ended accuracy through the verifiers,
   and a summary line (see mbpo_score in mbpo.h). Parses flags, calls mbpo_score, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int main(int argc, char **argv) {
    mbpo_score_opts o;
    mbpo_score_summary sum;
    int quiet = 0, processor = 0, device = 0, rc;
    mbpo_score_defaults(&o);
    {
        mbpo_flag flags[] = {
            { "--model", "DIR", MBPO_FLAG_STRING, &o.model_dir, "required",
              "Hugging Face model directory (config.json, model.safetensors, tokenizer.json)" },
            { "--data", "FILE", MBPO_FLAG_STRING, &o.data, "required", "LLaVA-style JSON or JSONL dataset" },
            { "--image-root", "DIR", MBPO_FLAG_STRING, &o.image_root, NULL, "directory the dataset's image paths are relative to" },
            { "--out", "FILE", MBPO_FLAG_STRING, &o.out_path, "required",
              "JSONL: one line per sample, then a summary line (written atomically)" },
            { "--max-new-tokens", "N", MBPO_FLAG_INT, &o.max_new_tokens, ">= 1", "longest greedy response" },
            { "--strict", NULL, MBPO_FLAG_SWITCH, &o.strict, NULL, "stop at the first bad dataset record (default: report and skip)" },
            { "--device", "D", MBPO_FLAG_CHOICE, &device, "cpu|cuda",
              "where the model computes: cpu (fp32, the reference) or cuda (bf16 on the GPU; needs the build of make cuda,\n"
              "build/cuda/mbpo-*, and a GPU; without one it stops with the reason)" },
            { "--image-processor", "P", MBPO_FLAG_CHOICE, &processor, "auto|slow|fast",
              "which of transformers' image processors to match: auto (what transformers 4.57 picks for the model\n"
              "folder), slow (Pillow bicubic), fast (torchvision bicubic)" },
            { "--quiet", NULL, MBPO_FLAG_SWITCH, &quiet, NULL, "no progress lines (messages, e.g. why a record was skipped, stay)" },
        };
        if (!mbpo_flags_handle("mbpo-score", "--model DIR --data FILE --image-root DIR --out FILE [options]", flags,
                               (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    o.log = stderr;
    o.quiet = quiet;
    o.processor = processor - 1;   /* auto, slow, fast = MBPO_PROCESSOR_AUTO, _SLOW, _FAST */
    o.device = (mbpo_device)device;   /* cpu, cuda = MBPO_DEVICE_CPU, _CUDA */
    if (!mbpo_score(&o, &sum)) { fprintf(stderr, "mbpo-score: %s\n", mbpo_failure_reason()); return 1; }
    printf("score: n=%lld yesno=%lld/%lld mc=%lld/%lld open=%lld iig_mean=%.4f\n", (long long)sum.n,
           (long long)sum.yesno_correct, (long long)sum.n_yesno, (long long)sum.mc_correct, (long long)sum.n_mc,
           (long long)sum.n_open, sum.iig_mean);
    return 0;
}
