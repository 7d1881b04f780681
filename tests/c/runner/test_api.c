/* test_api.c: versions, names, instruction sets, the activation functions, layer lists, model
 * creation and the info a model reports. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

static void version_and_names(void) {
    CHECK(rnx_version_number() == RNX_VERSION_NUMBER);
    /* every status has its own text; an unknown code still gets one */
    for (int s = RNX_OK; s <= RNX_ERR_FILE_VERSION + 1; s++) {
        const char *text = rnx_status_string((rnx_status)s);
        CHECK(text != NULL && text[0] != '\0');
        for (int other = RNX_OK; other < s && s <= RNX_ERR_FILE_VERSION; other++)
            CHECK(strcmp(text, rnx_status_string((rnx_status)other)) != 0);
    }
    CHECK(rnx_status_string((rnx_status)-1) != NULL);
    const char *isa_names[] = {"auto",        "scalar",      "avx2",    "avx512",
                               "avx512_vnni", "avx512_bf16", "avx_vnni"};
    for (int isa = RNX_ISA_AUTO; isa <= LAST_ISA; isa++)
        CHECK(strcmp(rnx_isa_name((rnx_isa)isa), isa_names[isa]) == 0);
    CHECK(strcmp(rnx_isa_name((rnx_isa)42), "unknown") == 0);
    const char *dtype_names[] = {"F32", "F16", "BF16", "F64"};
    for (int d = RNX_DTYPE_F32; d <= RNX_DTYPE_F64; d++)
        CHECK(strcmp(rnx_dtype_name((rnx_dtype)d), dtype_names[d]) == 0);
    CHECK(strcmp(rnx_dtype_name((rnx_dtype)-1), "unknown") == 0);
    CHECK(rnx_max_threads() >= 1 && rnx_max_threads() <= RNX_MAX_THREADS);
    CHECK(rnx_has_openmp() == 0 || rnx_has_openmp() == 1);
}

/* The default is supported (or RNX_ISA_AUTO when RNNEXT_ISA names nothing usable, and then
 * creating with RNX_ISA_AUTO fails); a model reports the set it was built for; an unsupported
 * one is refused. */
static void isa_selection(void) {
    const rnx_isa chosen = rnx_default_isa();
    const char *forced = getenv("RNNEXT_ISA");
    rnx_layer layer = rnx_recurrent_layer(RNX_CELL_GRU, 3, 5, RNX_DIRECTION_FORWARD);
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(&layer, 1, &count), RNX_OK);
    float *params = zero_floats(count);
    rnx_model *m = NULL;
    if (chosen == RNX_ISA_AUTO) {
        CHECK(forced != NULL);
        CHECK_STATUS(rnx_model_create(&m, &layer, 1, RNX_ISA_AUTO, params),
                     RNX_ERR_ISA_UNAVAILABLE);
        CHECK(m == NULL);
    } else {
        CHECK(rnx_isa_supported(chosen));
        if (forced && *forced) CHECK(strcmp(forced, rnx_isa_name(chosen)) == 0);
        CHECK_STATUS(rnx_model_create(&m, &layer, 1, RNX_ISA_AUTO, params), RNX_OK);
        CHECK(rnx_model_get_info(m).isa == (int)chosen);
        rnx_model_free(m);
    }
    CHECK(rnx_isa_supported(RNX_ISA_SCALAR) && !rnx_isa_supported(RNX_ISA_AUTO));
    CHECK(!rnx_isa_supported((rnx_isa)(LAST_ISA + 1)));
    for (int isa = RNX_ISA_SCALAR; isa <= LAST_ISA; isa++) {
        m = NULL;
        const rnx_status s = rnx_model_create(&m, &layer, 1, isa, params);
        CHECK_STATUS(s, rnx_isa_supported((rnx_isa)isa) ? RNX_OK : RNX_ERR_ISA_UNAVAILABLE);
        CHECK((s == RNX_OK) == (m != NULL));
        if (m) CHECK(rnx_model_get_info(m).isa == isa);
        rnx_model_free(m);
    }
    free(params);
}

