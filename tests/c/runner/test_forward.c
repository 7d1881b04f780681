/* test_forward.c: rnx_forward against a plain double-precision reference of the cells written
 * here from the header's equations, and its invariants: lengths, masks, carried states, thread
 * counts, directions and merges, readouts, dense layers, embeddings, and its argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

/* ---------------------------------------------------------------------------------------------
 * The reference: one forward layer with the cell's default activations, in double
 * ------------------------------------------------------------------------------------------- */

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* y (B, T, H) zero past each length, h_n and c_n (B, H); params in rnx_model_create's order
 * (weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh); h0, c0 (B, H) or NULL */
static void reference_layer(float *y, float *h_n, float *c_n, int cell, const float *params,
                            const float *x, const float *h0, const float *c0,
                            const int32_t *lengths, int B, int T, int I, int H) {
    const int G = cell_gates(cell);
    const float *w_ih = params, *w_hh = w_ih + (size_t)G * H * I, *b_ih = w_hh + (size_t)G * H * H;
    const float *b_hh = b_ih + (size_t)G * H;
    double *h = malloc((size_t)H * sizeof *h), *c = malloc((size_t)H * sizeof *c);
    double *gi = malloc((size_t)G * H * sizeof *gi), *gh = malloc((size_t)G * H * sizeof *gh);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < H; j++) {
            h[j] = h0 ? h0[b * H + j] : 0.0;
            c[j] = c0 ? c0[b * H + j] : 0.0;
        }
        const int length = lengths ? lengths[b] : T;
        for (int t = 0; t < T; t++) {
            float *out = y + ((size_t)b * T + t) * H;
            if (t >= length) {
                memset(out, 0, (size_t)H * sizeof *out);
                continue;
            }
            const float *xt = x + ((size_t)b * T + t) * I;
            for (int r = 0; r < G * H; r++) {
                gi[r] = b_ih[r], gh[r] = b_hh[r];
                for (int k = 0; k < I; k++) gi[r] += (double)w_ih[(size_t)r * I + k] * xt[k];
                for (int k = 0; k < H; k++) gh[r] += (double)w_hh[(size_t)r * H + k] * h[k];
            }
            if (cell == RNX_CELL_GRU_RESET_BEFORE) /* n's product takes r*h */
                for (int r = 2 * H; r < 3 * H; r++) {
                    gh[r] = b_hh[r];
                    for (int k = 0; k < H; k++)
                        gh[r] += (double)w_hh[(size_t)r * H + k] * sigmoid(gi[k] + gh[k]) * h[k];
                }
            for (int j = 0; j < H; j++) {
                switch (cell) {
                case RNX_CELL_RNN_TANH: h[j] = tanh(gi[j] + gh[j]); break;
                case RNX_CELL_RNN_RELU: h[j] = fmax(0.0, gi[j] + gh[j]); break;
                case RNX_CELL_LSTM: {
                    const double i = sigmoid(gi[j] + gh[j]), f = sigmoid(gi[H + j] + gh[H + j]);
                    const double g = tanh(gi[2 * H + j] + gh[2 * H + j]);
                    const double o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
                    c[j] = f * c[j] + i * g;
                    h[j] = o * tanh(c[j]);
                    break;
                }
                case RNX_CELL_GRU: {
                    const double r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
                    const double n = tanh(gi[2 * H + j] + r * gh[2 * H + j]);
                    h[j] = (1.0 - z) * n + z * h[j];
                    break;
                }
                default: { /* GRU, reset before: r is inside gh[2H..3H) already */
                    const double z = sigmoid(gi[H + j] + gh[H + j]);
                    const double n = tanh(gi[2 * H + j] + gh[2 * H + j]);
                    h[j] = (1.0 - z) * n + z * h[j];
                }
                }
                out[j] = (float)h[j];
            }
        }
        for (int j = 0; j < H; j++) {
            h_n[b * H + j] = (float)h[j];
            c_n[b * H + j] = (float)c[j];
        }
    }
    free(h), free(c), free(gi), free(gh);
}

