/* test_records.c - what runs leave for people and for other tools: checkpoints that are whole
   Hugging Face model folders, run.json and the rules for continuing a run, checkpoint
   rotation and weights-only final models, and progress logs that read well in a file.
   Everything runs through build/mbpo-mine and build/mbpo-train on the tiny-A world. */
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>

#include "test_common.h"

static int exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = mbpo_read_file(a, &na), *y = mbpo_read_file(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    mbpo_free(x); mbpo_free(y);
    return same;
}
static char *slurp(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return mbpo_read_file(p, NULL);
}
/* The SHA-256 that coreutils' sha256sum prints for a file (the independent reference). */
static int sha256sum(const char *path, char out[65]) {
    char cmd[4200];
    FILE *p;
    int ok;
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    if (!(p = popen(cmd, "r"))) return 0;
    ok = fscanf(p, "%64s", out) == 1;
    pclose(p);
    return ok && strlen(out) == 64;
}
static int count_lines_file(const char *text) {
    int n = 0;
    for (; *text; text++) n += *text == '\n';
    return n;
}
static const mbpo_json *jpath(const mbpo_json *j, const char *a, const char *b, const char *c) {
    if (j && a) j = mbpo_json_get(j, a);
    if (j && b) j = mbpo_json_get(j, b);
    if (j && c) j = mbpo_json_get(j, c);
    return j;
}

