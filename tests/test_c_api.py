"""The C core without Python: tests/c/test_core.c built with gcc against csrc/*.c, fed
parameters and inputs written here, its outputs compared with the NumPy reference: a uniform
stack, and a layer list with every part built in C (check_layer_list_model) rebuilt here. The program
itself checks the contract of rnnext.h (versions, status strings, NULL and out-of-range
arguments) and exits 1 on any broken promise."""
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest

from conftest import (REPO, assert_f32_close, flat_core_params, flat_states, make_model,
                      num_directions, random_lengths, random_state, state_parts)
from rnnext import Model, _core, reference
from rnnext import layers as L

pytestmark = pytest.mark.usefixtures("source_tree")
CSRC = REPO / "csrc"
PROGRAM = REPO / "tests" / "c" / "test_core.c"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# per-file flags of the x86-64 kernels, as setup.py builds them; other machines skip those files
KERNEL_FLAGS = {"kernel_avx2.c": ["-mavx2", "-mfma"],
                "kernel_avx512.c": ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma"]}
FLAGS = ["-std=gnu11", "-O2", "-fopenmp", f"-I{CSRC / 'include'}", f"-I{CSRC}"] + (
    ["-DRNX_X86_KERNELS=1"] if X86_64 else [])
# -O1 after FLAGS' -O2: the sanitized kernels build in half the time
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g", "-O1"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}

# the stable numbers of rnnext.h's enums
CELL_CODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3, "gru_reset_before": 4}
ISA_CODES = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}


def gcc_or_skip():
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C core is only tested through Python")
    return gcc


