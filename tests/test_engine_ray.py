"""rnnext.engines.ray on a local Ray cluster of 2 CPUs: predictions equal a local predict for
ragged and tensor columns, each actor fetches the model once, and a worker predicts on the CPUs
its task or actor reserved, read inside the worker by rnnext.config.last_call_threads().

The workers import the rnnext these tests import: the cluster's runtime_env puts it on PYTHONPATH."""
import os
import tempfile

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import rnnext  # noqa: E402
from rnnext.engines import pad  # noqa: E402
from rnnext.engines.ray import Predictor, predict_dataset  # noqa: E402

from conftest import RNNEXT_ROOT, run_python  # noqa: E402

ROWS = 48   # 16+ rows per call, so that a call can split over 2 threads


@pytest.fixture(scope="module")
def cluster():
    # Ray sets OMP_NUM_THREADS to a task's or actor's CPUs only where the workers' environment,
    # inherited from here, leaves it unset.
    omp = os.environ.pop("OMP_NUM_THREADS", None)
    # Ray puts the driver's working directory first on its workers' path: started from the
    # checkout, they would import its uncompiled sources.
    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
                 runtime_env={"env_vars": {"PYTHONPATH": RNNEXT_ROOT}})
    finally:
        os.chdir(here)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    if omp is not None:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="module")
def ids_model():
    return rnnext.Model([rnnext.Embedding(50, 8), rnnext.LSTM(16), rnnext.Readout("last"),
                         rnnext.Dense(3, activation="softmax")], seed=0)


@pytest.fixture(scope="module")
def features_model():
    return rnnext.Model([rnnext.GRU(16), rnnext.Dense(4)], input_size=6, seed=0)


def ragged_ids(rng, rows=ROWS):
    return [rng.integers(0, 50, n).astype(np.int32) for n in rng.integers(1, 13, rows)]


def by_key(rows, column):
    """The column's values in the order of the rows' key k (Ray Data does not keep the order)."""
    return [row[column] for row in sorted(rows, key=lambda row: row["k"])]


def probe_class():
    """A Predictor that adds, per row, its process, how many Predictors that process built, the
    number of the call in that Predictor and the threads of the predict on the calling thread.
    Defined here so that Ray ships it by value."""
    class Probe(Predictor):
        built = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            Probe.built += 1
            self.calls = 0

        def __call__(self, batch):
            batch = super().__call__(batch)
            self.calls += 1
            n = len(batch[self.output_column])
            batch["pid"] = np.full(n, os.getpid())
            batch["built"] = np.full(n, Probe.built)
            batch["call"] = np.full(n, self.calls)
            batch["threads"] = np.full(n, rnnext.config.last_call_threads())
            return batch
    return Probe


@pytest.mark.skipif(rnnext.config.cpu_count() < 2, reason="needs 2 CPUs for a task of 2")
def test_tasks_predict_on_their_cpus_on_one_reused_worker(cluster, ids_model, rng):
    # Ray sets OMP_NUM_THREADS for each task on a reused worker; libgomp read it once at start,
    # rnnext reads it at each call.
    @ray.remote
    def probe(model, x):
        model.predict(x)
        return os.getpid(), rnnext.config.last_call_threads(), rnnext.__file__

    model, x = ray.put(ids_model), rng.integers(0, 50, (16, 5)).astype(np.int32)
    for order in ([1, 2, 1, 2], [2, 1, 2, 1]):
        got = [ray.get(probe.options(num_cpus=k).remote(model, x)) for k in order]
        assert [threads for _, threads, _ in got] == order
        assert len({pid for pid, _, _ in got}) == 1
    assert got[0][2].startswith(RNNEXT_ROOT)


def test_ragged_ids_readout(cluster, ids_model, rng):
    seqs = ragged_ids(rng)
    ds = ray.data.from_items([{"k": i, "ids": s} for i, s in enumerate(seqs)])
    rows = predict_dataset(ids_model, ds, column="ids", concurrency=2, batch_size=16).take_all()
    np.testing.assert_array_equal(np.stack(by_key(rows, "prediction")),
                                  ids_model.predict(*pad(seqs)))


def test_tensor_features_with_lengths_sequence_output(cluster, features_model, rng):
    x = rng.standard_normal((ROWS, 7, 6)).astype(np.float32)
    lengths = rng.integers(1, 8, ROWS)
    lengths[0] = 7
    ds = ray.data.from_items([{"k": i, "x": x[i], "n": lengths[i]} for i in range(ROWS)])
    rows = predict_dataset(features_model, ds, lengths_column="n", output_column="y",
                           concurrency=1, batch_size=16).take_all()
    np.testing.assert_array_equal(np.stack(by_key(rows, "y")),
                                  features_model.predict(x, lengths=lengths))


def test_actors_fetch_the_model_once_and_predict_on_their_cpu(cluster, features_model, rng):
    seqs = [rng.standard_normal((n, 6)).astype(np.float32) for n in rng.integers(1, 9, 4 * ROWS)]
    ds = ray.data.from_items([{"k": i, "x": s} for i, s in enumerate(seqs)],
                             override_num_blocks=8)
    rows = ds.map_batches(probe_class(), fn_constructor_args=(ray.put(features_model),),
                          compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
                          batch_size=ROWS // 2, batch_format="numpy").take_all()
    want = features_model.predict(*pad(seqs))
    for i, (got, n) in enumerate(zip(by_key(rows, "prediction"), map(len, seqs))):
        np.testing.assert_array_equal(got, want[i, :n])
    assert {row["built"] for row in rows} == {1}
    assert len({row["pid"] for row in rows}) <= 2
    assert max(row["call"] for row in rows) > 1   # an actor served several batches
    assert {row["threads"] for row in rows} == {1}


def test_bad_arguments(cluster, ids_model):
    ds = ray.data.from_items([{"ids": np.arange(3, dtype=np.int32)}])
    with pytest.raises(TypeError, match="model: expected an rnnext.Model, got dict"):
        predict_dataset({}, ds, column="ids")
    with pytest.raises(ValueError, match=r"column: expected one of .*\['ids'\], got 'x'"):
        predict_dataset(ids_model, ds)
    with pytest.raises(ValueError, match="lengths_column: .* got 'n'"):
        predict_dataset(ids_model, ds, column="ids", lengths_column="n")
    batch = {"ids": np.array([np.arange(3), np.arange(2)], dtype=object)}
    with pytest.raises(ValueError, match="column: .* got 'x'"):
        Predictor(ids_model)(batch)
    batch["n"] = np.array([3, 2])
    with pytest.raises(ValueError, match="lengths_column: expected None for the ragged column"):
        Predictor(ids_model, column="ids", lengths_column="n")(batch)
    with pytest.raises(TypeError, match="model: expected an rnnext.Model, got str"):
        Predictor("model.rnx")


def test_rnnext_does_not_import_ray():
    result = run_python("import sys, rnnext, rnnext.engines; print('ray' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
