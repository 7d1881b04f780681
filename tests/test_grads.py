"""Gradients of the recurrent stack, the dense head and the losses.

Outside sources: central finite differences in float64 (the NumPy reference), PyTorch autograd
(the reference in float64, the compiled core in float32, on models imported with from_torch),
and the reference itself for the compiled core (float32 tolerance, every instruction set, and
bit for bit across thread counts).
"""
import numpy as np
import pytest

import rnnext
from rnnext import _core, backward, train
from rnnext import layers as L

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
# (cell, nonlinearity, linear_before_reset): the reference also trains the GRU with the reset
# before the product, which neither PyTorch nor the compiled core has
REFERENCE_CELLS = [c + (True,) for c in CELLS] + [("gru", "tanh", False)]
OUTPUTS = ["many_to_one", "many_to_many"]
LOSSES = [("cross_entropy", None), ("cross_entropy", "softmax"),
          ("binary_cross_entropy", "sigmoid"), ("mse", None), ("mse", "softmax"),
          ("mse", "sigmoid")]
TORCH_MODES = {("rnn", "tanh"): ("RNN", "tanh"), ("rnn", "relu"): ("RNN", "relu"),
               ("lstm", "tanh"): ("LSTM", None), ("gru", "tanh"): ("GRU", None)}
ISAS = [isa for isa in ("scalar", "avx2", "avx512") if _core.isa_supported(isa)]


def targets(model, loss, B, T, rng):
    O = model.output_size
    lead = (B, T) if model.per_step else (B,)
    if loss == "cross_entropy":
        return rng.integers(0, O, size=lead)
    if loss == "binary_cross_entropy":
        return rng.uniform(0.0, 1.0, size=lead + (O,))
    return rng.standard_normal(lead + (O,))


def initial_state(model, B, rng, dtype=np.float32):
    """A random initial state in the model's form: PyTorch's stacked h or (h, c) for a uniform
    stack, else a list with h or (h, c) per recurrent layer."""
    layers = []
    for r in model.spec.recurrent:
        h = rng.standard_normal((r.num_directions, B, r.state_size)).astype(dtype)
        c = (0.5 * rng.standard_normal((r.num_directions, B, r.units))).astype(dtype)
        layers.append((h, c) if r.cell == "lstm" else h)
    if not model.spec.uniform:
        return layers
    if model.spec.recurrent[0].cell == "lstm":
        return tuple(np.concatenate([part[i] for part in layers]) for i in range(2))
    return np.concatenate(layers)


def leaves(state):
    """The arrays of a state (or of its gradient), in order."""
    if isinstance(state, (tuple, list)):
        return [a for part in state for a in leaves(part)]
    return [state]


def with_leaves(state, arrays):
    """state's structure with its arrays replaced by `arrays` (in leaves' order)."""
    arrays = iter(arrays)

    def rebuild(s):
        if isinstance(s, (tuple, list)):
            return type(s)(rebuild(part) for part in s)
        return next(arrays)

    return rebuild(state)


def assert_same_structure(got, want):
    assert type(got) is type(want)
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same_structure(g, w)
    else:
        assert got.shape == want.shape


def relative_error(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


# ----------------------------------------------------------------------------------------------
# the reference against finite differences


@pytest.mark.parametrize("cell,nonlinearity,linear_before_reset", REFERENCE_CELLS)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("loss,activation", LOSSES)
def test_reference_matches_finite_differences(cell, nonlinearity, linear_before_reset, output,
                                              loss, activation):
    """Every parameter tensor and the initial state, along a random direction each."""
    rng = np.random.default_rng(3)
    model = rnnext.Model(cell, 3, 4, num_layers=2, bidirectional=True, nonlinearity=nonlinearity,
                         output_size=3, output=output, activation=activation, seed=5,
                         linear_before_reset=linear_before_reset)
    B, T = 3, 5
    x = rng.standard_normal((B, T, 3))
    lengths = np.array([5, 2, 4])
    y = targets(model, loss, B, T, rng)
    state = initial_state(model, B, rng, np.float64)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}

    assert_matches_finite_differences(model, x, y, lengths, None, loss, state, params, rng)


