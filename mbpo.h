/* mbpo.h - v0.1 - Modality-Balancing Preference Optimization for Qwen2-VL, in one C header.

   Aligns a vision-language model with MBPO (Liu et al., 2025): Image Information Gain,
   adversarial negative mining with PGD, and a hybrid offline/online GRPO objective -
   with the whole Qwen2-VL forward and backward pass written out in plain C.

   USAGE
     In exactly one C or C++ file:
         #define MBPO_IMPLEMENTATION
         #include "mbpo.h"
     Everywhere else just #include "mbpo.h". Build with OpenMP for threads:
         cc -O2 -fopenmp my.c -lm
     Define MBPO_STATIC before the include to make every function static (private to one file).

   TABLE OF CONTENTS (the implementation follows the same order: the order data flows)
     1. base     failure reasons, allocation, RNG, JSON reader, safetensors read/write,
                 atomic file writes
     2. inputs   (later: tokenizer, chat template, image preprocessing and its adjoint)
     3. model    config, parameter table, ops (forward/backward), vision tower, merger,
                 M-RoPE, decoder, the token log-prob machine
     4. objectives (later: IIG, PGD, verifiers, GRPO, AdamW)
     5. runs       (later: mbpo_mine, mbpo_train, mbpo_score)

   COMPILE-TIME OPTIONS
     MBPO_IMPLEMENTATION   emit the implementation in this translation unit
     MBPO_STATIC           declare every public function static
     MBPO_MALLOC(n) / MBPO_FREE(p)   override the allocator (both or neither)
     MBPO_CUDA             (nvcc) take the ops from mbpo_cuda.cuh - see that file for status
     MBPO_MAX_JSON_DEPTH   nesting limit of the JSON reader (default 256)
     MBPO_MAX_ST_HEADER    largest safetensors header accepted, bytes (default 100 MB)

   LICENSE: MIT, see the end of the file.
*/
#if defined(MBPO_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
/* fsync/fileno/rename for atomic writes are POSIX; this must precede every system header,
   so include mbpo.h first in the implementation file (or define _POSIX_C_SOURCE yourself). */
#define _POSIX_C_SOURCE 200809L
#endif
#if defined(MBPO_IMPLEMENTATION) && !defined(_WIN32) && !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64   /* shards of 7B checkpoints exceed 2 GB, also on 32-bit hosts */
#endif

#ifndef MBPO_H
#define MBPO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef MBPO_STATIC
#define MBPODEF static
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function"   /* a file need not call every function */
#endif
#else
#define MBPODEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================================
   DOCUMENTATION

   Dimension legend (used in every shape comment):
     B  sequences in a batch       T  tokens (all sequences packed end to end)
     P  vision patches (all images) C  channels / input width      OC output width
     E  vision embed dim            H  LM hidden size              I  LM MLP width
     NH / NKV query / key-value heads                              HS head size
     V  vocabulary                  G  rollouts per prompt         N  target tokens
     PIX = 3 * temporal_patch * patch * patch = 1176, the width of one pixel_values row

   Ownership: every _init and _load function has a _free; structs returned by value own nothing.
   Errors: functions that can fail return 0 / NULL and set mbpo_failure_reason(), a message
   naming the file (and line, column or tensor) and what was expected. The library never
   calls exit() and never prints except where a function says so.
   Threads: ops use OpenMP when compiled with it; every loop writes disjoint outputs in a
   fixed order, so results are bit-identical from run to run for a given thread count.
   ========================================================================================== */

/* ------------------------------------------------------------------ 1. base */

MBPODEF const char *mbpo_failure_reason(void);   /* last failure on this thread, or "" */

/* Explicit RNG state (xoshiro256**, seeded by splitmix64). */
typedef struct { uint64_t s[4]; } mbpo_rng;
MBPODEF void     mbpo_rng_seed(mbpo_rng *rng, uint64_t seed);
MBPODEF uint64_t mbpo_rng_u64(mbpo_rng *rng);
MBPODEF double   mbpo_rng_uniform(mbpo_rng *rng);   /* [0, 1) with 53 random bits */
MBPODEF double   mbpo_rng_normal(mbpo_rng *rng);    /* N(0, 1), Box-Muller */

MBPODEF double mbpo_now(void);                      /* monotonic wall clock, seconds */

/* Strict JSON (RFC 8259) reader. The tree owns all its memory; free the root only. */
typedef enum {
    MBPO_JSON_NULL, MBPO_JSON_FALSE, MBPO_JSON_TRUE, MBPO_JSON_NUMBER,
    MBPO_JSON_STRING, MBPO_JSON_ARRAY, MBPO_JSON_OBJECT
} mbpo_json_type;
typedef struct mbpo_json {
    mbpo_json_type type;
    double number;            /* NUMBER */
    int is_int;               /* NUMBER written without fraction or exponent, fits int64 */
    int64_t integer;          /* NUMBER when is_int */
    char *string;             /* STRING: UTF-8, NUL-terminated (may contain NUL: see len) */
    size_t len;               /* STRING byte length */
    size_t count;             /* ARRAY / OBJECT: number of items */
    struct mbpo_json *items;  /* ARRAY / OBJECT items */
    char **keys;              /* OBJECT keys, parallel to items */
    int line, col;            /* where the value starts (1-based), for messages */
} mbpo_json;
/* Parse `len` bytes; `name` (a file name) is used in error messages. NULL on error. */
MBPODEF mbpo_json *mbpo_json_parse(const char *text, size_t len, const char *name);
MBPODEF mbpo_json *mbpo_json_parse_file(const char *path);
MBPODEF void       mbpo_json_free(mbpo_json *root);
MBPODEF const mbpo_json *mbpo_json_get(const mbpo_json *object, const char *key); /* or NULL */

/* safetensors: an 8-byte little-endian header length, a JSON header, then raw tensor data. */
typedef enum {
    MBPO_DT_F32, MBPO_DT_F16, MBPO_DT_BF16, MBPO_DT_F64,
    MBPO_DT_I64, MBPO_DT_I32, MBPO_DT_I16, MBPO_DT_I8, MBPO_DT_U8, MBPO_DT_BOOL
} mbpo_dtype;
#define MBPO_ST_MAX_DIMS 8
typedef struct {
    char *name;
    mbpo_dtype dtype;
    int ndim;
    int64_t shape[MBPO_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;      /* byte offsets relative to the start of the data section */
    int file;                 /* index into mbpo_st.paths (sharded checkpoints) */
} mbpo_st_tensor;
typedef struct {
    int n_files;
    char **paths;             /* one per shard */
    uint64_t *data_start;     /* per shard: 8 + header length */
    size_t n_tensors;
    mbpo_st_tensor *tensors;  /* sorted by name */
} mbpo_st;
/* Open one .safetensors file, validating its header against the file size. */
MBPODEF int  mbpo_st_open(mbpo_st *st, const char *path);
/* Open a model directory: model.safetensors, or model.safetensors.index.json and its shards. */
MBPODEF int  mbpo_st_open_dir(mbpo_st *st, const char *dir);
MBPODEF void mbpo_st_close(mbpo_st *st);
MBPODEF const mbpo_st_tensor *mbpo_st_find(const mbpo_st *st, const char *name);
/* Read a floating tensor (F32/F16/BF16/F64) converted to float32 into dst[numel]. */
MBPODEF int  mbpo_st_read_f32(const mbpo_st *st, const mbpo_st_tensor *t, float *dst);
/* Read an integer tensor (I64/I32/I16/I8/U8/BOOL) converted to int64 into dst[numel]. */
MBPODEF int  mbpo_st_read_i64(const mbpo_st *st, const mbpo_st_tensor *t, int64_t *dst);
MBPODEF size_t mbpo_dtype_size(mbpo_dtype dt);
MBPODEF const char *mbpo_dtype_name(mbpo_dtype dt);

/* One tensor to write: float32 source data, stored as `dtype` (F32, BF16 or F16). */
typedef struct {
    const char *name;
    mbpo_dtype dtype;
    int ndim;
    int64_t shape[MBPO_ST_MAX_DIMS];
    const float *data;
} mbpo_st_entry;
/* Write a .safetensors file atomically (temp file, fsync, rename): all or nothing. */
MBPODEF int mbpo_st_write(const char *path, const mbpo_st_entry *entries, size_t n);
/* Write `len` bytes to `path` atomically. */
MBPODEF int mbpo_write_file_atomic(const char *path, const void *data, size_t len);
/* Read a whole file (NUL-terminated for convenience). Caller frees with mbpo_free. */
MBPODEF char *mbpo_read_file(const char *path, size_t *len);
MBPODEF void  mbpo_free(void *p);

/* float <-> bf16 / f16 (round to nearest even; NaN kept quiet) */
MBPODEF float    mbpo_bf16_to_f32(uint16_t h);
MBPODEF uint16_t mbpo_f32_to_bf16(float f);
MBPODEF float    mbpo_f16_to_f32(uint16_t h);
MBPODEF uint16_t mbpo_f32_to_f16(float f);

/* ------------------------------------------------------------------ 3. model */

/* Qwen2-VL configuration (config.json, transformers 4.x and 5.x layouts). */
typedef struct {
    /* language model */
    int64_t vocab_size, hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    double rms_norm_eps, rope_theta;
    int mrope_section[3];            /* frequency slots taken from (t, h, w) positions */
    int tie_word_embeddings;
    int64_t max_position_embeddings;
    int64_t image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
    int64_t bos_token_id, eos_token_id, pad_token_id;   /* -1 when absent */
    /* vision tower */
    int64_t v_depth, v_embed_dim, v_heads, v_mlp_hidden, v_patch, v_temporal_patch, v_merge,
            v_in_channels;
    double v_rope_theta;             /* hard-coded 10000 in transformers */
} mbpo_config;
MBPODEF int mbpo_config_load(mbpo_config *cfg, const char *path);        /* a config.json */
MBPODEF int mbpo_config_from_json(mbpo_config *cfg, const mbpo_json *root, const char *name);
/* Render as a config.json in the transformers 4.x layout. Caller frees with mbpo_free. */
MBPODEF char *mbpo_config_to_json(const mbpo_config *cfg);
MBPODEF int64_t mbpo_config_pix(const mbpo_config *cfg);   /* width of a pixel_values row */

/* Parameter table: every tensor at a 256-byte-aligned offset of one float buffer, so the
   parameters, their gradients and the optimizer moments share one layout. Names are the
   Hugging Face hub names ("visual.blocks.0.attn.qkv.weight", "model.layers.3.mlp.up_proj.weight"). */
typedef struct {
    char *name;
    int ndim;
    int64_t shape[5];
    int64_t numel;
    size_t offset;                   /* in floats */
} mbpo_param_info;
typedef struct {
    size_t n;
    mbpo_param_info *info;
    size_t total_floats;             /* buffer length including alignment padding */
    int64_t n_params;                /* sum of numel (tied head counted once) */
} mbpo_param_table;
MBPODEF int  mbpo_param_table_build(mbpo_param_table *table, const mbpo_config *cfg);
MBPODEF void mbpo_param_table_free(mbpo_param_table *table);
MBPODEF const mbpo_param_info *mbpo_param_find(const mbpo_param_table *table, const char *name);

/* Typed pointers into a buffer with the table's layout. */
typedef struct {
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} mbpo_vision_block;
typedef struct {
    float *in_norm_w, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w;
    float *post_norm_w, *gate_w, *up_w, *down_w;
} mbpo_decoder_layer;
typedef struct {
    float *patch_embed_w;            /* (E, PIX) - the Conv3d kernel flattened */
    mbpo_vision_block *vblocks;      /* [v_depth] */
    float *merger_ln_w, *merger_ln_b, *merger_fc1_w, *merger_fc1_b, *merger_fc2_w, *merger_fc2_b;
    float *embed;                    /* (V, H) */
    mbpo_decoder_layer *layers;      /* [n_layers] */
    float *norm_w;                   /* (H) */
    float *lm_head;                  /* (V, H); == embed when tied */
} mbpo_weights;

/* A packed batch: B token sequences laid end to end (no padding), the images they use, and
   which tokens are targets. Sequences may share an image (G rollouts of one prompt): the
   shared image runs through the vision tower once and its gradients are summed. */
typedef struct {
    int n_seqs;                      /* B */
    const int32_t *ids;              /* (T) token ids of all sequences */
    const int64_t *seq_offsets;      /* (B+1) sequence s is ids[seq_offsets[s] .. seq_offsets[s+1]) */
    const uint8_t *target;           /* (T) 1 where logp(ids[t] | ids[<t]) is wanted; never at a
                                        sequence's first token */
    int n_images;
    const int32_t *grid_thw;         /* (n_images, 3) */
    const float *pixel_values;       /* (P, PIX) rows of all images in order */
    const int32_t *image_refs;       /* the k-th image run (maximal run of image_token_id) of
                                        sequence s uses image image_refs[image_ref_offsets[s] + k] */
    const int64_t *image_ref_offsets;/* (B+1) */
} mbpo_batch;

typedef struct mbpo_acts mbpo_acts;   /* activation arena (opaque) */
typedef struct {
    mbpo_config cfg;
    mbpo_param_table table;
    float *params;                   /* (table.total_floats) */
    float *grads;                    /* same layout; NULL until mbpo_model_plan(.., want_grads) */
    mbpo_weights w, g;               /* typed views of params and grads */
    mbpo_acts *acts;                 /* sized by mbpo_model_plan */
} mbpo_model;

/* Allocate a model for cfg with zeroed parameters. */
MBPODEF int  mbpo_model_init(mbpo_model *m, const mbpo_config *cfg);
/* Load config.json and the weights of a Hugging Face model directory (either key layout). */
MBPODEF int  mbpo_model_load(mbpo_model *m, const char *dir);
/* Write config.json + model.safetensors (hub layout) into dir, atomically per file. */
MBPODEF int  mbpo_model_save(const mbpo_model *m, const char *dir, mbpo_dtype dtype);
MBPODEF void mbpo_model_free(mbpo_model *m);
/* Size every activation buffer up front for batches of at most max_tokens tokens,
   max_patches patches and max_targets targets; allocate gradients when want_grads.
   Prints nothing; mbpo_model_plan_bytes() reports what was allocated. */
MBPODEF int  mbpo_model_plan(mbpo_model *m, int64_t max_tokens, int64_t max_patches,
                             int64_t max_targets, int want_grads);
MBPODEF size_t mbpo_model_plan_bytes(const mbpo_model *m);
MBPODEF void mbpo_model_zero_grad(mbpo_model *m);
/* The token log-prob machine (DESIGN.md section 2).
   forward: logp[n] = log softmax(logits at t-1)[ids[t]] for every target t, in order.
   Returns the number of targets N, or -1 on error. */
MBPODEF int64_t mbpo_model_forward(mbpo_model *m, const mbpo_batch *batch, float *logp);
/* backward: given dlogp (N) = dL/dlogp, accumulate dL/dparams into m->grads (when planned
   with want_grads) and, when dpixel_values is not NULL, write dL/dpixel_values (P, PIX).
   Must follow mbpo_model_forward on the same batch. Returns 1, or 0 on error. */
MBPODEF int  mbpo_model_backward(mbpo_model *m, const mbpo_batch *batch, const float *dlogp,
                                 float *dpixel_values);

/* M-RoPE position ids of one sequence (QWEN2VL.md 3.4): pos (3, S) as t, h, w rows.
   grid_thw lists the grids of the sequence's image runs in order. Returns rope_delta
   through *delta. 1 on success. */
MBPODEF int mbpo_rope_index(const mbpo_config *cfg, const int32_t *ids, int64_t S,
                            const int32_t *grid_thw, int n_images, int64_t *pos, int64_t *delta);

/* Intermediate results of the last forward, for tests and inspection (pointers into the
   activation arena, valid until the next forward). Any may be NULL. */
typedef struct {
    const float *patch_embed;        /* (P, E) */
    const float *vision_block_out;   /* (v_depth, P, E): output of block l at l*P*E */
    const float *image_features;     /* (P/merge^2, H) */
    const float *inputs_embeds;      /* (T, H) */
    const float *layer_out;          /* (n_layers, T, H) */
    const float *final_norm;         /* (T, H) */
    const int64_t *position_ids;     /* (3, T) */
    const float *dinputs_embeds;     /* (T, H), after a backward */
} mbpo_trace;
MBPODEF void mbpo_model_trace(const mbpo_model *m, mbpo_trace *trace);
/* Full logits (T, V) of the last forward, recomputed from the final norm (for tests). */
MBPODEF int mbpo_model_logits(const mbpo_model *m, int64_t t, float *logits_row);

#ifdef __cplusplus
}
#endif
#endif /* MBPO_H */

/* ==========================================================================================
   IMPLEMENTATION
   ========================================================================================== */
#ifdef MBPO_IMPLEMENTATION
#ifndef MBPO_IMPLEMENTATION_DONE
#define MBPO_IMPLEMENTATION_DONE

#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(MBPO_MALLOC) != defined(MBPO_FREE)
#error "define both MBPO_MALLOC and MBPO_FREE, or neither"
#endif
#ifndef MBPO_MALLOC
#define MBPO_MALLOC(n) malloc(n)
#define MBPO_FREE(p) free(p)
#endif
#ifndef MBPO_MAX_JSON_DEPTH
#define MBPO_MAX_JSON_DEPTH 256
#endif
#ifndef MBPO_MAX_ST_HEADER
#define MBPO_MAX_ST_HEADER (100u * 1024u * 1024u)
#endif

/* OpenMP through _Pragma so builds without -fopenmp see no unknown pragmas. */
#ifdef _OPENMP
#define MBPO__OMP(x) _Pragma(x)
#else
#define MBPO__OMP(x)
#endif

#if defined(__cplusplus)
#define MBPO__THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define MBPO__THREAD_LOCAL __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define MBPO__THREAD_LOCAL __thread
#else
#define MBPO__THREAD_LOCAL
#endif

/* ------------------------------------------------------------------ 1. base: failures */

static MBPO__THREAD_LOCAL char mbpo__reason[1024];

MBPODEF const char *mbpo_failure_reason(void) { return mbpo__reason; }

/* Always returns 0 so that `return mbpo__fail(...)` reads as a failed call. */
static int mbpo__fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mbpo__reason, sizeof mbpo__reason, fmt, ap);
    va_end(ap);
    return 0;
}

/* ------------------------------------------------------------------ 1. base: memory */

/* Size arithmetic that cannot wrap: returns 0 (and sets a reason) on overflow. */
static int mbpo__mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return mbpo__fail("size overflow (%zu x %zu)", a, b);
    *out = a * b;
    return 1;
}

