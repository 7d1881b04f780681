"""The NumPy reference: the same maths as the C core, written plainly.

It is the ``"numpy"`` backend of :class:`rnnext.Model` and the oracle every compiled result is
compared with. It runs in the dtype of the parameters it is given (float32 or float64).

A model is a resolved layer list (rnnext.layers.Spec); parameters are a dict keyed by the
names of rnnext.layers.param_shapes (PyTorch's for the recurrent layers: ``weight_ih_l0``,
``bias_hh_l1_reverse``, ...; gate rows i, f, g, o and r, z, n). With each layer's activation
functions f, g, h (ONNX order; defaults sigmoid, tanh, tanh) and gate pre-activations clamped
to [-clip, clip] before their function when the layer has a clip (ONNX Runtime's place):

- RNN (G=1): ``h' = f(W_ih x + b_ih + W_hh h + b_hh)``
- LSTM (G=4): ``i = f(.. + P_i c)``, ``f = f(.. + P_f c)`` (or ``1 - i`` with input_forget),
  ``g = g(..)``, ``c' = f*c + i*g``, ``o = f(.. + P_o c')``, ``h' = W_hr (o*h(c'))`` (W_hr only
  with proj_size; P only with peepholes)
- GRU (G=3): ``r, z = f(..)``, ``n = g(W_in x + b_in + r*(W_hn h + b_hn))``,
  ``h' = (1-z)*n + z*h``; ``gru_reset_before`` (reset_after=False): ``n = g(W_in x + b_in +
  W_hn (r*h) + b_hn)``

Masks (Keras semantics; lengths are the mask t < lengths[b]): a masked step leaves the state as
it is and outputs zeros; a reverse direction walks t = T-1 .. 0 over the unmasked steps.

Dropout (training only, PyTorch's inverted dropout): forward_model's `dropout` holds multipliers
(0 or 1/(1-p)) by place: "input" on the first recurrent layer's input (after the embedding),
"layer{k}" on recurrent layer k's input (k >= 1: the layer below's merged outputs, as
nn.LSTM(dropout=p)), "head" on the readout's output, which the dense layers read.

Letters: B batch, T time, I input, H hidden, S state width (P or H), G gates, D directions.
"""
from functools import lru_cache

import numpy as np

from . import layers as L
from .cells import (ACTIVATIONS, CELLS, EMBEDDING_PARAM, RECURRENT_PARAMS, dense_param_name,
                    param_name)
from .cells import sigmoid  # noqa: F401 (model.py and losses.py read it from here)

# ----------------------------------------------------------------------------------------------
# activations


def activate(r, which, a, clip=True):
    """The layer r's activation function `which` (0: f, 1: g, 2: h) on the pre-activation a,
    clamped to [-r.clip, r.clip] first when clip is set and the layer has one."""
    if clip and r.clip:
        a = np.clip(a, -r.clip, r.clip)
    return ACTIVATIONS[r.activations[which]].forward(a, r.activation_alpha[which],
                                                     r.activation_beta[which])


def activate_grad(r, which, a, y, dy, clip=True):
    """dLoss/da of activate(r, which, a) = y from dy = dLoss/dy; the clamp passes gradient
    inside [-clip, clip] (boundaries included, as torch.clamp)."""
    if clip and r.clip:
        dy = np.where(np.abs(a) <= r.clip, dy, 0.0)
        a = np.clip(a, -r.clip, r.clip)
    return dy * ACTIVATIONS[r.activations[which]].derivative(a, y, r.activation_alpha[which],
                                                             r.activation_beta[which])


