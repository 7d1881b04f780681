/* backward.c: training over a model's recurrent layers (blocks). The tape that a training-mode
 * forward pass fills, rnx_forward_train, and rnx_backward: backpropagation through time. The
 * maths: rnnext/backward.py. A block trains on the packed kernels, or on the plain path
 * (general.c) when it has one (options the kernels lack, the reset-before GRU).
 *
 * Forward in training mode: each thread carries a slice of the batch through every block, as
 * rnx_forward does and on its step driver (rnx_run_chunk), given a record: a block's whole
 * sequence is projected straight into the tape, the step runs with its tape output on, and every
 * step's states are kept; a block's (merged) output sequence, times the next block's dropout
 * mask where one is set, is kept as the next block's input.
 *
 * Backward, phase 1 (batch slices, no barrier): for each block from the top and each direction,
 * a walk back over the steps: each step's gate gradients overwrite its gates in the tape, then
 * the state gradient goes back through the transposed recurrent weights. The block's input
 * gradient, which the block below walks back with, is then one product per (step, row). Phase 2
 * (after one barrier, each block's gradient slots split across the threads): the weight
 * gradients, as products over blocks of (step, row) pairs. Every gradient entry is a sum in one
 * fixed order, whatever the number of threads, so results do not depend on it.
 */
#include <stdlib.h>
#include <string.h>
#include "general.h"

/* (step, row) pairs per block of the weight-gradient products: a block of packed previous states
 * (KC x Hp) stays in L2 while the rows of dG^T stream past it. */
#define RNX_KC 256

/* One block and direction's part of a tape. Rows are ordered (step, sequence) with steps in the
 * order the direction takes them. A packed block's tape row is `row_stride` floats in the
 * kernels' panel layout (rnx_packed), written by the forward pass and overwritten by the
 * backward pass:
 *   LSTM  panels of (i, f, g, o), then c' (Hp)  ->  panels of (di, df, dg, do) pre-activation
 *                                                   gradients, c' kept
 *   GRU   panels of (r, z, n), then W_hn h + b_hn (Hp)
 *                                               ->  panels of (dr, dz, dn * r), then dn (Hp):
 *                                                   the n gate's recurrent and input sides
 *   RNN   the input projection (Hp)             ->  the pre-activation gradient
 * An inactive step's row holds the LSTM's unchanged c in c', so that the step after it finds
 * its c_prev in the row before, masks or not. A plain block's rows are general.c's. */
typedef struct tape_dir {
    float *rows;  /* (T, B, row_stride) */
    float *h;     /* (T+1, B, h_stride): the state before step 0, then after each step */
    float *c;     /* plain LSTM: (T+1, B, H), as h; else NULL */
    float *c0;    /* packed LSTM: (B, Hp), the initial cell state; else NULL */
} tape_dir;

typedef struct tape_block {
    int row_stride; /* floats from one tape row to the next; a packed block's has a cache line
                       more than its width, so that the weight gradients, which read columns of
                       many rows, do not find them in a few cache sets */
    int h_stride;   /* packed: Hp and a cache line (the same reason); plain: S */
    tape_dir dir[2];
    float *out;     /* (B, T, W): the block's merged outputs, the next block's input (multiplied
                       by its dropout mask: the unmasked outputs stay in the states `h`); NULL for
                       the top block */
    int input_size; /* I_k */
    float *dropout; /* (B_max, T_max, I_k): the multiplier of the block's input, allocated by the
                       first rnx_tape_set_dropout; NULL before it */
    int dropout_B, dropout_T; /* the (B, T) of the mask in `dropout`; 0 when none is set */
} tape_block;

struct rnx_tape {
    rnx_layer *layers;      /* (n_layers): the list of the model it was made for */
    int n_layers, isa, n_blocks;
    int B_max, T_max;       /* capacity */
    int B, T;               /* of the last rnx_forward_train */
    const rnx_model *model; /* the model of the last rnx_forward_train; NULL once consumed */
    tape_block *blocks;     /* (n_blocks) */
    uint8_t *active;        /* (B, T): whether a sequence takes a step (lengths and mask) */
    void *block;
};

/* ---------------------------------------------------------------------------------------------
 * Sizes
 * ------------------------------------------------------------------------------------------- */

static int round_up(int n, int to) { return (n + to - 1) / to * to; }

/* A block trains on the plain path whenever the model built one for it: for the options the
 * packed kernels lack, and for the reset-before GRU, which forward may still run packed. */
static int trains_plain(const rnx_block *b) { return b->general != NULL; }

/* Floats of a packed block's tape row. */
static int tape_width(const rnx_block *b) {
    return rnx_xp_width(b) + (b->gates == 1 ? 0 : b->hidden_padded);
}

/* The columns of a packed tape row that hold input-side gate gradients: the GRU's include the
 * tail. */
static int input_grad_width(const rnx_block *b) {
    return b->cell == RNX_CELL_GRU ? tape_width(b) : rnx_xp_width(b);
}

/* ---------------------------------------------------------------------------------------------
 * The tape
 * ------------------------------------------------------------------------------------------- */

typedef struct tape_plan {
    rnx_tape *tape;
    const rnx_model *model;
} tape_plan;

static void tape_layout(rnx_arena *a, void *what) {
    tape_plan *p = what;
    rnx_tape *t = p->tape;
    const rnx_model *m = p->model;
    const size_t BT = (size_t)t->B_max * t->T_max, B = (size_t)t->B_max;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        tape_block *tb = &t->blocks[k];
        const int lstm = b->cell == RNX_CELL_LSTM;
        for (int d = 0; d < b->directions; d++) {
            tape_dir *td = &tb->dir[d];
            td->rows = rnx_arena_take(a, BT * tb->row_stride, sizeof(float));
            td->h = rnx_arena_take(a, (BT + B) * tb->h_stride, sizeof(float));
            td->c = trains_plain(b) && lstm ? rnx_arena_take(a, (BT + B) * b->hidden_size, sizeof(float))
                                     : NULL;
            td->c0 = !trains_plain(b) && lstm ? rnx_arena_take(a, B * b->hidden_padded, sizeof(float))
                                       : NULL;
        }
        tb->out = k < m->n_blocks - 1 ? rnx_arena_take(a, BT * b->width, sizeof(float)) : NULL;
    }
    t->active = rnx_arena_take(a, BT, sizeof(uint8_t));
}

void rnx_tape_free(rnx_tape *tape) {
    if (!tape) return;
    for (int k = 0; tape->blocks && k < tape->n_blocks; k++) free(tape->blocks[k].dropout);
    free(tape->block);
    free(tape->blocks);
    free(tape->layers);
    free(tape);
}

