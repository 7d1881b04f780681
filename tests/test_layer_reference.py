"""The layer list's NumPy reference (rnnext.reference.forward_model) against outside sources:
PyTorch (embedding, proj_size, stacks of different cells and sizes, bidirectional, readouts,
Linear/activation chains), ONNX Runtime on hand-built LSTM/GRU/RNN nodes (every attribute),
and Keras 3 for masks (pre-padded sequences, Bidirectional merges, Embedding mask_zero). Also
the resolved spec and the file's metadata against PyTorch's parameter shapes and the contract.
"""
import os

import numpy as np
import pytest

from rnnext import layers as L
from rnnext.cells import (ACTIVATIONS, CELLS, FROM_KERAS_ACTIVATION, PEEPHOLE_FROM_ONNX,
                          activation_from_keras, activations_from_onnx, onnx_alpha_beta,
                          permute_gates)
from rnnext.reference import forward_model

from conftest import F32_ATOL, F32_RTOL

B, T, I = 4, 6, 3


def lengths_mixed():
    return np.array([T, 1, 4, 3])


# ----------------------------------------------------------------------------------------------
# PyTorch


def torch_params(modules, dense=()):
    """{our name: tensor}: module k's `_l0` parameters as recurrent layer k's (one-layer
    modules), then dense{j}.weight/bias of the Linear layers."""
    params = {}
    for k, module in enumerate(modules):
        params.update({n.replace("_l0", f"_l{k}"): p for n, p in module.named_parameters()})
    for j, fc in enumerate(dense):
        params.update({f"dense{j}.{n}": p for n, p in fc.named_parameters()})
    return params


