/* main.c: the C test runner of the rnnext core.
 *
 *   runner [--corpus DIR] [--filter TEXT]   every suite (the corpus test with --corpus), or the
 *                                          tests whose name contains TEXT
 *   runner stack IN OUT                    the Python-fed comparison (stack.c)
 *   runner leaks N                         exercise_lifecycle N times, for LeakSanitizer
 *
 * Each mode ends with the line "N passed, N failed" and exits 1 when a test failed (2 on bad
 * usage or unreadable input). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

void exercise_lifecycle(void) {
    enum { B = 3, T = 5, I = 4, H = 6 };
    uint64_t seed = 99;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    float y[B * T * 2 * H];

    /* forward and training on a bidirectional LSTM under a GRU with a head */
    const rnx_layer full[4] = {
        rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_BIDIRECTIONAL),
        rnx_recurrent_layer(RNX_CELL_GRU, 2 * H, H, RNX_DIRECTION_FORWARD),
        rnx_readout_layer(RNX_READOUT_LAST), rnx_dense_layer(H, 2, RNX_ACT_SOFTMAX)};
    float *params = NULL;
    rnx_model *m = random_model(full, 4, RNX_ISA_AUTO, &seed, 0.5f, &params);
    CHECK_STATUS(rnx_forward(m, y, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 2), RNX_OK);
    rnx_tape *tape = NULL;
    CHECK_STATUS(rnx_tape_create(&tape, m, B, T), RNX_OK);
    float *grads = zero_floats(rnx_model_get_info(m).recurrent_param_count);
    CHECK_STATUS(rnx_forward_train(m, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B, T, 2),
                 RNX_OK);
    CHECK_STATUS(rnx_backward(m, tape, grads, NULL, NULL, NULL, x, NULL, NULL, NULL, 2), RNX_OK);
    rnx_stream *s = NULL;
    CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_ERR_BAD_CONFIG); /* bidirectional */
    rnx_tape_free(tape);
    rnx_model_free(m);
    free(grads);

    /* failures on the way: a bad list, a tape too small, a truncated file */
    rnx_layer bad = full[0];
    bad.units = 0;
    CHECK_STATUS(rnx_model_create(&m, &bad, 1, RNX_ISA_AUTO, params), RNX_ERR_BAD_CONFIG);
    free(params);

    /* a stream of ids on a folded embedding, and a model loaded from a file */
    const rnx_layer ids_list[2] = {rnx_embedding_layer(7, I, 0),
                                   rnx_recurrent_layer(RNX_CELL_RNN_TANH, I, H,
                                                       RNX_DIRECTION_FORWARD)};
    m = random_model(ids_list, 2, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    CHECK_STATUS(rnx_stream_create(&s, m, B), RNX_OK);
    const int32_t ids[B] = {1, 6, 0};
    CHECK_STATUS(rnx_stream_step(s, y, NULL, ids), RNX_OK);
    CHECK_STATUS(rnx_stream_reset(s, NULL, NULL), RNX_OK);
    rnx_stream_free(s);
    rnx_model_free(m);

    params = random_floats(4 * H * (I + H + 2), &seed, 0.5f);
    size_t size;
    unsigned char *file = version1_file("lstm", I, H, params, NULL, NULL, NULL, &size);
    char message[128];
    CHECK_STATUS(rnx_model_load(&m, file, size, RNX_ISA_AUTO, message, sizeof message), RNX_OK);
    rnx_model_free(m);
    CHECK_STATUS(rnx_model_load(&m, file, size - 4, RNX_ISA_AUTO, message, sizeof message),
                 RNX_ERR_FILE_LENGTH);
    free(file);
    file = version1_file("lstm", I, H, params, NULL, NULL, "bias_ih_l0", &size);
    CHECK_STATUS(rnx_model_load(&m, file, size, RNX_ISA_AUTO, message, sizeof message),
                 RNX_ERR_FILE_MODEL);
    free(file);
    free(params);
    free(x);
}

static void lifecycle(void) { exercise_lifecycle(); }

static const test_case lifecycle_tests[] = {TEST(lifecycle)};

static int usage(const char *program) {
    fprintf(stderr,
            "usage: %s [--corpus DIR] [--filter TEXT]\n"
            "       %s stack IN OUT\n"
            "       %s leaks N\n",
            program, program, program);
    return 2;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "stack") == 0)
        return argc == 4 ? run_stack(argv[2], argv[3]) : usage(argv[0]);
    if (argc >= 2 && strcmp(argv[1], "leaks") == 0) {
        const int n = argc == 3 ? atoi(argv[2]) : 0;
        if (n < 1) return usage(argv[0]);
        for (int i = 0; i < n; i++) run_tests(lifecycle_tests, 1, NULL);
        return report_tests();
    }
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--corpus") == 0)
            corpus_dir = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--filter") == 0)
            filter = argv[++i];
        else
            return usage(argv[0]);
    }
    const struct {
        const test_case *tests;
        size_t n;
    } suites[] = {{api_tests, api_test_count},       {forward_tests, forward_test_count},
                  {stream_tests, stream_test_count}, {file_tests, file_test_count},
                  {train_tests, train_test_count},   {lifecycle_tests, 1}};
    int ran = 0;
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
        ran += run_tests(suites[i].tests, suites[i].n, filter);
    if (corpus_dir) ran += run_tests(&corpus_test, 1, filter);
    if (!ran) {
        fprintf(stderr, "no test matches the filter \"%s\"\n", filter);
        return 2;
    }
    return report_tests();
}
