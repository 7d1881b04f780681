/* file_loader.c: the C core's file loader on its own, without Python, built by tests/test_files.py
 * with -fsanitize=address,undefined so that any read out of bounds, leak or undefined behaviour
 * aborts the run.
 *
 *   file_loader MODEL X B T Y   loads MODEL with rnx_model_load, runs rnx_forward on the input
 *                               in file X (float32 x (B, T, I), or int32 ids (B, T) for a model
 *                               that takes ids) and writes y to file Y; prints the tensor table
 *                               and the number of layers (rnx_file_model_layers);
 *                               then loads every truncation of MODEL, every single-bit
 *                               corruption and a bounded number of random mutations, each from
 *                               a buffer of exactly its size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rnnext.h"

static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
    *size = data ? fread(data, 1, (size_t)n, f) : 0;
    fclose(f);
    return data;
}

/* Loads a private copy of exactly `size` bytes, so that the sanitizer sees any over-read.
 * Returns the status; a failure must come with a message. */
static int load_copy(const unsigned char *data, size_t size, int *bad_message) {
    unsigned char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    rnx_model *m = NULL;
    char message[256];
    rnx_status s = rnx_model_load(&m, size ? copy : NULL, size, RNX_ISA_SCALAR, message, sizeof message);
    if (s != RNX_OK && (!message[0] || m)) *bad_message = 1;
    rnx_model_free(m);
    free(copy);
    return s;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: file_loader MODEL X B T Y\n");
        return 2;
    }
    size_t size, xsize;
    unsigned char *data = read_all(argv[1], &size);
    unsigned char *x = read_all(argv[2], &xsize); /* float32 x or int32 ids */
    const int B = atoi(argv[3]), T = atoi(argv[4]);
    if (!data || !x) return 2;

    char message[256];
    rnx_file *file = NULL;
    rnx_status s = rnx_file_parse(&file, data, size, message, sizeof message);
    if (s != RNX_OK) {
        fprintf(stderr, "parse: %s\n", message);
        return 1;
    }
    for (size_t i = 0; i < rnx_file_tensor_count(file); i++) {
        const rnx_tensor_info *t = rnx_file_tensor(file, i);
        printf("tensor %s %s %d", t->name, rnx_dtype_name(t->dtype), t->ndim);
        for (int d = 0; d < t->ndim; d++) printf(" %llu", (unsigned long long)t->shape[d]);
        printf(" %llu %llu\n", (unsigned long long)t->offset, (unsigned long long)t->nbytes);
    }
    /* rnx_file_model_layers on its own: the layer count, a too-short array, NULL arguments */
    rnx_layer layers[RNX_MAX_LAYERS];
    int n_layers = 0, short_n = -1;
    if ((s = rnx_file_model_layers(file, layers, RNX_MAX_LAYERS, &n_layers, message,
                                   sizeof message)) != RNX_OK) {
        fprintf(stderr, "layers: %s\n", message);
        return 1;
    }
    printf("layers %d\n", n_layers);
    if (rnx_file_model_layers(file, layers, n_layers - 1, &short_n, message, sizeof message) !=
            RNX_ERR_BAD_ARGUMENT || short_n != -1 || !strstr(message, "more than max_layers") ||
        rnx_file_model_layers(NULL, layers, 1, &short_n, message, sizeof message) !=
            RNX_ERR_NULL_ARGUMENT ||
        rnx_file_model_layers(file, NULL, 1, &short_n, NULL, 0) != RNX_ERR_NULL_ARGUMENT ||
        rnx_file_model_layers(file, layers, 1, NULL, NULL, 0) != RNX_ERR_NULL_ARGUMENT) {
        fprintf(stderr, "rnx_file_model_layers: wrong status for bad arguments\n");
        return 1;
    }
    rnx_file_free(file);

    rnx_model *model = NULL;
    if ((s = rnx_model_load(&model, data, size, RNX_ISA_SCALAR, message, sizeof message)) != RNX_OK) {
        fprintf(stderr, "load: %s\n", message);
        return 1;
    }
    const rnx_model_info info = rnx_model_get_info(model);
    const size_t xsize_expected = (size_t)B * T * (info.takes_ids ? 1 : (size_t)info.input_size) * 4;
    const size_t ysize = (size_t)B * (info.per_step ? T : 1) * info.output_size;
    if (xsize != xsize_expected) {
        fprintf(stderr, "X: %zu bytes, expected %zu\n", xsize, xsize_expected);
        return 2;
    }
    float *y = malloc(ysize * sizeof *y);
    if ((s = rnx_forward(model, y, NULL, NULL, info.takes_ids ? NULL : (const float *)x,
                         info.takes_ids ? (const int32_t *)x : NULL, NULL, NULL, NULL, NULL, B, T,
                         1)) != RNX_OK) {
        fprintf(stderr, "forward: %s\n", rnx_status_string(s));
        return 1;
    }
    FILE *out = fopen(argv[5], "wb");
    fwrite(y, sizeof *y, ysize, out);
    fclose(out);
    free(y);
    rnx_model_free(model);

    int bad_message = 0, accepted = 0;
    for (size_t n = 0; n < size; n++)
        if (load_copy(data, n, &bad_message) == RNX_OK) accepted++;
    printf("truncations accepted %d\n", accepted);

    unsigned char *mutated = malloc(size);
    accepted = 0;
    for (size_t i = 0; i < size; i++)
        for (int mask = 1; mask < 256; mask <<= 1) {
            memcpy(mutated, data, size);
            mutated[i] ^= (unsigned char)mask;
            if (load_copy(mutated, size, &bad_message) == RNX_OK) accepted++;
        }
    printf("bit flips accepted %d\n", accepted);

    unsigned long long state = 0x9E3779B97F4A7C15ull;
    for (int round = 0; round < 3000; round++) {
        memcpy(mutated, data, size);
        for (int k = 0; k < 1 + round % 4; k++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            mutated[state % size] = (unsigned char)(state >> 32);
        }
        load_copy(mutated, size - (round % 7 == 0 ? (state >> 40) % size : 0), &bad_message);
    }
    free(mutated);
    free(data);
    free(x);
    printf("failures without a message %d\n", bad_message);
    return bad_message;
}
