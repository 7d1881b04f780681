"""The machine's matrix-product peaks: GFLOP/s of a 2048x2048 @ 2048x2048 product in float32 and,
with torch, in bfloat16 (torch.mm, the peak that bf16 paths such as torch's autocast reach) and in
int8 (torch._int_mm, int8 @ int8 summed in int32 by oneDNN: VNNI or AMX where the CPU has them;
an integer multiply-add counts as 2 operations, as a float one).

    python bench/peak.py 1 2        # one JSON object on stdout: {"1": {...}, "2": {...}}

The thread count is set with threadpoolctl on NumPy's BLAS when threadpoolctl is importable, else
with torch.set_num_threads on torch.mm; the record says which, and for NumPy which BLAS kernel
ran. Each thread count's record holds the bf16 and int8 ones under "bf16" and "int8" (an "error"
there without torch, or for int8 without torch._int_mm). bench_forward.py runs this in a child
process without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which OpenBLAS reads only when it loads
and which can select a slower kernel.
"""
import json
import sys
import time

import numpy as np

from common import blas_kernels, optional_import

N = 2048
REPEATS = 3
TORCH_DTYPES = {"bf16": "bfloat16", "int8": "int8"}


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
    """The peak of torch.mm at a float dtype, or of torch._int_mm at torch.int8."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        a, b = (torch.randint(-127, 128, (N, N), generator=gen, dtype=dtype) for _ in "ab")
        name, product = "torch._int_mm", torch._int_mm
    else:
        a, b = (torch.randn(N, N, generator=gen).to(dtype) for _ in "ab")
        out = torch.empty(N, N, dtype=dtype)
        name, product = "torch.mm", lambda a, b: torch.mm(a, b, out=out)
    with torch.inference_mode():
        gflops = best_rate(lambda: product(a, b))
    return {"gflops": gflops, "threads": threads, "library": f"torch {torch.__version__}",
            "blas": [], "method": f"{name} {str(dtype).split('.')[-1]} {N}x{N} @ {N}x{N}, "
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
        for precision in ("bf16", "int8"):
            if torch is None:
                record[precision] = {"error": "torch not importable"}
            elif precision == "int8" and not hasattr(torch, "_int_mm"):
                record[precision] = {"error": f"torch {torch.__version__} has no _int_mm"}
            else:
                record[precision] = torch_peak(k, torch, getattr(torch, TORCH_DTYPES[precision]))
    json.dump(peaks, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
