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
V = 10  # the embeddings' vocabulary
# Keras's torch backend converts with a numpy-1 style __array__; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def keras_model(*layers, seed=0, ids=False):
    """A Sequential model with random weights, biases included (Keras initialises them to 0),
    on (B, T, I) floats or, with ids, (B, T) token ids."""
    model = keras.Sequential([keras.Input((T,), dtype="int32") if ids else keras.Input((T, I)),
                              *layers])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    return model


def masked_ids(seed=1):
    """ids (6, T) in [0, V): zeros (masked steps under mask_zero) before, among and after the
    valid steps, every other step, a row of zeros only (row 4) and a row without any."""
    ids = np.random.default_rng(seed).integers(1, V, (6, T))
    ids[0, :3] = 0
    ids[1, [2, 4]] = 0
    ids[2, -2:] = 0
    ids[3, ::2] = 0
    ids[4] = 0
    return ids


def assert_matches_keras(model, x=None):
    """The imported (layers, input_size, params) against model.predict on x (default: random
    (B, T, I) floats); returns the layers."""
    imported = keras_layers(model)
    if x is None:
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


def test_softmax_axis_is_read_against_the_outputs_rank():
    """Softmax(axis=1) is the features of a (B, F) output and the time of a (B, T, F) one."""
    layers = assert_matches_keras(keras_model(L.GRU(4), L.Dense(3), L.Softmax(axis=1)))
    assert layers[-1] == R.Dense(3, "softmax")
    with pytest.raises(KerasImportError, match="Softmax layer .*softmax over axis 1 of a rank-3 "
                                               "output is not supported"):
        keras_layers(keras_model(L.GRU(4, return_sequences=True), L.Dense(3),
                                 L.Softmax(axis=1)))


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
    (lambda: [L.Bidirectional(L.LSTM(4), merge_mode=None)],
     "Bidirectional layer .*merge_mode None .*use 'concat' and split"),
    (lambda: [L.Bidirectional(L.LSTM(4), backward_layer=L.LSTM(3, go_backwards=True))],
     "Bidirectional layer .*backward layer's options differ"),
    (lambda: [L.LSTM(4, recurrent_activation="softmax")],
     "recurrent_activation 'softmax' is not"),
    (lambda: [L.GRU(4, activation="log_softmax")],
     "GRU layer .*activation 'log_softmax' is not supported"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Dense(3), L.GRU(4)],
     "GRU layer .*must follow the input, an Embedding or a recurrent layer"),
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
    with pytest.raises(KerasImportError, match="Concatenate layer .*not a single chain of "
                                               "layers: this call takes 2 tensors"):
        keras_layers(branch)
    shared = L.GRU(I, return_sequences=True)  # called twice: two layers of the same weights
    twice = keras.Model(inputs, L.Dense(2)(shared(shared(inputs))))
    assert recurrent_count(assert_matches_keras(twice)) == 2
    state = L.Dense(3)(L.GlobalAveragePooling1D()(inputs))
    initial = keras.Model(inputs, L.GRU(3)(inputs, initial_state=state))
    with pytest.raises(KerasImportError, match="GRU layer .*takes 1 tensors and initial_state"):
        keras_layers(initial)


def test_a_model_without_weights_is_refused():
    with pytest.raises(KerasImportError, match="model: not built"):
        keras_layers(keras.Sequential([L.LSTM(3)]))


def test_stateful_is_refused():
    model = keras.Sequential([keras.Input((T, I), batch_size=2), L.LSTM(3, stateful=True)])
    with pytest.raises(KerasImportError, match="LSTM layer .*stateful=True.*model.stream"):
        keras_layers(model)


