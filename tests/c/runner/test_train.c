/* test_train.c: rnx_forward_train and rnx_backward. The gradients of a scalar loss
 * L = sum(dseq * seq) + sum(dh_n * h_n) + sum(dc_n * c_n) with respect to every recurrent
 * parameter, x, h0 and c0 against central finite differences of rnx_forward (float32, so the
 * tolerance is loose: a wrong gradient is off by far more), for the packed and the plain paths,
 * every cell, direction and merge, lengths and masks; dropout between layers against the chain
 * rule through each layer alone; then invariants and argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

enum { B = 2, T = 4 };
#define FD_STEP 4e-3f
#define FD_RTOL 3e-2
#define FD_ATOL 2e-3

/* The loss of one rnx_forward of `layers` with `params` (a new model each time, since a model
 * copies its parameters). */
typedef struct loss_problem {
    const rnx_layer *layers;
    int n_layers, isa;
    const int32_t *lengths;
    const uint8_t *mask;
    const float *dseq, *dh_n, *dc_n;
    size_t ny, nh, nc;
} loss_problem;

static double loss(const loss_problem *p, const float *params, const float *x, const float *h0,
                   const float *c0) {
    rnx_model *m = NULL;
    if (rnx_model_create(&m, p->layers, p->n_layers, p->isa, params) != RNX_OK) return NAN;
    float *y = zero_floats(p->ny), *h = zero_floats(p->nh), *c = zero_floats(p->nc);
    double total = NAN;
    if (rnx_forward(m, y, h, c, x, NULL, h0, c0, p->lengths, p->mask, B, T, 1) == RNX_OK) {
        total = 0.0;
        for (size_t i = 0; i < p->ny; i++) total += (double)p->dseq[i] * y[i];
        for (size_t i = 0; i < p->nh; i++) total += (double)p->dh_n[i] * h[i];
        for (size_t i = 0; i < p->nc; i++) total += (double)p->dc_n[i] * c[i];
    }
    free(y), free(h), free(c);
    rnx_model_free(m);
    return total;
}

/* d loss / d values[i] for i < n by central differences, into fd; `values` is one of the
 * arrays that the other arguments point at, restored after each step */
static void finite_differences(float *fd, float *values, size_t n, const loss_problem *p,
                               const float *params, const float *x, const float *h0,
                               const float *c0) {
    for (size_t i = 0; i < n; i++) {
        const float kept = values[i];
        values[i] = kept + FD_STEP;
        const double up = loss(p, params, x, h0, c0);
        values[i] = kept - FD_STEP;
        const double down = loss(p, params, x, h0, c0);
        values[i] = kept;
        fd[i] = (float)((up - down) / (2.0 * (double)FD_STEP));
    }
}

