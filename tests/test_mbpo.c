/* test_mbpo.c - the unit and parity tests of mbpo.h. Run from the repository root:
       build/test_mbpo [filter]
   Each test compares against a reference from outside the code under test: transformers
   fixtures (tests/fixtures, made by tests/reference/make_fixtures.py), finite differences of
   independent double-precision implementations, or hand-made files. Ends with the line
   "N passed, N failed" and exits non-zero on any failure. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_common.h"

int n_passed, n_failed;
const char *filter;
static int quiet;   /* a mutation run: count the failures, print nothing */


/* Compare got against ref: err = max|got - ref| / max(max|ref|, floor) (norm-relative, so
   that near-zero entries do not dominate), reported with the absolute max error. */
int close_enough(const char *what, const float *got, const float *ref, int64_t n, double tol, int relative) {
    double maxerr = 0, maxref = 0, err;
    int64_t i, worst = 0;
    for (i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]);
        if (!(e <= maxerr)) { maxerr = e; worst = i; }   /* NaN counts as worst */
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    err = relative ? maxerr / (maxref > 1e-30 ? maxref : 1e-30) : maxerr;
    if (!(err <= tol)) {
        n_failed++;
        if (quiet) return 0;
        printf("FAIL  %-46s %s err %.3e > tol %.0e (max abs %.3e at %lld: got %.8g ref %.8g)\n", what,
               relative ? "rel" : "abs", err, tol, maxerr, (long long)worst, n ? got[worst] : 0.0, n ? ref[worst] : 0.0);
        return 0;
    }
    n_passed++;
    if (quiet) return 1;
    printf("  ok  %-46s %s err %.3e (tol %.0e, max |ref| %.3g)\n", what, relative ? "rel" : "abs", err, tol, maxref);
    return 1;
}
int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }
/* The filter: substrings of test names, separated by commas ("json,chat"); a test runs if one matches. */
int run_test(const char *name) {
    if (filter) {
        const char *f = filter;
        int match = 0;
        while (*f && !match) {
            size_t n = strcspn(f, ","), len = strlen(name), k;
            for (k = 0; k + n <= len && !match; k++) match = n > 0 && !strncmp(name + k, f, n);
            f += n + (f[n] == ',');
        }
        if (!match) return 0;
    }
    printf("== %s\n", name);
    return 1;
}
float *falloc(int64_t n) { return (float *)calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
void fill_normal(float *x, int64_t n, mbpo_rng *rng, double scale) {
    int64_t i;
    for (i = 0; i < n; i++) x[i] = (float)(scale * mbpo_rng_normal(rng));
}
const char *tmpdir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/mbpo_test_%ld", (long)getpid() % 100000000L);
        mkdir(dir, 0755);
    }
    return dir;
}
void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
}

/* ============================================================== base: JSON */

static void test_json(void) {
    const char *good = "{\"a\": [1, -2.5e3, true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\", \"o\": {}}";
    mbpo_json *j;
    const mbpo_json *a, *s;
    struct { const char *text, *expect; } bad[] = {
        { "{\"a\": 1,}", "good.json:1:9" },          /* trailing comma */
        { "{\"a\" 1}", "expected ':'" },
        { "[1, 2", "expected ',' or ']'" },
        { "\"abc", "unterminated string" },
        { "{\n  \"a\": tru\n}", "good.json:2:8" },
        { "01", "trailing characters" },
        { "[1.]", "bad number" },
        { "\"\\ud800\"", "unpaired UTF-16 surrogate" },
        { "\"\xff\"", "invalid UTF-8" },
        { "\"a\tb\"", "control character" },
        { "{} {}", "trailing characters" },
        { "", "unexpected end of input" },
    };
    size_t i;
    char deep[600];
    if (!run_test("json")) return;
    j = mbpo_json_parse(good, strlen(good), "good.json");
    REQUIRE(j != NULL, "valid JSON rejected");
    a = mbpo_json_get(j, "a");
    s = mbpo_json_get(j, "s");
    CHECK(a && a->type == MBPO_JSON_ARRAY && a->count == 5, "array");
    CHECK(a && a->items[0].is_int && a->items[0].integer == 1 && a->items[1].number == -2500.0 && !a->items[1].is_int, "numbers");
    CHECK(a && a->items[2].type == MBPO_JSON_TRUE && a->items[4].type == MBPO_JSON_NULL, "literals");
    CHECK(s && s->len == 8 && !memcmp(s->string, "x\xc3\xa9\xf0\x9f\x98\x80\n", 8), "escapes and surrogate pairs decode to UTF-8");
    CHECK(mbpo_json_get(j, "o") && mbpo_json_get(j, "o")->count == 0, "empty object");
    CHECK(a && a->line == 1 && a->col == 7, "value position %d:%d", a ? a->line : 0, a ? a->col : 0);
    mbpo_json_free(j);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mbpo_json *b = mbpo_json_parse(bad[i].text, strlen(bad[i].text), "good.json");
        CHECK(!b && contains(mbpo_failure_reason(), bad[i].expect), "bad JSON %zu: got '%s', want '%s'", i,
              b ? "(accepted)" : mbpo_failure_reason(), bad[i].expect);
        mbpo_json_free(b);
    }
    memset(deep, '[', sizeof deep);
    j = mbpo_json_parse(deep, sizeof deep, "deep.json");
    CHECK(!j && contains(mbpo_failure_reason(), "MBPO_MAX_JSON_DEPTH"), "depth limit: %s", mbpo_failure_reason());
    mbpo_json_free(j);
}

/* ============================================================== base: halves, RNG */

static void test_halves_rng(void) {
    /* bit patterns worked out by hand from the IEEE formats */
    struct { float f; uint16_t bf, h; } t[] = {
        { 1.0f, 0x3F80, 0x3C00 }, { -2.0f, 0xC000, 0xC000 }, { 0.5f, 0x3F00, 0x3800 },
        { 65504.0f, 0x4780, 0x7BFF }, { 5.9604644775390625e-8f, 0x3380, 0x0001 }, { 0.0f, 0, 0 },
        { 1.00390625f, 0x3F80, 0x3C04 },   /* 1 + 2^-8: bf16 ties to even -> 1.0 */
        { 1.01171875f, 0x3F82, 0x3C0C },   /* 1 + 3*2^-8: bf16 ties to even -> up */
    };
    size_t i;
    mbpo_rng r1, r2;
    double mean = 0, var = 0;
    int k, same = 1;
    if (!run_test("halves_rng")) return;
    for (i = 0; i < sizeof t / sizeof t[0]; i++) {
        CHECK(mbpo_f32_to_bf16(t[i].f) == t[i].bf, "bf16(%g) = %04x, want %04x", t[i].f, mbpo_f32_to_bf16(t[i].f), t[i].bf);
        CHECK(mbpo_f32_to_f16(t[i].f) == t[i].h, "f16(%g) = %04x, want %04x", t[i].f, mbpo_f32_to_f16(t[i].f), t[i].h);
        CHECK(mbpo_f16_to_f32(t[i].h) == t[i].f || t[i].f == 1.00390625f || t[i].f == 1.01171875f, "f16 -> f32 %g", t[i].f);
    }
    CHECK(mbpo_f32_to_f16(1e6f) == 0x7C00, "f16 overflow is inf");
    CHECK(isnan(mbpo_bf16_to_f32(mbpo_f32_to_bf16(NAN))), "bf16 NaN stays NaN");
    mbpo_rng_seed(&r1, 42); mbpo_rng_seed(&r2, 42);
    for (k = 0; k < 100; k++) same &= mbpo_rng_u64(&r1) == mbpo_rng_u64(&r2);
    CHECK(same, "same seed, same stream");
    for (k = 0; k < 20000; k++) { double x = mbpo_rng_normal(&r1); mean += x; var += x * x; }
    mean /= 20000; var = var / 20000 - mean * mean;
    CHECK(fabs(mean) < 0.03 && fabs(var - 1) < 0.05, "normal(0,1): mean %.4f var %.4f", mean, var);
}

/* ============================================================== base: safetensors */

static void test_safetensors(void) {
    char path[512], dir[256], p2[1024];
    float a[6] = { 1, -2, 3.5f, 0.1f, 1e-3f, -7 }, b[4] = { 0.5f, 1.5f, -0.25f, 3 }, got[6];
    mbpo_st_entry e[3];
    mbpo_st st;
    const mbpo_st_tensor *t;
    char *raw;
    size_t len;
    if (!run_test("safetensors")) return;
    memset(e, 0, sizeof e);
    e[0].name = "a"; e[0].dtype = MBPO_DT_F32; e[0].ndim = 2; e[0].shape[0] = 2; e[0].shape[1] = 3; e[0].data = a;
    e[1].name = "b.bf16"; e[1].dtype = MBPO_DT_BF16; e[1].ndim = 1; e[1].shape[0] = 4; e[1].data = b;
    e[2].name = "b.f16"; e[2].dtype = MBPO_DT_F16; e[2].ndim = 1; e[2].shape[0] = 4; e[2].data = b;
    snprintf(path, sizeof path, "%s/t.safetensors", tmpdir());
    REQUIRE(mbpo_st_write(path, e, 3), "write");
    REQUIRE(mbpo_st_open(&st, path), "open what we wrote");
    CHECK(st.n_tensors == 3, "3 tensors");
    t = mbpo_st_find(&st, "a");
    CHECK(t && t->dtype == MBPO_DT_F32 && t->ndim == 2 && t->shape[1] == 3 && mbpo_st_read_f32(&st, t, got) &&
          !memcmp(got, a, sizeof a), "F32 round trip");
    t = mbpo_st_find(&st, "b.bf16");
    CHECK(t && mbpo_st_read_f32(&st, t, got) && !memcmp(got, b, sizeof b), "BF16 round trip (exact values)");
    t = mbpo_st_find(&st, "b.f16");
    CHECK(t && mbpo_st_read_f32(&st, t, got) && !memcmp(got, b, sizeof b), "F16 round trip (exact values)");
    mbpo_st_close(&st);

    /* corrupt files: each must fail naming the file and the problem */
    raw = mbpo_read_file(path, &len);
    REQUIRE(raw != NULL, "read back");
    snprintf(p2, sizeof p2, "%s/trunc.safetensors", tmpdir());
    write_bytes(p2, raw, len - 5);
    CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), p2) && contains(mbpo_failure_reason(), "truncated"),
          "truncated data: %s", mbpo_failure_reason());
    write_bytes(p2, raw, 20);
    CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "truncated"), "truncated header: %s", mbpo_failure_reason());
    write_bytes(p2, raw, 4);
    CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "truncated"), "4-byte file: %s", mbpo_failure_reason());
    {   /* a header that lies about an offset: same length, end of 'a' moved past the data */
        char *lie = (char *)malloc(len), *at;
        memcpy(lie, raw, len);
        at = strstr(lie + 8, "\"shape\":[2,3],\"data_offsets\":[0,24]}");
        REQUIRE(at != NULL, "find a's offsets in the header");
        memcpy(at, "\"shape\":[6],\"data_offsets\":[40,64] }", 36);   /* 40 data bytes in all */
        write_bytes(p2, lie, len);
        CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "tensor 'a'") && contains(mbpo_failure_reason(), p2) &&
              contains(mbpo_failure_reason(), "beyond the data section"),
              "lying offset: %s", mbpo_failure_reason());
        memcpy(lie, raw, len);
        at = strstr(lie + 8, "\"data_offsets\":[0,24]");
        memcpy(at, "\"data_offsets\":[0,28]", 21);
        write_bytes(p2, lie, len);
        CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "needs 24"), "size mismatch: %s", mbpo_failure_reason());
        memcpy(lie, raw, len);
        lie[0] = (char)0xFF; lie[1] = (char)0xFF; lie[2] = (char)0xFF; lie[3] = 0x7F;
        write_bytes(p2, lie, len);
        CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "header length"), "absurd header length: %s", mbpo_failure_reason());
        free(lie);
    }
    {   /* overlapping tensors, hand-made */
        const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        unsigned char buf[256];
        size_t hl = strlen(h);
        memset(buf, 0, sizeof buf);
        buf[0] = (unsigned char)hl;
        memcpy(buf + 8, h, hl);
        write_bytes(p2, buf, 8 + hl + 12);
        CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "overlap"), "overlap: %s", mbpo_failure_reason());
    }
    {   /* element count whose byte size overflows: must not open */
        const char *h = "{\"x\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952,2],\"data_offsets\":[0,0]}}";
        unsigned char buf[256];
        size_t hl = strlen(h);
        memset(buf, 0, sizeof buf);
        buf[0] = (unsigned char)hl;
        memcpy(buf + 8, h, hl);
        write_bytes(p2, buf, 8 + hl);
        CHECK(!mbpo_st_open(&st, p2) && contains(mbpo_failure_reason(), "2^62"), "overflowing size: %s", mbpo_failure_reason());
    }
    {   /* the writer refuses bad entries before creating anything */
        mbpo_st_entry bad = e[0];
        char p3[1024];
        snprintf(p3, sizeof p3, "%s/never.safetensors", tmpdir());
        bad.name = "a\"b";
        CHECK(!mbpo_st_write(p3, &bad, 1) && contains(mbpo_failure_reason(), "quote"), "quote in a name: %s", mbpo_failure_reason());
        bad.name = "neg"; bad.shape[0] = -1;
        CHECK(!mbpo_st_write(p3, &bad, 1) && contains(mbpo_failure_reason(), "bad shape"), "negative dim: %s", mbpo_failure_reason());
        CHECK(fopen(p3, "rb") == NULL, "no file left behind by a refused write");
    }
    mbpo_free(raw);

    /* sharded checkpoint: two files and an index */
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir());
    mkdir(dir, 0755);
    snprintf(p2, sizeof p2, "%s/model-00001-of-00002.safetensors", dir);
    REQUIRE(mbpo_st_write(p2, e, 1), "shard 1");
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    REQUIRE(mbpo_st_write(p2, e + 1, 2), "shard 2");
    snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", dir);
    {
        const char *idx = "{\"metadata\": {\"total_size\": 40}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                          " \"b.bf16\": \"model-00002-of-00002.safetensors\", \"b.f16\": \"model-00002-of-00002.safetensors\"}}";
        write_bytes(p2, idx, strlen(idx));
    }
    REQUIRE(mbpo_st_open_dir(&st, dir), "open sharded dir");
    CHECK(st.n_files == 2 && st.n_tensors == 3, "2 shards, 3 tensors");
    t = mbpo_st_find(&st, "b.f16");
    CHECK(t && t->file == 1 && mbpo_st_read_f32(&st, t, got) && !memcmp(got, b, sizeof b), "read from shard 2");
    t = mbpo_st_find(&st, "a");
    CHECK(t && mbpo_st_read_f32(&st, t, got) && !memcmp(got, a, sizeof a), "read from shard 1");
    mbpo_st_close(&st);
    {
        const char *idx = "{\"weight_map\": {\"a\": \"model-00002-of-00002.safetensors\"}}";
        write_bytes(p2, idx, strlen(idx));
        CHECK(!mbpo_st_open_dir(&st, dir) && contains(mbpo_failure_reason(), "not in shard"), "index names the wrong shard: %s",
              mbpo_failure_reason());
        idx = "{\"weight_map\": {\"a\": \"../evil.safetensors\"}}";
        write_bytes(p2, idx, strlen(idx));
        CHECK(!mbpo_st_open_dir(&st, dir) && contains(mbpo_failure_reason(), "plain file name"), "path escape: %s",
              mbpo_failure_reason());
    }
}