/* 256-byte aligned allocation on top of MBPO_MALLOC: the original pointer is kept just
   below the aligned block. */
static void *mbpo__alloc(size_t bytes) {
    size_t total = bytes + 256 + sizeof(void *);
    unsigned char *raw, *p;
    if (total < bytes) { mbpo__fail("size overflow allocating %zu bytes", bytes); return NULL; }
    raw = (unsigned char *)MBPO_MALLOC(total);
    if (!raw) { mbpo__fail("out of memory allocating %zu bytes", bytes); return NULL; }
    p = raw + sizeof(void *);
    p += (256 - ((uintptr_t)p & 255)) & 255;
    ((void **)p)[-1] = raw;
    return p;
}
static void *mbpo__calloc(size_t n, size_t size) {
    size_t bytes = 0;
    void *p;
    if (!mbpo__mul_size(n, size, &bytes)) return NULL;
    p = mbpo__alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}
MBPODEF void mbpo_free(void *p) {
    if (p) MBPO_FREE(((void **)p)[-1]);
}
static char *mbpo__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)mbpo__alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------------ 1. base: RNG */

static uint64_t mbpo__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
MBPODEF void mbpo_rng_seed(mbpo_rng *rng, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) rng->s[i] = mbpo__splitmix64(&seed);
}
static uint64_t mbpo__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
MBPODEF uint64_t mbpo_rng_u64(mbpo_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = mbpo__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = mbpo__rotl(s[3], 45);
    return result;
}
MBPODEF double mbpo_rng_uniform(mbpo_rng *rng) {
    return (double)(mbpo_rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
}
MBPODEF double mbpo_rng_normal(mbpo_rng *rng) {
    double u1 = 1.0 - mbpo_rng_uniform(rng), u2 = mbpo_rng_uniform(rng); /* u1 in (0, 1] */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

MBPODEF double mbpo_now(void) {
#if !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

/* ------------------------------------------------------------------ 1. base: files */

/* 64-bit seek/tell: long is 32 bits on Windows and on 32-bit hosts. */
static int mbpo__seek(FILE *f, uint64_t offset) {
#if defined(_WIN32)
    return _fseeki64(f, (__int64)offset, SEEK_SET);
#else
    return fseeko(f, (off_t)offset, SEEK_SET);
#endif
}
static int64_t mbpo__file_size(FILE *f) {
    int64_t n;
#if defined(_WIN32)
    if (_fseeki64(f, 0, SEEK_END) != 0) return -1;
    n = (int64_t)_ftelli64(f);
#else
    if (fseeko(f, 0, SEEK_END) != 0) return -1;
    n = (int64_t)ftello(f);
#endif
    if (mbpo__seek(f, 0) != 0) return -1;
    return n;
}

MBPODEF char *mbpo_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    int64_t size;
    if (!f) { mbpo__fail("%s: cannot open (%s)", path, strerror(errno)); return NULL; }
    if ((size = mbpo__file_size(f)) < 0 || (uint64_t)size >= SIZE_MAX) {
        fclose(f); mbpo__fail("%s: cannot determine the file size", path); return NULL;
    }
    buf = (char *)mbpo__alloc((size_t)size + 1);
    if (!buf) { fclose(f); return NULL; }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f); mbpo_free(buf); mbpo__fail("%s: read error", path); return NULL;
    }
    fclose(f);
    buf[size] = 0;
    if (len) *len = (size_t)size;
    return buf;
}

/* Write to "<path>.tmp.<pid>", flush to disk, then rename over path: a reader sees the old
   file or the new one, never half of one. */
static FILE *mbpo__atomic_open(const char *path, char *tmp, size_t tmp_size) {
    FILE *f;
#if !defined(_WIN32)
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
#else
    snprintf(tmp, tmp_size, "%s.tmp", path);
#endif
    f = fopen(tmp, "wb");
    if (!f) mbpo__fail("%s: cannot create (%s)", tmp, strerror(errno));
    return f;
}
static int mbpo__atomic_close(FILE *f, const char *tmp, const char *path, int ok) {
    if (ok && fflush(f) != 0) ok = mbpo__fail("%s: write error (%s)", path, strerror(errno));
#if !defined(_WIN32)
    if (ok && fsync(fileno(f)) != 0) ok = mbpo__fail("%s: fsync failed (%s)", path, strerror(errno));
#endif
    if (fclose(f) != 0 && ok) ok = mbpo__fail("%s: close failed (%s)", path, strerror(errno));
    if (ok && rename(tmp, path) != 0) ok = mbpo__fail("%s: rename failed (%s)", path, strerror(errno));
    if (!ok) remove(tmp);
    return ok;
}
MBPODEF int mbpo_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    FILE *f = mbpo__atomic_open(path, tmp, sizeof tmp);
    int ok;
    if (!f) return 0;
    ok = fwrite(data, 1, len, f) == len;
    if (!ok) mbpo__fail("%s: write error (%s)", path, strerror(errno));
    return mbpo__atomic_close(f, tmp, path, ok);
}

/* ------------------------------------------------------------------ 1. base: JSON */

typedef struct {
    const char *s, *end, *name;
    int line;
    const char *line_start;
    int depth;
} mbpo__jp;

static int mbpo__jfail(mbpo__jp *p, const char *at, const char *what) {
    int col = (int)(at - p->line_start) + 1;
    return mbpo__fail("%s:%d:%d: invalid JSON: %s", p->name, p->line, col, what);
}
static void mbpo__jws(mbpo__jp *p) {
    while (p->s < p->end) {
        char c = *p->s;
        if (c == '\n') { p->line++; p->line_start = p->s + 1; }
        else if (c != ' ' && c != '\t' && c != '\r') break;
        p->s++;
    }
}
static void mbpo__json_clear(mbpo_json *v) {
    size_t i;
    if (!v) return;
    if (v->type == MBPO_JSON_ARRAY || v->type == MBPO_JSON_OBJECT) {
        for (i = 0; i < v->count; i++) {
            mbpo__json_clear(&v->items[i]);
            if (v->keys) mbpo_free(v->keys[i]);
        }
        mbpo_free(v->items);
        mbpo_free(v->keys);
    }
    mbpo_free(v->string);
    memset(v, 0, sizeof *v);
}
static int mbpo__jhex(const char *s, unsigned *out) {
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}
static size_t mbpo__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}
/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid (overlongs, surrogates,
   > U+10FFFF rejected). */
