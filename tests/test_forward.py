"""The compiled core (backend "c") against the NumPy reference (backend "numpy"), and what a
user relies on besides: results that do not depend on the thread count or on the other sequences
of a batch, predict(), and a state that continues a sequence."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (CELLS, assert_f32_close, assert_forward_matches_reference,
                      core_cell, make_model, pairwise_cases, random_lengths, random_state, random_x,
                      state_parts)
from rnnext import Model, Readout, reference

HEADS = [None, ("many_to_one", None), ("many_to_one", "softmax"), ("many_to_one", "sigmoid"),
         ("many_to_many", None), ("many_to_many", "softmax"), ("many_to_many", "sigmoid")]

AXES = {
    "cell": CELLS,
    "num_layers": [1, 2, 3],
    "bidirectional": [False, True],
    "lengths": ["full", "mixed", "ones"],
    "B": [1, 2, 3, 7, 64],
    "H": [1, 7, 16, 33, 128],
    "I": [1, 5, 64],
    "T": [1, 2, 50],
    "n_threads": [1, 2],
    "initial_state": [False, True],
    "head": HEADS,
}
CASES = pairwise_cases(AXES)


def case_id(case):
    head = "nohead" if case["head"] is None else "-".join(map(str, case["head"]))
    direction = "bi" if case["bidirectional"] else "uni"
    return (f"{case['cell']}-L{case['num_layers']}-{direction}-{case['lengths']}"
            f"-B{case['B']}-H{case['H']}-I{case['I']}-T{case['T']}"
            f"-thr{case['n_threads']}-{'h0' if case['initial_state'] else 'zero'}-{head}")


def head_args(head):
    return {} if head is None else {"output_size": 3, "output": head[0], "activation": head[1]}


def test_pairwise_cases_cover_every_value():
    for name, values in AXES.items():
        seen = [case[name] for case in CASES]
        assert all(v in seen for v in values), name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_compiled_matches_reference(case, rng):
    cell = case["cell"]
    B, T, I, H = case["B"], case["T"], case["I"], case["H"]
    model = make_model(cell, I, H, case["num_layers"], case["bidirectional"],
                       **head_args(case["head"]))
    x = random_x(rng, B, T, I)
    state = random_state(rng, model, B) if case["initial_state"] else None
    lengths = random_lengths(rng, case["lengths"], B, T)
    assert_forward_matches_reference(model, x, state, lengths, case["n_threads"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_compiled_matches_reference(data):
    cell = data.draw(st.sampled_from(CELLS), label="cell")
    B = data.draw(st.integers(1, 9), label="B")
    T = data.draw(st.integers(1, 30), label="T")
    I = data.draw(st.integers(1, 9), label="I")
    H = data.draw(st.integers(1, 70), label="H")
    model = make_model(cell, I, H, data.draw(st.integers(1, 3), label="layers"),
                       data.draw(st.booleans(), label="bidirectional"),
                       seed=data.draw(st.integers(0, 2**32 - 1), label="seed"),
                       **head_args(data.draw(st.sampled_from(HEADS), label="head")))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="data seed"))
    x = random_x(rng, B, T, I) * data.draw(st.sampled_from([0.1, 1.0, 4.0]), label="scale")
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B),
                        label="lengths")
    state = random_state(rng, model, B) if data.draw(st.booleans(), label="h0") else None
    assert_forward_matches_reference(model, x, state, lengths,
                                     data.draw(st.sampled_from([1, 2]), label="n_threads"))


# ---------------------------------------------------------------------------------------------
# Bitwise properties of the compiled core


def run_c(model, x, state, lengths, n_threads):
    y, s = model.forward(x, state=state, lengths=lengths, n_threads=n_threads, backend="c")
    return (y,) + state_parts(s)


def select_batch(model, state, rows):
    """The state of the sequences `rows` (the batch axis is axis 1)."""
    if state is None:
        return None
    parts = tuple(p[:, rows] for p in state_parts(state))
    return parts if core_cell(model) == "lstm" else parts[0]


@pytest.mark.parametrize("B", [1, 2, 11])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_thread_count_does_not_change_results(cell, num_layers, bidirectional, B, rng):
    """Also for batches smaller than the thread count, whose threads share each step."""
    model = make_model(cell, 4, 70, num_layers, bidirectional)
    T = 70
    x = random_x(rng, B, T, 4)
    state, lengths = random_state(rng, model, B), random_lengths(rng, "mixed", B, T)
    one = run_c(model, x, state, lengths, 1)
    for n_threads in (2, 3, B + 5, -1, np.int64(2)):
        for a, b in zip(one, run_c(model, x, state, lengths, n_threads)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_batch_composition_does_not_change_a_sequence(cell, num_layers, bidirectional, rng):
    model = make_model(cell, 4, 21, num_layers, bidirectional)
    B, T = 13, 9
    x = random_x(rng, B, T, 4)
    state, lengths = random_state(rng, model, B), random_lengths(rng, "mixed", B, T)
    whole = run_c(model, x, state, lengths, 1)
    perm = rng.permutation(B)
    shuffled = run_c(model, x[perm], select_batch(model, state, perm), lengths[perm], 2)
    np.testing.assert_array_equal(shuffled[0], whole[0][perm])
    for a, b in zip(shuffled[1:], whole[1:]):
        np.testing.assert_array_equal(a, b[:, perm])
    for rows in ([0], [B - 1], [2, 7, 5], list(range(1, 8))):
        part = run_c(model, x[rows], select_batch(model, state, rows), lengths[rows], 2)
        np.testing.assert_array_equal(part[0], whole[0][rows])
        for a, b in zip(part[1:], whole[1:]):
            np.testing.assert_array_equal(a, b[:, rows])


# ---------------------------------------------------------------------------------------------
# predict


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_predict_is_forwards_output(cell, bidirectional, backend, rng):
    """predict gives forward's y: the whole sequence for a model without readout (the shorthand
    without a head), each sequence's last valid step of that sequence with a Readout("last")."""
    sequence_model = make_model(cell, 3, 6, 2, bidirectional)
    assert sequence_model.per_step and sequence_model.spec.readout == "sequence"
    last_model = Model(list(sequence_model.layers) + [Readout("last")], 3,
                       params=sequence_model.params)
    assert not last_model.per_step and last_model.spec.readout == "last"
    B, T = 5, 8
    x = random_x(rng, B, T, 3)
    for lengths in (random_lengths(rng, "mixed", B, T), None):
        y, _ = sequence_model.forward(x, lengths=lengths, backend=backend)
        np.testing.assert_array_equal(sequence_model.predict(x, lengths=lengths, backend=backend),
                                      y)
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        np.testing.assert_array_equal(last_model.predict(x, lengths=lengths, backend=backend),
                                      y[np.arange(B), last])
    for model in (sequence_model, last_model):
        np.testing.assert_array_equal(model.predict(x[1], backend=backend),
                                      model.predict(x[1:2], backend=backend)[0])


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {None: lambda z: z, "softmax": softmax, "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("output", ["many_to_one", "many_to_many"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_head_on_the_reference_sequence(cell, bidirectional, output, activation, rng):
    """predict and forward with a head equal the dense layer written here on the reference's
    output sequence: on each last valid step (many_to_one) or every valid step, zeros past the
    length (many_to_many)."""
    model = make_model(cell, input_size=3, hidden_size=6, num_layers=2,
                       bidirectional=bidirectional, output_size=4, output=output,
                       activation=activation)
    B, T = 6, 7
    x = random_x(rng, B, T, 3)
    lengths = random_lengths(rng, "mixed", B, T)
    seq, _, _ = reference.forward(core_cell(model), model.params, x, 2, bidirectional,
                                  lengths=lengths)
    w, b = model.params["dense0.weight"], model.params["dense0.bias"]
    if output == "many_to_one":
        expected = ACTIVATIONS[activation](seq[np.arange(B), lengths - 1] @ w.T + b)
    else:
        expected = ACTIVATIONS[activation](seq @ w.T + b)
        expected[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    for backend in ("c", "numpy"):
        assert_f32_close(model.predict(x, lengths=lengths, backend=backend), expected, backend)
        assert_f32_close(model.forward(x, lengths=lengths, backend=backend)[0], expected, backend)


# ---------------------------------------------------------------------------------------------
# a state passed back continues the sequence


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_returned_state_continues_the_sequence(cell, num_layers, backend, rng):
    model = make_model(cell, 3, 9, num_layers)
    B, T = 4, 80
    x = random_x(rng, B, T, 3)
    h0 = random_state(rng, model, B)
    y, state = model.forward(x, state=h0, backend=backend)
    for k in (1, 33, T - 1):
        y1, s1 = model.forward(x[:, :k], state=h0, backend=backend)
        y2, s2 = model.forward(x[:, k:], state=s1, backend=backend)
        pieces = [(np.concatenate([y1, y2], axis=1), y)] + list(zip(state_parts(s2),
                                                                    state_parts(state)))
        for got, want in pieces:
            if backend == "c":  # each step's arithmetic does not depend on T: bitwise
                np.testing.assert_array_equal(got, want)
            else:  # NumPy's matrix products may block differently for other T
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [1, 2, 3])
def test_small_batch_team_matches_one_thread_and_reference(cell, B, rng):
    """Batches under two rows a thread with enough work per step (H=200: at least 25K
    multiply-adds a thread per step on every ISA, above csrc/forward.c's RNX_TEAM_MIN_MACS) are
    run by a team that splits each step's panels; the reset-before GRU stays on one thread."""
    model = make_model(cell, 5, 200, 2, False)
    T = 30
    x = random_x(rng, B, T, 5)
    state, lengths = random_state(rng, model, B), random_lengths(rng, "mixed", B, T)
    one = run_c(model, x, state, lengths, 1)
    for a, b in zip(one, run_c(model, x, state, lengths, 2)):
        np.testing.assert_array_equal(a, b)
    parts = state_parts(state)
    y_ref, h_ref, _ = reference.forward(core_cell(model), model.params, x, 2, False, parts[0],
                                        parts[1] if len(parts) == 2 else None, lengths)
    assert_f32_close(one[0], y_ref, "y")
    assert_f32_close(one[1], h_ref, "h_n")
