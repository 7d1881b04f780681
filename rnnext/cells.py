"""The one table of cells and activation functions that the layers, the reference, the file
format and every importer read.

Cells, by the core's names: rnn_tanh, rnn_relu (G=1), lstm (G=4, gate rows i, f, g, o) and gru,
gru_reset_before (G=3, rows r, z, n), PyTorch's layout. Other frameworks order the gate blocks
differently: Keras LSTM i, f, c, o (ours), Keras GRU z, r, h; ONNX LSTM i, o, f, c, ONNX GRU
z, r, h. `from_keras` / `from_onnx` hold, for each of our gate blocks, the index of the block
in that framework's order (ours = concatenate(theirs[p] for p in from_x)); Cell.to_onnx is the
inverse, for exporters. Each cell also names the PyTorch module mode, Keras layer class (and
the Keras options that hold its activations) and ONNX operator it is.

Activation functions: the names of the layer list, each with its default alpha and beta, a NumPy
forward f(x, alpha, beta) and its derivative df(x, y, alpha, beta) given the input x and the
output y = f(x). ONNX's recurrent ops' functions (their names lower-cased, ONNX's defaults), then
Keras 3's other elementwise built-ins under Keras's names (gelu is Keras's default, the exact erf
form; celu, soft_shrink, hard_shrink and squareplus keep their one parameter in alpha).
"""
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cell:
    name: str            # the core's name
    layer_type: str      # the layer list's type: "rnn", "lstm" or "gru"
    gates: tuple         # gate names in our (PyTorch's) row order
    from_keras: tuple    # our block p is Keras's block from_keras[p]
    from_onnx: tuple     # our block p is ONNX's block from_onnx[p]
    activations: tuple   # default activation functions, ONNX order: (f,), (f, g) or (f, g, h)
    onnx_op: str         # the ONNX operator
    torch_mode: str      # torch.nn.RNNBase.mode, None where PyTorch has no such module
    keras_layer: str     # the Keras layer class
    keras_activations: tuple  # the Keras options that hold `activations`, in their order

    @property
    def num_gates(self):
        """G: weight_ih and weight_hh have G*H rows."""
        return len(self.gates)

    @property
    def to_onnx(self):
        """The inverse of from_onnx: ONNX's block q is our block to_onnx[q]."""
        return tuple(int(p) for p in np.argsort(self.from_onnx))


_LSTM = dict(layer_type="lstm", gates=("i", "f", "g", "o"), from_keras=(0, 1, 2, 3),
             from_onnx=(0, 2, 3, 1), activations=("sigmoid", "tanh", "tanh"), onnx_op="LSTM",
             keras_layer="LSTM",
             keras_activations=("recurrent_activation", "activation", "activation"))
_GRU = dict(layer_type="gru", gates=("r", "z", "n"), from_keras=(1, 0, 2), from_onnx=(1, 0, 2),
            activations=("sigmoid", "tanh"), onnx_op="GRU", keras_layer="GRU",
            keras_activations=("recurrent_activation", "activation"))
_RNN = dict(layer_type="rnn", gates=("h",), from_keras=(0,), from_onnx=(0,), onnx_op="RNN",
            keras_layer="SimpleRNN", keras_activations=("activation",))

CELLS = {
    "rnn_tanh": Cell("rnn_tanh", activations=("tanh",), torch_mode="RNN_TANH", **_RNN),
    "rnn_relu": Cell("rnn_relu", activations=("relu",), torch_mode="RNN_RELU", **_RNN),
    "lstm": Cell("lstm", torch_mode="LSTM", **_LSTM),
    "gru": Cell("gru", torch_mode="GRU", **_GRU),
    "gru_reset_before": Cell("gru_reset_before", torch_mode=None, **_GRU),
}

# the parameters of a recurrent layer and direction, in the file's order (their shapes:
# layers.recurrent_param_shapes)
RECURRENT_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
                    "weight_peephole")
# weight_peephole's rows are i, f, o; ONNX's P holds i, o, f: our row p is ONNX's row
# PEEPHOLE_FROM_ONNX[p]
PEEPHOLE_FROM_ONNX = (0, 2, 1)


def cell_name(layer_type, nonlinearity="tanh", reset_after=True):
    """The core's name of a cell: "rnn" + nonlinearity, "lstm", "gru" + reset_after."""
    if layer_type == "rnn":
        return f"rnn_{nonlinearity}"
    if layer_type == "gru" and not reset_after:
        return "gru_reset_before"
    return layer_type


