"""Model.stream: one step per call, the state kept inside, against the whole-sequence forward
pass (itself checked against PyTorch) and the NumPy reference."""
import numpy as np
import pytest

from conftest import CELLS, assert_f32_close, make_model, random_state, state_parts


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch,layers", [(1, 1), (3, 2)])
def test_steps_equal_the_sequence(cell, batch, layers, backend, rng):
    model = make_model(cell, 5, 33, layers, False)
    T = 12
    x = rng.standard_normal((batch, T, 5)).astype(np.float32)
    state = random_state(rng, model, batch)
    y, final = model.forward(x, state=state, backend=backend)
    stream = model.stream(batch, backend=backend)
    stream.state = state
    steps = np.stack([stream.step(x[:, t]) for t in range(T)], axis=1)
    for a, b in zip(state_parts(stream.state), state_parts(final)):
        assert_f32_close(a, b, "state")
    if backend == "c":  # the same kernels as forward, summed in the same order
        np.testing.assert_array_equal(steps, y)
    else:
        assert_f32_close(steps, y, "y")
    y_ref, _ = model.forward(x, state=state, backend="numpy")
    assert_f32_close(steps, y_ref, "y vs reference")


def test_one_dimensional_steps_reset_and_head(rng):
    model = make_model("lstm", 4, 16, seed=1, output_size=3, output="many_to_many",
                       activation="softmax")
    x = rng.standard_normal((7, 4)).astype(np.float32)
    expected, _ = model.forward(x)
    stream = model.stream()
    first = [stream.step(x[t]) for t in range(7)]
    assert first[0].shape == (3,)
    assert_f32_close(np.stack(first), expected, "head on every step")
    stream.reset()
    h, c = stream.state
    assert not h.any() and not c.any()
    assert_f32_close(np.stack([stream.step(x[t].astype(np.float64)) for t in range(7)]),
                     expected, "after reset, float64 steps")


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((1, 1, 4), np.float32), ValueError, r"x: expected shape \(1, 4\) or \(4,\), got \(1, 1, 4\)"),
    (np.float32(1.0), ValueError, r"x: expected shape .* got \(\)"),
    (np.zeros((2, 4), np.float32), ValueError, r"got \(2, 4\)"),
    (np.zeros(5, np.float32), ValueError, r"got \(5,\)"),
    (np.array(["a", "b", "c", "d"]), TypeError, "x: expected an array of real numbers"),
])
def test_bad_steps_are_refused(bad, error, match):
    stream = make_model("gru", 4, 8, 1, False).stream()
    with pytest.raises(error, match=match):
        stream.step(bad)


V = 6


def float_model():
    return make_model("lstm", 3, 4, seed=2)


def ids_model():
    from rnnext import Model, layers as L

    return Model([L.Embedding(V, 3), L.GRU(4), L.Dense(2)], seed=2)


# a step's x (batch 2) that forward refuses as the one-step sequence x_t[:, None]
BAD_STEP_VALUES = [
    ("complex", float_model, np.ones((2, 3), np.complex64)),
    ("object_numbers", float_model, np.ones((2, 3), object)),
    ("object_none", float_model, np.full((2, 3), None)),
    ("strings", float_model, np.full((2, 3), "1.5")),
    ("bytes", float_model, np.full((2, 3), b"1")),
    ("dates", float_model, np.full((2, 3), np.datetime64("2020-01-01"))),
    ("ids_floats", ids_model, np.array([1.0, 2.0])),
    ("ids_bools", ids_model, np.array([True, False])),
    ("ids_complex", ids_model, np.array([1 + 0j, 2])),
    ("ids_object", ids_model, np.array([1, 2], object)),
    ("ids_strings", ids_model, np.array(["1", "2"])),
    ("ids_negative", ids_model, np.array([-1, 0])),
    ("ids_too_large", ids_model, np.array([0, V])),
    ("ids_wrapping_to_int32", ids_model, np.array([2 ** 32 + 1, 0])),  # int32 would make it 1
    ("ids_uint64_huge", ids_model, np.array([2 ** 63, 0], np.uint64)),
]


@pytest.mark.parametrize("make,bad", [c[1:] for c in BAD_STEP_VALUES],
                         ids=[c[0] for c in BAD_STEP_VALUES])
def test_a_step_refuses_what_forward_refuses_with_its_message(make, bad):
    """One check of x for forward and for both backends' streams: the same error and message."""
    model = make()
    with pytest.raises((TypeError, ValueError)) as forward_error:
        model.forward(bad[:, None])
    for backend in ("c", "numpy"):
        stream = model.stream(2, backend=backend)
        with pytest.raises(type(forward_error.value)) as step_error:
            stream.step(bad)
        assert str(step_error.value) == str(forward_error.value), backend


@pytest.mark.parametrize("make,bad,match", [
    (float_model, np.zeros((2, 1, 3)), r"^x: expected shape \(2, 3\), got \(2, 1, 3\)$"),
    (float_model, np.zeros(3), r"^x: expected shape \(2, 3\), got \(3,\)$"),
    (float_model, np.zeros((2, 4), np.float32), r"^x: expected shape \(2, 3\), got \(2, 4\)$"),
    (float_model, 1.0, r"^x: expected shape \(2, 3\), got \(\)$"),
    (float_model, [[0.0] * 3, [0.0] * 2], r"^x: expected an array of real numbers, got list"),
    (ids_model, np.zeros((2, 1), np.int32), r"^x: expected 2 token ids, shape \(2,\), got shape"
                                            r" \(2, 1\)$"),
    (ids_model, np.int64(1), r"^x: expected 2 token ids, shape \(2,\), got shape \(\)$"),
    (ids_model, [[1], [1, 2]], r"^x: expected integer token ids, got list"),
], ids=["3d", "flat_for_batch_2", "features", "scalar", "ragged", "ids_2d", "one_id_for_batch_2",
        "ids_ragged"])
