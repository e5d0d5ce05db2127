/* libFuzzer targets for everything mbpo reads from strangers (make fuzz). One file, one target
   per build: -DFUZZ_JSON, -DFUZZ_SAFETENSORS, -DFUZZ_CONFIG, -DFUZZ_TOKENIZER (a whole
   tokenizer.json), -DFUZZ_ENCODE (text through the demo's tokenizer: NFC, pre-tokenizer, BPE,
   decode, chat template), -DFUZZ_DATASET (dataset lines, their questions and verifiers) and
   -DFUZZ_IMAGE (decoding and preprocessing). A target may only fail cleanly: any crash, leak,
   sanitizer report or broken invariant is a finding. Loaders that take a path get the input
   through a file in $TMPDIR (or /tmp). */
#define MBPO_IMPLEMENTATION
#include "../../mbpo.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fuzz_file(const uint8_t *data, size_t size, const char *name) {
    static char path[512];
    const char *tmp = getenv("TMPDIR");
    FILE *f;
    snprintf(path, sizeof path, "%s/mbpo_fuzz_%d_%s", tmp && tmp[0] ? tmp : "/tmp", (int)getpid(), name);
    f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

#if defined(FUZZ_ENCODE) || defined(FUZZ_DATASET)
/* The demo model's tokenizer, loaded once (FUZZ_TOKENIZER_JSON: its path, set by the Makefile). */
static mbpo_tokenizer *fuzz_tok(void) {
    static mbpo_tokenizer *tok;
    if (!tok && !(tok = mbpo_tokenizer_load(FUZZ_TOKENIZER_JSON))) { fprintf(stderr, "%s\n", mbpo_failure_reason()); abort(); }
    return tok;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#if defined(FUZZ_JSON)
    mbpo_json *j = mbpo_json_parse((const char *)data, size, "fuzz.json");
    mbpo_json_free(j);
#elif defined(FUZZ_SAFETENSORS)
    mbpo_st st;
    if (mbpo_st_open(&st, fuzz_file(data, size, "model.safetensors"))) {
        size_t i;
        for (i = 0; i < st.n_tensors; i++) {   /* every tensor that claims a small size is read */
            const mbpo_st_tensor *t = &st.tensors[i];
            if (t->numel >= 0 && t->numel <= (1 << 16)) {
                int64_t *x = (int64_t *)malloc((size_t)(t->numel ? t->numel : 1) * sizeof(int64_t));
                if (!x) abort();
                if (!mbpo_st_read_f32(&st, t, (float *)x)) mbpo_st_read_i64(&st, t, x);
                free(x);
            }
        }
        mbpo_st_close(&st);
    }
#elif defined(FUZZ_CONFIG)
    mbpo_json *j = mbpo_json_parse((const char *)data, size, "config.json");
    mbpo_config c;
    if (j && mbpo_config_from_json(&c, j, "config.json")) {
        mbpo_param_table t;
        char *back;
        if (mbpo_param_table_build(&t, &c)) mbpo_param_table_free(&t);
        if ((back = mbpo_config_to_json(&c)) != NULL) {   /* what is written reads back the same */
            mbpo_json *j2 = mbpo_json_parse(back, strlen(back), "back.json");
            mbpo_config c2;
            if (!j2 || !mbpo_config_from_json(&c2, j2, "back.json")) abort();
            mbpo_json_free(j2);
            mbpo_free(back);
        }
    }
    mbpo_json_free(j);
#elif defined(FUZZ_TOKENIZER)
    mbpo_tokenizer *tok = mbpo_tokenizer_load(fuzz_file(data, size, "tokenizer.json"));
    if (tok) {
        static const char text[] = "What colour is the circle? <|im_start|>A red square, \xc3\xa9t\xc3\xa9 42!\n";
        int64_t n;
        const int32_t *ids = mbpo_tokenizer_encode(tok, text, sizeof text - 1, 1, &n);
        if (ids) {
            int32_t *copy = (int32_t *)malloc((size_t)(n ? n : 1) * sizeof(int32_t));
            char *d;
            if (!copy) abort();
            memcpy(copy, ids, (size_t)n * sizeof(int32_t));
            d = mbpo_tokenizer_decode(tok, copy, n, 0, NULL);
            mbpo_free(d);
            free(copy);
        }
        mbpo_tokenizer_free(tok);
    }
#elif defined(FUZZ_ENCODE)
    mbpo_tokenizer *tok = fuzz_tok();
    int64_t n, k;
    const int32_t *ids;
    char *nfc = mbpo_utf8_nfc((const char *)data, size, NULL);
    int valid = nfc != NULL;
    mbpo_free(nfc);
    for (k = 0; k < 2; k++) {
        ids = mbpo_tokenizer_encode(tok, (const char *)data, size, (int)k, &n);
        if (!ids != !valid) abort();   /* encoding fails exactly on invalid UTF-8 */
        if (ids) {
            int32_t *copy = (int32_t *)malloc((size_t)(n ? n : 1) * sizeof(int32_t));
            size_t len;
            char *d;
            if (!copy) abort();
            memcpy(copy, ids, (size_t)n * sizeof(int32_t));
            d = mbpo_tokenizer_decode(tok, copy, n, 0, &len);
            /* byte-level BPE is lossless on NFC text: decode(encode(x)) == NFC(x) */
            if (d) {
                size_t nl;
                char *x = mbpo_utf8_nfc((const char *)data, size, &nl);
                if (!x || nl != len || memcmp(x, d, len)) abort();
                mbpo_free(x);
            }
            mbpo_free(d);
            free(copy);
        }
    }
    {   /* the chat template over the same text as a question and an answer */
        char *q = (char *)malloc(size + 1);
        mbpo_chat chat;
        if (!q) abort();
        memcpy(q, data, size); q[size] = 0;
        if (strlen(q) == size && mbpo_chat_encode(tok, NULL, q, NULL, 0, q, &chat)) mbpo_chat_free(&chat);
        free(q);
    }
#elif defined(FUZZ_DATASET)
    mbpo_dataset ds;
    if (mbpo_dataset_load(&ds, fuzz_file(data, size, "data.jsonl"), "images", 0, NULL)) {
        int64_t i;
        for (i = 0; i < ds.n; i++) {
            const mbpo_sample *s = &ds.samples[i];
            int64_t n_img[4] = { 4, 4, 4, 4 };
            mbpo_chat chat;
            if (s->kind != MBPO_Q_OPEN) mbpo_verify(s, s->answer);
            if (mbpo_chat_encode(fuzz_tok(), s->system, s->question, n_img, s->n_images < 4 ? s->n_images : 4, s->answer, &chat))
                mbpo_chat_free(&chat);
        }
        mbpo_dataset_free(&ds);
    }
#elif defined(FUZZ_IMAGE)
    mbpo_image img, resized;
    if (mbpo_image_load_memory(&img, data, size, "fuzz-image")) {
        mbpo_preproc pp;
        float *pv = NULL;
        int64_t P;
        int32_t grid[3];
        mbpo_preproc_default(&pp);
        pp.max_pixels = 28 * 28 * 64;   /* keep each run small; the resize path is the same */
        if (mbpo_image_preprocess(&pp, &img, &resized, &pv, &P, grid)) { mbpo_image_free(&resized); mbpo_free(pv); }
        mbpo_image_free(&img);
    }
#else
#error "define one FUZZ_* target"
#endif
    return 0;
}
