/* forward.c: the forward pass. Time is cut into chunks: the input projection of a chunk is one
 * tiled product, then one fused kernel call per step and row tile. Batches that can feed the
 * threads are split into slices, one per thread, carried through every layer and step without
 * synchronisation; smaller batches are shared by a team of threads that split each step's panels
 * and meet at one barrier per step. */
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Input projections of one chunk are kept under this many bytes (per slice). */
#define RNX_CHUNK_BYTES (256 * 1024)
#define RNX_MAX_CHUNK 64
/* A team splits a step only when each thread gets at least this many multiply-adds of the
 * recurrent product per step; below it the barrier costs about what the split saves, and more
 * when another process shares the cores. Measured on 2 cores (Zen 4), B=1, T=100, against one
 * thread: LSTM H=32 (2K a thread) 0.74x, LSTM H=64 (8K) 1.33x quiet, RNN H=128 (8K) 1.00x quiet
 * and 0.5x under load, GRU H=128 (24K) 1.5x, LSTM H=256 (64K) 2.1x. */
#define RNX_TEAM_MIN_MACS (16 * 1024)

/* Panels are taken in blocks whose weights stay in L2 (1 MB on Zen 4, 2 MB on Sapphire Rapids)
 * while every row tile of the batch uses them; without blocks a large W_hh (LSTM H=512: 4 MB)
 * would stream from L3 once per row tile. */
#define RNX_PANEL_BLOCK_BYTES (256 * 1024)

static float *view_row(rnx_seq_view v, int r, int t) {
    return v.base + r * v.row_stride + (ptrdiff_t)(t - v.t_origin) * v.t_stride;
}

static void team_barrier(rnx_team team) {
    if (team.size > 1) {
#ifdef _OPENMP
#pragma omp barrier
#endif
    }
}

/* ---------------------------------------------------------------------------------------------
 * Workspace and states
 * ------------------------------------------------------------------------------------------- */

typedef struct workspace_plan {
    rnx_workspace *ws;
    const rnx_model *model;
    size_t mid; /* floats of each inner-layer buffer */
} workspace_plan;

static void workspace_layout(rnx_arena *a, void *what) {
    const workspace_plan *p = what;
    rnx_workspace *ws = p->ws;
    const rnx_model *m = p->model;
    const size_t Bs = (size_t)ws->Bs, LD = (size_t)m->config.num_layers * m->directions;
    ws->xp = rnx_arena_take(a, (size_t)ws->chunk * Bs * ws->xp_width, sizeof(float));
    ws->state = rnx_arena_take(a, LD * 3 * Bs * m->hidden_padded, sizeof(float));
    ws->mid[0] = rnx_arena_take(a, p->mid, sizeof(float));
    ws->mid[1] = rnx_arena_take(a, p->mid, sizeof(float));
    ws->len = rnx_arena_take(a, Bs, sizeof(int32_t));
}

rnx_status rnx_workspace_create(rnx_workspace *ws, const rnx_model *m, int Bs, int T) {
    const rnx_config *c = &m->config;
    const int L = c->num_layers, D = m->directions, H = c->hidden_size;
    memset(ws, 0, sizeof *ws);
    ws->Bs = Bs;
    ws->xp_width = m->npanels * m->nv * m->kernels->vw;
    size_t chunk = RNX_CHUNK_BYTES / ((size_t)Bs * ws->xp_width * sizeof(float));
    if (chunk < 1) chunk = 1;
    if (chunk > RNX_MAX_CHUNK) chunk = RNX_MAX_CHUNK;
    if (chunk > (size_t)T) chunk = (size_t)T;
    ws->chunk = (int)chunk;
    workspace_plan plan = {ws, m, 0};
    if (L > 1) plan.mid = D == 1 ? chunk * Bs * (size_t)H : (size_t)T * Bs * 2 * (size_t)H;
    return rnx_arena_build(&ws->block, workspace_layout, &plan);
}

