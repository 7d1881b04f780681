/* forward.c: the forward pass over a model's recurrent layers (blocks). Time is cut into chunks:
 * the input projection of a chunk is one tiled product (or, for a folded embedding, a row copy
 * per token), then one fused kernel call per step and row tile. When every layer runs forward
 * the chunks go through the whole stack one after the other, so inner outputs are kept for one
 * chunk only; a reverse or bidirectional layer needs the whole sequence below it, so such a
 * stack goes layer by layer. Batches that can feed the threads are split into slices, one per
 * thread, carried through every layer and step without synchronisation; smaller batches are
 * shared by a team of threads that split each step's panels and meet at one barrier per step. */
#include <stdlib.h>
#include <string.h>
#include "general.h"

/* Input projections of one chunk are kept under this many bytes (per slice). */
#define RNX_CHUNK_BYTES (256 * 1024)
#define RNX_MAX_CHUNK 64
/* A team splits a step only when each thread gets at least this many multiply-adds of the
 * recurrent product per step; below it the barrier costs about what the split saves, and more
 * when another process shares the cores. Measured on 2 cores (Zen 4), B=1, T=100, against one
 * thread: LSTM H=32 (2K a thread) 0.74x, LSTM H=64 (8K) 1.33x quiet, RNN H=128 (8K) 1.00x quiet
 * and 0.5x under load, GRU H=128 (24K) 1.5x, LSTM H=256 (64K) 2.1x. bf16 gains from the same
 * point (GRU H=128 1.05-1.24x, LSTM H=96 (18K) 1.07x). int8's product (64 multiply-adds an
 * instruction) is so short that there the split lost up to 32K (medians of interleaved runs, five
 * to seven rounds over 40 minutes: GRU H=128 (24K) 0.44-0.99x, LSTM H=128 (32K) 0.84-1.09x, RNN
 * H=256 (32K) 0.46-0.99x, single runs down to 0.36x) and was about even or ahead from 62K (GRU
 * H=200 (62K) 1.15x, LSTM H=192 (74K) 0.67-1.32x, GRU H=256 (98K) 0.70-1.33x, RNN H=512 (128K)
 * 1.20x, LSTM H=512 (512K) 2.3x). */
#define RNX_TEAM_MIN_MACS (16 * 1024)
#define RNX_TEAM_MIN_MACS_INT8 (48 * 1024)

/* Panels are taken in blocks whose weights stay in L2 (1 MB on Zen 4, 2 MB on Sapphire Rapids)
 * while every row tile of the batch uses them; without blocks a large W_hh (LSTM H=512: 4 MB)
 * would stream from L3 once per row tile. */
#define RNX_PANEL_BLOCK_BYTES (256 * 1024)

static float *view_row(rnx_seq_view v, int r, int t) {
    return v.base + r * v.row_stride + (ptrdiff_t)(t - v.t_origin) * v.t_stride;
}

/* Every layer runs forward: the chunks can go through the whole stack. */
static int pipelined(const rnx_model *m) {
    for (int k = 0; k < m->n_blocks; k++)
        if (m->blocks[k].directions != 1 || m->blocks[k].reverse) return 0;
    return 1;
}

/* The top layer's outputs are kept in the workspace for the readout (not written to y
 * directly, and not only its final states). */
static int top_in_workspace(const rnx_model *m) {
    return !rnx_top_is_output(m) && m->readout != RNX_READOUT_FINAL;
}

/* ---------------------------------------------------------------------------------------------
 * Workspace and states
 * ------------------------------------------------------------------------------------------- */

typedef struct workspace_plan {
    rnx_workspace *ws;
    const rnx_model *model;
    size_t mid, rev; /* floats of each layer-output buffer, and of the reverse-output buffer */
    size_t plain;    /* floats of the plain path's scratch */
} workspace_plan;

