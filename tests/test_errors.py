"""Bad input raises ValueError or TypeError whose message starts with the argument's name and
shows what was received."""
import numpy as np
import pytest

from conftest import make_model
from rnnext import Model
from rnnext import layers as L

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
    # refused at once, not after building 2^24 layers (minutes and tens of GB before)
    ("num_layers_huge", dict(num_layers=2 ** 24), ValueError, r"^num_layers: .*1022\].*16777216"),
    ("hidden_size_huge", dict(hidden_size=2 ** 24 + 1), ValueError,
     r"^hidden_size: .*16777216\].*16777217"),
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


# ---------------------------------------------------------------------------------------------
# layer lists: the list itself, ids, masks and streams

V = 7
IDS = np.zeros((B, T), np.int64)
MASK = np.ones((B, T), bool)


@pytest.fixture(scope="module")
def ids_model():
    return Model([L.Embedding(V, 4), L.LSTM(5), L.GRU(3), L.Dense(2)], seed=0)


BAD_IDS_FORWARD = [
    ("ids_too_large", dict(x=np.full((B, T), V)), ValueError, r"^x: .*\[0, 7\).*max 7"),
    ("ids_negative", dict(x=np.full((B, T), -1)), ValueError, r"^x: .*\[0, 7\).*min -1"),
    ("ids_one_bad", dict(x=np.where(np.arange(T) == 3, V + 2, 0)[None].repeat(B, 0)),
     ValueError, r"^x: .*max 9"),
    ("ids_float", dict(x=np.zeros((B, T), np.float32)), TypeError, r"^x: .*integer.*float32"),
    ("ids_float_features", dict(x=np.zeros((B, T, 4), np.float32)), TypeError,
     r"^x: .*integer.*float32"),
    ("ids_3d", dict(x=np.zeros((B, T, 4), np.int64)), ValueError, r"^x: .*\(B, T\).*\(2, 5, 4\)"),
    ("ids_strings", dict(x=np.full((B, T), "a")), TypeError, r"^x: .*<U1"),
    ("ids_no_steps", dict(x=np.zeros((B, 0), np.int64)), ValueError, r"^x: .*\(2, 0\)"),
    ("mask_and_lengths", dict(x=IDS, lengths=[T, T], mask=MASK), ValueError,
     r"^mask: .*lengths.*not both"),
    ("mask_shape", dict(x=IDS, mask=MASK[:, :3]), ValueError, r"^mask: .*\(2, 5\).*\(2, 3\)"),
    ("mask_1d", dict(x=IDS, mask=MASK[0]), ValueError, r"^mask: .*\(2, 5\).*\(5,\)"),
    ("mask_transposed", dict(x=IDS, mask=MASK.T), ValueError, r"^mask: .*\(2, 5\).*\(5, 2\)"),
    ("mask_unbatched_shape", dict(x=IDS[0], mask=MASK), ValueError, r"^mask: .*\(5,\).*\(2, 5\)"),
    ("mask_float", dict(x=IDS, mask=MASK.astype(np.float32)), TypeError, r"^mask: .*float32"),
    ("mask_strings", dict(x=IDS, mask=np.full((B, T), "1")), TypeError, r"^mask: .*<U1"),
    ("state_not_list", dict(x=IDS, state=np.zeros((2, B, 5), np.float32)), TypeError,
     r"^state: .*list of 2 states.*ndarray"),
    ("state_list_length", dict(x=IDS, state=[(np.zeros((1, B, 5)),) * 2]), TypeError,
     r"^state: .*list of 2 states"),
    ("state_lstm_entry", dict(x=IDS, state=[np.zeros((1, B, 5)), np.zeros((1, B, 3))]),
     TypeError, r"^state\[0\]: .*\(h, c\).*ndarray"),
    ("state_gru_entry_shape", dict(x=IDS, state=[(np.zeros((1, B, 5)),) * 2,
                                                 np.zeros((1, B, 5))]), ValueError,
     r"^state\[1\]: .*\(1, 2, 3\).*\(1, 2, 5\)"),
]


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("kwargs,exc,match", [c[1:] for c in BAD_IDS_FORWARD],
                         ids=[c[0] for c in BAD_IDS_FORWARD])
