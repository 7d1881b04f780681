"""Forward-pass timings side by side, in one run: rnnext compiled (fp32, and bf16 and int8 by
Model.forward(precision=...)), the rnnext NumPy fallback, PyTorch CPU and ONNX Runtime (each when
importable), and the anchors at reduced precision (torch bf16 autocast, ORT int8 quantize_dynamic,
OpenVINO f32 and bf16; anchors.py), on the same weights and the same input.

    PYTHONPATH=. python bench/bench_forward.py             # the default grid (minutes)
    PYTHONPATH=. python bench/bench_forward.py --quick     # a small grid, a few repeats
    PYTHONPATH=. python bench/bench_forward.py --cells lstm --batch 64 --hidden 256 --threads 2
    PYTHONPATH=. python bench/bench_forward.py --precisions fp32 --plot ms.png  # no bf16/int8
    PYTHONPATH=. python bench/bench_forward.py --cells lstm --batch 1 --hidden 512 --threads 1

Every point is a one-layer, one-direction cell run over x (B, T, I) returning the whole output
sequence (B, T, H). The torch module (batch_first=True) is built first; rnnext's model comes from
rnnext.from_torch(module) and the ONNX model from torch.onnx.export(module). Each backend's first
call is the warm-up and is checked against torch's output (or, without torch, the NumPy
reference) before that backend is timed, so a wrong result is never timed: an fp32 backend
that differs stops the run, an anchor or an rnnext reduced precision beyond its precision's bound
(REDUCED_PRECISION_BOUND, max abs against torch's fp32 output) is reported as wrong and left
untimed. Times are the median of the timed calls. The fp32, bf16 and int8 matrix-product peaks are
measured in the same run, at its start and at its end (peak.py), and the better of the two is the
figure; one core's read bandwidth (cache_bandwidth.c) is measured once, for the batch-1 weight
bytes per step.

Output: a Markdown report on stdout and in <out>/latest.md, every number in <out>/latest.json.
"""
import argparse
import io
import math
import os
import sys
import warnings

import numpy as np

import rnnext
from anchors import (ANCHORS, PRECISIONS, REDUCED_PRECISION_BOUND, RNNEXT_REDUCED, anchor_calls,
                     chosen_anchors, engine_label, precision_of, prepare)
from common import (machine_info, measure_cache_bandwidth, measure_peak, optional_import,
                    time_call, write_report)
from plot_forward import plot_ms

CELLS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
FRAMEWORKS = ("torch", "onnxruntime")
RNNEXT_BACKENDS = ("rnnext",) + tuple(RNNEXT_REDUCED)
# bytes a weight takes per precision; int8 adds, per gate row of weight_ih and of weight_hh, its
# scale and the sum of its quantized weights (float32 and int32; rnnext.h, RNX_PRECISION_INT8)
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
INT8_ROW_BYTES = 8
ONNX_OPSET = 17
MAX_REPEATS = 100000
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
STREAM_INPUT, STREAM_HIDDEN, STREAM_STEPS = 16, 64, 200


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", choices=CELLS, help="default: all three")
    p.add_argument("--batch", nargs="+", type=positive_int, help="default: 1 64")
    p.add_argument("--hidden", nargs="+", type=positive_int,
                   help="default: 128 256 512 (--quick: 128)")
    p.add_argument("--threads", nargs="+", type=positive_int, help="default: 1 2")
    p.add_argument("--steps", type=positive_int, default=100, help="T (default 100)")
    p.add_argument("--input-size", type=positive_int, default=64, help="I (default 64)")
    p.add_argument("--quick", action="store_true",
                   help="a small grid (hidden 128) and short timings, to check the script works")
    p.add_argument("--repeats", type=positive_int,
                   help="timed calls per backend and point (default: adaptive, see --target)")
    p.add_argument("--target", type=float,
                   help="seconds of timed calls per backend and point when adaptive "
                        "(default 0.3, --quick 0.05)")
    p.add_argument("--numpy-repeats", type=positive_int,
                   help="at most this many timed calls of the slow NumPy fallback (default 3, "
                        "--quick 1)")
    p.add_argument("--numpy-max-hidden", type=positive_int,
                   help="do not time the NumPy fallback above this hidden size (default: time "
                        "it everywhere)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="the precisions of rnnext and the anchors to add beside the fp32 columns "
                        "of rnnext, torch, ORT and NumPy, which always run: fp32 = OpenVINO f32, "
                        "bf16 = rnnext bf16, torch autocast and OpenVINO bf16, int8 = rnnext "
                        "int8 and ORT quantize_dynamic (default: all)")
    p.add_argument("--plot", metavar="PATH",
                   help="also write a PNG (matplotlib) of ms per forward against H per backend")
    p.add_argument("--no-streaming", action="store_true", help="skip the streaming section")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=RESULTS, help=f"folder for latest.md and latest.json "
                                                  f"(default {RESULTS})")
    args = p.parse_args(argv)
    args.cells = args.cells or list(CELLS)
    args.batch = args.batch or [1, 64]
    args.hidden = args.hidden or ([128] if args.quick else [128, 256, 512])
    args.threads = args.threads or [1, 2]
    args.target = args.target or (0.05 if args.quick else 0.3)
    args.numpy_repeats = args.numpy_repeats or (1 if args.quick else 3)
    return args


