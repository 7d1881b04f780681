/* test_stream.c: streams step by step against rnx_forward over the whole sequence, their
 * states, resets and argument checks. */
#include <stdlib.h>
#include <string.h>
#include "runner.h"

/* On every instruction set, a stream started from h0, c0 gives forward's per-step outputs and
 * its final states, for a sequence readout and for last (the dense layers on each new h). */
static void stream_equals_forward(void) {
    enum { B = 3, T = 6, I = 3, H = 5, O = 2 };
    rnx_layer list[4] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_GRU, H, 9, RNX_DIRECTION_FORWARD),
                         rnx_readout_layer(RNX_READOUT_SEQUENCE),
                         rnx_dense_layer(9, O, RNX_ACT_TANH)};
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    uint64_t seed = 13;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    float *h0 = random_floats(B * (H + 9), &seed, 0.5f), *c0 = random_floats(B * H, &seed, 0.5f);
    for (int k = 0; k < n_isas; k++) {
        float *params = NULL;
        rnx_model *m = random_model(list, 4, isas[k], &seed, 0.5f, &params);
        rnx_stream *s = NULL;
        if (m) CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_OK);
        if (s) {
            float y[B * T * O], h_n[B * (H + 9)], c_n[B * H], step[B * O], xt[B * I];
            float h[B * (H + 9)], c[B * H];
            CHECK_STATUS(rnx_forward(m, y, h_n, c_n, x, NULL, h0, c0, NULL, NULL, B, T, 2),
                         RNX_OK);
            CHECK_STATUS(rnx_stream_reset(s, h0, c0), RNX_OK);
            CHECK_STATUS(rnx_stream_state(s, h, c), RNX_OK);
            CHECK(!memcmp(h, h0, sizeof h) && !memcmp(c, c0, sizeof c));
            for (int t = 0; t < T; t++) {
                for (int b = 0; b < B; b++)
                    memcpy(xt + b * I, x + ((size_t)b * T + t) * I, I * sizeof(float));
                CHECK_STATUS(rnx_stream_step(s, step, xt, NULL), RNX_OK);
                for (int b = 0; b < B; b++)
                    CHECK(!memcmp(step + b * O, y + ((size_t)b * T + t) * O, O * sizeof(float)));
            }
            CHECK_STATUS(rnx_stream_state(s, h, NULL), RNX_OK);
            CHECK_STATUS(rnx_stream_state(s, NULL, c), RNX_OK);
            CHECK(!memcmp(h, h_n, sizeof h) && !memcmp(c, c_n, sizeof c));
            /* a reset to zeros, then the first step: forward's first step from zeros */
            CHECK_STATUS(rnx_stream_reset(s, NULL, NULL), RNX_OK);
            CHECK_STATUS(rnx_stream_step(s, step, xt, NULL), RNX_OK);
            CHECK_STATUS(rnx_forward(m, y, NULL, NULL, xt, NULL, NULL, NULL, NULL, NULL, B, 1, 1),
                         RNX_OK);
            CHECK(!memcmp(step, y, sizeof step));
            rnx_stream_free(s);

            /* readout last: the model's output for the steps so far, each step */
            rnx_layer last[4];
            memcpy(last, list, sizeof last);
            last[2] = rnx_readout_layer(RNX_READOUT_LAST);
            rnx_model *lm = NULL;
            CHECK_STATUS(rnx_model_create(&lm, last, 4, isas[k], params), RNX_OK);
            s = NULL;
            if (lm) CHECK_STATUS(rnx_stream_create(&s, lm, B), RNX_OK);
            for (int t = 0; s && t < T; t++) {
                for (int b = 0; b < B; b++)
                    memcpy(xt + b * I, x + ((size_t)b * T + t) * I, I * sizeof(float));
                CHECK_STATUS(rnx_stream_step(s, step, xt, NULL), RNX_OK);
                float prefix[B * O];
                const int32_t lengths[B] = {t + 1, t + 1, t + 1};
                CHECK_STATUS(rnx_forward(lm, prefix, NULL, NULL, x, NULL, NULL, NULL, lengths,
                                         NULL, B, T, 1),
                             RNX_OK);
                CHECK_CLOSE(step, prefix, B * O, 1e-6, 1e-7);
            }
            rnx_stream_free(s);
            rnx_model_free(lm);
        }
        rnx_model_free(m);
        free(params);
    }
    free(x), free(h0), free(c0);
}

/* A stream of two rows (B = 2, hidden width H) steps `first`, then `masked`, whose row 0 is a
 * masked step and row 1 is not (x or ids, as the model takes): row 0 keeps its state and gives
 * zeros, row 1 moves on. The states after both go to h_after (2*H floats). */
static void check_masked_step(rnx_stream *s, int H, const float *x_first, const int32_t *ids_first,
                              const float *x_masked, const int32_t *ids_masked, float *h_after) {
    float y[2 * H], h_before[2 * H];
    CHECK_STATUS(rnx_stream_step(s, y, x_first, ids_first), RNX_OK);
    CHECK_STATUS(rnx_stream_state(s, h_before, NULL), RNX_OK);
    CHECK_STATUS(rnx_stream_step(s, y, x_masked, ids_masked), RNX_OK);
    CHECK_STATUS(rnx_stream_state(s, h_after, NULL), RNX_OK);
    CHECK(!memcmp(h_before, h_after, (size_t)H * sizeof(float)));
    for (int u = 0; u < H; u++) CHECK(y[u] == 0.0f);
    CHECK(memcmp(h_before + H, h_after + H, (size_t)H * sizeof(float)) != 0);
}

