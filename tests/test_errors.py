"""Bad input raises ValueError or TypeError whose message starts with the argument's name and
shows what was received."""
import numpy as np
import pytest

from conftest import make_model
from rnnext import Model

B, T, I, H = 2, 5, 3, 4
LD = 4  # two layers, two directions
X = np.zeros((B, T, I), np.float32)
H_STATE = np.zeros((LD, B, H), np.float32)

# (id, forward arguments, exception, regex the message must match)
BAD_FORWARD = [
    ("x_1d", dict(x=np.zeros(I)), ValueError, r"^x: .*\(3,\)"),
    ("x_4d", dict(x=np.zeros((1, B, T, I))), ValueError, r"^x: .*\(1, 2, 5, 3\)"),
    ("x_scalar", dict(x=1.0), ValueError, r"^x: .*\(\)"),
    ("x_features", dict(x=np.zeros((B, T, I + 1))), ValueError, r"^x: .*3 features.*\(2, 5, 4\)"),
    ("x_features_unbatched", dict(x=np.zeros((T, I + 2))), ValueError, r"^x: .*\(5, 5\)"),
    ("x_empty_batch", dict(x=np.zeros((0, T, I))), ValueError, r"^x: .*\(0, 5, 3\)"),
    ("x_no_steps", dict(x=np.zeros((B, 0, I))), ValueError, r"^x: .*\(2, 0, 3\)"),
    ("x_no_steps_unbatched", dict(x=np.zeros((0, I))), ValueError, r"^x: .*\(0, 3\)"),
    ("x_strings", dict(x=np.full((B, T, I), "abc")), TypeError, r"^x: .*<U3"),
    ("x_object_dicts", dict(x=np.array([[[{}] * I] * T] * B, dtype=object)), TypeError,
     r"^x: .*object"),
    ("x_object_none", dict(x=np.array([[[None] * I] * T] * B, dtype=object)), TypeError,
     r"^x: .*object"),
    ("x_complex", dict(x=np.ones((B, T, I), np.complex64)), TypeError, r"^x: .*complex"),
    ("x_ragged", dict(x=[[[0.0] * I] * T, [[0.0] * I] * (T - 1)]), TypeError, r"^x: .*list"),
    ("lengths_zero", dict(x=X, lengths=[0, T]), ValueError, r"^lengths: .*\[1, 5\].*min 0"),
    ("lengths_negative", dict(x=X, lengths=[-3, 1]), ValueError, r"^lengths: .*min -3"),
    ("lengths_past_T", dict(x=X, lengths=[1, T + 1]), ValueError, r"^lengths: .*\[1, 5\].*max 6"),
    ("lengths_short", dict(x=X, lengths=[T]), ValueError, r"^lengths: .*\(2,\).*\(1,\)"),
    ("lengths_long", dict(x=X, lengths=[T, T, T]), ValueError, r"^lengths: .*\(2,\).*\(3,\)"),
    ("lengths_2d", dict(x=X, lengths=[[T, T]]), ValueError, r"^lengths: .*\(2,\).*\(1, 2\)"),
    ("lengths_scalar", dict(x=X, lengths=T), ValueError, r"^lengths: .*\(2,\).*\(\)"),
    ("lengths_float", dict(x=X, lengths=np.array([1.0, 2.0])), TypeError, r"^lengths: .*float64"),
    ("lengths_float_list", dict(x=X, lengths=[1.0, 2.0]), TypeError, r"^lengths: .*float"),
    ("lengths_bool", dict(x=X, lengths=np.array([True, True])), TypeError, r"^lengths: .*bool"),
    ("lengths_strings", dict(x=X, lengths=["1", "2"]), TypeError, r"^lengths: .*<U1"),
    ("state_not_tuple", dict(x=X, state=H_STATE), TypeError, r"^state: .*tuple.*ndarray"),
    ("state_three_parts", dict(x=X, state=(H_STATE,) * 3), TypeError, r"^state: .*tuple"),
    ("state_h_shape", dict(x=X, state=(H_STATE[:2], H_STATE)), ValueError,
     r"^state\[0\] \(h\): .*\(4, 2, 4\).*\(2, 2, 4\)"),
    ("state_c_shape", dict(x=X, state=(H_STATE, H_STATE[..., :3])), ValueError,
     r"^state\[1\] \(c\): .*\(4, 2, 4\).*\(4, 2, 3\)"),
    ("state_unbatched_shape", dict(x=X[0], state=(H_STATE, H_STATE)), ValueError,
     r"^state\[0\] \(h\): .*\(4, 4\).*\(4, 2, 4\)"),
    ("state_strings", dict(x=X, state=(np.full((LD, B, H), "a"), H_STATE)), TypeError,
     r"^state\[0\] \(h\): .*<U1"),
    ("n_threads_zero", dict(x=X, n_threads=0), ValueError, r"^n_threads: .*got 0"),
    ("n_threads_float", dict(x=X, n_threads=1.5), TypeError, r"^n_threads: .*float"),
    ("n_threads_str", dict(x=X, n_threads="2"), TypeError, r"^n_threads: .*str"),
    ("n_threads_bool", dict(x=X, n_threads=True), TypeError, r"^n_threads: .*bool"),
    ("backend", dict(x=X, backend="cuda"), ValueError, r"^backend: .*'cuda'"),
]