static int mbpo__utf8_valid(const unsigned char *s, const unsigned char *end) {
    unsigned c = s[0], cp;
    int n, i;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) n = 3;
    else if (c >= 0xF0 && c <= 0xF4) n = 4;
    else return 0;
    if (end - s < n) return 0;
    cp = c & (0x7F >> n);
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 63);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return n;
}
static int mbpo__jstring(mbpo__jp *p, char **out, size_t *out_len) {
    const char *s = p->s + 1, *start = p->s;
    size_t cap = 0, n = 0;
    char *buf;
    /* First pass: find the end and an upper bound of the decoded length. */
    while (s < p->end && *s != '"') {
        if ((unsigned char)*s < 0x20) return mbpo__jfail(p, s, "control character inside a string");
        if (*s == '\\') s++;
        s++;
    }
    if (s >= p->end) return mbpo__jfail(p, start, "unterminated string");
    cap = (size_t)(s - p->s);
    buf = (char *)mbpo__alloc(cap + 1);
    if (!buf) return 0;
    s = p->s + 1;
    while (*s != '"') {
        unsigned char c = (unsigned char)*s;
        if (c == '\\') {
            char e = s[1];
            s += 2;
            switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (p->end - s < 4 || !mbpo__jhex(s, &cp)) {
                    mbpo_free(buf); return mbpo__jfail(p, s - 2, "bad \\u escape");
                }
                s += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {   /* a UTF-16 surrogate pair */
                    if (p->end - s < 6 || s[0] != '\\' || s[1] != 'u' || !mbpo__jhex(s + 2, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF) {
                        mbpo_free(buf); return mbpo__jfail(p, s - 6, "unpaired UTF-16 surrogate");
                    }
                    s += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    mbpo_free(buf); return mbpo__jfail(p, s - 6, "unpaired UTF-16 surrogate");
                }
                n += mbpo__utf8_put(buf + n, cp);
                break;
            }
            default: mbpo_free(buf); return mbpo__jfail(p, s - 2, "unknown escape");
            }
        } else {
            int k = mbpo__utf8_valid((const unsigned char *)s, (const unsigned char *)p->end);
            if (!k) { mbpo_free(buf); return mbpo__jfail(p, s, "invalid UTF-8 in a string"); }
            memcpy(buf + n, s, (size_t)k);
            n += (size_t)k;
            s += k;
        }
    }
    buf[n] = 0;
    p->s = s + 1;
    *out = buf;
    *out_len = n;
    return 1;
}
static int mbpo__jnumber(mbpo__jp *p, mbpo_json *v) {
    const char *s = p->s, *start = p->s;
    char tmp[64];
    int is_int = 1;
    if (s < p->end && *s == '-') s++;
    if (s >= p->end || !(*s >= '0' && *s <= '9')) return mbpo__jfail(p, start, "bad number");
    if (*s == '0') s++;
    else while (s < p->end && *s >= '0' && *s <= '9') s++;
    if (s < p->end && *s == '.') {
        is_int = 0; s++;
        if (s >= p->end || !(*s >= '0' && *s <= '9')) return mbpo__jfail(p, start, "bad number");
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    if (s < p->end && (*s == 'e' || *s == 'E')) {
        is_int = 0; s++;
        if (s < p->end && (*s == '+' || *s == '-')) s++;
        if (s >= p->end || !(*s >= '0' && *s <= '9')) return mbpo__jfail(p, start, "bad number");
        while (s < p->end && *s >= '0' && *s <= '9') s++;
    }
    if ((size_t)(s - start) >= sizeof tmp) return mbpo__jfail(p, start, "number too long");
    memcpy(tmp, start, (size_t)(s - start));
    tmp[s - start] = 0;
    v->type = MBPO_JSON_NUMBER;
    {   /* JSON always writes '.', strtod reads the locale's decimal point: translate */
        char dp = localeconv()->decimal_point[0], *q;
        if (dp && dp != '.') for (q = tmp; *q; q++) if (*q == '.') *q = dp;
    }
    v->number = strtod(tmp, NULL);
    if (is_int) {
        errno = 0;
        v->integer = (int64_t)strtoll(tmp, NULL, 10);
        v->is_int = errno == 0;
    }
    p->s = s;
    return 1;
}
static int mbpo__jvalue(mbpo__jp *p, mbpo_json *v);
/* Parse the items of an array or object into a growing buffer. */
static int mbpo__jcontainer(mbpo__jp *p, mbpo_json *v, int is_object) {
    size_t cap = 0;
    char close = is_object ? '}' : ']';
    v->type = is_object ? MBPO_JSON_OBJECT : MBPO_JSON_ARRAY;
    if (++p->depth > MBPO_MAX_JSON_DEPTH)
        return mbpo__jfail(p, p->s, "nesting deeper than MBPO_MAX_JSON_DEPTH (raise it at compile time)");
    p->s++;
    mbpo__jws(p);
    if (p->s < p->end && *p->s == close) { p->s++; p->depth--; return 1; }
    for (;;) {
        char *key = NULL;
        size_t key_len;
        if (v->count == cap) {
            size_t ncap = cap ? cap * 2 : 4, k;
            mbpo_json *items = (mbpo_json *)mbpo__calloc(ncap, sizeof(mbpo_json));
            char **keys = is_object ? (char **)mbpo__calloc(ncap, sizeof(char *)) : NULL;
            if (!items || (is_object && !keys)) { mbpo_free(items); mbpo_free(keys); return 0; }
            for (k = 0; k < v->count; k++) { items[k] = v->items[k]; if (keys) keys[k] = v->keys[k]; }
            mbpo_free(v->items); mbpo_free(v->keys);
            v->items = items; v->keys = keys; cap = ncap;
        }
        mbpo__jws(p);
        if (is_object) {
            if (p->s >= p->end || *p->s != '"') return mbpo__jfail(p, p->s, "expected a string key");
            if (!mbpo__jstring(p, &key, &key_len)) return 0;
            v->keys[v->count] = key;
            mbpo__jws(p);
            if (p->s >= p->end || *p->s != ':') { v->count++; return mbpo__jfail(p, p->s, "expected ':'"); }
            p->s++;
        }
        v->count++;
        if (!mbpo__jvalue(p, &v->items[v->count - 1])) return 0;
        mbpo__jws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == close) { p->s++; break; }
        return mbpo__jfail(p, p->s, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->depth--;
    return 1;
}
static int mbpo__jvalue(mbpo__jp *p, mbpo_json *v) {
    mbpo__jws(p);
    v->line = p->line;
    v->col = (int)(p->s - p->line_start) + 1;
    if (p->s >= p->end) return mbpo__jfail(p, p->s, "unexpected end of input");
    switch (*p->s) {
    case '{': return mbpo__jcontainer(p, v, 1);
    case '[': return mbpo__jcontainer(p, v, 0);
    case '"': v->type = MBPO_JSON_STRING; return mbpo__jstring(p, &v->string, &v->len);
    case 't':
        if (p->end - p->s >= 4 && !memcmp(p->s, "true", 4)) { v->type = MBPO_JSON_TRUE; p->s += 4; return 1; }
        break;
    case 'f':
        if (p->end - p->s >= 5 && !memcmp(p->s, "false", 5)) { v->type = MBPO_JSON_FALSE; p->s += 5; return 1; }
        break;
    case 'n':
        if (p->end - p->s >= 4 && !memcmp(p->s, "null", 4)) { v->type = MBPO_JSON_NULL; p->s += 4; return 1; }
        break;
    default:
        if (*p->s == '-' || (*p->s >= '0' && *p->s <= '9')) return mbpo__jnumber(p, v);
    }
    return mbpo__jfail(p, p->s, "unexpected character");
}
MBPODEF mbpo_json *mbpo_json_parse(const char *text, size_t len, const char *name) {
    mbpo__jp p;
    mbpo_json *root = (mbpo_json *)mbpo__calloc(1, sizeof(mbpo_json));
    if (!root) return NULL;
    p.s = text; p.end = text + len; p.name = name ? name : "<json>";
    p.line = 1; p.line_start = text; p.depth = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) { p.s += 3; p.line_start = p.s; } /* BOM */
    if (!mbpo__jvalue(&p, root)) { mbpo_json_free(root); return NULL; }
    mbpo__jws(&p);
    if (p.s != p.end) { mbpo__jfail(&p, p.s, "trailing characters after the value"); mbpo_json_free(root); return NULL; }
    return root;
}
MBPODEF mbpo_json *mbpo_json_parse_file(const char *path) {
    size_t len;
    char *text = mbpo_read_file(path, &len);
    mbpo_json *root;
    if (!text) return NULL;
    root = mbpo_json_parse(text, len, path);
    mbpo_free(text);
    return root;
}
MBPODEF void mbpo_json_free(mbpo_json *root) {
    if (!root) return;
    mbpo__json_clear(root);
    mbpo_free(root);
}
MBPODEF const mbpo_json *mbpo_json_get(const mbpo_json *o, const char *key) {
    size_t i;
    if (!o || o->type != MBPO_JSON_OBJECT) return NULL;
    for (i = o->count; i-- > 0;)   /* last duplicate wins, as in Python's json */
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

/* ------------------------------------------------------------------ 1. base: half floats */

MBPODEF float mbpo_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
MBPODEF uint16_t mbpo_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}
MBPODEF float mbpo_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 1023, u;
    float f;
    if (exp == 0) {                       /* zero or subnormal: man * 2^-24 */
        f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    if (exp == 31) u = sign | 0x7F800000u | (man << 13);
    else u = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &u, 4);
    return f;
}
MBPODEF uint16_t mbpo_f32_to_f16(float f) {
    uint32_t u, sign, man;
    int exp;
    memcpy(&u, &f, 4);
    sign = (u >> 16) & 0x8000;
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(sign | 0x7E00);
    exp = (int)((u >> 23) & 255) - 127 + 15;
    man = u & 0x7FFFFF;
    if (exp >= 31) return (uint16_t)(sign | 0x7C00);          /* overflow -> inf */
    if (exp <= 0) {                                           /* subnormal or zero */
        uint32_t m, shift, half, rest;
        if (exp < -10) return (uint16_t)sign;
        m = man | 0x800000;
        shift = (uint32_t)(14 - exp);
        half = 1u << (shift - 1);
        rest = m & ((1u << shift) - 1);
        m >>= shift;
        if (rest > half || (rest == half && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    {
        uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13), rest = man & 0x1FFF;
        if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;  /* may carry into exp: ok */
        return (uint16_t)h;
    }
}

/* ------------------------------------------------------------------ 1. base: safetensors */

static const char *const mbpo__dtype_names[] = { "F32", "F16", "BF16", "F64", "I64", "I32", "I16",
                                                 "I8", "U8", "BOOL" };
static const size_t mbpo__dtype_sizes[] = { 4, 2, 2, 8, 8, 4, 2, 1, 1, 1 };
MBPODEF size_t mbpo_dtype_size(mbpo_dtype dt) { return mbpo__dtype_sizes[dt]; }
MBPODEF const char *mbpo_dtype_name(mbpo_dtype dt) { return mbpo__dtype_names[dt]; }

static int mbpo__st_cmp(const void *a, const void *b) {
    return strcmp(((const mbpo_st_tensor *)a)->name, ((const mbpo_st_tensor *)b)->name);
}
static int mbpo__st_cmp_begin(const void *a, const void *b) {
    const mbpo_st_tensor *x = *(const mbpo_st_tensor *const *)a, *y = *(const mbpo_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}
MBPODEF void mbpo_st_close(mbpo_st *st) {
    size_t i;
    int k;
    for (i = 0; i < st->n_tensors; i++) mbpo_free(st->tensors[i].name);
    for (k = 0; k < st->n_files; k++) mbpo_free(st->paths[k]);
    mbpo_free(st->tensors); mbpo_free(st->paths); mbpo_free(st->data_start);
    memset(st, 0, sizeof *st);
}
/* Parse and validate one file's header, appending its tensors to st as file index `fi`. */
static int mbpo__st_add_file(mbpo_st *st, const char *path, int fi) {
    FILE *f = fopen(path, "rb");
    unsigned char lenbuf[8];
    uint64_t hlen = 0, data_size;
    int64_t fsize;
    char *header = NULL;
    mbpo_json *root = NULL;
    mbpo_st_tensor *all = NULL, **by_begin = NULL;
    size_t i, n = 0, base = st->n_tensors;
    int ok = 0, k;
    if (!f) return mbpo__fail("%s: cannot open (%s)", path, strerror(errno));
    fsize = mbpo__file_size(f);
    if (fsize < 8 || fread(lenbuf, 1, 8, f) != 8) {
        mbpo__fail("%s: truncated: shorter than the 8-byte safetensors header length", path); goto done;
    }
    for (k = 7; k >= 0; k--) hlen = (hlen << 8) | lenbuf[k];
    if (hlen < 2 || hlen > MBPO_MAX_ST_HEADER) {
        mbpo__fail("%s: header length %llu is outside [2, %u] (not a safetensors file, or raise "
                   "MBPO_MAX_ST_HEADER)", path, (unsigned long long)hlen, (unsigned)MBPO_MAX_ST_HEADER);
        goto done;
    }
    if (hlen > (uint64_t)fsize - 8) {
        mbpo__fail("%s: truncated: header says %llu header bytes but the file has %lld bytes",
                   path, (unsigned long long)hlen, (long long)fsize);
        goto done;
    }
    data_size = (uint64_t)fsize - 8 - hlen;
    header = (char *)mbpo__alloc((size_t)hlen);
    if (!header) goto done;
    if (fread(header, 1, (size_t)hlen, f) != (size_t)hlen) { mbpo__fail("%s: read error", path); goto done; }
    root = mbpo_json_parse(header, (size_t)hlen, path);
    if (!root) goto done;
    if (root->type != MBPO_JSON_OBJECT) { mbpo__fail("%s: header is not a JSON object", path); goto done; }
    for (i = 0; i < root->count; i++) n += strcmp(root->keys[i], "__metadata__") != 0;
    all = (mbpo_st_tensor *)mbpo__calloc(base + n + 1, sizeof(mbpo_st_tensor));
    if (!all) goto done;
    if (base) memcpy(all, st->tensors, base * sizeof(mbpo_st_tensor));
    mbpo_free(st->tensors);
    st->tensors = all;
    for (i = 0; i < root->count; i++) {
        const mbpo_json *v = &root->items[i], *dt, *shape, *off;
        mbpo_st_tensor *t;
        const char *name = root->keys[i];
        int d;
        uint64_t numel = 1, bytes;
        if (!strcmp(name, "__metadata__")) continue;
        t = &st->tensors[st->n_tensors];
        dt = mbpo_json_get(v, "dtype"); shape = mbpo_json_get(v, "shape"); off = mbpo_json_get(v, "data_offsets");
        if (!dt || dt->type != MBPO_JSON_STRING || !shape || shape->type != MBPO_JSON_ARRAY ||
            !off || off->type != MBPO_JSON_ARRAY || off->count != 2) {
            mbpo__fail("%s: tensor '%s': header entry needs dtype, shape and data_offsets [begin, end]", path, name);
            goto done;
        }
        for (d = 0; d < 10 && strcmp(dt->string, mbpo__dtype_names[d]); d++) {}
        if (d == 10) { mbpo__fail("%s: tensor '%s': unsupported dtype %s", path, name, dt->string); goto done; }
        if (shape->count > MBPO_ST_MAX_DIMS) { mbpo__fail("%s: tensor '%s': %zu dims (max %d)", path, name, shape->count, MBPO_ST_MAX_DIMS); goto done; }
        t->name = mbpo__strdup(name);
        if (!t->name) goto done;
        st->n_tensors++;
        t->dtype = (mbpo_dtype)d;
        t->ndim = (int)shape->count;
        t->file = fi;
        for (k = 0; k < t->ndim; k++) {
            const mbpo_json *e = &shape->items[k];
            if (e->type != MBPO_JSON_NUMBER || !e->is_int || e->integer < 0 ||
                (e->integer > 0 && numel > ((uint64_t)1 << 62) / (uint64_t)e->integer)) {
                mbpo__fail("%s: tensor '%s': bad shape entry %d", path, name, k); goto done;
            }
            t->shape[k] = e->integer;
            numel *= (uint64_t)e->integer;
        }
        t->numel = (int64_t)numel;
        if (numel > ((uint64_t)1 << 62) / mbpo__dtype_sizes[d]) {
            mbpo__fail("%s: tensor '%s': %llu elements of %s do not fit in 2^62 bytes", path, name,
                       (unsigned long long)numel, mbpo__dtype_names[d]);
            goto done;
        }
        if (off->items[0].type != MBPO_JSON_NUMBER || !off->items[0].is_int || off->items[0].integer < 0 ||
            off->items[1].type != MBPO_JSON_NUMBER || !off->items[1].is_int || off->items[1].integer < off->items[0].integer) {
            mbpo__fail("%s: tensor '%s': data_offsets must be two integers 0 <= begin <= end", path, name); goto done;
        }
        t->begin = (uint64_t)off->items[0].integer;
        t->end = (uint64_t)off->items[1].integer;
        bytes = numel * mbpo__dtype_sizes[d];
        if (t->end - t->begin != bytes) {
            mbpo__fail("%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape x %s needs %llu",
                       path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->end - t->begin), mbpo__dtype_names[d], (unsigned long long)bytes);
            goto done;
        }
        if (t->end > data_size) {
            mbpo__fail("%s: tensor '%s': data_offsets end %llu lies beyond the data section (%llu bytes): "
                       "file truncated or header wrong", path, name, (unsigned long long)t->end, (unsigned long long)data_size);
            goto done;
        }
    }
    /* No two tensors may share bytes. */
    if (n > 1) {
        by_begin = (mbpo_st_tensor **)mbpo__calloc(n, sizeof(*by_begin));
        if (!by_begin) goto done;
        for (i = 0; i < n; i++) by_begin[i] = &st->tensors[base + i];
        qsort(by_begin, n, sizeof(*by_begin), mbpo__st_cmp_begin);
        for (i = 1; i < n; i++)
            if (by_begin[i]->begin < by_begin[i - 1]->end) {
                mbpo__fail("%s: tensors '%s' and '%s' overlap in the data section", path,
                           by_begin[i - 1]->name, by_begin[i]->name);
                goto done;
            }
    }
    st->data_start[fi] = 8 + hlen;
    ok = 1;
done:
    mbpo_free(by_begin);
    mbpo_json_free(root);
    mbpo_free(header);
    fclose(f);
    return ok;
}
static int mbpo__st_finish(mbpo_st *st) {
    size_t i;
    qsort(st->tensors, st->n_tensors, sizeof(mbpo_st_tensor), mbpo__st_cmp);
    for (i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, st->tensors[i - 1].name))
            return mbpo__fail("%s: tensor '%s' appears twice", st->paths[st->tensors[i].file], st->tensors[i].name);
    return 1;
}
static int mbpo__st_alloc_files(mbpo_st *st, int n) {
    memset(st, 0, sizeof *st);
    st->paths = (char **)mbpo__calloc((size_t)n, sizeof(char *));
    st->data_start = (uint64_t *)mbpo__calloc((size_t)n, sizeof(uint64_t));
    if (!st->paths || !st->data_start) { mbpo_st_close(st); return 0; }
    st->n_files = n;
    return 1;
}
MBPODEF int mbpo_st_open(mbpo_st *st, const char *path) {
    if (!mbpo__st_alloc_files(st, 1)) return 0;
    st->paths[0] = mbpo__strdup(path);
    if (!st->paths[0] || !mbpo__st_add_file(st, path, 0) || !mbpo__st_finish(st)) { mbpo_st_close(st); return 0; }
    return 1;
}
static char *mbpo__path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = (char *)mbpo__alloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}
static int mbpo__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
MBPODEF int mbpo_st_open_dir(mbpo_st *st, const char *dir) {
    char *single = mbpo__path_join(dir, "model.safetensors");
    char *index = mbpo__path_join(dir, "model.safetensors.index.json");
    mbpo_json *root = NULL;
    const mbpo_json *map;
    size_t i, j;
    int ok = 0, n_files = 0;
    memset(st, 0, sizeof *st);
    if (!single || !index) goto done;
    if (mbpo__file_exists(single)) { ok = mbpo_st_open(st, single); goto done; }
    if (!mbpo__file_exists(index)) {
        mbpo__fail("%s: no model.safetensors or model.safetensors.index.json", dir); goto done;
    }
    root = mbpo_json_parse_file(index);
    if (!root) goto done;
    map = mbpo_json_get(root, "weight_map");
    if (!map || map->type != MBPO_JSON_OBJECT || map->count == 0) {
        mbpo__fail("%s: no \"weight_map\" object with at least one tensor", index); goto done;
    }
    /* Distinct shard names, in order of first appearance. */
    if (!mbpo__st_alloc_files(st, (int)map->count + 1)) goto done;
    for (i = 0; i < map->count; i++) {
        const mbpo_json *v = &map->items[i];
        int k;
        if (v->type != MBPO_JSON_STRING || strchr(v->string, '/') || v->string[0] == '.') {
            mbpo__fail("%s: weight_map[\"%s\"] must be a plain file name in the same folder", index, map->keys[i]);
            goto done;
        }
        for (k = 0; k < n_files && strcmp(st->paths[k] + strlen(dir) + 1, v->string); k++) {}
        if (k == n_files) {
            if (!(st->paths[n_files] = mbpo__path_join(dir, v->string))) goto done;
            n_files++;
        }
    }
    for (j = 0; j < (size_t)n_files; j++)
        if (!mbpo__st_add_file(st, st->paths[j], (int)j)) goto done;
    st->n_files = n_files;
    if (!mbpo__st_finish(st)) goto done;
    /* Every indexed tensor must be in the shard the index names. */
    for (i = 0; i < map->count; i++) {
        const mbpo_st_tensor *t = mbpo_st_find(st, map->keys[i]);
        if (!t || strcmp(st->paths[t->file] + strlen(dir) + 1, map->items[i].string)) {
            mbpo__fail("%s: tensor '%s' is not in shard %s", index, map->keys[i], map->items[i].string);
            goto done;
        }
    }
    ok = 1;
done:
    if (!ok) mbpo_st_close(st);   /* frees whatever was opened; the reason stays set */
    mbpo_json_free(root);
    mbpo_free(single);
    mbpo_free(index);
    return ok;
}
MBPODEF const mbpo_st_tensor *mbpo_st_find(const mbpo_st *st, const char *name) {
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}
/* Read the raw bytes of t into a new buffer. */
static void *mbpo__st_read_raw(const mbpo_st *st, const mbpo_st_tensor *t) {
    const char *path = st->paths[t->file];
    size_t bytes = (size_t)(t->end - t->begin);
    FILE *f = fopen(path, "rb");
    void *buf;
    if (!f) { mbpo__fail("%s: cannot open (%s)", path, strerror(errno)); return NULL; }
    buf = mbpo__alloc(bytes ? bytes : 1);
    if (buf && (mbpo__seek(f, st->data_start[t->file] + t->begin) != 0 ||
                fread(buf, 1, bytes, f) != bytes)) {
        mbpo__fail("%s: tensor '%s': read error (file changed or truncated?)", path, t->name);
        mbpo_free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}
/* Little-endian loads, independent of the host's byte order. */
static uint16_t mbpo__le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t mbpo__le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t mbpo__le64(const unsigned char *p) { return mbpo__le32(p) | ((uint64_t)mbpo__le32(p + 4) << 32); }
MBPODEF int mbpo_st_read_f32(const mbpo_st *st, const mbpo_st_tensor *t, float *dst) {
    unsigned char *raw;
    int64_t i;
    if (t->dtype != MBPO_DT_F32 && t->dtype != MBPO_DT_F16 && t->dtype != MBPO_DT_BF16 && t->dtype != MBPO_DT_F64)
        return mbpo__fail("%s: tensor '%s' is %s, expected a floating dtype", st->paths[t->file], t->name,
                          mbpo__dtype_names[t->dtype]);
    raw = (unsigned char *)mbpo__st_read_raw(st, t);
    if (!raw) return 0;
    for (i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case MBPO_DT_F32: { uint32_t u = mbpo__le32(raw + 4 * i); memcpy(&dst[i], &u, 4); break; }
        case MBPO_DT_F16: dst[i] = mbpo_f16_to_f32(mbpo__le16(raw + 2 * i)); break;
        case MBPO_DT_BF16: dst[i] = mbpo_bf16_to_f32(mbpo__le16(raw + 2 * i)); break;
        default: { uint64_t u = mbpo__le64(raw + 8 * i); double d; memcpy(&d, &u, 8); dst[i] = (float)d; }
        }
    }
    mbpo_free(raw);
    return 1;
}
MBPODEF int mbpo_st_read_i64(const mbpo_st *st, const mbpo_st_tensor *t, int64_t *dst) {
    unsigned char *raw;
    int64_t i;
    if (t->dtype < MBPO_DT_I64)
        return mbpo__fail("%s: tensor '%s' is %s, expected an integer dtype", st->paths[t->file], t->name,
                          mbpo__dtype_names[t->dtype]);
    raw = (unsigned char *)mbpo__st_read_raw(st, t);
    if (!raw) return 0;
    for (i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case MBPO_DT_I64: dst[i] = (int64_t)mbpo__le64(raw + 8 * i); break;
        case MBPO_DT_I32: dst[i] = (int32_t)mbpo__le32(raw + 4 * i); break;
        case MBPO_DT_I16: dst[i] = (int16_t)mbpo__le16(raw + 2 * i); break;
        case MBPO_DT_I8: dst[i] = (int8_t)raw[i]; break;
        default: dst[i] = raw[i];
        }
    }
    mbpo_free(raw);
    return 1;
}

/* Header JSON text builder (a growing string). */
typedef struct { char *s; size_t n, cap; int failed; } mbpo__sb;
static void mbpo__sb_printf(mbpo__sb *b, const char *fmt, ...) {
    va_list ap;
    int need;
    if (b->failed) return;
    va_start(ap, fmt);
    need = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (need < 0) { b->failed = 1; return; }
    if (!b->s || b->n + (size_t)need + 1 > b->cap) {
        size_t cap = (b->cap + (size_t)need + 1) * 2;
        char *s = (char *)mbpo__alloc(cap);
        if (!s) { b->failed = 1; return; }
        if (b->s) memcpy(s, b->s, b->n);
        mbpo_free(b->s);
        b->s = s; b->cap = cap;
        va_start(ap, fmt);
        vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
    }
    b->n += (size_t)need;
}
MBPODEF int mbpo_st_write(const char *path, const mbpo_st_entry *e, size_t n) {
    mbpo__sb hb = { NULL, 0, 0, 0 };
    uint64_t offset = 0, hlen;
    unsigned char lenbuf[8], *chunk = NULL;
    char tmp[4096];
    FILE *f = NULL;
    size_t i;
    int k, ok = 0;
    mbpo__sb_printf(&hb, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++) {
        uint64_t numel = 1;
        const char *c;
        if (e[i].dtype != MBPO_DT_F32 && e[i].dtype != MBPO_DT_BF16 && e[i].dtype != MBPO_DT_F16) {
            mbpo__fail("%s: tensor '%s': can only write F32, BF16 or F16", path, e[i].name); goto done;
        }
        /* validate everything before the file is created: nothing is half-written */
        for (c = e[i].name; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) {
                mbpo__fail("%s: tensor name '%s' has a quote, backslash or control character", path, e[i].name); goto done;
            }
        if (e[i].ndim < 0 || e[i].ndim > MBPO_ST_MAX_DIMS) {
            mbpo__fail("%s: tensor '%s': %d dims (0..%d allowed)", path, e[i].name, e[i].ndim, MBPO_ST_MAX_DIMS); goto done;
        }
        for (k = 0; k < e[i].ndim; k++) {
            if (e[i].shape[k] < 0 || (e[i].shape[k] > 0 && numel > ((uint64_t)1 << 60) / (uint64_t)e[i].shape[k])) {
                mbpo__fail("%s: tensor '%s': bad shape entry %d (%lld)", path, e[i].name, k, (long long)e[i].shape[k]); goto done;
            }
            numel *= (uint64_t)e[i].shape[k];
        }
        if (numel && !e[i].data) { mbpo__fail("%s: tensor '%s': no data", path, e[i].name); goto done; }
        mbpo__sb_printf(&hb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, mbpo__dtype_names[e[i].dtype]);
        for (k = 0; k < e[i].ndim; k++) mbpo__sb_printf(&hb, "%s%lld", k ? "," : "", (long long)e[i].shape[k]);
        mbpo__sb_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                        (unsigned long long)(offset + numel * mbpo__dtype_sizes[e[i].dtype]));
        offset += numel * mbpo__dtype_sizes[e[i].dtype];
    }
    mbpo__sb_printf(&hb, "}");
    while (!hb.failed && hb.n % 8) mbpo__sb_printf(&hb, " ");   /* align the data section */
    if (hb.failed) { mbpo__fail("%s: out of memory building the header", path); goto done; }
    hlen = hb.n;
    for (k = 0; k < 8; k++) lenbuf[k] = (unsigned char)(hlen >> (8 * k));
    chunk = (unsigned char *)mbpo__alloc(1 << 16);
    if (!chunk) goto done;
    f = mbpo__atomic_open(path, tmp, sizeof tmp);
    if (!f) goto done;
    ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(hb.s, 1, hb.n, f) == hb.n;
    for (i = 0; ok && i < n; i++) {
        uint64_t numel = 1, j = 0;
        size_t es = mbpo__dtype_sizes[e[i].dtype], per = (1 << 16) / es;
        for (k = 0; k < e[i].ndim; k++) numel *= (uint64_t)e[i].shape[k];
        while (ok && j < numel) {
            size_t m = (size_t)(numel - j < per ? numel - j : per), q;
            for (q = 0; q < m; q++) {
                float v = e[i].data[j + q];
                unsigned char *o = chunk + q * es;
                if (e[i].dtype == MBPO_DT_F32) {
                    uint32_t u; memcpy(&u, &v, 4);
                    o[0] = (unsigned char)u; o[1] = (unsigned char)(u >> 8); o[2] = (unsigned char)(u >> 16); o[3] = (unsigned char)(u >> 24);
                } else {
                    uint16_t h = e[i].dtype == MBPO_DT_BF16 ? mbpo_f32_to_bf16(v) : mbpo_f32_to_f16(v);
                    o[0] = (unsigned char)h; o[1] = (unsigned char)(h >> 8);
                }
            }
            ok = fwrite(chunk, es, m, f) == m;
            j += m;
        }
    }
    if (!ok) mbpo__fail("%s: write error (%s)", path, strerror(errno));
    ok = mbpo__atomic_close(f, tmp, path, ok);
