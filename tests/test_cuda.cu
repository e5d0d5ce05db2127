/* test_cuda.cu - the CUDA backend against the CPU one, in one process (needs a GPU).
       build/cuda/test_cuda [filter]          bf16 storage (the default build)
       build/cuda/test_cuda_fp32 [filter]     fp32 storage (MBPO_CUDA_FP32): the parity build
   Run from the repository root. The CPU op table (mbpo.h, "the op table") is the
   specification: every CUDA op is run on fresh random inputs next to its CPU op, with the
   outputs poisoned first; then the whole model on the transformers fixtures, a mid-size
   random model, decoding vs the full forward, run-to-run determinism, and (when a folder
   made by tests/reference/qwen2vl_2b_random.py is given) Qwen2-VL-2B against transformers.

   Error metrics (stated once, used everywhere below):
     fp32 build: err = max|got - ref| / max(max|ref|, 1e-30)   (max-norm relative)
     bf16 build: err = ||got - ref||_2 / max(||ref||_2, 1e-30)  (relative L2)
   In the bf16 build the random host inputs are rounded to bf16 before both sides see them,
   so the two sides differ only in device arithmetic and in where it rounds. Bounds (bf16):
     one rounding of an fp32 result (elementwise ops, rotary): |err| <= 2^-9 per value, so
       rel L2 <= 2^-9 = 1.95e-3: bound 4e-3;
     a GEMM output rounded once (fp32 accumulation in another order, then one rounding): 1e-2;
     chains (norms, attention, the head: statistics, exp, several roundings): 2e-2.
   fp32 build: 1e-5 for every op, except the rotary tables (see test_rotary) and the copies
   (embedding rows, KV append, memory ops), which must be exact in both builds.
   Ends with "N passed, N failed"; exits non-zero on any failure. */
#define MBPO_IMPLEMENTATION
#include "../mbpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_common.h"

int n_passed, n_failed;
const char *filter;

#ifdef MBPO_CUDA_FP32
#define FP32_BUILD 1
#define BUILD_NAME "fp32"
#else
#define FP32_BUILD 0
#define BUILD_NAME "bf16"
#endif

/* ============================================================== helpers */

int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }
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

/* v as the GPU stores it: bf16 round-to-nearest-even (fp32 build: v) */
static float xround(float v) { return FP32_BUILD ? v : mbpo_bf16_to_f32(mbpo_f32_to_bf16(v)); }
static void xround_all(float *x, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) x[i] = xround(x[i]);
}

/* The error of got against ref by this build's metric (top comment); *bad counts values
   of got that are not finite where ref is (an unwritten, poisoned output shows here). */
static double err_metric(const float *got, const float *ref, int64_t n, int64_t *bad, int64_t *worst) {
    double maxerr = 0, maxref = 0, se = 0, sr = 0;
    int64_t i;
    *bad = 0; *worst = 0;
    for (i = 0; i < n; i++) {
        double g = got[i], r = ref[i], e = fabs(g - r);
        if (!isfinite(g) && isfinite(r)) { if (!*bad) *worst = i; (*bad)++; continue; }
        if (e > maxerr) { maxerr = e; if (!*bad) *worst = i; }
        if (fabs(r) > maxref) maxref = fabs(r);
        se += e * e; sr += r * r;
    }
    if (FP32_BUILD) return maxerr / (maxref > 1e-30 ? maxref : 1e-30);
    return sqrt(se) / (sqrt(sr) > 1e-30 ? sqrt(sr) : 1e-30);
}
/* relative L2 of one pair of vectors, in double (used for per-row statistics) */
static double rel_l2(const float *got, const float *ref, int64_t n) {
    double se = 0, sr = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];
        if (!isfinite(got[i])) return INFINITY;
        se += d * d; sr += (double)ref[i] * ref[i];
    }
    return sqrt(se) / (sqrt(sr) > 1e-30 ? sqrt(sr) : 1e-30);
}
static const char *metric_name(void) { return FP32_BUILD ? "max-rel" : "rel-L2"; }

/* tolerance classes of the op tests (top comment) */
enum { TC_EXACT, TC_ROUND, TC_GEMM, TC_CHAIN };
static double tol_of(int tc) {
    if (tc == TC_EXACT) return 0;
    if (FP32_BUILD) return 1e-5;
    return tc == TC_ROUND ? 4e-3 : tc == TC_GEMM ? 1e-2 : 2e-2;
}

/* ============================================================== both backends, side by side

   Side 0 is the CPU table, side 1 the CUDA table, each with its own backend state. A test
   buffer holds one allocation on each side; an input gets the same host values on both
   (x_upload for activations, upload for fp32 and integer data). */
static const mbpo_ops *OPS[2];
static mbpo_backend *BE[2];
static mbpo_rng RNG;
static int g_setup_ok;             /* cleared when a test buffer could not be made */

enum { KX, KF, KI64, KI32, KB };   /* KB: bytes (KI64 also holds doubles) */
typedef struct { void *p[2]; int64_t n; int kind; } tbuf;

#define POOL_MAX 256
static void *pool_dev[2][POOL_MAX];
static int pool_n;
static void *pool_host[POOL_MAX];
static int pool_hn;

static size_t elem_size(int s, int kind) {
    return kind == KX ? OPS[s]->x_size : kind == KI64 ? sizeof(int64_t) : kind == KI32 ? sizeof(int32_t) : kind == KB ? 1 : sizeof(float);
}
static void pool_release(void) {
    int i, s;
    for (i = 0; i < pool_n; i++)
        for (s = 0; s < 2; s++)
            if (pool_dev[s][i]) OPS[s]->release(BE[s], pool_dev[s][i]);
    for (i = 0; i < pool_hn; i++) free(pool_host[i]);
    pool_n = pool_hn = 0;
}
/* the buffers made since pool_n was mark (pool_hn hmark) */
static void pool_release_to(int mark, int hmark) {
    int i, s;
    for (i = mark; i < pool_n; i++)
        for (s = 0; s < 2; s++)
            if (pool_dev[s][i]) OPS[s]->release(BE[s], pool_dev[s][i]);
    for (i = hmark; i < pool_hn; i++) free(pool_host[i]);
    pool_n = mark; pool_hn = hmark;
}
/* host scratch freed by pool_release */
static void *hmem(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p || pool_hn == POOL_MAX) { free(p); g_setup_ok = 0; printf("FAIL  test setup: host pool full or out of memory\n"); n_failed++; return NULL; }
    pool_host[pool_hn++] = p;
    return p;
}
static float *hrand(int64_t n, double scale, int as_x) {
    float *h = (float *)hmem((size_t)n * sizeof(float));
    if (!h) return NULL;
    fill_normal(h, n, &RNG, scale);
    if (as_x) xround_all(h, n);
    return h;
}
static tbuf tb_new(int kind, int64_t n) {
    tbuf b;
    int s;
    memset(&b, 0, sizeof b);
    b.kind = kind; b.n = n;
    if (!g_setup_ok) return b;
    if (pool_n == POOL_MAX) { g_setup_ok = 0; n_failed++; printf("FAIL  test setup: device pool full\n"); return b; }
    for (s = 0; s < 2; s++) {
        size_t bytes = (size_t)(n > 0 ? n : 1) * elem_size(s, kind);
        if (!OPS[s]->alloc(BE[s], &b.p[s], bytes, "a test buffer")) {
            g_setup_ok = 0; n_failed++;
            printf("FAIL  test setup: %s alloc of %zu bytes: %s\n", OPS[s]->name, bytes, mbpo_failure_reason());
            b.p[s] = NULL;
        }
        pool_dev[s][pool_n] = b.p[s];
    }
    pool_n++;
    return b;
}
static void tb_set(tbuf *b, const void *host) {
    int s;
    if (!g_setup_ok || !host) { g_setup_ok = 0; return; }
    for (s = 0; s < 2; s++) {
        int ok = b->kind == KX ? OPS[s]->x_upload(BE[s], (mbpo_x *)b->p[s], (const float *)host, b->n)
                               : OPS[s]->upload(BE[s], b->p[s], host, (size_t)b->n * elem_size(s, b->kind));
        if (!ok) { g_setup_ok = 0; n_failed++; printf("FAIL  test setup: %s upload: %s\n", OPS[s]->name, mbpo_failure_reason()); }
    }
}
/* 0xFF bytes: NaN in fp32 and in bf16 (and -1 in integers), so an unwritten value shows */
static void tb_poison(tbuf *b) {
    int s;
    if (!g_setup_ok) return;
    for (s = 0; s < 2; s++) {
        size_t bytes = (size_t)b->n * elem_size(s, b->kind);
        unsigned char *ff = (unsigned char *)hmem(bytes);
        if (!ff) return;
        memset(ff, 0xFF, bytes);
        if (!OPS[s]->upload(BE[s], b->p[s], ff, bytes)) {
            g_setup_ok = 0; n_failed++; printf("FAIL  test setup: %s poison upload: %s\n", OPS[s]->name, mbpo_failure_reason());
        }
    }
}
/* side s of b as floats (activations and fp32 buffers only) */
static int tb_get(const tbuf *b, int s, float *host) {
    if (b->kind == KX) return OPS[s]->x_download(BE[s], host, (const mbpo_x *)b->p[s], b->n);
    return OPS[s]->download(BE[s], host, b->p[s], (size_t)b->n * sizeof(float));
}
/* an input: random N(0, scale^2), rounded to the storage type when it is an activation */
static tbuf in_x(int64_t n, double scale) { tbuf b = tb_new(KX, n); tb_set(&b, hrand(n, scale, 1)); return b; }
static tbuf in_f(int64_t n, double scale) { tbuf b = tb_new(KF, n); tb_set(&b, hrand(n, scale, 0)); return b; }
static tbuf in_xv(const float *h, int64_t n) {   /* given values (already representable) */
    tbuf b = tb_new(KX, n);
    float *c = (float *)hmem((size_t)n * sizeof(float));
    if (c) { memcpy(c, h, (size_t)n * sizeof(float)); xround_all(c, n); }
    tb_set(&b, c);
    return b;
}
static tbuf in_fv(const float *h, int64_t n) { tbuf b = tb_new(KF, n); tb_set(&b, h); return b; }
static tbuf in_i64(const int64_t *h, int64_t n) { tbuf b = tb_new(KI64, n); tb_set(&b, h); return b; }
static tbuf in_i32(const int32_t *h, int64_t n) { tbuf b = tb_new(KI32, n); tb_set(&b, h); return b; }
/* a written (=) output: poisoned on both sides */
static tbuf out_x(int64_t n) { tbuf b = tb_new(KX, n); tb_poison(&b); return b; }
static tbuf out_f(int64_t n) { tbuf b = tb_new(KF, n); tb_poison(&b); return b; }

/* ---- one op's results over its shapes: one line per op, a FAIL line per bad comparison */
typedef struct {
    const char *op;
    int tc, cases, fails, refused, absolute;   /* absolute: max-abs error instead of the metric */
    double worst, tol;
    const char *metric;                        /* the name of a metric of the op's own, or NULL */
    char worst_shape[160];
} opstat;
static void op_begin(opstat *st, const char *op, int tc) {
    memset(st, 0, sizeof *st);
    st->op = op; st->tc = tc; st->tol = tol_of(tc);
}
static void op_end(opstat *st) {
    const char *metric = st->metric ? st->metric : st->absolute ? "max-abs" : metric_name();
    if (st->fails) {
        printf("FAIL  %-22s %d of %d comparisons failed (%s, tol %.1e)\n", st->op, st->fails, st->cases, metric, st->tol);
        return;
    }
    if (!st->cases) { n_failed++; printf("FAIL  %-22s nothing was compared\n", st->op); return; }
    n_passed++;
    printf("  ok  %-22s %3d comparisons, worst %s %.2e (tol %.1e) at %s%s\n", st->op, st->cases, metric,
           st->worst, st->tol, st->worst_shape, st->refused ? " (some odd shapes refused, see --)" : "");
}
/* both sides of b as floats (host scratch), one comparison counted; 0 (a failure reported) if
   they cannot be read */
static int both_sides(opstat *st, const char *shape, const char *what, const tbuf *b, float **got, float **ref) {
    *got = (float *)hmem((size_t)b->n * sizeof(float)); *ref = (float *)hmem((size_t)b->n * sizeof(float));
    if (!*got || !*ref) return 0;
    st->cases++;
    if (!tb_get(b, 0, *ref) || !tb_get(b, 1, *got)) {
        st->fails++; n_failed++;
        printf("FAIL  %s %s [%s]: download: %s\n", st->op, what, shape, mbpo_failure_reason());
        return 0;
    }
    return 1;
}
/* compare the GPU side of b against the CPU side; tol < 0: the class tolerance */
static void cmp(opstat *st, const char *shape, const char *what, const tbuf *b) {
    int absolute = st->absolute;
    double tol = st->tol;
    float *got, *ref;
    int64_t bad = 0, worst = 0, i, nexact = 0;
    double err;
    if (!both_sides(st, shape, what, b, &got, &ref)) return;
    if (st->tc == TC_EXACT && !absolute) {
        for (i = 0; i < b->n; i++)
            if (memcmp(&got[i], &ref[i], sizeof(float))) { if (!nexact) worst = i; nexact++; }
        err = (double)nexact;
        if (nexact) {
            st->fails++; n_failed++;
            printf("FAIL  %s %s [%s]: %lld of %lld values differ (first at %lld: got %.8g ref %.8g)\n", st->op, what, shape,
                   (long long)nexact, (long long)b->n, (long long)worst, got[worst], ref[worst]);
        } else if (!st->worst_shape[0]) snprintf(st->worst_shape, sizeof st->worst_shape, "%s %s", what, shape);
        return;
    }
    if (absolute) {
        err = 0;
        for (i = 0; i < b->n; i++) {
            double e = fabs((double)got[i] - ref[i]);
            if (!isfinite(got[i])) { bad++; continue; }
            if (e > err) { err = e; worst = i; }
        }
    } else err = err_metric(got, ref, b->n, &bad, &worst);
    if (bad || !(err <= tol)) {
        st->fails++; n_failed++;
        printf("FAIL  %s %s [%s]: %s err %.3e > tol %.0e, %lld not finite (at %lld: got %.8g ref %.8g)\n", st->op, what,
               shape, absolute ? "max-abs" : metric_name(), err, tol, (long long)bad, (long long)worst, got[worst], ref[worst]);
        return;
    }
    if (err >= st->worst) { st->worst = err; snprintf(st->worst_shape, sizeof st->worst_shape, "%s %s", what, shape); }
}

/* Run `call` on side 0 then side 1 (it names the side `s`); ok_ says whether both returned 1.
   A CUDA op may refuse a shape marked odd (say why and return 0): reported, not failed. */
#define XP(b) ((mbpo_x *)(b).p[s])
#define FP(b) ((float *)(b).p[s])
#define LP(b) ((int64_t *)(b).p[s])
#define IP(b) ((int32_t *)(b).p[s])
#define BOTH(st, shape, odd, call) do { int s; ok_ = g_setup_ok; \
        for (s = 0; s < 2 && ok_; s++) if (!(call)) { ok_ = 0; call_failed(st, shape, s, odd); } } while (0)
static void call_failed(opstat *st, const char *shape, int s, int odd) {
    if (s == 1 && odd) {
        st->refused++;
        printf("  --  %s [%s]: refused by the CUDA op (an odd shape): %s\n", st->op, shape, mbpo_failure_reason());
        return;
    }
    st->fails++; n_failed++; st->cases++;
    printf("FAIL  %s [%s]: the %s op returned 0: %s\n", st->op, shape, OPS[s]->name, mbpo_failure_reason());
}

/* ============================================================== op tests */