static void workspace_layout(rnx_arena *a, void *what) {
    const workspace_plan *p = what;
    rnx_workspace *ws = p->ws;
    const rnx_model *m = p->model;
    const rnx_block *top = &m->blocks[m->n_blocks - 1];
    const size_t Bs = (size_t)ws->Bs;
    ws->xp = rnx_arena_take(a, (size_t)ws->chunk * Bs * ws->xp_width, sizeof(float));
    ws->state = rnx_arena_take(a, (size_t)m->n_blocks * 2, sizeof(float *));
    for (int k = 0; k < m->n_blocks; k++)
        for (int d = 0; d < m->blocks[k].directions; d++) {
            float *s = rnx_arena_take(a, 3 * Bs * m->blocks[k].hidden_padded, sizeof(float));
            if (ws->state) ws->state[2 * k + d] = s;
        }
    ws->mid[0] = p->mid ? rnx_arena_take(a, p->mid, sizeof(float)) : NULL;
    ws->mid[1] = p->mid ? rnx_arena_take(a, p->mid, sizeof(float)) : NULL;
    ws->rev = p->rev ? rnx_arena_take(a, p->rev, sizeof(float)) : NULL;
    ws->acc = rnx_arena_take(a, Bs * top->width, sizeof(float));
    ws->count = rnx_arena_take(a, Bs, sizeof(int32_t));
    ws->scratch = rnx_arena_take(a, (size_t)ws->team_max * 2 * m->dense_width, sizeof(float));
    ws->len = rnx_arena_take(a, Bs, sizeof(int32_t));
    ws->plain_scratch = p->plain ? rnx_arena_take(a, p->plain, sizeof(float)) : NULL;
    const size_t prepared_rows = (size_t)ws->team_max * (m->kernels->mr + Bs);
    ws->prepared = ws->prepared_width ? rnx_arena_take(a, prepared_rows, ws->prepared_width) : NULL;
    ws->prepared_h = ws->prepared_width ? rnx_arena_take(a, (size_t)ws->team_max * Bs,
                                                         sizeof(rnx_qrow))
                                        : NULL;
}

rnx_status rnx_workspace_create(rnx_workspace *ws, const rnx_model *m, int Bs, int T,
                                int team_max) {
    memset(ws, 0, sizeof *ws);
    ws->Bs = Bs;
    ws->team_max = team_max;
    ws->pipelined = pipelined(m);
    int width = 0, state = 0, merged = 0;
    size_t plain = 0;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        if (b->general && rnx_general_scratch_size(b->general) > plain)
            plain = rnx_general_scratch_size(b->general);
        if (rnx_xp_width(b) > ws->xp_width) ws->xp_width = rnx_xp_width(b);
        if (b->width > width) width = b->width;
        if (b->state_size > state) state = b->state_size;
        merged |= b->directions == 2 && b->merge != RNX_MERGE_CONCAT;
        const int K = b->input_size > b->hidden_size ? b->input_size : b->hidden_size;
        const size_t row = m->info.precision == RNX_PRECISION_INT8   ? RNX_Q8_BYTES(K)
                           : m->info.precision == RNX_PRECISION_BF16 ? RNX_BF16_BYTES(K)
                                                                     : 0;
        if (row > ws->prepared_width) ws->prepared_width = row;
    }
    /* the packed kernels store whole aligned vectors into each xp row: a plain block's G*H
     * (any number) must not make the row stride unaligned for the packed blocks after it */
    const int align = RNX_ALIGN / (int)sizeof(float);
    ws->xp_width = (ws->xp_width + align - 1) / align * align;
    size_t chunk = RNX_CHUNK_BYTES / ((size_t)Bs * ws->xp_width * sizeof(float));
    if (chunk < 1) chunk = 1;
    if (chunk > RNX_MAX_CHUNK) chunk = RNX_MAX_CHUNK;
    if (chunk > (size_t)T) chunk = (size_t)T;
    ws->chunk = (int)chunk;
    const size_t rows = (ws->pipelined ? chunk : (size_t)T) * Bs;
    workspace_plan plan = {ws, m, 0, 0, plain};
    if (m->n_blocks > 1 || top_in_workspace(m)) plan.mid = rows * width;
    if (merged) plan.rev = rows * state;
    return rnx_arena_build(&ws->block, workspace_layout, &plan);
}

