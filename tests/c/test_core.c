/* test_core.c: the C core used the way an embedding program uses it, without Python.
 *
 *   test_core IN OUT
 *
 * IN (written by tests/test_c_api.py):
 *   int32 header[12]: cell, I, H, L, bidirectional, isa, B, T, n_threads, has_lengths, has_state,
 *                     the number of parameters the Python side counted
 *   float32 params (that many), float32 x (B, T, I), int32 lengths (B) if has_lengths,
 *   float32 h0 and c0 (L*D, B, H) each if has_state
 * OUT: float32 y (B, T, D*H), h_n (L*D, B, H), c_n (L*D, B, H), then the layer-list model's
 *   (check_layer_list_model) y (5, 3), h (5 * 44) and c (5 * 6), for the Python side to compare
 *   with the NumPy reference.
 *
 * The model is the uniform stack as a layer list (rnx_recurrent_layer per layer). Before the
 * forward pass it checks the API's contract from rnnext.h (versions, status strings, NULL and
 * out-of-range arguments and layer fields, list order, info, streams, ids, free(NULL)); every
 * broken promise is printed to stderr and the exit status is 1. */
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
    EXPECT(rnx_max_threads() >= 1 && rnx_max_threads() <= RNX_MAX_THREADS);
    EXPECT(rnx_has_openmp() == 0 || rnx_has_openmp() == 1);
}