def param_name(kind, layer, reverse):
    """The name of a recurrent parameter: kind (one of RECURRENT_PARAMS) of the layer-th
    recurrent layer, for its reverse direction when `reverse` (PyTorch's names)."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def dense_param_name(kind, index):
    """dense{index}.weight or dense{index}.bias."""
    return f"dense{index}.{kind}"


EMBEDDING_PARAM = "embedding.weight"


def permute_gates(a, order, axis=0):
    """a with its G gate blocks along `axis` taken in `order` (a from_x or to_x tuple)."""
    blocks = np.split(np.asarray(a), len(order), axis=axis)
    return np.concatenate([blocks[p] for p in order], axis=axis)


# ----------------------------------------------------------------------------------------------
# activation functions


def sigmoid(x):
    # the tanh form never overflows, unlike 1 / (1 + exp(-x))
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# SELU's constants (Klambauer et al. 2017), as PyTorch and Keras define them
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(x):
    """P(X <= x), X ~ N(0, 1): erfc keeps its relative precision in the lower tail."""
    x = np.asarray(x)
    return np.asarray(0.5 * _erfc(-x / math.sqrt(2.0)), dtype=x.dtype)


def _mish_derivative(x):
    t = np.tanh(np.logaddexp(0.0, x))
    return t + x * (1.0 - t * t) * sigmoid(x)


def _squareplus(x, b):
    """(x + sqrt(x^2 + b)) / 2, in the form without cancellation for x < 0."""
    root = np.hypot(x, np.sqrt(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 0.0, 0.5 * (x + root), 0.5 * b / (root - x))


def _sparse_sigmoid(x):
    """0 for x <= -1, (x + 1) / 2 between, 1 for x >= 1; also sparse_plus's derivative."""
    return np.clip(0.5 * (x + 1.0), 0.0, 1.0)


@dataclass(frozen=True)
class Activation:
    name: str
    onnx: str        # ONNX's spelling in the recurrent ops' `activations` attribute
    alpha: float     # ONNX's default; 0 where the function has none
    beta: float
    uses_alpha: bool
    uses_beta: bool
    forward: object      # f(x, alpha, beta)
    derivative: object   # df/dx from (x, y, alpha, beta), y = f(x)


def _activation(name, onnx, forward, derivative, alpha=None, beta=None):
    return Activation(name, onnx, 0.0 if alpha is None else alpha, 0.0 if beta is None else beta,
                      alpha is not None, beta is not None, forward, derivative)


