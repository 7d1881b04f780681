"""Activation functions.

- The kernels' vectorised sigmoid and tanh against NumPy over the float32 range.
- Keras 3's elementwise built-ins beyond ONNX's set (cells.ACTIVATIONS with no ONNX name): the
  NumPy forward and derivative against Keras's own function on float64 torch tensors and its
  autograd (kinks included: the derivative there is PyTorch's) and against central differences;
  the plain C path (rnnext.h's rnx_act) against that reference through a Model, forward and
  gradients (function by function: test_activations_plain.py); a Keras SimpleRNN/GRU/LSTM
  stack using each, imported with rnnext.from_keras, against Keras's predict; the file's names
  read by the C parser as the header numbers them; the core's domain checks; to_onnx refusing
  each by name.
"""
import re

import numpy as np
import pytest

import rnnext
from rnnext import _core
from rnnext import layers as L
from rnnext.cells import ACTIVATIONS, FROM_KERAS_ACTIVATION, activation_from_keras

from conftest import F32_ATOL, F32_RTOL, assert_f32_close, keras_module

ISAS = [pytest.param(isa, marks=pytest.mark.skipif(not _core.isa_supported(isa),
                                                   reason=f"this CPU lacks {isa}"))
        for isa in ("scalar", "avx2", "avx512")]
# the bounds stated in rnnext.h for rnx_activation
BOUNDS = {"sigmoid": 2e-7, "tanh": 4e-7}
EXACT = {"sigmoid": lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)), "tanh": np.tanh}


def finite_floats(stride):
    """Every stride-th float32 bit pattern that is finite: all signs, exponents and scales."""
    bits = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_error_bound_over_float32_range(isa, name):
    x = np.concatenate([finite_floats(211), np.linspace(-20, 20, 200001, dtype=np.float32)])
    got = _core.activation(name, x, isa).astype(np.float64)
    err = np.abs(got - EXACT[name](x.astype(np.float64)))
    assert err.max() <= BOUNDS[name], f"max error {err.max():.3g} at x={x[err.argmax()]}"


@pytest.mark.parametrize("isa", ISAS)
def test_infinities_nan_and_odd_lengths(isa):
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38],
                       np.float32)
    sig = _core.activation("sigmoid", special, isa)
    tanh = _core.activation("tanh", special, isa)
    np.testing.assert_array_equal(sig[:2], [1.0, 0.0])
    np.testing.assert_array_equal(tanh[:2], [1.0, -1.0])
    assert np.isnan(sig[2]) and np.isnan(tanh[2])
    np.testing.assert_allclose(sig[3:], EXACT["sigmoid"](special[3:].astype(np.float64)), atol=2e-7)
    np.testing.assert_allclose(tanh[3:], np.tanh(special[3:].astype(np.float64)), atol=4e-7)
    for n in (1, 3, 17, 33):  # lengths that are not whole vectors
        x = np.linspace(-5, 5, n, dtype=np.float32)
        np.testing.assert_allclose(_core.activation("tanh", x, isa), np.tanh(x), atol=4e-7)


def test_unknown_function_is_refused():
    with pytest.raises(ValueError, match="name"):
        _core.activation("relu", np.zeros(3, np.float32))


# ----------------------------------------------------------------------------------------------
# Keras's functions that ONNX's recurrent ops lack

KERAS_ONLY = sorted({ours for ours, _, _ in FROM_KERAS_ACTIVATION.values()
                     if ACTIVATIONS[ours].onnx is None} - {"linear"})
# the one parameter of those Keras functions that have one, which our alpha holds
KERAS_PARAMETER = {"celu": "alpha", "soft_shrink": "threshold", "hard_shrink": "threshold",
                   "squareplus": "b"}
KINKS = [-6.0, -3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 3.0, 6.0]


def keras_function(name, alpha):
    """Keras's function for our `name` with its parameter (if any) at alpha."""
    keras = keras_module()
    if name not in KERAS_PARAMETER:
        return keras.activations.get(name)
    return lambda x: getattr(keras.activations, name)(x, **{KERAS_PARAMETER[name]: alpha})


def alphas(name):
    """Keras's default parameter, and another value, for the functions that take one (a power
    of two: PyTorch's celu computes 1 / alpha in float32)."""
    return [ACTIVATIONS[name].alpha] + ([0.25] if ACTIVATIONS[name].uses_alpha else [])


def test_every_keras_elementwise_builtin_is_mapped():
    keras = keras_module()
    from keras.src import activations

    # the row-wise ones cannot be a cell's function; threshold has no default threshold
    skipped = {"softmax", "log_softmax", "sparsemax", "glu", "threshold"}
    assert set(activations.ALL_OBJECTS_DICT) - skipped == set(FROM_KERAS_ACTIVATION)
    assert keras.activations.gelu.__defaults__ == (False,)  # exact, as our gelu
    for name in skipped:
        with pytest.raises(ValueError, match=f"activation: expected one of .*got '{name}'"):
            activation_from_keras(name)


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_reference_matches_keras_and_its_autograd(name):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-12.0, 12.0, 2401), KINKS,
                        [-1e4, -1e3, -60.0, 60.0] + ([] if name == "exponential" else [1e3, 1e4])])
    f = ACTIVATIONS[name]
    for alpha in alphas(name):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        want = keras_function(name, alpha)(xt)
        want.sum().backward()
        y = f.forward(x, alpha, 0.0)
        np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=f"{name} alpha={alpha}")
        np.testing.assert_allclose(f.derivative(x, y, alpha, 0.0), xt.grad.numpy(), rtol=1e-10,
                                   atol=1e-10, err_msg=f"{name}' alpha={alpha}")


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_derivative_matches_central_differences(name):
    x = np.linspace(-8.0, 8.0, 1601) + 0.0037  # no step crosses a kink
    f, eps = ACTIVATIONS[name], 1e-6
    for alpha in alphas(name):
        numeric = (f.forward(x + eps, alpha, 0.0) - f.forward(x - eps, alpha, 0.0)) / (2 * eps)
        np.testing.assert_allclose(f.derivative(x, f.forward(x, alpha, 0.0), alpha, 0.0),
                                   numeric, rtol=1e-6, atol=1e-7, err_msg=f"{name} {alpha}")


