"""fit's callbacks: the protocol, EarlyStopping, ModelCheckpoint and the learning-rate schedules.

Outside sources: torch.optim.lr_scheduler's learning rates for the same epochs and values,
Keras's EarlyStopping on the same series of values, and, on a real model, the weights and
predictions captured at each epoch's end (argmin of the history for the best epoch).
"""
import os

import numpy as np
import pytest

import rnnext
from rnnext import callbacks as cbs
from rnnext import optim


def overfitting_task(seed=0):
    """A GRU that fits 12 training sequences fast, judged on 24 held-out ones whose labels are
    unrelated: the held-out loss falls for a while, then rises."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((36, 5, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    y[12:][rng.random(24) < 0.4] ^= 1
    model = rnnext.Model("gru", 3, 16, output_size=2, seed=seed)
    return model, (x[:12], y[:12]), (x[12:], y[12:])


class Recorder:
    """A duck-typed callback (not derived from Callback): the weights and the predictions on
    probe after every epoch, and what on_train_end saw."""

    def __init__(self, probe):
        self.probe, self.weights, self.predictions, self.ended = probe, {}, {}, []

    def on_epoch_end(self, epoch, history, model, optimizer):
        self.weights[epoch] = {k: p.copy() for k, p in model.params.items()}
        self.predictions[epoch] = model.predict(self.probe)

    def on_train_end(self, model, history):
        self.ended.append(len(history["loss"]))


def fit(model, train, val, epochs, callbacks, lr=0.05):
    return model.fit(*train, epochs=epochs, batch_size=4, lr=lr, seed=0, verbose=False,
                     validation_data=val, callbacks=callbacks)


# ----------------------------------------------------------------------------------------------
# early stopping and checkpoints on a real model


def test_early_stopping_restores_the_best_epoch():
    model, train, val = overfitting_task()
    stopper = cbs.EarlyStopping(patience=3)
    recorder = Recorder(val[0])
    history = fit(model, train, val, 60, [recorder, stopper])
    epochs_run = len(history["loss"])
    best = int(np.argmin(history["val_loss"])) + 1
    assert stopper.best_epoch == best and stopper.best == min(history["val_loss"])
    assert stopper.stopped_epoch == epochs_run == best + 3 < 60
    assert recorder.ended == [epochs_run]
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, recorder.weights[best][name])
    assert not np.array_equal(model.params["weight_hh_l0"],
                              recorder.weights[epochs_run]["weight_hh_l0"])


def test_early_stopping_restores_the_best_epoch_when_epochs_run_out():
    model, train, val = overfitting_task()
    stopper = cbs.EarlyStopping(patience=100)
    recorder = Recorder(val[0])
    history = fit(model, train, val, 12, [stopper, recorder])
    best = int(np.argmin(history["val_loss"])) + 1
    assert stopper.stopped_epoch is None and len(history["loss"]) == 12 and best < 12
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, recorder.weights[best][name])


def test_early_stopping_on_accuracy_maximizes_and_can_keep_the_last_weights():
    model, train, val = overfitting_task()
    stopper = cbs.EarlyStopping(monitor="accuracy", patience=2, restore_best_weights=False)
    recorder = Recorder(val[0])
    history = fit(model, train, val, 40, [stopper, recorder])
    assert stopper.best == max(history["accuracy"])
    assert stopper.best_epoch == int(np.argmax(history["accuracy"])) + 1
    last = len(history["loss"])
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, recorder.weights[last][name])


def test_model_checkpoint_files_predict_as_the_model_did(tmp_path):
    model, train, val = overfitting_task()
    recorder = Recorder(val[0])
    best_only = cbs.ModelCheckpoint(tmp_path / "best_{epoch:02d}.rnnext")
    every = cbs.ModelCheckpoint(str(tmp_path / "every_{epoch}.rnnext"), save_best_only=False)
    history = fit(model, train, val, 10, [recorder, best_only, every])
    val_loss = history["val_loss"]
    improved = [e for e in range(1, 11) if val_loss[e - 1] < min(val_loss[:e - 1], default=np.inf)]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"best_{e:02d}.rnnext" for e in improved] + [f"every_{e}.rnnext" for e in range(1, 11)])
    best = int(np.argmin(val_loss)) + 1
    assert best_only.best_epoch == every.best_epoch == best == improved[-1]
    assert best_only.best_path == best_only.last_path == str(tmp_path / f"best_{best:02d}.rnnext")
    assert every.last_path == str(tmp_path / "every_10.rnnext")
    for e in range(1, 11):
        np.testing.assert_array_equal(
            rnnext.load(tmp_path / f"every_{e}.rnnext").predict(val[0]), recorder.predictions[e])
    for e in improved:
        np.testing.assert_array_equal(
            rnnext.load(tmp_path / f"best_{e:02d}.rnnext").predict(val[0]),
            recorder.predictions[e])


def test_a_callback_returning_true_stops_after_every_callback_saw_the_epoch():
    model, train, val = overfitting_task()

    class StopAtThree(cbs.Callback):
        def on_epoch_end(self, epoch, history, model, optimizer):
            return epoch == 3

    recorder = Recorder(val[0])
    history = fit(model, train, val, 10, [StopAtThree(), recorder])
    assert len(history["loss"]) == 3 and sorted(recorder.weights) == [1, 2, 3]
    assert recorder.ended == [3]


def test_callbacks_see_the_history_so_far_and_the_optimizer():
    model, train, val = overfitting_task()
    seen = []
    adam = optim.Adam(lr=0.01)

    class Spy(cbs.Callback):
        def on_train_begin(self, model_, optimizer):
            seen.append(("begin", model_ is model, optimizer is adam))

        def on_epoch_end(self, epoch, history, model_, optimizer):
            seen.append((epoch, {k: len(v) for k, v in history.items()}))

    history = model.fit(*train, epochs=2, optimizer=adam, verbose=False, callbacks=(Spy(),))
    lengths = {k: 1 for k in history}
    assert seen == [("begin", True, True), (1, lengths), (2, {k: 2 for k in history})]
    assert list(history) == ["loss", "accuracy", "lr"] and history["lr"] == [0.01, 0.01]


# ----------------------------------------------------------------------------------------------
# EarlyStopping's rule against Keras's


KERAS_SERIES = [
    ("min", 0.0, 2, [1.0, 0.9, 0.95, 0.91, 0.92, 0.8, 0.85]),
    ("min", 0.05, 2, [1.0, 0.9, 0.86, 0.84, 0.83, 0.7, 0.75, 0.8]),
    ("max", 0.0, 1, [0.5, 0.6, 0.6, 0.7, 0.65, 0.9]),
    ("min", 0.0, 0, [1.0, 0.5, 0.5, 0.4]),
    ("min", 0.0, 3, [1.0, 0.9, 0.8, 0.7]),
]


def drive(callback, series, key="val_loss", lr=0.1):
    """Runs a callback over a series of monitored values as fit would, until it stops; returns
    the lr of every epoch run."""
    optimizer = optim.SGD(lr=lr)
    history = {key: []}
    lrs = []
    callback.on_train_begin(None, optimizer)
    for epoch, value in enumerate(series, 1):
        lrs.append(optimizer.lr)
        history[key].append(value)
        if callback.on_epoch_end(epoch, history, None, optimizer):
            break
    return lrs


@pytest.mark.parametrize("mode,min_delta,patience,series", KERAS_SERIES)
def test_early_stopping_stops_where_keras_does(mode, min_delta, patience, series):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")

    class Weights:
        stop_training = False

        def get_weights(self):
            return []

    theirs = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                           min_delta=min_delta, mode=mode)
    theirs.set_model(Weights())
    theirs.on_train_begin()
    for epoch, value in enumerate(series):
        theirs.on_epoch_end(epoch, {"val_loss": value})
        if theirs.model.stop_training:
            break
    ours = cbs.EarlyStopping(patience=patience, min_delta=min_delta, mode=mode,
                             restore_best_weights=False)
    epochs_run = len(drive(ours, series))
    assert epochs_run == epoch + 1
    assert ours.stopped_epoch == (theirs.stopped_epoch + 1 if theirs.model.stop_training
                                  else None)
    assert ours.best_epoch == theirs.best_epoch + 1 and ours.best == theirs.best


def test_early_stopping_never_takes_a_nan_as_the_best():
    stopper = cbs.EarlyStopping(patience=2, restore_best_weights=False)
    series = [float("nan"), 1.0, float("nan"), 0.9, 0.95, 0.93, 0.8]
    assert len(drive(stopper, series)) == 6
    seen = series[:6]
    assert (stopper.best, stopper.best_epoch) == (np.nanmin(seen), int(np.nanargmin(seen)) + 1)
    assert stopper.stopped_epoch == 6  # two epochs after the best, 0.9, none better


# ----------------------------------------------------------------------------------------------
# schedules against torch.optim.lr_scheduler


def torch_lrs(make_scheduler, series, lr=0.1):
    """The lr of every epoch under a torch scheduler stepped at each epoch's end (with the
    epoch's value for ReduceLROnPlateau)."""
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    lrs = []
    for value in series:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(value)
        else:
            scheduler.step()
    return lrs


