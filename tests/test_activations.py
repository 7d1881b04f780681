"""The kernels' vectorised sigmoid and tanh against NumPy over the float32 range."""
import numpy as np
import pytest

from rnnext import _core

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