@pytest.mark.parametrize("mask_zero", [True, False])
@pytest.mark.parametrize("make", [
    lambda: [L.LSTM(5, return_sequences=True), L.GRU(3), L.Dense(2, activation="softmax")],
    lambda: [L.SimpleRNN(5, return_sequences=True), L.LSTM(3, go_backwards=True)],
    lambda: [L.Bidirectional(L.GRU(3, return_sequences=True, reset_after=False),
                             merge_mode="ave"), L.Bidirectional(L.LSTM(2), merge_mode="mul")],
    lambda: [L.LSTM(4, return_sequences=True),
             L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="sum")],
], ids=["lstm-gru-dense", "rnn-go-backwards", "bidirectional-final", "bidirectional-sequence"])
def test_embedding_and_its_mask_match_keras(make, mask_zero):
    """Keras's mask_zero is rnnext's: ids 0 anywhere (before, among, after the valid steps, a
    row of them only) leave the states as they are; a Bidirectional layer's sequence is zero
    at the masked steps in both."""
    imported = assert_matches_keras(keras_model(L.Embedding(V, I, mask_zero=mask_zero), *make(),
                                                ids=True), masked_ids())
    assert imported[0] == R.Embedding(V, I, mask_zero=mask_zero)


def test_masked_per_step_outputs_are_refused_unless_zero_masked_steps():
    """Under a mask, a forward layer's sequence (zero_output_for_mask=False) repeats the previous
    output at masked steps and Dense layers apply to it; rnnext's output there is zero."""
    ids = masked_ids()
    valid = ids != 0
    for top in ([L.GRU(4, return_sequences=True)],
                [L.Bidirectional(L.LSTM(3, return_sequences=True)), L.Dense(2)]):
        model = keras_model(L.Embedding(V, I, mask_zero=True), *top, ids=True)
        with pytest.raises(KerasImportError, match="per step under the mask of 'embedding.*"
                                                   "zero_masked_steps=True"):
            keras_layers(model)
        expected = np.asarray(model.predict(ids, verbose=0))
        assert np.abs(expected[~valid]).max() > 1e-3  # what rnnext cannot give
        got = rnnext.from_keras(model, zero_masked_steps=True).predict(ids)
        np.testing.assert_allclose(got[valid], expected[valid], rtol=F32_RTOL, atol=F32_ATOL)
        np.testing.assert_array_equal(got[~valid], 0.0)
    assert_matches_keras(keras_model(L.Embedding(V, I, mask_zero=True),
                                     L.LSTM(3, return_sequences=True, zero_output_for_mask=True),
                                     ids=True), ids)


@pytest.mark.filterwarnings("ignore:Layer 'global_max_pooling1d.*does not support masking")
@pytest.mark.parametrize("mask_zero", [True, False])
@pytest.mark.parametrize("pooling, mode", [(L.GlobalAveragePooling1D, "mean"),
                                           (L.GlobalMaxPooling1D, "max")])
@pytest.mark.parametrize("make", [
    lambda: L.LSTM(4, return_sequences=True),
    lambda: L.Bidirectional(L.GRU(3, return_sequences=True)),
], ids=["lstm", "bidirectional-gru"])
def test_global_pooling_is_a_mean_or_max_readout(make, pooling, mode, mask_zero):
    """Keras's average pooling honours the mask, as rnnext's mean readout (over the valid steps;
    a row without any is Keras's 0 / 0 = NaN and rnnext's 0); its max pooling ignores it and is
    refused under one."""
    model = keras_model(L.Embedding(V, I, mask_zero=mask_zero), make(), pooling(), L.Dense(2),
                        ids=True)
    if mask_zero and mode == "max":
        with pytest.raises(KerasImportError, match="GlobalMaxPooling1D layer .*ignores the mask"):
            keras_layers(model)
        return
    ids = masked_ids()
    imported = keras_layers(model)
    assert imported[0][2] == R.Readout(mode)
    y = forward_imported(imported, ids)[0]
    expected = np.asarray(model.predict(ids, verbose=0))
    has_valid = (ids != 0).any(axis=1) | (not mask_zero)
    np.testing.assert_allclose(y[has_valid], expected[has_valid], rtol=F32_RTOL, atol=F32_ATOL)
    if mask_zero and mode == "mean":
        assert np.isnan(expected[~has_valid]).all()
        np.testing.assert_allclose(y[~has_valid], (model.layers[-1].get_weights()[1],))