def assert_matches_finite_differences(model, x, y, lengths, mask, loss, state, params, rng,
                                      eps=1e-6):
    """Every parameter tensor and every array of the initial state (grads["state"], in the
    state's form), along a random direction each, against central differences (float64)."""
    def loss_at(p, s):
        return train.loss_and_grads(model, x, y, lengths, mask, loss, s, p, backend="numpy")[0]

    _, grads = train.loss_and_grads(model, x, y, lengths, mask, loss, state, params,
                                    backend="numpy")
    assert list(grads) == list(params) + ["state"]
    assert_same_structure(grads["state"], state)
    checks = [(name, grads[name]) for name in params]
    checks += [(("state", i), g) for i, g in enumerate(leaves(grads["state"]))]
    for name, g in checks:
        v = rng.standard_normal(g.shape)
        if name in params:
            if name == "embedding.weight" and model.spec.embedding.padding_idx is not None:
                assert not g[model.spec.embedding.padding_idx].any()
                v[model.spec.embedding.padding_idx] = 0.0  # held at zero (PyTorch)
            plus = loss_at({**params, name: params[name] + eps * v}, state)
            minus = loss_at({**params, name: params[name] - eps * v}, state)
        else:
            arrays = leaves(state)
            up, down = list(arrays), list(arrays)
            up[name[1]], down[name[1]] = arrays[name[1]] + eps * v, arrays[name[1]] - eps * v
            plus = loss_at(params, with_leaves(state, up))
            minus = loss_at(params, with_leaves(state, down))
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.vdot(g, v))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), name
    return grads


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reference_without_head_matches_finite_differences(cell):
    """No head: the loss applies to the recurrent outputs themselves."""
    rng = np.random.default_rng(4)
    model = rnnext.Model(cell, 2, 3, output="many_to_many", seed=1)
    x, lengths = rng.standard_normal((2, 4, 2)), np.array([4, 3])
    y = rng.standard_normal((2, 4, 3))
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, grads = train.loss_and_grads(model, x, y, lengths, loss="mse", params=params,
                                    backend="numpy")
    name = "weight_hh_l0"
    v = rng.standard_normal(params[name].shape)
    up, down = dict(params), dict(params)
    up[name], down[name] = params[name] + 1e-6 * v, params[name] - 1e-6 * v
    numeric = (train.loss_and_grads(model, x, y, lengths, loss="mse", params=up,
                                    backend="numpy")[0] -
               train.loss_and_grads(model, x, y, lengths, loss="mse", params=down,
                                    backend="numpy")[0]) / 2e-6
    assert numeric == pytest.approx(float(np.vdot(grads[name], v)), rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# layer lists: Model.loss_and_grads on the reference (finite differences) and on the compiled
# core (against the reference), every layer kind, the plain path's options, lengths and masks

LAYER_LISTS = {
    # embedding (mask_zero, padding_idx) + bidirectional LSTM with proj_size and peepholes (the
    # plain path) + bidirectional GRU merged by sum + the final states + a dense chain
    "embedding-final": (lambda: [
        L.Embedding(9, 4, padding_idx=1, mask_zero=True),
        L.LSTM(6, proj_size=3, peepholes=True, direction="bidirectional"),
        L.GRU(5, direction="bidirectional", merge="sum"),
        L.Readout("final"), L.Dense(7, "relu"), L.Dense(3, "softmax")], None, "cross_entropy"),
    # per step: no readout, dense layers on every step, a reverse-only layer
    "per-step": (lambda: [
        L.LSTM(5, direction="bidirectional", merge="ave"), L.GRU(4, direction="reverse"),
        L.Dense(6, "tanh"), L.Dense(3)], 3, "mse"),
    "mean": (lambda: [
        L.RNN(5, nonlinearity="relu", direction="bidirectional", merge="concat"),
        L.LSTM(4, input_forget=True, peepholes=True), L.Readout("mean"),
        L.Dense(2, "sigmoid")], 3, "binary_cross_entropy"),
    "max": (lambda: [
        L.GRU(6, reset_after=False, direction="bidirectional", merge="mul"),
        L.Readout("max"), L.Dense(4, "softmax")], 3, "mse"),
    "last-embedding": (lambda: [
        L.Embedding(7, 3, padding_idx=0), L.LSTM(5, direction="bidirectional"),
        L.LSTM(5, direction="bidirectional"), L.Readout("last"), L.Dense(3)], None,
        "cross_entropy"),
}


def layer_list_case(name, steps, rng, B=4, T=6, dtype=np.float64):
    """(model, x, y, lengths, mask, loss, state) of LAYER_LISTS[name]; steps: "full",
    "lengths" or "mask" (Keras style: leading padding, a hole, one sequence of one step)."""
    make, input_size, loss = LAYER_LISTS[name]
    model = rnnext.Model(make(), input_size=input_size, seed=2)
    spec = model.spec
    if spec.embedding is not None:
        x = rng.integers(0, spec.embedding.vocab_size, size=(B, T))
        if spec.embedding.padding_idx is not None:
            x[0, 2] = spec.embedding.padding_idx
        if spec.embedding.mask_zero:
            x[x == 0] = 2
            x[1, :2] = 0  # leading padding
            x[2, 3] = 0  # a hole
    else:
        x = rng.standard_normal((B, T, input_size)).astype(dtype)
    lengths = mask = None
    if steps == "lengths":
        lengths = np.array([T, 3, 1, 5])[:B]
    elif steps == "mask":
        mask = np.ones((B, T), bool)
        mask[1, :2] = False
        mask[2, 3] = False
        mask[3, :-1] = False
    y = targets(model, loss, B, T, rng)
    return model, x, y, lengths, mask, loss, initial_state(model, B, rng, dtype)


@pytest.mark.parametrize("steps", ["full", "lengths", "mask"])
@pytest.mark.parametrize("name", list(LAYER_LISTS))
def test_layer_list_reference_matches_finite_differences(name, steps):
    rng = np.random.default_rng(21)
    model, x, y, lengths, mask, loss, state = layer_list_case(name, steps, rng)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    grads = assert_matches_finite_differences(model, x, y, lengths, mask, loss, state, params,
                                              rng)
    lstm = model.spec.recurrent[0].cell == "lstm"
    assert isinstance(grads["state"], (tuple if lstm else np.ndarray) if model.spec.uniform
                      else list)


@pytest.mark.parametrize("steps", ["full", "lengths", "mask"])
@pytest.mark.parametrize("name", list(LAYER_LISTS))
def test_layer_list_compiled_matches_reference(name, steps):
    """backend "c" (the recurrent layers on the core, the rest in NumPy) against the float64
    reference: the loss, every parameter's gradient and the initial state's."""
    rng = np.random.default_rng(22)
    model, x, y, lengths, mask, loss, state = layer_list_case(name, steps, rng,
                                                              dtype=np.float32)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    want_loss, want = train.loss_and_grads(model, x, y, lengths, mask, loss, state, params,
                                           backend="numpy")
    got_loss, grads = model.loss_and_grads(x, y, lengths, loss, state, backend="c", mask=mask)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert list(grads) == list(want)
    assert_same_structure(grads["state"], want["state"])
    for key in want:
        for got, expected in zip(leaves(grads[key]), leaves(want[key])):
            assert got.dtype == np.float32
            assert relative_error(got, expected) < 2e-5, key


def test_layer_list_matches_torch_autograd():
    """An embedding (padding_idx), a bidirectional LSTM with proj_size, a bidirectional GRU on
    packed sequences from initial states, the final states of both directions, two Linear
    layers and cross-entropy, as PyTorch users write it: the loss and every gradient, on the
    reference (float64) and on the compiled core (float32)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(3)
    V, E, H, P, G, B, T = 10, 4, 6, 3, 5, 4, 7
    emb = torch.nn.Embedding(V, E, padding_idx=0)
    lstm = torch.nn.LSTM(E, H, proj_size=P, bidirectional=True, batch_first=True)
    gru = torch.nn.GRU(2 * P, G, bidirectional=True, batch_first=True)
    fc1, fc2 = torch.nn.Linear(2 * G, 8), torch.nn.Linear(8, 3)
    modules = [emb, lstm, gru, fc1, fc2]
    model = rnnext.Model([L.Embedding(V, E, padding_idx=0),
                          L.LSTM(H, proj_size=P, direction="bidirectional"),
                          L.GRU(G, direction="bidirectional"), L.Readout("final"),
                          L.Dense(8, "relu"), L.Dense(3, "softmax")], seed=0)
    rng = np.random.default_rng(8)
    ids = rng.integers(1, V, size=(B, T))
    lengths = np.array([7, 2, 5, 1])
    for b, n in enumerate(lengths):
        ids[b, n:] = 0
    y = rng.integers(0, 3, size=B)
    states = [(0.5 * rng.standard_normal((2, B, P)), 0.5 * rng.standard_normal((2, B, H))),
              0.5 * rng.standard_normal((2, B, G))]

    for dtype, np_dtype, backend, tolerance in [(torch.float64, np.float64, "numpy", 1e-10),
                                                (torch.float32, np.float32, "c", 1e-4)]:
        for m in modules:
            m.to(dtype)
            m.zero_grad()
        names = {"embedding.weight": emb.weight}
        for k, module in enumerate((lstm, gru)):
            names.update({n.replace("_l0", f"_l{k}"): p for n, p in module.named_parameters()})
        names.update({f"dense{j}.{n}": p for j, fc in enumerate((fc1, fc2))
                      for n, p in fc.named_parameters()})
        assert {n: tuple(p.shape) for n, p in names.items()} == model.param_shapes()
        th = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in leaves(states)]
        seq = emb(torch.as_tensor(ids))
        for module, state in ((lstm, (th[0], th[1])), (gru, th[2])):
            packed = pack_padded_sequence(seq, torch.as_tensor(lengths), batch_first=True,
                                          enforce_sorted=False)
            out, h_n = module(packed, state)
            seq, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        z = fc2(torch.relu(fc1(torch.cat([h_n[-2], h_n[-1]], dim=1))))
        want = torch.nn.functional.cross_entropy(z, torch.as_tensor(y))
        want.backward()

        params = {n: p.detach().numpy().copy() for n, p in names.items()}
        state = with_leaves(states, [a.astype(np_dtype) for a in leaves(states)])
        if backend == "c":
            model.set_params(params)
            loss, grads = model.loss_and_grads(ids, y, lengths, state=state, backend="c")
        else:
            loss, grads = train.loss_and_grads(model, ids, y, lengths, state=state,
                                               params=params, backend="numpy")
        assert loss == pytest.approx(want.item(), rel=tolerance)
        assert list(grads) == list(names) + ["state"]
        for name, p in names.items():
            assert relative_error(grads[name], p.grad.numpy()) < tolerance, (backend, name)
        assert_same_structure(grads["state"], state)
        for got, t in zip(leaves(grads["state"]), th):
            assert relative_error(got, t.grad.numpy()) < tolerance, backend
        assert not grads["embedding.weight"][0].any()


# ----------------------------------------------------------------------------------------------
# against PyTorch autograd


def torch_setup(torch, cell, nonlinearity, layers, bidirectional, output, dtype, seed=0):
    torch.manual_seed(seed)
    mode, torch_nl = TORCH_MODES[(cell, nonlinearity)]
    kwargs = {"nonlinearity": torch_nl} if torch_nl else {}
    rnn = getattr(torch.nn, mode)(3, 5, num_layers=layers, bidirectional=bidirectional,
                                  batch_first=True, **kwargs).to(dtype)
    head = torch.nn.Linear(5 * (2 if bidirectional else 1), 4).to(dtype)
    return rnn, head


def torch_loss(torch, rnn, head, x, y, lengths, state, output):
    """Softmax cross-entropy of the head on packed sequences, as PyTorch users write it."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed, state)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                    total_length=x.shape[1])
    if output == "many_to_one":
        z = head(out[torch.arange(x.shape[0]), torch.as_tensor(lengths) - 1])
        return torch.nn.functional.cross_entropy(z, y)
    mask = torch.arange(x.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]
    return torch.nn.functional.cross_entropy(head(out)[mask], y[mask])


def autograd(torch, cell, nonlinearity, layers, bidirectional, output, dtype):
    """(model from from_torch, x, y, lengths, state arrays, torch's loss and {name: grad})."""
    rnn, head = torch_setup(torch, cell, nonlinearity, layers, bidirectional, output, dtype)
    rng = np.random.default_rng(7)
    B, T = 4, 6
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x = rng.standard_normal((B, T, 3)).astype(np_dtype)
    lengths = np.array([6, 3, 1, 5])
    y = rng.integers(0, 4, size=(B,) if output == "many_to_one" else (B, T))
    LD = layers * (2 if bidirectional else 1)
    h0 = rng.standard_normal((LD, B, 5)).astype(np_dtype)
    c0 = rng.standard_normal((LD, B, 5)).astype(np_dtype)
    th0 = torch.tensor(h0, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    state = (th0, tc0) if cell == "lstm" else th0
    loss = torch_loss(torch, rnn, head, torch.tensor(x), torch.tensor(y), lengths, state, output)
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in rnn.named_parameters()}
    grads.update({"dense0." + name: p.grad.numpy() for name, p in head.named_parameters()})
    grads["state"] = (th0.grad.numpy(), tc0.grad.numpy()) if cell == "lstm" else \
        th0.grad.numpy()
    model = rnnext.from_torch(rnn, head=head, output=output)
    params = {name: p.detach().numpy() for name, p in rnn.named_parameters()}
    params.update({"dense0." + name: p.detach().numpy() for name, p in head.named_parameters()})
    return model, params, x, y, lengths, ((h0, c0) if cell == "lstm" else h0), loss.item(), grads


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("output", OUTPUTS)
def test_reference_matches_torch_autograd_float64(cell, nonlinearity, layers, bidirectional,
                                                  output):
    torch = pytest.importorskip("torch")
    model, params, x, y, lengths, state, want_loss, want = autograd(
        torch, cell, nonlinearity, layers, bidirectional, output, torch.float64)
    loss, grads = train.loss_and_grads(model, x, y, lengths, loss="cross_entropy", state=state,
                                       params=params, backend="numpy")
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert list(grads) == list(want)
    assert_same_structure(grads["state"], want["state"])
    for name in want:
        for got, expected in zip(leaves(grads[name]), leaves(want[name])):
            assert relative_error(got, expected) < 1e-10, name


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("output", OUTPUTS)
def test_compiled_matches_torch_autograd(cell, nonlinearity, layers, bidirectional, output):
    torch = pytest.importorskip("torch")
    model, _, x, y, lengths, state, want_loss, want = autograd(
        torch, cell, nonlinearity, layers, bidirectional, output, torch.float32)
    loss, grads = model.loss_and_grads(x, y, lengths, state=state, backend="c")
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert list(grads) == list(want)
    assert_same_structure(grads["state"], want["state"])
    for name in want:
        for got, expected in zip(leaves(grads[name]), leaves(want[name])):
            assert relative_error(got, expected) < 1e-4, name


# ----------------------------------------------------------------------------------------------
# the compiled core against the reference


def compiled_model(model, isa):
    """model with its compiled core built for `isa`."""
    flat = np.concatenate([model.params[n].ravel() for n in model.param_shapes()])
    model._cores["fp32"] = _core.CoreModel(L.core_layers(model.spec), flat, isa)
    assert model.core().isa == isa
    return model


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, False), (3, True)])
def test_compiled_matches_reference(isa, cell, nonlinearity, layers, bidirectional):
    """Hidden sizes that fill no vector and lengths of every kind, with the initial state."""
    rng = np.random.default_rng(layers + 2 * bidirectional)
    for H, output in [(5, "many_to_many"), (37, "many_to_one")]:
        model = compiled_model(rnnext.Model(cell, 7, H, num_layers=layers,
                                            bidirectional=bidirectional,
                                            nonlinearity=nonlinearity, output_size=3,
                                            output=output, seed=2), isa)
        B, T = 5, 9
        x = rng.standard_normal((B, T, 7)).astype(np.float32)
        lengths = np.array([9, 1, 4, 9, 6])
        y = targets(model, "cross_entropy", B, T, rng)
        state = initial_state(model, B, rng)
        params = {k: v.astype(np.float64) for k, v in model.params.items()}
        want_loss, want = train.loss_and_grads(model, x, y, lengths, state=state, params=params,
                                               backend="numpy")
        loss, grads = model.loss_and_grads(x, y, lengths, state=state, backend="c")
        assert loss == pytest.approx(want_loss, rel=1e-5)
        assert list(grads) == list(want)
        for name in want:
            for got, expected in zip(leaves(grads[name]), leaves(want[name])):
                assert relative_error(got, expected) < 2e-5, (H, name)


