"""Streaming latency against RTNeural: one LSTM or GRU layer at batch 1, one step per call, in ns
per step, rnnext's C API stream (fp32, and bf16 and int8 weights) and RTNeural's compile-time
Eigen layers (fp32) side by side in one run.

    python bench/bench_rtneural.py [--rtneural PATH] [--sizes 1x32 16x64 64x256]
                                   [--precisions fp32 bf16 int8]

RTNeural is header-only C++: point --rtneural at a checkout (default: $RTNEURAL_DIR, else a
checkout named RTNeural or rtneural beside this repository). Eigen comes from its modules/Eigen
submodule, else /usr/include/eigen3 (Debian: apt-get install libeigen3-dev), or --eigen.

The script builds rnnext's static library with csrc/Makefile (its usual flags, no -march=native:
the kernels are chosen at run time from CPUID) and bench/rtneural_stream.cpp with RTNeural's
LSTMLayerT / GRULayerT (Eigen backend, -O3 -march=native, the sizes fixed at compile time), then
runs it. rnnext's stream runs in fp32 and at each reduced precision of --precisions
(rnx_model_create_precision: bf16 = weights and each product's inputs rounded to bfloat16,
float32 sums; int8 = per-row symmetric int8 weights, dynamically quantized uint8 inputs, exact
int32 sums). On the same random weights (PyTorch's layout and initialisation, permuted into
RTNeural's Keras gate order) and the same inputs, rnnext's fp32 must agree with RTNeural within
1e-5 at every one of --check-steps steps before anything is timed, and bf16 and int8 within
anchors.REDUCED_PRECISION_BOUND (5e-2: beyond it the path is broken, not rounded); the report
gives each one's max abs diff. Timing interleaves the engines run by run (the order rotating) in
blocks of --repeats runs each; each figure is the median over blocks of each block's median run.
A ratio is RTNeural's ns / rnnext's ns: above 1, rnnext's step is faster. RTNeural runs fp32
only, so only the first ratio compares the same precision. Writes bench/results/rtneural.md and
.json (or --out, --name).
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

from anchors import PRECISIONS, REDUCED_PRECISION_BOUND
from common import cpu_model, write_report

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
SOURCE = os.path.join(BENCH, "rtneural_stream.cpp")
DEFAULT_SIZES = ("1x32", "16x64", "64x256")
# what each reduced precision of rnnext's weights does, for the report
PRECISION_NOTES = {"bf16": "weights and each product's inputs rounded to bfloat16, float32 sums",
                   "int8": "per-row symmetric int8 weights, dynamically quantized uint8 inputs, "
                           "exact int32 sums"}
SYSTEM_EIGEN = "/usr/include/eigen3"
# the CPU flags that decide what -march=native gives Eigen and which kernels rnnext picks
SIMD_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
              "amx_int8")
# RTNEURAL_DEFAULT_ALIGNMENT=32 is what RTNeural's CMake option RTNEURAL_USE_AVX sets. Its
# fixed-size weights at 64->256 (1.3 MB) pass Eigen's 128 KB limit on fixed-size objects, which
# is lifted (the program allocates the layers on the heap).
RTNEURAL_FLAGS = ["-O3", "-march=native", "-std=c++17", "-DRTNEURAL_USE_EIGEN=1",
                  "-DRTNEURAL_DEFAULT_ALIGNMENT=32", "-DEIGEN_STACK_ALLOCATION_LIMIT=0"]


def size(text):
    match = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected IxH with positive I and H such as 16x64, "
                                         f"got {text!r}")
    return int(match[1]), int(match[2])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtneural", help="an RTNeural checkout (default: $RTNEURAL_DIR, else "
                   "RTNeural or rtneural beside this repository)")
    p.add_argument("--eigen", help="Eigen's include directory (default: the checkout's "
                   f"modules/Eigen, else {SYSTEM_EIGEN})")
    p.add_argument("--sizes", nargs="+", type=size, default=[size(t) for t in DEFAULT_SIZES],
                   metavar="IxH", help="input x hidden sizes (default: %(default)s)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="rnnext's precisions to time; fp32 is always timed (default: all)")
    p.add_argument("--blocks", type=int, default=31, help="interleaved blocks (31)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per engine a block (7)")
    p.add_argument("--steps", type=int, default=256, help="steps per timed run (256)")
    p.add_argument("--check-steps", type=int, default=1000,
                   help="steps compared before timing (1000)")
    p.add_argument("--build", default=os.path.join(BENCH, "build", "rtneural"),
                   help="build directory (default bench/build/rtneural)")
    p.add_argument("--out", default=os.path.join(BENCH, "results"),
                   help="where the report goes (default bench/results)")
    p.add_argument("--name", default="rtneural", help="report file name (default rtneural)")
    args = p.parse_args(argv)
    for name in ("blocks", "repeats", "steps", "check_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive count, "
                    f"got {getattr(args, name)}")
    return args


def timed_precisions(asked):
    """fp32, then the reduced precisions asked for, in PRECISIONS' order."""
    return ["fp32"] + [p for p in PRECISIONS[1:] if p in asked]


