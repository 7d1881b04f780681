"""A model is a list of layers: [Embedding | Masking]? Recurrent+ [Readout]? Dense*.

The layer classes are frozen dataclasses validated when made (errors name the argument, what
was expected and what was received). `build(layers, input_size)` resolves a list into a Spec:
every size, the defaults filled in, one plain record per layer (ints, floats, strings and
tuples of them), which is what the reference runs, the file's metadata holds and the compiled
core receives.

Parameters (names, shapes, order), states, masks and the file's metadata: see the contract
(LAYERS.md in the design documents) and the functions below.
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ._core import INT8_MAX_K, MAX_LAYERS, MAX_SIZE
from .cells import (ACTIVATIONS, ALPHA_DOMAINS, CELLS, EMBEDDING_PARAM, cell_name, dense_param_name,
                    param_name)

DIRECTIONS = ("forward", "reverse", "bidirectional")
MERGES = ("concat", "sum", "mul", "ave")
READOUTS = ("sequence", "last", "final", "mean", "max")
DENSE_ACTIVATIONS = (None, "relu", "tanh", "sigmoid", "softmax")
NONLINEARITIES = ("tanh", "relu")


# ----------------------------------------------------------------------------------------------
# argument checks


def _int(name, value, minimum, maximum=MAX_SIZE):
    """value as an int in [minimum, maximum]; sizes stop at the core's RNX_MAX_SIZE, so that no
    product of sizes can wrap in C."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}: expected an int in [{minimum}, {maximum}], got {value}")
    return int(value)


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _choice(name, value, allowed):
    if not any(value is a or (isinstance(value, str) and value == a) for a in allowed):
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def _floats(name, values, count):
    if not isinstance(values, (tuple, list)) or len(values) != count:
        raise ValueError(f"{name}: expected a tuple of {count} floats, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v):
            raise ValueError(f"{name}: expected finite floats, got {values!r}")
        out.append(float(v))
    return tuple(out)


def _float32(name, value):
    """value as a float that float32 holds finitely (the core compares it as float32)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a finite float, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and abs(value) <= float(np.finfo(np.float32).max)):
        raise ValueError(f"{name}: expected a finite float (within float32's range), got "
                         f"{value!r}")
    return float(value)


def _set(obj, name, value):
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass's own field


# ----------------------------------------------------------------------------------------------
# the layers


class _Layer:
    """What the layer classes share: a repr with the required arguments and only the options
    that differ from their defaults, as a user would write the layer."""

    def __repr__(self):
        fields = dataclasses.fields(self)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        plain = type(self)(*(getattr(self, name) for name in required))
        parts = [repr(getattr(self, name)) for name in required]
        parts += [f"{f.name}={getattr(self, f.name)!r}" for f in fields
                  if f.name not in required and getattr(self, f.name) != getattr(plain, f.name)]
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class Embedding(_Layer):
    """Token ids (B, T) in, vectors (B, T, dim) out. padding_idx: PyTorch's (that row is zero
    at initialisation and gets no gradient); mask_zero: Keras's (id 0 is a masked step)."""
    vocab_size: int
    dim: int
    padding_idx: int = None
    mask_zero: bool = False

    def __post_init__(self):
        _set(self, "vocab_size", _int("vocab_size", self.vocab_size, 1))
        _set(self, "dim", _int("dim", self.dim, 1))
        if self.padding_idx is not None:
            _set(self, "padding_idx", _int("padding_idx", self.padding_idx, 0))
            if self.padding_idx >= self.vocab_size:
                raise ValueError(f"padding_idx: expected an id in [0, {self.vocab_size}) "
                                 f"(vocab_size {self.vocab_size}), got {self.padding_idx}")
        _set(self, "mask_zero", _bool("mask_zero", self.mask_zero))


