/* mbpo-bench: time the Qwen2-VL forward (and backward) of mbpo on one input, or the
   tokenizer on a text file. The input files are what tests/reference/bench_torch.py and
   bench_tokenizer.py write, so both sides run the same weights, tokens, pixels and text.
   --gpu-bench: the model benchmark on a GPU (Qwen2-VL-2B from --config, random weights, a
   packed batch), whose transformers side is tests/reference/bench_hf.py. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef MBPO_CUDA
#include <cuda_runtime.h>
#endif

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

/* ---- the memory table (--memory): mbpo-train's own memory plan (mbpo_train_mem_plan) for full
   MBPO on a GPU at each config, with the moments on the device, streamed from the host, and
   streamed with activation recomputation, against the nominal memory of an 80 GB (H100) and a
   141 GB (H200) card. A markdown table. */
static int memory_table(char *list, const char *worlds, int batch, int G, int max_new, int plan_image, int plan_text) {
    const double GB = 1e9, cards[2] = { 80e9, 141e9 };
    char *path, *save = NULL;
    static const char *const opts[3] = { "-", "`--moments host`", "`--moments host --recompute`" };
    int world[16], n_world = 0, wi;
    {   /* --world 1,2,4,8: per GPU at each world size (data parallel over NCCL: ZeRO-1 shards) */
        const char *q = worlds;
        while (*q && n_world < 16) {
            char *e;
            long w = strtol(q, &e, 10);
            if (e == q || w < 1 || w > 4096 || (*e && *e != ',')) {
                fprintf(stderr, "mbpo-bench: --world %s: want a comma-separated list of world sizes in [1, 4096]\n", worlds);
                return 2;
            }
            world[n_world++] = (int)w;
            q = *e ? e + 1 : e;
        }
    }
    printf("| model | %soptions | weights | master | moments | gradients | reference | activations | KV cache | total GB | "
           "80 GB | 141 GB | host GB |\n|---|%s---|---|---|---|---|---|---|---|---|---|---|---|\n", n_world > 1 ? "ranks | " : "",
           n_world > 1 ? "---|" : "");
    for (path = strtok_r(list, ",", &save); path; path = strtok_r(NULL, ",", &save)) {
        mbpo_config cfg;
        mbpo_preproc pp;
        char name[128];
        const char *slash = strrchr(path, '/'), *dir = path;
        int k, c;
        if (!mbpo_config_load(&cfg, path)) { fprintf(stderr, "mbpo-bench: --memory: %s\n", mbpo_failure_reason()); return 1; }
        if (slash) {   /* the folder's name: .../Qwen2-VL-7B-Instruct/config.json */
            const char *q = slash;
            while (q > path && q[-1] != '/') q--;
            dir = q;
            if (q == slash) dir = path;
        }
        snprintf(name, sizeof name, "%.*s", slash && dir != path ? (int)(slash - dir) : (int)strlen(path), dir);
        mbpo_preproc_default(&pp);
        for (wi = 0; wi < n_world; wi++)
        for (k = 0; k < 3; k++) {
            mbpo_train_opts o;
            mbpo_mem_shape sh;
            mbpo_mem_plan p;
            mbpo_train_defaults(&o);
            o.device = MBPO_DEVICE_CUDA; o.batch = batch; o.G = G; o.max_new_tokens = max_new;
            o.plan_image = plan_image; o.plan_text = plan_text; o.stream_moments = k > 0; o.recompute = k == 2;
            if (!mbpo_train_mem_plan(&cfg, &pp, &o, &sh, &p)) { fprintf(stderr, "mbpo-bench: --memory: %s\n", mbpo_failure_reason()); return 1; }
            if (world[wi] > 1) {   /* one rank's share, as mbpo_train plans it over NCCL */
                sh.dp_world = world[wi];
                if (!mbpo_mem_plan_make(&cfg, &sh, &p)) { fprintf(stderr, "mbpo-bench: --memory: %s\n", mbpo_failure_reason()); return 1; }
            }
            printf("| %s |", name);
            if (n_world > 1) printf(" %d |", world[wi]);
            printf(" %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | **%.1f** |", opts[k],
                   p.weights / GB, p.master / GB, p.moments / GB, p.grads / GB, p.reference / GB, p.activations / GB,
                   p.kv_cache / GB, p.total / GB);
            for (c = 0; c < 2; c++) printf(" %s |", p.total <= cards[c] ? "fits" : "no");
            printf(" %.1f |\n", p.host / GB);
            if (k == 1 && wi == 0 && path == list)
                fprintf(stderr, "mbpo-bench: --memory: micro-batch of %d prompt(s) x G %d: %lld tokens, %lld patches, %lld targets "
                                "(images %dx%d, %d text + %d new tokens), bf16 weights\n",
                        batch, G, (long long)sh.tokens, (long long)sh.patches, (long long)sh.targets, plan_image, plan_image,
                        plan_text, max_new);
        }
    }
    return 0;
}

