/* mbpo.h - v0.1 - Modality-Balancing Preference Optimization for Qwen2-VL and Qwen2.5-VL,
   in one C header.

   Aligns a vision-language model with MBPO (Liu et al., 2025): Image Information Gain,
   adversarial negative mining with PGD, and a hybrid offline/online GRPO objective -
   with the whole Qwen2-VL / Qwen2.5-VL forward and backward pass written out in plain C.

   USAGE
     In exactly one C or C++ file:
         #define MBPO_IMPLEMENTATION
         #include "mbpo.h"
     Everywhere else just #include "mbpo.h". Build with OpenMP for threads; images are
     decoded by stb_image (Debian: apt-get install libstb-dev):
         cc -O2 -fopenmp my.c -lstb -lm
     Define MBPO_STATIC before the include to make every function static (private to one file).

   TABLE OF CONTENTS (the implementation follows the same order: the order data flows)
     1. base     failure reasons, allocation, RNG, JSON reader, safetensors read/write,
                 atomic file writes, directories, version and build, command-line flags
     2. inputs   tokenizer (and its pre-tokenizer), chat template, image loading and
                 preprocessing and its adjoint, dataset records
     3. model    config (both families), parameter table, ops (forward/backward), the op table
                 (every op the model runs, per backend: CPU here, CUDA in mbpo_cuda.cuh), vision
                 tower (Qwen2.5-VL's window order), merger, M-RoPE, decoder, the token log-prob
                 machine, KV-cache generation, sampler
     4. objectives IIG, PGD, verifiers, group advantages, hybrid GRPO loss, SFT loss, AdamW
     5. runs     mbpo_mine, mbpo_score, offline pair sets and their IIG, mbpo_train,
                 per-sample seeds
   The shapes world, its tiny model, CHAIR scoring and the demo pipeline (make demo) are not
   part of the library: demo/mbpo_demo.h builds them on this header's public API.

   COMPILE-TIME OPTIONS
     MBPO_IMPLEMENTATION   emit the implementation in this translation unit
     MBPO_STATIC           declare every public function static
     MBPO_MALLOC(n) / MBPO_FREE(p)   override the allocator (both or neither)
     MBPO_CUDA             (nvcc) add the CUDA op table of mbpo_cuda.cuh beside the CPU one, so
                           the same binary runs on either (mbpo_model_plan_on, --device cpu|cuda):
                             nvcc -x cu -DMBPO_CUDA -arch=sm_90 -Xcompiler -fopenmp my.c -lcublasLt -lstb -lm
     MBPO_CUDA_FP32        (with MBPO_CUDA) store activations and weights on the GPU in fp32, not
                           bf16: the parity build the CUDA tests compare tightly
     MBPO_MAX_JSON_DEPTH   nesting limit of the JSON reader (default 256)
     MBPO_MAX_ST_HEADER    largest safetensors header accepted, bytes (default 100 MB)
     MBPO_MAX_IMAGE_PIXELS largest image accepted, width x height (default 178956970, Pillow's
                           decompression-bomb limit)
     MBPO_MAX_JSON_BYTES   largest JSON document (a file, or a line of a JSONL file) the reader
                           accepts, bytes (default 4 GiB; LLaVA-665k's JSON is about 1 GB)
     MBPO_MAX_SEQ_LEN      longest token sequence (prompt + response, or prompt + max_new_tokens
                           when generating) (default 32768, Qwen2-VL's max_position_embeddings)
     Every limit's error message names the limit; raise one with -DNAME=value.
     MBPO_STB_IMPLEMENTATION  compile stb_image / stb_image_write into this file instead of
                           linking Debian's -lstb
     MBPO_STB_IMAGE_H, MBPO_STB_IMAGE_WRITE_H  where the stb headers are
                           (default <stb/stb_image.h>, <stb/stb_image_write.h>)
     MBPO_LIBJPEG          decode JPEG with libjpeg(-turbo) (link -ljpeg), the library Pillow
                           uses, so JPEG pixels match transformers' exactly; without it
                           stb_image decodes JPEG too (a few code values apart on some pixels)

   LICENSE: MIT, see the end of the file.
*/
#if defined(MBPO_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
/* fsync/fileno/rename for atomic writes are POSIX; this must precede every system header,
   so include mbpo.h first in the implementation file (or define _POSIX_C_SOURCE yourself). */
#define _POSIX_C_SOURCE 200809L
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE   /* and madvise (huge pages for the big buffers), which glibc declares only with it */
#endif
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
/* Set this thread's failure reason (printf-style) from code built on mbpo, so that its
   callers read every failure the same way; returns 0, for `return mbpo_failure_set(...)`. */
MBPODEF int mbpo_failure_set(const char *fmt, ...);

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
/* Parse line `lineno` (1-based) of a JSONL file `path`; a failure says "path:lineno: column C: ...". */
MBPODEF mbpo_json *mbpo_json_parse_line(const char *line, size_t len, const char *path, int64_t lineno);
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
/* n * size zeroed bytes from the library's allocator (MBPO_MALLOC, 256-byte aligned), to be
   released with mbpo_free; NULL with a reason on overflow or when out of memory. */
MBPODEF void *mbpo_calloc(size_t n, size_t size);
/* Make a directory and its parents (mkdir -p); 0 with a reason when one cannot be made or
   path exists and is not a directory. */
MBPODEF int   mbpo_mkdir(const char *path);

/* float <-> bf16 / f16 (round to nearest even; NaN kept quiet) */
MBPODEF float    mbpo_bf16_to_f32(uint16_t h);
MBPODEF uint16_t mbpo_f32_to_bf16(float f);
MBPODEF float    mbpo_f16_to_f32(uint16_t h);
MBPODEF uint16_t mbpo_f32_to_f16(float f);

/* Version and build. mbpo_build_info: one line, e.g.
   "mbpo 0.1.0; openmp 2 threads; libjpeg yes; cuda no; gcc 12.2.0" (the options of the file
   that holds the implementation; the thread count is omp_get_max_threads() now). */
#define MBPO_VERSION "0.1.0"
MBPODEF const char *mbpo_version(void);      /* MBPO_VERSION */
MBPODEF const char *mbpo_build_info(void);   /* a thread-local buffer, valid until the next call */

/* Command-line flags: a table of descriptors, one per long option, that is both the parser
   and the --help text (so the two cannot disagree). Values are parsed in full: a number must
   be the whole argument (no trailing characters, no NaN/inf, within its type) and within the
   flag's range. Accepted: --name value, --name=value, a switch alone (--quiet; --quiet=1 is
   refused); a value may not start with "--" unless given as --name=value. A flag given twice,
   an unknown flag, a missing or empty value, a bare argument, a "required" flag left out are
   errors. --help / -h and --version are reported to the caller, never stored. The
   destinations are written only when the whole command line is good; their values before
   parsing are the defaults --help shows. */
typedef enum {
    MBPO_FLAG_STRING,   /* const char *: points into argv */
    MBPO_FLAG_INT,      /* int */
    MBPO_FLAG_INT64,    /* int64_t */
    MBPO_FLAG_UINT64,   /* uint64_t: a negative value is refused, never wrapped */
    MBPO_FLAG_DOUBLE,   /* double: finite */
    MBPO_FLAG_SWITCH,   /* int: set to 1 when the flag is given; takes no value */
    MBPO_FLAG_CHOICE    /* int: the index of the value among `check`'s names */
} mbpo_flag_kind;
typedef struct {
    const char *name;   /* "--lr": two dashes and the name */
    const char *arg;    /* the value's name in --help ("N", "DIR"); NULL for a switch */
    mbpo_flag_kind kind;
    void *value;        /* the destination, of the kind's type */
    const char *check;  /* numbers: the allowed range, NULL (any), "> 0", ">= 1", "<= 8", "< 1",
                           or an interval "(0, 1]", "[1, 1000]"; CHOICE: the names, "pgd|rand";
                           STRING: NULL or "required"; SWITCH: NULL */
    const char *help;   /* may span lines ('\n'); --help appends the range and the default */
} mbpo_flag;
enum { MBPO_FLAGS_ERROR = 0, MBPO_FLAGS_OK = 1, MBPO_FLAGS_HELP = 2, MBPO_FLAGS_VERSION = 3 };
/* Parse argv[1..argc-1]. Returns MBPO_FLAGS_OK; MBPO_FLAGS_HELP or MBPO_FLAGS_VERSION when
   that flag comes (nothing stored); MBPO_FLAGS_ERROR with mbpo_failure_reason() a one-line
   message naming the flag ("--lr: 'abc' is not a number", "--model given twice"). A bad
   table (a name without "--", a malformed range) is an error too, whatever argv holds. */
MBPODEF int  mbpo_flags_parse(const mbpo_flag *flags, int n_flags, int argc, char **argv);
/* "usage: <prog> <synopsis>", then a line per flag from the table (the defaults read from the
   destinations), then --version and --help. */
MBPODEF void mbpo_flags_usage(FILE *out, const char *prog, const char *synopsis, const mbpo_flag *flags, int n_flags);
/* A driver's command line in one call: parse; --help prints the usage to stdout, --version
   "<prog>: <mbpo_build_info()>" to stdout; a bad flag prints "<prog>: <reason> (see --help)" to
   stderr. Returns 1 when the driver should go on, else 0 with *exit_code 0 (help, version)
   or 2 (a usage error). */
/* Threads that share the cores with another job. GCC's OpenMP runtime, unless told otherwise,
   spins for a long while (about 300,000 turns) when a thread waits at the end of a parallel
   loop: the fastest choice when the cores are mbpo's alone, and a collapse when another job
   runs beside it (the waiting thread burns the time slice its descheduled partner needs:
   mbpo-score 15x slower beside a 2-thread job). When neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT
   is set, this sets GOMP_SPINCOUNT=MBPO_SPINCOUNT and runs the program again from the start
   (libgomp reads its settings once, at load), Linux and GCC's runtime only; any value the
   user sets is kept. It runs again only a program whose argc/argv are exactly its own command
   line (/proc/self/cmdline: not a subcommand's argv, not a program started through ld.so or an
   interpreter) and not under valgrind; MBPO_NO_REEXEC compiles it out. mbpo_flags_handle calls
   it first, so every driver does; in a program of your own call it at the very top of main,
   with main's argc and argv, before reading input or opening files. */
#ifndef MBPO_SPINCOUNT
#define MBPO_SPINCOUNT "10000"
#endif
MBPODEF void mbpo_threads_setup(int argc, char **argv);
MBPODEF int  mbpo_flags_handle(const char *prog, const char *synopsis, const mbpo_flag *flags, int n_flags,
                               int argc, char **argv, int *exit_code);

/* ------------------------------------------------------------------ 2. inputs */

/* Tokenizer: byte-level BPE read from a Hugging Face tokenizer.json with the Qwen2 pipeline
   (added tokens split first, NFC, the Qwen2 pre-tokenizer regex, byte-level BPE; docs/QWEN2VL.md 7).
   Other pipelines are refused with a message. Not thread-safe (it keeps a word cache and
   scratch buffers): use one tokenizer per thread. */
typedef struct mbpo_tokenizer mbpo_tokenizer;
MBPODEF mbpo_tokenizer *mbpo_tokenizer_load(const char *path);
MBPODEF void mbpo_tokenizer_free(mbpo_tokenizer *tok);
/* Encode len bytes of UTF-8. with_special: added tokens written literally in the text
   become their ids (HF's default, split_special_tokens = false); 0 encodes them as text.
   Returns *n_ids ids in a buffer owned by the tokenizer, valid until its next call;
   NULL on error (invalid UTF-8). */
MBPODEF const int32_t *mbpo_tokenizer_encode(mbpo_tokenizer *tok, const char *text, size_t len,
                                             int with_special, int64_t *n_ids);
/* Decode to UTF-8; invalid byte sequences become U+FFFD as in HF. skip_special drops the
   special added tokens; ids with no token (padding rows of the model's vocabulary) decode to
   nothing, as in HF. NUL-terminated; *len (may be NULL) gets the byte length.
   Caller frees with mbpo_free. */
MBPODEF char *mbpo_tokenizer_decode(const mbpo_tokenizer *tok, const int32_t *ids, int64_t n,
                                    int skip_special, size_t *len);
/* Id of a token given as raw text ("<|im_end|>", "Hello"), or -1. */
MBPODEF int32_t mbpo_tokenizer_find(const mbpo_tokenizer *tok, const char *token);
MBPODEF int64_t mbpo_tokenizer_n_ids(const mbpo_tokenizer *tok);   /* 1 + the largest id */
/* The Qwen2 pre-tokenizer regex, as tokenizer.json's Split step must give it (a JSON string's
   value, unescaped), and that split on len bytes of UTF-8 (no NFC): piece k is the bytes
   [k ? ends[k-1] : 0, ends[k]). For building vocabularies whose words BPE will see whole.
   Returns the number of pieces, *ends allocated (mbpo_free); -1 on invalid UTF-8. */
#define MBPO_QWEN2_PATTERN "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
                           "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
MBPODEF int64_t mbpo_pretokenize(const char *text, size_t len, size_t **ends);
/* Unicode NFC of UTF-8 (tables of Unicode 15.0); NULL on invalid UTF-8. Caller frees with mbpo_free. */
MBPODEF char *mbpo_utf8_nfc(const char *text, size_t len, size_t *out_len);

/* Images: 8-bit RGB, row-major (H, W, 3). Decoding uses stb_image (link -lstb, Debian's
   libstb-dev) and converts to RGB the way Pillow's convert("RGB") does. */
typedef struct { int width, height; uint8_t *rgb; } mbpo_image;
/* A black (all-zero) image - the I_black of Image Information Gain. */
MBPODEF int  mbpo_image_init(mbpo_image *img, int width, int height);
MBPODEF int  mbpo_image_load(mbpo_image *img, const char *path);   /* PNG JPEG BMP GIF(frame 1) ... */
MBPODEF int  mbpo_image_load_memory(mbpo_image *img, const void *data, size_t len, const char *name);
/* stb_image alone, JPEG included (mbpo_image_load uses libjpeg for JPEG under MBPO_LIBJPEG). */
MBPODEF int  mbpo_image_decode_stb(mbpo_image *img, const void *data, size_t len, const char *name);
MBPODEF int  mbpo_image_write_png(const char *path, const mbpo_image *img);   /* atomic */
MBPODEF void mbpo_image_free(mbpo_image *img);

/* The image processor's settings (preprocessor_config.json; docs/QWEN2VL.md 1.1). */
typedef struct {
    int64_t min_pixels, max_pixels;  /* area bounds of the resized image */
    int64_t patch, temporal_patch, merge;
    double rescale;                  /* 1/255 */
    float mean[3], std[3];
    int fast;   /* which of transformers' two processors to match: 0 (MBPO_PROCESSOR_SLOW) Qwen2VLImageProcessor,
                   Pillow's bicubic; 1 (MBPO_PROCESSOR_FAST) Qwen2VLImageProcessorFast, torchvision's bicubic */
} mbpo_preproc;
#define MBPO_PROCESSOR_AUTO (-1)   /* what transformers 4.57 picks for the folder (mbpo_preproc_load) */
#define MBPO_PROCESSOR_SLOW 0
#define MBPO_PROCESSOR_FAST 1
MBPODEF void mbpo_preproc_default(mbpo_preproc *pp);   /* the Qwen2-VL hub values, slow processor */
/* mbpo_preproc_load = mbpo_preproc_load_as(pp, path, MBPO_PROCESSOR_AUTO). Forcing a processor
   also reads its size rule ("size" counts for the fast one only), as use_fast=... would. path may
   also be a processor_config.json with the settings under "image_processor" (transformers 5.x
   saves no preprocessor_config.json); model folders fall back to it, as transformers 4.57 does. */
MBPODEF int  mbpo_preproc_load(mbpo_preproc *pp, const char *path);
MBPODEF int  mbpo_preproc_load_as(mbpo_preproc *pp, const char *path, int processor);
/* The resized size: multiples of patch*merge, area within [min_pixels, max_pixels]. */
MBPODEF int  mbpo_smart_resize(const mbpo_preproc *pp, int64_t height, int64_t width,
                               int64_t *out_height, int64_t *out_width);
/* Pillow's BICUBIC resize, bit for bit (a copy when the size is unchanged). out is allocated. */
MBPODEF int  mbpo_image_resize(const mbpo_image *in, int out_width, int out_height, mbpo_image *out);
/* torchvision's resize(BICUBIC, antialias=True) of a uint8 image on the CPU, bit for bit. */
MBPODEF int  mbpo_image_resize_torch(const mbpo_image *in, int out_width, int out_height, mbpo_image *out);
/* Patches of an image of height x width (multiples of patch*merge): grid (1, H/p, W/p). */
MBPODEF int  mbpo_pixels_count(const mbpo_preproc *pp, int64_t height, int64_t width,
                               int64_t *n_patches, int32_t grid_thw[3]);
/* x (H, W, 3) in [0,1] -> pixel_values (P, PIX): normalise (as pp->fast's processor does),
   duplicate the frame, patch rows in merge order. mbpo_pixels_backward is its adjoint:
   dL/dpixel_values -> dL/dx. */
MBPODEF int  mbpo_pixels_from_float(const mbpo_preproc *pp, const float *x, int64_t height,
                                    int64_t width, float *pixel_values);
MBPODEF int  mbpo_pixels_backward(const mbpo_preproc *pp, const float *dpixel_values, int64_t height,
                                  int64_t width, float *dx);
MBPODEF void mbpo_image_to_float(const mbpo_preproc *pp, const mbpo_image *img, float *x);  /* u8 * 1/255 */
MBPODEF void mbpo_image_from_float(mbpo_image *img, const float *x);   /* clamp, round to 8 bits */
/* The processor's whole path: smart_resize, bicubic (Pillow's or torchvision's, by pp->fast),
   rescale, normalise, patches. The resized 8-bit image is what IIG and PGD work on (PGD moves
   its [0,1] floats, x, through mbpo_pixels_from_float / _backward with the same pp).
   *pixel_values is allocated (mbpo_free); resized (may be NULL) gets the resized image. */
MBPODEF int  mbpo_image_preprocess(const mbpo_preproc *pp, const mbpo_image *img, mbpo_image *resized,
                                   float **pixel_values, int64_t *n_patches, int32_t grid_thw[3]);

/* Chat template: one exchange in the Qwen2-VL Instruct format (docs/QWEN2VL.md 5.2). The question
   may mark image positions with "<image>" (LLaVA style; one newline after a marker is
   dropped); without markers its images come first. image_tokens[k] = grid_t*grid_h*grid_w /
   merge^2 pad tokens for image k. system NULL = "You are a helpful assistant.". With a
   response, target marks its tokens and the closing <|im_end|>; without, the ids end with
   the generation prompt "<|im_start|>assistant\n". */
typedef struct {
    int32_t *ids;                    /* (n) */
    uint8_t *target;                 /* (n) 1 on the response tokens and the closing <|im_end|> */
    int64_t n;
} mbpo_chat;
MBPODEF int  mbpo_chat_encode(mbpo_tokenizer *tok, const char *system, const char *question,
                              const int64_t *image_tokens, int n_images, const char *response,
                              mbpo_chat *out);
MBPODEF void mbpo_chat_free(mbpo_chat *chat);
MBPODEF int  mbpo_chat_count_images(const char *question);   /* "<image>" markers */

/* Datasets: LLaVA-style JSON array or JSONL records
     {"id": ..., "image": "path" | ["path", ...], "conversations":
      [{"from": "human", "value": "<image>\n..."}, {"from": "gpt", "value": "..."}, ...]}
   ("user"/"assistant" and "role"/"content" are accepted too; a "system" turn sets the system
   prompt). Every human turn answered by a gpt turn becomes one sample. */
typedef enum { MBPO_Q_OPEN = 0, MBPO_Q_YESNO = 1, MBPO_Q_MC = 2 } mbpo_qkind;
typedef struct {
    char *id;                        /* the record's id; "#k" appended for its k-th later turn */
    char *system;                    /* NULL: the default */
    char *question, *answer;
    char **images;                   /* (n_images) paths, image root prepended */
    char **image_files;              /* (n_images) the paths as the record gives them */
    int n_images;
    mbpo_qkind kind;
    char label;                      /* YESNO: 'Y' or 'N'; MC: the option letter */
    int64_t record;                  /* 0-based record index in the file */
    int turn;
} mbpo_sample;
typedef struct {
    mbpo_sample *samples;
    int64_t n, cap;
    int64_t n_bad;                   /* records skipped */
} mbpo_dataset;
/* Load a dataset; image paths are resolved against image_root (may be NULL) and must exist.
   A bad record (invalid JSON, missing image, unknown role, malformed turns) is reported
   on log (may be NULL) as "file:line: why" and skipped - or, when strict, stops the load
   with that message. */
MBPODEF int  mbpo_dataset_load(mbpo_dataset *ds, const char *path, const char *image_root, int strict,
                               FILE *log);
MBPODEF void mbpo_dataset_free(mbpo_dataset *ds);
/* Closed-ended detector: YESNO when a yes/no question ("Is ...", "... yes or no") is answered
   yes/no ("Yes", "No, ..."; not "Yes, no."), MC when the question lists options on lines
   "A. ..", "(A) .." or "A) .." and the answer names exactly one ("B", "(B)", "B. text",
   "Answer: B", the option's text); else OPEN. label: 'Y'/'N' or the letter. */
MBPODEF mbpo_qkind mbpo_question_kind(const char *question, const char *answer, char *label);

/* ------------------------------------------------------------------ 3. model */

/* The two model families (config.json "model_type"). They share the decoder, M-RoPE, the image
   processor and the chat template; Qwen2.5-VL's vision tower has RMSNorm, SwiGLU with biases and
   window attention (docs/QWEN25VL.md). */
typedef enum { MBPO_ARCH_QWEN2_VL = 0, MBPO_ARCH_QWEN2_5_VL = 1 } mbpo_arch;
#define MBPO_MAX_FULLATT 64          /* most entries of fullatt_block_indexes */

/* Qwen2-VL / Qwen2.5-VL configuration (config.json, transformers 4.x and 5.x layouts). */
typedef struct {
    mbpo_arch arch;                  /* from model_type: "qwen2_vl" or "qwen2_5_vl" */
    /* language model */
    int64_t vocab_size, hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    double rms_norm_eps, rope_theta;
    int mrope_section[3];            /* frequency slots taken from (t, h, w) positions */
    int tie_word_embeddings;
    int tie_from_checkpoint;         /* the config's two tie flags disagree (4.57 reads text_config's,
                                        5.x the top level): mbpo_model_load decides by whether the
                                        checkpoint has lm_head.weight */
    int64_t max_position_embeddings;
    int64_t image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
    int64_t bos_token_id, eos_token_id, pad_token_id;   /* -1 when absent */
    /* vision tower */
    int64_t v_depth, v_embed_dim, v_heads, v_mlp_hidden, v_patch, v_temporal_patch, v_merge,
            v_in_channels;
    double v_rope_theta;             /* hard-coded 10000 in transformers */
    /* Qwen2.5-VL only (0 for Qwen2-VL): window attention in the blocks not listed in v_fullatt */
    int64_t v_window_size;           /* window side in pixels (112): v_window_size/v_merge/v_patch units */
    int v_n_fullatt, v_fullatt[MBPO_MAX_FULLATT];   /* blocks attending over the whole image */
    int64_t v_tokens_per_second;     /* videos only; kept so a saved config.json says the same */
} mbpo_config;
MBPODEF int mbpo_config_load(mbpo_config *cfg, const char *path);        /* a config.json */
MBPODEF int mbpo_config_from_json(mbpo_config *cfg, const mbpo_json *root, const char *name);
/* Render as a config.json in the transformers 4.x layout. Caller frees with mbpo_free. */
MBPODEF char *mbpo_config_to_json(const mbpo_config *cfg);
MBPODEF int64_t mbpo_config_pix(const mbpo_config *cfg);   /* width of a pixel_values row */
/* Qwen2.5-VL's window order (docs/QWEN25VL.md 3.4) of a batch's images: perm[j] is the merge unit
   (in the raster order of all images, image after image) that takes place j; cu_window[0..n]
   the window boundaries in patch rows (n + 1 values). perm: (P / merge^2), cu_window: (P / merge^2 + 1).
   Returns the number of windows n (-1 with the reason for a bad grid or window); for Qwen2-VL
   the identity with one window per image and frame. */
MBPODEF int64_t mbpo_window_index(const mbpo_config *cfg, const int32_t *grid_thw, int n_images,
                                  int64_t *perm, int64_t *cu_window);

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
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;   /* norm biases: Qwen2-VL only */
    float *norm2_w, *norm2_b;
    float *fc1_w, *fc1_b, *fc2_w, *fc2_b;                          /* Qwen2-VL's QuickGELU MLP */
    float *gate_w, *gate_b, *up_w, *up_b, *down_w, *down_b;        /* Qwen2.5-VL's SwiGLU MLP */
} mbpo_vision_block;
typedef struct {
    float *in_norm_w, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w;
    float *post_norm_w, *gate_w, *up_w, *down_w;
} mbpo_decoder_layer;
typedef struct {
    float *patch_embed_w;            /* (E, PIX) - the Conv3d kernel flattened */
    mbpo_vision_block *vblocks;      /* [v_depth] */
    float *merger_ln_w, *merger_ln_b /* Qwen2-VL only */, *merger_fc1_w, *merger_fc1_b, *merger_fc2_w, *merger_fc2_b;
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

/* Where the model computes. Every build has the CPU; a build compiled by nvcc with MBPO_CUDA
   (make cuda) also has the GPU. The CPU ops are the specification the CUDA ops are tested
   against (tests/test_cuda.cu). */
typedef enum { MBPO_DEVICE_CPU = 0, MBPO_DEVICE_CUDA = 1 } mbpo_device;
/* "cpu" or "cuda" -> *out; 0 with a reason naming the accepted values otherwise. */
MBPODEF int mbpo_device_parse(const char *name, mbpo_device *out);
MBPODEF const char *mbpo_device_name(mbpo_device d);
/* 1 when this build can run on d here; 0 with the reason (no CUDA in this build, no GPU, a
   driver error) otherwise. */
MBPODEF int mbpo_device_available(mbpo_device d);

typedef struct mbpo_acts mbpo_acts;       /* activation arena (opaque) */
typedef struct mbpo__ops mbpo_ops;        /* a backend's op table (opaque) */
typedef struct mbpo__backend mbpo_backend;/* a backend's state: streams, handles, scratch (opaque) */
typedef struct mbpo_model_s {
    mbpo_config cfg;
    mbpo_param_table table;
    float *params;                   /* (table.total_floats) the host copy: loaded, saved, updated */
    float *grads;                    /* same layout; NULL until mbpo_model_plan(.., want_grads) */
    mbpo_weights w, g;               /* typed views of params and grads */
    mbpo_acts *acts;                 /* sized by mbpo_model_plan */
    /* the backend, chosen by mbpo_model_plan_on (the CPU by default) */
    mbpo_device device;
    /* called by the backward when decoder layer l's parameter gradients are complete (the
       range [lo, hi) of the parameter layout), to overlap their reduction with the rest of the
       backward (data parallelism over NCCL); NULL: none */
    int (*grad_ready)(void *ctx, struct mbpo_model_s *m, int64_t l, int64_t lo, int64_t hi);
    void *grad_ctx;
    uint64_t be_gen;                 /* which backend state be is: a new number at every create (an address may repeat) */
    int recompute;                   /* activation recomputation: set before planning; the arena keeps each decoder
                                        layer's input only and the backward runs a layer's forward again before its
                                        backward (the same ops on the same inputs: the same bits, one layer's memory) */
    const mbpo_ops *ops;
    mbpo_backend *be;
    void *xparams;                   /* the parameters as the backend stores them (CPU: == params) */
    float *xgrads;                   /* the gradients in backend memory, fp32 (CPU: == grads) */
    int params_stale;                /* host params changed since the last upload (not on the CPU) */
    int grads_stale;                 /* backend grads newer than m->grads (not on the CPU) */
    /* training on the backend (mbpo_model_adamw_step): on a device the fp32 master weights and
       the moments live there and the host copies are brought up to date only for a checkpoint */
    float *xmaster;                  /* fp32 master weights (CPU: == params) */
    float *xmoments;                 /* Adam m then v (2 x total) on a device; the 2 chunk buffers when streamed */
    int opt_fresh;                   /* xmaster and the backend moments hold the newest state */
    int host_stale;                  /* the backend's master (and moments) are newer than params and opt's */
    int borrowed;                    /* be and acts are another model's (mbpo_model_borrow_plan) */
    struct mbpo_model_s *borrower;   /* the model that borrows this one's plan (its be follows ours) */
    struct mbpo_model_s *lender;     /* the model whose plan this one borrows (the two unlink when either goes) */
    int pixels_on_backend;           /* the next forward finds its pixel rows in the arena (mbpo_pgd) */
} mbpo_model;

/* Allocate a model for cfg with zeroed parameters. */
MBPODEF int  mbpo_model_init(mbpo_model *m, const mbpo_config *cfg);
/* Random parameters from mbpo's RNG, drawn as tests/reference/refcommon.py's
   randomise_parameters draws them: norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2), matrices
   N(0, 1/fan_in), the token table N(0, 1) (for benchmarks and tests at real sizes). */
MBPODEF void mbpo_model_randomize(mbpo_model *m, uint64_t seed);
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
/* The same on a chosen device: the backend is fixed here, its memory (parameters, gradients,
   activations) allocated once; mbpo_model_plan keeps the device of the last plan (CPU at first).
   On a device other than the CPU, m->params stays the host copy: call
   mbpo_model_params_changed after changing it (an optimizer step) so the next forward uploads
   it, and mbpo_model_grads_to_host before reading m->grads. Both are no-ops on the CPU. */
/* m runs in owner's plan: its backend state and activation arena (same config and device),
   with m's own parameters. For a model whose forwards never fall between owner's forward and
   backward (mbpo_train's frozen reference: its log-probs are taken before the policy's
   forward), it saves a whole arena. Again after owner re-plans; free m before owner. */
MBPODEF int  mbpo_model_borrow_plan(mbpo_model *m, mbpo_model *owner);
MBPODEF int  mbpo_model_plan_on(mbpo_model *m, mbpo_device device, int64_t max_tokens,
                                int64_t max_patches, int64_t max_targets, int want_grads);
MBPODEF void mbpo_model_params_changed(mbpo_model *m);
MBPODEF int  mbpo_model_grads_to_host(mbpo_model *m);
MBPODEF size_t mbpo_model_plan_bytes(const mbpo_model *m);
MBPODEF void mbpo_model_zero_grad(mbpo_model *m);
/* The token log-prob machine (docs/DESIGN.md section 2).
   forward: logp[n] = log softmax(logits at t-1)[ids[t]] for every target t, in order.
   Returns the number of targets N, or -1 on error. */
MBPODEF int64_t mbpo_model_forward(mbpo_model *m, const mbpo_batch *batch, float *logp);
/* backward: given dlogp (N) = dL/dlogp, accumulate dL/dparams into m->grads (when planned
   with want_grads) and, when dpixel_values is not NULL, write dL/dpixel_values (P, PIX).
   Must follow mbpo_model_forward on the same batch. Returns 1, or 0 on error. */
MBPODEF int  mbpo_model_backward(mbpo_model *m, const mbpo_batch *batch, const float *dlogp,
                                 float *dpixel_values);

/* M-RoPE position ids of one sequence (docs/QWEN2VL.md 3.4): pos (3, S) as t, h, w rows.
   grid_thw lists the grids of the sequence's image runs in order. Returns rope_delta
   through *delta. 1 on success. */
MBPODEF int mbpo_rope_index(const mbpo_config *cfg, const int32_t *ids, int64_t S,
                            const int32_t *grid_thw, int n_images, int64_t *pos, int64_t *delta);

/* Intermediate results of the last forward, for tests and inspection (pointers into the
   activation arena, valid until the next forward). Any may be NULL. */
typedef struct {
    const float *patch_embed;        /* (P, E); Qwen2.5-VL: these three in window order (mbpo_window_index) */
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

/* Generation (docs/DESIGN.md 2): prefill the prompt once, then decode G continuations of it in
   lockstep with a KV cache; temperature / top-k / top-p sampling from an explicit RNG. */
typedef struct {
    int G;                           /* continuations decoded together */
    int64_t max_len;                 /* prompt + new tokens */
    int64_t len;                     /* tokens in the cache (the same for every continuation) */
    int64_t rope_delta;              /* M-RoPE: a text token at index t has position t + rope_delta */
    float *logits;                   /* (G, V) of the last step, host memory (unless device_logits) */
    int device_logits;               /* leave the logits on the backend (mbpo_generate samples there) */
    /* backend memory (the model's backend): one block holding the cache (L, G, max_len,
       NKV*HS) of keys after RoPE and of values, and one decoding step's activations */
    const mbpo_ops *ops;
    mbpo_backend *be;
    uint64_t be_gen;                 /* the model's be_gen at mbpo_kv_init */
    void *mem, *host_mem;
    /* mbpo_generate's decode step as a graph (backends that have them: CUDA), captured on first
       use and replayed while what it was captured for (backend, weights, sampling options)
       stays the same: weights updated in place keep it valid */
    void *graph;
    unsigned char graph_key[256];
    int no_graphs;                   /* set: run every step's ops one by one (tests, debugging) */
    int check_every;                 /* the host reads the live count every N steps (0: every step on the CPU,
                                        MBPO__GEN_CHECK elsewhere) */
    int graph_steps;                 /* out: decode steps the last mbpo_generate replayed */
} mbpo_kv;
/* A cache for G continuations of up to max_len tokens on the backend of m (planned). */
MBPODEF int  mbpo_kv_init(mbpo_kv *kv, const mbpo_model *m, int G, int64_t max_len);
MBPODEF void mbpo_kv_free(mbpo_kv *kv);
/* Run the prompt (prompt->n_seqs == 1, its images given as in any batch; targets ignored)
   and copy its keys and values into every continuation's cache; kv->logits rows hold the
   logits that predict the first new token. The model must be planned for the prompt. */
MBPODEF int  mbpo_kv_prefill(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt);
/* Append token[g] to continuation g and compute kv->logits for the next position. */
MBPODEF int  mbpo_kv_decode(mbpo_model *m, mbpo_kv *kv, const int32_t *token);

typedef struct {
    int max_new_tokens;
    double temperature;              /* 0: greedy (argmax, lowest id on ties) */
    int top_k;                       /* 0: off */
    double top_p;                    /* 1: off */
    const int32_t *stop_ids; int n_stop;   /* e.g. <|im_end|>, <|endoftext|> */
} mbpo_gen_opts;
/* One token from a row of logits (V). scratch: 2V floats. */
MBPODEF int32_t mbpo_sample_token(const float *logits, int64_t V, const mbpo_gen_opts *o, mbpo_rng *rng,
                                  float *scratch);
/* Generate G = kv->G continuations of the prompt: out_ids (G, max_new_tokens), out_len (G)
   = tokens produced, a stop token included when one ended the continuation (at most
   MBPO__MAX_STOP = 16 stop ids). The draws come from rng in a fixed order (step by step,
   continuation by continuation, one per live continuation at temperature > 0, even for a row
   with no finite logit), so the same seed gives the same tokens, on any backend. The whole
   loop stays on the model's backend (docs/DESIGN.md 2): sampling, stop tokens and the decode
   step, replayed as a graph where the backend has them; the host looks at the live count
   every few steps only. */
MBPODEF int  mbpo_generate(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt, const mbpo_gen_opts *o,
                           mbpo_rng *rng, int32_t *out_ids, int *out_len);
/* The same, and out_logp (G, max_new_tokens): each emitted token's log-probability under the
   policy at temperature 1 (the decode step's logits; NULL: not kept). */
MBPODEF int  mbpo_generate_logp(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt, const mbpo_gen_opts *o,
                                mbpo_rng *rng, int32_t *out_ids, int *out_len, float *out_logp);

/* ------------------------------------------------------------------ 4. objectives */

/* Verified rewards (docs/DESIGN.md 1), strict: 1 when the response is right, else 0.
   yes/no: exactly one of the words "yes" / "no" occurs in it (whole words, any case, any
   number of times) and it is the label ('Y' or 'N'). Empty, "yes and no", "Nope" are wrong.
   multiple choice: the response is one option, named by its letter ("B", "B.", "(B)",
   "B) text", "Answer: B", "The answer is B") or by the option's full text; a lowercase
   letter, two letters, a letter with another option's text, or prose around it are wrong. */
MBPODEF int mbpo_verify_yesno(const char *response, char label);
MBPODEF int mbpo_verify_mc(const char *question, const char *response, char label);
/* By the sample's kind (YESNO or MC); OPEN samples have no verifier and get 0. */
MBPODEF int mbpo_verify(const mbpo_sample *sample, const char *response);

/* Image Information Gain (docs/DESIGN.md 1): IIG = logp(y | q, I) - logp(y | q, I_black) per
   sequence of the batch: the batch with its images and again with pixel_values_black (the
   black image of the same size through the same preprocessing: mbpo_image_init +
   mbpo_image_preprocess), packed into one forward when the plan holds twice the batch (the
   same bits as two forwards: packed sequences are independent), else two forwards.
   Writes per-sequence sums iig_sum (B) and per-token means iig_mean (B) (either may be
   NULL), and the log-probs of both passes into logp / logp_black (N) when not NULL. */
MBPODEF int mbpo_iig(mbpo_model *m, const mbpo_batch *batch, const float *pixel_values_black, double *iig_sum,
                     double *iig_mean, float *logp, float *logp_black);

/* Adversarial negative mining (docs/DESIGN.md 1): projected gradient descent on the resized RGB
   image x (H, W, 3) in [0, 1], lowering the chosen response's log-prob:
       x <- clip_[0,1]( proj_eps( x - step * sign(d logp(y_w | q, x) / dx) ) ),  iters times.
   The gradient runs through normalisation, the duplicated frame, the patch rows, the vision
   tower, the merger and the LM. batch: the sequence(s) scoring y_w with one image, whose
   pixel_values buffer (P, PIX) is rewritten from x at every iteration. eps <= 0: no ball,
   only the [0, 1] clip (the paper's best setting). random_start: begin at a uniform point of
   the eps ball. logp_trace (iters + 1, may be NULL): sum logp(y_w) before each step and after
   the last. The model may be planned without parameter gradients. */
typedef struct {
    int iters;                       /* K, default 20 */
    double step;                     /* alpha, default 4/255 */
    double eps;                      /* L-inf radius; <= 0: none (default) */
    int random_start;
} mbpo_pgd_opts;
MBPODEF void mbpo_pgd_defaults(mbpo_pgd_opts *o);
MBPODEF int  mbpo_pgd(mbpo_model *m, const mbpo_preproc *pp, mbpo_batch *batch, float *pixel_values, float *x,
                      int64_t height, int64_t width, const mbpo_pgd_opts *o, mbpo_rng *rng, double *logp_trace);
/* The "offline rand." ablation: x + uniform noise in [-budget, budget], clipped to [0, 1];
   budget = eps, or iters * step when eps <= 0 (the farthest PGD can move a pixel). */
MBPODEF void mbpo_random_noise(float *x, int64_t n, const mbpo_pgd_opts *o, mbpo_rng *rng);

/* Group advantages: adv_i = (r_i - mean(r)) / (std(r) + 1e-4), std unbiased (as R1-V/TRL);
   a group of one has std 0 and advantage 0. */
MBPODEF void mbpo_group_advantages(const float *rewards, int n, float *adv);

/* The hybrid GRPO loss of the paper's eq. 7 over R responses in n_groups groups (B = the
   number of groups: an offline pair is a group of 2, an online prompt a group of G).
   Response i holds tokens resp_offsets[i] .. resp_offsets[i+1] of the logp arrays and
   belongs to the group whose range group_offsets[g] .. group_offsets[g+1] contains i.
   Per token: l = -[min(rho A, clip(rho, 1-eps, 1+eps) A) - beta KL], rho = exp(logp - old),
   KL = exp(ref - logp) - (ref - logp) - 1 (k3); L = sum_i 1/(B |g_i| |o_i|) sum_t l.
   logp_old NULL: one update per rollout batch (rho = 1). logp_ref NULL: no KL term.
   Writes dL/dlogp into dlogp (may be NULL) and returns L. */
typedef struct {
    int n_groups;
    const int *group_offsets;        /* (n_groups+1) response ranges */
    const int64_t *resp_offsets;     /* (R+1) token ranges, R = group_offsets[n_groups] */
    const float *advantage;          /* (R) */
} mbpo_grpo_batch;
typedef struct {
    double loss;                     /* L, as returned */
    double kl_mean, ratio_mean, clip_fraction;   /* per-token means over all tokens */
    int64_t n_tokens;
} mbpo_grpo_stats;
MBPODEF double mbpo_grpo_loss(const mbpo_grpo_batch *batch, const float *logp, const float *logp_old,
                              const float *logp_ref, double beta, double clip_eps, float *dlogp,
                              mbpo_grpo_stats *stats);
/* SFT: L = -mean logp over the n targets; dlogp = -1/n. */
MBPODEF double mbpo_sft_loss(const float *logp, int64_t n, float *dlogp);

/* AdamW (decoupled weight decay) with global grad-norm clipping and a learning-rate schedule. */
typedef enum { MBPO_LR_CONSTANT = 0, MBPO_LR_WARMUP = 1, MBPO_LR_COSINE = 2 } mbpo_lr_schedule;
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    double max_grad_norm;            /* <= 0: no clipping */
    mbpo_lr_schedule schedule;
    int64_t warmup_steps, total_steps;   /* WARMUP: linear from 0 over warmup_steps, then constant;
                                            COSINE: that warmup, then cosine to 0 at total_steps */
} mbpo_adamw_opts;
typedef struct {
    float *m, *v;                    /* first and second moments, the parameters' layout (host) */
    size_t n;
    int64_t step;                    /* updates done */
    /* mbpo_model_adamw_step on a device: stream_moments keeps m and v in these host arrays
       and streams them through the device `chunk` values at a time (0: 2^26) instead of
       holding 8 bytes per parameter there; the arithmetic is the same */
    int stream_moments;
    int64_t chunk;
} mbpo_adamw;
MBPODEF void   mbpo_adamw_defaults(mbpo_adamw_opts *o);   /* lr 1e-6, betas 0.9/0.999, eps 1e-8, wd 0, clip 1 */
MBPODEF int    mbpo_adamw_init(mbpo_adamw *opt, size_t n);
MBPODEF void   mbpo_adamw_free(mbpo_adamw *opt);
MBPODEF double mbpo_lr_at(const mbpo_adamw_opts *o, int64_t step);   /* lr of update number step (0-based) */
MBPODEF double mbpo_grad_norm(const float *grads, size_t n);          /* L2 norm, accumulated in double */
/* One update: clip the gradient to max_grad_norm (returns the norm before clipping), then
   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p). Non-finite norms update nothing
   and return the norm (NaN/inf) so the caller can skip and log the step. */
MBPODEF double mbpo_adamw_step(mbpo_adamw *opt, const mbpo_adamw_opts *o, float *params, const float *grads);
/* The same update of a planned model (with gradients) on its backend: the norm from the
   backend's gradients (sumsq op), then the adamw op on the fp32 master, which also writes the
   backend's bf16 copy. On the CPU it is mbpo_adamw_step on m->params (the same bits). On a
   device the master and moments are uploaded from the host copies at the first step (and
   after mbpo_model_params_changed) and stay there. *norm as mbpo_adamw_step returns it. */
MBPODEF int mbpo_model_adamw_step(mbpo_model *m, mbpo_adamw *opt, const mbpo_adamw_opts *o, double *norm);
/* Bring m->params and opt->m, opt->v up to date from the backend (before saving them). */
MBPODEF int mbpo_model_opt_to_host(mbpo_model *m, mbpo_adamw *opt);

/* The memory plan: what a run will hold, in bytes, from the config and the shapes of its
   largest micro-batch, computed with the same layout functions that allocate (so it is what
   the run allocates, not an estimate), and compared with what the device has. Every run
   prints it at start and refuses a plan that does not fit; mbpo-bench --memory prints it for
   any config without weights. */
typedef struct {
    mbpo_device device;
    int train;                       /* the policy is trained: gradients, master weights, moments */
    int reference;                   /* a frozen reference copy (KL: mbpo-train with beta > 0) */
    int stream_moments;              /* Adam moments kept on the host (mbpo_adamw.stream_moments) */
    int64_t tokens, patches, targets;   /* the largest micro-batch, packed */
    int G; int64_t kv_len;           /* decoding: continuations and their cache length (G 0: none) */
    int64_t pgd_values;              /* PGD on the backend: values of its image (H W 3), or 0 */
    int dp_world;                    /* data parallel training (several ranks, exact_accum, NCCL): the world size, else 0 */
    int recompute;                   /* activation recomputation (mbpo_model.recompute) */
} mbpo_mem_shape;
typedef struct {
    /* bytes on the device (on the CPU: in host memory) */
    double weights, master, moments, grads, reference, activations, kv_cache, workspace, total;
    double host;                     /* bytes of host memory a device run fills (its host copies) */
    double available;                /* the device's memory (the CPU: physical memory); 0 unknown */
    double n_params;
} mbpo_mem_plan;
MBPODEF int  mbpo_mem_plan_make(const mbpo_config *cfg, const mbpo_mem_shape *s, mbpo_mem_plan *p);
/* One line per component and the total against what is available, on f. */
MBPODEF void mbpo_mem_plan_print(FILE *f, const char *prefix, const mbpo_mem_plan *p);
/* 0 with the reason (naming the components and what would make it fit) when p exceeds its device. */
MBPODEF int  mbpo_mem_plan_check(const mbpo_mem_plan *p, const char *who);

/* ------------------------------------------------------------------ 5. runs: ranks

   Data parallelism (docs/DESIGN.md 8): one process per rank (one per GPU), launched by
   mpirun, srun, or with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
   MASTER_PORT). mbpo_comm_world() is the process's communicator, made on first use from the
   launcher's environment: world size 1 (no launcher) needs no library; more ranks need a
   build with collectives: MBPO_MPI (OpenMPI, host memory: the CPU backend) or MBPO_NCCL (GPU
   memory). Every collective is deterministic (the additions in rank order, whatever the
   timing) and waits at most timeout_s for its peers; then it fails naming the ranks it still
   waits for, and the run ends every rank (mbpo_comm_abort): a dead or hung rank never leaves
   the others waiting. */
typedef struct mbpo_comm {
    int rank, world, local_rank;
    double timeout_s;                /* the longest wait of one collective (1800 s: a 7B checkpoint's write counts) */
    const char *backend;             /* "single", "mpi", "nccl" */
    char launcher[64];               /* where rank and world came from */
    int device;                      /* the collectives' buffers are on the GPU (NCCL) */
    void *impl;
} mbpo_comm;
/* The process's communicator (NULL with the reason when the environment asks for more ranks
   than this build can join); later calls return the same one. */
MBPODEF mbpo_comm *mbpo_comm_world(void);
/* Print "rank R: why" and end every rank of the job (world 1: returns). */
MBPODEF void mbpo_comm_abort(mbpo_comm *c, const char *why);
MBPODEF int  mbpo_comm_barrier(mbpo_comm *c);
/* buf (bytes) from rank root to every rank. */
MBPODEF int  mbpo_comm_broadcast(mbpo_comm *c, void *buf, size_t bytes, int root);
/* In place: rank r's bytes [off[r], off[r+1]) of buf to every rank (off: world + 1 offsets). */
MBPODEF int  mbpo_comm_all_gather(mbpo_comm *c, void *buf, const size_t *off);
/* x (n doubles, host) = the sum over ranks, added in rank order: the same bits on every rank. */
MBPODEF int  mbpo_comm_all_reduce(mbpo_comm *c, double *x, int64_t n);
/* The owner's shard of a sum: acc (off[rank+1] - off[rank] floats) = (first ? full_0 : acc +
   full_0) + full_1 + ... + full_{senders-1}, over [off[rank], off[rank+1]) of each rank's full
   (floats), one rank at a time in rank order; ranks >= senders send nothing. So a sum over
   many calls adds its terms in one global order, whatever the world size (MPI; NCCL sums a
   call's terms in its own order). */
MBPODEF int  mbpo_comm_reduce_scatter(mbpo_comm *c, float *acc, const float *full, const int64_t *off, int senders,
                                      int first);
/* In place: each owner's range [off[r], off[r+1]) of full (floats) becomes the sum over the
   ranks of theirs (MPI: in rank order; NCCL: its order); the other ranges are left as they were
   (NCCL) or as they were sent (MPI). */
MBPODEF int  mbpo_comm_reduce(mbpo_comm *c, float *full, const int64_t *off);

/* ------------------------------------------------------------------ 5. runs */

/* Mining (docs/DESIGN.md 1, 5): IIG of every open-ended single-image sample's answer; the top_k
   by IIG become chosen responses y_w; PGD (or random noise) on each one's image; the
   rejected response y_l is sampled from the model on the saved 8-bit adversarial PNG
   (resampled, at most max_tries times, while empty or equal to y_w). Writes, in out_dir:
     offline.jsonl  one pair per line (docs/DESIGN.md 5), in IIG order
     skipped.jsonl  selected samples left without a usable negative after max_tries
     online.jsonl   the closed-ended samples (yes/no, multiple choice) with their labels
     adv/<n>.png    the adversarial images;  iig.jsonl  the IIG of every candidate
     export/        the sets for TRL, LLaMA-Factory and EasyR1 (mbpo_export)
     run.json       every setting and the inputs' SHA-256 (a rerun with other settings is refused)
   "image" paths are the dataset's (relative to the image root), "adv_image" is relative to
   out_dir.
   Rerun with the same options after a kill, it continues where it stopped: finished lines
   are kept, a torn last line is cut, temporary files of the killed run are removed, and
   every sample draws from its own seeded RNG, so the result is the same as an uninterrupted
   run (tests/test_crash.c). out_dir is proven writable before the model loads; a write that
   fails later (a full disk) stops the run with what was written still valid, to resume.
   Progress lines go to log (may be NULL). */
typedef struct {
    const char *model_dir, *data, *image_root, *out_dir;
    int top_k;                       /* <= 0: every candidate */
    mbpo_pgd_opts pgd;               /* K = 20, alpha = 4/255, eps = 0 */
    int random_negatives;            /* the "offline rand." ablation: noise instead of PGD */
    double temperature;              /* sampling of y_l, 1.0 */
    double top_p;                    /* 1.0 */
    int max_new_tokens;              /* 128 */
    int max_tries;                   /* 4 */
    uint64_t seed;
    int strict;                      /* stop at the first bad dataset record */
    int processor;                   /* MBPO_PROCESSOR_AUTO (default: as transformers picks), _SLOW, _FAST */
    mbpo_device device;              /* MBPO_DEVICE_CPU (default) or _CUDA */
    int quiet;                       /* no progress lines on log (messages stay) */
    FILE *log;
} mbpo_mine_opts;
MBPODEF void mbpo_mine_defaults(mbpo_mine_opts *o);
MBPODEF int  mbpo_mine(const mbpo_mine_opts *o);

/* Scoring: for every sample, the IIG of its reference answer (one-image samples), a greedy
   response, and for closed-ended samples whether the verifier accepts that response. Writes
   out_path (JSONL, atomically: one line per sample, then a summary line) and fills summary. */
typedef struct {
    const char *model_dir, *data, *image_root, *out_path;
    int max_new_tokens;              /* 64 */
    int strict;
    int processor;                   /* MBPO_PROCESSOR_AUTO (default), _SLOW, _FAST */
    mbpo_device device;              /* MBPO_DEVICE_CPU (default) or _CUDA */
    int quiet;                       /* no progress lines on log (messages stay) */
    FILE *log;
} mbpo_score_opts;
typedef struct {
    int64_t n, n_yesno, n_mc, n_open, yesno_correct, mc_correct, n_iig;
    double iig_mean;                 /* mean over samples of the per-token IIG of the answer */
} mbpo_score_summary;
MBPODEF void mbpo_score_defaults(mbpo_score_opts *o);
MBPODEF int  mbpo_score(const mbpo_score_opts *o, mbpo_score_summary *summary);

/* An offline pair set (offline.jsonl of mbpo_mine), read as mbpo_train reads it: each pair's
   s.answer is the chosen response, s.images[0] its clean image (image_root prepended), and
   adv_image the PGD image's path as the file gives it (relative to the mining out_dir; NULL
   when absent). A malformed line stops the load with "path:line: why". */
typedef struct { mbpo_sample s; char *rejected, *adv_image; int64_t line; } mbpo_pair;
typedef struct { mbpo_pair *pairs; int64_t n; } mbpo_pairs;
MBPODEF int  mbpo_pairs_load(mbpo_pairs *set, const char *path, const char *image_root);
MBPODEF void mbpo_pairs_free(mbpo_pairs *set);
/* The mean over the pairs of the per-token IIG of the chosen and of the rejected response
   (each on the pair's clean image), under the model in model_dir: how much a model's
   likelihood of the mined responses rests on the image (the paper's Fig. 4 / Table 4). */
MBPODEF int  mbpo_pairs_iig(const char *model_dir, const char *pairs, const char *image_root,
                            double *iig_chosen, double *iig_rejected);

/* Training (docs/DESIGN.md 1, 5): the hybrid GRPO objective over offline pairs (offline.jsonl of
   mbpo_mine: a group {chosen r_w, rejected r_l} on the clean image) and online prompts
   (online.jsonl: G rollouts from the current policy, rewards from the verifiers), a KL to
   the frozen initial model, AdamW. Each optimizer step takes grad_accum micro-batches of
   `batch` prompts, drawn in a seeded shuffled order of the pool the mode uses:
     mbpo: offline + online; offline, offline-rand: offline only (offline-rand is the same
     loss on a set mined with --negatives rand); online: online only; sft: cross-entropy on
     the answers of `data` (or the chosen / reference answers of the two sets).
   Writes out_dir/run.json (every setting and the inputs' SHA-256; a rerun whose settings would
   change the result is refused, listing each difference), out_dir/metrics.jsonl (a line per
   step) and checkpoints out_dir/checkpoint-<step>/: a whole Hugging Face model folder (the
   source folder's non-weight files carried, a chat template and the tokenizer, generation and
   preprocessor configs written when missing) plus optimizer.safetensors and mbpo_state.json,
   each made in a temporary directory and renamed into place; save_total_limit rotates them,
   final_weights_only leaves the moments out of the last. Rerun after a kill, it resumes from the
   newest checkpoint: weights, moments, step and data position; every random draw comes
   from (seed, step, micro-batch, prompt), so the run continues as if never stopped.
   Before any work, out_dir is proven writable and its filesystem must have room for one
   checkpoint. A checkpoint that cannot be written (a full disk) is removed and the run
   stops naming the newest whole one; a step with a non-finite gradient is skipped and
   logged, max_bad_steps of them in a row stop the run, and no checkpoint holds NaN/Inf.
   Data parallel (mbpo_comm_world() has more than one rank; docs/DESIGN.md 8): the same global
   batch at any world size: micro-batch j goes to rank j % world, each one's gradient is
   computed on its own and added into the owner's shard in micro-batch order (ZeRO-1: each
   rank holds the master weights' and moments' shard it updates; the new weights are gathered
   by all), the norm is a sum of fixed blocks, and the metrics are combined in micro-batch
   order: every world size gives the same bits, and so does one process with exact_accum
   (which holds one more gradient copy; without it one process adds the micro-batches inside
   the backward, a few last bits apart). Rank 0 writes out_dir; checkpoints hold the whole
   state, so a run resumes at any world size. */
typedef enum { MBPO_MODE_MBPO = 0, MBPO_MODE_OFFLINE, MBPO_MODE_OFFLINE_RAND, MBPO_MODE_ONLINE, MBPO_MODE_SFT } mbpo_mode;
typedef struct {
    const char *model_dir, *offline, *online, *data, *image_root, *out_dir;
    mbpo_mode mode;
    mbpo_adamw_opts adam;            /* lr 1e-6, betas 0.9/0.999, eps 1e-8, wd 0, clip 1 */
    double beta;                     /* KL weight, 0.04 */
    double clip_eps;                 /* 0.2, used when updates_per_batch > 1 */
    int updates_per_batch;           /* 1: rho = 1 (R1-V) */
    int G;                           /* rollouts per online prompt, 8 */
    double temperature;              /* rollouts, 1.0 */
    int max_new_tokens;              /* rollouts, 64 */
    int batch, grad_accum;           /* prompts per micro-batch (4), micro-batches per step (1) */
    int64_t steps, save_every, iig_every;   /* 100, 0 (only at the end), 10 (0: never) */
    int64_t max_bad_steps;           /* stop after this many non-finite steps in a row, 10 (0: never) */
    float r_chosen, r_rejected;      /* 2, 0 */
    uint64_t seed;
    int strict;
    mbpo_dtype save_dtype;           /* F32 (resume is exact); BF16 halves the size */
    int64_t save_total_limit;        /* keep the newest N whole checkpoints, remove older ones (0: keep all) */
    int final_weights_only;          /* the last checkpoint without Adam moments (a model to ship, not to resume) */
    int processor;                   /* MBPO_PROCESSOR_AUTO (default), _SLOW, _FAST */
    mbpo_device device;              /* MBPO_DEVICE_CPU (default) or _CUDA (the frozen reference too) */
    int stream_moments;              /* a device keeps the Adam moments in host memory (mbpo_adamw.stream_moments) */
    int plan_image, plan_text;       /* the memory plan's micro-batch: images of plan_image^2 pixels (448), prompts
                                        of plan_text text tokens (64), responses of max_new_tokens */
    int recompute;                   /* activation recomputation (mbpo_model.recompute): the same results, less memory */
    int exact_accum;                 /* one process: sum the micro-batches' gradients as data parallelism does (below) */
    double comm_timeout;             /* data parallelism: the longest wait for another rank, seconds (0: 1800) */
    int quiet;                       /* no progress lines on log (messages, e.g. why a record was skipped, stay) */
    FILE *log;
} mbpo_train_opts;
MBPODEF void mbpo_train_defaults(mbpo_train_opts *o);
MBPODEF int  mbpo_train(const mbpo_train_opts *o);
/* The memory plan mbpo_train prints and checks at start, for cfg and the options (the
   preprocessor sizes the plan's images): sh gets the planned micro-batch. */
MBPODEF int  mbpo_train_mem_plan(const mbpo_config *cfg, const mbpo_preproc *pp, const mbpo_train_opts *o, mbpo_mem_shape *sh,
                                 mbpo_mem_plan *p);
MBPODEF const char *mbpo_mode_name(mbpo_mode mode);

/* The mined sets in the formats other trainers read as they are (mbpo_mine calls it at its
   end, into out_dir/export; the driver mbpo-export reruns it): from mined_dir/offline.jsonl and
   online.jsonl, with image paths resolved against image_root and written ABSOLUTE (TRL opens
   a relative path against its working directory, LLaMA-Factory against media_dir, EasyR1
   against image_dir: an absolute path works in all three). Every pair uses its clean image,
   never the adversarial one (that one only made the rejected response). Writes in out_dir
   (NULL: mined_dir/export):
     trl_dpo.jsonl           TRL DPOTrainer, conversational: prompt (content parts, an
                             {"type": "image"} where each <image> was), chosen, rejected, images
     trl_grpo.jsonl          TRL GRPOTrainer: prompt, images, and answer / kind / label /
                             reference, which reach reward functions as keyword arguments
     llamafactory_dpo.jsonl  LLaMA-Factory sharegpt ranking set (one <image> per image) ...
     dataset_info.json       ... and its entry "mbpo_offline" (dataset_dir = out_dir)
     easyr1.jsonl            EasyR1 / verl: problem (with <image>), answer ("yes"/"no" or the
                             option letter: its reward functions see only this), images
   No file has an "image" column (TRL's collator would take it over "images"). */
MBPODEF int mbpo_export(const char *mined_dir, const char *image_root, const char *out_dir);
MBPODEF int  mbpo_mode_parse(const char *name, mbpo_mode *mode);   /* "mbpo", "offline", ... */

/* The seed of one sample's own RNG stream: splitmix64 of (run seed, sample index, purpose),
   so that a sample draws the same numbers whether or not the run was interrupted before it.
   mbpo's runs use purposes 1-4 (mining 1-2, training 3-4) and demo/mbpo_demo.h's world 5;
   purposes are 0-255 (they fill the top byte). */
MBPODEF uint64_t mbpo_seed_derive(uint64_t seed, int64_t index, uint64_t purpose);

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
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if !defined(_WIN32)
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#ifndef _WIN32
#include <pthread.h>     /* the kernels' per-thread buffers, freed when a thread ends */
#endif
#endif
#ifdef MBPO_MPI
#define OMPI_SKIP_MPICXX 1   /* the C API only, also when nvcc compiles this as C++ */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>         /* the collectives of data parallelism on the CPU (OpenMPI) */
#endif
#if defined(MBPO_NCCL) && !defined(MBPO_MPI)
#include <netdb.h>       /* NCCL's unique id from MASTER_ADDR:MASTER_PORT (torchrun's variables) */
#include <poll.h>
#include <sys/socket.h>
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
#ifndef MBPO_MAX_IMAGE_PIXELS
#define MBPO_MAX_IMAGE_PIXELS 178956970
#endif
#ifndef MBPO_MAX_JSON_BYTES
#define MBPO_MAX_JSON_BYTES (4ull << 30)
#endif
#ifndef MBPO_MAX_SEQ_LEN
#define MBPO_MAX_SEQ_LEN 32768
#endif
#ifndef MBPO_STB_IMAGE_H
#define MBPO_STB_IMAGE_H <stb/stb_image.h>
#endif
#ifndef MBPO_STB_IMAGE_WRITE_H
#define MBPO_STB_IMAGE_WRITE_H <stb/stb_image_write.h>
#endif
#ifdef MBPO_STB_IMPLEMENTATION
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include MBPO_STB_IMAGE_H
#include MBPO_STB_IMAGE_WRITE_H
#ifdef MBPO_LIBJPEG
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>
#endif

/* OpenMP through _Pragma so builds without -fopenmp see no unknown pragmas. */
#ifdef _OPENMP
#define MBPO__OMP(x) _Pragma(x)
#else
#define MBPO__OMP(x)
#endif
/* The model's loops hand out fixed chunks dynamically: a thread the OS has descheduled (another
   job on the cores) holds up one chunk, not a static share of every op. Each iteration writes
   its own outputs and sums in a fixed order, so the bits do not depend on the schedule. */
#define MBPO__CHUNK_ROWS 4      /* a row of C or V floats each */
#define MBPO__CHUNK_COLS 16     /* a column summed over N rows */
#define MBPO__CHUNK_ELEMS 8192  /* one element each */
#define MBPO__STR(x) #x
#define MBPO__XSTR(x) MBPO__STR(x)   /* a pragma's text from tokens, macros in it expanded */
#define MBPO__SCHED(chunk) MBPO__XSTR(omp parallel for schedule(dynamic, chunk))
#define MBPO__SCHED_ROWS MBPO__SCHED(MBPO__CHUNK_ROWS)
#define MBPO__SCHED_COLS MBPO__SCHED(MBPO__CHUNK_COLS)
#define MBPO__SCHED_ELEMS MBPO__SCHED(MBPO__CHUNK_ELEMS)

#if defined(__cplusplus)
#define MBPO__THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define MBPO__THREAD_LOCAL __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define MBPO__THREAD_LOCAL __thread
#else
#define MBPO__THREAD_LOCAL
#define MBPO__NO_TLS
#endif

/* The same loops for small ops. An op of less than MBPO_PAR_MIN units of work (about floats
   touched times passes over them; a transcendental counts 8, a GEMM's multiply-add 1/8) runs on
   the calling thread alone: meeting the team at the closing barrier costs, when another job
   shares the cores, the rest of the descheduled thread's time slice (a RoPE of 41 us took 450 us
   beside a 2-thread job), more than a small op's whole work. But a team left idle for longer
   than its spin (GOMP_SPINCOUNT 10000: about 200-300 us here) goes to sleep, and waking it costs
   0.1-0.6 ms on a VM: so once this thread has run small ops alone for MBPO_SERIAL_US, the next
   small op goes to the team anyway, which keeps it spinning (the tiny model's forward, nearly all
   small ops, was 0.3 -> 0.5 ms without this). Which thread runs an iteration changes no bits. */
#ifndef MBPO_PAR_MIN
#define MBPO_PAR_MIN 262144
#endif
#ifndef MBPO_SERIAL_US
#define MBPO_SERIAL_US 100
#endif
#ifdef _OPENMP
static int64_t mbpo__par_min = MBPO_PAR_MIN;     /* tests set 0: every op on the team, to compare bits */
static MBPO__THREAD_LOCAL double mbpo__alone_t0; /* when this thread's run of ops alone began; 0: none */
static int mbpo__team(int64_t work) {
    double t;
    if (work >= mbpo__par_min) { mbpo__alone_t0 = 0; return 1; }
    t = mbpo_now();
    if (mbpo__alone_t0 == 0) mbpo__alone_t0 = t;
    else if (t - mbpo__alone_t0 > MBPO_SERIAL_US * 1e-6) { mbpo__alone_t0 = 0; return 1; }
    return 0;
}
#endif
#define MBPO__FOR_IF(chunk, work) MBPO__OMP(MBPO__XSTR(omp parallel for schedule(dynamic, chunk) if(mbpo__team(work))))
#define MBPO__ROWS_IF(work) MBPO__FOR_IF(MBPO__CHUNK_ROWS, work)
#define MBPO__COLS_IF(work) MBPO__FOR_IF(MBPO__CHUNK_COLS, work)
#define MBPO__ELEMS_IF(work) MBPO__FOR_IF(MBPO__CHUNK_ELEMS, work)
#define MBPO__PARALLEL_IF(work) MBPO__OMP(MBPO__XSTR(omp parallel if(mbpo__team(work))))

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
MBPODEF int mbpo_failure_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mbpo__reason, sizeof mbpo__reason, fmt, ap);
    va_end(ap);
    return 0;
}
/* Put context before the current reason ("sample 7: " + reason), or after it. */
static int mbpo__fail_prefix(const char *fmt, ...) {
    char old[sizeof mbpo__reason];
    va_list ap;
    int n;
    memcpy(old, mbpo__reason, sizeof old);
    va_start(ap, fmt);
    n = vsnprintf(mbpo__reason, sizeof mbpo__reason, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof mbpo__reason) snprintf(mbpo__reason + n, sizeof mbpo__reason - (size_t)n, "%s", old);
    return 0;
}
static int mbpo__fail_suffix(const char *fmt, ...) {
    size_t n = strlen(mbpo__reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mbpo__reason + n, sizeof mbpo__reason - n, fmt, ap);
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
   below the aligned block. On Linux a block of 8 MB or more (weights, gradients, optimizer
   state, activations) is aligned to 2 MB and advised to be backed by transparent huge pages
   (for systems that leave THP to madvise, as the development machine does): the GEMM packs
   walk hundreds of a weight's rows at a time, each on its own 4 KB page, so small pages cost
   TLB misses (the 2B down projection, K = 8960: 14 % faster measured; other shapes 1-2 %).
   Advice only: where the kernel says no, nothing changes. MBPO_NO_HUGEPAGES turns it off. */
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(MBPO_NO_HUGEPAGES)
#define MBPO__HUGEPAGE ((size_t)2 << 20)
#endif
static void *mbpo__alloc(size_t bytes) {
    size_t align = 256, total;
    unsigned char *raw, *p;
#ifdef MBPO__HUGEPAGE
    if (bytes >= 4 * MBPO__HUGEPAGE) align = MBPO__HUGEPAGE;
#endif
    total = bytes + align + sizeof(void *);
    if (total < bytes) { mbpo__fail("size overflow allocating %zu bytes", bytes); return NULL; }
    raw = (unsigned char *)MBPO_MALLOC(total);
    if (!raw) { mbpo__fail("out of memory allocating %zu bytes", bytes); return NULL; }
    p = raw + sizeof(void *);
    p += (align - ((uintptr_t)p & (align - 1))) & (align - 1);
    ((void **)p)[-1] = raw;
#ifdef MBPO__HUGEPAGE
    if (align == MBPO__HUGEPAGE) (void)madvise(p, bytes & ~(MBPO__HUGEPAGE - 1), MADV_HUGEPAGE);
#endif
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
MBPODEF void *mbpo_calloc(size_t n, size_t size) { return mbpo__calloc(n, size); }
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
        return mbpo__jfail(p, p->s, "nesting deeper than MBPO_MAX_JSON_DEPTH; raise the limit with -DMBPO_MAX_JSON_DEPTH=N");
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
static int mbpo__json_too_big(const char *name, unsigned long long bytes) {
    return mbpo__fail("%s: a JSON document of %llu bytes, more than MBPO_MAX_JSON_BYTES (%llu); split it (JSONL: one "
                      "record per line) or raise the limit with -DMBPO_MAX_JSON_BYTES=N", name, bytes,
                      (unsigned long long)MBPO_MAX_JSON_BYTES);
}
MBPODEF mbpo_json *mbpo_json_parse(const char *text, size_t len, const char *name) {
    mbpo__jp p;
    mbpo_json *root;
    if ((unsigned long long)len > (unsigned long long)MBPO_MAX_JSON_BYTES) {
        mbpo__json_too_big(name ? name : "<json>", (unsigned long long)len);
        return NULL;
    }
    if (!(root = (mbpo_json *)mbpo__calloc(1, sizeof(mbpo_json)))) return NULL;
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
    char *text;
    mbpo_json *root;
    FILE *f = fopen(path, "rb");
    if (f) {   /* a file over the limit is refused before it is read into memory */
        int64_t size = mbpo__file_size(f);
        fclose(f);
        if (size > 0 && (unsigned long long)size > (unsigned long long)MBPO_MAX_JSON_BYTES) {
            mbpo__json_too_big(path, (unsigned long long)size);
            return NULL;
        }
    }
    if (!(text = mbpo_read_file(path, &len))) return NULL;
    root = mbpo_json_parse(text, len, path);
    mbpo_free(text);
    return root;
}
/* The parser's failure for one line of a JSONL file, restated without the "name:1:" it gives:
   for a line the column is what it knows ("column 7: invalid JSON: ..."); the caller knows
   the line. */
static void mbpo__json_line_reason(const char *name) {
    char old[sizeof mbpo__reason];
    size_t np = strlen(name);
    const char *msg;
    memcpy(old, mbpo__reason, sizeof old);
    msg = strncmp(old, name, np) ? old : old + np;
    if (!strncmp(msg, ":1:", 3)) mbpo__fail("column %s", msg + 3);
    else mbpo__fail("%s", msg[0] == ':' && msg[1] == ' ' ? msg + 2 : msg);
}
/* Parse line `lineno` (1-based) of a JSONL file; a failure says "path:lineno: column C: ...". */
static mbpo_json *mbpo__json_parse_line(const char *line, size_t n, const char *path, int64_t lineno) {
    mbpo_json *j = mbpo_json_parse(line, n, path);
    if (!j) {
        mbpo__json_line_reason(path);
        mbpo__fail_prefix("%s:%lld: ", path, (long long)lineno);
    }
    return j;
}
MBPODEF mbpo_json *mbpo_json_parse_line(const char *line, size_t len, const char *path, int64_t lineno) {
    return mbpo__json_parse_line(line, len, path, lineno);
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
                   "MBPO_MAX_ST_HEADER with -DMBPO_MAX_ST_HEADER=N)", path, (unsigned long long)hlen, (unsigned)MBPO_MAX_ST_HEADER);
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
/* A readable regular file (a directory opens with fopen on POSIX, so stat it). 0 with a reason. */
static int mbpo__is_file(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    if (stat(path, &st) != 0) return mbpo__fail("image %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return mbpo__fail("image %s: not a regular file", path);
#endif
    if (!mbpo__file_exists(path)) return mbpo__fail("image %s: %s", path, strerror(errno));
    return 1;
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
static void mbpo__sb_put(mbpo__sb *b, const char *s, size_t n) {
    if (b->failed) return;
    if (!b->s || b->n + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *p = (char *)mbpo__alloc(cap);
        if (!p) { b->failed = 1; return; }
        if (b->s) memcpy(p, b->s, b->n);
        mbpo_free(b->s);
        b->s = p; b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void mbpo__sb_puts(mbpo__sb *b, const char *s) { mbpo__sb_put(b, s, strlen(s)); }
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

/* ------------------------------------------------------------------ 1. base: version, flags */

MBPODEF const char *mbpo_version(void) { return MBPO_VERSION; }

MBPODEF const char *mbpo_build_info(void) {
    static MBPO__THREAD_LOCAL char info[256];
    char omp[48], cc[64];
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    snprintf(omp, sizeof omp, "openmp %d thread%s", threads, threads == 1 ? "" : "s");
#else
    snprintf(omp, sizeof omp, "openmp off");
#endif
#if defined(__NVCC__)
    snprintf(cc, sizeof cc, "nvcc %d.%d", __CUDACC_VER_MAJOR__, __CUDACC_VER_MINOR__);
#elif defined(__clang__)
    snprintf(cc, sizeof cc, "clang %d.%d.%d", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
    snprintf(cc, sizeof cc, "gcc %d.%d.%d", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    snprintf(cc, sizeof cc, "msvc %d", _MSC_VER);
#else
    snprintf(cc, sizeof cc, "unknown compiler");
#endif
    snprintf(info, sizeof info, "mbpo %s; %s; libjpeg %s; cuda %s; %s", MBPO_VERSION, omp,
#ifdef MBPO_LIBJPEG
             "yes",
#else
             "no",
#endif
#if defined(MBPO_CUDA) && defined(MBPO_CUDA_FP32)
             "fp32",
#elif defined(MBPO_CUDA)
             "bf16",
#else
             "no",
#endif
             cc);
    return info;
}

/* strtod that reads '.' as the decimal point whatever the locale (flags and ranges are
   written the same everywhere, as JSON is); in a ',' locale a ',' is not taken either. */
static double mbpo__strtod_dot(const char *s, const char **end) {
    char dp = localeconv()->decimal_point[0], *e, *copy, *q;
    double v;
    int err;
    if (!dp || dp == '.') { v = strtod(s, &e); *end = e; return v; }
    if (!(copy = mbpo__strdup(s))) { *end = s; return 0; }
    for (q = copy; *q; q++) *q = *q == '.' ? dp : *q == dp ? '#' : *q;
    v = strtod(copy, &e);
    err = errno;
    *end = s + (e - copy);
    mbpo_free(copy);
    errno = err;
    return v;
}

/* A range as the table writes it: "> 0", ">= 1", "<= 8", "< 1", "(0, 1]", "[1, 1000]". */
typedef struct { int has_lo, has_hi, lo_open, hi_open; double lo, hi; } mbpo__range;
static int mbpo__range_parse(const char *s, mbpo__range *r) {
    const char *e;
    memset(r, 0, sizeof *r);
    while (*s == ' ') s++;
    if (*s == '>' || *s == '<') {
        int lower = *s == '>', open = s[1] != '=';
        double v;
        s += open ? 1 : 2;
        while (*s == ' ') s++;
        errno = 0;
        v = mbpo__strtod_dot(s, &e);
        if (e == s || errno == ERANGE || !isfinite(v)) return 0;
        if (lower) { r->has_lo = 1; r->lo_open = open; r->lo = v; }
        else { r->has_hi = 1; r->hi_open = open; r->hi = v; }
        s = e;
    } else if (*s == '[' || *s == '(') {
        r->has_lo = r->has_hi = 1;
        r->lo_open = *s++ == '(';
        errno = 0;
        r->lo = mbpo__strtod_dot(s, &e);
        if (e == s || errno == ERANGE || !isfinite(r->lo)) return 0;
        for (s = e; *s == ' '; s++) {}
        if (*s++ != ',') return 0;
        errno = 0;
        r->hi = mbpo__strtod_dot(s, &e);
        if (e == s || errno == ERANGE || !isfinite(r->hi) || r->hi < r->lo) return 0;
        for (s = e; *s == ' '; s++) {}
        if (*s != ']' && *s != ')') return 0;
        r->hi_open = *s++ == ')';
    } else return 0;
    while (*s == ' ') s++;
    return *s == 0;
}
static int mbpo__range_has(const mbpo__range *r, double x) {
    if (r->has_lo && (r->lo_open ? !(x > r->lo) : !(x >= r->lo))) return 0;
    if (r->has_hi && (r->hi_open ? !(x < r->hi) : !(x <= r->hi))) return 0;
    return 1;
}

static int mbpo__flag_numeric(mbpo_flag_kind k) {
    return k == MBPO_FLAG_INT || k == MBPO_FLAG_INT64 || k == MBPO_FLAG_UINT64 || k == MBPO_FLAG_DOUBLE;
}
/* The index of `v` among the '|'-separated names, or -1. */
static int mbpo__choice_find(const char *names, const char *v) {
    int idx = 0;
    size_t n = strlen(v);
    for (;;) {
        size_t len = strcspn(names, "|");
        if (len == n && !strncmp(names, v, n)) return idx;
        if (!names[len]) return -1;
        names += len + 1;
        idx++;
    }
}

/* Programmer errors in a table are reported before any argument is looked at. */
static int mbpo__flags_check_table(const mbpo_flag *flags, int n) {
    int i, j;
    for (i = 0; i < n; i++) {
        const mbpo_flag *f = &flags[i];
        mbpo__range r;
        if (!f->name || strncmp(f->name, "--", 2) || !f->name[2] || strchr(f->name, '=') || !strcmp(f->name, "--help") ||
            !strcmp(f->name, "--version"))
            return mbpo__fail("flag table: entry %d: bad name '%s' (want --name, not --help or --version)", i,
                              f->name ? f->name : "(null)");
        for (j = 0; j < i; j++)
            if (!strcmp(flags[j].name, f->name)) return mbpo__fail("flag table: %s appears twice", f->name);
        if ((int)f->kind < MBPO_FLAG_STRING || (int)f->kind > MBPO_FLAG_CHOICE || !f->value)
            return mbpo__fail("flag table: %s: bad kind or no destination", f->name);
        if (mbpo__flag_numeric(f->kind) && f->check && !mbpo__range_parse(f->check, &r))
            return mbpo__fail("flag table: %s: bad range '%s'", f->name, f->check);
        if (f->kind == MBPO_FLAG_CHOICE && (!f->check || !f->check[0] || strstr(f->check, "||") || f->check[0] == '|' ||
                                            f->check[strlen(f->check) - 1] == '|'))
            return mbpo__fail("flag table: %s: a choice needs its names, \"a|b\"", f->name);
        if (f->kind == MBPO_FLAG_STRING && f->check && strcmp(f->check, "required"))
            return mbpo__fail("flag table: %s: a string's check is NULL or \"required\"", f->name);
        if (f->kind == MBPO_FLAG_SWITCH && f->check) return mbpo__fail("flag table: %s: a switch has no check", f->name);
    }
    return 1;
}

/* [+-]?[0-9]+ */
static int mbpo__integer_text(const char *s) {
    if (*s == '+' || *s == '-') s++;
    if (!(*s >= '0' && *s <= '9')) return 0;
    while (*s >= '0' && *s <= '9') s++;
    return *s == 0;
}

/* Parse v for flag f; store it when `store`. */
static int mbpo__flag_value(const mbpo_flag *f, const char *v, int store) {
    mbpo__range r;
    double x = 0;
    long long ll = 0;
    unsigned long long ull = 0;
    if (!v[0]) return mbpo__fail("%s: empty value", f->name);
    if (f->kind == MBPO_FLAG_STRING) {
        if (store) *(const char **)f->value = v;
        return 1;
    }
    if (f->kind == MBPO_FLAG_CHOICE) {
        int idx = mbpo__choice_find(f->check, v);
        if (idx < 0) {
            char list[512];
            const char *c;
            size_t k = 0;
            for (c = f->check; *c && k + 3 < sizeof list; c++) {   /* "a|b" -> "a, b" */
                if (*c == '|') { list[k++] = ','; list[k++] = ' '; }
                else list[k++] = *c;
            }
            list[k] = 0;
            return mbpo__fail("%s: '%s' is not one of %s", f->name, v, list);
        }
        if (store) *(int *)f->value = idx;
        return 1;
    }
    if ((unsigned char)v[0] <= ' ')   /* strtod / strtoll would skip it */
        return mbpo__fail("%s: '%s' is not a%s", f->name, v, f->kind == MBPO_FLAG_DOUBLE ? " number" : "n integer");
    if (f->kind == MBPO_FLAG_DOUBLE) {
        const char *end;
        errno = 0;
        x = mbpo__strtod_dot(v, &end);
        if (end == v) return mbpo__fail("%s: '%s' is not a number", f->name, v);
        if (*end) return mbpo__fail("%s: '%s' has trailing characters", f->name, v);
        if (errno == ERANGE) return mbpo__fail("%s: %s is out of range", f->name, v);
        if (!isfinite(x)) return mbpo__fail("%s: '%s' is not a finite number", f->name, v);
    } else {
        char *end;
        if (!mbpo__integer_text(v)) {
            const char *e;
            (void)mbpo__strtod_dot(v, &e);
            if (e != v && *e) return mbpo__fail("%s: '%s' has trailing characters", f->name, v);
            return mbpo__fail("%s: '%s' is not an integer", f->name, v);
        }
        errno = 0;
        if (f->kind == MBPO_FLAG_UINT64 && v[0] != '-') {
            ull = strtoull(v, &end, 10);
            x = (double)ull;
        } else {   /* a negative uint64 is parsed signed, to be refused by its sign, never wrapped */
            ll = strtoll(v, &end, 10);
            x = (double)ll;
        }
        if (errno == ERANGE || (f->kind == MBPO_FLAG_INT && (ll < INT_MIN || ll > INT_MAX)))
            return mbpo__fail("%s: %s is out of range", f->name, v);
        if (f->kind == MBPO_FLAG_UINT64 && ll < 0) return mbpo__fail("%s: must be >= 0, got %s", f->name, v);
    }
    if (f->check && mbpo__range_parse(f->check, &r) && !mbpo__range_has(&r, x))
        return mbpo__fail("%s: must be %s%s, got %s", f->name, r.has_lo && r.has_hi ? "in " : "", f->check, v);
    if (store) {
        if (f->kind == MBPO_FLAG_DOUBLE) *(double *)f->value = x;
        else if (f->kind == MBPO_FLAG_INT) *(int *)f->value = (int)ll;
        else if (f->kind == MBPO_FLAG_INT64) *(int64_t *)f->value = (int64_t)ll;
        else *(uint64_t *)f->value = (uint64_t)ull;
    }
    return 1;
}

/* One pass over argv: the first checks everything and stores nothing, the second stores. */
static int mbpo__flags_scan(const mbpo_flag *flags, int n, int argc, char **argv, int store, unsigned char *seen) {
    int i, k;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        size_t len;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return MBPO_FLAGS_HELP;
        if (!strcmp(a, "--version")) return MBPO_FLAGS_VERSION;
        if (a[0] != '-') return mbpo__fail("unexpected argument '%s'", a);
        if (a[1] != '-') return mbpo__fail("unknown flag %s", a);
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        for (k = 0; k < n; k++) if (strlen(flags[k].name) == len && !strncmp(flags[k].name, a, len)) break;
        if (k == n) {
            if ((len == 6 && !strncmp(a, "--help", 6)) || (len == 9 && !strncmp(a, "--version", 9)))
                return mbpo__fail("%.*s takes no value", (int)len, a);
            return mbpo__fail("unknown flag %.*s", (int)len, a);
        }
        if (seen[k]) return mbpo__fail("%s given twice", flags[k].name);
        seen[k] = 1;
        if (flags[k].kind == MBPO_FLAG_SWITCH) {
            if (eq) return mbpo__fail("%s takes no value", flags[k].name);
            if (store) *(int *)flags[k].value = 1;
            continue;
        }
        if (eq) v = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) v = argv[++i];
        else return mbpo__fail("%s needs a value", flags[k].name);
        if (!mbpo__flag_value(&flags[k], v, store)) return 0;
    }
    for (k = 0; k < n; k++)
        if (flags[k].kind == MBPO_FLAG_STRING && flags[k].check && !seen[k]) return mbpo__fail("%s is required", flags[k].name);
    return MBPO_FLAGS_OK;
}

MBPODEF int mbpo_flags_parse(const mbpo_flag *flags, int n_flags, int argc, char **argv) {
    unsigned char *seen;
    int r;
    if (n_flags < 0) return mbpo__fail("flag table: n_flags %d < 0", n_flags);
    if (!mbpo__flags_check_table(flags, n_flags)) return 0;
    if (!(seen = (unsigned char *)mbpo__calloc((size_t)n_flags + 1, 1))) return 0;
    r = mbpo__flags_scan(flags, n_flags, argc, argv, 0, seen);
    if (r == MBPO_FLAGS_OK) {
        memset(seen, 0, (size_t)n_flags + 1);
        r = mbpo__flags_scan(flags, n_flags, argc, argv, 1, seen);
    }
    mbpo_free(seen);
    return r;
}

/* %g with '.' whatever the locale, as the parser reads it */
static const char *mbpo__fmt_g(char *buf, size_t size, double v) {
    char dp = localeconv()->decimal_point[0], *q;
    snprintf(buf, size, "%g", v);
    if (dp && dp != '.') for (q = buf; *q; q++) if (*q == dp) *q = '.';
    return buf;
}

MBPODEF void mbpo_flags_usage(FILE *out, const char *prog, const char *synopsis, const mbpo_flag *flags, int n_flags) {
    char g1[32], g2[32];
    int i;
    fprintf(out, "usage: %s %s\n", prog, synopsis);
    for (i = 0; i < n_flags; i++) {
        const mbpo_flag *f = &flags[i];
        const char *arg = f->arg ? f->arg : "VALUE", *h;
        char left[128], tail[256] = "";
        size_t t = 0;
        mbpo__range r;
        if (!f->name || !f->value) continue;   /* a bad table: mbpo_flags_parse says what is wrong */
        if (f->kind == MBPO_FLAG_SWITCH) snprintf(left, sizeof left, "  %s", f->name);
        else snprintf(left, sizeof left, "  %s %s", f->name, arg);
        fprintf(out, "%-*s", strlen(left) < 23 ? 23 : (int)strlen(left) + 1, left);
        for (h = f->help ? f->help : ""; *h; h++) {   /* continuation lines line up with the first */
            fputc(*h, out);
            if (*h == '\n') fprintf(out, "%23s", "");
        }
        /* what the parser checks and the default, from the same table */
#define MBPO__TAIL(...) do { if (t < sizeof tail) t += (size_t)snprintf(tail + t, sizeof tail - t, __VA_ARGS__); } while (0)
        if (mbpo__flag_numeric(f->kind) && f->check && mbpo__range_parse(f->check, &r)) {
            mbpo__fmt_g(g1, sizeof g1, r.lo);
            mbpo__fmt_g(g2, sizeof g2, r.hi);
            if (r.has_lo && r.has_hi) MBPO__TAIL("%s %s %s %s %s", g1, r.lo_open ? "<" : "<=", arg, r.hi_open ? "<" : "<=", g2);
            else if (r.has_lo) MBPO__TAIL("%s %s %s", arg, r.lo_open ? ">" : ">=", g1);
            else MBPO__TAIL("%s %s %s", arg, r.hi_open ? "<" : "<=", g2);
        }
        if (f->kind == MBPO_FLAG_CHOICE) MBPO__TAIL("%s", f->check);
        if (f->kind == MBPO_FLAG_STRING && f->check) MBPO__TAIL("required");
        if (f->kind != MBPO_FLAG_SWITCH && !(f->kind == MBPO_FLAG_STRING && !*(const char *const *)f->value)) {
            MBPO__TAIL("%sdefault ", t ? ", " : "");
            switch (f->kind) {
            case MBPO_FLAG_STRING: MBPO__TAIL("%s", *(const char *const *)f->value); break;
            case MBPO_FLAG_INT: MBPO__TAIL("%d", *(const int *)f->value); break;
            case MBPO_FLAG_INT64: MBPO__TAIL("%lld", (long long)*(const int64_t *)f->value); break;
            case MBPO_FLAG_UINT64: MBPO__TAIL("%llu", (unsigned long long)*(const uint64_t *)f->value); break;
            case MBPO_FLAG_DOUBLE: MBPO__TAIL("%s", mbpo__fmt_g(g1, sizeof g1, *(const double *)f->value)); break;
            default: {   /* CHOICE: the name at the index */
                const char *c = f->check;
                int idx = *(const int *)f->value, k;
                for (k = 0; k < idx && c; k++) { c = strchr(c, '|'); if (c) c++; }
                if (c && idx >= 0) MBPO__TAIL("%.*s", (int)strcspn(c, "|"), c);
                else MBPO__TAIL("?");
            }
            }
        } else if (f->kind == MBPO_FLAG_SWITCH && *(const int *)f->value) MBPO__TAIL("default on");
#undef MBPO__TAIL
        if (t) fprintf(out, "%s(%s)", f->help && f->help[0] ? " " : "", tail);
        fputc('\n', out);
    }
    fprintf(out, "%-23s%s\n%-23s%s\n", "  --version", "print the mbpo version and build options, then exit",
            "  -h, --help", "print this text, then exit");
}

#if defined(_OPENMP) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(MBPO_NO_REEXEC)
/* 1 when argv[0 .. argc) is exactly this process's command line. */
static int mbpo__is_own_cmdline(int argc, char **argv) {
    char buf[65536];
    size_t n = 0, at = 0;
    int i, ok = 1;
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf, f);
    if (!feof(f)) ok = 0;                    /* longer than the buffer: do not guess */
    fclose(f);
    for (i = 0; ok && i < argc; i++) {
        size_t len = argv[i] ? strlen(argv[i]) : (size_t)-1;
        if (len == (size_t)-1 || at + len + 1 > n || memcmp(buf + at, argv[i], len + 1) != 0) ok = 0;
        else at += len + 1;
    }
    return ok && at == n;
}
#endif
MBPODEF void mbpo_threads_setup(int argc, char **argv) {
#if defined(_OPENMP) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && !defined(MBPO_NO_REEXEC)
    const char *pre = getenv("LD_PRELOAD");
    char **av;
    int i;
    if (argc < 1 || !argv || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (pre && strstr(pre, "vgpreload")) return;                    /* valgrind: /proc/self/exe is the tool */
    if (!mbpo__is_own_cmdline(argc, argv)) return;
    av = (char **)malloc(((size_t)argc + 1) * sizeof *av);           /* argv[0 .. argc) and a NULL */
    if (!av) return;
    for (i = 0; i < argc; i++) av[i] = argv[i];
    av[argc] = NULL;
    if (setenv("GOMP_SPINCOUNT", MBPO_SPINCOUNT, 0) == 0) {
        fflush(NULL);
        execv("/proc/self/exe", av);     /* returns only when it failed: then go on as we are */
        unsetenv("GOMP_SPINCOUNT");
    }
    free(av);
#else
    (void)argc; (void)argv;
#endif
}
MBPODEF int mbpo_flags_handle(const char *prog, const char *synopsis, const mbpo_flag *flags, int n_flags,
                              int argc, char **argv, int *exit_code) {
    int r;
    mbpo_threads_setup(argc, argv);
    r = mbpo_flags_parse(flags, n_flags, argc, argv);
    *exit_code = 0;
    if (r == MBPO_FLAGS_OK) return 1;
    if (r == MBPO_FLAGS_HELP) mbpo_flags_usage(stdout, prog, synopsis, flags, n_flags);
    else if (r == MBPO_FLAGS_VERSION) printf("%s: %s\n", prog, mbpo_build_info());
    else { fprintf(stderr, "%s: %s (see --help)\n", prog, mbpo_failure_reason()); *exit_code = 2; }
    return 0;
}

/* ==========================================================================================
   2. inputs
   ========================================================================================== */

/* ------------------------------------------------------------------ 2. inputs: Unicode */

/* BEGIN GENERATED-UNICODE: written by tests/reference/make_unicode_tables.py from the Unicode
   Character Database 15.0.0 (Debian package unicode-data). Do not edit by hand. */
#define MBPO__UNICODE_VERSION "15.0.0"
/* General category L (Lu Ll Lt Lm Lo) and N (Nd Nl No), and White_Space: {first, last}. */
static const uint32_t mbpo__uc_letter[659][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5},
    {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858},
    {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D},
    {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD},
    {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28},
    {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
    {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D},
    {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90},
    {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA},
    {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE},
    {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D},
    {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1},
    {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00},
    {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F}, {0x1050, 0x1055},
    {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070}, {0x1075, 0x1081}, {0x108E, 0x108E},
    {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D},
    {0x1250, 0x1256}, {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0},
    {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6}, {0x12D8, 0x1310},
    {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1401, 0x166C},
    {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8}, {0x1700, 0x1711}, {0x171F, 0x1731},
    {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC},
    {0x1820, 0x1878}, {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E},
    {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16}, {0x1A20, 0x1A54},
    {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF}, {0x1BBA, 0x1BE5},
    {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D},
    {0x212F, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67},
    {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6}, {0x2DB8, 0x2DBE},
    {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F}, {0x3005, 0x3006},
    {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF},
    {0x3105, 0x312F}, {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C},
    {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1}, {0xA7D3, 0xA7D3},
    {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A}, {0xA80C, 0xA822}, {0xA840, 0xA873},
    {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946},
    {0xA960, 0xA97C}, {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE},
    {0xAA00, 0xAA28}, {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF},
    {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2}, {0xAADB, 0xAADD},
    {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E}, {0xAB11, 0xAB16}, {0xAB20, 0xAB26},
    {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6},
    {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D},
    {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB}, {0xFE70, 0xFE74},
    {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF},
    {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D},
    {0x1003F, 0x1004D}, {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0}, {0x10300, 0x1031F},
    {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375}, {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF},
    {0x10400, 0x1049D}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563}, {0x10570, 0x1057A},
    {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595}, {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9},
    {0x105BB, 0x105BC}, {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C},
    {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2}, {0x108F4, 0x108F5}, {0x10900, 0x10915},
    {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF}, {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17},
    {0x10A19, 0x10A35}, {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35},
    {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x10D00, 0x10D23}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27}, {0x10F30, 0x10F45},
    {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075},
    {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147}, {0x11150, 0x11172},
    {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211},
    {0x11213, 0x1122B}, {0x1123F, 0x11240}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D},
    {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330},
    {0x11332, 0x11333}, {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11400, 0x11434},
    {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF}, {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE},
    {0x115D8, 0x115DB}, {0x11600, 0x1162F}, {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A},
    {0x11740, 0x11746}, {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
    {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7}, {0x119AA, 0x119D0},
    {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32}, {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50},
    {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40},
    {0x11C72, 0x11C8F}, {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65},
    {0x11D67, 0x11D68}, {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10},
    {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399}, {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342F},
    {0x13441, 0x13446}, {0x14400, 0x14646}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED},
    {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A},
    {0x16F50, 0x16F50}, {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5},
    {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132},
    {0x1B150, 0x1B152}, {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C},
    {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2},
    {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB}, {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505},
    {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C}, {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544},
    {0x1D546, 0x1D546}, {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA},
    {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
    {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E100, 0x1E12C},
    {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB}, {0x1E4D0, 0x1E4EB}, {0x1E7E0, 0x1E7E6},
    {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B},
    {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27}, {0x1EE29, 0x1EE32},
    {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49},
    {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52}, {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59},
    {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A},
    {0x1EE6C, 0x1EE72}, {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B},
    {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739}, {0x2B740, 0x2B81D},
    {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A}, {0x31350, 0x323AF},
};
static const uint32_t mbpo__uc_number[137][2] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x17F0, 0x17F9},
    {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89}, {0x1A90, 0x1A99}, {0x1B50, 0x1B59},
    {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},
    {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD},
    {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF}, {0xA830, 0xA835},
    {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9}, {0xAA50, 0xAA59}, {0xABF0, 0xABF9},
    {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178}, {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323},
    {0x10341, 0x10341}, {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F}, {0x10879, 0x1087F},
    {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B}, {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF},
    {0x10A40, 0x10A48}, {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F}, {0x10B78, 0x10B7F},
    {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39}, {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54},
    {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x111E1, 0x111F4},
    {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B},
    {0x118E0, 0x118F2}, {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9}, {0x11F50, 0x11F59},
    {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61},
    {0x16E80, 0x16E96}, {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149},
    {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF},
    {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
static const uint32_t mbpo__uc_space[10][2] = {
    {0x9, 0xD}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};
/* Canonical combining class, nonzero only: {first, last, class}. */
static const uint32_t mbpo__uc_ccc_ranges[388][3] = {
    {0x300, 0x314, 0xE6}, {0x315, 0x315, 0xE8}, {0x316, 0x319, 0xDC}, {0x31A, 0x31A, 0xE8}, {0x31B, 0x31B, 0xD8},
    {0x31C, 0x320, 0xDC}, {0x321, 0x322, 0xCA}, {0x323, 0x326, 0xDC}, {0x327, 0x328, 0xCA}, {0x329, 0x333, 0xDC},
    {0x334, 0x338, 0x1}, {0x339, 0x33C, 0xDC}, {0x33D, 0x344, 0xE6}, {0x345, 0x345, 0xF0}, {0x346, 0x346, 0xE6},
    {0x347, 0x349, 0xDC}, {0x34A, 0x34C, 0xE6}, {0x34D, 0x34E, 0xDC}, {0x350, 0x352, 0xE6}, {0x353, 0x356, 0xDC},
    {0x357, 0x357, 0xE6}, {0x358, 0x358, 0xE8}, {0x359, 0x35A, 0xDC}, {0x35B, 0x35B, 0xE6}, {0x35C, 0x35C, 0xE9},
    {0x35D, 0x35E, 0xEA}, {0x35F, 0x35F, 0xE9}, {0x360, 0x361, 0xEA}, {0x362, 0x362, 0xE9}, {0x363, 0x36F, 0xE6},
    {0x483, 0x487, 0xE6}, {0x591, 0x591, 0xDC}, {0x592, 0x595, 0xE6}, {0x596, 0x596, 0xDC}, {0x597, 0x599, 0xE6},
    {0x59A, 0x59A, 0xDE}, {0x59B, 0x59B, 0xDC}, {0x59C, 0x5A1, 0xE6}, {0x5A2, 0x5A7, 0xDC}, {0x5A8, 0x5A9, 0xE6},
    {0x5AA, 0x5AA, 0xDC}, {0x5AB, 0x5AC, 0xE6}, {0x5AD, 0x5AD, 0xDE}, {0x5AE, 0x5AE, 0xE4}, {0x5AF, 0x5AF, 0xE6},
    {0x5B0, 0x5B0, 0xA}, {0x5B1, 0x5B1, 0xB}, {0x5B2, 0x5B2, 0xC}, {0x5B3, 0x5B3, 0xD}, {0x5B4, 0x5B4, 0xE},
    {0x5B5, 0x5B5, 0xF}, {0x5B6, 0x5B6, 0x10}, {0x5B7, 0x5B7, 0x11}, {0x5B8, 0x5B8, 0x12}, {0x5B9, 0x5BA, 0x13},
    {0x5BB, 0x5BB, 0x14}, {0x5BC, 0x5BC, 0x15}, {0x5BD, 0x5BD, 0x16}, {0x5BF, 0x5BF, 0x17}, {0x5C1, 0x5C1, 0x18},
    {0x5C2, 0x5C2, 0x19}, {0x5C4, 0x5C4, 0xE6}, {0x5C5, 0x5C5, 0xDC}, {0x5C7, 0x5C7, 0x12}, {0x610, 0x617, 0xE6},
    {0x618, 0x618, 0x1E}, {0x619, 0x619, 0x1F}, {0x61A, 0x61A, 0x20}, {0x64B, 0x64B, 0x1B}, {0x64C, 0x64C, 0x1C},
    {0x64D, 0x64D, 0x1D}, {0x64E, 0x64E, 0x1E}, {0x64F, 0x64F, 0x1F}, {0x650, 0x650, 0x20}, {0x651, 0x651, 0x21},
    {0x652, 0x652, 0x22}, {0x653, 0x654, 0xE6}, {0x655, 0x656, 0xDC}, {0x657, 0x65B, 0xE6}, {0x65C, 0x65C, 0xDC},
    {0x65D, 0x65E, 0xE6}, {0x65F, 0x65F, 0xDC}, {0x670, 0x670, 0x23}, {0x6D6, 0x6DC, 0xE6}, {0x6DF, 0x6E2, 0xE6},
    {0x6E3, 0x6E3, 0xDC}, {0x6E4, 0x6E4, 0xE6}, {0x6E7, 0x6E8, 0xE6}, {0x6EA, 0x6EA, 0xDC}, {0x6EB, 0x6EC, 0xE6},
    {0x6ED, 0x6ED, 0xDC}, {0x711, 0x711, 0x24}, {0x730, 0x730, 0xE6}, {0x731, 0x731, 0xDC}, {0x732, 0x733, 0xE6},
    {0x734, 0x734, 0xDC}, {0x735, 0x736, 0xE6}, {0x737, 0x739, 0xDC}, {0x73A, 0x73A, 0xE6}, {0x73B, 0x73C, 0xDC},
    {0x73D, 0x73D, 0xE6}, {0x73E, 0x73E, 0xDC}, {0x73F, 0x741, 0xE6}, {0x742, 0x742, 0xDC}, {0x743, 0x743, 0xE6},
    {0x744, 0x744, 0xDC}, {0x745, 0x745, 0xE6}, {0x746, 0x746, 0xDC}, {0x747, 0x747, 0xE6}, {0x748, 0x748, 0xDC},
    {0x749, 0x74A, 0xE6}, {0x7EB, 0x7F1, 0xE6}, {0x7F2, 0x7F2, 0xDC}, {0x7F3, 0x7F3, 0xE6}, {0x7FD, 0x7FD, 0xDC},
    {0x816, 0x819, 0xE6}, {0x81B, 0x823, 0xE6}, {0x825, 0x827, 0xE6}, {0x829, 0x82D, 0xE6}, {0x859, 0x85B, 0xDC},
    {0x898, 0x898, 0xE6}, {0x899, 0x89B, 0xDC}, {0x89C, 0x89F, 0xE6}, {0x8CA, 0x8CE, 0xE6}, {0x8CF, 0x8D3, 0xDC},
    {0x8D4, 0x8E1, 0xE6}, {0x8E3, 0x8E3, 0xDC}, {0x8E4, 0x8E5, 0xE6}, {0x8E6, 0x8E6, 0xDC}, {0x8E7, 0x8E8, 0xE6},
    {0x8E9, 0x8E9, 0xDC}, {0x8EA, 0x8EC, 0xE6}, {0x8ED, 0x8EF, 0xDC}, {0x8F0, 0x8F0, 0x1B}, {0x8F1, 0x8F1, 0x1C},
    {0x8F2, 0x8F2, 0x1D}, {0x8F3, 0x8F5, 0xE6}, {0x8F6, 0x8F6, 0xDC}, {0x8F7, 0x8F8, 0xE6}, {0x8F9, 0x8FA, 0xDC},
    {0x8FB, 0x8FF, 0xE6}, {0x93C, 0x93C, 0x7}, {0x94D, 0x94D, 0x9}, {0x951, 0x951, 0xE6}, {0x952, 0x952, 0xDC},
    {0x953, 0x954, 0xE6}, {0x9BC, 0x9BC, 0x7}, {0x9CD, 0x9CD, 0x9}, {0x9FE, 0x9FE, 0xE6}, {0xA3C, 0xA3C, 0x7},
    {0xA4D, 0xA4D, 0x9}, {0xABC, 0xABC, 0x7}, {0xACD, 0xACD, 0x9}, {0xB3C, 0xB3C, 0x7}, {0xB4D, 0xB4D, 0x9},
    {0xBCD, 0xBCD, 0x9}, {0xC3C, 0xC3C, 0x7}, {0xC4D, 0xC4D, 0x9}, {0xC55, 0xC55, 0x54}, {0xC56, 0xC56, 0x5B},
    {0xCBC, 0xCBC, 0x7}, {0xCCD, 0xCCD, 0x9}, {0xD3B, 0xD3C, 0x9}, {0xD4D, 0xD4D, 0x9}, {0xDCA, 0xDCA, 0x9},
    {0xE38, 0xE39, 0x67}, {0xE3A, 0xE3A, 0x9}, {0xE48, 0xE4B, 0x6B}, {0xEB8, 0xEB9, 0x76}, {0xEBA, 0xEBA, 0x9},
    {0xEC8, 0xECB, 0x7A}, {0xF18, 0xF19, 0xDC}, {0xF35, 0xF35, 0xDC}, {0xF37, 0xF37, 0xDC}, {0xF39, 0xF39, 0xD8},
    {0xF71, 0xF71, 0x81}, {0xF72, 0xF72, 0x82}, {0xF74, 0xF74, 0x84}, {0xF7A, 0xF7D, 0x82}, {0xF80, 0xF80, 0x82},
    {0xF82, 0xF83, 0xE6}, {0xF84, 0xF84, 0x9}, {0xF86, 0xF87, 0xE6}, {0xFC6, 0xFC6, 0xDC}, {0x1037, 0x1037, 0x7},
    {0x1039, 0x103A, 0x9}, {0x108D, 0x108D, 0xDC}, {0x135D, 0x135F, 0xE6}, {0x1714, 0x1715, 0x9}, {0x1734, 0x1734, 0x9},
    {0x17D2, 0x17D2, 0x9}, {0x17DD, 0x17DD, 0xE6}, {0x18A9, 0x18A9, 0xE4}, {0x1939, 0x1939, 0xDE}, {0x193A, 0x193A, 0xE6},
    {0x193B, 0x193B, 0xDC}, {0x1A17, 0x1A17, 0xE6}, {0x1A18, 0x1A18, 0xDC}, {0x1A60, 0x1A60, 0x9}, {0x1A75, 0x1A7C, 0xE6},
    {0x1A7F, 0x1A7F, 0xDC}, {0x1AB0, 0x1AB4, 0xE6}, {0x1AB5, 0x1ABA, 0xDC}, {0x1ABB, 0x1ABC, 0xE6}, {0x1ABD, 0x1ABD, 0xDC},
    {0x1ABF, 0x1AC0, 0xDC}, {0x1AC1, 0x1AC2, 0xE6}, {0x1AC3, 0x1AC4, 0xDC}, {0x1AC5, 0x1AC9, 0xE6}, {0x1ACA, 0x1ACA, 0xDC},
    {0x1ACB, 0x1ACE, 0xE6}, {0x1B34, 0x1B34, 0x7}, {0x1B44, 0x1B44, 0x9}, {0x1B6B, 0x1B6B, 0xE6}, {0x1B6C, 0x1B6C, 0xDC},
    {0x1B6D, 0x1B73, 0xE6}, {0x1BAA, 0x1BAB, 0x9}, {0x1BE6, 0x1BE6, 0x7}, {0x1BF2, 0x1BF3, 0x9}, {0x1C37, 0x1C37, 0x7},
    {0x1CD0, 0x1CD2, 0xE6}, {0x1CD4, 0x1CD4, 0x1}, {0x1CD5, 0x1CD9, 0xDC}, {0x1CDA, 0x1CDB, 0xE6}, {0x1CDC, 0x1CDF, 0xDC},
    {0x1CE0, 0x1CE0, 0xE6}, {0x1CE2, 0x1CE8, 0x1}, {0x1CED, 0x1CED, 0xDC}, {0x1CF4, 0x1CF4, 0xE6}, {0x1CF8, 0x1CF9, 0xE6},
    {0x1DC0, 0x1DC1, 0xE6}, {0x1DC2, 0x1DC2, 0xDC}, {0x1DC3, 0x1DC9, 0xE6}, {0x1DCA, 0x1DCA, 0xDC}, {0x1DCB, 0x1DCC, 0xE6},
    {0x1DCD, 0x1DCD, 0xEA}, {0x1DCE, 0x1DCE, 0xD6}, {0x1DCF, 0x1DCF, 0xDC}, {0x1DD0, 0x1DD0, 0xCA}, {0x1DD1, 0x1DF5, 0xE6},
    {0x1DF6, 0x1DF6, 0xE8}, {0x1DF7, 0x1DF8, 0xE4}, {0x1DF9, 0x1DF9, 0xDC}, {0x1DFA, 0x1DFA, 0xDA}, {0x1DFB, 0x1DFB, 0xE6},
    {0x1DFC, 0x1DFC, 0xE9}, {0x1DFD, 0x1DFD, 0xDC}, {0x1DFE, 0x1DFE, 0xE6}, {0x1DFF, 0x1DFF, 0xDC}, {0x20D0, 0x20D1, 0xE6},
    {0x20D2, 0x20D3, 0x1}, {0x20D4, 0x20D7, 0xE6}, {0x20D8, 0x20DA, 0x1}, {0x20DB, 0x20DC, 0xE6}, {0x20E1, 0x20E1, 0xE6},
    {0x20E5, 0x20E6, 0x1}, {0x20E7, 0x20E7, 0xE6}, {0x20E8, 0x20E8, 0xDC}, {0x20E9, 0x20E9, 0xE6}, {0x20EA, 0x20EB, 0x1},
    {0x20EC, 0x20EF, 0xDC}, {0x20F0, 0x20F0, 0xE6}, {0x2CEF, 0x2CF1, 0xE6}, {0x2D7F, 0x2D7F, 0x9}, {0x2DE0, 0x2DFF, 0xE6},
    {0x302A, 0x302A, 0xDA}, {0x302B, 0x302B, 0xE4}, {0x302C, 0x302C, 0xE8}, {0x302D, 0x302D, 0xDE}, {0x302E, 0x302F, 0xE0},
    {0x3099, 0x309A, 0x8}, {0xA66F, 0xA66F, 0xE6}, {0xA674, 0xA67D, 0xE6}, {0xA69E, 0xA69F, 0xE6}, {0xA6F0, 0xA6F1, 0xE6},
    {0xA806, 0xA806, 0x9}, {0xA82C, 0xA82C, 0x9}, {0xA8C4, 0xA8C4, 0x9}, {0xA8E0, 0xA8F1, 0xE6}, {0xA92B, 0xA92D, 0xDC},
    {0xA953, 0xA953, 0x9}, {0xA9B3, 0xA9B3, 0x7}, {0xA9C0, 0xA9C0, 0x9}, {0xAAB0, 0xAAB0, 0xE6}, {0xAAB2, 0xAAB3, 0xE6},
    {0xAAB4, 0xAAB4, 0xDC}, {0xAAB7, 0xAAB8, 0xE6}, {0xAABE, 0xAABF, 0xE6}, {0xAAC1, 0xAAC1, 0xE6}, {0xAAF6, 0xAAF6, 0x9},
    {0xABED, 0xABED, 0x9}, {0xFB1E, 0xFB1E, 0x1A}, {0xFE20, 0xFE26, 0xE6}, {0xFE27, 0xFE2D, 0xDC}, {0xFE2E, 0xFE2F, 0xE6},
    {0x101FD, 0x101FD, 0xDC}, {0x102E0, 0x102E0, 0xDC}, {0x10376, 0x1037A, 0xE6}, {0x10A0D, 0x10A0D, 0xDC}, {0x10A0F, 0x10A0F, 0xE6},
    {0x10A38, 0x10A38, 0xE6}, {0x10A39, 0x10A39, 0x1}, {0x10A3A, 0x10A3A, 0xDC}, {0x10A3F, 0x10A3F, 0x9}, {0x10AE5, 0x10AE5, 0xE6},
    {0x10AE6, 0x10AE6, 0xDC}, {0x10D24, 0x10D27, 0xE6}, {0x10EAB, 0x10EAC, 0xE6}, {0x10EFD, 0x10EFF, 0xDC}, {0x10F46, 0x10F47, 0xDC},
    {0x10F48, 0x10F4A, 0xE6}, {0x10F4B, 0x10F4B, 0xDC}, {0x10F4C, 0x10F4C, 0xE6}, {0x10F4D, 0x10F50, 0xDC}, {0x10F82, 0x10F82, 0xE6},
    {0x10F83, 0x10F83, 0xDC}, {0x10F84, 0x10F84, 0xE6}, {0x10F85, 0x10F85, 0xDC}, {0x11046, 0x11046, 0x9}, {0x11070, 0x11070, 0x9},
    {0x1107F, 0x1107F, 0x9}, {0x110B9, 0x110B9, 0x9}, {0x110BA, 0x110BA, 0x7}, {0x11100, 0x11102, 0xE6}, {0x11133, 0x11134, 0x9},
    {0x11173, 0x11173, 0x7}, {0x111C0, 0x111C0, 0x9}, {0x111CA, 0x111CA, 0x7}, {0x11235, 0x11235, 0x9}, {0x11236, 0x11236, 0x7},
    {0x112E9, 0x112E9, 0x7}, {0x112EA, 0x112EA, 0x9}, {0x1133B, 0x1133C, 0x7}, {0x1134D, 0x1134D, 0x9}, {0x11366, 0x1136C, 0xE6},
    {0x11370, 0x11374, 0xE6}, {0x11442, 0x11442, 0x9}, {0x11446, 0x11446, 0x7}, {0x1145E, 0x1145E, 0xE6}, {0x114C2, 0x114C2, 0x9},
    {0x114C3, 0x114C3, 0x7}, {0x115BF, 0x115BF, 0x9}, {0x115C0, 0x115C0, 0x7}, {0x1163F, 0x1163F, 0x9}, {0x116B6, 0x116B6, 0x9},
    {0x116B7, 0x116B7, 0x7}, {0x1172B, 0x1172B, 0x9}, {0x11839, 0x11839, 0x9}, {0x1183A, 0x1183A, 0x7}, {0x1193D, 0x1193E, 0x9},
    {0x11943, 0x11943, 0x7}, {0x119E0, 0x119E0, 0x9}, {0x11A34, 0x11A34, 0x9}, {0x11A47, 0x11A47, 0x9}, {0x11A99, 0x11A99, 0x9},
    {0x11C3F, 0x11C3F, 0x9}, {0x11D42, 0x11D42, 0x7}, {0x11D44, 0x11D45, 0x9}, {0x11D97, 0x11D97, 0x9}, {0x11F41, 0x11F42, 0x9},
    {0x16AF0, 0x16AF4, 0x1}, {0x16B30, 0x16B36, 0xE6}, {0x16FF0, 0x16FF1, 0x6}, {0x1BC9E, 0x1BC9E, 0x1}, {0x1D165, 0x1D166, 0xD8},
    {0x1D167, 0x1D169, 0x1}, {0x1D16D, 0x1D16D, 0xE2}, {0x1D16E, 0x1D172, 0xD8}, {0x1D17B, 0x1D182, 0xDC}, {0x1D185, 0x1D189, 0xE6},
    {0x1D18A, 0x1D18B, 0xDC}, {0x1D1AA, 0x1D1AD, 0xE6}, {0x1D242, 0x1D244, 0xE6}, {0x1E000, 0x1E006, 0xE6}, {0x1E008, 0x1E018, 0xE6},
    {0x1E01B, 0x1E021, 0xE6}, {0x1E023, 0x1E024, 0xE6}, {0x1E026, 0x1E02A, 0xE6}, {0x1E08F, 0x1E08F, 0xE6}, {0x1E130, 0x1E136, 0xE6},
    {0x1E2AE, 0x1E2AE, 0xE6}, {0x1E2EC, 0x1E2EF, 0xE6}, {0x1E4EC, 0x1E4ED, 0xE8}, {0x1E4EE, 0x1E4EE, 0xDC}, {0x1E4EF, 0x1E4EF, 0xE6},
    {0x1E8D0, 0x1E8D6, 0xDC}, {0x1E944, 0x1E949, 0xE6}, {0x1E94A, 0x1E94A, 0x7},
};
/* Canonical decompositions, one level: {code point, first, second or 0}. */
static const uint32_t mbpo__uc_decomp[2061][3] = {
    {0xC0, 0x41, 0x300}, {0xC1, 0x41, 0x301}, {0xC2, 0x41, 0x302}, {0xC3, 0x41, 0x303}, {0xC4, 0x41, 0x308},
    {0xC5, 0x41, 0x30A}, {0xC7, 0x43, 0x327}, {0xC8, 0x45, 0x300}, {0xC9, 0x45, 0x301}, {0xCA, 0x45, 0x302},
    {0xCB, 0x45, 0x308}, {0xCC, 0x49, 0x300}, {0xCD, 0x49, 0x301}, {0xCE, 0x49, 0x302}, {0xCF, 0x49, 0x308},
    {0xD1, 0x4E, 0x303}, {0xD2, 0x4F, 0x300}, {0xD3, 0x4F, 0x301}, {0xD4, 0x4F, 0x302}, {0xD5, 0x4F, 0x303},
    {0xD6, 0x4F, 0x308}, {0xD9, 0x55, 0x300}, {0xDA, 0x55, 0x301}, {0xDB, 0x55, 0x302}, {0xDC, 0x55, 0x308},
    {0xDD, 0x59, 0x301}, {0xE0, 0x61, 0x300}, {0xE1, 0x61, 0x301}, {0xE2, 0x61, 0x302}, {0xE3, 0x61, 0x303},
    {0xE4, 0x61, 0x308}, {0xE5, 0x61, 0x30A}, {0xE7, 0x63, 0x327}, {0xE8, 0x65, 0x300}, {0xE9, 0x65, 0x301},
    {0xEA, 0x65, 0x302}, {0xEB, 0x65, 0x308}, {0xEC, 0x69, 0x300}, {0xED, 0x69, 0x301}, {0xEE, 0x69, 0x302},
    {0xEF, 0x69, 0x308}, {0xF1, 0x6E, 0x303}, {0xF2, 0x6F, 0x300}, {0xF3, 0x6F, 0x301}, {0xF4, 0x6F, 0x302},
    {0xF5, 0x6F, 0x303}, {0xF6, 0x6F, 0x308}, {0xF9, 0x75, 0x300}, {0xFA, 0x75, 0x301}, {0xFB, 0x75, 0x302},
    {0xFC, 0x75, 0x308}, {0xFD, 0x79, 0x301}, {0xFF, 0x79, 0x308}, {0x100, 0x41, 0x304}, {0x101, 0x61, 0x304},
    {0x102, 0x41, 0x306}, {0x103, 0x61, 0x306}, {0x104, 0x41, 0x328}, {0x105, 0x61, 0x328}, {0x106, 0x43, 0x301},
    {0x107, 0x63, 0x301}, {0x108, 0x43, 0x302}, {0x109, 0x63, 0x302}, {0x10A, 0x43, 0x307}, {0x10B, 0x63, 0x307},
    {0x10C, 0x43, 0x30C}, {0x10D, 0x63, 0x30C}, {0x10E, 0x44, 0x30C}, {0x10F, 0x64, 0x30C}, {0x112, 0x45, 0x304},
    {0x113, 0x65, 0x304}, {0x114, 0x45, 0x306}, {0x115, 0x65, 0x306}, {0x116, 0x45, 0x307}, {0x117, 0x65, 0x307},
    {0x118, 0x45, 0x328}, {0x119, 0x65, 0x328}, {0x11A, 0x45, 0x30C}, {0x11B, 0x65, 0x30C}, {0x11C, 0x47, 0x302},
    {0x11D, 0x67, 0x302}, {0x11E, 0x47, 0x306}, {0x11F, 0x67, 0x306}, {0x120, 0x47, 0x307}, {0x121, 0x67, 0x307},
    {0x122, 0x47, 0x327}, {0x123, 0x67, 0x327}, {0x124, 0x48, 0x302}, {0x125, 0x68, 0x302}, {0x128, 0x49, 0x303},
    {0x129, 0x69, 0x303}, {0x12A, 0x49, 0x304}, {0x12B, 0x69, 0x304}, {0x12C, 0x49, 0x306}, {0x12D, 0x69, 0x306},
    {0x12E, 0x49, 0x328}, {0x12F, 0x69, 0x328}, {0x130, 0x49, 0x307}, {0x134, 0x4A, 0x302}, {0x135, 0x6A, 0x302},
    {0x136, 0x4B, 0x327}, {0x137, 0x6B, 0x327}, {0x139, 0x4C, 0x301}, {0x13A, 0x6C, 0x301}, {0x13B, 0x4C, 0x327},
    {0x13C, 0x6C, 0x327}, {0x13D, 0x4C, 0x30C}, {0x13E, 0x6C, 0x30C}, {0x143, 0x4E, 0x301}, {0x144, 0x6E, 0x301},
    {0x145, 0x4E, 0x327}, {0x146, 0x6E, 0x327}, {0x147, 0x4E, 0x30C}, {0x148, 0x6E, 0x30C}, {0x14C, 0x4F, 0x304},
    {0x14D, 0x6F, 0x304}, {0x14E, 0x4F, 0x306}, {0x14F, 0x6F, 0x306}, {0x150, 0x4F, 0x30B}, {0x151, 0x6F, 0x30B},
    {0x154, 0x52, 0x301}, {0x155, 0x72, 0x301}, {0x156, 0x52, 0x327}, {0x157, 0x72, 0x327}, {0x158, 0x52, 0x30C},
    {0x159, 0x72, 0x30C}, {0x15A, 0x53, 0x301}, {0x15B, 0x73, 0x301}, {0x15C, 0x53, 0x302}, {0x15D, 0x73, 0x302},
    {0x15E, 0x53, 0x327}, {0x15F, 0x73, 0x327}, {0x160, 0x53, 0x30C}, {0x161, 0x73, 0x30C}, {0x162, 0x54, 0x327},
    {0x163, 0x74, 0x327}, {0x164, 0x54, 0x30C}, {0x165, 0x74, 0x30C}, {0x168, 0x55, 0x303}, {0x169, 0x75, 0x303},
    {0x16A, 0x55, 0x304}, {0x16B, 0x75, 0x304}, {0x16C, 0x55, 0x306}, {0x16D, 0x75, 0x306}, {0x16E, 0x55, 0x30A},
    {0x16F, 0x75, 0x30A}, {0x170, 0x55, 0x30B}, {0x171, 0x75, 0x30B}, {0x172, 0x55, 0x328}, {0x173, 0x75, 0x328},
    {0x174, 0x57, 0x302}, {0x175, 0x77, 0x302}, {0x176, 0x59, 0x302}, {0x177, 0x79, 0x302}, {0x178, 0x59, 0x308},
    {0x179, 0x5A, 0x301}, {0x17A, 0x7A, 0x301}, {0x17B, 0x5A, 0x307}, {0x17C, 0x7A, 0x307}, {0x17D, 0x5A, 0x30C},
    {0x17E, 0x7A, 0x30C}, {0x1A0, 0x4F, 0x31B}, {0x1A1, 0x6F, 0x31B}, {0x1AF, 0x55, 0x31B}, {0x1B0, 0x75, 0x31B},
    {0x1CD, 0x41, 0x30C}, {0x1CE, 0x61, 0x30C}, {0x1CF, 0x49, 0x30C}, {0x1D0, 0x69, 0x30C}, {0x1D1, 0x4F, 0x30C},
    {0x1D2, 0x6F, 0x30C}, {0x1D3, 0x55, 0x30C}, {0x1D4, 0x75, 0x30C}, {0x1D5, 0xDC, 0x304}, {0x1D6, 0xFC, 0x304},
    {0x1D7, 0xDC, 0x301}, {0x1D8, 0xFC, 0x301}, {0x1D9, 0xDC, 0x30C}, {0x1DA, 0xFC, 0x30C}, {0x1DB, 0xDC, 0x300},
    {0x1DC, 0xFC, 0x300}, {0x1DE, 0xC4, 0x304}, {0x1DF, 0xE4, 0x304}, {0x1E0, 0x226, 0x304}, {0x1E1, 0x227, 0x304},
    {0x1E2, 0xC6, 0x304}, {0x1E3, 0xE6, 0x304}, {0x1E6, 0x47, 0x30C}, {0x1E7, 0x67, 0x30C}, {0x1E8, 0x4B, 0x30C},
    {0x1E9, 0x6B, 0x30C}, {0x1EA, 0x4F, 0x328}, {0x1EB, 0x6F, 0x328}, {0x1EC, 0x1EA, 0x304}, {0x1ED, 0x1EB, 0x304},
    {0x1EE, 0x1B7, 0x30C}, {0x1EF, 0x292, 0x30C}, {0x1F0, 0x6A, 0x30C}, {0x1F4, 0x47, 0x301}, {0x1F5, 0x67, 0x301},
    {0x1F8, 0x4E, 0x300}, {0x1F9, 0x6E, 0x300}, {0x1FA, 0xC5, 0x301}, {0x1FB, 0xE5, 0x301}, {0x1FC, 0xC6, 0x301},
    {0x1FD, 0xE6, 0x301}, {0x1FE, 0xD8, 0x301}, {0x1FF, 0xF8, 0x301}, {0x200, 0x41, 0x30F}, {0x201, 0x61, 0x30F},
    {0x202, 0x41, 0x311}, {0x203, 0x61, 0x311}, {0x204, 0x45, 0x30F}, {0x205, 0x65, 0x30F}, {0x206, 0x45, 0x311},
    {0x207, 0x65, 0x311}, {0x208, 0x49, 0x30F}, {0x209, 0x69, 0x30F}, {0x20A, 0x49, 0x311}, {0x20B, 0x69, 0x311},
    {0x20C, 0x4F, 0x30F}, {0x20D, 0x6F, 0x30F}, {0x20E, 0x4F, 0x311}, {0x20F, 0x6F, 0x311}, {0x210, 0x52, 0x30F},
    {0x211, 0x72, 0x30F}, {0x212, 0x52, 0x311}, {0x213, 0x72, 0x311}, {0x214, 0x55, 0x30F}, {0x215, 0x75, 0x30F},
    {0x216, 0x55, 0x311}, {0x217, 0x75, 0x311}, {0x218, 0x53, 0x326}, {0x219, 0x73, 0x326}, {0x21A, 0x54, 0x326},
    {0x21B, 0x74, 0x326}, {0x21E, 0x48, 0x30C}, {0x21F, 0x68, 0x30C}, {0x226, 0x41, 0x307}, {0x227, 0x61, 0x307},
    {0x228, 0x45, 0x327}, {0x229, 0x65, 0x327}, {0x22A, 0xD6, 0x304}, {0x22B, 0xF6, 0x304}, {0x22C, 0xD5, 0x304},
    {0x22D, 0xF5, 0x304}, {0x22E, 0x4F, 0x307}, {0x22F, 0x6F, 0x307}, {0x230, 0x22E, 0x304}, {0x231, 0x22F, 0x304},
    {0x232, 0x59, 0x304}, {0x233, 0x79, 0x304}, {0x340, 0x300, 0x0}, {0x341, 0x301, 0x0}, {0x343, 0x313, 0x0},
    {0x344, 0x308, 0x301}, {0x374, 0x2B9, 0x0}, {0x37E, 0x3B, 0x0}, {0x385, 0xA8, 0x301}, {0x386, 0x391, 0x301},
    {0x387, 0xB7, 0x0}, {0x388, 0x395, 0x301}, {0x389, 0x397, 0x301}, {0x38A, 0x399, 0x301}, {0x38C, 0x39F, 0x301},
    {0x38E, 0x3A5, 0x301}, {0x38F, 0x3A9, 0x301}, {0x390, 0x3CA, 0x301}, {0x3AA, 0x399, 0x308}, {0x3AB, 0x3A5, 0x308},
    {0x3AC, 0x3B1, 0x301}, {0x3AD, 0x3B5, 0x301}, {0x3AE, 0x3B7, 0x301}, {0x3AF, 0x3B9, 0x301}, {0x3B0, 0x3CB, 0x301},
    {0x3CA, 0x3B9, 0x308}, {0x3CB, 0x3C5, 0x308}, {0x3CC, 0x3BF, 0x301}, {0x3CD, 0x3C5, 0x301}, {0x3CE, 0x3C9, 0x301},
    {0x3D3, 0x3D2, 0x301}, {0x3D4, 0x3D2, 0x308}, {0x400, 0x415, 0x300}, {0x401, 0x415, 0x308}, {0x403, 0x413, 0x301},
    {0x407, 0x406, 0x308}, {0x40C, 0x41A, 0x301}, {0x40D, 0x418, 0x300}, {0x40E, 0x423, 0x306}, {0x419, 0x418, 0x306},
    {0x439, 0x438, 0x306}, {0x450, 0x435, 0x300}, {0x451, 0x435, 0x308}, {0x453, 0x433, 0x301}, {0x457, 0x456, 0x308},
    {0x45C, 0x43A, 0x301}, {0x45D, 0x438, 0x300}, {0x45E, 0x443, 0x306}, {0x476, 0x474, 0x30F}, {0x477, 0x475, 0x30F},
    {0x4C1, 0x416, 0x306}, {0x4C2, 0x436, 0x306}, {0x4D0, 0x410, 0x306}, {0x4D1, 0x430, 0x306}, {0x4D2, 0x410, 0x308},
    {0x4D3, 0x430, 0x308}, {0x4D6, 0x415, 0x306}, {0x4D7, 0x435, 0x306}, {0x4DA, 0x4D8, 0x308}, {0x4DB, 0x4D9, 0x308},
    {0x4DC, 0x416, 0x308}, {0x4DD, 0x436, 0x308}, {0x4DE, 0x417, 0x308}, {0x4DF, 0x437, 0x308}, {0x4E2, 0x418, 0x304},
    {0x4E3, 0x438, 0x304}, {0x4E4, 0x418, 0x308}, {0x4E5, 0x438, 0x308}, {0x4E6, 0x41E, 0x308}, {0x4E7, 0x43E, 0x308},
    {0x4EA, 0x4E8, 0x308}, {0x4EB, 0x4E9, 0x308}, {0x4EC, 0x42D, 0x308}, {0x4ED, 0x44D, 0x308}, {0x4EE, 0x423, 0x304},
    {0x4EF, 0x443, 0x304}, {0x4F0, 0x423, 0x308}, {0x4F1, 0x443, 0x308}, {0x4F2, 0x423, 0x30B}, {0x4F3, 0x443, 0x30B},
    {0x4F4, 0x427, 0x308}, {0x4F5, 0x447, 0x308}, {0x4F8, 0x42B, 0x308}, {0x4F9, 0x44B, 0x308}, {0x622, 0x627, 0x653},
    {0x623, 0x627, 0x654}, {0x624, 0x648, 0x654}, {0x625, 0x627, 0x655}, {0x626, 0x64A, 0x654}, {0x6C0, 0x6D5, 0x654},
    {0x6C2, 0x6C1, 0x654}, {0x6D3, 0x6D2, 0x654}, {0x929, 0x928, 0x93C}, {0x931, 0x930, 0x93C}, {0x934, 0x933, 0x93C},
    {0x958, 0x915, 0x93C}, {0x959, 0x916, 0x93C}, {0x95A, 0x917, 0x93C}, {0x95B, 0x91C, 0x93C}, {0x95C, 0x921, 0x93C},
    {0x95D, 0x922, 0x93C}, {0x95E, 0x92B, 0x93C}, {0x95F, 0x92F, 0x93C}, {0x9CB, 0x9C7, 0x9BE}, {0x9CC, 0x9C7, 0x9D7},
    {0x9DC, 0x9A1, 0x9BC}, {0x9DD, 0x9A2, 0x9BC}, {0x9DF, 0x9AF, 0x9BC}, {0xA33, 0xA32, 0xA3C}, {0xA36, 0xA38, 0xA3C},
    {0xA59, 0xA16, 0xA3C}, {0xA5A, 0xA17, 0xA3C}, {0xA5B, 0xA1C, 0xA3C}, {0xA5E, 0xA2B, 0xA3C}, {0xB48, 0xB47, 0xB56},
    {0xB4B, 0xB47, 0xB3E}, {0xB4C, 0xB47, 0xB57}, {0xB5C, 0xB21, 0xB3C}, {0xB5D, 0xB22, 0xB3C}, {0xB94, 0xB92, 0xBD7},
    {0xBCA, 0xBC6, 0xBBE}, {0xBCB, 0xBC7, 0xBBE}, {0xBCC, 0xBC6, 0xBD7}, {0xC48, 0xC46, 0xC56}, {0xCC0, 0xCBF, 0xCD5},
    {0xCC7, 0xCC6, 0xCD5}, {0xCC8, 0xCC6, 0xCD6}, {0xCCA, 0xCC6, 0xCC2}, {0xCCB, 0xCCA, 0xCD5}, {0xD4A, 0xD46, 0xD3E},
    {0xD4B, 0xD47, 0xD3E}, {0xD4C, 0xD46, 0xD57}, {0xDDA, 0xDD9, 0xDCA}, {0xDDC, 0xDD9, 0xDCF}, {0xDDD, 0xDDC, 0xDCA},
    {0xDDE, 0xDD9, 0xDDF}, {0xF43, 0xF42, 0xFB7}, {0xF4D, 0xF4C, 0xFB7}, {0xF52, 0xF51, 0xFB7}, {0xF57, 0xF56, 0xFB7},
    {0xF5C, 0xF5B, 0xFB7}, {0xF69, 0xF40, 0xFB5}, {0xF73, 0xF71, 0xF72}, {0xF75, 0xF71, 0xF74}, {0xF76, 0xFB2, 0xF80},
    {0xF78, 0xFB3, 0xF80}, {0xF81, 0xF71, 0xF80}, {0xF93, 0xF92, 0xFB7}, {0xF9D, 0xF9C, 0xFB7}, {0xFA2, 0xFA1, 0xFB7},
    {0xFA7, 0xFA6, 0xFB7}, {0xFAC, 0xFAB, 0xFB7}, {0xFB9, 0xF90, 0xFB5}, {0x1026, 0x1025, 0x102E}, {0x1B06, 0x1B05, 0x1B35},
    {0x1B08, 0x1B07, 0x1B35}, {0x1B0A, 0x1B09, 0x1B35}, {0x1B0C, 0x1B0B, 0x1B35}, {0x1B0E, 0x1B0D, 0x1B35}, {0x1B12, 0x1B11, 0x1B35},
    {0x1B3B, 0x1B3A, 0x1B35}, {0x1B3D, 0x1B3C, 0x1B35}, {0x1B40, 0x1B3E, 0x1B35}, {0x1B41, 0x1B3F, 0x1B35}, {0x1B43, 0x1B42, 0x1B35},
    {0x1E00, 0x41, 0x325}, {0x1E01, 0x61, 0x325}, {0x1E02, 0x42, 0x307}, {0x1E03, 0x62, 0x307}, {0x1E04, 0x42, 0x323},
    {0x1E05, 0x62, 0x323}, {0x1E06, 0x42, 0x331}, {0x1E07, 0x62, 0x331}, {0x1E08, 0xC7, 0x301}, {0x1E09, 0xE7, 0x301},
    {0x1E0A, 0x44, 0x307}, {0x1E0B, 0x64, 0x307}, {0x1E0C, 0x44, 0x323}, {0x1E0D, 0x64, 0x323}, {0x1E0E, 0x44, 0x331},
    {0x1E0F, 0x64, 0x331}, {0x1E10, 0x44, 0x327}, {0x1E11, 0x64, 0x327}, {0x1E12, 0x44, 0x32D}, {0x1E13, 0x64, 0x32D},
    {0x1E14, 0x112, 0x300}, {0x1E15, 0x113, 0x300}, {0x1E16, 0x112, 0x301}, {0x1E17, 0x113, 0x301}, {0x1E18, 0x45, 0x32D},
    {0x1E19, 0x65, 0x32D}, {0x1E1A, 0x45, 0x330}, {0x1E1B, 0x65, 0x330}, {0x1E1C, 0x228, 0x306}, {0x1E1D, 0x229, 0x306},
    {0x1E1E, 0x46, 0x307}, {0x1E1F, 0x66, 0x307}, {0x1E20, 0x47, 0x304}, {0x1E21, 0x67, 0x304}, {0x1E22, 0x48, 0x307},
    {0x1E23, 0x68, 0x307}, {0x1E24, 0x48, 0x323}, {0x1E25, 0x68, 0x323}, {0x1E26, 0x48, 0x308}, {0x1E27, 0x68, 0x308},
    {0x1E28, 0x48, 0x327}, {0x1E29, 0x68, 0x327}, {0x1E2A, 0x48, 0x32E}, {0x1E2B, 0x68, 0x32E}, {0x1E2C, 0x49, 0x330},
    {0x1E2D, 0x69, 0x330}, {0x1E2E, 0xCF, 0x301}, {0x1E2F, 0xEF, 0x301}, {0x1E30, 0x4B, 0x301}, {0x1E31, 0x6B, 0x301},
    {0x1E32, 0x4B, 0x323}, {0x1E33, 0x6B, 0x323}, {0x1E34, 0x4B, 0x331}, {0x1E35, 0x6B, 0x331}, {0x1E36, 0x4C, 0x323},
    {0x1E37, 0x6C, 0x323}, {0x1E38, 0x1E36, 0x304}, {0x1E39, 0x1E37, 0x304}, {0x1E3A, 0x4C, 0x331}, {0x1E3B, 0x6C, 0x331},
    {0x1E3C, 0x4C, 0x32D}, {0x1E3D, 0x6C, 0x32D}, {0x1E3E, 0x4D, 0x301}, {0x1E3F, 0x6D, 0x301}, {0x1E40, 0x4D, 0x307},
    {0x1E41, 0x6D, 0x307}, {0x1E42, 0x4D, 0x323}, {0x1E43, 0x6D, 0x323}, {0x1E44, 0x4E, 0x307}, {0x1E45, 0x6E, 0x307},
    {0x1E46, 0x4E, 0x323}, {0x1E47, 0x6E, 0x323}, {0x1E48, 0x4E, 0x331}, {0x1E49, 0x6E, 0x331}, {0x1E4A, 0x4E, 0x32D},
    {0x1E4B, 0x6E, 0x32D}, {0x1E4C, 0xD5, 0x301}, {0x1E4D, 0xF5, 0x301}, {0x1E4E, 0xD5, 0x308}, {0x1E4F, 0xF5, 0x308},
    {0x1E50, 0x14C, 0x300}, {0x1E51, 0x14D, 0x300}, {0x1E52, 0x14C, 0x301}, {0x1E53, 0x14D, 0x301}, {0x1E54, 0x50, 0x301},
    {0x1E55, 0x70, 0x301}, {0x1E56, 0x50, 0x307}, {0x1E57, 0x70, 0x307}, {0x1E58, 0x52, 0x307}, {0x1E59, 0x72, 0x307},
    {0x1E5A, 0x52, 0x323}, {0x1E5B, 0x72, 0x323}, {0x1E5C, 0x1E5A, 0x304}, {0x1E5D, 0x1E5B, 0x304}, {0x1E5E, 0x52, 0x331},
    {0x1E5F, 0x72, 0x331}, {0x1E60, 0x53, 0x307}, {0x1E61, 0x73, 0x307}, {0x1E62, 0x53, 0x323}, {0x1E63, 0x73, 0x323},
    {0x1E64, 0x15A, 0x307}, {0x1E65, 0x15B, 0x307}, {0x1E66, 0x160, 0x307}, {0x1E67, 0x161, 0x307}, {0x1E68, 0x1E62, 0x307},
    {0x1E69, 0x1E63, 0x307}, {0x1E6A, 0x54, 0x307}, {0x1E6B, 0x74, 0x307}, {0x1E6C, 0x54, 0x323}, {0x1E6D, 0x74, 0x323},
    {0x1E6E, 0x54, 0x331}, {0x1E6F, 0x74, 0x331}, {0x1E70, 0x54, 0x32D}, {0x1E71, 0x74, 0x32D}, {0x1E72, 0x55, 0x324},
    {0x1E73, 0x75, 0x324}, {0x1E74, 0x55, 0x330}, {0x1E75, 0x75, 0x330}, {0x1E76, 0x55, 0x32D}, {0x1E77, 0x75, 0x32D},
    {0x1E78, 0x168, 0x301}, {0x1E79, 0x169, 0x301}, {0x1E7A, 0x16A, 0x308}, {0x1E7B, 0x16B, 0x308}, {0x1E7C, 0x56, 0x303},
    {0x1E7D, 0x76, 0x303}, {0x1E7E, 0x56, 0x323}, {0x1E7F, 0x76, 0x323}, {0x1E80, 0x57, 0x300}, {0x1E81, 0x77, 0x300},
    {0x1E82, 0x57, 0x301}, {0x1E83, 0x77, 0x301}, {0x1E84, 0x57, 0x308}, {0x1E85, 0x77, 0x308}, {0x1E86, 0x57, 0x307},
    {0x1E87, 0x77, 0x307}, {0x1E88, 0x57, 0x323}, {0x1E89, 0x77, 0x323}, {0x1E8A, 0x58, 0x307}, {0x1E8B, 0x78, 0x307},
    {0x1E8C, 0x58, 0x308}, {0x1E8D, 0x78, 0x308}, {0x1E8E, 0x59, 0x307}, {0x1E8F, 0x79, 0x307}, {0x1E90, 0x5A, 0x302},
    {0x1E91, 0x7A, 0x302}, {0x1E92, 0x5A, 0x323}, {0x1E93, 0x7A, 0x323}, {0x1E94, 0x5A, 0x331}, {0x1E95, 0x7A, 0x331},
    {0x1E96, 0x68, 0x331}, {0x1E97, 0x74, 0x308}, {0x1E98, 0x77, 0x30A}, {0x1E99, 0x79, 0x30A}, {0x1E9B, 0x17F, 0x307},
    {0x1EA0, 0x41, 0x323}, {0x1EA1, 0x61, 0x323}, {0x1EA2, 0x41, 0x309}, {0x1EA3, 0x61, 0x309}, {0x1EA4, 0xC2, 0x301},
    {0x1EA5, 0xE2, 0x301}, {0x1EA6, 0xC2, 0x300}, {0x1EA7, 0xE2, 0x300}, {0x1EA8, 0xC2, 0x309}, {0x1EA9, 0xE2, 0x309},
    {0x1EAA, 0xC2, 0x303}, {0x1EAB, 0xE2, 0x303}, {0x1EAC, 0x1EA0, 0x302}, {0x1EAD, 0x1EA1, 0x302}, {0x1EAE, 0x102, 0x301},
    {0x1EAF, 0x103, 0x301}, {0x1EB0, 0x102, 0x300}, {0x1EB1, 0x103, 0x300}, {0x1EB2, 0x102, 0x309}, {0x1EB3, 0x103, 0x309},
    {0x1EB4, 0x102, 0x303}, {0x1EB5, 0x103, 0x303}, {0x1EB6, 0x1EA0, 0x306}, {0x1EB7, 0x1EA1, 0x306}, {0x1EB8, 0x45, 0x323},
    {0x1EB9, 0x65, 0x323}, {0x1EBA, 0x45, 0x309}, {0x1EBB, 0x65, 0x309}, {0x1EBC, 0x45, 0x303}, {0x1EBD, 0x65, 0x303},
    {0x1EBE, 0xCA, 0x301}, {0x1EBF, 0xEA, 0x301}, {0x1EC0, 0xCA, 0x300}, {0x1EC1, 0xEA, 0x300}, {0x1EC2, 0xCA, 0x309},
    {0x1EC3, 0xEA, 0x309}, {0x1EC4, 0xCA, 0x303}, {0x1EC5, 0xEA, 0x303}, {0x1EC6, 0x1EB8, 0x302}, {0x1EC7, 0x1EB9, 0x302},
    {0x1EC8, 0x49, 0x309}, {0x1EC9, 0x69, 0x309}, {0x1ECA, 0x49, 0x323}, {0x1ECB, 0x69, 0x323}, {0x1ECC, 0x4F, 0x323},
    {0x1ECD, 0x6F, 0x323}, {0x1ECE, 0x4F, 0x309}, {0x1ECF, 0x6F, 0x309}, {0x1ED0, 0xD4, 0x301}, {0x1ED1, 0xF4, 0x301},
    {0x1ED2, 0xD4, 0x300}, {0x1ED3, 0xF4, 0x300}, {0x1ED4, 0xD4, 0x309}, {0x1ED5, 0xF4, 0x309}, {0x1ED6, 0xD4, 0x303},
    {0x1ED7, 0xF4, 0x303}, {0x1ED8, 0x1ECC, 0x302}, {0x1ED9, 0x1ECD, 0x302}, {0x1EDA, 0x1A0, 0x301}, {0x1EDB, 0x1A1, 0x301},
    {0x1EDC, 0x1A0, 0x300}, {0x1EDD, 0x1A1, 0x300}, {0x1EDE, 0x1A0, 0x309}, {0x1EDF, 0x1A1, 0x309}, {0x1EE0, 0x1A0, 0x303},
    {0x1EE1, 0x1A1, 0x303}, {0x1EE2, 0x1A0, 0x323}, {0x1EE3, 0x1A1, 0x323}, {0x1EE4, 0x55, 0x323}, {0x1EE5, 0x75, 0x323},
    {0x1EE6, 0x55, 0x309}, {0x1EE7, 0x75, 0x309}, {0x1EE8, 0x1AF, 0x301}, {0x1EE9, 0x1B0, 0x301}, {0x1EEA, 0x1AF, 0x300},
    {0x1EEB, 0x1B0, 0x300}, {0x1EEC, 0x1AF, 0x309}, {0x1EED, 0x1B0, 0x309}, {0x1EEE, 0x1AF, 0x303}, {0x1EEF, 0x1B0, 0x303},
    {0x1EF0, 0x1AF, 0x323}, {0x1EF1, 0x1B0, 0x323}, {0x1EF2, 0x59, 0x300}, {0x1EF3, 0x79, 0x300}, {0x1EF4, 0x59, 0x323},
    {0x1EF5, 0x79, 0x323}, {0x1EF6, 0x59, 0x309}, {0x1EF7, 0x79, 0x309}, {0x1EF8, 0x59, 0x303}, {0x1EF9, 0x79, 0x303},
    {0x1F00, 0x3B1, 0x313}, {0x1F01, 0x3B1, 0x314}, {0x1F02, 0x1F00, 0x300}, {0x1F03, 0x1F01, 0x300}, {0x1F04, 0x1F00, 0x301},
    {0x1F05, 0x1F01, 0x301}, {0x1F06, 0x1F00, 0x342}, {0x1F07, 0x1F01, 0x342}, {0x1F08, 0x391, 0x313}, {0x1F09, 0x391, 0x314},
    {0x1F0A, 0x1F08, 0x300}, {0x1F0B, 0x1F09, 0x300}, {0x1F0C, 0x1F08, 0x301}, {0x1F0D, 0x1F09, 0x301}, {0x1F0E, 0x1F08, 0x342},
    {0x1F0F, 0x1F09, 0x342}, {0x1F10, 0x3B5, 0x313}, {0x1F11, 0x3B5, 0x314}, {0x1F12, 0x1F10, 0x300}, {0x1F13, 0x1F11, 0x300},
    {0x1F14, 0x1F10, 0x301}, {0x1F15, 0x1F11, 0x301}, {0x1F18, 0x395, 0x313}, {0x1F19, 0x395, 0x314}, {0x1F1A, 0x1F18, 0x300},
    {0x1F1B, 0x1F19, 0x300}, {0x1F1C, 0x1F18, 0x301}, {0x1F1D, 0x1F19, 0x301}, {0x1F20, 0x3B7, 0x313}, {0x1F21, 0x3B7, 0x314},
    {0x1F22, 0x1F20, 0x300}, {0x1F23, 0x1F21, 0x300}, {0x1F24, 0x1F20, 0x301}, {0x1F25, 0x1F21, 0x301}, {0x1F26, 0x1F20, 0x342},
    {0x1F27, 0x1F21, 0x342}, {0x1F28, 0x397, 0x313}, {0x1F29, 0x397, 0x314}, {0x1F2A, 0x1F28, 0x300}, {0x1F2B, 0x1F29, 0x300},
    {0x1F2C, 0x1F28, 0x301}, {0x1F2D, 0x1F29, 0x301}, {0x1F2E, 0x1F28, 0x342}, {0x1F2F, 0x1F29, 0x342}, {0x1F30, 0x3B9, 0x313},
    {0x1F31, 0x3B9, 0x314}, {0x1F32, 0x1F30, 0x300}, {0x1F33, 0x1F31, 0x300}, {0x1F34, 0x1F30, 0x301}, {0x1F35, 0x1F31, 0x301},
    {0x1F36, 0x1F30, 0x342}, {0x1F37, 0x1F31, 0x342}, {0x1F38, 0x399, 0x313}, {0x1F39, 0x399, 0x314}, {0x1F3A, 0x1F38, 0x300},
    {0x1F3B, 0x1F39, 0x300}, {0x1F3C, 0x1F38, 0x301}, {0x1F3D, 0x1F39, 0x301}, {0x1F3E, 0x1F38, 0x342}, {0x1F3F, 0x1F39, 0x342},
    {0x1F40, 0x3BF, 0x313}, {0x1F41, 0x3BF, 0x314}, {0x1F42, 0x1F40, 0x300}, {0x1F43, 0x1F41, 0x300}, {0x1F44, 0x1F40, 0x301},
    {0x1F45, 0x1F41, 0x301}, {0x1F48, 0x39F, 0x313}, {0x1F49, 0x39F, 0x314}, {0x1F4A, 0x1F48, 0x300}, {0x1F4B, 0x1F49, 0x300},
    {0x1F4C, 0x1F48, 0x301}, {0x1F4D, 0x1F49, 0x301}, {0x1F50, 0x3C5, 0x313}, {0x1F51, 0x3C5, 0x314}, {0x1F52, 0x1F50, 0x300},
    {0x1F53, 0x1F51, 0x300}, {0x1F54, 0x1F50, 0x301}, {0x1F55, 0x1F51, 0x301}, {0x1F56, 0x1F50, 0x342}, {0x1F57, 0x1F51, 0x342},
    {0x1F59, 0x3A5, 0x314}, {0x1F5B, 0x1F59, 0x300}, {0x1F5D, 0x1F59, 0x301}, {0x1F5F, 0x1F59, 0x342}, {0x1F60, 0x3C9, 0x313},
    {0x1F61, 0x3C9, 0x314}, {0x1F62, 0x1F60, 0x300}, {0x1F63, 0x1F61, 0x300}, {0x1F64, 0x1F60, 0x301}, {0x1F65, 0x1F61, 0x301},
    {0x1F66, 0x1F60, 0x342}, {0x1F67, 0x1F61, 0x342}, {0x1F68, 0x3A9, 0x313}, {0x1F69, 0x3A9, 0x314}, {0x1F6A, 0x1F68, 0x300},
    {0x1F6B, 0x1F69, 0x300}, {0x1F6C, 0x1F68, 0x301}, {0x1F6D, 0x1F69, 0x301}, {0x1F6E, 0x1F68, 0x342}, {0x1F6F, 0x1F69, 0x342},
    {0x1F70, 0x3B1, 0x300}, {0x1F71, 0x3AC, 0x0}, {0x1F72, 0x3B5, 0x300}, {0x1F73, 0x3AD, 0x0}, {0x1F74, 0x3B7, 0x300},
    {0x1F75, 0x3AE, 0x0}, {0x1F76, 0x3B9, 0x300}, {0x1F77, 0x3AF, 0x0}, {0x1F78, 0x3BF, 0x300}, {0x1F79, 0x3CC, 0x0},
    {0x1F7A, 0x3C5, 0x300}, {0x1F7B, 0x3CD, 0x0}, {0x1F7C, 0x3C9, 0x300}, {0x1F7D, 0x3CE, 0x0}, {0x1F80, 0x1F00, 0x345},
    {0x1F81, 0x1F01, 0x345}, {0x1F82, 0x1F02, 0x345}, {0x1F83, 0x1F03, 0x345}, {0x1F84, 0x1F04, 0x345}, {0x1F85, 0x1F05, 0x345},
    {0x1F86, 0x1F06, 0x345}, {0x1F87, 0x1F07, 0x345}, {0x1F88, 0x1F08, 0x345}, {0x1F89, 0x1F09, 0x345}, {0x1F8A, 0x1F0A, 0x345},
    {0x1F8B, 0x1F0B, 0x345}, {0x1F8C, 0x1F0C, 0x345}, {0x1F8D, 0x1F0D, 0x345}, {0x1F8E, 0x1F0E, 0x345}, {0x1F8F, 0x1F0F, 0x345},
    {0x1F90, 0x1F20, 0x345}, {0x1F91, 0x1F21, 0x345}, {0x1F92, 0x1F22, 0x345}, {0x1F93, 0x1F23, 0x345}, {0x1F94, 0x1F24, 0x345},
    {0x1F95, 0x1F25, 0x345}, {0x1F96, 0x1F26, 0x345}, {0x1F97, 0x1F27, 0x345}, {0x1F98, 0x1F28, 0x345}, {0x1F99, 0x1F29, 0x345},
    {0x1F9A, 0x1F2A, 0x345}, {0x1F9B, 0x1F2B, 0x345}, {0x1F9C, 0x1F2C, 0x345}, {0x1F9D, 0x1F2D, 0x345}, {0x1F9E, 0x1F2E, 0x345},
    {0x1F9F, 0x1F2F, 0x345}, {0x1FA0, 0x1F60, 0x345}, {0x1FA1, 0x1F61, 0x345}, {0x1FA2, 0x1F62, 0x345}, {0x1FA3, 0x1F63, 0x345},
    {0x1FA4, 0x1F64, 0x345}, {0x1FA5, 0x1F65, 0x345}, {0x1FA6, 0x1F66, 0x345}, {0x1FA7, 0x1F67, 0x345}, {0x1FA8, 0x1F68, 0x345},
    {0x1FA9, 0x1F69, 0x345}, {0x1FAA, 0x1F6A, 0x345}, {0x1FAB, 0x1F6B, 0x345}, {0x1FAC, 0x1F6C, 0x345}, {0x1FAD, 0x1F6D, 0x345},
    {0x1FAE, 0x1F6E, 0x345}, {0x1FAF, 0x1F6F, 0x345}, {0x1FB0, 0x3B1, 0x306}, {0x1FB1, 0x3B1, 0x304}, {0x1FB2, 0x1F70, 0x345},
    {0x1FB3, 0x3B1, 0x345}, {0x1FB4, 0x3AC, 0x345}, {0x1FB6, 0x3B1, 0x342}, {0x1FB7, 0x1FB6, 0x345}, {0x1FB8, 0x391, 0x306},
    {0x1FB9, 0x391, 0x304}, {0x1FBA, 0x391, 0x300}, {0x1FBB, 0x386, 0x0}, {0x1FBC, 0x391, 0x345}, {0x1FBE, 0x3B9, 0x0},
    {0x1FC1, 0xA8, 0x342}, {0x1FC2, 0x1F74, 0x345}, {0x1FC3, 0x3B7, 0x345}, {0x1FC4, 0x3AE, 0x345}, {0x1FC6, 0x3B7, 0x342},
    {0x1FC7, 0x1FC6, 0x345}, {0x1FC8, 0x395, 0x300}, {0x1FC9, 0x388, 0x0}, {0x1FCA, 0x397, 0x300}, {0x1FCB, 0x389, 0x0},
    {0x1FCC, 0x397, 0x345}, {0x1FCD, 0x1FBF, 0x300}, {0x1FCE, 0x1FBF, 0x301}, {0x1FCF, 0x1FBF, 0x342}, {0x1FD0, 0x3B9, 0x306},
    {0x1FD1, 0x3B9, 0x304}, {0x1FD2, 0x3CA, 0x300}, {0x1FD3, 0x390, 0x0}, {0x1FD6, 0x3B9, 0x342}, {0x1FD7, 0x3CA, 0x342},
    {0x1FD8, 0x399, 0x306}, {0x1FD9, 0x399, 0x304}, {0x1FDA, 0x399, 0x300}, {0x1FDB, 0x38A, 0x0}, {0x1FDD, 0x1FFE, 0x300},
    {0x1FDE, 0x1FFE, 0x301}, {0x1FDF, 0x1FFE, 0x342}, {0x1FE0, 0x3C5, 0x306}, {0x1FE1, 0x3C5, 0x304}, {0x1FE2, 0x3CB, 0x300},
    {0x1FE3, 0x3B0, 0x0}, {0x1FE4, 0x3C1, 0x313}, {0x1FE5, 0x3C1, 0x314}, {0x1FE6, 0x3C5, 0x342}, {0x1FE7, 0x3CB, 0x342},
    {0x1FE8, 0x3A5, 0x306}, {0x1FE9, 0x3A5, 0x304}, {0x1FEA, 0x3A5, 0x300}, {0x1FEB, 0x38E, 0x0}, {0x1FEC, 0x3A1, 0x314},
    {0x1FED, 0xA8, 0x300}, {0x1FEE, 0x385, 0x0}, {0x1FEF, 0x60, 0x0}, {0x1FF2, 0x1F7C, 0x345}, {0x1FF3, 0x3C9, 0x345},
    {0x1FF4, 0x3CE, 0x345}, {0x1FF6, 0x3C9, 0x342}, {0x1FF7, 0x1FF6, 0x345}, {0x1FF8, 0x39F, 0x300}, {0x1FF9, 0x38C, 0x0},
    {0x1FFA, 0x3A9, 0x300}, {0x1FFB, 0x38F, 0x0}, {0x1FFC, 0x3A9, 0x345}, {0x1FFD, 0xB4, 0x0}, {0x2000, 0x2002, 0x0},
    {0x2001, 0x2003, 0x0}, {0x2126, 0x3A9, 0x0}, {0x212A, 0x4B, 0x0}, {0x212B, 0xC5, 0x0}, {0x219A, 0x2190, 0x338},
    {0x219B, 0x2192, 0x338}, {0x21AE, 0x2194, 0x338}, {0x21CD, 0x21D0, 0x338}, {0x21CE, 0x21D4, 0x338}, {0x21CF, 0x21D2, 0x338},
    {0x2204, 0x2203, 0x338}, {0x2209, 0x2208, 0x338}, {0x220C, 0x220B, 0x338}, {0x2224, 0x2223, 0x338}, {0x2226, 0x2225, 0x338},
    {0x2241, 0x223C, 0x338}, {0x2244, 0x2243, 0x338}, {0x2247, 0x2245, 0x338}, {0x2249, 0x2248, 0x338}, {0x2260, 0x3D, 0x338},
    {0x2262, 0x2261, 0x338}, {0x226D, 0x224D, 0x338}, {0x226E, 0x3C, 0x338}, {0x226F, 0x3E, 0x338}, {0x2270, 0x2264, 0x338},
    {0x2271, 0x2265, 0x338}, {0x2274, 0x2272, 0x338}, {0x2275, 0x2273, 0x338}, {0x2278, 0x2276, 0x338}, {0x2279, 0x2277, 0x338},
    {0x2280, 0x227A, 0x338}, {0x2281, 0x227B, 0x338}, {0x2284, 0x2282, 0x338}, {0x2285, 0x2283, 0x338}, {0x2288, 0x2286, 0x338},
    {0x2289, 0x2287, 0x338}, {0x22AC, 0x22A2, 0x338}, {0x22AD, 0x22A8, 0x338}, {0x22AE, 0x22A9, 0x338}, {0x22AF, 0x22AB, 0x338},
    {0x22E0, 0x227C, 0x338}, {0x22E1, 0x227D, 0x338}, {0x22E2, 0x2291, 0x338}, {0x22E3, 0x2292, 0x338}, {0x22EA, 0x22B2, 0x338},
    {0x22EB, 0x22B3, 0x338}, {0x22EC, 0x22B4, 0x338}, {0x22ED, 0x22B5, 0x338}, {0x2329, 0x3008, 0x0}, {0x232A, 0x3009, 0x0},
    {0x2ADC, 0x2ADD, 0x338}, {0x304C, 0x304B, 0x3099}, {0x304E, 0x304D, 0x3099}, {0x3050, 0x304F, 0x3099}, {0x3052, 0x3051, 0x3099},
    {0x3054, 0x3053, 0x3099}, {0x3056, 0x3055, 0x3099}, {0x3058, 0x3057, 0x3099}, {0x305A, 0x3059, 0x3099}, {0x305C, 0x305B, 0x3099},
    {0x305E, 0x305D, 0x3099}, {0x3060, 0x305F, 0x3099}, {0x3062, 0x3061, 0x3099}, {0x3065, 0x3064, 0x3099}, {0x3067, 0x3066, 0x3099},
    {0x3069, 0x3068, 0x3099}, {0x3070, 0x306F, 0x3099}, {0x3071, 0x306F, 0x309A}, {0x3073, 0x3072, 0x3099}, {0x3074, 0x3072, 0x309A},
    {0x3076, 0x3075, 0x3099}, {0x3077, 0x3075, 0x309A}, {0x3079, 0x3078, 0x3099}, {0x307A, 0x3078, 0x309A}, {0x307C, 0x307B, 0x3099},
    {0x307D, 0x307B, 0x309A}, {0x3094, 0x3046, 0x3099}, {0x309E, 0x309D, 0x3099}, {0x30AC, 0x30AB, 0x3099}, {0x30AE, 0x30AD, 0x3099},
    {0x30B0, 0x30AF, 0x3099}, {0x30B2, 0x30B1, 0x3099}, {0x30B4, 0x30B3, 0x3099}, {0x30B6, 0x30B5, 0x3099}, {0x30B8, 0x30B7, 0x3099},
    {0x30BA, 0x30B9, 0x3099}, {0x30BC, 0x30BB, 0x3099}, {0x30BE, 0x30BD, 0x3099}, {0x30C0, 0x30BF, 0x3099}, {0x30C2, 0x30C1, 0x3099},
    {0x30C5, 0x30C4, 0x3099}, {0x30C7, 0x30C6, 0x3099}, {0x30C9, 0x30C8, 0x3099}, {0x30D0, 0x30CF, 0x3099}, {0x30D1, 0x30CF, 0x309A},
    {0x30D3, 0x30D2, 0x3099}, {0x30D4, 0x30D2, 0x309A}, {0x30D6, 0x30D5, 0x3099}, {0x30D7, 0x30D5, 0x309A}, {0x30D9, 0x30D8, 0x3099},
    {0x30DA, 0x30D8, 0x309A}, {0x30DC, 0x30DB, 0x3099}, {0x30DD, 0x30DB, 0x309A}, {0x30F4, 0x30A6, 0x3099}, {0x30F7, 0x30EF, 0x3099},
    {0x30F8, 0x30F0, 0x3099}, {0x30F9, 0x30F1, 0x3099}, {0x30FA, 0x30F2, 0x3099}, {0x30FE, 0x30FD, 0x3099}, {0xF900, 0x8C48, 0x0},
    {0xF901, 0x66F4, 0x0}, {0xF902, 0x8ECA, 0x0}, {0xF903, 0x8CC8, 0x0}, {0xF904, 0x6ED1, 0x0}, {0xF905, 0x4E32, 0x0},
    {0xF906, 0x53E5, 0x0}, {0xF907, 0x9F9C, 0x0}, {0xF908, 0x9F9C, 0x0}, {0xF909, 0x5951, 0x0}, {0xF90A, 0x91D1, 0x0},
    {0xF90B, 0x5587, 0x0}, {0xF90C, 0x5948, 0x0}, {0xF90D, 0x61F6, 0x0}, {0xF90E, 0x7669, 0x0}, {0xF90F, 0x7F85, 0x0},
    {0xF910, 0x863F, 0x0}, {0xF911, 0x87BA, 0x0}, {0xF912, 0x88F8, 0x0}, {0xF913, 0x908F, 0x0}, {0xF914, 0x6A02, 0x0},
    {0xF915, 0x6D1B, 0x0}, {0xF916, 0x70D9, 0x0}, {0xF917, 0x73DE, 0x0}, {0xF918, 0x843D, 0x0}, {0xF919, 0x916A, 0x0},
    {0xF91A, 0x99F1, 0x0}, {0xF91B, 0x4E82, 0x0}, {0xF91C, 0x5375, 0x0}, {0xF91D, 0x6B04, 0x0}, {0xF91E, 0x721B, 0x0},
    {0xF91F, 0x862D, 0x0}, {0xF920, 0x9E1E, 0x0}, {0xF921, 0x5D50, 0x0}, {0xF922, 0x6FEB, 0x0}, {0xF923, 0x85CD, 0x0},
    {0xF924, 0x8964, 0x0}, {0xF925, 0x62C9, 0x0}, {0xF926, 0x81D8, 0x0}, {0xF927, 0x881F, 0x0}, {0xF928, 0x5ECA, 0x0},
    {0xF929, 0x6717, 0x0}, {0xF92A, 0x6D6A, 0x0}, {0xF92B, 0x72FC, 0x0}, {0xF92C, 0x90CE, 0x0}, {0xF92D, 0x4F86, 0x0},
    {0xF92E, 0x51B7, 0x0}, {0xF92F, 0x52DE, 0x0}, {0xF930, 0x64C4, 0x0}, {0xF931, 0x6AD3, 0x0}, {0xF932, 0x7210, 0x0},
    {0xF933, 0x76E7, 0x0}, {0xF934, 0x8001, 0x0}, {0xF935, 0x8606, 0x0}, {0xF936, 0x865C, 0x0}, {0xF937, 0x8DEF, 0x0},
    {0xF938, 0x9732, 0x0}, {0xF939, 0x9B6F, 0x0}, {0xF93A, 0x9DFA, 0x0}, {0xF93B, 0x788C, 0x0}, {0xF93C, 0x797F, 0x0},
    {0xF93D, 0x7DA0, 0x0}, {0xF93E, 0x83C9, 0x0}, {0xF93F, 0x9304, 0x0}, {0xF940, 0x9E7F, 0x0}, {0xF941, 0x8AD6, 0x0},
    {0xF942, 0x58DF, 0x0}, {0xF943, 0x5F04, 0x0}, {0xF944, 0x7C60, 0x0}, {0xF945, 0x807E, 0x0}, {0xF946, 0x7262, 0x0},
    {0xF947, 0x78CA, 0x0}, {0xF948, 0x8CC2, 0x0}, {0xF949, 0x96F7, 0x0}, {0xF94A, 0x58D8, 0x0}, {0xF94B, 0x5C62, 0x0},
    {0xF94C, 0x6A13, 0x0}, {0xF94D, 0x6DDA, 0x0}, {0xF94E, 0x6F0F, 0x0}, {0xF94F, 0x7D2F, 0x0}, {0xF950, 0x7E37, 0x0},
    {0xF951, 0x964B, 0x0}, {0xF952, 0x52D2, 0x0}, {0xF953, 0x808B, 0x0}, {0xF954, 0x51DC, 0x0}, {0xF955, 0x51CC, 0x0},
    {0xF956, 0x7A1C, 0x0}, {0xF957, 0x7DBE, 0x0}, {0xF958, 0x83F1, 0x0}, {0xF959, 0x9675, 0x0}, {0xF95A, 0x8B80, 0x0},
    {0xF95B, 0x62CF, 0x0}, {0xF95C, 0x6A02, 0x0}, {0xF95D, 0x8AFE, 0x0}, {0xF95E, 0x4E39, 0x0}, {0xF95F, 0x5BE7, 0x0},
    {0xF960, 0x6012, 0x0}, {0xF961, 0x7387, 0x0}, {0xF962, 0x7570, 0x0}, {0xF963, 0x5317, 0x0}, {0xF964, 0x78FB, 0x0},
    {0xF965, 0x4FBF, 0x0}, {0xF966, 0x5FA9, 0x0}, {0xF967, 0x4E0D, 0x0}, {0xF968, 0x6CCC, 0x0}, {0xF969, 0x6578, 0x0},
    {0xF96A, 0x7D22, 0x0}, {0xF96B, 0x53C3, 0x0}, {0xF96C, 0x585E, 0x0}, {0xF96D, 0x7701, 0x0}, {0xF96E, 0x8449, 0x0},
    {0xF96F, 0x8AAA, 0x0}, {0xF970, 0x6BBA, 0x0}, {0xF971, 0x8FB0, 0x0}, {0xF972, 0x6C88, 0x0}, {0xF973, 0x62FE, 0x0},
    {0xF974, 0x82E5, 0x0}, {0xF975, 0x63A0, 0x0}, {0xF976, 0x7565, 0x0}, {0xF977, 0x4EAE, 0x0}, {0xF978, 0x5169, 0x0},
    {0xF979, 0x51C9, 0x0}, {0xF97A, 0x6881, 0x0}, {0xF97B, 0x7CE7, 0x0}, {0xF97C, 0x826F, 0x0}, {0xF97D, 0x8AD2, 0x0},
    {0xF97E, 0x91CF, 0x0}, {0xF97F, 0x52F5, 0x0}, {0xF980, 0x5442, 0x0}, {0xF981, 0x5973, 0x0}, {0xF982, 0x5EEC, 0x0},
    {0xF983, 0x65C5, 0x0}, {0xF984, 0x6FFE, 0x0}, {0xF985, 0x792A, 0x0}, {0xF986, 0x95AD, 0x0}, {0xF987, 0x9A6A, 0x0},
    {0xF988, 0x9E97, 0x0}, {0xF989, 0x9ECE, 0x0}, {0xF98A, 0x529B, 0x0}, {0xF98B, 0x66C6, 0x0}, {0xF98C, 0x6B77, 0x0},
    {0xF98D, 0x8F62, 0x0}, {0xF98E, 0x5E74, 0x0}, {0xF98F, 0x6190, 0x0}, {0xF990, 0x6200, 0x0}, {0xF991, 0x649A, 0x0},
    {0xF992, 0x6F23, 0x0}, {0xF993, 0x7149, 0x0}, {0xF994, 0x7489, 0x0}, {0xF995, 0x79CA, 0x0}, {0xF996, 0x7DF4, 0x0},
    {0xF997, 0x806F, 0x0}, {0xF998, 0x8F26, 0x0}, {0xF999, 0x84EE, 0x0}, {0xF99A, 0x9023, 0x0}, {0xF99B, 0x934A, 0x0},
    {0xF99C, 0x5217, 0x0}, {0xF99D, 0x52A3, 0x0}, {0xF99E, 0x54BD, 0x0}, {0xF99F, 0x70C8, 0x0}, {0xF9A0, 0x88C2, 0x0},
    {0xF9A1, 0x8AAA, 0x0}, {0xF9A2, 0x5EC9, 0x0}, {0xF9A3, 0x5FF5, 0x0}, {0xF9A4, 0x637B, 0x0}, {0xF9A5, 0x6BAE, 0x0},
    {0xF9A6, 0x7C3E, 0x0}, {0xF9A7, 0x7375, 0x0}, {0xF9A8, 0x4EE4, 0x0}, {0xF9A9, 0x56F9, 0x0}, {0xF9AA, 0x5BE7, 0x0},
    {0xF9AB, 0x5DBA, 0x0}, {0xF9AC, 0x601C, 0x0}, {0xF9AD, 0x73B2, 0x0}, {0xF9AE, 0x7469, 0x0}, {0xF9AF, 0x7F9A, 0x0},
    {0xF9B0, 0x8046, 0x0}, {0xF9B1, 0x9234, 0x0}, {0xF9B2, 0x96F6, 0x0}, {0xF9B3, 0x9748, 0x0}, {0xF9B4, 0x9818, 0x0},
    {0xF9B5, 0x4F8B, 0x0}, {0xF9B6, 0x79AE, 0x0}, {0xF9B7, 0x91B4, 0x0}, {0xF9B8, 0x96B8, 0x0}, {0xF9B9, 0x60E1, 0x0},
    {0xF9BA, 0x4E86, 0x0}, {0xF9BB, 0x50DA, 0x0}, {0xF9BC, 0x5BEE, 0x0}, {0xF9BD, 0x5C3F, 0x0}, {0xF9BE, 0x6599, 0x0},
    {0xF9BF, 0x6A02, 0x0}, {0xF9C0, 0x71CE, 0x0}, {0xF9C1, 0x7642, 0x0}, {0xF9C2, 0x84FC, 0x0}, {0xF9C3, 0x907C, 0x0},
    {0xF9C4, 0x9F8D, 0x0}, {0xF9C5, 0x6688, 0x0}, {0xF9C6, 0x962E, 0x0}, {0xF9C7, 0x5289, 0x0}, {0xF9C8, 0x677B, 0x0},
    {0xF9C9, 0x67F3, 0x0}, {0xF9CA, 0x6D41, 0x0}, {0xF9CB, 0x6E9C, 0x0}, {0xF9CC, 0x7409, 0x0}, {0xF9CD, 0x7559, 0x0},
    {0xF9CE, 0x786B, 0x0}, {0xF9CF, 0x7D10, 0x0}, {0xF9D0, 0x985E, 0x0}, {0xF9D1, 0x516D, 0x0}, {0xF9D2, 0x622E, 0x0},
    {0xF9D3, 0x9678, 0x0}, {0xF9D4, 0x502B, 0x0}, {0xF9D5, 0x5D19, 0x0}, {0xF9D6, 0x6DEA, 0x0}, {0xF9D7, 0x8F2A, 0x0},
    {0xF9D8, 0x5F8B, 0x0}, {0xF9D9, 0x6144, 0x0}, {0xF9DA, 0x6817, 0x0}, {0xF9DB, 0x7387, 0x0}, {0xF9DC, 0x9686, 0x0},
    {0xF9DD, 0x5229, 0x0}, {0xF9DE, 0x540F, 0x0}, {0xF9DF, 0x5C65, 0x0}, {0xF9E0, 0x6613, 0x0}, {0xF9E1, 0x674E, 0x0},
    {0xF9E2, 0x68A8, 0x0}, {0xF9E3, 0x6CE5, 0x0}, {0xF9E4, 0x7406, 0x0}, {0xF9E5, 0x75E2, 0x0}, {0xF9E6, 0x7F79, 0x0},
    {0xF9E7, 0x88CF, 0x0}, {0xF9E8, 0x88E1, 0x0}, {0xF9E9, 0x91CC, 0x0}, {0xF9EA, 0x96E2, 0x0}, {0xF9EB, 0x533F, 0x0},
    {0xF9EC, 0x6EBA, 0x0}, {0xF9ED, 0x541D, 0x0}, {0xF9EE, 0x71D0, 0x0}, {0xF9EF, 0x7498, 0x0}, {0xF9F0, 0x85FA, 0x0},
    {0xF9F1, 0x96A3, 0x0}, {0xF9F2, 0x9C57, 0x0}, {0xF9F3, 0x9E9F, 0x0}, {0xF9F4, 0x6797, 0x0}, {0xF9F5, 0x6DCB, 0x0},
    {0xF9F6, 0x81E8, 0x0}, {0xF9F7, 0x7ACB, 0x0}, {0xF9F8, 0x7B20, 0x0}, {0xF9F9, 0x7C92, 0x0}, {0xF9FA, 0x72C0, 0x0},
    {0xF9FB, 0x7099, 0x0}, {0xF9FC, 0x8B58, 0x0}, {0xF9FD, 0x4EC0, 0x0}, {0xF9FE, 0x8336, 0x0}, {0xF9FF, 0x523A, 0x0},
    {0xFA00, 0x5207, 0x0}, {0xFA01, 0x5EA6, 0x0}, {0xFA02, 0x62D3, 0x0}, {0xFA03, 0x7CD6, 0x0}, {0xFA04, 0x5B85, 0x0},
    {0xFA05, 0x6D1E, 0x0}, {0xFA06, 0x66B4, 0x0}, {0xFA07, 0x8F3B, 0x0}, {0xFA08, 0x884C, 0x0}, {0xFA09, 0x964D, 0x0},
    {0xFA0A, 0x898B, 0x0}, {0xFA0B, 0x5ED3, 0x0}, {0xFA0C, 0x5140, 0x0}, {0xFA0D, 0x55C0, 0x0}, {0xFA10, 0x585A, 0x0},
    {0xFA12, 0x6674, 0x0}, {0xFA15, 0x51DE, 0x0}, {0xFA16, 0x732A, 0x0}, {0xFA17, 0x76CA, 0x0}, {0xFA18, 0x793C, 0x0},
    {0xFA19, 0x795E, 0x0}, {0xFA1A, 0x7965, 0x0}, {0xFA1B, 0x798F, 0x0}, {0xFA1C, 0x9756, 0x0}, {0xFA1D, 0x7CBE, 0x0},
    {0xFA1E, 0x7FBD, 0x0}, {0xFA20, 0x8612, 0x0}, {0xFA22, 0x8AF8, 0x0}, {0xFA25, 0x9038, 0x0}, {0xFA26, 0x90FD, 0x0},
    {0xFA2A, 0x98EF, 0x0}, {0xFA2B, 0x98FC, 0x0}, {0xFA2C, 0x9928, 0x0}, {0xFA2D, 0x9DB4, 0x0}, {0xFA2E, 0x90DE, 0x0},
    {0xFA2F, 0x96B7, 0x0}, {0xFA30, 0x4FAE, 0x0}, {0xFA31, 0x50E7, 0x0}, {0xFA32, 0x514D, 0x0}, {0xFA33, 0x52C9, 0x0},
    {0xFA34, 0x52E4, 0x0}, {0xFA35, 0x5351, 0x0}, {0xFA36, 0x559D, 0x0}, {0xFA37, 0x5606, 0x0}, {0xFA38, 0x5668, 0x0},
    {0xFA39, 0x5840, 0x0}, {0xFA3A, 0x58A8, 0x0}, {0xFA3B, 0x5C64, 0x0}, {0xFA3C, 0x5C6E, 0x0}, {0xFA3D, 0x6094, 0x0},
    {0xFA3E, 0x6168, 0x0}, {0xFA3F, 0x618E, 0x0}, {0xFA40, 0x61F2, 0x0}, {0xFA41, 0x654F, 0x0}, {0xFA42, 0x65E2, 0x0},
    {0xFA43, 0x6691, 0x0}, {0xFA44, 0x6885, 0x0}, {0xFA45, 0x6D77, 0x0}, {0xFA46, 0x6E1A, 0x0}, {0xFA47, 0x6F22, 0x0},
    {0xFA48, 0x716E, 0x0}, {0xFA49, 0x722B, 0x0}, {0xFA4A, 0x7422, 0x0}, {0xFA4B, 0x7891, 0x0}, {0xFA4C, 0x793E, 0x0},
    {0xFA4D, 0x7949, 0x0}, {0xFA4E, 0x7948, 0x0}, {0xFA4F, 0x7950, 0x0}, {0xFA50, 0x7956, 0x0}, {0xFA51, 0x795D, 0x0},
    {0xFA52, 0x798D, 0x0}, {0xFA53, 0x798E, 0x0}, {0xFA54, 0x7A40, 0x0}, {0xFA55, 0x7A81, 0x0}, {0xFA56, 0x7BC0, 0x0},
    {0xFA57, 0x7DF4, 0x0}, {0xFA58, 0x7E09, 0x0}, {0xFA59, 0x7E41, 0x0}, {0xFA5A, 0x7F72, 0x0}, {0xFA5B, 0x8005, 0x0},
    {0xFA5C, 0x81ED, 0x0}, {0xFA5D, 0x8279, 0x0}, {0xFA5E, 0x8279, 0x0}, {0xFA5F, 0x8457, 0x0}, {0xFA60, 0x8910, 0x0},
    {0xFA61, 0x8996, 0x0}, {0xFA62, 0x8B01, 0x0}, {0xFA63, 0x8B39, 0x0}, {0xFA64, 0x8CD3, 0x0}, {0xFA65, 0x8D08, 0x0},
    {0xFA66, 0x8FB6, 0x0}, {0xFA67, 0x9038, 0x0}, {0xFA68, 0x96E3, 0x0}, {0xFA69, 0x97FF, 0x0}, {0xFA6A, 0x983B, 0x0},
    {0xFA6B, 0x6075, 0x0}, {0xFA6C, 0x242EE, 0x0}, {0xFA6D, 0x8218, 0x0}, {0xFA70, 0x4E26, 0x0}, {0xFA71, 0x51B5, 0x0},
    {0xFA72, 0x5168, 0x0}, {0xFA73, 0x4F80, 0x0}, {0xFA74, 0x5145, 0x0}, {0xFA75, 0x5180, 0x0}, {0xFA76, 0x52C7, 0x0},
    {0xFA77, 0x52FA, 0x0}, {0xFA78, 0x559D, 0x0}, {0xFA79, 0x5555, 0x0}, {0xFA7A, 0x5599, 0x0}, {0xFA7B, 0x55E2, 0x0},
    {0xFA7C, 0x585A, 0x0}, {0xFA7D, 0x58B3, 0x0}, {0xFA7E, 0x5944, 0x0}, {0xFA7F, 0x5954, 0x0}, {0xFA80, 0x5A62, 0x0},
    {0xFA81, 0x5B28, 0x0}, {0xFA82, 0x5ED2, 0x0}, {0xFA83, 0x5ED9, 0x0}, {0xFA84, 0x5F69, 0x0}, {0xFA85, 0x5FAD, 0x0},
    {0xFA86, 0x60D8, 0x0}, {0xFA87, 0x614E, 0x0}, {0xFA88, 0x6108, 0x0}, {0xFA89, 0x618E, 0x0}, {0xFA8A, 0x6160, 0x0},
    {0xFA8B, 0x61F2, 0x0}, {0xFA8C, 0x6234, 0x0}, {0xFA8D, 0x63C4, 0x0}, {0xFA8E, 0x641C, 0x0}, {0xFA8F, 0x6452, 0x0},
    {0xFA90, 0x6556, 0x0}, {0xFA91, 0x6674, 0x0}, {0xFA92, 0x6717, 0x0}, {0xFA93, 0x671B, 0x0}, {0xFA94, 0x6756, 0x0},
    {0xFA95, 0x6B79, 0x0}, {0xFA96, 0x6BBA, 0x0}, {0xFA97, 0x6D41, 0x0}, {0xFA98, 0x6EDB, 0x0}, {0xFA99, 0x6ECB, 0x0},
    {0xFA9A, 0x6F22, 0x0}, {0xFA9B, 0x701E, 0x0}, {0xFA9C, 0x716E, 0x0}, {0xFA9D, 0x77A7, 0x0}, {0xFA9E, 0x7235, 0x0},
    {0xFA9F, 0x72AF, 0x0}, {0xFAA0, 0x732A, 0x0}, {0xFAA1, 0x7471, 0x0}, {0xFAA2, 0x7506, 0x0}, {0xFAA3, 0x753B, 0x0},
    {0xFAA4, 0x761D, 0x0}, {0xFAA5, 0x761F, 0x0}, {0xFAA6, 0x76CA, 0x0}, {0xFAA7, 0x76DB, 0x0}, {0xFAA8, 0x76F4, 0x0},
    {0xFAA9, 0x774A, 0x0}, {0xFAAA, 0x7740, 0x0}, {0xFAAB, 0x78CC, 0x0}, {0xFAAC, 0x7AB1, 0x0}, {0xFAAD, 0x7BC0, 0x0},
    {0xFAAE, 0x7C7B, 0x0}, {0xFAAF, 0x7D5B, 0x0}, {0xFAB0, 0x7DF4, 0x0}, {0xFAB1, 0x7F3E, 0x0}, {0xFAB2, 0x8005, 0x0},
    {0xFAB3, 0x8352, 0x0}, {0xFAB4, 0x83EF, 0x0}, {0xFAB5, 0x8779, 0x0}, {0xFAB6, 0x8941, 0x0}, {0xFAB7, 0x8986, 0x0},
    {0xFAB8, 0x8996, 0x0}, {0xFAB9, 0x8ABF, 0x0}, {0xFABA, 0x8AF8, 0x0}, {0xFABB, 0x8ACB, 0x0}, {0xFABC, 0x8B01, 0x0},
    {0xFABD, 0x8AFE, 0x0}, {0xFABE, 0x8AED, 0x0}, {0xFABF, 0x8B39, 0x0}, {0xFAC0, 0x8B8A, 0x0}, {0xFAC1, 0x8D08, 0x0},
    {0xFAC2, 0x8F38, 0x0}, {0xFAC3, 0x9072, 0x0}, {0xFAC4, 0x9199, 0x0}, {0xFAC5, 0x9276, 0x0}, {0xFAC6, 0x967C, 0x0},
    {0xFAC7, 0x96E3, 0x0}, {0xFAC8, 0x9756, 0x0}, {0xFAC9, 0x97DB, 0x0}, {0xFACA, 0x97FF, 0x0}, {0xFACB, 0x980B, 0x0},
    {0xFACC, 0x983B, 0x0}, {0xFACD, 0x9B12, 0x0}, {0xFACE, 0x9F9C, 0x0}, {0xFACF, 0x2284A, 0x0}, {0xFAD0, 0x22844, 0x0},
    {0xFAD1, 0x233D5, 0x0}, {0xFAD2, 0x3B9D, 0x0}, {0xFAD3, 0x4018, 0x0}, {0xFAD4, 0x4039, 0x0}, {0xFAD5, 0x25249, 0x0},
    {0xFAD6, 0x25CD0, 0x0}, {0xFAD7, 0x27ED3, 0x0}, {0xFAD8, 0x9F43, 0x0}, {0xFAD9, 0x9F8E, 0x0}, {0xFB1D, 0x5D9, 0x5B4},
    {0xFB1F, 0x5F2, 0x5B7}, {0xFB2A, 0x5E9, 0x5C1}, {0xFB2B, 0x5E9, 0x5C2}, {0xFB2C, 0xFB49, 0x5C1}, {0xFB2D, 0xFB49, 0x5C2},
    {0xFB2E, 0x5D0, 0x5B7}, {0xFB2F, 0x5D0, 0x5B8}, {0xFB30, 0x5D0, 0x5BC}, {0xFB31, 0x5D1, 0x5BC}, {0xFB32, 0x5D2, 0x5BC},
    {0xFB33, 0x5D3, 0x5BC}, {0xFB34, 0x5D4, 0x5BC}, {0xFB35, 0x5D5, 0x5BC}, {0xFB36, 0x5D6, 0x5BC}, {0xFB38, 0x5D8, 0x5BC},
    {0xFB39, 0x5D9, 0x5BC}, {0xFB3A, 0x5DA, 0x5BC}, {0xFB3B, 0x5DB, 0x5BC}, {0xFB3C, 0x5DC, 0x5BC}, {0xFB3E, 0x5DE, 0x5BC},
    {0xFB40, 0x5E0, 0x5BC}, {0xFB41, 0x5E1, 0x5BC}, {0xFB43, 0x5E3, 0x5BC}, {0xFB44, 0x5E4, 0x5BC}, {0xFB46, 0x5E6, 0x5BC},
    {0xFB47, 0x5E7, 0x5BC}, {0xFB48, 0x5E8, 0x5BC}, {0xFB49, 0x5E9, 0x5BC}, {0xFB4A, 0x5EA, 0x5BC}, {0xFB4B, 0x5D5, 0x5B9},
    {0xFB4C, 0x5D1, 0x5BF}, {0xFB4D, 0x5DB, 0x5BF}, {0xFB4E, 0x5E4, 0x5BF}, {0x1109A, 0x11099, 0x110BA}, {0x1109C, 0x1109B, 0x110BA},
    {0x110AB, 0x110A5, 0x110BA}, {0x1112E, 0x11131, 0x11127}, {0x1112F, 0x11132, 0x11127}, {0x1134B, 0x11347, 0x1133E}, {0x1134C, 0x11347, 0x11357},
    {0x114BB, 0x114B9, 0x114BA}, {0x114BC, 0x114B9, 0x114B0}, {0x114BE, 0x114B9, 0x114BD}, {0x115BA, 0x115B8, 0x115AF}, {0x115BB, 0x115B9, 0x115AF},
    {0x11938, 0x11935, 0x11930}, {0x1D15E, 0x1D157, 0x1D165}, {0x1D15F, 0x1D158, 0x1D165}, {0x1D160, 0x1D15F, 0x1D16E}, {0x1D161, 0x1D15F, 0x1D16F},
    {0x1D162, 0x1D15F, 0x1D170}, {0x1D163, 0x1D15F, 0x1D171}, {0x1D164, 0x1D15F, 0x1D172}, {0x1D1BB, 0x1D1B9, 0x1D165}, {0x1D1BC, 0x1D1BA, 0x1D165},
    {0x1D1BD, 0x1D1BB, 0x1D16E}, {0x1D1BE, 0x1D1BC, 0x1D16E}, {0x1D1BF, 0x1D1BB, 0x1D16F}, {0x1D1C0, 0x1D1BC, 0x1D16F}, {0x2F800, 0x4E3D, 0x0},
    {0x2F801, 0x4E38, 0x0}, {0x2F802, 0x4E41, 0x0}, {0x2F803, 0x20122, 0x0}, {0x2F804, 0x4F60, 0x0}, {0x2F805, 0x4FAE, 0x0},
    {0x2F806, 0x4FBB, 0x0}, {0x2F807, 0x5002, 0x0}, {0x2F808, 0x507A, 0x0}, {0x2F809, 0x5099, 0x0}, {0x2F80A, 0x50E7, 0x0},
    {0x2F80B, 0x50CF, 0x0}, {0x2F80C, 0x349E, 0x0}, {0x2F80D, 0x2063A, 0x0}, {0x2F80E, 0x514D, 0x0}, {0x2F80F, 0x5154, 0x0},
    {0x2F810, 0x5164, 0x0}, {0x2F811, 0x5177, 0x0}, {0x2F812, 0x2051C, 0x0}, {0x2F813, 0x34B9, 0x0}, {0x2F814, 0x5167, 0x0},
    {0x2F815, 0x518D, 0x0}, {0x2F816, 0x2054B, 0x0}, {0x2F817, 0x5197, 0x0}, {0x2F818, 0x51A4, 0x0}, {0x2F819, 0x4ECC, 0x0},
    {0x2F81A, 0x51AC, 0x0}, {0x2F81B, 0x51B5, 0x0}, {0x2F81C, 0x291DF, 0x0}, {0x2F81D, 0x51F5, 0x0}, {0x2F81E, 0x5203, 0x0},
    {0x2F81F, 0x34DF, 0x0}, {0x2F820, 0x523B, 0x0}, {0x2F821, 0x5246, 0x0}, {0x2F822, 0x5272, 0x0}, {0x2F823, 0x5277, 0x0},
    {0x2F824, 0x3515, 0x0}, {0x2F825, 0x52C7, 0x0}, {0x2F826, 0x52C9, 0x0}, {0x2F827, 0x52E4, 0x0}, {0x2F828, 0x52FA, 0x0},
    {0x2F829, 0x5305, 0x0}, {0x2F82A, 0x5306, 0x0}, {0x2F82B, 0x5317, 0x0}, {0x2F82C, 0x5349, 0x0}, {0x2F82D, 0x5351, 0x0},
    {0x2F82E, 0x535A, 0x0}, {0x2F82F, 0x5373, 0x0}, {0x2F830, 0x537D, 0x0}, {0x2F831, 0x537F, 0x0}, {0x2F832, 0x537F, 0x0},
    {0x2F833, 0x537F, 0x0}, {0x2F834, 0x20A2C, 0x0}, {0x2F835, 0x7070, 0x0}, {0x2F836, 0x53CA, 0x0}, {0x2F837, 0x53DF, 0x0},
    {0x2F838, 0x20B63, 0x0}, {0x2F839, 0x53EB, 0x0}, {0x2F83A, 0x53F1, 0x0}, {0x2F83B, 0x5406, 0x0}, {0x2F83C, 0x549E, 0x0},
    {0x2F83D, 0x5438, 0x0}, {0x2F83E, 0x5448, 0x0}, {0x2F83F, 0x5468, 0x0}, {0x2F840, 0x54A2, 0x0}, {0x2F841, 0x54F6, 0x0},
    {0x2F842, 0x5510, 0x0}, {0x2F843, 0x5553, 0x0}, {0x2F844, 0x5563, 0x0}, {0x2F845, 0x5584, 0x0}, {0x2F846, 0x5584, 0x0},
    {0x2F847, 0x5599, 0x0}, {0x2F848, 0x55AB, 0x0}, {0x2F849, 0x55B3, 0x0}, {0x2F84A, 0x55C2, 0x0}, {0x2F84B, 0x5716, 0x0},
    {0x2F84C, 0x5606, 0x0}, {0x2F84D, 0x5717, 0x0}, {0x2F84E, 0x5651, 0x0}, {0x2F84F, 0x5674, 0x0}, {0x2F850, 0x5207, 0x0},
    {0x2F851, 0x58EE, 0x0}, {0x2F852, 0x57CE, 0x0}, {0x2F853, 0x57F4, 0x0}, {0x2F854, 0x580D, 0x0}, {0x2F855, 0x578B, 0x0},
    {0x2F856, 0x5832, 0x0}, {0x2F857, 0x5831, 0x0}, {0x2F858, 0x58AC, 0x0}, {0x2F859, 0x214E4, 0x0}, {0x2F85A, 0x58F2, 0x0},
    {0x2F85B, 0x58F7, 0x0}, {0x2F85C, 0x5906, 0x0}, {0x2F85D, 0x591A, 0x0}, {0x2F85E, 0x5922, 0x0}, {0x2F85F, 0x5962, 0x0},
    {0x2F860, 0x216A8, 0x0}, {0x2F861, 0x216EA, 0x0}, {0x2F862, 0x59EC, 0x0}, {0x2F863, 0x5A1B, 0x0}, {0x2F864, 0x5A27, 0x0},
    {0x2F865, 0x59D8, 0x0}, {0x2F866, 0x5A66, 0x0}, {0x2F867, 0x36EE, 0x0}, {0x2F868, 0x36FC, 0x0}, {0x2F869, 0x5B08, 0x0},
    {0x2F86A, 0x5B3E, 0x0}, {0x2F86B, 0x5B3E, 0x0}, {0x2F86C, 0x219C8, 0x0}, {0x2F86D, 0x5BC3, 0x0}, {0x2F86E, 0x5BD8, 0x0},
    {0x2F86F, 0x5BE7, 0x0}, {0x2F870, 0x5BF3, 0x0}, {0x2F871, 0x21B18, 0x0}, {0x2F872, 0x5BFF, 0x0}, {0x2F873, 0x5C06, 0x0},
    {0x2F874, 0x5F53, 0x0}, {0x2F875, 0x5C22, 0x0}, {0x2F876, 0x3781, 0x0}, {0x2F877, 0x5C60, 0x0}, {0x2F878, 0x5C6E, 0x0},
    {0x2F879, 0x5CC0, 0x0}, {0x2F87A, 0x5C8D, 0x0}, {0x2F87B, 0x21DE4, 0x0}, {0x2F87C, 0x5D43, 0x0}, {0x2F87D, 0x21DE6, 0x0},
    {0x2F87E, 0x5D6E, 0x0}, {0x2F87F, 0x5D6B, 0x0}, {0x2F880, 0x5D7C, 0x0}, {0x2F881, 0x5DE1, 0x0}, {0x2F882, 0x5DE2, 0x0},
    {0x2F883, 0x382F, 0x0}, {0x2F884, 0x5DFD, 0x0}, {0x2F885, 0x5E28, 0x0}, {0x2F886, 0x5E3D, 0x0}, {0x2F887, 0x5E69, 0x0},
    {0x2F888, 0x3862, 0x0}, {0x2F889, 0x22183, 0x0}, {0x2F88A, 0x387C, 0x0}, {0x2F88B, 0x5EB0, 0x0}, {0x2F88C, 0x5EB3, 0x0},
    {0x2F88D, 0x5EB6, 0x0}, {0x2F88E, 0x5ECA, 0x0}, {0x2F88F, 0x2A392, 0x0}, {0x2F890, 0x5EFE, 0x0}, {0x2F891, 0x22331, 0x0},
    {0x2F892, 0x22331, 0x0}, {0x2F893, 0x8201, 0x0}, {0x2F894, 0x5F22, 0x0}, {0x2F895, 0x5F22, 0x0}, {0x2F896, 0x38C7, 0x0},
    {0x2F897, 0x232B8, 0x0}, {0x2F898, 0x261DA, 0x0}, {0x2F899, 0x5F62, 0x0}, {0x2F89A, 0x5F6B, 0x0}, {0x2F89B, 0x38E3, 0x0},
    {0x2F89C, 0x5F9A, 0x0}, {0x2F89D, 0x5FCD, 0x0}, {0x2F89E, 0x5FD7, 0x0}, {0x2F89F, 0x5FF9, 0x0}, {0x2F8A0, 0x6081, 0x0},
    {0x2F8A1, 0x393A, 0x0}, {0x2F8A2, 0x391C, 0x0}, {0x2F8A3, 0x6094, 0x0}, {0x2F8A4, 0x226D4, 0x0}, {0x2F8A5, 0x60C7, 0x0},
    {0x2F8A6, 0x6148, 0x0}, {0x2F8A7, 0x614C, 0x0}, {0x2F8A8, 0x614E, 0x0}, {0x2F8A9, 0x614C, 0x0}, {0x2F8AA, 0x617A, 0x0},
    {0x2F8AB, 0x618E, 0x0}, {0x2F8AC, 0x61B2, 0x0}, {0x2F8AD, 0x61A4, 0x0}, {0x2F8AE, 0x61AF, 0x0}, {0x2F8AF, 0x61DE, 0x0},
    {0x2F8B0, 0x61F2, 0x0}, {0x2F8B1, 0x61F6, 0x0}, {0x2F8B2, 0x6210, 0x0}, {0x2F8B3, 0x621B, 0x0}, {0x2F8B4, 0x625D, 0x0},
    {0x2F8B5, 0x62B1, 0x0}, {0x2F8B6, 0x62D4, 0x0}, {0x2F8B7, 0x6350, 0x0}, {0x2F8B8, 0x22B0C, 0x0}, {0x2F8B9, 0x633D, 0x0},
    {0x2F8BA, 0x62FC, 0x0}, {0x2F8BB, 0x6368, 0x0}, {0x2F8BC, 0x6383, 0x0}, {0x2F8BD, 0x63E4, 0x0}, {0x2F8BE, 0x22BF1, 0x0},
    {0x2F8BF, 0x6422, 0x0}, {0x2F8C0, 0x63C5, 0x0}, {0x2F8C1, 0x63A9, 0x0}, {0x2F8C2, 0x3A2E, 0x0}, {0x2F8C3, 0x6469, 0x0},
    {0x2F8C4, 0x647E, 0x0}, {0x2F8C5, 0x649D, 0x0}, {0x2F8C6, 0x6477, 0x0}, {0x2F8C7, 0x3A6C, 0x0}, {0x2F8C8, 0x654F, 0x0},
    {0x2F8C9, 0x656C, 0x0}, {0x2F8CA, 0x2300A, 0x0}, {0x2F8CB, 0x65E3, 0x0}, {0x2F8CC, 0x66F8, 0x0}, {0x2F8CD, 0x6649, 0x0},
    {0x2F8CE, 0x3B19, 0x0}, {0x2F8CF, 0x6691, 0x0}, {0x2F8D0, 0x3B08, 0x0}, {0x2F8D1, 0x3AE4, 0x0}, {0x2F8D2, 0x5192, 0x0},
    {0x2F8D3, 0x5195, 0x0}, {0x2F8D4, 0x6700, 0x0}, {0x2F8D5, 0x669C, 0x0}, {0x2F8D6, 0x80AD, 0x0}, {0x2F8D7, 0x43D9, 0x0},
    {0x2F8D8, 0x6717, 0x0}, {0x2F8D9, 0x671B, 0x0}, {0x2F8DA, 0x6721, 0x0}, {0x2F8DB, 0x675E, 0x0}, {0x2F8DC, 0x6753, 0x0},
    {0x2F8DD, 0x233C3, 0x0}, {0x2F8DE, 0x3B49, 0x0}, {0x2F8DF, 0x67FA, 0x0}, {0x2F8E0, 0x6785, 0x0}, {0x2F8E1, 0x6852, 0x0},
    {0x2F8E2, 0x6885, 0x0}, {0x2F8E3, 0x2346D, 0x0}, {0x2F8E4, 0x688E, 0x0}, {0x2F8E5, 0x681F, 0x0}, {0x2F8E6, 0x6914, 0x0},
    {0x2F8E7, 0x3B9D, 0x0}, {0x2F8E8, 0x6942, 0x0}, {0x2F8E9, 0x69A3, 0x0}, {0x2F8EA, 0x69EA, 0x0}, {0x2F8EB, 0x6AA8, 0x0},
    {0x2F8EC, 0x236A3, 0x0}, {0x2F8ED, 0x6ADB, 0x0}, {0x2F8EE, 0x3C18, 0x0}, {0x2F8EF, 0x6B21, 0x0}, {0x2F8F0, 0x238A7, 0x0},
    {0x2F8F1, 0x6B54, 0x0}, {0x2F8F2, 0x3C4E, 0x0}, {0x2F8F3, 0x6B72, 0x0}, {0x2F8F4, 0x6B9F, 0x0}, {0x2F8F5, 0x6BBA, 0x0},
    {0x2F8F6, 0x6BBB, 0x0}, {0x2F8F7, 0x23A8D, 0x0}, {0x2F8F8, 0x21D0B, 0x0}, {0x2F8F9, 0x23AFA, 0x0}, {0x2F8FA, 0x6C4E, 0x0},
    {0x2F8FB, 0x23CBC, 0x0}, {0x2F8FC, 0x6CBF, 0x0}, {0x2F8FD, 0x6CCD, 0x0}, {0x2F8FE, 0x6C67, 0x0}, {0x2F8FF, 0x6D16, 0x0},
    {0x2F900, 0x6D3E, 0x0}, {0x2F901, 0x6D77, 0x0}, {0x2F902, 0x6D41, 0x0}, {0x2F903, 0x6D69, 0x0}, {0x2F904, 0x6D78, 0x0},
    {0x2F905, 0x6D85, 0x0}, {0x2F906, 0x23D1E, 0x0}, {0x2F907, 0x6D34, 0x0}, {0x2F908, 0x6E2F, 0x0}, {0x2F909, 0x6E6E, 0x0},
    {0x2F90A, 0x3D33, 0x0}, {0x2F90B, 0x6ECB, 0x0}, {0x2F90C, 0x6EC7, 0x0}, {0x2F90D, 0x23ED1, 0x0}, {0x2F90E, 0x6DF9, 0x0},
    {0x2F90F, 0x6F6E, 0x0}, {0x2F910, 0x23F5E, 0x0}, {0x2F911, 0x23F8E, 0x0}, {0x2F912, 0x6FC6, 0x0}, {0x2F913, 0x7039, 0x0},
    {0x2F914, 0x701E, 0x0}, {0x2F915, 0x701B, 0x0}, {0x2F916, 0x3D96, 0x0}, {0x2F917, 0x704A, 0x0}, {0x2F918, 0x707D, 0x0},
    {0x2F919, 0x7077, 0x0}, {0x2F91A, 0x70AD, 0x0}, {0x2F91B, 0x20525, 0x0}, {0x2F91C, 0x7145, 0x0}, {0x2F91D, 0x24263, 0x0},
    {0x2F91E, 0x719C, 0x0}, {0x2F91F, 0x243AB, 0x0}, {0x2F920, 0x7228, 0x0}, {0x2F921, 0x7235, 0x0}, {0x2F922, 0x7250, 0x0},
    {0x2F923, 0x24608, 0x0}, {0x2F924, 0x7280, 0x0}, {0x2F925, 0x7295, 0x0}, {0x2F926, 0x24735, 0x0}, {0x2F927, 0x24814, 0x0},
    {0x2F928, 0x737A, 0x0}, {0x2F929, 0x738B, 0x0}, {0x2F92A, 0x3EAC, 0x0}, {0x2F92B, 0x73A5, 0x0}, {0x2F92C, 0x3EB8, 0x0},
    {0x2F92D, 0x3EB8, 0x0}, {0x2F92E, 0x7447, 0x0}, {0x2F92F, 0x745C, 0x0}, {0x2F930, 0x7471, 0x0}, {0x2F931, 0x7485, 0x0},
    {0x2F932, 0x74CA, 0x0}, {0x2F933, 0x3F1B, 0x0}, {0x2F934, 0x7524, 0x0}, {0x2F935, 0x24C36, 0x0}, {0x2F936, 0x753E, 0x0},
    {0x2F937, 0x24C92, 0x0}, {0x2F938, 0x7570, 0x0}, {0x2F939, 0x2219F, 0x0}, {0x2F93A, 0x7610, 0x0}, {0x2F93B, 0x24FA1, 0x0},
    {0x2F93C, 0x24FB8, 0x0}, {0x2F93D, 0x25044, 0x0}, {0x2F93E, 0x3FFC, 0x0}, {0x2F93F, 0x4008, 0x0}, {0x2F940, 0x76F4, 0x0},
    {0x2F941, 0x250F3, 0x0}, {0x2F942, 0x250F2, 0x0}, {0x2F943, 0x25119, 0x0}, {0x2F944, 0x25133, 0x0}, {0x2F945, 0x771E, 0x0},
    {0x2F946, 0x771F, 0x0}, {0x2F947, 0x771F, 0x0}, {0x2F948, 0x774A, 0x0}, {0x2F949, 0x4039, 0x0}, {0x2F94A, 0x778B, 0x0},
    {0x2F94B, 0x4046, 0x0}, {0x2F94C, 0x4096, 0x0}, {0x2F94D, 0x2541D, 0x0}, {0x2F94E, 0x784E, 0x0}, {0x2F94F, 0x788C, 0x0},
    {0x2F950, 0x78CC, 0x0}, {0x2F951, 0x40E3, 0x0}, {0x2F952, 0x25626, 0x0}, {0x2F953, 0x7956, 0x0}, {0x2F954, 0x2569A, 0x0},
    {0x2F955, 0x256C5, 0x0}, {0x2F956, 0x798F, 0x0}, {0x2F957, 0x79EB, 0x0}, {0x2F958, 0x412F, 0x0}, {0x2F959, 0x7A40, 0x0},
    {0x2F95A, 0x7A4A, 0x0}, {0x2F95B, 0x7A4F, 0x0}, {0x2F95C, 0x2597C, 0x0}, {0x2F95D, 0x25AA7, 0x0}, {0x2F95E, 0x25AA7, 0x0},
    {0x2F95F, 0x7AEE, 0x0}, {0x2F960, 0x4202, 0x0}, {0x2F961, 0x25BAB, 0x0}, {0x2F962, 0x7BC6, 0x0}, {0x2F963, 0x7BC9, 0x0},
    {0x2F964, 0x4227, 0x0}, {0x2F965, 0x25C80, 0x0}, {0x2F966, 0x7CD2, 0x0}, {0x2F967, 0x42A0, 0x0}, {0x2F968, 0x7CE8, 0x0},
    {0x2F969, 0x7CE3, 0x0}, {0x2F96A, 0x7D00, 0x0}, {0x2F96B, 0x25F86, 0x0}, {0x2F96C, 0x7D63, 0x0}, {0x2F96D, 0x4301, 0x0},
    {0x2F96E, 0x7DC7, 0x0}, {0x2F96F, 0x7E02, 0x0}, {0x2F970, 0x7E45, 0x0}, {0x2F971, 0x4334, 0x0}, {0x2F972, 0x26228, 0x0},
    {0x2F973, 0x26247, 0x0}, {0x2F974, 0x4359, 0x0}, {0x2F975, 0x262D9, 0x0}, {0x2F976, 0x7F7A, 0x0}, {0x2F977, 0x2633E, 0x0},
    {0x2F978, 0x7F95, 0x0}, {0x2F979, 0x7FFA, 0x0}, {0x2F97A, 0x8005, 0x0}, {0x2F97B, 0x264DA, 0x0}, {0x2F97C, 0x26523, 0x0},
    {0x2F97D, 0x8060, 0x0}, {0x2F97E, 0x265A8, 0x0}, {0x2F97F, 0x8070, 0x0}, {0x2F980, 0x2335F, 0x0}, {0x2F981, 0x43D5, 0x0},
    {0x2F982, 0x80B2, 0x0}, {0x2F983, 0x8103, 0x0}, {0x2F984, 0x440B, 0x0}, {0x2F985, 0x813E, 0x0}, {0x2F986, 0x5AB5, 0x0},
    {0x2F987, 0x267A7, 0x0}, {0x2F988, 0x267B5, 0x0}, {0x2F989, 0x23393, 0x0}, {0x2F98A, 0x2339C, 0x0}, {0x2F98B, 0x8201, 0x0},
    {0x2F98C, 0x8204, 0x0}, {0x2F98D, 0x8F9E, 0x0}, {0x2F98E, 0x446B, 0x0}, {0x2F98F, 0x8291, 0x0}, {0x2F990, 0x828B, 0x0},
    {0x2F991, 0x829D, 0x0}, {0x2F992, 0x52B3, 0x0}, {0x2F993, 0x82B1, 0x0}, {0x2F994, 0x82B3, 0x0}, {0x2F995, 0x82BD, 0x0},
    {0x2F996, 0x82E6, 0x0}, {0x2F997, 0x26B3C, 0x0}, {0x2F998, 0x82E5, 0x0}, {0x2F999, 0x831D, 0x0}, {0x2F99A, 0x8363, 0x0},
    {0x2F99B, 0x83AD, 0x0}, {0x2F99C, 0x8323, 0x0}, {0x2F99D, 0x83BD, 0x0}, {0x2F99E, 0x83E7, 0x0}, {0x2F99F, 0x8457, 0x0},
    {0x2F9A0, 0x8353, 0x0}, {0x2F9A1, 0x83CA, 0x0}, {0x2F9A2, 0x83CC, 0x0}, {0x2F9A3, 0x83DC, 0x0}, {0x2F9A4, 0x26C36, 0x0},
    {0x2F9A5, 0x26D6B, 0x0}, {0x2F9A6, 0x26CD5, 0x0}, {0x2F9A7, 0x452B, 0x0}, {0x2F9A8, 0x84F1, 0x0}, {0x2F9A9, 0x84F3, 0x0},
    {0x2F9AA, 0x8516, 0x0}, {0x2F9AB, 0x273CA, 0x0}, {0x2F9AC, 0x8564, 0x0}, {0x2F9AD, 0x26F2C, 0x0}, {0x2F9AE, 0x455D, 0x0},
    {0x2F9AF, 0x4561, 0x0}, {0x2F9B0, 0x26FB1, 0x0}, {0x2F9B1, 0x270D2, 0x0}, {0x2F9B2, 0x456B, 0x0}, {0x2F9B3, 0x8650, 0x0},
    {0x2F9B4, 0x865C, 0x0}, {0x2F9B5, 0x8667, 0x0}, {0x2F9B6, 0x8669, 0x0}, {0x2F9B7, 0x86A9, 0x0}, {0x2F9B8, 0x8688, 0x0},
    {0x2F9B9, 0x870E, 0x0}, {0x2F9BA, 0x86E2, 0x0}, {0x2F9BB, 0x8779, 0x0}, {0x2F9BC, 0x8728, 0x0}, {0x2F9BD, 0x876B, 0x0},
    {0x2F9BE, 0x8786, 0x0}, {0x2F9BF, 0x45D7, 0x0}, {0x2F9C0, 0x87E1, 0x0}, {0x2F9C1, 0x8801, 0x0}, {0x2F9C2, 0x45F9, 0x0},
    {0x2F9C3, 0x8860, 0x0}, {0x2F9C4, 0x8863, 0x0}, {0x2F9C5, 0x27667, 0x0}, {0x2F9C6, 0x88D7, 0x0}, {0x2F9C7, 0x88DE, 0x0},
    {0x2F9C8, 0x4635, 0x0}, {0x2F9C9, 0x88FA, 0x0}, {0x2F9CA, 0x34BB, 0x0}, {0x2F9CB, 0x278AE, 0x0}, {0x2F9CC, 0x27966, 0x0},
    {0x2F9CD, 0x46BE, 0x0}, {0x2F9CE, 0x46C7, 0x0}, {0x2F9CF, 0x8AA0, 0x0}, {0x2F9D0, 0x8AED, 0x0}, {0x2F9D1, 0x8B8A, 0x0},
    {0x2F9D2, 0x8C55, 0x0}, {0x2F9D3, 0x27CA8, 0x0}, {0x2F9D4, 0x8CAB, 0x0}, {0x2F9D5, 0x8CC1, 0x0}, {0x2F9D6, 0x8D1B, 0x0},
    {0x2F9D7, 0x8D77, 0x0}, {0x2F9D8, 0x27F2F, 0x0}, {0x2F9D9, 0x20804, 0x0}, {0x2F9DA, 0x8DCB, 0x0}, {0x2F9DB, 0x8DBC, 0x0},
    {0x2F9DC, 0x8DF0, 0x0}, {0x2F9DD, 0x208DE, 0x0}, {0x2F9DE, 0x8ED4, 0x0}, {0x2F9DF, 0x8F38, 0x0}, {0x2F9E0, 0x285D2, 0x0},
    {0x2F9E1, 0x285ED, 0x0}, {0x2F9E2, 0x9094, 0x0}, {0x2F9E3, 0x90F1, 0x0}, {0x2F9E4, 0x9111, 0x0}, {0x2F9E5, 0x2872E, 0x0},
    {0x2F9E6, 0x911B, 0x0}, {0x2F9E7, 0x9238, 0x0}, {0x2F9E8, 0x92D7, 0x0}, {0x2F9E9, 0x92D8, 0x0}, {0x2F9EA, 0x927C, 0x0},
    {0x2F9EB, 0x93F9, 0x0}, {0x2F9EC, 0x9415, 0x0}, {0x2F9ED, 0x28BFA, 0x0}, {0x2F9EE, 0x958B, 0x0}, {0x2F9EF, 0x4995, 0x0},
    {0x2F9F0, 0x95B7, 0x0}, {0x2F9F1, 0x28D77, 0x0}, {0x2F9F2, 0x49E6, 0x0}, {0x2F9F3, 0x96C3, 0x0}, {0x2F9F4, 0x5DB2, 0x0},
    {0x2F9F5, 0x9723, 0x0}, {0x2F9F6, 0x29145, 0x0}, {0x2F9F7, 0x2921A, 0x0}, {0x2F9F8, 0x4A6E, 0x0}, {0x2F9F9, 0x4A76, 0x0},
    {0x2F9FA, 0x97E0, 0x0}, {0x2F9FB, 0x2940A, 0x0}, {0x2F9FC, 0x4AB2, 0x0}, {0x2F9FD, 0x29496, 0x0}, {0x2F9FE, 0x980B, 0x0},
    {0x2F9FF, 0x980B, 0x0}, {0x2FA00, 0x9829, 0x0}, {0x2FA01, 0x295B6, 0x0}, {0x2FA02, 0x98E2, 0x0}, {0x2FA03, 0x4B33, 0x0},
    {0x2FA04, 0x9929, 0x0}, {0x2FA05, 0x99A7, 0x0}, {0x2FA06, 0x99C2, 0x0}, {0x2FA07, 0x99FE, 0x0}, {0x2FA08, 0x4BCE, 0x0},
    {0x2FA09, 0x29B30, 0x0}, {0x2FA0A, 0x9B12, 0x0}, {0x2FA0B, 0x9C40, 0x0}, {0x2FA0C, 0x9CFD, 0x0}, {0x2FA0D, 0x4CCE, 0x0},
    {0x2FA0E, 0x4CED, 0x0}, {0x2FA0F, 0x9D67, 0x0}, {0x2FA10, 0x2A0CE, 0x0}, {0x2FA11, 0x4CF8, 0x0}, {0x2FA12, 0x2A105, 0x0},
    {0x2FA13, 0x2A20E, 0x0}, {0x2FA14, 0x2A291, 0x0}, {0x2FA15, 0x9EBB, 0x0}, {0x2FA16, 0x4D56, 0x0}, {0x2FA17, 0x9EF9, 0x0},
    {0x2FA18, 0x9EFE, 0x0}, {0x2FA19, 0x9F05, 0x0}, {0x2FA1A, 0x9F0F, 0x0}, {0x2FA1B, 0x9F16, 0x0}, {0x2FA1C, 0x9F3B, 0x0},
    {0x2FA1D, 0x2A600, 0x0},
};
/* Primary composites (Full_Composition_Exclusion removed): {first, second, composite},
   sorted by (first, second). */
static const uint32_t mbpo__uc_compose[941][3] = {
    {0x3C, 0x338, 0x226E}, {0x3D, 0x338, 0x2260}, {0x3E, 0x338, 0x226F}, {0x41, 0x300, 0xC0}, {0x41, 0x301, 0xC1},
    {0x41, 0x302, 0xC2}, {0x41, 0x303, 0xC3}, {0x41, 0x304, 0x100}, {0x41, 0x306, 0x102}, {0x41, 0x307, 0x226},
    {0x41, 0x308, 0xC4}, {0x41, 0x309, 0x1EA2}, {0x41, 0x30A, 0xC5}, {0x41, 0x30C, 0x1CD}, {0x41, 0x30F, 0x200},
    {0x41, 0x311, 0x202}, {0x41, 0x323, 0x1EA0}, {0x41, 0x325, 0x1E00}, {0x41, 0x328, 0x104}, {0x42, 0x307, 0x1E02},
    {0x42, 0x323, 0x1E04}, {0x42, 0x331, 0x1E06}, {0x43, 0x301, 0x106}, {0x43, 0x302, 0x108}, {0x43, 0x307, 0x10A},
    {0x43, 0x30C, 0x10C}, {0x43, 0x327, 0xC7}, {0x44, 0x307, 0x1E0A}, {0x44, 0x30C, 0x10E}, {0x44, 0x323, 0x1E0C},
    {0x44, 0x327, 0x1E10}, {0x44, 0x32D, 0x1E12}, {0x44, 0x331, 0x1E0E}, {0x45, 0x300, 0xC8}, {0x45, 0x301, 0xC9},
    {0x45, 0x302, 0xCA}, {0x45, 0x303, 0x1EBC}, {0x45, 0x304, 0x112}, {0x45, 0x306, 0x114}, {0x45, 0x307, 0x116},
    {0x45, 0x308, 0xCB}, {0x45, 0x309, 0x1EBA}, {0x45, 0x30C, 0x11A}, {0x45, 0x30F, 0x204}, {0x45, 0x311, 0x206},
    {0x45, 0x323, 0x1EB8}, {0x45, 0x327, 0x228}, {0x45, 0x328, 0x118}, {0x45, 0x32D, 0x1E18}, {0x45, 0x330, 0x1E1A},
    {0x46, 0x307, 0x1E1E}, {0x47, 0x301, 0x1F4}, {0x47, 0x302, 0x11C}, {0x47, 0x304, 0x1E20}, {0x47, 0x306, 0x11E},
    {0x47, 0x307, 0x120}, {0x47, 0x30C, 0x1E6}, {0x47, 0x327, 0x122}, {0x48, 0x302, 0x124}, {0x48, 0x307, 0x1E22},
    {0x48, 0x308, 0x1E26}, {0x48, 0x30C, 0x21E}, {0x48, 0x323, 0x1E24}, {0x48, 0x327, 0x1E28}, {0x48, 0x32E, 0x1E2A},
    {0x49, 0x300, 0xCC}, {0x49, 0x301, 0xCD}, {0x49, 0x302, 0xCE}, {0x49, 0x303, 0x128}, {0x49, 0x304, 0x12A},
    {0x49, 0x306, 0x12C}, {0x49, 0x307, 0x130}, {0x49, 0x308, 0xCF}, {0x49, 0x309, 0x1EC8}, {0x49, 0x30C, 0x1CF},
    {0x49, 0x30F, 0x208}, {0x49, 0x311, 0x20A}, {0x49, 0x323, 0x1ECA}, {0x49, 0x328, 0x12E}, {0x49, 0x330, 0x1E2C},
    {0x4A, 0x302, 0x134}, {0x4B, 0x301, 0x1E30}, {0x4B, 0x30C, 0x1E8}, {0x4B, 0x323, 0x1E32}, {0x4B, 0x327, 0x136},
    {0x4B, 0x331, 0x1E34}, {0x4C, 0x301, 0x139}, {0x4C, 0x30C, 0x13D}, {0x4C, 0x323, 0x1E36}, {0x4C, 0x327, 0x13B},
    {0x4C, 0x32D, 0x1E3C}, {0x4C, 0x331, 0x1E3A}, {0x4D, 0x301, 0x1E3E}, {0x4D, 0x307, 0x1E40}, {0x4D, 0x323, 0x1E42},
    {0x4E, 0x300, 0x1F8}, {0x4E, 0x301, 0x143}, {0x4E, 0x303, 0xD1}, {0x4E, 0x307, 0x1E44}, {0x4E, 0x30C, 0x147},
    {0x4E, 0x323, 0x1E46}, {0x4E, 0x327, 0x145}, {0x4E, 0x32D, 0x1E4A}, {0x4E, 0x331, 0x1E48}, {0x4F, 0x300, 0xD2},
    {0x4F, 0x301, 0xD3}, {0x4F, 0x302, 0xD4}, {0x4F, 0x303, 0xD5}, {0x4F, 0x304, 0x14C}, {0x4F, 0x306, 0x14E},
    {0x4F, 0x307, 0x22E}, {0x4F, 0x308, 0xD6}, {0x4F, 0x309, 0x1ECE}, {0x4F, 0x30B, 0x150}, {0x4F, 0x30C, 0x1D1},
    {0x4F, 0x30F, 0x20C}, {0x4F, 0x311, 0x20E}, {0x4F, 0x31B, 0x1A0}, {0x4F, 0x323, 0x1ECC}, {0x4F, 0x328, 0x1EA},
    {0x50, 0x301, 0x1E54}, {0x50, 0x307, 0x1E56}, {0x52, 0x301, 0x154}, {0x52, 0x307, 0x1E58}, {0x52, 0x30C, 0x158},
    {0x52, 0x30F, 0x210}, {0x52, 0x311, 0x212}, {0x52, 0x323, 0x1E5A}, {0x52, 0x327, 0x156}, {0x52, 0x331, 0x1E5E},
    {0x53, 0x301, 0x15A}, {0x53, 0x302, 0x15C}, {0x53, 0x307, 0x1E60}, {0x53, 0x30C, 0x160}, {0x53, 0x323, 0x1E62},
    {0x53, 0x326, 0x218}, {0x53, 0x327, 0x15E}, {0x54, 0x307, 0x1E6A}, {0x54, 0x30C, 0x164}, {0x54, 0x323, 0x1E6C},
    {0x54, 0x326, 0x21A}, {0x54, 0x327, 0x162}, {0x54, 0x32D, 0x1E70}, {0x54, 0x331, 0x1E6E}, {0x55, 0x300, 0xD9},
    {0x55, 0x301, 0xDA}, {0x55, 0x302, 0xDB}, {0x55, 0x303, 0x168}, {0x55, 0x304, 0x16A}, {0x55, 0x306, 0x16C},
    {0x55, 0x308, 0xDC}, {0x55, 0x309, 0x1EE6}, {0x55, 0x30A, 0x16E}, {0x55, 0x30B, 0x170}, {0x55, 0x30C, 0x1D3},
    {0x55, 0x30F, 0x214}, {0x55, 0x311, 0x216}, {0x55, 0x31B, 0x1AF}, {0x55, 0x323, 0x1EE4}, {0x55, 0x324, 0x1E72},
    {0x55, 0x328, 0x172}, {0x55, 0x32D, 0x1E76}, {0x55, 0x330, 0x1E74}, {0x56, 0x303, 0x1E7C}, {0x56, 0x323, 0x1E7E},
    {0x57, 0x300, 0x1E80}, {0x57, 0x301, 0x1E82}, {0x57, 0x302, 0x174}, {0x57, 0x307, 0x1E86}, {0x57, 0x308, 0x1E84},
    {0x57, 0x323, 0x1E88}, {0x58, 0x307, 0x1E8A}, {0x58, 0x308, 0x1E8C}, {0x59, 0x300, 0x1EF2}, {0x59, 0x301, 0xDD},
    {0x59, 0x302, 0x176}, {0x59, 0x303, 0x1EF8}, {0x59, 0x304, 0x232}, {0x59, 0x307, 0x1E8E}, {0x59, 0x308, 0x178},
    {0x59, 0x309, 0x1EF6}, {0x59, 0x323, 0x1EF4}, {0x5A, 0x301, 0x179}, {0x5A, 0x302, 0x1E90}, {0x5A, 0x307, 0x17B},
    {0x5A, 0x30C, 0x17D}, {0x5A, 0x323, 0x1E92}, {0x5A, 0x331, 0x1E94}, {0x61, 0x300, 0xE0}, {0x61, 0x301, 0xE1},
    {0x61, 0x302, 0xE2}, {0x61, 0x303, 0xE3}, {0x61, 0x304, 0x101}, {0x61, 0x306, 0x103}, {0x61, 0x307, 0x227},
    {0x61, 0x308, 0xE4}, {0x61, 0x309, 0x1EA3}, {0x61, 0x30A, 0xE5}, {0x61, 0x30C, 0x1CE}, {0x61, 0x30F, 0x201},
    {0x61, 0x311, 0x203}, {0x61, 0x323, 0x1EA1}, {0x61, 0x325, 0x1E01}, {0x61, 0x328, 0x105}, {0x62, 0x307, 0x1E03},
    {0x62, 0x323, 0x1E05}, {0x62, 0x331, 0x1E07}, {0x63, 0x301, 0x107}, {0x63, 0x302, 0x109}, {0x63, 0x307, 0x10B},
    {0x63, 0x30C, 0x10D}, {0x63, 0x327, 0xE7}, {0x64, 0x307, 0x1E0B}, {0x64, 0x30C, 0x10F}, {0x64, 0x323, 0x1E0D},
    {0x64, 0x327, 0x1E11}, {0x64, 0x32D, 0x1E13}, {0x64, 0x331, 0x1E0F}, {0x65, 0x300, 0xE8}, {0x65, 0x301, 0xE9},
    {0x65, 0x302, 0xEA}, {0x65, 0x303, 0x1EBD}, {0x65, 0x304, 0x113}, {0x65, 0x306, 0x115}, {0x65, 0x307, 0x117},
    {0x65, 0x308, 0xEB}, {0x65, 0x309, 0x1EBB}, {0x65, 0x30C, 0x11B}, {0x65, 0x30F, 0x205}, {0x65, 0x311, 0x207},
    {0x65, 0x323, 0x1EB9}, {0x65, 0x327, 0x229}, {0x65, 0x328, 0x119}, {0x65, 0x32D, 0x1E19}, {0x65, 0x330, 0x1E1B},
    {0x66, 0x307, 0x1E1F}, {0x67, 0x301, 0x1F5}, {0x67, 0x302, 0x11D}, {0x67, 0x304, 0x1E21}, {0x67, 0x306, 0x11F},
    {0x67, 0x307, 0x121}, {0x67, 0x30C, 0x1E7}, {0x67, 0x327, 0x123}, {0x68, 0x302, 0x125}, {0x68, 0x307, 0x1E23},
    {0x68, 0x308, 0x1E27}, {0x68, 0x30C, 0x21F}, {0x68, 0x323, 0x1E25}, {0x68, 0x327, 0x1E29}, {0x68, 0x32E, 0x1E2B},
    {0x68, 0x331, 0x1E96}, {0x69, 0x300, 0xEC}, {0x69, 0x301, 0xED}, {0x69, 0x302, 0xEE}, {0x69, 0x303, 0x129},
    {0x69, 0x304, 0x12B}, {0x69, 0x306, 0x12D}, {0x69, 0x308, 0xEF}, {0x69, 0x309, 0x1EC9}, {0x69, 0x30C, 0x1D0},
    {0x69, 0x30F, 0x209}, {0x69, 0x311, 0x20B}, {0x69, 0x323, 0x1ECB}, {0x69, 0x328, 0x12F}, {0x69, 0x330, 0x1E2D},
    {0x6A, 0x302, 0x135}, {0x6A, 0x30C, 0x1F0}, {0x6B, 0x301, 0x1E31}, {0x6B, 0x30C, 0x1E9}, {0x6B, 0x323, 0x1E33},
    {0x6B, 0x327, 0x137}, {0x6B, 0x331, 0x1E35}, {0x6C, 0x301, 0x13A}, {0x6C, 0x30C, 0x13E}, {0x6C, 0x323, 0x1E37},
    {0x6C, 0x327, 0x13C}, {0x6C, 0x32D, 0x1E3D}, {0x6C, 0x331, 0x1E3B}, {0x6D, 0x301, 0x1E3F}, {0x6D, 0x307, 0x1E41},
    {0x6D, 0x323, 0x1E43}, {0x6E, 0x300, 0x1F9}, {0x6E, 0x301, 0x144}, {0x6E, 0x303, 0xF1}, {0x6E, 0x307, 0x1E45},
    {0x6E, 0x30C, 0x148}, {0x6E, 0x323, 0x1E47}, {0x6E, 0x327, 0x146}, {0x6E, 0x32D, 0x1E4B}, {0x6E, 0x331, 0x1E49},
    {0x6F, 0x300, 0xF2}, {0x6F, 0x301, 0xF3}, {0x6F, 0x302, 0xF4}, {0x6F, 0x303, 0xF5}, {0x6F, 0x304, 0x14D},
    {0x6F, 0x306, 0x14F}, {0x6F, 0x307, 0x22F}, {0x6F, 0x308, 0xF6}, {0x6F, 0x309, 0x1ECF}, {0x6F, 0x30B, 0x151},
    {0x6F, 0x30C, 0x1D2}, {0x6F, 0x30F, 0x20D}, {0x6F, 0x311, 0x20F}, {0x6F, 0x31B, 0x1A1}, {0x6F, 0x323, 0x1ECD},
    {0x6F, 0x328, 0x1EB}, {0x70, 0x301, 0x1E55}, {0x70, 0x307, 0x1E57}, {0x72, 0x301, 0x155}, {0x72, 0x307, 0x1E59},
    {0x72, 0x30C, 0x159}, {0x72, 0x30F, 0x211}, {0x72, 0x311, 0x213}, {0x72, 0x323, 0x1E5B}, {0x72, 0x327, 0x157},
    {0x72, 0x331, 0x1E5F}, {0x73, 0x301, 0x15B}, {0x73, 0x302, 0x15D}, {0x73, 0x307, 0x1E61}, {0x73, 0x30C, 0x161},
    {0x73, 0x323, 0x1E63}, {0x73, 0x326, 0x219}, {0x73, 0x327, 0x15F}, {0x74, 0x307, 0x1E6B}, {0x74, 0x308, 0x1E97},
    {0x74, 0x30C, 0x165}, {0x74, 0x323, 0x1E6D}, {0x74, 0x326, 0x21B}, {0x74, 0x327, 0x163}, {0x74, 0x32D, 0x1E71},
    {0x74, 0x331, 0x1E6F}, {0x75, 0x300, 0xF9}, {0x75, 0x301, 0xFA}, {0x75, 0x302, 0xFB}, {0x75, 0x303, 0x169},
    {0x75, 0x304, 0x16B}, {0x75, 0x306, 0x16D}, {0x75, 0x308, 0xFC}, {0x75, 0x309, 0x1EE7}, {0x75, 0x30A, 0x16F},
    {0x75, 0x30B, 0x171}, {0x75, 0x30C, 0x1D4}, {0x75, 0x30F, 0x215}, {0x75, 0x311, 0x217}, {0x75, 0x31B, 0x1B0},
    {0x75, 0x323, 0x1EE5}, {0x75, 0x324, 0x1E73}, {0x75, 0x328, 0x173}, {0x75, 0x32D, 0x1E77}, {0x75, 0x330, 0x1E75},
    {0x76, 0x303, 0x1E7D}, {0x76, 0x323, 0x1E7F}, {0x77, 0x300, 0x1E81}, {0x77, 0x301, 0x1E83}, {0x77, 0x302, 0x175},
    {0x77, 0x307, 0x1E87}, {0x77, 0x308, 0x1E85}, {0x77, 0x30A, 0x1E98}, {0x77, 0x323, 0x1E89}, {0x78, 0x307, 0x1E8B},
    {0x78, 0x308, 0x1E8D}, {0x79, 0x300, 0x1EF3}, {0x79, 0x301, 0xFD}, {0x79, 0x302, 0x177}, {0x79, 0x303, 0x1EF9},
    {0x79, 0x304, 0x233}, {0x79, 0x307, 0x1E8F}, {0x79, 0x308, 0xFF}, {0x79, 0x309, 0x1EF7}, {0x79, 0x30A, 0x1E99},
    {0x79, 0x323, 0x1EF5}, {0x7A, 0x301, 0x17A}, {0x7A, 0x302, 0x1E91}, {0x7A, 0x307, 0x17C}, {0x7A, 0x30C, 0x17E},
    {0x7A, 0x323, 0x1E93}, {0x7A, 0x331, 0x1E95}, {0xA8, 0x300, 0x1FED}, {0xA8, 0x301, 0x385}, {0xA8, 0x342, 0x1FC1},
    {0xC2, 0x300, 0x1EA6}, {0xC2, 0x301, 0x1EA4}, {0xC2, 0x303, 0x1EAA}, {0xC2, 0x309, 0x1EA8}, {0xC4, 0x304, 0x1DE},
    {0xC5, 0x301, 0x1FA}, {0xC6, 0x301, 0x1FC}, {0xC6, 0x304, 0x1E2}, {0xC7, 0x301, 0x1E08}, {0xCA, 0x300, 0x1EC0},
    {0xCA, 0x301, 0x1EBE}, {0xCA, 0x303, 0x1EC4}, {0xCA, 0x309, 0x1EC2}, {0xCF, 0x301, 0x1E2E}, {0xD4, 0x300, 0x1ED2},
    {0xD4, 0x301, 0x1ED0}, {0xD4, 0x303, 0x1ED6}, {0xD4, 0x309, 0x1ED4}, {0xD5, 0x301, 0x1E4C}, {0xD5, 0x304, 0x22C},
    {0xD5, 0x308, 0x1E4E}, {0xD6, 0x304, 0x22A}, {0xD8, 0x301, 0x1FE}, {0xDC, 0x300, 0x1DB}, {0xDC, 0x301, 0x1D7},
    {0xDC, 0x304, 0x1D5}, {0xDC, 0x30C, 0x1D9}, {0xE2, 0x300, 0x1EA7}, {0xE2, 0x301, 0x1EA5}, {0xE2, 0x303, 0x1EAB},
    {0xE2, 0x309, 0x1EA9}, {0xE4, 0x304, 0x1DF}, {0xE5, 0x301, 0x1FB}, {0xE6, 0x301, 0x1FD}, {0xE6, 0x304, 0x1E3},
    {0xE7, 0x301, 0x1E09}, {0xEA, 0x300, 0x1EC1}, {0xEA, 0x301, 0x1EBF}, {0xEA, 0x303, 0x1EC5}, {0xEA, 0x309, 0x1EC3},
    {0xEF, 0x301, 0x1E2F}, {0xF4, 0x300, 0x1ED3}, {0xF4, 0x301, 0x1ED1}, {0xF4, 0x303, 0x1ED7}, {0xF4, 0x309, 0x1ED5},
    {0xF5, 0x301, 0x1E4D}, {0xF5, 0x304, 0x22D}, {0xF5, 0x308, 0x1E4F}, {0xF6, 0x304, 0x22B}, {0xF8, 0x301, 0x1FF},
    {0xFC, 0x300, 0x1DC}, {0xFC, 0x301, 0x1D8}, {0xFC, 0x304, 0x1D6}, {0xFC, 0x30C, 0x1DA}, {0x102, 0x300, 0x1EB0},
    {0x102, 0x301, 0x1EAE}, {0x102, 0x303, 0x1EB4}, {0x102, 0x309, 0x1EB2}, {0x103, 0x300, 0x1EB1}, {0x103, 0x301, 0x1EAF},
    {0x103, 0x303, 0x1EB5}, {0x103, 0x309, 0x1EB3}, {0x112, 0x300, 0x1E14}, {0x112, 0x301, 0x1E16}, {0x113, 0x300, 0x1E15},
    {0x113, 0x301, 0x1E17}, {0x14C, 0x300, 0x1E50}, {0x14C, 0x301, 0x1E52}, {0x14D, 0x300, 0x1E51}, {0x14D, 0x301, 0x1E53},
    {0x15A, 0x307, 0x1E64}, {0x15B, 0x307, 0x1E65}, {0x160, 0x307, 0x1E66}, {0x161, 0x307, 0x1E67}, {0x168, 0x301, 0x1E78},
    {0x169, 0x301, 0x1E79}, {0x16A, 0x308, 0x1E7A}, {0x16B, 0x308, 0x1E7B}, {0x17F, 0x307, 0x1E9B}, {0x1A0, 0x300, 0x1EDC},
    {0x1A0, 0x301, 0x1EDA}, {0x1A0, 0x303, 0x1EE0}, {0x1A0, 0x309, 0x1EDE}, {0x1A0, 0x323, 0x1EE2}, {0x1A1, 0x300, 0x1EDD},
    {0x1A1, 0x301, 0x1EDB}, {0x1A1, 0x303, 0x1EE1}, {0x1A1, 0x309, 0x1EDF}, {0x1A1, 0x323, 0x1EE3}, {0x1AF, 0x300, 0x1EEA},
    {0x1AF, 0x301, 0x1EE8}, {0x1AF, 0x303, 0x1EEE}, {0x1AF, 0x309, 0x1EEC}, {0x1AF, 0x323, 0x1EF0}, {0x1B0, 0x300, 0x1EEB},
    {0x1B0, 0x301, 0x1EE9}, {0x1B0, 0x303, 0x1EEF}, {0x1B0, 0x309, 0x1EED}, {0x1B0, 0x323, 0x1EF1}, {0x1B7, 0x30C, 0x1EE},
    {0x1EA, 0x304, 0x1EC}, {0x1EB, 0x304, 0x1ED}, {0x226, 0x304, 0x1E0}, {0x227, 0x304, 0x1E1}, {0x228, 0x306, 0x1E1C},
    {0x229, 0x306, 0x1E1D}, {0x22E, 0x304, 0x230}, {0x22F, 0x304, 0x231}, {0x292, 0x30C, 0x1EF}, {0x391, 0x300, 0x1FBA},
    {0x391, 0x301, 0x386}, {0x391, 0x304, 0x1FB9}, {0x391, 0x306, 0x1FB8}, {0x391, 0x313, 0x1F08}, {0x391, 0x314, 0x1F09},
    {0x391, 0x345, 0x1FBC}, {0x395, 0x300, 0x1FC8}, {0x395, 0x301, 0x388}, {0x395, 0x313, 0x1F18}, {0x395, 0x314, 0x1F19},
    {0x397, 0x300, 0x1FCA}, {0x397, 0x301, 0x389}, {0x397, 0x313, 0x1F28}, {0x397, 0x314, 0x1F29}, {0x397, 0x345, 0x1FCC},
    {0x399, 0x300, 0x1FDA}, {0x399, 0x301, 0x38A}, {0x399, 0x304, 0x1FD9}, {0x399, 0x306, 0x1FD8}, {0x399, 0x308, 0x3AA},
    {0x399, 0x313, 0x1F38}, {0x399, 0x314, 0x1F39}, {0x39F, 0x300, 0x1FF8}, {0x39F, 0x301, 0x38C}, {0x39F, 0x313, 0x1F48},
    {0x39F, 0x314, 0x1F49}, {0x3A1, 0x314, 0x1FEC}, {0x3A5, 0x300, 0x1FEA}, {0x3A5, 0x301, 0x38E}, {0x3A5, 0x304, 0x1FE9},
    {0x3A5, 0x306, 0x1FE8}, {0x3A5, 0x308, 0x3AB}, {0x3A5, 0x314, 0x1F59}, {0x3A9, 0x300, 0x1FFA}, {0x3A9, 0x301, 0x38F},
    {0x3A9, 0x313, 0x1F68}, {0x3A9, 0x314, 0x1F69}, {0x3A9, 0x345, 0x1FFC}, {0x3AC, 0x345, 0x1FB4}, {0x3AE, 0x345, 0x1FC4},
    {0x3B1, 0x300, 0x1F70}, {0x3B1, 0x301, 0x3AC}, {0x3B1, 0x304, 0x1FB1}, {0x3B1, 0x306, 0x1FB0}, {0x3B1, 0x313, 0x1F00},
    {0x3B1, 0x314, 0x1F01}, {0x3B1, 0x342, 0x1FB6}, {0x3B1, 0x345, 0x1FB3}, {0x3B5, 0x300, 0x1F72}, {0x3B5, 0x301, 0x3AD},
    {0x3B5, 0x313, 0x1F10}, {0x3B5, 0x314, 0x1F11}, {0x3B7, 0x300, 0x1F74}, {0x3B7, 0x301, 0x3AE}, {0x3B7, 0x313, 0x1F20},
    {0x3B7, 0x314, 0x1F21}, {0x3B7, 0x342, 0x1FC6}, {0x3B7, 0x345, 0x1FC3}, {0x3B9, 0x300, 0x1F76}, {0x3B9, 0x301, 0x3AF},
    {0x3B9, 0x304, 0x1FD1}, {0x3B9, 0x306, 0x1FD0}, {0x3B9, 0x308, 0x3CA}, {0x3B9, 0x313, 0x1F30}, {0x3B9, 0x314, 0x1F31},
    {0x3B9, 0x342, 0x1FD6}, {0x3BF, 0x300, 0x1F78}, {0x3BF, 0x301, 0x3CC}, {0x3BF, 0x313, 0x1F40}, {0x3BF, 0x314, 0x1F41},
    {0x3C1, 0x313, 0x1FE4}, {0x3C1, 0x314, 0x1FE5}, {0x3C5, 0x300, 0x1F7A}, {0x3C5, 0x301, 0x3CD}, {0x3C5, 0x304, 0x1FE1},
    {0x3C5, 0x306, 0x1FE0}, {0x3C5, 0x308, 0x3CB}, {0x3C5, 0x313, 0x1F50}, {0x3C5, 0x314, 0x1F51}, {0x3C5, 0x342, 0x1FE6},
    {0x3C9, 0x300, 0x1F7C}, {0x3C9, 0x301, 0x3CE}, {0x3C9, 0x313, 0x1F60}, {0x3C9, 0x314, 0x1F61}, {0x3C9, 0x342, 0x1FF6},
    {0x3C9, 0x345, 0x1FF3}, {0x3CA, 0x300, 0x1FD2}, {0x3CA, 0x301, 0x390}, {0x3CA, 0x342, 0x1FD7}, {0x3CB, 0x300, 0x1FE2},
    {0x3CB, 0x301, 0x3B0}, {0x3CB, 0x342, 0x1FE7}, {0x3CE, 0x345, 0x1FF4}, {0x3D2, 0x301, 0x3D3}, {0x3D2, 0x308, 0x3D4},
    {0x406, 0x308, 0x407}, {0x410, 0x306, 0x4D0}, {0x410, 0x308, 0x4D2}, {0x413, 0x301, 0x403}, {0x415, 0x300, 0x400},
    {0x415, 0x306, 0x4D6}, {0x415, 0x308, 0x401}, {0x416, 0x306, 0x4C1}, {0x416, 0x308, 0x4DC}, {0x417, 0x308, 0x4DE},
    {0x418, 0x300, 0x40D}, {0x418, 0x304, 0x4E2}, {0x418, 0x306, 0x419}, {0x418, 0x308, 0x4E4}, {0x41A, 0x301, 0x40C},
    {0x41E, 0x308, 0x4E6}, {0x423, 0x304, 0x4EE}, {0x423, 0x306, 0x40E}, {0x423, 0x308, 0x4F0}, {0x423, 0x30B, 0x4F2},
    {0x427, 0x308, 0x4F4}, {0x42B, 0x308, 0x4F8}, {0x42D, 0x308, 0x4EC}, {0x430, 0x306, 0x4D1}, {0x430, 0x308, 0x4D3},
    {0x433, 0x301, 0x453}, {0x435, 0x300, 0x450}, {0x435, 0x306, 0x4D7}, {0x435, 0x308, 0x451}, {0x436, 0x306, 0x4C2},
    {0x436, 0x308, 0x4DD}, {0x437, 0x308, 0x4DF}, {0x438, 0x300, 0x45D}, {0x438, 0x304, 0x4E3}, {0x438, 0x306, 0x439},
    {0x438, 0x308, 0x4E5}, {0x43A, 0x301, 0x45C}, {0x43E, 0x308, 0x4E7}, {0x443, 0x304, 0x4EF}, {0x443, 0x306, 0x45E},
    {0x443, 0x308, 0x4F1}, {0x443, 0x30B, 0x4F3}, {0x447, 0x308, 0x4F5}, {0x44B, 0x308, 0x4F9}, {0x44D, 0x308, 0x4ED},
    {0x456, 0x308, 0x457}, {0x474, 0x30F, 0x476}, {0x475, 0x30F, 0x477}, {0x4D8, 0x308, 0x4DA}, {0x4D9, 0x308, 0x4DB},
    {0x4E8, 0x308, 0x4EA}, {0x4E9, 0x308, 0x4EB}, {0x627, 0x653, 0x622}, {0x627, 0x654, 0x623}, {0x627, 0x655, 0x625},
    {0x648, 0x654, 0x624}, {0x64A, 0x654, 0x626}, {0x6C1, 0x654, 0x6C2}, {0x6D2, 0x654, 0x6D3}, {0x6D5, 0x654, 0x6C0},
    {0x928, 0x93C, 0x929}, {0x930, 0x93C, 0x931}, {0x933, 0x93C, 0x934}, {0x9C7, 0x9BE, 0x9CB}, {0x9C7, 0x9D7, 0x9CC},
    {0xB47, 0xB3E, 0xB4B}, {0xB47, 0xB56, 0xB48}, {0xB47, 0xB57, 0xB4C}, {0xB92, 0xBD7, 0xB94}, {0xBC6, 0xBBE, 0xBCA},
    {0xBC6, 0xBD7, 0xBCC}, {0xBC7, 0xBBE, 0xBCB}, {0xC46, 0xC56, 0xC48}, {0xCBF, 0xCD5, 0xCC0}, {0xCC6, 0xCC2, 0xCCA},
    {0xCC6, 0xCD5, 0xCC7}, {0xCC6, 0xCD6, 0xCC8}, {0xCCA, 0xCD5, 0xCCB}, {0xD46, 0xD3E, 0xD4A}, {0xD46, 0xD57, 0xD4C},
    {0xD47, 0xD3E, 0xD4B}, {0xDD9, 0xDCA, 0xDDA}, {0xDD9, 0xDCF, 0xDDC}, {0xDD9, 0xDDF, 0xDDE}, {0xDDC, 0xDCA, 0xDDD},
    {0x1025, 0x102E, 0x1026}, {0x1B05, 0x1B35, 0x1B06}, {0x1B07, 0x1B35, 0x1B08}, {0x1B09, 0x1B35, 0x1B0A}, {0x1B0B, 0x1B35, 0x1B0C},
    {0x1B0D, 0x1B35, 0x1B0E}, {0x1B11, 0x1B35, 0x1B12}, {0x1B3A, 0x1B35, 0x1B3B}, {0x1B3C, 0x1B35, 0x1B3D}, {0x1B3E, 0x1B35, 0x1B40},
    {0x1B3F, 0x1B35, 0x1B41}, {0x1B42, 0x1B35, 0x1B43}, {0x1E36, 0x304, 0x1E38}, {0x1E37, 0x304, 0x1E39}, {0x1E5A, 0x304, 0x1E5C},
    {0x1E5B, 0x304, 0x1E5D}, {0x1E62, 0x307, 0x1E68}, {0x1E63, 0x307, 0x1E69}, {0x1EA0, 0x302, 0x1EAC}, {0x1EA0, 0x306, 0x1EB6},
    {0x1EA1, 0x302, 0x1EAD}, {0x1EA1, 0x306, 0x1EB7}, {0x1EB8, 0x302, 0x1EC6}, {0x1EB9, 0x302, 0x1EC7}, {0x1ECC, 0x302, 0x1ED8},
    {0x1ECD, 0x302, 0x1ED9}, {0x1F00, 0x300, 0x1F02}, {0x1F00, 0x301, 0x1F04}, {0x1F00, 0x342, 0x1F06}, {0x1F00, 0x345, 0x1F80},
    {0x1F01, 0x300, 0x1F03}, {0x1F01, 0x301, 0x1F05}, {0x1F01, 0x342, 0x1F07}, {0x1F01, 0x345, 0x1F81}, {0x1F02, 0x345, 0x1F82},
    {0x1F03, 0x345, 0x1F83}, {0x1F04, 0x345, 0x1F84}, {0x1F05, 0x345, 0x1F85}, {0x1F06, 0x345, 0x1F86}, {0x1F07, 0x345, 0x1F87},
    {0x1F08, 0x300, 0x1F0A}, {0x1F08, 0x301, 0x1F0C}, {0x1F08, 0x342, 0x1F0E}, {0x1F08, 0x345, 0x1F88}, {0x1F09, 0x300, 0x1F0B},
    {0x1F09, 0x301, 0x1F0D}, {0x1F09, 0x342, 0x1F0F}, {0x1F09, 0x345, 0x1F89}, {0x1F0A, 0x345, 0x1F8A}, {0x1F0B, 0x345, 0x1F8B},
    {0x1F0C, 0x345, 0x1F8C}, {0x1F0D, 0x345, 0x1F8D}, {0x1F0E, 0x345, 0x1F8E}, {0x1F0F, 0x345, 0x1F8F}, {0x1F10, 0x300, 0x1F12},
    {0x1F10, 0x301, 0x1F14}, {0x1F11, 0x300, 0x1F13}, {0x1F11, 0x301, 0x1F15}, {0x1F18, 0x300, 0x1F1A}, {0x1F18, 0x301, 0x1F1C},
    {0x1F19, 0x300, 0x1F1B}, {0x1F19, 0x301, 0x1F1D}, {0x1F20, 0x300, 0x1F22}, {0x1F20, 0x301, 0x1F24}, {0x1F20, 0x342, 0x1F26},
    {0x1F20, 0x345, 0x1F90}, {0x1F21, 0x300, 0x1F23}, {0x1F21, 0x301, 0x1F25}, {0x1F21, 0x342, 0x1F27}, {0x1F21, 0x345, 0x1F91},
    {0x1F22, 0x345, 0x1F92}, {0x1F23, 0x345, 0x1F93}, {0x1F24, 0x345, 0x1F94}, {0x1F25, 0x345, 0x1F95}, {0x1F26, 0x345, 0x1F96},
    {0x1F27, 0x345, 0x1F97}, {0x1F28, 0x300, 0x1F2A}, {0x1F28, 0x301, 0x1F2C}, {0x1F28, 0x342, 0x1F2E}, {0x1F28, 0x345, 0x1F98},
    {0x1F29, 0x300, 0x1F2B}, {0x1F29, 0x301, 0x1F2D}, {0x1F29, 0x342, 0x1F2F}, {0x1F29, 0x345, 0x1F99}, {0x1F2A, 0x345, 0x1F9A},
    {0x1F2B, 0x345, 0x1F9B}, {0x1F2C, 0x345, 0x1F9C}, {0x1F2D, 0x345, 0x1F9D}, {0x1F2E, 0x345, 0x1F9E}, {0x1F2F, 0x345, 0x1F9F},
    {0x1F30, 0x300, 0x1F32}, {0x1F30, 0x301, 0x1F34}, {0x1F30, 0x342, 0x1F36}, {0x1F31, 0x300, 0x1F33}, {0x1F31, 0x301, 0x1F35},
    {0x1F31, 0x342, 0x1F37}, {0x1F38, 0x300, 0x1F3A}, {0x1F38, 0x301, 0x1F3C}, {0x1F38, 0x342, 0x1F3E}, {0x1F39, 0x300, 0x1F3B},
    {0x1F39, 0x301, 0x1F3D}, {0x1F39, 0x342, 0x1F3F}, {0x1F40, 0x300, 0x1F42}, {0x1F40, 0x301, 0x1F44}, {0x1F41, 0x300, 0x1F43},
    {0x1F41, 0x301, 0x1F45}, {0x1F48, 0x300, 0x1F4A}, {0x1F48, 0x301, 0x1F4C}, {0x1F49, 0x300, 0x1F4B}, {0x1F49, 0x301, 0x1F4D},
    {0x1F50, 0x300, 0x1F52}, {0x1F50, 0x301, 0x1F54}, {0x1F50, 0x342, 0x1F56}, {0x1F51, 0x300, 0x1F53}, {0x1F51, 0x301, 0x1F55},
    {0x1F51, 0x342, 0x1F57}, {0x1F59, 0x300, 0x1F5B}, {0x1F59, 0x301, 0x1F5D}, {0x1F59, 0x342, 0x1F5F}, {0x1F60, 0x300, 0x1F62},
    {0x1F60, 0x301, 0x1F64}, {0x1F60, 0x342, 0x1F66}, {0x1F60, 0x345, 0x1FA0}, {0x1F61, 0x300, 0x1F63}, {0x1F61, 0x301, 0x1F65},
    {0x1F61, 0x342, 0x1F67}, {0x1F61, 0x345, 0x1FA1}, {0x1F62, 0x345, 0x1FA2}, {0x1F63, 0x345, 0x1FA3}, {0x1F64, 0x345, 0x1FA4},
    {0x1F65, 0x345, 0x1FA5}, {0x1F66, 0x345, 0x1FA6}, {0x1F67, 0x345, 0x1FA7}, {0x1F68, 0x300, 0x1F6A}, {0x1F68, 0x301, 0x1F6C},
    {0x1F68, 0x342, 0x1F6E}, {0x1F68, 0x345, 0x1FA8}, {0x1F69, 0x300, 0x1F6B}, {0x1F69, 0x301, 0x1F6D}, {0x1F69, 0x342, 0x1F6F},
    {0x1F69, 0x345, 0x1FA9}, {0x1F6A, 0x345, 0x1FAA}, {0x1F6B, 0x345, 0x1FAB}, {0x1F6C, 0x345, 0x1FAC}, {0x1F6D, 0x345, 0x1FAD},
    {0x1F6E, 0x345, 0x1FAE}, {0x1F6F, 0x345, 0x1FAF}, {0x1F70, 0x345, 0x1FB2}, {0x1F74, 0x345, 0x1FC2}, {0x1F7C, 0x345, 0x1FF2},
    {0x1FB6, 0x345, 0x1FB7}, {0x1FBF, 0x300, 0x1FCD}, {0x1FBF, 0x301, 0x1FCE}, {0x1FBF, 0x342, 0x1FCF}, {0x1FC6, 0x345, 0x1FC7},
    {0x1FF6, 0x345, 0x1FF7}, {0x1FFE, 0x300, 0x1FDD}, {0x1FFE, 0x301, 0x1FDE}, {0x1FFE, 0x342, 0x1FDF}, {0x2190, 0x338, 0x219A},
    {0x2192, 0x338, 0x219B}, {0x2194, 0x338, 0x21AE}, {0x21D0, 0x338, 0x21CD}, {0x21D2, 0x338, 0x21CF}, {0x21D4, 0x338, 0x21CE},
    {0x2203, 0x338, 0x2204}, {0x2208, 0x338, 0x2209}, {0x220B, 0x338, 0x220C}, {0x2223, 0x338, 0x2224}, {0x2225, 0x338, 0x2226},
    {0x223C, 0x338, 0x2241}, {0x2243, 0x338, 0x2244}, {0x2245, 0x338, 0x2247}, {0x2248, 0x338, 0x2249}, {0x224D, 0x338, 0x226D},
    {0x2261, 0x338, 0x2262}, {0x2264, 0x338, 0x2270}, {0x2265, 0x338, 0x2271}, {0x2272, 0x338, 0x2274}, {0x2273, 0x338, 0x2275},
    {0x2276, 0x338, 0x2278}, {0x2277, 0x338, 0x2279}, {0x227A, 0x338, 0x2280}, {0x227B, 0x338, 0x2281}, {0x227C, 0x338, 0x22E0},
    {0x227D, 0x338, 0x22E1}, {0x2282, 0x338, 0x2284}, {0x2283, 0x338, 0x2285}, {0x2286, 0x338, 0x2288}, {0x2287, 0x338, 0x2289},
    {0x2291, 0x338, 0x22E2}, {0x2292, 0x338, 0x22E3}, {0x22A2, 0x338, 0x22AC}, {0x22A8, 0x338, 0x22AD}, {0x22A9, 0x338, 0x22AE},
    {0x22AB, 0x338, 0x22AF}, {0x22B2, 0x338, 0x22EA}, {0x22B3, 0x338, 0x22EB}, {0x22B4, 0x338, 0x22EC}, {0x22B5, 0x338, 0x22ED},
    {0x3046, 0x3099, 0x3094}, {0x304B, 0x3099, 0x304C}, {0x304D, 0x3099, 0x304E}, {0x304F, 0x3099, 0x3050}, {0x3051, 0x3099, 0x3052},
    {0x3053, 0x3099, 0x3054}, {0x3055, 0x3099, 0x3056}, {0x3057, 0x3099, 0x3058}, {0x3059, 0x3099, 0x305A}, {0x305B, 0x3099, 0x305C},
    {0x305D, 0x3099, 0x305E}, {0x305F, 0x3099, 0x3060}, {0x3061, 0x3099, 0x3062}, {0x3064, 0x3099, 0x3065}, {0x3066, 0x3099, 0x3067},
    {0x3068, 0x3099, 0x3069}, {0x306F, 0x3099, 0x3070}, {0x306F, 0x309A, 0x3071}, {0x3072, 0x3099, 0x3073}, {0x3072, 0x309A, 0x3074},
    {0x3075, 0x3099, 0x3076}, {0x3075, 0x309A, 0x3077}, {0x3078, 0x3099, 0x3079}, {0x3078, 0x309A, 0x307A}, {0x307B, 0x3099, 0x307C},
    {0x307B, 0x309A, 0x307D}, {0x309D, 0x3099, 0x309E}, {0x30A6, 0x3099, 0x30F4}, {0x30AB, 0x3099, 0x30AC}, {0x30AD, 0x3099, 0x30AE},
    {0x30AF, 0x3099, 0x30B0}, {0x30B1, 0x3099, 0x30B2}, {0x30B3, 0x3099, 0x30B4}, {0x30B5, 0x3099, 0x30B6}, {0x30B7, 0x3099, 0x30B8},
    {0x30B9, 0x3099, 0x30BA}, {0x30BB, 0x3099, 0x30BC}, {0x30BD, 0x3099, 0x30BE}, {0x30BF, 0x3099, 0x30C0}, {0x30C1, 0x3099, 0x30C2},
    {0x30C4, 0x3099, 0x30C5}, {0x30C6, 0x3099, 0x30C7}, {0x30C8, 0x3099, 0x30C9}, {0x30CF, 0x3099, 0x30D0}, {0x30CF, 0x309A, 0x30D1},
    {0x30D2, 0x3099, 0x30D3}, {0x30D2, 0x309A, 0x30D4}, {0x30D5, 0x3099, 0x30D6}, {0x30D5, 0x309A, 0x30D7}, {0x30D8, 0x3099, 0x30D9},
    {0x30D8, 0x309A, 0x30DA}, {0x30DB, 0x3099, 0x30DC}, {0x30DB, 0x309A, 0x30DD}, {0x30EF, 0x3099, 0x30F7}, {0x30F0, 0x3099, 0x30F8},
    {0x30F1, 0x3099, 0x30F9}, {0x30F2, 0x3099, 0x30FA}, {0x30FD, 0x3099, 0x30FE}, {0x11099, 0x110BA, 0x1109A}, {0x1109B, 0x110BA, 0x1109C},
    {0x110A5, 0x110BA, 0x110AB}, {0x11131, 0x11127, 0x1112E}, {0x11132, 0x11127, 0x1112F}, {0x11347, 0x1133E, 0x1134B}, {0x11347, 0x11357, 0x1134C},
    {0x114B9, 0x114B0, 0x114BC}, {0x114B9, 0x114BA, 0x114BB}, {0x114B9, 0x114BD, 0x114BE}, {0x115B8, 0x115AF, 0x115BA}, {0x115B9, 0x115AF, 0x115BB},
    {0x11935, 0x11930, 0x11938},
};
/* END GENERATED-UNICODE */

/* Decode the valid UTF-8 sequence at s; returns its length, or 0 if invalid. */
static int mbpo__utf8_get(const unsigned char *s, const unsigned char *end, uint32_t *cp) {
    int n = mbpo__utf8_valid(s, end), i;
    uint32_t v;
    if (n <= 1) { *cp = s[0]; return n; }
    v = s[0] & (0x7Fu >> n);
    for (i = 1; i < n; i++) v = (v << 6) | (s[i] & 63u);
    *cp = v;
    return n;
}

/* Binary search in a sorted table of {first, last, ...} rows of `width` words. */
static const uint32_t *mbpo__uc_range(const uint32_t *rows, size_t n, size_t width, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = rows + mid * width;
        if (cp < r[0]) hi = mid;
        else if (cp > r[1]) lo = mid + 1;
        else return r;
    }
    return NULL;
}
#define MBPO__UC_COUNT(t) (sizeof(t) / sizeof((t)[0]))

/* The character classes the pre-tokenizer regex distinguishes. */
enum { MBPO__CL_OTHER = 0, MBPO__CL_LETTER = 1, MBPO__CL_NUMBER = 2, MBPO__CL_SPACE = 3,
       MBPO__CL_NEWLINE = 4 /* \r or \n: whitespace that the regex also names */ };
static int mbpo__uc_class(uint32_t cp) {
    if (cp == '\r' || cp == '\n') return MBPO__CL_NEWLINE;
    if (mbpo__uc_range(mbpo__uc_space[0], MBPO__UC_COUNT(mbpo__uc_space), 2, cp)) return MBPO__CL_SPACE;
    if (mbpo__uc_range(mbpo__uc_letter[0], MBPO__UC_COUNT(mbpo__uc_letter), 2, cp)) return MBPO__CL_LETTER;
    if (mbpo__uc_range(mbpo__uc_number[0], MBPO__UC_COUNT(mbpo__uc_number), 2, cp)) return MBPO__CL_NUMBER;
    return MBPO__CL_OTHER;
}
static int mbpo__uc_ccc(uint32_t cp) {
    const uint32_t *r;
    if (cp < 0x300) return 0;
    r = mbpo__uc_range(mbpo__uc_ccc_ranges[0], MBPO__UC_COUNT(mbpo__uc_ccc_ranges), 3, cp);
    return r ? (int)r[2] : 0;
}
/* Row {cp, first, second} of a table sorted by its first one or two words, or NULL. */
static const uint32_t *mbpo__uc_find(const uint32_t *rows, size_t n, uint32_t a, uint32_t b, int keys) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *r = rows + mid * 3;
        int c = a < r[0] ? -1 : a > r[0] ? 1 : keys == 1 ? 0 : b < r[1] ? -1 : b > r[1] ? 1 : 0;
        if (c < 0) hi = mid;
        else if (c > 0) lo = mid + 1;
        else return r;
    }
    return NULL;
}

/* Hangul syllables decompose and compose by arithmetic (Unicode 3.12), not by table. */
#define MBPO__HANGUL_S 0xAC00u
#define MBPO__HANGUL_L 0x1100u
#define MBPO__HANGUL_V 0x1161u
#define MBPO__HANGUL_T 0x11A7u
#define MBPO__HANGUL_NV 21u
#define MBPO__HANGUL_NT 28u
#define MBPO__HANGUL_COUNT 11172u

/* Append the full canonical decomposition of cp to out[*n] (at most 4 code points per
   step of recursion; the longest canonical decomposition in Unicode 15 has 4). */
static void mbpo__nfd_push(uint32_t cp, uint32_t *out, size_t *n) {
    const uint32_t *r;
    if (cp - MBPO__HANGUL_S < MBPO__HANGUL_COUNT) {
        uint32_t s = cp - MBPO__HANGUL_S, t = s % MBPO__HANGUL_NT;
        out[(*n)++] = MBPO__HANGUL_L + s / (MBPO__HANGUL_NV * MBPO__HANGUL_NT);
        out[(*n)++] = MBPO__HANGUL_V + (s % (MBPO__HANGUL_NV * MBPO__HANGUL_NT)) / MBPO__HANGUL_NT;
        if (t) out[(*n)++] = MBPO__HANGUL_T + t;
        return;
    }
    r = cp < 0xC0 ? NULL : mbpo__uc_find(mbpo__uc_decomp[0], MBPO__UC_COUNT(mbpo__uc_decomp), cp, 0, 1);
    if (!r) { out[(*n)++] = cp; return; }
    mbpo__nfd_push(r[1], out, n);
    if (r[2]) mbpo__nfd_push(r[2], out, n);
}
static uint32_t mbpo__nfc_pair(uint32_t a, uint32_t b) {
    const uint32_t *r;
    if (a - MBPO__HANGUL_L < 19 && b - MBPO__HANGUL_V < MBPO__HANGUL_NV)
        return MBPO__HANGUL_S + ((a - MBPO__HANGUL_L) * MBPO__HANGUL_NV + (b - MBPO__HANGUL_V)) * MBPO__HANGUL_NT;
    if (a - MBPO__HANGUL_S < MBPO__HANGUL_COUNT && (a - MBPO__HANGUL_S) % MBPO__HANGUL_NT == 0 &&
        b - MBPO__HANGUL_T - 1 < MBPO__HANGUL_NT - 1)
        return a + (b - MBPO__HANGUL_T);
    r = mbpo__uc_find(mbpo__uc_compose[0], MBPO__UC_COUNT(mbpo__uc_compose), a, b, 2);
    return r ? r[2] : 0;
}

/* Unicode NFC of valid UTF-8 text (UAX #15: decompose, order marks by combining class,
   compose). Text whose code points are all below U+0300 is already NFC and is copied;
   otherwise the result goes to a scratch buffer owned by *buf (grown as needed). */
typedef struct { uint32_t *cp, *tmp; size_t cap; char *out; size_t out_cap; } mbpo__nfc_buf;
static int mbpo__nfc(mbpo__nfc_buf *b, const char *text, size_t len, int64_t base, const char **out, size_t *out_len) {
    const unsigned char *s = (const unsigned char *)text, *end = s + len;
    size_t i, n = 0, need = 0, starter;
    int last_ccc;
    for (i = 0; i < len && s[i] < 0xCC; i++) {}   /* 0xCC leads U+0300, the first mark */
    if (i == len) { *out = text; *out_len = len; return 1; }
    /* NFD: every code point expands to at most 4 (checked by the generator's data). */
    if (!mbpo__mul_size(len + 1, 4 * sizeof(uint32_t), &need)) return 0;
    if (b->cap < need) {
        mbpo_free(b->cp); mbpo_free(b->tmp);
        b->cp = (uint32_t *)mbpo__alloc(need);
        b->tmp = (uint32_t *)mbpo__alloc(need);
        if (!b->cp || !b->tmp) { b->cap = 0; return 0; }
        b->cap = need;
    }
    while (s < end) {
        uint32_t cp;
        int k = mbpo__utf8_get(s, end, &cp);
        if (k == 0) return mbpo__fail("invalid UTF-8 at byte %lld", (long long)(base + (s - (const unsigned char *)text)));
        mbpo__nfd_push(cp, b->cp, &n);
        s += k;
    }
    /* Canonical ordering: sort each run of marks (nonzero classes) by class, stably - by
       insertion when short, by counting when long (an insertion sort is quadratic, and
       text from strangers can hold a million marks in a row). */
    for (i = 0; i < n; ) {
        size_t start = i, end, j, k;
        if (mbpo__uc_ccc(b->cp[i]) == 0) { i++; continue; }
        for (end = i + 1; end < n && mbpo__uc_ccc(b->cp[end]) != 0; end++) {}
        if (end - start <= 32) {
            for (j = start + 1; j < end; j++) {
                uint32_t v = b->cp[j];
                int c = mbpo__uc_ccc(v);
                for (k = j; k > start && mbpo__uc_ccc(b->cp[k - 1]) > c; k--) b->cp[k] = b->cp[k - 1];
                b->cp[k] = v;
            }
        } else {
            size_t count[257];
            memset(count, 0, sizeof count);
            for (j = start; j < end; j++) count[mbpo__uc_ccc(b->cp[j]) + 1]++;
            for (k = 1; k < 257; k++) count[k] += count[k - 1];
            for (j = start; j < end; j++) b->tmp[count[mbpo__uc_ccc(b->cp[j])]++] = b->cp[j];
            memcpy(b->cp + start, b->tmp, (end - start) * sizeof(uint32_t));
        }
        i = end;
    }
    /* Canonical composition: each mark joins the last starter unless a mark of the same or
       higher class stands between them (blocked). */
    if (n) {
        size_t w = 1;
        starter = 0;
        last_ccc = mbpo__uc_ccc(b->cp[0]) ? 256 : 0;   /* a leading mark never starts a pair */
        if (last_ccc) starter = (size_t)-1;
        for (i = 1; i < n; i++) {
            uint32_t cp = b->cp[i], comp = 0;
            int c = mbpo__uc_ccc(cp);
            if (starter != (size_t)-1 && (last_ccc < c || (last_ccc == 0 && w - 1 == starter)))
                comp = mbpo__nfc_pair(b->cp[starter], cp);
            if (comp) { b->cp[starter] = comp; continue; }
            if (c == 0) { starter = w; last_ccc = 0; }
            else last_ccc = c;
            b->cp[w++] = cp;
        }
        n = w;
    }
    if (!mbpo__mul_size(n, 4, &need)) return 0;
    if (b->out_cap < need + 1) {
        mbpo_free(b->out);
        if (!(b->out = (char *)mbpo__alloc(need + 1))) { b->out_cap = 0; return 0; }
        b->out_cap = need + 1;
    }
    for (i = 0, *out_len = 0; i < n; i++) *out_len += mbpo__utf8_put(b->out + *out_len, b->cp[i]);
    *out = b->out;
    return 1;
}

/* ------------------------------------------------------------------ 2. inputs: tokenizer */

/* Byte-level BPE (docs/QWEN2VL.md 7). Token strings in tokenizer.json spell bytes with the GPT-2
   byte-to-unicode table; on load every token is turned back into its raw bytes, so encoding
   and decoding work on bytes and the table is never consulted again. */

static uint64_t mbpo__hash_bytes(const void *p, size_t n) {   /* FNV-1a, then a mix */
    const unsigned char *s = (const unsigned char *)p;
    uint64_t h = 0xCBF29CE484222325ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}
static uint64_t mbpo__hash_u64(uint64_t x) {
    x ^= x >> 33; x *= 0xFF51AFD7ED558CCDull; x ^= x >> 33; x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}
/* Code point of byte b in the GPT-2 byte-level alphabet: printable Latin-1 bytes stand for
   themselves, the other 68 take U+0100.. in byte order. */
static uint32_t mbpo__byte_char(unsigned b) {
    unsigned k = 0, i;
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    for (i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE)) k++;
    return 0x100 + k;
}

typedef struct { char *bytes; int32_t len; int32_t id; int special; } mbpo__added_token;
struct mbpo_tokenizer {
    int64_t n_ids;               /* 1 + the largest id (vocab and added tokens) */
    char **token;                /* [n_ids] raw bytes of each id (NULL for unused ids) */
    int32_t *token_len;          /* [n_ids] */
    unsigned char *is_special;   /* [n_ids] */
    unsigned char *is_added;     /* [n_ids] */
    int32_t byte_id[256];        /* id of each single byte */
    /* vocab: raw bytes -> id (open addressing over ids, compared against token[]) */
    int32_t *vocab_slots; size_t vocab_mask;
    /* merges: (left id, right id) -> rank << 32 | merged id */
    uint64_t *merge_keys, *merge_vals; size_t merge_mask;
    int64_t n_merges;
    /* added tokens, matched on the raw text before anything else */
    mbpo__added_token *added; int n_added;
    unsigned char added_first[256];
    /* word cache: pre-token bytes -> its ids (HF caches words the same way) */
    uint64_t *cache_hash; int64_t *cache_at; size_t cache_mask, cache_used;
    char *cache_arena; size_t cache_arena_n, cache_arena_cap;
    /* scratch for one encode call */
    mbpo__nfc_buf nfc;
    unsigned char class16[65536];   /* pre-tokenizer class of every BMP code point */
    unsigned char *cls; uint32_t *cps; size_t *cp_at; size_t cls_cap, cps_cap, cp_at_cap;
    int32_t *sym_id, *sym_prev, *sym_next, *sym_len; size_t sym_cap;
    uint64_t *heap; size_t heap_cap;
    int32_t *out; int64_t out_n, out_cap;
    int64_t *out_end; int64_t out_end_cap;   /* end byte of each id, when asked for */
    char *path;
};

static int32_t mbpo__vocab_find(const mbpo_tokenizer *t, const char *s, size_t n) {
    size_t i = (size_t)mbpo__hash_bytes(s, n) & t->vocab_mask;
    for (;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        if ((size_t)t->token_len[id] == n && memcmp(t->token[id], s, n) == 0) return id;
    }
}
static void mbpo__vocab_put(mbpo_tokenizer *t, int32_t id) {
    size_t i = (size_t)mbpo__hash_bytes(t->token[id], (size_t)t->token_len[id]) & t->vocab_mask;
    while (t->vocab_slots[i] >= 0) i = (i + 1) & t->vocab_mask;
    t->vocab_slots[i] = id;
}
static int mbpo__merge_find(const mbpo_tokenizer *t, int32_t a, int32_t b, uint64_t *val) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = (size_t)mbpo__hash_u64(key) & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        if (t->merge_keys[i] == UINT64_MAX) return 0;
        if (t->merge_keys[i] == key) { *val = t->merge_vals[i]; return 1; }
    }
}

/* Token string in the byte-level alphabet -> raw bytes (in place; never longer). 0 if a
   character is outside the alphabet. */
static int mbpo__unbyte(char *s, size_t n, size_t *out_n, const int16_t *char_byte) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t w = 0;
    while (p < end) {
        uint32_t cp;
        int k = mbpo__utf8_get(p, end, &cp);
        if (k == 0 || cp >= 0x144 || char_byte[cp] < 0) return 0;
        s[w++] = (char)char_byte[cp];
        p += k;
    }
    *out_n = w;
    return 1;
}

static size_t mbpo__pow2_above(size_t n) { size_t c = 16; while (c < 2 * n) c *= 2; return c; }

/* The pieces of tokenizer.json this reader implements; anything else is refused with a
   message, because silently tokenizing differently would corrupt every log-prob. */
static const char mbpo__qwen2_pattern[] = MBPO_QWEN2_PATTERN;
static int mbpo__tok_check_pipeline(const mbpo_json *root, const char *path) {
    const mbpo_json *norm = mbpo_json_get(root, "normalizer"), *pre = mbpo_json_get(root, "pre_tokenizer");
    const mbpo_json *model = mbpo_json_get(root, "model"), *v, *items;
    size_t i;
    int have_split = 0, have_bytelevel = 0;
#define MBPO__STR_IS(j, s) ((j) && (j)->type == MBPO_JSON_STRING && strcmp((j)->string, (s)) == 0)
    if (!norm || norm->type != MBPO_JSON_OBJECT || !MBPO__STR_IS(mbpo_json_get(norm, "type"), "NFC"))
        return mbpo__fail("%s: normalizer must be {\"type\": \"NFC\"} (the Qwen2 tokenizer's)", path);
    if (!pre || pre->type != MBPO_JSON_OBJECT || !MBPO__STR_IS(mbpo_json_get(pre, "type"), "Sequence") ||
        !(items = mbpo_json_get(pre, "pretokenizers")) || items->type != MBPO_JSON_ARRAY)
        return mbpo__fail("%s: pre_tokenizer must be a Sequence of Split (Qwen2 regex) and ByteLevel", path);
    for (i = 0; i < items->count; i++) {
        const mbpo_json *p = &items->items[i], *pat;
        if (MBPO__STR_IS(mbpo_json_get(p, "type"), "Split") && i == 0 &&
            (pat = mbpo_json_get(p, "pattern")) && pat->type == MBPO_JSON_OBJECT &&
            MBPO__STR_IS(mbpo_json_get(pat, "Regex"), mbpo__qwen2_pattern) &&
            MBPO__STR_IS(mbpo_json_get(p, "behavior"), "Isolated") &&
            (v = mbpo_json_get(p, "invert")) && v->type == MBPO_JSON_FALSE)
            have_split = 1;
        else if (MBPO__STR_IS(mbpo_json_get(p, "type"), "ByteLevel") && i == 1 &&
                 (v = mbpo_json_get(p, "add_prefix_space")) && v->type == MBPO_JSON_FALSE &&
                 (v = mbpo_json_get(p, "use_regex")) && v->type == MBPO_JSON_FALSE)
            have_bytelevel = 1;
        else
            return mbpo__fail("%s: pre_tokenizer item %zu is not supported (expected Split with the "
                              "Qwen2 regex, then ByteLevel without prefix space or regex)", path, i);
    }
    if (!have_split || !have_bytelevel || items->count != 2)
        return mbpo__fail("%s: pre_tokenizer must be exactly [Split(Qwen2 regex), ByteLevel]", path);
    if (!model || model->type != MBPO_JSON_OBJECT || !MBPO__STR_IS(mbpo_json_get(model, "type"), "BPE"))
        return mbpo__fail("%s: model.type must be \"BPE\"", path);
    if ((v = mbpo_json_get(model, "dropout")) && v->type != MBPO_JSON_NULL)
        return mbpo__fail("%s: BPE dropout is not supported", path);
    if ((v = mbpo_json_get(model, "byte_fallback")) && v->type == MBPO_JSON_TRUE)
        return mbpo__fail("%s: byte_fallback BPE is not supported (byte-level BPE needs none)", path);
    if ((v = mbpo_json_get(model, "ignore_merges")) && v->type == MBPO_JSON_TRUE)
        return mbpo__fail("%s: ignore_merges is not supported", path);
    if (((v = mbpo_json_get(model, "continuing_subword_prefix")) && v->type == MBPO_JSON_STRING && v->len) ||
        ((v = mbpo_json_get(model, "end_of_word_suffix")) && v->type == MBPO_JSON_STRING && v->len))
        return mbpo__fail("%s: subword prefixes/suffixes are not supported", path);
#undef MBPO__STR_IS
    return 1;
}

MBPODEF void mbpo_tokenizer_free(mbpo_tokenizer *t) {
    int64_t i;
    if (!t) return;
    if (t->token) for (i = 0; i < t->n_ids; i++) mbpo_free(t->token[i]);
    for (i = 0; i < t->n_added; i++) mbpo_free(t->added[i].bytes);
    mbpo_free(t->token); mbpo_free(t->token_len); mbpo_free(t->is_special); mbpo_free(t->is_added);
    mbpo_free(t->vocab_slots); mbpo_free(t->merge_keys); mbpo_free(t->merge_vals);
    mbpo_free(t->added); mbpo_free(t->cache_hash); mbpo_free(t->cache_at); mbpo_free(t->cache_arena);
    mbpo_free(t->nfc.cp); mbpo_free(t->nfc.tmp); mbpo_free(t->nfc.out);
    mbpo_free(t->cls); mbpo_free(t->cps); mbpo_free(t->cp_at);
    mbpo_free(t->sym_id); mbpo_free(t->sym_prev); mbpo_free(t->sym_next); mbpo_free(t->sym_len);
    mbpo_free(t->heap); mbpo_free(t->out); mbpo_free(t->out_end); mbpo_free(t->path);
    mbpo_free(t);
}

#define MBPO__CACHE_SLOTS 65536       /* words kept in the cache (cleared when half full) */
#define MBPO__CACHE_ARENA (4u << 20)   /* bytes for them (cleared when full) */

MBPODEF mbpo_tokenizer *mbpo_tokenizer_load(const char *path) {
    mbpo_json *root = mbpo_json_parse_file(path);
    const mbpo_json *model, *vocab, *merges, *added;
    mbpo_tokenizer *t = NULL;
    int16_t char_byte[0x144];
    int64_t max_id = -1;
    size_t i;
    unsigned b;
    if (!root) return NULL;
    if (root->type != MBPO_JSON_OBJECT) { mbpo__fail("%s: not a JSON object", path); goto fail; }
    if (!mbpo__tok_check_pipeline(root, path)) goto fail;
    model = mbpo_json_get(root, "model");
    vocab = mbpo_json_get(model, "vocab");
    merges = mbpo_json_get(model, "merges");
    added = mbpo_json_get(root, "added_tokens");
    if (!vocab || vocab->type != MBPO_JSON_OBJECT || !vocab->count)
        { mbpo__fail("%s: model.vocab must be a non-empty object", path); goto fail; }
    if (!merges || merges->type != MBPO_JSON_ARRAY)
        { mbpo__fail("%s: model.merges must be an array", path); goto fail; }
    if (added && added->type != MBPO_JSON_ARRAY && added->type != MBPO_JSON_NULL)
        { mbpo__fail("%s: added_tokens must be an array", path); goto fail; }
    for (i = 0; i < vocab->count; i++) {
        const mbpo_json *v = &vocab->items[i];
        if (!v->is_int || v->integer < 0 || v->integer >= INT32_MAX)
            { mbpo__fail("%s: vocab entry \"%s\" has no valid id", path, vocab->keys[i]); goto fail; }
        if (v->integer > max_id) max_id = v->integer;
    }
    if (added && added->type == MBPO_JSON_ARRAY)
        for (i = 0; i < added->count; i++) {
            const mbpo_json *id = mbpo_json_get(&added->items[i], "id");
            const mbpo_json *content = mbpo_json_get(&added->items[i], "content");
            if (!id || !id->is_int || id->integer < 0 || id->integer >= INT32_MAX || !content ||
                content->type != MBPO_JSON_STRING || content->len == 0)
                { mbpo__fail("%s: added_tokens[%zu] needs an integer id and a non-empty content", path, i); goto fail; }
            if (id->integer > max_id) max_id = id->integer;
        }
    if (!(t = (mbpo_tokenizer *)mbpo__calloc(1, sizeof *t))) goto fail;
    t->n_ids = max_id + 1;
    t->path = mbpo__strdup(path);
    t->token = (char **)mbpo__calloc((size_t)t->n_ids, sizeof(char *));
    t->token_len = (int32_t *)mbpo__calloc((size_t)t->n_ids, sizeof(int32_t));
    t->is_special = (unsigned char *)mbpo__calloc((size_t)t->n_ids, 1);
    t->is_added = (unsigned char *)mbpo__calloc((size_t)t->n_ids, 1);
    t->vocab_mask = mbpo__pow2_above((size_t)t->n_ids) - 1;
    t->vocab_slots = (int32_t *)mbpo__alloc((t->vocab_mask + 1) * sizeof(int32_t));
    if (!t->path || !t->token || !t->token_len || !t->is_special || !t->is_added || !t->vocab_slots) goto fail;
    memset(t->vocab_slots, 0xFF, (t->vocab_mask + 1) * sizeof(int32_t));
    for (i = 0; i < 0x144; i++) char_byte[i] = -1;
    for (b = 0; b < 256; b++) char_byte[mbpo__byte_char(b)] = (int16_t)b;
    for (b = 0; b < 256; b++) t->byte_id[b] = -1;
    /* vocabulary */
    for (i = 0; i < vocab->count; i++) {
        int32_t id = (int32_t)vocab->items[i].integer;
        size_t n = strlen(vocab->keys[i]);
        char *s = (char *)mbpo__alloc(n + 1);
        if (!s) goto fail;
        memcpy(s, vocab->keys[i], n + 1);
        if (!mbpo__unbyte(s, n, &n, char_byte)) {
            mbpo_free(s);
            mbpo__fail("%s: vocab token \"%s\" (id %d) is not in the byte-level alphabet", path, vocab->keys[i], id);
            goto fail;
        }
        if (t->token[id] || mbpo__vocab_find(t, s, n) >= 0) {
            mbpo_free(s);
            mbpo__fail("%s: vocab id %d or token \"%s\" appears twice", path, id, vocab->keys[i]);
            goto fail;
        }
        t->token[id] = s; t->token_len[id] = (int32_t)n;
        mbpo__vocab_put(t, id);
        if (n == 1) t->byte_id[(unsigned char)s[0]] = id;
    }
    for (b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) { mbpo__fail("%s: byte 0x%02X has no token (a byte-level vocab has all 256)", path, b); goto fail; }
    /* merges, in rank order; "a b" strings (older files) or ["a", "b"] pairs (newer) */
    t->n_merges = (int64_t)merges->count;
    t->merge_mask = mbpo__pow2_above(merges->count) - 1;
    t->merge_keys = (uint64_t *)mbpo__alloc((t->merge_mask + 1) * sizeof(uint64_t));
    t->merge_vals = (uint64_t *)mbpo__alloc((t->merge_mask + 1) * sizeof(uint64_t));
    if (!t->merge_keys || !t->merge_vals) goto fail;
    memset(t->merge_keys, 0xFF, (t->merge_mask + 1) * sizeof(uint64_t));
    for (i = 0; i < merges->count; i++) {
        const mbpo_json *m = &merges->items[i];
        char buf[1024];
        const char *left, *right;
        size_t nl, nr;
        int32_t a, c, merged;
        uint64_t key, dummy;
        size_t slot;
        if (m->type == MBPO_JSON_STRING) {
            const char *sp = strchr(m->string, ' ');
            if (!sp || strchr(sp + 1, ' ') || m->len >= sizeof buf) goto bad_merge;
            left = m->string; nl = (size_t)(sp - m->string); right = sp + 1; nr = m->len - nl - 1;
        } else if (m->type == MBPO_JSON_ARRAY && m->count == 2 && m->items[0].type == MBPO_JSON_STRING &&
                   m->items[1].type == MBPO_JSON_STRING && m->items[0].len + m->items[1].len < sizeof buf) {
            left = m->items[0].string; nl = m->items[0].len; right = m->items[1].string; nr = m->items[1].len;
        } else goto bad_merge;
        memcpy(buf, left, nl); memcpy(buf + nl, right, nr); buf[nl + nr] = 0;
        {   /* ids of both halves and of their concatenation, all in raw bytes */
            char lb[1024], rb[1024];
            size_t nlb, nrb, nm;
            memcpy(lb, left, nl); memcpy(rb, right, nr);
            if (!mbpo__unbyte(lb, nl, &nlb, char_byte) || !mbpo__unbyte(rb, nr, &nrb, char_byte) ||
                !mbpo__unbyte(buf, nl + nr, &nm, char_byte)) goto bad_merge;
            a = mbpo__vocab_find(t, lb, nlb);
            c = mbpo__vocab_find(t, rb, nrb);
            merged = mbpo__vocab_find(t, buf, nm);
        }
        if (a < 0 || c < 0 || merged < 0) {
            mbpo__fail("%s: merges[%zu] \"%.*s\" + \"%.*s\": a part or the result is not in the vocab",
                       path, i, (int)nl, left, (int)nr, right);
            goto fail;
        }
        (void)dummy;
        key = (uint64_t)(uint32_t)a << 32 | (uint32_t)c;
        slot = (size_t)mbpo__hash_u64(key) & t->merge_mask;
        /* a repeated merge takes its last rank, as in HF (a later map insert wins) */
        while (t->merge_keys[slot] != UINT64_MAX && t->merge_keys[slot] != key) slot = (slot + 1) & t->merge_mask;
        t->merge_keys[slot] = key;
        t->merge_vals[slot] = (uint64_t)i << 32 | (uint32_t)merged;
        continue;
    bad_merge:
        mbpo__fail("%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"] of byte-level tokens", path, i);
        goto fail;
    }
    /* added tokens: raw text, never normalised or split */
    if (added && added->type == MBPO_JSON_ARRAY && added->count) {
        if (!(t->added = (mbpo__added_token *)mbpo__calloc(added->count, sizeof(mbpo__added_token)))) goto fail;
        for (i = 0; i < added->count; i++) {
            const mbpo_json *e = &added->items[i], *v;
            const mbpo_json *content = mbpo_json_get(e, "content");
            int32_t id = (int32_t)mbpo_json_get(e, "id")->integer;
            static const char *const flags[4] = { "lstrip", "rstrip", "single_word", "normalized" };
            int k;
            for (k = 0; k < 4; k++)   /* normalized: HF would match it on the NFC text */
                if ((v = mbpo_json_get(e, flags[k])) && v->type == MBPO_JSON_TRUE) {
                    mbpo__fail("%s: added token \"%s\" sets %s, which is not supported", path, content->string, flags[k]);
                    goto fail;
                }
            if (t->token[id] && ((size_t)t->token_len[id] != content->len ||
                                 memcmp(t->token[id], content->string, content->len) != 0)) {
                mbpo__fail("%s: added token \"%s\" reuses id %d of another token", path, content->string, id);
                goto fail;
            }
            if (!t->token[id]) {
                if (!(t->token[id] = (char *)mbpo__alloc(content->len + 1))) goto fail;
                memcpy(t->token[id], content->string, content->len + 1);
                t->token_len[id] = (int32_t)content->len;
            }
            t->is_special[id] = (v = mbpo_json_get(e, "special")) && v->type == MBPO_JSON_TRUE;
            t->is_added[id] = 1;
            if (!(t->added[t->n_added].bytes = (char *)mbpo__alloc(content->len + 1))) goto fail;
            memcpy(t->added[t->n_added].bytes, content->string, content->len + 1);
            t->added[t->n_added].len = (int32_t)content->len;
            t->added[t->n_added].id = id;
            t->added[t->n_added].special = t->is_special[id];
            t->added_first[(unsigned char)content->string[0]] = 1;
            t->n_added++;
        }
    }
    for (i = 0; i < 65536; i++) t->class16[i] = (unsigned char)mbpo__uc_class((uint32_t)i);
    t->cache_mask = MBPO__CACHE_SLOTS - 1;
    t->cache_hash = (uint64_t *)mbpo__alloc(MBPO__CACHE_SLOTS * sizeof(uint64_t));
    t->cache_at = (int64_t *)mbpo__alloc(MBPO__CACHE_SLOTS * sizeof(int64_t));
    t->cache_arena = (char *)mbpo__alloc(MBPO__CACHE_ARENA);
    t->cache_arena_cap = MBPO__CACHE_ARENA;
    if (!t->cache_hash || !t->cache_at || !t->cache_arena) goto fail;
    memset(t->cache_at, 0xFF, MBPO__CACHE_SLOTS * sizeof(int64_t));
    mbpo_json_free(root);
    return t;
fail:
    mbpo_json_free(root);
    mbpo_tokenizer_free(t);
    return NULL;
}

/* Grow a scratch array to hold at least n items of `size` bytes (contents not kept). */
static int mbpo__scratch(void **p, size_t *cap, size_t n, size_t size) {
    size_t bytes = 0;
    if (n <= *cap) return 1;
    if (!mbpo__mul_size(n + n / 2 + 16, size, &bytes)) return 0;
    mbpo_free(*p);
    if (!(*p = mbpo__alloc(bytes))) { *cap = 0; return 0; }
    *cap = n + n / 2 + 16;
    return 1;
}
static int mbpo__tok_emit(mbpo_tokenizer *t, int32_t id, int64_t end) {
    if (t->out_n == t->out_cap) {
        size_t cap = (size_t)t->out_cap, cap2 = (size_t)t->out_cap;
        int32_t *o = t->out;
        int64_t *e = t->out_end;
        int32_t *no = NULL;
        int64_t *ne = NULL;
        size_t want = (size_t)t->out_n + 1;
        if (!mbpo__scratch((void **)&no, &cap, want, sizeof(int32_t)) ||
            !mbpo__scratch((void **)&ne, &cap2, want, sizeof(int64_t))) { mbpo_free(no); return 0; }
        if (t->out_n) { memcpy(no, o, (size_t)t->out_n * sizeof *o); memcpy(ne, e, (size_t)t->out_n * sizeof *e); }
        mbpo_free(o); mbpo_free(e);
        t->out = no; t->out_end = ne; t->out_cap = (int64_t)cap;
    }
    t->out[t->out_n] = id;
    t->out_end[t->out_n++] = end;
    return 1;
}

/* Binary min-heap of (rank << 32 | position): the lowest rank merges first, the leftmost
   among equal ranks - the order HF's BPE model uses. */
static void mbpo__heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = v;
}
static uint64_t mbpo__heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c]; i = c;
    }
    h[i] = v;
    return top;
}

/* BPE of one pre-token (bytes s[0..n)): start from one symbol per byte and merge the
   adjacent pair of lowest rank until none is in the merge table. Emits the ids, each with
   the end offset base + (end of its bytes). */
static int mbpo__bpe_word(mbpo_tokenizer *t, const unsigned char *s, size_t n, int64_t base) {
    size_t i, hn = 0;
    uint64_t val;
    if (n > t->sym_cap) {   /* the four symbol arrays share one capacity */
        size_t bytes = 0;
        mbpo_free(t->sym_id); mbpo_free(t->sym_prev); mbpo_free(t->sym_next); mbpo_free(t->sym_len);
        t->sym_cap = 0;
        if (!mbpo__mul_size(n + n / 2 + 16, sizeof(int32_t), &bytes)) return 0;
        t->sym_id = (int32_t *)mbpo__alloc(bytes); t->sym_prev = (int32_t *)mbpo__alloc(bytes);
        t->sym_next = (int32_t *)mbpo__alloc(bytes); t->sym_len = (int32_t *)mbpo__alloc(bytes);
        if (!t->sym_id || !t->sym_prev || !t->sym_next || !t->sym_len) return 0;
        t->sym_cap = n + n / 2 + 16;
    }
    if (!mbpo__scratch((void **)&t->heap, &t->heap_cap, 2 * n + 2, sizeof(uint64_t))) return 0;
    for (i = 0; i < n; i++) {
        t->sym_id[i] = t->byte_id[s[i]];
        t->sym_prev[i] = (int32_t)i - 1;
        t->sym_next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        t->sym_len[i] = 1;
    }
    for (i = 0; i + 1 < n; i++)
        if (mbpo__merge_find(t, t->sym_id[i], t->sym_id[i + 1], &val))
            mbpo__heap_push(t->heap, &hn, (val >> 32) << 32 | i);
    while (hn) {
        uint64_t top = mbpo__heap_pop(t->heap, &hn);
        int32_t pos = (int32_t)(uint32_t)top, nx, p, q;
        if (t->sym_len[pos] == 0 || (nx = t->sym_next[pos]) < 0) continue;            /* gone */
        if (!mbpo__merge_find(t, t->sym_id[pos], t->sym_id[nx], &val) || (val >> 32) != (top >> 32))
            continue;                                                                    /* stale */
        t->sym_id[pos] = (int32_t)(uint32_t)val;
        t->sym_len[pos] += t->sym_len[nx];
        t->sym_len[nx] = 0;
        t->sym_next[pos] = q = t->sym_next[nx];
        if (q >= 0) t->sym_prev[q] = pos;
        if ((p = t->sym_prev[pos]) >= 0 && mbpo__merge_find(t, t->sym_id[p], t->sym_id[pos], &val))
            mbpo__heap_push(t->heap, &hn, (val >> 32) << 32 | (uint32_t)p);
        if (q >= 0 && mbpo__merge_find(t, t->sym_id[pos], t->sym_id[q], &val))
            mbpo__heap_push(t->heap, &hn, (val >> 32) << 32 | (uint32_t)pos);
    }
    for (i = 0; i < n; i = (size_t)(t->sym_next[i] < 0 ? (int32_t)n : t->sym_next[i]))
        if (!mbpo__tok_emit(t, t->sym_id[i], base + (int64_t)i + t->sym_len[i])) return 0;
    return 1;
}

/* A pre-token through the word cache. Entries: {hash, len, count} then the bytes, then the
   ids, in one arena that is dropped wholesale when full. */
#define MBPO__CACHE_MAX_WORD 128
static int mbpo__tok_word(mbpo_tokenizer *t, const unsigned char *s, size_t n, int64_t base) {
    uint64_t h;
    size_t slot, need, k;
    int64_t first = t->out_n, at;
    if (n == 0) return 1;
    if (n > MBPO__CACHE_MAX_WORD) return mbpo__bpe_word(t, s, n, base);
    h = mbpo__hash_bytes(s, n);
    for (slot = (size_t)h & t->cache_mask; (at = t->cache_at[slot]) >= 0; slot = (slot + 1) & t->cache_mask) {
        const int32_t *e = (const int32_t *)(t->cache_arena + at);
        if (t->cache_hash[slot] == h && (size_t)e[0] == n && memcmp(e + 2, s, n) == 0) {
            const int32_t *ids = e + 2 + (n + 3) / 4;
            int64_t off = base;
            for (k = 0; k < (size_t)e[1]; k++) {
                off += t->token_len[ids[k]];
                if (!mbpo__tok_emit(t, ids[k], off)) return 0;
            }
            return 1;
        }
    }
    if (!mbpo__bpe_word(t, s, n, base)) return 0;
    /* remember it */
    need = (2 + (n + 3) / 4 + (size_t)(t->out_n - first)) * sizeof(int32_t);
    if (t->cache_used * 2 >= t->cache_mask || t->cache_arena_n + need > MBPO__CACHE_ARENA) {
        memset(t->cache_at, 0xFF, (t->cache_mask + 1) * sizeof(int64_t));
        t->cache_used = 0; t->cache_arena_n = 0;
        slot = (size_t)h & t->cache_mask;
    }
    {
        int32_t *e = (int32_t *)(t->cache_arena + t->cache_arena_n);
        e[0] = (int32_t)n; e[1] = (int32_t)(t->out_n - first);
        memcpy(e + 2, s, n);
        memcpy(e + 2 + (n + 3) / 4, t->out + first, (size_t)(t->out_n - first) * sizeof(int32_t));
        t->cache_hash[slot] = h;
        t->cache_at[slot] = (int64_t)t->cache_arena_n;
        t->cache_arena_n += need;
        t->cache_used++;
    }
    return 1;
}

/* The Qwen2 pre-tokenizer regex (docs/QWEN2VL.md 7, step 3), written out as a matcher over the
   character classes cls[0..n) of code points cp[0..n). Returns where the match starting
   at i ends. Every position is matched by some alternative, so the text splits completely.
     (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} |
      ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+                              */
static uint32_t mbpo__ascii_fold(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';   /* LATIN SMALL LETTER LONG S case-folds to s */
    return c;
}
static size_t mbpo__pretok_match(const unsigned char *cls, const uint32_t *cp, size_t i, size_t n) {
    unsigned c = cls[i];
    size_t j;
    if (cp[i] == '\'' && i + 1 < n) {                                      /* contractions */
        uint32_t a = mbpo__ascii_fold(cp[i + 1]), b = i + 2 < n ? mbpo__ascii_fold(cp[i + 2]) : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    if (c == MBPO__CL_LETTER || (c != MBPO__CL_NEWLINE && c != MBPO__CL_NUMBER && i + 1 < n &&
                                 cls[i + 1] == MBPO__CL_LETTER)) {        /* ?letters */
        for (j = i + 1; j < n && cls[j] == MBPO__CL_LETTER; j++) {}
        return j;
    }
    if (c == MBPO__CL_NUMBER) return i + 1;                                /* one digit */
    j = i;
    if (cp[j] == ' ' && j + 1 < n && cls[j + 1] == MBPO__CL_OTHER) j++;
    if (cls[j] == MBPO__CL_OTHER) {                                        /* ?symbols\r\n* */
        while (j < n && cls[j] == MBPO__CL_OTHER) j++;
        while (j < n && cls[j] == MBPO__CL_NEWLINE) j++;
        return j;
    }
    {                                                                      /* whitespace */
        size_t e = i, last_newline = (size_t)-1;
        for (; e < n && (cls[e] == MBPO__CL_SPACE || cls[e] == MBPO__CL_NEWLINE); e++)
            if (cls[e] == MBPO__CL_NEWLINE) last_newline = e;
        if (last_newline != (size_t)-1) return last_newline + 1;           /* \s*[\r\n]+ */
        if (e == n || e - i == 1) return e;                                /* \s+(?!\S), \s+ */
        return e - 1;                                  /* leave one space for the next word */
    }
}

MBPODEF int64_t mbpo_pretokenize(const char *text, size_t len, size_t **ends) {
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    unsigned char *cls = (unsigned char *)mbpo__calloc(len + 1, 1);
    uint32_t *cps = (uint32_t *)mbpo__calloc(len + 1, sizeof(uint32_t));
    size_t *at = (size_t *)mbpo__calloc(len + 1, sizeof(size_t)), n = 0, i;
    int64_t n_pieces = -1;
    *ends = NULL;
    if (!cls || !cps || !at) goto done;
    while (p < end) {
        int k = mbpo__utf8_get(p, end, &cps[n]);
        if (k == 0) { mbpo__fail("mbpo_pretokenize: invalid UTF-8 at byte %lld", (long long)(p - (const unsigned char *)text)); goto done; }
        cls[n] = (unsigned char)mbpo__uc_class(cps[n]);
        at[n++] = (size_t)(p - (const unsigned char *)text);
        p += k;
    }
    at[n] = len;
    n_pieces = 0;
    for (i = 0; i < n; ) {   /* the piece ends, reusing `at` in place: piece k ends at or after code point k */
        size_t e = mbpo__pretok_match(cls, cps, i, n);
        at[n_pieces++] = at[e];
        i = e;
    }
    *ends = at; at = NULL;
done:
    mbpo_free(cls); mbpo_free(cps); mbpo_free(at);
    return n_pieces;
}

/* One stretch of text between added tokens: NFC, pre-tokenize, BPE each pre-token.
   `base` is the stretch's byte offset in the caller's text (for the end offsets). */
static int mbpo__tok_piece(mbpo_tokenizer *t, const char *text, size_t len, int64_t base) {
    const char *s = text;
    size_t n = 0, i, n_cp = 0, start;
    const unsigned char *p, *end;
    if (!mbpo__nfc(&t->nfc, text, len, base, &s, &n)) return 0;
    if (!mbpo__scratch((void **)&t->cls, &t->cls_cap, n + 1, 1) ||
        !mbpo__scratch((void **)&t->cps, &t->cps_cap, n + 1, sizeof(uint32_t)) ||
        !mbpo__scratch((void **)&t->cp_at, &t->cp_at_cap, n + 1, sizeof(size_t))) return 0;
    p = (const unsigned char *)s; end = p + n;
    while (p < end) {
        uint32_t cp;
        int k = *p < 0x80 ? (cp = *p, 1) : mbpo__utf8_get(p, end, &cp);
        if (k == 0) return mbpo__fail("invalid UTF-8 at byte %lld", (long long)(base + (p - (const unsigned char *)s)));
        t->cps[n_cp] = cp;
        t->cls[n_cp] = cp < 0x10000 ? t->class16[cp] : (unsigned char)mbpo__uc_class(cp);
        t->cp_at[n_cp++] = (size_t)(p - (const unsigned char *)s);
        p += k;
    }
    t->cp_at[n_cp] = n;
    for (i = 0; i < n_cp; ) {
        size_t j = mbpo__pretok_match(t->cls, t->cps, i, n_cp);
        start = t->cp_at[i];
        if (!mbpo__tok_word(t, (const unsigned char *)s + start, t->cp_at[j] - start, base + (int64_t)start)) return 0;
        i = j;
    }
    return 1;
}

/* Split on added tokens (leftmost, longest), encode the text between them. */
static int mbpo__tok_encode(mbpo_tokenizer *t, const char *text, size_t len, int with_added) {
    size_t i = 0, piece = 0;
    t->out_n = 0;
    if (with_added && t->n_added) {
        while (i < len) {
            int best = -1, k;
            if (t->added_first[(unsigned char)text[i]])
                for (k = 0; k < t->n_added; k++) {
                    const mbpo__added_token *a = &t->added[k];
                    if ((size_t)a->len <= len - i && memcmp(text + i, a->bytes, (size_t)a->len) == 0 &&
                        (best < 0 || a->len > t->added[best].len)) best = k;
                }
            if (best < 0) { i++; continue; }
            if (!mbpo__tok_piece(t, text + piece, i - piece, (int64_t)piece)) return 0;
            i += (size_t)t->added[best].len;
            if (!mbpo__tok_emit(t, t->added[best].id, (int64_t)i)) return 0;
            piece = i;
        }
    }
    return mbpo__tok_piece(t, text + piece, len - piece, (int64_t)piece);
}

MBPODEF const int32_t *mbpo_tokenizer_encode(mbpo_tokenizer *t, const char *text, size_t len,
                                             int with_special, int64_t *n_ids) {
    static const int32_t none = 0;
    *n_ids = 0;
    if (!mbpo__tok_encode(t, text, len, with_special)) {
        mbpo__fail_prefix("%s: cannot encode: ", t->path);
        return NULL;
    }
    *n_ids = t->out_n;
    return t->out_n ? t->out : &none;
}

/* Bytes -> UTF-8 with every maximal invalid subsequence replaced by U+FFFD, the rule of
   Unicode 15 section 3.9 (what Rust's from_utf8_lossy, and so HF's decoder, does). */
static size_t mbpo__utf8_lossy(const unsigned char *s, size_t n, char *out) {
    size_t i = 0, w = 0;
    while (i < n) {
        int k = mbpo__utf8_valid(s + i, s + n);
        if (k > 0) { memcpy(out + w, s + i, (size_t)k); w += (size_t)k; i += (size_t)k; continue; }
        {   /* length of the longest valid prefix of a sequence starting here, at least 1 */
            unsigned c = s[i], lo = 0x80, hi = 0xBF;
            size_t need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
            size_t j = i + 1;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
            while (need && j < n && s[j] >= lo && s[j] <= hi) { j++; need--; lo = 0x80; hi = 0xBF; }
            i = j;
            memcpy(out + w, "\xEF\xBF\xBD", 3); w += 3;
        }
    }
    return w;
}

MBPODEF char *mbpo_tokenizer_decode(const mbpo_tokenizer *t, const int32_t *ids, int64_t n,
                                    int skip_special, size_t *len) {
    size_t bytes = 0, out_n;
    unsigned char *raw;
    char *out;
    int64_t i;
    /* An id with no token (a model's vocab_size pads past the tokenizer's: Qwen2-VL has 151,936
       rows for 151,657 tokens, and sampling may pick one) decodes to nothing, as in HF. */
#define MBPO__NO_TOKEN(id) ((id) < 0 || (id) >= t->n_ids || !t->token[(id)])
    for (i = 0; i < n; i++)
        if (!MBPO__NO_TOKEN(ids[i])) bytes += (size_t)t->token_len[ids[i]];
    raw = (unsigned char *)mbpo__alloc(bytes + 1);
    out = (char *)mbpo__alloc(3 * bytes + 1);            /* each bad byte may become U+FFFD */
    if (!raw || !out) { mbpo_free(raw); mbpo_free(out); return NULL; }
    for (i = 0, bytes = 0; i < n; i++) {
        if (MBPO__NO_TOKEN(ids[i]) || (skip_special && t->is_special[ids[i]])) continue;
        memcpy(raw + bytes, t->token[ids[i]], (size_t)t->token_len[ids[i]]);
        bytes += (size_t)t->token_len[ids[i]];
    }
    out_n = mbpo__utf8_lossy(raw, bytes, out);
    out[out_n] = 0;
    mbpo_free(raw);
    if (len) *len = out_n;
    return out;
#undef MBPO__NO_TOKEN
}

MBPODEF int32_t mbpo_tokenizer_find(const mbpo_tokenizer *t, const char *token) {
    int k;
    for (k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].bytes, token) == 0) return t->added[k].id;
    return mbpo__vocab_find(t, token, strlen(token));
}
MBPODEF int64_t mbpo_tokenizer_n_ids(const mbpo_tokenizer *t) { return t->n_ids; }
MBPODEF char *mbpo_utf8_nfc(const char *text, size_t len, size_t *out_len) {
    mbpo__nfc_buf b;
    const char *s;
    size_t n = 0;
    char *out = NULL;
    const unsigned char *u = (const unsigned char *)text, *end = u + len;
    while (u < end) {   /* invalid input is refused, not normalised into something else (found by make fuzz) */
        int k = mbpo__utf8_valid(u, end);
        if (!k) { mbpo__fail("mbpo_utf8_nfc: invalid UTF-8 at byte %lld", (long long)(u - (const unsigned char *)text)); return NULL; }
        u += k;
    }
    memset(&b, 0, sizeof b);
    if (mbpo__nfc(&b, text, len, 0, &s, &n) && (out = (char *)mbpo__alloc(n + 1)) != NULL) {
        memcpy(out, s, n);
        out[n] = 0;
        if (out_len) *out_len = n;
    }
    mbpo_free(b.cp); mbpo_free(b.tmp); mbpo_free(b.out);
    return out;
}
static int mbpo__tok_is_added(const mbpo_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_ids && t->is_added[id]; }


/* ------------------------------------------------------------------ 2. inputs: images */

/* Decoding is stb_image's (Debian: libstb-dev, link -lstb), and libjpeg's for JPEG under
   MBPO_LIBJPEG. With 3 channels requested stb does what Pillow's convert("RGB") does for
   the modes that matter: gray is replicated, palettes are looked up, alpha is dropped (not
   composited), 16-bit samples keep their high byte. The exceptions are handled below
   (16-bit gray, the colour behind a GIF's transparent index) or documented (CMYK JPEG;
   stb's JPEG IDCT and chroma upsampling differ from libjpeg's by a few code values on some
   pixels - tests/test_inputs.c measures how many). */

MBPODEF int mbpo_image_init(mbpo_image *img, int width, int height) {
    size_t n = 0;
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0) return mbpo__fail("image size %dx%d is not positive", width, height);
    if ((int64_t)width * height > MBPO_MAX_IMAGE_PIXELS)
        return mbpo__fail("image size %dx%d exceeds MBPO_MAX_IMAGE_PIXELS (%lld); raise the limit with "
                          "-DMBPO_MAX_IMAGE_PIXELS=N", width, height, (long long)MBPO_MAX_IMAGE_PIXELS);
    if (!mbpo__mul_size((size_t)width * (size_t)height, 3, &n)) return 0;
    if (!(img->rgb = (uint8_t *)mbpo__calloc(n, 1))) return 0;   /* all zero: a black image */
    img->width = width; img->height = height;
    return 1;
}
MBPODEF void mbpo_image_free(mbpo_image *img) {
    if (img) { mbpo_free(img->rgb); img->rgb = NULL; img->width = img->height = 0; }
}

/* What Pillow shows that stb_image does not, for a GIF's first frame: transparent pixels
   in the palette colour of the transparent index (stb leaves them black), and the canvas
   outside a frame smaller than it in that colour too, or palette entry 0 without
   transparency (stb paints the background index there). Parsed from the header: the
   graphic control extension before the first image names the transparent index, the
   image descriptor its rectangle, the local (else global) colour table the colours. */
typedef struct { int ok, has_transparent, left, top, width, height; uint8_t transparent[3], fill[3]; } mbpo__gif_info;
static mbpo__gif_info mbpo__gif_first_frame(const unsigned char *p, size_t len) {
    mbpo__gif_info g;
    size_t at = 13, global_at = 0, global_n = 0;
    int transparent = -1;
    memset(&g, 0, sizeof g);
    if (len < 13 || memcmp(p, "GIF8", 4) != 0) return g;
    if (p[10] & 0x80) { global_at = 13; global_n = (size_t)2 << (p[10] & 7); at += 3 * global_n; }
    while (at < len) {
        if (p[at] == 0x21 && at + 1 < len) {                      /* extension */
            if (p[at + 1] == 0xF9 && at + 6 < len && p[at + 2] == 4) transparent = (p[at + 3] & 1) ? p[at + 6] : -1;
            at += 2;
            while (at < len && p[at]) at += 1 + (size_t)p[at];    /* data sub-blocks */
            at++;
        } else if (p[at] == 0x2C && at + 9 < len) {               /* the first image */
            size_t table_at = global_at, table_n = global_n, k;
            if (p[at + 9] & 0x80) { table_at = at + 10; table_n = (size_t)2 << (p[at + 9] & 7); }
            if (table_n == 0 || table_at + 3 * table_n > len) return g;
            g.left = p[at + 1] | p[at + 2] << 8; g.top = p[at + 3] | p[at + 4] << 8;
            g.width = p[at + 5] | p[at + 6] << 8; g.height = p[at + 7] | p[at + 8] << 8;
            g.has_transparent = transparent >= 0 && (size_t)transparent < table_n;
            for (k = 0; k < 3; k++) {
                g.fill[k] = p[table_at + (g.has_transparent ? 3 * (size_t)transparent : 0) + k];
                g.transparent[k] = g.fill[k];
            }
            g.ok = 1;
            return g;
        } else return g;
    }
    return g;
}

/* The formats read: PNG, JPEG, BMP, GIF. stb_image also takes PNM, TGA, PSD, HDR and PIC,
   but where those differ from Pillow (16-bit PNM, maxval scaling) the pixels would silently
   differ from transformers', so they are refused. */
static int mbpo__image_format_known(const unsigned char *p, size_t len) {
    return (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) || (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) ||
           (len >= 2 && p[0] == 'B' && p[1] == 'M') || (len >= 6 && memcmp(p, "GIF8", 4) == 0);
}
/* A PNG palette shorter than 256 entries, padded with black: pixels whose index lies past
   the palette are black in Pillow, while stb_image would read its uninitialised palette
   memory. Returns a patched copy (mbpo_free) or NULL when none is needed. stb does not
   check chunk CRCs, so the stale CRC of the grown chunk is harmless. */
static unsigned char *mbpo__png_pad_palette(const unsigned char *p, size_t len, size_t *out_len) {
    size_t at = 8;
    while (at + 12 <= len) {
        size_t n = (size_t)p[at] << 24 | (size_t)p[at + 1] << 16 | (size_t)p[at + 2] << 8 | p[at + 3];
        if (n > len - at - 12) return NULL;
        if (memcmp(p + at + 4, "PLTE", 4) == 0) {
            unsigned char *q;
            if (n >= 768 || n % 3) return NULL;
            if (!(q = (unsigned char *)mbpo__alloc(len + 768 - n))) return NULL;
            memcpy(q, p, at);
            q[at] = 0; q[at + 1] = 0; q[at + 2] = 768 >> 8; q[at + 3] = 768 & 255;
            memcpy(q + at + 4, p + at + 4, 4 + n);
            memset(q + at + 8 + n, 0, 768 - n);
            memcpy(q + at + 8 + 768, p + at + 8 + n, len - at - 8 - n);   /* CRC and the rest */
            *out_len = len + 768 - n;
            return q;
        }
        if (memcmp(p + at + 4, "IDAT", 4) == 0) return NULL;   /* the palette precedes the data */
        at += 12 + n;
    }
    return NULL;
}

MBPODEF int mbpo_image_decode_stb(mbpo_image *img, const void *data, size_t len, const char *name) {
    int w = 0, h = 0, comp = 0, is16;
    unsigned char *pix;
    memset(img, 0, sizeof *img);
    if (len > (size_t)INT32_MAX) return mbpo__fail("%s: image file too large (%zu bytes)", name, len);
    if (!mbpo__image_format_known((const unsigned char *)data, len))
        return mbpo__fail("%s: not a PNG, JPEG, BMP or GIF file (the formats read)", name);
    if (len >= 8 && ((const unsigned char *)data)[0] == 0x89) {
        size_t n2 = 0;
        unsigned char *padded = mbpo__png_pad_palette((const unsigned char *)data, len, &n2);
        if (padded) {
            int ok = mbpo_image_decode_stb(img, padded, n2, name);
            mbpo_free(padded);
            return ok;
        }
    }
    if (!stbi_info_from_memory((const unsigned char *)data, (int)len, &w, &h, &comp))
        return mbpo__fail("%s: not a readable image (%s)", name, stbi_failure_reason());
    if (w <= 0 || h <= 0 || (int64_t)w * h > MBPO_MAX_IMAGE_PIXELS)
        return mbpo__fail("%s: image is %dx%d, more than MBPO_MAX_IMAGE_PIXELS (%lld); raise the limit "
                          "with -DMBPO_MAX_IMAGE_PIXELS=N", name, w, h, (long long)MBPO_MAX_IMAGE_PIXELS);
    is16 = stbi_is_16_bit_from_memory((const unsigned char *)data, (int)len);
    if (!mbpo_image_init(img, w, h)) return 0;
    if (is16 && comp == 1) {
        /* 16-bit gray opens in Pillow as mode I;16, whose convert("RGB") clamps each sample
           to 255 instead of scaling it, so it is decoded at 16 bits and clamped here. (16-bit
           gray + alpha opens as RGBA, high bytes kept: stb's 8-bit path below.) */
        stbi_us *p16 = stbi_load_16_from_memory((const unsigned char *)data, (int)len, &w, &h, &comp, 1);
        size_t i, n = (size_t)w * (size_t)h;
        if (!p16) { mbpo_image_free(img); return mbpo__fail("%s: cannot decode (%s)", name, stbi_failure_reason()); }
        for (i = 0; i < n; i++) img->rgb[3 * i] = img->rgb[3 * i + 1] = img->rgb[3 * i + 2] =
            (uint8_t)(p16[i] > 255 ? 255 : p16[i]);
        stbi_image_free(p16);
        return 1;
    }
    {
        mbpo__gif_info gif = mbpo__gif_first_frame((const unsigned char *)data, len);
        int want = gif.ok ? 4 : 3, x, y;
        pix = stbi_load_from_memory((const unsigned char *)data, (int)len, &w, &h, &comp, want);
        if (!pix || w != img->width || h != img->height) {
            if (pix) stbi_image_free(pix);
            mbpo_image_free(img);
            return mbpo__fail("%s: cannot decode (%s)", name, stbi_failure_reason());
        }
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                size_t i = (size_t)y * w + x;
                const unsigned char *q = pix + i * (size_t)want;
                const uint8_t *c = q;
                if (gif.ok && (x < gif.left || x >= gif.left + gif.width || y < gif.top || y >= gif.top + gif.height))
                    c = gif.fill;                                   /* outside the first frame */
                else if (gif.ok && gif.has_transparent && q[3] == 0)
                    c = gif.transparent;                            /* a transparent pixel */
                img->rgb[3 * i] = c[0]; img->rgb[3 * i + 1] = c[1]; img->rgb[3 * i + 2] = c[2];
            }
        stbi_image_free(pix);
    }
    return 1;
}
#ifdef MBPO_LIBJPEG
/* JPEG through libjpeg(-turbo), the library Pillow uses, with Pillow's settings (the library
   defaults: accurate integer IDCT, fancy upsampling, YCbCr or gray -> RGB), so the pixels are
   Pillow's. libjpeg reports fatal errors through error_exit, which must not return: it jumps
   back here. A stream that ends early only warns in libjpeg (and is padded with gray); Pillow
   refuses such a file, and so does this. */
typedef struct { struct jpeg_error_mgr pub; jmp_buf jump; char msg[JMSG_LENGTH_MAX]; int truncated; } mbpo__jpeg_err;
static void mbpo__jpeg_error_exit(j_common_ptr c) {
    mbpo__jpeg_err *e = (mbpo__jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}
static void mbpo__jpeg_emit(j_common_ptr c, int level) {
    mbpo__jpeg_err *e = (mbpo__jpeg_err *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) { e->truncated = 1; c->err->format_message(c, e->msg); }
}
/* 1 decoded, 0 failed (reason set), -1 not handled here (CMYK/YCCK: left to stb_image). */
static int mbpo__jpeg_decode(mbpo_image *img, const unsigned char *data, size_t len, const char *name) {
    struct jpeg_decompress_struct cinfo;
    mbpo__jpeg_err err;
    memset(img, 0, sizeof *img);
    memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = mbpo__jpeg_error_exit;
    err.pub.emit_message = mbpo__jpeg_emit;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        mbpo_image_free(img);
        return mbpo__fail("%s: cannot decode JPEG (%s)", name, err.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)(size_t)data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if ((int64_t)cinfo.image_width * cinfo.image_height > MBPO_MAX_IMAGE_PIXELS) {
        jpeg_destroy_decompress(&cinfo);
        return mbpo__fail("%s: image is %ux%u, more than MBPO_MAX_IMAGE_PIXELS (%lld); raise the limit with "
                          "-DMBPO_MAX_IMAGE_PIXELS=N", name, (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, (long long)MBPO_MAX_IMAGE_PIXELS);
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3 || !mbpo_image_init(img, (int)cinfo.output_width, (int)cinfo.output_height)) {
        jpeg_destroy_decompress(&cinfo);
        mbpo_image_free(img);
        return mbpo__fail("%s: cannot decode JPEG (%s)", name, cinfo.output_components != 3 ? "not 3 channels" : mbpo__reason);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = img->rgb + (size_t)cinfo.output_scanline * img->width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (err.truncated) { mbpo_image_free(img); return mbpo__fail("%s: truncated JPEG (%s)", name, err.msg); }
    return 1;
}
#endif

MBPODEF int mbpo_image_load_memory(mbpo_image *img, const void *data, size_t len, const char *name) {
#ifdef MBPO_LIBJPEG
    const unsigned char *p = (const unsigned char *)data;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
        int r = mbpo__jpeg_decode(img, p, len, name);
        if (r >= 0) return r;
    }
#endif
    return mbpo_image_decode_stb(img, data, len, name);
}
MBPODEF int mbpo_image_load(mbpo_image *img, const char *path) {
    size_t len = 0;
    char *data = mbpo_read_file(path, &len);
    int ok;
    memset(img, 0, sizeof *img);
    if (!data) return 0;
    ok = mbpo_image_load_memory(img, data, len, path);
    mbpo_free(data);
    return ok;
}

static void mbpo__png_sink(void *ctx, void *data, int size) {
    if (size > 0) mbpo__sb_put((mbpo__sb *)ctx, (const char *)data, (size_t)size);
}
MBPODEF int mbpo_image_write_png(const char *path, const mbpo_image *img) {
    mbpo__sb b = { NULL, 0, 0, 0 };
    int ok;
    if (!stbi_write_png_to_func(mbpo__png_sink, &b, img->width, img->height, 3, img->rgb, img->width * 3) || b.failed) {
        mbpo_free(b.s);
        return mbpo__fail("%s: PNG encoding failed", path);
    }
    ok = mbpo_write_file_atomic(path, b.s, b.n);
    mbpo_free(b.s);
    return ok;
}

/* ------------------------------------------------------------------ 2. inputs: preprocessing */

MBPODEF void mbpo_preproc_default(mbpo_preproc *pp) {
    static const float mean[3] = { 0.48145466f, 0.4578275f, 0.40821073f };   /* OpenAI CLIP */
    static const float std_[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
    memset(pp, 0, sizeof *pp);
    pp->min_pixels = 56 * 56;
    pp->max_pixels = 28 * 28 * 16384;   /* the hub preprocessor_config.json, not the class default */
    pp->patch = 14; pp->temporal_patch = 2; pp->merge = 2;
    pp->rescale = 1.0 / 255.0;
    memcpy(pp->mean, mean, sizeof mean);
    memcpy(pp->std, std_, sizeof std_);
    pp->fast = MBPO_PROCESSOR_SLOW;   /* a folder without preprocessor_config.json: mbpo's long-standing choice */
}

/* An optional integer field of a JSON object, checked against a lower bound. */
static int mbpo__json_opt_int(const mbpo_json *obj, const char *key, int64_t lo, int64_t *out, const char *path) {
    const mbpo_json *v = mbpo_json_get(obj, key);
    if (!v || v->type == MBPO_JSON_NULL) return 1;
    if (!v->is_int || v->integer < lo || v->integer > (int64_t)1 << 40)
        return mbpo__fail("%s: \"%s\" must be an integer >= %lld", path, key, (long long)lo);
    *out = v->integer;
    return 1;
}
/* Which processor transformers builds for a folder: AutoImageProcessor / AutoProcessor
   .from_pretrained(folder) with use_fast unset, torchvision installed [version].
   transformers 4.57 (what mbpo follows): "image_processor_type" ending in "Fast" -> fast;
     exactly "Qwen2VLImageProcessor" -> fast too (4.57 forces it, warning that outputs change);
     any other type -> slow; no type (the class then comes from config.json's model_type) -> slow.
     A "use_fast" key in the file is ignored; without torchvision everything falls back to slow.
   transformers 5.x: fast for every type unless use_fast=False or torchvision is missing.
   So a folder that names its type resolves the same way in 4.57 and 5.x; one without a type is
   slow in 4.57 and fast in 5.x. A caller that knows better passes the processor explicitly. */
static int mbpo__preproc_type_is_fast(const mbpo_json *root) {
    const mbpo_json *t = mbpo_json_get(root, "image_processor_type");
    size_t n;
    if (!t || t->type != MBPO_JSON_STRING) return 0;
    n = strlen(t->string);
    return (n >= 4 && !strcmp(t->string + n - 4, "Fast")) || !strcmp(t->string, "Qwen2VLImageProcessor");
}
/* preprocessor_config.json: which processor, min/max pixels, patch sizes, rescale factor,
   mean and std. */
MBPODEF int mbpo_preproc_load(mbpo_preproc *pp, const char *path) {
    return mbpo_preproc_load_as(pp, path, MBPO_PROCESSOR_AUTO);
}
MBPODEF int mbpo_preproc_load_as(mbpo_preproc *pp, const char *path, int processor) {
    mbpo_json *root = mbpo_json_parse_file(path);
    const mbpo_json *v, *size, *cfg = root;
    int c, ok = 0;
    mbpo_preproc_default(pp);
    /* Both classes start from min 56*56, max 28*28*1280 and let min_pixels / max_pixels
       override. A "size" {shortest_edge, longest_edge} is checked by both, but only the fast
       class uses it (as min / max pixels); the slow one ignores it [version]. */
    pp->min_pixels = 56 * 56;
    pp->max_pixels = 28 * 28 * 1280;
    if (!root) return 0;
    if (root->type != MBPO_JSON_OBJECT) { mbpo__fail("%s: not a JSON object", path); goto done; }
    /* processor_config.json as transformers 5.x saves it nests the settings under
       "image_processor"; 4.57 reads that object when the folder has no preprocessor_config.json */
    if ((v = mbpo_json_get(root, "image_processor")) && v->type == MBPO_JSON_OBJECT) cfg = v;
    if (processor != MBPO_PROCESSOR_AUTO && processor != MBPO_PROCESSOR_SLOW && processor != MBPO_PROCESSOR_FAST)
        { mbpo__fail("%s: unknown image processor %d (want slow, fast or auto)", path, processor); goto done; }
    if ((v = mbpo_json_get(cfg, "image_processor_type")) && v->type != MBPO_JSON_STRING && v->type != MBPO_JSON_NULL)
        { mbpo__fail("%s: \"image_processor_type\" must be a string", path); goto done; }
    pp->fast = processor == MBPO_PROCESSOR_AUTO ? mbpo__preproc_type_is_fast(cfg) : processor;
    if ((size = mbpo_json_get(cfg, "size")) && size->type != MBPO_JSON_NULL &&
        (size->type != MBPO_JSON_OBJECT || !mbpo_json_get(size, "shortest_edge") || !mbpo_json_get(size, "longest_edge")))
        { mbpo__fail("%s: \"size\" must have \"shortest_edge\" and \"longest_edge\"", path); goto done; }
    if (pp->fast && size && size->type == MBPO_JSON_OBJECT &&
        (!mbpo__json_opt_int(size, "shortest_edge", 1, &pp->min_pixels, path) ||
         !mbpo__json_opt_int(size, "longest_edge", 1, &pp->max_pixels, path))) goto done;
    if (!mbpo__json_opt_int(cfg, "min_pixels", 1, &pp->min_pixels, path) ||
        !mbpo__json_opt_int(cfg, "max_pixels", 1, &pp->max_pixels, path) ||
        !mbpo__json_opt_int(cfg, "patch_size", 1, &pp->patch, path) ||
        !mbpo__json_opt_int(cfg, "temporal_patch_size", 1, &pp->temporal_patch, path) ||
        !mbpo__json_opt_int(cfg, "merge_size", 1, &pp->merge, path)) goto done;
    if ((v = mbpo_json_get(cfg, "rescale_factor")) && v->type != MBPO_JSON_NULL) {
        if (v->type != MBPO_JSON_NUMBER || !(v->number > 0)) { mbpo__fail("%s: bad rescale_factor", path); goto done; }
        pp->rescale = v->number;
    }
    for (c = 0; c < 2; c++) {
        const char *key = c ? "image_std" : "image_mean";
        float *dst = c ? pp->std : pp->mean;
        int k;
        if (!(v = mbpo_json_get(cfg, key)) || v->type == MBPO_JSON_NULL) continue;
        if (v->type != MBPO_JSON_ARRAY || v->count != 3) { mbpo__fail("%s: \"%s\" must be 3 numbers", path, key); goto done; }
        for (k = 0; k < 3; k++) {
            if (v->items[k].type != MBPO_JSON_NUMBER || (c && !(v->items[k].number > 0)))
                { mbpo__fail("%s: \"%s\"[%d] is not a %snumber", path, key, k, c ? "positive " : ""); goto done; }
            dst[k] = (float)v->items[k].number;   /* numpy casts mean/std to the image's float32 */
        }
    }
    if ((v = mbpo_json_get(cfg, "do_convert_rgb")) && v->type == MBPO_JSON_FALSE)
        { mbpo__fail("%s: do_convert_rgb = false is not supported (images are always RGB here)", path); goto done; }
    if (pp->min_pixels > pp->max_pixels)
        { mbpo__fail("%s: min_pixels %lld > max_pixels %lld", path, (long long)pp->min_pixels, (long long)pp->max_pixels); goto done; }
    if (pp->patch > 1024 || pp->merge > 64 || pp->temporal_patch > 16)
        { mbpo__fail("%s: patch_size, merge_size or temporal_patch_size is implausibly large", path); goto done; }
    ok = 1;
done:
    mbpo_json_free(root);
    return ok;
}

/* smart_resize (docs/QWEN2VL.md 1.2), as transformers 4.57 has it: both sides a multiple of
   factor = patch * merge, area within [min_pixels, max_pixels], aspect ratio kept. Python's
   round() is half-to-even: rint() under the default rounding mode, never round(). There is
   no minimum side (a 1x1 image grows to 56x56) and the max branch keeps each side >= factor. */
MBPODEF int mbpo_smart_resize(const mbpo_preproc *pp, int64_t height, int64_t width,
                              int64_t *out_height, int64_t *out_width) {
    double factor = (double)(pp->patch * pp->merge), h = (double)height, w = (double)width;
    double hb, wb, beta;
    if (height <= 0 || width <= 0)
        return mbpo__fail("image %lldx%lld (HxW) is empty", (long long)height, (long long)width);
    if ((h > w ? h / w : w / h) > 200)
        return mbpo__fail("image %lldx%lld (HxW): absolute aspect ratio must be at most 200", (long long)height,
                          (long long)width);
    hb = rint(h / factor) * factor;
    wb = rint(w / factor) * factor;
    if (hb * wb > (double)pp->max_pixels) {
        beta = sqrt(h * w / (double)pp->max_pixels);
        hb = floor(h / beta / factor) * factor;
        wb = floor(w / beta / factor) * factor;
        if (hb < factor) hb = factor;
        if (wb < factor) wb = factor;
    } else if (hb * wb < (double)pp->min_pixels) {
        beta = sqrt((double)pp->min_pixels / (h * w));
        hb = ceil(h * beta / factor) * factor;
        wb = ceil(w * beta / factor) * factor;
    }
    *out_height = (int64_t)hb;
    *out_width = (int64_t)wb;
    return 1;
}

/* Pillow's BICUBIC resize of an 8-bit image, reproduced exactly (libImaging's separable
   two-pass filter: horizontal first, 22-bit fixed-point weights, 8-bit intermediate). */
static double mbpo__bicubic(double x) {   /* Keys kernel, a = -0.5, in Pillow's evaluation order */
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
#define MBPO__RESAMPLE_BITS 22   /* 32 - 8 - 2: room for 8-bit pixels times weights > 1 */
/* Taps for one axis: out[i] = sum_k w[i*ksize + k] * in[first[i] + k], k < count[i]. */
static int mbpo__resample_taps(int in_size, int out_size, int *ksize, int **first, int **count, int32_t **w) {
    double scale = (double)in_size / out_size, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * fscale, inv = 1.0 / fscale;   /* Pillow multiplies by 1/fscale */
    double *tmp;
    int i, k;
    *ksize = (int)ceil(support) * 2 + 1;
    *first = (int *)mbpo__alloc((size_t)out_size * sizeof(int));
    *count = (int *)mbpo__alloc((size_t)out_size * sizeof(int));
    *w = (int32_t *)mbpo__calloc((size_t)out_size * (size_t)*ksize, sizeof(int32_t));
    tmp = (double *)mbpo__alloc((size_t)*ksize * sizeof(double));
    if (!*first || !*count || !*w || !tmp) { mbpo_free(tmp); return 0; }
    for (i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale, sum = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        for (k = 0; k < hi - lo; k++) { tmp[k] = mbpo__bicubic((k + lo - center + 0.5) * inv); sum += tmp[k]; }
        for (k = 0; k < hi - lo; k++) {
            double v = sum != 0.0 ? tmp[k] / sum : tmp[k];
            (*w)[(size_t)i * *ksize + k] = (int32_t)(v < 0 ? -0.5 + v * (1 << MBPO__RESAMPLE_BITS)
                                                           : 0.5 + v * (1 << MBPO__RESAMPLE_BITS));
        }
        (*first)[i] = lo;
        (*count)[i] = hi - lo;
    }
    mbpo_free(tmp);
    return 1;
}
static uint8_t mbpo__clip8(int32_t acc, int bits) {
    int32_t v = acc >> bits;   /* arithmetic shift: floor, as in Pillow and torch */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}
/* Horizontal pass: out (rows, out_w, 3) from rows first_row.. of in (in_h, in_w, 3); weights
   are fixed point with `bits` fraction bits (Pillow: MBPO__RESAMPLE_BITS, torch: per axis). */
static void mbpo__resample_x(const mbpo_image *in, int first_row, mbpo_image *out,
                             int ksize, const int *first, const int *count, const int32_t *w, int bits) {
    int y;
    MBPO__OMP("omp parallel for schedule(static)")
    for (y = 0; y < out->height; y++) {
        const uint8_t *src = in->rgb + (size_t)(y + first_row) * in->width * 3;
        uint8_t *dst = out->rgb + (size_t)y * out->width * 3;
        int x, k, c;
        for (x = 0; x < out->width; x++) {
            const int32_t *wx = w + (size_t)x * ksize;
            for (c = 0; c < 3; c++) {
                int32_t acc = 1 << (bits - 1);   /* rounds the final shift */
                for (k = 0; k < count[x]; k++) acc += src[(first[x] + k) * 3 + c] * wx[k];
                dst[x * 3 + c] = mbpo__clip8(acc, bits);
            }
        }
    }
}
/* Vertical pass: out (out_h, w, 3) from in (rows, w, 3); tap rows are first[y] - row_shift + k. */
static void mbpo__resample_y(const mbpo_image *in, int row_shift, mbpo_image *out,
                             int ksize, const int *first, const int *count, const int32_t *w, int bits) {
    int y;
    MBPO__OMP("omp parallel for schedule(static)")
    for (y = 0; y < out->height; y++) {
        const int32_t *wy = w + (size_t)y * ksize;
        uint8_t *dst = out->rgb + (size_t)y * out->width * 3;
        int x, k, c;
        for (x = 0; x < out->width; x++)
            for (c = 0; c < 3; c++) {
                int32_t acc = 1 << (bits - 1);
                for (k = 0; k < count[y]; k++)
                    acc += in->rgb[((size_t)(first[y] - row_shift + k) * in->width + x) * 3 + c] * wy[k];
                dst[x * 3 + c] = mbpo__clip8(acc, bits);
            }
    }
}
/* Pass order: Pillow runs the horizontal pass first (on only the rows the vertical pass
   reads), except - since Pillow 13.0 - when the height shrinks by more than twice as many
   pixels as the width, where the vertical pass goes first. The order changes the 8-bit
   intermediate, so it is part of bit-exactness. (Pillow < 13 always went horizontal first.) */
MBPODEF int mbpo_image_resize(const mbpo_image *in, int out_width, int out_height, mbpo_image *out) {
    int kx = 0, ky = 0, *fx = NULL, *cx = NULL, *fy = NULL, *cy = NULL, ok = 0;
    int32_t *wx = NULL, *wy = NULL;
    int need_x = out_width != in->width, need_y = out_height != in->height;
    int dy = in->height - out_height, dx = in->width - out_width;
    int vertical_first = dy > 0 && dy > 2 * dx;
    mbpo_image tmp;
    memset(&tmp, 0, sizeof tmp);
    if (!mbpo_image_init(out, out_width, out_height)) return 0;
    if (!need_x && !need_y) {   /* Pillow returns a copy without filtering */
        memcpy(out->rgb, in->rgb, (size_t)in->width * in->height * 3);
        return 1;
    }
    if (!mbpo__resample_taps(in->width, out_width, &kx, &fx, &cx, &wx) ||
        !mbpo__resample_taps(in->height, out_height, &ky, &fy, &cy, &wy)) goto done;
    if (!need_y) {
        mbpo__resample_x(in, 0, out, kx, fx, cx, wx, MBPO__RESAMPLE_BITS);
    } else if (!need_x) {
        mbpo__resample_y(in, 0, out, ky, fy, cy, wy, MBPO__RESAMPLE_BITS);
    } else if (vertical_first) {
        if (!mbpo_image_init(&tmp, in->width, out_height)) goto done;
        mbpo__resample_y(in, 0, &tmp, ky, fy, cy, wy, MBPO__RESAMPLE_BITS);
        mbpo__resample_x(&tmp, 0, out, kx, fx, cx, wx, MBPO__RESAMPLE_BITS);
    } else {
        int y0 = fy[0], y1 = fy[out_height - 1] + cy[out_height - 1];   /* rows the y pass reads */
        if (!mbpo_image_init(&tmp, out_width, y1 - y0)) goto done;
        mbpo__resample_x(in, y0, &tmp, kx, fx, cx, wx, MBPO__RESAMPLE_BITS);
        mbpo__resample_y(&tmp, y0, out, ky, fy, cy, wy, MBPO__RESAMPLE_BITS);
    }
    ok = 1;
done:
    if (!ok) mbpo_image_free(out);
    mbpo_image_free(&tmp);
    mbpo_free(fx); mbpo_free(cx); mbpo_free(wx); mbpo_free(fy); mbpo_free(cy); mbpo_free(wy);
    return ok;
}

/* torchvision's resize(BICUBIC, antialias=True) of a uint8 tensor on the CPU: torchvision
   hands the uint8 image straight to torch's _upsample_bicubic2d_aa (no float conversion, no
   round or clamp of its own), whose uint8 kernel (the AVX2/AVX-512 one and the generic one
   agree) is Pillow's separable scheme with three differences that change code values:
   - the cubic (Keys, a = -0.5 like Pillow) is evaluated in torch's order, in double;
   - weights are int16 with a precision chosen per axis: the most fraction bits (< 22) for
     which the largest normalised weight w_max still gives round(w_max * 2^(bits+1)) < 2^15
     (Pillow: 22 bits for every axis, int32 weights);
   - the horizontal pass always runs first (all rows, 8-bit intermediate), then the vertical.
   Accumulation is int32 from 2^(bits-1), then an arithmetic shift and a clamp to [0, 255].
   Scale = in/out in double; support 2*scale when shrinking, else 2; taps as in Pillow.
   (torch's generic kernel mishandles an output width of 1; Qwen2-VL never asks for one.) */
static double mbpo__cubic_torch(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}
static int mbpo__torch_taps(int in_size, int out_size, int *ksize, int **first, int **count, int32_t **w, int *bits) {
    double scale = (double)in_size / out_size;
    double support = scale >= 1.0 ? 2.0 * scale : 2.0, inv = scale >= 1.0 ? 1.0 / scale : 1.0, w_max = 0.0;
    double *f;
    int i, k;
    *ksize = (int)ceil(support) * 2 + 1;
    *first = (int *)mbpo__alloc((size_t)out_size * sizeof(int));
    *count = (int *)mbpo__alloc((size_t)out_size * sizeof(int));
    *w = (int32_t *)mbpo__calloc((size_t)out_size * (size_t)*ksize, sizeof(int32_t));
    f = (double *)mbpo__calloc((size_t)out_size * (size_t)*ksize, sizeof(double));
    if (!*first || !*count || !*w || !f) { mbpo_free(f); return 0; }
    for (i = 0; i < out_size; i++) {
        double center = scale * (i + 0.5), total = 0.0, *fi = f + (size_t)i * *ksize;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5), n;
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        n = hi - lo < 0 ? 0 : hi - lo > *ksize ? *ksize : hi - lo;   /* torch clips a rounding overshoot */
        for (k = 0; k < n; k++) { fi[k] = mbpo__cubic_torch((k + lo - center + 0.5) * inv); total += fi[k]; }
        if (total != 0.0)
            for (k = 0; k < n; k++) { fi[k] /= total; if (fi[k] > w_max) w_max = fi[k]; }
        (*first)[i] = lo;
        (*count)[i] = n;
    }
    for (*bits = 0; *bits < 22; ++*bits)
        if ((int)(0.5 + w_max * (double)(1 << (*bits + 1))) >= (1 << 15)) break;
    for (i = 0; i < out_size * *ksize; i++) {
        double v = f[i] * (double)(1 << *bits);
        (*w)[i] = (int32_t)(v < 0 ? -0.5 + v : 0.5 + v);   /* truncation after +-0.5, as torch */
    }
    mbpo_free(f);
    return *bits > 0;
}
MBPODEF int mbpo_image_resize_torch(const mbpo_image *in, int out_width, int out_height, mbpo_image *out) {
    int kx = 0, ky = 0, bx = 0, by = 0, *fx = NULL, *cx = NULL, *fy = NULL, *cy = NULL, ok = 0;
    int32_t *wx = NULL, *wy = NULL;
    int need_x = out_width != in->width, need_y = out_height != in->height;
    mbpo_image tmp;
    memset(&tmp, 0, sizeof tmp);
    if (!mbpo_image_init(out, out_width, out_height)) return 0;
    if (!need_x && !need_y) {   /* torchvision returns the image itself */
        memcpy(out->rgb, in->rgb, (size_t)in->width * in->height * 3);
        return 1;
    }
    if ((need_x && !mbpo__torch_taps(in->width, out_width, &kx, &fx, &cx, &wx, &bx)) ||
        (need_y && !mbpo__torch_taps(in->height, out_height, &ky, &fy, &cy, &wy, &by))) goto done;
    if (!need_y) {
        mbpo__resample_x(in, 0, out, kx, fx, cx, wx, bx);
    } else if (!need_x) {
        mbpo__resample_y(in, 0, out, ky, fy, cy, wy, by);
    } else {
        /* rows the vertical pass reads (the others would be computed and dropped) */
        int y0 = fy[0], y1 = fy[out_height - 1] + cy[out_height - 1];
        if (!mbpo_image_init(&tmp, out_width, y1 - y0)) goto done;
        mbpo__resample_x(in, y0, &tmp, kx, fx, cx, wx, bx);
        mbpo__resample_y(&tmp, y0, out, ky, fy, cy, wy, by);
    }
    ok = 1;
done:
    if (!ok) mbpo_image_free(out);
    mbpo_image_free(&tmp);
    mbpo_free(fx); mbpo_free(cx); mbpo_free(wx); mbpo_free(fy); mbpo_free(cy); mbpo_free(wy);
    return ok;
}

/* Patch flattening (docs/QWEN2VL.md 1.4). Row r holds the patch at patch-row bh*m + my and
   patch-column bw*m + mx, where r = ((bh * (gw/m) + bw) * m + my) * m + mx: merge blocks in
   raster order, the m*m patches of a block in raster order. */
static void mbpo__patch_origin(const mbpo_preproc *pp, int64_t grid_w, int64_t row, int64_t *y0, int64_t *x0) {
    int64_t m = pp->merge, block = row / (m * m), in_block = row % (m * m);
    *y0 = ((block / (grid_w / m)) * m + in_block / m) * pp->patch;
    *x0 = ((block % (grid_w / m)) * m + in_block % m) * pp->patch;
}

MBPODEF int mbpo_pixels_count(const mbpo_preproc *pp, int64_t height, int64_t width, int64_t *n_patches,
                              int32_t grid_thw[3]) {
    int64_t f = pp->patch * pp->merge;
    if (height <= 0 || width <= 0 || height % f || width % f)
        return mbpo__fail("image %lldx%lld (HxW) is not a multiple of %lld on both sides (smart_resize it first)",
                          (long long)height, (long long)width, (long long)f);
    grid_thw[0] = 1;
    grid_thw[1] = (int32_t)(height / pp->patch);
    grid_thw[2] = (int32_t)(width / pp->patch);
    *n_patches = (int64_t)grid_thw[1] * grid_thw[2];
    return 1;
}

/* The normalisation, pixel = (x * k - m[c]) / s[c] in float32, as each processor computes it.
   Slow (numpy): v = float32(u8 * rescale), then (v - mean) / std: k = 1, m = mean, s = std.
   Fast (torch): rescale folded into mean and std, m = float32(mean) * float32(1 / rescale) (a
   float32 tensor times a Python float multiplies in float32), s likewise, applied to the
   uint8 code values cast to float; from x in [0, 1] the code value is x * k, k = float32(1 /
   rescale), which gives back the exact code value for every x = mbpo_image_to_float(u8) with
   rescale 1/255 (so this path is bitwise the processor's). The two differ by rounding only
   (~1e-7 relative): same resized image, pixel_values a few ulps apart. */
static void mbpo__norm_consts(const mbpo_preproc *pp, float *k, float m[3], float s[3]) {
    int c;
    *k = pp->fast ? (float)(1.0 / pp->rescale) : 1.0f;
    for (c = 0; c < 3; c++) {
        m[c] = pp->fast ? pp->mean[c] * *k : pp->mean[c];
        s[c] = pp->fast ? pp->std[c] * *k : pp->std[c];
    }
}
/* a * b rounded to float32 on its own: -ffp-contract=fast would otherwise fuse it with the
   subtraction that follows into one FMA (one rounding instead of torch's two). */
static float mbpo__mul_rounded(float a, float b) {
    volatile float t = a * b;
    return t;
}
/* Patches from x (H, W, 3): pixel = (x * k - m) / s, k = 1 meaning no multiplication at all.
   Column j = (c * T + tau) * p*p + y * p + x: channel, frame, row and column inside the patch;
   the T frames of a still image are copies of it. */
static int mbpo__pixels(const mbpo_preproc *pp, const float *x, int64_t height, int64_t width, float k,
                        const float m[3], const float s[3], float *pixel_values) {
    int64_t n_patches, p = pp->patch, T = pp->temporal_patch, row;
    int32_t grid[3];
    if (!mbpo_pixels_count(pp, height, width, &n_patches, grid)) return 0;
    MBPO__OMP("omp parallel for schedule(static)")
    for (row = 0; row < n_patches; row++) {
        float *out = pixel_values + row * 3 * T * p * p;
        int64_t y0, x0, c, tau, y, xx;
        mbpo__patch_origin(pp, grid[2], row, &y0, &x0);
        for (c = 0; c < 3; c++)
            for (tau = 0; tau < T; tau++)
                for (y = 0; y < p; y++)
                    for (xx = 0; xx < p; xx++) {
                        float v = x[((y0 + y) * width + x0 + xx) * 3 + c];
                        if (k != 1.0f) v = mbpo__mul_rounded(v, k);
                        *out++ = (v - m[c]) / s[c];
                    }
    }
    return 1;
}
/* x (H, W, 3) in [0, 1] -> pixel_values (P, PIX), normalised as pp->fast's processor does. */
MBPODEF int mbpo_pixels_from_float(const mbpo_preproc *pp, const float *x, int64_t height, int64_t width,
                                   float *pixel_values) {
    float k, m[3], s[3];
    mbpo__norm_consts(pp, &k, m, s);
    return mbpo__pixels(pp, x, height, width, k, m, s, pixel_values);
}
/* The adjoint of mbpo_pixels_from_float: dx (H, W, 3) = dL/dx given dL/dpixel_values. Each
   pixel is read once per frame, so the frames' gradients add; normalising multiplies by k / s
   (1 / std for the slow processor). */
MBPODEF int mbpo_pixels_backward(const mbpo_preproc *pp, const float *dpixel_values, int64_t height,
                                 int64_t width, float *dx) {
    int64_t n_patches, p = pp->patch, T = pp->temporal_patch, row;
    int32_t grid[3];
    float k, m[3], s[3];
    mbpo__norm_consts(pp, &k, m, s);
    if (!mbpo_pixels_count(pp, height, width, &n_patches, grid)) return 0;
    /* patches tile the image without overlap: each row owns its pixels, no race */
    MBPO__OMP("omp parallel for schedule(static)")
    for (row = 0; row < n_patches; row++) {
        const float *g = dpixel_values + row * 3 * T * p * p;
        int64_t y0, x0, c, tau, y, xx;
        mbpo__patch_origin(pp, grid[2], row, &y0, &x0);
        for (c = 0; c < 3; c++)
            for (y = 0; y < p; y++)
                for (xx = 0; xx < p; xx++) {
                    float sum = 0.0f;
                    for (tau = 0; tau < T; tau++) sum += g[((c * T + tau) * p + y) * p + xx];
                    dx[((y0 + y) * width + x0 + xx) * 3 + c] = (k != 1.0f ? sum * k : sum) / s[c];
                }
    }
    return 1;
}
/* 8-bit image -> [0, 1] floats exactly as the processor rescales: float32(double(u8) * factor). */
MBPODEF void mbpo_image_to_float(const mbpo_preproc *pp, const mbpo_image *img, float *x) {
    size_t i, n = (size_t)img->width * img->height * 3;
    for (i = 0; i < n; i++) x[i] = (float)((double)img->rgb[i] * pp->rescale);
}
/* [0, 1] floats -> 8 bits, rounding to nearest (ties to even) after clamping. */
MBPODEF void mbpo_image_from_float(mbpo_image *img, const float *x) {
    size_t i, n = (size_t)img->width * img->height * 3;
    for (i = 0; i < n; i++) {
        float v = x[i] * 255.0f;
        img->rgb[i] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : (int)rintf(v));
    }
}

/* The whole path of the processor: smart_resize, bicubic (Pillow's or torchvision's, by
   pp->fast), rescale, normalise, patches. resized (may be NULL) receives the resized 8-bit
   image; *pixel_values is allocated (free with mbpo_free) with *n_patches rows. */
MBPODEF int mbpo_image_preprocess(const mbpo_preproc *pp, const mbpo_image *img, mbpo_image *resized,
                                  float **pixel_values, int64_t *n_patches, int32_t grid_thw[3]) {
    int64_t rh, rw;
    mbpo_image r;
    float *x = NULL;
    size_t n = 0;
    int ok = 0;
    *pixel_values = NULL;
    memset(&r, 0, sizeof r);
    if (!mbpo_smart_resize(pp, img->height, img->width, &rh, &rw)) return 0;
    if (rh * rw > MBPO_MAX_IMAGE_PIXELS)
        return mbpo__fail("image resizes to %lldx%lld, more than MBPO_MAX_IMAGE_PIXELS (%lld); lower max_pixels in "
                          "preprocessor_config.json or raise the limit with -DMBPO_MAX_IMAGE_PIXELS=N",
                          (long long)rh, (long long)rw, (long long)MBPO_MAX_IMAGE_PIXELS);
    if (!(pp->fast ? mbpo_image_resize_torch : mbpo_image_resize)(img, (int)rw, (int)rh, &r)) return 0;
    if (!mbpo_pixels_count(pp, rh, rw, n_patches, grid_thw)) goto done;
    if (!mbpo__mul_size((size_t)(rh * rw), 3 * sizeof(float), &n) || !(x = (float *)mbpo__alloc(n))) goto done;
    if (!mbpo__mul_size((size_t)*n_patches, (size_t)(3 * pp->temporal_patch * pp->patch * pp->patch) * sizeof(float), &n) ||
        !(*pixel_values = (float *)mbpo__alloc(n))) goto done;
    if (pp->fast) {   /* the fast processor normalises the code values themselves, whatever the rescale */
        float k, m[3], s[3];
        size_t i;
        mbpo__norm_consts(pp, &k, m, s);
        for (i = 0; i < (size_t)(rh * rw * 3); i++) x[i] = (float)r.rgb[i];
        ok = mbpo__pixels(pp, x, rh, rw, 1.0f, m, s, *pixel_values);
    } else {
        mbpo_image_to_float(pp, &r, x);
        ok = mbpo_pixels_from_float(pp, x, rh, rw, *pixel_values);
    }
done:
    mbpo_free(x);
    if (!ok) { mbpo_free(*pixel_values); *pixel_values = NULL; }
    if (ok && resized) *resized = r;
    else mbpo_image_free(&r);
    return ok;
}


/* ------------------------------------------------------------------ 2. inputs: chat template */

/* The Qwen2-VL Instruct chat template (docs/QWEN2VL.md 5.2), rendered for one exchange:
     <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n
     <|im_start|>assistant\n[{response}<|im_end|>\n]
   {content} is the question with each "<image>" replaced by
   <|vision_start|><|image_pad|> x k<|vision_end|> (k = the image's tokens, as the processor
   expands it) and one newline right after a placeholder dropped - the question's text and
   images become the content items of the official template, which joins items with
   nothing between them. A question without placeholders gets its images first. The whole
   string is tokenized at once, as transformers does. */
static const char mbpo__default_system[] = "You are a helpful assistant.";

static void mbpo__chat_image(mbpo__sb *b, int64_t k) {
    mbpo__sb_puts(b, "<|vision_start|>");
    while (k-- > 0) mbpo__sb_puts(b, "<|image_pad|>");
    mbpo__sb_puts(b, "<|vision_end|>");
}
/* Number of "<image>" placeholders in a question. */
MBPODEF int mbpo_chat_count_images(const char *question) {
    int n = 0;
    const char *p = question;
    while ((p = strstr(p, "<image>")) != NULL) { n++; p += 7; }
    return n;
}

MBPODEF void mbpo_chat_free(mbpo_chat *c) {
    if (!c) return;
    mbpo_free(c->ids); mbpo_free(c->target);
    memset(c, 0, sizeof *c);
}

MBPODEF int mbpo_chat_encode(mbpo_tokenizer *tok, const char *system, const char *question,
                             const int64_t *image_tokens, int n_images, const char *response, mbpo_chat *out) {
    mbpo__sb b = { NULL, 0, 0, 0 };
    int placeholders = mbpo_chat_count_images(question), k = 0, ok = 0;
    int32_t pad = mbpo_tokenizer_find(tok, "<|image_pad|>"), im_end = mbpo_tokenizer_find(tok, "<|im_end|>");
    size_t prefix_len, response_at;
    int64_t n, i, n_prefix_added = 0, n_pad = 0, want_pad = 0, first_target = -1, seen_added = 0;
    const int32_t *ids;
    const char *q = question;
    memset(out, 0, sizeof *out);
    if (pad < 0 || im_end < 0 || mbpo_tokenizer_find(tok, "<|im_start|>") < 0 ||
        mbpo_tokenizer_find(tok, "<|vision_start|>") < 0 || mbpo_tokenizer_find(tok, "<|vision_end|>") < 0)
        return mbpo__fail("%s: not a Qwen2-VL tokenizer (the chat and vision special tokens are missing)", tok->path);
    if (placeholders && placeholders != n_images)
        return mbpo__fail("the question has %d <image> placeholders for %d images", placeholders, n_images);
    for (k = 0; k < n_images; k++) {
        if (image_tokens[k] <= 0) return mbpo__fail("image %d has %lld tokens", k, (long long)image_tokens[k]);
        want_pad += image_tokens[k];
    }
    mbpo__sb_puts(&b, "<|im_start|>system\n");
    mbpo__sb_puts(&b, system ? system : mbpo__default_system);
    mbpo__sb_puts(&b, "<|im_end|>\n<|im_start|>user\n");
    if (!placeholders)
        for (k = 0; k < n_images; k++) mbpo__chat_image(&b, image_tokens[k]);
    for (k = 0; ; k++) {
        const char *at = strstr(q, "<image>");
        if (!at) { mbpo__sb_puts(&b, q); break; }
        mbpo__sb_put(&b, q, (size_t)(at - q));
        mbpo__chat_image(&b, image_tokens[k]);
        q = at + 7;
        if (*q == '\n') q++;
    }
    mbpo__sb_puts(&b, "<|im_end|>\n<|im_start|>assistant\n");
    prefix_len = response_at = b.n;
    if (response) {
        mbpo__sb_puts(&b, response);
        mbpo__sb_puts(&b, "<|im_end|>\n");
    }
    if (b.failed) goto done;
    /* Count the added tokens of the prompt, to find where the response's stretch of text
       starts in the full encoding (a response may itself spell special tokens). */
    if (response) {
        if (!(ids = mbpo_tokenizer_encode(tok, b.s, prefix_len, 1, &n))) goto done;
        for (i = 0; i < n; i++) n_prefix_added += mbpo__tok_is_added(tok, ids[i]);
    }
    if (!(ids = mbpo_tokenizer_encode(tok, b.s, b.n, 1, &n))) goto done;
    if (n > MBPO_MAX_SEQ_LEN) {
        mbpo__fail("a conversation of %lld tokens (%lld of them image tokens), more than MBPO_MAX_SEQ_LEN (%d); shorten "
                   "it, lower max_pixels, or raise the limit with -DMBPO_MAX_SEQ_LEN=N", (long long)n, (long long)want_pad,
                   MBPO_MAX_SEQ_LEN);
        goto done;
    }
    out->ids = (int32_t *)mbpo__alloc((size_t)n * sizeof(int32_t) + 1);
    out->target = (uint8_t *)mbpo__calloc((size_t)n + 1, 1);
    if (!out->ids || !out->target) goto done;
    memcpy(out->ids, ids, (size_t)n * sizeof(int32_t));
    out->n = n;
    for (i = 0; i < n; i++) {
        n_pad += ids[i] == pad;
        if (response && first_target < 0 && seen_added == n_prefix_added && tok->out_end[i] > (int64_t)response_at)
            first_target = i;
        seen_added += mbpo__tok_is_added(tok, ids[i]);
    }
    if (n_pad != want_pad) {
        mbpo__fail("the text spells <|image_pad|> itself: %lld image tokens for %lld expected", (long long)n_pad,
                   (long long)want_pad);
        goto done;
    }
    /* The response's tokens and its closing <|im_end|> (the last but one id, before "\n");
       a token straddling the prompt/response boundary counts as a response token. */
    if (response) {
        if (n < 2 || ids[n - 2] != im_end) { mbpo__fail("internal: the rendering does not end with <|im_end|>\\n"); goto done; }
        if (first_target < 0) first_target = n - 2;   /* an empty response: only <|im_end|> */
        for (i = first_target; i <= n - 2; i++) out->target[i] = 1;
    }
    ok = 1;
done:
    if (!ok) mbpo_chat_free(out);
    mbpo_free(b.s);
    return ok;
}

/* ------------------------------------------------------------------ 2. inputs: datasets */

/* Closed-ended questions (docs/DESIGN.md 1): yes/no questions answered yes or no, and multiple
   choice with option lines "A. ...", "(A) ..." or "A) ..." (letters from A in order, at least
   two) whose answer names exactly one of the options. A question is closed only when its
   reference answer can be verified; anything ambiguous stays open, since a wrong label
   would reward wrong rollouts. ("A: ..." is not an option form: it is how dialogues and
   comics are transcribed.) */
static int mbpo__is_word_char(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
static int mbpo__lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static const char *mbpo__skip_space(const char *s) { while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++; return s; }
/* s starts with word w (case-insensitive) followed by a non-word character or the end. */
static int mbpo__starts_word(const char *s, const char *w) {
    size_t i;
    for (i = 0; w[i]; i++) if (mbpo__lower((unsigned char)s[i]) != w[i]) return 0;
    return !mbpo__is_word_char((unsigned char)s[i]);
}
/* Option line at s (after leading spaces): returns its letter and sets *text, or 0. */
static const char *mbpo__skip_blank(const char *s) { while (*s == ' ' || *s == '\t') s++; return s; }
static int mbpo__option_line(const char *s, const char **text) {
    int letter;
    s = mbpo__skip_blank(s);   /* within the line: a blank line is no option */
    if (*s == '(' && s[1] >= 'A' && s[1] <= 'Z' && s[2] == ')') { letter = s[1]; s += 3; }
    else if (s[0] >= 'A' && s[0] <= 'Z' && (s[1] == '.' || s[1] == ')')) { letter = s[0]; s += 2; }
    else return 0;
    if (*s != ' ' && *s != '\t') return 0;
    *text = mbpo__skip_blank(s);
    return letter;
}
/* Equal ignoring case, surrounding spaces and a final period. */
static int mbpo__same_text(const char *a, size_t na, const char *b, size_t nb) {
    while (na && (a[na - 1] == ' ' || a[na - 1] == '.' || a[na - 1] == '\r')) na--;
    while (nb && (b[nb - 1] == ' ' || b[nb - 1] == '.' || b[nb - 1] == '\r')) nb--;
    if (na != nb || na == 0) return 0;
    while (na--) if (mbpo__lower((unsigned char)a[na]) != mbpo__lower((unsigned char)b[na])) return 0;
    return 1;
}
/* The single option letter an answer names: "B", "B.", "(B)", "B) text", "B. text",
   "Answer: B", "The answer is B." or the full text of one option. 0 if none or ambiguous. */
static int mbpo__answer_letter(const char *answer, int n_options, const char *const *option_text,
                               const size_t *option_len) {
    const char *s = mbpo__skip_space(answer);
    size_t n;
    int k, found = 0;
    if (mbpo__starts_word(s, "the") && mbpo__starts_word(mbpo__skip_space(s + 3), "answer"))
        s = mbpo__skip_space(s + 3);
    if (mbpo__starts_word(s, "answer")) {   /* "Answer: B", "The answer is B", "The answer is: B" */
        s = mbpo__skip_space(s + 6);
        if (mbpo__starts_word(s, "is")) s = mbpo__skip_space(s + 2);
        if (*s == ':') s = mbpo__skip_space(s + 1);
    }
    {
        int letter = 0;
        const char *t = s;
        if (*t == '(' && t[1] >= 'A' && t[1] <= 'Z' && t[2] == ')') { letter = t[1]; t += 3; }
        else if (*t >= 'A' && *t <= 'Z' && !mbpo__is_word_char((unsigned char)t[1])) { letter = *t; t += 1; }
        if (letter && letter - 'A' < n_options) {
            /* the rest may be ".", ")" or ":" and the option's own text, nothing else */
            if (*t == '.' || *t == ')' || *t == ':') t++;
            t = mbpo__skip_space(t);
            n = strlen(t);
            if (n == 0 || mbpo__same_text(t, n, option_text[letter - 'A'], option_len[letter - 'A'])) return letter;
            return 0;
        }
    }
    n = strlen(s);
    for (k = 0; k < n_options; k++)
        if (mbpo__same_text(s, n, option_text[k], option_len[k])) { if (found) return 0; found = 'A' + k; }
    return found;
}
/* A yes/no question: it asks "yes or no", or a sentence of it opens with an auxiliary verb
   ("Is there ...", "Does the ...", "Answer briefly. Can you ..."). */
static int mbpo__yesno_question(const char *q) {
    static const char *const aux[] = { "is", "are", "was", "were", "do", "does", "did", "can", "could", "will",
                                       "would", "should", "shall", "has", "have", "had", "may", "might", "must" };
    const char *p;
    int start = 1;
    size_t k;
    for (p = q; *p; p++) {
        if ((p == q || !mbpo__is_word_char((unsigned char)p[-1])) && mbpo__starts_word(p, "yes") &&
            mbpo__starts_word(mbpo__skip_blank(p + 3), "or") &&
            mbpo__starts_word(mbpo__skip_blank(mbpo__skip_blank(p + 3) + 2), "no")) return 1;
        if (start && mbpo__is_word_char((unsigned char)*p)) {
            for (k = 0; k < sizeof aux / sizeof aux[0]; k++) if (mbpo__starts_word(p, aux[k])) return 1;
            start = 0;
        }
        if (*p == '\n' || ((*p == '.' || *p == '?' || *p == '!' || *p == ':') && (p[1] == ' ' || p[1] == '\n')) ||
            (*p == '>' && p > q && p[-1] == 'e'))   /* a new line, a new sentence, after "<image>" */
            start = 1;
        else if (*p != ' ' && *p != '\t' && *p != '\r' && !mbpo__is_word_char((unsigned char)*p)) start = 0;
    }
    return 0;
}
/* The option list of a question: consecutive option lines A, B, C, ... (the first list). */
static int mbpo__parse_options(const char *question, const char **opt_text, size_t *opt_len) {
    const char *line = question;
    int n_options = 0;
    while (line && *line) {
        const char *text, *eol = strchr(line, '\n');
        int l = mbpo__option_line(line, &text);
        if (l && l == 'A' + n_options && n_options < 26) {
            opt_text[n_options] = text;
            opt_len[n_options] = eol ? (size_t)(eol - text) : strlen(text);
            n_options++;
        } else if (l && n_options >= 2) break;   /* a second list: keep the first */
        line = eol ? eol + 1 : NULL;
    }
    return n_options;
}
MBPODEF mbpo_qkind mbpo_question_kind(const char *question, const char *answer, char *label) {
    const char *a = mbpo__skip_space(answer);
    const char *opt_text[26];
    size_t opt_len[26];
    int n_options = mbpo__parse_options(question, opt_text, opt_len), letter;
    *label = 0;
    if (n_options >= 2) {
        letter = mbpo__answer_letter(answer, n_options, opt_text, opt_len);
        if (letter) { *label = (char)letter; return MBPO_Q_MC; }
        return MBPO_Q_OPEN;
    }
    /* yes/no: a yes/no question, answered "yes" or "no" alone or opening a sentence ("No,
       the bus is parked."); not "No dogs are visible.", "No. 5" or "Yes, no." */
    if ((mbpo__starts_word(a, "yes") || mbpo__starts_word(a, "no")) && mbpo__yesno_question(question)) {
        int yes = mbpo__starts_word(a, "yes");
        const char *rest = a + (yes ? 3 : 2), *w;
        const char *after = *rest ? mbpo__skip_space(rest + 1) : rest;
        if (*mbpo__skip_space(rest) == 0 || ((*rest == '.' || *rest == ',' || *rest == '!' || *rest == ';') &&
                                             (rest[1] == 0 || rest[1] == ' ' || rest[1] == '\n') &&
                                             !(*rest == '.' && *after >= '0' && *after <= '9'))) {   /* "No. 5" */
            for (w = rest; *w; w++)   /* the other answer anywhere after it: ambiguous */
                if (!mbpo__is_word_char((unsigned char)w[-1]) && mbpo__starts_word(w, yes ? "no" : "yes")) return MBPO_Q_OPEN;
            *label = yes ? 'Y' : 'N';
            return MBPO_Q_YESNO;
        }
    }
    return MBPO_Q_OPEN;
}

/* Free what a sample owns (any field may be NULL) and zero it. */
static void mbpo__sample_clear(mbpo_sample *s) {
    int k;
    for (k = 0; k < s->n_images; k++) {
        if (s->images) mbpo_free(s->images[k]);
        if (s->image_files) mbpo_free(s->image_files[k]);
    }
    mbpo_free(s->id); mbpo_free(s->system); mbpo_free(s->question); mbpo_free(s->answer);
    mbpo_free(s->images); mbpo_free(s->image_files);
    memset(s, 0, sizeof *s);
}
MBPODEF void mbpo_dataset_free(mbpo_dataset *ds) {
    int64_t i;
    if (!ds) return;
    for (i = 0; i < ds->n; i++) mbpo__sample_clear(&ds->samples[i]);
    mbpo_free(ds->samples);
    memset(ds, 0, sizeof *ds);
}

static char *mbpo__strndup(const char *s, size_t n) {
    char *d = (char *)mbpo__alloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}
static int mbpo__ds_push(mbpo_dataset *ds, const mbpo_sample *s) {
    if (ds->n == ds->cap) {
        int64_t cap = ds->cap ? 2 * ds->cap : 64;
        mbpo_sample *p = (mbpo_sample *)mbpo__calloc((size_t)cap, sizeof *p);
        if (!p) return 0;
        if (ds->n) memcpy(p, ds->samples, (size_t)ds->n * sizeof *p);
        mbpo_free(ds->samples);
        ds->samples = p; ds->cap = cap;
    }
    ds->samples[ds->n++] = *s;
    return 1;
}

/* One record: {"id", "image" (a path or a list of paths), "conversations": [{"from", "value"}]}.
   Each human turn followed by a gpt turn becomes a sample; "system" sets the system prompt.
   Returns 1, or 0 with a reason (the caller adds file:line). */
static int mbpo__ds_record(mbpo_dataset *ds, const mbpo_json *r, const char *image_root, int64_t record) {
    const mbpo_json *id = mbpo_json_get(r, "id"), *img = mbpo_json_get(r, "image"), *conv;
    const char *system = NULL;
    char **images = NULL;
    int n_images = 0, k, turn = 0;
    size_t i, first = (size_t)ds->n;
    char *idbuf = NULL;
    if (r->type != MBPO_JSON_OBJECT) return mbpo__fail("a record must be a JSON object");
    if (!img) img = mbpo_json_get(r, "images");
    conv = mbpo_json_get(r, "conversations");
    if (!conv || conv->type != MBPO_JSON_ARRAY || conv->count == 0)
        return mbpo__fail("no \"conversations\" array");
    if (img && img->type != MBPO_JSON_NULL) {
        const mbpo_json *list = img->type == MBPO_JSON_ARRAY ? img : NULL;
        size_t count = list ? img->count : 1;
        if (!list && img->type != MBPO_JSON_STRING) return mbpo__fail("\"image\" must be a path or a list of paths");
        if (!(images = (char **)mbpo__calloc(count + 1, sizeof(char *)))) return 0;
        for (i = 0; i < count; i++) {
            const mbpo_json *p = list ? &list->items[i] : img;
            mbpo__sb path = { NULL, 0, 0, 0 };
            if (p->type != MBPO_JSON_STRING || p->len == 0) { mbpo__fail("\"image\" must be a path or a list of paths"); goto fail; }
            if (image_root && image_root[0] && p->string[0] != '/') { mbpo__sb_puts(&path, image_root); mbpo__sb_puts(&path, "/"); }
            mbpo__sb_puts(&path, p->string);
            if (path.failed) { mbpo_free(path.s); goto fail; }
            images[n_images++] = path.s;
            if (!mbpo__is_file(path.s)) goto fail;
        }
    }
    {   /* the id: a string, an integer, or (absent) the record's index */
        mbpo__sb b = { NULL, 0, 0, 0 };
        if (id && id->type == MBPO_JSON_STRING && id->len == strlen(id->string) && id->len) mbpo__sb_puts(&b, id->string);
        else if (id && id->is_int) mbpo__sb_printf(&b, "%lld", (long long)id->integer);
        else if (!id || id->type == MBPO_JSON_NULL) mbpo__sb_printf(&b, "%lld", (long long)record);
        else { mbpo__fail("\"id\" must be a non-empty string (without NUL) or an integer"); goto fail; }
        if (b.failed) { mbpo_free(b.s); goto fail; }
        idbuf = b.s;
    }
    for (i = 0; i < conv->count; i++) {
        const mbpo_json *t = &conv->items[i], *from = mbpo_json_get(t, "from"), *value = mbpo_json_get(t, "value");
        const char *role;
        if (!from) from = mbpo_json_get(t, "role");
        if (!value) value = mbpo_json_get(t, "content");
        if (!from || from->type != MBPO_JSON_STRING || !value || value->type != MBPO_JSON_STRING)
            { mbpo__fail("turn %zu needs string \"from\" and \"value\"", i); goto fail; }
        if (value->len != strlen(value->string)) { mbpo__fail("turn %zu contains a NUL character", i); goto fail; }
        role = from->string;
        if (!strcmp(role, "system")) { system = value->string; continue; }
        if (strcmp(role, "human") && strcmp(role, "user"))
            { mbpo__fail("turn %zu: unknown or misplaced role \"%s\" (expected human, then gpt)", i, role); goto fail; }
        if (i + 1 >= conv->count) break;   /* a trailing question without an answer */
        {
            const mbpo_json *t2 = &conv->items[i + 1], *from2 = mbpo_json_get(t2, "from"), *v2 = mbpo_json_get(t2, "value");
            mbpo_sample s;
            char label;
            int marks;
            if (!from2) from2 = mbpo_json_get(t2, "role");
            if (!v2) v2 = mbpo_json_get(t2, "content");
            if (!from2 || from2->type != MBPO_JSON_STRING || !v2 || v2->type != MBPO_JSON_STRING ||
                (strcmp(from2->string, "gpt") && strcmp(from2->string, "assistant")))
                { mbpo__fail("turn %zu: a human turn must be followed by a gpt turn", i); goto fail; }
            if (v2->len != strlen(v2->string)) { mbpo__fail("turn %zu contains a NUL character", i + 1); goto fail; }
            marks = mbpo_chat_count_images(value->string);
            if (marks && marks != n_images)
                { mbpo__fail("turn %zu has %d <image> placeholders for %d images", i, marks, n_images); goto fail; }
            memset(&s, 0, sizeof s);
            s.record = record;
            s.turn = turn;
            s.id = (char *)mbpo__alloc(strlen(idbuf) + 24);
            if (s.id) {
                if (turn) snprintf(s.id, strlen(idbuf) + 24, "%s#%d", idbuf, turn);
                else memcpy(s.id, idbuf, strlen(idbuf) + 1);
            }
            s.system = system ? mbpo__strdup(system) : NULL;
            s.question = mbpo__strndup(value->string, value->len);
            s.answer = mbpo__strndup(v2->string, v2->len);
            s.n_images = n_images;
            s.images = (char **)mbpo__calloc((size_t)n_images + 1, sizeof(char *));
            s.image_files = (char **)mbpo__calloc((size_t)n_images + 1, sizeof(char *));
            for (k = 0; k < n_images && s.images && s.image_files; k++) {
                const mbpo_json *f = img->type == MBPO_JSON_ARRAY ? &img->items[k] : img;
                s.images[k] = mbpo__strdup(images[k]);
                s.image_files[k] = mbpo__strdup(f->string);
                if (!s.images[k] || !s.image_files[k]) { mbpo_free(s.images[k]); mbpo_free(s.image_files[k]); s.images[k] = s.image_files[k] = NULL; break; }
            }
            s.kind = mbpo_question_kind(s.question, s.answer, &label);
            s.label = label;
            if (!s.id || (system && !s.system) || !s.question || !s.answer || !s.images || !s.image_files ||
                (n_images && !s.image_files[n_images - 1]) || !mbpo__ds_push(ds, &s)) {
                mbpo__sample_clear(&s);
                goto fail;
            }
            turn++;
            i++;
        }
    }
    for (k = 0; k < n_images; k++) mbpo_free(images[k]);
    mbpo_free(images);
    mbpo_free(idbuf);
    return 1;
fail:
    if (images) for (k = 0; k < n_images; k++) mbpo_free(images[k]);
    mbpo_free(images);
    mbpo_free(idbuf);
    while ((size_t)ds->n > first) mbpo__sample_clear(&ds->samples[--ds->n]);   /* drop this record's samples */
    return 0;
}

static int mbpo__ds_bad(mbpo_dataset *ds, const char *path, int64_t line, int strict, FILE *log) {
    char why[sizeof mbpo__reason];
    memcpy(why, mbpo__reason, sizeof why);
    mbpo__fail("%.400s:%lld: %.600s", path, (long long)line, why);
    ds->n_bad++;
    if (strict) return 0;
    if (log) fprintf(log, "warning: skipped %s\n", mbpo__reason);
    return 1;
}

MBPODEF int mbpo_dataset_load(mbpo_dataset *ds, const char *path, const char *image_root, int strict, FILE *log) {
    size_t len = 0;
    char *text = mbpo_read_file(path, &len);
    const char *p;
    int ok = 0;
    memset(ds, 0, sizeof *ds);
    if (!text) return 0;
    p = mbpo__skip_space(text);
    if (*p == '[') {   /* a JSON array of records */
        mbpo_json *root = mbpo_json_parse(text, len, path);
        size_t i;
        if (!root) goto done;
        for (i = 0; i < root->count; i++)
            if (!mbpo__ds_record(ds, &root->items[i], image_root, (int64_t)i) &&
                !mbpo__ds_bad(ds, path, root->items[i].line, strict, log)) { mbpo_json_free(root); goto done; }
        mbpo_json_free(root);
    } else {           /* JSONL: one record per line; blank lines are allowed */
        const char *line = text, *end = text + len;
        int64_t lineno = 0, record = 0;
        while (line < end) {
            const char *eol = (const char *)memchr(line, '\n', (size_t)(end - line));
            size_t n = eol ? (size_t)(eol - line) : (size_t)(end - line);
            lineno++;
            if (mbpo__skip_space(line) < line + n) {
                mbpo_json *r = mbpo_json_parse(line, n, path);
                int good = r && mbpo__ds_record(ds, r, image_root, record);
                if (!r) mbpo__json_line_reason(path);   /* mbpo__ds_bad adds "path:line: " */
                mbpo_json_free(r);
                record++;
                if (!good && !mbpo__ds_bad(ds, path, lineno, strict, log)) goto done;
            }
            line = eol ? eol + 1 : end;
        }
    }
    ok = 1;
done:
    mbpo_free(text);
    if (!ok) { char why[sizeof mbpo__reason]; memcpy(why, mbpo__reason, sizeof why); mbpo_dataset_free(ds); mbpo__fail("%s", why); }
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
    if (v->type != MBPO_JSON_NUMBER || !(v->number > 0) || !isfinite(v->number))   /* 1e506 reads as inf */
        return mbpo__fail("%s:%d:%d: \"%s\" must be a positive finite number", name, v->line, v->col, key);
    *out = v->number;
    return 1;
}

/* Qwen2.5-VL's vision_config (QWEN25VL.md 1.1): "hidden_size" is the ViT width here and the
   merger's output is "out_hidden_size"; the class defaults apply to missing keys, including
   the surprising 3584-wide ViT when "hidden_size" is missing. */
static int mbpo__qwen25_vision_config(mbpo_config *c, const mbpo_json *vc, const char *name) {
    const mbpo_json *v;
    int64_t out, vws;
    int k;
    if (mbpo_json_get(vc, "embed_dim") && !mbpo_json_get(vc, "out_hidden_size"))
        return mbpo__fail("%s: vision_config has Qwen2-VL keys (\"embed_dim\") but model_type is \"qwen2_5_vl\", whose "
                          "vision_config needs \"hidden_size\" (ViT width) and \"out_hidden_size\"", name);
    if (!mbpo__cfg_int(vc, "hidden_size", name, &c->v_embed_dim, 0, 3584, 1) ||
        !mbpo__cfg_int(vc, "intermediate_size", name, &c->v_mlp_hidden, 0, 3420, 1) ||
        !mbpo__cfg_int(vc, "out_hidden_size", name, &out, 0, 3584, 1) ||
        !mbpo__cfg_int(vc, "window_size", name, &c->v_window_size, 0, 112, 1) ||
        !mbpo__cfg_int(vc, "tokens_per_second", name, &c->v_tokens_per_second, 0, 4, 0))
        return 0;
    if (out != c->hidden_size)
        return mbpo__fail("%s: vision_config.out_hidden_size %lld must equal the LM hidden_size %lld", name,
                          (long long)out, (long long)c->hidden_size);
    vws = c->v_window_size / c->v_merge / c->v_patch;
    if (vws < 1)
        return mbpo__fail("%s: vision_config.window_size %lld is smaller than one merge unit (spatial_merge_size %lld x "
                          "patch_size %lld = %lld pixels)", name, (long long)c->v_window_size, (long long)c->v_merge,
                          (long long)c->v_patch, (long long)(c->v_merge * c->v_patch));
    v = mbpo_json_get(vc, "fullatt_block_indexes");
    if (!v || v->type == MBPO_JSON_NULL) {
        static const int dflt[4] = { 7, 15, 23, 31 };
        c->v_n_fullatt = 4;
        for (k = 0; k < 4; k++) c->v_fullatt[k] = dflt[k];
    } else {
        if (v->type != MBPO_JSON_ARRAY || v->count > MBPO_MAX_FULLATT)
            return mbpo__fail("%s:%d:%d: \"fullatt_block_indexes\" must be a list of at most %d block indices", name,
                              v->line, v->col, MBPO_MAX_FULLATT);
        c->v_n_fullatt = (int)v->count;
        for (k = 0; k < c->v_n_fullatt; k++) {
            const mbpo_json *e = &v->items[k];
            /* transformers tests plain list membership: an index past the depth never matches
               (a pruned model may keep the hub's list), a negative one does not wrap */
            if (e->type != MBPO_JSON_NUMBER || !e->is_int || e->integer < 0 || e->integer > INT32_MAX)
                return mbpo__fail("%s:%d:%d: \"fullatt_block_indexes\" entry %d must be a non-negative block index "
                                  "(negative indices do not wrap in transformers)", name, e->line, e->col, k);
            c->v_fullatt[k] = (int)e->integer;
        }
    }
    return 1;
}
/* Does vision block l attend over whole images (not windows)? Qwen2-VL: every block. */
static int mbpo__vblock_full(const mbpo_config *c, int64_t l) {
    int k;
    if (c->arch == MBPO_ARCH_QWEN2_VL) return 1;
    for (k = 0; k < c->v_n_fullatt; k++)
        if (c->v_fullatt[k] == l) return 1;
    return 0;
}

MBPODEF int mbpo_config_from_json(mbpo_config *c, const mbpo_json *root, const char *name) {
    const mbpo_json *tc, *vc, *v, *rope, *sec = NULL, *mt;
    const char *text_name = name;
    int64_t tmp;
    int k;
    memset(c, 0, sizeof *c);
    if (!root || root->type != MBPO_JSON_OBJECT) return mbpo__fail("%s: not a JSON object", name);
    /* The family first: the two read vision_config.hidden_size differently (QWEN25VL.md 1.1). */
    mt = mbpo_json_get(root, "model_type");
    if (mt && mt->type != MBPO_JSON_STRING) return mbpo__fail("%s:%d:%d: \"model_type\" must be a string", name, mt->line, mt->col);
    if (!mt || !strcmp(mt->string, "qwen2_vl")) c->arch = MBPO_ARCH_QWEN2_VL;
    else if (!strcmp(mt->string, "qwen2_5_vl")) c->arch = MBPO_ARCH_QWEN2_5_VL;
    else return mbpo__fail("%s: model_type \"%s\" is not supported (expected \"qwen2_vl\" or \"qwen2_5_vl\")", name, mt->string);
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
    /* rms_norm_eps and rope_theta take the text-config class defaults of transformers when
       missing (both families): 1e-5 (the hub files set 1e-6) and 1e6 */
    if (!mbpo__cfg_num(mbpo__cfg_key(root, "rms_norm_eps"), "rms_norm_eps", name, &c->rms_norm_eps, 0, 1e-5)) return 0;
    {   /* Tying. transformers 5.x reads the top-level flag; 4.57 re-saves may keep it only in
           text_config, and 4.57's Qwen2.5-VL ties iff text_config says so (QWEN25VL.md 1.4).
           Qwen2-VL: top level first, then text_config. Qwen2.5-VL with a text_config: unless
           both say the same, the two transformers versions can build different models from
           one file (a missing key takes different defaults: 4.57 saves a tied model with the
           flag only in text_config, an untied one only at the top level), so the checkpoint
           decides (mbpo_model_load: tied iff it has no lm_head.weight). Default untied. */
        const mbpo_json *top = mbpo_json_get(root, "tie_word_embeddings");
        const mbpo_json *in = tc != root ? mbpo_json_get(tc, "tie_word_embeddings") : NULL;
        if ((top && top->type != MBPO_JSON_TRUE && top->type != MBPO_JSON_FALSE) ||
            (in && in->type != MBPO_JSON_TRUE && in->type != MBPO_JSON_FALSE)) {
            v = top && top->type != MBPO_JSON_TRUE && top->type != MBPO_JSON_FALSE ? top : in;
            return mbpo__fail("%s:%d:%d: \"tie_word_embeddings\" must be true or false", name, v->line, v->col);
        }
        if (c->arch == MBPO_ARCH_QWEN2_5_VL && tc != root) {
            int t_top = top && top->type == MBPO_JSON_TRUE, t_in = in && in->type == MBPO_JSON_TRUE;
            c->tie_word_embeddings = t_in;   /* 4.57.6, until the checkpoint says otherwise */
            c->tie_from_checkpoint = !top || !in || t_top != t_in;
        } else {
            v = top ? top : in;
            c->tie_word_embeddings = v ? v->type == MBPO_JSON_TRUE : 0;
        }
    }
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
    if (!mbpo__cfg_num(v, "rope_theta", name, &c->rope_theta, 0, 1000000.0)) return 0;
    /* Vision tower: hub configs rely on class defaults for most fields. */
    vc = mbpo_json_get(root, "vision_config");
    if (!vc || vc->type != MBPO_JSON_OBJECT) return mbpo__fail("%s: missing required object \"vision_config\"", name);
    if (!mbpo__cfg_int(vc, "depth", name, &c->v_depth, 0, 32, 1) ||
        !mbpo__cfg_int(vc, "num_heads", name, &c->v_heads, 0, 16, 1) ||
        !mbpo__cfg_int(vc, "patch_size", name, &c->v_patch, 0, 14, 1) ||
        !mbpo__cfg_int(vc, "temporal_patch_size", name, &c->v_temporal_patch, 0, 2, 1) ||
        !mbpo__cfg_int(vc, "spatial_merge_size", name, &c->v_merge, 0, 2, 1) ||
        !mbpo__cfg_int(vc, "in_channels", name, &c->v_in_channels, 0, 3, 1))
        return 0;
    if (!mbpo_json_get(vc, "in_channels") && !mbpo__cfg_int(vc, "in_chans", name, &c->v_in_channels, 0, 3, 1)) return 0;
    if (c->arch == MBPO_ARCH_QWEN2_VL) {
        if (!mbpo__cfg_int(vc, "embed_dim", name, &c->v_embed_dim, 0, 1280, 1) ||
            !mbpo__cfg_int(vc, "mlp_ratio", name, &tmp, 0, 4, 1))
            return 0;
        c->v_mlp_hidden = c->v_embed_dim * tmp;
    } else if (!mbpo__qwen25_vision_config(c, vc, name)) {
        return 0;
    }
    v = mbpo_json_get(vc, "hidden_act");
    if (c->arch == MBPO_ARCH_QWEN2_VL && v && (v->type != MBPO_JSON_STRING || strcmp(v->string, "quick_gelu")))
        return mbpo__fail("%s: vision_config.hidden_act must be \"quick_gelu\" for qwen2_vl", name);
    if (c->arch == MBPO_ARCH_QWEN2_5_VL && v && (v->type != MBPO_JSON_STRING || strcmp(v->string, "silu")))
        return mbpo__fail("%s: vision_config.hidden_act must be \"silu\" (the SwiGLU of qwen2_5_vl)", name);
    v = mbpo__cfg_key(root, "hidden_act");
    if (v && (v->type != MBPO_JSON_STRING || strcmp(v->string, "silu")))
        return mbpo__fail("%s: hidden_act must be \"silu\" (the decoder's SwiGLU)", name);
    v = mbpo__cfg_key(root, "use_sliding_window");
    if (v && v->type == MBPO_JSON_TRUE) return mbpo__fail("%s: use_sliding_window=true is not supported", name);
    c->v_rope_theta = 10000.0;
    if (c->arch == MBPO_ARCH_QWEN2_VL) {   /* the merger's output must feed the LM */
        int64_t vh;
        if (!mbpo__cfg_int(vc, "hidden_size", name, &vh, 0, c->hidden_size, 1)) return 0;
        if (vh != c->hidden_size)
            return mbpo__fail("%s: vision_config.hidden_size %lld must equal the LM hidden_size %lld",
                              name, (long long)vh, (long long)c->hidden_size);
    }
    /* Shape constraints transformers also imposes (docs/QWEN2VL.md 9.1). */
    if (c->hidden_size % c->n_heads || c->n_heads % c->n_kv_heads)
        return mbpo__fail("%s: hidden_size %% num_attention_heads and num_attention_heads %% num_key_value_heads must be 0", name);
    if (c->head_dim % 2 || c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2] != c->head_dim / 2)
        return mbpo__fail("%s: mrope_section [%d, %d, %d] must sum to head_dim/2 = %lld", name, c->mrope_section[0],
                          c->mrope_section[1], c->mrope_section[2], (long long)(c->head_dim / 2));
    if (c->v_embed_dim % c->v_heads || (c->v_embed_dim / c->v_heads) % 4)
        return mbpo__fail("%s: vision head size vision_config.%s / num_heads must be a multiple of 4", name,
                          c->arch == MBPO_ARCH_QWEN2_5_VL ? "hidden_size" : "embed_dim");
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
    int q25 = c->arch == MBPO_ARCH_QWEN2_5_VL, k;
    mbpo__sb_printf(&b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"attention_dropout\": 0.0,\n",
                    q25 ? "Qwen2_5_VLForConditionalGeneration" : "Qwen2VLForConditionalGeneration", q25 ? "qwen2_5_vl" : "qwen2_vl");
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
        "  \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [%d, %d, %d]},\n",
        (long long)c->vision_start_token_id, (long long)c->vision_end_token_id, (long long)c->image_token_id,
        (long long)c->video_token_id, (long long)c->hidden_size, (long long)c->intermediate_size,
        (long long)c->max_position_embeddings, (long long)c->n_heads, (long long)c->n_layers,
        (long long)c->n_kv_heads, c->rms_norm_eps, c->rope_theta, c->tie_word_embeddings ? "true" : "false",
        (long long)c->vocab_size, c->mrope_section[0], c->mrope_section[1], c->mrope_section[2]);
    if (!q25) {
        mbpo__sb_printf(&b,
            "  \"vision_config\": {\"depth\": %lld, \"embed_dim\": %lld, \"mlp_ratio\": %lld, \"num_heads\": %lld,\n"
            "    \"in_chans\": %lld, \"hidden_size\": %lld, \"patch_size\": %lld, \"spatial_merge_size\": %lld,\n"
            "    \"temporal_patch_size\": %lld, \"hidden_act\": \"quick_gelu\"}\n}\n",
            (long long)c->v_depth, (long long)c->v_embed_dim, (long long)(c->v_mlp_hidden / c->v_embed_dim),
            (long long)c->v_heads, (long long)c->v_in_channels, (long long)c->hidden_size, (long long)c->v_patch,
            (long long)c->v_merge, (long long)c->v_temporal_patch);
    } else {   /* the hub layout of Qwen2.5-VL: hidden_size is the ViT width, out_hidden_size the LM's */
        mbpo__sb_printf(&b,
            "  \"vision_config\": {\"depth\": %lld, \"hidden_size\": %lld, \"intermediate_size\": %lld, \"num_heads\": %lld,\n"
            "    \"out_hidden_size\": %lld, \"in_chans\": %lld, \"in_channels\": %lld, \"patch_size\": %lld,\n"
            "    \"spatial_merge_size\": %lld, \"temporal_patch_size\": %lld, \"window_size\": %lld,\n"
            "    \"tokens_per_second\": %lld, \"hidden_act\": \"silu\", \"fullatt_block_indexes\": [",
            (long long)c->v_depth, (long long)c->v_embed_dim, (long long)c->v_mlp_hidden, (long long)c->v_heads,
            (long long)c->hidden_size, (long long)c->v_in_channels, (long long)c->v_in_channels, (long long)c->v_patch,
            (long long)c->v_merge, (long long)c->v_temporal_patch, (long long)c->v_window_size,
            (long long)c->v_tokens_per_second);
        for (k = 0; k < c->v_n_fullatt; k++) mbpo__sb_printf(&b, "%s%d", k ? ", " : "", c->v_fullatt[k]);
        mbpo__sb_printf(&b, "]}\n}\n");
    }
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
    int q25 = c->arch == MBPO_ARCH_QWEN2_5_VL;
    memset(t, 0, sizeof *t);
    b.t = t; b.cap = 0; b.failed = 0;
    mbpo__tb_add(&b, "visual.patch_embed.proj.weight", 5, E, c->v_in_channels, c->v_temporal_patch, c->v_patch, c->v_patch);
    for (l = 0; l < c->v_depth; l++) {
#define MBPO__V(suffix, nd, a, bb) do { snprintf(name, sizeof name, "visual.blocks.%lld.%s", (long long)l, suffix); \
        mbpo__tb_add(&b, name, nd, a, bb, 0, 0, 0); } while (0)
        if (!q25) {   /* LayerNorm, QuickGELU MLP */
            MBPO__V("norm1.weight", 1, E, 0); MBPO__V("norm1.bias", 1, E, 0);
            MBPO__V("attn.qkv.weight", 2, 3 * E, E); MBPO__V("attn.qkv.bias", 1, 3 * E, 0);
            MBPO__V("attn.proj.weight", 2, E, E); MBPO__V("attn.proj.bias", 1, E, 0);
            MBPO__V("norm2.weight", 1, E, 0); MBPO__V("norm2.bias", 1, E, 0);
            MBPO__V("mlp.fc1.weight", 2, F, E); MBPO__V("mlp.fc1.bias", 1, F, 0);
            MBPO__V("mlp.fc2.weight", 2, E, F); MBPO__V("mlp.fc2.bias", 1, E, 0);
        } else {      /* RMSNorm, SwiGLU MLP with biases (QWEN25VL.md 3.7) */
            MBPO__V("norm1.weight", 1, E, 0);
            MBPO__V("attn.qkv.weight", 2, 3 * E, E); MBPO__V("attn.qkv.bias", 1, 3 * E, 0);
            MBPO__V("attn.proj.weight", 2, E, E); MBPO__V("attn.proj.bias", 1, E, 0);
            MBPO__V("norm2.weight", 1, E, 0);
            MBPO__V("mlp.gate_proj.weight", 2, F, E); MBPO__V("mlp.gate_proj.bias", 1, F, 0);
            MBPO__V("mlp.up_proj.weight", 2, F, E); MBPO__V("mlp.up_proj.bias", 1, F, 0);
            MBPO__V("mlp.down_proj.weight", 2, E, F); MBPO__V("mlp.down_proj.bias", 1, E, 0);
        }
#undef MBPO__V
    }
    mbpo__tb_add(&b, "visual.merger.ln_q.weight", 1, E, 0, 0, 0, 0);
    if (!q25) mbpo__tb_add(&b, "visual.merger.ln_q.bias", 1, E, 0, 0, 0, 0);
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
        memset(v, 0, sizeof *v);
        if (c->arch == MBPO_ARCH_QWEN2_VL) {
            v->norm1_w = MBPO__NEXT; v->norm1_b = MBPO__NEXT; v->qkv_w = MBPO__NEXT; v->qkv_b = MBPO__NEXT;
            v->proj_w = MBPO__NEXT; v->proj_b = MBPO__NEXT; v->norm2_w = MBPO__NEXT; v->norm2_b = MBPO__NEXT;
            v->fc1_w = MBPO__NEXT; v->fc1_b = MBPO__NEXT; v->fc2_w = MBPO__NEXT; v->fc2_b = MBPO__NEXT;
        } else {
            v->norm1_w = MBPO__NEXT; v->qkv_w = MBPO__NEXT; v->qkv_b = MBPO__NEXT;
            v->proj_w = MBPO__NEXT; v->proj_b = MBPO__NEXT; v->norm2_w = MBPO__NEXT;
            v->gate_w = MBPO__NEXT; v->gate_b = MBPO__NEXT; v->up_w = MBPO__NEXT; v->up_b = MBPO__NEXT;
            v->down_w = MBPO__NEXT; v->down_b = MBPO__NEXT;
        }
    }
    w->merger_ln_w = MBPO__NEXT; w->merger_ln_b = c->arch == MBPO_ARCH_QWEN2_VL ? MBPO__NEXT : NULL;
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
static void mbpo__backend_free(mbpo_model *m);

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
MBPODEF void mbpo_model_randomize(mbpo_model *m, uint64_t seed) {
    mbpo_rng rng;
    size_t p;
    mbpo_rng_seed(&rng, seed);
    for (p = 0; p < m->table.n; p++) {
        const mbpo_param_info *pi = &m->table.info[p];
        float *x = m->params + pi->offset;
        int64_t i, fan_in = pi->ndim > 1 ? pi->numel / pi->shape[0] : 1;
        int is_bias = strstr(pi->name, ".bias") != NULL, is_embed = strstr(pi->name, "embed_tokens") != NULL;
        for (i = 0; i < pi->numel; i++) {
            double r = mbpo_rng_normal(&rng);
            x[i] = (float)(is_embed ? r : pi->ndim == 1 ? (is_bias ? 0.1 * r : 1.0 + 0.1 * r) : r / sqrt((double)fan_in));
        }
    }
    mbpo_model_params_changed(m);
}
MBPODEF void mbpo_model_free(mbpo_model *m) {
    mbpo__backend_free(m);   /* first: it tells backend copies from the host buffers */
    mbpo_param_table_free(&m->table);
    mbpo_free(m->params);
    mbpo_free(m->grads);
    mbpo_free(m->w.vblocks); mbpo_free(m->w.layers);
    mbpo_free(m->g.vblocks); mbpo_free(m->g.layers);
    memset(m, 0, sizeof *m);
}
/* Map a checkpoint key of either layout (docs/QWEN2VL.md 3.7) to the hub name, or NULL when the
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
    const mbpo_st_tensor *stray_head = NULL;
    size_t i;
    int ok = 0;
    memset(m, 0, sizeof *m);
    memset(&st, 0, sizeof st);
    if (!cfg_path) return 0;
    if (!mbpo__file_exists(cfg_path)) { mbpo__fail("%s: missing (a model directory needs config.json)", cfg_path); goto done; }
    if (!mbpo_config_load(&cfg, cfg_path) || !mbpo_st_open_dir(&st, dir)) goto done;
    {   /* tied iff the checkpoint has no head, when the config cannot say (QWEN25VL.md 1.4) */
        int has_head = 0;
        for (i = 0; i < st.n_tensors; i++) {
            const char *hub = mbpo__hub_name(st.tensors[i].name, buf, sizeof buf);
            /* the other family's vision names: say which config field is at odds with the file */
            int other = hub && !strncmp(hub, "visual.", 7) &&
                        (cfg.arch == MBPO_ARCH_QWEN2_5_VL ? strstr(hub, ".mlp.fc1.") || strstr(hub, ".mlp.fc2.") ||
                                                                strstr(hub, "norm1.bias") || strstr(hub, "norm2.bias") ||
                                                                strstr(hub, "ln_q.bias")
                                                          : strstr(hub, "_proj.") != NULL);
            if (other) {
                mbpo__fail("%s: tensor '%s' is a %s name, but %s has \"model_type\": \"%s\"", st.paths[st.tensors[i].file],
                           st.tensors[i].name, cfg.arch == MBPO_ARCH_QWEN2_5_VL ? "Qwen2-VL" : "Qwen2.5-VL", cfg_path,
                           cfg.arch == MBPO_ARCH_QWEN2_5_VL ? "qwen2_5_vl" : "qwen2_vl");
                goto done;
            }
            has_head |= hub && !strcmp(hub, "lm_head.weight");
        }
        if (cfg.tie_from_checkpoint) cfg.tie_word_embeddings = !has_head;
        else if (!cfg.tie_word_embeddings && !has_head) {
            mbpo__fail("%s: the config makes an untied model (tie_word_embeddings false or missing) but the checkpoint "
                       "in %s has no lm_head.weight (a tied model's checkpoint?)", cfg_path, dir);
            goto done;
        }
    }
    if (!mbpo_model_init(m, &cfg)) goto done;
    seen = (unsigned char *)mbpo__calloc(m->table.n + 1, 1);
    if (!seen) goto done;
    for (i = 0; i < st.n_tensors; i++) {
        const mbpo_st_tensor *t = &st.tensors[i];
        const char *hub = mbpo__hub_name(t->name, buf, sizeof buf);
        const mbpo_param_info *p;
        int k;
        size_t idx;
        /* A tied model never needs the head, and transformers drops a stray copy; one that is
           not the embedding is a contradiction (a trained head would be lost): checked below. */
        if (hub && !strcmp(hub, "lm_head.weight") && cfg.tie_word_embeddings) { stray_head = t; continue; }
        p = hub ? mbpo_param_find(&m->table, hub) : NULL;
        if (!p) {
            mbpo__fail("%s: unexpected tensor '%s' (not a parameter of this %s config)", st.paths[t->file], t->name,
                       cfg.arch == MBPO_ARCH_QWEN2_5_VL ? "Qwen2.5-VL" : "Qwen2-VL");
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
    if (stray_head) {
        int64_t n = m->cfg.vocab_size * m->cfg.hidden_size, k, differ = 0;
        float *head = stray_head->numel == n ? (float *)mbpo__alloc((size_t)n * sizeof(float)) : NULL;
        if (stray_head->numel == n && (!head || !mbpo_st_read_f32(&st, stray_head, head))) { mbpo_free(head); goto done; }
        for (k = 0; head && k < n; k++) differ += head[k] != m->w.embed[k];
        mbpo_free(head);
        if (stray_head->numel != n || differ) {
            mbpo__fail("%s: lm_head.weight is not model.embed_tokens.weight (%lld values differ) but %s ties them "
                       "(tie_word_embeddings true): transformers would drop this head", st.paths[stray_head->file],
                       (long long)(stray_head->numel != n ? n : differ), cfg_path);
            goto done;
        }
    }
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

/* The one matrix product every Linear uses, forward and backward:
       out (M, N) (+)= A . B^T  (+ bias (N))
   A is (M, K) row-major, or stored transposed as (K, M) when a_t;
   B is (N, K) row-major (a Linear weight, "out x in"), or stored as (K, N) when b_t.
   The three uses: forward out = inp . W^T (a_t 0, b_t 0); dinp += dout . W (b_t 1);
   dW += dout^T . inp (a_t 1, b_t 1). No operand is ever transposed whole: the packing below
   reads each layout where it lies.

   Method (the classic blocked GEMM): the output is cut into tiles of MC rows x NC columns, each
   tile is one unit of work. For each K-block of KC, the tile's piece of A is copied into
   MR-row strips laid out k-major ((KC, MR) each) and B's into NR-column strips ((KC, NR)
   each), zero padded at the edges; then a register-blocked micro-kernel keeps an MR x NR block
   of the output in vector registers while it runs over k: per k one broadcast of each of A's MR
   values times NR/VL vector loads of B, MR * NR / VL fused multiply-adds. Sizes: the tile's
   B (KC, NC) is packed once a K-block, every strip of it then read by the micro-kernels of all
   the tile's rows (one strip, 16 KB with AVX2 and 32 with AVX-512, stays in L1 over them); the
   tile's packed A (at most 768 x 256 floats a K-block) streams from L2, and a thread keeps the
   whole panel for its next tile of the same rows. B stored (K, N) is read a whole panel row at
   a time (a strip at a time would be one cache line every N floats: 4x slower on a Zen 3).

   Reproducible: every output is one fused multiply-add chain over k in increasing order,
   started from 0 (or from out when accumulating), the bias added last. Blocking, packing and
   the thread that computes a tile change none of that, so the bits depend on neither the
   thread count nor the schedule - only on the build (with FMA or without). Tiles are handed
   out dynamically, so a thread the OS deschedules costs its share, not a wait at every op. */
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>
#define MBPO__GEMM_ISA "avx512"
#define MBPO__GEMM_VL 16                 /* floats per vector register */
#define MBPO__GEMM_MR 12                 /* 12 x 2 accumulators + 2 of B: 26 of 32 registers */
typedef __m512 mbpo__vf;
#define MBPO__VLOAD(p) _mm512_load_ps(p)
#define MBPO__VLOADU(p) _mm512_loadu_ps(p)
#define MBPO__VSTOREU(p, v) _mm512_storeu_ps(p, v)
#define MBPO__VSET1(x) _mm512_set1_ps(x)
#define MBPO__VZERO() _mm512_setzero_ps()
#define MBPO__VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define MBPO__VADD(a, b) _mm512_add_ps(a, b)
typedef __mmask16 mbpo__vmask;           /* lanes < n of a vector (0 <= n) */
#define MBPO__VMASK(n) ((__mmask16)((n) >= 16 ? 0xFFFFu : (1u << (n)) - 1u))
#define MBPO__VLOADM(p, m) _mm512_maskz_loadu_ps(m, p)
#define MBPO__VSTOREM(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#elif defined(__AVX2__) && defined(__FMA__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>
#define MBPO__GEMM_ISA "avx2+fma"
#define MBPO__GEMM_VL 8
#define MBPO__GEMM_MR 6                  /* 6 x 2 accumulators + 2 of B + 1 broadcast: 15 of 16 */
typedef __m256 mbpo__vf;
#define MBPO__VLOAD(p) _mm256_load_ps(p)
#define MBPO__VLOADU(p) _mm256_loadu_ps(p)
#define MBPO__VSTOREU(p, v) _mm256_storeu_ps(p, v)
#define MBPO__VSET1(x) _mm256_set1_ps(x)
#define MBPO__VZERO() _mm256_setzero_ps()
#define MBPO__VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define MBPO__VADD(a, b) _mm256_add_ps(a, b)
typedef __m256i mbpo__vmask;
#define MBPO__VMASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define MBPO__VLOADM(p, m) _mm256_maskload_ps(p, m)
#define MBPO__VSTOREM(p, m, v) _mm256_maskstore_ps(p, m, v)
#else
#define MBPO__GEMM_ISA "portable"
#define MBPO__GEMM_MR 4                  /* plain C the compiler vectorizes */
#endif
/* One step of an output's chain: fused where the machine has a fused multiply-add (as the
   vector kernels always are), so the compiler's contraction choices never enter the result. */
#if defined(__FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define MBPO__MADD(a, b, c) fmaf(a, b, c)
#else
#define MBPO__MADD(a, b, c) ((a) * (b) + (c))
#endif
/* e^x in fp32, for softmax, sigmoid and the attention's probabilities: n = round(x / ln 2),
   r = x - n ln 2 in two steps (ln 2 split so that n * the high part is exact), e^r by a degree-7
   polynomial (Cephes' expf coefficients, Horner form), then times 2^n as two powers of two (2^n
   alone is not a normal float below n = -126: the second product rounds into the subnormals
   once). At most 0.86 ulp from e^x over the normal range (every 97th float checked against double
   exp), 1.1 without a fused multiply-add (test expf; docs/DESIGN.md 9). Only multiply-adds,
   products, a clamp and integer bits: a loop of it vectorizes, and a vector lane computes what the
   scalar call computes, so the fast and plain kernels agree bit for bit (libm's expf is a call per
   value: a quarter of the attention's time in a mid step, perf). -inf gives 0, +inf and
   x > 88.73 inf, NaN NaN. */
static inline float mbpo__expf(float x) {
    float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
    float t = MBPO__MADD(xc, 1.44269504088896341f, 12582912.0f), n = t - 12582912.0f;  /* 1.5 * 2^23: rounds */
    float r = MBPO__MADD(n, -0.693359375f, xc), p = 1.9875691500e-4f, s1, s2;
    uint32_t b, b1, b2;
    int32_t ni, n1;
    r = MBPO__MADD(n, 2.12194440e-4f, r);
    p = MBPO__MADD(p, r, 1.3981999507e-3f);
    p = MBPO__MADD(p, r, 8.3334519073e-3f);
    p = MBPO__MADD(p, r, 4.1665795894e-2f);
    p = MBPO__MADD(p, r, 1.6666665459e-1f);
    p = MBPO__MADD(p, r, 5.0000001201e-1f);
    p = MBPO__MADD(p, r, 1.0f);
    p = MBPO__MADD(p, r, 1.0f);
    memcpy(&b, &t, sizeof b);
    ni = (int32_t)(b - 0x4B400000u);                 /* n, from t's low mantissa bits */
    n1 = ni / 2;
    b1 = (uint32_t)(n1 + 127) << 23; b2 = (uint32_t)(ni - n1 + 127) << 23;
    memcpy(&s1, &b1, sizeof s1); memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}
#ifdef MBPO__GEMM_VL
#define MBPO__GEMM_NR (2 * MBPO__GEMM_VL)   /* two vectors of output columns per row */
#else
#define MBPO__GEMM_NR 16
#endif
#ifndef MBPO__GEMM_KC
#define MBPO__GEMM_KC 256
#endif
#ifndef MBPO__GEMM_MC
#define MBPO__GEMM_MC 768                /* rows of A in a tile, at most: a multiple of 12, 6 and 4 */
#endif
#ifndef MBPO__GEMM_APANEL
#define MBPO__GEMM_APANEL (4 << 20)      /* floats of A a thread keeps packed across tiles */
#endif
#ifndef MBPO__GEMM_ASHARED
#define MBPO__GEMM_ASHARED (8 << 20)     /* floats of A packed once for the whole team, at most */
#endif
#ifndef MBPO__GEMM_NC
#define MBPO__GEMM_NC 512
#endif
#ifndef MBPO__GEMM_WIDE
#define MBPO__GEMM_WIDE 1024             /* a team's few wide tiles (mbpo__gemm): columns, at most */
#endif
#ifndef MBPO__GEMM_WIDE_ROWS
#define MBPO__GEMM_WIDE_ROWS 384         /* ... taken from this many rows, or when B is stored (K, N) */
#endif

#ifdef MBPO__GEMM_VL
/* Transpose a VL x VL block in registers: src row i at src + i * ld (VL floats, rows >= nrow
   read as zero); dst row q (= column q of src) at dst + q * dld, the first nst floats of it
   stored (nst == VL: whole vectors). Only moves: no arithmetic touches the values. */
#if MBPO__GEMM_VL == 16
/* The masked forms with every lane selected: the same instructions, but GCC 12's unmasked
   intrinsics pass an "undefined" operand that g++ -Wall (nvcc's host pass) reports as uninitialized. */
#define MBPO__UNPLO(a, b) _mm512_mask_unpacklo_ps(a, (__mmask16)0xFFFF, a, b)
#define MBPO__UNPHI(a, b) _mm512_mask_unpackhi_ps(a, (__mmask16)0xFFFF, a, b)
#define MBPO__SHUF(a, b, m) _mm512_mask_shuffle_ps(a, (__mmask16)0xFFFF, a, b, m)
#define MBPO__SHUF4(a, b, m) _mm512_mask_shuffle_f32x4(a, (__mmask16)0xFFFF, a, b, m)
static void mbpo__gemm_transpose(const float *src, int64_t ld, int nrow, float *dst, int64_t dld, int nst) {
    __m512 r[16], t[16], u[16];
    __mmask16 mask = (__mmask16)((1u << nst) - 1u);
    int i, c;
    for (i = 0; i < 16; i++) r[i] = _mm512_setzero_ps();
    for (i = 0; i < nrow; i++) r[i] = _mm512_loadu_ps(src + i * ld);
    for (i = 0; i < 8; i++) {                 /* pairs of rows interleaved within each 128-bit lane */
        t[2 * i] = MBPO__UNPLO(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = MBPO__UNPHI(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {                 /* 4 rows x (column c of each lane) */
        u[4 * i + 0] = MBPO__SHUF(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = MBPO__SHUF(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = MBPO__SHUF(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = MBPO__SHUF(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (c = 0; c < 4; c++) {                 /* gather the four row groups' lanes: column 4L + c */
        __m512 x01 = MBPO__SHUF4(u[c], u[4 + c], 0x88), y01 = MBPO__SHUF4(u[c], u[4 + c], 0xDD);
        __m512 x23 = MBPO__SHUF4(u[8 + c], u[12 + c], 0x88), y23 = MBPO__SHUF4(u[8 + c], u[12 + c], 0xDD);
        __m512 col[4];
        col[0] = MBPO__SHUF4(x01, x23, 0x88);
        col[1] = MBPO__SHUF4(y01, y23, 0x88);
        col[2] = MBPO__SHUF4(x01, x23, 0xDD);
        col[3] = MBPO__SHUF4(y01, y23, 0xDD);
        for (i = 0; i < 4; i++) {
            if (nst == 16) _mm512_storeu_ps(dst + (4 * i + c) * dld, col[i]);
            else _mm512_mask_storeu_ps(dst + (4 * i + c) * dld, mask, col[i]);
        }
    }
}
/* The same for a whole VL x VL block, with half the shuffles: the first stage is done by the
   loads (each register gathers one 128-bit lane from 4 rows: lane c of x[a][d] is row 4c + d,
   columns 4a .. 4a+3), leaving a 4 x 4 transpose inside every lane, whose results are whole
   columns: lane c of column 4a + b holds rows 4c .. 4c+3. */
#define MBPO__INS4(a, p, i) _mm512_mask_insertf32x4(a, (__mmask16)0xFFFF, a, _mm_loadu_ps(p), i)
static void mbpo__gemm_transpose_full(const float *src, int64_t ld, float *dst, int64_t dld) {
    int a, d;
    for (a = 0; a < 4; a++) {
        __m512 x[4], t[4];
        for (d = 0; d < 4; d++) {
            const float *p = src + d * ld + 4 * a;
            x[d] = MBPO__INS4(_mm512_setzero_ps(), p, 0);
            x[d] = MBPO__INS4(x[d], p + 4 * ld, 1);
            x[d] = MBPO__INS4(x[d], p + 8 * ld, 2);
            x[d] = MBPO__INS4(x[d], p + 12 * ld, 3);
        }
        t[0] = MBPO__UNPLO(x[0], x[1]); t[1] = MBPO__UNPHI(x[0], x[1]);
        t[2] = MBPO__UNPLO(x[2], x[3]); t[3] = MBPO__UNPHI(x[2], x[3]);
        _mm512_storeu_ps(dst + (4 * a + 0) * dld, MBPO__SHUF(t[0], t[2], 0x44));
        _mm512_storeu_ps(dst + (4 * a + 1) * dld, MBPO__SHUF(t[0], t[2], 0xEE));
        _mm512_storeu_ps(dst + (4 * a + 2) * dld, MBPO__SHUF(t[1], t[3], 0x44));
        _mm512_storeu_ps(dst + (4 * a + 3) * dld, MBPO__SHUF(t[1], t[3], 0xEE));
    }
}
#else
static void mbpo__gemm_transpose(const float *src, int64_t ld, int nrow, float *dst, int64_t dld, int nst) {
    __m256 r[8], t[8], u[8];
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nst), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    int i, c;
    for (i = 0; i < 8; i++) r[i] = _mm256_setzero_ps();
    for (i = 0; i < nrow; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    for (i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (c = 0; c < 4; c++) {                 /* low lanes: column c; high lanes: column 4 + c */
        __m256 lo = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20), hi = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
        if (nst == 8) { _mm256_storeu_ps(dst + c * dld, lo); _mm256_storeu_ps(dst + (4 + c) * dld, hi); }
        else { _mm256_maskstore_ps(dst + c * dld, mask, lo); _mm256_maskstore_ps(dst + (4 + c) * dld, mask, hi); }
    }
}
/* A whole 8 x 8 block, the first stage done by the loads: lane c of x[a][d] is row 4c + d,
   columns 4a .. 4a+3 (as in the AVX-512 form). */
static void mbpo__gemm_transpose_full(const float *src, int64_t ld, float *dst, int64_t dld) {
    int a, d;
    for (a = 0; a < 2; a++) {
        __m256 x[4], t[4];
        for (d = 0; d < 4; d++) {
            const float *p = src + d * ld + 4 * a;
            x[d] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)), _mm_loadu_ps(p + 4 * ld), 1);
        }
        t[0] = _mm256_unpacklo_ps(x[0], x[1]); t[1] = _mm256_unpackhi_ps(x[0], x[1]);
        t[2] = _mm256_unpacklo_ps(x[2], x[3]); t[3] = _mm256_unpackhi_ps(x[2], x[3]);
        _mm256_storeu_ps(dst + (4 * a + 0) * dld, _mm256_shuffle_ps(t[0], t[2], 0x44));
        _mm256_storeu_ps(dst + (4 * a + 1) * dld, _mm256_shuffle_ps(t[0], t[2], 0xEE));
        _mm256_storeu_ps(dst + (4 * a + 2) * dld, _mm256_shuffle_ps(t[1], t[3], 0x44));
        _mm256_storeu_ps(dst + (4 * a + 3) * dld, _mm256_shuffle_ps(t[1], t[3], 0xEE));
    }
}
#endif
#endif
/* Copy A[i0 .. i0+mc) x [k0 .. k0+kc) into MR-row strips: ap[strip][k][r], rows past mc zero. */
static void mbpo__gemm_pack_a(float *ap, const float *A, int a_t, int64_t M, int64_t K, int64_t i0, int64_t mc,
                              int64_t k0, int64_t kc) {
    int64_t s, k, r;
    for (s = 0; s < mc; s += MBPO__GEMM_MR, ap += kc * MBPO__GEMM_MR) {
        int64_t nr = mc - s < MBPO__GEMM_MR ? mc - s : MBPO__GEMM_MR;
        if (a_t) {                               /* A stored (K, M): a row of k is contiguous in i */
            const float *src = A + k0 * M + i0 + s;
            if (nr == MBPO__GEMM_MR)             /* memcpy: a copy the compiler makes whole vector moves */
                for (k = 0; k < kc; k++) memcpy(ap + k * MBPO__GEMM_MR, src + k * M, MBPO__GEMM_MR * sizeof(float));
            else
                for (k = 0; k < kc; k++)
                    for (r = 0; r < MBPO__GEMM_MR; r++) ap[k * MBPO__GEMM_MR + r] = r < nr ? src[k * M + r] : 0.0f;
        } else {                                 /* A stored (M, K): a transpose, VL x VL blocks at a time */
            const float *src = A + (i0 + s) * K + k0;
            k = 0;
#ifdef MBPO__GEMM_VL
            for (; k + MBPO__GEMM_VL <= kc; k += MBPO__GEMM_VL)
                mbpo__gemm_transpose(src + k, K, (int)nr, ap + k * MBPO__GEMM_MR, MBPO__GEMM_MR, MBPO__GEMM_MR);
#endif
            for (; k < kc; k++)
                for (r = 0; r < MBPO__GEMM_MR; r++) ap[k * MBPO__GEMM_MR + r] = r < nr ? src[r * K + k] : 0.0f;
        }
    }
}
/* Copy B^T[k0 .. k0+kc) x [j0 .. j0+nc) into NR-column strips: bp[strip][k][c], columns past nc zero. */
static void mbpo__gemm_pack_b(float *bp, const float *B, int b_t, int64_t N, int64_t K, int64_t j0, int64_t nc,
                              int64_t k0, int64_t kc) {
    int64_t s, k, c, full = nc / MBPO__GEMM_NR * MBPO__GEMM_NR;
    if (b_t) {          /* B stored (K, N): row k of the panel is contiguous, read whole (a stream the
                           hardware prefetches; a strip at a time would be one line every N floats) */
        for (k = 0; k < kc; k++) {
            const float *src = B + (k0 + k) * N + j0;
            for (s = 0; s < full; s += MBPO__GEMM_NR)
                memcpy(bp + s * kc + k * MBPO__GEMM_NR, src + s, MBPO__GEMM_NR * sizeof(float));
            if (full < nc)
                for (c = 0; c < MBPO__GEMM_NR; c++) bp[full * kc + k * MBPO__GEMM_NR + c] = full + c < nc ? src[full + c] : 0.0f;
        }
        return;
    }
    for (s = 0; s < nc; s += MBPO__GEMM_NR, bp += kc * MBPO__GEMM_NR) {   /* B stored (N, K) (a weight): a transpose */
        int64_t ncol = nc - s < MBPO__GEMM_NR ? nc - s : MBPO__GEMM_NR;
        const float *src = B + (j0 + s) * K + k0;
        k = 0;
#ifdef MBPO__GEMM_VL
        for (; k + MBPO__GEMM_VL <= kc; k += MBPO__GEMM_VL)
            for (c = 0; c < MBPO__GEMM_NR; c += MBPO__GEMM_VL) {
                int64_t rows = ncol - c < MBPO__GEMM_VL ? ncol - c : MBPO__GEMM_VL;
                if (rows == MBPO__GEMM_VL)
                    mbpo__gemm_transpose_full(src + c * K + k, K, bp + k * MBPO__GEMM_NR + c, MBPO__GEMM_NR);
                else
                    mbpo__gemm_transpose(src + c * K + k, K, rows > 0 ? (int)rows : 0, bp + k * MBPO__GEMM_NR + c,
                                         MBPO__GEMM_NR, MBPO__GEMM_VL);
            }
#endif
        for (; k < kc; k++)
            for (c = 0; c < MBPO__GEMM_NR; c++) bp[k * MBPO__GEMM_NR + c] = c < ncol ? src[c * K + k] : 0.0f;
    }
}
/* The micro-kernel: c (nst, NR) at row stride ldc; c = (load ? c : 0) + sum_k ap[k][r] * bp[k][j]
   over k < kc in order, then + bias[j] when bias is not NULL. It computes `rows` rows of the
   packed strip (rows <= MR; the strip's rows past the matrix are zeros) and stores the first
   nst <= rows of them: a strip at the bottom edge of the matrix is a call with fewer rows, not a
   copy. ap, bp 64-byte aligned. Always called with a constant `rows`, so the compiler makes one
   copy per count, each with its accumulators in registers. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void mbpo__gemm_micro(float *c, int64_t ldc, const float *ap, const float *bp, int64_t kc, int load,
                                    const float *bias, int rows, int nst) {
#ifdef MBPO__GEMM_VL
    mbpo__vf x[MBPO__GEMM_MR][2];
    int64_t k;
    int r;
    for (r = 0; r < rows; r++) {
        x[r][0] = load && r < nst ? MBPO__VLOADU(c + r * ldc) : MBPO__VZERO();
        x[r][1] = load && r < nst ? MBPO__VLOADU(c + r * ldc + MBPO__GEMM_VL) : MBPO__VZERO();
    }
    for (k = 0; k < kc; k++, ap += MBPO__GEMM_MR, bp += MBPO__GEMM_NR) {
        mbpo__vf b0 = MBPO__VLOAD(bp), b1 = MBPO__VLOAD(bp + MBPO__GEMM_VL);
        for (r = 0; r < rows; r++) {
            mbpo__vf a = MBPO__VSET1(ap[r]);
            x[r][0] = MBPO__VFMA(a, b0, x[r][0]);
            x[r][1] = MBPO__VFMA(a, b1, x[r][1]);
        }
    }
    if (bias) {
        mbpo__vf b0 = MBPO__VLOADU(bias), b1 = MBPO__VLOADU(bias + MBPO__GEMM_VL);
        for (r = 0; r < rows; r++) { x[r][0] = MBPO__VADD(x[r][0], b0); x[r][1] = MBPO__VADD(x[r][1], b1); }
    }
    for (r = 0; r < rows; r++)
        if (r < nst) {
            MBPO__VSTOREU(c + r * ldc, x[r][0]);
            MBPO__VSTOREU(c + r * ldc + MBPO__GEMM_VL, x[r][1]);
        }
#else
    float x[MBPO__GEMM_MR][MBPO__GEMM_NR];
    int64_t k;
    int r, j;
    for (r = 0; r < rows; r++)
        for (j = 0; j < MBPO__GEMM_NR; j++) x[r][j] = load && r < nst ? c[r * ldc + j] : 0.0f;
    for (k = 0; k < kc; k++, ap += MBPO__GEMM_MR, bp += MBPO__GEMM_NR)
        for (r = 0; r < rows; r++)
            for (j = 0; j < MBPO__GEMM_NR; j++) x[r][j] = MBPO__MADD(ap[r], bp[j], x[r][j]);
    for (r = 0; r < nst; r++)
        for (j = 0; j < MBPO__GEMM_NR; j++) c[r * ldc + j] = bias ? x[r][j] + bias[j] : x[r][j];
#endif
}
/* A full-width strip of nm <= MR rows: a strip at the bottom edge (nm < MR) computes its rows
   rounded up to a third of MR (AVX-512: 4, 8; AVX2: 2, 4; portable: 1, 2), the zero rows not stored. */
#define MBPO__GEMM_MQ (MBPO__GEMM_MR / 3 > 0 ? MBPO__GEMM_MR / 3 : 1)
static void mbpo__gemm_micro_rows(float *c, int64_t ldc, const float *ap, const float *bp, int64_t kc, int load,
                                  const float *bias, int nm) {
    if (nm <= MBPO__GEMM_MQ) mbpo__gemm_micro(c, ldc, ap, bp, kc, load, bias, MBPO__GEMM_MQ, nm);
    else if (nm <= 2 * MBPO__GEMM_MQ) mbpo__gemm_micro(c, ldc, ap, bp, kc, load, bias, 2 * MBPO__GEMM_MQ, nm);
    else mbpo__gemm_micro(c, ldc, ap, bp, kc, load, bias, MBPO__GEMM_MR, nm);
}
/* Block blk of a tile of nbi x nbj MR x NR blocks, in the tile's order: its first row and column. */
static inline int64_t mbpo__gemm_block_row(int64_t blk, int rows_outer, int64_t nbi, int64_t nbj) {
    return (rows_outer ? blk / nbj : blk % nbi) * MBPO__GEMM_MR;
}
static inline int64_t mbpo__gemm_block_col(int64_t blk, int rows_outer, int64_t nbi, int64_t nbj) {
    return (rows_outer ? blk % nbj : blk / nbi) * MBPO__GEMM_NR;
}
/* One tile: out[i0 .. i0+mc) x [j0 .. j0+nc), all of K. ap: the thread's packed A, either one
   k block (a_stride 0: packed anew for each) or the whole panel of rows i0 .. i0+mc, the block
   at k0 at ap + k0 * a_stride, kept for the thread's next tile of the same rows (*a_rows says
   which rows it holds: i0 + 1, or 0 for none). bp: the tile's B (kc, nc) packed in NR-column
   strips, anew for each k block. */
static void mbpo__gemm_tile(float *out, const float *A, int a_t, const float *B, int b_t, const float *bias,
                            int64_t M, int64_t K, int64_t N, int accumulate, int64_t i0, int64_t mc, int64_t j0,
                            int64_t nc, float *ap_base, int64_t a_stride, int64_t *a_rows, float *bp) {
    float edge[MBPO__GEMM_MR * MBPO__GEMM_NR];
    int64_t k0, blk, r, j, nbi = (mc + MBPO__GEMM_MR - 1) / MBPO__GEMM_MR, nbj = (nc + MBPO__GEMM_NR - 1) / MBPO__GEMM_NR;
    int have_a = a_stride > 0 && *a_rows == i0 + 1;
    /* The order of the tile's MR x NR blocks. Rows outer (a strip of A, 12 KB, stays in L1 while
       the tile's strips of B stream from L2, and the output is walked along its rows) when the tile
       has 8 strips of B or more: one core, every 2B product 75 -> 80 % of the peak on the average,
       the d(weight) products (the output loaded and stored every K-block: most of their traffic)
       70-73 -> 80-85 % (Intel machine). Columns outer (a strip of B, 32 KB, stays in L1 over the
       tile's rows) for narrower tiles, whose strip of A would serve only a few strips of B: with
       4 strips rows outer lost 3-4 points. The same blocks either way: the same bits. */
    int rows_outer = nbj >= 8;
    for (k0 = 0; k0 < K || (K == 0 && k0 == 0); k0 += MBPO__GEMM_KC) {
        int64_t kc = K - k0 < MBPO__GEMM_KC ? K - k0 : MBPO__GEMM_KC;
        int load = k0 > 0 || accumulate, last = k0 + kc >= K;
        float *ap = ap_base + k0 * a_stride;
        if (!have_a) mbpo__gemm_pack_a(ap, A, a_t, M, K, i0, mc, k0, kc);
        mbpo__gemm_pack_b(bp, B, b_t, N, K, j0, nc, k0, kc);
        for (blk = 0; blk < nbi * nbj; blk++) {
            int64_t ir = mbpo__gemm_block_row(blk, rows_outer, nbi, nbj), jr = mbpo__gemm_block_col(blk, rows_outer, nbi, nbj);
            int64_t nn = nc - jr < MBPO__GEMM_NR ? nc - jr : MBPO__GEMM_NR, nm = mc - ir < MBPO__GEMM_MR ? mc - ir : MBPO__GEMM_MR;
            const float *bb = last && bias ? bias + j0 + jr : NULL;
            const float *bs = bp + jr * kc;      /* this strip of the packed panel */
            float *c = out + (i0 + ir) * N + j0 + jr;
            const float *as = ap + ir * kc;
#ifdef MBPO__GEMM_VL
            if (blk + 1 < nbi * nbj) {           /* the next block's rows of out: misses hidden behind this one */
                int64_t irn = mbpo__gemm_block_row(blk + 1, rows_outer, nbi, nbj);
                int64_t jrn = mbpo__gemm_block_col(blk + 1, rows_outer, nbi, nbj);
                const float *cn = out + (i0 + irn) * N + j0 + jrn;
                for (r = 0; r < MBPO__GEMM_MR && irn + r < mc; r++) {
                    _mm_prefetch((const char *)(cn + r * N), _MM_HINT_T0);
                    _mm_prefetch((const char *)(cn + r * N + MBPO__GEMM_NR - 1), _MM_HINT_T0);
                }
            }
#endif
            if (nn == MBPO__GEMM_NR) {
                mbpo__gemm_micro_rows(c, N, as, bs, kc, load, bb, (int)nm);
            } else {                     /* a block at the right edge: through a full-size copy */
                float bias_pad[MBPO__GEMM_NR];
                for (r = 0; r < MBPO__GEMM_MR; r++)
                    for (j = 0; j < MBPO__GEMM_NR; j++)
                        edge[r * MBPO__GEMM_NR + j] = load && r < nm && j < nn ? c[r * N + j] : 0.0f;
                for (j = 0; j < MBPO__GEMM_NR; j++) bias_pad[j] = bb && j < nn ? bb[j] : 0.0f;
                mbpo__gemm_micro(edge, MBPO__GEMM_NR, as, bs, kc, 1, bb ? bias_pad : NULL, MBPO__GEMM_MR, MBPO__GEMM_MR);
                for (r = 0; r < nm; r++)
                    for (j = 0; j < nn; j++) c[r * N + j] = edge[r * MBPO__GEMM_NR + j];
            }
        }
        if (K == 0) break;
    }
    if (a_stride > 0) *a_rows = i0 + 1;
}
static int mbpo__max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
/* Tests set this to take the plain paths (no packing, no transposes) the fast ones must equal bit for bit. */
static int mbpo__kernels_plain;
/* This thread's work buffer of one kernel: MBPO__BUF_GEMM, the packing buffers (A's panel, at
   most MBPO__GEMM_APANEL floats, and the tile's panel of B, NC x KC); MBPO__BUF_ATT, a kv
   head's keys and values transposed and a few score rows; MBPO__BUF_GEMM_A, the calling
   thread's buffer for all of A packed once, which the whole team then reads. Kept from call to call (a fresh allocation per product would fault in
   new pages every time), 64-byte aligned; NULL when memory is short (the caller then takes its
   plain path, with the same bits). With OpenMP they hang off a pthread key whose destructor
   frees them when the thread ends (the runtime ends threads when the thread count drops);
   without it there is one thread of mbpo's own, and thread-local storage suffices. */
#define MBPO__BUF_GEMM 0
#define MBPO__BUF_ATT 1
#define MBPO__BUF_GEMM_A 2
struct mbpo__tbufs { char *p[3]; size_t n[3]; };
#if defined(_OPENMP) && !defined(_WIN32)
static pthread_key_t mbpo__tbuf_key;
static pthread_once_t mbpo__tbuf_once = PTHREAD_ONCE_INIT;
static int mbpo__tbuf_key_ok;
static void mbpo__tbuf_free(void *v) {
    struct mbpo__tbufs *t = (struct mbpo__tbufs *)v;
    if (t) { free(t->p[0]); free(t->p[1]); free(t->p[2]); free(t); }
}
static void mbpo__tbuf_init(void) { mbpo__tbuf_key_ok = pthread_key_create(&mbpo__tbuf_key, mbpo__tbuf_free) == 0; }
static struct mbpo__tbufs *mbpo__tbufs(void) {
    struct mbpo__tbufs *t;
    if (pthread_once(&mbpo__tbuf_once, mbpo__tbuf_init) != 0 || !mbpo__tbuf_key_ok) return NULL;
    t = (struct mbpo__tbufs *)pthread_getspecific(mbpo__tbuf_key);
    if (!t) {
        t = (struct mbpo__tbufs *)calloc(1, sizeof *t);
        if (t && pthread_setspecific(mbpo__tbuf_key, t) != 0) { free(t); t = NULL; }
    }
    return t;
}
#elif !defined(MBPO__NO_TLS)
static MBPO__THREAD_LOCAL struct mbpo__tbufs mbpo__tbuf_tls;
static struct mbpo__tbufs *mbpo__tbufs(void) { return &mbpo__tbuf_tls; }
#else
static struct mbpo__tbufs *mbpo__tbufs(void) { return NULL; }   /* one shared buffer would race */
#endif
static float *mbpo__thread_buffer(int slot, size_t floats) {
    struct mbpo__tbufs *t = mbpo__tbufs();
    size_t bytes = floats * sizeof(float) + 64;
    if (!t) return NULL;
    if (bytes > t->n[slot]) {
        free(t->p[slot]);
        t->p[slot] = (char *)malloc(bytes);
        t->n[slot] = t->p[slot] ? bytes : 0;
    }
    return t->p[slot] ? (float *)(((uintptr_t)t->p[slot] + 63) & ~(uintptr_t)63) : NULL;
}
#ifdef MBPO__GEMM_VL
/* A product of few rows (M <= VL: a decode step's G continuations) with B a weight stored (N, K).
   Packing B would transpose the whole weight to use it for a handful of rows: at M = 8 the
   transposes are most of the work, and they run at a third of the speed memory streams the weight
   in. Here one vector holds the M rows of one output column instead: A is packed once, k-major
   (at: (K, VL), lanes past M zero), and 8 columns go together, per k one vector of A times a
   broadcast of each column's weight, 8 chains in registers; the weight is read row by row as it
   lies. Each output is still one multiply-add chain over k in order, from 0 (or from out), the bias
   added last: the same bits as the blocked path. */
#define MBPO__GEMM_FEW_J 8
static void mbpo__gemm_few(float *out, const float *at, const float *B, const float *bias, int64_t M, int64_t K,
                           int64_t N, int accumulate) {
    int64_t nb = (N + MBPO__GEMM_FEW_J - 1) / MBPO__GEMM_FEW_J, jb;
    MBPO__FOR_IF(4, M * N * K / 8)
    for (jb = 0; jb < nb; jb++) {
        int64_t j0 = jb * MBPO__GEMM_FEW_J, nj = N - j0 < MBPO__GEMM_FEW_J ? N - j0 : MBPO__GEMM_FEW_J, k, i;
        float col[MBPO__GEMM_FEW_J][MBPO__GEMM_VL];
        const float *w[MBPO__GEMM_FEW_J];
        mbpo__vf x[MBPO__GEMM_FEW_J];
        int jj;
        for (jj = 0; jj < MBPO__GEMM_FEW_J; jj++) {    /* columns past N repeat column j0, not stored */
            w[jj] = B + (j0 + (jj < nj ? jj : 0)) * K;
            for (i = 0; i < MBPO__GEMM_VL; i++) col[jj][i] = accumulate && i < M && jj < nj ? out[i * N + j0 + jj] : 0.0f;
            x[jj] = MBPO__VLOADU(col[jj]);
        }
        for (k = 0; k < K; k++) {
            mbpo__vf a = MBPO__VLOAD(at + k * MBPO__GEMM_VL);
            for (jj = 0; jj < MBPO__GEMM_FEW_J; jj++) x[jj] = MBPO__VFMA(MBPO__VSET1(w[jj][k]), a, x[jj]);
        }
        for (jj = 0; jj < MBPO__GEMM_FEW_J; jj++) MBPO__VSTOREU(col[jj], x[jj]);
        for (jj = 0; jj < nj; jj++)
            for (i = 0; i < M; i++) out[i * N + j0 + jj] = bias ? col[jj][i] + bias[j0 + jj] : col[jj][i];
    }
}
#endif
static void mbpo__gemm(float *out, const float *A, int a_t, const float *B, int b_t, const float *bias,
                       int64_t M, int64_t K, int64_t N, int accumulate) {
    /* Tile size: rows split evenly into mt tiles of at most MC (M = 1000 is two tiles of 504,
       not 768 and a thin 232: each strip of B is packed once per row tile, so the fewer the
       better); then the tiles are made narrower, and only then fewer rows, until there are at
       least 4 a thread, so a small product still spreads over every thread, the threads end
       together, and a slow thread's share can move to the others. The sums do not depend on it. */
    int64_t th = mbpo__max_threads(), MC = MBPO__GEMM_MC, NC = MBPO__GEMM_NC, want = 4 * th, mt, nt;
    int64_t mcap, ncap, kcap = K < MBPO__GEMM_KC ? (K > 0 ? K : 1) : MBPO__GEMM_KC, a_stride, a_floats, a_all, ncmin;
    float *a_shared;
    if (M <= 0 || N <= 0) return;
#ifdef MBPO__GEMM_VL
    if (!b_t && M <= MBPO__GEMM_VL && K > 0 && !mbpo__kernels_plain) {
        float *at = mbpo__thread_buffer(MBPO__BUF_GEMM_A, (size_t)(K * MBPO__GEMM_VL));
        if (at) {
            int64_t i, k;
            for (k = 0; k < K; k++)
                for (i = 0; i < MBPO__GEMM_VL; i++) at[k * MBPO__GEMM_VL + i] = i < M ? (a_t ? A[k * M + i] : A[i * K + k]) : 0.0f;
            mbpo__gemm_few(out, at, B, bias, M, K, N, accumulate);
            return;
        }
    }
#endif
    /* Row tiles cost a packing of B each (every tile packs its own columns of B, so B is packed
       mt times in all, work that does not shrink with the thread count). So when all of A will be
       packed once for the team (below), tiles go down to one strip of NR columns before rows are
       split: the text Linears' dinp (M <= 256) on 2 threads then pack B once, not twice. */
    ncmin = (M + 2 * MBPO__GEMM_MR) * (K > 0 ? K : 1) <= MBPO__GEMM_ASHARED && !mbpo__kernels_plain
            ? MBPO__GEMM_NR : 4 * MBPO__GEMM_NR;
    mt = (M + MC - 1) / MC;
    while (want > 4 && mt * ((N + NC - 1) / NC) < want) {
        if (NC > ncmin) NC /= 2;
        else if (2 * mt * MBPO__GEMM_MR <= M) mt *= 2;
        else if (NC > MBPO__GEMM_NR) NC /= 2;
        else break;
    }
    /* A team's single row tile: its number of tiles n, then n tiles of equal width.
       - Narrowed, with MBPO__GEMM_WIDE_ROWS rows or more or B stored (K, N) (its panel is copied
         row by row: a wider tile's rows are longer streams): a few wide tiles, a multiple of the
         thread count, each at most MBPO__GEMM_WIDE columns (2 threads: the 2B vision products with
         N = 1280, 616 rows, 2 tiles of 640, not 8 of 160, 71-73 -> 75-77 % of the peak; the text
         d(input) products with N = 1536, 188 rows, 2 tiles of 768, 72 -> 74-75 %). The text forward
         products (188 rows, B a weight (N, K), transposed) lost 3 points that way, products not
         narrowed (N = 5120) 1; beside a competing job the wide tiles were no slower.
       - Else narrowed: the fewest strips that still make `want` tiles, not the power of two below
         (N = 1536 on 2 threads: 8 tiles of 192 columns, not 12 of 128; 1-3 points).
       - Equal widths so that the threads' shares are equal (3840 columns on 2 threads: 8 tiles of
         480, not 7 of 512 and one of 256, of which one thread would do 4 of the 7.5 shares: 78 ->
         82 % of the peak). Not with several row tiles: there the d(weight) products' tiles of 448
         columns lost 1-2 points against 512 and 256. */
    if (want > 4 && mt == 1) {
        int64_t ns = (N + MBPO__GEMM_NR - 1) / MBPO__GEMM_NR, n;
        if (NC < MBPO__GEMM_NC && (M >= MBPO__GEMM_WIDE_ROWS || b_t)) {
            n = th * ((N + th * MBPO__GEMM_WIDE - 1) / (th * MBPO__GEMM_WIDE));
        } else {
            if (NC < MBPO__GEMM_NC) {
                int64_t fit = ((N + want - 1) / want + MBPO__GEMM_NR - 1) / MBPO__GEMM_NR * MBPO__GEMM_NR;
                if (fit > NC) NC = fit;
            }
            n = (N + NC - 1) / NC;
        }
        NC = (ns + n - 1) / n * MBPO__GEMM_NR;
    }
    MC = ((M + mt - 1) / mt + MBPO__GEMM_MR - 1) / MBPO__GEMM_MR * MBPO__GEMM_MR;
    mt = (M + MC - 1) / MC; nt = (N + NC - 1) / NC;
    mcap = (M < MC ? M : MC) + MBPO__GEMM_MR;   /* buffers sized to the problem */
    ncap = (N < NC ? N : NC) + MBPO__GEMM_NR;   /* a tile's panel of B, one k block */
    /* A's whole panel (mcap, K) is kept for the thread's next tile of the same rows when it fits
       MBPO__GEMM_APANEL floats (16 MB): tiles run along N first, so a panel is packed once per
       thread, not once per tile; otherwise one k block at a time. */
    a_stride = mcap * (K > 0 ? K : 1) <= MBPO__GEMM_APANEL ? mcap : 0;
    a_floats = a_stride ? mcap * (K > 0 ? K : 1) : mcap * kcap;
    /* All of A packed once, by the team, before the tiles, when it fits MBPO__GEMM_ASHARED floats
       (32 MB): else each thread packs the panel of every row tile it works on, so each row of A is
       packed once per thread - with one row tile (M <= 768, every product of a 2B forward) all of A
       by every thread, a cost that grows with the thread count while the thread's share of the
       product shrinks (the text down projection, 188 x 8960 x 1536: 5 % of the time on 2 threads). */
    a_all = mt * mcap * (K > 0 ? K : 1);
    a_shared = a_stride && mt * nt > 1 && a_all <= MBPO__GEMM_ASHARED && !mbpo__kernels_plain
               ? mbpo__thread_buffer(MBPO__BUF_GEMM_A, (size_t)a_all) : NULL;
    if (a_shared) a_floats = 0;
    MBPO__PARALLEL_IF(M * N * (K > 0 ? K : 1) / 8)
    {
        size_t need = (size_t)(((a_floats + 15) & ~(int64_t)15) + ncap * kcap);
        float *ap = mbpo__kernels_plain ? NULL : mbpo__thread_buffer(MBPO__BUF_GEMM, need);
        float *bp = ap ? ap + ((a_floats + 15) & ~(int64_t)15) : NULL;
        int64_t t, a_rows = 0, nkb = K > 0 ? (K + MBPO__GEMM_KC - 1) / MBPO__GEMM_KC : 0;
        if (a_shared) {          /* one k block of one row tile at a time; the loop's barrier ends it */
            MBPO__OMP("omp for schedule(dynamic, 1)")
            for (t = 0; t < mt * nkb; t++) {
                int64_t ib = t / nkb, i0 = ib * MC, k0 = t % nkb * MBPO__GEMM_KC;
                mbpo__gemm_pack_a(a_shared + ib * mcap * (K > 0 ? K : 1) + k0 * mcap, A, a_t, M, K, i0, M - i0 < MC ? M - i0 : MC, k0,
                                  K - k0 < MBPO__GEMM_KC ? K - k0 : MBPO__GEMM_KC);
            }
        }
        MBPO__OMP("omp for schedule(dynamic, 1)")
        for (t = 0; t < mt * nt; t++) {
            int64_t ib = t / nt, jb = t % nt, i0 = ib * MC, j0 = jb * NC;
            int64_t mc = M - i0 < MC ? M - i0 : MC, nc = N - j0 < NC ? N - j0 : NC;
            if (ap) {
                if (a_shared) a_rows = i0 + 1;   /* the tile's rows are packed already */
                mbpo__gemm_tile(out, A, a_t, B, b_t, bias, M, K, N, accumulate, i0, mc, j0, nc,
                                a_shared ? a_shared + ib * mcap * (K > 0 ? K : 1) : ap, a_stride, &a_rows, bp);
            } else {             /* no memory for packing: the same sums, one output at a time */
                int64_t i, j, k;
                for (i = i0; i < i0 + mc; i++)
                    for (j = j0; j < j0 + nc; j++) {
                        float s = accumulate ? out[i * N + j] : 0.0f;
                        for (k = 0; k < K; k++)
                            s = MBPO__MADD(a_t ? A[k * M + i] : A[i * K + k], b_t ? B[k * N + j] : B[j * K + k], s);
                        out[i * N + j] = bias ? s + bias[j] : s;
                    }
            }
        }
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
    if (dbias) {   /* 16 columns at a time, read along the rows: each sum still a chain over nn from 0 */
        MBPO__FOR_IF(1, N * OC)
        for (o = 0; o < OC; o += MBPO__CHUNK_COLS) {
            float s[MBPO__CHUNK_COLS] = { 0 };
            int64_t nn, l, nb = OC - o < MBPO__CHUNK_COLS ? OC - o : MBPO__CHUNK_COLS;
            if (nb == MBPO__CHUNK_COLS)          /* a constant count: the compiler makes it whole vectors */
                for (nn = 0; nn < N; nn++)
                    for (l = 0; l < MBPO__CHUNK_COLS; l++) s[l] += dout[nn * OC + o + l];
            else
                for (nn = 0; nn < N; nn++)
                    for (l = 0; l < nb; l++) s[l] += dout[nn * OC + o + l];
            for (l = 0; l < nb; l++) dbias[o + l] += s[l];
        }
    }
}

/* LayerNorm: out (N,C) = (x - mean) * rstd * w + b; saves mean (N), rstd (N). */
static void mbpo__layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int64_t N, int64_t C, float eps) {
    int64_t n;
    MBPO__ROWS_IF(3 * N * C)
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
/* dinp (N,C) += LayerNorm'; dw, db (C) += ... (docs/QWEN2VL.md 4.2); dw and db both or neither NULL. */
static void mbpo__layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                    const float *w, const float *mean, const float *rstd, int64_t N, int64_t C) {
    int64_t n, i;
    MBPO__ROWS_IF(3 * N * C)
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
    MBPO__COLS_IF(3 * N * C)
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
    MBPO__ROWS_IF(2 * N * C)
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
    MBPO__ROWS_IF(2 * N * C)
    for (n = 0; n < N; n++) {
        const float *dy = dout + n * C, *x = inp + n * C;
        float *dx = dinp + n * C, r = rstd[n], s = 0.0f;
        int64_t j;
        for (j = 0; j < C; j++) s += dy[j] * w[j] * x[j];
        s *= r * r * r / (float)C;
        for (j = 0; j < C; j++) dx[j] += r * dy[j] * w[j] - x[j] * s;
    }
    if (!dw) return;
    MBPO__COLS_IF(2 * N * C)
    for (i = 0; i < C; i++) {
        float sw = 0.0f;
        int64_t nn;
        for (nn = 0; nn < N; nn++) sw += dout[nn * C + i] * inp[nn * C + i] * rstd[nn];
        dw[i] += sw;
    }
}

/* Activations, elementwise over n values. */
static inline float mbpo__sigmoid(float x) { return 1.0f / (1.0f + mbpo__expf(-x)); }
/* QuickGELU (vision blocks): x * sigmoid(1.702 x) */
static void mbpo__quick_gelu_forward(float *out, const float *inp, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
    for (i = 0; i < n; i++) out[i] = inp[i] * mbpo__sigmoid(1.702f * inp[i]);
}
static void mbpo__quick_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
    for (i = 0; i < n; i++) {
        float s = mbpo__sigmoid(1.702f * inp[i]);
        dinp[i] = dout[i] * (s + 1.702f * inp[i] * s * (1.0f - s));
    }
}
/* exact GELU (merger): 0.5 x (1 + erf(x / sqrt 2)) */
static void mbpo__gelu_forward(float *out, const float *inp, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
    for (i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * 0.70710678118654752f));
}
static void mbpo__gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
    for (i = 0; i < n; i++) {
        float x = inp[i], cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = mbpo__expf(-0.5f * x * x) * 0.39894228040143268f;
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}
/* SwiGLU (LM MLP): out = silu(gate) * up, all (n) */
static void mbpo__swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
    for (i = 0; i < n; i++) out[i] = gate[i] * mbpo__sigmoid(gate[i]) * up[i];
}
static void mbpo__swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, int64_t n) {
    int64_t i;
    MBPO__ELEMS_IF(8 * n)
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
    MBPO__ROWS_IF(N * nh * HS)
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
        for (l = 0; l < 16; l++) p[l] = MBPO__MADD(a[d + l], b[d + l], p[l]);
    for (l = 0; d < n; d++, l++) p[l] = MBPO__MADD(a[d], b[d], p[l]);
    for (l = 0; l < 8; l++) p[l] += p[l + 8];
    for (l = 0; l < 4; l++) p[l] += p[l + 4];
    s = (p[0] + p[2]) + (p[1] + p[3]);
    return s;
}
/* mbpo__dot(q, key jj) for the 16 keys of one block at once: s[jj] for jj < 16, from kt (HS, 16),
   the block's keys transposed. mbpo__dot's partial sum l (of the elements d = l mod 16) becomes
   vector l, one lane per key: the same products added in the same order, so the same bits,
   but 16 keys per instruction instead of a horizontal sum per key. kt 64-byte aligned. */
static void mbpo__dot16(float *s, const float *q, const float *kt, int64_t HS) {
    int64_t d;
    int l;
#if defined(MBPO__GEMM_VL) && MBPO__GEMM_VL == 16
    __m512 p[16];
    for (l = 0; l < 16; l++) p[l] = _mm512_setzero_ps();
    for (d = 0; d + 16 <= HS; d += 16)
        for (l = 0; l < 16; l++) p[l] = _mm512_fmadd_ps(_mm512_set1_ps(q[d + l]), _mm512_load_ps(kt + (d + l) * 16), p[l]);
    for (l = 0; d < HS; d++, l++) p[l] = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_load_ps(kt + d * 16), p[l]);
    for (l = 0; l < 8; l++) p[l] = _mm512_add_ps(p[l], p[l + 8]);
    for (l = 0; l < 4; l++) p[l] = _mm512_add_ps(p[l], p[l + 4]);
    _mm512_storeu_ps(s, _mm512_add_ps(_mm512_add_ps(p[0], p[2]), _mm512_add_ps(p[1], p[3])));
#elif defined(MBPO__GEMM_VL) && MBPO__GEMM_VL == 8
    /* AVX2: the 16 partial sums of 16 keys are 32 vectors, twice the register file. So 8 keys
       (a half h) and 8 sums at a time: first the sums l = 8 .. 15 (kept aside), then l = 0 .. 7,
       each still the chain over d = l, l + 16, ... in increasing d. */
    int h, g;
    for (h = 0; h < 2; h++) {
        __m256 p[8], hi[8];
        for (g = 1; g >= 0; g--) {
            int64_t d0;
            for (l = 0; l < 8; l++) p[l] = _mm256_setzero_ps();
            for (d0 = 0; d0 + 16 <= HS; d0 += 16)
                for (l = 0; l < 8; l++) {
                    d = d0 + 8 * g + l;
                    p[l] = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), _mm256_load_ps(kt + d * 16 + 8 * h), p[l]);
                }
            for (l = 0; l < 8 && d0 + 8 * g + l < HS; l++) {
                d = d0 + 8 * g + l;
                p[l] = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), _mm256_load_ps(kt + d * 16 + 8 * h), p[l]);
            }
            if (g) for (l = 0; l < 8; l++) hi[l] = p[l];
        }
        for (l = 0; l < 8; l++) p[l] = _mm256_add_ps(p[l], hi[l]);
        for (l = 0; l < 4; l++) p[l] = _mm256_add_ps(p[l], p[l + 4]);
        _mm256_storeu_ps(s + 8 * h, _mm256_add_ps(_mm256_add_ps(p[0], p[2]), _mm256_add_ps(p[1], p[3])));
    }
#else
    float p[16][16];
    int jj;
    for (l = 0; l < 16; l++)
        for (jj = 0; jj < 16; jj++) p[l][jj] = 0.0f;
    for (d = 0; d < HS; d++)
        for (jj = 0; jj < 16; jj++) p[d & 15][jj] = MBPO__MADD(q[d], kt[d * 16 + jj], p[d & 15][jj]);
    for (l = 0; l < 8; l++)
        for (jj = 0; jj < 16; jj++) p[l][jj] += p[l + 8][jj];
    for (l = 0; l < 4; l++)
        for (jj = 0; jj < 16; jj++) p[l][jj] += p[l + 4][jj];
    for (jj = 0; jj < 16; jj++) s[jj] = (p[0][jj] + p[2][jj]) + (p[1][jj] + p[3][jj]);
#endif
}
/* Rows [from, to) of one kv head's keys (or values) x (L, NKV, HS) at stride xs, transposed
   into blocks of 16: xt[j / 16][d][j % 16]; rows past `to` in the last block zero. */
static void mbpo__att_transpose(float *xt, const float *x, int64_t xs, int64_t HS, int64_t from, int64_t to) {
    int64_t j, d, end = (to + 15) & ~(int64_t)15;
    for (j = from; j < end; j++) {
        float *dst = xt + (j >> 4) * HS * 16 + (j & 15);
        if (j < to) for (d = 0; d < HS; d++) dst[d * 16] = x[j * xs + d];
        else for (d = 0; d < HS; d++) dst[d * 16] = 0.0f;
    }
}
/* dots[j] = mbpo__dot(qi, key j) for j < n, keys from their transpose xt. */
static void mbpo__att_dots(float *dots, const float *qi, const float *xt, int64_t HS, int64_t n) {
    float blk[16];
    int64_t j0, j;
    for (j0 = 0; j0 < n; j0 += 16) {
        mbpo__dot16(blk, qi, xt + j0 * HS, HS);
        for (j = 0; j < 16 && j0 + j < n; j++) dots[j0 + j] = blk[j];
    }
}
/* o (HS) (+)= sum_{j < n} w[j] x_j with x_j at x + j * xs, each o[d] one multiply-add chain in
   increasing j (four rows per pass over o, so o is loaded and stored a quarter as often). */
static void mbpo__att_axpy_rows(float *o, const float *w, const float *x, int64_t xs, int64_t HS, int64_t n, float div,
                                int divide) {
    int64_t j = 0, d;
    for (; j + 4 <= n; j += 4) {
        const float *x0 = x + j * xs, *x1 = x0 + xs, *x2 = x1 + xs, *x3 = x2 + xs;
        float p0 = divide ? w[j] / div : w[j] * div, p1 = divide ? w[j + 1] / div : w[j + 1] * div;
        float p2 = divide ? w[j + 2] / div : w[j + 2] * div, p3 = divide ? w[j + 3] / div : w[j + 3] * div;
        for (d = 0; d < HS; d++) {
            float acc = o[d];
            acc = MBPO__MADD(p0, x0[d], acc); acc = MBPO__MADD(p1, x1[d], acc);
            acc = MBPO__MADD(p2, x2[d], acc); acc = MBPO__MADD(p3, x3[d], acc);
            o[d] = acc;
        }
    }
    for (; j < n; j++) {
        const float *xj = x + j * xs;
        float p = divide ? w[j] / div : w[j] * div;
        for (d = 0; d < HS; d++) o[d] = MBPO__MADD(p, xj[d], o[d]);
    }
}
#ifdef MBPO__GEMM_VL
/* o_r (HS) = sum_{j < n[r]} p_r[j] x_j for four queries r at once (p_r the probabilities,
   already divided by their sum; x_j at x + j * xs; n[0] <= n[1] <= n[2] <= n[3]). Two vectors of
   the head times four queries are eight independent chains in registers, each output one fused
   multiply-add chain in increasing j from 0, as mbpo__att_axpy_rows computes it: the same bits,
   without loading and storing o for every few keys. */
static void mbpo__att_pv4(float *const *o, const float *const *p, const int64_t *n, const float *x, int64_t xs, int64_t HS) {
    int64_t d0, j;
    int r, c;
    for (d0 = 0; d0 < HS; d0 += 2 * MBPO__GEMM_VL) {
        int nv = HS - d0 > MBPO__GEMM_VL ? 2 : 1;
        int64_t o1 = nv > 1 ? MBPO__GEMM_VL : 0;   /* the second vector's offset (0: none, masked off) */
        mbpo__vmask m[2];
        mbpo__vf acc[4][2];
        m[0] = MBPO__VMASK(HS - d0);
        m[1] = MBPO__VMASK(nv > 1 ? HS - d0 - MBPO__GEMM_VL : 0);
        for (r = 0; r < 4; r++) acc[r][0] = acc[r][1] = MBPO__VZERO();
        for (j = 0; j < n[0]; j++) {        /* keys every query sees */
            const float *xj = x + j * xs + d0;
            mbpo__vf x0 = MBPO__VLOADM(xj, m[0]), x1 = MBPO__VLOADM(xj + o1, m[1]);
            for (r = 0; r < 4; r++) {
                mbpo__vf pr = MBPO__VSET1(p[r][j]);
                acc[r][0] = MBPO__VFMA(pr, x0, acc[r][0]);
                acc[r][1] = MBPO__VFMA(pr, x1, acc[r][1]);
            }
        }
        for (r = 1; r < 4; r++)               /* causal: the later queries' last keys */
            for (j = n[0]; j < n[r]; j++) {
                const float *xj = x + j * xs + d0;
                mbpo__vf pr = MBPO__VSET1(p[r][j]);
                acc[r][0] = MBPO__VFMA(pr, MBPO__VLOADM(xj, m[0]), acc[r][0]);
                acc[r][1] = MBPO__VFMA(pr, MBPO__VLOADM(xj + o1, m[1]), acc[r][1]);
            }
        for (r = 0; r < 4; r++)
            for (c = 0; c < nv; c++) MBPO__VSTOREM(o[r] + d0 + MBPO__GEMM_VL * c, m[c], acc[r][c]);
    }
}
#endif
#ifdef MBPO__GEMM_VL
/* The attention backward's dK, dV update of nk <= 4 adjacent keys j .. j+nk from rows r0 .. nr
   of a block of queries: dk_j (HS) += ds[r][j] q_r, dv_j (HS) += p[r][j] do_r, r in increasing
   order (ds, p: rows of the block's dS * scale and P at stride ldp, column 0 the first key), each
   element the same chain of fused multiply-adds as the one-row-at-a-time loop. The keys' rows of
   dk, dv stay in registers over all the block's rows (a pass over dk, dv per block, not per
   four queries: they are L2-sized, the rows of q and dout L1-sized), and each vector of q_r and
   do_r loaded serves four keys. Called with a constant nk, so each count gets its own copy. */
#define MBPO__ATT_KV_NV (MBPO__GEMM_VL == 16 ? 2 : 1)   /* vectors of the head at a time */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void mbpo__att_kv_keys(float *dk, float *dv, int64_t kvs, int nk, const float *const *qr,
                                     const float *const *dor, const float *ds, const float *p, int64_t ldp,
                                     int r0, int nr, int64_t HS) {
    int64_t d0;
    int r, c, v;
    for (d0 = 0; d0 < HS; d0 += MBPO__ATT_KV_NV * MBPO__GEMM_VL) {
        mbpo__vmask m[MBPO__ATT_KV_NV];
        mbpo__vf ak[4][MBPO__ATT_KV_NV], av[4][MBPO__ATT_KV_NV];
        for (v = 0; v < MBPO__ATT_KV_NV; v++) m[v] = MBPO__VMASK(HS - d0 - v * MBPO__GEMM_VL > 0 ? HS - d0 - v * MBPO__GEMM_VL : 0);
        for (c = 0; c < nk; c++)
            for (v = 0; v < MBPO__ATT_KV_NV; v++) {
                ak[c][v] = MBPO__VLOADM(dk + c * kvs + d0 + v * MBPO__GEMM_VL, m[v]);
                av[c][v] = MBPO__VLOADM(dv + c * kvs + d0 + v * MBPO__GEMM_VL, m[v]);
            }
        for (r = r0; r < nr; r++) {
            mbpo__vf x[MBPO__ATT_KV_NV], y[MBPO__ATT_KV_NV];
            for (v = 0; v < MBPO__ATT_KV_NV; v++) {
                x[v] = MBPO__VLOADM(qr[r] + d0 + v * MBPO__GEMM_VL, m[v]);
                y[v] = MBPO__VLOADM(dor[r] + d0 + v * MBPO__GEMM_VL, m[v]);
            }
            for (c = 0; c < nk; c++) {
                mbpo__vf s = MBPO__VSET1(ds[r * ldp + c]), w = MBPO__VSET1(p[r * ldp + c]);
                for (v = 0; v < MBPO__ATT_KV_NV; v++) {
                    ak[c][v] = MBPO__VFMA(s, x[v], ak[c][v]);
                    av[c][v] = MBPO__VFMA(w, y[v], av[c][v]);
                }
            }
        }
        for (c = 0; c < nk; c++)
            for (v = 0; v < MBPO__ATT_KV_NV; v++) {
                MBPO__VSTOREM(dk + c * kvs + d0 + v * MBPO__GEMM_VL, m[v], ak[c][v]);
                MBPO__VSTOREM(dv + c * kvs + d0 + v * MBPO__GEMM_VL, m[v], av[c][v]);
            }
    }
}
/* max_j x[j] (-inf for n = 0) in 16 lanes, which the compiler vectorizes: a maximum does not
   depend on the order it is taken in, so this equals the one-at-a-time loop (NaN aside). */
static float mbpo__max16(const float *x, int64_t n) {
    float m[16], mx = -INFINITY;
    int64_t j = 0;
    int l;
    for (l = 0; l < 16; l++) m[l] = -INFINITY;
    for (; j + 16 <= n; j += 16)
        for (l = 0; l < 16; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    for (; j < n; j++) if (x[j] > mx) mx = x[j];
    for (l = 0; l < 16; l++) if (m[l] > mx) mx = m[l];
    return mx;
}
#endif
#define MBPO__ATT_IB 32   /* queries per forward job */
#define MBPO__ATT_QB 16   /* queries per backward block: a pass over the kv head's dk, dv per block */

/* Attention over one segment of L tokens. q (L, NH, HS) at stride qs floats per token,
   k, v (L, NKV, HS) at stride kvs; out (L, NH, HS) at stride os; lse (NH, L) the log-sum-exp
   of each score row, saved so backward can rebuild the probabilities without storing
   them (O(L) memory instead of O(L^2)). causal: key j <= query i. Scores in fp32.
   Jobs: (head, block of 32 queries), handed out dynamically; a job transposes the keys it needs
   (once per kv head per thread) so the scores of 16 keys come from one pass (mbpo__dot16), and
   takes its queries four at a time so that P V keeps the four output rows in registers. */
static void mbpo__attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                    int64_t L, int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs,
                                    int64_t os, int64_t lse_stride, int causal, float *scratch /* (threads, 2L) */) {
    int64_t job, group = NH / NKV, nib = (L + MBPO__ATT_IB - 1) / MBPO__ATT_IB, Lp = (L + 15) & ~(int64_t)15;
    float scale = 1.0f / sqrtf((float)HS);
    MBPO__PARALLEL_IF(NH * L * L * HS / 8)
    {
#ifdef _OPENMP
        float *s = scratch + (int64_t)omp_get_thread_num() * 2 * L;
#else
        float *s = scratch;
#endif
        float *kt = mbpo__kernels_plain ? NULL : mbpo__thread_buffer(MBPO__BUF_ATT, (size_t)(HS * Lp + 4 * Lp + HS + 16));
        int64_t have_kvh = -1, have = 0;     /* keys of head have_kvh transposed: rows [0, have) */
        MBPO__OMP("omp for schedule(dynamic, 1)")
        for (job = 0; job < NH * nib; job++) {
            int64_t h = job / nib, i0 = (job % nib) * MBPO__ATT_IB, kvh = h / group, i, j, d;
            int64_t i1 = i0 + MBPO__ATT_IB < L ? i0 + MBPO__ATT_IB : L, need = causal ? i1 : L;
            if (kt) {
                if (have_kvh != kvh) { have_kvh = kvh; have = 0; }
                if (have < need) {
                    mbpo__att_transpose(kt, k + kvh * HS, kvs, HS, have & ~(int64_t)15, need);
                    have = need;
                }
            }
#ifdef MBPO__GEMM_VL
            if (kt) {                        /* four queries at a time: their rows, then P V together */
                float *pv = kt + HS * Lp;    /* four probability rows, then a spare output row */
                for (i = i0; i < i1; i += 4) {
                    float *orow[4], *prow[4];
                    int64_t nk[4];
                    int r;
                    for (r = 0; r < 4; r++) {
                        int64_t ii = i + r;
                        float *sr = pv + r * Lp, mx = -INFINITY, sum = 0.0f;
                        if (ii >= i1) {              /* past the block: the last row again, into a spare */
                            prow[r] = prow[r - 1]; nk[r] = nk[r - 1]; orow[r] = pv + 4 * Lp;
                            continue;
                        }
                        nk[r] = causal ? ii + 1 : L;
                        orow[r] = out + ii * os + h * HS;
                        prow[r] = sr;
                        mbpo__att_dots(sr, q + ii * qs + h * HS, kt, HS, nk[r]);
                        for (j = 0; j < nk[r]; j++) sr[j] = sr[j] * scale;
                        mx = mbpo__max16(sr, nk[r]);
                        for (j = 0; j < nk[r]; j++) sr[j] = mbpo__expf(sr[j] - mx);   /* vectorizes */
                        for (j = 0; j < nk[r]; j++) sum += sr[j];
                        for (j = 0; j < nk[r]; j++) sr[j] = sr[j] / sum;
                        lse[h * lse_stride + ii] = mx + logf(sum);
                    }
                    mbpo__att_pv4(orow, (const float *const *)prow, nk, v + kvh * HS, kvs, HS);
                }
                continue;
            }
#endif
            for (i = i0; i < i1; i++) {
                int64_t jmax = causal ? i + 1 : L;
                const float *qi = q + i * qs + h * HS;
                float *o = out + i * os + h * HS, mx = -INFINITY, sum = 0.0f;
                if (kt) mbpo__att_dots(s, qi, kt, HS, jmax);
                else for (j = 0; j < jmax; j++) s[j] = mbpo__dot(qi, k + j * kvs + kvh * HS, HS);
                for (j = 0; j < jmax; j++) {
                    s[j] = s[j] * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (j = 0; j < jmax; j++) s[j] = mbpo__expf(s[j] - mx);
                for (j = 0; j < jmax; j++) sum += s[j];
                for (d = 0; d < HS; d++) o[d] = 0.0f;
                mbpo__att_axpy_rows(o, s, v + kvh * HS, kvs, HS, jmax, sum, 1);
                lse[h * lse_stride + i] = mx + logf(sum);
            }
        }
    }
}
/* Backward of one segment: dq (L,NH,HS) written (stride qs, as q); dk, dv (L,NKV,HS) written
   (stride kvs), each summed over the query heads of its group (GQA); dout, out at stride os.
   P is rebuilt from q, k and lse:
   dV = P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO * O));  dQ = scale dS K;  dK = scale dS^T Q.
   Parallel over kv heads so that no two threads write the same dk/dv row, and every dk/dv
   element is one multiply-add chain over (head, query) in order. Per kv head the keys and
   values are transposed once (the dots of 16 keys at a time), and queries go in blocks of
   MBPO__ATT_QB: their P and dS rows first (and dQ, four rows at a time), then each dk/dv row
   takes the block's updates in one pass, four keys together (mbpo__att_kv_keys). */
static void mbpo__attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                     const float *lse, const float *q, const float *k, const float *v,
                                     int64_t L, int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs,
                                     int64_t os, int64_t lse_stride, int causal, float *scratch /* (threads, 2L) */) {
    int64_t kvh, group = NH / NKV, Lp = (L + 15) & ~(int64_t)15;
    float scale = 1.0f / sqrtf((float)HS);
    MBPO__FOR_IF(1, NH * L * L * HS / 4)
    for (kvh = 0; kvh < NKV; kvh++) {
        float *ws = mbpo__kernels_plain ? NULL : mbpo__thread_buffer(MBPO__BUF_ATT, (size_t)(2 * HS * Lp + 3 * MBPO__ATT_QB * Lp));
        float *kt = ws, *vt = ws ? ws + HS * Lp : NULL;
        float *P = ws ? vt + HS * Lp : NULL, *DS = P ? P + MBPO__ATT_QB * Lp : NULL;    /* a block's rows each */
#ifdef MBPO__GEMM_VL
        float *DSS = DS ? DS + MBPO__ATT_QB * Lp : NULL;                      /* dS * scale, a block's rows */
#endif
        int64_t h, i, j, d, r;
        for (j = 0; j < L; j++)
            for (d = 0; d < HS; d++) { dk[j * kvs + kvh * HS + d] = 0.0f; dv[j * kvs + kvh * HS + d] = 0.0f; }
        if (!ws) {            /* no memory for the transposes: one query and one key at a time */
#ifdef _OPENMP
            float *p = scratch + (int64_t)omp_get_thread_num() * 2 * L;
#else
            float *p = scratch;
#endif
            float *dp = p + L;
            for (h = kvh * group; h < (kvh + 1) * group; h++)
                for (i = 0; i < L; i++) {
                    const float *qi = q + i * qs + h * HS, *doi = dout + i * os + h * HS, *oi = out + i * os + h * HS;
                    float *dqi = dq + i * qs + h * HS, rs, l = lse[h * lse_stride + i];
                    int64_t jmax = causal ? i + 1 : L;
                    rs = mbpo__dot(doi, oi, HS);
                    for (j = 0; j < jmax; j++) {
                        float dot = mbpo__dot(qi, k + j * kvs + kvh * HS, HS), dpv = mbpo__dot(doi, v + j * kvs + kvh * HS, HS);
                        p[j] = mbpo__expf(MBPO__MADD(dot, scale, -l));
                        dp[j] = p[j] * (dpv - rs);                  /* dS */
                    }
                    for (d = 0; d < HS; d++) dqi[d] = 0.0f;
                    for (j = 0; j < jmax; j++) {
                        const float *kj = k + j * kvs + kvh * HS;
                        float *dkj = dk + j * kvs + kvh * HS, *dvj = dv + j * kvs + kvh * HS;
                        float ds = dp[j] * scale;
                        for (d = 0; d < HS; d++) {
                            dqi[d] = MBPO__MADD(ds, kj[d], dqi[d]);
                            dkj[d] = MBPO__MADD(ds, qi[d], dkj[d]);
                            dvj[d] = MBPO__MADD(p[j], doi[d], dvj[d]);
                        }
                    }
                }
            continue;
        }
        mbpo__att_transpose(kt, k + kvh * HS, kvs, HS, 0, L);
        mbpo__att_transpose(vt, v + kvh * HS, kvs, HS, 0, L);
        for (h = kvh * group; h < (kvh + 1) * group; h++)
            for (i = 0; i < L; i += MBPO__ATT_QB) {
                int64_t nb = L - i < MBPO__ATT_QB ? L - i : MBPO__ATT_QB, jlast = causal ? i + nb : L, s;
                const float *qr[MBPO__ATT_QB], *dor[MBPO__ATT_QB];   /* the block's rows of q and dout */
                for (r = 0; r < nb; r++) { qr[r] = q + (i + r) * qs + h * HS; dor[r] = dout + (i + r) * os + h * HS; }
                for (s = 0; s < nb; s += 4) {            /* P, dS and dQ, four rows at a time */
                    int64_t nr = nb - s < 4 ? nb - s : 4;
#ifdef MBPO__GEMM_VL
                    int64_t nk[4];
                    int dq4 = nr == 4;                   /* dQ of the four rows together (mbpo__att_pv4) */
#endif
                    for (r = s; r < s + nr; r++) {       /* P and dS rows of queries i + s .. i + s + nr */
                        const float *qi = qr[r], *doi = dor[r], *oi = out + (i + r) * os + h * HS;
                        float *p = P + r * Lp, *dp = DS + r * Lp, rs = mbpo__dot(doi, oi, HS), l = lse[h * lse_stride + i + r];
                        float *dqi = dq + (i + r) * qs + h * HS;
                        int64_t jmax = causal ? i + r + 1 : L;
                        mbpo__att_dots(p, qi, kt, HS, jmax);
                        mbpo__att_dots(dp, doi, vt, HS, jmax);
                        for (j = 0; j < jmax; j++) {
                            float dot = p[j], dpv = dp[j];
                            p[j] = mbpo__expf(MBPO__MADD(dot, scale, -l));
                            dp[j] = p[j] * (dpv - rs);              /* dS */
                        }
#ifdef MBPO__GEMM_VL
                        for (j = 0; j < jmax; j++) DSS[r * Lp + j] = dp[j] * scale;   /* for dQ and dK */
                        nk[r - s] = jmax;
                        if (dq4) continue;
#endif
                        for (d = 0; d < HS; d++) dqi[d] = 0.0f;
                        mbpo__att_axpy_rows(dqi, dp, k + kvh * HS, kvs, HS, jmax, scale, 0);
                    }
#ifdef MBPO__GEMM_VL
                    if (dq4) {   /* dq_r = sum_j (dS_rj scale) k_j: the chain att_axpy_rows makes, four rows at once */
                        float *dqr[4];
                        const float *dsr[4];
                        for (r = 0; r < 4; r++) { dqr[r] = dq + (i + s + r) * qs + h * HS; dsr[r] = DSS + (s + r) * Lp; }
                        mbpo__att_pv4(dqr, dsr, nk, k + kvh * HS, kvs, HS);
                    }
#endif
                }
                for (j = 0; j < jlast;) {                /* dk_j, dv_j: the block's updates in query order */
                    float *dkj = dk + j * kvs + kvh * HS, *dvj = dv + j * kvs + kvh * HS;
                    int64_t r0 = causal && j > i ? j - i : 0;   /* rows r < r0 do not see key j */
#ifdef MBPO__GEMM_VL
                    if (j + 4 <= jlast && (!causal || j + 3 <= i)) {   /* four keys every row of the block sees */
                        mbpo__att_kv_keys(dkj, dvj, kvs, 4, qr, dor, DSS + j, P + j, Lp, 0, (int)nb, HS);
                        j += 4;
                    } else {
                        mbpo__att_kv_keys(dkj, dvj, kvs, 1, qr, dor, DSS + j, P + j, Lp, (int)r0, (int)nb, HS);
                        j++;
                    }
#else
                    for (r = r0; r < nb; r++) {
                        float ds = DS[r * Lp + j] * scale, pj = P[r * Lp + j];
                        for (d = 0; d < HS; d++) {
                            dkj[d] = MBPO__MADD(ds, qr[r][d], dkj[d]);
                            dvj[d] = MBPO__MADD(pj, dor[r][d], dvj[d]);
                        }
                    }
                    j++;
#endif
                }
            }
    }
}

/* Fused log-softmax + gather over n rows of logits z (n, V): logp (n) = z[y] - lse,
   lse (n) saved for the backward. */
static void mbpo__logsoftmax_gather_forward(float *logp, float *lse, const float *z, const int32_t *y,
                                            int64_t n, int64_t V) {
    int64_t r;
    MBPO__OMP(MBPO__SCHED_ROWS)
    for (r = 0; r < n; r++) {
        const float *zr = z + r * V;
        float mx = -INFINITY, sum = 0.0f;
        int64_t j;
        for (j = 0; j < V; j++) if (zr[j] > mx) mx = zr[j];
        for (j = 0; j < V; j++) sum += mbpo__expf(zr[j] - mx);
        lse[r] = mx + logf(sum);
        logp[r] = zr[y[r]] - lse[r];
    }
}
/* In place: z (n, V) logits in, dz = dlogp (onehot(y) - softmax(z)) out. */
static void mbpo__logsoftmax_gather_backward(float *z, const float *dlogp, const float *lse, const int32_t *y,
                                             int64_t n, int64_t V) {
    int64_t r;
    MBPO__OMP(MBPO__SCHED_ROWS)
    for (r = 0; r < n; r++) {
        float *zr = z + r * V, d = dlogp[r], l = lse[r];
        int64_t j;
        for (j = 0; j < V; j++) zr[j] = -d * mbpo__expf(zr[j] - l);
        zr[y[r]] += d;
    }
}

/* RoPE inverse frequencies inv[j] = 1 / theta^(2j/dim), j < dim/2, evaluated in float32 the
   way torch does (exponent, power and reciprocal each rounded to float). */
static float mbpo__inv_freq(double theta, int64_t j, int64_t dim) {
    float e = (float)(2 * j) / (float)dim;
    return 1.0f / powf((float)theta, e);
}

/* ------------------------------------------------------------------ 3. model: the op table

   Everything the model layer computes goes through one table of function pointers, chosen
   when the model is planned: no graph, no scheduler, just the ops above (and a few that
   move data) called in order. The CPU table below wraps the fp32 ops of this file and is
   always compiled: it is the specification. A build with MBPO_CUDA adds the CUDA table of
   mbpo_cuda.cuh, whose every op names the CPU op it is tested against (tests/test_cuda.cu).

   Pointer kinds in every op (all of them backend memory):
     mbpo_x *      activations and weights in the backend's storage type: float on the CPU,
                   bf16 on the GPU (float with MBPO_CUDA_FP32). mbpo_x is an incomplete type,
                   so the model layer cannot index it: mbpo__xat() offsets by whole elements.
     float *       fp32 always: norm statistics, log-sum-exps, rotary tables, logit chunks,
                   log-probs and every parameter gradient (accumulated in fp32).
     int64_t *, int32_t *   batch metadata (positions, image rows, target rows, segment
                   offsets), laid out on the host and uploaded once per batch.
   Every op returns 1, or 0 with the failure reason set (on the GPU: the CUDA call, its error
   and the sizes). Backward ops accumulate (+=) into what their comment says; the model layer
   zeroes first. */
typedef struct mbpo__x mbpo_x;
/* The scalars of one AdamW update: the learning rate, betas, eps and decoupled weight decay
   of mbpo_adamw_opts, the clipping factor of this step's gradient (1: none) and the bias
   corrections 1 - beta^t. */
typedef struct { double lr, beta1, beta2, eps, weight_decay, scale, bc1, bc2; } mbpo__adamw_k;
/* The scalars of a sampling step: temperature (<= 0: greedy), top_k (<= 0: off), top_p
   (outside (0, 1): off) and the ids never emitted. */
typedef struct { double temperature, top_p; int64_t top_k; int n_ban; int64_t ban[4]; } mbpo__sample_k;
/* Generation on the backend (mbpo_generate): the state st[MBPO__GS_N] (int64, backend memory)
   that the decode ops, sample and gen_step read and advance, so that a step needs nothing from
   the host (and a CUDA graph can replay it). T: tokens in the cache, the row the next decode
   step writes; NU: draws consumed from the pool u; LIVE: continuations not yet stopped;
   GO: the last decode step was real (some continuation was live), so T advances; DELTA: the
   prompt's M-RoPE offset. The scalars of gen_step: the stop ids and whether draws are used. */
enum { MBPO__GS_T, MBPO__GS_NU, MBPO__GS_LIVE, MBPO__GS_GO, MBPO__GS_DELTA, MBPO__GS_N };
#define MBPO__MAX_STOP 16
typedef struct { int n_stop, draws; int32_t stop[MBPO__MAX_STOP]; } mbpo__step_k;

struct mbpo__ops {
    const char *name;                 /* "cpu", "cuda" */
    size_t x_size;                    /* bytes of one mbpo_x */
    /* backend state: created by the plan, destroyed with the model */
    int  (*create)(mbpo_backend **be, int64_t max_seg);     /* max_seg: longest attention segment */
    void (*destroy)(mbpo_backend *be);
    /* memory */
    int  (*alloc)(mbpo_backend *be, void **p, size_t bytes, const char *what);
    void (*release)(mbpo_backend *be, void *p);
    int  (*upload)(mbpo_backend *be, void *dst, const void *src_host, size_t bytes);
    int  (*download)(mbpo_backend *be, void *dst_host, const void *src, size_t bytes);
    int  (*zero)(mbpo_backend *be, void *p, size_t bytes);
    int  (*copy)(mbpo_backend *be, void *dst, const void *src, size_t bytes);
    int  (*x_upload)(mbpo_backend *be, mbpo_x *dst, const float *src_host, int64_t n);    /* fp32 -> x */
    int  (*x_download)(mbpo_backend *be, float *dst_host, const mbpo_x *src, int64_t n);  /* x -> fp32 */
    /* linear layers: out (N,OC) = inp (N,C) w (OC,C)^T + bias;
       backward: dinp += dout w, dw += dout^T inp, dbias += colsum dout (any may be NULL) */
    int (*matmul_forward)(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const mbpo_x *w, const mbpo_x *bias,
                          int64_t N, int64_t C, int64_t OC);
    int (*matmul_backward)(mbpo_backend *be, mbpo_x *dinp, float *dw, float *dbias, const mbpo_x *dout,
                           const mbpo_x *inp, const mbpo_x *w, int64_t N, int64_t C, int64_t OC);
    /* norms: statistics saved per row; backward dinp += (dw, db may be NULL) */
    int (*layernorm_forward)(mbpo_backend *be, mbpo_x *out, float *mean, float *rstd, const mbpo_x *inp,
                             const mbpo_x *w, const mbpo_x *b, int64_t N, int64_t C, float eps);
    int (*layernorm_backward)(mbpo_backend *be, mbpo_x *dinp, float *dw, float *db, const mbpo_x *dout,
                              const mbpo_x *inp, const mbpo_x *w, const float *mean, const float *rstd,
                              int64_t N, int64_t C);
    int (*rmsnorm_forward)(mbpo_backend *be, mbpo_x *out, float *rstd, const mbpo_x *inp, const mbpo_x *w,
                           int64_t N, int64_t C, float eps);
    int (*rmsnorm_backward)(mbpo_backend *be, mbpo_x *dinp, float *dw, const mbpo_x *dout, const mbpo_x *inp,
                            const mbpo_x *w, const float *rstd, int64_t N, int64_t C);
    /* elementwise over n values; backward writes (=) the input gradients */
    int (*quick_gelu_forward)(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n);
    int (*quick_gelu_backward)(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n);
    int (*gelu_forward)(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n);
    int (*gelu_backward)(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n);
    int (*swiglu_forward)(mbpo_backend *be, mbpo_x *out, const mbpo_x *gate, const mbpo_x *up, int64_t n);
    int (*swiglu_backward)(mbpo_backend *be, mbpo_x *dgate, mbpo_x *dup, const mbpo_x *dout, const mbpo_x *gate,
                           const mbpo_x *up, int64_t n);
    int (*add)(mbpo_backend *be, mbpo_x *out, const mbpo_x *a, const mbpo_x *b, int64_t n);   /* out may be a */
    /* out (R, W) row r = inp row idx[r] (out != inp): Qwen2.5-VL's window order and back */
    int (*gather_rows)(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const int64_t *idx, int64_t R, int64_t W);
    /* rotary embeddings: tables (N, HS/2) from integer positions, then rotate-half in place */
    int (*mrope_tables)(mbpo_backend *be, float *cosv, float *sinv, const int64_t *pos /* (3, N) */, int64_t N,
                        int64_t HS, double theta, int sec0, int sec1);
    int (*vrope_tables)(mbpo_backend *be, float *cosv, float *sinv, const int64_t *hw /* (2, N) */, int64_t N,
                        int64_t HS, double theta);
    int (*rope_apply)(mbpo_backend *be, mbpo_x *x, const float *cosv, const float *sinv, int64_t N, int64_t nh,
                      int64_t HS, int64_t stride, float sign);
    /* attention over packed segments: segment s is rows [cu[s], cu[s+1]) (cu on the backend,
       cu_host its host copy); q at stride qs, k and v at kvs, out at os (floats per row);
       lse (NH, cu[n_seg]); causal within a segment, GQA by NH / NKV */
    int (*attention_forward)(mbpo_backend *be, mbpo_x *out, float *lse, const mbpo_x *q, const mbpo_x *k,
                             const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                             int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal);
    /* dq (stride qs), dk, dv (stride kvs) written */
    int (*attention_backward)(mbpo_backend *be, mbpo_x *dq, mbpo_x *dk, mbpo_x *dv, const mbpo_x *dout,
                              const mbpo_x *out, const float *lse, const mbpo_x *q, const mbpo_x *k, const mbpo_x *v,
                              const int64_t *cu, const int64_t *cu_host, int64_t n_seg, int64_t NH, int64_t NKV,
                              int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal);
    /* decoding, at the position t = *tp read from backend memory (not an argument, so that a
       captured step replays at the position the previous step left there):
       attention_decode: one new row per continuation, out (G, NH*HS) from q (G, NH*HS) over
       keys 0..t of the cache kc, vc (G, max_len, NKV*HS) of one layer;
       kv_append: kc[g][t] = kn[g], vc[g][t] = vn[g] for g < G (rows of KD).
       The caller keeps 0 <= t < max_len (the CPU ops fail outside it, the CUDA kernels skip) */
    int (*attention_decode)(mbpo_backend *be, mbpo_x *out, const mbpo_x *q, const mbpo_x *kc, const mbpo_x *vc,
                            int64_t G, const int64_t *tp, int64_t max_len, int64_t NH, int64_t NKV, int64_t HS);
    int (*kv_append)(mbpo_backend *be, mbpo_x *kc, mbpo_x *vc, const mbpo_x *kn, const mbpo_x *vn, int64_t G,
                     const int64_t *tp, int64_t max_len, int64_t KD);
    /* inputs_embeds h (T, H): row t = feat[feat_row[t]] if feat_row[t] >= 0, else embed[ids[t]];
       backward dfeat[feat_row[t]] += dh[t], else dembed[ids[t]] += dh[t] (unless ids[t] == pad,
       or dembed NULL), summed over t in increasing order: deterministic */
    int (*embed_forward)(mbpo_backend *be, mbpo_x *h, const mbpo_x *embed, const mbpo_x *feat, const int32_t *ids,
                         const int64_t *feat_row, int64_t T, int64_t H);
    int (*embed_backward)(mbpo_backend *be, float *dembed, mbpo_x *dfeat, const mbpo_x *dh, const int32_t *ids,
                          const int64_t *feat_row, int64_t pad_id, int64_t T, int64_t H);
    /* the fused head over N target rows, `chunk` rows at a time (never N x V logits):
       logp[n] = z[labels[n]] - lse[n], z = xf[rows[n]] lm_head^T (fp32 logits);
       backward dxf[rows[n]] += dz lm_head, dlm_head += dz^T x (NULL: skip), with
       dz = dlogp (onehot - softmax). Scratch: chunk_x, chunk_dx (chunk, H), chunk_z (chunk, V) */
    int (*head_forward)(mbpo_backend *be, float *logp, float *lse, const mbpo_x *xf, const mbpo_x *lm_head,
                        const int64_t *rows, const int32_t *labels, int64_t N, int64_t H, int64_t V, int64_t chunk,
                        mbpo_x *chunk_x, float *chunk_z);
    int (*head_backward)(mbpo_backend *be, mbpo_x *dxf, float *dlm_head, const float *dlogp, const float *lse,
                         const mbpo_x *xf, const mbpo_x *lm_head, const int64_t *rows, const int32_t *labels,
                         int64_t N, int64_t H, int64_t V, int64_t chunk, mbpo_x *chunk_x, float *chunk_z,
                         mbpo_x *chunk_dx);
    /* z (n, V) = x (n, H) lm_head^T in fp32: logits for decoding and inspection */
    int (*logits)(mbpo_backend *be, float *z, const mbpo_x *x, const mbpo_x *lm_head, int64_t n, int64_t H, int64_t V);
    /* the optimizer, on n fp32 values of the parameter layout (the training state stays on the
       backend). sumsq: *out_host = sum of g[i]^2 accumulated in double, in an order fixed by n
       alone, so a step's gradient norm has the same bits on every run. adamw: one AdamW update
       of the fp32 master weights and moments (mbpo_adamw_step's formula, in double), then
       px = the backend's copy of master (bf16 on the GPU; on the CPU px is master) */
    int (*sumsq)(mbpo_backend *be, double *out_host, const float *g, int64_t n);
    /* sampling, everything in backend memory: one token per live row g (done[g] == 0) of z
       (G, V) fp32 logits into tok[g], and logp[g] = its log-probability under softmax(z) at
       temperature 1 (after the bans: what the policy assigns the emitted token). The ids
       k->ban[] are set to -inf in z first; then greedy (argmax, lowest id on ties) when
       k->temperature <= 0, else the draw u[st[MBPO__GS_NU] + r] in [0, 1), r = the live rows
       before g, through mbpo_sample_token's distribution (softmax(z / T), top-k, top-p).
       Rows with done[g] != 0 are left alone (tok, logp and z). st is only read. */
    int (*sample)(mbpo_backend *be, int32_t *tok, float *logp, float *z, const double *u, const int64_t *st,
                  const unsigned char *done, int64_t G, int64_t V, const mbpo__sample_k *k);
    /* one generation step's bookkeeping after sample, in backend memory (G small, one thread is
       enough): T += GO (the decode step before this sample was real); NU += the live rows
       (k->draws); every live g appends tok[g] at out[g*stride + len[g]] (and logp[g] at
       out_logp, unless NULL), len[g]++, and stops (done[g] = 1) at a stop id; LIVE = the rows
       still live, GO = LIVE > 0; pos (3, G) = T + DELTA, the M-RoPE position of the next decode
       step's token. A stopped row's tok stays its last token, so the next decode step repeats
       it and every cache stays in lockstep. */
    int (*gen_step)(mbpo_backend *be, int32_t *out, float *out_logp, int32_t *len, unsigned char *done, int64_t *st,
                    int64_t *pos, const int32_t *tok, const float *logp, int64_t G, int64_t stride, const mbpo__step_k *k);
    int (*adamw)(mbpo_backend *be, float *master, mbpo_x *px, float *m, float *v, const float *g, int64_t n,
                 const mbpo__adamw_k *k);
    /* PGD on the backend (mbpo_pgd), on the image x (n = H*W*3 fp32 values in [0, 1]):
       pixels: pv[j] = (x[map[j]] * k - m[c]) / s[c], c = map[j] % 3, the product rounded on its
       own and left out when k == 1 (mbpo_pixels_from_float's arithmetic), pv in the storage type;
       pixels_backward: dx[i] = (sum over tau < T of dpv[inv[i*T + tau]]) * k / s[c] (the adjoint);
       pgd_step: x = clip01(clip(x - step * sign(dx), x0 - eps, x0 + eps)), the ball only when eps >= 0.
       kms: k, m[3], s[3] (fp32, host) */
    int (*pixels)(mbpo_backend *be, mbpo_x *pv, const float *x, const int64_t *map, int64_t n_pv, const float *kms);
    int (*pixels_backward)(mbpo_backend *be, float *dx, const mbpo_x *dpv, const int64_t *inv, int64_t n, int64_t T,
                           const float *kms);
    int (*pgd_step)(mbpo_backend *be, float *x, const float *x0, const float *dx, int64_t n, float step, float eps);
    /* graphs (NULL where the backend has none: the CPU): the ops queued between graph_begin and
       graph_end are captured, not run, into *graph; graph_launch replays them with the
       arguments they had (pointers, shapes), reading backend memory as it is at replay.
       graph_end always ends the capture; it fails if any op inside failed to be captured */
    int  (*graph_begin)(mbpo_backend *be);
    int  (*graph_end)(mbpo_backend *be, void **graph);
    int  (*graph_launch)(mbpo_backend *be, void *graph);
    void (*graph_free)(void *graph);
};

/* p + n elements of the backend's storage type */
static mbpo_x *mbpo__xat(const mbpo_ops *ops, const mbpo_x *p, int64_t n) {
    return p ? (mbpo_x *)((char *)p + (size_t)n * ops->x_size) : NULL;
}

/* ---- the CPU table: backend memory is host memory, mbpo_x is float */

struct mbpo__backend_cpu { float *scratch; int64_t max_seg; int threads; };
#define MBPO__F(p) ((float *)(p))
#define MBPO__CF(p) ((const float *)(p))
#define MBPO__CPU(be) ((struct mbpo__backend_cpu *)(void *)(be))
static int mbpo__cpu_create(mbpo_backend **be, int64_t max_seg) {
    struct mbpo__backend_cpu *c = (struct mbpo__backend_cpu *)mbpo__calloc(1, sizeof *c);
    int threads = mbpo__max_threads();
    if (!c) return 0;
    c->max_seg = max_seg > 0 ? max_seg : 1; c->threads = threads;
    c->scratch = (float *)mbpo__calloc((size_t)threads * 2 * (size_t)c->max_seg, sizeof(float));   /* attention rows */
    if (!c->scratch) { mbpo_free(c); return mbpo__fail("out of memory for attention scratch of %lld rows", (long long)max_seg); }
    *be = (mbpo_backend *)(void *)c;
    return 1;
}
static void mbpo__cpu_destroy(mbpo_backend *be) { if (be) { mbpo_free(MBPO__CPU(be)->scratch); mbpo_free(be); } }
static int mbpo__cpu_alloc(mbpo_backend *be, void **p, size_t bytes, const char *what) {
    (void)be;
    *p = mbpo__calloc(bytes ? bytes : 1, 1);
    return *p ? 1 : mbpo__fail("out of memory allocating %.1f MB for %s", (double)bytes / 1e6, what);
}
static void mbpo__cpu_release(mbpo_backend *be, void *p) { (void)be; mbpo_free(p); }
static int mbpo__cpu_copy(mbpo_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (dst != src && bytes) memcpy(dst, src, bytes);
    return 1;
}
static int mbpo__cpu_zero(mbpo_backend *be, void *p, size_t bytes) { (void)be; if (bytes) memset(p, 0, bytes); return 1; }
static int mbpo__cpu_x_copy_in(mbpo_backend *be, mbpo_x *dst, const float *src, int64_t n) {
    return mbpo__cpu_copy(be, dst, src, (size_t)n * sizeof(float));
}
static int mbpo__cpu_x_copy_out(mbpo_backend *be, float *dst, const mbpo_x *src, int64_t n) {
    return mbpo__cpu_copy(be, dst, src, (size_t)n * sizeof(float));
}
static int mbpo__cpu_matmul_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const mbpo_x *w, const mbpo_x *bias,
                                    int64_t N, int64_t C, int64_t OC) {
    (void)be; mbpo__matmul_forward(MBPO__F(out), MBPO__CF(inp), MBPO__CF(w), MBPO__CF(bias), N, C, OC); return 1;
}
static int mbpo__cpu_matmul_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, float *dbias, const mbpo_x *dout,
                                     const mbpo_x *inp, const mbpo_x *w, int64_t N, int64_t C, int64_t OC) {
    (void)be; mbpo__matmul_backward(MBPO__F(dinp), dw, dbias, MBPO__CF(dout), MBPO__CF(inp), MBPO__CF(w), N, C, OC); return 1;
}
static int mbpo__cpu_layernorm_forward(mbpo_backend *be, mbpo_x *out, float *mean, float *rstd, const mbpo_x *inp,
                                       const mbpo_x *w, const mbpo_x *b, int64_t N, int64_t C, float eps) {
    (void)be; mbpo__layernorm_forward(MBPO__F(out), mean, rstd, MBPO__CF(inp), MBPO__CF(w), MBPO__CF(b), N, C, eps); return 1;
}
static int mbpo__cpu_layernorm_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, float *db, const mbpo_x *dout,
                                        const mbpo_x *inp, const mbpo_x *w, const float *mean, const float *rstd,
                                        int64_t N, int64_t C) {
    (void)be;
    mbpo__layernorm_backward(MBPO__F(dinp), dw, db, MBPO__CF(dout), MBPO__CF(inp), MBPO__CF(w), mean, rstd, N, C);
    return 1;
}
static int mbpo__cpu_rmsnorm_forward(mbpo_backend *be, mbpo_x *out, float *rstd, const mbpo_x *inp, const mbpo_x *w,
                                     int64_t N, int64_t C, float eps) {
    (void)be; mbpo__rmsnorm_forward(MBPO__F(out), rstd, MBPO__CF(inp), MBPO__CF(w), N, C, eps); return 1;
}
static int mbpo__cpu_rmsnorm_backward(mbpo_backend *be, mbpo_x *dinp, float *dw, const mbpo_x *dout, const mbpo_x *inp,
                                      const mbpo_x *w, const float *rstd, int64_t N, int64_t C) {
    (void)be; mbpo__rmsnorm_backward(MBPO__F(dinp), dw, MBPO__CF(dout), MBPO__CF(inp), MBPO__CF(w), rstd, N, C); return 1;
}
static int mbpo__cpu_quick_gelu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n) {
    (void)be; mbpo__quick_gelu_forward(MBPO__F(out), MBPO__CF(inp), n); return 1;
}
static int mbpo__cpu_quick_gelu_backward(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n) {
    (void)be; mbpo__quick_gelu_backward(MBPO__F(dinp), MBPO__CF(dout), MBPO__CF(inp), n); return 1;
}
static int mbpo__cpu_gelu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, int64_t n) {
    (void)be; mbpo__gelu_forward(MBPO__F(out), MBPO__CF(inp), n); return 1;
}
static int mbpo__cpu_gelu_backward(mbpo_backend *be, mbpo_x *dinp, const mbpo_x *dout, const mbpo_x *inp, int64_t n) {
    (void)be; mbpo__gelu_backward(MBPO__F(dinp), MBPO__CF(dout), MBPO__CF(inp), n); return 1;
}
static int mbpo__cpu_swiglu_forward(mbpo_backend *be, mbpo_x *out, const mbpo_x *gate, const mbpo_x *up, int64_t n) {
    (void)be; mbpo__swiglu_forward(MBPO__F(out), MBPO__CF(gate), MBPO__CF(up), n); return 1;
}
static int mbpo__cpu_swiglu_backward(mbpo_backend *be, mbpo_x *dgate, mbpo_x *dup, const mbpo_x *dout, const mbpo_x *gate,
                                     const mbpo_x *up, int64_t n) {
    (void)be; mbpo__swiglu_backward(MBPO__F(dgate), MBPO__F(dup), MBPO__CF(dout), MBPO__CF(gate), MBPO__CF(up), n); return 1;
}
/* out = a + b (a residual connection) */
static int mbpo__cpu_add(mbpo_backend *be, mbpo_x *out, const mbpo_x *a, const mbpo_x *b, int64_t n) {
    float *o = MBPO__F(out);
    const float *x = MBPO__CF(a), *y = MBPO__CF(b);
    int64_t i;
    (void)be;
    for (i = 0; i < n; i++) o[i] = x[i] + y[i];
    return 1;
}
static int mbpo__cpu_gather_rows(mbpo_backend *be, mbpo_x *out, const mbpo_x *inp, const int64_t *idx, int64_t R, int64_t W) {
    int64_t r;
    (void)be;
    for (r = 0; r < R; r++) memcpy(MBPO__F(out) + r * W, MBPO__CF(inp) + idx[r] * W, (size_t)W * sizeof(float));
    return 1;
}
/* M-RoPE table: frequency slot j reads the t, h or w position (rows of pos) by mrope_section */
static int mbpo__cpu_mrope_tables(mbpo_backend *be, float *cosv, float *sinv, const int64_t *pos, int64_t N, int64_t HS,
                                  double theta, int sec0, int sec1) {
    int64_t j, t, half = HS / 2;
    (void)be;
    for (j = 0; j < half; j++) {
        int comp = j < sec0 ? 0 : j < sec0 + sec1 ? 1 : 2;
        float inv = mbpo__inv_freq(theta, j, HS);
        for (t = 0; t < N; t++) {
            float ang = (float)pos[comp * N + t] * inv;
            cosv[t * half + j] = cosf(ang);
            sinv[t * half + j] = sinf(ang);
        }
    }
    return 1;
}
/* 2-D rotary table of the vision tower: the first half of the angles follow the patch row
   hw[0], the second the column hw[1] */
static int mbpo__cpu_vrope_tables(mbpo_backend *be, float *cosv, float *sinv, const int64_t *hw, int64_t N, int64_t HS,
                                  double theta) {
    int64_t j, r, half = HS / 2, quarter = HS / 4;
    (void)be;
    for (j = 0; j < quarter; j++) {
        float inv = mbpo__inv_freq(theta, j, half);   /* once per frequency */
        for (r = 0; r < N; r++) {
            float ah = (float)hw[r] * inv, aw = (float)hw[N + r] * inv;
            cosv[r * half + j] = cosf(ah); sinv[r * half + j] = sinf(ah);
            cosv[r * half + quarter + j] = cosf(aw); sinv[r * half + quarter + j] = sinf(aw);
        }
    }
    return 1;
}
static int mbpo__cpu_rope_apply(mbpo_backend *be, mbpo_x *x, const float *cosv, const float *sinv, int64_t N, int64_t nh,
                                int64_t HS, int64_t stride, float sign) {
    (void)be; mbpo__rope_apply(MBPO__F(x), cosv, sinv, N, nh, HS, stride, sign); return 1;
}
/* The attention scratch holds rows of the longest segment the plan allows. */
static int mbpo__cpu_seg_fits(mbpo_backend *be, int64_t L) {
    if (L <= MBPO__CPU(be)->max_seg) return 1;
    return mbpo__fail("attention: a segment of %lld rows exceeds the plan's %lld", (long long)L, (long long)MBPO__CPU(be)->max_seg);
}
static int mbpo__cpu_attention_forward(mbpo_backend *be, mbpo_x *out, float *lse, const mbpo_x *q, const mbpo_x *k,
                                       const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                                       int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal) {
    int64_t s, total = cu_host[n_seg];
    (void)cu;
    for (s = 0; s < n_seg; s++) {
        int64_t o = cu_host[s], L = cu_host[s + 1] - o;
        if (!mbpo__cpu_seg_fits(be, L)) return 0;
        mbpo__attention_forward(MBPO__F(out) + o * os, lse + o, MBPO__CF(q) + o * qs, MBPO__CF(k) + o * kvs,
                                MBPO__CF(v) + o * kvs, L, NH, NKV, HS, qs, kvs, os, total, causal, MBPO__CPU(be)->scratch);
    }
    return 1;
}
static int mbpo__cpu_attention_backward(mbpo_backend *be, mbpo_x *dq, mbpo_x *dk, mbpo_x *dv, const mbpo_x *dout,
                                        const mbpo_x *out, const float *lse, const mbpo_x *q, const mbpo_x *k,
                                        const mbpo_x *v, const int64_t *cu, const int64_t *cu_host, int64_t n_seg,
                                        int64_t NH, int64_t NKV, int64_t HS, int64_t qs, int64_t kvs, int64_t os, int causal) {
    int64_t s, total = cu_host[n_seg];
    (void)cu;
    for (s = 0; s < n_seg; s++) {
        int64_t o = cu_host[s], L = cu_host[s + 1] - o;
        if (!mbpo__cpu_seg_fits(be, L)) return 0;
        mbpo__attention_backward(MBPO__F(dq) + o * qs, MBPO__F(dk) + o * kvs, MBPO__F(dv) + o * kvs, MBPO__CF(dout) + o * os,
                                 MBPO__CF(out) + o * os, lse + o, MBPO__CF(q) + o * qs, MBPO__CF(k) + o * kvs,
                                 MBPO__CF(v) + o * kvs, L, NH, NKV, HS, qs, kvs, os, total, causal, MBPO__CPU(be)->scratch);
    }
    return 1;
}
/* Decoding attention of one new row per continuation to rows 0..len-1 of its own cache:
   two passes, max-subtracted softmax in double. */
static int mbpo__cpu_attention_decode(mbpo_backend *be, mbpo_x *out, const mbpo_x *q, const mbpo_x *kc, const mbpo_x *vc,
                                      int64_t G, const int64_t *tp, int64_t max_len, int64_t NH, int64_t NKV, int64_t HS) {
    int64_t job, QD = NH * HS, KD = NKV * HS, len = *tp + 1;
    float scale = 1.0f / sqrtf((float)HS);
    (void)be;
    if (*tp < 0 || *tp >= max_len) return mbpo__fail("attention_decode: position %lld outside the cache of %lld", (long long)*tp, (long long)max_len);
    MBPO__ROWS_IF(G * NH * len * HS / 4)
    for (job = 0; job < G * NH; job++) {
        int64_t gg = job / NH, h = job % NH, kvh = h / (NH / NKV), i, d2;
        const float *qh = MBPO__CF(q) + gg * QD + h * HS;
        const float *kk = MBPO__CF(kc) + gg * max_len * KD + kvh * HS, *vv = MBPO__CF(vc) + gg * max_len * KD + kvh * HS;
        float *o = MBPO__F(out) + gg * QD + h * HS;
        double mx = -1e300, sum = 0;
        for (i = 0; i < len; i++) {
            float sc = 0;
            for (d2 = 0; d2 < HS; d2++) sc += qh[d2] * kk[i * KD + d2];
            if (sc * scale > mx) mx = sc * scale;
        }
        for (d2 = 0; d2 < HS; d2++) o[d2] = 0;
        for (i = 0; i < len; i++) {
            float sc = 0;
            double p;
            for (d2 = 0; d2 < HS; d2++) sc += qh[d2] * kk[i * KD + d2];
            p = exp(sc * scale - mx);
            sum += p;
            for (d2 = 0; d2 < HS; d2++) o[d2] += (float)p * vv[i * KD + d2];
        }
        for (d2 = 0; d2 < HS; d2++) o[d2] = (float)(o[d2] / sum);
    }
    return 1;
}
static int mbpo__cpu_kv_append(mbpo_backend *be, mbpo_x *kc, mbpo_x *vc, const mbpo_x *kn, const mbpo_x *vn, int64_t G,
                               const int64_t *tp, int64_t max_len, int64_t KD) {
    int64_t g, t = *tp;
    (void)be;
    if (t < 0 || t >= max_len) return mbpo__fail("kv_append: position %lld outside the cache of %lld", (long long)t, (long long)max_len);
    for (g = 0; g < G; g++) {
        memcpy(MBPO__F(kc) + (g * max_len + t) * KD, MBPO__CF(kn) + g * KD, (size_t)KD * sizeof(float));
        memcpy(MBPO__F(vc) + (g * max_len + t) * KD, MBPO__CF(vn) + g * KD, (size_t)KD * sizeof(float));
    }
    return 1;
}
static int mbpo__cpu_embed_forward(mbpo_backend *be, mbpo_x *h, const mbpo_x *embed, const mbpo_x *feat, const int32_t *ids,
                                   const int64_t *feat_row, int64_t T, int64_t H) {
    int64_t t;
    (void)be;
    for (t = 0; t < T; t++) {
        const float *src = feat_row && feat_row[t] >= 0 ? MBPO__CF(feat) + feat_row[t] * H : MBPO__CF(embed) + (int64_t)ids[t] * H;
        memcpy(MBPO__F(h) + t * H, src, (size_t)H * sizeof(float));
    }
    return 1;
}
/* Parallel over columns so no two threads touch the same value; repeated tokens accumulate
   in increasing t. */
static int mbpo__cpu_embed_backward(mbpo_backend *be, float *dembed, mbpo_x *dfeat, const mbpo_x *dh, const int32_t *ids,
                                    const int64_t *feat_row, int64_t pad_id, int64_t T, int64_t H) {
    int64_t j0;
    (void)be;
    MBPO__OMP(MBPO__SCHED_COLS)
    for (j0 = 0; j0 < H; j0 += 16) {
        int64_t t, j, j1 = j0 + 16 < H ? j0 + 16 : H;
        for (t = 0; t < T; t++) {
            float *dst;
            if (feat_row && feat_row[t] >= 0) dst = MBPO__F(dfeat) + feat_row[t] * H;
            else if (dembed && ids[t] != pad_id) dst = dembed + (int64_t)ids[t] * H;
            else continue;
            for (j = j0; j < j1; j++) dst[j] += MBPO__CF(dh)[t * H + j];
        }
    }
    return 1;
}
static int mbpo__cpu_head_forward(mbpo_backend *be, float *logp, float *lse, const mbpo_x *xf, const mbpo_x *lm_head,
                                  const int64_t *rows, const int32_t *labels, int64_t N, int64_t H, int64_t V, int64_t chunk,
                                  mbpo_x *chunk_x, float *chunk_z) {
    int64_t n0, r;
    (void)be;
    for (n0 = 0; n0 < N; n0 += chunk) {
        int64_t cn = N - n0 < chunk ? N - n0 : chunk;
        for (r = 0; r < cn; r++) memcpy(MBPO__F(chunk_x) + r * H, MBPO__CF(xf) + rows[n0 + r] * H, (size_t)H * sizeof(float));
        mbpo__matmul_forward(chunk_z, MBPO__CF(chunk_x), MBPO__CF(lm_head), NULL, cn, H, V);
        mbpo__logsoftmax_gather_forward(logp + n0, lse + n0, chunk_z, labels + n0, cn, V);
    }
    return 1;
}
static int mbpo__cpu_head_backward(mbpo_backend *be, mbpo_x *dxf, float *dlm_head, const float *dlogp, const float *lse,
                                   const mbpo_x *xf, const mbpo_x *lm_head, const int64_t *rows, const int32_t *labels,
                                   int64_t N, int64_t H, int64_t V, int64_t chunk, mbpo_x *chunk_x, float *chunk_z,
                                   mbpo_x *chunk_dx) {
    int64_t n0, r, j;
    (void)be;
    for (n0 = 0; n0 < N; n0 += chunk) {
        int64_t cn = N - n0 < chunk ? N - n0 : chunk;
        for (r = 0; r < cn; r++) memcpy(MBPO__F(chunk_x) + r * H, MBPO__CF(xf) + rows[n0 + r] * H, (size_t)H * sizeof(float));
        mbpo__matmul_forward(chunk_z, MBPO__CF(chunk_x), MBPO__CF(lm_head), NULL, cn, H, V);
        mbpo__logsoftmax_gather_backward(chunk_z, dlogp + n0, lse + n0, labels + n0, cn, V);
        memset(chunk_dx, 0, (size_t)(cn * H) * sizeof(float));
        mbpo__matmul_backward(MBPO__F(chunk_dx), dlm_head, NULL, chunk_z, MBPO__CF(chunk_x), MBPO__CF(lm_head), cn, H, V);
        for (r = 0; r < cn; r++) {   /* each target has its own row: no collisions */
            float *dst = MBPO__F(dxf) + rows[n0 + r] * H;
            for (j = 0; j < H; j++) dst[j] += MBPO__CF(chunk_dx)[r * H + j];
        }
    }
    return 1;
}
static int mbpo__cpu_logits(mbpo_backend *be, float *z, const mbpo_x *x, const mbpo_x *lm_head, int64_t n, int64_t H, int64_t V) {
    (void)be; mbpo__matmul_forward(z, MBPO__CF(x), MBPO__CF(lm_head), NULL, n, H, V); return 1;
}
#undef MBPO__F
#undef MBPO__CF
#undef MBPO__CPU

static int32_t mbpo__sample_u(const float *logits, int64_t V, const mbpo_gen_opts *o, double u, float *scratch);
static int64_t mbpo__argmax(const float *z, int64_t V);
/* log softmax(z)[i] of a row (V), the sum in double in id order */
static float mbpo__logp_of(const float *z, int64_t V, int64_t i) {
    int64_t j, best = mbpo__argmax(z, V);
    double mx = z[best], sum = 0;
    for (j = 0; j < V; j++) sum += exp((double)z[j] - mx);
    return (float)((double)z[i] - (mx + log(sum)));
}
static int mbpo__cpu_sample(mbpo_backend *be, int32_t *tok, float *logp, float *z, const double *u, const int64_t *st,
                            const unsigned char *done, int64_t G, int64_t V, const mbpo__sample_k *k) {
    mbpo_gen_opts o;
    float *scratch = k->temperature > 0 ? (float *)mbpo__alloc((size_t)(2 * V) * sizeof(float)) : NULL;
    int64_t g, r = 0;
    int b;
    (void)be;
    if (k->temperature > 0 && !scratch) return 0;
    memset(&o, 0, sizeof o);
    o.temperature = k->temperature; o.top_k = (int)k->top_k; o.top_p = k->top_p;
    for (g = 0; g < G; g++) {
        float *row = z + g * V;
        if (done[g]) continue;
        for (b = 0; b < k->n_ban; b++) if (k->ban[b] >= 0 && k->ban[b] < V) row[k->ban[b]] = -INFINITY;
        tok[g] = k->temperature > 0 ? mbpo__sample_u(row, V, &o, u[st[MBPO__GS_NU] + r], scratch) : (int32_t)mbpo__argmax(row, V);
        logp[g] = mbpo__logp_of(row, V, tok[g]);
        r++;
    }
    mbpo_free(scratch);
    return 1;
}
static int mbpo__cpu_gen_step(mbpo_backend *be, int32_t *out, float *out_logp, int32_t *len, unsigned char *done, int64_t *st,
                              int64_t *pos, const int32_t *tok, const float *logp, int64_t G, int64_t stride,
                              const mbpo__step_k *k) {
    int64_t g, live = 0;
    int s;
    (void)be;
    st[MBPO__GS_T] += st[MBPO__GS_GO];
    for (g = 0; g < G; g++) live += !done[g];
    if (k->draws) st[MBPO__GS_NU] += live;
    for (g = 0; g < G; g++) {
        if (done[g]) continue;
        if (len[g] >= stride) { done[g] = 1; continue; }   /* (the caller bounds the steps) */
        out[g * stride + len[g]] = tok[g];
        if (out_logp) out_logp[g * stride + len[g]] = logp[g];
        len[g]++;
        for (s = 0; s < k->n_stop; s++) if (tok[g] == k->stop[s]) { done[g] = 1; break; }
    }
    for (g = 0, live = 0; g < G; g++) live += !done[g];
    st[MBPO__GS_LIVE] = live; st[MBPO__GS_GO] = live > 0;
    for (g = 0; g < 3 * G; g++) pos[g] = st[MBPO__GS_T] + st[MBPO__GS_DELTA];
    return 1;
}
static float mbpo__mul_rounded(float a, float b);
static float mbpo__clip01(float v);
static int mbpo__cpu_pixels(mbpo_backend *be, mbpo_x *pv, const float *x, const int64_t *map, int64_t n_pv, const float *kms) {
    float *out = (float *)(void *)pv, k = kms[0];
    int64_t j;
    (void)be;
    MBPO__ELEMS_IF(2 * n_pv)
    for (j = 0; j < n_pv; j++) {
        float v = x[map[j]];
        int64_t c = map[j] % 3;
        if (k != 1.0f) v = mbpo__mul_rounded(v, k);
        out[j] = (v - kms[1 + c]) / kms[4 + c];
    }
    return 1;
}
static int mbpo__cpu_pixels_backward(mbpo_backend *be, float *dx, const mbpo_x *dpv, const int64_t *inv, int64_t n, int64_t T,
                                     const float *kms) {
    const float *g = (const float *)(const void *)dpv;
    float k = kms[0];
    int64_t i;
    (void)be;
    MBPO__ELEMS_IF(n * (T + 1))
    for (i = 0; i < n; i++) {
        float sum = 0.0f;
        int64_t tau;
        for (tau = 0; tau < T; tau++) sum += g[inv[i * T + tau]];
        dx[i] = (k != 1.0f ? sum * k : sum) / kms[4 + i % 3];
    }
    return 1;
}
static int mbpo__cpu_pgd_step(mbpo_backend *be, float *x, const float *x0, const float *dx, int64_t n, float step, float eps) {
    int64_t i;
    (void)be;
    for (i = 0; i < n; i++) {
        float v = x[i] - step * (float)((dx[i] > 0) - (dx[i] < 0));
        if (eps >= 0) {                              /* project onto the eps ball around the clean image */
            float lo = x0[i] - eps, hi = x0[i] + eps;
            v = v < lo ? lo : v > hi ? hi : v;
        }
        x[i] = mbpo__clip01(v);
    }
    return 1;
}
/* sequential: one order for every n, and the bits of mbpo_grad_norm's sum */
static int mbpo__cpu_sumsq(mbpo_backend *be, double *out_host, const float *g, int64_t n) {
    double sum = 0;
    int64_t i;
    (void)be;
    for (i = 0; i < n; i++) sum += (double)g[i] * g[i];
    *out_host = sum;
    return 1;
}
static int mbpo__cpu_adamw(mbpo_backend *be, float *master, mbpo_x *px, float *m, float *v, const float *g, int64_t n,
                           const mbpo__adamw_k *k) {
    int64_t i;
    (void)be; (void)px;   /* px is master */
    MBPO__OMP(MBPO__SCHED_ELEMS)
    for (i = 0; i < n; i++) {
        double gi = g[i] * k->scale;
        double mi = k->beta1 * m[i] + (1 - k->beta1) * gi;
        double vi = k->beta2 * v[i] + (1 - k->beta2) * gi * gi;
        m[i] = (float)mi; v[i] = (float)vi;
        master[i] = (float)(master[i] - k->lr * (k->weight_decay * master[i] + (mi / k->bc1) / (sqrt(vi / k->bc2) + k->eps)));
    }
    return 1;
}
static const mbpo_ops mbpo__cpu_ops = {
    "cpu", sizeof(float), mbpo__cpu_create, mbpo__cpu_destroy,
    mbpo__cpu_alloc, mbpo__cpu_release, mbpo__cpu_copy, mbpo__cpu_copy, mbpo__cpu_zero, mbpo__cpu_copy,
    mbpo__cpu_x_copy_in, mbpo__cpu_x_copy_out,
    mbpo__cpu_matmul_forward, mbpo__cpu_matmul_backward,
    mbpo__cpu_layernorm_forward, mbpo__cpu_layernorm_backward, mbpo__cpu_rmsnorm_forward, mbpo__cpu_rmsnorm_backward,
    mbpo__cpu_quick_gelu_forward, mbpo__cpu_quick_gelu_backward, mbpo__cpu_gelu_forward, mbpo__cpu_gelu_backward,
    mbpo__cpu_swiglu_forward, mbpo__cpu_swiglu_backward, mbpo__cpu_add, mbpo__cpu_gather_rows,
    mbpo__cpu_mrope_tables, mbpo__cpu_vrope_tables, mbpo__cpu_rope_apply,
    mbpo__cpu_attention_forward, mbpo__cpu_attention_backward, mbpo__cpu_attention_decode, mbpo__cpu_kv_append,
    mbpo__cpu_embed_forward, mbpo__cpu_embed_backward, mbpo__cpu_head_forward, mbpo__cpu_head_backward, mbpo__cpu_logits,
    mbpo__cpu_sumsq, mbpo__cpu_sample, mbpo__cpu_gen_step, mbpo__cpu_adamw, mbpo__cpu_pixels, mbpo__cpu_pixels_backward,
    mbpo__cpu_pgd_step, NULL, NULL, NULL, NULL   /* no graphs: the CPU runs each op as it is called */
};

#ifdef MBPO_CUDA
#include "mbpo_cuda.cuh"   /* adds mbpo__cuda_ops: the same table on the GPU */
#endif

/* The table of a device, or NULL with the reason. */
static const mbpo_ops *mbpo__device_ops(mbpo_device d) {
    if (d == MBPO_DEVICE_CPU) return &mbpo__cpu_ops;
#ifdef MBPO_CUDA
    if (d == MBPO_DEVICE_CUDA) return mbpo__cuda_available() ? &mbpo__cuda_ops : NULL;
    mbpo__fail("unknown device %d", (int)d);
#else
    if (d == MBPO_DEVICE_CUDA)
        mbpo__fail("--device cuda: this build has no CUDA backend (build the CUDA drivers with make cuda, into build/cuda/)");
    else
        mbpo__fail("unknown device %d", (int)d);
#endif
    return NULL;
}
MBPODEF int mbpo_device_available(mbpo_device d) { return mbpo__device_ops(d) != NULL; }
MBPODEF const char *mbpo_device_name(mbpo_device d) { return d == MBPO_DEVICE_CUDA ? "cuda" : "cpu"; }
MBPODEF int mbpo_device_parse(const char *name, mbpo_device *out) {
    if (name && !strcmp(name, "cpu")) { *out = MBPO_DEVICE_CPU; return 1; }
    if (name && !strcmp(name, "cuda")) { *out = MBPO_DEVICE_CUDA; return 1; }
    return mbpo__fail("device \"%s\" is not one of cpu, cuda", name ? name : "");
}

/* ------------------------------------------------------------------ 3. model: activations

   One arena in backend memory holds every activation of a forward pass and every scratch
   buffer of the backward pass; a second, small one holds the batch metadata (positions,
   image rows, target rows, segment offsets), laid out on the host and uploaded once per
   batch (on the CPU both are host memory and the upload is skipped). mbpo__acts_layout()
   hands out pointers for a given batch shape; called with base == NULL it only counts,
   which is how mbpo_model_plan() sizes the arena. All sizes grow with T, P and N, so any
   batch within the plan fits in the planned arena. */
#define MBPO__HEAD_CHUNK 64   /* target rows per lm_head chunk: CH x V logits alive at once */

struct mbpo_acts {
    int64_t max_T, max_P, max_N, max_images;
    int threads;
    int recompute;                 /* one decoder layer's buffers, shared by all (mbpo_model.recompute) */
    void *base; size_t n_bytes;    /* backend memory */
    int64_t *ibase; size_t n_ints; /* host metadata ... */
    int64_t *dibase;               /* ... and its backend copy (== ibase on the CPU) */
    /* shape of the last forward */
    int64_t T, P, N, n_images, n_feat, n_seqs, n_vseg, n_vwin;
    const mbpo_model *forward_by;  /* whose forward the arena holds (models may share it), or NULL */
    /* vision tower: l = block index, D = depth, F = fc1 width */
    mbpo_x *pix;                   /* (P, PIX) the batch's pixel_values */
    mbpo_x *pixw;                  /* (P, PIX) Qwen2.5-VL: the same rows in window order (Qwen2-VL: empty,
                                      never used: the tower runs in raster order; so vup, dv3, dpixw) */
    float *vcos, *vsin;            /* (P, HSv/2) rotary tables of the patches */
    mbpo_x *vx;                    /* (D+1, P, E) residual stream; vx[0] = patch embed */
    mbpo_x *vln1, *vqkv, *vatt, *vmid, *vln2, *vfc1, *vact;   /* vfc1: fc1 or, Qwen2.5-VL, gate */
    mbpo_x *vup;                   /* (D, P, F) Qwen2.5-VL's up_proj */
    float *vln1_mean, *vln1_rstd, *vlse, *vln2_mean, *vln2_rstd;
    mbpo_x *mln, *mfc1, *mact, *feat;   /* merger; feat (P/4, H) */
    float *mln_mean, *mln_rstd;
    /* language model: l = layer, L = layers */
    float *cos, *sin;              /* (T, HS/2) M-RoPE tables */
    mbpo_x *h;                     /* (L+1, T, H) residual stream; h[0] = inputs_embeds */
    mbpo_x *x1, *q, *k, *v, *att, *hmid, *x2, *gate, *up, *act;
    float *rstd1, *lse, *rstd2;
    mbpo_x *xf; float *rstdf;      /* (T, H), (T) final norm */
    float *tgt_lse;                /* (N) log-sum-exp of each target row's logits */
    float *logp, *dlogp;           /* (N) */
    mbpo_x *chunk_x, *chunk_dx; float *chunk_logits;
    float *row_logits;             /* (V) one row, for mbpo_model_logits */
    /* backward scratch */
    mbpo_x *dh, *dx, *dbig1, *dbig2, *dbig3, *dq, *dk, *dv, *dxf;
    mbpo_x *dvx, *dvx2, *dv1, *dv2, *dv3, *dvatt, *dfeat, *dpix, *dpixw;
    /* integers, host side (the backend copy is at the same offset from dibase) */
    int64_t *pos;                  /* (3, T) */
    int64_t *feat_row;             /* (T) image-feature row of a token, or -1 */
    int64_t *tgt_row;              /* (N) row of xf that predicts target n */
    int32_t *tgt_label;            /* (N) the target token ids */
    int32_t *ids;                  /* (T) the token ids */
    int64_t *img_poff;             /* (images+1) first patch of each image */
    int64_t *img_foff;             /* (images+1) first feature row of each image */
    int64_t *seq_grid;             /* (runs, 3) grids of one sequence's image runs, runs <= T */
    int64_t *lseg;                 /* (B+1) the packed sequences: attention segments of the LM */
    int64_t *vseg;                 /* (P+1) attention segments of the vision tower (per image and frame) */
    int64_t *vhw;                  /* (2, P) patch row and column of every patch (in the tower's order) */
    int64_t *vwin;                 /* (P+1) Qwen2.5-VL: window segments, in window order */
    int64_t *vperm, *vinv;         /* (P) Qwen2.5-VL: window row r holds raster row vperm[r]; vinv inverts it */
};

static size_t mbpo__acts_layout(mbpo_acts *a, const mbpo_config *c, size_t xs, int64_t T, int64_t P, int64_t N,
                                int64_t n_img, int64_t n_seqs, char *base, int64_t *ibase, size_t *n_ints) {
    size_t used = 0, iused = 0;
    int64_t D = c->v_depth, E = c->v_embed_dim, F = c->v_mlp_hidden, L = c->n_layers, H = c->hidden_size;
    int64_t I = c->intermediate_size, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int64_t HSv = E / c->v_heads, mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm;
    int64_t CH = N < MBPO__HEAD_CHUNK ? N : MBPO__HEAD_CHUNK;
    int64_t big = I > QD ? I : QD, vbig = F > 3 * E ? F : 3 * E;
    int64_t P25 = c->arch == MBPO_ARCH_QWEN2_5_VL ? P : 0;   /* rows of the Qwen2.5-VL-only buffers */
    int64_t LK = a->recompute ? 1 : L;   /* decoder layers whose inner buffers are kept (h: every layer's input) */
    /* every buffer starts 256 bytes after a 256-byte boundary: aligned for any vector unit */
#define MBPO__TAKE(ptr, count, type, size) do { a->ptr = base ? (type *)(void *)(base + used) : NULL; \
        used += ((size_t)(count) * (size) + 255) & ~(size_t)255; } while (0)
#define MBPO__X(ptr, count) MBPO__TAKE(ptr, count, mbpo_x, xs)
#define MBPO__S(ptr, count) MBPO__TAKE(ptr, count, float, sizeof(float))
#define MBPO__ITAKE(ptr, count) do { a->ptr = ibase ? ibase + iused : NULL; iused += (size_t)(count) + 1; } while (0)
    MBPO__X(pix, P * mbpo_config_pix(c)); MBPO__X(pixw, P25 * mbpo_config_pix(c));
    MBPO__S(vcos, P * HSv / 2); MBPO__S(vsin, P * HSv / 2);
    MBPO__X(vx, (D + 1) * P * E);
    MBPO__X(vln1, D * P * E); MBPO__S(vln1_mean, D * P); MBPO__S(vln1_rstd, D * P);
    MBPO__X(vqkv, D * P * 3 * E); MBPO__X(vatt, D * P * E); MBPO__S(vlse, D * c->v_heads * P);
    MBPO__X(vmid, D * P * E);
    MBPO__X(vln2, D * P * E); MBPO__S(vln2_mean, D * P); MBPO__S(vln2_rstd, D * P);
    MBPO__X(vfc1, D * P * F); MBPO__X(vact, D * P * F); MBPO__X(vup, D * P25 * F);
    MBPO__X(mln, P * E); MBPO__S(mln_mean, P); MBPO__S(mln_rstd, P);
    MBPO__X(mfc1, PF * M); MBPO__X(mact, PF * M); MBPO__X(feat, PF * H);
    MBPO__S(cos, T * c->head_dim / 2); MBPO__S(sin, T * c->head_dim / 2);
    MBPO__X(h, (L + 1) * T * H);
    MBPO__X(x1, LK * T * H); MBPO__S(rstd1, LK * T);
    MBPO__X(q, LK * T * QD); MBPO__X(k, LK * T * KD); MBPO__X(v, LK * T * KD);
    MBPO__X(att, LK * T * QD); MBPO__S(lse, LK * c->n_heads * T);
    MBPO__X(hmid, LK * T * H); MBPO__X(x2, LK * T * H); MBPO__S(rstd2, LK * T);
    MBPO__X(gate, LK * T * I); MBPO__X(up, LK * T * I); MBPO__X(act, LK * T * I);
    MBPO__X(xf, T * H); MBPO__S(rstdf, T); MBPO__S(tgt_lse, N); MBPO__S(logp, N); MBPO__S(dlogp, N);
    MBPO__S(chunk_logits, CH * c->vocab_size); MBPO__X(chunk_x, CH * H); MBPO__X(chunk_dx, CH * H);
    MBPO__S(row_logits, c->vocab_size);
    MBPO__X(dh, T * H); MBPO__X(dx, T * H); MBPO__X(dxf, T * H);
    MBPO__X(dbig1, T * big); MBPO__X(dbig2, T * I); MBPO__X(dbig3, T * I);
    MBPO__X(dq, T * QD); MBPO__X(dk, T * KD); MBPO__X(dv, T * KD);
    MBPO__X(dvx, P * E); MBPO__X(dvx2, P * E); MBPO__X(dv1, P * vbig); MBPO__X(dv2, P * F); MBPO__X(dv3, P25 * F);
    MBPO__X(dvatt, P * E); MBPO__X(dfeat, PF * H); MBPO__X(dpix, P * mbpo_config_pix(c));
    MBPO__X(dpixw, P25 * mbpo_config_pix(c));
    MBPO__ITAKE(pos, 3 * T); MBPO__ITAKE(feat_row, T); MBPO__ITAKE(tgt_row, N);
    a->tgt_label = ibase ? (int32_t *)(ibase + iused) : NULL; iused += (size_t)N / 2 + 1;
    a->ids = ibase ? (int32_t *)(ibase + iused) : NULL; iused += (size_t)T / 2 + 1;
    MBPO__ITAKE(img_poff, n_img + 1); MBPO__ITAKE(img_foff, n_img + 1);
    MBPO__ITAKE(seq_grid, 3 * T);   /* one sequence may use an image many times: <= one run per token */
    MBPO__ITAKE(lseg, n_seqs + 1); MBPO__ITAKE(vseg, P + 1); MBPO__ITAKE(vhw, 2 * P);
    MBPO__ITAKE(vwin, P25 + 1); MBPO__ITAKE(vperm, P25); MBPO__ITAKE(vinv, P25);
#undef MBPO__TAKE
#undef MBPO__X
#undef MBPO__S
#undef MBPO__ITAKE
    *n_ints = iused;
    return used;
}
/* The backend copy of a host metadata pointer. */
#define MBPO__DEV(a, p) ((a)->dibase + ((const int64_t *)(const void *)(p) - (a)->ibase))
#define MBPO__DEV32(a, p) ((const int32_t *)(const void *)MBPO__DEV(a, p))

static void mbpo__acts_free(mbpo_model *m) {
    mbpo_acts *a = m->acts;
    if (m->borrowed) { m->acts = NULL; return; }   /* the owner's */
    if (!a) return;
    if (a->base) m->ops->release(m->be, a->base);
    if (a->dibase && a->dibase != a->ibase) m->ops->release(m->be, a->dibase);
    mbpo_free(a->ibase);
    mbpo_free(a);
    m->acts = NULL;
}
/* The borrower of m's plan (mbpo_model_borrow_plan) follows m's backend state, so that it never
   holds a destroyed one (its own buffers are released through it); its arena pointer is
   refreshed by its next borrow. */
static void mbpo__lend(mbpo_model *m) {
    if (m->borrower && m->borrower->borrowed) { m->borrower->be = m->be; m->borrower->be_gen = m->be_gen; m->borrower->acts = NULL; }
}
static uint64_t mbpo__be_generation;   /* the last be_gen given (mbpo_model_plan_on) */
static void mbpo__unlink(mbpo_model *m) {   /* m's plan goes: neither side points at the other any more */
    if (m->borrower && m->borrower->lender == m) m->borrower->lender = NULL;
    if (m->lender && m->lender->borrower == m) m->lender->borrower = NULL;
    m->borrower = m->lender = NULL;
}
/* Release everything a plan holds on its backend (the host params and grads stay). */
static void mbpo__backend_free(mbpo_model *m) {
    if (!m->ops) return;
    mbpo__acts_free(m);
    if (m->xparams && m->xparams != (void *)m->params) m->ops->release(m->be, m->xparams);
    if (m->xgrads && m->xgrads != m->grads) m->ops->release(m->be, m->xgrads);
    if (m->xmaster && m->xmaster != m->params) m->ops->release(m->be, m->xmaster);
    if (m->xmoments) m->ops->release(m->be, m->xmoments);
    if (m->be && !m->borrowed) m->ops->destroy(m->be);
    if (m->borrower) { m->be = NULL; mbpo__lend(m); }   /* the borrower's be is gone too */
    mbpo__unlink(m);
    m->borrowed = 0;
    m->host_stale = 0;   /* what the backend held newer than the host is gone with it */
    m->xparams = NULL; m->xgrads = NULL; m->xmaster = NULL; m->xmoments = NULL; m->be = NULL; m->ops = NULL;
    m->opt_fresh = 0;
}
MBPODEF int mbpo_model_plan_on(mbpo_model *m, mbpo_device device, int64_t max_tokens, int64_t max_patches,
                               int64_t max_targets, int want_grads) {
    mbpo_acts *a;
    const mbpo_ops *ops;
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
    if (!(ops = mbpo__device_ops(device))) return 0;
    if (m->ops != ops) mbpo__backend_free(m);   /* another device: start over */
    if (m->borrowed) { m->acts = NULL; m->be = NULL; m->borrowed = 0; mbpo__unlink(m); }   /* a plan of its own from now on */
    mbpo__acts_free(m);
    if (m->be) { m->ops->destroy(m->be); m->be = NULL; }
    m->ops = ops; m->device = device;
    if (!ops->create(&m->be, max_tokens > max_patches ? max_tokens : max_patches)) { m->ops = NULL; mbpo__lend(m); return 0; }
    m->be_gen = ++mbpo__be_generation;   /* caches and graphs made on the old one are stale, even at the same address */
    mbpo__lend(m);
    if (!m->xparams) {   /* the parameters as the backend stores them */
        if (ops == &mbpo__cpu_ops) m->xparams = m->params;
        else if (!ops->alloc(m->be, &m->xparams, m->table.total_floats * ops->x_size, "the parameters")) return 0;
        m->params_stale = ops != &mbpo__cpu_ops;
    }
    m->acts = a = (mbpo_acts *)mbpo__calloc(1, sizeof(mbpo_acts));
    if (!a) return 0;
    a->max_T = max_tokens; a->max_P = max_patches; a->max_N = max_targets;
    a->max_images = max_patches / mm;
    a->threads = mbpo__max_threads();
    a->recompute = m->recompute != 0;
    a->n_bytes = mbpo__acts_layout(a, &m->cfg, ops->x_size, max_tokens, max_patches, max_targets, a->max_images,
                                   max_tokens, NULL, NULL, &a->n_ints);
    a->ibase = (int64_t *)mbpo__calloc(a->n_ints, sizeof(int64_t));
    if (!a->ibase || !ops->alloc(m->be, &a->base, a->n_bytes, "the activations")) {
        mbpo__acts_free(m);
        return mbpo__fail("out of memory planning activations for %lld tokens, %lld patches: %s",
                          (long long)max_tokens, (long long)max_patches, mbpo_failure_reason());
    }
    if (ops == &mbpo__cpu_ops) a->dibase = a->ibase;
    else if (!ops->alloc(m->be, (void **)&a->dibase, a->n_ints * sizeof(int64_t), "the batch metadata")) { mbpo__acts_free(m); return 0; }
    if (want_grads && !m->grads) {
        m->grads = (float *)mbpo__calloc(m->table.total_floats, sizeof(float));
        if (!m->grads) return mbpo__fail("out of memory allocating gradients");
        mbpo__weights_bind(&m->g, &m->cfg, &m->table, m->grads);
    }
    if (m->grads && !m->xgrads) {
        if (ops == &mbpo__cpu_ops) m->xgrads = m->grads;
        else if (!ops->alloc(m->be, (void **)&m->xgrads, m->table.total_floats * sizeof(float), "the gradients") ||
                 !ops->upload(m->be, m->xgrads, m->grads, m->table.total_floats * sizeof(float))) return 0;
    }
    return 1;
}
MBPODEF int mbpo_model_borrow_plan(mbpo_model *m, mbpo_model *owner) {
    const mbpo_acts *oa = owner->acts;
    mbpo_acts probe;
    size_t n_ints = 0;
    if (!oa || !owner->ops) return mbpo__fail("mbpo_model_borrow_plan: the owner has no plan");
    memset(&probe, 0, sizeof probe);
    probe.recompute = oa->recompute;   /* the arena's layout is the owner's */
    if (m->table.total_floats != owner->table.total_floats ||
        mbpo__acts_layout(&probe, &m->cfg, owner->ops->x_size, oa->max_T, oa->max_P, oa->max_N, oa->max_images, oa->max_T, NULL,
                          NULL, &n_ints) != oa->n_bytes || n_ints != oa->n_ints)
        return mbpo__fail("mbpo_model_borrow_plan: the two models' configs lay out their activations differently");
    if (m->ops && m->ops != owner->ops) mbpo__backend_free(m);   /* another device */
    if (!m->borrowed) {   /* its own plan goes; its backend copy of the parameters stays */
        mbpo__acts_free(m);
        if (m->be) m->ops->destroy(m->be);
    }
    m->ops = owner->ops; m->be = owner->be; m->be_gen = owner->be_gen; m->acts = owner->acts; m->device = owner->device; m->borrowed = 1;
    owner->borrower = m; m->lender = owner;   /* a new backend of the owner's is handed on (mbpo__lend) */
    if (!m->xparams) {
        if (m->ops == &mbpo__cpu_ops) m->xparams = m->params;
        else if (!m->ops->alloc(m->be, &m->xparams, m->table.total_floats * m->ops->x_size, "the parameters")) return 0;
        m->params_stale = m->ops != &mbpo__cpu_ops;
    }
    return 1;
}
MBPODEF int mbpo_model_plan(mbpo_model *m, int64_t max_tokens, int64_t max_patches, int64_t max_targets,
                            int want_grads) {
    return mbpo_model_plan_on(m, m->device, max_tokens, max_patches, max_targets, want_grads);
}
MBPODEF size_t mbpo_model_plan_bytes(const mbpo_model *m) {
    return m->acts ? m->acts->n_bytes + m->acts->n_ints * sizeof(int64_t) : 0;
}
/* memset to 0 by the team, in 1 MB pieces: one thread writes about 11 GB/s (a 2B model's 8.8 GB
   of fp32 gradients, or 0.8 s per step; the mid bench model's 235 MB, 22 ms of a 320 ms step), two
   about twice that. */
static void mbpo__zero_team(void *p, size_t bytes) {
    int64_t c, nc = (int64_t)((bytes + (1 << 20) - 1) >> 20);
    MBPO__FOR_IF(1, (int64_t)(bytes / sizeof(float)))
    for (c = 0; c < nc; c++) {
        size_t a = (size_t)c << 20, b = a + ((size_t)1 << 20) < bytes ? a + ((size_t)1 << 20) : bytes;
        memset((char *)p + a, 0, b - a);
    }
}
MBPODEF void mbpo_model_zero_grad(mbpo_model *m) {
    size_t bytes = m->table.total_floats * sizeof(float);
    if (m->xgrads && m->xgrads != m->grads) {   /* a device: its gradients; the host copy is stale until asked for */
        if (!m->ops->zero(m->be, m->xgrads, bytes)) mbpo__fail("mbpo_model_zero_grad: %s", mbpo_failure_reason());
        m->grads_stale = 1;
        return;
    }
    if (m->grads) mbpo__zero_team(m->grads, bytes);
    m->grads_stale = 0;
}
MBPODEF void mbpo_model_params_changed(mbpo_model *m) {
    if (m->ops && m->xparams != (void *)m->params) m->params_stale = 1;
    m->opt_fresh = 0;   /* the host params (and the optimizer's host moments) are the truth again */
    m->host_stale = 0;
}
MBPODEF int mbpo_model_grads_to_host(mbpo_model *m) {
    if (!m->grads_stale) return 1;
    if (!m->ops->download(m->be, m->grads, m->xgrads, m->table.total_floats * sizeof(float))) return 0;
    m->grads_stale = 0;
    return 1;
}

/* ---- the optimizer on the backend

   The training state is where the gradients are. On the CPU the master weights are params
   and the moments opt->m, opt->v (nothing is copied). On a device: master (4 bytes per
   parameter) and moments (8) are allocated there at the first step and filled from the host
   copies; each step reads the gradients and writes master and the bf16 parameters in place,
   so nothing crosses PCIe but the norm. stream_moments trades 8 bytes per parameter of device
   memory for streaming m and v through two chunk buffers every step (still the same kernel).
   The host copies are brought back only for a checkpoint (mbpo_model_opt_to_host). */
/* The scalars of the next update from the gradient's norm (opt->step counts it), or 0 when
   the norm is not finite: then nothing changes and the caller skips and logs the step. */
static int mbpo__adamw_next(mbpo_adamw *opt, const mbpo_adamw_opts *o, double norm, mbpo__adamw_k *k) {
    if (!isfinite(norm)) return 0;
    k->lr = mbpo_lr_at(o, opt->step);
    k->beta1 = o->beta1; k->beta2 = o->beta2; k->eps = o->eps; k->weight_decay = o->weight_decay;
    k->scale = o->max_grad_norm > 0 && norm > o->max_grad_norm ? o->max_grad_norm / (norm + 1e-6) : 1.0;
    opt->step++;
    k->bc1 = 1.0 - pow(o->beta1, (double)opt->step);
    k->bc2 = 1.0 - pow(o->beta2, (double)opt->step);
    return 1;
}
static int64_t mbpo__opt_chunk(const mbpo_adamw *opt, int64_t n) {
    int64_t c = opt->chunk > 0 ? opt->chunk : (int64_t)1 << 26;
    return c < n ? c : n;
}
static int mbpo__opt_to_backend(mbpo_model *m, mbpo_adamw *opt) {
    const mbpo_ops *ops = m->ops;
    int64_t n = (int64_t)m->table.total_floats;
    size_t bytes = (size_t)n * sizeof(float);
    int cpu = ops == &mbpo__cpu_ops;
    if (m->opt_fresh) return 1;
    if (!m->xmaster) {
        if (cpu) m->xmaster = m->params;
        else if (!ops->alloc(m->be, (void **)&m->xmaster, bytes, "the fp32 master weights")) return 0;
    }
    if (!m->xmoments && (opt->stream_moments || !cpu)) {
        size_t mom = opt->stream_moments ? 2 * (size_t)mbpo__opt_chunk(opt, n) * sizeof(float) : 2 * bytes;
        if (!ops->alloc(m->be, (void **)&m->xmoments, mom, opt->stream_moments ? "the streamed moments' buffers" : "the Adam moments"))
            return 0;
    }
    if (!cpu && (!ops->upload(m->be, m->xmaster, m->params, bytes) ||
                 (!opt->stream_moments && (!ops->upload(m->be, m->xmoments, opt->m, bytes) ||
                                           !ops->upload(m->be, m->xmoments + n, opt->v, bytes)))))
        return 0;
    m->opt_fresh = 1;
    return 1;
}
MBPODEF int mbpo_model_adamw_step(mbpo_model *m, mbpo_adamw *opt, const mbpo_adamw_opts *o, double *norm) {
    const mbpo_ops *ops = m->ops;
    int64_t n = (int64_t)m->table.total_floats, off, c;
    mbpo__adamw_k k;
    double ss = 0;
    if (!ops || !m->xgrads || opt->n != (size_t)n)
        return mbpo__fail("mbpo_model_adamw_step: the model must be planned with gradients and the optimizer sized for its "
                          "%lld parameters (it has %zu)", (long long)n, opt->n);
    if (!mbpo__opt_to_backend(m, opt) || !ops->sumsq(m->be, &ss, m->xgrads, n)) return 0;
    *norm = sqrt(ss);
    if (!mbpo__adamw_next(opt, o, *norm, &k)) return 1;   /* non-finite: nothing changes */
    if (ops != &mbpo__cpu_ops) m->host_stale = 1;
    if (!opt->stream_moments) {
        float *mm = m->xmoments ? m->xmoments : opt->m, *vv = m->xmoments ? m->xmoments + n : opt->v;
        return ops->adamw(m->be, m->xmaster, (mbpo_x *)m->xparams, mm, vv, m->xgrads, n, &k);
    }
    c = mbpo__opt_chunk(opt, n);
    for (off = 0; off < n; off += c) {   /* m, v in from the host, the update, back out */
        int64_t len = n - off < c ? n - off : c;
        size_t b = (size_t)len * sizeof(float);
        if (!ops->upload(m->be, m->xmoments, opt->m + off, b) || !ops->upload(m->be, m->xmoments + c, opt->v + off, b) ||
            !ops->adamw(m->be, m->xmaster + off, mbpo__xat(ops, (const mbpo_x *)m->xparams, off), m->xmoments, m->xmoments + c,
                        m->xgrads + off, len, &k) ||
            !ops->download(m->be, opt->m + off, m->xmoments, b) || !ops->download(m->be, opt->v + off, m->xmoments + c, b))
            return 0;
    }
    return 1;
}
MBPODEF int mbpo_model_opt_to_host(mbpo_model *m, mbpo_adamw *opt) {
    const mbpo_ops *ops = m->ops;
    size_t bytes = m->table.total_floats * sizeof(float);
    if (!m->host_stale) return 1;
    if (!ops->download(m->be, m->params, m->xmaster, bytes) ||
        (!opt->stream_moments && (!ops->download(m->be, opt->m, m->xmoments, bytes) ||
                                  !ops->download(m->be, opt->v, m->xmoments + m->table.total_floats, bytes))))
        return 0;
    m->host_stale = 0;
    return 1;
}

/* The backend's copy of a parameter (or of its gradient), found by its offset in the host
   buffer: the two share the table's layout. */
static const mbpo_x *mbpo__w(const mbpo_model *m, const float *host) {
    return host ? mbpo__xat(m->ops, (const mbpo_x *)m->xparams, host - m->params) : NULL;
}
static float *mbpo__gw(const mbpo_model *m, const float *host_grad) {
    return host_grad && m->xgrads ? m->xgrads + (host_grad - m->grads) : NULL;
}

/* ------------------------------------------------------------------ 3. model: positions */


/* M-RoPE ids of one sequence (docs/QWEN2VL.md 3.4). grids: (n_runs, 3). pos rows t, h, w, each
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
   blocks (docs/QWEN2VL.md 1.4), so row r sits at patch row hp, column wp. */
static void mbpo__patch_hw(int64_t r, int64_t h, int64_t w, int64_t merge, int64_t *hp, int64_t *wp) {
    int64_t rr = r % (h * w), block = rr / (merge * merge), in = rr % (merge * merge);
    *hp = (block / (w / merge)) * merge + in / merge;
    *wp = (block % (w / merge)) * merge + in % merge;
}

/* Qwen2.5-VL's window order (docs/QWEN25VL.md 3.4). Per image and frame, the merge-unit grid
   (gh, gw) is cut into windows of vws x vws units, row-major, each window's units row-major;
   windows at the bottom and right edges are partial. (transformers pads the grid to a multiple
   of vws, adding a whole empty row or column of windows when it already is one, and drops the
   empty windows afterwards; walking ceil(g / vws) windows skips them directly.) perm (units),
   cu (windows + 1) in patch rows; returns the number of windows. */
static int64_t mbpo__window_order(const mbpo_config *c, const int32_t *grid_thw, int n_images, int64_t *perm, int64_t *cu) {
    int64_t mm = c->v_merge * c->v_merge, vws = c->v_window_size / c->v_merge / c->v_patch, base = 0, j = 0, n_win = 0;
    int i;
    if (vws < 1) return mbpo__fail("window_size %lld is smaller than one merge unit", (long long)c->v_window_size) - 1;
    cu[0] = 0;
    for (i = 0; i < n_images; i++) {
        int64_t t = grid_thw[3 * i], gh = grid_thw[3 * i + 1] / c->v_merge, gw = grid_thw[3 * i + 2] / c->v_merge, f;
        for (f = 0; f < t; f++, base += gh * gw) {
            int64_t wr, wc, r, q;
            for (wr = 0; wr * vws < gh; wr++)
                for (wc = 0; wc * vws < gw; wc++) {
                    int64_t j0 = j;
                    for (r = wr * vws; r < (wr + 1) * vws && r < gh; r++)
                        for (q = wc * vws; q < (wc + 1) * vws && q < gw; q++) perm[j++] = base + r * gw + q;
                    cu[n_win + 1] = cu[n_win] + (j - j0) * mm;
                    n_win++;
                }
        }
    }
    return n_win;
}
MBPODEF int64_t mbpo_window_index(const mbpo_config *c, const int32_t *grid_thw, int n_images, int64_t *perm,
                                  int64_t *cu_window) {
    int64_t n = 0, k, mm = c->v_merge * c->v_merge;
    int i;
    for (i = 0; i < n_images; i++)   /* mbpo__batch_prepare checks a batch's grids the same way */
        if (grid_thw[3 * i] < 1 || grid_thw[3 * i + 1] < 1 || grid_thw[3 * i + 2] < 1 ||
            grid_thw[3 * i + 1] % c->v_merge || grid_thw[3 * i + 2] % c->v_merge)
            return mbpo__fail("image %d has grid %dx%dx%d; h and w must be positive multiples of %lld", i, grid_thw[3 * i],
                              grid_thw[3 * i + 1], grid_thw[3 * i + 2], (long long)c->v_merge) - 1;
    if (c->arch == MBPO_ARCH_QWEN2_5_VL) return mbpo__window_order(c, grid_thw, n_images, perm, cu_window);
    cu_window[0] = 0;   /* Qwen2-VL: raster order, one segment per image and frame */
    for (i = 0, k = 0; i < n_images; i++) {
        int64_t f, units = (int64_t)grid_thw[3 * i + 1] * grid_thw[3 * i + 2] / mm;
        for (f = 0; f < grid_thw[3 * i]; f++, n++) {
            int64_t u;
            for (u = 0; u < units; u++, k++) perm[k] = k;
            cu_window[n + 1] = cu_window[n] + units * mm;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ 3. model: forward */

#define MBPO__OP(call) do { if (!(call)) return 0; } while (0)   /* every op can fail (on a GPU) */

/* Check a batch against the config and the plan, lay out the activations for it, build
   its metadata on the host and hand metadata and pixels to the backend. */
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
    mbpo__acts_layout(a, c, m->ops->x_size, T, P, N, b->n_images, b->n_seqs, (char *)a->base, a->ibase, &n_ints);
    a->T = T; a->P = P; a->N = N; a->n_images = b->n_images; a->n_feat = P / mm; a->n_seqs = b->n_seqs;
    a->img_poff[0] = a->img_foff[0] = 0;
    a->n_vseg = 0; a->vseg[0] = 0;
    for (i = 0; i < b->n_images; i++) {
        const int32_t *g = b->grid_thw + 3 * i;
        int64_t r, seg = (int64_t)g[1] * g[2];
        a->img_poff[i + 1] = a->img_poff[i] + (int64_t)g[0] * g[1] * g[2];
        a->img_foff[i + 1] = a->img_foff[i] + (int64_t)g[0] * g[1] * g[2] / mm;
        /* vision attention never crosses images: one segment per image and frame */
        for (r = a->img_poff[i]; r < a->img_poff[i + 1]; r += seg) { a->vseg[a->n_vseg + 1] = r + seg; a->n_vseg++; }
        for (r = a->img_poff[i]; r < a->img_poff[i + 1] && c->arch == MBPO_ARCH_QWEN2_VL; r++)   /* Qwen2.5-VL: below */
            mbpo__patch_hw(r - a->img_poff[i], g[1], g[2], c->v_merge, &a->vhw[r], &a->vhw[P + r]);
    }
    if (c->arch == MBPO_ARCH_QWEN2_5_VL && P) {
        /* the window order of the patch rows, unit by unit; the rotary rows move with them
           (vhw is rebuilt in window order), and the inverse maps back for the image features
           and d(pixel_values). vinv holds the unit order while the rows are expanded. */
        int64_t j, q, *unit_perm = a->vinv;
        if ((a->n_vwin = mbpo__window_order(c, b->grid_thw, b->n_images, unit_perm, a->vwin)) < 0) return 0;
        for (j = 0; j < P / mm; j++)
            for (q = 0; q < mm; q++) a->vperm[j * mm + q] = unit_perm[j] * mm + q;
        for (j = 0; j < P; j++) a->vinv[a->vperm[j]] = j;
        for (i = 0; i < b->n_images; i++) {   /* the permutation never leaves an image */
            const int32_t *g = b->grid_thw + 3 * i;
            for (j = a->img_poff[i]; j < a->img_poff[i + 1]; j++)
                mbpo__patch_hw(a->vperm[j] - a->img_poff[i], g[1], g[2], c->v_merge, &a->vhw[j], &a->vhw[P + j]);
        }
    }
    /* positions, image-feature rows and targets, sequence by sequence */
    N = 0;
    for (s = 0; s <= b->n_seqs; s++) a->lseg[s] = b->seq_offsets[s];
    memcpy(a->ids, b->ids, (size_t)T * sizeof(int32_t));
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
                /* Qwen2.5-VL's features come out in window order: raster unit k sits at row vinv[mm k] / mm */
                a->feat_row[off + t] = c->arch == MBPO_ARCH_QWEN2_5_VL ? a->vinv[k * mm] / mm : k;
                k++;
            } else {
                a->feat_row[off + t] = -1;
            }
            if (t > 0 && b->target[off + t]) { a->tgt_row[N] = off + t - 1; a->tgt_label[N++] = b->ids[off + t]; }
        }
    }
    /* to the backend: the metadata in one copy, the pixels in the storage type */
    if (!m->ops->upload(m->be, a->dibase, a->ibase, n_ints * sizeof(int64_t))) return 0;
    if (P && !m->pixels_on_backend && !m->ops->x_upload(m->be, a->pix, b->pixel_values, P * mbpo_config_pix(c))) return 0;
    if (P && c->arch == MBPO_ARCH_QWEN2_5_VL &&
        !m->ops->gather_rows(m->be, a->pixw, a->pix, MBPO__DEV(a, a->vperm), P, mbpo_config_pix(c))) return 0;
    if (m->params_stale) {   /* the host parameters changed (an optimizer step): upload them once */
        if (!m->ops->x_upload(m->be, (mbpo_x *)m->xparams, m->params, (int64_t)m->table.total_floats)) return 0;
        m->params_stale = 0;
    }
    return 1;
}

/* The attention segments of vision block l (host copy; n_seg of them): whole images and frames,
   or Qwen2.5-VL's windows. */
static const int64_t *mbpo__vblock_segs(const mbpo_config *c, const mbpo_acts *a, int64_t l, int64_t *n_seg) {
    int full = mbpo__vblock_full(c, l);
    *n_seg = full ? a->n_vseg : a->n_vwin;
    return full ? a->vseg : a->vwin;
}

/* The vision tower and the merger: pixel rows (P, PIX) -> image features (P/4, H).
   Qwen2-VL: pre-norm blocks of LayerNorm, attention over each image, LayerNorm, QuickGELU MLP.
   Qwen2.5-VL (QWEN25VL.md 3): the rows run in window order (pixw, vhw), the blocks have RMSNorm
   and a SwiGLU MLP with biases, and attend within windows except in the fullatt blocks; the
   features leave in window order and the embedding picks them by the inverse (feat_row). */
static int mbpo__vision_forward(mbpo_model *m) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    const mbpo_ops *ops = m->ops;
    mbpo_backend *be = m->be;
    mbpo_acts *a = m->acts;
    int64_t P = a->P, E = c->v_embed_dim, F = c->v_mlp_hidden, NHv = c->v_heads, HSv = E / NHv;
    int64_t mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm, H = c->hidden_size, l;
    int q25 = c->arch == MBPO_ARCH_QWEN2_5_VL;
    MBPO__OP(ops->vrope_tables(be, a->vcos, a->vsin, MBPO__DEV(a, a->vhw), P, HSv, c->v_rope_theta));
    /* patch embedding: the Conv3d with stride = kernel is a Linear(PIX -> E) */
    MBPO__OP(ops->matmul_forward(be, a->vx, q25 ? a->pixw : a->pix, mbpo__w(m, w->patch_embed_w), NULL, P,
                                 mbpo_config_pix(c), E));
    for (l = 0; l < c->v_depth; l++) {
        const mbpo_vision_block *vb = &w->vblocks[l];
        mbpo_x *x = mbpo__xat(ops, a->vx, l * P * E), *ln1 = mbpo__xat(ops, a->vln1, l * P * E);
        mbpo_x *qkv = mbpo__xat(ops, a->vqkv, l * P * 3 * E), *att = mbpo__xat(ops, a->vatt, l * P * E);
        mbpo_x *mid = mbpo__xat(ops, a->vmid, l * P * E), *ln2 = mbpo__xat(ops, a->vln2, l * P * E);
        mbpo_x *fc1 = mbpo__xat(ops, a->vfc1, l * P * F), *act = mbpo__xat(ops, a->vact, l * P * F);
        mbpo_x *out = mbpo__xat(ops, a->vx, (l + 1) * P * E);
        int64_t n_seg;
        const int64_t *seg = mbpo__vblock_segs(c, a, l, &n_seg);
        /* x = x + proj(attn(norm1(x))) */
        if (q25) MBPO__OP(ops->rmsnorm_forward(be, ln1, a->vln1_rstd + l * P, x, mbpo__w(m, vb->norm1_w), P, E, 1e-6f));
        else MBPO__OP(ops->layernorm_forward(be, ln1, a->vln1_mean + l * P, a->vln1_rstd + l * P, x, mbpo__w(m, vb->norm1_w),
                                             mbpo__w(m, vb->norm1_b), P, E, 1e-6f));
        MBPO__OP(ops->matmul_forward(be, qkv, ln1, mbpo__w(m, vb->qkv_w), mbpo__w(m, vb->qkv_b), P, E, 3 * E));   /* [q | k | v] */
        MBPO__OP(ops->rope_apply(be, qkv, a->vcos, a->vsin, P, NHv, HSv, 3 * E, 1.0f));                           /* q */
        MBPO__OP(ops->rope_apply(be, mbpo__xat(ops, qkv, E), a->vcos, a->vsin, P, NHv, HSv, 3 * E, 1.0f));        /* k */
        MBPO__OP(ops->attention_forward(be, att, a->vlse + l * NHv * P, qkv, mbpo__xat(ops, qkv, E), mbpo__xat(ops, qkv, 2 * E),
                                        MBPO__DEV(a, seg), seg, n_seg, NHv, NHv, HSv, 3 * E, 3 * E, E, 0));
        MBPO__OP(ops->matmul_forward(be, mid, att, mbpo__w(m, vb->proj_w), mbpo__w(m, vb->proj_b), P, E, E));
        MBPO__OP(ops->add(be, mid, mid, x, P * E));
        if (q25) {   /* x = x + down(silu(gate(norm2(x))) * up(norm2(x))) */
            mbpo_x *up = mbpo__xat(ops, a->vup, l * P * F);
            MBPO__OP(ops->rmsnorm_forward(be, ln2, a->vln2_rstd + l * P, mid, mbpo__w(m, vb->norm2_w), P, E, 1e-6f));
            MBPO__OP(ops->matmul_forward(be, fc1, ln2, mbpo__w(m, vb->gate_w), mbpo__w(m, vb->gate_b), P, E, F));
            MBPO__OP(ops->matmul_forward(be, up, ln2, mbpo__w(m, vb->up_w), mbpo__w(m, vb->up_b), P, E, F));
            MBPO__OP(ops->swiglu_forward(be, act, fc1, up, P * F));
            MBPO__OP(ops->matmul_forward(be, out, act, mbpo__w(m, vb->down_w), mbpo__w(m, vb->down_b), P, F, E));
        } else {     /* x = x + fc2(quick_gelu(fc1(LN2(x)))) */
            MBPO__OP(ops->layernorm_forward(be, ln2, a->vln2_mean + l * P, a->vln2_rstd + l * P, mid, mbpo__w(m, vb->norm2_w),
                                            mbpo__w(m, vb->norm2_b), P, E, 1e-6f));
            MBPO__OP(ops->matmul_forward(be, fc1, ln2, mbpo__w(m, vb->fc1_w), mbpo__w(m, vb->fc1_b), P, E, F));
            MBPO__OP(ops->quick_gelu_forward(be, act, fc1, P * F));
            MBPO__OP(ops->matmul_forward(be, out, act, mbpo__w(m, vb->fc2_w), mbpo__w(m, vb->fc2_b), P, F, E));
        }
        MBPO__OP(ops->add(be, out, out, mid, P * E));
    }
    /* merger: norm, then each merge block's mm consecutive rows read as one (M = mm E) row */
    if (q25) MBPO__OP(ops->rmsnorm_forward(be, a->mln, a->mln_rstd, mbpo__xat(ops, a->vx, c->v_depth * P * E),
                                           mbpo__w(m, w->merger_ln_w), P, E, 1e-6f));
    else MBPO__OP(ops->layernorm_forward(be, a->mln, a->mln_mean, a->mln_rstd, mbpo__xat(ops, a->vx, c->v_depth * P * E),
                                         mbpo__w(m, w->merger_ln_w), mbpo__w(m, w->merger_ln_b), P, E, 1e-6f));
    MBPO__OP(ops->matmul_forward(be, a->mfc1, a->mln, mbpo__w(m, w->merger_fc1_w), mbpo__w(m, w->merger_fc1_b), PF, M, M));
    MBPO__OP(ops->gelu_forward(be, a->mact, a->mfc1, PF * M));
    MBPO__OP(ops->matmul_forward(be, a->feat, a->mact, mbpo__w(m, w->merger_fc2_w), mbpo__w(m, w->merger_fc2_b), PF, M, H));
    return 1;
}

/* One decoder layer's buffers over R rows, and what its attention looks at. */
typedef struct {
    mbpo_x *x, *x1, *q, *k, *v, *att, *mid, *x2, *gate, *up, *act, *out;
    float *rstd1, *rstd2, *lse;   /* lse (NH, R) */
    const float *cos, *sin;       /* (R, HS/2) */
} mbpo__layer_io;
typedef struct {
    const int64_t *cu, *cu_host; int64_t n_seg;   /* packed causal segments (forward, prefill) ... */
    mbpo_x *kc, *vc; int64_t max_len;             /* ... or, when kc is set, the cache of this layer: the */
    const int64_t *tp;                            /* rows are continuations, the new token at index *tp
                                                     (backend memory: mbpo__kv_bufs.st) */
} mbpo__attn_over;

/* One decoder layer, for every caller: the training forward and prefill (attention within
   each packed sequence, activations kept for the backward) and decoding (one row per
   continuation, its key and value appended to the cache, attention over the cache):
       mid = x + o_proj(attn(RoPE(q, k), v)),  q, k, v = proj(RMSNorm(x))
       out = mid + down(silu(gate(x2)) * up(x2)),  x2 = RMSNorm(mid)                 */
static int mbpo__decoder_layer(mbpo_model *m, const mbpo_decoder_layer *d, int64_t R, const mbpo__layer_io *io,
                               const mbpo__attn_over *over) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops;
    mbpo_backend *be = m->be;
    int64_t H = c->hidden_size, I = c->intermediate_size, HS = c->head_dim, NH = c->n_heads, NKV = c->n_kv_heads;
    int64_t QD = NH * HS, KD = NKV * HS;
    float eps = (float)c->rms_norm_eps;
    MBPO__OP(ops->rmsnorm_forward(be, io->x1, io->rstd1, io->x, mbpo__w(m, d->in_norm_w), R, H, eps));
    MBPO__OP(ops->matmul_forward(be, io->q, io->x1, mbpo__w(m, d->q_w), mbpo__w(m, d->q_b), R, H, QD));
    MBPO__OP(ops->matmul_forward(be, io->k, io->x1, mbpo__w(m, d->k_w), mbpo__w(m, d->k_b), R, H, KD));
    MBPO__OP(ops->matmul_forward(be, io->v, io->x1, mbpo__w(m, d->v_w), mbpo__w(m, d->v_b), R, H, KD));
    MBPO__OP(ops->rope_apply(be, io->q, io->cos, io->sin, R, NH, HS, QD, 1.0f));
    MBPO__OP(ops->rope_apply(be, io->k, io->cos, io->sin, R, NKV, HS, KD, 1.0f));
    if (over->kc) {
        MBPO__OP(ops->kv_append(be, over->kc, over->vc, io->k, io->v, R, over->tp, over->max_len, KD));
        MBPO__OP(ops->attention_decode(be, io->att, io->q, over->kc, over->vc, R, over->tp, over->max_len, NH, NKV, HS));
    } else {
        MBPO__OP(ops->attention_forward(be, io->att, io->lse, io->q, io->k, io->v, over->cu, over->cu_host, over->n_seg,
                                        NH, NKV, HS, QD, KD, QD, 1));
    }
    MBPO__OP(ops->matmul_forward(be, io->mid, io->att, mbpo__w(m, d->o_w), NULL, R, QD, H));
    MBPO__OP(ops->add(be, io->mid, io->mid, io->x, R * H));
    MBPO__OP(ops->rmsnorm_forward(be, io->x2, io->rstd2, io->mid, mbpo__w(m, d->post_norm_w), R, H, eps));
    MBPO__OP(ops->matmul_forward(be, io->gate, io->x2, mbpo__w(m, d->gate_w), NULL, R, H, I));
    MBPO__OP(ops->matmul_forward(be, io->up, io->x2, mbpo__w(m, d->up_w), NULL, R, H, I));
    MBPO__OP(ops->swiglu_forward(be, io->act, io->gate, io->up, R * I));
    MBPO__OP(ops->matmul_forward(be, io->out, io->act, mbpo__w(m, d->down_w), NULL, R, I, H));
    MBPO__OP(ops->add(be, io->out, io->out, io->mid, R * H));
    return 1;
}
/* Layer l's slice of the forward arena. */
static void mbpo__layer_io_of(const mbpo_model *m, int64_t l, mbpo__layer_io *io) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops;
    const mbpo_acts *a = m->acts;
    int64_t T = a->T, H = c->hidden_size, I = c->intermediate_size, QD = c->n_heads * c->head_dim;
    int64_t KD = c->n_kv_heads * c->head_dim, k = a->recompute ? 0 : l;   /* recompute: one layer's buffers */
    io->x = mbpo__xat(ops, a->h, l * T * H); io->x1 = mbpo__xat(ops, a->x1, k * T * H);
    io->q = mbpo__xat(ops, a->q, k * T * QD); io->k = mbpo__xat(ops, a->k, k * T * KD);
    io->v = mbpo__xat(ops, a->v, k * T * KD); io->att = mbpo__xat(ops, a->att, k * T * QD);
    io->mid = mbpo__xat(ops, a->hmid, k * T * H); io->x2 = mbpo__xat(ops, a->x2, k * T * H);
    io->gate = mbpo__xat(ops, a->gate, k * T * I); io->up = mbpo__xat(ops, a->up, k * T * I);
    io->act = mbpo__xat(ops, a->act, k * T * I); io->out = mbpo__xat(ops, a->h, (l + 1) * T * H);
    io->rstd1 = a->rstd1 + k * T; io->rstd2 = a->rstd2 + k * T; io->lse = a->lse + k * c->n_heads * T;
    io->cos = a->cos; io->sin = a->sin;
}

/* The language model over the packed batch: inputs_embeds -> final norm (T, H). */
static int mbpo__lm_forward(mbpo_model *m) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops;
    mbpo_acts *a = m->acts;
    mbpo__attn_over over;
    mbpo__layer_io io;
    int64_t T = a->T, H = c->hidden_size, l;
    memset(&over, 0, sizeof over);
    over.cu = MBPO__DEV(a, a->lseg); over.cu_host = a->lseg; over.n_seg = a->n_seqs;
    MBPO__OP(ops->mrope_tables(m->be, a->cos, a->sin, MBPO__DEV(a, a->pos), T, c->head_dim, c->rope_theta,
                               c->mrope_section[0], c->mrope_section[1]));
    /* inputs_embeds: token embeddings, image-pad tokens replaced by image features */
    MBPO__OP(ops->embed_forward(m->be, a->h, mbpo__w(m, m->w.embed), a->feat, MBPO__DEV32(a, a->ids),
                                MBPO__DEV(a, a->feat_row), T, H));
    for (l = 0; l < c->n_layers; l++) {
        mbpo__layer_io_of(m, l, &io);
        MBPO__OP(mbpo__decoder_layer(m, &m->w.layers[l], T, &io, &over));
    }
    MBPO__OP(ops->rmsnorm_forward(m->be, a->xf, a->rstdf, mbpo__xat(ops, a->h, c->n_layers * T * H), mbpo__w(m, m->w.norm_w),
                                  T, H, (float)c->rms_norm_eps));
    return 1;
}

/* Number of targets of a batch. */
static int64_t mbpo__batch_targets(const mbpo_batch *b) {
    int64_t t, n = 0;
    for (t = 0; t < b->seq_offsets[b->n_seqs]; t++) n += b->target[t] != 0;
    return n;
}
MBPODEF int64_t mbpo_model_forward(mbpo_model *m, const mbpo_batch *b, float *logp) {
    mbpo_acts *a = m->acts;
    const mbpo_config *c = &m->cfg;
    if (a) a->forward_by = NULL;
    if (!mbpo__batch_prepare(m, b)) return -1;
    if (a->P && !mbpo__vision_forward(m)) return -1;
    if (!mbpo__lm_forward(m)) return -1;
    /* fused lm_head + log-softmax + gather: logp = z[y] - logsumexp(z) */
    if (!m->ops->head_forward(m->be, a->logp, a->tgt_lse, a->xf, mbpo__w(m, m->w.lm_head), MBPO__DEV(a, a->tgt_row),
                              MBPO__DEV32(a, a->tgt_label), a->N, c->hidden_size, c->vocab_size, MBPO__HEAD_CHUNK,
                              a->chunk_x, a->chunk_logits) ||
        !m->ops->download(m->be, logp, a->logp, (size_t)a->N * sizeof(float)))
        return -1;
    a->forward_by = m;
    return a->N;
}

/* ------------------------------------------------------------------ 3. model: backward */

#define MBPO__G(ptr) (m->grads ? mbpo__gw(m, ptr) : NULL)   /* parameter gradient, or skip it */

static int mbpo__lm_backward(mbpo_model *m) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    const mbpo_ops *ops = m->ops;
    mbpo_backend *be = m->be;
    mbpo_acts *a = m->acts;
    int64_t T = a->T, H = c->hidden_size, I = c->intermediate_size, HS = c->head_dim;
    int64_t NH = c->n_heads, NKV = c->n_kv_heads, QD = NH * HS, KD = NKV * HS, l;
    mbpo_x *dh = a->dh, *dx = a->dx, *datt = a->dbig1, *dact = a->dbig1, *dgate = a->dbig2, *dup = a->dbig3;
    size_t xs = ops->x_size;
    /* dh = d(final hidden) from d(final norm) */
    MBPO__OP(ops->zero(be, dh, (size_t)(T * H) * xs));
    MBPO__OP(ops->rmsnorm_backward(be, dh, MBPO__G(m->g.norm_w), a->dxf, mbpo__xat(ops, a->h, c->n_layers * T * H),
                                   mbpo__w(m, w->norm_w), a->rstdf, T, H));
    for (l = c->n_layers - 1; l >= 0; l--) {
        const mbpo_decoder_layer *d = &w->layers[l];
        const mbpo_decoder_layer *g = m->grads ? &m->g.layers[l] : NULL;
        mbpo__layer_io io;
        mbpo__layer_io_of(m, l, &io);
        if (a->recompute) {   /* the layer's forward again from its input h[l] (it rewrites h[l + 1] with the same bits) */
            mbpo__attn_over over;
            memset(&over, 0, sizeof over);
            over.cu = MBPO__DEV(a, a->lseg); over.cu_host = a->lseg; over.n_seg = a->n_seqs;
            MBPO__OP(mbpo__decoder_layer(m, d, T, &io, &over));
        }
        /* MLP branch; dh carries d(out) and becomes d(mid) through the residual */
        MBPO__OP(ops->zero(be, dact, (size_t)(T * I) * xs));
        MBPO__OP(ops->matmul_backward(be, dact, g ? mbpo__gw(m, g->down_w) : NULL, NULL, dh, io.act, mbpo__w(m, d->down_w), T, I, H));
        MBPO__OP(ops->swiglu_backward(be, dgate, dup, dact, io.gate, io.up, T * I));
        MBPO__OP(ops->zero(be, dx, (size_t)(T * H) * xs));
        MBPO__OP(ops->matmul_backward(be, dx, g ? mbpo__gw(m, g->gate_w) : NULL, NULL, dgate, io.x2, mbpo__w(m, d->gate_w), T, H, I));
        MBPO__OP(ops->matmul_backward(be, dx, g ? mbpo__gw(m, g->up_w) : NULL, NULL, dup, io.x2, mbpo__w(m, d->up_w), T, H, I));
        MBPO__OP(ops->rmsnorm_backward(be, dh, g ? mbpo__gw(m, g->post_norm_w) : NULL, dx, io.mid, mbpo__w(m, d->post_norm_w),
                                       io.rstd2, T, H));
        /* attention branch; dh becomes d(x) */
        MBPO__OP(ops->zero(be, datt, (size_t)(T * QD) * xs));
        MBPO__OP(ops->matmul_backward(be, datt, g ? mbpo__gw(m, g->o_w) : NULL, NULL, dh, io.att, mbpo__w(m, d->o_w), T, QD, H));
        MBPO__OP(ops->attention_backward(be, a->dq, a->dk, a->dv, datt, io.att, io.lse, io.q, io.k, io.v,
                                         MBPO__DEV(a, a->lseg), a->lseg, a->n_seqs, NH, NKV, HS, QD, KD, QD, 1));
        MBPO__OP(ops->rope_apply(be, a->dq, a->cos, a->sin, T, NH, HS, QD, -1.0f));
        MBPO__OP(ops->rope_apply(be, a->dk, a->cos, a->sin, T, NKV, HS, KD, -1.0f));
        MBPO__OP(ops->zero(be, dx, (size_t)(T * H) * xs));
        MBPO__OP(ops->matmul_backward(be, dx, g ? mbpo__gw(m, g->q_w) : NULL, g ? mbpo__gw(m, g->q_b) : NULL, a->dq, io.x1,
                                      mbpo__w(m, d->q_w), T, H, QD));
        MBPO__OP(ops->matmul_backward(be, dx, g ? mbpo__gw(m, g->k_w) : NULL, g ? mbpo__gw(m, g->k_b) : NULL, a->dk, io.x1,
                                      mbpo__w(m, d->k_w), T, H, KD));
        MBPO__OP(ops->matmul_backward(be, dx, g ? mbpo__gw(m, g->v_w) : NULL, g ? mbpo__gw(m, g->v_b) : NULL, a->dv, io.x1,
                                      mbpo__w(m, d->v_w), T, H, KD));
        MBPO__OP(ops->rmsnorm_backward(be, dh, g ? mbpo__gw(m, g->in_norm_w) : NULL, dx, io.x, mbpo__w(m, d->in_norm_w),
                                       io.rstd1, T, H));
        if (g && m->grad_ready) {   /* layer l's gradients are whole: [its first parameter, the next layer's) */
            int64_t lo = d->in_norm_w - m->params;
            int64_t hi = (l + 1 < c->n_layers ? w->layers[l + 1].in_norm_w : w->norm_w) - m->params;
            MBPO__OP(m->grad_ready(m->grad_ctx, m, l, lo, hi));
        }
    }
    /* dh = d(inputs_embeds): image-pad rows go to the image features, the others to the
       embedding table (repeated tokens accumulate). The pad row, if any, gets no gradient
       (torch's padding_idx). */
    if (a->n_feat) MBPO__OP(ops->zero(be, a->dfeat, (size_t)(a->n_feat * H) * xs));
    MBPO__OP(ops->embed_backward(be, MBPO__G(m->g.embed), a->dfeat, dh, MBPO__DEV32(a, a->ids), MBPO__DEV(a, a->feat_row),
                                 c->pad_token_id, T, H));
    return 1;
}

static int mbpo__vision_backward(mbpo_model *m, int want_dpixel) {
    const mbpo_config *c = &m->cfg;
    const mbpo_weights *w = &m->w;
    const mbpo_ops *ops = m->ops;
    mbpo_backend *be = m->be;
    mbpo_acts *a = m->acts;
    int64_t P = a->P, E = c->v_embed_dim, F = c->v_mlp_hidden, NHv = c->v_heads, HSv = E / NHv;
    int64_t mm = c->v_merge * c->v_merge, PF = P / mm, M = E * mm, H = c->hidden_size, l, PIX = mbpo_config_pix(c);
    mbpo_x *dvx = a->dvx, *dvx2 = a->dvx2, *dv1 = a->dv1, *dv2 = a->dv2;
    size_t xs = ops->x_size;
    int q25 = c->arch == MBPO_ARCH_QWEN2_5_VL;
    /* merger */
    MBPO__OP(ops->zero(be, dv1, (size_t)(PF * M) * xs));
    MBPO__OP(ops->matmul_backward(be, dv1, MBPO__G(m->g.merger_fc2_w), MBPO__G(m->g.merger_fc2_b), a->dfeat, a->mact,
                                  mbpo__w(m, w->merger_fc2_w), PF, M, H));
    MBPO__OP(ops->gelu_backward(be, dv2, dv1, a->mfc1, PF * M));
    MBPO__OP(ops->zero(be, dvx2, (size_t)(P * E) * xs));
    MBPO__OP(ops->matmul_backward(be, dvx2, MBPO__G(m->g.merger_fc1_w), MBPO__G(m->g.merger_fc1_b), dv2, a->mln,
                                  mbpo__w(m, w->merger_fc1_w), PF, M, M));
    MBPO__OP(ops->zero(be, dvx, (size_t)(P * E) * xs));
    if (q25) MBPO__OP(ops->rmsnorm_backward(be, dvx, MBPO__G(m->g.merger_ln_w), dvx2, mbpo__xat(ops, a->vx, c->v_depth * P * E),
                                            mbpo__w(m, w->merger_ln_w), a->mln_rstd, P, E));
    else MBPO__OP(ops->layernorm_backward(be, dvx, MBPO__G(m->g.merger_ln_w), MBPO__G(m->g.merger_ln_b), dvx2,
                                          mbpo__xat(ops, a->vx, c->v_depth * P * E), mbpo__w(m, w->merger_ln_w), a->mln_mean,
                                          a->mln_rstd, P, E));
    for (l = c->v_depth - 1; l >= 0; l--) {
        const mbpo_vision_block *vb = &w->vblocks[l];
        const mbpo_vision_block *g = m->grads ? &m->g.vblocks[l] : NULL;
        mbpo_x *x = mbpo__xat(ops, a->vx, l * P * E), *ln1 = mbpo__xat(ops, a->vln1, l * P * E);
        mbpo_x *qkv = mbpo__xat(ops, a->vqkv, l * P * 3 * E), *att = mbpo__xat(ops, a->vatt, l * P * E);
        mbpo_x *mid = mbpo__xat(ops, a->vmid, l * P * E), *ln2 = mbpo__xat(ops, a->vln2, l * P * E);
        mbpo_x *fc1 = mbpo__xat(ops, a->vfc1, l * P * F), *act = mbpo__xat(ops, a->vact, l * P * F);
        float *lse = a->vlse + l * NHv * P;
        int64_t n_seg;
        const int64_t *seg = mbpo__vblock_segs(c, a, l, &n_seg);
        /* MLP branch; dvx carries d(out) and becomes d(mid) through the residual */
        MBPO__OP(ops->zero(be, dv1, (size_t)(P * F) * xs));
        MBPO__OP(ops->zero(be, dvx2, (size_t)(P * E) * xs));
        if (q25) {   /* dv2, dv3 = d(gate), d(up) */
            mbpo_x *up = mbpo__xat(ops, a->vup, l * P * F);
            MBPO__OP(ops->matmul_backward(be, dv1, g ? mbpo__gw(m, g->down_w) : NULL, g ? mbpo__gw(m, g->down_b) : NULL, dvx,
                                          act, mbpo__w(m, vb->down_w), P, F, E));
            MBPO__OP(ops->swiglu_backward(be, dv2, a->dv3, dv1, fc1, up, P * F));
            MBPO__OP(ops->matmul_backward(be, dvx2, g ? mbpo__gw(m, g->gate_w) : NULL, g ? mbpo__gw(m, g->gate_b) : NULL, dv2,
                                          ln2, mbpo__w(m, vb->gate_w), P, E, F));
            MBPO__OP(ops->matmul_backward(be, dvx2, g ? mbpo__gw(m, g->up_w) : NULL, g ? mbpo__gw(m, g->up_b) : NULL, a->dv3,
                                          ln2, mbpo__w(m, vb->up_w), P, E, F));
            MBPO__OP(ops->rmsnorm_backward(be, dvx, g ? mbpo__gw(m, g->norm2_w) : NULL, dvx2, mid, mbpo__w(m, vb->norm2_w),
                                           a->vln2_rstd + l * P, P, E));
        } else {
            MBPO__OP(ops->matmul_backward(be, dv1, g ? mbpo__gw(m, g->fc2_w) : NULL, g ? mbpo__gw(m, g->fc2_b) : NULL, dvx, act,
                                          mbpo__w(m, vb->fc2_w), P, F, E));
            MBPO__OP(ops->quick_gelu_backward(be, dv2, dv1, fc1, P * F));
            MBPO__OP(ops->matmul_backward(be, dvx2, g ? mbpo__gw(m, g->fc1_w) : NULL, g ? mbpo__gw(m, g->fc1_b) : NULL, dv2, ln2,
                                          mbpo__w(m, vb->fc1_w), P, E, F));
            MBPO__OP(ops->layernorm_backward(be, dvx, g ? mbpo__gw(m, g->norm2_w) : NULL, g ? mbpo__gw(m, g->norm2_b) : NULL,
                                             dvx2, mid, mbpo__w(m, vb->norm2_w), a->vln2_mean + l * P, a->vln2_rstd + l * P, P, E));
        }
        /* attention branch: dv1 becomes d(qkv) (P, 3E); no gradient crosses a segment */
        MBPO__OP(ops->zero(be, a->dvatt, (size_t)(P * E) * xs));
        MBPO__OP(ops->matmul_backward(be, a->dvatt, g ? mbpo__gw(m, g->proj_w) : NULL, g ? mbpo__gw(m, g->proj_b) : NULL, dvx,
                                      att, mbpo__w(m, vb->proj_w), P, E, E));
        MBPO__OP(ops->attention_backward(be, dv1, mbpo__xat(ops, dv1, E), mbpo__xat(ops, dv1, 2 * E), a->dvatt, att, lse, qkv,
                                         mbpo__xat(ops, qkv, E), mbpo__xat(ops, qkv, 2 * E), MBPO__DEV(a, seg), seg, n_seg,
                                         NHv, NHv, HSv, 3 * E, 3 * E, E, 0));
        MBPO__OP(ops->rope_apply(be, dv1, a->vcos, a->vsin, P, NHv, HSv, 3 * E, -1.0f));
        MBPO__OP(ops->rope_apply(be, mbpo__xat(ops, dv1, E), a->vcos, a->vsin, P, NHv, HSv, 3 * E, -1.0f));
        MBPO__OP(ops->zero(be, dvx2, (size_t)(P * E) * xs));
        MBPO__OP(ops->matmul_backward(be, dvx2, g ? mbpo__gw(m, g->qkv_w) : NULL, g ? mbpo__gw(m, g->qkv_b) : NULL, dv1, ln1,
                                      mbpo__w(m, vb->qkv_w), P, E, 3 * E));
        if (q25) MBPO__OP(ops->rmsnorm_backward(be, dvx, g ? mbpo__gw(m, g->norm1_w) : NULL, dvx2, x, mbpo__w(m, vb->norm1_w),
                                                a->vln1_rstd + l * P, P, E));
        else MBPO__OP(ops->layernorm_backward(be, dvx, g ? mbpo__gw(m, g->norm1_w) : NULL, g ? mbpo__gw(m, g->norm1_b) : NULL,
                                              dvx2, x, mbpo__w(m, vb->norm1_w), a->vln1_mean + l * P, a->vln1_rstd + l * P, P, E));
    }
    /* patch embedding, and the gradient of the pixels (PGD's); Qwen2.5-VL's rows go back from
       window order to raster order (the adjoint of a permutation is its inverse) */
    if (want_dpixel) MBPO__OP(ops->zero(be, q25 ? a->dpixw : a->dpix, (size_t)(P * PIX) * xs));
    MBPO__OP(ops->matmul_backward(be, want_dpixel ? (q25 ? a->dpixw : a->dpix) : NULL, MBPO__G(m->g.patch_embed_w), NULL, dvx,
                                  q25 ? a->pixw : a->pix, mbpo__w(m, w->patch_embed_w), P, PIX, E));
    if (want_dpixel && q25) MBPO__OP(ops->gather_rows(be, a->dpix, a->dpixw, MBPO__DEV(a, a->vinv), P, PIX));
    return 1;
}

/* want_dpix: d(pixel_values) into the arena's dpix (and to dpixel_values on the host if not NULL) */
static int mbpo__model_backward(mbpo_model *m, const mbpo_batch *b, const float *dlogp, int want_dpix, float *dpixel_values) {
    mbpo_acts *a = m->acts;
    const mbpo_config *c = &m->cfg;
    int64_t H = c->hidden_size;
    if (!a || a->forward_by != m) return mbpo__fail("mbpo_model_backward: no forward pass of this model to go back through");
    if (a->T != b->seq_offsets[b->n_seqs] || a->n_images != b->n_images || a->n_seqs != b->n_seqs)
        return mbpo__fail("mbpo_model_backward: not the batch of the last forward");
    /* fused head backward, chunk by chunk: dz = dlogp (onehot(y) - softmax(z)) */
    MBPO__OP(m->ops->upload(m->be, a->dlogp, dlogp, (size_t)a->N * sizeof(float)));
    MBPO__OP(m->ops->zero(m->be, a->dxf, (size_t)(a->T * H) * m->ops->x_size));
    MBPO__OP(m->ops->head_backward(m->be, a->dxf, MBPO__G(m->g.lm_head), a->dlogp, a->tgt_lse, a->xf, mbpo__w(m, m->w.lm_head),
                                   MBPO__DEV(a, a->tgt_row), MBPO__DEV32(a, a->tgt_label), a->N, H, c->vocab_size,
                                   MBPO__HEAD_CHUNK, a->chunk_x, a->chunk_logits, a->chunk_dx));
    MBPO__OP(mbpo__lm_backward(m));
    if (a->P && (m->grads || want_dpix)) MBPO__OP(mbpo__vision_backward(m, want_dpix));
    if (a->P && dpixel_values) MBPO__OP(m->ops->x_download(m->be, dpixel_values, a->dpix, a->P * mbpo_config_pix(c)));
    if (m->grads && m->xgrads != m->grads) m->grads_stale = 1;
    return 1;
}
MBPODEF int mbpo_model_backward(mbpo_model *m, const mbpo_batch *b, const float *dlogp, float *dpixel_values) {
    return mbpo__model_backward(m, b, dlogp, dpixel_values != NULL, dpixel_values);
}
#undef MBPO__G

MBPODEF void mbpo_model_trace(const mbpo_model *m, mbpo_trace *t) {
    const mbpo_acts *a = m->acts;
    const mbpo_ops *ops = m->ops;
    memset(t, 0, sizeof *t);
    if (!a || a->forward_by != m || ops != &mbpo__cpu_ops) return;   /* host pointers: the CPU only */
    if (a->P) {
        t->patch_embed = (const float *)(const void *)a->vx;
        t->vision_block_out = (const float *)(const void *)mbpo__xat(ops, a->vx, a->P * m->cfg.v_embed_dim);
        t->image_features = (const float *)(const void *)a->feat;
    }
    t->inputs_embeds = (const float *)(const void *)a->h;
    t->layer_out = (const float *)(const void *)mbpo__xat(ops, a->h, a->T * m->cfg.hidden_size);
    t->final_norm = (const float *)(const void *)a->xf;
    t->position_ids = a->pos;
    t->dinputs_embeds = (const float *)(const void *)a->dh;
}
MBPODEF int mbpo_model_logits(const mbpo_model *m, int64_t t, float *row) {
    const mbpo_acts *a = m->acts;
    int64_t H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (!a || a->forward_by != m || t < 0 || t >= a->T) return mbpo__fail("mbpo_model_logits: no such token");
    return m->ops->logits(m->be, a->row_logits, mbpo__xat(m->ops, a->xf, t * H), mbpo__w(m, m->w.lm_head), 1, H, V) &&
           m->ops->download(m->be, row, a->row_logits, (size_t)V * sizeof(float));
}

/* ------------------------------------------------------------------ 3. model: generation */

/* The buffers of one decoding step and the cache, inside kv->mem (backend) and
   kv->host_mem. */
typedef struct {
    mbpo_x *k, *v;                    /* (L, G, max_len, KD) */
    mbpo_x *x, *x1, *q, *kn, *vn, *att, *mid, *x2, *gate, *up, *act;
    float *rstd, *cos, *sin, *logits;
    int64_t *pos, *hpos;              /* (3, G) the step's M-RoPE positions: backend, host */
    int32_t *ids;                     /* (G) the step's tokens (mbpo_generate: the sampled ones) */
    /* mbpo_generate's state on the backend (the ops sample and gen_step) */
    int64_t *st;                      /* (MBPO__GS_N) */
    int32_t *out, *len;               /* (G, max_len) tokens emitted, (G) how many */
    float *logp, *out_logp;           /* (G) this step's, (G, max_len) every emitted token's */
    double *u;                        /* (G, max_len) the pool of draws */
    unsigned char *done;              /* (G) */
} mbpo__kv_bufs;
static size_t mbpo__kv_layout(const mbpo_config *c, size_t xs, int G, int64_t max_len, char *base, int64_t *hbase,
                              mbpo__kv_bufs *k, size_t *host_bytes) {
    int64_t H = c->hidden_size, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int64_t I = c->intermediate_size, half = c->head_dim / 2, V = c->vocab_size;
    size_t used = 0;
#define MBPO__TAKE(ptr, count, type, size) do { k->ptr = base ? (type *)(void *)(base + used) : NULL; \
        used += ((size_t)(count) * (size) + 255) & ~(size_t)255; } while (0)
    MBPO__TAKE(k, c->n_layers * (int64_t)G * max_len * KD, mbpo_x, xs);
    MBPO__TAKE(v, c->n_layers * (int64_t)G * max_len * KD, mbpo_x, xs);
    MBPO__TAKE(x, G * H, mbpo_x, xs); MBPO__TAKE(x1, G * H, mbpo_x, xs); MBPO__TAKE(mid, G * H, mbpo_x, xs);
    MBPO__TAKE(x2, G * H, mbpo_x, xs); MBPO__TAKE(q, G * QD, mbpo_x, xs); MBPO__TAKE(att, G * QD, mbpo_x, xs);
    MBPO__TAKE(kn, G * KD, mbpo_x, xs); MBPO__TAKE(vn, G * KD, mbpo_x, xs);
    MBPO__TAKE(gate, G * I, mbpo_x, xs); MBPO__TAKE(up, G * I, mbpo_x, xs); MBPO__TAKE(act, G * I, mbpo_x, xs);
    MBPO__TAKE(rstd, G, float, sizeof(float)); MBPO__TAKE(cos, G * half, float, sizeof(float));
    MBPO__TAKE(sin, G * half, float, sizeof(float)); MBPO__TAKE(logits, G * V, float, sizeof(float));
    MBPO__TAKE(pos, 3 * G, int64_t, sizeof(int64_t)); MBPO__TAKE(ids, G, int32_t, sizeof(int32_t));
    MBPO__TAKE(st, MBPO__GS_N, int64_t, sizeof(int64_t)); MBPO__TAKE(out, G * max_len, int32_t, sizeof(int32_t));
    MBPO__TAKE(len, G, int32_t, sizeof(int32_t)); MBPO__TAKE(logp, G, float, sizeof(float));
    MBPO__TAKE(out_logp, G * max_len, float, sizeof(float)); MBPO__TAKE(u, G * max_len, double, sizeof(double));
    MBPO__TAKE(done, G, unsigned char, 1);
#undef MBPO__TAKE
    k->hpos = hbase;
    *host_bytes = (size_t)(3 * G) * sizeof(int64_t) + (size_t)(G * V) * sizeof(float);
    return used;
}
static void mbpo__kv_get(const mbpo_kv *kv, const mbpo_config *c, mbpo__kv_bufs *k) {
    size_t hb;
    mbpo__kv_layout(c, kv->ops->x_size, kv->G, kv->max_len, (char *)kv->mem, (int64_t *)kv->host_mem, k, &hb);
}
/* ---- the memory plan */

/* What the device has: the CPU's physical memory, or the GPU's (the CUDA unit asks the
   driver); 0 when it cannot be told. */
static double mbpo__device_bytes(mbpo_device d) {
#ifdef MBPO_CUDA
    if (d == MBPO_DEVICE_CUDA) return mbpo__cuda_total_bytes();
#endif
    if (d != MBPO_DEVICE_CPU) return 0;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    {
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        return pages > 0 && size > 0 ? (double)pages * (double)size : 0;
    }
#else
    return 0;
#endif
}
/* The runs grow a plan with room to spare (mbpo__ensure_plan): half again, so that slightly
   longer batches do not re-plan every time. The memory plan counts what they allocate. */
static void mbpo__plan_headroom(int64_t *T, int64_t *P, int64_t *N) {
    *T += *T / 2 + 16; *P += (*P / 2 + 4) / 4 * 4; *N = *N + *N / 2 + 16;
    if (*N > *T) *N = *T;
}
static int64_t mbpo__dp_block(int64_t n);
MBPODEF int mbpo_mem_plan_make(const mbpo_config *cfg, const mbpo_mem_shape *s, mbpo_mem_plan *p) {
    mbpo_param_table t;
    mbpo_acts a;
    mbpo__kv_bufs kb;
    size_t n_ints = 0, kv_host = 0;
    int cpu = s->device == MBPO_DEVICE_CPU;
#ifdef MBPO_CUDA_FP32
    size_t xs = 4;
#else
    size_t xs = cpu ? 4 : 2;         /* bf16 on a GPU */
#endif
    double n, acts, chunk;
    int64_t T = s->tokens, P = s->patches, N = s->targets;
    memset(p, 0, sizeof *p);
    memset(&a, 0, sizeof a);
    memset(&kb, 0, sizeof kb);
    if (!mbpo_param_table_build(&t, cfg)) return 0;
    n = p->n_params = (double)t.total_floats;
    chunk = n < (double)((int64_t)1 << 26) ? n : (double)((int64_t)1 << 26);
    if (T > 0) mbpo__plan_headroom(&T, &P, &N);
    a.recompute = s->recompute != 0;
    acts = (double)mbpo__acts_layout(&a, cfg, xs, T, P, N, P / (cfg->v_merge * cfg->v_merge), T, NULL, NULL, &n_ints) +
           (double)n_ints * sizeof(int64_t);
    p->weights = n * (double)xs;
    p->master = s->train && !cpu ? 4 * n : 0;           /* the CPU trains params itself */
    p->moments = !s->train ? 0 : s->stream_moments && !cpu ? 8 * chunk : 8 * n;
    p->grads = s->train ? 4 * n : 0;
    if (s->train && s->dp_world > 0) {   /* this rank's share: the largest shard (mbpo__dp_setup) */
        int64_t bs = mbpo__dp_block((int64_t)n), nb = ((int64_t)n + bs - 1) / bs;
        double shard = (double)((nb + s->dp_world - 1) / s->dp_world * bs);
        if (shard > n) shard = n;
        if (cpu) p->grads += 4.0 * shard;   /* the batch's gradient, summed in one order (MPI) */
        else {                              /* NCCL: the shards of master and moments on the GPU */
            p->master = 4 * shard;
            p->moments = s->stream_moments ? 8 * (chunk < shard ? chunk : shard) : 8 * shard;
        }
    }
    p->reference = s->reference ? n * (double)xs : 0;
    p->activations = acts;
    p->kv_cache = s->G > 0 ? (double)mbpo__kv_layout(cfg, xs, s->G, s->kv_len, NULL, NULL, &kb, &kv_host) : 0;
    p->workspace = cpu ? 0 : (double)((size_t)32 << 20);   /* cuBLASLt's (the reference shares the backend) */
    /* PGD on the backend: the image, the clean image and the gradient (fp32), and the two
       int64 maps between the image and its rows (T frames of each value) */
    if (s->pgd_values > 0) p->workspace += (double)s->pgd_values * (12.0 + 16.0 * 2);
    p->total = p->weights + p->master + p->moments + p->grads + p->reference + p->activations + p->kv_cache + p->workspace;
    /* a device run keeps fp32 host copies of the parameters, the moments (the checkpoint's;
       the store when streamed) and the reference's parameters (the host gradients are
       allocated but never touched: no memory behind them) */
    p->host = cpu ? 0 : 4 * n + (s->train ? 8 * n : 0) + (s->reference ? 4 * n : 0);
    p->available = mbpo__device_bytes(s->device);
    mbpo_param_table_free(&t);
    return 1;
}
MBPODEF void mbpo_mem_plan_print(FILE *f, const char *prefix, const mbpo_mem_plan *p) {
    const double G = 1e9;
    fprintf(f, "%smemory plan (GB): weights %.2f, master %.2f, moments %.2f, gradients %.2f, reference %.2f, activations %.2f, "
            "KV cache %.2f, workspace %.2f = %.2f", prefix, p->weights / G, p->master / G, p->moments / G, p->grads / G,
            p->reference / G, p->activations / G, p->kv_cache / G, p->workspace / G, p->total / G);
    if (p->available > 0) fprintf(f, " of %.2f", p->available / G);
    if (p->host > 0) fprintf(f, "; host copies %.2f", p->host / G);
    fprintf(f, "\n");
}
MBPODEF int mbpo_mem_plan_check(const mbpo_mem_plan *p, const char *who) {
    if (p->available <= 0 || p->total <= p->available) return 1;
    return mbpo__fail("%s: the memory plan needs %.2f GB but the device has %.2f GB (weights %.2f, master %.2f, moments %.2f, "
                      "gradients %.2f, reference %.2f, activations %.2f, KV cache %.2f); %s", who, p->total / 1e9,
                      p->available / 1e9, p->weights / 1e9, p->master / 1e9, p->moments / 1e9, p->grads / 1e9, p->reference / 1e9,
                      p->activations / 1e9, p->kv_cache / 1e9,
                      p->moments > 0 && p->moments >= 8 * p->n_params ? "--moments host keeps the moments in host memory, or lower --batch, --G or --max-new-tokens"
                                                                     : "lower --batch, --G or --max-new-tokens");
}

MBPODEF void mbpo_kv_free(mbpo_kv *kv) {
    if (!kv) return;
    if (kv->graph && kv->ops->graph_free) kv->ops->graph_free(kv->graph);
    if (kv->ops && kv->mem) kv->ops->release(kv->be, kv->mem);
    mbpo_free(kv->host_mem);
    memset(kv, 0, sizeof *kv);
}
MBPODEF int mbpo_kv_init(mbpo_kv *kv, const mbpo_model *m, int G, int64_t max_len) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops ? m->ops : &mbpo__cpu_ops;   /* an unplanned model is on the CPU */
    mbpo__kv_bufs k;
    double need;
    size_t bytes, host_bytes;
    memset(kv, 0, sizeof *kv);
    if (G < 1 || max_len < 1) return mbpo__fail("mbpo_kv_init: G %d and max_len %lld must be positive", G, (long long)max_len);
    if (max_len > MBPO_MAX_SEQ_LEN)
        return mbpo__fail("generation needs room for %lld tokens (the prompt + max_new_tokens), more than MBPO_MAX_SEQ_LEN "
                          "(%d); lower --max-new-tokens or raise the limit with -DMBPO_MAX_SEQ_LEN=N", (long long)max_len,
                          MBPO_MAX_SEQ_LEN);
    need = 2.0 * (double)c->n_layers * G * (double)max_len * (double)(c->n_kv_heads * c->head_dim) * (double)ops->x_size;
    if (need > 1e15) return mbpo__fail("mbpo_kv_init: a KV cache of %d x %lld tokens is too large", G, (long long)max_len);
    bytes = mbpo__kv_layout(c, ops->x_size, G, max_len, NULL, NULL, &k, &host_bytes);
    kv->ops = ops; kv->be = m->be; kv->be_gen = m->be_gen; kv->G = G; kv->max_len = max_len;
    if (!ops->alloc(kv->be, &kv->mem, bytes, "the KV cache") || !(kv->host_mem = mbpo__calloc(host_bytes, 1))) {
        char why[1024];
        snprintf(why, sizeof why, "%s", mbpo_failure_reason());
        mbpo_kv_free(kv);
        return mbpo__fail("mbpo_kv_init: cannot allocate %.1f MB for a KV cache of %d x %lld tokens (%s)", (double)bytes / 1e6,
                          G, (long long)max_len, why);
    }
    mbpo__kv_get(kv, c, &k);
    /* the logits the sampler reads: on the CPU the backend's own, elsewhere a host copy */
    kv->logits = ops == &mbpo__cpu_ops ? k.logits : (float *)(void *)(k.hpos + 3 * G);
    return 1;
}

MBPODEF int mbpo_kv_prefill(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt) {
    const mbpo_config *c = &m->cfg;
    int64_t S, l, g, KD = c->n_kv_heads * c->head_dim, V = c->vocab_size, H = c->hidden_size, *pos = NULL;
    mbpo__kv_bufs k;
    float dummy;
    int ok;
    if (prompt->n_seqs != 1) return mbpo__fail("mbpo_kv_prefill: the prompt must be one sequence");
    if (kv->ops != m->ops || kv->be != m->be || kv->be_gen != m->be_gen)
        return mbpo__fail("mbpo_kv_prefill: the cache is not on the model's backend (planned again since mbpo_kv_init?)");
    S = prompt->seq_offsets[1];
    if (S >= kv->max_len) return mbpo__fail("mbpo_kv_prefill: a prompt of %lld tokens leaves no room in a cache of %lld",
                                            (long long)S, (long long)kv->max_len);
    {   /* the forward needs a target array; the prompt's own targets do not matter here */
        uint8_t *none = (uint8_t *)mbpo__calloc((size_t)S, 1);
        mbpo_batch b = *prompt;
        if (!none) return 0;
        b.target = none;
        ok = mbpo_model_forward(m, &b, &dummy) >= 0;
        mbpo_free(none);
        if (!ok) return 0;
    }
    /* the M-RoPE offset of the tokens that follow (docs/QWEN2VL.md 3.4) */
    if (!(pos = (int64_t *)mbpo__alloc((size_t)(3 * S) * sizeof(int64_t)))) return 0;
    ok = mbpo_rope_index(c, prompt->ids, S, prompt->grid_thw, prompt->n_images, pos, &kv->rope_delta);
    mbpo_free(pos);
    if (!ok) return 0;
    mbpo__kv_get(kv, c, &k);
    /* the prompt's keys and values (layer l of the forward) into every continuation's cache;
       with recomputation the arena holds the last layer's only, so each layer runs again from
       its input (h[l]: the same bits) just before its copy */
    for (l = 0; l < c->n_layers; l++) {
        mbpo__layer_io io;
        mbpo__layer_io_of(m, l, &io);
        if (m->acts->recompute) {
            mbpo__attn_over over;
            memset(&over, 0, sizeof over);
            over.cu = MBPO__DEV(m->acts, m->acts->lseg); over.cu_host = m->acts->lseg; over.n_seg = m->acts->n_seqs;
            MBPO__OP(mbpo__decoder_layer(m, &m->w.layers[l], S, &io, &over));
        }
        for (g = 0; g < kv->G; g++) {
            int64_t at = (l * kv->G + g) * kv->max_len * KD;
            MBPO__OP(m->ops->copy(m->be, mbpo__xat(m->ops, k.k, at), io.k, (size_t)(S * KD) * m->ops->x_size));
            MBPO__OP(m->ops->copy(m->be, mbpo__xat(m->ops, k.v, at), io.v, (size_t)(S * KD) * m->ops->x_size));
        }
    }
    kv->len = S;
    MBPO__OP(m->ops->logits(m->be, k.logits, mbpo__xat(m->ops, m->acts->xf, (S - 1) * H), mbpo__w(m, m->w.lm_head), 1, H, V));
    for (g = 1; g < kv->G; g++) MBPO__OP(m->ops->copy(m->be, k.logits + g * V, k.logits, (size_t)V * sizeof(float)));
    return kv->device_logits || m->ops->download(m->be, kv->logits, k.logits, (size_t)(kv->G * V) * sizeof(float));
}

/* One decoding step of G tokens, on the backend alone: the tokens k->ids at the cache row
   st[T], their M-RoPE positions k->pos; each layer is mbpo__decoder_layer on one new row per
   continuation, attending to the cached keys and values; the logits (G, V) into k->logits.
   Nothing crosses to the host, so mbpo_generate can capture the step as a graph. */
static int mbpo__kv_step(mbpo_model *m, mbpo_kv *kv, const mbpo__kv_bufs *k) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops;
    int64_t G = kv->G, H = c->hidden_size, KD = c->n_kv_heads * c->head_dim, l;
    mbpo__layer_io io;
    mbpo__attn_over over;
    MBPO__OP(ops->mrope_tables(m->be, k->cos, k->sin, k->pos, G, c->head_dim, c->rope_theta, c->mrope_section[0],
                               c->mrope_section[1]));
    MBPO__OP(ops->embed_forward(m->be, k->x, mbpo__w(m, m->w.embed), NULL, k->ids, NULL, G, H));
    io.x = io.out = k->x; io.x1 = k->x1; io.q = k->q; io.k = k->kn; io.v = k->vn; io.att = k->att; io.mid = k->mid;
    io.x2 = k->x2; io.gate = k->gate; io.up = k->up; io.act = k->act; io.rstd1 = io.rstd2 = k->rstd; io.lse = NULL;
    io.cos = k->cos; io.sin = k->sin;
    memset(&over, 0, sizeof over);
    over.tp = k->st + MBPO__GS_T; over.max_len = kv->max_len;
    for (l = 0; l < c->n_layers; l++) {
        over.kc = mbpo__xat(ops, k->k, l * G * kv->max_len * KD);
        over.vc = mbpo__xat(ops, k->v, l * G * kv->max_len * KD);
        MBPO__OP(mbpo__decoder_layer(m, &m->w.layers[l], G, &io, &over));
    }
    MBPO__OP(ops->rmsnorm_forward(m->be, k->x1, k->rstd, k->x, mbpo__w(m, m->w.norm_w), G, H, (float)c->rms_norm_eps));
    MBPO__OP(ops->logits(m->be, k->logits, k->x1, mbpo__w(m, m->w.lm_head), G, H, c->vocab_size));
    return 1;
}
/* One decoding step at index t = kv->len from host tokens: the tokens, the position and t
   go up, then mbpo__kv_step. */
MBPODEF int mbpo_kv_decode(mbpo_model *m, mbpo_kv *kv, const int32_t *token) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops = m->ops;
    int64_t G = kv->G, t = kv->len, g;
    mbpo__kv_bufs k;
    if (kv->ops != ops || kv->be != m->be || kv->be_gen != m->be_gen)
        return mbpo__fail("mbpo_kv_decode: the cache is not on the model's backend (planned again since mbpo_kv_init?)");
    if (t >= kv->max_len) return mbpo__fail("mbpo_kv_decode: the cache of %lld tokens is full", (long long)kv->max_len);
    for (g = 0; g < G; g++)
        if (token[g] < 0 || token[g] >= c->vocab_size) return mbpo__fail("mbpo_kv_decode: token id %d outside the vocabulary", token[g]);
    mbpo__kv_get(kv, c, &k);
    /* a text token after the prompt: all three M-RoPE components are t + rope_delta */
    for (g = 0; g < 3 * G; g++) k.hpos[g] = t + kv->rope_delta;
    MBPO__OP(ops->upload(m->be, k.pos, k.hpos, (size_t)(3 * G) * sizeof(int64_t)));
    MBPO__OP(ops->upload(m->be, k.ids, token, (size_t)G * sizeof(int32_t)));
    MBPO__OP(ops->upload(m->be, k.st + MBPO__GS_T, &t, sizeof t));
    MBPO__OP(mbpo__kv_step(m, kv, &k));
    if (!kv->device_logits) MBPO__OP(ops->download(m->be, kv->logits, k.logits, (size_t)(G * c->vocab_size) * sizeof(float)));
    kv->len = t + 1;
    return 1;
}
#undef MBPO__OP

/* Sampling: greedy at temperature 0; otherwise softmax(logits / T), cut to the top_k most
   likely and to the smallest set whose mass reaches top_p (the nucleus), renormalised. Only
   tokens with p >= (1 - top_p) / V can belong to the nucleus (the rest together hold less
   than 1 - top_p), so only those are sorted. */
typedef struct { float p; int32_t id; } mbpo__cand;
static int mbpo__cand_desc(const void *a, const void *b) {
    const mbpo__cand *x = (const mbpo__cand *)a, *y = (const mbpo__cand *)b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}
static int64_t mbpo__argmax(const float *z, int64_t V) {   /* the lowest id on ties */
    int64_t i, best = 0;
    for (i = 1; i < V; i++) if (z[i] > z[best]) best = i;
    return best;
}
/* The token drawn by u in [0, 1) at o->temperature > 0. */
static int32_t mbpo__sample_u(const float *logits, int64_t V, const mbpo_gen_opts *o, double u, float *scratch) {
    mbpo__cand *cand = (mbpo__cand *)scratch;   /* 2V floats hold V candidates */
    int64_t i, n = 0, best = mbpo__argmax(logits, V), keep;
    double mx, sum = 0, cut, acc = 0, top_p = o->top_p > 0 && o->top_p < 1 ? o->top_p : 1.0;
    mx = logits[best];
    for (i = 0; i < V; i++) sum += exp((logits[i] - mx) / o->temperature);
    cut = top_p < 1 ? (1 - top_p) / (double)V : 0;
    for (i = 0; i < V; i++) {
        double p = exp((logits[i] - mx) / o->temperature) / sum;
        if (p >= cut && p > 0) { cand[n].p = (float)p; cand[n].id = (int32_t)i; n++; }
    }
    if (n == 0) return (int32_t)best;   /* non-finite logits: nothing to sample from */
    if ((o->top_k > 0 && o->top_k < n) || top_p < 1) qsort(cand, (size_t)n, sizeof *cand, mbpo__cand_desc);
    keep = o->top_k > 0 && o->top_k < n ? o->top_k : n;
    if (top_p < 1) {   /* the nucleus of what top-k kept, renormalised (as HF's warpers compose) */
        double kept = 0, mass = 0;
        if (keep < n) for (i = 0; i < keep; i++) kept += cand[i].p;
        else kept = 1.0;   /* no top-k: the whole distribution (the tail left out holds < 1 - top_p) */
        for (i = 0; i < keep; i++) { mass += cand[i].p; if (mass >= top_p * kept) { keep = i + 1; break; } }
    }
    for (i = 0, sum = 0; i < keep; i++) sum += cand[i].p;
    u *= sum;
    for (i = 0; i < keep; i++) { acc += cand[i].p; if (u < acc) return cand[i].id; }
    return cand[keep - 1].id;
}
MBPODEF int32_t mbpo_sample_token(const float *logits, int64_t V, const mbpo_gen_opts *o, mbpo_rng *rng, float *scratch) {
    if (o->temperature <= 0) return (int32_t)mbpo__argmax(logits, V);
    return mbpo__sample_u(logits, V, o, mbpo_rng_uniform(rng), scratch);
}

/* What a captured decode step depends on besides backend memory: if any of it changes, the
   graph is captured again. */
typedef struct {
    const mbpo_backend *be; uint64_t be_gen; const void *embed, *lm_head; int64_t G, max_len;
    mbpo__sample_k sk; mbpo__step_k tk;
} mbpo__graph_key;
typedef char mbpo__graph_key_fits[sizeof(mbpo__graph_key) <= sizeof(((mbpo_kv *)0)->graph_key) ? 1 : -1];

/* One generation step on the backend: the decode step (unless first: the prefill made the
   logits), the sample op, the bookkeeping. */
static int mbpo__gen_body(mbpo_model *m, mbpo_kv *kv, const mbpo__kv_bufs *k, const mbpo__sample_k *sk,
                          const mbpo__step_k *tk, int first) {
    const mbpo_ops *ops = m->ops;
    return (first || mbpo__kv_step(m, kv, k)) &&
           ops->sample(m->be, k->ids, k->logp, k->logits, k->u, k->st, k->done, kv->G, m->cfg.vocab_size, sk) &&
           ops->gen_step(m->be, k->out, k->out_logp, k->len, k->done, k->st, k->pos, k->ids, k->logp, kv->G,
                         kv->max_len, tk);
}
/* The graph of a step for this key: the one kept in kv, or a new capture. NULL (and no error)
   when the backend has no graphs, they are off, or the capture fails: then the steps run op by
   op, the same ops, so the tokens are the same either way. */
static void *mbpo__gen_graph(mbpo_model *m, mbpo_kv *kv, const mbpo__kv_bufs *k, const mbpo__sample_k *sk,
                             const mbpo__step_k *tk) {
    const mbpo_ops *ops = m->ops;
    mbpo__graph_key key;
    void *g = NULL;
    int captured;
    if (kv->no_graphs || !ops->graph_begin) return NULL;
    memset(&key, 0, sizeof key);   /* (padding too: the key is compared as bytes) */
    key.be = m->be; key.be_gen = m->be_gen; key.embed = mbpo__w(m, m->w.embed); key.lm_head = mbpo__w(m, m->w.lm_head);
    key.G = kv->G; key.max_len = kv->max_len; key.sk = *sk; key.tk = *tk;
    if (kv->graph && !memcmp(kv->graph_key, &key, sizeof key)) return kv->graph;
    if (kv->graph) { ops->graph_free(kv->graph); kv->graph = NULL; }
    if (!ops->graph_begin(m->be)) return NULL;
    captured = mbpo__gen_body(m, kv, k, sk, tk, 0);
    if (!ops->graph_end(m->be, &g)) return NULL;   /* (nothing ran: the steps go op by op) */
    if (!captured) { ops->graph_free(g); return NULL; }
    kv->graph = g;
    memset(kv->graph_key, 0, sizeof kv->graph_key);
    memcpy(kv->graph_key, &key, sizeof key);
    return g;
}
/* Every how many steps the host reads the live count: each step on the CPU (free); on a GPU
   every few, so that the queue never drains; a step after every continuation stopped changes
   nothing (no draws, no tokens, the cache row past the end rewritten) */
#define MBPO__GEN_CHECK 8

MBPODEF int mbpo_generate(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt, const mbpo_gen_opts *o,
                          mbpo_rng *rng, int32_t *out_ids, int *out_len) {
    return mbpo_generate_logp(m, kv, prompt, o, rng, out_ids, out_len, NULL);
}
MBPODEF int mbpo_generate_logp(mbpo_model *m, mbpo_kv *kv, const mbpo_batch *prompt, const mbpo_gen_opts *o,
                               mbpo_rng *rng, int32_t *out_ids, int *out_len, float *out_logp) {
    const mbpo_config *c = &m->cfg;
    const mbpo_ops *ops;
    int64_t G = kv->G, n_u = 0, step, i, check, st[MBPO__GS_N];
    mbpo__sample_k sk;
    mbpo__step_k tk;
    mbpo__kv_bufs k;
    mbpo_rng rng0 = *rng;
    double *u = NULL;
    int32_t *outb = NULL, *lens = NULL;
    float *logpb = NULL;
    void *graph;
    int g, ok = 0;
    kv->graph_steps = 0;
    for (g = 0; g < G; g++) out_len[g] = 0;
    if (o->max_new_tokens < 1) return mbpo__fail("mbpo_generate: max_new_tokens must be positive");
    if (o->n_stop < 0 || o->n_stop > MBPO__MAX_STOP)
        return mbpo__fail("mbpo_generate: %d stop ids (at most %d)", o->n_stop, MBPO__MAX_STOP);
    kv->device_logits = 1;   /* the logits stay where the sample op reads them */
    if (!mbpo_kv_prefill(m, kv, prompt)) goto end;
    ops = m->ops;
    if (kv->len + o->max_new_tokens > kv->max_len) {
        mbpo__fail("mbpo_generate: %lld prompt + %d new tokens exceed the cache's %lld", (long long)kv->len, o->max_new_tokens,
                   (long long)kv->max_len);
        goto end;
    }
    memset(&sk, 0, sizeof sk);
    sk.temperature = o->temperature > 0 ? o->temperature : 0;
    sk.top_k = sk.temperature > 0 && o->top_k > 0 ? o->top_k : 0;
    sk.top_p = sk.temperature > 0 && o->top_p > 0 && o->top_p < 1 ? o->top_p : 1;
    sk.ban[0] = c->image_token_id; sk.ban[1] = c->video_token_id; sk.ban[2] = c->vision_start_token_id;
    sk.ban[3] = c->vision_end_token_id; sk.n_ban = 4;   /* text never holds the vision tokens */
    memset(&tk, 0, sizeof tk);
    tk.n_stop = o->n_stop; tk.draws = sk.temperature > 0;
    for (g = 0; g < o->n_stop; g++) tk.stop[g] = o->stop_ids[g];
    mbpo__kv_get(kv, c, &k);
    /* the draws, taken from rng up front: the most a generation can use (one per continuation
       and step); sample takes them in the CPU's order, and rng is wound on by those used */
    if (sk.temperature > 0) {
        n_u = G * o->max_new_tokens;
        if (!(u = (double *)mbpo__alloc((size_t)n_u * sizeof(double)))) goto end;
        for (i = 0; i < n_u; i++) u[i] = mbpo_rng_uniform(rng);
        if (!ops->upload(m->be, k.u, u, (size_t)n_u * sizeof(double))) goto end;
    }
    st[MBPO__GS_T] = kv->len; st[MBPO__GS_NU] = 0; st[MBPO__GS_LIVE] = G; st[MBPO__GS_GO] = 0;
    st[MBPO__GS_DELTA] = kv->rope_delta;
    if (!ops->upload(m->be, k.st, st, sizeof st) || !ops->zero(m->be, k.done, (size_t)G) ||
        !ops->zero(m->be, k.len, (size_t)G * sizeof(int32_t)) || !mbpo__gen_body(m, kv, &k, &sk, &tk, 1))
        goto end;
    graph = o->max_new_tokens > 2 ? mbpo__gen_graph(m, kv, &k, &sk, &tk) : NULL;
    check = kv->check_every > 0 ? kv->check_every : ops == &mbpo__cpu_ops ? 1 : MBPO__GEN_CHECK;
    for (step = 1; step < o->max_new_tokens; step++) {
        if ((step - 1) % check == 0) {
            if (!ops->download(m->be, st, k.st, sizeof st)) goto end;
            if (st[MBPO__GS_LIVE] == 0) break;
        }
        if (graph) {
            if (!ops->graph_launch(m->be, graph)) goto end;
            kv->graph_steps++;
        } else if (!mbpo__gen_body(m, kv, &k, &sk, &tk, 0)) goto end;
    }
    /* the outcome: tokens (rows of max_len on the backend), their log-probs, the state */
    outb = (int32_t *)mbpo__alloc((size_t)(G * kv->max_len) * sizeof(int32_t));
    lens = (int32_t *)mbpo__alloc((size_t)G * sizeof(int32_t));
    logpb = out_logp ? (float *)mbpo__alloc((size_t)(G * kv->max_len) * sizeof(float)) : NULL;
    if (!outb || !lens || (out_logp && !logpb) || !ops->download(m->be, st, k.st, sizeof st) ||
        !ops->download(m->be, lens, k.len, (size_t)G * sizeof(int32_t)) ||
        !ops->download(m->be, outb, k.out, (size_t)(G * kv->max_len) * sizeof(int32_t)) ||
        (logpb && !ops->download(m->be, logpb, k.out_logp, (size_t)(G * kv->max_len) * sizeof(float))))
        goto end;
    for (g = 0; g < G; g++) {
        out_len[g] = lens[g];
        memcpy(out_ids + (int64_t)g * o->max_new_tokens, outb + g * kv->max_len, (size_t)lens[g] * sizeof(int32_t));
        if (logpb) memcpy(out_logp + (int64_t)g * o->max_new_tokens, logpb + g * kv->max_len, (size_t)lens[g] * sizeof(float));
    }
    kv->len = st[MBPO__GS_T];
    *rng = rng0;   /* wound on by the draws used, as if taken one by one */
    for (i = 0; i < st[MBPO__GS_NU]; i++) (void)mbpo_rng_uniform(rng);
    ok = 1;
end:
    kv->device_logits = 0;   /* the caller's own decode steps bring their logits to the host */
    if (!ok) *rng = rng0;    /* a failed call draws nothing */
    mbpo_free(u); mbpo_free(outb); mbpo_free(lens); mbpo_free(logpb);
    return ok;
}

/* ==========================================================================================
   4. objectives
   ========================================================================================== */

/* ------------------------------------------------------------------ 4. objectives: verifiers */

MBPODEF int mbpo_verify_yesno(const char *response, char label) {
    const char *p;
    int yes = 0, no = 0;
    for (p = response; *p; p++) {
        if (p != response && mbpo__is_word_char((unsigned char)p[-1])) continue;   /* word starts only */
        if (mbpo__starts_word(p, "yes")) yes = 1;
        else if (mbpo__starts_word(p, "no")) no = 1;
    }
    if (yes == no) return 0;                 /* neither, or both */
    return (yes ? 'Y' : 'N') == label;
}
MBPODEF int mbpo_verify_mc(const char *question, const char *response, char label) {
    const char *opt_text[26];
    size_t opt_len[26];
    int n = mbpo__parse_options(question, opt_text, opt_len);
    return n >= 2 && label && mbpo__answer_letter(response, n, opt_text, opt_len) == label;
}
MBPODEF int mbpo_verify(const mbpo_sample *s, const char *response) {
    if (s->kind == MBPO_Q_YESNO) return mbpo_verify_yesno(response, s->label);
    if (s->kind == MBPO_Q_MC) return mbpo_verify_mc(s->question, response, s->label);
    return 0;
}

/* ------------------------------------------------------------------ 4. objectives: IIG */

/* The batch twice in one: b's sequences, then the same ones on the black images (their
   image refs shifted past b's images). Packed sequences are independent, so each half's
   log-probs are the bits of its own forward. 0 when the plan cannot hold it. */
static int mbpo__iig_pair(const mbpo_model *m, const mbpo_batch *b, const float *pv_black, mbpo_batch *d, int32_t **ids,
                          int64_t **offs, uint8_t **tgt, int32_t **grid, float **pv, int32_t **refs, int64_t **roffs) {
    const mbpo_acts *a = m->acts;
    int64_t T = b->seq_offsets[b->n_seqs], P = 0, R = b->image_ref_offsets ? b->image_ref_offsets[b->n_seqs] : 0, s, i;
    int64_t pix = mbpo_config_pix(&m->cfg), B = b->n_seqs;
    for (i = 0; i < b->n_images; i++) P += (int64_t)b->grid_thw[3 * i] * b->grid_thw[3 * i + 1] * b->grid_thw[3 * i + 2];
    if (!a || 2 * T > a->max_T || 2 * P > a->max_P || 2 * mbpo__batch_targets(b) > a->max_N || 2 * b->n_images > a->max_images)
        return 0;
    *ids = (int32_t *)mbpo__alloc((size_t)(2 * T) * sizeof(int32_t));
    *offs = (int64_t *)mbpo__alloc((size_t)(2 * B + 1) * sizeof(int64_t));
    *tgt = (uint8_t *)mbpo__alloc((size_t)(2 * T));
    *grid = (int32_t *)mbpo__alloc((size_t)(6 * b->n_images + 1) * sizeof(int32_t));
    *pv = (float *)mbpo__alloc((size_t)(2 * P * pix + 1) * sizeof(float));
    *refs = (int32_t *)mbpo__alloc((size_t)(2 * R + 1) * sizeof(int32_t));
    *roffs = (int64_t *)mbpo__alloc((size_t)(2 * B + 1) * sizeof(int64_t));
    if (!*ids || !*offs || !*tgt || !*grid || !*pv || !*refs || !*roffs) return 0;
    memcpy(*ids, b->ids, (size_t)T * sizeof(int32_t)); memcpy(*ids + T, b->ids, (size_t)T * sizeof(int32_t));
    memcpy(*tgt, b->target, (size_t)T); memcpy(*tgt + T, b->target, (size_t)T);
    for (s = 0; s <= B; s++) { (*offs)[s] = b->seq_offsets[s]; (*offs)[B + s] = T + b->seq_offsets[s]; }
    if (b->n_images) {
        memcpy(*grid, b->grid_thw, (size_t)(3 * b->n_images) * sizeof(int32_t));
        memcpy(*grid + 3 * b->n_images, b->grid_thw, (size_t)(3 * b->n_images) * sizeof(int32_t));
        memcpy(*pv, b->pixel_values, (size_t)(P * pix) * sizeof(float));
        memcpy(*pv + P * pix, pv_black, (size_t)(P * pix) * sizeof(float));
    }
    for (s = 0; s <= B; s++) {
        (*roffs)[s] = b->image_ref_offsets ? b->image_ref_offsets[s] : 0;
        (*roffs)[B + s] = R + (*roffs)[s];
    }
    for (i = 0; i < R; i++) { (*refs)[i] = b->image_refs[i]; (*refs)[R + i] = b->image_refs[i] + b->n_images; }
    memset(d, 0, sizeof *d);
    d->n_seqs = (int)(2 * B); d->ids = *ids; d->seq_offsets = *offs; d->target = *tgt;
    d->n_images = 2 * b->n_images; d->grid_thw = *grid; d->pixel_values = *pv; d->image_refs = *refs; d->image_ref_offsets = *roffs;
    return 1;
}
MBPODEF int mbpo_iig(mbpo_model *m, const mbpo_batch *b, const float *pixel_values_black, double *iig_sum,
                     double *iig_mean, float *logp, float *logp_black) {
    mbpo_batch black = *b, both;
    int64_t N, s, t, n = 0;
    float *lp = NULL, *lb = NULL, *l2 = NULL, *pv = NULL;
    int32_t *ids = NULL, *grid = NULL, *refs = NULL;
    int64_t *offs = NULL, *roffs = NULL;
    uint8_t *tgt = NULL;
    int ok = 0;
    N = mbpo__batch_targets(b);
    lp = logp ? logp : (float *)mbpo__alloc((size_t)(N + 1) * sizeof(float));
    lb = logp_black ? logp_black : (float *)mbpo__alloc((size_t)(N + 1) * sizeof(float));
    if (!lp || !lb) goto end;
    black.pixel_values = pixel_values_black;
    if (mbpo__iig_pair(m, b, pixel_values_black, &both, &ids, &offs, &tgt, &grid, &pv, &refs, &roffs)) {   /* one forward */
        if (!(l2 = (float *)mbpo__alloc((size_t)(2 * N + 1) * sizeof(float))) || mbpo_model_forward(m, &both, l2) != 2 * N) goto end;
        memcpy(lp, l2, (size_t)N * sizeof(float)); memcpy(lb, l2 + N, (size_t)N * sizeof(float));
    } else if (mbpo_model_forward(m, b, lp) != N || mbpo_model_forward(m, &black, lb) != N) goto end;   /* a plan for one */
    for (s = 0; s < b->n_seqs; s++) {
        double sum = 0;
        int64_t cnt = 0;
        for (t = b->seq_offsets[s]; t < b->seq_offsets[s + 1]; t++)
            if (b->target[t]) { sum += (double)lp[n] - (double)lb[n]; n++; cnt++; }
        if (iig_sum) iig_sum[s] = sum;
        if (iig_mean) iig_mean[s] = cnt ? sum / (double)cnt : 0.0;
    }
    ok = 1;
end:
    if (!logp) mbpo_free(lp);
    if (!logp_black) mbpo_free(lb);
    mbpo_free(l2); mbpo_free(pv); mbpo_free(ids); mbpo_free(grid); mbpo_free(refs); mbpo_free(offs); mbpo_free(roffs); mbpo_free(tgt);
    return ok;
}

/* ------------------------------------------------------------------ 4. objectives: PGD */

MBPODEF void mbpo_pgd_defaults(mbpo_pgd_opts *o) {
    o->iters = 20; o->step = 4.0 / 255.0; o->eps = 0.0; o->random_start = 0;
}
static float mbpo__clip01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

/* The iterations of mbpo_pgd on the backend: x, x0 and dx live there with the maps of
   pixels / pixels_backward (built here, in mbpo__pixels' order); per iteration only the N
   log-probs come back. x comes back at the end. */
static int mbpo__pgd_backend(mbpo_model *m, const mbpo_preproc *pp, mbpo_batch *b, float *x, float *x0_host, int64_t H, int64_t W,
                             const mbpo_pgd_opts *o, const float *dl, float *logp, int64_t N, double *trace) {
    const mbpo_ops *ops = m->ops;
    int64_t n = H * W * 3, p = pp->patch, T = pp->temporal_patch, PIX = 3 * T * p * p, P = 0, row, it, i;
    int32_t grid[3];
    int64_t *map = NULL, *inv = NULL, *dmap = NULL, *dinv = NULL;
    float kms[7], *xd = NULL, *x0d = NULL, *dxd = NULL;
    int ok = 0, cpu = ops == &mbpo__cpu_ops;
    if (!mbpo_pixels_count(pp, H, W, &P, grid)) return 0;
    if (!m->acts || m->acts->max_P < P) return mbpo__fail("mbpo_pgd: %lld patches exceed the plan (mbpo_model_plan)", (long long)P);
    mbpo__norm_consts(pp, &kms[0], kms + 1, kms + 4);
    map = (int64_t *)mbpo__alloc((size_t)(P * PIX) * sizeof(int64_t));
    inv = (int64_t *)mbpo__alloc((size_t)(n * T) * sizeof(int64_t));
    if (!map || !inv) goto end;
    for (row = 0; row < P; row++) {   /* column (c, tau, y, x) of each patch row, as mbpo__pixels walks it */
        int64_t y0, xo, c, tau, y, xx, j = row * PIX;
        mbpo__patch_origin(pp, grid[2], row, &y0, &xo);
        for (c = 0; c < 3; c++)
            for (tau = 0; tau < T; tau++)
                for (y = 0; y < p; y++)
                    for (xx = 0; xx < p; xx++, j++) {
                        int64_t at = ((y0 + y) * W + xo + xx) * 3 + c;
                        map[j] = at; inv[at * T + tau] = j;
                    }
    }
    if (cpu) { xd = x; x0d = x0_host; dmap = map; dinv = inv; }
    else if (!ops->alloc(m->be, (void **)&xd, (size_t)n * sizeof(float), "the PGD image") ||
             !ops->alloc(m->be, (void **)&x0d, (size_t)n * sizeof(float), "the clean image") ||
             !ops->alloc(m->be, (void **)&dmap, (size_t)(P * PIX) * sizeof(int64_t), "the pixel map") ||
             !ops->alloc(m->be, (void **)&dinv, (size_t)(n * T) * sizeof(int64_t), "the pixel map") ||
             !ops->upload(m->be, xd, x, (size_t)n * sizeof(float)) || !ops->upload(m->be, x0d, x0_host, (size_t)n * sizeof(float)) ||
             !ops->upload(m->be, dmap, map, (size_t)(P * PIX) * sizeof(int64_t)) ||
             !ops->upload(m->be, dinv, inv, (size_t)(n * T) * sizeof(int64_t)))
        goto end;
    if (!ops->alloc(m->be, (void **)&dxd, (size_t)n * sizeof(float), "the image gradient")) goto end;
    for (it = 0; it <= o->iters; it++) {
        double sum = 0;
        int64_t got;
        /* the rows go where the forward would have uploaded them: the batch lays the arena out
           first (the forward does it again, to the same places, and leaves the rows alone) */
        m->pixels_on_backend = 1;
        got = mbpo__batch_prepare(m, b) && ops->pixels(m->be, m->acts->pix, xd, dmap, P * PIX, kms) ? mbpo_model_forward(m, b, logp) : -1;
        m->pixels_on_backend = 0;
        if (got != N) goto end;
        for (i = 0; i < N; i++) sum += logp[i];
        if (trace) trace[it] = sum;
        if (it == o->iters) break;                   /* the last forward only measures */
        if (!mbpo__model_backward(m, b, dl, 1, NULL) || !ops->pixels_backward(m->be, dxd, m->acts->dpix, dinv, n, T, kms) ||
            !ops->pgd_step(m->be, xd, x0d, dxd, n, (float)o->step, o->eps > 0 ? (float)o->eps : -1.0f))
            goto end;
    }
    ok = cpu || ops->download(m->be, x, xd, (size_t)n * sizeof(float));
end:
    if (!cpu) { ops->release(m->be, xd); ops->release(m->be, x0d); ops->release(m->be, dmap); ops->release(m->be, dinv); }
    if (dxd) ops->release(m->be, dxd);
    mbpo_free(map); mbpo_free(inv);
    return ok;
}
MBPODEF int mbpo_pgd(mbpo_model *m, const mbpo_preproc *pp, mbpo_batch *b, float *pv, float *x, int64_t H, int64_t W,
                     const mbpo_pgd_opts *o, mbpo_rng *rng, double *trace) {
    int64_t n = H * W * 3, P = 0, N, i;
    int32_t grid[3] = { 0, 0, 0 };
    float *x0 = NULL, *logp = NULL, *dl = NULL;
    int ok = 0;
    if (b->n_images != 1) return mbpo__fail("mbpo_pgd: the batch must use exactly one image");
    if (!m->ops) return mbpo__fail("mbpo_pgd: call mbpo_model_plan first");
    if (!mbpo_pixels_count(pp, H, W, &P, grid)) return 0;
    if (grid[1] != b->grid_thw[1] || grid[2] != b->grid_thw[2] || b->pixel_values != pv)
        return mbpo__fail("mbpo_pgd: x (%lldx%lld) and pixel_values must be the batch's image", (long long)H, (long long)W);
    N = mbpo__batch_targets(b);
    x0 = (float *)mbpo__alloc((size_t)n * sizeof(float));
    logp = (float *)mbpo__alloc((size_t)(N + 1) * sizeof(float));
    dl = (float *)mbpo__alloc((size_t)(N + 1) * sizeof(float));
    if (!x0 || !logp || !dl) goto end;
    memcpy(x0, x, (size_t)n * sizeof(float));
    if (o->random_start && o->eps > 0)
        for (i = 0; i < n; i++) x[i] = mbpo__clip01(x[i] + (float)(o->eps * (2 * mbpo_rng_uniform(rng) - 1)));
    for (i = 0; i < N; i++) dl[i] = 1.0f;          /* L = sum_t logp_t: its gradient, then descend */
    /* the iterations on the backend, then the final image's rows on the host */
    ok = mbpo__pgd_backend(m, pp, b, x, x0, H, W, o, dl, logp, N, trace) && mbpo_pixels_from_float(pp, x, H, W, pv);
end:
    mbpo_free(x0); mbpo_free(logp); mbpo_free(dl);
    return ok;
}

MBPODEF void mbpo_random_noise(float *x, int64_t n, const mbpo_pgd_opts *o, mbpo_rng *rng) {
    double budget = o->eps > 0 ? o->eps : o->iters * o->step;
    int64_t i;
    for (i = 0; i < n; i++) x[i] = mbpo__clip01(x[i] + (float)(budget * (2 * mbpo_rng_uniform(rng) - 1)));
}

/* ------------------------------------------------------------------ 4. objectives: losses */

MBPODEF void mbpo_group_advantages(const float *r, int n, float *adv) {
    double mean = 0, var = 0, sd;
    int i;
    for (i = 0; i < n; i++) mean += r[i];
    mean /= n > 0 ? n : 1;
    for (i = 0; i < n; i++) var += (r[i] - mean) * (r[i] - mean);
    sd = n > 1 ? sqrt(var / (n - 1)) : 0.0;
    for (i = 0; i < n; i++) adv[i] = n > 1 ? (float)((r[i] - mean) / (sd + 1e-4)) : 0.0f;
}

MBPODEF double mbpo_grpo_loss(const mbpo_grpo_batch *b, const float *logp, const float *logp_old,
                              const float *logp_ref, double beta, double clip_eps, float *dlogp,
                              mbpo_grpo_stats *stats) {
    double loss = 0, kl_sum = 0, ratio_sum = 0;
    int64_t n_tok = 0, n_clipped = 0;
    int g;
    for (g = 0; g < b->n_groups; g++) {
        int i, size = b->group_offsets[g + 1] - b->group_offsets[g];
        for (i = b->group_offsets[g]; i < b->group_offsets[g + 1]; i++) {
            int64_t t, t0 = b->resp_offsets[i], t1 = b->resp_offsets[i + 1];
            double A = b->advantage[i];
            /* eq. 7's weights: the batch mean over groups, the group mean over responses,
               the token mean over a response */
            double w = t1 > t0 ? 1.0 / ((double)b->n_groups * size * (double)(t1 - t0)) : 0.0;
            for (t = t0; t < t1; t++) {
                double lp = logp[t], rho = logp_old ? exp(lp - logp_old[t]) : 1.0;
                double clipped = rho < 1 - clip_eps ? 1 - clip_eps : rho > 1 + clip_eps ? 1 + clip_eps : rho;
                double surr = rho * A, surr_c = clipped * A, d_surr, kl = 0, d_kl = 0;
                /* the min picks the clipped branch when it is smaller; its gradient is zero
                   when rho lies outside the clip range */
                if (surr <= surr_c) d_surr = rho * A;
                else { d_surr = clipped == rho ? rho * A : 0.0; n_clipped++; surr = surr_c; }
                if (logp_ref) {
                    double r = logp_ref[t] - lp;
                    kl = exp(r) - r - 1;
                    d_kl = 1 - exp(r);            /* dKL/dlogp: r falls as logp rises */
                }
                loss += w * -(surr - beta * kl);
                if (dlogp) dlogp[t] = (float)(w * (-d_surr + beta * d_kl));
                kl_sum += kl; ratio_sum += rho; n_tok++;
            }
        }
    }
    if (stats) {
        stats->loss = loss;
        stats->n_tokens = n_tok;
        stats->kl_mean = n_tok ? kl_sum / n_tok : 0;
        stats->ratio_mean = n_tok ? ratio_sum / n_tok : 0;
        stats->clip_fraction = n_tok ? (double)n_clipped / n_tok : 0;
    }
    return loss;
}

MBPODEF double mbpo_sft_loss(const float *logp, int64_t n, float *dlogp) {
    double loss = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        loss -= logp[i];
        if (dlogp) dlogp[i] = (float)(-1.0 / (double)n);
    }
    return n ? loss / (double)n : 0.0;
}

/* ------------------------------------------------------------------ 4. objectives: AdamW */

MBPODEF void mbpo_adamw_defaults(mbpo_adamw_opts *o) {
    memset(o, 0, sizeof *o);
    o->lr = 1e-6; o->beta1 = 0.9; o->beta2 = 0.999; o->eps = 1e-8; o->weight_decay = 0.0;
    o->max_grad_norm = 1.0; o->schedule = MBPO_LR_CONSTANT;
}
MBPODEF int mbpo_adamw_init(mbpo_adamw *opt, size_t n) {
    memset(opt, 0, sizeof *opt);
    opt->m = (float *)mbpo__calloc(n ? n : 1, sizeof(float));
    opt->v = (float *)mbpo__calloc(n ? n : 1, sizeof(float));
    if (!opt->m || !opt->v) { mbpo_adamw_free(opt); return 0; }
    opt->n = n;
    return 1;
}
MBPODEF void mbpo_adamw_free(mbpo_adamw *opt) {
    if (!opt) return;
    mbpo_free(opt->m); mbpo_free(opt->v);
    memset(opt, 0, sizeof *opt);
}
MBPODEF double mbpo_lr_at(const mbpo_adamw_opts *o, int64_t step) {
    const double pi = 3.14159265358979323846;
    if (o->schedule == MBPO_LR_CONSTANT) return o->lr;
    if (step < o->warmup_steps) return o->lr * (double)(step + 1) / (double)o->warmup_steps;
    if (o->schedule == MBPO_LR_WARMUP || o->total_steps <= o->warmup_steps) return o->lr;
    if (step >= o->total_steps) return 0.0;
    return o->lr * 0.5 * (1.0 + cos(pi * (double)(step - o->warmup_steps) / (double)(o->total_steps - o->warmup_steps)));
}
MBPODEF double mbpo_grad_norm(const float *g, size_t n) {
    double sum = 0;
    mbpo__cpu_sumsq(NULL, &sum, g, (int64_t)n);
    return sqrt(sum);
}
MBPODEF double mbpo_adamw_step(mbpo_adamw *opt, const mbpo_adamw_opts *o, float *p, const float *g) {
    double norm = mbpo_grad_norm(g, opt->n);
    mbpo__adamw_k k;
    if (mbpo__adamw_next(opt, o, norm, &k)) mbpo__cpu_adamw(NULL, p, (mbpo_x *)p, opt->m, opt->v, g, (int64_t)opt->n, &k);
    return norm;
}

/* ==========================================================================================
   5. runs
   ========================================================================================== */

/* ------------------------------------------------------------------ 5. runs: shared pieces */

/* A JSON string literal of s (UTF-8 kept, control characters escaped). */
static void mbpo__sb_json(mbpo__sb *b, const char *s) {
    mbpo__sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = { '\\', (char)c }; mbpo__sb_put(b, e, 2); }
        else if (c == '\n') mbpo__sb_put(b, "\\n", 2);
        else if (c == '\r') mbpo__sb_put(b, "\\r", 2);
        else if (c == '\t') mbpo__sb_put(b, "\\t", 2);
        else if (c < 0x20) mbpo__sb_printf(b, "\\u%04x", c);
        else mbpo__sb_put(b, s, 1);
    }
    mbpo__sb_put(b, "\"", 1);
}
/* A number for a JSON line: non-finite values (a diverged step) become null, which JSON has. */
static void mbpo__sb_num(mbpo__sb *b, double v) {
    if (isfinite(v)) mbpo__sb_printf(b, "%.9g", v);
    else mbpo__sb_puts(b, "null");
}
/* Append one line to a file and flush it to disk: after a kill, a file holds whole lines and
   at most one torn last line (which mbpo__jsonl_done cuts). */
static int mbpo__append_line(const char *path, const char *line, size_t n) {
    FILE *f = fopen(path, "ab");
    int ok;
    if (!f) return mbpo__fail("%s: cannot open for appending (%s)", path, strerror(errno));
    ok = fwrite(line, 1, n, f) == n && fputc('\n', f) != EOF && fflush(f) == 0;
#if !defined(_WIN32)
    if (ok) ok = fsync(fileno(f)) == 0;
#endif
    if (fclose(f) != 0) ok = 0;
    return ok ? 1 : mbpo__fail("%s: write error (%s)", path, strerror(errno));
}
/* The "index" field of every whole line of a JSONL file we wrote (done[index] = 1); a torn
   last line (no newline) is cut off the file. A missing file is an empty one. */
static int mbpo__jsonl_done(const char *path, unsigned char *done, int64_t n_done) {
    size_t len = 0, keep;
    char *text;
    const char *line, *end;
    FILE *f = fopen(path, "rb");
    if (!f) return 1;
    fclose(f);
    if (!(text = mbpo_read_file(path, &len))) return 0;
    for (keep = len; keep > 0 && text[keep - 1] != '\n'; keep--) {}
    if (keep < len) {   /* a torn line from a kill: drop it */
#if !defined(_WIN32)
        if (truncate(path, (off_t)keep) != 0) { mbpo_free(text); return mbpo__fail("%s: cannot cut a torn last line (%s)", path, strerror(errno)); }
#endif
    }
    for (line = text, end = text + keep; line < end; ) {
        const char *eol = (const char *)memchr(line, '\n', (size_t)(end - line));
        mbpo_json *j = mbpo_json_parse(line, (size_t)(eol - line), path);
        const mbpo_json *idx = j ? mbpo_json_get(j, "index") : NULL;
        if (!j || !idx || !idx->is_int || idx->integer < 0 || idx->integer >= n_done) {
            mbpo_json_free(j); mbpo_free(text);
            return mbpo__fail("%s: a line without a valid \"index\" - not a file of this run; remove it to start over", path);
        }
        done[idx->integer] = 1;
        mbpo_json_free(j);
        line = eol + 1;
    }
    mbpo_free(text);
    return 1;
}
/* mkdir -p: the directory and any missing parents. */
static int mbpo__mkdir(const char *path) {
#if !defined(_WIN32)
    size_t n = strlen(path), i;
    char *p = (char *)mbpo__alloc(n + 1);
    if (!p) return 0;
    memcpy(p, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        if (p[i - 1] == '/') continue;   /* "a//b" */
        p[i] = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            mbpo__fail("%s: cannot create the directory %s (%s)", path, p, strerror(e));
            mbpo_free(p);
            return 0;
        }
        p[i] = path[i];
    }
    mbpo_free(p);
    {
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return mbpo__fail("%s: exists and is not a directory", path);
    }
#endif
    return 1;
}
MBPODEF int mbpo_mkdir(const char *path) { return mbpo__mkdir(path); }

/* An output directory for a run: made (mkdir -p), then proven writable before any work by a
   probe file that is written, flushed to disk and removed, so that a read-only or full
   filesystem is reported now rather than after hours of mining or training. */
static int mbpo__out_dir(const char *dir) {
#if !defined(_WIN32)
    char probe[4096];
    FILE *f;
    int ok, e = 0;
    if (!mbpo__mkdir(dir)) return 0;
    /* named like an atomic write's temporary, so that a kill right here leaves nothing for good */
    snprintf(probe, sizeof probe, "%s/.mbpo-probe.tmp.%ld", dir, (long)getpid());
    if (!(f = fopen(probe, "wb")))
        return mbpo__fail("%s: the output directory is not writable (%s); choose another --out", dir, strerror(errno));
    ok = fputc('x', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (!ok) e = errno;
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    remove(probe);
    if (!ok)
        return mbpo__fail("%s: cannot write to the output directory (%s); free some space or choose another --out", dir,
                          strerror(e));
    return 1;
#else
    return mbpo__mkdir(dir);
#endif
}
/* What a killed run leaves behind in dir: "<name>.tmp.<pid>", the temporary files of
   mbpo_write_file_atomic (and of the probe above). Only regular files whose <name> is one
   this run writes (one of `names`, or any "<digits>.png" when png is set) and whose process
   no longer exists are removed; a user's own files are never touched. */
static void mbpo__clean_stale(const char *dir, const char *const *names, int png) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    struct dirent *ent;
    if (!d) return;
    while ((ent = readdir(d)) != NULL) {
        const char *t = NULL, *c, *x;
        char *path;
        struct stat st;
        long pid;
        size_t n, k;
        int ours = 0;
        for (x = ent->d_name; (x = strstr(x, ".tmp.")) != NULL; x++) t = x;   /* the last ".tmp." */
        if (!t || !t[5]) continue;
        for (c = t + 5; *c >= '0' && *c <= '9'; c++) {}
        if (*c || c - (t + 5) > 9) continue;                /* not ".tmp.<pid>" */
        n = (size_t)(t - ent->d_name);
        for (k = 0; names && names[k] && !ours; k++) ours = strlen(names[k]) == n && !strncmp(ent->d_name, names[k], n);
        if (png && !ours && n > 4 && !strncmp(t - 4, ".png", 4)) {
            for (c = ent->d_name; c < t - 4 && *c >= '0' && *c <= '9'; c++) {}
            ours = c == t - 4;
        }
        pid = strtol(t + 5, NULL, 10);
        if (!ours || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   /* alive, or not ours */
        if ((path = mbpo__path_join(dir, ent->d_name)) != NULL && lstat(path, &st) == 0 && S_ISREG(st.st_mode)) remove(path);
        mbpo_free(path);
    }
    closedir(d);
#else
    (void)dir; (void)names; (void)png;
#endif
}
/* Remove a directory of plain files (a checkpoint-<step>.tmp that a kill or a full disk left);
   a symbolic link, or anything but regular files inside, is left alone. */
static void mbpo__remove_flat_dir(const char *dir) {
#if !defined(_WIN32)
    DIR *d;
    struct dirent *ent;
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !(d = opendir(dir))) return;
    while ((ent = readdir(d)) != NULL) {
        char *path;
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        if ((path = mbpo__path_join(dir, ent->d_name)) != NULL && lstat(path, &st) == 0 && S_ISREG(st.st_mode)) remove(path);
        mbpo_free(path);
    }
    closedir(d);
    rmdir(dir);   /* fails, harmlessly, if something else was inside */
#else
    (void)dir;
#endif
}
/* A file that exists and holds at least one byte. */
static int mbpo__file_nonempty(const char *path) {
    FILE *f = fopen(path, "rb");
    int64_t n = f ? mbpo__file_size(f) : 0;
    if (f) fclose(f);
    return n > 0;
}
/* Free bytes for an unprivileged writer on the filesystem of path (-1: unknown). */
static double mbpo__free_bytes(const char *path) {
#if !defined(_WIN32)
    struct statvfs v;
    if (statvfs(path, &v) == 0) return (double)v.f_bavail * (double)v.f_frsize;
#else
    (void)path;
#endif
    return -1;
}

/* What every run loads from a model directory: weights, tokenizer.json, and
   preprocessor_config.json when there is one (else the hub values); `processor` is
   MBPO_PROCESSOR_AUTO (what transformers picks for the folder), _SLOW or _FAST; the model
   is planned on `device` from then on. */
typedef struct {
    mbpo_model model;
    mbpo_tokenizer *tok;
    mbpo_preproc pp;
    int32_t stop[2];
    int n_stop;
    mbpo_kv kv;                      /* the generation cache the run keeps (mbpo__kv_keep) */
} mbpo__env;
/* A cache kept across generations (so that its decode step's graph is captured once; the
   weights change in place, so it stays valid): made again when G changes, a prompt needs a
   longer one, or the model was planned again (a new backend: the old one is gone, so the
   cache is released without it). */
static int mbpo__kv_keep(mbpo_kv *kv, const mbpo_model *m, int G, int64_t need) {
    if (kv->mem && kv->be == m->be && kv->be_gen == m->be_gen && kv->ops == m->ops && kv->G == G && kv->max_len >= need) return 1;
    if (kv->be != m->be || kv->be_gen != m->be_gen) kv->be = NULL;
    mbpo_kv_free(kv);
    return mbpo_kv_init(kv, m, G, need);
}
static void mbpo__env_free(mbpo__env *e) {
    if (e->kv.mem && (e->kv.be != e->model.be || e->kv.be_gen != e->model.be_gen)) e->kv.be = NULL;
    mbpo_kv_free(&e->kv);
    mbpo_model_free(&e->model); mbpo_tokenizer_free(e->tok); memset(e, 0, sizeof *e);
}
static int mbpo__env_load(mbpo__env *e, const char *dir, int processor, mbpo_device device) {
    char *p;
    int ok;
    memset(e, 0, sizeof *e);
    if (!mbpo_device_available(device) || !mbpo_model_load(&e->model, dir)) return 0;
    e->model.device = device;
    if (!(p = mbpo__path_join(dir, "tokenizer.json"))) return 0;
    e->tok = mbpo_tokenizer_load(p);
    mbpo_free(p);
    if (!e->tok) { mbpo__env_free(e); return 0; }
    if (!(p = mbpo__path_join(dir, "preprocessor_config.json"))) return 0;
    if (!mbpo__file_exists(p)) {   /* a transformers 5.x save has only processor_config.json; 4.57 falls back to it */
        mbpo_free(p);
        if (!(p = mbpo__path_join(dir, "processor_config.json"))) return 0;
    }
    ok = mbpo__file_exists(p) ? mbpo_preproc_load_as(&e->pp, p, processor) : (mbpo_preproc_default(&e->pp), 1);
    if (ok && !mbpo__file_exists(p) && processor != MBPO_PROCESSOR_AUTO) e->pp.fast = processor;
    mbpo_free(p);
    if (!ok) { mbpo__env_free(e); return 0; }
    if ((e->stop[e->n_stop] = mbpo_tokenizer_find(e->tok, "<|im_end|>")) >= 0) e->n_stop++;
    if ((e->stop[e->n_stop] = mbpo_tokenizer_find(e->tok, "<|endoftext|>")) >= 0) e->n_stop++;
    return 1;
}
/* ------------------------------------------------------------------ 5. runs: ranks

   The communicator of the process (mbpo_comm_world): rank and world size from the launcher's
   variables, checked against MPI's own when the build has MPI. The collectives over MPI are
   written with point-to-point messages, not MPI's reductions, for two reasons: the order of
   the additions is ours (rank order, so the result does not depend on MPI's algorithm, the
   message sizes or the timing), and a wait that does not complete can say which rank it waits
   for. Messages are sent in pieces of at most 1 GiB (MPI counts are int). */
static mbpo_comm mbpo__comm_w;
static int mbpo__comm_state;   /* 0 not made, 1 made, -1 failed (the reason was given) */

/* A launcher's variable as a count or an index; -1 when unset or not a number. */
static int mbpo__env_index(const char *name) {
    const char *s = getenv(name);
    char *e;
    long v;
    if (!s || !*s) return -1;
    v = strtol(s, &e, 10);
    return *e || v < 0 || v > (1L << 24) ? -1 : (int)v;
}
/* Rank, world size and local rank from the first launcher whose variables are set. */
static int mbpo__comm_env(mbpo_comm *c) {
    static const char *const vars[4][4] = {
        { "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun (Open MPI)" },
        { "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "srun (Slurm)" },
        { "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "mpirun (PMI)" },
        { "WORLD_SIZE", "RANK", "LOCAL_RANK", "torchrun-style variables" } };
    int i;
    c->world = 1; c->rank = 0; c->local_rank = 0;
    snprintf(c->launcher, sizeof c->launcher, "single process");
    for (i = 0; i < 4; i++) {
        int w = mbpo__env_index(vars[i][0]), r = mbpo__env_index(vars[i][1]), l = mbpo__env_index(vars[i][2]);
        if (w < 0) continue;
        if (w < 1 || r < 0 || r >= w)
            return mbpo__fail("%s: %s=%s, %s=%s: want a world size >= 1 and a rank below it", vars[i][3], vars[i][0],
                              getenv(vars[i][0]), vars[i][1], getenv(vars[i][1]) ? getenv(vars[i][1]) : "(unset)");
        c->world = w; c->rank = r; c->local_rank = l >= 0 ? l : 0;
        snprintf(c->launcher, sizeof c->launcher, "%s", vars[i][3]);
        return 1;
    }
    return 1;
}

#ifdef MBPO_MPI
#define MBPO__MPI_PIECE ((size_t)1 << 30)
static void mbpo__mpi_finalize(void) {
    int a = 0, b = 0;
    MPI_Initialized(&a);
    MPI_Finalized(&b);
    if (a && !b) MPI_Finalize();
}
static int mbpo__mpi_init(mbpo_comm *c) {
    int inited = 0, provided = 0, r = 0, w = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return mbpo__fail("%s: MPI_Init_thread failed", c->launcher);
    if (!inited) atexit(mbpo__mpi_finalize);
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    if (w != c->world || r != c->rank)
        return mbpo__fail("%s says rank %d of %d, MPI says rank %d of %d: launch with the MPI the build links", c->launcher,
                          c->rank, c->world, r, w);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    c->backend = "mpi";
    return 1;
}
/* Requests of one collective: pieces posted, then waited for with the deadline. */
typedef struct { MPI_Request *rq; int *peer; int n, cap; } mbpo__mpi_reqs;
static int mbpo__mpi_post(mbpo__mpi_reqs *q, int send, void *buf, size_t bytes, int peer, int tag) {
    size_t at;
    for (at = 0; at < bytes || (at == 0 && bytes == 0); at += MBPO__MPI_PIECE) {
        size_t len = bytes - at < MBPO__MPI_PIECE ? bytes - at : MBPO__MPI_PIECE;
        int e;
        if (q->n == q->cap) {
            int cap = q->cap ? 2 * q->cap : 16;
            MPI_Request *rq = (MPI_Request *)mbpo__alloc((size_t)cap * sizeof *rq);
            int *pe = (int *)mbpo__alloc((size_t)cap * sizeof *pe);
            if (!rq || !pe) { mbpo_free(rq); mbpo_free(pe); return 0; }
            if (q->n) { memcpy(rq, q->rq, (size_t)q->n * sizeof *rq); memcpy(pe, q->peer, (size_t)q->n * sizeof *pe); }
            mbpo_free(q->rq); mbpo_free(q->peer);
            q->rq = rq; q->peer = pe; q->cap = cap;
        }
        e = send ? MPI_Isend((char *)buf + at, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD, &q->rq[q->n])
                 : MPI_Irecv((char *)buf + at, (int)len, MPI_BYTE, peer, tag, MPI_COMM_WORLD, &q->rq[q->n]);
        if (e != MPI_SUCCESS) return mbpo__fail("MPI_%s of %zu bytes with rank %d failed", send ? "Isend" : "Irecv", len, peer);
        q->peer[q->n++] = peer;
        if (bytes == 0) break;
    }
    return 1;
}
/* Every posted request complete, or the deadline: the ranks still not heard from named. */
static int mbpo__mpi_wait(mbpo_comm *c, mbpo__mpi_reqs *q, const char *what) {
    double t0 = mbpo_now();
    long us = 20;
    int left = q->n, ok = 1, *idx = q->n ? (int *)mbpo__alloc((size_t)q->n * sizeof(int)) : NULL;
    if (q->n && !idx) ok = 0;
    while (ok && left > 0) {
        int done = 0;
        if (MPI_Testsome(q->n, q->rq, &done, idx, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
            ok = mbpo__fail("%s: an MPI message failed (a rank died?)", what);
            break;
        }
        if (done == MPI_UNDEFINED) break;
        left -= done;
        if (left == 0) break;
        if (done > 0) { us = 20; continue; }
        if (mbpo_now() - t0 > c->timeout_s) {
            char who[256];
            size_t n = 0;
            int i, j, shown = 0;
            who[0] = 0;
            for (i = 0; i < q->n && n + 16 < sizeof who; i++) {
                int seen = 0;
                if (q->rq[i] == MPI_REQUEST_NULL) continue;
                for (j = 0; j < i; j++) seen |= q->rq[j] != MPI_REQUEST_NULL && q->peer[j] == q->peer[i];
                if (seen) continue;
                n += (size_t)snprintf(who + n, sizeof who - n, "%s%d", shown++ ? ", " : "", q->peer[i]);
            }
            ok = mbpo__fail("%s: rank %d waited %.0f s for rank %s (dead, hung, or that far behind; --comm-timeout sets the "
                            "wait)", what, c->rank, c->timeout_s, who);
            break;
        }
        {
            struct timespec ts;
            ts.tv_sec = 0; ts.tv_nsec = us * 1000;
            nanosleep(&ts, NULL);
        }
        if (us < 2000) us *= 2;
    }
    mbpo_free(idx); mbpo_free(q->rq); mbpo_free(q->peer);
    memset(q, 0, sizeof *q);
    return ok;
}
#if defined(MBPO_NCCL)
/* After an NCCL wait timed out: the ranks that are still alive meet in a barrier over MPI (a
   minute at most); who does not come is named in who ("rank 3", "rank 3, 5"). */
static int mbpo__mpi_missing(mbpo_comm *c, char *who, size_t size) {
    mbpo__mpi_reqs q;
    unsigned char *b = (unsigned char *)mbpo__calloc((size_t)c->world, 1);
    double keep = c->timeout_s;
    int p, ok = 1;
    size_t at = 0;
    if (!b) return 0;
    memset(&q, 0, sizeof q);
    for (p = 0; p < c->world && ok; p++)
        if (p != c->rank) ok = mbpo__mpi_post(&q, 1, b + c->rank, 1, p, 14) && mbpo__mpi_post(&q, 0, b + p, 1, p, 14);
    c->timeout_s = 60;
    if (ok && !mbpo__mpi_wait(c, &q, "who is missing")) {
        const char *r = strstr(mbpo_failure_reason(), "for rank "), *e = r ? strstr(r, " (") : NULL;
        if (r && e && e > r + 9) at = (size_t)snprintf(who, size, "rank %.*s", (int)(e - r - 9), r + 9);
    }
    c->timeout_s = keep;
    mbpo_free(b);
    return at > 0;
}
#endif
#endif /* MBPO_MPI */

#if defined(MBPO_NCCL) && !defined(MBPO_MPI)
/* NCCL's unique id without MPI: rank 0 makes it and serves it on MASTER_PORT; the others
   connect to MASTER_ADDR:MASTER_PORT (retrying until timeout_s: rank 0 may start last). */
static int mbpo__tcp_unique_id(mbpo_comm *c, unsigned char *id) {
    const char *host = getenv("MASTER_ADDR"), *port = getenv("MASTER_PORT");
    struct addrinfo hints, *res = NULL;
    double t0 = mbpo_now();
    int fd = -1, ok = 0, r;
    if (c->world == 1) return mbpo__nccl_unique_id(id);
    if (!host || !*host || !port || !*port)
        return mbpo__fail("%s: %d ranks over NCCL need MASTER_ADDR and MASTER_PORT (or a build with MBPO_MPI and mpirun)",
                          c->launcher, c->world);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC; hints.ai_socktype = SOCK_STREAM;
    if (c->rank == 0) hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(c->rank == 0 ? NULL : host, port, &hints, &res) != 0 || !res)
        return mbpo__fail("MASTER_ADDR=%s MASTER_PORT=%s: cannot resolve the address", host, port);
    if (c->rank == 0) {   /* serve the id to world - 1 connections */
        int one = 1, served = 0;
        ok = mbpo__nccl_unique_id(id) && (fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol)) >= 0 &&
             setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 &&
             listen(fd, c->world) == 0;
        if (!ok) mbpo__fail("rank 0: cannot listen on port %s for the other ranks (%s)", port, strerror(errno));
        while (ok && served < c->world - 1) {
            struct pollfd pf;
            int cfd;
            size_t at = 0;
            pf.fd = fd; pf.events = POLLIN; pf.revents = 0;
            r = poll(&pf, 1, 1000);
            if (r == 0 && mbpo_now() - t0 > c->timeout_s) {
                ok = mbpo__fail("rank 0: %d of %d ranks connected to port %s within %.0f s", served + 1, c->world, port, c->timeout_s);
                break;
            }
            if (r <= 0) continue;
            if ((cfd = accept(fd, NULL, NULL)) < 0) continue;
            while (at < 128) { ssize_t k = send(cfd, id + at, 128 - at, 0); if (k <= 0) break; at += (size_t)k; }
            close(cfd);
            served += at == 128;
        }
    } else {   /* connect, retrying: rank 0 may not listen yet */
        for (;;) {
            size_t at = 0;
            fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
            if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
                while (at < 128) { ssize_t k = recv(fd, id + at, 128 - at, 0); if (k <= 0) break; at += (size_t)k; }
                if (at == 128) { ok = 1; break; }
            }
            if (fd >= 0) { close(fd); fd = -1; }
            if (mbpo_now() - t0 > c->timeout_s) {
                mbpo__fail("rank %d: no NCCL id from rank 0 at %s:%s within %.0f s", c->rank, host, port, c->timeout_s);
                break;
            }
            {
                struct timespec ts;
                ts.tv_sec = 0; ts.tv_nsec = 200000000L;
                nanosleep(&ts, NULL);
            }
        }
    }
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return ok;
}
#endif

MBPODEF mbpo_comm *mbpo_comm_world(void) {
    mbpo_comm *c = &mbpo__comm_w;
    if (mbpo__comm_state == 1) return c;
    if (mbpo__comm_state == -1) { mbpo__fail("%s", "the communicator could not be made (see the first error)"); return NULL; }
    memset(c, 0, sizeof *c);
    c->timeout_s = 1800; c->backend = "single";
    mbpo__comm_state = -1;
    if (!mbpo__comm_env(c)) return NULL;
#if defined(MBPO_NCCL)
    if (c->world > 1 || (getenv("MBPO_COMM") && !strcmp(getenv("MBPO_COMM"), "nccl"))) {   /* (MBPO_COMM=nccl: one rank too) */
        unsigned char id[128];
        memset(id, 0, sizeof id);
#if defined(MBPO_MPI)
        if (c->world > 1 && !mbpo__mpi_init(c)) return NULL;
        if ((c->rank == 0 && !mbpo__nccl_unique_id(id)) || !mbpo_comm_broadcast(c, id, sizeof id, 0)) return NULL;
#else
        if (!mbpo__tcp_unique_id(c, id)) return NULL;
#endif
        if (!mbpo__nccl_init(c, id)) return NULL;
    }
#else
    if (c->world > 1) {
#if defined(MBPO_MPI)
        if (!mbpo__mpi_init(c)) return NULL;
#else
        mbpo__fail("%s: world size %d, but this build has no collectives: build with MBPO_MPI (make mpi: OpenMPI, the "
                   "CPU) or MBPO_NCCL (GPUs)", c->launcher, c->world);
        return NULL;
#endif
    }
#endif
    mbpo__comm_state = 1;
    return c;
}
MBPODEF void mbpo_comm_abort(mbpo_comm *c, const char *why) {
    if (!c || c->world <= 1) return;
    fprintf(stderr, "mbpo: rank %d of %d: %s\nmbpo: ending every rank of the job\n", c->rank, c->world, why);
    fflush(stderr);
#ifdef MBPO_NCCL
    if (c->device) mbpo__nccl_abort(c);
#endif
#ifdef MBPO_MPI
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    _exit(1);
}
MBPODEF int mbpo_comm_all_gather(mbpo_comm *c, void *buf, const size_t *off) {
    if (c->world <= 1) return 1;
#ifdef MBPO_NCCL
    if (c->device) return mbpo__nccl_all_gather(c, buf, off);
#endif
#ifdef MBPO_MPI
    {
        mbpo__mpi_reqs q;
        int p;
        memset(&q, 0, sizeof q);
        for (p = 0; p < c->world; p++) {
            if (p == c->rank) continue;
            if (!mbpo__mpi_post(&q, 1, (char *)buf + off[c->rank], off[c->rank + 1] - off[c->rank], p, 11) ||
                !mbpo__mpi_post(&q, 0, (char *)buf + off[p], off[p + 1] - off[p], p, 11)) {
                (void)mbpo__mpi_wait(c, &q, "all_gather");
                return 0;
            }
        }
        return mbpo__mpi_wait(c, &q, "all_gather");
    }
#else
    (void)buf; (void)off;
    return mbpo__fail("all_gather: no collectives in this build");
#endif
}
MBPODEF int mbpo_comm_barrier(mbpo_comm *c) {
    unsigned char *b;
    size_t *off;
    int r, ok;
    if (c->world <= 1) return 1;
    b = (unsigned char *)mbpo__calloc((size_t)c->world, 1);
    off = (size_t *)mbpo__alloc((size_t)(c->world + 1) * sizeof *off);
    if (!b || !off) { mbpo_free(b); mbpo_free(off); return 0; }
    for (r = 0; r <= c->world; r++) off[r] = (size_t)r;
    ok = mbpo_comm_all_gather(c, b, off);
    mbpo_free(b); mbpo_free(off);
    return ok;
}
MBPODEF int mbpo_comm_broadcast(mbpo_comm *c, void *buf, size_t bytes, int root) {
    if (c->world <= 1) return 1;
#ifdef MBPO_NCCL
    if (c->device) return mbpo__nccl_broadcast(c, buf, bytes, root);
#endif
#ifdef MBPO_MPI
    {
        mbpo__mpi_reqs q;
        int p, ok = 1;
        memset(&q, 0, sizeof q);
        if (c->rank == root) {
            for (p = 0; p < c->world && ok; p++) if (p != root) ok = mbpo__mpi_post(&q, 1, buf, bytes, p, 12);
        } else ok = mbpo__mpi_post(&q, 0, buf, bytes, root, 12);
        return mbpo__mpi_wait(c, &q, "broadcast") && ok;
    }
#else
    (void)buf; (void)bytes; (void)root;
    return mbpo__fail("broadcast: no collectives in this build");
#endif
}
MBPODEF int mbpo_comm_all_reduce(mbpo_comm *c, double *x, int64_t n) {
    double *all;
    size_t *off;
    int64_t i;
    int r, ok;
    if (c->world <= 1 || n <= 0) return 1;
    all = (double *)mbpo__alloc((size_t)(c->world * n) * sizeof(double));
    off = (size_t *)mbpo__alloc((size_t)(c->world + 1) * sizeof *off);
    if (!all || !off) { mbpo_free(all); mbpo_free(off); return 0; }
    for (r = 0; r <= c->world; r++) off[r] = (size_t)(r * n) * sizeof(double);
    memcpy(all + c->rank * n, x, (size_t)n * sizeof(double));
    ok = mbpo_comm_all_gather(c, all, off);
    for (i = 0; ok && i < n; i++) {   /* rank order, from rank 0's value: the same bits everywhere */
        double s = all[i];
        for (r = 1; r < c->world; r++) s += all[r * n + i];
        x[i] = s;
    }
    mbpo_free(all); mbpo_free(off);
    return ok;
}
/* Every rank must see the same thing (the files of a shared out_dir): the FNV-1a hash of
   `bytes` compared with rank 0's; a difference names the rank. */
static int mbpo__comm_same(mbpo_comm *c, const void *data, size_t bytes, const char *what) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 1469598103934665603ull, *all;
    size_t i, *off;
    int r, ok;
    if (c->world <= 1) return 1;
    for (i = 0; i < bytes; i++) { h ^= p[i]; h *= 1099511628211ull; }
    all = (uint64_t *)mbpo__calloc((size_t)c->world, sizeof(uint64_t));
    off = (size_t *)mbpo__alloc((size_t)(c->world + 1) * sizeof(size_t));
    if (!all || !off) { mbpo_free(all); mbpo_free(off); return 0; }
    all[c->rank] = h;
    for (r = 0; r <= c->world; r++) off[r] = (size_t)r * sizeof(uint64_t);
    ok = mbpo_comm_all_gather(c, all, off);
    for (r = 1; ok && r < c->world; r++)
        if (all[r] != all[0])
            ok = mbpo__fail("rank %d sees another %s than rank 0: every rank must see the one out_dir (a shared filesystem)", r, what);
    mbpo_free(all); mbpo_free(off);
    return ok;
}
/* The ordered add of one piece: acc = (first ? p_0 : acc + p_0) + p_1 + ... (floats). */
static void mbpo__add_pieces(float *acc, float *const *piece, int n_pieces, int64_t len, int first) {
    int64_t i;
    int q;
    for (i = 0; i < len; i++) {
        float a = first ? piece[0][i] : acc[i] + piece[0][i];
        for (q = 1; q < n_pieces; q++) a += piece[q][i];
        acc[i] = a;
    }
}
MBPODEF int mbpo_comm_reduce_scatter(mbpo_comm *c, float *acc, const float *full, const int64_t *off, int senders,
                                     int first) {
    if (senders < 1 || senders > c->world)
        return mbpo__fail("reduce_scatter: %d senders in a world of %d", senders, c->world);
    if (c->device) return mbpo__fail("reduce_scatter: the ordered sum runs on the host (MPI); over NCCL the ranks use mbpo_comm_reduce");
    if (c->world <= 1) {
        float *p = (float *)full;
        mbpo__add_pieces(acc, &p, 1, off[1] - off[0], first);
        return 1;
    }
#ifdef MBPO_MPI
    {
        const int64_t CH = (int64_t)1 << 20;   /* floats per piece: bounds the scratch at senders x 4 MB */
        int64_t lo = off[c->rank], len = off[c->rank + 1] - lo, maxlen = 0, c0;
        float *tmp = (float *)mbpo__alloc((size_t)(senders * CH) * sizeof(float)), **piece;
        int p, ok = 1;
        piece = (float **)mbpo__alloc((size_t)senders * sizeof *piece);
        if (!tmp || !piece) { mbpo_free(tmp); mbpo_free(piece); return 0; }
        for (p = 0; p < c->world; p++) if (off[p + 1] - off[p] > maxlen) maxlen = off[p + 1] - off[p];
        for (c0 = 0; ok && c0 < maxlen; c0 += CH) {
            mbpo__mpi_reqs q;
            int64_t mine = len - c0 < CH ? len - c0 : CH;
            memset(&q, 0, sizeof q);
            if (c->rank < senders)   /* my terms of the others' shards */
                for (p = 0; p < c->world && ok; p++) {
                    int64_t lp = off[p + 1] - off[p] - c0;
                    if (p == c->rank || lp <= 0) continue;
                    ok = mbpo__mpi_post(&q, 1, (void *)(full + off[p] + c0), (size_t)(lp < CH ? lp : CH) * sizeof(float), p, 13);
                }
            if (mine > 0)   /* everyone's terms of mine */
                for (p = 0; p < senders && ok; p++)
                    if (p != c->rank) ok = mbpo__mpi_post(&q, 0, tmp + p * CH, (size_t)mine * sizeof(float), p, 13);
            if (!mbpo__mpi_wait(c, &q, "reduce_scatter") || !ok) { ok = 0; break; }
            if (mine <= 0) continue;
            for (p = 0; p < senders; p++) piece[p] = p == c->rank ? (float *)full + lo + c0 : tmp + p * CH;
            mbpo__add_pieces(acc + c0, piece, senders, mine, first);
        }
        mbpo_free(tmp); mbpo_free(piece);
        return ok;
    }
#else
    (void)acc; (void)full;
    return mbpo__fail("reduce_scatter: no collectives in this build");
#endif
}

/* NCCL: mbpo_comm_reduce of the part [lo, hi) of the owners' ranges, queued after the work
   queued so far on be (not waited for: the backward goes on); mbpo__comm_finish waits. */
static int mbpo__comm_reduce_part(mbpo_comm *c, float *full, const int64_t *off, int64_t lo, int64_t hi, mbpo_backend *be) {
#ifdef MBPO_NCCL
    if (c->device) return mbpo__nccl_reduce_part(c, full, off, lo, hi, be);
#endif
    (void)c; (void)full; (void)off; (void)lo; (void)hi; (void)be;
    return mbpo__fail("reduce: the overlapped reduce runs over NCCL");
}
static int mbpo__comm_finish(mbpo_comm *c) {
#ifdef MBPO_NCCL
    if (c->device) return mbpo__nccl_finish(c);
#endif
    (void)c;
    return 1;
}
MBPODEF int mbpo_comm_reduce(mbpo_comm *c, float *full, const int64_t *off) {
#ifdef MBPO_NCCL
    if (c->device) return mbpo__nccl_reduce(c, full, off);
#endif
    if (c->world <= 1) return 1;
    return mbpo_comm_reduce_scatter(c, full + off[c->rank], full, off, c->world, 1);   /* (in place: each value read, then written) */
}

/* ------------------------------------------------------------------ 5. runs: model folders */

static int mbpo__copy_file(const char *from, const char *to) {
    size_t n = 0;
    char *d = mbpo_read_file(from, &n);
    int ok = d && mbpo_write_file_atomic(to, d, n);
    mbpo_free(d);
    return ok;
}

/* A checkpoint is a whole Hugging Face model folder: mbpo writes config.json and the weights,
   and carries every other file of the source folder (tokenizer files, chat template,
   generation and preprocessor configs, a model card, ...), so that transformers, TRL or
   vLLM load it as they load the source. Not carried: weights in any format (they would be
   stale), another trainer's state, temporaries and hidden files, and sub-folders. */
static int mbpo__is_carried(const char *name) {
    static const char *const weight_ends[] = { ".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt",
                                              ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", NULL };
    static const char *const own[] = { "config.json", "mbpo_state.json", "trainer_state.json", "run.json", NULL };
    size_t n = strlen(name), k;
    if (!n || name[0] == '.' || strstr(name, ".tmp.")) return 0;
    for (k = 0; own[k]; k++) if (!strcmp(name, own[k])) return 0;
    for (k = 0; weight_ends[k]; k++) {
        size_t e = strlen(weight_ends[k]);
        if (n >= e && !strcmp(name + n - e, weight_ends[k])) return 0;
    }
    return 1;
}
/* The carried files of dir (regular files, links followed: a hub cache snapshot is links),
   sorted by name; NULL-terminated, free with mbpo__names_free. */
static void mbpo__names_free(char **names) {
    size_t k;
    for (k = 0; names && names[k]; k++) mbpo_free(names[k]);
    mbpo_free(names);
}
static int mbpo__name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static char **mbpo__carried_files(const char *dir) {
    size_t n = 0, cap = 16;
    char **names = (char **)mbpo__calloc(cap + 1, sizeof(char *));
#if !defined(_WIN32)
    DIR *d = names ? opendir(dir) : NULL;
    struct dirent *ent;
    if (!names) return NULL;
    if (!d) { mbpo_free(names); mbpo__fail("%s: cannot list the model folder (%s)", dir, strerror(errno)); return NULL; }
    while ((ent = readdir(d)) != NULL) {
        struct stat st;
        char *p;
        int regular;
        if (!mbpo__is_carried(ent->d_name) || !(p = mbpo__path_join(dir, ent->d_name))) continue;
        regular = stat(p, &st) == 0 && S_ISREG(st.st_mode);
        mbpo_free(p);
        if (!regular) continue;
        if (n == cap) {
            char **more = (char **)mbpo__calloc(2 * cap + 1, sizeof(char *));
            if (!more) { closedir(d); mbpo__names_free(names); return NULL; }
            memcpy(more, names, n * sizeof(char *));
            mbpo_free(names);
            names = more; cap *= 2;
        }
        if (!(names[n] = mbpo__strdup(ent->d_name))) { closedir(d); mbpo__names_free(names); return NULL; }
        n++;
    }
    closedir(d);
#else   /* no directory listing: the files a Qwen2-VL hub folder has */
    static const char *const known[] = { "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.json",
                                         "chat_template.jinja", "generation_config.json", "vocab.json", "merges.txt", NULL };
    size_t k;
    if (!names) return NULL;
    for (k = 0; known[k]; k++) {
        char *p = mbpo__path_join(dir, known[k]);
        if (p && mbpo__file_exists(p)) names[n++] = mbpo__strdup(known[k]);
        mbpo_free(p);
    }
#endif
    qsort(names, n, sizeof(char *), mbpo__name_cmp);
    return names;
}

/* The Qwen2-VL Instruct chat template as a Jinja text, for a folder that has none, so that
   apply_chat_template renders exactly what mbpo_chat_encode encodes (docs/QWEN2VL.md 5.2): the
   default system turn when the first message is not one, each message as
   <|im_start|>role\n...<|im_end|>\n with list items joined by nothing (an image item as
   <|vision_start|><|image_pad|><|vision_end|>), and <|im_start|>assistant\n as the generation
   prompt. Written without whitespace control, so every newline in it is one in the output. */
static const char mbpo__chat_template_jinja[] =
    "{% set seen = namespace(images=0, videos=0) %}"
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set seen.images = seen.images + 1 %}{% if add_vision_id %}Picture {{ seen.images }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set seen.videos = seen.videos + 1 %}{% if add_vision_id %}Video {{ seen.videos }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/* The chat template a folder has, allocated (NULL: none), from where transformers looks:
   chat_template.json ({"chat_template": "..."}) or chat_template.jinja, which AutoProcessor
   reads (*for_processor set), else "chat_template" of tokenizer_config.json, which only the
   tokenizer reads - TRL's "processor does not have a chat template" comes from such a folder. */
static char *mbpo__folder_template(const char *dir, int *for_processor) {
    static const char *const files[3] = { "chat_template.json", "chat_template.jinja", "tokenizer_config.json" };
    char *found = NULL;
    int k;
    *for_processor = 0;
    for (k = 0; k < 3 && !found; k++) {
        char *p = mbpo__path_join(dir, files[k]), *text = NULL;
        size_t len = 0;
        if (p && mbpo__file_exists(p) && (text = mbpo_read_file(p, &len)) != NULL) {
            if (k == 1) { found = text; text = NULL; *for_processor = 1; }
            else {
                mbpo_json *j = mbpo_json_parse(text, len, p);
                const mbpo_json *t = j ? mbpo_json_get(j, "chat_template") : NULL;
                if (t && t->type == MBPO_JSON_STRING) found = mbpo__strndup(t->string, t->len);
                if (found && k == 0) *for_processor = 1;
                mbpo_json_free(j);
            }
        }
        mbpo_free(text); mbpo_free(p);
    }
    return found;
}

/* Write a built string to dir/name atomically. */
static int mbpo__write_sb(const char *dir, const char *name, const mbpo__sb *b) {
    char *p = mbpo__path_join(dir, name);
    int ok = p && !b->failed && mbpo_write_file_atomic(p, b->s ? b->s : "", b->n);
    mbpo_free(p);
    return ok;
}
/* vocab.json and merges.txt from tokenizer.json's BPE model: what transformers' slow
   Qwen2Tokenizer reads (AutoProcessor with use_fast=False picks it too); without them it fails
   with a misleading "requires the protobuf library". */
static int mbpo__write_vocab_merges(const char *src, const char *dst, int vocab_file, int merges_file) {
    char *p = mbpo__path_join(src, "tokenizer.json");
    mbpo_json *j = p ? mbpo_json_parse_file(p) : NULL;
    const mbpo_json *model = j ? mbpo_json_get(j, "model") : NULL;
    const mbpo_json *vocab = model ? mbpo_json_get(model, "vocab") : NULL, *merges = model ? mbpo_json_get(model, "merges") : NULL;
    mbpo__sb b = { NULL, 0, 0, 0 };
    size_t k;
    int ok = 0;
    if (!vocab || vocab->type != MBPO_JSON_OBJECT || !merges || merges->type != MBPO_JSON_ARRAY) {
        if (j) mbpo__fail("%s: no BPE model.vocab / model.merges", p);
        goto end;
    }
    mbpo__sb_puts(&b, "{");
    for (k = 0; k < vocab->count; k++) {
        mbpo__sb_puts(&b, k ? ", " : "");
        mbpo__sb_json(&b, vocab->keys[k]);
        mbpo__sb_printf(&b, ": %lld", (long long)vocab->items[k].integer);
    }
    mbpo__sb_puts(&b, "}\n");
    if (vocab_file && !mbpo__write_sb(dst, "vocab.json", &b)) goto end;
    b.n = 0;
    mbpo__sb_puts(&b, "#version: 0.2\n");
    for (k = 0; k < merges->count; k++) {   /* "a b", or ["a", "b"] */
        const mbpo_json *m = &merges->items[k];
        if (m->type == MBPO_JSON_STRING) mbpo__sb_puts(&b, m->string);
        else if (m->type == MBPO_JSON_ARRAY && m->count == 2 && m->items[0].type == MBPO_JSON_STRING &&
                 m->items[1].type == MBPO_JSON_STRING)
            mbpo__sb_printf(&b, "%s %s", m->items[0].string, m->items[1].string);
        else { mbpo__fail("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", p, k); goto end; }
        mbpo__sb_puts(&b, "\n");
    }
    ok = !merges_file || mbpo__write_sb(dst, "merges.txt", &b);
end:
    mbpo_json_free(j); mbpo_free(p); mbpo_free(b.s);
    return ok;
}
/* Whether the JSON object in a file has the key (an unreadable file: no). */
static int mbpo__json_has_key_file(const char *path, const char *key) {
    mbpo_json *j = path ? mbpo_json_parse_file(path) : NULL;
    int has = j && mbpo_json_get(j, key) != NULL;
    mbpo_json_free(j);
    return has;
}
/* What a folder without them gets, so that AutoTokenizer / AutoProcessor and generate work:
   chat_template.json (and the template in tokenizer_config.json), a tokenizer_config.json
   naming the Qwen2 tokenizer and its special tokens, a generation_config.json that stops
   where mbpo stops (<|im_end|> or <|endoftext|>), and the preprocessor_config.json of the
   image processing mbpo used. Files the source had are carried as they are. */
static int mbpo__complete_folder(const char *src, const char *dst, const mbpo__env *e) {
    mbpo__sb b = { NULL, 0, 0, 0 };
    char *p = NULL;
    int ok = 1, for_processor;
    char *own = mbpo__folder_template(src, &for_processor);
    const char *tmpl = own ? own : mbpo__chat_template_jinja;   /* the folder's own, else mbpo's */
    const mbpo_preproc *pp = &e->pp;
    const char *eos = "<|im_end|>", *pad = "<|endoftext|>";
    int q25 = e->model.cfg.arch == MBPO_ARCH_QWEN2_5_VL;
#define MBPO__MISSING(name) (mbpo_free(p), (p = mbpo__path_join(src, name)) != NULL && !mbpo__file_exists(p))
#define MBPO__WRITE(name) (mbpo_free(p), p = NULL, b.failed ? 0 : ((p = mbpo__path_join(dst, name)) != NULL && \
                           mbpo_write_file_atomic(p, b.s ? b.s : "", b.n)))
    if (!for_processor) {   /* for AutoProcessor (and TRL, which asks the processor) */
        b.n = 0;
        mbpo__sb_puts(&b, "{\n  \"chat_template\": "); mbpo__sb_json(&b, tmpl); mbpo__sb_puts(&b, "\n}\n");
        ok = MBPO__WRITE("chat_template.json");
    }
    if (ok && MBPO__MISSING("tokenizer_config.json")) {
        b.n = 0;
        /* as the hub's files of each family: Qwen2.5-VL's name its processor and leave the
           padding side to the default (right) */
        mbpo__sb_printf(&b, "{\n  \"tokenizer_class\": \"Qwen2Tokenizer\",\n  \"processor_class\": \"%s\",\n"
                        "  \"bos_token\": null,\n  \"eos_token\": \"%s\",\n  \"pad_token\": \"%s\",\n  \"unk_token\": null,\n"
                        "  \"model_max_length\": %lld,\n%s  \"clean_up_tokenization_spaces\": false,\n"
                        "  \"split_special_tokens\": false,\n  \"errors\": \"replace\",\n  \"add_prefix_space\": false,\n"
                        "  \"chat_template\": ", q25 ? "Qwen2_5_VLProcessor" : "Qwen2VLProcessor", eos, pad,
                        (long long)e->model.cfg.max_position_embeddings, q25 ? "" : "  \"padding_side\": \"left\",\n");
        mbpo__sb_json(&b, tmpl);
        mbpo__sb_puts(&b, "\n}\n");
        ok = MBPO__WRITE("tokenizer_config.json");
    } else if (ok && !mbpo__json_has_key_file(p, "chat_template")) {   /* the source's, with the template added */
        size_t len = 0, end;
        char *text = (mbpo_free(p), p = mbpo__path_join(src, "tokenizer_config.json")) ? mbpo_read_file(p, &len) : NULL;
        mbpo_json *j = text ? mbpo_json_parse(text, len, p) : NULL;
        ok = j && j->type == MBPO_JSON_OBJECT;
        if (text && !ok) mbpo__fail("%s: not a JSON object", p);
        for (end = len; ok && end > 0 && text[end - 1] != '}'; end--) {}
        if (ok && end > 0) {
            b.n = 0;
            mbpo__sb_put(&b, text, end - 1);
            while (b.n > 0 && (b.s[b.n - 1] == ' ' || b.s[b.n - 1] == '\n' || b.s[b.n - 1] == '\r' || b.s[b.n - 1] == '\t')) b.n--;
            mbpo__sb_puts(&b, j->count ? ",\n  \"chat_template\": " : "\n  \"chat_template\": ");
            mbpo__sb_json(&b, tmpl);
            mbpo__sb_puts(&b, "\n}\n");
            ok = MBPO__WRITE("tokenizer_config.json");
        }
        mbpo_json_free(j); mbpo_free(text);
    }
    if (ok) {   /* for the slow tokenizer */
        int no_vocab = MBPO__MISSING("vocab.json"), no_merges = MBPO__MISSING("merges.txt");
        if (no_vocab || no_merges) ok = mbpo__write_vocab_merges(src, dst, no_vocab, no_merges);
    }
    if (ok && MBPO__MISSING("generation_config.json")) {
        b.n = 0;
        mbpo__sb_puts(&b, "{\n");
        if (e->model.cfg.bos_token_id >= 0) mbpo__sb_printf(&b, "  \"bos_token_id\": %lld,\n", (long long)e->model.cfg.bos_token_id);
        mbpo__sb_printf(&b, "  \"eos_token_id\": [%d", e->n_stop ? e->stop[0] : (int)e->model.cfg.eos_token_id);
        if (e->n_stop > 1) mbpo__sb_printf(&b, ", %d", e->stop[1]);
        mbpo__sb_puts(&b, "],\n");
        if (e->n_stop > 1) mbpo__sb_printf(&b, "  \"pad_token_id\": %d,\n", e->stop[1]);
        mbpo__sb_puts(&b, "  \"do_sample\": false\n}\n");
        ok = MBPO__WRITE("generation_config.json");
    }
    if (ok && MBPO__MISSING("preprocessor_config.json")) {
        b.n = 0;
        /* the type that makes transformers 4.57 pick the processor mbpo used (no type: the slow
           one, from config.json's model type; "...Fast": the fast one) */
        mbpo__sb_printf(&b, "{\n%s  \"processor_class\": \"%s\",\n", pp->fast ? "  \"image_processor_type\": \"Qwen2VLImageProcessorFast\",\n" : "",
                        q25 ? "Qwen2_5_VLProcessor" : "Qwen2VLProcessor");
        mbpo__sb_printf(&b, ""
                        "  \"min_pixels\": %lld,\n  \"max_pixels\": %lld,\n  \"patch_size\": %lld,\n  \"temporal_patch_size\": %lld,\n"
                        "  \"merge_size\": %lld,\n  \"rescale_factor\": %.17g,\n  \"image_mean\": [%.9g, %.9g, %.9g],\n"
                        "  \"image_std\": [%.9g, %.9g, %.9g]\n}\n", (long long)pp->min_pixels, (long long)pp->max_pixels,
                        (long long)pp->patch, (long long)pp->temporal_patch, (long long)pp->merge, pp->rescale,
                        pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0], pp->std[1], pp->std[2]);
        ok = MBPO__WRITE("preprocessor_config.json");
    }
#undef MBPO__MISSING
#undef MBPO__WRITE
    mbpo_free(p); mbpo_free(b.s); mbpo_free(own);
    return ok;
}
/* Copy the carried files of src into dst, then complete dst (above). */
static int mbpo__carry_model_files(const char *src, const char *dst, const mbpo__env *e) {
    char **names = mbpo__carried_files(src);
    size_t k;
    int ok = names != NULL;
    for (k = 0; ok && names[k]; k++) {
        char *p = mbpo__path_join(src, names[k]), *q = mbpo__path_join(dst, names[k]);
        ok = p && q && mbpo__copy_file(p, q);
        mbpo_free(p); mbpo_free(q);
    }
    mbpo__names_free(names);
    return ok && mbpo__complete_folder(src, dst, e);
}
/* Bytes of the carried files (for the free-space check). */
static double mbpo__carried_bytes(const char *src) {
    char **names = mbpo__carried_files(src);
    double total = 0;
    size_t k;
    for (k = 0; names && names[k]; k++) {
        char *p = mbpo__path_join(src, names[k]);
        FILE *f = p ? fopen(p, "rb") : NULL;
        int64_t size = f ? mbpo__file_size(f) : 0;
        if (f) fclose(f);
        if (size > 0) total += (double)size;
        mbpo_free(p);
    }
    mbpo__names_free(names);
    return total;
}
/* ------------------------------------------------------------------ 5. runs: records */

/* SHA-256 (FIPS 180-4), so that the checksums in run.json can be checked with sha256sum. */
typedef struct { uint32_t h[8]; uint64_t bytes; unsigned char block[64]; size_t fill; } mbpo__sha256;
static const uint32_t mbpo__sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u };
#define MBPO__ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void mbpo__sha256_block(mbpo__sha256 *c, const unsigned char *blk) {
    uint32_t w[64], v[8], t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = MBPO__ROR32(w[i - 15], 7) ^ MBPO__ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = MBPO__ROR32(w[i - 2], 17) ^ MBPO__ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (i = 0; i < 8; i++) v[i] = c->h[i];
    for (i = 0; i < 64; i++) {
        t1 = v[7] + (MBPO__ROR32(v[4], 6) ^ MBPO__ROR32(v[4], 11) ^ MBPO__ROR32(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) +
             mbpo__sha256_k[i] + w[i];
        t2 = (MBPO__ROR32(v[0], 2) ^ MBPO__ROR32(v[0], 13) ^ MBPO__ROR32(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        v[7] = v[6]; v[6] = v[5]; v[5] = v[4]; v[4] = v[3] + t1; v[3] = v[2]; v[2] = v[1]; v[1] = v[0]; v[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++) c->h[i] += v[i];
}
#undef MBPO__ROR32
static void mbpo__sha256_init(mbpo__sha256 *c) {
    static const uint32_t h0[8] = { 0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u };
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0; c->fill = 0;
}
static void mbpo__sha256_update(mbpo__sha256 *c, const unsigned char *d, size_t n) {
    c->bytes += n;
    while (n > 0) {
        size_t k = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->block + c->fill, d, k);
        c->fill += k; d += k; n -= k;
        if (c->fill == 64) { mbpo__sha256_block(c, c->block); c->fill = 0; }
    }
}
static void mbpo__sha256_hex(mbpo__sha256 *c, char out[65]) {
    uint64_t bits = c->bytes * 8;
    unsigned char pad = 0x80, len[8];
    int i;
    mbpo__sha256_update(c, &pad, 1);
    pad = 0;
    while (c->fill != 56) mbpo__sha256_update(c, &pad, 1);
    for (i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    mbpo__sha256_update(c, len, 8);
    for (i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", (unsigned)(c->h[i / 4] >> (24 - 8 * (i % 4))) & 0xffu);
}
/* {"bytes": N, "sha256": "..."} of a file, read in 1 MiB pieces. */
static int mbpo__sb_file_digest(mbpo__sb *b, const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    mbpo__sha256 c;
    char hex[65];
    size_t n;
    int ok;
    if (!f) return mbpo__fail("%s: cannot open (%s)", path, strerror(errno));
    if (!(buf = (unsigned char *)mbpo__alloc(1 << 20))) { fclose(f); return 0; }
    mbpo__sha256_init(&c);
    while ((n = fread(buf, 1, 1 << 20, f)) > 0) mbpo__sha256_update(&c, buf, n);
    ok = !ferror(f);
    fclose(f);
    mbpo_free(buf);
    if (!ok) return mbpo__fail("%s: read error", path);
    {
        uint64_t bytes = c.bytes;   /* before the hex: the padding counts itself in */
        mbpo__sha256_hex(&c, hex);
        mbpo__sb_printf(b, "{\"bytes\": %llu, \"sha256\": \"%s\"}", (unsigned long long)bytes, hex);
    }
    return 1;
}

/* run.json: what a mining or training run was started with - every setting, the mbpo build,
   the threads, and the inputs with sizes and SHA-256 (the data files; every file of the model
   folder). Images are named by their root, not hashed. A rerun into the same out_dir compares
   its record with the one there: a setting or an input that would change the result is
   refused, with each difference listed; the settings in `may_change` (the caller's list)
   are taken and the record updated. A changed build or thread count is allowed and said:
   results are bit-identical only for one build and thread count. When out_dir holds no
   results yet (has_results 0), the old record is simply replaced. */
typedef struct { mbpo__sb b; int n_settings, n_inputs; } mbpo__record;
static void mbpo__rec_begin(mbpo__record *r, const char *program) {
    memset(r, 0, sizeof *r);
    mbpo__sb_puts(&r->b, "{\n  \"format\": \"mbpo-run/1\",\n  \"program\": ");
    mbpo__sb_json(&r->b, program);
    mbpo__sb_puts(&r->b, ",\n  \"mbpo\": "); mbpo__sb_json(&r->b, mbpo_version());
    mbpo__sb_puts(&r->b, ",\n  \"build\": "); mbpo__sb_json(&r->b, mbpo_build_info());
    mbpo__sb_printf(&r->b, ",\n  \"threads\": %d,\n  \"settings\": {", mbpo__max_threads());
}
static void mbpo__rec_key(mbpo__record *r, const char *key) {
    mbpo__sb_puts(&r->b, r->n_settings++ ? ",\n    " : "\n    ");
    mbpo__sb_json(&r->b, key);
    mbpo__sb_puts(&r->b, ": ");
}
static void mbpo__rec_num(mbpo__record *r, const char *key, double v) { mbpo__rec_key(r, key); mbpo__sb_printf(&r->b, "%.17g", v); }
static void mbpo__rec_int(mbpo__record *r, const char *key, int64_t v) { mbpo__rec_key(r, key); mbpo__sb_printf(&r->b, "%lld", (long long)v); }
static void mbpo__rec_u64(mbpo__record *r, const char *key, uint64_t v) { mbpo__rec_key(r, key); mbpo__sb_printf(&r->b, "%llu", (unsigned long long)v); }
static void mbpo__rec_str(mbpo__record *r, const char *key, const char *v) {
    mbpo__rec_key(r, key);
    if (v) mbpo__sb_json(&r->b, v); else mbpo__sb_puts(&r->b, "null");
}
/* An input file (path NULL: none) or, with is_dir, every file of a model folder. */
static int mbpo__rec_input(mbpo__record *r, const char *key, const char *path, int is_dir) {
    mbpo__sb_puts(&r->b, r->n_inputs++ ? ",\n    " : "\n  },\n  \"inputs\": {\n    ");
    mbpo__sb_json(&r->b, key);
    mbpo__sb_puts(&r->b, ": ");
    if (!path) { mbpo__sb_puts(&r->b, "null"); return 1; }
    mbpo__sb_puts(&r->b, "{\"path\": "); mbpo__sb_json(&r->b, path);
    if (!is_dir) { mbpo__sb_puts(&r->b, ", \"file\": "); return mbpo__sb_file_digest(&r->b, path) && (mbpo__sb_puts(&r->b, "}"), 1); }
    {
        static const char *const weights[] = { "config.json", NULL };
        char **names = mbpo__carried_files(path);
        size_t k, n = 0;
        int ok = names != NULL;
        mbpo__sb_puts(&r->b, ", \"files\": {");
        for (k = 0; ok && weights[k]; k++) {   /* config.json and the weights, which are not carried */
            char *p = mbpo__path_join(path, weights[k]);
            if (p && mbpo__file_exists(p)) {
                mbpo__sb_puts(&r->b, n++ ? ", " : ""); mbpo__sb_json(&r->b, weights[k]); mbpo__sb_puts(&r->b, ": ");
                ok = mbpo__sb_file_digest(&r->b, p);
            }
            mbpo_free(p);
        }
        {
            mbpo_st st;   /* the weight files the model loads: one, or the shards of an index */
            int f;
            if (ok && (ok = mbpo_st_open_dir(&st, path)) != 0) {
                for (f = 0; ok && f < st.n_files; f++) {
                    const char *base = strrchr(st.paths[f], '/');
                    base = base ? base + 1 : st.paths[f];
                    mbpo__sb_puts(&r->b, n++ ? ", " : ""); mbpo__sb_json(&r->b, base); mbpo__sb_puts(&r->b, ": ");
                    ok = mbpo__sb_file_digest(&r->b, st.paths[f]);
                }
                mbpo_st_close(&st);
            }
        }
        for (k = 0; ok && names[k]; k++) {
            char *p = mbpo__path_join(path, names[k]);
            mbpo__sb_puts(&r->b, n++ ? ", " : ""); mbpo__sb_json(&r->b, names[k]); mbpo__sb_puts(&r->b, ": ");
            ok = p && mbpo__sb_file_digest(&r->b, p);
            mbpo_free(p);
        }
        mbpo__names_free(names);
        mbpo__sb_puts(&r->b, "}}");
        return ok;
    }
}
static int mbpo__json_equal(const mbpo_json *a, const mbpo_json *b) {
    size_t k;
    if (!a || !b || a->type != b->type) return 0;
    switch (a->type) {
    case MBPO_JSON_NUMBER: return a->number == b->number;
    case MBPO_JSON_STRING: return a->len == b->len && !memcmp(a->string, b->string, a->len);
    case MBPO_JSON_ARRAY:
        if (a->count != b->count) return 0;
        for (k = 0; k < a->count; k++) if (!mbpo__json_equal(&a->items[k], &b->items[k])) return 0;
        return 1;
    case MBPO_JSON_OBJECT:
        if (a->count != b->count) return 0;
        for (k = 0; k < a->count; k++) if (!mbpo__json_equal(&a->items[k], mbpo_json_get(b, a->keys[k]))) return 0;
        return 1;
    default: return 1;
    }
}
/* A JSON value as short text for a message. */
static void mbpo__sb_json_brief(mbpo__sb *b, const mbpo_json *v) {
    if (!v) mbpo__sb_puts(b, "(none)");
    else if (v->type == MBPO_JSON_NUMBER) mbpo__sb_printf(b, "%.17g", v->number);
    else if (v->type == MBPO_JSON_STRING) mbpo__sb_json(b, v->string);
    else if (v->type == MBPO_JSON_NULL) mbpo__sb_puts(b, "null");
    else if (v->type == MBPO_JSON_TRUE || v->type == MBPO_JSON_FALSE) mbpo__sb_puts(b, v->type == MBPO_JSON_TRUE ? "true" : "false");
    else mbpo__sb_puts(b, "...");
}
static int mbpo__name_in(const char *name, const char *const *list) {
    for (; list && *list; list++) if (!strcmp(name, *list)) return 1;
    return 0;
}
/* Finish the record and check it against out_dir/run.json (see above); writes it when taken. */
static int mbpo__rec_commit(mbpo__record *r, const char *out_dir, int has_results, const char *const *may_change, FILE *log) {
    char *path = NULL, *old_text = NULL;
    mbpo_json *now = NULL, *old = NULL;
    mbpo__sb why = { NULL, 0, 0, 0 };
    int ok = 0, n_diff = 0;
    size_t k;
    mbpo__sb_puts(&r->b, r->n_inputs ? "\n  }\n}\n" : "\n  },\n  \"inputs\": {}\n}\n");
    if (r->b.failed || !(path = mbpo__path_join(out_dir, "run.json"))) goto end;
    if (!(now = mbpo_json_parse(r->b.s, r->b.n, "run.json (new)"))) goto end;
    if (has_results && mbpo__file_exists(path)) {
        const mbpo_json *s0, *s1, *i0, *i1;
        if (!(old = mbpo_json_parse_file(path))) goto end;
        s0 = mbpo_json_get(old, "settings"); s1 = mbpo_json_get(now, "settings");
        i0 = mbpo_json_get(old, "inputs"); i1 = mbpo_json_get(now, "inputs");
        if (!s0 || s0->type != MBPO_JSON_OBJECT || !i0 || i0->type != MBPO_JSON_OBJECT) {
            mbpo__fail("%s: not a run record of mbpo (no settings / inputs); remove it or use a new --out", path);
            goto end;
        }
        for (k = 0; k < s1->count; k++) {
            const mbpo_json *was = mbpo_json_get(s0, s1->keys[k]);
            if (mbpo__name_in(s1->keys[k], may_change) || mbpo__json_equal(was, &s1->items[k])) continue;
            mbpo__sb_printf(&why, "%s%s ", n_diff++ ? "; " : "", s1->keys[k]);
            mbpo__sb_json_brief(&why, &s1->items[k]);
            mbpo__sb_puts(&why, " (was ");
            mbpo__sb_json_brief(&why, was);
            mbpo__sb_puts(&why, ")");
        }
        for (k = 0; k < i1->count; k++) {   /* inputs: the content counts, not the path */
            const mbpo_json *was = mbpo_json_get(i0, i1->keys[k]), *is = &i1->items[k];
            const mbpo_json *wf = was ? mbpo_json_get(was, "file") : NULL, *nf = mbpo_json_get(is, "file");
            const mbpo_json *wd = was ? mbpo_json_get(was, "files") : NULL, *nd = mbpo_json_get(is, "files");
            int same = (is->type == MBPO_JSON_NULL) ? (was && was->type == MBPO_JSON_NULL)
                                                      : (nf ? mbpo__json_equal(wf, nf) : mbpo__json_equal(wd, nd));
            if (same) continue;
            mbpo__sb_printf(&why, "%s%s: %s", n_diff++ ? "; " : "", i1->keys[k],
                            !was || was->type == MBPO_JSON_NULL ? "not in the earlier run" :
                            is->type == MBPO_JSON_NULL ? "given in the earlier run, not now" : "other content than in the earlier run");
        }
        if (n_diff) {
            mbpo__fail("%s: this run's settings differ from those of the run already in %s: %s. Rerun with the earlier settings to "
                       "continue it, or use a new --out", path, out_dir, why.s ? why.s : "");
            goto end;
        }
        if (log) {
            const mbpo_json *t0 = mbpo_json_get(old, "threads"), *t1 = mbpo_json_get(now, "threads");
            const mbpo_json *b0 = mbpo_json_get(old, "build"), *b1 = mbpo_json_get(now, "build");
            if (!mbpo__json_equal(t0, t1) || !mbpo__json_equal(b0, b1))
                fprintf(log, "note: %s was started with another build or thread count; the results continue, but are no longer "
                        "bit-identical to an uninterrupted run\n", path);
        }
    }
    ok = mbpo_write_file_atomic(path, r->b.s, r->b.n);
end:
    mbpo_json_free(now); mbpo_json_free(old);
    mbpo_free(path); mbpo_free(old_text); mbpo_free(why.s); mbpo_free(r->b.s);
    memset(&r->b, 0, sizeof r->b);
    return ok;
}

/* ------------------------------------------------------------------ 5. runs: samples */

/* Plan the model for at least these sizes (growing the plan when a sample needs more). */
static int mbpo__ensure_plan(mbpo_model *m, int64_t T, int64_t P, int64_t N, int grads) {
    const mbpo_acts *a = m->acts;
    if (a && a->max_T >= T && a->max_P >= P && a->max_N >= N && (!grads || m->grads) && a->recompute == (m->recompute != 0))
        return 1;
    if (a) { T = T > a->max_T ? T : a->max_T; P = P > a->max_P ? P : a->max_P; N = N > a->max_N ? N : a->max_N; }
    mbpo__plan_headroom(&T, &P, &N);
    return mbpo_model_plan(m, T, P, N, grads);
}

/* One image of a sample, preprocessed: the resized 8-bit image, its [0,1] floats (what PGD
   moves), the pixel rows and grid. */
typedef struct { mbpo_image resized; float *x, *pv; int64_t P, n_tokens; int32_t grid[3]; } mbpo__img;
static void mbpo__img_free(mbpo__img *im) { mbpo_image_free(&im->resized); mbpo_free(im->x); mbpo_free(im->pv); memset(im, 0, sizeof *im); }
static int mbpo__img_from_rgb(mbpo__img *im, const mbpo_preproc *pp, const mbpo_image *rgb) {
    size_t n;
    memset(im, 0, sizeof *im);
    if (!mbpo_image_preprocess(pp, rgb, &im->resized, &im->pv, &im->P, im->grid)) return 0;
    n = (size_t)im->resized.width * im->resized.height * 3;
    if (!(im->x = (float *)mbpo__alloc(n * sizeof(float)))) { mbpo__img_free(im); return 0; }
    mbpo_image_to_float(pp, &im->resized, im->x);
    im->n_tokens = im->P / (pp->merge * pp->merge);
    return 1;
}
static int mbpo__img_load(mbpo__img *im, const mbpo_preproc *pp, const char *path) {
    mbpo_image rgb;
    int ok;
    if (!mbpo_image_load(&rgb, path)) return 0;
    ok = mbpo__img_from_rgb(im, pp, &rgb);
    mbpo_image_free(&rgb);
    return ok;
}
/* One sequence (prompt, and the response when given) as a batch with one image. */
typedef struct { mbpo_chat chat; int64_t offs[2], ref_offs[2]; int32_t refs[1]; mbpo_batch b; } mbpo__seq;
static int mbpo__seq_make(mbpo__seq *q, mbpo__env *e, const mbpo_sample *s, const mbpo__img *im, const char *response) {
    memset(q, 0, sizeof *q);
    if (!mbpo_chat_encode(e->tok, s->system, s->question, im ? &im->n_tokens : NULL, im ? 1 : 0, response, &q->chat))
        return mbpo__fail_prefix("sample %s: ", s->id ? s->id : "?");
    q->offs[1] = q->chat.n;
    q->ref_offs[1] = im ? 1 : 0;
    q->b.n_seqs = 1; q->b.ids = q->chat.ids; q->b.seq_offsets = q->offs; q->b.target = q->chat.target;
    if (im) {
        q->b.n_images = 1; q->b.grid_thw = im->grid; q->b.pixel_values = im->pv;
        q->b.image_refs = q->refs; q->b.image_ref_offsets = q->ref_offs;
    }
    {
        int64_t t, N = 0;
        for (t = 0; t < q->chat.n; t++) N += q->chat.target[t];
        return mbpo__ensure_plan(&e->model, q->chat.n, im ? im->P : 0, N, 0);
    }
}
/* IIG of a response on an image: logp with the image minus logp with a black one. */
static int mbpo__sample_iig(mbpo__env *e, const mbpo_sample *s, const mbpo__img *im, const char *response,
                            double *sum, double *mean) {
    mbpo__seq q;
    mbpo_image black;
    mbpo__img bi;
    int ok = 0;
    memset(&bi, 0, sizeof bi);
    if (!mbpo_image_init(&black, im->resized.width, im->resized.height)) return 0;
    if (mbpo__img_from_rgb(&bi, &e->pp, &black) && mbpo__seq_make(&q, e, s, im, response)) {
        int64_t t, N = 0;
        for (t = 0; t < q.chat.n; t++) N += q.chat.target[t];
        ok = mbpo__ensure_plan(&e->model, 2 * q.chat.n, 2 * im->P, 2 * N, 0) &&   /* both passes in one forward */
             mbpo_iig(&e->model, &q.b, bi.pv, sum, mean, NULL, NULL);
        mbpo_chat_free(&q.chat);
    }
    mbpo__img_free(&bi);
    mbpo_image_free(&black);
    return ok;
}
/* Sample one response to the sample's question on an image; the text without its stop token. */
static char *mbpo__respond(mbpo__env *e, const mbpo_sample *s, const mbpo__img *im, const mbpo_gen_opts *go, mbpo_rng *rng) {
    mbpo__seq q;
    int32_t *ids = NULL;
    int len = 0;
    char *text = NULL;
    if (!mbpo__seq_make(&q, e, s, im, NULL)) return NULL;
    if (mbpo__kv_keep(&e->kv, &e->model, 1, q.chat.n + go->max_new_tokens) &&   /* the run's cache: one graph */
        (ids = (int32_t *)mbpo__alloc((size_t)go->max_new_tokens * sizeof(int32_t))) != NULL &&
        mbpo_generate(&e->model, &e->kv, &q.b, go, rng, ids, &len)) {
        int k, n = len;
        for (k = 0; k < e->n_stop; k++) if (n > 0 && ids[n - 1] == e->stop[k]) { n--; break; }
        text = mbpo_tokenizer_decode(e->tok, ids, n, 1, NULL);
    }
    mbpo_free(ids);
    mbpo_chat_free(&q.chat);
    return text;
}
/* A seed for (run seed, sample index, purpose): splitmix64 of the three, so every sample
   draws the same numbers whether or not the run was interrupted before it. */
static uint64_t mbpo__sample_seed(uint64_t seed, int64_t index, uint64_t purpose) {
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(index + 1)) ^ (purpose << 56);
    return mbpo__splitmix64(&x);
}
MBPODEF uint64_t mbpo_seed_derive(uint64_t seed, int64_t index, uint64_t purpose) { return mbpo__sample_seed(seed, index, purpose); }
/* Progress on log. On a terminal: one line rewritten in place (\r) at every call. Elsewhere (a
   file, a pipe, a cluster's job log): a plain line at most every MBPO__PROGRESS_SECONDS, and
   at the end, so that a log stays readable. quiet: none (messages such as why a record was
   skipped are not progress and are always written). */
#define MBPO__PROGRESS_SECONDS 10.0
typedef struct { FILE *log; const char *what; double t0, last; int tty; } mbpo__prog;
static void mbpo__prog_start(mbpo__prog *p, FILE *log, int quiet, const char *what) {
    p->log = quiet ? NULL : log;
    p->what = what;
    p->t0 = p->last = mbpo_now();
#if !defined(_WIN32)
    p->tty = p->log && isatty(fileno(p->log));
#else
    p->tty = 0;
#endif
}
/* Whether a progress line is due now (the last one always is). */
static int mbpo__prog_due(mbpo__prog *p, int last) {
    double now;
    if (!p->log) return 0;
    if (p->tty || last) return 1;
    now = mbpo_now();
    if (now - p->last < MBPO__PROGRESS_SECONDS) return 0;
    p->last = now;
    return 1;
}
static void mbpo__prog_tick(mbpo__prog *p, int64_t done, int64_t total) {
    double dt, rate;
    int last = done >= total;
    if (!mbpo__prog_due(p, last)) return;
    dt = mbpo_now() - p->t0;
    rate = dt > 0 ? (double)done / dt : 0;
    fprintf(p->log, "%s%s %lld/%lld, %.2f/s, ETA %.0f s%s", p->tty ? "\r" : "", p->what, (long long)done, (long long)total, rate,
            rate > 0 ? (double)(total - done) / rate : 0.0, p->tty && !last ? "   " : "\n");
    fflush(p->log);
}
/* A failure in the middle of a terminal progress line starts on a line of its own. */
static void mbpo__prog_break(const mbpo__prog *p) { if (p->log && p->tty) fprintf(p->log, "\n"); }


/* ------------------------------------------------------------------ 5. runs: mining */

/* The memory plan's shape of a micro-batch: `prompts` prompts of one image (side px pixels
   square) and `text` text tokens, each with `seqs` sequences of max_new response tokens
   (targets); decoding G continuations of one prompt. */
static int mbpo__plan_shape(const mbpo_config *cfg, const mbpo_preproc *pp, mbpo_device device, int64_t prompts, int64_t seqs,
                            int64_t px, int64_t text, int64_t max_new, int G, mbpo_mem_shape *s) {
    int64_t rh = 0, rw = 0, patches, per_seq;
    memset(s, 0, sizeof *s);
    if (!mbpo_smart_resize(pp, px, px, &rh, &rw)) return 0;
    patches = (rh / pp->patch) * (rw / pp->patch);
    per_seq = patches / (cfg->v_merge * cfg->v_merge) + 2 + text + max_new;   /* + vision start/end */
    s->device = device;
    s->tokens = prompts * seqs * per_seq;
    s->patches = prompts * patches;
    s->targets = prompts * seqs * max_new;
    s->G = G; s->kv_len = per_seq;
    return 1;
}
/* The plan of a run that only infers (mbpo-mine: IIG, PGD to the pixels, sampling;
   mbpo-score): one sample of one 448x448 image and 64 text tokens with max_new response
   tokens, decoded alone: printed on log unless quiet, refused when it does not fit. */
static int mbpo__infer_plan(const mbpo__env *e, mbpo_device device, int max_new, int pgd, FILE *log, int quiet, const char *who) {
    mbpo_mem_shape sh;
    mbpo_mem_plan p;
    char prefix[48];
    if (!mbpo__plan_shape(&e->model.cfg, &e->pp, device, 2, 1, 448, 64, max_new, 1, &sh)) return 0;   /* IIG: two passes in one */
    if (pgd) sh.pgd_values = 448 * 448 * 3;
    if (!mbpo_mem_plan_make(&e->model.cfg, &sh, &p)) return 0;
    snprintf(prefix, sizeof prefix, "%s: %s ", who, mbpo_device_name(device));
    if (log && !quiet) mbpo_mem_plan_print(log, prefix, &p);
    return mbpo_mem_plan_check(&p, who);
}

MBPODEF void mbpo_mine_defaults(mbpo_mine_opts *o) {
    memset(o, 0, sizeof *o);
    o->top_k = 0;
    mbpo_pgd_defaults(&o->pgd);
    o->temperature = 1.0; o->top_p = 1.0;
    o->max_new_tokens = 128; o->max_tries = 4;
    o->seed = 1234;
    o->processor = MBPO_PROCESSOR_AUTO;
}

typedef struct { double iig, iig_mean; int64_t index; } mbpo__cand_iig;
static int mbpo__iig_desc(const void *a, const void *b) {
    const mbpo__cand_iig *x = (const mbpo__cand_iig *)a, *y = (const mbpo__cand_iig *)b;
    if (x->iig != y->iig) return x->iig > y->iig ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* ---- mining as phases: setup (the dataset, the files, run.json) -> the online set -> IIG of
   every candidate (appended as it goes: a rerun continues) -> rank -> per selected sample its
   negative image and rejected response (appended too) -> the exports. */
typedef struct {
    const mbpo_mine_opts *o;
    mbpo__env e;
    mbpo_dataset ds;
    char *p_iig, *p_off, *p_on, *p_adv, *p_skip;
    unsigned char *iig_done, *off_done, *seen;   /* (n) lines already in iig.jsonl / offline+skipped; read back */
    mbpo__cand_iig *cand;            /* the candidates, best IIG first after ranking */
    int64_t n_cand, n_sel;
    mbpo__sb sb;
    mbpo__prog pg;
    int env_loaded, started;         /* started: a failure now leaves valid files to resume from */
    double t_iig, t_pairs;           /* seconds this process spent on each phase, and the samples done */
    int64_t n_iig_run, n_pairs_run;
    /* data parallel (mbpo__mine_round): item j of a round is rank j's; its line (sb) and the
       file it goes to (path) reach rank 0, which appends the round's lines in item order */
    mbpo_comm *comm;
    int lead;
    mbpo_mine_opts oc;               /* o as this rank runs it (ranks > 0: no log) */
    const char *path;                /* where sb's line goes; NULL: no line this round */
} mbpo__mine;

/* run.json: a rerun must be the same run */
static int mbpo__mine_record(mbpo__mine *M) {
    const mbpo_mine_opts *o = M->o;
    mbpo__record r;
    static const char *const may_change[] = { "image_root", NULL };
    int has = mbpo__file_nonempty(M->p_iig) || mbpo__file_nonempty(M->p_off) || mbpo__file_nonempty(M->p_skip);
    mbpo__rec_begin(&r, "mbpo-mine");
    mbpo__rec_str(&r, "image_processor", M->e.pp.fast ? "fast" : "slow");
    if (o->device != MBPO_DEVICE_CPU) mbpo__rec_str(&r, "device", mbpo_device_name(o->device));   /* bf16 numerics */
    mbpo__rec_int(&r, "top_k", o->top_k);
    mbpo__rec_str(&r, "negatives", o->random_negatives ? "rand" : "pgd");
    mbpo__rec_int(&r, "pgd_iters", o->pgd.iters); mbpo__rec_num(&r, "pgd_step", o->pgd.step);
    mbpo__rec_num(&r, "pgd_eps", o->pgd.eps); mbpo__rec_int(&r, "pgd_random_start", o->pgd.random_start);
    mbpo__rec_num(&r, "temperature", o->temperature); mbpo__rec_num(&r, "top_p", o->top_p);
    mbpo__rec_int(&r, "max_new_tokens", o->max_new_tokens); mbpo__rec_int(&r, "max_tries", o->max_tries);
    mbpo__rec_u64(&r, "seed", o->seed); mbpo__rec_int(&r, "strict", o->strict);
    mbpo__rec_str(&r, "image_root", o->image_root);
    if (!mbpo__rec_input(&r, "model", o->model_dir, 1) || !mbpo__rec_input(&r, "data", o->data, 0) ||
        !mbpo__rec_commit(&r, o->out_dir, has, may_change, o->log)) { mbpo_free(r.b.s); return 0; }
    return 1;
}

/* Setup: the model, the dataset, the output files (what a killed run left cleaned), run.json. */
static int mbpo__mine_setup(mbpo__mine *M, const mbpo_mine_opts *o) {
    static const char *const mine_files[] = { "iig.jsonl", "offline.jsonl", "online.jsonl", "skipped.jsonl", ".mbpo-probe", NULL };
    mbpo_dataset *ds = &M->ds;
    size_t n1;
    memset(M, 0, sizeof *M);
    M->o = o;
    if (!(M->comm = mbpo_comm_world())) return 0;
    M->lead = M->comm->rank == 0;
    if (!M->lead) {   /* rank 0 speaks for the job and writes out_dir (the others write their PNGs there) */
        M->oc = *o; M->oc.log = NULL; M->oc.quiet = 1;
        M->o = o = &M->oc;
    }
    mbpo__prog_start(&M->pg, o->log, 1, "");
    if ((M->lead && !mbpo__out_dir(o->out_dir)) || !mbpo_comm_barrier(M->comm) ||
        !mbpo__env_load(&M->e, o->model_dir, o->processor, o->device))
        return 0;
    M->env_loaded = 1;
    if (!mbpo__infer_plan(&M->e, o->device, o->max_new_tokens, !o->random_negatives, o->log, o->quiet, "mine")) return 0;
    if (!mbpo_dataset_load(ds, o->data, o->image_root, o->strict, o->log)) return 0;
    if (ds->n == 0) return mbpo__fail("%s: no usable sample (%lld bad records skipped)", o->data, (long long)ds->n_bad);
    n1 = (size_t)ds->n + 1;
    M->p_iig = mbpo__path_join(o->out_dir, "iig.jsonl");
    M->p_off = mbpo__path_join(o->out_dir, "offline.jsonl");
    M->p_on = mbpo__path_join(o->out_dir, "online.jsonl");
    M->p_adv = mbpo__path_join(o->out_dir, "adv");
    M->p_skip = mbpo__path_join(o->out_dir, "skipped.jsonl");
    M->iig_done = (unsigned char *)mbpo__calloc(n1, 1);
    M->off_done = (unsigned char *)mbpo__calloc(n1, 1);
    M->cand = (mbpo__cand_iig *)mbpo__calloc(n1, sizeof *M->cand);
    M->seen = (unsigned char *)mbpo__calloc(n1, 1);
    if (!M->seen || !M->p_iig || !M->p_off || !M->p_on || !M->p_adv || !M->p_skip || !M->iig_done || !M->off_done || !M->cand)
        return 0;
    if (M->lead) {
        if (!mbpo__mkdir(M->p_adv)) return 0;
        mbpo__clean_stale(o->out_dir, mine_files, 0);   /* temporary files of a killed run */
        mbpo__clean_stale(M->p_adv, NULL, 1);
        if (!mbpo__mine_record(M)) return 0;
    }
    if (o->log && !o->quiet) fprintf(o->log, "mine: %s: %lld samples (%lld bad records skipped), seed %llu\n", o->data, (long long)ds->n,
                                     (long long)ds->n_bad, (unsigned long long)o->seed);
    if (o->log && !o->quiet && M->comm->world > 1)
        fprintf(o->log, "mine: %d ranks (%s, %s collectives): item j of each round on rank j; rank 0 writes the files\n",
                M->comm->world, M->comm->launcher, M->comm->backend);
    return mbpo_comm_barrier(M->comm);
}

/* The closed-ended samples: the online set, written whole, atomically. */
static int mbpo__mine_online_set(mbpo__mine *M) {
    mbpo__sb *sb = &M->sb;
    int64_t i;
    for (i = 0; i < M->ds.n; i++) {
        const mbpo_sample *s = &M->ds.samples[i];
        if (s->kind == MBPO_Q_OPEN) continue;
        if (s->n_images > 1) {   /* training prompts carry at most one image */
            if (M->o->log) fprintf(M->o->log, "mine: sample %s has %d images; left out of the online set\n", s->id, s->n_images);
            continue;
        }
        mbpo__sb_printf(sb, "{\"index\": %lld, \"id\": ", (long long)i); mbpo__sb_json(sb, s->id);
        mbpo__sb_puts(sb, ", \"image\": "); if (s->n_images) mbpo__sb_json(sb, s->image_files[0]); else mbpo__sb_puts(sb, "null");
        mbpo__sb_puts(sb, ", \"question\": "); mbpo__sb_json(sb, s->question);
        mbpo__sb_puts(sb, ", \"answer\": "); mbpo__sb_json(sb, s->answer);
        mbpo__sb_printf(sb, ", \"kind\": \"%s\", \"label\": \"%c\"}\n", s->kind == MBPO_Q_YESNO ? "yesno" : "mc", s->label);
    }
    return !sb->failed && (!M->lead || mbpo_write_file_atomic(M->p_on, sb->s ? sb->s : "", sb->n));
}

/* The end of a round: every rank's line (M->sb, to M->path, or none) appended by rank 0 in
   rank order, which is the items' order. One process appends its own at once. */
static int mbpo__mine_round(mbpo__mine *M) {
    mbpo_comm *c = M->comm;
    const char *paths[3];
    size_t *off, own = M->path ? M->sb.n + 1 : 0;
    char *all = NULL;
    int r, ok;
    if (M->sb.failed) return 0;
    if (c->world <= 1) return !M->path || mbpo__append_line(M->path, M->sb.s, M->sb.n);
    paths[0] = M->p_iig; paths[1] = M->p_off; paths[2] = M->p_skip;
    if (!(off = (size_t *)mbpo__calloc((size_t)(2 * c->world + 1), sizeof(size_t)))) return 0;
    /* the sizes first (one size_t per rank), then the lines, each after a byte naming its file */
    off[c->world + 1 + c->rank] = own;
    for (r = 0; r <= c->world; r++) off[r] = (size_t)r * sizeof(size_t);
    ok = mbpo_comm_all_gather(c, off + c->world + 1, off);
    if (ok) {
        size_t *len = off + c->world + 1, at = 0, total = 0;
        for (r = 0; r < c->world; r++) total += len[r];
        for (r = 0; r < c->world; r++) { size_t l = len[r]; off[r] = at; at += l; }
        off[c->world] = at;
        ok = (all = (char *)mbpo__alloc(total + 1)) != NULL;
        if (ok && own) {
            all[off[c->rank]] = (char)(M->path == M->p_iig ? 0 : M->path == M->p_off ? 1 : 2);
            memcpy(all + off[c->rank] + 1, M->sb.s, M->sb.n);
        }
        ok = ok && mbpo_comm_all_gather(c, all, off);
        for (r = 0; ok && M->lead && r < c->world; r++)
            if (off[r + 1] > off[r]) ok = mbpo__append_line(paths[(int)all[off[r]]], all + off[r] + 1, off[r + 1] - off[r] - 1);
    }
    mbpo_free(off); mbpo_free(all);
    return ok;
}

/* IIG of every candidate (open-ended, one image) not in iig.jsonl yet, a line each. */
static int mbpo__mine_iig(mbpo__mine *M) {
    const mbpo_mine_opts *o = M->o;
    mbpo__sb *sb = &M->sb;
    int64_t i, k, total, n_todo = 0, *todo;
    int W = M->comm->world;
    double t0 = mbpo_now();
    if (!mbpo__jsonl_done(M->p_iig, M->iig_done, M->ds.n)) return 0;
    if (M->lead && !mbpo__file_exists(M->p_iig) && !mbpo_write_file_atomic(M->p_iig, "", 0)) return 0;   /* even with no candidate */
    if (!(todo = (int64_t *)mbpo__alloc((size_t)(M->ds.n + 1) * sizeof(int64_t)))) return 0;
    for (i = 0, total = 0; i < M->ds.n; i++)
        if (M->ds.samples[i].kind == MBPO_Q_OPEN && M->ds.samples[i].n_images == 1) {
            total++;
            if (!M->iig_done[i]) todo[n_todo++] = i;
        }
    if (!mbpo__comm_same(M->comm, todo, (size_t)n_todo * sizeof(int64_t), "iig.jsonl (the candidates still to do)")) {
        mbpo_free(todo);
        return 0;
    }
    mbpo__prog_start(&M->pg, o->log, o->quiet, "mine: IIG");
    M->started = 1;
    for (k = 0; k < n_todo; k += W) {   /* a round: candidate k + r on rank r */
        M->path = NULL; sb->n = 0;
        if (k + M->comm->rank < n_todo) {
            const mbpo_sample *s = &M->ds.samples[i = todo[k + M->comm->rank]];
            mbpo__img im;
            double sum, mean;
            if (!mbpo__img_load(&im, &M->e.pp, s->images[0])) { mbpo_free(todo); return 0; }
            if (!mbpo__sample_iig(&M->e, s, &im, s->answer, &sum, &mean)) { mbpo__img_free(&im); mbpo_free(todo); return 0; }
            mbpo__img_free(&im);
            if (isfinite(sum) && isfinite(mean))   /* %.17g reads back exactly; a non-finite IIG is null and ranks last */
                mbpo__sb_printf(sb, "{\"index\": %lld, \"iig\": %.17g, \"iig_mean\": %.17g}", (long long)i, sum, mean);
            else mbpo__sb_printf(sb, "{\"index\": %lld, \"iig\": null, \"iig_mean\": null}", (long long)i);
            M->path = M->p_iig;
            M->n_iig_run++;
        }
        if (!mbpo__mine_round(M)) { mbpo_free(todo); return 0; }
        if (total - n_todo + k + W < total) mbpo__prog_tick(&M->pg, total - n_todo + k + W, total);
    }
    mbpo_free(todo);
    if (total) mbpo__prog_tick(&M->pg, total, total);
    M->t_iig = mbpo_now() - t0;
    return mbpo_comm_barrier(M->comm);   /* rank 0 has written every line before anyone ranks */
}

/* Read every IIG back from the file (one source of truth after a resume) and rank: best
   first, non-finite ones never chosen; the top_k are selected. */
static int mbpo__mine_rank(mbpo__mine *M) {
    size_t len = 0;
    char *text, *line, *endp;
    M->started = 0;
    if (!(text = mbpo_read_file(M->p_iig, &len))) return 0;
    for (line = text, endp = text + len; line < endp; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(endp - line));
        mbpo_json *j = mbpo_json_parse(line, (size_t)(eol ? eol - line : endp - line), M->p_iig);
        const mbpo_json *ji = j ? mbpo_json_get(j, "index") : NULL, *jv = j ? mbpo_json_get(j, "iig") : NULL;
        const mbpo_json *jm = j ? mbpo_json_get(j, "iig_mean") : NULL;
        if (!j || !ji || !ji->is_int || ji->integer < 0 || ji->integer >= M->ds.n || !jv ||
            (jv->type != MBPO_JSON_NUMBER && jv->type != MBPO_JSON_NULL) || !jm ||
            (jm->type != MBPO_JSON_NUMBER && jm->type != MBPO_JSON_NULL)) {
            mbpo_json_free(j); mbpo_free(text);
            return mbpo__fail("%s: a line that this run did not write; remove the file to start over", M->p_iig);
        }
        if (!M->seen[ji->integer]) {   /* a repeated index (two runs into one folder) counts once */
            mbpo__cand_iig *c = &M->cand[M->n_cand++];
            M->seen[ji->integer] = 1;
            c->index = ji->integer;
            c->iig = jv->type == MBPO_JSON_NULL ? -HUGE_VAL : jv->number;
            c->iig_mean = jm->type == MBPO_JSON_NULL ? -HUGE_VAL : jm->number;
        }
        mbpo_json_free(j);
        line = eol ? eol + 1 : endp;
    }
    mbpo_free(text);
    qsort(M->cand, (size_t)M->n_cand, sizeof *M->cand, mbpo__iig_desc);
    while (M->n_cand > 0 && !isfinite(M->cand[M->n_cand - 1].iig)) M->n_cand--;
    M->n_sel = M->o->top_k > 0 && M->o->top_k < M->n_cand ? M->o->top_k : M->n_cand;
    return 1;
}

/* The negative image of sample s: PGD against its chosen response (or random noise) on
   im->x, saved as the 8-bit PNG `name` under out_dir and read back into adv, so the rejected
   response is sampled from exactly the file the exports point to. */
static int mbpo__mine_negative(mbpo__mine *M, const mbpo_sample *s, int64_t idx, mbpo__img *im, const char *name, mbpo__img *adv) {
    const mbpo_mine_opts *o = M->o;
    mbpo_image q8, back;
    mbpo_rng rng;
    char *adv_path;
    int good;
    mbpo_rng_seed(&rng, mbpo__sample_seed(o->seed, idx, 1));
    if (o->random_negatives) mbpo_random_noise(im->x, (int64_t)im->resized.width * im->resized.height * 3, &o->pgd, &rng);
    else {
        mbpo__seq q;
        good = mbpo__seq_make(&q, &M->e, s, im, s->answer) &&
               mbpo_pgd(&M->e.model, &M->e.pp, &q.b, im->pv, im->x, im->resized.height, im->resized.width, &o->pgd, &rng, NULL);
        mbpo_chat_free(&q.chat);
        if (!good) return 0;
    }
    memset(&q8, 0, sizeof q8); memset(&back, 0, sizeof back);
    good = (adv_path = mbpo__path_join(o->out_dir, name)) != NULL &&
           mbpo_image_init(&q8, im->resized.width, im->resized.height) &&
           (mbpo_image_from_float(&q8, im->x), mbpo_image_write_png(adv_path, &q8)) &&
           mbpo_image_load(&back, adv_path) && mbpo__img_from_rgb(adv, &M->e.pp, &back);
    mbpo_free(adv_path);
    mbpo_image_free(&q8); mbpo_image_free(&back);
    return good;
}

/* The line of a mined pair in offline.jsonl. */
static int mbpo__mine_pair_line(mbpo__mine *M, const mbpo_sample *s, int64_t i, const char *name, const char *rejected, int tries,
                                double rej_sum, double rej_mean) {
    const mbpo_mine_opts *o = M->o;
    mbpo__sb *sb = &M->sb;
    int64_t idx = M->cand[i].index;
    sb->n = 0;
    mbpo__sb_printf(sb, "{\"index\": %lld, \"id\": ", (long long)idx); mbpo__sb_json(sb, s->id);
    mbpo__sb_puts(sb, ", \"image\": "); mbpo__sb_json(sb, s->image_files[0]);
    mbpo__sb_puts(sb, ", \"adv_image\": "); mbpo__sb_json(sb, name);
    mbpo__sb_puts(sb, ", \"question\": "); mbpo__sb_json(sb, s->question);
    mbpo__sb_puts(sb, ", \"chosen\": "); mbpo__sb_json(sb, s->answer);
    mbpo__sb_puts(sb, ", \"rejected\": "); mbpo__sb_json(sb, rejected);
    mbpo__sb_puts(sb, ", \"iig_chosen\": "); mbpo__sb_num(sb, M->cand[i].iig);   /* null if non-finite */
    mbpo__sb_puts(sb, ", \"iig_chosen_mean\": "); mbpo__sb_num(sb, M->cand[i].iig_mean);
    mbpo__sb_puts(sb, ", \"iig_rejected\": "); mbpo__sb_num(sb, rej_sum);
    mbpo__sb_puts(sb, ", \"iig_rejected_mean\": "); mbpo__sb_num(sb, rej_mean);
    mbpo__sb_printf(sb, ", \"rejected_tries\": %d, \"negatives\": \"%s\", \"pgd_iters\": %d, \"pgd_step\": %.9g, \"pgd_eps\": %.9g, "
                    "\"pgd_random_start\": %d, \"temperature\": %.9g, \"seed\": %llu",
                    tries + 1, o->random_negatives ? "rand" : "pgd", o->pgd.iters, o->pgd.step, o->pgd.eps,
                    o->pgd.random_start, o->temperature, (unsigned long long)o->seed);
    mbpo__sb_puts(sb, ", \"prompt\": "); mbpo__sb_json(sb, s->question);
    mbpo__sb_puts(sb, ", \"images\": ["); mbpo__sb_json(sb, s->image_files[0]); mbpo__sb_puts(sb, "]");
    if (s->system) { mbpo__sb_puts(sb, ", \"system\": "); mbpo__sb_json(sb, s->system); }
    mbpo__sb_puts(sb, "}");
    M->path = M->p_off;
    return !sb->failed;
}

/* Selected sample i: its negative image, then the rejected response sampled on it (up to
   max_tries until it is non-empty and differs from the chosen one), then its IIG on the clean
   image; the pair's line (for offline.jsonl), or the reason (for skipped.jsonl), in M->sb. */
static int mbpo__mine_pair(mbpo__mine *M, int64_t i) {
    const mbpo_mine_opts *o = M->o;
    int64_t idx = M->cand[i].index;
    const mbpo_sample *s = &M->ds.samples[idx];
    mbpo__img im, adv;
    mbpo_rng rng;
    mbpo_gen_opts go;
    char name[64], *rejected = NULL;
    double rej_sum = 0, rej_mean = 0;
    int tries, good, max_tries = o->max_tries > 0 ? o->max_tries : 1;
    memset(&adv, 0, sizeof adv);
    if (!mbpo__img_load(&im, &M->e.pp, s->images[0])) return 0;
    snprintf(name, sizeof name, "adv/%lld.png", (long long)idx);   /* relative to out_dir */
    good = mbpo__mine_negative(M, s, idx, &im, name, &adv);
    memset(&go, 0, sizeof go);
    go.max_new_tokens = o->max_new_tokens; go.temperature = o->temperature; go.top_p = o->top_p;
    go.stop_ids = M->e.stop; go.n_stop = M->e.n_stop;
    mbpo_rng_seed(&rng, mbpo__sample_seed(o->seed, idx, 2));
    for (tries = 0; good && tries < max_tries; tries++) {
        mbpo_free(rejected);
        if (!(rejected = mbpo__respond(&M->e, s, &adv, &go, &rng))) { good = 0; break; }
        if (rejected[0] && strcmp(rejected, s->answer) != 0) break;
    }
    if (good && tries == max_tries) tries--;   /* the last try's index */
    if (good && (!rejected[0] || strcmp(rejected, s->answer) == 0)) {   /* no usable negative: say so */
        mbpo__sb *sb = &M->sb;
        sb->n = 0;
        mbpo__sb_printf(sb, "{\"index\": %lld, \"id\": ", (long long)idx); mbpo__sb_json(sb, s->id);
        mbpo__sb_printf(sb, ", \"why\": \"%s after %d tries\"}", rejected[0] ? "rejected equals chosen" : "empty rejected", tries + 1);
        M->path = M->p_skip;
        good = !sb->failed;
    } else if (good) {   /* IIG of the rejected response on the clean image (the chosen one's is cand[i]) */
        mbpo__img_free(&im);
        good = mbpo__img_load(&im, &M->e.pp, s->images[0]) && mbpo__sample_iig(&M->e, s, &im, rejected, &rej_sum, &rej_mean) &&
               mbpo__mine_pair_line(M, s, i, name, rejected, tries, rej_sum, rej_mean);
    }
    mbpo_free(rejected);
    mbpo__img_free(&im); mbpo__img_free(&adv);
    return good;
}

/* PGD (or noise) and the rejected response of every selected sample not done yet. */
static int mbpo__mine_pairs(mbpo__mine *M) {
    int64_t i, k, n_todo = 0, *todo;
    int W = M->comm->world;
    double t0 = mbpo_now();
    if (!mbpo__jsonl_done(M->p_off, M->off_done, M->ds.n) || !mbpo__jsonl_done(M->p_skip, M->off_done, M->ds.n)) return 0;
    if (M->lead && !mbpo__file_exists(M->p_off) && !mbpo_write_file_atomic(M->p_off, "", 0)) return 0;   /* even with no pairs */
    if (!(todo = (int64_t *)mbpo__alloc((size_t)(M->n_sel + 1) * sizeof(int64_t)))) return 0;
    for (i = 0; i < M->n_sel; i++) if (!M->off_done[M->cand[i].index]) todo[n_todo++] = M->cand[i].index;
    if (!mbpo__comm_same(M->comm, todo, (size_t)n_todo * sizeof(int64_t), "ranking or offline.jsonl (the pairs still to do)")) {
        mbpo_free(todo);
        return 0;
    }
    for (i = 0, n_todo = 0; i < M->n_sel; i++) if (!M->off_done[M->cand[i].index]) todo[n_todo++] = i;
    mbpo__prog_start(&M->pg, M->o->log, M->o->quiet, "mine: pairs");
    M->started = 1;
    for (k = 0; k < n_todo; k += W) {   /* a round: pair k + r on rank r */
        M->path = NULL; M->sb.n = 0;
        if (k + M->comm->rank < n_todo) {
            if (!mbpo__mine_pair(M, todo[k + M->comm->rank])) { mbpo_free(todo); return 0; }
            M->n_pairs_run++;
        }
        if (!mbpo__mine_round(M)) { mbpo_free(todo); return 0; }
        if (M->n_sel - n_todo + k + W < M->n_sel) mbpo__prog_tick(&M->pg, M->n_sel - n_todo + k + W, M->n_sel);
    }
    mbpo_free(todo);
    if (M->n_sel) mbpo__prog_tick(&M->pg, M->n_sel, M->n_sel);
    M->t_pairs = mbpo_now() - t0;
    return mbpo_comm_barrier(M->comm);
}

static void mbpo__mine_free(mbpo__mine *M) {
    mbpo_free(M->sb.s); mbpo_free(M->p_iig); mbpo_free(M->p_off); mbpo_free(M->p_on); mbpo_free(M->p_adv); mbpo_free(M->p_skip);
    mbpo_free(M->iig_done); mbpo_free(M->off_done); mbpo_free(M->cand); mbpo_free(M->seen);
    mbpo_dataset_free(&M->ds);
    if (M->env_loaded) mbpo__env_free(&M->e);
}

MBPODEF int mbpo_mine(const mbpo_mine_opts *o) {
    mbpo__mine M;
    int ok = mbpo__mine_setup(&M, o) && mbpo__mine_online_set(&M) && mbpo__mine_iig(&M) && mbpo__mine_rank(&M) &&
             mbpo__mine_pairs(&M) && (!M.lead || mbpo_export(o->out_dir, o->image_root, NULL));
    o = M.o;   /* (ranks > 0: without a log) */
    if (ok && o->log && !o->quiet) {
        fprintf(o->log, "mine: %lld pairs in %s, online set in %s; for TRL, LLaMA-Factory and EasyR1 in %s/export\n",
                (long long)M.n_sel, M.p_off, M.p_on, o->out_dir);
        fprintf(o->log, "mine: timing iig_samples %lld iig_s %.3f pairs %lld pairs_s %.3f\n", (long long)M.n_iig_run, M.t_iig,
                (long long)M.n_pairs_run, M.t_pairs);
    }
    if (!ok) mbpo__prog_break(&M.pg);
    if (!ok && M.started)   /* a full disk, an unreadable image, ...: what is written stays valid */
        mbpo__fail_suffix("\nmining stopped; the samples done so far are kept in %s, and once the cause is fixed the same "
                          "command continues from them", o->out_dir);
    if (!ok && M.comm && M.comm->world > 1) mbpo_comm_abort(M.comm, mbpo_failure_reason());   /* every rank ends */
    mbpo__mine_free(&M);
    return ok;
}

/* ------------------------------------------------------------------ 5. runs: scoring */

MBPODEF void mbpo_score_defaults(mbpo_score_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 64;
    o->processor = MBPO_PROCESSOR_AUTO;
}
MBPODEF int mbpo_score(const mbpo_score_opts *o, mbpo_score_summary *sum) {
    mbpo__env e;
    mbpo_dataset ds;
    mbpo__sb sb = { NULL, 0, 0, 0 };
    mbpo_gen_opts go;
    mbpo_rng rng;
    int64_t i;
    double iig_total = 0;
    mbpo__prog pg;
    int ok = 0;
    mbpo__prog_start(&pg, o->log, o->quiet, "score:");
    memset(sum, 0, sizeof *sum);
    memset(&ds, 0, sizeof ds);
    {   /* the output's directory must take a file now, not after the whole set is scored */
        size_t n = strlen(o->out_path);
        char *dir = (char *)mbpo__alloc(n + 2);
        const char *names[3] = { NULL, ".mbpo-probe", NULL };
        int good;
        if (!dir) return 0;
        memcpy(dir, o->out_path, n + 1);
        while (n > 0 && dir[n - 1] != '/') n--;
        names[0] = o->out_path + n;   /* the file's name: a killed run's temporary is <name>.tmp.<pid> */
        while (n > 1 && dir[n - 1] == '/') n--;   /* "a/b/x" -> "a/b", "/x" -> "/" */
        if (n == 0) { dir[0] = '.'; n = 1; }
        dir[n] = 0;
        good = mbpo__out_dir(dir);
        if (good) mbpo__clean_stale(dir, names, 0);
        mbpo_free(dir);
        if (!good) return 0;
    }
    if (!mbpo__env_load(&e, o->model_dir, o->processor, o->device)) return 0;
    if (!mbpo__infer_plan(&e, o->device, o->max_new_tokens, 0, o->log, o->quiet, "score") ||
        !mbpo_dataset_load(&ds, o->data, o->image_root, o->strict, o->log)) goto end;
    if (ds.n == 0) {
        mbpo__fail("%s: no usable sample (%lld bad records skipped)", o->data, (long long)ds.n_bad);
        goto end;
    }
    memset(&go, 0, sizeof go);
    go.max_new_tokens = o->max_new_tokens; go.temperature = 0; go.top_p = 1;   /* greedy */
    go.stop_ids = e.stop; go.n_stop = e.n_stop;
    mbpo_rng_seed(&rng, 0);
    for (i = 0; i < ds.n; i++) {
        const mbpo_sample *s = &ds.samples[i];
        mbpo__img im;
        int have_img = s->n_images == 1, correct = -1;
        double iig = 0, iig_mean = 0;
        char *resp;
        if (s->n_images > 1) {   /* IIG and PGD take one image; such samples are reported and left out */
            if (o->log) fprintf(o->log, "score: sample %s has %d images; skipped\n", s->id, s->n_images);
            continue;
        }
        memset(&im, 0, sizeof im);
        if (have_img && !mbpo__img_load(&im, &e.pp, s->images[0])) goto end;
        if (have_img && !mbpo__sample_iig(&e, s, &im, s->answer, &iig, &iig_mean)) { mbpo__img_free(&im); goto end; }
        resp = mbpo__respond(&e, s, have_img ? &im : NULL, &go, &rng);
        mbpo__img_free(&im);
        if (!resp) goto end;
        if (s->kind != MBPO_Q_OPEN) correct = mbpo_verify(s, resp);
        sum->n++;
        if (s->kind == MBPO_Q_YESNO) { sum->n_yesno++; sum->yesno_correct += correct; }
        else if (s->kind == MBPO_Q_MC) { sum->n_mc++; sum->mc_correct += correct; }
        else sum->n_open++;
        if (have_img) { sum->n_iig++; iig_total += iig_mean; }
        mbpo__sb_printf(&sb, "{\"index\": %lld, \"id\": ", (long long)i); mbpo__sb_json(&sb, s->id);
        mbpo__sb_printf(&sb, ", \"kind\": \"%s\"", s->kind == MBPO_Q_YESNO ? "yesno" : s->kind == MBPO_Q_MC ? "mc" : "open");
        if (have_img) {   /* null if non-finite (a diverged model) */
            mbpo__sb_puts(&sb, ", \"iig\": "); mbpo__sb_num(&sb, iig);
            mbpo__sb_puts(&sb, ", \"iig_mean\": "); mbpo__sb_num(&sb, iig_mean);
        }
        mbpo__sb_puts(&sb, ", \"question\": "); mbpo__sb_json(&sb, s->question);
        mbpo__sb_puts(&sb, ", \"answer\": "); mbpo__sb_json(&sb, s->answer);
        mbpo__sb_puts(&sb, ", \"response\": "); mbpo__sb_json(&sb, resp);
        if (correct >= 0) mbpo__sb_printf(&sb, ", \"correct\": %s", correct ? "true" : "false");
        mbpo__sb_puts(&sb, "}\n");
        mbpo_free(resp);
        if (i + 1 < ds.n) mbpo__prog_tick(&pg, i + 1, ds.n);
    }
    mbpo__prog_tick(&pg, ds.n, ds.n);
    sum->iig_mean = sum->n_iig ? iig_total / (double)sum->n_iig : 0;
    mbpo__sb_printf(&sb, "{\"summary\": true, \"n\": %lld, \"yesno\": %lld, \"yesno_correct\": %lld, \"mc\": %lld, "
                    "\"mc_correct\": %lld, \"open\": %lld, \"iig_mean\": ", (long long)sum->n, (long long)sum->n_yesno,
                    (long long)sum->yesno_correct, (long long)sum->n_mc, (long long)sum->mc_correct, (long long)sum->n_open);
    mbpo__sb_num(&sb, sum->iig_mean);
    mbpo__sb_puts(&sb, "}\n");
    if (sb.failed || !mbpo_write_file_atomic(o->out_path, sb.s ? sb.s : "", sb.n)) goto end;
    if (o->log && !o->quiet)
        fprintf(o->log, "score: %lld samples; yes/no %lld/%lld, multiple choice %lld/%lld, open %lld; mean IIG per token %.4f -> %s\n",
                (long long)sum->n, (long long)sum->yesno_correct, (long long)sum->n_yesno, (long long)sum->mc_correct,
                (long long)sum->n_mc, (long long)sum->n_open, sum->iig_mean, o->out_path);
    ok = 1;
end:
    if (!ok) mbpo__prog_break(&pg);
    mbpo_free(sb.s);
    mbpo_dataset_free(&ds);
    mbpo__env_free(&e);
    return ok;
}

/* ------------------------------------------------------------------ 5. runs: training */

static const char *const mbpo__mode_names[5] = { "mbpo", "offline", "offline-rand", "online", "sft" };
MBPODEF const char *mbpo_mode_name(mbpo_mode m) { return (int)m >= 0 && (int)m < 5 ? mbpo__mode_names[m] : "?"; }
MBPODEF int mbpo_mode_parse(const char *name, mbpo_mode *m) {
    int k;
    for (k = 0; k < 5; k++) if (!strcmp(name, mbpo__mode_names[k])) { *m = (mbpo_mode)k; return 1; }
    return mbpo__fail("unknown mode '%s' (mbpo, offline, offline-rand, online, sft)", name);
}
MBPODEF void mbpo_train_defaults(mbpo_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->mode = MBPO_MODE_MBPO;
    mbpo_adamw_defaults(&o->adam);
    o->beta = 0.04; o->clip_eps = 0.2; o->updates_per_batch = 1;
    o->G = 8; o->temperature = 1.0; o->max_new_tokens = 64;
    o->batch = 4; o->grad_accum = 1;
    o->steps = 100; o->save_every = 0; o->iig_every = 10; o->max_bad_steps = 10;
    o->r_chosen = 2.0f; o->r_rejected = 0.0f;
    o->seed = 1234;
    o->save_dtype = MBPO_DT_F32;
    o->processor = MBPO_PROCESSOR_AUTO;
    o->plan_image = 448; o->plan_text = 64;
}

/* A packed batch under construction: sequences (ids, targets) and their images. Each array
   grows by doubling; sizes are counted in elements. */
typedef struct {
    int32_t *ids; uint8_t *target; int64_t *offs, *ref_offs; int32_t *refs, *grid; float *pv;
    int64_t T, P, pix, cap_T, cap_P, n_seqs, n_images, cap_seqs, cap_images;
} mbpo__pack;
static void mbpo__pack_free(mbpo__pack *p) {
    mbpo_free(p->ids); mbpo_free(p->target); mbpo_free(p->offs); mbpo_free(p->ref_offs); mbpo_free(p->refs);
    mbpo_free(p->grid); mbpo_free(p->pv);
    memset(p, 0, sizeof *p);
}
/* Make room for `need` elements of `size` bytes in *p (holding `used`), doubling *cap. */
static int mbpo__grow(void **p, int64_t used, int64_t need, int64_t *cap, size_t size) {
    void *q;
    int64_t c = *cap > 0 ? *cap : 16;
    if (need <= *cap) return 1;
    while (c < need) c *= 2;
    if (!(q = mbpo__calloc((size_t)c, size))) return 0;
    if (used) memcpy(q, *p, (size_t)used * size);
    mbpo_free(*p);
    *p = q;
    *cap = c;
    return 1;
}
static int mbpo__pack_init(mbpo__pack *p, int64_t pix) {
    memset(p, 0, sizeof *p);
    p->pix = pix;
    p->cap_seqs = 16;   /* offs and ref_offs (zeroed: both start at 0) and refs share this capacity */
    p->offs = (int64_t *)mbpo__calloc(16, sizeof(int64_t));
    p->ref_offs = (int64_t *)mbpo__calloc(16, sizeof(int64_t));
    p->refs = (int32_t *)mbpo__calloc(16, sizeof(int32_t));
    return p->offs && p->ref_offs && p->refs;
}
/* Add an image; returns its index, or -1. */
static int mbpo__pack_image(mbpo__pack *p, const mbpo__img *im) {
    int64_t cap = p->cap_images;
    if (!mbpo__grow((void **)&p->grid, p->n_images * 3, (p->n_images + 1) * 3, &cap, sizeof(int32_t))) return -1;
    p->cap_images = cap;
    if (!mbpo__grow((void **)&p->pv, p->P * p->pix, (p->P + im->P) * p->pix, &p->cap_P, sizeof(float))) return -1;
    memcpy(p->grid + 3 * p->n_images, im->grid, 3 * sizeof(int32_t));
    memcpy(p->pv + p->P * p->pix, im->pv, (size_t)(im->P * p->pix) * sizeof(float));
    p->P += im->P;
    return (int)p->n_images++;
}
/* Add a sequence of n tokens that uses image `image` (or none: -1). */
static int mbpo__pack_seq(mbpo__pack *p, const int32_t *ids, const uint8_t *target, int64_t n, int image) {
    int64_t cap_t = p->cap_T, cap_s = p->cap_seqs;
    if (!mbpo__grow((void **)&p->ids, p->T, p->T + n, &cap_t, sizeof(int32_t))) return 0;
    cap_t = p->cap_T;
    if (!mbpo__grow((void **)&p->target, p->T, p->T + n, &cap_t, 1)) return 0;
    p->cap_T = cap_t;
    if (p->n_seqs + 2 > p->cap_seqs) {   /* offs and ref_offs hold n_seqs + 1, refs n_seqs */
        if (!mbpo__grow((void **)&p->offs, p->n_seqs + 1, p->n_seqs + 2, &cap_s, sizeof(int64_t))) return 0;
        cap_s = p->cap_seqs;
        if (!mbpo__grow((void **)&p->ref_offs, p->n_seqs + 1, p->n_seqs + 2, &cap_s, sizeof(int64_t))) return 0;
        cap_s = p->cap_seqs;
        if (!mbpo__grow((void **)&p->refs, p->n_seqs, p->n_seqs + 2, &cap_s, sizeof(int32_t))) return 0;
        p->cap_seqs = cap_s;
    }
    memcpy(p->ids + p->T, ids, (size_t)n * sizeof(int32_t));
    memcpy(p->target + p->T, target, (size_t)n);
    p->T += n;
    p->offs[p->n_seqs + 1] = p->T;
    p->ref_offs[p->n_seqs + 1] = p->ref_offs[p->n_seqs] + (image >= 0);
    if (image >= 0) p->refs[p->ref_offs[p->n_seqs]] = image;
    p->n_seqs++;
    return 1;
}
static void mbpo__pack_batch(const mbpo__pack *p, mbpo_batch *b) {
    memset(b, 0, sizeof *b);
    b->n_seqs = (int)p->n_seqs; b->ids = p->ids; b->seq_offsets = p->offs; b->target = p->target;
    b->n_images = (int)p->n_images; b->grid_thw = p->grid; b->pixel_values = p->pv;
    b->image_refs = p->refs; b->image_ref_offsets = p->ref_offs;
}

/* One item of the training pool: an offline pair, an online prompt or an SFT sample. */
typedef struct { int kind; mbpo_sample s; char *rejected, *adv_image; const char *file; int64_t line; } mbpo__item;   /* kind 0 offline, 1 online, 2 sft */
static void mbpo__items_free(mbpo__item *it, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++) { mbpo__sample_clear(&it[i].s); mbpo_free(it[i].rejected); mbpo_free(it[i].adv_image); }
    mbpo_free(it);
}
static char *mbpo__json_str(const mbpo_json *j, const char *key) {
    const mbpo_json *v = mbpo_json_get(j, key);
    return v && v->type == MBPO_JSON_STRING ? mbpo__strndup(v->string, v->len) : NULL;
}
/* Read offline.jsonl (kind 0) or online.jsonl (kind 1) lines into items. */
static int mbpo__read_set(const char *path, int kind, const char *image_root, mbpo__item **items, int64_t *n, int64_t *cap) {
    size_t len = 0;
    char *text = mbpo_read_file(path, &len), *line, *end;
    int64_t lineno = 0;
    if (!text) return 0;
    for (line = text, end = text + len; line < end; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(end - line));
        size_t k = eol ? (size_t)(eol - line) : (size_t)(end - line);
        lineno++;
        if (k) {
            mbpo_json *j = mbpo__json_parse_line(line, k, path, lineno);
            mbpo__item it;
            char *img;
            memset(&it, 0, sizeof it);
            if (!j) { mbpo_free(text); return 0; }
            it.kind = kind;
            it.s.id = mbpo__json_str(j, "id");
            it.s.question = mbpo__json_str(j, "question");
            it.s.system = mbpo__json_str(j, "system");
            it.s.answer = mbpo__json_str(j, kind == 0 ? "chosen" : "answer");
            if (kind == 0) { it.rejected = mbpo__json_str(j, "rejected"); it.adv_image = mbpo__json_str(j, "adv_image"); }
            img = mbpo__json_str(j, "image");
            it.file = path; it.line = lineno;
            if (kind == 1) {   /* a label the verifier can match, or the set is refused */
                const mbpo_json *kd = mbpo_json_get(j, "kind"), *lb = mbpo_json_get(j, "label");
                int yesno = kd && kd->type == MBPO_JSON_STRING && !strcmp(kd->string, "yesno");
                int mc = kd && kd->type == MBPO_JSON_STRING && !strcmp(kd->string, "mc");
                it.s.kind = yesno ? MBPO_Q_YESNO : MBPO_Q_MC;
                it.s.label = lb && lb->type == MBPO_JSON_STRING && lb->len == 1 ? lb->string[0] : 0;
                if ((!yesno && !mc) || (yesno && it.s.label != 'Y' && it.s.label != 'N')) it.s.label = 0;
                if (mc && it.s.question) {
                    const char *opt_text[26];
                    size_t opt_len[26];
                    int n_opt = mbpo__parse_options(it.s.question, opt_text, opt_len);
                    if (it.s.label < 'A' || it.s.label >= 'A' + n_opt) it.s.label = 0;
                }
            }
            mbpo_json_free(j);
            if (img) {
                it.s.images = (char **)mbpo__calloc(2, sizeof(char *));
                if (it.s.images) {
                    it.s.images[0] = image_root && image_root[0] && img[0] != '/' ? mbpo__path_join(image_root, img) : mbpo__strdup(img);
                    it.s.n_images = 1;
                }
                mbpo_free(img);
            }
            if (!it.s.id || !it.s.question || !it.s.answer || (kind == 0 && !it.rejected) || (kind == 1 && !it.s.label) ||
                (kind == 0 && !img) || (it.s.images && !it.s.images[0]) || mbpo_chat_count_images(it.s.question) > it.s.n_images) {
                mbpo__sample_clear(&it.s);
                mbpo_free(it.rejected); mbpo_free(it.adv_image);
                mbpo_free(text);
                return mbpo__fail("%s:%lld: needs id, %squestion (with at most one <image>) and %s", path, (long long)lineno,
                                  kind == 0 ? "image, " : "", kind == 0 ? "chosen and rejected" :
                                  "answer, kind (yesno or mc) and a label the verifier can match (Y/N, or an option letter)");
            }
            if (!mbpo__grow((void **)items, *n, *n + 1, cap, sizeof(mbpo__item))) { mbpo_free(text); return 0; }
            (*items)[(*n)++] = it;
        }
        line = eol ? eol + 1 : end;
    }
    mbpo_free(text);
    return 1;
}

MBPODEF int mbpo_pairs_load(mbpo_pairs *set, const char *path, const char *image_root) {
    mbpo__item *items = NULL;
    int64_t n = 0, cap = 0, i;
    memset(set, 0, sizeof *set);
    if (!mbpo__read_set(path, 0, image_root, &items, &n, &cap)) { if (items) mbpo__items_free(items, n); return 0; }
    if (n && !(set->pairs = (mbpo_pair *)mbpo__calloc((size_t)n, sizeof(mbpo_pair)))) { mbpo__items_free(items, n); return 0; }
    for (i = 0; i < n; i++) {   /* the items' strings move to the pairs */
        set->pairs[i].s = items[i].s; set->pairs[i].rejected = items[i].rejected;
        set->pairs[i].adv_image = items[i].adv_image; set->pairs[i].line = items[i].line;
    }
    set->n = n;
    mbpo_free(items);
    return 1;
}
MBPODEF void mbpo_pairs_free(mbpo_pairs *set) {
    int64_t i;
    for (i = 0; i < set->n; i++) { mbpo__sample_clear(&set->pairs[i].s); mbpo_free(set->pairs[i].rejected); mbpo_free(set->pairs[i].adv_image); }
    mbpo_free(set->pairs);
    memset(set, 0, sizeof *set);
}
MBPODEF int mbpo_pairs_iig(const char *model_dir, const char *pairs, const char *image_root, double *iig_chosen, double *iig_rejected) {
    mbpo__env e;
    mbpo_pairs set;
    int64_t i;
    double sc = 0, sr = 0, mc = 0, mr = 0;
    int ok = 0;
    *iig_chosen = *iig_rejected = 0;
    if (!mbpo__env_load(&e, model_dir, MBPO_PROCESSOR_AUTO, MBPO_DEVICE_CPU)) return 0;
    if (!mbpo_pairs_load(&set, pairs, image_root)) goto end;
    for (i = 0; i < set.n; i++) {
        mbpo__img im;
        if (!mbpo__img_load(&im, &e.pp, set.pairs[i].s.images[0])) goto end;
        if (!mbpo__sample_iig(&e, &set.pairs[i].s, &im, set.pairs[i].s.answer, &sc, &mc) ||
            !mbpo__sample_iig(&e, &set.pairs[i].s, &im, set.pairs[i].rejected, &sr, &mr)) { mbpo__img_free(&im); goto end; }
        mbpo__img_free(&im);
        *iig_chosen += mc; *iig_rejected += mr;
    }
    if (set.n) { *iig_chosen /= (double)set.n; *iig_rejected /= (double)set.n; }
    ok = 1;
end:
    mbpo_pairs_free(&set);
    mbpo__env_free(&e);
    return ok;
}

/* The state file of a checkpoint directory: mbpo_state.json, or trainer_state.json in those
   written before it was renamed (it never had Hugging Face's TrainerState format). NULL when
   neither exists: then the directory is not a whole checkpoint. */
static char *mbpo__checkpoint_state(const char *dir) {
    static const char *const names[2] = { "mbpo_state.json", "trainer_state.json" };
    int k;
    for (k = 0; k < 2; k++) {
        char *p = mbpo__path_join(dir, names[k]);
        if (p && mbpo__file_exists(p)) return p;
        mbpo_free(p);
    }
    return NULL;
}
static int mbpo__checkpoint_whole(const char *dir) {
    char *p = mbpo__checkpoint_state(dir);
    mbpo_free(p);
    return p != NULL;
}
/* The newest complete checkpoint in out_dir: the largest N of a directory checkpoint-N that
   holds its state file (0 when none). */
static int64_t mbpo__latest_checkpoint(const char *out_dir) {
    int64_t best = 0;
#if !defined(_WIN32)
    DIR *d = opendir(out_dir);
    struct dirent *ent;
    if (!d) return 0;
    while ((ent = readdir(d)) != NULL) {
        char *endp, *p;
        long long step;
        if (strncmp(ent->d_name, "checkpoint-", 11) != 0) continue;
        step = strtoll(ent->d_name + 11, &endp, 10);
        if (*endp || step <= best) continue;   /* "checkpoint-N.tmp" is not one */
        if ((p = mbpo__path_join(out_dir, ent->d_name)) != NULL && mbpo__checkpoint_whole(p)) best = step;
        mbpo_free(p);
    }
    closedir(d);
#else
    (void)out_dir;
#endif
    return best;
}
/* Remove the checkpoint-<step>.tmp directories (and stale temporary files) a killed run left. */
static void mbpo__clean_checkpoint_tmp(const char *out_dir) {
#if !defined(_WIN32)
    DIR *d = opendir(out_dir);
    struct dirent *ent;
    if (!d) return;
    while ((ent = readdir(d)) != NULL) {
        char *endp, *p;
        size_t n = strlen(ent->d_name);
        if (strncmp(ent->d_name, "checkpoint-", 11) != 0 || n < 16 || strcmp(ent->d_name + n - 4, ".tmp") != 0) continue;
        (void)strtoll(ent->d_name + 11, &endp, 10);
        if (endp != ent->d_name + n - 4 || endp == ent->d_name + 11) continue;
        if ((p = mbpo__path_join(out_dir, ent->d_name)) != NULL) mbpo__remove_flat_dir(p);
        mbpo_free(p);
    }
    closedir(d);
#endif
    {
        static const char *const train_files[] = { "metrics.jsonl", ".mbpo-probe", NULL };
        mbpo__clean_stale(out_dir, train_files, 0);
    }
}
/* checkpoint-<step>: a whole HF model folder (weights, config, the carried files), the Adam
   moments and mbpo_state.json (what a resume needs: step, Adam step, data position, seed,
   mode); built as checkpoint-<step>.tmp and renamed, so a directory by that name is always
   whole. weights_only leaves the moments out (the final model, --final-weights-only): such
   a checkpoint cannot be resumed from, and its state says so. */
static int mbpo__save_checkpoint(const mbpo_train_opts *o, const mbpo__env *env, const mbpo_adamw *opt, int64_t step,
                                 int64_t position, int weights_only) {
    char name[96], *dir = NULL, *tmp = NULL, *p = NULL, state[320];
    const mbpo_model *m = &env->model;
    mbpo_st_entry e[2];
    int ok = 0;
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    dir = mbpo__path_join(o->out_dir, name);
    snprintf(name, sizeof name, "checkpoint-%lld.tmp", (long long)step);
    tmp = mbpo__path_join(o->out_dir, name);
    if (!dir || !tmp) goto end;
    {   /* a checkpoint is something to resume from: never one with NaN or Inf in it */
        size_t i;
        for (i = 0; i < m->table.total_floats; i++)
            if (!isfinite(m->params[i])) {
                mbpo__fail("%s: refusing to write checkpoint-%lld: the weights hold a non-finite value after step %lld; the "
                           "earlier checkpoints are kept (lower --lr or --max-grad-norm)", o->out_dir, (long long)step, (long long)step);
                goto end;
            }
    }
    mbpo__remove_flat_dir(tmp);   /* a partial one from a kill or a full disk */
    if (!mbpo__mkdir(tmp) || !mbpo_model_save(m, tmp, o->save_dtype) || !mbpo__carry_model_files(o->model_dir, tmp, env)) goto end;
    if (!weights_only) {
        memset(e, 0, sizeof e);
        e[0].name = "adam_m"; e[1].name = "adam_v";
        e[0].dtype = e[1].dtype = MBPO_DT_F32; e[0].ndim = e[1].ndim = 1;
        e[0].shape[0] = e[1].shape[0] = (int64_t)opt->n; e[0].data = opt->m; e[1].data = opt->v;
        mbpo_free(p); p = mbpo__path_join(tmp, "optimizer.safetensors");
        if (!p || !mbpo_st_write(p, e, 2)) goto end;
    }
    snprintf(state, sizeof state, "{\"step\": %lld, \"adam_step\": %lld, \"position\": %lld, \"seed\": %llu, \"mode\": \"%s\", "
             "\"optimizer\": %s}\n", (long long)step, (long long)opt->step, (long long)position, (unsigned long long)o->seed,
             mbpo_mode_name(o->mode), weights_only ? "false" : "true");
    mbpo_free(p); p = mbpo__path_join(tmp, "mbpo_state.json");
    if (!p || !mbpo_write_file_atomic(p, state, strlen(state))) goto end;
    if (rename(tmp, dir) != 0) { mbpo__fail("%s: cannot rename into place (%s)", dir, strerror(errno)); goto end; }
    ok = 1;
end:
    if (!ok && tmp) mbpo__remove_flat_dir(tmp);   /* give the space back: a full disk is the likely cause */
    mbpo_free(dir); mbpo_free(tmp); mbpo_free(p);
    return ok;
}
/* --save-total-limit: keep the newest `keep` whole checkpoints, remove older ones. Each is
   first renamed to checkpoint-<step>.tmp (atomic), so a kill in the middle leaves only a
   .tmp directory, which the next run removes; the newest, which a resume needs, is never
   touched, and a partial (.tmp) one never counts as one of the kept. */
static void mbpo__rotate_checkpoints(const char *out_dir, int64_t keep) {
    int64_t newest = mbpo__latest_checkpoint(out_dir), k, n_kept = 0;
    if (keep <= 0 || newest <= 0) return;
    for (k = newest; k > 0; k--) {   /* newest first */
        char name[96], *p, *q;
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)k);
        if (!(p = mbpo__path_join(out_dir, name))) return;
        if (!mbpo__checkpoint_whole(p)) { mbpo_free(p); continue; }
        if (++n_kept > keep) {
            snprintf(name, sizeof name, "checkpoint-%lld.tmp", (long long)k);
            if ((q = mbpo__path_join(out_dir, name)) != NULL && rename(p, q) == 0) mbpo__remove_flat_dir(q);
            mbpo_free(q);
        }
        mbpo_free(p);
    }
}
/* Room on out_dir's filesystem for one checkpoint: weights at the save dtype, two f32 Adam
   moments, the carried files and 1 MB for the rest. */
static int mbpo__room_for_checkpoint(const mbpo_train_opts *o, size_t n_floats) {
    double wbytes = o->save_dtype == MBPO_DT_F32 ? 4 : 2, floats = (double)n_floats, extra = 1e6 + mbpo__carried_bytes(o->model_dir);
    double have = mbpo__free_bytes(o->out_dir), need;
    need = floats * (wbytes + 8) + extra;
    if (have < 0 || have >= need) return 1;   /* unknown counts as enough */
    return mbpo__fail("%s: a checkpoint needs about %.0f MB (weights, Adam moments, tokenizer) and the filesystem has %.0f MB "
                      "free; free some space or choose another --out%s", o->out_dir, need / 1e6, have / 1e6,
                      wbytes == 4 && floats * 10 + extra <= have ? " (or save bf16 weights: --save-dtype bf16)" : "");
}
static int mbpo__load_checkpoint(const mbpo_train_opts *o, mbpo_model *m, mbpo_adamw *opt, int64_t step, int64_t *position) {
    char name[96], *dir, *p = NULL;
    mbpo_model back;
    mbpo_st st;
    mbpo_json *js = NULL;
    int ok = 0;
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    if (!(dir = mbpo__path_join(o->out_dir, name))) return 0;
    p = mbpo__checkpoint_state(dir);
    if (!p || !(js = mbpo_json_parse_file(p))) goto end;
    {
        const mbpo_json *a = mbpo_json_get(js, "adam_step"), *b = mbpo_json_get(js, "position");
        const mbpo_json *sd = mbpo_json_get(js, "seed"), *md = mbpo_json_get(js, "mode");
        const mbpo_json *op = mbpo_json_get(js, "optimizer");
        if (!a || !a->is_int || !b || !b->is_int) { mbpo__fail("%s: no adam_step / position", p); goto end; }
        if (op && op->type == MBPO_JSON_FALSE) {
            mbpo__fail("%s: checkpoint-%lld holds the final weights without optimizer state (--final-weights-only); training "
                       "cannot continue from it: start a new --out with --model %s", p, (long long)step, dir);
            goto end;
        }
        if (!sd || !sd->is_int || (uint64_t)sd->integer != o->seed || !md || md->type != MBPO_JSON_STRING ||
            strcmp(md->string, mbpo_mode_name(o->mode)) != 0) {
            mbpo__fail("%s: written by a run with another seed or mode; resume with the same arguments or use a new --out", p);
            goto end;
        }
        opt->step = a->integer; *position = b->integer;
    }
    mbpo_free(p);
    p = NULL;
    if (!mbpo_model_load(&back, dir)) goto end;
    if (back.table.total_floats != m->table.total_floats) { mbpo_model_free(&back); mbpo__fail("%s: another model", dir); goto end; }
    memcpy(m->params, back.params, m->table.total_floats * sizeof(float));
    mbpo_model_params_changed(m);
    mbpo_model_free(&back);
    p = mbpo__path_join(dir, "optimizer.safetensors");
    if (!p || !mbpo_st_open(&st, p)) goto end;
    {
        const mbpo_st_tensor *tm = mbpo_st_find(&st, "adam_m"), *tv = mbpo_st_find(&st, "adam_v");
        int good = tm && tv && (size_t)tm->numel == opt->n && (size_t)tv->numel == opt->n &&
                   mbpo_st_read_f32(&st, tm, opt->m) && mbpo_st_read_f32(&st, tv, opt->v);
        mbpo_st_close(&st);
        if (!good) { mbpo__fail("%s: optimizer state does not match the model", p); goto end; }
    }
    ok = 1;
end:
    mbpo_json_free(js);
    mbpo_free(dir); mbpo_free(p);
    return ok;
}

/* The item at a position of the stream: epoch e = position / n visits the pool in the order
   of a Fisher-Yates shuffle seeded by (seed, e). */
static int64_t mbpo__stream_item(uint64_t seed, int64_t n, int64_t position, int64_t *perm, int64_t *perm_epoch) {
    int64_t e = position / n, i;
    if (*perm_epoch != e) {
        mbpo_rng r;
        mbpo_rng_seed(&r, mbpo__sample_seed(seed, e, 3));
        for (i = 0; i < n; i++) perm[i] = i;
        for (i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(mbpo_rng_u64(&r) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j]; perm[j] = t;
        }
        *perm_epoch = e;
    }
    return perm[position % n];
}

/* One micro-batch of a step: its packed sequences, groups and advantages, and the log-probs
   of the reference (lref) and of the policy that sampled it (lold). */
typedef struct {
    mbpo__pack pk;
    mbpo_batch b;
    int *groups;                     /* (batch + 1) response ranges of the groups */
    float *adv;                      /* (responses) */
    int64_t *resp, n_resp, N;
    float *lref, *lold, *lp, *dl;    /* (N) */
} mbpo__mb;
static void mbpo__mb_clear(mbpo__mb *M, int batch) {
    mbpo__pack_free(&M->pk);
    mbpo_free(M->resp); mbpo_free(M->lref); mbpo_free(M->lold); mbpo_free(M->lp); mbpo_free(M->dl);
    M->resp = NULL; M->lref = M->lold = M->lp = M->dl = NULL;
    M->n_resp = M->N = 0;
    if (M->groups) memset(M->groups, 0, (size_t)(batch + 1) * sizeof(int));
}
/* run.json of a training run. What may change when a run is continued: how often it saves and
   how many checkpoints it keeps, whether the final one holds optimizer state, how often it
   logs IIG, the non-finite-step guard, the image root, and --steps unless the schedule is
   cosine (whose learning rate at every step depends on the total). */
static int mbpo__train_record(const mbpo_train_opts *o, const mbpo_preproc *pp, int has_results, int exact) {
    static const char *const may_change[] = { "steps", "total_steps", "save_every", "save_total_limit", "final_weights_only", "iig_every",
                                              "max_bad_steps", "image_root", "moments", NULL };
    mbpo__record r;
    int ok;
    mbpo__rec_begin(&r, "mbpo-train");
    mbpo__rec_str(&r, "image_processor", pp->fast ? "fast" : "slow");
    if (o->device != MBPO_DEVICE_CPU) mbpo__rec_str(&r, "device", mbpo_device_name(o->device));   /* bf16 numerics */
    if (o->stream_moments) mbpo__rec_str(&r, "moments", "host");   /* where, not what: may change on a resume */
    if (exact) mbpo__rec_int(&r, "exact_accum", 1);   /* data parallel or --exact-accum: another order of the sums */
    mbpo__rec_str(&r, "mode", mbpo_mode_name(o->mode));
    mbpo__rec_num(&r, "lr", o->adam.lr); mbpo__rec_num(&r, "adam_beta1", o->adam.beta1); mbpo__rec_num(&r, "adam_beta2", o->adam.beta2);
    mbpo__rec_num(&r, "adam_eps", o->adam.eps); mbpo__rec_num(&r, "weight_decay", o->adam.weight_decay);
    mbpo__rec_num(&r, "max_grad_norm", o->adam.max_grad_norm);
    mbpo__rec_str(&r, "schedule", o->adam.schedule == MBPO_LR_COSINE ? "cosine" : o->adam.schedule == MBPO_LR_WARMUP ? "warmup" : "constant");
    mbpo__rec_int(&r, "warmup_steps", o->adam.warmup_steps); mbpo__rec_int(&r, "total_steps", o->adam.total_steps);
    mbpo__rec_num(&r, "beta", o->beta); mbpo__rec_num(&r, "clip_eps", o->clip_eps);
    mbpo__rec_int(&r, "updates_per_batch", o->updates_per_batch); mbpo__rec_int(&r, "G", o->G);
    mbpo__rec_num(&r, "temperature", o->temperature); mbpo__rec_int(&r, "max_new_tokens", o->max_new_tokens);
    mbpo__rec_int(&r, "batch", o->batch); mbpo__rec_int(&r, "grad_accum", o->grad_accum);
    mbpo__rec_int(&r, "steps", o->steps); mbpo__rec_int(&r, "save_every", o->save_every);
    mbpo__rec_int(&r, "save_total_limit", o->save_total_limit); mbpo__rec_int(&r, "final_weights_only", o->final_weights_only);
    mbpo__rec_int(&r, "iig_every", o->iig_every); mbpo__rec_int(&r, "max_bad_steps", o->max_bad_steps);
    mbpo__rec_num(&r, "r_chosen", o->r_chosen); mbpo__rec_num(&r, "r_rejected", o->r_rejected);
    mbpo__rec_u64(&r, "seed", o->seed); mbpo__rec_int(&r, "strict", o->strict);
    mbpo__rec_str(&r, "save_dtype", mbpo_dtype_name(o->save_dtype));
    mbpo__rec_str(&r, "image_root", o->image_root);
    ok = mbpo__rec_input(&r, "model", o->model_dir, 1) && mbpo__rec_input(&r, "offline", o->offline, 0) &&
         mbpo__rec_input(&r, "online", o->online, 0) && mbpo__rec_input(&r, "data", o->data, 0);
    if (!ok) { mbpo_free(r.b.s); return 0; }
    /* a cosine schedule's total_steps is --steps: then neither may change */
    return mbpo__rec_commit(&r, o->out_dir, has_results, o->adam.schedule == MBPO_LR_COSINE ? may_change + 2 : may_change, o->log);
}
/* ---- training as phases (llm.c's main: one state struct, short phase functions)

   mbpo_train = setup (the pool, the record, the models, the optimizer) -> resume -> per
   batch: collect (each micro-batch's prompts: offline pairs with their fixed rewards, online
   rollouts with verified ones) and score it (the reference's log-probs, logp_old) -> per
   update: loss and backward over the micro-batches, the optimizer step, the metrics line, the
   checkpoint when due. The functions run the same on every backend. */
typedef struct {
    double t0;                       /* when the batch began */
    double reward_on, n_on_r;        /* verified rewards of the online rollouts */
    double iig_c, iig_r, iig_cm, iig_rm;   /* Fig. 4: IIG of chosen / rejected (sums, means) */
    int64_t n_off, n_on, n_iig;      /* offline pairs, online prompts, pairs with an IIG */
    int do_iig;
    double t_rollout, t_ref;         /* seconds in rollouts + verification, in the reference and logp_old */
    int64_t rollout_tokens;          /* generated tokens */
} mbpo__batch_stats;
typedef struct {
    const mbpo_train_opts *o;
    mbpo__env e;
    mbpo_model ref;                  /* the frozen reference (KL), when use_ref */
    mbpo_adamw opt;
    mbpo__item *items;               /* the pool: prompts in the order of their files */
    int64_t n_items, cap_items;
    int64_t step, position;          /* updates done; prompts taken from the stream */
    int64_t *perm, perm_epoch;       /* the stream's shuffle of the pool, and its epoch */
    int64_t bad_run, first_step;     /* non-finite steps in a row; the step this process began at */
    mbpo__prog pg;
    char *p_metrics;
    mbpo__sb sb;
    mbpo__mb *mbs;                   /* (grad_accum) micro-batches of the current batch */
    const mbpo__item *bad_item;      /* the prompt being collected, named when it fails */
    int env_loaded, have_ref, use_ref;
    int stepping;                    /* in the loop: a failure names the checkpoint to resume from */
    mbpo__batch_stats bs;
    mbpo_train_opts oc;              /* o as this rank runs it (ranks > 0: no log) */
    mbpo__batch_stats *cbs;          /* where the micro-batch being collected counts (bs, or its dp_bs) */
    /* data parallelism (mbpo__dp_*): the world, and when dp the shard this rank owns: elements
       dp_off[rank] .. dp_off[rank + 1] of the parameters, whole blocks of dp_bs */
    mbpo_comm *comm;
    int dp, lead;                    /* dp: gradients summed per micro-batch in one global order; lead: rank 0 */
    int dp_sum, dp_fresh;            /* NCCL (mbpo__dp_sum_*): each rank sums its micro-batches, one reduce a step;
                                        the shards of master and moments are on the GPU */
    int64_t dp_block, dp_nb, *dp_off, *dp_boff, dp_slots, dp_rlen;
    float *dp_acc;                   /* (shard) the batch's gradient */
    double *dp_blk;                  /* (dp_nb) the norm's block sums */
    double *dp_rec;                  /* (world * dp_slots, dp_rlen) each micro-batch's loss terms */
    mbpo__batch_stats *dp_bs;        /* (world * dp_slots) each micro-batch's collection counts */
    /* the current update */
    double loss, kl, adv_abs, norm, t_update;
    int64_t n_tok, n_adv;
} mbpo__train;
/* The rollouts' cache: the run's own (mbpo__kv_keep), with G slots. */
static int mbpo__train_kv(mbpo__train *T, int64_t need) {
    return mbpo__kv_keep(&T->e.kv, &T->e.model, T->o->G, need);
}

/* The pool: an SFT --data set, or the offline and online sets the mode needs. */
static int mbpo__train_pool(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    int64_t i;
    if (o->mode == MBPO_MODE_SFT && o->data) {
        mbpo_dataset ds;
        if (!mbpo_dataset_load(&ds, o->data, o->image_root, o->strict, o->log)) return 0;
        for (i = 0; i < ds.n; i++) {
            mbpo__item it;
            if (ds.samples[i].n_images > 1) {
                if (o->log) fprintf(o->log, "train: sample %s has %d images; left out (one image per prompt)\n", ds.samples[i].id,
                                    ds.samples[i].n_images);
                continue;
            }
            memset(&it, 0, sizeof it);
            it.kind = 2; it.s = ds.samples[i]; it.file = o->data; it.line = ds.samples[i].record + 1;
            memset(&ds.samples[i], 0, sizeof ds.samples[i]);   /* the item owns the sample now */
            if (!mbpo__grow((void **)&T->items, T->n_items, T->n_items + 1, &T->cap_items, sizeof(mbpo__item))) {
                mbpo_dataset_free(&ds);
                return 0;
            }
            T->items[T->n_items++] = it;
        }
        mbpo_dataset_free(&ds);
    } else {
        int sft = o->mode == MBPO_MODE_SFT;
        int want_off = sft ? o->offline != NULL : o->mode != MBPO_MODE_ONLINE;
        int want_on = sft ? o->online != NULL : o->mode == MBPO_MODE_MBPO || o->mode == MBPO_MODE_ONLINE;
        if (sft && !want_off && !want_on) return mbpo__fail("mode sft needs --data, --offline or --online");
        if (want_off && !o->offline) return mbpo__fail("mode %s needs an offline set (--offline)", mbpo_mode_name(o->mode));
        if (want_on && !o->online) return mbpo__fail("mode %s needs an online set (--online)", mbpo_mode_name(o->mode));
        if (want_off && !mbpo__read_set(o->offline, 0, o->image_root, &T->items, &T->n_items, &T->cap_items)) return 0;
        if (want_on && o->online && !mbpo__read_set(o->online, 1, o->image_root, &T->items, &T->n_items, &T->cap_items)) return 0;
        if (sft) for (i = 0; i < T->n_items; i++) T->items[i].kind = 2;
    }
    if (T->n_items == 0) return mbpo__fail("mbpo_train: no training samples for mode %s", mbpo_mode_name(o->mode));
    return 1;
}

MBPODEF int mbpo_train_mem_plan(const mbpo_config *cfg, const mbpo_preproc *pp, const mbpo_train_opts *o, mbpo_mem_shape *sh,
                                mbpo_mem_plan *p) {
    int online = o->mode == MBPO_MODE_MBPO || o->mode == MBPO_MODE_ONLINE;
    if (!mbpo__plan_shape(cfg, pp, o->device, o->batch, online ? o->G : o->mode == MBPO_MODE_SFT ? 1 : 2,
                          o->plan_image > 0 ? o->plan_image : 448, o->plan_text > 0 ? o->plan_text : 64, o->max_new_tokens,
                          online ? o->G : 0, sh))   /* options not from mbpo_train_defaults: its values */
        return 0;
    sh->train = 1; sh->reference = o->mode != MBPO_MODE_SFT && o->beta != 0; sh->stream_moments = o->stream_moments;
    sh->dp_world = o->exact_accum ? 1 : 0;
    sh->recompute = o->recompute;
    return mbpo_mem_plan_make(cfg, sh, p);
}
static int mbpo__train_plan(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    mbpo_mem_shape sh;
    mbpo_mem_plan p;
    if (!mbpo_train_mem_plan(&T->e.model.cfg, &T->e.pp, o, &sh, &p)) return 0;
    if (T->dp) {   /* this rank's share */
        sh.dp_world = T->comm->world;
        if (!mbpo_mem_plan_make(&T->e.model.cfg, &sh, &p)) return 0;
        /* a rank may own a shard but no micro-batch (grad_accum < world): its backend and
           gradients exist from the start, as every rank's do */
        if (!mbpo__ensure_plan(&T->e.model, 1, 0, 1, 1)) return 0;
    }
    if (o->log && !o->quiet) {
        int online = o->mode == MBPO_MODE_MBPO || o->mode == MBPO_MODE_ONLINE;
        fprintf(o->log, "train: planned for micro-batches of %d prompts x %d sequences: %lld tokens, %lld patches (--plan-image, "
                        "--plan-text; %d new tokens)\n", o->batch, online ? o->G : o->mode == MBPO_MODE_SFT ? 1 : 2, (long long)sh.tokens,
                (long long)sh.patches, o->max_new_tokens);
        mbpo_mem_plan_print(o->log, o->device == MBPO_DEVICE_CPU ? "train: cpu " : "train: cuda ", &p);
    }
    return mbpo_mem_plan_check(&p, "train");
}

/* Setup: the options, the policy, the pool, run.json, the micro-batches, the reference, the
   optimizer. */
static int mbpo__dp_setup(mbpo__train *T);
static int mbpo__train_setup(mbpo__train *T, const mbpo_train_opts *o) {
    int64_t i;
    memset(T, 0, sizeof *T);
    T->o = o;
    T->perm_epoch = -1;
    T->cbs = &T->bs;
    T->use_ref = o->mode != MBPO_MODE_SFT && o->beta != 0;
    if (!(T->comm = mbpo_comm_world())) return 0;
    if (o->comm_timeout > 0) T->comm->timeout_s = o->comm_timeout;
    T->lead = T->comm->rank == 0;
    T->dp = T->comm->world > 1 || o->exact_accum || T->comm->device;
    T->dp_sum = T->comm->device;   /* NCCL: the gradients summed on the GPUs, not in one global order */
    if (!T->lead) {   /* rank 0 speaks for the job and writes out_dir */
        T->oc = *o; T->oc.log = NULL; T->oc.quiet = 1;
        T->o = o = &T->oc;
    }
    if ((T->lead && !mbpo__out_dir(o->out_dir)) || !mbpo_comm_barrier(T->comm) ||
        !mbpo__env_load(&T->e, o->model_dir, o->processor, o->device))
        return 0;
    T->env_loaded = 1;
    T->e.model.recompute = o->recompute;   /* (the reference runs in the policy's arena) */
    if (o->batch < 1 || o->grad_accum < 1 || o->G < 2 || o->steps < 1 || o->updates_per_batch < 1)
        return mbpo__fail("mbpo_train: batch, grad_accum, steps and updates_per_batch must be >= 1 and G >= 2");
    if (o->steps % o->updates_per_batch || o->save_every % o->updates_per_batch)   /* checkpoints fall between batches */
        return mbpo__fail("mbpo_train: --steps and --save-every must be multiples of --updates-per-batch (%d)", o->updates_per_batch);
    if (!mbpo__train_pool(T)) return 0;
    if (!(T->p_metrics = mbpo__path_join(o->out_dir, "metrics.jsonl"))) return 0;
    if (T->lead && !mbpo__train_record(o, &T->e.pp, mbpo__latest_checkpoint(o->out_dir) > 0 || mbpo__file_nonempty(T->p_metrics),
                                       T->dp && !T->dp_sum))
        return 0;
    if (!(T->perm = (int64_t *)mbpo__alloc((size_t)T->n_items * sizeof(int64_t)))) return 0;
    if (!(T->mbs = (mbpo__mb *)mbpo__calloc((size_t)o->grad_accum, sizeof(mbpo__mb)))) return 0;
    for (i = 0; i < o->grad_accum; i++) {
        T->mbs[i].groups = (int *)mbpo__calloc((size_t)o->batch + 1, sizeof(int));
        T->mbs[i].adv = (float *)mbpo__calloc((size_t)(o->batch * (o->G > 2 ? o->G : 2)) + 1, sizeof(float));
        if (!T->mbs[i].groups || !T->mbs[i].adv) return 0;
    }
    if (T->use_ref) {
        if (!mbpo_model_load(&T->ref, o->model_dir)) return 0;
        T->ref.device = o->device; T->have_ref = 1;
    }
    if (!mbpo_adamw_init(&T->opt, T->e.model.table.total_floats)) return 0;
    T->opt.stream_moments = o->stream_moments;
    if (T->lead) mbpo__clean_checkpoint_tmp(o->out_dir);   /* what a killed run left */
    return (!T->dp || mbpo__dp_setup(T)) && mbpo_comm_barrier(T->comm);
}

/* Keep the metrics lines of the steps up to `step` (those of the checkpoint resumed from). */
static int mbpo__metrics_truncate(const char *path, int64_t step) {
    size_t len = 0;
    char *text = mbpo_read_file(path, &len), *line, *endp;
    mbpo__sb keep = { NULL, 0, 0, 0 };
    int ok;
    for (line = text, endp = text ? text + len : NULL; text && line < endp; ) {
        char *eol = (char *)memchr(line, '\n', (size_t)(endp - line));
        mbpo_json *j;
        if (!eol) break;   /* a torn line */
        j = mbpo_json_parse(line, (size_t)(eol - line), path);
        if (j && mbpo_json_get(j, "step") && mbpo_json_get(j, "step")->integer <= step) mbpo__sb_put(&keep, line, (size_t)(eol - line) + 1);
        mbpo_json_free(j);
        line = eol + 1;
    }
    mbpo_free(text);
    ok = !keep.failed && mbpo_write_file_atomic(path, keep.s ? keep.s : "", keep.n);
    mbpo_free(keep.s);
    return ok;
}

/* Resume from the newest whole checkpoint, if any. *finished: the run is done already. */
static int mbpo__train_resume(mbpo__train *T, int *finished) {
    const mbpo_train_opts *o = T->o;
    *finished = 0;
    T->step = mbpo__latest_checkpoint(o->out_dir);
    if (T->step > o->steps)
        return mbpo__fail("%s: holds checkpoint-%lld, past --steps %lld; resume with the same arguments or use a new --out",
                          o->out_dir, (long long)T->step, (long long)o->steps);
    if (T->step > 0 && T->step == o->steps) {   /* finished already (its last checkpoint may hold no optimizer state) */
        if (o->log && !o->quiet) fprintf(o->log, "train: %s/checkpoint-%lld is the last step; nothing to do\n", o->out_dir, (long long)T->step);
        *finished = 1;
        return 1;
    }
    if (T->lead && !mbpo__room_for_checkpoint(o, T->e.model.table.total_floats)) return 0;   /* now, not at step N */
    if (T->step > 0) {
        if (!mbpo__load_checkpoint(o, &T->e.model, &T->opt, T->step, &T->position) ||
            (T->lead && !mbpo__metrics_truncate(T->p_metrics, T->step)))
            return 0;
        if (o->log && !o->quiet) fprintf(o->log, "train: resumed from %s/checkpoint-%lld (data position %lld)\n", o->out_dir,
                                         (long long)T->step, (long long)T->position);
    } else if (T->lead && !mbpo_write_file_atomic(T->p_metrics, "", 0)) return 0;
    if (o->log && !o->quiet) fprintf(o->log, "train: mode %s, %lld samples, %lld steps of %d x %d prompts, G %d, beta %g, lr %g, seed %llu\n",
                                     mbpo_mode_name(o->mode), (long long)T->n_items, (long long)o->steps, o->grad_accum, o->batch, o->G,
                                     o->beta, o->adam.lr, (unsigned long long)o->seed);
    if (o->log && !o->quiet && T->comm->world > 1)
        fprintf(o->log, "train: %d ranks (%s, %s collectives): micro-batch j on rank j %% %d; rank 0 writes %s\n", T->comm->world,
                T->comm->launcher, T->comm->backend, T->comm->world, o->out_dir);
    T->first_step = T->step;
    mbpo__prog_start(&T->pg, o->log, o->quiet, "train:");
    return 1;
}

/* An offline pair (chosen, rejected: advantages from the fixed rewards) or one SFT answer,
   packed into M; with do_iig, Fig. 4's IIG of both responses under the current policy. */
static int mbpo__train_offline(mbpo__train *T, mbpo__mb *M, const mbpo__item *it, mbpo__img *im, int img) {
    const mbpo_train_opts *o = T->o;
    const char *texts[2];
    float r[2], a2[2];
    int k, n_texts = it->kind == 0 ? 2 : 1;
    texts[0] = it->s.answer; texts[1] = it->rejected;
    r[0] = o->r_chosen; r[1] = o->r_rejected;
    for (k = 0; k < n_texts; k++) {
        mbpo_chat chat;
        int good;
        if (!mbpo_chat_encode(T->e.tok, it->s.system, it->s.question, &im->n_tokens, img >= 0, texts[k], &chat)) return 0;
        good = mbpo__pack_seq(&M->pk, chat.ids, chat.target, chat.n, img);
        mbpo_chat_free(&chat);
        M->n_resp++;
        if (!good) return 0;
    }
    if (it->kind != 0) return 1;
    mbpo_group_advantages(r, 2, a2);
    M->adv[M->n_resp - 2] = a2[0]; M->adv[M->n_resp - 1] = a2[1];
    T->cbs->n_off++;
    if (T->bs.do_iig) {
        double sc, sr, mc, mr;
        if (mbpo__sample_iig(&T->e, &it->s, im, it->s.answer, &sc, &mc) &&
            mbpo__sample_iig(&T->e, &it->s, im, it->rejected, &sr, &mr)) {
            T->cbs->iig_c += sc; T->cbs->iig_r += sr; T->cbs->iig_cm += mc; T->cbs->iig_rm += mr; T->cbs->n_iig++;
        }
    }
    return 1;
}

/* Rollout k of an online prompt as a training sequence: the prompt's ids and the generated
   ones scored as they are (a stop token included); its verified reward from the text. */
static int mbpo__rollout_seq(mbpo__train *T, mbpo__mb *M, const mbpo__item *it, const mbpo__seq *q, const int32_t *gen, int len,
                             int img, float *reward) {
    int64_t n = q->chat.n + len, j;
    int32_t *ids = (int32_t *)mbpo__alloc((size_t)n * sizeof(int32_t));
    uint8_t *tg = (uint8_t *)mbpo__calloc((size_t)n, 1);
    char *text;
    int nt = len, s2, good;
    if (!ids || !tg) { mbpo_free(ids); mbpo_free(tg); return 0; }
    memcpy(ids, q->chat.ids, (size_t)q->chat.n * sizeof(int32_t));
    memcpy(ids + q->chat.n, gen, (size_t)len * sizeof(int32_t));
    for (j = q->chat.n; j < n; j++) tg[j] = 1;
    for (s2 = 0; s2 < T->e.n_stop; s2++) if (nt > 0 && ids[n - 1] == T->e.stop[s2]) { nt--; break; }
    text = mbpo_tokenizer_decode(T->e.tok, ids + q->chat.n, nt, 1, NULL);
    *reward = text ? (float)mbpo_verify(&it->s, text) : 0.0f;
    mbpo_free(text);
    good = mbpo__pack_seq(&M->pk, ids, tg, n, img);
    mbpo_free(ids); mbpo_free(tg);
    return good;
}

/* An online prompt: G rollouts from the policy as it stands (the prompt's own RNG stream),
   verified, packed into M with their group's advantages. */
static int mbpo__train_rollouts(mbpo__train *T, mbpo__mb *M, const mbpo__item *it, mbpo__img *im, int img) {
    const mbpo_train_opts *o = T->o;
    mbpo__seq q;
    mbpo_gen_opts go;
    mbpo_rng rng;
    int32_t *out = NULL;
    int *lens = NULL, k, good;
    float *r = NULL;
    double t0 = mbpo_now();
    memset(&go, 0, sizeof go);
    go.max_new_tokens = o->max_new_tokens; go.temperature = o->temperature; go.top_p = 1;
    go.stop_ids = T->e.stop; go.n_stop = T->e.n_stop;
    mbpo_rng_seed(&rng, mbpo__sample_seed(o->seed, T->position, 4));   /* the prompt's own stream */
    good = mbpo__seq_make(&q, &T->e, &it->s, img >= 0 ? im : NULL, NULL);
    good = good && mbpo__train_kv(T, q.chat.n + o->max_new_tokens);
    out = (int32_t *)mbpo__alloc((size_t)(o->G * o->max_new_tokens) * sizeof(int32_t));
    lens = (int *)mbpo__alloc((size_t)o->G * sizeof(int));
    r = (float *)mbpo__alloc((size_t)o->G * sizeof(float));
    good = good && out && lens && r && mbpo_generate(&T->e.model, &T->e.kv, &q.b, &go, &rng, out, lens);
    for (k = 0; good && k < o->G; k++) {
        good = mbpo__rollout_seq(T, M, it, &q, out + (int64_t)k * o->max_new_tokens, lens[k], img, &r[k]);
        if (!good) break;
        T->cbs->reward_on += r[k]; T->cbs->n_on_r++;
        T->cbs->rollout_tokens += lens[k];
        M->n_resp++;
    }
    if (good) mbpo_group_advantages(r, o->G, M->adv + M->n_resp - o->G);
    mbpo_free(out); mbpo_free(lens); mbpo_free(r);
    if (q.chat.ids) mbpo_chat_free(&q.chat);
    T->cbs->n_on++;
    T->cbs->t_rollout += mbpo_now() - t0;
    return good;
}

/* Collect micro-batch M: `batch` prompts from the stream, each with its image (one or none). */
static int mbpo__train_collect(mbpo__train *T, mbpo__mb *M) {
    const mbpo_train_opts *o = T->o;
    int g, good = 1;
    if (!mbpo__pack_init(&M->pk, 3 * T->e.pp.temporal_patch * T->e.pp.patch * T->e.pp.patch)) return 0;
    for (g = 0; g < o->batch && good; g++, T->position++) {
        mbpo__item *it = &T->items[mbpo__stream_item(o->seed, T->n_items, T->position, T->perm, &T->perm_epoch)];
        mbpo__img im;
        int img = -1;
        T->bad_item = it;
        memset(&im, 0, sizeof im);
        M->groups[g] = (int)M->n_resp;
        if (it->s.n_images == 1) {   /* prompts have one image or none */
            if (!mbpo__img_load(&im, &T->e.pp, it->s.images[0])) break;
            if ((img = mbpo__pack_image(&M->pk, &im)) < 0) { mbpo__img_free(&im); break; }
        }
        good = it->kind == 0 || it->kind == 2 ? mbpo__train_offline(T, M, it, &im, img) : mbpo__train_rollouts(T, M, it, &im, img);
        mbpo__img_free(&im);
    }
    if (g < o->batch || !good) {   /* say which sample of which file */
        char why[sizeof mbpo__reason];
        memcpy(why, mbpo__reason, sizeof why);
        return mbpo__fail("%.300s:%lld (sample %.100s): %.500s", T->bad_item->file, (long long)T->bad_item->line,
                          T->bad_item->s.id ? T->bad_item->s.id : "?", why);
    }
    M->groups[o->batch] = (int)M->n_resp;
    return 1;
}

/* Score micro-batch M once: its batch and plans, the responses' token ranges, the
   reference's log-probs, and logp_old (the policy that sampled) for the later updates. */
static int mbpo__train_score(mbpo__train *T, mbpo__mb *M) {
    const mbpo_train_opts *o = T->o;
    mbpo__pack *pk = &M->pk;
    int64_t t, s, cnt = 0;
    double t0 = mbpo_now();
    mbpo__pack_batch(pk, &M->b);
    for (t = 0, M->N = 0; t < pk->T; t++) M->N += pk->target[t];
    if (!mbpo__ensure_plan(&T->e.model, pk->T, pk->P, M->N, 1) || (T->have_ref && !mbpo_model_borrow_plan(&T->ref, &T->e.model)))
        return 0;   /* the reference runs in the policy's arena: its forwards come before the policy's */
    M->resp = (int64_t *)mbpo__alloc((size_t)(M->n_resp + 1) * sizeof(int64_t));
    M->lref = (float *)mbpo__alloc((size_t)(M->N + 1) * sizeof(float));
    M->lold = (float *)mbpo__alloc((size_t)(M->N + 1) * sizeof(float));
    M->lp = (float *)mbpo__alloc((size_t)(M->N + 1) * sizeof(float));
    M->dl = (float *)mbpo__alloc((size_t)(M->N + 1) * sizeof(float));
    if (!M->resp || !M->lref || !M->lold || !M->lp || !M->dl) return 0;
    M->resp[0] = 0;   /* sequence s holds response s */
    for (s = 0; s < pk->n_seqs; s++) {
        for (t = pk->offs[s]; t < pk->offs[s + 1]; t++) cnt += pk->target[t];
        M->resp[s + 1] = cnt;
    }
    if (T->have_ref && mbpo_model_forward(&T->ref, &M->b, M->lref) != M->N) return 0;
    if (o->updates_per_batch > 1 && mbpo_model_forward(&T->e.model, &M->b, M->lold) != M->N) return 0;
    T->cbs->t_ref += mbpo_now() - t0;
    return 1;
}

/* Micro-batch M's loss and dlogp (divided by grad_accum: the step's loss is the mean), and its
   terms of the step's metrics in rec: loss, KL x tokens, tokens, responses, |advantage| of
   each response (mbpo__train_tally adds them up). */
static int mbpo__train_mb_loss(mbpo__train *T, mbpo__mb *M, double *rec) {
    const mbpo_train_opts *o = T->o;
    int64_t t;
    if (mbpo_model_forward(&T->e.model, &M->b, M->lp) != M->N) return 0;
    rec[1] = 0; rec[2] = (double)M->N; rec[3] = 0;
    if (o->mode == MBPO_MODE_SFT) rec[0] = mbpo_sft_loss(M->lp, M->N, M->dl);
    else {
        mbpo_grpo_batch gb;
        mbpo_grpo_stats st;
        gb.n_groups = o->batch; gb.group_offsets = M->groups; gb.resp_offsets = M->resp; gb.advantage = M->adv;
        rec[0] = mbpo_grpo_loss(&gb, M->lp, o->updates_per_batch > 1 ? M->lold : NULL, T->have_ref ? M->lref : NULL,
                                o->beta, o->clip_eps, M->dl, &st);
        rec[1] = st.kl_mean * (double)st.n_tokens;
        rec[3] = (double)M->n_resp;
        for (t = 0; t < M->n_resp; t++) rec[4 + t] = fabs(M->adv[t]);
    }
    for (t = 0; t < M->N; t++) M->dl[t] /= (float)o->grad_accum;
    return 1;
}
static void mbpo__train_tally(mbpo__train *T, const double *rec) {
    int64_t t;
    T->kl += rec[1];
    for (t = 0; t < (int64_t)rec[3]; t++) { T->adv_abs += rec[4 + t]; T->n_adv++; }
    T->loss += rec[0] / T->o->grad_accum;
    T->n_tok += (int64_t)rec[2];
}
/* Loss and backward over the micro-batches; the gradients accumulate on the backend (one
   process; data parallel: mbpo__dp_backward). */
static int mbpo__train_backward(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    int64_t mb;
    double *rec = (double *)mbpo__alloc((size_t)(4 + o->batch * (o->G > 2 ? o->G : 2)) * sizeof(double));
    int ok = rec != NULL;
    T->loss = T->kl = T->adv_abs = 0; T->n_tok = T->n_adv = 0;
    mbpo_model_zero_grad(&T->e.model);
    for (mb = 0; ok && mb < o->grad_accum; mb++) {
        mbpo__mb *M = &T->mbs[mb];
        ok = mbpo__train_mb_loss(T, M, rec) && mbpo_model_backward(&T->e.model, &M->b, M->dl, NULL);
        if (ok) mbpo__train_tally(T, rec);
    }
    mbpo_free(rec);
    return ok;
}

/* ---- data parallelism (docs/DESIGN.md 8)

   Micro-batch j of a batch is rank j % world's. Round r of the backward: every rank with a
   micro-batch (j = r world + rank) computes its gradient alone (zeroed first), then
   mbpo_comm_reduce_scatter adds the round's gradients into each owner's shard of the batch's
   gradient in rank order, that is micro-batch order: the shard's sum is the same sequence of
   float additions at every world size. The norm is the sum, in block order, of fixed blocks'
   sums of squares, each block inside one shard. Each rank updates its shard of the master and
   moments; the weights are gathered by all. The metrics' terms of every micro-batch go to
   every rank and are added up in micro-batch order. */
/* About 256 blocks of whole KiB: a function of n alone, so the same at every world size. */
static int64_t mbpo__dp_block(int64_t n) {
    int64_t b = (n + 255) / 256;
    b = (b + 1023) / 1024 * 1024;
    return b > 0 ? b : 1024;
}
/* The slot of micro-batch mb in the per-micro-batch arrays: each rank's are contiguous. */
static int64_t mbpo__dp_slot(const mbpo__train *T, int64_t mb) {
    return (mb % T->comm->world) * T->dp_slots + mb / T->comm->world;
}
static int mbpo__dp_setup(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    int W = T->comm->world, r;
    int64_t n = (int64_t)T->e.model.table.total_floats, shard;
    if (o->device != MBPO_DEVICE_CPU && !T->comm->device)
        return mbpo__fail("data parallelism (%d rank%s%s) with %s collectives runs on the CPU; on GPUs build with MBPO_NCCL", W,
                          W > 1 ? "s" : "", o->exact_accum ? ", --exact-accum" : "", T->comm->backend);
    if (T->comm->device && o->device != MBPO_DEVICE_CUDA)
        return mbpo__fail("this build's collectives are NCCL's (GPU memory): run with --device cuda");
    if (T->comm->device && o->exact_accum)
        return mbpo__fail("--exact-accum: the ordered sum runs over MPI on the CPU; over NCCL the ranks sum on the GPUs");
    if (o->stream_moments && !T->dp_sum)
        return mbpo__fail("--moments host with data parallelism on the CPU: not supported (ZeRO-1 shards the moments)");
    T->dp_block = mbpo__dp_block(n);
    T->dp_nb = (n + T->dp_block - 1) / T->dp_block;
    T->dp_off = (int64_t *)mbpo__alloc((size_t)(W + 1) * sizeof(int64_t));
    T->dp_boff = (int64_t *)mbpo__alloc((size_t)(W + 1) * sizeof(int64_t));
    if (!T->dp_off || !T->dp_boff) return 0;
    for (r = 0; r <= W; r++) {
        T->dp_boff[r] = T->dp_nb * r / W;
        T->dp_off[r] = T->dp_boff[r] * T->dp_block < n ? T->dp_boff[r] * T->dp_block : n;
    }
    shard = T->dp_off[T->comm->rank + 1] - T->dp_off[T->comm->rank];
    T->dp_slots = (o->grad_accum + W - 1) / W;
    T->dp_rlen = 4 + o->batch * (o->G > 2 ? o->G : 2);
    T->dp_acc = T->dp_sum ? NULL : (float *)mbpo__alloc((size_t)(shard + 1) * sizeof(float));   /* (NCCL: in place) */
    T->dp_blk = (double *)mbpo__calloc((size_t)T->dp_nb + 1, sizeof(double));
    T->dp_rec = (double *)mbpo__calloc((size_t)(W * T->dp_slots * T->dp_rlen), sizeof(double));
    T->dp_bs = (mbpo__batch_stats *)mbpo__calloc((size_t)(W * T->dp_slots), sizeof(mbpo__batch_stats));
    return (T->dp_acc || T->dp_sum) && T->dp_blk && T->dp_rec && T->dp_bs;
}
/* In place, every rank's slots of an array of per-micro-batch items of `size` bytes. */
static int mbpo__dp_gather_slots(mbpo__train *T, void *items, size_t size) {
    int W = T->comm->world, r, ok;
    size_t *off = (size_t *)mbpo__alloc((size_t)(W + 1) * sizeof(size_t));
    if (!off) return 0;
    for (r = 0; r <= W; r++) off[r] = (size_t)(r * T->dp_slots) * size;
    ok = mbpo_comm_all_gather(T->comm, items, off);
    mbpo_free(off);
    return ok;
}
/* In place, every rank's shard of an array of n values of `size` bytes (the parameters'
   layout): the weights after an update, the moments for a checkpoint. */
static int mbpo__dp_gather_shards(mbpo__train *T, void *values, size_t size) {
    int W = T->comm->world, r, ok;
    size_t *off = (size_t *)mbpo__alloc((size_t)(W + 1) * sizeof(size_t));
    if (!off) return 0;
    for (r = 0; r <= W; r++) off[r] = (size_t)T->dp_off[r] * size;
    ok = mbpo_comm_all_gather(T->comm, values, off);
    mbpo_free(off);
    return ok;
}
/* After the resume, every rank must hold the same state (a shared out_dir): the step, the data
   position and a sample of the parameters and moments (every 4099th value) compared. */
static int mbpo__dp_resumed(mbpo__train *T) {
    int64_t n = (int64_t)T->e.model.table.total_floats, i, k = 0, ns = n / 4099 + 1;
    float *v = (float *)mbpo__alloc((size_t)(3 * ns + 8) * sizeof(float));
    int ok;
    if (!v) return 0;
    memcpy(v, &T->step, sizeof T->step); memcpy(v + 2, &T->position, sizeof T->position);
    memcpy(v + 4, &T->opt.step, sizeof T->opt.step);
    v[6] = v[7] = 0;
    k = 8;
    for (i = 0; i < n; i += 4099) { v[k++] = T->e.model.params[i]; v[k++] = T->opt.m[i]; v[k++] = T->opt.v[i]; }
    ok = mbpo__comm_same(T->comm, v, (size_t)k * sizeof(float), "checkpoint (step, data position, weights or moments)");
    mbpo_free(v);
    return ok;
}
/* The batch's collection counts: every micro-batch's, added in micro-batch order into bs. */
static int mbpo__dp_batch_stats(mbpo__train *T) {
    mbpo__batch_stats *b = &T->bs;
    int64_t mb;
    if (!mbpo__dp_gather_slots(T, T->dp_bs, sizeof *T->dp_bs)) return 0;
    for (mb = 0; mb < T->o->grad_accum; mb++) {
        const mbpo__batch_stats *s = &T->dp_bs[mbpo__dp_slot(T, mb)];
        b->reward_on += s->reward_on; b->n_on_r += s->n_on_r;
        b->iig_c += s->iig_c; b->iig_r += s->iig_r; b->iig_cm += s->iig_cm; b->iig_rm += s->iig_rm;
        b->n_off += s->n_off; b->n_on += s->n_on; b->n_iig += s->n_iig;
        b->t_rollout += s->t_rollout; b->t_ref += s->t_ref;   /* seconds summed over the ranks */
        b->rollout_tokens += s->rollout_tokens;
    }
    return 1;
}
static int mbpo__dp_backward(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    mbpo_model *m = &T->e.model;
    int W = T->comm->world, me = T->comm->rank;
    int64_t A = o->grad_accum, j, mb;
    T->loss = T->kl = T->adv_abs = 0; T->n_tok = T->n_adv = 0;
    for (j = 0; j * W < A; j++) {
        int senders = (int)(A - j * W < W ? A - j * W : W);
        mb = j * W + me;
        if (mb < A) {
            mbpo__mb *M = &T->mbs[mb];
            mbpo_model_zero_grad(m);
            if (!mbpo__train_mb_loss(T, M, T->dp_rec + mbpo__dp_slot(T, mb) * T->dp_rlen) ||
                !mbpo_model_backward(m, &M->b, M->dl, NULL))
                return 0;
        }
        if (!mbpo_comm_reduce_scatter(T->comm, T->dp_acc, m->xgrads, T->dp_off, senders, j == 0)) return 0;
    }
    if (!mbpo__dp_gather_slots(T, T->dp_rec, (size_t)T->dp_rlen * sizeof(double))) return 0;
    for (mb = 0; mb < A; mb++) mbpo__train_tally(T, T->dp_rec + mbpo__dp_slot(T, mb) * T->dp_rlen);
    return 1;
}
/* ---- data parallelism on GPUs (NCCL): each rank sums its micro-batches' gradients in the
   backward (as one process does); during the last one's backward each decoder layer's
   gradient is reduced in place on NCCL's stream as soon as it is whole (overlapped with the
   layers below), the rest after: each owner gets its shard of the sum;
   the norm is the ranks' sums of squares added in rank order; each rank updates its shard of
   the fp32 master and moments, kept on its GPU (or the moments streamed from host memory),
   and the new bf16 weights are gathered. One rank is one process bit for bit (the same ops on
   the same values). */
/* The backward's hook (mbpo_model.grad_ready): decoder layer l's gradient reduced while the
   layers below go back. */
static int mbpo__dp_sum_ready(void *ctx, mbpo_model *m, int64_t l, int64_t lo, int64_t hi) {
    mbpo__train *T = (mbpo__train *)ctx;
    (void)l;
    return mbpo__comm_reduce_part(T->comm, m->xgrads, T->dp_off, lo, hi, m->be);
}
static int mbpo__dp_sum_backward(mbpo__train *T) {
    const mbpo_train_opts *o = T->o;
    mbpo_model *m = &T->e.model;
    const mbpo_weights *w = &m->w;
    int64_t mb, last = -1, l, L = m->cfg.n_layers, n = (int64_t)m->table.total_floats;
    int64_t first_lo = w->layers[0].in_norm_w - m->params, norm_lo = w->norm_w - m->params;
    T->loss = T->kl = T->adv_abs = 0; T->n_tok = T->n_adv = 0;
    mbpo_model_zero_grad(m);
    for (mb = T->comm->rank; mb < o->grad_accum; mb += T->comm->world) last = mb;
    for (mb = T->comm->rank; mb < o->grad_accum; mb += T->comm->world) {
        mbpo__mb *M = &T->mbs[mb];
        int good;
        if (mb == last) { m->grad_ready = mbpo__dp_sum_ready; m->grad_ctx = T; }   /* the last one's layers: overlapped */
        good = mbpo__train_mb_loss(T, M, T->dp_rec + mbpo__dp_slot(T, mb) * T->dp_rlen) &&
               mbpo_model_backward(m, &M->b, M->dl, NULL);
        m->grad_ready = NULL; m->grad_ctx = NULL;
        if (!good) return 0;
    }
    if (last < 0)   /* no micro-batch here: the same reductions, in the same order, of zeros */
        for (l = L - 1; l >= 0; l--) {
            int64_t lo = w->layers[l].in_norm_w - m->params, hi = (l + 1 < L ? w->layers[l + 1].in_norm_w : w->norm_w) - m->params;
            if (!mbpo__comm_reduce_part(T->comm, m->xgrads, T->dp_off, lo, hi, m->be)) return 0;
        }
    /* then what is whole only at the end: the vision tower, the merger, the embedding (and a
       tied head), the final norm and the head */
    if (!mbpo__comm_reduce_part(T->comm, m->xgrads, T->dp_off, 0, first_lo, m->be) ||
        !mbpo__comm_reduce_part(T->comm, m->xgrads, T->dp_off, norm_lo, n, m->be) || !mbpo__comm_finish(T->comm) ||
        !mbpo__dp_gather_slots(T, T->dp_rec, (size_t)T->dp_rlen * sizeof(double)))
        return 0;
    for (mb = 0; mb < o->grad_accum; mb++) mbpo__train_tally(T, T->dp_rec + mbpo__dp_slot(T, mb) * T->dp_rlen);
    return 1;
}
/* This rank's shard of master and moments on its GPU, from the host copies (the first update,
   and after a resume). */
static int mbpo__dp_sum_fresh(mbpo__train *T) {
    mbpo_model *m = &T->e.model;
    const mbpo_ops *ops = m->ops;
    int64_t lo = T->dp_off[T->comm->rank], len = T->dp_off[T->comm->rank + 1] - lo, c = mbpo__opt_chunk(&T->opt, len > 0 ? len : 1);
    if (T->dp_fresh) return 1;
    if (!m->xmaster && !ops->alloc(m->be, (void **)&m->xmaster, (size_t)(len + 1) * sizeof(float), "the master weights' shard"))
        return 0;
    if (!m->xmoments && !ops->alloc(m->be, (void **)&m->xmoments, 2 * (size_t)((T->opt.stream_moments ? c : len) + 1) * sizeof(float),
                                    T->opt.stream_moments ? "the streamed moments' buffers" : "the Adam moments' shard"))
        return 0;
    if (!ops->upload(m->be, m->xmaster, m->params + lo, (size_t)len * sizeof(float)) ||
        (!T->opt.stream_moments && (!ops->upload(m->be, m->xmoments, T->opt.m + lo, (size_t)len * sizeof(float)) ||
                                    !ops->upload(m->be, m->xmoments + len, T->opt.v + lo, (size_t)len * sizeof(float)))))
        return 0;
    T->dp_fresh = 1;
    return 1;
}
static int mbpo__dp_sum_update(mbpo__train *T) {
    mbpo_model *m = &T->e.model;
    const mbpo_ops *ops = m->ops;
    int W = T->comm->world, me = T->comm->rank, r, ok = 1;
    int64_t lo = T->dp_off[me], len = T->dp_off[me + 1] - lo, off, c;
    double ss = 0;
    mbpo__adamw_k k;
    size_t *xoff;
    if (!mbpo__dp_sum_fresh(T) || (len > 0 && !ops->sumsq(m->be, &ss, m->xgrads + lo, len)) ||
        !mbpo_comm_all_reduce(T->comm, &ss, 1))
        return 0;
    T->norm = sqrt(ss);
    if (mbpo__adamw_next(&T->opt, &T->o->adam, T->norm, &k)) {   /* non-finite: nothing changes */
        mbpo_x *px = mbpo__xat(ops, (const mbpo_x *)m->xparams, lo);
        if (!T->opt.stream_moments)
            ok = len == 0 || ops->adamw(m->be, m->xmaster, px, m->xmoments, m->xmoments + len, m->xgrads + lo, len, &k);
        else
            for (c = mbpo__opt_chunk(&T->opt, len > 0 ? len : 1), off = 0; ok && off < len; off += c) {
                int64_t l2 = len - off < c ? len - off : c;
                size_t b = (size_t)l2 * sizeof(float);
                ok = ops->upload(m->be, m->xmoments, T->opt.m + lo + off, b) &&
                     ops->upload(m->be, m->xmoments + c, T->opt.v + lo + off, b) &&
                     ops->adamw(m->be, m->xmaster + off, mbpo__xat(ops, px, off), m->xmoments, m->xmoments + c,
                                m->xgrads + lo + off, l2, &k) &&
                     ops->download(m->be, T->opt.m + lo + off, m->xmoments, b) &&
                     ops->download(m->be, T->opt.v + lo + off, m->xmoments + c, b);
            }
        if (!ok || !(xoff = (size_t *)mbpo__alloc((size_t)(W + 1) * sizeof(size_t)))) return 0;
        for (r = 0; r <= W; r++) xoff[r] = (size_t)T->dp_off[r] * ops->x_size;
        ok = mbpo_comm_all_gather(T->comm, m->xparams, xoff);   /* everyone's new weights */
        mbpo_free(xoff);
        if (!ok) return 0;
        m->host_stale = 1;
    }
    T->bad_run = isfinite(T->norm) ? 0 : T->bad_run + 1;
    T->step++;
    return 1;
}
/* Before a checkpoint: this rank's shard of master and moments to its host arrays, then every
   rank's to every host (rank 0 writes them). */
static int mbpo__dp_sum_to_host(mbpo__train *T) {
    mbpo_model *m = &T->e.model;
    const mbpo_ops *ops = m->ops;
    int64_t lo = T->dp_off[T->comm->rank], len = T->dp_off[T->comm->rank + 1] - lo;
    size_t b = (size_t)len * sizeof(float);
    if (!m->host_stale) return 1;
    if (len > 0 && (!ops->download(m->be, m->params + lo, m->xmaster, b) ||
                    (!T->opt.stream_moments && (!ops->download(m->be, T->opt.m + lo, m->xmoments, b) ||
                                                !ops->download(m->be, T->opt.v + lo, m->xmoments + len, b)))))
        return 0;
    if (!mbpo__dp_gather_shards(T, m->params, sizeof(float)) || !mbpo__dp_gather_shards(T, T->opt.m, sizeof(float)) ||
        !mbpo__dp_gather_shards(T, T->opt.v, sizeof(float)))
        return 0;
    m->host_stale = 0;
    return 1;
}

/* The update of this rank's shard, from the whole gradient's norm, then everyone's weights. */
static int mbpo__dp_update(mbpo__train *T) {
    mbpo_model *m = &T->e.model;
    const mbpo_ops *ops = m->ops;
    int W = T->comm->world, me = T->comm->rank, r, ok;
    int64_t n = (int64_t)m->table.total_floats, lo = T->dp_off[me], b;
    size_t *boff = (size_t *)mbpo__alloc((size_t)(W + 1) * sizeof(size_t));
    mbpo__adamw_k k;
    double ss = 0;
    if (!boff) return 0;
    for (b = T->dp_boff[me]; b < T->dp_boff[me + 1]; b++) {
        int64_t s0 = b * T->dp_block, len = n - s0 < T->dp_block ? n - s0 : T->dp_block;
        if (!ops->sumsq(m->be, &T->dp_blk[b], T->dp_acc + (s0 - lo), len)) { mbpo_free(boff); return 0; }
    }
    for (r = 0; r <= W; r++) boff[r] = (size_t)T->dp_boff[r] * sizeof(double);
    ok = mbpo_comm_all_gather(T->comm, T->dp_blk, boff);
    mbpo_free(boff);
    if (!ok) return 0;
    for (b = 0; b < T->dp_nb; b++) ss += T->dp_blk[b];
    T->norm = sqrt(ss);
    if (mbpo__adamw_next(&T->opt, &T->o->adam, T->norm, &k) &&   /* non-finite: nothing changes */
        (!ops->adamw(m->be, m->params + lo, (mbpo_x *)(void *)(m->params + lo), T->opt.m + lo, T->opt.v + lo, T->dp_acc,
                     T->dp_off[me + 1] - lo, &k) ||
         !mbpo__dp_gather_shards(T, m->params, sizeof(float))))
        return 0;
    T->bad_run = isfinite(T->norm) ? 0 : T->bad_run + 1;
    T->step++;
    return 1;
}

/* The optimizer step; a non-finite gradient changes nothing and counts toward max_bad_steps. */
static int mbpo__train_update(mbpo__train *T) {
    if (T->dp) return T->dp_sum ? mbpo__dp_sum_update(T) : mbpo__dp_update(T);
    if (!mbpo_model_adamw_step(&T->e.model, &T->opt, &T->o->adam, &T->norm)) return 0;   /* on the model's backend */
    T->bad_run = isfinite(T->norm) ? 0 : T->bad_run + 1;
    T->step++;
    return 1;
}

/* The step's metrics line (u: the update's index in its batch), the progress line, and the
   stop after max_bad_steps non-finite steps in a row. */
static int mbpo__train_log(mbpo__train *T, int64_t u) {
    const mbpo_train_opts *o = T->o;
    const mbpo__batch_stats *bs = &T->bs;
    mbpo__sb *sb = &T->sb;
    double kl = T->n_tok ? T->kl / (double)T->n_tok : 0.0, tok_s = (double)T->n_tok / (mbpo_now() - bs->t0 + 1e-9);
    int fin = isfinite(T->norm);
    sb->n = 0;
    mbpo__sb_printf(sb, "{\"step\": %lld, \"loss\": ", (long long)T->step);
    mbpo__sb_num(sb, T->loss);
    mbpo__sb_puts(sb, ", \"grad_norm\": ");
    mbpo__sb_num(sb, T->norm);
    mbpo__sb_printf(sb, ", \"skipped\": %s, \"lr\": %.9g, \"kl\": ", fin ? "false" : "true", mbpo_lr_at(&o->adam, T->opt.step - (fin ? 1 : 0)));
    mbpo__sb_num(sb, kl);
    mbpo__sb_printf(sb, ", \"adv_abs_mean\": %.9g, \"n_offline\": %lld, \"n_online\": %lld, \"reward_online\": %.9g, "
                    "\"tokens\": %lld, \"tokens_per_s\": %.1f", T->n_adv ? T->adv_abs / (double)T->n_adv : 0.0, (long long)bs->n_off,
                    (long long)bs->n_on, bs->n_on_r ? bs->reward_on / bs->n_on_r : 0.0, (long long)T->n_tok, tok_s);
    if (bs->n_iig && u == 0) {   /* through mbpo__sb_num: a diverged model's IIG is NaN, written as null */
        mbpo__sb_puts(sb, ", \"iig_chosen\": "); mbpo__sb_num(sb, bs->iig_c / bs->n_iig);
        mbpo__sb_puts(sb, ", \"iig_rejected\": "); mbpo__sb_num(sb, bs->iig_r / bs->n_iig);
        mbpo__sb_puts(sb, ", \"iig_chosen_mean\": "); mbpo__sb_num(sb, bs->iig_cm / bs->n_iig);
        mbpo__sb_puts(sb, ", \"iig_rejected_mean\": "); mbpo__sb_num(sb, bs->iig_rm / bs->n_iig);
    }
    /* where the time went: the batch's collection and scoring on its first update, this update's */
    if (u == 0) mbpo__sb_printf(sb, ", \"time_rollout_s\": %.6f, \"rollout_tokens\": %lld, \"time_ref_s\": %.6f", bs->t_rollout,
                                (long long)bs->rollout_tokens, bs->t_ref);
    mbpo__sb_printf(sb, ", \"time_update_s\": %.6f}", T->t_update);
    if (sb->failed || (T->lead && !mbpo__append_line(T->p_metrics, sb->s, sb->n))) return 0;
    if (o->max_bad_steps > 0 && T->bad_run >= o->max_bad_steps)
        return mbpo__fail("%s: stopped at step %lld after %lld steps in a row with a non-finite gradient (each was skipped and "
                          "logged; earlier checkpoints are kept); lower --lr or check the data, or allow more with --max-bad-steps",
                          o->out_dir, (long long)T->step, (long long)T->bad_run);
    if (mbpo__prog_due(&T->pg, T->step == o->steps)) {
        double dt = mbpo_now() - T->pg.t0, per_step = dt / (double)(T->step - T->first_step);
        fprintf(T->pg.log, "train: step %lld/%lld loss %.5f |g| %.3g kl %.5f reward %.3f %.0f tok/s, ETA %.0f s\n",
                (long long)T->step, (long long)o->steps, T->loss, T->norm, kl, bs->n_on_r ? bs->reward_on / bs->n_on_r : 0.0,
                tok_s, per_step * (double)(o->steps - T->step));
        fflush(T->pg.log);
    }
    return 1;
}

/* A checkpoint when one is due (only between batches: the data position then names the
   next batch; u is the update's index in its batch), and the rotation of old ones. */
static int mbpo__train_checkpoint(mbpo__train *T, int64_t u) {
    const mbpo_train_opts *o = T->o;
    int64_t k, due = T->step == o->steps;
    if (u + 1 != o->updates_per_batch && T->step != o->steps) return 1;
    for (k = T->step - u; k <= T->step && o->save_every > 0; k++) due |= k % o->save_every == 0;
    if (!due) return 1;
    if (T->dp_sum ? !mbpo__dp_sum_to_host(T)
                  : T->dp && (!mbpo__dp_gather_shards(T, T->opt.m, sizeof(float)) || !mbpo__dp_gather_shards(T, T->opt.v, sizeof(float))))
        return 0;   /* the shards of master and moments, so that rank 0 writes the whole state */
    if (!T->lead) return 1;
    if (!mbpo_model_opt_to_host(&T->e.model, &T->opt) ||   /* a device's master and moments, for the files */
        !mbpo__save_checkpoint(o, &T->e, &T->opt, T->step, T->position, o->final_weights_only && T->step == o->steps))
        return 0;   /* mbpo_train names the newest whole checkpoint */
    mbpo__rotate_checkpoints(o->out_dir, o->save_total_limit);
    return 1;
}

static void mbpo__train_free(mbpo__train *T) {
    int64_t i;
    mbpo_free(T->sb.s); mbpo_free(T->p_metrics); mbpo_free(T->perm);
    if (T->mbs) for (i = 0; i < T->o->grad_accum; i++) { mbpo__mb_clear(&T->mbs[i], 0); mbpo_free(T->mbs[i].groups); mbpo_free(T->mbs[i].adv); }
    mbpo_free(T->mbs);
    mbpo_free(T->dp_off); mbpo_free(T->dp_boff); mbpo_free(T->dp_acc); mbpo_free(T->dp_blk); mbpo_free(T->dp_rec);
    mbpo_free(T->dp_bs);
    if (T->items) mbpo__items_free(T->items, T->n_items);
    mbpo_adamw_free(&T->opt);
    if (T->have_ref) mbpo_model_free(&T->ref);
    if (T->env_loaded) mbpo__env_free(&T->e);
}

MBPODEF int mbpo_train(const mbpo_train_opts *o) {
    mbpo__train T;
    int ok = 0, finished = 0;
    int64_t mb, u;
    if (!mbpo__train_setup(&T, o) || !mbpo__train_resume(&T, &finished) || (T.dp && !mbpo__dp_resumed(&T)) ||
        (!finished && !mbpo__train_plan(&T)))
        goto end;
    T.stepping = 1;
    while (!finished && T.step < o->steps) {
        /* the batch: rollouts are sampled now, from the policy as it stands, and scored by
           the reference once */
        memset(&T.bs, 0, sizeof T.bs);
        T.bs.t0 = mbpo_now();
        T.bs.do_iig = o->iig_every > 0 && (T.step + 1) % o->iig_every == 0;
        for (mb = 0; mb < o->grad_accum; mb++) {
            if (T.dp && mb % T.comm->world != T.comm->rank) { T.position += o->batch; continue; }   /* another rank's */
            if (T.dp) { T.cbs = &T.dp_bs[mbpo__dp_slot(&T, mb)]; memset(T.cbs, 0, sizeof *T.cbs); }
            if (!mbpo__train_collect(&T, &T.mbs[mb]) || !mbpo__train_score(&T, &T.mbs[mb])) goto end;
        }
        T.cbs = &T.bs;
        if (T.dp && !mbpo__dp_batch_stats(&T)) goto end;
        /* updates_per_batch optimizer steps on it (one: rho = 1) */
        for (u = 0; u < o->updates_per_batch && T.step < o->steps; u++) {
            double t0 = mbpo_now();
            if (!(T.dp_sum ? mbpo__dp_sum_backward(&T) : T.dp ? mbpo__dp_backward(&T) : mbpo__train_backward(&T)) ||
                !mbpo__train_update(&T))
                goto end;
            T.t_update = mbpo_now() - t0;
            if (!mbpo__train_log(&T, u) || !mbpo__train_checkpoint(&T, u)) goto end;
        }
        for (mb = 0; mb < o->grad_accum; mb++) mbpo__mb_clear(&T.mbs[mb], o->batch);
    }
    ok = 1;
end:
    if (!ok && T.stepping) {   /* a full disk, a CUDA error, out of memory: what to resume from */
        int64_t kept = mbpo__latest_checkpoint(o->out_dir);
        if (kept > 0)
            mbpo__fail_suffix("\nstopped at step %lld: checkpoint-%lld is the newest whole checkpoint; once the "
                              "cause is fixed, the same command resumes from it", (long long)T.step, (long long)kept);
        else mbpo__fail_suffix("\nstopped at step %lld before any checkpoint was written", (long long)T.step);
    }
    if (!ok && T.comm && T.comm->world > 1) mbpo_comm_abort(T.comm, mbpo_failure_reason());   /* every rank ends */
    mbpo__train_free(&T);
    return ok;
}

/* ------------------------------------------------------------------ 5. runs: export */

/* The question as TRL's content parts: text and {"type": "image"} items where the <image>
   placeholders were (one newline after a placeholder dropped, as mbpo_chat_encode does), or
   the images first when it has none - so that apply_chat_template renders what mbpo encodes. */
static void mbpo__sb_content_parts(mbpo__sb *b, const char *question, int n_images) {
    mbpo__sb t = { NULL, 0, 0, 0 };
    const char *q = question;
    int k, first = 1;
    mbpo__sb_puts(b, "[");
    if (!mbpo_chat_count_images(question))
        for (k = 0; k < n_images; k++, first = 0) mbpo__sb_puts(b, k ? ", {\"type\": \"image\"}" : "{\"type\": \"image\"}");
    for (;;) {
        const char *at = strstr(q, "<image>");
        size_t n = at ? (size_t)(at - q) : strlen(q);
        if (n) {
            t.n = 0; mbpo__sb_put(&t, q, n); mbpo__sb_put(&t, "", 1);
            mbpo__sb_puts(b, first ? "{\"type\": \"text\", \"text\": " : ", {\"type\": \"text\", \"text\": ");
            if (t.s) mbpo__sb_json(b, t.s);
            mbpo__sb_puts(b, "}");
            first = 0;
        }
        if (!at) break;
        mbpo__sb_puts(b, first ? "{\"type\": \"image\"}" : ", {\"type\": \"image\"}");
        first = 0;
        q = at + 7;
        if (*q == '\n') q++;
    }
    mbpo__sb_puts(b, "]");
    if (t.failed) b->failed = 1;
    mbpo_free(t.s);
}
/* The question as one text with exactly one "<image>" per image (LLaMA-Factory, EasyR1):
   placeholders kept where they are (without the newline after each), else prepended. */
static void mbpo__sb_placeholder_text(mbpo__sb *b, const char *question, int n_images) {
    mbpo__sb t = { NULL, 0, 0, 0 };
    const char *q = question;
    int k;
    if (!mbpo_chat_count_images(question)) for (k = 0; k < n_images; k++) mbpo__sb_puts(&t, "<image>");
    for (;;) {
        const char *at = strstr(q, "<image>");
        if (!at) { mbpo__sb_puts(&t, q); break; }
        mbpo__sb_put(&t, q, (size_t)(at - q) + 7);
        q = at + 7;
        if (*q == '\n') q++;
    }
    mbpo__sb_put(&t, "", 1);
    if (t.failed) b->failed = 1;
    else mbpo__sb_json(b, t.s);
    mbpo_free(t.s);
}
/* ["<absolute path>"] of an item's image ([] for none): the one form that TRL (relative to the
   working directory), LLaMA-Factory (to media_dir) and EasyR1 (to image_dir) all resolve. */
static int mbpo__sb_abs_images(mbpo__sb *b, const mbpo__item *it) {
    mbpo__sb_puts(b, "[");
    if (it->s.n_images == 1) {
        const char *img = it->s.images[0];
        if (!mbpo__is_file(img)) return mbpo__fail_prefix("%s:%lld: ", it->file, (long long)it->line);
#if !defined(_WIN32)
        if (img[0] != '/') {   /* relative to the working directory, as the dataset loader opened it */
            char cwd[4096], *abs;
            if (!getcwd(cwd, sizeof cwd)) return mbpo__fail("cannot get the working directory (%s)", strerror(errno));
            if (!(abs = mbpo__path_join(cwd, img[0] == '.' && img[1] == '/' ? img + 2 : img))) return 0;
            mbpo__sb_json(b, abs);
            mbpo_free(abs);
        } else
#endif
        mbpo__sb_json(b, img);
    }
    mbpo__sb_puts(b, "]");
    return 1;
}
MBPODEF int mbpo_export(const char *mined_dir, const char *image_root, const char *out_dir) {
    mbpo__item *items = NULL;
    int64_t n = 0, cap = 0, i;
    char *p_off = mbpo__path_join(mined_dir, "offline.jsonl"), *p_on = mbpo__path_join(mined_dir, "online.jsonl");
    char *dir = out_dir ? mbpo__strdup(out_dir) : mbpo__path_join(mined_dir, "export");
    mbpo__sb dpo = { NULL, 0, 0, 0 }, lf = { NULL, 0, 0, 0 }, grpo = { NULL, 0, 0, 0 }, r1 = { NULL, 0, 0, 0 }, info = { NULL, 0, 0, 0 };
    static const char *const export_files[] = { "trl_dpo.jsonl", "llamafactory_dpo.jsonl", "dataset_info.json", "trl_grpo.jsonl",
                                                "easyr1.jsonl", NULL };
    int ok = 0;
    if (!p_off || !p_on || !dir || !mbpo__mkdir(dir)) goto end;
    mbpo__clean_stale(dir, export_files, 0);   /* a killed export's temporary files */
    if (!mbpo__read_set(p_off, 0, image_root, &items, &n, &cap)) goto end;
    if (!mbpo__read_set(p_on, 1, image_root, &items, &n, &cap)) goto end;
    for (i = 0; i < n; i++) {
        const mbpo__item *it = &items[i];
        const char *sys = it->s.system;
        if (it->kind == 0) {   /* an offline pair, on its clean image */
            mbpo__sb_puts(&dpo, "{\"id\": "); mbpo__sb_json(&dpo, it->s.id);
            mbpo__sb_puts(&dpo, ", \"prompt\": [");
            if (sys) { mbpo__sb_puts(&dpo, "{\"role\": \"system\", \"content\": "); mbpo__sb_json(&dpo, sys); mbpo__sb_puts(&dpo, "}, "); }
            mbpo__sb_puts(&dpo, "{\"role\": \"user\", \"content\": ");
            mbpo__sb_content_parts(&dpo, it->s.question, it->s.n_images);
            mbpo__sb_puts(&dpo, "}], \"chosen\": [{\"role\": \"assistant\", \"content\": "); mbpo__sb_json(&dpo, it->s.answer);
            mbpo__sb_puts(&dpo, "}], \"rejected\": [{\"role\": \"assistant\", \"content\": "); mbpo__sb_json(&dpo, it->rejected);
            mbpo__sb_puts(&dpo, "}], \"images\": ");
            if (!mbpo__sb_abs_images(&dpo, it)) goto end;
            mbpo__sb_puts(&dpo, "}\n");
            mbpo__sb_puts(&lf, "{\"id\": "); mbpo__sb_json(&lf, it->s.id);
            mbpo__sb_puts(&lf, ", \"conversations\": [");
            if (sys) { mbpo__sb_puts(&lf, "{\"from\": \"system\", \"value\": "); mbpo__sb_json(&lf, sys); mbpo__sb_puts(&lf, "}, "); }
            mbpo__sb_puts(&lf, "{\"from\": \"human\", \"value\": ");
            mbpo__sb_placeholder_text(&lf, it->s.question, it->s.n_images);
            mbpo__sb_puts(&lf, "}], \"chosen\": {\"from\": \"gpt\", \"value\": "); mbpo__sb_json(&lf, it->s.answer);
            mbpo__sb_puts(&lf, "}, \"rejected\": {\"from\": \"gpt\", \"value\": "); mbpo__sb_json(&lf, it->rejected);
            mbpo__sb_puts(&lf, "}, \"images\": ");
            if (!mbpo__sb_abs_images(&lf, it)) goto end;
            mbpo__sb_puts(&lf, "}\n");
        } else {   /* an online prompt with its verifiable label */
            char answer[4] = { 0, 0, 0, 0 };
            if (it->s.kind == MBPO_Q_YESNO) memcpy(answer, it->s.label == 'Y' ? "yes" : "no", it->s.label == 'Y' ? 4 : 3);
            else answer[0] = it->s.label;
            mbpo__sb_puts(&grpo, "{\"id\": "); mbpo__sb_json(&grpo, it->s.id);
            mbpo__sb_puts(&grpo, ", \"prompt\": [{\"role\": \"user\", \"content\": ");
            mbpo__sb_content_parts(&grpo, it->s.question, it->s.n_images);
            mbpo__sb_puts(&grpo, "}], \"images\": ");
            if (!mbpo__sb_abs_images(&grpo, it)) goto end;
            mbpo__sb_puts(&grpo, ", \"answer\": "); mbpo__sb_json(&grpo, answer);
            mbpo__sb_printf(&grpo, ", \"kind\": \"%s\", \"label\": \"%c\", \"reference\": ", it->s.kind == MBPO_Q_YESNO ? "yesno" : "mc",
                            it->s.label);
            mbpo__sb_json(&grpo, it->s.answer);
            mbpo__sb_puts(&grpo, "}\n");
            mbpo__sb_puts(&r1, "{\"id\": "); mbpo__sb_json(&r1, it->s.id);
            mbpo__sb_puts(&r1, ", \"problem\": "); mbpo__sb_placeholder_text(&r1, it->s.question, it->s.n_images);
            mbpo__sb_puts(&r1, ", \"answer\": "); mbpo__sb_json(&r1, answer);
            mbpo__sb_puts(&r1, ", \"images\": ");
            if (!mbpo__sb_abs_images(&r1, it)) goto end;
            mbpo__sb_printf(&r1, ", \"kind\": \"%s\"}\n", it->s.kind == MBPO_Q_YESNO ? "yesno" : "mc");
        }
    }
    mbpo__sb_puts(&info, "{\n  \"mbpo_offline\": {\n    \"file_name\": \"llamafactory_dpo.jsonl\",\n    \"formatting\": \"sharegpt\",\n"
                         "    \"ranking\": true,\n    \"columns\": {\"messages\": \"conversations\", \"chosen\": \"chosen\", "
                         "\"rejected\": \"rejected\", \"images\": \"images\"},\n    \"tags\": {\"role_tag\": \"from\", \"content_tag\": "
                         "\"value\", \"user_tag\": \"human\", \"assistant_tag\": \"gpt\", \"system_tag\": \"system\"}\n  }\n}\n");
    ok = mbpo__write_sb(dir, "trl_dpo.jsonl", &dpo) && mbpo__write_sb(dir, "llamafactory_dpo.jsonl", &lf) &&
         mbpo__write_sb(dir, "dataset_info.json", &info) && mbpo__write_sb(dir, "trl_grpo.jsonl", &grpo) &&
         mbpo__write_sb(dir, "easyr1.jsonl", &r1);
end:
    if (items) mbpo__items_free(items, n);
    mbpo_free(p_off); mbpo_free(p_on); mbpo_free(dir);
    mbpo_free(dpo.s); mbpo_free(lf.s); mbpo_free(grpo.s); mbpo_free(r1.s); mbpo_free(info.s);
    return ok;
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
