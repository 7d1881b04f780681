# Thin binding of the C core: memoryviews in, one call with the GIL released, status -> exception.
# Python (model.py) validates shapes and allocates outputs before anything reaches here.
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np
cimport numpy as np

np.import_array()

cdef extern from *:
    """
    static const char *rnx_built_with = __VERSION__;
    """
    const char *rnx_built_with

CELLS = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3, "gru_reset_before": 4}
ISAS = {"auto": RNX_ISA_AUTO, "scalar": RNX_ISA_SCALAR, "avx2": RNX_ISA_AVX2,
        "avx512": RNX_ISA_AVX512}


cdef int check(rnx_status status, str what) except -1:
    if status == RNX_OK:
        return 0
    message = f"{what}: {rnx_status_string(status).decode()} (rnnext status {<int>status})"
    if status == RNX_ERR_OUT_OF_MEMORY:
        raise MemoryError(message)
    if status == RNX_ERR_ISA_UNAVAILABLE:
        raise RuntimeError(message)
    raise ValueError(message)


def version_number():
    return rnx_version_number()


def has_openmp():
    return bool(rnx_has_openmp())


def max_threads():
    return rnx_max_threads()


def compiler():
    return rnx_built_with.decode()


def default_isa():
    """The instruction set chosen for this process, or None when RNNEXT_ISA names one that is
    unknown or unsupported."""
    cdef rnx_isa isa = rnx_default_isa()
    return None if isa == RNX_ISA_AUTO else rnx_isa_name(isa).decode()


def isa_supported(str name):
    return bool(rnx_isa_supported(ISAS[name]))


def activation(str name, const float[::1] x not None, str isa="auto"):
    """The kernels' vectorised sigmoid or tanh of x, on the kernels of `isa`."""
    cdef rnx_function f = RNX_FN_SIGMOID if name == "sigmoid" else RNX_FN_TANH
    if name not in ("sigmoid", "tanh"):
        raise ValueError(f"name: expected 'sigmoid' or 'tanh', got {name!r}")
    out = np.empty(x.shape[0], np.float32)
    cdef float[::1] o = out
    check(rnx_activation(ISAS[isa], f, &o[0] if o.shape[0] else NULL,
                         &x[0] if x.shape[0] else NULL, x.shape[0]), f"activation(isa={isa!r})")
    return out


def param_count(str cell, int input_size, int hidden_size, int num_layers, bint bidirectional):
    cdef rnx_config cfg = rnx_config(CELLS[cell], input_size, hidden_size, num_layers,
                                     bidirectional, RNX_ISA_AUTO)
    cdef size_t count = 0
    check(rnx_param_count(&cfg, &count), "param_count")
    return count


cdef struct run_arrays:
    float *y
    float *h_n
    float *c_n
    const float *x
    const float *h0
    const float *c0
    const int32_t *lengths
    int B
    int T


cdef run_arrays run_pointers(float[:, :, ::1] y, float[:, :, ::1] h_n, float[:, :, ::1] c_n,
                             const float[:, :, ::1] x, const float[:, :, ::1] h0,
                             const float[:, :, ::1] c0, const int32_t[::1] lengths):
    """The pointers a forward call hands to C: NULL for each optional array that is None."""
    cdef run_arrays a
    a.y = &y[0, 0, 0] if y is not None else NULL
    a.h_n = &h_n[0, 0, 0] if h_n is not None else NULL
    a.c_n = &c_n[0, 0, 0] if c_n is not None else NULL
    a.x = &x[0, 0, 0]
    a.h0 = &h0[0, 0, 0] if h0 is not None else NULL
    a.c0 = &c0[0, 0, 0] if c0 is not None else NULL
    a.lengths = &lengths[0] if lengths is not None else NULL
    a.B = x.shape[0]
    a.T = x.shape[1]
    return a