def tolerance(steps):
    """(rtol, atol) for float32 outputs after `steps` steps: rounding differences between
    implementations grow along a sequence."""
    return (1e-4, 1e-5) if steps <= 100 else (1e-3, 1e-4)


def accuracy(out, ref, steps, precision):
    """(largest absolute difference of out from ref, None when out is close enough for its
    precision, else the bound it broke in words): fp32 by tolerance(steps), a reduced precision
    by its max abs bound (REDUCED_PRECISION_BOUND)."""
    out = np.asarray(out, dtype=np.float32).reshape(ref.shape)
    diff = float(np.max(np.abs(out - ref)))
    if precision == "fp32":
        rtol, atol = tolerance(steps)
        return diff, None if np.allclose(out, ref, rtol=rtol, atol=atol) else \
            f"rtol {rtol}, atol {atol}"
    bound = REDUCED_PRECISION_BOUND[precision]
    return diff, None if diff <= bound else f"{precision} bound {bound} on max abs diff"


def checked(what, out, ref, steps):
    """The largest absolute difference of an fp32 out from ref; stops the run if they are not
    close."""
    diff, broken = accuracy(out, ref, steps, "fp32")
    if broken:
        raise SystemExit(f"{what}: output differs from the reference (max abs diff {diff:.3g}, "
                         f"{broken}); not timing it")
    return diff


# ------------------------------------------------------------------------------------------------
# the backends of one point


