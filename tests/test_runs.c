/* test_runs.c - tests of layer 5 of mbpo.h (runs): mining end to end on the tiny-A model,
   through the library and through build/mbpo-mine, including kills and resumes. */
#include "../mbpo.h"
/* the shapes world, its model and scoring, and the demo: their implementation lives in this
   file, built on the public API only */
#define MBPO_DEMO_IMPLEMENTATION
#include "../demo/mbpo_demo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_common.h"

/* A tokenizer for the tiny-A model (vocabulary 1024): the 256 bytes, 744 two-letter merges
   (ids 256..999), the vision tokens at the model's ids 1000..1003, the chat tokens at
   1004..1006 and filler added tokens up to 1023, so that every id the model can emit decodes. */
void write_tiny_tokenizer(const char *path) {
    static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static const char *specials[7] = { "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>",
                                       "<|im_start|>", "<|im_end|>", "<|endoftext|>" };
    size_t cap = 1 << 17, n = 0;
    char *s = (char *)malloc(cap);
    int b, k;
    FILE *f;
    n += (size_t)snprintf(s + n, cap - n, "{\"added_tokens\":[");
    for (k = 0; k < 24; k++) {
        char name[32];
        if (k < 7) snprintf(name, sizeof name, "%s", specials[k]);
        else snprintf(name, sizeof name, "<|filler_%d|>", k);
        n += (size_t)snprintf(s + n, cap - n, "%s{\"id\":%d,\"content\":\"%s\",\"special\":true,\"normalized\":false,"
                              "\"lstrip\":false,\"rstrip\":false,\"single_word\":false}", k ? "," : "", 1000 + k, name);
    }
    n += (size_t)snprintf(s + n, cap - n, "],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\","
        "\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
        "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\","
        "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"vocab\":{");
    for (b = 0; b < 256; b++) {   /* the GPT-2 byte alphabet */
        int cp = b, j, c = 0;
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            for (j = 0; j < b; j++) c += !((j >= 0x21 && j <= 0x7E) || (j >= 0xA1 && j <= 0xAC) || j >= 0xAE);
            cp = 256 + c;
        }
        s[n++] = b ? ',' : ' ';
        s[n++] = '"';
        if (cp == '"' || cp == '\\') { s[n++] = '\\'; s[n++] = (char)cp; }
        else if (cp < 0x80) s[n++] = (char)cp;
        else { s[n++] = (char)(0xC0 | (cp >> 6)); s[n++] = (char)(0x80 | (cp & 63)); }
        n += (size_t)snprintf(s + n, cap - n, "\":%d", b);
    }
    for (k = 0; k < 744; k++) n += (size_t)snprintf(s + n, cap - n, ",\"%c%c\":%d", letters[k / 52], letters[k % 52], 256 + k);
    n += (size_t)snprintf(s + n, cap - n, "},\"merges\":[");
    for (k = 0; k < 744; k++) n += (size_t)snprintf(s + n, cap - n, "%s\"%c %c\"", k ? "," : "", letters[k / 52], letters[k % 52]);
    n += (size_t)snprintf(s + n, cap - n, "]}}");
    f = fopen(path, "wb");
    fwrite(s, 1, n, f);
    fclose(f);
    free(s);
}

/* A model directory (tiny-A weights + that tokenizer) and a small LLaVA-style dataset. */
void make_world(const char *dir) {
    char cmd[4096], path[1024];
    FILE *f;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/model %s/images && cp tests/fixtures/tiny_a/model/config.json "
             "tests/fixtures/tiny_a/model/model.safetensors %s/model/ && cp tests/fixtures/images/png_rgb_56x84.png "
             "tests/fixtures/images/png_rgb_112x56.png tests/fixtures/images/gif_single_80x60.gif %s/images/", dir, dir, dir, dir);
    if (system(cmd) != 0) printf("  setup failed: %s\n", cmd);
    snprintf(path, sizeof path, "%s/model/tokenizer.json", dir);
    write_tiny_tokenizer(path);
    snprintf(path, sizeof path, "%s/data.jsonl", dir);
    f = fopen(path, "wb");
    fprintf(f, "{\"id\": \"a\", \"image\": \"png_rgb_56x84.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nDescribe the picture.\"}, {\"from\": \"gpt\", \"value\": \"a red circle\"}]}\n");
    fprintf(f, "{\"id\": \"b\", \"image\": \"png_rgb_112x56.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nWhat colour is the square?\"}, {\"from\": \"gpt\", \"value\": \"blue\"}, {\"from\": \"human\", \"value\": \"Is there a circle?\"}, {\"from\": \"gpt\", \"value\": \"No\"}]}\n");
    fprintf(f, "{\"id\": \"c\", \"image\": \"gif_single_80x60.gif\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nWhat is in the corner?\"}, {\"from\": \"gpt\", \"value\": \"a small star\"}]}\n");
    fprintf(f, "{\"id\": \"d\", \"image\": \"png_rgb_56x84.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nWhich shape?\\nA. circle\\nB. square\"}, {\"from\": \"gpt\", \"value\": \"A\"}]}\n");
    fprintf(f, "{\"id\": \"e\", \"image\": \"png_rgb_112x56.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nName the colours.\"}, {\"from\": \"gpt\", \"value\": \"green and gold\"}]}\n");
    fprintf(f, "{\"id\": \"f\", \"conversations\": [{\"from\": \"human\", \"value\": \"Is the sky blue?\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}\n");
    fclose(f);
}

static int mbpo_file_exists_test(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
/* Byte equality of two files (missing == missing). */
static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = mbpo_read_file(a, &na), *y = mbpo_read_file(b, &nb);
    int same = (!x && !y) || (x && y && na == nb && !memcmp(x, y, na));
    mbpo_free(x); mbpo_free(y);
    return same;
}
static int same_outputs(const char *d1, const char *d2) {
    static const char *files[] = { "offline.jsonl", "online.jsonl", "iig.jsonl", "skipped.jsonl", "adv/0.png", "adv/2.png",
                                   "adv/3.png", "adv/5.png" };
    char a[1024], b[1024];
    size_t k;
    for (k = 0; k < sizeof files / sizeof files[0]; k++) {
        snprintf(a, sizeof a, "%s/%s", d1, files[k]);
        snprintf(b, sizeof b, "%s/%s", d2, files[k]);
        if (!same_file(a, b)) { printf("  differs: %s\n", files[k]); return 0; }
    }
    return 1;
}
static int64_t count_lines(const char *path) {
    size_t n = 0, i;
    int64_t lines = 0;
    char *t = mbpo_read_file(path, &n);
    for (i = 0; t && i < n; i++) lines += t[i] == '\n';
    mbpo_free(t);
    return lines;
}

