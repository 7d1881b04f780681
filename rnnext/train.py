"""Training: losses and gradients of a Model, fit with truncated backpropagation through time,
evaluate. Model inherits these methods from TrainingMixin.

The recurrent stack's gradients come from the compiled core (backend "c") or the NumPy reference
(backend "numpy", rnnext.backward); the dense head, the loss and the optimizer run in NumPy.
Gradients are dicts keyed by PyTorch's parameter names (weight_ih_l0, bias_hh_l1_reverse, ...,
head.weight, head.bias), so that a model made by from_torch(rnn, head=linear) compares with
torch autograd key by key.
"""
import sys
import time

import numpy as np

from . import backward as reference_backward
from . import losses, optim, reference
from .config import resolve_threads

ACTIVATION_LOSSES = {"cross_entropy": (None, "softmax"), "binary_cross_entropy": (None, "sigmoid"),
                     "mse": (None, "softmax", "sigmoid")}


# ----------------------------------------------------------------------------------------------
# the recurrent stack in training mode, on either backend


def _recurrent_train(model, params, x, h0, c0, lengths, backend, n_threads, need_sequence):
    """Runs the stack keeping what its backward pass needs. Returns (y or None, h_n, c_n,
    backward) where backward(dy, dh_n, dc_n) -> (grads of the recurrent parameters, dh0, dc0)."""
    names = [n for n in params if not n.startswith("head.")]
    if backend == "numpy":
        y, h_n, c_n, trace = reference_backward.forward_train(
            model.core_cell, params, x, model.num_layers, model.bidirectional, h0, c0, lengths)

        def backward(dy, dh_n, dc_n):
            grads, _, dh0, dc0 = reference_backward.backward(
                model.core_cell, params, trace, model.num_layers, model.bidirectional, dy, dh_n,
                dc_n)
            return grads, dh0, dc0

        return y, h_n, c_n, backward

    n_threads = resolve_threads(n_threads)
    core = model.core() if params is model.params else model._core_from(params)
    B, T, _ = x.shape
    LD, H = model.num_layers * model.num_directions, model.hidden_size
    tape = model._training_tape(core, B, T)
    y = np.empty((B, T, model.num_directions * H), np.float32) if need_sequence else None
    h_n = np.empty((LD, B, H), np.float32)
    c_n = np.empty((LD, B, H), np.float32) if model.cell == "lstm" else None
    core.forward_train(tape, y, h_n, c_n, x, h0, c0, lengths, n_threads)

    def backward(dy, dh_n, dc_n):
        flat = np.empty(sum(params[n].size for n in names), np.float32)
        dh0 = np.empty((LD, B, H), np.float32)
        dc0 = np.empty((LD, B, H), np.float32) if model.cell == "lstm" else None
        core.backward(tape, flat, None, dh0, dc0, x, _c_array(dy), _c_array(dh_n),
                      _c_array(dc_n), n_threads)
        grads, offset = {}, 0
        for n in names:
            grads[n] = flat[offset:offset + params[n].size].reshape(params[n].shape)
            offset += params[n].size
        return grads, dh0, dc0

    return y, h_n, c_n, backward


