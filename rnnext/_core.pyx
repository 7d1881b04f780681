# Thin binding of the C core: memoryviews in, one call with the GIL released, status -> exception.
# Python (model.py) validates shapes and allocates outputs before anything reaches here.
# Alignment: the C core reads every array through typed pointers (float *, int32_t *), which C
# requires to be aligned for their type (rnnext.h); a valid NumPy array may start at any byte
# (np.frombuffer(buf, np.float32, offset=1)). Inputs pass through _aligned (a copy only where
# misaligned), and _data refuses a misaligned output, which cannot be written through a copy.
from libc.limits cimport INT_MAX
from libc.stdint cimport int32_t, uint8_t, uint64_t
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import os

import numpy as np
cimport numpy as np

np.import_array()

cdef extern from *:
    """
    static const char *rnx_built_with = __VERSION__;
    #ifndef RNX_BUILD_FLAGS
    #define RNX_BUILD_FLAGS "unknown (not built by setup.py)"
    #endif
    static const char *rnx_build_flags = RNX_BUILD_FLAGS;
    /* The file of the OpenMP runtime this module's calls go to, as the dynamic linker resolved
     * it ("" without OpenMP or where dladdr is missing), and the OpenMP version compiled for. */
    #if defined(_OPENMP) && !defined(_WIN32)
    #include <dlfcn.h>
    #include <omp.h>
    static const char *rnx_openmp_library(void) {
        Dl_info info;
        return dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname ? info.dli_fname : "";
    }
    static const int rnx_openmp_version = _OPENMP;
    #else
    static const char *rnx_openmp_library(void) { return ""; }
    static const int rnx_openmp_version = 0;
    #endif
    """
    const char *rnx_built_with
    const char *rnx_build_flags
    const char *rnx_openmp_library()
    const int rnx_openmp_version

ISAS = {"auto": RNX_ISA_AUTO, "scalar": RNX_ISA_SCALAR, "avx2": RNX_ISA_AVX2,
        "avx_vnni": RNX_ISA_AVX_VNNI, "avx512": RNX_ISA_AVX512,
        "avx512_vnni": RNX_ISA_AVX512_VNNI, "avx512_bf16": RNX_ISA_AVX512_BF16}
PRECISIONS = {"fp32": RNX_PRECISION_FP32, "bf16": RNX_PRECISION_BF16, "int8": RNX_PRECISION_INT8}
CELLS = {"rnn_tanh": RNX_CELL_RNN_TANH, "rnn_relu": RNX_CELL_RNN_RELU, "lstm": RNX_CELL_LSTM,
         "gru": RNX_CELL_GRU, "gru_reset_before": RNX_CELL_GRU_RESET_BEFORE}
LAYER_KINDS = {"embedding": RNX_LAYER_EMBEDDING, "recurrent": RNX_LAYER_RECURRENT,
               "readout": RNX_LAYER_READOUT, "dense": RNX_LAYER_DENSE,
               "masking": RNX_LAYER_MASKING}
DIRECTIONS = {"forward": RNX_DIRECTION_FORWARD, "reverse": RNX_DIRECTION_REVERSE,
              "bidirectional": RNX_DIRECTION_BIDIRECTIONAL}
MERGES = {"concat": RNX_MERGE_CONCAT, "sum": RNX_MERGE_SUM, "mul": RNX_MERGE_MUL,
          "ave": RNX_MERGE_AVE}
READOUTS = {"sequence": RNX_READOUT_SEQUENCE, "last": RNX_READOUT_LAST,
            "final": RNX_READOUT_FINAL, "mean": RNX_READOUT_MEAN, "max": RNX_READOUT_MAX}
ACTS = {"linear": RNX_ACT_LINEAR, "sigmoid": RNX_ACT_SIGMOID, "tanh": RNX_ACT_TANH,
        "relu": RNX_ACT_RELU, "hard_sigmoid": RNX_ACT_HARD_SIGMOID, "affine": RNX_ACT_AFFINE,
        "leaky_relu": RNX_ACT_LEAKY_RELU, "thresholded_relu": RNX_ACT_THRESHOLDED_RELU,
        "scaled_tanh": RNX_ACT_SCALED_TANH, "elu": RNX_ACT_ELU, "softsign": RNX_ACT_SOFTSIGN,
        "softplus": RNX_ACT_SOFTPLUS, "softmax": RNX_ACT_SOFTMAX, "relu6": RNX_ACT_RELU6,
        "selu": RNX_ACT_SELU, "gelu": RNX_ACT_GELU, "silu": RNX_ACT_SILU,
        "exponential": RNX_ACT_EXPONENTIAL, "mish": RNX_ACT_MISH, "hard_silu": RNX_ACT_HARD_SILU,
        "hard_tanh": RNX_ACT_HARD_TANH, "celu": RNX_ACT_CELU, "log_sigmoid": RNX_ACT_LOG_SIGMOID,
        "tanh_shrink": RNX_ACT_TANH_SHRINK, "soft_shrink": RNX_ACT_SOFT_SHRINK,
        "hard_shrink": RNX_ACT_HARD_SHRINK, "squareplus": RNX_ACT_SQUAREPLUS,
        "sparse_plus": RNX_ACT_SPARSE_PLUS, "sparse_sigmoid": RNX_ACT_SPARSE_SIGMOID}