static void test_mine(void) {
    char dir[256], model[300], data[300], images[300], out1[300], out2[300], out3[300], path[5000], cmd[4096];
    mbpo_mine_opts o;
    int k, kills = 0;
    if (!run_test("mine")) return;
    snprintf(dir, sizeof dir, "%s/world", tmpdir());
    make_world(dir);
    snprintf(model, sizeof model, "%s/model", dir); snprintf(data, sizeof data, "%s/data.jsonl", dir);
    snprintf(images, sizeof images, "%s/images", dir);
    snprintf(out1, sizeof out1, "%s/out1", dir); snprintf(out2, sizeof out2, "%s/out2", dir); snprintf(out3, sizeof out3, "%s/out3", dir);
    /* 1. the library call: 4 open-ended candidates (a, b, c, e; b's second turn is yes/no), top 3 */
    mbpo_mine_defaults(&o);
    o.model_dir = model; o.data = data; o.image_root = images; o.out_dir = out1;
    o.top_k = 3; o.pgd.iters = 3; o.max_new_tokens = 6; o.seed = 7;
    REQUIRE(mbpo_mine(&o), "mine");
    snprintf(path, sizeof path, "%s/iig.jsonl", out1);
    CHECK(count_lines(path) == 4, "IIG of the 4 open-ended samples: %lld lines", (long long)count_lines(path));
    snprintf(path, sizeof path, "%s/offline.jsonl", out1);
    {
        int64_t pairs = count_lines(path), skipped;
        char sp[1024];
        snprintf(sp, sizeof sp, "%s/skipped.jsonl", out1);
        skipped = count_lines(sp);
        CHECK(pairs + skipped == 3, "top-3: %lld pairs + %lld skipped", (long long)pairs, (long long)skipped);
        /* the pairs read back as a dataset-like file with the promised keys */
        {
            size_t n = 0;
            char *t = mbpo_read_file(path, &n), *eol = t ? strchr(t, '\n') : NULL;
            mbpo_json *j = eol ? mbpo_json_parse(t, (size_t)(eol - t), path) : NULL;
            static const char *keys[] = { "id", "image", "adv_image", "question", "chosen", "rejected", "iig_chosen",
                                          "iig_rejected", "pgd_iters", "pgd_step", "pgd_eps", "seed", "prompt", "images" };
            size_t kk;
            int all = j != NULL;
            for (kk = 0; j && kk < sizeof keys / sizeof keys[0]; kk++) all &= mbpo_json_get(j, keys[kk]) != NULL;
            CHECK(all || pairs == 0, "an offline line has every key of docs/DESIGN.md 5");
            if (j) {
                const mbpo_json *adv = mbpo_json_get(j, "adv_image");
                mbpo_image img;
                char ap[1200];
                snprintf(ap, sizeof ap, "%s/%s", out1, adv ? adv->string : "?");
                CHECK(adv && mbpo_image_load(&img, ap), "the adversarial PNG loads: %s", ap);
                mbpo_image_free(&img);
                CHECK(strcmp(mbpo_json_get(j, "rejected")->string, mbpo_json_get(j, "chosen")->string) != 0 &&
                      mbpo_json_get(j, "rejected")->len > 0, "rejected is non-empty and differs from chosen");
            }
            mbpo_json_free(j);
            mbpo_free(t);
        }
    }
    snprintf(path, sizeof path, "%s/online.jsonl", out1);
    CHECK(count_lines(path) == 3, "online set: two yes/no samples (one text-only) and the multiple-choice one (%lld)", (long long)count_lines(path));
    /* 2. rerun: nothing changes */
    snprintf(cmd, sizeof cmd, "cp -r %s %s", out1, out2);
    REQUIRE(system(cmd) == 0, "copy");
    o.out_dir = out2;
    REQUIRE(mbpo_mine(&o), "rerun");
    CHECK(same_outputs(out1, out2), "a rerun on finished output changes nothing");
    /* 3. a torn line and a lost tail, as a kill leaves them: resumed to the same bytes */
    snprintf(path, sizeof path, "%s/offline.jsonl", out2);
    {
        size_t n = 0;
        char *t = mbpo_read_file(path, &n), *eol = t ? strchr(t, '\n') : NULL;
        if (t && eol) {
            FILE *f = fopen(path, "wb");
            fwrite(t, 1, (size_t)(eol - t) + 1, f);
            fwrite("{\"index\": 3, \"id\": \"e\", \"image\": \"tor", 1, 37, f);   /* torn */
            fclose(f);
        }
        mbpo_free(t);
    }
    snprintf(path, sizeof path, "%s/iig.jsonl", out2);
    {
        size_t n = 0;
        char *t = mbpo_read_file(path, &n), *eol = t ? strchr(t, '\n') : NULL;
        if (t && eol) { FILE *f = fopen(path, "wb"); fwrite(t, 1, (size_t)(eol - t) + 1, f); fclose(f); }
        mbpo_free(t);
    }
    REQUIRE(mbpo_mine(&o), "resume");
    CHECK(same_outputs(out1, out2), "resumed after a torn line: identical to the uninterrupted run");
    /* 3b. an iig.jsonl holding every line twice (two runs into one folder) changes nothing */
    snprintf(path, sizeof path, "%s/iig.jsonl", out2);
    {
        size_t n = 0;
        char *text = mbpo_read_file(path, &n);
        FILE *f = fopen(path, "ab");
        if (text && f) fwrite(text, 1, n, f);
        if (f) fclose(f);
        mbpo_free(text);
    }
    REQUIRE(mbpo_mine(&o), "resume over repeated IIG lines");
    CHECK(count_lines(path) == 8, "the repeated lines stay (%lld)", (long long)count_lines(path));
    snprintf(path, sizeof path, "%s/offline.jsonl", out2);
    snprintf(cmd, sizeof cmd, "%s/offline.jsonl", out1);
    CHECK(same_file(path, cmd), "repeated IIG lines count once: the same pairs");
    /* 4. the executable, killed (SIGKILL) at several moments, then run to the end, against
       an uninterrupted run of the same executable (this test binary may be built with other
       flags, e.g. under ASan, and floating point would not match bit for bit) */
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 3 --pgd-iters 3 "
             "--max-new-tokens 6 --seed 7 --quiet", model, data, images, out2);
    snprintf(path, sizeof path, "rm -rf %s && %s", out2, cmd);
    REQUIRE(system(path) == 0, "mbpo-mine uninterrupted");
    for (k = 0; k < 6; k++) {
        int rc;
        snprintf(cmd, sizeof cmd, "timeout -s KILL %.2f ./build/mbpo-mine --model %s --data %s --image-root %s --out %s "
                 "--top-k 3 --pgd-iters 3 --max-new-tokens 6 --seed 7 --quiet 2>/dev/null", 0.01 + 0.012 * k, model, data,
                 images, out3);
        rc = system(cmd);
        kills += rc != 0;
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 3 --pgd-iters 3 "
             "--max-new-tokens 6 --seed 7 --quiet", model, data, images, out3);
    REQUIRE(system(cmd) == 0, "mbpo-mine to the end");
    CHECK(same_outputs(out2, out3), "mbpo-mine killed %d times, then finished: identical to the uninterrupted run", kills);
    printf("  %s  mining: %s; mbpo-mine killed %d of 6 times with SIGKILL, resumed: outputs byte-identical\n",
           same_outputs(out2, out3) ? "ok" : "!!", "library run, rerun, torn-line resume", kills);
    /* 4b. a rerun removes a killed run's temporary files (a dead pid), and nothing else */
    {
        static const char *const leave[3] = { "notes.tmp.999999999", "offline.jsonl.tmp.1", "adv/x.png.tmp.999999999" };
        static const char *const clean[2] = { "offline.jsonl.tmp.999999999", "adv/3.png.tmp.999999999" };
        int left = 0, cleaned = 0;
        for (k = 0; k < 3; k++) { snprintf(path, sizeof path, "%s/%s", out3, leave[k]); write_bytes(path, "x", 1); }
        for (k = 0; k < 2; k++) { snprintf(path, sizeof path, "%s/%s", out3, clean[k]); write_bytes(path, "x", 1); }
        REQUIRE(system(cmd) == 0, "mbpo-mine rerun");
        for (k = 0; k < 3; k++) { snprintf(path, sizeof path, "%s/%s", out3, leave[k]); left += mbpo_file_exists_test(path); remove(path); }
        for (k = 0; k < 2; k++) { snprintf(path, sizeof path, "%s/%s", out3, clean[k]); cleaned += !mbpo_file_exists_test(path); }
        CHECK(cleaned == 2 && left == 3, "a rerun removes its own stale temporaries (%d of 2) and leaves other files (%d of 3: "
              "a user's file, a live pid's, a name it does not write)", cleaned, left);
    }
    /* 5. bad input: a missing model file, a missing image under --strict */
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s/nope --data %s --out %s/x --quiet 2>%s/err.txt", dir, data, dir, dir);
    CHECK(system(cmd) != 0, "a missing model directory fails");
    snprintf(path, sizeof path, "%s/err.txt", dir);
    {
        char *t = mbpo_read_file(path, NULL);
        CHECK(t && contains(t, "nope") && contains(t, "config.json"), "the message names the file: %s", t ? t : "");
        mbpo_free(t);
    }
    /* 6. a set with no open-ended question (nothing to mine, only the online set), and one
       whose every record is bad */
    {
        FILE *f;
        char *t, set[512];
        snprintf(set, sizeof set, "%s/closed.jsonl", dir);
        f = fopen(set, "wb");
        fprintf(f, "{\"id\": \"y\", \"image\": \"png_rgb_56x84.png\", \"conversations\": [{\"from\": \"human\", \"value\": "
                   "\"<image>\\nIs there a circle?\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}\n");
        fclose(f);
        snprintf(cmd, sizeof cmd, "rm -rf %s/closed && ./build/mbpo-mine --model %s --data %s --image-root %s --out %s/closed "
                 "--quiet 2>%s/err.txt", dir, model, set, images, dir, dir);
        CHECK(system(cmd) == 0, "a set of closed questions only: mined");
        snprintf(path, sizeof path, "%s/closed/offline.jsonl", dir);
        CHECK(mbpo_file_exists_test(path) && count_lines(path) == 0, "no pairs, and an empty offline.jsonl");
        snprintf(path, sizeof path, "%s/closed/online.jsonl", dir);
        CHECK(count_lines(path) == 1, "the online set has its question");
        snprintf(set, sizeof set, "%s/allbad.jsonl", dir);
        f = fopen(set, "wb");
        fprintf(f, "{\"id\": \"z\", \"image\": \"missing.png\", \"conversations\": [{\"from\": \"human\", \"value\": "
                   "\"<image>\\nIs there a circle?\"}, {\"from\": \"gpt\", \"value\": \"Yes\"}]}\n");
        fclose(f);
        snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s/allbad --quiet 2>%s/err.txt",
                 model, set, images, dir, dir);
        CHECK(system(cmd) != 0, "a set whose every record is bad fails");
        snprintf(path, sizeof path, "%s/err.txt", dir);
        t = mbpo_read_file(path, NULL);
        CHECK(t && contains(t, "allbad.jsonl") && contains(t, "no usable sample"), "and says so: %s", t ? t : "");
        mbpo_free(t);
    }
}


