/* rnx_internal.h: what the C core's files share and nothing outside csrc/ sees. */
#ifndef RNX_INTERNAL_H
#define RNX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "rnnext.h"

/* The largest row tile of any kernel (rows of the batch computed together). */
#define RNX_MAX_MR 8
/* The widest vector (lanes) of any kernel; packed buffers are aligned to it. */
#define RNX_ALIGN 64

/* One layer and direction's weights, packed at model creation into the kernel's panel layout.
 * A panel covers U hidden units and holds nv vectors of vw lanes for each k:
 *   LSTM (nv=4) and both GRUs (nv=3): vector j is gate j of units p*vw .. p*vw+vw-1 (U = vw);
 *   RNN  (nv=4): vector j holds units p*U + j*vw .. (U = 4*vw), all of the one gate.
 * Units past H are padded with zero weights and biases, which keeps padded state lanes at 0. */
/* One int8 weight (RNX_PRECISION_INT8, see rnnext.h): K padded with zero weights to a multiple of
 * 4, the groups of 4 consecutive k of each column adjacent (the operand of vpdpbusd), and each
 * column's (one PyTorch row's) scale and sum of q_w in the panel layout. */
typedef struct rnx_q8 {
    int8_t *w;      /* (npanels, K4/4, nv, vw, 4) */
    float *scale;   /* (npanels, nv, vw): s_w */
    int32_t *sum;   /* (npanels, nv, vw): sum over k of q_w */
} rnx_q8;

/* An input row prepared for one product at a reduced precision (rnx_kernels.prepare): at int8
 * RNX_K4(K) quantized bytes q (those past K meet zero weights), its scale s_a and zero point z;
 * at bf16 the row rounded to bfloat16 in the layout the kernels' product reads (RNX_BF16_BYTES
 * at most; scale 1, zero 0). */
typedef struct rnx_qrow {
    const uint8_t *q;
    float scale;
    int32_t zero;
} rnx_qrow;

/* K rounded up to the int8 weights' groups of 4, and to the bfloat16 weights' pairs. */
#define RNX_K4(K) (((size_t)(K) + 3) / 4 * 4)
#define RNX_K2(K) (((size_t)(K) + 1) / 2 * 2)
/* The bytes of a row of K inputs prepared for a product (rnx_qrow) at int8, and at bf16. */
#define RNX_Q8_BYTES(K) RNX_K4(K)
#define RNX_BF16_BYTES(K) (RNX_K2(K) * sizeof(float))

typedef struct rnx_packed {
    int in_size;   /* K of the input product: I for layer 0, D*H above */
    float *wx;     /* (npanels, in_size, nv, vw): weight_ih; NULL at bf16 and int8 */
    float *wh;     /* (npanels, H, nv, vw): weight_hh; NULL at bf16 and int8 */
    uint16_t *wx16; /* RNX_PRECISION_BF16: (npanels, K2/2, nv, vw, 2) bfloat16 bits (the top
                       half of a float32) of weight_ih, K rounded up to even (RNX_K2) with zeros,
                       the weights of k and k+1 of a column side by side; */
    uint16_t *wh16; /* weight_hh the same; both NULL at fp32 and int8 */
    rnx_q8 x8, h8; /* RNX_PRECISION_INT8: weight_ih and weight_hh quantized; w NULL otherwise */
    float *bx;     /* (npanels, nv, vw): bias_ih + bias_hh (GRU's n gate: bias_in alone) */
    float *bhn;    /* (npanels, vw): the GRUs' bias_hn, kept out of bx; NULL for other cells */
} rnx_packed;