static void test_memory(void) {
    opstat st;
    int64_t sizes[3] = { 1, 1001, 1 << 20 }, k, i;
    char shape[64];
    int ok_;
    op_begin(&st, "memory + x transfer", TC_EXACT);
    for (k = 0; k < 3; k++) {
        int64_t n = sizes[k];
        tbuf a, b, z;
        float *h;
        g_setup_ok = 1;
        snprintf(shape, sizeof shape, "n=%lld", (long long)n);
        a = in_f(n, 1.0); b = out_f(n);
        BOTH(&st, shape, 0, OPS[s]->copy(BE[s], b.p[s], a.p[s], (size_t)n * sizeof(float)));
        if (ok_) cmp(&st, shape, "copy", &b);
        z = in_f(n, 1.0);
        BOTH(&st, shape, 0, OPS[s]->zero(BE[s], z.p[s], (size_t)n * sizeof(float)));
        if (ok_) {
            float *g = (float *)hmem((size_t)n * sizeof(float));
            int64_t nz = 0;
            st.cases++;
            if (g && tb_get(&z, 1, g)) for (i = 0; i < n; i++) nz += g[i] != 0.0f;
            else nz = -1;
            if (nz) { st.fails++; n_failed++; printf("FAIL  zero [%s]: %lld values not zero\n", shape, (long long)nz); }
        }
        /* x round trip: representable values come back bit-exact; others as mbpo_f32_to_bf16 rounds */
        h = hrand(n, 3.0, 0);
        if (h && g_setup_ok) {
            tbuf x = tb_new(KX, n);
            float *g = (float *)hmem((size_t)n * sizeof(float));
            int64_t nbad = 0;
            if (g_setup_ok && g && OPS[1]->x_upload(BE[1], (mbpo_x *)x.p[1], h, n) && OPS[1]->x_download(BE[1], g, (const mbpo_x *)x.p[1], n)) {
                for (i = 0; i < n; i++) { float want = xround(h[i]); nbad += memcmp(&g[i], &want, 4) != 0; }
            } else nbad = -1;
            st.cases++;
            if (nbad) { st.fails++; n_failed++; printf("FAIL  x_upload/x_download [%s]: %lld values not rounded to nearest even (%s)\n", shape, (long long)nbad, mbpo_failure_reason()); }
        }
        pool_release();
    }
    op_end(&st);
}

/* linear layers: shapes from the model (vision qkv, fc1, LM MLP) and odd ones */
static void test_matmul(void) {
    static const int64_t shapes[][4] = {   /* N, C, OC, odd */
        { 1, 64, 64, 0 }, { 3, 1176, 1280, 0 }, { 17, 1536, 8960, 0 }, { 130, 1280, 3840, 0 }, { 130, 176, 64, 0 },
        { 130, 8960, 1536, 0 }, { 64, 256, 1024, 0 }, { 17, 100, 37, 1 }, { 3, 37, 5, 1 }, { 130, 36, 44, 1 },
    };
    opstat fw, bw;
    size_t k;
    char shape[96];
    int ok_;
    op_begin(&fw, "matmul_forward", TC_GEMM);
    op_begin(&bw, "matmul_backward", TC_GEMM);
    for (k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int64_t N = shapes[k][0], C = shapes[k][1], OC = shapes[k][2];
        int odd = (int)shapes[k][3], variant;
        for (variant = 0; variant < 2; variant++) {   /* with and without bias / some gradients */
            tbuf inp, w, bias, out, dout, dinp, dw, db;
            g_setup_ok = 1;
            snprintf(shape, sizeof shape, "N=%lld C=%lld OC=%lld%s", (long long)N, (long long)C, (long long)OC,
                     variant ? " no bias" : "");
            inp = in_x(N * C, 1.0); w = in_x(OC * C, 1.0 / sqrt((double)C)); bias = in_x(OC, 0.5);
            out = out_x(N * OC);
            BOTH(&fw, shape, odd, OPS[s]->matmul_forward(BE[s], XP(out), XP(inp), XP(w), variant ? NULL : XP(bias), N, C, OC));
            if (ok_) cmp(&fw, shape, "out", &out);
            /* backward: += into pre-filled targets (the same values on both sides) */
            dout = in_x(N * OC, 1.0);
            dinp = in_x(N * C, 0.5); dw = in_f(OC * C, 0.5); db = in_f(OC, 0.5);
            if (!variant) {
                BOTH(&bw, shape, odd, OPS[s]->matmul_backward(BE[s], XP(dinp), FP(dw), FP(db), XP(dout), XP(inp), XP(w), N, C, OC));
                if (ok_) { cmp(&bw, shape, "dinp", &dinp); cmp(&bw, shape, "dw", &dw); cmp(&bw, shape, "dbias", &db); }
            } else {   /* activation gradient only (PGD), then weight gradients only */
                BOTH(&bw, shape, odd, OPS[s]->matmul_backward(BE[s], XP(dinp), NULL, NULL, XP(dout), XP(inp), XP(w), N, C, OC));
                if (ok_) cmp(&bw, shape, "dinp only", &dinp);
                BOTH(&bw, shape, odd, OPS[s]->matmul_backward(BE[s], NULL, FP(dw), NULL, XP(dout), XP(inp), XP(w), N, C, OC));
                if (ok_) cmp(&bw, shape, "dw only", &dw);
            }
            pool_release();
        }
    }
    op_end(&fw); op_end(&bw);
}

static void test_norms(void) {
    static const int64_t Ns[4] = { 1, 3, 17, 130 }, Cs[4] = { 37, 176, 1280, 1536 };
    opstat lf, lb, rf, rb;
    int i, j, ok_;
    char shape[64];
    op_begin(&lf, "layernorm_forward", TC_CHAIN); op_begin(&lb, "layernorm_backward", TC_CHAIN);
    op_begin(&rf, "rmsnorm_forward", TC_CHAIN); op_begin(&rb, "rmsnorm_backward", TC_CHAIN);
    for (i = 0; i < 4; i++)
        for (j = 0; j < 4; j++) {
            int64_t N = Ns[i], C = Cs[j];
            int with_dw = (i + j) % 2 == 0;
            tbuf inp, w, b, out, mean, rstd, dout, dinp, dw, db, rout, rrstd, rdinp, rdw;
            float *wv;
            g_setup_ok = 1;
            snprintf(shape, sizeof shape, "N=%lld C=%lld%s", (long long)N, (long long)C, with_dw ? "" : " no dw");
            /* inputs with a mean offset, as residual streams have; weights near 1 */
            inp = in_x(N * C, 2.0);
            wv = hrand(C, 0.1, 0);
            if (wv) { int64_t c; for (c = 0; c < C; c++) wv[c] += 1.0f; }
            w = in_xv(wv, C); b = in_x(C, 0.1);
            out = out_x(N * C); mean = out_f(N); rstd = out_f(N);
            BOTH(&lf, shape, 0, OPS[s]->layernorm_forward(BE[s], XP(out), FP(mean), FP(rstd), XP(inp), XP(w), XP(b), N, C, 1e-6f));
            if (ok_) { cmp(&lf, shape, "out", &out); cmp(&lf, shape, "mean", &mean); cmp(&lf, shape, "rstd", &rstd); }
            /* backward from the CPU statistics (the same on both sides) */
            {
                float *hm = (float *)hmem((size_t)N * 4), *hr = (float *)hmem((size_t)N * 4);
                tbuf m2, r2;
                if (hm && hr && g_setup_ok) { OPS[0]->download(BE[0], hm, mean.p[0], (size_t)N * 4); OPS[0]->download(BE[0], hr, rstd.p[0], (size_t)N * 4); }
                m2 = in_fv(hm, N); r2 = in_fv(hr, N);
                dout = in_x(N * C, 1.0); dinp = in_x(N * C, 0.5); dw = in_f(C, 0.5); db = in_f(C, 0.5);
                BOTH(&lb, shape, 0, OPS[s]->layernorm_backward(BE[s], XP(dinp), with_dw ? FP(dw) : NULL, with_dw ? FP(db) : NULL,
                                                               XP(dout), XP(inp), XP(w), FP(m2), FP(r2), N, C));
                if (ok_) { cmp(&lb, shape, "dinp", &dinp); if (with_dw) { cmp(&lb, shape, "dw", &dw); cmp(&lb, shape, "db", &db); } }
            }
            rout = out_x(N * C); rrstd = out_f(N);
            BOTH(&rf, shape, 0, OPS[s]->rmsnorm_forward(BE[s], XP(rout), FP(rrstd), XP(inp), XP(w), N, C, 1e-6f));
            if (ok_) { cmp(&rf, shape, "out", &rout); cmp(&rf, shape, "rstd", &rrstd); }
            {
                float *hr = (float *)hmem((size_t)N * 4);
                tbuf r2;
                if (hr && g_setup_ok) OPS[0]->download(BE[0], hr, rrstd.p[0], (size_t)N * 4);
                r2 = in_fv(hr, N);
                rdinp = in_x(N * C, 0.5); rdw = in_f(C, 0.5);
                BOTH(&rb, shape, 0, OPS[s]->rmsnorm_backward(BE[s], XP(rdinp), with_dw ? FP(rdw) : NULL, XP(dout), XP(inp), XP(w), FP(r2), N, C));
                if (ok_) { cmp(&rb, shape, "dinp", &rdinp); if (with_dw) cmp(&rb, shape, "dw", &rdw); }
            }
            pool_release();
        }
    op_end(&lf); op_end(&lb); op_end(&rf); op_end(&rb);
}

static void test_elementwise(void) {
    static const int64_t ns[6] = { 1, 3, 17, 130, 4096 * 3 + 1, (1 << 20) + 5 };
    opstat qf, qb, gf, gb, sf, sb, ad;
    int k, ok_;
    char shape[48];
    op_begin(&qf, "quick_gelu_forward", TC_ROUND); op_begin(&qb, "quick_gelu_backward", TC_ROUND);
    op_begin(&gf, "gelu_forward", TC_ROUND); op_begin(&gb, "gelu_backward", TC_ROUND);
    op_begin(&sf, "swiglu_forward", TC_ROUND); op_begin(&sb, "swiglu_backward", TC_ROUND);
    op_begin(&ad, "add", TC_ROUND);
    for (k = 0; k < 6; k++) {
        int64_t n = ns[k];
        tbuf x, y, dout, o, d1, d2;
        g_setup_ok = 1;
        x = in_x(n, 2.0); y = in_x(n, 2.0); dout = in_x(n, 1.0);
        snprintf(shape, sizeof shape, "n=%lld", (long long)n);
        o = out_x(n);
        BOTH(&qf, shape, 0, OPS[s]->quick_gelu_forward(BE[s], XP(o), XP(x), n)); if (ok_) cmp(&qf, shape, "out", &o);
        d1 = out_x(n);
        BOTH(&qb, shape, 0, OPS[s]->quick_gelu_backward(BE[s], XP(d1), XP(dout), XP(x), n)); if (ok_) cmp(&qb, shape, "dinp", &d1);
        o = out_x(n);
        BOTH(&gf, shape, 0, OPS[s]->gelu_forward(BE[s], XP(o), XP(x), n)); if (ok_) cmp(&gf, shape, "out", &o);
        d1 = out_x(n);
        BOTH(&gb, shape, 0, OPS[s]->gelu_backward(BE[s], XP(d1), XP(dout), XP(x), n)); if (ok_) cmp(&gb, shape, "dinp", &d1);
        o = out_x(n);
        BOTH(&sf, shape, 0, OPS[s]->swiglu_forward(BE[s], XP(o), XP(x), XP(y), n)); if (ok_) cmp(&sf, shape, "out", &o);
        d1 = out_x(n); d2 = out_x(n);
        BOTH(&sb, shape, 0, OPS[s]->swiglu_backward(BE[s], XP(d1), XP(d2), XP(dout), XP(x), XP(y), n));
        if (ok_) { cmp(&sb, shape, "dgate", &d1); cmp(&sb, shape, "dup", &d2); }
        o = out_x(n);
        BOTH(&ad, shape, 0, OPS[s]->add(BE[s], XP(o), XP(x), XP(y), n)); if (ok_) cmp(&ad, shape, "out", &o);
        /* in place: out == a (the residual stream) */
        BOTH(&ad, shape, 0, OPS[s]->add(BE[s], XP(x), XP(x), XP(y), n)); if (ok_) cmp(&ad, shape, "in place", &x);
        pool_release();
    }
    op_end(&qf); op_end(&qb); op_end(&gf); op_end(&gb); op_end(&sf); op_end(&sb); op_end(&ad);
}

/* Rotary tables and rotation. The tables are fp32 from integer positions on both sides:
   angle = pos * inv_freq in float, then cosf / sinf. A device that evaluates inv_freq with
   its own powf (2 ulp) moves the angle by up to ~2.4e-7 |angle|, so the tables are checked
   by max-abs error <= 1e-6 + 4e-7 * max_pos, in both builds. A wrong frequency slot or
   section gives errors of order 1. */
static void test_rotary(void) {
    static const int64_t HSs[4] = { 16, 32, 80, 128 }, Ns[3] = { 1, 17, 130 };
    opstat mt, vt, ra;
    int i, j, ok_;
    char shape[96];
    op_begin(&mt, "mrope_tables", TC_ROUND); op_begin(&vt, "vrope_tables", TC_ROUND); op_begin(&ra, "rope_apply", TC_ROUND);
    mt.absolute = vt.absolute = 1;
    mt.tol = 1e-6 + 4e-7 * 300;   /* positions < 300 */
    vt.tol = 1e-6 + 4e-7 * 64;    /* patch rows and columns < 64 */
    for (i = 0; i < 4; i++)
        for (j = 0; j < 3; j++) {
            int64_t HS = HSs[i], N = Ns[j], half = HS / 2, t, max_pos = 300, nh, sgn;
            int sec0 = (int)(half / 4), sec1 = (int)((half - sec0) / 2);   /* e.g. 16, 24, 24 for HS 128 */
            int64_t *pos = (int64_t *)hmem((size_t)(3 * N) * 8), *hw = (int64_t *)hmem((size_t)(2 * N) * 8);
            tbuf dpos, dhw, cs, sn, vcs, vsn;
            g_setup_ok = 1;
            if (!pos || !hw) continue;
            for (t = 0; t < 3 * N; t++) pos[t] = (int64_t)(mbpo_rng_u64(&RNG) % (uint64_t)max_pos);
            for (t = 0; t < 2 * N; t++) hw[t] = (int64_t)(mbpo_rng_u64(&RNG) % 64);
            dpos = in_i64(pos, 3 * N); dhw = in_i64(hw, 2 * N);
            snprintf(shape, sizeof shape, "N=%lld HS=%lld sections %d,%d,%lld", (long long)N, (long long)HS, sec0, sec1,
                     (long long)(half - sec0 - sec1));
            cs = out_f(N * half); sn = out_f(N * half);
            BOTH(&mt, shape, 0, OPS[s]->mrope_tables(BE[s], FP(cs), FP(sn), LP(dpos), N, HS, 1000000.0, sec0, sec1));
            if (ok_) { cmp(&mt, shape, "cos", &cs); cmp(&mt, shape, "sin", &sn); }
            vcs = out_f(N * half); vsn = out_f(N * half);
            BOTH(&vt, shape, 0, OPS[s]->vrope_tables(BE[s], FP(vcs), FP(vsn), LP(dhw), N, HS, 10000.0));
            if (ok_) { cmp(&vt, shape, "cos", &vcs); cmp(&vt, shape, "sin", &vsn); }
            /* rotation in place, from the CPU tables on both sides; rows wider than the heads
               (stride) so a write into the gap shows */
            if (g_setup_ok) {
                float *hc = (float *)hmem((size_t)(N * half) * 4), *hs = (float *)hmem((size_t)(N * half) * 4);
                tbuf c2, s2;
                if (!hc || !hs) continue;
                OPS[0]->download(BE[0], hc, cs.p[0], (size_t)(N * half) * 4);
                OPS[0]->download(BE[0], hs, sn.p[0], (size_t)(N * half) * 4);
                c2 = in_fv(hc, N * half); s2 = in_fv(hs, N * half);
                for (nh = 1; nh <= 6; nh += 5)
                    for (sgn = -1; sgn <= 1; sgn += 2) {
                        int64_t stride = nh * HS + 24;
                        tbuf x = in_x(N * stride, 1.0);
                        char sh2[128];
                        snprintf(sh2, sizeof sh2, "%s nh=%lld sign=%+lld", shape, (long long)nh, (long long)sgn);
                        BOTH(&ra, sh2, 0, OPS[s]->rope_apply(BE[s], XP(x), FP(c2), FP(s2), N, nh, HS, stride, (float)sgn));
                        if (ok_) cmp(&ra, sh2, "x", &x);
                    }
            }
            pool_release();
        }
    op_end(&mt); op_end(&vt); op_end(&ra);
}

