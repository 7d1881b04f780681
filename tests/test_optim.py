"""Weight decay (L2 and AdamW's decoupled form) and learning rates changed between steps.

Outside source: torch.optim's SGD, Adam and AdamW on the same float32 parameters and gradients.
"""
import numpy as np
import pytest

import rnnext
from rnnext import optim
from test_train import torch_updates

OPTIMIZERS = [
    ("sgd_l2", lambda: optim.SGD(lr=0.1, weight_decay=0.05),
     lambda t, p: t.optim.SGD(p, lr=0.1, weight_decay=0.05)),
    ("sgd_momentum_l2", lambda: optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.05),
     lambda t, p: t.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05)),
    ("adam_l2", lambda: optim.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
     lambda t, p: t.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("adamw", lambda: optim.AdamW(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3),
     lambda t, p: t.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
    ("adamw_defaults", lambda: optim.AdamW(), lambda t, p: t.optim.AdamW(p)),
]


def start_and_grads(steps=6, scale=1.0):
    rng = np.random.default_rng(4)
    start = {"a": rng.standard_normal((3, 4)).astype(np.float32),
             "b": rng.standard_normal(5).astype(np.float32)}
    grads_seq = [{k: (scale * rng.standard_normal(v.shape)).astype(np.float32)
                  for k, v in start.items()} for _ in range(steps)]
    return start, grads_seq


@pytest.mark.parametrize("ours,theirs", [o[1:] for o in OPTIMIZERS],
                         ids=[o[0] for o in OPTIMIZERS])
def test_weight_decay_matches_torch_in_float32(ours, theirs):
    torch = pytest.importorskip("torch")
    start, grads_seq = start_and_grads()
    params = {k: v.copy() for k, v in start.items()}
    optimizer = ours()
    for grads in grads_seq:
        optimizer.step(params, grads)
    want = torch_updates(torch, lambda p: theirs(torch, p), grads_seq, start)
    for k in params:
        assert params[k].dtype == np.float32
        np.testing.assert_allclose(params[k], want[k], rtol=1e-6, atol=1e-7)
    no_decay = {k: v.copy() for k, v in start.items()}
    plain = ours()
    plain.weight_decay = 0.0
    for grads in grads_seq:
        plain.step(no_decay, grads)
    assert not np.allclose(no_decay["a"], params["a"], rtol=1e-5, atol=0)  # the decay mattered


@pytest.mark.parametrize("ours,theirs", [o[1:] for o in OPTIMIZERS],
                         ids=[o[0] for o in OPTIMIZERS])
def test_an_lr_set_between_steps_takes_effect_as_in_torch(ours, theirs):
    """A schedule sets optimizer.lr; torch sets param_groups' lr: the steps agree."""
    torch = pytest.importorskip("torch")
    start, grads_seq = start_and_grads()
    lrs = [0.05, 0.05, 0.02, 0.3, 0.001, 0.1]
    params = {k: v.copy() for k, v in start.items()}
    optimizer = ours()
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    reference = theirs(torch, list(tensors.values()))
    for lr, grads in zip(lrs, grads_seq):
        optimizer.lr = lr
        optimizer.step(params, grads)
        reference.param_groups[0]["lr"] = lr
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        reference.step()
    for k in params:
        np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-6, atol=1e-7)


def small_task():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    return x, y


@pytest.mark.parametrize("name,kind", [("sgd", optim.SGD), ("adam", optim.Adam),
                                       ("adamw", optim.AdamW)])
def test_fit_passes_weight_decay_to_a_named_optimizer(name, kind):
    """fit(optimizer=name, lr, weight_decay) trains as fit with the instance made by hand."""
    x, y = small_task()
    models = [rnnext.Model("lstm", 3, 5, output_size=2, seed=1) for _ in range(3)]
    models[0].fit(x, y, epochs=3, optimizer=name, lr=0.05, weight_decay=0.2, seed=0,
                  verbose=False)
    models[1].fit(x, y, epochs=3, optimizer=kind(lr=0.05, weight_decay=0.2), seed=0,
                  verbose=False)
    models[2].fit(x, y, epochs=3, optimizer=name, lr=0.05, weight_decay=0.0, seed=0,
                  verbose=False)
    for k, p in models[0].params.items():
        np.testing.assert_array_equal(p, models[1].params[k])
    assert not np.allclose(models[0].params["weight_hh_l0"], models[2].params["weight_hh_l0"])


BAD = [
    (lambda: optim.SGD(weight_decay=-0.1), ValueError,
     r"^weight_decay: expected a finite number >= 0, got -0.1$"),
    (lambda: optim.Adam(weight_decay=float("nan")), ValueError,
     r"^weight_decay: expected a finite number >= 0, got nan$"),
    (lambda: optim.AdamW(weight_decay="0.01"), TypeError,
     r"^weight_decay: expected a number, got str$"),
    (lambda: optim.AdamW(weight_decay=10 ** 400), ValueError,
     r"^weight_decay: expected a finite number >= 0, got 1000"),
    (lambda: optim.make_optimizer(optim.AdamW(), weight_decay=0.1), ValueError,
     r"^weight_decay: expected None when optimizer is an instance \(AdamW\(lr=0.001, "
     r"betas=\(0.9, 0.999\), eps=1e-08, weight_decay=0.01\), which has its own weight_decay\), "
     r"got 0.1$"),
    (lambda: optim.make_optimizer(["adam"]), ValueError,
     r"^optimizer: expected one of \('sgd', 'adam', 'adamw'\) or an SGD, Adam or AdamW "
     r"instance, got \['adam'\]$"),
]


@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_weight_decay_is_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_fit_refuses_weight_decay_with_an_optimizer_instance_before_training():
    x, y = small_task()
    model = rnnext.Model("gru", 3, 4, output_size=2, seed=0)
    before = {k: p.copy() for k, p in model.params.items()}
    with pytest.raises(ValueError, match=r"^weight_decay: expected None when optimizer is an "
                                         r"instance \(SGD\(.*\), got 0.5$"):
        model.fit(x, y, optimizer=optim.SGD(), weight_decay=0.5, verbose=False)
    with pytest.raises(ValueError, match=r"^weight_decay: expected a finite number >= 0, "
                                         r"got -1$"):
        model.fit(x, y, optimizer="adamw", weight_decay=-1, verbose=False)
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, before[k])