rnx_status rnx_tape_create(rnx_tape **out, const rnx_model *model, int B, int T) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    if (!model) return RNX_ERR_NULL_ARGUMENT;
    if (B < 1 || T < 1 || model->info.precision != RNX_PRECISION_FP32) return RNX_ERR_BAD_ARGUMENT;
    if ((long long)B * T > RNX_MAX_ROWS) return RNX_ERR_OVERFLOW;
    for (int k = 0; k < model->n_blocks; k++)
        if (!trains_plain(&model->blocks[k]) && rnx_general_needed(model->blocks[k].layer, 1))
            return RNX_ERR_BAD_CONFIG;
    const int n = model->info.n_layers;
    rnx_tape *t = calloc(1, sizeof *t);
    if (!t) return RNX_ERR_OUT_OF_MEMORY;
    t->layers = malloc((size_t)n * sizeof *t->layers);
    t->blocks = calloc((size_t)model->n_blocks, sizeof *t->blocks);
    if (!t->layers || !t->blocks) {
        rnx_tape_free(t);
        return RNX_ERR_OUT_OF_MEMORY;
    }
    memcpy(t->layers, model->layers, (size_t)n * sizeof *t->layers);
    t->n_layers = n;
    t->n_blocks = model->n_blocks;
    t->isa = model->info.isa;
    t->B_max = B;
    t->T_max = T;
    for (int k = 0; k < model->n_blocks; k++) {
        const rnx_block *b = &model->blocks[k];
        tape_block *tb = &t->blocks[k];
        tb->input_size = b->input_size;
        if (trains_plain(b)) {
            tb->row_stride = (int)rnx_general_tape_width(&b->general[0]);
            tb->h_stride = b->state_size;
        } else {
            tb->row_stride = tape_width(b) + RNX_ALIGN / 4;
            tb->h_stride = b->hidden_padded + RNX_ALIGN / 4;
        }
    }
    tape_plan plan = {t, model};
    rnx_status s = rnx_arena_build(&t->block, tape_layout, &plan);
    if (s != RNX_OK) {
        rnx_tape_free(t);
        return s;
    }
    *out = t;
    return RNX_OK;
}

rnx_status rnx_tape_set_dropout(rnx_tape *tape, int layer, const float *mask, int B, int T) {
    if (!tape) return RNX_ERR_NULL_ARGUMENT;
    if (layer < 1 || layer >= tape->n_blocks) return RNX_ERR_BAD_ARGUMENT;
    tape_block *tb = &tape->blocks[layer];
    if (mask && (B < 1 || T < 1 || B > tape->B_max || T > tape->T_max)) return RNX_ERR_BAD_ARGUMENT;
    if (mask && !tb->dropout) {
        tb->dropout = malloc((size_t)tape->B_max * tape->T_max * tb->input_size * sizeof(float));
        if (!tb->dropout) return RNX_ERR_OUT_OF_MEMORY;
    }
    tape->model = NULL; /* a pass recorded before ran with the mask this call replaces */
    tb->dropout_B = mask ? B : 0;
    tb->dropout_T = mask ? T : 0;
    if (mask) memcpy(tb->dropout, mask, (size_t)B * T * tb->input_size * sizeof(float));
    return RNX_OK;
}

/* Rows [b0, b1) of rows (B, T, width) times block k's dropout mask (B, T, I_k) on their first
 * I_k columns; nothing when the block has none. */
static void apply_dropout(const rnx_tape *t, int k, float *rows, size_t width, int b0, int b1) {
    const tape_block *tb = &t->blocks[k];
    if (!tb->dropout_B) return;
    const int I_k = tb->input_size;
    for (size_t q = (size_t)b0 * t->T; q < (size_t)b1 * t->T; q++) {
        float *row = rows + q * width;
        const float *keep = tb->dropout + q * I_k;
        for (int i = 0; i < I_k; i++) row[i] *= keep[i];
    }
}

/* Whether the tape was made for a model of this model's list and instruction set. */
static int tape_fits(const rnx_tape *t, const rnx_model *m) {
    return t->n_layers == m->info.n_layers && t->isa == m->info.isa &&
           memcmp(t->layers, m->layers, (size_t)t->n_layers * sizeof *t->layers) == 0;
}

static float *tape_row(const rnx_tape *t, int k, int d, int s, int b) {
    const tape_block *tb = &t->blocks[k];
    return tb->dir[d].rows + ((size_t)s * t->B + b) * tb->row_stride;
}

static float *tape_h(const rnx_tape *t, int k, int d, int slot, int b) {
    const tape_block *tb = &t->blocks[k];
    return tb->dir[d].h + ((size_t)slot * t->B + b) * tb->h_stride;
}

static float *tape_c(const rnx_tape *t, const rnx_block *bl, int k, int d, int slot, int b) {
    return t->blocks[k].dir[d].c + ((size_t)slot * t->B + b) * bl->hidden_size;
}

static int active(const rnx_tape *t, int b, int time) {
    return t->active[(size_t)b * t->T + time];
}

/* Direction d of block b walks t = T-1 .. 0: the reverse half, or a reverse-only layer. */
static int walks_back(const rnx_block *b, int d) { return b->reverse || d == 1; }

static int step_time(int reverse, int T, int s) { return reverse ? T - 1 - s : s; }

/* The input of block k at time t of sequence b: a row of x, or of the block below's outputs. */
static const float *block_input(const rnx_tape *t, const rnx_model *m, const float *x, int k,
                                int b, int time) {
    const size_t row = (size_t)b * t->T + time;
    if (k == 0) return x + row * m->blocks[0].input_size;
    return t->blocks[k - 1].out + row * m->blocks[k - 1].width;
}

/* Direction d of block k's output at `time` (S floats, zero-padded in a packed block's rows):
 * the state after the step it took there. */
static const float *direction_output(const rnx_tape *t, const rnx_model *m, int k, int d, int b,
                                     int time) {
    return tape_h(t, k, d, step_time(walks_back(&m->blocks[k], d), t->T, time) + 1, b);
}

/* ---------------------------------------------------------------------------------------------
 * Forward in training mode: one thread's rows [b0, b1)
 * ------------------------------------------------------------------------------------------- */

typedef struct train_args {
    float *seq, *h_n, *c_n;
    const float *x, *h0, *c0;
} train_args;

/* Block k's output sequence for rows [b0, b1) into dst (B, T, W): its directions' outputs,
 * concatenated or merged; zero at inactive steps. */