static void test_score(void) {
    char dir[256], model[300], data[300], images[300], out[300], cmd[4096], path[1024];
    mbpo_score_opts o;
    mbpo_score_summary sum;
    if (!run_test("score")) return;
    snprintf(dir, sizeof dir, "%s/world_score", tmpdir());
    make_world(dir);
    snprintf(model, sizeof model, "%s/model", dir); snprintf(data, sizeof data, "%s/data.jsonl", dir);
    snprintf(images, sizeof images, "%s/images", dir); snprintf(out, sizeof out, "%s/score.jsonl", dir);
    mbpo_score_defaults(&o);
    o.model_dir = model; o.data = data; o.image_root = images; o.out_path = out; o.max_new_tokens = 6;
    REQUIRE(mbpo_score(&o, &sum), "score");
    CHECK(sum.n == 7 && sum.n_yesno == 2 && sum.n_mc == 1 && sum.n_open == 4 && sum.n_iig == 6,
          "summary counts: n %lld, yes/no %lld, mc %lld, open %lld", (long long)sum.n, (long long)sum.n_yesno,
          (long long)sum.n_mc, (long long)sum.n_open);
    CHECK(count_lines(out) == 8, "one line per sample plus the summary: %lld", (long long)count_lines(out));
    {   /* the IIG it reports is mbpo_iig's (the same as mining's for the same sample) */
        size_t n = 0;
        char *t = mbpo_read_file(out, &n), *eol = t ? strchr(t, '\n') : NULL;
        mbpo_json *j = eol ? mbpo_json_parse(t, (size_t)(eol - t), out) : NULL;
        CHECK(j && mbpo_json_get(j, "iig") && mbpo_json_get(j, "response") && !strcmp(mbpo_json_get(j, "id")->string, "a"),
              "a per-sample line with iig and response");
        mbpo_json_free(j);
        mbpo_free(t);
    }
    /* the executable, and its failures: a missing image under --strict, an unwritable output */
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s --data %s --image-root %s --out %s/s2.jsonl --max-new-tokens 6 "
             "--quiet > %s/stdout.txt", model, data, images, dir, dir);
    CHECK(system(cmd) == 0, "mbpo-score runs");
    snprintf(path, sizeof path, "%s/s2.jsonl", dir);
    /* the same lines as the library call (not compared bit for bit: this test binary may be
       built with other floating-point flags than build/mbpo-score, e.g. under ASan) */
    CHECK(count_lines(path) == count_lines(out), "mbpo-score writes a line per sample and a summary");
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    {
        FILE *f = fopen(path, "wb");
        fprintf(f, "{\"id\": \"x\", \"image\": \"missing.png\", \"conversations\": [{\"from\": \"human\", \"value\": \"Q\"}, {\"from\": \"gpt\", \"value\": \"A\"}]}\n");
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s --data %s --image-root %s --out %s/s3.jsonl --strict --quiet "
             "2> %s/err.txt", model, path, images, dir, dir);
    CHECK(system(cmd) != 0, "--strict with a missing image fails");
    snprintf(path, sizeof path, "%s/err.txt", dir);
    {
        char *t = mbpo_read_file(path, NULL);
        CHECK(t && contains(t, "bad.jsonl:1") && contains(t, "missing.png"), "names file:line and the image: %s", t ? t : "");
        mbpo_free(t);
    }
    snprintf(path, sizeof path, "%s/s3.jsonl", dir);
    CHECK(!mbpo_file_exists_test(path), "no output left behind");
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s --data %s/bad.jsonl --image-root %s --out %s/s3.jsonl --quiet "
             "2> %s/err.txt", model, dir, images, dir, dir);
    CHECK(system(cmd) != 0, "without --strict, a set with no usable sample fails too");
    snprintf(path, sizeof path, "%s/err.txt", dir);
    {
        char *t = mbpo_read_file(path, NULL);
        CHECK(t && contains(t, "bad.jsonl: no usable sample (1 bad records skipped)"), "and says so: %s", t ? t : "");
        mbpo_free(t);
    }
    snprintf(path, sizeof path, "%s/a_file", dir);   /* a path through a regular file: unwritable even for root */
    write_bytes(path, "x", 1);
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s --data %s --image-root %s --out %s/a_file/s.jsonl --quiet "
             "--max-new-tokens 2 2> %s/err2.txt", model, data, images, dir, dir);
    CHECK(system(cmd) != 0, "an unwritable output fails");
    printf("  ok  scoring: %lld samples (yes/no %lld/%lld, mc %lld/%lld, open %lld), mean IIG %.4f; bad inputs fail cleanly\n",
           (long long)sum.n, (long long)sum.yesno_correct, (long long)sum.n_yesno, (long long)sum.mc_correct,
           (long long)sum.n_mc, (long long)sum.n_open, sum.iig_mean);
}

/* mine -> train -> score from the command lines, and training resumed after kills ends
   with the same bytes as an uninterrupted run. */