void rnx_workspace_free(rnx_workspace *ws) {
    free(ws->block);
    ws->block = NULL;
}

/* Buffer `which` (0, 1: h; 2: c) of layer-direction ld; rows are Hp wide, zero-padded. */
static float *state_buffer(const rnx_model *m, const rnx_workspace *ws, int ld, int which) {
    return ws->state + ((size_t)ld * 3 + which) * ws->Bs * m->hidden_padded;
}

void rnx_load_states(const rnx_model *m, rnx_workspace *ws, const float *h0, const float *c0,
                     int B, int b0) {
    const int LD = m->config.num_layers * m->directions, H = m->config.hidden_size;
    memset(ws->state, 0, (size_t)LD * 3 * ws->Bs * m->hidden_padded * sizeof(float));
    ws->parity = 0;
    for (int ld = 0; ld < LD; ld++)
        for (int r = 0; r < ws->Bs; r++) {
            const size_t src = ((size_t)ld * B + b0 + r) * H, dst = (size_t)r * m->hidden_padded;
            if (h0) memcpy(state_buffer(m, ws, ld, 0) + dst, h0 + src, H * sizeof(float));
            if (c0 && m->config.cell == RNX_CELL_LSTM)
                memcpy(state_buffer(m, ws, ld, 2) + dst, c0 + src, H * sizeof(float));
        }
}

void rnx_store_states(const rnx_model *m, const rnx_workspace *ws, float *h, float *c, int B,
                      int b0, int steps) {
    const int LD = m->config.num_layers * m->directions, H = m->config.hidden_size;
    const int cur = ws->parity ^ (steps & 1);
    for (int ld = 0; ld < LD; ld++)
        for (int r = 0; r < ws->Bs; r++) {
            const size_t dst = ((size_t)ld * B + b0 + r) * H, src = (size_t)r * m->hidden_padded;
            if (h) memcpy(h + dst, state_buffer(m, ws, ld, cur) + src, H * sizeof(float));
            if (c && m->config.cell == RNX_CELL_LSTM)
                memcpy(c + dst, state_buffer(m, ws, ld, 2) + src, H * sizeof(float));
        }
}

/* Panels per block for a product over K inputs. */
static int panel_block(const rnx_model *m, int K) {
    const size_t per_panel = (size_t)K * m->nv * m->kernels->vw * sizeof(float);
    const size_t n = RNX_PANEL_BLOCK_BYTES / per_panel;
    return n < 1 ? 1 : n > (size_t)m->npanels ? m->npanels : (int)n;
}

/* ---------------------------------------------------------------------------------------------
 * One layer and direction over the steps [t0, t1), `before` steps after the states were loaded
 * ------------------------------------------------------------------------------------------- */