/* ============================================================== model: config */

/* mbpo_config_to_json then mbpo_config_from_json gives c back, field for field. */
static int config_round_trips(const mbpo_config *c) {
    char *text = mbpo_config_to_json(c);
    mbpo_json *j = text ? mbpo_json_parse(text, strlen(text), "rendered") : NULL;
    mbpo_config back;
    int ok = j && mbpo_config_from_json(&back, j, "rendered") && !memcmp(&back, c, sizeof back);
    mbpo_json_free(j);
    mbpo_free(text);
    return ok;
}
static void test_config(void) {
    mbpo_config c2, c7, cn;
    mbpo_param_table t;
    char path[512];
    const char *v5 =
        "{\"model_type\": \"qwen2_vl\", \"image_token_id\": 1000, \"video_token_id\": 1001,"
        " \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003,"
        " \"text_config\": {\"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 176,"
        "   \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6,"
        "   \"tie_word_embeddings\": true,"
        "   \"rope_parameters\": {\"rope_type\": \"default\", \"mrope_section\": [2, 3, 3], \"rope_theta\": 1000000.0}},"
        " \"vision_config\": {\"depth\": 2, \"embed_dim\": 64, \"num_heads\": 4, \"hidden_size\": 64}}";
    mbpo_json *j;
    if (!run_test("config")) return;
    REQUIRE(mbpo_config_load(&c2, "tests/configs/Qwen2-VL-2B-Instruct/config.json"), "2B config");
    REQUIRE(mbpo_config_load(&c7, "tests/configs/Qwen2-VL-7B-Instruct/config.json"), "7B config");
    CHECK(c2.hidden_size == 1536 && c2.n_layers == 28 && c2.n_kv_heads == 2 && c2.tie_word_embeddings &&
          c2.mrope_section[1] == 24 && c2.v_mlp_hidden == 5120 && c2.rms_norm_eps == 1e-6, "2B fields");
    CHECK(c7.hidden_size == 3584 && !c7.tie_word_embeddings && c7.vocab_size == 152064, "7B fields");
    REQUIRE(mbpo_param_table_build(&t, &c2), "2B table");
    CHECK(t.n_params == 2208985600LL, "Qwen2-VL-2B parameters: %lld, want 2,208,985,600", (long long)t.n_params);
    printf("  Qwen2-VL-2B: %lld parameters in %zu tensors\n", (long long)t.n_params, t.n);
    mbpo_param_table_free(&t);
    REQUIRE(mbpo_param_table_build(&t, &c7), "7B table");
    CHECK(t.n_params == 8291375616LL, "Qwen2-VL-7B parameters: %lld, want 8,291,375,616", (long long)t.n_params);
    printf("  Qwen2-VL-7B: %lld parameters in %zu tensors\n", (long long)t.n_params, t.n);
    mbpo_param_table_free(&t);
    /* the transformers 5.x layout (nested text_config, rope_parameters) reads the same */
    j = mbpo_json_parse(v5, strlen(v5), "v5.json");
    REQUIRE(j && mbpo_config_from_json(&cn, j, "v5.json"), "5.x layout");
    CHECK(cn.hidden_size == 64 && cn.n_kv_heads == 2 && cn.tie_word_embeddings && cn.mrope_section[2] == 3 &&
          cn.rope_theta == 1e6 && cn.v_depth == 2 && cn.head_dim == 16, "5.x fields");
    mbpo_json_free(j);
    {   /* demo/tiny-sft as transformers saves it (tests/reference/interop.py): 4.57.6 writes the text
           fields flat and in text_config with rope_scaling type "default"; 5.6.0 only in text_config */
        static const char *const saved[2] = { "tests/configs/tiny-sft-saved-4.57.6/config.json",
                                              "tests/configs/tiny-sft-saved-5.6.0/config.json" };
        mbpo_config ct, cs;
        int k;
        REQUIRE(mbpo_config_load(&ct, "demo/tiny-sft/config.json"), "tiny-sft config");
        for (k = 0; k < 2; k++) {
            int ok = mbpo_config_load(&cs, saved[k]);
            CHECK(ok && cs.vocab_size == ct.vocab_size && cs.hidden_size == ct.hidden_size && cs.n_layers == ct.n_layers &&
                  cs.n_kv_heads == ct.n_kv_heads && cs.tie_word_embeddings == ct.tie_word_embeddings &&
                  cs.mrope_section[0] == ct.mrope_section[0] && cs.mrope_section[2] == ct.mrope_section[2] &&
                  cs.rope_theta == ct.rope_theta && cs.v_depth == ct.v_depth && cs.v_in_channels == ct.v_in_channels &&
                  cs.image_token_id == ct.image_token_id && cs.eos_token_id == ct.eos_token_id,
                  "%s reads as demo/tiny-sft/config.json%s%s", saved[k], ok ? "" : ": ", ok ? "" : mbpo_failure_reason());
        }
    }
    {   /* tie_word_embeddings: the top-level flag wins over text_config; non-booleans refused */
        const char *t1 = "{\"tie_word_embeddings\": true, \"vision_config\": {\"depth\": 1, \"embed_dim\": 16, \"num_heads\": 1},"
                         " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003,"
                         " \"text_config\": {\"tie_word_embeddings\": false, \"vocab_size\": 1024, \"hidden_size\": 16,"
                         " \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 1,"
                         " \"rope_scaling\": {\"mrope_section\": [2, 3, 3]}}}";
        j = mbpo_json_parse(t1, strlen(t1), "t1.json");
        CHECK(j && mbpo_config_from_json(&cn, j, "t1.json") && cn.tie_word_embeddings == 1 && cn.rms_norm_eps == 1e-5,
              "top-level tie_word_embeddings wins: %s", mbpo_failure_reason());
        mbpo_json_free(j);
        {
            char t2[1024];
            snprintf(t2, sizeof t2, "%s", t1);
            memcpy(strstr(t2, "true"), "1   ", 4);   /* "tie_word_embeddings": 1 */
            j = mbpo_json_parse(t2, strlen(t2), "t2.json");
        }
        CHECK(j && !mbpo_config_from_json(&cn, j, "t2.json") && contains(mbpo_failure_reason(), "true or false"),
              "tie_word_embeddings: 1 refused: %s", mbpo_failure_reason());
        mbpo_json_free(j);
    }
    /* render + re-read is the identity */
    CHECK(config_round_trips(&c7), "render/parse round trip: %s", mbpo_failure_reason());
    /* missing or wrong fields name the file and the field */
    {
        struct { const char *text, *expect; } bad[] = {
            { "{\"vision_config\": {}, \"hidden_size\": 64}", "missing required field \"vocab_size\"" },
            { "{\"model_type\": \"qwen3_vl\"}", "not supported" },
            { "{\"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
              " \"num_attention_heads\": 4, \"rms_norm_eps\": 1e-6, \"rope_scaling\": {\"mrope_section\": [2,3,4]},"
              " \"vision_config\": {}}", "must sum to head_dim/2" },
            { "{\"vocab_size\": 10, \"hidden_size\": 64.5}", "must be an integer" },
        };
        size_t i;
        snprintf(path, sizeof path, "%s/config.json", tmpdir());
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            write_bytes(path, bad[i].text, strlen(bad[i].text));
            CHECK(!mbpo_config_load(&cn, path) && contains(mbpo_failure_reason(), path) &&
                  contains(mbpo_failure_reason(), bad[i].expect), "bad config %zu: %s", i, mbpo_failure_reason());
        }
    }
}

/* Qwen2.5-VL configs (docs/QWEN25VL.md 1): the hub files, the 4.57 and 5.x layouts, the class
   defaults, the traps, and bad fields naming the file and the field. */
