/* kernel_impl.h: the fused kernels, written once over GCC/Clang generic vectors and compiled once
 * per instruction set by kernel_<isa>.c, which defines RNX_VW (lanes), RNX_MR (rows per tile) and
 * RNX_SUFFIX before including this file. The build gives each of those files its own -m flags.
 *
 * Layout and maths: see rnx_internal.h (rnx_packed) and rnnext.h (rnx_cell). */
#include <stdint.h>
#include <string.h>
#include "rnx_internal.h"
#if defined(__AVX2__)
#include <immintrin.h> /* the masked loads, vdpbf16ps and vpdpbusd */
#endif

#define RNX_CAT2(a, b) a##_##b
#define RNX_CAT(a, b) RNX_CAT2(a, b)
#define RNX_K(name) RNX_CAT(name, RNX_SUFFIX)
#define RNX_INLINE static inline __attribute__((always_inline))

/* bf16 products by vdpbf16ps (RNX_ISA_AVX512_BF16), else by FMAs in registers */
#if defined(__AVX512BF16__) && RNX_VW == 16
#define RNX_DPBF16 1
#else
#define RNX_DPBF16 0
#endif

typedef float vf __attribute__((vector_size(RNX_VW * 4), may_alias));
typedef int32_t vi __attribute__((vector_size(RNX_VW * 4), may_alias));

/* ---------------------------------------------------------------------------------------------
 * Vector maths. Every function propagates NaN (comparisons with NaN are false, so NaN lanes are
 * never replaced by a clamp) and saturates correctly at +-inf.
 * ------------------------------------------------------------------------------------------- */

/* s - 0 is s for every s (0 + s is not: 0 + -0 = +0), so the compiler folds this to a broadcast,
 * which an FMA takes as a memory operand; (vf){0} + s costs an extra add per broadcast. */
RNX_INLINE vf vsplat(float s) { return s - (vf){0}; }

/* lanes of a where mask is set (all ones), else lanes of b */
RNX_INLINE vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* exp(x): x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n built in the
 * exponent bits. Inputs are clamped to [-87.3, 88.7] so 2^n stays a normal float; exp(-87.3) is
 * 1.2e-38 and exp(88.7) is 3.3e38, which the callers below turn into their exact limits. */
RNX_INLINE vf vexp(vf x) {
    const vf hi = vsplat(88.7f), lo = vsplat(-87.3f);
    x = vselect(x > hi, hi, x);
    x = vselect(x < lo, lo, x);
    const vf shifter = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf t = x * 1.44269504088896341f + shifter;
    vf n = t - shifter;
    vi e = (vi)t - (vi)shifter; /* the same integer, as int lanes */
    vf r = x - n * 0.693145751953125f; /* ln2 split in two for an exact product */
    r = r - n * 1.428606765330187045e-06f;
    vf p = vsplat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi scale = (e + 127) << 23;
    return p * (vf)scale;
}

RNX_INLINE vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

/* tanh(x) = sign(x) * (1 - 2 / (exp(2|x|) + 1)); absolute error below 3e-7 everywhere. */
RNX_INLINE vf vtanh(vf x) {
    vi sign = (vi)x & (vi)vsplat(-0.0f);
    vf ax = (vf)((vi)x & ~(vi)vsplat(-0.0f));
    vf t = 1.0f - 2.0f / (vexp(ax + ax) + 1.0f);
    return (vf)((vi)t | sign);
}

RNX_INLINE vf vrelu(vf x) { return vselect(x < 0.0f, vsplat(0.0f), x); }

RNX_INLINE vf vload(const float *p) { return *(const vf *)p; }
RNX_INLINE void vstore(float *p, vf v) { *(vf *)p = v; }

/* A vector of p's first n floats (n >= 1; at most RNX_VW of them are read; p aligned or not), the
 * other lanes zero, reading nothing past p + n. A masked load where the instruction set has one:
 * a vector read back from a buffer that was written in smaller pieces waits for those stores (no
 * store forwarding), which at batch 1 cost a stream step more than the product of a small input. */
RNX_INLINE vf vload_part(const float *p, size_t n) {
    const size_t m = n < RNX_VW ? n : RNX_VW;
    if (m == RNX_VW) { /* p may be unaligned */
        vf v;
        memcpy(&v, p, sizeof v);
        return v;
    }
#if defined(__AVX512F__) && RNX_VW == 16
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1u), p);
#elif defined(__AVX2__) && RNX_VW == 8
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
    return (vf)_mm256_maskload_ps(p, (__m256i)(lane < (int32_t)m));
