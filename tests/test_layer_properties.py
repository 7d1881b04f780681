"""Property tests of random layer lists: [Embedding | Masking]? 1-3 recurrent layers (random cells, sizes,
directions, merges and options) [Readout]? 0-2 Dense, over random lengths or masks.

For each list: the compiled core (backend "c") against the NumPy reference within the float32
tolerance (scaled with the depth), bit for bit the same results on 1, 2 and 3 threads, the same
results after a save/load round trip (Model.to_bytes -> rnnext.load); and, for lists a stream
can run, each streamed step equal to the whole-sequence forward pass."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnext
from conftest import F32_ATOL, F32_RTOL, random_state, state_parts
from rnnext import Model
from rnnext import layers as L

# thresholded_relu and hard_shrink are left out: their jump at x = alpha makes a rounding
# difference of one ulp a difference of alpha in the output, which no tolerance covers;
# exponential too: an LSTM's h = o * exp(c) overflows float32 as c grows
FUNCTIONS = ["linear", "sigmoid", "tanh", "relu", "hard_sigmoid", "affine", "leaky_relu",
             "scaled_tanh", "elu", "softsign", "softplus", "relu6", "selu", "gelu", "silu",
             "mish", "hard_silu", "hard_tanh", "celu", "log_sigmoid", "tanh_shrink",
             "soft_shrink", "squareplus", "sparse_plus", "sparse_sigmoid"]
FUNCTION_COUNT = {"rnn": 1, "gru": 2, "lstm": 3}
# an LSTM's or GRU's gate function f multiplies the state each step: unbounded there, values grow
# exponentially (1e23 within 11 steps) and so does the rounding; f is drawn from these
BOUNDED = ["sigmoid", "tanh", "hard_sigmoid", "scaled_tanh", "softsign", "hard_tanh",
           "sparse_sigmoid"]
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def draw_recurrent(draw, streamable):
    kind = draw(st.sampled_from(["rnn", "lstm", "gru"]), label="cell")
    units = draw(st.integers(1, 40), label="units")  # past the vector widths: tails, panels
    options = {}
    if streamable:
        options["direction"] = "forward"
    else:
        options["direction"] = draw(st.sampled_from(L.DIRECTIONS), label="direction")
        if options["direction"] == "bidirectional":
            options["merge"] = draw(st.sampled_from(L.MERGES), label="merge")
    if draw(st.booleans(), label="custom activations"):
        gate = draw(st.sampled_from(FUNCTIONS if kind == "rnn" else BOUNDED), label="f")
        options["activations"] = (gate,) + tuple(draw(st.lists(
            st.sampled_from(FUNCTIONS), min_size=FUNCTION_COUNT[kind] - 1,
            max_size=FUNCTION_COUNT[kind] - 1), label="g, h"))
    if draw(st.booleans(), label="has clip"):
        options["clip"] = draw(st.floats(0.25, 4.0), label="clip")
    if kind == "rnn":
        if "activations" not in options:
            options["nonlinearity"] = draw(st.sampled_from(L.NONLINEARITIES), label="nonlin")
        return L.RNN(units, **options)
    if kind == "gru":
        return L.GRU(units, reset_after=draw(st.booleans(), label="reset_after"), **options)
    proj = draw(st.integers(0, units - 1), label="proj_size") if units > 1 else 0
    return L.LSTM(units, proj_size=proj, peepholes=draw(st.booleans(), label="peepholes"),
                  input_forget=draw(st.booleans(), label="input_forget"), **options)


@st.composite
def layer_lists(draw, streamable=False):
    """(layers, input_size): a random valid list; streamable: forward layers only and a readout
    a stream can give (none, last, final)."""
    layers, input_size = [], None
    if draw(st.booleans(), label="embedding"):
        vocab = draw(st.integers(2, 12), label="vocab_size")
        layers.append(L.Embedding(vocab, draw(st.integers(1, 6), label="dim"),
                                  padding_idx=draw(st.none() | st.integers(0, vocab - 1),
                                                   label="padding_idx"),
                                  mask_zero=draw(st.booleans(), label="mask_zero")))
    else:
        input_size = draw(st.integers(1, 6), label="input_size")
        if draw(st.booleans(), label="masking"):
            layers.append(L.Masking(draw(st.sampled_from([0.0, -1.0, 0.5]), label="mask_value")))
    for _ in range(draw(st.integers(1, 3), label="recurrent layers")):
        layers.append(draw_recurrent(draw, streamable))
    modes = [None, "last", "final"] + ([] if streamable else ["sequence", "mean", "max"])
    mode = draw(st.sampled_from(modes), label="readout")
    if mode is not None:
        layers.append(L.Readout(mode))
    for _ in range(draw(st.integers(0, 2), label="dense layers")):
        layers.append(L.Dense(draw(st.integers(1, 5), label="dense units"),
                              draw(st.sampled_from(L.DENSE_ACTIVATIONS), label="dense act")))
    return layers, input_size


def random_inputs(model, rng, B, T):
    """Token ids, or float x; with a Masking layer, about a third of the steps all mask_value."""
    if model.spec.embedding is not None:
        return rng.integers(0, model.spec.embedding.vocab_size, size=(B, T))
    x = rng.standard_normal((B, T, model.input_size)).astype(np.float32)
    if model.spec.masking is not None:
        x[rng.random((B, T)) < 0.3] = model.spec.masking.mask_value
    return x


def tolerance(model):
    """rtol, atol: the float32 tolerance, times the number of layers the rounding goes through."""
    depth = len(model.spec.recurrent) + len(model.spec.dense)
    return F32_RTOL * depth, F32_ATOL * depth


def assert_close(got, want, model, what):
    rtol, atol = tolerance(model)
    # unbounded activations can grow values: atol relative to the largest value compared
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def run(model, x, state=None, lengths=None, mask=None, n_threads=None, backend="c"):
    y, s = model.forward(x, state=state, lengths=lengths, mask=mask, n_threads=n_threads,
                         backend=backend)
    return (y,) + state_parts(s)


@SETTINGS
@given(lst=layer_lists(), data=st.data())
def test_compiled_matches_reference_threads_and_file(lst, data):
    layers, input_size = lst
    model = Model(layers, input_size, seed=data.draw(st.integers(0, 2**32 - 1), label="seed"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="data seed"))
    B, T = data.draw(st.integers(1, 9), label="B"), data.draw(st.integers(1, 16), label="T")
    x = random_inputs(model, rng, B, T)
    valid = data.draw(st.sampled_from(["all", "lengths", "mask"]), label="valid steps")
    lengths = rng.integers(1, T + 1, size=B) if valid == "lengths" else None
    mask = rng.random((B, T)) < 0.7 if valid == "mask" else None
    state = random_state(rng, model, B) if data.draw(st.booleans(), label="h0") else None

    want = run(model, x, state, lengths, mask, backend="numpy")
    one = run(model, x, state, lengths, mask, n_threads=1)
    assert len(one) == len(want)
    for i, (got, ref) in enumerate(zip(one, want)):
        assert got.shape == ref.shape, i
        assert_close(got, ref, model, f"output {i} (0: y, then the states) vs the reference")
    for n_threads in (2, 3):
        for a, b in zip(one, run(model, x, state, lengths, mask, n_threads=n_threads)):
            np.testing.assert_array_equal(a, b, f"{n_threads} threads")

    loaded = rnnext.load(model.to_bytes())
    assert loaded.layers == model.layers and loaded.input_size == model.input_size
    assert list(loaded.params) == list(model.params)
    for name in model.params:
        np.testing.assert_array_equal(loaded.params[name], model.params[name], name)
    for a, b in zip(one, run(loaded, x, state, lengths, mask, n_threads=2)):
        np.testing.assert_array_equal(a, b, "loaded model")


@SETTINGS
@given(lst=layer_lists(streamable=True), data=st.data())
def test_stream_steps_equal_forward(lst, data):
    layers, input_size = lst
    model = Model(layers, input_size, seed=data.draw(st.integers(0, 2**32 - 1), label="seed"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="data seed"))
    B, T = data.draw(st.integers(1, 4), label="B"), data.draw(st.integers(1, 8), label="T")
    x = random_inputs(model, rng, B, T)
    embedding = model.spec.embedding
    # with mask_zero or Masking, readout "last" of a prefix without a valid step is zeros before
    # the dense layers, while a stream gives the kept state's output: the same only from zero
    # states
    zero_start = model.spec.readout == "last" and (
        (embedding is not None and embedding.mask_zero) or model.spec.masking is not None)
    state = None if zero_start or not data.draw(st.booleans(), label="h0") else \
        random_state(rng, model, B)
    for backend in ("c", "numpy"):
        stream = model.stream(B, backend=backend)
        stream.state = state
        steps = [stream.step(x[:, t]) for t in range(T)]
        if model.per_step:  # no readout: the steps are forward's sequence
            y, final = model.forward(x, state=state, backend=backend)
            assert_close(np.stack(steps, axis=1), y, model, f"{backend} steps")
        else:  # last or final: each step is the readout of the prefix up to it
            for t in (0, T // 2, T - 1):
                y, final = model.forward(x[:, :t + 1], state=state, backend=backend)
                assert_close(steps[t], y, model, f"{backend} step {t}")
        for got, want in zip(state_parts(stream.state), state_parts(final)):
            assert_close(got, want, model, f"{backend} state")
        y_ref, _ = model.forward(x, state=state, backend="numpy")
        if model.per_step:
            assert_close(np.stack(steps, axis=1), y_ref, model, f"{backend} steps vs reference")
        else:
            assert_close(steps[-1], y_ref, model, f"{backend} last step vs reference")
