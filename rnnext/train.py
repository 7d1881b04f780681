"""Training: losses and gradients of a Model, fit with truncated backpropagation through time,
evaluate. Model's methods of the same names call these functions.

The recurrent layers' gradients come from the compiled core (backend "c") or the NumPy reference
(backend "numpy", rnnext.backward); the embedding, the readout, the dense layers, the loss and
the optimizer run in NumPy (the reference's functions, on either backend). Gradients are dicts
keyed by the parameters' names (PyTorch's for the recurrent layers: weight_ih_l0,
bias_hh_l1_reverse, ...; embedding.weight; dense0.weight, ...), so that a model imported from
PyTorch compares with torch autograd key by key.

The model's last dense activation (softmax, sigmoid) is part of the loss: the loss takes the
logits before it, as PyTorch's cross-entropy does.
"""
import dataclasses
import math
import sys
import time
from collections.abc import Mapping

import numpy as np

from . import backward as reference_backward
from . import layers as L
from . import callbacks as cb
from . import losses, optim, reference
from .config import resolve_threads

ACTIVATION_LOSSES = {"cross_entropy": (None, "softmax"), "binary_cross_entropy": (None, "sigmoid"),
                     "mse": (None, "softmax", "sigmoid")}


# ----------------------------------------------------------------------------------------------
# the model in training mode, on either backend


def _logits_spec(spec):
    """spec with the last dense layer's activation left to the loss: its output is the logits."""
    if not spec.dense:
        return spec
    last = dataclasses.replace(spec.dense[-1], activation=None)
    return dataclasses.replace(spec, dense=spec.dense[:-1] + (last,))


def _forward_train(model, spec, params, x, states, lengths, mask, backend, n_threads,
                   dropout=None):
    """Runs the model keeping what its backward pass needs. Returns (logits, final states,
    backward) where backward(dlogits) -> (grads of every parameter, [(dh0, dc0)] per layer).
    dropout: None or checked multipliers (see _dropout_shapes): the input's and the head's are
    applied here in NumPy, the ones between recurrent layers by the compiled core's tape."""
    if backend == "numpy":
        y, final, trace = reference_backward.forward_train_model(spec, params, x, states,
                                                                 lengths, mask, dropout)

        def backward(dy):
            grads, _, dstates0 = reference_backward.backward_model(spec, params, trace, dy)
            return grads, dstates0

        return y, final, backward

    core = model.core() if params is model.params else model._core_from(params)
    inputs, valid, ids = reference.model_inputs(spec, params, x, lengths, mask)
    inputs = np.ascontiguousarray(reference.dropped(dropout, "input", inputs), dtype=np.float32)
    if (ids is not None and spec.embedding.mask_zero) or spec.masking is not None:
        lengths, mask = None, np.ascontiguousarray(valid)  # the mask the inputs made, lengths in it
    B, T = inputs.shape[:2]
    h_n, c_n, shapes = model._state_buffers(B)
    seq = np.empty((B, T, spec.recurrent[-1].output_size), np.float32)
    h0, c0 = model._flat_states(states)
    tape = training_tape(model, core, B, T)
    for k in range(1, len(spec.recurrent)):  # set or cleared on every pass: the tape keeps them
        tape.set_dropout(k, None if dropout is None else dropout.get(f"layer{k}"))
    core.forward_train(tape, seq, h_n, c_n, inputs, h0, c0, lengths, mask, n_threads)
    final = model._split_states(h_n, c_n, shapes)
    trace = {"mask": valid, "ids": ids}
    y = reference.head_forward(spec, params, seq, final[-1][0], valid, trace, dropout)

    def backward(dy):
        grads, dseq, dfinal = reference_backward.head_backward(spec, params, trace, dy)
        dh_n = np.zeros_like(h_n)
        if dfinal is not None:  # the readout read the top layer's final states
            dh_n[h_n.size - dfinal.size:] = dfinal.ravel()
        recurrent = np.empty(core.info["recurrent_param_count"], np.float32)
        dx = np.empty_like(inputs) if ids is not None else None
        dh0, dc0 = np.empty_like(h_n), np.empty_like(c_n)
        core.backward(tape, recurrent, dx, dh0, dc0, inputs,
                      np.ascontiguousarray(dseq, dtype=np.float32), dh_n, None, n_threads)
        offset = 0
        for name, shape in model.param_shapes().items():
            if name in grads or name == reference_backward.EMBEDDING_PARAM:
                continue
            size = math.prod(shape)
            grads[name] = recurrent[offset:offset + size].reshape(shape)
            offset += size
        if ids is not None:
            grads[reference_backward.EMBEDDING_PARAM] = reference_backward.embedding_backward(
                spec, ids, reference.dropped(dropout, "input", dx))
        return ({name: grads[name] for name in model.param_shapes()},
                model._split_states(dh0, dc0, shapes))

    return y, final, backward


