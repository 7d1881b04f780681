/* model.c: model lifecycle: configuration checks, parameter counts, and packing PyTorch-layout
 * weights into the kernels' panel layout (see rnx_packed in rnx_internal.h). */
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

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

/* *out = a * b, or 0 when the product overflows size_t. */
static int mul_ok(size_t *out, size_t a, size_t b) { return !__builtin_mul_overflow(a, b, out); }
static int add_ok(size_t *out, size_t a, size_t b) { return !__builtin_add_overflow(a, b, out); }

static rnx_status check_config(const rnx_config *c) {
    if (!c) return RNX_ERR_NULL_ARGUMENT;
    if (cell_gates(c->cell) == 0 || c->input_size < 1 || c->hidden_size < 1 || c->num_layers < 1 ||
        c->input_size > RNX_MAX_SIZE || c->hidden_size > RNX_MAX_SIZE ||
        c->num_layers > RNX_MAX_SIZE || (c->bidirectional != 0 && c->bidirectional != 1) ||
        c->isa < RNX_ISA_AUTO || c->isa > RNX_ISA_AVX512)
        return RNX_ERR_BAD_CONFIG;
    return RNX_OK;
}

int rnx_layer_input_size(const rnx_config *c, int layer) {
    return layer == 0 ? c->input_size : (1 + c->bidirectional) * c->hidden_size;
}