/* Every cell on every instruction set, H not a multiple of any vector width, with lengths and
 * initial states, against the reference. */
static void forward_matches_reference(void) {
    enum { B = 4, T = 7, I = 5, H = 11 };
    const int32_t lengths[B] = {7, 3, 1, 6};
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    uint64_t seed = 11;
    float *x = random_floats(B * T * I, &seed, 1.0f), *h0 = random_floats(B * H, &seed, 0.8f);
    float *c0 = random_floats(B * H, &seed, 0.8f);
    static float y[B * T * H], h_n[B * H], c_n[B * H], y_ref[B * T * H], h_ref[B * H],
        c_ref[B * H];
    for (int cell = RNX_CELL_RNN_TANH; cell <= RNX_CELL_GRU_RESET_BEFORE; cell++) {
        const rnx_layer layer = rnx_recurrent_layer((rnx_cell)cell, I, H, RNX_DIRECTION_FORWARD);
        for (int k = 0; k < n_isas; k++) {
            float *params = NULL;
            rnx_model *m = random_model(&layer, 1, isas[k], &seed, 0.6f, &params);
            const float *c_in = cell == RNX_CELL_LSTM ? c0 : NULL;
            CHECK_STATUS(rnx_forward(m, y, h_n, c_n, x, NULL, h0, c_in, lengths, NULL, B, T, 2),
                         RNX_OK);
            reference_layer(y_ref, h_ref, c_ref, cell, params, x, h0, c_in, lengths, B, T, I, H);
            CHECK_CLOSE(y, y_ref, B * T * H, F32_RTOL, F32_ATOL);
            CHECK_CLOSE(h_n, h_ref, B * H, F32_RTOL, F32_ATOL);
            if (cell == RNX_CELL_LSTM) CHECK_CLOSE(c_n, c_ref, B * H, F32_RTOL, F32_ATOL);
            rnx_model_free(m);
            free(params);
        }
    }
    free(x), free(h0), free(c0);
}

/* ---------------------------------------------------------------------------------------------
 * Invariants
 * ------------------------------------------------------------------------------------------- */

/* y, h_n, c_n of one forward pass (the caller frees them) */
typedef struct outputs {
    float *y, *h, *c;
} outputs;

static outputs run_forward(const rnx_model *m, const float *x, const int32_t *ids,
                           const float *h0, const float *c0, const int32_t *lengths,
                           const uint8_t *mask, int B, int T, int n_threads) {
    const rnx_model_info info = rnx_model_get_info(m);
    const size_t ny = (size_t)B * (info.per_step ? T : 1) * info.output_size;
    outputs o = {zero_floats(ny), zero_floats((size_t)B * info.state_size),
                 zero_floats((size_t)B * info.cell_size)};
    CHECK_STATUS(rnx_forward(m, o.y, o.h, o.c, x, ids, h0, c0, lengths, mask, B, T, n_threads),
                 RNX_OK);
    return o;
}

static void free_outputs(outputs o) { free(o.y), free(o.h), free(o.c); }

/* A model with the packed and the plain paths (a bidirectional LSTM, a reverse GRU with a
 * clip) gives identical results on 1, 2, 3 and all threads, on every instruction set. */