@dataclass(frozen=True, repr=False)
class Masking(_Layer):
    """Keras's Masking, first in a list of float inputs: a step of x whose features all equal
    mask_value is masked (mask = any(x != mask_value, axis=-1)), as the `mask` argument masks
    one: the recurrent layers keep their states there and output zeros. Compared in float32,
    as the compiled core and Keras on float32 inputs compare (-0.0 equals 0.0, NaN equals
    nothing). With lengths or mask given too, a step is valid only where both say so."""
    mask_value: float = 0.0

    def __post_init__(self):
        _set(self, "mask_value", _float32("mask_value", self.mask_value))


def _recurrent_post_init(layer, layer_type, cell):
    """The checks every recurrent layer shares; fills in activations and their alpha/beta."""
    _set(layer, "units", _int("units", layer.units, 1))
    _choice("direction", layer.direction, DIRECTIONS)
    _choice("merge", layer.merge, MERGES)
    defaults = CELLS[cell].activations
    count = len(defaults)
    if layer.activations is None:
        activations = defaults
    else:
        if isinstance(layer.activations, str) or not isinstance(layer.activations, (tuple, list)) \
                or len(layer.activations) != count:
            raise ValueError(f"activations: expected a tuple of {count} names for a "
                             f"{layer_type} layer (default {defaults}), got {layer.activations!r}")
        activations = tuple(layer.activations)
        for a in activations:
            _choice("activations", a, tuple(ACTIVATIONS))
    _set(layer, "activations", activations)
    for name in ("alpha", "beta"):
        field = f"activation_{name}"
        value = getattr(layer, field)
        _set(layer, field, tuple(getattr(ACTIVATIONS[a], name) for a in activations)
             if value is None else _floats(field, value, count))
        for a, v in zip(activations, getattr(layer, field)):
            if v != 0.0 and not getattr(ACTIVATIONS[a], f"uses_{name}"):
                raise ValueError(f"{field}: expected 0.0 where the function takes no {name} "
                                 f"({a!r} in {activations}), got {getattr(layer, field)}")
    for a, v in zip(activations, layer.activation_alpha):
        if a in ALPHA_DOMAINS and not ALPHA_DOMAINS[a][1](v):
            raise ValueError(f"activation_alpha: expected {ALPHA_DOMAINS[a][0]} for {a!r}, got "
                             f"{layer.activation_alpha}")
    if layer.clip is not None:
        clip = layer.clip
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip: expected None or a float > 0, got {clip!r}")
        _set(layer, "clip", float(clip))


@dataclass(frozen=True, repr=False)
class RNN(_Layer):
    """h' = f(W_ih x + b_ih + W_hh h + b_hh), f = nonlinearity unless activations says."""
    units: int
    nonlinearity: str = "tanh"
    direction: str = "forward"
    merge: str = "concat"
    activations: tuple = None
    activation_alpha: tuple = None
    activation_beta: tuple = None
    clip: float = None

    def __post_init__(self):
        _choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        explicit = self.activations
        _recurrent_post_init(self, "rnn", cell_name("rnn", self.nonlinearity))
        if explicit is not None and self.nonlinearity == "relu" and self.activations != ("relu",):
            raise ValueError(f"nonlinearity: 'relu' contradicts activations {self.activations}; "
                             f"give one of them")


@dataclass(frozen=True, repr=False)
class LSTM(_Layer):
    """LSTM with PyTorch's proj_size and ONNX's peepholes and input_forget (see LAYERS.md)."""
    units: int
    proj_size: int = 0
    peepholes: bool = False
    input_forget: bool = False
    direction: str = "forward"
    merge: str = "concat"
    activations: tuple = None
    activation_alpha: tuple = None
    activation_beta: tuple = None
    clip: float = None

    def __post_init__(self):
        _recurrent_post_init(self, "lstm", "lstm")
        _set(self, "proj_size", _int("proj_size", self.proj_size, 0))
        if self.proj_size >= self.units:
            raise ValueError(f"proj_size: expected 0 or less than units ({self.units}), got "
                             f"{self.proj_size}")
        _set(self, "peepholes", _bool("peepholes", self.peepholes))
        _set(self, "input_forget", _bool("input_forget", self.input_forget))