done:
    mbpo_free(chunk);
    mbpo_free(hb.s);
    return ok;
}

/* ==========================================================================================
   3. model
   ========================================================================================== */

/* ------------------------------------------------------------------ 3. model: config */

/* Look a key up in the text config (5.x nests it under "text_config"), then at top level. */
static const mbpo_json *mbpo__cfg_key(const mbpo_json *root, const char *key) {
    const mbpo_json *tc = mbpo_json_get(root, "text_config"), *v = NULL;
    if (tc && tc->type == MBPO_JSON_OBJECT) v = mbpo_json_get(tc, key);
    return v ? v : mbpo_json_get(root, key);
}
static int mbpo__cfg_int(const mbpo_json *obj, const char *key, const char *name, int64_t *out,
                         int required, int64_t dflt, int64_t min) {
    const mbpo_json *v = obj ? mbpo_json_get(obj, key) : NULL;
    if (!v || v->type == MBPO_JSON_NULL) {
        if (required) return mbpo__fail("%s: missing required field \"%s\"", name, key);
        *out = dflt;
        return 1;
    }
    if (v->type != MBPO_JSON_NUMBER || v->number != floor(v->number) || v->number < (double)min || v->number > 9e15)
        return mbpo__fail("%s:%d:%d: \"%s\" must be an integer >= %lld", name, v->line, v->col, key, (long long)min);
    *out = (int64_t)v->number;
    return 1;
}
static int mbpo__cfg_num(const mbpo_json *v, const char *key, const char *name, double *out, int required, double dflt) {
    if (!v || v->type == MBPO_JSON_NULL) {
        if (required) return mbpo__fail("%s: missing required field \"%s\"", name, key);
        *out = dflt;
        return 1;
    }
    if (v->type != MBPO_JSON_NUMBER || !(v->number > 0))
        return mbpo__fail("%s:%d:%d: \"%s\" must be a positive number", name, v->line, v->col, key);
    *out = v->number;
    return 1;
}

MBPODEF int mbpo_config_from_json(mbpo_config *c, const mbpo_json *root, const char *name) {
    const mbpo_json *tc, *vc, *v, *rope, *sec = NULL, *mt;
    const char *text_name = name;
    int64_t tmp;
    int k;
    memset(c, 0, sizeof *c);
    if (!root || root->type != MBPO_JSON_OBJECT) return mbpo__fail("%s: not a JSON object", name);
    mt = mbpo_json_get(root, "model_type");
    if (mt && mt->type == MBPO_JSON_STRING && strcmp(mt->string, "qwen2_vl") != 0)
        return mbpo__fail("%s: model_type \"%s\" is not supported (this build implements \"qwen2_vl\")", name, mt->string);
    tc = mbpo_json_get(root, "text_config");
    if (!tc || tc->type != MBPO_JSON_OBJECT) tc = root;
    /* Integers of the text model: the 5.x text_config first, then the 4.x top level. */
#define MBPO__TXT_INT(field, key, req, dflt, mn) \
    do { const mbpo_json *o_ = mbpo_json_get(tc, key) ? tc : root; \
         if (!mbpo__cfg_int(o_, key, text_name, &c->field, req, dflt, mn)) return 0; } while (0)
    MBPO__TXT_INT(vocab_size, "vocab_size", 1, 0, 1);
    MBPO__TXT_INT(hidden_size, "hidden_size", 1, 0, 1);
    MBPO__TXT_INT(intermediate_size, "intermediate_size", 1, 0, 1);
    MBPO__TXT_INT(n_layers, "num_hidden_layers", 1, 0, 1);
    MBPO__TXT_INT(n_heads, "num_attention_heads", 1, 0, 1);
    MBPO__TXT_INT(n_kv_heads, "num_key_value_heads", 0, c->n_heads, 1);
    MBPO__TXT_INT(max_position_embeddings, "max_position_embeddings", 0, 32768, 1);
    MBPO__TXT_INT(image_token_id, "image_token_id", 0, 151655, 0);
    MBPO__TXT_INT(video_token_id, "video_token_id", 0, 151656, 0);
    MBPO__TXT_INT(vision_start_token_id, "vision_start_token_id", 0, 151652, 0);
    MBPO__TXT_INT(vision_end_token_id, "vision_end_token_id", 0, 151653, 0);
    MBPO__TXT_INT(bos_token_id, "bos_token_id", 0, -1, -1);
    MBPO__TXT_INT(eos_token_id, "eos_token_id", 0, -1, -1);
    MBPO__TXT_INT(pad_token_id, "pad_token_id", 0, -1, -1);
#undef MBPO__TXT_INT
    c->head_dim = c->hidden_size / c->n_heads;
    if (!mbpo__cfg_num(mbpo__cfg_key(root, "rms_norm_eps"), "rms_norm_eps", name, &c->rms_norm_eps, 0, 1e-6)) return 0;
    /* transformers 5.x decides tying by the top-level flag; 4.57 re-saves may keep it only in
       text_config. Top level first, then text_config; default untied (Qwen2VLTextConfig). */
    v = mbpo_json_get(root, "tie_word_embeddings");
    if (!v && tc != root) v = mbpo_json_get(tc, "tie_word_embeddings");
    if (v && v->type != MBPO_JSON_TRUE && v->type != MBPO_JSON_FALSE)
        return mbpo__fail("%s:%d:%d: \"tie_word_embeddings\" must be true or false", name, v->line, v->col);
    c->tie_word_embeddings = v ? v->type == MBPO_JSON_TRUE : 0;
    /* RoPE: 4.x "rope_scaling" {type|rope_type, mrope_section} + "rope_theta";
       5.x "rope_parameters" {rope_type, mrope_section, rope_theta}. */
    rope = mbpo__cfg_key(root, "rope_parameters");
    if (!rope || rope->type != MBPO_JSON_OBJECT) rope = mbpo__cfg_key(root, "rope_scaling");
    if (rope && rope->type == MBPO_JSON_OBJECT) {
        const mbpo_json *ty = mbpo_json_get(rope, "rope_type");
        if (!ty) ty = mbpo_json_get(rope, "type");
        if (ty && ty->type == MBPO_JSON_STRING && strcmp(ty->string, "mrope") && strcmp(ty->string, "default"))
            return mbpo__fail("%s: rope type \"%s\" is not supported (expected \"mrope\" or \"default\")", name, ty->string);
        sec = mbpo_json_get(rope, "mrope_section");
    }
    if (!sec) return mbpo__fail("%s: missing required field \"mrope_section\" (in rope_scaling or rope_parameters)", name);
    if (sec->type != MBPO_JSON_ARRAY || sec->count != 3)
        return mbpo__fail("%s:%d:%d: \"mrope_section\" must be a list of 3 integers", name, sec->line, sec->col);
    for (k = 0; k < 3; k++) {
        if (sec->items[k].type != MBPO_JSON_NUMBER || !sec->items[k].is_int || sec->items[k].integer < 0)
            return mbpo__fail("%s: \"mrope_section\" entries must be non-negative integers", name);
        c->mrope_section[k] = (int)sec->items[k].integer;
    }
    v = rope ? mbpo_json_get(rope, "rope_theta") : NULL;
    if (!v) v = mbpo__cfg_key(root, "rope_theta");
    if (!mbpo__cfg_num(v, "rope_theta", name, &c->rope_theta, 0, 10000.0)) return 0;
    /* Vision tower: hub configs rely on class defaults for most fields. */
    vc = mbpo_json_get(root, "vision_config");
    if (!vc || vc->type != MBPO_JSON_OBJECT) return mbpo__fail("%s: missing required object \"vision_config\"", name);
    if (!mbpo__cfg_int(vc, "depth", name, &c->v_depth, 0, 32, 1) ||
        !mbpo__cfg_int(vc, "embed_dim", name, &c->v_embed_dim, 0, 1280, 1) ||
        !mbpo__cfg_int(vc, "num_heads", name, &c->v_heads, 0, 16, 1) ||
        !mbpo__cfg_int(vc, "mlp_ratio", name, &tmp, 0, 4, 1) ||
        !mbpo__cfg_int(vc, "patch_size", name, &c->v_patch, 0, 14, 1) ||
        !mbpo__cfg_int(vc, "temporal_patch_size", name, &c->v_temporal_patch, 0, 2, 1) ||
        !mbpo__cfg_int(vc, "spatial_merge_size", name, &c->v_merge, 0, 2, 1) ||
        !mbpo__cfg_int(vc, "in_channels", name, &c->v_in_channels, 0, 3, 1))
        return 0;
    if (!mbpo_json_get(vc, "in_channels") && !mbpo__cfg_int(vc, "in_chans", name, &c->v_in_channels, 0, 3, 1)) return 0;
    c->v_mlp_hidden = c->v_embed_dim * tmp;
    v = mbpo_json_get(vc, "hidden_act");
    if (v && (v->type != MBPO_JSON_STRING || strcmp(v->string, "quick_gelu")))
        return mbpo__fail("%s: vision_config.hidden_act must be \"quick_gelu\" for qwen2_vl", name);
    v = mbpo__cfg_key(root, "hidden_act");
    if (v && (v->type != MBPO_JSON_STRING || strcmp(v->string, "silu")))
        return mbpo__fail("%s: hidden_act must be \"silu\" for qwen2_vl", name);
    v = mbpo__cfg_key(root, "use_sliding_window");
    if (v && v->type == MBPO_JSON_TRUE) return mbpo__fail("%s: use_sliding_window=true is not supported", name);
    c->v_rope_theta = 10000.0;
    {   /* the merger's output must feed the LM */
        int64_t vh;
        if (!mbpo__cfg_int(vc, "hidden_size", name, &vh, 0, c->hidden_size, 1)) return 0;
        if (vh != c->hidden_size)
            return mbpo__fail("%s: vision_config.hidden_size %lld must equal the LM hidden_size %lld",
                              name, (long long)vh, (long long)c->hidden_size);
    }
    /* Shape constraints transformers also imposes (QWEN2VL.md 9.1). */
    if (c->hidden_size % c->n_heads || c->n_heads % c->n_kv_heads)
        return mbpo__fail("%s: hidden_size %% num_attention_heads and num_attention_heads %% num_key_value_heads must be 0", name);
    if (c->head_dim % 2 || c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2] != c->head_dim / 2)
        return mbpo__fail("%s: mrope_section [%d, %d, %d] must sum to head_dim/2 = %lld", name, c->mrope_section[0],
                          c->mrope_section[1], c->mrope_section[2], (long long)(c->head_dim / 2));
    if (c->v_embed_dim % c->v_heads || (c->v_embed_dim / c->v_heads) % 4)
        return mbpo__fail("%s: vision head size embed_dim/num_heads must be a multiple of 4", name);
    if (c->image_token_id >= c->vocab_size || c->video_token_id >= c->vocab_size ||
        c->vision_start_token_id >= c->vocab_size || c->vision_end_token_id >= c->vocab_size)
        return mbpo__fail("%s: image/video/vision token ids must be below vocab_size %lld", name, (long long)c->vocab_size);
    return 1;
}
MBPODEF int mbpo_config_load(mbpo_config *cfg, const char *path) {
    mbpo_json *root = mbpo_json_parse_file(path);
    int ok;
    if (!root) return 0;
    ok = mbpo_config_from_json(cfg, root, path);
    mbpo_json_free(root);
    return ok;
}
MBPODEF int64_t mbpo_config_pix(const mbpo_config *c) {
    return c->v_in_channels * c->v_temporal_patch * c->v_patch * c->v_patch;
}
MBPODEF char *mbpo_config_to_json(const mbpo_config *c) {
    mbpo__sb b = { NULL, 0, 0, 0 };
    mbpo__sb_printf(&b, "{\n  \"architectures\": [\"Qwen2VLForConditionalGeneration\"],\n"
                        "  \"model_type\": \"qwen2_vl\",\n  \"attention_dropout\": 0.0,\n");
    if (c->bos_token_id >= 0) mbpo__sb_printf(&b, "  \"bos_token_id\": %lld,\n", (long long)c->bos_token_id);
    if (c->eos_token_id >= 0) mbpo__sb_printf(&b, "  \"eos_token_id\": %lld,\n", (long long)c->eos_token_id);
    if (c->pad_token_id >= 0) mbpo__sb_printf(&b, "  \"pad_token_id\": %lld,\n", (long long)c->pad_token_id);
    mbpo__sb_printf(&b,
        "  \"vision_start_token_id\": %lld,\n  \"vision_end_token_id\": %lld,\n"
        "  \"image_token_id\": %lld,\n  \"video_token_id\": %lld,\n  \"hidden_act\": \"silu\",\n"
        "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n  \"max_position_embeddings\": %lld,\n"
        "  \"num_attention_heads\": %lld,\n  \"num_hidden_layers\": %lld,\n  \"num_key_value_heads\": %lld,\n"
        "  \"rms_norm_eps\": %.17g,\n  \"rope_theta\": %.17g,\n  \"tie_word_embeddings\": %s,\n"
        "  \"torch_dtype\": \"float32\",\n  \"use_cache\": true,\n  \"use_sliding_window\": false,\n"
        "  \"vocab_size\": %lld,\n"
        "  \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [%d, %d, %d]},\n"
        "  \"vision_config\": {\"depth\": %lld, \"embed_dim\": %lld, \"mlp_ratio\": %lld, \"num_heads\": %lld,\n"
        "    \"in_chans\": %lld, \"hidden_size\": %lld, \"patch_size\": %lld, \"spatial_merge_size\": %lld,\n"
        "    \"temporal_patch_size\": %lld, \"hidden_act\": \"quick_gelu\"}\n}\n",
        (long long)c->vision_start_token_id, (long long)c->vision_end_token_id, (long long)c->image_token_id,
        (long long)c->video_token_id, (long long)c->hidden_size, (long long)c->intermediate_size,
        (long long)c->max_position_embeddings, (long long)c->n_heads, (long long)c->n_layers,
        (long long)c->n_kv_heads, c->rms_norm_eps, c->rope_theta, c->tie_word_embeddings ? "true" : "false",
        (long long)c->vocab_size, c->mrope_section[0], c->mrope_section[1], c->mrope_section[2],
        (long long)c->v_depth, (long long)c->v_embed_dim, (long long)(c->v_mlp_hidden / c->v_embed_dim),
        (long long)c->v_heads, (long long)c->v_in_channels, (long long)c->hidden_size, (long long)c->v_patch,
        (long long)c->v_merge, (long long)c->v_temporal_patch);
    if (b.failed) { mbpo_free(b.s); mbpo__fail("out of memory rendering config.json"); return NULL; }
    return b.s;
}

/* ------------------------------------------------------------------ 3. model: parameters */

/* The table lists tensors in the order data flows: vision tower, merger, LM. */
typedef struct { mbpo_param_table *t; size_t cap; int failed; } mbpo__tb;
static void mbpo__tb_add(mbpo__tb *b, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                         int64_t d3, int64_t d4) {
    mbpo_param_info *p;
    int64_t dims[5];
    int k;
    if (b->failed) return;
    if (b->t->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        mbpo_param_info *info = (mbpo_param_info *)mbpo__calloc(cap, sizeof(mbpo_param_info));
        if (!info) { b->failed = 1; return; }
        if (b->t->n) memcpy(info, b->t->info, b->t->n * sizeof(mbpo_param_info));
        mbpo_free(b->t->info);
        b->t->info = info; b->cap = cap;
    }
    p = &b->t->info[b->t->n];
    p->name = mbpo__strdup(name);
    if (!p->name) { b->failed = 1; return; }
    b->t->n++;
    dims[0] = d0; dims[1] = d1; dims[2] = d2; dims[3] = d3; dims[4] = d4;
    p->ndim = ndim;
    p->numel = 1;
    for (k = 0; k < ndim; k++) { p->shape[k] = dims[k]; p->numel *= dims[k]; }
    p->offset = b->t->total_floats;
    b->t->total_floats += ((size_t)p->numel + 63) & ~(size_t)63;    /* 256-byte alignment */
    b->t->n_params += p->numel;
}
MBPODEF int mbpo_param_table_build(mbpo_param_table *t, const mbpo_config *c) {
    mbpo__tb b;
    char name[128];
    int64_t l, E = c->v_embed_dim, F = c->v_mlp_hidden, H = c->hidden_size, I = c->intermediate_size;
    int64_t M = E * c->v_merge * c->v_merge, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    memset(t, 0, sizeof *t);
    b.t = t; b.cap = 0; b.failed = 0;
    mbpo__tb_add(&b, "visual.patch_embed.proj.weight", 5, E, c->v_in_channels, c->v_temporal_patch, c->v_patch, c->v_patch);
    for (l = 0; l < c->v_depth; l++) {
#define MBPO__V(suffix, nd, a, bb) do { snprintf(name, sizeof name, "visual.blocks.%lld.%s", (long long)l, suffix); \
        mbpo__tb_add(&b, name, nd, a, bb, 0, 0, 0); } while (0)
        MBPO__V("norm1.weight", 1, E, 0); MBPO__V("norm1.bias", 1, E, 0);
        MBPO__V("attn.qkv.weight", 2, 3 * E, E); MBPO__V("attn.qkv.bias", 1, 3 * E, 0);
        MBPO__V("attn.proj.weight", 2, E, E); MBPO__V("attn.proj.bias", 1, E, 0);
        MBPO__V("norm2.weight", 1, E, 0); MBPO__V("norm2.bias", 1, E, 0);
        MBPO__V("mlp.fc1.weight", 2, F, E); MBPO__V("mlp.fc1.bias", 1, F, 0);
        MBPO__V("mlp.fc2.weight", 2, E, F); MBPO__V("mlp.fc2.bias", 1, E, 0);
#undef MBPO__V
    }
    mbpo__tb_add(&b, "visual.merger.ln_q.weight", 1, E, 0, 0, 0, 0);
    mbpo__tb_add(&b, "visual.merger.ln_q.bias", 1, E, 0, 0, 0, 0);
    mbpo__tb_add(&b, "visual.merger.mlp.0.weight", 2, M, M, 0, 0, 0);
    mbpo__tb_add(&b, "visual.merger.mlp.0.bias", 1, M, 0, 0, 0, 0);
    mbpo__tb_add(&b, "visual.merger.mlp.2.weight", 2, H, M, 0, 0, 0);
    mbpo__tb_add(&b, "visual.merger.mlp.2.bias", 1, H, 0, 0, 0, 0);
    mbpo__tb_add(&b, "model.embed_tokens.weight", 2, c->vocab_size, H, 0, 0, 0);
    for (l = 0; l < c->n_layers; l++) {
#define MBPO__L(suffix, nd, a, bb) do { snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix); \
        mbpo__tb_add(&b, name, nd, a, bb, 0, 0, 0); } while (0)
        MBPO__L("input_layernorm.weight", 1, H, 0);
        MBPO__L("self_attn.q_proj.weight", 2, QD, H); MBPO__L("self_attn.q_proj.bias", 1, QD, 0);
        MBPO__L("self_attn.k_proj.weight", 2, KD, H); MBPO__L("self_attn.k_proj.bias", 1, KD, 0);
        MBPO__L("self_attn.v_proj.weight", 2, KD, H); MBPO__L("self_attn.v_proj.bias", 1, KD, 0);
        MBPO__L("self_attn.o_proj.weight", 2, H, QD);
        MBPO__L("post_attention_layernorm.weight", 1, H, 0);
        MBPO__L("mlp.gate_proj.weight", 2, I, H); MBPO__L("mlp.up_proj.weight", 2, I, H);
        MBPO__L("mlp.down_proj.weight", 2, H, I);
