/* general.c: the plain, exact path for recurrent layers (see general.h): plain loops, one row at
 * a time, libm's functions. The maths: /work/spec/LAYERS.md; ONNX Runtime's cells for the
 * options PyTorch lacks (its clip comes after every term of a pre-activation, bias and peephole
 * included), PyTorch's for proj_size.
 *
 * A tape row, per cell (H hidden units, P proj_size). Pre-activations are kept as summed, before
 * the clip, so that the backward pass knows where the clip cut the gradient off:
 *   LSTM   a_i, a_f, a_g, a_o (4H), c' (H), and with proj_size h_full = o*h(c') (H), then room
 *          for dLoss/dh' (P)
 *            -> the pre-activations' gradients (4H: input and recurrent side alike; zero for f
 *               under input_forget), c', h_full and dLoss/dh' kept for the weight gradients
 *   GRU    a_r, a_z, a_n (3H), W_hn h + b_hn (H)
 *            -> recurrent side (da_r, da_z, da_n * r) (3H), then da_n (H): the n gate's input side
 *   GRU with the reset before the product: a_r, a_z, a_n (3H), r (H)
 *            -> (da_r, da_z, da_n) (3H) for both sides, r kept (the n rows of W_hh saw r*h)
 *   RNN    a (H) -> da (H)
 */
#include <math.h>
#include <string.h>
#include "general.h"

/* ---------------------------------------------------------------------------------------------
 * Activation functions
 * ------------------------------------------------------------------------------------------- */

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* log(1 + exp(x)) in ONNX Runtime's form: exact for large |x|, where exp(x) would overflow */
static float softplus(float x) { return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x)); }

/* SELU's constants (Klambauer et al. 2017), as PyTorch and Keras define them */
#define SELU_ALPHA 1.6732632423543772848170429916717f
#define SELU_SCALE 1.0507009873554804934193349852946f

/* f(x) for one of the elementwise rnx_act, and f'(x) in *slope: the value and the derivative
 * share their transcendental functions (the backward pass needs both). */
