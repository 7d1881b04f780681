"""Model files (safetensors layout, parsed by the C core) and pickling.

Outside sources: the safetensors library reads our files and writes files we read; numpy and
torch convert F16/BF16/F64; corrupt files are built by hand from the format's definition.
"""
import json
import multiprocessing
import os
import pickle
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnext
from rnnext import Model

from conftest import REPO

ROOT = str(REPO)

ARCHITECTURES = [
    dict(cell="rnn", input_size=3, hidden_size=4),
    dict(cell="rnn", input_size=3, hidden_size=4, nonlinearity="relu", num_layers=2),
    dict(cell="lstm", input_size=5, hidden_size=6, num_layers=2, bidirectional=True),
    dict(cell="gru", input_size=2, hidden_size=7, bidirectional=True, output_size=3,
         activation="softmax"),
    dict(cell="lstm", input_size=4, hidden_size=3, output_size=2, output="many_to_many",
         activation="sigmoid"),
    dict(cell="gru", input_size=3, hidden_size=4, num_layers=2, linear_before_reset=False),
]


def small_file():
    return Model("rnn", 2, 1, seed=0).to_bytes()


def split(data):
    """(header dict, data bytes) of a file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def build(header, payload, raw_header=None):
    """A file from a header (dict, or raw bytes) and its data."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def load_error(data):
    with pytest.raises(ValueError) as info:
        rnnext.load(data)
    return str(info.value)


# ------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(map(str, a.values())))
def test_save_load_round_trip(tmp_path, arch):
    model = Model(seed=3, **arch)
    path = tmp_path / "model.rnx"
    model.save(path)
    for loaded in (rnnext.load(path), rnnext.load(str(path)), rnnext.load(path.read_bytes())):
        assert repr(loaded) == repr(model)
        assert loaded.params.keys() == model.params.keys()
        for name in model.params:
            np.testing.assert_array_equal(loaded.params[name], model.params[name])
        x = np.random.default_rng(0).standard_normal((3, 5, arch["input_size"]), np.float32)
        np.testing.assert_array_equal(loaded.forward(x)[0], model.forward(x)[0])


def test_file_layout_is_safetensors():
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")

    model = Model("lstm", 3, 4, num_layers=2, bidirectional=True, output_size=2, seed=1)
    data = model.to_bytes()
    tensors = safetensors_numpy.load(data)
    assert tensors.keys() == model.params.keys()
    for name, value in tensors.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, model.params[name])
    header_len = struct.unpack("<Q", data[:8])[0]
    assert (8 + header_len) % 8 == 0, "data should start 8-byte aligned"
    meta = split(data)[0]["__metadata__"]
    assert meta["format"] == "rnnext" and meta["format_version"] == "1"
    assert all(isinstance(v, str) for v in meta.values())


