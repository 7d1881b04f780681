"""The NumPy reference of backpropagation through time for a whole layer list: plain, in the
dtype of the parameters (float32 or float64), the oracle the compiled backward pass is compared
with.

It walks back over the trace that reference.forward_model records (the states before and after
each step, the gates' pre-activations and values). Names and maths follow reference.py:

- RNN: ``h' = f(a)``, ``da = dh' f'(a)``
- LSTM: ``c' = f*c + i*g``, ``h' = W_hr (o*h(c'))``: ``dh_full = dh' W_hr``, ``do = dh_full
  h(c')``, ``dc' += dh_full o h'(c') + P_o dao``, then ``di = dc' g``, ``df = dc' c``,
  ``dg = dc' i``, ``dc = dc' f + P_i dai + P_f daf``; with input_forget (f = 1 - i) df flows
  into di and the f rows get no gradient.
- GRU: ``n = g(xn + r*hn)``, ``h' = (1-z)*n + z*h``; the n gate's input and recurrent parts
  differ by the factor r, so the gradients of the gates' input side (dgx) and recurrent side
  (dgh) are kept apart. gru_reset_before: ``n = g(xn + W_hn (r*h) + b_hn)``; the n rows of
  W_hh see r*h instead of h.
- A clip passes gradient only where the pre-activation lies in [-clip, clip].

Masked steps leave the state alone: their gradient passes through unchanged and their (zero)
outputs receive none. The embedding's gradient is the scatter-add of its outputs' gradient by
id, zero for padding_idx's row.
"""
import numpy as np

from . import layers as L
from .cells import ACTIVATIONS, EMBEDDING_PARAM, dense_param_name, param_name
from .reference import (activate_grad, direction_params, dropped, forward_model, last_valid,
                        legacy_spec, model_inputs, split_states)


# ----------------------------------------------------------------------------------------------
# one step, one direction


def cell_backward(r, w, step, dh, dc):
    """The gradients of one step of layer r from dh = dLoss/dh' (and dc = dLoss/dc' for the
    LSTM). step: one entry of direction_forward's trace; w: direction_params.

    Returns (dgx, dgh, dw_hh, dh_prev, dc_prev, extra): the gradients of the gates'
    pre-activations on the input side (B, G*H) and the recurrent side (B, G*H) (dgh is also the
    bias_hh gradient), of W_hh, of the state before the step (dc_prev None except for the
    LSTM), and {kind: gradient} of weight_hr and weight_peephole where the layer has them."""
    gates, h, w_hh = step["gates"], step["h"], w["weight_hh"]
    if r.cell == "lstm":
        i, f, g, o, hc = gates["i"], gates["f"], gates["g"], gates["o"], gates["hc"]
        c, c_new = step["c"], step["c_new"]
        extra = {}
        if r.proj_size:
            extra["weight_hr"] = dh.T @ gates["h_full"]
            dh = dh @ w["weight_hr"]
        dao = activate_grad(r, 0, gates["ao"], o, dh * hc)
        dc = dc + activate_grad(r, 2, c_new, hc, dh * o, clip=False)
        peephole = w.get("weight_peephole")
        if peephole is not None:
            dc = dc + dao * peephole[2]
        di, df = dc * g, dc * c
        if r.input_forget:
            di, daf = di - df, np.zeros_like(df)
        else:
            daf = activate_grad(r, 0, gates["af"], f, df)
        dai = activate_grad(r, 0, gates["ai"], i, di)
        dag = activate_grad(r, 1, gates["ag"], g, dc * i)
        dc_prev = dc * f
        if peephole is not None:
            dc_prev = dc_prev + dai * peephole[0] + daf * peephole[1]
            extra["weight_peephole"] = np.stack([(dai * c).sum(axis=0), (daf * c).sum(axis=0),
                                                 (dao * c_new).sum(axis=0)])
        da = np.concatenate([dai, daf, dag, dao], axis=1)
        return da, da, da.T @ h, da @ w_hh, dc_prev, extra
    if r.layer_type == "gru":
        reset, z, n = gates["r"], gates["z"], gates["n"]
        H = r.units
        dan = activate_grad(r, 1, gates["an"], n, dh * (1.0 - z))
        daz = activate_grad(r, 0, gates["az"], z, dh * (h - n))
        if r.cell == "gru":
            dar = activate_grad(r, 0, gates["ar"], reset, dan * gates["hn"])
            dgh = np.concatenate([dar, daz, dan * reset], axis=1)
            return (np.concatenate([dar, daz, dan], axis=1), dgh, dgh.T @ h,
                    dh * z + dgh @ w_hh, None, {})
        drh = dan @ w_hh[2 * H:]  # dLoss/d(r*h)
        dar = activate_grad(r, 0, gates["ar"], reset, drh * h)
        drz = np.concatenate([dar, daz], axis=1)
        dgh = np.concatenate([drz, dan], axis=1)
        dw_hh = np.concatenate([drz.T @ h, dan.T @ gates["rh"]], axis=0)
        return dgh, dgh, dw_hh, dh * z + drh * reset + drz @ w_hh[:2 * H], None, {}
    da = activate_grad(r, 0, gates["a"], step["h_new"], dh)
    return da, da, da.T @ h, da @ w_hh, None, {}