#else
    vf v = vsplat(0.0f);
    memcpy(&v, p, m * sizeof(float));
    return v;
#endif
}

/* v's lanes rotated down by n (1, 2, 4 or 8, a constant once inlined): lane i takes lane
 * (i + n) mod RNX_VW, in registers. */
#define RNX_LANE(i, n) (((i) + (n)) % RNX_VW)
#define RNX_LANES4(n) RNX_LANE(0, n), RNX_LANE(1, n), RNX_LANE(2, n), RNX_LANE(3, n)
#if RNX_VW == 4
#define RNX_ROTATION(n) RNX_LANES4(n)
#elif RNX_VW == 8
#define RNX_ROTATION(n) RNX_LANES4(n), RNX_LANES4(n + 4)
#else
#define RNX_ROTATION(n) RNX_LANES4(n), RNX_LANES4(n + 4), RNX_LANES4(n + 8), RNX_LANES4(n + 12)
#endif
#if defined(__clang__) || __GNUC__ >= 12
#define RNX_ROTATE(v, n) __builtin_shufflevector(v, v, RNX_ROTATION(n))
#else /* GCC before 12 has only its own builtin */
#define RNX_ROTATE(v, n) __builtin_shuffle(v, (vi){RNX_ROTATION(n)})
#endif
RNX_INLINE vf vrotate(vf v, int n) {
    switch (n) {
    case 1: return RNX_ROTATE(v, 1);
    case 2: return RNX_ROTATE(v, 2);
    case 4: return RNX_ROTATE(v, 4);
    default: return RNX_ROTATE(v, 8);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The product: acc[q][r][j] += sum_k a[r][k*AS] * w[q*panel_stride + k*ldw + j*VW ..] over K, for
 * NP panels, NR rows and NV vectors. NP, NR and NV are constants after inlining, so the
 * accumulators live in registers. Every output is summed over k in the same order whatever the
 * tile's shape, so results do not depend on how rows are grouped (or on the thread count).
 * AS, the stride of a row's elements, is 1 except in the training kernels' weight gradients,
 * which read states in place. The weights are float32 (w), or with BF16 (a constant) bfloat16
 * pairs (w32, layout: rnx_packed's wx16; panel_stride and ldw then count pairs), widened as they
 * are loaded ("convert in registers": every instruction set runs them). A bf16 product reads
 * its inputs rounded to bfloat16 (round_bf16, K2 of them) and takes each pair of k as
 * vdpbf16ps does, k+1 before k, one FMA each: where that instruction is missing, the same sums
 * in the same order.
 * ------------------------------------------------------------------------------------------- */

/* k's float32 vector from a vector of bfloat16 pairs: a 32-bit lane holds one column's weights of
 * an even k (low half) and k+1 (high half), and a bfloat16 is the top half of a float's bits, so
 * a shift or a mask widens a whole vector, without lane shuffles. */
typedef uint32_t vu __attribute__((vector_size(RNX_VW * 4), may_alias));
RNX_INLINE vf vload_bf16(const uint32_t *pairs, int odd) {
    const vu v = *(const vu *)pairs;
    return odd ? (vf)(v & ((vu){0} + 0xffff0000u)) : (vf)(v << 16);
}

/* a's K floats rounded to bfloat16 for a bf16 product (nearest, ties to even; NaN stays NaN, as
 * rnx_bf16_from_float), RNX_K2(K) of them (a zero past K), into buf as that product reads them:
 * bfloat16 pairs for vdpbf16ps, else floats; out->q is buf. buf may be a itself (each block is
 * read before its narrower result is written). */
RNX_INLINE void round_bf16(rnx_qrow *out, uint8_t *buf, const float *a, int K) {
    const size_t K2 = RNX_K2(K);
    const vu one = (vu){0} + 1u, top = (vu){0} + 0xffff0000u;
    for (size_t k = 0; k < K2; k += RNX_VW) {
        /* the last vector's part past K zero */
        const vu bits = (vu)vload_part(a + k, (size_t)K - k);
        const vi nan = (vi)(bits & 0x7fffffffu) > (vi){0} + 0x7f800000;
        const vu even = (bits + 0x7fffu + ((bits >> 16) & one)) & top;
        const vu r = (vu)(((vi)(bits | 0x00400000u) & nan) | ((vi)even & ~nan)) & top;
        const size_t m = K2 - k < RNX_VW ? K2 - k : RNX_VW;
#if RNX_DPBF16
        typedef uint16_t vh __attribute__((vector_size(RNX_VW * 2), may_alias));
        const vh half = __builtin_convertvector(r >> 16, vh);
        if (m == RNX_VW) memcpy(buf + 2 * k, &half, sizeof half);
        else memcpy(buf + 2 * k, &half, m * sizeof(uint16_t));
#else
        if (m == RNX_VW) memcpy(buf + 4 * k, &r, sizeof r);
        else memcpy(buf + 4 * k, &r, m * sizeof(float));
#endif
    }
    *out = (rnx_qrow){buf, 1.0f, 0};
}

RNX_INLINE void accumulate(vf acc[2][RNX_MR][4], const float *const *a, const ptrdiff_t AS,
                           const float *w, const uint32_t *w32, const int BF16,
                           size_t panel_stride, int K, int ldw, const int NP, const int NR,
                           const int NV) {
    for (int kk = 0; kk < K; kk++) {
        const int k = BF16 ? kk ^ 1 : kk;
        /* the weights of step k in registers, reused by every row: one load per vector (a pair's
         * vector is loaded once for each of its k, from L1) */
        const size_t wk = (size_t)(BF16 ? k / 2 : k) * ldw;
        vf wv[2][4];
#pragma GCC unroll 2
        for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                const size_t at = wk + q * panel_stride + j * RNX_VW;
                wv[q][j] = BF16 ? vload_bf16(w32 + at, k % 2) : vload(w + at);
            }
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            vf ar = vsplat(a[r][k * AS]);
#pragma GCC unroll 2
            for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++) acc[q][r][j] += ar * wv[q][j];
        }
    }
}

