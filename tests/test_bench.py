"""bench/: the benchmarks' own checks on a small grid, so that the scripts keep running as the
library changes: the training benchmark's (rnnext's loss and gradients against torch autograd's
on the point's weights, both backends, before anything is timed) and the RTNeural stream
benchmark's (RTNeural's outputs against rnnext's stream on the same weights). Their timings are
not looked at here: speed is measured by running bench/ on a quiet machine, never asserted in a
test."""
import json
import os
import re
import runpy
import shutil

import pytest

from conftest import REPO

pytestmark = pytest.mark.usefixtures("source_tree")


def test_bench_train_checks_every_cell_against_torch_and_prints_its_row(capsys):
    pytest.importorskip("torch")
    bench = runpy.run_path(str(REPO / "bench" / "bench_train.py"), run_name="bench_train")
    assert bench["main"](["--points", "3x8", "--steps", "5", "--input-size", "4", "--repeats",
                          "1", "--numpy-seconds", "0", "--threads", "1"]) == 0
    rows = re.findall(r"^\| (\w+) \| 3 \| 8 \|", capsys.readouterr().out, re.M)
    assert rows == list(bench["CELLS"])


def run_bench_rtneural(monkeypatch):
    """bench_rtneural.py's names (its `common` import resolved from bench/)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return runpy.run_path(str(REPO / "bench" / "bench_rtneural.py"), run_name="bench_rtneural")


def test_bench_rtneural_checks_rtneural_against_the_stream_before_timing(tmp_path, monkeypatch):
    """The program times nothing unless RTNeural's LSTMLayerT / GRULayerT and rnx_stream_step,
    on the same weights, agree within 1e-5 at each of 1000 steps (it exits non-zero otherwise);
    the report holds both cells. Skips without an RTNeural checkout (RTNEURAL_DIR, or beside the
    repository), Eigen, make or a C++ compiler."""
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
                          "--build", str(tmp_path / "build"), "--out", str(tmp_path),
                          "--name", "smoke"]) == 0
    points = json.loads((tmp_path / "smoke.json").read_text())["points"]
    assert [(p["cell"], p["input_size"], p["hidden_size"]) for p in points] == [
        ("lstm", 1, 32), ("gru", 1, 32)]
    for p in points:
        assert p["check_steps"] == 1000 and 0 < p["max_abs_diff"] <= 1e-5
        assert len(p["rtneural_block_ns"]) == len(p["rnnext_block_ns"]) == 2
    rows = re.findall(r"^\| (\w+) \| 1 -> 32 \|", (tmp_path / "smoke.md").read_text(), re.M)
    assert rows == ["lstm", "gru"]


def test_bench_rtneural_names_a_path_that_is_not_a_checkout(tmp_path, monkeypatch, capsys):
    bench = run_bench_rtneural(monkeypatch)
    assert bench["main"](["--rtneural", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert (f"--rtneural: expected an RTNeural checkout (holding RTNeural/RTNeural.h), "
            f"got '{tmp_path}'") in capsys.readouterr().err
