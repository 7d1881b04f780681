"""Model files: the safetensors layout, written here and read by the C core's parser.

A file is 8 bytes of little-endian header length, a JSON header (each tensor's dtype, shape and
data_offsets, and ``__metadata__`` with the architecture and the format version, all strings),
then the tensors' raw little-endian bytes; see "Files" in csrc/include/rnnext.h. The safetensors
tools open it. Loading parses the header in C (csrc/safetensors.c), which checks every length,
offset, shape and dtype and the architecture, and never runs code from the file; every failure is
a ValueError that says what is wrong.
"""
import json
import os
import struct

import numpy as np

from . import layers as L
from . import reference
from ._core import PRECISIONS
from .cells import dense_param_name
from .model import Model, _choice

# An I8 tensor NAME's row scales are the F32 tensor NAME + SCALE_SUFFIX (see to_bytes).
SCALE_SUFFIX = ".scale"


def to_bytes(model, precision=None):
    """The model as the bytes of an rnnext file (format version 2: the layer list in the
    metadata, float32 tensors in parameter order). precision (None: the model's), which the
    metadata's "precision" says and load restores: at "bf16" the recurrent weights that bf16
    rounds (reference.ROUNDED_PARAMS) are BF16 tensors, rounded. At "int8" each recurrent
    weight_ih and weight_hh NAME is quantized per row as the int8 model quantizes it
    (reference.quantize_weight): an I8 tensor NAME of its shape holds q, and right after it an
    F32 tensor NAME + ".scale" of shape (rows,) holds the row scales (the layout of ONNX
    Runtime's and PyTorch's per-channel quantized weights); load reads NAME as q * scale, which
    quantizes back to the same q. Such a weight must be finite (ValueError otherwise)."""
    precision = model._call_precision(precision)
    meta = L.to_metadata(model.spec)
    rounded = set()
    if precision != "fp32":
        meta["precision"] = precision
        # at int8 these are weight_ih and weight_hh: int8 has no projection (weight_hr)
        rounded = reference.rounded_param_names(model.spec)
    header, chunks, offset = {"__metadata__": meta}, [], 0

    def add(name, dtype, array):
        nonlocal offset
        data = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)

    for name in model.param_shapes():
        values = np.ascontiguousarray(model.params[name], dtype="<f4")
        if name in rounded and precision == "int8":
            bad = np.count_nonzero(~np.isfinite(values))
            if bad:
                raise ValueError(f"model.params[{name!r}]: expected finite weights to store at "
                                 f"int8 (one scale per row), got {bad} NaN or infinite values")
            q, scale = reference.quantize_weight(values)
            add(name, "I8", q.astype("i1"))
            add(name + SCALE_SUFFIX, "F32", scale.astype("<f4"))
        elif name in rounded:  # a bfloat16 is the top half of the rounded float's bits
            add(name, "BF16", (reference.bf16_round(values).view("<u4") >> 16).astype("<u2"))
        else:
            add(name, "F32", values)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(model, path, precision=None):
    """Writes the model to `path` as an rnnext (safetensors) file (precision: see to_bytes)."""
    data = to_bytes(model, precision)
    with open(path, "wb") as f:
        f.write(data)


def _read(source):
    """(bytes, a name for messages) of a path or a bytes-like object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "rnnext file (bytes)"
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(), f"rnnext file {os.fspath(source)!r}"
    raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")


def _version1_layers(meta):
    """The layer list of a format-version-1 file (a uniform stack and an optional head), whose
    metadata the C parser has checked, and its tensors' names in today's names."""
    head = "output_size" in meta
    layers, input_size = L.shorthand(
        meta["cell"], int(meta["input_size"]), int(meta["hidden_size"]),
        int(meta["num_layers"]), meta["bidirectional"] == "1",
        nonlinearity=meta.get("nonlinearity", "tanh"),
        linear_before_reset=meta.get("linear_before_reset", "1") == "1",
        output_size=int(meta["output_size"]) if head else None,
        output=meta.get("output", "many_to_one") if head else "many_to_many",
        activation=None if meta.get("activation", "none") == "none" else meta["activation"])
    renamed = {"head.weight": dense_param_name("weight", 0),
               "head.bias": dense_param_name("bias", 0)}
    return L.build(layers, input_size), renamed


def load(source, backend="c"):
    """A Model from an rnnext file (format version 1 or 2): a path, or the file's bytes."""
    from ._core import TensorFile

    data, what = _read(source)
    table = TensorFile(data, what)
    table.model_layers(what)  # the C parser's checks: what a C program would accept
    meta = table.metadata()
    precision = "fp32"
    if meta.get("format_version") == "1":
        spec, renamed = _version1_layers(meta)
    else:
        meta = dict(meta)
        try:
            precision = _choice("metadata['precision']", meta.pop("precision", "fp32"),
                                tuple(PRECISIONS))
            spec, renamed = L.from_metadata(meta), {}
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    # the C parser's checks leave a SCALE_SUFFIX tensor only as an I8 tensor's scales, which
    # reading that tensor applies
    params = {renamed.get(name, name): table.read(i)
              for i, (name, *_) in enumerate(table.tensors()) if not name.endswith(SCALE_SUFFIX)}
    return Model(list(spec.layers), spec.input_size, backend=backend, params=params,
                 precision=precision)


def inspect(source):
    """What a file holds: {"metadata", "tensors" [(name, dtype, shape, offset, nbytes)],
    "file_bytes", "parameters" (elements of all tensors), "model" (the Model, or None with the
    reason in "error" when the file is a safetensors file but not a valid rnnext model)}."""
    from ._core import TensorFile

    data, what = _read(source)
    table = TensorFile(data, what)
    info = {"metadata": table.metadata(), "tensors": table.tensors(), "file_bytes": len(data),
            "parameters": sum(int(np.prod(shape)) for _, _, shape, _, _ in table.tensors()),
            "model": None, "error": None}
    try:
        info["model"] = load(data)
    except ValueError as e:
        info["error"] = str(e)
    return info


def _unpickle(data, backend, precision="fp32"):  # pickles of 0.3.0 carry no precision
    model = load(data, backend=backend)
    model.precision = precision
    return model