static void forward_threads_identical(void) {
    enum { B = 7, T = 9, I = 3 };
    rnx_layer list[3] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, 10, RNX_DIRECTION_BIDIRECTIONAL),
                         rnx_recurrent_layer(RNX_CELL_GRU, 20, 6, RNX_DIRECTION_REVERSE),
                         rnx_recurrent_layer(RNX_CELL_RNN_TANH, 6, 9, RNX_DIRECTION_FORWARD)};
    list[1].clip = 0.7f;
    const int32_t lengths[B] = {9, 1, 4, 9, 2, 8, 5};
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    uint64_t seed = 5;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    for (int k = 0; k < n_isas; k++) {
        rnx_model *m = random_model(list, 3, isas[k], &seed, 0.5f, NULL);
        if (!m) continue;
        const rnx_model_info info = rnx_model_get_info(m);
        outputs one = run_forward(m, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
        const int threads[] = {2, 3, 0};
        for (int i = 0; i < 3; i++) {
            outputs o = run_forward(m, x, NULL, NULL, NULL, lengths, NULL, B, T, threads[i]);
            CHECK(!memcmp(one.y, o.y, (size_t)B * T * info.output_size * sizeof(float)));
            CHECK(!memcmp(one.h, o.h, (size_t)B * info.state_size * sizeof(float)));
            CHECK(!memcmp(one.c, o.c, (size_t)B * info.cell_size * sizeof(float)));
            free_outputs(o);
        }
        free_outputs(one);
        rnx_model_free(m);
    }
    free(x);
}

/* A mask that keeps each sequence's first lengths[b] steps is lengths; an all-ones mask is no
 * mask; a masked step in the middle leaves the state alone: the sequence without it. */
static void forward_masks(void) {
    enum { B = 3, T = 6, I = 2, H = 5 };
    const rnx_layer list[2] = {rnx_recurrent_layer(RNX_CELL_GRU, I, H, RNX_DIRECTION_BIDIRECTIONAL),
                               rnx_recurrent_layer(RNX_CELL_LSTM, 2 * H, H, RNX_DIRECTION_REVERSE)};
    const int32_t lengths[B] = {6, 2, 4};
    uint8_t prefix[B * T], ones[B * T];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) prefix[b * T + t] = t < lengths[b], ones[b * T + t] = 1;
    uint64_t seed = 8;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    if (!m) return;
    const size_t ny = (size_t)B * T * H, ns = (size_t)B * rnx_model_get_info(m).state_size;
    outputs by_lengths = run_forward(m, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
    outputs by_mask = run_forward(m, x, NULL, NULL, NULL, NULL, prefix, B, T, 1);
    CHECK_CLOSE(by_mask.y, by_lengths.y, ny, 1e-6, 1e-7);
    CHECK_CLOSE(by_mask.h, by_lengths.h, ns, 1e-6, 1e-7);
    outputs plain = run_forward(m, x, NULL, NULL, NULL, NULL, NULL, B, T, 1);
    outputs all = run_forward(m, x, NULL, NULL, NULL, NULL, ones, B, T, 1);
    CHECK_CLOSE(all.y, plain.y, ny, 1e-6, 1e-7);
    CHECK_CLOSE(all.h, plain.h, ns, 1e-6, 1e-7);

    /* row 0 with step 2 masked is the same row with step 2 removed (and zeros there) */
    uint8_t holed[T];
    float squeezed[T * I];
    memset(holed, 1, sizeof holed);
    holed[2] = 0;
    memcpy(squeezed, x, 2 * I * sizeof(float));
    memcpy(squeezed + 2 * I, x + 3 * I, (T - 3) * I * sizeof(float));
    const int32_t short_length = T - 1;
    outputs with_hole = run_forward(m, x, NULL, NULL, NULL, NULL, holed, 1, T, 1);
    outputs without = run_forward(m, squeezed, NULL, NULL, NULL, &short_length, NULL, 1, T - 1, 1);
    float expected[T * H];
    memcpy(expected, without.y, 2 * H * sizeof(float));
    memset(expected + 2 * H, 0, H * sizeof(float));
    memcpy(expected + 3 * H, without.y + 2 * H, (T - 3) * H * sizeof(float));
    CHECK_CLOSE(with_hole.y, expected, T * H, 1e-6, 1e-7);
    CHECK_CLOSE(with_hole.h, without.h, rnx_model_get_info(m).state_size, 1e-6, 1e-7);
    free_outputs(by_lengths), free_outputs(by_mask), free_outputs(plain), free_outputs(all);
    free_outputs(with_hole), free_outputs(without);
    rnx_model_free(m);
    free(x);
}

