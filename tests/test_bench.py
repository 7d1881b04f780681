"""bench/: the benchmarks' own checks on small grids, so that the scripts keep running as the
library changes: the training benchmark's (rnnext's loss and gradients against torch autograd's
on the point's weights, both backends, before anything is timed), the forward benchmark's
(every backend against torch's fp32 output; rnnext's bf16 and int8 and the anchors at reduced
precision within their bound and marked wrong beyond it) and the RTNeural stream benchmark's
(RTNeural's outputs against rnnext's stream on the same weights, in fp32 and at bf16 and int8
within their bound). Their timings are not looked at here: speed is measured by running bench/ on
a quiet machine, never asserted in a test."""
import importlib
import importlib.util
import json
import os
import re
import runpy
import shutil

import pytest

from conftest import REPO, read_png

pytestmark = pytest.mark.usefixtures("source_tree")

BENCH = REPO / "bench"
# a grid small enough for a test: one point per cell at batch 1 (where the weight bytes per step
# are reported), a few steps
FORWARD_GRID = ["--quick", "--batch", "1", "--hidden", "8", "--threads", "1", "--steps", "10",
                "--input-size", "4", "--no-streaming"]
# the modules each anchor needs, as a user installs them
ANCHOR_MODULES = {"torch_bf16": ["torch"], "ort_int8": ["torch", "onnx", "onnxruntime"],
                  "openvino_f32": ["torch", "onnx", "openvino"],
                  "openvino_bf16": ["torch", "onnx", "openvino"]}


def test_bench_train_checks_every_cell_against_torch_and_prints_its_row(capsys):
    pytest.importorskip("torch")
    bench = runpy.run_path(str(BENCH / "bench_train.py"), run_name="bench_train")
    assert bench["main"](["--points", "3x8", "--steps", "5", "--input-size", "4", "--repeats",
                          "1", "--numpy-seconds", "0", "--threads", "1"]) == 0
    rows = re.findall(r"^\| (\w+) \| 3 \| 8 \|", capsys.readouterr().out, re.M)
    assert rows == list(bench["CELLS"])


