"""Shared helpers: models with random weights, inputs, states and the float32 comparison.

Every compiled result is judged against the NumPy reference (rnnext.reference), and the
reference itself against PyTorch in test_torch_parity.py.
"""
import ctypes
import itertools
import json
import os
import pathlib
import random
import runpy
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib

import numpy as np
import pytest

import rnnext
from rnnext import Model

REPO = pathlib.Path(__file__).resolve().parent.parent
# Where the rnnext these tests import lives (the installed package in CI, else the checkout):
# processes a test starts put it first on their path, or from the checkout they would import
# the uncompiled sources.
RNNEXT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rnnext.__file__)))


def run_python(code, **env_vars):
    """Runs code in a new interpreter with env_vars set, importing the rnnext these tests import.
    It runs outside the source tree, where `import rnnext` would find the uncompiled sources."""
    path = os.pathsep.join(p for p in (RNNEXT_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **env_vars, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=120)

# every recurrent cell the core knows, by its core name, as Model arguments
CELL_ARGS = {
    "rnn_tanh": {"cell": "rnn", "nonlinearity": "tanh"},
    "rnn_relu": {"cell": "rnn", "nonlinearity": "relu"},
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "gru_reset_before": {"cell": "gru", "linear_before_reset": False},
}
CELLS = list(CELL_ARGS)
# least to most preferred: the default is the last one supported
ISAS = ["scalar", "avx2", "avx_vnni", "avx512", "avx512_vnni", "avx512_bf16"]


def require_isa(isa):
    """A skip, with the reason, where this CPU/OS or build lacks the kernels of `isa`."""
    if not rnnext._core.isa_supported(isa):
        pytest.skip(f"the {isa} kernels are not supported by this CPU/OS or build")


F32_RTOL, F32_ATOL = 1e-4, 1e-5


def make_model(cell, input_size=3, hidden_size=5, num_layers=1, bidirectional=False, seed=0,
               **head):
    """A Model of the core cell `cell` (a key of CELL_ARGS) with PyTorch-style random weights
    (seeded), through the shorthand Model(cell, I, H, ...). head holds output_size, output,
    activation when a dense head is wanted; without output_size the model has no readout, so
    forward's y is the top layer's output sequence (B, T, D*H)."""
    model = Model(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bidirectional=bidirectional, seed=seed, **CELL_ARGS[cell], **head)
    assert core_cell(model) == cell
    return model


def core_cell(model):
    """The core's cell name of a uniform stack (rnn_tanh, rnn_relu, lstm, gru, gru_reset_before)."""
    return model.spec.recurrent[0].cell


def num_directions(model):
    """D of a uniform stack."""
    return model.spec.recurrent[0].num_directions


def random_x(rng, B, T, I):
    return rng.standard_normal((B, T, I)).astype(np.float32)


def random_lengths(rng, pattern, B, T):
    """None ("full"), all ones ("ones"), or lengths in [1, T] that include 1 and T where B
    allows ("mixed")."""
    if pattern == "full":
        return None
    if pattern == "ones":
        return np.ones(B, np.int64)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    if B > 1:
        lengths[-1] = 1
    return lengths


def random_state(rng, model, B):
    """An initial state of the model's shape, as forward takes it: for a uniform stack h
    (L*D, B, S), or (h, c) for the LSTM (c (L*D, B, H)); otherwise a list with h (D, B, S_k) or
    (h, c) per recurrent layer."""
    def one(r, count):
        h = (0.5 * rng.standard_normal((count, B, r.state_size))).astype(np.float32)
        if r.cell != "lstm":
            return h
        return h, (0.5 * rng.standard_normal((count, B, r.units))).astype(np.float32)

    recurrent = model.spec.recurrent
    if model.spec.uniform:
        return one(recurrent[0], sum(r.num_directions for r in recurrent))
    return [one(r, r.num_directions) for r in recurrent]


def state_parts(state):
    """The arrays of a state: (h,) or (h, c) of a uniform stack; for a list per recurrent layer
    every layer's arrays in order."""
    if isinstance(state, list):
        return tuple(p for entry in state for p in state_parts(entry))
    return tuple(state) if isinstance(state, tuple) else (state,)


def forward_imported(imported, x, state=None, lengths=None, mask=None):
    """Model.forward of an importer's (layers, input_size, params) on the reference: (y, state),
    state PyTorch's stacked h or (h, c) for a uniform stack, else a list with h or (h, c) per
    recurrent layer. The compiled core's forward is checked against it on the way."""
    layers, input_size, params = imported
    model = Model(layers, input_size, params=params)
    want = model.forward(x, state=state, lengths=lengths, mask=mask, backend="numpy")
    got = model.forward(x, state=state, lengths=lengths, mask=mask, backend="c")
    assert_f32_close(got[0], want[0], "compiled y")
    for k, (a, b) in enumerate(zip(_state_arrays(got[1]), _state_arrays(want[1]))):
        assert_f32_close(a, b, f"compiled state part {k}")
    return want


def _state_arrays(state):
    """The arrays of a Model state: stacked h or (h, c), or a list of them per layer."""
    parts = state if isinstance(state, list) else [state]
    return [a for part in parts for a in state_parts(part)]


def assert_f32_close(actual, expected, what=""):
    np.testing.assert_allclose(actual, expected, rtol=F32_RTOL, atol=F32_ATOL, err_msg=what)


def assert_forward_matches_reference(model, x, state=None, lengths=None, n_threads=None,
                                     mask=None, rtol=F32_RTOL, atol=F32_ATOL):
    """The compiled forward (y and every part of the final state) against the reference."""
    y_c, s_c = model.forward(x, state=state, lengths=lengths, mask=mask, n_threads=n_threads,
                             backend="c")
    y_r, s_r = model.forward(x, state=state, lengths=lengths, mask=mask, backend="numpy")
    assert y_c.shape == y_r.shape
    np.testing.assert_allclose(y_c, y_r, rtol=rtol, atol=atol, err_msg="y")
    parts_c, parts_r = state_parts(s_c), state_parts(s_r)
    assert len(parts_c) == len(parts_r)
    for i, (got, want) in enumerate(zip(parts_c, parts_r)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"state part {i}")


def flat_core_params(model):
    """Every parameter in the order the C core reads them (Model.param_shapes order: embedding,
    recurrent layers, dense layers), as one float32 array."""
    return np.concatenate([model.params[n].ravel() for n in model.param_shapes()]).astype(
        np.float32)


def flat_states(state):
    """A state as forward gives it (stacked arrays or a list per recurrent layer) as the core's
    flat (h, c) arrays: per recurrent layer and direction a (B, S_k) block (c: LSTM layers
    only, (B, H_k)); c is an empty array without LSTM layers."""
    entries = state if isinstance(state, list) else [state]
    hs, cs = [], []
    for entry in entries:
        parts = state_parts(entry)
        hs.append(np.ravel(parts[0]))
        if len(parts) == 2:
            cs.append(np.ravel(parts[1]))
    return (np.concatenate(hs).astype(np.float32),
            np.concatenate(cs or [np.empty(0)]).astype(np.float32))


def pairwise_cases(axes, seed=0):
    """Rows that together hold every pair of values of every two axes (a greedy covering
    array): far fewer rows than the cartesian product, and each value of each axis appears.
    axes: {name: list of values}; returns a list of {name: value}."""
    names = list(axes)
    uncovered = {(a, i, b, j)
                 for a, b in itertools.combinations(range(len(names)), 2)
                 for i in range(len(axes[names[a]])) for j in range(len(axes[names[b]]))}
    rnd = random.Random(seed)
    rows = []
    while uncovered:
        a, i, b, j = min(uncovered)
        row = {a: i, b: j}
        rest = [k for k in range(len(names)) if k not in row]
        rnd.shuffle(rest)
        for k in rest:
            def gain(v):
                return sum(((min(k, m), v if k < m else w, max(k, m), w if k < m else v)
                            in uncovered) for m, w in row.items())
            row[k] = max(range(len(axes[names[k]])), key=lambda v: (gain(v), rnd.random()))
        uncovered -= {(p, row[p], q, row[q])
                      for p, q in itertools.combinations(sorted(row), 2)}
        rows.append({names[k]: axes[names[k]][v] for k, v in row.items()})
    return rows


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name, so every test sees fixed data."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# False where tests/ alone was copied to run against an installed wheel (.ci/wheel)
HAS_SOURCE_TREE = all((REPO / name).is_file() for name in ("csrc/sources.txt", "setup.py",
                                                            "docs/maths.md"))
NO_SOURCE_TREE = ("needs the source tree (csrc/, setup.py, docs/) beside tests/: these tests run "
                  "from a copy of tests/ against an installed rnnext")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The image at `path` as matplotlib reads it back, after checking the PNG signature; a
    skip without matplotlib."""
    image = pytest.importorskip("matplotlib.image")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    return image.imread(path)


def keras_module():
    """keras on its torch backend (KERAS_BACKEND unless set: tensorflow is not needed), or a skip
    with the reason where keras is not installed."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras", reason="keras not installed")


