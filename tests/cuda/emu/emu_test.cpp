/* emu_test.cpp - the non-cuBLAS kernels of mbpo_cuda.cuh, run on the CPU by
   emu_cuda.h, against the CPU op table of mbpo.h (the specification).
   Build and run: ./run.sh (see README.md). One binary per storage type:
     -DMBPO_CUDA_FP32   fp32 storage: err = max|got - ref| / max|ref|, bound 1e-5
     (default)          bf16 storage, inputs pre-rounded to bf16: err = rel L2, bound per op
   Every op: outputs poisoned (NaN) first, or set to random values where the op accumulates
   (so = vs += shows); the workspace is poisoned before every call; every CUDA call is made
   twice on the same inputs and the outputs compared byte for byte (determinism).
   GEMMs (matmul, head) go through emu_gemm.h, a host GEMM in the CPU's order, not cuBLASLt. */
#include "emu_cuda.h"
#define MBPO_CUDA
#define MBPO_IMPLEMENTATION
#ifndef EMU_MBPO_H
#define EMU_MBPO_H "build/mbpo.h"   /* mutate.sh points this at a mutated copy */
#endif
#include EMU_MBPO_H
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#ifdef MBPO_CUDA_FP32
#define FP32 1
#define BUILD "fp32"
#else
#define FP32 0
#define BUILD "bf16"
#endif

typedef std::vector<float> vec;
typedef std::vector<uint8_t> bytes;
static const mbpo_ops *G = &mbpo__cuda_ops, *P = &mbpo__cpu_ops;
static mbpo_backend *gbe, *cbe;

/* ---- host values */
static float rx(float v) {   /* the storage type's value of v */
#if FP32
    return v;
#else
    return __bfloat162float(__float2bfloat16(v));
#endif
}
static uint64_t rng_s = 0x9E3779B97F4A7C15ull;
static double urand(void) { rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17; return (double)(rng_s >> 11) / 9007199254740992.0 * 2 - 1; }
static int64_t irand(int64_t n) { rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17; return (int64_t)((rng_s >> 11) % (uint64_t)n); }
/* n values offset + scale * U(-1, 1), in the storage type */
static vec rnd(int64_t n, double scale = 1, double offset = 0) {
    vec v((size_t)n);
    for (auto &x : v) x = rx((float)(offset + scale * urand()));
    return v;
}
static vec rndf(int64_t n, double scale = 1) {   /* fp32, not rounded (fp32 buffers) */
    vec v((size_t)n);
    for (auto &x : v) x = (float)(scale * urand());
    return v;
}

/* ---- device buffers (freed by dfree_all after each case) */
static std::vector<void *> dlist;
static void *dalloc(size_t b) {
    void *p = NULL;
    if (!G->alloc(gbe, &p, b, "test")) { fprintf(stderr, "alloc: %s\n", mbpo_failure_reason()); exit(2); }
    dlist.push_back(p);
    return p;
}
static void dfree_all(void) { for (void *p : dlist) G->release(gbe, p); dlist.clear(); }
static void dfree_keep(size_t n) { while (dlist.size() > n) { G->release(gbe, dlist.back()); dlist.pop_back(); } }
static mbpo_x *dx(const vec &h) {
    mbpo_x *p = (mbpo_x *)dalloc(h.size() * sizeof(mbpo__cx));
    if (!G->x_upload(gbe, p, h.data(), (int64_t)h.size())) exit(2);
    return p;
}
static void dx_set(mbpo_x *p, const vec &h) { G->x_upload(gbe, p, h.data(), (int64_t)h.size()); }
static mbpo_x *dx_poison(int64_t n) { mbpo_x *p = (mbpo_x *)dalloc((size_t)n * sizeof(mbpo__cx)); memset(p, 0xFF, (size_t)n * sizeof(mbpo__cx)); return p; }
static vec xget(const mbpo_x *p, int64_t n) { vec h((size_t)n); G->x_download(gbe, h.data(), p, n); return h; }
static float *df(const vec &h) { float *p = (float *)dalloc(h.size() * 4); G->upload(gbe, p, h.data(), h.size() * 4); return p; }
static float *df_poison(int64_t n) { float *p = (float *)dalloc((size_t)n * 4); memset(p, 0xFF, (size_t)n * 4); return p; }
static vec fget(const float *p, int64_t n) { vec h((size_t)n); G->download(gbe, h.data(), p, (size_t)n * 4); return h; }
template <typename T> static T *dcopy(const std::vector<T> &h) { T *p = (T *)dalloc(h.size() * sizeof(T) + 1); G->upload(gbe, p, h.data(), h.size() * sizeof(T)); return p; }
static void raw_add(bytes &b, const void *p, size_t n) { const uint8_t *q = (const uint8_t *)p; b.insert(b.end(), q, q + n); }
static void poison_ws(void) {
    struct mbpo__backend_cuda *c = (struct mbpo__backend_cuda *)(void *)gbe;
    memset(c->workspace, 0xFF, 4u << 20);
}

/* ---- comparison and the summary table */
struct row { double err = 0; bool bitwise = true, pass = true; int cases = 0; double tol = 0; };
static std::map<std::string, row> table;
static std::vector<std::string> order_;
static int n_fail = 0, n_pass = 0;
static double metric(const vec &g, const vec &r) {
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < g.size(); i++) {
        if (!(g[i] == g[i]) && r[i] == r[i]) return INFINITY;   /* NaN where the CPU has a value: unwritten */
        double d = fabs((double)g[i] - r[i]);
        if (r[i] != r[i] && g[i] != g[i]) d = 0;   /* both NaN (e.g. both leave a slot unwritten) */
        if (FP32) { num = d > num ? d : num; den = fabs(r[i]) > den ? fabs(r[i]) : den; }
        else { num += d * d; den += (double)r[i] * r[i]; }
    }
    if (!FP32) { num = sqrt(num); den = sqrt(den); }
    return num / (den > 1e-30 ? den : 1e-30);
}
/* exact: must be equal to the CPU (fp32) or to the CPU rounded to bf16 */
static bool g_fbuf = false;   /* the values come from a float (not mbpo_x) buffer: bitwise means == ref */
static void check(const std::string &op, const char *what, const char *shape, const vec &g, const vec &r, double tol_bf16,
                  bool exact = false, double tol_f32 = 1e-5) {
    double e = metric(g, r), tol = exact ? 0 : FP32 ? tol_f32 : tol_bf16;
    bool bw = true;
    size_t i;
    for (i = 0; i < g.size(); i++) {
        float rr = g_fbuf ? r[i] : rx(r[i]);
        if (memcmp(&g[i], &rr, 4) && !(g[i] != g[i] && rr != rr)) { bw = false; break; }
    }
    bool ok = exact ? bw : e <= tol;
    if (g.size() != r.size()) ok = false;
    row &t = table[op];
    if (!t.cases) order_.push_back(op);
    t.cases++; t.err = e > t.err ? e : t.err; t.bitwise = t.bitwise && bw; t.pass = t.pass && ok; t.tol = tol > t.tol ? tol : t.tol;
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL %s %s %s: err %.3g (tol %.3g)%s\n", op.c_str(), what, shape, e, tol, exact && !bw ? " not exact" : "");
        for (i = 0; i < g.size(); i++)
            if ((g[i] != rx(r[i]) && (exact || fabs(g[i] - r[i]) > 1e-3 * (fabs(r[i]) + 1))) || g[i] != g[i]) {
                printf("     first difference at %zu: got %.9g ref %.9g\n", i, g[i], r[i]);
                break;
            }
    }
}
/* the same for a float buffer (statistics, tables, parameter gradients, log-probs) */
static void checkf(const std::string &op, const char *what, const char *shape, const vec &g, const vec &r, double tol_bf16,
                   bool exact = false, double tol_f32 = 1e-5) {
    g_fbuf = true; check(op, what, shape, g, r, tol_bf16, exact, tol_f32); g_fbuf = false;
}
static void check_det(const std::string &op, const char *shape, const bytes &a, const bytes &b) {
    row &t = table[op + " (determinism)"];
    if (!t.cases) order_.push_back(op + " (determinism)");
    t.cases++;
    bool ok = a.size() == b.size() && !memcmp(a.data(), b.data(), a.size());
    t.pass = t.pass && ok; t.bitwise = t.bitwise && ok;
    if (ok) n_pass++; else { n_fail++; printf("FAIL %s %s: two runs differ\n", op.c_str(), shape); }
}
static void expect_fail(const char *what, int r) {
    if (!r) { n_pass++; printf("ok   %s fails as it should: %s\n", what, mbpo_failure_reason()); }
    else { n_fail++; printf("FAIL %s: expected a failure\n", what); }
}
#define GOK(call) do { poison_ws(); if (!(call)) { printf("FAIL %s: %s\n", #call, mbpo_failure_reason()); n_fail++; } } while (0)

static std::vector<int64_t> NS = {1, 3, 17, 130}, CS = {8, 100, 257};

/* ============================================================== tests */

static void test_xcopy(void) {
    const int64_t ns[] = {1, 3, 17, 130 * 257};
    for (int64_t n : ns) {
        char sh[64]; snprintf(sh, sizeof sh, "n=%lld", (long long)n);
        vec h = rndf(n, 3);   /* not pre-rounded: x_upload rounds */
        vec ref(h.size());
        for (size_t i = 0; i < h.size(); i++) ref[i] = rx(h[i]);
        bytes r1, r2;
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *x = dx_poison(n);
            poison_ws();
            G->x_upload(gbe, x, h.data(), n);
            vec back(n, NAN);
            poison_ws();
            G->x_download(gbe, back.data(), x, n);
            check("x_upload/x_download", "roundtrip", sh, back, ref, 0, true);
            raw_add(rep ? r2 : r1, x, (size_t)n * sizeof(mbpo__cx));
            dfree_all();
        }
        check_det("x_upload/x_download", sh, r1, r2);
    }
