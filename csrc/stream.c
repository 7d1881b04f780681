/* stream.c: one time step per call over a workspace made once, for streaming callers. */
#include <stdlib.h>
#include "rnx_internal.h"

struct rnx_stream {
    const rnx_model *model;
    rnx_workspace ws; /* sized for T = 1; ws.parity tracks which h buffer is current */
};

rnx_status rnx_stream_create(rnx_stream **out, const rnx_model *model, int batch) {
    if (!out) return RNX_ERR_NULL_ARGUMENT;
    *out = NULL;
    if (!model) return RNX_ERR_NULL_ARGUMENT;
    if (!model->info.streamable) return RNX_ERR_BAD_CONFIG;
    if (batch < 1) return RNX_ERR_BAD_ARGUMENT;
    rnx_stream *s = malloc(sizeof *s);
    if (!s) return RNX_ERR_OUT_OF_MEMORY;
    s->model = model;
    rnx_status status = rnx_workspace_create(&s->ws, model, batch, 1, 1);
    if (status != RNX_OK) {
        free(s);
        return status;
    }
    for (int r = 0; r < batch; r++) s->ws.len[r] = 1;
    s->ws.steps = 1;
    rnx_load_states(model, &s->ws, NULL, NULL, batch, 0);
    *out = s;
    return RNX_OK;
}

void rnx_stream_free(rnx_stream *stream) {
    if (!stream) return;
    rnx_workspace_free(&stream->ws);
    free(stream);
}

rnx_status rnx_stream_reset(rnx_stream *stream, const float *h0, const float *c0) {
    if (!stream) return RNX_ERR_NULL_ARGUMENT;
    rnx_load_states(stream->model, &stream->ws, h0, c0, stream->ws.Bs, 0);
    return RNX_OK;
}

rnx_status rnx_stream_step(rnx_stream *stream, float *y, const float *x, const int32_t *ids) {
    if (!stream) return RNX_ERR_NULL_ARGUMENT;
    const rnx_model *m = stream->model;
    rnx_workspace *ws = &stream->ws;
    const int takes_ids = m->info.takes_ids, I = m->info.input_size;
    if (takes_ids ? !ids : !x) return RNX_ERR_NULL_ARGUMENT;
    if (takes_ids ? x != NULL : ids != NULL) return RNX_ERR_BAD_ARGUMENT;
    if (ids && rnx_check_ids(m, ids, (size_t)ws->Bs) != RNX_OK) return RNX_ERR_BAD_ARGUMENT;
    ws->ids = ids;
    ws->x = m->masking ? x : NULL;
    const rnx_seq_view xv = {(float *)x, I, I, 0}, none = {NULL, 0, 0, 0};
    rnx_run_blocks(m, ws, (rnx_team){0, 1}, xv, none, 1, 0);
    ws->parity ^= 1;
    if (!y) return RNX_OK;
    /* the model's output for this step: the top layer's new h (the one kept on a masked step,
     * which a sequence readout turns into zeros) through the dense layers */
    const int top = m->n_blocks - 1, F = m->info.output_size;
    for (int r = 0; r < ws->Bs; r++) {
        const float *h = rnx_state_buffer(m, ws, top, 0, ws->parity) +
                         (size_t)r * m->blocks[top].hidden_padded;
        const int shown = m->readout != RNX_READOUT_SEQUENCE || rnx_step_active(m, ws, r, 0);
        rnx_dense_row(m, y + (size_t)r * F, shown ? h : NULL, ws->scratch);
    }
    return RNX_OK;
}

rnx_status rnx_stream_state(const rnx_stream *stream, float *h, float *c) {
    if (!stream) return RNX_ERR_NULL_ARGUMENT;
    rnx_store_states(stream->model, &stream->ws, h, c, stream->ws.Bs, 0, 0);
    return RNX_OK;
}