/* Backward against finite differences for one list (recurrent layers only), on `isa`. */
static void check_gradients(const rnx_layer *layers, int n_layers, int isa,
                            const int32_t *lengths, const uint8_t *mask, uint64_t seed) {
    float *params = NULL;
    rnx_model *m = random_model(layers, n_layers, isa, &seed, 0.5f, &params);
    if (!m) {
        free(params);
        return;
    }
    const rnx_model_info info = rnx_model_get_info(m);
    const size_t I = (size_t)info.input_size, W = (size_t)info.output_size;
    const size_t nx = B * T * I, ny = B * T * W, nh = B * info.state_size, nc = B * info.cell_size;
    const size_t np = info.recurrent_param_count;
    float *x = random_floats(nx, &seed, 1.0f), *h0 = random_floats(nh, &seed, 0.5f);
    float *c0 = random_floats(nc, &seed, 0.5f), *dseq = random_floats(ny, &seed, 1.0f);
    float *dh_n = random_floats(nh, &seed, 1.0f), *dc_n = random_floats(nc, &seed, 1.0f);
    float *seq = zero_floats(ny), *h_n = zero_floats(nh), *c_n = zero_floats(nc);
    float *grads = zero_floats(np), *dx = zero_floats(nx), *dh0 = zero_floats(nh);
    float *dc0 = zero_floats(nc), *again = zero_floats(np), *fd = zero_floats(np + nx + nh + nc);
    rnx_tape *tape = NULL;
    CHECK_STATUS(rnx_tape_create(&tape, m, B, T), RNX_OK);
    CHECK_STATUS(rnx_forward_train(m, tape, seq, h_n, c_n, x, h0, c0, lengths, mask, B, T, 1),
                 RNX_OK);
    CHECK_STATUS(rnx_backward(m, tape, grads, dx, dh0, dc0, x, dseq, dh_n, dc_n, 1), RNX_OK);
    /* the tape is spent; a new pass on 3 threads gives the same gradients, bit for bit */
    CHECK_STATUS(rnx_backward(m, tape, grads, dx, dh0, dc0, x, dseq, dh_n, dc_n, 1),
                 RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_forward_train(m, tape, NULL, NULL, NULL, x, h0, c0, lengths, mask, B, T, 3),
                 RNX_OK);
    CHECK_STATUS(rnx_backward(m, tape, again, NULL, NULL, NULL, x, dseq, dh_n, dc_n, 3), RNX_OK);
    CHECK(!memcmp(grads, again, np * sizeof *grads));

    /* the training pass computes what rnx_forward computes (on its own code path) */
    float *y = zero_floats(ny), *h = zero_floats(nh), *c = zero_floats(nc);
    CHECK_STATUS(rnx_forward(m, y, h, c, x, NULL, h0, c0, lengths, mask, B, T, 1), RNX_OK);
    CHECK_CLOSE(seq, y, ny, F32_RTOL, F32_ATOL);
    CHECK_CLOSE(h_n, h, nh, F32_RTOL, F32_ATOL);
    CHECK_CLOSE(c_n, c, nc, F32_RTOL, F32_ATOL);

    const loss_problem p = {layers, n_layers, isa, lengths, mask, dseq, dh_n, dc_n, ny, nh, nc};
    finite_differences(fd, params + info.recurrent_param_offset, np, &p, params, x, h0, c0);
    CHECK_CLOSE(grads, fd, np, FD_RTOL, FD_ATOL);
    finite_differences(fd, x, nx, &p, params, x, h0, c0);
    CHECK_CLOSE(dx, fd, nx, FD_RTOL, FD_ATOL);
    finite_differences(fd, h0, nh, &p, params, x, h0, c0);
    CHECK_CLOSE(dh0, fd, nh, FD_RTOL, FD_ATOL);
    finite_differences(fd, c0, nc, &p, params, x, h0, c0);
    CHECK_CLOSE(dc0, fd, nc, FD_RTOL, FD_ATOL);

    rnx_tape_free(tape);
    rnx_model_free(m);
    free(params), free(x), free(h0), free(c0), free(dseq), free(dh_n), free(dc_n), free(seq);
    free(h_n), free(c_n), free(grads), free(dx), free(dh0), free(dc0), free(again), free(fd);
    free(y), free(h), free(c);
}

/* Each list on scalar and on the default instruction set. */
static void check_gradients_on_isas(const rnx_layer *layers, int n_layers, const int32_t *lengths,
                                    const uint8_t *mask, uint64_t seed) {
    check_gradients(layers, n_layers, RNX_ISA_SCALAR, lengths, mask, seed);
    if (rnx_default_isa() != RNX_ISA_SCALAR && rnx_default_isa() != RNX_ISA_AUTO)
        check_gradients(layers, n_layers, RNX_ISA_AUTO, lengths, mask, seed);
}

static const int32_t some_lengths[B] = {T, 2};
static const uint8_t some_mask[B * T] = {1, 0, 1, 1, 0, 1, 1, 0};

/* packed kernels: a bidirectional LSTM (concat) under a GRU, with lengths */
static void gradients_lstm_gru(void) {
    const rnx_layer list[2] = {
        rnx_recurrent_layer(RNX_CELL_LSTM, 3, 4, RNX_DIRECTION_BIDIRECTIONAL),
        rnx_recurrent_layer(RNX_CELL_GRU, 8, 3, RNX_DIRECTION_FORWARD)};
    check_gradients_on_isas(list, 2, some_lengths, NULL, 41);
}

/* a reverse GRU (reset before) under a bidirectional tanh RNN merged by sum, with a mask */
static void gradients_gru_rnn_masked(void) {
    rnx_layer list[2] = {
        rnx_recurrent_layer(RNX_CELL_GRU_RESET_BEFORE, 3, 4, RNX_DIRECTION_REVERSE),
        rnx_recurrent_layer(RNX_CELL_RNN_TANH, 4, 5, RNX_DIRECTION_BIDIRECTIONAL)};
    list[1].merge = RNX_MERGE_SUM;
    check_gradients_on_isas(list, 2, NULL, some_mask, 42);
}

/* the plain path: an LSTM with projection and peepholes merged by ave, then one with
 * input_forget merged by mul (its unused f rows get zero gradients) */