/* Packed attention: segments of different lengths (1, 17, 130, 3, and one long one), causal
   and not, HS 16/32/80/128, GQA groups 1 and 6; q, k, v either separate (the LM) or one
   interleaved qkv row (the vision tower, strides 3 NH HS). The backward gets the CPU
   forward's out and lse, so each op is tested alone. */
static void test_attention(void) {
    static const int64_t HSs[4] = { 16, 32, 80, 128 }, heads[2][2] = { { 2, 2 }, { 6, 1 } };
    static const int64_t seg_short[5] = { 0, 1, 18, 148, 151 }, seg_long[6] = { 0, 1, 18, 148, 151, 751 };
    opstat af, ab;
    int i, g, causal, packed, ok_;
    char shape[128];
    op_begin(&af, "attention_forward", TC_CHAIN); op_begin(&ab, "attention_backward", TC_CHAIN);
    for (i = 0; i < 4; i++)
        for (g = 0; g < 2; g++)
            for (causal = 0; causal < 2; causal++)
                for (packed = 0; packed < 1 + (heads[g][0] == heads[g][1]); packed++) {
                    int64_t HS = HSs[i], NH = heads[g][0], NKV = heads[g][1], QD = NH * HS, KD = NKV * HS;
                    int long_seg = (i == 3 && g == 1) || (i == 2 && packed);   /* one multi-tile segment per layout */
                    const int64_t *cu = long_seg ? seg_long : seg_short;
                    int64_t n_seg = long_seg ? 5 : 4, T = cu[n_seg], qs, kvs, os = QD;
                    tbuf dcu, q, k, v, qkv, out, lse, dout, dq, dk, dv, dqkv, o2, l2;
                    memset(&q, 0, sizeof q);
                    k = v = qkv = dq = dk = dv = dqkv = q;
                    mbpo_x *qp[2], *kp[2], *vp[2], *dqp[2], *dkp[2], *dvp[2];
                    int s0;
                    float *ho, *hl;
                    g_setup_ok = 1;
                    snprintf(shape, sizeof shape, "HS=%lld NH=%lld NKV=%lld %s %s segs 1,17,130,3%s", (long long)HS,
                             (long long)NH, (long long)NKV, causal ? "causal" : "full", packed ? "qkv" : "q|k|v",
                             long_seg ? ",600" : "");
                    dcu = in_i64(cu, n_seg + 1);
                    if (packed) {   /* one (T, 3 QD) buffer: q, k, v at column offsets 0, QD, 2 QD */
                        qs = kvs = 3 * QD;
                        qkv = in_x(T * 3 * QD, 1.0);
                        dqkv = out_x(T * 3 * QD);
                        for (s0 = 0; s0 < 2; s0++) {
                            qp[s0] = (mbpo_x *)qkv.p[s0];
                            kp[s0] = mbpo__xat(OPS[s0], (mbpo_x *)qkv.p[s0], QD);
                            vp[s0] = mbpo__xat(OPS[s0], (mbpo_x *)qkv.p[s0], 2 * QD);
                            dqp[s0] = (mbpo_x *)dqkv.p[s0];
                            dkp[s0] = mbpo__xat(OPS[s0], (mbpo_x *)dqkv.p[s0], QD);
                            dvp[s0] = mbpo__xat(OPS[s0], (mbpo_x *)dqkv.p[s0], 2 * QD);
                        }
                    } else {
                        qs = QD; kvs = KD;
                        q = in_x(T * QD, 1.0); k = in_x(T * KD, 1.0); v = in_x(T * KD, 1.0);
                        dq = out_x(T * QD); dk = out_x(T * KD); dv = out_x(T * KD);
                        for (s0 = 0; s0 < 2; s0++) {
                            qp[s0] = (mbpo_x *)q.p[s0]; kp[s0] = (mbpo_x *)k.p[s0]; vp[s0] = (mbpo_x *)v.p[s0];
                            dqp[s0] = (mbpo_x *)dq.p[s0]; dkp[s0] = (mbpo_x *)dk.p[s0]; dvp[s0] = (mbpo_x *)dv.p[s0];
                        }
                    }
                    if (!g_setup_ok) { pool_release(); continue; }
                    out = out_x(T * os); lse = out_f(NH * T);
                    BOTH(&af, shape, 0, OPS[s]->attention_forward(BE[s], XP(out), FP(lse), qp[s], kp[s], vp[s], LP(dcu), cu, n_seg,
                                                                  NH, NKV, HS, qs, kvs, os, causal));
                    if (ok_) { cmp(&af, shape, "out", &out); cmp(&af, shape, "lse", &lse); }
                    /* backward from the CPU forward's out (rounded as stored) and lse */
                    ho = (float *)hmem((size_t)(T * os) * 4); hl = (float *)hmem((size_t)(NH * T) * 4);
                    if (!ho || !hl || !g_setup_ok) { pool_release(); continue; }
                    OPS[0]->x_download(BE[0], ho, (const mbpo_x *)out.p[0], T * os);
                    OPS[0]->download(BE[0], hl, lse.p[0], (size_t)(NH * T) * 4);
                    o2 = in_xv(ho, T * os); l2 = in_fv(hl, NH * T);
                    dout = in_x(T * os, 1.0);
                    BOTH(&ab, shape, 0, OPS[s]->attention_backward(BE[s], dqp[s], dkp[s], dvp[s], XP(dout), XP(o2), FP(l2), qp[s],
                                                                   kp[s], vp[s], LP(dcu), cu, n_seg, NH, NKV, HS, qs, kvs, os, causal));
                    if (ok_) {
                        if (packed) cmp(&ab, shape, "dqkv", &dqkv);
                        else { cmp(&ab, shape, "dq", &dq); cmp(&ab, shape, "dk", &dk); cmp(&ab, shape, "dv", &dv); }
                    }
                    pool_release();
                }
    op_end(&af); op_end(&ab);
}

/* Decoding attention and the cache append: G 1, 3, 8; len 1 and 37 of max_len 40 (the
   rows past len hold random values that must be ignored). */
static void test_decode_ops(void) {
    static const int64_t cfgs[5][3] = { { 2, 2, 64 }, { 6, 1, 128 }, { 12, 2, 128 }, { 4, 4, 16 }, { 6, 6, 80 } };
    static const int64_t Gs[3] = { 1, 3, 8 }, lens[2] = { 1, 37 };
    opstat dd, ka;
    int c, gi, li, ok_;
    char shape[96];
    const int64_t max_len = 40;
    op_begin(&dd, "attention_decode", TC_CHAIN); op_begin(&ka, "kv_append", TC_EXACT);
    for (c = 0; c < 5; c++)
        for (gi = 0; gi < 3; gi++)
            for (li = 0; li < 2; li++) {
                int64_t NH = cfgs[c][0], NKV = cfgs[c][1], HS = cfgs[c][2], G = Gs[gi], len = lens[li];
                int64_t QD = NH * HS, KD = NKV * HS, t = len - 1;
                tbuf q, kc, vc, out, kn, vn, tt;
                g_setup_ok = 1;
                snprintf(shape, sizeof shape, "G=%lld len=%lld NH=%lld NKV=%lld HS=%lld", (long long)G, (long long)len,
                         (long long)NH, (long long)NKV, (long long)HS);
                q = in_x(G * QD, 1.0); kc = in_x(G * max_len * KD, 1.0); vc = in_x(G * max_len * KD, 1.0);
                out = out_x(G * QD);
                tt = in_i64(&t, 1);   /* the position lives in backend memory: rows 0..t */
                BOTH(&dd, shape, 0, OPS[s]->attention_decode(BE[s], XP(out), XP(q), XP(kc), XP(vc), G, LP(tt), max_len, NH, NKV, HS));
                if (ok_) cmp(&dd, shape, "out", &out);
                /* append row t = len - 1 (first and last-but-some rows); the rest must stay */
                kn = in_x(G * KD, 1.0); vn = in_x(G * KD, 1.0);
                BOTH(&ka, shape, 0, OPS[s]->kv_append(BE[s], XP(kc), XP(vc), XP(kn), XP(vn), G, LP(tt), max_len, KD));
                if (ok_) { cmp(&ka, shape, "kc", &kc); cmp(&ka, shape, "vc", &vc); }
                pool_release();
            }
    op_end(&dd); op_end(&ka);
}

/* Embedding rows and their gradient: repeated token ids, a pad id, image-feature rows used
   more than once (a shared image), the token-table gradient present or not. */
static void test_embed(void) {
    static const int64_t Hs[2] = { 64, 1536 }, Ts[3] = { 1, 17, 130 };
    opstat ef, eb;
    int hi, ti, with_dembed, ok_;
    char shape[96];
    const int64_t V = 1000, NF = 40, pad = 5;
    op_begin(&ef, "embed_forward", TC_EXACT); op_begin(&eb, "embed_backward", TC_GEMM);
    for (hi = 0; hi < 2; hi++)
        for (ti = 0; ti < 3; ti++) {
            int64_t H = Hs[hi], T = Ts[ti], t;
            int32_t *ids = (int32_t *)hmem((size_t)T * 4);
            int64_t *fr = (int64_t *)hmem((size_t)T * 8);
            tbuf embed, feat, dids, dfr, h;
            g_setup_ok = 1;
            if (!ids || !fr) continue;
            for (t = 0; t < T; t++) {
                uint64_t r = mbpo_rng_u64(&RNG);
                ids[t] = (int32_t)(r % 50 == 0 ? pad : (int64_t)((r >> 8) % 60));   /* few ids: repeats */
                fr[t] = (r >> 20) % 3 == 0 ? (int64_t)((r >> 24) % NF) : -1;       /* some rows repeat */
            }
            snprintf(shape, sizeof shape, "T=%lld H=%lld V=%lld", (long long)T, (long long)H, (long long)V);
            embed = in_x(V * H, 1.0); feat = in_x(NF * H, 1.0); dids = in_i32(ids, T); dfr = in_i64(fr, T);
            h = out_x(T * H);
            BOTH(&ef, shape, 0, OPS[s]->embed_forward(BE[s], XP(h), XP(embed), XP(feat), IP(dids), LP(dfr), T, H));
            if (ok_) cmp(&ef, shape, "h", &h);
            for (with_dembed = 0; with_dembed < 2; with_dembed++) {
                tbuf dh = in_x(T * H, 1.0), dembed = in_f(V * H, 0.5), dfeat = in_x(NF * H, 0.5);
                char sh2[128];
                snprintf(sh2, sizeof sh2, "%s%s", shape, with_dembed ? "" : " dembed NULL");
                BOTH(&eb, sh2, 0, OPS[s]->embed_backward(BE[s], with_dembed ? FP(dembed) : NULL, XP(dfeat), XP(dh), IP(dids), LP(dfr),
                                                         pad, T, H));
                if (ok_) { cmp(&eb, sh2, "dfeat", &dfeat); if (with_dembed) cmp(&eb, sh2, "dembed", &dembed); }
            }
            pool_release();
        }
    op_end(&ef); op_end(&eb);
    {   /* gather_rows: a permutation of rows, copied without rounding (Qwen2.5-VL's window order) */
        static const int64_t shapes[3][2] = { { 4, 48 }, { 92, 1176 }, { 1024, 80 } };
        opstat gr;
        int k;
        op_begin(&gr, "gather_rows", TC_EXACT);
        for (k = 0; k < 3; k++) {
            int64_t R = shapes[k][0], W = shapes[k][1], r;
            int64_t *idx = (int64_t *)hmem((size_t)R * 8);
            tbuf inp, out, didx;
            g_setup_ok = 1;
            if (!idx) continue;
            for (r = 0; r < R; r++) idx[r] = r;
            for (r = R - 1; r > 0; r--) {   /* Fisher-Yates */
                int64_t q = (int64_t)(mbpo_rng_u64(&RNG) % (uint64_t)(r + 1)), t = idx[r];
                idx[r] = idx[q]; idx[q] = t;
            }
            snprintf(shape, sizeof shape, "R=%lld W=%lld", (long long)R, (long long)W);
            inp = in_x(R * W, 1.0); didx = in_i64(idx, R); out = out_x(R * W);
            BOTH(&gr, shape, 0, OPS[s]->gather_rows(BE[s], XP(out), XP(inp), LP(didx), R, W));
            if (ok_) cmp(&gr, shape, "out", &out);
            pool_release();
        }
        op_end(&gr);
    }
}

/* The fused head over target rows, chunk by chunk; and full logits rows. V up to the real
   vocabulary (151936) for the reductions over V. */
static void test_head(void) {
    static const int64_t shapes[][4] = {   /* N, H, V, chunk */
        { 1, 64, 1000, 64 }, { 17, 64, 1000, 7 }, { 130, 64, 4097, 64 }, { 17, 1536, 4097, 64 }, { 130, 1536, 1000, 64 },
        { 3, 64, 151936, 64 },
    };
    opstat hf, hb, lg;
    size_t k;
    int ok_, with_dw;
    char shape[96];
    op_begin(&hf, "head_forward", TC_CHAIN); op_begin(&hb, "head_backward", TC_CHAIN); op_begin(&lg, "logits", TC_GEMM);
    for (k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int64_t N = shapes[k][0], H = shapes[k][1], V = shapes[k][2], CH = shapes[k][3], T = N + 9, n, t;
        int64_t *rows = (int64_t *)hmem((size_t)N * 8);
        int32_t *labels = (int32_t *)hmem((size_t)N * 4);
        tbuf xf, lm, drows, dlabels, logp, lse, cx, cz, cdx, z;
        g_setup_ok = 1;
        if (!rows || !labels) continue;
        /* N distinct rows of T, increasing (selection sampling: row t taken with probability
           still needed / still left) */
        for (t = 0, n = 0; t < T; t++)
            if ((int64_t)(mbpo_rng_u64(&RNG) % (uint64_t)(T - t)) < N - n) rows[n++] = t;
        for (n = 0; n < N; n++) labels[n] = (int32_t)(mbpo_rng_u64(&RNG) % (uint64_t)V);
        snprintf(shape, sizeof shape, "N=%lld H=%lld V=%lld chunk=%lld", (long long)N, (long long)H, (long long)V, (long long)CH);
        xf = in_x(T * H, 1.0); lm = in_x(V * H, 1.0 / sqrt((double)H) * 3.0);
        drows = in_i64(rows, N); dlabels = in_i32(labels, N);
        logp = out_f(N); lse = out_f(N);
        cx = tb_new(KX, CH * H); cz = tb_new(KF, CH * V); cdx = tb_new(KX, CH * H);
        BOTH(&hf, shape, 0, OPS[s]->head_forward(BE[s], FP(logp), FP(lse), XP(xf), XP(lm), LP(drows), IP(dlabels), N, H, V, CH,
                                                 XP(cx), FP(cz)));
        if (ok_) { cmp(&hf, shape, "logp", &logp); cmp(&hf, shape, "lse", &lse); }
        if (g_setup_ok) {
            float *hl = (float *)hmem((size_t)N * 4);
            tbuf l2, dlogp;
            if (!hl) continue;
            OPS[0]->download(BE[0], hl, lse.p[0], (size_t)N * 4);
            l2 = in_fv(hl, N); dlogp = in_f(N, 1.0);
            for (with_dw = 0; with_dw < 2; with_dw++) {
                tbuf dxf = in_x(T * H, 0.5), dlm = in_f(V * H, 0.5);
                char sh2[128];
                snprintf(sh2, sizeof sh2, "%s%s", shape, with_dw ? "" : " dlm_head NULL");
                BOTH(&hb, sh2, 0, OPS[s]->head_backward(BE[s], XP(dxf), with_dw ? FP(dlm) : NULL, FP(dlogp), FP(l2), XP(xf), XP(lm),
                                                        LP(drows), IP(dlabels), N, H, V, CH, XP(cx), FP(cz), XP(cdx)));
                if (ok_) { cmp(&hb, sh2, "dxf", &dxf); if (with_dw) cmp(&hb, sh2, "dlm_head", &dlm); }
            }
        }
        if (N <= 17) {
            z = out_f(N * V);
            BOTH(&lg, shape, 0, OPS[s]->logits(BE[s], FP(z), XP(xf), XP(lm), N, H, V));
            if (ok_) cmp(&lg, shape, "z", &z);
        }
        pool_release();
    }
    op_end(&hf); op_end(&hb); op_end(&lg);
}