/* rnx_activation against libm in double, within the header's bounds, on every instruction set,
 * with the limits at +-inf and NaN */
static void activation_accuracy(void) {
    enum { N = 4001 };
    static float in[N + 3], out[N + 3];
    for (int i = 0; i < N; i++) in[i] = -20.0f + 40.0f * (float)i / (N - 1);
    in[N] = INFINITY, in[N + 1] = -INFINITY, in[N + 2] = NAN;
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    for (int k = 0; k < n_isas; k++) {
        for (int fn = RNX_FN_SIGMOID; fn <= RNX_FN_TANH; fn++) {
            CHECK_STATUS(rnx_activation(isas[k], (rnx_function)fn, out, in, N + 3), RNX_OK);
            double worst = 0.0;
            for (int i = 0; i < N; i++) {
                const double exact = fn == RNX_FN_SIGMOID ? 1.0 / (1.0 + exp(-(double)in[i]))
                                                          : tanh((double)in[i]);
                worst = fmax(worst, fabs((double)out[i] - exact));
            }
            CHECK(worst <= (fn == RNX_FN_SIGMOID ? 2e-7 : 4e-7));
            CHECK(out[N] == 1.0f && out[N + 1] == (fn == RNX_FN_SIGMOID ? 0.0f : -1.0f));
            CHECK(isnan(out[N + 2]));
        }
    }
    CHECK_STATUS(rnx_activation(RNX_ISA_SCALAR, RNX_FN_TANH, NULL, in, 1), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_activation(RNX_ISA_SCALAR, RNX_FN_TANH, out, NULL, 1),
                 RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_activation(RNX_ISA_SCALAR, RNX_FN_TANH, NULL, NULL, 0), RNX_OK);
    CHECK_STATUS(rnx_activation(RNX_ISA_SCALAR, (rnx_function)2, out, in, 1),
                 RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_activation((rnx_isa)9, RNX_FN_TANH, out, in, 1), RNX_ERR_ISA_UNAVAILABLE);
}

/* The constructors fill the defaults the header states, and rnx_param_count is the header's
 * layout: per direction G*H*(I + S) + 2*G*H (+ P*H, + 3*H), V*E, O*(F + 1). */
static void layer_lists_and_param_counts(void) {
    const rnx_layer e = rnx_embedding_layer(11, 4, -1);
    CHECK(e.kind == RNX_LAYER_EMBEDDING && e.input_size == 11 && e.units == 4 &&
          e.padding_idx == -1 && !e.mask_zero);
    const rnx_layer lstm = rnx_recurrent_layer(RNX_CELL_LSTM, 4, 6, RNX_DIRECTION_BIDIRECTIONAL);
    CHECK(lstm.kind == RNX_LAYER_RECURRENT && lstm.cell == RNX_CELL_LSTM && lstm.units == 6 &&
          lstm.direction == RNX_DIRECTION_BIDIRECTIONAL && lstm.merge == RNX_MERGE_CONCAT);
    CHECK(lstm.activations[0] == RNX_ACT_SIGMOID && lstm.activations[1] == RNX_ACT_TANH &&
          lstm.activations[2] == RNX_ACT_TANH && !lstm.proj_size && !lstm.peepholes);
    const rnx_layer relu = rnx_recurrent_layer(RNX_CELL_RNN_RELU, 3, 2, RNX_DIRECTION_FORWARD);
    CHECK(relu.activations[0] == RNX_ACT_RELU);
    const rnx_layer gru = rnx_recurrent_layer(RNX_CELL_GRU, 12, 5, RNX_DIRECTION_REVERSE);
    CHECK(gru.activations[0] == RNX_ACT_SIGMOID && gru.activations[1] == RNX_ACT_TANH);
    const rnx_layer r = rnx_readout_layer(RNX_READOUT_MEAN);
    CHECK(r.kind == RNX_LAYER_READOUT && r.readout == RNX_READOUT_MEAN && !r.units);
    const rnx_layer d = rnx_dense_layer(5, 3, RNX_ACT_SOFTMAX);
    CHECK(d.kind == RNX_LAYER_DENSE && d.input_size == 5 && d.units == 3 &&
          d.activation == RNX_ACT_SOFTMAX);

    rnx_layer list[5] = {e, lstm, gru, r, d};
    list[3].readout = RNX_READOUT_LAST;
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(list, 5, &count), RNX_OK);
    const size_t expected = 11 * 4 + 2 * (24 * (4 + 6) + 2 * 24) + (15 * (12 + 5) + 2 * 15) +
                            3 * (5 + 1);
    CHECK(count == expected);
    rnx_layer projected = rnx_recurrent_layer(RNX_CELL_LSTM, 4, 6, RNX_DIRECTION_FORWARD);
    projected.proj_size = 2;
    projected.peepholes = 1;
    CHECK_STATUS(rnx_param_count(&projected, 1, &count), RNX_OK);
    CHECK(count == 24 * (4 + 2) + 2 * 24 + 2 * 6 + 3 * 6);
}