def run_torch_stack(torch, modules, seq, lengths, states=None):
    """The modules one after another on batch-first seq, packed by lengths. Returns (output
    sequence, [module's final state])."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    finals = []
    for k, module in enumerate(modules):
        packed = pack_padded_sequence(seq, torch.as_tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, state = module(packed, None if states is None else states[k])
        seq, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        finals.append(state)
    return seq, finals


def numpy_of(params, dtype):
    return {n: p.detach().numpy().astype(dtype) for n, p in params.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("readout", L.READOUTS)
def test_embedding_projected_lstm_gru_readout_dense_match_torch(readout, dtype, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    V, E, H, P, G = 11, 5, 6, 4, 3
    emb = torch.nn.Embedding(V, E, padding_idx=3).double()
    lstm = torch.nn.LSTM(E, H, proj_size=P, bidirectional=True, batch_first=True).double()
    gru = torch.nn.GRU(2 * P, G, bidirectional=True, batch_first=True).double()
    fc1, fc2 = torch.nn.Linear(2 * G, 7).double(), torch.nn.Linear(7, 2).double()
    layers = [L.Embedding(V, E, padding_idx=3), L.LSTM(H, proj_size=P, direction="bidirectional"),
              L.GRU(G, direction="bidirectional")]
    layers += [] if readout == "sequence" else [L.Readout(readout)]
    spec = L.build(layers + [L.Dense(7, "relu"), L.Dense(2, "softmax")])
    params = torch_params((lstm, gru), (fc1, fc2))
    params["embedding.weight"] = emb.weight
    assert {n: tuple(p.shape) for n, p in params.items()} == L.param_shapes(spec)
    ids = rng.integers(0, V, size=(B, T))
    ids[1, 0] = 3
    lengths = lengths_mixed()
    with torch.no_grad():
        seq, (lstm_state, h_n) = run_torch_stack(torch, (lstm, gru), emb(torch.as_tensor(ids)),
                                                 lengths)
        valid = torch.as_tensor(np.arange(T)[None, :] < lengths[:, None])
        features = {
            "sequence": seq,
            "last": seq[torch.arange(B), torch.as_tensor(lengths - 1)],
            "final": torch.cat([h_n[-2], h_n[-1]], dim=1),
            "mean": seq.sum(dim=1) / torch.as_tensor(lengths)[:, None],
            "max": torch.where(valid[:, :, None], seq, -torch.inf).max(dim=1).values,
        }[readout]
        want = torch.softmax(fc2(torch.relu(fc1(features))), dim=-1).numpy()
    if readout == "sequence":
        want = np.where(valid.numpy()[:, :, None], want, 0.0)
    y, states = forward_model(spec, numpy_of(params, dtype), ids, lengths=lengths)
    assert y.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else \
        dict(rtol=F32_RTOL, atol=F32_ATOL)
    np.testing.assert_allclose(y, want, **tol)
    for got, ref in zip((states[0][0], states[0][1], states[1][0]),
                        (lstm_state[0], lstm_state[1], h_n)):
        np.testing.assert_allclose(got, ref.numpy(), **tol)
    assert states[1][1] is None


def test_stack_of_different_cells_and_sizes_matches_torch(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    modules = (torch.nn.RNN(I, 5, nonlinearity="relu", batch_first=True).double(),
               torch.nn.LSTM(5, 4, batch_first=True).double(),
               torch.nn.GRU(4, 7, batch_first=True).double(),
               torch.nn.RNN(7, 2, batch_first=True).double())
    spec = L.build([L.RNN(5, nonlinearity="relu"), L.LSTM(4), L.GRU(7), L.RNN(2),
                    L.Dense(3, "sigmoid")], I)
    fc = torch.nn.Linear(2, 3).double()
    params = torch_params(modules, (fc,))
    x = rng.standard_normal((B, T, I))
    lengths = lengths_mixed()
    state = [(0.5 * rng.standard_normal((1, B, r.state_size)),
              0.5 * rng.standard_normal((1, B, r.units)) if r.cell == "lstm" else None)
             for r in spec.recurrent]
    torch_state = [tuple(torch.as_tensor(s) for s in pair) if pair[1] is not None
                   else torch.as_tensor(pair[0]) for pair in state]
    with torch.no_grad():
        seq, finals = run_torch_stack(torch, modules, torch.as_tensor(x), lengths, torch_state)
        want = torch.sigmoid(fc(seq)).numpy()
    valid = np.arange(T)[None, :] < lengths[:, None]
    y, states = forward_model(spec, numpy_of(params, np.float64), x, state, lengths)
    np.testing.assert_allclose(y, np.where(valid[:, :, None], want, 0.0), rtol=1e-10, atol=1e-10)
    for (h, c), final in zip(states, finals):
        ref = final if isinstance(final, tuple) else (final, None)
        np.testing.assert_allclose(h, ref[0].numpy(), rtol=1e-10, atol=1e-10)
        if c is not None:
            np.testing.assert_allclose(c, ref[1].numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_reverse_only_is_torch_on_the_flipped_valid_steps(cell, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    H = 5
    module = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        I, H, batch_first=True).double()
    layer = {"rnn_tanh": L.RNN, "lstm": L.LSTM, "gru": L.GRU}[cell](H, direction="reverse")
    spec = L.build([layer, L.Readout("final")], I)
    params = {n + "_reverse": p.detach().numpy() for n, p in module.named_parameters()}
    x = rng.standard_normal((B, T, I))
    lengths = lengths_mixed()
    flipped = x.copy()
    for b, n in enumerate(lengths):
        flipped[b, :n] = x[b, :n][::-1]
    with torch.no_grad():
        out, _ = run_torch_stack(torch, (module,), torch.as_tensor(flipped), lengths)
    want = out.numpy().copy()
    for b, n in enumerate(lengths):
        want[b, :n] = want[b, :n][::-1]
    seq_spec = L.build([layer], I)
    y, _ = forward_model(seq_spec, params, x, lengths=lengths)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    final, _ = forward_model(spec, params, x, lengths=lengths)
    np.testing.assert_allclose(final, want[:, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("merge", L.MERGES)
def test_bidirectional_merges_match_torch_halves(merge, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    S = 4
    module = torch.nn.GRU(I, S, bidirectional=True, batch_first=True).double()
    spec = L.build([L.GRU(S, direction="bidirectional", merge=merge)], I)
    x = rng.standard_normal((B, T, I))
    with torch.no_grad():
        out, _ = module(torch.as_tensor(x))
    fwd, rev = out[..., :S].numpy(), out[..., S:].numpy()
    want = {"concat": out.numpy(), "sum": fwd + rev, "mul": fwd * rev, "ave": (fwd + rev) / 2}
    y, _ = forward_model(spec, numpy_of(dict(module.named_parameters()), np.float64), x)
    np.testing.assert_allclose(y, want[merge], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# ONNX Runtime


ONNX_CELLS = ["lstm", "gru", "gru_reset_before", "rnn_tanh"]


def run_onnx_node(op, x, weights, attrs, lengths=None, h0=None, c0=None, peepholes=None):
    """One ONNX node over x (B, T, I) (layout 0 inside): returns (Y as (B, T, D, H), Y_h)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    W, R, Bias = weights
    D, _, width = W.shape
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for n, a in (("W", W), ("R", R), ("B", Bias))]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, width])]
    feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2), np.float32)}
    names = ["X", "W", "R", "B", ""]
    if lengths is not None:
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [B]))
        feeds["L"], names[4] = lengths.astype(np.int32), "L"
    for name, value in (("h0", h0), ("c0", c0)):
        if value is not None:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
            feeds[name] = value.astype(np.float32)
        names.append("" if value is None else name)
    if peepholes is not None:
        names = names[:7] + [""] * (7 - len(names)) + ["P"]
        inits.append(numpy_helper.from_array(peepholes.astype(np.float32), "P"))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, ["Y", "Y_h"], **attrs)
    graph = helper.make_graph([node], "g", inputs, [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h = session.run(None, feeds)
    return y.transpose(2, 0, 1, 3), y_h


def onnx_case(cell, rng, units=4, direction="forward", activations=None, alpha=None, beta=None,
              clip=None, input_forget=False, peepholes=False, with_lengths=True,
              with_state=True):
    """A random ONNX node of `cell` and the same layer in rnnext: returns (ORT's (y, y_h),
    rnnext's (y, states)), y as (B, T, D*H)."""
    cell_info, H = CELLS[cell], units
    op = cell_info.onnx_op
    G, D = cell_info.num_gates, 2 if direction == "bidirectional" else 1
    W = rng.uniform(-0.6, 0.6, (D, G * H, I)).astype(np.float32)
    R = rng.uniform(-0.6, 0.6, (D, G * H, H)).astype(np.float32)
    Bias = rng.uniform(-0.6, 0.6, (D, 2 * G * H)).astype(np.float32)
    P = rng.uniform(-0.6, 0.6, (D, 3 * H)).astype(np.float32) if peepholes else None
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = lengths_mixed() if with_lengths else None
    h0 = (0.5 * rng.standard_normal((D, B, H))).astype(np.float32) if with_state else None
    c0 = (0.5 * rng.standard_normal((D, B, H))).astype(np.float32) \
        if with_state and op == "LSTM" else None
    attrs = dict(hidden_size=H, direction=direction)
    if activations is not None:
        # the node's attributes, then the layer as an importer reads them
        attrs["activations"] = [ACTIVATIONS[a].onnx for a in activations] * D
        alphas, betas = onnx_alpha_beta(activations, alpha or (0.0,) * len(activations),
                                        beta or (0.0,) * len(activations))
        if alpha is not None and alphas:
            attrs["activation_alpha"] = alphas * D
        if beta is not None and betas:
            attrs["activation_beta"] = betas * D
        activations, alpha, beta = activations_from_onnx(
            attrs["activations"][:len(activations)], attrs.get("activation_alpha"),
            attrs.get("activation_beta"))
    kwargs = dict(direction=direction, activations=activations, activation_alpha=alpha,
                  activation_beta=beta, clip=clip)
    if op == "LSTM":
        layer = L.LSTM(H, peepholes=peepholes, input_forget=input_forget, **kwargs)
    elif op == "GRU":
        layer = L.GRU(H, reset_after=cell == "gru", **kwargs)
    else:
        layer = L.RNN(H, **kwargs)
    spec = L.build([layer], I)
    r = spec.recurrent[0]
    if clip is not None:
        attrs["clip"] = clip
    if input_forget:
        attrs["input_forget"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = int(cell == "gru")
    got_onnx = run_onnx_node(op, x, (W, R, Bias), attrs, lengths, h0, c0, P)

    params = {}
    for d, reverse in enumerate(r.reverse_flags):
        ours = {"weight_ih": permute_gates(W[d], cell_info.from_onnx),
                "weight_hh": permute_gates(R[d], cell_info.from_onnx),
                "bias_ih": permute_gates(Bias[d, :G * H], cell_info.from_onnx),
                "bias_hh": permute_gates(Bias[d, G * H:], cell_info.from_onnx)}
        if peepholes:
            ours["weight_peephole"] = P[d].reshape(3, H)[list(PEEPHOLE_FROM_ONNX)]
        params.update({f"{k}_l0" + ("_reverse" if reverse else ""): v.astype(np.float64)
                       for k, v in ours.items()})
        np.testing.assert_array_equal(permute_gates(ours["weight_ih"], cell_info.to_onnx), W[d])
    state = None if h0 is None else [(h0, c0)]
    got_ours = forward_model(spec, params, x, state, lengths)
    return got_onnx, got_ours


def assert_onnx_close(got_onnx, got_ours):
    (y_onnx, y_h), (y, states) = got_onnx, got_ours
    np.testing.assert_allclose(y, y_onnx.reshape(y.shape), rtol=F32_RTOL, atol=F32_ATOL)
    np.testing.assert_allclose(states[0][0], y_h, rtol=F32_RTOL, atol=F32_ATOL)


ONNX_FUNCTIONS = [name for name, a in ACTIVATIONS.items() if a.onnx]


@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "alpha_beta"])
@pytest.mark.parametrize("name", ONNX_FUNCTIONS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_every_activation_matches_onnxruntime(cell, name, custom, rng):
    """Each function in each position of the cell (f; g; h), with alpha/beta absent (ONNX
    Runtime's defaults, read by activations_from_onnx) or given."""
    count = len(CELLS[cell].activations)
    for position in range(count):
        activations = list(CELLS[cell].activations)
        activations[position] = name
        alpha = beta = None
        if custom:
            alpha = tuple(0.35 + 0.1 * k for k in range(count))
            beta = tuple(0.45 - 0.1 * k for k in range(count))
        got = onnx_case(cell, rng, activations=tuple(activations), alpha=alpha, beta=beta)
        assert_onnx_close(*got)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell", ONNX_CELLS)
def test_clip_matches_onnxruntime(cell, direction, rng):
    got = onnx_case(cell, rng, direction=direction, clip=0.4)
    assert_onnx_close(*got)
    unclipped = onnx_case(cell, np.random.default_rng(7), direction=direction)
    clipped = onnx_case(cell, np.random.default_rng(7), direction=direction, clip=0.4)
    assert not np.allclose(unclipped[1][0], clipped[1][0])  # the clip changed something


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("cell", ONNX_CELLS)
def test_directions_lengths_states_match_onnxruntime(cell, direction, with_lengths, with_state,
                                                     rng):
    assert_onnx_close(*onnx_case(cell, rng, direction=direction, with_lengths=with_lengths,
                                 with_state=with_state))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("input_forget", [False, True])
@pytest.mark.parametrize("peepholes", [False, True])
def test_lstm_peepholes_and_input_forget_match_onnxruntime(peepholes, input_forget, direction,
                                                           rng):
    assert_onnx_close(*onnx_case("lstm", rng, direction=direction, peepholes=peepholes,
                                 input_forget=input_forget, clip=0.9 if peepholes else None))


def test_activations_from_onnx_reads_what_onnxruntime_reads():
    """The compressed alpha/beta lists (one value per function that uses one), ONNX's names in
    any case, and ONNX's defaults for what is left out."""
    names, alpha, beta = activations_from_onnx(["HardSigmoid", "tanh", "ScaledTanh"],
                                               [0.3, 1.5], [0.6])
    assert names == ("hard_sigmoid", "tanh", "scaled_tanh")
    assert alpha == (0.3, 0.0, 1.5) and beta == (0.6, 0.0, 0.0)  # ScaledTanh's beta: ORT's 0
    assert onnx_alpha_beta(names, alpha, beta) == ([0.3, 1.5], [0.6, 0.0])
    assert activations_from_onnx(["LeakyRelu", "Elu"])[1] == (0.01, 1.0)
    with pytest.raises(ValueError, match="activations"):
        activations_from_onnx(["Gelu"])


# ----------------------------------------------------------------------------------------------
# Keras 3: masks


def keras_module():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def keras_recurrent_params(layer, index, reverse, cell):
    """Our parameters of one Keras LSTM/GRU layer (kernel (I, G*H), recurrent_kernel, bias)."""
    kernel, recurrent, bias = layer.get_weights()
    order = CELLS[cell].from_keras
    bias_ih, bias_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
    suffix = f"_l{index}" + ("_reverse" if reverse else "")
    return {"weight_ih" + suffix: permute_gates(kernel.T, order),
            "weight_hh" + suffix: permute_gates(recurrent.T, order),
            "bias_ih" + suffix: permute_gates(bias_ih, order),
            "bias_hh" + suffix: permute_gates(bias_hh, order)}


def pre_padded(rng):
    """x (B, T, I) with leading zero steps (Keras's pre-padding: one sequence all padding, one
    with a single valid step) and a hole, and the mask they make."""
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mask = np.ones((B, T), bool)
    for b, pad in enumerate([0, 2, T, T - 1]):
        mask[b, :pad] = False
    mask[0, 3] = False  # a hole after valid steps
    return np.where(mask[:, :, None], x, 0.0).astype(np.float32), mask


def test_masked_lstm_matches_keras(rng):
    keras = keras_module()
    H = 5
    x, mask = pre_padded(rng)
    lstm = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    inputs = keras.Input((T, I))
    seq, h, c = lstm(keras.layers.Masking(0.0)(inputs))
    model = keras.Model(inputs, [seq, h, c])
    want_seq, want_h, want_c = (np.asarray(a) for a in model.predict(x, verbose=0))
    params = {k: v.astype(np.float64) for k, v in keras_recurrent_params(lstm, 0, False,
                                                                          "lstm").items()}
    tol = dict(rtol=F32_RTOL, atol=F32_ATOL)
    y, states = forward_model(L.build([L.LSTM(H)], I), params, x, mask=mask)
    np.testing.assert_allclose(y[mask], want_seq[mask], **tol)
    np.testing.assert_allclose(states[0][0][0], want_h, **tol)
    np.testing.assert_allclose(states[0][1][0], want_c, **tol)
    last, _ = forward_model(L.build([L.LSTM(H), L.Readout("last")], I), params, x, mask=mask)
    np.testing.assert_allclose(last, want_h, **tol)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
def test_masked_bidirectional_matches_keras(merge, rng):
    keras = keras_module()
    H = 4
    x, mask = pre_padded(rng)
    inputs = keras.Input((T, I))
    masked = keras.layers.Masking(0.0)(inputs)
    final = keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode=merge)
    sequence = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True),
                                          merge_mode=merge)
    model = keras.Model(inputs, [final(masked), sequence(masked)])
    want_final, want_seq = (np.asarray(a) for a in model.predict(x, verbose=0))
    params = {}
    for reverse, layer in enumerate((final.forward_layer, final.backward_layer)):
        params.update(keras_recurrent_params(layer, 0, reverse, "lstm"))
    params = {k: v.astype(np.float64) for k, v in params.items()}
    tol = dict(rtol=F32_RTOL, atol=F32_ATOL)
    spec = L.build([L.LSTM(H, direction="bidirectional", merge=merge), L.Readout("final")], I)
    got, _ = forward_model(spec, params, x, mask=mask)
    np.testing.assert_allclose(got, want_final, **tol)  # all padding: the zero initial state
    params = {}
    for reverse, layer in enumerate((sequence.forward_layer, sequence.backward_layer)):
        params.update(keras_recurrent_params(layer, 0, reverse, "gru"))
    params = {k: v.astype(np.float64) for k, v in params.items()}
    seq, _ = forward_model(L.build([L.GRU(H, direction="bidirectional", merge=merge)], I), params,
                           x, mask=mask)
    np.testing.assert_allclose(seq[mask], want_seq[mask], **tol)
    # Bidirectional outputs zeros at masked steps, as rnnext does (a plain LSTM repeats its
    # previous output at a masked step after a valid one)
    np.testing.assert_array_equal(seq[~mask], want_seq[~mask])


