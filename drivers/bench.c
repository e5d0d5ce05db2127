/* mbpo-bench: time the Qwen2-VL forward (and backward) of mbpo on one input, or the
   tokenizer on a text file. The input files are what tests/reference/bench_torch.py and
   bench_tokenizer.py write, so both sides run the same weights, tokens, pixels and text.
   --gpu-bench: the model benchmark on a GPU (Qwen2-VL-2B from --config, random weights, a
   packed batch), whose transformers side is tests/reference/bench_hf.py.
   --gemm-bench: mbpo__gemm alone on a Linear's shapes against the FMA peak of this CPU
   (tests/reference/bench_torch.py --gemm-bench times torch.matmul on the same shapes).
   --burn: a competing CPU load for tests/bench/contention.sh (make bench-contention). */
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

/* ---- the GEMM micro-benchmark (--gemm-bench) and the FMA ceiling it is measured against

   The ceiling: every OpenMP thread runs FMA_CHAINS independent multiply-add chains on
   registers only (no loads or stores), in the widest vector this build has; enough chains
   to cover the FMA latency times the FMA ports of a core, so the loop is bound by FMA
   throughput alone. peak = all threads' FLOP (2 per lane per FMA) / the wall time. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define FMA_ISA "AVX-512F"
#define FMA_WIDTH 16
typedef __m512 fma_vec;
#define FMA_SET1(x) _mm512_set1_ps(x)
#define FMA_MADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FMA_STORE(p, v) _mm512_storeu_ps(p, v)   /* not _mm512_reduce_add_ps: g++ 12 warns inside it */
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FMA_ISA "AVX2+FMA"
#define FMA_WIDTH 8
typedef __m256 fma_vec;
#define FMA_SET1(x) _mm256_set1_ps(x)
#define FMA_MADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FMA_STORE(p, v) _mm256_storeu_ps(p, v)
#else
#define FMA_ISA "scalar"
#define FMA_WIDTH 1
typedef float fma_vec;
#define FMA_SET1(x) (x)
#define FMA_MADD(a, b, c) ((a) * (b) + (c))   /* one FMA with -ffp-contract=fast where the CPU has it */
#define FMA_STORE(p, v) (*(p) = (v))
#endif
static float fma_hsum(fma_vec v) {
    float t[FMA_WIDTH], s = 0;
    int i;
    FMA_STORE(t, v);
    for (i = 0; i < FMA_WIDTH; i++) s += t[i];
    return s;
}
#define FMA_CHAINS 12   /* >= 4 cycles latency x 2 ports on current x86 cores, and fits 16 AVX2 registers */
#define FMA_MAXT 1024

/* n rounds of FMA_CHAINS dependent-per-chain FMAs: acc = acc * b + c converges to c / (1 - b),
   so nothing overflows or goes subnormal however long it runs. Returns the sum of the chains
   so the compiler must compute them. */
static float fma_chains(int64_t n, float seed) {
    const fma_vec b = FMA_SET1(0.9999f), c = FMA_SET1(1e-4f);
    fma_vec a0 = FMA_SET1(seed), a1 = FMA_SET1(seed + 1), a2 = FMA_SET1(seed + 2), a3 = FMA_SET1(seed + 3);
    fma_vec a4 = FMA_SET1(seed + 4), a5 = FMA_SET1(seed + 5), a6 = FMA_SET1(seed + 6), a7 = FMA_SET1(seed + 7);
    fma_vec a8 = FMA_SET1(seed + 8), a9 = FMA_SET1(seed + 9), a10 = FMA_SET1(seed + 10), a11 = FMA_SET1(seed + 11);
    int64_t i;
    for (i = 0; i < n; i++) {
        a0 = FMA_MADD(a0, b, c); a1 = FMA_MADD(a1, b, c); a2 = FMA_MADD(a2, b, c); a3 = FMA_MADD(a3, b, c);
        a4 = FMA_MADD(a4, b, c); a5 = FMA_MADD(a5, b, c); a6 = FMA_MADD(a6, b, c); a7 = FMA_MADD(a7, b, c);
        a8 = FMA_MADD(a8, b, c); a9 = FMA_MADD(a9, b, c); a10 = FMA_MADD(a10, b, c); a11 = FMA_MADD(a11, b, c);
    }
    return fma_hsum(a0) + fma_hsum(a1) + fma_hsum(a2) + fma_hsum(a3) + fma_hsum(a4) + fma_hsum(a5) +
           fma_hsum(a6) + fma_hsum(a7) + fma_hsum(a8) + fma_hsum(a9) + fma_hsum(a10) + fma_hsum(a11);
}
static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
static volatile float fma_sink;   /* keeps the chains' results alive */
/* CPU seconds of the calling thread: unlike the wall clock it stops while another process
   has the core, so a busy machine does not lower the peak measured */