MAX_SIZE = RNX_MAX_SIZE
INT8_MAX_K = RNX_INT8_MAX_K
MAX_LAYERS = RNX_MAX_LAYERS
MAX_THREADS = RNX_MAX_THREADS
MAX_ROWS = RNX_MAX_ROWS
# the enum each integer field of rnx_layer takes, for names given as strings
_FIELD_NAMES = {"kind": LAYER_KINDS, "cell": CELLS, "direction": DIRECTIONS, "merge": MERGES,
                "readout": READOUTS, "activation": ACTS}
_INT_FIELDS = ("kind", "input_size", "units", "padding_idx", "mask_zero", "cell", "direction",
               "merge", "proj_size", "peepholes", "input_forget", "readout", "activation")
_OTHER_FIELDS = ("clip", "activations", "alpha", "beta", "mask_value")  # floats, lists


cdef int check(rnx_status status, str what) except -1:
    if status == RNX_OK:
        return 0
    message = f"{what}: {rnx_status_string(status).decode()} (rnnext status {<int>status})"
    if status == RNX_ERR_OUT_OF_MEMORY:
        raise MemoryError(message)
    if status == RNX_ERR_ISA_UNAVAILABLE:
        raise RuntimeError(message)
    raise ValueError(message)


def check_batch(str name, B, T, shape):
    """Refuses B sequences of T steps that the C core cannot take: B and T are C ints, and a call
    runs at most RNX_MAX_ROWS steps in all (B * T). Models call it on either backend with the
    argument's name and shape, before anything is copied or allocated."""
    if B > INT_MAX or T > INT_MAX or B * T > RNX_MAX_ROWS:
        raise ValueError(f"{name}: expected at most {INT_MAX} sequences (B) and time steps (T), "
                         f"and at most {RNX_MAX_ROWS} steps in all (B * T), got shape "
                         f"{tuple(shape)}")


def version_number():
    return rnx_version_number()


def has_openmp():
    return bool(rnx_has_openmp())


def max_threads():
    return rnx_max_threads()


def last_team():
    return rnx_last_team()


def compiler():
    return rnx_built_with.decode()


def build_flags():
    return rnx_build_flags.decode()


def openmp_runtime():
    """(the OpenMP runtime library's file as loaded, or None; the OpenMP version built for as
    yyyymm, 0 without OpenMP)."""
    path = os.fsdecode(rnx_openmp_library())
    return path or None, rnx_openmp_version


def default_isa():
    """The instruction set chosen for this process, or None when RNNEXT_ISA names one that is
    unknown or unsupported."""
    cdef rnx_isa isa = rnx_default_isa()
    return None if isa == RNX_ISA_AUTO else rnx_isa_name(isa).decode()


def isa_supported(str name):
    return bool(rnx_isa_supported(ISAS[name]))


cdef object _aligned(object array):
    """array, or a C-contiguous copy of it where it is a NumPy array whose data is not aligned
    for its dtype (see the note at the top)."""
    if isinstance(array, np.ndarray) and not np.PyArray_ISALIGNED(<np.ndarray>array):
        return array.copy()
    return array


def activation(str name, x, str isa="auto"):
    """The kernels' vectorised sigmoid or tanh of x (float32, 1-D), on the kernels of `isa`."""
    cdef rnx_function f = RNX_FN_SIGMOID if name == "sigmoid" else RNX_FN_TANH
    if name not in ("sigmoid", "tanh"):
        raise ValueError(f"name: expected 'sigmoid' or 'tanh', got {name!r}")
    if x is None:
        raise TypeError("x: expected a float32 array, got None")
    cdef const float[::1] xv = _aligned(x)
    out = np.empty(xv.shape[0], np.float32)
    cdef float[::1] o = out
    check(rnx_activation(ISAS[isa], f, &o[0] if o.shape[0] else NULL,
                         &xv[0] if xv.shape[0] else NULL, xv.shape[0]), f"activation(isa={isa!r})")
    return out


# ------------------------------------------------------------------------------------------------
# layer lists: dicts whose keys are rnx_layer's field names

cdef int _enum_value(str field, value, int i) except? -1:
    if isinstance(value, str):
        names = _FIELD_NAMES.get(field)
        if names is None or value not in names:
            raise ValueError(f"layers[{i}].{field}: expected one of {sorted(names or ())}, got "
                             f"{value!r}")
        return names[value]
    return value


