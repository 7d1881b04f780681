/* fuzz_loader.c: a libFuzzer target over the file parser and the model loader, built with
 * ASan and UBSan by .ci/c_tests:
 *
 *   clang -fsanitize=fuzzer,address,undefined ... tests/c/fuzz_loader.c (the csrc sources)
 *   fuzz_loader -max_total_time=60 tests/c/corpus
 *
 * Every input goes through rnx_file_parse (the tensor table, lookups, metadata, every tensor
 * read as float32, rnx_file_model_layers) and rnx_model_load (info, a short forward pass, a
 * stream step where the model streams). Besides what the sanitizers catch, a broken promise of
 * rnnext.h aborts: a failure without a message or with an object, a success without one, a
 * lookup that finds another tensor, a layer list that rnx_param_count refuses.
 *
 * Built with -DFUZZ_REPLAY (any C compiler, no libFuzzer) it is a program that runs the same
 * checks on each file named on its command line, to replay a corpus or a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rnnext.h"

#define REQUIRE(cond)                                                                         \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* Larger tensors and models are skipped: the fuzzer looks for faults, not for big inputs. */
enum { MAX_FLOATS = 1 << 20 };

/* A call that takes `message`: a failure comes with one and without an object. */
static void require_outcome(rnx_status s, const void *object, const char *message) {
    REQUIRE((s == RNX_OK) == (object != NULL));
    if (s != RNX_OK) REQUIRE(message[0] != '\0' && rnx_status_string(s)[0] != '\0');
}

static void walk_file(const rnx_file *f) {
    const size_t n = rnx_file_tensor_count(f);
    for (size_t i = 0; i < n; i++) {
        const rnx_tensor_info *t = rnx_file_tensor(f, i);
        REQUIRE(t != NULL && rnx_file_find(f, t->name) == t);
        REQUIRE(t->ndim >= 0 && t->ndim <= RNX_FILE_MAX_DIMS);
        const size_t width = t->dtype == RNX_DTYPE_F64   ? 8
                             : t->dtype == RNX_DTYPE_F32 ? 4
                             : t->dtype == RNX_DTYPE_I8  ? 1
                                                         : 2;
        const size_t count = (size_t)(t->nbytes / width);
        if (count > MAX_FLOATS) continue;
        float *out = malloc(count ? count * sizeof *out : 1);
        REQUIRE(out != NULL);
        /* an I8 tensor reads only with its scales, which the file may lack or break */
        const rnx_status got = rnx_file_read_f32(f, t, out, count);
        REQUIRE(got == RNX_OK || (t->dtype == RNX_DTYPE_I8 && (got == RNX_ERR_FILE_MODEL ||
                                                               got == RNX_ERR_FILE_DTYPE)));
        REQUIRE(rnx_file_read_f32(f, t, out, count + 1) == RNX_ERR_BAD_ARGUMENT);
        free(out);
    }
    REQUIRE(rnx_file_tensor(f, n) == NULL);
    const size_t n_meta = rnx_file_metadata_count(f);
    for (size_t i = 0; i < n_meta; i++) {
        const char *key = NULL, *value = NULL;
        REQUIRE(rnx_file_metadata(f, i, &key, &value) == RNX_OK && key && value);
        REQUIRE(rnx_file_metadata_get(f, key) == value);
    }
    static rnx_layer layers[RNX_MAX_LAYERS];
    int n_layers = -1;
    char message[256] = "";
    const rnx_status s = rnx_file_model_layers(f, layers, RNX_MAX_LAYERS, &n_layers, message,
                                               sizeof message);
    if (s != RNX_OK) {
        REQUIRE(message[0] != '\0');
        return;
    }
    size_t params = 0;
    REQUIRE(n_layers >= 1 && n_layers <= RNX_MAX_LAYERS);
    REQUIRE(rnx_param_count(layers, n_layers, &params) == RNX_OK);
}

static void run_model(const rnx_model *m) {
    const rnx_model_info info = rnx_model_get_info(m);
    REQUIRE(info.n_layers >= 1 && info.output_size >= 1 && info.input_size >= 1);
    enum { B = 2, T = 3 };
    const size_t width = info.takes_ids ? 1 : (size_t)info.input_size;
    const size_t ny = (size_t)B * (info.per_step ? T : 1) * info.output_size;
    const size_t nh = (size_t)B * info.state_size;
    if (width > MAX_FLOATS || ny > MAX_FLOATS || nh > MAX_FLOATS) return;
    float *x = calloc(B * T * width, sizeof *x), *y = malloc(ny * sizeof *y);
    float *h = malloc((nh ? nh : 1) * sizeof *h);
    int32_t ids[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = i % info.input_size;
    REQUIRE(x && y && h);
    REQUIRE(rnx_forward(m, y, h, NULL, info.takes_ids ? NULL : x, info.takes_ids ? ids : NULL,
                        NULL, NULL, NULL, NULL, B, T, 1) == RNX_OK);
    rnx_stream *s = NULL;
    if (info.streamable) {
        REQUIRE(rnx_stream_create(&s, m, B) == RNX_OK);
        REQUIRE(rnx_stream_step(s, y, info.takes_ids ? NULL : x, info.takes_ids ? ids : NULL) ==
                RNX_OK);
        rnx_stream_free(s);
    }
    free(x), free(y), free(h);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char message[256] = "";
    rnx_file *f = NULL;
    rnx_status s = rnx_file_parse(&f, data, size, message, sizeof message);
    require_outcome(s, f, message);
    if (f) walk_file(f);
    rnx_file_free(f);

    rnx_model *m = NULL;
    message[0] = '\0';
    s = rnx_model_load(&m, data, size, RNX_ISA_AUTO, message, sizeof message);
    require_outcome(s, m, message);
    if (m) run_model(m);
    rnx_model_free(m);
    return 0;
}

#ifdef FUZZ_REPLAY
/* Each file from a buffer of exactly its size, as libFuzzer gives it. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *file = fopen(argv[i], "rb");
        if (!file) {
            fprintf(stderr, "cannot open %s\n", argv[i]);
            return 2;
        }
        fseek(file, 0, SEEK_END);
        const long size = ftell(file);
        fseek(file, 0, SEEK_SET);
        unsigned char *data = malloc(size > 0 ? (size_t)size : 1);
        const size_t got = data ? fread(data, 1, (size_t)(size > 0 ? size : 0), file) : 0;
        fclose(file);
        LLVMFuzzerTestOneInput(data, got);
        free(data);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
#endif
