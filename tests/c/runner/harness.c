/* harness.c: the runner's counters, checks and shared helpers (see runner.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

/* ---------------------------------------------------------------------------------------------
 * Harness
 * ------------------------------------------------------------------------------------------- */

static int passed, failed;
static int current_failures;
static const char *current_name = "";

void check_failed(const char *file, int line, const char *expression, const char *detail) {
    current_failures++;
    printf("%s:%d: %s: failed: %s%s%s\n", file, line, current_name, expression,
           detail ? ": " : "", detail ? detail : "");
    fflush(stdout);
}

void check_status(const char *file, int line, const char *expression, rnx_status got,
                  rnx_status expected) {
    if (got == expected) return;
    char detail[200];
    snprintf(detail, sizeof detail, "status %d (%s), expected %d (%s)", (int)got,
             rnx_status_string(got), (int)expected, rnx_status_string(expected));
    check_failed(file, line, expression, detail);
}

void check_close(const char *file, int line, const char *expression, const float *got,
                 const float *expected, size_t n, double rtol, double atol) {
    size_t worst = 0, bad = 0;
    double worst_excess = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - (double)expected[i]);
        const double excess = err - (atol + rtol * fabs((double)expected[i]));
        if (!(excess <= 0.0)) { /* NaN counts as a mismatch */
            if (!bad || !(excess <= worst_excess)) worst = i, worst_excess = excess;
            bad++;
        }
    }
    if (!bad) return;
    char detail[200];
    snprintf(detail, sizeof detail, "%zu of %zu differ; worst [%zu]: %.9g vs %.9g", bad, n,
             worst, (double)got[worst], (double)expected[worst]);
    check_failed(file, line, expression, detail);
}

int run_tests(const test_case *tests, size_t n, const char *filter) {
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        current_name = tests[i].name;
        current_failures = 0;
        tests[i].run();
        if (current_failures) {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        } else {
            passed++;
        }
        fflush(stdout);
        ran++;
    }
    current_name = "";
    return ran;
}

int report_tests(void) {
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

static uint64_t next_random(uint64_t *seed) {
    uint64_t s = *seed ? *seed : 0x9E3779B97F4A7C15ull;
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return *seed = s;
}

void fill_uniform(float *out, size_t n, uint64_t *seed, float scale) {
    for (size_t i = 0; i < n; i++)
        out[i] = scale * (float)((double)(next_random(seed) >> 11) * 0x1p-52 - 1.0);
}

int random_below(uint64_t *seed, int n) { return (int)((next_random(seed) >> 33) % (uint64_t)n); }

int supported_isas(rnx_isa out[LAST_ISA]) {
    int n = 0;
    for (int isa = RNX_ISA_SCALAR; isa <= LAST_ISA; isa++)
        if (rnx_isa_supported((rnx_isa)isa)) out[n++] = (rnx_isa)isa;
    return n;
}

float *random_floats(size_t n, uint64_t *seed, float scale) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p) fill_uniform(p, n, seed, scale);
    return p;
}

float *zero_floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

rnx_model *random_model(const rnx_layer *layers, int n_layers, int isa, uint64_t *seed,
                        float scale, float **params) {
    size_t count = 0;
    rnx_model *m = NULL;
    CHECK_STATUS(rnx_param_count(layers, n_layers, &count), RNX_OK);
    float *p = random_floats(count, seed, scale);
    CHECK_STATUS(rnx_model_create(&m, layers, n_layers, isa, p), RNX_OK);
    if (params)
        *params = p;
    else
        free(p);
    return m;
}

int cell_gates(int cell) {
    return cell == RNX_CELL_LSTM ? 4 : cell == RNX_CELL_GRU || cell == RNX_CELL_GRU_RESET_BEFORE
                                           ? 3
                                           : 1;
}

/* ---------------------------------------------------------------------------------------------
 * Files built in memory
 * ------------------------------------------------------------------------------------------- */

struct file_builder {
    char *json;          /* the header so far, without the closing brace */
    size_t json_len;
    unsigned char *data; /* the tensors' bytes so far */
    size_t data_len;
    char *meta;          /* "key":"value" pairs so far, comma-separated */
    size_t meta_len;
};

