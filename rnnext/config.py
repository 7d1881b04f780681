"""Process-wide facts about the compiled core: threads and the build's configuration."""
import contextlib
import math
import os
import platform
import sys

import numpy as np

from . import _core

__version__ = "0.3.0"


# _OPENMP's values (yyyymm) and the versions of the specification they stand for
OPENMP_VERSIONS = {200805: "3.0", 201107: "3.1", 201307: "4.0", 201511: "4.5", 201811: "5.0",
                   202011: "5.1", 202111: "5.2", 202411: "6.0"}
_setting = None   # set_num_threads: the process-wide count, or None to follow the environment


def cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """The CPU quota of this process's cgroup in CPUs (quota / period; v2's cpu.max or v1's
    cfs_quota_us and cfs_period_us), or None where there is none."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        try:
            with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
                quota = f.read().strip()
            with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
                period = f.read().strip()
        except OSError:
            return None
    try:
        quota, period = int(quota), int(period)
    except ValueError:   # "max": no quota
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_count():
    """The CPUs this process may use now: its CPU affinity, capped by the cgroup's CPU quota
    rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit else cpus


def _omp_num_threads():
    """OMP_NUM_THREADS as it is now (its first level), or None where unset or not a positive
    count (OpenMP ignores those too)."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def get_num_threads():
    """The threads a call with n_threads=None would use now: 1 without OpenMP; else
    set_num_threads's count where set; else OMP_NUM_THREADS as it is now, or the CPUs this
    process may use (affinity and cgroup quota), whichever is smaller."""
    if not _core.has_openmp():
        return 1
    if _setting is not None:
        return _setting
    cpus = cpu_count()
    return min(_omp_num_threads() or cpus, cpus)


def _check_count(n_threads, what):
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"{what}: expected an int or None, got {type(n_threads).__name__}")
    n_threads = int(n_threads)
    if abs(n_threads) > _core.MAX_THREADS:   # the C core's limit (rnnext.h, RNX_MAX_THREADS)
        raise ValueError(f"{what}: expected at most {_core.MAX_THREADS} threads either way, got "
                         f"{n_threads}")
    if n_threads == 0:
        raise ValueError(f"{what}: expected None, a positive count or a negative count back "
                         "from the maximum, got 0")
    return n_threads


def resolve_threads(n_threads):
    """None: get_num_threads(); n >= 1: n; n < 0: counts back from the maximum (-1 all,
    -2 all but one, at least 1); 0 is an error."""
    if n_threads is None:
        return get_num_threads()
    n_threads = _check_count(n_threads, "n_threads")
    if n_threads < 0:
        return max(1, get_num_threads() + 1 + n_threads)
    return n_threads


def set_num_threads(n_threads):
    """Sets the threads of every later call with n_threads=None, process-wide: a positive count,
    or None to resolve from the environment again at each call."""
    global _setting
    if n_threads is not None:
        n_threads = _check_count(n_threads, "n_threads")
        if n_threads < 0:
            raise ValueError(f"n_threads: expected None or a positive count, got {n_threads}")
    _setting = n_threads


@contextlib.contextmanager
def threads(n_threads):
    """Within the block, calls with n_threads=None use n_threads (None: the environment's);
    the earlier setting comes back after it."""
    before = _setting
    set_num_threads(n_threads)
    try:
        yield
    finally:
        set_num_threads(before)


def last_call_threads():
    """The threads the last compiled forward pass on this OS thread ran on (0 before any): the
    share a call really got, which may be fewer than asked where the batch is too small to
    split."""
    return _core.last_team()


def _register_threadpoolctl():
    """threadpoolctl's `threadpool_limits(n, user_api="openmp")` reaches rnnext's setting, and
    `threadpool_info()` lists rnnext, when threadpoolctl (3.0 or newer) is installed."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register"):
        return

    class RnnextController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "rnnext"
        filename_prefixes = ("_core",)
        check_symbols = ("rnx_forward",)

        readings = {}   # count reported -> the setting that gave it

        def get_num_threads(self):
            count = get_num_threads()
            self.readings[count] = _setting
            return count

        def set_num_threads(self, num_threads):
            # threadpool_limits restores the count it read on entry: give back the setting that
            # gave it (None follows the environment again), not a count fixed from then on.
            set_num_threads(self.readings.get(num_threads, num_threads))

        def get_version(self):
            return __version__

    threadpoolctl.register(RnnextController)


def openmp_runtime():
    """The OpenMP runtime the core's threads come from: its file as the dynamic linker loaded it
    (a process may hold more than one runtime: PyTorch, for one, brings its own) and the OpenMP
    version the core was built for; None without OpenMP."""
    path, version = _core.openmp_runtime()
    if not version:
        return None
    spec = OPENMP_VERSIONS.get(version)
    return f"{path or 'unknown file'} (_OPENMP {version}" + (f": OpenMP {spec})" if spec else ")")


def config():
    """The build and run-time configuration as a dict."""
    isa = _core.default_isa()
    return {
        "version": __version__,
        "core_version": _core.version_number(),
        "openmp": _core.has_openmp(),
        "threads": get_num_threads(),
        "isa": isa if isa is not None else f"invalid RNNEXT_ISA={os.environ.get('RNNEXT_ISA')!r}",
        "isa_supported": [n for n in _core.ISAS if n != "auto" and _core.isa_supported(n)],
        "openmp_runtime": openmp_runtime(),
        "compiler": _core.compiler(),
        "build_flags": _core.build_flags(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def show_config(file=None):
    """Prints the version, OpenMP and threads, the chosen instruction set and the compiler."""
    for key, value in config().items():
        print(f"{key:>14}: {value}", file=file or sys.stdout)