def test_bad_step_shapes_have_one_message_on_both_backends(make, bad, match):
    model = make()
    errors = []
    for backend in ("c", "numpy"):
        with pytest.raises((TypeError, ValueError), match=match) as error:
            model.stream(2, backend=backend).step(bad)
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("make,steps", [
    (float_model, lambda x: [x.astype(">f4"), x.astype(np.float64), x.astype(np.int8),
                             x > 0, x.tolist(), np.asfortranarray(np.stack([x, x], 1))[:, 0]]),
    (ids_model, lambda x: [x.astype(np.uint8), x.astype(">i8"), x.tolist(), np.repeat(x, 2)[::2],
                           x.astype(np.int32)]),
], ids=["floats", "ids"])
def test_a_step_accepts_what_forward_accepts(make, steps, rng):
    """Byte-swapped, strided, wider, narrower and list inputs give forward's numbers, batched and
    for a batch of one without the batch axis (floats (I,), one id)."""
    model = make()
    x = rng.standard_normal((2, 3)) if model.input_size else rng.integers(0, V, 2)
    for backend in ("c", "numpy"):
        for step in steps(x):
            expected = model.forward(np.asarray(step)[:, None], backend="numpy")[0][:, 0]
            assert_f32_close(model.stream(2, backend=backend).step(step), expected, backend)
            one = model.stream(1, backend=backend).step(np.asarray(step)[1])
            assert one.shape == expected[1].shape
            assert_f32_close(one, expected[1], f"{backend}, batch of one")


def test_bidirectional_and_bad_batch_are_refused():
    with pytest.raises(ValueError, match="bidirectional"):
        make_model("lstm", 4, 8, 1, True).stream()
    with pytest.raises(ValueError, match="batch"):
        make_model("lstm", 4, 8, 1, False).stream(batch=0)
    stream = make_model("rnn_tanh", 4, 8, 2, False).stream(batch=2)
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 2, 8\)"):
        stream.state = np.zeros((2, 1, 8), np.float32)


@pytest.mark.parametrize("readout", ["last", "final"])
def test_masked_token_keeps_the_state_output_on_both_backends(readout):
    """Embedding(mask_zero=True): a step with id 0 leaves the states as they are and the step's
    output is the kept state's (rnnext.h, rnx_stream_step), on the C stream and the NumPy one;
    after a valid step both equal forward's readout of the prefix."""
    from rnnext import Model, layers as L

    model = Model([L.Embedding(4, 3, mask_zero=True), L.GRU(5), L.Readout(readout),
                   L.Dense(2)], seed=3)
    ids = np.array([[2, 0, 0, 3, 0, 1]])
    c, numpy = model.stream(backend="c"), model.stream(backend="numpy")
    previous = None
    for t in range(ids.shape[1]):
        y_c, y_n = c.step(ids[:, t]), numpy.step(ids[:, t])
        assert_f32_close(y_n, y_c, f"step {t}")
        if ids[0, t] == 0:
            np.testing.assert_array_equal(y_c, previous)
        else:
            assert_f32_close(y_c, model.forward(ids[:, :t + 1], backend="numpy")[0], f"step {t}")
        previous = y_c


def change_params(model, how, rng):
    """Changes the model's parameters as a user would: set_params, apply_grads or fit."""
    from rnnext import optim

    ids = rng.integers(0, V, (4, 5))
    if how == "set_params":
        model.set_params({k: v + 0.3 * rng.standard_normal(v.shape)
                          for k, v in model.params.items()})
    elif how == "apply_grads":
        model.apply_grads(model.loss_and_grads(ids, ids)[1], optim.SGD(lr=2.0))
    else:
        model.fit(ids, ids, epochs=2, batch_size=2, lr=0.1, verbose=False)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_a_stream_follows_the_models_parameters(backend, rng):
    """A stream made before the parameters change runs its next step on the new ones, its states
    kept: step by step it equals forward with the new weights from the state it had. Two changes
    between two steps count as one."""
    from rnnext import Model, layers as L

    model = Model([L.Embedding(V, 3), L.LSTM(5), L.GRU(4), L.Dense(V, activation="softmax")],
                  seed=4)
    ids = rng.integers(0, V, (2, 20))
    stream = model.stream(2, backend=backend)
    for t in range(3):
        stream.step(ids[:, t])
    t = 3
    for changes in (["set_params"], ["apply_grads"], ["fit"], ["set_params", "apply_grads"]):
        state = stream.state
        old, _ = model.forward(ids[:, t:t + 4], state=state, backend=backend)
        for how in changes:
            change_params(model, how, rng)
        new, _ = model.forward(ids[:, t:t + 4], state=state, backend=backend)
        assert np.abs(new - old).max() > 1e-3, changes  # the change shows in the outputs
        steps = np.stack([stream.step(ids[:, t + k]) for k in range(4)], axis=1)
        if backend == "c":
            np.testing.assert_array_equal(steps, new)
        else:
            assert_f32_close(steps, new, f"after {changes}")
        t += 4
