/* mbpo_demo.h - the embedded default of mbpo.h: the shapes world, a tiny model for it,
   CHAIR-style scoring in it, and the demo pipeline (make demo, make demo-ablation).

   Written against the public API of mbpo.h only: a worked example of building on the
   library, not part of what a user copies. stb style, like mbpo.h:
       In exactly one C or C++ file (which may also be the one with MBPO_IMPLEMENTATION):
           #define MBPO_DEMO_IMPLEMENTATION
           #include "demo/mbpo_demo.h"
       Everywhere else just #include "demo/mbpo_demo.h". It includes ../mbpo.h itself;
       mbpo.h's implementation must be in some file of the program.

   CONTENTS (the implementation follows the same order)
     the shapes world   mbpo_synth: images of coloured shapes with planted language priors
     a tiny model       mbpo_synth_model: its tokenizer.json, config and random weights
                        (Qwen2-VL or Qwen2.5-VL)
     scoring            mbpo_synth_eval: accuracies, CHAIR_i / CHAIR_s, caption coverage
     the demo           mbpo_demo: world -> mining -> training -> scoring -> table, pictures

   Failures return 0 and set mbpo_failure_reason(), as in mbpo.h. License: MIT (see mbpo.h).
*/
#ifndef MBPO_DEMO_H
#define MBPO_DEMO_H

#include "../mbpo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The shapes world: images of 1-4 coloured shapes (circle, square, triangle,
   star; unique kinds per scene) on plain or textured backgrounds, deterministic from a seed,
   written as PNG plus LLaVA-style JSONL so everything downstream goes through the real
   loaders. Each image gets four records: an open question ("What colour is the circle?"), a
   yes/no question ("Is there a blue square?", half of them true), a four-option multiple-
   choice colour question, and a caption request ("Describe the image.", answered left to
   right). Every record carries its "scene" (shapes, colours, centres, radii) and "family".
   Planted language priors in "train" and "test_prior": circles are red in prior_strength
   of the scenes (else another colour) and a square is present in 80 % of them; "test_counter"
   breaks both (circles never red, squares in 20 %). Files: out_dir/<split>.jsonl and
   out_dir/images/<split>/<n>.png for split in train, test_prior, test_counter. */
typedef struct {
    const char *out_dir;
    int n_train, n_test;             /* images per split (train; each test split) */
    int size;                        /* image side in pixels, a multiple of 28 (84) */
    double prior_strength;           /* 0.9 */
    uint64_t seed;
} mbpo_synth_opts;
MBPODEF void mbpo_synth_defaults(mbpo_synth_opts *o);
MBPODEF int  mbpo_synth(const mbpo_synth_opts *o);

/* A tiny Qwen2-VL (or Qwen2.5-VL) for the shapes world: a byte-level BPE tokenizer.json in
   which every word of the world (and of the chat template) is one token, followed by the
   Qwen2-VL special tokens (Qwen2.5-VL: and after them its 8 non-special added tokens,
   <tool_call> .. <|file_sep|>, as on the hub); a config of the given widths; random weights
   (normal(0, 0.02), norms 1, biases 0); and a preprocessor_config.json. Written into dir,
   ready for mbpo-train --mode sft.
   Qwen2.5-VL gets the same language model and the same vision width, depth and heads, with
   its own blocks: RMSNorm, a SwiGLU of width 8/3 v_embed rounded up to a multiple of 8 (176
   for 64: about the parameters of Qwen2-VL's 4 x GELU MLP, as on the hub), window attention
   over v_window pixels, and full attention in every second block and the last (depth 2:
   block 1; the hub's 32 blocks have it in every eighth). The default 56 px is 2 x 2 merge
   units, so the world's 84-px images (3 x 3 units) fall into 4 windows of 4, 2, 2 and 1 units. */
typedef struct {
    int64_t hidden, layers, heads, kv_heads, mlp;        /* 128, 4, 4, 2, 352 */
    int64_t v_embed, v_depth, v_heads;                   /* 64, 2, 4 */
    uint64_t seed;
    mbpo_arch arch;                                      /* MBPO_ARCH_QWEN2_VL */
    int64_t v_window;                                    /* Qwen2.5-VL only: window side in pixels, >= 28 (56) */
} mbpo_synth_model_opts;
MBPODEF void mbpo_synth_model_defaults(mbpo_synth_model_opts *o);
MBPODEF int  mbpo_synth_model(const char *dir, const mbpo_synth_model_opts *o);

/* Scoring in the shapes world: the rows of an mbpo_score file matched by id to the world's
   records (their "family" and "scene"). An open colour question is right when the response
   is the colour word. Captions are checked CHAIR-style: each distinct shape a caption names
   (with the colour word just before it, if any) and each colour named on its own is an
   instance (whole words only: "circleB" names no circle); an
   instance is hallucinated when the scene has nothing that fits it (no such shape, that
   shape in another colour, no shape of that colour). CHAIR_i = hallucinated / all instances,
   CHAIR_s = captions with at least one; coverage = the scene's shapes named with their
   colour / all of them, so that saying less is not mistaken for seeing better. */
typedef struct {
    int64_t n_open, open_correct, n_circle, circle_correct;   /* circle: "What colour is the circle?" */
    int64_t n_yesno, yesno_correct, n_mc, mc_correct;
    int64_t n_captions, captions_halluc, instances, instances_halluc, scene_shapes, scene_covered;
    double iig_mean;                 /* the score file's summary */
} mbpo_synth_metrics;
MBPODEF int mbpo_synth_eval(const char *data, const char *scores, mbpo_synth_metrics *m);

/* The demo (make demo) and its ablation (make demo-ablation), start to end from the shipped
   SFT model: the world (seed world_seed: its train split is the mining pool, unseen by the
   SFT run, which used seed 1) -> mining -> training -> scoring -> a table (markdown, to
   report and out_dir/results.md or ablation.md). The demo trains MBPO with seed 1 and also
   draws out_dir/adversarial.png (triptychs) and out_dir/fig4.svg (IIG of chosen and rejected
   and the online reward over the steps); the ablation trains offline-rand, offline, online and
   mbpo for seeds 1..seeds. Every stage keeps its output in out_dir and a rerun continues
   (the world is made once, mining and training resume, score files are reused), so the
   ablation reuses the demo's seed-1 MBPO run; out_dir/demo.json records the settings, and a
   rerun with other settings is refused rather than mixed in. Progress goes to log. */
typedef struct {
    const char *model_dir, *out_dir;  /* "demo/tiny-sft", "demo-out" */
    int ablation, seeds;              /* 0, 3 */
    int n_pool, n_test;               /* world images: 500 in the pool, 250 per test split */
    uint64_t world_seed;              /* 2 */
    int top_k;                        /* chosen responses kept by IIG: 400 */
    double mine_temperature;          /* rejected responses: 0.7 */
    int64_t steps;                    /* 500 */
    double lr;                        /* 5e-5 */
    int batch, G, max_new_tokens;     /* 8, 8, 24 */
    mbpo_device device;               /* where mining, training and scoring compute: the CPU (the reference) */
    FILE *log, *report;
} mbpo_demo_opts;
MBPODEF void mbpo_demo_defaults(mbpo_demo_opts *o);
MBPODEF int  mbpo_demo(const mbpo_demo_opts *o);

#ifdef __cplusplus
}
#endif
#endif /* MBPO_DEMO_H */

/* ==========================================================================================
   IMPLEMENTATION
   ========================================================================================== */
#ifdef MBPO_DEMO_IMPLEMENTATION
#ifndef MBPO_DEMO_IMPLEMENTATION_DONE
#define MBPO_DEMO_IMPLEMENTATION_DONE

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ demo-private helpers */

/* A growing string; `failed` sticks after an allocation failure (checked once, at the end). */
typedef struct { char *s; size_t n, cap; int failed; } demo__sb;
static void demo__sb_put(demo__sb *b, const char *s, size_t n) {
    if (b->failed) return;
    if (!b->s || b->n + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *p = (char *)mbpo_calloc(cap, 1);
        if (!p) { b->failed = 1; return; }
        if (b->s) memcpy(p, b->s, b->n);
        mbpo_free(b->s);
        b->s = p; b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void demo__sb_puts(demo__sb *b, const char *s) { demo__sb_put(b, s, strlen(s)); }
#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 2, 3)))
#endif
static void demo__sb_printf(demo__sb *b, const char *fmt, ...) {
    va_list ap;
    int need;
    if (b->failed) return;
    va_start(ap, fmt);
    need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) { b->failed = 1; return; }
    if (!b->s || b->n + (size_t)need + 1 > b->cap) {
        size_t cap = (b->cap + (size_t)need + 1) * 2;
        char *s = (char *)mbpo_calloc(cap, 1);
        if (!s) { b->failed = 1; return; }
        if (b->s) memcpy(s, b->s, b->n);
        mbpo_free(b->s);
        b->s = s; b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}
/* s as a JSON string, quoted and escaped. */
static void demo__sb_json(demo__sb *b, const char *s) {
    demo__sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = { '\\', (char)c }; demo__sb_put(b, e, 2); }
        else if (c == '\n') demo__sb_put(b, "\\n", 2);
        else if (c == '\r') demo__sb_put(b, "\\r", 2);
        else if (c == '\t') demo__sb_put(b, "\\t", 2);
        else if (c < 0x20) demo__sb_printf(b, "\\u%04x", c);
        else demo__sb_put(b, s, 1);
    }
    demo__sb_put(b, "\"", 1);
}
/* dir/name, allocated (mbpo_free); NULL with a reason when out of memory. */
static char *demo__path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = (char *)mbpo_calloc(a + b + 2, 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}
static int demo__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
/* Room for `need` items of `size` bytes in *p (capacity *cap, `used` of them kept). */
static int demo__grow(void **p, int64_t used, int64_t need, int64_t *cap, size_t size) {
    void *q;
    int64_t c = *cap > 0 ? *cap : 16;
    if (need <= *cap) return 1;
    while (c < need) c *= 2;
    if (!(q = mbpo_calloc((size_t)c, size))) return 0;
    if (used) memcpy(q, *p, (size_t)used * size);
    mbpo_free(*p);
    *p = q;
    *cap = c;
    return 1;
}
static int demo__lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static const char *demo__skip_space(const char *s) { while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++; return s; }

