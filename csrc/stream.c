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
    if (model->directions != 1) return RNX_ERR_BAD_CONFIG;
    if (batch < 1) return RNX_ERR_BAD_ARGUMENT;
    rnx_stream *s = malloc(sizeof *s);
    if (!s) return RNX_ERR_OUT_OF_MEMORY;
    s->model = model;
    rnx_status status = rnx_workspace_create(&s->ws, model, batch, 1);
    if (status != RNX_OK) {
        free(s);
        return status;
    }
    for (int r = 0; r < batch; r++) s->ws.len[r] = 1;
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

rnx_status rnx_stream_step(rnx_stream *stream, float *y, const float *x) {
    if (!stream || !x) return RNX_ERR_NULL_ARGUMENT;
    const int I = stream->model->config.input_size, H = stream->model->config.hidden_size;
    const rnx_seq_view xv = {(float *)x, I, I, 0}, yv = {y, H, H, 0};
    rnx_run_stack(stream->model, &stream->ws, (rnx_team){0, 1}, xv, yv, 1);
    stream->ws.parity ^= 1;
    return RNX_OK;
}

rnx_status rnx_stream_state(const rnx_stream *stream, float *h, float *c) {
    if (!stream) return RNX_ERR_NULL_ARGUMENT;
    rnx_store_states(stream->model, &stream->ws, h, c, stream->ws.Bs, 0, 0);
    return RNX_OK;
}