def test_embedding_mask_zero_matches_keras(rng):
    keras = keras_module()
    V, E, H = 8, 3, 5
    ids = rng.integers(1, V, size=(B, T))
    ids[1, :2] = 0
    ids[2, 4:] = 0
    ids[3, 2] = 0
    embedding = keras.layers.Embedding(V, E, mask_zero=True)
    gru = keras.layers.GRU(H)
    inputs = keras.Input((T,), dtype="int32")
    model = keras.Model(inputs, gru(embedding(inputs)))
    want = np.asarray(model.predict(ids, verbose=0))
    params = {"embedding.weight": embedding.get_weights()[0]}
    params.update(keras_recurrent_params(gru, 0, False, "gru"))
    params = {k: v.astype(np.float64) for k, v in params.items()}
    spec = L.build([L.Embedding(V, E, mask_zero=True), L.GRU(H), L.Readout("final")])
    got, _ = forward_model(spec, params, ids)
    np.testing.assert_allclose(got, want, rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("name", list(FROM_KERAS_ACTIVATION))
def test_keras_activation_names_match_keras(name):
    keras = keras_module()
    x = np.linspace(-6.0, 6.0, 241)
    ours, alpha, beta = activation_from_keras(name)
    want = np.asarray(keras.activations.get(name)(x.astype(np.float32)))
    np.testing.assert_allclose(ACTIVATIONS[ours].forward(x, alpha, beta), want, rtol=F32_RTOL,
                               atol=F32_ATOL)
    with pytest.raises(ValueError, match="activation"):
        activation_from_keras("glu")


# ----------------------------------------------------------------------------------------------
# the resolved spec, parameters and metadata


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shorthand_params_are_torch_modules(cell, bidirectional):
    torch = pytest.importorskip("torch")
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        I, 5, num_layers=3, bidirectional=bidirectional)
    spec = L.build(*L.shorthand(cell, I, 5, 3, bidirectional, output="many_to_many"))
    assert L.param_shapes(spec) == {n: tuple(p.shape) for n, p in module.named_parameters()}
    assert spec.uniform and spec.readout == "sequence" and not spec.dense
    head = L.build(*L.shorthand(cell, I, 5, 1, bidirectional, output_size=2,
                                activation="softmax"))
    assert head.readout == "last" and head.dense == (L.DenseSpec(0, 5 * (1 + bidirectional), 2,
                                                                 "softmax"),)