PLATEAU = [1.0, 0.8, 0.8, 0.79995, 0.81, 0.7, 0.7, 0.7, 0.7, 0.69, 0.71, 0.72, 0.73, 0.74, 0.75,
           0.76, 0.77, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
ACCURACY = [0.5, 0.6, 0.6, 0.6, 0.61, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9]

SCHEDULES = [
    ("step", lambda: cbs.StepLR(3, gamma=0.5), lambda s, o: s.StepLR(o, 3, gamma=0.5), PLATEAU),
    ("step_default", lambda: cbs.StepLR(1), lambda s, o: s.StepLR(o, 1), PLATEAU),
    ("cosine", lambda: cbs.CosineAnnealingLR(10, eta_min=0.001),
     lambda s, o: s.CosineAnnealingLR(o, 10, eta_min=0.001), PLATEAU),
    ("cosine_zero", lambda: cbs.CosineAnnealingLR(7),
     lambda s, o: s.CosineAnnealingLR(o, 7), PLATEAU),
    ("plateau", lambda: cbs.ReduceLROnPlateau(factor=0.5, patience=1),
     lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=1), PLATEAU),
    ("plateau_min_lr", lambda: cbs.ReduceLROnPlateau(factor=0.2, patience=0, min_lr=0.01),
     lambda s, o: s.ReduceLROnPlateau(o, factor=0.2, patience=0, min_lr=0.01), PLATEAU),
    ("plateau_threshold", lambda: cbs.ReduceLROnPlateau(patience=2, threshold=0.02),
     lambda s, o: s.ReduceLROnPlateau(o, patience=2, threshold=0.02), PLATEAU),
    ("plateau_max", lambda: cbs.ReduceLROnPlateau("val_accuracy", patience=1),
     lambda s, o: s.ReduceLROnPlateau(o, mode="max", patience=1), ACCURACY),
]


