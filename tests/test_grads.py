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
    O = model.output_size or model.num_directions * model.hidden_size
    lead = (B,) if model.output == "many_to_one" else (B, T)
    if loss == "cross_entropy":
        return rng.integers(0, O, size=lead)
    if loss == "binary_cross_entropy":
        return rng.uniform(0.0, 1.0, size=lead + (O,))
    return rng.standard_normal(lead + (O,))


def initial_state(model, B, rng, dtype=np.float32):
    shape = (model.num_layers * model.num_directions, B, model.hidden_size)
    h = rng.standard_normal(shape).astype(dtype)
    return (h, 0.5 * rng.standard_normal(shape).astype(dtype)) if model.cell == "lstm" else h


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

    def loss_at(p, s):
        return train.loss_and_grads(model, x, y, lengths, loss, s, p, backend="numpy")[0]

    _, grads = train.loss_and_grads(model, x, y, lengths, loss, state, params, backend="numpy")
    assert set(grads) == set(params) | ({"h0", "c0"} if cell == "lstm" else {"h0"})
    eps = 1e-6
    for name in grads:
        v = rng.standard_normal(grads[name].shape)
        if name in params:
            up, down = dict(params), dict(params)
            up[name], down[name] = params[name] + eps * v, params[name] - eps * v
            plus, minus = loss_at(up, state), loss_at(down, state)
        else:
            parts = list(state) if cell == "lstm" else [state]
            which = 0 if name == "h0" else 1
            shifted = [[p.copy() for p in parts] for _ in range(2)]
            shifted[0][which] += eps * v
            shifted[1][which] -= eps * v
            as_state = (lambda s: tuple(s)) if cell == "lstm" else (lambda s: s[0])
            plus, minus = loss_at(params, as_state(shifted[0])), loss_at(params, as_state(shifted[1]))
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.vdot(grads[name], v))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), name


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reference_without_head_matches_finite_differences(cell):
    """No head: the loss applies to the recurrent outputs themselves."""
    rng = np.random.default_rng(4)
    model = rnnext.Model(cell, 2, 3, output="many_to_many", seed=1)
    x, lengths = rng.standard_normal((2, 4, 2)), np.array([4, 3])
    y = rng.standard_normal((2, 4, 3))
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, grads = train.loss_and_grads(model, x, y, lengths, "mse", params=params, backend="numpy")
    name = "weight_hh_l0"
    v = rng.standard_normal(params[name].shape)
    up, down = dict(params), dict(params)
    up[name], down[name] = params[name] + 1e-6 * v, params[name] - 1e-6 * v
    numeric = (train.loss_and_grads(model, x, y, lengths, "mse", params=up, backend="numpy")[0] -
               train.loss_and_grads(model, x, y, lengths, "mse", params=down,
                                    backend="numpy")[0]) / 2e-6
    assert numeric == pytest.approx(float(np.vdot(grads[name], v)), rel=1e-6, abs=1e-9)


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
    grads.update({"head." + name: p.grad.numpy() for name, p in head.named_parameters()})
    grads["h0"] = th0.grad.numpy()
    if cell == "lstm":
        grads["c0"] = tc0.grad.numpy()
    model = rnnext.from_torch(rnn, head=head, output=output)
    params = {name: p.detach().numpy() for name, p in rnn.named_parameters()}
    params.update({"head." + name: p.detach().numpy() for name, p in head.named_parameters()})
    return model, params, x, y, lengths, ((h0, c0) if cell == "lstm" else h0), loss.item(), grads


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("output", OUTPUTS)
def test_reference_matches_torch_autograd_float64(cell, nonlinearity, layers, bidirectional,
                                                  output):
    torch = pytest.importorskip("torch")
    model, params, x, y, lengths, state, want_loss, want = autograd(
        torch, cell, nonlinearity, layers, bidirectional, output, torch.float64)
    loss, grads = train.loss_and_grads(model, x, y, lengths, "cross_entropy", state, params,
                                       backend="numpy")
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert list(grads) == list(want)
    for name in want:
        assert relative_error(grads[name], want[name]) < 1e-10, name


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
    for name in want:
        assert relative_error(grads[name], want[name]) < 1e-4, name