static void test_train(void) {
    char dir[256], model[300], data[300], images[300], mined[300], cmd[8192], a[1024], b[1024];
    const char *common = "--G 2 --batch 2 --max-new-tokens 4 --lr 1e-3 --seed 3 --iig-every 2 --quiet";
    const char *common_no_lr = "--G 2 --batch 2 --max-new-tokens 4 --seed 3 --iig-every 2 --quiet";   /* a flag is given once */
    int k, kills = 0;
    if (!run_test("train")) return;
    snprintf(dir, sizeof dir, "%s/world_train", tmpdir());
    make_world(dir);
    snprintf(model, sizeof model, "%s/model", dir); snprintf(data, sizeof data, "%s/data.jsonl", dir);
    snprintf(images, sizeof images, "%s/images", dir); snprintf(mined, sizeof mined, "%s/mined", dir);
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s --top-k 3 --pgd-iters 2 "
             "--max-new-tokens 6 --seed 7 --quiet", model, data, images, mined);
    REQUIRE(system(cmd) == 0, "mbpo-mine");
    /* 1. uninterrupted: 4 steps of mbpo mode, a checkpoint every step */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run1 --mode mbpo --steps 4 --save-every 1 %s", model, mined, mined, images, dir, common);
    REQUIRE(system(cmd) == 0, "mbpo-train");
    snprintf(a, sizeof a, "%s/run1/metrics.jsonl", dir);
    CHECK(count_lines(a) == 4, "4 metrics lines: %lld", (long long)count_lines(a));
    {
        size_t n = 0;
        char *text = mbpo_read_file(a, &n);
        CHECK(text && contains(text, "\"loss\"") && contains(text, "\"kl\"") && contains(text, "\"grad_norm\"") &&
              contains(text, "\"reward_online\"") && contains(text, "\"iig_chosen\"") && contains(text, "\"tokens_per_s\""),
              "metrics carry loss, kl, grad norm, online reward, IIG of chosen/rejected, tokens/s");
        mbpo_free(text);
    }
    {   /* the weights moved, and the checkpoint is a model directory mbpo loads */
        mbpo_model m0, m4;
        size_t i;
        double diff = 0;
        snprintf(a, sizeof a, "%s/run1/checkpoint-4", dir);
        REQUIRE(mbpo_model_load(&m0, model) && mbpo_model_load(&m4, a), "load checkpoint");
        for (i = 0; i < m0.table.total_floats; i++) diff += fabs((double)m0.params[i] - m4.params[i]);
        CHECK(diff > 0, "training changed the weights (sum |diff| %.3g)", diff);
        mbpo_model_free(&m0); mbpo_model_free(&m4);
    }
    /* 2. in two runs: 2 steps, then the same command with 4 */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run2 --mode mbpo --steps 2 --save-every 1 %s && ./build/mbpo-train --model %s --offline %s/offline.jsonl "
             "--online %s/online.jsonl --image-root %s --out %s/run2 --mode mbpo --steps 4 --save-every 1 %s", model, mined, mined,
             images, dir, common, model, mined, mined, images, dir, common);
    REQUIRE(system(cmd) == 0, "two-part run");
    snprintf(a, sizeof a, "%s/run1/checkpoint-4/model.safetensors", dir); snprintf(b, sizeof b, "%s/run2/checkpoint-4/model.safetensors", dir);
    CHECK(same_file(a, b), "2 + 2 steps = 4 steps: identical weights");
    snprintf(a, sizeof a, "%s/run1/checkpoint-4/optimizer.safetensors", dir); snprintf(b, sizeof b, "%s/run2/checkpoint-4/optimizer.safetensors", dir);
    CHECK(same_file(a, b), "2 + 2 steps = 4 steps: identical optimizer state");
    /* 3. killed with SIGKILL at several moments, then finished */
    for (k = 0; k < 6; k++) {
        snprintf(cmd, sizeof cmd, "timeout -s KILL %.2f ./build/mbpo-train --model %s --offline %s/offline.jsonl --online "
                 "%s/online.jsonl --image-root %s --out %s/run3 --mode mbpo --steps 4 --save-every 1 %s 2>/dev/null",
                 0.02 + 0.03 * k, model, mined, mined, images, dir, common);
        kills += system(cmd) != 0;
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run3 --mode mbpo --steps 4 --save-every 1 %s", model, mined, mined, images, dir, common);
    REQUIRE(system(cmd) == 0, "finish after kills");
    snprintf(a, sizeof a, "%s/run1/checkpoint-4/model.safetensors", dir); snprintf(b, sizeof b, "%s/run3/checkpoint-4/model.safetensors", dir);
    CHECK(same_file(a, b), "killed %d times and resumed: identical final weights", kills);
    snprintf(a, sizeof a, "%s/run1/metrics.jsonl", dir); snprintf(b, sizeof b, "%s/run3/metrics.jsonl", dir);
    CHECK(count_lines(b) == 4, "metrics after resumes: %lld lines, one per step", (long long)count_lines(b));
    /* 3b. two updates per sampled batch (the clipped ratio), also resumed exactly */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run4 --mode mbpo --steps 4 --save-every 2 --updates-per-batch 2 %s && ./build/mbpo-train --model %s "
             "--offline %s/offline.jsonl --online %s/online.jsonl --image-root %s --out %s/run5 --mode mbpo --steps 2 --save-every 2 "
             "--updates-per-batch 2 %s && ./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl "
             "--image-root %s --out %s/run5 --mode mbpo --steps 4 --save-every 2 --updates-per-batch 2 %s", model, mined, mined,
             images, dir, common, model, mined, mined, images, dir, common, model, mined, mined, images, dir, common);
    REQUIRE(system(cmd) == 0, "two updates per batch");
    snprintf(a, sizeof a, "%s/run4/checkpoint-4/model.safetensors", dir); snprintf(b, sizeof b, "%s/run5/checkpoint-4/model.safetensors", dir);
    CHECK(same_file(a, b), "two updates per batch: 2 + 2 steps = 4 steps, identical weights");
    snprintf(a, sizeof a, "%s/run1/checkpoint-4/model.safetensors", dir);
    CHECK(!same_file(a, b), "the second update of a batch differs from a fresh batch");
    /* 3c. refusals that keep a run from silently mixing two runs' state */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run1 --mode mbpo --steps 2 %s 2> %s/err.txt", model, mined, mined, images, dir, common, dir);
    CHECK(system(cmd) != 0, "rerun with fewer --steps than the newest checkpoint: refused");
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl --image-root %s "
             "--out %s/run1 --mode mbpo --steps 6 --G 2 --batch 2 --max-new-tokens 4 --lr 1e-3 --seed 4 --quiet 2> %s/err.txt",
             model, mined, mined, images, dir, dir);
    CHECK(system(cmd) != 0, "resume with another seed: refused");
    snprintf(b, sizeof b, "%s/err.txt", dir);
    {
        char *text = mbpo_read_file(b, NULL);
        CHECK(text && contains(text, "run.json") && contains(text, "seed 4 (was 3)"), "says why: %s", text ? text : "");
        mbpo_free(text);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --image-root %s --out %s/run_u "
             "--mode offline --steps 3 --updates-per-batch 2 %s 2> /dev/null", model, mined, images, dir, common);
    CHECK(system(cmd) != 0, "--steps not a multiple of --updates-per-batch: refused");
    /* a diverging run logs its non-finite steps as null, and every metrics line stays JSON */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --image-root %s --out %s/run_nan "
             "--mode offline %s --steps 3 --lr 1e30 --max-grad-norm 0 2> /dev/null", model, mined, images, dir, common_no_lr);
    if (system(cmd) == 0) {
        size_t n = 0;
        char *text, *line, *eol;
        int all = 1, lines = 0;
        snprintf(a, sizeof a, "%s/run_nan/metrics.jsonl", dir);
        text = mbpo_read_file(a, &n);
        for (line = text; text && (eol = strchr(line, '\n')) != NULL; line = eol + 1) {
            mbpo_json *j = mbpo_json_parse(line, (size_t)(eol - line), a);
            all &= j != NULL;
            lines++;
            mbpo_json_free(j);
        }
        CHECK(all && lines == 3, "metrics of a diverging run: %d lines, all JSON", lines);
        mbpo_free(text);
    } else CHECK(1, "a diverging run stopped (decoding non-finite logits)");
    /* the guards: N non-finite steps in a row stop the run with a message, and no checkpoint
       with non-finite weights is ever written */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --image-root %s --out %s/run_nan2 "
             "--mode offline %s --steps 8 --save-every 1 --lr 1e30 --max-grad-norm 0 --max-bad-steps 2 2> %s/err_nan.txt",
             model, mined, images, dir, common_no_lr, dir);
    CHECK(system(cmd) != 0, "a diverging run stops");
    {
        char *text;
        int s2;
        snprintf(a, sizeof a, "%s/err_nan.txt", dir);
        text = mbpo_read_file(a, NULL);
        CHECK(text && (contains(text, "in a row with a non-finite gradient") || contains(text, "refusing to write checkpoint")),
              "says why it stopped: %s", text ? text : "");
        mbpo_free(text);
        for (s2 = 1; s2 <= 8; s2++) {   /* every checkpoint left behind loads and is finite */
            mbpo_model m2;
            size_t q;
            int finite = 1;
            snprintf(a, sizeof a, "%s/run_nan2/checkpoint-%d", dir, s2);
            if (!mbpo_file_exists_test(a)) continue;
            REQUIRE(mbpo_model_load(&m2, a), "load %s", a);
            for (q = 0; q < m2.table.total_floats; q++) finite &= isfinite(m2.params[q]) != 0;
            CHECK(finite, "%s holds only finite weights", a);
            mbpo_model_free(&m2);
        }
    }
    /* an online label the verifier cannot match: refused with file:line */
    snprintf(a, sizeof a, "%s/bad_online.jsonl", dir);
    {
        FILE *f = fopen(a, "wb");
        fprintf(f, "{\"id\": \"q\", \"image\": \"png_rgb_56x84.png\", \"question\": \"Which?\\nA. x\\nB. y\", \"answer\": \"Z\", \"kind\": \"mc\", \"label\": \"Z\"}\n");
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --online %s --image-root %s --out %s/bad_on --mode online --steps 1 "
             "--quiet 2> %s/err.txt", model, a, images, dir, dir);
    CHECK(system(cmd) != 0, "an unverifiable online label fails");
    {
        char *text = mbpo_read_file(b, NULL);
        CHECK(text && contains(text, "bad_online.jsonl:1") && contains(text, "label"), "names file:line: %s", text ? text : "");
        mbpo_free(text);
    }
    /* 4. the other modes run; then score the trained model */
    {
        static const char *modes[4] = { "offline", "offline-rand", "online", "sft" };
        for (k = 0; k < 4; k++) {
            snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --online %s/online.jsonl "
                     "--image-root %s --out %s/mode_%s --mode %s --steps 1 %s", model, mined, mined, images, dir, modes[k],
                     modes[k], common);
            CHECK(system(cmd) == 0, "mode %s runs", modes[k]);
        }
        snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --data %s --image-root %s --out %s/mode_sft_data --mode sft "
                 "--steps 2 %s", model, data, images, dir, common);
        CHECK(system(cmd) == 0, "sft on a dataset runs");
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s/run1/checkpoint-4 --data %s --image-root %s --out %s/score.jsonl "
             "--max-new-tokens 4 --quiet > /dev/null", dir, data, images, dir);
    CHECK(system(cmd) == 0, "mbpo-score on the trained checkpoint");
    /* 5. bad input: a malformed offline line names file:line */
    snprintf(a, sizeof a, "%s/bad_offline.jsonl", dir);
    {
        FILE *f = fopen(a, "wb");
        fprintf(f, "{\"id\": \"x\", \"image\": \"png_rgb_56x84.png\", \"question\": \"Q\"}\n");
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s --image-root %s --out %s/bad --mode offline --steps 1 "
             "--quiet 2> %s/err.txt", model, a, images, dir, dir);
    CHECK(system(cmd) != 0, "a malformed offline set fails");
    snprintf(b, sizeof b, "%s/err.txt", dir);
    {
        char *text = mbpo_read_file(b, NULL);
        CHECK(text && contains(text, "bad_offline.jsonl:1") && contains(text, "chosen"), "names file:line: %s", text ? text : "");
        mbpo_free(text);
    }
    {   /* broken JSON on line 2: the message gives line 2 and the column */
        FILE *f = fopen(a, "wb");
        char *text;
        fprintf(f, "\n{\"id\": \"x\", \"image\": \"png_rgb_56x84.png\" \"question\": \"Q\"}\n");
        fclose(f);
        CHECK(system(cmd) != 0, "an offline set with broken JSON fails");
        text = mbpo_read_file(b, NULL);
        CHECK(text && contains(text, "bad_offline.jsonl:2: column 42: invalid JSON"), "names file:line:column: %s", text ? text : "");
        mbpo_free(text);
    }
    /* 6. a truncated checkpoint and an unwritable output: non-zero, one line naming the file */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/trunc && cp %s/config.json %s/tokenizer.json %s/trunc/ && head -c 5000 "
             "%s/model.safetensors > %s/trunc/model.safetensors", dir, model, model, dir, model, dir);
    REQUIRE(system(cmd) == 0, "truncated copy");
    {
        static const char *tools[3] = { "mbpo-mine", "mbpo-train", "mbpo-score" };
        for (k = 0; k < 3; k++) {
            char *text;
            if (k == 0) snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s/trunc --data %s --image-root %s --out %s/t0 --quiet 2> %s/err.txt", dir, data, images, dir, dir);
            if (k == 1) snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s/trunc --offline %s/offline.jsonl --image-root %s --out %s/t1 --mode offline --quiet 2> %s/err.txt", dir, mined, images, dir, dir);
            if (k == 2) snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s/trunc --data %s --image-root %s --out %s/t2.jsonl --quiet 2> %s/err.txt", dir, data, images, dir, dir);
            CHECK(system(cmd) != 0, "%s on a truncated model.safetensors fails", tools[k]);
            snprintf(b, sizeof b, "%s/err.txt", dir);
            text = mbpo_read_file(b, NULL);
            CHECK(text && contains(text, "trunc/model.safetensors") && contains(text, "truncated") && count_lines(b) == 1,
                  "%s: one line naming the file: %s", tools[k], text ? text : "");
            mbpo_free(text);
        }
        snprintf(b, sizeof b, "%s/a_file", dir);   /* a path through a regular file: unwritable even for root */
        write_bytes(b, "x", 1);
        snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s --data %s --image-root %s --out %s/a_file/out --quiet "
                 "2> %s/err.txt", model, data, images, dir, dir);
        CHECK(system(cmd) != 0, "mbpo-mine into an unwritable place fails");
        snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --offline %s/offline.jsonl --image-root %s --out "
                 "%s/a_file/out --mode offline --steps 1 --quiet 2> %s/err.txt", model, mined, images, dir, dir);
        CHECK(system(cmd) != 0, "mbpo-train into an unwritable place fails");
        snprintf(b, sizeof b, "%s/err.txt", dir);
        {
            char *text = mbpo_read_file(b, NULL);
            CHECK(text && contains(text, "a_file/out: cannot create the directory"), "names the output: %s", text ? text : "");
            mbpo_free(text);
        }
    }
    printf("  %s  mine -> train (4 modes + sft) -> score from the command lines; 2+2 steps = 4 steps and %d SIGKILLs + resume "
           "give identical weights and optimizer state\n", n_failed ? "!!" : "ok", kills);
}

