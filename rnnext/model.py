"""Model: a list of layers (rnnext.layers) on the compiled core or the NumPy reference.

A model is [Embedding | Masking]? (RNN|LSTM|GRU)+ [Readout]? Dense* (see rnnext.layers). x is
batch-first: float (B, T, I), or int token ids (B, T) for a model that starts with an Embedding;
one sequence may drop the batch axis. lengths (B,) gives each sequence's valid steps (PyTorch's
packed-sequence semantics, without packing); mask (B, T) marks them one by one (Keras's
semantics: a masked step leaves the states as they are and outputs zeros). A Masking layer masks
the steps of x whose features all equal its mask_value (the compiled core reads them from x as
it steps), and an Embedding with mask_zero those of id 0; with lengths or mask as well, a step
is valid where both say so. Outputs at invalid steps are zero and a final state is the one after
the last valid step.

States: for a model whose recurrent layers are what one torch.nn.RNN/LSTM/GRU can be (the same
cell, sizes and directions), PyTorch's stacked arrays h (L*D, B, S), or (h, c) for the LSTM;
otherwise a list with one entry per recurrent layer: h (D, B, S) or (h, c) with c (D, B, H).

Precision: "fp32" (the default), "bf16" or "int8", per model and per call (forward, predict,
stream).
At "bf16" the recurrent layers' weight_ih, weight_hh and weight_hr are rounded to bfloat16
(nearest, ties to even; reference.bf16_round) and the compiled core keeps them as 16-bit values
(half the bytes a step reads); each input of each product with them (a step's x, h or r*h) is
rounded the same way when it is used, as PyTorch's bf16 autocast and the CPUs' bfloat16 products
(vdpbf16ps, AMX) do, and every product accumulates in float32; biases, peepholes, gates,
states, the embedding and the dense layers stay float32. The "numpy" backend at "bf16" runs the
same maths (reference.Bf16Weight).
At "int8" (dynamic quantization; rnnext.h's RNX_PRECISION_INT8) each row of weight_ih and
weight_hh is quantized symmetrically to int8 once, each input of each product (a step's x or h,
per sequence) to uint8 with its own scale and zero point when it is used, and the products
are summed exactly in integers; the "numpy" backend computes the same integers
(reference.Int8Weight). int8 runs the packed kernels' cells only (layers.int8_unsupported says
why a layer is refused). Training (fit, loss_and_grads) and evaluate run in fp32 only.

NaN and inf in x are not checked: they flow through the maths as IEEE arithmetic says, on both
backends, and reach only the outputs and states of the sequences that hold them, from that step
on.
"""
import math
import threading

import numpy as np

from . import layers as L
from . import reference
from ._core import MAX_SIZE, PRECISIONS, check_batch
from .config import resolve_threads

BACKENDS = ("c", "numpy")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{name}: expected an int in [1, {MAX_SIZE}], got {value}")
    return int(value)


def _asarray(name, value, expected):
    """np.asarray(value), or a TypeError naming the argument where NumPy cannot make one."""
    try:
        return np.asarray(value)
    except Exception as e:
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} ({e})") \
            from None


def _float32_array(name, value, dtype=np.float32):
    """value as a C-contiguous float32 (or dtype) array (a copy only where needed). Real numbers
    only: booleans, integers and floats; complex, object, string and date arrays are refused."""
    return _real_array(name, value).astype(dtype, order="C", copy=False)


def _real_array(name, value):
    """value as an array (no copy of an array), refused unless of real numbers, as
    _float32_array: for checks that must come before any copy."""
    arr = _asarray(name, value, "an array of real numbers")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected an array of real numbers (bool, int or float), got "
                        f"dtype {arr.dtype}")
    return arr


_SHORTHAND_DEFAULTS = dict(hidden_size=None, num_layers=1, bidirectional=False,
                           nonlinearity="tanh", output_size=None, output="many_to_one",
                           activation=None, linear_before_reset=True)