@dataclass(frozen=True, repr=False)
class GRU(_Layer):
    """GRU; reset_after=True is PyTorch's (ONNX linear_before_reset=1)."""
    units: int
    reset_after: bool = True
    direction: str = "forward"
    merge: str = "concat"
    activations: tuple = None
    activation_alpha: tuple = None
    activation_beta: tuple = None
    clip: float = None

    def __post_init__(self):
        _set(self, "reset_after", _bool("reset_after", self.reset_after))
        _recurrent_post_init(self, "gru", "gru")


@dataclass(frozen=True, repr=False)
class Readout(_Layer):
    """How the top recurrent layer's output becomes one vector per sequence (see READOUTS)."""
    mode: str

    def __post_init__(self):
        _choice("mode", self.mode, READOUTS)


@dataclass(frozen=True, repr=False)
class Dense(_Layer):
    units: int
    activation: str = None

    def __post_init__(self):
        _set(self, "units", _int("units", self.units, 1))
        _choice("activation", self.activation, DENSE_ACTIVATIONS)


RECURRENT_TYPES = {RNN: "rnn", LSTM: "lstm", GRU: "gru"}


# ----------------------------------------------------------------------------------------------
# the resolved list


@dataclass(frozen=True)
class RecurrentSpec:
    """A recurrent layer with every size resolved: what one C rnx_layer holds."""
    index: int             # k: counts recurrent layers only
    layer_type: str        # "rnn", "lstm" or "gru"
    cell: str              # the core's cell: rnn_tanh, rnn_relu, lstm, gru, gru_reset_before
    num_gates: int         # G
    units: int             # H
    input_size: int        # I_k
    proj_size: int         # P, 0 for none
    state_size: int        # S: P if proj_size else H
    direction: str
    num_directions: int    # D
    merge: str
    output_size: int       # S (D=1, or merge sum/mul/ave) or 2S (concat)
    activations: tuple     # names, ONNX order (f,), (f, g) or (f, g, h)
    activation_alpha: tuple
    activation_beta: tuple
    clip: float            # 0.0 for none
    peepholes: bool
    input_forget: bool

    @property
    def reverse_flags(self):
        """For each direction the layer runs, in order: whether it runs reverse."""
        return {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}[
            self.direction]


@dataclass(frozen=True)
class DenseSpec:
    index: int
    input_size: int
    units: int
    activation: str        # None for none


@dataclass(frozen=True)
class Spec:
    """A validated, resolved layer list."""
    layers: tuple          # the layer objects as given
    input_size: int        # features of a float x; None with an embedding
    embedding: Embedding   # or None
    recurrent: tuple       # RecurrentSpec, in order
    readout: str           # a READOUTS mode; "sequence" when the list has none
    dense: tuple           # DenseSpec, in order
    masking: Masking = None  # or None

    @property
    def output_size(self):
        """The width of the model's output (its last axis)."""
        return self.dense[-1].units if self.dense else self.recurrent[-1].output_size

    @property
    def uniform(self):
        """Whether the recurrent layers are what one torch.nn.RNN/LSTM/GRU module can be (same
        cell, state width and direction count): states are then stacked arrays."""
        first = self.recurrent[0]
        return all((r.cell, r.state_size, r.units, r.num_directions) ==
                   (first.cell, first.state_size, first.units, first.num_directions)
                   for r in self.recurrent)


def _type_name(layer):
    return type(layer).__name__


_MASKING_HINT = (" (a Masking layer comes first, on float inputs; with an Embedding, its "
                 "mask_zero=True masks the steps of token id 0)")