#undef MBPO__L
    }
    mbpo__tb_add(&b, "model.norm.weight", 1, H, 0, 0, 0, 0);
    if (!c->tie_word_embeddings) mbpo__tb_add(&b, "lm_head.weight", 2, c->vocab_size, H, 0, 0, 0);
    if (b.failed) { mbpo_param_table_free(t); return mbpo__fail("out of memory building the parameter table"); }
    return 1;
}
MBPODEF void mbpo_param_table_free(mbpo_param_table *t) {
    size_t i;
    for (i = 0; i < t->n; i++) mbpo_free(t->info[i].name);
    mbpo_free(t->info);
    memset(t, 0, sizeof *t);
}
MBPODEF const mbpo_param_info *mbpo_param_find(const mbpo_param_table *t, const char *name) {
    size_t i;
    for (i = 0; i < t->n; i++)
        if (!strcmp(t->info[i].name, name)) return &t->info[i];
    return NULL;
}
/* Point the typed views at a buffer with the table's layout. The table order is fixed
   (mbpo_param_table_build), so binding walks it in the same order. */
static void mbpo__weights_bind(mbpo_weights *w, const mbpo_config *c, const mbpo_param_table *t, float *base) {
    size_t i = 0;
    int64_t l;
#define MBPO__NEXT (base + t->info[i++].offset)
    w->patch_embed_w = MBPO__NEXT;
    for (l = 0; l < c->v_depth; l++) {
        mbpo_vision_block *v = &w->vblocks[l];
        v->norm1_w = MBPO__NEXT; v->norm1_b = MBPO__NEXT; v->qkv_w = MBPO__NEXT; v->qkv_b = MBPO__NEXT;
        v->proj_w = MBPO__NEXT; v->proj_b = MBPO__NEXT; v->norm2_w = MBPO__NEXT; v->norm2_b = MBPO__NEXT;
        v->fc1_w = MBPO__NEXT; v->fc1_b = MBPO__NEXT; v->fc2_w = MBPO__NEXT; v->fc2_b = MBPO__NEXT;
    }
    w->merger_ln_w = MBPO__NEXT; w->merger_ln_b = MBPO__NEXT;
    w->merger_fc1_w = MBPO__NEXT; w->merger_fc1_b = MBPO__NEXT;
    w->merger_fc2_w = MBPO__NEXT; w->merger_fc2_b = MBPO__NEXT;
    w->embed = MBPO__NEXT;
    for (l = 0; l < c->n_layers; l++) {
        mbpo_decoder_layer *d = &w->layers[l];
        d->in_norm_w = MBPO__NEXT; d->q_w = MBPO__NEXT; d->q_b = MBPO__NEXT; d->k_w = MBPO__NEXT;
        d->k_b = MBPO__NEXT; d->v_w = MBPO__NEXT; d->v_b = MBPO__NEXT; d->o_w = MBPO__NEXT;
        d->post_norm_w = MBPO__NEXT; d->gate_w = MBPO__NEXT; d->up_w = MBPO__NEXT; d->down_w = MBPO__NEXT;
    }
    w->norm_w = MBPO__NEXT;
    w->lm_head = c->tie_word_embeddings ? w->embed : MBPO__NEXT;
#undef MBPO__NEXT
}
static int mbpo__weights_alloc(mbpo_weights *w, const mbpo_config *c) {
    memset(w, 0, sizeof *w);
    w->vblocks = (mbpo_vision_block *)mbpo__calloc((size_t)c->v_depth, sizeof(mbpo_vision_block));
    w->layers = (mbpo_decoder_layer *)mbpo__calloc((size_t)c->n_layers, sizeof(mbpo_decoder_layer));
    return w->vblocks && w->layers;
}
static void mbpo__acts_free(mbpo_acts *a);

MBPODEF int mbpo_model_init(mbpo_model *m, const mbpo_config *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (!mbpo_param_table_build(&m->table, cfg)) return 0;
    m->params = (float *)mbpo__calloc(m->table.total_floats, sizeof(float));
    if (!m->params || !mbpo__weights_alloc(&m->w, cfg) || !mbpo__weights_alloc(&m->g, cfg)) {
        mbpo_model_free(m);
        return mbpo__fail("out of memory allocating %lld parameters", (long long)m->table.n_params);
    }
    mbpo__weights_bind(&m->w, cfg, &m->table, m->params);
    return 1;
}
MBPODEF void mbpo_model_free(mbpo_model *m) {
    mbpo_param_table_free(&m->table);
    mbpo_free(m->params);
    mbpo_free(m->grads);
    mbpo_free(m->w.vblocks); mbpo_free(m->w.layers);
    mbpo_free(m->g.vblocks); mbpo_free(m->g.layers);
    mbpo__acts_free(m->acts);
    memset(m, 0, sizeof *m);
}
/* Map a checkpoint key of either layout (QWEN2VL.md 3.7) to the hub name, or NULL when the
   key has neither layout's prefix. "model.visual.X" -> "visual.X";
   "model.language_model.X" -> "model.X"; hub names map to themselves. */
static const char *mbpo__hub_name(const char *key, char *buf, size_t size) {
    if (!strncmp(key, "model.visual.", 13)) { snprintf(buf, size, "visual.%s", key + 13); return buf; }
    if (!strncmp(key, "model.language_model.", 21)) { snprintf(buf, size, "model.%s", key + 21); return buf; }
    if (!strncmp(key, "visual.", 7) || !strncmp(key, "model.", 6) || !strcmp(key, "lm_head.weight")) return key;
    return NULL;
}
MBPODEF int mbpo_model_load(mbpo_model *m, const char *dir) {
    mbpo_config cfg;
    mbpo_st st;
    char *cfg_path = mbpo__path_join(dir, "config.json"), buf[512];
    unsigned char *seen = NULL;
    size_t i;
    int ok = 0;
    memset(m, 0, sizeof *m);
    memset(&st, 0, sizeof st);
    if (!cfg_path) return 0;
    if (!mbpo__file_exists(cfg_path)) { mbpo__fail("%s: missing (a model directory needs config.json)", cfg_path); goto done; }
    if (!mbpo_config_load(&cfg, cfg_path) || !mbpo_model_init(m, &cfg)) goto done;
    if (!mbpo_st_open_dir(&st, dir)) goto done;
    seen = (unsigned char *)mbpo__calloc(m->table.n + 1, 1);
    if (!seen) goto done;
    for (i = 0; i < st.n_tensors; i++) {
        const mbpo_st_tensor *t = &st.tensors[i];
        const char *hub = mbpo__hub_name(t->name, buf, sizeof buf);
        const mbpo_param_info *p;
        int k;
        size_t idx;
        /* A tied model never needs the head: transformers ignores a stray copy as well. */
        if (hub && !strcmp(hub, "lm_head.weight") && cfg.tie_word_embeddings) continue;
        p = hub ? mbpo_param_find(&m->table, hub) : NULL;
        if (!p) {
            mbpo__fail("%s: unexpected tensor '%s' (not a parameter of this Qwen2-VL config)", st.paths[t->file], t->name);
            goto done;
        }
        idx = (size_t)(p - m->table.info);
        if (seen[idx]) { mbpo__fail("%s: tensor '%s' given twice (both key layouts?)", st.paths[t->file], p->name); goto done; }
        seen[idx] = 1;
        if (t->numel != p->numel || (t->ndim != p->ndim && !(p->ndim == 5 && t->ndim == 2))) goto shape_error;
        for (k = 0; k < t->ndim && t->ndim == p->ndim; k++)
            if (t->shape[k] != p->shape[k]) goto shape_error;
        if (!mbpo_st_read_f32(&st, t, m->params + p->offset)) goto done;
        continue;
    shape_error:
        mbpo__fail("%s: tensor '%s' has shape [%lld, %lld, ...] (%lld values) but the config needs %lld values",
                   st.paths[t->file], t->name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 1),
                   (long long)t->numel, (long long)p->numel);
        goto done;
    }
    for (i = 0; i < m->table.n; i++)
        if (!seen[i]) { mbpo__fail("%s: missing tensor '%s'", dir, m->table.info[i].name); goto done; }
    ok = 1;
done:
    mbpo_free(seen);
    mbpo_st_close(&st);
    mbpo_free(cfg_path);
    if (!ok) mbpo_model_free(m);
    return ok;
}
MBPODEF int mbpo_model_save(const mbpo_model *m, const char *dir, mbpo_dtype dtype) {
    mbpo_st_entry *e = (mbpo_st_entry *)mbpo__calloc(m->table.n, sizeof(mbpo_st_entry));
    char *path = mbpo__path_join(dir, "model.safetensors"), *cfg_path = mbpo__path_join(dir, "config.json");
    char *cfg_text = mbpo_config_to_json(&m->cfg);
    size_t i;
    int k, ok = 0;
    if (e && path && cfg_path && cfg_text) {
        for (i = 0; i < m->table.n; i++) {
            const mbpo_param_info *p = &m->table.info[i];
            e[i].name = p->name; e[i].dtype = dtype; e[i].ndim = p->ndim; e[i].data = m->params + p->offset;
            for (k = 0; k < p->ndim; k++) e[i].shape[k] = p->shape[k];
        }
        ok = mbpo_st_write(path, e, m->table.n) && mbpo_write_file_atomic(cfg_path, cfg_text, strlen(cfg_text));
    }
    mbpo_free(e); mbpo_free(path); mbpo_free(cfg_path); mbpo_free(cfg_text);
    return ok;
}

/* ------------------------------------------------------------------ 3. model: ops (CPU, fp32)

   Each op is <op>_forward / <op>_backward with outputs first and dimensions last. Backward
   functions accumulate (+=) into parameter gradients and write or accumulate input
   gradients as their comment says. Every OpenMP loop gives each thread disjoint outputs and
   keeps the summation order fixed, so results do not depend on scheduling. */

#ifndef MBPO_CUDA

/* The one matrix product every Linear uses, forward and backward:
       out (M, N) (+)= A . B^T  (+ bias (N))
   A is (M, K) row-major, or stored transposed as (K, M) when a_t;
   B is (N, K) row-major (a Linear weight, "out x in"), or stored as (K, N) when b_t.
   Method: for each block of 16 output columns, copy a K-chunk of B into a small (chunk, 16)
   panel, then for 4 rows of A at a time accumulate out[r][0..16] += A[r][k] * panel[k][0..16]:
   a broadcast-multiply-add over 16 contiguous floats that the compiler turns into SIMD without
   -ffast-math. Each output is summed over k in increasing order, whatever the blocking or
   the thread count, so results are reproducible. Parallel over column blocks. */
#define MBPO__GEMM_NB 32    /* output columns per panel */
#define MBPO__GEMM_KB 128   /* k per panel: 16 KB, stays in L1 */
/* c_r[0..NB) += a_r[k * as] * panel[k][0..NB) for 4 rows r, k < nk: the inner kernel.
   Four separate NB-float accumulators the compiler keeps in vector registers. */
static void mbpo__gemm_4x16(float *c0, float *c1, float *c2, float *c3, const float *a0, const float *a1,
                            const float *a2, const float *a3, int64_t as, const float *panel, int64_t nk) {
    float x0[MBPO__GEMM_NB], x1[MBPO__GEMM_NB], x2[MBPO__GEMM_NB], x3[MBPO__GEMM_NB];
    int64_t k;
    int j;
    for (j = 0; j < MBPO__GEMM_NB; j++) { x0[j] = c0[j]; x1[j] = c1[j]; x2[j] = c2[j]; x3[j] = c3[j]; }
    for (k = 0; k < nk; k++) {
        const float *p = panel + k * MBPO__GEMM_NB;
        float v0 = a0[k * as], v1 = a1[k * as], v2 = a2[k * as], v3 = a3[k * as];
        for (j = 0; j < MBPO__GEMM_NB; j++) {
            x0[j] += v0 * p[j]; x1[j] += v1 * p[j]; x2[j] += v2 * p[j]; x3[j] += v3 * p[j];
        }
    }
    for (j = 0; j < MBPO__GEMM_NB; j++) { c0[j] = x0[j]; c1[j] = x1[j]; c2[j] = x2[j]; c3[j] = x3[j]; }
}
static void mbpo__gemm(float *out, const float *A, int a_t, const float *B, int b_t, const float *bias,
                       int64_t M, int64_t K, int64_t N, int accumulate) {
    int64_t nblocks = (N + MBPO__GEMM_NB - 1) / MBPO__GEMM_NB, jb;
    MBPO__OMP("omp parallel for schedule(static)")
    for (jb = 0; jb < nblocks; jb++) {
        float panel[MBPO__GEMM_KB * MBPO__GEMM_NB], acc[4][MBPO__GEMM_NB];
        int64_t j0 = jb * MBPO__GEMM_NB, nj = N - j0 < MBPO__GEMM_NB ? N - j0 : MBPO__GEMM_NB, k0, m0, k, j;
        int r;
        for (k0 = 0; k0 < K || (K == 0 && k0 == 0); k0 += MBPO__GEMM_KB) {
            int64_t nk = K - k0 < MBPO__GEMM_KB ? K - k0 : MBPO__GEMM_KB;
            int first = k0 == 0 && !accumulate;
            for (k = 0; k < nk; k++)          /* panel[k][j] = B^T[k0+k][j0+j], zero padded */
                for (j = 0; j < MBPO__GEMM_NB; j++)
                    panel[k * MBPO__GEMM_NB + j] = j >= nj ? 0.0f
                        : b_t ? B[(k0 + k) * N + j0 + j] : B[(j0 + j) * K + k0 + k];
            for (m0 = 0; m0 < M; m0 += 4) {
                const float *a[4];
                for (r = 0; r < 4; r++) {
                    int64_t row = m0 + r < M ? m0 + r : M - 1;   /* extra rows: computed, not stored */
                    a[r] = a_t ? A + k0 * M + row : A + row * K + k0;
                    for (j = 0; j < MBPO__GEMM_NB; j++)
                        acc[r][j] = first || j >= nj ? 0.0f : out[row * N + j0 + j];
                }
                mbpo__gemm_4x16(acc[0], acc[1], acc[2], acc[3], a[0], a[1], a[2], a[3], a_t ? M : 1, panel, nk);
                for (r = 0; r < 4 && m0 + r < M; r++)
                    for (j = 0; j < nj; j++) out[(m0 + r) * N + j0 + j] = acc[r][j];
            }
            if (K == 0) break;
        }
        if (bias)
            for (m0 = 0; m0 < M; m0++)
                for (j = 0; j < nj; j++) out[m0 * N + j0 + j] += bias[j0 + j];
    }
}
/* out (N,OC) = inp (N,C) . w (OC,C)^T + bias (OC); bias may be NULL. */
static void mbpo__matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                                 int64_t N, int64_t C, int64_t OC) {
    mbpo__gemm(out, inp, 0, w, 0, bias, N, C, OC, 0);
}
/* dinp (N,C) += dout (N,OC) . w (OC,C);  dw (OC,C) += dout^T . inp;  dbias (OC) += sum_n dout.
   Any of dinp, dw, dbias may be NULL. */
static void mbpo__matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                                  const float *inp, const float *w, int64_t N, int64_t C, int64_t OC) {
    int64_t o;
    if (dinp) mbpo__gemm(dinp, dout, 0, w, 1, NULL, N, OC, C, 1);
    if (dw) mbpo__gemm(dw, dout, 1, inp, 1, NULL, OC, N, C, 1);
    if (dbias) {
        MBPO__OMP("omp parallel for schedule(static)")
        for (o = 0; o < OC; o++) {
            float s = 0.0f;
            int64_t nn;
            for (nn = 0; nn < N; nn++) s += dout[nn * OC + o];
            dbias[o] += s;
        }
    }
}

/* LayerNorm: out (N,C) = (x - mean) * rstd * w + b; saves mean (N), rstd (N). */
static void mbpo__layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int64_t N, int64_t C, float eps) {
    int64_t n;
    MBPO__OMP("omp parallel for schedule(static)")
    for (n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *y = out + n * C, m = 0.0f, v = 0.0f, r;
        int64_t i;
        for (i = 0; i < C; i++) m += x[i];
        m /= (float)C;
        for (i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        v /= (float)C;                                  /* biased variance, as torch */
        r = 1.0f / sqrtf(v + eps);
        for (i = 0; i < C; i++) y[i] = (x[i] - m) * r * w[i] + b[i];
        mean[n] = m; rstd[n] = r;
    }
}
/* dinp (N,C) += LayerNorm'; dw, db (C) += ... (QWEN2VL.md 4.2); dw and db both or neither NULL. */
static void mbpo__layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int64_t N, int64_t C) {
    int64_t n, i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (n = 0; n < N; n++) {
        const float *dy = dout + n * C, *x = inp + n * C;
        float *dx = dinp + n * C, m = mean[n], r = rstd[n], mg = 0.0f, mgx = 0.0f;
        int64_t j;
        for (j = 0; j < C; j++) {
            float xh = (x[j] - m) * r, g = dy[j] * w[j];
            mg += g; mgx += g * xh;
        }
        mg /= (float)C; mgx /= (float)C;
        for (j = 0; j < C; j++) {
            float xh = (x[j] - m) * r;
            dx[j] += r * (dy[j] * w[j] - mg - xh * mgx);
        }
    }
    if (!dw) return;   /* activation gradient only (e.g. PGD wants the image gradient) */
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < C; i++) {
        float sw = 0.0f, sb = 0.0f;
        int64_t nn;
        for (nn = 0; nn < N; nn++) {
            float dy = dout[nn * C + i];
            sw += dy * (inp[nn * C + i] - mean[nn]) * rstd[nn];
            sb += dy;
        }
        dw[i] += sw; db[i] += sb;
    }
}

