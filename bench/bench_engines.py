"""Scoring throughput on Dask, Ray and Spark against a local predict, side by side in one run.

    PYTHONPATH=. python bench/bench_engines.py                          # all engines, 1 and 2
    PYTHONPATH=. python bench/bench_engines.py --engines dask --workers 1 --rows 2000

The model: Embedding(5000, 64) -> LSTM(128) -> Readout("last") -> Dense(2, softmax), scoring
--rows sequences of token ids, of lengths drawn from [--steps / 5, --steps]. For each engine and
worker count: the engine's score() (bench/engine_<engine>.py: a local cluster of `workers`
worker processes of one core each, warmed up, then one timed full pass through rnnext's helper)
between two local predicts of the same padded batch with lengths on `workers` threads (each the
median of 3 calls; the figure is the mean of the two, so load from other users of the shared
cores lands on both sides alike). Throughput is sequences per second; the engine's overhead is
its time over the local time, minus 1. Every engine's predictions are checked equal to the local
ones before its figure is kept. Output: a Markdown report on stdout and in <out>/engines.md,
every number in <out>/engines.json.
"""
import argparse
import importlib
import os
import sys

import numpy as np

import rnnext
from common import machine_info, optional_import, time_call, write_report

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ENGINES = {"dask": "distributed", "ray": "ray", "spark": "pyspark"}   # engine: module it needs
VOCAB, EMBED, HIDDEN = 5000, 64, 128


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default=RESULTS)
    return p.parse_args(argv)


def local_seconds(model, ids, lengths, threads):
    model.predict(ids, lengths=lengths, n_threads=threads)
    return time_call(lambda: model.predict(ids, lengths=lengths, n_threads=threads), 0, 3, 3,
                     repeats=3)[0]


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    model = rnnext.Model([rnnext.Embedding(VOCAB, EMBED), rnnext.LSTM(HIDDEN),
                          rnnext.Readout("last"), rnnext.Dense(2, activation="softmax")], seed=0)
    lengths = rng.integers(max(1, args.steps // 5), args.steps + 1, args.rows).astype(np.int32)
    ids = rng.integers(1, VOCAB, (args.rows, args.steps)).astype(np.int32)
    ids[np.arange(args.steps) >= lengths[:, None]] = 0
    expected = model.predict(ids, lengths=lengths, n_threads=1)
    modules = {name: optional_import(module) for name, module in ENGINES.items()}
    rows = []
    for engine in args.engines:
        if modules[engine] is None:
            print(f"{engine}: {ENGINES[engine]} is not installed, skipped", file=sys.stderr)
            continue
        score = importlib.import_module(f"engine_{engine}").score
        for workers in args.workers:
            before = local_seconds(model, ids, lengths, workers)
            got, engine_s = score(model, ids, lengths, workers)
            after = local_seconds(model, ids, lengths, workers)
            np.testing.assert_array_equal(got, expected, err_msg=f"{engine}, {workers} workers")
            local_s = (before + after) / 2
            rows.append({"engine": engine, "workers": workers, "local_s": local_s,
                         "engine_s": engine_s, "local_seq_s": args.rows / local_s,
                         "engine_seq_s": args.rows / engine_s, "overhead": engine_s / local_s - 1})
    info = machine_info({**modules, "numpy": np, "threadpoolctl": optional_import("threadpoolctl")})
    lines = [f"# Scoring on engines: {info['cpu']}, {info['usable_cpus']} usable CPUs, load "
             f"{', '.join(f'{v:.2f}' for v in info['load_average'])} at the start",
             "",
             f"{args.rows} sequences of {lengths.min()}..{lengths.max()} token ids, "
             f"Embedding({VOCAB}, {EMBED}) -> LSTM({HIDDEN}) -> last -> Dense(2, softmax). Local: "
             "Model.predict on `workers` threads in this process. Engine: a local cluster of "
             "`workers` one-core worker processes through rnnext.engines.",
             "",
             "| engine | workers | local s | engine s | local seq/s | engine seq/s | overhead |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['engine']} | {r['workers']} | {r['local_s']:.3f} | {r['engine_s']:.3f} | "
              f"{r['local_seq_s']:.0f} | {r['engine_seq_s']:.0f} | {r['overhead']:+.0%} |"
              for r in rows]
    write_report(args.out, "engines", "\n".join(lines) + "\n",
                 {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