def build(layers, input_size=None):
    """The Spec of a layer list; input_size is the feature count of x without an embedding
    (None with one). Order: [Embedding | Masking]? Recurrent+ [Readout]? Dense*."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"layers: expected a non-empty list of layers, got {layers!r}")
    if len(layers) > MAX_LAYERS:
        raise ValueError(f"layers: expected at most {MAX_LAYERS} layers (the core's "
                         f"RNX_MAX_LAYERS), got {len(layers)}")
    known = (Embedding, Masking, RNN, LSTM, GRU, Readout, Dense)
    for i, layer in enumerate(layers):
        if not isinstance(layer, known):
            raise TypeError(f"layers[{i}]: expected one of "
                            f"{[k.__name__ for k in known]}, got {type(layer).__name__}")
    stage = {Embedding: 0, Masking: 0, RNN: 1, LSTM: 1, GRU: 1, Readout: 2, Dense: 3}
    previous = -1
    for i, layer in enumerate(layers):
        s = stage[type(layer)]
        type_below = type(layers[i - 1]) if i else None
        if s < previous or (s == previous and s in (0, 2)) or (s > 1 and previous < 1):
            raise ValueError(f"layers[{i}]: a {_type_name(layer)} cannot come after "
                             f"{_type_name(layers[i - 1]) if i else 'the start'}: expected "
                             f"[Embedding | Masking]? (RNN|LSTM|GRU)+ [Readout]? Dense*"
                             f"{_MASKING_HINT if Masking in (type(layer), type_below) else ''}")
        previous = s
    if previous < 1:
        raise ValueError("layers: expected at least one RNN, LSTM or GRU layer")
    embedding = layers[0] if isinstance(layers[0], Embedding) else None
    masking = layers[0] if isinstance(layers[0], Masking) else None
    if embedding is not None:
        if input_size is not None:
            raise ValueError(f"input_size: expected None with an Embedding (its dim is the "
                             f"input), got {input_size!r}")
        width = embedding.dim
    else:
        width = input_size = _int("input_size", input_size, 1)
    recurrent, dense, readout = [], [], "sequence"
    for layer in layers:
        if type(layer) in RECURRENT_TYPES:
            spec = _recurrent_spec(layer, len(recurrent), width)
            recurrent.append(spec)
            width = spec.output_size
        elif isinstance(layer, Readout):
            readout = layer.mode
        elif isinstance(layer, Dense):
            dense.append(DenseSpec(len(dense), width, layer.units, layer.activation))
            width = layer.units
    return Spec(tuple(layers), input_size, embedding, tuple(recurrent), readout, tuple(dense),
                masking)


def _recurrent_spec(layer, index, input_size):
    layer_type = RECURRENT_TYPES[type(layer)]
    if layer_type == "rnn":
        cell = cell_name("rnn", "relu" if layer.activations == ("relu",) else "tanh")
    else:
        cell = cell_name(layer_type, reset_after=getattr(layer, "reset_after", True))
    proj = getattr(layer, "proj_size", 0)
    state = proj or layer.units
    D = 2 if layer.direction == "bidirectional" else 1
    return RecurrentSpec(
        index=index, layer_type=layer_type, cell=cell, num_gates=CELLS[cell].num_gates,
        units=layer.units, input_size=input_size, proj_size=proj, state_size=state,
        direction=layer.direction, num_directions=D, merge=layer.merge,
        output_size=2 * state if D == 2 and layer.merge == "concat" else state,
        activations=layer.activations, activation_alpha=layer.activation_alpha,
        activation_beta=layer.activation_beta, clip=layer.clip or 0.0,
        peepholes=getattr(layer, "peepholes", False),
        input_forget=getattr(layer, "input_forget", False))


# ----------------------------------------------------------------------------------------------
# parameters


def recurrent_param_shapes(r, reverse):
    """{name: shape} of one recurrent layer's direction, in the file's order."""
    G, H, S = r.num_gates, r.units, r.state_size
    shapes = {param_name("weight_ih", r.index, reverse): (G * H, r.input_size),
              param_name("weight_hh", r.index, reverse): (G * H, S),
              param_name("bias_ih", r.index, reverse): (G * H,),
              param_name("bias_hh", r.index, reverse): (G * H,)}
    if r.proj_size:
        shapes[param_name("weight_hr", r.index, reverse)] = (r.proj_size, H)
    if r.peepholes:
        shapes[param_name("weight_peephole", r.index, reverse)] = (3, H)
    return shapes


def param_shapes(spec):
    """{name: shape} of every parameter, in the order of Model.params, the file and the C
    core's flat parameters."""
    shapes = {}
    if spec.embedding is not None:
        shapes[EMBEDDING_PARAM] = (spec.embedding.vocab_size, spec.embedding.dim)
    for r in spec.recurrent:
        for reverse in r.reverse_flags:
            shapes.update(recurrent_param_shapes(r, reverse))
    for d in spec.dense:
        shapes[dense_param_name("weight", d.index)] = (d.units, d.input_size)
        shapes[dense_param_name("bias", d.index)] = (d.units,)
    return shapes


