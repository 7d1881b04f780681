"""The rnnext command line: `rnnext demo`, `rnnext config`, `rnnext convert IN OUT`, `rnnext inspect
FILE`, `rnnext sentiment`, `rnnext charlm` (also `python -m rnnext ...`)."""
import argparse
import sys
import time

import numpy as np

from .config import config, show_config
from .file_commands import add_commands as add_file_commands
from .tasks.commands import add_task_commands
from .model import Model


def _best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def demo(args):
    """An embedded default: a 2-layer LSTM sentiment-style classifier (many-to-one, softmax) on a
    batch of random sequences of mixed lengths, on the compiled core and on the NumPy reference."""
    B, T, I, H = args.batch, args.steps, 32, args.hidden
    model = Model("lstm", I, H, num_layers=2, output_size=2, activation="softmax", seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B)
    print(f"rnnext demo: {model}")
    print(f"input: {B} sequences of up to {T} steps x {I} features, lengths {lengths.min()}..{T}\n")

    y_c = model.predict(x, lengths=lengths, backend="c")
    y_np = model.predict(x, lengths=lengths, backend="numpy")
    print("class probabilities, first 3 sequences (compiled | numpy):")
    for b in range(3):
        print(f"  {b}: {np.array2string(y_c[b], precision=5)} | "
              f"{np.array2string(y_np[b], precision=5)}")
    diff = float(np.max(np.abs(y_c - y_np)))
    print(f"largest difference compiled vs numpy: {diff:.2e}\n")

    t_c = _best_time(lambda: model.predict(x, lengths=lengths, backend="c"), 5)
    t_np = _best_time(lambda: model.predict(x, lengths=lengths, backend="numpy"), 2)
    flops = 2 * 4 * H * (I + H) * B * T + 2 * 4 * H * (H + H) * B * T
    print(f"compiled: {t_c * 1e3:8.2f} ms per batch ({flops / t_c / 1e9:6.1f} GFLOP/s)")
    print(f"numpy   : {t_np * 1e3:8.2f} ms per batch ({flops / t_np / 1e9:6.1f} GFLOP/s)")
    print(f"compiled is {t_np / t_c:.1f}x faster than the NumPy fallback (best of runs, "
          f"{config()['threads']} threads)\n")
    show_config()
    return 0 if diff < 1e-4 else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="rnnext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run an embedded default model on both backends")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.set_defaults(func=demo)
    sub.add_parser("config", help="print the build and run-time configuration").set_defaults(
        func=lambda args: show_config() or 0)
    add_file_commands(sub)
    add_task_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
