/* test_fullsize.c - a hub-size model with random weights, mbpo on the CPU against transformers.

   Usage:  test_fullsize DIR
   DIR is made by tests/reference/fullsize_random.py --config <hub config.json> --out DIR: a model
   folder (config.json, bf16 shards + model.safetensors.index.json) and reference.safetensors,
   transformers' fp32 eager CPU results on one chat-shaped sequence with one 112x196 image (see
   that script). This file loads DIR as any model folder and, through mbpo.h's public API only:
     preprocess  the raw image and a black image of its size -> pixel_values vs transformers'
     forward     logits of every position: max |diff|, max |ref|, argmax agreement, logsumexp,
                 and the response tokens' log-probs
     iig         mbpo_iig (with mbpo's own black image) vs transformers' sum and mean
     greedy      mbpo_generate at temperature 0, 8 tokens, no stop id, vs generate(do_sample=False),
                 and the KV-cache path fed generate's tokens: each step's logits vs generate's
   printing each phase's wall time and the peak RSS; exits 1 when a check fails.

   Tolerances. Both sides run fp32 with the same bf16-representable weights, so what differs is
   only the order of float sums (mbpo's blocked GEMMs with FMA, oneDNN/MKL in torch), amplified
   through the depth; it scales with the size of the logits, so the bound is relative to the
   largest |logit| of the reference (R). Measured (transformers 4.57.6, torch 2.15.0, gcc 12 -O3
   -march=native, 2 threads; embed std 0.3, logit std ~12):
                         Qwen2-VL-2B (R 61.3)   Qwen2.5-VL-3B (R 68.2)
     logits max |diff|   3.40e-4 (5.6e-6 R)     3.47e-4 (5.1e-6 R)
     logsumexp           1.52e-4                1.90e-4
     response logp       1.41e-4                1.53e-4
     decode-step logits  2.77e-4                3.39e-4
     IIG sum             9.5e-4 (of 22.6)       2.1e-4 (of 80.3)
   Bounds, about 10x over that:
     logits, logsumexp, decode-step logits   max |diff| <= tol = 5e-5 * max(1, R)
     logp (a logit minus a logsumexp)        <= 2 tol
     IIG sum, mean (N differences of two logp) |diff| <= 4 N tol, 4 tol (the worst case of the above)
     argmax     every row, except rows whose top-2 margin in the reference is within 2 tol (a
                near-tie either side may resolve)
     greedy     the 8 tokens exactly; a first mismatch at a step whose reference margin is
                within 2 tol is reported as a near-tie, not a failure
     pixels     max |diff| <= 1e-5 (the same arithmetic on 8-bit values; no resize at 112x196;
                measured 0)
   Build (the Makefile's CFLAGS): cc -std=c99 -Wall -Wextra -pedantic -O3 -march=native -ffp-contract=fast -fopenmp
         -o build/test_fullsize tests/test_fullsize.c -lstb -lm */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define N_NEW 8

static int n_failed;

static void die(const char *what) {
    fprintf(stderr, "test_fullsize: %s: %s\n", what, mbpo_failure_reason());
    exit(2);
}
static double peak_rss_gb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (double)ru.ru_maxrss / (1024.0 * 1024.0);   /* Linux: KiB */
}
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    printf("  %s  ", ok ? "ok" : "!!");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!ok) n_failed++;
}

/* A tensor of the reference file (malloc'd), or exit naming it. */
static const mbpo_st_tensor *need(const mbpo_st *st, const char *name) {
    const mbpo_st_tensor *t = mbpo_st_find(st, name);
    if (!t) { fprintf(stderr, "test_fullsize: reference.safetensors has no tensor '%s'\n", name); exit(2); }
    return t;
}
static float *ref_f32(const mbpo_st *st, const char *name, int64_t *numel) {
    const mbpo_st_tensor *t = need(st, name);
    float *x = (float *)malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    if (!x || !mbpo_st_read_f32(st, t, x)) die(name);
    if (numel) *numel = t->numel;
    return x;
}
static int64_t *ref_i64(const mbpo_st *st, const char *name, int64_t *numel) {
    const mbpo_st_tensor *t = need(st, name);
    int64_t *x = (int64_t *)malloc((size_t)(t->numel ? t->numel : 1) * sizeof(int64_t));
    if (!x || !mbpo_st_read_i64(st, t, x)) die(name);
    if (numel) *numel = t->numel;
    return x;
}
static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates as the max */
    }
    return m;
}
static double row_logsumexp(const float *r, int64_t V) {
    double mx = -INFINITY, s = 0;
    int64_t k;
    for (k = 0; k < V; k++) if (r[k] > mx) mx = r[k];
    for (k = 0; k < V; k++) s += exp((double)r[k] - mx);
    return mx + log(s);
}
static int64_t row_argmax(const float *r, int64_t V, double *margin) {
    int64_t k, best = 0, second = -1;
    for (k = 1; k < V; k++) if (r[k] > r[best]) best = k;
    for (k = 0; k < V; k++) if (k != best && (second < 0 || r[k] > r[second])) second = k;
    if (margin) *margin = (double)r[best] - (double)r[second];
    return best;
}

