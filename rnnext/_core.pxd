# Declarations of the C core's public header, csrc/include/rnnext.h.
from libc.stdint cimport int32_t, uint8_t, uint64_t

cdef extern from "rnnext.h" nogil:
    ctypedef enum rnx_status:
        RNX_OK
        RNX_ERR_NULL_ARGUMENT
        RNX_ERR_BAD_CONFIG
        RNX_ERR_BAD_ARGUMENT
        RNX_ERR_OUT_OF_MEMORY
        RNX_ERR_ISA_UNAVAILABLE
        RNX_ERR_OVERFLOW
        RNX_ERR_FILE_LENGTH
        RNX_ERR_FILE_HEADER
        RNX_ERR_FILE_DTYPE
        RNX_ERR_FILE_OFFSETS
        RNX_ERR_FILE_MODEL
        RNX_ERR_FILE_VERSION

    ctypedef enum rnx_isa:
        RNX_ISA_AUTO
        RNX_ISA_SCALAR
        RNX_ISA_AVX2
        RNX_ISA_AVX512
        RNX_ISA_AVX512_VNNI
        RNX_ISA_AVX512_BF16
        RNX_ISA_AVX_VNNI

    ctypedef enum rnx_precision:
        RNX_PRECISION_FP32
        RNX_PRECISION_BF16
        RNX_PRECISION_INT8

    ctypedef enum rnx_function:
        RNX_FN_SIGMOID
        RNX_FN_TANH

    rnx_status rnx_activation(rnx_isa isa, rnx_function function, float *out, const float *values,
                              size_t n)

    ctypedef enum rnx_cell:
        RNX_CELL_RNN_TANH
        RNX_CELL_RNN_RELU
        RNX_CELL_LSTM
        RNX_CELL_GRU
        RNX_CELL_GRU_RESET_BEFORE

    int RNX_MAX_SIZE
    int RNX_INT8_MAX_K
    int RNX_MAX_ROWS
    int RNX_MAX_LAYERS
    int RNX_MAX_THREADS

    ctypedef enum rnx_layer_kind:
        RNX_LAYER_EMBEDDING
        RNX_LAYER_RECURRENT
        RNX_LAYER_READOUT
        RNX_LAYER_DENSE
        RNX_LAYER_MASKING

    ctypedef enum rnx_direction:
        RNX_DIRECTION_FORWARD
        RNX_DIRECTION_REVERSE
        RNX_DIRECTION_BIDIRECTIONAL

    ctypedef enum rnx_merge:
        RNX_MERGE_CONCAT
        RNX_MERGE_SUM
        RNX_MERGE_MUL
        RNX_MERGE_AVE

    ctypedef enum rnx_readout:
        RNX_READOUT_SEQUENCE
        RNX_READOUT_LAST
        RNX_READOUT_FINAL
        RNX_READOUT_MEAN
        RNX_READOUT_MAX

    ctypedef enum rnx_act:
        RNX_ACT_LINEAR
        RNX_ACT_SIGMOID
        RNX_ACT_TANH
        RNX_ACT_RELU
        RNX_ACT_HARD_SIGMOID
        RNX_ACT_AFFINE
        RNX_ACT_LEAKY_RELU
        RNX_ACT_THRESHOLDED_RELU
        RNX_ACT_SCALED_TANH
        RNX_ACT_ELU
        RNX_ACT_SOFTSIGN
        RNX_ACT_SOFTPLUS
        RNX_ACT_SOFTMAX
        RNX_ACT_RELU6
        RNX_ACT_SELU
        RNX_ACT_GELU
        RNX_ACT_SILU
        RNX_ACT_EXPONENTIAL
        RNX_ACT_MISH
        RNX_ACT_HARD_SILU
        RNX_ACT_HARD_TANH
        RNX_ACT_CELU
        RNX_ACT_LOG_SIGMOID
        RNX_ACT_TANH_SHRINK
        RNX_ACT_SOFT_SHRINK
        RNX_ACT_HARD_SHRINK
        RNX_ACT_SQUAREPLUS
        RNX_ACT_SPARSE_PLUS
        RNX_ACT_SPARSE_SIGMOID

    ctypedef struct rnx_layer:
        int kind
        int input_size
        int units
        int padding_idx
        int mask_zero
        int cell
        int direction
        int merge
        int proj_size
        int peepholes
        int input_forget
        float clip
        int activations[3]
        float alpha[3]
        float beta[3]
        int readout
        int activation
        float mask_value

    rnx_layer rnx_embedding_layer(int vocab_size, int dim, int padding_idx)
    rnx_layer rnx_recurrent_layer(rnx_cell cell, int input_size, int hidden_size,
                                  rnx_direction direction)
    rnx_layer rnx_readout_layer(rnx_readout mode)
    rnx_layer rnx_dense_layer(int input_size, int units, rnx_act activation)
    rnx_layer rnx_masking_layer(float mask_value)

    ctypedef struct rnx_model:
        pass

    ctypedef struct rnx_model_info:
        int isa
        int n_layers
        int takes_ids
        int input_size
        int per_step
        int output_size
        int n_recurrent
        size_t state_size
        size_t cell_size
        int streamable
        int folded
        size_t recurrent_param_offset
        size_t recurrent_param_count
        int precision

    ctypedef struct rnx_tape:
        pass

    int rnx_version_number()
    const char *rnx_status_string(rnx_status status)
    rnx_isa rnx_default_isa()
    int rnx_isa_supported(rnx_isa isa)
    const char *rnx_isa_name(rnx_isa isa)
    int rnx_max_threads()
    int rnx_has_openmp()
    rnx_status rnx_param_count(const rnx_layer *layers, int n_layers, size_t *count)
    rnx_status rnx_model_create(rnx_model **out, const rnx_layer *layers, int n_layers, int isa,
                                const float *params)
    rnx_status rnx_model_create_precision(rnx_model **out, const rnx_layer *layers, int n_layers,
                                          int isa, int precision, const float *params)
    void rnx_model_free(rnx_model *model)
    rnx_model_info rnx_model_get_info(const rnx_model *model)
    rnx_status rnx_model_layer(const rnx_model *model, int index, rnx_layer *out)
    rnx_status rnx_forward(const rnx_model *model, float *y, float *h_n, float *c_n,
                           const float *x, const int32_t *ids, const float *h0, const float *c0,
                           const int32_t *lengths, const uint8_t *mask, int B, int T,
                           int n_threads)

    ctypedef struct rnx_stream:
        pass

    rnx_status rnx_stream_create(rnx_stream **out, const rnx_model *model, int batch)
    void rnx_stream_free(rnx_stream *stream)
    rnx_status rnx_stream_reset(rnx_stream *stream, const float *h0, const float *c0)
    rnx_status rnx_stream_step(rnx_stream *stream, float *y, const float *x, const int32_t *ids)
    rnx_status rnx_stream_state(const rnx_stream *stream, float *h, float *c)

    # files
    ctypedef enum rnx_dtype:
        RNX_DTYPE_F32
        RNX_DTYPE_F16
        RNX_DTYPE_BF16
        RNX_DTYPE_F64
        RNX_DTYPE_I8

    ctypedef struct rnx_tensor_info:
        const char *name
        rnx_dtype dtype
        int ndim
        uint64_t shape[8]
        uint64_t offset
        uint64_t nbytes

    ctypedef struct rnx_file:
        pass

    const char *rnx_dtype_name(rnx_dtype dtype)
    rnx_status rnx_file_parse(rnx_file **out, const void *data, size_t size, char *message,
                              size_t message_size)
    void rnx_file_free(rnx_file *file)
    size_t rnx_file_tensor_count(const rnx_file *file)
    const rnx_tensor_info *rnx_file_tensor(const rnx_file *file, size_t index)
    size_t rnx_file_metadata_count(const rnx_file *file)
    rnx_status rnx_file_metadata(const rnx_file *file, size_t index, const char **key,
                                 const char **value)
    rnx_status rnx_file_read_f32(const rnx_file *file, const rnx_tensor_info *tensor, float *out,
                                 size_t count)
    rnx_status rnx_file_model_layers(const rnx_file *file, rnx_layer *layers, int max_layers,
                                     int *n_layers, char *message, size_t message_size)

    rnx_status rnx_tape_create(rnx_tape **out, const rnx_model *model, int B, int T)
    void rnx_tape_free(rnx_tape *tape)
    rnx_status rnx_tape_set_dropout(rnx_tape *tape, int layer, const float *mask, int B, int T)
    rnx_status rnx_forward_train(const rnx_model *model, rnx_tape *tape, float *seq,
                                 float *h_n, float *c_n, const float *x, const float *h0,
                                 const float *c0, const int32_t *lengths, const uint8_t *mask,
                                 int B, int T, int n_threads)
    rnx_status rnx_backward(const rnx_model *model, rnx_tape *tape, float *grads, float *dx,
                            float *dh0, float *dc0, const float *x, const float *dseq,
                            const float *dh_n, const float *dc_n, int n_threads)


cdef extern from "rnx_internal.h" nogil:
    int rnx_last_team()