/* Running T1 steps, then T2 steps from the states it left, is running T1 + T2 steps. */
static void forward_states_carry(void) {
    enum { B = 3, T1 = 4, T2 = 5, T = T1 + T2, I = 3, H = 6 };
    const rnx_layer list[2] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD),
                               rnx_recurrent_layer(RNX_CELL_GRU, H, H, RNX_DIRECTION_FORWARD)};
    uint64_t seed = 21;
    float *x = random_floats(B * T * I, &seed, 1.0f), *h0 = random_floats(2 * B * H, &seed, 0.5f);
    float *c0 = random_floats(B * H, &seed, 0.5f);
    float *x1 = malloc(B * T1 * I * sizeof *x1), *x2 = malloc(B * T2 * I * sizeof *x2);
    for (int b = 0; b < B; b++) {
        memcpy(x1 + b * T1 * I, x + b * T * I, T1 * I * sizeof *x);
        memcpy(x2 + b * T2 * I, x + (b * T + T1) * I, T2 * I * sizeof *x);
    }
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    if (m) {
        outputs whole = run_forward(m, x, NULL, h0, c0, NULL, NULL, B, T, 2);
        outputs first = run_forward(m, x1, NULL, h0, c0, NULL, NULL, B, T1, 2);
        outputs second = run_forward(m, x2, NULL, first.h, first.c, NULL, NULL, B, T2, 2);
        CHECK_CLOSE(second.h, whole.h, 2 * B * H, 1e-6, 1e-7);
        CHECK_CLOSE(second.c, whole.c, B * H, 1e-6, 1e-7);
        for (int b = 0; b < B; b++) {
            CHECK_CLOSE(first.y + b * T1 * H, whole.y + b * T * H, T1 * H, 1e-6, 1e-7);
            CHECK_CLOSE(second.y + b * T2 * H, whole.y + (b * T + T1) * H, T2 * H, 1e-6, 1e-7);
        }
        free_outputs(whole), free_outputs(first), free_outputs(second);
        rnx_model_free(m);
    }
    free(x), free(h0), free(c0), free(x1), free(x2);
}

/* x (B, T, I) with each sequence's first lengths[b] steps reversed in time */
static float *reverse_valid(const float *x, const int32_t *lengths, int B, int T, int I) {
    float *out = zero_floats((size_t)B * T * I);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lengths[b]; t++)
            memcpy(out + ((size_t)b * T + t) * I, x + ((size_t)b * T + lengths[b] - 1 - t) * I,
                   (size_t)I * sizeof *x);
    return out;
}

/* A reverse layer is the forward layer on the valid steps reversed; a bidirectional layer's
 * concat is [forward, reverse] and its sum, mul and ave merges are those of the two halves. */