/* The optimizer on the backend.
   sumsq: g (n) fp32 random, n 1, 1000 and 2^20 + 17 (more than the capped grid: the
   grid-stride loop and both passes); the GPU sums in another order than the CPU's
   sequential one, both in double over exact squares, so |got - ref| / ref <= 1e-12 (a
   sequential sum of n positive terms is within n u ~ 1.2e-10 worst case, ~sqrt(n) u
   typically); and two GPU calls give the same bits (the order depends on n only).
   adamw: n = 2^20 + 5 random master, g, m and v >= 0, one update with k of a run (lr 3e-4,
   betas 0.9 / 0.999, eps 1e-8, step 10, no decay, no clipping) and one at step 1 with
   decay 0.1 and a clipping factor 0.37. master, m and v must be within 1 float ulp of the
   CPU op's, not bitwise: nvcc contracts the double a * b + c of the formula into FMAs
   (and the host compiler, with -march=native -ffp-contract=fast, may too, elsewhere), which
   moves each double result by about an ulp of double; the two roundings to float agree
   unless a float rounding boundary lies between the two doubles, and then differ by one ulp
   (more would take a cancellation of b1 m + (1 - b1) g to 2^-29 of its terms). px must be
   exactly the backend conversion of the GPU's own master (bf16 round to nearest even; the
   fp32 build: equal). */
static int64_t ulp_order(float f) {   /* floats as integers in value order: ulp distance = difference */
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : (int64_t)i;
}
static void cmp_ulp(opstat *st, const char *shape, const char *what, const tbuf *b, int64_t max_ulp) {
    float *got, *ref;
    int64_t i, worst = 0, nbad = 0, wi = 0;
    if (!both_sides(st, shape, what, b, &got, &ref)) return;
    for (i = 0; i < b->n; i++) {
        int64_t d = ulp_order(got[i]) - ulp_order(ref[i]);
        if (d < 0) d = -d;
        if (!isfinite(got[i]) || !isfinite(ref[i])) d = memcmp(&got[i], &ref[i], 4) ? INT64_MAX : 0;
        if (d > max_ulp) nbad++;
        if (d > worst) { worst = d; wi = i; }
    }
    if (nbad) {
        st->fails++; n_failed++;
        printf("FAIL  %s %s [%s]: %lld of %lld values more than %lld ulp apart (worst at %lld: got %.9g ref %.9g)\n", st->op,
               what, shape, (long long)nbad, (long long)b->n, (long long)max_ulp, (long long)wi, got[wi], ref[wi]);
        return;
    }
    if ((double)worst >= st->worst) {
        st->worst = (double)worst;
        snprintf(st->worst_shape, sizeof st->worst_shape, "%s %s", what, shape);
    }
}
static void test_optimizer(void) {
    static const int64_t sizes[3] = { 1, 1000, (1 << 20) + 17 };
    opstat sq, aw, ax;
    int k, ok_;
    char shape[96];
    op_begin(&sq, "sumsq", TC_EXACT);
    sq.metric = "rel-err"; sq.tol = 1e-12;
    for (k = 0; k < 3; k++) {
        int64_t n = sizes[k];
        double out[2] = { NAN, NAN }, again = NAN, rel;
        tbuf g;
        g_setup_ok = 1;
        snprintf(shape, sizeof shape, "n=%lld", (long long)n);
        g = in_f(n, 1.0);
        BOTH(&sq, shape, 0, OPS[s]->sumsq(BE[s], &out[s], FP(g), n));
        if (ok_ && !OPS[1]->sumsq(BE[1], &again, (const float *)g.p[1], n)) { ok_ = 0; call_failed(&sq, shape, 1, 0); }
        if (ok_) {
            rel = fabs(out[1] - out[0]) / (fabs(out[0]) > 1e-300 ? fabs(out[0]) : 1e-300);
            sq.cases++;
            if (!(rel <= sq.tol) || memcmp(&out[1], &again, sizeof(double))) {
                sq.fails++; n_failed++;
                printf("FAIL  sumsq [%s]: got %.17g ref %.17g (rel-err %.3e, tol %.0e); a second call gave %.17g (%s)\n", shape,
                       out[1], out[0], rel, sq.tol, again, memcmp(&out[1], &again, sizeof(double)) ? "differs" : "same bits");
            } else if (rel >= sq.worst) { sq.worst = rel; snprintf(sq.worst_shape, sizeof sq.worst_shape, "%s", shape); }
        }
        pool_release();
    }
    op_end(&sq);

    op_begin(&aw, "adamw", TC_EXACT);
    aw.metric = "ulp"; aw.tol = 1;
    op_begin(&ax, "adamw px", TC_EXACT);
    ax.metric = "mismatches";
    for (k = 0; k < 2; k++) {
        const int64_t n = (1 << 20) + 5;
        mbpo__adamw_k kk;
        int64_t i, nbad = 0, first = -1;
        float *hv = hrand(n, 1e-3, 0), *gm, *gp;
        tbuf master, px, m, v, g;
        g_setup_ok = 1;
        if (k == 0) { kk.lr = 3e-4; kk.beta1 = 0.9; kk.beta2 = 0.999; kk.eps = 1e-8; kk.weight_decay = 0; kk.scale = 1; }
        else { kk.lr = 1e-5; kk.beta1 = 0.9; kk.beta2 = 0.95; kk.eps = 1e-6; kk.weight_decay = 0.1; kk.scale = 0.37; }
        kk.bc1 = 1 - pow(kk.beta1, k == 0 ? 10.0 : 1.0);
        kk.bc2 = 1 - pow(kk.beta2, k == 0 ? 10.0 : 1.0);
        snprintf(shape, sizeof shape, "n=%lld lr=%g wd=%g scale=%g step=%d", (long long)n, kk.lr, kk.weight_decay, kk.scale,
                 k == 0 ? 10 : 1);
        if (hv) for (i = 0; i < n; i++) hv[i] *= hv[i];   /* second moments ~ g^2 >= 0 */
        master = in_f(n, 0.05); g = in_f(n, 1e-3); m = in_f(n, 1e-4); v = in_fv(hv, n);
        px = out_x(n);
        /* the CPU op's px is its master (the CPU has no second copy) */
        BOTH(&aw, shape, 0, OPS[s]->adamw(BE[s], FP(master), s ? XP(px) : (mbpo_x *)FP(master), FP(m), FP(v), FP(g), n, &kk));
        if (!ok_) { pool_release(); continue; }
        cmp_ulp(&aw, shape, "master", &master, 1);
        cmp_ulp(&aw, shape, "m", &m, 1);
        cmp_ulp(&aw, shape, "v", &v, 1);
        gm = (float *)hmem((size_t)n * sizeof(float)); gp = (float *)hmem((size_t)n * sizeof(float));
        if (!gm || !gp) { pool_release(); continue; }
        ax.cases++;
        if (!tb_get(&master, 1, gm) || !tb_get(&px, 1, gp)) {
            ax.fails++; n_failed++;
            printf("FAIL  adamw px [%s]: download: %s\n", shape, mbpo_failure_reason());
        } else {
            for (i = 0; i < n; i++) {
                float want = xround(gm[i]);
                if (memcmp(&gp[i], &want, 4)) { if (first < 0) first = i; nbad++; }
            }
            if (nbad) {
                ax.fails++; n_failed++;
                printf("FAIL  adamw px [%s]: %lld of %lld values are not the storage type of master (first at %lld: px %.9g, "
                       "master %.9g)\n", shape, (long long)nbad, (long long)n, (long long)first, gp[first], gm[first]);
            } else if (!ax.worst_shape[0]) snprintf(ax.worst_shape, sizeof ax.worst_shape, "px %s", shape);
        }
        pool_release();
    }
    op_end(&aw); op_end(&ax);
}

/* Sampling on the backend (the sample op) against mbpo__cpu_sample. G = 8 rows of z (G, V)
   fp32, rows 2 and 5 not live, 4 ban ids; V 1000 and 151936 (Qwen2-VL's vocabulary).
   layout 0: N(0, 9) logits; row 1 exact ties at the max (three ids at 20; a banned id at 30);
   row 4 one logit at +200, so that id holds nearly all the mass (the others ~e^-270 each:
   candidates in double, 0 as floats), with u = 0 in its first draw (the walk's strict
   target < acc must pass the zero-mass candidates); row 6 one logit at +15.
   layout 1 (V 1000): z[0] NaN; a NaN inside a row; +inf; a row all -inf; all equal; -0.0 and
   +0.0 tied among -inf; ban ids -1, V and V + 7 (ignored) next to V - 1.
   Greedy (T = 0): tokens equal to the CPU's, exactly. T = 1.0 and 0.7, u from the seeded RNG:
   the GPU sums in a fixed tree and walks per-thread ranges (mbpo_cuda.cuh section 13), so a
   token may differ only where u S falls within rounding of a boundary of the cumulative
   distribution (~1e-14 per draw): the mismatches are counted and printed, and must be 0
   for these seeds. Every case also: a second GPU call with the same draws gives the
   same tokens; tok of the rows not live is left as it was; z after the calls is the CPU's z
   bit for bit (the bans written as -inf in live rows, rows not live untouched). The op is the
   same in both builds (z is fp32). */
