/* test_files.c: the safetensors parser (tensor table, metadata, dtypes), the model loader
 * against rnx_model_create, files that break each rule, and the committed corpus (files saved
 * by Python, tests/c/make_corpus.py). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner.h"

const char *corpus_dir; /* set by main.c from --corpus; the corpus test needs it */

/* A file of the JSON header `json` (padded to 8 bytes as safetensors writes) and `data_len`
 * bytes of data, each byte its offset; the caller frees it. */
static unsigned char *raw_file(const char *json, size_t data_len, size_t *size) {
    const size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    *size = 8 + padded + data_len;
    unsigned char *out = malloc(*size);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, json, len);
    memset(out + 8 + len, ' ', padded - len);
    for (size_t i = 0; i < data_len; i++) out[8 + padded + i] = (unsigned char)i;
    return out;
}

/* rnx_file_parse on a private copy of exactly `size` bytes (so that ASan sees any over-read):
 * the status; a failure must leave *out NULL and a message. */
static rnx_status parse_copy(const unsigned char *data, size_t size) {
    unsigned char *copy = malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    static int somewhere;
    rnx_file *f = (rnx_file *)&somewhere;
    char message[256] = "";
    const rnx_status s = rnx_file_parse(&f, copy, size, message, sizeof message);
    if (s != RNX_OK) CHECK(f == NULL && message[0] != '\0');
    rnx_file_free(s == RNX_OK ? f : NULL);
    free(copy);
    return s;
}

/* rnx_model_load on a private copy: the status; a failure leaves *out NULL and a message. */
static rnx_status load_copy(const unsigned char *data, size_t size, char *message,
                            size_t message_size) {
    unsigned char *copy = malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    static int somewhere;
    rnx_model *m = (rnx_model *)&somewhere;
    message[0] = '\0';
    const rnx_status s = rnx_model_load(&m, copy, size, RNX_ISA_AUTO, message, message_size);
    free(copy);
    if (s != RNX_OK) CHECK(m == NULL && message[0] != '\0');
    rnx_model_free(s == RNX_OK ? m : NULL);
    return s;
}

/* The status of rnx_file_parse, then rnx_file_model_layers: what a file's checks find without
 * building the model. */
static rnx_status layers_status(const unsigned char *data, size_t size) {
    rnx_file *f = NULL;
    static rnx_layer layers[RNX_MAX_LAYERS];
    int n = 0;
    rnx_status s = rnx_file_parse(&f, data, size, NULL, 0);
    if (s == RNX_OK) s = rnx_file_model_layers(f, layers, RNX_MAX_LAYERS, &n, NULL, 0);
    rnx_file_free(f);
    return s;
}

/* The tensor table in file order, lookups by name, metadata in key order, and every dtype
 * read as float32: F16 and BF16 bit patterns from their IEEE/bfloat16 definitions, F64
 * rounded. */