cdef class CoreModel:
    """Owns one packed rnx_model. Read-only once built, so one instance serves many threads."""
    cdef rnx_model *ptr

    def __cinit__(self, str cell, int input_size, int hidden_size, int num_layers,
                  bint bidirectional, const float[::1] params not None, str isa="auto"):
        cdef rnx_config cfg = rnx_config(CELLS[cell], input_size, hidden_size, num_layers,
                                         bidirectional, ISAS[isa])
        cdef size_t count = 0
        check(rnx_param_count(&cfg, &count), "CoreModel")
        if <size_t>params.shape[0] != count:
            raise ValueError(f"params: expected {count} floats, got {params.shape[0]}")
        cdef rnx_status status
        with nogil:
            status = rnx_model_create(&self.ptr, &cfg, &params[0])
        if isa == "auto" and status == RNX_ERR_ISA_UNAVAILABLE:
            raise RuntimeError("RNNEXT_ISA names an instruction set that is unknown or not "
                               "supported by this CPU; use scalar, avx2 or avx512")
        check(status, f"CoreModel(isa={isa!r})")

    def __dealloc__(self):
        rnx_model_free(self.ptr)

    @property
    def isa(self):
        return rnx_isa_name(<rnx_isa>rnx_model_config(self.ptr).isa).decode()

    @property
    def config(self):
        """(cell, input_size, hidden_size, num_layers, bidirectional, isa) as the core has it."""
        cdef rnx_config c = rnx_model_config(self.ptr)
        return (c.cell, c.input_size, c.hidden_size, c.num_layers, c.bidirectional, c.isa)

    def forward(self, float[:, :, ::1] y, float[:, :, ::1] h_n, float[:, :, ::1] c_n,
                const float[:, :, ::1] x not None, const float[:, :, ::1] h0,
                const float[:, :, ::1] c0, const int32_t[::1] lengths, int n_threads):
        """Runs rnx_forward. Optional arrays may be None; shapes are checked by the caller."""
        cdef run_arrays a = run_pointers(y, h_n, c_n, x, h0, c0, lengths)
        cdef rnx_status status
        with nogil:
            status = rnx_forward(self.ptr, a.y, a.h_n, a.c_n, a.x, a.h0, a.c0, a.lengths, a.B, a.T,
                                 n_threads)
        check(status, "forward")

    def stream(self, int batch):
        return CoreStream(self, batch)

    def forward_train(self, CoreTape tape not None, float[:, :, ::1] y, float[:, :, ::1] h_n,
                      float[:, :, ::1] c_n, const float[:, :, ::1] x not None,
                      const float[:, :, ::1] h0, const float[:, :, ::1] c0,
                      const int32_t[::1] lengths, int n_threads):
        """Runs rnx_forward_train into `tape`; arguments as forward."""
        cdef run_arrays a = run_pointers(y, h_n, c_n, x, h0, c0, lengths)
        cdef rnx_status status
        with nogil:
            status = rnx_forward_train(self.ptr, tape.ptr, a.y, a.h_n, a.c_n, a.x, a.h0, a.c0,
                                       a.lengths, a.B, a.T, n_threads)
        tape.run = (a.B, a.T) if status == RNX_OK else None
        check(status, "forward_train")

    def backward(self, CoreTape tape not None, float[::1] grads not None, float[:, :, ::1] dx,
                 float[:, :, ::1] dh0, float[:, :, ::1] dc0, const float[:, :, ::1] x not None,
                 const float[:, :, ::1] dy, const float[:, :, ::1] dh_n,
                 const float[:, :, ::1] dc_n, int n_threads):
        """Runs rnx_backward over the pass in `tape`. Optional arrays may be None; shapes are
        checked by the caller."""
        cdef size_t count = 0
        cdef rnx_config cfg = rnx_model_config(self.ptr)
        check(rnx_param_count(&cfg, &count), "backward")
        if <size_t>grads.shape[0] != count:
            raise ValueError(f"grads: expected {count} floats, got {grads.shape[0]}")
        if tape.run is None:
            raise ValueError("tape: backward expected a tape filled by forward_train, got an "
                             "empty one")
        B, T = tape.run
        D = 2 if cfg.bidirectional else 1
        LD, H = cfg.num_layers * D, cfg.hidden_size
        for name, arr, want in (("x", x, (B, T, cfg.input_size)), ("dx", dx, (B, T, cfg.input_size)),
                                ("dy", dy, (B, T, D * H)), ("dh_n", dh_n, (LD, B, H)),
                                ("dc_n", dc_n, (LD, B, H)), ("dh0", dh0, (LD, B, H)),
                                ("dc0", dc0, (LD, B, H))):
            if arr is not None and tuple(arr.shape[:3]) != want:
                raise ValueError(f"{name}: expected shape {want} (the forward_train pass), got "
                                 f"{tuple(arr.shape[:3])}")
        cdef float *dx_p = &dx[0, 0, 0] if dx is not None else NULL
        cdef float *dh0_p = &dh0[0, 0, 0] if dh0 is not None else NULL
        cdef float *dc0_p = &dc0[0, 0, 0] if dc0 is not None else NULL
        cdef const float *dy_p = &dy[0, 0, 0] if dy is not None else NULL
        cdef const float *dhn_p = &dh_n[0, 0, 0] if dh_n is not None else NULL
        cdef const float *dcn_p = &dc_n[0, 0, 0] if dc_n is not None else NULL
        cdef rnx_status status
        with nogil:
            status = rnx_backward(self.ptr, tape.ptr, &grads[0], dx_p, dh0_p, dc0_p, &x[0, 0, 0],
                                  dy_p, dhn_p, dcn_p, n_threads)
        check(status, "backward (it needs a forward_train with the same model first)")