def direction_backward(r, w, x, steps, dout, dh, dc):
    """One layer and direction, back over its trace `steps` (see reference.direction_forward).

    x: the layer's input (B, T, I); dout: dLoss/d(outputs) (B, T, S); dh, dc: the gradients of
    its final state (B, S), (B, H) (dc None except for the LSTM). Returns ({kind: gradient} of
    its parameters (the keys of w), dLoss/dx (B, T, I), dLoss/dh0, dLoss/dc0)."""
    grads = {kind: np.zeros_like(value) for kind, value in w.items()}
    dx = np.zeros(x.shape, dtype=dh.dtype)
    for step in reversed(steps):
        t, active = step["t"], step["active"]
        dh_total = dh + np.where(active, dout[:, t], 0.0)
        # inactive rows: zero gradients in, so their gates contribute nothing
        dgx, dgh, dw_hh, dh_prev, dc_prev, extra = cell_backward(
            r, w, step, np.where(active, dh_total, 0.0),
            None if dc is None else np.where(active, dc, 0.0))
        grads["weight_ih"] += dgx.T @ x[:, t]
        grads["weight_hh"] += dw_hh
        grads["bias_ih"] += dgx.sum(axis=0)
        grads["bias_hh"] += dgh.sum(axis=0)
        for kind, value in extra.items():
            grads[kind] += value
        dx[:, t] = dgx @ w["weight_ih"]
        dh = np.where(active, dh_prev, dh)
        if dc_prev is not None:
            dc = np.where(active, dc_prev, dc)
    return grads, dx, dh, dc


# ----------------------------------------------------------------------------------------------
# merges, readouts, dense layers


def merge_grad(mode, dy, parts):
    """The gradients of reference.merge(mode, parts) for each part, from dy."""
    if len(parts) == 1:
        return [dy]
    if mode == "concat":
        return np.split(dy, 2, axis=-1)
    if mode == "sum":
        return [dy, dy]
    if mode == "mul":
        return [dy * parts[1], dy * parts[0]]
    return [0.5 * dy, 0.5 * dy]


def readout_grad(mode, seq, mask, dy):
    """dLoss/d(top sequence) (B, T, F) of reference.readout from dy (mode "final" reads the
    states instead: zeros here)."""
    if mode == "sequence":
        return dy
    dseq = np.zeros_like(seq)
    B = seq.shape[0]
    if mode == "last":
        last, any_valid = last_valid(mask)
        dseq[np.arange(B), last] = np.where(any_valid[:, None], dy, 0.0)
    elif mode == "mean":
        count = np.maximum(mask.sum(axis=1), 1).astype(seq.dtype)
        dseq = dy[:, None, :] * mask[:, :, None] / count[:, None, None]
    elif mode == "max":
        where = np.argmax(np.where(mask[:, :, None], seq, -np.inf), axis=1)  # (B, F)
        rows, cols = np.meshgrid(np.arange(B), np.arange(seq.shape[2]), indexing="ij")
        dseq[rows, where, cols] = np.where(mask.any(axis=1)[:, None], dy, 0.0)
    return dseq


