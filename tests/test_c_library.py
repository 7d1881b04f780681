"""The C core as a library without Python: csrc/Makefile builds it and the example program links
it, builds an embedding -> LSTM -> dense (softmax) layer list, runs a batch of token ids and a
stream, and checks they agree step by step (and that each softmax output sums to one)."""
import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="make or a C compiler is missing")
def test_makefile_builds_library_and_example(tmp_path, source_tree):
    src = tmp_path / "csrc"
    shutil.copytree(REPO / "csrc", src, ignore=shutil.ignore_patterns("*.o", "*.a", "*.so"))
    build = subprocess.run(["make", "-s", "-C", str(src), "all", "examples/rnx_demo"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (src / "librnnext.so").exists() and (src / "librnnext.a").exists()
    run = subprocess.run([str(src / "examples" / "rnx_demo")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "differ by 0\n" in run.stdout and "sum to 10 over 10 steps" in run.stdout