/* ---- the GPU model benchmark (--gpu-bench)

   Device work is asynchronous: every timed region ends with dev_sync() (cudaDeviceSynchronize
   in a CUDA build) before the host clock is read; each phase is warmed up, then the median
   of its timed iterations is reported. */
static void dev_sync(void) {
#ifdef MBPO_CUDA
    (void)cudaDeviceSynchronize();
#endif
}
/* bytes of device memory in use now (total - free), or 0 in a CPU build */
static double dev_used(void) {
#ifdef MBPO_CUDA
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) == cudaSuccess) return (double)(total - free_b);
#endif
    return 0;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}
#define GB_TRY(x) do { if (!(x)) { fprintf(stderr, "mbpo-bench: --gpu-bench: %s\n", mbpo_failure_reason()); return 1; } } while (0)
#define GB_MAXT 64

/* The ceilings, measured in this run through the op table (METHOD.md: measure, don't quote):
   a bf16 (x) GEMM out (n,n) = a (n,n) b (n,n)^T through matmul_forward, 2 n^3 FLOP per call,
   on random data; a device-to-device copy of `bytes` through copy, counted as 2 x bytes moved
   (read + write). */
static int measure_ceilings(const mbpo_ops *ops, int64_t n, size_t copy_bytes, int iters, double *flops, double *bw) {
    mbpo_backend *be = NULL;
    void *a = NULL, *b = NULL, *c = NULL;
    float *h = NULL;
    double t[GB_MAXT];
    int i, ok = 0;
    mbpo_rng rng;
    size_t xb = (size_t)(n * n) * ops->x_size, k;
    if (iters > GB_MAXT) iters = GB_MAXT;
    if (!ops->create(&be, 1)) return 0;
    h = (float *)malloc((size_t)(n * n) * sizeof(float));
    if (!h) { mbpo_failure_set("out of memory for the GEMM inputs"); goto done; }
    mbpo_rng_seed(&rng, 424242);
    for (k = 0; k < (size_t)(n * n); k++) h[k] = (float)(mbpo_rng_uniform(&rng) * 2 - 1);
    if (!ops->alloc(be, &a, xb, "GEMM a") || !ops->alloc(be, &b, xb, "GEMM b") || !ops->alloc(be, &c, xb, "GEMM out") ||
        !ops->x_upload(be, (mbpo_x *)a, h, n * n) || !ops->x_upload(be, (mbpo_x *)b, h, n * n)) goto done;
    for (i = 0; i < 2 + iters; i++) {
        double t0;
        dev_sync();
        t0 = mbpo_now();
        if (!ops->matmul_forward(be, (mbpo_x *)c, (const mbpo_x *)a, (const mbpo_x *)b, NULL, n, n, n)) goto done;
        dev_sync();
        if (i >= 2) t[i - 2] = mbpo_now() - t0;
    }
    *flops = 2.0 * (double)n * (double)n * (double)n / median(t, iters);
    ops->release(be, a); ops->release(be, b); ops->release(be, c);
    a = b = c = NULL;
    if (!ops->alloc(be, &a, copy_bytes, "copy src") || !ops->alloc(be, &b, copy_bytes, "copy dst")) goto done;
    for (k = 0; k < copy_bytes; k += xb < copy_bytes - k ? xb : copy_bytes - k)   /* random bytes, not zeros */
        if (!ops->upload(be, (char *)a + k, h, xb < copy_bytes - k ? xb : copy_bytes - k)) goto done;
    for (i = 0; i < 2 + iters; i++) {
        double t0;
        dev_sync();
        t0 = mbpo_now();
        if (!ops->copy(be, b, a, copy_bytes)) goto done;
        dev_sync();
        if (i >= 2) t[i - 2] = mbpo_now() - t0;
    }
    *bw = 2.0 * (double)copy_bytes / median(t, iters);
    ok = 1;
done:
    if (a) ops->release(be, a);
    if (b) ops->release(be, b);
    if (c) ops->release(be, c);
    ops->destroy(be);
    free(h);
    return ok;
}