#ifdef EMU_BIG
    {   /* more than the 32 MiB staging: the chunked loop (only with a small MBPO__CUDA_MAX_BLOCKS) */
        int64_t n = (int64_t)(MBPO__CUDA_WORKSPACE / 4) + 1000;
        vec h = rndf(n, 3), ref(n), back(n, NAN);
        for (size_t i = 0; i < h.size(); i++) ref[i] = rx(h[i]);
        mbpo_x *x = dx_poison(n);
        G->x_upload(gbe, x, h.data(), n);
        G->x_download(gbe, back.data(), x, n);
        check("x_upload/x_download", "chunked", "n=8.39M", back, ref, 0, true);
        dfree_all();
    }
#endif
}

static void test_matmul(void) {
    const int64_t ocs[] = {8, 257};
    for (int64_t N : NS) for (int64_t C : {(int64_t)0, (int64_t)8, (int64_t)100}) for (int64_t OC : ocs) {
        char sh[64]; snprintf(sh, sizeof sh, "N=%lld C=%lld OC=%lld", (long long)N, (long long)C, (long long)OC);
        vec x = rnd(N * C), w = rnd(OC * C, 0.3), b = rnd(OC), dout = rnd(N * OC), dinp0 = rnd(N * C), dw0 = rndf(OC * C), db0 = rndf(OC);
        for (int withb = 0; withb < 2; withb++) {
            vec ref(N * OC);
            mbpo__matmul_forward(ref.data(), x.data(), w.data(), withb ? b.data() : NULL, N, C, OC);
            bytes r[2];
            for (int rep = 0; rep < 2; rep++) {
                mbpo_x *gx = dx(x), *gw = dx(w), *gb = dx(b), *go = dx_poison(N * OC);
                GOK(G->matmul_forward(gbe, go, gx, gw, withb ? gb : NULL, N, C, OC));
                vec got = xget(go, N * OC);
                if (!rep) check(withb ? "matmul_forward+bias [host GEMM]" : "matmul_forward [host GEMM]", "out", sh, got, ref, 1e-2);
                raw_add(r[rep], go, (size_t)(N * OC) * sizeof(mbpo__cx));
                dfree_all();
            }
            check_det("matmul_forward [host GEMM]", sh, r[0], r[1]);
        }
        if (C == 0) continue;
        /* backward: dbias (the column-sum kernel) alone, then all three */
        for (int all = 0; all < 2; all++) {
            vec rdi = dinp0, rdw = dw0, rdb = db0;
            mbpo__matmul_backward(all ? rdi.data() : NULL, all ? rdw.data() : NULL, rdb.data(), dout.data(), x.data(), w.data(), N, C, OC);
            bytes r[2];
            for (int rep = 0; rep < 2; rep++) {
                mbpo_x *gx = dx(x), *gw = dx(w), *gd = dx(dout), *gdi = dx(dinp0);
                float *gdw = df(dw0), *gdb = df(db0);
                GOK(G->matmul_backward(gbe, all ? gdi : NULL, all ? gdw : NULL, gdb, gd, gx, gw, N, C, OC));
                vec a = xget(gdi, N * C), bw = fget(gdw, OC * C), bb = fget(gdb, OC);
                if (!rep) {
                    checkf("matmul_backward dbias (colsum mode 0)", "dbias", sh, bb, rdb, 1e-2);
                    if (all) {
                        check("matmul_backward dinp,dw [host GEMM]", "dinp", sh, a, rdi, 1e-2);
                        checkf("matmul_backward dinp,dw [host GEMM]", "dw", sh, bw, rdw, 1e-2);
                    } else {
                        check("matmul_backward dbias (colsum mode 0)", "dinp untouched", sh, a, dinp0, 0, true);
                        checkf("matmul_backward dbias (colsum mode 0)", "dw untouched", sh, bw, dw0, 0, true);
                    }
                }
                raw_add(r[rep], gdi, (size_t)(N * C) * sizeof(mbpo__cx)); raw_add(r[rep], gdw, (size_t)(OC * C) * 4);
                raw_add(r[rep], gdb, (size_t)OC * 4);
                dfree_all();
            }
            check_det("matmul_backward", sh, r[0], r[1]);
        }
    }
}

static void test_layernorm(int64_t N, int64_t C) {
    char sh[64]; snprintf(sh, sizeof sh, "N=%lld C=%lld", (long long)N, (long long)C);
    const float eps = 1e-6f;
    vec x = rnd(N * C, 1.5, 0.7), w = rnd(C, 0.4, 1.0), b = rnd(C, 0.3), dout = rnd(N * C), dinp0 = rnd(N * C),
        dw0 = rndf(C), db0 = rndf(C);
    vec ro(N * C), rm(N), rr(N);
    mbpo__layernorm_forward(ro.data(), rm.data(), rr.data(), x.data(), w.data(), b.data(), N, C, eps);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gx = dx(x), *gw = dx(w), *gb = dx(b), *go = dx_poison(N * C);
        float *gm = df_poison(N), *gr = df_poison(N);
        GOK(G->layernorm_forward(gbe, go, gm, gr, gx, gw, gb, N, C, eps));
        vec o = xget(go, N * C), m = fget(gm, N), s = fget(gr, N);
        if (!rep) {
            check("layernorm_forward", "out", sh, o, ro, 1e-2);
            checkf("layernorm_forward", "mean", sh, m, rm, 1e-5);
            checkf("layernorm_forward", "rstd", sh, s, rr, 1e-5);
        }
        raw_add(r[rep], go, (size_t)(N * C) * sizeof(mbpo__cx)); raw_add(r[rep], gm, N * 4); raw_add(r[rep], gr, N * 4);
        dfree_all();
    }
    check_det("layernorm_forward", sh, r[0], r[1]);
    for (int withw = 0; withw < 2; withw++) {
        vec rdi = dinp0, rdw = dw0, rdb = db0;
        mbpo__layernorm_backward(rdi.data(), withw ? rdw.data() : NULL, withw ? rdb.data() : NULL, dout.data(), x.data(), w.data(),
                                 rm.data(), rr.data(), N, C);
        bytes q[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gx = dx(x), *gw = dx(w), *gd = dx(dout), *gdi = dx(dinp0);
            float *gm = df(rm), *gr = df(rr), *gdw = df(dw0), *gdb = df(db0);
            GOK(G->layernorm_backward(gbe, gdi, withw ? gdw : NULL, withw ? gdb : NULL, gd, gx, gw, gm, gr, N, C));
            vec a = xget(gdi, N * C), bw = fget(gdw, C), bb = fget(gdb, C);
            if (!rep) {
                check(withw ? "layernorm_backward" : "layernorm_backward (dw=db=NULL)", "dinp", sh, a, rdi, 1e-2);
                checkf(withw ? "layernorm_backward" : "layernorm_backward (dw=db=NULL)", "dw", sh, bw, rdw, 1e-2);
                checkf(withw ? "layernorm_backward" : "layernorm_backward (dw=db=NULL)", "db", sh, bb, rdb, 1e-2);
            }
            raw_add(q[rep], gdi, (size_t)(N * C) * sizeof(mbpo__cx)); raw_add(q[rep], gdw, C * 4); raw_add(q[rep], gdb, C * 4);
            dfree_all();
        }
        check_det("layernorm_backward", sh, q[0], q[1]);
    }
}

static void test_rmsnorm(int64_t N, int64_t C) {
    char sh[64]; snprintf(sh, sizeof sh, "N=%lld C=%lld", (long long)N, (long long)C);
    const float eps = 1e-6f;
    vec x = rnd(N * C, 1.5, 0.2), w = rnd(C, 0.4, 1.0), dout = rnd(N * C), dinp0 = rnd(N * C), dw0 = rndf(C);
    vec ro(N * C), rr(N);
    mbpo__rmsnorm_forward(ro.data(), rr.data(), x.data(), w.data(), N, C, eps);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gx = dx(x), *gw = dx(w), *go = dx_poison(N * C);
        float *gr = df_poison(N);
        GOK(G->rmsnorm_forward(gbe, go, gr, gx, gw, N, C, eps));
        vec o = xget(go, N * C), s = fget(gr, N);
        if (!rep) { check("rmsnorm_forward", "out", sh, o, ro, 1e-2); checkf("rmsnorm_forward", "rstd", sh, s, rr, 1e-5); }
        raw_add(r[rep], go, (size_t)(N * C) * sizeof(mbpo__cx)); raw_add(r[rep], gr, N * 4);
        dfree_all();
    }
    check_det("rmsnorm_forward", sh, r[0], r[1]);
    for (int withw = 0; withw < 2; withw++) {
        vec rdi = dinp0, rdw = dw0;
        mbpo__rmsnorm_backward(rdi.data(), withw ? rdw.data() : NULL, dout.data(), x.data(), w.data(), rr.data(), N, C);
        bytes q[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gx = dx(x), *gw = dx(w), *gd = dx(dout), *gdi = dx(dinp0);
            float *gr = df(rr), *gdw = df(dw0);
            GOK(G->rmsnorm_backward(gbe, gdi, withw ? gdw : NULL, gd, gx, gw, gr, N, C));
            vec a = xget(gdi, N * C), bw = fget(gdw, C);
            if (!rep) {
                check(withw ? "rmsnorm_backward" : "rmsnorm_backward (dw=NULL)", "dinp", sh, a, rdi, 1e-2);
                checkf(withw ? "rmsnorm_backward" : "rmsnorm_backward (dw=NULL)", "dw", sh, bw, rdw, 1e-2);
            }
            raw_add(q[rep], gdi, (size_t)(N * C) * sizeof(mbpo__cx)); raw_add(q[rep], gdw, C * 4);
            dfree_all();
        }
        check_det("rmsnorm_backward", sh, q[0], q[1]);
    }
}