/* Every NULL and out-of-range argument or field gives its status and never a model. */
static void model_creation_errors(void) {
    rnx_layer good[2] = {rnx_recurrent_layer(RNX_CELL_LSTM, 3, 4, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_GRU, 4, 5, RNX_DIRECTION_BIDIRECTIONAL)};
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(good, 2, &count), RNX_OK);
    float *params = zero_floats(count);
    CHECK_STATUS(rnx_param_count(NULL, 2, &count), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_param_count(good, 2, NULL), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_param_count(good, 0, &count), RNX_ERR_BAD_CONFIG);
    CHECK_STATUS(rnx_param_count(good, RNX_MAX_LAYERS + 1, &count), RNX_ERR_BAD_CONFIG);

    /* a failed create must set *out to NULL, so m starts as some other pointer */
    static int somewhere;
    rnx_model *const not_null = (rnx_model *)&somewhere;
    rnx_model *m = not_null;
    CHECK_STATUS(rnx_model_create(NULL, good, 2, RNX_ISA_SCALAR, params), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_model_create(&m, NULL, 2, RNX_ISA_SCALAR, params), RNX_ERR_NULL_ARGUMENT);
    CHECK(m == NULL);
    m = not_null;
    CHECK_STATUS(rnx_model_create(&m, good, 2, RNX_ISA_SCALAR, NULL), RNX_ERR_NULL_ARGUMENT);
    CHECK(m == NULL);
    const int bad_isas[] = {-1, LAST_ISA + 1};
    for (int i = 0; i < 2; i++) {
        m = not_null;
        CHECK_STATUS(rnx_model_create(&m, good, 2, bad_isas[i], params), RNX_ERR_BAD_CONFIG);
        CHECK(m == NULL);
    }

    /* one field of the first layer out of range at a time */
    enum { NBAD = 16 };
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
    bad[9].mask_zero = 1;    /* an embedding's field */
    bad[10].readout = 1;     /* a readout's field */
    bad[11].activations[0] = RNX_ACT_SOFTMAX;
    bad[12].clip = -1.0f;
    bad[13].proj_size = bad[13].units; /* proj_size < H */
    bad[14].activation = RNX_ACT_RELU; /* a dense layer's field */
    bad[15].peepholes = 2;
    rnx_layer list[2] = {good[0], good[1]};
    for (int i = 0; i < NBAD; i++) {
        list[0] = bad[i];
        m = not_null;
        CHECK_STATUS(rnx_param_count(list, 2, &count), RNX_ERR_BAD_CONFIG);
        CHECK_STATUS(rnx_model_create(&m, list, 2, RNX_ISA_SCALAR, params), RNX_ERR_BAD_CONFIG);
        CHECK(m == NULL);
    }
    /* proj_size is the LSTM's only */
    list[0] = good[0], list[1] = good[1];
    list[1].proj_size = 2;
    CHECK_STATUS(rnx_param_count(list, 2, &count), RNX_ERR_BAD_CONFIG);

    /* the order of a list: embedding first, readout before dense layers, widths that chain */
    const rnx_layer rec = good[0];
    const rnx_layer emb = rnx_embedding_layer(7, 3, -1);
    const rnx_layer ro = rnx_readout_layer(RNX_READOUT_LAST);
    const rnx_layer dn = rnx_dense_layer(4, 3, RNX_ACT_SOFTMAX);
    const rnx_layer ok[] = {emb, rec, ro, dn};
    CHECK_STATUS(rnx_param_count(ok, 4, &count), RNX_OK);
    const rnx_layer orders[][3] = {{rec, emb, ro}, {rec, dn, ro}, {ro, rec, dn}, {rec, ro, ro},
                                   {emb, ro, dn}, {dn, rec, ro}};
    for (int i = 0; i < 6; i++)
        CHECK_STATUS(rnx_param_count(orders[i], 3, &count), RNX_ERR_BAD_CONFIG);
    rnx_layer wide = dn;
    wide.input_size = 5;
    const rnx_layer widths[] = {rec, wide};
    CHECK_STATUS(rnx_param_count(widths, 2, &count), RNX_ERR_BAD_CONFIG);
    rnx_layer padded = emb;
    padded.padding_idx = 7;
    const rnx_layer padding[] = {padded, rec};
    CHECK_STATUS(rnx_param_count(padding, 2, &count), RNX_ERR_BAD_CONFIG);

    /* a masking layer: first, not with an embedding, a finite value, its other fields zero; it
     * has no parameters and keeps the width of x */
    const rnx_layer mask = rnx_masking_layer(-1.0f);
    const rnx_layer masked[] = {mask, rec, ro, dn};
    size_t unmasked = 0;
    CHECK_STATUS(rnx_param_count(masked, 4, &count), RNX_OK);
    CHECK_STATUS(rnx_param_count(masked + 1, 3, &unmasked), RNX_OK);
    CHECK(count == unmasked);
    const rnx_layer mask_orders[][3] = {{rec, mask, ro}, {emb, mask, rec}, {mask, emb, rec},
                                        {mask, mask, rec}, {mask, ro, dn}};
    for (int i = 0; i < 5; i++)
        CHECK_STATUS(rnx_param_count(mask_orders[i], 3, &count), RNX_ERR_BAD_CONFIG);
    rnx_layer bad_masks[5] = {mask, mask, mask, mask, mask};
    bad_masks[0].mask_value = NAN;
    bad_masks[1].mask_value = INFINITY;
    bad_masks[2].input_size = 3;
    bad_masks[3].units = 3;
    bad_masks[4].mask_zero = 1;
    for (int i = 0; i < 5; i++) {
        const rnx_layer pair[] = {bad_masks[i], rec};
        CHECK_STATUS(rnx_param_count(pair, 2, &count), RNX_ERR_BAD_CONFIG);
    }
    rnx_layer masked_value = rec;
    masked_value.mask_value = 1.0f; /* a masking layer's field */
    CHECK_STATUS(rnx_param_count(&masked_value, 1, &count), RNX_ERR_BAD_CONFIG);
    rnx_model_free(NULL);
    free(params);
}

