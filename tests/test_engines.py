"""What the engine helpers share (rnnext.engines): ragged sequences padded into one batch with
lengths, one prediction per sequence; and importing rnnext never imports an engine."""
import numpy as np
import pytest

import rnnext
from rnnext.engines import pad, predict_ragged
from conftest import run_python

IDS_MODEL = rnnext.Model([rnnext.Embedding(50, 8), rnnext.LSTM(16), rnnext.Readout("last"),
                          rnnext.Dense(3, activation="softmax")], seed=0)
SEQ_MODEL = rnnext.Model([rnnext.GRU(16, direction="bidirectional"), rnnext.Dense(4)],
                         input_size=6, seed=0)
LENGTHS = [7, 1, 12, 3, 12]


def ragged(kind, rng=np.random.default_rng(0)):
    if kind == "ids":
        return [rng.integers(0, 50, n) for n in LENGTHS]
    return [rng.standard_normal((n, 6)).astype(np.float32) for n in LENGTHS]


def test_pad_places_each_sequence_at_the_start_of_its_row():
    seqs = ragged("features")
    x, lengths = pad(seqs)
    assert x.shape == (5, 12, 6) and x.dtype == np.float32
    np.testing.assert_array_equal(lengths, LENGTHS)
    for row, s in zip(x, seqs):
        np.testing.assert_array_equal(row[:len(s)], s)
        assert not row[len(s):].any()
    ids, _ = pad([[1, 2], [3]], dtype=np.int32)
    np.testing.assert_array_equal(ids, [[1, 2], [3, 0]])
    assert ids.dtype == np.int32


@pytest.mark.parametrize("model, kind", [(IDS_MODEL, "ids"), (SEQ_MODEL, "features")])
def test_predict_ragged_is_each_sequence_alone(model, kind):
    """Padding plus lengths gives what each sequence gives by itself, to float rounding (a
    batch of one and a batch of five may sum in another order)."""
    seqs = ragged(kind)
    got = predict_ragged(model, seqs)
    assert len(got) == len(seqs)
    for p, s in zip(got, seqs):
        alone = model.predict(s[None])[0]
        assert p.shape == alone.shape
        np.testing.assert_allclose(p, alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p, model.predict(s[None], backend="numpy")[0], rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("seqs, message", [
    ([], "at least one sequence, got none"),
    ([np.ones(3), np.ones(0)], "empty one at position 1"),
    ([np.ones((3, 6)), np.ones((2, 5))], r"shape \(6,\), got \(5,\) at position 1"),
    ([np.ones(3), np.float32(2)], "empty one at position 1"),
])
def test_pad_refuses(seqs, message):
    with pytest.raises(ValueError, match="sequences: expected .*" + message):
        pad(seqs)


def test_importing_rnnext_imports_no_engine():
    run = run_python("""
        import sys, rnnext, rnnext.engines
        print(sorted(m for m in ("dask", "distributed", "ray", "pyspark") if m in sys.modules))
        """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
