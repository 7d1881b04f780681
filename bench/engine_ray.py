"""Ray Data for bench_engines.py: rnnext.engines.ray.predict_dataset on a local Ray cluster."""
import os
import tempfile
import time

import numpy as np
import ray
import ray.data

from common import rnnext_root
from rnnext.engines.ray import predict_dataset


def score(model, ids, lengths, workers):
    """Starts a local Ray cluster of `workers` CPUs, scores the ragged rows ids[i, :lengths[i]]
    with predict_dataset on `workers` actors of one CPU each once to warm up, then times one
    further full pass; returns (predictions (B, F) in row order, seconds of the timed pass).

    Ray Data starts a fresh actor pool for every pass, so the timed pass includes starting the
    actors and fetching the model in each; the warm-up starts the cluster's worker processes."""
    omp = os.environ.pop("OMP_NUM_THREADS", None)   # else Ray leaves it to the actors as it is
    here = os.getcwd()
    os.chdir(tempfile.gettempdir())   # Ray puts the driver's working directory first on the
    try:                              # workers' path: not a checkout's uncompiled sources
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="warning",
                 runtime_env={"env_vars": {"PYTHONPATH": rnnext_root()}})
    finally:
        os.chdir(here)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"k": i, "ids": ids[i, :n]} for i, n in enumerate(lengths)],
                                 override_num_blocks=4 * workers).materialize()
        predict_dataset(model, ds, column="ids", concurrency=workers).materialize()
        start = time.perf_counter()
        rows = predict_dataset(model, ds, column="ids", concurrency=workers).take_all()
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        if omp is not None:
            os.environ["OMP_NUM_THREADS"] = omp
    rows.sort(key=lambda row: row["k"])
    return np.stack([row["prediction"] for row in rows]), seconds