def random_generator(seed):
    """numpy's default_rng(seed) for a seed that is None (fresh entropy) or an int >= 0, the
    seeds rnnext takes (model initialisation, fit's shuffling, the tasks); the other seeds
    NumPy takes (sequences of ints, a SeedSequence or a generator) are refused by name."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed: expected None or an int >= 0, got {type(seed).__name__} "
                        f"{seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed: expected None or an int >= 0, got {seed}")
    return np.random.default_rng(seed)


def init_params(spec, seed=None, dtype=np.float32):
    """PyTorch's initialisation: a recurrent layer's parameters U(-1/sqrt(H), 1/sqrt(H)), a
    dense layer's U(-1/sqrt(F), 1/sqrt(F)) (F its input width), the embedding N(0, 1) with the
    padding row zero. Drawn in parameter order from random_generator(seed)."""
    rng = random_generator(seed)
    recurrent_units = {}
    for r in spec.recurrent:
        for reverse in r.reverse_flags:
            recurrent_units.update(dict.fromkeys(recurrent_param_shapes(r, reverse), r.units))
    dense_fan_in = {dense_param_name(kind, d.index): d.input_size
                    for d in spec.dense for kind in ("weight", "bias")}
    params = {}
    for name, shape in param_shapes(spec).items():
        if name == EMBEDDING_PARAM:
            value = rng.standard_normal(shape)
            if spec.embedding.padding_idx is not None:
                value[spec.embedding.padding_idx] = 0.0
        else:
            fan_in = recurrent_units[name] if name in recurrent_units else dense_fan_in[name]
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, size=shape)
        params[name] = value.astype(dtype)
    return params


def int8_unsupported(r):
    """What keeps recurrent layer r (a RecurrentSpec) from the int8 precision, "" for nothing: it
    runs the packed kernels' cells only (rnnext.h, RNX_PRECISION_INT8), with their default
    activations, no projection, peepholes, coupled gates or clip, for the GRU the reset after
    the product, and products over at most INT8_MAX_K inputs."""
    why = []
    if r.cell == "gru_reset_before":
        why.append("the reset before the product (reset_after=False)")
    if r.activations != CELLS[r.cell].activations:
        why.append(f"activations={r.activations}")
    why += [f"{name}={getattr(r, name)!r}" for name in ("proj_size", "peepholes", "input_forget",
                                                        "clip") if getattr(r, name)]
    why += [f"{name}={getattr(r, name)} (above INT8_MAX_K, {INT8_MAX_K}, an int32 sum could "
            f"overflow)" for name in ("input_size", "units") if getattr(r, name) > INT8_MAX_K]
    return ", ".join(why)


def core_layers(spec):
    """The layer list as the compiled core's rnx_layer records: one dict per layer, keyed by
    rnx_layer's field names, enums by their names (rnnext._core maps them to the C values)."""
    out = []
    if spec.masking is not None:
        out.append({"kind": "masking", "mask_value": spec.masking.mask_value})
    if spec.embedding is not None:
        e = spec.embedding
        out.append({"kind": "embedding", "input_size": e.vocab_size, "units": e.dim,
                    "padding_idx": -1 if e.padding_idx is None else e.padding_idx,
                    "mask_zero": int(e.mask_zero)})
    for r in spec.recurrent:
        out.append({"kind": "recurrent", "cell": r.cell, "input_size": r.input_size,
                    "units": r.units, "direction": r.direction,
                    "merge": r.merge if r.num_directions == 2 else "concat",
                    "proj_size": r.proj_size, "peepholes": int(r.peepholes),
                    "input_forget": int(r.input_forget), "clip": r.clip,
                    "activations": list(r.activations), "alpha": list(r.activation_alpha),
                    "beta": list(r.activation_beta)})
    if any(isinstance(layer, Readout) for layer in spec.layers):
        out.append({"kind": "readout", "readout": spec.readout})
    for d in spec.dense:
        out.append({"kind": "dense", "input_size": d.input_size, "units": d.units,
                    "activation": d.activation or "linear"})
    return out


