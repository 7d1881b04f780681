"""What folding the embedding into the first layer's input product saves (rnx_model_create
precomputes each token's projection, bias included, when V*G*H*D <= 2^24 floats).

    PYTHONPATH=. python bench/bench_fold.py [--threads 1]

Each point times, in one run and interleaved, the same weights twice through the C core:
folded, an [Embedding, recurrent] model fed token ids (a row copy per token), and unfolded, the
recurrent layer alone fed the looked-up vectors E[ids] (the lookup done beforehand, outside the
timing: what the unfolded embedding path costs inside C, a product over E inputs per step).
Both outputs are checked bitwise equal before timing. Times are medians; the ratio is the figure.
"""
import argparse

import numpy as np

from common import cpu_model, time_call
from rnnext import _core

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
# (cell, V, E, H, direction, B, T)
POINTS = [("lstm", 5000, 64, 128, "forward", 32, 100),
          ("lstm", 5000, 256, 64, "forward", 32, 100),
          ("gru", 20000, 128, 64, "bidirectional", 16, 100),
          ("gru", 2000, 300, 128, "forward", 1, 200),
          ("rnn_tanh", 10000, 128, 128, "forward", 64, 50)]


def run_point(cell, V, E, H, direction, B, T, threads, rng):
    rec = dict(kind="recurrent", cell=cell, input_size=E, units=H, direction=direction)
    D = 2 if direction == "bidirectional" else 1
    G = GATES[cell]
    emb = rng.standard_normal((V, E)).astype(np.float32)
    body = rng.uniform(-0.1, 0.1, _core.param_count([rec])).astype(np.float32)
    folded = _core.CoreModel([dict(kind="embedding", input_size=V, units=E), rec],
                             np.concatenate([emb.ravel(), body]))
    plain = _core.CoreModel([rec], body)
    assert folded.info["folded"]
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    x = emb[ids]
    y_f = np.empty((B, T, D * H), np.float32)
    y_p = np.empty_like(y_f)
    run_f = lambda: folded.forward(y_f, None, None, None, ids, None, None, None, None, threads)
    run_p = lambda: plain.forward(y_p, None, None, x, None, None, None, None, None, threads)
    run_f(), run_p()
    assert np.array_equal(y_f, y_p), "folded and unfolded outputs differ"
    times_f, times_p = [], []
    for _ in range(5):  # interleaved, so that a noisy neighbour hits both
        times_f.append(time_call(run_f, 0.3, 3, 1000)[0])
        times_p.append(time_call(run_p, 0.3, 3, 1000)[0])
    tf, tp = np.median(times_f), np.median(times_p)
    fold_mb = V * G * H * D * 4 / 2 ** 20
    print(f"| {cell} | {V} | {E} | {H} | {D} | {B} | {T} | {fold_mb:.1f} | {tp * 1e3:.2f} | "
          f"{tf * 1e3:.2f} | {tp / tf:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_model()}; kernels {_core.default_isa()}; {args.threads} thread(s)\n")
    print("| cell | V | E | H | D | B | T | fold MB | unfolded ms | folded ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for point in POINTS:
        run_point(*point, args.threads, rng)


if __name__ == "__main__":
    main()
