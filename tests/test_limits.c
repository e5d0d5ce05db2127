/* test_limits.c - the input limits (mbpo.h, COMPILE-TIME OPTIONS), built with small values
   so that each can be hit cheaply: every limit must stop the input with a message that names
   the limit and says how to raise it, and an input just inside the limit must pass.
   Part of `make test`; ends with "N passed, N failed". */
#define MBPO_MAX_JSON_BYTES 20000        /* demo/tiny-sft/tokenizer.json (9.6 KB) still loads */
#define MBPO_MAX_JSON_DEPTH 8
#define MBPO_MAX_ST_HEADER 4096
#define MBPO_MAX_IMAGE_PIXELS 4000       /* 56 x 84 = 4704 pixels is too many, 56 x 56 is not */
#define MBPO_MAX_SEQ_LEN 64
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_passed, n_failed;
#define CHECK(cond, ...) do { if (cond) n_passed++; else { n_failed++; \
    printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* The last failure names the limit and the -D flag that raises it. */
static int says(const char *limit) {
    char flag[96];
    snprintf(flag, sizeof flag, "-D%s=", limit);
    printf("    %s\n", mbpo_failure_reason());   /* the messages, for the reader of the log */
    return strstr(mbpo_failure_reason(), limit) && strstr(mbpo_failure_reason(), flag);
}
static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(s, 1, n, f); fclose(f); }
}