int main(int argc, char **argv) {
    char path[4096];
    const char *dir;
    mbpo_model m;
    mbpo_st st;
    mbpo_preproc pp;
    mbpo_image img, black;
    mbpo_batch b;
    mbpo_kv kv;
    mbpo_gen_opts go;
    mbpo_rng rng;
    int64_t S, V, P, pix, N = 0, n, t, i, prompt_len, *ids64, *grid64, *rgb64, *target64, *greedy64;
    int64_t offs[2], roffs[2] = { 0, 1 }, Pm = 0, Pb = 0, n_argmax = 0, n_near = 0, n_rgb, n_lp = 0;
    int32_t *ids, grid[3], gm[3], refs[1] = { 0 }, out_ids[N_NEW];
    uint8_t *target;
    float *pv, *pv_black, *ref, *ref_lse, *ref_lp, *ref_lpb, *ref_iig_sum, *ref_iig_mean, *margin, *ref_glog;
    float *pv_mbpo = NULL, *pv_black_mbpo = NULL, *row, *lp, *lp2, *lpb, *lp_rows;
    double t0, t_all, t_load, t_pre, t_fwd, t_logits, t_iig, t_gen, t_dec, dmax_dec = 0, ref_max = 0, dmax = 0, lse_max = 0, tol, mx_lp,
           mx_lpb, iig_sum = 0, iig_mean = 0;
    int out_len = 0, first_bad = -1;

    mbpo_device device = MBPO_DEVICE_CPU;
    if (argc == 4 && !strcmp(argv[2], "--device")) {   /* the GPU: build with MBPO_CUDA_FP32 for these tolerances */
        if (!mbpo_device_parse(argv[3], &device)) { fprintf(stderr, "test_fullsize: --device: %s\n", mbpo_failure_reason()); return 2; }
        argc = 2;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: test_fullsize DIR [--device cpu|cuda] (DIR made by tests/reference/fullsize_random.py)\n");
        return 2;
    }
    dir = argv[1];
    t_all = mbpo_now();
    printf("test_fullsize: %s\n  %s\n", dir, mbpo_build_info());

    /* ---------------------------------------------------------------- load */
    t0 = mbpo_now();
    if (!mbpo_model_load(&m, dir)) die(dir);
    t_load = mbpo_now() - t0;
    V = m.cfg.vocab_size; pix = mbpo_config_pix(&m.cfg);
    printf("  load: %lld parameters (%s head), %lld layers, %lld ViT blocks, %.1f s, peak RSS %.2f GB\n",
           (long long)m.table.n_params, m.cfg.tie_word_embeddings ? "tied" : "untied", (long long)m.cfg.n_layers,
           (long long)m.cfg.v_depth, t_load, peak_rss_gb());

    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (!mbpo_st_open(&st, path)) die(path);
    ids64 = ref_i64(&st, "input_ids", &S);
    target64 = ref_i64(&st, "target", NULL);
    grid64 = ref_i64(&st, "image_grid_thw", NULL);
    rgb64 = ref_i64(&st, "image_rgb", &n_rgb);
    greedy64 = ref_i64(&st, "greedy", &n);
    if (n != N_NEW) { fprintf(stderr, "test_fullsize: %s: greedy has %lld tokens, not %d\n", path, (long long)n, N_NEW); return 2; }
    {
        int64_t *pl = ref_i64(&st, "prompt_len", NULL);
        prompt_len = pl[0];
        free(pl);
    }
    pv = ref_f32(&st, "pixel_values", &n);
    P = n / pix;
    pv_black = ref_f32(&st, "pixel_values_black", NULL);
    ref = ref_f32(&st, "logits", &n);
    if (n != S * V) { fprintf(stderr, "test_fullsize: %s: logits have %lld values, not S x V = %lld\n", path, (long long)n, (long long)(S * V)); return 2; }
    ref_lse = ref_f32(&st, "logsumexp", NULL);
    ref_lp = ref_f32(&st, "logp", NULL);
    ref_lpb = ref_f32(&st, "logp_black", NULL);
    ref_iig_sum = ref_f32(&st, "iig_sum", NULL);
    ref_iig_mean = ref_f32(&st, "iig_mean", NULL);
    margin = ref_f32(&st, "greedy_margin", NULL);
    ref_glog = ref_f32(&st, "greedy_logits", &n);
    if (n != N_NEW * V) { fprintf(stderr, "test_fullsize: %s: greedy_logits are not %d x V\n", path, N_NEW); return 2; }
    ids = (int32_t *)malloc((size_t)S * sizeof(int32_t));
    target = (uint8_t *)malloc((size_t)S);
    row = (float *)malloc((size_t)V * sizeof(float));
    for (t = 0; t < S; t++) { ids[t] = (int32_t)ids64[t]; target[t] = (uint8_t)(target64[t] != 0); N += target[t]; }
    for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
    lp = (float *)malloc((size_t)N * sizeof(float));
    lp2 = (float *)malloc((size_t)N * sizeof(float));
    lpb = (float *)malloc((size_t)N * sizeof(float));
    lp_rows = (float *)malloc((size_t)N * sizeof(float));
    for (i = 0; i < S * V; i++) if (fabs(ref[i]) > ref_max) ref_max = fabs(ref[i]);
    tol = 5e-5 * (ref_max > 1 ? ref_max : 1);
    printf("  reference: %lld tokens (prompt %lld), %lld targets, grid %d x %d x %d (%lld patches), vocab %lld, max |logit| %.3f\n",
           (long long)S, (long long)prompt_len, (long long)N, grid[0], grid[1], grid[2], (long long)P, (long long)V, ref_max);

    /* ---------------------------------------------------------------- preprocessing */
    t0 = mbpo_now();
    mbpo_preproc_default(&pp);   /* the hub's settings, the slow (Pillow) processor, as the script used */
    {
        const mbpo_st_tensor *ti = need(&st, "image_rgb");
        if (ti->ndim != 3 || ti->shape[2] != 3) { fprintf(stderr, "test_fullsize: %s: image_rgb is not (H, W, 3)\n", path); return 2; }
        int H = (int)ti->shape[0], W = (int)ti->shape[1];
        if (!mbpo_image_init(&img, W, H)) die("image");
        for (i = 0; i < n_rgb; i++) img.rgb[i] = (uint8_t)rgb64[i];
        if (!mbpo_image_preprocess(&pp, &img, NULL, &pv_mbpo, &Pm, gm)) die("preprocess image");
        if (!mbpo_image_init(&black, W, H)) die("black image");
        if (!mbpo_image_preprocess(&pp, &black, NULL, &pv_black_mbpo, &Pb, gm)) die("preprocess black image");
    }
    t_pre = mbpo_now() - t0;
    if (Pm != P || Pb != P || gm[0] != grid[0] || gm[1] != grid[1] || gm[2] != grid[2]) {
        fprintf(stderr, "test_fullsize: mbpo's grid %d x %d x %d differs from the reference's\n", gm[0], gm[1], gm[2]);
        return 1;
    }
    {
        double d = max_abs_diff(pv_mbpo, pv, P * pix), db = max_abs_diff(pv_black_mbpo, pv_black, P * pix);
        check(d <= 1e-5, "pixel_values (mbpo_image_preprocess) vs transformers: max |diff| %.3g (tol 1e-5)", d);
        check(db <= 1e-5, "black pixel_values vs transformers: max |diff| %.3g (tol 1e-5)", db);
    }

    /* ---------------------------------------------------------------- forward with the image */
    memset(&b, 0, sizeof b);
    offs[0] = 0; offs[1] = S;
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target;
    b.n_images = 1; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = roffs;
    t0 = mbpo_now();
    if (!mbpo_model_plan_on(&m, device, S, P, N, 0)) die("plan");
    printf("  device: %s\n", mbpo_device_name(device));
    if (mbpo_model_forward(&m, &b, lp) != N) die("forward");
    t_fwd = mbpo_now() - t0;
    t0 = mbpo_now();
    for (t = 0; t < S; t++) {
        const float *r = ref + t * V;
        double d, mg, l;
        if (!mbpo_model_logits(&m, t, row)) die("logits");
        d = max_abs_diff(row, r, V);
        if (!(d <= dmax)) dmax = d;
        l = fabs(row_logsumexp(row, V) - (double)ref_lse[t]);
        if (!(l <= lse_max)) lse_max = l;
        if (t + 1 < S && target[t + 1]) lp_rows[n_lp++] = (float)((double)row[ids[t + 1]] - row_logsumexp(row, V));
        if (row_argmax(row, V, NULL) == row_argmax(r, V, &mg)) n_argmax++;
        else if (mg <= 2 * tol) n_near++;
        else if (t - n_argmax - n_near < 5)   /* the first few */
            printf("  !!  row %lld: argmax %lld (mbpo) vs %lld (transformers), reference margin %.4g\n", (long long)t,
                   (long long)row_argmax(row, V, NULL), (long long)row_argmax(r, V, NULL), mg);
    }
    t_logits = mbpo_now() - t0;
    mx_lp = max_abs_diff(lp, ref_lp, N);
    printf("  forward: %.1f s (plan %.0f MB), logits of %lld rows %.1f s, peak RSS %.2f GB\n", t_fwd,
           (double)mbpo_model_plan_bytes(&m) / 1e6, (long long)S, t_logits, peak_rss_gb());
    check(dmax <= tol, "logits: max |diff| %.4g, max |ref| %.4g", dmax, ref_max);
    printf("        relative %.3g (max |diff| / max |ref|); tolerance 5e-5 * max(1, max |ref|) = %.4g\n", dmax / ref_max, tol);
    check(n_argmax + n_near == S, "argmax agrees on %lld of %lld rows", (long long)n_argmax, (long long)S);
    if (n_near) printf("        (%lld rows differ at a near-tie of the reference, within %.3g)\n", (long long)n_near, 2 * tol);
    check(lse_max <= tol, "logsumexp: max |diff| %.4g (tol %.4g)", lse_max, tol);
    check(mx_lp <= 2 * tol, "response logp: max |diff| %.4g (tol %.4g)", mx_lp, 2 * tol);
    /* how much of that is the forward's own log-softmax (float sums over V) rather than the logits */
    printf("        logp from mbpo's logits rows (double logsumexp) vs transformers: max |diff| %.4g; vs mbpo's forward %.4g\n",
           max_abs_diff(lp_rows, ref_lp, N), max_abs_diff(lp_rows, lp, N));

    /* ---------------------------------------------------------------- IIG */
    t0 = mbpo_now();
    if (!mbpo_iig(&m, &b, pv_black_mbpo, &iig_sum, &iig_mean, lp2, lpb)) die("mbpo_iig");
    t_iig = mbpo_now() - t0;
    mx_lpb = max_abs_diff(lpb, ref_lpb, N);
    printf("  iig: %.1f s (two forwards); sum mbpo %.6f transformers %.6f, mean mbpo %.6f transformers %.6f\n", t_iig,
           iig_sum, (double)ref_iig_sum[0], iig_mean, (double)ref_iig_mean[0]);
    check(max_abs_diff(lp2, lp, N) == 0, "iig's image pass repeats the forward bit for bit: max |diff| %.3g",
          max_abs_diff(lp2, lp, N));
    check(mx_lpb <= 2 * tol, "black-image logp: max |diff| %.4g (tol %.4g)", mx_lpb, 2 * tol);
    check(fabs(iig_sum - ref_iig_sum[0]) <= 4 * tol * (double)N, "IIG sum: |diff| %.4g (tol %.4g)",
          fabs(iig_sum - ref_iig_sum[0]), 4 * tol * (double)N);
    check(fabs(iig_mean - ref_iig_mean[0]) <= 4 * tol, "IIG mean: |diff| %.4g (tol %.4g)", fabs(iig_mean - ref_iig_mean[0]), 4 * tol);

    /* ---------------------------------------------------------------- greedy */
    t0 = mbpo_now();
    offs[1] = prompt_len;   /* the prompt: the same batch cut before the response */
    memset(&go, 0, sizeof go);
    go.max_new_tokens = N_NEW; go.temperature = 0; go.top_k = 0; go.top_p = 1.0; go.stop_ids = NULL; go.n_stop = 0;
    mbpo_rng_seed(&rng, 1);   /* unused at temperature 0 */
    if (!mbpo_kv_init(&kv, &m, 1, prompt_len + N_NEW)) die("kv init");
    if (!mbpo_generate(&m, &kv, &b, &go, &rng, out_ids, &out_len)) die("generate");
    t_gen = mbpo_now() - t0;
    mbpo_kv_free(&kv);
    /* the cache path step by step, fed transformers' tokens (so it is comparable even where the
       two greedy runs part): prefill, then 7 decode steps, each kv->logits vs generate's */
    t0 = mbpo_now();
    if (!mbpo_kv_init(&kv, &m, 1, prompt_len + N_NEW)) die("kv init");
    if (!mbpo_kv_prefill(&m, &kv, &b)) die("kv prefill");
    for (i = 0; i < N_NEW; i++) {
        double d;
        if (i > 0) {
            int32_t tok = (int32_t)greedy64[i - 1];
            if (!mbpo_kv_decode(&m, &kv, &tok)) die("kv decode");
        }
        d = max_abs_diff(kv.logits, ref_glog + i * V, V);
        if (!(d <= dmax_dec)) dmax_dec = d;
    }
    mbpo_kv_free(&kv);
    t_dec = mbpo_now() - t0;
    printf("  greedy: %.1f s; teacher-forced prefill + %d decode steps %.1f s\n", t_gen, N_NEW - 1, t_dec);
    check(dmax_dec <= tol, "decode logits (prefill + KV-cache steps) vs generate's: max |diff| %.4g (tol %.4g)", dmax_dec, tol);
    printf("        mbpo        ");
    for (i = 0; i < out_len; i++) printf(" %d", out_ids[i]);
    printf("\n        transformers");
    for (i = 0; i < N_NEW; i++) printf(" %lld", (long long)greedy64[i]);
    printf("\n        ref margins ");
    for (i = 0; i < N_NEW; i++) printf(" %.3g", margin[i]);
    printf("\n");
    for (i = 0; i < N_NEW; i++)
        if (i >= out_len || out_ids[i] != greedy64[i]) { first_bad = (int)i; break; }
    if (first_bad >= 0 && margin[first_bad] <= 2 * tol)
        printf("  ok  greedy tokens: first difference at step %d, a near-tie of the reference (margin %.3g <= %.3g)\n",
               first_bad, margin[first_bad], 2 * tol);
    else
        check(first_bad < 0 && out_len == N_NEW, "greedy tokens: %d of %d equal (exact match required)",
              first_bad < 0 ? N_NEW : first_bad, N_NEW);

    printf("  times: load %.1f s, preprocess %.2f s, forward %.1f s, logits %.1f s, iig %.1f s, greedy %.1f s, decode check %.1f s, "
           "total %.1f s; peak RSS %.2f GB\n", t_load, t_pre, t_fwd, t_logits, t_iig, t_gen, t_dec, mbpo_now() - t_all, peak_rss_gb());
    printf("test_fullsize: %s\n", n_failed ? "FAILED" : "passed");

    mbpo_free(pv_mbpo); mbpo_free(pv_black_mbpo);
    mbpo_image_free(&img); mbpo_image_free(&black);
    free(ids64); free(target64); free(grid64); free(rgb64); free(greedy64); free(pv); free(pv_black); free(ref);
    free(ref_lse); free(ref_lp); free(ref_lpb); free(ref_iig_sum); free(ref_iig_mean); free(margin); free(ref_glog);
    free(ids); free(target); free(row); free(lp); free(lp2); free(lpb); free(lp_rows);
    mbpo_st_close(&st);
    mbpo_model_free(&m);
    return n_failed ? 1 : 0;
}
