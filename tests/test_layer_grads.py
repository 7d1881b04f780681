"""Gradients of the layer list's reference BPTT (rnnext.backward.backward_model).

Outside sources: central finite differences in float64 on every layer kind and option, and
PyTorch autograd on the layers PyTorch has (embedding with padding_idx, LSTM with proj_size,
bidirectional stacks of different cells and sizes, readouts, Linear/activation chains).
"""
import numpy as np
import pytest

from rnnext import layers as L
from rnnext.backward import backward_model, forward_train_model
from rnnext.cells import ACTIVATIONS

B, T, I = 4, 5, 3


def random_state(spec, rng):
    return [(0.5 * rng.standard_normal((r.num_directions, B, r.state_size)),
             0.5 * rng.standard_normal((r.num_directions, B, r.units)) if r.cell == "lstm"
             else None) for r in spec.recurrent]


def inputs(spec, rng, valid):
    """x (float or ids) with NaN (float) or random ids at the invalid steps of `valid`."""
    if spec.embedding is not None:
        ids = rng.integers(0, spec.embedding.vocab_size, size=(B, T))
        if spec.embedding.padding_idx is not None:
            ids[0, 1] = spec.embedding.padding_idx
        return ids
    x = rng.standard_normal((B, T, I))
    return np.where(valid[:, :, None], x, np.nan)


def loss_terms(y, states, weights):
    """sum(y * Ry) + sum over the final states of h * Rh (+ c * Rc): every output is used."""
    Ry, Rs = weights
    total = np.sum(y * Ry)
    for (h, c), (rh, rc) in zip(states, Rs):
        total += np.sum(h * rh) + (0.0 if c is None else np.sum(c * rc))
    return total


def assert_matches_finite_differences(spec, rng, lengths=None, mask=None, eps=1e-6):
    """Every parameter tensor, the float input and the initial state, each along a random
    direction, against central differences of a loss that reads every output."""
    params = L.init_params(spec, seed=1, dtype=np.float64)
    valid = np.ones((B, T), bool)
    if lengths is not None:
        valid = np.arange(T)[None, :] < lengths[:, None]
    if mask is not None:
        valid = mask
    x = inputs(spec, rng, valid)
    state = random_state(spec, rng)
    y, states, trace = forward_train_model(spec, params, x, state, lengths, mask)
    assert not np.isnan(y).any()
    weights = (rng.standard_normal(y.shape),
               [(rng.standard_normal(h.shape), None if c is None else rng.standard_normal(c.shape))
                for h, c in states])
    grads, dx, dstates = backward_model(spec, params, trace, weights[0], weights[1])
    assert list(grads) == list(L.param_shapes(spec))

    def loss(p=params, xx=x, s=state):
        return loss_terms(*forward_train_model(spec, p, xx, s, lengths, mask)[:2], weights)

    def check(got, plus, minus, what):
        want = (plus - minus) / (2 * eps)
        assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), f"{what}: {got} vs {want}"

    for name, g in grads.items():
        v = rng.standard_normal(g.shape)
        if name == "embedding.weight" and spec.embedding.padding_idx is not None:
            v[spec.embedding.padding_idx] = 0.0  # that row is held (PyTorch): no gradient
        check(np.sum(g * v), loss(p={**params, name: params[name] + eps * v}),
              loss(p={**params, name: params[name] - eps * v}), name)
    if spec.embedding is None:
        assert not np.isnan(dx).any() and not dx[~valid].any()
        v = rng.standard_normal(x.shape)
        x0 = np.where(valid[:, :, None], x, 0.0)
        check(np.sum(dx * v), loss(xx=x0 + eps * v), loss(xx=x0 - eps * v), "x")
    else:
        assert dx is None
    for k, (dh, dc) in enumerate(dstates):
        for part, g in enumerate((dh, dc)):
            if g is None:
                continue
            v = rng.standard_normal(g.shape)

            def shifted(sign):
                s = [list(p) for p in state]
                s[k][part] = state[k][part] + sign * eps * v
                return loss(s=s)

            check(np.sum(g * v), shifted(1), shifted(-1), f"state[{k}][{part}]")
    return params, grads


def valid_lengths():
    return np.array([T, 2, 4, 1])


