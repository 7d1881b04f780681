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
