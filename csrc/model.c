/* model.c: model lifecycle: layer lists and their checks, parameter counts, and packing
 * PyTorch-layout weights into the kernels' panel layout (see rnx_packed in rnx_internal.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "general.h"

static int cell_gates(int cell) {
    switch (cell) {
    case RNX_CELL_RNN_TANH:
    case RNX_CELL_RNN_RELU: return 1;
    case RNX_CELL_LSTM: return 4;
    case RNX_CELL_GRU:
    case RNX_CELL_GRU_RESET_BEFORE: return 3;
    }
    return 0;
}

int rnx_cell_gates(int cell) { return cell_gates(cell); }

/* *out = a * b (a + b), or 0 when it overflows size_t. */
static int mul_ok(size_t *out, size_t a, size_t b) { return !__builtin_mul_overflow(a, b, out); }
static int add_ok(size_t *out, size_t a, size_t b) { return !__builtin_add_overflow(a, b, out); }

/* ---------------------------------------------------------------------------------------------
 * Layers and their defaults
 * ------------------------------------------------------------------------------------------- */

int rnx_cell_functions(int cell) {
    const int g = cell_gates(cell);
    return g == 4 ? 3 : g == 3 ? 2 : 1;
}

/* The cell's default activations (PyTorch's cells). */
static void default_activations(int cell, int acts[3]) {
    acts[0] = acts[1] = acts[2] = RNX_ACT_LINEAR;
    switch (rnx_cell_functions(cell)) {
    case 3: acts[2] = RNX_ACT_TANH; /* fall through */
    case 2:
        acts[0] = RNX_ACT_SIGMOID;
        acts[1] = RNX_ACT_TANH;
        break;
    default: acts[0] = cell == RNX_CELL_RNN_RELU ? RNX_ACT_RELU : RNX_ACT_TANH;
    }
}

rnx_layer rnx_embedding_layer(int vocab_size, int dim, int padding_idx) {
    rnx_layer l = {0};
    l.kind = RNX_LAYER_EMBEDDING;
    l.input_size = vocab_size;
    l.units = dim;
    l.padding_idx = padding_idx;
    return l;
}

rnx_layer rnx_masking_layer(float mask_value) {
    rnx_layer l = {0};
    l.kind = RNX_LAYER_MASKING;
    l.mask_value = mask_value;
    return l;
}

rnx_layer rnx_recurrent_layer(rnx_cell cell, int input_size, int hidden_size,
                              rnx_direction direction) {
    rnx_layer l = {0};
    l.kind = RNX_LAYER_RECURRENT;
    l.input_size = input_size;
    l.units = hidden_size;
    l.cell = cell;
    l.direction = direction;
    default_activations(cell, l.activations);
    return l;
}

rnx_layer rnx_readout_layer(rnx_readout mode) {
    rnx_layer l = {0};
    l.kind = RNX_LAYER_READOUT;
    l.readout = mode;
    return l;
}

rnx_layer rnx_dense_layer(int input_size, int units, rnx_act activation) {
    rnx_layer l = {0};
    l.kind = RNX_LAYER_DENSE;
    l.input_size = input_size;
    l.units = units;
    l.activation = activation;
    return l;
}

/* ---------------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------------- */

static int size_ok(int n) { return n >= 1 && n <= RNX_MAX_SIZE; }

int rnx_act_elementwise(int act) {
    return act >= RNX_ACT_LINEAR && act <= RNX_ACT_SPARSE_SIGMOID && act != RNX_ACT_SOFTMAX;
}

int rnx_act_uses_alpha(int act) {
    return act == RNX_ACT_HARD_SIGMOID || act == RNX_ACT_AFFINE || act == RNX_ACT_LEAKY_RELU ||
           act == RNX_ACT_THRESHOLDED_RELU || act == RNX_ACT_SCALED_TANH || act == RNX_ACT_ELU ||
           act == RNX_ACT_CELU || act == RNX_ACT_SOFT_SHRINK || act == RNX_ACT_HARD_SHRINK ||
           act == RNX_ACT_SQUAREPLUS;
}

/* Whether alpha is in the function's domain: celu divides by it, soft_shrink's threshold and
 * squareplus's b are >= 0 (as PyTorch requires; Keras does not check). */