cdef rnx_layer _layer_from_dict(dict d, int i) except *:
    """rnx_layer from a dict. Missing keys: what the kind's rnx_*_layer helper fills (the cell's
    default activations for a recurrent layer, padding_idx -1 for an embedding), 0 elsewhere
    (a masking layer's mask_value too)."""
    cdef rnx_layer l
    unknown = set(d) - set(_INT_FIELDS) - set(_OTHER_FIELDS)
    if unknown:
        raise ValueError(f"layers[{i}]: unknown keys {sorted(unknown)}; rnx_layer's fields are "
                         f"{list(_INT_FIELDS) + list(_OTHER_FIELDS)}")
    if "kind" not in d:
        raise ValueError(f"layers[{i}]: missing 'kind'")
    kind = _enum_value("kind", d["kind"], i)
    cell = _enum_value("cell", d.get("cell", 0), i)
    if kind == RNX_LAYER_EMBEDDING:
        l = rnx_embedding_layer(0, 0, -1)
    elif kind == RNX_LAYER_RECURRENT:
        l = rnx_recurrent_layer(<rnx_cell>cell, 0, 0, RNX_DIRECTION_FORWARD)
    else:
        l = rnx_readout_layer(RNX_READOUT_SEQUENCE)
        l.kind = kind
    for field in _INT_FIELDS:
        if field in d:
            value = _enum_value(field, d[field], i)
            if field == "kind": l.kind = value
            elif field == "input_size": l.input_size = value
            elif field == "units": l.units = value
            elif field == "padding_idx": l.padding_idx = -1 if value is None else value
            elif field == "mask_zero": l.mask_zero = value
            elif field == "cell": l.cell = value
            elif field == "direction": l.direction = value
            elif field == "merge": l.merge = value
            elif field == "proj_size": l.proj_size = value
            elif field == "peepholes": l.peepholes = value
            elif field == "input_forget": l.input_forget = value
            elif field == "readout": l.readout = value
            else: l.activation = 0 if value is None else value
    if d.get("clip") is not None:
        l.clip = d["clip"]
    if d.get("mask_value") is not None:
        l.mask_value = d["mask_value"]
    for key in ("activations", "alpha", "beta"):
        values = d.get(key)
        if values is None:
            continue
        values = list(values)
        if len(values) > 3:
            raise ValueError(f"layers[{i}].{key}: expected at most 3 values, got {len(values)}")
        for j in range(3):
            v = values[j] if j < len(values) else 0
            if key == "activations":
                l.activations[j] = ACTS[v] if isinstance(v, str) else v
            elif key == "alpha":
                l.alpha[j] = v
            else:
                l.beta[j] = v
    return l


cdef dict _layer_to_dict(const rnx_layer *l):
    return {"kind": l.kind, "input_size": l.input_size, "units": l.units,
            "padding_idx": l.padding_idx, "mask_zero": l.mask_zero, "cell": l.cell,
            "direction": l.direction, "merge": l.merge, "proj_size": l.proj_size,
            "peepholes": l.peepholes, "input_forget": l.input_forget, "clip": l.clip,
            "activations": [l.activations[j] for j in range(3)],
            "alpha": [l.alpha[j] for j in range(3)], "beta": [l.beta[j] for j in range(3)],
            "readout": l.readout, "activation": l.activation, "mask_value": l.mask_value}


cdef class _LayerList:
    """An owned C array of rnx_layer made from a list of dicts."""
    cdef rnx_layer *ptr
    cdef int n

    def __cinit__(self, layers):
        layers = list(layers)
        if not 1 <= len(layers) <= RNX_MAX_LAYERS:
            raise ValueError(f"layers: expected 1 to {RNX_MAX_LAYERS} layers, got {len(layers)}")
        self.n = len(layers)
        self.ptr = <rnx_layer *>PyMem_Malloc(self.n * sizeof(rnx_layer))
        if self.ptr == NULL:
            raise MemoryError()
        for i, d in enumerate(layers):
            if not isinstance(d, dict):
                raise TypeError(f"layers[{i}]: expected a dict, got {type(d).__name__}")
            self.ptr[i] = _layer_from_dict(d, i)

    def __dealloc__(self):
        PyMem_Free(self.ptr)


def param_count(layers):
    """The number of floats CoreModel(layers, params) takes."""
    cdef _LayerList lst = _LayerList(layers)
    cdef size_t count = 0
    check(rnx_param_count(lst.ptr, lst.n, &count), "layers")
    return count


cdef void *_data(object array, str name, object dtype, tuple shape, bint writable) except? NULL:
    """The data pointer of `array`, a C-contiguous array of `dtype` and `shape` whose data is
    aligned for its dtype (inputs pass through _aligned first), or NULL for None."""
    if array is None:
        return NULL
    if not isinstance(array, np.ndarray) or array.dtype != dtype or not array.flags.c_contiguous:
        raise TypeError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} numpy array, got "
                        f"{type(array).__name__} {getattr(array, 'dtype', '')}")
    if not np.PyArray_ISALIGNED(<np.ndarray>array):
        raise ValueError(f"{name}: expected an array whose data is aligned for "
                         f"{np.dtype(dtype).name} (at a multiple of {np.dtype(dtype).alignment} "
                         f"bytes), got one at address {array.ctypes.data:#x}")
    if tuple(array.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(array.shape)}")
    if writable and not array.flags.writeable:
        raise ValueError(f"{name}: expected a writable array")
    return np.PyArray_DATA(array)