def export_onnx(torch, module, x):
    """The module as ONNX bytes, for the static shape of x, by torch's TorchScript exporter
    (dynamo=False), which torch 2.13 still has (deprecated): one LSTM/GRU/RNN node with the
    gates permuted by torch, between the transposes that batch_first needs."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(x),), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=ONNX_OPSET)
    return buf.getvalue()


def ort_session(ort, onnx_bytes, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def backend_calls(mods, model, module, onnx_bytes, x, threads, time_numpy, precisions):
    """{backend: call returning the output sequence}, each using `threads` threads; rnnext at
    each of its reduced precisions in `precisions`."""
    calls = {"rnnext": lambda: model.forward(x, n_threads=threads)[0]}
    for name, precision in RNNEXT_REDUCED.items():
        if precision in precisions:
            calls[name] = lambda p=precision: model.forward(x, n_threads=threads, precision=p)[0]
    torch = mods["torch"]
    if torch is not None:
        x_torch = torch.from_numpy(x)
        torch.set_num_threads(threads)  # nothing else sets it until these calls are timed

        def torch_call():
            with torch.inference_mode():
                return module(x_torch)[0].numpy()

        calls["torch"] = torch_call
    if onnx_bytes is not None and mods["onnxruntime"] is not None:
        session = ort_session(mods["onnxruntime"], onnx_bytes, threads)
        calls["onnxruntime"] = lambda: session.run(["y"], {"x": x})[0]
    if time_numpy:
        limits = mods["threadpoolctl"]

        def numpy_call():
            if limits is None:
                return model.forward(x, backend="numpy")[0]
            with limits.threadpool_limits(limits=threads, user_api="blas"):
                return model.forward(x, backend="numpy")[0]

        calls["numpy"] = numpy_call
    return calls


def repeat_limits(args, slow):
    """(least, most, exact or None) timed calls of one backend at one point; the slow NumPy
    fallback gets at most --numpy-repeats."""
    if slow:
        return 1, args.numpy_repeats, (None if args.repeats is None
                                       else min(args.repeats, args.numpy_repeats))
    return 3, MAX_REPEATS, args.repeats


def build_point(mods, cell, input_size, hidden, seed):
    """(rnnext model, torch module or None) with the same weights."""
    torch = mods["torch"]
    if torch is None:
        return rnnext.Model(cell, input_size, hidden, seed=seed), None
    torch.manual_seed(seed)
    module = getattr(torch.nn, TORCH_CLASSES[cell])(input_size, hidden, batch_first=True).eval()
    return rnnext.from_torch(module), module


def measured(args, what, name, call, ref, flops):
    """The backend's record at one point: its precision, its max abs difference from ref and, when
    its output is close enough (an fp32 one that is not stops the run, unless it is an anchor),
    its time; else "wrong", the bound it broke, and no time."""
    precision = precision_of(name)
    if name in ANCHORS or precision != "fp32":
        diff, broken = accuracy(call(), ref, args.steps, precision)
    else:
        diff, broken = checked(what, call(), ref, args.steps), None
    entry = {"precision": precision, "max_abs_diff": diff}
    if broken:
        print(f"  {what}: wrong, max abs diff {diff:.3g} beyond the {broken}; not timed",
              file=sys.stderr)
        return dict(entry, wrong=broken)
    seconds, n = time_call(call, args.target, *repeat_limits(args, name == "numpy"))
    return dict(entry, ms=seconds * 1e3, repeats=n, gflops=flops / seconds / 1e9)


def weight_bytes(cell, input_size, hidden, precision):
    """Bytes of weight_ih and weight_hh at `precision`, as rnnext keeps them."""
    rows = GATES[cell] * hidden
    extra = 2 * rows * INT8_ROW_BYTES if precision == "int8" else 0
    return rows * (input_size + hidden) * WEIGHT_BYTES[precision] + extra


def add_speedups(rec):
    """{backend: ms} of the point's timed backends, after adding its ratios (> 1: rnnext
    faster). The point names the faster of torch and ORT (best_framework), the fastest other
    engine at any precision, anchors included (fastest_any) and rnnext's fastest precision
    (fastest_rnnext; only timed ones count, each within its precision's bound); each timed rnnext
    precision gets "vs": its speed-up against best_framework, fastest_any and rnnext fp32; rnnext
    fp32's against the NumPy fallback is the point's speedup_vs_numpy."""
    ms = {name: b["ms"] for name, b in rec["backends"].items() if "ms" in b}
    others = {"best_framework": [f for f in FRAMEWORKS if f in ms],
              "fastest_any": [f for f in ms if f not in RNNEXT_BACKENDS + ("numpy",)]}
    targets = {key: min(names, key=ms.get) for key, names in others.items() if names}
    rec.update(targets, fastest_rnnext=min((n for n in RNNEXT_BACKENDS if n in ms), key=ms.get))
    targets["rnnext_fp32"] = "rnnext"
    for name in RNNEXT_BACKENDS:
        if name in ms:
            rec["backends"][name]["vs"] = {key: ms[t] / ms[name] for key, t in targets.items()}
    if "numpy" in ms:
        rec["speedup_vs_numpy"] = ms["numpy"] / ms["rnnext"]
    return ms


def bench_point(args, mods, cell, batch, hidden, notes):
    """The records of one (cell, batch, hidden) point, one per thread count; at batch 1, each
    rnnext precision's weight bytes per step and the read rate they imply."""
    T, I = args.steps, args.input_size
    model, module = build_point(mods, cell, I, hidden, args.seed)
    x = np.random.default_rng(args.seed).standard_normal((batch, T, I)).astype(np.float32)
    if module is not None:
        with mods["torch"].inference_mode():
            ref = module(mods["torch"].from_numpy(x))[0].numpy()
    else:
        ref = model.forward(x, backend="numpy")[0]
    onnx_bytes = None
    if module is not None and mods["onnx"] is not None:
        onnx_bytes = export_onnx(mods["torch"], module, x)
        notes.setdefault("onnx_nodes", {})[cell] = [
            n.op_type for n in mods["onnx"].load_from_string(onnx_bytes).graph.node]
    prepared = prepare(args.anchors, onnx_bytes, notes, cell)
    time_numpy = args.numpy_max_hidden is None or hidden <= args.numpy_max_hidden
    flops = 2 * GATES[cell] * hidden * (I + hidden) * batch * T
    records = []
    for threads in args.threads:
        calls = backend_calls(mods, model, module, onnx_bytes, x, threads, time_numpy,
                              args.precisions)
        anchors, anchor_notes = anchor_calls(
            mods, args.anchors, prepared, module, x, threads,
            lambda onnx_model, k: ort_session(mods["onnxruntime"], onnx_model, k))
        rec = {"cell": cell, "batch": batch, "hidden": hidden, "input": I, "steps": T,
               "threads": threads, "flops": flops, "backends": {}}
        for name, call in {**calls, **anchors}.items():
            what = f"{name} {cell} B={batch} H={hidden} threads={threads}"
            rec["backends"][name] = measured(args, what, name, call, ref, flops)
            if name in anchor_notes:
                rec["backends"][name]["note"] = anchor_notes[name]
        ms = add_speedups(rec)
        if batch == 1:
            for name in RNNEXT_BACKENDS:
                b = rec["backends"].get(name, {})
                if "ms" in b:
                    b["weight_bytes"] = weight_bytes(cell, I, hidden, b["precision"])
                    b["weight_gb_per_s"] = b["weight_bytes"] * T / b["ms"] / 1e6
        print(f"  {cell:4} B={batch:<3} H={hidden:<4} threads={threads}: " +
              ", ".join(f"{name} {v:.3f} ms" for name, v in ms.items()), file=sys.stderr)
        records.append(rec)
    return records


def best_record(records):
    """The record with the most GFLOP/s with every measured figure, or the first record (its
    error) when none was measured."""
    measured = [r for r in records if "error" not in r]
    if not measured:
        return records[0]
    return dict(max(measured, key=lambda r: r["gflops"]),
                gflops_measured=[r["gflops"] for r in measured])


def better_peaks(start, end):
    """Per thread count, the better of the peaks measured at the start and at the end of the run
    (load from other users of a shared machine lowers one of them), with both figures; the same
    for the bf16 and int8 peaks under "bf16" and "int8"."""
    runs = [p for p in (start, end) if "error" not in p]
    if not runs:
        return start
    return {k: dict(best_record([p[k] for p in runs]),
                    **{q: best_record([p[k][q] for p in runs]) for q in PRECISIONS[1:]})
            for k in runs[0]}


def add_peak_shares(points, peaks):
    """Each timed backend's GFLOP/s as a percentage of the peak of its precision for its thread
    count: fp32, bf16 or int8 (None without one)."""
    for rec in points:
        fp32 = peaks.get(rec["threads"], {})
        for b in rec["backends"].values():
            own = fp32 if b["precision"] == "fp32" else fp32.get(b["precision"], {})
            peak = own.get("gflops")
            b["pct_peak"] = None if peak is None or "ms" not in b else 100 * b["gflops"] / peak


def add_read_shares(points, bandwidth):
    """At batch 1, each timed rnnext precision's weight read rate as a percentage of what its k
    threads can read: 1/k of the weights each, at one core's read bandwidth (cache_bandwidth.c)
    for the measured buffer nearest that share in size (on a log scale: buffers double), times
    k."""
    if "error" in bandwidth:
        return
    for rec in points:
        k = rec["threads"]
        for b in rec["backends"].values():
            if "weight_gb_per_s" in b:
                share_kb = b["weight_bytes"] / k / 1024
                kb = min(bandwidth, key=lambda kb: abs(math.log(kb / share_kb)))
                b["read_bound"] = {"buffer_kb": kb, "gb_per_s": k * bandwidth[kb]}
                b["pct_read_bound"] = 100 * b["weight_gb_per_s"] / b["read_bound"]["gb_per_s"]


def load_warnings(load_at_start, peaks, points):
    """Signs that other processes shared the cores during the run (this machine is shared):
    load before the run started, a k-thread peak well short of k times the 1-thread one, a
    backend above the peak."""
    found = []
    if load_at_start > 0.5:
        found.append(f"load average {load_at_start:.2f} over the minute before the run: other "
                     f"processes were using the cores, multi-thread figures are unreliable")
    one = peaks.get(1, {}).get("gflops")
    for k, p in peaks.items():
        if one is not None and k != "error" and k > 1 and p["gflops"] < 0.75 * k * one:
            found.append(f"the {k}-thread peak is {p['gflops'] / one:.2f}x the 1-thread peak: "
                         f"other processes were using the cores, {k}-thread figures are "
                         f"unreliable")
    above = sorted({f"{r['cell']} B={r['batch']} H={r['hidden']} threads={r['threads']}"
                    for r in points for b in r["backends"].values()
                    if b["pct_peak"] is not None and b["pct_peak"] > 100})
    if above:
        found.append(f"above 100% of the measured peak (the peak was measured under load): "
                     f"{', '.join(above)}")
    return found


# ------------------------------------------------------------------------------------------------
# streaming


def bench_streaming(args, mods):
    """Microseconds per step of a batch-1 LSTM fed one step at a time, the state carried:
    rnnext's Model.stream (when the library has it), torch nn.LSTM and nn.LSTMCell."""
    torch = mods["torch"]
    I, H, steps = STREAM_INPUT, STREAM_HIDDEN, STREAM_STEPS
    xs = np.random.default_rng(args.seed).standard_normal((steps, 1, I)).astype(np.float32)
    result = {"cell": "lstm", "input": I, "hidden": H, "batch": 1, "steps_per_call": steps,
              "threads": 1, "us_per_step": {}, "notes": []}
    calls = {}
    if torch is None:
        model = rnnext.Model("lstm", I, H, seed=args.seed)
        ref = model.forward(xs[:, 0], backend="numpy")[0]
        result["notes"].append("torch is not importable: no torch rows")
    else:
        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        lstm = torch.nn.LSTM(I, H, batch_first=True).eval()
        cell = torch.nn.LSTMCell(I, H).eval()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(lstm, name + "_l0"))
        model = rnnext.from_torch(lstm)
        x_steps = torch.from_numpy(xs)
        with torch.inference_mode():
            ref = lstm(x_steps.reshape(1, steps, I))[0][0].numpy()

        def torch_lstm_steps():
            with torch.inference_mode():
                state, outs = None, []
                for x_t in x_steps:
                    y, state = lstm(x_t[None], state)
                    outs.append(y)
                return torch.cat(outs).numpy()

        def torch_cell_steps():
            with torch.inference_mode():
                state, outs = None, []
                for x_t in x_steps:
                    state = cell(x_t, state)
                    outs.append(state[0])
                return torch.cat(outs).numpy()

        calls["torch nn.LSTM, state carried"] = torch_lstm_steps
        calls["torch nn.LSTMCell"] = torch_cell_steps
    if hasattr(rnnext.Model, "stream"):
        def rnnext_steps():
            stream = model.stream()
            return np.asarray([stream.step(x_t) for x_t in xs])

        calls = {"rnnext stream.step": rnnext_steps, **calls}
    else:
        result["notes"].append("rnnext.Model has no stream() yet: no rnnext row")
    for name, call in calls.items():
        checked(f"streaming {name}", call(), ref, steps)
        seconds, _ = time_call(call, args.target, *repeat_limits(args, slow=False))
        result["us_per_step"][name] = seconds / steps * 1e6
    return result


