"""Losses, optimizers, Model.fit / evaluate / apply_grads and truncated BPTT.

Outside sources: torch.nn.functional's losses and their autograd gradients, torch.optim's SGD and
Adam and torch.nn.utils' clipping, and, for fit, the same steps written out by hand with
loss_and_grads and the forward pass.
"""
import io
import textwrap

import numpy as np
import pytest

import rnnext
from conftest import run_python
from rnnext import layers as L
from rnnext import losses, optim


# ----------------------------------------------------------------------------------------------
# losses against torch


@pytest.mark.parametrize("name,activation", [("cross_entropy", None),
                                             ("binary_cross_entropy", None),
                                             ("mse", None), ("mse", "softmax"),
                                             ("mse", "sigmoid")])
def test_losses_match_torch(name, activation):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 4)) * 3
    target = (rng.integers(0, 4, 6) if name == "cross_entropy" else
              rng.uniform(0, 1, (6, 4)) if name == "binary_cross_entropy" else
              rng.standard_normal((6, 4)))
    zt = torch.tensor(z, requires_grad=True)
    if name == "cross_entropy":
        ref = F.cross_entropy(zt, torch.tensor(target))
    elif name == "binary_cross_entropy":
        ref = F.binary_cross_entropy_with_logits(zt, torch.tensor(target))
    else:
        out = {None: zt, "softmax": torch.softmax(zt, -1), "sigmoid": torch.sigmoid(zt)}[activation]
        ref = F.mse_loss(out, torch.tensor(target))
    ref.backward()
    value, dz = losses.loss_and_grad(name, z, target, activation)
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_binary_cross_entropy_is_finite_at_large_logits():
    torch = pytest.importorskip("torch")
    z = np.array([[80.0, -80.0, 0.0]])
    y = np.array([[0.0, 1.0, 1.0]])
    value, _ = losses.binary_cross_entropy(z, y)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(y))
    assert value == pytest.approx(ref.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# optimizers and clipping against torch


def torch_updates(torch, make, grads_seq, start):
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    opt = make(list(params.values()))
    for grads in grads_seq:
        opt.zero_grad()
        for k, p in params.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
    return {k: p.detach().numpy() for k, p in params.items()}


@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum", "adam"])
def test_optimizers_match_torch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    start = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    grads_seq = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(4)]
    if kind == "adam":
        ours, make = optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6), \
            lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    else:
        momentum = 0.9 if kind == "sgd_momentum" else 0.0
        ours, make = optim.SGD(lr=0.1, momentum=momentum), \
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum)
    params = {k: v.copy() for k, v in start.items()}
    for grads in grads_seq:
        ours.step(params, grads)
    want = torch_updates(torch, make, grads_seq, start)
    for k in params:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-12, atol=1e-14)


def test_clipping_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = {"a": rng.standard_normal((3, 4)) * 2, "b": rng.standard_normal(5)}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    norm = torch.nn.utils.clip_grad_norm_(tensors, 1.5)
    ours = {k: v.copy() for k, v in grads.items()}
    assert optim.clip_by_norm(ours, 1.5) == pytest.approx(norm.item(), rel=1e-12)
    for t, g in zip(tensors, ours.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_(tensors, 0.5)
    ours = {k: v.copy() for k, v in grads.items()}
    optim.clip_by_value(ours, 0.5)
    for t, g in zip(tensors, ours.values()):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_clip_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4])}
    assert optim.clip_by_norm(grads, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], [0.3, 0.4])


# ----------------------------------------------------------------------------------------------
# fit, evaluate, apply_grads