def test_init_params_follow_torch_bounds():
    spec = L.build([L.Embedding(50, 8, padding_idx=4), L.LSTM(16, proj_size=5, peepholes=True),
                    L.GRU(9, direction="bidirectional"), L.Readout("mean"), L.Dense(3)])
    params = L.init_params(spec, seed=0)
    assert list(params) == list(L.param_shapes(spec))
    assert not params["embedding.weight"][4].any()
    assert 0.8 < params["embedding.weight"].std() < 1.2  # N(0, 1), as torch.nn.Embedding
    for name, bound in (("weight_hh_l0", 1 / 4), ("weight_hr_l0", 1 / 4),
                        ("weight_peephole_l0", 1 / 4), ("bias_ih_l1_reverse", 1 / 3),
                        ("dense0.weight", 1 / np.sqrt(18))):
        assert np.abs(params[name]).max() <= bound and np.abs(params[name]).max() > 0.8 * bound
    np.testing.assert_array_equal(params["weight_ih_l0"], L.init_params(spec, 0)["weight_ih_l0"])


def test_metadata_round_trip_and_strictness():
    spec = L.build([L.Embedding(50, 8, padding_idx=0), L.LSTM(6, proj_size=2, peepholes=True,
                    direction="bidirectional", merge="sum", clip=3.5),
                    L.GRU(4, reset_after=False, activations=("hard_sigmoid", "elu"),
                          activation_alpha=(0.25, 0.1)),
                    L.RNN(3, nonlinearity="relu", direction="reverse"),
                    L.Readout("max"), L.Dense(2, "softmax")])
    meta = L.to_metadata(spec)
    assert meta["layer1.input_size"] == "8" and meta["layer2.input_size"] == "2"
    assert meta["layer2.activation_alpha"] == "0.25,0.1"
    assert meta["layer2.activation_beta"] == "0.5,0.0"  # ONNX's default beta of HardSigmoid
    assert meta["layer1.clip"] == "3.5" and meta["layer3.clip"] == "none"
    assert "input_size" not in meta and all(isinstance(v, str) for v in meta.values())
    assert L.from_metadata(meta) == spec
    for key, value, match in (("layer1.units", "06", "layer1.units"),
                              ("layer1.merge", "max", "layer1.merge"),
                              ("layer2.input_size", "3", "layer2.input_size"),
                              ("layer0.mask_zero", "yes", "layer0.mask_zero"),
                              ("layer9.units", "1", "layer9.units"),
                              ("format_version", "1", "format_version")):
        with pytest.raises(ValueError, match=match):
            L.from_metadata({**meta, key: value})
    del meta["layer4.mode"]
    with pytest.raises(ValueError, match="layer4.mode"):
        L.from_metadata(meta)