/* every NULL and out-of-range argument of the model calls gives its status, never a model */
static void check_model_arguments(const rnx_layer *good, int n, int isa, const float *params,
                                  size_t nparams) {
    size_t count = 0;
    EXPECT(rnx_param_count(good, n, &count) == RNX_OK && count == nparams);
    EXPECT(rnx_param_count(NULL, n, &count) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_param_count(good, n, NULL) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_param_count(good, 0, &count) == RNX_ERR_BAD_CONFIG);
    EXPECT(rnx_param_count(good, RNX_MAX_LAYERS + 1, &count) == RNX_ERR_BAD_CONFIG);

    /* a failed create must set *out to NULL, so m starts as some other pointer */
    rnx_model *const not_null = (rnx_model *)&failures;
    rnx_model *m = not_null;
    EXPECT(rnx_model_create(NULL, good, n, isa, params) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(rnx_model_create(&m, NULL, n, isa, params) == RNX_ERR_NULL_ARGUMENT && m == NULL);
    m = not_null;
    EXPECT(rnx_model_create(&m, good, n, isa, NULL) == RNX_ERR_NULL_ARGUMENT && m == NULL);
    m = not_null;
    EXPECT(rnx_model_create(&m, good, n, -1, params) == RNX_ERR_BAD_CONFIG && m == NULL);
    m = not_null;
    EXPECT(rnx_model_create(&m, good, n, RNX_ISA_AVX512 + 1, params) == RNX_ERR_BAD_CONFIG &&
           m == NULL);

    /* one field of the first layer out of range at a time */
    enum { NBAD = 14 };
    rnx_layer bad[NBAD];
    for (int i = 0; i < NBAD; i++) bad[i] = good[0];
    bad[0].cell = -1;
    bad[1].cell = 99;
    bad[2].input_size = 0;
    bad[3].units = 0;
    bad[4].units = -5;
    bad[5].units = RNX_MAX_SIZE + 1;
    bad[6].direction = 3;
    bad[7].kind = 9;
    bad[8].merge = 4;
    bad[9].mask_zero = 1;          /* an embedding's field */
    bad[10].readout = 1;           /* a readout's field */
    bad[11].activations[0] = RNX_ACT_SOFTMAX;
    bad[12].clip = -1.0f;
    bad[13].proj_size = bad[13].units; /* proj_size < H, and the LSTM's only */
    rnx_layer *list = malloc((size_t)n * sizeof *list);
    memcpy(list, good, (size_t)n * sizeof *list);
    for (int i = 0; i < NBAD; i++) {
        list[0] = bad[i];
        m = not_null;
        EXPECT(rnx_param_count(list, n, &count) == RNX_ERR_BAD_CONFIG);
        EXPECT(rnx_model_create(&m, list, n, isa, params) == RNX_ERR_BAD_CONFIG && m == NULL);
    }
    free(list);

    /* the order of a list: embedding first, readout before dense layers, widths that chain */
    const rnx_layer rec = good[0];
    const int W = rec.direction == RNX_DIRECTION_BIDIRECTIONAL ? 2 * rec.units : rec.units;
    const rnx_layer emb = rnx_embedding_layer(7, rec.input_size, -1);
    const rnx_layer ro = rnx_readout_layer(RNX_READOUT_LAST);
    const rnx_layer dn = rnx_dense_layer(W, 3, RNX_ACT_SOFTMAX);
    const rnx_layer ok[] = {emb, rec, ro, dn};
    EXPECT(rnx_param_count(ok, 4, &count) == RNX_OK);
    const rnx_layer orders[][3] = {{rec, emb, ro}, {rec, dn, ro}, {ro, rec, dn}, {rec, ro, ro},
                                   {emb, ro, dn}};
    for (int i = 0; i < 5; i++) EXPECT(rnx_param_count(orders[i], 3, &count) == RNX_ERR_BAD_CONFIG);
    rnx_layer wide = dn;
    wide.input_size = W + 1;
    const rnx_layer widths[] = {rec, wide};
    EXPECT(rnx_param_count(widths, 2, &count) == RNX_ERR_BAD_CONFIG);
    rnx_model_free(NULL);
}

/* NULL pointers, an empty batch, no steps, lengths outside [1, T], ids given to a model of float
 * inputs, lengths with a mask and mask values other than 0/1 are refused */
static void check_forward_arguments(const rnx_model *m, float *y, const float *x, int B, int T) {
    int32_t *lengths = malloc((size_t)B * sizeof *lengths);
    int32_t *ids = calloc((size_t)B * T, sizeof *ids);
    uint8_t *mask = malloc((size_t)B * T);
    memset(mask, 1, (size_t)B * T);
    for (int b = 0; b < B; b++) lengths[b] = T;
#define FWD(M, X, IDS, L, MASK, B_, T_) rnx_forward(M, y, NULL, NULL, X, IDS, NULL, NULL, L, MASK, B_, T_, 1)
    EXPECT(FWD(NULL, x, NULL, NULL, NULL, B, T) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(FWD(m, NULL, NULL, NULL, NULL, B, T) == RNX_ERR_NULL_ARGUMENT);
    EXPECT(FWD(m, x, ids, NULL, NULL, B, T) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(FWD(m, x, NULL, NULL, NULL, 0, T) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(FWD(m, x, NULL, NULL, NULL, -1, T) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(FWD(m, x, NULL, NULL, NULL, B, 0) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(FWD(m, x, NULL, lengths, mask, B, T) == RNX_ERR_BAD_ARGUMENT);
    mask[B * T - 1] = 2;
    EXPECT(FWD(m, x, NULL, NULL, mask, B, T) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = 0;
    EXPECT(FWD(m, x, NULL, lengths, NULL, B, T) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = T + 1;
    EXPECT(FWD(m, x, NULL, lengths, NULL, B, T) == RNX_ERR_BAD_ARGUMENT);
    lengths[B - 1] = -1;
    EXPECT(FWD(m, x, NULL, lengths, NULL, B, T) == RNX_ERR_BAD_ARGUMENT);
#undef FWD
    /* more threads than RNX_MAX_THREADS: refused before any thread starts */
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T,
                       RNX_MAX_THREADS + 1) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 1 << 30) ==
           RNX_ERR_BAD_ARGUMENT);
    free(lengths), free(ids), free(mask);
}

/* the training calls refuse more threads than RNX_MAX_THREADS, and run after a refusal */
static void check_training_threads(const rnx_model *m, const float *x, int B, int T) {
    const rnx_model_info info = rnx_model_get_info(m);
    rnx_tape *tape = NULL;
    float *grads = malloc(info.recurrent_param_count * sizeof *grads);
    EXPECT(rnx_tape_create(&tape, m, B, T) == RNX_OK);
    if (!tape || !grads) {
        free(grads);
        rnx_tape_free(tape);
        return;
    }
    EXPECT(rnx_forward_train(m, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T,
                             RNX_MAX_THREADS + 1) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_forward_train(m, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T,
                             RNX_MAX_THREADS) == RNX_OK);
    EXPECT(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL,
                        RNX_MAX_THREADS + 1) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 2) == RNX_OK);
    free(grads);
    rnx_tape_free(tape);
}

/* the info and list a model reports, its streams' statuses, and an embedding model's ids */
static void check_info_and_streams(const rnx_model *m, const rnx_layer *layers, int n, int isa) {
    const rnx_model_info info = rnx_model_get_info(m);
    const rnx_layer top = layers[n - 1];
    const int D = top.direction == RNX_DIRECTION_BIDIRECTIONAL ? 2 : 1;
    EXPECT(info.isa != RNX_ISA_AUTO && (isa == RNX_ISA_AUTO || info.isa == isa));
    EXPECT(info.n_layers == n && info.n_recurrent == n && !info.takes_ids && info.per_step);
    EXPECT(info.input_size == layers[0].input_size && info.output_size == D * top.units);
    EXPECT(info.state_size == (size_t)n * D * top.units);
    EXPECT(info.cell_size == (top.cell == RNX_CELL_LSTM ? info.state_size : 0));
    EXPECT(info.streamable == (D == 1) && !info.folded && info.recurrent_param_offset == 0);
    rnx_model_info none = rnx_model_get_info(NULL);
    EXPECT(none.n_layers == 0 && none.output_size == 0);
    rnx_layer got;
    EXPECT(rnx_model_layer(m, n - 1, &got) == RNX_OK && memcmp(&got, &top, sizeof got) == 0);
    EXPECT(rnx_model_layer(m, n, &got) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_model_layer(m, -1, &got) == RNX_ERR_BAD_ARGUMENT);
    EXPECT(rnx_model_layer(NULL, 0, &got) == RNX_ERR_NULL_ARGUMENT);

    rnx_stream *s = (rnx_stream *)&failures;
    EXPECT(rnx_stream_create(&s, m, 0) == (D == 1 ? RNX_ERR_BAD_ARGUMENT : RNX_ERR_BAD_CONFIG) &&
           s == NULL);
    EXPECT(rnx_stream_create(&s, NULL, 1) == RNX_ERR_NULL_ARGUMENT && s == NULL);
    rnx_stream_free(NULL);
    if (D == 1 && rnx_stream_create(&s, m, 2) == RNX_OK) {
        float *x = calloc(2 * (size_t)info.input_size, sizeof *x);
        const int32_t ids[2] = {0, 0};
        EXPECT(rnx_stream_step(s, NULL, NULL, NULL) == RNX_ERR_NULL_ARGUMENT);
        EXPECT(rnx_stream_step(s, NULL, x, ids) == RNX_ERR_BAD_ARGUMENT);
        EXPECT(rnx_stream_step(s, NULL, x, NULL) == RNX_OK);
        EXPECT(rnx_stream_reset(NULL, NULL, NULL) == RNX_ERR_NULL_ARGUMENT);
        EXPECT(rnx_stream_state(NULL, NULL, NULL) == RNX_ERR_NULL_ARGUMENT);
        free(x);
        rnx_stream_free(s);
    }

    /* an embedding before the same layer: ids, checked before any work */
    rnx_layer with_ids[2] = {rnx_embedding_layer(5, layers[0].input_size, 0), layers[0]};
    size_t count;
    EXPECT(rnx_param_count(with_ids, 2, &count) == RNX_OK);
    float *params = calloc(count, sizeof *params);
    rnx_model *e = NULL;
    EXPECT(rnx_model_create(&e, with_ids, 2, isa, params) == RNX_OK);
    if (e) {
        EXPECT(rnx_model_get_info(e).takes_ids && rnx_model_get_info(e).input_size == 5);
        int32_t ids[6] = {0, 1, 2, 3, 4, 0};
        const float *x = params; /* any float array: a model of ids refuses one */
        float *y = malloc(6 * (size_t)rnx_model_get_info(e).output_size * sizeof *y);
        y[0] = 42.0f;
        EXPECT(rnx_forward(e, NULL, NULL, NULL, NULL, ids, NULL, NULL, NULL, NULL, 2, 3, 1) == RNX_OK);
        EXPECT(rnx_forward(e, NULL, NULL, NULL, x, ids, NULL, NULL, NULL, NULL, 2, 3, 1) ==
               RNX_ERR_BAD_ARGUMENT);
        EXPECT(rnx_forward(e, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2, 3, 1) ==
               RNX_ERR_NULL_ARGUMENT);
        ids[5] = 5;
        EXPECT(rnx_forward(e, y, NULL, NULL, NULL, ids, NULL, NULL, NULL, NULL, 2, 3, 1) ==
                   RNX_ERR_BAD_ARGUMENT && y[0] == 42.0f); /* refused before any work */
        ids[5] = -1;
        EXPECT(rnx_forward(e, NULL, NULL, NULL, NULL, ids, NULL, NULL, NULL, NULL, 2, 3, 1) ==
               RNX_ERR_BAD_ARGUMENT);
        free(y);
        rnx_model_free(e);
    }
    free(params);
}

/* The layer-list model's results, written after the stack's for tests/test_c_api.py */
enum { LIST_B = 5, LIST_T = 23, LIST_OUT = 3, LIST_STATE = 2 * 20 + 4, LIST_CELL = 6 };
static float list_y[LIST_B * LIST_OUT], list_h[LIST_B * LIST_STATE], list_c[LIST_B * LIST_CELL];

/* A model with every part (embedding with mask_zero, a bidirectional sum merge, a reverse-only
 * layer on the plain path, a max readout, dense layers) over a mask: the same results on 1, 2
 * and 3 threads, outputs in [0, 1] from the softmax, a stream of its forward-only variant equal
 * to forward. Under the sanitizers this walks every new path of the driver. Its results go to
 * list_y, list_h, list_c (the Python side rebuilds the same model and inputs). */
static void check_layer_list_model(int isa) {
    rnx_layer layers[6];
    layers[0] = rnx_embedding_layer(9, 5, 0);
    layers[0].mask_zero = 1;
    layers[1] = rnx_recurrent_layer(RNX_CELL_GRU, 5, 20, RNX_DIRECTION_BIDIRECTIONAL);
    layers[1].merge = RNX_MERGE_SUM;
    layers[2] = rnx_recurrent_layer(RNX_CELL_LSTM, 20, 6, RNX_DIRECTION_REVERSE);
    layers[2].peepholes = 1;
    layers[2].proj_size = 4;
    layers[3] = rnx_readout_layer(RNX_READOUT_MAX);
    layers[4] = rnx_dense_layer(4, 7, RNX_ACT_RELU);
    layers[5] = rnx_dense_layer(7, 3, RNX_ACT_SOFTMAX);
    size_t count = 0;
    EXPECT(rnx_param_count(layers, 6, &count) == RNX_OK);
    float *params = malloc(count * sizeof *params);
    for (size_t i = 0; i < count; i++) params[i] = (float)((i * 7919) % 1000) / 2000.0f - 0.25f;
    rnx_model *m = NULL;
    EXPECT(rnx_model_create(&m, layers, 6, isa, params) == RNX_OK);
    if (!m) {
        free(params);
        return;
    }
    const rnx_model_info info = rnx_model_get_info(m);
    EXPECT(info.takes_ids && !info.per_step && info.output_size == 3 && !info.streamable);
    EXPECT(info.state_size == 2 * 20 + 4 && info.cell_size == 6 && info.folded);
    enum { B = LIST_B, T = LIST_T };
    int32_t ids[B * T];
    uint8_t mask[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 5) % 9;
        mask[i] = (uint8_t)(i % 7 != 3 && i >= T);  /* row 0 has no valid step */
    }
    float y[3][B * 3], h[3][B * 44], c[3][B * 6];
    for (int n = 1; n <= 3; n++)
        EXPECT(rnx_forward(m, y[n - 1], h[n - 1], c[n - 1], NULL, ids, NULL, NULL, NULL, mask, B,
                           T, n) == RNX_OK);
    for (int n = 1; n < 3; n++)
        EXPECT(!memcmp(y[0], y[n], sizeof y[0]) && !memcmp(h[0], h[n], sizeof h[0]) &&
               !memcmp(c[0], c[n], sizeof c[0]));
    for (int i = 0; i < B * 3; i++) EXPECT(y[0][i] >= 0.0f && y[0][i] <= 1.0f);
    memcpy(list_y, y[1], sizeof list_y);
    memcpy(list_h, h[1], sizeof list_h);
    memcpy(list_c, c[1], sizeof list_c);
    rnx_model_free(m);

    /* forward-only: a stream's steps are forward's per-step outputs */
    layers[2].direction = RNX_DIRECTION_FORWARD;
    layers[1].direction = RNX_DIRECTION_FORWARD;
    layers[1].merge = 0;
    layers[3] = rnx_readout_layer(RNX_READOUT_SEQUENCE);
    EXPECT(rnx_param_count(layers, 6, &count) == RNX_OK);
    EXPECT(rnx_model_create(&m, layers, 6, isa, params) == RNX_OK); /* fewer params: a prefix */
    rnx_stream *s = NULL;
    if (m && rnx_stream_create(&s, m, B) == RNX_OK) {
        float ys[B * T * 3], step[B * 3];
        int32_t column[B];
        EXPECT(rnx_forward(m, ys, NULL, NULL, NULL, ids, NULL, NULL, NULL, NULL, B, T, 2) == RNX_OK);
        for (int t = 0; t < T; t++) {
            for (int b = 0; b < B; b++) column[b] = ids[b * T + t];
            EXPECT(rnx_stream_step(s, step, NULL, column) == RNX_OK);
            for (int b = 0; b < B; b++)
                EXPECT(!memcmp(step + b * 3, ys + ((size_t)b * T + t) * 3, 3 * sizeof(float)));
        }
        column[B - 1] = 9;
        EXPECT(rnx_stream_step(s, step, NULL, column) == RNX_ERR_BAD_ARGUMENT);
    }
    rnx_stream_free(s);
    rnx_model_free(m);
    free(params);
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

    /* the uniform stack as a layer list: what torch.nn.LSTM/GRU/RNN(num_layers=L) is */
    const int L = h[LAYERS];
    rnx_layer *layers = malloc((size_t)L * sizeof *layers);
    for (int l = 0; l < L; l++)
        layers[l] = rnx_recurrent_layer((rnx_cell)h[CELL], l ? D * H : h[IN_SIZE], H,
                                        D == 2 ? RNX_DIRECTION_BIDIRECTIONAL : RNX_DIRECTION_FORWARD);
    check_versions_and_names();
    check_model_arguments(layers, L, h[ISA], params, (size_t)h[NPARAMS]);

    rnx_model *model = NULL;
    rnx_status s = rnx_model_create(&model, layers, L, h[ISA], params);
    if (s != RNX_OK) {
        fprintf(stderr, "rnx_model_create: %s\n", rnx_status_string(s));
        return 1;
    }
    check_info_and_streams(model, layers, L, h[ISA]);
    check_layer_list_model(h[ISA]);

    float *y = malloc(ny * sizeof *y), *h_n = malloc(ns * sizeof *h_n);
    float *c_n = malloc(ns * sizeof *c_n), *h_alone = malloc(ns * sizeof *h_alone);
    float *y_default = malloc(ny * sizeof *y_default);
    check_forward_arguments(model, y, x, B, T);
    check_training_threads(model, x, B, T);
    memset(c_n, 0, ns * sizeof *c_n); /* only the LSTM writes it */
    s = rnx_forward(model, y, h_n, c_n, x, NULL, h0, c0, lengths, NULL, B, T, h[THREADS]);
    EXPECT(s == RNX_OK);
    /* the optional outputs are optional, and n_threads <= 0 (all threads) changes nothing */
    EXPECT(rnx_forward(model, NULL, h_alone, NULL, x, NULL, h0, c0, lengths, NULL, B, T,
                       h[THREADS]) == RNX_OK);
    EXPECT(memcmp(h_alone, h_n, ns * sizeof *h_n) == 0);
    EXPECT(rnx_forward(model, y_default, NULL, NULL, x, NULL, h0, c0, lengths, NULL, B, T, 0) ==
           RNX_OK);
    EXPECT(memcmp(y_default, y, ny * sizeof *y) == 0);

    FILE *out = fopen(argv[2], "wb");
    if (!out || !write_array(out, y, ny) || !write_array(out, h_n, ns) ||
        !write_array(out, c_n, ns) || !write_array(out, list_y, LIST_B * LIST_OUT) ||
        !write_array(out, list_h, LIST_B * LIST_STATE) ||
        !write_array(out, list_c, LIST_B * LIST_CELL) || fclose(out) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        failures++;
    }
    rnx_model_free(model);
    free(layers);
    free(params), free(x), free(lengths), free(h0), free(c0);
    free(y), free(h_n), free(c_n), free(h_alone), free(y_default);
    return failures ? 1 : 0;
}