def parity_task(rng, B=48, T=6, I=4):
    """Many-to-one: is the sum of the first feature over the valid steps positive?"""
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(2, T + 1, size=B)
    y = np.array([int(x[b, :lengths[b], 0].sum() > 0) for b in range(B)])
    return x, y, lengths


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_lowers_the_loss(backend):
    rng = np.random.default_rng(3)
    x, y, lengths = parity_task(rng)
    model = rnnext.Model("gru", 4, 16, output_size=2, activation="softmax", seed=0,
                         backend=backend)
    before = model.evaluate(x, y, lengths)
    history = model.fit(x, y, lengths, epochs=15, batch_size=16, lr=0.02, seed=0,
                        verbose=False)
    after = model.evaluate(x, y, lengths)
    assert list(history) == ["loss", "accuracy", "lr"] and len(history["loss"]) == 15
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > before["accuracy"]


def test_compiled_and_numpy_training_agree():
    """A few epochs of Adam on each backend from the same start: the same parameters, to the
    float32 tolerance (the backends' gradients differ by rounding only)."""
    rng = np.random.default_rng(4)
    x, y, lengths = parity_task(rng, B=16)
    models = [rnnext.Model("lstm", 4, 8, output_size=2, seed=1, backend=b) for b in ("c", "numpy")]
    for m in models:
        m.fit(x, y, lengths, epochs=3, batch_size=8, lr=0.01, clip=1.0, seed=2, verbose=False)
    for name in models[0].params:
        np.testing.assert_allclose(models[0].params[name], models[1].params[name], rtol=1e-4,
                                   atol=1e-5)


def test_fit_is_reproducible_with_a_seed():
    rng = np.random.default_rng(5)
    x, y, lengths = parity_task(rng, B=20)
    runs = []
    for seed in (7, 7, 8):
        m = rnnext.Model("rnn", 4, 8, output_size=2, seed=0)
        m.fit(x, y, lengths, epochs=2, batch_size=4, optimizer="sgd", lr=0.1, seed=seed,
              verbose=False)
        runs.append(m.params)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_fit_steps_equal_hand_written_steps():
    """fit without shuffling is loss_and_grads, clipping by value and SGD, batch after batch."""
    rng = np.random.default_rng(6)
    x, y, lengths = parity_task(rng, B=10)
    fitted = rnnext.Model("gru", 4, 6, output_size=2, seed=3)
    by_hand = rnnext.Model("gru", 4, 6, output_size=2, seed=3)
    fitted.fit(x, y, lengths, epochs=1, batch_size=4, optimizer=optim.SGD(lr=0.5, momentum=0.5),
               clip=("value", 0.01), shuffle=False, verbose=False)
    opt = optim.SGD(lr=0.5, momentum=0.5)
    for i in range(0, 10, 4):
        _, grads = by_hand.loss_and_grads(x[i:i + 4], y[i:i + 4], lengths[i:i + 4])
        np.testing.assert_array_less(0.01, max(np.abs(g).max() for g in grads.values()))
        grads = {k: np.clip(g, -0.01, 0.01) for k, g in grads.items()}
        opt.step(by_hand.params, grads)
        by_hand._params_changed()
    for k in fitted.params:
        np.testing.assert_array_equal(fitted.params[k], by_hand.params[k])


def test_truncated_bptt_carries_the_state():
    """fit with bptt: each chunk starts from the state the previous chunk ended in (computed
    before that chunk's update), and gradients stop at the chunk's start."""
    rng = np.random.default_rng(7)
    B, T, V = 3, 12, 5
    ids = rng.integers(0, V, size=(B, T + 1))
    x = np.eye(V, dtype=np.float32)[ids[:, :-1]]
    y = ids[:, 1:]
    fitted = rnnext.Model("lstm", V, 7, output_size=V, output="many_to_many", seed=2)
    by_hand = rnnext.Model("lstm", V, 7, output_size=V, output="many_to_many", seed=2)
    fitted.fit(x, y, epochs=1, batch_size=B, optimizer="sgd", lr=0.3, bptt=5, shuffle=False,
               verbose=False)
    opt, state = optim.SGD(lr=0.3), None
    for t0 in (0, 5, 10):
        chunk = slice(t0, min(t0 + 5, T))
        _, next_state = by_hand.forward(x[:, chunk], state=state)
        _, grads = by_hand.loss_and_grads(x[:, chunk], y[:, chunk], state=state)
        by_hand.apply_grads(grads, opt)
        state = next_state
    for k in fitted.params:
        np.testing.assert_allclose(fitted.params[k], by_hand.params[k], rtol=1e-6, atol=1e-7)
    loss = fitted.evaluate(x, y, bptt=5)["loss"]
    assert loss == pytest.approx(np.mean([fitted.evaluate(x[i:i + 1], y[i:i + 1],
                                                          bptt=5)["loss"] for i in range(B)]))