/* RMSNorm: out (N,C) = x * rstd * w, rstd = (mean(x^2) + eps)^-1/2 saved (N). */
static void mbpo__rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                                 int64_t N, int64_t C, float eps) {
    int64_t n;
    MBPO__OMP("omp parallel for schedule(static)")
    for (n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *y = out + n * C, ss = 0.0f, r;
        int64_t i;
        for (i = 0; i < C; i++) ss += x[i] * x[i];
        r = 1.0f / sqrtf(ss / (float)C + eps);
        /* transformers multiplies the weight last, after casting x*r back: (x*r)*w */
        for (i = 0; i < C; i++) y[i] = w[i] * (x[i] * r);
        rstd[n] = r;
    }
}
/* dinp (N,C) += r*g - x*r^3*(sum g x)/C with g = dy*w;  dw (C) += sum_n dy * x * r (dw may be NULL). */
static void mbpo__rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                                  const float *w, const float *rstd, int64_t N, int64_t C) {
    int64_t n, i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (n = 0; n < N; n++) {
        const float *dy = dout + n * C, *x = inp + n * C;
        float *dx = dinp + n * C, r = rstd[n], s = 0.0f;
        int64_t j;
        for (j = 0; j < C; j++) s += dy[j] * w[j] * x[j];
        s *= r * r * r / (float)C;
        for (j = 0; j < C; j++) dx[j] += r * dy[j] * w[j] - x[j] * s;
    }
    if (!dw) return;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < C; i++) {
        float sw = 0.0f;
        int64_t nn;
        for (nn = 0; nn < N; nn++) sw += dout[nn * C + i] * inp[nn * C + i] * rstd[nn];
        dw[i] += sw;
    }
}

/* Activations, elementwise over n values. */
static float mbpo__sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
/* QuickGELU (vision blocks): x * sigmoid(1.702 x) */
static void mbpo__quick_gelu_forward(float *out, const float *inp, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) out[i] = inp[i] * mbpo__sigmoid(1.702f * inp[i]);
}
static void mbpo__quick_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) {
        float s = mbpo__sigmoid(1.702f * inp[i]);
        dinp[i] = dout[i] * (s + 1.702f * inp[i] * s * (1.0f - s));
    }
}
/* exact GELU (merger): 0.5 x (1 + erf(x / sqrt 2)) */
static void mbpo__gelu_forward(float *out, const float *inp, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * 0.70710678118654752f));
}
static void mbpo__gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) {
        float x = inp[i], cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}