static void file_table_and_dtypes(void) {
    const uint16_t f16[] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000};
    const float f16_values[] = {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f, -0.0f};
    const uint16_t bf16[] = {0x3FC0, 0xC2F7, 0x0000};
    const float bf16_values[] = {1.5f, -123.5f, 0.0f};
    const double f64[] = {0.1, 3.25, -1e-3, 1e30};
    const float f64_values[] = {0.1f, 3.25f, -1e-3f, 1e30f};
    const float f32[] = {1.0f, -0.25f, 7.5f, 1e-20f};
    file_builder *fb = builder_new();
    const uint64_t s6[] = {2, 3}, s3[] = {3}, s4[] = {4}, s22[] = {2, 2};
    builder_tensor(fb, "half", "F16", 2, s6, f16, sizeof f16);
    builder_tensor(fb, "brain", "BF16", 1, s3, bf16, sizeof bf16);
    builder_tensor(fb, "double", "F64", 1, s4, f64, sizeof f64);
    builder_f32(fb, "alpha", 2, s22, f32);
    builder_tensor(fb, "scalar", "F32", 0, NULL, f32, sizeof(float));
    builder_meta(fb, "zeta", "last");
    builder_meta(fb, "beta", "b");
    unsigned char *data;
    size_t size;
    data = builder_finish(fb, &size);
    rnx_file *f = NULL;
    char message[256];
    CHECK_STATUS(rnx_file_parse(&f, data, size, message, sizeof message), RNX_OK);
    if (!f) {
        free(data);
        return;
    }
    const char *order[] = {"half", "brain", "double", "alpha", "scalar"};
    CHECK(rnx_file_tensor_count(f) == 5);
    for (size_t i = 0; i < 5; i++) {
        const rnx_tensor_info *t = rnx_file_tensor(f, i);
        CHECK(t != NULL && strcmp(t->name, order[i]) == 0 && rnx_file_find(f, order[i]) == t);
        if (t && i) CHECK(t->offset == rnx_file_tensor(f, i - 1)->offset +
                                           rnx_file_tensor(f, i - 1)->nbytes);
    }
    CHECK(rnx_file_tensor(f, 5) == NULL && rnx_file_find(f, "nothing") == NULL);
    const rnx_tensor_info *half = rnx_file_find(f, "half"), *sc = rnx_file_find(f, "scalar");
    CHECK(half->dtype == RNX_DTYPE_F16 && half->ndim == 2 && half->shape[0] == 2 &&
          half->shape[1] == 3 && half->nbytes == 12 && sc->ndim == 0 && sc->nbytes == 4);
    CHECK(rnx_file_find(f, "brain")->dtype == RNX_DTYPE_BF16);
    CHECK(rnx_file_find(f, "double")->dtype == RNX_DTYPE_F64);
    float out[6];
    CHECK_STATUS(rnx_file_read_f32(f, half, out, 6), RNX_OK);
    CHECK(!memcmp(out, f16_values, sizeof f16_values)); /* -0.0 too: bitwise */
    CHECK_STATUS(rnx_file_read_f32(f, rnx_file_find(f, "brain"), out, 3), RNX_OK);
    CHECK(!memcmp(out, bf16_values, sizeof bf16_values));
    CHECK_STATUS(rnx_file_read_f32(f, rnx_file_find(f, "double"), out, 4), RNX_OK);
    CHECK(!memcmp(out, f64_values, sizeof f64_values));
    CHECK_STATUS(rnx_file_read_f32(f, rnx_file_find(f, "alpha"), out, 4), RNX_OK);
    CHECK(!memcmp(out, f32, sizeof f32));
    CHECK_STATUS(rnx_file_read_f32(f, half, out, 5), RNX_ERR_BAD_ARGUMENT);
    CHECK_STATUS(rnx_file_read_f32(f, half, NULL, 6), RNX_ERR_NULL_ARGUMENT);
    CHECK_STATUS(rnx_file_read_f32(NULL, half, out, 6), RNX_ERR_NULL_ARGUMENT);

    const char *key, *value;
    CHECK(rnx_file_metadata_count(f) == 2);
    CHECK_STATUS(rnx_file_metadata(f, 0, &key, &value), RNX_OK);
    CHECK(!strcmp(key, "beta") && !strcmp(value, "b"));
    CHECK_STATUS(rnx_file_metadata(f, 1, &key, &value), RNX_OK);
    CHECK(!strcmp(key, "zeta") && !strcmp(value, "last"));
    CHECK_STATUS(rnx_file_metadata(f, 2, &key, &value), RNX_ERR_BAD_ARGUMENT);
    CHECK(!strcmp(rnx_file_metadata_get(f, "zeta"), "last"));
    CHECK(rnx_file_metadata_get(f, "alpha") == NULL);
    /* not a model file */
    rnx_layer layers[4];
    int n = -1;
    CHECK_STATUS(rnx_file_model_layers(f, layers, 4, &n, message, sizeof message),
                 RNX_ERR_FILE_MODEL);
    CHECK(message[0] != '\0');
    rnx_file_free(f);
    rnx_file_free(NULL);
    CHECK(rnx_file_tensor_count(NULL) == 0 && rnx_file_metadata_count(NULL) == 0);
    CHECK_STATUS(rnx_file_parse(NULL, data, size, NULL, 0), RNX_ERR_NULL_ARGUMENT);
    f = NULL;
    CHECK_STATUS(rnx_file_parse(&f, NULL, size, NULL, 0), RNX_ERR_NULL_ARGUMENT);
    free(data);
}

/* A version-1 file written here loads into the model that rnx_model_create builds from the same
 * parameters: the same layers and the same outputs, bit for bit, for each cell. */
