/*
 * ggml-oracle: ggml's own quantizers and dequantizers behind a file interface, for quantd's
 * byte-equality tests (tests/api/ggml_oracle.rs). Built by scripts/llama-cpp-oracle.sh against
 * the libggml-base of the pinned llama.cpp.
 *
 *   ggml-oracle quantize   TYPE N_PER_ROW IN.f32 OUT.bin   ggml_quantize_chunk, no imatrix
 *   ggml-oracle dequantize TYPE IN.bin OUT.f32              the type's to_float
 *   ggml-oracle bench      TYPE N_PER_ROW IN.f32 REPEATS    prints MB/s of f32 input quantized
 *
 * TYPE is ggml's enum ggml_type value (12 = Q4_K, 14 = Q6_K). Files are raw little-endian.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml.h"

static void *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file) { perror(path); exit(2); }
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    void *data = malloc(length > 0 ? (size_t) length : 1);
    if (!data || fread(data, 1, (size_t) length, file) != (size_t) length) { perror(path); exit(2); }
    fclose(file);
    *size = (size_t) length;
    return data;
}

static void write_file(const char *path, const void *data, size_t size) {
    FILE *file = fopen(path, "wb");
    if (!file || fwrite(data, 1, size, file) != size || fclose(file) != 0) { perror(path); exit(2); }
}

static enum ggml_type parse_type(const char *arg) {
    int type = atoi(arg);
    if (type < 0 || type >= GGML_TYPE_COUNT || ggml_blck_size((enum ggml_type) type) <= 1) {
        fprintf(stderr, "not a block type: %s\n", arg);
        exit(2);
    }
    return (enum ggml_type) type;
}

/* Rows of n_per_row floats from `path`; exits unless the file holds whole rows. */
static float *read_rows(const char *path, int64_t n_per_row, int64_t *nrows) {
    size_t size;
    float *src = read_file(path, &size);
    if (n_per_row <= 0 || size % (sizeof(float) * (size_t) n_per_row) != 0) {
        fprintf(stderr, "%s: %zu bytes are not rows of %lld floats\n", path, size, (long long) n_per_row);
        exit(2);
    }
    *nrows = (int64_t) (size / sizeof(float)) / n_per_row;
    return src;
}

static int quantize(enum ggml_type type, int64_t n_per_row, const char *in, const char *out) {
    int64_t nrows;
    float *src = read_rows(in, n_per_row, &nrows);
    size_t size = ggml_row_size(type, n_per_row) * (size_t) nrows;
    void *dst = malloc(size > 0 ? size : 1);
    size_t written = ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL);
    if (written != size) { fprintf(stderr, "quantized %zu bytes, expected %zu\n", written, size); return 1; }
    write_file(out, dst, size);
    return 0;
}

static int dequantize(enum ggml_type type, const char *in, const char *out) {
    size_t size;
    void *src = read_file(in, &size);
    size_t block_bytes = ggml_type_size(type);
    if (size % block_bytes != 0) { fprintf(stderr, "%s: not whole blocks\n", in); return 1; }
    int64_t n = (int64_t) (size / block_bytes) * ggml_blck_size(type);
    float *dst = malloc(n > 0 ? (size_t) n * sizeof(float) : 1);
    ggml_get_type_traits(type)->to_float(src, dst, n);
    write_file(out, dst, (size_t) n * sizeof(float));
    return 0;
}

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + 1e-9 * (double) now.tv_nsec;
}

static int bench(enum ggml_type type, int64_t n_per_row, const char *in, int repeats) {
    int64_t nrows;
    float *src = read_rows(in, n_per_row, &nrows);
    void *dst = malloc(ggml_row_size(type, n_per_row) * (size_t) nrows + 1);
    ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL); /* warm-up */
    double best = 1e30;
    for (int rep = 0; rep < repeats; ++rep) {
        double start = seconds();
        ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, NULL);
        double elapsed = seconds() - start;
        if (elapsed < best) best = elapsed;
    }
    printf("%.1f\n", (double) (nrows * n_per_row) * sizeof(float) / best / 1e6);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "quantize") == 0) {
        return quantize(parse_type(argv[2]), atoll(argv[3]), argv[4], argv[5]);
    }
    if (argc == 5 && strcmp(argv[1], "dequantize") == 0) {
        return dequantize(parse_type(argv[2]), argv[3], argv[4]);
    }
    if (argc == 6 && strcmp(argv[1], "bench") == 0) {
        return bench(parse_type(argv[2]), atoll(argv[3]), argv[4], atoi(argv[5]));
    }
    fprintf(stderr, "usage: %s quantize|dequantize|bench ... (see the source)\n", argv[0]);
    return 2;
}