def test_evaluate_matches_a_hand_computed_loss_and_accuracy():
    rng = np.random.default_rng(8)
    x, y, lengths = parity_task(rng, B=9)
    model = rnnext.Model("rnn", 4, 5, output_size=2, activation="softmax", seed=4)
    probs = model.predict(x, lengths=lengths)
    result = model.evaluate(x, y, lengths, batch_size=4)
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(9), y])), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    one_hot = np.eye(2)[y]
    assert model.evaluate(x, one_hot, lengths, loss="mse")["loss"] == pytest.approx(
        np.mean((probs - one_hot) ** 2), rel=1e-5)


def test_unbatched_input_matches_a_batch_of_one():
    rng = np.random.default_rng(9)
    model = rnnext.Model("gru", 3, 4, output_size=2, seed=0)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h0 = rng.standard_normal((1, 4)).astype(np.float32)
    loss, grads = model.loss_and_grads(x, 1, state=h0)
    loss_b, grads_b = model.loss_and_grads(x[None], np.array([1]), state=h0[:, None])
    assert loss == loss_b
    assert grads["state"].shape == (1, 4)
    np.testing.assert_array_equal(grads["state"], grads_b["state"][:, 0])
    np.testing.assert_array_equal(grads["weight_hh_l0"], grads_b["weight_hh_l0"])


# ----------------------------------------------------------------------------------------------
# layer lists: embedding, bidirectional layers of different cells, readouts, dense chains


def order_task(rng, B=48, T=7, V=6):
    """Many-to-one on token ids, Keras-style pre-padded with id 0: does id 2 come before id 3
    (the first of each, among the valid steps)? Order matters, not only which ids occur."""
    ids = rng.integers(1, V, size=(B, T))
    pad = rng.integers(0, T - 2, size=B)
    for b in range(B):
        ids[b, :pad[b]] = 0
        ids[b, rng.choice(np.arange(pad[b], T), 2, replace=False)] = rng.permutation([2, 3])
    y = np.array([int(list(row).index(2) < list(row).index(3)) for row in ids])
    return ids, y


def order_model(backend, seed=0):
    return rnnext.Model([L.Embedding(6, 5, padding_idx=0, mask_zero=True),
                         L.LSTM(8, proj_size=4, peepholes=True, direction="bidirectional"),
                         L.GRU(6, direction="bidirectional", merge="sum"),
                         L.Readout("final"), L.Dense(8, "tanh"), L.Dense(2, "softmax")],
                        seed=seed, backend=backend)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_on_a_layer_list_lowers_the_loss(backend):
    ids, y = order_task(np.random.default_rng(11))
    model = order_model(backend)
    before = model.evaluate(ids, y)
    history = model.fit(ids, y, epochs=12, batch_size=12, lr=0.02, seed=0, verbose=False)
    after = model.evaluate(ids, y)
    assert list(history) == ["loss", "accuracy", "lr"] and len(history["loss"]) == 12
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > before["accuracy"]


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_on_a_layer_list_equals_hand_written_steps(backend):
    """fit without shuffling on a layer list is loss_and_grads, clipping by the global norm and
    Adam, batch after batch: the same parameters bit for bit."""
    ids, y = order_task(np.random.default_rng(12), B=10)
    fitted, by_hand = order_model(backend, seed=3), order_model(backend, seed=3)
    fitted.fit(ids, y, epochs=2, batch_size=4, optimizer=optim.Adam(lr=0.01), clip=0.05,
               shuffle=False, verbose=False)
    opt, norms = optim.Adam(lr=0.01), []
    for _ in range(2):
        for i in range(0, 10, 4):
            _, grads = by_hand.loss_and_grads(ids[i:i + 4], y[i:i + 4])
            assert set(grads) == set(by_hand.params)
            norms.append(optim.clip_by_norm(grads, 0.05))
            opt.step(by_hand.params, grads)
            by_hand.set_params(by_hand.params)
    assert max(norms) > 0.05 > min(norms)  # the clipping acts, and not always
    for k in fitted.params:
        np.testing.assert_array_equal(fitted.params[k], by_hand.params[k], err_msg=k)