/* FLOP of one forward of the batch, by the formula (GEMMs 2 x MACs; attention 4 L^2 D per
   segment and layer, halved when causal; the LM head at the target rows only, as mbpo
   computes it). Returns the GEMM part in *gemm and the attention part in *attn. */
static void forward_flops(const mbpo_config *c, int64_t n_seqs, const int64_t *seq_len, int64_t n_images, int64_t patches_per_image,
                          int64_t targets, double *gemm, double *attn) {
    double E = (double)c->v_embed_dim, F = (double)c->v_mlp_hidden, PIX = (double)mbpo_config_pix(c), H = (double)c->hidden_size;
    double QD = (double)(c->n_heads * c->head_dim), KD = (double)(c->n_kv_heads * c->head_dim), I = (double)c->intermediate_size;
    double mm = (double)(c->v_merge * c->v_merge), P = (double)(n_images * patches_per_image), T = 0, L = (double)patches_per_image;
    int64_t s;
    for (s = 0; s < n_seqs; s++) T += (double)seq_len[s];
    *gemm = P * 2 * PIX * E                                                   /* patch embedding */
          + (double)c->v_depth * P * 2 * (E * 3 * E + E * E + (c->arch == MBPO_ARCH_QWEN2_5_VL ? 3 : 2) * E * F)   /* blocks */
          + P / mm * 2 * (mm * E * mm * E + mm * E * H)                        /* merger */
          + (double)c->n_layers * T * 2 * (H * QD + 2 * H * KD + QD * H + 3 * H * I)
          + (double)targets * 2 * H * (double)c->vocab_size;                   /* the head */
    *attn = (double)c->v_depth * (double)n_images * 4 * L * L * E;
    if (c->arch == MBPO_ARCH_QWEN2_5_VL) {   /* windowed blocks attend within windows of a square grid image */
        int32_t g = (int32_t)(sqrt((double)patches_per_image) + 0.5), thw[3];
        int64_t units = patches_per_image / (c->v_merge * c->v_merge), *perm = (int64_t *)calloc((size_t)units + 1, 8);
        int64_t *cu = (int64_t *)calloc((size_t)units + 2, 8), n_win, w, l;
        double win = 0;
        thw[0] = 1; thw[1] = g; thw[2] = g;
        n_win = perm && cu ? mbpo_window_index(c, thw, 1, perm, cu) : 0;
        for (w = 0; w < n_win; w++) win += (double)(cu[w + 1] - cu[w]) * (double)(cu[w + 1] - cu[w]);
        *attn = 0;
        for (l = 0; l < c->v_depth; l++) *attn += (double)n_images * 4 * (mbpo__vblock_full(c, l) ? L * L : win) * E;
        free(perm); free(cu);
    }
    for (s = 0; s < n_seqs; s++) *attn += (double)c->n_layers * 2 * (double)seq_len[s] * (double)seq_len[s] * QD;
}

