/* rnx_demo: a layer-list model run from C alone, as a program embedding rnnext would: build
 * embedding -> LSTM -> dense (softmax) from PyTorch-layout parameters, run a batch of token
 * ids with per-sequence lengths, then stream one sequence a token at a time and check that
 * each step's output is the batch's output at that step.
 *   make -C csrc examples/rnx_demo && csrc/examples/rnx_demo */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "rnnext.h"

#define CHECK(call)                                                                               \
    do {                                                                                          \
        rnx_status s_ = (call);                                                                   \
        if (s_ != RNX_OK) {                                                                       \
            fprintf(stderr, "%s: %s\n", #call, rnx_status_string(s_));                            \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

int main(void) {
    if (rnx_version_number() != RNX_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %d\n", RNX_VERSION_NUMBER, rnx_version_number());
        return 1;
    }
    enum { B = 4, T = 50, V = 100, E = 8, H = 32, O = 5 };
    /* no readout: the dense layer runs on every step, y is (B, T, O) */
    const rnx_layer layers[3] = {rnx_embedding_layer(V, E, -1),
                                 rnx_recurrent_layer(RNX_CELL_LSTM, E, H, RNX_DIRECTION_FORWARD),
                                 rnx_dense_layer(H, O, RNX_ACT_SOFTMAX)};
    size_t n;
    CHECK(rnx_param_count(layers, 3, &n));
    float *params = malloc(n * sizeof(float)), *y = malloc((size_t)B * T * O * sizeof(float));
    int32_t *ids = malloc((size_t)B * T * sizeof(int32_t));
    if (!params || !y || !ids) return 1;
    srand(1);
    for (size_t i = 0; i < n; i++) params[i] = (float)rand() / RAND_MAX * 0.3f - 0.15f;
    for (int i = 0; i < B * T; i++) ids[i] = rand() % V;

    rnx_model *model;
    CHECK(rnx_model_create(&model, layers, 3, RNX_ISA_AUTO, params));
    const rnx_model_info info = rnx_model_get_info(model);
    if (!info.takes_ids || !info.per_step || info.output_size != O || !info.streamable) {
        fprintf(stderr, "unexpected model info\n");
        return 1;
    }
    const int32_t lengths[B] = {50, 10, 1, 33};
    CHECK(rnx_forward(model, y, NULL, NULL, NULL, ids, NULL, NULL, lengths, NULL, B, T, 0));

    /* the second sequence again, streamed token by token over its 10 valid steps */
    rnx_stream *stream;
    float step[O];
    CHECK(rnx_stream_create(&stream, model, 1));
    float diff = 0.0f, total = 0.0f;
    for (int t = 0; t < lengths[1]; t++) {
        CHECK(rnx_stream_step(stream, step, NULL, ids + (size_t)1 * T + t));
        for (int j = 0; j < O; j++) {
            diff = fmaxf(diff, fabsf(step[j] - y[((size_t)1 * T + t) * O + j]));
            total += step[j];
        }
    }
    printf("rnnext %d, kernels %s, %d threads: embedding %dx%d, LSTM %d, dense %d softmax; "
           "outputs sum to %g over %d steps; batch and stream differ by %g\n",
           rnx_version_number(), rnx_isa_name((rnx_isa)info.isa), rnx_max_threads(), V, E, H, O,
           total, lengths[1], diff);
    rnx_stream_free(stream);
    rnx_model_free(model);
    free(params), free(y), free(ids);
    return diff == 0.0f && fabsf(total - lengths[1]) < 1e-4f ? 0 : 1;
}
