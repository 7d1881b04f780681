"""rnnext.engines.dask on local distributed clusters: predict_array and predict_frame give what a
local Model.predict gives, the model travels in one key of the graph, and each worker runs on
its share of the cores, asserted inside the worker.

Workers import the rnnext these tests import: the `environ` fixture puts it on PYTHONPATH
in os.environ before any cluster starts, and the worker processes the nannies start inherit it.
It also restores os.environ afterwards: a nanny writes its pre-spawn-environ (OMP_NUM_THREADS=1
and others) into the process that runs it, which for a LocalCluster is this one.
"""
import os

import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")
cloudpickle = pytest.importorskip("cloudpickle")

import rnnext  # noqa: E402
from conftest import RNNEXT_ROOT, random_lengths  # noqa: E402
from rnnext import _core  # noqa: E402
from rnnext.engines import pad  # noqa: E402
from rnnext.engines.dask import predict_array, predict_frame  # noqa: E402

TIMEOUT = 120   # seconds for any one result: a hung worker fails the test instead of the run


def ids_readout():
    return rnnext.Model([rnnext.Embedding(50, 8), rnnext.LSTM(16), rnnext.Readout("last"),
                         rnnext.Dense(3, activation="softmax")], seed=0)


def features_sequence():
    return rnnext.Model([rnnext.GRU(16), rnnext.Dense(4)], input_size=6, seed=0)


MODELS = {"ids_readout": ids_readout, "features_sequence": features_sequence}


def inputs(model, rng, B, T):
    """A padded batch for the model: token ids (B, T) or features (B, T, 6)."""
    if model.input_size is None:
        return rng.integers(0, 50, (B, T)).astype(np.int32)
    return rng.standard_normal((B, T, model.input_size)).astype(np.float32)


def sequences_frame(seqs, npartitions):
    """A dask DataFrame of a key and an object column "seq" of seqs, kept objects (by default
    dask makes object columns strings)."""
    pdf = pd.DataFrame({"key": np.arange(len(seqs)), "seq": pd.Series(seqs, dtype=object)})
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(pdf, npartitions=npartitions)


def cluster(n_workers, **worker_kwargs):
    """A LocalCluster of single-threaded worker processes and its Client (closed on exit)."""
    local = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None,   # and its HTTP server on any port:
                                     scheduler_kwargs={"dashboard_address": ":0"},
                                     **worker_kwargs)
    return local, distributed.Client(local)


@pytest.fixture(scope="module")
def environ():
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (RNNEXT_ROOT, saved.get("PYTHONPATH")) if p)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def client(environ):
    local, c = cluster(2)
    with local, c:
        yield c


def probe(model):
    """In a worker's task: predict_array over a 16-row batch run on this task's OS thread (the
    synchronous scheduler), then rnnext's file, the team that forward pass really ran on,
    rnnext.get_num_threads() and OMP_NUM_THREADS."""
    predict_array(model, da.zeros((16, 5), dtype=np.int32, chunks=16)).compute(scheduler="sync")
    return (rnnext.__file__, rnnext.config.last_call_threads(), rnnext.get_num_threads(),
            os.environ.get("OMP_NUM_THREADS"))


def probe_workers(c):
    workers = sorted(c.scheduler_info()["workers"])
    futures = [c.submit(probe, ids_readout(), workers=[w], allow_other_workers=False, pure=False)
               for w in workers]
    return [f.result(timeout=TIMEOUT) for f in futures]


@pytest.mark.parametrize("lengths_kind", ["none", "numpy", "dask"])
@pytest.mark.parametrize("kind", MODELS)
def test_array_matches_local_predict(client, kind, lengths_kind, rng):
    model = MODELS[kind]()
    B, T = 37, 9
    x = inputs(model, rng, B, T)
    lengths = None if lengths_kind == "none" else random_lengths(rng, "mixed", B, T)
    given = {"none": None, "numpy": lengths, "dask": da.from_array(lengths, chunks=8)
             if lengths is not None else None}[lengths_kind]
    y = predict_array(model, da.from_array(x, chunks=(8, 4, 2)[:x.ndim]), given)
    tail = (T, 4) if model.per_step else (3,)
    assert (y.shape, y.dtype) == ((B,) + tail, np.float32)
    assert y.chunks == ((8, 8, 8, 8, 5),) + tuple((n,) for n in tail)
    np.testing.assert_array_equal(client.compute(y).result(timeout=TIMEOUT),
                                  model.predict(x, lengths=lengths))


@pytest.mark.parametrize("kind", MODELS)
def test_frame_matches_local_predict(client, kind, rng):
    model = MODELS[kind]()
    lengths = random_lengths(rng, "mixed", 24, 8)
    seqs = [inputs(model, rng, 1, n)[0] for n in lengths]
    df = sequences_frame(seqs, 4)
    df = df[df["key"] >= 6]   # the first partition is empty
    out = predict_frame(model, df, "seq", output_column="y")
    assert out.dtypes.to_dict() == {"key": np.int64, "seq": object, "y": object}
    got = client.compute(out).result(timeout=TIMEOUT)
    assert list(got.columns) == ["key", "seq", "y"] and got["y"].dtype == object
    assert list(got["key"]) == list(range(6, 24))
    x, kept = pad(seqs[6:])
    want = model.predict(x, lengths=kept)
    for i, n in enumerate(kept):
        np.testing.assert_array_equal(got["y"].iloc[i], want[i, :n] if model.per_step else want[i])


