"""Model: a stack of recurrent layers with an optional dense head, on the compiled core or NumPy.

Arrays are batch-first: x is (B, T, I), or (T, I) for one sequence. lengths (B,) gives each
sequence's valid steps: outputs past a length are zero and the final state is the one at the last
valid step (PyTorch's packed-sequence semantics, without packing). States are in PyTorch's
(L*D, B, H) order: an array h, or a tuple (h, c) for the LSTM.

NaN and inf in x are not checked: they flow through the maths as IEEE arithmetic says, on both
backends, and reach only the outputs and states of the sequences that hold them, from that step
on (a NaN at step t makes that sequence's later states NaN; other sequences are unaffected).
"""
import threading

import numpy as np

from . import reference
from .config import resolve_threads
from .train import TrainingMixin

CELL_NAMES = ("rnn", "lstm", "gru")
BACKENDS = ("c", "numpy")
OUTPUTS = ("many_to_one", "many_to_many")
ACTIVATIONS = (None, "softmax", "sigmoid")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


MAX_SIZE = 1 << 24  # the core's RNX_MAX_SIZE


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{name}: expected an int in [1, {MAX_SIZE}], got {value}")
    return int(value)


def _float32_array(name, value):
    """value as a C-contiguous float32 array (a copy only where needed). Real numbers only:
    booleans, integers and floats; complex, object, string and date arrays are refused."""
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise TypeError(f"{name}: expected an array of real numbers, got {type(value).__name__}"
                        f" ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected an array of real numbers (bool, int or float), got "
                        f"dtype {arr.dtype}")
    return arr.astype(np.float32, order="C", copy=False)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Model(TrainingMixin):
    """A stack of RNN, LSTM or GRU layers with an optional dense head.

    cell: "rnn", "lstm" or "gru"; nonlinearity: "tanh" or "relu" (RNN only).
    linear_before_reset (GRU only): True for PyTorch's GRU (ONNX linear_before_reset=1, Keras
    reset_after=True); False for the variant that applies the reset before the recurrent product.
    output_size: None for no head, else the width of a dense head (weight (O, D*H), bias (O,))
    applied to each sequence's last valid step (output="many_to_one") or to every step
    ("many_to_many"), then activation: None, "softmax" or "sigmoid".
    seed: initialisation as PyTorch does it: recurrent weights and biases uniform in
    [-1/sqrt(H), 1/sqrt(H)], the head's in [-1/sqrt(D*H), 1/sqrt(D*H)].
    params: optional {name: array} with PyTorch's names and shapes (weight_ih_l0, ...,
    head.weight, head.bias) to use instead of the random initialisation.
    backend: "c" (compiled, the default) or "numpy" (the reference); each call can override it.
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bidirectional=False,
                 nonlinearity="tanh", output_size=None, output="many_to_one", activation=None,
                 seed=None, backend="c", params=None, linear_before_reset=True):
        cell = _choice("cell", cell.lower() if isinstance(cell, str) else cell, CELL_NAMES)
        self.nonlinearity = _choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        if cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: only the 'rnn' cell takes one, got {nonlinearity!r} "
                             f"for cell {cell!r}")
        if cell != "gru" and not linear_before_reset:
            raise ValueError(f"linear_before_reset: only the 'gru' cell takes False, got cell "
                             f"{cell!r}")
        self.cell = cell
        self.linear_before_reset = bool(linear_before_reset)
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        self.output_size = None if output_size is None else _positive_int("output_size", output_size)
        self.output = _choice("output", output, OUTPUTS)
        self.activation = _choice("activation", activation, ACTIVATIONS)
        self.backend = _choice("backend", backend, BACKENDS)
        self._core = None
        self._tapes = threading.local()  # the compiled core's training tape (train.py), one
        # per thread, kept across steps
        self.params = self._initial_params(seed) if params is None else self._checked_params(params)

    # ------------------------------------------------------------------------------------------
    # parameters

    @property
    def core_cell(self):
        """The cell's name in the core and the reference: rnn_tanh, rnn_relu, lstm, gru or
        gru_reset_before."""
        if self.cell == "rnn":
            return f"rnn_{self.nonlinearity}"
        if self.cell == "gru" and not self.linear_before_reset:
            return "gru_reset_before"
        return self.cell

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def param_shapes(self):
        """{name: shape} of every parameter, in PyTorch's names and order."""
        shapes = reference.param_shapes(self.core_cell, self.input_size, self.hidden_size,
                                        self.num_layers, self.bidirectional)
        if self.output_size is not None:
            shapes["head.weight"] = (self.output_size, self.num_directions * self.hidden_size)
            shapes["head.bias"] = (self.output_size,)
        return shapes

    def _initial_params(self, seed):
        rng = np.random.default_rng(seed)
        params = {}
        for name, shape in self.param_shapes().items():
            fan_in = self.num_directions * self.hidden_size if name.startswith("head.") \
                else self.hidden_size
            bound = 1.0 / np.sqrt(fan_in)
            params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        return params

    def _checked_params(self, params):
        shapes = self.param_shapes()
        missing = [n for n in shapes if n not in params]
        extra = [n for n in params if n not in shapes]
        if missing or extra:
            raise ValueError(f"params: expected exactly {list(shapes)}, missing {missing}, "
                             f"unexpected {extra}")
        out = {}
        for name, shape in shapes.items():
            arr = _float32_array(f"params[{name!r}]", params[name])
            if arr.shape != shape:
                raise ValueError(f"params[{name!r}]: expected shape {shape}, got {arr.shape}")
            out[name] = arr.copy()
        return out

    def set_params(self, params):
        """Replaces the parameters (all of them, same names and shapes)."""
        self.params = self._checked_params(params)
        self._core = None

    def core(self):
        """The compiled model, packed once from the parameters and kept until they change."""
        if self._core is None:
            self._core = self._core_from(self.params)
        return self._core

    # ------------------------------------------------------------------------------------------
    # input checks

    def _inputs(self, x, state, lengths):
        """Validated (x (B, T, I), h0, c0, lengths or None, unbatched)."""
        x = _float32_array("x", x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected (B, T, {self.input_size}) or (T, {self.input_size}), "
                             f"got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        B, T, I = x.shape
        if I != self.input_size:
            raise ValueError(f"x: expected {self.input_size} features in the last axis, got shape "
                             f"{x.shape if not unbatched else x.shape[1:]}")
        if B == 0:
            raise ValueError(f"x: expected a batch of at least one sequence, got shape {x.shape}")
        if T == 0:
            raise ValueError(f"x: expected at least one time step, got shape "
                             f"{x.shape if not unbatched else x.shape[1:]}")
        if lengths is not None:
            lengths = self._lengths(lengths, B, T, unbatched)
        h0, c0 = self._state(state, B, unbatched)
        return x, h0, c0, lengths, unbatched

    @staticmethod
    def _lengths(lengths, B, T, unbatched):
        arr = np.asarray(lengths)
        if unbatched and arr.ndim == 0:
            arr = arr[None]
        if arr.dtype.kind not in "iu":
            raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
        if arr.shape != (B,):
            raise ValueError(f"lengths: expected shape ({B},), got {arr.shape}")
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths: expected values in [1, {T}] (T = {T}), got min "
                             f"{arr.min()} and max {arr.max()}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _state(self, state, B, unbatched):
        if state is None:
            return None, None
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        want = (LD, H) if unbatched else (LD, B, H)
        if self.cell == "lstm":
            if not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise TypeError(f"state: expected a tuple (h, c) of arrays {want} for the LSTM, "
                                f"got {type(state).__name__}")
            parts = [("state[0] (h)", state[0]), ("state[1] (c)", state[1])]
        else:
            parts = [("state", state)]
        arrays = []
        for name, value in parts:
            arr = _float32_array(name, value)
            if arr.shape != want:
                raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
            arrays.append(np.ascontiguousarray(arr[:, None] if unbatched else arr))
        return arrays[0], (arrays[1] if len(arrays) == 2 else None)

    # ------------------------------------------------------------------------------------------
    # running

    def _recurrent(self, x, h0, c0, lengths, n_threads, backend, need_sequence):
        """The stack over x: (y (B, T, D*H) or None, h_n, c_n or None)."""
        backend = _choice("backend", self.backend if backend is None else backend, BACKENDS)
        n_threads = resolve_threads(n_threads)
        if backend == "numpy":
            y, h_n, c_n = reference.forward(self.core_cell, self.params, x, self.num_layers,
                                            self.bidirectional, h0, c0, lengths)
            return y, h_n, c_n
        B, T, _ = x.shape
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        y = np.empty((B, T, self.num_directions * H), np.float32) if need_sequence else None
        h_n = np.empty((LD, B, H), np.float32)
        c_n = np.empty((LD, B, H), np.float32) if self.cell == "lstm" else None
        self.core().forward(y, h_n, c_n, x, h0, c0, lengths, n_threads)
        return y, h_n, c_n

    def _last_valid(self, y, h_n, lengths):
        """Each sequence's output at its last valid step, (B, D*H)."""
        if y is None:  # one direction: the top layer's final state is that output
            return h_n[-1]
        B, T, _ = y.shape
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        return y[np.arange(B), last]

    def _head(self, features):
        z = features @ self.params["head.weight"].T + self.params["head.bias"]
        if self.activation == "softmax":
            return _softmax(z)
        if self.activation == "sigmoid":
            return reference.sigmoid(z)
        return z

    def forward(self, x, state=None, lengths=None, n_threads=None, backend=None):
        """Runs the model. Returns (y, state).

        y: without a head, the recurrent output sequence (B, T, D*H); with a many-to-one head,
        the head on each sequence's last valid step (B, O); with a many-to-many head, the head on
        every step (B, T, O), zero past each length. For a (T, I) input the batch axis is dropped.
        state: h_n, or (h_n, c_n) for the LSTM, each (L*D, B, H); pass it back to continue.
        n_threads: None for all available, n >= 1, or negative to count back from the maximum.
        """
        x, h0, c0, lengths, unbatched = self._inputs(x, state, lengths)
        many_to_one = self.output_size is not None and self.output == "many_to_one"
        need_sequence = not (many_to_one and self.num_directions == 1)
        y, h_n, c_n = self._recurrent(x, h0, c0, lengths, n_threads, backend, need_sequence)
        if self.output_size is None:
            out = y
        elif many_to_one:
            out = self._head(self._last_valid(y, h_n, lengths))
        else:
            out = self._head(y)
            if lengths is not None:
                out[np.arange(y.shape[1])[None, :] >= lengths[:, None]] = 0.0
        if unbatched:
            out, h_n = out[0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        return out, ((h_n, c_n) if self.cell == "lstm" else h_n)

    def predict(self, x, lengths=None, n_threads=None, backend=None):
        """The head's output (as forward's y), or without a head each sequence's output at its
        last valid step, (B, D*H) (or (D*H,) for a (T, I) input)."""
        if self.output_size is not None:
            return self.forward(x, lengths=lengths, n_threads=n_threads, backend=backend)[0]
        x, h0, c0, lengths, unbatched = self._inputs(x, None, lengths)
        y, h_n, _ = self._recurrent(x, h0, c0, lengths, n_threads, backend,
                                    need_sequence=self.num_directions == 2)
        out = self._last_valid(y, h_n, lengths)
        return out[0] if unbatched else out

    def stream(self, batch=1, backend=None):
        """A Stream that runs this (unidirectional) model one step at a time over `batch`
        sequences, the state kept inside: step(x_t), reset(), state."""
        from .stream import Stream

        batch = _positive_int("batch", batch)
        return Stream(self, batch, _choice("backend", self.backend if backend is None else backend,
                                           BACKENDS))

    # ------------------------------------------------------------------------------------------
    # files, pickling and export

    def to_bytes(self):
        """The model as the bytes of an rnnext (safetensors) file; rnnext.load reads them back."""
        from . import io

        return io.to_bytes(self)

    def save(self, path):
        """Writes the model to `path` as an rnnext (safetensors) file; rnnext.load reads it."""
        from . import io

        io.save(self, path)

    def __reduce__(self):
        # the weights travel as the file's bytes; the compiled model is rebuilt on first use
        from . import io

        return io._unpickle, (self.to_bytes(), self.backend)

    def to_onnx(self, path=None, opset=17):
        """The model as an ONNX graph (see rnnext.onnx_io.to_onnx), written to `path` if given."""
        from .onnx_io import to_onnx

        return to_onnx(self, path, opset=opset)

    def __repr__(self):
        cell = f"rnn({self.nonlinearity})" if self.cell == "rnn" else self.cell
        if self.core_cell == "gru_reset_before":
            cell = "gru(linear_before_reset=False)"
        head = "" if self.output_size is None else (
            f", output_size={self.output_size}, output={self.output!r}, "
            f"activation={self.activation!r}")
        return (f"Model({cell}, input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}{head}, "
                f"backend={self.backend!r})")