static void merge_outputs(const rnx_model *m, const rnx_tape *t, int k, int b0, int b1,
                          float *dst) {
    const rnx_block *bl = &m->blocks[k];
    const int S = bl->state_size, W = bl->width;
    for (int b = b0; b < b1; b++)
        for (int time = 0; time < t->T; time++) {
            float *o = dst + ((size_t)b * t->T + time) * W;
            if (!active(t, b, time)) {
                memset(o, 0, W * sizeof(float));
                continue;
            }
            const float *f = direction_output(t, m, k, 0, b, time);
            if (bl->directions == 1) {
                memcpy(o, f, S * sizeof(float));
                continue;
            }
            const float *v = direction_output(t, m, k, 1, b, time);
            for (int u = 0; u < S; u++)
                switch (bl->merge) {
                case RNX_MERGE_CONCAT: o[u] = f[u], o[S + u] = v[u]; break;
                case RNX_MERGE_SUM: o[u] = f[u] + v[u]; break;
                case RNX_MERGE_MUL: o[u] = f[u] * v[u]; break;
                default: o[u] = (f[u] + v[u]) * 0.5f; break;
                }
        }
}

/* Rows [b0, b1) through every block on forward.c's step driver (rnx_run_chunk), which writes
 * the projections, records and states into the tape; the workspace holds c and the initial
 * states. */
static rnx_status forward_rows(const rnx_model *m, rnx_tape *t, const train_args *a, int b0,
                               int b1) {
    const int Bs = b1 - b0, T = t->T, B = t->B;
    rnx_workspace ws;
    /* T = 1: the tape keeps the steps, so the workspace's per-step buffers are not used */
    rnx_status status = rnx_workspace_create(&ws, m, Bs, 1, 1);
    if (status != RNX_OK) return status;
    for (int r = 0; r < Bs; r++) ws.len[r] = T;
    ws.mask = t->active + (size_t)b0 * T;
    ws.steps = T;
    rnx_load_states(m, &ws, a->h0, a->c0, B, b0);
    const rnx_seq_view none = {NULL, 0, 0, 0};
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *bl = &m->blocks[k];
        const int lstm = bl->cell == RNX_CELL_LSTM, I = bl->input_size;
        const float *below = k == 0 ? a->x : t->blocks[k - 1].out;
        const rnx_seq_view in = {(float *)below + (size_t)b0 * T * I, (ptrdiff_t)T * I, I, 0};
        for (int d = 0; d < bl->directions; d++) {
            const tape_dir *td = &t->blocks[k].dir[d];
            const rnx_record rec = {td->rows, td->h, td->c, (size_t)t->blocks[k].row_stride,
                                    (size_t)t->blocks[k].h_stride, B, b0, T};
            const float *h0 = rnx_state_buffer(m, &ws, k, d, 0), *c0 = rnx_state_buffer(m, &ws, k, d, 2);
            const size_t Hp = (size_t)bl->hidden_padded;
            for (int r = 0; r < Bs; r++) {
                memcpy(tape_h(t, k, d, 0, b0 + r), h0 + r * Hp,
                       (trains_plain(bl) ? (size_t)bl->state_size : Hp) * sizeof(float));
                if (lstm && trains_plain(bl))
                    memcpy(tape_c(t, bl, k, d, 0, b0 + r), c0 + r * Hp, bl->hidden_size * sizeof(float));
                else if (lstm)
                    memcpy(td->c0 + (size_t)(b0 + r) * Hp, c0 + r * Hp, Hp * sizeof(float));
            }
            rnx_run_chunk(m, &ws, (rnx_team){0, 1}, k, d, walks_back(bl, d), 0, T, 0, in, none,
                          &rec);
            if (a->h_n)
                for (int b = b0; b < b1; b++)
                    memcpy(a->h_n + rnx_user_h(bl, B, d, b), tape_h(t, k, d, T, b),
                           bl->state_size * sizeof(float));
        }
        float *dst = k < m->n_blocks - 1 ? t->blocks[k].out : a->seq;
        if (dst) merge_outputs(m, t, k, b0, b1, dst);
        if (k < m->n_blocks - 1) apply_dropout(t, k + 1, dst, (size_t)bl->width, b0, b1);
    }
    rnx_store_states(m, &ws, NULL, a->c_n, B, b0, T);
    rnx_workspace_free(&ws);
    return RNX_OK;
}

static void slice(int n, int i, int parts, int *lo, int *hi) {
    *lo = (int)((long long)n * i / parts);
    *hi = (int)((long long)n * (i + 1) / parts);
}

/* A thread is worth starting for this many multiply-adds (about 0.1 ms of work): below it, the
 * cost of waking threads, and of their spinning when the call returns, outweighs the split. On a
 * busy 2-core machine, 210 training steps of a 64-unit RNN on 8 sentences took 4.1 s with two
 * threads per call and 0.1 s with one. */
#define RNX_MACS_PER_THREAD 4000000.0

/* The threads for a call of `macs` multiply-adds: rnx_threads_for_call's, fewer when the work is
 * small. Results never depend on it. */
static int thread_count(int n_threads, double macs) {
    int threads = rnx_threads_for_call(n_threads);
    if (threads > macs / RNX_MACS_PER_THREAD) threads = (int)(macs / RNX_MACS_PER_THREAD);
    return threads > 1 ? threads : 1;
}

/* Multiply-adds of the blocks' input and recurrent products over B*T steps (the forward pass;
 * the backward pass does about twice as many). */
static double blocks_macs(const rnx_model *m, int B, int T) {
    double macs = 0.0;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        macs += (double)B * T * b->directions * b->gates * b->hidden_size *
                (b->input_size + b->state_size);
    }
    return macs;
}

typedef struct forward_split {
    const rnx_model *m;
    rnx_tape *tape;
    const train_args *args;
    int parts;
    rnx_status status;
} forward_split;

/* Parts planned for `parts` threads; a team given fewer threads takes several each. */
static void forward_body(void *arg, rnx_team team) {
    forward_split *split = arg;
    for (int part = team.id; part < split->parts; part += team.size) {
        int b0, b1;
        slice(split->tape->B, part, split->parts, &b0, &b1);
        const rnx_status s = b1 > b0 ? forward_rows(split->m, split->tape, split->args, b0, b1)
                                     : RNX_OK;
        if (s != RNX_OK) {
#ifdef _OPENMP
#pragma omp critical(rnx_forward_train_status)
#endif
            split->status = s;
        }
    }
}

