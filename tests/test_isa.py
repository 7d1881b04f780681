"""Every instruction set's kernels against the NumPy reference, through the Cython CoreModel
(isa=...) and through the RNNEXT_ISA environment variable read at process start."""
import os

import numpy as np
import pytest

import rnnext
from conftest import (CELLS, ISAS, assert_f32_close, flat_core_params, flat_states,
                      make_model, num_directions, random_lengths, random_state, run_python,
                      require_isa, state_parts)
from rnnext import Model, _core, layers, reference


# (num_layers, bidirectional, B, T, H): H around each kernel's panel width (4, 8, 16 lanes; the
# RNN packs 4 vectors per panel) and B around its row tile (4, 3, 6 rows), so tails are run
SHAPES = [(1, False, 1, 3, 1), (2, True, 13, 9, 17), (1, False, 7, 20, 70), (3, True, 5, 4, 33),
          (1, True, 25, 70, 9), (2, False, 2, 15, 50)]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}-{}-B{}-T{}-H{}".format(
    s[0], "bi" if s[1] else "uni", *s[2:]))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISAS)
def test_isa_matches_reference(isa, cell, shape, n_threads, rng):
    require_isa(isa)
    L, bidirectional, B, T, H = shape
    I = 6
    model = make_model(cell, I, H, L, bidirectional)
    core = _core.CoreModel(layers.core_layers(model.spec), flat_core_params(model), isa=isa)
    assert core.isa == isa
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = random_lengths(rng, "mixed", B, T).astype(np.int32)
    state = random_state(rng, model, B)
    parts = state_parts(state)
    h0, c0 = flat_states(state)
    LD, DH = L * num_directions(model), num_directions(model) * H
    y = np.full((B, T, DH), np.nan, np.float32)
    h_n = np.full(LD * B * H, np.nan, np.float32)
    c_n = np.full(LD * B * H if cell == "lstm" else 0, np.nan, np.float32)
    core.forward(y, h_n, c_n, x, None, h0, c0 if cell == "lstm" else None, lengths, None,
                 n_threads)
    y_ref, h_ref, c_ref = reference.forward(cell, model.params, x, L, bidirectional, parts[0],
                                            parts[1] if cell == "lstm" else None, lengths)
    assert_f32_close(y, y_ref, "y")
    assert_f32_close(h_n.reshape(LD, B, H), h_ref, "h_n")
    if cell == "lstm":
        assert_f32_close(c_n.reshape(LD, B, H), c_ref, "c_n")


@pytest.mark.parametrize("isa", ["avx2", "avx_vnni", "avx512"])
def test_unsupported_isa_is_refused(isa):
    if _core.isa_supported(isa):
        pytest.skip(f"this CPU supports {isa}: nothing to refuse")
    with pytest.raises(RuntimeError, match=isa):
        gru = layers.core_layers(make_model("gru", 2, 3).spec)
        _core.CoreModel(gru, np.zeros(_core.param_count(gru), np.float32), isa=isa)


def test_default_isa_is_the_widest_supported():
    if os.environ.get("RNNEXT_ISA"):
        pytest.skip("RNNEXT_ISA is set in this environment")
    widest = [isa for isa in ISAS if _core.isa_supported(isa)][-1]
    assert _core.default_isa() == widest
    assert make_model("gru").core().isa == widest


# ---------------------------------------------------------------------------------------------
def test_show_config_names_the_build_flags_and_the_openmp_runtime_loaded():
    config = rnnext.config.config()
    flags = config["build_flags"]
    assert flags.startswith("-O3 ") and "-march=native" not in flags
    if not _core.has_openmp():
        assert config["openmp_runtime"] is None and "-fopenmp" not in flags
        return
    assert "-fopenmp" in flags
    path = config["openmp_runtime"].split(" (_OPENMP ")[0]
    assert os.path.basename(path).startswith(("libgomp", "libomp", "libiomp"))
    if os.path.exists("/proc/self/maps"):   # a file the kernel says this process has mapped
        with open("/proc/self/maps") as f:
            mapped = {os.path.realpath(line.split()[-1]) for line in f if "/" in line}
        assert os.path.realpath(path) in mapped


