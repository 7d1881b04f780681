/* rnx_internal.h: what the C core's files share and nothing outside csrc/ sees. */
#ifndef RNX_INTERNAL_H
#define RNX_INTERNAL_H

#include <stddef.h>
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
typedef struct rnx_packed {
    int in_size;   /* K of the input product: I for layer 0, D*H above */
    float *wx;     /* (npanels, in_size, nv, vw): weight_ih */
    float *wh;     /* (npanels, H, nv, vw): weight_hh */
    float *bx;     /* (npanels, nv, vw): bias_ih + bias_hh (GRU's n gate: bias_in alone) */
    float *bhn;    /* (npanels, vw): the GRUs' bias_hn, kept out of bx; NULL for other cells */
} rnx_packed;

/* The compute kernels of one instruction set. Both work on a tile of nrows <= mr rows. */
typedef struct rnx_kernels {
    rnx_isa isa;
    int vw; /* lanes per vector */
    int mr; /* rows per full tile */
    /* out[r] = bx + W_x a[r] for r < nrows and the panels [p0, p1); a[r] has w->in_size floats,
     * out[r] is a whole row of npanels*nv*vw floats in the panel layout. */
    void (*project)(float *const *out, const float *const *a, const rnx_packed *w,
                    int nv, int p0, int p1, int nrows);
    /* One time step of `cell` for nrows rows and the panels [p0, p1): gates = xp[r] + W_h h_in[r] (+ bias_hn), then the
     * cell's state update, written to h_out[r] (and c[r] in place for the LSTM). Rows with
     * active[r] == 0 keep their state: h_out[r] = h_in[r], c[r] unchanged. All rows are Hp
     * floats; xp[r] is the row written by project for this step. RNX_CELL_GRU_RESET_BEFORE uses
     * c[r] as scratch for r*h. */
    void (*step)(int cell, float *const *h_out, float *const *c, const float *const *h_in,
                 const float *const *xp, const unsigned char *active, const rnx_packed *w,
                 int H, int p0, int p1, int nrows);
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
#endif

/* G, the gates of `cell` (an rnx_cell), or 0 for an unknown cell. */
int rnx_cell_gates(int cell);

/* Threads for a call asking for n_threads (<= 0: the OpenMP default): 1 without OpenMP, and 1 in
 * a process forked after its parent started OpenMP threads (libgomp cannot run there). */
int rnx_threads_for_call(int n_threads);

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

/* K of layer `layer`'s input product: I for layer 0, D*H above. */
int rnx_layer_input_size(const rnx_config *c, int layer);

/* The kernels of `isa` (never RNX_ISA_AUTO), or NULL where this build or CPU lacks them. */
const rnx_kernels *rnx_kernels_for(rnx_isa isa);

/* The gate and hidden unit that lane v of vector j in panel p of a packed weight holds. */
void rnx_panel_slot(const rnx_model *m, int p, int j, int v, int *gate, int *unit);

struct rnx_model {
    rnx_config config;       /* isa resolved */
    const rnx_kernels *kernels;
    int gates;               /* G */
    int nv;                  /* vectors per panel */
    int units_per_panel;     /* U */
    int hidden_padded;       /* Hp = npanels * U */
    int npanels;
    int directions;          /* D */
    rnx_packed *packed;      /* (L*D) */
    void *storage;           /* one aligned block holding every packed array */
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

/* The scratch memory of one slice of Bs rows, sized by (Bs, H, chunk) and, only for stacks of
 * bidirectional layers, by T. */
typedef struct rnx_workspace {
    int Bs, chunk, xp_width;
    int parity;     /* which of the two h buffers held the states when they were loaded */
    float *xp;      /* (chunk, Bs, xp_width): input projections of one chunk, panel layout */
    float *state;   /* (L*D, 3, Bs, Hp): two h buffers and c, for each layer and direction */
    float *mid[2];  /* inner layers' outputs: (chunk, Bs, H) if D == 1, (T, Bs, 2H) if D == 2 */
    int32_t *len;   /* (Bs): valid steps of each row */
    void *block;
} rnx_workspace;

rnx_status rnx_workspace_create(rnx_workspace *ws, const rnx_model *m, int Bs, int T);
void rnx_workspace_free(rnx_workspace *ws);
/* States in (and zeros where h0, c0 are NULL) from user arrays (L*D, B, H), rows b0 .. b0+Bs. */
void rnx_load_states(const rnx_model *m, rnx_workspace *ws, const float *h0, const float *c0,
                     int B, int b0);
/* The current states out to user arrays (L*D, B, H) (either may be NULL), after `steps` steps. */
void rnx_store_states(const rnx_model *m, const rnx_workspace *ws, float *h, float *c, int B,
                      int b0, int steps);
/* Runs the whole stack over T steps from x to y (y.base may be NULL). */
void rnx_run_stack(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view x,
                   rnx_seq_view y, int T);

#endif /* RNX_INTERNAL_H */