#if RNX_DPBF16
/* The bf16 product by vdpbf16ps: rows[r].q holds row r's inputs as bfloat16 pairs (round_bf16);
 * w32, panel_stride and ldw as accumulate's at BF16, over `pairs` pairs of k. */
RNX_INLINE void accumulate_dpbf16(vf acc[2][RNX_MR][4], const rnx_qrow *rows,
                                  const uint32_t *w32, size_t panel_stride, int pairs, int ldw,
                                  const int NP, const int NR, const int NV) {
    for (int k = 0; k < pairs; k++) {
        __m512i wv[2][4];
#pragma GCC unroll 2
        for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                wv[q][j] = *(const __m512i *)(w32 + (size_t)k * ldw + q * panel_stride +
                                              j * RNX_VW);
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            int32_t pair;
            memcpy(&pair, rows[r].q + 4 * (size_t)k, sizeof pair);
            const __m512bh ar = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 2
            for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    acc[q][r][j] = (vf)_mm512_dpbf16_ps((__m512)acc[q][r][j], ar,
                                                        (__m512bh)wv[q][j]);
        }
    }
}
#endif

/* The product with vectors j0 .. j0+NV of panels p .. p+NP of a packed weight over K inputs (nv
 * vectors a panel): bfloat16 (w16) on the rows a round_bf16 prepared (rows), else float32 (w) on
 * a. */
