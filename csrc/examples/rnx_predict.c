/* rnx_predict: runs a model file saved from Python (Model.save) from C alone, as a program
 * embedding rnnext would: loads the file, runs a batch with per-sequence lengths, then streams
 * each sequence one step at a time on one stream (reset between sequences).
 *   rnx_predict MODEL [B T]          (B = 3 and T = 5 by default)
 * The input is made up here: float x (B, T, I) = sin(0.37 k + 0.1) over its elements k, or token
 * ids (B, T) = (7 k + 3) mod V; lengths[b] = max(1, T - b). Printed one array a line, the key
 * first and the numbers with enough digits to read the same float32 back:
 *   shape B T            lengths l_0 .. l_(B-1)
 *   x ... (or ids ...)   y ...: the batch's output, (B, T, O) per step or (B, O)
 *   stream b ...         sequence b's output at each of its l_b steps, (l_b, O): only for a
 *                        model that streams
 * so that a script can run the same in Python and compare (check_predict.py does).
 * Build: cc rnx_predict.c $(pkg-config --cflags --libs rnnext), or see CMakeLists.txt here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "rnnext.h"

/* The whole file at `path` in a new buffer, its length in *size; NULL on failure. */
static void *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *data = NULL;
    long length = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (length > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)length)) != NULL &&
        fread(data, 1, (size_t)length, f) != (size_t)length) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t)length : 0;
    return data;
}

static void print_floats(const char *key, int index, const float *values, size_t n) {
    fputs(key, stdout);
    if (index >= 0) printf(" %d", index);
    for (size_t i = 0; i < n; i++) printf(" %.9g", values[i]);
    putchar('\n');
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL [B T]\n", argv[0]);
        return 2;
    }
    const int B = argc == 4 ? atoi(argv[2]) : 3, T = argc == 4 ? atoi(argv[3]) : 5;
    if (B < 1 || T < 1) {
        fprintf(stderr, "B and T: expected positive integers, got %s and %s\n", argv[2], argv[3]);
        return 2;
    }
    if (rnx_version_number() != RNX_VERSION_NUMBER) {
        fprintf(stderr, "rnnext.h is version %d, the library %d\n", RNX_VERSION_NUMBER,
                rnx_version_number());
        return 1;
    }
    size_t size;
    void *data = read_file(argv[1], &size);
    if (!data) {
        fprintf(stderr, "%s: cannot read the file\n", argv[1]);
        return 1;
    }
    char message[256];
    rnx_model *model;
    rnx_status status = rnx_model_load(&model, data, size, RNX_ISA_AUTO, message, sizeof message);
    free(data);
    if (status != RNX_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], rnx_status_string(status), message);
        return 1;
    }
    const rnx_model_info info = rnx_model_get_info(model);
    const size_t I = info.takes_ids ? 1 : (size_t)info.input_size, O = (size_t)info.output_size;
    const size_t y_row = info.per_step ? (size_t)T * O : O;
    float *x = malloc((size_t)B * T * I * sizeof *x), *y = malloc((size_t)B * y_row * sizeof *y);
    float *step_y = malloc((size_t)T * O * sizeof *step_y);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids), *lengths = malloc(B * sizeof *lengths);
    rnx_stream *stream = NULL;
    status = RNX_ERR_OUT_OF_MEMORY;
    if (!x || !y || !step_y || !ids || !lengths) goto done;

    for (size_t k = 0; k < (size_t)B * T * I; k++) x[k] = sinf(0.37f * (float)k + 0.1f);
    for (size_t k = 0; k < (size_t)B * T; k++)
        ids[k] = (int32_t)((7 * k + 3) % (size_t)info.input_size);
    for (int b = 0; b < B; b++) lengths[b] = T - b > 1 ? T - b : 1;
    status = rnx_forward(model, y, NULL, NULL, info.takes_ids ? NULL : x,
                         info.takes_ids ? ids : NULL, NULL, NULL, lengths, NULL, B, T, 0);
    if (status != RNX_OK) goto done;

    printf("shape %d %d\nlengths", B, T);
    for (int b = 0; b < B; b++) printf(" %d", (int)lengths[b]);
    putchar('\n');
    if (info.takes_ids) {
        fputs("ids", stdout);
        for (int k = 0; k < B * T; k++) printf(" %d", (int)ids[k]);
        putchar('\n');
    } else {
        print_floats("x", -1, x, (size_t)B * T * I);
    }
    print_floats("y", -1, y, (size_t)B * y_row);

    if (info.streamable) {
        if ((status = rnx_stream_create(&stream, model, 1)) != RNX_OK) goto done;
        for (int b = 0; b < B; b++) {
            if ((status = rnx_stream_reset(stream, NULL, NULL)) != RNX_OK) goto done;
            for (int t = 0; t < lengths[b]; t++) {
                const size_t at = (size_t)b * T + (size_t)t;
                status = rnx_stream_step(stream, step_y + (size_t)t * O,
                                         info.takes_ids ? NULL : x + at * I,
                                         info.takes_ids ? ids + at : NULL);
                if (status != RNX_OK) goto done;
            }
            print_floats("stream", b, step_y, (size_t)lengths[b] * O);
        }
    }
done:
    if (status != RNX_OK) fprintf(stderr, "rnx_predict: %s\n", rnx_status_string(status));
    rnx_stream_free(stream);
    rnx_model_free(model);
    free(x), free(y), free(step_y), free(ids), free(lengths);
    return status == RNX_OK ? 0 : 1;
}