@pytest.mark.parametrize("name, bad, good", [("celu", 0.0, -1.0), ("soft_shrink", -0.5, 0.0),
                                             ("squareplus", -1.0, 0.0)])
def test_the_core_and_the_layers_refuse_alpha_outside_the_domain(name, bad, good):
    """celu's alpha 0 (PyTorch: division by zero), a negative soft_shrink threshold (PyTorch
    refuses it) and a negative squareplus b (NaN near 0)."""
    def layer(alpha):
        return [dict(kind="recurrent", cell="rnn_tanh", input_size=3, units=4,
                     activations=[name], alpha=[alpha])]
    with pytest.raises(ValueError, match="layer list is invalid"):
        _core.param_count(layer(bad))
    assert _core.param_count(layer(good)) == 4 * (3 + 4 + 2)
    with pytest.raises(ValueError, match=rf"activation_alpha: expected .* for '{name}', got "
                                         rf"\({bad},\)"):
        L.RNN(4, activations=(name,), activation_alpha=(bad,))
    assert L.RNN(4, activations=(name,), activation_alpha=(good,)).activation_alpha == (good,)


def every_cell(name, alpha):
    """An RNN, a GRU and an LSTM using `name`: for the RNN's function, the GRU's candidate and
    the LSTM's gates (exponential elsewhere grows the state without bound)."""
    def option(*names):
        return dict(activations=names, activation_alpha=tuple(alpha if a == name else 0.0
                                                              for a in names))
    return [L.RNN(5, **option(name)),
            L.GRU(4, direction="bidirectional", **option("sigmoid", name)),
            L.LSTM(3, **option(name, "tanh", "tanh")), L.Readout("last"), L.Dense(2)]


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_compiled_path_matches_the_reference(name, rng):
    alpha = 0.7 if ACTIVATIONS[name].uses_alpha else 0.0
    model = rnnext.Model(every_cell(name, alpha), 3, seed=int(rng.integers(1 << 30)))
    # small weights keep exponential's gates near 1, where float32 stays well conditioned
    model.set_params({key: 0.5 * value for key, value in model.params.items()})
    B, T = 4, 6
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = np.array([6, 3, 1, 5])
    y = rng.standard_normal((B, 2)).astype(np.float32)
    assert_f32_close(model.predict(x, lengths, backend="c"),
                     model.predict(x, lengths, backend="numpy"), f"{name} forward")
    loss_c, grads_c = model.loss_and_grads(x, y, lengths, loss="mse", backend="c")
    loss_np, grads_np = model.loss_and_grads(x, y, lengths, loss="mse", backend="numpy")
    assert_f32_close(loss_c, loss_np, f"{name} loss")
    assert grads_c.keys() == grads_np.keys()
    for key in grads_np:
        np.testing.assert_allclose(grads_c[key], grads_np[key], rtol=1e-3, atol=1e-4,
                                   err_msg=f"{name} d/d{key}")


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_keras_layers_with_it_import_and_match_predict(name):
    keras = keras_module()
    B, T, I = 3, 7, 4
    model = keras.Sequential([
        keras.Input((T, I)), keras.layers.SimpleRNN(5, activation=name, return_sequences=True),
        keras.layers.GRU(4, recurrent_activation=name, return_sequences=True),
        keras.layers.LSTM(3, activation=name)])
    rng = np.random.default_rng(7)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.25, 0.25, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    want = np.asarray(model.predict(x, verbose=0))
    ours = rnnext.from_keras(model)
    assert [layer.activations for layer in ours.layers[:3]] == [
        (name,), (name, "tanh"), ("sigmoid", name, name)]
    for backend in ("numpy", "c"):
        np.testing.assert_allclose(ours.predict(x, backend=backend), want, rtol=F32_RTOL,
                                   atol=F32_ATOL, err_msg=f"{name} {backend}")


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_onnx_export_refuses_it_by_name(name):
    model = rnnext.Model([L.GRU(3, activations=("sigmoid", name))], 2, seed=0)
    with pytest.raises(ValueError, match=f"activation '{name}' is not one of the functions "
                                         f"ONNX's recurrent nodes take$"):
        model.to_onnx()


def header_numbers(tree):
    """rnx_act's names (lower case) and values as rnnext.h numbers them."""
    header = (tree / "csrc" / "include" / "rnnext.h").read_text()
    return {name.lower(): int(value)
            for name, value in re.findall(r"RNX_ACT_(\w+) = (\d+)", header)}


def test_file_names_are_the_headers_numbers(source_tree):
    """rnx_act's values (appended, never renumbered) against the binding's names and the C file
    parser's reading of a saved model using each function."""
    numbers = header_numbers(source_tree)
    assert numbers == _core.ACTS
    assert sorted(numbers.values()) == list(range(len(numbers)))
    assert set(ACTIVATIONS) == set(numbers) - {"softmax"}
    model = rnnext.Model([L.RNN(2, activations=(name,)) for name in ACTIVATIONS], 3, seed=0)
    parsed = _core.TensorFile(model.to_bytes()).model_layers()
    assert [layer["activations"][0] for layer in parsed] == [numbers[a] for a in ACTIVATIONS]