/* unary activation: forward out = f(x), backward dinp = dout f'(x) (written) */
typedef int (*ew_fwd)(mbpo_backend *, mbpo_x *, const mbpo_x *, int64_t);
typedef int (*ew_bwd)(mbpo_backend *, mbpo_x *, const mbpo_x *, const mbpo_x *, int64_t);
static void test_unary(const char *name, ew_fwd gf, ew_fwd cf, ew_bwd gb, ew_bwd cb, int64_t n) {
    char sh[64], nf[96], nb[96]; snprintf(sh, sizeof sh, "n=%lld", (long long)n);
    snprintf(nf, sizeof nf, "%s_forward", name); snprintf(nb, sizeof nb, "%s_backward", name);
    vec x = rnd(n, 4), d = rnd(n), ro(n), rb(n);
    cf(cbe, (mbpo_x *)ro.data(), (const mbpo_x *)x.data(), n);
    cb(cbe, (mbpo_x *)rb.data(), (const mbpo_x *)d.data(), (const mbpo_x *)x.data(), n);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gx = dx(x), *gd = dx(d), *go = dx_poison(n), *gi = dx_poison(n);
        GOK(gf(gbe, go, gx, n));
        GOK(gb(gbe, gi, gd, gx, n));
        if (!rep) { check(nf, "out", sh, xget(go, n), ro, 4e-3); check(nb, "dinp", sh, xget(gi, n), rb, 4e-3); }
        raw_add(r[rep], go, (size_t)n * sizeof(mbpo__cx)); raw_add(r[rep], gi, (size_t)n * sizeof(mbpo__cx));
        dfree_all();
    }
    check_det(name, sh, r[0], r[1]);
}
static void test_swiglu_add(int64_t n) {
    char sh[64]; snprintf(sh, sizeof sh, "n=%lld", (long long)n);
    vec g = rnd(n, 4), u = rnd(n, 2), d = rnd(n), ro(n), rg(n), ru(n), ra(n);
    mbpo__swiglu_forward(ro.data(), g.data(), u.data(), n);
    mbpo__swiglu_backward(rg.data(), ru.data(), d.data(), g.data(), u.data(), n);
    P->add(cbe, (mbpo_x *)ra.data(), (const mbpo_x *)g.data(), (const mbpo_x *)u.data(), n);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gg = dx(g), *gu = dx(u), *gd = dx(d), *go = dx_poison(n), *gdg = dx_poison(n), *gdu = dx_poison(n), *gs = dx_poison(n);
        mbpo_x *galias = dx(g);
        GOK(G->swiglu_forward(gbe, go, gg, gu, n));
        GOK(G->swiglu_backward(gbe, gdg, gdu, gd, gg, gu, n));
        GOK(G->add(gbe, gs, gg, gu, n));
        GOK(G->add(gbe, galias, galias, gu, n));
        if (!rep) {
            check("swiglu_forward", "out", sh, xget(go, n), ro, 4e-3);
            check("swiglu_backward", "dgate", sh, xget(gdg, n), rg, 4e-3);
            check("swiglu_backward", "dup", sh, xget(gdu, n), ru, 4e-3);
            check("add", "out", sh, xget(gs, n), ra, 4e-3);
            check("add", "out == a (in place)", sh, xget(galias, n), ra, 4e-3);
        }
        raw_add(r[rep], go, (size_t)n * sizeof(mbpo__cx)); raw_add(r[rep], gdg, (size_t)n * sizeof(mbpo__cx));
        raw_add(r[rep], gdu, (size_t)n * sizeof(mbpo__cx)); raw_add(r[rep], gs, (size_t)n * sizeof(mbpo__cx));
        dfree_all();
    }
    check_det("swiglu/add", sh, r[0], r[1]);
}

static void test_rotary(void) {
    struct { int64_t HS; int sec0, sec1; } ms[] = {{8, 1, 1}, {100, 10, 20}, {128, 16, 24}, {512, 64, 96}};
    for (int64_t N : NS) for (auto m : ms) {
        char sh[64]; snprintf(sh, sizeof sh, "N=%lld HS=%lld", (long long)N, (long long)m.HS);
        int64_t half = m.HS / 2;
        std::vector<int64_t> pos(3 * N);
        for (auto &p : pos) p = irand(5000);
        vec rc(N * half, NAN), rs(N * half, NAN);
        P->mrope_tables(cbe, rc.data(), rs.data(), pos.data(), N, m.HS, 1e6, m.sec0, m.sec1);
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            int64_t *gp = dcopy(pos);
            float *gc = df_poison(N * half), *gs = df_poison(N * half);
            GOK(G->mrope_tables(gbe, gc, gs, gp, N, m.HS, 1e6, m.sec0, m.sec1));
            if (!rep) { checkf("mrope_tables", "cos", sh, fget(gc, N * half), rc, 1e-5, false, 1e-5); checkf("mrope_tables", "sin", sh, fget(gs, N * half), rs, 1e-5, false, 1e-5); }
            raw_add(r[rep], gc, (size_t)(N * half) * 4); raw_add(r[rep], gs, (size_t)(N * half) * 4);
            dfree_all();
        }
        check_det("mrope_tables", sh, r[0], r[1]);
    }
    /* table tolerances: fp32 tables in both builds; emulated cosf is the host's, so these come out exact */
    for (auto &kv : table) if (kv.first == "mrope_tables") kv.second.tol = 1e-5;
    const int64_t vhs[] = {6, 8, 80, 100, 1024};
    for (int64_t N : NS) for (int64_t HS : vhs) {
        char sh[64]; snprintf(sh, sizeof sh, "N=%lld HS=%lld", (long long)N, (long long)HS);
        int64_t half = HS / 2;
        std::vector<int64_t> hw(2 * N);
        for (auto &p : hw) p = irand(64);
        vec rc(N * half, NAN), rs(N * half, NAN);
        P->vrope_tables(cbe, rc.data(), rs.data(), hw.data(), N, HS, 1e4);
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            int64_t *gp = dcopy(hw);
            float *gc = df_poison(N * half), *gs = df_poison(N * half);
            GOK(G->vrope_tables(gbe, gc, gs, gp, N, HS, 1e4));
            if (!rep) { checkf("vrope_tables", "cos", sh, fget(gc, N * half), rc, 1e-5, false, 1e-5); checkf("vrope_tables", "sin", sh, fget(gs, N * half), rs, 1e-5, false, 1e-5); }
            raw_add(r[rep], gc, (size_t)(N * half) * 4); raw_add(r[rep], gs, (size_t)(N * half) * 4);
            dfree_all();
        }
        check_det("vrope_tables", sh, r[0], r[1]);
    }
    {   /* HS over the kernel-argument table: must fail, not overflow */
        std::vector<int64_t> pos(3 * 2, 1);
        int64_t *gp = dcopy(pos);
        float *gc = df_poison(2 * 300), *gs = df_poison(2 * 300);
        expect_fail("mrope_tables HS=514", G->mrope_tables(gbe, gc, gs, gp, 2, 514, 1e6, 16, 24));
        expect_fail("vrope_tables HS=1028", G->vrope_tables(gbe, gc, gs, gp, 2, 1028, 1e4));
        dfree_all();
    }
    const int64_t hss[] = {8, 80, 128}, nhs[] = {1, 3};
    for (int64_t N : NS) for (int64_t HS : hss) for (int64_t nh : nhs) for (int sg = 0; sg < 2; sg++) {
        float sign = sg ? -1.0f : 1.0f;
        int64_t half = HS / 2, stride = nh * HS + 5;   /* a gap after each row: must stay as it is */
        char sh[96]; snprintf(sh, sizeof sh, "N=%lld nh=%lld HS=%lld stride=%lld sign=%+.0f", (long long)N, (long long)nh, (long long)HS, (long long)stride, sign);
        vec x = rnd(N * stride, 2), c(N * half), s(N * half);
        for (int64_t i = 0; i < N * half; i++) { double a = urand() * 3.14159; c[i] = (float)cos(a); s[i] = (float)sin(a); }
        vec ref = x;
        mbpo__rope_apply(ref.data(), c.data(), s.data(), N, nh, HS, stride, sign);
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gx = dx(x);
            float *gc = df(c), *gs = df(s);
            GOK(G->rope_apply(gbe, gx, gc, gs, N, nh, HS, stride, sign));
            if (!rep) check("rope_apply", "x", sh, xget(gx, N * stride), ref, 4e-3);
            raw_add(r[rep], gx, (size_t)(N * stride) * sizeof(mbpo__cx));
            dfree_all();
        }
        check_det("rope_apply", sh, r[0], r[1]);
    }
}

/* gather_rows: a random permutation of R rows of W (Qwen2.5-VL's window order), exact */
static void test_gather_rows(int64_t R, int64_t W) {
    char sh[64]; snprintf(sh, sizeof sh, "R=%lld W=%lld", (long long)R, (long long)W);
    std::vector<int64_t> idx(R);
    for (int64_t r = 0; r < R; r++) idx[r] = r;
    for (int64_t r = R - 1; r > 0; r--) { int64_t q = irand(r + 1), t = idx[r]; idx[r] = idx[q]; idx[q] = t; }
    vec x = rnd(R * W), ref(R * W);
    P->gather_rows(cbe, (mbpo_x *)ref.data(), (const mbpo_x *)x.data(), idx.data(), R, W);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gx = dx(x), *go = dx_poison(R * W);
        int64_t *gi = dcopy(idx);
        GOK(G->gather_rows(gbe, go, gx, gi, R, W));
        if (!rep) check("gather_rows", "out", sh, xget(go, R * W), ref, 0, true);
        raw_add(r[rep], go, (size_t)(R * W) * sizeof(mbpo__cx));
        dfree_all();
    }
    check_det("gather_rows", sh, r[0], r[1]);
}