# ----------------------------------------------------------------------------------------------
# today's Model arguments


def shorthand(cell, input_size, hidden_size, num_layers=1, bidirectional=False,
              nonlinearity="tanh", linear_before_reset=True, output_size=None,
              output="many_to_one", activation=None):
    """(layers, input_size) for Model(cell, input_size, hidden_size, ...) as it is today: a
    uniform stack, and when output_size is given a Dense(output_size, activation) on each
    sequence's last valid step (output="many_to_one": a Readout("last") before it) or on every
    step ("many_to_many"). Without output_size the model's output is the stack's sequence, as
    torch.nn.LSTM's."""
    _choice("cell", cell, ("rnn", "lstm", "gru"))
    _choice("output", output, ("many_to_one", "many_to_many"))
    num_layers = _int("num_layers", num_layers, 1, MAX_LAYERS - 2)  # room for readout and dense
    direction = "bidirectional" if _bool("bidirectional", bidirectional) else "forward"
    reset_after = _bool("linear_before_reset", linear_before_reset)
    _choice("nonlinearity", nonlinearity, NONLINEARITIES)
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(f"nonlinearity: only the 'rnn' cell takes one, got {nonlinearity!r} for "
                         f"cell {cell!r}")
    if cell != "gru" and not reset_after:
        raise ValueError(f"linear_before_reset: only the 'gru' cell takes False, got cell "
                         f"{cell!r}")
    if cell == "rnn":
        make = lambda: RNN(hidden_size, nonlinearity=nonlinearity, direction=direction)  # noqa
    elif cell == "lstm":
        make = lambda: LSTM(hidden_size, direction=direction)  # noqa
    else:
        make = lambda: GRU(hidden_size, reset_after=reset_after, direction=direction)  # noqa
    layers = [make() for _ in range(num_layers)]
    if output_size is not None:
        if output == "many_to_one":
            layers.append(Readout("last"))
        layers.append(Dense(_int("output_size", output_size, 1), activation))
    elif activation is not None:
        raise ValueError(f"activation: needs output_size (a dense layer), got {activation!r}")
    return layers, input_size


# ----------------------------------------------------------------------------------------------
# the file's metadata (format version 2)

FORMAT_VERSION = "2"
LAYER_TYPES = {Embedding: "embedding", Masking: "masking", RNN: "rnn", LSTM: "lstm", GRU: "gru",
               Readout: "readout", Dense: "dense"}
# per type: the metadata keys and how each reads from a string (for the layer's constructor)
_BOOL = {"0": False, "1": True}


def _parse_int(text):
    if not (text.isdigit() and (text == "0" or not text.startswith("0"))):
        raise ValueError
    return int(text)


def _parse_bool(text):
    return _BOOL[text]


def _parse_none_or(parse):
    return lambda text: None if text == "none" else parse(text)


def _parse_str(text):
    return text


def _parse_floats(text):
    return tuple(float(v) for v in text.split(","))


def _parse_names(text):
    return tuple(text.split(","))


_RECURRENT_KEYS = {"units": _parse_int, "direction": _parse_str, "merge": _parse_str,
                   "activations": _parse_names, "activation_alpha": _parse_floats,
                   "activation_beta": _parse_floats, "clip": _parse_none_or(float)}
