"""The Masking layer (Keras's Masking): a step of x whose features all equal mask_value is
masked. Against Keras 3 (Sequential models of Masking, a recurrent layer and Dense, weights
read by rnnext.keras_io), against the same model without the layer given Keras's mask
np.any(x != mask_value, -1) explicitly, compiled against NumPy (forward, streams, training),
gradients against finite differences, the file (Python and the C parser) and the refusals."""
import numpy as np
import pytest

import rnnext
from rnnext import Model, _core
from rnnext import layers as L
from rnnext.io import to_bytes
from rnnext.keras_io import keras_layers

from conftest import (F32_ATOL, F32_RTOL, assert_f32_close, flat_core_params, keras_module,
                      state_parts, with_metadata)

B, T, I = 5, 7, 3


def masked_x(rng, mask_value):
    """x (B, T, I) with masked steps at the start, in the middle and at the end, a sequence all
    masked, and steps where some features (not all) equal mask_value, which stay valid."""
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    x[0, :2] = mask_value          # leading
    x[1, 3] = mask_value           # a hole
    x[2, T - 2:] = mask_value      # trailing
    x[3] = mask_value              # nothing valid
    x[4, 1, :2] = mask_value       # two of three features: valid
    x[4, 5, 1:] = mask_value
    return x


def keras_mask(x, mask_value):
    """Keras's Masking.compute_mask, written out: any(x != mask_value) over the features."""
    return np.any(x != np.float32(mask_value), axis=-1)


# ----------------------------------------------------------------------------------------------
# Keras


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("cell,mask_value", [("LSTM", 0.0), ("GRU", -1.0), ("SimpleRNN", 0.5)])
def test_matches_keras(cell, mask_value, return_sequences, rng):
    """Sequential([Masking, LSTM/GRU/SimpleRNN, Dense]): Keras's output on every sequence that
    has a valid step, the final states' readout included; at masked steps of a sequence output
    rnnext gives zeros (Keras's zero_output_for_mask=True; Keras's default repeats the last
    valid output there, and its Dense then acts on it)."""
    keras = keras_module()
    x = masked_x(rng, mask_value)
    H, O = 4, 3
    recurrent = getattr(keras.layers, cell)(H, return_sequences=return_sequences)
    dense = keras.layers.Dense(O)
    ours_keras = keras.Sequential([keras.Input((T, I)), keras.layers.Masking(mask_value),
                                   recurrent, dense])
    want = np.asarray(ours_keras.predict(x, verbose=0))
    # the layer itself, not the importer's mapping of Keras's (test_keras checks that): the same
    # Keras layers without Masking, read by keras_io, with rnnext's Masking put in front
    plain = keras.Sequential([keras.Input((T, I)), recurrent, dense])
    layers, input_size, params = keras_layers(plain)
    model = Model([L.Masking(mask_value)] + layers, input_size, params=params)
    mask = keras_mask(x, mask_value)
    for backend in ("c", "numpy"):
        got = model.predict(x, backend=backend)
        if return_sequences:
            assert_f32_close(got[mask], want[mask], backend)
            np.testing.assert_array_equal(got[~mask], 0.0)
        else:
            assert_f32_close(got, want, backend)  # all masked: Dense of the zero initial state
    if return_sequences:
        zeroed = keras.Sequential([keras.Input((T, I)), keras.layers.Masking(mask_value),
                                   getattr(keras.layers, cell)(H, return_sequences=True,
                                                               zero_output_for_mask=True)])
        zeroed.layers[-1].set_weights(recurrent.get_weights())
        seq = Model([L.Masking(mask_value)] + layers[:1], input_size,
                    params={k: v for k, v in params.items() if not k.startswith("dense")})
        assert_f32_close(seq.predict(x), np.asarray(zeroed.predict(x, verbose=0)))


# ----------------------------------------------------------------------------------------------
# the same as the explicit mask, on both backends

