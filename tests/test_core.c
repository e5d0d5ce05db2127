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
    /* with rho = 1 and no KL the gradient is -A / (B |g| |o|) per token (DESIGN.md 1) */
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

void test_core(void) {
    test_verifiers();
    test_advantages();
    test_grpo_hand();
    test_grpo_fd();
    test_adamw();
}