/* ------------------------------------------------------------------ the shapes world */

static const char *const demo__shape_names[4] = { "circle", "square", "triangle", "star" };
static const char *const demo__colour_names[6] = { "red", "green", "blue", "yellow", "purple", "orange" };
static const uint8_t demo__colour_rgb[6][3] = { { 220, 30, 30 }, { 30, 160, 50 }, { 30, 70, 220 }, { 235, 200, 20 },
                                                { 140, 40, 170 }, { 245, 130, 20 } };
typedef struct { int shape, colour; double cx, cy, r; } demo__shape;

/* Is (x, y) inside the shape? Triangles point up; stars have 5 points, inner radius 0.45 r. */
static int demo__inside(const demo__shape *s, double x, double y) {
    double dx = x - s->cx, dy = y - s->cy;
    switch (s->shape) {
    case 0: return dx * dx + dy * dy <= s->r * s->r;
    case 1: return fabs(dx) <= 0.85 * s->r && fabs(dy) <= 0.85 * s->r;
    case 2: {   /* apex (0, -r), base corners (+-r, 0.8 r) */
        double top = -s->r, bottom = 0.8 * s->r, t;
        if (dy < top || dy > bottom) return 0;
        t = (dy - top) / (bottom - top);     /* 0 at the apex, 1 at the base */
        return fabs(dx) <= t * s->r;
    }
    default: {  /* even-odd test against the 10-gon */
        const double pi = 3.14159265358979323846;
        double vx[10], vy[10];
        int i, j, in = 0;
        for (i = 0; i < 10; i++) {
            double a = -pi / 2 + i * pi / 5, rr = i % 2 ? 0.45 * s->r : s->r;
            vx[i] = rr * cos(a); vy[i] = rr * sin(a);
        }
        for (i = 0, j = 9; i < 10; j = i++)
            if ((vy[i] > dy) != (vy[j] > dy) && dx < (vx[j] - vx[i]) * (dy - vy[i]) / (vy[j] - vy[i]) + vx[i]) in = !in;
        return in;
    }
    }
}

/* One scene: its shapes (unique kinds, not overlapping) under the split's priors. */
static int demo__scene(mbpo_rng *r, int size, int counter, double prior, demo__shape *sh) {
    int n = 1 + (int)(mbpo_rng_u64(r) % 4), k = 0, tries = 0, kinds[4] = { 0, 1, 2, 3 }, i;
    double p_square = counter ? 0.2 : 0.8;
    for (i = 3; i > 0; i--) { int j = (int)(mbpo_rng_u64(r) % (uint64_t)(i + 1)), t = kinds[i]; kinds[i] = kinds[j]; kinds[j] = t; }
    {   /* the square's presence follows its prior: move it in or out of the first n kinds */
        int has = 0, want = mbpo_rng_uniform(r) < p_square, pos = 0;
        for (i = 0; i < 4; i++) if (kinds[i] == 1) pos = i;
        has = pos < n;
        if (want && !has) { kinds[pos] = kinds[0]; kinds[0] = 1; }
        if (!want && has) { if (n == 4) n = 3; kinds[pos] = kinds[3]; kinds[3] = 1; }
    }
    while (k < n && tries < 500) {
        demo__shape s;
        int j, ok = 1;
        tries++;
        s.shape = kinds[k];
        s.r = size * (0.09 + 0.06 * mbpo_rng_uniform(r));
        s.cx = s.r + 2 + (size - 2 * s.r - 4) * mbpo_rng_uniform(r);
        s.cy = s.r + 2 + (size - 2 * s.r - 4) * mbpo_rng_uniform(r);
        for (j = 0; j < k; j++) {
            double dx = s.cx - sh[j].cx, dy = s.cy - sh[j].cy;
            if (sqrt(dx * dx + dy * dy) < s.r + sh[j].r + 2) ok = 0;
        }
        if (!ok) continue;
        if (s.shape == 0) {   /* the planted prior: circles are red */
            int red = counter ? 0 : mbpo_rng_uniform(r) < prior;
            s.colour = red ? 0 : 1 + (int)(mbpo_rng_u64(r) % 5);
        } else s.colour = (int)(mbpo_rng_u64(r) % 6);
        sh[k++] = s;
    }
    return k;
}

/* Draw a scene: background (plain, stripes or checks in light tones), then each shape with
   4 x 4 supersampled coverage for smooth edges. */
static void demo__draw(mbpo_image *img, mbpo_rng *r, const demo__shape *sh, int n) {
    int x, y, k, style = (int)(mbpo_rng_u64(r) % 3), period = 6 + (int)(mbpo_rng_u64(r) % 8);
    uint8_t bg1[3], bg2[3];
    for (k = 0; k < 3; k++) {
        bg1[k] = (uint8_t)(200 + mbpo_rng_u64(r) % 56);
        bg2[k] = (uint8_t)(bg1[k] > 30 ? bg1[k] - 20 - mbpo_rng_u64(r) % 10 : bg1[k]);
    }
    for (y = 0; y < img->height; y++)
        for (x = 0; x < img->width; x++) {
            int alt = style == 1 ? (x + y) / period % 2 : style == 2 ? (x / period + y / period) % 2 : 0;
            uint8_t *p = img->rgb + ((size_t)y * img->width + x) * 3;
            for (k = 0; k < 3; k++) p[k] = alt ? bg2[k] : bg1[k];
            for (k = 0; k < n; k++) {
                int sx, sy, cover = 0, c;
                for (sy = 0; sy < 4; sy++)
                    for (sx = 0; sx < 4; sx++) cover += demo__inside(&sh[k], x + (sx + 0.5) / 4.0, y + (sy + 0.5) / 4.0);
                if (!cover) continue;
                for (c = 0; c < 3; c++)
                    p[c] = (uint8_t)((p[c] * (16 - cover) + demo__colour_rgb[sh[k].colour][c] * cover + 8) / 16);
            }
        }
}

MBPODEF void mbpo_synth_defaults(mbpo_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_train = 400; o->n_test = 100; o->size = 84; o->prior_strength = 0.9; o->seed = 1;
}

