"""Dask for bench_engines.py: rnnext.engines.dask.predict_array on a local distributed cluster of
single-threaded worker processes."""
import os
import time

import dask.array as da
import distributed

from rnnext.engines.dask import predict_array


def score(model, ids, lengths, workers):
    """Starts a local cluster of `workers` worker processes of one core each (one thread per
    worker, OMP_NUM_THREADS=1 from the nanny), scores (ids (B, T) int32, lengths (B,)) through
    predict_array in one block of rows per worker once to warm up (workers started, rnnext
    imported, the model's key shipped), then times one further full pass, graph submission and
    transfers included; returns (predictions (B, F), seconds of the timed pass). Tears the
    cluster down, and restores os.environ, where the nannies wrote OMP_NUM_THREADS=1."""
    rows = -(-len(ids) // workers)
    y = predict_array(model, da.from_array(ids, chunks=(rows, -1)), lengths)
    saved = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None,
                                      scheduler_kwargs={"dashboard_address": ":0"}) as cluster, \
                distributed.Client(cluster) as client:
            client.compute(y).result()
            start = time.perf_counter()
            predictions = client.compute(y).result()
            seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return predictions, seconds