RNX_INLINE void accumulate_packed(vf acc[2][RNX_MR][4], const float *const *a,
                                  const rnx_qrow *rows, const float *w, const uint16_t *w16,
                                  int p, int j0, int K, int nv, const int NP, const int NR,
                                  const int NV) {
    const int ldw = nv * RNX_VW;
    if (w16) { /* in 32-bit lanes of k pairs */
        const size_t K2 = RNX_K2(K), panel_stride = K2 / 2 * ldw;
        const uint32_t *w32 = (const uint32_t *)(const void *)w16 + p * panel_stride + j0 * RNX_VW;
#if RNX_DPBF16
        accumulate_dpbf16(acc, rows, w32, panel_stride, (int)K2 / 2, ldw, NP, NR, NV);
#else
        const float *rounded[RNX_MR];
        for (int r = 0; r < NR; r++) rounded[r] = (const float *)(const void *)rows[r].q;
        accumulate(acc, rounded, 1, NULL, w32, 1, panel_stride, (int)K2, ldw, NP, NR, NV);
#endif
    } else {
        const size_t panel_stride = (size_t)K * ldw;
        accumulate(acc, a, 1, w + p * panel_stride + j0 * RNX_VW, NULL, 0, panel_stride, K, ldw,
                   NP, NR, NV);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The int8 product (RNX_PRECISION_INT8; layout: rnx_q8): acc[q][r][j] += (sum_k q_a q_w - z sum_k
 * q_w) s_a s_w over the columns of vector j of panel p + q, with the integer sum exact in int32.
 * With VNNI one vpdpbusd adds a group of 4 k; elsewhere the bytes are widened to float32 in
 * registers and summed there, exactly, in blocks that cannot reach 2^24 (|q_a q_w| <= 255 * 127,
 * so 128 groups of 4), each block then added to the int32 sums. nv is the layout's vectors per
 * panel, NV those computed.
 * ------------------------------------------------------------------------------------------- */

#define RNX_Q8_EXACT_GROUPS 128
/* RNX_DPBUSD(sum, a, w): vpdpbusd, sum's int32 lanes plus the products of a's unsigned and w's
 * signed bytes, four to a lane: the EVEX form on 16 lanes, the VEX form of AVX-VNNI on 8. */
#if defined(__AVX512VNNI__) && RNX_VW == 16
#define RNX_VNNI 1
#define RNX_DPBUSD(sum, a, w)                                                                     \
    (vi) _mm512_dpbusd_epi32((__m512i)(sum), (__m512i)(a), (__m512i)(w))
#elif defined(__AVXVNNI__) && RNX_VW == 8
#define RNX_VNNI 1
#define RNX_DPBUSD(sum, a, w)                                                                     \
    (vi) _mm256_dpbusd_avx_epi32((__m256i)(sum), (__m256i)(a), (__m256i)(w))
#else
#define RNX_VNNI 0
#endif

RNX_INLINE void accumulate_q8(vf acc[2][RNX_MR][4], const rnx_qrow *qa, const rnx_q8 *w, int p,
                              int K, int nv, const int NP, const int NR, const int NV) {
    const size_t groups = RNX_K4(K) / 4, ldw = (size_t)nv * RNX_VW;
    const size_t panel_stride = groups * ldw; /* in groups of 4 bytes, one per int32 lane */
    const int32_t *w32 = (const int32_t *)(const void *)w->w + (size_t)p * panel_stride;
    vi sum[2][RNX_MR][4];
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < NV; j++) sum[q][r][j] = (vi){0};
    for (size_t g0 = 0; g0 < groups; g0 += RNX_Q8_EXACT_GROUPS) {
        const size_t g1 = groups - g0 < RNX_Q8_EXACT_GROUPS ? groups : g0 + RNX_Q8_EXACT_GROUPS;
#if !RNX_VNNI
        vf part[2][RNX_MR][4];
        for (int q = 0; q < NP; q++)
            for (int r = 0; r < NR; r++)
                for (int j = 0; j < NV; j++) part[q][r][j] = vsplat(0.0f);
#endif
        for (size_t g = g0; g < g1; g++) {
            vi wv[2][4];
#pragma GCC unroll 2
            for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    wv[q][j] = *(const vi *)(w32 + g * ldw + q * panel_stride + j * RNX_VW);
#if RNX_VNNI
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                int32_t four;
                memcpy(&four, qa[r].q + 4 * g, sizeof four);
                const vi a4 = (vi){0} + four;
#pragma GCC unroll 2
                for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                    for (int j = 0; j < NV; j++)
                        sum[q][r][j] = RNX_DPBUSD(sum[q][r][j], a4, wv[q][j]);
            }
#else
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                vf wf[2][4]; /* byte i of each lane, sign-extended */
#pragma GCC unroll 2
                for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                    for (int j = 0; j < NV; j++)
                        wf[q][j] = __builtin_convertvector((wv[q][j] << (24 - 8 * i)) >> 24, vf);
#pragma GCC unroll 8
                for (int r = 0; r < NR; r++) {
                    const vf ar = vsplat((float)qa[r].q[4 * g + i]);
#pragma GCC unroll 2
                    for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
                        for (int j = 0; j < NV; j++) part[q][r][j] += ar * wf[q][j];
                }
            }
#endif
        }
#if !RNX_VNNI
#pragma GCC unroll 2
        for (int q = 0; q < NP; q++)
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++)
                    sum[q][r][j] += __builtin_convertvector(part[q][r][j], vi);
#endif
    }
#pragma GCC unroll 2
    for (int q = 0; q < NP; q++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) {
            const size_t col = (size_t)(p + q) * ldw + j * RNX_VW;
            const vi wsum = *(const vi *)(w->sum + col);
            const vf ws = vload(w->scale + col);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                const vi exact = sum[q][r][j] - qa[r].zero * wsum;
                acc[q][r][j] += __builtin_convertvector(exact, vf) * (qa[r].scale * ws);
            }
        }
}

