/* mbpo-export: a mined folder's offline pairs and online prompts in the files TRL (DPO, GRPO),
   LLaMA-Factory and EasyR1 read as they are (see mbpo_export in mbpo.h; mbpo-mine already
   writes them into <mined>/export). Parses flags, calls mbpo_export, reports. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

int main(int argc, char **argv) {
    const char *mined = NULL, *image_root = NULL, *out = NULL;
    int rc;
    {
        mbpo_flag flags[] = {
            { "--mined", "DIR", MBPO_FLAG_STRING, &mined, "required", "the --out folder of mbpo-mine (offline.jsonl, online.jsonl)" },
            { "--image-root", "DIR", MBPO_FLAG_STRING, &image_root, NULL,
              "directory the sets' image paths are relative to (the one mbpo-mine had)" },
            { "--out", "DIR", MBPO_FLAG_STRING, &out, NULL, "where to write the files (default: <mined>/export)" },
        };
        if (!mbpo_flags_handle("mbpo-export", "--mined DIR --image-root DIR [--out DIR]", flags,
                               (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    if (!mbpo_export(mined, image_root, out)) { fprintf(stderr, "mbpo-export: %s\n", mbpo_failure_reason()); return 1; }
    printf("export: trl_dpo.jsonl, trl_grpo.jsonl, llamafactory_dpo.jsonl + dataset_info.json, easyr1.jsonl in %s%s\n",
           out ? out : mined, out ? "" : "/export");
    return 0;
}
