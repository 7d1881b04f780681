/* arena.c: one aligned block holding several arrays, sized by a first pass over their layout. */
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

rnx_status rnx_arena_build(void **block, void (*layout)(rnx_arena *, void *), void *what) {
    rnx_arena a = {NULL, 0, 0};
    layout(&a, what);
    if (a.overflow) return RNX_ERR_OVERFLOW;
    if (posix_memalign(block, RNX_ALIGN, a.used ? a.used : RNX_ALIGN) != 0)
        return RNX_ERR_OUT_OF_MEMORY;
    a = (rnx_arena){*block, 0, 0};
    layout(&a, what);
    return RNX_OK;
}