rnx_status rnx_param_count(const rnx_config *config, size_t *count) {
    rnx_status s = check_config(config);
    if (s != RNX_OK) return s;
    if (!count) return RNX_ERR_NULL_ARGUMENT;
    const size_t GH = (size_t)cell_gates(config->cell) * config->hidden_size;
    size_t total = 0;
    for (int l = 0; l < config->num_layers; l++) {
        size_t per_dir, wx;
        /* weight_ih + weight_hh + two biases = GH * (I_l + H + 2) */
        const size_t I_l = (size_t)rnx_layer_input_size(config, l);
        if (!add_ok(&per_dir, I_l, (size_t)config->hidden_size + 2) ||
            !mul_ok(&wx, GH, per_dir) || !mul_ok(&wx, wx, (size_t)1 + config->bidirectional) ||
            !add_ok(&total, total, wx))
            return RNX_ERR_OVERFLOW;
    }
    *count = total;
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Packing
 * ------------------------------------------------------------------------------------------- */

/* The gate and hidden unit that lane v of vector j in panel p holds. */
void rnx_panel_slot(const rnx_model *m, int p, int j, int v, int *gate, int *unit) {
    const int vw = m->kernels->vw;
    if (m->gates == 1) {
        *gate = 0;
        *unit = p * m->units_per_panel + j * vw + v;
    } else {
        *gate = j;
        *unit = p * vw + v;
    }
}

/* dst (npanels, K, nv, vw) from a PyTorch weight src (G*H, K). */
static void pack_weight(const rnx_model *m, float *dst, const float *src, size_t K) {
    const int H = m->config.hidden_size, vw = m->kernels->vw;
    for (int p = 0; p < m->npanels; p++)
        for (size_t k = 0; k < K; k++)
            for (int j = 0; j < m->nv; j++)
                for (int v = 0; v < vw; v++) {
                    int gate, unit;
                    rnx_panel_slot(m, p, j, v, &gate, &unit);
                    *dst++ = unit < H ? src[((size_t)gate * H + unit) * K + k] : 0.0f;
                }
}

/* bx (npanels, nv, vw) = bias_ih + bias_hh, leaving GRU's bias_hn to bhn (npanels, vw). */
static void pack_biases(const rnx_model *m, rnx_packed *w, const float *b_ih, const float *b_hh) {
    const int H = m->config.hidden_size, vw = m->kernels->vw;
    const int gru = m->gates == 3;
    float *bx = w->bx;
    for (int p = 0; p < m->npanels; p++)
        for (int j = 0; j < m->nv; j++)
            for (int v = 0; v < vw; v++) {
                int gate, unit;
                rnx_panel_slot(m, p, j, v, &gate, &unit);
                const size_t row = (size_t)gate * H + unit;
                float b = 0.0f;
                if (unit < H) b = b_ih[row] + ((gru && gate == 2) ? 0.0f : b_hh[row]);
                *bx++ = b;
                if (gru && gate == 2) w->bhn[(size_t)p * vw + v] = unit < H ? b_hh[row] : 0.0f;
            }
}

/* Floats rounded up to whole alignment blocks, so every array in the storage stays aligned. */
static int aligned_floats(size_t *out, size_t n) {
    const size_t block = RNX_ALIGN / sizeof(float);
    if (!add_ok(out, n, block - 1)) return 0;
    *out = *out / block * block;
    return 1;
}

rnx_status rnx_model_create(rnx_model **out, const rnx_config *config, const float *params) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    rnx_status s = check_config(config);
    if (s != RNX_OK) return s;
    if (!params) return RNX_ERR_NULL_ARGUMENT;
    size_t nparams;
    if ((s = rnx_param_count(config, &nparams)) != RNX_OK) return s;

    rnx_config cfg = *config;
    if (cfg.isa == RNX_ISA_AUTO) cfg.isa = rnx_default_isa();
    const rnx_kernels *kernels = rnx_kernels_for((rnx_isa)cfg.isa);
    if (!kernels) return RNX_ERR_ISA_UNAVAILABLE;

    rnx_model *m = calloc(1, sizeof *m);
    if (!m) return RNX_ERR_OUT_OF_MEMORY;
    m->config = cfg;
    m->kernels = kernels;
    m->gates = cell_gates(cfg.cell);
    m->nv = m->gates == 3 ? 3 : 4;
    m->units_per_panel = m->gates == 1 ? 4 * kernels->vw : kernels->vw;
    m->npanels = (cfg.hidden_size + m->units_per_panel - 1) / m->units_per_panel;
    m->hidden_padded = m->npanels * m->units_per_panel;
    m->directions = 1 + cfg.bidirectional;
    const int LD = cfg.num_layers * m->directions;
    const size_t H = (size_t)cfg.hidden_size;
    const size_t panel = (size_t)m->nv * kernels->vw;

    /* sizes of each layer's packed arrays, all in one aligned block */
    size_t total = 0;
    for (int l = 0; l < cfg.num_layers; l++) {
        size_t wx, wh, bx, bhn, n;
        if (!mul_ok(&wx, (size_t)m->npanels * panel, (size_t)rnx_layer_input_size(&cfg, l)) ||
            !mul_ok(&wh, (size_t)m->npanels * panel, H) || !aligned_floats(&wx, wx) ||
            !aligned_floats(&wh, wh) || !aligned_floats(&bx, (size_t)m->npanels * panel) ||
            !aligned_floats(&bhn, (size_t)m->npanels * kernels->vw) || !add_ok(&n, wx, wh) ||
            !add_ok(&n, n, bx + bhn) || !mul_ok(&n, n, (size_t)m->directions) ||
            !add_ok(&total, total, n) || !mul_ok(&n, total, sizeof(float))) {
            free(m);
            return RNX_ERR_OVERFLOW;
        }
    }
    m->packed = calloc((size_t)LD, sizeof *m->packed);
    if (!m->packed || posix_memalign(&m->storage, RNX_ALIGN, total * sizeof(float)) != 0) {
        free(m->packed);
        free(m);
        return RNX_ERR_OUT_OF_MEMORY;
    }

    float *mem = m->storage;
    const float *src = params;
    for (int l = 0; l < cfg.num_layers; l++) {
        const size_t K = (size_t)rnx_layer_input_size(&cfg, l), GH = (size_t)m->gates * H;
        for (int d = 0; d < m->directions; d++) {
            rnx_packed *w = &m->packed[l * m->directions + d];
            size_t n;
            w->in_size = (int)K;
            w->wx = mem;
            aligned_floats(&n, (size_t)m->npanels * panel * K);
            mem += n;
            w->wh = mem;
            aligned_floats(&n, (size_t)m->npanels * panel * H);
            mem += n;
            w->bx = mem;
            aligned_floats(&n, (size_t)m->npanels * panel);
            mem += n;
            w->bhn = m->gates == 3 ? mem : NULL;
            aligned_floats(&n, (size_t)m->npanels * kernels->vw);
            mem += n;

            const float *w_ih = src, *w_hh = w_ih + GH * K, *b_ih = w_hh + GH * H, *b_hh = b_ih + GH;
            src = b_hh + GH;
            pack_weight(m, w->wx, w_ih, K);
            pack_weight(m, w->wh, w_hh, H);
            pack_biases(m, w, b_ih, b_hh);
        }
    }
    *out = m;
    return RNX_OK;
}

void rnx_model_free(rnx_model *model) {
    if (!model) return;
    free(model->storage);
    free(model->packed);
    free(model);
}

rnx_config rnx_model_config(const rnx_model *model) {
    rnx_config none = {0};
    return model ? model->config : none;
}

int rnx_cell_gates(int cell) { return cell_gates(cell); }