static int demo__by_x(const void *a, const void *b) {
    const demo__shape *x = (const demo__shape *)a, *y = (const demo__shape *)b;
    return x->cx < y->cx ? -1 : x->cx > y->cx;
}
MBPODEF int mbpo_synth(const mbpo_synth_opts *o) {
    static const char *const splits[3] = { "train", "test_prior", "test_counter" };
    char *images = NULL;
    int split, ok = 0;
    demo__sb sb = { NULL, 0, 0, 0 };
    if (o->size < 28 || o->size % 28) return mbpo_failure_set("mbpo_synth: size %d must be a multiple of 28", o->size);
    if (!mbpo_mkdir(o->out_dir) || !(images = demo__path_join(o->out_dir, "images")) || !mbpo_mkdir(images)) goto end;
    for (split = 0; split < 3; split++) {
        int n = split == 0 ? o->n_train : o->n_test, i;
        char name[64], *dir, *jsonl;
        sb.n = 0;
        snprintf(name, sizeof name, "images/%s", splits[split]);
        dir = demo__path_join(o->out_dir, name);
        snprintf(name, sizeof name, "%s.jsonl", splits[split]);
        jsonl = demo__path_join(o->out_dir, name);
        if (!dir || !jsonl || !mbpo_mkdir(dir)) { mbpo_free(dir); mbpo_free(jsonl); goto end; }
        for (i = 0; i < n; i++) {
            demo__shape sh[4];
            mbpo_rng r;
            mbpo_image img;
            char file[64], *path, scene[512], caption[256];
            size_t at = 0, ct = 0;
            int k, m, target, colour, fam, opts[4], truth;
            mbpo_rng_seed(&r, mbpo_seed_derive(o->seed, (int64_t)split * 10000000 + i, 5));
            m = demo__scene(&r, o->size, split == 2, o->prior_strength, sh);
            qsort(sh, (size_t)m, sizeof *sh, demo__by_x);   /* left to right, for captions */
            if (!mbpo_image_init(&img, o->size, o->size)) { mbpo_free(dir); mbpo_free(jsonl); goto end; }
            demo__draw(&img, &r, sh, m);
            snprintf(file, sizeof file, "%06d.png", i);
            path = demo__path_join(dir, file);
            k = path && mbpo_image_write_png(path, &img);
            mbpo_free(path); mbpo_image_free(&img);
            if (!k) { mbpo_free(dir); mbpo_free(jsonl); goto end; }
            at += (size_t)snprintf(scene + at, sizeof scene - at, "[");
            for (k = 0; k < m; k++)
                at += (size_t)snprintf(scene + at, sizeof scene - at, "%s{\"shape\": \"%s\", \"colour\": \"%s\", \"x\": %.1f, \"y\": %.1f, \"r\": %.1f}",
                                       k ? ", " : "", demo__shape_names[sh[k].shape], demo__colour_names[sh[k].colour], sh[k].cx, sh[k].cy, sh[k].r);
            snprintf(scene + at, sizeof scene - at, "]");
            for (k = 0; k < m; k++)
                ct += (size_t)snprintf(caption + ct, sizeof caption - ct, "%s%s %s", k == 0 ? "A " : k == m - 1 ? " and a " : ", a ",
                                       demo__colour_names[sh[k].colour], demo__shape_names[sh[k].shape]);
            snprintf(caption + ct, sizeof caption - ct, ".");
            for (fam = 0; fam < 4; fam++) {
                char q[256], a[64];
                target = (int)(mbpo_rng_u64(&r) % (uint64_t)m);
                if (fam == 0) {          /* open */
                    snprintf(q, sizeof q, "<image>\\nWhat colour is the %s?", demo__shape_names[sh[target].shape]);
                    snprintf(a, sizeof a, "%s", demo__colour_names[sh[target].colour]);
                } else if (fam == 1) {   /* yes/no: half true, half a shape-colour pair not in the scene */
                    int shape;
                    truth = mbpo_rng_uniform(&r) < 0.5;
                    if (truth) { shape = sh[target].shape; colour = sh[target].colour; }
                    else {
                        int present;
                        do {
                            shape = (int)(mbpo_rng_u64(&r) % 4); colour = (int)(mbpo_rng_u64(&r) % 6);
                            for (k = 0, present = 0; k < m; k++) present |= sh[k].shape == shape && sh[k].colour == colour;
                        } while (present);
                    }
                    snprintf(q, sizeof q, "<image>\\nIs there a %s %s?", demo__colour_names[colour], demo__shape_names[shape]);
                    snprintf(a, sizeof a, "%s", truth ? "Yes" : "No");
                } else if (fam == 2) {   /* multiple choice over four colours, the right one among them */
                    int slot = (int)(mbpo_rng_u64(&r) % 4), used = 1 << sh[target].colour, c2;
                    for (k = 0; k < 4; k++) {
                        if (k == slot) { opts[k] = sh[target].colour; continue; }
                        do c2 = (int)(mbpo_rng_u64(&r) % 6); while (used >> c2 & 1);
                        used |= 1 << c2;
                        opts[k] = c2;
                    }
                    snprintf(q, sizeof q, "<image>\\nWhat colour is the %s?\\nA. %s\\nB. %s\\nC. %s\\nD. %s",
                             demo__shape_names[sh[target].shape], demo__colour_names[opts[0]], demo__colour_names[opts[1]],
                             demo__colour_names[opts[2]], demo__colour_names[opts[3]]);
                    snprintf(a, sizeof a, "%c", 'A' + slot);
                } else {                 /* caption */
                    snprintf(q, sizeof q, "<image>\\nDescribe the image.");
                    snprintf(a, sizeof a, "%s", "");
                }
                demo__sb_printf(&sb, "{\"id\": \"%s-%06d-%d\", \"image\": \"%s/%s\", \"family\": \"%s\", \"conversations\": "
                                "[{\"from\": \"human\", \"value\": \"%s\"}, {\"from\": \"gpt\", \"value\": \"%s\"}], \"scene\": %s}\n",
                                splits[split], i, fam, splits[split], file, fam == 0 ? "open" : fam == 1 ? "yesno" : fam == 2 ? "mc" : "caption",
                                q, fam == 3 ? caption : a, scene);
            }
        }
        i = !sb.failed && mbpo_write_file_atomic(jsonl, sb.s ? sb.s : "", sb.n);
        mbpo_free(dir); mbpo_free(jsonl);
        if (!i) goto end;
    }
    ok = 1;
end:
    mbpo_free(sb.s); mbpo_free(images);
    return ok;
}

/* ------------------------------------------------------------------ a tiny model */

MBPODEF void mbpo_synth_model_defaults(mbpo_synth_model_opts *o) {
    o->hidden = 128; o->layers = 4; o->heads = 4; o->kv_heads = 2; o->mlp = 352;
    o->v_embed = 64; o->v_depth = 2; o->v_heads = 4;
    o->seed = 1;
    o->arch = MBPO_ARCH_QWEN2_VL; o->v_window = 56;
}

/* The world's texts, for the tokenizer's words. */
static void demo__synth_corpus(demo__sb *b) {
    int s2, c, k;
    demo__sb_puts(b, "system\nYou are a helpful assistant.\nuser\nassistant\nDescribe the image.\nYes\nNo\nA\nB\nC\nD\n");
    for (s2 = 0; s2 < 4; s2++) {
        demo__sb_printf(b, "What colour is the %s?\n", demo__shape_names[s2]);
        for (c = 0; c < 6; c++)
            demo__sb_printf(b, "Is there a %s %s?\nA %s %s, a %s %s and a %s %s.\n%s\n", demo__colour_names[c], demo__shape_names[s2],
                            demo__colour_names[c], demo__shape_names[s2], demo__colour_names[c], demo__shape_names[s2],
                            demo__colour_names[c], demo__shape_names[s2], demo__colour_names[c]);
    }
    for (k = 0; k < 4; k++) for (c = 0; c < 6; c++) demo__sb_printf(b, "\n%c. %s", 'A' + k, demo__colour_names[c]);
}
/* Code point of byte b in the GPT-2 byte-level alphabet that tokenizer.json's vocabulary is
   written in: printable Latin-1 bytes stand for themselves, the other 68 take U+0100.. in
   byte order. */
static unsigned demo__byte_char(unsigned b) {
    unsigned k = 0, i;
#define DEMO__PRINTABLE(x) (((x) >= 0x21 && (x) <= 0x7E) || ((x) >= 0xA1 && (x) <= 0xAC) || (x) >= 0xAE)
    if (DEMO__PRINTABLE(b)) return b;
    for (i = 0; i < b; i++) k += !DEMO__PRINTABLE(i);
#undef DEMO__PRINTABLE
    return 0x100 + k;
}
/* A token string in the byte-level alphabet, JSON-escaped, appended to b. */
static void demo__sb_bytelevel(demo__sb *b, const unsigned char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned cp = demo__byte_char(p[i]);
        char u[2];
        if (cp == '"' || cp == '\\') demo__sb_put(b, "\\", 1);
        if (cp < 0x80) { u[0] = (char)cp; demo__sb_put(b, u, 1); }
        else { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); demo__sb_put(b, u, 2); }   /* all < U+0800 */
    }
}
typedef struct { unsigned char s[32]; int n; } demo__word;
static int demo__word_find(const demo__word *w, int n, const unsigned char *s, int len) {
    int i;
    for (i = 0; i < n; i++) if (w[i].n == len && !memcmp(w[i].s, s, (size_t)len)) return i;
    return -1;
}
/* tokenizer.json from a vocabulary of byte strings (tokens[256..]) and merges (pairs of token
   indices in rank order). The added tokens follow the vocabulary in the hub's order: the 14
   special ones, then for Qwen2.5-VL (q25) its 8 that are not special - still matched whole
   before BPE, but kept by skip_special_tokens (docs/QWEN25VL.md 6). */
