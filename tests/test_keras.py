"""Keras import, against Keras's own predict on random inputs (Keras 3; the torch backend unless
KERAS_BACKEND says otherwise): the imported layer lists run through Model (the reference, the
compiled core checked against it)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras not installed")

import rnnext  # noqa: E402
from rnnext import layers as R  # noqa: E402
from rnnext.keras_io import KerasImportError, keras_layers  # noqa: E402

from conftest import F32_ATOL, F32_RTOL, forward_imported  # noqa: E402

L = keras.layers
B, T, I = 3, 7, 4
# Keras's torch backend converts with a numpy-1 style __array__; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def keras_model(*layers, seed=0):
    """A Sequential model with random weights, biases included (Keras initialises them to 0)."""
    model = keras.Sequential([keras.Input((T, I)), *layers])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    return model


def assert_matches_keras(model):
    """The imported (layers, input_size, params) against model.predict; returns the layers."""
    imported = keras_layers(model)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(forward_imported(imported, x)[0], expected, rtol=F32_RTOL,
                               atol=F32_ATOL)
    return imported[0]


def recurrent_count(layers):
    return sum(type(layer) in R.RECURRENT_TYPES for layer in layers)


@pytest.mark.parametrize("make", [
    lambda: L.LSTM(5, return_sequences=True),
    lambda: L.GRU(5, return_sequences=True),  # reset_after=True, Keras 3's default
    lambda: L.GRU(5, return_sequences=True, reset_after=False),
    lambda: L.SimpleRNN(5, return_sequences=True),
    lambda: L.SimpleRNN(5, return_sequences=True, activation="relu"),
], ids=["lstm", "gru-reset-after", "gru-reset-before", "rnn-tanh", "rnn-relu"])
@pytest.mark.parametrize("stack", ["one", "two-many-to-one-softmax", "bidirectional-dense"])
def test_recurrent_layers_match_keras(make, stack):
    if stack == "one":
        layers = [make()]
    elif stack == "two-many-to-one-softmax":
        last = make()
        last_config = last.get_config() | {"return_sequences": False}
        layers = [make(), type(last).from_config(last_config), L.Dense(3, activation="softmax")]
    else:
        layers = [L.Bidirectional(make()), L.Bidirectional(make()), L.Dense(2),
                  L.Activation("sigmoid")]
    imported = assert_matches_keras(keras_model(*layers))
    assert recurrent_count(imported) == (1 if stack == "one" else 2)


def test_gru_reset_after_false_is_the_reset_before_variant():
    imported = assert_matches_keras(keras_model(L.GRU(6, reset_after=False)))
    assert imported == [R.GRU(6, reset_after=False), R.Readout("final")]


@pytest.mark.parametrize("make, activations", [
    (lambda: L.LSTM(5, recurrent_activation="hard_sigmoid", activation="relu"),
     ("hard_sigmoid", "relu", "relu")),
    (lambda: L.GRU(5, recurrent_activation="hard_sigmoid", activation="softsign"),
     ("hard_sigmoid", "softsign")),
    (lambda: L.GRU(5, reset_after=False, activation="elu"), ("sigmoid", "elu")),
    (lambda: L.SimpleRNN(5, activation="leaky_relu"), ("leaky_relu",)),
    (lambda: L.LSTM(5, activation="softplus", recurrent_activation="linear"),
     ("linear", "softplus", "softplus")),
    (lambda: L.SimpleRNN(5, activation="sigmoid"), ("sigmoid",)),
], ids=["lstm-hard-sigmoid-relu", "gru-softsign", "gru-before-elu", "rnn-leaky-relu",
        "lstm-linear-softplus", "rnn-sigmoid"])
def test_activations_match_keras(make, activations):
    layer = make()
    config = layer.get_config() | {"return_sequences": True}
    imported = assert_matches_keras(keras_model(type(layer).from_config(config), seed=3))
    assert imported[0].activations == activations
    if "hard_sigmoid" in activations:  # Keras 3's: relu6(x + 3) / 6
        assert imported[0].activation_alpha[0] == pytest.approx(1 / 6)
        assert imported[0].activation_beta[0] == 0.5


@pytest.mark.parametrize("make", [L.LSTM, L.GRU, L.SimpleRNN])
def test_go_backwards_is_a_reverse_layer(make):
    imported = assert_matches_keras(keras_model(make(5, return_sequences=True),
                                                make(4, go_backwards=True), L.Dense(2)))
    assert [getattr(layer, "direction", None) for layer in imported] == \
        ["forward", "reverse", None, None]
    assert imported[2] == R.Readout("final")


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_merge_modes_match_keras(merge_mode, return_sequences):
    imported = assert_matches_keras(keras_model(
        L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=merge_mode),
        L.Bidirectional(L.LSTM(3, return_sequences=return_sequences), merge_mode=merge_mode),
        L.Dense(2, activation="tanh")))
    assert imported[1].merge == merge_mode


def test_chains_of_different_kinds_and_sizes_match_keras():
    imported = assert_matches_keras(keras_model(
        L.LSTM(6, return_sequences=True), L.GRU(3, return_sequences=True),
        L.Bidirectional(L.SimpleRNN(4, activation="relu")), L.Dense(5, activation="relu"),
        L.Dropout(0.3), L.Dense(3), L.Activation("softmax")))
    assert imported == [R.LSTM(6), R.GRU(3), R.RNN(4, nonlinearity="relu",
                                                   direction="bidirectional"),
                        R.Readout("final"), R.Dense(5, "relu"), R.Dense(3, "softmax")]


def test_from_keras_builds_a_model():
    """The public function: keras_layers' list in a Model (the layer-list Model of branch
    `model`), its outputs Keras's."""
    model = keras_model(L.GRU(4, return_sequences=True), L.LSTM(3), L.Dense(2))
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    np.testing.assert_allclose(rnnext.from_keras(model).predict(x), model.predict(x, verbose=0),
                               rtol=F32_RTOL, atol=F32_ATOL)