@pytest.fixture(scope="module")
def lstm():
    return make_model("lstm", input_size=I, hidden_size=H, num_layers=2, bidirectional=True)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("kwargs,exc,match", [c[1:] for c in BAD_FORWARD],
                         ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_input(lstm, kwargs, exc, match, backend):
    kwargs = {"backend": backend, **kwargs}
    with pytest.raises(exc, match=match):
        lstm.forward(**kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [c[1:] for c in BAD_FORWARD if "state" not in c[1]],
                         ids=[c[0] for c in BAD_FORWARD if "state" not in c[1]])
def test_bad_predict_input(lstm, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lstm.predict(**kwargs)


@pytest.mark.parametrize("state,exc,match", [
    ((H_STATE, H_STATE), ValueError, r"^state: .*\(2, 2, 4\).*\(2, 4, 2, 4\)"),
    (H_STATE, ValueError, r"^state: .*\(2, 2, 4\).*\(4, 2, 4\)"),
    (np.zeros((2, B)), ValueError, r"^state: .*\(2, 2, 4\).*\(2, 2\)"),
], ids=["tuple", "shape", "ndim"])
def test_bad_state_of_a_gru(state, exc, match):
    model = make_model("gru", input_size=I, hidden_size=H, num_layers=2)
    with pytest.raises(exc, match=match):
        model.forward(X, state=state)


# ---------------------------------------------------------------------------------------------
# construction

GOOD = dict(cell="rnn", input_size=3, hidden_size=4)
BAD_MODEL = [
    ("cell", dict(cell="transformer"), ValueError, r"^cell: .*'transformer'"),
    ("nonlinearity", dict(nonlinearity="gelu"), ValueError, r"^nonlinearity: .*'gelu'"),
    ("nonlinearity_of_lstm", dict(cell="lstm", nonlinearity="relu"), ValueError,
     r"^nonlinearity: .*'relu'.*'lstm'"),
    ("output", dict(output_size=2, output="seq2seq"), ValueError, r"^output: .*'seq2seq'"),
    ("activation", dict(output_size=2, activation="gelu"), ValueError, r"^activation: .*'gelu'"),
    ("activation_without_output_size", dict(activation="softmax"), ValueError,
     r"^activation: .*output_size.*'softmax'"),
    ("backend", dict(backend="torch"), ValueError, r"^backend: .*'torch'"),
    ("input_size_zero", dict(input_size=0), ValueError, r"^input_size: .*got 0"),
    ("hidden_size_float", dict(hidden_size=4.0), TypeError, r"^hidden_size: .*float"),
    ("num_layers_zero", dict(num_layers=0), ValueError, r"^num_layers: .*got 0"),
    ("num_layers_bool", dict(num_layers=True), TypeError, r"^num_layers: .*bool"),
    ("output_size_negative", dict(output_size=-1), ValueError, r"^output_size: .*got -1"),
]


@pytest.mark.parametrize("kwargs,exc,match", [c[1:] for c in BAD_MODEL],
                         ids=[c[0] for c in BAD_MODEL])
def test_bad_model_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Model(**{**GOOD, **kwargs})


def good_params():
    return dict(make_model("rnn_tanh", input_size=3, hidden_size=4, output_size=2).params)


BAD_PARAMS = [
    ("missing", lambda p: p.pop("weight_hh_l0"), ValueError,
     r"^params: .*missing \['weight_hh_l0'\]"),
    ("extra", lambda p: p.update(weight_ih_l1=np.zeros((4, 4))), ValueError,
     r"^params: .*unexpected \['weight_ih_l1'\]"),
    ("shape", lambda p: p.update(weight_ih_l0=np.zeros((4, 4))), ValueError,
     r"^params\['weight_ih_l0'\]: .*\(4, 3\).*\(4, 4\)"),
    ("dense_shape", lambda p: p.update({"dense0.bias": np.zeros(3)}), ValueError,
     r"^params\['dense0.bias'\]: .*\(2,\).*\(3,\)"),
    ("old_head_name", lambda p: p.update({"head.bias": p.pop("dense0.bias")}), ValueError,
     r"^params: .*missing \['dense0.bias'\].*unexpected \['head.bias'\]"),
    ("strings", lambda p: p.update(bias_ih_l0=np.array(["a"] * 4)), TypeError,
     r"^params\['bias_ih_l0'\]: .*<U1"),
]


@pytest.mark.parametrize("edit,exc,match", [c[1:] for c in BAD_PARAMS],
                         ids=[c[0] for c in BAD_PARAMS])
def test_bad_params(edit, exc, match):
    params = good_params()
    edit(params)
    with pytest.raises(exc, match=match):
        Model("rnn", 3, 4, output_size=2, params=params)
    model = Model("rnn", 3, 4, output_size=2, seed=0)
    before = {n: p.copy() for n, p in model.params.items()}
    with pytest.raises(exc, match=match):
        model.set_params(params)
    for name, value in before.items():  # a refused set_params leaves the model as it was
        np.testing.assert_array_equal(model.params[name], value)