cdef class CoreModel:
    """Owns one rnx_model built from a layer list. Read-only once built, so one instance serves
    many threads.

    CoreModel(layers, params, isa="auto", precision="fp32"): layers is a list of dicts whose keys
    are rnx_layer's field names (enum fields as ints or as the names in LAYER_KINDS, CELLS,
    DIRECTIONS, MERGES, READOUTS, ACTS; activations/alpha/beta as lists of up to 3); params a
    flat float32 array of param_count(layers) floats in the list's order (rnnext.h,
    rnx_model_create); precision one of PRECISIONS (rnx_model_create_precision)."""
    cdef rnx_model *ptr
    cdef readonly dict info
    cdef readonly bint retired

    def __cinit__(self, layers, params, str isa="auto", str precision="fp32"):
        if params is None:
            raise TypeError("params: expected a float32 array, got None")
        cdef const float[::1] flat = _aligned(params)
        cdef _LayerList lst = _LayerList(layers)
        cdef size_t count = 0
        check(rnx_param_count(lst.ptr, lst.n, &count), "layers")
        if <size_t>flat.shape[0] != count:
            raise ValueError(f"params: expected {count} floats, got {flat.shape[0]}")
        if isa not in ISAS:
            raise ValueError(f"isa: expected one of {list(ISAS)}, got {isa!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        cdef rnx_status status
        cdef int code = ISAS[isa]
        cdef int precision_code = PRECISIONS[precision]
        with nogil:
            status = rnx_model_create_precision(&self.ptr, lst.ptr, lst.n, code, precision_code,
                                                &flat[0] if count else NULL)
        if isa == "auto" and status == RNX_ERR_ISA_UNAVAILABLE:
            raise RuntimeError("RNNEXT_ISA names an instruction set that is unknown or not "
                               "supported by this CPU; use scalar, avx2, avx_vnni, avx512, "
                               "avx512_vnni or avx512_bf16")
        check(status, f"CoreModel(isa={isa!r})")
        cdef rnx_model_info i = rnx_model_get_info(self.ptr)
        self.info = {"isa": rnx_isa_name(<rnx_isa>i.isa).decode(), "n_layers": i.n_layers,
                     "takes_ids": bool(i.takes_ids), "input_size": i.input_size,
                     "per_step": bool(i.per_step), "output_size": i.output_size,
                     "n_recurrent": i.n_recurrent, "state_size": i.state_size,
                     "cell_size": i.cell_size, "streamable": bool(i.streamable),
                     "folded": bool(i.folded),
                     "recurrent_param_offset": i.recurrent_param_offset,
                     "recurrent_param_count": i.recurrent_param_count,
                     "precision": next(k for k, v in PRECISIONS.items() if v == i.precision)}

    def __dealloc__(self):
        rnx_model_free(self.ptr)

    @property
    def isa(self):
        return self.info["isa"]

    @property
    def layers(self):
        """The layer list as the core has it: one dict per layer, every field, enums as ints."""
        cdef rnx_layer l
        out = []
        for i in range(self.info["n_layers"]):
            check(rnx_model_layer(self.ptr, i, &l), "layers")
            out.append(_layer_to_dict(&l))
        return out

    def forward(self, y, h_n, c_n, x, ids, h0, c0, lengths, mask, int n_threads):
        """Runs rnx_forward; every array but the input (x or ids) may be None.
          y         float32 (B, T, F) when info["per_step"], else (B, F)
          h_n, h0   float32 (B * state_size,): per recurrent layer k and direction d, a (B, S_k)
                    block, one after the other (a uniform stack: PyTorch's (L*D, B, H) flattened)
          c_n, c0   float32 (B * cell_size,): the same over LSTM layers, (B, H_k) blocks
          x         float32 (B, T, I) (models without an embedding)
          ids       int32 (B, T) (models with one)
          lengths   int32 (B,); mask bool or uint8 (B, T) (not both)
        Every array is C-contiguous; outputs are written in place."""
        src = ids if self.info["takes_ids"] else x
        name = "ids" if self.info["takes_ids"] else "x"
        if src is None or getattr(src, "ndim", 0) < 2:
            raise ValueError(f"{name}: expected a (B, T{'' if self.info['takes_ids'] else ', I'}) "
                             f"array, got {None if src is None else np.shape(src)}")
        B, T = src.shape[0], src.shape[1]
        check_batch(name, B, T, src.shape)
        F = self.info["output_size"]
        S, C = self.info["state_size"], self.info["cell_size"]
        if mask is not None and getattr(mask, "dtype", None) == np.bool_:
            mask = mask.view(np.uint8)
        x, ids, h0, c0, lengths = [_aligned(a) for a in (x, ids, h0, c0, lengths)]
        cdef float *yp = <float *>_data(y, "y", np.float32,
                                        (B, T, F) if self.info["per_step"] else (B, F), True)
        cdef float *hnp = <float *>_data(h_n, "h_n", np.float32, (B * S,), True)
        cdef float *cnp = <float *>_data(c_n, "c_n", np.float32, (B * C,), True)
        cdef const float *xp = <const float *>_data(x, "x", np.float32,
                                                    (B, T, self.info["input_size"]), False)
        cdef const int32_t *idp = <const int32_t *>_data(ids, "ids", np.int32, (B, T), False)
        cdef const float *h0p = <const float *>_data(h0, "h0", np.float32, (B * S,), False)
        cdef const float *c0p = <const float *>_data(c0, "c0", np.float32, (B * C,), False)
        cdef const int32_t *lp = <const int32_t *>_data(lengths, "lengths", np.int32, (B,), False)
        cdef const uint8_t *mp = <const uint8_t *>_data(mask, "mask", np.uint8, (B, T), False)
        if self.info["takes_ids"] and x is not None or not self.info["takes_ids"] and ids is not None:
            raise ValueError(f"{'x' if self.info['takes_ids'] else 'ids'}: expected None: this "
                             f"model takes {name}")
        cdef int b = B, t = T
        cdef rnx_status status
        with nogil:
            status = rnx_forward(self.ptr, yp, hnp, cnp, xp, idp, h0p, c0p, lp, mp, b, t,
                                 n_threads)
        if status == RNX_ERR_BAD_ARGUMENT:
            raise ValueError(f"forward: an argument is out of range ({name} ids in [0, "
                             f"{self.info['input_size']}), lengths in [1, {T}], mask 0/1, not "
                             f"both lengths and mask, n_threads at most {RNX_MAX_THREADS}) "
                             f"(rnnext status {<int>status})")
        check(status, "forward")

    def stream(self, int batch, check_x=None, current=None):
        return CoreStream(self, batch, check_x, current)

    def retire(self):
        """Marks the model as replaced (its owner's parameters changed): a stream made with a
        current() moves to current()'s model at its next step."""
        self.retired = True

    # training: the recurrent layers (rnnext.h, rnx_forward_train and rnx_backward)

    @property
    def train_sizes(self):
        """(I_0, W): the widths of the first recurrent layer's input and of the top recurrent
        layer's (merged) output, what forward_train's x and seq hold per step."""
        recurrent = [l for l in self.layers if l["kind"] == RNX_LAYER_RECURRENT]
        top = recurrent[len(recurrent) - 1]
        S = top["proj_size"] or top["units"]
        concat = top["direction"] == RNX_DIRECTION_BIDIRECTIONAL and top["merge"] == RNX_MERGE_CONCAT
        return recurrent[0]["input_size"], 2 * S if concat else S

    def forward_train(self, CoreTape tape not None, seq, h_n, c_n, x, h0, c0, lengths, mask,
                      int n_threads):
        """Runs rnx_forward_train into `tape`; every array but x may be None.
          seq       float32 (B, T, W): the top recurrent layer's output sequence (train_sizes)
          h_n, h0   float32 (B * state_size,); c_n, c0 float32 (B * cell_size,): as forward's
          x         float32 (B, T, I_0): the first recurrent layer's input (embedded vectors
                    for an embedding model)
          lengths   int32 (B,); mask bool or uint8 (B, T) (not both; mask_zero is the caller's)
        Every array is C-contiguous; outputs are written in place."""
        if x is None or getattr(x, "ndim", 0) != 3:
            raise ValueError(f"x: expected a (B, T, I) array, got "
                             f"{None if x is None else np.shape(x)}")
        B, T = x.shape[0], x.shape[1]
        check_batch("x", B, T, x.shape)
        I, W = self.train_sizes
        S, C = self.info["state_size"], self.info["cell_size"]
        if mask is not None and getattr(mask, "dtype", None) == np.bool_:
            mask = mask.view(np.uint8)
        x, h0, c0, lengths = [_aligned(a) for a in (x, h0, c0, lengths)]
        cdef float *seqp = <float *>_data(seq, "seq", np.float32, (B, T, W), True)
        cdef float *hnp = <float *>_data(h_n, "h_n", np.float32, (B * S,), True)
        cdef float *cnp = <float *>_data(c_n, "c_n", np.float32, (B * C,), True)
        cdef const float *xp = <const float *>_data(x, "x", np.float32, (B, T, I), False)
        cdef const float *h0p = <const float *>_data(h0, "h0", np.float32, (B * S,), False)
        cdef const float *c0p = <const float *>_data(c0, "c0", np.float32, (B * C,), False)
        cdef const int32_t *lp = <const int32_t *>_data(lengths, "lengths", np.int32, (B,), False)
        cdef const uint8_t *mp = <const uint8_t *>_data(mask, "mask", np.uint8, (B, T), False)
        cdef int b = B, t = T
        cdef rnx_status status
        with nogil:
            status = rnx_forward_train(self.ptr, tape.ptr, seqp, hnp, cnp, xp, h0p, c0p, lp, mp,
                                       b, t, n_threads)
        tape.run = (B, T) if status == RNX_OK else None
        if status == RNX_ERR_BAD_ARGUMENT:
            raise ValueError(f"forward_train: an argument is out of range (B <= {tape.B}, "
                             f"T <= {tape.T} and the tape's model, lengths in [1, {T}], mask "
                             f"0/1, not both lengths and mask, dropout masks of this B and T, "
                             f"n_threads at most "
                             f"{RNX_MAX_THREADS}) (rnnext status {<int>status})")
        check(status, "forward_train")

    def backward(self, CoreTape tape not None, grads, dx, dh0, dc0, x, dseq, dh_n, dc_n,
                 int n_threads):
        """Runs rnx_backward over the pass in `tape`; every array but grads and x may be None.
          grads     float32 (info["recurrent_param_count"],): the recurrent layers' parameter
                    gradients, in params order
          dx, x     float32 (B, T, I_0); dseq float32 (B, T, W) (train_sizes)
          dh0, dh_n float32 (B * state_size,); dc0, dc_n float32 (B * cell_size,)
        B and T are those of the forward_train pass the tape holds."""
        if tape.run is None:
            raise ValueError("tape: backward expected a tape filled by forward_train, got an "
                             "empty one")
        B, T = tape.run
        I, W = self.train_sizes
        S, C = self.info["state_size"], self.info["cell_size"]
        if grads is None or x is None:
            raise ValueError(f"{'grads' if grads is None else 'x'}: expected an array, got None")
        x, dseq, dh_n, dc_n = [_aligned(a) for a in (x, dseq, dh_n, dc_n)]
        cdef float *gp = <float *>_data(grads, "grads", np.float32,
                                        (self.info["recurrent_param_count"],), True)
        cdef float *dxp = <float *>_data(dx, "dx", np.float32, (B, T, I), True)
        cdef float *dh0p = <float *>_data(dh0, "dh0", np.float32, (B * S,), True)
        cdef float *dc0p = <float *>_data(dc0, "dc0", np.float32, (B * C,), True)
        cdef const float *xp = <const float *>_data(x, "x", np.float32, (B, T, I), False)
        cdef const float *dsp = <const float *>_data(dseq, "dseq", np.float32, (B, T, W), False)
        cdef const float *dhnp = <const float *>_data(dh_n, "dh_n", np.float32, (B * S,), False)
        cdef const float *dcnp = <const float *>_data(dc_n, "dc_n", np.float32, (B * C,), False)
        cdef rnx_status status
        with nogil:
            status = rnx_backward(self.ptr, tape.ptr, gp, dxp, dh0p, dc0p, xp, dsp, dhnp, dcnp,
                                  n_threads)
        check(status, f"backward (it needs a forward_train with the same model first, and "
                      f"n_threads at most {RNX_MAX_THREADS})")


cdef class CoreTape:
    """Owns one rnx_tape: what a training-mode forward pass keeps for the backward pass."""
    cdef rnx_tape *ptr
    cdef readonly int B, T
    cdef readonly list layers
    cdef readonly str isa
    cdef public object run  # (B, T) of the forward_train pass it holds, or None

    def __cinit__(self, CoreModel model not None, int B, int T):
        check(rnx_tape_create(&self.ptr, model.ptr, B, T), "CoreTape")
        self.B, self.T = B, T
        self.layers = model.layers
        self.isa = model.isa

    def __dealloc__(self):
        rnx_tape_free(self.ptr)

    def set_dropout(self, int layer, mask):
        """Runs rnx_tape_set_dropout: the multiplier of recurrent layer `layer`'s input (layer in
        [1, recurrent layers - 1]) in the passes from now on, a float32 (B, T, I_layer) array, or
        None for none."""
        inputs = [l["input_size"] for l in self.layers if l["kind"] == RNX_LAYER_RECURRENT]
        if not 1 <= layer < len(inputs):
            raise ValueError(f"layer: expected a recurrent layer in [1, {len(inputs) - 1}], got "
                             f"{layer}")
        B, T = (1, 1) if mask is None else np.shape(mask)[:2]
        if mask is not None and (np.ndim(mask) != 3 or B > self.B or T > self.T):
            raise ValueError(f"mask: expected a (B, T, {inputs[layer]}) array with B <= {self.B} "
                             f"and T <= {self.T}, got shape {np.shape(mask)}")
        mask = _aligned(mask)
        cdef const float *mp = <const float *>_data(mask, "mask", np.float32,
                                                    (B, T, inputs[layer]), False)
        check(rnx_tape_set_dropout(self.ptr, layer, mp, B, T), "set_dropout")
        self.run = None

    def fits(self, CoreModel model not None, int B, int T):
        """Whether this tape serves `model` for B sequences of T steps (the same layer list and
        instruction set, as rnx_forward_train checks)."""
        return (model.layers == self.layers and model.isa == self.isa and B <= self.B
                and T <= self.T)


cdef bint _step_form(object x, int typenum, int batch, int width):
    """Whether x is what a stream step passes to C as is: a C-contiguous, aligned, native-order
    array of typenum, shaped (batch, width) (ids: width 0, (batch,)) or, for a batch of one,
    without the batch axis."""
    if not isinstance(x, np.ndarray):
        return False
    cdef np.ndarray a = <np.ndarray>x
    if np.PyArray_TYPE(a) != typenum or not np.PyArray_ISCARRAY_RO(a):
        return False
    cdef int ndim = np.PyArray_NDIM(a), full = 2 if width else 1
    cdef np.npy_intp *dims = np.PyArray_DIMS(a)
    if ndim == full:
        return dims[0] == batch and (width == 0 or dims[1] == width)
    return batch == 1 and ndim == full - 1 and (width == 0 or dims[0] == width)


cdef class CoreStream:
    """One step per call of a streamable CoreModel over `batch` sequences, the states kept in C.
    step() is the hot path: x in the core's form (float32 or int32 ids, C-contiguous) goes to C
    without a copy. check_x(x), when given, is the Python stream's check (rnnext.stream): it
    turns any other x into that form or refuses it. current(), when given, returns the owner's
    CoreModel now: once the stream's model is retired, the next step moves the stream to it,
    states kept. States are flat float32 arrays as CoreModel.forward's: (batch * state_size,),
    (batch * cell_size,)."""
    cdef rnx_stream *ptr
    cdef readonly CoreModel model
    cdef readonly int batch, input_size, output_size
    cdef readonly bint takes_ids
    cdef readonly size_t state_size, cell_size
    cdef object check_x, current

    def __cinit__(self, CoreModel model not None, int batch, check_x=None, current=None):
        self.model = model
        self.batch = batch
        self.check_x = check_x
        self.current = current
        self.takes_ids = model.info["takes_ids"]
        self.input_size = model.info["input_size"]
        self.output_size = model.info["output_size"]
        self.state_size = model.info["state_size"]
        self.cell_size = model.info["cell_size"]
        check(rnx_stream_create(&self.ptr, model.ptr, batch), "stream")

    def __dealloc__(self):
        rnx_stream_free(self.ptr)

    def step(self, x):
        """x: float32 (batch, I), or (I,) when batch is 1, for a model of float inputs; int32
        ids (batch,), or () when batch is 1, for a model with an embedding; C-contiguous (any
        other x goes through check_x, or without one is refused) -> the model's output for this
        step: (batch, F), or (F,) without the batch axis."""
        if self.model.retired and self.current is not None:
            self._follow()
        cdef int typenum = np.NPY_INT32 if self.takes_ids else np.NPY_FLOAT32
        cdef int width = 0 if self.takes_ids else self.input_size
        if not _step_form(x, typenum, self.batch, width):
            if self.check_x is not None:
                x = _aligned(self.check_x(x))
            if not _step_form(x, typenum, self.batch, width):
                dtype, shape = ("int32", f"({self.batch},)") if self.takes_ids else \
                    ("float32", f"({self.batch}, {width})")
                got = type(x).__name__ if not isinstance(x, np.ndarray) else \
                    f"{x.dtype.str} {x.shape}" + ("" if x.flags.c_contiguous else ", strided")
                raise TypeError(f"x: expected a C-contiguous, aligned {dtype} numpy array of shape "
                                f"{shape}, got {got}")
        cdef const float *xp = NULL
        cdef const int32_t *idp = NULL
        if self.takes_ids:
            idp = <const int32_t *>np.PyArray_DATA(<np.ndarray>x)
        else:
            xp = <const float *>np.PyArray_DATA(<np.ndarray>x)
        y = np.empty((self.batch, self.output_size), np.float32)
        if np.PyArray_NDIM(<np.ndarray>x) < (1 if self.takes_ids else 2):
            y = y.reshape(-1)
        cdef float *yp = <float *>np.PyArray_DATA(y)
        cdef rnx_status status
        with nogil:
            status = rnx_stream_step(self.ptr, yp, xp, idp)
        if status == RNX_ERR_BAD_ARGUMENT and self.check_x is not None:
            self.check_x(x)  # ids the core refused: the check says which, as forward does
        check(status, "x")
        return y

    cdef int _follow(self) except -1:
        """Moves the stream to current()'s model, its states kept (allocates: once per change of
        the owner's parameters, never per step)."""
        cdef CoreModel model = self.current()
        if model.info != self.model.info:
            raise ValueError(f"current: expected a model of the stream's layers and sizes "
                             f"{self.model.info}, got {model.info}")
        h, c = self.state()
        cdef rnx_stream *ptr = NULL
        check(rnx_stream_create(&ptr, model.ptr, self.batch), "stream")
        rnx_stream_free(self.ptr)
        self.ptr = ptr
        self.model = model
        self.reset(h, c)
        return 0

    def reset(self, h0=None, c0=None):
        """States to h0 (batch * state_size,), c0 (batch * cell_size,), or zeros where None."""
        h0, c0 = _aligned(h0), _aligned(c0)
        cdef const float *h0p = <const float *>_data(h0, "h0", np.float32,
                                                     (self.batch * self.state_size,), False)
        cdef const float *c0p = <const float *>_data(c0, "c0", np.float32,
                                                     (self.batch * self.cell_size,), False)
        check(rnx_stream_reset(self.ptr, h0p, c0p), "reset")

    def state(self, h=None, c=None):
        """The states, into h and c if given (else new arrays): (h, c), c None without LSTM
        layers."""
        if h is None:
            h = np.empty(self.batch * self.state_size, np.float32)
        if c is None and self.cell_size:
            c = np.empty(self.batch * self.cell_size, np.float32)
        cdef float *hp = <float *>_data(h, "h", np.float32, (self.batch * self.state_size,), True)
        cdef float *cp = <float *>_data(c, "c", np.float32, (self.batch * self.cell_size,), True)
        check(rnx_stream_state(self.ptr, hp, cp), "state")
        return h, c


# ------------------------------------------------------------------------------------------------
# files: the C parser (csrc/safetensors.c) checks everything; this only copies its results out

cdef int check_file(rnx_status status, const char *message, str what) except -1:
    if status == RNX_OK:
        return 0
    text = message.decode("utf-8", "replace") or rnx_status_string(status).decode()
    if status == RNX_ERR_OUT_OF_MEMORY:
        raise MemoryError(f"{what}: {text}")
    raise ValueError(f"{what}: {text} (rnnext status {<int>status})")


cdef class TensorFile:
    """A parsed and checked safetensors buffer: its tensor table and metadata."""
    cdef rnx_file *ptr
    cdef object data  # the bytes the table points into, kept alive with it

    def __cinit__(self, const unsigned char[::1] data not None, str what="file"):
        cdef char message[512]
        cdef const void *p = &data[0] if data.shape[0] else NULL
        cdef size_t size = data.shape[0]
        cdef rnx_status status
        self.data = data
        message[0] = 0
        with nogil:
            status = rnx_file_parse(&self.ptr, p, size, message, sizeof(message))
        check_file(status, message, what)

    def __dealloc__(self):
        rnx_file_free(self.ptr)

    def metadata(self):
        """{key: value}, in key order."""
        cdef const char *key
        cdef const char *value
        out = {}
        for i in range(rnx_file_metadata_count(self.ptr)):
            rnx_file_metadata(self.ptr, i, &key, &value)
            out[key.decode()] = value.decode()
        return out

    def tensors(self):
        """[(name, dtype, shape, offset, nbytes)] in file order."""
        cdef const rnx_tensor_info *t
        out = []
        for i in range(rnx_file_tensor_count(self.ptr)):
            t = rnx_file_tensor(self.ptr, i)
            out.append((t.name.decode(), rnx_dtype_name(t.dtype).decode(),
                        tuple(t.shape[d] for d in range(t.ndim)), t.offset, t.nbytes))
        return out

    def read(self, size_t index):
        """Tensor `index` as a float32 array of its shape."""
        import numpy as np

        cdef const rnx_tensor_info *t = rnx_file_tensor(self.ptr, index)
        if t == NULL:
            raise IndexError(f"index: expected < {rnx_file_tensor_count(self.ptr)}, got {index}")
        out = np.empty(tuple(t.shape[d] for d in range(t.ndim)), np.float32)
        cdef float[::1] flat = out.reshape(-1)
        cdef float *dst = &flat[0] if flat.shape[0] else NULL
        cdef rnx_status status
        with nogil:
            status = rnx_file_read_f32(self.ptr, t, dst, flat.shape[0])
        check(status, "read")
        return out

    def model_layers(self, str what="file"):
        """The model's layers that the metadata describes, checked against the tensors: one dict
        per layer as CoreModel.layers gives them (rnx_layer's fields, enums as ints)."""
        cdef char message[512]
        cdef int n = 0
        cdef rnx_layer *layers = <rnx_layer *>PyMem_Malloc(RNX_MAX_LAYERS * sizeof(rnx_layer))
        if layers == NULL:
            raise MemoryError(f"{what}: out of memory")
        message[0] = 0
        try:
            check_file(rnx_file_model_layers(self.ptr, layers, RNX_MAX_LAYERS, &n, message,
                                             sizeof(message)), message, what)
            return [_layer_to_dict(&layers[i]) for i in range(n)]
        finally:
            PyMem_Free(layers)
