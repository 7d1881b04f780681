"""The machine's matrix-product peaks: GFLOP/s of a 2048x2048 @ 2048x2048 product in float32 and,
with torch, in bfloat16 (torch.mm, the peak that bf16 paths such as torch's autocast reach).

    python bench/peak.py 1 2        # one JSON object on stdout: {"1": {...}, "2": {...}}

The thread count is set with threadpoolctl on NumPy's BLAS when threadpoolctl is importable, else
with torch.set_num_threads on torch.mm; the record says which, and for NumPy which BLAS kernel
ran. Each thread count's record holds the bf16 one under "bf16" (an "error" there without
torch). bench_forward.py runs this in a child process without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, which OpenBLAS reads only when it loads and which can select a slower kernel.
"""
import json
import sys
import time

import numpy as np

from common import blas_kernels, optional_import

N = 2048
REPEATS = 3


def best_rate(matmul):
    """GFLOP/s of the fastest of REPEATS calls of matmul() (after one warm-up call): a peak is
    the best the machine reaches, so the fastest run is the figure, not the median."""
    matmul()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
    return 2.0 * N ** 3 / best / 1e9


def numpy_peak(threads, threadpoolctl):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    out = np.empty((N, N), np.float32)
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        gflops = best_rate(lambda: np.matmul(a, b, out=out))
        blas = blas_kernels(threadpoolctl)
    return {"gflops": gflops, "threads": threads, "library": "numpy", "blas": blas,
            "method": f"numpy float32 {N}x{N} @ {N}x{N}, threads set by threadpoolctl, "
                      f"best of {REPEATS}"}


def torch_peak(threads, torch, dtype):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(N, N, generator=gen).to(dtype)
    b = torch.randn(N, N, generator=gen).to(dtype)
    out = torch.empty(N, N, dtype=dtype)
    with torch.inference_mode():
        gflops = best_rate(lambda: torch.mm(a, b, out=out))
    return {"gflops": gflops, "threads": threads, "library": f"torch {torch.__version__}",
            "blas": [], "method": f"torch.mm {str(dtype).split('.')[-1]} {N}x{N} @ {N}x{N}, "
                                  f"threads set by torch.set_num_threads, best of {REPEATS}"}


def main(argv):
    thread_counts = [int(a) for a in argv] or [1]
    threadpoolctl = optional_import("threadpoolctl")
    torch = optional_import("torch")
    if threadpoolctl is not None:
        peaks = {k: numpy_peak(k, threadpoolctl) for k in thread_counts}
    else:
        peaks = {k: torch_peak(k, torch, torch.float32) for k in thread_counts}
    for k, record in peaks.items():
        record["bf16"] = {"error": "torch not importable"} if torch is None else \
            torch_peak(k, torch, torch.bfloat16)
    json.dump(peaks, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