@pytest.mark.parametrize("layers, directions", [
    (lambda: [L.LSTM(4, go_backwards=True, return_sequences=True), L.GRU(3)],
     ["reverse", "reverse"]),
    (lambda: [L.GRU(4, go_backwards=True, return_sequences=True),
              L.SimpleRNN(3, go_backwards=True, return_sequences=True), L.Dense(2)],
     ["reverse", "forward"]),
    (lambda: [L.LSTM(4, go_backwards=True, return_sequences=True),
              L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
              L.GlobalAveragePooling1D()], ["reverse", "bidirectional"]),
    (lambda: [L.SimpleRNN(4, go_backwards=True, return_sequences=True),
              L.Bidirectional(L.LSTM(3), merge_mode="mul"), L.Dense(2)],
     ["reverse", "bidirectional"]),
], ids=["then-forward", "twice", "then-bidirectional-sequence-pooled", "then-bidirectional"])
def test_a_go_backwards_sequence_read_by_later_layers_matches_keras(layers, directions):
    """A go_backwards layer's sequence runs backwards in time: a forward layer over it is a
    reverse one in input time, two reversals cancel, a Bidirectional one swaps directions."""
    imported = assert_matches_keras(keras_model(*layers()))
    assert [layer.direction for layer in imported if type(layer) in R.RECURRENT_TYPES] == \
        directions


@pytest.mark.parametrize("layers, ids, expected", [
    (lambda: [L.LSTM(4, go_backwards=True, return_sequences=True),
              L.Bidirectional(L.GRU(3))], False,
     "Bidirectional layer .*reads the sequence of 'lstm.*merge_mode 'concat'"),
    (lambda: [L.Embedding(V, I, mask_zero=True),
              L.LSTM(4, go_backwards=True, return_sequences=True), L.GRU(3)], True,
     "LSTM layer .*under the mask of 'embedding.*passes the mask on unreversed"),
    (lambda: [L.LSTM(4, go_backwards=True, return_sequences=True),
              L.GRU(3, return_sequences=True)], False,
     "LSTM layer 'lstm.*reversed in time up to the model's output"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Flatten()], False,
     "Flatten layer .*flattens a sequence"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Dense(3), L.Flatten()], False,
     "Flatten layer .*flattens a sequence"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Dense(3), L.GlobalAveragePooling1D()],
     False,
     "GlobalAveragePooling1D layer .*pools what is not a recurrent layer's sequence"),
    (lambda: [L.LSTM(4, return_sequences=True), L.GlobalMaxPooling1D(keepdims=True)], False,
     "GlobalMaxPooling1D layer .*keepdims False"),
])
def test_more_unsupported_models_are_refused_by_name(layers, ids, expected):
    with pytest.raises(KerasImportError, match=expected):
        keras_layers(keras_model(*layers(), ids=ids))


def test_a_go_backwards_sequence_output_is_refused_with_a_workaround_that_holds():
    """The refusal's workaround: go_backwards=False on the time-reversed input."""
    x = np.random.default_rng(3).standard_normal((B, T, I)).astype(np.float32)
    backwards = keras_model(L.GRU(4, go_backwards=True, return_sequences=True),
                            L.TimeDistributed(L.Dense(2)))
    with pytest.raises(KerasImportError, match="GRU layer .*reversed in time up to the model's "
                                               "output.*go_backwards=False there, fed x"):
        keras_layers(backwards)
    gru_config = backwards.layers[0].get_config() | {"go_backwards": False}
    forwards = keras.Sequential([keras.Input((T, I)), L.GRU.from_config(gru_config),
                                 L.TimeDistributed(L.Dense(2))])
    forwards.set_weights(backwards.get_weights())
    np.testing.assert_allclose(rnnext.from_keras(forwards).predict(x[:, ::-1]),
                               backwards.predict(x, verbose=0), rtol=F32_RTOL, atol=F32_ATOL)


def test_layers_that_act_only_in_training_and_flatten_are_skipped():
    imported = assert_matches_keras(keras_model(
        L.GaussianNoise(0.5), L.LSTM(5, return_sequences=True, dropout=0.5),
        L.SpatialDropout1D(0.5),
        L.GaussianDropout(0.3), L.GRU(4, recurrent_dropout=0.5), L.AlphaDropout(0.3),
        L.Flatten(), L.Dense(3), L.Dropout(0.5), L.Flatten(), L.Dense(2)))
    assert imported == [R.LSTM(5), R.GRU(4), R.Readout("final"), R.Dense(3), R.Dense(2)]


