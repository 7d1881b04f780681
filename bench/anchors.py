"""The anchors: what a user would run instead of rnnext at a precision, built from the point's
torch module and its ONNX export, so that bench_forward.py times them beside rnnext's fp32 on the
same weights and the same input.

- torch bf16: torch.autocast("cpu", dtype=torch.bfloat16) around the module call, the output
  cast back to float32 (torch decides per op what runs in bf16);
- ORT int8: onnxruntime.quantization.quantize_dynamic(weight_type=QInt8) of the fp32 export; it
  replaces only the ops it has a quantizer for (LSTM by DynamicQuantizeLSTM), so the report
  names what it replaced and a GRU or RNN point is the float32 graph;
- OpenVINO f32 and bf16: the same ONNX bytes compiled for "CPU" with INFERENCE_PRECISION_HINT and
  INFERENCE_NUM_THREADS; the report gives the precision the compiled model says it runs (a CPU
  without bf16 instructions runs f32).
An anchor whose package is not importable is left out with the reason, never a crash.
rnnext's own reduced precisions (RNNEXT_REDUCED) are checked and reported like the anchors.
"""
import logging
import os
import tempfile

from common import optional_import

PRECISIONS = ("fp32", "bf16", "int8")
# The bound on the largest absolute difference from torch's fp32 output, per reduced precision,
# over T=100 steps of random weights: about 5x the anchors' worst errors (issue 10's machine:
# torch bf16 7e-3, OpenVINO bf16 5.5e-3, ORT int8 6.7e-3; --quick here: up to 9.5e-3), well
# below what a real break gives (a wrong gate order or a lost scale: 0.1 to 1 on outputs in
# [-1, 1]). fp32 keeps bench_forward's tolerance().
REDUCED_PRECISION_BOUND = {"bf16": 5e-2, "int8": 5e-2}
# name: (precision, label in the report, the modules it needs)
ANCHORS = {
    "openvino_f32": ("fp32", "OpenVINO f32", ("torch", "onnx", "openvino")),
    "torch_bf16": ("bf16", "torch bf16", ("torch",)),
    "openvino_bf16": ("bf16", "OpenVINO bf16", ("torch", "onnx", "openvino")),
    "ort_int8": ("int8", "ORT int8", ("torch", "onnx", "onnxruntime")),
}
# rnnext at a reduced precision (Model.forward(precision=...)): name: precision
RNNEXT_REDUCED = {"rnnext_bf16": "bf16", "rnnext_int8": "int8"}
OPENVINO_HINTS = {"openvino_f32": "f32", "openvino_bf16": "bf16"}
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


def precision_of(backend):
    """The precision a backend computes in: an anchor's own, rnnext's reduced one, fp32 for every
    other backend."""
    return ANCHORS[backend][0] if backend in ANCHORS else RNNEXT_REDUCED.get(backend, "fp32")


def engine_label(name, with_precision=False):
    """A backend's name in the report; with_precision, an fp32 one's name says fp32 too."""
    if name in ANCHORS:
        return ANCHORS[name][1]
    if name in RNNEXT_REDUCED:
        return f"rnnext {RNNEXT_REDUCED[name]}"
    label = "ORT" if name == "onnxruntime" else name
    return f"{label} fp32" if with_precision else label


def chosen_anchors(mods, precisions):
    """({anchor: label} to run, {label: why it is left out}) for the precisions asked for;
    mods maps module names to modules or None."""
    run, skipped = {}, {}
    for name, (precision, label, needs) in ANCHORS.items():
        if precision not in precisions:
            continue
        missing = [m for m in needs if mods.get(m) is None]
        if name == "ort_int8" and not missing and \
                optional_import("onnxruntime.quantization") is None:
            missing = ["onnxruntime.quantization"]
        if missing:
            skipped[label] = f"{', '.join(missing)} not importable"
        else:
            run[name] = label
    return run, skipped


def quantize_int8(onnx_bytes):
    """(ONNX bytes of quantize_dynamic(weight_type=QInt8) of the model, whether it replaced any
    op, what it did in words).
    quantize_dynamic reads and writes files only, hence the temporary folder; its advice to
    pre-process the model (a shape inference pass that changes nothing here) is silenced."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
        with open(source, "wb") as f:
            f.write(onnx_bytes)
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        with open(target, "rb") as f:
            quantized = f.read()
    before = {n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node}
    after = [n.op_type for n in onnx.load_from_string(quantized).graph.node]
    added = sorted({op for op in after if op not in before})
    kept = sorted({op for op in after if op in RECURRENT_OPS})
    done = f"added {' '.join(added)}" if added else "quantized nothing"
    if kept:
        done += f"; {' '.join(kept)} left float32 (not quantized)"
    return quantized, bool(added), done


def prepare(anchors, onnx_bytes, notes, cell):
    """What the anchors of one point share across thread counts: the int8 model and whether
    quantize_dynamic replaced any op (what it did recorded in notes["ort_int8"][cell]) and
    OpenVINO's reading of the ONNX bytes."""
    prepared = {}
    if "ort_int8" in anchors:
        *prepared["ort_int8"], notes.setdefault("ort_int8", {})[cell] = quantize_int8(onnx_bytes)
    if any(name in OPENVINO_HINTS for name in anchors):
        import openvino

        core = openvino.Core()
        prepared["openvino"] = (core, core.read_model(onnx_bytes, b""))
    return prepared


def openvino_call(core, ov_model, hint, x, threads):
    """(call, the precision OpenVINO says the compiled model runs in)."""
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                    "INFERENCE_NUM_THREADS": threads})
    request, output = compiled.create_infer_request(), compiled.output(0)
    ran_as = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return (lambda: request.infer({"x": x})[output]), ran_as


def anchor_calls(mods, anchors, prepared, module, x, threads, ort_session):
    """({anchor: call returning the output sequence as float32}, {anchor: note}), each call using
    `threads` threads; ort_session(onnx_bytes, threads) makes bench_forward's ORT session."""
    calls, notes = {}, {}
    if "torch_bf16" in anchors:
        torch = mods["torch"]
        x_torch = torch.from_numpy(x)

        def torch_bf16():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x_torch)[0].float().numpy()

        calls["torch_bf16"] = torch_bf16
    if "ort_int8" in anchors:
        int8_bytes, quantized = prepared["ort_int8"]
        session = ort_session(int8_bytes, threads)
        calls["ort_int8"] = lambda: session.run(["y"], {"x": x})[0]
        if not quantized:
            notes["ort_int8"] = "not quantized"
    for name, hint in OPENVINO_HINTS.items():
        if name in anchors:
            calls[name], ran_as = openvino_call(*prepared["openvino"], hint, x, threads)
            if ran_as != hint:
                notes[name] = f"asked for {hint}, OpenVINO runs {ran_as}"
    return calls, notes
