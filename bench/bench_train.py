"""Training-step timings side by side, in one run: rnnext compiled, PyTorch CPU and the rnnext
NumPy fallback, on the same weights, input and targets.

    PYTHONPATH=. python bench/bench_train.py                      # the issue's grid (about 2 min)
    PYTHONPATH=. python bench/bench_train.py --cells lstm --points 64x256 --repeats 5

A training step is the forward pass, the backward pass and an SGD update of a one-layer,
one-direction cell with a dense head on the last step (many-to-one, 2 classes), softmax
cross-entropy on class targets: for torch, zero_grad + forward + loss.backward() + opt.step();
for rnnext, Model.loss_and_grads + Model.apply_grads (the compiled path packs the updated
weights again each step, and that is timed too). x is (B, T, I).

Before timing, rnnext's loss and gradients (both backends) are checked against torch autograd's
on the same weights. Timing runs in rounds, each with a block of steps per backend, so that a
change of load on the machine hits all of them alike; each figure is the best step, in ms.
"""
import argparse
import sys
import time

import numpy as np

import rnnext
from rnnext.cells import dense_param_name
from rnnext.optim import SGD

CELLS = ("lstm", "gru", "rnn")
TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
DEFAULT_POINTS = ("1x128", "64x256")
LR = 0.01


def point(text):
    try:
        B, H = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BxH such as 64x256, got {text!r}") from None
    if B < 1 or H < 1:
        raise argparse.ArgumentTypeError(f"expected positive B and H, got {text!r}")
    return B, H


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    p.add_argument("--points", nargs="+", type=point, default=[point(t) for t in DEFAULT_POINTS],
                   help="BxH pairs (default: 1x128 64x256)")
    p.add_argument("--steps", type=int, default=100, help="T (default 100)")
    p.add_argument("--input-size", type=int, default=64, help="I (default 64)")
    p.add_argument("--threads", type=int, default=2, help="threads for rnnext and torch (2)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed steps per backend in each of 3 rounds (5)")
    p.add_argument("--numpy-seconds", type=float, default=3.0,
                   help="time budget per point for the NumPy fallback (at least one step)")
    return p.parse_args(argv)


def make_point(torch, cell, B, H, T, I, seed):
    torch.manual_seed(seed)
    module = getattr(torch.nn, TORCH_CLASSES[cell])(I, H, batch_first=True)
    head = torch.nn.Linear(H, 2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y = rng.integers(0, 2, size=B)
    return module, head, x, y


def torch_step_fn(torch, module, head, x, y):
    opt = torch.optim.SGD(list(module.parameters()) + list(head.parameters()), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        out, _ = module(xt)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def rnnext_step_fn(model, x, y, threads):
    opt = SGD(lr=LR)

    def step():
        loss, grads = model.loss_and_grads(x, y, n_threads=threads)
        model.apply_grads(grads, opt)
        return loss

    return step


def check_gradients(torch, module, head, x, y, backend, threads):
    """rnnext's loss and gradients against torch autograd's, before any update."""
    model = rnnext.from_torch(module, head=head, output="many_to_one", backend=backend)
    loss, grads = model.loss_and_grads(x, y, n_threads=threads)
    module.zero_grad()
    head.zero_grad()
    out, _ = module(torch.from_numpy(x))
    ref = torch.nn.functional.cross_entropy(head(out[:, -1]), torch.from_numpy(y))
    ref.backward()
    named = dict(module.named_parameters())
    named.update({dense_param_name(k, 0): v for k, v in head.named_parameters()})
    worst = max(float(np.abs(grads[k] - v.grad.numpy()).max() /
                      (np.abs(v.grad.numpy()).max() + 1e-6)) for k, v in named.items())
    if abs(loss - ref.item()) > 1e-4 or worst > 1e-3:
        raise SystemExit(f"{backend} gradients disagree with torch: loss {loss} vs "
                         f"{ref.item()}, worst relative gradient error {worst:.2e}")
    return worst


def best_of(fns, repeats, rounds=3):
    """The best time (s) of each step function: `rounds` rounds, in each one block of `repeats`
    steps per function after one untimed step. Blocks rather than alternate steps, because a
    library's threads keep spinning for a while after its step and would slow the next one."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            fn()
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    T, I = args.steps, args.input_size
    print(f"rnnext {rnnext.__version__} (isa {rnnext.config.config()['isa']}), torch "
          f"{torch.__version__}, numpy {np.__version__}; {args.threads} threads; T={T}, I={I}; "
          f"many-to-one cross-entropy, SGD; best of 3 x {args.repeats} steps (NumPy: within "
          f"{args.numpy_seconds:g} s)\n")
    print("| cell | B | H | rnnext ms | torch ms | numpy ms | vs torch | vs numpy |")
    print("|---|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for B, H in args.points:
            module, head, x, y = make_point(torch, cell, B, H, T, I, seed=0)
            check_gradients(torch, module, head, x, y, "c", args.threads)
            model = rnnext.from_torch(module, head=head, output="many_to_one")
            fns = [rnnext_step_fn(model, x, y, args.threads),
                   torch_step_fn(torch, module, head, x, y)]
            t_c, t_torch = best_of(fns, args.repeats)

            check_gradients(torch, module, head, x, y, "numpy", args.threads)
            slow = rnnext_step_fn(rnnext.from_torch(module, head=head, output="many_to_one",
                                                    backend="numpy"), x, y, args.threads)
            t_np, spent = float("inf"), 0.0
            while spent == 0.0 or spent < args.numpy_seconds and spent < t_np * 50:
                start = time.perf_counter()
                slow()
                elapsed = time.perf_counter() - start
                t_np, spent = min(t_np, elapsed), spent + elapsed
            print(f"| {cell} | {B} | {H} | {t_c * 1e3:.2f} | {t_torch * 1e3:.2f} | "
                  f"{t_np * 1e3:.1f} | {t_torch / t_c:.2f}x | {t_np / t_c:.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