int main(void) {
    char dir[64], path[128], *big;
    mbpo_json *j;
    size_t k;
    snprintf(dir, sizeof dir, "/tmp/mbpo_limits_%ld", (long)getpid());
    mkdir(dir, 0755);
    printf("== limits\n");

    /* JSON size: a document of MBPO_MAX_JSON_BYTES passes, one byte more does not; in a
       dataset file the message also names the file and line */
    big = (char *)malloc(MBPO_MAX_JSON_BYTES + 2);
    big[0] = '"';
    memset(big + 1, 'a', MBPO_MAX_JSON_BYTES - 2);
    big[MBPO_MAX_JSON_BYTES - 1] = '"';
    j = mbpo_json_parse(big, MBPO_MAX_JSON_BYTES, "edge.json");
    CHECK(j != NULL, "a document of exactly MBPO_MAX_JSON_BYTES parses: %s", mbpo_failure_reason());
    mbpo_json_free(j);
    big[MBPO_MAX_JSON_BYTES - 1] = 'a'; big[MBPO_MAX_JSON_BYTES] = '"';
    CHECK(!mbpo_json_parse(big, MBPO_MAX_JSON_BYTES + 1, "big.json") && says("MBPO_MAX_JSON_BYTES") &&
          strstr(mbpo_failure_reason(), "big.json"), "one byte more: %s", mbpo_failure_reason());
    snprintf(path, sizeof path, "%s/big.json", dir);   /* a file: refused before it is read */
    write_text(path, big, MBPO_MAX_JSON_BYTES + 1);
    CHECK(!mbpo_json_parse_file(path) && says("MBPO_MAX_JSON_BYTES") && strstr(mbpo_failure_reason(), path),
          "a file of one byte more: %s", mbpo_failure_reason());
    {
        mbpo_dataset ds;
        char line[256];
        int n = snprintf(line, sizeof line, "{\"id\": \"a\", \"conversations\": [{\"from\": \"human\", \"value\": \"Is it?\"}, "
                         "{\"from\": \"gpt\", \"value\": \"Yes\"}]}\n{\"id\": \"b\", \"conversations\": [], \"pad\": \"");
        char *text = (char *)malloc((size_t)n + MBPO_MAX_JSON_BYTES + 2);   /* line 2 is longer than the limit */
        memcpy(text, line, (size_t)n);
        memset(text + n, 'a', MBPO_MAX_JSON_BYTES);
        text[n + MBPO_MAX_JSON_BYTES] = '"'; text[n + MBPO_MAX_JSON_BYTES + 1] = '}';
        snprintf(path, sizeof path, "%s/data.jsonl", dir);
        write_text(path, text, (size_t)n + MBPO_MAX_JSON_BYTES + 2);
        free(text);
        CHECK(!mbpo_dataset_load(&ds, path, dir, 1, NULL) && says("MBPO_MAX_JSON_BYTES") && strstr(mbpo_failure_reason(), ":2"),
              "a dataset line over the limit, --strict: %s", mbpo_failure_reason());
    }
    free(big);

    /* JSON depth: 8 levels pass, 9 do not */
    CHECK((j = mbpo_json_parse("[[[[[[[[1]]]]]]]]", 17, "deep.json")) != NULL, "8 levels: %s", mbpo_failure_reason());
    mbpo_json_free(j);
    CHECK(!mbpo_json_parse("[[[[[[[[[1]]]]]]]]]", 19, "deep.json") && says("MBPO_MAX_JSON_DEPTH"), "9 levels: %s",
          mbpo_failure_reason());

    /* safetensors header: a file whose header is longer than MBPO_MAX_ST_HEADER */
    {
        char hdr[8 + 5000];
        uint64_t hlen = 5000;
        mbpo_st st;
        memset(hdr, ' ', sizeof hdr);
        for (k = 0; k < 8; k++) hdr[k] = (char)((hlen >> (8 * k)) & 0xFF);
        hdr[8] = '{'; hdr[sizeof hdr - 1] = '}';
        snprintf(path, sizeof path, "%s/big_header.safetensors", dir);
        write_text(path, hdr, sizeof hdr);
        CHECK(!mbpo_st_open(&st, path) && says("MBPO_MAX_ST_HEADER") && strstr(mbpo_failure_reason(), "big_header"),
              "a 5000-byte header: %s", mbpo_failure_reason());
        /* a header of exactly the limit (a valid one: metadata, no tensors, padded with spaces) */
        hlen = MBPO_MAX_ST_HEADER;
        for (k = 0; k < 8; k++) hdr[k] = (char)((hlen >> (8 * k)) & 0xFF);
        memset(hdr + 8, ' ', (size_t)hlen);
        memcpy(hdr + 8, "{\"__metadata__\": {}}", 19);
        write_text(path, hdr, 8 + (size_t)hlen);
        if (mbpo_st_open(&st, path)) { CHECK(1, "ok"); mbpo_st_close(&st); }
        else CHECK(!strstr(mbpo_failure_reason(), "MBPO_MAX_ST_HEADER"), "a header of exactly the limit is not refused by it: %s",
                   mbpo_failure_reason());
    }

    /* image pixels: 56 x 84 is over 4000, 80 x 60 is over too, a 56 x 56 image is fine */
    {
        mbpo_image img;
        CHECK(!mbpo_image_load(&img, "tests/fixtures/images/png_rgb_56x84.png") && says("MBPO_MAX_IMAGE_PIXELS") &&
              strstr(mbpo_failure_reason(), "png_rgb_56x84.png"), "a 56x84 PNG: %s", mbpo_failure_reason());
        CHECK(mbpo_image_init(&img, 56, 56), "a 56x56 image fits: %s", mbpo_failure_reason());
        snprintf(path, sizeof path, "%s/small.png", dir);
        CHECK(mbpo_image_write_png(path, &img), "write it");
        mbpo_image_free(&img);
        CHECK(mbpo_image_load(&img, path), "and it loads back: %s", mbpo_failure_reason());
        mbpo_image_free(&img);
    }

    /* sequence length: a short question fits in 64 tokens, a long one does not; generation
       room (prompt + max_new_tokens) is checked too */
    {
        mbpo_tokenizer *tok = mbpo_tokenizer_load("demo/tiny-sft/tokenizer.json");
        mbpo_chat chat;
        mbpo_kv kv;
        mbpo_config cfg;
        mbpo_model m;
        const char *lng = "Is the red circle to the left of the blue square that sits under the green triangle "
                          "next to the purple star in the upper corner of the picture?";
        CHECK(tok != NULL, "tokenizer: %s", mbpo_failure_reason());
        if (tok) {
            CHECK(mbpo_chat_encode(tok, NULL, "Is it red?", NULL, 0, "Yes", &chat), "a short conversation: %s",
                  mbpo_failure_reason());
            mbpo_chat_free(&chat);
            CHECK(!mbpo_chat_encode(tok, NULL, lng, NULL, 0, "Yes", &chat) && says("MBPO_MAX_SEQ_LEN"), "a long one: %s",
                  mbpo_failure_reason());
            mbpo_tokenizer_free(tok);
        }
        CHECK(mbpo_config_load(&cfg, "demo/tiny-sft/config.json") && mbpo_model_init(&m, &cfg), "config: %s",
              mbpo_failure_reason());
        CHECK(mbpo_kv_init(&kv, &m, 1, 64), "a KV cache of 64 tokens: %s", mbpo_failure_reason());
        mbpo_kv_free(&kv);
        CHECK(!mbpo_kv_init(&kv, &m, 1, 65) && says("MBPO_MAX_SEQ_LEN") && strstr(mbpo_failure_reason(), "--max-new-tokens"),
              "65: %s", mbpo_failure_reason());
        mbpo_model_free(&m);
    }
    printf("  %s  limits: JSON size and depth, safetensors header, image pixels, sequence length - each refused with "
           "its name and the -D flag that raises it, and passed just inside\n", n_failed ? "!!" : "ok");
    {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) printf("  (could not remove %s)\n", dir);
    }
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed != 0;
}
