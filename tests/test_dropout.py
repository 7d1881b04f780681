"""Dropout in training (fit's dropout, input_dropout and head_dropout; loss_and_grads' masks).

Outside sources: PyTorch autograd in float64 on the same weights, built as one torch module per
recurrent layer with `out * mask` between them (what nn.LSTM(num_layers=n, dropout=p) does with
the masks it draws), nn.Embedding, packed sequences for lengths and nn.Linear; central finite
differences in float64; the binomial distribution of the masks fit draws.
"""
import ctypes

import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext import layers as L
from rnnext.train import _dropout_shapes

from conftest import RnxLayer

I, V, B, T = 4, 9, 5, 6
LENGTHS = np.array([6, 2, 4, 1, 5])

MODELS = {
    "lstm": [L.LSTM(6), L.Readout("last"), L.Dense(3, "softmax")],
    "gru": [L.GRU(5), L.GRU(4), L.Readout("last"), L.Dense(3, "softmax")],
    "rnn_per_step": [L.RNN(5), L.RNN(4), L.Dense(3, "softmax")],
    "stack_bidirectional": [L.LSTM(6), L.GRU(5, direction="bidirectional"), L.RNN(4),
                            L.Readout("last"), L.Dense(3, "softmax")],
    # the C core trains a projected LSTM on its plain path
    "lstm_projections": [L.LSTM(6, proj_size=3), L.LSTM(4), L.Readout("last"),
                         L.Dense(3, "softmax")],
    "embedding": [L.Embedding(V, 4), L.LSTM(5), L.GRU(4), L.Readout("last"),
                  L.Dense(3, "softmax")],
}


def make(name, seed=0):
    layers = MODELS[name]
    return rnnext.Model(layers, input_size=None if name == "embedding" else I, seed=seed)


def batch(model, rng, with_lengths=True):
    x = (rng.integers(0, V, (B, T)) if model.spec.embedding is not None
         else rng.standard_normal((B, T, I)).astype(np.float32))
    y = rng.integers(0, 3, (B, T) if model.per_step else B)
    return x, y, (None if model.per_step or not with_lengths else LENGTHS)


def random_masks(model, rng, p=0.4, dtype=np.float32, n=B, steps=T):
    return {place: np.where(rng.random(shape) < p, 0.0, 1.0 / (1.0 - p)).astype(dtype)
            for place, shape in _dropout_shapes(model.spec, n, steps).items()}


# ----------------------------------------------------------------------------------------------
# PyTorch with the same masks