void rnx_workspace_free(rnx_workspace *ws) {
    free(ws->block);
    ws->block = NULL;
}

float *rnx_state_buffer(const rnx_model *m, const rnx_workspace *ws, int k, int d, int which) {
    return ws->state[2 * k + d] + (size_t)which * ws->Bs * m->blocks[k].hidden_padded;
}

void rnx_load_states(const rnx_model *m, rnx_workspace *ws, const float *h0, const float *c0,
                     int B, int b0) {
    ws->parity = 0;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        const int Hp = b->hidden_padded, lstm = b->cell == RNX_CELL_LSTM;
        for (int d = 0; d < b->directions; d++) {
            memset(ws->state[2 * k + d], 0, (size_t)3 * ws->Bs * Hp * sizeof(float));
            for (int r = 0; r < ws->Bs; r++) {
                const size_t dst = (size_t)r * Hp;
                if (h0)
                    memcpy(rnx_state_buffer(m, ws, k, d, 0) + dst, h0 + rnx_user_h(b, B, d, b0 + r),
                           (size_t)b->state_size * sizeof(float));
                if (c0 && lstm)
                    memcpy(rnx_state_buffer(m, ws, k, d, 2) + dst, c0 + rnx_user_c(b, B, d, b0 + r),
                           (size_t)b->hidden_size * sizeof(float));
            }
        }
    }
}

void rnx_store_states(const rnx_model *m, const rnx_workspace *ws, float *h, float *c, int B,
                      int b0, int steps) {
    const int cur = ws->parity ^ (steps & 1);
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        const int Hp = b->hidden_padded, lstm = b->cell == RNX_CELL_LSTM;
        for (int d = 0; d < b->directions; d++)
            for (int r = 0; r < ws->Bs; r++) {
                const size_t src = (size_t)r * Hp;
                if (h)
                    memcpy(h + rnx_user_h(b, B, d, b0 + r), rnx_state_buffer(m, ws, k, d, cur) + src,
                           (size_t)b->state_size * sizeof(float));
                if (c && lstm)
                    memcpy(c + rnx_user_c(b, B, d, b0 + r), rnx_state_buffer(m, ws, k, d, 2) + src,
                           (size_t)b->hidden_size * sizeof(float));
            }
    }
}

/* Panels per block for a product over K inputs. int8 weights take one block: each row tile's
 * inputs are then quantized once (the weights are a quarter of float32's bytes). */
static int panel_block(const rnx_block *b, int K) {
    if (b->packed[0].x8.w) return b->npanels;
    const size_t bytes = b->packed[0].wx16 ? sizeof(uint16_t) : sizeof(float);
    const size_t per_panel = (size_t)K * b->nv * b->kernels->vw * bytes;
    const size_t n = RNX_PANEL_BLOCK_BYTES / per_panel;
    return n < 1 ? 1 : n > (size_t)b->npanels ? b->npanels : (int)n;
}

/* ---------------------------------------------------------------------------------------------
 * One block and direction over the steps [t0, t1), `before` steps after the states were loaded
 * ------------------------------------------------------------------------------------------- */

/* Step t's slot in a record: the number of steps the direction took before it. */
static int record_step(const rnx_record *rec, int reverse, int t) {
    return reverse ? rec->T - 1 - t : t;
}

static float *record_row(const rnx_record *rec, int reverse, int t, int r) {
    const size_t s = (size_t)record_step(rec, reverse, t);
    return rec->rows + (s * rec->B + rec->b0 + r) * rec->row_stride;
}

static float *record_h(const rnx_record *rec, int slot, int r) {
    return rec->h + ((size_t)slot * rec->B + rec->b0 + r) * rec->h_stride;
}

