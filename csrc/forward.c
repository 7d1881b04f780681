/* forward.c: the forward pass. Each thread carries a slice of the batch through every layer and
 * time step; time is cut into chunks whose input projection is one tiled product, followed by
 * one fused kernel call per step and row tile. */
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Input projections of one chunk are kept under this many bytes (per thread). */
#define RNX_CHUNK_BYTES (256 * 1024)
#define RNX_MAX_CHUNK 64

/* A (rows, T, width) sequence somewhere in memory: row r at step t starts at
 * base + r*row_stride + (t - t_origin)*t_stride. Input views are only read. */
typedef struct seq_view {
    float *base;
    ptrdiff_t row_stride, t_stride;
    int t_origin;
} seq_view;

static float *view_row(seq_view v, int r, int t) {
    return v.base + r * v.row_stride + (ptrdiff_t)(t - v.t_origin) * v.t_stride;
}

typedef struct forward_args {
    float *y, *h_n, *c_n;
    const float *x, *h0, *c0;
    const int32_t *lengths;
    int B, T;
} forward_args;

/* One thread's scratch memory, sized by (Bs, H, chunk) and, only for stacks of bidirectional
 * layers, by T. */
typedef struct workspace {
    int Bs, chunk, xp_width;
    float *xp;     /* (chunk, Bs, xp_width): input projections of one chunk, panel layout */
    float *state;  /* (L*D, 3, Bs, Hp): h, next h, c of each layer and direction */
    int *cur;      /* (L*D): which of the two h buffers holds the current state */
    float *mid[2]; /* inner layers' outputs: (chunk, Bs, H) if D == 1, (T, Bs, 2H) if D == 2 */
    int32_t *len;  /* (Bs) */
    void *block;
} workspace;

/* ---------------------------------------------------------------------------------------------
 * Workspace
 * ------------------------------------------------------------------------------------------- */

static int grow(size_t *total, size_t *offset, size_t count, size_t elem) {
    size_t bytes;
    if (__builtin_mul_overflow(count, elem, &bytes) ||
        __builtin_add_overflow(bytes, (size_t)RNX_ALIGN - 1, &bytes))
        return 0;
    bytes = bytes / RNX_ALIGN * RNX_ALIGN;
    *offset = *total;
    return !__builtin_add_overflow(*total, bytes, total);
}