def key_suffix(precision):
    """What the JSON keys of a precision's figures add to fp32's: rnnext_ns, rnnext_bf16_ns,
    max_abs_diff, max_abs_diff_bf16, ..."""
    return "" if precision == "fp32" else f"_{precision}"


def is_rtneural(path):
    return os.path.isfile(os.path.join(path, "RTNeural", "RTNeural.h"))


def find_rtneural(path=None):
    """The RTNeural checkout: `path` (a ValueError if it is not one), else $RTNEURAL_DIR (the
    same), else a checkout named RTNeural or rtneural beside this repository, else None."""
    for given, what in ((path, "--rtneural"), (os.environ.get("RTNEURAL_DIR"), "RTNEURAL_DIR")):
        if given:
            if not is_rtneural(given):
                raise ValueError(f"{what}: expected an RTNeural checkout (holding "
                                 f"RTNeural/RTNeural.h), got {given!r}")
            return os.path.abspath(given)
    for name in ("RTNeural", "rtneural"):
        beside = os.path.join(os.path.dirname(REPO), name)
        if is_rtneural(beside):
            return beside
    return None


def find_eigen(rtneural, path=None):
    """Eigen's include directory: `path`, else RTNeural's modules/Eigen, else the system's."""
    candidates = [path] if path else [os.path.join(rtneural, "modules", "Eigen"), SYSTEM_EIGEN]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "Eigen", "Core")):
            return candidate
    if path:
        raise ValueError(f"--eigen: expected a directory holding Eigen/Core, got {path!r}")
    raise ValueError(f"Eigen not found: {candidates[0]} is empty (git submodule update --init "
                     f"modules/Eigen in the RTNeural checkout) and {SYSTEM_EIGEN} is absent "
                     "(apt-get install libeigen3-dev); or pass --eigen")


def run(command, **kwargs):
    """Runs command; a RuntimeError with its output when it fails."""
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n"
                           f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def build(rtneural, eigen, sizes, build_dir):
    """Builds rnnext's static library and the benchmark program; returns the program's path and
    the compile command."""
    library_dir = os.path.join(build_dir, "rnnext")
    library = os.path.join(library_dir, "librnnext.a")
    run(["make", "-s", "-C", os.path.join(REPO, "csrc"), f"-j{os.cpu_count()}",
         f"BUILDDIR={library_dir}", library])
    program = os.path.join(build_dir, "rtneural_stream")
    stream_sizes = " ".join(f"SIZE({i}, {h})" for i, h in sizes)
    command = [os.environ.get("CXX", "c++"), *RTNEURAL_FLAGS, f"-DSTREAM_SIZES={stream_sizes}",
               f"-I{rtneural}", f"-I{eigen}", f"-I{os.path.join(REPO, 'csrc', 'include')}",
               SOURCE, library, "-fopenmp", "-lm", "-o", program]
    run(command)
    return program, command