/* The compute kernels of one instruction set. Both work on a tile of nrows <= mr rows. */
typedef struct rnx_kernels {
    rnx_isa isa;
    int vw; /* lanes per vector */
    int mr; /* rows per full tile */
    /* out[r] = bx + W_x a[r] for r < nrows and the panels [p0, p1); a[r] has w->in_size floats,
     * out[r] is a whole row of npanels*nv*vw floats in the panel layout. At int8 the product
     * and bf16 the product reads qa[r], a[r] prepared (NULL at fp32). */
    void (*project)(float *const *out, const float *const *a, const rnx_qrow *qa,
                    const rnx_packed *w, int nv, int p0, int p1, int nrows);
    /* One time step of `cell` for nrows rows and the panels [p0, p1): gates = xp[r] + W_h h_in[r] (+ bias_hn), then the
     * cell's state update, written to h_out[r] (and c[r] in place for the LSTM). Rows with
     * active[r] == 0 keep their state: h_out[r] = h_in[r], c[r] unchanged. All rows are Hp
     * floats; xp[r] is the row written by project for this step. RNX_CELL_GRU_RESET_BEFORE uses
     * c[r] as scratch for r*h. At int8 and bf16 the product reads qh[r], h_in[r] prepared
     * (NULL at fp32). */
    void (*step)(int cell, float *const *h_out, float *const *c, const float *const *h_in,
                 const rnx_qrow *qh, const float *const *xp, const unsigned char *active,
                 const rnx_packed *w, int H, int p0, int p1, int nrows);
    /* a (K floats) prepared for a product at `precision` (int8: quantized, bf16: rounded) into
     * buf (RNX_Q8_BYTES(K) or RNX_BF16_BYTES(K) bytes, 4-byte aligned); see rnx_qrow */
    void (*prepare)(rnx_qrow *out, uint8_t *buf, const float *a, int K, int precision);
    /* out[i] = f(in[i]) for i < n with the kernels' vector maths (rnx_activation) */
    void (*activate)(rnx_function f, float *out, const float *in, size_t n);
    /* Training. step over all npanels panels that also stores the active rows' gates in tape[r]
     * (see rnx_tape in backward.c; not for RNX_CELL_GRU_RESET_BEFORE); tape[r] may be xp[r]. */
    void (*step_train)(int cell, float *const *h_out, float *const *c, const float *const *h_in,
                       const float *const *xp, const unsigned char *active, float *const *tape,
                       const rnx_packed *w, int H, int npanels, int nrows);
    /* Training. out[r] = init[r] + a[r] W for r < nrows (init NULL: zeros); W (K,
     * npanels*4*vw) has its row k of panel p (4*vw floats) at w + p*panel_stride + k*ldw
     * (packed panels: ldw 4*vw, panel_stride K*4*vw); a[r] has K floats a_stride apart, out[r]
     * and init[r] npanels*4*vw (out may be init). */
    void (*matmul)(float *const *out, const float *const *init, const float *const *a,
                   ptrdiff_t a_stride, const float *w, int ldw, size_t panel_stride, int K,
                   int npanels, int nrows);
    /* Training. The gate gradients of one active step of one row, from dh = dLoss/dh' (Hp
     * floats): g (a tape row, see rnx_tape in backward.c) holds the step's gates and receives
     * their gradients; dc (LSTM) holds dLoss/dc' and receives dLoss/dc; dh_direct receives the
     * part of dLoss/dh that does not pass through W_hh (GRU z*dh, else 0). */
    void (*cell_grads)(int cell, float *g, float *dh_direct, float *dc, const float *dh,
                       const float *c_prev, const float *h_prev, const float *h_new, int npanels);
} rnx_kernels;

extern const rnx_kernels rnx_kernels_scalar;
#if defined(RNX_X86_KERNELS)
extern const rnx_kernels rnx_kernels_avx2;
extern const rnx_kernels rnx_kernels_avx512;
extern const rnx_kernels rnx_kernels_avx512_vnni;
extern const rnx_kernels rnx_kernels_avx_vnni;
extern const rnx_kernels rnx_kernels_avx512_bf16;
#endif

/* x rounded to bfloat16 (nearest, ties to even; NaN stays NaN): the top 16 bits of a float. */
uint16_t rnx_bf16_from_float(float x);
/* x's bfloat16 value as a float (rnx_bf16_from_float's bits widened) */
float rnx_bf16_value(float x);

