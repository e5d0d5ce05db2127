/* test_core.c - tests of layer 4 of mbpo.h (objectives): verifiers, group advantages, the
   hybrid GRPO loss and its gradient, SFT, AdamW. References: values worked out by hand in
   the comments, finite differences, hand-labelled tables. */
#include "../mbpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_common.h"

/* ============================================================== verifiers */

static void test_verifiers(void) {
    static const char *mcq = "What shape is red?\nA. circle\nB. square\nC. triangle\nD. star";
    static const struct { int mc; const char *response; char label; int want; } t[] = {
        /* yes/no */
        { 0, "Yes", 'Y', 1 }, { 0, "yes", 'Y', 1 }, { 0, "YES.", 'Y', 1 }, { 0, "No", 'N', 1 },
        { 0, "No, there is no dog.", 'N', 1 },            /* "no" twice, one word kind */
        { 0, "Yes, there is a dog on the left.", 'Y', 1 }, { 0, "The answer is yes.", 'Y', 1 },
        { 0, "Yes", 'N', 0 }, { 0, "No", 'Y', 0 },
        { 0, "", 'Y', 0 },                                /* empty */
        { 0, "   ", 'N', 0 },
        { 0, "Yes and no", 'Y', 0 },                      /* both: a reward hack */
        { 0, "yes no", 'N', 0 }, { 0, "No... well, yes.", 'Y', 0 },
        { 0, "Yep", 'Y', 0 }, { 0, "Nope", 'N', 0 },       /* not the words */
        { 0, "Yesterday it rained", 'Y', 0 }, { 0, "Nothing is there", 'N', 0 },
        { 0, "There is a dog.", 'Y', 0 },                 /* no answer word */
        { 0, "yes!!!", 'Y', 1 }, { 0, "(yes)", 'Y', 1 }, { 0, "Answer: no", 'N', 1 },
        { 0, "I cannot tell", 'Y', 0 }, { 0, "no.", 'N', 1 }, { 0, "NO", 'N', 1 },
        /* multiple choice, label B */
        { 1, "B", 'B', 1 }, { 1, "B.", 'B', 1 }, { 1, "(B)", 'B', 1 }, { 1, "B)", 'B', 1 },
        { 1, "Answer: B", 'B', 1 }, { 1, "The answer is B.", 'B', 1 }, { 1, "The answer is: B", 'B', 1 },
        { 1, "B. square", 'B', 1 }, { 1, "B) square", 'B', 1 }, { 1, "square", 'B', 1 },   /* the full option text */
        { 1, "Square.", 'B', 1 }, { 1, " B ", 'B', 1 },
        { 1, "A", 'B', 0 }, { 1, "", 'B', 0 },
        { 1, "b", 'B', 0 },                               /* lowercase letter */
        { 1, "b.", 'B', 0 },
        { 1, "A or B", 'B', 0 }, { 1, "B or C", 'B', 0 },  /* two letters */
        { 1, "A, B", 'B', 0 }, { 1, "AB", 'B', 0 },
        { 1, "B. circle", 'B', 0 },                        /* letter with another option's text */
        { 1, "square or circle", 'B', 0 },                 /* two options' texts */
        { 1, "squares", 'B', 0 }, { 1, "a square", 'B', 0 },   /* not the option text */
        { 1, "I think it is B", 'B', 0 },                  /* prose around the letter */
        { 1, "B because it has corners", 'B', 0 },
        { 1, "E", 'B', 0 },                                /* outside the options */
        { 1, "B!!", 'B', 0 },                              /* trailing punctuation beyond one mark */
        { 1, "B..", 'B', 0 },
        { 1, "(B) square", 'B', 1 },
    };
    size_t i, n = sizeof t / sizeof t[0], bad = 0;
    if (!run_test("verifiers")) return;
    for (i = 0; i < n; i++) {
        int got = t[i].mc ? mbpo_verify_mc(mcq, t[i].response, t[i].label) : mbpo_verify_yesno(t[i].response, t[i].label);
        if (got != t[i].want) {
            bad++;
            printf("  FAIL case %zu (%s): \"%s\" label %c -> %d, want %d\n", i, t[i].mc ? "mc" : "yes/no", t[i].response,
                   t[i].label, got, t[i].want);
        }
    }
    {   /* dispatch by the sample's kind */
        mbpo_sample s;
        memset(&s, 0, sizeof s);
        s.question = (char *)"Is it red?"; s.kind = MBPO_Q_YESNO; s.label = 'Y';
        CHECK(mbpo_verify(&s, "Yes") == 1 && mbpo_verify(&s, "No") == 0, "mbpo_verify on a yes/no sample");
        s.question = (char *)mcq; s.kind = MBPO_Q_MC; s.label = 'C';
        CHECK(mbpo_verify(&s, "C. triangle") == 1 && mbpo_verify(&s, "triangle or star") == 0, "mbpo_verify on an MC sample");
        s.kind = MBPO_Q_OPEN;
        CHECK(mbpo_verify(&s, "C") == 0, "open samples have no verifier");
    }
    CHECK(n >= 50 && bad == 0, "verifiers: %zu of %zu cases wrong", bad, n);
    printf("  %s  verifiers: %zu hand-labelled responses (incl. reward hacks), %zu wrong\n", bad ? "!!" : "ok", n, bad);
}

/* ============================================================== advantages and the loss */

static void test_advantages(void) {
    float r1[2] = { 2, 0 }, a1[2], r2[4] = { 1, 0, 0, 0 }, a2[4], r3[3] = { 1, 1, 1 }, a3[3], r4[1] = { 1 }, a4[1];
    if (!run_test("advantages")) return;
    /* [2, 0]: mean 1, unbiased std sqrt(2) = 1.41421356, adv = +-1 / 1.41431356 = +-0.70705679 */
    mbpo_group_advantages(r1, 2, a1);
    CHECK(fabs(a1[0] - 0.70705679) < 1e-6 && fabs(a1[1] + 0.70705679) < 1e-6, "offline pair: %.8f %.8f", a1[0], a1[1]);
    /* [1, 0, 0, 0]: mean 0.25, var (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5;
       adv = 0.75 / 0.5001 = 1.49970006, -0.25 / 0.5001 = -0.49990002 */
    mbpo_group_advantages(r2, 4, a2);
    CHECK(fabs(a2[0] - 1.49970006) < 1e-6 && fabs(a2[1] + 0.49990002) < 1e-6, "G=4: %.8f %.8f", a2[0], a2[1]);
    mbpo_group_advantages(r3, 3, a3);
    CHECK(a3[0] == 0 && a3[1] == 0 && a3[2] == 0, "equal rewards: zero advantages");
    mbpo_group_advantages(r4, 1, a4);
    CHECK(a4[0] == 0, "a group of one: zero advantage");
}

/* A batch worked out by hand: B = 2 groups.
   group 0, offline pair: y_w (2 tokens, A = +0.7), y_l (1 token, A = -0.7)
   group 1, online, G = 2: o_1 (1 token, A = +0.5), o_2 (2 tokens, A = -0.5)
   weights 1/(B |g| |o|): y_w 1/8, y_l 1/4, o_1 1/4, o_2 1/8.
   rho = 1 (no logp_old); logp_ref = logp except token 0, where ref - logp = 0.1:
   KL_0 = e^0.1 - 0.1 - 1 = 0.005170918, dKL/dlogp = 1 - e^0.1 = -0.105170918; beta = 0.04.
   L = 1/8 (-0.7 + 0.04 KL_0) + 1/8 (-0.7) + 1/4 (0.7) + 1/4 (-0.5) + 1/8 (0.5) + 1/8 (0.5)
     = -0.0875 + 0.005 * 0.005170918 - 0.0875 + 0.175 - 0.125 + 0.0625 + 0.0625 = 0.0000258546
   dL/dlogp_0 = 1/8 (-0.7 + 0.04 * -0.105170918) = -0.088025855; token 1: -0.0875; y_l: +0.175;
   o_1: -0.125; o_2: +0.0625 each. */
