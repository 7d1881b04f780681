/* test_core.c: the C core used the way an embedding program uses it, without Python.
 *
 *   test_core IN OUT
 *
 * IN (written by tests/test_c_api.py):
 *   int32 header[12]: cell, I, H, L, bidirectional, isa, B, T, n_threads, has_lengths, has_state,
 *                     the number of parameters the Python side counted
 *   float32 params (that many), float32 x (B, T, I), int32 lengths (B) if has_lengths,
 *   float32 h0 and c0 (L*D, B, H) each if has_state
 * OUT: float32 y (B, T, D*H), h_n (L*D, B, H), c_n (L*D, B, H), for the Python side to compare
 *   with the NumPy reference.
 *
 * Before the forward pass it checks the API's contract from rnnext.h (versions, status strings,
 * NULL and out-of-range arguments, free(NULL)); every broken promise is printed to stderr and
 * the exit status is 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rnnext.h"

static int failures = 0;

#define EXPECT(cond)                                                                          \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                       \
        }                                                                                     \
    } while (0)

enum { CELL, IN_SIZE, HIDDEN, LAYERS, BIDIR, ISA, BATCH, STEPS, THREADS, HAS_LENGTHS,
       HAS_STATE, NPARAMS, HEADER };

/* ---------------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------------- */

/* n items of `size` bytes from f into a new buffer, or NULL on a short read */
static void *read_array(FILE *f, size_t n, size_t size) {
    void *p = malloc(n * size + 1);
    if (p && fread(p, size, n, f) != n) {
        free(p);
        return NULL;
    }
    return p;
}

static int write_array(FILE *f, const float *p, size_t n) {
    return fwrite(p, sizeof *p, n, f) == n;
}

/* ---------------------------------------------------------------------------------------------
 * The contract of rnnext.h
 * ------------------------------------------------------------------------------------------- */

static void check_versions_and_names(void) {
    EXPECT(rnx_version_number() == RNX_VERSION_NUMBER);
    for (int s = RNX_OK; s <= RNX_ERR_OVERFLOW + 1; s++) {
        const char *text = rnx_status_string((rnx_status)s);
        EXPECT(text != NULL && text[0] != '\0');
    }
    EXPECT(strcmp(rnx_status_string(RNX_OK), rnx_status_string(RNX_ERR_BAD_ARGUMENT)) != 0);
    EXPECT(strcmp(rnx_isa_name(RNX_ISA_SCALAR), "scalar") == 0);
    EXPECT(strcmp(rnx_isa_name(RNX_ISA_AVX2), "avx2") == 0);
    EXPECT(strcmp(rnx_isa_name(RNX_ISA_AVX512), "avx512") == 0);
    EXPECT(strcmp(rnx_isa_name((rnx_isa)42), "unknown") == 0);
    EXPECT(rnx_isa_supported(RNX_ISA_SCALAR));
    EXPECT(rnx_max_threads() >= 1);
    EXPECT(rnx_has_openmp() == 0 || rnx_has_openmp() == 1);
}

/* every NULL and out-of-range argument of the model calls gives its status, never a model */
static void check_model_arguments(const rnx_config *good, const float *params, size_t nparams) {
    size_t count = 0;
    EXPECT(rnx_param_count(good, &count) == RNX_OK && count == nparams);
    EXPECT(rnx_param_count(NULL, &count) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_param_count(good, NULL) == RNX_ERR_NULL_ARGUMENT);

    /* a failed create must set *out to NULL, so m starts as some other pointer */
    rnx_model *const not_null = (rnx_model *)&failures;
    rnx_model *m = not_null;
    EXPECT(rnx_model_create(NULL, good, params) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_model_create(&m, NULL, params) == RNX_ERR_NULL_ARGUMENT && m == NULL);
    m = not_null;
    EXPECT(rnx_model_create(&m, good, NULL) == RNX_ERR_NULL_ARGUMENT && m == NULL);

    rnx_config bad[9];
    for (int i = 0; i < 9; i++) bad[i] = *good;
    bad[0].cell = -1;
    bad[1].cell = 99;
    bad[2].input_size = 0;
    bad[3].hidden_size = 0;
    bad[4].num_layers = 0;
    bad[5].bidirectional = 2;
    bad[6].isa = -1;
    bad[7].isa = RNX_ISA_AVX512 + 1;
    bad[8].hidden_size = -5;
    for (int i = 0; i < 9; i++) {
        m = not_null;
        EXPECT(rnx_param_count(&bad[i], &count) == RNX_ERR_BAD_CONFIG);
        EXPECT(rnx_model_create(&m, &bad[i], params) == RNX_ERR_BAD_CONFIG && m == NULL);
    }
    rnx_model_free(NULL);
}