static void append(char **buffer, size_t *len, const char *text) {
    const size_t n = strlen(text);
    *buffer = realloc(*buffer, *len + n + 1);
    memcpy(*buffer + *len, text, n + 1);
    *len += n;
}

file_builder *builder_new(void) { return calloc(1, sizeof(file_builder)); }

void builder_tensor(file_builder *fb, const char *name, const char *dtype, int ndim,
                    const uint64_t *shape, const void *data, size_t nbytes) {
    char entry[512];
    int at = snprintf(entry, sizeof entry, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                      fb->json_len ? "," : "", name, dtype);
    for (int d = 0; d < ndim; d++)
        at += snprintf(entry + at, sizeof entry - (size_t)at, "%s%llu", d ? "," : "",
                       (unsigned long long)shape[d]);
    snprintf(entry + at, sizeof entry - (size_t)at, "],\"data_offsets\":[%zu,%zu]}",
             fb->data_len, fb->data_len + nbytes);
    append(&fb->json, &fb->json_len, entry);
    fb->data = realloc(fb->data, fb->data_len + nbytes + 1);
    memcpy(fb->data + fb->data_len, data, nbytes);
    fb->data_len += nbytes;
}

void builder_f32(file_builder *fb, const char *name, int ndim, const uint64_t *shape,
                 const float *data) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    builder_tensor(fb, name, "F32", ndim, shape, data, n * sizeof(float));
}

void builder_meta(file_builder *fb, const char *key, const char *value) {
    char entry[512];
    snprintf(entry, sizeof entry, "%s\"%s\":\"%s\"", fb->meta_len ? "," : "", key, value);
    append(&fb->meta, &fb->meta_len, entry);
}

unsigned char *builder_finish(file_builder *fb, size_t *size) {
    char *header = NULL;
    size_t len = 0;
    append(&header, &len, "{");
    if (fb->json_len) append(&header, &len, fb->json);
    if (fb->meta_len) {
        append(&header, &len, fb->json_len ? ",\"__metadata__\":{" : "\"__metadata__\":{");
        append(&header, &len, fb->meta);
        append(&header, &len, "}");
    }
    append(&header, &len, "}");
    *size = 8 + len + fb->data_len;
    unsigned char *out = malloc(*size);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)len >> (8 * i));
    memcpy(out + 8, header, len);
    if (fb->data_len) memcpy(out + 8 + len, fb->data, fb->data_len);
    free(header);
    free(fb->json), free(fb->data), free(fb->meta), free(fb);
    return out;
}

unsigned char *version1_file(const char *cell, int I, int H, const float *params,
                             const char *key, const char *value, const char *skip,
                             size_t *size) {
    const int G = strcmp(cell, "lstm") == 0 ? 4 : strcmp(cell, "gru") == 0 ? 3 : 1;
    char input_size[16], hidden_size[16];
    snprintf(input_size, sizeof input_size, "%d", I);
    snprintf(hidden_size, sizeof hidden_size, "%d", H);
    const char *meta[][2] = {{"format", "rnnext"},       {"format_version", "1"},
                             {"cell", cell},             {"input_size", input_size},
                             {"hidden_size", hidden_size}, {"num_layers", "1"},
                             {"bidirectional", "0"}};
    file_builder *fb = builder_new();
    int replaced = 0;
    for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++) {
        const int match = key && strcmp(key, meta[i][0]) == 0;
        replaced |= match;
        if (!match || value) builder_meta(fb, meta[i][0], match ? value : meta[i][1]);
    }
    if (key && !replaced && value) builder_meta(fb, key, value);
    const uint64_t shapes[4][2] = {{(uint64_t)G * H, (uint64_t)I}, {(uint64_t)G * H, (uint64_t)H},
                                   {(uint64_t)G * H}, {(uint64_t)G * H}};
    const char *names[4] = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"};
    for (int i = 0; i < 4; i++) {
        const int ndim = i < 2 ? 2 : 1;
        if (!skip || strcmp(skip, names[i]) != 0)
            builder_f32(fb, names[i], ndim, shapes[i], params);
        params += shapes[i][0] * (ndim == 2 ? shapes[i][1] : 1);
    }
    return builder_finish(fb, size);
}