static void run_chunk(const rnx_model *m, rnx_workspace *ws, rnx_team team, int ld, int reverse,
                      int t0, int t1, int before, rnx_seq_view in, rnx_seq_view out) {
    const rnx_kernels *k = m->kernels;
    const rnx_packed *w = &m->packed[ld];
    const int Bs = ws->Bs, mr = k->mr, H = m->config.hidden_size, Hp = m->hidden_padded;
    const float *a[RNX_MAX_MR], *h_in[RNX_MAX_MR], *xp[RNX_MAX_MR];
    float *o[RNX_MAX_MR], *c[RNX_MAX_MR];
    unsigned char active[RNX_MAX_MR];

    /* this thread's panels, and the hidden units [u0, u1) they hold */
    const int p0 = (int)((long long)m->npanels * team.id / team.size);
    const int p1 = (int)((long long)m->npanels * (team.id + 1) / team.size);
    const int u0 = p0 * m->units_per_panel;
    const int u1 = p1 * m->units_per_panel < H ? p1 * m->units_per_panel : H;

    /* input projections of all (step, row) pairs of the chunk, mr rows at a time */
    const int nq = (t1 - t0) * Bs, px = panel_block(m, w->in_size);
    for (int b0 = p0; b0 < p1; b0 += px)
        for (int q0 = 0; q0 < nq; q0 += mr) {
            const int nr = nq - q0 < mr ? nq - q0 : mr;
            for (int i = 0; i < nr; i++) {
                const int q = q0 + i;
                a[i] = view_row(in, q % Bs, t0 + q / Bs);
                o[i] = ws->xp + (size_t)q * ws->xp_width;
            }
            k->project(o, a, w, m->nv, b0, b0 + px < p1 ? b0 + px : p1, nr);
        }

    /* the GRU with the reset before the product needs r*h of all its panels before any n */
    const int ph = m->config.cell == RNX_CELL_GRU_RESET_BEFORE ? p1 - p0 : panel_block(m, H);
    float *cell = state_buffer(m, ws, ld, 2);
    int cur = ws->parity ^ (before & 1);
    for (int s = 0; s < t1 - t0; s++, cur ^= 1) {
        const int t = reverse ? t1 - 1 - s : t0 + s;
        float *h_cur = state_buffer(m, ws, ld, cur), *h_next = state_buffer(m, ws, ld, cur ^ 1);
        for (int b0 = p0; b0 < p1; b0 += ph)
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
                k->step(m->config.cell, o, c, h_in, xp, active, w, H, b0,
                        b0 + ph < p1 ? b0 + ph : p1, nr);
            }
        if (out.base && u1 > u0)
            for (int r = 0; r < Bs; r++) {
                float *dst = view_row(out, r, t) + u0;
                if (t < ws->len[r]) memcpy(dst, h_next + (size_t)r * Hp + u0, (u1 - u0) * sizeof(float));
                else memset(dst, 0, (u1 - u0) * sizeof(float));
            }
        team_barrier(team);
    }
}

void rnx_run_stack(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view x,
                   rnx_seq_view y, int T) {
    const int L = m->config.num_layers, D = m->directions, H = m->config.hidden_size;
    const int Bs = ws->Bs;
    if (D == 1) {
        /* chunk by chunk through the whole stack: inner outputs are kept for one chunk only */
        for (int t0 = 0; t0 < T; t0 += ws->chunk) {
            const int t1 = t0 + ws->chunk < T ? t0 + ws->chunk : T;
            for (int l = 0; l < L; l++) {
                rnx_seq_view in = x, out = y;
                if (l > 0) in = (rnx_seq_view){ws->mid[(l - 1) & 1], H, (ptrdiff_t)Bs * H, t0};
                if (l < L - 1) out = (rnx_seq_view){ws->mid[l & 1], H, (ptrdiff_t)Bs * H, t0};
                run_chunk(m, ws, team, l, 0, t0, t1, t0, in, out);
            }
        }
        return;
    }
    /* layer by layer: the reverse direction needs the whole sequence below it */
    const int nchunks = (T + ws->chunk - 1) / ws->chunk;
    for (int l = 0; l < L; l++)
        for (int d = 0; d < D; d++) {
            rnx_seq_view in = x, out = y;
            if (l > 0) in = (rnx_seq_view){ws->mid[(l - 1) & 1], 2 * H, (ptrdiff_t)Bs * 2 * H, 0};
            if (l < L - 1) out = (rnx_seq_view){ws->mid[l & 1], 2 * H, (ptrdiff_t)Bs * 2 * H, 0};
            if (out.base) out.base += (size_t)d * H;
            for (int i = 0; i < nchunks; i++) {
                const int ci = d ? nchunks - 1 - i : i;
                const int t0 = ci * ws->chunk, t1 = t0 + ws->chunk < T ? t0 + ws->chunk : T;
                run_chunk(m, ws, team, l * D + d, d, t0, t1, d ? T - t1 : t0, in, out);
            }
        }
}