/* Two panels at a time when their accumulators fit in the registers: a tile of one or two rows
 * (batch 1, streaming) then has enough independent sums to hide the FMA latency. */
#define RNX_PAIR_PANELS(NR, NV) (2 * (NR) * (NV) <= 4 * RNX_MR)

/* ---------------------------------------------------------------------------------------------
 * Input projection: out[r] = bx + W_x a[r] for the panels [p0, p1)
 * ------------------------------------------------------------------------------------------- */

RNX_INLINE void project_panels(float *const *out, const float *const *a, const rnx_qrow *qa,
                               const rnx_packed *w, int p, const int NP, const int NR,
                               const int NV, const int Q8) {
    const int panel = NV * RNX_VW;
    vf acc[2][RNX_MR][4];
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < NV; j++) acc[q][r][j] = vload(w->bx + (size_t)(p + q) * panel + j * RNX_VW);
    if (Q8)
        accumulate_q8(acc, qa, &w->x8, p, w->in_size, NV, NP, NR, NV);
    else
        accumulate_packed(acc, a, qa, w->wx, w->wx16, p, 0, w->in_size, NV, NP, NR, NV);
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < NV; j++)
                vstore(out[r] + (size_t)(p + q) * panel + j * RNX_VW, acc[q][r][j]);
}

RNX_INLINE void project_tile(float *const *out, const float *const *a, const rnx_qrow *qa,
                             const rnx_packed *w, int p0, int p1, const int NR, const int NV,
                             const int Q8) {
    int p = p0;
    if (RNX_PAIR_PANELS(NR, NV))
        for (; p + 1 < p1; p += 2) project_panels(out, a, qa, w, p, 2, NR, NV, Q8);
    for (; p < p1; p++) project_panels(out, a, qa, w, p, 1, NR, NV, Q8);
}

/* ---------------------------------------------------------------------------------------------
 * One fused time step: recurrent product, biases, activations and state update of each panel
 * while its gates are still in registers.
 * ------------------------------------------------------------------------------------------- */

/* Training mode: a step's NG activated gates at gates_off and `extra` (LSTM c', GRU
 * W_hn h + b_hn) at extra_off of the row's tape (layout: see rnx_tape in backward.c). */
RNX_INLINE void tape_store(float *row, size_t gates_off, size_t extra_off, const vf *gates,
                           const int NG, vf extra) {
    for (int j = 0; j < NG; j++) vstore(row + gates_off + j * RNX_VW, gates[j]);
    vstore(row + extra_off, extra);
}

RNX_INLINE void step_panels(const int cell, float *const *h_out, float *const *c,
                            const float *const *h_in, const rnx_qrow *qh, const float *const *xp,
                            const unsigned char *active, float *const *tape,
                            const rnx_packed *w, int H, int npanels, int p, const int NP,
                            const int NR, const int NV, const int TAPE, const int Q8) {
    const int panel = NV * RNX_VW;
    const int units = NV == 4 && cell != RNX_CELL_LSTM ? NV * RNX_VW : RNX_VW;
    vf acc[2][RNX_MR][4];
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < NV; j++)
                acc[q][r][j] = (cell == RNX_CELL_GRU && j == 2)
                                   ? vload(w->bhn + (size_t)(p + q) * RNX_VW)
                                   : vload(xp[r] + (size_t)(p + q) * panel + j * RNX_VW);
    /* the GRU with the reset before the product takes only r and z here, n in gru_n_pass */
    const int nv_here = cell == RNX_CELL_GRU_RESET_BEFORE ? 2 : NV;
    if (Q8)
        accumulate_q8(acc, qh, &w->h8, p, H, NV, NP, NR, nv_here);
    else
        accumulate_packed(acc, h_in, qh, w->wh, TAPE ? NULL : w->wh16, p, 0, H, NV, NP, NR,
                          nv_here); /* training is float32 only */
    for (int q = 0; q < NP; q++) {
        const size_t xoff = (size_t)(p + q) * panel, u0 = (size_t)(p + q) * units;
        for (int r = 0; r < NR; r++) {
            if (!active[r]) {
                memcpy(h_out[r] + u0, h_in[r] + u0, (size_t)units * sizeof(float));
                continue;
            }
            if (cell == RNX_CELL_LSTM) {
                vf i = vsigmoid(acc[q][r][0]), f = vsigmoid(acc[q][r][1]);
                vf g = vtanh(acc[q][r][2]), o = vsigmoid(acc[q][r][3]);
                vf cn = f * vload(c[r] + u0) + i * g;
                vstore(c[r] + u0, cn);
                vstore(h_out[r] + u0, o * vtanh(cn));
                if (TAPE) {
                    const vf gates[4] = {i, f, g, o};
                    tape_store(tape[r], xoff, (size_t)npanels * panel + u0, gates, 4, cn);
                }
            } else if (cell == RNX_CELL_GRU) {
                vf rg = vsigmoid(acc[q][r][0]), z = vsigmoid(acc[q][r][1]);
                vf n = vtanh(vload(xp[r] + xoff + 2 * RNX_VW) + rg * acc[q][r][2]);
                if (TAPE) {
                    const vf gates[3] = {rg, z, n};
                    tape_store(tape[r], xoff, (size_t)npanels * panel + u0, gates, 3,
                               acc[q][r][2]);
                }
                vf h = vload(h_in[r] + u0);
                vstore(h_out[r] + u0, n + z * (h - n));
            } else if (cell == RNX_CELL_GRU_RESET_BEFORE) {
                /* r*h to the scratch row c[r], z parked in h_out until the n pass */
                vstore(c[r] + u0, vsigmoid(acc[q][r][0]) * vload(h_in[r] + u0));
                vstore(h_out[r] + u0, vsigmoid(acc[q][r][1]));
            } else {
                for (int j = 0; j < NV; j++) {
                    vf v = cell == RNX_CELL_RNN_TANH ? vtanh(acc[q][r][j]) : vrelu(acc[q][r][j]);
                    vstore(h_out[r] + u0 + j * RNX_VW, v);
                }
            }
        }
    }
}

