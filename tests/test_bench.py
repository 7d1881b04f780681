"""bench/: the training benchmark's own check (rnnext's loss and gradients against torch
autograd's on the point's weights, both backends, before anything is timed) on a small grid, so
that the script keeps running as the library changes. Its timings are not looked at here: speed
is measured by running bench/ on a quiet machine, never asserted in a test."""
import re
import runpy

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