ACTIVATIONS = {a.name: a for a in [
    _activation("linear", None, lambda x, a, b: x, lambda x, y, a, b: np.ones_like(x)),
    _activation("sigmoid", "Sigmoid", lambda x, a, b: sigmoid(x),
                lambda x, y, a, b: y * (1.0 - y)),
    _activation("tanh", "Tanh", lambda x, a, b: np.tanh(x), lambda x, y, a, b: 1.0 - y * y),
    _activation("relu", "Relu", lambda x, a, b: np.maximum(x, 0.0),
                lambda x, y, a, b: (x > 0.0).astype(x.dtype)),
    _activation("hard_sigmoid", "HardSigmoid",
                lambda x, a, b: np.clip(a * x + b, 0.0, 1.0),
                lambda x, y, a, b: np.where((a * x + b > 0.0) & (a * x + b < 1.0),
                                            np.full_like(x, a), 0.0),
                alpha=0.2, beta=0.5),
    _activation("affine", "Affine", lambda x, a, b: a * x + b,
                lambda x, y, a, b: np.full_like(x, a), alpha=1.0, beta=0.0),
    _activation("leaky_relu", "LeakyRelu", lambda x, a, b: np.where(x >= 0.0, x, a * x),
                lambda x, y, a, b: np.where(x >= 0.0, np.ones_like(x), a), alpha=0.01),
    _activation("thresholded_relu", "ThresholdedRelu", lambda x, a, b: np.where(x > a, x, 0.0),
                lambda x, y, a, b: (x > a).astype(x.dtype), alpha=1.0),
    _activation("scaled_tanh", "ScaledTanh", lambda x, a, b: a * np.tanh(b * x),
                lambda x, y, a, b: a * b * (1.0 - np.tanh(b * x) ** 2), alpha=1.0, beta=1.0),
    _activation("elu", "Elu",
                lambda x, a, b: np.where(x >= 0.0, x, a * np.expm1(np.minimum(x, 0.0))),
                lambda x, y, a, b: np.where(x >= 0.0, 1.0, y + a), alpha=1.0),
    _activation("softsign", "Softsign", lambda x, a, b: x / (1.0 + np.abs(x)),
                lambda x, y, a, b: 1.0 / (1.0 + np.abs(x)) ** 2),
    _activation("softplus", "Softplus", lambda x, a, b: np.logaddexp(0.0, x),
                lambda x, y, a, b: sigmoid(x)),
    # Keras's other elementwise built-ins (ONNX's recurrent ops take none of them); alpha holds
    # the one parameter a Keras function has, at its Keras default; at a kink the derivative is
    # PyTorch autograd's
    _activation("relu6", None, lambda x, a, b: np.clip(x, 0.0, 6.0),
                lambda x, y, a, b: ((x > 0.0) & (x < 6.0)).astype(x.dtype)),
    _activation("selu", None,
                lambda x, a, b: SELU_SCALE * np.where(x > 0.0, x, SELU_ALPHA * np.expm1(
                    np.minimum(x, 0.0))),
                lambda x, y, a, b: np.where(x > 0.0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)),
    _activation("gelu", None, lambda x, a, b: x * _normal_cdf(x),
                lambda x, y, a, b: _normal_cdf(x) + x * np.exp(-0.5 * x * x) / _SQRT_2PI),
    _activation("silu", None, lambda x, a, b: x * sigmoid(x),
                lambda x, y, a, b: sigmoid(x) + y * (1.0 - sigmoid(x))),
    _activation("exponential", None, lambda x, a, b: np.exp(x), lambda x, y, a, b: y),
    _activation("mish", None, lambda x, a, b: x * np.tanh(np.logaddexp(0.0, x)),
                lambda x, y, a, b: _mish_derivative(x)),
    _activation("hard_silu", None, lambda x, a, b: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
                lambda x, y, a, b: np.where(x <= -3.0, 0.0, np.where(x >= 3.0, 1.0,
                                                                      x / 3.0 + 0.5))),
    _activation("hard_tanh", None, lambda x, a, b: np.clip(x, -1.0, 1.0),
                lambda x, y, a, b: (np.abs(x) < 1.0).astype(x.dtype)),
    _activation("celu", None,
                lambda x, a, b: np.where(x > 0.0, x, a * np.expm1(np.minimum(x, 0.0) / a)),
                lambda x, y, a, b: np.where(x > 0.0, 1.0, np.exp(np.minimum(x, 0.0) / a)),
                alpha=1.0),
    _activation("log_sigmoid", None, lambda x, a, b: -np.logaddexp(0.0, -x),
                lambda x, y, a, b: sigmoid(-x)),
    _activation("tanh_shrink", None, lambda x, a, b: x - np.tanh(x),
                lambda x, y, a, b: np.tanh(x) ** 2),
    _activation("soft_shrink", None, lambda x, a, b: x - np.clip(x, -a, a),
                lambda x, y, a, b: (np.abs(x) > a).astype(x.dtype), alpha=0.5),
    _activation("hard_shrink", None, lambda x, a, b: np.where(np.abs(x) > a, x, 0.0),
                lambda x, y, a, b: (np.abs(x) > a).astype(x.dtype), alpha=0.5),
    # alpha is Keras's b; y / hypot(x, sqrt(b)) is the derivative without cancellation
    _activation("squareplus", None, lambda x, a, b: _squareplus(x, a),
                lambda x, y, a, b: y / np.hypot(x, np.sqrt(a)), alpha=4.0),
    _activation("sparse_plus", None,
                lambda x, a, b: np.where(x <= -1.0, 0.0, np.where(x < 1.0, 0.25 * (x + 1.0) ** 2,
                                                                   x)),
                lambda x, y, a, b: _sparse_sigmoid(x)),
    _activation("sparse_sigmoid", None, lambda x, a, b: _sparse_sigmoid(x),
                lambda x, y, a, b: np.where(np.abs(x) < 1.0, 0.5, 0.0)),
]}