/* ---------------------------------------------------------------------------------------------
 * rnx_forward
 * ------------------------------------------------------------------------------------------- */

typedef struct forward_args {
    float *y, *h_n, *c_n;
    const float *x, *h0, *c0;
    const int32_t *lengths;
    int B, T;
} forward_args;

/* Rows [b0, b1) of the batch, by this thread alone (threads == 1) or by a team of threads. */
static rnx_status run_rows(const rnx_model *m, const forward_args *a, int b0, int b1, int threads) {
    const int D = m->directions, H = m->config.hidden_size, I = m->config.input_size, T = a->T;
    rnx_workspace ws;
    rnx_status s = rnx_workspace_create(&ws, m, b1 - b0, T);
    if (s != RNX_OK) return s;
    for (int r = 0; r < ws.Bs; r++) ws.len[r] = a->lengths ? a->lengths[b0 + r] : T;
    rnx_load_states(m, &ws, a->h0, a->c0, a->B, b0);
    const rnx_seq_view x = {(float *)a->x + (size_t)b0 * T * I, (ptrdiff_t)T * I, I, 0};
    rnx_seq_view y = {NULL, (ptrdiff_t)T * D * H, (ptrdiff_t)D * H, 0};
    if (a->y) y.base = a->y + (size_t)b0 * T * D * H;
    if (threads > 1) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
        rnx_run_stack(m, &ws, (rnx_team){omp_get_thread_num(), omp_get_num_threads()}, x, y, T);
#endif
    } else {
        rnx_run_stack(m, &ws, (rnx_team){0, 1}, x, y, T);
    }
    rnx_store_states(m, &ws, a->h_n, a->c_n, a->B, b0, T);
    rnx_workspace_free(&ws);
    return RNX_OK;
}

/* Threads for a team sharing a batch of B rows: 1 where the split would not pay. */
static int team_threads(const rnx_model *m, int B, int threads) {
    if (m->config.cell == RNX_CELL_GRU_RESET_BEFORE) return 1; /* two passes per step */
    const long long macs = (long long)B * m->npanels * m->nv * m->kernels->vw * m->config.hidden_size;
    while (threads > 1 && (macs / threads < RNX_TEAM_MIN_MACS || m->npanels < threads)) threads--;
    return threads;
}

rnx_status rnx_forward(const rnx_model *model, float *y, float *h_n, float *c_n, const float *x,
                       const float *h0, const float *c0, const int32_t *lengths, int B, int T,
                       int n_threads) {
    if (!model || !x) return RNX_ERR_NULL_ARGUMENT;
    if (B < 1 || T < 1) return RNX_ERR_BAD_ARGUMENT;
    if ((long long)B * T > RNX_MAX_ROWS) return RNX_ERR_OVERFLOW;
    if (lengths)
        for (int b = 0; b < B; b++)
            if (lengths[b] < 1 || lengths[b] > T) return RNX_ERR_BAD_ARGUMENT;
    const forward_args args = {y, h_n, c_n, x, h0, c0, lengths, B, T};
    const int threads = rnx_threads_for_call(n_threads);
    if (threads <= 1) return run_rows(model, &args, 0, B, 1);
    /* fewer than two rows a thread: share the rows, split the panels (measured 1.4-2x on 2
     * threads for B = 2, 3 where slices of 1 and 2 rows leave a thread idle half the time) */
    if (B < 2 * threads) return run_rows(model, &args, 0, B, team_threads(model, B, threads));
    rnx_status status = RNX_OK;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        const int i = omp_get_thread_num(), n = omp_get_num_threads();
        const int b0 = (int)((long long)B * i / n), b1 = (int)((long long)B * (i + 1) / n);
        rnx_status s = b1 > b0 ? run_rows(model, &args, b0, b1, 1) : RNX_OK;
        if (s != RNX_OK) {
#pragma omp critical(rnx_forward_status)
            status = s;
        }
    }
#endif
    return status;
}