/* The second pass of RNX_CELL_GRU_RESET_BEFORE, once r*h is complete for every unit:
 * n = tanh(xn + W_hn (r*h) + b_hn), h' = n + z*(h - n) with z read back from h_out. */
RNX_INLINE void gru_n_panels(float *const *h_out, const float *const *rh, const rnx_qrow *rh16,
                             const float *const *h_in, const float *const *xp,
                             const unsigned char *active, const rnx_packed *w, int H, int p,
                             const int NP, const int NR) {
    const int panel = 3 * RNX_VW;
    vf acc[2][RNX_MR][4];
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++) acc[q][r][0] = vload(w->bhn + (size_t)(p + q) * RNX_VW);
    accumulate_packed(acc, rh, rh16, w->wh, w->wh16, p, 2, H, 3, NP, NR, 1);
    for (int q = 0; q < NP; q++) {
        const size_t xoff = (size_t)(p + q) * panel, u0 = (size_t)(p + q) * RNX_VW;
        for (int r = 0; r < NR; r++) {
            if (!active[r]) continue;
            vf n = vtanh(vload(xp[r] + xoff + 2 * RNX_VW) + acc[q][r][0]);
            vf z = vload(h_out[r] + u0);
            vstore(h_out[r] + u0, n + z * (vload(h_in[r] + u0) - n));
        }
    }
}

RNX_INLINE void step_tile(const int cell, float *const *h_out, float *const *c,
                          const float *const *h_in, const rnx_qrow *qh, const float *const *xp,
                          const unsigned char *active, float *const *tape, const rnx_packed *w,
                          int H, int npanels, int p0, int p1, const int NR, const int NV,
                          const int TAPE, const int Q8) {
    int p = p0;
    if (RNX_PAIR_PANELS(NR, NV))
        for (; p + 1 < p1; p += 2)
            step_panels(cell, h_out, c, h_in, qh, xp, active, tape, w, H, npanels, p, 2, NR, NV,
                        TAPE, Q8);
    for (; p < p1; p++)
        step_panels(cell, h_out, c, h_in, qh, xp, active, tape, w, H, npanels, p, 1, NR, NV,
                    TAPE, Q8);
    if (cell != RNX_CELL_GRU_RESET_BEFORE) return;
    const float *const *rh = (const float *const *)c;
    /* at bf16, r*h rounded in place (the panels are all this thread's: forward.c) */
    rnx_qrow rh16[RNX_MR] = {{0}};
    for (int r = 0; w->wh16 && r < NR; r++) round_bf16(&rh16[r], (uint8_t *)c[r], c[r], H);
    p = p0;
    if (RNX_PAIR_PANELS(NR, 1))
        for (; p + 1 < p1; p += 2)
            gru_n_panels(h_out, rh, rh16, h_in, xp, active, w, H, p, 2, NR);
    for (; p < p1; p++) gru_n_panels(h_out, rh, rh16, h_in, xp, active, w, H, p, 1, NR);
}