/* The shapes world: deterministic, its answers agree with its scenes, its priors are planted
   where they should be and broken where they should be, and the loaders read it. */
static void test_synth(void) {
    char dir[256], d2[300], a[600], b[600];
    mbpo_synth_opts o;
    mbpo_dataset ds;
    int split;
    if (!run_test("synth")) return;
    snprintf(dir, sizeof dir, "%s/shapes", tmpdir());
    snprintf(d2, sizeof d2, "%s/shapes2/nested/dirs", tmpdir());   /* missing parents are created */
    mbpo_synth_defaults(&o);
    o.out_dir = dir; o.n_train = 300; o.n_test = 60; o.seed = 11;
    REQUIRE(mbpo_synth(&o), "synth");
    o.out_dir = d2;
    REQUIRE(mbpo_synth(&o), "synth again");
    snprintf(a, sizeof a, "%s/train.jsonl", dir); snprintf(b, sizeof b, "%s/train.jsonl", d2);
    CHECK(same_file(a, b), "same seed, same records (the second under missing parent directories)");
    {   /* a file where a directory should be */
        mbpo_synth_opts o2 = o;
        snprintf(a, sizeof a, "%s/shapes2/nested/dirs/train.jsonl/x", tmpdir());
        o2.out_dir = a; o2.n_train = 1; o2.n_test = 1;
        CHECK(!mbpo_synth(&o2) && contains(mbpo_failure_reason(), "cannot create the directory"), "a file in the path: %s",
              mbpo_failure_reason());
    }
    snprintf(a, sizeof a, "%s/images/test_counter/000007.png", dir); snprintf(b, sizeof b, "%s/images/test_counter/000007.png", d2);
    CHECK(same_file(a, b), "same seed, same images");
    for (split = 0; split < 3; split++) {
        static const char *names[3] = { "train", "test_prior", "test_counter" };
        size_t n = 0;
        char *text, *line, *eol;
        int circles = 0, red = 0, scenes = 0, with_square = 0, bad = 0, records = 0;
        snprintf(a, sizeof a, "%s/%s.jsonl", dir, names[split]);
        text = mbpo_read_file(a, &n);
        for (line = text; text && (eol = strchr(line, '\n')) != NULL; line = eol + 1) {
            mbpo_json *j = mbpo_json_parse(line, (size_t)(eol - line), a);
            const mbpo_json *scene = j ? mbpo_json_get(j, "scene") : NULL, *conv = j ? mbpo_json_get(j, "conversations") : NULL;
            const char *fam = j ? mbpo_json_get(j, "family")->string : "", *q, *ans;
            size_t k;
            records++;
            if (!scene || !conv) { bad++; mbpo_json_free(j); continue; }
            q = mbpo_json_get(&conv->items[0], "value")->string;
            ans = mbpo_json_get(&conv->items[1], "value")->string;
            if (!strcmp(fam, "open")) {   /* once per image: the priors */
                int sq = 0;
                scenes++;
                for (k = 0; k < scene->count; k++) {
                    const char *sh = mbpo_json_get(&scene->items[k], "shape")->string;
                    if (!strcmp(sh, "circle")) { circles++; red += !strcmp(mbpo_json_get(&scene->items[k], "colour")->string, "red"); }
                    sq |= !strcmp(sh, "square");
                }
                with_square += sq;
            }
            if (!strcmp(fam, "yesno")) {  /* the answer follows from the scene */
                int truth = 0;
                for (k = 0; k < scene->count; k++) {
                    char want[64];
                    snprintf(want, sizeof want, "a %s %s?", mbpo_json_get(&scene->items[k], "colour")->string,
                             mbpo_json_get(&scene->items[k], "shape")->string);
                    truth |= contains(q, want);
                }
                bad += truth != !strcmp(ans, "Yes");
            }
            if (!strcmp(fam, "mc") || !strcmp(fam, "open")) {
                char opt[8];
                const char *colour = NULL, *tail;
                for (k = 0; k < scene->count; k++) {
                    char want[64];
                    snprintf(want, sizeof want, "the %s?", mbpo_json_get(&scene->items[k], "shape")->string);
                    if (contains(q, want)) colour = mbpo_json_get(&scene->items[k], "colour")->string;
                }
                if (!colour) { bad++; mbpo_json_free(j); continue; }
                if (!strcmp(fam, "open")) bad += strcmp(ans, colour) != 0;
                else {
                    snprintf(opt, sizeof opt, "\n%c. ", ans[0]);
                    tail = strstr(q, opt);
                    bad += !tail || strncmp(tail + 4, colour, strlen(colour)) != 0;
                }
            }
            mbpo_json_free(j);
        }
        mbpo_free(text);
        CHECK(bad == 0 && records == 4 * (split ? 60 : 300), "%s: %d records, %d inconsistent with their scene", names[split], records, bad);
        /* frequencies within 4 binomial standard deviations of the planted rates */
#define NEAR(k, n, p) (fabs((double)(k) / (n) - (p)) <= 4 * sqrt((p) * (1 - (p)) / (n)))
        if (split < 2) {
            CHECK(circles > 20 && NEAR(red, circles, 0.9), "%s: circles red %d/%d (planted 0.9)", names[split], red, circles);
            CHECK(NEAR(with_square, scenes, 0.8), "%s: a square in %d/%d scenes (planted 0.8)", names[split], with_square, scenes);
        } else {
            CHECK(circles > 5 && red == 0, "test_counter: circles red %d/%d (never)", red, circles);
            CHECK(NEAR(with_square, scenes, 0.2), "test_counter: a square in %d/%d scenes (planted 0.2)", with_square, scenes);
        }
#undef NEAR
        printf("  ok  %-12s %4d records; circles red %3d/%-3d; a square in %3d/%-3d scenes\n", names[split], records, red, circles,
               with_square, scenes);
    }
    /* the loaders: the closed-ended detector finds the yes/no and multiple-choice families */
    snprintf(a, sizeof a, "%s/test_prior.jsonl", dir);
    snprintf(b, sizeof b, "%s/images", dir);
    REQUIRE(mbpo_dataset_load(&ds, a, b, 1, NULL), "load");
    {
        int64_t i, yes = 0, mc = 0, open = 0;
        for (i = 0; i < ds.n; i++) {
            yes += ds.samples[i].kind == MBPO_Q_YESNO; mc += ds.samples[i].kind == MBPO_Q_MC; open += ds.samples[i].kind == MBPO_Q_OPEN;
        }
        CHECK(yes == 60 && mc == 60 && open == 120, "detector on the world: %lld yes/no, %lld mc, %lld open", (long long)yes,
              (long long)mc, (long long)open);
    }
    mbpo_dataset_free(&ds);
}

/* The tiny model of the shapes world: loads, its tokenizer keeps every word whole, and a few
   SFT steps on the world lower the loss. */