/* G, the gates of `cell` (an rnx_cell), or 0 for an unknown cell. */
int rnx_cell_gates(int cell);
/* Activation slots of a cell: LSTM f, g, h; GRU f, g; RNN f. */
int rnx_cell_functions(int cell);
/* Whether `act` is an elementwise rnx_act (any but RNX_ACT_SOFTMAX); whether it takes an alpha;
 * a beta. */
int rnx_act_elementwise(int act);
int rnx_act_uses_alpha(int act);
int rnx_act_uses_beta(int act);

/* Threads for a call asking for n_threads (<= 0: rnx_max_threads(); the entry points refuse more
 * than RNX_MAX_THREADS): 1 without OpenMP. */
int rnx_threads_for_call(int n_threads);
/* The threads the last rnx_forward on the calling OS thread ran on (0 before any): noted by the
 * driver, read by callers that check the share they got. */
void rnx_note_team(int threads);
int rnx_last_team(void);

/* An aligned bump allocator over one block (arena.c): rnx_arena_build runs `layout` once with no
 * block to size it (rnx_arena_take returns NULL and counts), then again to place every array in
 * the block it allocated, each aligned to RNX_ALIGN. Size overflow gives RNX_ERR_OVERFLOW. */
typedef struct rnx_arena {
    char *base;
    size_t used;
    int overflow;
} rnx_arena;
void *rnx_arena_take(rnx_arena *a, size_t count, size_t elem);
rnx_status rnx_arena_build(void **block, void (*layout)(rnx_arena *, void *), void *what);

/* The kernels of `isa` (never RNX_ISA_AUTO), or NULL where this build or CPU lacks them. */
const rnx_kernels *rnx_kernels_for(rnx_isa isa);

/* ---------------------------------------------------------------------------------------------
 * The model (model.c): one block per recurrent layer, the embedding and dense layers (head.c)
 * ------------------------------------------------------------------------------------------- */

/* The plain exact path for the options the packed kernels lack (general.c, branch ctrain). */
typedef struct rnx_general rnx_general;

/* One recurrent layer: its sizes, and its weights packed for the kernels and/or in PyTorch's
 * layout for the plain path. The packing fields are those of the single-layer model of version
 * 0.1 (gates .. packed). */
typedef struct rnx_block {
    const rnx_layer *layer; /* its entry in the model's list */
    int cell;               /* rnx_cell */
    int input_size;         /* I_k: K of the input product */
    int hidden_size;        /* H */
    int state_size;         /* S: proj_size, or H */
    int directions;         /* D: 1 or 2 */
    int reverse;            /* 1: a reverse-only layer, its one direction walking t = T-1 .. 0 */
    int merge;              /* rnx_merge of a bidirectional layer */
    int width;              /* W: its output width, 2S for a concat, else S */
    int plain;              /* 1: the forward pass runs the plain path (options the packed kernels
                               lack, rnx_general_needed(layer, 0)); packed is then unset */
    const rnx_kernels *kernels;
    int gates;              /* G */
    int nv;                 /* vectors per panel (0 for a plain block) */
    int units_per_panel;    /* U (0 for a plain block) */
    int hidden_padded;      /* Hp = npanels * U: a state row (a plain block: max(S, H)) */
    int npanels;            /* (0 for a plain block) */
    rnx_packed packed[2];   /* (D): forward, then reverse (a reverse-only layer: its one) */
    const rnx_general *general; /* (D): each direction's plain path (general.h), or NULL for the
                                   packed kernels; set whenever rnx_general_needed(layer, 1),
                                   since training has no packed reset-before GRU */
    size_t state_offset;    /* floats of h per sequence before this layer's in States */
    size_t cell_offset;     /* the same for c (LSTM layers only take room) */
} rnx_block;

/* Floats of a block's input projection row: the panel layout's, or G*H on the plain path. */
static inline int rnx_xp_width(const rnx_block *b) {
    return b->plain ? b->gates * b->hidden_size : b->npanels * b->nv * b->kernels->vw;
}

