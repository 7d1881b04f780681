"""Process-wide facts about the compiled core: threads and the build's configuration."""
import os
import platform
import sys

import numpy as np

from . import _core

__version__ = "0.1.0"


def available_threads():
    """Threads a call uses by default: OpenMP's default (OMP_NUM_THREADS when set), capped by
    the CPUs this process may run on; 1 without OpenMP."""
    if not _core.has_openmp():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(_core.max_threads(), cpus))


def resolve_threads(n_threads):
    """None: available_threads(); n >= 1: n; n < 0: counts back from the maximum (-1 all,
    -2 all but one, at least 1); 0 is an error."""
    if n_threads is None:
        return available_threads()
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads: expected an int or None, got {type(n_threads).__name__}")
    n_threads = int(n_threads)
    if abs(n_threads) > 1 << 16:
        raise ValueError(f"n_threads: expected at most {1 << 16} threads either way, got "
                         f"{n_threads}")
    if n_threads == 0:
        raise ValueError("n_threads: expected None, a positive count or a negative count back "
                         "from the maximum, got 0")
    if n_threads < 0:
        return max(1, available_threads() + 1 + n_threads)
    return n_threads


def config():
    """The build and run-time configuration as a dict."""
    isa = _core.default_isa()
    return {
        "version": __version__,
        "core_version": _core.version_number(),
        "openmp": _core.has_openmp(),
        "threads": available_threads(),
        "isa": isa if isa is not None else f"invalid RNNEXT_ISA={os.environ.get('RNNEXT_ISA')!r}",
        "isa_supported": [n for n in ("scalar", "avx2", "avx512") if _core.isa_supported(n)],
        "compiler": _core.compiler(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def show_config(file=None):
    """Prints the version, OpenMP and threads, the chosen instruction set and the compiler."""
    for key, value in config().items():
        print(f"{key:>14}: {value}", file=file or sys.stdout)