static void file_load_matches_create(void) {
    enum { B = 2, T = 4, I = 3, H = 5 };
    const char *cells[] = {"rnn", "lstm", "gru"};
    const rnx_cell codes[] = {RNX_CELL_RNN_TANH, RNX_CELL_LSTM, RNX_CELL_GRU};
    uint64_t seed = 9;
    float *x = random_floats(B * T * I, &seed, 1.0f);
    for (int c = 0; c < 3; c++) {
        const rnx_layer layer = rnx_recurrent_layer(codes[c], I, H, RNX_DIRECTION_FORWARD);
        float *params = NULL;
        rnx_model *created = random_model(&layer, 1, RNX_ISA_AUTO, &seed, 0.5f, &params);
        size_t size;
        unsigned char *data = version1_file(cells[c], I, H, params, NULL, NULL, NULL, &size);
        rnx_model *loaded = NULL;
        char message[256];
        CHECK_STATUS(rnx_model_load(&loaded, data, size, RNX_ISA_AUTO, message, sizeof message),
                     RNX_OK);
        rnx_file *f = NULL;
        rnx_layer layers[RNX_MAX_LAYERS];
        int n = 0, short_n = -1;
        CHECK_STATUS(rnx_file_parse(&f, data, size, message, sizeof message), RNX_OK);
        CHECK_STATUS(rnx_file_model_layers(f, layers, RNX_MAX_LAYERS, &n, message,
                                           sizeof message),
                     RNX_OK);
        CHECK(n == 1 && !memcmp(&layers[0], &layer, sizeof layer));
        CHECK_STATUS(rnx_file_model_layers(f, layers, 0, &short_n, message, sizeof message),
                     RNX_ERR_BAD_ARGUMENT);
        CHECK(short_n == -1);
        CHECK_STATUS(rnx_file_model_layers(NULL, layers, 1, &n, NULL, 0), RNX_ERR_NULL_ARGUMENT);
        CHECK_STATUS(rnx_file_model_layers(f, NULL, 1, &n, NULL, 0), RNX_ERR_NULL_ARGUMENT);
        CHECK_STATUS(rnx_file_model_layers(f, layers, 1, NULL, NULL, 0), RNX_ERR_NULL_ARGUMENT);
        rnx_file_free(f);
        free(data); /* the model does not need the bytes */
        if (created && loaded) {
            float y1[B * T * H], y2[B * T * H], h1[B * H], h2[B * H];
            CHECK_STATUS(rnx_forward(created, y1, h1, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                     T, 1),
                         RNX_OK);
            CHECK_STATUS(rnx_forward(loaded, y2, h2, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                     T, 1),
                         RNX_OK);
            CHECK(!memcmp(y1, y2, sizeof y1) && !memcmp(h1, h2, sizeof h1));
        }
        rnx_model_free(created), rnx_model_free(loaded);
        free(params);
    }
    CHECK_STATUS(rnx_model_load(NULL, x, 8, RNX_ISA_AUTO, NULL, 0), RNX_ERR_NULL_ARGUMENT);
    free(x);
}

/* A builder of a version-2 GRU file (I 3, H 5) with its metadata, and precision `precision`
 * (NULL: no key); no tensors yet. */
static file_builder *gru_builder(const char *precision) {
    static const char *const keys[][2] = {
        {"format", "rnnext"}, {"format_version", "2"}, {"layers", "1"}, {"input_size", "3"},
        {"layer0.type", "gru"}, {"layer0.units", "5"}, {"layer0.direction", "forward"},
        {"layer0.merge", "concat"}, {"layer0.activations", "sigmoid,tanh"},
        {"layer0.activation_alpha", "0.0,0.0"}, {"layer0.activation_beta", "0.0,0.0"},
        {"layer0.clip", "none"}, {"layer0.reset_after", "1"}, {"layer0.input_size", "3"}};
    file_builder *fb = builder_new();
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        builder_meta(fb, keys[k][0], keys[k][1]);
    if (precision) builder_meta(fb, "precision", precision);
    return fb;
}

/* gru_builder's file whose weights are BF16 tensors holding `bits`. */
static unsigned char *gru_file_bf16(const uint16_t *bits, const float *biases,
                                    const char *precision, size_t *size) {
    file_builder *fb = gru_builder(precision);
    const uint64_t ih[2] = {15, 3}, hh[2] = {15, 5}, b[1] = {15};
    builder_tensor(fb, "weight_ih_l0", "BF16", 2, ih, bits, 45 * 2);
    builder_tensor(fb, "weight_hh_l0", "BF16", 2, hh, bits + 45, 75 * 2);
    builder_f32(fb, "bias_ih_l0", 1, b, biases);
    builder_f32(fb, "bias_hh_l0", 1, b, biases + 15);
    return builder_finish(fb, size);
}