@pytest.mark.parametrize("ours,theirs,series", [s[1:] for s in SCHEDULES],
                         ids=[s[0] for s in SCHEDULES])
def test_schedules_match_torch(ours, theirs, series):
    key = "val_accuracy" if series is ACCURACY else "val_loss"
    np.testing.assert_allclose(drive(ours(), series, key), torch_lrs(theirs, series),
                               rtol=1e-12, atol=0)


def test_schedules_set_fits_learning_rate():
    """In fit, history["lr"] is torch's sequence and the training uses it: the same run one
    epoch at a time with the optimizer's lr set by hand gives the same weights."""
    model, train, val = overfitting_task()
    history = model.fit(*train, epochs=7, batch_size=4, lr=0.02, shuffle=False, verbose=False,
                        callbacks=[cbs.StepLR(2, gamma=0.3)])
    np.testing.assert_allclose(history["lr"],
                               torch_lrs(lambda s, o: s.StepLR(o, 2, gamma=0.3), range(7), 0.02),
                               rtol=1e-12)
    by_hand, _, _ = overfitting_task()
    adam = optim.Adam()
    for lr in history["lr"]:
        adam.lr = lr
        by_hand.fit(*train, epochs=1, batch_size=4, optimizer=adam, shuffle=False,
                    verbose=False)
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, by_hand.params[name])
    constant, _, _ = overfitting_task()
    constant.fit(*train, epochs=7, batch_size=4, lr=0.02, shuffle=False, verbose=False)
    assert not np.allclose(constant.params["weight_hh_l0"], model.params["weight_hh_l0"])


# ----------------------------------------------------------------------------------------------
# refusals


def test_a_monitor_missing_from_the_history_is_refused_at_the_first_epoch():
    model, train, _ = overfitting_task()
    for callback in (cbs.EarlyStopping(), cbs.ModelCheckpoint("never_{epoch}.rnnext"),
                     cbs.ReduceLROnPlateau()):
        with pytest.raises(ValueError, match=r"^monitor: expected a key of fit's history "
                                             r"\['loss', 'accuracy', 'lr'\], got 'val_loss' "
                                             r"\(val_ keys need fit's validation_data\)$"):
            model.fit(*train, epochs=3, verbose=False, callbacks=[callback])
    with pytest.raises(ValueError, match=r"^monitor: expected a key of fit's history "
                                         r"\['loss', 'lr'\], got 'accuracy'$"):
        model.fit(train[0], np.eye(2)[train[1]], loss="mse", epochs=1, verbose=False,
                  callbacks=[cbs.EarlyStopping("accuracy")])