static int demo__write_tiny_tokenizer(const char *path, const demo__word *tok, int n_tok, const int (*merges)[2], int n_merges,
                                      int q25, int64_t *n_ids) {
    static const char *const specials[22] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
        "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
        "<|file_sep|>" };
    demo__sb b = { NULL, 0, 0, 0 };
    int i, ok, n_added = q25 ? 22 : 14;
    demo__sb_puts(&b, "{\"version\": \"1.0\", \"added_tokens\": [");
    for (i = 0; i < n_added; i++)
        demo__sb_printf(&b, "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                        "\"normalized\": false, \"special\": %s}", i ? ", " : "", n_tok + i, specials[i], i < 14 ? "true" : "false");
    demo__sb_puts(&b, "], \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                      "{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    demo__sb_json(&b, MBPO_QWEN2_PATTERN);
    /* HF tokenizers has no defaults for ByteLevel's three fields: a decoder without them fails
       to load ("data did not match any variant of untagged enum PyDecoderWrapper"), which
       transformers reports as needing protobuf. Qwen2's own file spells them out the same way. */
    demo__sb_puts(&b, "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                      "\"trim_offsets\": false, \"use_regex\": false}]}, \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\", "
                      "\"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}, "
                      "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": \"\", "
                      "\"end_of_word_suffix\": \"\", \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false, \"vocab\": {");
    for (i = 0; i < n_tok; i++) {
        demo__sb_puts(&b, i ? ", \"" : "\"");
        demo__sb_bytelevel(&b, tok[i].s, (size_t)tok[i].n);
        demo__sb_printf(&b, "\": %d", i);
    }
    demo__sb_puts(&b, "}, \"merges\": [");
    for (i = 0; i < n_merges; i++) {
        demo__sb_puts(&b, i ? ", [\"" : "[\"");
        demo__sb_bytelevel(&b, tok[merges[i][0]].s, (size_t)tok[merges[i][0]].n);
        demo__sb_puts(&b, "\", \"");
        demo__sb_bytelevel(&b, tok[merges[i][1]].s, (size_t)tok[merges[i][1]].n);
        demo__sb_puts(&b, "\"]");
    }
    demo__sb_puts(&b, "]}}\n");
    ok = !b.failed && mbpo_write_file_atomic(path, b.s, b.n);
    mbpo_free(b.s);
    *n_ids = n_tok + n_added;
    return ok;
}

MBPODEF int mbpo_synth_model(const char *dir, const mbpo_synth_model_opts *o) {
    enum { MAXTOK = 2048 };
    demo__word *tok = (demo__word *)mbpo_calloc(MAXTOK, sizeof(demo__word)), words[512];
    int (*merges)[2] = (int (*)[2])mbpo_calloc(MAXTOK, sizeof(int[2]));
    int n_tok = 256, n_merges = 0, n_words = 0, i, pass, ok = 0, q25 = o->arch == MBPO_ARCH_QWEN2_5_VL;
    int64_t n_ids = 0;
    demo__sb corpus = { NULL, 0, 0, 0 };
    char *p_tok = NULL, *p_pp = NULL;
    mbpo_tokenizer *tk = NULL;
    mbpo_model m;
    memset(&m, 0, sizeof m);
    if (o->arch != MBPO_ARCH_QWEN2_VL && !q25) {
        mbpo_failure_set("mbpo_synth_model: arch %d is neither MBPO_ARCH_QWEN2_VL nor MBPO_ARCH_QWEN2_5_VL", (int)o->arch);
        goto end;
    }
    if (q25 && o->v_window < 28) {   /* under one merge unit (2 x 14 px) transformers divides by zero */
        mbpo_failure_set("mbpo_synth_model: v_window %lld must be >= 28 pixels (one 2 x 2 merge unit of 14-px patches)",
                         (long long)o->v_window);
        goto end;
    }
    if (q25 && (o->v_depth < 1 || (o->v_depth + 1) / 2 > MBPO_MAX_FULLATT)) {
        mbpo_failure_set("mbpo_synth_model: v_depth %lld must be in [1, %d] (every second block is listed in fullatt_block_indexes)",
                         (long long)o->v_depth, 2 * MBPO_MAX_FULLATT);
        goto end;
    }
    if (!tok || !merges || !mbpo_mkdir(dir)) goto end;
    for (i = 0; i < 256; i++) { tok[i].s[0] = (unsigned char)i; tok[i].n = 1; }
    /* the words: the pre-tokens of the corpus, by the Qwen2 regex */
    demo__synth_corpus(&corpus);
    if (corpus.failed) goto end;
    {
        size_t *ends = NULL, j = 0;
        int64_t n_pieces = mbpo_pretokenize(corpus.s, corpus.n, &ends), k;
        if (n_pieces < 0) goto end;
        for (k = 0; k < n_pieces; k++) {
            size_t e = ends[k];
            if (e - j >= 2 && e - j < 32 && demo__word_find(words, n_words, (const unsigned char *)corpus.s + j, (int)(e - j)) < 0 && n_words < 512) {
                memcpy(words[n_words].s, corpus.s + j, e - j);
                words[n_words++].n = (int)(e - j);
            }
            j = e;
        }
        mbpo_free(ends);
    }
    /* prefix merges for every word; then, while the tokenizer splits a word, merges that join
       its pieces (appended, so they apply after the earlier ones) */
    for (i = 0; i < n_words; i++) {
        int k;
        for (k = 2; k <= words[i].n; k++)
            if (demo__word_find(tok, n_tok, words[i].s, k) < 0 && n_tok < MAXTOK) {
                int left = demo__word_find(tok, n_tok, words[i].s, k - 1);
                memcpy(tok[n_tok].s, words[i].s, (size_t)k); tok[n_tok].n = k;
                merges[n_merges][0] = left; merges[n_merges][1] = words[i].s[k - 1];
                n_merges++; n_tok++;
            }
    }
    if (!(p_tok = demo__path_join(dir, "tokenizer.json"))) goto end;
    for (pass = 0; pass < 8; pass++) {
        int split = 0;
        if (!demo__write_tiny_tokenizer(p_tok, tok, n_tok, (const int (*)[2])merges, n_merges, q25, &n_ids)) goto end;
        mbpo_tokenizer_free(tk);
        if (!(tk = mbpo_tokenizer_load(p_tok))) goto end;
        for (i = 0; i < n_words; i++) {
            int64_t n, k;
            const int32_t *ids = mbpo_tokenizer_encode(tk, (const char *)words[i].s, (size_t)words[i].n, 0, &n);
            int32_t acc;
            if (!ids || n == 1) continue;
            split = 1;
            acc = ids[0];
            for (k = 1; k < n && n_tok < MAXTOK; k++) {   /* join left to right: (acc, ids[k]) */
                unsigned char buf[32];
                int la = tok[acc].n, lb = tok[ids[k]].n, f;
                memcpy(buf, tok[acc].s, (size_t)la); memcpy(buf + la, tok[ids[k]].s, (size_t)lb);
                if ((f = demo__word_find(tok, n_tok, buf, la + lb)) < 0) {
                    memcpy(tok[n_tok].s, buf, (size_t)(la + lb)); tok[n_tok].n = la + lb;
                    f = n_tok++;
                }
                merges[n_merges][0] = acc; merges[n_merges][1] = ids[k]; n_merges++;
                acc = f;
            }
        }
        if (!split) break;
    }
    /* the model */
    {
        mbpo_config c;
        mbpo_rng rng;
        size_t k;
        memset(&c, 0, sizeof c);
        c.vocab_size = (n_ids + 15) / 16 * 16;
        c.hidden_size = o->hidden; c.intermediate_size = o->mlp; c.n_layers = o->layers; c.n_heads = o->heads;
        c.n_kv_heads = o->kv_heads; c.head_dim = o->hidden / o->heads;
        c.rms_norm_eps = 1e-6; c.rope_theta = 1000000.0;
        c.mrope_section[0] = (int)(c.head_dim / 2 / 4); c.mrope_section[1] = c.mrope_section[2] = (int)((c.head_dim / 2 - c.mrope_section[0]) / 2);
        c.mrope_section[0] = (int)(c.head_dim / 2) - 2 * c.mrope_section[1];
        c.tie_word_embeddings = 1; c.max_position_embeddings = 1024;
        c.image_token_id = n_tok + 12; c.video_token_id = n_tok + 13; c.vision_start_token_id = n_tok + 9; c.vision_end_token_id = n_tok + 10;
        c.bos_token_id = n_tok; c.eos_token_id = n_tok + 2; c.pad_token_id = n_tok;
        c.v_depth = o->v_depth; c.v_embed_dim = o->v_embed; c.v_heads = o->v_heads; c.v_mlp_hidden = 4 * o->v_embed;
        c.v_patch = 14; c.v_temporal_patch = 2; c.v_merge = 2; c.v_in_channels = 3; c.v_rope_theta = 10000.0;
        if (q25) {   /* the blocks of mbpo_synth_model_opts' comment; tokens_per_second as the hub's 3B / 7B */
            int64_t b;
            c.arch = MBPO_ARCH_QWEN2_5_VL;
            c.v_mlp_hidden = (8 * o->v_embed / 3 + 7) / 8 * 8;
            c.v_window_size = o->v_window; c.v_tokens_per_second = 2;
            for (b = 0; b < o->v_depth; b++)
                if (b % 2 == 1 || b == o->v_depth - 1) c.v_fullatt[c.v_n_fullatt++] = (int)b;
        }
        if (!mbpo_model_init(&m, &c)) goto end;
        mbpo_rng_seed(&rng, o->seed);
        for (k = 0; k < m.table.n; k++) {
            const mbpo_param_info *pi = &m.table.info[k];
            size_t len = strlen(pi->name);
            int is_bias = len > 5 && !strcmp(pi->name + len - 5, ".bias");
            int is_norm = strstr(pi->name, "norm") != NULL || strstr(pi->name, "ln_q") != NULL;
            int64_t j;
            for (j = 0; j < pi->numel; j++)
                m.params[pi->offset + j] = is_bias ? 0.0f : is_norm ? 1.0f : (float)(0.02 * mbpo_rng_normal(&rng));
        }
        if (!mbpo_model_save(&m, dir, MBPO_DT_F32)) goto end;
    }
    if (!(p_pp = demo__path_join(dir, "preprocessor_config.json"))) goto end;
    {
        /* No image_processor_type: transformers 4.57 then builds the slow (Pillow) processor from
           config.json's model type, and mbpo's auto rule picks it too - the pixels the shipped
           model was trained on (a type "Qwen2VLImageProcessor" would select the fast one). */
        static const char pp[] = "{\n  \"min_pixels\": 3136,\n  \"max_pixels\": 12845056,\n  \"patch_size\": 14,\n  \"temporal_patch_size\": 2,\n"
            "  \"merge_size\": 2,\n  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
            "  \"image_std\": [0.26862954, 0.26130258, 0.27577711]\n}\n";
        if (!mbpo_write_file_atomic(p_pp, pp, sizeof pp - 1)) goto end;
    }
    ok = 1;
end:
    mbpo_tokenizer_free(tk);
    mbpo_model_free(&m);
    mbpo_free(tok); mbpo_free(merges); mbpo_free(corpus.s); mbpo_free(p_tok); mbpo_free(p_pp);
    return ok;
}


/* ------------------------------------------------------------------ scoring in the world */

static int demo__is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int demo__word_index(const char *w, size_t n, const char *const *names, int count) {
    int k;
    for (k = 0; k < count; k++) if (strlen(names[k]) == n && !memcmp(names[k], w, n)) return k;
    return -1;
}
/* The instances a caption names, as a set of (shape, colour) bits: shape 0-3 or 4 (a colour
   on its own), colour 0-5 or 6 (a shape without a colour before it). */
static uint64_t demo__caption_instances(const char *text) {
    uint64_t set = 0;
    int pending = -1;                       /* a colour word waiting for its shape */
    const char *p = text;
    for (;;) {
        char w[16];
        size_t n = 0;
        int s, c;
        while (*p && !demo__is_alpha((unsigned char)*p)) p++;
        if (!*p) break;
        while (demo__is_alpha((unsigned char)*p)) { if (n < sizeof w) w[n] = (char)demo__lower((unsigned char)*p); n++; p++; }
        if (n > sizeof w) n = 0;
        s = n ? demo__word_index(w, n, demo__shape_names, 4) : -1;
        c = n ? demo__word_index(w, n, demo__colour_names, 6) : -1;
        if (s >= 0) { set |= 1ull << (s * 7 + (pending >= 0 ? pending : 6)); pending = -1; continue; }
        if (pending >= 0) set |= 1ull << (4 * 7 + pending);   /* the colour had no shape after it */
        pending = c;
    }
    if (pending >= 0) set |= 1ull << (4 * 7 + pending);
    return set;
}

MBPODEF int mbpo_synth_eval(const char *data, const char *scores, mbpo_synth_metrics *m) {
    size_t len = 0;
    char *text = NULL, *line, *end;
    mbpo_json **rows = NULL;                /* the dataset's records, by line */
    int64_t n_rows = 0, cap = 0, lineno = 0, i;
    int ok = 0;
    memset(m, 0, sizeof *m);
    if (!(text = mbpo_read_file(data, &len))) return 0;
    for (line = text, end = text + len; line < end; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(end - line));
        size_t k = eol ? (size_t)(eol - line) : (size_t)(end - line);
        lineno++;
        if (k) {
            mbpo_json *j = mbpo_json_parse_line(line, k, data, lineno);
            const mbpo_json *id = j ? mbpo_json_get(j, "id") : NULL, *fam = j ? mbpo_json_get(j, "family") : NULL,
                            *sc = j ? mbpo_json_get(j, "scene") : NULL;
            if (!j || !id || id->type != MBPO_JSON_STRING || !fam || fam->type != MBPO_JSON_STRING || !sc ||
                sc->type != MBPO_JSON_ARRAY) {
                mbpo_json_free(j);
                if (j) mbpo_failure_set("%s:%lld: not a shapes-world record (needs id, family and scene)", data, (long long)lineno);
                goto end;
            }
            if (!demo__grow((void **)&rows, n_rows, n_rows + 1, &cap, sizeof *rows)) { mbpo_json_free(j); goto end; }
            rows[n_rows++] = j;
        }
        line = eol ? eol + 1 : end;
    }
    mbpo_free(text);
    if (!(text = mbpo_read_file(scores, &len))) goto end;
    lineno = 0;
    for (line = text, end = text + len; line < end; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(end - line)), *start = line;
        size_t k = eol ? (size_t)(eol - line) : (size_t)(end - line);
        mbpo_json *j;
        const mbpo_json *id, *resp, *rec = NULL, *v;
        lineno++;
        line = eol ? eol + 1 : end;
        if (!k) continue;
        if (!(j = mbpo_json_parse_line(start, k, scores, lineno))) goto end;
        if ((v = mbpo_json_get(j, "summary")) && v->type == MBPO_JSON_TRUE) {
            if ((v = mbpo_json_get(j, "iig_mean")) && v->type == MBPO_JSON_NUMBER) m->iig_mean = v->number;
            mbpo_json_free(j);
            continue;
        }
        id = mbpo_json_get(j, "id"); resp = mbpo_json_get(j, "response");
        if (id && id->type == MBPO_JSON_STRING)   /* rows are few: a linear search is fine */
            for (i = 0; i < n_rows && !rec; i++)
                if (!strcmp(mbpo_json_get(rows[i], "id")->string, id->string)) rec = rows[i];
        if (!rec || !resp || resp->type != MBPO_JSON_STRING) {
            mbpo_json_free(j);
            mbpo_failure_set("%s:%lld: %s", scores, (long long)lineno, rec ? "no \"response\"" : "an id that is not in the dataset");
            goto end;
        }
        {
            const char *family = mbpo_json_get(rec, "family")->string;
            const mbpo_json *scene = mbpo_json_get(rec, "scene"), *correct = mbpo_json_get(j, "correct");
            int colour_of[4] = { -1, -1, -1, -1 }, colours = 0, s;
            size_t q;
            for (q = 0; q < scene->count; q++) {
                const mbpo_json *sh = mbpo_json_get(&scene->items[q], "shape"), *co = mbpo_json_get(&scene->items[q], "colour");
                int si = sh && sh->type == MBPO_JSON_STRING ? demo__word_index(sh->string, sh->len, demo__shape_names, 4) : -1;
                int ci = co && co->type == MBPO_JSON_STRING ? demo__word_index(co->string, co->len, demo__colour_names, 6) : -1;
                if (si >= 0 && ci >= 0) { colour_of[si] = ci; colours |= 1 << ci; }
            }
            if (!strcmp(family, "yesno") || !strcmp(family, "mc")) {
                int yn = family[0] == 'y';
                int right = correct && correct->type == MBPO_JSON_TRUE;
                if (yn) { m->n_yesno++; m->yesno_correct += right; } else { m->n_mc++; m->mc_correct += right; }
            } else if (!strcmp(family, "open")) {   /* the answer is one colour word */
                const mbpo_json *conv = mbpo_json_get(rec, "conversations"), *ans = NULL, *qs = NULL;
                const char *r = demo__skip_space(resp->string), *e2 = resp->string + resp->len;
                size_t t;
                int same;
                if (conv && conv->type == MBPO_JSON_ARRAY && conv->count >= 2) {
                    qs = mbpo_json_get(&conv->items[0], "value");
                    ans = mbpo_json_get(&conv->items[1], "value");
                }
                while (e2 > r && (e2[-1] == ' ' || e2[-1] == '\n' || e2[-1] == '.')) e2--;
                same = ans && ans->type == MBPO_JSON_STRING && (size_t)(e2 - r) == ans->len;
                for (t = 0; same && t < ans->len; t++) same = demo__lower((unsigned char)r[t]) == demo__lower((unsigned char)ans->string[t]);
                m->n_open++;
                if (same) {
                    m->open_correct++;
                    if (qs && qs->type == MBPO_JSON_STRING && strstr(qs->string, "the circle?")) m->circle_correct++;
                }
                if (qs && qs->type == MBPO_JSON_STRING && strstr(qs->string, "the circle?")) m->n_circle++;
            } else if (!strcmp(family, "caption")) {
                uint64_t set = demo__caption_instances(resp->string);
                int bad = 0, c;
                for (s = 0; s < 5; s++)
                    for (c = 0; c < 7; c++) {
                        int wrong;
                        if (!(set >> (s * 7 + c) & 1)) continue;
                        if (s == 4) wrong = !(colours >> c & 1);                 /* a colour on its own */
                        else if (c == 6) wrong = colour_of[s] < 0;                 /* a shape without colour */
                        else wrong = colour_of[s] != c;                            /* absent, or another colour */
                        m->instances++; m->instances_halluc += wrong; bad |= wrong;
                    }
                for (s = 0; s < 4; s++)
                    if (colour_of[s] >= 0) { m->scene_shapes++; m->scene_covered += (int)(set >> (s * 7 + colour_of[s]) & 1); }
                m->n_captions++; m->captions_halluc += bad;
            }
        }
        mbpo_json_free(j);
    }
    ok = 1;
