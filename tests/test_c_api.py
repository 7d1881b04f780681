"""The C core without Python: the C test runner (tests/c/runner/) built with gcc against the
sources csrc/sources.txt lists, plainly and under ASan+UBSan. Its own suites check the whole
public API (rnnext.h) against references computed in C: a double-precision reference of the
cells, finite differences for the gradients, invariants; here they must close with "N passed,
0 failed". Its stack mode is fed parameters and inputs written here, and its outputs are
compared with the NumPy reference: a uniform stack, and a layer list with every part built in C
(layer_list_model in tests/c/runner/stack.c) rebuilt here."""
import os
import platform
import re
import runpy
import shutil
import subprocess

import numpy as np
import pytest

from conftest import (HAS_SOURCE_TREE, NO_SOURCE_TREE, REPO, assert_f32_close, core_sources,
                      flat_core_params, flat_states, make_model, num_directions, random_lengths,
                      random_state, state_parts)
from rnnext import Model, _core, reference
from rnnext import layers as L

if not HAS_SOURCE_TREE:
    pytest.skip(NO_SOURCE_TREE, allow_module_level=True)
CSRC = REPO / "csrc"
RUNNER_SOURCES = sorted((REPO / "tests" / "c" / "runner").glob("*.c"))
CORPUS = REPO / "tests" / "c" / "corpus"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
CORE_SOURCES, X86_KERNELS = core_sources()
FLAGS = ["-std=gnu11", "-O2", "-fopenmp", f"-I{CSRC / 'include'}", f"-I{CSRC}"] + (
    ["-DRNX_X86_KERNELS=1"] if X86_64 else [])
# -O1 after FLAGS' -O2: the sanitized kernels build in half the time
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g", "-O1"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
CLOSING_LINE = re.compile(r"^(\d+) passed, (\d+) failed$")

# the stable numbers of rnnext.h's enums
CELL_CODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3, "gru_reset_before": 4}
ISA_CODES = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}


def gcc_or_skip():
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the C core is only tested through Python")
    return gcc


def compile_runner(out_dir, extra_flags=()):
    """The C core's sources (csrc/sources.txt: the x86-64 kernels with their flags, on x86-64
    only) and the runner's, each to its own object in out_dir (compiled side by side), linked
    to one executable; a compiler error fails the test with the compiler's message."""
    gcc = gcc_or_skip()
    sources = [(CSRC / name, []) for name in CORE_SOURCES] + [
        (CSRC / name, flags) for name, flags in X86_KERNELS.items() if X86_64] + [
        (src, []) for src in RUNNER_SOURCES]
    jobs = []
    for src, flags in sources:
        obj = out_dir / f"{src.parent.name}_{src.stem}.o"
        cmd = [gcc, *FLAGS, *extra_flags, *flags, "-c", str(src), "-o", str(obj)]
        jobs.append((cmd, obj, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)))
    for cmd, _, job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, f"{' '.join(cmd)}\n{err}"
    exe = out_dir / "runner"
    done = subprocess.run([gcc, *(str(obj) for _, obj, _ in jobs), "-fopenmp", *extra_flags,
                           "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return exe


def run_runner(exe, *args, env=None):
    """Runs the runner; it must exit 0 with the closing line "N passed, 0 failed" and nothing
    on stderr (a sanitizer's report). Returns N."""
    done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)
    lines = done.stdout.splitlines()
    closing = CLOSING_LINE.match(lines[-1]) if lines else None
    assert done.returncode == 0 and closing and closing[2] == "0", done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    return int(closing[1])


@pytest.fixture(scope="module")
def core_program(tmp_path_factory):
    return compile_runner(tmp_path_factory.mktemp("c_core"))


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
    return compile_runner(tmp_path_factory.mktemp("c_core_asan"), SANITIZE)


def test_c_runner_suites(core_program):
    """Every suite and the corpus; more tests than the API has areas (a runner that skipped its
    suites would close with few)."""
    assert run_runner(core_program, "--corpus", CORPUS) >= 25


@pytest.mark.parametrize("isa", ["scalar", "avx2", "nonsense"])
def test_c_runner_isa_from_the_environment(core_program, isa):
    """RNNEXT_ISA picks the default instruction set, or leaves none when it names nothing
    usable (the runner's isa_selection test reads it)."""
    assert run_runner(core_program, "--filter", "isa_selection",
                      env={**os.environ, "RNNEXT_ISA": isa}) == 1


def test_c_runner_under_address_and_undefined_sanitizers(sanitized_program):
    env = {**os.environ, **SANITIZER_ENV}
    assert run_runner(sanitized_program, "--corpus", CORPUS, env=env) >= 25
    assert run_runner(sanitized_program, "leaks", 20, env=env) == 20


def test_c_runner_reports_failures(core_program):
    """The harness's own contract: a filter that matches nothing is a usage error, and a
    corpus folder that does not exist is a failed test with file:line, exit status 1."""
    done = subprocess.run([str(core_program), "--filter", "no such test"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "no test matches" in done.stderr
    done = subprocess.run([str(core_program), "--filter", "corpus", "--corpus",
                           REPO / "no_such_folder"], capture_output=True, text=True)
    assert done.returncode == 1
    assert re.search(r"test_files\.c:\d+: corpus_files: failed: dir != NULL", done.stdout)
    assert done.stdout.splitlines()[-1] == "0 passed, 1 failed"


def test_corpus_is_what_make_corpus_writes():
    """tests/c/corpus/ is committed; it must be what tests/c/make_corpus.py writes today, and
    the inputs the fuzzer found (found_*)."""
    expected = runpy.run_path(str(REPO / "tests" / "c" / "make_corpus.py"))["corpus"]()
    made = [p.name for p in CORPUS.iterdir() if not p.name.startswith("found_")]
    assert sorted(made) == sorted(expected)
    for name, content in expected.items():
        assert (CORPUS / name).read_bytes() == content, name


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
    """stack.c's layer_list_model: its model (parameters from the same formula) and
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

    assert run_runner(program, "stack", tmp_path / "in.bin", tmp_path / "out.bin", env=env) == 3

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