static void test_config25(void) {
    mbpo_config c3, c7, cn;
    mbpo_param_table t;
    mbpo_json *j;
    char path[512];
    /* the tiny25-A config of QWEN25VL.md 8.1 in three layouts, %s = where the text fields go */
    const char *text = "\"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 2,"
                       " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6";
    const char *vision = "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"intermediate_size\": 72, \"num_heads\": 3,"
                         " \"out_hidden_size\": 64, \"window_size\": 56, \"fullatt_block_indexes\": [1, 3], \"in_channels\": 3}";
    char flat[2048], saved457[2048], v5[2048];
    if (!run_test("config25")) return;
    REQUIRE(mbpo_config_load(&c3, "tests/configs/Qwen2.5-VL-3B-Instruct/config.json"), "3B config: %s", mbpo_failure_reason());
    REQUIRE(mbpo_config_load(&c7, "tests/configs/Qwen2.5-VL-7B-Instruct/config.json"), "7B config: %s", mbpo_failure_reason());
    CHECK(c3.arch == MBPO_ARCH_QWEN2_5_VL && c3.hidden_size == 2048 && c3.n_layers == 36 && c3.tie_word_embeddings &&
          c3.v_embed_dim == 1280 && c3.v_mlp_hidden == 3420 && c3.v_window_size == 112 && c3.v_n_fullatt == 4 &&
          c3.v_fullatt[3] == 31 && c3.v_tokens_per_second == 2 && c3.vocab_size == 151936, "3B fields");
    CHECK(c7.arch == MBPO_ARCH_QWEN2_5_VL && c7.hidden_size == 3584 && !c7.tie_word_embeddings && c7.n_layers == 28,
          "7B fields");
    REQUIRE(mbpo_param_table_build(&t, &c3), "3B table");
    CHECK(t.n_params == 3754622976LL && t.n == 824, "Qwen2.5-VL-3B parameters: %lld in %zu tensors, want 3,754,622,976 in 824",
          (long long)t.n_params, t.n);
    printf("  Qwen2.5-VL-3B: %lld parameters in %zu tensors\n", (long long)t.n_params, t.n);
    mbpo_param_table_free(&t);
    REQUIRE(mbpo_param_table_build(&t, &c7), "7B table");
    CHECK(t.n_params == 8292166656LL && t.n == 729, "Qwen2.5-VL-7B parameters: %lld in %zu tensors, want 8,292,166,656 in 729",
          (long long)t.n_params, t.n);
    printf("  Qwen2.5-VL-7B: %lld parameters in %zu tensors\n", (long long)t.n_params, t.n);
    mbpo_param_table_free(&t);
    CHECK(config_round_trips(&c3), "3B render/parse round trip: %s", mbpo_failure_reason());   /* the identity */
    /* hub (flat), 4.57.6 save_pretrained (flat + text_config, rope_scaling type default) and 5.x
       (text_config only, rope_parameters with theta inside) read the same */
    snprintf(flat, sizeof flat, "{\"model_type\": \"qwen2_5_vl\", %s, \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true,"
             " \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}, \"image_token_id\": 1000,"
             " \"video_token_id\": 1001, \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003, %s}", text, vision);
    snprintf(saved457, sizeof saved457, "{\"model_type\": \"qwen2_5_vl\", %s, \"tie_word_embeddings\": true, \"text_config\": {%s,"
             " \"tie_word_embeddings\": true, \"rope_theta\": 1000000.0, \"rope_scaling\": {\"mrope_section\": [2, 3, 3],"
             " \"rope_type\": \"default\", \"type\": \"default\"}}, \"image_token_id\": 1000, \"video_token_id\": 1001,"
             " \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003, %s}", text, text, vision);
    snprintf(v5, sizeof v5, "{\"model_type\": \"qwen2_5_vl\", \"tie_word_embeddings\": true, \"text_config\": {%s,"
             " \"tie_word_embeddings\": true, \"rope_parameters\": {\"rope_type\": \"default\", \"mrope_section\": [2, 3, 3],"
             " \"rope_theta\": 1000000.0}}, \"image_token_id\": 1000, \"video_token_id\": 1001,"
             " \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003, %s}", text, vision);
    {
        const char *layouts[3] = { flat, saved457, v5 }, *names[3] = { "hub", "4.57.6", "5.x" };
        mbpo_config ref;
        int k;
        for (k = 0; k < 3; k++) {
            int ok;
            j = mbpo_json_parse(layouts[k], strlen(layouts[k]), names[k]);
            ok = j && mbpo_config_from_json(&cn, j, names[k]);
            if (k == 0) ref = cn;
            CHECK(ok && cn.arch == MBPO_ARCH_QWEN2_5_VL && cn.v_embed_dim == 48 && cn.v_mlp_hidden == 72 && cn.v_heads == 3 &&
                  cn.hidden_size == 64 && cn.v_window_size == 56 && cn.v_n_fullatt == 2 && cn.v_fullatt[1] == 3 &&
                  cn.tie_word_embeddings && !cn.tie_from_checkpoint && cn.rope_theta == 1e6 && cn.mrope_section[2] == 3 &&
                  !memcmp(&cn, &ref, sizeof cn), "%s layout reads as the hub layout%s%s", names[k], ok ? "" : ": ",
                  ok ? "" : mbpo_failure_reason());
            mbpo_json_free(j);
        }
    }
    {   /* class defaults of missing vision keys, including the 3584-wide ViT without "hidden_size" */
        char d[2048];
        snprintf(d, sizeof d, "{\"model_type\": \"qwen2_5_vl\", \"vocab_size\": 1024, \"hidden_size\": 3584,"
                 " \"intermediate_size\": 176, \"num_hidden_layers\": 1, \"num_attention_heads\": 28,"
                 " \"rope_scaling\": {\"mrope_section\": [16, 24, 24]}, \"image_token_id\": 1000, \"video_token_id\": 1001,"
                 " \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003, \"vision_config\": {}}");
        j = mbpo_json_parse(d, strlen(d), "defaults.json");
        CHECK(j && mbpo_config_from_json(&cn, j, "defaults.json") && cn.v_embed_dim == 3584 && cn.v_mlp_hidden == 3420 &&
              cn.v_depth == 32 && cn.v_heads == 16 && cn.v_window_size == 112 && cn.v_n_fullatt == 4 && cn.v_fullatt[0] == 7 &&
              cn.v_tokens_per_second == 4 && cn.rms_norm_eps == 1e-5 && cn.max_position_embeddings == 32768,
              "Qwen2.5-VL class defaults: %s", mbpo_failure_reason());
        mbpo_json_free(j);
    }
    {   /* the default full-attention list [7, 15, 23, 31] under a depth of 4 (it never matches, as in
           transformers): loads, renders and reads back the same */
        char d[2048];
        snprintf(d, sizeof d, "{\"model_type\": \"qwen2_5_vl\", %s, \"rope_scaling\": {\"mrope_section\": [2, 3, 3]},"
                 " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002,"
                 " \"vision_end_token_id\": 1003, \"vision_config\": {\"depth\": 4, \"hidden_size\": 48,"
                 " \"intermediate_size\": 72, \"num_heads\": 3, \"out_hidden_size\": 64, \"window_size\": 56}}", text);
        j = mbpo_json_parse(d, strlen(d), "nofull.json");
        CHECK(j && mbpo_config_from_json(&cn, j, "nofull.json") && cn.v_n_fullatt == 4 && cn.v_fullatt[0] == 7,
              "no fullatt_block_indexes: the default list: %s", mbpo_failure_reason());
        mbpo_json_free(j);
        CHECK(config_round_trips(&cn), "depth 4 with the default list: render/parse round trip: %s", mbpo_failure_reason());
    }
    {   /* tying: a text_config without the flag under a tied top level is untied in 4.57, tied in 5.x:
           the checkpoint decides (tested with real files in test_save_load25) */
        char d[2048];
        snprintf(d, sizeof d, "{\"model_type\": \"qwen2_5_vl\", \"tie_word_embeddings\": true, \"text_config\": {%s,"
                 " \"rope_scaling\": {\"mrope_section\": [2, 3, 3]}}, \"image_token_id\": 1000, \"video_token_id\": 1001,"
                 " \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003, %s}", text, vision);
        j = mbpo_json_parse(d, strlen(d), "tie.json");
        CHECK(j && mbpo_config_from_json(&cn, j, "tie.json") && cn.tie_from_checkpoint && !cn.tie_word_embeddings,
              "top-level tie without text_config's: decided by the checkpoint");
        mbpo_json_free(j);
    }
    {   /* bad Qwen2.5-VL configs name the file and the field */
        struct { const char *vision, *expect; } bad[] = {
            { "\"vision_config\": {\"depth\": 4, \"embed_dim\": 48, \"mlp_ratio\": 4, \"num_heads\": 3, \"hidden_size\": 64}",
              "Qwen2-VL keys (\"embed_dim\")" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"num_heads\": 3, \"out_hidden_size\": 32}",
              "out_hidden_size 32 must equal the LM hidden_size 64" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"num_heads\": 3, \"out_hidden_size\": 64, \"window_size\": 20}",
              "window_size 20 is smaller than one merge unit" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"num_heads\": 3, \"out_hidden_size\": 64,"
              " \"fullatt_block_indexes\": [1, -1]}", "\"fullatt_block_indexes\" entry 1 must be a non-negative block index" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"num_heads\": 3, \"out_hidden_size\": 64,"
              " \"hidden_act\": \"quick_gelu\"}", "hidden_act must be \"silu\"" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 40, \"num_heads\": 4, \"out_hidden_size\": 64}",
              "multiple of 4" },
            { "\"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"num_heads\": 3, \"out_hidden_size\": 64,"
              " \"window_size\": 56.5}", "\"window_size\" must be an integer" },
        };
        size_t i;
        char d[2048];
        snprintf(path, sizeof path, "%s/config.json", tmpdir());
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(d, sizeof d, "{\"model_type\": \"qwen2_5_vl\", %s, \"rope_scaling\": {\"mrope_section\": [2, 3, 3]},"
                     " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002,"
                     " \"vision_end_token_id\": 1003, %s}", text, bad[i].vision);
            write_bytes(path, d, strlen(d));
            CHECK(!mbpo_config_load(&cn, path) && contains(mbpo_failure_reason(), path) &&
                  contains(mbpo_failure_reason(), bad[i].expect), "bad Qwen2.5-VL config %zu: %s", i, mbpo_failure_reason());
        }
        /* no rope_scaling: fatal, as in transformers (a TypeError at the first forward there) */
        snprintf(d, sizeof d, "{\"model_type\": \"qwen2_5_vl\", %s, %s}", text, vision);
        write_bytes(path, d, strlen(d));
        CHECK(!mbpo_config_load(&cn, path) && contains(mbpo_failure_reason(), "mrope_section"), "no rope: %s",
              mbpo_failure_reason());
    }
}

/* ============================================================== ops: finite differences

   Each op's float backward is checked against central differences of an independent
   double-precision forward (written here, naively), for the loss L = sum(dy * f(x)). */

