/* cpu.c: which kernels this CPU and OS can run, chosen once per process; versions, status text
 * and threads. */
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int rnx_version_number(void) { return RNX_VERSION_NUMBER; }

const char *rnx_status_string(rnx_status status) {
    switch (status) {
    case RNX_OK: return "ok";
    case RNX_ERR_NULL_ARGUMENT: return "a required pointer is NULL";
    case RNX_ERR_BAD_CONFIG: return "a layer list is invalid: a layer, its order or a size or option is out of range";
    case RNX_ERR_BAD_ARGUMENT: return "a size, length or thread count is out of range";
    case RNX_ERR_OUT_OF_MEMORY: return "out of memory";
    case RNX_ERR_ISA_UNAVAILABLE: return "the requested instruction set is not available on this CPU";
    case RNX_ERR_OVERFLOW: return "a size computation overflows";
    case RNX_ERR_FILE_LENGTH: return "the file's length disagrees with its header (truncated or trailing bytes)";
    case RNX_ERR_FILE_HEADER: return "the file's header is not a well-formed safetensors header";
    case RNX_ERR_FILE_DTYPE: return "a tensor's dtype is not one rnnext reads";
    case RNX_ERR_FILE_OFFSETS: return "a tensor's byte range is out of bounds, overlapping, or wrong for its shape";
    case RNX_ERR_FILE_MODEL: return "the file does not describe an rnnext model";
    case RNX_ERR_FILE_VERSION: return "the file's format version is newer than this library's";
    }
    return "unknown status";
}

const char *rnx_isa_name(rnx_isa isa) {
    switch (isa) {
    case RNX_ISA_AUTO: return "auto";
    case RNX_ISA_SCALAR: return "scalar";
    case RNX_ISA_AVX2: return "avx2";
    case RNX_ISA_AVX512: return "avx512";
    case RNX_ISA_AVX512_VNNI: return "avx512_vnni";
    case RNX_ISA_AVX512_BF16: return "avx512_bf16";
    case RNX_ISA_AVX_VNNI: return "avx_vnni";
    }
    return "unknown";
}

int rnx_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int rnx_max_threads(void) {
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
    return threads < RNX_MAX_THREADS ? threads : RNX_MAX_THREADS;
#else
    return 1;
#endif
}

/* The team of the last rnx_forward on this OS thread: callers check what they really got. */
static _Thread_local int last_team = 0;
void rnx_note_team(int threads) { last_team = threads; }
int rnx_last_team(void) { return last_team; }

int rnx_threads_for_call(int n_threads) {
#ifdef _OPENMP
    return n_threads > 0 ? n_threads : rnx_max_threads();
#else
    (void)n_threads;
    return 1;
#endif
}

/* libgomp keeps the thread pool of a parallel region in the thread-local state of the region's
 * master thread. fork() copies only the forking thread: in the child, if that thread was a master
 * in the parent (of this library's regions or of any other library's), its next region waits
 * forever for pool threads that were not copied. So in a forked child the forking thread runs
 * each region from a fresh thread, whose pool libgomp frees when it exits; threads started in the
 * child have no stale pool and run their regions directly. The fork handler is registered when
 * the library is loaded, so every fork after that is seen. Windows has no fork: there a region
 * always runs on the calling thread. */
#ifdef _OPENMP
typedef struct region {
    void (*body)(void *, rnx_team);
    void *arg;
    int threads, team;
} region;

static void *run_region(void *p) {
    region *r = p;
#pragma omp parallel num_threads(r->threads)
    {
        const rnx_team team = {omp_get_thread_num(), omp_get_num_threads()};
        if (team.id == 0) r->team = team.size;
        r->body(r->arg, team);
    }
    return NULL;
}

#ifndef _WIN32
#include <pthread.h>
static volatile int forked = 0;
static pthread_t forking_thread;
static void on_fork_child(void) {
    forking_thread = pthread_self();
    forked = 1;
}
__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* On a forked child's forking thread: runs r from a fresh thread (with no thread to start, as a
 * team of one) and returns 1; on any other thread returns 0 and leaves r to the caller. */
static int ran_from_fresh_thread(region *r) {
    if (!forked || !pthread_equal(pthread_self(), forking_thread)) return 0;
    pthread_t fresh;
    if (pthread_create(&fresh, NULL, run_region, r) == 0) pthread_join(fresh, NULL);
    else r->body(r->arg, (rnx_team){0, 1});
    return 1;
}
#else
static int ran_from_fresh_thread(region *r) {
    (void)r;
    return 0;
}
#endif
#endif