rnx_status rnx_forward_train(const rnx_model *model, rnx_tape *tape, float *seq, float *h_n,
                             float *c_n, const float *x, const float *h0, const float *c0,
                             const int32_t *lengths, const uint8_t *mask, int B, int T,
                             int n_threads) {
    if (!model || !tape || !x) return RNX_ERR_NULL_ARGUMENT;
    if (!tape_fits(tape, model) || B < 1 || T < 1 || B > tape->B_max || T > tape->T_max ||
        n_threads > RNX_MAX_THREADS || model->info.precision != RNX_PRECISION_FP32)
        return RNX_ERR_BAD_ARGUMENT;
    const rnx_status checked = rnx_check_steps(lengths, mask, B, T);
    if (checked != RNX_OK) return checked;
    for (int k = 1; k < tape->n_blocks; k++) {
        const tape_block *tb = &tape->blocks[k];
        if (tb->dropout_B && (tb->dropout_B != B || tb->dropout_T != T))
            return RNX_ERR_BAD_ARGUMENT;
    }
    tape->model = NULL;
    tape->B = B;
    tape->T = T;
    for (int b = 0; b < B; b++)
        for (int time = 0; time < T; time++) {
            const size_t i = (size_t)b * T + time;
            tape->active[i] = (uint8_t)(lengths ? time < lengths[b] : !mask || mask[i]);
        }
    int threads = thread_count(n_threads, blocks_macs(model, B, T));
    if (threads > B) threads = B;
    const train_args args = {seq, h_n, c_n, x, h0, c0};
    forward_split split = {model, tape, &args, threads, RNX_OK};
    rnx_parallel(forward_body, &split, threads);
    if (split.status != RNX_OK) return split.status;
    tape->model = model;
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Backward: where each gate's gradient lives in a packed tape row, and the transposed weights
 * ------------------------------------------------------------------------------------------- */

/* The tape-row column that holds the gradient of gate slot `slot` (panel layout, as the packed
 * weights): the same column, except the GRU n gate's input side, which is in the tail. */
static int grad_column(const rnx_block *b, int slot, int input_side) {
    const int vw = b->kernels->vw, panel = b->nv * vw;
    if (input_side && b->cell == RNX_CELL_GRU && (slot % panel) / vw == 2)
        return rnx_xp_width(b) + slot / panel * vw + slot % vw;
    return slot;
}

/* The inverse: the gate slot whose gradient tape-row column k holds, or -1 (the GRU's recurrent-
 * side n columns seen from the input side). */
static int grad_slot(const rnx_block *b, int k, int input_side) {
    const int vw = b->kernels->vw, panel = b->nv * vw, xw = rnx_xp_width(b);
    if (k >= xw) return (k - xw) / vw * panel + 2 * vw + (k - xw) % vw;
    if (input_side && b->cell == RNX_CELL_GRU && (k % panel) / vw == 2) return -1;
    return k;
}

/* dst (npanels, K, 4*vw): dst[q][k][j] = W[slot of column k][q*4*vw + j], the transpose of a
 * packed weight (npanels_w, cols, nv, vw) (rnx_packed wx or wh), zero where either index is
 * padding: for the products of tape rows (K columns) with W. */
static void pack_transposed(const rnx_block *b, float *dst, const float *packed, int cols, int K,
                            int input_side) {
    const int pw = 4 * b->kernels->vw, panel = b->nv * b->kernels->vw;
    const int npanels = (cols + pw - 1) / pw;
    for (int q = 0; q < npanels; q++)
        for (int k = 0; k < K; k++) {
            const int slot = grad_slot(b, k, input_side);
            const float *src = slot < 0 ? NULL : packed + (size_t)(slot / panel) * cols * panel +
                                                     slot % panel;
            for (int j = 0; j < pw; j++) {
                const int col = q * pw + j;
                *dst++ = src && col < cols ? src[(size_t)col * panel] : 0.0f;
            }
        }
}

/* ---------------------------------------------------------------------------------------------
 * Backward: scratch memory
 * ------------------------------------------------------------------------------------------- */

typedef struct backward_args {
    float *grads, *dx, *dh0, *dc0;
    const float *x, *dseq, *dh_n, *dc_n;
} backward_args;

/* Per block and direction: its gradients, and a packed block's transposed weights. */
typedef struct dir_grads {
    rnx_general_params grads; /* placed in the caller's grads */
    int slots;                /* units of work of its weight gradients: packed, panels of 4*vw
                                 gate slots; plain, rnx_general_grad_slots */
    float *w_hh_t; /* (Hq / (4*vw), xp_width, 4*vw): W_hh^T, for the state gradient */
    float *w_ih_t; /* (ceil(I_k / (4*vw)), input_grad_width, 4*vw): W_ih^T, or NULL */
} dir_grads;

/* One thread's scratch. Packed phase 2 computes dW^T: rows are state units or inputs (then the
 * bias), columns are gate slots. */
typedef struct thread_scratch {
    float *dh[2];   /* (Bs, Hq_max): the state gradient, at this step and one step back */
    float *dc;      /* (Bs, Hp_max) */
    float *dout;    /* (S_max): a direction's output gradient under a merge */
    float *general; /* the plain path's scratch */
    float *inputs;  /* (KC, I_max): a block of layer inputs */
    float *g;       /* (Mt / (4*vw), KC, 4*vw): a block of the GRU's input-side gradient columns */
    float *acc_h;   /* (H_max + 1, Mt): dW_hh^T and db_hh of the thread's gate slots */
    float *acc_i;   /* (I_max + 1, Mt): dW_ih^T and db_ih */
    const float **pairs[4]; /* (KC) each: tape rows, inputs, h_prev, c_prev of (step, row) pairs */
} thread_scratch;

typedef struct backward_plan {
    const rnx_model *m;
    const rnx_tape *t;
    int threads;   /* parts of the batch and of the gradient slots */
    int Bs;        /* the largest batch part */
    int Mt;        /* the largest part of a packed block's gate slots, a multiple of 4*vw */
    int Hq_max, Hp_max, S_max, I_max, general_max;
    int Wd;        /* a row of dlayer */
    int need_dx;
    dir_grads *dirs;         /* (n_blocks, 2) */
    thread_scratch *scratch; /* (threads) */
    float *dlayer;           /* (B, T, Wd): a block's output gradient, then its input gradient */
    float *ones;             /* (KC) */
} backward_plan;

static int hq(const rnx_block *b) { return round_up(b->hidden_size, 4 * b->kernels->vw); }

static void backward_layout(rnx_arena *a, void *what) {
    backward_plan *p = what;
    const rnx_model *m = p->m;
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        if (trains_plain(b)) continue;
        for (int d = 0; d < b->directions; d++) {
            dir_grads *g = &p->dirs[2 * k + d];
            g->w_hh_t = rnx_arena_take(a, (size_t)hq(b) * rnx_xp_width(b), sizeof(float));
            g->w_ih_t = k > 0 || p->need_dx
                            ? rnx_arena_take(a, (size_t)round_up(b->input_size, 4 * b->kernels->vw) *
                                                    input_grad_width(b),
                                             sizeof(float))
                            : NULL;
        }
    }
    for (int i = 0; i < p->threads; i++) {
        thread_scratch *s = &p->scratch[i];
        s->dh[0] = rnx_arena_take(a, (size_t)p->Bs * p->Hq_max, sizeof(float));
        s->dh[1] = rnx_arena_take(a, (size_t)p->Bs * p->Hq_max, sizeof(float));
        s->dc = rnx_arena_take(a, (size_t)p->Bs * p->Hp_max, sizeof(float));
        s->dout = rnx_arena_take(a, (size_t)p->S_max, sizeof(float));
        s->general = rnx_arena_take(a, (size_t)p->general_max, sizeof(float));
        s->inputs = rnx_arena_take(a, (size_t)RNX_KC * p->I_max, sizeof(float));
        s->g = rnx_arena_take(a, (size_t)p->Mt * RNX_KC, sizeof(float));
        s->acc_h = rnx_arena_take(a, (size_t)(p->Hp_max + 1) * p->Mt, sizeof(float));
        s->acc_i = rnx_arena_take(a, (size_t)(p->I_max + 1) * p->Mt, sizeof(float));
        for (int j = 0; j < 4; j++) s->pairs[j] = rnx_arena_take(a, RNX_KC, sizeof(float *));
    }
    p->dlayer = rnx_arena_take(a, (size_t)p->t->B * p->t->T * p->Wd, sizeof(float));
    p->ones = rnx_arena_take(a, RNX_KC, sizeof(float));
}

