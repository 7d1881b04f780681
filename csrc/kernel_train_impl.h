/* kernel_train_impl.h: the training kernels, included by kernel_impl.h (so compiled once per
 * instruction set with its vector maths and `accumulate`). Layout of a tape row: see rnx_tape in
 * backward.c; the maths: see rnnext/backward.py, which these kernels are tested against. */

/* ---------------------------------------------------------------------------------------------
 * out[r] = init[r] + a[r] W over panels of 4 vectors: the backward pass's products with the
 * transposed weights (a_stride 1, W packed) and the weight gradients' products (W in place).
 * ------------------------------------------------------------------------------------------- */

RNX_INLINE void matmul_panels(float *const *out, const float *const *init,
                              const float *const *a, const ptrdiff_t AS, const float *w, int ldw,
                              size_t panel_stride, int K, int p, const int NP, const int NR) {
    const int panel = 4 * RNX_VW;
    vf acc[2][RNX_MR][4];
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < 4; j++)
                acc[q][r][j] = init ? vload(init[r] + (size_t)(p + q) * panel + j * RNX_VW)
                                    : vsplat(0.0f);
    accumulate(acc, a, AS, w + p * panel_stride, NULL, 0, panel_stride, K, ldw, NP, NR, 4);
    for (int q = 0; q < NP; q++)
        for (int r = 0; r < NR; r++)
            for (int j = 0; j < 4; j++)
                vstore(out[r] + (size_t)(p + q) * panel + j * RNX_VW, acc[q][r][j]);
}

RNX_INLINE void matmul_tile(float *const *out, const float *const *init, const float *const *a,
                            const ptrdiff_t AS, const float *w, int ldw, size_t panel_stride,
                            int K, int npanels, const int NR) {
    int p = 0;
    if (RNX_PAIR_PANELS(NR, 4))
        for (; p + 1 < npanels; p += 2)
            matmul_panels(out, init, a, AS, w, ldw, panel_stride, K, p, 2, NR);
    for (; p < npanels; p++) matmul_panels(out, init, a, AS, w, ldw, panel_stride, K, p, 1, NR);
}

static void RNX_K(matmul)(float *const *out, const float *const *init, const float *const *a,
                          ptrdiff_t a_stride, const float *w, int ldw, size_t panel_stride, int K,
                          int npanels, int nrows) {
    /* a contiguous `a` keeps its unit stride a constant, for the per-step products */
#define RNX_MATMUL(NR)                                                                            \
    if (a_stride == 1) matmul_tile(out, init, a, 1, w, ldw, panel_stride, K, npanels, NR);        \
    else matmul_tile(out, init, a, a_stride, w, ldw, panel_stride, K, npanels, NR)
    RNX_ROWS_SWITCH(RNX_MATMUL)
#undef RNX_MATMUL
}

/* ---------------------------------------------------------------------------------------------
 * Gate gradients of one step of one row, in place in its tape row.
 * ------------------------------------------------------------------------------------------- */

RNX_INLINE void lstm_grads(float *g, float *dh_direct, float *dc, const float *dh,
                           const float *c_prev, int npanels) {
    const size_t tail = (size_t)npanels * 4 * RNX_VW;
    for (int p = 0; p < npanels; p++) {
        float *gp = g + (size_t)p * 4 * RNX_VW;
        const size_t u0 = (size_t)p * RNX_VW;
        vf i = vload(gp), f = vload(gp + RNX_VW), gg = vload(gp + 2 * RNX_VW);
        vf o = vload(gp + 3 * RNX_VW);
        vf tc = vtanh(vload(g + tail + u0));
        vf dhv = vload(dh + u0);
        vf dcv = vload(dc + u0) + dhv * o * (1.0f - tc * tc);
        vstore(gp, dcv * gg * i * (1.0f - i));
        vstore(gp + RNX_VW, dcv * vload(c_prev + u0) * f * (1.0f - f));
        vstore(gp + 2 * RNX_VW, dcv * i * (1.0f - gg * gg));
        vstore(gp + 3 * RNX_VW, dhv * tc * o * (1.0f - o));
        vstore(dc + u0, dcv * f);
        vstore(dh_direct + u0, vsplat(0.0f));
    }
}

/* The n gate's two sides differ by the factor r: the recurrent side (dan * r) stays in the
 * panel, the input side (dan) replaces W_hn h + b_hn in the tail. */
RNX_INLINE void gru_grads(float *g, float *dh_direct, const float *dh, const float *h_prev,
                          int npanels) {
    const size_t tail = (size_t)npanels * 3 * RNX_VW;
    for (int p = 0; p < npanels; p++) {
        float *gp = g + (size_t)p * 3 * RNX_VW;
        const size_t u0 = (size_t)p * RNX_VW;
        vf r = vload(gp), z = vload(gp + RNX_VW), n = vload(gp + 2 * RNX_VW);
        vf hn = vload(g + tail + u0);
        vf dhv = vload(dh + u0);
        vf dan = dhv * (1.0f - z) * (1.0f - n * n);
        vstore(gp, dan * hn * r * (1.0f - r));
        vstore(gp + RNX_VW, dhv * (vload(h_prev + u0) - n) * z * (1.0f - z));
        vstore(gp + 2 * RNX_VW, dan * r);
        vstore(g + tail + u0, dan);
        vstore(dh_direct + u0, dhv * z);
    }
}

RNX_INLINE void rnn_grads(const int cell, float *g, float *dh_direct, const float *dh,
                          const float *h_new, int npanels) {
    for (int q = 0; q < npanels * 4; q++) {
        const size_t u0 = (size_t)q * RNX_VW;
        vf h = vload(h_new + u0), dhv = vload(dh + u0);
        if (cell == RNX_CELL_RNN_TANH) vstore(g + u0, dhv * (1.0f - h * h));
        else vstore(g + u0, vselect(h > 0.0f, dhv, vsplat(0.0f)));
        vstore(dh_direct + u0, vsplat(0.0f));
    }
}

static void RNX_K(cell_grads)(int cell, float *g, float *dh_direct, float *dc, const float *dh,
                              const float *c_prev, const float *h_prev, const float *h_new,
                              int npanels) {
    switch (cell) {
    case RNX_CELL_LSTM: lstm_grads(g, dh_direct, dc, dh, c_prev, npanels); break;
    case RNX_CELL_GRU: gru_grads(g, dh_direct, dh, h_prev, npanels); break;
    case RNX_CELL_RNN_TANH: rnn_grads(RNX_CELL_RNN_TANH, g, dh_direct, dh, h_new, npanels); break;
    default: rnn_grads(RNX_CELL_RNN_RELU, g, dh_direct, dh, h_new, npanels); break;
    }
}