static void test_grpo_hand(void) {
    int groups[3] = { 0, 2, 4 };
    int64_t offs[5] = { 0, 2, 3, 4, 6 };
    float adv[4] = { 0.7f, -0.7f, 0.5f, -0.5f };
    float logp[6] = { -1.0f, -2.0f, -0.5f, -3.0f, -1.5f, -0.25f }, ref[6], d[6];
    double want_d[6] = { -0.088025855, -0.0875, 0.175, -0.125, 0.0625, 0.0625 };
    mbpo_grpo_batch b;
    mbpo_grpo_stats st;
    double L;
    int i, ok = 1;
    if (!run_test("grpo_hand")) return;
    memcpy(ref, logp, sizeof ref);
    ref[0] = logp[0] + 0.1f;
    b.n_groups = 2; b.group_offsets = groups; b.resp_offsets = offs; b.advantage = adv;
    L = mbpo_grpo_loss(&b, logp, NULL, ref, 0.04, 0.2, d, &st);
    /* the float32 inputs carry ~1e-8 of rounding into the hand values */
    CHECK(fabs(L - 0.0000258546) < 1e-7, "loss %.10f, by hand 0.0000258546", L);
    for (i = 0; i < 6; i++) ok &= fabs(d[i] - want_d[i]) < 1e-7;
    CHECK(ok, "dL/dlogp by hand: %.9f %.9f %.9f %.9f %.9f %.9f", d[0], d[1], d[2], d[3], d[4], d[5]);
    CHECK(st.n_tokens == 6 && fabs(st.kl_mean - 0.005170918 / 6) < 1e-8 && st.ratio_mean == 1.0 && st.clip_fraction == 0,
          "stats: kl %.9f ratio %.3f", st.kl_mean, st.ratio_mean);
    printf("  ok  hybrid GRPO on a hand-worked batch: L = %.10f (hand 0.0000258546), dL/dlogp_0 = %.9f (hand -0.088025855)\n",
           L, d[0]);
    /* with rho = 1 and no KL the gradient is -A / (B |g| |o|) per token (docs/DESIGN.md 1) */
    L = mbpo_grpo_loss(&b, logp, NULL, NULL, 0.04, 0.2, d, NULL);
    CHECK(fabs(d[0] + 0.0875) < 1e-8 && fabs(d[2] - 0.175) < 1e-8, "no KL: dlogp = -A w");
    {   /* SFT */
        float lp[4] = { -1, -2, -3, -4 }, dl[4];
        double l = mbpo_sft_loss(lp, 4, dl);
        CHECK(l == 2.5 && dl[0] == -0.25f && dl[3] == -0.25f, "SFT: loss %.3f, dlogp %.3f", l, dl[0]);
    }
}

/* dL/dlogp against central differences of the loss, with rho != 1 (some tokens inside the
   clip range, some outside on either side, advantages of both signs) and a reference. */
static void test_grpo_fd(void) {
    int groups[4] = { 0, 2, 5, 6 };
    int64_t offs[7] = { 0, 3, 5, 9, 10, 14, 15 };
    float adv[6] = { 0.9f, -0.9f, 1.2f, -0.3f, -0.9f, 0.0f };
    float logp[15], old[15], ref[15], d[15];
    mbpo_grpo_batch b;
    mbpo_rng rng;
    mbpo_grpo_stats st;
    double worst = 0;
    int i;
    if (!run_test("grpo_fd")) return;
    mbpo_rng_seed(&rng, 21);
    for (i = 0; i < 15; i++) {
        logp[i] = (float)(-0.3 - 2 * mbpo_rng_uniform(&rng));
        old[i] = logp[i] + (float)(0.6 * (mbpo_rng_uniform(&rng) - 0.5));   /* rho in [0.74, 1.35] */
        ref[i] = logp[i] + (float)(0.5 * (mbpo_rng_uniform(&rng) - 0.5));
    }
    b.n_groups = 3; b.group_offsets = groups; b.resp_offsets = offs; b.advantage = adv;
    mbpo_grpo_loss(&b, logp, old, ref, 0.04, 0.2, d, &st);
    for (i = 0; i < 15; i++) {
        float keep = logp[i];
        double h = 1e-3, lp, lm, fd;
        logp[i] = keep + (float)h; lp = mbpo_grpo_loss(&b, logp, old, ref, 0.04, 0.2, NULL, NULL);
        logp[i] = keep - (float)h; lm = mbpo_grpo_loss(&b, logp, old, ref, 0.04, 0.2, NULL, NULL);
        logp[i] = keep;
        fd = (lp - lm) / (2 * ((double)(keep + (float)h) - keep));
        if (fabs(fd - d[i]) > worst) worst = fabs(fd - d[i]);
    }
    CHECK(worst < 2e-6 && st.clip_fraction > 0 && st.clip_fraction < 1, "GRPO dlogp vs FD: max |diff| %.2e (clip fraction %.2f)",
          worst, st.clip_fraction);
    printf("  %s  hybrid GRPO dL/dlogp vs central differences, 15 tokens with rho != 1 (clip fraction %.2f): max |diff| %.2e\n",
           worst < 2e-6 ? "ok" : "!!", st.clip_fraction, worst);
}

/* ============================================================== AdamW */

static void test_adamw(void) {
    mbpo_adamw_opts o;
    mbpo_adamw opt;
    float p[2] = { 1.0f, -2.0f }, g[2] = { 0.5f, -0.1f };
    double norm;
    if (!run_test("adamw")) return;
    mbpo_adamw_defaults(&o);
    o.lr = 0.1; o.weight_decay = 0.01; o.max_grad_norm = 0;   /* no clipping */
    REQUIRE(mbpo_adamw_init(&opt, 2), "init");
    /* step 1: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2: update = g / (|g| + 1e-8) = sign(g);
       p0 = 1 - 0.1 (0.01 * 1 + 0.99999998) = 0.899, p1 = -2 - 0.1 (-0.02 - 0.9999999) = -1.898 */
    norm = mbpo_adamw_step(&opt, &o, p, g);
    CHECK(fabs(p[0] - 0.899) < 1e-6 && fabs(p[1] + 1.898) < 1e-6, "step 1: %.7f %.7f (hand 0.899, -1.898)", p[0], p[1]);
    CHECK(fabs(norm - sqrt(0.26)) < 1e-7, "grad norm %.7f", norm);
    /* step 2 with g = (0.5, 0.3): m0 = 0.9*0.05 + 0.05 = 0.095, bc1 = 0.19 -> mhat0 = 0.5;
       v0 = 0.999*0.00025 + 0.00025 = 0.00049975, bc2 = 0.001999 -> vhat0 = 0.25 -> update0 = 1;
       p0 = 0.899 - 0.1 (0.00899 + 1) = 0.798101.
       m1 = 0.9*(-0.01) + 0.03 = 0.021 -> mhat1 = 0.110526316; v1 = 0.999*0.00001 + 0.00009 = 0.00009999
       -> vhat1 = 0.050020010 -> sqrt 0.223651537 -> update1 = 0.494190 ;
       p1 = -1.898 - 0.1 (-0.01898 + 0.494190) = -1.945521 */
    g[1] = 0.3f;
    mbpo_adamw_step(&opt, &o, p, g);
    CHECK(fabs(p[0] - 0.798101) < 1e-5 && fabs(p[1] + 1.945521) < 1e-5, "step 2: %.7f %.7f (hand 0.798101, -1.945521)", p[0], p[1]);
    /* clipping: norm 5 clipped to 1 -> g scaled by 1/5 (Adam's first step is scale-free, so check the moments) */
    {
        mbpo_adamw o2;
        float q[2] = { 0, 0 }, gg[2] = { 3, 4 };
        o.max_grad_norm = 1.0; o.weight_decay = 0;
        REQUIRE(mbpo_adamw_init(&o2, 2), "init");
        norm = mbpo_adamw_step(&o2, &o, q, gg);
        CHECK(norm == 5.0 && fabs(o2.m[0] - 0.1 * 0.6) < 1e-6 && fabs(o2.m[1] - 0.1 * 0.8) < 1e-6,
              "clipped to norm 1: m = %.6f %.6f", o2.m[0], o2.m[1]);
        gg[0] = NAN;
        q[0] = 7;
        norm = mbpo_adamw_step(&o2, &o, q, gg);
        CHECK(isnan(norm) && q[0] == 7 && o2.step == 1, "a NaN gradient updates nothing and is reported");
        mbpo_adamw_free(&o2);
    }
    /* schedules */
    o.lr = 1.0; o.schedule = MBPO_LR_WARMUP; o.warmup_steps = 4;
    CHECK(mbpo_lr_at(&o, 0) == 0.25 && mbpo_lr_at(&o, 3) == 1.0 && mbpo_lr_at(&o, 10) == 1.0, "warmup");
    o.schedule = MBPO_LR_COSINE; o.total_steps = 12;
    CHECK(mbpo_lr_at(&o, 1) == 0.5 && mbpo_lr_at(&o, 4) == 1.0 && fabs(mbpo_lr_at(&o, 8) - 0.5) < 1e-12 &&
          mbpo_lr_at(&o, 12) == 0.0, "cosine: %.3f at the middle", mbpo_lr_at(&o, 8));
    mbpo_adamw_free(&opt);
}