static void test_embed(int64_t T, int64_t H) {
    char sh[64]; snprintf(sh, sizeof sh, "T=%lld H=%lld", (long long)T, (long long)H);
    const int64_t VE = 50, NF = 9, pad = 3;
    std::vector<int32_t> ids(T);
    std::vector<int64_t> fr(T), none(T, -1);
    for (int64_t t = 0; t < T; t++) { ids[t] = (int32_t)irand(VE); fr[t] = irand(10) < 3 ? irand(NF) : -1; if (t % 5 == 2) ids[t] = (int32_t)pad; }
    if (T >= 3) { ids[0] = ids[1] = ids[2] = 7; fr[0] = fr[1] = fr[2] = -1; }   /* repeated tokens */
    vec emb = rnd(VE * H), feat = rnd(NF * H), dh = rnd(T * H), dfeat0 = rnd(NF * H), demb0 = rndf(VE * H);
    for (int nul = 0; nul < 2; nul++) {   /* feat_row given, then NULL */
        const int64_t *frh = nul ? NULL : fr.data();
        vec ref(T * H);
        P->embed_forward(cbe, (mbpo_x *)ref.data(), (const mbpo_x *)emb.data(), (const mbpo_x *)feat.data(), ids.data(), frh, T, H);
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *ge = dx(emb), *gf = dx(feat), *gh = dx_poison(T * H);
            int32_t *gi = dcopy(ids);
            int64_t *gfr = nul ? NULL : dcopy(fr);
            GOK(G->embed_forward(gbe, gh, ge, gf, gi, gfr, T, H));
            if (!rep) check(nul ? "embed_forward (feat_row NULL)" : "embed_forward", "h", sh, xget(gh, T * H), ref, 0, true);
            raw_add(r[rep], gh, (size_t)(T * H) * sizeof(mbpo__cx));
            dfree_all();
        }
        check_det("embed_forward", sh, r[0], r[1]);
    }
    /* backward: (0) full, (1) dembed NULL, (2) feat_row NULL and dfeat NULL on the GPU vs an all -1
       feat_row on the CPU (the CPU op dereferences feat_row unconditionally) */
    for (int var = 0; var < 3; var++) {
        vec rdf = dfeat0, rde = demb0;
        P->embed_backward(cbe, var == 1 ? NULL : rde.data(), var == 2 ? NULL : (mbpo_x *)rdf.data(), (const mbpo_x *)dh.data(),
                          ids.data(), var == 2 ? none.data() : fr.data(), pad, T, H);
        const char *nm = var == 0 ? "embed_backward" : var == 1 ? "embed_backward (dembed NULL)" : "embed_backward (feat_row, dfeat NULL)";
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gdh = dx(dh), *gdf = dx(dfeat0);
            float *gde = df(demb0);
            int32_t *gi = dcopy(ids);
            int64_t *gfr = var == 2 ? NULL : dcopy(fr);
            GOK(G->embed_backward(gbe, var == 1 ? NULL : gde, var == 2 ? NULL : gdf, gdh, gi, gfr, pad, T, H));
            if (!rep) {
                check(nm, "dfeat", sh, xget(gdf, NF * H), rdf, 1e-2);
                checkf(nm, "dembed", sh, fget(gde, VE * H), rde, 1e-2);
            }
            raw_add(r[rep], gdf, (size_t)(NF * H) * sizeof(mbpo__cx)); raw_add(r[rep], gde, (size_t)(VE * H) * 4);
            dfree_all();
        }
        check_det("embed_backward", sh, r[0], r[1]);
    }
}

/* kv_append at t = *tp read from backend memory: the CPU's copy inside the cache; outside it
   (t = -1, t = max_len) the CUDA kernel writes nothing (the CPU op fails there instead) */
static void test_kv(void) {
    const int64_t gs[] = {1, 3}, kds[] = {8, 100, 257}, ML = 5;
    for (int64_t Gn : gs) for (int64_t KD : kds) for (int64_t t : {(int64_t)0, (int64_t)4}) {
        char sh[64]; snprintf(sh, sizeof sh, "G=%lld KD=%lld t=%lld", (long long)Gn, (long long)KD, (long long)t);
        vec kc = rnd(Gn * ML * KD), vc = rnd(Gn * ML * KD), kn = rnd(Gn * KD), vn = rnd(Gn * KD), rk = kc, rv = vc;
        if (!P->kv_append(cbe, (mbpo_x *)rk.data(), (mbpo_x *)rv.data(), (const mbpo_x *)kn.data(), (const mbpo_x *)vn.data(), Gn,
                          &t, ML, KD)) { printf("FAIL cpu kv_append: %s\n", mbpo_failure_reason()); n_fail++; }
        bytes r[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gk = dx(kc), *gv = dx(vc), *gkn = dx(kn), *gvn = dx(vn);
            int64_t *gt = dcopy(std::vector<int64_t>{t});
            GOK(G->kv_append(gbe, gk, gv, gkn, gvn, Gn, gt, ML, KD));
            if (!rep) { check("kv_append", "kc", sh, xget(gk, Gn * ML * KD), rk, 0, true); check("kv_append", "vc", sh, xget(gv, Gn * ML * KD), rv, 0, true); }
            raw_add(r[rep], gk, (size_t)(Gn * ML * KD) * sizeof(mbpo__cx)); raw_add(r[rep], gv, (size_t)(Gn * ML * KD) * sizeof(mbpo__cx));
            dfree_all();
        }
        check_det("kv_append", sh, r[0], r[1]);
    }
    for (int64_t t : {(int64_t)-1, (int64_t)5}) {   /* outside the cache of 5: the caches stay as they were */
        char sh[64]; snprintf(sh, sizeof sh, "G=3 KD=8 t=%lld (outside)", (long long)t);
        vec kc = rnd(3 * ML * 8), vc = rnd(3 * ML * 8), kn = rnd(3 * 8), vn = rnd(3 * 8), ref = kc, rk = kc, rv = vc;
        mbpo_x *gk = dx(kc), *gv = dx(vc), *gkn = dx(kn), *gvn = dx(vn);
        int64_t *gt = dcopy(std::vector<int64_t>{t});
        GOK(G->kv_append(gbe, gk, gv, gkn, gvn, 3, gt, ML, 8));
        check("kv_append outside the cache: nothing written", "kc", sh, xget(gk, 3 * ML * 8), kc, 0, true);
        check("kv_append outside the cache: nothing written", "vc", sh, xget(gv, 3 * ML * 8), vc, 0, true);
        expect_fail("cpu kv_append outside the cache", P->kv_append(cbe, (mbpo_x *)rk.data(), (mbpo_x *)rv.data(),
                    (const mbpo_x *)kn.data(), (const mbpo_x *)vn.data(), 3, &t, ML, 8));
        dfree_all();
    }
    mbpo_x *a = dx_poison(40), *b = dx_poison(40);
    expect_fail("kv_append max_len=0", G->kv_append(gbe, a, b, a, b, 1, NULL, 0, 8));
    dfree_all();
}