static float act_eval(int act, float x, float alpha, float beta, float *slope) {
    switch (act) {
    case RNX_ACT_SIGMOID: {
        const float s = sigmoid(x);
        *slope = s * (1.0f - s);
        return s;
    }
    case RNX_ACT_TANH: {
        const float t = tanhf(x);
        *slope = 1.0f - t * t;
        return t;
    }
    case RNX_ACT_RELU:
        *slope = x > 0.0f ? 1.0f : 0.0f;
        return x > 0.0f ? x : 0.0f;
    case RNX_ACT_HARD_SIGMOID: {
        const float y = alpha * x + beta;
        *slope = y > 0.0f && y < 1.0f ? alpha : 0.0f;
        return fmaxf(0.0f, fminf(1.0f, y));
    }
    case RNX_ACT_AFFINE:
        *slope = alpha;
        return alpha * x + beta;
    case RNX_ACT_LEAKY_RELU:
        *slope = x >= 0.0f ? 1.0f : alpha;
        return x >= 0.0f ? x : alpha * x;
    case RNX_ACT_THRESHOLDED_RELU:
        *slope = x > alpha ? 1.0f : 0.0f;
        return x > alpha ? x : 0.0f;
    case RNX_ACT_SCALED_TANH: {
        const float t = tanhf(beta * x);
        *slope = alpha * beta * (1.0f - t * t);
        return alpha * t;
    }
    case RNX_ACT_ELU:
        *slope = x >= 0.0f ? 1.0f : alpha * expf(x);
        return x >= 0.0f ? x : alpha * expm1f(x);
    case RNX_ACT_SOFTSIGN: {
        const float d = 1.0f + fabsf(x);
        *slope = 1.0f / (d * d);
        return x / d;
    }
    case RNX_ACT_SOFTPLUS:
        *slope = sigmoid(x);
        return softplus(x);
    /* Keras's functions; at a kink the slope is PyTorch autograd's */
    case RNX_ACT_RELU6:
        *slope = x > 0.0f && x < 6.0f ? 1.0f : 0.0f;
        return fminf(fmaxf(x, 0.0f), 6.0f);
    case RNX_ACT_SELU:
        *slope = x > 0.0f ? SELU_SCALE : SELU_SCALE * SELU_ALPHA * expf(x);
        return x > 0.0f ? SELU_SCALE * x : SELU_SCALE * SELU_ALPHA * expm1f(x);
    case RNX_ACT_GELU: {
        /* erfc keeps the normal CDF's relative precision in its lower tail */
        const float cdf = 0.5f * erfcf(-x * 0.70710678118654752440f); /* 1 / sqrt(2) */
        *slope = cdf + x * expf(-0.5f * x * x) * 0.39894228040143267794f; /* 1 / sqrt(2 pi) */
        return x * cdf;
    }
    case RNX_ACT_SILU: {
        const float s = sigmoid(x), y = x * s;
        *slope = s + y * (1.0f - s);
        return y;
    }
    case RNX_ACT_EXPONENTIAL:
        *slope = expf(x);
        return *slope;
    case RNX_ACT_MISH: {
        const float t = tanhf(softplus(x));
        *slope = t + x * (1.0f - t * t) * sigmoid(x);
        return x * t;
    }
    case RNX_ACT_HARD_SILU:
        *slope = x <= -3.0f ? 0.0f : x >= 3.0f ? 1.0f : x / 3.0f + 0.5f;
        return x * fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case RNX_ACT_HARD_TANH:
        *slope = fabsf(x) < 1.0f ? 1.0f : 0.0f;
        return fminf(fmaxf(x, -1.0f), 1.0f);
    case RNX_ACT_CELU:
        *slope = x > 0.0f ? 1.0f : expf(x / alpha);
        return x > 0.0f ? x : alpha * expm1f(x / alpha);
    case RNX_ACT_LOG_SIGMOID:
        *slope = sigmoid(-x);
        return -softplus(-x);
    case RNX_ACT_TANH_SHRINK: {
        const float t = tanhf(x);
        *slope = t * t;
        return x - t;
    }
    case RNX_ACT_SOFT_SHRINK:
        *slope = fabsf(x) > alpha ? 1.0f : 0.0f;
        return x > alpha ? x - alpha : x < -alpha ? x + alpha : 0.0f;
    case RNX_ACT_HARD_SHRINK:
        *slope = fabsf(x) > alpha ? 1.0f : 0.0f;
        return fabsf(x) > alpha ? x : 0.0f;
    case RNX_ACT_SQUAREPLUS: {
        /* without cancellation for x < 0, and without overflow in x^2 */
        const float root = hypotf(x, sqrtf(alpha));
        const float y = x >= 0.0f ? 0.5f * (x + root) : 0.5f * alpha / (root - x);
        *slope = y / root;
        return y;
    }
    case RNX_ACT_SPARSE_PLUS:
        *slope = fminf(fmaxf(0.5f * (x + 1.0f), 0.0f), 1.0f);
        return x <= -1.0f ? 0.0f : x < 1.0f ? 0.25f * (x + 1.0f) * (x + 1.0f) : x;
    case RNX_ACT_SPARSE_SIGMOID:
        *slope = fabsf(x) < 1.0f ? 0.5f : 0.0f;
        return fminf(fmaxf(0.5f * (x + 1.0f), 0.0f), 1.0f);
    default:
        *slope = 1.0f;
        return x;
    }
}

float rnx_act_value(int act, float x, float alpha, float beta) {
    float slope;
    return act_eval(act, x, alpha, beta, &slope);
}

float rnx_act_derivative(int act, float x, float alpha, float beta) {
    float slope;
    act_eval(act, x, alpha, beta, &slope);
    return slope;
}