# ------------------------------------------------------------------------------------------------
# report


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def error_cell(b):
    """The table cell of an anchor or an rnnext reduced precision: ms (max abs diff from torch
    fp32[; note]), or why no time."""
    if b is None:
        return "-"
    inside = "; ".join([f"{b['max_abs_diff']:.1e}"] + ([b["note"]] if "note" in b else []))
    return f"wrong ({inside})" if "wrong" in b else f"{b['ms']:.3f} ({inside})"


def peak_lines(label, k, p):
    """The report's line for one measured peak (or why it was not measured)."""
    if "error" in p:
        return [f"- {label} peak, {k} thread(s): not measured ({p['error']})"]
    kernels = ", ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']} "
                        f"({b['num_threads']} threads)" for b in p["blas"])
    runs = " / ".join(f"{g:.1f}" for g in p["gflops_measured"])
    return [f"- {label} peak, {k} thread(s): {p['gflops']:.1f} GFLOP/s (start / end of the run: "
            f"{runs}; {p['method']}" + (f"; {kernels}" if kernels else "") + ")"]


def ratio_cell(b, key, against):
    """"1.23x (engine)": b's speed-up against the engine `against` that key names, or "-"."""
    return "-" if against is None else f"{b['vs'][key]:.2f}x ({engine_label(against)})"