@pytest.mark.parametrize("make,match", [
    (lambda: L.LSTM(0), "units"),
    (lambda: L.LSTM(4, proj_size=4), "proj_size"),
    (lambda: L.GRU(4, direction="both"), "direction"),
    (lambda: L.RNN(4, merge="max"), "merge"),
    (lambda: L.LSTM(4, activations=("sigmoid", "tanh")), "activations"),
    (lambda: L.GRU(4, activations=("sigmoid", "glu")), "activations"),
    (lambda: L.RNN(4, activation_alpha=(1.0, 2.0)), "activation_alpha"),
    (lambda: L.LSTM(4, clip=0), "clip"),
    (lambda: L.RNN(4, nonlinearity="relu", activations=("tanh",)), "nonlinearity"),
    (lambda: L.Embedding(5, 2, padding_idx=5), "padding_idx"),
    (lambda: L.Embedding(5, 2, mask_zero=1), "mask_zero"),
    (lambda: L.Readout("first"), "mode"),
    (lambda: L.Dense(3, "gelu"), "activation"),
    (lambda: L.build([L.Dense(3), L.LSTM(2)], 3), r"layers\[0\]"),
    (lambda: L.build([L.LSTM(2), L.Embedding(3, 2)], 3), r"layers\[1\]"),
    (lambda: L.build([L.LSTM(2), L.Readout("last"), L.Readout("max")], 3), r"layers\[2\]"),
    (lambda: L.build([L.Embedding(3, 2), L.LSTM(2)], 3), "input_size"),
    (lambda: L.build([L.LSTM(2)]), "input_size"),
])
def test_bad_layers_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_masks_and_lengths_are_exclusive_and_ids_are_checked(rng):
    spec = L.build([L.Embedding(5, 2), L.GRU(3)])
    params = L.init_params(spec, 0, np.float64)
    with pytest.raises(ValueError, match="x"):
        forward_model(spec, params, np.array([[0, 5]]))
    with pytest.raises(ValueError, match="mask"):
        forward_model(spec, params, np.array([[0, 1]]), lengths=[1], mask=[[True, False]])