end:
    for (i = 0; i < n_rows; i++) mbpo_json_free(rows[i]);
    mbpo_free(rows); mbpo_free(text);
    return ok;
}

/* ------------------------------------------------------------------ the demo */

MBPODEF void mbpo_demo_defaults(mbpo_demo_opts *o) {
    memset(o, 0, sizeof *o);
    o->model_dir = "demo/tiny-sft"; o->out_dir = "demo-out";
    o->seeds = 3;
    o->n_pool = 500; o->n_test = 250; o->world_seed = 2;
    o->top_k = 400; o->mine_temperature = 0.7;
    o->steps = 500; o->lr = 5e-5; o->batch = 8; o->G = 8; o->max_new_tokens = 24;
}

/* What is measured of one model: the world metrics on both test splits, and the mean
   per-token IIG of the mined chosen and rejected responses (on their clean images). */
typedef struct { mbpo_synth_metrics split[2]; double iig_c, iig_r; } demo__cell;
static const char *const demo__splits[2] = { "test_prior", "test_counter" };

static char *demo__path(const mbpo_demo_opts *o, const char *fmt, const char *a, uint64_t seed) {
    char name[256];
    snprintf(name, sizeof name, fmt, a, (unsigned long long)seed);
    return demo__path_join(o->out_dir, name);
}
static void demo__stage(const mbpo_demo_opts *o, const char *what, double t_start) {
    if (o->log) { fprintf(o->log, "demo [%5.0f s] %s\n", mbpo_now() - t_start, what); fflush(o->log); }
}

/* The world, generated once: out/world/world.json records the options it was made with. */
static int demo__world(const mbpo_demo_opts *o, const char *world) {
    mbpo_synth_opts so;
    char stamp_text[256], *stamp = demo__path_join(world, "world.json"), *old = NULL;
    size_t n = 0;
    int ok = 0;
    mbpo_synth_defaults(&so);
    so.out_dir = world; so.n_train = o->n_pool; so.n_test = o->n_test; so.seed = o->world_seed;
    snprintf(stamp_text, sizeof stamp_text, "{\"n_train\": %d, \"n_test\": %d, \"size\": %d, \"prior\": %g, \"seed\": %llu}\n",
             so.n_train, so.n_test, so.size, so.prior_strength, (unsigned long long)so.seed);
    if (!stamp) return 0;
    if (demo__file_exists(stamp) && (old = mbpo_read_file(stamp, &n)) && n == strlen(stamp_text) && !memcmp(old, stamp_text, n))
        ok = 1;   /* cached */
    else
        ok = mbpo_synth(&so) && mbpo_write_file_atomic(stamp, stamp_text, strlen(stamp_text));
    mbpo_free(old); mbpo_free(stamp);
    return ok;
}

