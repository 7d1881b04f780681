# Thin binding of the C core: memoryviews in, one call with the GIL released, status -> exception.
# Python (model.py) validates shapes and allocates outputs before anything reaches here.
from libc.stdint cimport int32_t

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


def param_count(str cell, int input_size, int hidden_size, int num_layers, bint bidirectional):
    cdef rnx_config cfg = rnx_config(CELLS[cell], input_size, hidden_size, num_layers,
                                     bidirectional, RNX_ISA_AUTO)
    cdef size_t count = 0
    check(rnx_param_count(&cfg, &count), "param_count")
    return count


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

    def forward(self, float[:, :, ::1] y, float[:, :, ::1] h_n, float[:, :, ::1] c_n,
                const float[:, :, ::1] x not None, const float[:, :, ::1] h0,
                const float[:, :, ::1] c0, const int32_t[::1] lengths, int n_threads):
        """Runs rnx_forward. Optional arrays may be None; shapes are checked by the caller."""
        cdef float *y_p = &y[0, 0, 0] if y is not None else NULL
        cdef float *hn_p = &h_n[0, 0, 0] if h_n is not None else NULL
        cdef float *cn_p = &c_n[0, 0, 0] if c_n is not None else NULL
        cdef const float *h0_p = &h0[0, 0, 0] if h0 is not None else NULL
        cdef const float *c0_p = &c0[0, 0, 0] if c0 is not None else NULL
        cdef const int32_t *len_p = &lengths[0] if lengths is not None else NULL
        cdef int B = x.shape[0], T = x.shape[1]
        cdef rnx_status status
        with nogil:
            status = rnx_forward(self.ptr, y_p, hn_p, cn_p, &x[0, 0, 0], h0_p, c0_p, len_p,
                                 B, T, n_threads)
        check(status, "forward")