# ----------------------------------------------------------------------------------------------
# inputs


def _checked_loss(model, loss):
    if loss not in losses.LOSSES:
        raise ValueError(f"loss: expected one of {losses.LOSSES}, got {loss!r}")
    dense = model.spec.dense
    activation = dense[-1].activation if dense else None
    if activation not in ACTIVATION_LOSSES[loss]:
        raise ValueError(f"loss: {loss!r} expects a model whose last dense activation is in "
                         f"{ACTIVATION_LOSSES[loss]}, got {activation!r}")
    return activation


def _targets(model, loss, y, B, T, unbatched, dtype):
    """y as an array of the shape the loss expects: class indices (B,) / (B, T) for
    cross_entropy, else values (B, O) / (B, T, O); per-step models carry the T axis."""
    O = model.output_size
    lead = (B, T) if model.per_step else (B,)
    want = lead if loss == "cross_entropy" else lead + (O,)
    arr = np.asarray(y)
    if unbatched:
        arr = arr[None]
    shown = want[1:] if unbatched else want
    if arr.shape != want:
        kind = "per step" if model.per_step else "per sequence"
        raise ValueError(f"y: expected shape {shown} for loss {loss!r} (outputs {kind}), got "
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
        raise ValueError(f"params: expected one dtype for all arrays, got "
                         f"{sorted(map(str, dtypes))}")
    return out


# ----------------------------------------------------------------------------------------------
# dropout


def _dropout_shapes(spec, B, T):
    """{place: shape} of the dropout multipliers of a batch of B sequences of T steps: "input"
    (the first recurrent layer's input), "layer{k}" (recurrent layer k's input, k >= 1) and,
    with dense layers, "head" (what the first dense layer reads)."""
    shapes = {"input": (B, T, spec.recurrent[0].input_size)}
    shapes.update({f"layer{r.index}": (B, T, r.input_size) for r in spec.recurrent[1:]})
    if spec.dense:
        F = spec.recurrent[-1].output_size
        shapes["head"] = (B, T, F) if spec.readout == "sequence" else (B, F)
    return shapes


def _checked_masks(model, masks, B, T, unbatched, dtype):
    """loss_and_grads' masks as {place: array in dtype of the batch's shape}, or None."""
    if masks is None:
        return None
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks: expected a dict of dropout multipliers by place, got "
                        f"{type(masks).__name__}")
    shapes = _dropout_shapes(model.spec, B, T)
    unknown = [key for key in masks if key not in shapes]
    if unknown:
        raise ValueError(f"masks: expected keys among {list(shapes)}, got {unknown}")
    out = {}
    for place, mask in masks.items():
        arr = np.asarray(mask)
        shape = shapes[place][1:] if unbatched else shapes[place]
        if arr.dtype.kind != "f" or arr.shape != shape:
            raise ValueError(f"masks[{place!r}]: expected a float array of shape {shape}, got "
                             f"{arr.dtype} {arr.shape}")
        out[place] = np.ascontiguousarray(arr[None] if unbatched else arr, dtype)
    return out


def _dropout_rates(model, dropout, input_dropout, head_dropout):
    """fit's rates checked: {argument name: rate} of those above zero."""
    rates = {}
    for name, value in (("dropout", dropout), ("input_dropout", input_dropout),
                        ("head_dropout", head_dropout)):
        number = isinstance(value, (int, float, np.integer, np.floating)) and \
            not isinstance(value, bool)
        if not (number and 0.0 <= value < 1.0):
            raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
        if value > 0:
            rates[name] = float(value)
    if "head_dropout" in rates and not model.spec.dense:
        raise ValueError(f"head_dropout: expected 0 for a model without dense layers (nothing "
                         f"reads the head's features), got {rates['head_dropout']}")
    return rates