def simd_flags():
    """The SIMD_FLAGS this CPU has, from /proc/cpuinfo ([] where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in SIMD_FLAGS if flag in flags]


def git_commit(path):
    proc = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def compiler_version(command):
    return run([command[0], "--version"]).splitlines()[0]


def report_text(points, info):
    precisions = info["precisions"]
    reduced = precisions[1:]
    suffixes = [key_suffix(precision) for precision in precisions]
    header = (["cell", "I -> H", "RTNeural ns/step"]
              + [f"rnnext {precision} ns/step" for precision in precisions]
              + ["RTNeural / rnnext (both fp32)"]
              + [f"RTNeural fp32 / rnnext {precision}" for precision in reduced]
              + [f"max abs diff {precision}" for precision in precisions])
    lines = [f"# Streaming at batch 1: rnnext against RTNeural ({info['date']})", "",
             f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs; "
             f"{' '.join(info['simd_flags']) or 'none of ' + ', '.join(SIMD_FLAGS)}); load average "
             f"{info['load_before'][0]:.2f} before, {info['load_after'][0]:.2f} after; "
             f"{info['compiler']}; RTNeural {info['rtneural_commit']}.", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "--:|" * (len(header) - 2)]
    for p in points:
        row = ([p["cell"], f"{p['input_size']} -> {p['hidden_size']}", f"{p['rtneural_ns']:.0f}"]
               + [f"{p[f'rnnext{suffix}_ns']:.0f}" for suffix in suffixes]
               + [f"{p['rtneural_ns'] / p[f'rnnext{suffix}_ns']:.2f}" for suffix in suffixes]
               + [f"{p[f'max_abs_diff{suffix}']:.1e}" for suffix in suffixes])
        lines.append("| " + " | ".join(row) + " |")
    isas = sorted({p["rnnext_isa"] for p in points})
    if reduced:
        notes = "; ".join(f"{precision}: {PRECISION_NOTES[precision]}" for precision in reduced)
        bounds = ", ".join(f"{precision} within {info['reduced_precision_bound'][precision]:g}"
                           for precision in reduced)
        precision_text = (
            f"RTNeural runs fp32 only, so the first ratio compares the same precision and the "
            f"{' and '.join(reduced)} ratios compare rnnext at a reduced precision ({notes}) "
            f"with RTNeural's fp32, some accuracy traded for speed; each max abs diff is from "
            f"RTNeural's fp32 outputs. ")
        check_text = f"fp32 within 1e-5, {bounds}"
    else:
        precision_text, check_text = "", "within 1e-5"
    lines += ["", "RTNeural: LSTMLayerT / GRULayerT, Eigen backend, -O3 -march=native. rnnext: "
              "rnx_stream_step from librnnext.a built by csrc/Makefile without -march=native "
              f"(kernels chosen at run time: {', '.join(isas)}). One thread, batch 1. "
              f"{precision_text}Medians over {info['blocks']} blocks of {info['repeats']} runs "
              f"of {info['steps']} steps, the engines' order rotating run by run; outputs agreed "
              f"with RTNeural's ({check_text}) over {info['check_steps']} steps before timing. "
              "Ratio above 1: rnnext is faster.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        rtneural = find_rtneural(args.rtneural)
        if rtneural is None:
            raise ValueError("no RTNeural checkout: pass --rtneural PATH or set RTNEURAL_DIR")
        eigen = find_eigen(rtneural, args.eigen)
        program, command = build(rtneural, eigen, args.sizes, args.build)
        precisions = timed_precisions(args.precisions)
        bounds = {precision: REDUCED_PRECISION_BOUND[precision] for precision in precisions[1:]}
        load_before = os.getloadavg()
        output = run([program, str(args.blocks), str(args.repeats), str(args.steps),
                      str(args.check_steps),
                      *(f"{precision}={bound}" for precision, bound in bounds.items())])
        load_after = os.getloadavg()
    except (ValueError, RuntimeError) as e:
        print(f"bench_rtneural: {e}", file=sys.stderr)
        return 1
    points = [json.loads(line) for line in output.splitlines()]
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_model(), "simd_flags": simd_flags(), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": list(load_before), "load_after": list(load_after),
            "compiler": compiler_version(command), "compile_command": command,
            "rtneural": rtneural, "rtneural_commit": git_commit(rtneural), "eigen": eigen,
            "blocks": args.blocks, "repeats": args.repeats, "steps": args.steps,
            "check_steps": args.check_steps, "precisions": precisions,
            "reduced_precision_bound": bounds}
    write_report(args.out, args.name, report_text(points, info),
                 {"machine": info, "points": points})
    return 0


if __name__ == "__main__":
    sys.exit(main())