static void forward_directions_and_merges(void) {
    enum { B = 3, T = 5, I = 4, H = 7 };
    const int32_t lengths[B] = {5, 2, 4};
    for (int cell = RNX_CELL_RNN_TANH; cell <= RNX_CELL_GRU_RESET_BEFORE; cell++) {
        uint64_t seed = 100 + (uint64_t)cell;
        float *x = random_floats(B * T * I, &seed, 1.0f);
        rnx_layer layer = rnx_recurrent_layer((rnx_cell)cell, I, H, RNX_DIRECTION_BIDIRECTIONAL);
        float *params = NULL;
        rnx_model *bi = random_model(&layer, 1, RNX_ISA_AUTO, &seed, 0.5f, &params);
        size_t half = 0;
        layer.direction = RNX_DIRECTION_FORWARD;
        CHECK_STATUS(rnx_param_count(&layer, 1, &half), RNX_OK);
        rnx_model *fwd = NULL, *rev = NULL;
        CHECK_STATUS(rnx_model_create(&fwd, &layer, 1, RNX_ISA_AUTO, params), RNX_OK);
        layer.direction = RNX_DIRECTION_REVERSE;
        CHECK_STATUS(rnx_model_create(&rev, &layer, 1, RNX_ISA_AUTO, params + half), RNX_OK);
        if (!bi || !fwd || !rev) {
            rnx_model_free(bi), rnx_model_free(fwd), rnx_model_free(rev), free(params), free(x);
            continue;
        }
        outputs both = run_forward(bi, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
        outputs f = run_forward(fwd, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
        outputs r = run_forward(rev, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
        /* the reverse layer against the forward layer with the reverse weights */
        float *x_rev = reverse_valid(x, lengths, B, T, I);
        rnx_model *rev_as_fwd = NULL;
        layer.direction = RNX_DIRECTION_FORWARD;
        CHECK_STATUS(rnx_model_create(&rev_as_fwd, &layer, 1, RNX_ISA_AUTO, params + half),
                     RNX_OK);
        outputs walked = run_forward(rev_as_fwd, x_rev, NULL, NULL, NULL, lengths, NULL, B, T, 1);
        float *walked_back = reverse_valid(walked.y, lengths, B, T, H);
        CHECK_CLOSE(r.y, walked_back, B * T * H, 1e-6, 1e-7);
        CHECK_CLOSE(r.h, walked.h, B * H, 1e-6, 1e-7);

        float *expected = malloc((size_t)B * T * 2 * H * sizeof *expected);
        for (int bt = 0; bt < B * T; bt++) {
            memcpy(expected + bt * 2 * H, f.y + bt * H, H * sizeof(float));
            memcpy(expected + bt * 2 * H + H, r.y + bt * H, H * sizeof(float));
        }
        CHECK_CLOSE(both.y, expected, B * T * 2 * H, 1e-6, 1e-7);
        CHECK_CLOSE(both.h, f.h, B * H, 1e-6, 1e-7);
        CHECK_CLOSE(both.h + B * H, r.h, B * H, 1e-6, 1e-7);
        for (int merge = RNX_MERGE_SUM; merge <= RNX_MERGE_AVE; merge++) {
            layer.direction = RNX_DIRECTION_BIDIRECTIONAL;
            layer.merge = merge;
            rnx_model *merged = NULL;
            CHECK_STATUS(rnx_model_create(&merged, &layer, 1, RNX_ISA_AUTO, params), RNX_OK);
            if (!merged) continue;
            outputs o = run_forward(merged, x, NULL, NULL, NULL, lengths, NULL, B, T, 1);
            for (int i = 0; i < B * T * H; i++)
                expected[i] = merge == RNX_MERGE_SUM   ? f.y[i] + r.y[i]
                              : merge == RNX_MERGE_MUL ? f.y[i] * r.y[i]
                                                       : (f.y[i] + r.y[i]) / 2;
            CHECK_CLOSE(o.y, expected, B * T * H, 1e-5, 1e-6);
            free_outputs(o);
            rnx_model_free(merged);
        }
        free(expected), free(walked_back), free(x_rev), free(x), free(params);
        free_outputs(both), free_outputs(f), free_outputs(r), free_outputs(walked);
        rnx_model_free(bi), rnx_model_free(fwd), rnx_model_free(rev), rnx_model_free(rev_as_fwd);
    }
}

/* Each readout and dense head against the sequence computed here: last valid step, mean, max,
 * final states (a bidirectional layer's merged), then y = act(W r + b) in double; a sequence
 * without a valid step reads zeros. */
static void forward_readouts_and_dense(void) {
    enum { B = 4, T = 5, I = 3, H = 4, O = 3 };
    uint8_t mask[B * T];
    for (int i = 0; i < B * T; i++) mask[i] = (uint8_t)((i * 7) % 5 != 1 && i >= T);
    uint64_t seed = 77;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    const rnx_layer rec = rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_BIDIRECTIONAL);
    size_t n_rec = 0;
    CHECK_STATUS(rnx_param_count(&rec, 1, &n_rec), RNX_OK);
    float *params = random_floats(n_rec + O * (2 * H + 1), &seed, 0.5f);
    const float *w = params + n_rec, *bias = w + O * 2 * H;
    rnx_model *seq = NULL;
    CHECK_STATUS(rnx_model_create(&seq, &rec, 1, RNX_ISA_AUTO, params), RNX_OK);
    if (!seq) {
        free(params), free(x);
        return;
    }
    outputs s = run_forward(seq, x, NULL, NULL, NULL, NULL, mask, B, T, 1);
    const rnx_act acts[] = {RNX_ACT_LINEAR, RNX_ACT_RELU, RNX_ACT_TANH, RNX_ACT_SIGMOID,
                            RNX_ACT_SOFTMAX};
    for (int mode = RNX_READOUT_LAST; mode <= RNX_READOUT_MAX; mode++) {
        float read[B * 2 * H];
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < 2 * H; j++) {
                double sum = 0.0, best = -INFINITY, last = 0.0;
                int valid = 0;
                for (int t = 0; t < T; t++) {
                    if (!mask[b * T + t]) continue;
                    const double v = s.y[((size_t)b * T + t) * 2 * H + j];
                    sum += v, best = fmax(best, v), last = v, valid++;
                }
                const double final = s.h[(j < H ? 0 : B * H) + b * H + j % H];
                read[b * 2 * H + j] = (float)(mode == RNX_READOUT_FINAL ? final
                                              : !valid                  ? 0.0
                                              : mode == RNX_READOUT_LAST ? last
                                              : mode == RNX_READOUT_MEAN ? sum / valid
                                                                         : best);
            }
        }
        for (int a = 0; a < 5; a++) {
            const rnx_layer list[3] = {rec, rnx_readout_layer((rnx_readout)mode),
                                       rnx_dense_layer(2 * H, O, acts[a])};
            rnx_model *m = NULL;
            CHECK_STATUS(rnx_model_create(&m, list, 3, RNX_ISA_AUTO, params), RNX_OK);
            if (!m) continue;
            outputs o = run_forward(m, x, NULL, NULL, NULL, NULL, mask, B, T, 1);
            float expected[B * O];
            for (int b = 0; b < B; b++) {
                double z[O], total = 0.0;
                for (int k = 0; k < O; k++) {
                    z[k] = bias[k];
                    for (int j = 0; j < 2 * H; j++)
                        z[k] += (double)w[k * 2 * H + j] * read[b * 2 * H + j];
                    total += exp(z[k]);
                }
                for (int k = 0; k < O; k++)
                    expected[b * O + k] = (float)(acts[a] == RNX_ACT_RELU      ? fmax(z[k], 0.0)
                                                  : acts[a] == RNX_ACT_TANH    ? tanh(z[k])
                                                  : acts[a] == RNX_ACT_SIGMOID ? sigmoid(z[k])
                                                  : acts[a] == RNX_ACT_SOFTMAX ? exp(z[k]) / total
                                                                               : z[k]);
            }
            CHECK_CLOSE(o.y, expected, B * O, F32_RTOL, F32_ATOL);
            free_outputs(o);
            rnx_model_free(m);
        }
    }
    free_outputs(s);
    rnx_model_free(seq);
    free(params), free(x);
}