BAD_CALLBACKS = [
    (lambda: cbs.EarlyStopping(), TypeError,
     r"^callbacks: expected None or a list of callbacks, got EarlyStopping$"),
    (lambda: [cbs.StepLR(2), "early"], TypeError,
     r"^callbacks\[1\]: expected an rnnext.callbacks.Callback or an object with methods "
     r"on_train_begin, on_epoch_end, on_train_end, got str$"),
    (lambda: [cbs.EarlyStopping], TypeError,
     r"^callbacks\[0\]: expected a callback object, got the class EarlyStopping \(an instance "
     r"is EarlyStopping\(...\)\)$"),
]


@pytest.mark.parametrize("make,exc,match", BAD_CALLBACKS)
def test_bad_callbacks_are_refused_before_training(make, exc, match):
    model, train, _ = overfitting_task()
    before = {k: p.copy() for k, p in model.params.items()}
    with pytest.raises(exc, match=match):
        model.fit(*train, epochs=1, verbose=False, callbacks=make())
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name])


BAD_ARGUMENTS = [
    (lambda: cbs.StepLR(0), ValueError, r"^step_size: expected an int in \[1, "),
    (lambda: cbs.StepLR(2.0), TypeError, r"^step_size: expected an int, got float"),
    (lambda: cbs.StepLR(2, gamma=0), ValueError, r"^gamma: expected a finite number > 0, got 0"),
    (lambda: cbs.StepLR(2, gamma="0.5"), TypeError, r"^gamma: expected a number, got str$"),
    (lambda: cbs.CosineAnnealingLR(0), ValueError, r"^T_max: expected an int in \[1, "),
    (lambda: cbs.CosineAnnealingLR(5, eta_min=-0.1), ValueError,
     r"^eta_min: expected a finite number >= 0, got -0.1$"),
    (lambda: cbs.ReduceLROnPlateau(factor=1.0), ValueError,
     r"^factor: expected a number in \(0, 1\), got 1.0$"),
    (lambda: cbs.ReduceLROnPlateau(factor=-2), ValueError, r"^factor: expected a finite number"),
    (lambda: cbs.ReduceLROnPlateau(patience=-1), ValueError, r"^patience: expected an int in "
                                                             r"\[0, "),
    (lambda: cbs.ReduceLROnPlateau(min_lr=float("inf")), ValueError,
     r"^min_lr: expected a finite number >= 0, got inf$"),
    (lambda: cbs.ReduceLROnPlateau(threshold=1.5), ValueError,
     r"^threshold: expected a number in \[0, 1\), got 1.5$"),
    (lambda: cbs.ReduceLROnPlateau(mode="up"), ValueError,
     r"^mode: expected one of \('auto', 'min', 'max'\), got 'up'$"),
    (lambda: cbs.EarlyStopping(monitor=None), TypeError,
     r"^monitor: expected a key of fit's history \(a str such as 'val_loss'\), got NoneType$"),
    (lambda: cbs.EarlyStopping(min_delta=-1), ValueError, r"^min_delta: expected a finite "),
    (lambda: cbs.EarlyStopping(patience=None), TypeError, r"^patience: expected an int"),
    (lambda: cbs.EarlyStopping(restore_best_weights=1), TypeError,
     r"^restore_best_weights: expected a bool, got int 1$"),
    (lambda: cbs.ModelCheckpoint(3), TypeError,
     r"^path: expected a file path \(str or os.PathLike\), got int$"),
    (lambda: cbs.ModelCheckpoint("m_{val_loss}.rnnext"), ValueError,
     r"^path: expected a file path whose only replacement field is \{epoch\}, got "
     r"'m_\{val_loss\}.rnnext' \(KeyError: 'val_loss'\)$"),
    (lambda: cbs.ModelCheckpoint("m.rnnext", save_best_only="yes"), TypeError,
     r"^save_best_only: expected a bool, got str 'yes'$"),
]


@pytest.mark.parametrize("make,exc,match", BAD_ARGUMENTS)
def test_bad_callback_arguments_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