def test_reads_files_written_by_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = Model("gru", 3, 5, bidirectional=True, output_size=2, seed=2)
    path = tmp_path / "model.safetensors"
    meta = {k: v for k, v in split(model.to_bytes())[0]["__metadata__"].items()}
    safetensors_numpy.save_file(dict(model.params), str(path), metadata=meta)
    loaded = rnnext.load(path)
    x = np.random.default_rng(1).standard_normal((2, 4, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_reads_other_float_dtypes(dtype):
    """F16, BF16 and F64 tensors are read as float32, as numpy/torch convert them."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    model = Model("lstm", 3, 4, seed=4)
    meta = split(model.to_bytes())[0]["__metadata__"]
    if dtype == "bfloat16":
        torch = pytest.importorskip("torch", reason="torch not installed")
        from safetensors.torch import save

        source = {k: torch.from_numpy(v * 1e3).to(torch.bfloat16) for k, v in model.params.items()}
        data = save(source, metadata=meta)
        expected = {k: v.float().numpy() for k, v in source.items()}
    else:
        # include subnormals, large values and signed zeros to exercise the conversions
        source = {k: (v * 1e3).astype(dtype) for k, v in model.params.items()}
        source["bias_ih_l0"][:4] = np.array([6e-8, -0.0, 65504, -3e-5], dtype)
        data = safetensors_numpy.save(source, metadata=meta)
        expected = {k: v.astype(np.float32) for k, v in source.items()}
    loaded = rnnext.load(data)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.params[name], value)
        assert np.array_equal(np.signbit(loaded.params[name]), np.signbit(value))


def test_pickle_is_cheap_and_exact():
    model = Model("lstm", 8, 16, num_layers=2, output_size=3, activation="softmax", seed=5,
                  backend="numpy")
    x = np.random.default_rng(2).standard_normal((2, 6, 8), np.float32)
    model.predict(x, backend="c")  # builds the native handle, which must not travel
    blob = pickle.dumps(model)
    weights = sum(v.nbytes for v in model.params.values())
    assert len(blob) < weights + 2048
    clone = pickle.loads(blob)
    assert clone.backend == "numpy" and clone._core is None
    np.testing.assert_array_equal(clone.predict(x, backend="c"), model.predict(x, backend="c"))


def _predict_in_worker(model, x):
    return model.predict(x)


def test_pickle_ships_to_a_worker_process():
    model = Model("gru", 4, 8, bidirectional=True, output_size=2, seed=6)
    x = np.random.default_rng(3).standard_normal((3, 5, 4), np.float32)
    # spawn: a forked child of a process whose OpenMP pool has started can hang in libgomp
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        remote = pool.apply(_predict_in_worker, (model, x))
    np.testing.assert_array_equal(remote, model.predict(x))


def test_inspect_reports_architecture_and_sizes():
    model = Model("lstm", 3, 4, num_layers=2, output_size=2, seed=0)
    data = model.to_bytes()
    info = rnnext.io.inspect(data)
    assert info["file_bytes"] == len(data)
    assert info["parameters"] == sum(v.size for v in model.params.values())
    assert [t[0] for t in info["tensors"]] == list(model.param_shapes())
    assert repr(info["model"]) == repr(model)


# ------------------------------------------------------------------------------------------------
# corrupt files: every failure is a ValueError that names it


def test_every_truncation_is_refused():
    data = small_file()
    for n in range(len(data)):
        message = load_error(data[:n])
        assert "truncated" in message or "header" in message, (n, message)
    assert "truncated: the tensors need" in load_error(data[:-1])


def test_trailing_bytes_are_refused():
    assert "bytes after the last tensor" in load_error(small_file() + b"\0")


def test_every_flipped_header_byte_is_refused():
    data = small_file()
    header_len = struct.unpack("<Q", data[:8])[0]
    for i in range(8 + header_len):
        corrupt = bytearray(data)
        corrupt[i] ^= 0xFF
        load_error(bytes(corrupt))


@pytest.mark.parametrize("length, expected", [
    (2**64 - 1, "exceeds the limit"),
    (100_000_001, "exceeds the limit"),
    (10**6, "truncated: the header length is 1000000"),
    (0, "does not start with '{'"),
])
def test_header_length_field_out_of_range(length, expected):
    data = small_file()
    assert expected in load_error(struct.pack("<Q", length) + data[8:])


def _with_tensor(change):
    """The small file with its first tensor's header entry changed by change(entry)."""
    header, payload = split(small_file())
    change(header["weight_ih_l0"])
    return build(header, payload)


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.update(data_offsets=[0, 2**64 - 1]), "hold 18446744073709551615 bytes"),
    (lambda t: t.update(data_offsets=[8, 4]), "end before they begin"),
    (lambda t: t.update(data_offsets=[100, 108]), "'weight_hh_l0': data_offsets [8, 12] leave a gap of 8"),
    (lambda t: t.update(data_offsets=[2**64 - 9, 2**64 - 1]), "'weight_hh_l0': data_offsets [8, 12] leave a gap of 8"),
    (lambda t: t.update(data_offsets=[0, 8, 9]), "data_offsets has more than 2 entries"),
    (lambda t: t.update(data_offsets=[0]), "data_offsets has 1 entries"),
    (lambda t: t.update(shape=[1, 3]), "hold 8 bytes, but shape (1, 3) of F32 needs 12"),
    (lambda t: t.update(shape=[2**32, 2**32, 16]), "overflows 64 bits"),
    (lambda t: t.update(shape=[1] * 9), "shape has more than 8 entries"),
    (lambda t: t.update(shape=[1, -2]), "expected a non-negative integer"),
    (lambda t: t.update(shape=[1, 2.0]), "fraction or exponent"),
    (lambda t: t.update(dtype="I64"), "dtype 'I64' is not one of"),
    (lambda t: t.update(dtype=4), "expected a string"),
    (lambda t: t.update(extra=1), "unexpected key 'extra'"),
    (lambda t: t.pop("dtype"), "missing 'dtype'"),
    (lambda t: t.pop("data_offsets"), "missing 'data_offsets'"),
])
def test_bad_tensor_entries_name_the_tensor(change, expected):
    message = load_error(_with_tensor(change))
    assert "'weight_" in message and expected in message, message