def torch_loss_and_grads(model, x, y, lengths, masks):
    """The model's loss and gradients in float64 torch: single-layer torch modules with the
    model's weights, each layer's input multiplied by its mask."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    spec = model.spec
    f64 = {name: torch.tensor(value, dtype=torch.float64) for name, value in model.params.items()}
    leaves = {}

    def mask(place, h):
        return h * torch.tensor(masks[place], dtype=torch.float64) if place in masks else h

    if spec.embedding is not None:
        table = leaves["embedding.weight"] = f64["embedding.weight"].requires_grad_()
        h = nn.functional.embedding(torch.tensor(x), table)
    else:
        h = torch.tensor(x, dtype=torch.float64)
    h = mask("input", h)
    lens = torch.tensor(np.full(B, T) if lengths is None else lengths)
    for r in spec.recurrent:
        if r.index:
            h = mask(f"layer{r.index}", h)
        options = {"proj_size": r.proj_size} if r.proj_size else {}
        module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[r.layer_type](
            r.input_size, r.units, batch_first=True, bidirectional=r.num_directions == 2,
            dtype=torch.float64, **options)
        for name, param in module.named_parameters():
            ours = name.replace("_l0", f"_l{r.index}")
            with torch.no_grad():
                param.copy_(f64[ours])
            leaves[ours] = param
        packed = nn.utils.rnn.pack_padded_sequence(h, lens, batch_first=True,
                                                   enforce_sorted=False)
        h = nn.utils.rnn.pad_packed_sequence(module(packed)[0], batch_first=True,
                                             total_length=T)[0]
    if spec.readout == "last":
        h = h[torch.arange(B), lens - 1]
    h = mask("head", h)
    dense = nn.Linear(h.shape[-1], 3, dtype=torch.float64)
    with torch.no_grad():
        dense.weight.copy_(f64["dense0.weight"])
        dense.bias.copy_(f64["dense0.bias"])
    leaves.update({"dense0.weight": dense.weight, "dense0.bias": dense.bias})
    z = dense(h)
    loss = F.cross_entropy(z.reshape(-1, 3), torch.tensor(y).reshape(-1))
    loss.backward()
    return loss.item(), {name: leaf.grad.numpy() for name, leaf in leaves.items()}


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_with_masks_match_torch(name, backend):
    rng = np.random.default_rng(1)
    model = make(name)
    x, y, lengths = batch(model, rng)
    masks = random_masks(model, rng)
    assert set(masks) >= {"input", "head"} and len(masks) == len(model.spec.recurrent) + 1
    value, grads = model.loss_and_grads(x, y, lengths, backend=backend, masks=masks)
    want_value, want = torch_loss_and_grads(model, x, y, lengths, masks)
    assert value == pytest.approx(want_value, rel=1e-5)
    assert set(grads) == set(want)
    for key in want:
        np.testing.assert_allclose(grads[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # the masks matter: without them the gradients are those of another function
    plain = torch_loss_and_grads(model, x, y, lengths, {})[1]
    assert max(np.abs(plain[k] - want[k]).max() for k in want) > 1e-3


@pytest.mark.parametrize("name", ["stack_bidirectional", "embedding"])
def test_c_backend_equals_numpy_backend_with_the_same_masks(name):
    rng = np.random.default_rng(2)
    model = make(name)
    x, y, lengths = batch(model, rng)
    masks = random_masks(model, rng, p=0.5)
    value_c, grads_c = model.loss_and_grads(x, y, lengths, backend="c", masks=masks)
    value_np, grads_np = model.loss_and_grads(x, y, lengths, backend="numpy", masks=masks)
    assert value_c == pytest.approx(value_np, rel=1e-5)
    for key in grads_np:
        np.testing.assert_allclose(grads_c[key], grads_np[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


def test_masked_gradients_do_not_depend_on_the_thread_count():
    """Work large enough for two threads: each applies the masks to its own rows."""
    rng = np.random.default_rng(11)
    model = rnnext.Model([L.LSTM(64), L.GRU(64, direction="bidirectional"), L.Readout("last"),
                          L.Dense(3, "softmax")], input_size=64, seed=0)
    n, steps = 64, 32
    x = rng.standard_normal((n, steps, 64)).astype(np.float32)
    y = rng.integers(0, 3, n)
    masks = random_masks(model, rng, p=0.5, n=n, steps=steps)
    one = model.loss_and_grads(x, y, masks=masks, n_threads=1)[1]
    two = model.loss_and_grads(x, y, masks=masks, n_threads=2)[1]
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_dropout_between_layers_does_nothing_for_one_layer(monkeypatch):
    """As nn.LSTM(num_layers=1, dropout=p): no mask is drawn."""
    model = make("lstm")
    seen = recorded_masks(monkeypatch)
    x = np.random.default_rng(12).standard_normal((4, T, I)).astype(np.float32)
    model.fit(x, np.zeros(4, int), epochs=1, verbose=False, seed=0, dropout=0.5)
    assert seen == [None]


def test_the_core_keeps_no_mask_after_a_pass_without_one():
    """The compiled tape holds its masks between passes: a pass without masks after one with
    them has the gradients of no dropout (those of the NumPy reference without masks)."""
    rng = np.random.default_rng(3)
    model = make("gru")
    x, y, lengths = batch(model, rng)
    model.loss_and_grads(x, y, lengths, backend="c", masks=random_masks(model, rng))
    _, grads = model.loss_and_grads(x, y, lengths, backend="c")
    _, want = model.loss_and_grads(x, y, lengths, backend="numpy")
    for key in want:
        np.testing.assert_allclose(grads[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_gradients_with_masks_match_finite_differences():
    rng = np.random.default_rng(4)
    model = make("stack_bidirectional")
    x, y, lengths = batch(model, rng)
    masks = random_masks(model, rng, p=0.3, dtype=np.float64)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    _, grads = rnnext.train.loss_and_grads(model, x, y, lengths, params=params, backend="numpy",
                                           masks=masks)
    eps = 1e-6
    for key, value in params.items():
        for index in [tuple(rng.integers(0, n) for n in value.shape) for _ in range(3)]:
            shifted = []
            for sign in (1, -1):
                moved = {k: v.copy() for k, v in params.items()}
                moved[key][index] += sign * eps
                shifted.append(rnnext.train.loss_and_grads(model, x, y, lengths, params=moved,
                                                           backend="numpy", masks=masks)[0])
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            assert grads[key][index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (key, index)


# ----------------------------------------------------------------------------------------------
# fit: masks drawn in training only


def recorded_masks(monkeypatch):
    """The dropout multipliers of every training batch fit runs, in order."""
    seen = []
    real = rnnext.train._batch

    def spy(*args, **kwargs):
        if kwargs.get("train"):
            seen.append(kwargs.get("dropout"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rnnext.train, "_batch", spy)
    return seen


def test_fit_draws_fresh_masks_at_the_rates(monkeypatch):
    rng = np.random.default_rng(5)
    model = make("stack_bidirectional")
    x = rng.standard_normal((40, T, I)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    seen = recorded_masks(monkeypatch)
    rates = {"dropout": 0.3, "input_dropout": 0.5, "head_dropout": 0.2}
    model.fit(x, y, epochs=2, batch_size=20, verbose=False, seed=0, **rates)
    assert len(seen) == 4
    kinds = {"input": "input_dropout", "layer1": "dropout", "layer2": "dropout",
             "head": "head_dropout"}
    for place, kind in kinds.items():
        p = rates[kind]
        values = np.concatenate([m[place].ravel() for m in seen])
        assert set(np.unique(values)) == {np.float32(0), np.float32(1 / (1 - p))}
        # the zeros' count is binomial(n, p): 5 standard deviations either side
        n = values.size
        assert abs((values == 0).sum() - n * p) < 5 * np.sqrt(n * p * (1 - p)), place
        assert seen[0][place].shape == (20,) + _dropout_shapes(model.spec, 20, T)[place][1:]
    # every batch of every epoch draws its own
    assert not np.array_equal(seen[0]["layer1"], seen[2]["layer1"])
    assert not np.array_equal(seen[0]["layer1"], seen[1]["layer1"])


def test_fit_draws_masks_per_bptt_chunk(monkeypatch):
    rng = np.random.default_rng(6)
    model = make("rnn_per_step")
    x = rng.standard_normal((4, 10, I)).astype(np.float32)
    y = rng.integers(0, 3, (4, 10))
    seen = recorded_masks(monkeypatch)
    model.fit(x, y, epochs=1, batch_size=4, bptt=4, verbose=False, seed=0, dropout=0.5)
    assert [m["layer1"].shape for m in seen] == [(4, 4, 5), (4, 4, 5), (4, 2, 5)]
    assert all(set(m) == {"layer1"} for m in seen)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_validation_and_evaluate_see_no_dropout(backend, monkeypatch):
    rng = np.random.default_rng(7)
    model = make("embedding")
    x, y = rng.integers(0, V, (16, T)), rng.integers(0, 3, 16)
    seen = recorded_masks(monkeypatch)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=False, seed=1, dropout=0.5,
                        input_dropout=0.5, head_dropout=0.5, validation_data=(x, y),
                        backend=backend)
    assert len(seen) == 4 and all(m is not None for m in seen)
    # validation after the last update is evaluate's loss, and that is the loss of predict
    evaluated = model.evaluate(x, y, backend=backend)
    assert history["val_loss"][-1] == pytest.approx(evaluated["loss"], rel=1e-6)
    probs = model.predict(x)
    assert evaluated["loss"] == pytest.approx(-np.log(probs[np.arange(16), y]).mean(), rel=1e-5)
    # with dropout the training loss of the same parameters is another number
    with_masks = model.loss_and_grads(x, y, backend=backend,
                                      masks=random_masks(model, rng, p=0.5, n=16))[0]
    assert abs(with_masks - evaluated["loss"]) > 1e-3


def fit_history(backend, seed, **rates):
    rng = np.random.default_rng(8)
    model = make("stack_bidirectional", seed=2)
    x = rng.standard_normal((24, T, I)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    lengths = rng.integers(1, T + 1, 24)
    return model.fit(x, y, lengths, epochs=3, batch_size=8, verbose=False, seed=seed,
                     backend=backend, **rates)


def test_fit_with_dropout_is_deterministic_and_the_same_on_both_backends():
    rates = dict(dropout=0.3, input_dropout=0.2, head_dropout=0.4)
    c = fit_history("c", 3, **rates)
    assert c == fit_history("c", 3, **rates)
    numpy = fit_history("numpy", 3, **rates)
    np.testing.assert_allclose(c["loss"], numpy["loss"], rtol=1e-4)
    np.testing.assert_allclose(c["accuracy"], numpy["accuracy"])
    assert c != fit_history("c", 4, **rates)
    # zero rates are no dropout at all
    assert fit_history("c", 3, dropout=0.0) == fit_history("c", 3)
    assert fit_history("c", 3, **rates) != fit_history("c", 3)


# ----------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("name", ["dropout", "input_dropout", "head_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_fit_refuses_bad_rates(name, value):
    model = make("lstm")
    x = np.zeros((2, T, I), np.float32)
    with pytest.raises(ValueError, match=rf"{name}: expected a number in \[0, 1\), got"):
        model.fit(x, np.zeros(2, int), epochs=1, verbose=False, **{name: value})


def test_fit_refuses_head_dropout_without_dense_layers():
    model = rnnext.Model([L.GRU(3)], input_size=I)
    with pytest.raises(ValueError, match="head_dropout: expected 0 for a model without dense"):
        model.fit(np.zeros((2, T, I), np.float32), np.zeros((2, T, 3), np.float32),
                  loss="mse", epochs=1, verbose=False, head_dropout=0.5)


@pytest.mark.parametrize("masks,error,message", [
    ([1.0], TypeError, "masks: expected a dict"),
    ({"layer2": np.ones((B, T, 5))}, ValueError, r"masks: expected keys among \['input', "
                                                 r"'layer1', 'head'\], got \['layer2'\]"),
    ({"input": np.ones((B, T, 5))}, ValueError, r"masks\['input'\]: expected a float array of "
                                               r"shape \(5, 6, 4\), got float64 \(5, 6, 5\)"),
    ({"head": np.ones((B, 3), int)}, ValueError, r"masks\['head'\]: expected a float array of "
                                                 r"shape \(5, 4\), got int64 \(5, 3\)"),
])
def test_loss_and_grads_refuses_bad_masks(masks, error, message):
    model = make("gru")
    rng = np.random.default_rng(9)
    x, y, lengths = batch(model, rng)
    with pytest.raises(error, match=message):
        model.loss_and_grads(x, y, lengths, masks=masks)


def test_masks_of_an_unbatched_sequence_have_no_batch_axis():
    rng = np.random.default_rng(10)
    model = make("gru")
    x, y, _ = batch(model, rng)
    masks = random_masks(model, rng)
    one = {place: m[0] for place, m in masks.items()}
    for backend in ("c", "numpy"):
        value, grads = model.loss_and_grads(x[0], y[0], backend=backend, masks=one)
        want_value, want = model.loss_and_grads(x[:1], y[:1], backend=backend,
                                                masks={p: m[:1] for p, m in masks.items()})
        assert value == want_value
        for key in want:
            np.testing.assert_array_equal(grads[key], want[key])
    with pytest.raises(ValueError, match=r"masks\['layer1'\]: expected a float array of shape "
                                         r"\(6, 5\)"):
        model.loss_and_grads(x[0], y[0], masks={"layer1": masks["layer1"]})


def test_the_core_refuses_bad_dropout_arguments():
    model = make("gru")
    core = model.core()
    tape = _core.CoreTape(core, 3, T)
    with pytest.raises(ValueError, match=r"layer: expected a recurrent layer in \[1, 1\], got 0"):
        tape.set_dropout(0, None)
    with pytest.raises(ValueError, match=r"layer: expected a recurrent layer in \[1, 1\], got 2"):
        tape.set_dropout(2, None)
    with pytest.raises(ValueError, match=r"mask: expected a \(B, T, 5\) array with B <= 3"):
        tape.set_dropout(1, np.ones((4, T, 5), np.float32))
    with pytest.raises(ValueError, match=r"mask: expected shape \(3, 6, 5\), got \(3, 6, 4\)"):
        tape.set_dropout(1, np.ones((3, T, 4), np.float32))
    tape.set_dropout(1, np.ones((2, T, 5), np.float32))
    x = np.zeros((3, T, I), np.float32)
    with pytest.raises(ValueError, match="dropout masks of this B and T"):
        core.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    tape.set_dropout(1, None)
    core.forward_train(tape, None, None, None, x, None, None, None, None, 1)


def test_the_c_call_returns_status_codes():
    """rnx_tape_set_dropout through ctypes on the extension's exported symbols: NULL and
    out-of-range arguments, and a forward pass of another B than the mask's."""
    lib = ctypes.CDLL(_core.__file__)
    ptr, i = ctypes.c_void_p, ctypes.c_int
    lib.rnx_recurrent_layer.restype = RnxLayer
    lib.rnx_recurrent_layer.argtypes = [i, i, i, i]
    lib.rnx_param_count.argtypes = [ctypes.POINTER(RnxLayer), i, ctypes.POINTER(ctypes.c_size_t)]
    lib.rnx_model_create.argtypes = [ctypes.POINTER(ptr), ctypes.POINTER(RnxLayer), i, i, ptr]
    lib.rnx_model_free.argtypes = [ptr]
    lib.rnx_tape_create.argtypes = [ctypes.POINTER(ptr), ptr, i, i]
    lib.rnx_tape_free.argtypes = [ptr]
    lib.rnx_tape_set_dropout.argtypes = [ptr, i, ptr, i, i]
    lib.rnx_forward_train.argtypes = [ptr] * 10 + [i, i, i]
    lib.rnx_backward.argtypes = [ptr] * 10 + [i]
    RNX_OK, NULL_ARGUMENT, BAD_ARGUMENT = 0, 1, 3  # rnnext.h: "The numbers are stable."
    GRU = _core.CELLS["gru"]
    layers = (RnxLayer * 2)(lib.rnx_recurrent_layer(GRU, 2, 3, 0),
                         lib.rnx_recurrent_layer(GRU, 3, 2, 0))
    count = ctypes.c_size_t()
    assert lib.rnx_param_count(layers, 2, ctypes.byref(count)) == RNX_OK
    params = np.full(count.value, 0.1, np.float32)
    model, tape = ptr(), ptr()
    assert lib.rnx_model_create(ctypes.byref(model), layers, 2, 0, params.ctypes.data) == RNX_OK
    try:
        assert lib.rnx_tape_create(ctypes.byref(tape), model, 2, 4) == RNX_OK
        mask = np.full((2, 4, 3), 2.0, np.float32)
        assert lib.rnx_tape_set_dropout(None, 1, mask.ctypes.data, 2, 4) == NULL_ARGUMENT
        for layer, B, T in [(0, 2, 4), (2, 2, 4), (-1, 2, 4), (1, 3, 4), (1, 2, 5), (1, 0, 4)]:
            assert lib.rnx_tape_set_dropout(tape, layer, mask.ctypes.data, B, T) == BAD_ARGUMENT
        assert lib.rnx_tape_set_dropout(tape, 1, mask.ctypes.data, 1, 4) == RNX_OK
        x = np.ones((2, 4, 2), np.float32)
        run = [model, tape, None, None, None, x.ctypes.data, None, None, None, None]
        assert lib.rnx_forward_train(*run, 2, 4, 1) == BAD_ARGUMENT
        assert lib.rnx_forward_train(*run, 1, 4, 1) == RNX_OK
        # a pass recorded with a mask has no backward once the mask is replaced or removed
        grads = np.empty(count.value, np.float32)
        back = [model, tape, grads.ctypes.data] + [None] * 3 + [x.ctypes.data] + [None] * 3
        assert lib.rnx_tape_set_dropout(tape, 1, None, 0, 0) == RNX_OK
        assert lib.rnx_backward(*back, 1) == BAD_ARGUMENT
        assert lib.rnx_forward_train(*run, 2, 4, 1) == RNX_OK
        assert lib.rnx_backward(*back, 1) == RNX_OK
    finally:
        lib.rnx_tape_free(tape)
        lib.rnx_model_free(model)