def with_metadata(data, change):
    """The bytes of an rnnext file with its metadata replaced by change(metadata), the header
    padded to 8 bytes as safetensors writes it."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = change(header["__metadata__"])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


def core_sources():
    """csrc/sources.txt as setup.py reads it: ([the core's sources], {x86-64 kernel: its
    flags}); needs the source tree."""
    return runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")["read_sources"]()


@pytest.fixture(scope="session")
def source_tree():
    """The checkout (REPO) for tests that build from its C sources or setup.py, or read docs/;
    a skip without it. A module that reads the tree as it is imported skips itself instead:
    `if not HAS_SOURCE_TREE: pytest.skip(NO_SOURCE_TREE, allow_module_level=True)`."""
    if not HAS_SOURCE_TREE:
        pytest.skip(NO_SOURCE_TREE)
    return REPO


class RnxLayer(ctypes.Structure):
    """rnx_layer of rnnext.h, for the tests that call the C API through ctypes."""
    _fields_ = [(name, ctypes.c_int) for name in (
        "kind", "input_size", "units", "padding_idx", "mask_zero", "cell", "direction", "merge",
        "proj_size", "peepholes", "input_forget")] + [
        ("clip", ctypes.c_float), ("activations", ctypes.c_int * 3),
        ("alpha", ctypes.c_float * 3), ("beta", ctypes.c_float * 3), ("readout", ctypes.c_int),
        ("activation", ctypes.c_int), ("mask_value", ctypes.c_float)]


@pytest.fixture(scope="session")
def general_lib(tmp_path_factory, source_tree):
    """The core's baseline sources built as one shared library through ctypes, with the internal
    functions the tests call directly (general.c's plain path, the activation functions)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("general") / "libgeneral.so"
    core, _ = core_sources()
    sources = [str(REPO / "csrc" / name) for name in core]  # the baseline kernels only
    build = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-std=gnu11",
                            "-I" + str(REPO / "csrc" / "include"), "-I" + str(REPO / "csrc"),
                            *sources, "-o", str(out), "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    lib = ctypes.CDLL(str(out))
    lib.rnx_general_param_count.restype = ctypes.c_size_t
    lib.rnx_general_init.restype = ctypes.c_size_t
    lib.rnx_general_place.restype = ctypes.c_size_t
    lib.rnx_general_tape_width.restype = ctypes.c_size_t
    lib.rnx_general_scratch_size.restype = ctypes.c_size_t
    lib.rnx_act_value.restype = ctypes.c_float
    lib.rnx_act_value.argtypes = [ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float]
    lib.rnx_act_derivative.restype = ctypes.c_float
    lib.rnx_act_derivative.argtypes = lib.rnx_act_value.argtypes
    return lib
