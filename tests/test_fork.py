"""Workers forked after the parent ran OpenMP threads, rnnext's or another library's: libgomp
keeps a region's thread pool in its master thread, and the pool's threads are not copied by
fork(), so the core opens the forking thread's regions from a fresh thread. The children run on
their threads, report them, and give the parent's results."""
import shutil
import subprocess

import pytest

from conftest import run_python
from rnnext import _core

SCRIPT = """
    import multiprocessing as mp
    import numpy as np
    import rnnext

    model = rnnext.Model("gru", 8, 64, seed=0)
    x = np.random.default_rng(0).standard_normal((16, 20, 8)).astype(np.float32)
    expected = model.predict(x, n_threads=2)          # the parent starts OpenMP threads
    assert rnnext.config.last_call_threads() == 2

    def work(_):
        return model.predict(x, n_threads=2), rnnext.config.last_call_threads()

    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map_async(work, range(4)).get(timeout=60)
    assert all(np.array_equal(r, expected) for r, _ in results)
    assert [threads for _, threads in results] == [2] * 4
    assert np.allclose(expected, model.predict(x, backend="numpy"), rtol=1e-4, atol=1e-5)
    print("ok")
"""

# Another library's OpenMP region on the main thread, then a fork before any call of rnnext's:
# the child's forking thread holds that library's pool, the child's other threads do not.
FOREIGN = """
    import ctypes, os
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import rnnext

    assert ctypes.CDLL(os.environ["FOREIGN_LIB"]).foreign() == 2
    model = rnnext.Model("lstm", 8, 64, output_size=3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 30, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def calls():
        return (model.predict(x, n_threads=2), rnnext.config.last_call_threads(),
                model.loss_and_grads(x, y, n_threads=2)[1])

    def work(_):
        with ThreadPoolExecutor(1) as other:
            return calls(), other.submit(calls).result(timeout=60)

    with mp.get_context("fork").Pool(1) as pool:
        results = pool.map_async(work, range(2)).get(timeout=60)
    expected = calls()
    assert expected[1] == 2
    for got in (r for pair in results for r in pair):
        assert np.array_equal(got[0], expected[0]) and got[1] == 2
        assert all(np.array_equal(got[2][k], expected[2][k]) for k in expected[2])
    print("ok")
"""


def test_forked_workers_run_threads():
    run = run_python(SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


@pytest.mark.skipif(not _core.has_openmp() or shutil.which("cc") is None,
                    reason="needs an OpenMP build and a C compiler")
def test_forked_after_another_librarys_openmp_region(tmp_path):
    source = tmp_path / "foreign.c"
    source.write_text("int foreign(void) {\n"
                      "    int n = 0;\n"
                      "#pragma omp parallel num_threads(2)\n"
                      "    {\n"
                      "#pragma omp atomic\n"
                      "        n++;\n"
                      "    }\n"
                      "    return n;\n"
                      "}\n")
    lib = tmp_path / "libforeign.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-fopenmp", str(source), "-o", str(lib)],
                   check=True, timeout=60)
    run = run_python(FOREIGN, FOREIGN_LIB=str(lib))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
