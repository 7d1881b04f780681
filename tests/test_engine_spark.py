"""rnnext.engines.spark on a local Spark (local[2]): predictions equal a local Model.predict on
the same sequences, for both input kinds and both output kinds, ragged, over several partitions;
each task scores on spark.task.cpus threads, read from inside the worker; bad input is refused.

The Python workers import the rnnext these tests import, through spark.executorEnv.PYTHONPATH."""
import concurrent.futures
import os
import shutil
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
    pytest.skip("Spark needs Java: no JAVA_HOME and no java on PATH", allow_module_level=True)

import pandas as pd  # noqa: E402
from pyspark.errors import PySparkAttributeError  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402

import rnnext  # noqa: E402
from rnnext.engines import pad  # noqa: E402
from rnnext.engines import spark as engine  # noqa: E402
from conftest import RNNEXT_ROOT  # noqa: E402

MODELS = {
    "ids_readout": lambda seed=0: rnnext.Model(
        [rnnext.Embedding(50, 8), rnnext.LSTM(16), rnnext.Readout("last"),
         rnnext.Dense(3, activation="softmax")], seed=seed),
    "ids_sequence": lambda seed=0: rnnext.Model(
        [rnnext.Embedding(50, 8), rnnext.GRU(12)], seed=seed),
    "features_readout": lambda seed=0: rnnext.Model(
        [rnnext.LSTM(16), rnnext.Readout("last"), rnnext.Dense(2)], input_size=6, seed=seed),
    "features_sequence": lambda seed=0: rnnext.Model(
        [rnnext.GRU(16), rnnext.Dense(4)], input_size=6, seed=seed),
}


@pytest.fixture(scope="module")
def session():
    """session(task_cpus): the module's live SparkSession, local[2] with spark.task.cpus =
    task_cpus. A JVM holds one SparkContext at a time, so asking for another count stops the
    live one and starts its successor in the same JVM. Stopped at teardown."""
    live = {}

    def get(task_cpus):
        if live.get("task_cpus") != task_cpus:
            if live:
                live["spark"].stop()
            live["task_cpus"] = task_cpus
            live["spark"] = (
                SparkSession.builder.master("local[2]")
                .config("spark.ui.enabled", "false")
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.task.cpus", str(task_cpus))
                .config("spark.executorEnv.PYTHONPATH", RNNEXT_ROOT)
                # python -m pyspark.daemon would put its working directory, the checkout where
                # pytest runs, before PYTHONPATH: the uncompiled sources in CI
                .config("spark.executorEnv.PYTHONSAFEPATH", "1")
                # the other count: a helper that followed OMP_NUM_THREADS would show it
                .config("spark.executorEnv.OMP_NUM_THREADS", str(3 - task_cpus))
                .getOrCreate())
        return live["spark"]

    yield get
    if live:
        live["spark"].stop()


@pytest.fixture
def spark(session):
    return session(1)


def sequences(kind, rows, seed=0):
    """Ragged sequences for a model of `kind` (ids_* or features_*): lengths 1 to 9, the first
    9 and the last 1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, size=rows)
    lengths[0], lengths[-1] = 9, 1
    if kind.startswith("ids"):
        return [rng.integers(0, 50, size=n).astype(np.int32) for n in lengths]
    return [rng.standard_normal((n, 6)).astype(np.float32) for n in lengths]


def frame(spark, seqs, spark_type, partitions=4):
    """A DataFrame of (key, seq) with seq of spark_type, in `partitions` partitions."""
    data = [(k, s.tolist()) for k, s in enumerate(seqs)]
    return spark.createDataFrame(data, f"key long, seq {spark_type}").repartition(partitions)


def collect(df, timeout=120):
    """df.collect(), failing within `timeout` seconds (its jobs cancelled) should a worker
    hang, rather than hanging the run."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        job = pool.submit(df.collect)
        try:
            return job.result(timeout)
        except concurrent.futures.TimeoutError:
            df.sparkSession.sparkContext.cancelAllJobs()
            raise


def assert_predicted(rows, model, seqs, output_column="prediction"):
    """rows (collected) hold each sequence unchanged and its prediction equal to a local
    Model.predict of all the sequences as one padded batch."""
    x, lengths = pad(seqs)
    want = model.predict(x, lengths=lengths)
    rows = sorted(rows, key=lambda r: r.key)
    assert [r.key for r in rows] == list(range(len(seqs)))
    for r, s, n, w in zip(rows, seqs, lengths, want):
        np.testing.assert_array_equal(np.array(r.seq, dtype=s.dtype), s)
        got = np.array(r[output_column], dtype=np.float32)
        np.testing.assert_array_equal(got, w[:n] if model.per_step else w)