static int act_alpha_ok(int act, float alpha) {
    switch (act) {
    case RNX_ACT_CELU: return alpha != 0.0f;
    case RNX_ACT_SOFT_SHRINK:
    case RNX_ACT_SQUAREPLUS: return alpha >= 0.0f;
    default: return 1;
    }
}

int rnx_act_uses_beta(int act) {
    return act == RNX_ACT_HARD_SIGMOID || act == RNX_ACT_AFFINE || act == RNX_ACT_SCALED_TANH;
}

/* Whether every field other than those of `used` (a copy with them cleared) is zero. All of
 * rnx_layer's fields are 4-byte ints and floats, so the struct has no padding to compare. */
static int rest_zero(const rnx_layer *used) {
    static const rnx_layer zero;
    return memcmp(used, &zero, sizeof zero) == 0;
}

/* A recurrent layer's state width S and output width W. */
static int state_width(const rnx_layer *l) { return l->proj_size ? l->proj_size : l->units; }
static int output_width(const rnx_layer *l) {
    const int S = state_width(l);
    return l->direction == RNX_DIRECTION_BIDIRECTIONAL && l->merge == RNX_MERGE_CONCAT ? 2 * S : S;
}
static int layer_directions(const rnx_layer *l) {
    return l->direction == RNX_DIRECTION_BIDIRECTIONAL ? 2 : 1;
}

static int check_embedding(const rnx_layer *l) {
    rnx_layer rest = *l;
    rest.kind = rest.input_size = rest.units = rest.padding_idx = rest.mask_zero = 0;
    return size_ok(l->input_size) && size_ok(l->units) && l->padding_idx >= -1 &&
           l->padding_idx < l->input_size && (l->mask_zero == 0 || l->mask_zero == 1) &&
           rest_zero(&rest);
}

static int check_masking(const rnx_layer *l) {
    rnx_layer rest = *l;
    rest.kind = 0;
    rest.mask_value = 0.0f;
    return isfinite(l->mask_value) && rest_zero(&rest);
}

/* `width` is the width below, or 0 for the first layer of a model without an embedding. */
static int check_recurrent(const rnx_layer *l, int width) {
    const int lstm = l->cell == RNX_CELL_LSTM, bi = l->direction == RNX_DIRECTION_BIDIRECTIONAL;
    if (!cell_gates(l->cell) || !size_ok(l->input_size) || !size_ok(l->units) ||
        (width && l->input_size != width) || l->direction < RNX_DIRECTION_FORWARD ||
        l->direction > RNX_DIRECTION_BIDIRECTIONAL || l->merge < 0 ||
        l->merge > (bi ? RNX_MERGE_AVE : 0) || l->proj_size < 0 ||
        (l->proj_size && (!lstm || l->proj_size >= l->units)) ||
        (l->peepholes != 0 && (!lstm || l->peepholes != 1)) ||
        (l->input_forget != 0 && (!lstm || l->input_forget != 1)) || !(l->clip >= 0.0f) ||
        !isfinite(l->clip))
        return 0;
    const int n = rnx_cell_functions(l->cell);
    for (int i = 0; i < 3; i++) {
        const int act = l->activations[i];
        const int used = i < n && rnx_act_elementwise(act);
        if ((i < n && !used) || (i >= n && act != 0) || !isfinite(l->alpha[i]) ||
            !isfinite(l->beta[i]) ||
            ((!used || !rnx_act_uses_alpha(act)) && l->alpha[i] != 0.0f) ||
            ((!used || !rnx_act_uses_beta(act)) && l->beta[i] != 0.0f) ||
            (used && !act_alpha_ok(act, l->alpha[i])))
            return 0;
    }
    rnx_layer rest = *l;
    rest.kind = rest.input_size = rest.units = rest.cell = rest.direction = rest.merge = 0;
    rest.proj_size = rest.peepholes = rest.input_forget = 0;
    rest.clip = 0.0f;
    for (int i = 0; i < 3; i++) {
        rest.activations[i] = 0;
        rest.alpha[i] = rest.beta[i] = 0.0f;
    }
    return rest_zero(&rest);
}

static int check_readout(const rnx_layer *l) {
    rnx_layer rest = *l;
    rest.kind = rest.readout = 0;
    return l->readout >= RNX_READOUT_SEQUENCE && l->readout <= RNX_READOUT_MAX && rest_zero(&rest);
}