def dense_activate_grad(name, z, y, dy):
    """dLoss/dz of y = reference.dense_activate(name, z) from dy."""
    if name is None:
        return dy
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    return dy * ACTIVATIONS[name].derivative(z, y, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# the model


def forward_train_model(spec, params, x, state=None, lengths=None, mask=None, dropout=None):
    """reference.forward_model that also returns the trace backward_model needs:
    (y, states, trace). Float inputs at invalid steps are traced as zeros: those steps are
    inactive, so they reach no gradient (not even as NaN). dropout: as forward_model's."""
    if spec.embedding is None:  # the valid steps as a mask: a Masking layer would read the zeros
        _, valid, _ = model_inputs(spec, params, x, lengths, mask)
        x, lengths, mask = np.where(valid[:, :, None], x, 0.0), None, valid
    trace = {}
    y, states = forward_model(spec, params, x, state, lengths, mask, trace, dropout)
    trace.update(states=states)
    return y, states, trace


def head_backward(spec, params, trace, dy_out):
    """Back through reference.head_forward (its trace): ({name: gradient} of the dense layers,
    dLoss/d(top sequence) (B, T, F), dLoss/d(top layer's final h) (D, B, S) or None when the
    readout does not read it). dy_out: dLoss/d(the model's output), or None for zeros."""
    mask, top = trace["mask"], trace["top"]
    dy = np.zeros_like(trace["y"]) if dy_out is None else np.asarray(dy_out, top.dtype)
    if spec.dense and spec.readout == "sequence":
        dy = np.where(mask[:, :, None], dy, 0.0)
    grads = {}
    for d, (z_in, z, z_out) in zip(reversed(spec.dense), reversed(trace["dense"])):
        weight = dense_param_name("weight", d.index)
        dz = dense_activate_grad(d.activation, z, z_out, dy)
        flat_dz, flat_in = dz.reshape(-1, d.units), z_in.reshape(-1, d.input_size)
        grads[weight] = flat_dz.T @ flat_in
        grads[dense_param_name("bias", d.index)] = flat_dz.sum(axis=0)
        dy = dz @ params[weight]
    dy = dropped(trace["dropout"], "head", dy)
    if spec.readout == "final":
        return grads, np.zeros_like(top), np.stack(
            merge_grad(spec.recurrent[-1].merge, dy, list(trace["final_h"])))
    return grads, readout_grad(spec.readout, top, mask, dy), None


def embedding_backward(spec, ids, dx):
    """dLoss/d(embedding.weight) from dx = dLoss/d(looked-up vectors) (B, T, E): rows summed by
    id, the padding row's held at zero."""
    grad = np.zeros((spec.embedding.vocab_size, spec.embedding.dim), dx.dtype)
    np.add.at(grad, ids, dx)
    if spec.embedding.padding_idx is not None:
        grad[spec.embedding.padding_idx] = 0.0
    return grad


def backward_model(spec, params, trace, dy_out, dstates=None):
    """Backpropagation through the list traced by forward_train_model.

    dy_out: dLoss/d(the model's output) or None for zeros; dstates: None, or
    [(dh (D, B, S), dc (D, B, H) or None)] per recurrent layer: the gradients of the final
    states. Returns ({name: gradient} of every parameter in param_shapes order, dLoss/dx
    (B, T, I) (None for ids), [(dh0, dc0 or None)] per recurrent layer)."""
    states = trace["states"]
    dtype = trace["top"].dtype
    grads, dseq, dfinal_top = head_backward(spec, params, trace, dy_out)
    dfinal = []
    for r, (h, c) in zip(spec.recurrent, states):
        dh, dc = (None, None) if dstates is None else dstates[r.index]
        dfinal.append((np.zeros_like(h) if dh is None else np.asarray(dh, dtype),
                       None if c is None else
                       np.zeros_like(c) if dc is None else np.asarray(dc, dtype)))
    if dfinal_top is not None:
        dfinal[-1] = (dfinal[-1][0] + dfinal_top, dfinal[-1][1])
    dstates0 = [None] * len(spec.recurrent)
    for r in reversed(spec.recurrent):
        x = trace["inputs"][r.index]
        dparts = merge_grad(r.merge, dseq, trace["outputs"][r.index])
        dh_n, dc_n = dfinal[r.index]
        dx, dh0, dc0 = np.zeros(x.shape, dtype), [], []
        for d, reverse in enumerate(r.reverse_flags):
            w = direction_params(r, params, reverse)
            g, dx_d, dh, dc = direction_backward(r, w, x, trace["steps"][(r.index, d)],
                                                 dparts[d], dh_n[d],
                                                 None if dc_n is None else dc_n[d])
            grads.update({param_name(kind, r.index, reverse): value for kind, value in g.items()})
            dx += dx_d
            dh0.append(dh)
            dc0.append(dc)
        dstates0[r.index] = (np.stack(dh0), None if dc_n is None else np.stack(dc0))
        dseq = dropped(trace["dropout"], f"layer{r.index}" if r.index else "input", dx)
    dx = dseq
    if spec.embedding is not None:
        grads[EMBEDDING_PARAM] = embedding_backward(spec, trace["ids"], dx)
        dx = None
    return {name: grads[name] for name in L.param_shapes(spec)}, dx, dstates0


# ----------------------------------------------------------------------------------------------
# today's stacked API: one cell kind, one size, (L*D, B, H) states


def forward_train(cell, params, x, num_layers, bidirectional, h0=None, c0=None, lengths=None):
    """reference.forward that also returns the trace backward needs: (y, h_n, c_n, trace)."""
    spec, dtype = legacy_spec(cell, params, x, num_layers, bidirectional)
    states = split_states(spec, h0, c0, np.shape(x)[0], dtype)
    y, states, trace = forward_train_model(spec, params, np.asarray(x, dtype), states, lengths)
    trace["spec"] = spec
    h_n = np.concatenate([h for h, _ in states])
    return y, h_n, (np.concatenate([c for _, c in states]) if cell == "lstm" else None), trace


def backward(cell, params, trace, num_layers, bidirectional, dy=None, dh_n=None, dc_n=None):
    """Backpropagation through the stack traced by forward_train.

    dy: dLoss/dy (B, T, D*H) or None; dh_n, dc_n: dLoss/dh_n, dLoss/dc_n (L*D, B, H) or None;
    None stands for zeros. Returns ({name: gradient} of every recurrent parameter, dLoss/dx
    (B, T, I), dLoss/dh0 (L*D, B, H), dLoss/dc0 (L*D, B, H) for the LSTM, else None)."""
    spec = trace["spec"]
    dstates = split_states(spec, dh_n, dc_n, trace["top"].shape[0], trace["top"].dtype)
    grads, dx, dstates0 = backward_model(spec, params, trace, dy, dstates)
    dh0 = np.concatenate([h for h, _ in dstates0])
    dc0 = np.concatenate([c for _, c in dstates0]) if cell == "lstm" else None
    return {name: grads[name] for name in params if name in grads}, dx, dh0, dc0