/* The metadata key precision: "bf16" and "int8" load a model of that precision, which runs as
 * rnx_model_create_precision builds it from the same weights, bit for bit; no key loads at fp32;
 * another value is refused, naming the key and the choices. */
static void file_precision(void) {
    enum { B = 2, T = 4, I = 3, H = 5, W = 45 + 75 };
    uint64_t seed = 17;
    float params[W + 30], y1[B * T * H], y2[B * T * H];
    uint16_t bits[W];
    fill_uniform(params, W + 30, &seed, 0.5f);
    for (int i = 0; i < W; i++) { /* bfloat16 of the float's top half, the weight set to it */
        uint32_t u;
        memcpy(&u, &params[i], 4);
        bits[i] = (uint16_t)(u >> 16);
        u &= 0xffff0000u;
        memcpy(&params[i], &u, 4);
    }
    float *x = random_floats(B * T * I, &seed, 1.0f);
    const rnx_layer gru = rnx_recurrent_layer(RNX_CELL_GRU, I, H, RNX_DIRECTION_FORWARD);
    const char *precisions[] = {"bf16", "int8", NULL};
    const int codes[] = {RNX_PRECISION_BF16, RNX_PRECISION_INT8, RNX_PRECISION_FP32};
    for (int p = 0; p < 3; p++) {
        size_t size;
        unsigned char *data = gru_file_bf16(bits, params + W, precisions[p], &size);
        rnx_model *loaded = NULL, *created = NULL;
        char message[256];
        CHECK_STATUS(rnx_model_load(&loaded, data, size, RNX_ISA_AUTO, message, sizeof message),
                     RNX_OK);
        const int want = codes[p];
        CHECK_STATUS(rnx_model_create_precision(&created, &gru, 1, RNX_ISA_AUTO, want, params),
                     RNX_OK);
        if (loaded && created) {
            CHECK(rnx_model_get_info(loaded).precision == want);
            CHECK_STATUS(rnx_forward(created, y1, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                     T, 1), RNX_OK);
            CHECK_STATUS(rnx_forward(loaded, y2, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B,
                                     T, 1), RNX_OK);
            CHECK(!memcmp(y1, y2, sizeof y1));
        }
        rnx_model_free(loaded), rnx_model_free(created);
        free(data);
    }
    size_t size;
    unsigned char *data = gru_file_bf16(bits, params + W, "int4", &size);
    rnx_model *m = NULL;
    char message[256];
    CHECK_STATUS(rnx_model_load(&m, data, size, RNX_ISA_AUTO, message, sizeof message),
                 RNX_ERR_FILE_MODEL);
    CHECK(m == NULL && !strcmp(message, "metadata: 'precision' is 'int4', expected 'fp32', "
                                        "'bf16' or 'int8'"));
    free(data);
    free(x);
}

/* What int8_gru_file breaks: nothing, or one rule of the I8 tensors and their scales. */
enum int8_fault {
    INT8_VALID,
    INT8_NO_SCALE,      /* weight_ih_l0 without weight_ih_l0.scale */
    INT8_SCALE_LENGTH,  /* its scale of shape (14) */
    INT8_SCALE_2D,      /* of shape (15, 1) */
    INT8_SCALE_F16,     /* of dtype F16 */
    INT8_SCALE_VALUE,   /* with entry 4 set to `bad` */
    INT8_BIAS,          /* bias_ih_l0 stored as I8 with a scale */
    INT8_SCALE_OF_F32,  /* weight_ih_l0 stored as F32 (dequantized) with a scale */
};

/* gru_builder's file whose weights weight_ih_l0 (15, 3) and weight_hh_l0 (15, 5) are I8 tensors
 * holding q (45 then 75 values), each with its scale tensor right after it (scales: 15 then
 * 15), and `params` the float32 parameters (the dequantized weights, then the biases); `fault`
 * breaks one rule. */