# RNNEXT_ISA in a fresh process


def test_env_scalar_is_reported_by_show_config():
    out = run_python("import rnnext; rnnext.show_config()", RNNEXT_ISA="scalar")
    assert out.returncode == 0, out.stderr
    assert any(line.split() == ["isa:", "scalar"] for line in out.stdout.splitlines()), out.stdout


@pytest.mark.parametrize("isa", ISAS)
def test_env_forces_the_isa_of_every_model(isa):
    """A Model built under RNNEXT_ISA=isa runs that ISA's kernels: bit for bit what a CoreModel
    built with isa= gives."""
    require_isa(isa)
    out = run_python("""
        import numpy as np
        from rnnext import Model, _core, layers
        model = Model("lstm", 4, 9, num_layers=2, bidirectional=True, output="many_to_many",
                      seed=0)
        assert model.core().isa == %r, model.core().isa
        x = np.random.default_rng(0).standard_normal((5, 7, 4)).astype(np.float32)
        y, (h, c) = model.forward(x, n_threads=1)
        flat = np.concatenate([model.params[n].ravel() for n in model.param_shapes()])
        core = _core.CoreModel(layers.core_layers(model.spec), flat, isa=%r)
        y2, h2, c2 = np.empty_like(y), np.empty(h.size, np.float32), np.empty(c.size, np.float32)
        core.forward(y2, h2, c2, x, None, None, None, None, None, 1)
        assert np.array_equal(y, y2) and np.array_equal(h.ravel(), h2)
        assert np.array_equal(c.ravel(), c2)
        print("ok")
        """ % (isa, isa), RNNEXT_ISA=isa)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_env_bogus_isa_is_a_clear_error():
    out = run_python("""
        import numpy as np
        import rnnext
        model = rnnext.Model("gru", 2, 3, seed=0)
        x = np.zeros((1, 4, 2), np.float32)
        model.forward(x, backend="numpy")
        try:
            model.forward(x)
        except RuntimeError as e:
            print("RuntimeError:", e)
        rnnext.show_config()
        """, RNNEXT_ISA="bogus")
    assert out.returncode == 0, out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("RuntimeError:")]
    assert len(errors) == 1 and "RNNEXT_ISA" in errors[0], out.stdout
    assert "bogus" in next(line for line in out.stdout.splitlines() if "isa:" in line)


@pytest.mark.parametrize("first", [layers.GRU(37, clip=1.0), layers.LSTM(37, peepholes=True),
                                   layers.RNN(5, activations=("softsign",))],
                         ids=["gru_clip", "lstm_peepholes", "rnn_softsign"])
@pytest.mark.parametrize("isa", ISAS)
def test_plain_layer_of_odd_width_before_packed_layers(isa, first, rng):
    """A layer on the plain path projects G*H floats per row, any number (here 111, 148, 5); the
    packed layers after it store whole aligned vectors into the same rows (this crashed: rows of
    111 floats left the second row unaligned). Batch and stream against the reference."""
    require_isa(isa)
    model = Model([first, layers.RNN(30), layers.GRU(9), layers.Dense(3)], 4, seed=1)
    core = _core.CoreModel(layers.core_layers(model.spec), flat_core_params(model), isa=isa)
    B, T = 9, 6
    x = rng.standard_normal((B, T, 4)).astype(np.float32)
    y = np.empty((B, T, 3), np.float32)
    core.forward(y, None, None, x, None, None, None, None, None, 2)
    y_ref, _ = model.forward(x, backend="numpy")
    assert_f32_close(y, y_ref, "y")
    stream = core.stream(B)
    steps = [stream.step(np.ascontiguousarray(x[:, t])) for t in range(T)]
    assert_f32_close(np.stack(steps, axis=1), y_ref, "stream")