def compile_program(out_dir, extra_flags=()):
    """Each csrc/*.c and the test program to its own object in out_dir (compiled side by side),
    linked to one executable; a compiler error fails the test with the compiler's message."""
    gcc = gcc_or_skip()
    jobs = []
    for src in sorted(CSRC.glob("*.c")) + [PROGRAM]:
        if src.name in KERNEL_FLAGS and not X86_64:
            continue
        obj = out_dir / (src.stem + ".o")
        cmd = [gcc, *FLAGS, *extra_flags, *KERNEL_FLAGS.get(src.name, []), "-c", str(src),
               "-o", str(obj)]
        jobs.append((cmd, obj, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)))
    for cmd, _, job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, f"{' '.join(cmd)}\n{err}"
    exe = out_dir / "test_core"
    done = subprocess.run([gcc, *(str(obj) for _, obj, _ in jobs), "-fopenmp", *extra_flags,
                           "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return exe


@pytest.fixture(scope="module")
def core_program(tmp_path_factory):
    return compile_program(tmp_path_factory.mktemp("c_core"))


@pytest.fixture(scope="module")
def sanitized_program(tmp_path_factory):
    gcc = gcc_or_skip()
    probe_dir = tmp_path_factory.mktemp("sanitizer_probe")
    (probe_dir / "probe.c").write_text("#include <stdlib.h>\n"
                                       "int main(void) { free(malloc(8)); return 0; }\n")
    probe = subprocess.run([gcc, *SANITIZE, "-fopenmp", str(probe_dir / "probe.c"), "-o",
                            str(probe_dir / "probe")], capture_output=True, text=True)
    if probe.returncode != 0 or subprocess.run([str(probe_dir / "probe")],
                                               capture_output=True).returncode != 0:
        pytest.skip("gcc cannot build or run a program with -fsanitize=address,undefined here")
    return compile_program(tmp_path_factory.mktemp("c_core_asan"), SANITIZE)


# (cell, num_layers, bidirectional, I, H, B, T, lengths, initial state, isa, n_threads)
CASES = [
    ("lstm", 2, True, 5, 7, 6, 9, "mixed", True, "auto", 2),
    ("gru", 1, False, 3, 17, 4, 12, "full", False, "scalar", 1),
    ("rnn_tanh", 3, True, 2, 5, 7, 4, "mixed", True, "avx2", 2),
    ("rnn_relu", 1, False, 4, 33, 3, 70, "mixed", False, "avx512", 1),
    ("lstm", 1, False, 8, 40, 1, 5, "ones", True, "scalar", 2),
    ("gru", 2, True, 6, 20, 9, 3, "mixed", True, "auto", 3),
    ("gru_reset_before", 2, False, 3, 12, 2, 30, "mixed", True, "auto", 2),
]


def layer_list_model():
    """test_core.c's check_layer_list_model: its model (parameters from the same formula) and
    inputs, as (Model, ids, mask)."""
    model = Model([L.Embedding(9, 5, padding_idx=0, mask_zero=True),
                   L.GRU(20, direction="bidirectional", merge="sum"),
                   L.LSTM(6, proj_size=4, peepholes=True, direction="reverse"),
                   L.Readout("max"), L.Dense(7, "relu"), L.Dense(3, "softmax")], seed=0)
    shapes = model.param_shapes()
    count = sum(int(np.prod(s)) for s in shapes.values())
    i = np.arange(count, dtype=np.int64)
    flat = ((i * 7919) % 1000).astype(np.float32) / np.float32(2000) - np.float32(0.25)
    params, at = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        params[name] = flat[at:at + size].reshape(shape)
        at += size
    model.set_params(params)
    B, T = 5, 23
    i = np.arange(B * T)
    return model, ((i * 5) % 9).reshape(B, T), ((i % 7 != 3) & (i >= T)).reshape(B, T)


def case_id(case):
    return "{}-L{}-{}-I{}-H{}-B{}-T{}-{}-{}-{}-thr{}".format(
        case[0], case[1], "bi" if case[2] else "uni", *case[3:7], case[7],
        "h0" if case[8] else "zero", *case[9:])


def run_and_compare(program, case, tmp_path, rng, env=None):
    cell, L, bidirectional, I, H, B, T, length_pattern, with_state, isa, n_threads = case
    if isa != "auto" and not _core.isa_supported(isa):
        pytest.skip(f"the {isa} kernels are not supported by this CPU/OS")
    model = make_model(cell, I, H, L, bidirectional)
    params = flat_core_params(model)
    assert params.size == sum(int(np.prod(s)) for s in model.param_shapes().values())
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = random_lengths(rng, length_pattern, B, T)
    h0 = c0 = None
    if with_state:
        parts = state_parts(random_state(rng, model, B))
        h0 = parts[0]
        c0 = parts[1] if cell == "lstm" else np.zeros_like(h0)  # read by the program, not used
    header = [CELL_CODES[cell], I, H, L, int(bidirectional), ISA_CODES[isa], B, T, n_threads,
              lengths is not None, with_state, params.size]
    arrays = [np.array(header, np.int32), params, x]
    if lengths is not None:
        arrays.append(lengths.astype(np.int32))
    if with_state:
        arrays += [h0, c0]
    (tmp_path / "in.bin").write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))

    done = subprocess.run([str(program), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr

    D, LD = num_directions(model), L * num_directions(model)
    out = np.fromfile(tmp_path / "out.bin", np.float32)
    ny, ns = B * T * D * H, LD * B * H
    list_model, list_ids, list_mask = layer_list_model()
    list_y, list_state = list_model.forward(list_ids, mask=list_mask, backend="numpy")
    list_h, list_c = flat_states(list_state)
    assert out.size == ny + 2 * ns + list_y.size + list_h.size + list_c.size
    y, h_n, c_n = (out[:ny].reshape(B, T, D * H), out[ny:ny + ns].reshape(LD, B, H),
                   out[ny + ns:ny + 2 * ns].reshape(LD, B, H))
    rest = out[ny + 2 * ns:]
    assert_f32_close(rest[:list_y.size].reshape(list_y.shape), list_y, "layer list y")
    assert_f32_close(rest[list_y.size:-list_c.size], list_h, "layer list h_n")
    assert_f32_close(rest[-list_c.size:], list_c, "layer list c_n")
    y_ref, h_ref, c_ref = reference.forward(cell, model.params, x, L, bidirectional, h0,
                                            c0 if cell == "lstm" else None, lengths)
    assert_f32_close(y, y_ref, "y")
    assert_f32_close(h_n, h_ref, "h_n")
    if cell == "lstm":
        assert_f32_close(c_n, c_ref, "c_n")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_c_program_matches_reference(core_program, case, tmp_path, rng):
    run_and_compare(core_program, case, tmp_path, rng)


@pytest.mark.parametrize("case", CASES[:3] + CASES[-1:], ids=case_id)
def test_c_program_under_address_and_undefined_sanitizers(sanitized_program, case, tmp_path,
                                                          rng):
    run_and_compare(sanitized_program, case, tmp_path, rng, env={**os.environ, **SANITIZER_ENV})