static void test_head(int64_t N, int64_t H, int64_t V, int64_t chunk) {
    char sh[96]; snprintf(sh, sizeof sh, "N=%lld H=%lld V=%lld chunk=%lld", (long long)N, (long long)H, (long long)V, (long long)chunk);
    int64_t T = N + 4;
    std::vector<int64_t> rows(T);
    for (int64_t i = 0; i < T; i++) rows[i] = i;
    for (int64_t i = T - 1; i > 0; i--) { int64_t j = irand(i + 1), s = rows[i]; rows[i] = rows[j]; rows[j] = s; }
    rows.resize(N);
    std::vector<int32_t> lab(N);
    for (int64_t i = 0; i < N; i++) lab[i] = (int32_t)(i == 0 ? 0 : i == 1 ? V - 1 : irand(V));
    vec xf = rnd(T * H), lm = rnd(V * H, 0.5), dlogp = rndf(N, 1), dxf0 = rnd(T * H), dlm0 = rndf(V * H);
    vec rl(N), rlse(N), cx(chunk * H), cz(chunk * V), cdx(chunk * H);
    P->head_forward(cbe, rl.data(), rlse.data(), (const mbpo_x *)xf.data(), (const mbpo_x *)lm.data(), rows.data(), lab.data(),
                    N, H, V, chunk, (mbpo_x *)cx.data(), cz.data());
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        mbpo_x *gx = dx(xf), *gl = dx(lm), *gcx = dx_poison(chunk * H);
        float *glp = df_poison(N), *gls = df_poison(N), *gcz = df_poison(chunk * V);
        int64_t *gr = dcopy(rows);
        int32_t *gy = dcopy(lab);
        GOK(G->head_forward(gbe, glp, gls, gx, gl, gr, gy, N, H, V, chunk, gcx, gcz));
        if (!rep) { checkf("head_forward [host GEMM]", "logp", sh, fget(glp, N), rl, 2e-2); checkf("head_forward [host GEMM]", "lse", sh, fget(gls, N), rlse, 2e-2); }
        raw_add(r[rep], glp, N * 4); raw_add(r[rep], gls, N * 4);
        dfree_all();
    }
    check_det("head_forward", sh, r[0], r[1]);
    for (int withw = 0; withw < 2; withw++) {
        vec rdx = dxf0, rdl = dlm0;
        P->head_backward(cbe, (mbpo_x *)rdx.data(), withw ? rdl.data() : NULL, dlogp.data(), rlse.data(), (const mbpo_x *)xf.data(),
                         (const mbpo_x *)lm.data(), rows.data(), lab.data(), N, H, V, chunk, (mbpo_x *)cx.data(), cz.data(),
                         (mbpo_x *)cdx.data());
        const char *nm = withw ? "head_backward [host GEMM]" : "head_backward (dlm_head NULL)";
        bytes q[2];
        for (int rep = 0; rep < 2; rep++) {
            mbpo_x *gx = dx(xf), *gl = dx(lm), *gcx = dx_poison(chunk * H), *gcdx = dx_poison(chunk * H), *gdx = dx(dxf0);
            float *gdl = df(dlm0), *gdlp = df(dlogp), *gls = df(rlse), *gcz = df_poison(chunk * V);
            int64_t *gr = dcopy(rows);
            int32_t *gy = dcopy(lab);
            GOK(G->head_backward(gbe, gdx, withw ? gdl : NULL, gdlp, gls, gx, gl, gr, gy, N, H, V, chunk, gcx, gcz, gcdx));
            if (!rep) { check(nm, "dxf", sh, xget(gdx, T * H), rdx, 2e-2); checkf(nm, "dlm_head", sh, fget(gdl, V * H), rdl, 2e-2); }
            raw_add(q[rep], gdx, (size_t)(T * H) * sizeof(mbpo__cx)); raw_add(q[rep], gdl, (size_t)(V * H) * 4);
            dfree_all();
        }
        check_det("head_backward", sh, q[0], q[1]);
    }
}
/* the in-place dz kernel alone: fp32 z rows in, mbpo__cx dz at the start of each row out */
static void test_dz(int64_t cn, int64_t V) {
    char sh[64]; snprintf(sh, sizeof sh, "cn=%lld V=%lld", (long long)cn, (long long)V);
    vec z = rndf(cn * V, 5), dl = rndf(cn), lse(cn), lp(cn);
    std::vector<int32_t> y(cn);
    for (int64_t i = 0; i < cn; i++) y[i] = (int32_t)(i == 0 ? V - 1 : i == 1 ? 0 : irand(V));
    mbpo__logsoftmax_gather_forward(lp.data(), lse.data(), z.data(), y.data(), cn, V);
    vec ref = z;
    mbpo__logsoftmax_gather_backward(ref.data(), dl.data(), lse.data(), y.data(), cn, V);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        float *gz = df(z), *gdl = df(dl), *gls = df(lse);
        int32_t *gy = dcopy(y);
        mbpo__emu_launch("mbpo__k_logsoftmax_gather_backward", (unsigned)cn, MBPO__ROW_THREADS, 0, NULL)
            .run(mbpo__k_logsoftmax_gather_backward, gz, (const float *)gdl, (const float *)gls, (const int32_t *)gy, V);
        vec got(cn * V);
        int64_t ldz = V * (int64_t)(sizeof(float) / sizeof(mbpo__cx));
        const mbpo__cx *dz = (const mbpo__cx *)(const void *)gz;
        for (int64_t i = 0; i < cn; i++)
            for (int64_t j = 0; j < V; j++) got[i * V + j] = mbpo__ld(dz, i * ldz + j);
        if (!rep) check("logsoftmax_gather_backward (in-place dz kernel)", "dz", sh, got, ref, 4e-3);
        raw_add(r[rep], gz, (size_t)(cn * V) * 4);
        dfree_all();
    }
    check_det("logsoftmax_gather_backward (in-place dz kernel)", sh, r[0], r[1]);
}

/* ---- section 14, PGD: pixels against mbpo__cpu_pixels (rows exactly the storage type of the
   CPU's), pixels_backward and pgd_step bit for bit (fp32 math on the same inputs), on a
   shuffled map in which each image value feeds T = 2 rows, slow (k = 1) and fast (k = 255). */
static void test_pgd(int64_t n, int fast) {
    const int64_t T = 2, npv = n * T;
    char sh[64]; snprintf(sh, sizeof sh, "n=%lld k=%s", (long long)n, fast ? "255" : "1");
    std::vector<int64_t> map((size_t)npv), inv((size_t)npv), cnt((size_t)n, 0);
    for (int64_t j = 0; j < npv; j++) map[j] = j / T;
    for (int64_t j = npv - 1; j > 0; j--) std::swap(map[j], map[irand(j + 1)]);
    for (int64_t j = 0; j < npv; j++) inv[map[j] * T + cnt[map[j]]++] = j;
    vec x((size_t)n), x0((size_t)n), g((size_t)n), dpv = rnd(npv, 1.0);
    for (int64_t i = 0; i < n; i++) {
        x0[i] = (float)irand(256) / 255.0f;
        float v = x0[i] + (float)(irand(9) - 4) / 255.0f;
        x[i] = v < 0 ? 0 : v > 1 ? 1 : v;
        g[i] = (float)(irand(3) - 1) * 0.5f;
    }
    float kms[7] = { 1.0f, 0.48145466f, 0.4578275f, 0.40821073f, 0.26862954f, 0.26130258f, 0.27577711f };
    if (fast) for (int i = 0; i < 7; i++) kms[i] *= 255.0f;
    vec rpv((size_t)npv), rdx((size_t)n);
    P->pixels(cbe, (mbpo_x *)rpv.data(), x.data(), map.data(), npv, kms);
    P->pixels_backward(cbe, rdx.data(), (const mbpo_x *)dpv.data(), inv.data(), n, T, kms);
    int64_t *gmap = (int64_t *)dalloc((size_t)npv * 8), *ginv = (int64_t *)dalloc((size_t)npv * 8);
    G->upload(gbe, gmap, map.data(), (size_t)npv * 8); G->upload(gbe, ginv, inv.data(), (size_t)npv * 8);
    float *gx = df(x), *gx0 = df(x0), *gg = df(g), *gdx = df_poison(n);
    mbpo_x *gpv = dx_poison(npv), *gdpv = dx(dpv);
    GOK(G->pixels(gbe, gpv, gx, gmap, npv, kms));
    check("pixels", "pv", sh, xget(gpv, npv), rpv, 0, true);
    GOK(G->pixels_backward(gbe, gdx, gdpv, ginv, n, T, kms));
    checkf("pixels_backward", "dx", sh, fget(gdx, n), rdx, 0, true);
    for (int e = 0; e < 2; e++) {
        float eps = e ? 6.0f / 255.0f : -1.0f;
        vec rxs = x;
        P->pgd_step(cbe, rxs.data(), x0.data(), g.data(), n, 4.0f / 255.0f, eps);
        float *gxs = df(x);
        GOK(G->pgd_step(gbe, gxs, gx0, gg, n, 4.0f / 255.0f, eps));
        checkf("pgd_step", e ? "x, eps 6/255" : "x, no ball", sh, fget(gxs, n), rxs, 0, true);
    }
    dfree_all();
}

/* ---- section 12, the optimizer. sumsq against the CPU's sequential sum: another order, both
   in double over exact squares, so rel-err <= 1e-12 (not bitwise), and the same bits on a
   second call. adamw against mbpo__cpu_adamw bit for bit (the same double formula on the
   host, -ffp-contract=off on both sides; on the GPU nvcc's FMAs allow 1 float ulp, see
   test_cuda.cu), px exactly the storage type of the GPU's own master. */
static void check_d(const std::string &op, const char *shape, double got, double ref, double tol) {
    double e = fabs(got - ref) / (fabs(ref) > 1e-300 ? fabs(ref) : 1e-300);
    bool ok = e <= tol;   /* false for a NaN */
    row &t = table[op];
    if (!t.cases) order_.push_back(op);
    t.cases++; t.err = e > t.err ? e : t.err; t.bitwise = t.bitwise && got == ref; t.pass = t.pass && ok;
    t.tol = tol > t.tol ? tol : t.tol;
    if (ok) n_pass++;
    else { n_fail++; printf("FAIL %s %s: got %.17g ref %.17g (rel-err %.3g, tol %.3g)\n", op.c_str(), shape, got, ref, e, tol); }
}
static void test_sumsq(int64_t n) {
    char sh[64]; snprintf(sh, sizeof sh, "n=%lld", (long long)n);
    vec g = rndf(n, 3);
    double ref = NAN, got[2] = {NAN, NAN};
    P->sumsq(cbe, &ref, g.data(), n);
    float *gg = df(g);
    for (int rep = 0; rep < 2; rep++) GOK(G->sumsq(gbe, &got[rep], gg, n));
    check_d("sumsq", sh, got[0], ref, 1e-12);
    bytes a, b;
    raw_add(a, &got[0], sizeof(double)); raw_add(b, &got[1], sizeof(double));
    check_det("sumsq", sh, a, b);
    dfree_all();
}
static void test_adamw(int64_t n, int variant) {
    mbpo__adamw_k k;
    if (!variant) { k.lr = 3e-4; k.beta1 = 0.9; k.beta2 = 0.999; k.eps = 1e-8; k.weight_decay = 0; k.scale = 1; }
    else { k.lr = 1e-5; k.beta1 = 0.9; k.beta2 = 0.95; k.eps = 1e-6; k.weight_decay = 0.1; k.scale = 0.37; }
    k.bc1 = 1 - pow(k.beta1, variant ? 1.0 : 10.0);
    k.bc2 = 1 - pow(k.beta2, variant ? 1.0 : 10.0);
    char sh[96]; snprintf(sh, sizeof sh, "n=%lld wd=%g scale=%g step=%d", (long long)n, k.weight_decay, k.scale, variant ? 1 : 10);
    vec p0 = rndf(n, 0.05), g = rndf(n, 1e-3), m0 = rndf(n, 1e-4), v0 = rndf(n, 1e-3);
    for (auto &x : v0) x = x * x;
    vec rp = p0, rm = m0, rv = v0;
    P->adamw(cbe, rp.data(), (mbpo_x *)rp.data(), rm.data(), rv.data(), g.data(), n, &k);
    bytes r[2];
    for (int rep = 0; rep < 2; rep++) {
        float *gp = df(p0), *gm = df(m0), *gv = df(v0), *gg = df(g);
        mbpo_x *px = dx_poison(n);
        GOK(G->adamw(gbe, gp, px, gm, gv, gg, n, &k));
        vec hp = fget(gp, n);
        if (!rep) {
            checkf("adamw", "master", sh, hp, rp, 0, true);
            checkf("adamw", "m", sh, fget(gm, n), rm, 0, true);
            checkf("adamw", "v", sh, fget(gv, n), rv, 0, true);
            vec want = hp;
            for (auto &x : want) x = rx(x);
            check("adamw px = storage type of master", "px", sh, xget(px, n), want, 0, true);
        }
        raw_add(r[rep], gp, (size_t)n * 4); raw_add(r[rep], gm, (size_t)n * 4); raw_add(r[rep], gv, (size_t)n * 4);
        raw_add(r[rep], px, (size_t)n * sizeof(mbpo__cx));
        dfree_all();
    }
    check_det("adamw", sh, r[0], r[1]);
#if FP32
    {   /* fp32 storage: px may be master itself */
        float *gp = df(p0), *gm = df(m0), *gv = df(v0), *gg = df(g);
        GOK(G->adamw(gbe, gp, (mbpo_x *)gp, gm, gv, gg, n, &k));
        checkf("adamw (px == master)", "master", sh, fget(gp, n), rp, 0, true);
        dfree_all();
    }
#endif
}