def test_bad_forward_input_of_a_layer_list(ids_model, kwargs, exc, match, backend):
    with pytest.raises(exc, match=match):
        ids_model.forward(**{"backend": backend, **kwargs})
    if "state" not in kwargs:
        with pytest.raises(exc, match=match):
            ids_model.predict(**{"backend": backend, **kwargs})


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_mask_errors_of_a_float_model(lstm, backend):
    with pytest.raises(ValueError, match=r"^mask: .*not both"):
        lstm.forward(X, lengths=[T, T], mask=MASK, backend=backend)
    with pytest.raises(ValueError, match=r"^mask: .*\(2, 5\).*\(2, 4\)"):
        lstm.predict(X, mask=MASK[:, 1:], backend=backend)


@pytest.mark.parametrize("layers,input_size,exc,match", [
    ([], 3, TypeError, r"^layers: .*non-empty.*\[\]"),
    ("lstm-layers", 3, ValueError, r"^cell: .*'lstm-layers'"),
    ([L.LSTM(4), "dense"], 3, TypeError, r"^layers\[1\]: .*Dense.*str"),
    ([L.LSTM(4), L.Embedding(3, 4)], 3, ValueError, r"^layers\[1\]: .*Embedding.*after LSTM"),
    ([L.Embedding(3, 4), L.Embedding(3, 4), L.GRU(2)], None, ValueError,
     r"^layers\[1\]: .*Embedding.*after Embedding"),
    ([L.Dense(3), L.LSTM(4)], 3, ValueError, r"^layers\[0\]: .*Dense.*the start"),
    ([L.Readout("last"), L.LSTM(4)], 3, ValueError, r"^layers\[0\]: .*Readout.*the start"),
    ([L.LSTM(4), L.Dense(3), L.Readout("last")], 3, ValueError,
     r"^layers\[2\]: .*Readout.*after Dense"),
    ([L.LSTM(4), L.Dense(3), L.GRU(3)], 3, ValueError, r"^layers\[2\]: .*GRU.*after Dense"),
    ([L.LSTM(4), L.Readout("last"), L.Readout("mean")], 3, ValueError,
     r"^layers\[2\]: .*Readout.*after Readout"),
    ([L.Embedding(3, 4), L.Dense(2)], None, ValueError, r"^layers\[1\]: .*Dense.*Embedding"),
    ([L.Embedding(3, 4)], None, ValueError, r"^layers: .*at least one RNN, LSTM or GRU"),
    ([L.Embedding(3, 4), L.LSTM(3)], 3, ValueError, r"^input_size: .*None.*Embedding.*got 3"),
    ([L.LSTM(3)], None, TypeError, r"^input_size: .*int.*None"),
    ([L.LSTM(3)], 0, ValueError, r"^input_size: .*got 0"),
    ([L.LSTM(3)], 2.0, TypeError, r"^input_size: .*float"),
    ([L.LSTM(3)] * 1025, 3, ValueError, r"^layers: .*at most 1024.*got 1025"),
], ids=["empty", "unknown_cell", "not_a_layer", "embedding_after_recurrent", "two_embeddings",
        "dense_first", "readout_first", "readout_after_dense", "recurrent_after_dense",
        "two_readouts", "no_recurrent", "only_embedding", "input_size_with_embedding",
        "no_input_size", "input_size_zero", "input_size_float", "too_many_layers"])