def test_overlapping_tensors_are_refused():
    header, payload = split(small_file())
    header["bias_ih_l0"]["data_offsets"] = header["weight_hh_l0"]["data_offsets"]
    assert ("tensor 'bias_ih_l0': data_offsets [8, 12] overlap tensor 'weight_hh_l0'"
            in load_error(build(header, payload)))


def test_numbers_beyond_64_bits_are_refused():
    header, payload = split(small_file())
    text = json.dumps(header).replace('"data_offsets": [0, 8]',
                                      '"data_offsets": [0, 18446744073709551616]')
    assert "integer too large for 64 bits" in load_error(build(None, payload, text.encode()))


@pytest.mark.parametrize("text, expected", [
    (b'{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}', "expected '}'"),
    (b'{"a" {}}', "expected ':'"),
    (b'{"a\x01": {}}', "control character"),
    (b'{"a\xc3\x28": {}}', "invalid UTF-8"),
    (b'{"\\ud800": {}}', "unpaired surrogate"),
    (b'{"a\\u0000": {}}', "NUL character"),
    (b'{"a\\x": {}}', "invalid escape"),
    (b'{"__metadata__": {"format": 1}}', "the value of 'format' is not a string"),
    (b'{"__metadata__": {}, "__metadata__": {}}', "duplicate key '__metadata__'"),
    (b'{"__metadata__": {"k": "a", "k": "b"}}', "duplicate key 'k'"),
    (b'{} x', "unexpected bytes after the JSON object"),
    (b'[]', "does not start with '{'"),
])
def test_malformed_json_is_refused(text, expected):
    assert expected in load_error(build(None, b"", text))


def test_duplicate_tensor_names_are_refused():
    entry = b'{"dtype": "F32", "shape": [], "data_offsets": [%d, %d]}'
    text = b'{"a": ' + entry % (0, 4) + b', "a": ' + entry % (4, 8) + b'}'
    assert "duplicate tensor 'a'" in load_error(build(None, b"\0" * 8, text))


def test_padding_and_escapes_are_accepted():
    """Spaces after the JSON object (safetensors pads with them) and escaped names parse."""
    header, payload = split(small_file())
    text = json.dumps(header, ensure_ascii=True).replace("weight_ih_l0", "weight\\u005fih_l0")
    model = rnnext.load(build(None, payload, text.encode() + b"     "))
    np.testing.assert_array_equal(model.params["weight_ih_l0"],
                                  rnnext.load(small_file()).params["weight_ih_l0"])


def _with_metadata(change):
    header, payload = split(small_file())
    change(header["__metadata__"])
    return build(header, payload)


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.pop("format"), "missing 'format'"),
    (lambda m: m.update(format="pt"), "'format' is 'pt', expected 'rnnext'"),
    (lambda m: m.update(format_version="3"), "format_version 3 is newer"),
    (lambda m: m.update(format_version="x"), "'format_version' is 'x'"),
    (lambda m: m.update(cell="transformer"), "'cell' is 'transformer'"),
    (lambda m: m.update(hidden_size="0"), "'hidden_size' is '0'"),
    (lambda m: m.update(hidden_size="01"), "'hidden_size' is '01'"),
    (lambda m: m.update(input_size="99999999999"), "'input_size' is '99999999999'"),
    (lambda m: m.pop("num_layers"), "missing 'num_layers'"),
    (lambda m: m.update(bidirectional="2"), "'bidirectional' is '2'"),
    (lambda m: m.update(nonlinearity="gelu"), "'nonlinearity' is 'gelu'"),
    (lambda m: m.update(cell="lstm", nonlinearity="relu"), "'relu' is for the 'rnn' cell only"),
    (lambda m: m.update(input_size="3"), "tensor 'weight_ih_l0': expected shape (1, 3), got (1, 2)"),
    (lambda m: m.update(cell="lstm"), "expected shape (4, 2), got (1, 2)"),
    (lambda m: m.update(num_layers="2"), "missing tensor 'weight_ih_l1'"),
    (lambda m: m.update(bidirectional="1"), "missing tensor 'weight_ih_l0_reverse'"),
    (lambda m: m.update(output_size="2"), "missing tensor 'head.weight'"),
    (lambda m: m.update(hidden_size="16777217"), "expected a decimal integer in [1, 16777216]"),
    (lambda m: m.update(num_layers="1023"), "'num_layers' is '1023'"),
    (lambda m: m.update(linear_before_reset="0"), "'linear_before_reset' is for the 'gru' cell"),
    (lambda m: m.update(cell="gru", linear_before_reset="yes"), "'linear_before_reset' is 'yes'"),
])
def test_bad_architecture_is_refused(change, expected):
    assert expected in load_error(_with_metadata(change))