/* ---------------------------------------------------------------------------------------------
 * Backward, phase 1: one thread's rows [b0, b1), walking back over one block and direction
 * ------------------------------------------------------------------------------------------- */

/* dLoss/d(output) of direction d of block k at time `time` of sequence b (S floats): from the
 * caller's dseq for the top block, the block above's input gradient below it, through the
 * block's merge; NULL for none. */
static const float *output_grad(const backward_plan *p, const backward_args *a, int k, int d,
                                int b, int time, float *buf) {
    const rnx_model *m = p->m;
    const rnx_block *bl = &m->blocks[k];
    const int T = p->t->T, S = bl->state_size;
    const float *dout = p->dlayer + ((size_t)b * T + time) * p->Wd;
    if (k == m->n_blocks - 1) {
        if (!a->dseq) return NULL;
        dout = a->dseq + ((size_t)b * T + time) * bl->width;
    }
    if (bl->directions == 1 || bl->merge == RNX_MERGE_SUM) return dout;
    if (bl->merge == RNX_MERGE_CONCAT) return dout + (size_t)d * S;
    if (bl->merge == RNX_MERGE_AVE) {
        for (int u = 0; u < S; u++) buf[u] = 0.5f * dout[u];
        return buf;
    }
    const float *other = direction_output(p->t, m, k, 1 - d, b, time);
    for (int u = 0; u < S; u++) buf[u] = dout[u] * other[u];
    return buf;
}