def _mask_drawer(spec, rates, rng):
    """draw(B, T) -> fresh multipliers for a batch (inverted dropout: 0 with probability p,
    else 1/(1-p), per element and step) from rng, or None without rates."""
    kinds = {"input": "input_dropout", "head": "head_dropout"}

    def draw(B, T):
        masks = {}
        for place, shape in _dropout_shapes(spec, B, T).items():
            p = rates.get(kinds.get(place, "dropout"), 0.0)
            if p > 0:
                masks[place] = np.where(rng.random(shape, np.float32) >= p,
                                        np.float32(1.0 / (1.0 - p)), np.float32(0.0))
        return masks or None

    return draw if rates else None


# ----------------------------------------------------------------------------------------------
# one batch


def _batch(model, params, x, states, lengths, mask, target, loss, activation, backend,
           n_threads, train, dropout=None):
    """The loss on one validated batch. Returns a dict: loss, count (rows the loss averages
    over), accuracy (or None), state (the final [(h, c)] per recurrent layer), and when train is
    set grads (and "states0": the initial states' gradients) from backpropagation through
    time, with the dropout multipliers `dropout` (None: none; see _dropout_shapes)."""
    spec = _logits_spec(model.spec)
    if train:
        z, final, backward = _forward_train(model, spec, params, x, states, lengths, mask,
                                            backend, n_threads, dropout)
    elif backend == "numpy":
        z, final = reference.forward_model(spec, params, x, states, lengths, mask)
    else:
        z, final = _forward_train(model, spec, params, x, states, lengths, mask, backend,
                                  n_threads)[:2]
    if model.per_step:
        _, valid, _ = reference.model_inputs(spec, params, x, lengths, mask)
        rows, target_rows = z[valid], target[valid]
    else:
        rows, target_rows = z, target
    value, drows = losses.loss_and_grad(loss, rows, target_rows, activation)
    out = dict(loss=float(value), count=len(rows), accuracy=losses.accuracy(loss, rows,
                                                                              target_rows),
               state=final)
    if not train:
        return out
    dtype = next(iter(params.values())).dtype
    if model.per_step:
        dz = np.zeros(z.shape, dtype)
        dz[valid] = drows
    else:
        dz = drows.astype(dtype)
    grads, dstates0 = backward(dz)
    out["grads"] = grads
    out["states0"] = dstates0
    return out


def _validated(model, x, y, lengths, mask, loss, state, params, backend, n_threads):
    """Checks everything once: (params, backend, activation, x, states, lengths, mask, target,
    unbatched, n_threads resolved)."""
    from .model import BACKENDS, _choice

    backend = _choice("backend", model.backend if backend is None else backend, BACKENDS)
    if model.precision != "fp32":
        raise ValueError(f"precision: fit, loss_and_grads and evaluate run the training pass, "
                         f"in fp32 only; this model's precision is {model.precision!r}: set "
                         f"model.precision = 'fp32' for them (the parameters are float32 "
                         f"either way)")
    n_threads = resolve_threads(n_threads)  # checked on either backend, used by the C one
    params = _params_for(model, params)
    dtype = next(iter(params.values())).dtype
    if dtype == np.float64 and backend != "numpy":
        raise ValueError("params: float64 parameters need backend='numpy', got backend='c'")
    activation = _checked_loss(model, loss)
    x_checked, states, lengths, mask, unbatched = model._inputs(x, state, lengths, mask)
    if dtype == np.float64:  # read the caller's arrays again where float32 lost precision
        if model.spec.embedding is None:
            x_checked = np.asarray(x, np.float64).reshape(x_checked.shape)
        states = model._state(state, x_checked.shape[0], unbatched, np.float64)
    B, T = x_checked.shape[:2]
    target = _targets(model, loss, y, B, T, unbatched, dtype)
    return (params, backend, activation, x_checked, states, lengths, mask, target, unbatched,
            n_threads)


