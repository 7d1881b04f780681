/* backward.c: training. The tape that a training-mode forward pass fills, rnx_forward_train, and
 * rnx_backward: backpropagation through time. The maths: rnnext/backward.py.
 *
 * Forward in training mode: each thread carries a slice of the batch through every layer, as
 * rnx_forward does, but projects a layer's whole sequence at once straight into the tape and
 * runs the step kernel with its tape output on.
 *
 * Backward, phase 1 (batch slices, no barrier): for each layer from the top and each direction,
 * a walk back over the steps: the fused gate-gradient kernel overwrites each step's gates in the
 * tape with their gradients, then the state gradient goes back through the transposed recurrent
 * weights (one product per step and row tile). The layer's input gradient, which the layer below
 * walks back with, is then one product per (step, row). Phase 2 (after one barrier, the weight
 * gradients' rows split across the threads): dW = dG^T [inputs | previous states], as products
 * over blocks of (step, row) pairs. Every gradient entry is a sum in one fixed order, whatever
 * the number of threads, so results do not depend on it.
 */
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* (step, row) pairs per block of the weight-gradient products: a block of packed previous states
 * (KC x Hp) stays in L2 while the rows of dG^T stream past it. */
#define RNX_KC 256

/* One layer and direction's part of a tape. A tape row (for one step of one sequence) is `width`
 * floats in the kernels' panel layout (rnx_packed), written by the forward pass and overwritten
 * by the backward pass:
 *   LSTM  panels of (i, f, g, o), then c' (Hp)  ->  panels of (di, df, dg, do) pre-activation
 *                                                   gradients, c' kept
 *   GRU   panels of (r, z, n), then W_hn h + b_hn (Hp)
 *                                               ->  panels of (dr, dz, dn * r), then dn (Hp):
 *                                                   the n gate's recurrent and input sides
 *   RNN   the input projection (Hp)             ->  the pre-activation gradient
 * Rows are ordered (step, sequence) with steps in the order the direction takes them. */
typedef struct tape_layer {
    float *gates; /* (T, B, width) */
    float *h;     /* (T+1, B, state_stride): the state before step 0, then after each step */
} tape_layer;

struct rnx_tape {
    rnx_config config;   /* of the model it was made for, isa resolved */
    int B_max, T_max;    /* capacity */
    int B, T;            /* of the last rnx_forward_train */
    int width;           /* floats per tape row */
    int stride;          /* floats from one tape row to the next: width and a cache line, so
                            that the weight gradients, which read columns of many rows, do not
                            find them in a few cache sets */
    const rnx_model *model; /* the model of the last rnx_forward_train; NULL once consumed */
    tape_layer *layers;  /* (L*D) */
    float *outputs;      /* (L-1, B, T, D*H): inner layers' output sequences */
    float *c0;           /* (L*D, B, Hp): the LSTM's initial cell state */
    int32_t *lengths;    /* (B) */
    void *block;
};

/* ---------------------------------------------------------------------------------------------
 * The model as training takes it: a uniform stack of recurrent layers on the packed kernels
 * (one cell, H and direction count). Blocks keep version 0.1's field names, so this view only
 * gathers them; the training of any layer list (branch ctrain) replaces it.
 * ------------------------------------------------------------------------------------------- */

typedef struct train_stack {
    rnx_config config;         /* cell, input_size, hidden_size, num_layers, bidirectional, isa */
    const rnx_kernels *kernels;
    int gates, nv, units_per_panel, hidden_padded, npanels, directions;
    const rnx_block *blocks;   /* (num_layers): every one with the packing of blocks[0] */
} train_stack;

/* *s from `model`, or RNX_ERR_BAD_CONFIG for a model training does not take yet. */
static rnx_status stack_of(const rnx_model *model, train_stack *s) {
    const rnx_block *b = model->blocks;
    if (model->info.n_layers != model->n_blocks) return RNX_ERR_BAD_CONFIG;
    for (int k = 0; k < model->n_blocks; k++)
        if (b[k].general || b[k].reverse || b[k].cell != b[0].cell ||
            b[k].hidden_size != b[0].hidden_size || b[k].directions != b[0].directions ||
            (b[k].directions == 2 && b[k].merge != RNX_MERGE_CONCAT))
            return RNX_ERR_BAD_CONFIG;
    s->config = (rnx_config){b[0].cell, b[0].input_size, b[0].hidden_size, model->n_blocks,
                             b[0].directions - 1, model->info.isa};
    s->kernels = b[0].kernels;
    s->gates = b[0].gates;
    s->nv = b[0].nv;
    s->units_per_panel = b[0].units_per_panel;
    s->hidden_padded = b[0].hidden_padded;
    s->npanels = b[0].npanels;
    s->directions = b[0].directions;
    s->blocks = b;
    return RNX_OK;
}

static const rnx_packed *stack_packed(const train_stack *m, int ld) {
    return &m->blocks[ld / m->directions].packed[ld % m->directions];
}