def test_bad_layer_list(layers, input_size, exc, match):
    with pytest.raises(exc, match=match):
        Model(layers, input_size)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(hidden_size=4), TypeError, r"^hidden_size: .*shorthand"),
    (dict(num_layers=2), TypeError, r"^num_layers: .*shorthand"),
    (dict(bidirectional=True), TypeError, r"^bidirectional: .*shorthand"),
    (dict(output_size=2), TypeError, r"^output_size: .*shorthand"),
    (dict(cell="gru"), TypeError, r"^cell: .*not both"),
], ids=["hidden_size", "num_layers", "bidirectional", "output_size", "cell"])
def test_shorthand_arguments_with_a_layer_list(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Model([L.LSTM(4)], 3, **kwargs)


# every boolean option, of the shorthand and of the layer classes, as a call that sets it
BOOL_OPTIONS = {
    "bidirectional": lambda v: Model("lstm", 3, 4, bidirectional=v),
    "linear_before_reset": lambda v: Model("gru", 3, 4, linear_before_reset=v),
    "peepholes": lambda v: L.LSTM(3, peepholes=v),
    "input_forget": lambda v: L.LSTM(3, input_forget=v),
    "reset_after": lambda v: L.GRU(3, reset_after=v),
    "mask_zero": lambda v: L.Embedding(3, 4, mask_zero=v),
}
NOT_BOOLS = [2, "yes", "no", 1, 0, 1.0, None, np.int64(1), np.array([True]), [False]]


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
@pytest.mark.parametrize("name", BOOL_OPTIONS)
def test_a_boolean_option_takes_only_a_bool(name, value):
    with pytest.raises(TypeError, match=rf"^{name}: expected a bool, got "):
        BOOL_OPTIONS[name](value)
    for flag in (True, False, np.bool_(True)):  # numpy's bool is a bool
        BOOL_OPTIONS[name](flag)


@pytest.mark.parametrize("kwargs", [dict(bidirectional=0), dict(linear_before_reset=1),
                                    dict(num_layers=1.0)], ids=repr)
def test_shorthand_arguments_equal_to_a_default_are_still_given(kwargs):
    """0 is not the default False: with a layer list it is a shorthand argument, refused."""
    with pytest.raises(TypeError, match=rf"^{next(iter(kwargs))}: .*shorthand"):
        Model([L.LSTM(4)], 3, **kwargs)


def seed_takers():
    """Every call that takes a seed, as a function of the seed."""
    from rnnext.tasks import charlm

    chars = ["a", "b", " "]
    lm = Model("lstm", 3, 4, output_size=3, output="many_to_many", activation="softmax", seed=0)
    x, y = np.zeros((2, 4, 3), np.float32), np.zeros((2, 4), np.int64)
    return {
        "Model": lambda seed: Model("gru", 3, 4, seed=seed),
        "layer_list": lambda seed: Model([L.Embedding(5, 2), L.RNN(3)], seed=seed),
        "init_params": lambda seed: L.init_params(lm.spec, seed),
        "fit": lambda seed: lm.fit(x, y, epochs=1, seed=seed, verbose=False),
        "charlm_sample": lambda seed: charlm.sample(lm, chars, 3, prime="ab", seed=seed),
    }


@pytest.mark.parametrize("seed,exc,got", [
    (-1, ValueError, "-1"), (np.int64(-3), ValueError, "-3"), (1.5, TypeError, "float 1.5"),
    ("7", TypeError, "str '7'"), (True, TypeError, "bool True"), ([1, 2], TypeError, "list"),
    (np.random.SeedSequence(0), TypeError, "SeedSequence"),
    (np.random.default_rng(0), TypeError, "Generator"),
], ids=["negative", "negative_numpy", "float", "str", "bool", "list", "seed_sequence",
        "generator"])
def test_a_bad_seed_is_refused_by_name(seed, exc, got):
    for take in seed_takers().values():
        with pytest.raises(exc, match=rf"^seed: expected None or an int >= 0, got {got}"):
            take(seed)


def test_every_seed_taker_takes_none_and_ints():
    for take in seed_takers().values():
        for seed in (None, 0, np.uint8(3), 2 ** 70):
            take(seed)
    first, again = (Model("gru", 3, 4, seed=np.int64(2 ** 40)).params for _ in range(2))
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])