/* Where the input projection of (step t, row r) of the chunk [t0, ..) goes: the workspace, or
 * the record's row, where the step kernel then leaves its record. */
static float *xp_row(const rnx_workspace *ws, const rnx_record *rec, int reverse, int t0, int t,
                     int r) {
    if (rec) return record_row(rec, reverse, t, r);
    return ws->xp + ((size_t)(t - t0) * ws->Bs + r) * ws->xp_width;
}

/* The input projections of the chunk's (step, row) pairs for this thread's panels [p0, p1):
 * block 0 of an embedding model reads token rows (or copies folded ones), others `in`. */
static void project_chunk(const rnx_model *m, rnx_workspace *ws, const rnx_record *rec, int k,
                          int d, int reverse, int on_plain, int t0, int t1, int p0, int p1,
                          rnx_seq_view in, uint8_t *prepared) {
    const rnx_block *b = &m->blocks[k];
    const rnx_kernels *kn = b->kernels;
    const rnx_packed *w = &b->packed[d];
    const int Bs = ws->Bs, mr = kn->mr, nq = (t1 - t0) * Bs;
    const int tokens = k == 0 && ws->ids != NULL;
    const float *a[RNX_MAX_MR];
    float *o[RNX_MAX_MR];
    rnx_qrow qa[RNX_MAX_MR];
    if (tokens && m->fold[d]) {
        const size_t panel = (size_t)b->nv * kn->vw, fw = (size_t)rnx_xp_width(b);
        for (int q = 0; q < nq; q++) {
            const int r = q % Bs, t = t0 + q / Bs;
            const int32_t id = ws->ids[(size_t)r * ws->steps + t];
            memcpy(xp_row(ws, rec, reverse, t0, t, r) + p0 * panel,
                   m->fold[d] + id * fw + p0 * panel, (size_t)(p1 - p0) * panel * sizeof(float));
        }
        return;
    }
    /* the plain path has no panels: one pass over all its rows */
    const int px = on_plain ? 1 : panel_block(b, w->in_size), c_end = on_plain ? p0 + 1 : p1;
    for (int c0 = p0; c0 < c_end; c0 += px)
        for (int q0 = 0; q0 < nq; q0 += mr) {
            const int nr = nq - q0 < mr ? nq - q0 : mr;
            for (int i = 0; i < nr; i++) {
                const int q = q0 + i, r = q % Bs, t = t0 + q / Bs;
                a[i] = tokens ? m->embedding + (size_t)ws->ids[(size_t)r * ws->steps + t] * m->embed_dim
                              : view_row(in, r, t);
                o[i] = xp_row(ws, rec, reverse, t0, t, r);
                if (w->x8.w || w->wx16)
                    kn->prepare(&qa[i], prepared + i * ws->prepared_width, a[i], w->in_size,
                                m->info.precision);
            }
            if (on_plain) rnx_general_project(&b->general[d], o, a, ws->plain_scratch, nr);
            else kn->project(o, a, qa, w, b->nv, c0, c0 + px < p1 ? c0 + px : p1, nr);
        }
}

