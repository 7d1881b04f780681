"""Keras import, against Keras's own predict on random inputs (Keras 3; the torch backend unless
KERAS_BACKEND says otherwise)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras not installed")

import rnnext  # noqa: E402
from rnnext.keras_io import KerasImportError  # noqa: E402

from conftest import F32_ATOL, F32_RTOL  # noqa: E402

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
    imported = rnnext.from_keras(model)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    got = imported.predict(x) if expected.ndim == 2 else imported.forward(x)[0]
    np.testing.assert_allclose(got, expected, rtol=F32_RTOL, atol=F32_ATOL)
    return imported


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
    assert imported.num_layers == (1 if stack == "one" else 2)


def test_gru_reset_after_false_is_the_reset_before_variant():
    imported = assert_matches_keras(keras_model(L.GRU(6, reset_after=False)))
    assert imported.core_cell == "gru_reset_before"


def test_no_bias_time_distributed_dense_and_dropout():
    assert_matches_keras(keras_model(L.LSTM(4, use_bias=False, return_sequences=True),
                                     L.Dropout(0.5), L.TimeDistributed(L.Dense(3)),
                                     L.Softmax()))


def test_saved_keras_file_imports(tmp_path):
    model = keras_model(L.GRU(4), L.Dense(2, activation="softmax"))
    path = tmp_path / "model.keras"
    model.save(path)
    imported = rnnext.from_keras(str(path))
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    np.testing.assert_allclose(imported.predict(x), model.predict(x, verbose=0),
                               rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("layers, expected", [
    (lambda: [L.LSTM(4, go_backwards=True)], "go_backwards=True"),
    (lambda: [L.Bidirectional(L.LSTM(4))], "return_sequences=False concatenates"),
    (lambda: [L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum")],
     "merge_mode 'sum'"),
    (lambda: [L.LSTM(4, recurrent_activation="hard_sigmoid")], "recurrent_activation"),
    (lambda: [L.GRU(4, activation="relu")], "activation 'relu' is not supported"),
    (lambda: [L.Masking(), L.LSTM(4)], "Masking layer .* is not supported"),
    (lambda: [L.LSTM(4, return_sequences=True), L.GRU(4)], "its kind 'GRU' differs"),
    (lambda: [L.LSTM(4, return_sequences=True), L.LSTM(5)], "its units 5 differs"),
    (lambda: [L.LSTM(4), L.Dense(2, activation="relu")], "activation 'relu'"),
])
def test_unsupported_models_are_refused_by_name(layers, expected):
    with pytest.raises(KerasImportError, match=expected):
        rnnext.from_keras(keras_model(*layers()))


def test_functional_chains_import_and_branches_are_refused():
    inputs = keras.Input((T, I))
    hidden = L.GRU(4, return_sequences=True)(inputs)
    chain = keras.Model(inputs, L.Dense(2)(L.GRU(4, return_sequences=True)(hidden)))
    assert_matches_keras(chain)
    branch = keras.Model(inputs, L.Concatenate()([hidden, L.GRU(4, return_sequences=True)(inputs)]))
    with pytest.raises(KerasImportError, match="not a single chain"):
        rnnext.from_keras(branch)


def test_stateful_is_refused():
    model = keras.Sequential([keras.Input((T, I), batch_size=2), L.LSTM(3, stateful=True)])
    with pytest.raises(KerasImportError, match="stateful=True"):
        rnnext.from_keras(model)