static rnx_status workspace_create(workspace *ws, const rnx_model *m, int Bs, int T) {
    const rnx_config *c = &m->config;
    const int L = c->num_layers, D = m->directions, H = c->hidden_size, Hp = m->hidden_padded;
    memset(ws, 0, sizeof *ws);
    ws->Bs = Bs;
    ws->xp_width = m->npanels * m->nv * m->kernels->vw;
    size_t per_step = (size_t)Bs * ws->xp_width * sizeof(float);
    size_t chunk = RNX_CHUNK_BYTES / per_step;
    if (chunk < 1) chunk = 1;
    if (chunk > RNX_MAX_CHUNK) chunk = RNX_MAX_CHUNK;
    if (chunk > (size_t)T) chunk = (size_t)T;
    ws->chunk = (int)chunk;

    size_t total = 0, o_xp, o_state, o_cur, o_mid0 = 0, o_mid1 = 0, o_len, mid = 0;
    if (L > 1) mid = D == 1 ? chunk * Bs * (size_t)H : (size_t)T * Bs * 2 * (size_t)H;
    if (!grow(&total, &o_xp, chunk * Bs * (size_t)ws->xp_width, sizeof(float)) ||
        !grow(&total, &o_state, (size_t)L * D * 3 * Bs * (size_t)Hp, sizeof(float)) ||
        !grow(&total, &o_cur, (size_t)L * D, sizeof(int)) ||
        !grow(&total, &o_mid0, mid, sizeof(float)) || !grow(&total, &o_mid1, mid, sizeof(float)) ||
        !grow(&total, &o_len, (size_t)Bs, sizeof(int32_t)))
        return RNX_ERR_OVERFLOW;
    if (posix_memalign(&ws->block, RNX_ALIGN, total) != 0) return RNX_ERR_OUT_OF_MEMORY;
    char *b = ws->block;
    ws->xp = (float *)(b + o_xp);
    ws->state = (float *)(b + o_state);
    ws->cur = (int *)(b + o_cur);
    ws->mid[0] = (float *)(b + o_mid0);
    ws->mid[1] = (float *)(b + o_mid1);
    ws->len = (int32_t *)(b + o_len);
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * State in and out: user arrays are (L*D, B, H), the workspace's rows are Hp wide, zero-padded.
 * ------------------------------------------------------------------------------------------- */

static float *state_h(const rnx_model *m, const workspace *ws, int ld, int which) {
    return ws->state + ((size_t)ld * 3 + which) * ws->Bs * m->hidden_padded;
}

static void load_states(const rnx_model *m, workspace *ws, const forward_args *a, int b0) {
    const int LD = m->config.num_layers * m->directions, H = m->config.hidden_size;
    memset(ws->state, 0, (size_t)LD * 3 * ws->Bs * m->hidden_padded * sizeof(float));
    for (int ld = 0; ld < LD; ld++) {
        ws->cur[ld] = 0;
        for (int r = 0; r < ws->Bs; r++) {
            const size_t src = ((size_t)ld * a->B + b0 + r) * H, dst = (size_t)r * m->hidden_padded;
            if (a->h0) memcpy(state_h(m, ws, ld, 0) + dst, a->h0 + src, H * sizeof(float));
            if (a->c0 && m->config.cell == RNX_CELL_LSTM)
                memcpy(state_h(m, ws, ld, 2) + dst, a->c0 + src, H * sizeof(float));
        }
    }
}

static void store_states(const rnx_model *m, const workspace *ws, const forward_args *a, int b0) {
    const int LD = m->config.num_layers * m->directions, H = m->config.hidden_size;
    for (int ld = 0; ld < LD; ld++)
        for (int r = 0; r < ws->Bs; r++) {
            const size_t dst = ((size_t)ld * a->B + b0 + r) * H, src = (size_t)r * m->hidden_padded;
            if (a->h_n) memcpy(a->h_n + dst, state_h(m, ws, ld, ws->cur[ld]) + src, H * sizeof(float));
            if (a->c_n && m->config.cell == RNX_CELL_LSTM)
                memcpy(a->c_n + dst, state_h(m, ws, ld, 2) + src, H * sizeof(float));
        }
}

/* ---------------------------------------------------------------------------------------------
 * One layer and direction over the steps [t0, t1)
 * ------------------------------------------------------------------------------------------- */

static void run_chunk(const rnx_model *m, workspace *ws, int ld, int reverse, int t0, int t1,
                      seq_view in, seq_view out) {
    const rnx_kernels *k = m->kernels;
    const rnx_packed *w = &m->packed[ld];
    const int Bs = ws->Bs, mr = k->mr, H = m->config.hidden_size, Hp = m->hidden_padded;
    const float *a[RNX_MAX_MR];
    float *o[RNX_MAX_MR], *c[RNX_MAX_MR];
    const float *h_in[RNX_MAX_MR], *xp[RNX_MAX_MR];
    unsigned char active[RNX_MAX_MR];

    /* input projections of all (step, row) pairs of the chunk, mr rows at a time */
    const int nq = (t1 - t0) * Bs;
    for (int q0 = 0; q0 < nq; q0 += mr) {
        const int nr = nq - q0 < mr ? nq - q0 : mr;
        for (int i = 0; i < nr; i++) {
            const int q = q0 + i;
            a[i] = view_row(in, q % Bs, t0 + q / Bs);
            o[i] = ws->xp + (size_t)q * ws->xp_width;
        }
        k->project(o, a, w, m->nv, m->npanels, nr);
    }

    float *cell = state_h(m, ws, ld, 2);
    for (int s = 0; s < t1 - t0; s++) {
        const int t = reverse ? t1 - 1 - s : t0 + s;
        float *h_cur = state_h(m, ws, ld, ws->cur[ld]), *h_next = state_h(m, ws, ld, 1 - ws->cur[ld]);
        for (int r0 = 0; r0 < Bs; r0 += mr) {
            const int nr = Bs - r0 < mr ? Bs - r0 : mr;
            for (int i = 0; i < nr; i++) {
                const size_t row = (size_t)(r0 + i) * Hp;
                h_in[i] = h_cur + row;
                o[i] = h_next + row;
                c[i] = cell + row;
                xp[i] = ws->xp + ((size_t)(t - t0) * Bs + r0 + i) * ws->xp_width;
                active[i] = t < ws->len[r0 + i];
            }
            k->step(m->config.cell, o, c, h_in, xp, active, w, H, m->npanels, nr);
        }
        ws->cur[ld] = 1 - ws->cur[ld];
        if (!out.base) continue;
        for (int r = 0; r < Bs; r++) {
            float *dst = view_row(out, r, t);
            if (t < ws->len[r]) memcpy(dst, h_next + (size_t)r * Hp, H * sizeof(float));
            else memset(dst, 0, H * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * One thread's slice of the batch, rows [b0, b1)
 * ------------------------------------------------------------------------------------------- */

static rnx_status run_slice(const rnx_model *m, const forward_args *a, int b0, int b1) {
    const int L = m->config.num_layers, D = m->directions, H = m->config.hidden_size, T = a->T;
    const int Bs = b1 - b0;
    workspace ws;
    rnx_status s = workspace_create(&ws, m, Bs, T);
    if (s != RNX_OK) return s;
    for (int r = 0; r < Bs; r++) ws.len[r] = a->lengths ? a->lengths[b0 + r] : T;
    load_states(m, &ws, a, b0);

    const int I = m->config.input_size;
    const seq_view x = {(float *)a->x + (size_t)b0 * T * I, (ptrdiff_t)T * I, I, 0};
    seq_view y = {NULL, (ptrdiff_t)T * D * H, (ptrdiff_t)D * H, 0};
    if (a->y) y.base = a->y + (size_t)b0 * T * D * H;

    if (D == 1) {
        /* chunk by chunk through the whole stack: inner outputs are kept for one chunk only */
        for (int t0 = 0; t0 < T; t0 += ws.chunk) {
            const int t1 = t0 + ws.chunk < T ? t0 + ws.chunk : T;
            for (int l = 0; l < L; l++) {
                seq_view in = x, out = y;
                if (l > 0) in = (seq_view){ws.mid[(l - 1) & 1], H, (ptrdiff_t)Bs * H, t0};
                if (l < L - 1) out = (seq_view){ws.mid[l & 1], H, (ptrdiff_t)Bs * H, t0};
                run_chunk(m, &ws, l, 0, t0, t1, in, out);
            }
        }
    } else {
        /* layer by layer: the reverse direction needs the whole sequence below it */
        for (int l = 0; l < L; l++)
            for (int d = 0; d < D; d++) {
                seq_view in = x, out = y;
                if (l > 0) in = (seq_view){ws.mid[(l - 1) & 1], 2 * H, (ptrdiff_t)Bs * 2 * H, 0};
                if (l < L - 1) out = (seq_view){ws.mid[l & 1], 2 * H, (ptrdiff_t)Bs * 2 * H, 0};
                if (out.base) out.base += (size_t)d * H;
                const int nchunks = (T + ws.chunk - 1) / ws.chunk;
                for (int i = 0; i < nchunks; i++) {
                    const int ci = d ? nchunks - 1 - i : i;
                    const int t0 = ci * ws.chunk, t1 = t0 + ws.chunk < T ? t0 + ws.chunk : T;
                    run_chunk(m, &ws, l * D + d, d, t0, t1, in, out);
                }
            }
    }
    store_states(m, &ws, a, b0);
    free(ws.block);
    return RNX_OK;
}

rnx_status rnx_forward(const rnx_model *model, float *y, float *h_n, float *c_n, const float *x,
                       const float *h0, const float *c0, const int32_t *lengths, int B, int T,
                       int n_threads) {
    if (!model || !x) return RNX_ERR_NULL_ARGUMENT;
    if (B < 1 || T < 1) return RNX_ERR_BAD_ARGUMENT;
    if (lengths)
        for (int b = 0; b < B; b++)
            if (lengths[b] < 1 || lengths[b] > T) return RNX_ERR_BAD_ARGUMENT;
    const forward_args args = {y, h_n, c_n, x, h0, c0, lengths, B, T};
    int threads = n_threads > 0 ? n_threads : rnx_max_threads();
    if (threads > B) threads = B;
    rnx_status status = RNX_OK;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        const int i = omp_get_thread_num(), n = omp_get_num_threads();
        const int b0 = (int)((long long)B * i / n), b1 = (int)((long long)B * (i + 1) / n);
        rnx_status s = b1 > b0 ? run_slice(model, &args, b0, b1) : RNX_OK;
        if (s != RNX_OK) {
#pragma omp critical(rnx_forward_status)
            status = s;
        }
    }
#else
    (void)threads;
    status = run_slice(model, &args, 0, B);
#endif
    return status;
}