static int check_dense(const rnx_layer *l, int width) {
    const int a = l->activation;
    rnx_layer rest = *l;
    rest.kind = rest.input_size = rest.units = rest.activation = 0;
    return l->input_size == width && size_ok(l->units) &&
           (a == RNX_ACT_LINEAR || a == RNX_ACT_RELU || a == RNX_ACT_TANH ||
            a == RNX_ACT_SIGMOID || a == RNX_ACT_SOFTMAX) &&
           rest_zero(&rest);
}

/* Checks a list; the parameter counts: the embedding's, the recurrent layers', in all. */
static rnx_status check_list(const rnx_layer *layers, int n, size_t *embedding_params,
                             size_t *recurrent_params, size_t *total) {
    if (!layers) return RNX_ERR_NULL_ARGUMENT;
    if (n < 1 || n > RNX_MAX_LAYERS) return RNX_ERR_BAD_CONFIG;
    int i = 0, width = 0;
    size_t count = 0, p;
    *embedding_params = 0;
    if (layers[0].kind == RNX_LAYER_EMBEDDING) {
        if (!check_embedding(&layers[0])) return RNX_ERR_BAD_CONFIG;
        *embedding_params = (size_t)layers[0].input_size * layers[0].units;
        count = *embedding_params;
        width = layers[0].units;
        i = 1;
    } else if (layers[0].kind == RNX_LAYER_MASKING) {
        if (!check_masking(&layers[0])) return RNX_ERR_BAD_CONFIG;
        i = 1;
    }
    const int first_recurrent = i;
    for (; i < n && layers[i].kind == RNX_LAYER_RECURRENT; i++) {
        if (!check_recurrent(&layers[i], width)) return RNX_ERR_BAD_CONFIG;
        /* a direction's count is below 2^53 for sizes up to RNX_MAX_SIZE: only sums can wrap */
        if (!mul_ok(&p, rnx_general_param_count(&layers[i]), (size_t)layer_directions(&layers[i])) ||
            !add_ok(&count, count, p))
            return RNX_ERR_OVERFLOW;
        width = output_width(&layers[i]);
    }
    if (i == first_recurrent) return RNX_ERR_BAD_CONFIG;
    *recurrent_params = count - *embedding_params;
    if (i < n && layers[i].kind == RNX_LAYER_READOUT && !check_readout(&layers[i++]))
        return RNX_ERR_BAD_CONFIG;
    for (; i < n && layers[i].kind == RNX_LAYER_DENSE; i++) {
        if (!check_dense(&layers[i], width)) return RNX_ERR_BAD_CONFIG;
        if (!add_ok(&p, (size_t)layers[i].input_size, 1) ||
            !mul_ok(&p, p, (size_t)layers[i].units) || !add_ok(&count, count, p))
            return RNX_ERR_OVERFLOW;
        width = layers[i].units;
    }
    if (i != n) return RNX_ERR_BAD_CONFIG;
    *total = count;
    return RNX_OK;
}

rnx_status rnx_param_count(const rnx_layer *layers, int n_layers, size_t *count) {
    size_t embedding, recurrent, total;
    rnx_status s = check_list(layers, n_layers, &embedding, &recurrent, &total);
    if (s != RNX_OK) return s;
    if (!count) return RNX_ERR_NULL_ARGUMENT;
    *count = total;
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Packing
 * ------------------------------------------------------------------------------------------- */

void rnx_panel_slot(const rnx_block *b, int p, int j, int v, int *gate, int *unit) {
    const int vw = b->kernels->vw;
    if (b->gates == 1) {
        *gate = 0;
        *unit = p * b->units_per_panel + j * vw + v;
    } else {
        *gate = j;
        *unit = p * vw + v;
    }
}

uint16_t rnx_bf16_from_float(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u); /* ties to even; +-inf and the carry into inf hold */
    return (uint16_t)(bits >> 16);
}