void rnx_run_chunk(const rnx_model *m, rnx_workspace *ws, rnx_team team, int k, int d,
                   int reverse, int t0, int t1, int before, rnx_seq_view in, rnx_seq_view out,
                   const rnx_record *rec) {
    const rnx_block *b = &m->blocks[k];
    const rnx_kernels *kn = b->kernels;
    const rnx_packed *w = &b->packed[d];
    const int Bs = ws->Bs, mr = kn->mr, H = b->hidden_size, Hp = b->hidden_padded;
    /* training takes the plain path wherever the model has one (the reset-before GRU too) */
    const int on_plain = rec ? b->general != NULL : b->plain;
    const int lstm = b->cell == RNX_CELL_LSTM;
    const float *h_in[RNX_MAX_MR], *xp[RNX_MAX_MR];
    float *o[RNX_MAX_MR], *c[RNX_MAX_MR], *x_rows[RNX_MAX_MR];
    unsigned char active[RNX_MAX_MR];

    /* this thread's panels, and the state units [u0, u1) they hold (the plain path: all, as its
     * team is one thread) */
    int p0, p1;
    rnx_team_part(b->npanels, team, &p0, &p1);
    const int u0 = on_plain ? 0 : p0 * b->units_per_panel;
    const int u1 = on_plain ? b->state_size
                            : p1 * b->units_per_panel < H ? p1 * b->units_per_panel : H;

    /* this thread's rows prepared for an int8 or bf16 product: a tile's inputs, then each
     * row's state, prepared once a step for all the step's blocks of panels */
    const size_t width = ws->prepared_width;
    uint8_t *prepared = ws->prepared ? ws->prepared + (size_t)team.id * (mr + Bs) * width : NULL;
    rnx_qrow *qh = ws->prepared_h ? ws->prepared_h + (size_t)team.id * Bs : NULL;
    const int reduced = w->h8.w || w->wh16;
    project_chunk(m, ws, rec, k, d, reverse, on_plain, t0, t1, p0, p1, in, prepared);

    /* the GRU with the reset before the product needs r*h of all its panels before any n; the
     * plain path and the training kernel take all panels in one pass. The plain path steps in
     * place on the next h buffer (it leaves inactive rows as they are, so those keep the copy
     * of the current state). */
    const int one_pass = on_plain || rec;
    const int ph = one_pass ? 1 : b->cell == RNX_CELL_GRU_RESET_BEFORE ? p1 - p0 : panel_block(b, H);
    const int c_end = one_pass ? p0 + 1 : p1;
    float *cell = rnx_state_buffer(m, ws, k, d, 2);
    int cur = ws->parity ^ (before & 1);
    for (int s = 0; s < t1 - t0; s++, cur ^= 1) {
        const int t = reverse ? t1 - 1 - s : t0 + s, slot = rec ? record_step(rec, reverse, t) : 0;
        float *h_cur = rnx_state_buffer(m, ws, k, d, cur);
        float *h_next = rnx_state_buffer(m, ws, k, d, cur ^ 1);
        for (int r = 0; reduced && r < Bs; r++)
            kn->prepare(&qh[r], prepared + (mr + r) * width, h_cur + (size_t)r * Hp, H,
                        m->info.precision);
        for (int c0 = p0; c0 < c_end; c0 += ph)
            for (int r0 = 0; r0 < Bs; r0 += mr) {
                const int nr = Bs - r0 < mr ? Bs - r0 : mr;
                for (int i = 0; i < nr; i++) {
                    const int r = r0 + i;
                    h_in[i] = rec ? record_h(rec, slot, r) : h_cur + (size_t)r * Hp;
                    o[i] = rec ? record_h(rec, slot + 1, r) : h_next + (size_t)r * Hp;
                    c[i] = cell + (size_t)r * Hp;
                    x_rows[i] = xp_row(ws, rec, reverse, t0, t, r);
                    xp[i] = x_rows[i];
                    active[i] = (unsigned char)rnx_step_active(m, ws, r, t);
                    if (on_plain) memcpy(o[i], h_in[i], (size_t)b->state_size * sizeof(float));
                }
                if (on_plain)
                    rnx_general_step(&b->general[d], o, c, xp, active, rec ? x_rows : NULL,
                                     ws->plain_scratch, nr);
                else if (rec)
                    kn->step_train(b->cell, o, c, h_in, xp, active, x_rows, w, H, b->npanels, nr);
                else
                    kn->step(b->cell, o, c, h_in, reduced ? qh + r0 : NULL, xp, active, w, H, c0,
                             c0 + ph < p1 ? c0 + ph : p1, nr);
                if (rec && lstm)
                    for (int i = 0; i < nr; i++) {
                        if (on_plain)
                            memcpy(rec->c + ((size_t)(slot + 1) * rec->B + rec->b0 + r0 + i) * H,
                                   c[i], (size_t)H * sizeof(float));
                        else if (!active[i])
                            memcpy(x_rows[i] + rnx_xp_width(b), c[i], (size_t)Hp * sizeof(float));
                    }
            }
        if (out.base && u1 > u0)
            for (int r = 0; r < Bs; r++) {
                float *dst = view_row(out, r, t) + u0;
                const float *h = rec ? record_h(rec, slot + 1, r) : h_next + (size_t)r * Hp;
                if (rnx_step_active(m, ws, r, t))
                    memcpy(dst, h + u0, (u1 - u0) * sizeof(float));
                else
                    memset(dst, 0, (u1 - u0) * sizeof(float));
            }
        rnx_team_barrier(team);
    }
}