static void gradients_lstm_options(void) {
    rnx_layer list[2] = {rnx_recurrent_layer(RNX_CELL_LSTM, 2, 4, RNX_DIRECTION_BIDIRECTIONAL),
                         rnx_recurrent_layer(RNX_CELL_LSTM, 3, 3, RNX_DIRECTION_BIDIRECTIONAL)};
    list[0].proj_size = 3;
    list[0].peepholes = 1;
    list[0].merge = RNX_MERGE_AVE;
    list[1].input_forget = 1;
    list[1].merge = RNX_MERGE_MUL;
    check_gradients_on_isas(list, 2, some_lengths, NULL, 43);
}

/* The recurrent layers of a model with an embedding, readout and dense layers train as the same
 * layers alone: info.recurrent_param_offset skips the embedding. */
static void gradients_of_a_full_model(void) {
    enum { V = 5, E = 3, H = 4 };
    const rnx_layer full[4] = {rnx_embedding_layer(V, E, -1),
                               rnx_recurrent_layer(RNX_CELL_GRU, E, H, RNX_DIRECTION_FORWARD),
                               rnx_readout_layer(RNX_READOUT_LAST),
                               rnx_dense_layer(H, 2, RNX_ACT_SOFTMAX)};
    uint64_t seed = 44;
    float *params = NULL;
    rnx_model *m = random_model(full, 4, RNX_ISA_AUTO, &seed, 0.5f, &params);
    rnx_model *alone = NULL;
    CHECK_STATUS(rnx_model_create(&alone, &full[1], 1, RNX_ISA_AUTO, params + V * E), RNX_OK);
    if (m && alone) {
        const rnx_model_info info = rnx_model_get_info(m);
        CHECK(info.recurrent_param_offset == V * E);
        CHECK(info.recurrent_param_count == rnx_model_get_info(alone).recurrent_param_count);
        float x[B * T * E], dseq[B * T * H], g1[3 * H * (E + H + 2)], g2[3 * H * (E + H + 2)];
        fill_uniform(x, B * T * E, &seed, 1.0f);
        fill_uniform(dseq, B * T * H, &seed, 1.0f);
        rnx_tape *t1 = NULL, *t2 = NULL;
        CHECK_STATUS(rnx_tape_create(&t1, m, B, T), RNX_OK);
        CHECK_STATUS(rnx_tape_create(&t2, alone, B, T), RNX_OK);
        CHECK_STATUS(rnx_forward_train(m, t1, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T,
                                       1),
                     RNX_OK);
        CHECK_STATUS(rnx_forward_train(alone, t2, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B,
                                       T, 1),
                     RNX_OK);
        CHECK_STATUS(rnx_backward(m, t1, g1, NULL, NULL, NULL, x, dseq, NULL, NULL, 1), RNX_OK);
        CHECK_STATUS(rnx_backward(alone, t2, g2, NULL, NULL, NULL, x, dseq, NULL, NULL, 1),
                     RNX_OK);
        CHECK(!memcmp(g1, g2, sizeof g1));
        rnx_tape_free(t1), rnx_tape_free(t2);
    }
    rnx_model_free(m), rnx_model_free(alone);
    free(params);
}

/* Dropout between layers: a two-layer pass with rnx_tape_set_dropout's mask on the second
 * layer's input against the chain rule through each layer alone (layer 0, the mask times its
 * output into layer 1; backward: layer 1, the mask times the gradient of its input into layer 0),
 * then what set_dropout refuses and that setting or removing a mask voids the recorded pass. */
