"""The plain path's activation functions (general.c's rnx_act_value and rnx_act_derivative,
through ctypes on conftest's general_lib build of the core) against the NumPy reference of
cells.ACTIVATIONS, itself checked against Keras and PyTorch autograd in test_activations.py."""
import numpy as np
import pytest

from rnnext.cells import ACTIVATIONS
from test_activations import KERAS_ONLY, KINKS, alphas, header_numbers


@pytest.mark.parametrize("name", KERAS_ONLY)
def test_c_function_and_slope_match_the_reference(name, source_tree, general_lib):
    """rnx_act_value and rnx_act_derivative (general.c, the plain path's float maths) against
    the reference over the float range a cell sees, kinks and large |x| included."""
    x = np.concatenate([np.linspace(-30.0, 30.0, 6001), KINKS, [-1e30, -1e6, 1e6, 1e30]])
    x = x[np.abs(x) < 80.0] if name == "exponential" else x  # exp(x) overflows float32
    x = x.astype(np.float32).astype(np.float64)
    act, f = header_numbers(source_tree)[name], ACTIVATIONS[name]
    for alpha in alphas(name):
        y = f.forward(x, alpha, 0.0)
        got = np.array([general_lib.rnx_act_value(act, v, alpha, 0.0) for v in x])
        slope = np.array([general_lib.rnx_act_derivative(act, v, alpha, 0.0) for v in x])
        np.testing.assert_allclose(got, y, rtol=2e-6, atol=1e-6, err_msg=f"{name} {alpha}")
        np.testing.assert_allclose(slope, f.derivative(x, y, alpha, 0.0), rtol=2e-6, atol=1e-6,
                                   err_msg=f"{name}' {alpha}")