/* K of layer l's input product: I for layer 0, D*H above. */
static int stack_input_size(const train_stack *m, int l) { return m->blocks[l].input_size; }

/* ---------------------------------------------------------------------------------------------
 * Sizes and memory
 * ------------------------------------------------------------------------------------------- */

static int round_up(int n, int to) { return (n + to - 1) / to * to; }

static int xp_width(const train_stack *m) { return m->npanels * m->nv * m->kernels->vw; }

/* Floats from one state row of the tape to the next: Hp and one cache line more, so that a
 * unit's values down the rows (read in place by the weight gradients) do not share a few cache
 * sets, as a stride of a multiple of 1 KB would make them. */
static int state_stride(const train_stack *m) { return m->hidden_padded + RNX_ALIGN / 4; }

static int tape_width(const train_stack *m) {
    return xp_width(m) + (m->gates == 1 ? 0 : m->hidden_padded);
}

/* The columns of a tape row that hold input-side gate gradients: the GRU's include the tail. */
static int input_grad_width(const train_stack *m) {
    return m->config.cell == RNX_CELL_GRU ? tape_width(m) : xp_width(m);
}

/* ---------------------------------------------------------------------------------------------
 * The tape
 * ------------------------------------------------------------------------------------------- */

typedef struct tape_plan {
    rnx_tape *tape;
    const train_stack *model;
} tape_plan;

static void tape_layout(rnx_arena *a, void *what) {
    tape_plan *p = what;
    rnx_tape *t = p->tape;
    const train_stack *m = p->model;
    const int L = m->config.num_layers, LD = L * m->directions, H = m->config.hidden_size;
    const size_t BT = (size_t)t->B_max * t->T_max;
    for (int ld = 0; ld < LD; ld++) {
        t->layers[ld].gates = rnx_arena_take(a, BT * t->stride, sizeof(float));
        t->layers[ld].h = rnx_arena_take(a, (BT + t->B_max) * state_stride(m), sizeof(float));
    }
    t->outputs = rnx_arena_take(a, (size_t)(L - 1) * BT * m->directions * H, sizeof(float));
    t->c0 = rnx_arena_take(a, (size_t)LD * t->B_max * m->hidden_padded, sizeof(float));
    t->lengths = rnx_arena_take(a, (size_t)t->B_max, sizeof(int32_t));
}

rnx_status rnx_tape_create(rnx_tape **out, const rnx_model *stacked, int B, int T) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    if (!stacked) return RNX_ERR_NULL_ARGUMENT;
    train_stack view;
    const train_stack *model = &view;
    rnx_status s = stack_of(stacked, &view);
    if (s != RNX_OK) return s;
    if (model->config.cell == RNX_CELL_GRU_RESET_BEFORE) return RNX_ERR_BAD_CONFIG;
    if (B < 1 || T < 1) return RNX_ERR_BAD_ARGUMENT;
    if ((long long)B * T > RNX_MAX_ROWS) return RNX_ERR_OVERFLOW;
    rnx_tape *t = calloc(1, sizeof *t);
    if (!t) return RNX_ERR_OUT_OF_MEMORY;
    t->config = model->config;
    t->B_max = B;
    t->T_max = T;
    t->width = tape_width(model);
    t->stride = t->width + RNX_ALIGN / 4;
    t->layers = calloc((size_t)model->config.num_layers * model->directions, sizeof *t->layers);
    if (!t->layers) {
        free(t);
        return RNX_ERR_OUT_OF_MEMORY;
    }
    tape_plan plan = {t, model};
    s = rnx_arena_build(&t->block, tape_layout, &plan);
    if (s != RNX_OK) {
        free(t->layers);
        free(t);
        return s;
    }
    *out = t;
    return RNX_OK;
}

void rnx_tape_free(rnx_tape *tape) {
    if (!tape) return;
    free(tape->block);
    free(tape->layers);
    free(tape);
}

static int same_config(const rnx_config *a, const rnx_config *b) {
    return a->cell == b->cell && a->input_size == b->input_size &&
           a->hidden_size == b->hidden_size && a->num_layers == b->num_layers &&
           a->bidirectional == b->bidirectional && a->isa == b->isa;
}

static float *tape_row(const rnx_tape *t, int ld, int s, int b) {
    return t->layers[ld].gates + ((size_t)s * t->B + b) * t->stride;
}

static float *tape_h(const rnx_tape *t, const train_stack *m, int ld, int slot, int b) {
    return t->layers[ld].h + ((size_t)slot * t->B + b) * state_stride(m);
}

/* The input of layer l at time t of sequence b: a row of x, or of the layer below's outputs. */
static const float *layer_input(const rnx_tape *t, const train_stack *m, const float *x, int l,
                                int b, int time) {
    if (l == 0) return x + ((size_t)b * t->T + time) * m->config.input_size;
    const size_t width = (size_t)m->directions * m->config.hidden_size;
    return t->outputs + (((size_t)(l - 1) * t->B + b) * t->T + time) * width;
}