/* An embedding model on ids is the recurrent layer on the looked-up rows (folded into the input
 * product or not); mask_zero masks the steps of id 0 like a mask. */
static void forward_embedding(void) {
    enum { B = 3, T = 6, V = 7, E = 4, H = 5 };
    int32_t ids[B * T];
    uint8_t mask[B * T];
    uint64_t seed = 31;
    for (int i = 0; i < B * T; i++) ids[i] = random_below(&seed, V), mask[i] = ids[i] != 0;
    ids[0] = 0, mask[0] = 0;
    for (int cell = RNX_CELL_LSTM; cell <= RNX_CELL_GRU; cell++) {
        for (int mask_zero = 0; mask_zero <= 1; mask_zero++) {
            rnx_layer list[2] = {rnx_embedding_layer(V, E, -1),
                                 rnx_recurrent_layer((rnx_cell)cell, E, H, RNX_DIRECTION_FORWARD)};
            list[0].mask_zero = mask_zero;
            float *params = NULL;
            rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, &params);
            rnx_model *rec = NULL;
            CHECK_STATUS(rnx_model_create(&rec, &list[1], 1, RNX_ISA_AUTO, params + V * E),
                         RNX_OK);
            if (m && rec) {
                float x[B * T * E];
                for (int i = 0; i < B * T; i++)
                    memcpy(x + i * E, params + ids[i] * E, E * sizeof(float));
                outputs by_ids = run_forward(m, NULL, ids, NULL, NULL, NULL, NULL, B, T, 2);
                outputs by_x = run_forward(rec, x, NULL, NULL, NULL, NULL,
                                           mask_zero ? mask : NULL, B, T, 2);
                CHECK_CLOSE(by_ids.y, by_x.y, B * T * H, 1e-5, 1e-6);
                CHECK_CLOSE(by_ids.h, by_x.h, B * H, 1e-5, 1e-6);
                free_outputs(by_ids), free_outputs(by_x);
            }
            rnx_model_free(m), rnx_model_free(rec), free(params);
        }
    }
}