# ----------------------------------------------------------------------------------------------
# the compiled core against the reference


def compiled_model(model, isa):
    """model with its compiled core built for `isa`."""
    names = [n for n in model.param_shapes() if not n.startswith("head.")]
    flat = np.concatenate([model.params[n].ravel() for n in names])
    model._core = _core.CoreModel(model.core_cell, model.input_size, model.hidden_size,
                                  model.num_layers, model.bidirectional, flat, isa)
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
        for name in want:
            assert relative_error(grads[name], want[name]) < 2e-5, (H, name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_compiled_input_gradient_matches_reference(cell):
    """rnx_backward's dLoss/dx, which Model does not use but the C API offers."""
    rng = np.random.default_rng(11)
    model = rnnext.Model(cell, 6, 9, num_layers=2, bidirectional=True, seed=3)
    B, T, LD = 3, 7, 4
    x = rng.standard_normal((B, T, 6)).astype(np.float32)
    lengths = np.array([7, 2, 5], np.int32)
    dy = rng.standard_normal((B, T, 18)).astype(np.float32)
    dh_n = rng.standard_normal((LD, B, 9)).astype(np.float32)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, _, _, trace = backward.forward_train(model.core_cell, params, x, 2, True, lengths=lengths)
    _, want_dx, _, _ = backward.backward(model.core_cell, params, trace, 2, True, dy, dh_n)

    core = model.core()
    tape = _core.CoreTape(core, B, T)
    h_n = np.empty((LD, B, 9), np.float32)
    core.forward_train(tape, None, h_n, None, x, None, None, lengths, 2)
    grads = np.empty(sum(p.size for p in model.params.values()), np.float32)
    dx = np.empty_like(x)
    core.backward(tape, grads, dx, None, None, x, dy, dh_n, None, 2)
    assert relative_error(dx, want_dx) < 2e-5


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
            assert np.array_equal(g, results[0][1][name]), name


def test_backward_needs_a_fresh_training_pass():
    model = rnnext.Model("lstm", 3, 4, seed=0)
    core = model.core()
    x = np.zeros((2, 3, 3), np.float32)
    tape = _core.CoreTape(core, 2, 3)
    grads = np.empty(sum(p.size for p in model.params.values()), np.float32)
    with pytest.raises(ValueError, match="backward"):
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    core.forward_train(tape, None, None, None, x, None, None, None, 1)
    core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    with pytest.raises(ValueError, match="backward"):  # the tape now holds gradients
        core.backward(tape, grads, None, None, None, x, None, None, None, 1)
    other = rnnext.Model("gru", 3, 4, seed=0).core()
    with pytest.raises(ValueError, match="forward_train"):  # another configuration
        other.forward_train(tape, None, None, None, x, None, None, None, 1)
    with pytest.raises(ValueError, match="forward_train"):  # more steps than the tape holds
        core.forward_train(tape, None, None, None, np.zeros((2, 4, 3), np.float32), None, None,
                           None, 1)
    with pytest.raises(ValueError, match="grads"):
        core.backward(tape, grads[:-1], None, None, None, x, None, None, None, 1)


def test_compiled_core_refuses_to_train_the_reset_before_gru():
    model = rnnext.Model("gru", 3, 4, output_size=2, seed=0, linear_before_reset=False)
    x, y = np.zeros((2, 3, 3), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match="backend: the compiled core does not train the GRU "
                                         "with the reset before the product"):
        model.loss_and_grads(x, y)
    with pytest.raises(ValueError, match="expected backend='numpy'"):
        model.fit(x, y, verbose=False)
    model.loss_and_grads(x, y, backend="numpy")
    with pytest.raises(ValueError, match="configuration"):
        _core.CoreTape(model.core(), 2, 3)


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
