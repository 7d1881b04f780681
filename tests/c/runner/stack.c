/* stack.c: the runner's Python-fed comparison (tests/test_c_api.py writes IN and compares OUT
 * with the NumPy reference).
 *
 *   runner stack IN OUT
 *
 * IN: int32 header[12]: cell, I, H, L, bidirectional, isa, B, T, n_threads, has_lengths,
 *     has_state, the number of parameters the Python side counted; float32 params (that many),
 *     float32 x (B, T, I), int32 lengths (B) if has_lengths, float32 h0 and c0 (L*D, B, H)
 *     each if has_state.
 * OUT: float32 y (B, T, D*H), h_n (L*D, B, H), c_n (L*D, B, H) of the uniform stack as a layer
 *     list, then the layer-list model's (layer_list_model) y (5, 3), h (5 * 44), c (5 * 6). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

enum { CELL, IN_SIZE, HIDDEN, LAYERS, BIDIR, ISA, BATCH, STEPS, THREADS, HAS_LENGTHS,
       HAS_STATE, NPARAMS, HEADER };

/* what the tests of this mode share: the input, and the outputs they write */
static struct {
    int32_t h[HEADER];
    rnx_layer *layers;
    float *params, *x, *h0, *c0;
    int32_t *lengths;
    size_t ny, ns;
    float *y, *h_n, *c_n;
} in;

enum { LIST_B = 5, LIST_T = 23, LIST_OUT = 3, LIST_STATE = 2 * 20 + 4, LIST_CELL = 6 };
static float list_y[LIST_B * LIST_OUT], list_h[LIST_B * LIST_STATE], list_c[LIST_B * LIST_CELL];

/* n items of `size` bytes from f into a new buffer, or NULL on a short read */
static void *read_array(FILE *f, size_t n, size_t size) {
    void *p = malloc(n * size + 1);
    if (p && fread(p, size, n, f) != n) {
        free(p);
        return NULL;
    }
    return p;
}

/* The stack's param count, info and layers as the header states them. */
static void stack_info(void) {
    const int L = in.h[LAYERS], D = 1 + in.h[BIDIR], H = in.h[HIDDEN];
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(in.layers, L, &count), RNX_OK);
    CHECK(count == (size_t)in.h[NPARAMS]);
    rnx_model *m = NULL;
    CHECK_STATUS(rnx_model_create(&m, in.layers, L, in.h[ISA], in.params), RNX_OK);
    if (!m) return;
    const rnx_model_info info = rnx_model_get_info(m);
    CHECK(info.isa != RNX_ISA_AUTO && (in.h[ISA] == RNX_ISA_AUTO || info.isa == in.h[ISA]));
    CHECK(info.n_layers == L && info.n_recurrent == L && !info.takes_ids && info.per_step);
    CHECK(info.input_size == in.h[IN_SIZE] && info.output_size == D * H);
    CHECK(info.state_size == (size_t)L * D * H);
    CHECK(info.cell_size == (in.h[CELL] == RNX_CELL_LSTM ? info.state_size : 0));
    CHECK(info.streamable == (D == 1) && !info.folded && info.recurrent_param_offset == 0);
    CHECK(info.recurrent_param_count == count);
    rnx_model_free(m);
}

/* The stack's forward pass, written to OUT; the optional outputs are optional and n_threads
 * <= 0 (all threads) changes nothing. */
static void stack_forward(void) {
    rnx_model *m = NULL;
    const int B = in.h[BATCH], T = in.h[STEPS];
    CHECK_STATUS(rnx_model_create(&m, in.layers, in.h[LAYERS], in.h[ISA], in.params), RNX_OK);
    if (!m) return;
    CHECK_STATUS(rnx_forward(m, in.y, in.h_n, in.c_n, in.x, NULL, in.h0, in.c0, in.lengths, NULL,
                             B, T, in.h[THREADS]),
                 RNX_OK);
    float *h_alone = zero_floats(in.ns), *y_default = zero_floats(in.ny);
    CHECK_STATUS(rnx_forward(m, NULL, h_alone, NULL, in.x, NULL, in.h0, in.c0, in.lengths, NULL,
                             B, T, in.h[THREADS]),
                 RNX_OK);
    CHECK(!memcmp(h_alone, in.h_n, in.ns * sizeof *h_alone));
    CHECK_STATUS(rnx_forward(m, y_default, NULL, NULL, in.x, NULL, in.h0, in.c0, in.lengths,
                             NULL, B, T, 0),
                 RNX_OK);
    CHECK(!memcmp(y_default, in.y, in.ny * sizeof *y_default));
    free(h_alone), free(y_default);
    rnx_model_free(m);
}

/* A model with every part (embedding with mask_zero, a bidirectional sum merge, a reverse-only
 * layer on the plain path, a max readout, dense layers) over a mask: the same results on 1, 2
 * and 3 threads, outputs in [0, 1] from the softmax, a stream of its forward-only variant equal
 * to forward. Its results go to OUT (the Python side rebuilds the same model and inputs). */
