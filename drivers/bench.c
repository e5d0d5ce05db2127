/* mbpo-bench: time the Qwen2-VL forward (and backward) of mbpo on one input, or the
   tokenizer on a text file. The input files are what tests/reference/bench_torch.py and
   bench_tokenizer.py write, so both sides run the same weights, tokens, pixels and text. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <stdlib.h>
#include <string.h>

#define TRY(x) do { if (!(x)) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 1; } } while (0)

/* Encoding speed: the whole text (or each line) per iteration, warm word cache, as HF's. */
static int bench_tokenizer(const char *tok_path, const char *text_path, int lines, int iters, int warmup) {
    size_t len = 0;
    char *text = mbpo_read_file(text_path, &len);
    mbpo_tokenizer *tok = text ? mbpo_tokenizer_load(tok_path) : NULL;
    int64_t n_ids = 0, n_lines = 0;
    uint64_t sum = 0;
    double t0 = 0, dt;
    int i;
    if (!tok) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 1; }
    for (i = 0; i < warmup + iters; i++) {
        const char *p = text, *end = text + len;
        if (i == warmup) t0 = mbpo_now();
        n_ids = 0; n_lines = 0; sum = 0;
        while (p < end) {
            const char *q = lines ? (const char *)memchr(p, '\n', (size_t)(end - p)) : NULL;
            size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
            int64_t k, m;
            const int32_t *ids = mbpo_tokenizer_encode(tok, p, n, 1, &m);
            if (!ids) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 1; }
            for (k = 0; k < m; k++) sum = sum * 31 + (uint64_t)ids[k];
            n_ids += m; n_lines++;
            p += n + (q != NULL);
        }
    }
    dt = (mbpo_now() - t0) / iters;
    printf("mbpo tokenizer (%s): %.2f MB, %lld strings, %lld ids, %.4f s/iter, %.2f MB/s (ids checksum %016llx)\n",
           lines ? "lines" : "whole", (double)len / 1e6, (long long)n_lines, (long long)n_ids, dt, (double)len / 1e6 / dt,
           (unsigned long long)sum);
    mbpo_tokenizer_free(tok);
    mbpo_free(text);
    return 0;
}

/* Ids for comparisons outside (tests/reference/interop.py): each line of a JSONL file is a
   string, encoded as text with the added tokens, or {"question", "image_tokens": [n, ...],
   "response"?} rendered by mbpo's chat template. Prints the ids, a tab, and the ids decoded
   back (special tokens kept) in hex, one line per input line. */