static unsigned char *int8_gru_file(const int8_t *q, const float *scales, const float *params,
                                    const char *precision, enum int8_fault fault, float bad,
                                    size_t *size) {
    file_builder *fb = gru_builder(precision);
    const uint64_t ih[2] = {15, 3}, hh[2] = {15, 5}, rows[2] = {15, 1}, shorter[1] = {14};
    float bent[15];
    memcpy(bent, scales, sizeof bent);
    bent[4] = bad;
    if (fault == INT8_SCALE_OF_F32) builder_f32(fb, "weight_ih_l0", 2, ih, params);
    else builder_tensor(fb, "weight_ih_l0", "I8", 2, ih, q, 45);
    if (fault == INT8_SCALE_LENGTH) builder_f32(fb, "weight_ih_l0.scale", 1, shorter, scales);
    if (fault == INT8_SCALE_2D) builder_f32(fb, "weight_ih_l0.scale", 2, rows, scales);
    if (fault == INT8_SCALE_F16)
        builder_tensor(fb, "weight_ih_l0.scale", "F16", 1, rows, scales, 30);
    if (fault == INT8_SCALE_VALUE) builder_f32(fb, "weight_ih_l0.scale", 1, rows, bent);
    if (fault == INT8_VALID || fault == INT8_BIAS || fault == INT8_SCALE_OF_F32)
        builder_f32(fb, "weight_ih_l0.scale", 1, rows, scales);
    builder_tensor(fb, "weight_hh_l0", "I8", 2, hh, q + 45, 75);
    builder_f32(fb, "weight_hh_l0.scale", 1, rows, scales + 15);
    if (fault == INT8_BIAS) {
        builder_tensor(fb, "bias_ih_l0", "I8", 1, rows, q, 15);
        builder_f32(fb, "bias_ih_l0.scale", 1, rows, scales);
    } else {
        builder_f32(fb, "bias_ih_l0", 1, rows, params + 120);
    }
    builder_f32(fb, "bias_hh_l0", 1, rows, params + 135);
    return builder_finish(fb, size);
}

/* A file at precision int8 with I8 weights and their scales: the weights read as q * scale row
 * by row, and the model loads and runs as rnx_model_create_precision builds it at int8 from
 * those floats, bit for bit. Each broken rule is refused by rnx_model_load and by
 * rnx_file_model_layers alike, with the status of rnnext.h's "Files" and a message that names
 * the tensor; reading an I8 tensor without its scales is refused too. */