/* The gate and hidden unit that lane v of vector j in panel p of a packed weight holds. */
void rnx_panel_slot(const rnx_block *b, int p, int j, int v, int *gate, int *unit);

/* One dense layer: y = act(W x + b). */
typedef struct rnx_dense {
    int in_size, out_size, activation; /* rnx_act */
    const float *weight;               /* (out_size, in_size) */
    const float *bias;                 /* (out_size) */
} rnx_dense;

struct rnx_model {
    rnx_model_info info;     /* isa resolved */
    const rnx_kernels *kernels;
    rnx_layer *layers;       /* (n_layers): the list it was built with */
    /* embedding (info.takes_ids) */
    int vocab_size, embed_dim, mask_zero;
    const float *embedding;  /* (V, E) */
    /* a masking layer: steps of x whose features all equal mask_value are masked */
    int masking;
    float mask_value;
    const float *fold[2];    /* (V, xp width of block 0) for each direction of block 0: each
                                token's input projection, bias included; NULL when not folded */
    int n_blocks;
    rnx_block *blocks;       /* (n_blocks) */
    int readout;             /* rnx_readout (SEQUENCE without a readout layer) */
    int n_dense;
    rnx_dense *dense;        /* (n_dense) */
    int dense_width;         /* the widest dense output (0 without dense layers) */
    void *storage;           /* one aligned block holding every array above that the model owns */
};

/* ---------------------------------------------------------------------------------------------
 * The step loop (forward.c), shared by rnx_forward and the streams (stream.c)
 * ------------------------------------------------------------------------------------------- */

/* A (rows, T, width) sequence somewhere in memory: row r at step t starts at
 * base + r*row_stride + (t - t_origin)*t_stride. Input views are only read. */
typedef struct rnx_seq_view {
    float *base;
    ptrdiff_t row_stride, t_stride;
    int t_origin;
} rnx_seq_view;

/* Threads that share one slice of the batch, each taking a range of panels of every step, with
 * one barrier per step. size 1: a thread alone on its slice. */
typedef struct rnx_team {
    int id, size;
} rnx_team;

/* A member's share [*i0, *i1) of n items split evenly over its team. */
static inline void rnx_team_part(int n, rnx_team team, int *i0, int *i1) {
    *i0 = (int)((long long)n * team.id / team.size);
    *i1 = (int)((long long)n * (team.id + 1) / team.size);
}

/* Where the team's members wait for each other (nothing for a thread alone). */
static inline void rnx_team_barrier(rnx_team team) {
    if (team.size > 1) {
#ifdef _OPENMP
#pragma omp barrier
#endif
    }
}

/* Runs body(arg, team) once on each member of a team of up to `threads` OpenMP threads (one
 * parallel region; body may use orphaned barriers) and returns the team's size; threads <= 1:
 * on the calling thread alone, team {0, 1}. In a process forked after this library was loaded,
 * the thread that forked runs the region from a fresh thread (cpu.c); where that thread cannot
 * be started, body runs as a team of one. Bodies take any team size. */
int rnx_parallel(void (*body)(void *arg, rnx_team team), void *arg, int threads);

/* The scratch memory of one slice of Bs rows, sized by (Bs, H, chunk) when every layer runs
 * forward, by T otherwise. */