/* A masking layer masks the steps whose features all equal its value (a step with some of them
 * equal stays valid), and with lengths or a mask, the steps they mask too: on every instruction
 * set and thread count, the model without it given that mask, bit for bit (the same kernels
 * run with the same active rows). A packed bidirectional LSTM and a plain GRU (a clip). */
static void forward_masking(void) {
    enum { B = 4, T = 6, I = 3, H = 5, O = 2 };
    const float value = -1.5f;
    rnx_layer list[5] = {rnx_masking_layer(value),
                         rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_BIDIRECTIONAL),
                         rnx_recurrent_layer(RNX_CELL_GRU, 2 * H, H, RNX_DIRECTION_FORWARD),
                         rnx_readout_layer(RNX_READOUT_SEQUENCE),
                         rnx_dense_layer(H, O, RNX_ACT_TANH)};
    list[2].clip = 2.0f;
    const int32_t lengths[B] = {6, 4, 6, 5};
    uint64_t seed = 37;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    for (int j = 0; j < I; j++) {
        x[(0 * T + 0) * I + j] = value;     /* leading */
        x[(1 * T + 2) * I + j] = value;     /* a hole */
        x[(2 * T + 5) * I + j] = value;     /* trailing */
        x[(3 * T + 1) * I + j] = j ? value : 0.25f; /* not all features: valid */
    }
    uint8_t by_value[B * T], with_lengths[B * T];
    for (int i = 0; i < B * T; i++) {
        by_value[i] = 0;
        for (int j = 0; j < I; j++) by_value[i] |= x[i * I + j] != value;
        with_lengths[i] = by_value[i] && i % T < lengths[i / T];
    }
    CHECK(!by_value[0] && !by_value[T + 2] && !by_value[2 * T + 5] && by_value[3 * T + 1]);
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    for (int k = 0; k < n_isas; k++) {
        float *params = NULL;
        rnx_model *m = random_model(list, 5, isas[k], &seed, 0.5f, &params);
        rnx_model *plain = NULL;
        CHECK_STATUS(rnx_model_create(&plain, list + 1, 4, isas[k], params), RNX_OK);
        if (m && plain) {
            const size_t ny = (size_t)B * T * O, ns = (size_t)B * 3 * H;
            for (int threads = 1; threads <= 2; threads++) {
                outputs got = run_forward(m, x, NULL, NULL, NULL, NULL, NULL, B, T, threads);
                outputs want = run_forward(plain, x, NULL, NULL, NULL, NULL, by_value, B, T, 1);
                CHECK(!memcmp(got.y, want.y, ny * sizeof(float)));
                CHECK(!memcmp(got.h, want.h, ns * sizeof(float)));
                free_outputs(got), free_outputs(want);
                got = run_forward(m, x, NULL, NULL, NULL, lengths, NULL, B, T, threads);
                want = run_forward(plain, x, NULL, NULL, NULL, NULL, with_lengths, B, T, 1);
                CHECK(!memcmp(got.y, want.y, ny * sizeof(float)));
                CHECK(!memcmp(got.h, want.h, ns * sizeof(float)));
                free_outputs(got);
                got = run_forward(m, x, NULL, NULL, NULL, NULL, with_lengths, B, T, threads);
                CHECK(!memcmp(got.y, want.y, ny * sizeof(float)));
                free_outputs(got), free_outputs(want);
            }
        }
        rnx_model_free(m), rnx_model_free(plain), free(params);
    }
    free(x);
}

