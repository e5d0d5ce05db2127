/* test_common.h - what the test files share: counters, checking macros, small helpers
   (defined in test_mbpo.c). */
#ifndef MBPO_TEST_COMMON_H
#define MBPO_TEST_COMMON_H
#include <stdint.h>
#include <stdio.h>

extern int n_passed, n_failed;
extern const char *filter;

#define CHECK(cond, ...) do { if (cond) n_passed++; else { n_failed++; \
    printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)
#define REQUIRE(cond, ...) do { if (!(cond)) { n_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf(" [%s]\n", mbpo_failure_reason()); return; } } while (0)

int close_enough(const char *what, const float *got, const float *ref, int64_t n, double tol, int relative);
int contains(const char *s, const char *sub);
int run_test(const char *name);
float *falloc(int64_t n);
void fill_normal(float *x, int64_t n, mbpo_rng *rng, double scale);
const char *tmpdir(void);
void write_bytes(const char *path, const void *data, size_t n);
/* A tensor of a safetensors file as float32 / int64 (malloc; NULL if absent). */
float *read_f32(const mbpo_st *st, const char *name, int64_t *numel);
int64_t *read_i64(const mbpo_st *st, const char *name, int64_t *numel);
void test_inputs(void);   /* test_inputs.c */
void test_core(void);     /* test_core.c */
void test_runs(void);     /* test_runs.c (uses build/mbpo-mine) */
void test_records(void);  /* test_records.c: checkpoint folders, run records, rotation, logs */
void make_world(const char *dir);           /* test_runs.c: tiny-A model folder, images, data.jsonl */
void write_tiny_tokenizer(const char *path);
void test_cli(void);      /* test_cli.c (uses build/mbpo-*) */

#endif