def loss_and_grads(model, x, y, lengths=None, mask=None, loss="cross_entropy", state=None,
                   params=None, n_threads=None, backend=None, masks=None):
    """The loss of `model` on a batch and its gradient for every parameter: (loss, grads).

    x, lengths, mask, state: as Model.forward. y: targets as the loss expects (see
    rnnext.losses): class indices (B,) for a model with one output per sequence, or (B, T) for
    one per step, with "cross_entropy"; values (B, O) or (B, T, O) with "binary_cross_entropy"
    and "mse". Per-step losses average over the valid steps only.
    grads: {parameter name: array of its shape}; when state is given, also "state": its
    gradient, in the same form. params: None for model.params, or a dict of float32 or float64
    arrays to differentiate at instead (float64 runs on the NumPy reference).
    masks: None, or dropout multipliers of your own (fit draws them from its rates): a dict
    with any of "input" ((B, T, I): the first recurrent layer's input, after the embedding),
    "layer1" .. "layer{n-1}" ((B, T, I_k): recurrent layer k's input, the merged outputs of the
    layer below) and, with dense layers, "head" ((B, F) or (B, T, F): the features the dense
    layers read); float arrays of multipliers already scaled (0 or 1/(1-p)), without the B axis
    for an unbatched x."""
    params, backend, activation, x, states, lengths, mask, target, unbatched, n_threads = \
        _validated(model, x, y, lengths, mask, loss, state, params, backend, n_threads)
    dtype = next(iter(params.values())).dtype
    dropout = _checked_masks(model, masks, x.shape[0], x.shape[1], unbatched, dtype)
    out = _batch(model, params, x, states, lengths, mask, target, loss, activation, backend,
                 n_threads, train=True, dropout=dropout)
    grads = out["grads"]
    if state is not None:
        grads["state"] = model._state_out(out["states0"], unbatched)
    return out["loss"], grads


# ----------------------------------------------------------------------------------------------
# fit and evaluate


def _batches(B, batch_size, order):
    return [order[i:i + batch_size] for i in range(0, B, batch_size)]


def _chunks(T, bptt):
    step = T if bptt is None else bptt
    return [(t0, min(t0 + step, T)) for t0 in range(0, T, step)]


def _run_epoch(model, data, order, batch_size, bptt, loss, activation, backend, n_threads,
               train_step, progress, draw_masks=None):
    """One pass over `data` (params, x, states, lengths, mask, target) in batches of `order`,
    each batch's sequences cut into chunks of bptt steps that carry the state. train_step(out)
    is called after each chunk with the batch's result (None when evaluating). draw_masks(B, T):
    a chunk's dropout multipliers when training (None: no dropout). Returns the mean loss and
    accuracy over rows."""
    params, x, states, lengths, mask, target = data
    B, T = x.shape[:2]
    total = correct = rows = 0.0
    batches = _batches(B, batch_size, order)
    chunks = _chunks(T, bptt)
    for i, idx in enumerate(batches):
        carried = None if states is None else [(h[:, idx], None if c is None else c[:, idx])
                                               for h, c in states]
        for t0, t1 in chunks:
            xb = np.ascontiguousarray(x[idx, t0:t1])
            tb = target[idx, t0:t1] if model.per_step else target[idx]
            lb = None if lengths is None else np.ascontiguousarray(lengths[idx])
            mb = None if mask is None else np.ascontiguousarray(mask[idx, t0:t1])
            train = train_step is not None
            dropout = draw_masks(*xb.shape[:2]) if train and draw_masks else None
            out = _batch(model, params, xb, carried, lb, mb, tb, loss, activation, backend,
                         n_threads, train=train, dropout=dropout)
            carried = out["state"]
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
    if not model.per_step:
        raise ValueError(f"bptt: truncated backpropagation needs a model with an output per "
                         f"step, got readout {model.spec.readout!r}")
    if lengths is not None:
        raise ValueError("lengths: expected None with bptt (every sequence as long as x), got "
                         "an array")
    return bptt