METADATA_KEYS = {
    "embedding": {"vocab_size": _parse_int, "dim": _parse_int,
                  "padding_idx": _parse_none_or(_parse_int), "mask_zero": _parse_bool},
    "masking": {"mask_value": float},
    "rnn": {**_RECURRENT_KEYS, "nonlinearity": _parse_str},
    "lstm": {**_RECURRENT_KEYS, "proj_size": _parse_int, "peepholes": _parse_bool,
             "input_forget": _parse_bool},
    "gru": {**_RECURRENT_KEYS, "reset_after": _parse_bool},
    "readout": {"mode": _parse_str},
    "dense": {"units": _parse_int, "activation": _parse_none_or(_parse_str)},
}
CLASSES = {name: cls for cls, name in LAYER_TYPES.items()}


def _format(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(_format(v) for v in value)
    return str(value)


def to_metadata(spec):
    """The file's __metadata__ strings (format version 2) of a Spec, defaults written out."""
    meta = {"format": "rnnext", "format_version": FORMAT_VERSION, "layers": str(len(spec.layers))}
    if spec.embedding is None:
        meta["input_size"] = str(spec.input_size)
    recurrent = iter(spec.recurrent)
    for i, layer in enumerate(spec.layers):
        kind = LAYER_TYPES[type(layer)]
        meta[f"layer{i}.type"] = kind
        for key in METADATA_KEYS[kind]:
            meta[f"layer{i}.{key}"] = _format(getattr(layer, key))
        if kind in ("rnn", "lstm", "gru"):
            meta[f"layer{i}.input_size"] = str(next(recurrent).input_size)
    return meta


def from_metadata(meta):
    """The Spec that a file's __metadata__ (format version 2) describes; every missing, unknown
    or malformed key is a ValueError naming it."""
    if not isinstance(meta, dict):
        raise TypeError(f"metadata: expected a dict of strings, got {type(meta).__name__}")
    for key, value in meta.items():
        if not isinstance(value, str):
            raise ValueError(f"metadata[{key!r}]: expected a string, got {value!r}")
    seen = set()

    def get(key, parse=_parse_str):
        if key not in meta:
            raise ValueError(f"metadata[{key!r}]: missing")
        seen.add(key)
        try:
            return parse(meta[key])
        except (ValueError, KeyError):
            raise ValueError(f"metadata[{key!r}]: malformed value {meta[key]!r}") from None

    for key, want in (("format", "rnnext"), ("format_version", FORMAT_VERSION)):
        if get(key) != want:
            raise ValueError(f"metadata[{key!r}]: expected {want!r}, got {meta[key]!r}")
    count = get("layers", _parse_int)
    layers, input_sizes = [], {}
    for i in range(count):
        kind = get(f"layer{i}.type")
        if kind not in METADATA_KEYS:
            raise ValueError(f"metadata['layer{i}.type']: expected one of "
                             f"{list(METADATA_KEYS)}, got {kind!r}")
        args = {key: get(f"layer{i}.{key}", parse) for key, parse in METADATA_KEYS[kind].items()}
        if kind in ("rnn", "lstm", "gru"):
            input_sizes[i] = get(f"layer{i}.input_size", _parse_int)
        try:
            layers.append(CLASSES[kind](**args))
        except (TypeError, ValueError) as e:
            key = str(e).split(":")[0]
            raise ValueError(f"metadata['layer{i}.{key}']: {e}") from None
    input_size = get("input_size", _parse_int) if "input_size" in meta else None
    unknown = sorted(set(meta) - seen)
    if unknown:
        raise ValueError(f"metadata[{unknown[0]!r}]: unknown key")
    try:
        spec = build(layers, input_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata: {e}") from None
    positions = [i for i, layer in enumerate(layers) if type(layer) in RECURRENT_TYPES]
    for i, r in zip(positions, spec.recurrent):
        if input_sizes[i] != r.input_size:
            raise ValueError(f"metadata['layer{i}.input_size']: expected {r.input_size} (the "
                             f"width of what feeds it), got {input_sizes[i]}")
    return spec