def precision_rows(r):
    """The rows of the rnnext-by-precision table for point r: each timed rnnext precision's time,
    error, GFLOP/s, share of its precision's peak, speed-ups, and at batch 1 its weight bytes per
    step, the read rate they imply and its share of the read bound."""
    rows = []
    for name in RNNEXT_BACKENDS:
        b = r["backends"].get(name, {})
        if "ms" not in b:
            continue
        bound = b.get("read_bound")
        rows.append(
            f"| {r['cell']} | {r['batch']} | {r['hidden']} | {r['threads']} | {b['precision']} "
            f"| {b['ms']:.3f} | {b['max_abs_diff']:.1e} | {b['gflops']:.1f} "
            f"| {fmt(b['pct_peak'], '.1f')} | {b['vs']['rnnext_fp32']:.2f}x "
            f"| {ratio_cell(b, 'best_framework', r.get('best_framework'))} "
            f"| {ratio_cell(b, 'fastest_any', r.get('fastest_any'))} "
            f"| {fmt(b['weight_bytes'] / 1024 if 'weight_bytes' in b else None, '.0f')} "
            f"| {fmt(b.get('weight_gb_per_s'), '.1f')} | "
            + ("-" if bound is None else f"{b['pct_read_bound']:.0f}% of {bound['gb_per_s']:.0f} "
               f"({bound['buffer_kb']} KB)") + " |")
    return rows