/* ---- section 13, sampling, against mbpo__cpu_sample, with test_cuda.cu's cases and more. G = 8
   rows, rows 2 and 5 done; a pool of 24 draws read from st[NU] on (NU varies per draw: a live
   row of rank r reads u[NU + r]). layout 0: N(0, 9) logits; row 1 ties at the max (three ids at
   20, a banned id at 30); row 4 one logit at +200 (the rest hold ~e^-270 each: candidates in
   double, 0 as floats), with u = 0 in the first draw (the walk's strict target < acc picks the
   +200 id, not id 0); row 6 one logit at +15. layout 1 (edges): z[0] NaN; a NaN inside; +inf;
   all -inf; all equal; -0.0 and +0.0 tied among -inf; ban ids out of range (-1, V, V + 7) next
   to a valid one. layout 2 (exact ties, for top-k / top-p): row 0 two ids at +200 (p = 1/2
   each, exactly), row 1 four (1/4 each: the nucleus' mass >= top_p meets equality at top-p
   0.5 and 0.75), row 3 flat (every p equal: top-k keeps the lowest ids), row 4 eight ids at
   +50, row 6 N(0, 9) rounded to multiples of 1/2 (ties everywhere), row 7 N(0, 9).
   Greedy tokens must equal the CPU's; temperature tokens too (they can differ only when u S or
   top_p kept falls within rounding of a boundary, see mbpo_cuda.cuh section 13: the count is
   printed and must be 0); logp within 1e-6 of the CPU's for the same token; z after the call
   the CPU's bit for bit (the bans written, nothing else); rows done untouched (z, tok, logp);
   a second call the same tokens and log-probs, bit for bit. Each case prints which of the
   kernel's paths its live rows take (host model of the selection: id order, exact (sorted
   prefix <= 4096), fixed point). */
static void sample_rows(vec &z, int64_t V, int layout, mbpo_rng *r) {
    for (auto &x : z) x = (float)(3.0 * mbpo_rng_normal(r));
    float *row;
    int64_t i;
    if (layout == 0) {
        row = &z[1 * V]; row[V / 7] = 20; row[V / 3] = 20; row[V > 1 ? V - 2 : 0] = 20; row[V / 4] = 30;
        row = &z[4 * V]; row[(V / 2 + 3) % V] = 200;
        row = &z[6 * V]; row[5 % V] = 15;
        return;
    }
    if (layout == 2) {
        row = &z[0 * V]; row[V / 3] = 200; row[2 * V / 3] = 200;
        row = &z[1 * V]; for (i = 1; i < 8; i += 2) row[i * V / 8] = 200;
        row = &z[3 * V]; for (i = 0; i < V; i++) row[i] = 0.5f;
        row = &z[4 * V]; for (i = 0; i < 8; i++) row[(i * V / 8 + 3) % V] = 50;
        row = &z[6 * V]; for (i = 0; i < V; i++) row[i] = 0.5f * roundf(2 * row[i]);
        return;
    }
    z[0] = NAN;
    z[1 * V + V / 2] = NAN;
    z[3 * V + V / 3] = INFINITY;
    for (i = 0; i < V; i++) z[4 * V + i] = -INFINITY;
    for (i = 0; i < V; i++) z[6 * V + i] = 0.5f;
    for (i = 0; i < V; i++) z[7 * V + i] = -INFINITY;
    z[7 * V + 3 % V] = -0.0f; z[7 * V + 4 % V] = 0.0f;
}
static void check_count(const std::string &op, const char *shape, int64_t nbad, int64_t n) {
    row &t = table[op];
    if (!t.cases) order_.push_back(op);
    t.cases++; t.err = (double)nbad > t.err ? (double)nbad : t.err; t.bitwise = t.bitwise && !nbad; t.pass = t.pass && !nbad;
    if (!nbad) n_pass++;
    else { n_fail++; printf("FAIL %s %s: %lld of %lld differ\n", op.c_str(), shape, (long long)nbad, (long long)n); }
}
/* the kernel's path for a row (banned already), modelled on the host with the CPU's sums:
   0 id order, 1 exact (the sorted prefix M <= 4096), 2 fixed point */