CORE_STACKS = {
    "rnn": lambda: [L.RNN(9, direction="bidirectional"), L.RNN(9, direction="bidirectional")],
    "lstm": lambda: [L.LSTM(9, direction="bidirectional"), L.LSTM(9, direction="bidirectional")],
    "gru": lambda: [L.GRU(9, direction="bidirectional"), L.GRU(9, direction="bidirectional")],
    "mixed": lambda: [L.LSTM(8, proj_size=3, peepholes=True, direction="bidirectional",
                             merge="mul"),
                      L.GRU(5, reset_after=False, direction="reverse"),
                      L.RNN(4, nonlinearity="relu", direction="bidirectional")],
}


@pytest.mark.parametrize("stack", list(CORE_STACKS))
def test_compiled_backward_matches_reference(stack):
    """rnx_backward on its own (CoreModel.backward): the recurrent parameters' gradients,
    dLoss/dx (which Model uses for an embedding's gradient) and dLoss/d(initial states), from
    gradients of the top layer's sequence and of every final state."""
    rng = np.random.default_rng(11)
    model = rnnext.Model(CORE_STACKS[stack](), input_size=6, seed=3)
    spec = model.spec
    B, T = 3, 7
    x = rng.standard_normal((B, T, 6)).astype(np.float32)
    lengths = np.array([7, 2, 5], np.int32)
    dseq = rng.standard_normal((B, T, spec.recurrent[-1].output_size)).astype(np.float32)
    dstates = [(rng.standard_normal((r.num_directions, B, r.state_size)).astype(np.float32),
                rng.standard_normal((r.num_directions, B, r.units)).astype(np.float32)
                if r.cell == "lstm" else None) for r in spec.recurrent]
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, _, trace = backward.forward_train_model(spec, params, x, lengths=lengths)
    want, want_dx, want_d0 = backward.backward_model(spec, params, trace, dseq, dstates)

    core = model.core()
    tape = _core.CoreTape(core, B, T)
    S, C = core.info["state_size"], core.info["cell_size"]
    core.forward_train(tape, np.empty_like(dseq), None, None, x, None, None, lengths, None, 2)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    dx, dh0, dc0 = np.empty_like(x), np.empty(B * S, np.float32), np.empty(B * C, np.float32)
    dh_n = np.concatenate([h.ravel() for h, _ in dstates])
    dc_n = np.concatenate([c.ravel() for _, c in dstates if c is not None] or
                          [np.empty(0, np.float32)])
    core.backward(tape, grads, dx, dh0, dc0, x, dseq, dh_n, dc_n, 2)
    offset = 0
    for name, shape in model.param_shapes().items():
        size = int(np.prod(shape))
        assert relative_error(grads[offset:offset + size].reshape(shape), want[name]) < 2e-5, name
        offset += size
    assert offset == grads.size
    assert relative_error(dx, want_dx) < 2e-5
    want_dh0 = np.concatenate([h.ravel() for h, _ in want_d0])
    assert relative_error(dh0, want_dh0) < 2e-5
    if C:
        assert relative_error(dc0, np.concatenate([c.ravel() for _, c in want_d0
                                                   if c is not None])) < 2e-5


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_compiled_gradients_do_not_depend_on_threads(cell):
    """Bit for bit with 1, 2 and 3 threads, on enough work for the core to use them (B odd, so
    the batch splits unevenly)."""
    rng = np.random.default_rng(5)
    model = rnnext.Model(cell, 16, 64, num_layers=2, bidirectional=True, output_size=5,
                         output="many_to_many", seed=4)
    B, T = 7, 40
    x = rng.standard_normal((B, T, 16)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    y = rng.integers(0, 5, size=(B, T))
    state = initial_state(model, B, rng)
    results = [model.loss_and_grads(x, y, lengths, state=state, n_threads=n) for n in (1, 2, 3)]
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for name, g in grads.items():
            for got, want in zip(leaves(g), leaves(results[0][1][name])):
                assert np.array_equal(got, want), name


@pytest.mark.parametrize("readout", ["final", "sequence"])
def test_compiled_layer_list_gradients_do_not_depend_on_threads(readout):
    """An embedding with mask_zero, a bidirectional LSTM with proj_size and peepholes (the plain
    path), a bidirectional GRU merged by sum, a readout and a dense chain: the loss and every
    gradient (the initial states' too) bit for bit with 1, 2 and 3 threads."""
    rng = np.random.default_rng(9)
    V, B, T = 30, 31, 40  # enough work that 3 threads each get a share; B splits unevenly
    model = rnnext.Model([L.Embedding(V, 16, padding_idx=3, mask_zero=True),
                          L.LSTM(48, proj_size=24, peepholes=True, direction="bidirectional"),
                          L.GRU(40, direction="bidirectional", merge="sum"),
                          L.Readout(readout), L.Dense(16, "tanh"), L.Dense(5, "softmax")],
                         seed=4)
    ids = rng.integers(0, V, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B)
    y = rng.integers(0, 5, size=(B, T) if model.per_step else B)
    state = initial_state(model, B, rng)
    results = [model.loss_and_grads(ids, y, lengths, state=state, n_threads=n)
               for n in (1, 2, 3)]
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        assert list(grads) == list(results[0][1])
        for name, g in grads.items():
            for got, want in zip(leaves(g), leaves(results[0][1][name])):
                assert np.array_equal(got, want), name


def test_backward_needs_a_fresh_training_pass():
    model = rnnext.Model("lstm", 3, 4, seed=0)
    core = model.core()
    x = np.zeros((2, 3, 3), np.float32)
    tape = _core.CoreTape(core, 2, 3)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    with pytest.raises(ValueError, match="backward"):
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    core.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    with pytest.raises(ValueError, match="backward"):  # the tape now holds gradients
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    other = rnnext.Model("gru", 3, 4, seed=0).core()
    with pytest.raises(ValueError, match="forward_train"):  # another configuration
        other.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    with pytest.raises(ValueError, match="forward_train"):  # more steps than the tape holds
        core.forward_train(tape, None, None, None, np.zeros((2, 4, 3), np.float32), None, None,
                           None, None, 1)
    with pytest.raises(ValueError, match="backward"):  # a failed pass leaves the tape empty
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    core.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    with pytest.raises(ValueError, match="grads"):
        core.backward(tape, grads[:-1], None, None, None, x, None, None, None, 1)


@pytest.mark.parametrize("output", OUTPUTS)
def test_compiled_trains_the_reset_before_gru(output):
    """The GRU with the reset before the product (reset_after=False), which PyTorch lacks,
    trains on the core's plain path: against the float64 reference, and fit runs."""
    rng = np.random.default_rng(6)
    model = rnnext.Model("gru", 3, 5, num_layers=2, bidirectional=True, output_size=2,
                         output=output, seed=0, linear_before_reset=False)
    B, T = 3, 6
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = np.array([6, 1, 4])
    y = targets(model, "cross_entropy", B, T, rng)
    state = initial_state(model, B, rng)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    want_loss, want = train.loss_and_grads(model, x, y, lengths, state=state, params=params,
                                           backend="numpy")
    loss, grads = model.loss_and_grads(x, y, lengths, state=state, backend="c")
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for name in want:
        assert relative_error(grads[name], want[name]) < 2e-5, name
    history = model.fit(x, y, lengths, epochs=2, verbose=False)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_padding_past_lengths_reaches_no_gradient(backend):
    """NaN (or anything) in x past a sequence's length changes neither the loss nor a gradient."""
    model = rnnext.Model("lstm", 3, 8, num_layers=2, bidirectional=True, output_size=2,
                         activation="softmax", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    lengths, y = np.array([6, 3, 1, 5]), np.array([0, 1, 1, 0])
    padded = x.copy()
    for b, n in enumerate(lengths):
        padded[b, n:] = np.nan
    loss, grads = model.loss_and_grads(x, y, lengths=lengths, backend=backend)
    loss_p, grads_p = model.loss_and_grads(padded, y, lengths=lengths, backend=backend)
    assert loss_p == loss
    for name in grads:
        np.testing.assert_array_equal(grads_p[name], grads[name], err_msg=name)


def test_threads_training_one_model_at_once_get_their_own_gradients():
    """Training calls release the GIL; each thread keeps its own tape, so concurrent calls on one
    model give each caller exactly its single-threaded gradients."""
    import threading

    model = rnnext.Model("gru", 3, 16, output_size=2, activation="softmax", seed=0)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((B, T, 3)).astype(np.float32), rng.integers(0, 2, B))
               for B, T in ((1, 40), (64, 7), (5, 23), (17, 3))]
    expected = [model.loss_and_grads(x, y, n_threads=1)[1] for x, y in batches]
    failures = []

    def work(i):
        x, y = batches[i]
        try:
            for _ in range(30):
                grads = model.loss_and_grads(x, y, n_threads=1)[1]
                if any(not np.array_equal(grads[n], expected[i][n]) for n in grads):
                    failures.append(f"batch {i}: wrong gradients")
                    return
        except Exception as e:  # an error in a thread would not fail the test by itself
            failures.append(f"batch {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