/* NULL pointers, an empty batch, no steps, lengths outside [1, T], the array the model does not
 * take, lengths with a mask, mask values other than 0/1, too many threads, ids out of range:
 * each refused before any work. */
static void forward_argument_errors(void) {
    enum { B = 2, T = 3, I = 2, H = 3 };
    const rnx_layer layer = rnx_recurrent_layer(RNX_CELL_GRU, I, H, RNX_DIRECTION_FORWARD);
    uint64_t seed = 4;
    rnx_model *m = random_model(&layer, 1, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    if (!m) return;
    float x[B * T * I] = {0}, y[B * T * H];
    int32_t lengths[B] = {T, T}, ids[B * T] = {0};
    uint8_t mask[B * T];
    memset(mask, 1, sizeof mask);
#define FWD(M, X, IDS, L, MASK, B_, T_, N)                                                      \
    rnx_forward(M, y, NULL, NULL, X, IDS, NULL, NULL, L, MASK, B_, T_, N)
    CHECK_STATUS(FWD(NULL, x, NULL, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(FWD(m, NULL, NULL, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(FWD(m, x, ids, NULL, NULL, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, 0, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, -1, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, B, 0, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, lengths, mask, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, B, T, RNX_MAX_THREADS + 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, B, T, 1 << 30), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, 1 << 20, 1 << 12, 1), RNX_ERR_OVERFLOW);
    mask[B * T - 1] = 2;
    CHECK_STATUS(FWD(m, x, NULL, NULL, mask, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    const int32_t bad_lengths[] = {0, T + 1, -1};
    for (int i = 0; i < 3; i++) {
        lengths[B - 1] = bad_lengths[i];
        CHECK_STATUS(FWD(m, x, NULL, lengths, NULL, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    }
    rnx_model_free(m);

    /* a model of ids: ids out of range are refused before y is written */
    const rnx_layer with_ids[2] = {rnx_embedding_layer(5, I, 0), layer};
    m = random_model(with_ids, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    if (!m) return;
    CHECK_STATUS(FWD(m, NULL, ids, NULL, NULL, B, T, 1), RNX_OK);
    CHECK_STATUS(FWD(m, x, ids, NULL, NULL, B, T, 1), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(FWD(m, NULL, NULL, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(FWD(m, x, NULL, NULL, NULL, B, T, 1), RNX_ERR_NULL_ARGUMENT); /* ids missing */
    const int32_t bad_ids[] = {5, -1};
    for (int i = 0; i < 2; i++) {
        y[0] = 42.0f;
        ids[B * T - 1] = bad_ids[i];
        CHECK_STATUS(FWD(m, NULL, ids, NULL, NULL, B, T, 1), RNX_ERR_BAD_ARGUMENT);
        CHECK(y[0] == 42.0f);
    }
#undef FWD
    rnx_model_free(m);
}

const test_case forward_tests[] = {
    TEST(forward_matches_reference),  TEST(forward_threads_identical),
    TEST(forward_masks),              TEST(forward_states_carry),
    TEST(forward_directions_and_merges), TEST(forward_readouts_and_dense),
    TEST(forward_embedding),          TEST(forward_argument_errors),
    TEST(forward_masking),
};
const size_t forward_test_count = sizeof forward_tests / sizeof forward_tests[0];
