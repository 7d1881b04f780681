"""Arrays whose data is not aligned reach the C core safely and give the same numbers as aligned
ones. A valid NumPy array may start at any byte (np.frombuffer(buf, np.float32, offset=1)); the
binding copies one that is not aligned for its dtype (C reads float * and int32_t * as such),
and the core assumes nothing beyond that (rnnext.h, Alignment): an array at a multiple of 4
bytes that no vector register's alignment divides goes to C as it is. Outputs written in place
must be aligned for their dtype. Run under -fsanitize=undefined,alignment, these tests turn any
misaligned access into an error."""
import numpy as np
import pytest

from conftest import flat_core_params, flat_states, random_state
from rnnext import Model, _core
from rnnext import layers as L

# 1: not aligned even for float32 (copied by the binding); 4: aligned for float32 and int32 but
# for no vector (16, 32 and 64 bytes): goes to the kernels as it is
OFFSETS = [1, 4]
ISAS = [isa for isa in ("scalar", "avx2", "avx512") if _core.isa_supported(isa)]


def at(a, offset):
    """A copy of `a` whose data starts `offset` bytes past a 64-byte boundary."""
    a = np.ascontiguousarray(a)
    buf = bytearray(a.nbytes + 64 + offset)
    start = (-np.frombuffer(buf, np.uint8).ctypes.data) % 64 + offset
    out = np.frombuffer(buf, a.dtype, a.size, start).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset and out.flags.aligned == (offset % a.itemsize == 0)
    return out


def state_at(state, offset):
    """A Model state (arrays, tuples, lists of them) with every array moved by `offset`."""
    if isinstance(state, (list, tuple)):
        return type(state)(state_at(s, offset) for s in state)
    return at(state, offset)


def assert_same(got, want):
    """Equal arrays, or equal nested tuples and lists of them (the same kernels on the same
    numbers: bit for bit)."""
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    else:
        np.testing.assert_array_equal(got, want)


MODELS = {
    "lstm_bi": lambda: Model("lstm", input_size=5, hidden_size=20, num_layers=2,
                             bidirectional=True, seed=0),
    "layers": lambda: Model([L.GRU(17), L.LSTM(9, peepholes=True), L.RNN(6), L.Readout("mean"),
                             L.Dense(3, "softmax")], input_size=5, seed=0),
    "ids": lambda: Model([L.Embedding(11, 5), L.GRU(20, direction="bidirectional", merge="sum"),
                          L.Readout("final"), L.Dense(4)], seed=0),
}
B, T = 3, 7


def inputs(model, rng):
    if model.spec.embedding is not None:
        return rng.integers(0, 11, (B, T)).astype(np.int32)
    return rng.standard_normal((B, T, 5)).astype(np.float32)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", MODELS)
