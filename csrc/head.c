/* head.c: what surrounds the recurrent layers: the embedding (token lookup, and its fold into
 * the first layer's input product), the readout and the dense layers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "rnx_internal.h"

/* The fold's bound, in floats (64 MB): V*G*H*D above it keeps the lookup and the product. */
#define RNX_FOLD_MAX_FLOATS ((size_t)1 << 24)

/* ---------------------------------------------------------------------------------------------
 * Embedding
 * ------------------------------------------------------------------------------------------- */

rnx_status rnx_check_ids(const rnx_model *m, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->vocab_size) return RNX_ERR_BAD_ARGUMENT;
    return RNX_OK;
}

size_t rnx_fold_floats(const rnx_model *m) {
    /* an int8 product quantizes each embedding row as it is used, which a table would not save */
    if (!m->info.takes_ids || m->blocks[0].plain || m->info.precision == RNX_PRECISION_INT8)
        return 0;
    const rnx_block *b = &m->blocks[0];
    size_t n;
    const size_t width = (size_t)b->npanels * b->nv * b->kernels->vw;
    if (__builtin_mul_overflow((size_t)m->vocab_size, width * b->directions, &n) ||
        n > RNX_FOLD_MAX_FLOATS)
        return 0;
    return n;
}

/* With the kernels' own product, so a folded row is bitwise the projection it replaces (at bf16
 * on embedding rows rounded as the product rounds its inputs, in a buffer of mr rows). */