CASES = {
    "lstm_sequence": [L.LSTM(5)],
    "gru_bidirectional_last_dense": [L.GRU(4, direction="bidirectional"), L.Readout("last"),
                                     L.Dense(2, "softmax")],
    "rnn_reverse_mean": [L.RNN(3, direction="reverse"), L.Readout("mean")],
    "stack_max_dense": [L.LSTM(4, proj_size=2), L.GRU(3, direction="bidirectional",
                                                       merge="sum"), L.Readout("max"),
                        L.Dense(3, "tanh")],
    "plain_path_final": [L.LSTM(3, clip=2.0, peepholes=True), L.Readout("final"), L.Dense(2)],
    "sequence_dense": [L.GRU(3, reset_after=False), L.Dense(2, "sigmoid")],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("extra", ["none", "lengths", "mask"])
def test_equals_the_explicit_mask(case, extra, rng):
    """Model([Masking(v), ...]) equals Model([...]) given Keras's mask (ANDed with lengths or
    mask when given), on both backends and with 1 and 2 threads."""
    mask_value = -0.5
    x = masked_x(rng, mask_value)
    model = Model([L.Masking(mask_value)] + CASES[case], I, seed=3)
    plain = Model(CASES[case], I, params=model.params)
    valid = keras_mask(x, mask_value)
    kwargs = {}
    if extra == "lengths":
        kwargs["lengths"] = np.array([T, 4, T, 2, 5])
        valid &= np.arange(T)[None, :] < kwargs["lengths"][:, None]
    elif extra == "mask":
        kwargs["mask"] = rng.random((B, T)) > 0.25
        valid &= kwargs["mask"]
    want, want_state = plain.forward(x, mask=valid, backend="numpy")
    for backend, n_threads in (("numpy", 1), ("c", 1), ("c", 2)):
        got, state = model.forward(x, n_threads=n_threads, backend=backend, **kwargs)
        assert_f32_close(got, want, f"{backend} {n_threads}")
        for a, b in zip(state_parts(state), state_parts(want_state)):
            assert_f32_close(a, b, "state")


def test_nan_and_signed_zero(rng):
    """NaN differs from every value (a step holding one is valid, and its NaN flows on); -0.0
    equals 0.0. Compared in float32: 0.1 masks the float32 steps of 0.1."""
    x = rng.standard_normal((2, 4, 2)).astype(np.float32)
    x[0, 1] = -0.0
    x[1, 2] = [np.nan, 0.0]
    model = Model([L.Masking(0.0), L.GRU(3)], 2, seed=1)
    y = model.predict(x)
    np.testing.assert_array_equal(y[0, 1], 0.0)
    assert np.isnan(y[1, 2:]).all()
    assert_f32_close(y, model.predict(x, backend="numpy"))
    tenth = Model([L.Masking(0.1), L.GRU(3)], 2, params=model.params)
    x[0, 3] = np.float32(0.1)
    np.testing.assert_array_equal(tenth.predict(x)[0, 3], 0.0)
    np.testing.assert_array_equal(tenth.predict(x, backend="numpy")[0, 3], 0.0)


@pytest.mark.parametrize("readout", [None, "last", "final"])
@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_stream_keeps_the_state_on_masked_steps(readout, backend, rng):
    """A stream's step of mask_value keeps the states; its output is zero for a sequence
    readout, the kept state's for last and final: forward's outputs step by step."""
    mask_value = 1.5
    layers = [L.Masking(mask_value), L.LSTM(4), L.GRU(3)] + (
        [L.Readout(readout)] if readout else []) + [L.Dense(2)]
    model = Model(layers, I, seed=2)
    x = masked_x(rng, mask_value)
    stream = model.stream(batch=B, backend=backend)
    steps = np.stack([stream.step(x[:, t]) for t in range(T)], axis=1)
    seq = Model([L.Masking(mask_value), L.LSTM(4), L.GRU(3), L.Dense(2)], I, params=model.params)
    y, state = seq.forward(x, backend="numpy")
    if readout is None:
        assert_f32_close(steps, y)
    else:  # the top layer's h after each step, the kept one on masked steps, through the dense
        for t in range(T):
            prefix = model.predict(x[:, :t + 1], backend="numpy")
            assert_f32_close(steps[:, t], prefix, f"step {t}")
    for a, b in zip(state_parts(stream.state), state_parts(state)):
        assert_f32_close(a, b, "state")


# ----------------------------------------------------------------------------------------------
# training


def test_gradients_match_finite_differences(rng):
    """loss_and_grads through a Masking layer (float64 reference) against central differences
    of its loss, and the compiled core's gradients against the reference's."""
    mask_value = 0.0
    x = masked_x(rng, mask_value)[:, :5, :2]
    x[4, 2] = 0.0
    model = Model([L.Masking(mask_value), L.LSTM(3), L.Readout("mean"), L.Dense(2)], 2, seed=4)
    y = rng.integers(0, 2, size=B)
    params64 = {k: v.astype(np.float64) for k, v in model.params.items()}
    from rnnext.train import loss_and_grads

    _, grads = loss_and_grads(model, x.astype(np.float64), y, params=params64, backend="numpy")
    eps = 1e-6
    for name, value in params64.items():
        fd = np.empty_like(value)
        for i in np.ndindex(value.shape):
            plus = {**params64, name: value.copy()}
            minus = {**params64, name: value.copy()}
            plus[name][i] += eps
            minus[name][i] -= eps
            fd[i] = (loss_and_grads(model, x.astype(np.float64), y, params=plus,
                                    backend="numpy")[0] -
                     loss_and_grads(model, x.astype(np.float64), y, params=minus,
                                    backend="numpy")[0]) / (2 * eps)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-8, err_msg=name)
    _, c_grads = model.loss_and_grads(x, y, backend="c")
    _, n_grads = model.loss_and_grads(x, y, backend="numpy")
    for name in n_grads:
        assert_f32_close(c_grads[name], n_grads[name], name)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_training_uses_the_mask(backend, rng):
    """Gradients through Masking(-1) equal those of the model without it given Keras's mask
    (ANDed with lengths): masked steps, whose x is not zero, reach nothing; and per-step
    losses average over the valid steps only."""
    mask_value = -1.0
    x = masked_x(rng, mask_value)
    lengths = np.array([T, 6, T, 3, 4])
    valid = keras_mask(x, mask_value) & (np.arange(T)[None, :] < lengths[:, None])
    layers = [L.GRU(4), L.Dense(3, "softmax")]
    model = Model([L.Masking(mask_value)] + layers, I, seed=5)
    plain = Model(layers, I, params=model.params)
    y = rng.integers(0, 3, size=(B, T))
    loss, grads = model.loss_and_grads(x, y, lengths=lengths, backend=backend)
    want_loss, want = plain.loss_and_grads(x, y, mask=valid, backend=backend)
    np.testing.assert_allclose(loss, want_loss, rtol=F32_RTOL, atol=F32_ATOL)
    for name in want:
        assert_f32_close(grads[name], want[name], name)
    before = model.evaluate(x, y, lengths=lengths, backend=backend)["loss"]
    model.fit(x, y, lengths=lengths, epochs=3, batch_size=B, lr=0.05, verbose=False,
              backend=backend, seed=0)
    assert model.evaluate(x, y, lengths=lengths, backend=backend)["loss"] < before