@pytest.mark.parametrize("kind, spark_type", [
    ("ids_readout", "array<int>"),
    ("ids_sequence", "array<bigint>"),
    ("features_readout", "array<array<double>>"),
    ("features_sequence", "array<array<float>>"),
])
def test_predictions_equal_local_predict(spark, kind, spark_type):
    model = MODELS[kind]()
    seqs = sequences(kind, 40)
    df = frame(spark, seqs, spark_type)
    assert df.rdd.getNumPartitions() == 4
    out = engine.predict(model, df, "seq", output_column="y")
    assert out.columns == ["key", "seq", "y"]
    assert out.schema["y"].dataType.simpleString() == (
        "array<array<float>>" if model.per_step else "array<float>")
    assert_predicted(collect(out), model, seqs, "y")


def test_reused_workers_score_job_after_job(spark):
    """Three jobs on the same (reused) Python workers, each with its own model: none hangs and
    none scores with an earlier job's model."""
    assert spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"
    seqs = sequences("ids_readout", 24, seed=1)
    df = frame(spark, seqs, "array<int>", partitions=2)
    for seed in range(3):
        model = MODELS["ids_readout"](seed)
        assert_predicted(collect(engine.predict(model, df, "seq")), model, seqs)


def test_refuses_bad_input(spark):
    ids_model, features_model = MODELS["ids_readout"](), MODELS["features_sequence"]()
    df = spark.createDataFrame([(0, [1, 2], [[0.5] * 6], "a")],
                               "key long, ids array<int>, x array<array<double>>, s string")
    with pytest.raises(TypeError, match="model: expected an rnnext.Model, got str"):
        engine.predict("model.rnx", df, "ids")
    with pytest.raises(TypeError, match="df: expected a Spark DataFrame, got DataFrame"):
        engine.predict(ids_model, pd.DataFrame({"ids": [[1, 2]]}), "ids")
    with pytest.raises(ValueError, match=r"column: expected one of the columns "
                                         r"\['key', 'ids', 'x', 's'\], "
                                         "got 'tokens'"):
        engine.predict(ids_model, df, "tokens")
    with pytest.raises(ValueError, match="output_column: .* got 'key'"):
        engine.predict(ids_model, df, "ids", output_column="key")
    with pytest.raises(TypeError, match=r"expected array<int> or array<bigint> of token ids .* "
                                        r"got column 'x' of type array<array<double>>"):
        engine.predict(ids_model, df, "x")
    with pytest.raises(TypeError, match=r"expected array<array<float>> or array<array<double>> "
                                        r"of 6 features .* got column 'ids' of type array<int>"):
        engine.predict(features_model, df, "ids")
    with pytest.raises(TypeError, match="got column 's' of type string"):
        engine.predict(features_model, df, "s")


def test_refuses_spark_connect():
    """A Spark Connect DataFrame is refused for want of a SparkContext. Spark Connect needs
    grpcio, not installed with the spark extra, so its session is stood in for: like
    pyspark.sql.connect.session.SparkSession (pyspark 4.x), it raises PySparkAttributeError
    for sparkContext."""
    class ConnectSession:
        @property
        def sparkContext(self):
            raise PySparkAttributeError(errorClass="JVM_ATTRIBUTE_NOT_SUPPORTED",
                                        messageParameters={"attr_name": "sparkContext"})

    df = mock.Mock(spec=DataFrame, sparkSession=ConnectSession())
    with pytest.raises(TypeError, match="df: .* Spark Connect session, which has no "
                                        "SparkContext"):
        engine.predict(MODELS["ids_readout"](), df, "seq")


# last in the module: the count 2 restarts the session
@pytest.mark.parametrize("task_cpus", [1, 2])
def test_task_scores_on_its_cpus(session, task_cpus):
    """From inside the worker, on the OS thread that ran the helper's predict: the team the
    core ran on is spark.task.cpus, not the executors' OMP_NUM_THREADS (set to the other
    count). Batches of 16+ rows, so that the core splits them over every thread asked for."""
    spark = session(task_cpus)
    seqs = sequences("ids_readout", 64, seed=2)
    df = frame(spark, seqs, "array<int>", partitions=2)
    score = engine._scorer(spark.sparkContext.broadcast(MODELS["ids_readout"]()), "seq", "y")

    def probe(batches):
        for out in score(batches):
            yield pd.DataFrame({"rows": [len(out)],
                                "threads": [rnnext.config.last_call_threads()],
                                "omp": [os.environ.get("OMP_NUM_THREADS")],
                                "rnnext": [rnnext.__file__]})

    rows = collect(df.mapInPandas(probe, "rows long, threads long, omp string, rnnext string"))
    assert sum(r.rows for r in rows) == 64 and min(r.rows for r in rows) >= 16
    assert {r.rnnext for r in rows} == {rnnext.__file__}
    assert {r.omp for r in rows} == {str(3 - task_cpus)}
    assert {r.threads for r in rows} == {task_cpus}