/* The info and layer list a model reports, for a list with every kind of layer. */
static void model_info_and_layers(void) {
    rnx_layer list[6] = {rnx_embedding_layer(9, 5, 0),
                         rnx_recurrent_layer(RNX_CELL_GRU, 5, 8, RNX_DIRECTION_BIDIRECTIONAL),
                         rnx_recurrent_layer(RNX_CELL_LSTM, 16, 6, RNX_DIRECTION_FORWARD),
                         rnx_readout_layer(RNX_READOUT_LAST), rnx_dense_layer(4, 7, RNX_ACT_RELU),
                         rnx_dense_layer(7, 3, RNX_ACT_SOFTMAX)};
    list[2].proj_size = 4;
    uint64_t seed = 3;
    rnx_model *m = random_model(list, 6, RNX_ISA_AUTO, &seed, 0.5f, NULL);
    if (!m) return;
    const rnx_model_info info = rnx_model_get_info(m);
    CHECK(info.isa == (int)rnx_default_isa() && info.n_layers == 6 && info.takes_ids);
    CHECK(info.input_size == 9 && !info.per_step && info.output_size == 3);
    CHECK(info.n_recurrent == 2 && info.state_size == 2 * 8 + 4 && info.cell_size == 6);
    CHECK(!info.streamable && info.recurrent_param_offset == 9 * 5);
    CHECK(info.recurrent_param_count ==
          2 * (24 * (5 + 8) + 2 * 24) + (24 * (16 + 4) + 2 * 24 + 4 * 6));
    for (int i = 0; i < 6; i++) {
        rnx_layer got;
        CHECK_STATUS(rnx_model_layer(m, i, &got), RNX_OK);
        CHECK(memcmp(&got, &list[i], sizeof got) == 0);
    }
    rnx_layer got;
    CHECK_STATUS(rnx_model_layer(m, 6, &got), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_model_layer(m, -1, &got), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_model_layer(NULL, 0, &got), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_model_layer(m, 0, NULL), RNX_ERR_NULL_ARGUMENT);
    const rnx_model_info none = rnx_model_get_info(NULL);
    CHECK(none.n_layers == 0 && none.output_size == 0 && none.state_size == 0);
    rnx_model_free(m);

    /* streamable: forward layers and a sequence, last or final readout */
    rnx_layer forward_only[3] = {rnx_recurrent_layer(RNX_CELL_RNN_TANH, 2, 3,
                                                     RNX_DIRECTION_FORWARD),
                                 rnx_readout_layer(RNX_READOUT_FINAL),
                                 rnx_dense_layer(3, 2, RNX_ACT_LINEAR)};
    m = random_model(forward_only, 3, RNX_ISA_SCALAR, &seed, 0.5f, NULL);
    CHECK(rnx_model_get_info(m).streamable && !rnx_model_get_info(m).per_step);
    rnx_model_free(m);
    forward_only[1].readout = RNX_READOUT_MEAN;
    m = random_model(forward_only, 3, RNX_ISA_SCALAR, &seed, 0.5f, NULL);
    CHECK(!rnx_model_get_info(m).streamable);
    rnx_model_free(m);
}