# ----------------------------------------------------------------------------------------------
# the file


def test_file_round_trip_and_the_c_parser(tmp_path, rng):
    mask_value = -2.25
    model = Model([L.Masking(mask_value), L.GRU(3), L.Readout("last"), L.Dense(2)], I, seed=6)
    meta = L.to_metadata(model.spec)
    assert meta["layer0.type"] == "masking" and meta["layer0.mask_value"] == "-2.25"
    assert meta["input_size"] == str(I) and meta["layer1.input_size"] == str(I)
    path = tmp_path / "masking.rnnext"
    model.save(path)
    loaded = rnnext.load(path)
    assert loaded.layers == model.layers
    x = masked_x(rng, mask_value)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # the C parser's layer list: a masking layer first, its value read as float32
    c_layers = _core.TensorFile(to_bytes(model)).model_layers()
    assert c_layers[0]["kind"] == _core.LAYER_KINDS["masking"]
    assert c_layers[0]["mask_value"] == np.float32(mask_value)
    assert [c_layers[0][k] for k in ("input_size", "units")] == [0, 0]
    assert c_layers[1]["input_size"] == I
    assert _core.CoreModel(c_layers, flat_core_params(model)).info["input_size"] == I


def masking_alone(meta):
    meta = {k: v for k, v in meta.items() if not k.startswith("layer1.")}
    return {**meta, "layers": "1"}


def masking_second(meta):
    """[gru, masking]: the GRU's keys moved to layer 0."""
    moved = {k.replace("layer1.", "layer0."): v for k, v in meta.items()
             if k.startswith("layer1.")}
    rest = {k: v for k, v in meta.items() if not k.startswith(("layer0.", "layer1."))}
    return {**rest, **moved, "layer1.type": "masking", "layer1.mask_value": "0.0"}


def masking_after_embedding(meta):
    """An embedding model's [embedding, gru] as [embedding, masking, gru]."""
    moved = {k.replace("layer1.", "layer2."): v for k, v in meta.items()
             if k.startswith("layer1.")}
    rest = {k: v for k, v in meta.items() if not k.startswith("layer1.")}
    return {**rest, **moved, "layers": "3", "layer1.type": "masking", "layer1.mask_value": "0.0"}