static void test_records_all(void) {
    char dir[256], model[300], data[300], images[300], mined[300], cmd[8192], a[2048], b[1024];
    const char *common = "--G 2 --max-new-tokens 4 --seed 3 --iig-every 0 --quiet";
    char train[2048];
    if (!run_test("records")) return;
    snprintf(dir, sizeof dir, "%s/world_records", tmpdir());
    make_world(dir);
    snprintf(model, sizeof model, "%s/model", dir); snprintf(data, sizeof data, "%s/data.jsonl", dir);
    snprintf(images, sizeof images, "%s/images", dir); snprintf(mined, sizeof mined, "%s/mined", dir);
    /* the model folder a user downloads holds more than mbpo reads */
    snprintf(a, sizeof a, "%s/generation_config.json", model);
    write_bytes(a, "{\"eos_token_id\": [1005, 1006], \"temperature\": 0.1}\n", strlen("{\"eos_token_id\": [1005, 1006], \"temperature\": 0.1}\n"));
    snprintf(a, sizeof a, "%s/README.md", model); write_bytes(a, "model card\n", strlen("model card\n"));
    snprintf(a, sizeof a, "%s/merges.txt", model); write_bytes(a, "#version: 0.2\n", strlen("#version: 0.2\n"));
    snprintf(a, sizeof a, "%s/pytorch_model.bin", model); write_bytes(a, "stale weights", strlen("stale weights"));
    snprintf(a, sizeof a, "%s/tokenizer_config.json", model);
    write_bytes(a, "{\"tokenizer_class\": \"Qwen2Tokenizer\", \"eos_token\": \"<|im_end|>\"}", strlen("{\"tokenizer_class\": \"Qwen2Tokenizer\", \"eos_token\": \"<|im_end|>\"}"));
    snprintf(cmd, sizeof cmd, "mkdir -p %s/subdir && touch %s/subdir/x %s/.hidden", model, model, model);
    REQUIRE(system(cmd) == 0, "setup");

    /* 1. mining writes run.json; its checksums are sha256sum's */
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 7 --quiet", model, data, images, mined);
    REQUIRE(system(cmd) == 0, "mbpo-mine");
    {
        char *text = slurp(mined, "run.json"), ref[65];
        mbpo_json *j = text ? mbpo_json_parse(text, strlen(text), "run.json") : NULL;
        const mbpo_json *sha = jpath(j, "inputs", "data", "file"), *msha = jpath(j, "inputs", "model", "files");
        CHECK(j && jpath(j, "settings", "seed", NULL) && jpath(j, "settings", "seed", NULL)->integer == 7 &&
              jpath(j, "settings", "pgd_iters", NULL) && jpath(j, "build", NULL, NULL) && jpath(j, "threads", NULL, NULL),
              "mine run.json records settings, build and threads");
        CHECK(sha && sha256sum(data, ref) && mbpo_json_get(sha, "sha256") && !strcmp(mbpo_json_get(sha, "sha256")->string, ref),
              "run.json: the data file's SHA-256 equals sha256sum's (%s)", ref);
        {
            size_t n = 0;
            char *d = mbpo_read_file(data, &n);
            CHECK(sha && mbpo_json_get(sha, "bytes") && mbpo_json_get(sha, "bytes")->integer == (int64_t)n,
                  "run.json: the data file's size (%lld bytes)", (long long)n);
            mbpo_free(d);
        }
        snprintf(a, sizeof a, "%s/model.safetensors", model);
        CHECK(msha && mbpo_json_get(msha, "model.safetensors") && sha256sum(a, ref) &&
              !strcmp(mbpo_json_get(mbpo_json_get(msha, "model.safetensors"), "sha256")->string, ref) &&
              mbpo_json_get(msha, "config.json") && mbpo_json_get(msha, "tokenizer.json"),
              "run.json: every model file with sha256sum's checksum");
        mbpo_json_free(j); mbpo_free(text);
    }
    {   /* the export for other trainers (tests/reference/interop.py runs them on it; here: the shape) */
        static const char *files[] = { "trl_dpo.jsonl", "trl_grpo.jsonl", "llamafactory_dpo.jsonl", "easyr1.jsonl", NULL };
        int k, lines = 0, good = 1;
        for (k = 0; files[k]; k++) {
            char name[64], *text, *line, *eol;
            snprintf(name, sizeof name, "export/%s", files[k]);
            text = slurp(mined, name);
            for (line = text; text && (eol = strchr(line, '\n')) != NULL; line = eol + 1) {
                mbpo_json *j = mbpo_json_parse(line, (size_t)(eol - line), name);
                const mbpo_json *im = j ? mbpo_json_get(j, "images") : NULL;
                size_t q, n_parts = 0, n_ph = 0;
                lines++;
                if (!j || !im || im->type != MBPO_JSON_ARRAY || mbpo_json_get(j, "image") || !mbpo_json_get(j, "id") ||
                    mbpo_json_get(j, "id")->type != MBPO_JSON_STRING) { good = 0; mbpo_json_free(j); continue; }
                for (q = 0; q < im->count; q++)   /* absolute paths of files that exist */
                    good &= im->items[q].type == MBPO_JSON_STRING && im->items[q].string[0] == '/' && exists(im->items[q].string);
                if (k < 2) {   /* TRL: one {"type": "image"} part per image, no <image> in the text */
                    const mbpo_json *c = jpath(j, "prompt", NULL, NULL);
                    c = c && c->count ? mbpo_json_get(&c->items[c->count - 1], "content") : NULL;
                    for (q = 0; c && q < c->count; q++) {
                        const mbpo_json *t = mbpo_json_get(&c->items[q], "type"), *x = mbpo_json_get(&c->items[q], "text");
                        n_parts += t && !strcmp(t->string, "image");
                        good &= !x || !strstr(x->string, "<image>");
                    }
                    good &= c && n_parts == im->count;
                } else {   /* LLaMA-Factory, EasyR1: one <image> per image */
                    const mbpo_json *t = k == 2 ? mbpo_json_get(&jpath(j, "conversations", NULL, NULL)->items[0], "value")
                                                : mbpo_json_get(j, "problem");
                    const char *x = t ? t->string : "";
                    while ((x = strstr(x, "<image>")) != NULL) { n_ph++; x += 7; }
                    good &= n_ph == im->count;
                }
                mbpo_json_free(j);
            }
            mbpo_free(text);
        }
        CHECK(good && lines >= 4, "export: %d lines for TRL DPO/GRPO, LLaMA-Factory, EasyR1: string ids, absolute image paths "
              "that exist, no \"image\" column, one image part or <image> per image", lines);
        snprintf(a, sizeof a, "%s/export/dataset_info.json", mined);
        {
            mbpo_json *j = mbpo_json_parse_file(a);
            CHECK(j && jpath(j, "mbpo_offline", "file_name", NULL) && jpath(j, "mbpo_offline", "ranking", NULL),
                  "export: LLaMA-Factory's dataset_info.json entry");
            mbpo_json_free(j);
        }
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 8 --quiet 2> %s/err.txt", model, data, images, mined, dir);
    CHECK(system(cmd) != 0, "mbpo-mine rerun into the same --out with another --seed: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "run.json") && contains(text, "seed 8 (was 7)"), "lists the difference: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 7 --quiet --image-processor fast 2> %s/err.txt", model, data, images, mined, dir);
    CHECK(system(cmd) != 0, "mbpo-mine rerun with the other image processor: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "image_processor \"fast\" (was \"slow\")"), "names it: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "cp %s %s/data2.jsonl && echo '{\"id\": \"z\", \"conversations\": [{\"from\": \"human\", \"value\": "
             "\"Is it?\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}' >> %s/data2.jsonl && ./build/mbpo-mine --model %s --data "
             "%s/data2.jsonl --image-root %s --out %s --top-k 2 --pgd-iters 1 --max-new-tokens 4 --seed 7 --quiet 2> %s/err.txt",
             data, dir, dir, model, dir, images, mined, dir);
    CHECK(system(cmd) != 0, "mbpo-mine rerun on another data file: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "data: other content"), "says the data changed: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 7 --quiet", model, data, images, mined);
    CHECK(system(cmd) == 0, "mbpo-mine rerun with the same settings: accepted (a finished run stays as it is)");

    /* 2. training: a checkpoint is a whole HF model folder */
    snprintf(train, sizeof train, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--mode mbpo %s", model, mined, mined, images, common);
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t1 --steps 2 --save-every 1", train, dir);
    REQUIRE(system(cmd) == 0, "mbpo-train");
    snprintf(b, sizeof b, "%s/t1/checkpoint-2", dir);
    {
        static const char *carried[] = { "tokenizer.json", "generation_config.json", "README.md", "merges.txt", NULL };
        static const char *left[] = { "pytorch_model.bin", "subdir", ".hidden", "trainer_state.json", NULL };
        int k, all = 1;
        for (k = 0; carried[k]; k++) {
            snprintf(a, sizeof a, "%s/%s", model, carried[k]);
            snprintf(cmd, sizeof cmd, "%s/%s", b, carried[k]);
            if (!same_bytes(a, cmd)) { all = 0; printf("  not carried as is: %s\n", carried[k]); }
        }
        CHECK(all, "the source folder's files are carried byte for byte");
        for (k = 0, all = 1; left[k]; k++) {
            snprintf(a, sizeof a, "%s/%s", b, left[k]);
            if (exists(a)) { all = 0; printf("  carried but should not be: %s\n", left[k]); }
        }
        CHECK(all, "stale weights, sub-folders, hidden files and another trainer's state are not carried");
    }
    {
        char *tc = slurp(b, "tokenizer_config.json"), *ct = slurp(b, "chat_template.json"), *pp = slurp(b, "preprocessor_config.json");
        mbpo_json *jt = tc ? mbpo_json_parse(tc, strlen(tc), "tokenizer_config.json") : NULL;
        mbpo_json *jc = ct ? mbpo_json_parse(ct, strlen(ct), "chat_template.json") : NULL;
        mbpo_json *jp = pp ? mbpo_json_parse(pp, strlen(pp), "preprocessor_config.json") : NULL;
        const mbpo_json *t1 = jt ? mbpo_json_get(jt, "chat_template") : NULL, *t2 = jc ? mbpo_json_get(jc, "chat_template") : NULL;
        CHECK(jt && mbpo_json_get(jt, "tokenizer_class") && !strcmp(mbpo_json_get(jt, "tokenizer_class")->string, "Qwen2Tokenizer") &&
              mbpo_json_get(jt, "eos_token"), "the source's tokenizer_config.json keeps its keys");
        CHECK(t1 && t2 && t1->type == MBPO_JSON_STRING && !strcmp(t1->string, t2->string) &&
              contains(t2->string, "<|vision_start|><|image_pad|><|vision_end|>") && contains(t2->string, "You are a helpful assistant.") &&
              contains(t2->string, "add_generation_prompt"),
              "a source without a chat template gets the Qwen2-VL one, in chat_template.json and tokenizer_config.json");
        {   /* vocab.json from tokenizer.json, for the slow tokenizer (interop.py loads it with use_fast=False) */
            char *vj = slurp(b, "vocab.json");
            mbpo_json *jv = vj ? mbpo_json_parse(vj, strlen(vj), "vocab.json") : NULL;
            CHECK(jv && jv->type == MBPO_JSON_OBJECT && jv->count == 1000 && mbpo_json_get(jv, "ab") &&
                  mbpo_json_get(jv, "ab")->integer == 257, "vocab.json written from tokenizer.json (%zu entries)", jv ? jv->count : 0);
            mbpo_json_free(jv); mbpo_free(vj);
        }
        CHECK(jp && mbpo_json_get(jp, "min_pixels") && mbpo_json_get(jp, "image_mean") && mbpo_json_get(jp, "patch_size"),
              "a source without preprocessor_config.json gets the one mbpo used");
        mbpo_json_free(jt); mbpo_json_free(jc); mbpo_json_free(jp);
        mbpo_free(tc); mbpo_free(ct); mbpo_free(pp);
        snprintf(a, sizeof a, "%s/mbpo_state.json", b);
        CHECK(exists(a), "the resume state is mbpo_state.json (trainer_state.json is Hugging Face's name for another format)");
    }
    {   /* a checkpoint as the source: carried again, unchanged, and nothing of mbpo's own state */
        snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s/t1/checkpoint-2 --offline %s/offline.jsonl --image-root %s --mode "
                 "offline --lr 1e-3 --batch 2 %s --out %s/t_chain --steps 1", dir, mined, images, common, dir);
        CHECK(system(cmd) == 0, "training from a checkpoint");
        snprintf(a, sizeof a, "%s/t1/checkpoint-2/chat_template.json", dir); snprintf(b, sizeof b, "%s/t_chain/checkpoint-1/chat_template.json", dir);
        CHECK(same_bytes(a, b), "the chat template travels unchanged through a second training run");
        snprintf(a, sizeof a, "%s/t1/checkpoint-2/tokenizer_config.json", dir); snprintf(b, sizeof b, "%s/t_chain/checkpoint-1/tokenizer_config.json", dir);
        CHECK(same_bytes(a, b), "tokenizer_config.json too (the template is not added twice)");
        snprintf(a, sizeof a, "%s/t_chain/checkpoint-1/optimizer.safetensors", dir);
        CHECK(exists(a), "its own optimizer state only");
    }

    {   /* a template only in tokenizer_config.json (which AutoProcessor does not read) also goes to chat_template.json */
        char *ct;
        mbpo_json *j;
        snprintf(cmd, sizeof cmd, "rm -rf %s/model_tc && mkdir -p %s/model_tc && cp %s/config.json %s/model.safetensors "
                 "%s/tokenizer.json %s/model_tc/", dir, dir, model, model, model, dir);
        REQUIRE(system(cmd) == 0, "copy");
        snprintf(a, sizeof a, "%s/model_tc/tokenizer_config.json", dir);
        write_bytes(a, "{\"chat_template\": \"OWN {{ messages }}\"}", strlen("{\"chat_template\": \"OWN {{ messages }}\"}"));
        snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s/model_tc --offline %s/offline.jsonl --image-root %s --mode offline "
                 "--lr 1e-3 --batch 2 %s --out %s/t_tc --steps 1", dir, mined, images, common, dir);
        CHECK(system(cmd) == 0, "training from a folder whose template is in tokenizer_config.json only");
        snprintf(a, sizeof a, "%s/t_tc/checkpoint-1", dir);
        ct = slurp(a, "chat_template.json");
        j = ct ? mbpo_json_parse(ct, strlen(ct), "chat_template.json") : NULL;
        CHECK(j && mbpo_json_get(j, "chat_template") && !strcmp(mbpo_json_get(j, "chat_template")->string, "OWN {{ messages }}"),
              "the folder's own template is written to chat_template.json, not mbpo's");
        mbpo_json_free(j); mbpo_free(ct);
    }

    /* 3. what may and may not change when a run is continued */
    snprintf(cmd, sizeof cmd, "%s --out %s/t1 --steps 3 --save-every 1 --lr 2e-3 --batch 2 2> %s/err.txt", train, dir, dir);
    CHECK(system(cmd) != 0, "continue with another --lr: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "lr 0.002 (was 0.001)") && count_lines_file(text) == 1, "one line listing it: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "%s --out %s/t1 --steps 3 --save-every 1 --beta 0.1 --batch 1 --lr 1e-3 2> %s/err.txt", train, dir, dir);
    CHECK(system(cmd) != 0, "continue with another --beta and --batch: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "beta 0.10000000000000001 (was 0.040000000000000001)") && contains(text, "batch 1 (was 2)"),
              "lists each difference: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t1 --steps 4 --save-every 2 --save-total-limit 3", train, dir);
    CHECK(system(cmd) == 0, "continue with more --steps (constant schedule), another --save-every and a limit: accepted");
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t2 --steps 4 --save-every 1", train, dir);
    CHECK(system(cmd) == 0, "the same 4 steps uninterrupted");
    snprintf(a, sizeof a, "%s/t1/checkpoint-4/model.safetensors", dir); snprintf(b, sizeof b, "%s/t2/checkpoint-4/model.safetensors", dir);
    CHECK(same_bytes(a, b), "2 steps, then 2 more with other save settings = 4 steps: identical weights");
    {
        char *text = slurp(dir, "t1/run.json");
        CHECK(text && contains(text, "\"steps\": 4") && contains(text, "\"save_every\": 2"), "run.json updated to the settings now in force");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t3 --steps 2 --schedule cosine && %s --lr 1e-3 --batch 2 --out %s/t3 --steps 4 --schedule cosine 2> %s/err.txt",
             train, dir, train, dir, dir);
    CHECK(system(cmd) != 0, "continue a cosine schedule with more --steps: refused (the learning rate of every step changes)");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "steps 4 (was 2)"), "says so: %s", text ? text : "");
        mbpo_free(text);
    }
    /* a record without results (a run that stopped before its first step) binds nothing */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/t4 && cp %s/t1/run.json %s/t4/ && %s --out %s/t4 --steps 1 --lr 5e-4 --batch 2", dir, dir, dir,
             train, dir);
    CHECK(system(cmd) == 0, "an out folder with a run.json but no results yet takes new settings");

    /* 4. rotation and the final model without optimizer state */
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t5 --steps 4 --save-every 1 --save-total-limit 2 --final-weights-only", train, dir);
    CHECK(system(cmd) == 0, "rotation run");
    {
        int k, ok = 1;
        for (k = 1; k <= 4; k++) {
            snprintf(a, sizeof a, "%s/t5/checkpoint-%d", dir, k);
            if (exists(a) != (k >= 3)) { ok = 0; printf("  checkpoint-%d %s\n", k, k >= 3 ? "missing" : "kept"); }
            snprintf(a, sizeof a, "%s/t5/checkpoint-%d.tmp", dir, k);
            if (exists(a)) { ok = 0; printf("  checkpoint-%d.tmp left\n", k); }
        }
        CHECK(ok, "--save-total-limit 2: only the newest two checkpoints remain");
        snprintf(a, sizeof a, "%s/t5/checkpoint-4/optimizer.safetensors", dir);
        snprintf(b, sizeof b, "%s/t5/checkpoint-3/optimizer.safetensors", dir);
        CHECK(!exists(a) && exists(b), "--final-weights-only: the last checkpoint has no optimizer state, the others do");
        snprintf(a, sizeof a, "%s/t5/checkpoint-4/model.safetensors", dir); snprintf(b, sizeof b, "%s/t2/checkpoint-4/model.safetensors", dir);
        CHECK(same_bytes(a, b), "rotation changes nothing in the weights");
    }
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t5 --steps 4 --save-every 1 --save-total-limit 2 --final-weights-only", train, dir);
    CHECK(system(cmd) == 0, "rerun of a finished weights-only run: nothing to do, exit 0");
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t5 --steps 6 --save-every 1 --save-total-limit 2 2> %s/err.txt", train, dir, dir);
    CHECK(system(cmd) != 0, "continuing past a weights-only checkpoint: refused");
    {
        char *text = slurp(dir, "err.txt");
        CHECK(text && contains(text, "without optimizer state"), "says why: %s", text ? text : "");
        mbpo_free(text);
    }

    /* 5. logs in a file: plain lines, no carriage returns; --quiet keeps the reasons for a skip */
    snprintf(a, sizeof a, "%s/data_bad.jsonl", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s && echo '{\"id\": \"broken\"}' >> %s", data, a, a);
    REQUIRE(system(cmd) == 0, "bad data");
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s/m_log --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 7 2> %s/log.txt", model, a, images, dir, dir);
    CHECK(system(cmd) == 0, "mbpo-mine with its log in a file");
    {
        char *text = slurp(dir, "log.txt");
        CHECK(text && !strchr(text, '\r') && contains(text, "mine: IIG 4/4") && contains(text, "mine: pairs 2/2") &&
              contains(text, "ETA"), "progress in a file: plain lines with count, rate and ETA, no \\r:\n%s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s/m_quiet --top-k 2 --pgd-iters 1 "
             "--max-new-tokens 4 --seed 7 --quiet 2> %s/log.txt", model, a, images, dir, dir);
    CHECK(system(cmd) == 0, "mbpo-mine --quiet");
    {
        char *text = slurp(dir, "log.txt");
        CHECK(text && contains(text, "data_bad.jsonl:7") && !contains(text, "mine: IIG"),
              "--quiet: no progress, but the skipped record is named:\n%s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "%s --lr 1e-3 --batch 2 --out %s/t_log --steps 3 --save-every 0 2> %s/log.txt", train, dir, dir);
    {
        char *p = strstr(cmd, " --quiet");   /* the same run, with its progress */
        if (p) memmove(p, p + 8, strlen(p + 8) + 1);
    }
    CHECK(system(cmd) == 0, "mbpo-train with its log in a file");
    {
        char *text = slurp(dir, "log.txt");
        CHECK(text && !strchr(text, '\r') && contains(text, "train: step 3/3") && !contains(text, "train: step 2/3"),
              "training progress in a file: at most a line every 10 s, and the last step:\n%s", text ? text : "");
        mbpo_free(text);
    }
    printf("  %s  checkpoints are whole HF folders; run.json checks continued runs; rotation; weights-only final; logs\n",
           n_failed ? "!!" : "ok");
}

void test_records(void) { test_records_all(); }
