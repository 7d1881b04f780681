/* rnx_demo: an LSTM run from C alone, as a program embedding rnnext would: build a model from
 * PyTorch-layout parameters, run a batch with per-sequence lengths, then stream one step at a
 * time and check both give the same last hidden state.
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
    const int B = 4, T = 50, I = 8, H = 32;
    const rnx_layer layers[1] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD)};
    size_t n;
    CHECK(rnx_param_count(layers, 1, &n));
    float *params = malloc(n * sizeof(float)), *x = malloc((size_t)B * T * I * sizeof(float));
    float *h_n = malloc((size_t)B * H * sizeof(float)), *y = malloc((size_t)B * H * sizeof(float));
    if (!params || !x || !h_n || !y) return 1;
    srand(1);
    for (size_t i = 0; i < n; i++) params[i] = (float)rand() / RAND_MAX * 0.3f - 0.15f;
    for (int i = 0; i < B * T * I; i++) x[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;

    rnx_model *model;
    CHECK(rnx_model_create(&model, layers, 1, RNX_ISA_AUTO, params));
    const int32_t lengths[4] = {50, 10, 1, 33};
    CHECK(rnx_forward(model, NULL, h_n, NULL, x, NULL, NULL, NULL, lengths, NULL, B, T, 0));

    /* the second sequence again, streamed step by step over its 10 valid steps */
    rnx_stream *stream;
    CHECK(rnx_stream_create(&stream, model, 1));
    for (int t = 0; t < lengths[1]; t++) CHECK(rnx_stream_step(stream, y, x + ((size_t)1 * T + t) * I, NULL));
    float diff = 0.0f;
    for (int j = 0; j < H; j++) diff = fmaxf(diff, fabsf(y[j] - h_n[(size_t)1 * H + j]));
    printf("rnnext %d, kernels %s, %d threads: batch and stream differ by %g\n",
           rnx_version_number(), rnx_isa_name((rnx_isa)rnx_model_get_info(model).isa), rnx_max_threads(),
           diff);
    rnx_stream_free(stream);
    rnx_model_free(model);
    free(params), free(x), free(h_n), free(y);
    return diff == 0.0f ? 0 : 1;
}
