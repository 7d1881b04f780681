/* general.h: the plain, exact path for recurrent layers whose options the packed SIMD kernels
 * lack: LSTM proj_size (PyTorch's maths), peepholes and input_forget (ONNX's), any rnx_act for
 * the cell's functions with their alpha/beta, clip (ONNX: the gate pre-activations clamped to
 * [-clip, clip] after every term, bias and peephole included, and before the function), the GRU
 * with the reset before the product, for RNN, LSTM and both GRUs, forward and backward.
 *
 * One rnx_general is one direction of one layer, its weights in PyTorch's layout. The calls work
 * on rows given as arrays of pointers (as the kernels' calls), one row after the other, with
 * libm's functions: what they compute is the maths of /work/spec/LAYERS.md to float rounding,
 * the oracle the packed kernels' options are measured against. Nothing here allocates: the
 * caller gives the tape rows and the scratch, sized by the functions below; nothing here starts
 * threads: a caller splits rows (forward, backward) or gradient slots (rnx_general_weight_grads).
 *
 * Tape rows: rnx_general_step writes, per active row and step, rnx_general_tape_width floats
 * that rnx_general_step_backward reads and overwrites with the step's gradients, which
 * rnx_general_input_grad and rnx_general_weight_grads read. Their layout is general.c's. */
#ifndef RNX_GENERAL_H
#define RNX_GENERAL_H

#include "rnx_internal.h"

/* ---------------------------------------------------------------------------------------------
 * Activation functions (rnx_act, ONNX's definitions; a = alpha, b = beta)
 * ------------------------------------------------------------------------------------------- */

/* f(x) for one of the elementwise rnx_act (not RNX_ACT_SOFTMAX). */
float rnx_act_value(int act, float x, float alpha, float beta);
/* f'(x), the derivative at x; at a kink, that of the branch the definition takes there (relu'(0)
 * = 0, as PyTorch). */
float rnx_act_derivative(int act, float x, float alpha, float beta);

/* ---------------------------------------------------------------------------------------------
 * One direction of a layer
 * ------------------------------------------------------------------------------------------- */

/* A direction's parameters in the order of the flat parameter array (LAYERS.md), PyTorch's
 * layout; the same struct places a direction's gradients in a flat gradient array. */
typedef struct rnx_general_params {
    float *w_ih;     /* (G*H, I) */
    float *w_hh;     /* (G*H, S) */
    float *b_ih;     /* (G*H) */
    float *b_hh;     /* (G*H) */
    float *w_hr;     /* (P, H), or NULL without proj_size */
    float *peephole; /* (3, H): rows i, f, o; or NULL without peepholes */
} rnx_general_params;

typedef struct rnx_general {
    int cell;            /* rnx_cell */
    int G, I, H;         /* gates, input width, hidden units */
    int P;               /* proj_size, or 0 */
    int S;               /* state width: P when projecting, else H */
    int input_forget;    /* LSTM: f = 1 - i */
    float clip;          /* 0: none */
    int act[3];          /* LSTM f, g, h; GRU f, g; RNN f */
    float alpha[3], beta[3];
    int bf16;            /* 1: the products round their inputs to bfloat16 (RNX_PRECISION_BF16) */
    rnx_general_params w;
} rnx_general;

/* Floats of one direction of a recurrent layer's parameters. */
size_t rnx_general_param_count(const rnx_layer *layer);

/* Sets g from a recurrent layer's sizes and options, with its parameters (one direction, in the
 * order of rnx_general_params) starting at `params`. Returns the floats they take
 * (rnx_general_param_count). The layer is assumed valid (model.c checks it). */
size_t rnx_general_init(rnx_general *g, const rnx_layer *layer, float *params);

/* Places one direction's parameters (or gradients) at `base`, as rnx_general_init; returns the
 * floats taken. */
size_t rnx_general_place(rnx_general_params *p, const rnx_layer *layer, float *base);

/* 1 when the layer needs this path: options the packed kernels lack (proj_size, peepholes,
 * input_forget, clip, activations other than the cell's defaults), or, when `training`, a cell
 * the training kernels lack (RNX_CELL_GRU_RESET_BEFORE). */
int rnx_general_needed(const rnx_layer *layer, int training);

/* Floats of one tape row (one step of one sequence), and of the scratch every call below takes
 * (the calls do one row at a time, so the scratch does not grow with nrows). */
size_t rnx_general_tape_width(const rnx_general *g);
size_t rnx_general_scratch_size(const rnx_general *g);

/* xp[r] (G*H) = W_ih x[r] + b_ih for r < nrows: the input side of a chunk of (step, row) pairs. */
void rnx_general_project(const rnx_general *g, float *const *xp, const float *const *x,
                         float *scratch, int nrows);

/* One time step of nrows rows: h[r] (S floats) and, for the LSTM, c[r] (H) become the states
 * after the step, in place; xp[r] is the row rnx_general_project wrote for it. Rows with
 * active[r] == 0 are left as they are (their tape row too). tape: NULL (inference), or tape[r]
 * receives the active row's record for rnx_general_step_backward; tape[r] may be xp[r] (the step
 * reads xp[r] before it writes the tape). c may be NULL but for the LSTM. */
void rnx_general_step(const rnx_general *g, float *const *h, float *const *c,
                      const float *const *xp, const unsigned char *active, float *const *tape,
                      float *scratch, int nrows);

/* The backward of one step of nrows rows. In: dh[r] (S) = dLoss/dh' (what flows back from later
 * steps plus the output's gradient at this step), dc[r] (H, LSTM) = dLoss/dc'; h_prev[r] (S) and
 * c_prev[r] (H, LSTM) the states before the step; tape[r] as the step left it. Out, in place:
 * dh[r] = dLoss/dh, dc[r] = dLoss/dc of the states before the step, and tape[r] holds the step's
 * gradients. Rows with active[r] == 0 are left as they are: their gradients pass through. */
void rnx_general_step_backward(const rnx_general *g, float *const *dh, float *const *dc,
                               float *const *tape, const float *const *h_prev,
                               const float *const *c_prev, const unsigned char *active,
                               float *scratch, int nrows);

/* dx[r] (I) = dxp[r] W_ih (accumulate: dx[r] +=), dxp[r] the input-side gate gradients that
 * tape[r] holds after rnx_general_step_backward: the input gradient of (step, row) pairs. */
void rnx_general_input_grad(const rnx_general *g, float *const *dx, const float *const *tape,
                            int nrows, int accumulate);

/* Gradient slots: the units of work of the weight gradients, which threads may split: slot
 * j < G*H is gate row j (its rows of dW_ih, dW_hh, db_ih, db_hh and, for the LSTM's i, f, o
 * rows, its peephole entry); slot G*H + p is row p of dW_hr. */
int rnx_general_grad_slots(const rnx_general *g);

/* Adds to `grads` (placed as the parameters) the gradients of slots [j0, j1) over the nrows
 * active (step, row) pairs given: tape[r] after rnx_general_step_backward, x[r] (I) the step's
 * input, h_prev[r] (S) and c_prev[r] (H, LSTM; else NULL) the states before it. Each entry is a
 * sum over r in order: the caller fixes the pairs' order, and with it the result, whatever the
 * split of the slots. */
void rnx_general_weight_grads(const rnx_general *g, const rnx_general_params *grads, int j0,
                              int j1, const float *const *tape, const float *const *x,
                              const float *const *h_prev, const float *const *c_prev, int nrows);

#endif /* RNX_GENERAL_H */