def test_compiled_and_numpy_training_agree_on_a_layer_list():
    ids, y = order_task(np.random.default_rng(13), B=16)
    models = [order_model(b, seed=1) for b in ("c", "numpy")]
    for m in models:
        m.fit(ids, y, epochs=3, batch_size=8, lr=0.01, clip=1.0, seed=2, verbose=False)
    for name in models[0].params:
        np.testing.assert_allclose(models[0].params[name], models[1].params[name], rtol=1e-4,
                                   atol=1e-5, err_msg=name)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_truncated_bptt_carries_a_list_of_states(backend):
    """A per-step layer list whose layers differ (states are a list, one entry per layer): fit
    with bptt is forward for the carried state and loss_and_grads per chunk, by hand."""
    rng = np.random.default_rng(14)
    B, T, V = 3, 11, 5
    ids = rng.integers(0, V, size=(B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def make():
        return rnnext.Model([L.Embedding(V, 4), L.LSTM(7, proj_size=3), L.GRU(5),
                             L.Dense(6, "relu"), L.Dense(V, "softmax")], seed=2, backend=backend)

    fitted, by_hand = make(), make()
    assert not fitted.spec.uniform and fitted.per_step
    fitted.fit(x, y, epochs=1, batch_size=B, optimizer="sgd", lr=0.3, bptt=4, shuffle=False,
               verbose=False)
    opt, state = optim.SGD(lr=0.3), None
    for t0 in (0, 4, 8):
        chunk = slice(t0, min(t0 + 4, T))
        _, next_state = by_hand.forward(x[:, chunk], state=state)
        assert isinstance(next_state, list) and len(next_state) == 2
        _, grads = by_hand.loss_and_grads(x[:, chunk], y[:, chunk], state=state)
        assert (state is None) == ("state" not in grads)
        by_hand.apply_grads(grads, opt)
        state = next_state
    for k in fitted.params:
        np.testing.assert_allclose(fitted.params[k], by_hand.params[k], rtol=1e-6, atol=1e-7,
                                   err_msg=k)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fit_with_a_mask_equals_hand_written_steps(backend):
    """Keras-style masks (leading padding, holes) through fit in minibatches: loss_and_grads
    with each batch's rows of the mask, then SGD, by hand."""
    rng = np.random.default_rng(16)
    B, T = 9, 6
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    mask = rng.uniform(size=(B, T)) < 0.75
    mask[:, -1] = True
    mask[0, :3] = False
    y = rng.integers(0, 4, size=(B, T))

    def make():
        return rnnext.Model([L.GRU(5, direction="bidirectional", merge="ave"),
                             L.LSTM(4, direction="reverse"), L.Dense(4, "softmax")],
                            input_size=3, seed=5, backend=backend)

    fitted, by_hand = make(), make()
    fitted.fit(x, y, mask=mask, epochs=1, batch_size=4, optimizer="sgd", lr=0.5, shuffle=False,
               verbose=False)
    opt = optim.SGD(lr=0.5)
    for i in range(0, B, 4):
        _, grads = by_hand.loss_and_grads(x[i:i + 4], y[i:i + 4], mask=mask[i:i + 4])
        by_hand.apply_grads(grads, opt)
    for k in fitted.params:
        np.testing.assert_array_equal(fitted.params[k], by_hand.params[k], err_msg=k)
    assert not all(np.array_equal(fitted.params[k], make().params[k]) for k in fitted.params)


def test_evaluate_a_layer_list_per_step_with_a_mask():
    """Per-step losses average over the valid (unmasked) steps only."""
    rng = np.random.default_rng(15)
    model = rnnext.Model([L.GRU(5, direction="bidirectional"), L.Dense(3, "softmax")],
                         input_size=4, seed=0)
    x = rng.standard_normal((4, 6, 4)).astype(np.float32)
    mask = rng.uniform(size=(4, 6)) < 0.7
    mask[:, 0] = True
    y = rng.integers(0, 3, size=(4, 6))
    probs = model.predict(x, mask=mask)
    want = -np.mean(np.log(probs[mask][np.arange(mask.sum()), y[mask]]))
    for backend in ("c", "numpy"):
        result = model.evaluate(x, y, mask=mask, batch_size=3, backend=backend)
        assert result["loss"] == pytest.approx(want, rel=1e-5)
        assert result["accuracy"] == pytest.approx(np.mean(probs[mask].argmax(1) == y[mask]))


def test_progress_bar_on_a_terminal_and_lines_elsewhere(capsys, monkeypatch):
    rng = np.random.default_rng(10)
    x, y, lengths = parity_task(rng, B=8)
    model = rnnext.Model("rnn", 4, 4, output_size=2, seed=0)
    model.fit(x, y, lengths, epochs=2, batch_size=4, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stdout", term)
    model.fit(x, y, lengths, epochs=1, batch_size=4, verbose=True)
    assert "\r" in term.getvalue() and "2/2" in term.getvalue() and "[" in term.getvalue()
    monkeypatch.undo()
    model.fit(x, y, lengths, epochs=1, verbose=False)
    model.fit(x, y, lengths, epochs=1, verbose=0)             # Keras's 0 and 1
    assert capsys.readouterr().out == ""
    model.fit(x, y, lengths, epochs=1, verbose=1)
    assert capsys.readouterr().out.startswith("epoch 1/1")


# ----------------------------------------------------------------------------------------------
# errors name the argument, the expected and the received


@pytest.fixture
def small():
    model = rnnext.Model("lstm", 3, 4, output_size=2, activation="softmax", seed=0)
    return model, np.zeros((2, 5, 3), np.float32), np.array([0, 1])


def test_bad_loss_and_targets_are_refused(small):
    model, x, y = small
    with pytest.raises(ValueError, match="loss: expected one of"):
        model.loss_and_grads(x, y, loss="hinge")
    with pytest.raises(ValueError, match="loss: 'binary_cross_entropy' expects a model whose "
                                         "last dense activation is in"):
        model.loss_and_grads(x, np.zeros((2, 2)), loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"y: expected shape \(2,\).*got \(2, 5\)"):
        model.loss_and_grads(x, np.zeros((2, 5), int))
    with pytest.raises(TypeError, match="y: expected integer class indices.*float64"):
        model.loss_and_grads(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"y: expected class indices in \[0, 2\), got min 0 "
                                         "and max 2"):
        model.loss_and_grads(x, np.array([0, 2]))
    with pytest.raises(ValueError, match="float64 parameters need backend='numpy'"):
        rnnext.train.loss_and_grads(model, x, y, params={k: v.astype(np.float64) for k, v in
                                                         model.params.items()}, backend="c")


def test_bad_fit_arguments_are_refused(small):
    model, x, y = small
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        model.fit(x, y, optimizer="rmsprop", verbose=False)
    with pytest.raises(TypeError, match="clip: expected None, a number"):
        model.fit(x, y, clip="big", verbose=False)
    with pytest.raises(ValueError, match="clip: expected a finite number > 0, got -1"):
        model.fit(x, y, clip=-1, verbose=False)
    with pytest.raises(ValueError, match="bptt: truncated backpropagation needs a model with an "
                                         "output per step, got readout 'last'"):
        model.fit(x, y, bptt=2, verbose=False)
    with pytest.raises(ValueError, match=r"epochs: expected an int in \[1, 16777216\], got 0"):
        model.fit(x, y, epochs=0, verbose=False)
    with pytest.raises(TypeError, match="validation_data: expected"):
        model.fit(x, y, validation_data=x, verbose=False)
    with pytest.raises(ValueError, match="lr: expected None when optimizer is an instance"):
        model.fit(x, y, optimizer=optim.SGD(), lr=0.1, verbose=False)
    with pytest.raises(TypeError, match="optimizer: expected an rnnext.optim.SGD, Adam or "
                                        "AdamW, got str"):
        model.apply_grads({}, "sgd")
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\), got 1.5"):
        optim.SGD(momentum=1.5)


INF, NAN = float("inf"), float("nan")
LENGTHS = np.array([5, 4])


def fit(**kwargs):
    return lambda model, x, y: model.fit(x, y, **{"verbose": False, **kwargs})


# (id, a call on a per-step GRU model, x (2, 5, 3), y (2, 5), exception, regex of the message)
BAD_TRAINING_CALLS = [
    ("lr_inf", fit(lr=INF), ValueError, r"^lr: expected a finite number > 0, got inf$"),
    ("lr_huge_int", fit(lr=10 ** 400), ValueError, r"^lr: expected a finite number > 0, got 1000"),
    ("lr_nan", fit(optimizer="sgd", lr=NAN), ValueError, r"^lr: .*finite.*got nan$"),
    ("lr_zero", fit(lr=0), ValueError, r"^lr: .*> 0, got 0$"),
    ("lr_negative", fit(lr=-0.1), ValueError, r"^lr: .*> 0, got -0.1$"),
    ("lr_str", fit(lr="0.1"), TypeError, r"^lr: expected a number, got str$"),
    ("lr_bool", fit(lr=True), TypeError, r"^lr: expected a number, got bool$"),
    ("valid_baseline", fit(optimizer=optim.Adam(lr=1e-3)), None, None),  # changes the params
    ("shuffle_str", fit(shuffle="no"), TypeError, r"^shuffle: expected a bool, got str 'no'$"),
    ("shuffle_int", fit(shuffle=0), TypeError, r"^shuffle: expected a bool, got int 0$"),
    ("shuffle_none", fit(shuffle=None), TypeError, r"^shuffle: expected a bool, got NoneType"),
    ("verbose_int", fit(verbose=2), TypeError, r"^verbose: expected a bool, got int 2$"),
    ("verbose_str", fit(verbose="yes"), TypeError, r"^verbose: expected a bool, got str"),
    ("clip_inf", fit(clip=INF), ValueError, r"^clip: expected a finite number > 0, got inf$"),
    ("clip_value_inf", fit(clip=("value", INF)), ValueError, r"^clip\[1\] \(value\): .*got inf$"),
    ("clip_norm_nan", fit(clip=("norm", NAN)), ValueError, r"^clip\[1\] \(norm\): .*got nan$"),
    ("epochs_float", fit(epochs=2.0), TypeError, r"^epochs: expected an int, got float$"),
    ("batch_size_bool", fit(batch_size=True), TypeError, r"^batch_size: expected an int, got bool"),
    ("bptt_zero", fit(bptt=0), ValueError, r"^bptt: expected an int in \[1, 16777216\], got 0$"),
    ("n_threads_str", fit(n_threads="2"), TypeError, r"^n_threads: expected an int or None, got"),
    ("n_threads_zero", fit(n_threads=0), ValueError, r"^n_threads: .*got 0$"),
    ("validation_one_item", fit(validation_data=(np.zeros((2, 5, 3)),)), TypeError,
     r"^validation_data: expected \(x, y\) or \(x, y, lengths\), got tuple of 1$"),
    ("validation_lengths", fit(validation_data=(np.zeros((2, 5, 3)), np.zeros((2, 5), int),
                                                [0, 5])), ValueError,
     r"^validation_data: lengths: expected values in \[1, 5\] .*min 0"),
    ("validation_lengths_with_bptt", fit(bptt=2, validation_data=(np.zeros((2, 5, 3)),
                                                                  np.zeros((2, 5), int), LENGTHS)),
     ValueError, r"^validation_data: lengths: expected None with bptt"),
    ("validation_x", fit(validation_data=(np.zeros((2, 5, 4)), np.zeros((2, 5), int))), ValueError,
     r"^validation_data: x: expected 3 features"),
    ("adam_eps_inf", lambda m, x, y: m.fit(x, y, optimizer=optim.Adam(eps=INF)), ValueError,
     r"^eps: expected a finite number > 0, got inf$"),
    ("sgd_lr_inf", lambda m, x, y: m.fit(x, y, optimizer=optim.SGD(lr=INF)), ValueError,
     r"^lr: expected a finite number > 0, got inf$"),
    ("evaluate_n_threads", lambda m, x, y: m.evaluate(x, y, n_threads=1.5), TypeError,
     r"^n_threads: expected an int or None, got float"),
    ("loss_and_grads_n_threads", lambda m, x, y: m.loss_and_grads(x, y, n_threads="all"),
     TypeError, r"^n_threads: expected an int or None, got str"),
    ("apply_grads_list", lambda m, x, y: m.apply_grads([], optim.SGD()), TypeError,
     r"^grads: expected a dict of arrays by parameter name, got list$"),
    ("apply_grads_complex", lambda m, x, y: m.apply_grads(
        {k: g.astype(complex) for k, g in m.loss_and_grads(x, y)[1].items()}, optim.SGD()),
     TypeError, r"^grads\['weight_ih_l0'\]: expected an array of real numbers .*complex128$"),
    ("apply_grads_strings", lambda m, x, y: m.apply_grads(
        {k: np.full(p.shape, "1") for k, p in m.params.items()}, optim.SGD()),
     TypeError, r"^grads\['weight_ih_l0'\]: expected an array of real numbers .*<U1$"),
    ("apply_grads_clip_inf", lambda m, x, y: m.apply_grads(m.loss_and_grads(x, y)[1],
                                                           optim.SGD(), clip=INF),
     ValueError, r"^clip: expected a finite number > 0, got inf$"),
]


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("call,exc,match", [c[1:] for c in BAD_TRAINING_CALLS],
                         ids=[c[0] for c in BAD_TRAINING_CALLS])
def test_bad_training_arguments_are_refused_before_any_update(call, exc, match, backend):
    """Every argument of fit, evaluate, loss_and_grads and apply_grads is checked, on both
    backends, before anything changes: the error names it and the parameters stay as they were
    (the valid baseline changes them, so the comparison can fail)."""
    model = rnnext.Model("gru", 3, 4, output_size=2, output="many_to_many", seed=0,
                         backend=backend)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    y = np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 1]])
    before = {k: p.copy() for k, p in model.params.items()}
    if exc is None:
        call(model, x, y)
        assert any(not np.array_equal(model.params[k], p) for k, p in before.items())
        return
    with pytest.raises(exc, match=match):
        call(model, x, y)
    for k, p in before.items():
        np.testing.assert_array_equal(model.params[k], p, err_msg=k)


FORKED_TRAINING = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import rnnext

    model = rnnext.Model("lstm", 8, 64, output_size=3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 30, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    expected = model.loss_and_grads(x, y, n_threads=2)[1]  # the parent starts OpenMP threads

    def work(_):
        return model.loss_and_grads(x, y, n_threads=2)[1]

    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map_async(work, range(2)).get(timeout=60)
    assert all(np.array_equal(r[k], expected[k]) for r in results for k in expected)
    print("ok")
""")


def test_forked_workers_train_without_hanging():
    """libgomp's threads do not survive fork(): training calls in a child forked after the
    parent's run on threads of their own, with the same gradients."""
    run = run_python(FORKED_TRAINING)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
