"""The NumPy reference of backpropagation through time: plain, in the dtype of the parameters
(float32 or float64), the oracle the compiled backward pass is compared with.

It walks back over the trace that reference.forward records (states before and after each step,
and the activated gates). Names and maths follow reference.py:

- RNN: ``h' = act(a)``, ``da = dh' * act'(a)``
- LSTM: ``c' = f*c + i*g``, ``h' = o*tanh(c')``; ``dc' += dh' * o * (1 - tanh(c')^2)``, then
  ``di = dc' g``, ``df = dc' c``, ``dg = dc' i``, ``do = dh' tanh(c')``, ``dc = dc' f``
- GRU: ``n = tanh(xn + r*hn)``, ``h' = (1-z)*n + z*h``; the n gate's input and recurrent parts
  differ by the factor r, so the gradients of the gates' input side (dgx) and recurrent side
  (dgh) are kept apart.
- GRU with the reset before the product (gru_reset_before): ``n = tanh(xn + W_hn (r*h) + b_hn)``;
  the n rows of W_hh see r*h instead of h.

Steps past a sequence's length leave the state alone: their gradient passes through unchanged
and their (zero) outputs receive none.
"""
import numpy as np

from .reference import forward, param_name


def cell_backward(cell, step, dh, dc, w_hh):
    """The gradients of one step from dh = dLoss/dh' (and dc = dLoss/dc' for the LSTM).

    step: one entry of layer_forward's trace. Returns (dgx, dgh, dw_hh, dh_prev, dc_prev): the
    gradients of the gates' pre-activations on the input side (B, G*H) and the recurrent side
    (B, G*H) (dgh is also the bias_hh gradient), of W_hh, and of the state before the step;
    dc_prev is None except for the LSTM."""
    gates, h = step["gates"], step["h"]
    if cell == "lstm":
        i, f, g, o = gates["i"], gates["f"], gates["g"], gates["o"]
        tanh_c = np.tanh(step["c_new"])
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        da = np.concatenate([dc * g * i * (1.0 - i), dc * step["c"] * f * (1.0 - f),
                             dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)], axis=1)
        return da, da, da.T @ h, da @ w_hh, dc * f
    if cell in ("gru", "gru_reset_before"):
        r, z, n = gates["r"], gates["z"], gates["n"]
        H = h.shape[1]
        dan = dh * (1.0 - z) * (1.0 - n * n)
        daz = dh * (h - n) * z * (1.0 - z)
        if cell == "gru":
            dar = dan * gates["hn"] * r * (1.0 - r)
            dgh = np.concatenate([dar, daz, dan * r], axis=1)
            return (np.concatenate([dar, daz, dan], axis=1), dgh, dgh.T @ h,
                    dh * z + dgh @ w_hh, None)
        drh = dan @ w_hh[2 * H:]  # dLoss/d(r*h)
        dar = drh * h * r * (1.0 - r)
        drz = np.concatenate([dar, daz], axis=1)
        dgh = np.concatenate([drz, dan], axis=1)
        dw_hh = np.concatenate([drz.T @ h, dan.T @ gates["rh"]], axis=0)
        return dgh, dgh, dw_hh, dh * z + drh * r + drz @ w_hh[:2 * H], None
    h_new = step["h_new"]
    da = dh * (1.0 - h_new * h_new) if cell == "rnn_tanh" else dh * (h_new > 0.0)
    return da, da, da.T @ h, da @ w_hh, None


def layer_backward(cell, params, layer, direction, x, steps, dout, dh, dc):
    """One layer and direction, back over its trace `steps` (see reference.layer_forward).

    x: the layer's input (B, T, I_l); dout: dLoss/d(outputs) (B, T, H); dh, dc: the gradients
    of its final state (B, H) (dc None except for the LSTM). Returns ({name: gradient} of its
    four parameters, dLoss/dx (B, T, I_l), dLoss/dh0, dLoss/dc0)."""
    names = [param_name(kind, layer, direction)
             for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    w_ih, w_hh = params[names[0]], params[names[1]]
    grads = {name: np.zeros_like(params[name]) for name in names}
    dx = np.zeros(x.shape, dtype=dh.dtype)
    for step in reversed(steps):
        t, active = step["t"], step["active"]
        dh_total = dh + np.where(active, dout[:, t], 0.0)
        # inactive rows: zero gradients in, so their gates contribute nothing
        dgx, dgh, dw_hh, dh_prev, dc_prev = cell_backward(
            cell, step, np.where(active, dh_total, 0.0), None if dc is None else
            np.where(active, dc, 0.0), w_hh)
        grads[names[0]] += dgx.T @ x[:, t]
        grads[names[1]] += dw_hh
        grads[names[2]] += dgx.sum(axis=0)
        grads[names[3]] += dgh.sum(axis=0)
        dx[:, t] = dgx @ w_ih
        dh = np.where(active, dh_prev, dh)
        if dc_prev is not None:
            dc = np.where(active, dc_prev, dc)
    return grads, dx, dh, dc


def forward_train(cell, params, x, num_layers, bidirectional, h0=None, c0=None, lengths=None):
    """reference.forward that also returns the trace backward needs: (y, h_n, c_n, trace).
    Inputs past each sequence's length are traced as zeros: the steps there are inactive, so
    they reach no gradient (not even as NaN)."""
    trace = {}
    if lengths is not None:
        T = np.shape(x)[1]
        x = np.where((np.arange(T)[None, :] < np.asarray(lengths)[:, None])[:, :, None], x, 0.0)
    y, h_n, c_n = forward(cell, params, x, num_layers, bidirectional, h0, c0, lengths, trace)
    return y, h_n, c_n, trace


def backward(cell, params, trace, num_layers, bidirectional, dy=None, dh_n=None, dc_n=None):
    """Backpropagation through the stack traced by forward_train.

    dy: dLoss/dy (B, T, D*H) or None; dh_n, dc_n: dLoss/dh_n, dLoss/dc_n (L*D, B, H) or None;
    None stands for zeros. Returns ({name: gradient} of every recurrent parameter, dLoss/dx
    (B, T, I), dLoss/dh0 (L*D, B, H), dLoss/dc0 (L*D, B, H) for the LSTM, else None)."""
    D = 2 if bidirectional else 1
    H = params[param_name("weight_hh", 0, 0)].shape[1]
    dtype = params[param_name("weight_hh", 0, 0)].dtype
    B, T, _ = trace["inputs"][0].shape
    zeros = np.zeros((num_layers * D, B, H), dtype)
    dh_n = zeros if dh_n is None else np.asarray(dh_n, dtype)
    dc_n = zeros if dc_n is None else np.asarray(dc_n, dtype)
    dout = np.zeros((B, T, D * H), dtype) if dy is None else np.asarray(dy, dtype)
    grads, dh0, dc0 = {}, np.empty_like(zeros), np.empty_like(zeros)
    for layer in reversed(range(num_layers)):
        x = trace["inputs"][layer]
        dx = np.zeros(x.shape, dtype)
        for direction in range(D):
            k = layer * D + direction
            g, dx_d, dh0[k], dc_k = layer_backward(
                cell, params, layer, direction, x, trace[(layer, direction)],
                dout[:, :, direction * H:(direction + 1) * H], dh_n[k],
                dc_n[k] if cell == "lstm" else None)
            if dc_k is not None:
                dc0[k] = dc_k
            grads.update(g)
            dx += dx_d
        dout = dx
    ordered = {name: grads[name] for name in params if name in grads}  # the order of params
    return ordered, dout, dh0, (dc0 if cell == "lstm" else None)