def _checked_validation_data(model, data, loss, backend, bptt):
    """fit's validation_data, checked as its training data (errors say validation_data): what
    _validated returns."""
    if not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
        size = f" of {len(data)}" if isinstance(data, (tuple, list)) else ""
        raise TypeError(f"validation_data: expected (x, y) or (x, y, lengths), got "
                        f"{type(data).__name__}{size}")
    try:
        checked = _validated(model, *data[:2], data[2] if len(data) == 3 else None, None, loss,
                             None, None, backend, None)
        _checked_bptt(model, bptt, checked[5])
    except (TypeError, ValueError) as e:
        raise type(e)(f"validation_data: {e}") from None
    return checked


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
        fields = "  ".join(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}"
                           for k, v in record.items())
        line = (f"epoch {self.epoch}/{self.epochs}  {fields}  "
                f"({time.perf_counter() - self.start:.1f} s)")
        self.stream.write(("\r" + line + " " * 10 if self.tty else line) + "\n")
        self.stream.flush()


def apply_grads(model, grads, optimizer, clip=None):
    """One update: clips grads (see fit's clip; float32 arrays in place) and lets `optimizer`
    (an rnnext.optim.SGD, Adam or AdamW) change the parameters. Keys of grads that are not
    parameters (an initial state's "state") are left out."""
    from .model import _float32_array

    if not isinstance(optimizer, (optim.SGD, optim.Adam)):
        raise TypeError(f"optimizer: expected an rnnext.optim.SGD, Adam or AdamW, got "
                        f"{type(optimizer).__name__}")
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads: expected a dict of arrays by parameter name, got "
                        f"{type(grads).__name__}")
    missing = [name for name in model.param_shapes() if name not in grads]
    if missing:
        raise ValueError(f"grads: expected a gradient for every parameter, missing {missing}")
    grads = {name: _float32_array(f"grads[{name!r}]", grads[name])
             for name in model.param_shapes()}
    for name, shape in model.param_shapes().items():
        if grads[name].shape != shape:
            raise ValueError(f"grads[{name!r}]: expected shape {shape}, got {grads[name].shape}")
    optim.clip_grads(grads, clip)
    optimizer.step(model.params, grads)
    model._params_changed()