/* Score a model on both test splits (each score file is written once, atomically, so a rerun
   skips it) and measure the IIG of the pairs. name: "sft", "mbpo-s1", ... */
static int demo__measure(const mbpo_demo_opts *o, const char *world, const char *model, const char *name, const char *pairs,
                         demo__cell *cell) {
    int s, ok = 1;
    char *images = demo__path_join(world, "images"), *scores = demo__path_join(o->out_dir, "scores");
    if (!images || !scores || !mbpo_mkdir(scores)) { mbpo_free(images); mbpo_free(scores); return 0; }
    for (s = 0; s < 2 && ok; s++) {
        char file[256], *out, *data;
        snprintf(file, sizeof file, "%s-%s.jsonl", name, demo__splits[s]);
        out = demo__path_join(scores, file);
        snprintf(file, sizeof file, "%s.jsonl", demo__splits[s]);
        data = demo__path_join(world, file);
        ok = out && data;
        if (ok && !demo__file_exists(out)) {
            mbpo_score_opts so;
            mbpo_score_summary sum;
            mbpo_score_defaults(&so);
            so.model_dir = model; so.data = data; so.image_root = images; so.out_path = out;
            so.max_new_tokens = o->max_new_tokens; so.strict = 1; so.log = o->log; so.device = o->device;
            ok = mbpo_score(&so, &sum);
        }
        ok = ok && mbpo_synth_eval(data, out, &cell->split[s]);
        mbpo_free(out); mbpo_free(data);
    }
    ok = ok && mbpo_pairs_iig(model, pairs, images, &cell->iig_c, &cell->iig_r);
    mbpo_free(images); mbpo_free(scores);
    return ok;
}

/* out_dir/demo.json: the settings every cached result depends on. A rerun with other settings
   would mix old scores into a new table, so it is refused. */
static int demo__settings(const mbpo_demo_opts *o) {
    demo__sb want = { NULL, 0, 0, 0 };
    char *path = demo__path_join(o->out_dir, "demo.json"), *have = NULL;
    size_t n = 0;
    int ok = 0;
    demo__sb_puts(&want, "{\"model\": ");
    demo__sb_json(&want, o->model_dir);
    demo__sb_printf(&want, ", \"pool\": %d, \"test\": %d, \"world_seed\": %llu, \"top_k\": %d, \"mine_temperature\": %.9g, "
                    "\"steps\": %lld, \"lr\": %.9g, \"batch\": %d, \"G\": %d, \"max_new_tokens\": %d}\n", o->n_pool, o->n_test,
                    (unsigned long long)o->world_seed, o->top_k, o->mine_temperature, (long long)o->steps, o->lr, o->batch, o->G,
                    o->max_new_tokens);
    if (!path || want.failed) goto end;
    if (demo__file_exists(path)) {
        if (!(have = mbpo_read_file(path, &n))) goto end;
        if (n != want.n || memcmp(have, want.s, n)) {
            mbpo_failure_set("%s: this directory holds a demo run with other settings (%.*s); use a new --out or the same settings",
                       path, (int)(n && have[n - 1] == '\n' ? n - 1 : n), have);
            goto end;
        }
        ok = 1;
    } else ok = mbpo_write_file_atomic(path, want.s, want.n);
end:
    mbpo_free(want.s); mbpo_free(path); mbpo_free(have);
    return ok;
}

/* Mine a pair set (PGD, or noise for the offline-rand ablation) with the run seed. */
static char *demo__mine(const mbpo_demo_opts *o, const char *world, uint64_t seed, int rand_negatives) {
    mbpo_mine_opts mo;
    char *dir = demo__path(o, "%s-s%llu", rand_negatives ? "mined-rand" : "mined", seed);
    char *data = demo__path_join(world, "train.jsonl"), *images = demo__path_join(world, "images");
    int ok;
    mbpo_mine_defaults(&mo);
    mo.model_dir = o->model_dir; mo.data = data; mo.image_root = images; mo.out_dir = dir;
    mo.top_k = o->top_k; mo.random_negatives = rand_negatives; mo.temperature = o->mine_temperature;
    mo.max_new_tokens = o->max_new_tokens; mo.seed = seed; mo.strict = 1; mo.log = o->log; mo.device = o->device;
    ok = dir && data && images && mbpo_mine(&mo);
    mbpo_free(data); mbpo_free(images);
    if (!ok) { mbpo_free(dir); return NULL; }
    return dir;
}

/* Train one method from the SFT model; returns its final checkpoint directory. */
static char *demo__train(const mbpo_demo_opts *o, const char *world, mbpo_mode mode, const char *mined, const char *mined_rand,
                         uint64_t seed) {
    mbpo_train_opts to;
    char *dir = demo__path(o, "train-%s-s%llu", mbpo_mode_name(mode), seed), *ck = NULL, name[64];
    char *off = demo__path_join(mode == MBPO_MODE_OFFLINE_RAND ? mined_rand : mined, "offline.jsonl");
    char *on = demo__path_join(mined, "online.jsonl"), *images = demo__path_join(world, "images");
    mbpo_train_defaults(&to);
    to.model_dir = o->model_dir; to.offline = off; to.online = on; to.image_root = images; to.out_dir = dir;
    to.mode = mode; to.adam.lr = o->lr; to.batch = o->batch; to.G = o->G; to.max_new_tokens = o->max_new_tokens;
    to.steps = o->steps; to.save_every = 0; to.iig_every = 10; to.seed = seed; to.log = o->log; to.device = o->device;
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)o->steps);
    if (dir && off && on && images && mbpo_train(&to)) ck = demo__path_join(dir, name);
    mbpo_free(dir); mbpo_free(off); mbpo_free(on); mbpo_free(images);
    return ck;
}

/* ---- pictures */

/* Adversarial triptychs, a row per pair: clean | adversarial | 128 + gain (adversarial - clean),
   the gain (>= 1, reported) making the largest change of all rows fill the range; each image
   scaled 3x (nearest), on white. The pairs' texts are appended to `texts` (markdown). */
static int demo__triptychs(const char *pairs, const char *image_root, const char *mined, const char *out_png, int rows,
                           double *gain_out, demo__sb *texts) {
    enum { S = 3, GAP = 6, MAXROWS = 8 };
    mbpo_pairs set;
    mbpo_image canvas, clean[MAXROWS], adv[MAXROWS];
    int r, ok = 0, tile, w, h, max_d = 1;
    size_t i;
    double gain;
    memset(&canvas, 0, sizeof canvas); memset(clean, 0, sizeof clean); memset(adv, 0, sizeof adv);
    if (!mbpo_pairs_load(&set, pairs, image_root)) goto end;
    if (rows > MAXROWS) rows = MAXROWS;
    if (set.n < rows) rows = (int)set.n;
    if (rows < 1) { mbpo_failure_set("%s: no pairs to draw", pairs); goto end; }
    for (r = 0; r < rows; r++) {   /* the r-th pair, its clean image and its adv_image */
        char *adv_path = set.pairs[r].adv_image ? demo__path_join(mined, set.pairs[r].adv_image) : NULL;
        int k;
        if (!adv_path) { mbpo_failure_set("%s:%lld: no adv_image", pairs, (long long)set.pairs[r].line); goto end; }
        k = mbpo_image_load(&clean[r], set.pairs[r].s.images[0]) && mbpo_image_load(&adv[r], adv_path);
        mbpo_free(adv_path);
        if (!k) goto end;
        if (clean[r].width != adv[r].width || clean[r].height != adv[r].height || clean[r].width != clean[0].width ||
            clean[r].height != clean[0].height) {
            mbpo_failure_set("%s:%lld: the images differ in size (the demo's are all the same)", pairs, (long long)set.pairs[r].line);
            goto end;
        }
        for (i = 0; i < (size_t)clean[r].width * clean[r].height * 3; i++) {
            int d = abs((int)adv[r].rgb[i] - (int)clean[r].rgb[i]);
            if (d > max_d) max_d = d;
        }
    }
    gain = 127.0 / max_d > 1 ? floor(127.0 / max_d) : 1;
    w = clean[0].width; h = clean[0].height; tile = w * S;
    if (!mbpo_image_init(&canvas, 3 * tile + 4 * GAP, rows * h * S + (rows + 1) * GAP)) goto end;
    memset(canvas.rgb, 255, (size_t)canvas.width * canvas.height * 3);
    for (r = 0; r < rows; r++) {
        int x, y, k, col;
        for (col = 0; col < 3; col++)
            for (y = 0; y < h * S; y++)
                for (x = 0; x < tile; x++)
                    for (k = 0; k < 3; k++) {
                        size_t src = ((size_t)(y / S) * w + x / S) * 3 + k;
                        double v = col == 0 ? clean[r].rgb[src] : col == 1 ? adv[r].rgb[src]
                                 : 128 + gain * ((int)adv[r].rgb[src] - (int)clean[r].rgb[src]);
                        size_t dst = ((size_t)(GAP + r * (h * S + GAP) + y) * canvas.width + GAP + col * (tile + GAP) + x) * 3 + k;
                        canvas.rgb[dst] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                    }
    }
    ok = mbpo_image_write_png(out_png, &canvas);
    *gain_out = gain;
    demo__sb_puts(texts, "\nThe mined pairs of the first rows of adversarial.png (highest IIG first):\n\n");
    for (r = 0; r < rows; r++) {
        demo__sb_printf(texts, "%d. `%s`  \n   chosen: ", r + 1, set.pairs[r].s.id);
        demo__sb_json(texts, set.pairs[r].s.answer);      /* quoted and escaped: a response may hold newlines */
        demo__sb_puts(texts, "  \n   rejected (on the PGD image): ");
        demo__sb_json(texts, set.pairs[r].rejected);
        demo__sb_puts(texts, "\n");
    }
end:
    for (r = 0; r < MAXROWS; r++) { mbpo_image_free(&clean[r]); mbpo_image_free(&adv[r]); }
    mbpo_image_free(&canvas);
    mbpo_pairs_free(&set);
    return ok;
}

