/* arena.c: one aligned block holding several arrays, sized by a first pass over their layout. */
#include <stdint.h>
#include <stdlib.h>
#include "rnx_internal.h"

void *rnx_arena_take(rnx_arena *a, size_t count, size_t elem) {
    size_t bytes;
    if (__builtin_mul_overflow(count, elem, &bytes) ||
        __builtin_add_overflow(bytes, (size_t)RNX_ALIGN - 1, &bytes)) {
        a->overflow = 1;
        return NULL;
    }
    bytes = bytes / RNX_ALIGN * RNX_ALIGN;
    void *p = a->base ? a->base + a->used : NULL;
    if (__builtin_add_overflow(a->used, bytes, &a->used)) a->overflow = 1;
    return p;
}

/* The block is plain malloc over-allocated by RNX_ALIGN - 1 bytes, the arrays start at its first
 * aligned byte: *block is what free() takes on every C library, where posix_memalign's blocks
 * need _aligned_free on Windows and C11's aligned_alloc is missing from MSVC's. */
rnx_status rnx_arena_build(void **block, void (*layout)(rnx_arena *, void *), void *what) {
    rnx_arena a = {NULL, 0, 0};
    layout(&a, what);
    size_t bytes;
    if (a.overflow || __builtin_add_overflow(a.used, (size_t)RNX_ALIGN - 1, &bytes))
        return RNX_ERR_OVERFLOW;
    if (!(*block = malloc(bytes))) return RNX_ERR_OUT_OF_MEMORY;
    const uintptr_t start = ((uintptr_t)*block + RNX_ALIGN - 1) / RNX_ALIGN * RNX_ALIGN;
    a = (rnx_arena){(char *)start, 0, 0};
    layout(&a, what);
    return RNX_OK;
}