def dense_activate(name, z):
    """A dense layer's activation: None, relu, tanh, sigmoid (the cells' table) or softmax."""
    if name is None:
        return z
    if name == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return ACTIVATIONS[name].forward(z, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# one step, one direction


def direction_params(r, params, reverse):
    """{kind: array} of layer r's parameters for one direction (kinds of cells.RECURRENT_PARAMS;
    weight_hr and weight_peephole only where the layer has them)."""
    names = L.recurrent_param_shapes(r, reverse)
    return {kind: params[param_name(kind, r.index, reverse)] for kind in RECURRENT_PARAMS
            if param_name(kind, r.index, reverse) in names}


def cell_forward(r, w, gx, h, c, gates=None):
    """One step of layer r from the input part gx = W_ih x + b_ih (B, G*H) and the state h
    (B, S) (c (B, H) too, for the LSTM); w from direction_params. Returns (h', c'); c' is None
    except for the LSTM.

    gates: an optional dict that receives what the backward pass needs: the gates'
    pre-activations (before any clip: a*) and activated values, and per cell hc = h(c'),
    h_full = o*hc (LSTM), hn = W_hn h + b_hn (GRU) or rh = r*h (gru_reset_before)."""
    w_hh, b_hh = w["weight_hh"], w["bias_hh"]
    if r.cell == "lstm":
        ai, af, ag, ao = np.split(gx + h @ w_hh.T + b_hh, 4, axis=1)
        peephole = w.get("weight_peephole")
        if peephole is not None:
            ai, af = ai + peephole[0] * c, af + peephole[1] * c
        i = activate(r, 0, ai)
        f = 1.0 - i if r.input_forget else activate(r, 0, af)
        g = activate(r, 1, ag)
        c_new = f * c + i * g
        if peephole is not None:
            ao = ao + peephole[2] * c_new
        o = activate(r, 0, ao)
        hc = activate(r, 2, c_new, clip=False)
        h_full = o * hc
        if gates is not None:
            gates.update(ai=ai, af=af, ag=ag, ao=ao, i=i, f=f, g=g, o=o, hc=hc, h_full=h_full)
        return (h_full @ w["weight_hr"].T if r.proj_size else h_full), c_new
    if r.layer_type == "gru":
        H = r.units
        xr, xz, xn = np.split(gx, 3, axis=1)
        if r.cell == "gru":
            hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        else:
            hr, hz = np.split(h @ w_hh[:2 * H].T + b_hh[:2 * H], 2, axis=1)
        ar, az = xr + hr, xz + hz
        reset, z = activate(r, 0, ar), activate(r, 0, az)
        if r.cell == "gru":
            an = xn + reset * hn
            saved = dict(hn=hn)
        else:
            rh = reset * h
            an = xn + rh @ w_hh[2 * H:].T + b_hh[2 * H:]
            saved = dict(rh=rh)
        n = activate(r, 1, an)
        if gates is not None:
            gates.update(ar=ar, az=az, an=an, r=reset, z=z, n=n, **saved)
        return (1.0 - z) * n + z * h, None
    a = gx + h @ w_hh.T + b_hh
    if gates is not None:
        gates.update(a=a)
    return activate(r, 0, a), None


def direction_forward(r, w, x, h, c, mask, reverse, trace=None):
    """One layer and direction over x (B, T, I): masked steps (mask (B, T) False) leave the state
    alone and output zeros; reverse walks t = T-1 .. 0. Returns (outputs (B, T, S), final h,
    final c).

    trace: an optional list that receives, for each step in the order taken, a dict with the
    step t, the mask `active` (B, 1), the state before (h, c) and after (h_new, c_new) the cell,
    and the gates (see cell_forward)."""
    B, T, _ = x.shape
    gx_all = x @ w["weight_ih"].T + w["bias_ih"]
    out = np.zeros((B, T, h.shape[1]), dtype=h.dtype)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        active = mask[:, t, None]
        gates = None if trace is None else {}
        h_new, c_new = cell_forward(r, w, gx_all[:, t], h, c, gates)
        if trace is not None:
            trace.append(dict(t=t, active=active, h=h, c=c, h_new=h_new, c_new=c_new,
                              gates=gates))
        h = np.where(active, h_new, h)
        if c_new is not None:
            c = np.where(active, c_new, c)
        out[:, t] = np.where(active, h_new, 0.0)
    return out, h, c


def merge(mode, parts):
    """A layer's directions merged: concat (on the last axis), sum, mul or ave."""
    if len(parts) == 1:
        return parts[0]
    first, second = parts
    if mode == "concat":
        return np.concatenate(parts, axis=-1)
    if mode == "sum":
        return first + second
    if mode == "mul":
        return first * second
    return 0.5 * (first + second)


# ----------------------------------------------------------------------------------------------
# the model


def dropped(dropout, place, x):
    """x times the dropout multiplier at `place` ("input", "layer{k}", "head"), or x where there
    is none. Its gradient is the same product, so backward.py applies it too."""
    if dropout is None or place not in dropout:
        return x
    return x * dropout[place]


def model_inputs(spec, params, x, lengths=None, mask=None):
    """(x (B, T, I) in the parameters' dtype, the valid-step mask (B, T) bool, ids or None).
    x: float (B, T, I), or int ids (B, T) for a model with an embedding. The valid steps are
    those that lengths or mask, mask_zero and a Masking layer all leave valid."""
    if lengths is not None and mask is not None:
        raise ValueError("mask: give lengths or mask, not both")
    ids = None
    if spec.embedding is not None:
        ids = np.asarray(x)
        V = spec.embedding.vocab_size
        if ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise ValueError(f"x: expected int ids (B, T) for a model with an embedding, got "
                             f"dtype {ids.dtype} shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"x: expected ids in [0, {V}), got min {ids.min()} max {ids.max()}")
        x = params[EMBEDDING_PARAM][ids]
    else:
        x = np.asarray(x, dtype=params[next(iter(L.param_shapes(spec)))].dtype)
    B, T = x.shape[:2]
    valid = np.ones((B, T), bool)
    if lengths is not None:
        valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    if mask is not None:
        valid = np.asarray(mask, bool)
        if valid.shape != (B, T):
            raise ValueError(f"mask: expected shape {(B, T)}, got {valid.shape}")
    if spec.embedding is not None and spec.embedding.mask_zero:
        valid = valid & (ids != 0)
    if spec.masking is not None:
        valid = valid & unmasked_steps(x, spec.masking.mask_value)
    return x, valid, ids


def unmasked_steps(x, mask_value):
    """Keras's Masking: (B, T) whether any feature of a step of x (B, T, I) differs from
    mask_value, compared in float32 as the compiled core compares (NaN differs)."""
    return np.any(np.asarray(x, np.float32) != np.float32(mask_value), axis=-1)


def last_valid(mask):
    """(index of each row's last True step (0 where none), whether it has one)."""
    T = mask.shape[1]
    return T - 1 - np.argmax(mask[:, ::-1], axis=1), mask.any(axis=1)


def readout(mode, merge_mode, seq, final_h, mask):
    """The readout of the top layer's output seq (B, T, F) (zeros at masked steps) and final h
    (D, B, S): sequence, last, final, mean or max (over valid steps; zeros where a sequence has
    none, except final: the initial state)."""
    if mode == "sequence":
        return seq
    if mode == "final":
        return merge(merge_mode, list(final_h))
    B = seq.shape[0]
    any_valid = mask.any(axis=1)[:, None]
    if mode == "last":
        last, _ = last_valid(mask)
        return np.where(any_valid, seq[np.arange(B), last], 0.0)
    if mode == "mean":
        return seq.sum(axis=1) / np.maximum(mask.sum(axis=1), 1).astype(seq.dtype)[:, None]
    return np.where(any_valid, np.where(mask[:, :, None], seq, -np.inf).max(axis=1), 0.0)


def initial_states(spec, state, B, dtype):
    """[(h (D, B, S), c (D, B, H) or None)] per recurrent layer: state's arrays in dtype, or
    zeros where state is None."""
    out = []
    for k, r in enumerate(spec.recurrent):
        D = r.num_directions
        if state is None:
            h = np.zeros((D, B, r.state_size), dtype)
            c = np.zeros((D, B, r.units), dtype) if r.cell == "lstm" else None
        else:
            h, c = state[k]
            h = np.asarray(h, dtype)
            c = np.asarray(c, dtype) if r.cell == "lstm" else None
        out.append((h, c))
    return out


def forward_model(spec, params, x, state=None, lengths=None, mask=None, trace=None,
                  dropout=None):
    """The whole layer list over x: float (B, T, I), or int ids (B, T) with an embedding.

    state: None for zeros, or [(h (D, B, S), c (D, B, H) or None)] per recurrent layer.
    lengths (B,) or mask (B, T) bool (not both): the valid steps. Returns (y, states): y the
    model's output ((B, T, F) with readout "sequence", zero at invalid steps; else (B, F)),
    states the final states, as state.
    trace: an optional dict that receives what backward.backward_model needs. dropout: None, or
    the training pass's multipliers (see the module's notes), in the parameters' dtype."""
    x, valid, ids = model_inputs(spec, params, x, lengths, mask)
    x = dropped(dropout, "input", x)
    B = x.shape[0]
    states0 = initial_states(spec, state, B, x.dtype)
    if trace is not None:
        trace.update(ids=ids, mask=valid, inputs=[], outputs=[], steps={})
    layer_in, states = x, []
    for r, (h0, c0) in zip(spec.recurrent, states0):
        outs, hs, cs = [], [], []
        if r.index > 0:
            layer_in = dropped(dropout, f"layer{r.index}", layer_in)
        if trace is not None:
            trace["inputs"].append(layer_in)
        for d, reverse in enumerate(r.reverse_flags):
            steps = None if trace is None else trace["steps"].setdefault((r.index, d), [])
            out, h, c = direction_forward(r, direction_params(r, params, reverse), layer_in,
                                          h0[d], None if c0 is None else c0[d], valid, reverse,
                                          steps)
            outs.append(out)
            hs.append(h)
            cs.append(c)
        states.append((np.stack(hs), None if c0 is None else np.stack(cs)))
        if trace is not None:
            trace["outputs"].append(outs)
        layer_in = merge(r.merge, outs)
    y = head_forward(spec, params, layer_in, states[-1][0], valid, trace, dropout)
    return y, states


def head_forward(spec, params, top, final_h, valid, trace=None, dropout=None):
    """The readout and the dense layers over the top recurrent layer's output sequence top
    (B, T, F) and final h (D, B, S); valid: the (B, T) mask of valid steps. trace: an optional
    dict that receives what backward.head_backward needs; dropout: as forward_model's, its
    "head" multiplier applied to the readout's output."""
    y = dropped(dropout, "head", readout(spec.readout, spec.recurrent[-1].merge, top, final_h,
                                         valid))
    if trace is not None:
        trace.update(top=top, final_h=final_h, dense=[], dropout=dropout)
    for d in spec.dense:
        z_in = y
        z = z_in @ params[dense_param_name("weight", d.index)].T + \
            params[dense_param_name("bias", d.index)]
        y = dense_activate(d.activation, z)
        if trace is not None:
            trace["dense"].append((z_in, z, y))
    if spec.dense and spec.readout == "sequence":
        y = np.where(valid[:, :, None], y, 0.0)
    if trace is not None:
        trace.update(y=y)
    return y


# ----------------------------------------------------------------------------------------------
# today's stacked API: one cell kind, one size, (L*D, B, H) states


@lru_cache(maxsize=64)
def stack_spec(cell, input_size, hidden_size, num_layers, bidirectional):
    """The Spec of a uniform stack of the core's `cell` (rnn_tanh, rnn_relu, lstm, gru or
    gru_reset_before), no readout and no dense layer."""
    c = CELLS[cell]
    layers, I = L.shorthand(c.layer_type, input_size, hidden_size, num_layers, bidirectional,
                            nonlinearity=c.activations[0] if c.layer_type == "rnn" else "tanh",
                            linear_before_reset=cell != "gru_reset_before", output="many_to_many")
    return L.build(layers, I)


def param_shapes(cell, input_size, hidden_size, num_layers, bidirectional):
    """{name: shape} of every recurrent parameter of a uniform stack, in PyTorch's order."""
    return L.param_shapes(stack_spec(cell, int(input_size), int(hidden_size), int(num_layers),
                                     bool(bidirectional)))


def split_states(spec, h0, c0, B, dtype):
    """Stacked (L*D, B, H) states h0, c0 (None: zeros) as forward_model's per-layer list, or
    None when both are None."""
    if h0 is None and c0 is None:
        return None
    zeros = np.zeros((sum(r.num_directions for r in spec.recurrent), B, spec.recurrent[0].units),
                     dtype)
    h0, c0 = (zeros if h0 is None else h0), (zeros if c0 is None else c0)
    out, k = [], 0
    for r in spec.recurrent:
        out.append((h0[k:k + r.num_directions], c0[k:k + r.num_directions]))
        k += r.num_directions
    return out


def legacy_spec(cell, params, x, num_layers, bidirectional):
    """(the stack's Spec, the parameters' dtype) for today's forward arguments."""
    w_hh = params[param_name("weight_hh", 0, 0)]
    return stack_spec(cell, int(np.shape(x)[-1]), int(w_hh.shape[1]), int(num_layers),
                      bool(bidirectional)), w_hh.dtype


def cell_step(cell, gx, h, c, w_hh, b_hh, gates=None):
    """One step of a default `cell` (the core's names) from gx = W_ih x + b_ih (B, G*H) and the
    state h (B, H) (c too, for the LSTM). Returns (h', c'); c' is None except for the LSTM."""
    r = stack_spec(cell, 1, int(w_hh.shape[1]), 1, False).recurrent[0]
    return cell_forward(r, {"weight_hh": w_hh, "bias_hh": b_hh}, gx, h, c, gates)


def forward(cell, params, x, num_layers, bidirectional, h0=None, c0=None, lengths=None,
            trace=None):
    """A uniform stack of `cell` over a batch-first x (B, T, I).

    h0, c0: (L*D, B, H) or None for zeros; lengths: (B,) ints in [1, T] or None for all T.
    Returns (y (B, T, D*H), h_n (L*D, B, H), c_n (L*D, B, H) for the LSTM, else None), all in
    the dtype of the parameters. trace: as forward_model's."""
    spec, dtype = legacy_spec(cell, params, x, num_layers, bidirectional)
    states = split_states(spec, h0, c0, np.shape(x)[0], dtype)
    y, states = forward_model(spec, params, np.asarray(x, dtype), states, lengths, trace=trace)
    h_n = np.concatenate([h for h, _ in states])
    return y, h_n, (np.concatenate([c for _, c in states]) if cell == "lstm" else None)


# ----------------------------------------------------------------------------------------------
# precision: the weights a model runs on at a reduced precision

# the recurrent weights a reduced precision stores at that precision (every other parameter and
# all the maths stay in the parameters' dtype)
ROUNDED_PARAMS = ("weight_ih", "weight_hh", "weight_hr")


def bf16_round(a):
    """float32 values of `a` rounded to bfloat16 (nearest, ties to even; NaN stays NaN, +-inf
    stay infinite; finite values past bfloat16's largest become inf), as float32."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
    return np.where(nan, bits | 0x00400000, rounded).astype(np.uint32).view(np.float32)


def at_precision(spec, params, precision):
    """params as the compiled core at `precision` ("fp32", "bf16" or "int8") holds them: for bf16
    the recurrent layers' ROUNDED_PARAMS as Bf16Weight; for int8 their weight_ih and weight_hh as
    Int8Weight; the rest as given. fp32 returns params itself."""
    if precision == "fp32":
        return params
    names = rounded_param_names(spec)
    if precision == "int8":
        return {k: Int8Weight(v) if k in names else v for k, v in params.items()}
    return {k: Bf16Weight(v) if k in names else v for k, v in params.items()}


def _rint(a):
    """Round to nearest, ties to even, as float32."""
    return np.rint(a).astype(np.float32)


def quantize_weight(w):
    """(q, scale) of a weight (rows, K), each row quantized symmetrically to int8 as rnnext.h
    says for RNX_PRECISION_INT8: scale = max|w| / 127 (1 for a zero row, NaN for a row with a
    non-finite value, whose q is 0) and q = round(w / scale) in [-127, 127], as float32."""
    w = np.asarray(w, np.float32)
    finite = np.isfinite(w).all(axis=1)
    top = np.abs(np.where(finite[:, None], w, 0)).max(axis=1, initial=0)
    scale = np.where(finite, np.where(top > 0, top / np.float32(127), 1), np.nan)
    scale = scale.astype(np.float32)
    with np.errstate(invalid="ignore"):
        q = np.clip(_rint(w / scale[:, None]), -127, 127)
    return np.where(finite[:, None], q, 0).astype(np.float32), scale


def quantize_input(a):
    """(q, scale, zero) of rows a (N, K), each quantized to uint8 as ONNX's DynamicQuantizeLinear
    quantizes a tensor (rnnext.h's RNX_PRECISION_INT8): scale = (max(0, max a) - min(0, min a)) /
    255 (1 when that is 0; NaN, with q and zero 0, for a row with a non-finite value), zero =
    round(-min(0, min a) / scale), q = clamp(round(a / scale) + zero, 0, 255), as float32."""
    a = np.asarray(a, np.float32)
    finite = np.isfinite(a).all(axis=1)
    safe = np.where(finite[:, None], a, 0)
    low = np.minimum(safe.min(axis=1, initial=0), 0)
    high = np.maximum(safe.max(axis=1, initial=0), 0)
    scale = ((high - low) / np.float32(255)).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale)
    zero = np.minimum(_rint(-low / scale), 255)
    q = np.clip(_rint(safe / scale[:, None]) + zero[:, None], 0, 255)
    return (np.where(finite[:, None], q, 0).astype(np.float32),
            np.where(finite, scale, np.nan).astype(np.float32), np.where(finite, zero, 0))


class Int8Weight:
    """A recurrent weight (G*H, K) at int8: `a @ weight.T` is the int8 product of rnnext.h's
    RNX_PRECISION_INT8 (each row of a quantized by quantize_input, the weight by quantize_weight,
    the integer sums exact), so the reference's maths reads it as it reads a float weight."""

    __array_ufunc__ = None  # NumPy then hands `a @ weight.T` to _Transposed.__rmatmul__

    def __init__(self, w):
        self.q, self.scale = quantize_weight(w)
        self.sums = self.q.sum(axis=1, dtype=np.float64)
        self.dtype = np.asarray(w).dtype  # the float weight's: the dtype the maths runs in

    @property
    def T(self):
        return _Transposed(self)

    def product(self, a):
        """a (..., K) times the weight's transpose: (..., G*H) in a's dtype."""
        a = np.asarray(a)
        qa, scale, zero = quantize_input(a.reshape(-1, a.shape[-1]))
        # float64 sums of these integers are exact (below 2^53), as the core's int32 sums
        exact = qa.astype(np.float64) @ self.q.T.astype(np.float64) - \
            zero.astype(np.float64)[:, None] * self.sums[None, :]
        out = exact.astype(np.float32) * (scale[:, None] * self.scale[None, :])
        return out.reshape(*a.shape[:-1], -1).astype(a.dtype, copy=False)


class Bf16Weight:
    """A recurrent weight at bf16: `a @ weight.T` is the product of rnnext.h's RNX_PRECISION_BF16
    (the weight rounded by bf16_round, each row of a rounded the same way when it is used, the
    products summed in the params' dtype, in NumPy's order rather than the kernels' pairs), and
    weight[rows] the rows' weight, so the reference's maths reads it as a float weight."""

    __array_ufunc__ = None  # NumPy then hands `a @ weight.T` to _Transposed.__rmatmul__

    def __init__(self, w):
        self.dtype = np.asarray(w).dtype
        self.w = bf16_round(w).astype(self.dtype)

    @property
    def T(self):
        return _Transposed(self)

    def __getitem__(self, rows):
        return Bf16Weight(self.w[rows])  # bf16_round leaves bfloat16 values as they are

    def product(self, a):
        """a (..., K) times the weight's transpose: (..., G*H) in a's dtype."""
        a = np.asarray(a)
        return (bf16_round(a).astype(a.dtype) @ self.w.T).astype(a.dtype, copy=False)


class _Transposed:
    __array_ufunc__ = None

    def __init__(self, weight):
        self.weight = weight

    def __rmatmul__(self, a):
        return self.weight.product(a)


def rounded_param_names(spec):
    """The names of the parameters a reduced precision rounds (those of ROUNDED_PARAMS that
    each recurrent layer and direction has)."""
    return {param_name(kind, r.index, reverse) for r in spec.recurrent
            for reverse in r.reverse_flags for kind in ROUNDED_PARAMS} & \
        L.param_shapes(spec).keys()