rnx_status rnx_fold_embedding(const rnx_model *m, float *fold, int d) {
    const rnx_block *b = &m->blocks[0];
    const rnx_kernels *k = b->kernels;
    const size_t width = (size_t)b->npanels * b->nv * k->vw;
    const int bf16 = m->info.precision == RNX_PRECISION_BF16;
    const size_t row_bytes = RNX_BF16_BYTES(m->embed_dim);
    uint8_t *rows = bf16 ? malloc((size_t)k->mr * row_bytes) : NULL;
    if (bf16 && !rows) return RNX_ERR_OUT_OF_MEMORY;
    const float *a[RNX_MAX_MR];
    float *out[RNX_MAX_MR];
    rnx_qrow qa[RNX_MAX_MR];
    for (int v0 = 0; v0 < m->vocab_size; v0 += k->mr) {
        const int nr = m->vocab_size - v0 < k->mr ? m->vocab_size - v0 : k->mr;
        for (int i = 0; i < nr; i++) {
            a[i] = m->embedding + (size_t)(v0 + i) * m->embed_dim;
            out[i] = fold + (size_t)(v0 + i) * width;
            if (bf16)
                k->prepare(&qa[i], rows + i * row_bytes, a[i], m->embed_dim, RNX_PRECISION_BF16);
        }
        k->project(out, a, bf16 ? qa : NULL, &b->packed[d], b->nv, 0, b->npanels, nr);
    }
    free(rows);
    return RNX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Dense layers: y = act(W x + b), a plain product (a few rows per sequence or step)
 * ------------------------------------------------------------------------------------------- */

static void activate_row(float *v, int n, int act) {
    if (act == RNX_ACT_SOFTMAX) {
        float top = v[0], sum = 0.0f;
        for (int i = 1; i < n; i++) top = v[i] > top ? v[i] : top;
        for (int i = 0; i < n; i++) sum += v[i] = expf(v[i] - top);
        for (int i = 0; i < n; i++) v[i] /= sum;
        return;
    }
    for (int i = 0; i < n; i++)
        switch (act) {
        case RNX_ACT_RELU: v[i] = v[i] > 0.0f ? v[i] : 0.0f; break;
        case RNX_ACT_TANH: v[i] = tanhf(v[i]); break;
        case RNX_ACT_SIGMOID: v[i] = 1.0f / (1.0f + expf(-v[i])); break;
        default: break;
        }
}

void rnx_dense_row(const rnx_model *m, float *y, const float *in, float *scratch) {
    const int F = m->info.output_size;
    if (!in) {
        memset(y, 0, (size_t)F * sizeof(float));
        return;
    }
    if (!m->n_dense) {
        memcpy(y, in, (size_t)F * sizeof(float));
        return;
    }
    const float *x = in;
    for (int j = 0; j < m->n_dense; j++) {
        const rnx_dense *dn = &m->dense[j];
        float *out = j == m->n_dense - 1 ? y : scratch + (size_t)(j & 1) * m->dense_width;
        for (int o = 0; o < dn->out_size; o++) {
            const float *w = dn->weight + (size_t)o * dn->in_size;
            float s = dn->bias[o];
            for (int i = 0; i < dn->in_size; i++) s += w[i] * x[i];
            out[o] = s;
        }
        activate_row(out, dn->out_size, dn->activation);
        x = out;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Readouts
 * ------------------------------------------------------------------------------------------- */

int rnx_top_is_output(const rnx_model *m) {
    return m->readout == RNX_READOUT_SEQUENCE && m->n_dense == 0;
}

static float *member_scratch(const rnx_model *m, const rnx_workspace *ws, rnx_team team) {
    return ws->scratch + (size_t)team.id * 2 * m->dense_width;
}

void rnx_readout_begin(const rnx_model *m, rnx_workspace *ws) {
    const size_t n = (size_t)ws->Bs * m->blocks[m->n_blocks - 1].width;
    for (size_t i = 0; i < n; i++) ws->acc[i] = m->readout == RNX_READOUT_MAX ? -INFINITY : 0.0f;
    memset(ws->count, 0, (size_t)ws->Bs * sizeof(int32_t));
}

void rnx_readout_steps(const rnx_model *m, rnx_workspace *ws, rnx_team team, rnx_seq_view top,
                       rnx_seq_view y, int t0, int t1) {
    const int W = m->blocks[m->n_blocks - 1].width;
    float *scratch = member_scratch(m, ws, team);
    int r0, r1;
    rnx_team_rows(ws, team, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        float *acc = ws->acc + (size_t)r * W;
        for (int t = t0; t < t1; t++) {
            const int active = rnx_step_active(m, ws, r, t);
            const float *row = top.base + r * top.row_stride + (ptrdiff_t)(t - top.t_origin) * top.t_stride;
            if (m->readout == RNX_READOUT_SEQUENCE) {
                rnx_dense_row(m, y.base + r * y.row_stride + (ptrdiff_t)t * y.t_stride,
                              active ? row : NULL, scratch);
                continue;
            }
            if (!active) continue;
            ws->count[r]++;
            for (int u = 0; u < W; u++) {
                if (m->readout == RNX_READOUT_LAST) acc[u] = row[u];
                else if (m->readout == RNX_READOUT_MEAN) acc[u] += row[u];
                else if (row[u] > acc[u] || row[u] != row[u]) acc[u] = row[u]; /* NaN wins, as torch.max */
            }
        }
    }
}

/* acc (S or 2S) = the top layer's final states, merged as its outputs are. */
static void final_states(const rnx_model *m, const rnx_workspace *ws, float *acc, int r,
                         int steps) {
    const int k = m->n_blocks - 1, cur = ws->parity ^ (steps & 1);
    const rnx_block *b = &m->blocks[k];
    const int S = b->state_size;
    const float *fwd = rnx_state_buffer(m, ws, k, 0, cur) + (size_t)r * b->hidden_padded;
    memcpy(acc, fwd, (size_t)S * sizeof(float));
    if (b->directions == 1) return;
    const float *rev = rnx_state_buffer(m, ws, k, 1, cur) + (size_t)r * b->hidden_padded;
    for (int u = 0; u < S; u++)
        switch (b->merge) {
        case RNX_MERGE_CONCAT: acc[S + u] = rev[u]; break;
        case RNX_MERGE_SUM: acc[u] += rev[u]; break;
        case RNX_MERGE_MUL: acc[u] *= rev[u]; break;
        default: acc[u] = (acc[u] + rev[u]) * 0.5f;
        }
}

void rnx_readout_end(const rnx_model *m, rnx_workspace *ws, rnx_team team, float *y, int steps) {
    if (m->info.per_step) return;
    const int W = m->blocks[m->n_blocks - 1].width, F = m->info.output_size;
    float *scratch = member_scratch(m, ws, team);
    int r0, r1;
    rnx_team_rows(ws, team, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        float *acc = ws->acc + (size_t)r * W;
        if (m->readout == RNX_READOUT_FINAL) final_states(m, ws, acc, r, steps);
        else if (m->readout == RNX_READOUT_MEAN && ws->count[r])
            for (int u = 0; u < W; u++) acc[u] /= (float)ws->count[r];
        else if (!ws->count[r])
            memset(acc, 0, (size_t)W * sizeof(float));
        rnx_dense_row(m, y + (size_t)r * F, acc, scratch);
    }
}