typedef void (*ref_fn)(double *out, const double *in, const void *ctx);
/* d/d in_i of sum(dy * f(in)), by central differences with step h (double precision) */
static void fd_grad(double *grad, ref_fn f, const void *ctx, double *in, int64_t n_in, const float *dy, int64_t n_out) {
    double *out = (double *)calloc((size_t)n_out, sizeof(double)), h = 1e-6;
    int64_t i, j;
    for (i = 0; i < n_in; i++) {
        double keep = in[i], lp = 0, lm = 0;
        in[i] = keep + h; f(out, in, ctx);
        for (j = 0; j < n_out; j++) lp += dy[j] * out[j];
        in[i] = keep - h; f(out, in, ctx);
        for (j = 0; j < n_out; j++) lm += dy[j] * out[j];
        in[i] = keep;
        grad[i] = (lp - lm) / (2 * h);
    }
    free(out);
}
static void check_fd(const char *what, const float *analytic, const double *fd, int64_t n) {
    float *f = falloc(n);
    int64_t i;
    for (i = 0; i < n; i++) f[i] = (float)fd[i];
    close_enough(what, analytic, f, n, 2e-4, 1);
    free(f);
}
static double *to_double(const float *x, int64_t n) {
    double *d = (double *)calloc((size_t)n, sizeof(double));
    int64_t i;
    for (i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* all op inputs are packed into one double vector so one FD loop covers every input */
typedef struct { int64_t N, C, OC; } mm_ctx;
static void ref_matmul(double *out, const double *in, const void *vctx) {
    const mm_ctx *c = (const mm_ctx *)vctx;
    const double *x = in, *w = in + c->N * c->C, *b = w + c->OC * c->C;
    int64_t n, o, i;
    for (n = 0; n < c->N; n++)
        for (o = 0; o < c->OC; o++) {
            double s = b[o];
            for (i = 0; i < c->C; i++) s += x[n * c->C + i] * w[o * c->C + i];
            out[n * c->OC + o] = s;
        }
}
typedef struct { int64_t N, C; int rms; } norm_ctx;
static void ref_norm(double *out, const double *in, const void *vctx) {
    const norm_ctx *c = (const norm_ctx *)vctx;
    const double *x = in, *w = in + c->N * c->C, *b = w + c->C;
    int64_t n, i;
    for (n = 0; n < c->N; n++) {
        double m = 0, v = 0;
        for (i = 0; i < c->C; i++) m += x[n * c->C + i];
        m /= (double)c->C;
        if (c->rms) m = 0;
        for (i = 0; i < c->C; i++) v += (x[n * c->C + i] - m) * (x[n * c->C + i] - m);
        v /= (double)c->C;
        for (i = 0; i < c->C; i++)
            out[n * c->C + i] = (x[n * c->C + i] - m) / sqrt(v + 1e-6) * w[i] + (c->rms ? 0 : b[i]);
    }
}
typedef struct { int64_t n; int kind; } act_ctx;   /* 0 quick_gelu, 1 gelu, 2 swiglu */
static void ref_act(double *out, const double *in, const void *vctx) {
    const act_ctx *c = (const act_ctx *)vctx;
    int64_t i;
    for (i = 0; i < c->n; i++) {
        double x = in[i];
        if (c->kind == 0) out[i] = x / (1 + exp(-1.702 * x));
        else if (c->kind == 1) out[i] = 0.5 * x * (1 + erf(x / sqrt(2.0)));
        else out[i] = x / (1 + exp(-x)) * in[c->n + i];
    }
}
typedef struct { int64_t L, NH, NKV, HS; int causal; const float *cosv, *sinv; } attn_ctx;
/* rotate-half RoPE on q and k, then attention: the LM's attention block without projections */
static void ref_attn(double *out, const double *in, const void *vctx) {
    const attn_ctx *c = (const attn_ctx *)vctx;
    int64_t L = c->L, HS = c->HS, half = HS / 2, QD = c->NH * HS, KD = c->NKV * HS, i, j, h, d;
    double *q = (double *)calloc((size_t)(L * QD), sizeof(double)), *k = (double *)calloc((size_t)(L * KD), sizeof(double));
    double *s = (double *)calloc((size_t)L, sizeof(double));
    const double *v = in + L * QD + L * KD;
    for (i = 0; i < L; i++)
        for (d = 0; d < half; d++) {
            double cs = c->cosv[i * half + d], sn = c->sinv[i * half + d];
            for (h = 0; h < c->NH; h++) {
                const double *x = in + i * QD + h * HS;
                q[i * QD + h * HS + d] = x[d] * cs - x[d + half] * sn;
                q[i * QD + h * HS + d + half] = x[d + half] * cs + x[d] * sn;
            }
            for (h = 0; h < c->NKV; h++) {
                const double *x = in + L * QD + i * KD + h * HS;
                k[i * KD + h * HS + d] = x[d] * cs - x[d + half] * sn;
                k[i * KD + h * HS + d + half] = x[d + half] * cs + x[d] * sn;
            }
        }
    for (h = 0; h < c->NH; h++) {
        int64_t kvh = h / (c->NH / c->NKV);
        for (i = 0; i < L; i++) {
            int64_t jmax = c->causal ? i + 1 : L;
            double mx = -1e300, sum = 0;
            for (j = 0; j < jmax; j++) {
                double dot = 0;
                for (d = 0; d < HS; d++) dot += q[i * QD + h * HS + d] * k[j * KD + kvh * HS + d];
                s[j] = dot / sqrt((double)HS);
                if (s[j] > mx) mx = s[j];
            }
            for (j = 0; j < jmax; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
            for (d = 0; d < HS; d++) {
                double o = 0;
                for (j = 0; j < jmax; j++) o += s[j] / sum * v[j * KD + kvh * HS + d];
                out[i * QD + h * HS + d] = o;
            }
        }
    }
    free(q); free(k); free(s);
}
typedef struct { int64_t n, V; const int32_t *y; } lsm_ctx;
static void ref_logsoftmax_gather(double *out, const double *in, const void *vctx) {
    const lsm_ctx *c = (const lsm_ctx *)vctx;
    int64_t r, j;
    for (r = 0; r < c->n; r++) {
        double mx = -1e300, s = 0;
        for (j = 0; j < c->V; j++) if (in[r * c->V + j] > mx) mx = in[r * c->V + j];
        for (j = 0; j < c->V; j++) s += exp(in[r * c->V + j] - mx);
        out[r] = in[r * c->V + c->y[r]] - mx - log(s);
    }
}

/* mbpo__expf against double exp: within 1 ulp over every 997th float of (-110, 88.72) (the results
   below FLT_MIN against the subnormal spacing; 1.5 ulp where the machine has no fused multiply-add),
   the special values, and a loop the compiler vectorises giving the bits of the scalar call. */
static void test_expf(void) {
    float (*volatile scalar)(float) = mbpo__expf;   /* an out-of-line copy: never vectorised */
    static float xs[4096], ys[4096];
    double worst = 0, wx = 0, bound;
    long cnt = 0, i, diff = 0;
    uint64_t u;
    if (!run_test("expf")) return;
    for (u = 0; u < 0x100000000ull; u += 997) {
        uint32_t b = (uint32_t)u;
        float x, y;
        double r, ulp, e;
        int ex;
        memcpy(&x, &b, sizeof x);
        if (!(x > -110.0f && x < 88.72f)) continue;
        y = mbpo__expf(x); r = exp((double)x);
        (void)frexp(r, &ex);
        ulp = ldexp(1.0, ex - 24 < -149 ? -149 : ex - 24);
        e = fabs((double)y - r) / ulp;
        if (e > worst) { worst = e; wx = x; }
        cnt++;
    }
    CHECK(cnt > 2000000, "expf: %ld values checked", cnt);
#if defined(__FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
    bound = 1.0;                                     /* every step one rounding */
#else
    bound = 1.5;                                     /* a product and a sum, two roundings, each step */
#endif
    CHECK(worst <= bound, "expf: %.3f ulp from exp at %.9g (bound %.1f)", worst, wx, bound);
    CHECK(mbpo__expf(0.0f) == 1.0f && mbpo__expf(-INFINITY) == 0.0f && mbpo__expf(-200.0f) == 0.0f,
          "expf: e^0 %g, e^-inf %g, e^-200 %g", mbpo__expf(0.0f), mbpo__expf(-INFINITY), mbpo__expf(-200.0f));
    CHECK(isinf(mbpo__expf(89.0f)) && isinf(mbpo__expf(INFINITY)) && isnan(mbpo__expf(NAN)),
          "expf: e^89 %g, e^inf %g, e^nan %g", mbpo__expf(89.0f), mbpo__expf(INFINITY), mbpo__expf(NAN));
    for (i = 0; i < 4096; i++) xs[i] = -105.0f + 195.0f * (float)i / 4096.0f;
    for (i = 0; i < 4096; i++) ys[i] = mbpo__expf(xs[i]);
    for (i = 0; i < 4096; i++) {
        float y = scalar(xs[i]);
        diff += memcmp(&y, &ys[i], sizeof y) != 0;
    }
    CHECK(diff == 0, "expf: a loop differs from the scalar call in %ld of 4096 values", diff);
}

/* The CPU kernels against their definitions, bit for bit: mbpo__gemm is "each output one
   multiply-add chain over k in increasing order, then + bias", written here as the plain triple
   loop (compiled with the same flags, so the compiler fuses the same multiply-adds); its
   packed/transposed/blocked path, its unpacked fallback and any thread count must all give
   those bits. The attention's transposed-key path must equal its one-key-at-a-time path. */
static void test_kernels(void) {
    mbpo_rng rng;
    int t, bad_ref = 0, bad_plain = 0, bad_thr = 0, n = 0;
    double worst = 0;
    if (!run_test("kernels")) return;
    mbpo_rng_seed(&rng, 17);
    for (t = 0; t < 160; t++) {
        int64_t M = 1 + (t * 37) % 211, K = t % 13 == 0 ? 0 : 1 + (t * 53) % 530, N = 1 + (t * 71) % 420, i, j, k;
        int a_t = t & 1, b_t = (t >> 1) & 1, acc = (t >> 2) & 1, has_bias = (t >> 3) & 1;
        float *A, *B, *bias, *C0, *C1, *C2, *C3;
        if (t % 5 == 0) { M = 188; K = 300; N = 96; }            /* more than one K block, an edge row strip */
        if (t % 7 == 0) { M = 1 + t % 3; }                        /* decode: a few rows */
        if (t % 11 == 1) { M = 390 + t % 29; K = 1 + t % 70; }   /* a team's few wide tiles (MBPO__GEMM_WIDE_ROWS) */
        A = falloc(M * K + 1); B = falloc(K * N + 1); bias = falloc(N);
        C0 = falloc(M * N); C1 = falloc(M * N); C2 = falloc(M * N); C3 = falloc(M * N);
        fill_normal(A, M * K, &rng, 1); fill_normal(B, K * N, &rng, 1); fill_normal(bias, N, &rng, 1);
        fill_normal(C0, M * N, &rng, 1);
        memcpy(C1, C0, (size_t)(M * N) * sizeof(float)); memcpy(C2, C0, (size_t)(M * N) * sizeof(float));
        memcpy(C3, C0, (size_t)(M * N) * sizeof(float));
        for (i = 0; i < M; i++)                                    /* the definition */
            for (j = 0; j < N; j++) {
                float s = acc ? C0[i * N + j] : 0.0f;
                double ref = s, mag = fabs(s), err;
                for (k = 0; k < K; k++) {
                    float a = a_t ? A[k * M + i] : A[i * K + k], b = b_t ? B[k * N + j] : B[j * K + k];
#if defined(__FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
                    s = fmaf(a, b, s);                             /* fused where the machine has it */
#else
                    s = a * b + s;
#endif
                    ref += (double)a * b; mag += fabs((double)a * b);
                }
                C0[i * N + j] = has_bias ? s + bias[j] : s;
                ref += has_bias ? bias[j] : 0; mag += has_bias ? fabs(bias[j]) : 0;
                /* the classic bound of a float sum of K + 2 terms: |err| <= (K + 2) u sum |terms|, u = 2^-24 */
                err = fabs(C0[i * N + j] - ref) / ((double)(K + 2) * ldexp(1.0, -24) * (mag > 0 ? mag : 1));
                if (err > worst) worst = err;
            }
        mbpo__gemm(C1, A, a_t, B, b_t, has_bias ? bias : NULL, M, K, N, acc);
        mbpo__kernels_plain = 1;
        mbpo__gemm(C2, A, a_t, B, b_t, has_bias ? bias : NULL, M, K, N, acc);
        mbpo__kernels_plain = 0;
#ifdef _OPENMP
        {   /* 3 threads, every product on the team (mbpo__par_min 0), against C1: one thread below the threshold */
            int th = omp_get_max_threads();
            omp_set_num_threads(3); mbpo__par_min = 0;
            mbpo__gemm(C3, A, a_t, B, b_t, has_bias ? bias : NULL, M, K, N, acc);
            mbpo__par_min = MBPO_PAR_MIN; omp_set_num_threads(th);
        }
#else
        mbpo__gemm(C3, A, a_t, B, b_t, has_bias ? bias : NULL, M, K, N, acc);
#endif
        n++;
        bad_ref += memcmp(C0, C1, (size_t)(M * N) * sizeof(float)) != 0;
        bad_plain += memcmp(C0, C2, (size_t)(M * N) * sizeof(float)) != 0;
        bad_thr += memcmp(C0, C3, (size_t)(M * N) * sizeof(float)) != 0;
        free(A); free(B); free(bias); free(C0); free(C1); free(C2); free(C3);
    }
    CHECK(bad_ref == 0, "gemm (%s): %d of %d shapes differ from the multiply-add chain in k order", MBPO__GEMM_ISA, bad_ref, n);
    CHECK(bad_plain == 0, "gemm: the unpacked fallback differs in %d of %d shapes", bad_plain, n);
    CHECK(bad_thr == 0, "gemm: 3 threads differ in %d of %d shapes", bad_thr, n);
    CHECK(worst <= 1.0, "gemm vs double: worst error %.3g of the (K + 2) u sum|terms| bound", worst);
    {   /* attention: GQA, causal and not, head sizes with and without a tail of 16 */
        static const int64_t hs[6] = { 4, 16, 20, 64, 80, 19 };
        int bad = 0, bad3 = 0, cases = 0;
        for (t = 0; t < 24; t++) {
            int64_t L = 1 + (t * 29) % 90, HS = hs[t % 6], NKV = 1 + t % 2, NH = NKV * (1 + (t / 2) % 3);
            int causal = (t / 3) & 1, r, th = 1;
            int64_t qs = NH * HS + 3, kvs = NKV * HS + 5, os = NH * HS + 1, nq = L * qs, nk = L * kvs, no = L * os;
            float *q = falloc(nq), *kk = falloc(nk), *v = falloc(nk), *dO = falloc(no), *sc;
            float *o[3], *lse[3], *dq[3], *dk[3], *dv[3];
#ifdef _OPENMP
            th = omp_get_max_threads();
#endif
            sc = falloc(2 * L * (th > 3 ? th : 3));
            fill_normal(q, nq, &rng, 1); fill_normal(kk, nk, &rng, 1); fill_normal(v, nk, &rng, 1); fill_normal(dO, no, &rng, 1);
            for (r = 0; r < 3; r++) {       /* 0: fast, 1: plain, 2: fast on 3 threads */
                o[r] = falloc(no); lse[r] = falloc(NH * L); dq[r] = falloc(nq); dk[r] = falloc(nk); dv[r] = falloc(nk);
                mbpo__kernels_plain = r == 1;
#ifdef _OPENMP
                omp_set_num_threads(r == 2 ? 3 : th);
                mbpo__par_min = r == 2 ? 0 : MBPO_PAR_MIN;   /* r 2: on the team even when small */
#endif
                mbpo__attention_forward(o[r], lse[r], q, kk, v, L, NH, NKV, HS, qs, kvs, os, L, causal, sc);
                mbpo__attention_backward(dq[r], dk[r], dv[r], dO, o[0], lse[0], q, kk, v, L, NH, NKV, HS, qs, kvs, os, L, causal, sc);
            }
            mbpo__kernels_plain = 0;
#ifdef _OPENMP
            omp_set_num_threads(th);
            mbpo__par_min = MBPO_PAR_MIN;
#endif
            for (r = 1; r < 3; r++) {
                int d = memcmp(o[0], o[r], (size_t)no * 4) || memcmp(lse[0], lse[r], (size_t)(NH * L) * 4) ||
                        memcmp(dq[0], dq[r], (size_t)nq * 4) || memcmp(dk[0], dk[r], (size_t)nk * 4) || memcmp(dv[0], dv[r], (size_t)nk * 4);
                if (r == 1) bad += d; else bad3 += d;
            }
            cases++;
            for (r = 0; r < 3; r++) { free(o[r]); free(lse[r]); free(dq[r]); free(dk[r]); free(dv[r]); }
            free(q); free(kk); free(v); free(dO); free(sc);
        }
        CHECK(bad == 0, "attention: the transposed-key path differs from one key at a time in %d of %d cases", bad, cases);
        CHECK(bad3 == 0, "attention: 3 threads differ in %d of %d cases", bad3, cases);
    }
}

static void test_ops_fd(void) {
    mbpo_rng rng;
    if (!run_test("ops_fd")) return;
    mbpo_rng_seed(&rng, 7);
    {   /* matmul with bias; sizes not multiples of the 4x4x8 blocking */
        mm_ctx c = { 5, 13, 7 };
        int64_t nin = c.N * c.C + c.OC * c.C + c.OC, nout = c.N * c.OC;
        float *in = falloc(nin), *dy = falloc(nout), *out = falloc(nout), *din = falloc(nin);
        double *d, *ref = (double *)calloc((size_t)nout, sizeof(double)), *fd;
        float *reff = falloc(nout);
        int64_t i;
        fill_normal(in, nin, &rng, 1); fill_normal(dy, nout, &rng, 1);
        d = to_double(in, nin);
        mbpo__matmul_forward(out, in, in + c.N * c.C, in + c.N * c.C + c.OC * c.C, c.N, c.C, c.OC);
        ref_matmul(ref, d, &c);
        for (i = 0; i < nout; i++) reff[i] = (float)ref[i];
        close_enough("matmul forward vs double", out, reff, nout, 1e-6, 1);
        mbpo__matmul_backward(din, din + c.N * c.C, din + c.N * c.C + c.OC * c.C, dy, in, in + c.N * c.C, c.N, c.C, c.OC);
        fd = (double *)calloc((size_t)nin, sizeof(double));
        fd_grad(fd, ref_matmul, &c, d, nin, dy, nout);
        check_fd("matmul backward (dx, dw, db) vs FD", din, fd, nin);
        free(in); free(dy); free(out); free(din); free(d); free(ref); free(fd); free(reff);
    }
    {   /* layernorm and rmsnorm */
        int rms;
        for (rms = 0; rms < 2; rms++) {
            norm_ctx c = { 4, 24, 0 };
            int64_t nin = c.N * c.C + 2 * c.C, nout = c.N * c.C, i;
            float *in = falloc(nin), *dy = falloc(nout), *out = falloc(nout), *din = falloc(nin), *mean = falloc(c.N), *rstd = falloc(c.N);
            double *d, *fd = (double *)calloc((size_t)nin, sizeof(double)), *ref = (double *)calloc((size_t)nout, sizeof(double));
            float *reff = falloc(nout);
            c.rms = rms;
            fill_normal(in, nin, &rng, 1); fill_normal(dy, nout, &rng, 1);
            for (i = 0; i < c.N * c.C; i++) in[i] += 0.7f;        /* non-zero mean */
            d = to_double(in, nin);
            if (rms) mbpo__rmsnorm_forward(out, rstd, in, in + nout, c.N, c.C, 1e-6f);
            else mbpo__layernorm_forward(out, mean, rstd, in, in + nout, in + nout + c.C, c.N, c.C, 1e-6f);
            ref_norm(ref, d, &c);
            for (i = 0; i < nout; i++) reff[i] = (float)ref[i];
            close_enough(rms ? "rmsnorm forward vs double" : "layernorm forward vs double", out, reff, nout, 1e-6, 1);
            if (rms) mbpo__rmsnorm_backward(din, din + nout, dy, in, in + nout, rstd, c.N, c.C);
            else mbpo__layernorm_backward(din, din + nout, din + nout + c.C, dy, in, in + nout, mean, rstd, c.N, c.C);
            fd_grad(fd, ref_norm, &c, d, rms ? nout + c.C : nin, dy, nout);
            check_fd(rms ? "rmsnorm backward (dx, dw) vs FD" : "layernorm backward (dx, dw, db) vs FD", din, fd,
                     rms ? nout + c.C : nin);
            free(in); free(dy); free(out); free(din); free(mean); free(rstd); free(d); free(fd); free(ref); free(reff);
        }
    }
    {   /* activations */
        int kind;
        const char *names[3] = { "quick_gelu backward vs FD", "gelu (erf) backward vs FD", "swiglu backward (dgate, dup) vs FD" };
        for (kind = 0; kind < 3; kind++) {
            act_ctx c = { 40, kind };
            int64_t nin = kind == 2 ? 2 * c.n : c.n;
            float *in = falloc(nin), *dy = falloc(c.n), *din = falloc(nin);
            double *d, *fd = (double *)calloc((size_t)nin, sizeof(double));
            fill_normal(in, nin, &rng, 2); fill_normal(dy, c.n, &rng, 1);
            d = to_double(in, nin);
            if (kind == 0) mbpo__quick_gelu_backward(din, dy, in, c.n);
            else if (kind == 1) mbpo__gelu_backward(din, dy, in, c.n);
            else mbpo__swiglu_backward(din, din + c.n, dy, in, in + c.n, c.n);
            fd_grad(fd, ref_act, &c, d, nin, dy, c.n);
            check_fd(names[kind], din, fd, nin);
            free(in); free(dy); free(din); free(d); free(fd);
        }
    }
    {   /* RoPE + attention: causal GQA (LM) and full MHA (vision) */
        int causal;
        for (causal = 0; causal < 2; causal++) {
            attn_ctx c = { 7, 4, causal ? 2 : 4, 8, causal, NULL, NULL };
            int64_t QD = c.NH * c.HS, KD = c.NKV * c.HS, nin = c.L * (QD + 2 * KD), nout = c.L * QD, i, half = c.HS / 2;
            float *in = falloc(nin), *dy = falloc(nout), *cs = falloc(c.L * half), *sn = falloc(c.L * half);
            float *q = falloc(c.L * QD), *k = falloc(c.L * KD), *out = falloc(nout), *lse = falloc(c.NH * c.L);
            float *din = falloc(nin), *scratch = falloc(2 * c.L * 64), *reff = falloc(nout);
            double *d, *fd = (double *)calloc((size_t)nin, sizeof(double)), *ref = (double *)calloc((size_t)nout, sizeof(double));
            fill_normal(in, nin, &rng, 1); fill_normal(dy, nout, &rng, 1);
            for (i = 0; i < c.L * half; i++) { float a = (float)(i / half) * powf(0.3f, (float)(i % half)); cs[i] = cosf(a); sn[i] = sinf(a); }
            c.cosv = cs; c.sinv = sn;
            d = to_double(in, nin);
            memcpy(q, in, (size_t)(c.L * QD) * sizeof(float));
            memcpy(k, in + c.L * QD, (size_t)(c.L * KD) * sizeof(float));
            mbpo__rope_apply(q, cs, sn, c.L, c.NH, c.HS, QD, 1.0f);
            mbpo__rope_apply(k, cs, sn, c.L, c.NKV, c.HS, KD, 1.0f);
            mbpo__attention_forward(out, lse, q, k, in + c.L * (QD + KD), c.L, c.NH, c.NKV, c.HS, QD, KD, QD, c.L, causal, scratch);
            ref_attn(ref, d, &c);
            for (i = 0; i < nout; i++) reff[i] = (float)ref[i];
            close_enough(causal ? "rope+attention causal GQA forward vs double" : "rope+attention full forward vs double",
                         out, reff, nout, 1e-5, 1);
            mbpo__attention_backward(din, din + c.L * QD, din + c.L * (QD + KD), dy, out, lse, q, k, in + c.L * (QD + KD),
                                     c.L, c.NH, c.NKV, c.HS, QD, KD, QD, c.L, causal, scratch);
            mbpo__rope_apply(din, cs, sn, c.L, c.NH, c.HS, QD, -1.0f);
            mbpo__rope_apply(din + c.L * QD, cs, sn, c.L, c.NKV, c.HS, KD, -1.0f);
            fd_grad(fd, ref_attn, &c, d, nin, dy, nout);
            check_fd(causal ? "rope+attention causal GQA backward vs FD" : "rope+attention full backward vs FD", din, fd, nin);
            free(in); free(dy); free(cs); free(sn); free(q); free(k); free(out); free(lse); free(din); free(scratch);
            free(reff); free(d); free(fd); free(ref);
        }
    }
    {   /* fused log-softmax + gather: forward and its dlogits */
        lsm_ctx c = { 3, 50, NULL };
        int32_t y[3] = { 4, 49, 0 };
        float *z = falloc(c.n * c.V), *lp = falloc(c.n), *lse = falloc(c.n), *dz = falloc(c.n * c.V), dy[3] = { 0.7f, -1.3f, 2.0f };
        double *d, *fd = (double *)calloc((size_t)(c.n * c.V), sizeof(double)), ref[3];
        float reff[3];
        int64_t r;
        c.y = y;
        fill_normal(z, c.n * c.V, &rng, 3);
        d = to_double(z, c.n * c.V);
        mbpo__logsoftmax_gather_forward(lp, lse, z, y, c.n, c.V);
        ref_logsoftmax_gather(ref, d, &c);
        for (r = 0; r < 3; r++) reff[r] = (float)ref[r];
        close_enough("log-softmax gather forward vs double", lp, reff, 3, 1e-6, 1);
        memcpy(dz, z, (size_t)(c.n * c.V) * sizeof(float));
        mbpo__logsoftmax_gather_backward(dz, dy, lse, y, c.n, c.V);
        fd_grad(fd, ref_logsoftmax_gather, &c, d, c.n * c.V, dy, c.n);
        check_fd("log-softmax gather backward vs FD", dz, fd, c.n * c.V);
        free(z); free(lp); free(lse); free(dz); free(d); free(fd);
    }
}

/* ============================================================== model: parity with transformers */

typedef struct {
    mbpo_st st;
    int32_t *ids, grid[6];
    uint8_t *target;
    int64_t S, P, n_images, n_targets;
    float *pixel_values;
    int32_t refs[2];
    int64_t seq_off[2], ref_off[2];
} fixture_case;

float *read_f32(const mbpo_st *st, const char *name, int64_t *numel) {
    const mbpo_st_tensor *t = mbpo_st_find(st, name);
    float *x;
    if (!t) return NULL;
    x = falloc(t->numel);
    if (!mbpo_st_read_f32(st, t, x)) { free(x); return NULL; }
    if (numel) *numel = t->numel;
    return x;
}
int64_t *read_i64(const mbpo_st *st, const char *name, int64_t *numel) {
    const mbpo_st_tensor *t = mbpo_st_find(st, name);
    int64_t *x;
    if (!t) return NULL;
    x = (int64_t *)calloc((size_t)t->numel + 1, sizeof(int64_t));
    if (!mbpo_st_read_i64(st, t, x)) { free(x); return NULL; }
    if (numel) *numel = t->numel;
    return x;
}
static int load_case(fixture_case *fc, const char *path) {
    int64_t n, *ids, *labels, *grid, i;
    memset(fc, 0, sizeof *fc);
    if (!mbpo_st_open(&fc->st, path)) return 0;
    ids = read_i64(&fc->st, "input_ids", &fc->S);
    labels = read_i64(&fc->st, "labels", NULL);
    if (!ids || !labels) return 0;
    fc->ids = (int32_t *)calloc((size_t)fc->S, sizeof(int32_t));
    fc->target = (uint8_t *)calloc((size_t)fc->S, 1);
    /* HF shifts inside the loss: position t-1 predicts labels[t]; -100 is ignored */
    for (i = 0; i < fc->S; i++) {
        fc->ids[i] = (int32_t)ids[i];
        fc->target[i] = i > 0 && labels[i] != -100;
        fc->n_targets += fc->target[i];
    }
    grid = read_i64(&fc->st, "image_grid_thw", &n);
    if (grid) {
        fc->n_images = n / 3;
        for (i = 0; i < n; i++) fc->grid[i] = (int32_t)grid[i];
        fc->pixel_values = read_f32(&fc->st, "pixel_values", &n);
        fc->P = n / 1176;
        for (i = 0; i < fc->n_images; i++) fc->refs[i] = (int32_t)i;
    }
    fc->seq_off[1] = fc->S;
    fc->ref_off[1] = fc->n_images;
    free(ids); free(labels); free(grid);
    return 1;
}
static void free_case(fixture_case *fc) {
    mbpo_st_close(&fc->st);
    free(fc->ids); free(fc->target); free(fc->pixel_values);
}
static mbpo_batch case_batch(const fixture_case *fc) {
    mbpo_batch b;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = fc->ids; b.seq_offsets = fc->seq_off; b.target = fc->target;
    b.n_images = (int)fc->n_images; b.grid_thw = fc->grid; b.pixel_values = fc->pixel_values;
    b.image_refs = fc->refs; b.image_ref_offsets = fc->ref_off;
    return b;
}
/* compare a slice of our trace against a fixture tensor */
static void cmp_tensor(const char *label, const fixture_case *fc, const char *name, const float *got, int64_t n,
                       double tol, int relative) {
    int64_t m = 0;
    float *ref = read_f32(&fc->st, name, &m);
    char what[160];
    snprintf(what, sizeof what, "%s %s", label, name);
    if (!ref || m != n) { n_failed++; printf("FAIL  %s: fixture missing or size %lld != %lld\n", what, (long long)m, (long long)n); free(ref); return; }
    close_enough(what, got, ref, n, tol, relative);
    free(ref);
}

/* Tolerances (fp32 C vs fp32 transformers on the CPU; both sum in different orders):
   activations rel 1e-5, logits abs 1e-4, loss rel 1e-6, gradients rel 1e-4 (norm-relative). */
static void parity_case(const char *variant, const char *cname, void (*mutate)(mbpo_model *)) {
    char dir[256], path[256], label[64];
    mbpo_model m;
    fixture_case fc;
    mbpo_batch b;
    mbpo_trace tr;
    float *logp, *dlogp, *logits, *dpix = NULL;
    int64_t N, i, T, H, V;
    double loss = 0;
    size_t p;
    snprintf(dir, sizeof dir, "tests/fixtures/%s/model", variant);
    snprintf(path, sizeof path, "tests/fixtures/%s/case_%s.safetensors", variant, cname);
    snprintf(label, sizeof label, "%s/%s", variant, cname);
    REQUIRE(mbpo_model_load(&m, dir), "load %s", dir);
    REQUIRE(load_case(&fc, path), "load %s", path);
    if (mutate) mutate(&m);
    b = case_batch(&fc);
    REQUIRE(mbpo_model_plan(&m, fc.S, fc.P, fc.n_targets, 1), "plan");
    T = fc.S; H = m.cfg.hidden_size; V = m.cfg.vocab_size;
    logp = falloc(fc.n_targets); dlogp = falloc(fc.n_targets); logits = falloc(T * V);
    N = mbpo_model_forward(&m, &b, logp);
    REQUIRE(N == fc.n_targets, "forward: %lld targets", (long long)N);
    mbpo_model_trace(&m, &tr);
    {   /* position ids: exact */
        int64_t *pos = read_i64(&fc.st, "position_ids", NULL), bad = 0;
        for (i = 0; pos && i < 3 * T; i++) bad += pos[i] != tr.position_ids[i];
        CHECK(pos && bad == 0, "%s position_ids: %lld differ", label, (long long)bad);
        if (pos && bad == 0 && !quiet) printf("  ok  %-46s exact\n", "position_ids");
        free(pos);
    }
    if (fc.P && m.cfg.arch == MBPO_ARCH_QWEN2_5_VL) {   /* window order and segments: exact */
        int64_t n_perm = 0, n_cu = 0, *perm = read_i64(&fc.st, "window_index", &n_perm);
        int64_t *cu = read_i64(&fc.st, "cu_window_seqlens", &n_cu), *got = (int64_t *)calloc((size_t)fc.P + 1, sizeof(int64_t));
        int64_t *got_cu = (int64_t *)calloc((size_t)fc.P + 2, sizeof(int64_t)), n_win, bad = 0;
        n_win = mbpo_window_index(&m.cfg, fc.grid, (int)fc.n_images, got, got_cu);
        for (i = 0; perm && i < n_perm && n_perm == fc.P / 4; i++) bad += perm[i] != got[i];
        for (i = 0; cu && i < n_cu && n_cu == n_win + 1; i++) bad += cu[i] != got_cu[i];
        if (perm && cu && n_perm == fc.P / 4 && n_cu == n_win + 1 && bad == 0) {
            n_passed++;
            if (!quiet) printf("  ok  %-46s exact (%lld windows)\n", "window_index, cu_window_seqlens", (long long)n_win);
        } else {
            n_failed++;
            if (!quiet) printf("FAIL  %s window order: %lld of %lld units, %lld of %lld boundaries, %lld differ\n", label,
                               (long long)n_perm, (long long)(fc.P / 4), (long long)n_cu, (long long)(n_win + 1), (long long)bad);
        }
        free(perm); free(cu); free(got); free(got_cu);
    }
    if (fc.P) {
        /* Qwen2.5-VL: the tower runs in window order, and so do HF's block outputs */
        cmp_tensor(label, &fc, m.cfg.arch == MBPO_ARCH_QWEN2_5_VL ? "patch_embed_window" : "patch_embed", tr.patch_embed,
                   fc.P * m.cfg.v_embed_dim, 1e-5, 1);
        for (i = 0; i < m.cfg.v_depth; i++) {
            char name[64];
            snprintf(name, sizeof name, "vision_block.%lld", (long long)i);
            cmp_tensor(label, &fc, name, tr.vision_block_out + i * fc.P * m.cfg.v_embed_dim, fc.P * m.cfg.v_embed_dim, 1e-5, 1);
        }
        cmp_tensor(label, &fc, "merger", tr.image_features, fc.P / 4 * H, 1e-5, 1);
    }
    cmp_tensor(label, &fc, "inputs_embeds", tr.inputs_embeds, T * H, 1e-5, 1);
    for (i = 0; i < m.cfg.n_layers; i++) {
        char name[64];
        snprintf(name, sizeof name, "decoder_layer.%lld", (long long)i);
        cmp_tensor(label, &fc, name, tr.layer_out + i * T * H, T * H, 1e-5, 1);
    }
    cmp_tensor(label, &fc, "final_norm", tr.final_norm, T * H, 1e-5, 1);
    for (i = 0; i < T; i++) mbpo_model_logits(&m, i, logits + i * V);
    cmp_tensor(label, &fc, "logits", logits, T * V, 1e-4, 0);
    /* HF loss = mean over targets of -logp */
    for (i = 0; i < N; i++) loss -= logp[i];
    loss /= (double)N;
    {
        float lossf = (float)loss;
        cmp_tensor(label, &fc, "loss", &lossf, 1, 1e-6, 1);
    }
    /* backward of that loss: dL/dlogp = -1/N */
    for (i = 0; i < N; i++) dlogp[i] = -1.0f / (float)N;
    if (fc.P) dpix = falloc(fc.P * 1176);
    mbpo_model_zero_grad(&m);
    REQUIRE(mbpo_model_backward(&m, &b, dlogp, dpix), "backward");
    mbpo_model_trace(&m, &tr);
    cmp_tensor(label, &fc, "grad.inputs_embeds", tr.dinputs_embeds, T * H, 1e-4, 1);
    if (fc.P) cmp_tensor(label, &fc, "grad.pixel_values", dpix, fc.P * 1176, 1e-4, 1);
    {   /* every parameter gradient; parameters transformers gave no gradient must be 0 here */
        int64_t n_zero = 0;
        for (p = 0; p < m.table.n; p++) {
            const mbpo_param_info *pi = &m.table.info[p];
            char name[160];
            int64_t n = 0;
            float *ref;
            snprintf(name, sizeof name, "grad.%s", pi->name);
            ref = read_f32(&fc.st, name, &n);
            if (!ref) {
                int64_t nz = 0;
                for (i = 0; i < pi->numel; i++) nz += m.grads[pi->offset + i] != 0.0f;
                CHECK(nz == 0, "%s %s: no reference gradient but %lld non-zero values", label, pi->name, (long long)nz);
                n_zero++;
                continue;
            }
            if (n != pi->numel) { n_failed++; printf("FAIL  %s %s: %lld values, want %lld\n", label, name, (long long)n, (long long)pi->numel); }
            else cmp_tensor(label, &fc, name, m.grads + pi->offset, n, 1e-4, 1);
            free(ref);
        }
        if (n_zero && !quiet) printf("  ok  %lld vision parameters: no gradient in transformers (text only), exactly 0 here\n", (long long)n_zero);
    }
    free(logp); free(dlogp); free(logits); free(dpix);
    free_case(&fc);
    mbpo_model_free(&m);
}
static void test_parity(void) {
    const char *variants[2] = { "tiny_a", "tiny_a_tied" }, *cases[3] = { "image", "two_images", "text" };
    int v, c;
    if (!run_test("parity")) return;
    for (v = 0; v < 2; v++)
        for (c = 0; c < 3; c++) {
            printf("-- %s / %s\n", variants[v], cases[c]);
            parity_case(variants[v], cases[c], NULL);
        }
}

/* Qwen2.5-VL (docs/QWEN25VL.md 8): the same comparisons, plus the window order; then two
   mutants of the model must fail many of them (the checks can see the windows). */
static void mutant_no_fullatt(mbpo_model *m) { m->cfg.v_n_fullatt = 0; }             /* every block windowed */
static void mutant_one_window(mbpo_model *m) { m->cfg.v_window_size = 100000; }      /* every block full */
static void test_parity25(void) {
    const char *variants[2] = { "tiny25_a", "tiny25_a_tied" }, *cases[5] = { "image", "even", "two_images", "tall", "text" };
    struct { const char *what; void (*mutate)(mbpo_model *); } mutants[2] = {
        { "no full-attention blocks", mutant_no_fullatt }, { "one window per image", mutant_one_window } };
    int v, c, k;
    if (!run_test("parity25")) return;
    for (v = 0; v < 2; v++)
        for (c = 0; c < 5; c++) {
            printf("-- %s / %s\n", variants[v], cases[c]);
            parity_case(variants[v], cases[c], NULL);
        }
    for (k = 0; k < 2; k++) {
        int failed0 = n_failed, passed0 = n_passed, bad;
        quiet = 1;
        parity_case("tiny25_a", "two_images", mutants[k].mutate);
        quiet = 0;
        bad = n_failed - failed0;
        n_failed = failed0; n_passed = passed0;
        CHECK(bad >= 20, "mutant \"%s\": only %d checks failed", mutants[k].what, bad);
        printf("  ok  mutant \"%s\" fails %d of the two_images checks\n", mutants[k].what, bad);
    }
}

/* ============================================================== model: packing and sharing

   A packed batch must give each sequence exactly what it gets alone (attention never crosses
   sequences or images), and gradients must add up. */
/* A packed batch of one fixture model: image, two_images, text, and the image case again as a
   second rollout sharing image `shared` (0: its own; 1: two_images' first image, the same
   picture, referred to out of order). Each sequence alone vs the pack: logp, the summed
   parameter gradients, d(pixel_values) summed over the sharers. Leaves m loaded and fc[0]
   open for the caller. */
static void packed_case(mbpo_model *m, fixture_case fc[3], const char *variant, int shared) {
    const char *names[3] = { "image", "two_images", "text" };
    int32_t *ids, grid[9], refs[4];
    uint8_t *target;
    float *pv, *logp_single, *logp_packed, *grads_sum, *dl, *dpix_single, *dpix_packed;
    int64_t seq_off[5], ref_off[5], T = 0, P = 0, N = 0, i, n_pix, img_p0[4] = { 0, 0, 0, 0 };
    mbpo_batch b;
    int c, n_img = 0;
    char path[256], what[128];
    printf("-- %s, the shared rollout on image %d\n", variant, shared);
    snprintf(path, sizeof path, "tests/fixtures/%s/model", variant);
    REQUIRE(mbpo_model_load(m, path), "load");
    for (c = 0; c < 3; c++) {
        snprintf(path, sizeof path, "tests/fixtures/%s/case_%s.safetensors", variant, names[c]);
        REQUIRE(load_case(&fc[c], path), "case %s", names[c]);
    }
    ids = (int32_t *)calloc(200, sizeof(int32_t)); target = (uint8_t *)calloc(200, 1);
    pv = falloc(200 * 1176);
    seq_off[0] = 0; ref_off[0] = 0;
    for (c = 0; c < 4; c++) {
        const fixture_case *f = &fc[c == 3 ? 0 : c];
        memcpy(ids + T, f->ids, (size_t)f->S * sizeof(int32_t));
        memcpy(target + T, f->target, (size_t)f->S);
        T += f->S; N += f->n_targets;
        seq_off[c + 1] = T;
        if (c < 3) {
            for (i = 0; i < f->n_images; i++) {
                memcpy(grid + 3 * (n_img + i), f->grid + 3 * i, 3 * sizeof(int32_t));
                refs[ref_off[c] + i] = n_img + (int32_t)i;
                img_p0[n_img + i + 1] = img_p0[n_img + i] + (int64_t)f->grid[3 * i] * f->grid[3 * i + 1] * f->grid[3 * i + 2];
            }
            if (f->P) memcpy(pv + P * 1176, f->pixel_values, (size_t)(f->P * 1176) * sizeof(float));
            P += f->P; n_img += (int)f->n_images;
            ref_off[c + 1] = ref_off[c] + f->n_images;
        } else {
            refs[ref_off[c]] = shared;
            ref_off[c + 1] = ref_off[c] + 1;
        }
    }
    REQUIRE(!memcmp(grid + 3 * shared, fc[0].grid, 3 * sizeof(int32_t)) &&
            !memcmp(pv + img_p0[shared] * 1176, fc[0].pixel_values, (size_t)(fc[0].P * 1176) * sizeof(float)),
            "image %d is the image case's picture", shared);
    n_pix = P * 1176;
    memset(&b, 0, sizeof b);
    b.n_seqs = 4; b.ids = ids; b.seq_offsets = seq_off; b.target = target; b.n_images = n_img; b.grid_thw = grid;
    b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_off;
    REQUIRE(mbpo_model_plan(m, T, P, N, 1), "plan");
    logp_single = falloc(N); logp_packed = falloc(N); dl = falloc(N);
    grads_sum = falloc((int64_t)m->table.total_floats);
    dpix_single = falloc(n_pix); dpix_packed = falloc(n_pix);
    {   /* one at a time: logp, and the gradients of sum(logp * w) summed over sequences */
        int64_t n0 = 0, p0 = 0;
        for (c = 0; c < 4; c++) {
            const fixture_case *f = &fc[c == 3 ? 0 : c];
            mbpo_batch bs = case_batch(f);
            float *dp = falloc(f->P * 1176);
            REQUIRE(mbpo_model_forward(m, &bs, logp_single + n0) == f->n_targets, "single forward %d", c);
            for (i = 0; i < f->n_targets; i++) dl[n0 + i] = 0.1f * (float)(i % 5) - 0.3f + 0.05f * (float)c;
            mbpo_model_zero_grad(m);
            REQUIRE(mbpo_model_backward(m, &bs, dl + n0, f->P ? dp : NULL), "single backward %d", c);
            for (i = 0; i < (int64_t)m->table.total_floats; i++) grads_sum[i] += m->grads[i];
            /* the shared image's pixels get the gradients of both of its sequences */
            if (c < 3) { for (i = 0; i < f->P * 1176; i++) dpix_single[p0 + i] += dp[i]; p0 += f->P * 1176; }
            else for (i = 0; i < f->P * 1176; i++) dpix_single[img_p0[shared] * 1176 + i] += dp[i];
            n0 += f->n_targets;
            free(dp);
        }
    }
    REQUIRE(mbpo_model_forward(m, &b, logp_packed) == N, "packed forward");
    snprintf(what, sizeof what, "%s packed logp == one sequence at a time", variant);
    close_enough(what, logp_packed, logp_single, N, 1e-6, 0);
    mbpo_model_zero_grad(m);
    REQUIRE(mbpo_model_backward(m, &b, dl, dpix_packed), "packed backward");
    snprintf(what, sizeof what, "%s packed parameter grads == sum of singles", variant);
    close_enough(what, m->grads, grads_sum, (int64_t)m->table.total_floats, 1e-5, 1);
    snprintf(what, sizeof what, "%s shared image: d(pixel_values) summed", variant);
    close_enough(what, dpix_packed, dpix_single, n_pix, 1e-5, 1);
    free(ids); free(target); free(pv); free(logp_single); free(logp_packed); free(dl); free(grads_sum);
    free(dpix_single); free(dpix_packed);
    free_case(&fc[1]); free_case(&fc[2]);
}
static void test_packed(void) {
    mbpo_model m;
    fixture_case fc[3];
    int c;
    if (!run_test("packed")) return;
    /* Qwen2.5-VL: the window order of three images, one shared out of order */
    packed_case(&m, fc, "tiny25_a", 1);
    free_case(&fc[0]);
    mbpo_model_free(&m);
    packed_case(&m, fc, "tiny_a", 0);
    {   /* a run of the wrong length is refused with a clear message */
        int64_t *pos = (int64_t *)calloc(3 * 64, sizeof(int64_t)), delta;
        int32_t bad_grid[3] = { 1, 4, 4 };
        CHECK(!mbpo_rope_index(&m.cfg, fc[0].ids, fc[0].S, bad_grid, 1, pos, &delta) &&
              contains(mbpo_failure_reason(), "needs 4"), "wrong run length: %s", mbpo_failure_reason());
        free(pos);
    }
    {   /* one sequence using image A three times == the same sequence with three copies of A */
        int32_t rid[40], rgrid[9], rrefs_shared[3] = { 0, 0, 0 }, rrefs_copies[3] = { 0, 1, 2 };
        uint8_t rtgt[40];
        int64_t rs_off[2] = { 0, 0 }, rr_off[2] = { 0, 3 }, n_r = 0, k;
        float *pv3 = falloc(3 * fc[0].P * 1176), lp_shared[40], lp_copies[40], dl_r[40];
        float *dp_shared = falloc(fc[0].P * 1176), *dp_copies = falloc(3 * fc[0].P * 1176), *dp_sum = falloc(fc[0].P * 1176);
        mbpo_batch rb;
        for (c = 0; c < 3; c++) {
            rid[n_r++] = 1002;
            for (k = 0; k < 6; k++) rid[n_r++] = 1000;
            rid[n_r++] = 1003; rid[n_r++] = 7 + c;
            memcpy(rgrid + 3 * c, fc[0].grid, 3 * sizeof(int32_t));
            memcpy(pv3 + c * fc[0].P * 1176, fc[0].pixel_values, (size_t)(fc[0].P * 1176) * sizeof(float));
        }
        rid[n_r++] = 11;
        rs_off[1] = n_r;
        for (k = 0; k < n_r; k++) { rtgt[k] = k > 0 && rid[k] < 1000; dl_r[k] = 0.3f - 0.05f * (float)k; }
        memset(&rb, 0, sizeof rb);
        rb.n_seqs = 1; rb.ids = rid; rb.seq_offsets = rs_off; rb.target = rtgt; rb.n_images = 1; rb.grid_thw = rgrid;
        rb.pixel_values = fc[0].pixel_values; rb.image_refs = rrefs_shared; rb.image_ref_offsets = rr_off;
        k = mbpo_model_forward(&m, &rb, lp_shared);
        REQUIRE(k == 4, "one image used three times in one sequence: %lld targets", (long long)k);
        mbpo_model_zero_grad(&m);
        REQUIRE(mbpo_model_backward(&m, &rb, dl_r, dp_shared), "backward, shared");
        rb.n_images = 3; rb.pixel_values = pv3; rb.image_refs = rrefs_copies;
        REQUIRE(mbpo_model_forward(&m, &rb, lp_copies) == 4, "three copies");
        mbpo_model_zero_grad(&m);
        REQUIRE(mbpo_model_backward(&m, &rb, dl_r, dp_copies), "backward, copies");
        close_enough("image used 3x in a sequence: logp == 3 copies", lp_shared, lp_copies, 4, 1e-6, 0);
        for (k = 0; k < fc[0].P * 1176; k++)
            dp_sum[k] = dp_copies[k] + dp_copies[fc[0].P * 1176 + k] + dp_copies[2 * fc[0].P * 1176 + k];
        close_enough("image used 3x: d(pixel_values) == sum over copies", dp_shared, dp_sum, fc[0].P * 1176, 1e-5, 1);
        /* backward must refuse a batch other than the last forward's */
        rb.n_images = 1; rb.pixel_values = fc[0].pixel_values; rb.image_refs = rrefs_shared;
        CHECK(!mbpo_model_backward(&m, &rb, dl_r, NULL) && contains(mbpo_failure_reason(), "not the batch"),
              "backward on another batch: %s", mbpo_failure_reason());
        free(pv3); free(dp_shared); free(dp_copies); free(dp_sum);
    }
    free_case(&fc[0]);
    mbpo_model_free(&m);
}

#ifdef _OPENMP
/* Small ops run on the calling thread alone (below MBPO_PAR_MIN: most of the tiny model's pass);
   the same pass with every op on a 3-thread team must give the same bits as on one thread:
   logp, the parameter gradients and the pixel gradient (the Qwen2-VL and Qwen2.5-VL towers). */
static int team_pass(mbpo_model *m, const fixture_case *fc, const mbpo_batch *b, int threads, int64_t par_min,
                     float *logp, float *dl, float *dpix) {
    int th = omp_get_max_threads(), ok;
    int64_t N = 0, i;
    omp_set_num_threads(threads); mbpo__par_min = par_min;
    ok = mbpo_model_plan(m, fc->S, fc->P, fc->n_targets, 1);       /* scratch for this many threads */
    if (ok) ok = (N = mbpo_model_forward(m, b, logp)) == fc->n_targets;
    for (i = 0; ok && i < N; i++) dl[i] = -1.0f / (float)N;
    if (ok) { mbpo_model_zero_grad(m); ok = mbpo_model_backward(m, b, dl, dpix); }
    omp_set_num_threads(th); mbpo__par_min = MBPO_PAR_MIN;          /* restored whatever happened */
    return ok;
}
static void test_team(void) {
    static const char *variants[2] = { "tiny_a", "tiny25_a" };
    int v;
    if (!run_test("team")) return;
    for (v = 0; v < 2; v++) {
        char dir[128], path[128];
        mbpo_model m;
        fixture_case fc;
        mbpo_batch b;
        float *logp[2], *dpix[2], *dl, *grads;
        int64_t n_pix, i, bad_lp = 0, bad_g = 0, bad_px = 0;
        int ok;
        snprintf(dir, sizeof dir, "tests/fixtures/%s/model", variants[v]);
        snprintf(path, sizeof path, "tests/fixtures/%s/case_two_images.safetensors", variants[v]);
        REQUIRE(mbpo_model_load(&m, dir), "load %s", dir);
        REQUIRE(load_case(&fc, path), "load %s", path);
        b = case_batch(&fc);
        n_pix = fc.P * mbpo_config_pix(&m.cfg);
        logp[0] = falloc(fc.n_targets); logp[1] = falloc(fc.n_targets); dl = falloc(fc.n_targets);
        dpix[0] = falloc(n_pix); dpix[1] = falloc(n_pix); grads = falloc(m.table.n_params);
        ok = team_pass(&m, &fc, &b, 1, MBPO_PAR_MIN, logp[0], dl, dpix[0]);              /* every op alone */
        if (ok) memcpy(grads, m.grads, (size_t)m.table.n_params * sizeof(float));
        ok = ok && team_pass(&m, &fc, &b, 3, 0, logp[1], dl, dpix[1]);                  /* every op on 3 threads */
        CHECK(ok, "%s: a pass failed: %s", variants[v], mbpo_failure_reason());
        for (i = 0; ok && i < fc.n_targets; i++) bad_lp += memcmp(&logp[0][i], &logp[1][i], 4) != 0;
        for (i = 0; ok && i < m.table.n_params; i++) bad_g += memcmp(&grads[i], &m.grads[i], 4) != 0;
        for (i = 0; ok && i < n_pix; i++) bad_px += memcmp(&dpix[0][i], &dpix[1][i], 4) != 0;
        if (ok) {
            CHECK(bad_lp == 0 && bad_g == 0 && bad_px == 0,
                  "%s: one thread vs every op on 3: %lld of %lld logp, %lld of %lld gradients, %lld of %lld pixel gradients differ",
                  variants[v], (long long)bad_lp, (long long)fc.n_targets, (long long)bad_g, (long long)m.table.n_params,
                  (long long)bad_px, (long long)n_pix);
            if (!quiet && bad_lp + bad_g + bad_px == 0)
                printf("  ok  %-46s the same bits on one thread and on 3\n", variants[v]);
        }
        free(logp[0]); free(logp[1]); free(dl); free(dpix[0]); free(dpix[1]); free(grads);
        free_case(&fc);
        mbpo_model_free(&m);
    }
}
#endif

/* ============================================================== model: image gradient by FD

   d(sum of target logp)/d(pixel_values) of the whole model against central differences of
   the model's own forward along random directions (fp32 forward, so the step is large and
   the tolerance set by the fp32 noise of the loss: |L| ~ 100, eps_f32 ~ 6e-8 -> noise in
   the difference quotient ~ 1e-5 / h). */
static void test_pixel_fd(void) {
    mbpo_model m;
    fixture_case fc;
    mbpo_batch b;
    float *logp, *dl, *dpix, *pv0, *u;
    int64_t N, n_pix, i;
    int trial;
    mbpo_rng rng;
    if (!run_test("pixel_fd")) return;
    REQUIRE(mbpo_model_load(&m, "tests/fixtures/tiny_a/model"), "load");
    REQUIRE(load_case(&fc, "tests/fixtures/tiny_a/case_two_images.safetensors"), "case");
    b = case_batch(&fc);
    REQUIRE(mbpo_model_plan(&m, fc.S, fc.P, fc.n_targets, 0), "plan without grads (PGD's shape)");
    n_pix = fc.P * 1176;
    logp = falloc(fc.n_targets); dl = falloc(fc.n_targets); dpix = falloc(n_pix); pv0 = falloc(n_pix); u = falloc(n_pix);
    memcpy(pv0, fc.pixel_values, (size_t)n_pix * sizeof(float));
    N = mbpo_model_forward(&m, &b, logp);
    for (i = 0; i < N; i++) dl[i] = 1.0f;
    REQUIRE(mbpo_model_backward(&m, &b, dl, dpix), "backward");
    mbpo_rng_seed(&rng, 99);
    /* direction 0: the gradient itself (derivative = |g|); 1, 2: random mixes of the 256
       entries with the largest |g| (a random unit vector over all entries would see mostly
       fp32 noise, its derivative being ~|g|/sqrt(n)) */
    for (trial = 0; trial < 3; trial++) {
        double h = 5e-2, lp = 0, lm = 0, analytic = 0, unorm = 0, fd, tol;
        memset(u, 0, (size_t)n_pix * sizeof(float));
        if (trial == 0) memcpy(u, dpix, (size_t)n_pix * sizeof(float));
        else {
            int k;
            for (k = 0; k < 256; k++) {   /* pick the largest remaining |g| entry, give it a random weight */
                int64_t best = 0;
                for (i = 0; i < n_pix; i++)
                    if (u[i] == 0.0f && fabsf(dpix[i]) > fabsf(dpix[best] * (u[best] == 0.0f))) best = i;
                u[best] = (float)mbpo_rng_normal(&rng);
            }
        }
        for (i = 0; i < n_pix; i++) unorm += (double)u[i] * u[i];
        unorm = sqrt(unorm);
        for (i = 0; i < n_pix; i++) { u[i] = (float)(u[i] / unorm); analytic += (double)dpix[i] * u[i]; }
        for (i = 0; i < n_pix; i++) fc.pixel_values[i] = pv0[i] + (float)h * u[i];
        mbpo_model_forward(&m, &b, logp);
        for (i = 0; i < N; i++) lp += logp[i];
        for (i = 0; i < n_pix; i++) fc.pixel_values[i] = pv0[i] - (float)h * u[i];
        mbpo_model_forward(&m, &b, logp);
        for (i = 0; i < N; i++) lm += logp[i];
        fd = (lp - lm) / (2 * h);
        tol = 1e-2 * fabs(analytic) + 1e-4;
        CHECK(fabs(fd - analytic) <= tol, "direction %d: FD %.6f vs analytic %.6f", trial, fd, analytic);
        printf("  %s  d(pixel_values) direction %d: FD %.6f analytic %.6f (rel diff %.2e, tol 1e-2)\n",
               fabs(fd - analytic) <= tol ? "ok" : "!!", trial, fd, analytic, fabs(fd - analytic) / fabs(analytic));
    }
    free(logp); free(dl); free(dpix); free(pv0); free(u);
    free_case(&fc);
    mbpo_model_free(&m);
}

/* Qwen2.5-VL's new pieces by central differences of the fp32 model (the ops' own FD tests
   above cover RMSNorm and SwiGLU; here the whole tower: window order and its inverse, the
   windowed and full blocks, the biased SwiGLU, the RMSNorm merger). A random tiny25-A model
   (QWEN25VL.md 8.1) in C, two images of 3 and 2 windows' widths, loss = sum of logp.
   Direction: a tensor's own gradient, so the derivative is |g| and stands far above the fp32
   noise of the loss (~1e-5 / h). */
static double fd25_loss(mbpo_model *m, const mbpo_batch *b, float *logp) {
    int64_t n = mbpo_model_forward(m, b, logp), i;
    double l = 0;
    for (i = 0; i < n; i++) l += logp[i];
    return l;
}
static void fd25_along(const char *what, mbpo_model *m, const mbpo_batch *b, float *x, const float *g, int64_t n, double h,
                       float *logp) {
    float *x0 = falloc(n);
    double norm = 0, lp, lm, fd;
    int64_t i;
    for (i = 0; i < n; i++) norm += (double)g[i] * g[i];
    norm = sqrt(norm);
    if (norm > 0 && h * norm > 0.1) h = 0.1 / norm;   /* the loss moves by ~0.1: curvature stays small */
    memcpy(x0, x, (size_t)n * sizeof(float));
    for (i = 0; i < n; i++) x[i] = x0[i] + (float)(h * g[i] / norm);
    mbpo_model_params_changed(m);
    lp = fd25_loss(m, b, logp);
    for (i = 0; i < n; i++) x[i] = x0[i] - (float)(h * g[i] / norm);
    mbpo_model_params_changed(m);
    lm = fd25_loss(m, b, logp);
    memcpy(x, x0, (size_t)n * sizeof(float));
    mbpo_model_params_changed(m);
    fd = (lp - lm) / (2 * h);
    CHECK(norm > 0 && fabs(fd - norm) <= 1e-2 * norm, "%s: FD %.6f vs analytic |g| %.6f", what, fd, norm);
    printf("  %s  %-40s FD %.6f analytic %.6f (rel diff %.2e, tol 1e-2)\n", fabs(fd - norm) <= 1e-2 * norm ? "ok" : "!!",
           what, fd, norm, fabs(fd - norm) / norm);
    free(x0);
}
static void test_fd25(void) {
    const char *cfg_text =
        "{\"model_type\": \"qwen2_5_vl\", \"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 176,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6,"
        " \"rope_theta\": 1000000.0, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]},"
        " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003,"
        " \"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"intermediate_size\": 72, \"num_heads\": 3,"
        " \"out_hidden_size\": 64, \"window_size\": 56, \"fullatt_block_indexes\": [1, 3]}}";
    static const char *const tensors[] = {
        "visual.patch_embed.proj.weight", "visual.blocks.0.norm1.weight", "visual.blocks.0.attn.qkv.weight",
        "visual.blocks.1.attn.proj.bias", "visual.blocks.1.mlp.gate_proj.bias", "visual.blocks.2.mlp.up_proj.weight",
        "visual.blocks.2.norm2.weight", "visual.blocks.3.mlp.down_proj.bias", "visual.merger.ln_q.weight",
        "visual.merger.mlp.0.weight" };
    mbpo_config cfg;
    mbpo_model m;
    mbpo_json *j;
    mbpo_batch b;
    mbpo_rng rng;
    int32_t ids[34], grid[6] = { 1, 6, 10, 1, 4, 8 }, refs[2] = { 0, 1 };
    uint8_t target[34];
    int64_t seq_off[2] = { 0, 34 }, ref_off[2] = { 0, 2 }, P = 92, N = 0, i;
    float *pix, *dpix, *logp, *dl;
    size_t k;
    if (!run_test("fd25")) return;
    j = mbpo_json_parse(cfg_text, strlen(cfg_text), "tiny25.json");
    REQUIRE(j && mbpo_config_from_json(&cfg, j, "tiny25.json"), "tiny25 config: %s", mbpo_failure_reason());
    mbpo_json_free(j);
    REQUIRE(mbpo_model_init(&m, &cfg), "init");
    mbpo_model_randomize(&m, 25);
    /* the sequence of QWEN25VL.md 8.2: text, image A (15 tokens), text, image B (8), text */
    for (i = 0; i < 34; i++) {
        ids[i] = i < 3 ? 5 + (int32_t)i : i == 3 || i == 22 ? 1002 : i < 19 || (i > 22 && i < 31) ? 1000 : i == 19 || i == 31 ? 1003
                 : (int32_t)(8 + i);
        target[i] = i >= 3 && ids[i] != 1000;
        N += target[i];
    }
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = seq_off; b.target = target;
    b.n_images = 2; b.grid_thw = grid; b.image_refs = refs; b.image_ref_offsets = ref_off;
    pix = falloc(P * 1176); dpix = falloc(P * 1176); logp = falloc(N); dl = falloc(N);
    mbpo_rng_seed(&rng, 2525);
    fill_normal(pix, P * 1176, &rng, 1.0);
    b.pixel_values = pix;
    REQUIRE(mbpo_model_plan(&m, 34, P, N, 1), "plan");
    REQUIRE(mbpo_model_forward(&m, &b, logp) == N, "forward");
    for (i = 0; i < N; i++) dl[i] = 1.0f;
    mbpo_model_zero_grad(&m);
    REQUIRE(mbpo_model_backward(&m, &b, dl, dpix), "backward");
    {   /* the gradient copies: the FD forwards reuse the arena */
        float *g = falloc((int64_t)m.table.total_floats), *gp = falloc(P * 1176);
        memcpy(g, m.grads, m.table.total_floats * sizeof(float));
        memcpy(gp, dpix, (size_t)(P * 1176) * sizeof(float));
        fd25_along("d(pixel_values)", &m, &b, pix, gp, P * 1176, 5e-2, logp);
        for (k = 0; k < sizeof tensors / sizeof tensors[0]; k++) {
            const mbpo_param_info *pi = mbpo_param_find(&m.table, tensors[k]);
            REQUIRE(pi, "%s in the table", tensors[k]);
            fd25_along(tensors[k], &m, &b, m.params + pi->offset, g + pi->offset, pi->numel, 1e-2, logp);
            if (pi->ndim == 1) {   /* and a random direction: blind to no component of the gradient */
                float *u = falloc(pi->numel);
                double un = 0, an = 0, lp, lm, fd, h = 5e-2;
                int64_t q;
                float *x = m.params + pi->offset, *x0 = falloc(pi->numel);
                char what[160];
                fill_normal(u, pi->numel, &rng, 1.0);
                for (q = 0; q < pi->numel; q++) un += (double)u[q] * u[q];
                for (q = 0; q < pi->numel; q++) { u[q] = (float)(u[q] / sqrt(un)); an += (double)g[pi->offset + q] * u[q]; }
                memcpy(x0, x, (size_t)pi->numel * sizeof(float));
                for (q = 0; q < pi->numel; q++) x[q] = x0[q] + (float)h * u[q];
                lp = fd25_loss(&m, &b, logp);
                for (q = 0; q < pi->numel; q++) x[q] = x0[q] - (float)h * u[q];
                lm = fd25_loss(&m, &b, logp);
                memcpy(x, x0, (size_t)pi->numel * sizeof(float));
                fd = (lp - lm) / (2 * h);
                snprintf(what, sizeof what, "%s (random direction)", tensors[k]);
                CHECK(fabs(fd - an) <= 1e-2 * fabs(an) + 1e-3, "%s: FD %.6f vs analytic %.6f", what, fd, an);
                printf("  %s  %-52s FD %.6f analytic %.6f (diff %.1e, tol 1e-2 rel + 1e-3)\n",
                       fabs(fd - an) <= 1e-2 * fabs(an) + 1e-3 ? "ok" : "!!", what, fd, an, fabs(fd - an));
                free(u); free(x0);
            }
        }
        free(g); free(gp);
    }
    free(pix); free(dpix); free(logp); free(dl);
    mbpo_model_free(&m);
}

/* ============================================================== model: save, load, bad files */

static void test_save_load(void) {
    mbpo_model m, back;
    char dir[512], path[1024], cmd[1200];
    size_t i;
    int same = 1;
    if (!run_test("save_load")) return;
    REQUIRE(mbpo_model_load(&m, "tests/fixtures/tiny_a_tied/model"), "load tied");
    snprintf(dir, sizeof dir, "%s/saved", tmpdir());
    mkdir(dir, 0755);
    REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save");
    REQUIRE(mbpo_model_load(&back, dir), "load saved: %s", mbpo_failure_reason());
    for (i = 0; i < m.table.total_floats; i++) same &= m.params[i] == back.params[i];
    CHECK(same && back.cfg.tie_word_embeddings && back.table.n == m.table.n, "F32 save/load is exact (tied, no lm_head)");
    mbpo_model_free(&back);
    REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_BF16), "save bf16");
    REQUIRE(mbpo_model_load(&back, dir), "load bf16");
    for (i = 0, same = 1; i < m.table.total_floats; i++)
        same &= back.params[i] == mbpo_bf16_to_f32(mbpo_f32_to_bf16(m.params[i]));
    CHECK(same, "BF16 save/load rounds each value to nearest even");
    mbpo_model_free(&back);
    /* the new (5.x-style) key layout loads to the same parameters */
    {
        mbpo_st_entry *e = (mbpo_st_entry *)calloc(m.table.n, sizeof(mbpo_st_entry));
        char (*names)[160] = (char (*)[160])calloc(m.table.n, 160);
        int k;
        for (i = 0; i < m.table.n; i++) {
            const mbpo_param_info *p = &m.table.info[i];
            if (!strncmp(p->name, "visual.", 7)) snprintf(names[i], 160, "model.%s", p->name);
            else snprintf(names[i], 160, "model.language_model.%s", p->name + 6);
            e[i].name = names[i]; e[i].dtype = MBPO_DT_F32; e[i].ndim = p->ndim; e[i].data = m.params + p->offset;
            for (k = 0; k < p->ndim; k++) e[i].shape[k] = p->shape[k];
        }
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        REQUIRE(mbpo_st_write(path, e, m.table.n), "write new layout");
        REQUIRE(mbpo_model_load(&back, dir), "load new layout");
        for (i = 0, same = 1; i < m.table.total_floats; i++) same &= m.params[i] == back.params[i];
        CHECK(same, "model.visual./model.language_model. layout loads identically");
        mbpo_model_free(&back);
        /* missing tensor */
        REQUIRE(mbpo_st_write(path, e, m.table.n - 1), "write without the last tensor");
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "missing tensor 'model.norm.weight'"),
              "missing tensor: %s", mbpo_failure_reason());
        /* wrong shape */
        e[0].shape[0] = 32; e[0].ndim = 5;
        REQUIRE(mbpo_st_write(path, e, m.table.n), "write with a wrong shape");
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "model.visual.patch_embed.proj.weight") &&
              contains(mbpo_failure_reason(), path), "wrong shape: %s", mbpo_failure_reason());
        free(e); free(names);
    }
    /* a truncated checkpoint */
    REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save again");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(cmd, sizeof cmd, "truncate -s -1000 %s", path);
    REQUIRE(system(cmd) == 0, "truncate");
    CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), path) && contains(mbpo_failure_reason(), "truncated"),
          "truncated model.safetensors: %s", mbpo_failure_reason());
    /* config.json missing a required field */
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_bytes(path, "{\"vision_config\": {}}", 21);
    CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), path) && contains(mbpo_failure_reason(), "vocab_size"),
          "config without vocab_size: %s", mbpo_failure_reason());
    remove(path);
    CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "config.json"), "no config.json: %s", mbpo_failure_reason());
    mbpo_model_free(&m);
}