int rnx_parallel(void (*body)(void *arg, rnx_team team), void *arg, int threads) {
#ifdef _OPENMP
    if (threads > 1) {
        region r = {body, arg, threads, 1};
        if (!ran_from_fresh_thread(&r)) run_region(&r);
        return r.team;
    }
#endif
    body(arg, (rnx_team){0, 1});
    return 1;
}

/* ------------------------------------------------------------------------------------------ */

#if defined(RNX_X86_KERNELS)
#include <cpuid.h>

/* XCR0: which register states the OS saves on a context switch. */
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int cpu_has(rnx_isa isa) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx || !fma) return 0;
    const unsigned long long xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* SSE and AVX state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1;
    const int avx512bw = (b >> 30) & 1, vnni = (c >> 11) & 1;
    const int avx512 = avx2 && avx512f && avx512dq && (xcr0 & 0xE0) == 0xE0; /* opmask, ZMM */
    if (isa == RNX_ISA_AVX2) return avx2;
    if (isa == RNX_ISA_AVX512) return avx512;
    const int with_vnni = avx512 && avx512bw && vnni;
    if (isa == RNX_ISA_AVX512_VNNI) return with_vnni;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    if (isa == RNX_ISA_AVX512_BF16) return with_vnni && ((a >> 5) & 1);
    if (isa == RNX_ISA_AVX_VNNI) return avx2 && ((a >> 4) & 1);
    return 0;
}
#endif

int rnx_isa_supported(rnx_isa isa) {
    switch (isa) {
    case RNX_ISA_SCALAR: return 1;
#if defined(RNX_X86_KERNELS)
    case RNX_ISA_AVX2:
    case RNX_ISA_AVX512:
    case RNX_ISA_AVX512_VNNI:
    case RNX_ISA_AVX512_BF16:
    case RNX_ISA_AVX_VNNI: return cpu_has(isa);
#endif
    default: return 0;
    }
}

const rnx_kernels *rnx_kernels_for(rnx_isa isa) {
    if (!rnx_isa_supported(isa)) return NULL;
    switch (isa) {
    case RNX_ISA_SCALAR: return &rnx_kernels_scalar;
#if defined(RNX_X86_KERNELS)
    case RNX_ISA_AVX2: return &rnx_kernels_avx2;
    case RNX_ISA_AVX512: return &rnx_kernels_avx512;
    case RNX_ISA_AVX512_VNNI: return &rnx_kernels_avx512_vnni;
    case RNX_ISA_AVX512_BF16: return &rnx_kernels_avx512_bf16;
    case RNX_ISA_AVX_VNNI: return &rnx_kernels_avx_vnni;
#endif
    default: return NULL;
    }
}

/* RNNEXT_ISA if set (RNX_ISA_AUTO when it names nothing usable), else the first supported of
 * these, best first. */
static const rnx_isa preference[] = {RNX_ISA_AVX512_BF16, RNX_ISA_AVX512_VNNI, RNX_ISA_AVX512,
                                     RNX_ISA_AVX_VNNI,    RNX_ISA_AVX2,        RNX_ISA_SCALAR};
static rnx_isa choose_isa(void) {
    const char *forced = getenv("RNNEXT_ISA");
    const int n = (int)(sizeof preference / sizeof preference[0]);
    for (int i = 0; i < n; i++) {
        const rnx_isa isa = preference[i];
        if (forced && *forced ? strcmp(forced, rnx_isa_name(isa)) == 0 : rnx_isa_supported(isa))
            return rnx_isa_supported(isa) ? isa : RNX_ISA_AUTO;
    }
    return RNX_ISA_AUTO; /* RNNEXT_ISA named none of them */
}

rnx_isa rnx_default_isa(void) {
    /* Racing first calls compute the same value, so a plain static is enough. */
    static volatile int chosen = -1;
    if (chosen < 0) chosen = (int)choose_isa();
    return (rnx_isa)chosen;
}

rnx_status rnx_activation(rnx_isa isa, rnx_function function, float *out, const float *in,
                          size_t n) {
    if ((!out || !in) && n > 0) return RNX_ERR_NULL_ARGUMENT;
    if (function != RNX_FN_SIGMOID && function != RNX_FN_TANH) return RNX_ERR_BAD_ARGUMENT;
    const rnx_kernels *k = rnx_kernels_for(isa == RNX_ISA_AUTO ? rnx_default_isa() : isa);
    if (!k) return RNX_ERR_ISA_UNAVAILABLE;
    k->activate(function, out, in, n);
    return RNX_OK;
}
