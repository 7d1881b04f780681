"""Inputs that are accepted: any memory layout, float64 and integer arrays, lists, unbatched
(T, I) sequences, token ids and masks of any integer dtype; and what NaN does (documented in
rnnext/model.py)."""
import numpy as np
import pytest

from conftest import CELLS, make_model, num_directions, random_lengths, random_state, state_parts
from rnnext import Model
from rnnext import layers as L

BACKENDS = ["c", "numpy"]


def non_contiguous(a):
    """a's values in a view with a stride of two elements in the last axis."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    view = big[..., ::2]
    assert not view.flags.c_contiguous
    return view


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


# each form applies to x and the state (integer-valued data, so every dtype holds it exactly)
FORMS = {
    "non_contiguous": non_contiguous,
    "fortran": np.asfortranarray,
    "read_only": read_only,
    "float64": lambda a: a.astype(np.float64),
    "int64": lambda a: a.astype(np.int64),
    "int8": lambda a: a.astype(np.int8),
    "nested_list": lambda a: a.tolist(),
}
LENGTH_FORMS = {
    "non_contiguous": non_contiguous, "read_only": read_only,
    "int8": lambda a: a.astype(np.int8), "int32": lambda a: a.astype(np.int32),
    "uint16": lambda a: a.astype(np.uint16), "uint64": lambda a: a.astype(np.uint64),
    "list": lambda a: a.tolist(),
}


def map_state(state, fn):
    if state is None:
        return None
    parts = tuple(fn(p) for p in state_parts(state))
    return parts if len(parts) == 2 else parts[0]


def assert_same_results(got, want):
    (y1, s1), (y2, s2) = got, want
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(state_parts(s1), state_parts(s2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layouts_and_dtypes_give_the_float32_results(cell, form, backend, rng):
    model = make_model(cell, input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    B, T = 4, 6
    x = rng.integers(-2, 3, size=(B, T, 3)).astype(np.float32)
    state = map_state(random_state(rng, model, B), np.round)
    lengths = random_lengths(rng, "mixed", B, T)
    want = model.forward(x, state=state, lengths=lengths, backend=backend)
    fn = FORMS[form]
    got = model.forward(fn(x), state=map_state(state, fn), lengths=lengths, backend=backend)
    assert_same_results(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", list(LENGTH_FORMS))
def test_lengths_layouts_and_integer_dtypes(form, backend, rng):
    model = make_model("gru", input_size=3, hidden_size=5)
    B, T = 5, 7
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = random_lengths(rng, "mixed", B, T)
    want = model.forward(x, lengths=lengths, backend=backend)
    assert_same_results(model.forward(x, lengths=LENGTH_FORMS[form](lengths), backend=backend),
                        want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_unbatched_sequence(cell, bidirectional, backend, rng):
    """A (T, I) input is one sequence: y (T, D*H), each state part (L*D, H), the same numbers
    as a batch of one."""
    model = make_model(cell, 3, 5, 2, bidirectional)
    T, LD, DH = 6, 2 * num_directions(model), 5 * num_directions(model)
    x = rng.standard_normal((T, 3)).astype(np.float32)
    state = map_state(random_state(rng, model, 1), lambda p: p[:, 0])
    for lengths in (None, 4):
        y, s = model.forward(x, state=state, lengths=lengths, backend=backend)
        assert y.shape == (T, DH)
        assert all(p.shape == (LD, 5) for p in state_parts(s))
        yb, sb = model.forward(x[None], state=map_state(state, lambda p: p[:, None]),
                               lengths=None if lengths is None else [lengths], backend=backend)
        assert_same_results((y, s), (yb[0], map_state(sb, lambda p: p[:, 0])))


# ---------------------------------------------------------------------------------------------
# NaN


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_nan_stays_in_its_sequence_from_its_step_on(cell, backend, rng):
    """A NaN at step t of sequence b makes b's outputs NaN from t on and its final state NaN;
    the other sequences are bit for bit what they are without it. A NaN past a sequence's
    length is never read."""
    model = make_model(cell, 3, 6, num_layers=2)
    B, T, t = 4, 9, 4
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = np.array([T, T, 5, T])
    clean_y, clean_s = model.forward(x, lengths=lengths, backend=backend)
    x[1, t, 2] = np.nan
    x[2, 7, 0] = np.nan  # past length 5
    y, s = model.forward(x, lengths=lengths, backend=backend)
    assert np.isfinite(y[1, :t]).all() and np.isnan(y[1, t:]).all()
    for b in (0, 2, 3):
        np.testing.assert_array_equal(y[b], clean_y[b])
    for part, clean in zip(state_parts(s), state_parts(clean_s)):
        assert np.isnan(part[:, 1]).all()
        np.testing.assert_array_equal(np.delete(part, 1, axis=1), np.delete(clean, 1, axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_a_bidirectional_layer(backend, rng):
    """Forward half: NaN from step t on; reverse half: NaN from the end down to step t."""
    model = make_model("lstm", input_size=3, hidden_size=6, bidirectional=True)
    B, T, t = 3, 8, 3
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    clean_y, _ = model.forward(x, backend=backend)
    x[0, t, 1] = np.nan
    y, _ = model.forward(x, backend=backend)
    forward_half, reverse_half = y[0, :, :6], y[0, :, 6:]
    assert np.isfinite(forward_half[:t]).all() and np.isnan(forward_half[t:]).all()
    assert np.isnan(reverse_half[:t + 1]).all() and np.isfinite(reverse_half[t + 1:]).all()
    np.testing.assert_array_equal(y[1:], clean_y[1:])


# ---------------------------------------------------------------------------------------------
# token ids and masks


ID_FORMS = {
    "non_contiguous": non_contiguous, "fortran": np.asfortranarray, "read_only": read_only,
    "int8": lambda a: a.astype(np.int8), "uint8": lambda a: a.astype(np.uint8),
    "int32": lambda a: a.astype(np.int32), "uint64": lambda a: a.astype(np.uint64),
    "nested_list": lambda a: a.tolist(),
}
MASK_FORMS = {
    "non_contiguous": non_contiguous, "read_only": read_only,
    "uint8": lambda a: a.astype(np.uint8), "int64": lambda a: a.astype(np.int64),
    "nested_list": lambda a: a.tolist(),
}


@pytest.fixture(scope="module")
def ids_model():
    return Model([L.Embedding(6, 4, mask_zero=True), L.GRU(5), L.LSTM(3), L.Dense(2)], seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", list(ID_FORMS))
def test_ids_layouts_and_integer_dtypes(ids_model, form, backend, rng):
    ids = rng.integers(0, 6, size=(3, 7))
    want = ids_model.forward(ids, backend=backend)
    assert_same_results(ids_model.forward(ID_FORMS[form](ids), backend=backend), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", list(MASK_FORMS))
def test_mask_layouts_and_dtypes(ids_model, form, backend, rng):
    ids = rng.integers(0, 6, size=(3, 7))
    mask = rng.random((3, 7)) < 0.6
    want = ids_model.forward(ids, mask=mask, backend=backend)
    assert_same_results(ids_model.forward(ids, mask=MASK_FORMS[form](mask), backend=backend),
                        want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_ids_and_mask(ids_model, backend, rng):
    """A (T,) array of ids is one sequence, with a (T,) mask: the numbers of a batch of one."""
    ids, mask = rng.integers(0, 6, size=7), rng.random(7) < 0.6
    y, state = ids_model.forward(ids, mask=mask, backend=backend)
    yb, state_b = ids_model.forward(ids[None], mask=mask[None], backend=backend)
    assert y.shape == (7, 2)
    np.testing.assert_array_equal(y, yb[0])
    for part, batched in zip(state_parts(state), state_parts(state_b)):
        np.testing.assert_array_equal(part, batched[:, 0])