class Model:
    """A list of layers: Model([Embedding(..) or Masking(..)?, LSTM(..), GRU(..), ..,
    Readout(..)?, Dense(..), ..], input_size=I) (input_size: the features of x; None with an
    Embedding).

    The shorthand Model(cell, input_size, hidden_size, num_layers=1, bidirectional=False,
    nonlinearity="tanh", output_size=None, output="many_to_one", activation=None,
    linear_before_reset=True) is a uniform stack of "rnn", "lstm" or "gru" layers, then, with
    output_size, a dense layer of that width with `activation` on each sequence's last valid
    step (output="many_to_one") or on every step ("many_to_many").

    seed: None or an int >= 0, for PyTorch's initialisation (rnnext.layers.init_params).
    params: {name: array} with the names and shapes of param_shapes() instead. backend: "c"
    (compiled, the default) or "numpy" (the reference); precision: "fp32" (the default), "bf16"
    or "int8" (see the module's docstring); each call can override both.
    """

    def __init__(self, layers=None, input_size=None, hidden_size=None, num_layers=1,
                 bidirectional=False, nonlinearity="tanh", output_size=None,
                 output="many_to_one", activation=None, seed=None, backend="c", params=None,
                 linear_before_reset=True, *, cell=None, precision="fp32"):
        shorthand = dict(hidden_size=hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, nonlinearity=nonlinearity,
                         output_size=output_size, output=output, activation=activation,
                         linear_before_reset=linear_before_reset)
        if cell is not None or isinstance(layers, str):
            if cell is not None and layers is not None:
                raise TypeError(f"cell: give the cell or a layer list, not both; got cell={cell!r}"
                                f" and layers={layers!r}")
            cell = layers if cell is None else cell
            cell = _choice("cell", cell.lower() if isinstance(cell, str) else cell,
                           ("rnn", "lstm", "gru"))
            if hidden_size is None:
                raise TypeError("hidden_size: the shorthand Model(cell, input_size, hidden_size, "
                                "...) needs it, got None")
            for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                                ("num_layers", num_layers)):
                _positive_int(name, value)
            layers, input_size = L.shorthand(cell, input_size, hidden_size, **{
                k: v for k, v in shorthand.items() if k != "hidden_size"})
        else:
            given = [k for k, v in shorthand.items()  # 0 for False counts as given
                     if type(v) is not type(_SHORTHAND_DEFAULTS[k]) or v != _SHORTHAND_DEFAULTS[k]]
            if given:
                raise TypeError(f"{given[0]}: a shorthand argument, for Model(cell, input_size, "
                                f"hidden_size, ...); a layer list states it in its layers")
            if input_size is not None:
                _positive_int("input_size", input_size)
        self.spec = L.build(list(layers), input_size)
        self.backend = _choice("backend", backend, BACKENDS)
        self.precision = precision
        self._cores = {}  # {precision: the compiled model}, each built when first used
        self._rounded = {}  # {precision: the parameters as the reference runs them}
        self._tapes = threading.local()  # the compiled core's training tape (train.py), one
        # per thread, kept across steps
        self.params = L.init_params(self.spec, seed) if params is None else \
            self._checked_params(params)

    # ------------------------------------------------------------------------------------------
    # what the model is

    @property
    def layers(self):
        return self.spec.layers

    @property
    def input_size(self):
        """Features of x, or None for a model that takes token ids."""
        return self.spec.input_size

    @property
    def output_size(self):
        """The width of the model's output (its last axis)."""
        return self.spec.output_size

    @property
    def per_step(self):
        """Whether the output has a time axis: (B, T, F) rather than (B, F)."""
        return self.spec.readout == "sequence"

    def param_shapes(self):
        """{name: shape} of every parameter, in the order of the file and the C core."""
        return L.param_shapes(self.spec)

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
        self._params_changed()

    def _params_changed(self):
        """After the parameters changed: the compiled model is packed again when next used, and
        the compiled streams made from the old one move to the new one at their next step."""
        for core in self._cores.values():
            core.retire()
        self._cores = {}
        self._rounded = {}

    @property
    def precision(self):
        """The precision calls run at unless they name one: "fp32", "bf16" or "int8"."""
        return self._model_precision

    @precision.setter
    def precision(self, value):
        self._model_precision = self._checked_precision(value)

    def _call_precision(self, precision):
        """A call's precision: the model's for None, else one of PRECISIONS."""
        return self.precision if precision is None else self._checked_precision(precision)

    def _checked_precision(self, precision):
        """precision, one of PRECISIONS that this model's layers can run at."""
        _choice("precision", precision, tuple(PRECISIONS))
        if precision == "int8":
            for r in self.spec.recurrent:
                why = L.int8_unsupported(r)
                if why:
                    raise ValueError(f"precision: 'int8' runs the LSTM, the GRU with the reset "
                                     f"after the product and the RNN, with their default "
                                     f"activations, no other options and at most "
                                     f"{L.INT8_MAX_K} inputs and units; recurrent layer "
                                     f"{r.index} ({r.layer_type}) has {why}")
        return precision

    def core(self, precision=None):
        """The compiled model at `precision` (None: the model's), packed once from the
        parameters and kept until they change."""
        precision = self._call_precision(precision)
        if precision not in self._cores:
            self._cores[precision] = self._core_from(self.params, precision)
        return self._cores[precision]

    def _params_at(self, precision):
        """The parameters as the NumPy reference runs them at `precision` (a PRECISIONS name;
        reference.at_precision), rounded once and kept until they change."""
        if precision not in self._rounded:
            self._rounded[precision] = reference.at_precision(self.spec, self.params,
                                                              precision)
        return self._rounded[precision]

    def _core_from(self, params, precision="fp32"):
        from ._core import CoreModel

        flat = np.concatenate([np.asarray(params[n], np.float32).ravel()
                               for n in self.param_shapes()])
        return CoreModel(L.core_layers(self.spec), flat, precision=precision)

    # ------------------------------------------------------------------------------------------
    # input checks

    def _inputs(self, x, state, lengths, mask=None):
        """Validated (x: float32 (B, T, I) or int32 ids (B, T), states or None, lengths or None,
        mask or None, unbatched)."""
        spec = self.spec
        if spec.embedding is not None:
            x, unbatched = self._ids(x)
            B, T = x.shape
        else:
            x = _real_array("x", x)
            I = spec.input_size
            if x.ndim not in (2, 3):
                raise ValueError(f"x: expected (B, T, {I}) or (T, {I}), got shape {x.shape}")
            unbatched = x.ndim == 2
            if unbatched:
                x = x[None]
            B, T, features = x.shape
            if features != I:
                raise ValueError(f"x: expected {I} features in the last axis, got shape "
                                 f"{x.shape[1:] if unbatched else x.shape}")
            check_batch("x", B, T, x.shape[1:] if unbatched else x.shape)
            x = x.astype(np.float32, order="C", copy=False)
        shown = x.shape[1:] if unbatched else x.shape
        if B == 0:
            raise ValueError(f"x: expected a batch of at least one sequence, got shape {x.shape}")
        if T == 0:
            raise ValueError(f"x: expected at least one time step, got shape {shown}")
        if lengths is not None and mask is not None:
            raise ValueError("mask: give lengths or mask, not both; got both")
        if lengths is not None:
            lengths = self._lengths(lengths, B, T, unbatched)
        if mask is not None:
            mask = self._mask(mask, B, T, unbatched)
        return x, self._state(state, B, unbatched), lengths, mask, unbatched

    def _ids(self, x):
        arr = self._id_array(x)
        if arr.ndim not in (1, 2):
            raise ValueError(f"x: expected token ids (B, T) or (T,), got shape {arr.shape}")
        unbatched = arr.ndim == 1
        if unbatched:
            arr = arr[None]
        check_batch("x", *arr.shape, arr.shape[1:] if unbatched else arr.shape)
        return self._in_vocabulary(arr), unbatched

    @staticmethod
    def _id_array(x):
        """x as an array of integer token ids, any shape (forward's x and a stream's step)."""
        arr = _asarray("x", x, "integer token ids")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"x: expected integer token ids for a model with an Embedding, got "
                            f"dtype {arr.dtype}")
        return arr

    def _in_vocabulary(self, ids):
        """Integer token ids as C-contiguous int32, refused unless all are in [0, vocab_size)."""
        V = self.spec.embedding.vocab_size
        if ids.size <= 64:  # a stream step's few ids: NumPy's reductions cost more than Python's
            values = ids.ravel().tolist()
            lo, hi = (min(values), max(values)) if values else (0, 0)
        else:
            lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= V:
            raise ValueError(f"x: expected token ids in [0, {V}) (vocab_size {V}), got min {lo} "
                             f"and max {hi}")
        return ids.astype(np.int32, order="C", copy=False)

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

    @staticmethod
    def _mask(mask, B, T, unbatched):
        arr = np.asarray(mask)
        if arr.dtype.kind not in "biu":
            raise TypeError(f"mask: expected booleans, got dtype {arr.dtype}")
        want = (T,) if unbatched else (B, T)
        if arr.shape != want:
            raise ValueError(f"mask: expected shape {want}, got {arr.shape}")
        return np.ascontiguousarray((arr != 0).reshape(B, T))

    def _state_shapes(self, B):
        """[(h shape, c shape or None)] per recurrent layer."""
        return [((r.num_directions, B, r.state_size),
                 (r.num_directions, B, r.units) if r.cell == "lstm" else None)
                for r in self.spec.recurrent]

    def _state_buffers(self, B):
        """Empty flat (h, c) float32 arrays as the core writes states (per recurrent layer and
        direction a (B, S) block; c over the LSTM layers), and the states' shapes."""
        shapes = self._state_shapes(B)
        h = np.empty(sum(math.prod(h) for h, _ in shapes), np.float32)
        c = np.empty(sum(math.prod(c) for _, c in shapes if c is not None), np.float32)
        return h, c, shapes

    def _state(self, state, B, unbatched, dtype=np.float32):
        """The caller's state as [(h (D, B, S), c (D, B, H) or None)] in dtype, or None."""
        if state is None:
            return None
        shapes = self._state_shapes(B)
        lstm = shapes[0][1] is not None

        def shown(shape):
            return (shape[0],) + shape[2:] if unbatched else shape

        if self.spec.uniform:
            LD = sum(h[0] for h, _ in shapes)
            h_shape = shown((LD,) + shapes[0][0][1:])
            parts = self._state_parts("state", state, lstm, h_shape,
                                      shown((LD,) + shapes[0][1][1:]) if lstm else None, dtype)
            arrays = [np.ascontiguousarray(a[:, None] if unbatched else a) for a in parts]
            out, k = [], 0
            for h, _ in shapes:
                out.append((arrays[0][k:k + h[0]], arrays[1][k:k + h[0]] if lstm else None))
                k += h[0]
            return out
        if not isinstance(state, (list, tuple)) or len(state) != len(shapes):
            raise TypeError(f"state: expected a list of {len(shapes)} states, one per recurrent "
                            f"layer, got {type(state).__name__}")
        out = []
        for k, (entry, (h, c)) in enumerate(zip(state, shapes)):
            parts = self._state_parts(f"state[{k}]", entry, c is not None, shown(h),
                                      None if c is None else shown(c), dtype)
            arrays = [np.ascontiguousarray(a[:, None] if unbatched else a) for a in parts]
            out.append((arrays[0], arrays[1] if c is not None else None))
        return out

    @staticmethod
    def _state_parts(name, value, lstm, h_shape, c_shape, dtype):
        if lstm:
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise TypeError(f"{name}: expected a tuple (h, c) of arrays {h_shape} and "
                                f"{c_shape} for an LSTM, got {type(value).__name__}")
            parts = [(f"{name}[0] (h)", value[0], h_shape), (f"{name}[1] (c)", value[1], c_shape)]
        else:
            parts = [(name, value, h_shape)]
        arrays = []
        for part, v, shape in parts:
            arr = _float32_array(part, v, dtype)
            if arr.shape != shape:
                raise ValueError(f"{part}: expected shape {shape}, got {arr.shape}")
            arrays.append(arr)
        return arrays

    def _state_out(self, states, unbatched):
        """forward's state from [(h, c)] per recurrent layer (see the module's docstring)."""
        if unbatched:
            states = [(h[:, 0], None if c is None else c[:, 0]) for h, c in states]
        if self.spec.uniform:
            h = np.concatenate([h for h, _ in states])
            if states[0][1] is None:
                return h
            return h, np.concatenate([c for _, c in states])
        return [h if c is None else (h, c) for h, c in states]

    # ------------------------------------------------------------------------------------------
    # running

    def _run(self, x, states, lengths, mask, n_threads, backend, precision=None):
        """The whole model over validated inputs: (y, [(h_n, c_n)] per recurrent layer)."""
        backend = _choice("backend", self.backend if backend is None else backend, BACKENDS)
        precision = self._call_precision(precision)
        n_threads = resolve_threads(n_threads)
        if backend == "numpy":
            return reference.forward_model(self.spec, self._params_at(precision), x, states,
                                           lengths, mask)
        B, T = x.shape[:2]
        y = np.empty((B, T, self.output_size) if self.per_step else (B, self.output_size),
                     np.float32)
        h_n, c_n, shapes = self._state_buffers(B)
        h0, c0 = self._flat_states(states)
        ids = x if self.spec.embedding is not None else None
        self.core(precision).forward(y, h_n, c_n, None if ids is not None else x, ids, h0, c0,
                                     lengths, mask, n_threads)
        return y, self._split_states(h_n, c_n, shapes)

    @staticmethod
    def _flat_states(states):
        """The core's flat float32 (h, c) of [(h, c)] per recurrent layer (the inverse of
        _split_states), or (None, None)."""
        if states is None:
            return None, None
        h = np.concatenate([np.asarray(h, np.float32).ravel() for h, _ in states])
        c = np.concatenate([np.asarray(c, np.float32).ravel() for _, c in states if c is not None]
                           or [np.empty(0, np.float32)])
        return h, c

    @staticmethod
    def _split_states(h_flat, c_flat, shapes):
        """[(h, c)] per recurrent layer from the core's flat state arrays."""
        out, hi, ci = [], 0, 0
        for h_shape, c_shape in shapes:
            n = math.prod(h_shape)
            h = h_flat[hi:hi + n].reshape(h_shape)
            hi += n
            c = None
            if c_shape is not None:
                n = math.prod(c_shape)
                c = c_flat[ci:ci + n].reshape(c_shape)
                ci += n
            out.append((h, c))
        return out

    def forward(self, x, state=None, lengths=None, mask=None, n_threads=None, backend=None,
                precision=None):
        """Runs the model. Returns (y, state).

        y: the model's output: (B, T, F) when it has no readout (or Readout("sequence")), zero
        at invalid steps; else (B, F). For one unbatched sequence the batch axis is dropped.
        state: the final states (see the module's docstring); pass it back to continue.
        n_threads: None for all available, n >= 1, or negative to count back from the maximum.
        precision: None for the model's, or "fp32", "bf16" or "int8" for this call.
        """
        x, states, lengths, mask, unbatched = self._inputs(x, state, lengths, mask)
        y, states = self._run(x, states, lengths, mask, n_threads, backend, precision)
        return (y[0] if unbatched else y), self._state_out(states, unbatched)

    def predict(self, x, lengths=None, mask=None, n_threads=None, backend=None, precision=None):
        """The model's output, as forward's y."""
        return self.forward(x, lengths=lengths, mask=mask, n_threads=n_threads,
                            backend=backend, precision=precision)[0]

    def stream(self, batch=1, backend=None, precision=None):
        """A Stream that runs this model one step at a time over `batch` sequences, the state
        kept inside: step(x_t or token ids), reset(), state. The recurrent layers must all run
        forward, and the readout be none, "last" or "final". The stream follows the model's
        parameters (set_params, apply_grads, fit) from its next step on. precision: None for
        the model's, or "fp32", "bf16" or "int8"."""
        from .stream import Stream

        batch = _positive_int("batch", batch)
        return Stream(self, batch, _choice("backend", self.backend if backend is None else backend,
                                           BACKENDS), self._call_precision(precision))

    # ------------------------------------------------------------------------------------------
    # training: rnnext.train, imported when first used (inference does not need it)

    def loss_and_grads(self, x, y, lengths=None, loss="cross_entropy", state=None,
                       n_threads=None, backend=None, mask=None, masks=None):
        """(loss, grads) on a batch; see rnnext.train.loss_and_grads."""
        from .train import loss_and_grads

        return loss_and_grads(self, x, y, lengths, mask, loss, state, None, n_threads, backend,
                              masks)

    def apply_grads(self, grads, optimizer, clip=None):
        """One optimizer update from grads; see rnnext.train.apply_grads."""
        from .train import apply_grads

        apply_grads(self, grads, optimizer, clip)

    def fit(self, x, y, lengths=None, epochs=10, batch_size=32, optimizer="adam", lr=None,
            clip=None, loss="cross_entropy", shuffle=True, validation_data=None, bptt=None,
            seed=None, verbose=True, n_threads=None, backend=None, mask=None, weight_decay=None,
            callbacks=None, dropout=0.0, input_dropout=0.0, head_dropout=0.0):
        """Trains the model on (x, y); returns the history. See rnnext.train.fit."""
        from .train import fit

        return fit(self, x, y, lengths, epochs, batch_size, optimizer, lr, clip, loss, shuffle,
                   validation_data, bptt, seed, verbose, n_threads, backend, mask, weight_decay,
                   callbacks, dropout, input_dropout, head_dropout)

    def evaluate(self, x, y, lengths=None, loss="cross_entropy", batch_size=None, bptt=None,
                 n_threads=None, backend=None, mask=None):
        """{"loss", "accuracy"} on (x, y); see rnnext.train.evaluate."""
        from .train import evaluate

        return evaluate(self, x, y, lengths, loss, batch_size, bptt, n_threads, backend, mask)

    # ------------------------------------------------------------------------------------------
    # files, pickling and export

    def to_bytes(self, precision=None):
        """The model as the bytes of an rnnext (safetensors) file; rnnext.load reads them back.
        precision: None for the model's; at "bf16" the recurrent weights are stored as BF16, at
        "int8" quantized, as I8 with their row scales (see rnnext.io.to_bytes)."""
        from . import io

        return io.to_bytes(self, precision)

    def save(self, path, precision=None):
        """Writes the model to `path` as an rnnext (safetensors) file; rnnext.load reads it
        (precision: see to_bytes)."""
        from . import io

        io.save(self, path, precision)

    def __reduce__(self):
        # the weights travel as the file's bytes; the compiled model is rebuilt on first use
        from . import io

        return io._unpickle, (self.to_bytes("fp32"), self.backend, self.precision)

    def to_onnx(self, path=None, opset=17, lengths=False):
        """The model as an ONNX graph (see rnnext.onnx_export.to_onnx), written to `path` if
        given; lengths=True adds the input lengths (B,), each sequence's valid steps."""
        from .onnx_export import to_onnx

        return to_onnx(self, path, opset=opset, lengths=lengths)

    def __repr__(self):
        inputs = "" if self.input_size is None else f", input_size={self.input_size}"
        precision = "" if self.precision == "fp32" else f", precision={self.precision!r}"
        return f"Model({list(self.layers)!r}{inputs}, backend={self.backend!r}{precision})"