static void file_int8(void) {
    enum { B = 2, T = 4, I = 3, H = 5, W = 45 + 75 };
    uint64_t seed = 23;
    int8_t q[W];
    float scales[30], params[W + 30], y1[B * T * H], y2[B * T * H];
    fill_uniform(params + W, 30, &seed, 0.5f);
    for (int r = 0; r < 30; r++) {
        scales[r] = (1.0f + (float)random_below(&seed, 100)) / 4096.0f;
        const int columns = r < 15 ? I : H, first = r < 15 ? r * I : 45 + (r - 15) * H;
        for (int j = 0; j < columns; j++) {
            /* each row reaches +-127, as a quantized row does */
            q[first + j] = (int8_t)(j == r % columns ? (r % 2 ? 127 : -127)
                                                     : random_below(&seed, 255) - 127);
            params[first + j] = (float)q[first + j] * scales[r];
        }
    }
    float *x = random_floats(B * T * I, &seed, 1.0f);
    const rnx_layer gru = rnx_recurrent_layer(RNX_CELL_GRU, I, H, RNX_DIRECTION_FORWARD);
    size_t size;
    unsigned char *data = int8_gru_file(q, scales, params, "int8", INT8_VALID, 0, &size);
    rnx_model *loaded = NULL, *created = NULL;
    rnx_file *f = NULL;
    char message[256];
    float read[75];
    CHECK_STATUS(rnx_file_parse(&f, data, size, message, sizeof message), RNX_OK);
    if (f) {
        const rnx_tensor_info *hh = rnx_file_find(f, "weight_hh_l0");
        CHECK(hh != NULL && hh->dtype == RNX_DTYPE_I8 && hh->nbytes == 75 &&
              !strcmp(rnx_dtype_name(hh->dtype), "I8"));
        CHECK_STATUS(rnx_file_read_f32(f, hh, read, 75), RNX_OK);
        CHECK(!memcmp(read, params + 45, sizeof read));
        CHECK_STATUS(rnx_file_read_f32(f, rnx_file_find(f, "weight_hh_l0.scale"), read, 15),
                     RNX_OK);
        CHECK(!memcmp(read, scales + 15, 15 * sizeof(float)));
        CHECK_STATUS(rnx_file_read_f32(f, hh, read, 74), RNX_ERR_BAD_ARGUMENT);
    }
    rnx_file_free(f);
    CHECK_STATUS(rnx_model_load(&loaded, data, size, RNX_ISA_AUTO, message, sizeof message),
                 RNX_OK);
    CHECK_STATUS(rnx_model_create_precision(&created, &gru, 1, RNX_ISA_AUTO, RNX_PRECISION_INT8,
                                            params),
                 RNX_OK);
    if (loaded && created) {
        CHECK(rnx_model_get_info(loaded).precision == RNX_PRECISION_INT8);
        CHECK_STATUS(rnx_forward(created, y1, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T,
                                 1), RNX_OK);
        CHECK_STATUS(rnx_forward(loaded, y2, NULL, NULL, x, NULL, NULL, NULL, NULL, NULL, B, T,
                                 1), RNX_OK);
        CHECK(!memcmp(y1, y2, sizeof y1));
    }
    rnx_model_free(loaded), rnx_model_free(created);
    free(data);

    static const struct {
        const char *precision;
        enum int8_fault fault;
        float bad;
        rnx_status status;
        const char *named; /* what the message must name */
    } faults[] = {
        {"int8", INT8_NO_SCALE, 0, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale', which is missing"},
        {"int8", INT8_SCALE_LENGTH, 0, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': expected shape"},
        {"int8", INT8_SCALE_2D, 0, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': expected shape"},
        {"int8", INT8_SCALE_F16, 0, RNX_ERR_FILE_DTYPE, "'weight_ih_l0.scale': dtype F16"},
        {"int8", INT8_SCALE_VALUE, 0.0f, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': entry 4"},
        {"int8", INT8_SCALE_VALUE, -0.5f, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': entry 4"},
        {"int8", INT8_SCALE_VALUE, NAN, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': entry 4"},
        {"int8", INT8_SCALE_VALUE, INFINITY, RNX_ERR_FILE_MODEL, "'weight_ih_l0.scale': entry 4"},
        {"int8", INT8_BIAS, 0, RNX_ERR_FILE_DTYPE, "'bias_ih_l0': dtype I8"},
        {"int8", INT8_SCALE_OF_F32, 0, RNX_ERR_FILE_MODEL,
         "unexpected tensor 'weight_ih_l0.scale'"},
        {"fp32", INT8_VALID, 0, RNX_ERR_FILE_DTYPE, "precision 'int8', got 'fp32'"},
        {"bf16", INT8_VALID, 0, RNX_ERR_FILE_DTYPE, "precision 'int8', got 'bf16'"},
        {NULL, INT8_VALID, 0, RNX_ERR_FILE_DTYPE, "precision 'int8', got none"},
    };
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        data = int8_gru_file(q, scales, params, faults[i].precision, faults[i].fault,
                             faults[i].bad, &size);
        CHECK_STATUS(load_copy(data, size, message, sizeof message), faults[i].status);
        CHECK_STATUS(layers_status(data, size), faults[i].status);
        if (!strstr(message, faults[i].named)) {
            printf("  int8 file %zu: message \"%s\" does not name %s\n", i, message,
                   faults[i].named);
            CHECK(strstr(message, faults[i].named) != NULL);
        }
        free(data);
    }
    /* a valid safetensors file whose I8 tensor has no scales: its table, but not its values */
    data = int8_gru_file(q, scales, params, "int8", INT8_NO_SCALE, 0, &size);
    f = NULL;
    CHECK_STATUS(rnx_file_parse(&f, data, size, message, sizeof message), RNX_OK);
    if (f) CHECK_STATUS(rnx_file_read_f32(f, rnx_file_find(f, "weight_ih_l0"), read, 45),
                        RNX_ERR_FILE_MODEL);
    rnx_file_free(f);
    free(data);
    free(x);
}

/* Files that break one rule each: the status the header gives, a message, no table or model. */
static void file_errors(void) {
    static const struct {
        const char *json;
        size_t data;
        rnx_status status;
    } headers[] = {
        {"{\"a\":", 0, RNX_ERR_FILE_HEADER},
        {"[1,2]", 0, RNX_ERR_FILE_HEADER},
        {"{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, RNX_ERR_FILE_DTYPE},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, RNX_ERR_FILE_OFFSETS},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         20, RNX_ERR_FILE_OFFSETS},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         RNX_ERR_FILE_OFFSETS},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
         RNX_ERR_FILE_LENGTH}, /* past the end: the file is shorter than its header says */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, RNX_ERR_FILE_HEADER},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         RNX_ERR_FILE_HEADER},
        {"{\"__metadata__\":{\"k\":1}}", 0, RNX_ERR_FILE_HEADER},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615,2],"
         "\"data_offsets\":[0,8]}}", 8, RNX_ERR_OVERFLOW},
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        size_t size;
        unsigned char *data = raw_file(headers[i].json, headers[i].data, &size);
        const rnx_status s = parse_copy(data, size);
        if (s != headers[i].status) printf("  header %zu: %s\n", i, headers[i].json);
        CHECK_STATUS(s, headers[i].status);
        free(data);
    }

    /* lengths: too short for the length field, a header past the end, a byte short, one more */
    const float params[4 * 5 * (3 + 5 + 2)] = {0};
    size_t size;
    unsigned char *data = version1_file("lstm", 3, 5, params, NULL, NULL, NULL, &size);
    char message[256];
    CHECK_STATUS(parse_copy(data, 7), RNX_ERR_FILE_LENGTH);
    CHECK_STATUS(parse_copy(data, 0), RNX_ERR_FILE_LENGTH);
    CHECK_STATUS(parse_copy(data, size - 1), RNX_ERR_FILE_LENGTH);
    unsigned char *longer = malloc(size + 1);
    memcpy(longer, data, size);
    longer[size] = 0;
    CHECK_STATUS(parse_copy(longer, size + 1), RNX_ERR_FILE_LENGTH);
    memcpy(longer, data, size);
    for (int i = 0; i < 8; i++) longer[i] = (unsigned char)((uint64_t)size >> (8 * i));
    CHECK_STATUS(parse_copy(longer, size), RNX_ERR_FILE_LENGTH); /* a header past the end */
    for (int i = 0; i < 8; i++) longer[i] = (unsigned char)(i == 7 ? 0x7f : 0);
    CHECK_STATUS(parse_copy(longer, size), RNX_ERR_FILE_HEADER); /* past RNX_FILE_MAX_HEADER */
    free(longer);
    CHECK_STATUS(load_copy(data, size, message, sizeof message), RNX_OK);
    free(data);

    /* the model in the metadata and tensors: one fault each */
    static const struct {
        const char *key, *value, *skip;
        rnx_status status;
        const char *named; /* what the message must name */
    } models[] = {
        {"format_version", "3", NULL, RNX_ERR_FILE_VERSION, "format_version"},
        {"format", "other", NULL, RNX_ERR_FILE_MODEL, "format"},
        {"hidden_size", "05", NULL, RNX_ERR_FILE_MODEL, "hidden_size"},
        {"hidden_size", "4", NULL, RNX_ERR_FILE_MODEL, "weight_ih_l0"},
        {"num_layers", "0", NULL, RNX_ERR_FILE_MODEL, "num_layers"},
        {"cell", "transformer", NULL, RNX_ERR_FILE_MODEL, "cell"},
        {"input_size", NULL, NULL, RNX_ERR_FILE_MODEL, "input_size"},
        {"nonlinearity", "relu", NULL, RNX_ERR_FILE_MODEL, "nonlinearity"}, /* rnn only */
        {NULL, NULL, "bias_hh_l0", RNX_ERR_FILE_MODEL, "bias_hh_l0"},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        data = version1_file("lstm", 3, 5, params, models[i].key, models[i].value,
                             models[i].skip, &size);
        CHECK_STATUS(load_copy(data, size, message, sizeof message), models[i].status);
        if (!strstr(message, models[i].named)) {
            printf("  model file %zu: message \"%s\" does not name %s\n", i, message,
                   models[i].named);
            CHECK(strstr(message, models[i].named) != NULL);
        }
        free(data);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The corpus
 * ------------------------------------------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *data = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n == cap) data = realloc(data, cap = cap ? 2 * cap : 4096);
        got = fread(data + n, 1, cap - n, f);
        n += got;
    } while (got);
    fclose(f);
    *size = n;
    return data;
}