def bench_module(name):
    """A module of bench/ (which imports its neighbours by their names)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH))
        return importlib.import_module(name)


def run_forward(argv, replaced=None):
    """(bench_forward's JSON report, its Markdown) after main(argv) with bench/ on the path;
    replaced: {"module.name": value} set in bench/'s modules before the script imports them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH))
        for target, value in (replaced or {}).items():
            patch.setattr(target, value)
        bench = runpy.run_path(str(BENCH / "bench_forward.py"), run_name="bench_forward")
        assert bench["main"](argv) == 0
    out = argv[argv.index("--out") + 1]
    with open(f"{out}/latest.json") as f, open(f"{out}/latest.md") as g:
        return json.load(f), g.read()


@pytest.fixture(scope="module")
def forward_report(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench_forward")
    report, text = run_forward(FORWARD_GRID + ["--out", str(out), "--plot", str(out / "ms.png")])
    return report, text, out


def test_bench_forward_times_every_cell_beside_torch(forward_report):
    report, text, out = forward_report
    assert [(r["cell"], r["hidden"]) for r in report["points"]] == \
        [(cell, 8) for cell in ("lstm", "gru", "rnn")]
    for r in report["points"]:
        for name in ("rnnext", "torch", "numpy"):
            assert r["backends"][name]["precision"] == "fp32"
            assert r["backends"][name]["max_abs_diff"] < 1e-4
    assert len(re.findall(r"^\| (lstm|gru|rnn) \| 1 \| 8 \| 1 \| \d", text, re.M)) == 3
    if importlib.util.find_spec("matplotlib") is not None:
        assert read_png(out / "ms.png").ndim == 3


def test_bench_forward_times_rnnext_at_each_precision_within_its_bound(forward_report):
    report, text, _ = forward_report
    anchors = bench_module("anchors")
    assert "| rnnext bf16 ms | rnnext int8 ms |" in text
    for r in report["points"]:
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[r["cell"]] * 8
        for name, precision, weight_bytes in (("rnnext", "fp32", gates * 12 * 4),
                                              ("rnnext_bf16", "bf16", gates * 12 * 2),
                                              ("rnnext_int8", "int8", gates * (12 + 2 * 8))):
            b = r["backends"][name]
            assert b["precision"] == precision and b["ms"] > 0, (r["cell"], name, b)
            if precision != "fp32":
                # really reduced, and within its bound
                assert 1e-5 < b["max_abs_diff"] <= anchors.REDUCED_PRECISION_BOUND[precision]
            assert b["weight_bytes"] == weight_bytes
            assert b["weight_gb_per_s"] == pytest.approx(weight_bytes * 10 / b["ms"] / 1e6)
            assert set(b["vs"]) >= {"best_framework", "fastest_any", "rnnext_fp32"}
            assert re.search(rf"^\| {r['cell']} \| 1 \| 8 \| 1 \| {precision} \| {b['ms']:.3f} "
                             rf"\|", text, re.M)
        assert r["fastest_rnnext"] in ("rnnext", "rnnext_bf16", "rnnext_int8")
    peak = report["peak"]
    assert "error" in peak or set(peak["1"]) >= {"gflops", "bf16", "int8"}


@pytest.mark.parametrize("anchor", list(ANCHOR_MODULES))
def test_bench_forward_anchor_column_is_within_its_precisions_bound(forward_report, anchor):
    for module in ANCHOR_MODULES[anchor]:
        pytest.importorskip(module, reason=f"{anchor} needs {module}")
    report, text, _ = forward_report
    anchors = bench_module("anchors")
    precision, label, _ = anchors.ANCHORS[anchor]
    assert f"| {label} ms |" in text
    for r in report["points"]:
        b = r["backends"][anchor]
        assert "wrong" not in b and b["ms"] > 0, (r["cell"], b)
        if precision == "fp32" or "note" in b:
            # fp32, or a reduced precision that did not happen (the note says which): the fp32
            # tolerance of the other backends
            assert b["max_abs_diff"] < 1e-4, (r["cell"], b)
        else:
            # the precision really reduced, and within its bound
            assert 1e-5 < b["max_abs_diff"] <= anchors.REDUCED_PRECISION_BOUND[precision], \
                (r["cell"], b)
    if anchor == "ort_int8":
        # quantize_dynamic has a quantizer for ONNX LSTM only (DynamicQuantizeLSTM)
        assert {r["cell"]: r["backends"][anchor].get("note") for r in report["points"]} == \
            {"lstm": None, "gru": "not quantized", "rnn": "not quantized"}


def test_bench_forward_leaves_out_a_missing_anchor_and_does_not_time_a_wrong_one(tmp_path):
    pytest.importorskip("torch")
    anchors, real_import = bench_module("anchors"), bench_module("common").optional_import

    def without_openvino(name):
        return None if name == "openvino" else real_import(name)

    report, text = run_forward(
        FORWARD_GRID + ["--cells", "rnn", "--precisions", "fp32", "bf16", "--out", str(tmp_path)],
        replaced={"common.optional_import": without_openvino, "anchors.REDUCED_PRECISION_BOUND":
                  dict(anchors.REDUCED_PRECISION_BOUND, bf16=1e-9)})
    assert report["notes"]["anchors_left_out"] == {
        "OpenVINO f32": "openvino not importable", "OpenVINO bf16": "openvino not importable"}
    assert "- OpenVINO bf16: left out, openvino not importable" in text
    (point,) = report["points"]
    assert "ort_int8" not in point["backends"] and "rnnext_int8" not in point["backends"]
    for name in ("torch_bf16", "rnnext_bf16"):
        bf16 = point["backends"][name]
        assert bf16["wrong"] == "bf16 bound 1e-09 on max abs diff" and "ms" not in bf16
    assert point["fastest_rnnext"] == "rnnext"
    assert re.search(r"^\| rnn \| 1 \| 8 \| 1 \|.*\| wrong \(\d\.\de-0\d\) \|", text, re.M)


def run_bench_rtneural(monkeypatch):
    """bench_rtneural.py's names (its `common` import resolved from bench/)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return runpy.run_path(str(BENCH / "bench_rtneural.py"), run_name="bench_rtneural")


@pytest.fixture(scope="module")
def rtneural_build(tmp_path_factory):
    """The RTNeural tests' one build directory, so that make builds rnnext's library once."""
    return tmp_path_factory.mktemp("rtneural_build")


def run_rtneural_smoke(monkeypatch, tmp_path, build, argv):
    """(the JSON report, the Markdown) of bench_rtneural.py at 1x32 with 2 blocks of 2 runs of 8
    steps, built in `build`, and `argv`. Skips without an RTNeural checkout (RTNEURAL_DIR, or
    beside the repository), Eigen, make or a C++ compiler."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("needs make and a C++ compiler")
    bench = run_bench_rtneural(monkeypatch)
    rtneural = bench["find_rtneural"]()
    if rtneural is None:
        pytest.skip("no RTNeural checkout: set RTNEURAL_DIR to one")
    try:
        bench["find_eigen"](rtneural)
    except ValueError as e:
        pytest.skip(str(e))
    assert bench["main"](["--sizes", "1x32", "--blocks", "2", "--repeats", "2", "--steps", "8",
                          "--build", str(build), "--out", str(tmp_path),
                          "--name", "smoke", *argv]) == 0
    return json.loads((tmp_path / "smoke.json").read_text()), (tmp_path / "smoke.md").read_text()


def test_bench_rtneural_checks_rtneural_against_the_stream_before_timing(tmp_path, monkeypatch,
                                                                         rtneural_build):
    """The program times nothing unless RTNeural's LSTMLayerT / GRULayerT and rnx_stream_step,
    on the same weights, agree within 1e-5 at each of 1000 steps, and the stream's bf16 and int8
    within 5e-2 (it exits non-zero otherwise); the report holds both cells, each engine's times
    and each precision's max abs diff."""
    report, text = run_rtneural_smoke(monkeypatch, tmp_path, rtneural_build, [])
    points = report["points"]
    assert report["machine"]["precisions"] == ["fp32", "bf16", "int8"]
    assert [(p["cell"], p["input_size"], p["hidden_size"]) for p in points] == [
        ("lstm", 1, 32), ("gru", 1, 32)]
    for p in points:
        assert p["check_steps"] == 1000 and 0 < p["max_abs_diff"] <= 1e-5
        for engine in ("rtneural", "rnnext", "rnnext_bf16", "rnnext_int8"):
            assert p[f"{engine}_ns"] > 0 and len(p[f"{engine}_block_ns"]) == 2, (p, engine)
            assert all(ns > 0 for ns in p[f"{engine}_block_ns"]), (p, engine)
        for precision in ("bf16", "int8"):
            # really reduced (beyond fp32's tolerance), and within the bound
            assert 1e-5 < p[f"max_abs_diff_{precision}"] <= 5e-2, (p, precision)
    assert ("| RTNeural / rnnext (both fp32) | RTNeural fp32 / rnnext bf16 "
            "| RTNeural fp32 / rnnext int8 |") in text
    rows = re.findall(r"^\| (\w+) \| 1 -> 32 \|(?: [^|]+ \|){10}$", text, re.M)
    assert rows == ["lstm", "gru"]


def test_bench_rtneural_times_fp32_and_the_precisions_asked_for(tmp_path, monkeypatch,
                                                                rtneural_build):
    report, text = run_rtneural_smoke(monkeypatch, tmp_path, rtneural_build,
                                      ["--precisions", "int8"])
    assert report["machine"]["precisions"] == ["fp32", "int8"]
    for p in report["points"]:
        assert p["rnnext_ns"] > 0 and p["rnnext_int8_ns"] > 0
        assert 1e-5 < p["max_abs_diff_int8"] <= 5e-2
        assert not [key for key in p if "bf16" in key]
    assert "rnnext bf16" not in text
    rows = re.findall(r"^\| (\w+) \| 1 -> 32 \|(?: [^|]+ \|){7}$", text, re.M)
    assert rows == ["lstm", "gru"]


def test_bench_rtneural_names_a_path_that_is_not_a_checkout(tmp_path, monkeypatch, capsys):
    bench = run_bench_rtneural(monkeypatch)
    assert bench["main"](["--rtneural", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert (f"--rtneural: expected an RTNeural checkout (holding RTNeural/RTNeural.h), "
            f"got '{tmp_path}'") in capsys.readouterr().err