static void sample_rows(float *z, int64_t V, int layout) {
    int64_t i;
    float *row;
    fill_normal(z, 8 * V, &RNG, 3.0);
    if (layout == 0) {
        row = z + 1 * V; row[V / 7] = 20; row[V / 3] = 20; row[V - 2] = 20; row[V / 4] = 30;
        row = z + 4 * V; row[V / 2 + 3] = 200;
        row = z + 6 * V; row[5] = 15;
        return;
    }
    z[0] = NAN;
    z[1 * V + V / 2] = NAN;
    z[3 * V + V / 3] = INFINITY;
    for (i = 0; i < V; i++) { z[4 * V + i] = -INFINITY; z[6 * V + i] = 0.5f; z[7 * V + i] = -INFINITY; }
    z[7 * V + 3] = -0.0f; z[7 * V + 4] = 0.0f;
}
static void test_sample(void) {
    static const struct { int64_t V; int layout; double T; int64_t top_k; double top_p; int draws; } cases[] = {
        { 1000, 0, 0.0, 0, 1, 1 }, { 1000, 0, 1.0, 0, 1, 200 }, { 1000, 0, 0.7, 0, 1, 200 },
        { 151936, 0, 0.0, 0, 1, 1 }, { 151936, 0, 1.0, 0, 1, 40 }, { 151936, 0, 0.7, 0, 1, 40 },
        { 1000, 1, 0.0, 0, 1, 1 }, { 1000, 1, 1.0, 0, 1, 20 },
        /* top-k, top-p and both (HF's order: the nucleus of what top-k kept) */
        { 1000, 0, 1.0, 5, 1, 100 }, { 1000, 0, 1.0, 0, 0.9, 100 }, { 1000, 0, 0.7, 50, 0.8, 100 },
        { 1000, 0, 1.0, 1, 1, 20 }, { 1000, 0, 1.0, 0, 1e-9, 20 }, { 1000, 0, 1.0, 2000, 1, 20 },
        { 151936, 0, 1.0, 50, 1, 20 }, { 151936, 0, 1.0, 0, 0.95, 20 }, { 151936, 0, 0.7, 64, 0.9, 20 },
        { 1000, 1, 1.0, 5, 0.9, 20 },
    };
    static const unsigned char done[8] = { 0, 0, 1, 0, 0, 1, 0, 0 };
    opstat gr, tp, tk, zs, lp;
    int64_t all_draws = 0, all_mis = 0;
    size_t c;
    int ok_;
    char shape[128];
    op_begin(&gr, "sample (greedy)", TC_EXACT); gr.metric = "mismatches";
    op_begin(&tp, "sample (temperature)", TC_EXACT); tp.metric = "mismatches";
    op_begin(&tk, "sample (top-k, top-p)", TC_EXACT); tk.metric = "mismatches";
    op_begin(&zs, "sample z, idle rows", TC_EXACT); zs.metric = "mismatches";
    op_begin(&lp, "sample logp", TC_EXACT); lp.metric = "max-abs"; lp.tol = 1e-6;
    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int64_t V = cases[c].V, G = 8, NP = 24;   /* a pool of NP draws, read from st[NU] on */
        mbpo__sample_k k;
        opstat *st = cases[c].T <= 0 ? &gr : cases[c].top_k > 0 || cases[c].top_p < 1 ? &tk : &tp;
        float *hz = (float *)hmem((size_t)(G * V) * sizeof(float)), *zc, *zg;
        int64_t nmis = 0, nother = 0, ndraw = 0, i;
        int rep, g, b;
        tbuf z, dn;
        g_setup_ok = 1;
        if (!hz) continue;
        memset(&k, 0, sizeof k);
        k.temperature = cases[c].T; k.top_k = cases[c].top_k; k.top_p = cases[c].top_p; k.n_ban = 4;
        if (cases[c].layout == 0) { k.ban[0] = 1; k.ban[1] = V / 4; k.ban[2] = V / 2; k.ban[3] = V - 1; }
        else { k.ban[0] = V - 1; k.ban[1] = -1; k.ban[2] = V; k.ban[3] = V + 7; }
        snprintf(shape, sizeof shape, "G=8 V=%lld layout %d T=%g top-k %lld top-p %g, %d draws", (long long)V,
                 cases[c].layout, cases[c].T, (long long)cases[c].top_k, cases[c].top_p, cases[c].draws);
        sample_rows(hz, V, cases[c].layout);
        z = in_fv(hz, G * V);
        dn = tb_new(KB, G); tb_set(&dn, done);
        st->cases++;
        for (rep = 0; rep < cases[c].draws && g_setup_ok; rep++) {
            double u[24];
            int64_t sv[MBPO__GS_N] = { 0, 0, 0, 0, 0 };
            int32_t tok[2][8], again[8], init[8];
            float lpv[2][8];
            int mark = pool_n, hmark = pool_hn;
            tbuf ut, stt, tt, lt, t2, l2;
            for (i = 0; i < NP; i++) u[i] = mbpo_rng_uniform(&RNG);
            if (rep == 0 && cases[c].layout == 0) u[3] = 0.0;   /* row 4's draw (NU 0: rows 0, 1, 3 before it) */
            sv[MBPO__GS_NU] = rep == 0 ? 0 : rep % (NP - 6 + 1);   /* rank r of a live row reads u[NU + r] */
            for (g = 0; g < 8; g++) init[g] = -7;
            ut = tb_new(KI64, NP); tb_set(&ut, u);
            stt = in_i64(sv, MBPO__GS_N);
            tt = in_i32(init, G); t2 = in_i32(init, G);
            lt = out_f(G); l2 = out_f(G);
            BOTH(st, shape, 0, OPS[s]->sample(BE[s], IP(tt), FP(lt), FP(z), (const double *)ut.p[s], LP(stt),
                                              (const unsigned char *)dn.p[s], G, V, &k));
            if (ok_ && !OPS[1]->sample(BE[1], (int32_t *)t2.p[1], (float *)l2.p[1], (float *)z.p[1],
                                       (const double *)ut.p[1], (const int64_t *)stt.p[1], (const unsigned char *)dn.p[1], G, V, &k)) {
                ok_ = 0; call_failed(st, shape, 1, 0);
            }
            if (ok_ && (!tb_get(&tt, 0, (float *)tok[0]) || !tb_get(&tt, 1, (float *)tok[1]) || !tb_get(&t2, 1, (float *)again) ||
                        !tb_get(&lt, 0, lpv[0]) || !tb_get(&lt, 1, lpv[1]))) {
                ok_ = 0; call_failed(st, shape, 1, 0);
            }
            if (!ok_) { pool_release(); g_setup_ok = 0; break; }
            for (g = 0; g < 8; g++) {
                double e;
                if (done[g]) {
                    if (tok[1][g] != -7 || again[g] != -7) {
                        nother++;
                        printf("FAIL  sample [%s]: row %d is done but its token became %d\n", shape, g, tok[1][g]);
                    }
                    continue;
                }
                ndraw++;
                if (again[g] != tok[1][g]) {
                    nother++;
                    printf("FAIL  sample [%s]: row %d: two GPU calls gave %d and %d\n", shape, g, tok[1][g], again[g]);
                }
                if (tok[1][g] != tok[0][g]) {
                    nmis++;
                    printf("      sample [%s]: row %d (NU %lld): GPU token %d, CPU token %d\n", shape, g,
                           (long long)sv[MBPO__GS_NU], tok[1][g], tok[0][g]);
                    continue;
                }
                /* the log-prob of the same token: both NaN (a row without finite logits) or close */
                lp.cases++;
                e = isnan(lpv[0][g]) && isnan(lpv[1][g]) ? 0 : fabs((double)lpv[1][g] - lpv[0][g]);
                if (!(e <= lp.tol)) {
                    lp.fails++; n_failed++;
                    printf("FAIL  sample logp [%s]: row %d token %d: GPU %.9g, CPU %.9g\n", shape, g, tok[0][g], lpv[1][g], lpv[0][g]);
                } else if (e >= lp.worst) { lp.worst = e; snprintf(lp.worst_shape, sizeof lp.worst_shape, "%s", shape); }
            }
            pool_release_to(mark, hmark);   /* the per-draw buffers; z and done stay */
        }
        if (!g_setup_ok) { pool_release(); continue; }
        if (cases[c].T > 0) { all_draws += ndraw; all_mis += nmis; }
        if (nmis || nother) {
            st->fails++; n_failed++;
            printf("FAIL  %s [%s]: %lld of %lld tokens differ from the CPU's, %lld other failures\n", st->op, shape,
                   (long long)nmis, (long long)ndraw, (long long)nother);
        } else if (!st->worst_shape[0]) snprintf(st->worst_shape, sizeof st->worst_shape, "%s", shape);
        /* z after: the CPU's (bans), rows done as uploaded, bans -inf in live rows */
        zc = (float *)hmem((size_t)(G * V) * sizeof(float)); zg = (float *)hmem((size_t)(G * V) * sizeof(float));
        if (!g_setup_ok || !zc || !zg) { pool_release(); continue; }
        zs.cases++;
        nother = 0;
        if (!tb_get(&z, 0, zc) || !tb_get(&z, 1, zg)) {
            zs.fails++; n_failed++;
            printf("FAIL  sample z [%s]: download: %s\n", shape, mbpo_failure_reason());
            pool_release();
            continue;
        }
        for (g = 0; g < 8; g++) {
            for (i = 0; i < V; i++) {
                int64_t j = g * V + i;
                if (memcmp(&zg[j], &zc[j], 4) || (done[g] && memcmp(&zg[j], &hz[j], 4))) {
                    if (!nother) printf("FAIL  sample z [%s]: row %d id %lld: GPU %.9g, CPU %.9g, uploaded %.9g\n", shape, g,
                                        (long long)i, zg[j], zc[j], hz[j]);
                    nother++;
                }
            }
            for (b = 0; b < 4; b++)
                if (!done[g] && k.ban[b] >= 0 && k.ban[b] < V && zg[g * V + k.ban[b]] != -INFINITY) {
                    printf("FAIL  sample z [%s]: row %d: banned id %lld is %.9g\n", shape, g, (long long)k.ban[b], zg[g * V + k.ban[b]]);
                    nother++;
                }
        }
        if (nother) { zs.fails++; n_failed++; }
        else if (!zs.worst_shape[0]) snprintf(zs.worst_shape, sizeof zs.worst_shape, "%s", shape);
        pool_release();
    }
    printf("  sample: %lld temperature draws, %lld GPU tokens differ from the CPU's\n", (long long)all_draws, (long long)all_mis);
    op_end(&gr); op_end(&tp); op_end(&tk); op_end(&zs); op_end(&lp);
}

/* gen_step (mbpo_generate's bookkeeping) against mbpo__cpu_gen_step, exactly: 200 random
   states (rows done or not, lengths up to the row's end, GO 0 or 1, draws on or off, 0 to 3
   stop ids that some tokens hit, out_logp given or NULL); every buffer compared byte for byte,
   the rows' unwritten entries included. */
static void test_gen_step(void) {
    const int64_t stride = 6;
    opstat gs;
    int trial, ok_;
    char shape[96];
    op_begin(&gs, "gen_step", TC_EXACT); gs.metric = "mismatches";
    for (trial = 0; trial < 200; trial++) {
        const int64_t G = 1 + (int64_t)(mbpo_rng_u64(&RNG) % 9);
        int64_t sv[MBPO__GS_N], pos0[27], g, i;
        int32_t out0[9 * 6], len0[9], tok[9];
        float lo0[9 * 6], lp[9];
        unsigned char dn0[9];
        mbpo__step_k k;
        int with_logp = trial % 3 != 0, sd, bad = 0;
        tbuf out, lo, len, dn, st, pos, tt, lt;
        g_setup_ok = 1;
        memset(&k, 0, sizeof k);
        k.n_stop = (int)(mbpo_rng_u64(&RNG) % 4); k.draws = (int)(mbpo_rng_u64(&RNG) % 2);
        for (i = 0; i < k.n_stop; i++) k.stop[i] = (int32_t)(mbpo_rng_u64(&RNG) % 12);
        for (i = 0; i < G * stride; i++) { out0[i] = (int32_t)(1000 + i); lo0[i] = (float)i * 0.25f; }
        for (g = 0; g < G; g++) {
            dn0[g] = mbpo_rng_u64(&RNG) % 3 == 0;
            len0[g] = (int32_t)(mbpo_rng_u64(&RNG) % (uint64_t)(stride + 1));   /* stride: a full row */
            tok[g] = (int32_t)(mbpo_rng_u64(&RNG) % 12);
            lp[g] = -(float)(mbpo_rng_u64(&RNG) % 100) / 7.0f;
        }
        sv[MBPO__GS_T] = 30 + trial; sv[MBPO__GS_NU] = trial; sv[MBPO__GS_LIVE] = -1;
        sv[MBPO__GS_GO] = trial % 2; sv[MBPO__GS_DELTA] = (int64_t)(trial % 5) - 2;
        for (i = 0; i < 3 * G; i++) pos0[i] = -99;
        snprintf(shape, sizeof shape, "G=%lld stops %d draws %d GO %lld%s", (long long)G, k.n_stop, k.draws,
                 (long long)sv[MBPO__GS_GO], with_logp ? "" : ", no out_logp");
        out = in_i32(out0, G * stride); lo = in_fv(lo0, G * stride); len = in_i32(len0, G);
        dn = tb_new(KB, G); tb_set(&dn, dn0);
        st = in_i64(sv, MBPO__GS_N); pos = in_i64(pos0, 3 * G); tt = in_i32(tok, G); lt = in_fv(lp, G);
        gs.cases++;
        BOTH(&gs, shape, 0, OPS[s]->gen_step(BE[s], IP(out), with_logp ? FP(lo) : NULL, IP(len), (unsigned char *)dn.p[s], LP(st),
                                             LP(pos), IP(tt), FP(lt), G, stride, &k));
        if (!ok_) { pool_release(); continue; }
        {   /* every buffer, both sides, as bytes */
            const tbuf *bufs[6] = { &out, &lo, &len, &dn, &st, &pos };
            const char *names[6] = { "out", "out_logp", "len", "done", "st", "pos" };
            for (i = 0; i < 6; i++) {
                size_t bytes = (size_t)bufs[i]->n * elem_size(0, bufs[i]->kind);
                unsigned char *h[2];
                for (sd = 0; sd < 2; sd++) {
                    h[sd] = (unsigned char *)hmem(bytes);
                    if (!h[sd] || !OPS[sd]->download(BE[sd], h[sd], bufs[i]->p[sd], bytes)) { bad = 1; break; }
                }
                if (bad) { printf("FAIL  gen_step [%s]: download of %s: %s\n", shape, names[i], mbpo_failure_reason()); break; }
                if (memcmp(h[0], h[1], bytes)) { bad = 1; printf("FAIL  gen_step [%s]: %s differs from the CPU's\n", shape, names[i]); }
            }
        }
        if (bad) { gs.fails++; n_failed++; }
        else if (!gs.worst_shape[0]) snprintf(gs.worst_shape, sizeof gs.worst_shape, "%s", shape);
        pool_release();
    }
    op_end(&gs);
}

/* The PGD ops (pixels, pixels_backward, pgd_step) against the CPU ops, on a random map in which
   every image value feeds T = 2 pixel-row entries (as a still image's two frames do), with the
   slow processor's constants (k = 1) and the fast one's (k = 255: the product rounded alone):
   pixel rows exactly the storage type of the CPU's, the adjoint and the step bitwise (fp32 math
   on the same inputs). */
static void test_pgd_ops(void) {
    const int64_t n = 28 * 56 * 3, T = 2, npv = n * T;
    opstat px, pb, ps;
    /* kept across pool_release (which frees hmem's scratch) */
    int64_t *map = (int64_t *)malloc((size_t)npv * sizeof(int64_t)), *inv = (int64_t *)malloc((size_t)npv * sizeof(int64_t));
    int64_t *cnt = (int64_t *)calloc((size_t)n, sizeof(int64_t)), i, j;
    float *x = (float *)malloc((size_t)n * sizeof(float)), *x0 = (float *)malloc((size_t)n * sizeof(float));
    float *got, *ref;
    int k, ok_;
    char shape[96];
    op_begin(&px, "pixels", TC_EXACT); op_begin(&pb, "pixels_backward", TC_EXACT); op_begin(&ps, "pgd_step", TC_EXACT);
    if (!map || !inv || !cnt || !x || !x0) { n_failed++; printf("FAIL  test setup: out of memory\n"); return; }
    for (j = 0; j < npv; j++) map[j] = j / T;   /* then shuffled: a map no loop order explains */
    for (j = npv - 1; j > 0; j--) {
        int64_t r = (int64_t)(mbpo_rng_u64(&RNG) % (uint64_t)(j + 1)), t = map[j];
        map[j] = map[r]; map[r] = t;
    }
    for (j = 0; j < npv; j++) inv[map[j] * T + cnt[map[j]]++] = j;
    for (i = 0; i < n; i++) {
        x0[i] = (float)(mbpo_rng_u64(&RNG) % 256) / 255.0f;   /* an 8-bit image, as mbpo_image_to_float gives */
        x[i] = x0[i] + (float)((int)(mbpo_rng_u64(&RNG) % 9) - 4) / 255.0f;
        x[i] = x[i] < 0 ? 0 : x[i] > 1 ? 1 : x[i];
    }
    for (k = 0; k < 2; k++) {
        float kms[7] = { 1.0f, 0.48145466f, 0.4578275f, 0.40821073f, 0.26862954f, 0.26130258f, 0.27577711f };
        tbuf xb, x0b, mapb, invb, pv, dpv, dx;
        if (k) { kms[0] = 255.0f; for (i = 1; i < 7; i++) kms[i] *= 255.0f; }
        snprintf(shape, sizeof shape, "n=%lld T=%lld k=%g", (long long)n, (long long)T, kms[0]);
        g_setup_ok = 1;
        xb = in_fv(x, n); x0b = in_fv(x0, n); mapb = in_i64(map, npv); invb = in_i64(inv, npv);
        pv = out_x(npv); dpv = in_x(npv, 1.0); dx = out_f(n);
        BOTH(&px, shape, 0, OPS[s]->pixels(BE[s], XP(pv), FP(xb), LP(mapb), npv, kms));
        if (ok_ && both_sides(&px, shape, "pv", &pv, &got, &ref)) {   /* the storage type of the CPU's fp32 rows, exactly */
            int64_t bad = 0;
            for (j = 0; j < npv; j++) { float w = xround(ref[j]); bad += memcmp(&w, &got[j], 4) != 0; }
            if (bad) { px.fails++; n_failed++; printf("FAIL  pixels [%s]: %lld rows differ from the CPU's\n", shape, (long long)bad); }
            else if (!px.worst_shape[0]) snprintf(px.worst_shape, sizeof px.worst_shape, "%s", shape);
        }
        BOTH(&pb, shape, 0, OPS[s]->pixels_backward(BE[s], FP(dx), XP(dpv), LP(invb), n, T, kms));
        if (ok_) cmp(&pb, shape, "dx", &dx);
        {   /* signs of dx, some zero; with the ball and without */
            float *g = (float *)hmem((size_t)n * sizeof(float));
            tbuf gb;
            int e;
            if (!g) break;
            for (i = 0; i < n; i++) g[i] = (float)((int)(mbpo_rng_u64(&RNG) % 3) - 1) * 0.5f;
            gb = in_fv(g, n);
            for (e = 0; e < 2; e++) {
                float eps = e ? 6.0f / 255.0f : -1.0f;
                BOTH(&ps, shape, 0, OPS[s]->pgd_step(BE[s], FP(xb), FP(x0b), FP(gb), n, 4.0f / 255.0f, eps));
                if (ok_) cmp(&ps, shape, e ? "x, eps 6/255" : "x, no ball", &xb);
            }
        }
        pool_release();
    }
    op_end(&px); op_end(&pb); op_end(&ps);
    free(map); free(inv); free(cnt); free(x); free(x0);
}

static void test_ops(void) {
    if (!run_test("ops")) return;
    printf("  (%s build; metric %s; CUDA x_size %zu)\n", BUILD_NAME, metric_name(), OPS[1]->x_size);
    CHECK(OPS[1]->x_size == (FP32_BUILD ? 4u : 2u), "CUDA x_size %zu, want %d in the %s build", OPS[1]->x_size, FP32_BUILD ? 4 : 2, BUILD_NAME);
    test_memory();
    test_matmul();
    test_norms();
    test_elementwise();
    test_rotary();
    test_attention();
    test_decode_ops();
    test_embed();
    test_head();
    test_optimizer();
    test_sample();
    test_gen_step();
    test_pgd_ops();
}

/* ============================================================== whole model: shared pieces */

/* In the bf16 build both sides get the same bf16-representable parameters. */
static void round_params(mbpo_model *m) {
    xround_all(m->params, (int64_t)m->table.total_floats);
    mbpo_model_params_changed(m);
}