/* ---------------------------------------------------------------------------------------------
 * Layout and sizes
 * ------------------------------------------------------------------------------------------- */

/* The offsets of a direction's parameters from its first, in the order of rnx_general_params;
 * returns their count. */
static size_t param_offsets(const rnx_layer *layer, size_t offset[6]) {
    const size_t H = (size_t)layer->units, GH = (size_t)rnx_cell_gates(layer->cell) * H;
    const size_t P = (size_t)layer->proj_size, S = P ? P : H;
    const size_t sizes[6] = {GH * (size_t)layer->input_size, GH * S, GH, GH, P * H,
                             layer->peepholes ? 3 * H : 0};
    size_t at = 0;
    for (int i = 0; i < 6; i++) {
        offset[i] = at;
        at += sizes[i];
    }
    return at;
}

size_t rnx_general_place(rnx_general_params *p, const rnx_layer *layer, float *base) {
    size_t offset[6];
    const size_t count = param_offsets(layer, offset);
    p->w_ih = base + offset[0];
    p->w_hh = base + offset[1];
    p->b_ih = base + offset[2];
    p->b_hh = base + offset[3];
    p->w_hr = layer->proj_size ? base + offset[4] : NULL;
    p->peephole = layer->peepholes ? base + offset[5] : NULL;
    return count;
}

size_t rnx_general_param_count(const rnx_layer *layer) {
    size_t offset[6];
    return param_offsets(layer, offset);
}

size_t rnx_general_init(rnx_general *g, const rnx_layer *layer, float *params) {
    memset(g, 0, sizeof *g);
    g->cell = layer->cell;
    g->G = rnx_cell_gates(layer->cell);
    g->I = layer->input_size;
    g->H = layer->units;
    g->P = layer->cell == RNX_CELL_LSTM ? layer->proj_size : 0;
    g->S = g->P ? g->P : g->H;
    g->input_forget = layer->cell == RNX_CELL_LSTM && layer->input_forget;
    g->clip = layer->clip > 0.0f ? layer->clip : 0.0f;
    for (int k = 0; k < 3; k++) {
        g->act[k] = layer->activations[k];
        g->alpha[k] = layer->alpha[k];
        g->beta[k] = layer->beta[k];
    }
    return rnx_general_place(&g->w, layer, params);
}

int rnx_general_needed(const rnx_layer *layer, int training) {
    int defaults[3] = {RNX_ACT_SIGMOID, RNX_ACT_TANH, RNX_ACT_TANH}, n = 2;
    switch (layer->cell) {
    case RNX_CELL_RNN_TANH: defaults[0] = RNX_ACT_TANH, n = 1; break;
    case RNX_CELL_RNN_RELU: defaults[0] = RNX_ACT_RELU, n = 1; break;
    case RNX_CELL_LSTM: n = 3; break;
    case RNX_CELL_GRU_RESET_BEFORE:
        if (training) return 1;
        break;
    }
    for (int k = 0; k < n; k++)
        if (layer->activations[k] != defaults[k]) return 1;
    return layer->proj_size > 0 || layer->peepholes || layer->input_forget || layer->clip > 0.0f;
}

size_t rnx_general_tape_width(const rnx_general *g) {
    const size_t H = (size_t)g->H;
    switch (g->cell) {
    case RNX_CELL_LSTM: return 5 * H + (g->P ? H + (size_t)g->P : 0);
    case RNX_CELL_GRU:
    case RNX_CELL_GRU_RESET_BEFORE: return 4 * H;
    default: return H;
    }
}

/* the gates' sums (G*H), the state before the step or its gradient (S), one H more (r*h,
 * h_full, dLoss/dh_full), and a product's input rounded to bfloat16 (at most I or H) */
size_t rnx_general_scratch_size(const rnx_general *g) {
    return (size_t)g->G * g->H + (size_t)g->S + (size_t)g->H + (size_t)(g->I > g->H ? g->I : g->H);
}