static void dropout_between_layers(void) {
    enum { I = 3, H0 = 4, W0 = 2 * H0, H1 = 5 };
    const rnx_layer list[2] = {
        rnx_recurrent_layer(RNX_CELL_GRU, I, H0, RNX_DIRECTION_BIDIRECTIONAL),
        rnx_recurrent_layer(RNX_CELL_LSTM, W0, H1, RNX_DIRECTION_FORWARD)};
    uint64_t seed = 46;
    float *params = NULL;
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, &params);
    rnx_model *m0 = NULL, *m1 = NULL;
    rnx_tape *tape = NULL, *t0 = NULL, *t1 = NULL;
    if (!m) goto done;
    CHECK_STATUS(rnx_model_create(&m0, &list[0], 1, RNX_ISA_AUTO, params), RNX_OK);
    const size_t n0 = m0 ? (size_t)rnx_model_get_info(m0).recurrent_param_count : 0;
    CHECK_STATUS(rnx_model_create(&m1, &list[1], 1, RNX_ISA_AUTO, params + n0), RNX_OK);
    CHECK_STATUS(rnx_tape_create(&tape, m, B, T), RNX_OK);
    CHECK_STATUS(rnx_tape_create(&t0, m0, B, T), RNX_OK);
    CHECK_STATUS(rnx_tape_create(&t1, m1, B, T), RNX_OK);
    if (!m0 || !m1 || !tape || !t0 || !t1) goto done;
    const size_t np = rnx_model_get_info(m).recurrent_param_count, n1 = np - n0;
    float x[B * T * I], mask[B * T * W0], dseq[B * T * H1], seq[B * T * H1], dx[B * T * I];
    float y0[B * T * W0], u[B * T * W0], du[B * T * W0], y1[B * T * H1], dx0[B * T * I];
    float *grads = zero_floats(np), *g0 = zero_floats(n0), *g1 = zero_floats(n1);
    fill_uniform(x, B * T * I, &seed, 1.0f);
    fill_uniform(dseq, B * T * H1, &seed, 1.0f);
    for (size_t i = 0; i < B * T * W0; i++)  /* inverted dropout, p = 0.5: 0 or 2 */
        mask[i] = random_below(&seed, 2) ? 2.0f : 0.0f;
    CHECK_STATUS(rnx_tape_set_dropout(tape, 1, mask, B, T), RNX_OK);
    CHECK_STATUS(rnx_forward_train(m, tape, seq, NULL, NULL, x, NULL, NULL, some_lengths, NULL,
                                   B, T, 2),
                 RNX_OK);
    CHECK_STATUS(rnx_backward(m, tape, grads, dx, NULL, NULL, x, dseq, NULL, NULL, 2), RNX_OK);

    CHECK_STATUS(rnx_forward_train(m0, t0, y0, NULL, NULL, x, NULL, NULL, some_lengths, NULL, B,
                                   T, 1),
                 RNX_OK);
    for (size_t i = 0; i < B * T * W0; i++) u[i] = mask[i] * y0[i];
    CHECK_STATUS(rnx_forward_train(m1, t1, y1, NULL, NULL, u, NULL, NULL, some_lengths, NULL, B,
                                   T, 1),
                 RNX_OK);
    CHECK_STATUS(rnx_backward(m1, t1, g1, du, NULL, NULL, u, dseq, NULL, NULL, 1), RNX_OK);
    for (size_t i = 0; i < B * T * W0; i++) du[i] *= mask[i];
    CHECK_STATUS(rnx_backward(m0, t0, g0, dx0, NULL, NULL, x, du, NULL, NULL, 1), RNX_OK);
    CHECK_CLOSE(seq, y1, B * T * H1, F32_RTOL, F32_ATOL);
    CHECK_CLOSE(grads, g0, n0, F32_RTOL, F32_ATOL);
    CHECK_CLOSE(grads + n0, g1, n1, F32_RTOL, F32_ATOL);
    CHECK_CLOSE(dx, dx0, B * T * I, F32_RTOL, F32_ATOL);

    CHECK_STATUS(rnx_tape_set_dropout(NULL, 1, mask, B, T), RNX_ERR_NULL_ARGUMENT);
    const int bad[][3] = {{0, B, T}, {2, B, T}, {1, 0, T}, {1, B, T + 1}, {1, B + 1, T}};
    for (int i = 0; i < 5; i++)
        CHECK_STATUS(rnx_tape_set_dropout(tape, bad[i][0], mask, bad[i][1], bad[i][2]),
                     RNX_ERR_BAD_ARGUMENT);
    /* a pass of another (B, T) than the mask's is refused; setting a mask voids a pass */
    CHECK_STATUS(rnx_forward_train(m, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, 1, T, 1),
                 RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_forward_train(m, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T, 1),
                 RNX_OK);
    CHECK_STATUS(rnx_tape_set_dropout(tape, 1, NULL, 0, 0), RNX_OK);
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, dseq, NULL, NULL, 1),
                 RNX_ERR_BAD_ARGUMENT);
    /* without the mask, the pass is the plain one: layer 1 reads y0 itself */
    CHECK_STATUS(rnx_forward_train(m, tape, seq, NULL, NULL, x, NULL, NULL, some_lengths, NULL,
                                   B, T, 1),
                 RNX_OK);
    CHECK_STATUS(rnx_forward_train(m1, t1, y1, NULL, NULL, y0, NULL, NULL, some_lengths, NULL, B,
                                   T, 1),
                 RNX_OK);
    CHECK_CLOSE(seq, y1, B * T * H1, F32_RTOL, F32_ATOL);
    free(grads), free(g0), free(g1);