/* out = merge(out, rev) over the steps [0, T) of this member's rows: sum, mul or ave. */
static void merge_directions(const rnx_workspace *ws, rnx_team team, int merge, int S,
                             rnx_seq_view out, rnx_seq_view rev, int T) {
    int r0, r1;
    rnx_team_rows(ws, team, &r0, &r1);
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < T; t++) {
            float *o = view_row(out, r, t);
            const float *v = view_row(rev, r, t);
            for (int u = 0; u < S; u++)
                o[u] = merge == RNX_MERGE_SUM ? o[u] + v[u]
                       : merge == RNX_MERGE_MUL ? o[u] * v[u]
                                                : (o[u] + v[u]) * 0.5f;
        }
    rnx_team_barrier(team);
}

/* A (rows, Bs, width) buffer of the workspace as a view starting at step t_origin. */
static rnx_seq_view buffer_view(float *base, int Bs, int width, int t_origin) {
    return (rnx_seq_view){base, width, (ptrdiff_t)Bs * width, t_origin};
}

void rnx_run_blocks(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view x,
                    rnx_seq_view y, int T, int feed_readout) {
    const int Bs = ws->Bs, last = m->n_blocks - 1;
    const int kept = feed_readout && top_in_workspace(m);
    /* the top layer writes to y, to the workspace for the readout, or nowhere */
    rnx_seq_view none = {NULL, 0, 0, 0}, top = none;
    if (feed_readout && rnx_top_is_output(m)) top = y;
    if (ws->pipelined) {
        for (int t0 = 0; t0 < T; t0 += ws->chunk) {
            const int t1 = t0 + ws->chunk < T ? t0 + ws->chunk : T;
            for (int k = 0; k <= last; k++) {
                const int W = m->blocks[k].width;
                rnx_seq_view in = x, out = top;
                if (k > 0) in = buffer_view(ws->mid[(k - 1) & 1], Bs, m->blocks[k - 1].width, t0);
                if (k < last || kept) out = buffer_view(ws->mid[k & 1], Bs, W, t0);
                rnx_run_chunk(m, ws, team, k, 0, 0, t0, t1, t0, in, out, NULL);
            }
            if (kept) {
                rnx_readout_steps(m, ws, team,
                                  buffer_view(ws->mid[last & 1], Bs, m->blocks[last].width, t0), y,
                                  t0, t1);
                rnx_team_barrier(team); /* the next chunk overwrites what the readout read */
            }
        }
        return;
    }
    /* layer by layer: a reverse direction needs the whole sequence below it */
    const int nchunks = (T + ws->chunk - 1) / ws->chunk;
    for (int k = 0; k <= last; k++) {
        const rnx_block *b = &m->blocks[k];
        const int S = b->state_size, merged = b->directions == 2 && b->merge != RNX_MERGE_CONCAT;
        rnx_seq_view in = x, out = top;
        if (k > 0) in = buffer_view(ws->mid[(k - 1) & 1], Bs, m->blocks[k - 1].width, 0);
        if (k < last || kept) out = buffer_view(ws->mid[k & 1], Bs, b->width, 0);
        for (int d = 0; d < b->directions; d++) {
            const int reverse = b->reverse || d == 1;
            rnx_seq_view dir_out = out;
            if (d == 1 && out.base) {
                if (merged) dir_out = buffer_view(ws->rev, Bs, S, 0);
                else dir_out.base += S;
            }
            for (int i = 0; i < nchunks; i++) {
                const int ci = reverse ? nchunks - 1 - i : i;
                const int t0 = ci * ws->chunk, t1 = t0 + ws->chunk < T ? t0 + ws->chunk : T;
                rnx_run_chunk(m, ws, team, k, d, reverse, t0, t1, reverse ? T - t1 : t0, in, dir_out,
                              NULL);
            }
        }
        if (merged && out.base)
            merge_directions(ws, team, b->merge, S, out, buffer_view(ws->rev, Bs, S, 0), T);
    }
    if (kept) {
        rnx_readout_steps(m, ws, team, buffer_view(ws->mid[last & 1], Bs, m->blocks[last].width, 0),
                          y, 0, T);
        rnx_team_barrier(team);
    }
}

