"""Spark's part of bench_engines.py: scores token ids through rnnext.engines.spark.predict on a
local Spark of `workers` one-CPU task slots."""
import time

import numpy as np


def score(model, ids, lengths, workers):
    """Starts a local Spark (local[workers], spark.task.cpus 1), puts the sequences
    ids[i, :lengths[i]] in a cached DataFrame of `workers` partitions, scores them through
    rnnext.engines.spark.predict once to warm up (Python workers started, model broadcast), then
    times one further full pass (collect included); returns (predictions (B, F) in row order,
    seconds of the timed pass). Stops the session."""
    import pandas as pd
    from pyspark.sql import SparkSession

    from common import rnnext_root
    from rnnext.engines.spark import predict

    spark = (SparkSession.builder.master(f"local[{workers}]")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(workers))
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.executorEnv.PYTHONPATH", rnnext_root())   # workers import it
             .config("spark.executorEnv.PYTHONSAFEPATH", "1")   # not the working directory's
             .getOrCreate())
    try:
        rows = pd.DataFrame({"key": np.arange(len(ids)),
                             "ids": [ids[i, :n] for i, n in enumerate(lengths)]})
        df = spark.createDataFrame(rows, "key long, ids array<int>").repartition(workers).cache()
        df.count()
        scored = predict(model, df, "ids").select("key", "prediction")
        scored.collect()
        start = time.perf_counter()
        out = scored.collect()
        seconds = time.perf_counter() - start
    finally:
        spark.stop()
    predictions = np.empty((len(ids), model.output_size), dtype=np.float32)
    for row in out:
        predictions[row.key] = row.prediction
    return predictions, seconds
