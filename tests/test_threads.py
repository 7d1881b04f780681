"""Threads follow the share at call time: n_threads=None resolves at each call from
set_num_threads, OMP_NUM_THREADS as it is then, the CPU affinity and the cgroup quota. The
threads a call really ran on come from the core itself (last_call_threads), not from timing."""
import numpy as np
import pytest

import rnnext
from rnnext import config
from conftest import run_python

two_cpus = pytest.mark.skipif(config.cpu_count() < 2 or not rnnext._core.has_openmp(),
                              reason="needs OpenMP and 2 usable CPUs")

MODEL = rnnext.Model("lstm", 8, 32, seed=0)
X = np.random.default_rng(0).standard_normal((16, 5, 8)).astype(np.float32)


def threads_of_a_call(model=MODEL, x=X, **kwargs):
    y = model.predict(x, **kwargs)
    threads = config.last_call_threads()
    np.testing.assert_array_equal(y, model.predict(x, n_threads=1))
    return threads


@pytest.fixture(autouse=True)
def clean_setting(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rnnext.set_num_threads(None)
    yield
    rnnext.set_num_threads(None)


@two_cpus
def test_omp_num_threads_is_read_at_each_call(monkeypatch):
    for value, expected in [("1", 1), ("2", 2), ("1", 1), ("2,1", 2)]:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert rnnext.get_num_threads() == expected
        assert threads_of_a_call() == expected


@two_cpus
@pytest.mark.parametrize("at_start, later", [("1", "2"), ("2", "1")])
def test_environment_changed_after_openmp_started(at_start, later):
    """The reused-worker case: libgomp reads OMP_NUM_THREADS once, when it starts; a worker
    whose share changes later (Ray sets it per task) must follow the new value."""
    run = run_python(f"""
        import os, numpy as np, rnnext
        m = rnnext.Model("gru", 8, 32, seed=0)
        x = np.ones((16, 4, 8), np.float32)
        got = []
        for value in ("{at_start}", "{later}", "{at_start}"):
            os.environ["OMP_NUM_THREADS"] = value
            m.predict(x)
            got.append(rnnext.config.last_call_threads())
        print(got)
        """, OMP_NUM_THREADS=at_start)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str([int(at_start), int(later), int(at_start)])


@two_cpus
def test_cpu_count_caps_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert rnnext.get_num_threads() == config.cpu_count()
    monkeypatch.setattr(config, "cpu_count", lambda: 1)
    assert rnnext.get_num_threads() == 1
    assert threads_of_a_call() == 1


@pytest.mark.parametrize("value", ["", "0", "-2", "two", ",", " "])
def test_omp_num_threads_that_is_not_a_count_is_ignored(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    expected = config.cpu_count() if rnnext._core.has_openmp() else 1
    assert rnnext.get_num_threads() == expected


@two_cpus
def test_set_num_threads_and_the_context_manager(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rnnext.set_num_threads(2)
    assert rnnext.get_num_threads() == 2 and threads_of_a_call() == 2
    with rnnext.threads(1):
        assert threads_of_a_call() == 1
        with rnnext.threads(None):           # the environment's again
            assert threads_of_a_call() == 1
        with rnnext.threads(2):
            assert threads_of_a_call() == 2
        assert threads_of_a_call() == 1
    assert threads_of_a_call() == 2
    rnnext.set_num_threads(None)
    assert threads_of_a_call() == 1
    assert threads_of_a_call(n_threads=2) == 2    # a call's own count wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads_of_a_call(n_threads=-2) == 1   # counts back from the share at call time


@two_cpus
def test_a_small_batch_runs_on_fewer_threads_than_asked():
    tiny = rnnext.Model("rnn", 2, 4, seed=0)
    x = np.ones((1, 3, 2), np.float32)
    assert threads_of_a_call(tiny, x, n_threads=2) == 1


def test_context_manager_restores_after_an_error():
    with pytest.raises(RuntimeError):
        with rnnext.threads(1):
            raise RuntimeError("boom")
    assert config._setting is None


@pytest.mark.parametrize("bad, error, message", [
    (0, ValueError, "got 0"), (-1, ValueError, "a positive count, got -1"),
    (1.5, TypeError, "got float"), (True, TypeError, "got bool"), ("2", TypeError, "got str"),
    (1 << 20, ValueError, "at most"),
])
def test_set_num_threads_refuses(bad, error, message):
    with pytest.raises(error, match="n_threads: .*" + message):
        rnnext.set_num_threads(bad)
    with pytest.raises(error, match="n_threads"):
        with rnnext.threads(bad):
            pass
    assert config._setting is None


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage"}, None),
    ({}, None),
])
def test_cgroup_cpu_limit(tmp_path, files, limit):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert config.cgroup_cpu_limit(str(tmp_path)) == limit


@pytest.mark.parametrize("limit, expected", [(0.5, 1), (1.5, 2), (1.0, 1), (None, None)])
def test_cpu_count_rounds_the_quota_up(monkeypatch, limit, expected):
    monkeypatch.setattr(config, "cgroup_cpu_limit", lambda: limit)
    cpus = len(__import__("os").sched_getaffinity(0))
    assert config.cpu_count() == (cpus if expected is None else min(cpus, expected))


@two_cpus
def test_threadpoolctl_limits_reach_rnnext(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ours = [lib for lib in threadpoolctl.threadpool_info() if lib["internal_api"] == "rnnext"]
    assert len(ours) == 1 and ours[0]["user_api"] == "openmp"
    assert ours[0]["num_threads"] == rnnext.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert threads_of_a_call() == 1
    assert config._setting is None           # follows the environment again, not a fixed count
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_of_a_call() == 1
    rnnext.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1):
        assert threads_of_a_call() == 1
    assert config._setting == 2


@two_cpus
def test_forked_child_reports_what_its_calls_use():
    """A child forked before the parent ran threads, and one forked after (whose forking thread
    holds a pool of threads that were not copied), run on their share and report it."""
    run = run_python("""
        import multiprocessing as mp, numpy as np, rnnext
        m = rnnext.Model("gru", 8, 32, seed=0)
        x = np.ones((16, 4, 8), np.float32)

        def child(_):
            m.predict(x)
            return rnnext.config.config()["threads"], rnnext.config.last_call_threads()

        with mp.get_context("fork").Pool(1) as pool:
            before = pool.map_async(child, [0]).get(timeout=60)[0]
        m.predict(x, n_threads=2)
        with mp.get_context("fork").Pool(1) as pool:
            after = pool.map_async(child, [0]).get(timeout=60)[0]
        print(before, after)
        """, OMP_NUM_THREADS="2")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 2) (2, 2)"