def _c_array(a):
    return None if a is None else np.ascontiguousarray(a, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# inputs


def _as_dtype(original, validated, dtype):
    """validated (a float32 array checked by Model._inputs) in dtype, read again from the caller's
    array where float32 would lose precision."""
    if validated is None or dtype == np.float32:
        return validated
    return np.asarray(original, dtype=dtype).reshape(validated.shape)


def _checked_loss(model, loss):
    if loss not in losses.LOSSES:
        raise ValueError(f"loss: expected one of {losses.LOSSES}, got {loss!r}")
    activation = model.activation if model.output_size is not None else None
    if activation not in ACTIVATION_LOSSES[loss]:
        raise ValueError(f"loss: {loss!r} expects a model with activation in "
                         f"{ACTIVATION_LOSSES[loss]}, got activation={activation!r}")
    return activation


def _targets(model, loss, y, B, T, unbatched, dtype):
    """y as an array of the shape the loss expects: class indices (B,) / (B, T) for
    cross_entropy, else values (B, O) / (B, T, O); many-to-many shapes carry the T axis."""
    many_to_many = model.output == "many_to_many"
    O = model.output_size or model.num_directions * model.hidden_size
    lead = (B, T) if many_to_many else (B,)
    want = lead if loss == "cross_entropy" else lead + (O,)
    arr = np.asarray(y)
    if unbatched:
        arr = arr[None]
    shown = want[1:] if unbatched else want
    if arr.shape != want:
        raise ValueError(f"y: expected shape {shown} for loss {loss!r} ({model.output}), got "
                         f"{arr.shape[1:] if unbatched else arr.shape}")
    if loss == "cross_entropy":
        if arr.dtype.kind not in "iu":
            raise TypeError(f"y: expected integer class indices for loss 'cross_entropy', got "
                            f"dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= O):
            raise ValueError(f"y: expected class indices in [0, {O}), got min {arr.min()} and "
                             f"max {arr.max()}")
        return arr.astype(np.int64)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"y: expected real numbers for loss {loss!r}, got dtype {arr.dtype}")
    return arr.astype(dtype)


def _params_for(model, params):
    """model.params, or a caller's dict with the same names and shapes kept in its own dtype
    (float32 or float64; float64 runs on the NumPy reference only)."""
    if params is None:
        return model.params
    shapes = model.param_shapes()
    if set(params) != set(shapes):
        raise ValueError(f"params: expected exactly {list(shapes)}, got {list(params)}")
    out = {}
    for name, shape in shapes.items():
        arr = np.asarray(params[name])
        if arr.dtype not in (np.float32, np.float64) or arr.shape != shape:
            raise ValueError(f"params[{name!r}]: expected a float32 or float64 array of shape "
                             f"{shape}, got {arr.dtype} {arr.shape}")
        out[name] = arr
    dtypes = {a.dtype for a in out.values()}
    if len(dtypes) > 1:
        raise ValueError(f"params: expected one dtype for all arrays, got {sorted(map(str, dtypes))}")
    return out


# ----------------------------------------------------------------------------------------------
# the head and the loss


def _valid_mask(lengths, B, T):
    return None if lengths is None else np.arange(T)[None, :] < lengths[:, None]


def _rows(model, y_seq, h_n, lengths):
    """The features the head sees, as rows (N, D*H), and the mask of valid steps (many-to-many)
    or None (many-to-one)."""
    if model.output == "many_to_one":
        return model._last_valid(y_seq, h_n, lengths), None
    B, T, _ = y_seq.shape
    mask = _valid_mask(lengths, B, T)
    return (y_seq.reshape(B * T, -1) if mask is None else y_seq[mask]), mask


def _head_logits(params, rows):
    if "head.weight" not in params:
        return rows
    return rows @ params["head.weight"].T + params["head.bias"]


def _target_rows(model, target, mask):
    if model.output == "many_to_one":
        return target
    return target.reshape((-1,) + target.shape[2:]) if mask is None else target[mask]


# ----------------------------------------------------------------------------------------------
# one batch


def _batch(model, params, x, h0, c0, lengths, target, loss, activation, backend, n_threads,
           train):
    """The loss on one validated batch. Returns a dict: loss, count (rows the loss averages
    over), accuracy (or None), state (the final (h_n, c_n)), and when train is set grads (with
    "h0"/"c0": the initial state's) from backpropagation through time."""
    dtype = next(iter(params.values())).dtype
    B, T, _ = x.shape
    one_state_output = model.output == "many_to_one" and model.num_directions == 1
    if train:
        y_seq, h_n, c_n, backward = _recurrent_train(model, params, x, h0, c0, lengths, backend,
                                                     n_threads, not one_state_output)
    elif backend == "numpy":
        y_seq, h_n, c_n = reference.forward(model.core_cell, params, x, model.num_layers,
                                            model.bidirectional, h0, c0, lengths)
    else:
        y_seq, h_n, c_n = model._recurrent(x, h0, c0, lengths, n_threads, backend,
                                           not one_state_output)
    rows, mask = _rows(model, y_seq, h_n, lengths)
    z = _head_logits(params, rows)
    target_rows = _target_rows(model, target, mask)
    value, dz = losses.loss_and_grad(loss, z, target_rows, activation)
    out = dict(loss=float(value), count=len(rows), accuracy=losses.accuracy(loss, z, target_rows),
               state=(h_n, c_n))
    if not train:
        return out

    grads = {}
    if "head.weight" in params:
        grads["head.weight"] = (dz.T @ rows).astype(dtype)
        grads["head.bias"] = dz.sum(axis=0).astype(dtype)
        drows = dz @ params["head.weight"]
    else:
        drows = dz
    drows = drows.astype(dtype)
    dy = dh_n = None
    if one_state_output:  # the output is the top layer's final state
        dh_n = np.zeros(h_n.shape, dtype)
        dh_n[-1] = drows
    else:
        dy = np.zeros((B, T, model.num_directions * model.hidden_size), dtype)
        if model.output == "many_to_one":
            dy[np.arange(B), (np.full(B, T) if lengths is None else lengths) - 1] = drows
        elif mask is None:
            dy.reshape(B * T, -1)[:] = drows
        else:
            dy[mask] = drows
    recurrent, dh0, dc0 = backward(dy, dh_n, None)
    out["grads"] = {**recurrent, **grads, "h0": dh0}
    if model.cell == "lstm":
        out["grads"]["c0"] = dc0
    return out


def _validated(model, x, y, lengths, loss, state, params, backend):
    """Checks everything once: (params, backend, activation, x, h0, c0, lengths, target,
    unbatched)."""
    from .model import BACKENDS, _choice

    backend = _choice("backend", model.backend if backend is None else backend, BACKENDS)
    params = _params_for(model, params)
    dtype = next(iter(params.values())).dtype
    if dtype == np.float64 and backend != "numpy":
        raise ValueError("params: float64 parameters need backend='numpy', got backend='c'")
    activation = _checked_loss(model, loss)
    x_checked, h0, c0, lengths, unbatched = model._inputs(x, state, lengths)
    x_checked = _as_dtype(x, x_checked, dtype)
    if state is not None:
        h0 = _as_dtype(state[0] if model.cell == "lstm" else state, h0, dtype)
        c0 = _as_dtype(state[1], c0, dtype) if model.cell == "lstm" else None
    B, T, _ = x_checked.shape
    target = _targets(model, loss, y, B, T, unbatched, dtype)
    return params, backend, activation, x_checked, h0, c0, lengths, target, unbatched


def _check_trainable(model, backend):
    if backend == "c" and model.core_cell == "gru_reset_before":
        raise ValueError("backend: the compiled core does not train the GRU with the reset "
                         "before the product (linear_before_reset=False); expected "
                         "backend='numpy' for it, got backend='c'")


def loss_and_grads(model, x, y, lengths=None, loss="cross_entropy", state=None, params=None,
                   n_threads=None, backend=None):
    """(loss, grads) of `model` on a batch; see TrainingMixin.loss_and_grads. params: None for
    model.params, or a dict of float32 or float64 arrays to differentiate at instead (float64
    runs on the NumPy reference)."""
    params, backend, activation, x, h0, c0, lengths, target, unbatched = _validated(
        model, x, y, lengths, loss, state, params, backend)
    _check_trainable(model, backend)
    out = _batch(model, params, x, h0, c0, lengths, target, loss, activation, backend, n_threads,
                 train=True)
    grads = out["grads"]
    dh0, dc0 = grads.pop("h0"), grads.pop("c0", None)
    if state is not None:
        grads["h0"] = dh0[:, 0] if unbatched else dh0
        if dc0 is not None:
            grads["c0"] = dc0[:, 0] if unbatched else dc0
    return out["loss"], grads


# ----------------------------------------------------------------------------------------------
# fit and evaluate


def _batches(B, batch_size, order):
    return [order[i:i + batch_size] for i in range(0, B, batch_size)]


def _chunks(T, bptt):
    step = T if bptt is None else bptt
    return [(t0, min(t0 + step, T)) for t0 in range(0, T, step)]


def _run_epoch(model, data, order, batch_size, bptt, loss, activation, backend, n_threads,
               train_step, progress):
    """One pass over `data` (params, x, h0, c0, lengths, target) in batches of `order`, each
    batch's sequences cut into chunks of bptt steps that carry the state. train_step(out) is
    called after each chunk with the batch's result (None when evaluating). Returns the mean
    loss and accuracy over rows."""
    params, x, h0, c0, lengths, target = data
    B, T, _ = x.shape
    total = correct = rows = 0.0
    batches = _batches(B, batch_size, order)
    chunks = _chunks(T, bptt)
    for i, idx in enumerate(batches):
        h = None if h0 is None else h0[:, idx]
        c = None if c0 is None else c0[:, idx]
        for t0, t1 in chunks:
            xb = np.ascontiguousarray(x[idx, t0:t1])
            tb = target[idx] if model.output == "many_to_one" else target[idx, t0:t1]
            lb = None if lengths is None else np.ascontiguousarray(lengths[idx])
            out = _batch(model, params, xb, h, c, lb, tb, loss, activation, backend, n_threads,
                         train=train_step is not None)
            h, c = out["state"]
            total += out["loss"] * out["count"]
            rows += out["count"]
            if out["accuracy"] is not None:
                correct += out["accuracy"] * out["count"]
            if train_step is not None:
                train_step(out)
        if progress is not None:
            progress(i + 1, len(batches), total / rows)
    return total / rows, (correct / rows if loss in losses.CLASSIFICATION else None)


def _checked_bptt(model, bptt, lengths):
    if bptt is None:
        return None
    from .model import _positive_int

    bptt = _positive_int("bptt", bptt)
    if model.output != "many_to_many":
        raise ValueError(f"bptt: truncated backpropagation needs a many-to-many model, got "
                         f"output={model.output!r}")
    if lengths is not None:
        raise ValueError("lengths: expected None with bptt (every sequence as long as x), got "
                         "an array")
    return bptt


class _Progress:
    """A one-line progress bar on a terminal; one line per epoch elsewhere; nothing when quiet."""

    def __init__(self, verbose, epochs, stream=None):
        self.stream = stream or sys.stdout
        self.verbose = bool(verbose)
        self.tty = self.verbose and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.epochs = epochs
        self.epoch = 0
        self.start = time.perf_counter()

    def begin(self, epoch):
        self.epoch, self.start = epoch, time.perf_counter()

    def batch(self, done, total, loss):
        if not self.tty:
            return
        width = 30
        filled = width * done // total
        bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
        self.stream.write(f"\repoch {self.epoch}/{self.epochs} [{bar[:width]}] {done}/{total} "
                          f"loss {loss:.4f}")
        self.stream.flush()

    def end(self, record):
        if not self.verbose:
            return
        fields = "  ".join(f"{k} {v:.4f}" for k, v in record.items())
        line = (f"epoch {self.epoch}/{self.epochs}  {fields}  "
                f"({time.perf_counter() - self.start:.1f} s)")
        self.stream.write(("\r" + line + " " * 10 if self.tty else line) + "\n")
        self.stream.flush()


class TrainingMixin:
    """loss_and_grads, fit and evaluate for Model."""

    def loss_and_grads(self, x, y, lengths=None, loss="cross_entropy", state=None,
                       n_threads=None, backend=None):
        """The loss on a batch and its gradient for every parameter.

        x (B, T, I) or (T, I); y: targets as the loss expects (see rnnext.losses): class indices
        (B,) for a many-to-one head or (B, T) for many-to-many with "cross_entropy", values
        (B, O) or (B, T, O) with "binary_cross_entropy" and "mse". Many-to-many losses average
        over the valid steps only. Without a head the loss applies to the recurrent outputs.
        state: the initial state (as forward takes it) or None for zeros; when given, grads
        also holds its gradient as "h0" (and "c0" for the LSTM).
        Returns (loss, grads) with grads {PyTorch name: array of the parameter's shape}."""
        return loss_and_grads(self, x, y, lengths, loss, state, None, n_threads, backend)

    def apply_grads(self, grads, optimizer, clip=None):
        """One update: clips grads (see fit's clip; in place) and lets `optimizer` (an
        rnnext.optim.SGD or Adam) change the parameters. Keys of grads that are not parameters
        (an initial state's "h0", "c0") are left out."""
        if not isinstance(optimizer, (optim.SGD, optim.Adam)):
            raise TypeError(f"optimizer: expected an rnnext.optim.SGD or Adam, got "
                            f"{type(optimizer).__name__}")
        grads = {name: grads[name] for name in self.param_shapes()}
        optim.clip_grads(grads, clip)
        optimizer.step(self.params, grads)
        self._core = None  # the compiled model is packed again from the new parameters

    def fit(self, x, y, lengths=None, epochs=10, batch_size=32, optimizer="adam", lr=None,
            clip=None, loss="cross_entropy", shuffle=True, validation_data=None, bptt=None,
            seed=None, verbose=True, n_threads=None, backend=None):
        """Trains the model on (x, y) with minibatches; returns the history, a dict of lists
        per epoch: "loss" (and "accuracy" for classification losses), "val_loss" and
        "val_accuracy" with validation_data.

        x, y, lengths, loss: as loss_and_grads, for the whole training set.
        optimizer: "adam" or "sgd" (with lr, or the default's), or an rnnext.optim.SGD/Adam.
        clip: None, a number (clip the gradients' global norm to it), ("norm", x) or
        ("value", x) (clip every gradient entry to [-x, x]).
        shuffle: a new order of the sequences each epoch, drawn from seed.
        validation_data: (x, y) or (x, y, lengths), evaluated after each epoch.
        bptt: None, or truncated backpropagation through time for a many-to-many model: each
        batch's sequences are cut into chunks of bptt steps, an update after each chunk, the
        state carried (without gradient) from chunk to chunk and reset for each batch.
        verbose: a progress bar on a terminal, one line per epoch elsewhere; False for none."""
        from .model import _positive_int

        epochs = _positive_int("epochs", epochs)
        batch_size = _positive_int("batch_size", batch_size)
        opt = optim.make_optimizer(optimizer, lr)
        optim.parse_clip(clip)
        params, backend, activation, x, h0, c0, lengths, target, _ = _validated(
            self, x, y, lengths, loss, None, None, backend)
        _check_trainable(self, backend)
        bptt = _checked_bptt(self, bptt, lengths)
        if validation_data is not None:
            if not (isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3)):
                raise TypeError("validation_data: expected (x, y) or (x, y, lengths), got "
                                f"{type(validation_data).__name__}")
            val = _validated(self, *validation_data[:2],
                             validation_data[2] if len(validation_data) == 3 else None, loss,
                             None, None, backend)
        rng = np.random.default_rng(seed)

        def train_step(out):
            self.apply_grads(out["grads"], opt, clip)

        history = {}
        progress = _Progress(verbose, epochs)
        B = x.shape[0]
        for epoch in range(1, epochs + 1):
            progress.begin(epoch)
            order = rng.permutation(B) if shuffle else np.arange(B)
            data = (self.params, x, h0, c0, lengths, target)
            mean_loss, acc = _run_epoch(self, data, order, batch_size, bptt, loss, activation,
                                        backend, n_threads, train_step, progress.batch)
            record = {"loss": mean_loss}
            if acc is not None:
                record["accuracy"] = acc
            if validation_data is not None:
                _, _, _, vx, vh0, vc0, vlen, vtarget, _ = val
                vloss, vacc = _run_epoch(self, (self.params, vx, vh0, vc0, vlen, vtarget),
                                         np.arange(vx.shape[0]), batch_size, bptt, loss,
                                         activation, backend, n_threads, None, None)
                record["val_loss"] = vloss
                if vacc is not None:
                    record["val_accuracy"] = vacc
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            progress.end(record)
        return history

    def evaluate(self, x, y, lengths=None, loss="cross_entropy", batch_size=None, bptt=None,
                 n_threads=None, backend=None):
        """{"loss": mean loss, "accuracy": fraction right (classification losses)} on (x, y),
        with the current parameters, in batches of batch_size (None for one batch) and, with
        bptt, in chunks of bptt steps that carry the state (as fit)."""
        from .model import _positive_int

        params, backend, activation, x, h0, c0, lengths, target, _ = _validated(
            self, x, y, lengths, loss, None, None, backend)
        bptt = _checked_bptt(self, bptt, lengths)
        B = x.shape[0]
        batch_size = B if batch_size is None else _positive_int("batch_size", batch_size)
        mean_loss, acc = _run_epoch(self, (params, x, h0, c0, lengths, target), np.arange(B),
                                    batch_size, bptt, loss, activation, backend, n_threads, None,
                                    None)
        result = {"loss": mean_loss}
        if acc is not None:
            result["accuracy"] = acc
        return result

    # ------------------------------------------------------------------------------------------
    # the compiled core's training resources

    def _core_from(self, params):
        from ._core import CoreModel

        names = [n for n in self.param_shapes() if not n.startswith("head.")]
        flat = np.concatenate([np.asarray(params[n], np.float32).ravel() for n in names])
        return CoreModel(self.core_cell, self.input_size, self.hidden_size, self.num_layers,
                         self.bidirectional, flat)

    def _training_tape(self, core, B, T):
        """This thread's training tape of the compiled core for (B, T), kept while it fits: a
        tape holds one forward pass until its backward pass, so threads never share one."""
        from ._core import CoreTape

        tape = getattr(self._tapes, "tape", None)
        if tape is None or not tape.fits(core, B, T):
            tape = self._tapes.tape = CoreTape(core, B, T)
        return tape