def test_no_bias_time_distributed_dense_and_dropout():
    assert_matches_keras(keras_model(L.LSTM(4, use_bias=False, return_sequences=True),
                                     L.Dropout(0.5), L.TimeDistributed(L.Dense(3)),
                                     L.Softmax()))


def test_saved_keras_file_imports(tmp_path):
    model = keras_model(L.GRU(4), L.Dense(2, activation="softmax"))
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    np.testing.assert_allclose(forward_imported(keras_layers(str(path)), x)[0],
                               model.predict(x, verbose=0), rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("layers, expected", [
    (lambda: [L.LSTM(4, go_backwards=True, return_sequences=True)],
     "LSTM layer .*go_backwards=True with return_sequences=True"),
    (lambda: [L.Bidirectional(L.LSTM(4), merge_mode=None)], "merge_mode None"),
    (lambda: [L.Bidirectional(L.LSTM(4), backward_layer=L.LSTM(3, go_backwards=True))],
     "Bidirectional layer .*backward layer's options differ"),
    (lambda: [L.LSTM(4, recurrent_activation="softmax")], "recurrent_activation 'softmax' is not"),
    (lambda: [L.GRU(4, activation="log_softmax")],
     "GRU layer .*activation 'log_softmax' is not supported"),
    (lambda: [L.Masking(), L.LSTM(4)], "Masking layer .* is not supported"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Dense(3), L.GRU(4)],
     "GRU layer .*must follow the input or a recurrent layer"),
    (lambda: [L.LSTM(4), L.Dense(2, activation="elu")], "Dense layer .*activation 'elu'"),
    (lambda: [L.Dense(2), L.LSTM(4)], "Dense layer .* is not supported"),
])
def test_unsupported_models_are_refused_by_name(layers, expected):
    with pytest.raises(KerasImportError, match=expected):
        keras_layers(keras_model(*layers()))


def test_functional_chains_import_and_branches_are_refused():
    inputs = keras.Input((T, I))
    hidden = L.GRU(4, return_sequences=True)(inputs)
    chain = keras.Model(inputs, L.Dense(2)(L.GRU(4, return_sequences=True)(hidden)))
    assert_matches_keras(chain)
    branch = keras.Model(inputs, L.Concatenate()([hidden, L.GRU(4, return_sequences=True)(inputs)]))
    with pytest.raises(KerasImportError, match="not a single chain"):
        keras_layers(branch)


def test_stateful_is_refused():
    model = keras.Sequential([keras.Input((T, I), batch_size=2), L.LSTM(3, stateful=True)])
    with pytest.raises(KerasImportError, match="stateful=True"):
        keras_layers(model)