static void test_synth_model(void) {
    char dir[256], world[300], out[300], path[700];
    mbpo_synth_model_opts mo;
    mbpo_synth_opts so;
    mbpo_model m;
    mbpo_tokenizer *tok;
    mbpo_train_opts to;
    if (!run_test("synth_model")) return;
    snprintf(dir, sizeof dir, "%s/tiny_model", tmpdir());
    snprintf(world, sizeof world, "%s/tiny_world", tmpdir());
    snprintf(out, sizeof out, "%s/tiny_sft", tmpdir());
    mbpo_synth_model_defaults(&mo);
    REQUIRE(mbpo_synth_model(dir, &mo), "synth model");
    REQUIRE(mbpo_model_load(&m, dir), "load");
    CHECK(m.table.n_params > 500000 && m.table.n_params < 5000000, "a tiny model: %lld parameters", (long long)m.table.n_params);
    mbpo_model_free(&m);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    tok = mbpo_tokenizer_load(path);
    REQUIRE(tok, "tokenizer");
    {
        int64_t n;
        const int32_t *ids = mbpo_tokenizer_encode(tok, "What colour is the triangle?", 28, 1, &n);
        CHECK(ids && n == 6, "a question of the world is 6 tokens, one per word: %lld", (long long)n);
        ids = mbpo_tokenizer_encode(tok, "A red circle, a blue star and a green square.", 45, 1, &n);
        CHECK(ids && n == 12, "a caption is one token per word or mark (12): %lld", (long long)n);
        CHECK(mbpo_tokenizer_find(tok, "<|image_pad|>") >= 0 && mbpo_tokenizer_find(tok, "<|im_end|>") >= 0, "the special tokens");
    }
    mbpo_tokenizer_free(tok);
    {   /* HF tokenizers gives ByteLevel's fields no defaults: without them, in the decoder as in
           the pre-tokenizer, tokenizers 0.22 refuses the file ("data did not match any variant of
           untagged enum PyDecoderWrapper") and AutoTokenizer asks for protobuf */
        mbpo_json *root = mbpo_json_parse_file(path);
        const mbpo_json *pre = mbpo_json_get(mbpo_json_get(root, "pre_tokenizer"), "pretokenizers");
        const mbpo_json *parts[2];
        static const char *const fields[3] = { "add_prefix_space", "trim_offsets", "use_regex" };
        int k, f;
        parts[0] = mbpo_json_get(root, "decoder");
        parts[1] = pre && pre->type == MBPO_JSON_ARRAY && pre->count == 2 ? &pre->items[1] : NULL;
        for (k = 0; k < 2; k++)
            for (f = 0; f < 3; f++) {
                const mbpo_json *v = mbpo_json_get(parts[k], fields[f]);
                CHECK(v && v->type == MBPO_JSON_FALSE, "tokenizer.json: the ByteLevel %s has \"%s\": false",
                      k ? "pre-tokenizer" : "decoder", fields[f]);
            }
        mbpo_json_free(root);
    }
    {   /* the shipped model's tokenizer is this writer's (make tiny-model, seed 1) */
        size_t n_new = 0, n_old = 0;
        char *written = mbpo_read_file(path, &n_new), *shipped = mbpo_read_file("demo/tiny-sft/tokenizer.json", &n_old);
        CHECK(written && shipped && n_new == n_old && !memcmp(written, shipped, n_new),
              "demo/tiny-sft/tokenizer.json is byte-identical to what mbpo_synth_model writes (%zu vs %zu bytes)", n_old, n_new);
        mbpo_free(written); mbpo_free(shipped);
    }
    mbpo_synth_defaults(&so);
    so.out_dir = world; so.n_train = 60; so.n_test = 4;
    REQUIRE(mbpo_synth(&so), "world");
    mbpo_train_defaults(&to);
    snprintf(path, sizeof path, "%s/train.jsonl", world);
    to.model_dir = dir; to.data = path; to.out_dir = out; to.mode = MBPO_MODE_SFT;
    {
        static char images[400];
        snprintf(images, sizeof images, "%s/images", world);
        to.image_root = images;
    }
    to.steps = 30; to.batch = 8; to.adam.lr = 2e-3; to.iig_every = 0;
    REQUIRE(mbpo_train(&to), "sft");
    {
        char mp[700];
        size_t n = 0;
        char *text, *first, *last;
        double l0, l1;
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
        text = mbpo_read_file(mp, &n);
        first = text ? strstr(text, "\"loss\": ") : NULL;
        last = text ? strstr(text + n - 400 > text ? text + n - 400 : text, "\"loss\": ") : NULL;
        l0 = first ? atof(first + 8) : 0; l1 = last ? atof(last + 8) : 0;
        CHECK(first && last && l1 < 0.7 * l0, "SFT on the world lowers the loss: %.3f -> %.3f", l0, l1);
        printf("  %s  tiny model: SFT on 240 records of the world, 30 steps: loss %.3f -> %.3f\n", l1 < 0.7 * l0 ? "ok" : "!!", l0, l1);
        mbpo_free(text);
    }
}

/* The shapes world with a tiny Qwen2.5-VL from the command lines, at the smallest sizes that
   still use every part: mbpo-synth --arch qwen2_5_vl (its config and tokenizer), a few SFT
   steps (as make tiny-model does for the shipped Qwen2-VL), mbpo-mine, mbpo-train (mbpo mode;
   1 + 1 steps = 2 steps), mbpo-score and the world's scoring. The vision tower has a window
   block and a full block, and the world's 84-px images fall into several windows. */