/* A stream of model over B sequences, fed x (B, T, I) step by step, gives the forward pass's
 * outputs y (B, T, O) at each step. */
static void check_stream_steps(rnx_model *model, const float *x, const float *y, int B, int T,
                               int I, int O) {
    rnx_stream *s = NULL;
    float *step_x = malloc((size_t)B * I * sizeof *step_x);
    float *step_y = malloc((size_t)B * O * sizeof *step_y);
    CHECK_STATUS(rnx_stream_create(&s, model, B), RNX_OK);
    for (int t = 0; s && step_x && step_y && t < T; t++) {
        for (int b = 0; b < B; b++)
            memcpy(step_x + b * I, x + ((size_t)b * T + t) * I, (size_t)I * sizeof *x);
        CHECK_STATUS(rnx_stream_step(s, step_y, step_x, NULL), RNX_OK);
        for (int b = 0; b < B; b++)
            CHECK_CLOSE(step_y + b * O, y + ((size_t)b * T + t) * O, O, F32_RTOL, F32_ATOL);
    }
    rnx_stream_free(s);
    free(step_x);
    free(step_y);
}

/* rnx_model_create_precision at bf16, on every ISA: a weight or an input moved by less than half
 * a bfloat16 step changes the float32 result but not the bf16 one (each rounds back before its
 * product); the result is near float32's but not equal to it (the inputs are rounded); every
 * thread count and every ISA with FMA gives the same bits (rnnext.h: the sums of vdpbf16ps).
 * Packed kernels (GRU, RNN), the plain path (LSTM proj_size: weight_hr too), streams; training
 * refused. */