def test_unexpected_tensor_is_refused():
    header, payload = split(small_file())
    header["weight_ih_l00"] = {"dtype": "F32", "shape": [], "data_offsets": [len(payload),
                                                                              len(payload) + 4]}
    assert "unexpected tensor 'weight_ih_l00'" in load_error(build(header, payload + b"\0" * 4))


def test_bad_head_options_name_the_key():
    model = Model("rnn", 2, 3, output_size=2, seed=0)
    header, payload = split(model.to_bytes())
    header["__metadata__"]["activation"] = "relu6"
    assert "'activation' is 'relu6'" in load_error(build(header, payload))


def test_source_type_is_checked():
    with pytest.raises(TypeError, match="source: expected a path or bytes, got int"):
        rnnext.load(3)


# ------------------------------------------------------------------------------------------------
# fuzzing (bounded): the loader either returns a model or raises ValueError


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_loader(data):
    original = Model("gru", 2, 2, output_size=2, seed=0).to_bytes()
    corrupt = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(corrupt) - 1))
        corrupt[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(corrupt)))
    try:
        model = rnnext.load(bytes(corrupt[:cut]))
    except ValueError:
        return
    assert cut == len(original)
    assert model.predict(np.zeros((1, 2, 2), np.float32)).shape == (1, 2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64 + 1) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["weight_ih_l0", "__metadata__", "a", "head.bias"]),
                       json_values, max_size=4),
       st.binary(max_size=24))
def test_fuzz_headers(header, payload):
    try:
        rnnext.load(build(header, payload))
    except ValueError:
        pass


# ------------------------------------------------------------------------------------------------
# the C API reads the same files, under AddressSanitizer and UndefinedBehaviorSanitizer


def build_file_loader(tmp_path):
    """tests/c/file_loader.c with the C core's sources (those the Makefile builds, baseline kernels
    only) under the sanitizers, or a skip where gcc cannot."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the C loader test needs it")
    exe = tmp_path / "file_loader"
    csrc = os.path.join(ROOT, "csrc")
    sources = [os.path.join(ROOT, "tests", "c", "file_loader.c")] + sorted(
        os.path.join(csrc, name) for name in os.listdir(csrc)
        if name.endswith(".c") and not name.startswith(("kernel_avx2", "kernel_avx512")))
    build_cmd = [gcc, "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all", "-I" + os.path.join(csrc, "include"), "-I" + csrc,
                 *sources, "-o", str(exe), "-lm"]
    built = subprocess.run(build_cmd, capture_output=True, text=True)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"this gcc cannot build with sanitizers: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr
    return exe


def run_file_loader(exe, model_path, x, tmp_path):
    """Runs the loader on a model file and input x (B, T, I) float32 or (B, T) int32 ids;
    (stdout, y as a flat float32 array) after checking that every corrupt file was refused
    with a message."""
    x_path, y_path = tmp_path / "x.bin", tmp_path / "y.bin"
    x.tofile(x_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    args = [str(exe), str(model_path), str(x_path), str(x.shape[0]), str(x.shape[1]), str(y_path)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    if run.returncode != 0 and "LeakSanitizer does not work" in run.stderr:
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "truncations accepted 0" in run.stdout
    assert "failures without a message 0" in run.stdout
    return run.stdout, np.fromfile(y_path, np.float32)


def test_c_loader_under_sanitizers(tmp_path):
    exe = build_file_loader(tmp_path)
    model = Model("lstm", 3, 2, bidirectional=True, seed=7)
    model.save(tmp_path / "m.rnx")
    x = np.random.default_rng(4).standard_normal((2, 3, 3)).astype(np.float32)
    stdout, y = run_file_loader(exe, tmp_path / "m.rnx", x, tmp_path)

    table = [line.split() for line in stdout.splitlines() if line.startswith("tensor ")]
    expected = rnnext.io.inspect(tmp_path / "m.rnx")["tensors"]
    assert [(t[1], t[2], tuple(map(int, t[4:-2])), int(t[-2]), int(t[-1])) for t in table] == \
        [(name, dtype, shape, offset, nbytes) for name, dtype, shape, offset, nbytes in expected]
    y_ref = model.forward(x, backend="numpy")[0]
    np.testing.assert_allclose(y.reshape(2, 3, 4), y_ref, rtol=1e-4, atol=1e-5)