/* Where a product reads its input: the scratch's last part */
static float *rounding_buffer(const rnx_general *g, float *scratch) {
    return scratch + (size_t)g->G * g->H + (size_t)g->S + (size_t)g->H;
}

/* ---------------------------------------------------------------------------------------------
 * Small products
 * ------------------------------------------------------------------------------------------- */

/* Partial sums of a dot product: one running sum would not vectorise (the compiler may not
 * reorder float additions), eight independent ones do, in an order fixed by k alone. */
#define RNX_LANES 8

/* v (k floats) as a product reads it: at bf16 rounded to bfloat16 into buf, else v itself */
static const float *product_input(const rnx_general *g, const float *v, int k, float *buf) {
    if (!g->bf16) return v;
    for (int i = 0; i < k; i++) buf[i] = rnx_bf16_value(v[i]);
    return buf;
}

/* out[j] = init[j] + W[j, :] v for j < n, W (n, k); init NULL: zeros */
static void matvec(float *out, const float *init, const float *w, const float *v, int n, int k) {
    for (int j = 0; j < n; j++) {
        const float *row = w + (size_t)j * k;
        float lane[RNX_LANES] = {0.0f};
        int i = 0;
        for (; i + RNX_LANES <= k; i += RNX_LANES)
            for (int l = 0; l < RNX_LANES; l++) lane[l] += row[i + l] * v[i + l];
        float sum = 0.0f;
        for (; i < k; i++) sum += row[i] * v[i];
        for (int l = 0; l < RNX_LANES; l++) sum += lane[l];
        out[j] = (init ? init[j] : 0.0f) + sum;
    }
}

/* out[i] += sum_j v[j] W[j, i] for i < k, W (n, k) */
static void add_vecmat(float *out, const float *v, const float *w, int n, int k) {
    for (int j = 0; j < n; j++) {
        const float *row = w + (size_t)j * k;
        const float vj = v[j];
        for (int i = 0; i < k; i++) out[i] += vj * row[i];
    }
}

/* The activated value of pre-activation a under function slot k, after the clip; its derivative
 * d(value)/d(a) in *slope (zero where the clip cut a off), or slope NULL. */
static float gate(const rnx_general *g, int k, float a, float *slope) {
    float d;
    const int cut = g->clip > 0.0f && (a > g->clip || a < -g->clip);
    if (cut) a = a > 0.0f ? g->clip : -g->clip;
    const float value = act_eval(g->act[k], a, g->alpha[k], g->beta[k], &d);
    if (slope) *slope = cut ? 0.0f : d;
    return value;
}

/* ---------------------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------------------- */

void rnx_general_project(const rnx_general *g, float *const *xp, const float *const *x,
                         float *scratch, int nrows) {
    float *buf = rounding_buffer(g, scratch);
    for (int r = 0; r < nrows; r++)
        matvec(xp[r], g->w.b_ih, g->w.w_ih, product_input(g, x[r], g->I, buf), g->G * g->H, g->I);
}

/* One LSTM row: a (4H) holds xp + W_hh h + b_hh and becomes the tape's pre-activations. */
static void lstm_step(const rnx_general *g, float *h, float *c, float *a, float *h_full,
                      float *tape, float *buf) {
    const int H = g->H;
    const float *peep = g->w.peephole;
    for (int u = 0; u < H; u++) {
        float *ai = a + u, *af = a + H + u, *ag = a + 2 * H + u, *ao = a + 3 * H + u;
        if (peep) {
            *ai += peep[u] * c[u];
            *af += peep[H + u] * c[u];
        }
        const float i = gate(g, 0, *ai, NULL);
        const float f = g->input_forget ? 1.0f - i : gate(g, 0, *af, NULL);
        const float c_new = f * c[u] + i * gate(g, 1, *ag, NULL);
        if (peep) *ao += peep[2 * H + u] * c_new;
        h_full[u] = gate(g, 0, *ao, NULL) * rnx_act_value(g->act[2], c_new, g->alpha[2], g->beta[2]);
        c[u] = c_new;
    }
    if (tape) {
        memcpy(tape, a, (size_t)4 * H * sizeof(float));
        memcpy(tape + 4 * H, c, (size_t)H * sizeof(float));
        if (g->P) memcpy(tape + 5 * H, h_full, (size_t)H * sizeof(float));
    }
    if (g->P) matvec(h, NULL, g->w.w_hr, product_input(g, h_full, H, buf), g->P, H);
    else memcpy(h, h_full, (size_t)H * sizeof(float));
}