cdef class CoreTape:
    """Owns one rnx_tape: what a training-mode forward pass keeps for the backward pass."""
    cdef rnx_tape *ptr
    cdef readonly int B, T
    cdef readonly tuple config
    cdef public object run  # (B, T) of the forward_train pass it holds, or None

    def __cinit__(self, CoreModel model not None, int B, int T):
        check(rnx_tape_create(&self.ptr, model.ptr, B, T), "CoreTape")
        self.B, self.T = B, T
        self.config = model.config

    def __dealloc__(self):
        rnx_tape_free(self.ptr)

    def fits(self, CoreModel model not None, int B, int T):
        """Whether this tape serves `model` for B sequences of T steps."""
        return model.config == self.config and B <= self.B and T <= self.T


cdef class CoreStream:
    """One step per call of a unidirectional CoreModel over `batch` sequences, the states kept in
    C. step() is the hot path: a float32 C-contiguous x goes to C without a copy."""
    cdef rnx_stream *ptr
    cdef readonly CoreModel model
    cdef readonly int batch, input_size, hidden_size

    def __cinit__(self, CoreModel model not None, int batch):
        cdef rnx_config cfg = rnx_model_config(model.ptr)
        self.model = model
        self.batch = batch
        self.input_size = cfg.input_size
        self.hidden_size = cfg.hidden_size
        check(rnx_stream_create(&self.ptr, model.ptr, batch), "stream")

    def __dealloc__(self):
        rnx_stream_free(self.ptr)

    def step(self, x):
        """x (batch, I), or (I,) when batch is 1 -> the top layer's new h, of the same rank."""
        cdef const float[::1] x1
        cdef const float[:, ::1] x2
        cdef const float *xp
        cdef Py_ssize_t rows, cols
        want = f"({self.batch}, {self.input_size})" + (
            f" or ({self.input_size},)" if self.batch == 1 else "")
        if getattr(x, "dtype", None) != np.float32 or not x.flags.c_contiguous:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"x: expected an array of real numbers, got dtype {arr.dtype}")
            x = np.ascontiguousarray(arr, dtype=np.float32)
        if x.ndim not in (1, 2):
            raise ValueError(f"x: expected shape {want}, got {tuple(x.shape)}")
        if x.ndim == 1:  # float32, C-contiguous: no copy
            x1 = x
            xp, rows, cols = &x1[0], 1, x1.shape[0]
        else:
            x2 = x
            xp, rows, cols = &x2[0, 0], x2.shape[0], x2.shape[1]
        flat = x.ndim == 1
        if rows != self.batch or cols != self.input_size:
            raise ValueError(f"x: expected shape {want}, got {tuple(x.shape)}")
        if flat:
            y = np.empty(self.hidden_size, np.float32)
        else:
            y = np.empty((self.batch, self.hidden_size), np.float32)
        cdef float *yp = <float *>np.PyArray_DATA(y)
        with nogil:
            rnx_stream_step(self.ptr, yp, xp)
        return y

    def reset(self, const float[:, :, ::1] h0=None, const float[:, :, ::1] c0=None):
        """States to h0, c0 (L, batch, H), or zeros where None; shapes checked by the caller."""
        rnx_stream_reset(self.ptr, &h0[0, 0, 0] if h0 is not None else NULL,
                         &c0[0, 0, 0] if c0 is not None else NULL)

    def state(self, float[:, :, ::1] h not None, float[:, :, ::1] c):
        """Copies the states into h, c (L, batch, H); c may be None."""
        rnx_stream_state(self.ptr, &h[0, 0, 0], &c[0, 0, 0] if c is not None else NULL)


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
        per layer with rnx_layer's fields (enums as their numbers; activations, alpha and beta as
        lists of 3)."""
        cdef char message[512]
        cdef int n = 0
        cdef rnx_layer *layers = <rnx_layer *>malloc(RNX_MAX_LAYERS * sizeof(rnx_layer))
        if layers == NULL:
            raise MemoryError(f"{what}: out of memory")
        message[0] = 0
        try:
            check_file(rnx_file_model_layers(self.ptr, layers, RNX_MAX_LAYERS, &n, message,
                                             sizeof(message)), message, what)
            return [layers[i] for i in range(n)]
        finally:
            free(layers)
