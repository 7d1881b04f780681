"""Callbacks for fit: a small protocol, early stopping, checkpoints and learning-rate schedules.

fit(..., callbacks=[...]) calls, in list order:
- on_train_begin(model, optimizer) once, after every argument is checked;
- on_epoch_end(epoch, history, model, optimizer) after each epoch (epoch counts from 1; history
  is fit's dict of lists so far, this epoch's values last); a true return value stops training
  after this epoch, once every callback has seen it;
- on_train_end(model, history) once, also after a stop.
Derive from Callback and override what you need, or pass any object with these methods (the
ones it lacks are skipped).

EarlyStopping and ModelCheckpoint follow Keras's callbacks of the same names; StepLR,
CosineAnnealingLR and ReduceLROnPlateau follow torch.optim.lr_scheduler's, stepping once at each
epoch's end and setting the optimizer's lr for the next epoch.
"""
import math
import os

from . import layers as L
from .optim import _fraction, _nonnegative, _positive

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")
MODES = ("auto", "min", "max")


class Callback:
    """The protocol fit calls; every method does nothing here."""

    def on_train_begin(self, model, optimizer):
        pass

    def on_epoch_end(self, epoch, history, model, optimizer):
        pass

    def on_train_end(self, model, history):
        pass


def checked_callbacks(callbacks):
    """fit's callbacks as a list: None, or a list or tuple of Callbacks or objects with at least
    one of the protocol's methods."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks: expected None or a list of callbacks, got "
                        f"{type(callbacks).__name__}")
    for i, callback in enumerate(callbacks):
        if isinstance(callback, type):
            raise TypeError(f"callbacks[{i}]: expected a callback object, got the class "
                            f"{callback.__name__} (an instance is {callback.__name__}(...))")
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"callbacks[{i}]: expected an rnnext.callbacks.Callback or an object "
                            f"with methods {', '.join(HOOKS)}, got {type(callback).__name__}")
    return list(callbacks)


def call_hooks(callbacks, hook, *args):
    """Calls hook(*args) of every callback that has it, in order; True if any returned a true
    value (fit stops after that epoch)."""
    stop = False
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if callable(method) and method(*args):
            stop = True
    return stop


# ----------------------------------------------------------------------------------------------
# the monitored value


class _Monitor:
    """A key of fit's history to watch and which way is better: mode "min", "max", or "auto"
    ("max" for accuracies, "min" for anything else); it tracks the best value so far, the epoch
    of it, and how many epochs in a row have not beaten it (wait)."""

    def __init__(self, monitor, mode):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a key of fit's history (a str such as "
                            f"'val_loss'), got {type(monitor).__name__}")
        self.monitor = monitor
        mode = L._choice("mode", mode, MODES)
        if mode == "auto":
            mode = "max" if monitor.endswith("accuracy") else "min"
        self.mode = mode
        self.reset()

    def reset(self):
        self.best = self.best_epoch = None
        self.wait = 0

    def update(self, epoch, history, delta=0.0):
        """Reads the epoch's value: True when it beats the best by more than delta (it becomes
        the best), else one more epoch of waiting."""
        current = self.current(history)
        if self.better(current, self.best, delta):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            return True
        self.wait += 1
        return False

    def current(self, history):
        """The monitored value of the latest epoch."""
        if self.monitor not in history:
            need = " (val_ keys need fit's validation_data)" if self.monitor.startswith(
                "val_") else ""
            raise ValueError(f"monitor: expected a key of fit's history {list(history)}, got "
                             f"{self.monitor!r}{need}")
        return float(history[self.monitor][-1])

    def better(self, value, best, delta=0.0):
        """value beats best by more than delta (any value but NaN, when there is no best yet)."""
        if best is None:
            return not math.isnan(value)
        return value < best - delta if self.mode == "min" else value > best + delta


def _weights(model):
    return {name: p.copy() for name, p in model.params.items()}


class _Monitored(Callback):
    """A callback watching a _Monitor: best and best_epoch are the monitor's."""

    best = property(lambda self: self._monitor.best)
    best_epoch = property(lambda self: self._monitor.best_epoch)


# ----------------------------------------------------------------------------------------------
# early stopping and checkpoints