/* One GRU row (either reset): a (3H) holds xp, h the state before the step (H). */
static void gru_step(const rnx_general *g, float *h, float *a, float *hh, float *tape,
                     float *buf) {
    const int H = g->H;
    const float *w_hn = g->w.w_hh + (size_t)2 * H * H, *b_hn = g->w.b_hh + 2 * H;
    const float *h_in = product_input(g, h, H, buf);
    /* r and z: their rows of W_hh h + b_hh */
    matvec(hh, g->w.b_hh, g->w.w_hh, h_in, 2 * H, H);
    for (int j = 0; j < 2 * H; j++) a[j] += hh[j];
    float *rh = hh; /* r*h (reset before) or W_hn h + b_hn (reset after), H floats */
    if (g->cell == RNX_CELL_GRU) {
        matvec(rh, b_hn, w_hn, h_in, H, H);
        if (tape) memcpy(tape + 3 * H, rh, (size_t)H * sizeof(float));
        for (int u = 0; u < H; u++) a[2 * H + u] += gate(g, 0, a[u], NULL) * rh[u];
    } else {
        for (int u = 0; u < H; u++) {
            const float r = gate(g, 0, a[u], NULL);
            if (tape) tape[3 * H + u] = r;
            rh[u] = r * h[u];
        }
        matvec(a + 2 * H, a + 2 * H, w_hn, product_input(g, rh, H, buf), H, H);
        for (int u = 0; u < H; u++) a[2 * H + u] += b_hn[u];
    }
    if (tape) memcpy(tape, a, (size_t)3 * H * sizeof(float));
    for (int u = 0; u < H; u++) {
        const float z = gate(g, 0, a[H + u], NULL), n = gate(g, 1, a[2 * H + u], NULL);
        h[u] = (1.0f - z) * n + z * h[u];
    }
}