/* SwiGLU (LM MLP): out = silu(gate) * up, all (n) */
static void mbpo__swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) out[i] = gate[i] * mbpo__sigmoid(gate[i]) * up[i];
}
static void mbpo__swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, int64_t n) {
    int64_t i;
    MBPO__OMP("omp parallel for schedule(static)")
    for (i = 0; i < n; i++) {
        float s = mbpo__sigmoid(gate[i]);
        dgate[i] = dout[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
        dup[i] = dout[i] * gate[i] * s;
    }
}

/* Rotate-half RoPE in place on x (N, nh, HS) (rows `stride` floats apart) with per-row angle tables cos, sin (N, HS/2):
   pair (i, i + HS/2) turns by angle i. sign = +1 forward, -1 backward (the transpose of a
   rotation is the rotation by -angle). */
static void mbpo__rope_apply(float *x, const float *cosv, const float *sinv, int64_t N, int64_t nh,
                             int64_t HS, int64_t stride, float sign) {
    int64_t n, half = HS / 2;
    MBPO__OMP("omp parallel for schedule(static)")
    for (n = 0; n < N; n++) {
        int64_t h, i;
        for (h = 0; h < nh; h++) {
            float *v = x + n * stride + h * HS;
            for (i = 0; i < half; i++) {
                float c = cosv[n * half + i], s = sign * sinv[n * half + i], a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

/* sum_d a[d] b[d] with 16 running partial sums (a fixed, written-out reassociation the compiler
   can vectorize without -ffast-math), then the tail, then the partials pairwise. */
static float mbpo__dot(const float *a, const float *b, int64_t n) {
    float p[16] = { 0 }, s;
    int64_t d = 0;
    int l;
    for (; d + 16 <= n; d += 16)
        for (l = 0; l < 16; l++) p[l] += a[d + l] * b[d + l];
    for (l = 0; d < n; d++, l++) p[l] += a[d] * b[d];
    for (l = 0; l < 8; l++) p[l] += p[l + 8];
    for (l = 0; l < 4; l++) p[l] += p[l + 4];
    s = (p[0] + p[2]) + (p[1] + p[3]);
    return s;
}

/* Attention over one segment of L tokens. q (L, NH, HS) at stride qs floats per token,
   k, v (L, NKV, HS) at stride kvs; out (L, NH, HS) at stride os; lse (NH, L) the log-sum-exp
   of each score row, saved so backward can rebuild the probabilities without storing
   them (O(L) memory instead of O(L^2)). causal: key j <= query i. Scores in fp32. */
static void mbpo__attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                    int64_t L, int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs,
                                    int64_t os, int64_t lse_stride, int causal, float *scratch /* (threads, 2L) */) {
    int64_t job, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    MBPO__OMP("omp parallel for schedule(static)")
    for (job = 0; job < NH * L; job++) {
        int64_t h = job / L, i = job % L, kvh = h / group, j, d, jmax = causal ? i + 1 : L;
#ifdef _OPENMP
        float *s = scratch + (int64_t)omp_get_thread_num() * 2 * L;
#else
        float *s = scratch;
#endif
        const float *qi = q + i * qs + h * HS;
        float *o = out + i * os + h * HS, mx = -INFINITY, sum = 0.0f;
        for (j = 0; j < jmax; j++) {
            s[j] = mbpo__dot(qi, k + j * kvs + kvh * HS, HS) * scale;
            if (s[j] > mx) mx = s[j];
        }
        for (j = 0; j < jmax; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
        for (d = 0; d < HS; d++) o[d] = 0.0f;
        for (j = 0; j < jmax; j++) {
            const float *vj = v + j * kvs + kvh * HS;
            float p = s[j] / sum;
            for (d = 0; d < HS; d++) o[d] += p * vj[d];
        }
        lse[h * lse_stride + i] = mx + logf(sum);
    }
}
/* Backward of one segment: dq (L,NH,HS) written (stride qs, as q); dk, dv (L,NKV,HS) written
   (stride kvs), each summed over the query heads of its group (GQA); dout, out at stride os.
   P is rebuilt from q, k and lse:
   dV = P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO * O));  dQ = scale dS K;  dK = scale dS^T Q.
   Parallel over kv heads so that no two threads write the same dk/dv row. */
static void mbpo__attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                     const float *lse, const float *q, const float *k, const float *v,
                                     int64_t L, int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs,
                                     int64_t os, int64_t lse_stride, int causal, float *scratch /* (threads, 2L) */) {
    int64_t kvh, group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    MBPO__OMP("omp parallel for schedule(static)")
    for (kvh = 0; kvh < NKV; kvh++) {
#ifdef _OPENMP
        float *p = scratch + (int64_t)omp_get_thread_num() * 2 * L;
#else
        float *p = scratch;
#endif
        float *dp = p + L;
        int64_t h, i, j, d;
        for (j = 0; j < L; j++)
            for (d = 0; d < HS; d++) { dk[j * kvs + kvh * HS + d] = 0.0f; dv[j * kvs + kvh * HS + d] = 0.0f; }
        for (h = kvh * group; h < (kvh + 1) * group; h++)
            for (i = 0; i < L; i++) {
                const float *qi = q + i * qs + h * HS, *doi = dout + i * os + h * HS, *oi = out + i * os + h * HS;
                float *dqi = dq + i * qs + h * HS, rs = 0.0f, l = lse[h * lse_stride + i];
                int64_t jmax = causal ? i + 1 : L;
                rs = mbpo__dot(doi, oi, HS);
                for (j = 0; j < jmax; j++) {
                    float dot = mbpo__dot(qi, k + j * kvs + kvh * HS, HS), dpv = mbpo__dot(doi, v + j * kvs + kvh * HS, HS);
                    p[j] = expf(dot * scale - l);
                    dp[j] = p[j] * (dpv - rs);                  /* dS */
                }
                for (d = 0; d < HS; d++) dqi[d] = 0.0f;
                for (j = 0; j < jmax; j++) {
                    const float *kj = k + j * kvs + kvh * HS;
                    float *dkj = dk + j * kvs + kvh * HS, *dvj = dv + j * kvs + kvh * HS;
                    float ds = dp[j] * scale;
                    for (d = 0; d < HS; d++) {
                        dqi[d] += ds * kj[d];
                        dkj[d] += ds * qi[d];
                        dvj[d] += p[j] * doi[d];
                    }
                }
            }
    }
}

/* Fused log-softmax + gather over n rows of logits z (n, V): logp (n) = z[y] - lse,
   lse (n) saved for the backward. */
static void mbpo__logsoftmax_gather_forward(float *logp, float *lse, const float *z, const int32_t *y,
                                            int64_t n, int64_t V) {
    int64_t r;
    MBPO__OMP("omp parallel for schedule(static)")
    for (r = 0; r < n; r++) {
        const float *zr = z + r * V;
        float mx = -INFINITY, sum = 0.0f;
        int64_t j;
        for (j = 0; j < V; j++) if (zr[j] > mx) mx = zr[j];
        for (j = 0; j < V; j++) sum += expf(zr[j] - mx);
        lse[r] = mx + logf(sum);
        logp[r] = zr[y[r]] - lse[r];
    }
}
/* In place: z (n, V) logits in, dz = dlogp (onehot(y) - softmax(z)) out. */
static void mbpo__logsoftmax_gather_backward(float *z, const float *dlogp, const float *lse, const int32_t *y,
                                             int64_t n, int64_t V) {
    int64_t r;
    MBPO__OMP("omp parallel for schedule(static)")
    for (r = 0; r < n; r++) {
        float *zr = z + r * V, d = dlogp[r], l = lse[r];
        int64_t j;
        for (j = 0; j < V; j++) zr[j] = -d * expf(zr[j] - l);
        zr[y[r]] += d;
    }
}

#else
#include "mbpo_cuda.cuh"   /* the same ops on the GPU */
#endif /* !MBPO_CUDA */

/* ------------------------------------------------------------------ 3. model: activations

   One arena holds every activation of a forward pass and every scratch buffer of the
   backward pass. mbpo__acts_layout() hands out pointers for a given batch shape; called with
   base == NULL it only counts, which is how mbpo_model_plan() sizes the arena. All sizes grow
   with T, P and N, so any batch within the plan fits in the planned arena. */
#define MBPO__HEAD_CHUNK 64   /* target rows per lm_head chunk: CH x V logits alive at once */

struct mbpo_acts {
    int64_t max_T, max_P, max_N, max_images;
    int threads;
    float *base; size_t n_floats;
    int64_t *ibase; size_t n_ints;
    /* shape of the last forward */
    int64_t T, P, N, n_images, n_feat, n_seqs;
    int have_forward;
    /* vision tower: l = block index, D = depth, F = fc1 width */
    float *vcos, *vsin;            /* (P, HSv/2) rotary tables of the patches */
    float *vx;                     /* (D+1, P, E) residual stream; vx[0] = patch embed */
    float *vln1, *vln1_mean, *vln1_rstd, *vqkv, *vatt, *vlse, *vmid;
    float *vln2, *vln2_mean, *vln2_rstd, *vfc1, *vact;
    float *mln, *mln_mean, *mln_rstd, *mfc1, *mact, *feat;   /* merger; feat (P/4, H) */
    /* language model: l = layer, L = layers */
    float *cos, *sin;              /* (T, HS/2) M-RoPE tables */
    float *h;                      /* (L+1, T, H) residual stream; h[0] = inputs_embeds */
    float *x1, *rstd1, *q, *k, *v, *att, *lse, *hmid, *x2, *rstd2, *gate, *up, *act;
    float *xf, *rstdf;             /* (T, H), (T) final norm */
    float *tgt_lse;                /* (N) log-sum-exp of each target row's logits */
    float *chunk_logits, *chunk_x, *chunk_dx;
    /* backward scratch */
    float *dh, *dx, *dbig1, *dbig2, *dbig3, *dq, *dk, *dv, *dxf;
    float *dvx, *dvx2, *dv1, *dv2, *dvatt, *dfeat;
    float *attn_scratch;           /* (threads, 2 max(T, P)) */
    /* integers */
    int64_t *pos;                  /* (3, T) */
    int64_t *feat_row;             /* (T) image-feature row of a token, or -1 */
    int64_t *tgt_row;              /* (N) row of xf that predicts target n */
    int32_t *tgt_label;            /* (N) the target token ids */
    int64_t *img_poff;             /* (images+1) first patch of each image */
    int64_t *img_foff;             /* (images+1) first feature row of each image */
    int64_t *seq_grid;             /* (runs, 3) grids of one sequence's image runs, runs <= T */
};

static size_t mbpo__acts_layout(mbpo_acts *a, const mbpo_config *c, int64_t T, int64_t P, int64_t N,
                                int64_t n_img, int threads, float *base, int64_t *ibase, size_t *n_ints) {
    size_t used = 0, iused = 0;
    int64_t D = c->v_depth, E = c->v_embed_dim, F = c->v_mlp_hidden, L = c->n_layers, H = c->hidden_size;
    int64_t I = c->intermediate_size, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int64_t HSv = E / c->v_heads, mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm;
    int64_t CH = N < MBPO__HEAD_CHUNK ? N : MBPO__HEAD_CHUNK, maxL = T > P ? T : P;
    int64_t big = I > QD ? I : QD, vbig = F > 3 * E ? F : 3 * E;
#define MBPO__TAKE(ptr, count) do { a->ptr = base ? base + used : NULL; used += ((size_t)(count) + 63) & ~(size_t)63; } while (0)
#define MBPO__ITAKE(ptr, count) do { a->ptr = ibase ? ibase + iused : NULL; iused += (size_t)(count) + 1; } while (0)
    MBPO__TAKE(vcos, P * HSv / 2); MBPO__TAKE(vsin, P * HSv / 2);
    MBPO__TAKE(vx, (D + 1) * P * E);
    MBPO__TAKE(vln1, D * P * E); MBPO__TAKE(vln1_mean, D * P); MBPO__TAKE(vln1_rstd, D * P);
    MBPO__TAKE(vqkv, D * P * 3 * E); MBPO__TAKE(vatt, D * P * E); MBPO__TAKE(vlse, D * c->v_heads * P);
    MBPO__TAKE(vmid, D * P * E);
    MBPO__TAKE(vln2, D * P * E); MBPO__TAKE(vln2_mean, D * P); MBPO__TAKE(vln2_rstd, D * P);
    MBPO__TAKE(vfc1, D * P * F); MBPO__TAKE(vact, D * P * F);
    MBPO__TAKE(mln, P * E); MBPO__TAKE(mln_mean, P); MBPO__TAKE(mln_rstd, P);
    MBPO__TAKE(mfc1, PF * M); MBPO__TAKE(mact, PF * M); MBPO__TAKE(feat, PF * H);
    MBPO__TAKE(cos, T * c->head_dim / 2); MBPO__TAKE(sin, T * c->head_dim / 2);
    MBPO__TAKE(h, (L + 1) * T * H);
    MBPO__TAKE(x1, L * T * H); MBPO__TAKE(rstd1, L * T);
    MBPO__TAKE(q, L * T * QD); MBPO__TAKE(k, L * T * KD); MBPO__TAKE(v, L * T * KD);
    MBPO__TAKE(att, L * T * QD); MBPO__TAKE(lse, L * c->n_heads * T);
    MBPO__TAKE(hmid, L * T * H); MBPO__TAKE(x2, L * T * H); MBPO__TAKE(rstd2, L * T);
    MBPO__TAKE(gate, L * T * I); MBPO__TAKE(up, L * T * I); MBPO__TAKE(act, L * T * I);
    MBPO__TAKE(xf, T * H); MBPO__TAKE(rstdf, T); MBPO__TAKE(tgt_lse, N);
    MBPO__TAKE(chunk_logits, CH * c->vocab_size); MBPO__TAKE(chunk_x, CH * H); MBPO__TAKE(chunk_dx, CH * H);
    MBPO__TAKE(dh, T * H); MBPO__TAKE(dx, T * H); MBPO__TAKE(dxf, T * H);
    MBPO__TAKE(dbig1, T * big); MBPO__TAKE(dbig2, T * I); MBPO__TAKE(dbig3, T * I);
    MBPO__TAKE(dq, T * QD); MBPO__TAKE(dk, T * KD); MBPO__TAKE(dv, T * KD);
    MBPO__TAKE(dvx, P * E); MBPO__TAKE(dvx2, P * E); MBPO__TAKE(dv1, P * vbig); MBPO__TAKE(dv2, P * F);
    MBPO__TAKE(dvatt, P * E); MBPO__TAKE(dfeat, PF * H);
    MBPO__TAKE(attn_scratch, (int64_t)threads * 2 * maxL);
    MBPO__ITAKE(pos, 3 * T); MBPO__ITAKE(feat_row, T); MBPO__ITAKE(tgt_row, N);
    a->tgt_label = ibase ? (int32_t *)(ibase + iused) : NULL; iused += (size_t)N / 2 + 1;
    MBPO__ITAKE(img_poff, n_img + 1); MBPO__ITAKE(img_foff, n_img + 1);
    MBPO__ITAKE(seq_grid, 3 * T);   /* one sequence may use an image many times: <= one run per token */
#undef MBPO__TAKE
#undef MBPO__ITAKE
    *n_ints = iused;
    return used;
}
static void mbpo__acts_free(mbpo_acts *a) {
    if (!a) return;
    mbpo_free(a->base);
    mbpo_free(a->ibase);
    mbpo_free(a);
}
static int mbpo__max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
MBPODEF int mbpo_model_plan(mbpo_model *m, int64_t max_tokens, int64_t max_patches, int64_t max_targets,
                            int want_grads) {
    mbpo_acts *a;
    int64_t mm = m->cfg.v_merge * m->cfg.v_merge;
    if (max_tokens < 1 || max_patches < 0 || max_targets < 0 || max_targets > max_tokens || max_patches % mm)
        return mbpo__fail("mbpo_model_plan: need 1 <= max_tokens, 0 <= max_targets <= max_tokens and max_patches "
                          "a multiple of %lld", (long long)mm);
    {   /* an upper bound of the arena in double, so the int64 layout arithmetic cannot wrap */
        const mbpo_config *c = &m->cfg;
        double T = (double)max_tokens, P = (double)max_patches, wide = (double)(c->intermediate_size + c->hidden_size +
                   c->n_heads * c->head_dim + c->v_embed_dim + c->v_mlp_hidden);
        double bound = (T + P) * ((double)(c->n_layers + c->v_depth) + 8.0) * wide * 12.0 +
                       64.0 * (double)(c->vocab_size + c->hidden_size) + 16.0 * (T + P) * 64.0;
        if (bound > 1e15)
            return mbpo__fail("mbpo_model_plan: %lld tokens and %lld patches need more than 1e15 floats of activations",
                              (long long)max_tokens, (long long)max_patches);
    }
    mbpo__acts_free(m->acts);
    m->acts = a = (mbpo_acts *)mbpo__calloc(1, sizeof(mbpo_acts));
    if (!a) return 0;
    a->max_T = max_tokens; a->max_P = max_patches; a->max_N = max_targets;
    a->max_images = max_patches / mm;
    a->threads = mbpo__max_threads();
    a->n_floats = mbpo__acts_layout(a, &m->cfg, max_tokens, max_patches, max_targets, a->max_images,
                                    a->threads, NULL, NULL, &a->n_ints);
    a->base = (float *)mbpo__calloc(a->n_floats, sizeof(float));
    a->ibase = (int64_t *)mbpo__calloc(a->n_ints, sizeof(int64_t));
    if (!a->base || !a->ibase) {
        mbpo__acts_free(a); m->acts = NULL;
        return mbpo__fail("out of memory planning activations for %lld tokens, %lld patches",
                          (long long)max_tokens, (long long)max_patches);
    }
    if (want_grads && !m->grads) {
        m->grads = (float *)mbpo__calloc(m->table.total_floats, sizeof(float));
        if (!m->grads) return mbpo__fail("out of memory allocating gradients");
        mbpo__weights_bind(&m->g, &m->cfg, &m->table, m->grads);
    }
    return 1;
}
MBPODEF size_t mbpo_model_plan_bytes(const mbpo_model *m) {
    return m->acts ? m->acts->n_floats * sizeof(float) + m->acts->n_ints * sizeof(int64_t) : 0;
}
MBPODEF void mbpo_model_zero_grad(mbpo_model *m) {
    if (m->grads) memset(m->grads, 0, m->table.total_floats * sizeof(float));
}

/* ------------------------------------------------------------------ 3. model: positions */

/* RoPE inverse frequencies inv[j] = 1 / theta^(2j/dim), j < dim/2, evaluated in float32 the
   way torch does (exponent, power and reciprocal each rounded to float). */
static float mbpo__inv_freq(double theta, int64_t j, int64_t dim) {
    float e = (float)(2 * j) / (float)dim;
    return 1.0f / powf((float)theta, e);
}

/* M-RoPE ids of one sequence (QWEN2VL.md 3.4). grids: (n_runs, 3). pos rows t, h, w, each
   `stride` apart. An image run is a maximal run of image_token_id; its length must be
   t * (h/merge) * (w/merge). */
static int mbpo__rope_index(const mbpo_config *c, const int32_t *ids, int64_t S, const int64_t *grids,
                            int n_runs, int64_t *pos, int64_t stride, int64_t *delta, int seq) {
    int64_t s = 0, p = 0;
    int run = 0;
    while (s < S) {
        if (ids[s] == c->video_token_id)
            return mbpo__fail("sequence %d: token %lld is <|video_pad|>; videos are not supported", seq, (long long)s);
        if (ids[s] == c->image_token_id) {
            int64_t t, gh, gw, n, kk, len = 0;
            if (run >= n_runs)
                return mbpo__fail("sequence %d: image run %d at token %lld has no image", seq, run, (long long)s);
            t = grids[3 * run]; gh = grids[3 * run + 1] / c->v_merge; gw = grids[3 * run + 2] / c->v_merge;
            n = t * gh * gw;
            while (s + len < S && ids[s + len] == c->image_token_id) len++;
            if (len != n)
                return mbpo__fail("sequence %d: image run %d at token %lld has %lld <|image_pad|> tokens but its "
                                  "image (grid %lldx%lldx%lld) needs %lld", seq, run, (long long)s, (long long)len,
                                  (long long)t, (long long)grids[3 * run + 1], (long long)grids[3 * run + 2], (long long)n);
            for (kk = 0; kk < n; kk++) {
                pos[s + kk] = p + kk / (gh * gw);
                pos[stride + s + kk] = p + (kk / gw) % gh;
                pos[2 * stride + s + kk] = p + kk % gw;
            }
            /* the next text token continues after the largest id used */
            p += t > gh ? (t > gw ? t : gw) : (gh > gw ? gh : gw);
            s += n;
            run++;
        } else {
            pos[s] = pos[stride + s] = pos[2 * stride + s] = p;
            p++; s++;
        }
    }
    if (run != n_runs)
        return mbpo__fail("sequence %d: %d images given but %d image runs found", seq, n_runs, run);
    *delta = p - S;
    return 1;
}
MBPODEF int mbpo_rope_index(const mbpo_config *cfg, const int32_t *ids, int64_t S, const int32_t *grid_thw,
                            int n_images, int64_t *pos, int64_t *delta) {
    int64_t *g = (int64_t *)mbpo__calloc((size_t)n_images * 3 + 1, sizeof(int64_t));
    int i, ok;
    if (!g) return 0;
    for (i = 0; i < 3 * n_images; i++) g[i] = grid_thw[i];
    ok = mbpo__rope_index(cfg, ids, S, g, n_images, pos, S, delta, 0);
    mbpo_free(g);
    return ok;
}

/* Position of patch row r of an image with grid (t, h, w): rows come in merge x merge
   blocks (QWEN2VL.md 1.4), so row r sits at patch row hp, column wp. */
static void mbpo__patch_hw(int64_t r, int64_t h, int64_t w, int64_t merge, int64_t *hp, int64_t *wp) {
    int64_t rr = r % (h * w), block = rr / (merge * merge), in = rr % (merge * merge);
    *hp = (block / (w / merge)) * merge + in / merge;
    *wp = (block % (w / merge)) * merge + in % merge;
}

/* ------------------------------------------------------------------ 3. model: forward */

/* Check a batch against the config and the plan, and lay out the activations for it. */
static int mbpo__batch_prepare(mbpo_model *m, const mbpo_batch *b) {
    const mbpo_config *c = &m->cfg;
    mbpo_acts *a = m->acts;
    int64_t T, P = 0, N = 0, t, s, mm = c->v_merge * c->v_merge;
    int i;
    size_t n_ints;
    if (!a) return mbpo__fail("mbpo_model_forward: call mbpo_model_plan first");
    if (b->n_seqs < 1 || !b->ids || !b->seq_offsets || !b->target)
        return mbpo__fail("batch: needs n_seqs >= 1, ids, seq_offsets and target");
    if (b->seq_offsets[0] != 0) return mbpo__fail("batch: seq_offsets[0] must be 0");
    for (s = 0; s < b->n_seqs; s++)
        if (b->seq_offsets[s + 1] <= b->seq_offsets[s]) return mbpo__fail("batch: sequence %lld is empty", (long long)s);
    T = b->seq_offsets[b->n_seqs];
    if (T > a->max_T) return mbpo__fail("batch: %lld tokens exceed the plan's %lld (mbpo_model_plan)", (long long)T, (long long)a->max_T);
    if (mbpo__max_threads() > a->threads) return mbpo__fail("batch: more OpenMP threads than when planned; plan again");
    for (t = 0; t < T; t++)
        if (b->ids[t] < 0 || b->ids[t] >= c->vocab_size)
            return mbpo__fail("batch: token %lld has id %d outside the vocabulary [0, %lld)", (long long)t, b->ids[t], (long long)c->vocab_size);
    for (s = 0; s < b->n_seqs; s++) {
        if (b->target[b->seq_offsets[s]]) return mbpo__fail("batch: sequence %lld: its first token cannot be a target", (long long)s);
        for (t = b->seq_offsets[s]; t < b->seq_offsets[s + 1]; t++) N += b->target[t] != 0;
    }
    if (N > a->max_N) return mbpo__fail("batch: %lld targets exceed the plan's %lld", (long long)N, (long long)a->max_N);
    if (b->n_images < 0 || b->n_images > a->max_images) return mbpo__fail("batch: %d images exceed the plan", b->n_images);
    for (i = 0; i < b->n_images; i++) {
        const int32_t *g = b->grid_thw + 3 * i;
        if (g[0] < 1 || g[1] < 1 || g[2] < 1 || g[1] % c->v_merge || g[2] % c->v_merge)
            return mbpo__fail("batch: image %d has grid %dx%dx%d; h and w must be positive multiples of %lld",
                              i, g[0], g[1], g[2], (long long)c->v_merge);
        P += (int64_t)g[0] * g[1] * g[2];
    }
    if (P > a->max_P) return mbpo__fail("batch: %lld patches exceed the plan's %lld", (long long)P, (long long)a->max_P);
    if (P && !b->pixel_values) return mbpo__fail("batch: images given without pixel_values");
    if (b->n_images && (!b->image_refs || !b->image_ref_offsets || !b->grid_thw))
        return mbpo__fail("batch: images given without grid_thw, image_refs or image_ref_offsets");
    if (b->n_images) {
        if (b->image_ref_offsets[0] != 0) return mbpo__fail("batch: image_ref_offsets[0] must be 0");
        for (s = 0; s < b->n_seqs; s++)
            if (b->image_ref_offsets[s + 1] < b->image_ref_offsets[s] ||
                b->image_ref_offsets[s + 1] - b->image_ref_offsets[s] > b->seq_offsets[s + 1] - b->seq_offsets[s])
                return mbpo__fail("batch: image_ref_offsets of sequence %lld decrease or exceed its length", (long long)s);
    }
    mbpo__acts_layout(a, c, T, P, N, b->n_images, a->threads, a->base, a->ibase, &n_ints);
    a->T = T; a->P = P; a->N = N; a->n_images = b->n_images; a->n_feat = P / mm; a->n_seqs = b->n_seqs;
    a->img_poff[0] = a->img_foff[0] = 0;
    for (i = 0; i < b->n_images; i++) {
        const int32_t *g = b->grid_thw + 3 * i;
        a->img_poff[i + 1] = a->img_poff[i] + (int64_t)g[0] * g[1] * g[2];
        a->img_foff[i + 1] = a->img_foff[i] + (int64_t)g[0] * g[1] * g[2] / mm;
    }
    /* positions, image-feature rows and targets, sequence by sequence */
    N = 0;
    for (s = 0; s < b->n_seqs; s++) {
        int64_t off = b->seq_offsets[s], S = b->seq_offsets[s + 1] - off, delta, r0 = 0, r1 = 0, k = 0;
        if (b->n_images) { r0 = b->image_ref_offsets[s]; r1 = b->image_ref_offsets[s + 1]; }
        for (i = 0; i < (int)(r1 - r0); i++) {
            int32_t img = b->image_refs[r0 + i];
            if (img < 0 || img >= b->n_images)
                return mbpo__fail("batch: sequence %lld refers to image %d of %d", (long long)s, img, b->n_images);
            a->seq_grid[3 * i] = b->grid_thw[3 * img];
            a->seq_grid[3 * i + 1] = b->grid_thw[3 * img + 1];
            a->seq_grid[3 * i + 2] = b->grid_thw[3 * img + 2];
        }
        if (!mbpo__rope_index(c, b->ids + off, S, a->seq_grid, (int)(r1 - r0), a->pos + off, T, &delta, (int)s)) return 0;
        /* the k-th image token of the sequence takes the next row of its run's image */
        for (t = 0, i = -1; t < S; t++) {
            if (b->ids[off + t] == c->image_token_id) {
                if (t == 0 || b->ids[off + t - 1] != c->image_token_id) { i++; k = a->img_foff[b->image_refs[r0 + i]]; }
                a->feat_row[off + t] = k++;
            } else {
                a->feat_row[off + t] = -1;
            }
            if (t > 0 && b->target[off + t]) { a->tgt_row[N] = off + t - 1; a->tgt_label[N++] = b->ids[off + t]; }
        }
    }
    return 1;
}

static void mbpo__vision_forward(mbpo_model *m, const mbpo_batch *b) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    mbpo_acts *a = m->acts;
    int64_t P = a->P, E = c->v_embed_dim, F = c->v_mlp_hidden, NHv = c->v_heads, HSv = E / NHv;
    int64_t mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm, H = c->hidden_size, l, r, i, j;
    int64_t quarter = HSv / 4, half = HSv / 2;
    /* 2-D rotary table: the first half of the angles follow the patch row, the second the column */
    for (j = 0; j < quarter; j++) {
        float inv = mbpo__inv_freq(c->v_rope_theta, j, half);   /* once per frequency */
        for (i = 0; i < a->n_images; i++) {
            const int32_t *g = b->grid_thw + 3 * i;
            for (r = a->img_poff[i]; r < a->img_poff[i + 1]; r++) {
                int64_t hp, wp;
                float ah, aw;
                mbpo__patch_hw(r - a->img_poff[i], g[1], g[2], c->v_merge, &hp, &wp);
                ah = (float)hp * inv; aw = (float)wp * inv;
                a->vcos[r * half + j] = cosf(ah); a->vsin[r * half + j] = sinf(ah);
                a->vcos[r * half + quarter + j] = cosf(aw); a->vsin[r * half + quarter + j] = sinf(aw);
            }
        }
    }
    /* patch embedding: the Conv3d with stride = kernel is a Linear(PIX -> E) */
    mbpo__matmul_forward(a->vx, b->pixel_values, w->patch_embed_w, NULL, P, mbpo_config_pix(c), E);
    for (l = 0; l < c->v_depth; l++) {
        const mbpo_vision_block *vb = &w->vblocks[l];
        float *x = a->vx + l * P * E, *ln1 = a->vln1 + l * P * E, *qkv = a->vqkv + l * P * 3 * E;
        float *att = a->vatt + l * P * E, *mid = a->vmid + l * P * E, *ln2 = a->vln2 + l * P * E;
        float *fc1 = a->vfc1 + l * P * F, *act = a->vact + l * P * F, *out = a->vx + (l + 1) * P * E;
        float *lse = a->vlse + l * NHv * P;
        /* x = x + proj(attn(LN1(x))) */
        mbpo__layernorm_forward(ln1, a->vln1_mean + l * P, a->vln1_rstd + l * P, x, vb->norm1_w, vb->norm1_b, P, E, 1e-6f);
        mbpo__matmul_forward(qkv, ln1, vb->qkv_w, vb->qkv_b, P, E, 3 * E);        /* (P, 3E) = [q | k | v] */
        mbpo__rope_apply(qkv, a->vcos, a->vsin, P, NHv, HSv, 3 * E, 1.0f);          /* q */
        mbpo__rope_apply(qkv + E, a->vcos, a->vsin, P, NHv, HSv, 3 * E, 1.0f);      /* k */
        /* attention never crosses images (one segment per image and temporal group) */
        for (i = 0; i < a->n_images; i++) {
            int64_t seg = (int64_t)b->grid_thw[3 * i + 1] * b->grid_thw[3 * i + 2], s0;
            for (s0 = a->img_poff[i]; s0 < a->img_poff[i + 1]; s0 += seg)
                mbpo__attention_forward(att + s0 * E, lse + s0, qkv + s0 * 3 * E, qkv + s0 * 3 * E + E,
                                        qkv + s0 * 3 * E + 2 * E, seg, NHv, NHv, HSv, 3 * E, 3 * E, E, P, 0,
                                        a->attn_scratch);
        }
        mbpo__matmul_forward(mid, att, vb->proj_w, vb->proj_b, P, E, E);
        for (j = 0; j < P * E; j++) mid[j] += x[j];
        /* x = x + fc2(quick_gelu(fc1(LN2(x)))) */
        mbpo__layernorm_forward(ln2, a->vln2_mean + l * P, a->vln2_rstd + l * P, mid, vb->norm2_w, vb->norm2_b, P, E, 1e-6f);
        mbpo__matmul_forward(fc1, ln2, vb->fc1_w, vb->fc1_b, P, E, F);
        mbpo__quick_gelu_forward(act, fc1, P * F);
        mbpo__matmul_forward(out, act, vb->fc2_w, vb->fc2_b, P, F, E);
        for (j = 0; j < P * E; j++) out[j] += mid[j];
    }
    /* merger: LN, then each merge block's mm consecutive rows read as one (M = mm E) row */
    mbpo__layernorm_forward(a->mln, a->mln_mean, a->mln_rstd, a->vx + c->v_depth * P * E, w->merger_ln_w,
                            w->merger_ln_b, P, E, 1e-6f);
    mbpo__matmul_forward(a->mfc1, a->mln, w->merger_fc1_w, w->merger_fc1_b, PF, M, M);
    mbpo__gelu_forward(a->mact, a->mfc1, PF * M);
    mbpo__matmul_forward(a->feat, a->mact, w->merger_fc2_w, w->merger_fc2_b, PF, M, H);
}

static void mbpo__lm_forward(mbpo_model *m, const mbpo_batch *b) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    mbpo_acts *a = m->acts;
    int64_t T = a->T, H = c->hidden_size, I = c->intermediate_size, HS = c->head_dim, half = HS / 2;
    int64_t NH = c->n_heads, NKV = c->n_kv_heads, QD = NH * HS, KD = NKV * HS, l, t, j, s;
    float eps = (float)c->rms_norm_eps;
    /* M-RoPE table: frequency slot j reads the t, h or w position by mrope_section */
    for (j = 0; j < half; j++) {
        int comp = j < c->mrope_section[0] ? 0 : j < c->mrope_section[0] + c->mrope_section[1] ? 1 : 2;
        float inv = mbpo__inv_freq(c->rope_theta, j, HS);
        for (t = 0; t < T; t++) {
            float ang = (float)a->pos[comp * T + t] * inv;
            a->cos[t * half + j] = cosf(ang);
            a->sin[t * half + j] = sinf(ang);
        }
    }
    /* inputs_embeds: token embeddings, image-pad tokens replaced by image features */
    for (t = 0; t < T; t++) {
        const float *src = a->feat_row[t] >= 0 ? a->feat + a->feat_row[t] * H : w->embed + (int64_t)b->ids[t] * H;
        memcpy(a->h + t * H, src, (size_t)H * sizeof(float));
    }
    for (l = 0; l < c->n_layers; l++) {
        const mbpo_decoder_layer *d = &w->layers[l];
        float *x = a->h + l * T * H, *x1 = a->x1 + l * T * H, *q = a->q + l * T * QD, *k = a->k + l * T * KD;
        float *v = a->v + l * T * KD, *att = a->att + l * T * QD, *mid = a->hmid + l * T * H;
        float *x2 = a->x2 + l * T * H, *gate = a->gate + l * T * I, *up = a->up + l * T * I;
        float *act = a->act + l * T * I, *out = a->h + (l + 1) * T * H;
        /* h = h + o_proj(attn(RMSNorm(h))) */
        mbpo__rmsnorm_forward(x1, a->rstd1 + l * T, x, d->in_norm_w, T, H, eps);
        mbpo__matmul_forward(q, x1, d->q_w, d->q_b, T, H, QD);
        mbpo__matmul_forward(k, x1, d->k_w, d->k_b, T, H, KD);
        mbpo__matmul_forward(v, x1, d->v_w, d->v_b, T, H, KD);
        mbpo__rope_apply(q, a->cos, a->sin, T, NH, HS, QD, 1.0f);
        mbpo__rope_apply(k, a->cos, a->sin, T, NKV, HS, KD, 1.0f);
        for (s = 0; s < b->n_seqs; s++) {   /* causal attention within each packed sequence */
            int64_t o = b->seq_offsets[s], S = b->seq_offsets[s + 1] - o;
            mbpo__attention_forward(att + o * QD, a->lse + l * NH * T + o, q + o * QD, k + o * KD, v + o * KD,
                                    S, NH, NKV, HS, QD, KD, QD, T, 1, a->attn_scratch);
        }
        mbpo__matmul_forward(mid, att, d->o_w, NULL, T, QD, H);
        for (j = 0; j < T * H; j++) mid[j] += x[j];
        /* h = h + down(silu(gate(x)) * up(x)), x = RMSNorm(h) */
        mbpo__rmsnorm_forward(x2, a->rstd2 + l * T, mid, d->post_norm_w, T, H, eps);
        mbpo__matmul_forward(gate, x2, d->gate_w, NULL, T, H, I);
        mbpo__matmul_forward(up, x2, d->up_w, NULL, T, H, I);
        mbpo__swiglu_forward(act, gate, up, T * I);
        mbpo__matmul_forward(out, act, d->down_w, NULL, T, I, H);
        for (j = 0; j < T * H; j++) out[j] += mid[j];
    }
    mbpo__rmsnorm_forward(a->xf, a->rstdf, a->h + c->n_layers * T * H, w->norm_w, T, H, eps);
}

/* Logits of a chunk of target rows [n0, n0+cn): gather their final-norm rows, then one
   matmul against the (V, H) head. Only CH x V logits exist at a time. */
static void mbpo__head_chunk(mbpo_model *m, int64_t n0, int64_t cn) {
    mbpo_acts *a = m->acts;
    int64_t H = m->cfg.hidden_size, r;
    for (r = 0; r < cn; r++) memcpy(a->chunk_x + r * H, a->xf + a->tgt_row[n0 + r] * H, (size_t)H * sizeof(float));
    mbpo__matmul_forward(a->chunk_logits, a->chunk_x, m->w.lm_head, NULL, cn, H, m->cfg.vocab_size);
}

MBPODEF int64_t mbpo_model_forward(mbpo_model *m, const mbpo_batch *b, float *logp) {
    mbpo_acts *a = m->acts;
    int64_t n0, V = m->cfg.vocab_size;
    if (a) a->have_forward = 0;
    if (!mbpo__batch_prepare(m, b)) return -1;
    if (a->P) mbpo__vision_forward(m, b);
    mbpo__lm_forward(m, b);
    /* fused lm_head + log-softmax + gather: logp = z[y] - logsumexp(z) */
    for (n0 = 0; n0 < a->N; n0 += MBPO__HEAD_CHUNK) {
        int64_t cn = a->N - n0 < MBPO__HEAD_CHUNK ? a->N - n0 : MBPO__HEAD_CHUNK;
        mbpo__head_chunk(m, n0, cn);
        mbpo__logsoftmax_gather_forward(logp + n0, a->tgt_lse + n0, a->chunk_logits, a->tgt_label + n0, cn, V);
    }
    a->have_forward = 1;
    return a->N;
}

/* ------------------------------------------------------------------ 3. model: backward */

#define MBPO__G(ptr) (m->grads ? (ptr) : NULL)   /* parameter gradient, or skip it */

static void mbpo__lm_backward(mbpo_model *m, const mbpo_batch *b) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    mbpo_acts *a = m->acts;
    int64_t T = a->T, H = c->hidden_size, I = c->intermediate_size, HS = c->head_dim;
    int64_t NH = c->n_heads, NKV = c->n_kv_heads, QD = NH * HS, KD = NKV * HS, l, s;
    float *dh = a->dh, *dx = a->dx, *datt = a->dbig1, *dact = a->dbig1, *dgate = a->dbig2, *dup = a->dbig3;
    /* dh = d(final hidden) from d(final norm) */
    memset(dh, 0, (size_t)(T * H) * sizeof(float));
    mbpo__rmsnorm_backward(dh, MBPO__G(m->g.norm_w), a->dxf, a->h + c->n_layers * T * H, w->norm_w, a->rstdf, T, H);
    for (l = c->n_layers - 1; l >= 0; l--) {
        const mbpo_decoder_layer *d = &w->layers[l];
        mbpo_decoder_layer *g = m->grads ? &m->g.layers[l] : NULL;
        float *x = a->h + l * T * H, *x1 = a->x1 + l * T * H, *q = a->q + l * T * QD, *k = a->k + l * T * KD;
        float *v = a->v + l * T * KD, *att = a->att + l * T * QD, *mid = a->hmid + l * T * H;
        float *x2 = a->x2 + l * T * H, *gate = a->gate + l * T * I, *up = a->up + l * T * I, *act = a->act + l * T * I;
        /* MLP branch; dh carries d(out) and becomes d(mid) through the residual */
        memset(dact, 0, (size_t)(T * I) * sizeof(float));
        mbpo__matmul_backward(dact, g ? g->down_w : NULL, NULL, dh, act, d->down_w, T, I, H);
        mbpo__swiglu_backward(dgate, dup, dact, gate, up, T * I);
        memset(dx, 0, (size_t)(T * H) * sizeof(float));
        mbpo__matmul_backward(dx, g ? g->gate_w : NULL, NULL, dgate, x2, d->gate_w, T, H, I);
        mbpo__matmul_backward(dx, g ? g->up_w : NULL, NULL, dup, x2, d->up_w, T, H, I);
        mbpo__rmsnorm_backward(dh, g ? g->post_norm_w : NULL, dx, mid, d->post_norm_w, a->rstd2 + l * T, T, H);
        /* attention branch; dh becomes d(x) */
        memset(datt, 0, (size_t)(T * QD) * sizeof(float));
        mbpo__matmul_backward(datt, g ? g->o_w : NULL, NULL, dh, att, d->o_w, T, QD, H);
        for (s = 0; s < b->n_seqs; s++) {
            int64_t o = b->seq_offsets[s], S = b->seq_offsets[s + 1] - o;
            mbpo__attention_backward(a->dq + o * QD, a->dk + o * KD, a->dv + o * KD, datt + o * QD, att + o * QD,
                                     a->lse + l * NH * T + o, q + o * QD, k + o * KD, v + o * KD, S, NH, NKV, HS,
                                     QD, KD, QD, T, 1, a->attn_scratch);
        }
        mbpo__rope_apply(a->dq, a->cos, a->sin, T, NH, HS, QD, -1.0f);
        mbpo__rope_apply(a->dk, a->cos, a->sin, T, NKV, HS, KD, -1.0f);
        memset(dx, 0, (size_t)(T * H) * sizeof(float));
        mbpo__matmul_backward(dx, g ? g->q_w : NULL, g ? g->q_b : NULL, a->dq, x1, d->q_w, T, H, QD);
        mbpo__matmul_backward(dx, g ? g->k_w : NULL, g ? g->k_b : NULL, a->dk, x1, d->k_w, T, H, KD);
        mbpo__matmul_backward(dx, g ? g->v_w : NULL, g ? g->v_b : NULL, a->dv, x1, d->v_w, T, H, KD);
        mbpo__rmsnorm_backward(dh, g ? g->in_norm_w : NULL, dx, x, d->in_norm_w, a->rstd1 + l * T, T, H);
    }
    /* dh = d(inputs_embeds): image-pad rows go to the image features, the others to the
       embedding table (scatter-add; repeated tokens accumulate). Parallel over columns so
       no two threads touch the same value. The pad row, if any, gets no gradient (torch's
       padding_idx). */
    if (a->n_feat) memset(a->dfeat, 0, (size_t)(a->n_feat * H) * sizeof(float));
    {
        int64_t j0;
        MBPO__OMP("omp parallel for schedule(static)")
        for (j0 = 0; j0 < H; j0 += 16) {
            int64_t t, j, j1 = j0 + 16 < H ? j0 + 16 : H;
            for (t = 0; t < T; t++) {
                float *dst;
                if (a->feat_row[t] >= 0) dst = a->dfeat + a->feat_row[t] * H;
                else if (m->grads && b->ids[t] != c->pad_token_id) dst = m->g.embed + (int64_t)b->ids[t] * H;
                else continue;
                for (j = j0; j < j1; j++) dst[j] += dh[t * H + j];
            }
        }
    }
}

static void mbpo__vision_backward(mbpo_model *m, const mbpo_batch *b, float *dpixel) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    mbpo_acts *a = m->acts;
    int64_t P = a->P, E = c->v_embed_dim, F = c->v_mlp_hidden, NHv = c->v_heads, HSv = E / NHv;
    int64_t mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm, H = c->hidden_size, l, i;
    float *dvx = a->dvx, *dvx2 = a->dvx2, *dv1 = a->dv1, *dv2 = a->dv2;
    /* merger */
    memset(dv1, 0, (size_t)(PF * M) * sizeof(float));
    mbpo__matmul_backward(dv1, MBPO__G(m->g.merger_fc2_w), MBPO__G(m->g.merger_fc2_b), a->dfeat, a->mact,
                          w->merger_fc2_w, PF, M, H);
    mbpo__gelu_backward(dv2, dv1, a->mfc1, PF * M);
    memset(dvx2, 0, (size_t)(P * E) * sizeof(float));
    mbpo__matmul_backward(dvx2, MBPO__G(m->g.merger_fc1_w), MBPO__G(m->g.merger_fc1_b), dv2, a->mln,
                          w->merger_fc1_w, PF, M, M);
    memset(dvx, 0, (size_t)(P * E) * sizeof(float));
    mbpo__layernorm_backward(dvx, MBPO__G(m->g.merger_ln_w), MBPO__G(m->g.merger_ln_b), dvx2,
                             a->vx + c->v_depth * P * E, w->merger_ln_w, a->mln_mean, a->mln_rstd, P, E);
    for (l = c->v_depth - 1; l >= 0; l--) {
        const mbpo_vision_block *vb = &w->vblocks[l];
        mbpo_vision_block *g = m->grads ? &m->g.vblocks[l] : NULL;
        float *x = a->vx + l * P * E, *ln1 = a->vln1 + l * P * E, *qkv = a->vqkv + l * P * 3 * E;
        float *att = a->vatt + l * P * E, *mid = a->vmid + l * P * E, *ln2 = a->vln2 + l * P * E;
        float *fc1 = a->vfc1 + l * P * F, *act = a->vact + l * P * F, *lse = a->vlse + l * NHv * P;
        /* MLP branch */
        memset(dv1, 0, (size_t)(P * F) * sizeof(float));
        mbpo__matmul_backward(dv1, g ? g->fc2_w : NULL, g ? g->fc2_b : NULL, dvx, act, vb->fc2_w, P, F, E);
        mbpo__quick_gelu_backward(dv2, dv1, fc1, P * F);
        memset(dvx2, 0, (size_t)(P * E) * sizeof(float));
        mbpo__matmul_backward(dvx2, g ? g->fc1_w : NULL, g ? g->fc1_b : NULL, dv2, ln2, vb->fc1_w, P, E, F);
        mbpo__layernorm_backward(dvx, g ? g->norm2_w : NULL, g ? g->norm2_b : NULL, dvx2, mid, vb->norm2_w,
                                 a->vln2_mean + l * P, a->vln2_rstd + l * P, P, E);
        /* attention branch: dv1 becomes d(qkv) (P, 3E) */
        memset(a->dvatt, 0, (size_t)(P * E) * sizeof(float));
        mbpo__matmul_backward(a->dvatt, g ? g->proj_w : NULL, g ? g->proj_b : NULL, dvx, att, vb->proj_w, P, E, E);
        for (i = 0; i < a->n_images; i++) {
            int64_t seg = (int64_t)b->grid_thw[3 * i + 1] * b->grid_thw[3 * i + 2], s0;
            for (s0 = a->img_poff[i]; s0 < a->img_poff[i + 1]; s0 += seg)
                mbpo__attention_backward(dv1 + s0 * 3 * E, dv1 + s0 * 3 * E + E, dv1 + s0 * 3 * E + 2 * E,
                                         a->dvatt + s0 * E, att + s0 * E, lse + s0, qkv + s0 * 3 * E,
                                         qkv + s0 * 3 * E + E, qkv + s0 * 3 * E + 2 * E, seg, NHv, NHv, HSv,
                                         3 * E, 3 * E, E, P, 0, a->attn_scratch);
        }
        mbpo__rope_apply(dv1, a->vcos, a->vsin, P, NHv, HSv, 3 * E, -1.0f);
        mbpo__rope_apply(dv1 + E, a->vcos, a->vsin, P, NHv, HSv, 3 * E, -1.0f);
        memset(dvx2, 0, (size_t)(P * E) * sizeof(float));
        mbpo__matmul_backward(dvx2, g ? g->qkv_w : NULL, g ? g->qkv_b : NULL, dv1, ln1, vb->qkv_w, P, E, 3 * E);
        mbpo__layernorm_backward(dvx, g ? g->norm1_w : NULL, g ? g->norm1_b : NULL, dvx2, x, vb->norm1_w,
                                 a->vln1_mean + l * P, a->vln1_rstd + l * P, P, E);
    }
    /* patch embedding */
    if (dpixel) memset(dpixel, 0, (size_t)(P * mbpo_config_pix(c)) * sizeof(float));
    mbpo__matmul_backward(dpixel, MBPO__G(m->g.patch_embed_w), NULL, dvx, b->pixel_values, w->patch_embed_w,
                          P, mbpo_config_pix(c), E);
}