def test_activations_given_as_functions_match_keras():
    acts = keras.activations
    imported = assert_matches_keras(keras_model(
        L.LSTM(4, activation=acts.softsign, recurrent_activation=acts.hard_sigmoid,
               return_sequences=True),
        L.SimpleRNN(3, activation=acts.relu), L.Dense(2, activation=acts.sigmoid)))
    assert imported[0].activations == ("hard_sigmoid", "softsign", "softsign")
    assert imported[1] == R.RNN(3, nonlinearity="relu")
    assert imported[-1] == R.Dense(2, "sigmoid")


@pytest.mark.parametrize("value", [0.0, 0.5])
@pytest.mark.parametrize("make", [
    lambda: [L.GRU(4), L.Dense(2)],
    lambda: [L.LSTM(4, return_sequences=True), L.GlobalAveragePooling1D()],
    lambda: [L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="ave")],
    lambda: [L.LSTM(4, return_sequences=True, zero_output_for_mask=True), L.LSTM(3)],
], ids=["gru_final_dense", "lstm_mean", "bi_rnn_sequence", "lstm_lstm"])
def test_masking_matches_keras(make, value):
    """Keras's Masking is rnnext's: steps whose features all equal the value (at the start, in
    the middle, at the end, one row wholly) are masked."""
    x = np.random.default_rng(3).standard_normal((B, T, I)).astype(np.float32)
    x[0, :2] = x[1, 3] = x[2, -3:] = value
    x[1, 4, 0] = value  # one feature equal is not a masked step
    layers = assert_matches_keras(keras_model(L.Masking(value), *make()), x)
    assert layers[0] == R.Masking(value)


def test_masking_after_another_layer_is_refused():
    with pytest.raises(KerasImportError, match="Masking layer .*must come first"):
        keras_layers(keras_model(L.LSTM(4, return_sequences=True), L.Masking(), L.LSTM(3)))


def test_a_mask_given_to_a_call_is_refused():
    """A mask= argument computed beside the layer chain (here what Masking(0.5) would give) is
    not the mask Keras passes along the chain: refused, pointing at Masking."""
    inputs = keras.Input((T, I))
    mask = keras.ops.any(keras.ops.not_equal(inputs, 0.5), axis=-1)
    model = keras.Model(inputs, L.LSTM(4)(inputs, mask=mask))
    with pytest.raises(KerasImportError, match="LSTM layer .*given a mask other than .*Masking"):
        keras_layers(model)
    assert_matches_keras(keras.Model(inputs, L.LSTM(4)(L.Masking(0.5)(inputs))))


def test_functional_model_with_an_embedding_and_a_mask():
    inputs = keras.Input((T,), dtype="int32")
    hidden = L.Embedding(V, I, mask_zero=True)(inputs)
    hidden = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="sum")(hidden)
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(hidden)))
    rows = np.delete(masked_ids(), 4, axis=0)  # Keras's mean over no valid step is NaN
    assert_matches_keras(model, rows)
    _, state_h, state_c = L.LSTM(3, return_state=True)(L.Embedding(V, I)(inputs))
    with pytest.raises(KerasImportError, match="LSTM layer .*return_state=True"):
        keras_layers(keras.Model(inputs, state_h))


def test_legacy_h5_file_imports(tmp_path):
    pytest.importorskip("h5py", reason="h5py not installed")
    model = keras_model(L.Embedding(V, I, mask_zero=True),
                        L.Bidirectional(L.GRU(4, return_sequences=True)), L.LSTM(3), L.Dense(2),
                        ids=True)
    path = tmp_path / "model.h5"
    model.save(path)
    ids = masked_ids()
    np.testing.assert_allclose(rnnext.from_keras(path).predict(ids), model.predict(ids, verbose=0),
                               rtol=F32_RTOL, atol=F32_ATOL)


@pytest.mark.parametrize("model", [None, 3, object()])
def test_what_is_not_a_keras_model_is_refused_by_name(model):
    with pytest.raises(TypeError, match="model: expected a keras.Model or the path of a .keras "
                                        "or .h5 file, got"):
        rnnext.from_keras(model)