/* An embedding with mask_zero: a step of id 0 keeps the states and gives zeros. */
static void stream_of_ids(void) {
    enum { B = 2, V = 6, E = 3, H = 4 };
    rnx_layer list[2] = {rnx_embedding_layer(V, E, 0),
                         rnx_recurrent_layer(RNX_CELL_GRU, E, H, RNX_DIRECTION_FORWARD)};
    list[0].mask_zero = 1;
    uint64_t seed = 19;
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    rnx_stream *s = NULL;
    if (m) CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_OK);
    if (s) {
        const int32_t first[B] = {3, 5}, masked[B] = {0, 2}, out_of_range[B] = {1, V};
        float y[B * H], h_before[B * H], h_after[B * H];
        check_masked_step(s, H, NULL, first, NULL, masked, h_after);
        CHECK_STATUS(rnx_stream_step(s, y, NULL, out_of_range), RNX_ERR_BAD_ARGUMENT);
        CHECK_STATUS(rnx_stream_state(s, h_before, NULL), RNX_OK);
        CHECK(!memcmp(h_before, h_after, sizeof h_after)); /* refused: nothing changed */
        const float x[B * E] = {0};
        CHECK_STATUS(rnx_stream_step(s, y, x, NULL), RNX_ERR_NULL_ARGUMENT); /* ids missing */
        CHECK_STATUS(rnx_stream_step(s, y, x, masked), RNX_ERR_BAD_ARGUMENT);
        CHECK_STATUS(rnx_stream_step(s, y, NULL, NULL), RNX_ERR_NULL_ARGUMENT);
    }
    rnx_stream_free(s);
    rnx_model_free(m);
}

/* A masking layer: a step whose features all equal its value keeps the states and gives zeros
 * for a sequence readout; the others step as forward does. */
static void stream_masking(void) {
    enum { B = 2, I = 2, H = 4 };
    const float value = 0.5f;
    rnx_layer list[2] = {rnx_masking_layer(value),
                         rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD)};
    uint64_t seed = 23;
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    rnx_stream *s = NULL;
    if (m) CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_OK);
    if (s) {
        const float first[B * I] = {0.1f, -0.3f, 0.7f, 0.2f};
        const float masked[B * I] = {value, value, value, 0.9f}; /* row 1: one feature differs */
        float forward_y[B * 2 * H], h_after[B * H], c_after[B * H];
        float h_n[B * H], c_n[B * H], x[B * 2 * I];
        check_masked_step(s, H, first, NULL, masked, NULL, h_after);
        CHECK_STATUS(rnx_stream_state(s, NULL, c_after), RNX_OK);
        for (int b = 0; b < B; b++) {
            memcpy(x + b * 2 * I, first + b * I, I * sizeof(float));
            memcpy(x + b * 2 * I + I, masked + b * I, I * sizeof(float));
        }
        CHECK_STATUS(rnx_forward(m, forward_y, h_n, c_n, x, NULL, NULL, NULL, NULL, NULL, B, 2, 1),
                     RNX_OK);
        CHECK(!memcmp(h_n, h_after, sizeof h_n) && !memcmp(c_n, c_after, sizeof c_n));
        /* row 1's output at step 1 is its new h */
        CHECK(!memcmp(h_after + H, forward_y + 3 * H, H * sizeof(float)));
    }
    rnx_stream_free(s);
    rnx_model_free(m);
}

/* Streams refuse what cannot stream and bad arguments, and leave *out NULL. */
static void stream_errors(void) {
    rnx_layer list[2] = {rnx_recurrent_layer(RNX_CELL_RNN_TANH, 2, 3, RNX_DIRECTION_FORWARD),
                         rnx_readout_layer(RNX_READOUT_MEAN)};
    uint64_t seed = 2;
    static int somewhere;
    rnx_stream *const not_null = (rnx_stream *)&somewhere;
    rnx_model *m = random_model(list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    rnx_stream *s = not_null;
    CHECK_STATUS(rnx_stream_create(&s, m, 1), RNX_ERR_BAD_CONFIG);
    CHECK(s == NULL);
    rnx_model_free(m);
    list[0].direction = RNX_DIRECTION_BIDIRECTIONAL;
    m = random_model(list, 1, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    s = not_null;
    CHECK_STATUS(rnx_stream_create(&s, m, 1), RNX_ERR_BAD_CONFIG);
    CHECK(s == NULL);
    rnx_model_free(m);
    list[0].direction = RNX_DIRECTION_FORWARD;
    m = random_model(list, 1, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    const int bad_batches[] = {0, -1};
    for (int i = 0; i < 2; i++) {
        s = not_null;
        CHECK_STATUS(rnx_stream_create(&s, m, bad_batches[i]), RNX_ERR_BAD_ARGUMENT);
        CHECK(s == NULL);
    }
    s = not_null;
    CHECK_STATUS(rnx_stream_create(&s, NULL, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK(s == NULL);
    CHECK_STATUS(rnx_stream_create(NULL, m, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_stream_reset(NULL, NULL, NULL), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_stream_state(NULL, NULL, NULL), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_stream_step(NULL, NULL, NULL, NULL), RNX_ERR_NULL_ARGUMENT);
    s = NULL;
    CHECK_STATUS(rnx_stream_create(&s, m, 2), RNX_OK);
    const int32_t ids[2] = {0, 0};
    const float x[4] = {0};
    CHECK_STATUS(rnx_stream_step(s, NULL, x, ids), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_stream_step(s, NULL, x, NULL), RNX_OK);
    rnx_stream_free(s);
    rnx_stream_free(NULL);
    rnx_model_free(m);
}

const test_case stream_tests[] = {
    TEST(stream_equals_forward),
    TEST(stream_of_ids),
    TEST(stream_masking),
    TEST(stream_errors),
};
const size_t stream_test_count = sizeof stream_tests / sizeof stream_tests[0];