/* ---------------------------------------------------------------------------------------------
 * Entry points: a switch turns the run-time row count, cell and vector count into constants.
 * ------------------------------------------------------------------------------------------- */

#define RNX_ROWS_SWITCH(CALL)                                                                     \
    switch (nrows) {                                                                              \
    case 1: CALL(1); break;                                                                       \
    case 2: CALL(2); break;                                                                       \
    case 3: CALL(3); break;                                                                       \
    RNX_ROWS_MORE(CALL)                                                                           \
    default: break;                                                                               \
    }
#if RNX_MR == 3
#define RNX_ROWS_MORE(CALL)
#elif RNX_MR == 4
#define RNX_ROWS_MORE(CALL) case 4: CALL(4); break;
#elif RNX_MR == 6
#define RNX_ROWS_MORE(CALL) case 4: CALL(4); break; case 5: CALL(5); break; case 6: CALL(6); break;
#else
#error "RNX_MR must be 3, 4 or 6"
#endif

static void RNX_K(project)(float *const *out, const float *const *a, const rnx_qrow *qa,
                           const rnx_packed *w, int nv, int p0, int p1, int nrows) {
#define RNX_PROJECT(NR)                                                                           \
    if (w->x8.w && nv == 3) project_tile(out, a, qa, w, p0, p1, NR, 3, 1);                        \
    else if (w->x8.w) project_tile(out, a, qa, w, p0, p1, NR, 4, 1);                              \
    else if (nv == 3) project_tile(out, a, qa, w, p0, p1, NR, 3, 0);                              \
    else project_tile(out, a, qa, w, p0, p1, NR, 4, 0)
    RNX_ROWS_SWITCH(RNX_PROJECT)
#undef RNX_PROJECT
}

static void RNX_K(step)(int cell, float *const *h_out, float *const *c, const float *const *h_in,
                        const rnx_qrow *qh, const float *const *xp, const unsigned char *active,
                        const rnx_packed *w, int H, int p0, int p1, int nrows) {
#define RNX_STEP_AT(NR, Q8)                                                                       \
    switch (cell) {                                                                               \
    case RNX_CELL_LSTM: step_tile(RNX_CELL_LSTM, h_out, c, h_in, qh, xp, active, NULL, w, H, 0, p0, p1, NR, 4, 0, Q8); break; \
    case RNX_CELL_GRU: step_tile(RNX_CELL_GRU, h_out, c, h_in, qh, xp, active, NULL, w, H, 0, p0, p1, NR, 3, 0, Q8); break;   \
    case RNX_CELL_RNN_TANH: step_tile(RNX_CELL_RNN_TANH, h_out, c, h_in, qh, xp, active, NULL, w, H, 0, p0, p1, NR, 4, 0, Q8); break; \
    case RNX_CELL_GRU_RESET_BEFORE:                                                               \
        step_tile(RNX_CELL_GRU_RESET_BEFORE, h_out, c, h_in, qh, xp, active, NULL, w, H, 0, p0, p1, NR, 3, 0, 0); \
        break;                                                                                    \
    default: step_tile(RNX_CELL_RNN_RELU, h_out, c, h_in, qh, xp, active, NULL, w, H, 0, p0, p1, NR, 4, 0, Q8); break; \
    }
    /* int8 and float weights in separate code: inlined into one, the float product lost its
     * registers (measured: LSTM B=64 H=512 fp32 1.5x slower) */
#define RNX_STEP(NR)                                                                              \
    if (w->h8.w) {                                                                                \
        RNX_STEP_AT(NR, 1)                                                                        \
    } else {                                                                                      \
        RNX_STEP_AT(NR, 0)                                                                        \
    }
    RNX_ROWS_SWITCH(RNX_STEP)
#undef RNX_STEP
#undef RNX_STEP_AT
}

/* step in training mode: the same step, which also stores each active row's gates in tape[r]
 * (tape[r] may be xp[r]), over all npanels panels. A separate entry point, so that the inference
 * step's code stays as it was (measured: folding the tape into it cost the GRU 8%). */