/* NULL pointers, an empty batch, no steps and lengths outside [1, T] are refused */
static void check_forward_arguments(const rnx_model *m, float *y, const float *x, int B, int T) {
    int32_t *lengths = malloc((size_t)B * sizeof *lengths);
    for (int b = 0; b < B; b++) lengths[b] = T;
    EXPECT(rnx_forward(NULL, y, NULL, NULL, x, NULL, NULL, NULL, B, T, 1) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_forward(m, y, NULL, NULL, NULL, NULL, NULL, NULL, B, T, 1) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, 0, T, 1) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, -1, T, 1) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, B, 0, 1) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = 0;
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, lengths, B, T, 1) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = T + 1;
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, lengths, B, T, 1) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = -1;
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, lengths, B, T, 1) == RNX_ERR_BAD_ARGUMENT);
    free(lengths);
}

/* ---------------------------------------------------------------------------------------------
 * The forward pass
 * ------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    int32_t h[HEADER];
    if (!in || fread(h, sizeof *h, HEADER, in) != HEADER) {
        fprintf(stderr, "cannot read the header of %s\n", argv[1]);
        return 2;
    }
    const int B = h[BATCH], T = h[STEPS], H = h[HIDDEN], D = 1 + h[BIDIR];
    const size_t nx = (size_t)B * T * h[IN_SIZE], ny = (size_t)B * T * D * H;
    const size_t ns = (size_t)h[LAYERS] * D * B * H;
    float *params = read_array(in, (size_t)h[NPARAMS], sizeof(float));
    float *x = read_array(in, nx, sizeof(float));
    int32_t *lengths = h[HAS_LENGTHS] ? read_array(in, (size_t)B, sizeof(int32_t)) : NULL;
    float *h0 = h[HAS_STATE] ? read_array(in, ns, sizeof(float)) : NULL;
    float *c0 = h[HAS_STATE] ? read_array(in, ns, sizeof(float)) : NULL;
    fclose(in);
    if (!params || !x || (h[HAS_LENGTHS] && !lengths) || (h[HAS_STATE] && (!h0 || !c0))) {
        fprintf(stderr, "%s is shorter than its header says\n", argv[1]);
        return 2;
    }

    const rnx_config config = {h[CELL], h[IN_SIZE], H, h[LAYERS], h[BIDIR], h[ISA]};
    check_versions_and_names();
    check_model_arguments(&config, params, (size_t)h[NPARAMS]);

    rnx_model *model = NULL;
    rnx_status s = rnx_model_create(&model, &config, params);
    if (s != RNX_OK) {
        fprintf(stderr, "rnx_model_create: %s\n", rnx_status_string(s));
        return 1;
    }
    const rnx_config got = rnx_model_config(model);
    EXPECT(got.cell == config.cell && got.input_size == config.input_size &&
           got.hidden_size == H && got.num_layers == config.num_layers &&
           got.bidirectional == config.bidirectional);
    EXPECT(got.isa != RNX_ISA_AUTO && (config.isa == RNX_ISA_AUTO || got.isa == config.isa));

    float *y = malloc(ny * sizeof *y), *h_n = malloc(ns * sizeof *h_n);
    float *c_n = malloc(ns * sizeof *c_n), *h_alone = malloc(ns * sizeof *h_alone);
    float *y_default = malloc(ny * sizeof *y_default);
    check_forward_arguments(model, y, x, B, T);
    memset(c_n, 0, ns * sizeof *c_n); /* only the LSTM writes it */
    s = rnx_forward(model, y, h_n, c_n, x, h0, c0, lengths, B, T, h[THREADS]);
    EXPECT(s == RNX_OK);
    /* the optional outputs are optional, and n_threads <= 0 (all threads) changes nothing */
    EXPECT(rnx_forward(model, NULL, h_alone, NULL, x, h0, c0, lengths, B, T, h[THREADS]) == RNX_OK);
    EXPECT(memcmp(h_alone, h_n, ns * sizeof *h_n) == 0);
    EXPECT(rnx_forward(model, y_default, NULL, NULL, x, h0, c0, lengths, B, T, 0) == RNX_OK);
    EXPECT(memcmp(y_default, y, ny * sizeof *y) == 0);

    FILE *out = fopen(argv[2], "wb");
    if (!out || !write_array(out, y, ny) || !write_array(out, h_n, ns) ||
        !write_array(out, c_n, ns) || fclose(out) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        failures++;
    }
    rnx_model_free(model);
    free(params), free(x), free(lengths), free(h0), free(c0);
    free(y), free(h_n), free(c_n), free(h_alone), free(y_default);
    return failures ? 1 : 0;
}