/* mbpo_model_adamw_step on the CPU backend: the bits of mbpo_adamw_step on the host arrays,
   with the moments in place and streamed through chunk buffers (a chunk that does not divide
   n), over three steps with clipping, weight decay and a non-finite step in between. */
static void test_adamw_model(void) {
    mbpo_model a, b, c;
    mbpo_adamw oa, ob, oc;
    mbpo_adamw_opts o;
    mbpo_rng r;
    float *g = NULL;
    size_t n, i;
    int k, same = 1;
    double na, nb, nc;
    if (!run_test("adamw_model")) return;
    REQUIRE(mbpo_model_load(&a, "tests/fixtures/tiny_a/model") && mbpo_model_load(&b, "tests/fixtures/tiny_a/model") &&
            mbpo_model_load(&c, "tests/fixtures/tiny_a/model"), "load tiny_a");
    n = a.table.total_floats;
    mbpo_adamw_defaults(&o);
    REQUIRE(mbpo_adamw_init(&oa, n) && mbpo_adamw_init(&ob, n) && mbpo_adamw_init(&oc, n), "init");
    CHECK(!mbpo_model_adamw_step(&b, &ob, &o, &nb) && strstr(mbpo_failure_reason(), "planned with gradients"),
          "a model without a plan: %s", mbpo_failure_reason());
    REQUIRE(mbpo_model_plan(&b, 8, 0, 4, 1) && mbpo_model_plan(&c, 8, 0, 4, 1) && (g = (float *)malloc(n * sizeof(float))), "plan");
    oc.stream_moments = 1; oc.chunk = 1000;
    o.lr = 1e-3; o.weight_decay = 0.1; o.max_grad_norm = 0.5;
    mbpo_rng_seed(&r, 5);
    for (k = 0; k < 4; k++) {
        for (i = 0; i < n; i++) g[i] = (float)(mbpo_rng_normal(&r) * 0.01);
        if (k == 2) g[n / 2] = NAN;   /* skipped: nothing changes */
        memcpy(b.grads, g, n * sizeof(float)); memcpy(c.grads, g, n * sizeof(float));
        na = mbpo_adamw_step(&oa, &o, a.params, g);
        REQUIRE(mbpo_model_adamw_step(&b, &ob, &o, &nb) && mbpo_model_adamw_step(&c, &oc, &o, &nc), "step %d: %s", k, mbpo_failure_reason());
        same &= (na == nb || (isnan(na) && isnan(nb))) && (na == nc || (isnan(na) && isnan(nc)));
    }
    same &= !memcmp(a.params, b.params, n * 4) && !memcmp(a.params, c.params, n * 4) && !memcmp(oa.m, ob.m, n * 4) &&
            !memcmp(oa.v, ob.v, n * 4) && !memcmp(oa.m, oc.m, n * 4) && !memcmp(oa.v, oc.v, n * 4) && oa.step == 3 &&
            ob.step == 3 && oc.step == 3;
    CHECK(same, "4 steps (one non-finite) of %zu values: norms, params and moments bitwise equal to mbpo_adamw_step, in place "
          "and streamed in chunks of 1000", n);
    {   /* the memory plan is what the plan allocates */
        mbpo_mem_shape sh;
        mbpo_mem_plan pl;
        memset(&sh, 0, sizeof sh);
        sh.device = MBPO_DEVICE_CPU; sh.train = 1; sh.tokens = 8; sh.targets = 4;
        REQUIRE(mbpo_mem_plan_make(&b.cfg, &sh, &pl), "plan");
        /* the runs plan a batch of 8 tokens, 4 targets with half again + 16 (and 4 patches, one merge unit) */
        REQUIRE(mbpo_model_plan(&c, 8 + 4 + 16, 4, 4 + 2 + 16, 1), "plan as the runs do");
        CHECK(pl.activations == (double)mbpo_model_plan_bytes(&c) && pl.weights == 4.0 * (double)n && pl.grads == 4.0 * (double)n &&
              pl.moments == 8.0 * (double)n && pl.master == 0, "memory plan: activations %.0f bytes = the runs' plan's %zu; weights, "
              "gradients, moments 4, 4, 8 bytes per parameter", pl.activations, mbpo_model_plan_bytes(&c));
        sh.device = MBPO_DEVICE_CUDA; sh.stream_moments = 1; sh.reference = 1;
        REQUIRE(mbpo_mem_plan_make(&b.cfg, &sh, &pl), "plan");
        CHECK(pl.weights == 2.0 * (double)n && pl.master == 4.0 * (double)n && pl.moments == 8.0 * (double)n &&
              pl.reference == 2.0 * (double)n, "the plan on a GPU: bf16 weights and reference, fp32 master; moments streamed in "
              "one chunk of all %zu (fewer than 2^26)", n);
    }
    free(g);
    mbpo_adamw_free(&oa); mbpo_adamw_free(&ob); mbpo_adamw_free(&oc);
    mbpo_model_free(&a); mbpo_model_free(&b); mbpo_model_free(&c);
}

/* ============================================================== generation and IIG */

/* Greedy decoding with the KV cache against transformers' greedy generate (tiny-A and the
   Qwen2.5-VL tiny25-A, tied and untied, with an image and text only): the same 20 tokens, and
   each step's logits; then the cached logits against a full forward over prompt + generated
   tokens at every step. tiny25-A's image (grid 1,6,10) spans six windows of its ViT. */