void rnx_general_step(const rnx_general *g, float *const *h, float *const *c,
                      const float *const *xp, const unsigned char *active, float *const *tape,
                      float *scratch, int nrows) {
    const int GH = g->G * g->H;
    float *a = scratch, *extra = scratch + GH, *buf = rounding_buffer(g, scratch);
    for (int r = 0; r < nrows; r++) {
        if (!active[r]) continue;
        float *t = tape ? tape[r] : NULL;
        if (g->cell == RNX_CELL_GRU || g->cell == RNX_CELL_GRU_RESET_BEFORE) {
            memcpy(a, xp[r], (size_t)GH * sizeof(float));
            gru_step(g, h[r], a, extra, t, buf);
            continue;
        }
        /* LSTM and RNN: every gate row sees W_hh h + b_hh */
        matvec(a, g->w.b_hh, g->w.w_hh, product_input(g, h[r], g->S, buf), GH, g->S);
        for (int j = 0; j < GH; j++) a[j] += xp[r][j];
        if (g->cell == RNX_CELL_LSTM) {
            lstm_step(g, h[r], c[r], a, extra, t, buf);
            continue;
        }
        if (t) memcpy(t, a, (size_t)GH * sizeof(float));
        for (int u = 0; u < g->H; u++) h[r][u] = gate(g, 0, a[u], NULL);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Backward
 * ------------------------------------------------------------------------------------------- */

/* One LSTM row; dh_full (H) is dLoss/dh_full. Leaves the gate gradients in t and dc_prev in dc. */
static void lstm_backward(const rnx_general *g, float *dc, float *t, const float *c_prev,
                          const float *dh_full) {
    const int H = g->H;
    const float *peep = g->w.peephole;
    for (int u = 0; u < H; u++) {
        float *ai = t + u, *af = t + H + u, *ag = t + 2 * H + u, *ao = t + 3 * H + u;
        const float c_new = t[4 * H + u];
        float si, sf = 0.0f, sg, so, sc;
        const float i = gate(g, 0, *ai, &si), gg = gate(g, 1, *ag, &sg);
        const float f = g->input_forget ? 1.0f - i : gate(g, 0, *af, &sf);
        const float o = gate(g, 0, *ao, &so);
        const float hc = act_eval(g->act[2], c_new, g->alpha[2], g->beta[2], &sc);
        const float dao = dh_full[u] * hc * so;
        float dcn = dc[u] + dh_full[u] * o * sc;
        if (peep) dcn += dao * peep[2 * H + u];
        float di = dcn * gg;
        const float df = dcn * c_prev[u];
        if (g->input_forget) di -= df; /* f = 1 - i */
        const float daf = g->input_forget ? 0.0f : df * sf;
        const float dai = di * si;
        dc[u] = dcn * f;
        if (peep) dc[u] += dai * peep[u] + daf * peep[H + u];
        *ai = dai;
        *af = daf;
        *ag = dcn * i * sg;
        *ao = dao;
    }
}

/* One GRU row (either reset); dh (H) becomes dLoss/dh_prev; drh (H) is scratch. */
static void gru_backward(const rnx_general *g, float *dh, float *t, const float *h_prev,
                         float *drh) {
    const int H = g->H;
    const int after = g->cell == RNX_CELL_GRU;
    const float *w_hn = g->w.w_hh + (size_t)2 * H * H;
    for (int u = 0; u < H; u++) {
        float sr, sz, sn;
        const float r = gate(g, 0, t[u], &sr), z = gate(g, 0, t[H + u], &sz);
        const float n = gate(g, 1, t[2 * H + u], &sn);
        const float dan = dh[u] * (1.0f - z) * sn;
        const float daz = dh[u] * (h_prev[u] - n) * sz;
        if (after) { /* the input side's dan goes to the tail, over W_hn h + b_hn */
            const float hn = t[3 * H + u];
            t[u] = dan * hn * sr;
            t[2 * H + u] = dan * r;
            t[3 * H + u] = dan;
        } else { /* t[u] below, once dLoss/d(r*h) is known; r's slope until then */
            t[u] = sr;
            t[2 * H + u] = dan;
        }
        t[H + u] = daz;
        dh[u] *= z;
    }
    if (!after) {
        memset(drh, 0, (size_t)H * sizeof(float));
        add_vecmat(drh, t + 2 * H, w_hn, H, H);
        for (int u = 0; u < H; u++) {
            const float r = t[3 * H + u];
            t[u] *= drh[u] * h_prev[u];
            dh[u] += drh[u] * r;
        }
    }
    /* the rows of W_hh that saw h itself: all three (reset after), r and z (reset before) */
    add_vecmat(dh, t, g->w.w_hh, after ? 3 * H : 2 * H, H);
}

void rnx_general_step_backward(const rnx_general *g, float *const *dh, float *const *dc,
                               float *const *tape, const float *const *h_prev,
                               const float *const *c_prev, const unsigned char *active,
                               float *scratch, int nrows) {
    const int H = g->H, GH = g->G * H;
    for (int r = 0; r < nrows; r++) {
        if (!active[r]) continue;
        float *t = tape[r];
        if (g->cell == RNX_CELL_GRU || g->cell == RNX_CELL_GRU_RESET_BEFORE) {
            gru_backward(g, dh[r], t, h_prev[r], scratch);
            continue;
        }
        if (g->cell == RNX_CELL_LSTM) {
            const float *dh_full = dh[r];
            if (g->P) { /* h' = W_hr h_full: keep dLoss/dh' for dW_hr */
                memcpy(t + 6 * H, dh[r], (size_t)g->P * sizeof(float));
                memset(scratch, 0, (size_t)H * sizeof(float));
                add_vecmat(scratch, dh[r], g->w.w_hr, g->P, H);
                dh_full = scratch;
            }
            lstm_backward(g, dc[r], t, c_prev[r], dh_full);
        } else {
            for (int u = 0; u < H; u++) {
                float slope;
                gate(g, 0, t[u], &slope);
                t[u] = dh[r][u] * slope;
            }
        }
        memset(dh[r], 0, (size_t)g->S * sizeof(float));
        add_vecmat(dh[r], t, g->w.w_hh, GH, g->S);
    }
}

/* The input-side gradient of gate row j in a tape row after the backward step. */
static float input_side(const rnx_general *g, const float *t, int j) {
    if (g->cell == RNX_CELL_GRU && j >= 2 * g->H) return t[j + g->H];
    return t[j];
}

void rnx_general_input_grad(const rnx_general *g, float *const *dx, const float *const *tape,
                            int nrows, int accumulate) {
    const int GH = g->G * g->H;
    for (int r = 0; r < nrows; r++) {
        if (!accumulate) memset(dx[r], 0, (size_t)g->I * sizeof(float));
        for (int j = 0; j < GH; j++) {
            const float d = input_side(g, tape[r], j), *row = g->w.w_ih + (size_t)j * g->I;
            for (int i = 0; i < g->I; i++) dx[r][i] += d * row[i];
        }
    }
}

int rnx_general_grad_slots(const rnx_general *g) { return g->G * g->H + g->P; }

void rnx_general_weight_grads(const rnx_general *g, const rnx_general_params *grads, int j0,
                              int j1, const float *const *tape, const float *const *x,
                              const float *const *h_prev, const float *const *c_prev, int nrows) {
    const int H = g->H, GH = g->G * H, S = g->S, I = g->I;
    const int reset_before = g->cell == RNX_CELL_GRU_RESET_BEFORE;
    for (int j = j0; j < j1; j++) {
        if (j >= GH) { /* row p of W_hr: dLoss/dh' times h_full */
            const int p = j - GH;
            float *row = grads->w_hr + (size_t)p * H;
            for (int r = 0; r < nrows; r++) {
                const float d = tape[r][6 * H + p], *h_full = tape[r] + 5 * H;
                for (int u = 0; u < H; u++) row[u] += d * h_full[u];
            }
            continue;
        }
        float *w_ih = grads->w_ih + (size_t)j * I, *w_hh = grads->w_hh + (size_t)j * S;
        const int gate = j / H, u = j % H;
        const int n_row = reset_before && gate == 2;
        float *peep = NULL;
        if (grads->peephole && gate != 2) peep = grads->peephole + (gate == 3 ? 2 : gate) * H + u;
        for (int r = 0; r < nrows; r++) {
            const float *t = tape[r];
            const float dx_side = input_side(g, t, j), dh_side = t[j];
            for (int i = 0; i < I; i++) w_ih[i] += dx_side * x[r][i];
            /* the reset-before GRU's n rows saw r*h: r is in the tape's tail */
            if (n_row)
                for (int s = 0; s < S; s++) w_hh[s] += dh_side * t[3 * H + s] * h_prev[r][s];
            else
                for (int s = 0; s < S; s++) w_hh[s] += dh_side * h_prev[r][s];
            grads->b_ih[j] += dx_side;
            grads->b_hh[j] += dh_side;
            if (peep) *peep += dh_side * (gate == 3 ? t[4 * H + u] : c_prev[r][u]);
        }
    }
}