float rnx_bf16_value(float x) {
    const uint32_t bits = (uint32_t)rnx_bf16_from_float(x) << 16;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* The floats of a direction's weights (w_ih, w_hh, w_hr) to their bfloat16 values, in place. */
static void round_weights_bf16(const rnx_general *g) {
    const rnx_general_params *w = &g->w;
    const size_t GH = (size_t)g->G * g->H;
    float *const arrays[3] = {w->w_ih, w->w_hh, w->w_hr};
    const size_t counts[3] = {GH * g->I, GH * g->S, (size_t)g->P * g->H};
    for (int a = 0; a < 3; a++)
        for (size_t i = 0; arrays[a] && i < counts[a]; i++)
            arrays[a][i] = rnx_bf16_value(arrays[a][i]);
}

/* A PyTorch weight src (G*H, K) packed: float32 into dst (npanels, K, nv, vw), or when dst is
 * NULL bfloat16 into dst16 (npanels, K2/2, nv, vw, 2), each pair of k side by side (rnx_packed). */
static void pack_weight(const rnx_block *b, float *dst, uint16_t *dst16, const float *src,
                        size_t K) {
    const int H = b->hidden_size, vw = b->kernels->vw, nv = b->nv;
    const size_t K2 = RNX_K2(K);
    for (int p = 0; p < b->npanels; p++)
        for (size_t k = 0; k < (dst ? K : K2); k++)
            for (int j = 0; j < nv; j++)
                for (int v = 0; v < vw; v++) {
                    int gate, unit;
                    rnx_panel_slot(b, p, j, v, &gate, &unit);
                    const float x = unit < H && k < K ? src[((size_t)gate * H + unit) * K + k]
                                                      : 0.0f;
                    if (dst) {
                        *dst++ = x;
                    } else {
                        const size_t pair = ((size_t)p * K2 / 2 + k / 2) * nv + j;
                        dst16[(pair * vw + v) * 2 + k % 2] = rnx_bf16_from_float(x);
                    }
                }
}

/* dst from a PyTorch weight src (G*H, K) quantized to int8, each row symmetrically (rnx_precision's
 * int8); a non-finite row gets a NaN scale and zero weights. */
static void pack_weight_q8(const rnx_block *b, const rnx_q8 *dst, const float *src, size_t K) {
    const int H = b->hidden_size, vw = b->kernels->vw, nv = b->nv;
    const size_t groups = RNX_K4(K) / 4;
    for (int p = 0; p < b->npanels; p++)
        for (int j = 0; j < nv; j++)
            for (int v = 0; v < vw; v++) {
                int gate, unit;
                rnx_panel_slot(b, p, j, v, &gate, &unit);
                const float *row = unit < H ? src + ((size_t)gate * H + unit) * K : NULL;
                float top = 0.0f;
                int finite = 1;
                for (size_t k = 0; row && k < K; k++) {
                    finite &= isfinite(row[k]) != 0;
                    top = fabsf(row[k]) > top ? fabsf(row[k]) : top;
                }
                const float scale = !finite ? NAN : top > 0.0f ? top / 127.0f : 1.0f;
                const size_t col = ((size_t)p * nv + j) * vw + v;
                int32_t sum = 0;
                for (size_t k = 0; k < groups * 4; k++) {
                    float q = row && finite && k < K ? rintf(row[k] / scale) : 0.0f;
                    q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
                    const size_t at = ((size_t)p * groups + k / 4) * nv + j;
                    dst->w[(at * vw + v) * 4 + k % 4] = (int8_t)q;
                    sum += (int32_t)q;
                }
                dst->scale[col] = scale;
                dst->sum[col] = sum;
            }
}

/* bx (npanels, nv, vw) = bias_ih + bias_hh, leaving GRU's bias_hn to bhn (npanels, vw). */
static void pack_biases(const rnx_block *b, rnx_packed *w, const float *b_ih, const float *b_hh) {
    const int H = b->hidden_size, vw = b->kernels->vw;
    const int gru = b->gates == 3;
    float *bx = w->bx;
    for (int p = 0; p < b->npanels; p++)
        for (int j = 0; j < b->nv; j++)
            for (int v = 0; v < vw; v++) {
                int gate, unit;
                rnx_panel_slot(b, p, j, v, &gate, &unit);
                const size_t row = (size_t)gate * H + unit;
                float bias = 0.0f;
                if (unit < H) bias = b_ih[row] + ((gru && gate == 2) ? 0.0f : b_hh[row]);
                *bx++ = bias;
                if (gru && gate == 2) w->bhn[(size_t)p * vw + v] = unit < H ? b_hh[row] : 0.0f;
            }
}

/* A block's sizes and packing geometry from its layer. */
static void plan_block(rnx_block *b, const rnx_layer *l, const rnx_kernels *kernels) {
    b->layer = l;
    b->cell = l->cell;
    b->input_size = l->input_size;
    b->hidden_size = l->units;
    b->state_size = state_width(l);
    b->directions = layer_directions(l);
    b->reverse = l->direction == RNX_DIRECTION_REVERSE;
    b->merge = l->merge;
    b->width = output_width(l);
    b->kernels = kernels;
    b->gates = cell_gates(l->cell);
    b->plain = rnx_general_needed(l, 0);
    if (b->plain) {
        b->hidden_padded = b->state_size > b->hidden_size ? b->state_size : b->hidden_size;
        return;
    }
    b->nv = b->gates == 3 ? 3 : 4;
    b->units_per_panel = b->gates == 1 ? 4 * kernels->vw : kernels->vw;
    b->npanels = (b->hidden_size + b->units_per_panel - 1) / b->units_per_panel;
    b->hidden_padded = b->npanels * b->units_per_panel;
}

/* Where every array the model owns lives in its one aligned block (model->storage). */
static void storage_layout(rnx_arena *a, void *what) {
    rnx_model *m = what;
    for (int k = 0; k < m->n_blocks; k++) {
        rnx_block *b = &m->blocks[k];
        const size_t panels = (size_t)b->npanels * b->nv * b->kernels->vw;
        if (rnx_general_needed(b->layer, 1)) {
            /* the plain path reads PyTorch's layout in place: a copy of each direction's params */
            rnx_general *g = rnx_arena_take(a, (size_t)b->directions, sizeof *g);
            for (int d = 0; d < b->directions; d++) {
                float *params = rnx_arena_take(a, rnx_general_param_count(b->layer), sizeof(float));
                if (g) g[d].w.w_ih = params;
            }
            b->general = g;
        }
        const int bf16 = m->info.precision == RNX_PRECISION_BF16;
        const int int8 = m->info.precision == RNX_PRECISION_INT8;
        const size_t weight_bytes = bf16 ? sizeof(uint16_t) : sizeof(float);
        for (int d = 0; !b->plain && d < b->directions; d++) {
            rnx_packed *w = &b->packed[d];
            w->in_size = b->input_size;
            if (int8) {
                rnx_q8 *q8[2] = {&w->x8, &w->h8};
                const size_t K[2] = {RNX_K4(b->input_size), RNX_K4(b->hidden_size)};
                for (int i = 0; i < 2; i++) {
                    q8[i]->w = rnx_arena_take(a, panels * K[i], sizeof(int8_t));
                    q8[i]->scale = rnx_arena_take(a, panels, sizeof(float));
                    q8[i]->sum = rnx_arena_take(a, panels, sizeof(int32_t));
                }
            } else {
                const size_t kx = bf16 ? RNX_K2(b->input_size) : (size_t)b->input_size;
                const size_t kh = bf16 ? RNX_K2(b->hidden_size) : (size_t)b->hidden_size;
                void *wx = rnx_arena_take(a, panels * kx, weight_bytes);
                void *wh = rnx_arena_take(a, panels * kh, weight_bytes);
                w->wx = bf16 ? NULL : wx;
                w->wh = bf16 ? NULL : wh;
                w->wx16 = bf16 ? wx : NULL;
                w->wh16 = bf16 ? wh : NULL;
            }
            w->bx = rnx_arena_take(a, panels, sizeof(float));
            w->bhn = b->gates == 3
                         ? rnx_arena_take(a, (size_t)b->npanels * b->kernels->vw, sizeof(float))
                         : NULL;
        }
    }
    if (m->info.takes_ids) {
        m->embedding = rnx_arena_take(a, (size_t)m->vocab_size * m->embed_dim, sizeof(float));
        const size_t fold = rnx_fold_floats(m) / m->blocks[0].directions;
        for (int d = 0; fold && d < m->blocks[0].directions; d++)
            m->fold[d] = rnx_arena_take(a, fold, sizeof(float));
    }
    for (int j = 0; j < m->n_dense; j++) {
        rnx_dense *dn = &m->dense[j];
        dn->weight = rnx_arena_take(a, (size_t)dn->out_size * dn->in_size, sizeof(float));
        dn->bias = rnx_arena_take(a, (size_t)dn->out_size, sizeof(float));
    }
}

/* Copies and packs `params` (in the list's order) into the storage. */
static void load_params(rnx_model *m, const float *src) {
    if (m->info.takes_ids) {
        const size_t n = (size_t)m->vocab_size * m->embed_dim;
        memcpy((float *)m->embedding, src, n * sizeof(float));
        src += n;
    }
    for (int k = 0; k < m->n_blocks; k++) {
        const rnx_block *b = &m->blocks[k];
        const size_t K = (size_t)b->input_size, H = (size_t)b->hidden_size;
        const size_t GH = (size_t)b->gates * H, count = rnx_general_param_count(b->layer);
        for (int d = 0; d < b->directions; d++, src += count) {
            if (b->general) {
                rnx_general *g = (rnx_general *)&b->general[d];
                float *copy = g->w.w_ih;
                memcpy(copy, src, count * sizeof(float));
                rnx_general_init(g, b->layer, copy);
                g->bf16 = m->info.precision == RNX_PRECISION_BF16;
                if (g->bf16) round_weights_bf16(g);
            }
            if (b->plain) continue;
            const float *w_ih = src, *w_hh = w_ih + GH * K, *b_ih = w_hh + GH * H;
            const float *b_hh = b_ih + GH;
            if (m->info.precision == RNX_PRECISION_INT8) {
                pack_weight_q8(b, &b->packed[d].x8, w_ih, K);
                pack_weight_q8(b, &b->packed[d].h8, w_hh, H);
            } else {
                pack_weight(b, b->packed[d].wx, b->packed[d].wx16, w_ih, K);
                pack_weight(b, b->packed[d].wh, b->packed[d].wh16, w_hh, H);
            }
            pack_biases(b, (rnx_packed *)&b->packed[d], b_ih, b_hh);
        }
    }
    for (int j = 0; j < m->n_dense; j++) {
        const rnx_dense *dn = &m->dense[j];
        const size_t nw = (size_t)dn->out_size * dn->in_size;
        memcpy((float *)dn->weight, src, nw * sizeof(float));
        memcpy((float *)dn->bias, src + nw, (size_t)dn->out_size * sizeof(float));
        src += nw + dn->out_size;
    }
}

/* The model's info from its blocks, head and list (isa set by the caller). */
static void fill_info(rnx_model *m, int n_layers) {
    rnx_model_info *info = &m->info;
    info->n_layers = n_layers;
    info->n_recurrent = m->n_blocks;
    info->per_step = m->readout == RNX_READOUT_SEQUENCE;
    info->input_size = info->takes_ids ? m->vocab_size : m->blocks[0].input_size;
    info->output_size = m->n_dense ? m->dense[m->n_dense - 1].out_size
                                   : m->blocks[m->n_blocks - 1].width;
    info->streamable = m->readout == RNX_READOUT_SEQUENCE || m->readout == RNX_READOUT_LAST ||
                       m->readout == RNX_READOUT_FINAL;
    size_t state = 0, cell = 0;
    for (int k = 0; k < m->n_blocks; k++) {
        rnx_block *b = &m->blocks[k];
        b->state_offset = state;
        b->cell_offset = cell;
        state += (size_t)b->directions * b->state_size;
        if (b->cell == RNX_CELL_LSTM) cell += (size_t)b->directions * b->hidden_size;
        if (b->directions != 1 || b->reverse) info->streamable = 0;
    }
    info->state_size = state;
    info->cell_size = cell;
    info->folded = m->fold[0] != NULL;
}

void rnx_model_free(rnx_model *model) {
    if (!model) return;
    free(model->storage);
    free(model->layers);
    free(model->blocks);
    free(model->dense);
    free(model);
}

rnx_status rnx_model_create(rnx_model **out, const rnx_layer *layers, int n_layers, int isa,
                            const float *params) {
    return rnx_model_create_precision(out, layers, n_layers, isa, RNX_PRECISION_FP32, params);
}

rnx_status rnx_model_create_precision(rnx_model **out, const rnx_layer *layers, int n_layers,
                                      int isa, int precision, const float *params) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    size_t embedding_params, recurrent_params, total;
    rnx_status s = check_list(layers, n_layers, &embedding_params, &recurrent_params, &total);
    if (s != RNX_OK) return s;
    if (!params) return RNX_ERR_NULL_ARGUMENT;
    if (isa < RNX_ISA_AUTO || isa > RNX_ISA_AVX_VNNI) return RNX_ERR_BAD_CONFIG;
    if (precision < RNX_PRECISION_FP32 || precision > RNX_PRECISION_INT8) return RNX_ERR_BAD_CONFIG;
    for (int i = 0; i < n_layers && precision == RNX_PRECISION_INT8; i++)
        if (layers[i].kind == RNX_LAYER_RECURRENT &&
            (rnx_general_needed(&layers[i], 1) || layers[i].input_size > RNX_INT8_MAX_K ||
             layers[i].units > RNX_INT8_MAX_K))
            return RNX_ERR_BAD_CONFIG; /* int8 runs the packed kernels' cells only */
    if (isa == RNX_ISA_AUTO) isa = rnx_default_isa();
    const rnx_kernels *kernels = rnx_kernels_for((rnx_isa)isa);
    if (!kernels) return RNX_ERR_ISA_UNAVAILABLE;

    int n_blocks = 0, n_dense = 0;
    for (int i = 0; i < n_layers; i++) {
        n_blocks += layers[i].kind == RNX_LAYER_RECURRENT;
        n_dense += layers[i].kind == RNX_LAYER_DENSE;
    }
    rnx_model *m = calloc(1, sizeof *m);
    if (!m) return RNX_ERR_OUT_OF_MEMORY;
    m->layers = malloc((size_t)n_layers * sizeof *m->layers);
    m->blocks = calloc((size_t)n_blocks, sizeof *m->blocks);
    m->dense = n_dense ? calloc((size_t)n_dense, sizeof *m->dense) : NULL;
    if (!m->layers || !m->blocks || (n_dense && !m->dense)) {
        rnx_model_free(m);
        return RNX_ERR_OUT_OF_MEMORY;
    }
    memcpy(m->layers, layers, (size_t)n_layers * sizeof *layers);
    m->kernels = kernels;
    m->info.isa = isa;
    m->info.precision = precision;
    m->info.recurrent_param_offset = embedding_params;
    m->info.recurrent_param_count = recurrent_params;
    m->readout = RNX_READOUT_SEQUENCE;
    for (int i = 0; i < n_layers; i++) {
        const rnx_layer *l = &layers[i];
        if (l->kind == RNX_LAYER_EMBEDDING) {
            m->info.takes_ids = 1;
            m->vocab_size = l->input_size;
            m->embed_dim = l->units;
            m->mask_zero = l->mask_zero;
        } else if (l->kind == RNX_LAYER_MASKING) {
            m->masking = 1;
            m->mask_value = l->mask_value;
        } else if (l->kind == RNX_LAYER_RECURRENT) {
            plan_block(&m->blocks[m->n_blocks++], &m->layers[i], kernels);
        } else if (l->kind == RNX_LAYER_READOUT) {
            m->readout = l->readout;
        } else {
            rnx_dense *dn = &m->dense[m->n_dense++];
            dn->in_size = l->input_size;
            dn->out_size = l->units;
            dn->activation = l->activation;
            if (dn->out_size > m->dense_width) m->dense_width = dn->out_size;
        }
    }
    if ((s = rnx_arena_build(&m->storage, storage_layout, m)) != RNX_OK) {
        rnx_model_free(m);
        return s;
    }
    load_params(m, params);
    for (int d = 0; d < m->blocks[0].directions && m->fold[d]; d++)
        if ((s = rnx_fold_embedding(m, (float *)m->fold[d], d)) != RNX_OK) {
            rnx_model_free(m);
            return s;
        }
    fill_info(m, n_layers);
    *out = m;
    return RNX_OK;
}

rnx_model_info rnx_model_get_info(const rnx_model *model) {
    rnx_model_info none = {0};
    return model ? model->info : none;
}

rnx_status rnx_model_layer(const rnx_model *model, int index, rnx_layer *out) {
    if (!model || !out) return RNX_ERR_NULL_ARGUMENT;
    if (index < 0 || index >= model->info.n_layers) return RNX_ERR_BAD_ARGUMENT;
    *out = model->layers[index];
    return RNX_OK;
}