def models_pickled(task):
    """How many rnnext.Model objects pickling this graph entry writes."""
    found = []

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            if isinstance(obj, rnnext.Model):
                found.append(obj)
            return super().reducer_override(obj)

    Pickler(open(os.devnull, "wb")).dump(task)
    return len(found)


def assert_model_in_one_key(graph, predict_keys):
    """One entry of the graph holds the model, and every predicting task names that key."""
    holders = [key for key, task in graph.items() if models_pickled(task)]
    assert len(holders) == 1
    assert predict_keys and all(holders[0] in graph[k].dependencies for k in predict_keys)


def test_model_travels_in_one_key(rng):
    model = features_sequence()
    x = da.from_array(inputs(model, rng, 32, 5), chunks=8)
    y = predict_array(model, x, random_lengths(rng, "mixed", 32, 5))
    for graph in (y.__dask_graph__(), dask.optimize(y)[0].__dask_graph__()):
        graph = dict(graph)
        assert_model_in_one_key(graph, [k for k in graph if k[0] == y.name])
    out = predict_frame(model, sequences_frame(list(inputs(model, rng, 12, 5)), 3), "seq")
    assert_model_in_one_key(dict(out.__dask_graph__()), [k for k in out.__dask_keys__()])


def test_each_worker_runs_on_one_core(client):
    """The nanny's default pre-spawn-environ sets OMP_NUM_THREADS=1; n_threads=None follows."""
    assert probe_workers(client) == [(rnnext.__file__, 1, 1, "1")] * 2


@pytest.mark.skipif(not _core.has_openmp() or rnnext.config.cpu_count() < 2,
                    reason="needs an OpenMP build and 2 CPUs")
def test_worker_with_two_cores_share(environ, rng):
    """OMP_NUM_THREADS=2 in the worker's environment (the nanny's env) gives each task 2."""
    local, c = cluster(1, env={"OMP_NUM_THREADS": "2"})
    with local, c:
        assert probe_workers(c) == [(rnnext.__file__, 2, 2, "2")]
        model = ids_readout()
        x = inputs(model, rng, 40, 6)
        got = c.compute(predict_array(model, da.from_array(x, chunks=20))).result(timeout=TIMEOUT)
    np.testing.assert_array_equal(got, model.predict(x))


@pytest.mark.skipif(not _core.has_openmp(), reason="needs an OpenMP build")
def test_forked_worker_after_parent_threads(environ, rng):
    """Workers forked from this process after it ran 2 threads run on 2 with OMP_NUM_THREADS=2,
    and give the same results instead of hanging."""
    model = features_sequence()
    x = inputs(model, rng, 24, 7)
    want = model.predict(x, n_threads=2)
    assert rnnext.config.last_call_threads() == 2
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        local, c = cluster(1, env={"OMP_NUM_THREADS": "2"})
    with local, c:
        assert probe_workers(c) == [(rnnext.__file__, 2, 2, "2")]
        got = c.compute(predict_array(model, da.from_array(x, chunks=8))).result(timeout=TIMEOUT)
    np.testing.assert_array_equal(got, want)


def test_bad_arguments():
    ids, features = ids_readout(), features_sequence()
    x = da.zeros((10, 4), dtype=np.int32, chunks=5)
    with pytest.raises(TypeError, match="model: expected an rnnext.Model, got str"):
        predict_array("model", x)
    with pytest.raises(TypeError, match="x: expected a dask array, got ndarray"):
        predict_array(ids, np.zeros((10, 4), np.int32))
    with pytest.raises(ValueError, match=r"x: expected token ids \(B, T\) .*shape \(10, 4, 6\)"):
        predict_array(ids, da.zeros((10, 4, 6), chunks=5))
    for shape in [(10,), (10, 4), (10, 4, 6, 1), (10, 4, 5)]:
        with pytest.raises(ValueError, match=r"x: expected features \(B, T, 6\), got shape"):
            predict_array(features, da.zeros(shape, chunks=5))
    with pytest.raises(ValueError, match=r"lengths: expected shape \(10,\), got \(9,\)"):
        predict_array(ids, x, np.ones(9, np.int64))
    for lengths in [da.ones(10, dtype=np.int64, chunks=4), da.ones(9, dtype=np.int64, chunks=5)]:
        with pytest.raises(ValueError, match=r"lengths: expected a dask array with x's batch "
                                             r"chunks \(\(5, 5\),\)"):
            predict_array(ids, x, lengths)

    df = sequences_frame([np.ones(3, np.int32)] * 2, 1)
    with pytest.raises(TypeError, match="model: expected an rnnext.Model, got NoneType"):
        predict_frame(None, df, "seq")
    with pytest.raises(TypeError, match="df: expected a dask DataFrame, got DataFrame"):
        predict_frame(ids, df.compute(), "seq")
    with pytest.raises(ValueError, match=r"column: expected one of the columns "
                                         r"\['key', 'seq'\], got 'tokens'"):
        predict_frame(ids, df, "tokens")
    with dask.config.set({"dataframe.convert-string": True}):
        strings = dd.from_pandas(df.compute(), npartitions=1)
    with pytest.raises(ValueError, match="column: expected 'seq' to be an object column of "
                                         "arrays, got dtype string.*convert-string"):
        predict_frame(ids, strings, "seq")