static void model_precision_bf16(void) {
    enum { B = 3, T = 7, I = 5, H = 19, N = B * T * 2 };
    rnx_layer list[4] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_GRU, 6, H, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_RNN_TANH, H, 9, RNX_DIRECTION_FORWARD),
                         rnx_dense_layer(9, 2, RNX_ACT_LINEAR)};
    list[0].proj_size = 6;
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(list, 4, &count), RNX_OK);
    uint64_t seed = 21;
    float *params = malloc(count * sizeof *params), *moved = malloc(count * sizeof *params);
    for (size_t i = 0; i < count; i++) params[i] = (float)(random_below(&seed, 256) - 128) / 256;
    /* weight_ih_l1[0][0] (after layer 0's weight_ih, weight_hh, biases, weight_hr): 0.25 and
     * 0.25 + 2^-12, which is below half of bfloat16's step there (2^-9); x[0][0][0] likewise
     * 0.5 and 0.5 + 2^-12 (half a step: 2^-8) */
    const size_t at = (size_t)4 * H * (I + 6 + 2) + (size_t)6 * H;
    params[at] = 0.25f;
    memcpy(moved, params, count * sizeof *params);
    moved[at] += 1.0f / 4096;
    float *x = random_floats(B * T * I, &seed, 1.0f), x_moved[B * T * I];
    x[0] = 0.5f;
    memcpy(x_moved, x, sizeof x_moved);
    x_moved[0] += 1.0f / 4096;
    float want[N], got[N], fp32_y[N], fp32_moved[N], fma_y[N];
    int fma_seen = 0;
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    for (int k = 0; k < n_isas; k++) {
        rnx_model *fp32 = NULL, *bf16 = NULL, *bf16_moved = NULL, *fp32_w = NULL;
        CHECK_STATUS(rnx_model_create(&fp32, list, 4, isas[k], params), RNX_OK);
        CHECK_STATUS(rnx_model_create(&fp32_w, list, 4, isas[k], moved), RNX_OK);
        CHECK_STATUS(rnx_model_create_precision(&bf16, list, 4, isas[k], RNX_PRECISION_BF16,
                                                params), RNX_OK);
        CHECK_STATUS(rnx_model_create_precision(&bf16_moved, list, 4, isas[k],
                                                RNX_PRECISION_BF16, moved), RNX_OK);
        if (!fp32 || !fp32_w || !bf16 || !bf16_moved) return;
        CHECK(rnx_model_get_info(fp32).precision == RNX_PRECISION_FP32);
        CHECK(rnx_model_get_info(bf16).precision == RNX_PRECISION_BF16);
        CHECK_STATUS(rnx_forward(fp32, fp32_y, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                 T, 1), RNX_OK);
        CHECK_STATUS(rnx_forward(bf16, want, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 2),
                     RNX_OK);
        CHECK(memcmp(want, fp32_y, sizeof want) != 0);
        CHECK_CLOSE(want, fp32_y, N, 0.0f, 5e-2f);
        CHECK_STATUS(rnx_forward(bf16, got, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 1),
                     RNX_OK);
        CHECK(memcmp(got, want, sizeof got) == 0);
        /* the moved weight and the moved input: float32 sees them, bf16 does not */
        CHECK_STATUS(rnx_forward(bf16_moved, got, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                 T, 1), RNX_OK);
        CHECK(memcmp(got, want, sizeof got) == 0);
        CHECK_STATUS(rnx_forward(bf16, got, NULL, NULL, x_moved, NULL, NULL, NULL, NULL, NULL, B,
                                 T, 1), RNX_OK);
        CHECK(memcmp(got, want, sizeof got) == 0);
        CHECK_STATUS(rnx_forward(fp32_w, fp32_moved, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL,
                                 B, T, 1), RNX_OK);
        CHECK(memcmp(fp32_moved, fp32_y, sizeof fp32_y) != 0);
        CHECK_STATUS(rnx_forward(fp32, fp32_moved, NULL, NULL, x_moved, NULL, NULL, NULL, NULL,
                                 NULL, B, T, 1), RNX_OK);
        CHECK(memcmp(fp32_moved, fp32_y, sizeof fp32_y) != 0);
        if (isas[k] >= RNX_ISA_AVX2) { /* the first ISA with FMA sets the bits of the others */
            if (!fma_seen) memcpy(fma_y, want, sizeof want);
            fma_seen = 1;
            CHECK(memcmp(want, fma_y, sizeof want) == 0);
        }
        check_stream_steps(bf16, x, want, B, T, I, 2);
        /* training runs in float32 only */
        rnx_tape *tape = NULL;
        CHECK_STATUS(rnx_tape_create(&tape, bf16, B, T), RNX_ERR_BAD_ARGUMENT);
        CHECK(tape == NULL);
        CHECK_STATUS(rnx_tape_create(&tape, fp32, B, T), RNX_OK);
        CHECK_STATUS(rnx_forward_train(bf16, tape, NULL, NULL, NULL, x, NULL, NULL, NULL, NULL, B,
                                       T, 1), RNX_ERR_BAD_ARGUMENT);
        rnx_tape_free(tape);
        rnx_model_free(fp32);
        rnx_model_free(fp32_w);
        rnx_model_free(bf16);
        rnx_model_free(bf16_moved);
    }
    rnx_model *m = NULL;
    CHECK_STATUS(rnx_model_create_precision(&m, list, 4, RNX_ISA_AUTO, RNX_PRECISION_INT8 + 1,
                                            params), RNX_ERR_BAD_CONFIG);
    CHECK_STATUS(rnx_model_create_precision(&m, list, 4, RNX_ISA_AUTO, -1, params),
                 RNX_ERR_BAD_CONFIG);
    CHECK(m == NULL);
    free(params);
    free(moved);
    free(x);
}