static int step_time(int reverse, int T, int s) { return reverse ? T - 1 - s : s; }

/* ---------------------------------------------------------------------------------------------
 * Forward in training mode: one thread's rows [b0, b1)
 * ------------------------------------------------------------------------------------------- */

typedef struct train_args {
    float *y, *h_n, *c_n;
    const float *x, *h0, *c0;
} train_args;

static void forward_layer(const train_stack *m, rnx_tape *t, const train_args *a, int l, int d,
                          int b0, int b1, float *cell) {
    const rnx_kernels *k = m->kernels;
    const int D = m->directions, H = m->config.hidden_size, Hp = m->hidden_padded, T = t->T;
    const int ld = l * D + d, mr = k->mr, Bs = b1 - b0;
    const rnx_packed *w = stack_packed(m, ld);
    const float *in[RNX_MAX_MR], *h_in[RNX_MAX_MR];
    float *o[RNX_MAX_MR], *h_out[RNX_MAX_MR], *c[RNX_MAX_MR];
    unsigned char active[RNX_MAX_MR];

    for (int r = 0; r < Bs; r++) {
        const int b = b0 + r;
        float *h = tape_h(t, m, ld, 0, b);
        memset(h, 0, Hp * sizeof(float));
        memset(cell + (size_t)r * Hp, 0, Hp * sizeof(float));
        if (a->h0) memcpy(h, a->h0 + ((size_t)ld * t->B + b) * H, H * sizeof(float));
        if (a->c0 && m->config.cell == RNX_CELL_LSTM)
            memcpy(cell + (size_t)r * Hp, a->c0 + ((size_t)ld * t->B + b) * H, H * sizeof(float));
        memcpy(t->c0 + ((size_t)ld * t->B + b) * Hp, cell + (size_t)r * Hp, Hp * sizeof(float));
    }

    /* the input projections of every (step, row) pair, straight into the tape */
    const int nq = T * Bs;
    for (int q0 = 0; q0 < nq; q0 += mr) {
        const int nr = nq - q0 < mr ? nq - q0 : mr;
        for (int i = 0; i < nr; i++) {
            const int s = (q0 + i) / Bs, b = b0 + (q0 + i) % Bs;
            in[i] = layer_input(t, m, a->x, l, b, step_time(d, T, s));
            o[i] = tape_row(t, ld, s, b);
        }
        k->project(o, in, w, m->nv, 0, m->npanels, nr);
    }

    float *y = NULL;
    size_t y_width = (size_t)D * H;
    if (l < m->config.num_layers - 1) y = t->outputs + (size_t)l * t->B * T * y_width;
    else y = a->y;
    for (int s = 0; s < T; s++) {
        const int time = step_time(d, T, s);
        for (int r0 = 0; r0 < Bs; r0 += mr) {
            const int nr = Bs - r0 < mr ? Bs - r0 : mr;
            for (int i = 0; i < nr; i++) {
                const int b = b0 + r0 + i;
                h_in[i] = tape_h(t, m, ld, s, b);
                h_out[i] = tape_h(t, m, ld, s + 1, b);
                c[i] = cell + (size_t)(r0 + i) * Hp;
                o[i] = tape_row(t, ld, s, b);
                active[i] = time < t->lengths[b];
            }
            k->step_train(m->config.cell, h_out, c, h_in, (const float *const *)o, active, o, w,
                          H, m->npanels, nr);
        }
        if (!y) continue;
        for (int b = b0; b < b1; b++) {
            float *dst = y + ((size_t)b * T + time) * y_width + (size_t)d * H;
            if (time < t->lengths[b]) memcpy(dst, tape_h(t, m, ld, s + 1, b), H * sizeof(float));
            else memset(dst, 0, H * sizeof(float));
        }
    }
    for (int b = b0; b < b1; b++) {
        const size_t dst = ((size_t)ld * t->B + b) * H;
        if (a->h_n) memcpy(a->h_n + dst, tape_h(t, m, ld, T, b), H * sizeof(float));
        if (a->c_n && m->config.cell == RNX_CELL_LSTM)
            memcpy(a->c_n + dst, cell + (size_t)(b - b0) * Hp, H * sizeof(float));
    }
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

/* The threads for a call of `macs` multiply-adds: n_threads (<= 0: rnx_max_threads()), fewer
 * when the work is small, and one in a forked child (rnx_threads_for_call). Results never
 * depend on it. */
static int thread_count(int n_threads, double macs) {
    int threads = n_threads > 0 ? n_threads : rnx_max_threads();
    if (threads > macs / RNX_MACS_PER_THREAD) threads = (int)(macs / RNX_MACS_PER_THREAD);
    return rnx_threads_for_call(threads > 1 ? threads : 1);
}

/* Multiply-adds of one layer's products over B*T steps: the input and recurrent products of the
 * forward pass; the backward pass does about twice as many. */
static double layer_macs(const train_stack *m, int layer, int B, int T) {
    const double GH = (double)m->gates * m->config.hidden_size;
    return (double)B * T * m->directions * GH *
           (stack_input_size(m, layer) + m->config.hidden_size);
}

static double stack_macs(const train_stack *m, int B, int T) {
    double macs = 0.0;
    for (int l = 0; l < m->config.num_layers; l++) macs += layer_macs(m, l, B, T);
    return macs;
}

#ifdef _OPENMP
static int thread_id(void) { return omp_get_thread_num(); }
static int team_size(void) { return omp_get_num_threads(); }
#else
static int thread_id(void) { return 0; }
static int team_size(void) { return 1; }
#endif

rnx_status rnx_forward_train(const rnx_model *stacked, rnx_tape *tape, float *y, float *h_n,
                             float *c_n, const float *x, const float *h0, const float *c0,
                             const int32_t *lengths, int B, int T, int n_threads) {
    if (!stacked || !tape || !x) return RNX_ERR_NULL_ARGUMENT;
    train_stack view;
    const train_stack *model = &view;
    if (stack_of(stacked, &view) != RNX_OK) return RNX_ERR_BAD_ARGUMENT;
    if (!same_config(&tape->config, &model->config) || B < 1 || T < 1 || B > tape->B_max ||
        T > tape->T_max)
        return RNX_ERR_BAD_ARGUMENT;
    if (lengths)
        for (int b = 0; b < B; b++)
            if (lengths[b] < 1 || lengths[b] > T) return RNX_ERR_BAD_ARGUMENT;
    tape->model = NULL;
    tape->B = B;
    tape->T = T;
    for (int b = 0; b < B; b++) tape->lengths[b] = lengths ? lengths[b] : T;
    const train_args args = {y, h_n, c_n, x, h0, c0};
    int threads = thread_count(n_threads, stack_macs(model, B, T));
    if (threads > B) threads = B;
    const size_t cell_floats = (size_t)((B + threads - 1) / threads) * model->hidden_padded;
    float *cells;
    if (posix_memalign((void **)&cells, RNX_ALIGN, (size_t)threads * cell_floats * sizeof(float)))
        return RNX_ERR_OUT_OF_MEMORY;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        /* parts are planned for `threads`; a team given fewer threads takes several each */
        for (int part = thread_id(); part < threads; part += team_size()) {
            int b0, b1;
            slice(B, part, threads, &b0, &b1);
            for (int l = 0; b1 > b0 && l < model->config.num_layers; l++)
                for (int d = 0; d < model->directions; d++)
                    forward_layer(model, tape, &args, l, d, b0, b1,
                                  cells + (size_t)part * cell_floats);
        }
    }
    free(cells);
    tape->model = stacked;
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Backward: where each gate's gradient lives in a tape row, and the transposed weights
 * ------------------------------------------------------------------------------------------- */

/* The tape-row column that holds the gradient of gate slot `slot` (panel layout, as the packed
 * weights): the same column, except the GRU n gate's input side, which is in the tail. */
static int grad_column(const train_stack *m, int slot, int input_side) {
    const int vw = m->kernels->vw, panel = m->nv * vw;
    if (input_side && m->config.cell == RNX_CELL_GRU && (slot % panel) / vw == 2)
        return xp_width(m) + slot / panel * vw + slot % vw;
    return slot;
}

/* The inverse: the gate slot whose gradient tape-row column k holds, or -1 (the GRU's recurrent-
 * side n columns seen from the input side). */
static int grad_slot(const train_stack *m, int k, int input_side) {
    const int vw = m->kernels->vw, panel = m->nv * vw, xw = xp_width(m);
    if (k >= xw) return (k - xw) / vw * panel + 2 * vw + (k - xw) % vw;
    if (input_side && m->config.cell == RNX_CELL_GRU && (k % panel) / vw == 2) return -1;
    return k;
}

/* dst (npanels, K, 4*vw): dst[q][k][j] = W[slot of column k][q*4*vw + j], the transpose of a
 * packed weight (npanels_w, cols, nv, vw) (rnx_packed wx or wh), zero where either index is
 * padding: for the products of tape rows (K columns) with W. */
static void pack_transposed(const train_stack *m, float *dst, const float *packed, int cols, int K,
                            int input_side) {
    const int pw = 4 * m->kernels->vw, panel = m->nv * m->kernels->vw;
    const int npanels = (cols + pw - 1) / pw;
    for (int q = 0; q < npanels; q++)
        for (int k = 0; k < K; k++) {
            const int slot = grad_slot(m, k, input_side);
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
    const float *x, *dy, *dh_n, *dc_n;
} backward_args;

/* Per layer and direction: where its gradients start in `grads`, and its transposed weights. */
typedef struct layer_grads {
    size_t offset; /* of weight_ih in the flat parameter array */
    float *w_hh_t; /* (Hq / (4*vw), xp_width, 4*vw): W_hh^T, for the state gradient */
    float *w_ih_t; /* (ceil(I_l / (4*vw)), input_grad_width, 4*vw): W_ih^T, or NULL */
} layer_grads;

/* One thread's scratch. Phase 2 computes dW^T: rows are state units or inputs (then the bias),
 * columns are gate slots. */
typedef struct thread_scratch {
    float *dh[2];  /* (Bs, Hq): the state gradient, at this step and one step back */
    float *dc;     /* (Bs, Hp) */
    float *inputs; /* (KC, I_max): a block of layer inputs */
    float *g;      /* (Mt / (4*vw), KC, 4*vw): a block of the GRU's input-side gradient columns */
    float *acc_h; /* (H + 1, Mt): dW_hh^T and db_hh of the thread's gate slots */
    float *acc_i; /* (I_max + 1, Mt): dW_ih^T and db_ih */
} thread_scratch;

typedef struct backward_plan {
    const train_stack *m;
    const rnx_tape *t;
    int threads; /* parts of the batch and of the gate slots */
    int Bs;      /* the largest batch part */
    int Mt;      /* the largest part of the gate slots, a multiple of 4*vw */
    int Hq;      /* H rounded up to 4*vw: a state-gradient row */
    int I_max;   /* the widest layer input */
    int Wd;      /* a row of dlayer */
    int need_dx;
    layer_grads *layers;     /* (L*D) */
    thread_scratch *scratch; /* (threads) */
    float *dlayer;           /* (B, T, Wd): a layer's input gradient, for the layer below */
    float *ones;             /* (KC) */
} backward_plan;

static void backward_layout(rnx_arena *a, void *what) {
    backward_plan *p = what;
    const train_stack *m = p->m;
    const int L = m->config.num_layers, D = m->directions, pw = 4 * m->kernels->vw;
    const int H = m->config.hidden_size;
    for (int l = 0; l < L; l++)
        for (int d = 0; d < D; d++) {
            layer_grads *g = &p->layers[l * D + d];
            g->w_hh_t = rnx_arena_take(a, (size_t)p->Hq * xp_width(m), sizeof(float));
            const int I_l = stack_input_size(m, l);
            g->w_ih_t = l > 0 || p->need_dx
                            ? rnx_arena_take(a, (size_t)round_up(I_l, pw) * input_grad_width(m),
                                         sizeof(float))
                            : NULL;
        }
    for (int i = 0; i < p->threads; i++) {
        thread_scratch *s = &p->scratch[i];
        s->dh[0] = rnx_arena_take(a, (size_t)p->Bs * p->Hq, sizeof(float));
        s->dh[1] = rnx_arena_take(a, (size_t)p->Bs * p->Hq, sizeof(float));
        s->dc = rnx_arena_take(a, (size_t)p->Bs * m->hidden_padded, sizeof(float));
        s->inputs = rnx_arena_take(a, (size_t)RNX_KC * p->I_max, sizeof(float));
        s->g = m->config.cell == RNX_CELL_GRU ? rnx_arena_take(a, (size_t)p->Mt * RNX_KC, sizeof(float))
                                               : NULL;
        s->acc_h = rnx_arena_take(a, (size_t)(H + 1) * p->Mt, sizeof(float));
        s->acc_i = rnx_arena_take(a, (size_t)(p->I_max + 1) * p->Mt, sizeof(float));
    }
    p->dlayer = p->Wd ? rnx_arena_take(a, (size_t)p->t->B * p->t->T * p->Wd, sizeof(float)) : NULL;
    p->ones = rnx_arena_take(a, RNX_KC, sizeof(float));
}

/* ---------------------------------------------------------------------------------------------
 * Backward, phase 1: one thread's rows [b0, b1), walking back over one layer and direction
 * ------------------------------------------------------------------------------------------- */

/* dLoss/d(output) of layer l, direction d at time `time` of sequence b: the caller's dy for the
 * top layer, the layer above's input gradient below it; NULL for none. */
static const float *output_grad(const backward_plan *p, const backward_args *a, int l, int d,
                                int b, int time) {
    const train_stack *m = p->m;
    const int H = m->config.hidden_size, D = m->directions, T = p->t->T;
    if (l == m->config.num_layers - 1)
        return a->dy ? a->dy + ((size_t)b * T + time) * D * H + (size_t)d * H : NULL;
    return p->dlayer + ((size_t)b * T + time) * p->Wd + (size_t)d * H;
}

static void backward_layer(const backward_plan *p, const backward_args *a, int l, int d, int b0,
                           int b1, thread_scratch *ws) {
    const train_stack *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_kernels *k = m->kernels;
    const int D = m->directions, H = m->config.hidden_size, Hp = m->hidden_padded, T = t->T;
    const int ld = l * D + d, Bs = b1 - b0, mr = k->mr, Hq = p->Hq, cell = m->config.cell;
    const int xw = xp_width(m), nq = Hq / (4 * k->vw);
    const float *w_t = p->layers[ld].w_hh_t;
    const float *g_rows[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    float *dh = ws->dh[0], *dh_next = ws->dh[1];

    /* padding lanes stay zero: the transposed weights' padding columns are zero */
    memset(dh, 0, (size_t)Bs * Hq * sizeof(float));
    memset(dh_next, 0, (size_t)Bs * Hq * sizeof(float));
    memset(ws->dc, 0, (size_t)Bs * Hp * sizeof(float));
    for (int r = 0; r < Bs; r++) {
        const size_t src = ((size_t)ld * t->B + b0 + r) * H;
        if (a->dh_n) memcpy(dh + (size_t)r * Hq, a->dh_n + src, H * sizeof(float));
        if (a->dc_n && cell == RNX_CELL_LSTM)
            memcpy(ws->dc + (size_t)r * Hp, a->dc_n + src, H * sizeof(float));
    }
    for (int s = T - 1; s >= 0; s--) {
        const int time = step_time(d, T, s);
        for (int r = 0; r < Bs; r++) {
            const int b = b0 + r;
            float *g = tape_row(t, ld, s, b), *dh_r = dh + (size_t)r * Hq;
            if (time >= t->lengths[b]) { /* the state passed through unchanged */
                memset(g, 0, (size_t)t->width * sizeof(float));
                memcpy(dh_next + (size_t)r * Hq, dh_r, (size_t)Hq * sizeof(float));
                continue;
            }
            const float *dout = output_grad(p, a, l, d, b, time);
            if (dout)
                for (int u = 0; u < H; u++) dh_r[u] += dout[u];
            /* a sequence's active steps are consecutive; before the first: the initial state */
            const int prev_active = s > 0 && step_time(d, T, s - 1) < t->lengths[b];
            const float *c_prev = prev_active ? tape_row(t, ld, s - 1, b) + xw
                                              : t->c0 + ((size_t)ld * t->B + b) * Hp;
            k->cell_grads(cell, g, dh_next + (size_t)r * Hq, ws->dc + (size_t)r * Hp, dh_r,
                          c_prev, tape_h(t, m, ld, s, b), tape_h(t, m, ld, s + 1, b), m->npanels);
        }
        for (int r0 = 0; r0 < Bs; r0 += mr) {
            const int nr = Bs - r0 < mr ? Bs - r0 : mr;
            for (int i = 0; i < nr; i++) {
                g_rows[i] = tape_row(t, ld, s, b0 + r0 + i);
                out[i] = dh_next + (size_t)(r0 + i) * Hq;
                init[i] = out[i];
            }
            k->matmul(out, init, g_rows, 1, w_t, 4 * k->vw, (size_t)xw * 4 * k->vw, xw, nq, nr);
        }
        float *swap = dh;
        dh = dh_next;
        dh_next = swap;
    }
    for (int r = 0; r < Bs; r++) {
        const size_t dst = ((size_t)ld * t->B + b0 + r) * H;
        if (a->dh0) memcpy(a->dh0 + dst, dh + (size_t)r * Hq, H * sizeof(float));
        if (a->dc0 && cell == RNX_CELL_LSTM)
            memcpy(a->dc0 + dst, ws->dc + (size_t)r * Hp, H * sizeof(float));
    }
}

/* Layer l's input gradient for rows [b0, b1), into dlayer (and dx for layer 0): the sum over
 * directions, in order, of the input-side gate gradients times W_ih. */
static void input_grad(const backward_plan *p, const backward_args *a, int l, int b0, int b1) {
    const train_stack *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_kernels *k = m->kernels;
    const int D = m->directions, T = t->T, mr = k->mr;
    const int I_l = stack_input_size(m, l), nq = (I_l + 4 * k->vw - 1) / (4 * k->vw);
    const float *g_rows[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    const int nrows = (b1 - b0) * T;
    for (int q0 = 0; q0 < nrows; q0 += mr) {
        const int nr = nrows - q0 < mr ? nrows - q0 : mr;
        for (int d = 0; d < D; d++) {
            for (int i = 0; i < nr; i++) {
                const int b = b0 + (q0 + i) / T, time = (q0 + i) % T;
                g_rows[i] = tape_row(t, l * D + d, step_time(d, T, time), b);
                out[i] = p->dlayer + ((size_t)b * T + time) * p->Wd;
                init[i] = out[i];
            }
            const int K = input_grad_width(m);
            k->matmul(out, d == 0 ? NULL : init, g_rows, 1, p->layers[l * D + d].w_ih_t,
                      4 * k->vw, (size_t)K * 4 * k->vw, K, nq, nr);
        }
        if (l > 0 || !a->dx) continue;
        for (int i = 0; i < nr; i++) {
            const int b = b0 + (q0 + i) / T, time = (q0 + i) % T;
            memcpy(a->dx + ((size_t)b * T + time) * I_l, out[i], (size_t)I_l * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward, phase 2: the weight gradients of one layer and direction for gate slots [m0, m1),
 * as dW^T = [states | inputs]^T dG over blocks of KC (step, sequence) pairs k = s*B + b: a
 * product whose `a` rows are read in place from the tape's states (a unit's values are Hp apart)
 * and from a copy of the block's input rows; a row of ones gives the bias gradients.
 * ------------------------------------------------------------------------------------------- */

/* inputs (kc, I_l): the layer's input rows of pairs k0 .. k0+kc-1, one after the other. */
static void copy_inputs(float *inputs, const rnx_tape *t, const train_stack *m, const float *x,
                        int l, int d, int k0, int kc) {
    const size_t I_l = (size_t)stack_input_size(m, l);
    for (int kk = 0; kk < kc; kk++) {
        const int s = (k0 + kk) / t->B, b = (k0 + kk) % t->B, time = step_time(d, t->T, s);
        /* inputs past a sequence's length meet zero gate gradients: zeros keep NaN padding out */
        float *row = inputs + kk * I_l;
        if (time < t->lengths[b]) memcpy(row, layer_input(t, m, x, l, b, time), I_l * sizeof(float));
        else memset(row, 0, I_l * sizeof(float));
    }
}

/* g (npanels, kc, 4*vw): the GRU's input-side gradient columns of gate slots
 * [m0, m0 + npanels*4*vw) of tape rows k0 .. k0+kc-1 (the n gate's are in the tail), zero past
 * the last slot. Every other product with dG reads the tape in place. */
static void pack_input_side(float *g, const rnx_tape *t, const train_stack *m, int ld, int k0,
                            int kc, int m0, int npanels) {
    const int vw = m->kernels->vw, pw = 4 * vw, xw = xp_width(m);
    for (int q = 0; q < npanels; q++) {
        int column[4];
        for (int j = 0; j < 4; j++) {
            const int slot = m0 + q * pw + j * vw;
            column[j] = slot < xw ? grad_column(m, slot, 1) : -1;
        }
        const float *rows = t->layers[ld].gates + (size_t)k0 * t->stride;
        float *o = g + (size_t)q * kc * pw;
        for (int kk = 0; kk < kc; kk++, rows += t->stride, o += pw)
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
static void block_product(const rnx_kernels *k, float *acc, const float *a0, ptrdiff_t a_stride,
                          grad_columns g, int kc, int nrows, int npanels, int first) {
    const float *a[RNX_MAX_MR], *init[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    const size_t width = (size_t)npanels * 4 * k->vw;
    for (int r0 = 0; r0 < nrows; r0 += k->mr) {
        const int nr = nrows - r0 < k->mr ? nrows - r0 : k->mr;
        for (int i = 0; i < nr; i++) {
            a[i] = a0 + r0 + i;
            out[i] = acc + (size_t)(r0 + i) * width;
            init[i] = out[i];
        }
        k->matmul(out, first ? NULL : init, a, a_stride, g.w, g.ldw, g.panel_stride, kc, npanels,
                  nr);
    }
}

static void weight_grads(const backward_plan *p, const backward_args *a, int l, int d, int m0,
                         int m1, thread_scratch *ws) {
    const train_stack *m = p->m;
    const rnx_tape *t = p->t;
    const rnx_kernels *k = m->kernels;
    const int ld = l * m->directions + d, H = m->config.hidden_size, pw = 4 * k->vw;
    const int I_l = stack_input_size(m, l), npanels = (m1 - m0) / pw;
    const int K = t->T * t->B, gru = m->config.cell == RNX_CELL_GRU;
    const size_t width = (size_t)(m1 - m0);
    float *bias_h = ws->acc_h + (size_t)H * width, *bias_i = ws->acc_i + (size_t)I_l * width;
    for (int k0 = 0; k0 < K; k0 += RNX_KC) {
        const int kc = K - k0 < RNX_KC ? K - k0 : RNX_KC, first = k0 == 0;
        const float *states = tape_h(t, m, ld, 0, 0) + (size_t)k0 * state_stride(m);
        /* slots past xp_width (a GRU's last panel) read the tail: finite, and never unpacked */
        grad_columns g = {t->layers[ld].gates + (size_t)k0 * t->stride + m0, t->stride,
                          (size_t)pw};
        copy_inputs(ws->inputs, t, m, a->x, l, d, k0, kc);
        block_product(k, ws->acc_h, states, state_stride(m), g, kc, H, npanels, first);
        block_product(k, bias_h, p->ones, 1, g, kc, 1, npanels, first);
        if (gru) {
            pack_input_side(ws->g, t, m, ld, k0, kc, m0, npanels);
            g = (grad_columns){ws->g, pw, (size_t)kc * pw};
        }
        block_product(k, ws->acc_i, ws->inputs, I_l, g, kc, I_l, npanels, first);
        block_product(k, bias_i, p->ones, 1, g, kc, 1, npanels, first);
    }
    /* into PyTorch's layout: weight_ih (G*H, I_l), weight_hh (G*H, H), bias_ih, bias_hh */
    const size_t GH = (size_t)m->gates * H;
    float *w_ih = a->grads + p->layers[ld].offset, *w_hh = w_ih + GH * I_l;
    float *b_ih = w_hh + GH * H, *b_hh = b_ih + GH;
    const int vw = k->vw, panel = m->nv * vw;
    for (int slot = m0; slot < m1 && slot < xp_width(m); slot++) {
        int gate, unit;
        rnx_panel_slot(m->blocks, slot / panel, (slot % panel) / vw, slot % vw, &gate, &unit);
        if (unit >= H) continue;
        const size_t row = (size_t)gate * H + unit, c = (size_t)(slot - m0);
        for (int u = 0; u < H; u++) w_hh[row * H + u] = ws->acc_h[u * width + c];
        for (int i = 0; i < I_l; i++) w_ih[row * I_l + i] = ws->acc_i[i * width + c];
        b_hh[row] = bias_h[c];
        b_ih[row] = bias_i[c];
    }
}

/* ---------------------------------------------------------------------------------------------
 * rnx_backward
 * ------------------------------------------------------------------------------------------- */

rnx_status rnx_backward(const rnx_model *model, rnx_tape *tape, float *grads, float *dx,
                        float *dh0, float *dc0, const float *x, const float *dy, const float *dh_n,
                        const float *dc_n, int n_threads) {
    if (!model || !tape || !grads || !x) return RNX_ERR_NULL_ARGUMENT;
    train_stack view;
    if (tape->model != model || stack_of(model, &view) != RNX_OK) return RNX_ERR_BAD_ARGUMENT;
    const train_stack *m = &view;
    const int L = m->config.num_layers, D = m->directions, LD = L * D, B = tape->B;
    const int H = m->config.hidden_size, I = m->config.input_size, pw = 4 * m->kernels->vw;
    const int threads = thread_count(n_threads, 2.0 * stack_macs(m, B, tape->T));
    const int slot_panels = (xp_width(m) + pw - 1) / pw;

    backward_plan p = {0};
    p.m = m;
    p.t = tape;
    p.threads = threads;
    p.Bs = (B + threads - 1) / threads;
    p.Mt = (slot_panels + threads - 1) / threads * pw;
    p.Hq = round_up(H, pw);
    p.I_max = L > 1 && D * H > I ? D * H : I;
    p.Wd = round_up((L > 1 ? D * H : 0) > (dx ? I : 0) ? D * H : (dx ? I : 0), pw);
    p.need_dx = dx != NULL;
    p.layers = calloc((size_t)LD, sizeof *p.layers);
    p.scratch = calloc((size_t)threads, sizeof *p.scratch);
    void *block = NULL;
    rnx_status status = p.layers && p.scratch ? rnx_arena_build(&block, backward_layout, &p)
                                              : RNX_ERR_OUT_OF_MEMORY;
    if (status != RNX_OK) {
        free(p.layers);
        free(p.scratch);
        return status;
    }
    for (int i = 0; i < RNX_KC; i++) p.ones[i] = 1.0f;
    size_t offset = 0;
    for (int l = 0; l < L; l++) {
        const int I_l = stack_input_size(m, l);
        for (int d = 0; d < D; d++) {
            layer_grads *g = &p.layers[l * D + d];
            const rnx_packed *w = stack_packed(m, l * D + d);
            g->offset = offset;
            offset += (size_t)m->gates * H * ((size_t)I_l + H + 2);
            pack_transposed(m, g->w_hh_t, w->wh, H, xp_width(m), 0);
            if (g->w_ih_t) pack_transposed(m, g->w_ih_t, w->wx, I_l, input_grad_width(m), 1);
        }
    }

    const backward_args args = {grads, dx, dh0, dc0, x, dy, dh_n, dc_n};
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        /* phase 1: rows are independent through every layer, so no barrier until phase 2 */
        for (int part = thread_id(); part < threads; part += team_size()) {
            int b0, b1;
            slice(B, part, threads, &b0, &b1);
            for (int l = L - 1; b1 > b0 && l >= 0; l--) {
                for (int d = 0; d < D; d++)
                    backward_layer(&p, &args, l, d, b0, b1, &p.scratch[part]);
                if (l > 0 || dx) input_grad(&p, &args, l, b0, b1);
            }
        }
#ifdef _OPENMP
#pragma omp barrier
#endif
        for (int part = thread_id(); part < threads; part += team_size()) {
            int q0, q1;
            slice(slot_panels, part, threads, &q0, &q1);
            for (int ld = 0; q1 > q0 && ld < LD; ld++)
                weight_grads(&p, &args, ld / D, ld % D, q0 * pw, q1 * pw, &p.scratch[part]);
        }
    }
    tape->model = NULL; /* the gates are gradients now */
    free(block);
    free(p.layers);
    free(p.scratch);
    return RNX_OK;
}