def test_shorthand_without_hidden_size():
    with pytest.raises(TypeError, match=r"^hidden_size: .*got None"):
        Model("lstm", 3)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: L.LSTM(3, proj_size=3), ValueError, r"^proj_size: .*less than units \(3\).*got 3"),
    (lambda: L.LSTM(3, proj_size=-1), ValueError, r"^proj_size: .*got -1"),
    (lambda: L.LSTM(3, peepholes=1), TypeError, r"^peepholes: .*bool.*int"),
    (lambda: L.LSTM(0), ValueError, r"^units: .*got 0"),
    (lambda: L.GRU(2.5), TypeError, r"^units: .*float"),
    (lambda: L.LSTM(3, clip=-1), ValueError, r"^clip: .*> 0.*-1"),
    (lambda: L.LSTM(3, clip=float("nan")), ValueError, r"^clip: .*nan"),
    (lambda: L.GRU(3, activations=("sigmoid",)), ValueError, r"^activations: .*2 names.*gru"),
    (lambda: L.GRU(3, activations=("sigmoid", "glu")), ValueError, r"^activations: .*'glu'"),
    (lambda: L.RNN(3, activation_alpha=(1.0, 2.0)), ValueError, r"^activation_alpha: .*1 float"),
    (lambda: L.RNN(3, activation_beta=(float("inf"),)), ValueError, r"^activation_beta: .*finite"),
    (lambda: L.RNN(3, nonlinearity="gelu"), ValueError, r"^nonlinearity: .*'gelu'"),
    (lambda: L.RNN(3, nonlinearity="relu", activations=("tanh",)), ValueError,
     r"^nonlinearity: .*contradicts"),
    (lambda: L.RNN(3, direction="both"), ValueError, r"^direction: .*'both'"),
    (lambda: L.GRU(3, merge="max"), ValueError, r"^merge: .*'max'"),
    (lambda: L.GRU(3, reset_after="yes"), TypeError, r"^reset_after: .*bool.*str"),
    (lambda: L.Readout("first"), ValueError, r"^mode: .*'first'"),
    (lambda: L.Embedding(3, 4, padding_idx=3), ValueError, r"^padding_idx: .*\[0, 3\).*got 3"),
    (lambda: L.Embedding(0, 4), ValueError, r"^vocab_size: .*got 0"),
    (lambda: L.Embedding(3, 4, mask_zero="1"), TypeError, r"^mask_zero: .*bool.*str"),
    (lambda: L.Dense(0), ValueError, r"^units: .*got 0"),
    (lambda: L.Embedding(2 ** 24 + 1, 4), ValueError, r"^vocab_size: .*16777216\]"),
    (lambda: L.Dense(3, activation="gelu"), ValueError, r"^activation: .*'gelu'"),
], ids=["proj_size_units", "proj_size_negative", "peepholes_int", "units_zero", "units_float",
        "clip_negative", "clip_nan", "activations_count", "activations_name", "alpha_count",
        "beta_inf", "nonlinearity", "nonlinearity_contradicts", "direction", "merge",
        "reset_after", "readout_mode", "padding_idx", "vocab_size", "mask_zero", "dense_units",
        "vocab_size_huge", "dense_activation"])
def test_bad_layer_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("layers,match", [
    ([L.LSTM(4, direction="bidirectional")], r"^model: .*'bidirectional'.*forward"),
    ([L.GRU(4), L.RNN(3, direction="reverse")], r"^model: .*layer 1 .*'reverse'.*forward"),
    ([L.LSTM(4), L.Readout("mean")], r"^model: .*'mean'.*whole sequence"),
    ([L.GRU(4), L.Readout("max"), L.Dense(2)], r"^model: .*'max'.*whole sequence"),
], ids=["bidirectional", "reverse", "mean", "max"])
def test_stream_of_a_model_that_needs_the_future(layers, match, backend):
    with pytest.raises(ValueError, match=match):
        Model(layers, 3, seed=0).stream(backend=backend)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("step,exc,match", [
    (np.array([V, 0]), ValueError, r"^x: .*\[0, 7\).*max 7"),
    (np.array([-1, 0]), ValueError, r"^x: .*\[0, 7\).*min -1"),
    (np.array([0.5, 0.0]), TypeError, r"^x: .*integer.*float64"),
    (np.array([0, 0, 0]), ValueError, r"^x: .*\(2,\).*\(3,\)"),
    (np.zeros((2, 4), np.int64), ValueError, r"^x: .*\(2,\).*\(2, 4\)"),
], ids=["id_too_large", "id_negative", "floats", "batch", "features"])
def test_bad_stream_step_of_ids(ids_model, step, exc, match, backend):
    stream = ids_model.stream(batch=2, backend=backend)
    with pytest.raises(exc, match=match):
        stream.step(step)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_bad_stream_batch_and_state_of_a_layer_list(ids_model, backend):
    with pytest.raises(ValueError, match=r"^batch: .*got 0"):
        ids_model.stream(batch=0, backend=backend)
    with pytest.raises(TypeError, match=r"^batch: .*float"):
        ids_model.stream(batch=1.0, backend=backend)
    with pytest.raises(ValueError, match=r"^backend: .*'gpu'"):
        ids_model.stream(backend="gpu")
    stream = ids_model.stream(batch=2, backend=backend)
    with pytest.raises(TypeError, match=r"^state: .*list of 2 states"):
        stream.state = np.zeros((2, 2, 5), np.float32)
    with pytest.raises(ValueError, match=r"^state\[1\]: .*\(1, 2, 3\).*\(1, 1, 3\)"):
        stream.state = [(np.zeros((1, 2, 5)),) * 2, np.zeros((1, 1, 3))]