def fit(model, x, y, lengths=None, epochs=10, batch_size=32, optimizer="adam", lr=None,
        clip=None, loss="cross_entropy", shuffle=True, validation_data=None, bptt=None,
        seed=None, verbose=True, n_threads=None, backend=None, mask=None, weight_decay=None,
        callbacks=None, dropout=0.0, input_dropout=0.0, head_dropout=0.0):
    """Trains the model on (x, y) with minibatches; returns the history, a dict of lists
    per epoch: "loss" (and "accuracy" for classification losses), "val_loss" and
    "val_accuracy" with validation_data, and "lr", the learning rate of the epoch.

    x, y, lengths, loss: as loss_and_grads, for the whole training set.
    optimizer: "adam", "adamw" or "sgd" (with lr and weight_decay, or the default's), or an
    rnnext.optim.SGD, Adam or AdamW (then lr and weight_decay stay None).
    weight_decay: L2 added to the gradient for "sgd" and "adam", decoupled for "adamw" (see
    rnnext.optim).
    clip: None, a number (clip the gradients' global norm to it), ("norm", x) or
    ("value", x) (clip every gradient entry to [-x, x]).
    shuffle: a new order of the sequences each epoch, drawn from seed.
    validation_data: (x, y) or (x, y, lengths), evaluated after each epoch.
    bptt: None, or truncated backpropagation through time for a many-to-many model: each
    batch's sequences are cut into chunks of bptt steps, an update after each chunk, the
    state carried (without gradient) from chunk to chunk and reset for each batch.
    verbose: a progress bar on a terminal, one line per epoch elsewhere; False for none (1 and
    0 as Keras writes them).
    callbacks: None or a list of rnnext.callbacks (early stopping, checkpoints, learning-rate
    schedules, or your own), called after each epoch; one returning True stops training.
    dropout, input_dropout, head_dropout: rates in [0, 1) of PyTorch's inverted dropout, in
    training only (predict, evaluate and validation_data see the identity): each element is
    zeroed with probability p and the others scaled by 1/(1-p), drawn from seed afresh for
    every element, time step, batch and bptt chunk. dropout: on the outputs of every recurrent
    layer but the last (nn.LSTM(num_layers=n, dropout=p); nothing with one layer; a
    bidirectional layer's merged output). input_dropout: on the first recurrent layer's input
    (after the embedding; nn.Dropout after the input or nn.Embedding). head_dropout: on the
    features the dense layers read (nn.Dropout before nn.Linear; Keras Dropout before Dense).
    Keras's per-layer dropout with one mask for all steps and its recurrent_dropout are not
    implemented: these are PyTorch's semantics."""
    from .model import _positive_int

    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    shuffle = L._bool("shuffle", shuffle)
    if type(verbose) is int and verbose in (0, 1):   # Keras's habit: 0 silent, 1 progress
        verbose = bool(verbose)
    verbose = L._bool("verbose", verbose)
    rng = L.random_generator(seed)
    draw_masks = _mask_drawer(_logits_spec(model.spec),
                              _dropout_rates(model, dropout, input_dropout, head_dropout), rng)
    opt = optim.make_optimizer(optimizer, lr, weight_decay)
    callbacks = cb.checked_callbacks(callbacks)
    optim.parse_clip(clip)
    params, backend, activation, x, states, lengths, mask, target, _, n_threads = _validated(
        model, x, y, lengths, mask, loss, None, None, backend, n_threads)
    bptt = _checked_bptt(model, bptt, lengths)
    if validation_data is not None:
        val = _checked_validation_data(model, validation_data, loss, backend, bptt)

    def train_step(out):
        apply_grads(model, out["grads"], opt, clip)

    history = {}
    progress = _Progress(verbose, epochs)
    B = x.shape[0]
    cb.call_hooks(callbacks, "on_train_begin", model, opt)
    for epoch in range(1, epochs + 1):
        progress.begin(epoch)
        epoch_lr = opt.lr
        order = rng.permutation(B) if shuffle else np.arange(B)
        data = (model.params, x, states, lengths, mask, target)
        mean_loss, acc = _run_epoch(model, data, order, batch_size, bptt, loss, activation,
                                    backend, n_threads, train_step, progress.batch, draw_masks)
        record = {"loss": mean_loss}
        if acc is not None:
            record["accuracy"] = acc
        if validation_data is not None:
            _, _, _, vx, vstates, vlen, vmask, vtarget, _, _ = val
            vloss, vacc = _run_epoch(model, (model.params, vx, vstates, vlen, vmask, vtarget),
                                     np.arange(vx.shape[0]), batch_size, bptt, loss,
                                     activation, backend, n_threads, None, None)
            record["val_loss"] = vloss
            if vacc is not None:
                record["val_accuracy"] = vacc
        record["lr"] = epoch_lr
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        progress.end(record)
        if cb.call_hooks(callbacks, "on_epoch_end", epoch, history, model, opt):
            break
    cb.call_hooks(callbacks, "on_train_end", model, history)
    return history


def evaluate(model, x, y, lengths=None, loss="cross_entropy", batch_size=None, bptt=None,
             n_threads=None, backend=None, mask=None):
    """{"loss": mean loss, "accuracy": fraction right (classification losses)} on (x, y),
    with the current parameters, in batches of batch_size (None for one batch) and, with
    bptt, in chunks of bptt steps that carry the state (as fit)."""
    from .model import _positive_int

    params, backend, activation, x, states, lengths, mask, target, _, n_threads = _validated(
        model, x, y, lengths, mask, loss, None, None, backend, n_threads)
    bptt = _checked_bptt(model, bptt, lengths)
    B = x.shape[0]
    batch_size = B if batch_size is None else _positive_int("batch_size", batch_size)
    mean_loss, acc = _run_epoch(model, (params, x, states, lengths, mask, target), np.arange(B),
                                batch_size, bptt, loss, activation, backend, n_threads, None,
                                None)
    result = {"loss": mean_loss}
    if acc is not None:
        result["accuracy"] = acc
    return result

# ----------------------------------------------------------------------------------------------
# the compiled core's training resources

def training_tape(model, core, B, T):
    """This thread's training tape of the compiled core for (B, T), kept while it fits: a
    tape holds one forward pass until its backward pass, so threads never share one."""
    from ._core import CoreTape

    tape = getattr(model._tapes, "tape", None)
    if tape is None or not tape.fits(core, B, T):
        tape = model._tapes.tape = CoreTape(core, B, T)
    return tape