/* Qwen2.5-VL checkpoints: save/load exact for both tie states, the tie decided by the checkpoint
   when the config cannot say, and the other family's tensor names refused by name. */
static void test_save_load25(void) {
    mbpo_model m, back;
    char dir[512], path[1024];
    size_t i;
    int same = 1, tied;
    if (!run_test("save_load25")) return;
    snprintf(dir, sizeof dir, "%s/saved25", tmpdir());
    mkdir(dir, 0755);
    for (tied = 0; tied < 2; tied++) {
        REQUIRE(mbpo_model_load(&m, tied ? "tests/fixtures/tiny25_a_tied/model" : "tests/fixtures/tiny25_a/model"), "load");
        CHECK(m.cfg.arch == MBPO_ARCH_QWEN2_5_VL && m.cfg.tie_word_embeddings == tied && m.table.n == (size_t)(81 - tied) &&
              m.table.n_params == (tied ? 344432 : 409968), "tiny25 %s: %zu tensors, %lld parameters", tied ? "tied" : "untied",
              m.table.n, (long long)m.table.n_params);
        REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save");
        REQUIRE(mbpo_model_load(&back, dir), "load saved: %s", mbpo_failure_reason());
        for (i = 0, same = 1; i < m.table.total_floats; i++) same &= m.params[i] == back.params[i];
        CHECK(same && back.cfg.arch == MBPO_ARCH_QWEN2_5_VL && back.cfg.tie_word_embeddings == tied &&
              !memcmp(back.cfg.v_fullatt, m.cfg.v_fullatt, sizeof m.cfg.v_fullatt) && back.cfg.v_window_size == m.cfg.v_window_size,
              "Qwen2.5-VL save/load is exact (%s)", tied ? "tied" : "untied");
        mbpo_model_free(&back);
        mbpo_model_free(&m);
    }
    /* the untied model's config with the head removed from its checkpoint: a contradiction */
    REQUIRE(mbpo_model_load(&m, "tests/fixtures/tiny25_a/model"), "load");
    {
        mbpo_st_entry *e = (mbpo_st_entry *)calloc(m.table.n, sizeof(mbpo_st_entry));
        char (*names)[160] = (char (*)[160])calloc(m.table.n, 160);
        size_t n = 0;
        int k;
        for (i = 0; i < m.table.n; i++) {
            const mbpo_param_info *p = &m.table.info[i];
            if (!strcmp(p->name, "lm_head.weight")) continue;
            snprintf(names[n], 160, "%s", p->name);
            e[n].name = names[n]; e[n].dtype = MBPO_DT_F32; e[n].ndim = p->ndim; e[n].data = m.params + p->offset;
            for (k = 0; k < p->ndim; k++) e[n].shape[k] = p->shape[k];
            n++;
        }
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32) && mbpo_st_write(path, e, n), "write without lm_head");
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "tie_word_embeddings false") &&
              contains(mbpo_failure_reason(), "no lm_head.weight"), "untied config, tied checkpoint: %s", mbpo_failure_reason());
        /* a config whose two tie flags disagree: the checkpoint (no head) makes it tied */
        {
            const char *cfg = "{\"model_type\": \"qwen2_5_vl\", \"tie_word_embeddings\": true, \"text_config\": {"
                "\"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 2,"
                " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6, \"bos_token_id\": 1,"
                " \"eos_token_id\": 2, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}},"
                " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003,"
                " \"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"intermediate_size\": 72, \"num_heads\": 3,"
                " \"out_hidden_size\": 64, \"window_size\": 56, \"fullatt_block_indexes\": [1, 3]}}";
            snprintf(path, sizeof path, "%s/config.json", dir);
            write_bytes(path, cfg, strlen(cfg));
            CHECK(mbpo_model_load(&back, dir) && back.cfg.tie_word_embeddings && back.table.n == m.table.n - 1,
                  "ambiguous tie flags: tied by the checkpoint: %s", mbpo_failure_reason());
            mbpo_model_free(&back);
        }
        /* the same ambiguous config over the checkpoint with its head: untied */
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save with the head");
        snprintf(path, sizeof path, "%s/config.json", dir);
        {
            const char *cfg_amb = "{\"model_type\": \"qwen2_5_vl\", \"tie_word_embeddings\": true, \"text_config\": {"
                "\"vocab_size\": 1024, \"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 2,"
                " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6, \"bos_token_id\": 1,"
                " \"eos_token_id\": 2, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}},"
                " \"image_token_id\": 1000, \"video_token_id\": 1001, \"vision_start_token_id\": 1002, \"vision_end_token_id\": 1003,"
                " \"vision_config\": {\"depth\": 4, \"hidden_size\": 48, \"intermediate_size\": 72, \"num_heads\": 3,"
                " \"out_hidden_size\": 64, \"window_size\": 56, \"fullatt_block_indexes\": [1, 3]}}";
            write_bytes(path, cfg_amb, strlen(cfg_amb));
        }
        CHECK(mbpo_model_load(&back, dir) && !back.cfg.tie_word_embeddings && back.table.n == m.table.n,
              "ambiguous tie flags, checkpoint with lm_head.weight: untied: %s", mbpo_failure_reason());
        mbpo_model_free(&back);
        {   /* a tied config over that checkpoint: its head is not the embedding, a contradiction ... */
            mbpo_config tc = m.cfg;
            char *txt;
            tc.tie_word_embeddings = 1;
            txt = mbpo_config_to_json(&tc);
            REQUIRE(txt, "render");
            write_bytes(path, txt, strlen(txt));
            mbpo_free(txt);
        }
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "lm_head.weight is not model.embed_tokens.weight") &&
              contains(mbpo_failure_reason(), "tie_word_embeddings true"), "tied config, different head: %s", mbpo_failure_reason());
        {   /* ... and a head equal to the embedding (written twice) is accepted */
            const mbpo_param_info *ph = mbpo_param_find(&m.table, "lm_head.weight");
            const mbpo_param_info *pe = mbpo_param_find(&m.table, "model.embed_tokens.weight");
            char *txt;
            mbpo_config tc = m.cfg;
            REQUIRE(ph && pe, "head and embedding");
            memcpy(m.params + ph->offset, m.params + pe->offset, (size_t)pe->numel * sizeof(float));
            REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save with head == embedding");
            tc.tie_word_embeddings = 1;
            txt = mbpo_config_to_json(&tc);
            REQUIRE(txt, "render");
            write_bytes(path, txt, strlen(txt));
            mbpo_free(txt);
            CHECK(mbpo_model_load(&back, dir) && back.cfg.tie_word_embeddings && back.table.n == m.table.n - 1,
                  "tied config, head == embedding: loads tied: %s", mbpo_failure_reason());
            mbpo_model_free(&back);
        }
        /* Qwen2-VL tensor names under the Qwen2.5-VL config */
        snprintf(names[1], 160, "visual.blocks.0.norm1.bias");
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        REQUIRE(mbpo_st_write(path, e, n), "write with a Qwen2-VL name");
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), path) &&
              contains(mbpo_failure_reason(), "'visual.blocks.0.norm1.bias' is a Qwen2-VL name") &&
              contains(mbpo_failure_reason(), "\"model_type\": \"qwen2_5_vl\""), "Qwen2-VL names: %s", mbpo_failure_reason());
        free(e); free(names);
    }
    mbpo_model_free(&m);
    /* and the other way: a Qwen2.5-VL checkpoint under a Qwen2-VL config */
    REQUIRE(mbpo_model_load(&m, "tests/fixtures/tiny25_a/model"), "load");
    REQUIRE(mbpo_model_save(&m, dir, MBPO_DT_F32), "save");
    mbpo_model_free(&m);
    {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "cp tests/fixtures/tiny_a/model/config.json %s/config.json", dir);
        REQUIRE(system(cmd) == 0, "copy the Qwen2-VL config");
        CHECK(!mbpo_model_load(&back, dir) && contains(mbpo_failure_reason(), "is a Qwen2.5-VL name"),
              "Qwen2.5-VL names under qwen2_vl: %s", mbpo_failure_reason());
    }
}

int main(int argc, char **argv) {
    char cmd[512];
    filter = argc > 1 ? argv[1] : NULL;
    test_json();
    test_halves_rng();
    test_safetensors();
    test_config();
    test_config25();
    test_kernels();
    test_expf();
    test_ops_fd();
    test_parity();
    test_packed();
#ifdef _OPENMP
    test_team();
#endif
    test_pixel_fd();
    test_parity25();
    test_fd25();
    test_save_load25();
    test_save_load();
    test_inputs();
    test_core();
    test_runs();
    test_records();
    test_cli();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir());
    if (getenv("MBPO_KEEP_TMP")) printf("kept %s (MBPO_KEEP_TMP)\n", tmpdir());
    else if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir());
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
