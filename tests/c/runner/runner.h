/* runner.h: the C test runner's harness and the helpers its tests share.
 *
 * A test is a function of no arguments, listed with TEST() in one of the suites (a
 * test_case array per file, gathered by main.c). CHECK and its kin count a failure and print
 * file:line and the expression; a test passes when none of its checks failed. main.c prints the
 * closing line "N passed, N failed" and exits 1 when any failed. */
#ifndef RUNNER_H
#define RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include "rnnext.h"

/* ---------------------------------------------------------------------------------------------
 * Harness
 * ------------------------------------------------------------------------------------------- */

typedef struct test_case {
    const char *name;
    void (*run)(void);
} test_case;

#define TEST(fn) {#fn, fn}

/* Counts a failed check of the running test and prints where and what. */
void check_failed(const char *file, int line, const char *expression, const char *detail);

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond, NULL);                           \
    } while (0)

/* A call's status against the expected one; a mismatch prints both statuses' text. */
#define CHECK_STATUS(call, expected)                                                          \
    check_status(__FILE__, __LINE__, #call, (call), (expected))
void check_status(const char *file, int line, const char *expression, rnx_status got,
                  rnx_status expected);

/* |got - expected| <= atol + rtol * |expected| elementwise; a mismatch prints the worst index. */
#define CHECK_CLOSE(got, expected, n, rtol, atol)                                             \
    check_close(__FILE__, __LINE__, #got " ~ " #expected, (got), (expected), (n), (rtol),     \
                (atol))
void check_close(const char *file, int line, const char *expression, const float *got,
                 const float *expected, size_t n, double rtol, double atol);

/* The float32 tolerance of the whole project (DESIGN.md: rtol 1e-4, atol 1e-5). */
#define F32_RTOL 1e-4
#define F32_ATOL 1e-5

/* Runs each test whose name contains `filter` (all when NULL); returns how many ran. */
int run_tests(const test_case *tests, size_t n, const char *filter);
/* Prints "N passed, N failed"; the exit status: 1 when any test failed. */
int report_tests(void);

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

/* Uniform floats in [-scale, scale) from a xorshift generator that *seed carries. */
void fill_uniform(float *out, size_t n, uint64_t *seed, float scale);
/* A uniform integer in [0, n). */
int random_below(uint64_t *seed, int n);

/* The last value of rnx_isa: the instruction sets are RNX_ISA_SCALAR .. LAST_ISA, LAST_ISA of them
 * (RNX_ISA_AUTO is 0). */
#define LAST_ISA RNX_ISA_AVX_VNNI
/* The instruction sets this CPU runs, scalar first; returns how many (1 to LAST_ISA). */
int supported_isas(rnx_isa out[LAST_ISA]);

/* A model of `layers` with uniform random parameters in [-scale, scale), which stay in
 * *params (the caller frees them) when params is not NULL. A failing create is a failed check
 * and returns NULL. */
rnx_model *random_model(const rnx_layer *layers, int n_layers, int isa, uint64_t *seed,
                        float scale, float **params);

/* An array of n floats (the caller frees it): uniform in [-scale, scale), or zeros. */
float *random_floats(size_t n, uint64_t *seed, float scale);
float *zero_floats(size_t n);

/* The gates of a cell: 1, 4 or 3. */
int cell_gates(int cell);

/* One create, forward, stream and training step of a few models and a file load, everything
 * freed; failed calls included. The leak loop repeats it under LeakSanitizer. */
void exercise_lifecycle(void);

/* A safetensors file built in memory (tests of the parser and loader). */
typedef struct file_builder file_builder;
file_builder *builder_new(void);
/* A tensor of `dtype` ("F32", ...) and `shape` whose raw bytes are data (nbytes). */
void builder_tensor(file_builder *fb, const char *name, const char *dtype, int ndim,
                    const uint64_t *shape, const void *data, size_t nbytes);
/* A float32 tensor. */
void builder_f32(file_builder *fb, const char *name, int ndim, const uint64_t *shape,
                 const float *data);
void builder_meta(file_builder *fb, const char *key, const char *value);
/* The file's bytes (the caller frees them) and their count in *size; frees the builder. */
unsigned char *builder_finish(file_builder *fb, size_t *size);

/* A format-version-1 file of a one-layer `cell` ("rnn", "lstm", "gru") stack, I inputs and H
 * units, with the parameters in `params` (rnx_model_create's order); the caller frees it. For
 * files that break one rule: metadata `key` gets `value` (added when new; left out when value
 * is NULL), and the tensor called `skip` is left out (NULL for none). */
unsigned char *version1_file(const char *cell, int I, int H, const float *params,
                             const char *key, const char *value, const char *skip,
                             size_t *size);

/* The suites. */
extern const test_case api_tests[], forward_tests[], stream_tests[], file_tests[],
    train_tests[];
extern const size_t api_test_count, forward_test_count, stream_test_count, file_test_count,
    train_test_count;
/* The corpus test (test_files.c) and the directory it reads, set by --corpus. */
extern const test_case corpus_test;
extern const char *corpus_dir;
/* The Python-fed comparison (stack.c): reads IN, writes OUT; see stack.c. */
int run_stack(const char *in_path, const char *out_path);

#endif /* RUNNER_H */