typedef struct rnx_workspace {
    int Bs, chunk, xp_width, team_max;
    int pipelined;  /* 1: every layer runs forward, chunk by chunk through the whole stack */
    int parity;     /* which of the two h buffers held the states when they were loaded */
    float *xp;      /* (chunk, Bs, xp_width): input projections of one chunk, panel layout */
    float **state;  /* (n_blocks * 2): each block and direction's (3, Bs, Hp): two h buffers, c */
    float *mid[2];  /* layers' outputs (rows, Bs, W_max): rows = chunk if pipelined, else T */
    float *rev;     /* (T, Bs, S_max): a sum/mul/ave layer's reverse outputs, or NULL */
    float *acc;     /* (Bs, W_top): the readout's sums, maxima or last rows */
    int32_t *count; /* (Bs): valid steps the readout has seen */
    float *scratch; /* (team_max, 2, dense_width): the dense layers' rows */
    float *plain_scratch; /* the plain path's scratch (rnx_general_scratch_size), or NULL */
    int32_t *len;   /* (Bs): valid steps of each row */
    uint8_t *prepared; /* int8 and bf16 models: (team_max, mr + Bs, prepared_width) rows
                          prepared for their products: a tile's inputs, then a step's states;
                          or NULL */
    rnx_qrow *prepared_h; /* (team_max, Bs): the states' prepared rows, or NULL */
    size_t prepared_width; /* the most bytes a row of the model's products takes prepared */
    /* the call's inputs for rows b0 .. b0+Bs, row r of step t at [r * steps + t] */
    const int32_t *ids;  /* token ids, or NULL for float x */
    const float *x;      /* float x (row r of step t at [(r * steps + t) * I]) for a masking
                            layer, or NULL (a training pass: the caller's mask holds its steps) */
    const uint8_t *mask; /* or NULL */
    int steps;
    void *block;
} rnx_workspace;

/* Whether the n features at x differ from a masking layer's value anywhere (Keras's Masking:
 * any(x != value); a NaN differs). Usually decided by the first feature. */
static inline int rnx_features_unmasked(const float *x, int n, float value) {
    for (int j = 0; j < n; j++)
        if (x[j] != value) return 1;
    return 0;
}

/* Whether row r of a workspace's slice takes step t (lengths, mask, mask_zero and a masking
 * layer's value, the last read from x as needed, so that the workspace does not grow with T; a
 * training pass runs without ids and x, on embedded vectors, its mask holding the steps that
 * mask_zero and masking mask). */
static inline int rnx_step_active(const rnx_model *m, const rnx_workspace *ws, int r, int t) {
    const size_t i = (size_t)r * ws->steps + t;
    const int I = m->info.input_size;
    return t < ws->len[r] && (!ws->mask || ws->mask[i]) &&
           (!m->mask_zero || !ws->ids || ws->ids[i] != 0) &&
           (!m->masking || !ws->x || rnx_features_unmasked(ws->x + i * I, I, m->mask_value));
}

/* Where row `row` of the batch (B rows), direction d of block b starts in a user's state array
 * (see States in rnnext.h): h, and c (LSTM layers only take room). */
static inline size_t rnx_user_h(const rnx_block *b, int B, int d, int row) {
    return (size_t)B * b->state_offset + ((size_t)d * B + row) * b->state_size;
}
static inline size_t rnx_user_c(const rnx_block *b, int B, int d, int row) {
    return (size_t)B * b->cell_offset + ((size_t)d * B + row) * b->hidden_size;
}

/* What a training-mode pass keeps of one block and direction's steps (backward.c's tape), for
 * rnx_run_chunk to write as it steps: step s of the direction (s counts the steps it takes, in
 * its order) of batch row b has its projection, then the record the step kernel leaves, in row
 * (s, b) of `rows`, and the states after it in slot s+1 of `h` (slot 0: before the first) and,
 * on the plain path, of `c`. A packed LSTM's inactive rows get the unchanged c in the row's c'
 * columns, so that step s+1 finds c_prev in row s whatever the mask. */
typedef struct rnx_record {
    float *rows;       /* (T, B, row_stride) */
    float *h;          /* (T+1, B, h_stride) */
    float *c;          /* the plain path's LSTM: (T+1, B, H); else NULL */
    size_t row_stride, h_stride;
    int B, b0, T;      /* the batch, the slice's first row in it, the sequence's steps */
} rnx_record;

/* The rows [r0, r1) of the slice that team member `team.id` takes in row-wise work (merges,
 * readouts). */