/* ---------------------------------------------------------------------------------------------
 * rnx_forward
 * ------------------------------------------------------------------------------------------- */

typedef struct forward_args {
    float *y, *h_n, *c_n;
    const float *x;
    const int32_t *ids;
    const float *h0, *c0;
    const int32_t *lengths;
    const uint8_t *mask;
    int B, T;
} forward_args;

/* One member of the team that runs a slice, from x to y. */
static void run_member(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view x,
                       float *y, int T) {
    const int F = m->info.output_size;
    const rnx_seq_view yv = {y, (ptrdiff_t)T * F, F, 0};
    rnx_run_blocks(m, ws, team, x, yv, T, y != NULL);
    if (y) rnx_readout_end(m, ws, team, y, T);
}

typedef struct member_args {
    const rnx_model *m;
    rnx_workspace *ws;
    rnx_seq_view x;
    float *y;
    int T;
} member_args;

static void member_body(void *arg, rnx_team team) {
    const member_args *a = arg;
    run_member(a->m, a->ws, team, a->x, a->y, a->T);
}

/* Rows [b0, b1) of the batch, by this thread alone (threads == 1) or by a team of threads; *team:
 * the threads that ran them. */
static rnx_status run_rows(const rnx_model *m, const forward_args *a, int b0, int b1,
                           int threads, int *team) {
    const int T = a->T, I = m->info.input_size, F = m->info.output_size;
    rnx_workspace ws;
    rnx_status s = rnx_workspace_create(&ws, m, b1 - b0, T, threads);
    if (s != RNX_OK) return s;
    for (int r = 0; r < ws.Bs; r++) ws.len[r] = a->lengths ? a->lengths[b0 + r] : T;
    ws.ids = a->ids ? a->ids + (size_t)b0 * T : NULL;
    ws.mask = a->mask ? a->mask + (size_t)b0 * T : NULL;
    ws.x = a->x && m->masking ? a->x + (size_t)b0 * T * I : NULL;
    ws.steps = T;
    rnx_load_states(m, &ws, a->h0, a->c0, a->B, b0);
    rnx_readout_begin(m, &ws);
    rnx_seq_view x = {NULL, 0, 0, 0};
    if (a->x) x = (rnx_seq_view){(float *)a->x + (size_t)b0 * T * I, (ptrdiff_t)T * I, I, 0};
    float *y = a->y ? a->y + (size_t)b0 * (m->info.per_step ? (size_t)T * F : (size_t)F) : NULL;
    member_args members = {m, &ws, x, y, T};
    *team = rnx_parallel(member_body, &members, threads);
    rnx_store_states(m, &ws, a->h_n, a->c_n, a->B, b0, T);
    rnx_workspace_free(&ws);
    return RNX_OK;
}

/* Threads for a team sharing a batch of B rows: 1 where the split would not pay, judged on the
 * largest layer's recurrent product. */