static void greedy_case(const char *variant, int with_image) {
    char path[512];
    mbpo_st st;
    mbpo_model m;
    mbpo_kv kv;
    int64_t S = 0, n_gen = 0, V, i, g, *pid, *gen, *grid64, offs[2], ref_offs[2] = { 0, 1 }, npv = 0;
    int32_t ids[64], grid[3], refs[1] = { 0 }, out[20];
    uint8_t target[64];
    float *pv = NULL, *step_logits, full_row[1024];
    mbpo_batch b;
    mbpo_gen_opts o;
    mbpo_rng rng;
    int n_out[1], same = 1;
    double worst_ref = 0, worst_full = 0;
    snprintf(path, sizeof path, "tests/fixtures/core/greedy_%s.safetensors", variant);
    REQUIRE(mbpo_st_open(&st, path), "%s", path);
    pid = read_i64(&st, with_image ? "prompt_ids" : "prompt_ids_text", &S);
    gen = read_i64(&st, with_image ? "generated" : "generated_text", &n_gen);
    step_logits = read_f32(&st, with_image ? "step_logits" : "step_logits_text", NULL);
    grid64 = read_i64(&st, "image_grid_thw", NULL);
    if (with_image) pv = read_f32(&st, "pixel_values", &npv);
    REQUIRE(pid && gen && step_logits && grid64 && n_gen == 20 && S + n_gen <= 64 && (!with_image || pv),
            "fixture tensors");
    snprintf(path, sizeof path, "tests/fixtures/%s/model", variant);
    REQUIRE(mbpo_model_load(&m, path), "load %s", path);
    V = m.cfg.vocab_size;
    REQUIRE(V <= 1024, "vocabulary of %s fits full_row", variant);
    REQUIRE(mbpo_model_plan(&m, S + n_gen, npv / 1176 > 64 ? npv / 1176 : 64, S + n_gen, 0), "plan");
    for (i = 0; i < S; i++) ids[i] = (int32_t)pid[i];
    for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
    offs[0] = 0; offs[1] = S;
    memset(&b, 0, sizeof b); memset(target, 0, sizeof target);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target;
    if (with_image) { b.n_images = 1; b.grid_thw = grid; b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_offs; }
    REQUIRE(mbpo_kv_init(&kv, &m, 3, S + n_gen), "kv");
    memset(&o, 0, sizeof o);
    o.max_new_tokens = 20; o.temperature = 0; o.top_p = 1;
    /* step by step, to compare each step's logits */
    REQUIRE(mbpo_kv_prefill(&m, &kv, &b), "prefill");
    for (i = 0; i < n_gen; i++) {
        int32_t tok[3];
        for (g = 0; g < V; g++) {
            double d = fabs((double)kv.logits[g] - step_logits[i * V + g]);
            if (d > worst_ref) worst_ref = d;
        }
        tok[0] = mbpo_sample_token(kv.logits, V, &o, &rng, NULL);
        same &= tok[0] == gen[i];
        tok[1] = tok[2] = tok[0];
        if (i + 1 < n_gen) REQUIRE(mbpo_kv_decode(&m, &kv, tok), "decode");
    }
    CHECK(same, "%s%s: greedy tokens equal transformers' generate", variant, with_image ? "" : " (text)");
    CHECK(worst_ref < 1e-4, "%s%s: step logits vs transformers: max |diff| %.2e", variant, with_image ? "" : " (text)", worst_ref);
    /* every continuation of the batch holds the same logits (they share the prompt) */
    for (g = 0, i = 0; g < V; g++) i |= kv.logits[g] != kv.logits[2 * V + g];
    CHECK(!i, "identical continuations stay identical");
    /* the cache against a full forward over prompt + generated */
    for (i = 0; i < n_gen; i++) ids[S + i] = (int32_t)gen[i];
    offs[1] = S + n_gen;
    /* re-run the cached path and compare at every step */
    offs[1] = S;
    REQUIRE(mbpo_kv_prefill(&m, &kv, &b), "prefill again");
    for (i = 0; i < n_gen; i++) {
        int32_t tok[3] = { (int32_t)gen[i], (int32_t)gen[i], (int32_t)gen[i] };
        float *cached = (float *)malloc((size_t)V * sizeof(float));
        memcpy(cached, kv.logits, (size_t)V * sizeof(float));
        offs[1] = S + n_gen;
        REQUIRE(mbpo_model_forward(&m, &b, full_row) >= 0 && mbpo_model_logits(&m, S - 1 + i, full_row), "full logits");
        for (g = 0; g < V; g++) { double d = fabs((double)cached[g] - full_row[g]); if (d > worst_full) worst_full = d; }
        free(cached);
        offs[1] = S;
        if (i + 1 < n_gen) REQUIRE(mbpo_kv_decode(&m, &kv, tok), "decode");
    }
    CHECK(worst_full < 1e-4, "%s: cached vs full-forward logits: max |diff| %.2e", variant, worst_full);
    printf("  %s  %s%s: greedy = transformers' 20 tokens: %s; step logits vs transformers max |diff| %.2e; "
           "KV-cache vs full forward at every step %.2e\n", same && worst_ref < 1e-4 && worst_full < 1e-4 ? "ok" : "!!",
           variant, with_image ? " + image" : " (text)", same ? "yes" : "NO", worst_ref, worst_full);
    /* mbpo_generate: the same greedy tokens for all 3 continuations */
    {
        int32_t all[60];
        int lens[3];
        REQUIRE(mbpo_generate(&m, &kv, &b, &o, &rng, all, lens), "generate");
        for (g = 0, i = 1; g < 3; g++) { int k; i &= lens[g] == 20; for (k = 0; k < 20; k++) i &= all[g * 20 + k] == gen[k]; }
        CHECK(i, "mbpo_generate: 3 greedy continuations, each the reference tokens");
        /* a stop token ends a continuation and is included */
        {
            int32_t stop = (int32_t)gen[5];
            int k, first = 0;
            for (k = 0; k < 20; k++) if (gen[k] == stop) { first = k; break; }
            o.stop_ids = &stop; o.n_stop = 1;
            REQUIRE(mbpo_generate(&m, &kv, &b, &o, &rng, all, lens), "generate with a stop token");
            CHECK(lens[0] == first + 1 && all[first] == stop, "stops at the first stop token (length %d, want %d)", lens[0], first + 1);
            {   /* every continuation stops at once; read every 8 steps, the steps after change nothing */
                int32_t all8[60];
                int lens8[3];
                int64_t len1 = kv.len;
                kv.check_every = 8;
                REQUIRE(mbpo_generate(&m, &kv, &b, &o, &rng, all8, lens8), "generate with a stop token, check every 8");
                kv.check_every = 0;
                CHECK(lens8[0] == first + 1 && lens8[1] == first + 1 && lens8[2] == first + 1 && !memcmp(all8, all, (size_t)(first + 1) * 4) &&
                      kv.len == len1 && kv.len == S + first, "all three stop at token %d; read every 8 steps: lengths %d %d %d, "
                      "cache %lld (want %lld)", first + 1, lens8[0], lens8[1], lens8[2], (long long)kv.len, (long long)(S + first));
            }
            o.stop_ids = NULL; o.n_stop = 0;
        }
    }
    {   /* hot sampling never emits a vision token (they are banned from text) */
        int32_t many[3 * 20];
        int lens3[3], vis = 0, kk;
        mbpo_gen_opts hot = o;
        hot.temperature = 20.0;
        mbpo_rng_seed(&rng, 77);
        REQUIRE(mbpo_generate(&m, &kv, &b, &hot, &rng, many, lens3), "hot generate");
        for (kk = 0; kk < 60; kk++) vis += many[kk] >= 1000 && many[kk] <= 1003;
        CHECK(vis == 0, "no vision token among 60 tokens sampled at T = 20 (%d)", vis);
    }
    {   /* mbpo_generate runs the whole loop on the backend (sample, stop tokens, the state): the
           same tokens as mbpo_sample_token on host copies of the logits, drawing from one RNG
           continuation by continuation, live ones only (a stop token ends one early), and the
           RNG and the cache left as that loop leaves them; mbpo_generate_logp's log-probs are
           log softmax of those logits (computed here in double) */
        int32_t got[3 * 20], want[3 * 20], tok[3], stop = -1;
        int lens3[3], len_w[3] = { 0, 0, 0 }, kk, step, done[3] = { 0, 0, 0 }, eq, t, j;
        float scratch[2048], lp[3 * 20];
        double lp_w[3 * 20], worst_lp;
        int64_t len_got;
        mbpo_rng rng_got;
        mbpo_gen_opts hot = o;
        hot.temperature = 1.5;
        for (t = 0; t < 4; t++) {
            const char *what[4] = { "", ", top-p 0.9", ", top-k 5", ", top-k 5, top-p 0.8" };
            hot.top_p = t == 1 ? 0.9 : t == 3 ? 0.8 : 1.0;
            hot.top_k = t >= 2 ? 5 : 0;
            mbpo_rng_seed(&rng, 91);
            REQUIRE(mbpo_generate(&m, &kv, &b, &hot, &rng, got, lens3), "sampled generate");
            if (t == 0) stop = got[3];   /* continuation 0's 4th token: a stop token from now on */
            hot.stop_ids = &stop; hot.n_stop = 1;
            mbpo_rng_seed(&rng, 91);
            REQUIRE(mbpo_generate_logp(&m, &kv, &b, &hot, &rng, got, lens3, lp), "sampled generate with a stop");
            rng_got = rng; len_got = kv.len;
            mbpo_rng_seed(&rng, 91);
            REQUIRE(mbpo_kv_prefill(&m, &kv, &b), "prefill");
            memset(done, 0, sizeof done); memset(len_w, 0, sizeof len_w);
            for (step = 0; step < 20; step++) {
                for (kk = 0; kk < 3; kk++) {
                    float *row = kv.logits + kk * V;
                    double mx = -INFINITY, sum = 0;
                    if (done[kk]) { tok[kk] = want[kk * 20 + len_w[kk] - 1]; continue; }
                    row[m.cfg.image_token_id] = row[m.cfg.video_token_id] = -INFINITY;
                    row[m.cfg.vision_start_token_id] = row[m.cfg.vision_end_token_id] = -INFINITY;
                    tok[kk] = mbpo_sample_token(row, V, &hot, &rng, scratch);
                    for (j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
                    for (j = 0; j < V; j++) sum += exp(row[j] - mx);
                    lp_w[kk * 20 + len_w[kk]] = row[tok[kk]] - mx - log(sum);
                    want[kk * 20 + len_w[kk]++] = tok[kk];
                    if (tok[kk] == stop) done[kk] = 1;
                }
                if (done[0] && done[1] && done[2]) break;
                if (step + 1 < 20) REQUIRE(mbpo_kv_decode(&m, &kv, tok), "decode");
            }
            for (kk = 0, eq = 1, worst_lp = 0; kk < 3; kk++) {
                eq &= lens3[kk] == len_w[kk];
                for (j = 0; j < len_w[kk] && eq; j++) {
                    eq &= got[kk * 20 + j] == want[kk * 20 + j];
                    if (fabs(lp[kk * 20 + j] - lp_w[kk * 20 + j]) > worst_lp) worst_lp = fabs(lp[kk * 20 + j] - lp_w[kk * 20 + j]);
                }
            }
            CHECK(eq && (t || lens3[0] <= 4), "T 1.5%s, a stop token: mbpo_generate's tokens = mbpo_sample_token's on the host "
                  "(lengths %d %d %d)", what[t], lens3[0], lens3[1], lens3[2]);
            CHECK(!memcmp(&rng_got, &rng, sizeof rng) && len_got == kv.len, "T 1.5%s: the RNG and the cache (%lld tokens) "
                  "left as the host loop leaves them (%lld)", what[t], (long long)len_got, (long long)kv.len);
            CHECK(worst_lp < 1e-6, "T 1.5%s: the emitted tokens' log-probs = log softmax of the step's logits (max |diff| %.1e)",
                  what[t], worst_lp);
            {   /* the host reading the live count every 8 steps (a GPU's pace): the same outcome */
                int32_t got8[3 * 20];
                int lens8[3];
                mbpo_rng_seed(&rng, 91);
                kv.check_every = 8;
                REQUIRE(mbpo_generate(&m, &kv, &b, &hot, &rng, got8, lens8), "sampled generate, check every 8");
                kv.check_every = 0;
                for (kk = 0, eq = 1; kk < 3; kk++) eq &= lens8[kk] == lens3[kk] && !memcmp(got8 + kk * 20, got + kk * 20, (size_t)lens3[kk] * 4);
                CHECK(eq && !memcmp(&rng_got, &rng, sizeof rng) && kv.len == len_got, "T 1.5%s: checking the live count every 8 "
                      "steps: the same tokens, RNG and cache length", what[t]);
            }
            hot.stop_ids = NULL; hot.n_stop = 0;
        }
    }
    (void)out; (void)n_out;
    mbpo_kv_free(&kv);
    mbpo_model_free(&m);
    mbpo_st_close(&st);
    free(pid); free(gen); free(step_logits); free(grid64); free(pv);
}
static void test_generate(void) {
    if (run_test("generate")) {
        greedy_case("tiny_a", 1);
        greedy_case("tiny_a", 0);
        greedy_case("tiny_a_tied", 1);
        greedy_case("tiny_a_tied", 0);
    }
    if (run_test("generate25")) {
        greedy_case("tiny25_a", 1);
        greedy_case("tiny25_a", 0);
        greedy_case("tiny25_a_tied", 1);
        greedy_case("tiny25_a_tied", 0);
    }
}

/* The sampler: same seed, same draws; top-k 1 and a tiny top-p are greedy; frequencies of
   temperature sampling follow softmax(z / T); top-k / top-p never leave their set. */
static void test_sampler(void) {
    float z[6] = { 1.0f, 2.0f, 0.5f, 2.0f, -1.0f, 0.0f }, scratch[12];
    mbpo_gen_opts o;
    mbpo_rng r1, r2;
    int i, k, count[6] = { 0 }, same = 1, n = 200000, bad_k = 0, bad_p = 0, tk_nan;
    double want[6], sum = 0, worst = 0;
    if (!run_test("sampler")) return;
    memset(&o, 0, sizeof o);
    o.top_p = 1;
    CHECK(mbpo_sample_token(z, 6, &o, &r1, scratch) == 1, "greedy: the first of two maxima");
    o.temperature = 1.0;
    mbpo_rng_seed(&r1, 5); mbpo_rng_seed(&r2, 5);
    for (i = 0; i < 100; i++) same &= mbpo_sample_token(z, 6, &o, &r1, scratch) == mbpo_sample_token(z, 6, &o, &r2, scratch);
    CHECK(same, "same seed, same draws");
    o.temperature = 0.7;
    for (k = 0; k < 6; k++) { want[k] = exp(z[k] / 0.7); sum += want[k]; }
    for (i = 0; i < n; i++) count[mbpo_sample_token(z, 6, &o, &r1, scratch)]++;
    for (k = 0; k < 6; k++) {
        double p = want[k] / sum, f = (double)count[k] / n, sd = sqrt(p * (1 - p) / n);
        if (fabs(f - p) / sd > worst) worst = fabs(f - p) / sd;
    }
    CHECK(worst < 5, "temperature 0.7: frequencies within %.1f sigma of softmax(z/T)", worst);
    o.top_k = 2;
    for (i = 0; i < 2000; i++) { int tk = mbpo_sample_token(z, 6, &o, &r1, scratch); bad_k += tk != 1 && tk != 3; }
    o.top_k = 0; o.top_p = 0.5;     /* p(1) = p(3) ~ 0.39 each: the nucleus is {1, 3} */
    for (i = 0; i < 2000; i++) { int tp = mbpo_sample_token(z, 6, &o, &r1, scratch); bad_p += tp != 1 && tp != 3; }
    CHECK(bad_k == 0 && bad_p == 0, "top-k 2 and top-p 0.5 stay in {1, 3}: %d, %d outside", bad_k, bad_p);
    o.top_p = 1e-6;
    CHECK(mbpo_sample_token(z, 6, &o, &r1, scratch) == 1, "a tiny top-p is greedy");
    {   /* top-k then top-p on the renormalised top-k (HF's order): p = .4 .25 .15 .1 .06 .04, k = 3,
           p = 0.8 keeps {0, 1} (0.65 / 0.8 = 0.8125) */
        float zz[6];
        double pp[6] = { .4, .25, .15, .1, .06, .04 };
        int bad = 0;
        for (k = 0; k < 6; k++) zz[k] = (float)log(pp[k]);
        o.temperature = 1.0; o.top_k = 3; o.top_p = 0.8;
        for (i = 0; i < 2000; i++) { int tk = mbpo_sample_token(zz, 6, &o, &r1, scratch); bad += tk != 0 && tk != 1; }
        CHECK(bad == 0, "top-k 3 + top-p 0.8 keeps the two most likely: %d outside", bad);
        zz[2] = NAN; zz[0] = NAN;
        for (k = 0; k < 6; k++) zz[k] = NAN;
        o.top_k = 0; o.top_p = 1;
        tk_nan = mbpo_sample_token(zz, 6, &o, &r1, scratch);
        CHECK(tk_nan >= 0 && tk_nan < 6, "non-finite logits give a token id inside the vocabulary (%d)", tk_nan);
    }
    printf("  ok  sampler: 200,000 draws at T = 0.7 within %.1f sigma of softmax(z/T); top-k/top-p sets respected\n", worst);
}

/* IIG against transformers: logp with the real and the black image, their difference. The
   black image is mbpo's own (an all-zero RGB image of the fixture image's size through
   mbpo_image_preprocess), checked bit for bit against the processor's. */
static void iig_case(const char *variant) {
    char path[512];
    mbpo_st st;
    mbpo_model m;
    int64_t T = 0, i, n_pv = 0, n_patches, *ids64, *grid64, *tg, offs[2], ref_offs[2] = { 0, 1 };
    int32_t ids[64], grid[3], refs[1] = { 0 };
    uint8_t target[64];
    float *pv, *pvb, *want_lp, *want_lb, lp[16], lb[16], *black_ours, *a, *c;
    double ref_sum, ref_mean, sum, mean, worst = 0;
    mbpo_batch b;
    snprintf(path, sizeof path, "tests/fixtures/core/iig_%s.safetensors", variant);
    REQUIRE(mbpo_st_open(&st, path), "%s", path);
    ids64 = read_i64(&st, "ids", &T); tg = read_i64(&st, "target", NULL); grid64 = read_i64(&st, "image_grid_thw", NULL);
    pv = read_f32(&st, "pixel_values", &n_pv); pvb = read_f32(&st, "pixel_values_black", NULL);
    want_lp = read_f32(&st, "logp", NULL); want_lb = read_f32(&st, "logp_black", NULL);
    /* iig_sum / iig_mean are F64 in the file; read_f32 converts (a float is ample for 1e-4) */
    a = read_f32(&st, "iig_sum", NULL); c = read_f32(&st, "iig_mean", NULL);
    ref_sum = a ? a[0] : 0; ref_mean = c ? c[0] : 0;
    free(a); free(c);
    REQUIRE(ids64 && tg && grid64 && pv && pvb && want_lp && want_lb && T < 64, "fixture tensors");
    for (i = 0; i < T; i++) { ids[i] = (int32_t)ids64[i]; target[i] = (uint8_t)tg[i]; }
    for (i = 0; i < 3; i++) grid[i] = (int32_t)grid64[i];
    n_patches = n_pv / 1176;
    REQUIRE(n_patches == (int64_t)grid[0] * grid[1] * grid[2], "%s: pixel_values rows = t*h*w", variant);
    snprintf(path, sizeof path, "tests/fixtures/%s/model", variant);
    REQUIRE(mbpo_model_load(&m, path) && mbpo_model_plan(&m, T, n_patches, 16, 0), "model");
    offs[0] = 0; offs[1] = T;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target; b.n_images = 1; b.grid_thw = grid;
    b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_offs;
    {   /* mbpo's own black image: the processor's black pixel_values, bit for bit. The fixture
           images are multiples of 28 on both sides, so the processor does not resize them. */
        mbpo_preproc pp;
        mbpo_image blk;
        int64_t np;
        int32_t g2[3];
        int eq = 1;
        mbpo_preproc_default(&pp);
        REQUIRE(mbpo_image_init(&blk, grid[2] * 14, grid[1] * 14) && mbpo_image_preprocess(&pp, &blk, NULL, &black_ours, &np, g2),
                "black");
        for (i = 0; i < np * 1176 && np == n_patches; i++) eq &= black_ours[i] == pvb[i];
        CHECK(eq && np == n_patches && g2[1] == grid[1] && g2[2] == grid[2], "%s: black image pixel_values equal the processor's",
              variant);
        mbpo_image_free(&blk);
    }
    REQUIRE(mbpo_iig(&m, &b, black_ours, &sum, &mean, lp, lb), "iig");
    for (i = 0; i < 8; i++) {
        if (fabs(lp[i] - want_lp[i]) > worst) worst = fabs(lp[i] - want_lp[i]);
        if (fabs(lb[i] - want_lb[i]) > worst) worst = fabs(lb[i] - want_lb[i]);
    }
    CHECK(worst < 1e-4 && fabs(sum - ref_sum) < 1e-4 && fabs(mean - ref_mean) < 2e-5,
          "%s: IIG %.6f (ref %.6f), mean %.6f (ref %.6f), logp max |diff| %.2e", variant, sum, ref_sum, mean, ref_mean, worst);
    printf("  %s  IIG %s vs transformers: sum %.6f (ref %.6f), mean %.6f (ref %.6f), logp max |diff| %.2e\n",
           worst < 1e-4 && fabs(sum - ref_sum) < 1e-4 ? "ok" : "!!", variant, sum, ref_sum, mean, ref_mean, worst);
    {   /* planned for twice the batch, the two passes run as one packed forward: the same bits */
        float lp2[16], lb2[16];
        double sum2, mean2;
        REQUIRE(mbpo_model_plan(&m, 2 * T, 2 * n_patches, 32, 0) && mbpo_iig(&m, &b, black_ours, &sum2, &mean2, lp2, lb2), "iig x2");
        CHECK(!memcmp(lp, lp2, 8 * sizeof(float)) && !memcmp(lb, lb2, 8 * sizeof(float)) && sum == sum2 && mean == mean2,
              "%s: IIG's two passes in one packed forward equal the two forwards bitwise", variant);
    }
    mbpo_free(black_ours);
    mbpo_model_free(&m);
    mbpo_st_close(&st);
    free(ids64); free(tg); free(grid64); free(pv); free(pvb); free(want_lp); free(want_lb);
}
static void test_iig(void) {
    if (run_test("iig")) { iig_case("tiny_a"); iig_case("tiny_a_tied"); }
    /* tiny25-A: the image spans six ViT windows (4, 4, 2, 2, 2, 1 merge units) */
    if (run_test("iig25")) { iig_case("tiny25_a"); iig_case("tiny25_a_tied"); }
}

/* PGD on the tiny-A model: the chosen response's log-prob falls over the iterations, the
   image stays in [0, 1] (and in the eps ball), the sign of the image gradient that PGD
   follows agrees with finite differences, and the 8-bit adversarial PNG round-trips. */
/* PGD on one model (Qwen2-VL tiny-A and Qwen2.5-VL tiny25-A: there the image gradient also
   runs back through the window order) with the IIG fixture's prompt and its image. */
static void pgd_case(const char *variant, const char *image, int64_t H, int64_t W) {
    mbpo_st st;
    mbpo_model m;
    mbpo_preproc pp;
    mbpo_image img, rs, q8, back;
    mbpo_pgd_opts o;
    mbpo_rng rng;
    mbpo_batch b;
    int64_t T = 0, i, np, n = H * W * 3, *ids64, *tg, offs[2], ref_offs[2] = { 0, 1 }, NT = 0;
    int32_t ids[64], grid[3], refs[1] = { 0 };
    uint8_t target[64];
    float *pv, *x0, *x, *dpv, *dx, lp[16], dl[16];
    double trace[11], worst_out = 0;
    int falls = 0, k, sign_ok = 0;
    char path[512];
    printf("-- %s\n", variant);
    snprintf(path, sizeof path, "tests/fixtures/core/iig_%s.safetensors", variant);
    REQUIRE(mbpo_st_open(&st, path), "iig fixture %s", path);
    ids64 = read_i64(&st, "ids", &T); tg = read_i64(&st, "target", NULL);
    REQUIRE(ids64 && tg && T < 64, "ids");
    for (i = 0; i < T; i++) { ids[i] = (int32_t)ids64[i]; target[i] = (uint8_t)tg[i]; NT += target[i] != 0; }
    REQUIRE(NT <= 16, "targets");
    snprintf(path, sizeof path, "tests/fixtures/%s/model", variant);
    REQUIRE(mbpo_model_load(&m, path) && mbpo_model_plan(&m, T, H * W / 196, 16, 0), "model");
    mbpo_preproc_default(&pp);
    REQUIRE(mbpo_image_load(&img, image), "image %s", image);
    REQUIRE(mbpo_image_preprocess(&pp, &img, &rs, &pv, &np, grid), "preprocess");
    x0 = falloc(n); x = falloc(n); dpv = falloc(np * 1176); dx = falloc(n);
    mbpo_image_to_float(&pp, &rs, x0);
    offs[0] = 0; offs[1] = T;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target; b.n_images = 1; b.grid_thw = grid;
    b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_offs;
    /* 1. descent: K = 10, alpha = 4/255, no ball */
    mbpo_pgd_defaults(&o);
    o.iters = 10;
    memcpy(x, x0, (size_t)n * sizeof(float));
    mbpo_rng_seed(&rng, 1);
    REQUIRE(mbpo_pgd(&m, &pp, &b, pv, x, H, W, &o, &rng, trace), "pgd");
    for (k = 0; k < 10; k++) falls += trace[k + 1] < trace[k];
    for (i = 0; i < n; i++) if (x[i] < 0 || x[i] > 1) worst_out = 1;
    CHECK(trace[10] < trace[0] - 1.0 && falls >= 8 && !worst_out, "logp(y_w) %.4f -> %.4f (%d of 10 steps fall), in [0,1]: %s",
          trace[0], trace[10], falls, worst_out ? "no" : "yes");
    printf("  %s  PGD (K=10, alpha=4/255): sum logp(y_w) %.4f -> %.4f, %d of 10 steps lower it; x stays in [0, 1]\n",
           trace[10] < trace[0] - 1.0 && falls >= 8 ? "ok" : "!!", trace[0], trace[10], falls);
    /* 2. the eps ball, from a random start */
    o.eps = 8.0 / 255.0; o.random_start = 1; o.iters = 3;
    memcpy(x, x0, (size_t)n * sizeof(float));
    REQUIRE(mbpo_pgd(&m, &pp, &b, pv, x, H, W, &o, &rng, NULL), "pgd in a ball");
    for (i = 0, worst_out = 0; i < n; i++) {
        double d = fabs((double)x[i] - x0[i]);
        if (d > worst_out) worst_out = d;
        if (x[i] < 0 || x[i] > 1) worst_out = 9;
    }
    CHECK(worst_out <= 8.0 / 255.0 + 1e-6, "eps ball: max |x - x0| = %.6f (eps %.6f)", worst_out, 8.0 / 255.0);
    /* 3. the sign PGD follows vs central differences of logp in x, on the 16 largest |dx| */
    memcpy(x, x0, (size_t)n * sizeof(float));
    REQUIRE(mbpo_pixels_from_float(&pp, x, H, W, pv) && mbpo_model_forward(&m, &b, lp) == NT, "forward");
    for (i = 0; i < NT; i++) dl[i] = 1.0f;
    REQUIRE(mbpo_model_backward(&m, &b, dl, dpv) && mbpo_pixels_backward(&pp, dpv, H, W, dx), "backward");
    for (k = 0; k < 16; k++) {
        int64_t best = 0, j;
        double h = 1e-2, up = 0, dn = 0, fd;
        float keep;
        for (j = 0; j < n; j++) if (fabsf(dx[j]) > fabsf(dx[best])) best = j;
        keep = x[best];
        x[best] = keep + (float)h; mbpo_pixels_from_float(&pp, x, H, W, pv); mbpo_model_forward(&m, &b, lp);
        for (j = 0; j < NT; j++) up += lp[j];
        x[best] = keep - (float)h; mbpo_pixels_from_float(&pp, x, H, W, pv); mbpo_model_forward(&m, &b, lp);
        for (j = 0; j < NT; j++) dn += lp[j];
        x[best] = keep;
        fd = (up - dn) / (2 * h);
        sign_ok += (fd > 0) == (dx[best] > 0) && fabs(fd - dx[best]) <= 0.1 * fabs(dx[best]);
        dx[best] = 0;   /* next largest */
    }
    CHECK(sign_ok == 16, "image gradient: sign and size (10%%) agree with FD on %d of 16 pixels", sign_ok);
    printf("  %s  image gradient vs central differences on the 16 largest entries: %d agree in sign (and within 10%%)\n",
           sign_ok == 16 ? "ok" : "!!", sign_ok);
    /* 3b. mbpo_pgd runs its iterations on the backend (the pixels / pixels_backward / pgd_step
       ops): the same bits as the loop written out on the host with the public functions, with
       and without the ball */
    for (k = 0; k < 2; k++) {
        float *xh = falloc(n), *pvh = falloc(np * 1176);
        int64_t j, it;
        int same = 1;
        mbpo_pgd_defaults(&o);
        o.iters = 3; o.eps = k ? 6.0 / 255.0 : 0;
        memcpy(x, x0, (size_t)n * sizeof(float)); memcpy(xh, x0, (size_t)n * sizeof(float));
        REQUIRE(mbpo_pgd(&m, &pp, &b, pv, x, H, W, &o, &rng, NULL), "pgd");
        b.pixel_values = pvh;
        for (it = 0; it < o.iters; it++) {
            REQUIRE(mbpo_pixels_from_float(&pp, xh, H, W, pvh) && mbpo_model_forward(&m, &b, lp) == NT, "forward");
            REQUIRE(mbpo_model_backward(&m, &b, dl, dpv) && mbpo_pixels_backward(&pp, dpv, H, W, dx), "backward");
            for (j = 0; j < n; j++) {
                float v = xh[j] - (float)o.step * (float)((dx[j] > 0) - (dx[j] < 0));
                if (o.eps > 0) v = v < x0[j] - (float)o.eps ? x0[j] - (float)o.eps : v > x0[j] + (float)o.eps ? x0[j] + (float)o.eps : v;
                xh[j] = v < 0 ? 0 : v > 1 ? 1 : v;
            }
        }
        REQUIRE(mbpo_pixels_from_float(&pp, xh, H, W, pvh), "pixels");
        b.pixel_values = pv;
        for (j = 0; j < n; j++) same &= x[j] == xh[j];
        for (j = 0; j < np * 1176; j++) same &= pv[j] == pvh[j];
        CHECK(same, "PGD (K = 3%s) on the backend = the loop on the host, bitwise (image and pixel_values)", k ? ", eps 6/255" : "");
        free(xh); free(pvh);
    }
    /* 4. the random-noise ablation stays in its budget */
    mbpo_pgd_defaults(&o);
    memcpy(x, x0, (size_t)n * sizeof(float));
    mbpo_random_noise(x, n, &o, &rng);
    for (i = 0, worst_out = 0; i < n; i++) if (fabs((double)x[i] - x0[i]) > worst_out) worst_out = fabs((double)x[i] - x0[i]);
    CHECK(worst_out <= 80.0 / 255.0 + 1e-6 && worst_out > 0.2, "random noise within K*alpha = 80/255: %.4f", worst_out);
    /* 5. the adversarial image is saved in 8 bits and read back unchanged */
    REQUIRE(mbpo_image_init(&q8, (int)W, (int)H), "q8");
    mbpo_image_from_float(&q8, x);
    snprintf(path, sizeof path, "%s/adv.png", tmpdir());
    REQUIRE(mbpo_image_write_png(path, &q8) && mbpo_image_load(&back, path), "png");
    CHECK(!memcmp(back.rgb, q8.rgb, (size_t)n), "8-bit adversarial PNG round trip");
    mbpo_image_free(&q8); mbpo_image_free(&back); mbpo_image_free(&img); mbpo_image_free(&rs);
    mbpo_free(pv); free(x0); free(x); free(dpv); free(dx); free(ids64); free(tg);
    mbpo_model_free(&m);
    mbpo_st_close(&st);
}

static void test_pgd(void) {
    if (!run_test("pgd")) return;
    pgd_case("tiny_a", "tests/fixtures/images/png_rgb_56x84.png", 56, 84);
    pgd_case("tiny25_a", "tests/fixtures/images/png_rgb_84x140.png", 84, 140);
}

/* Activation recomputation (mbpo_model.recompute): the same forward and backward as keeping
   every layer's activations, bit for bit (logp, every parameter gradient, d(pixel_values)), in
   an arena that holds one decoder layer's buffers; tiny-A and tiny25-A on the IIG fixture's
   sequence with an image, and the memory plan's count of that arena. */
static void recompute_case(const char *variant, const char *image) {
    mbpo_st st;
    mbpo_model m[2];
    mbpo_preproc pp;
    mbpo_image img, rs;
    mbpo_batch b;
    int64_t T = 0, i, np, *ids64, *tg, offs[2], ref_offs[2] = { 0, 1 }, NT = 0, N[2];
    int32_t ids[64], grid[3], refs[1] = { 0 };
    uint8_t target[64];
    float *pv, lp[2][64], dl[64], *dp[2];
    size_t bytes[2];
    int r, same;
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/core/iig_%s.safetensors", variant);
    REQUIRE(mbpo_st_open(&st, path), "iig fixture %s", path);
    ids64 = read_i64(&st, "ids", &T); tg = read_i64(&st, "target", NULL);
    REQUIRE(ids64 && tg && T < 64, "ids");
    for (i = 0; i < T; i++) { ids[i] = (int32_t)ids64[i]; target[i] = (uint8_t)tg[i]; NT += target[i] != 0; }
    mbpo_preproc_default(&pp);
    REQUIRE(mbpo_image_load(&img, image) && mbpo_image_preprocess(&pp, &img, &rs, &pv, &np, grid), "image %s", image);
    offs[0] = 0; offs[1] = T;
    memset(&b, 0, sizeof b);
    b.n_seqs = 1; b.ids = ids; b.seq_offsets = offs; b.target = target; b.n_images = 1; b.grid_thw = grid;
    b.pixel_values = pv; b.image_refs = refs; b.image_ref_offsets = ref_offs;
    for (i = 0; i < NT; i++) dl[i] = 0.25f - 0.1f * (float)(i % 5);
    snprintf(path, sizeof path, "tests/fixtures/%s/model", variant);
    for (r = 0; r < 2; r++) {
        REQUIRE(mbpo_model_load(&m[r], path), "model");
        m[r].recompute = r;
        REQUIRE(mbpo_model_plan(&m[r], T, np, NT, 1), "plan");
        bytes[r] = mbpo_model_plan_bytes(&m[r]);
        dp[r] = falloc(np * mbpo_config_pix(&m[r].cfg));
        N[r] = mbpo_model_forward(&m[r], &b, lp[r]);
        mbpo_model_zero_grad(&m[r]);
        REQUIRE(N[r] == NT && mbpo_model_backward(&m[r], &b, dl, dp[r]), "forward + backward");
    }
    same = !memcmp(lp[0], lp[1], (size_t)NT * sizeof(float)) &&
           !memcmp(m[0].grads, m[1].grads, m[0].table.total_floats * sizeof(float)) &&
           !memcmp(dp[0], dp[1], (size_t)(np * mbpo_config_pix(&m[0].cfg)) * sizeof(float));
    CHECK(same && bytes[1] < bytes[0], "%s: recomputation: logp, %zu gradients and d(pixel_values) bitwise equal; arena %zu of %zu "
          "bytes", variant, m[0].table.total_floats, bytes[1], bytes[0]);
    {   /* the memory plan counts the smaller arena: planned as the runs plan, half again + 16 */
        mbpo_mem_shape sh;
        mbpo_mem_plan pl;
        mbpo_model c;
        memset(&sh, 0, sizeof sh);
        sh.device = MBPO_DEVICE_CPU; sh.train = 1; sh.tokens = T; sh.patches = np; sh.targets = NT; sh.recompute = 1;
        REQUIRE(mbpo_mem_plan_make(&m[1].cfg, &sh, &pl), "plan");
        REQUIRE(mbpo_model_load(&c, path), "model");
        c.recompute = 1;
        {   /* mbpo__plan_headroom */
            int64_t T2 = T + T / 2 + 16, P2 = np + (np / 2 + 4) / 4 * 4, N2 = NT + NT / 2 + 16;
            REQUIRE(mbpo_model_plan(&c, T2, P2, N2 < T2 ? N2 : T2, 1), "plan as the runs do");
        }
        CHECK(pl.activations == (double)mbpo_model_plan_bytes(&c), "%s: the memory plan with recomputation: %.0f bytes = the "
              "arena's %zu", variant, pl.activations, mbpo_model_plan_bytes(&c));
        mbpo_model_free(&c);
    }
    {   /* prefill copies every layer's keys and values: with recomputation each layer runs again first */
        mbpo_kv kv[2];
        int64_t V = m[0].cfg.vocab_size;
        for (r = 0; r < 2; r++) {
            memset(&kv[r], 0, sizeof kv[r]);
            REQUIRE(mbpo_kv_init(&kv[r], &m[r], 2, T + 4) && mbpo_kv_prefill(&m[r], &kv[r], &b), "prefill");
        }
        CHECK(!memcmp(kv[0].logits, kv[1].logits, (size_t)(2 * V) * sizeof(float)) &&
              !memcmp(kv[0].mem, kv[1].mem, (size_t)(2 * m[0].cfg.n_layers * 2 * (T + 4) * m[0].cfg.n_kv_heads * m[0].cfg.head_dim) * sizeof(float)),
              "%s: prefill with recomputation: the same cache and logits", variant);
        for (r = 0; r < 2; r++) mbpo_kv_free(&kv[r]);
    }
    printf("  %s  %s: recomputation gives the same bits in an arena of %zu bytes instead of %zu\n", same ? "ok" : "!!", variant,
           bytes[1], bytes[0]);
    for (r = 0; r < 2; r++) { mbpo_model_free(&m[r]); free(dp[r]); }
    mbpo_image_free(&img); mbpo_image_free(&rs);
    mbpo_st_close(&st);
    free(ids64); free(tg); mbpo_free(pv);
}
static void test_recompute(void) {
    if (!run_test("recompute")) return;
    recompute_case("tiny_a", "tests/fixtures/images/png_rgb_56x84.png");
    recompute_case("tiny25_a", "tests/fixtures/images/png_rgb_84x140.png");
}

void test_core(void) {
    test_verifiers();
    test_advantages();
    test_grpo_hand();
    test_grpo_fd();
    test_adamw();
    test_adamw_model();
    test_sampler();
    test_generate();
    test_iig();
    test_pgd();
    test_recompute();
}
