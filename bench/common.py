"""Helpers shared by the benchmarks: optional imports, timing, the machine's description, the
matrix-product peaks (measured by peak.py in a child process) and one core's read bandwidth
(cache_bandwidth.c)."""
import datetime
import gc
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PEAK_SCRIPT = os.path.join(BENCH, "peak.py")
BANDWIDTH_SOURCE = os.path.join(BENCH, "cache_bandwidth.c")
# OpenBLAS reads these when it loads; set, they can select a slower kernel than the CPU allows,
# so the peak is measured in a child process without them.
OPENBLAS_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ENV_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "RNNEXT_ISA") + OPENBLAS_KERNEL_VARS


def rnnext_root():
    """The directory holding the rnnext this process imports: worker processes of an engine put
    it first on their path."""
    import rnnext

    return os.path.dirname(os.path.dirname(os.path.abspath(rnnext.__file__)))


def optional_import(name):
    """The module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def time_call(fn, target_s, min_repeats, max_repeats, repeats=None):
    """(median seconds per call, number of timed calls) of fn, which the caller has warmed up.

    Exactly `repeats` calls when given; else the first call's time sets the count so that the
    calls take about target_s together, within [min_repeats, max_repeats]. The garbage
    collector is off while timing so that a collection does not land in one backend's samples.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        samples = [time.perf_counter() - start]
        if repeats is None:
            repeats = int(min(max_repeats, max(min_repeats, round(target_s / samples[0]))))
        for _ in range(repeats - 1):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return statistics.median(samples), len(samples)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(modules):
    """Where and when the run happened: CPU, cores, load, versions of `modules` ({name: module
    or None}), the rnnext build and the environment variables that change the timings."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import rnnext.config

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
        "rnnext": rnnext.config.config(),
        "versions": {name: (getattr(m, "__version__", "?") if m is not None else None)
                     for name, m in modules.items()},
        "env": {name: os.environ.get(name) for name in ENV_VARS},
        "numpy_blas": blas_kernels(modules.get("threadpoolctl")),
    }


def blas_kernels(threadpoolctl):
    """What threadpoolctl says of the BLAS libraries loaded in this process (the NumPy
    fallback's kernel, which OPENBLAS_CORETYPE changes); [] without threadpoolctl."""
    if threadpoolctl is None:
        return []
    return [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]


def measure_peak(thread_counts):
    """{threads: record} from peak.py, run without the OpenBLAS kernel variables; the record
    holds gflops, the library and, for NumPy, the BLAS kernel threadpoolctl reports. On
    failure, {"error": text} instead."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_KERNEL_VARS}
    proc = subprocess.run([sys.executable, PEAK_SCRIPT] + [str(k) for k in thread_counts],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                else f"peak.py exited with {proc.returncode}"}
    return {int(k): v for k, v in json.loads(proc.stdout).items()}


def measure_cache_bandwidth():
    """{buffer KB: GB/s} of one core's reads (cache_bandwidth.c, built with the C compiler in CC
    or cc, -O2 -mavx512f); on failure, {"error": text} instead."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return {"error": f"no C compiler ({compiler})"}
    with tempfile.TemporaryDirectory() as folder:
        program = os.path.join(folder, "cache_bandwidth")
        for command in ([compiler, "-O2", "-mavx512f", BANDWIDTH_SOURCE, "-o", program],
                        [program]):
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                return {"error": f"{os.path.basename(command[0])} exited with {proc.returncode}"}
    return {int(kb): float(gbs)
            for kb, gbs in re.findall(r"^\s*(\d+) KB:\s*([\d.]+) GB/s$", proc.stdout, re.M)}


def write_report(out, name, text, report):
    """Prints the Markdown report and writes it to <out>/<name>.md, every number to
    <out>/<name>.json."""
    print(text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