static int sample_path(const float *row, int64_t V, const mbpo__sample_k &k) {
    int64_t i, n = 0, best = 0, keep, M;
    double mx, sum = 0, top_p = k.top_p > 0 && k.top_p < 1 ? k.top_p : 1.0, cut = top_p < 1 ? (1 - top_p) / (double)V : 0;
    std::vector<float> p;
    if (k.temperature <= 0) return 0;
    for (i = 1; i < V; i++) if (row[i] > row[best]) best = i;
    mx = row[best];
    for (i = 0; i < V; i++) sum += exp((row[i] - mx) / k.temperature);
    for (i = 0; i < V; i++) {
        double q = exp((row[i] - mx) / k.temperature) / sum;
        if (q >= cut && q > 0) { p.push_back((float)q); n++; }
    }
    keep = k.top_k > 0 && k.top_k < n ? k.top_k : n;
    if (n == 0 || (keep == n && top_p >= 1)) return 0;
    M = keep;
    if (keep == n) {
        double mass = 0;
        std::sort(p.begin(), p.end(), [](float a, float b) { return a > b; });
        for (i = 0; i < n; i++) { mass += p[(size_t)i]; if (mass >= top_p) break; }
        M = i + 1 + 8 < n ? i + 1 + 8 : n;
    }
    return M <= 4096 ? 1 : 2;
}
struct sample_case { int64_t V; int layout; double T; int64_t top_k; double top_p; int draws; int ws_rows = 0; };
static int64_t sample_draws = 0, sample_mismatches = 0;
static void test_sample(const sample_case &sc) {
    const int64_t Gn = 8, NP = 24, V = sc.V;
    const std::vector<unsigned char> done = {0, 0, 1, 0, 0, 1, 0, 0};
    mbpo__sample_k k;
    mbpo_rng r;
    memset(&k, 0, sizeof k);
    k.temperature = sc.T; k.top_k = sc.top_k; k.top_p = sc.top_p; k.n_ban = 4;
    if (sc.layout != 1) { k.ban[0] = 1 % V; k.ban[1] = V / 4; k.ban[2] = V / 2; k.ban[3] = V - 1; }
    else { k.ban[0] = V - 1; k.ban[1] = -1; k.ban[2] = V; k.ban[3] = V + 7; }
    mbpo_rng_seed(&r, 1000 * (uint64_t)V + 10 * (uint64_t)sc.layout + (uint64_t)(sc.T * 10) + 7919 * (uint64_t)sc.top_k +
                          (uint64_t)(sc.top_p * 1e6));
    vec z((size_t)(Gn * V)), zc;
    sample_rows(z, V, sc.layout, &r);
    zc = z;
    float *gz = df(z);
    unsigned char *gdone = dcopy(done);
    struct mbpo__backend_cuda *cb = (struct mbpo__backend_cuda *)(void *)gbe;
    const size_t ws_size = cb->workspace_size;
    if (sc.ws_rows) cb->workspace_size = (size_t)(sc.ws_rows * V) * sizeof(float);   /* fewer blocks than rows: they stride */
    int64_t nbad = 0, nmis = 0, ndet = 0, nidle = 0, ndraw = 0, paths[3] = {0, 0, 0};
    double lp_err = 0;
    char sh[160];
    for (int rep = 0; rep < sc.draws; rep++) {
        double u[24];
        int64_t sv[MBPO__GS_N] = {0, 0, 0, 0, 0};
        std::vector<int32_t> init(8, -7);
        int32_t tc[8], tg[8], tg2[8];
        float lc[8], lg[8], lg2[8];
        for (int i = 0; i < NP; i++) u[i] = mbpo_rng_uniform(&r);
        if (rep == 0 && sc.layout == 0) u[3] = 0.0;   /* row 4's draw (NU 0: rows 0, 1, 3 before it) */
        sv[MBPO__GS_NU] = rep == 0 ? 0 : rep % (NP - 6 + 1);
        for (int g = 0; g < 8; g++) { tc[g] = -7; lc[g] = NAN; }
        if (!P->sample(cbe, tc, lc, zc.data(), u, sv, done.data(), Gn, V, &k)) {
            printf("FAIL cpu sample: %s\n", mbpo_failure_reason()); n_fail++;
        }
        if (rep == 0)
            for (int g = 0; g < 8; g++) if (!done[g]) paths[sample_path(&zc[(size_t)(g * V)], V, k)]++;
        double *gu = dcopy(std::vector<double>(u, u + NP));
        int64_t *gst = dcopy(std::vector<int64_t>(sv, sv + MBPO__GS_N));
        int32_t *gt = dcopy(init), *gt2 = dcopy(init);
        float *gl = df_poison(8), *gl2 = df_poison(8);
        GOK(G->sample(gbe, gt, gl, gz, gu, gst, gdone, Gn, V, &k));
        GOK(G->sample(gbe, gt2, gl2, gz, gu, gst, gdone, Gn, V, &k));
        G->download(gbe, tg, gt, sizeof tg); G->download(gbe, tg2, gt2, sizeof tg2);
        G->download(gbe, lg, gl, sizeof lg); G->download(gbe, lg2, gl2, sizeof lg2);
        for (int g = 0; g < 8; g++) {
            if (done[g]) {
                uint32_t b1, b2;
                memcpy(&b1, &lg[g], 4); memcpy(&b2, &lg2[g], 4);
                nidle += tg[g] != -7 || tg2[g] != -7 || b1 != 0xFFFFFFFFu || b2 != 0xFFFFFFFFu;
                continue;
            }
            ndraw++;
            ndet += tg[g] != tg2[g] || memcmp(&lg[g], &lg2[g], 4);
            if (tg[g] != tc[g]) {
                (sc.T > 0 ? nmis : nbad)++;
                int rk = 0;
                for (int i = 0; i < g; i++) rk += !done[i];
                printf("     sample V=%lld layout %d T=%g top-k %lld top-p %g row %d (NU %lld): u %.17g: got %d, cpu %d\n",
                       (long long)V, sc.layout, sc.T, (long long)sc.top_k, sc.top_p, g, (long long)sv[MBPO__GS_NU],
                       u[sv[MBPO__GS_NU] + rk], tg[g], tc[g]);
                continue;
            }
            double e = std::isnan(lg[g]) && std::isnan(lc[g]) ? 0 : fabs((double)lg[g] - lc[g]);
            if (!(e <= 1e-6)) {
                nbad++;
                printf("FAIL sample logp V=%lld row %d token %d: got %.9g cpu %.9g\n", (long long)V, g, tc[g], lg[g], lc[g]);
            } else if (e > lp_err) lp_err = e;
        }
        dfree_keep(2);   /* the per-draw buffers; z and done stay */
    }
    cb->workspace_size = ws_size;
    snprintf(sh, sizeof sh, "G=8 V=%lld layout=%d T=%g top-k %lld top-p %g draws=%d%s", (long long)V, sc.layout, sc.T,
             (long long)sc.top_k, sc.top_p, sc.draws, sc.ws_rows ? " (3 blocks)" : "");
    printf("  sample %-58s rows: %lld id order, %lld exact, %lld fixed point; %lld of %lld tokens differ\n", sh,
           (long long)paths[0], (long long)paths[1], (long long)paths[2], (long long)(sc.T > 0 ? nmis : nbad),
           (long long)ndraw);
    const bool topx = sc.T > 0 && ((sc.top_k > 0) || (sc.top_p > 0 && sc.top_p < 1));
    check_count(sc.T <= 0 ? "sample (greedy): tokens" : topx ? "sample (top-k, top-p): tokens" : "sample (temperature): tokens",
                sh, sc.T > 0 ? nmis : nbad, ndraw);
    if (sc.T > 0) check_count("sample: logp of the same token within 1e-6", sh, nbad, ndraw);
    {   /* the worst logp difference, as a row of the table */
        row &t = table["sample: logp max |got - cpu|"];
        if (!t.cases) order_.push_back("sample: logp max |got - cpu|");
        t.cases++; t.err = lp_err > t.err ? lp_err : t.err; t.tol = 1e-6; t.bitwise = t.bitwise && lp_err == 0;
    }
    check_count("sample: tok, logp of done rows untouched", sh, nidle, 2 * sc.draws);
    check_count("sample (determinism: tok, logp)", sh, ndet, ndraw);
    if (sc.T > 0) { sample_draws += ndraw; sample_mismatches += nmis; }
    vec zg = fget(gz, Gn * V);
    checkf("sample: z after (bans), = the CPU's", "z", sh, zg, zc, 0, true);
    int64_t nz = 0, nb = 0;
    for (int g = 0; g < 8; g++) {
        for (int64_t i = 0; i < V; i++) if (done[g] && memcmp(&zg[g * V + i], &z[g * V + i], 4)) nz++;
        for (int b = 0; b < 4; b++)
            if (!done[g] && k.ban[b] >= 0 && k.ban[b] < V && zg[g * V + k.ban[b]] != -INFINITY) nb++;
    }
    check_count("sample: z rows done untouched", sh, nz, 2 * V);
    check_count("sample: banned ids -inf in live rows", sh, nb, 6 * 4);
    dfree_all();
}

/* gen_step against mbpo__cpu_gen_step, as test_cuda.cu's test_gen_step: 200 random states
   (rows done or not, lengths up to the row's end, GO 0 or 1, draws on or off, 0 to 3 stop ids
   that some tokens hit, out_logp given or NULL); every buffer compared byte for byte, the
   rows' unwritten entries included */