def pre_padded_mask():
    """Keras-style masks: one sequence fully valid, leading padding, a hole, all padding."""
    mask = np.ones((B, T), bool)
    mask[1, :2] = False
    mask[2, 3] = False
    mask[3] = False
    return mask


# ----------------------------------------------------------------------------------------------
# finite differences, float64


CELL_LAYERS = {
    "rnn_tanh": lambda **kw: L.RNN(4, **kw),
    "rnn_relu": lambda **kw: L.RNN(4, nonlinearity="relu", **kw),
    "lstm": lambda **kw: L.LSTM(4, **kw),
    "lstm_proj_peepholes": lambda **kw: L.LSTM(4, proj_size=2, peepholes=True, **kw),
    "lstm_input_forget": lambda **kw: L.LSTM(4, input_forget=True, **kw),
    "gru": lambda **kw: L.GRU(4, **kw),
    "gru_reset_before": lambda **kw: L.GRU(4, reset_after=False, **kw),
}


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("cell", list(CELL_LAYERS))
def test_each_cell_bidirectional_with_lengths(cell, merge, rng):
    spec = L.build([CELL_LAYERS[cell](direction="bidirectional", merge=merge),
                    CELL_LAYERS[cell](direction="reverse")], I)
    assert_matches_finite_differences(spec, rng, lengths=valid_lengths())


@pytest.mark.parametrize("readout", L.READOUTS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_readouts_with_a_pre_padded_mask(readout, direction, rng):
    spec = L.build([L.GRU(3), L.LSTM(4, direction=direction, merge="concat"),
                    L.Readout(readout), L.Dense(3, "tanh")], I)
    assert_matches_finite_differences(spec, rng, mask=pre_padded_mask())


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "gru_reset_before"])
def test_every_activation_with_alpha_and_beta(cell, name, rng):
    count = {"rnn_tanh": 1, "lstm": 3, "gru": 2, "gru_reset_before": 2}[cell]
    rest = ["sigmoid", "tanh", "softsign"][:count - 1]
    slot = 1 if cell.startswith("gru") else 0  # a GRU's gate z above 1 (exponential) grows h
    activations = tuple(rest[:slot] + [name] + rest[slot:])
    alpha = tuple(0.7 if ACTIVATIONS[a].uses_alpha else 0.0 for a in activations)
    beta = tuple(0.3 if ACTIVATIONS[a].uses_beta else 0.0 for a in activations)
    layer = CELL_LAYERS[cell](activations=activations, activation_alpha=alpha,
                              activation_beta=beta)
    assert_matches_finite_differences(L.build([layer], I), rng, lengths=valid_lengths())


@pytest.mark.parametrize("cell", list(CELL_LAYERS))
def test_clip(cell, rng):
    spec = L.build([CELL_LAYERS[cell](clip=0.3, direction="bidirectional")], I)
    params, grads = assert_matches_finite_differences(spec, rng)
    assert any(np.any(g != 0) for g in grads.values())


def test_input_forget_f_rows_get_no_gradient(rng):
    spec = L.build([L.LSTM(4, input_forget=True, peepholes=True, direction="bidirectional")], I)
    _, grads = assert_matches_finite_differences(spec, rng, lengths=valid_lengths())
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0_reverse"):
        assert not grads[name][4:8].any() and grads[name][:4].any()
    assert not grads["weight_peephole_l0"][1].any()


@pytest.mark.parametrize("activation", L.DENSE_ACTIVATIONS)
def test_dense_chain_on_every_step(activation, rng):
    spec = L.build([L.LSTM(4, direction="bidirectional", merge="ave"), L.Dense(5, "relu"),
                    L.Dense(3, activation)], I)
    assert_matches_finite_differences(spec, rng, lengths=valid_lengths())


@pytest.mark.parametrize("readout", ["final", "mean"])
def test_embedding_padding_idx_and_mask_zero(readout, rng):
    spec = L.build([L.Embedding(7, 3, padding_idx=2, mask_zero=True), L.GRU(4),
                    L.LSTM(3, proj_size=2, direction="bidirectional", merge="mul"),
                    L.Readout(readout), L.Dense(2, "softmax")])
    _, grads = assert_matches_finite_differences(spec, rng, lengths=valid_lengths())
    assert not grads["embedding.weight"][2].any()


# ----------------------------------------------------------------------------------------------
# PyTorch autograd, float64