class EarlyStopping(_Monitored):
    """Stops training when `monitor` has not improved by more than min_delta for `patience`
    epochs in a row (Keras's EarlyStopping). With restore_best_weights the model ends with the
    weights of its best epoch, also when fit ran out of epochs without stopping (as Keras 3).
    A NaN is never an improvement (Keras takes a NaN in the first epoch as the best).

    Attributes after fit: best (the best monitored value), best_epoch (from 1), stopped_epoch
    (the epoch training stopped after, or None if it ran all its epochs)."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        self._monitor = _Monitor(monitor, mode)
        self.patience = L._int("patience", patience, 0)
        self.min_delta = _nonnegative("min_delta", min_delta)
        self.restore_best_weights = L._bool("restore_best_weights", restore_best_weights)
        self.stopped_epoch = None

    def on_train_begin(self, model, optimizer):
        self._monitor.reset()
        self.stopped_epoch = self._best_weights = None

    def on_epoch_end(self, epoch, history, model, optimizer):
        if self._monitor.update(epoch, history, self.min_delta):
            if self.restore_best_weights:
                self._best_weights = _weights(model)
            return False
        if self._monitor.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model, history):
        if self._best_weights is not None:
            model.set_params(self._best_weights)


class ModelCheckpoint(_Monitored):
    """Writes the model (Model.save, an rnnext file) after an epoch: when `monitor` improved on
    its best so far with save_best_only, else after every epoch. `path` may contain "{epoch}"
    (str.format; "{epoch:03d}" too), replaced by the epoch number from 1.

    Attributes: last_path (the file written last, or None), best_path (the file written at the
    best epoch so far), best and best_epoch (tracked without save_best_only when the history
    has the monitored key)."""

    def __init__(self, path, monitor="val_loss", mode="auto", save_best_only=True):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a file path (str or os.PathLike), got "
                            f"{type(path).__name__}")
        self.path = os.fspath(path)
        try:
            self.path.format(epoch=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"path: expected a file path whose only replacement field is "
                             f"{{epoch}}, got {self.path!r} ({type(e).__name__}: {e})") from None
        self._monitor = _Monitor(monitor, mode)
        self.save_best_only = L._bool("save_best_only", save_best_only)
        self.best_path = self.last_path = None

    def on_train_begin(self, model, optimizer):
        self._monitor.reset()
        self.best_path = self.last_path = None

    def on_epoch_end(self, epoch, history, model, optimizer):
        improved = (self.save_best_only or self._monitor.monitor in history) and \
            self._monitor.update(epoch, history)
        if improved or not self.save_best_only:
            self.last_path = self.path.format(epoch=epoch)
            model.save(self.last_path)
        if improved:
            self.best_path = self.last_path
        return False


# ----------------------------------------------------------------------------------------------
# learning-rate schedules


class _Schedule(Callback):
    """A schedule of the optimizer's lr from its value when training begins (base_lr), set at
    each epoch's end for the next epoch, in PyTorch's closed form. Each fit starts the schedule
    again from the lr the optimizer has then; of two schedules in one fit, the later in the list
    sets the lr."""

    def on_train_begin(self, model, optimizer):
        self.base_lr = optimizer.lr

    def on_epoch_end(self, epoch, history, model, optimizer):
        optimizer.lr = self.lr_after(epoch)
        return False


class StepLR(_Schedule):
    """lr = base_lr * gamma ** (epochs done // step_size) (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = L._int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)

    def lr_after(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epochs done / T_max)) / 2
    (torch.optim.lr_scheduler.CosineAnnealingLR; past T_max the cosine climbs again)."""

    def __init__(self, T_max, eta_min=0.0):
        self.T_max = L._int("T_max", T_max, 1)
        self.eta_min = _nonnegative("eta_min", eta_min)

    def lr_after(self, epoch):
        cosine = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        return self.eta_min + (self.base_lr - self.eta_min) * cosine


class ReduceLROnPlateau(_Monitored):
    """lr = max(lr * factor, min_lr) once `monitor` has not improved for more than `patience`
    epochs in a row (torch.optim.lr_scheduler.ReduceLROnPlateau with threshold_mode "rel",
    cooldown 0 and eps 1e-8). An improvement is value < best * (1 - threshold) in mode "min",
    value > best * (1 + threshold) in mode "max"."""

    EPS = 1e-8  # PyTorch's: smaller changes of the lr are not made

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_lr=0.0, mode="auto",
                 threshold=1e-4):
        self._monitor = _Monitor(monitor, mode)
        self.factor = _positive("factor", factor)
        if self.factor >= 1.0:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor}")
        self.patience = L._int("patience", patience, 0)
        self.min_lr = _nonnegative("min_lr", min_lr)
        self.threshold = _fraction("threshold", threshold)

    def on_train_begin(self, model, optimizer):
        self._monitor.reset()

    def on_epoch_end(self, epoch, history, model, optimizer):
        best = self._monitor.best
        self._monitor.update(epoch, history, 0.0 if best is None else best * self.threshold)
        if self._monitor.wait > self.patience:
            lr = max(optimizer.lr * self.factor, self.min_lr)
            if optimizer.lr - lr > self.EPS:
                optimizer.lr = lr
            self._monitor.wait = 0
        return False


__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "StepLR", "CosineAnnealingLR",
           "ReduceLROnPlateau"]
