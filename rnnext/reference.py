"""The NumPy reference: the same maths as the C core, written plainly.

It is the ``"numpy"`` backend of :class:`rnnext.Model` and the oracle every compiled result is
compared with. It runs in the dtype of the parameters it is given (float32 or float64).

Parameters are a dict keyed by PyTorch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...)
with PyTorch's shapes and gate orders; see ../shared/DESIGN.md:

- RNN (G=1): ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``
- LSTM (G=4, rows i, f, g, o): ``c' = f*c + i*g``, ``h' = o*tanh(c')``
- GRU (G=3, rows r, z, n): ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``, ``h' = (1-z)*n + z*h``
- ``gru_reset_before``, the other GRU (ONNX linear_before_reset=0, Keras reset_after=False): the
  same but ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``

Letters: B batch, T time, I input, H hidden, G gates, L layers, D directions.
"""
import numpy as np

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}


def sigmoid(x):
    # the tanh form never overflows, unlike 1 / (1 + exp(-x))
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def param_name(kind, layer, direction):
    """PyTorch's name of a recurrent parameter: kind is weight_ih, weight_hh, bias_ih or bias_hh."""
    return f"{kind}_l{layer}" + ("_reverse" if direction == 1 else "")


def param_shapes(cell, input_size, hidden_size, num_layers, bidirectional):
    """{name: shape} of every recurrent parameter, in PyTorch's order."""
    G, H, D = GATES[cell], hidden_size, 2 if bidirectional else 1
    shapes = {}
    for layer in range(num_layers):
        width = input_size if layer == 0 else D * H
        for direction in range(D):
            shapes[param_name("weight_ih", layer, direction)] = (G * H, width)
            shapes[param_name("weight_hh", layer, direction)] = (G * H, H)
            shapes[param_name("bias_ih", layer, direction)] = (G * H,)
            shapes[param_name("bias_hh", layer, direction)] = (G * H,)
    return shapes


def cell_step(cell, gx, h, c, w_hh, b_hh, gates=None):
    """One step of `cell` from the input part gx = W_ih x + b_ih (B, G*H) and the state h (B, H)
    (c too, for the LSTM). Returns (h', c'); c' is None except for the LSTM.

    gates: an optional dict that receives what the backward pass needs: the LSTM's activated
    i, f, g, o; the GRU's r, z, n and hn = W_hn h + b_hn (gru_reset_before: rh = r*h instead)."""
    if cell == "gru_reset_before":
        H = h.shape[1]
        xr, xz, xn = np.split(gx, 3, axis=1)
        r = sigmoid(xr + h @ w_hh[:H].T + b_hh[:H])
        z = sigmoid(xz + h @ w_hh[H:2 * H].T + b_hh[H:2 * H])
        n = np.tanh(xn + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])
        if gates is not None:
            gates.update(r=r, z=z, n=n, rh=r * h)
        return (1.0 - z) * n + z * h, None
    gh = h @ w_hh.T + b_hh
    if cell == "lstm":
        i, f, g, o = np.split(gx + gh, 4, axis=1)
        i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
        c_new = f * c + i * g
        if gates is not None:
            gates.update(i=i, f=f, g=g, o=o)
        return o * np.tanh(c_new), c_new
    if cell == "gru":
        xr, xz, xn = np.split(gx, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        if gates is not None:
            gates.update(r=r, z=z, n=n, hn=hn)
        return (1.0 - z) * n + z * h, None
    a = gx + gh
    return (np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0.0)), None


def layer_forward(cell, params, layer, direction, x, h, c, lengths, trace=None):
    """One layer and direction over x (B, T, I_l). Steps t >= lengths[b] leave the state alone
    and output zeros; the reverse direction therefore starts at each sequence's last valid step.
    Returns (outputs (B, T, H), final h, final c).

    trace: an optional list that receives, for each step in the order taken, a dict with the step
    t, the mask `active` (B, 1), the state before (h, c) and after (h_new, c_new) the cell, and
    the gates (see cell_step): what backward.layer_backward needs."""
    w_ih = params[param_name("weight_ih", layer, direction)]
    w_hh = params[param_name("weight_hh", layer, direction)]
    b_ih = params[param_name("bias_ih", layer, direction)]
    b_hh = params[param_name("bias_hh", layer, direction)]
    B, T, _ = x.shape
    gx_all = x @ w_ih.T + b_ih
    out = np.zeros((B, T, h.shape[1]), dtype=h.dtype)
    for t in (range(T - 1, -1, -1) if direction == 1 else range(T)):
        active = (t < lengths)[:, None]
        gates = None if trace is None else {}
        h_new, c_new = cell_step(cell, gx_all[:, t], h, c, w_hh, b_hh, gates)
        if trace is not None:
            trace.append(dict(t=t, active=active, h=h, c=c, h_new=h_new, c_new=c_new,
                              gates=gates))
        h = np.where(active, h_new, h)
        if c_new is not None:
            c = np.where(active, c_new, c)
        out[:, t] = np.where(active, h_new, 0.0)
    return out, h, c


def forward(cell, params, x, num_layers, bidirectional, h0=None, c0=None, lengths=None,
            trace=None):
    """The stacked recurrent layers over a batch-first x (B, T, I).

    h0, c0: (L*D, B, H) or None for zeros; lengths: (B,) ints in [1, T] or None for all T.
    Returns (y (B, T, D*H), h_n (L*D, B, H), c_n (L*D, B, H) for the LSTM, else None), all in
    the dtype of the parameters.
    trace: an optional dict that receives what the backward pass needs: "inputs", each layer's
    input sequence, and for each (layer, direction) the list of layer_forward's trace.
    """
    dtype = params[param_name("weight_hh", 0, 0)].dtype
    H = params[param_name("weight_hh", 0, 0)].shape[1]
    D = 2 if bidirectional else 1
    B, T, _ = x.shape
    x = np.asarray(x, dtype=dtype)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    h0 = np.zeros((num_layers * D, B, H), dtype) if h0 is None else np.asarray(h0, dtype)
    c0 = np.zeros((num_layers * D, B, H), dtype) if c0 is None else np.asarray(c0, dtype)
    h_n, c_n = np.empty_like(h0), np.empty_like(c0)
    if trace is not None:
        trace["inputs"] = []
    layer_in = x
    for layer in range(num_layers):
        outs = []
        if trace is not None:
            trace["inputs"].append(layer_in)
        for direction in range(D):
            k = layer * D + direction
            steps = None if trace is None else trace.setdefault((layer, direction), [])
            out, h_n[k], c_n[k] = layer_forward(cell, params, layer, direction, layer_in,
                                                h0[k], c0[k], lengths, steps)
            outs.append(out)
        layer_in = np.concatenate(outs, axis=2) if D == 2 else outs[0]
    return layer_in, h_n, (c_n if cell == "lstm" else None)