static void test_synth25_runs(void) {
    char dir[256], world[300], model[300], model2[300], images[320], sft[300], mined[300], cmd[8192], a[1024], b[1024];
    const char *common = "--G 2 --batch 2 --max-new-tokens 4 --lr 1e-3 --seed 3 --iig-every 1 --quiet";
    double l0 = 0, l1 = 0;
    mbpo_synth_metrics sm;
    if (!run_test("synth25_runs")) return;
    memset(&sm, 0, sizeof sm);
    snprintf(dir, sizeof dir, "%s/synth25", tmpdir());
    snprintf(world, sizeof world, "%s/world", dir); snprintf(model, sizeof model, "%s/model", dir);
    snprintf(model2, sizeof model2, "%s/model2vl", dir); snprintf(images, sizeof images, "%s/images", world);
    snprintf(sft, sizeof sft, "%s/sft", dir); snprintf(mined, sizeof mined, "%s/mined", dir);
    /* 1. the world (2 training images: 8 records; 1 per test split) and the two models */
    snprintf(cmd, sizeof cmd, "rm -rf %s && ./build/mbpo-synth --out %s --train 2 --test 1 --seed 5 > /dev/null && "
             "./build/mbpo-synth --model-out %s --arch qwen2_5_vl --hidden 64 --layers 1 --seed 5 > %s/synth.txt && "
             "./build/mbpo-synth --model-out %s --hidden 64 --layers 1 --seed 5 > /dev/null", dir, world, model, dir, model2);
    REQUIRE(system(cmd) == 0, "mbpo-synth");
    snprintf(a, sizeof a, "%s/synth.txt", dir);
    {
        char *text = mbpo_read_file(a, NULL);
        CHECK(text && contains(text, "Qwen2.5-VL") && count_lines(a) == 1, "mbpo-synth says what it wrote: %s", text ? text : "");
        mbpo_free(text);
    }
    {   /* the folder: Qwen2.5-VL's blocks, windows and tokenizer; the same LM and words as Qwen2-VL's */
        mbpo_model m, m2;
        mbpo_tokenizer *t25, *t2;
        int32_t grid[3] = { 1, 84 / 14, 84 / 14 };   /* an 84 x 84 world image: 6 x 6 patches, 3 x 3 merge units */
        int64_t perm[9], cu[10], n_win;
        static const char *const texts[2] = { "What colour is the triangle?", "A red circle, a blue star and a green square." };
        int k;
        REQUIRE(mbpo_model_load(&m, model) && mbpo_model_load(&m2, model2), "load the two models");
        CHECK(m.cfg.arch == MBPO_ARCH_QWEN2_5_VL && m2.cfg.arch == MBPO_ARCH_QWEN2_VL, "model_type qwen2_5_vl (and qwen2_vl without --arch)");
        CHECK(m.cfg.v_window_size == 56 && m.cfg.v_n_fullatt == 1 && m.cfg.v_fullatt[0] == 1 && m.cfg.v_depth == 2,
              "blocks W F: window_size %lld, fullatt_block_indexes [%d] of %lld", (long long)m.cfg.v_window_size,
              m.cfg.v_n_fullatt ? m.cfg.v_fullatt[0] : -1, (long long)m.cfg.v_depth);
        CHECK(m.cfg.v_embed_dim == m2.cfg.v_embed_dim && m.cfg.v_heads == m2.cfg.v_heads && m.cfg.v_mlp_hidden == 176 &&
              m.cfg.hidden_size == m2.cfg.hidden_size && m.cfg.n_layers == m2.cfg.n_layers && m.cfg.vocab_size == m2.cfg.vocab_size &&
              m.cfg.image_token_id == m2.cfg.image_token_id && m.cfg.tie_word_embeddings,
              "the same LM, vocabulary and vision width as Qwen2-VL's; SwiGLU width %lld", (long long)m.cfg.v_mlp_hidden);
        CHECK(mbpo_param_find(&m.table, "visual.blocks.0.mlp.gate_proj.bias") && mbpo_param_find(&m.table, "visual.blocks.1.norm2.weight") &&
              !mbpo_param_find(&m.table, "visual.blocks.1.norm2.bias") && !mbpo_param_find(&m.table, "visual.merger.ln_q.bias") &&
              !mbpo_param_find(&m.table, "visual.blocks.0.mlp.fc1.weight"), "RMSNorm and SwiGLU tensors");
        n_win = mbpo_window_index(&m.cfg, grid, 1, perm, cu);
        CHECK(n_win == 4 && cu[1] == 16 && cu[2] == 24 && cu[3] == 32 && cu[4] == 36, "an 84-px image: %lld windows of 16, 8, 8, 4 patch rows",
              (long long)n_win);
        mbpo_model_free(&m); mbpo_model_free(&m2);
        snprintf(a, sizeof a, "%s/tokenizer.json", model); snprintf(b, sizeof b, "%s/tokenizer.json", model2);
        t25 = mbpo_tokenizer_load(a); t2 = mbpo_tokenizer_load(b);
        REQUIRE(t25 && t2, "the tokenizers");
        for (k = 0; k < 2; k++) {
            int64_t n25, n2, i;
            const int32_t *ids = mbpo_tokenizer_encode(t25, texts[k], strlen(texts[k]), 1, &n25);
            int32_t copy[64];
            int same = ids && n25 <= 64;
            for (i = 0; same && i < n25; i++) copy[i] = ids[i];
            ids = mbpo_tokenizer_encode(t2, texts[k], strlen(texts[k]), 1, &n2);
            same = same && ids && n2 == n25;
            for (i = 0; same && i < n2; i++) same = copy[i] == ids[i];
            CHECK(same && ids, "'%s': the same %lld ids in both tokenizers", texts[k], (long long)n25);
        }
        {   /* the 8 added tokens that are not special: whole before BPE, kept by skip_special */
            int32_t id = mbpo_tokenizer_find(t25, "<tool_call>"), end = mbpo_tokenizer_find(t25, "<|im_end|>"), ids[2];
            int64_t n = 0;
            const int32_t *e = mbpo_tokenizer_encode(t25, "<tool_call>", 11, 1, &n);
            char *text;
            ids[0] = id; ids[1] = end;
            text = mbpo_tokenizer_decode(t25, ids, 2, 1, NULL);
            CHECK(id > end && mbpo_tokenizer_find(t25, "<|file_sep|>") == id + 7 && mbpo_tokenizer_find(t2, "<tool_call>") < 0 &&
                  e && n == 1 && e[0] == id && text && !strcmp(text, "<tool_call>"),
                  "<tool_call> .. <|file_sep|> after the specials: one id, kept by skip_special ('%s')", text ? text : "");
            mbpo_free(text);
        }
        mbpo_tokenizer_free(t25); mbpo_tokenizer_free(t2);
    }
    {   /* a window under one merge unit (transformers divides by zero) is refused before anything is written */
        mbpo_synth_model_opts mo;
        mbpo_synth_model_defaults(&mo);
        mo.arch = MBPO_ARCH_QWEN2_5_VL; mo.v_window = 27;
        snprintf(a, sizeof a, "%s/bad_window", dir);
        CHECK(!mbpo_synth_model(a, &mo) && contains(mbpo_failure_reason(), "v_window 27 must be >= 28") && !mbpo_file_exists_test(a),
              "v_window 27: %s", mbpo_failure_reason());
    }
    /* 2. SFT on the world: the loss goes down */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s --mode sft --data %s/train.jsonl --image-root %s --out %s --steps 4 "
             "--batch 4 --lr 3e-3 --seed 5 --quiet", model, world, images, sft);
    REQUIRE(system(cmd) == 0, "mbpo-train --mode sft");
    snprintf(a, sizeof a, "%s/metrics.jsonl", sft);
    {
        size_t n = 0;
        char *text = mbpo_read_file(a, &n), *first = text ? strstr(text, "\"loss\": ") : NULL, *last = first;
        while (last && strstr(last + 1, "\"loss\": ")) last = strstr(last + 1, "\"loss\": ");
        l0 = first ? atof(first + 8) : 0; l1 = last ? atof(last + 8) : 0;
        CHECK(count_lines(a) == 4 && l1 < l0, "SFT, 4 steps: loss %.3f -> %.3f", l0, l1);
        mbpo_free(text);
    }
    /* 3. mining on the SFT model: IIG of the 4 open-ended records (2 open, 2 captions), top 2 */
    snprintf(cmd, sizeof cmd, "./build/mbpo-mine --model %s/checkpoint-4 --data %s/train.jsonl --image-root %s --out %s --top-k 2 "
             "--pgd-iters 2 --max-new-tokens 4 --seed 7 --quiet", sft, world, images, mined);
    REQUIRE(system(cmd) == 0, "mbpo-mine");
    snprintf(a, sizeof a, "%s/iig.jsonl", mined);
    CHECK(count_lines(a) == 4, "IIG of the 4 open-ended records: %lld lines", (long long)count_lines(a));
    snprintf(a, sizeof a, "%s/offline.jsonl", mined); snprintf(b, sizeof b, "%s/skipped.jsonl", mined);
    CHECK(count_lines(a) + count_lines(b) == 2, "top-2: %lld pairs + %lld skipped", (long long)count_lines(a), (long long)count_lines(b));
    snprintf(a, sizeof a, "%s/online.jsonl", mined);
    CHECK(count_lines(a) == 4, "online set: the 2 yes/no and 2 multiple-choice records (%lld)", (long long)count_lines(a));
    /* 4. MBPO training: uninterrupted, and resumed (1 step, then the same command with 2) */
    snprintf(cmd, sizeof cmd, "./build/mbpo-train --model %s/checkpoint-4 --offline %s/offline.jsonl --online %s/online.jsonl "
             "--image-root %s --out %s/run1 --mode mbpo --steps 2 --save-every 1 %s && "
             "./build/mbpo-train --model %s/checkpoint-4 --offline %s/offline.jsonl --online %s/online.jsonl "
             "--image-root %s --out %s/run2 --mode mbpo --steps 1 --save-every 1 %s && "
             "./build/mbpo-train --model %s/checkpoint-4 --offline %s/offline.jsonl --online %s/online.jsonl "
             "--image-root %s --out %s/run2 --mode mbpo --steps 2 --save-every 1 %s", sft, mined, mined, images, dir, common,
             sft, mined, mined, images, dir, common, sft, mined, mined, images, dir, common);
    REQUIRE(system(cmd) == 0, "mbpo-train --mode mbpo");
    snprintf(a, sizeof a, "%s/run1/metrics.jsonl", dir);
    {
        char *text = mbpo_read_file(a, NULL);
        CHECK(count_lines(a) == 2 && text && contains(text, "\"reward_online\"") && contains(text, "\"iig_chosen\""),
              "2 metrics lines with the online reward and the IIG of chosen");
        mbpo_free(text);
    }
    snprintf(a, sizeof a, "%s/run1/checkpoint-2/model.safetensors", dir); snprintf(b, sizeof b, "%s/run2/checkpoint-2/model.safetensors", dir);
    CHECK(same_file(a, b), "1 + 1 steps = 2 steps: identical weights");
    snprintf(a, sizeof a, "%s/run1/checkpoint-2/optimizer.safetensors", dir); snprintf(b, sizeof b, "%s/run2/checkpoint-2/optimizer.safetensors", dir);
    CHECK(same_file(a, b), "1 + 1 steps = 2 steps: identical optimizer state");
    snprintf(a, sizeof a, "%s/config.json", model); snprintf(b, sizeof b, "%s/run1/checkpoint-2/config.json", dir);
    CHECK(same_file(a, b), "the checkpoint's config.json is mbpo-synth's (qwen2_5_vl, its windows)");
    {
        mbpo_model m0, m2;
        size_t i;
        double diff = 0;
        snprintf(a, sizeof a, "%s/checkpoint-4", sft); snprintf(b, sizeof b, "%s/run1/checkpoint-2", dir);
        REQUIRE(mbpo_model_load(&m0, a) && mbpo_model_load(&m2, b), "load the checkpoints");
        for (i = 0; i < m0.table.total_floats; i++) diff += fabs((double)m0.params[i] - m2.params[i]);
        CHECK(diff > 0, "training changed the weights (sum |diff| %.3g)", diff);
        mbpo_model_free(&m0); mbpo_model_free(&m2);
    }
    /* 5. scoring the trained model on test_counter (1 image: 4 records), read by the world's scoring */
    snprintf(a, sizeof a, "%s/score.jsonl", dir);
    snprintf(cmd, sizeof cmd, "./build/mbpo-score --model %s/run1/checkpoint-2 --data %s/test_counter.jsonl --image-root %s --out %s "
             "--max-new-tokens 4 --quiet > /dev/null", dir, world, images, a);
    CHECK(system(cmd) == 0, "mbpo-score");
    snprintf(b, sizeof b, "%s/test_counter.jsonl", world);
    CHECK(count_lines(a) == 5 && mbpo_synth_eval(b, a, &sm) && sm.n_open == 1 && sm.n_yesno == 1 && sm.n_mc == 1 && sm.n_captions == 1,
          "a score line per record and a summary, scored in the world: %lld open, %lld yes/no, %lld mc, %lld captions",
          (long long)sm.n_open, (long long)sm.n_yesno, (long long)sm.n_mc, (long long)sm.n_captions);
    printf("  %s  Qwen2.5-VL in the shapes world: synth -> SFT (loss %.3f -> %.3f) -> mine -> train (1 + 1 steps = 2) -> score\n",
           n_failed ? "!!" : "ok", l0, l1);
}