def markdown(report):
    m, peaks, s = report["machine"], report["peak"], report["settings"]
    rc = m["rnnext"]
    lines = [
        "# rnnext forward benchmark", "",
        f"{m['date']}; {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical "
        f"CPUs; load average {m['load_average'][0]:.2f} at start, "
        f"{report['load_average_end'][0]:.2f} at end.",
        f"rnnext {rc['version']} (ISA {rc['isa']}, OpenMP {rc['openmp']}, gcc {rc['compiler']}); "
        + ", ".join(f"{k} {v or 'not importable'}" for k, v in m["versions"].items()) + ".",
        "Environment: " + (", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None)
                           if any(m["env"].values()) else "none of " + ", ".join(m["env"]))
        + " (the peak is measured without the OPENBLAS variables). NumPy fallback's BLAS: "
        + (", ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}"
                     for b in m["numpy_blas"]) or "unknown (no threadpoolctl)") + ".",
        "",
        f"One layer, one direction, T={s['steps']} steps, I={s['input_size']} inputs, the whole "
        f"output sequence returned. ms: median of the timed calls after a checked warm-up call. "
        f"GFLOP/s with flops = 2*G*H*(I+H)*B*T (G = 4 LSTM, 3 GRU, 1 RNN). "
        f"% peak: of the fp32 matrix-product peak below. vs best: time of the faster of torch "
        f"and ONNX Runtime / rnnext time (> 1: rnnext faster); vs any: the same against the "
        f"fastest of every other engine at any precision, anchors included; vs numpy likewise. "
        f"Columns of rnnext's reduced precisions and of the anchors: ms (max abs difference "
        f"from torch's fp32 output); one beyond its precision's bound ("
        + ", ".join(f"{p} {b:g}" for p, b in REDUCED_PRECISION_BOUND.items())
        + ", fp32 the tolerance of the others) is marked wrong and not timed. fastest rnnext "
        "vs any: rnnext's fastest timed precision (each within its bound) against the fastest "
        "other engine at any precision.",
        "",
    ]
    if "error" in peaks:
        lines.append(f"- fp32 peak: not measured ({peaks['error']}).")
    for k, p in sorted((k, p) for k, p in peaks.items() if k != "error"):
        lines += peak_lines("fp32", k, p)
        for precision in PRECISIONS[1:]:
            lines += peak_lines(precision, k, p[precision])
    bandwidth = report["cache_bandwidth"]
    lines.append("- one core's read bandwidth (cache_bandwidth.c, once, at the start): " + (
        f"not measured ({bandwidth['error']})" if "error" in bandwidth else
        ", ".join(f"{kb} KB {gbs:.0f}" for kb, gbs in bandwidth.items()) + " GB/s"))
    for cell, nodes in report["notes"].get("onnx_nodes", {}).items():
        lines.append(f"- ONNX model ({cell}): torch.onnx.export(dynamo=False, opset "
                     f"{ONNX_OPSET}), nodes {' '.join(nodes)}")
    for cell, done in report["notes"].get("ort_int8", {}).items():
        lines.append(f"- ORT int8 ({cell}): quantize_dynamic(weight_type=QInt8) {done}")
    for label, why in report["notes"]["anchors_left_out"].items():
        lines.append(f"- {label}: left out, {why}")
    lines += [f"- **warning**: {w}" for w in report["warnings"]]
    reduced = [name for name, precision in RNNEXT_REDUCED.items() if precision in s["precisions"]]
    anchors = report["notes"]["anchors"]
    lines += ["", "| cell | B | H | threads | rnnext ms | GFLOP/s | % peak | "
              + "".join(f"{engine_label(name)} ms | " for name in reduced)
              + "torch ms | ORT ms | numpy ms | "
              + "".join(f"{label} ms | " for label in anchors.values())
              + "vs best | vs any | fastest rnnext vs any | vs numpy |",
              "|---|--:|--:|--:|--:|--:|--:|" + "--:|" * (len(reduced) + 3 + len(anchors))
              + "--:|--:|--:|--:|"]
    for r in report["points"]:
        b = r["backends"]
        ms = {name: fmt(b[name]["ms"] if name in b else None, ".3f")
              for name in ("rnnext", "torch", "onnxruntime", "numpy")}
        fastest = b[r["fastest_rnnext"]]
        lines.append(f"| {r['cell']} | {r['batch']} | {r['hidden']} | {r['threads']} "
                     f"| {ms['rnnext']} | {b['rnnext']['gflops']:.1f} "
                     f"| {fmt(b['rnnext']['pct_peak'], '.1f')} | "
                     + "".join(f"{error_cell(b.get(name))} | " for name in reduced)
                     + f"{ms['torch']} | {ms['onnxruntime']} | {ms['numpy']} | "
                     + "".join(f"{error_cell(b.get(name))} | " for name in anchors)
                     + f"{ratio_cell(b['rnnext'], 'best_framework', r.get('best_framework'))} "
                     f"| {ratio_cell(b['rnnext'], 'fastest_any', r.get('fastest_any'))} "
                     f"| {fastest['precision']} "
                     f"{ratio_cell(fastest, 'fastest_any', r.get('fastest_any'))} "
                     f"| {fmt(r.get('speedup_vs_numpy'), '.1f')} |")
    lines += ["", "rnnext by precision (timed ones): % peak of its precision's peak; vs rnnext "
                  "fp32, vs best, vs any: its speed-ups as above. At batch 1: weight KB read per "
                  "step, G*H*(I+H)*bytes (fp32 4, bf16 2, int8 1 and, per gate row of weight_ih "
                  f"and of weight_hh, {INT8_ROW_BYTES} bytes of scale and sum; weight_ih is read "
                  "once per chunk of steps, so a step's own reads are the weight_hh part), the "
                  "read rate it implies (bytes * T / time) and its share of the read bound: k "
                  "threads read 1/k of the weights each, at one core's read bandwidth for the "
                  "measured buffer nearest that share in size (log scale), times k.",
              "", "| cell | B | H | threads | precision | ms | max abs diff | GFLOP/s | % peak "
                  "| vs rnnext fp32 | vs best | vs any | weight KB/step | GB/s | % read bound |",
              "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in report["points"]:
        lines += precision_rows(r)
    st = report.get("streaming")
    if st is not None:
        lines += ["", f"Streaming: LSTM I={st['input']} H={st['hidden']} batch 1, one step per "
                      f"call, state carried, {st['threads']} thread, median over calls of "
                      f"{st['steps_per_call']} steps.", ""]
        lines += [f"- {note}" for note in st["notes"]]
        if st["us_per_step"]:
            lines += ["", "| implementation | µs per step |", "|---|--:|"]
            lines += [f"| {name} | {us:.2f} |" for name, us in st["us_per_step"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    mods = {name: optional_import(name)
            for name in ("numpy", "torch", "onnxruntime", "onnx", "threadpoolctl", "openvino")}
    args.anchors, left_out = chosen_anchors(mods, args.precisions)
    report = {"machine": machine_info(mods),
              "notes": {"anchors": dict(args.anchors), "anchors_left_out": left_out}}
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "anchors")}
    missing = [name for name, m in mods.items() if m is None]
    if missing:
        print(f"not importable, left out: {', '.join(missing)}", file=sys.stderr)
    print(f"measuring the matrix-product peaks for threads {args.threads} ...",
          file=sys.stderr)
    peak_start = measure_peak(args.threads)
    report["cache_bandwidth"] = measure_cache_bandwidth()
    report["points"] = []
    for cell in args.cells:
        for hidden in args.hidden:
            for batch in args.batch:
                report["points"] += bench_point(args, mods, cell, batch, hidden,
                                                report["notes"])
    report["streaming"] = None if args.no_streaming else bench_streaming(args, mods)
    report["load_average_end"] = list(os.getloadavg())
    report["peak"] = better_peaks(peak_start, measure_peak(args.threads))
    add_peak_shares(report["points"], report["peak"])
    add_read_shares(report["points"], report["cache_bandwidth"])
    report["warnings"] = load_warnings(report["machine"]["load_average"][0], report["peak"],
                                       report["points"])
    write_report(args.out, "latest", markdown(report), report)
    if args.plot:
        failed = plot_ms(report["points"], args.plot)
        print(f"no plot: {failed}" if failed else f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