static double thread_cpu_s(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return mbpo_now();
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* n rounds on every thread at once: the wall seconds; best[t] = the highest FLOP per CPU
   second thread t has reached so far */
static double fma_run(int64_t n, double *best) {
    double t0 = mbpo_now(), flop = 2.0 * FMA_WIDTH * FMA_CHAINS * (double)n;
    float total = 0;
    MBPO__OMP("omp parallel reduction(+:total)")
    {
        double c0 = thread_cpu_s(), r;
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
        total += fma_chains(n, 1.0f + 0.01f * (float)t);
        r = flop / (thread_cpu_s() - c0);
        if (t < FMA_MAXT && r > best[t]) best[t] = r;
    }
    fma_sink = total;
    return mbpo_now() - t0;
}
/* The FMA peak of all threads: the sum over the threads of the best FLOP per CPU second each
   reached in 12 runs of about 0.05 s (what the cores do when they are ours: short runs and CPU
   time keep another job on the machine out of it, mostly). *wall: the best FLOP per wall
   second of all threads together, which such a job does lower. */
static double fma_peak(double *wall) {
    int64_t n = 1 << 12;
    double dt, best[FMA_MAXT], flop, sum = 0;
    int r, t, nt = n_threads() < FMA_MAXT ? n_threads() : FMA_MAXT;
    *wall = 0;
    for (t = 0; t < FMA_MAXT; t++) best[t] = 0;
    for (;;) {   /* calibrate on this thread's CPU time: wall time here would be the scheduler's */
        double c0 = thread_cpu_s();
        fma_sink = fma_chains(n, 1.0f);
        if ((dt = thread_cpu_s() - c0) >= 0.01) break;
        n *= 4;
    }
    n = (int64_t)((double)n * 0.05 / dt) + 1;
    flop = 2.0 * FMA_WIDTH * FMA_CHAINS * (double)n * (double)n_threads();
    for (t = 0; t < FMA_MAXT; t++) best[t] = 0;
    for (r = 0; r < 12; r++) {
        dt = fma_run(n, best);
        if (flop / dt > *wall) *wall = flop / dt;
    }
    for (t = 0; t < nt; t++) sum += best[t];
    return sum * (double)n_threads() / (double)nt;   /* past FMA_MAXT threads: their mean rate */
}
/* --burn S: the FMA loop on every thread for S seconds (0: until killed): a competing CPU
   load for tests/bench/contention.sh that never sleeps and touches no memory. */
static int burn(double seconds) {
    double end = mbpo_now() + seconds;
    fprintf(stderr, "mbpo-bench: --burn: %d threads of %s FMA chains for %s\n", n_threads(), FMA_ISA,
            seconds > 0 ? "the given seconds" : "ever (until killed)");
    MBPO__OMP("omp parallel")
    {
        float s = 0;
        while (seconds <= 0 || mbpo_now() < end) s += fma_chains(1 << 20, 1.0f);
        fma_sink = s;
    }
    return 0;
}

/* One Linear's three products, as mbpo__matmul_forward / _backward call mbpo__gemm:
     forward  out (M,N)  = inp (M,K) . W (N,K)^T        a_t 0, b_t 0
     dinp     dinp (M,K) += dout (M,N) . W (N,K)        a_t 0, b_t 1 (B = W read as (K', N') = (N, K))
     dweight  dW (N,K)   += dout^T (N,M) . inp (M,K)    a_t 1, b_t 1
   each 2 M K N FLOP. M = tokens (rows), K = in features, N = out features. */
typedef struct { char name[64]; int64_t M, K, N; } gemm_shape;
#define GEMM_DEFAULT_SHAPES "text.q_o:188,1536,1536;text.k_v:188,1536,256;text.gate_up:188,1536,8960;text.down:188,8960,1536;" \
                            "vision.qkv:616,1280,3840;vision.proj:616,1280,1280;vision.fc1:616,1280,5120;vision.fc2:616,5120,1280"
#define GEMM_MAX_SHAPES 64
#define GEMM_MAX_REPS 64
static int parse_shapes(const char *s, gemm_shape *out, int *n) {
    *n = 0;
    while (*s) {
        const char *colon = strchr(s, ':'), *semi = strchr(s, ';'), *p = s;
        long long v[3];
        char *e;
        int k;
        if (!semi) semi = s + strlen(s);
        if (*n == GEMM_MAX_SHAPES) return mbpo__fail("--shapes: more than %d shapes", GEMM_MAX_SHAPES);
        if (colon && colon < semi) {
            snprintf(out[*n].name, sizeof out[*n].name, "%.*s", (int)(colon - s), s);
            p = colon + 1;
        } else snprintf(out[*n].name, sizeof out[*n].name, "shape%d", *n + 1);
        for (k = 0; k < 3; k++) {
            v[k] = strtoll(p, &e, 10);
            if (e == p || v[k] < 1 || v[k] > 1000000 || (k < 2 && *e != ',') || (k == 2 && e != semi))
                return mbpo__fail("--shapes: '%.*s': want [NAME:]M,K,N (each in [1, 1e6]), ';' between shapes",
                                  (int)(semi - s), s);
            p = e + 1;
        }
        out[*n].M = v[0]; out[*n].K = v[1]; out[*n].N = v[2];
        (*n)++;
        s = *semi ? semi + 1 : semi;
    }
    return *n > 0 || mbpo__fail("--shapes: no shape given");
}
/* out[i * os0 + j * os1] against the double sum over k of A(i, k) B(k, j) for a few (i, j):
   A(i, k) = a[i * as0 + k * as1], B(k, j) = b[k * bs0 + j * bs1]. */
static int gemm_check(const float *out, int64_t os0, const float *a, int64_t as0, int64_t as1, const float *b,
                      int64_t bs0, int64_t bs1, int64_t rows, int64_t inner, int64_t cols, const char *what) {
    mbpo_rng rng;
    int t;
    mbpo_rng_seed(&rng, 77);
    for (t = 0; t < 24; t++) {
        int64_t i = (int64_t)(mbpo_rng_uniform(&rng) * (double)rows), j = (int64_t)(mbpo_rng_uniform(&rng) * (double)cols), k;
        double ref = 0, mag = 0, got;
        if (i >= rows) i = rows - 1;
        if (j >= cols) j = cols - 1;
        if (t == 0) { i = rows - 1; j = cols - 1; }   /* the last row and column: the edge blocks */
        for (k = 0; k < inner; k++) {
            double x = (double)a[i * as0 + k * as1] * (double)b[k * bs0 + j * bs1];
            ref += x; mag += fabs(x);
        }
        got = out[i * os0 + j];
        if (!(fabs(got - ref) <= 1e-4 * mag + 1e-6))
            return mbpo__fail("--gemm-bench: %s: element (%lld, %lld) is %.6g, the double sum %.6g", what, (long long)i,
                              (long long)j, got, ref);
    }
    return 1;
}
static int gemm_bench(const char *shapes, double min_time) {
    static const char *const layout[3] = { "forward", "dinp", "dweight" };
    gemm_shape sh[GEMM_MAX_SHAPES];
    int n_sh = 0, si, l;
    double peak, wall;
    if (!parse_shapes(shapes, sh, &n_sh)) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 2; }
    peak = fma_peak(&wall);
    printf("mbpo fma peak: %s, %d floats a vector, %d chains, %d threads: %.1f GFLOP/s (%.1f per thread per CPU second; "
           "%.1f GFLOP/s of wall time now)\n", FMA_ISA, FMA_WIDTH, FMA_CHAINS, n_threads(), peak / 1e9, peak / 1e9 / n_threads(),
           wall / 1e9);
    fflush(stdout);
    for (si = 0; si < n_sh; si++) {
        int64_t M = sh[si].M, K = sh[si].K, N = sh[si].N, i;
        /* mbpo's allocator, as the model's weights and activations have it (huge pages for big blocks) */
        float *inp = (float *)mbpo__alloc((size_t)(M * K) * 4), *w = (float *)mbpo__alloc((size_t)(N * K) * 4);
        float *dout = (float *)mbpo__alloc((size_t)(M * N) * 4), *out = (float *)mbpo__alloc((size_t)(M * N) * 4);
        float *dinp = (float *)mbpo__calloc((size_t)(M * K), 4), *dw = (float *)mbpo__calloc((size_t)(N * K), 4);
        mbpo_rng rng;
        if (!inp || !w || !dout || !out || !dinp || !dw) { fprintf(stderr, "mbpo-bench: --gemm-bench: out of memory\n"); return 1; }
        mbpo_rng_seed(&rng, 1000 + (uint64_t)si);
        for (i = 0; i < M * K; i++) inp[i] = (float)(mbpo_rng_uniform(&rng) * 2 - 1);
        for (i = 0; i < N * K; i++) w[i] = (float)(mbpo_rng_uniform(&rng) * 2 - 1);
        for (i = 0; i < M * N; i++) dout[i] = (float)(mbpo_rng_uniform(&rng) * 2 - 1);
        for (l = 0; l < 3; l++) {
            double t[GEMM_MAX_REPS], total = 0, dt, flop = 2.0 * (double)M * (double)K * (double)N;
            int reps = 0, ok;
            char what[128];
            snprintf(what, sizeof what, "%.63s %s", sh[si].name, layout[l]);
            for (i = -1; reps < GEMM_MAX_REPS && (reps < 3 || total < min_time); i++) {   /* i == -1: warm-up, checked */
                double t0 = mbpo_now();
                if (l == 0) mbpo__gemm(out, inp, 0, w, 0, NULL, M, K, N, 0);
                else if (l == 1) mbpo__gemm(dinp, dout, 0, w, 1, NULL, M, N, K, 1);
                else mbpo__gemm(dw, dout, 1, inp, 1, NULL, N, M, K, 1);
                dt = mbpo_now() - t0;
                if (i < 0) {   /* the accumulating layouts started from zeros: one call is the plain product */
                    ok = l == 0 ? gemm_check(out, N, inp, K, 1, w, 1, K, M, K, N, what)
                       : l == 1 ? gemm_check(dinp, K, dout, N, 1, w, K, 1, M, N, K, what)
                                : gemm_check(dw, K, dout, 1, N, inp, K, 1, N, M, K, what);
                    if (!ok) { fprintf(stderr, "mbpo-bench: %s\n", mbpo_failure_reason()); return 1; }
                    continue;
                }
                t[reps++] = dt;
                total += dt;
            }
            dt = median(t, reps);
            printf("mbpo gemm %s %s %lldx%lldx%lld: %.3f ms, %.1f GFLOP/s, %.1f%% of peak\n", sh[si].name, layout[l],
                   (long long)M, (long long)K, (long long)N, dt * 1e3, flop / dt / 1e9, 100.0 * flop / dt / peak);
            fflush(stdout);
        }
        mbpo_free(inp); mbpo_free(w); mbpo_free(dout); mbpo_free(out); mbpo_free(dinp); mbpo_free(dw);
    }
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
    int iters = 10, warmup = 2, backward = 0, both = 0, bwd_iters = -1, bwd_warmup = -1, gemm_mode = 0, i, rc, pass;
    const char *shapes = GEMM_DEFAULT_SHAPES;
    double gemm_time = 0.3, burn_s = -1, t_load;
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
            { "--both", NULL, MBPO_FLAG_SWITCH, &both, NULL,
              "time the forward, then forward + backward, in one run (one load of the model)" },
            { "--bwd-iters", "N", MBPO_FLAG_INT, &bwd_iters, ">= 1", "with --both: timed forward + backward iterations (default --iters)" },
            { "--bwd-warmup", "N", MBPO_FLAG_INT, &bwd_warmup, ">= 0", "with --both: untimed forward + backward iterations (default --warmup)" },
            { "--gemm-bench", NULL, MBPO_FLAG_SWITCH, &gemm_mode, NULL,
              "the GEMM micro-benchmark: the FMA peak of this CPU on every thread, then mbpo's GEMM on --shapes\n"
              "in the three layouts of a Linear (forward, dinp, dweight): GFLOP/s and % of the peak" },
            { "--shapes", "LIST", MBPO_FLAG_STRING, &shapes, NULL,
              "--gemm-bench: [NAME:]M,K,N;... (M rows, K in, N out features; default: Qwen2-VL-2B's text\n"
              "Linears at 188 tokens and vision Linears at 616 patches)" },
            { "--gemm-time", "S", MBPO_FLAG_DOUBLE, &gemm_time, "[0, 60]", "--gemm-bench: seconds each product is repeated for (at least 3 times)" },
            { "--burn", "S", MBPO_FLAG_DOUBLE, &burn_s, ">= 0",
              "no benchmark: keep every OpenMP thread busy with FMA chains for S seconds (0: until killed)" },
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
        if (!mbpo_flags_handle("mbpo-bench", "--model DIR [--input FILE] [--iters 10] [--warmup 2] [--backward | --both]\n"
                               "       mbpo-bench --gemm-bench [--shapes M,K,N;...] [--gemm-time 0.3]\n"
                               "       mbpo-bench --burn SECONDS\n"
                               "       mbpo-bench --tokenizer FILE --text FILE [--lines] [--iters 10] [--warmup 2]\n"
                               "       mbpo-bench --tokenizer FILE --encode FILE\n"
                               "       mbpo-bench --gpu-bench [--device cuda] [--config F] [--seqs 8] [--grid 32] [--text-tokens 200]",
                               flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, &rc))
            return rc;
    }
    if (mem_list) return memory_table(mem_list, mem_world, mem_batch, gb_G, mem_new, 448, 64);
    if (burn_s >= 0) return burn(burn_s);
    if (gemm_mode) return gemm_bench(shapes, gemm_time);
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
    if (both && backward) { fprintf(stderr, "mbpo-bench: --both already times forward + backward; drop --backward\n"); return 2; }
    if (bwd_iters < 0) bwd_iters = iters;
    if (bwd_warmup < 0) bwd_warmup = warmup;
    t_load = mbpo_now();
    TRY(mbpo_model_load(&m, model_dir));
    t_load = mbpo_now() - t_load;
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
    logp = (float *)calloc((size_t)N + 1, sizeof(float)); dlogp = (float *)calloc((size_t)N + 1, sizeof(float));
    for (s = 0; s < N; s++) dlogp[s] = -1.0f / (float)N;
    /* pass 0 is the forward (planned without gradients), pass 1 forward + backward; --both runs
       both, in that order, re-planning in between so the forward never holds gradients */
    for (pass = both || !backward ? 0 : 1; pass <= (both || backward ? 1 : 0); pass++) {
        int n_it = pass && both ? bwd_iters : iters, n_wu = pass && both ? bwd_warmup : warmup;
        TRY(mbpo_model_plan_on(&m, dev, S, P, N, pass));
        if (pass == 0 || !both)
            printf("mbpo-bench: %s on %s, %lld parameters, %lld tokens, %lld patches, %lld targets, %d threads, "
                   "activations %.1f MB, loaded in %.1f s\n", model_dir, mbpo_device_name(dev), (long long)m.table.n_params,
                   (long long)S, (long long)P, (long long)N, n_threads(), (double)mbpo_model_plan_bytes(&m) / 1e6, t_load);
        fflush(stdout);
        for (i = 0; i < n_wu + n_it; i++) {
            if (i == n_wu) t0 = mbpo_now();
            TRY(mbpo_model_forward(&m, &b, logp) == N);
            if (pass) { mbpo_model_zero_grad(&m); TRY(mbpo_model_backward(&m, &b, dlogp, NULL)); }
            dev_sync();   /* a GPU backward returns before the device is done */
        }
        dt = (mbpo_now() - t0) / n_it;
        {
            double loss = 0;
            for (s = 0; s < N; s++) loss -= logp[s];
            printf("mbpo %s: %lld tokens, %lld patches, %.3f ms/iter, %.1f tokens/s (loss %.6f)\n",
                   pass ? "fwd+bwd" : "forward", (long long)S, (long long)P, dt * 1e3, (double)S / dt, loss / (double)N);
            fflush(stdout);
        }
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