/* rnx_model_create_precision at int8, on every ISA. Weights that are multiples of 2^-7 with a
 * +-127/128 in every row, and inputs (v - 100)/64 for integers v in [0, 255] with a 0 and a 255
 * in every row, are exactly what int8 holds (the scales 2^-7 and 2^-6, zero point 100), so the
 * first layer's first step from zero states is the float32 model's up to the order of the sums
 * (the x of one step is a row of each sequence's x: (v - 100)/64 in memory order). Later steps
 * stay near it; every thread count gives the same bits; a stream's steps are the forward
 * pass's; a layer off the packed kernels (proj_size) and training are refused. */
static void model_precision_int8(void) {
    enum { B = 3, T = 6, I = 8, H = 21 };
    rnx_layer list[3] = {rnx_recurrent_layer(RNX_CELL_LSTM, I, H, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_GRU, H, 7, RNX_DIRECTION_FORWARD),
                         rnx_recurrent_layer(RNX_CELL_RNN_TANH, 7, 5, RNX_DIRECTION_FORWARD)};
    size_t count = 0;
    CHECK_STATUS(rnx_param_count(list, 3, &count), RNX_OK);
    uint64_t seed = 33;
    float *params = malloc(count * sizeof *params);
    for (size_t i = 0; i < count; i++) params[i] = (float)(random_below(&seed, 255) - 127) / 128;
    /* every weight row's first entry +-127/128 */
    size_t at = 0;
    for (int l = 0; l < 3; l++) {
        const int G = l == 0 ? 4 : l == 1 ? 3 : 1, K[2] = {list[l].input_size, list[l].units};
        for (int w = 0; w < 2; w++) {
            for (int r = 0; r < G * list[l].units; r++)
                params[at + (size_t)r * K[w]] = r % 2 ? 127.0f / 128 : -127.0f / 128;
            at += (size_t)G * list[l].units * K[w];
        }
        at += (size_t)2 * G * list[l].units;
    }
    CHECK(at == count);
    float x[B * T * I];
    for (int i = 0; i < B * T * I; i++) {
        const int v = i % I == 0 ? 0 : i % I == 1 ? 255 : random_below(&seed, 256);
        x[i] = (float)(v - 100) / 64;
    }
    float want[B * T * 5], got[B * T * 5], other[B * T * 5];
    rnx_isa isas[LAST_ISA];
    const int n_isas = supported_isas(isas);
    for (int k = 0; k < n_isas; k++) {
        rnx_model *fp32 = NULL, *int8 = NULL;
        CHECK_STATUS(rnx_model_create(&fp32, list, 3, isas[k], params), RNX_OK);
        CHECK_STATUS(rnx_model_create_precision(&int8, list, 3, isas[k], RNX_PRECISION_INT8,
                                                params), RNX_OK);
        if (!fp32 || !int8) return;
        CHECK(rnx_model_get_info(int8).precision == RNX_PRECISION_INT8);
        /* the first layer alone (its params come first): the layers above read its outputs,
         * which int8 does not hold exactly */
        rnx_model *first = NULL, *first8 = NULL;
        float first_want[B * H], first_got[B * H];
        CHECK_STATUS(rnx_model_create(&first, list, 1, isas[k], params), RNX_OK);
        CHECK_STATUS(rnx_model_create_precision(&first8, list, 1, isas[k], RNX_PRECISION_INT8,
                                                params), RNX_OK);
        CHECK_STATUS(rnx_forward(first, first_want, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL,
                                 B, 1, 1), RNX_OK);
        CHECK_STATUS(rnx_forward(first8, first_got, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL,
                                 B, 1, 1), RNX_OK);
        CHECK_CLOSE(first_got, first_want, B * H, F32_RTOL, F32_ATOL);
        rnx_model_free(first);
        rnx_model_free(first8);
        CHECK_STATUS(rnx_forward(fp32, want, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 1),
                     RNX_OK);
        CHECK_STATUS(rnx_forward(int8, got, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T, 1),
                     RNX_OK);
        CHECK_CLOSE(got, want, B * T * 5, 0.0f, 0.05f);
        CHECK_STATUS(rnx_forward(int8, other, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T,
                                 2), RNX_OK);
        CHECK(memcmp(got, other, sizeof got) == 0);
        check_stream_steps(int8, x, got, B, T, I, 5);
        rnx_tape *tape = NULL;
        CHECK_STATUS(rnx_tape_create(&tape, int8, B, T), RNX_ERR_BAD_ARGUMENT);
        rnx_model_free(fp32);
        rnx_model_free(int8);
    }
    rnx_model *m = NULL;
    list[0].proj_size = 6;
    list[1].input_size = 6;
    CHECK_STATUS(rnx_param_count(list, 3, &count), RNX_OK);
    float *more = realloc(params, count * sizeof *params);
    if (more) {
        CHECK_STATUS(rnx_model_create_precision(&m, list, 3, RNX_ISA_AUTO, RNX_PRECISION_INT8,
                                                more), RNX_ERR_BAD_CONFIG);
        CHECK(m == NULL);
        params = more;
    }
    free(params);
}

const test_case api_tests[] = {
    TEST(version_and_names),           TEST(isa_selection),
    TEST(activation_accuracy),         TEST(layer_lists_and_param_counts),
    TEST(model_creation_errors),       TEST(model_info_and_layers),
    TEST(model_precision_bf16),        TEST(model_precision_int8),
};
const size_t api_test_count = sizeof api_tests / sizeof api_tests[0];