# the alphas a function is defined for (as the C core checks them): what is expected, the test
ALPHA_DOMAINS = {"celu": ("a nonzero alpha", lambda a: a != 0.0),
                 "soft_shrink": ("alpha >= 0", lambda a: a >= 0.0),
                 "squareplus": ("alpha >= 0", lambda a: a >= 0.0)}

# ONNX's activation names (case-insensitive, as ONNX Runtime reads them) -> ours
FROM_ONNX_ACTIVATION = {a.onnx.lower(): a.name for a in ACTIVATIONS.values() if a.onnx}


def activation_from_onnx(name):
    """Our name of an ONNX activation name (any case), or a ValueError naming it."""
    key = name.decode() if isinstance(name, bytes) else str(name)
    if key.lower() not in FROM_ONNX_ACTIVATION:
        raise ValueError(f"activations: expected ONNX names "
                         f"{sorted(a.onnx for a in ACTIVATIONS.values() if a.onnx)}, got {key!r}")
    return FROM_ONNX_ACTIVATION[key.lower()]


def onnx_alpha_beta(activations, alpha, beta):
    """ONNX's activation_alpha and activation_beta lists for our per-function tuples: ONNX (as
    ONNX Runtime reads it) takes one value for each function that uses one, in order."""
    table = [ACTIVATIONS[name] for name in activations]
    return ([float(a) for f, a in zip(table, alpha) if f.uses_alpha],
            [float(b) for f, b in zip(table, beta) if f.uses_beta])


# Keras 3's activation names -> (ours, alpha, beta): Keras's hard_sigmoid is relu6(x + 3) / 6,
# its leaky_relu's default slope is 0.2, swish and hard_swish are its other names of silu and
# hard_silu; the functions with a parameter take Keras's default
FROM_KERAS_ACTIVATION = {
    "linear": ("linear", 0.0, 0.0), "sigmoid": ("sigmoid", 0.0, 0.0), "tanh": ("tanh", 0.0, 0.0),
    "relu": ("relu", 0.0, 0.0), "hard_sigmoid": ("hard_sigmoid", 1.0 / 6.0, 0.5),
    "leaky_relu": ("leaky_relu", 0.2, 0.0), "elu": ("elu", 1.0, 0.0),
    "softsign": ("softsign", 0.0, 0.0), "softplus": ("softplus", 0.0, 0.0),
    "swish": ("silu", 0.0, 0.0), "hard_swish": ("hard_silu", 0.0, 0.0),
    **{name: (name, ACTIVATIONS[name].alpha, 0.0) for name in (
        "relu6", "selu", "gelu", "silu", "exponential", "mish", "hard_silu", "hard_tanh", "celu",
        "log_sigmoid", "tanh_shrink", "soft_shrink", "hard_shrink", "squareplus", "sparse_plus",
        "sparse_sigmoid")},
}


def activation_from_keras(name):
    """(our name, alpha, beta) of a Keras 3 activation name, or a ValueError naming it."""
    if name not in FROM_KERAS_ACTIVATION:
        raise ValueError(f"activation: expected one of {sorted(FROM_KERAS_ACTIVATION)}, got "
                         f"{name!r}")
    return FROM_KERAS_ACTIVATION[name]


# ONNX Runtime reads an absent alpha or beta as 0 for these functions (it has defaults only for
# LeakyRelu, HardSigmoid and Elu), not as the ONNX operators' defaults the layers use
ONNXRUNTIME_ZERO_DEFAULTS = ("affine", "thresholded_relu", "scaled_tanh")


def activations_from_onnx(names, alpha=None, beta=None):
    """(activations, activation_alpha, activation_beta) tuples in our form from an ONNX node's
    attributes for one direction: the names, and the lists that hold a value per function that
    uses one. Absent values are what ONNX Runtime computes with: its defaults, 0 for the
    functions in ONNXRUNTIME_ZERO_DEFAULTS."""
    ours = tuple(activation_from_onnx(n) for n in names)
    alphas, betas = list(alpha or ()), list(beta or ())
    out_a, out_b = [], []
    for name in ours:
        f = ACTIVATIONS[name]
        absent_a, absent_b = (0.0, 0.0) if name in ONNXRUNTIME_ZERO_DEFAULTS else (f.alpha, f.beta)
        out_a.append(float(alphas.pop(0)) if f.uses_alpha and alphas else absent_a)
        out_b.append(float(betas.pop(0)) if f.uses_beta and betas else absent_b)
    return ours, tuple(out_a), tuple(out_b)