static int team_threads(const rnx_model *m, int B, int threads) {
    long long macs = 0;
    int npanels = 1;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        /* two passes per step; the plain path's rows are not split */
        if (b->cell == RNX_CELL_GRU_RESET_BEFORE || b->plain) return 1;
        const long long n = (long long)B * b->npanels * b->nv * b->kernels->vw * b->hidden_size;
        if (n > macs) {
            macs = n;
            npanels = b->npanels;
        }
    }
    const long long least = m->info.precision == RNX_PRECISION_INT8 ? RNX_TEAM_MIN_MACS_INT8
                                                                     : RNX_TEAM_MIN_MACS;
    while (threads > 1 && (macs / threads < least || npanels < threads)) threads--;
    return threads;
}

typedef struct split_args {
    const rnx_model *m;
    const forward_args *a;
    rnx_status status;
} split_args;

/* One slice of the batch per member of the team, each on its own. */
static void split_body(void *arg, rnx_team team) {
    split_args *split = arg;
    const int B = split->a->B;
    int b0, b1;
    rnx_team_part(B, team, &b0, &b1);
    int alone;
    const rnx_status s = b1 > b0 ? run_rows(split->m, split->a, b0, b1, 1, &alone) : RNX_OK;
    if (s != RNX_OK) {
#ifdef _OPENMP
#pragma omp critical(rnx_forward_status)
#endif
        split->status = s;
    }
}

rnx_status rnx_check_steps(const int32_t *lengths, const uint8_t *mask, int B, int T) {
    if (lengths && mask) return RNX_ERR_BAD_ARGUMENT;
    if (lengths)
        for (int b = 0; b < B; b++)
            if (lengths[b] < 1 || lengths[b] > T) return RNX_ERR_BAD_ARGUMENT;
    if (mask)
        for (size_t i = 0; i < (size_t)B * T; i++)
            if (mask[i] > 1) return RNX_ERR_BAD_ARGUMENT;
    return RNX_OK;
}

/* The checks of rnx_forward's inputs that read arrays: lengths, mask values, ids. */
static rnx_status check_inputs(const rnx_model *m, const forward_args *a) {
    const rnx_status s = rnx_check_steps(a->lengths, a->mask, a->B, a->T);
    if (s != RNX_OK) return s;
    return a->ids ? rnx_check_ids(m, a->ids, (size_t)a->B * a->T) : RNX_OK;
}

rnx_status rnx_forward(const rnx_model *model, float *y, float *h_n, float *c_n, const float *x,
                       const int32_t *ids, const float *h0, const float *c0,
                       const int32_t *lengths, const uint8_t *mask, int B, int T,
                       int n_threads) {
    if (!model) return RNX_ERR_NULL_ARGUMENT;
    const int takes_ids = model->info.takes_ids;
    if (takes_ids ? !ids : !x) return RNX_ERR_NULL_ARGUMENT;
    if ((takes_ids && x) || (!takes_ids && ids) || (lengths && mask) || B < 1 || T < 1 ||
        n_threads > RNX_MAX_THREADS)
        return RNX_ERR_BAD_ARGUMENT;
    if ((long long)B * T > RNX_MAX_ROWS) return RNX_ERR_OVERFLOW;
    const forward_args args = {y, h_n, c_n, x, ids, h0, c0, lengths, mask, B, T};
    rnx_status status = check_inputs(model, &args);
    if (status != RNX_OK) return status;
    const int threads = rnx_threads_for_call(n_threads);
    int team = 1;
    /* fewer than two rows a thread: share the rows, split the panels (measured 1.4-2x on 2
     * threads for B = 2, 3 where slices of 1 and 2 rows leave a thread idle half the time) */
    if (B < 2 * threads) {
        status = run_rows(model, &args, 0, B, team_threads(model, B, threads), &team);
    } else {
        split_args split = {model, &args, RNX_OK};
        team = rnx_parallel(split_body, &split, threads);
        status = split.status;
    }
    rnx_note_team(team);
    return status;
}