/* Each valid_* file of the corpus loads and runs (finite outputs, a stream equal to forward
 * where it can stream); each broken_* file is refused with a message, and with the same status
 * by the file's own checks (rnx_file_model_layers accepts no list that the core refuses); an
 * input the fuzzer found (found_*) is either. */
static void corpus_files(void) {
    CHECK(corpus_dir != NULL); /* main.c runs this test only with --corpus */
    DIR *dir = corpus_dir ? opendir(corpus_dir) : NULL;
    CHECK(dir != NULL);
    if (!dir) return;
    int valid = 0, broken = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        const int is_valid = !strncmp(e->d_name, "valid_", 6);
        const int is_found = !strncmp(e->d_name, "found_", 6);
        if (!is_valid && !is_found && strncmp(e->d_name, "broken_", 7)) continue;
        char path[4096], message[256];
        snprintf(path, sizeof path, "%s/%s", corpus_dir, e->d_name);
        size_t size = 0;
        unsigned char *data = read_file(path, &size);
        CHECK(data != NULL);
        rnx_model *m = NULL;
        const rnx_status s = data ? rnx_model_load(&m, data, size, RNX_ISA_AUTO, message,
                                                   sizeof message)
                                  : RNX_ERR_NULL_ARGUMENT;
        if (data && !is_valid && !is_found) CHECK_STATUS(layers_status(data, size), s);
        free(data);
        if (s != RNX_OK) CHECK(message[0] != '\0');
        if (!is_found && (s == RNX_OK) != is_valid) {
            printf("  %s: %s\n", e->d_name, s == RNX_OK ? "loaded" : message);
            CHECK((s == RNX_OK) == is_valid);
        }
        valid += is_valid, broken += !is_valid && !is_found;
        if (!m) continue;
        const rnx_model_info info = rnx_model_get_info(m);
        enum { B = 2, T = 3 };
        const size_t nx = (size_t)B * T * (info.takes_ids ? 1 : (size_t)info.input_size);
        const size_t ny = (size_t)B * (info.per_step ? T : 1) * info.output_size;
        uint64_t seed = 1;
        float *x = random_floats(nx, &seed, 1.0f), *y = zero_floats(ny);
        int32_t ids[B * T];
        for (int i = 0; i < B * T; i++) ids[i] = (i + 1) % info.input_size;
        CHECK_STATUS(rnx_forward(m, y, NULL, NULL, info.takes_ids ? NULL : x,
                                 info.takes_ids ? ids : NULL, NULL, NULL, NULL, NULL, B, T, 1),
                     RNX_OK);
        int finite = 1;
        for (size_t i = 0; i < ny; i++) finite &= y[i] == y[i] && y[i] - y[i] == 0.0f;
        CHECK(finite);
        rnx_stream *s_ = NULL;
        if (info.streamable && info.per_step && rnx_stream_create(&s_, m, B) == RNX_OK) {
            float step[64], column[64];
            int32_t id_column[B];
            for (int t = 0; t < T && info.output_size * B <= 64 && info.input_size * B <= 64;
                 t++) {
                for (int b = 0; b < B; b++) {
                    id_column[b] = ids[b * T + t];
                    if (!info.takes_ids)
                        memcpy(column + b * info.input_size,
                               x + ((size_t)b * T + t) * info.input_size,
                               (size_t)info.input_size * sizeof(float));
                }
                CHECK_STATUS(rnx_stream_step(s_, step, info.takes_ids ? NULL : column,
                                             info.takes_ids ? id_column : NULL),
                             RNX_OK);
                for (int b = 0; b < B; b++)
                    CHECK_CLOSE(step + b * info.output_size,
                                y + ((size_t)b * T + t) * info.output_size,
                                (size_t)info.output_size, 1e-6, 1e-7);
            }
        }
        rnx_stream_free(s_);
        rnx_model_free(m);
        free(x), free(y);
    }
    closedir(dir);
    CHECK(valid >= 5 && broken >= 3);
}

const test_case file_tests[] = {
    TEST(file_table_and_dtypes),
    TEST(file_load_matches_create),
    TEST(file_errors),
    TEST(file_precision),
    TEST(file_int8),
};
const size_t file_test_count = sizeof file_tests / sizeof file_tests[0];
const test_case corpus_test = TEST(corpus_files);