static void test_gen_step(void) {
    const int64_t stride = 6;
    int64_t nbad = 0;
    for (int trial = 0; trial < 200; trial++) {
        const int64_t Gn = 1 + irand(9);
        std::vector<int64_t> sv(MBPO__GS_N), pos(3 * Gn, -99);
        std::vector<int32_t> out(Gn * stride), len(Gn), tok(Gn);
        std::vector<float> lo(Gn * stride), lp(Gn);
        std::vector<unsigned char> dn(Gn);
        mbpo__step_k k;
        const int with_logp = trial % 3 != 0;
        memset(&k, 0, sizeof k);
        k.n_stop = (int)irand(4); k.draws = (int)irand(2);
        for (int i = 0; i < k.n_stop; i++) k.stop[i] = (int32_t)irand(12);
        for (int64_t i = 0; i < Gn * stride; i++) { out[i] = (int32_t)(1000 + i); lo[i] = (float)i * 0.25f; }
        for (int64_t g = 0; g < Gn; g++) {
            dn[g] = irand(3) == 0;
            len[g] = (int32_t)irand(stride + 1);   /* stride: a full row */
            tok[g] = (int32_t)irand(12);
            lp[g] = -(float)irand(100) / 7.0f;
        }
        sv[MBPO__GS_T] = 30 + trial; sv[MBPO__GS_NU] = trial; sv[MBPO__GS_LIVE] = -1;
        sv[MBPO__GS_GO] = trial % 2; sv[MBPO__GS_DELTA] = (int64_t)(trial % 5) - 2;
        char sh[96];
        snprintf(sh, sizeof sh, "G=%lld stops %d draws %d GO %lld%s", (long long)Gn, k.n_stop, k.draws,
                 (long long)sv[MBPO__GS_GO], with_logp ? "" : ", no out_logp");
        int32_t *gout = dcopy(out), *glen = dcopy(len), *gtok = dcopy(tok);
        float *glo = dcopy(lo), *glp = dcopy(lp);
        unsigned char *gdn = dcopy(dn);
        int64_t *gst = dcopy(sv), *gpos = dcopy(pos);
        std::vector<int64_t> rsv = sv, rpos = pos;
        std::vector<int32_t> rout = out, rlen = len;
        std::vector<float> rlo = lo;
        std::vector<unsigned char> rdn = dn;
        P->gen_step(cbe, rout.data(), with_logp ? rlo.data() : NULL, rlen.data(), rdn.data(), rsv.data(), rpos.data(), tok.data(),
                    lp.data(), Gn, stride, &k);
        GOK(G->gen_step(gbe, gout, with_logp ? glo : NULL, glen, gdn, gst, gpos, gtok, glp, Gn, stride, &k));
        auto same = [&](const void *d, const void *h, size_t bytes) {
            std::vector<uint8_t> b(bytes);
            G->download(gbe, b.data(), d, bytes);
            return !memcmp(b.data(), h, bytes);
        };
        int bad = !same(gout, rout.data(), out.size() * 4) || !same(glo, rlo.data(), lo.size() * 4) ||
                  !same(glen, rlen.data(), len.size() * 4) || !same(gdn, rdn.data(), dn.size()) ||
                  !same(gst, rsv.data(), sv.size() * 8) || !same(gpos, rpos.data(), pos.size() * 8) ||
                  !same(gtok, tok.data(), tok.size() * 4) || !same(glp, lp.data(), lp.size() * 4);
        if (bad) printf("FAIL gen_step [%s]: a buffer differs from the CPU's\n", sh);
        nbad += bad;
        dfree_all();
    }
    check_count("gen_step: every buffer = the CPU's (200 states)", "", nbad, 200);
    expect_fail("gen_step 17 stop ids", [] { mbpo__step_k k; memset(&k, 0, sizeof k); k.n_stop = 17;
        return G->gen_step(gbe, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 6, &k); }());
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);   /* complete logs even when a sanitizer aborts */
#define RUN(name) (!*only || strstr(only, name))
    if (getenv("EMU_SMALL")) { NS = {3, 17}; CS = {8, 100}; }   /* for the slow ThreadSanitizer run */
    if (!G->create(&gbe, 64) || !P->create(&cbe, 64)) { fprintf(stderr, "create: %s\n", mbpo_failure_reason()); return 2; }
    printf("emulated CUDA backend, %s storage (sizeof mbpo__cx %zu), MBPO__CUDA_MAX_BLOCKS %lld\n", BUILD, sizeof(mbpo__cx),
           (long long)MBPO__CUDA_MAX_BLOCKS);
    if (RUN("xcopy")) test_xcopy();
    if (RUN("matmul")) test_matmul();
    if (RUN("norm")) {
        for (int64_t N : NS) for (int64_t C : CS) { test_layernorm(N, C); test_rmsnorm(N, C); }
        if (getenv("EMU_BIGN")) {   /* more than 128 x 32 rows: the capped column-sum blocking (slow) */
            test_layernorm(4100, 8);
            test_rmsnorm(4100, 8);
        }
    }
    if (RUN("ew")) {
        for (int64_t N : NS) for (int64_t C : CS) {
            int64_t n = N * C;
            test_unary("quick_gelu", G->quick_gelu_forward, P->quick_gelu_forward, G->quick_gelu_backward, P->quick_gelu_backward, n);
            test_unary("gelu", G->gelu_forward, P->gelu_forward, G->gelu_backward, P->gelu_backward, n);
            test_swiglu_add(n);
        }
    }
    if (RUN("rotary")) test_rotary();
    if (RUN("embed")) {
        for (int64_t N : NS) for (int64_t C : CS) test_embed(N, C);
        test_embed(600, 20);   /* more than one 256-row tile of the staged metadata */
        for (int64_t N : NS) for (int64_t C : CS) test_gather_rows(N, C);
    }
    if (RUN("kv")) test_kv();
    if (RUN("head")) {
        for (int64_t N : NS) test_head(N, 100, 257, 7);
        test_head(17, 8, 8, 1);
        test_head(3, 100, 1, 2);
        if (!getenv("EMU_SMALL")) { test_head(17, 257, 1000, 17); test_head(130, 8, 600, 64); }
        const int64_t vs[] = {1, 8, 257, 512, 513, 1025, 1500};
        for (int64_t V : vs) test_dz(3, V);
        mbpo_x *a = dx_poison(64);
        float *f = df_poison(64);
        expect_fail("head_forward chunk=0", G->head_forward(gbe, f, f, a, a, NULL, NULL, 1, 8, 8, 0, a, f));
        dfree_all();
    }
    if (RUN("pgd")) {
        for (int64_t n : {(int64_t)3, (int64_t)28 * 56 * 3, (int64_t)(448 * 448 * 3)})
            for (int fast = 0; fast < 2; fast++) test_pgd(n, fast);
    }
    if (RUN("optim")) {
        /* 256 Ki + 3: just over MBPO__SUMSQ_BLOCKS x 256 values, so pass 1 strides; 2^20 + 17 as test_cuda.cu */
        std::vector<int64_t> ns = {0, 1, 1000, 256 * 1024 + 3};
        if (!getenv("EMU_SMALL")) ns.push_back((1 << 20) + 17);
        for (int64_t n : ns) test_sumsq(n);
        for (int64_t n : {(int64_t)1, (int64_t)1000, getenv("EMU_SMALL") ? (int64_t)70001 : (int64_t)(1 << 20) + 5})
            for (int variant = 0; variant < 2; variant++) test_adamw(n, variant);
        expect_fail("sumsq n=-1", G->sumsq(gbe, NULL, NULL, -1));
    }
    if (RUN("sample")) {
        /* the emulated barriers of 256 threads are slow: few draws at V = 152k */
        const int R = getenv("EMU_SMALL") ? 3 : 12;
        const sample_case cases[] = {
            /* test_cuda.cu's cases */
            {1000, 0, 0.0, 0, 1, 1}, {1000, 0, 1.0, 0, 1, R}, {1000, 0, 0.7, 0, 1, R},
            {151936, 0, 0.0, 0, 1, 1}, {151936, 0, 1.0, 0, 1, 2}, {151936, 0, 0.7, 0, 1, 2},
            {1000, 1, 0.0, 0, 1, 1}, {1000, 1, 1.0, 0, 1, 2},
            {1000, 0, 1.0, 5, 1, R}, {1000, 0, 1.0, 0, 0.9, R}, {1000, 0, 0.7, 50, 0.8, R},
            {1000, 0, 1.0, 1, 1, R}, {1000, 0, 1.0, 0, 1e-9, R}, {1000, 0, 1.0, 2000, 1, R},
            {151936, 0, 1.0, 50, 1, 2}, {151936, 0, 1.0, 0, 0.95, 2}, {151936, 0, 0.7, 64, 0.9, 2},
            {1000, 1, 1.0, 5, 0.9, R},
            /* small rows, the other layouts' edges with top-k / top-p */
            {1, 0, 0.0, 0, 1, 1}, {1, 0, 1.0, 5, 0.9, 2}, {7, 0, 1.0, 0, 1, R}, {7, 1, 1.0, 3, 0.5, R}, {7, 0, 1.0, 0, 0.9, R},
            {300, 1, 0.7, 0, 0.9, R}, {300, 1, 1.0, 2, 1, R}, {300, 0, 1.0, 299, 1, R},
            /* exact ties: nucleus equality (top-p 0.5 and 0.75 on p = 1/4), flat rows, top-k in a tie */
            {1000, 2, 1.0, 0, 0.5, R}, {1000, 2, 1.0, 0, 0.75, R}, {1000, 2, 1.0, 3, 1, R}, {1000, 2, 1.0, 5, 0.9, R},
            {1000, 2, 1.0, 0, 0.9, R}, {1000, 2, 0.0, 0, 1, 1},
            /* a sorted prefix near and past the 4096 of shared memory; the fixed-point path */
            {20000, 0, 1.0, 4096, 1, 3}, {20000, 0, 1.0, 4097, 1, 3}, {20000, 0, 2.0, 5000, 1, 3},
            {20000, 0, 2.0, 5000, 0.5, 3}, {20000, 0, 1.0, 0, 0.999, 3}, {20000, 2, 1.0, 0, 0.9, 3},
            {151936, 0, 1.0, 0, 0.5, 2},
            /* scratch for 3 rows: 3 blocks stride over the 8 */
            {1000, 0, 1.0, 5, 0.9, R, 3}, {1000, 2, 1.0, 0, 1, R, 3}, {1000, 0, 0.0, 0, 1, 1, 3},
        };
        /* EMU_SMALL: V <= 1000, unless EMU_SAMPLE_MAXV says more */
        const int64_t maxv = getenv("EMU_SAMPLE_MAXV") ? atoll(getenv("EMU_SAMPLE_MAXV")) : getenv("EMU_SMALL") ? 1000 : INT64_MAX;
        for (const sample_case &sc : cases) {
            if (sc.V > maxv) continue;
            test_sample(sc);
        }
        printf("sample: %lld temperature draws, %lld tokens differ from the CPU's\n", (long long)sample_draws,
               (long long)sample_mismatches);
        mbpo__sample_k k;
        memset(&k, 0, sizeof k);
        int32_t *t1 = dcopy(std::vector<int32_t>{0});
        double *u1 = dcopy(std::vector<double>{0.5});
        int64_t *s1 = dcopy(std::vector<int64_t>(MBPO__GS_N, 0));
        unsigned char *d1 = dcopy(std::vector<unsigned char>{0});
        float *f = df_poison(8);
        k.n_ban = 5;
        expect_fail("sample n_ban=5", G->sample(gbe, t1, f, f, u1, s1, d1, 1, 8, &k));
        k.n_ban = 0;
        expect_fail("sample V=0", G->sample(gbe, t1, f, f, u1, s1, d1, 1, 0, &k));
        k.temperature = 1;
        expect_fail("sample V=2^23+1 (no room for one row's scratch)", G->sample(gbe, t1, f, f, u1, s1, d1, 1, (1 << 23) + 1, &k));
        GOK(G->sample(gbe, t1, f, f, u1, s1, d1, 0, 8, &k));   /* G = 0: nothing */
        dfree_all();
    }
    if (RUN("gen_step")) test_gen_step();

    printf("\n%-58s %5s %12s %9s %8s %s\n", "op (" BUILD ")", "cases", "max err", "tol", "bitwise", "result");
    for (auto &k : order_) {
        row &t = table[k];
        bool det = k.find("(determinism)") != std::string::npos;
        if (det) printf("%-58s %5d %12s %9s %8s %s\n", k.c_str(), t.cases, "-", "-", "-", t.pass ? "pass" : "FAIL");
        else printf("%-58s %5d %12.3g %9.3g %8s %s\n", k.c_str(), t.cases, t.err, t.tol, t.bitwise ? "yes" : "no", t.pass ? "pass" : "FAIL");
    }
    printf("\nlaunch configurations seen (distinct name/grid.x/grid.y/block.x):\n");
    {
        std::map<std::string, std::string> cfg;
        for (auto &r : emu_launches) {
            char b[128]; snprintf(b, sizeof b, " (%u,%u)x%u", r.g.x, r.g.y, r.b.x);
            std::string &s = cfg[r.name];
            if (s.size() < 160) s += b;
        }
        for (auto &kv : cfg) printf("  %-36s%s%s\n", kv.first.c_str(), kv.second.c_str(), kv.second.size() >= 160 ? " ..." : "");
    }
    printf("%ld launches\n", emu_launch_count);
    for (auto &s : emu_log) { printf("EMULATOR ERROR: %s\n", s.c_str()); n_fail++; }
    G->destroy(gbe); P->destroy(cbe);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