/* The world's scoring: open answers, CHAIR on captions and coverage, counted by hand. */
static void test_synth_eval(void) {
    char data[300], scores[300];
    mbpo_synth_metrics m;
    static const char *const recs =
        "{\"id\": \"r1\", \"family\": \"open\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nWhat colour is the circle?\"}, "
        "{\"from\": \"gpt\", \"value\": \"blue\"}], \"scene\": [{\"shape\": \"circle\", \"colour\": \"blue\"}, {\"shape\": \"square\", \"colour\": \"red\"}]}\n"
        "{\"id\": \"r2\", \"family\": \"open\", \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nWhat colour is the square?\"}, "
        "{\"from\": \"gpt\", \"value\": \"red\"}], \"scene\": [{\"shape\": \"circle\", \"colour\": \"blue\"}, {\"shape\": \"square\", \"colour\": \"red\"}]}\n"
        "{\"id\": \"r3\", \"family\": \"caption\", \"conversations\": [], \"scene\": [{\"shape\": \"circle\", \"colour\": \"blue\"}, "
        "{\"shape\": \"square\", \"colour\": \"red\"}, {\"shape\": \"star\", \"colour\": \"green\"}]}\n"
        "\n"
        "{\"id\": \"r4\", \"family\": \"caption\", \"conversations\": [], \"scene\": [{\"shape\": \"triangle\", \"colour\": \"purple\"}]}\n"
        "{\"id\": \"r5\", \"family\": \"yesno\", \"conversations\": [], \"scene\": []}\n"
        "{\"id\": \"r6\", \"family\": \"mc\", \"conversations\": [], \"scene\": []}\n";
    static const char *const rows =
        "{\"id\": \"r1\", \"response\": \" Blue.\"}\n"
        "{\"id\": \"r2\", \"response\": \"red square\"}\n"
        /* blue circle: right; red star: the star is green; green square: the square is red;
           yellow on its own: nothing is yellow -> 4 instances, 3 wrong; covers the circle only */
        "{\"id\": \"r3\", \"response\": \"A blue circle, a red star and a green square and yellow.\"}\n"
        /* the same instance twice counts once; a bare shape that is there is right */
        "{\"id\": \"r4\", \"response\": \"A purple triangle, a Purple Triangle. A triangle!\"}\n"
        "{\"id\": \"r5\", \"response\": \"Yes\", \"correct\": true}\n"
        "{\"id\": \"r6\", \"response\": \"B\", \"correct\": false}\n"
        "{\"summary\": true, \"iig_mean\": 1.5}\n";
    if (!run_test("synth_eval")) return;
    snprintf(data, sizeof data, "%s/eval_data.jsonl", tmpdir());
    snprintf(scores, sizeof scores, "%s/eval_scores.jsonl", tmpdir());
    write_bytes(data, recs, strlen(recs));
    write_bytes(scores, rows, strlen(rows));
    REQUIRE(mbpo_synth_eval(data, scores, &m), "eval");
    CHECK(m.n_open == 2 && m.open_correct == 1 && m.n_circle == 1 && m.circle_correct == 1, "open: %lld/%lld, circle %lld/%lld",
          (long long)m.open_correct, (long long)m.n_open, (long long)m.circle_correct, (long long)m.n_circle);
    CHECK(m.n_yesno == 1 && m.yesno_correct == 1 && m.n_mc == 1 && m.mc_correct == 0, "closed questions from the rows' verdicts");
    CHECK(m.n_captions == 2 && m.captions_halluc == 1, "CHAIR_s: %lld of %lld captions", (long long)m.captions_halluc, (long long)m.n_captions);
    CHECK(m.instances == 6 && m.instances_halluc == 3, "CHAIR_i: %lld of %lld instances", (long long)m.instances_halluc, (long long)m.instances);
    CHECK(m.scene_shapes == 4 && m.scene_covered == 2, "coverage: %lld of %lld", (long long)m.scene_covered, (long long)m.scene_shapes);
    CHECK(fabs(m.iig_mean - 1.5) < 1e-12, "the summary's IIG");
    {   /* a row whose id the dataset lacks is an error naming the file and line */
        static const char *const bad = "{\"id\": \"r1\", \"response\": \"blue\"}\n{\"id\": \"zz\", \"response\": \"blue\"}\n";
        write_bytes(scores, bad, strlen(bad));
        CHECK(!mbpo_synth_eval(data, scores, &m) && contains(mbpo_failure_reason(), "eval_scores.jsonl:2"), "unknown id: %s",
              mbpo_failure_reason());
        write_bytes(data, "{\"id\": \"r1\"}\n", 13);
        CHECK(!mbpo_synth_eval(data, scores, &m) && contains(mbpo_failure_reason(), "eval_data.jsonl:1"), "not a world record: %s",
              mbpo_failure_reason());
    }
}

/* The demo end to end at toy scale (a random 1-layer model, a handful of images, 2 steps):
   the table, the pictures, a rerun that continues to the same table, and the ablation's
   table over 2 seeds. The method's effect is measured by make demo, not here. */
static void test_demo(void) {
    char model[300], out[300], path[700];
    mbpo_synth_model_opts mo;
    mbpo_demo_opts o;
    char *first = NULL, *again = NULL;
    size_t n1 = 0, n2 = 0;
    if (!run_test("demo")) return;
    snprintf(model, sizeof model, "%s/demo_model", tmpdir());
    snprintf(out, sizeof out, "%s/demo_out", tmpdir());
    mbpo_synth_model_defaults(&mo);
    mo.hidden = 64; mo.layers = 1; mo.mlp = 128; mo.v_embed = 32; mo.v_depth = 1;
    REQUIRE(mbpo_synth_model(model, &mo), "model");
    mbpo_demo_defaults(&o);
    o.model_dir = model; o.out_dir = out;
    o.n_pool = 3; o.n_test = 2; o.top_k = 2; o.steps = 2; o.batch = 2; o.G = 2; o.max_new_tokens = 4;
    REQUIRE(mbpo_demo(&o), "demo");
    snprintf(path, sizeof path, "%s/results.md", out);
    first = mbpo_read_file(path, &n1);
    CHECK(first && contains(first, "| | SFT (start) | MBPO |") && contains(first, "CHAIR_i captions, counter-prior"), "results.md: %s",
          first ? first : "(missing)");
    {
        int rows = 0;
        const char *q;
        for (q = first ? first : ""; (q = strstr(q, "\n| ")) != NULL; q++) rows++;
        CHECK(rows == 17, "a header and 16 metric rows: %d", rows);
    }
    {
        mbpo_image img;
        snprintf(path, sizeof path, "%s/adversarial.png", out);
        CHECK(mbpo_image_load(&img, path) && img.width == 3 * 84 * 3 + 4 * 6 && img.height == 2 * 84 * 3 + 3 * 6,
              "two triptych rows of 3 x 252 px: %dx%d", img.width, img.height);
        mbpo_image_free(&img);
    }
    {
        char *svg;
        snprintf(path, sizeof path, "%s/fig4.svg", out);
        svg = mbpo_read_file(path, NULL);
        CHECK(svg && contains(svg, "<svg") && contains(svg, "<polyline") && contains(svg, "</svg>"), "fig4.svg");
        mbpo_free(svg);
    }
    REQUIRE(mbpo_demo(&o), "demo rerun");
    snprintf(path, sizeof path, "%s/results.md", out);
    again = mbpo_read_file(path, &n2);
    CHECK(first && again && n1 == n2 && !memcmp(first, again, n1), "a rerun continues to the same table");
    mbpo_free(first); mbpo_free(again);
    o.ablation = 1; o.seeds = 2;
    REQUIRE(mbpo_demo(&o), "ablation");
    snprintf(path, sizeof path, "%s/ablation.md", out);
    first = mbpo_read_file(path, NULL);
    CHECK(first && contains(first, "| | SFT (start) | offline-rand | offline | online | MBPO |") && contains(first, " ± "),
          "ablation.md: %s", first ? first : "(missing)");
    mbpo_free(first);
    {   /* other settings in the same directory are refused, not mixed into the table */
        mbpo_demo_opts o2 = o;
        o2.steps = 3;
        CHECK(!mbpo_demo(&o2) && contains(mbpo_failure_reason(), "demo.json") && contains(mbpo_failure_reason(), "other settings"),
              "other settings: %s", mbpo_failure_reason());
    }
    o.model_dir = out;   /* no model there */
    CHECK(!mbpo_demo(&o) && contains(mbpo_failure_reason(), "make tiny-model"), "a missing model: %s", mbpo_failure_reason());
}

void test_runs(void) {
    test_mine();
    test_score();
    test_train();
    test_synth();
    test_synth_model();
    test_synth25_runs();
    test_synth_eval();
    test_demo();
}