static void layer_list_model(void) {
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
    CHECK_STATUS(rnx_param_count(layers, 6, &count), RNX_OK);
    float *params = malloc(count * sizeof *params);
    for (size_t i = 0; i < count; i++) params[i] = (float)((i * 7919) % 1000) / 2000.0f - 0.25f;
    rnx_model *m = NULL;
    CHECK_STATUS(rnx_model_create(&m, layers, 6, in.h[ISA], params), RNX_OK);
    if (!m) {
        free(params);
        return;
    }
    const rnx_model_info info = rnx_model_get_info(m);
    CHECK(info.takes_ids && !info.per_step && info.output_size == 3 && !info.streamable);
    CHECK(info.state_size == LIST_STATE && info.cell_size == LIST_CELL && info.folded);
    enum { B = LIST_B, T = LIST_T };
    int32_t ids[B * T];
    uint8_t mask[B * T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 5) % 9;
        mask[i] = (uint8_t)(i % 7 != 3 && i >= T); /* row 0 has no valid step */
    }
    float y[3][B * 3], h[3][B * LIST_STATE], c[3][B * LIST_CELL];
    for (int n = 1; n <= 3; n++)
        CHECK_STATUS(rnx_forward(m, y[n - 1], h[n - 1], c[n - 1], NULL, ids, NULL, NULL, NULL,
                                 mask, B, T, n),
                     RNX_OK);
    for (int n = 1; n < 3; n++)
        CHECK(!memcmp(y[0], y[n], sizeof y[0]) && !memcmp(h[0], h[n], sizeof h[0]) &&
              !memcmp(c[0], c[n], sizeof c[0]));
    for (int i = 0; i < B * 3; i++) CHECK(y[0][i] >= 0.0f && y[0][i] <= 1.0f);
    memcpy(list_y, y[1], sizeof list_y);
    memcpy(list_h, h[1], sizeof list_h);
    memcpy(list_c, c[1], sizeof list_c);
    rnx_model_free(m);

    /* forward-only: a stream's steps are forward's per-step outputs */
    layers[2].direction = RNX_DIRECTION_FORWARD;
    layers[1].direction = RNX_DIRECTION_FORWARD;
    layers[1].merge = 0;
    layers[3] = rnx_readout_layer(RNX_READOUT_SEQUENCE);
    m = NULL;
    CHECK_STATUS(rnx_model_create(&m, layers, 6, in.h[ISA], params), RNX_OK); /* a prefix */
    rnx_stream *s = NULL;
    if (m) CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_OK);
    if (s) {
        float ys[B * T * 3], step[B * 3];
        int32_t column[B];
        CHECK_STATUS(rnx_forward(m, ys, NULL, NULL, NULL, ids, NULL, NULL, NULL, NULL, B, T, 2),
                     RNX_OK);
        for (int t = 0; t < T; t++) {
            for (int b = 0; b < B; b++) column[b] = ids[b * T + t];
            CHECK_STATUS(rnx_stream_step(s, step, NULL, column), RNX_OK);
            for (int b = 0; b < B; b++)
                CHECK(!memcmp(step + b * 3, ys + ((size_t)b * T + t) * 3, 3 * sizeof(float)));
        }
    }
    rnx_stream_free(s);
    rnx_model_free(m);
    free(params);
}

static const test_case stack_tests[] = {
    TEST(stack_info),
    TEST(stack_forward),
    TEST(layer_list_model),
};

int run_stack(const char *in_path, const char *out_path) {
    FILE *f = fopen(in_path, "rb");
    if (!f || fread(in.h, sizeof *in.h, HEADER, f) != HEADER) {
        fprintf(stderr, "cannot read the header of %s\n", in_path);
        return 2;
    }
    const int B = in.h[BATCH], T = in.h[STEPS], H = in.h[HIDDEN], D = 1 + in.h[BIDIR];
    const int L = in.h[LAYERS];
    const size_t nx = (size_t)B * T * in.h[IN_SIZE];
    in.ny = (size_t)B * T * D * H;
    in.ns = (size_t)L * D * B * H;
    in.params = read_array(f, (size_t)in.h[NPARAMS], sizeof(float));
    in.x = read_array(f, nx, sizeof(float));
    in.lengths = in.h[HAS_LENGTHS] ? read_array(f, (size_t)B, sizeof(int32_t)) : NULL;
    in.h0 = in.h[HAS_STATE] ? read_array(f, in.ns, sizeof(float)) : NULL;
    in.c0 = in.h[HAS_STATE] ? read_array(f, in.ns, sizeof(float)) : NULL;
    fclose(f);
    if (!in.params || !in.x || (in.h[HAS_LENGTHS] && !in.lengths) ||
        (in.h[HAS_STATE] && (!in.h0 || !in.c0))) {
        fprintf(stderr, "%s is shorter than its header says\n", in_path);
        return 2;
    }
    /* the uniform stack as a layer list: what torch.nn.LSTM/GRU/RNN(num_layers=L) is */
    in.layers = malloc((size_t)L * sizeof *in.layers);
    for (int l = 0; l < L; l++)
        in.layers[l] = rnx_recurrent_layer((rnx_cell)in.h[CELL], l ? D * H : in.h[IN_SIZE], H,
                                           D == 2 ? RNX_DIRECTION_BIDIRECTIONAL
                                                  : RNX_DIRECTION_FORWARD);
    in.y = zero_floats(in.ny), in.h_n = zero_floats(in.ns), in.c_n = zero_floats(in.ns);
    run_tests(stack_tests, sizeof stack_tests / sizeof stack_tests[0], NULL);

    FILE *out = fopen(out_path, "wb");
    const struct {
        const float *p;
        size_t n;
    } parts[] = {{in.y, in.ny}, {in.h_n, in.ns}, {in.c_n, in.ns}, {list_y, LIST_B * LIST_OUT},
                 {list_h, LIST_B * LIST_STATE}, {list_c, LIST_B * LIST_CELL}};
    int written = out != NULL;
    for (size_t i = 0; written && i < sizeof parts / sizeof parts[0]; i++)
        written = fwrite(parts[i].p, sizeof(float), parts[i].n, out) == parts[i].n;
    if (out && fclose(out) != 0) written = 0;
    free(in.layers), free(in.params), free(in.x), free(in.lengths), free(in.h0), free(in.c0);
    free(in.y), free(in.h_n), free(in.c_n);
    if (!written) {
        fprintf(stderr, "cannot write %s\n", out_path);
        return 2;
    }
    return report_tests();
}
