/* mbpo-mine: IIG -> selection -> PGD -> rejected responses; writes the offline and online
   sets (see mbpo_mine in mbpo.h). Parses flags, calls mbpo_mine, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int main(int argc, char **argv) {
    mbpo_mine_opts o;
    int quiet = 0, processor = 0, device = 0, rc;
    double pgd_step, pgd_eps;   /* the flags are in 1/255 units */
    mbpo_mine_defaults(&o);
    pgd_step = o.pgd.step * 255.0;
    pgd_eps = o.pgd.eps * 255.0;
    {
        mbpo_flag flags[] = {
            { "--model", "DIR", MBPO_FLAG_STRING, &o.model_dir, "required",
              "Hugging Face model directory (config.json, model.safetensors, tokenizer.json)" },
            { "--data", "FILE", MBPO_FLAG_STRING, &o.data, "required", "LLaVA-style JSON or JSONL dataset" },
            { "--image-root", "DIR", MBPO_FLAG_STRING, &o.image_root, NULL, "directory the dataset's image paths are relative to" },
            { "--out", "DIR", MBPO_FLAG_STRING, &o.out_dir, "required",
              "output directory (offline.jsonl, online.jsonl, adv/, iig.jsonl)" },
            { "--top-k", "N", MBPO_FLAG_INT, &o.top_k, ">= 0", "keep the N open-ended samples of highest IIG as chosen, 0 = all" },
            { "--pgd-iters", "K", MBPO_FLAG_INT, &o.pgd.iters, ">= 0", "PGD iterations" },
            { "--pgd-step", "A", MBPO_FLAG_DOUBLE, &pgd_step, "> 0", "PGD step in 1/255 units" },
            { "--pgd-eps", "E", MBPO_FLAG_DOUBLE, &pgd_eps, ">= 0", "L-inf budget in 1/255 units, 0 = none" },
            { "--random-start", NULL, MBPO_FLAG_SWITCH, &o.pgd.random_start, NULL, "start PGD at a random point of the eps ball" },
            { "--negatives", "KIND", MBPO_FLAG_CHOICE, &o.random_negatives, "pgd|rand",
              "PGD, or uniform noise of the same budget ('offline rand.')" },
            { "--temperature", "T", MBPO_FLAG_DOUBLE, &o.temperature, ">= 0",
              "sampling temperature of the rejected response, 0 = greedy" },
            { "--top-p", "P", MBPO_FLAG_DOUBLE, &o.top_p, "(0, 1]", "nucleus sampling" },
            { "--max-new-tokens", "N", MBPO_FLAG_INT, &o.max_new_tokens, ">= 1", "longest rejected response" },
            { "--max-tries", "N", MBPO_FLAG_INT, &o.max_tries, ">= 1",
              "resamples while the rejected response is empty or equals the chosen" },
            { "--seed", "S", MBPO_FLAG_UINT64, &o.seed, NULL, "run seed; each sample draws from its own stream" },
            { "--strict", NULL, MBPO_FLAG_SWITCH, &o.strict, NULL, "stop at the first bad dataset record (default: report and skip)" },
            { "--device", "D", MBPO_FLAG_CHOICE, &device, "cpu|cuda",
              "where the model computes: cpu (fp32, the reference) or cuda (bf16 on the GPU; needs the build of make cuda,\n"
              "build/cuda/mbpo-*, and a GPU; without one it stops with the reason)" },
            { "--image-processor", "P", MBPO_FLAG_CHOICE, &processor, "auto|slow|fast",
              "which of transformers' image processors to match: auto (what transformers 4.57 picks for the model\n"
              "folder), slow (Pillow bicubic), fast (torchvision bicubic)" },
            { "--quiet", NULL, MBPO_FLAG_SWITCH, &quiet, NULL, "no progress lines (messages, e.g. why a record was skipped, stay)" },
        };
        if (!mbpo_flags_handle("mbpo-mine", "--model DIR --data FILE --image-root DIR --out DIR [options]", flags,
                               (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    o.pgd.step = pgd_step / 255.0;
    o.pgd.eps = pgd_eps / 255.0;
    o.log = stderr;
    o.quiet = quiet;
    o.processor = processor - 1;   /* auto, slow, fast = MBPO_PROCESSOR_AUTO, _SLOW, _FAST */
    o.device = (mbpo_device)device;   /* cpu, cuda = MBPO_DEVICE_CPU, _CUDA */
    if (!quiet)
        fprintf(stderr, "mbpo-mine: model %s, data %s, out %s, top-k %d, %s K=%d alpha=%g/255 eps=%g/255, T=%g, seed %llu\n",
                o.model_dir, o.data, o.out_dir, o.top_k, o.random_negatives ? "noise" : "PGD", o.pgd.iters, o.pgd.step * 255,
                o.pgd.eps * 255, o.temperature, (unsigned long long)o.seed);
    if (!mbpo_mine(&o)) { fprintf(stderr, "mbpo-mine: %s\n", mbpo_failure_reason()); return 1; }
    return 0;
}