def changed(**keys):
    return lambda meta: {**meta, **{k.replace("_", ".", 1): v for k, v in keys.items()}}


def dropped(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


@pytest.mark.parametrize("change,message", [
    (changed(layer0_mask_value="nan"), "'layer0.mask_value' is 'nan', expected a finite float"),
    (changed(layer0_mask_value="inf"), "'layer0.mask_value' is 'inf'"),
    (changed(layer0_mask_value="1e999"), "'layer0.mask_value' is '1e999'"),
    (changed(layer0_mask_value="0x1p3"), "'layer0.mask_value' is '0x1p3'"),
    (changed(layer0_mask_value=""), "'layer0.mask_value' is ''"),
    (dropped("layer0.mask_value"), "missing 'layer0.mask_value'"),
    (changed(layer0_units="2"), "'layer0.units': a 'masking' layer has no such field"),
    (masking_alone, "'layers' is '1', a masking layer alone"),
    (masking_second, "'layer1.type' is 'masking', which cannot follow a recurrent layer"),
])
def test_file_refusals(change, message):
    """The C parser (which rnnext.load runs first) refuses a broken masking layer by its key."""
    data = with_metadata(to_bytes(Model([L.Masking(0.0), L.GRU(2)], 2, seed=0)), change)
    assert_file_refused(data, message)


def test_file_refuses_masking_after_an_embedding():
    data = with_metadata(to_bytes(Model([L.Embedding(4, 2), L.GRU(2)], seed=0)),
                         masking_after_embedding)
    assert_file_refused(data, "'layer1.type' is 'masking', which cannot follow an embedding "
                              "layer")


def assert_file_refused(data, message):
    with pytest.raises(ValueError, match=message):
        _core.TensorFile(data).model_layers()
    with pytest.raises(ValueError, match=message):
        rnnext.load(data)


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize("layers,message", [
    ([L.LSTM(3), L.Masking()], r"layers\[1\]: a Masking cannot come after LSTM.*comes first"),
    ([L.Masking(), L.Masking(), L.LSTM(3)], r"layers\[1\]: a Masking cannot come after Masking"),
    ([L.Embedding(5, 3), L.Masking(), L.LSTM(3)], r"layers\[1\].*mask_zero=True"),
    ([L.Masking(), L.Embedding(5, 3), L.LSTM(3)], r"layers\[1\]: an? Embedding cannot come after "
                                                   r"Masking.*mask_zero"),
    ([L.Masking()], r"at least one RNN, LSTM or GRU"),
    ([L.Masking(), L.Dense(2)], r"a Dense cannot come after Masking"),
])
def test_layer_list_refusals(layers, message):
    with pytest.raises(ValueError, match=message):
        Model(layers, input_size=3)


@pytest.mark.parametrize("value,error,message", [
    (float("nan"), ValueError, r"^mask_value: expected a finite float.*nan"),
    (float("inf"), ValueError, r"^mask_value: expected a finite float.*inf"),
    (1e39, ValueError, r"^mask_value: expected a finite float \(within float32's range\)"),
    (True, TypeError, r"^mask_value: expected a finite float, got bool"),
    ("0", TypeError, r"^mask_value: expected a finite float, got str"),
    (None, TypeError, r"^mask_value: expected a finite float, got NoneType"),
])
def test_mask_value_refusals(value, error, message):
    with pytest.raises(error, match=message):
        L.Masking(value)


def test_input_size_is_required():
    with pytest.raises(TypeError, match="input_size"):
        Model([L.Masking(), L.GRU(2)])


@pytest.mark.parametrize("fields", [
    dict(mask_value=float("nan")), dict(mask_value=float("inf")), dict(input_size=3),
    dict(units=3), dict(mask_zero=1)])
def test_core_refuses_a_bad_masking_layer(fields):
    """The C core checks the layer as strictly as the others: a finite value, every other field
    zero, first in the list."""
    model = Model([L.Masking(0.0), L.GRU(2)], 2, seed=0)
    layers = L.core_layers(model.spec)
    layers[0].update(fields)
    with pytest.raises(ValueError, match="BAD_CONFIG|invalid"):
        _core.CoreModel(layers, flat_core_params(model))
    assert _core.CoreModel(L.core_layers(model.spec), flat_core_params(model)).info[
        "input_size"] == 2
    after = L.core_layers(model.spec)
    with pytest.raises(ValueError):
        _core.CoreModel(after[1:] + after[:1], flat_core_params(model))