MBPODEF int mbpo_model_backward(mbpo_model *m, const mbpo_batch *b, const float *dlogp, float *dpixel_values) {
    mbpo_acts *a = m->acts;
    int64_t n0, V = m->cfg.vocab_size, H = m->cfg.hidden_size;
    if (!a || !a->have_forward) return mbpo__fail("mbpo_model_backward: no forward pass to go back through");
    if (a->T != b->seq_offsets[b->n_seqs] || a->n_images != b->n_images || a->n_seqs != b->n_seqs)
        return mbpo__fail("mbpo_model_backward: not the batch of the last forward");
    /* fused head backward, chunk by chunk: dz = dlogp (onehot(y) - softmax(z)) */
    memset(a->dxf, 0, (size_t)(a->T * H) * sizeof(float));
    for (n0 = 0; n0 < a->N; n0 += MBPO__HEAD_CHUNK) {
        int64_t cn = a->N - n0 < MBPO__HEAD_CHUNK ? a->N - n0 : MBPO__HEAD_CHUNK, r;
        mbpo__head_chunk(m, n0, cn);
        mbpo__logsoftmax_gather_backward(a->chunk_logits, dlogp + n0, a->tgt_lse + n0, a->tgt_label + n0, cn, V);
        memset(a->chunk_dx, 0, (size_t)(cn * H) * sizeof(float));
        mbpo__matmul_backward(a->chunk_dx, MBPO__G(m->g.lm_head), NULL, a->chunk_logits, a->chunk_x, m->w.lm_head,
                              cn, H, V);
        for (r = 0; r < cn; r++) {   /* each target has its own row: no collisions */
            float *dst = a->dxf + a->tgt_row[n0 + r] * H;
            int64_t j;
            for (j = 0; j < H; j++) dst[j] += a->chunk_dx[r * H + j];
        }
    }
    mbpo__lm_backward(m, b);
    if (a->P && (m->grads || dpixel_values)) mbpo__vision_backward(m, b, dpixel_values);
    return 1;
}
#undef MBPO__G

MBPODEF void mbpo_model_trace(const mbpo_model *m, mbpo_trace *t) {
    const mbpo_acts *a = m->acts;
    memset(t, 0, sizeof *t);
    if (!a || !a->have_forward) return;
    if (a->P) {
        t->patch_embed = a->vx;
        t->vision_block_out = a->vx + a->P * m->cfg.v_embed_dim;
        t->image_features = a->feat;
    }
    t->inputs_embeds = a->h;
    t->layer_out = a->h + a->T * m->cfg.hidden_size;
    t->final_norm = a->xf;
    t->position_ids = a->pos;
    t->dinputs_embeds = a->dh;
}
MBPODEF int mbpo_model_logits(const mbpo_model *m, int64_t t, float *row) {
    const mbpo_acts *a = m->acts;
    if (!a || !a->have_forward || t < 0 || t >= a->T) return mbpo__fail("mbpo_model_logits: no such token");
    mbpo__matmul_forward(row, a->xf + t * m->cfg.hidden_size, m->w.lm_head, NULL, 1, m->cfg.hidden_size,
                         m->cfg.vocab_size);
    return 1;
}

#endif /* MBPO_IMPLEMENTATION_DONE */
#endif /* MBPO_IMPLEMENTATION */

/*
   REVISION HISTORY
     0.1  (2026-11)  base layer, safetensors, config, Qwen2-VL forward/backward on the CPU.

   LICENSE (MIT)
   Copyright (c) 2026 the mbpo developers
   Permission is hereby granted, free of charge, to any person obtaining a copy of this
   software and associated documentation files (the "Software"), to deal in the Software
   without restriction, including without limitation the rights to use, copy, modify, merge,
   publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
   to whom the Software is furnished to do so, subject to the following conditions:
   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.
   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
   INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
   PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
   FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
   OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
   DEALINGS IN THE SOFTWARE.
*/