def test_forward_of_inputs_at_any_offset(name, offset, rng):
    model = MODELS[name]()
    x, lengths = inputs(model, rng), np.array([T, 1, 4], np.int32)
    state = random_state(rng, model, B)
    for backend in ("c", "numpy"):
        want = model.forward(x, state=state, lengths=lengths, backend=backend)
        got = model.forward(at(x, offset), state=state_at(state, offset),
                            lengths=at(lengths, offset), backend=backend)
        assert_same(got, want)
    if model.spec.embedding is not None:   # ids of another integer type are converted
        wide = at(x.astype(np.int64), offset)
        assert_same(model.predict(wide), model.predict(x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", MODELS)
def test_core_arrays_at_any_offset(name, offset, isa, rng):
    """The binding on each instruction set: parameters and every input at `offset`, and outputs
    at 4 bytes past a vector boundary, give what aligned ones give."""
    model = MODELS[name]()
    layers, params = L.core_layers(model.spec), flat_core_params(model)
    aligned, moved = _core.CoreModel(layers, params, isa), _core.CoreModel(layers,
                                                                          at(params, offset), isa)
    x, lengths = inputs(model, rng), np.array([T, 2, 5], np.int32)
    h0, c0 = flat_states(random_state(rng, model, B))
    ids = x if x.dtype == np.int32 else None
    x = None if ids is not None else x
    S, C = aligned.info["state_size"], aligned.info["cell_size"]
    y_shape = (B, T, model.output_size) if model.per_step else (B, model.output_size)

    def run(core, out_offset, in_offset):
        move = (lambda a: at(a, in_offset)) if in_offset else (lambda a: a)
        outs = [at(np.zeros(shape, np.float32), out_offset)
                for shape in (y_shape, (B * S,), (B * C,))]
        core.forward(*outs, None if x is None else move(x), None if ids is None else move(ids),
                     move(h0), move(c0) if C else None, move(lengths), None, 2)
        return outs

    assert_same(run(moved, 4, offset), run(aligned, 0, 0))


@pytest.mark.parametrize("offset", OFFSETS)
def test_training_of_inputs_at_any_offset(offset, rng):
    x, y = rng.standard_normal((B, T, 5)).astype(np.float32), rng.integers(0, 40, (B, T))
    model = Model([L.LSTM(20, direction="bidirectional"), L.GRU(6), L.Dense(40)],
                  input_size=5, seed=0)
    state = random_state(rng, model, B)
    for backend in ("c", "numpy"):
        want = model.loss_and_grads(x, y, state=state, backend=backend)
        got = model.loss_and_grads(at(x, offset), at(y, offset), state=state_at(state, offset),
                                   backend=backend)
        assert got[0] == want[0]
        assert got[1].keys() == want[1].keys()
        for key in want[1]:
            assert_same(got[1][key], want[1][key])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_core_training_arrays_at_any_offset(offset, isa, rng):
    """forward_train and backward: inputs at `offset`, outputs 4 bytes past a vector boundary."""
    model = Model([L.LSTM(20, direction="bidirectional"), L.GRU(6, reset_after=False)],
                  input_size=5, seed=0)
    core = _core.CoreModel(L.core_layers(model.spec), flat_core_params(model), isa)
    I, W = core.train_sizes
    S, C, P = core.info["state_size"], core.info["cell_size"], core.info["recurrent_param_count"]
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0, c0 = flat_states(random_state(rng, model, B))
    dseq = rng.standard_normal((B, T, W)).astype(np.float32)
    dh_n = rng.standard_normal(B * S).astype(np.float32)
    lengths = np.array([T, 3, 1], np.int32)

    def run(out_offset, in_offset):
        def move(a):
            return at(a, in_offset) if in_offset else a

        def out(*shape):
            return at(np.zeros(shape, np.float32), out_offset)

        tape = _core.CoreTape(core, B, T)
        seq, h_n, c_n = out(B, T, W), out(B * S), out(B * C)
        core.forward_train(tape, seq, h_n, c_n, move(x), move(h0), move(c0), move(lengths),
                           None, 2)
        grads, dx, dh0, dc0 = out(P), out(B, T, I), out(B * S), out(B * C)
        core.backward(tape, grads, dx, dh0, dc0, move(x), move(dseq), move(dh_n), None, 2)
        return seq, h_n, c_n, grads, dx, dh0, dc0

    assert_same(run(4, offset), run(0, 0))


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name", ["lstm", "ids"])
def test_stream_of_inputs_at_any_offset(name, offset, rng):
    if name == "lstm":
        model = Model([L.LSTM(20), L.Dense(3)], input_size=5, seed=0)
        steps = rng.standard_normal((T, B, 5)).astype(np.float32)
    else:
        model = Model([L.Embedding(11, 5), L.GRU(20), L.Dense(4)], seed=0)
        steps = rng.integers(0, 11, (T, B)).astype(np.int32)
    state = random_state(rng, model, B)
    for backend in ("c", "numpy"):
        want, got = model.stream(B, backend=backend), model.stream(B, backend=backend)
        want.state, got.state = state, state_at(state, offset)
        for step in steps:
            assert_same(got.step(at(step, offset)), want.step(step))
        assert_same(got.state, want.state)
    core = model.core().stream(B)          # the binding's state() into outputs off a vector
    core.reset(*flat_states(state))
    h, c = flat_states(state)
    h_out, c_out = at(np.zeros_like(h), 4), at(np.zeros_like(c), 4) if c.size else None
    core.state(h_out, c_out)
    assert_same(h_out, h)


@pytest.mark.parametrize("offset", OFFSETS)
def test_params_at_any_offset(offset, rng):
    model = MODELS["layers"]()
    moved = Model(model.layers, input_size=5,
                  params={k: at(v, offset) for k, v in model.params.items()})
    x = rng.standard_normal((B, T, 5)).astype(np.float32)
    assert_same(moved.predict(x), model.predict(x))
    moved.set_params({k: at(v, offset) for k, v in model.params.items()})
    assert_same(moved.predict(x), model.predict(x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_activation_of_an_array_at_any_offset(offset, isa, rng):
    x = rng.standard_normal(37).astype(np.float32)
    for name in ("sigmoid", "tanh"):
        assert_same(_core.activation(name, at(x, offset), isa), _core.activation(name, x, isa))


@pytest.mark.parametrize("name", ["y", "h_n", "c_n"])
def test_output_not_aligned_for_its_dtype_is_refused(name):
    """An output is written in place, so a copy cannot stand in for it: refused, naming it."""
    model = Model("lstm", input_size=2, hidden_size=3, output_size=2, seed=0)
    core = model.core()
    outs = {"y": np.zeros((1, 2), np.float32), "h_n": np.zeros(3, np.float32),
            "c_n": np.zeros(3, np.float32)}
    outs[name] = at(outs[name], 1)
    with pytest.raises(ValueError, match=rf"^{name}: expected an array whose data is aligned "
                                         rf"for float32 \(at a multiple of 4 bytes\), got one at"):
        core.forward(outs["y"], outs["h_n"], outs["c_n"], np.zeros((1, 4, 2), np.float32), None,
                     None, None, None, None, 1)