static void backward_packed(const backward_plan *p, const backward_args *a, int k, int d, int b0,
                            int b1, thread_scratch *ws) {
    const rnx_model *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_block *bl = &m->blocks[k];
    const rnx_kernels *kn = bl->kernels;
    const int H = bl->hidden_size, Hp = bl->hidden_padded, T = t->T, B = t->B;
    const int Bs = b1 - b0, mr = kn->mr, Hq = hq(bl), cell = bl->cell, reverse = walks_back(bl, d);
    const int xw = rnx_xp_width(bl), nq = Hq / (4 * kn->vw), width = tape_width(bl);
    const float *w_t = p->dirs[2 * k + d].w_hh_t;
    const float *g_rows[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    float *dh = ws->dh[0], *dh_next = ws->dh[1];

    /* padding lanes stay zero: the transposed weights' padding columns are zero */
    memset(dh, 0, (size_t)Bs * Hq * sizeof(float));
    memset(dh_next, 0, (size_t)Bs * Hq * sizeof(float));
    memset(ws->dc, 0, (size_t)Bs * Hp * sizeof(float));
    for (int r = 0; r < Bs; r++) {
        if (a->dh_n) memcpy(dh + (size_t)r * Hq, a->dh_n + rnx_user_h(bl, B, d, b0 + r), H * sizeof(float));
        if (a->dc_n && cell == RNX_CELL_LSTM)
            memcpy(ws->dc + (size_t)r * Hp, a->dc_n + rnx_user_c(bl, B, d, b0 + r), H * sizeof(float));
    }
    for (int s = T - 1; s >= 0; s--) {
        const int time = step_time(reverse, T, s);
        for (int r = 0; r < Bs; r++) {
            const int b = b0 + r;
            float *g = tape_row(t, k, d, s, b), *dh_r = dh + (size_t)r * Hq;
            if (!active(t, b, time)) { /* the state passed through unchanged */
                memset(g, 0, (size_t)width * sizeof(float));
                memcpy(dh_next + (size_t)r * Hq, dh_r, (size_t)Hq * sizeof(float));
                continue;
            }
            const float *dout = output_grad(p, a, k, d, b, time, ws->dout);
            if (dout)
                for (int u = 0; u < H; u++) dh_r[u] += dout[u];
            /* the row before holds c after the step before, active or not */
            const float *c_prev = s > 0 ? tape_row(t, k, d, s - 1, b) + xw
                                        : (cell == RNX_CELL_LSTM ? t->blocks[k].dir[d].c0 + (size_t)b * Hp
                                                                 : NULL);
            kn->cell_grads(cell, g, dh_next + (size_t)r * Hq, ws->dc + (size_t)r * Hp, dh_r,
                           c_prev, tape_h(t, k, d, s, b), tape_h(t, k, d, s + 1, b), bl->npanels);
        }
        for (int r0 = 0; r0 < Bs; r0 += mr) {
            const int nr = Bs - r0 < mr ? Bs - r0 : mr;
            for (int i = 0; i < nr; i++) {
                g_rows[i] = tape_row(t, k, d, s, b0 + r0 + i);
                out[i] = dh_next + (size_t)(r0 + i) * Hq;
                init[i] = out[i];
            }
            kn->matmul(out, init, g_rows, 1, w_t, 4 * kn->vw, (size_t)xw * 4 * kn->vw, xw, nq, nr);
        }
        float *swap = dh;
        dh = dh_next;
        dh_next = swap;
    }
    for (int r = 0; r < Bs; r++) {
        if (a->dh0) memcpy(a->dh0 + rnx_user_h(bl, B, d, b0 + r), dh + (size_t)r * Hq, H * sizeof(float));
        if (a->dc0 && cell == RNX_CELL_LSTM)
            memcpy(a->dc0 + rnx_user_c(bl, B, d, b0 + r), ws->dc + (size_t)r * Hp, H * sizeof(float));
    }
}

static void backward_plain(const backward_plan *p, const backward_args *a, int k, int d, int b0,
                           int b1, thread_scratch *ws) {
    const rnx_model *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_block *bl = &m->blocks[k];
    const rnx_general *g = &bl->general[d];
    const int S = bl->state_size, H = bl->hidden_size, T = t->T, B = t->B, Bs = b1 - b0;
    const int lstm = bl->cell == RNX_CELL_LSTM, reverse = walks_back(bl, d);
    const size_t width = (size_t)t->blocks[k].row_stride;
    float *dh = ws->dh[0], *dc = ws->dc;
    const float *h_prev[RNX_MAX_MR], *c_prev[RNX_MAX_MR];
    float *dh_r[RNX_MAX_MR], *dc_r[RNX_MAX_MR], *rows[RNX_MAX_MR];
    unsigned char on[RNX_MAX_MR];

    for (int r = 0; r < Bs; r++) {
        float *dh_row = dh + (size_t)r * S, *dc_row = dc + (size_t)r * H;
        if (a->dh_n) memcpy(dh_row, a->dh_n + rnx_user_h(bl, B, d, b0 + r), S * sizeof(float));
        else memset(dh_row, 0, S * sizeof(float));
        if (!lstm) continue;
        if (a->dc_n) memcpy(dc_row, a->dc_n + rnx_user_c(bl, B, d, b0 + r), H * sizeof(float));
        else memset(dc_row, 0, H * sizeof(float));
    }
    for (int s = T - 1; s >= 0; s--) {
        const int time = step_time(reverse, T, s);
        for (int r0 = 0; r0 < Bs; r0 += RNX_MAX_MR) {
            const int nr = Bs - r0 < RNX_MAX_MR ? Bs - r0 : RNX_MAX_MR;
            for (int i = 0; i < nr; i++) {
                const int b = b0 + r0 + i;
                dh_r[i] = dh + (size_t)(r0 + i) * S;
                dc_r[i] = lstm ? dc + (size_t)(r0 + i) * H : NULL;
                rows[i] = tape_row(t, k, d, s, b);
                h_prev[i] = tape_h(t, k, d, s, b);
                c_prev[i] = lstm ? tape_c(t, bl, k, d, s, b) : NULL;
                on[i] = (unsigned char)active(t, b, time);
                if (!on[i]) { /* no gradient reaches this step's input */
                    memset(rows[i], 0, width * sizeof(float));
                    continue;
                }
                const float *dout = output_grad(p, a, k, d, b, time, ws->dout);
                if (dout)
                    for (int u = 0; u < S; u++) dh_r[i][u] += dout[u];
            }
            rnx_general_step_backward(g, dh_r, dc_r, rows, h_prev, c_prev, on, ws->general, nr);
        }
    }
    for (int r = 0; r < Bs; r++) {
        if (a->dh0) memcpy(a->dh0 + rnx_user_h(bl, B, d, b0 + r), dh + (size_t)r * S, S * sizeof(float));
        if (a->dc0 && lstm)
            memcpy(a->dc0 + rnx_user_c(bl, B, d, b0 + r), dc + (size_t)r * H, H * sizeof(float));
    }
}

/* Block k's input gradient for rows [b0, b1), into dlayer (and dx for block 0): the sum over
 * directions, in order, of the input-side gate gradients times W_ih. */
static void input_grad(const backward_plan *p, const backward_args *a, int k, int b0, int b1) {
    const rnx_model *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_block *bl = &m->blocks[k];
    const rnx_kernels *kn = bl->kernels;
    const int D = bl->directions, T = t->T, I_k = bl->input_size;
    const int mr = trains_plain(bl) ? RNX_MAX_MR : kn->mr, nq = (I_k + 4 * kn->vw - 1) / (4 * kn->vw);
    const float *g_rows[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    const int nrows = (b1 - b0) * T, K = input_grad_width(bl);
    for (int q0 = 0; q0 < nrows; q0 += mr) {
        const int nr = nrows - q0 < mr ? nrows - q0 : mr;
        for (int d = 0; d < D; d++) {
            for (int i = 0; i < nr; i++) {
                const int b = b0 + (q0 + i) / T, time = (q0 + i) % T;
                g_rows[i] = tape_row(t, k, d, step_time(walks_back(bl, d), T, time), b);
                out[i] = p->dlayer + ((size_t)b * T + time) * p->Wd;
                init[i] = out[i];
            }
            if (trains_plain(bl))
                rnx_general_input_grad(&bl->general[d], out, g_rows, nr, d > 0);
            else
                kn->matmul(out, d == 0 ? NULL : init, g_rows, 1, p->dirs[2 * k + d].w_ih_t,
                           4 * kn->vw, (size_t)K * 4 * kn->vw, K, nq, nr);
        }
        if (k > 0 || !a->dx) continue;
        for (int i = 0; i < nr; i++) {
            const int b = b0 + (q0 + i) / T, time = (q0 + i) % T;
            memcpy(a->dx + ((size_t)b * T + time) * I_k, out[i], (size_t)I_k * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward, phase 2: the weight gradients of one packed block and direction for gate slots
 * [m0, m1), as dW^T = [states | inputs]^T dG over blocks of KC (step, sequence) pairs
 * k = s*B + b: a product whose `a` rows are read in place from the tape's states (a unit's
 * values are h_stride apart) and from a copy of the block's input rows; a row of ones gives the
 * bias gradients.
 * ------------------------------------------------------------------------------------------- */

/* inputs (kc, I_k): block k's input rows of pairs k0 .. k0+kc-1, one after the other. */
static void copy_inputs(float *inputs, const rnx_tape *t, const rnx_model *m, const float *x,
                        int k, int d, int k0, int kc) {
    const rnx_block *bl = &m->blocks[k];
    const size_t I_k = (size_t)bl->input_size;
    for (int kk = 0; kk < kc; kk++) {
        const int s = (k0 + kk) / t->B, b = (k0 + kk) % t->B;
        const int time = step_time(walks_back(bl, d), t->T, s);
        /* inactive steps' inputs meet zero gate gradients: zeros keep NaN padding out */
        float *row = inputs + kk * I_k;
        if (active(t, b, time)) memcpy(row, block_input(t, m, x, k, b, time), I_k * sizeof(float));
        else memset(row, 0, I_k * sizeof(float));
    }
}

/* g (npanels, kc, 4*vw): the GRU's input-side gradient columns of gate slots
 * [m0, m0 + npanels*4*vw) of tape rows k0 .. k0+kc-1 (the n gate's are in the tail), zero past
 * the last slot. Every other product with dG reads the tape in place. */
static void pack_input_side(float *g, const rnx_tape *t, const rnx_block *bl, int k, int d,
                            int k0, int kc, int m0, int npanels) {
    const int vw = bl->kernels->vw, pw = 4 * vw, xw = rnx_xp_width(bl);
    const int stride = t->blocks[k].row_stride;
    for (int q = 0; q < npanels; q++) {
        int column[4];
        for (int j = 0; j < 4; j++) {
            const int slot = m0 + q * pw + j * vw;
            column[j] = slot < xw ? grad_column(bl, slot, 1) : -1;
        }
        const float *rows = t->blocks[k].dir[d].rows + (size_t)k0 * stride;
        float *o = g + (size_t)q * kc * pw;
        for (int kk = 0; kk < kc; kk++, rows += stride, o += pw)
            for (int j = 0; j < 4; j++)
                for (int v = 0; v < vw; v++)
                    o[j * vw + v] = column[j] >= 0 ? rows[column[j] + v] : 0.0f;
    }
}

/* Where a product finds dG's columns: row k of panel p at w + p*panel_stride + k*ldw. */
typedef struct grad_columns {
    const float *w;
    int ldw;
    size_t panel_stride;
} grad_columns;

/* acc (nrows, npanels*4*vw) (+)= a g for one block of kc rows; row r of a is a0 + r, its
 * elements a_stride apart; `first` starts from zero. */
static void block_product(const rnx_kernels *kn, float *acc, const float *a0, ptrdiff_t a_stride,
                          grad_columns g, int kc, int nrows, int npanels, int first) {
    const float *a[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    const size_t width = (size_t)npanels * 4 * kn->vw;
    for (int r0 = 0; r0 < nrows; r0 += kn->mr) {
        const int nr = nrows - r0 < kn->mr ? nrows - r0 : kn->mr;
        for (int i = 0; i < nr; i++) {
            a[i] = a0 + r0 + i;
            out[i] = acc + (size_t)(r0 + i) * width;
            init[i] = out[i];
        }
        kn->matmul(out, first ? NULL : init, a, a_stride, g.w, g.ldw, g.panel_stride, kc, npanels,
                   nr);
    }
}

static void weight_grads_packed(const backward_plan *p, const backward_args *a, int k, int d,
                                int m0, int m1, thread_scratch *ws) {
    const rnx_model *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_block *bl = &m->blocks[k];
    const tape_block *tb = &t->blocks[k];
    const rnx_kernels *kn = bl->kernels;
    const int H = bl->hidden_size, pw = 4 * kn->vw, I_k = bl->input_size;
    const int npanels = (m1 - m0) / pw, K = t->T * t->B, gru = bl->cell == RNX_CELL_GRU;
    const size_t width = (size_t)(m1 - m0);
    float *bias_h = ws->acc_h + (size_t)H * width, *bias_i = ws->acc_i + (size_t)I_k * width;
    for (int k0 = 0; k0 < K; k0 += RNX_KC) {
        const int kc = K - k0 < RNX_KC ? K - k0 : RNX_KC, first = k0 == 0;
        const float *states = tb->dir[d].h + (size_t)k0 * tb->h_stride;
        /* slots past xp_width (a GRU's last panel) read the tail: finite, and never unpacked */
        grad_columns g = {tb->dir[d].rows + (size_t)k0 * tb->row_stride + m0, tb->row_stride,
                          (size_t)pw};
        copy_inputs(ws->inputs, t, m, a->x, k, d, k0, kc);
        block_product(kn, ws->acc_h, states, tb->h_stride, g, kc, H, npanels, first);
        block_product(kn, bias_h, p->ones, 1, g, kc, 1, npanels, first);
        if (gru) {
            pack_input_side(ws->g, t, bl, k, d, k0, kc, m0, npanels);
            g = (grad_columns){ws->g, pw, (size_t)kc * pw};
        }
        block_product(kn, ws->acc_i, ws->inputs, I_k, g, kc, I_k, npanels, first);
        block_product(kn, bias_i, p->ones, 1, g, kc, 1, npanels, first);
    }
    /* into PyTorch's layout: weight_ih (G*H, I_k), weight_hh (G*H, H), bias_ih, bias_hh */
    const rnx_general_params *out = &p->dirs[2 * k + d].grads;
    const int vw = kn->vw, panel = bl->nv * vw;
    for (int slot = m0; slot < m1 && slot < rnx_xp_width(bl); slot++) {
        int gate, unit;
        rnx_panel_slot(bl, slot / panel, (slot % panel) / vw, slot % vw, &gate, &unit);
        if (unit >= H) continue;
        const size_t row = (size_t)gate * H + unit, c = (size_t)(slot - m0);
        for (int u = 0; u < H; u++) out->w_hh[row * H + u] = ws->acc_h[u * width + c];
        for (int i = 0; i < I_k; i++) out->w_ih[row * I_k + i] = ws->acc_i[i * width + c];
        out->b_hh[row] = bias_h[c];
        out->b_ih[row] = bias_i[c];
    }
}

/* A plain block's weight gradients of slots [j0, j1): its active (step, row) pairs in the order
 * k = s*B + b, KC at a time, each adding to sums that run in that order. */
static void weight_grads_plain(const backward_plan *p, const backward_args *a, int k, int d,
                               int j0, int j1, thread_scratch *ws) {
    const rnx_model *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_block *bl = &m->blocks[k];
    const int K = t->T * t->B, lstm = bl->cell == RNX_CELL_LSTM, reverse = walks_back(bl, d);
    int n = 0;
    for (int q = 0; q < K; q++) {
        const int s = q / t->B, b = q % t->B, time = step_time(reverse, t->T, s);
        if (active(t, b, time)) {
            ws->pairs[0][n] = tape_row(t, k, d, s, b);
            ws->pairs[1][n] = block_input(t, m, a->x, k, b, time);
            ws->pairs[2][n] = tape_h(t, k, d, s, b);
            ws->pairs[3][n] = lstm ? tape_c(t, bl, k, d, s, b) : NULL;
            n++;
        }
        if (n == RNX_KC || (q == K - 1 && n > 0)) {
            rnx_general_weight_grads(&bl->general[d], &p->dirs[2 * k + d].grads, j0, j1,
                                     ws->pairs[0], ws->pairs[1], ws->pairs[2], ws->pairs[3], n);
            n = 0;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * rnx_backward
 * ------------------------------------------------------------------------------------------- */

static int max_int(int a, int b) { return a > b ? a : b; }

typedef struct backward_split {
    backward_plan *p;
    const backward_args *args;
} backward_split;

/* Parts planned for p->threads threads; a team given fewer threads takes several each. */
static void backward_body(void *arg, rnx_team team) {
    backward_plan *p = ((backward_split *)arg)->p;
    const backward_args *args = ((backward_split *)arg)->args;
    const int nb = p->m->n_blocks, threads = p->threads;
    /* phase 1: rows are independent through every block, so no barrier until phase 2 */
    for (int part = team.id; part < threads; part += team.size) {
        int b0, b1;
        slice(p->t->B, part, threads, &b0, &b1);
        for (int k = nb - 1; b1 > b0 && k >= 0; k--) {
            const rnx_block *b = &p->m->blocks[k];
            for (int d = 0; d < b->directions; d++) {
                if (trains_plain(b)) backward_plain(p, args, k, d, b0, b1, &p->scratch[part]);
                else backward_packed(p, args, k, d, b0, b1, &p->scratch[part]);
            }
            if (k > 0 || args->dx) input_grad(p, args, k, b0, b1);
            /* the block below's outputs reached this block through its dropout mask */
            if (k > 0) apply_dropout(p->t, k, p->dlayer, (size_t)p->Wd, b0, b1);
        }
    }
    rnx_team_barrier(team);
    /* phase 2: each block and direction's slots split over the parts */
    for (int part = team.id; part < threads; part += team.size)
        for (int k = 0; k < nb; k++) {
            const rnx_block *b = &p->m->blocks[k];
            for (int d = 0; d < b->directions; d++) {
                int q0, q1;
                slice(p->dirs[2 * k + d].slots, part, threads, &q0, &q1);
                if (q1 <= q0) continue;
                if (trains_plain(b)) {
                    weight_grads_plain(p, args, k, d, q0, q1, &p->scratch[part]);
                } else {
                    const int pw = 4 * b->kernels->vw;
                    weight_grads_packed(p, args, k, d, q0 * pw, q1 * pw, &p->scratch[part]);
                }
            }
        }
}

rnx_status rnx_backward(const rnx_model *model, rnx_tape *tape, float *grads, float *dx,
                        float *dh0, float *dc0, const float *x, const float *dseq,
                        const float *dh_n, const float *dc_n, int n_threads) {
    if (!model || !tape || !grads || !x) return RNX_ERR_NULL_ARGUMENT;
    if (tape->model != model || n_threads > RNX_MAX_THREADS) return RNX_ERR_BAD_ARGUMENT;
    const rnx_model *m = model;
    const int nb = m->n_blocks, B = tape->B;
    const int threads = thread_count(n_threads, 2.0 * blocks_macs(m, B, tape->T));

    backward_plan p = {0};
    p.m = m;
    p.t = tape;
    p.threads = threads;
    p.Bs = (B + threads - 1) / threads;
    p.need_dx = dx != NULL;
    int slot_panels_max = 0;
    for (int k = 0; k < nb; k++) {
        const rnx_block *b = &m->blocks[k];
        p.S_max = max_int(p.S_max, b->state_size);
        p.I_max = max_int(p.I_max, b->input_size);
        p.Hp_max = max_int(p.Hp_max, trains_plain(b) ? b->hidden_size : b->hidden_padded);
        p.Hq_max = max_int(p.Hq_max, trains_plain(b) ? b->state_size : hq(b));
        /* a row of dlayer holds a block's output gradient, then its input gradient (padded to
         * whole panels by the packed products) */
        p.Wd = max_int(p.Wd, k < nb - 1 ? b->width : 0);
        if (k > 0 || dx) p.Wd = max_int(p.Wd, round_up(b->input_size, 4 * b->kernels->vw));
        if (trains_plain(b)) p.general_max = max_int(p.general_max, (int)rnx_general_scratch_size(&b->general[0]));
        else slot_panels_max = max_int(slot_panels_max, (rnx_xp_width(b) + 4 * b->kernels->vw - 1) / (4 * b->kernels->vw));
    }
    p.Mt = (slot_panels_max + threads - 1) / threads * 4 * m->kernels->vw;
    p.dirs = calloc((size_t)nb * 2, sizeof *p.dirs);
    p.scratch = calloc((size_t)threads, sizeof *p.scratch);
    void *block = NULL;
    rnx_status status = p.dirs && p.scratch ? rnx_arena_build(&block, backward_layout, &p)
                                            : RNX_ERR_OUT_OF_MEMORY;
    if (status != RNX_OK) {
        free(p.dirs);
        free(p.scratch);
        return status;
    }
    for (int i = 0; i < RNX_KC; i++) p.ones[i] = 1.0f;
    float *at = grads;
    for (int k = 0; k < nb; k++) {
        const rnx_block *b = &m->blocks[k];
        const rnx_layer *layer = b->layer;
        for (int d = 0; d < b->directions; d++) {
            dir_grads *g = &p.dirs[2 * k + d];
            float *start = at;
            at += rnx_general_place(&g->grads, layer, at);
            if (trains_plain(b)) {
                g->slots = rnx_general_grad_slots(&b->general[d]);
                memset(start, 0, (size_t)(at - start) * sizeof(float)); /* sums start at zero */
                continue;
            }
            g->slots = (rnx_xp_width(b) + 4 * b->kernels->vw - 1) / (4 * b->kernels->vw);
            pack_transposed(b, g->w_hh_t, b->packed[d].wh, b->hidden_size, rnx_xp_width(b), 0);
            if (g->w_ih_t)
                pack_transposed(b, g->w_ih_t, b->packed[d].wx, b->input_size, input_grad_width(b), 1);
        }
    }

    const backward_args args = {grads, dx, dh0, dc0, x, dseq, dh_n, dc_n};
    backward_split split = {&p, &args};
    rnx_parallel(backward_body, &split, threads);
    tape->model = NULL; /* the gates are gradients now */
    free(block);
    free(p.dirs);
    free(p.scratch);
    return RNX_OK;
}
