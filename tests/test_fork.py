"""A worker forked after the parent ran threads: libgomp cannot start threads there, so the core
runs such calls on one thread instead of waiting forever, with the same results."""
import textwrap

from conftest import run_python

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import rnnext

    model = rnnext.Model("gru", 8, 64, seed=0)
    x = np.random.default_rng(0).standard_normal((16, 20, 8)).astype(np.float32)
    expected = model.predict(x, n_threads=2)          # the parent starts OpenMP threads

    def work(_):
        return model.predict(x, n_threads=2)

    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map_async(work, range(4)).get(timeout=60)
    assert all(np.array_equal(r, expected) for r in results)
    assert np.allclose(expected, model.predict(x, backend="numpy"), rtol=1e-4, atol=1e-5)
    print("ok")
""")


def test_forked_workers_do_not_hang():
    run = run_python(SCRIPT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