static int gpu_bench(const char *config_path, mbpo_device dev, int n_seqs, int grid, int text, int iters, int warmup,
                     int G, int decode_steps, int64_t gemm_n, uint64_t seed) {
    mbpo_config cfg;
    mbpo_model m;
    mbpo_batch b, b1;
    mbpo_kv kv;
    const mbpo_ops *ops;
    int32_t *ids, *grids, *refs, tok[256];
    uint8_t *target;
    int64_t *seq_off, *ref_off, *seq_len, T, P, N = 0, S, s, k, n_img_tok, pix, lm_params = 0, id_hi, ref_off1[2] = { 0, 1 };
    int64_t seq_off1[2];
    float *pv, *logp, *dlogp, *dpix;
    double gemm_rate = 0, bw = 0, f_gemm, f_attn, t[GB_MAXT], base_mem, mem_fwd, mem_fwd_bwd, mem_decode, t_fwd, t_fb, t_pgd;
    double t_prefill, t_dec, kv_bytes, w_bytes;
    char devname[256] = "cpu";
    mbpo_rng rng;
    size_t p;
    int i;
    if (iters > GB_MAXT) iters = GB_MAXT;
    if (G > 256) G = 256;
    if (!mbpo_device_available(dev) || !(ops = mbpo__device_ops(dev))) {
        fprintf(stderr, "mbpo-bench: --gpu-bench --device %s: %s\n", mbpo_device_name(dev), mbpo_failure_reason());
        return 1;
    }
#ifdef MBPO_CUDA
    if (dev == MBPO_DEVICE_CUDA) {
        size_t mem = 0;
        int sms = 0;
        if (!mbpo__cuda_device_info(devname, sizeof devname, &mem, &sms)) snprintf(devname, sizeof devname, "cuda (unknown)");
    }
#endif
    for (i = 0; devname[i]; i++) if (devname[i] == ' ') devname[i] = '_';   /* one field of `mbpo <name> <value> <unit>` */
    GB_TRY(mbpo_config_load(&cfg, config_path));
    /* the ceilings first, on an empty device */
    GB_TRY(measure_ceilings(ops, gemm_n, (size_t)1 << 30, iters > 10 ? iters : 10, &gemm_rate, &bw));
    printf("mbpo device %s -\n", devname);
    printf("mbpo-bench: %s\n", mbpo_build_info());
    printf("mbpo gemm_tflops %.1f TFLOP/s (%s matmul_forward %lldx%lldx%lld, random data)\n", gemm_rate / 1e12,
           ops->x_size == 2 ? "bf16" : "fp32", (long long)gemm_n, (long long)gemm_n, (long long)gemm_n);
    printf("mbpo copy_gbs %.0f GB/s (1 GiB device-to-device copy, read + write)\n", bw / 1e9);
    fflush(stdout);
    base_mem = dev_used();
    GB_TRY(mbpo_model_init(&m, &cfg));
    mbpo_model_randomize(&m, seed);
    mbpo_model_params_changed(&m);
    /* the batch: n_seqs sequences of text/2 tokens, <vs>, one image's tokens, <ve>, text - text/2
       tokens; each its own image (1 x grid x grid patches); targets: the text after the first token */
    pix = mbpo_config_pix(&cfg);
    n_img_tok = (int64_t)grid * grid / (cfg.v_merge * cfg.v_merge);
    S = text + 2 + n_img_tok;
    T = S * n_seqs;
    P = (int64_t)n_seqs * grid * grid;
    id_hi = cfg.vocab_size;   /* random text below every special id */
    if (cfg.image_token_id < id_hi) id_hi = cfg.image_token_id;
    if (cfg.video_token_id < id_hi) id_hi = cfg.video_token_id;
    if (cfg.vision_start_token_id < id_hi) id_hi = cfg.vision_start_token_id;
    if (cfg.vision_end_token_id < id_hi) id_hi = cfg.vision_end_token_id;
    if (cfg.vocab_size > 151643 && id_hi > 151643) id_hi = 151643;
    ids = (int32_t *)calloc((size_t)T, 4); target = (uint8_t *)calloc((size_t)T, 1);
    grids = (int32_t *)calloc((size_t)(3 * n_seqs), 4); refs = (int32_t *)calloc((size_t)n_seqs, 4);
    seq_off = (int64_t *)calloc((size_t)n_seqs + 1, 8); ref_off = (int64_t *)calloc((size_t)n_seqs + 1, 8);
    seq_len = (int64_t *)calloc((size_t)n_seqs, 8);
    pv = (float *)malloc((size_t)(P * pix) * sizeof(float));
    GB_TRY(ids && target && grids && refs && seq_off && ref_off && seq_len && pv);
    mbpo_rng_seed(&rng, seed + 1);
    for (s = 0; s < n_seqs; s++) {
        int64_t o = s * S, h = text / 2;
        for (k = 0; k < S; k++) {
            int64_t at = o + k;
            if (k == h) ids[at] = (int32_t)cfg.vision_start_token_id;
            else if (k > h && k <= h + n_img_tok) ids[at] = (int32_t)cfg.image_token_id;
            else if (k == h + n_img_tok + 1) ids[at] = (int32_t)cfg.vision_end_token_id;
            else { ids[at] = (int32_t)(3 + mbpo_rng_u64(&rng) % (uint64_t)(id_hi - 3)); target[at] = k > 0; N += k > 0; }
        }
        grids[3 * s] = 1; grids[3 * s + 1] = grid; grids[3 * s + 2] = grid;
        refs[s] = (int32_t)s; seq_off[s + 1] = o + S; ref_off[s + 1] = s + 1; seq_len[s] = S;
    }
    for (k = 0; k < P * pix; k++) pv[k] = (float)mbpo_rng_normal(&rng);
    memset(&b, 0, sizeof b);
    b.n_seqs = n_seqs; b.ids = ids; b.seq_offsets = seq_off; b.target = target; b.n_images = n_seqs; b.grid_thw = grids;
    b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_off;
    logp = (float *)calloc((size_t)N + 1, sizeof(float)); dlogp = (float *)calloc((size_t)N + 1, sizeof(float));
    dpix = (float *)malloc((size_t)(P * pix) * sizeof(float));
    GB_TRY(logp && dlogp && dpix);
    for (k = 0; k < N; k++) dlogp[k] = -1.0f / (float)N;
    forward_flops(&cfg, n_seqs, seq_len, n_seqs, (int64_t)grid * grid, N, &f_gemm, &f_attn);
    printf("mbpo params %lld -\n", (long long)m.table.n_params);
    printf("mbpo tokens %lld tokens (%d sequences x %lld: %d text + 2 + %lld image tokens)\n", (long long)T, n_seqs,
           (long long)S, text, (long long)n_img_tok);
    printf("mbpo patches %lld patches (%d images, grid 1x%dx%d)\n", (long long)P, n_seqs, grid, grid);
    printf("mbpo targets %lld -\n", (long long)N);
    printf("mbpo forward_gflop %.1f GFLOP (GEMMs %.1f: 2 x MACs, head at targets only; attention %.1f: 4 L^2 D, causal halved)\n",
           (f_gemm + f_attn) / 1e9, f_gemm / 1e9, f_attn / 1e9);
    fflush(stdout);

    /* 1. without gradients: forward, one PGD iteration (dpixel only), decode */
    GB_TRY(mbpo_model_plan_on(&m, dev, T, P, N, 0));
    for (i = 0; i < warmup + iters; i++) {
        double t0;
        dev_sync();
        t0 = mbpo_now();
        GB_TRY(mbpo_model_forward(&m, &b, logp) == N);
        dev_sync();
        if (i >= warmup) t[i - warmup] = mbpo_now() - t0;
    }
    t_fwd = median(t, iters);
    mem_fwd = dev_used() - base_mem;
    printf("mbpo forward_ms %.2f ms\n", t_fwd * 1e3);
    printf("mbpo forward_tok_s %.1f tok/s\n", (double)T / t_fwd);
    printf("mbpo forward_mfu %.1f %%\n", 100.0 * (f_gemm + f_attn) / t_fwd / gemm_rate);
    fflush(stdout);
    /* PGD: forward + backward to pixel_values (downloaded to the host, as mbpo_pgd uses it);
       FLOP: forward + the activation-gradient GEMMs (1x the forward's) + attention backward (2x) */
    for (i = 0; i < warmup + iters; i++) {
        double t0;
        dev_sync();
        t0 = mbpo_now();
        GB_TRY(mbpo_model_forward(&m, &b, logp) == N);
        GB_TRY(mbpo_model_backward(&m, &b, dlogp, dpix));
        dev_sync();
        if (i >= warmup) t[i - warmup] = mbpo_now() - t0;
    }
    t_pgd = median(t, iters);
    printf("mbpo pgd_ms %.2f ms\n", t_pgd * 1e3);
    printf("mbpo pgd_mfu %.1f %%\n", 100.0 * (2 * f_gemm + 3 * f_attn) / t_pgd / gemm_rate);
    printf("mbpo peak_mem_pgd %.2f GiB\n", (dev_used() - base_mem) / 1073741824.0);
    fflush(stdout);
    /* decode: prefill the first sequence once, G continuations, one step = G new tokens */
    seq_off1[0] = 0; seq_off1[1] = S;
    b1 = b; b1.n_seqs = 1; b1.seq_offsets = seq_off1; b1.n_images = 1; b1.image_ref_offsets = ref_off1;
    memset(&kv, 0, sizeof kv);
    GB_TRY(mbpo_kv_init(&kv, &m, G, S + warmup + decode_steps + 1));
    dev_sync();
    {
        double t0 = mbpo_now();
        GB_TRY(mbpo_kv_prefill(&m, &kv, &b1));
        dev_sync();
        t_prefill = mbpo_now() - t0;
    }
    for (i = 0; i < warmup + decode_steps && i < warmup + GB_MAXT; i++) {
        double t0;
        int g;
        for (g = 0; g < G; g++) tok[g] = (int32_t)(3 + (1000 + g * 7 + i * 13) % (id_hi - 3));
        dev_sync();
        t0 = mbpo_now();
        GB_TRY(mbpo_kv_decode(&m, &kv, tok));
        dev_sync();
        if (i >= warmup) t[i - warmup] = mbpo_now() - t0;
    }
    t_dec = median(t, (decode_steps < GB_MAXT ? decode_steps : GB_MAXT));
    mem_decode = dev_used() - base_mem;
    /* the weight-streaming bound: one step reads every LM weight once (the head; the token
       table only when it is the head) and the cache, at the measured copy rate */
    for (p = 0; p < m.table.n; p++) {
        const char *nm = m.table.info[p].name;
        if (!strncmp(nm, "visual.", 7)) continue;
        if (strstr(nm, "embed_tokens") && !cfg.tie_word_embeddings) continue;
        lm_params += m.table.info[p].numel;
    }
    w_bytes = (double)lm_params * (double)ops->x_size;
    kv_bytes = 2.0 * (double)cfg.n_layers * G * (double)(S + warmup + decode_steps / 2) * (double)(cfg.n_kv_heads * cfg.head_dim) * (double)ops->x_size;
    printf("mbpo prefill_ms %.2f ms (%lld tokens)\n", t_prefill * 1e3, (long long)S);
    printf("mbpo decode_step_ms %.3f ms (G=%d, median of %d steps)\n", t_dec * 1e3, G, decode_steps);
    printf("mbpo decode_tok_s %.1f tok/s\n", G / t_dec);
    printf("mbpo decode_bound_ms %.3f ms (%.2f GB of LM weights + %.3f GB of cache at %.0f GB/s)\n",
           (w_bytes + kv_bytes) / bw * 1e3, w_bytes / 1e9, kv_bytes / 1e9, bw / 1e9);
    printf("mbpo decode_vs_bound %.2f x\n", t_dec / ((w_bytes + kv_bytes) / bw));
    printf("mbpo peak_mem_decode %.2f GiB\n", mem_decode / 1073741824.0);
    {   /* the rollout engine: mbpo_generate's whole loop at T = 1 without stop ids (every step
           runs), the decode step replayed as a graph, then with every op launched; per step =
           (the call - one prefill) / the steps after the first */
        mbpo_gen_opts go;
        mbpo_rng rng;
        int32_t *ids = (int32_t *)malloc((size_t)(G * (decode_steps + 1)) * sizeof(int32_t));
        int *lens = (int *)malloc((size_t)G * sizeof(int)), r, graph_steps = 0;
        double tg[2] = { 0, 0 };
        GB_TRY(ids && lens);
        memset(&go, 0, sizeof go);
        go.max_new_tokens = decode_steps + 1; go.temperature = 1.0; go.top_p = 1;
        for (r = 0; r < 2; r++) {
            int w;
            kv.no_graphs = r;
            for (w = 0; w < 2; w++) {   /* the first call captures the graph */
                double t0;
                mbpo_rng_seed(&rng, 11);
                dev_sync();
                t0 = mbpo_now();
                GB_TRY(mbpo_generate(&m, &kv, &b1, &go, &rng, ids, lens));
                dev_sync();
                tg[r] = (mbpo_now() - t0 - t_prefill) / decode_steps;
                if (r == 0) graph_steps = kv.graph_steps;
            }
        }
        printf("mbpo generate_step_ms %.3f ms (G=%d, T 1, mbpo_generate: %d of %d decode steps replayed as a graph)\n",
               tg[0] * 1e3, G, graph_steps, decode_steps);
        printf("mbpo generate_step_ms_ops %.3f ms (the same, every op launched)\n", tg[1] * 1e3);
        printf("mbpo generate_tok_s %.1f tok/s\n", G / tg[0]);
        printf("mbpo generate_vs_bound %.2f x\n", tg[0] / ((w_bytes + kv_bytes) / bw));
        free(ids); free(lens);
    }
    printf("mbpo peak_mem_forward %.2f GiB (plan %.2f GiB of activations)\n", mem_fwd / 1073741824.0,
           (double)mbpo_model_plan_bytes(&m) / 1073741824.0);
    fflush(stdout);
    mbpo_kv_free(&kv);

    /* 2. with parameter gradients: forward + backward (the gradients stay on the device) */
    GB_TRY(mbpo_model_plan_on(&m, dev, T, P, N, 1));
    for (i = 0; i < warmup + iters; i++) {
        double t0;
        dev_sync();
        t0 = mbpo_now();
        mbpo_model_zero_grad(&m);
        GB_TRY(mbpo_model_forward(&m, &b, logp) == N);
        GB_TRY(mbpo_model_backward(&m, &b, dlogp, NULL));
        dev_sync();
        if (i >= warmup) t[i - warmup] = mbpo_now() - t0;
    }
    t_fb = median(t, iters);
    mem_fwd_bwd = dev_used() - base_mem;
    printf("mbpo fwd_bwd_ms %.2f ms\n", t_fb * 1e3);
    printf("mbpo fwd_bwd_tok_s %.1f tok/s\n", (double)T / t_fb);
    printf("mbpo fwd_bwd_mfu %.1f %% (3 x forward FLOP)\n", 100.0 * 3 * (f_gemm + f_attn) / t_fb / gemm_rate);
    printf("mbpo peak_mem_fwd_bwd %.2f GiB (fp32 gradients; cudaMemGetInfo used - before the model)\n", mem_fwd_bwd / 1073741824.0);
    {
        double loss = 0;
        for (k = 0; k < N; k++) loss -= logp[k];
        printf("mbpo loss %.6f - (random weights: a sanity value, finite)\n", loss / (double)N);
        if (!isfinite(loss)) { fprintf(stderr, "mbpo-bench: --gpu-bench: the loss is not finite\n"); return 1; }
    }
    free(ids); free(target); free(grids); free(refs); free(seq_off); free(ref_off); free(seq_len); free(pv);
    free(logp); free(dlogp); free(dpix);
    mbpo_model_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *input = NULL, *tok_path = NULL, *text_path = NULL, *dump = NULL, *encode = NULL;
    const char *device_name = NULL, *config_path = "tests/reference/configs/qwen2vl_2b.json";
    int lines = 0, gpu_mode = 0, gb_seqs = 8, gb_grid = 32, gb_text = 200, gb_G = 8, gb_steps = 20;
    int mem_batch = 1, mem_new = 128;
    char *mem_list = NULL;
    const char *mem_world = "1";
    int64_t gb_gemm = 8192;
    mbpo_device dev = MBPO_DEVICE_CPU;
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
            { "--device", "D", MBPO_FLAG_STRING, &device_name, NULL,
              "cpu or cuda (default: cpu; cuda with --gpu-bench); cuda needs the build of make cuda" },
            { "--gpu-bench", NULL, MBPO_FLAG_SWITCH, &gpu_mode, NULL,
              "the GPU model benchmark: --config's model with random weights, a packed batch; forward,\n"
              "fwd+bwd, one PGD iteration, one decode step, peak memory; lines `mbpo <name> <value> <unit>`" },
            { "--config", "F", MBPO_FLAG_STRING, &config_path, NULL, "config.json of the --gpu-bench model" },
            { "--seqs", "N", MBPO_FLAG_INT, &gb_seqs, "[1, 256]", "--gpu-bench: sequences in the batch, one image each" },
            { "--grid", "N", MBPO_FLAG_INT, &gb_grid, "[2, 256]", "--gpu-bench: patches per image side (even; 32 = 448x448)" },
            { "--text-tokens", "N", MBPO_FLAG_INT, &gb_text, "[2, 100000]", "--gpu-bench: text tokens per sequence" },
            { "--G", "N", MBPO_FLAG_INT, &gb_G, "[1, 256]", "--gpu-bench: continuations decoded together" },
            { "--decode-steps", "N", MBPO_FLAG_INT, &gb_steps, "[1, 64]", "--gpu-bench: timed decode steps" },
            { "--gemm", "N", MBPO_FLAG_INT64, &gb_gemm, "[64, 32768]", "--gpu-bench: size of the GEMM that measures the ceiling" },
            { "--memory", "LIST", MBPO_FLAG_STRING, &mem_list, NULL,
              "no timing: the memory table of full MBPO on a GPU from mbpo-train's own plan, for each config.json\n"
              "of the comma-separated LIST (micro-batch: --mem-batch prompts x --G 8, 448x448, 64 + --max-new 128 tokens)" },
            { "--mem-batch", "N", MBPO_FLAG_INT, &mem_batch, "[1, 256]", "--memory: prompts per micro-batch" },
            { "--max-new", "N", MBPO_FLAG_INT, &mem_new, "[1, 100000]", "--memory: new tokens per rollout" },
            { "--world", "LIST", MBPO_FLAG_STRING, &mem_world, NULL,
              "--memory: world sizes (comma-separated; default 1): one GPU's share of data-parallel MBPO over NCCL" },
        };
        if (!mbpo_flags_handle("mbpo-bench", "--model DIR [--input FILE] [--iters 10] [--warmup 2] [--backward]\n"
                               "       mbpo-bench --tokenizer FILE --text FILE [--lines] [--iters 10] [--warmup 2]\n"
                               "       mbpo-bench --tokenizer FILE --encode FILE\n"
                               "       mbpo-bench --gpu-bench [--device cuda] [--config F] [--seqs 8] [--grid 32] [--text-tokens 200]",
                               flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    if (mem_list) return memory_table(mem_list, mem_world, mem_batch, gb_G, mem_new, 448, 64);
    if (device_name && !mbpo_device_parse(device_name, &dev)) { fprintf(stderr, "mbpo-bench: --device: %s\n", mbpo_failure_reason()); return 2; }
    if (gpu_mode) {
        if (gb_grid % 2) { fprintf(stderr, "mbpo-bench: --grid must be even (2x2 patches merge into one token)\n"); return 2; }
        return gpu_bench(config_path, device_name ? dev : MBPO_DEVICE_CUDA, gb_seqs, gb_grid, gb_text, iters, warmup, gb_G,
                         gb_steps, gb_gemm, 9001);
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
    TRY(mbpo_model_plan_on(&m, dev, S, P, N, backward));
    logp = (float *)calloc((size_t)N + 1, sizeof(float)); dlogp = (float *)calloc((size_t)N + 1, sizeof(float));
    for (s = 0; s < N; s++) dlogp[s] = -1.0f / (float)N;
    printf("mbpo-bench: %s on %s, %lld parameters, %lld tokens, %lld patches, %lld targets, %d threads, "
           "activations %.1f MB\n", model_dir, mbpo_device_name(dev), (long long)m.table.n_params, (long long)S, (long long)P, (long long)N,
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
        dev_sync();   /* a GPU backward returns before the device is done */
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