static void RNX_K(step_train)(int cell, float *const *h_out, float *const *c,
                              const float *const *h_in, const float *const *xp,
                              const unsigned char *active, float *const *tape,
                              const rnx_packed *w, int H, int npanels, int nrows) {
#define RNX_STEP(NR)                                                                              \
    switch (cell) {                                                                               \
    case RNX_CELL_LSTM: step_tile(RNX_CELL_LSTM, h_out, c, h_in, NULL, xp, active, tape, w, H, npanels, 0, npanels, NR, 4, 1, 0); break; \
    case RNX_CELL_GRU: step_tile(RNX_CELL_GRU, h_out, c, h_in, NULL, xp, active, tape, w, H, npanels, 0, npanels, NR, 3, 1, 0); break;   \
    case RNX_CELL_RNN_TANH: step_tile(RNX_CELL_RNN_TANH, h_out, c, h_in, NULL, xp, active, tape, w, H, npanels, 0, npanels, NR, 4, 1, 0); break; \
    default: step_tile(RNX_CELL_RNN_RELU, h_out, c, h_in, NULL, xp, active, tape, w, H, npanels, 0, npanels, NR, 4, 1, 0); break; \
    }
    RNX_ROWS_SWITCH(RNX_STEP)
#undef RNX_STEP
}

static void RNX_K(activate)(rnx_function f, float *out, const float *in, size_t n) {
    for (size_t i = 0; i < n; i += RNX_VW) {
        const size_t m = n - i < RNX_VW ? n - i : RNX_VW;
        const vf v = vload_part(in + i, m), a = f == RNX_FN_SIGMOID ? vsigmoid(v) : vtanh(v);
        memcpy(out + i, &a, m * sizeof(float));
    }
}

/* a's K floats quantized for an int8 product (rnx_precision's int8; rnx_qrow). Rounding adds and
 * takes away 1.5 * 2^23, which leaves |v| < 2^22 rounded to the nearest integer, ties to even. */
RNX_INLINE void quantize(rnx_qrow *out, uint8_t *q, const float *a, int K) {
    typedef uint8_t vq __attribute__((vector_size(RNX_VW), may_alias));
    vf lo = vsplat(0.0f), hi = vsplat(0.0f), bad = vsplat(0.0f);
    for (int k = 0; k < K; k += RNX_VW) {
        const vf v = vload_part(a + k, (size_t)(K - k));
        lo = vselect(v < lo, v, lo);
        hi = vselect(v > hi, v, hi);
        bad += v - v; /* stays zero, or NaN from a NaN or an infinity on */
    }
    /* the lanes' least, greatest and sum in lane 0, by halving (log2(RNX_VW) steps) */
#pragma GCC unroll 4
    for (int n = RNX_VW / 2; n > 0; n /= 2) {
        const vf lo2 = vrotate(lo, n), hi2 = vrotate(hi, n);
        lo = vselect(lo2 < lo, lo2, lo);
        hi = vselect(hi2 > hi, hi2, hi);
        bad += vrotate(bad, n);
    }
    const float low = lo[0], high = hi[0];
    const size_t K4 = RNX_K4(K);
    if (bad[0] != 0.0f) { /* NaN outputs, through the scale */
        memset(q, 0, K4);
        *out = (rnx_qrow){q, __builtin_nanf(""), 0};
        return;
    }
    float scale = (high - low) / 255.0f;
    if (scale == 0.0f) scale = 1.0f;
    const float shifter = 12582912.0f;
    float zero = (-low / scale + shifter) - shifter;
    zero = zero > 255.0f ? 255.0f : zero;
    const vf s = vsplat(scale), z = vsplat(zero), top = vsplat(255.0f);
    for (size_t k = 0; k < K4; k += RNX_VW) {
        vf v = ((vload_part(a + k, (size_t)K - k) / s + shifter) - shifter) + z;
        v = vselect(v < 0.0f, vsplat(0.0f), v);
        v = vselect(v > top, top, v);
        const vq bytes = __builtin_convertvector(__builtin_convertvector(v, vi), vq);
        memcpy(q + k, &bytes, K4 - k < RNX_VW ? K4 - k : RNX_VW);
    }
    *out = (rnx_qrow){q, scale, (int32_t)zero};
}

static void RNX_K(prepare)(rnx_qrow *out, uint8_t *buf, const float *a, int K, int precision) {
    if (precision == RNX_PRECISION_INT8) quantize(out, buf, a, K);
    else round_bf16(out, buf, a, K);
}

/* The training kernels (backward pass) share this file's vector maths and products. */
#include "kernel_train_impl.h"

const rnx_kernels RNX_K(rnx_kernels) = {
    .isa = RNX_ISA_ID, .vw = RNX_VW, .mr = RNX_MR, .project = RNX_K(project), .step = RNX_K(step),
    .activate = RNX_K(activate), .prepare = RNX_K(prepare), .step_train = RNX_K(step_train),
    .matmul = RNX_K(matmul), .cell_grads = RNX_K(cell_grads),
};