/* err of got vs ref with tolerance; one line; returns pass */
static int check_vec(const char *what, const float *got, const float *ref, int64_t n, double tol, int absolute) {
    int64_t bad = 0, worst = 0, i;
    double err = 0;
    if (absolute) {
        for (i = 0; i < n; i++) {
            double e = fabs((double)got[i] - ref[i]);
            if (!isfinite(got[i])) { bad++; continue; }
            if (e > err) { err = e; worst = i; }
        }
    } else err = err_metric(got, ref, n, &bad, &worst);
    if (bad || !(err <= tol)) {
        n_failed++;
        printf("FAIL  %-50s %s err %.3e > tol %.0e, %lld not finite (at %lld: got %.8g ref %.8g)\n", what,
               absolute ? "max-abs" : metric_name(), err, tol, (long long)bad, (long long)worst, n ? got[worst] : 0.0, n ? ref[worst] : 0.0);
        return 0;
    }
    n_passed++;
    printf("  ok  %-50s %s err %.3e (tol %.0e)\n", what, absolute ? "max-abs" : metric_name(), err, tol);
    return 1;
}

/* Every parameter gradient of g against ref (same table): per tensor by the build's
   metric, the worst three printed; bf16 also over the whole concatenated vector. Tensors
   where ref is exactly zero must be exactly zero (no gradient reaches them). */
static void check_grads(const char *label, const mbpo_model *mg, const float *ref_grads, const mbpo_model *layout,
                        double tol_tensor, double tol_global) {
    size_t p;
    double worst[3] = { -1, -1, -1 }, se = 0, sr = 0;
    const char *wname[3] = { "", "", "" };
    int fails = 0;
    char what[200];
    for (p = 0; p < layout->table.n; p++) {
        const mbpo_param_info *pi = &layout->table.info[p];
        const float *got = mg->grads + pi->offset, *ref = ref_grads + pi->offset;
        int64_t bad, wi, i, nz_ref = 0, nz_got = 0;
        double e;
        for (i = 0; i < pi->numel; i++) {
            double d = (double)got[i] - ref[i];
            nz_ref += ref[i] != 0.0f; nz_got += got[i] != 0.0f;
            se += d * d; sr += (double)ref[i] * ref[i];
        }
        if (!nz_ref) {
            if (nz_got) { fails++; n_failed++; printf("FAIL  %s grad %s: reference all zero, %lld non-zero here\n", label, pi->name, (long long)nz_got); }
            continue;
        }
        e = err_metric(got, ref, pi->numel, &bad, &wi);
        if (bad || !(e <= tol_tensor)) {
            fails++; n_failed++;
            printf("FAIL  %s grad %s: %s err %.3e > tol %.0e, %lld not finite (at %lld: got %.8g ref %.8g)\n", label, pi->name,
                   metric_name(), e, tol_tensor, (long long)bad, (long long)wi, got[wi], ref[wi]);
        }
        for (i = 0; i < 3; i++)
            if (e > worst[i]) {
                int j;
                for (j = 2; j > i; j--) { worst[j] = worst[j - 1]; wname[j] = wname[j - 1]; }
                worst[i] = e; wname[i] = pi->name;
                break;
            }
    }
    if (!FP32_BUILD) {
        double g = sqrt(se) / (sqrt(sr) > 1e-30 ? sqrt(sr) : 1e-30);
        snprintf(what, sizeof what, "%s all gradients (one vector)", label);
        if (!(g <= tol_global)) { fails++; n_failed++; printf("FAIL  %-50s rel-L2 %.3e > tol %.0e\n", what, g, tol_global); }
        else printf("  ..  %-50s rel-L2 %.3e (tol %.0e)\n", what, g, tol_global);
    }
    if (!fails) n_passed++;
    printf("  %s  %s %zu gradient tensors: worst %s %.2e %s, %.2e %s, %.2e %s (tol %.0e)\n", fails ? "!!" : "ok", label,
           layout->table.n, metric_name(), worst[0], wname[0], worst[1], wname[1], worst[2], wname[2], tol_tensor);
}

/* ============================================================== (b) the fixtures: CUDA vs CPU vs transformers */