static int encode_lines(const char *tok_path, const char *path) {
    size_t len = 0;
    char *text = mbpo_read_file(path, &len);
    mbpo_tokenizer *tok = text ? mbpo_tokenizer_load(tok_path) : NULL;
    const char *p = text, *end = text + len;
    int64_t lineno = 0;
    if (!tok) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 1; }
    while (p < end) {
        const char *q = (const char *)memchr(p, '\n', (size_t)(end - p));
        size_t n = q ? (size_t)(q - p) : (size_t)(end - p), dn = 0, k;
        mbpo_json *j = mbpo_json_parse_line(p, n, path, ++lineno);
        const mbpo_json *qn = j ? mbpo_json_get(j, "question") : NULL, *it = j ? mbpo_json_get(j, "image_tokens") : NULL;
        const mbpo_json *resp = j ? mbpo_json_get(j, "response") : NULL;
        const int32_t *ids = NULL;
        int64_t m = 0, i, img[8];
        mbpo_chat chat;
        char *dec;
        memset(&chat, 0, sizeof chat);
        if (j && j->type == MBPO_JSON_STRING) ids = mbpo_tokenizer_encode(tok, j->string, j->len, 1, &m);
        else if (qn && qn->type == MBPO_JSON_STRING && it && it->type == MBPO_JSON_ARRAY && it->count <= 8) {
            for (k = 0; k < it->count; k++) img[k] = it->items[k].is_int ? it->items[k].integer : 0;
            if (mbpo_chat_encode(tok, NULL, qn->string, img, (int)it->count,
                                 resp && resp->type == MBPO_JSON_STRING ? resp->string : NULL, &chat)) { ids = chat.ids; m = chat.n; }
        } else if (j) mbpo_failure_set("%s:%lld: want a string or {\"question\", \"image_tokens\", \"response\"}", path, (long long)lineno);
        if (!ids || !(dec = mbpo_tokenizer_decode(tok, ids, m, 0, &dn))) {
            fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason());
            return 1;
        }
        for (i = 0; i < m; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\t');
        for (k = 0; k < dn; k++) printf("%02x", (unsigned char)dec[k]);
        putchar('\n');
        mbpo_free(dec);
        mbpo_chat_free(&chat);
        mbpo_json_free(j);
        p += n + (q != NULL);
    }
    mbpo_tokenizer_free(tok);
    mbpo_free(text);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *input = NULL, *tok_path = NULL, *text_path = NULL, *dump = NULL, *encode = NULL;
    int lines = 0;
    char input_buf[4096];
    int iters = 10, warmup = 2, backward = 0, i, rc;
    mbpo_model m;
    mbpo_st st;
    const mbpo_st_tensor *t_ids, *t_lab, *t_pv, *t_grid;
    int64_t *ids64, *lab64, grid64[3] = { 0, 0, 0 }, S, P = 0, N = 0, s, seq_off[2], ref_off[2] = { 0, 0 };
    int32_t *ids, grid[3] = { 0, 0, 0 }, refs[1] = { 0 };
    uint8_t *target;
    float *pv = NULL, *logp, *dlogp;
    mbpo_batch b;
    double t0 = 0, dt;
    {
        mbpo_flag flags[] = {
            { "--model", "DIR", MBPO_FLAG_STRING, &model_dir, NULL, "Hugging Face model directory (config.json + safetensors)" },
            { "--input", "FILE", MBPO_FLAG_STRING, &input, NULL,
              "safetensors with input_ids, labels, pixel_values, image_grid_thw\n(default: DIR/bench_input.safetensors)" },
            { "--iters", "N", MBPO_FLAG_INT, &iters, ">= 1", "timed iterations" },
            { "--warmup", "N", MBPO_FLAG_INT, &warmup, ">= 0", "untimed iterations first" },
            { "--backward", NULL, MBPO_FLAG_SWITCH, &backward, NULL, "time forward + backward of the mean target NLL instead" },
            { "--dump-logits", "F", MBPO_FLAG_STRING, &dump, NULL,
              "after the timing, write the logits (T, V) of every position to F (safetensors)" },
            { "--tokenizer", "F", MBPO_FLAG_STRING, &tok_path, NULL, "time encoding FILE (--text) with tokenizer.json F, one thread" },
            { "--text", "FILE", MBPO_FLAG_STRING, &text_path, NULL, "the text to encode (with --tokenizer)" },
            { "--lines", NULL, MBPO_FLAG_SWITCH, &lines, NULL, "encode the text line by line (default: as one string)" },
            { "--encode", "FILE", MBPO_FLAG_STRING, &encode, NULL,
              "no timing: print the ids of each line of JSONL FILE (with --tokenizer): a string as text, or\n"
              "{\"question\", \"image_tokens\", \"response\"} as a chat; then a tab and the ids decoded, in hex" },
        };
        if (!mbpo_flags_handle("mbpo-bench", "--model DIR [--input FILE] [--iters 10] [--warmup 2] [--backward]\n"
                               "       mbpo-bench --tokenizer FILE --text FILE [--lines] [--iters 10] [--warmup 2]\n"
                               "       mbpo-bench --tokenizer FILE --encode FILE",
                               flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    if (encode) {
        if (!tok_path || text_path) { fprintf(stderr, "mbpo-bench: --encode needs --tokenizer, without --text (see --help)\n"); return 2; }
        return encode_lines(tok_path, encode);
    }
    if (tok_path || text_path) {
        if (!tok_path || !text_path) { fprintf(stderr, "mbpo-bench: --tokenizer and --text go together (see --help)\n"); return 2; }
        return bench_tokenizer(tok_path, text_path, lines, iters, warmup);
    }
    if (!model_dir) { fprintf(stderr, "mbpo-bench: --model (or --tokenizer with --text) is required (see --help)\n"); return 2; }
    if (!input) { snprintf(input_buf, sizeof input_buf, "%s/bench_input.safetensors", model_dir); input = input_buf; }
    TRY(mbpo_model_load(&m, model_dir));
    TRY(mbpo_st_open(&st, input));
    t_ids = mbpo_st_find(&st, "input_ids"); t_lab = mbpo_st_find(&st, "labels");
    t_pv = mbpo_st_find(&st, "pixel_values"); t_grid = mbpo_st_find(&st, "image_grid_thw");
    if (!t_ids || !t_lab) { fprintf(stderr, "mbpo-bench: %s: needs input_ids and labels\n", input); return 1; }
    S = t_ids->numel;
    ids64 = (int64_t *)calloc((size_t)S, 8); lab64 = (int64_t *)calloc((size_t)S, 8);
    ids = (int32_t *)calloc((size_t)S, 4); target = (uint8_t *)calloc((size_t)S, 1);
    TRY(mbpo_st_read_i64(&st, t_ids, ids64) && mbpo_st_read_i64(&st, t_lab, lab64));
    for (s = 0; s < S; s++) { ids[s] = (int32_t)ids64[s]; target[s] = s > 0 && lab64[s] != -100; N += target[s]; }
    if (t_pv && t_grid && t_grid->numel == 3) {
        TRY(mbpo_st_read_i64(&st, t_grid, grid64));
        for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
        P = t_pv->numel / mbpo_config_pix(&m.cfg);
        pv = (float *)malloc((size_t)t_pv->numel * sizeof(float));
        TRY(mbpo_st_read_f32(&st, t_pv, pv));
        ref_off[1] = 1;
    }
    seq_off[0] = 0; seq_off[1] = S;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = seq_off; b.target = target;
    b.n_images = P ? 1 : 0; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_off;
    TRY(mbpo_model_plan(&m, S, P, N, backward));
    logp = (float *)calloc((size_t)N + 1, sizeof(float)); dlogp = (float *)calloc((size_t)N + 1, sizeof(float));
    for (s = 0; s < N; s++) dlogp[s] = -1.0f / (float)N;
    printf("mbpo-bench: %s, %lld parameters, %lld tokens, %lld patches, %lld targets, %d threads, "
           "activations %.1f MB\n", model_dir, (long long)m.table.n_params, (long long)S, (long long)P, (long long)N,
#ifdef _OPENMP
           omp_get_max_threads(),
#else
           1,
#endif
           (double)mbpo_model_plan_bytes(&m) / 1e6);
    for (i = 0; i < warmup + iters; i++) {
        if (i == warmup) t0 = mbpo_now();
        TRY(mbpo_model_forward(&m, &b, logp) == N);
        if (backward) { mbpo_model_zero_grad(&m); TRY(mbpo_model_backward(&m, &b, dlogp, NULL)); }
    }
    dt = (mbpo_now() - t0) / iters;
    {
        double loss = 0;
        for (s = 0; s < N; s++) loss -= logp[s];
        printf("mbpo %s: %lld tokens, %lld patches, %.3f ms/iter, %.1f tokens/s (loss %.6f)\n",
               backward ? "fwd+bwd" : "forward", (long long)S, (long long)P, dt * 1e3, (double)S / dt, loss / (double)N);
    }
    if (dump) {   /* every position's logits, for comparisons outside (tests/reference/roundtrip.py) */
        int64_t V = m.cfg.vocab_size;
        float *all = (float *)malloc((size_t)(S * V) * sizeof(float));
        mbpo_st_entry e;
        TRY(all != NULL);
        TRY(mbpo_model_forward(&m, &b, logp) == N);
        for (s = 0; s < S; s++) TRY(mbpo_model_logits(&m, s, all + s * V));
        memset(&e, 0, sizeof e);
        e.name = "logits"; e.dtype = MBPO_DT_F32; e.ndim = 2; e.shape[0] = S; e.shape[1] = V; e.data = all;
        TRY(mbpo_st_write(dump, &e, 1));
        printf("mbpo-bench: wrote the logits (%lld, %lld) to %s\n", (long long)S, (long long)V, dump);
        free(all);
    }
    free(ids64); free(lab64); free(ids); free(target); free(pv); free(logp); free(dlogp);
    mbpo_st_close(&st);
    mbpo_model_free(&m);
    return 0;
}