static inline void rnx_team_rows(const rnx_workspace *ws, rnx_team team, int *r0, int *r1) {
    rnx_team_part(ws->Bs, team, r0, r1);
}

rnx_status rnx_workspace_create(rnx_workspace *ws, const rnx_model *m, int Bs, int T,
                                int team_max);
void rnx_workspace_free(rnx_workspace *ws);
/* States in (and zeros where h0, c0 are NULL) from user arrays (see States), rows b0 .. b0+Bs. */
void rnx_load_states(const rnx_model *m, rnx_workspace *ws, const float *h0, const float *c0,
                     int B, int b0);
/* The current states out to user arrays (either may be NULL), after `steps` steps. */
void rnx_store_states(const rnx_model *m, const rnx_workspace *ws, float *h, float *c, int B,
                      int b0, int steps);
/* Buffer `which` (0, 1: h; 2: c) of block k, direction d; rows are Hp wide, zero-padded. */
float *rnx_state_buffer(const rnx_model *m, const rnx_workspace *ws, int k, int d, int which);
/* Runs every recurrent layer over T steps from x (unused for an embedding model: ws->ids) and,
 * with feed_readout, gives the top layer's outputs to the readout: straight into y for a
 * sequence readout without dense layers, else through rnx_readout_steps (y: (Bs, T, F)). */
/* RNX_ERR_BAD_ARGUMENT unless lengths (B) are in [1, T], mask (B, T) values are 0 or 1, and not
 * both are given (either may be NULL). */
rnx_status rnx_check_steps(const int32_t *lengths, const uint8_t *mask, int B, int T);

/* Block k, direction d over the steps [t0, t1) of the slice, `before` steps after the states were
 * loaded: the input projections of the chunk, then one kernel call per step and row tile; the
 * direction's outputs into `out` (out.base NULL: none). rec NULL: inference, the states in the
 * workspace; else a training pass (a team of one), the projections, records and states in *rec,
 * the workspace holding c. */
void rnx_run_chunk(const rnx_model *m, rnx_workspace *ws, rnx_team team, int k, int d,
                   int reverse, int t0, int t1, int before, rnx_seq_view in, rnx_seq_view out,
                   const rnx_record *rec);
void rnx_run_blocks(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view x,
                    rnx_seq_view y, int T, int feed_readout);

/* ---------------------------------------------------------------------------------------------
 * Embedding, readout and dense layers (head.c)
 * ------------------------------------------------------------------------------------------- */

/* RNX_ERR_BAD_ARGUMENT when any of the n ids is outside [0, V). */
rnx_status rnx_check_ids(const rnx_model *m, const int32_t *ids, size_t n);
/* Each token's input projection for direction d of block 0 into m->fold[d] (model creation). */
rnx_status rnx_fold_embedding(const rnx_model *m, float *fold, int d);
/* The floats of the fold tables, or 0 when the model is not folded (over the bound or not
 * packed). */
size_t rnx_fold_floats(const rnx_model *m);
/* Whether the top layer's outputs go straight to y: a sequence readout without dense layers. */
int rnx_top_is_output(const rnx_model *m);
/* Readout accumulators of the slice to their empty state. */
void rnx_readout_begin(const rnx_model *m, rnx_workspace *ws);
/* Steps [t0, t1) of the top layer's outputs into the readout: for a sequence readout, the dense
 * layers of each (row, step) into y; otherwise the accumulators. Rows are split over the team. */
void rnx_readout_steps(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view top,
                       rnx_seq_view y, int t0, int t1);
/* The readout's rows (last, final, mean, max) through the dense layers into y (Bs, F), after
 * `steps` steps; rows split over the team. */
void rnx_readout_end(const rnx_model *m, rnx_workspace *ws, rnx_team team, float *y, int steps);
/* y (F) = the dense layers of `in` (or zeros for in == NULL); scratch (2, dense_width). */
void rnx_dense_row(const rnx_model *m, float *y, const float *in, float *scratch);

#endif /* RNX_INTERNAL_H */