typedef struct {
    mbpo_st st;
    int32_t *ids, grid[6], refs[2];
    uint8_t *target;
    int64_t S, P, n_images, n_targets, seq_off[2], ref_off[2];
    float *pixel_values;
} fixture_case;
static int load_case(fixture_case *fc, const char *path, int64_t pix) {
    int64_t n, *ids, *labels, *grid, i;
    memset(fc, 0, sizeof *fc);
    if (!mbpo_st_open(&fc->st, path)) return 0;
    ids = read_i64(&fc->st, "input_ids", &fc->S);
    labels = read_i64(&fc->st, "labels", NULL);
    if (!ids || !labels) return mbpo_failure_set("%s: no input_ids / labels", path);
    fc->ids = (int32_t *)calloc((size_t)fc->S, sizeof(int32_t));
    fc->target = (uint8_t *)calloc((size_t)fc->S, 1);
    for (i = 0; i < fc->S; i++) {   /* HF shifts inside the loss: t-1 predicts labels[t] */
        fc->ids[i] = (int32_t)ids[i];
        fc->target[i] = i > 0 && labels[i] != -100;
        fc->n_targets += fc->target[i];
    }
    grid = read_i64(&fc->st, "image_grid_thw", &n);
    if (grid) {
        fc->n_images = n / 3;
        for (i = 0; i < n && i < 6; i++) fc->grid[i] = (int32_t)grid[i];
        fc->pixel_values = read_f32(&fc->st, "pixel_values", &n);
        fc->P = n / pix;
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

/* Tolerances. CUDA vs CPU: fp32 as the CPU test holds the CPU to transformers (logits and
   logp abs 1e-4, gradients and dpixel max-rel 1e-4). bf16: a chain of ~10 rounded ops per
   layer, each 2^-9. Calibrated on the CPU with a table that rounds every activation output
   to bf16 (a lower bound of the GPU's error: it rounds only between ops), which gave on
   these fixtures logp 2e-3, logits 9e-3, dpixel 2.5e-2, gradients 3.3e-2 worst tensor and
   2.4e-2 over all: bounds logp 2e-2, logits 3e-2, dpixel 8e-2, gradients 1.5e-1 per tensor
   and 8e-2 over all. CUDA vs transformers: fp32 the CPU test's own (logits abs 1e-4, loss
   rel 1e-6, gradients 1e-4); bf16 (transformers ran fp32 on unrounded weights; emulated:
   logits 1.1e-2, dpixel 3.9e-2, gradients 5.2e-2 / 3.5e-2): logits 5e-2, loss 2e-2, dpixel
   1.5e-1, gradients 2e-1 per tensor and 1.5e-1 over all. */
static void fixture_case_run(const char *variant, const char *cname) {
    char dir[256], path[256], label[96], what[160];
    mbpo_model mc, mg;
    fixture_case fc;
    mbpo_batch b;
    float *logp_c, *logp_g, *dl, *lg_c, *lg_g, *dpix_c = NULL, *dpix_g = NULL, *fix;
    float *cpu_grads;
    int64_t N, T, V, t, n, pix;
    double loss = 0;
    snprintf(dir, sizeof dir, "tests/fixtures/%s/model", variant);
    snprintf(path, sizeof path, "tests/fixtures/%s/case_%s.safetensors", variant, cname);
    snprintf(label, sizeof label, "%s/%s", variant, cname);
    REQUIRE(mbpo_model_load(&mc, dir) && mbpo_model_load(&mg, dir), "load %s", dir);
    pix = mbpo_config_pix(&mc.cfg);
    REQUIRE(load_case(&fc, path, pix), "load %s", path);
    if (!FP32_BUILD) {
        round_params(&mc); round_params(&mg);
        if (fc.pixel_values) xround_all(fc.pixel_values, fc.P * pix);
    }
    b = case_batch(&fc);
    REQUIRE(mbpo_model_plan_on(&mc, MBPO_DEVICE_CPU, fc.S, fc.P, fc.n_targets, 1), "plan cpu");
    REQUIRE(mbpo_model_plan_on(&mg, MBPO_DEVICE_CUDA, fc.S, fc.P, fc.n_targets, 1), "plan cuda");
    T = fc.S; V = mc.cfg.vocab_size;
    logp_c = falloc(fc.n_targets); logp_g = falloc(fc.n_targets); dl = falloc(fc.n_targets);
    lg_c = falloc(T * V); lg_g = falloc(T * V);
    N = mbpo_model_forward(&mc, &b, logp_c);
    REQUIRE(N == fc.n_targets, "cpu forward");
    REQUIRE(mbpo_model_forward(&mg, &b, logp_g) == N, "cuda forward");
    for (t = 0; t < T; t++) {
        REQUIRE(mbpo_model_logits(&mc, t, lg_c + t * V), "cpu logits");
        REQUIRE(mbpo_model_logits(&mg, t, lg_g + t * V), "cuda logits");
    }
    snprintf(what, sizeof what, "%s logp cuda vs cpu", label);
    check_vec(what, logp_g, logp_c, N, FP32_BUILD ? 1e-4 : 2e-2, FP32_BUILD);
    snprintf(what, sizeof what, "%s logits cuda vs cpu", label);
    check_vec(what, lg_g, lg_c, T * V, FP32_BUILD ? 1e-4 : 3e-2, FP32_BUILD);
    if ((fix = read_f32(&fc.st, "logits", &n)) && n == T * V) {
        snprintf(what, sizeof what, "%s logits cuda vs transformers", label);
        check_vec(what, lg_g, fix, T * V, FP32_BUILD ? 1e-4 : 5e-2, FP32_BUILD);
    }
    free(fix);
    for (t = 0; t < N; t++) loss -= logp_g[t];
    loss /= (double)N;
    if ((fix = read_f32(&fc.st, "loss", &n)) && n == 1) {
        float lf = (float)loss;
        snprintf(what, sizeof what, "%s loss cuda vs transformers", label);
        check_vec(what, &lf, fix, 1, FP32_BUILD ? 1e-6 : 2e-2, 0);
    }
    free(fix);
    /* backward of the mean NLL, as transformers' loss */
    for (t = 0; t < N; t++) dl[t] = -1.0f / (float)N;
    if (fc.P) { dpix_c = falloc(fc.P * pix); dpix_g = falloc(fc.P * pix); }
    mbpo_model_zero_grad(&mc); mbpo_model_zero_grad(&mg);
    REQUIRE(mbpo_model_backward(&mc, &b, dl, dpix_c), "cpu backward");
    REQUIRE(mbpo_model_backward(&mg, &b, dl, dpix_g), "cuda backward");
    REQUIRE(mbpo_model_grads_to_host(&mc) && mbpo_model_grads_to_host(&mg), "grads to host");
    snprintf(what, sizeof what, "%s cuda vs cpu:", label);
    check_grads(what, &mg, mc.grads, &mc, FP32_BUILD ? 1e-4 : 1.5e-1, 8e-2);
    if (fc.P) {
        snprintf(what, sizeof what, "%s dpixel_values cuda vs cpu", label);
        check_vec(what, dpix_g, dpix_c, fc.P * pix, FP32_BUILD ? 1e-4 : 8e-2, 0);
        if ((fix = read_f32(&fc.st, "grad.pixel_values", &n)) && n == fc.P * pix) {
            snprintf(what, sizeof what, "%s dpixel_values cuda vs transformers", label);
            check_vec(what, dpix_g, fix, n, FP32_BUILD ? 1e-4 : 1.5e-1, 0);
        }
        free(fix);
    }
    /* transformers' gradients, laid out in the table (zero where it gave none: text only) */
    cpu_grads = falloc((int64_t)mc.table.total_floats);
    {
        size_t p;
        int missing = 0;
        for (p = 0; p < mc.table.n; p++) {
            const mbpo_param_info *pi = &mc.table.info[p];
            char name[200];
            float *r;
            snprintf(name, sizeof name, "grad.%s", pi->name);
            r = read_f32(&fc.st, name, &n);
            if (r && n == pi->numel) memcpy(cpu_grads + pi->offset, r, (size_t)n * sizeof(float));
            else if (r) missing++;
            free(r);
        }
        CHECK(!missing, "%s: %d fixture gradients of the wrong size", label, missing);
        snprintf(what, sizeof what, "%s cuda vs transformers:", label);
        check_grads(what, &mg, cpu_grads, &mc, FP32_BUILD ? 1e-4 : 2e-1, 1.5e-1);
    }
    free(cpu_grads);
    free(logp_c); free(logp_g); free(dl); free(lg_c); free(lg_g); free(dpix_c); free(dpix_g);
    free_case(&fc);
    mbpo_model_free(&mc); mbpo_model_free(&mg);
}
static void test_fixtures(void) {
    const char *variants[2] = { "tiny_a", "tiny_a_tied" }, *cases[3] = { "image", "two_images", "text" };
    /* Qwen2.5-VL (QWEN25VL.md 8): RMSNorm, SwiGLU with biases, window attention, the window
       permutation and its inverse; the same tolerances */
    const char *variants25[2] = { "tiny25_a", "tiny25_a_tied" };
    const char *cases25[5] = { "image", "even", "two_images", "tall", "text" };
    int v, c;
    if (!run_test("fixtures")) return;
    for (v = 0; v < 2; v++)
        for (c = 0; c < 3; c++) {
            printf("-- %s / %s\n", variants[v], cases[c]);
            fixture_case_run(variants[v], cases[c]);
        }
    for (v = 0; v < 2; v++)
        for (c = 0; c < 5; c++) {
            printf("-- %s / %s\n", variants25[v], cases25[c]);
            fixture_case_run(variants25[v], cases25[c]);
        }
}

/* ============================================================== (c) a mid-size random model

   hidden 512, 4 layers, 8 heads of 64 over 2 KV heads (GQA 4); vision depth 2, 640 wide,
   8 heads of 80. Three packed sequences: two images (16x16 and 8x12 patches), one text. */
static const char *MID_CONFIG =
    "{\"model_type\": \"qwen2_vl\", \"vocab_size\": 4096, \"hidden_size\": 512, \"intermediate_size\": 1408,"
    " \"num_hidden_layers\": 4, \"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 1000000.0, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [8, 12, 12]},"
    " \"tie_word_embeddings\": false, \"image_token_id\": 4000, \"video_token_id\": 4001,"
    " \"vision_start_token_id\": 4002, \"vision_end_token_id\": 4003, \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"vision_config\": {\"depth\": 2, \"embed_dim\": 640, \"num_heads\": 8, \"mlp_ratio\": 4, \"hidden_size\": 512,"
    " \"patch_size\": 14, \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, \"in_channels\": 3}}";

typedef struct {
    int32_t ids[512], grid[6], refs[2];
    uint8_t target[512];
    int64_t seq_off[4], ref_off[4], T, P, N;
    float *pv;
    mbpo_batch b;
} mid_batch;
static int mid_model(mbpo_model *m, uint64_t seed) {
    mbpo_json *j = mbpo_json_parse(MID_CONFIG, strlen(MID_CONFIG), "mid config");
    mbpo_config cfg;
    int ok = j && mbpo_config_from_json(&cfg, j, "mid config") && mbpo_model_init(m, &cfg);
    mbpo_json_free(j);
    if (!ok) return 0;
    mbpo_model_randomize(m, seed);
    if (!FP32_BUILD) round_params(m);
    return 1;
}
/* seq 0: 20 text, <vs>, 64 image tokens (grid 1x16x16), <ve>, 30 text; seq 1: 9 text, <vs>,
   24 image tokens (1x8x12), <ve>, 40 text; seq 2: 17 text. Targets: text tokens after the first. */
static void mid_make_batch(mid_batch *mb, const mbpo_config *c, uint64_t seed) {
    mbpo_rng rng;
    int64_t t = 0, k, s;
    const int64_t img_tok[2] = { 64, 24 }, before[3] = { 20, 9, 17 }, after[3] = { 30, 40, 0 };
    int64_t pix = mbpo_config_pix(c);
    memset(mb, 0, sizeof *mb);
    mbpo_rng_seed(&rng, seed);
    mb->grid[0] = 1; mb->grid[1] = 16; mb->grid[2] = 16;
    mb->grid[3] = 1; mb->grid[4] = 8; mb->grid[5] = 12;
    mb->P = 256 + 96;
    for (s = 0; s < 3; s++) {
        for (k = 0; k < before[s]; k++) mb->ids[t++] = (int32_t)(3 + mbpo_rng_u64(&rng) % 3990);
        if (s < 2) {
            mb->ids[t++] = (int32_t)c->vision_start_token_id;
            for (k = 0; k < img_tok[s]; k++) mb->ids[t++] = (int32_t)c->image_token_id;
            mb->ids[t++] = (int32_t)c->vision_end_token_id;
        }
        for (k = 0; k < after[s]; k++) mb->ids[t++] = (int32_t)(3 + mbpo_rng_u64(&rng) % 3990);
        mb->seq_off[s + 1] = t;
        mb->ref_off[s + 1] = s < 2 ? s + 1 : 2;
    }
    mb->refs[0] = 0; mb->refs[1] = 1;
    mb->T = t;
    for (s = 0; s < 3; s++)
        for (k = mb->seq_off[s] + 1; k < mb->seq_off[s + 1]; k++) {
            mb->target[k] = mb->ids[k] < 4000;
            mb->N += mb->target[k];
        }
    mb->pv = falloc(mb->P * pix);
    fill_normal(mb->pv, mb->P * pix, &rng, 1.0);
    xround_all(mb->pv, mb->P * pix);
    mb->b.n_seqs = 3; mb->b.ids = mb->ids; mb->b.seq_offsets = mb->seq_off; mb->b.target = mb->target;
    mb->b.n_images = 2; mb->b.grid_thw = mb->grid; mb->b.pixel_values = mb->pv;
    mb->b.image_refs = mb->refs; mb->b.image_ref_offsets = mb->ref_off;
}

static void test_mid(void) {
    mbpo_model mc, mg;
    mid_batch mb;
    float *lp_c, *lp_g, *dl, *dp_c, *dp_g;
    int64_t i, pix;
    if (!run_test("mid")) return;
    REQUIRE(mid_model(&mc, 5001) && mid_model(&mg, 5001), "mid model");
    mid_make_batch(&mb, &mc.cfg, 5002);
    pix = mbpo_config_pix(&mc.cfg);
    printf("  mid: %lld parameters, %lld tokens (3 sequences), %lld patches (2 images), %lld targets\n",
           (long long)mc.table.n_params, (long long)mb.T, (long long)mb.P, (long long)mb.N);
    REQUIRE(mbpo_model_plan_on(&mc, MBPO_DEVICE_CPU, mb.T, mb.P, mb.N, 1), "plan cpu");
    REQUIRE(mbpo_model_plan_on(&mg, MBPO_DEVICE_CUDA, mb.T, mb.P, mb.N, 1), "plan cuda");
    lp_c = falloc(mb.N); lp_g = falloc(mb.N); dl = falloc(mb.N);
    dp_c = falloc(mb.P * pix); dp_g = falloc(mb.P * pix);
    REQUIRE(mbpo_model_forward(&mc, &mb.b, lp_c) == mb.N, "cpu forward");
    REQUIRE(mbpo_model_forward(&mg, &mb.b, lp_g) == mb.N, "cuda forward");
    check_vec("mid logp cuda vs cpu", lp_g, lp_c, mb.N, FP32_BUILD ? 1e-4 : 2e-2, FP32_BUILD);
    for (i = 0; i < mb.N; i++) dl[i] = 0.05f * (float)((i % 7) - 3) - 1.0f / (float)mb.N;   /* a GRPO-like mix of signs */
    mbpo_model_zero_grad(&mc); mbpo_model_zero_grad(&mg);
    REQUIRE(mbpo_model_backward(&mc, &mb.b, dl, dp_c), "cpu backward");
    REQUIRE(mbpo_model_backward(&mg, &mb.b, dl, dp_g), "cuda backward");
    REQUIRE(mbpo_model_grads_to_host(&mg), "grads to host");
    check_grads("mid cuda vs cpu:", &mg, mc.grads, &mc, FP32_BUILD ? 1e-4 : 1.5e-1, 8e-2);   /* emulated: 1.8e-2, 1.1e-2 */
    check_vec("mid dpixel_values cuda vs cpu", dp_g, dp_c, mb.P * pix, FP32_BUILD ? 1e-4 : 8e-2, 0);   /* emulated 1.7e-2 */
    free(lp_c); free(lp_g); free(dl); free(dp_c); free(dp_g); free(mb.pv);
    mbpo_model_free(&mc); mbpo_model_free(&mg);
}

/* ============================================================== (d) decoding vs the full forward, on CUDA

   Prefill one prompt, decode G = 3 continuations with different tokens, and compare every
   step's logits of every continuation against the full forward of prompt + continuation
   (the three packed in one batch, sharing the prompt's image). fp32: max-abs 1e-4, as the
   CPU test; bf16: rel-L2 per row <= 3e-2 (decode and prefill use other kernels and GEMM
   shapes: the same math, rounded at other points). Continuation 0 is transformers' greedy
   sequence (tiny fixtures): its step logits are also compared with transformers'. */
static void decode_case(const char *label, mbpo_model *m, const int32_t *prompt, int64_t S, const int32_t *grid, const float *pv,
                        const int32_t *gen0, int64_t n_gen, const float *ref_steps, int64_t tok_range) {
    const int G = 3;
    mbpo_kv kv;
    mbpo_batch b, full;
    int32_t *ids = (int32_t *)calloc((size_t)(G * (S + n_gen)), sizeof(int32_t)), *toks = (int32_t *)calloc((size_t)(G * n_gen), 4);
    uint8_t *tgt = (uint8_t *)calloc((size_t)(G * (S + n_gen)), 1), tgt0[1024];
    int64_t V = m->cfg.vocab_size, i, g, offs[2] = { 0, S }, foffs[4], roffs[2] = { 0, pv ? 1 : 0 }, froffs[4];
    int32_t refs[1] = { 0 }, frefs[3] = { 0, 0, 0 };
    float *steps = falloc(G * n_gen * V), *row = falloc(V);
    double worst = 0, worst_ref = 0, mean = 0;
    int ok = 1;
    mbpo_rng rng;
    char what[160];
    mbpo_rng_seed(&rng, 6001);
    for (i = 0; i < n_gen; i++) {
        toks[i] = gen0[i];
        toks[n_gen + i] = (int32_t)((gen0[i] + 17 * (i + 1)) % tok_range);
        toks[2 * n_gen + i] = (int32_t)(mbpo_rng_u64(&rng) % (uint64_t)tok_range);
    }
    memset(tgt0, 0, sizeof tgt0);
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = prompt; b.seq_offsets = offs; b.target = tgt0;
    if (pv) { b.n_images = 1; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = roffs; }
    memset(&kv, 0, sizeof kv);
    if (!mbpo_kv_init(&kv, m, G, S + n_gen) || !mbpo_kv_prefill(m, &kv, &b)) {
        n_failed++; printf("FAIL  %s: kv init / prefill: %s\n", label, mbpo_failure_reason()); ok = 0;
    }
    for (i = 0; ok && i < n_gen; i++) {
        int32_t step[3];
        memcpy(steps + i * G * V, kv.logits, (size_t)(G * V) * sizeof(float));
        for (g = 0; g < G; g++) step[g] = toks[g * n_gen + i];
        if (i + 1 < n_gen && !mbpo_kv_decode(m, &kv, step)) {
            n_failed++; printf("FAIL  %s: decode step %lld: %s\n", label, (long long)i, mbpo_failure_reason()); ok = 0;
        }
    }
    /* the full forward of the three sequences, packed */
    for (g = 0; g < G && ok; g++) {
        memcpy(ids + g * (S + n_gen), prompt, (size_t)S * sizeof(int32_t));
        memcpy(ids + g * (S + n_gen) + S, toks + g * n_gen, (size_t)n_gen * sizeof(int32_t));
        foffs[g] = g * (S + n_gen);
        froffs[g] = pv ? g : 0;
    }
    foffs[G] = G * (S + n_gen); froffs[G] = pv ? G : 0;
    memset(&full, 0, sizeof full);
    full.n_seqs = G; full.ids = ids; full.seq_offsets = foffs; full.target = tgt;
    if (pv) { full.n_images = 1; full.grid_thw = grid; full.pixel_values = pv; full.image_refs = frefs; full.image_ref_offsets = froffs; }
    if (ok && mbpo_model_forward(m, &full, row) < 0) { n_failed++; printf("FAIL  %s: full forward: %s\n", label, mbpo_failure_reason()); ok = 0; }
    for (g = 0; g < G && ok; g++)
        for (i = 0; i < n_gen && ok; i++) {
            const float *cached = steps + (i * G + g) * V;
            double e;
            if (!mbpo_model_logits(m, g * (S + n_gen) + S - 1 + i, row)) { n_failed++; printf("FAIL  %s: logits: %s\n", label, mbpo_failure_reason()); ok = 0; break; }
            if (FP32_BUILD) { int64_t k2; e = 0; for (k2 = 0; k2 < V; k2++) { double d = fabs((double)cached[k2] - row[k2]); if (!(d <= e)) e = d; } }
            else e = rel_l2(cached, row, V);
            if (!(e <= worst)) worst = e;
            mean += e / (double)(G * n_gen);
            if (g == 0 && ref_steps) {
                double er;
                if (FP32_BUILD) { int64_t k2; er = 0; for (k2 = 0; k2 < V; k2++) { double d = fabs((double)cached[k2] - ref_steps[i * V + k2]); if (!(d <= er)) er = d; } }
                else er = rel_l2(cached, ref_steps + i * V, V);
                if (!(er <= worst_ref)) worst_ref = er;
            }
        }
    if (ok) {
        double tol = FP32_BUILD ? 1e-4 : 3e-2;
        snprintf(what, sizeof what, "%s: KV-cache steps vs full forward (%d x %lld)", label, G, (long long)n_gen);
        CHECK(worst <= tol, "%s: worst %s %.3e > %.0e", what, FP32_BUILD ? "max-abs" : "rel-L2", worst, tol);
        printf("  %s  %-50s worst %s %.2e, mean %.2e (tol %.0e)\n", worst <= tol ? "ok" : "!!", what,
               FP32_BUILD ? "max-abs" : "rel-L2", worst, mean, tol);
        if (ref_steps) {
            double tr = FP32_BUILD ? 1e-4 : 5e-2;
            snprintf(what, sizeof what, "%s: step logits vs transformers", label);
            CHECK(worst_ref <= tr, "%s: %.3e > %.0e", what, worst_ref, tr);
            printf("  %s  %-50s worst %s %.2e (tol %.0e)\n", worst_ref <= tr ? "ok" : "!!", what,
                   FP32_BUILD ? "max-abs" : "rel-L2", worst_ref, tr);
        }
    }
    mbpo_kv_free(&kv);
    free(ids); free(toks); free(tgt); free(steps); free(row);
}
static void test_decode(void) {
    const char *variants[2] = { "tiny_a", "tiny_a_tied" };
    int v;
    if (!run_test("decode")) return;
    for (v = 0; v < 2; v++) {
        char path[256];
        mbpo_st st;
        mbpo_model m;
        int64_t S = 0, n_gen = 0, npv = 0, i, *pid, *gen, *grid64;
        int32_t prompt[64], grid[3], gen32[64];
        float *pv, *steps;
        snprintf(path, sizeof path, "tests/fixtures/core/greedy_%s.safetensors", variants[v]);
        REQUIRE(mbpo_st_open(&st, path), "%s", path);
        pid = read_i64(&st, "prompt_ids", &S); gen = read_i64(&st, "generated", &n_gen);
        steps = read_f32(&st, "step_logits", NULL); grid64 = read_i64(&st, "image_grid_thw", NULL);
        pv = read_f32(&st, "pixel_values", &npv);
        REQUIRE(pid && gen && steps && grid64 && pv && S <= 64 && n_gen <= 64, "fixture tensors");
        snprintf(path, sizeof path, "tests/fixtures/%s/model", variants[v]);
        REQUIRE(mbpo_model_load(&m, path), "load %s", path);
        if (!FP32_BUILD) { round_params(&m); xround_all(pv, npv); }
        for (i = 0; i < S; i++) prompt[i] = (int32_t)pid[i];
        for (i = 0; i < n_gen; i++) gen32[i] = (int32_t)gen[i];
        for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
        REQUIRE(mbpo_model_plan_on(&m, MBPO_DEVICE_CUDA, 3 * (S + n_gen), npv / mbpo_config_pix(&m.cfg), 3 * (S + n_gen), 0), "plan");
        decode_case(variants[v], &m, prompt, S, grid, pv, gen32, n_gen, steps, 1000);
        mbpo_model_free(&m);
        mbpo_st_close(&st);
        free(pid); free(gen); free(steps); free(grid64); free(pv);
    }
    {   /* the mid-size model, with an image: HS 64 over GQA 4 in the cache */
        mbpo_model m;
        mid_batch mb;
        int32_t gen0[37];
        int64_t i, S;
        REQUIRE(mid_model(&m, 5001), "mid model");
        mid_make_batch(&mb, &m.cfg, 5002);
        S = mb.seq_off[1];
        for (i = 0; i < 37; i++) gen0[i] = (int32_t)(5 + 101 * i % 3900);
        REQUIRE(mbpo_model_plan_on(&m, MBPO_DEVICE_CUDA, 3 * (S + 37), 256, 3 * (S + 37), 0), "plan");
        decode_case("mid", &m, mb.ids, S, mb.grid, mb.pv, gen0, 37, NULL, 3990);
        free(mb.pv);
        mbpo_model_free(&m);
    }
}

/* ============================================================== (d2) mbpo_generate on the device

   The whole generation loop on the GPU (the sample op, gen_step, the decode step replayed as a
   CUDA graph) against (1) the same loop with graphs off, every op launched one by one: the
   same kernels, so tokens, lengths, log-probs and the RNG after must be bitwise the same, and
   the graph must have been used; (2) the CPU's mbpo_generate on the same weights: fp32 build
   the same tokens and lengths (greedy: transformers' 20 tokens too) and log-probs within 1e-4;
   bf16 build reported. tiny_a with its image, G 8: greedy, T 1, T 0.7 top-k 20, T 1 top-p 0.9,
   T 1 top-k 20 top-p 0.8, the sampled ones with two stop ids the CPU's first run emits. */
static int gen_run(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *b, const mbpo_gen_opts *o, int no_graphs, int32_t *ids,
                   int *lens, float *lp, mbpo_rng *rng, double *secs) {
    double t0;
    int ok;
    kv->no_graphs = no_graphs;
    mbpo_rng_seed(rng, 777);
    t0 = mbpo_now();
    ok = mbpo_generate_logp(m, kv, b, o, rng, ids, lens, lp);
    *secs = mbpo_now() - t0;
    if (!ok) { n_failed++; printf("FAIL  generate (%s): %s\n", no_graphs ? "no graphs" : "graphs", mbpo_failure_reason()); }
    return ok;
}
static void test_generate(void) {
    enum { G = 8, NEW = 20 };
    mbpo_st st;
    mbpo_model mc, mg;
    mbpo_kv kc, kg;
    mbpo_batch b;
    int64_t S = 0, n_gen = 0, npv = 0, i, offs[2], roffs[2] = { 0, 1 }, *pid, *gen, *grid64;
    int32_t prompt[64], grid[3], refs[1] = { 0 }, stop[2] = { -1, -1 };
    int32_t ids[3][G * NEW];
    int lens[3][G], c, g, j;
    float lp[3][G * NEW], *pv;
    uint8_t tgt0[64];
    mbpo_rng rng[3];
    double secs[3];
    if (!run_test("generate")) return;
    REQUIRE(mbpo_st_open(&st, "tests/fixtures/core/greedy_tiny_a.safetensors"), "greedy fixture");
    pid = read_i64(&st, "prompt_ids", &S); gen = read_i64(&st, "generated", &n_gen);
    grid64 = read_i64(&st, "image_grid_thw", NULL); pv = read_f32(&st, "pixel_values", &npv);
    REQUIRE(pid && gen && grid64 && pv && S <= 64 && n_gen >= NEW, "fixture tensors");
    REQUIRE(mbpo_model_load(&mc, "tests/fixtures/tiny_a/model") && mbpo_model_load(&mg, "tests/fixtures/tiny_a/model"), "load tiny_a");
    if (!FP32_BUILD) { round_params(&mc); round_params(&mg); xround_all(pv, npv); }
    for (i = 0; i < S; i++) prompt[i] = (int32_t)pid[i];
    for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
    memset(tgt0, 0, sizeof tgt0);
    offs[0] = 0; offs[1] = S;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = prompt; b.seq_offsets = offs; b.target = tgt0;
    b.n_images = 1; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = roffs;
    REQUIRE(mbpo_model_plan_on(&mc, MBPO_DEVICE_CPU, S, npv / mbpo_config_pix(&mc.cfg), S, 0) &&
            mbpo_model_plan_on(&mg, MBPO_DEVICE_CUDA, S, npv / mbpo_config_pix(&mg.cfg), S, 0), "plan");
    memset(&kc, 0, sizeof kc); memset(&kg, 0, sizeof kg);
    REQUIRE(mbpo_kv_init(&kc, &mc, G, S + NEW) && mbpo_kv_init(&kg, &mg, G, S + NEW), "kv init");
    for (c = 0; c < 5; c++) {
        static const struct { double T; int top_k; double top_p; const char *name; } cs[5] = {
            { 0, 0, 1, "greedy" }, { 1.0, 0, 1, "T 1" }, { 0.7, 20, 1, "T 0.7 top-k 20" },
            { 1.0, 0, 0.9, "T 1 top-p 0.9" }, { 1.0, 20, 0.8, "T 1 top-k 20 top-p 0.8" } };
        mbpo_gen_opts o;
        int same_graph = 1, same_cpu = 1, graph_steps, ok;
        int64_t len_c = 0, len_g = 0;
        double worst_lp = 0;
        memset(&o, 0, sizeof o);
        o.max_new_tokens = NEW; o.temperature = cs[c].T; o.top_k = cs[c].top_k; o.top_p = cs[c].top_p;
        if (c > 0) { o.stop_ids = stop; o.n_stop = 2; }
        ok = gen_run(&mc, &kc, &b, &o, 0, ids[0], lens[0], lp[0], &rng[0], &secs[0]);
        if (ok && c == 1) {   /* stops from the CPU's first sampled run: continuations end early */
            stop[0] = ids[0][5]; stop[1] = ids[0][3 * NEW + 9];
            ok = gen_run(&mc, &kc, &b, &o, 0, ids[0], lens[0], lp[0], &rng[0], &secs[0]);
        }
        len_c = kc.len;
        ok = ok && gen_run(&mg, &kg, &b, &o, 0, ids[1], lens[1], lp[1], &rng[1], &secs[1]);
        graph_steps = kg.graph_steps; len_g = kg.len;
        ok = ok && gen_run(&mg, &kg, &b, &o, 1, ids[2], lens[2], lp[2], &rng[2], &secs[2]);
        if (!ok) continue;
        CHECK(graph_steps > 0 && kg.graph_steps == 0, "%s: the graph ran %d steps (graphs off: %d)", cs[c].name, graph_steps,
              kg.graph_steps);
        for (g = 0; g < G; g++) {
            same_graph &= lens[1][g] == lens[2][g] && !memcmp(ids[1] + g * NEW, ids[2] + g * NEW, (size_t)lens[1][g] * 4) &&
                          !memcmp(lp[1] + g * NEW, lp[2] + g * NEW, (size_t)lens[1][g] * 4);
            same_cpu &= lens[1][g] == lens[0][g] && !memcmp(ids[1] + g * NEW, ids[0] + g * NEW, (size_t)lens[1][g] * 4);
            for (j = 0; j < lens[1][g] && j < lens[0][g]; j++) {
                double e = fabs((double)lp[1][g * NEW + j] - lp[0][g * NEW + j]);
                if (!(e <= worst_lp)) worst_lp = e;
            }
        }
        same_graph &= !memcmp(&rng[1], &rng[2], sizeof rng[1]) && len_g == kg.len;
        same_cpu &= len_g == len_c;   /* the cache's length: the CPU's (decodes after every continuation stopped change nothing) */
        CHECK(same_graph, "%s: graph and op-by-op generations differ", cs[c].name);
        if (c == 0 && FP32_BUILD) {
            int tf = 1;
            for (g = 0; g < G; g++) for (j = 0; j < NEW; j++) tf &= ids[1][g * NEW + j] == (int32_t)gen[j];
            CHECK(tf, "greedy on the GPU: not transformers' 20 tokens");
        }
        if (FP32_BUILD) {
            CHECK(same_cpu && !memcmp(&rng[1], &rng[0], sizeof rng[0]), "%s: GPU tokens differ from the CPU's", cs[c].name);
            CHECK(worst_lp <= 1e-4, "%s: log-probs vs the CPU's max |diff| %.2e > 1e-4", cs[c].name, worst_lp);
        }
        printf("  %s  generate %-24s graph = op by op: %s; = CPU: %s; logp vs CPU %.2e; lengths", same_graph ? "ok" : "!!",
               cs[c].name, same_graph ? "yes" : "NO", same_cpu ? "yes" : "no", worst_lp);
        for (g = 0; g < G; g++) printf(" %d", lens[1][g]);
        printf("; %.2f ms (graph) vs %.2f ms (op by op) for %d steps\n", secs[1] * 1e3, secs[2] * 1e3, NEW);
    }
    mbpo_kv_free(&kc); mbpo_kv_free(&kg);
    mbpo_model_free(&mc); mbpo_model_free(&mg);
    mbpo_st_close(&st);
    free(pid); free(gen); free(grid64); free(pv);
}

/* ============================================================== (e) bitwise determinism on CUDA */

static void test_determinism(void) {
    mbpo_model m;
    mid_batch mb;
    float *lp[2], *dp[2], *gr[2], *dl;
    int64_t i, pix;
    int r;
    size_t nf;
    if (!run_test("determinism")) return;
    REQUIRE(mid_model(&m, 5001), "mid model");
    mid_make_batch(&mb, &m.cfg, 5002);
    pix = mbpo_config_pix(&m.cfg);
    nf = m.table.total_floats;
    REQUIRE(mbpo_model_plan_on(&m, MBPO_DEVICE_CUDA, mb.T, mb.P, mb.N, 1), "plan cuda");
    dl = falloc(mb.N);
    for (i = 0; i < mb.N; i++) dl[i] = 0.05f * (float)((i % 7) - 3) - 1.0f / (float)mb.N;
    for (r = 0; r < 2; r++) {
        lp[r] = falloc(mb.N); dp[r] = falloc(mb.P * pix); gr[r] = falloc((int64_t)nf);
        REQUIRE(mbpo_model_forward(&m, &mb.b, lp[r]) == mb.N, "forward %d", r);
        mbpo_model_zero_grad(&m);
        REQUIRE(mbpo_model_backward(&m, &mb.b, dl, dp[r]) && mbpo_model_grads_to_host(&m), "backward %d", r);
        memcpy(gr[r], m.grads, nf * sizeof(float));
    }
    CHECK(!memcmp(lp[0], lp[1], (size_t)mb.N * 4), "logp differs between two identical runs");
    CHECK(!memcmp(gr[0], gr[1], nf * 4), "parameter gradients differ between two identical runs");
    CHECK(!memcmp(dp[0], dp[1], (size_t)(mb.P * pix) * 4), "dpixel_values differ between two identical runs");
    if (!memcmp(lp[0], lp[1], (size_t)mb.N * 4) && !memcmp(gr[0], gr[1], nf * 4) && !memcmp(dp[0], dp[1], (size_t)(mb.P * pix) * 4))
        printf("  ok  mid forward + backward twice: logp, %zu gradient floats, dpixel_values bitwise identical\n", nf);
    for (r = 0; r < 2; r++) { free(lp[r]); free(dp[r]); free(gr[r]); }
    free(dl); free(mb.pv);
    mbpo_model_free(&m);
}

/* ============================================================== (f) Qwen2-VL-2B vs transformers

   A folder made by tests/reference/qwen2vl_2b_random.py: config.json + safetensors (random
   bf16 weights) and parity_input.safetensors (input_ids, image_grid_thw, pixel_values,
   transformers' fp32 logits of every position, sdpa, bf16). Given by MBPO_2B_DIR or
   --2b DIR; skipped with a SKIP line when absent. Per row of logits, rel-L2 of mbpo vs
   transformers; both ran bf16 with their own rounding points (transformers also rounds the
   rotary tables and the norms' products to bf16), so the two each carry ~1e-2 of bf16 noise
   after 28 layers: mean over rows <= 3e-2, worst row <= 1e-1. The target log-probs (from
   transformers' logits on the host) are compared by rel-L2 <= 3e-2. */
static void test_2b(const char *dir) {
    char path[1024];
    mbpo_model m;
    mbpo_st st;
    int64_t S = 0, n, i, t, V, P, pix, N = 0;
    int64_t *ids64 = NULL, *grid64 = NULL;
    float *pv = NULL, *ref = NULL, *row = NULL, *logp = NULL, *ref_logp = NULL;
    int32_t *ids = NULL, grid[3], refs[1] = { 0 };
    uint8_t *target = NULL;
    int64_t offs[2], roffs[2] = { 0, 1 };
    mbpo_batch b;
    double mean = 0, worst = 0, t0;
    int64_t worst_t = 0;
    if (!run_test("2b")) return;
    if (!dir || !dir[0]) {
        printf("SKIP  2b: no folder (set MBPO_2B_DIR or pass --2b DIR; make it with tests/reference/qwen2vl_2b_random.py)\n");
        return;
    }
    snprintf(path, sizeof path, "%s/parity_input.safetensors", dir);
    REQUIRE(mbpo_st_open(&st, path), "%s", path);
    t0 = mbpo_now();
    REQUIRE(mbpo_model_load(&m, dir), "load %s", dir);
    V = m.cfg.vocab_size; pix = mbpo_config_pix(&m.cfg);
    ids64 = read_i64(&st, "input_ids", &S); grid64 = read_i64(&st, "image_grid_thw", NULL);
    pv = read_f32(&st, "pixel_values", &n); ref = read_f32(&st, "logits", NULL);
    REQUIRE(ids64 && grid64 && pv && ref, "%s: input_ids, image_grid_thw, pixel_values, logits", path);
    P = n / pix;
    ids = (int32_t *)calloc((size_t)S, 4); target = (uint8_t *)calloc((size_t)S, 1);
    for (t = 0; t < S; t++) {
        ids[t] = (int32_t)ids64[t];
        target[t] = t > 0 && ids64[t] != m.cfg.image_token_id && ids64[t] != m.cfg.vision_start_token_id &&
                    ids64[t] != m.cfg.vision_end_token_id;
        N += target[t];
    }
    for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
    offs[0] = 0; offs[1] = S;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target;
    b.n_images = 1; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = roffs;
    REQUIRE(mbpo_model_plan_on(&m, MBPO_DEVICE_CUDA, S, P, N, 0), "plan cuda");
    logp = falloc(N); ref_logp = falloc(N); row = falloc(V);
    REQUIRE(mbpo_model_forward(&m, &b, logp) == N, "forward");
    printf("  2b: %lld parameters, %lld tokens, %lld patches, %lld targets; loaded and ran in %.1f s\n",
           (long long)m.table.n_params, (long long)S, (long long)P, (long long)N, mbpo_now() - t0);
    for (t = 0, n = 0; t < S; t++) {
        double e;
        const float *r = ref + t * V;
        REQUIRE(mbpo_model_logits(&m, t, row), "logits %lld", (long long)t);
        e = rel_l2(row, r, V);
        mean += e / (double)S;
        if (!(e <= worst)) { worst = e; worst_t = t; }
        if (t + 1 < S && target[t + 1]) {   /* transformers' log-prob of the next token, from its logits */
            double mx = -INFINITY, sum = 0;
            int64_t k;
            for (k = 0; k < V; k++) if (r[k] > mx) mx = r[k];
            for (k = 0; k < V; k++) sum += exp((double)r[k] - mx);
            ref_logp[n++] = (float)((double)r[ids[t + 1]] - mx - log(sum));
        }
    }
    CHECK(mean <= 3e-2 && worst <= 1e-1, "2b logits vs transformers: mean rel-L2 %.3e (tol 3e-2), worst %.3e at row %lld (tol 1e-1)",
          mean, worst, (long long)worst_t);
    printf("  %s  2b logits vs transformers (%lld rows x %lld): rel-L2 mean %.3e (tol 3e-2), worst %.3e at row %lld (tol 1e-1)\n",
           mean <= 3e-2 && worst <= 1e-1 ? "ok" : "!!", (long long)S, (long long)V, mean, worst, (long long)worst_t);
    {
        double e = rel_l2(logp, ref_logp, N);
        CHECK(n == N && e <= 3e-2, "2b target logp vs transformers: rel-L2 %.3e (tol 3e-2), %lld of %lld", e, (long long)n, (long long)N);
        printf("  %s  2b target logp vs transformers (%lld targets): rel-L2 %.3e (tol 3e-2)\n", n == N && e <= 3e-2 ? "ok" : "!!",
               (long long)N, e);
    }
    free(ids64); free(grid64); free(pv); free(ref); free(row); free(logp); free(ref_logp); free(ids); free(target);
    mbpo_st_close(&st);
    mbpo_model_free(&m);
}

/* ============================================================== main */

int main(int argc, char **argv) {
    const char *dir_2b = getenv("MBPO_2B_DIR");
    int a;
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--2b") && a + 1 < argc) dir_2b = argv[++a];
        else filter = argv[a];
    }
    printf("test_cuda (%s build): %s\n", BUILD_NAME, mbpo_build_info());
    if (!mbpo_device_available(MBPO_DEVICE_CUDA)) {
        printf("FAIL  no usable CUDA device: %s\n0 passed, 1 failed\n", mbpo_failure_reason());
        return 1;
    }
    {
        char name[256];
        size_t mem = 0;
        int sms = 0;
        if (mbpo__cuda_device_info(name, sizeof name, &mem, &sms))
            printf("device: %s, %.1f GiB, %d SMs\n", name, (double)mem / (1024.0 * 1024 * 1024), sms);
    }
    OPS[0] = &mbpo__cpu_ops; OPS[1] = &mbpo__cuda_ops;
    if (!OPS[0]->create(&BE[0], 1024) || !OPS[1]->create(&BE[1], 1024)) {
        printf("FAIL  backend create: %s\n0 passed, 1 failed\n", mbpo_failure_reason());
        return 1;
    }
    mbpo_rng_seed(&RNG, 20261201);
    test_ops();
    pool_release();
    OPS[0]->destroy(BE[0]); OPS[1]->destroy(BE[1]);
    test_fixtures();
    test_mid();
    test_decode();
    test_generate();
    test_determinism();
    test_2b(dir_2b);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