def test_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    V, E, H, P, G = 9, 3, 5, 3, 4
    emb = torch.nn.Embedding(V, E, padding_idx=1).double()
    lstm = torch.nn.LSTM(E, H, proj_size=P, bidirectional=True, batch_first=True).double()
    gru = torch.nn.GRU(2 * P, G, bidirectional=True, batch_first=True).double()
    fc1, fc2 = torch.nn.Linear(2 * G, 6).double(), torch.nn.Linear(6, 2).double()
    spec = L.build([L.Embedding(V, E, padding_idx=1), L.LSTM(H, proj_size=P,
                    direction="bidirectional"), L.GRU(G, direction="bidirectional"),
                    L.Readout("final"), L.Dense(6, "relu"), L.Dense(2, "tanh")])
    params = {"embedding.weight": emb.weight}
    for k, module in enumerate((lstm, gru)):
        params.update({name.replace("_l0", f"_l{k}"): p for name, p in module.named_parameters()})
    params.update({f"dense{j}.{n}": p for j, fc in enumerate((fc1, fc2))
                   for n, p in fc.named_parameters()})
    assert {n: tuple(p.shape) for n, p in params.items()} == L.param_shapes(spec)
    ids = rng.integers(0, V, size=(B, T))
    ids[0, 0] = 1
    lengths = valid_lengths()
    dy = rng.standard_normal((B, 2))

    seq = emb(torch.as_tensor(ids))
    for module in (lstm, gru):
        packed = pack_padded_sequence(seq, torch.as_tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, state = module(packed)
        seq, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n = state
    y = torch.tanh(fc2(torch.relu(fc1(torch.cat([h_n[-2], h_n[-1]], dim=1)))))
    (y * torch.as_tensor(dy)).sum().backward()

    numpy_params = {n: p.detach().numpy() for n, p in params.items()}
    got_y, _, trace = forward_train_model(spec, numpy_params, ids, lengths=lengths)
    np.testing.assert_allclose(got_y, y.detach().numpy(), rtol=1e-10, atol=1e-10)
    grads, dx, _ = backward_model(spec, numpy_params, trace, dy)
    for name, p in params.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=name)
    assert dx is None and not grads["embedding.weight"][1].any()


@pytest.mark.parametrize("readout", ["last", "mean", "max", "sequence"])
@pytest.mark.parametrize("cell", ["rnn_relu", "lstm", "gru"])
def test_readouts_match_torch_autograd(cell, readout, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    H = 4
    module = {"rnn_relu": lambda: torch.nn.RNN(I, H, nonlinearity="relu", batch_first=True),
              "lstm": lambda: torch.nn.LSTM(I, H, batch_first=True),
              "gru": lambda: torch.nn.GRU(I, H, batch_first=True)}[cell]().double()
    fc = torch.nn.Linear(H, 3).double()
    spec = L.build([CELL_LAYERS[cell]()] + ([] if readout == "sequence" else
                                           [L.Readout(readout)]) + [L.Dense(3, "sigmoid")], I)
    x = torch.as_tensor(rng.standard_normal((B, T, I)), dtype=torch.float64, ).requires_grad_()
    out, _ = module(x)
    reduce = {"last": lambda s: s[:, -1], "mean": lambda s: s.mean(dim=1),
              "max": lambda s: s.max(dim=1).values, "sequence": lambda s: s}[readout]
    y = torch.sigmoid(fc(reduce(out)))
    dy = rng.standard_normal(tuple(y.shape))
    (y * torch.as_tensor(dy)).sum().backward()
    params = {n: p.detach().numpy() for n, p in module.named_parameters()}
    params.update({f"dense0.{n}": p.detach().numpy() for n, p in fc.named_parameters()})
    got, _, trace = forward_train_model(spec, params, x.detach().numpy())
    np.testing.assert_allclose(got, y.detach().numpy(), rtol=1e-10, atol=1e-10)
    grads, dx, _ = backward_model(spec, params, trace, dy)
    torch_grads = {n: p.grad for n, p in module.named_parameters()}
    torch_grads.update({f"dense0.{n}": p.grad for n, p in fc.named_parameters()})
    for name, g in torch_grads.items():
        np.testing.assert_allclose(grads[name], g.numpy(), rtol=1e-9, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-9, atol=1e-10)