done:
    rnx_tape_free(tape), rnx_tape_free(t0), rnx_tape_free(t1);
    rnx_model_free(m), rnx_model_free(m0), rnx_model_free(m1);
    free(params);
}

/* Tapes and passes refuse what they cannot do: NULLs, sizes past the tape's, another layer list,
 * lengths with a mask, too many threads, a backward pass without a fresh forward pass. */
static void training_errors(void) {
    enum { I = 2, H = 3 };
    const rnx_layer layer = rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD);
    const rnx_layer other = rnx_recurrent_layer(RNX_CELL_LSTM, I, H + 1, RNX_DIRECTION_FORWARD);
    uint64_t seed = 45;
    rnx_model *m = random_model(&layer, 1, RNX_ISA_SCALAR, &seed, 0.5f, NULL);
    rnx_model *o = random_model(&other, 1, RNX_ISA_SCALAR, &seed, 0.5f, NULL);
    static int somewhere;
    rnx_tape *const not_null = (rnx_tape *)&somewhere;
    rnx_tape *tape = not_null;
    CHECK_STATUS(rnx_tape_create(&tape, NULL, B, T), RNX_ERR_NULL_ARGUMENT);
    CHECK(tape == NULL);
    CHECK_STATUS(rnx_tape_create(NULL, m, B, T), RNX_ERR_NULL_ARGUMENT);
    const int bad_sizes[][2] = {{0, T}, {B, 0}, {-1, T}};
    for (int i = 0; i < 3; i++) {
        tape = not_null;
        CHECK_STATUS(rnx_tape_create(&tape, m, bad_sizes[i][0], bad_sizes[i][1]),
                     RNX_ERR_BAD_ARGUMENT);
        CHECK(tape == NULL);
    }
    tape = NULL;
    CHECK_STATUS(rnx_tape_create(&tape, m, B, T), RNX_OK);
    if (!m || !o || !tape) {
        rnx_model_free(m), rnx_model_free(o), rnx_tape_free(tape);
        return;
    }
    float x[(B + 1) * (T + 1) * I] = {0}, grads[4 * H * (I + H + 2)];
    const int32_t lengths[B] = {T, T};
    const uint8_t mask[B * T] = {1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 1),
                 RNX_ERR_BAD_ARGUMENT); /* nothing recorded yet */
#define TRAIN(M, X, L, MASK, B_, T_, N)                                                         \
    rnx_forward_train(M, tape, NULL, NULL, NULL, X, NULL, NULL, L, MASK, B_, T_, N)
    CHECK_STATUS(TRAIN(NULL, x, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(TRAIN(m, NULL, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(TRAIN(m, x, NULL, NULL, B + 1, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(TRAIN(m, x, NULL, NULL, B, T + 1, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(TRAIN(m, x, NULL, NULL, 0, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(TRAIN(o, x, NULL, NULL, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(TRAIN(m, x, lengths, mask, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(TRAIN(m, x, NULL, NULL, B, T, RNX_MAX_THREADS + 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_forward_train(m, NULL, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T, 1),
                 RNX_ERR_NULL_ARGUMENT);
    /* a smaller pass fits the tape; then the backward pass's own checks */
    CHECK_STATUS(TRAIN(m, x, NULL, NULL, 1, T - 1, RNX_MAX_THREADS), RNX_OK);
    CHECK_STATUS(rnx_backward(o, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 1),
                 RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_backward(m, tape, NULL, NULL, NULL, NULL, x, NULL, NULL, NULL, 1),
                 RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1),
                 RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL,
                              RNX_MAX_THREADS + 1),
                 RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_backward(NULL, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 1),
                 RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 2), RNX_OK);
#undef TRAIN
    rnx_tape_free(tape);
    rnx_tape_free(NULL);
    rnx_model_free(m), rnx_model_free(o);
}

const test_case train_tests[] = {
    TEST(gradients_lstm_gru),         TEST(gradients_gru_rnn_masked),
    TEST(gradients_lstm_options),     TEST(gradients_of_a_full_model),
    TEST(dropout_between_layers),     TEST(training_errors),
};
const size_t train_test_count = sizeof train_tests / sizeof train_tests[0];
