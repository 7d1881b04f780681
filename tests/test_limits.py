"""Sizes and thread counts beyond what the C core takes are refused in Python with a ValueError
that names the argument and the limit, the same on both backends: a batch is never truncated to
a C int, a check comes before any copy or allocation, and no thread count ends the process.

The huge inputs are zero-stride views (np.broadcast_to): they cost nothing unless copied, and
tracemalloc (which sees NumPy's allocations) shows that nothing was."""
import re
import tracemalloc

import numpy as np
import pytest

import rnnext
from conftest import run_python
from rnnext import Model, _core
from rnnext import layers as L
import rnnext.train  # noqa: F401 -- Model's training methods import it on first use: here,
#                      so that its import is not counted as an allocation before a size check

BACKENDS = ["c", "numpy"]
INT_MAX = 2**31 - 1
SIZES = rf"^x: expected at most {INT_MAX} sequences \(B\) and time steps \(T\), and at most " \
    rf"{_core.MAX_ROWS} steps in all \(B \* T\), got shape "

# (model, dtype, shape) of x past the limits: B over INT_MAX (the probe's 2**32 + 1 is one row
# as a C int), T over it, B * T over RNX_MAX_ROWS with B and T in range; an unbatched sequence
FLOAT_SHAPES = [(2**32 + 1, 1, 1), (2**31, 1, 1), (1, 2**31, 1), (2**16, 2**15, 1), (2**31, 1)]
ID_SHAPES = [(2**32 + 1, 1), (2**31, 1), (1, 2**31), (2**16, 2**15), (2**31,)]
CASES = [("float", dtype, shape) for dtype in (np.float32, np.float64) for shape in FLOAT_SHAPES] \
    + [("ids", dtype, shape) for dtype in (np.int32, np.int64) for shape in ID_SHAPES]


@pytest.fixture(scope="module")
def models():
    return {"float": Model("rnn", input_size=1, hidden_size=2, output_size=2, seed=0),
            "ids": Model([L.Embedding(3, 2), L.GRU(2), L.Readout("last"), L.Dense(2)], seed=0)}


@pytest.fixture(scope="module")
def float_model(models):
    return models["float"]


def huge(shape, dtype):
    return np.broadcast_to(np.zeros((), dtype), shape)


def refused_without_copies(call, match):
    """call() raises ValueError matching `match` having allocated (almost) nothing."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated before the size check"


def shown(shape):
    return re.escape(str(shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, dtype, shape", CASES,
                         ids=[f"{k}-{np.dtype(d).name}-{s}" for k, d, s in CASES])
def test_batch_past_the_core_limits(models, kind, dtype, shape, backend):
    model, x, match = models[kind], huge(shape, dtype), SIZES + shown(shape)
    refused_without_copies(lambda: model.forward(x, backend=backend), match)
    refused_without_copies(lambda: model.predict(x, backend=backend), match)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", FLOAT_SHAPES[:4], ids=str)
def test_training_batch_past_the_core_limits(float_model, shape, backend):
    x, y = huge(shape, np.float32), huge(shape[:1], np.int64)
    match = SIZES + shown(shape)
    refused_without_copies(lambda: float_model.loss_and_grads(x, y, backend=backend), match)
    refused_without_copies(lambda: float_model.evaluate(x, y, backend=backend), match)
    refused_without_copies(lambda: float_model.fit(x, y, epochs=1, verbose=False,
                                                   backend=backend), match)
    small = np.zeros((1, 1, 1), np.float32), np.zeros(1, np.int64)
    refused_without_copies(lambda: float_model.fit(*small, validation_data=(x, y), epochs=1,
                                                   verbose=False, backend=backend),
                           "^validation_data: " + match[1:])


def test_core_binding_names_x(float_model):
    """The binding checks too, rather than Cython's OverflowError when B meets a C int."""
    x = huge((2**32 + 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=SIZES):
        float_model.core().forward(None, None, None, x, None, None, None, None, None, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [2**31, 2**32 + 1])
def test_stream_batch_past_the_core_limits(float_model, batch, backend):
    with pytest.raises(ValueError, match=rf"^batch: expected an int in \[1, {_core.MAX_SIZE}\], "
                                         rf"got {batch}"):
        float_model.stream(batch, backend=backend)


# ------------------------------------------------------------------------------------------------
# threads: RNX_MAX_THREADS (rnnext.h) in C and in Python


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [_core.MAX_THREADS + 1, 32767, 65536, 1 << 20,
                               -_core.MAX_THREADS - 1])
def test_thread_count_past_the_limit_is_refused(float_model, n, backend):
    x = np.zeros((4, 2, 1), np.float32)
    match = rf"^n_threads: expected at most {_core.MAX_THREADS} threads either way, got {n}$"
    with pytest.raises(ValueError, match=match):
        float_model.predict(x, n_threads=n, backend=backend)
    with pytest.raises(ValueError, match=match):
        rnnext.set_num_threads(n)
    with pytest.raises(ValueError, match=match):
        float_model.loss_and_grads(x, np.zeros(4, np.int64), n_threads=n)


def test_core_binding_refuses_past_the_limit(float_model):
    x = np.zeros((4, 2, 1), np.float32)
    core = float_model.core()
    y = np.empty((4, 2), np.float32)
    with pytest.raises(ValueError, match=rf"n_threads at most {_core.MAX_THREADS}"):
        core.forward(y, None, None, x, None, None, None, None, None, _core.MAX_THREADS + 1)
    tape = _core.CoreTape(core, 4, 2)
    with pytest.raises(ValueError, match=rf"n_threads at most {_core.MAX_THREADS}"):
        core.forward_train(tape, None, None, None, x, None, None, None, None,
                           _core.MAX_THREADS + 1)
    core.forward_train(tape, None, None, None, x, None, None, None, None, 1)
    grads = np.empty(core.info["recurrent_param_count"], np.float32)
    with pytest.raises(ValueError, match=rf"n_threads at most {_core.MAX_THREADS}"):
        core.backward(tape, grads, None, None, None, x, None, None, None, _core.MAX_THREADS + 1)


@pytest.mark.skipif(not _core.has_openmp(), reason="a serial build runs every call on one thread")
def test_the_limit_itself_runs():
    """RNX_MAX_THREADS threads over a batch that splits into that many slices: the process lives
    (run in a child, whose death would not take the tests with it) and gets the same numbers."""
    run = run_python(f"""
        import numpy as np, rnnext
        m = rnnext.Model("rnn", input_size=1, hidden_size=2, seed=0)
        x = np.random.default_rng(0).standard_normal((2 * {_core.MAX_THREADS}, 3, 1))
        y = m.predict(x, n_threads={_core.MAX_THREADS})
        print(rnnext.config.last_call_threads(), np.array_equal(y, m.predict(x, n_threads=1)))
        """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(_core.MAX_THREADS), "True"]


@pytest.mark.skipif(not _core.has_openmp(), reason="a serial build runs every call on one thread")
def test_openmp_default_is_capped():
    """OMP_NUM_THREADS above the limit: a C call with n_threads <= 0 takes RNX_MAX_THREADS."""
    run = run_python("from rnnext import _core; print(_core.max_threads())",
                     OMP_NUM_THREADS=str(_core.MAX_THREADS * 4))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(_core.MAX_THREADS)