/* A panel of an SVG line plot: series of (x, y) in data units mapped into the box. */
typedef struct { double x0, x1, y0, y1; int left, top, w, h; } demo__svg_box;
static double demo__svg_x(const demo__svg_box *b, double x) { return b->left + (x - b->x0) / (b->x1 - b->x0) * b->w; }
static double demo__svg_y(const demo__svg_box *b, double y) { return b->top + b->h - (y - b->y0) / (b->y1 - b->y0) * b->h; }
static void demo__svg_axes(demo__sb *sb, const demo__svg_box *b, const char *title, const char *ylabel) {
    int k;
    demo__sb_printf(sb, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", b->left, b->top, b->w, b->h);
    demo__sb_printf(sb, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n", b->left + b->w / 2, b->top - 10, title);
    demo__sb_printf(sb, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">training step</text>\n", b->left + b->w / 2, b->top + b->h + 34);
    demo__sb_printf(sb, "<text transform=\"translate(%d,%d) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
                    b->left - 42, b->top + b->h / 2, ylabel);
    for (k = 0; k <= 4; k++) {   /* 5 ticks on each axis */
        double xv = b->x0 + (b->x1 - b->x0) * k / 4, yv = b->y0 + (b->y1 - b->y0) * k / 4;
        demo__sb_printf(sb, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"11\">%.0f</text>\n", demo__svg_x(b, xv), b->top + b->h + 16, xv);
        demo__sb_printf(sb, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%.2f</text>\n", b->left - 5, demo__svg_y(b, yv) + 4, yv);
        demo__sb_printf(sb, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", b->left, b->left + b->w, demo__svg_y(b, yv), demo__svg_y(b, yv));
    }
}
static void demo__svg_line(demo__sb *sb, const demo__svg_box *b, const double *x, const double *y, int n, const char *colour,
                           const char *label, int slot) {
    int i;
    demo__sb_printf(sb, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour);
    for (i = 0; i < n; i++) demo__sb_printf(sb, "%s%.1f,%.1f", i ? " " : "", demo__svg_x(b, x[i]), demo__svg_y(b, y[i]));
    demo__sb_puts(sb, "\"/>\n");
    if (label)   /* the legend, under the panel */
        demo__sb_printf(sb, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>"
                        "<text x=\"%d\" y=\"%d\" font-size=\"12\">%s</text>\n", b->left + 150 * slot, b->left + 150 * slot + 20,
                        b->top + b->h + 56, b->top + b->h + 56, colour, b->left + 150 * slot + 26, b->top + b->h + 60, label);
}
/* y[i] = the mean of x over the last `window` points up to i. */
static void demo__moving_mean(const double *x, double *y, int64_t n, int window) {
    int64_t i, k;
    for (i = 0; i < n; i++) {
        int64_t from = i >= window - 1 ? i - (window - 1) : 0;
        double s = 0;
        for (k = from; k <= i; k++) s += x[k];
        y[i] = s / (double)(i - from + 1);
    }
}
/* The paper's Fig. 4 from metrics.jsonl: per-token IIG of the batch's chosen and rejected
   responses (every iig_every steps; faint, and a 5-point moving mean), and the verified
   reward of the online rollouts (a 20-step moving mean). */
static int demo__fig4(const char *metrics, const char *out_svg) {
    size_t len = 0, n_lines = 0, q;
    char *text = mbpo_read_file(metrics, &len), *line, *end;
    double *buf = NULL, *ix, *ic, *ir, *icm, *irm, *rx, *rw, *rm;
    int64_t ni = 0, nr = 0, i, lineno = 0;
    demo__sb sb = { NULL, 0, 0, 0 };
    int ok = 0;
    if (!text) return 0;
    for (q = 0; q < len; q++) n_lines += text[q] == '\n';
    if (!(buf = (double *)mbpo_calloc(8 * (n_lines + 1), sizeof(double)))) goto end;
    ix = buf; ic = ix + n_lines + 1; ir = ic + n_lines + 1; icm = ir + n_lines + 1; irm = icm + n_lines + 1;
    rx = irm + n_lines + 1; rw = rx + n_lines + 1; rm = rw + n_lines + 1;
    for (line = text, end = text + len; line < end; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(end - line));
        size_t k = eol ? (size_t)(eol - line) : (size_t)(end - line);
        mbpo_json *j = k ? mbpo_json_parse_line(line, k, metrics, lineno + 1) : NULL;
        lineno++;
        line = eol ? eol + 1 : end;
        if (!j) { if (k) goto end; continue; }
        {
            const mbpo_json *st = mbpo_json_get(j, "step"), *non = mbpo_json_get(j, "n_online"), *rew = mbpo_json_get(j, "reward_online"),
                            *c = mbpo_json_get(j, "iig_chosen_mean"), *r = mbpo_json_get(j, "iig_rejected_mean");
            double step = st && st->type == MBPO_JSON_NUMBER ? st->number : 0;
            if (non && non->type == MBPO_JSON_NUMBER && non->number > 0 && rew && rew->type == MBPO_JSON_NUMBER && nr <= (int64_t)n_lines) {
                rx[nr] = step; rw[nr++] = rew->number;
            }
            if (c && r && c->type == MBPO_JSON_NUMBER && r->type == MBPO_JSON_NUMBER && ni <= (int64_t)n_lines) {
                ix[ni] = step; ic[ni] = c->number; ir[ni++] = r->number;
            }
        }
        mbpo_json_free(j);
    }
    demo__moving_mean(rw, rm, nr, 20);
    demo__moving_mean(ic, icm, ni, 5);
    demo__moving_mean(ir, irm, ni, 5);
    demo__sb_puts(&sb, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" height=\"350\" font-family=\"sans-serif\">\n"
                       "<rect width=\"860\" height=\"350\" fill=\"white\"/>\n");
    if (ni > 0) {
        demo__svg_box b = { 0, 1, 0, 1, 70, 40, 330, 230 };
        double lo = ic[0], hi = ic[0];
        for (i = 0; i < ni; i++) { lo = fmin(lo, fmin(ic[i], ir[i])); hi = fmax(hi, fmax(ic[i], ir[i])); }
        b.x0 = 0; b.x1 = ix[ni - 1] > 0 ? ix[ni - 1] : 1;
        b.y0 = floor(fmin(lo, 0.0)); b.y1 = ceil(hi) > b.y0 ? ceil(hi) : b.y0 + 1;
        demo__svg_axes(&sb, &b, "IIG of the batch's chosen and rejected", "IIG per token (nats)");
        demo__svg_line(&sb, &b, ix, ic, (int)ni, "#aec7e8", NULL, 0);
        demo__svg_line(&sb, &b, ix, ir, (int)ni, "#ff9896", NULL, 0);
        demo__svg_line(&sb, &b, ix, icm, (int)ni, "#1f77b4", "chosen", 0);
        demo__svg_line(&sb, &b, ix, irm, (int)ni, "#d62728", "rejected", 1);
    }
    if (nr > 0) {
        demo__svg_box b = { 0, 1, 0, 1, 500, 40, 330, 230 };
        b.x1 = rx[nr - 1] > 0 ? rx[nr - 1] : 1;
        demo__svg_axes(&sb, &b, "verified reward of the rollouts", "mean reward");
        demo__svg_line(&sb, &b, rx, rm, (int)nr, "#2ca02c", "online prompts' mean reward", 0);
    }
    demo__sb_puts(&sb, "</svg>\n");
    ok = !sb.failed && mbpo_write_file_atomic(out_svg, sb.s, sb.n);
end:
    mbpo_free(text); mbpo_free(sb.s); mbpo_free(buf);
    return ok;
}

/* ---- the table */

/* One row of the table: a number from a cell. */
enum { DEMO__ROWS = 16 };
static double demo__metric(const demo__cell *c, int row) {
    const mbpo_synth_metrics *p = &c->split[0], *q = &c->split[1];
#define DEMO__PCT(a, b) ((b) ? 100.0 * (double)(a) / (double)(b) : NAN)   /* n/a: nothing to count */
    switch (row) {
    case 0: return c->iig_c;
    case 1: return c->iig_r;
    case 2: return DEMO__PCT(p->yesno_correct, p->n_yesno);
    case 3: return DEMO__PCT(q->yesno_correct, q->n_yesno);
    case 4: return DEMO__PCT(p->mc_correct, p->n_mc);
    case 5: return DEMO__PCT(q->mc_correct, q->n_mc);
    case 6: return DEMO__PCT(p->open_correct, p->n_open);
    case 7: return DEMO__PCT(q->open_correct, q->n_open);
    case 8: return DEMO__PCT(p->circle_correct, p->n_circle);
    case 9: return DEMO__PCT(q->circle_correct, q->n_circle);
    case 10: return DEMO__PCT(p->instances_halluc, p->instances);
    case 11: return DEMO__PCT(q->instances_halluc, q->instances);
    case 12: return DEMO__PCT(p->captions_halluc, p->n_captions);
    case 13: return DEMO__PCT(q->captions_halluc, q->n_captions);
    case 14: return DEMO__PCT(p->scene_covered, p->scene_shapes);
    default: return DEMO__PCT(q->scene_covered, q->scene_shapes);
    }
#undef DEMO__PCT
}
static const char *const demo__rows[DEMO__ROWS] = {
    "IIG per token, chosen (mined pairs) ↑", "IIG per token, rejected (mined pairs)",
    "yes/no accuracy, prior split (%) ↑", "yes/no accuracy, counter-prior split (%) ↑",
    "multiple-choice accuracy, prior (%) ↑", "multiple-choice accuracy, counter-prior (%) ↑",
    "open colour question, prior (%) ↑", "open colour question, counter-prior (%) ↑",
    "  of which circles (red in 90 %), prior (%) ↑", "  of which circles (never red), counter-prior (%) ↑",
    "CHAIR_i captions, prior (%) ↓", "CHAIR_i captions, counter-prior (%) ↓",
    "CHAIR_s captions, prior (%) ↓", "CHAIR_s captions, counter-prior (%) ↓",
    "caption coverage, prior (%) ↑", "caption coverage, counter-prior (%) ↑" };

/* Markdown: a row per metric, a column per method; over several seeds a cell is
   "mean ± sample standard deviation". cells[m * n_seeds + s]; method 0 (SFT) has one value. */
static void demo__table(demo__sb *sb, const char *const *names, int n_methods, const demo__cell *cells, int n_seeds) {
    int row, m, s;
    demo__sb_puts(sb, "| |");
    for (m = 0; m < n_methods; m++) demo__sb_printf(sb, " %s |", names[m]);
    demo__sb_puts(sb, "\n|---|");
    for (m = 0; m < n_methods; m++) demo__sb_puts(sb, "---:|");
    demo__sb_puts(sb, "\n");
    for (row = 0; row < DEMO__ROWS; row++) {
        demo__sb_printf(sb, "| %s |", demo__rows[row]);
        for (m = 0; m < n_methods; m++) {
            int k = m == 0 ? 1 : n_seeds;
            double mean = 0, var = 0;
            for (s = 0; s < k; s++) mean += demo__metric(&cells[m * n_seeds + s], row) / k;
            for (s = 0; s < k; s++) { double d = demo__metric(&cells[m * n_seeds + s], row) - mean; var += d * d; }
            if (isnan(mean)) demo__sb_puts(sb, " n/a |");
            else if (k > 1) demo__sb_printf(sb, row < 2 ? " %.3f ± %.3f |" : " %.1f ± %.1f |", mean, sqrt(var / (k - 1)));
            else demo__sb_printf(sb, row < 2 ? " %.3f |" : " %.1f |", mean);
        }
        demo__sb_puts(sb, "\n");
    }
}

MBPODEF int mbpo_demo(const mbpo_demo_opts *o) {
    static const mbpo_mode modes[4] = { MBPO_MODE_OFFLINE_RAND, MBPO_MODE_OFFLINE, MBPO_MODE_ONLINE, MBPO_MODE_MBPO };
    static const char *const names[5] = { "SFT (start)", "offline-rand", "offline", "online", "MBPO" };
    const char *col_names[5];
    double t0 = mbpo_now();
    int n_seeds = o->ablation ? o->seeds : 1, n_methods = o->ablation ? 5 : 2, ok = 0, s, m;
    demo__cell *cells = n_seeds >= 1 && n_seeds <= 1000 ? (demo__cell *)mbpo_calloc((size_t)(5 * n_seeds), sizeof(demo__cell)) : NULL;
    char *world = demo__path_join(o->out_dir, "world"), *pairs = NULL, *mined1 = NULL, *p = NULL;
    demo__sb sb = { NULL, 0, 0, 0 };
    char what[256];
    if (n_seeds < 1 || n_seeds > 1000) { mbpo_free(cells); mbpo_free(world); return mbpo_failure_set("mbpo_demo: seeds must be 1..1000"); }
    if (!cells || !world) goto end;
    if (!(p = demo__path_join(o->model_dir, "model.safetensors"))) goto end;
    if (!demo__file_exists(p)) {
        mbpo_failure_set("%s: no model.safetensors - the demo starts from the shipped SFT model (make tiny-model rebuilds it)", o->model_dir);
        goto end;
    }
    mbpo_free(p); p = NULL;
    if (!mbpo_mkdir(o->out_dir) || !demo__settings(o)) goto end;
    snprintf(what, sizeof what, "1. the shapes world (seed %llu: %d pool images, %d per test split) in %s", (unsigned long long)o->world_seed,
             o->n_pool, o->n_test, world);
    demo__stage(o, what, t0);
    if (!demo__world(o, world)) goto end;
    /* the pairs every model's IIG is measured on: those mined with seed 1 */
    demo__stage(o, "2. mining with the SFT model (seed 1): IIG of every open answer -> top-k chosen -> PGD -> rejected", t0);
    if (!(mined1 = demo__mine(o, world, 1, 0)) || !(pairs = demo__path_join(mined1, "offline.jsonl"))) goto end;
    demo__stage(o, "3. scoring the SFT model on test_prior and test_counter", t0);
    if (!demo__measure(o, world, o->model_dir, "sft", pairs, &cells[0])) goto end;
    for (s = 1; s <= n_seeds; s++) {
        char *mined = s == 1 ? mined1 : NULL, *mined_rand = NULL;
        if (!mined) {
            snprintf(what, sizeof what, "   mining, seed %d", s);
            demo__stage(o, what, t0);
            if (!(mined = demo__mine(o, world, (uint64_t)s, 0))) goto end;
        }
        if (o->ablation) {
            snprintf(what, sizeof what, "   mining with random-noise negatives (offline-rand), seed %d", s);
            demo__stage(o, what, t0);
            if (!(mined_rand = demo__mine(o, world, (uint64_t)s, 1))) { if (mined != mined1) mbpo_free(mined); goto end; }
        }
        for (m = o->ablation ? 0 : 3; m < 4; m++) {
            char *ck, name[64];
            snprintf(what, sizeof what, "4. training %s from the SFT model, seed %d (%lld steps)", mbpo_mode_name(modes[m]),
                     s, (long long)o->steps);
            demo__stage(o, what, t0);
            ck = demo__train(o, world, modes[m], mined, mined_rand, (uint64_t)s);
            snprintf(name, sizeof name, "%s-s%d", mbpo_mode_name(modes[m]), s);
            snprintf(what, sizeof what, "5. scoring %s", name);
            if (ck) demo__stage(o, what, t0);
            if (!ck || !demo__measure(o, world, ck, name, pairs, &cells[(o->ablation ? m + 1 : 1) * n_seeds + (s - 1)])) {
                mbpo_free(ck); mbpo_free(mined_rand); if (mined != mined1) mbpo_free(mined);
                goto end;
            }
            mbpo_free(ck);
        }
        mbpo_free(mined_rand);
        if (mined != mined1) mbpo_free(mined);
    }
    /* the table */
    for (m = 0; m < n_methods; m++) col_names[m] = o->ablation ? names[m] : m == 0 ? names[0] : names[4];
    demo__sb_printf(&sb, "%s: the tiny model %s, world seed %llu (%d pool images, %d per test split), top-k %d, %lld steps at lr %g, "
                    "batch %d, G %d%s\n\n", o->ablation ? "Ablation" : "Demo", o->model_dir, (unsigned long long)o->world_seed, o->n_pool,
                    o->n_test, o->top_k, (long long)o->steps, o->lr, o->batch, o->G, o->ablation ? "" : ", seed 1");
    if (o->ablation) demo__sb_printf(&sb, "Mean ± standard deviation over seeds 1..%d (mining and training seeds); the SFT model is scored once (greedy).\n\n", n_seeds);
    demo__table(&sb, col_names, n_methods, cells, n_seeds);
    if (!o->ablation) {   /* the pictures, and the pairs the triptychs show */
        char *png = demo__path_join(o->out_dir, "adversarial.png"), *images = demo__path_join(world, "images");
        char *metrics = demo__path(o, "%s-s%llu/metrics.jsonl", "train-mbpo", 1), *svg = demo__path_join(o->out_dir, "fig4.svg");
        double gain = 1;
        int k = png && images && metrics && svg && demo__triptychs(pairs, images, mined1, png, 4, &gain, &sb) &&
                demo__fig4(metrics, svg);
        if (k)
            demo__sb_printf(&sb, "\nPictures: %s (rows as above: clean | adversarial | 128 + %g x difference), %s (IIG of chosen "
                            "and rejected, and the online reward, over the steps)\n", png, gain, svg);
        mbpo_free(png); mbpo_free(images); mbpo_free(metrics); mbpo_free(svg);
        if (!k) goto end;
    }
    if (sb.failed || !(p = demo__path_join(o->out_dir, o->ablation ? "ablation.md" : "results.md")) || !mbpo_write_file_atomic(p, sb.s, sb.n)) goto end;
    if (o->report) { fprintf(o->report, "\n%s\n", sb.s); fflush(o->report); }
    if (o->report) fprintf(o->report, "table: %s; %s took %.0f s\n", p, o->ablation ? "the ablation" : "the demo", mbpo_now() - t0);
    ok = 1;
end:
    mbpo_free(cells); mbpo_free(world); mbpo_free(pairs); mbpo_free(mined1); mbpo_free(p); mbpo_free(sb.s);
    return ok;
}


#endif /* MBPO_DEMO_IMPLEMENTATION_DONE */
#endif /* MBPO_DEMO_IMPLEMENTATION */
