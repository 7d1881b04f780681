/* rnnext.h: the one public header of the rnnext C core.
 *
 * rnnext runs vanilla RNNs, LSTMs and GRUs on CPUs. Weights follow PyTorch's layout and gate
 * orders; see the notes on rnx_layer and rnx_model_create. Nothing outside this header is public.
 *
 * Conventions
 *   B batch, T time steps, I input features, H hidden units, G gates (RNN 1, LSTM 4, GRU 3),
 *   L layers, D directions (1 or 2). All arrays are float32, C order, owned by the caller.
 *   Every call returns an rnx_status; the library never prints, exits or aborts.
 *
 * Alignment
 *   Every array must be aligned for its element type, as C requires of any float * or
 *   int32_t * (4 bytes; a misaligned pointer is undefined behaviour in the caller already).
 *   Nothing more is assumed: the kernels' vector loads and stores touch only the library's own
 *   buffers, which it aligns itself, and callers' arrays are read and written one element at a
 *   time or with memcpy, so an array may start at any multiple of 4 bytes. (The Python package
 *   copies a NumPy array whose data is not aligned before it reaches this library.)
 *
 * Thread safety
 *   One rnx_model may be shared by any number of threads calling rnx_forward at once: a model is
 *   read-only after rnx_model_create. The library never calls omp_set_num_threads; the thread
 *   count is an argument of each call.
 *
 * Building and linking
 *   `make -C csrc install PREFIX=/usr/local` (or CMake: csrc/CMakeLists.txt) installs this
 *   header, librnnext.a, librnnext.so.X.Y.Z (SONAME librnnext.so.X, X = RNX_VERSION_MAJOR),
 *   lib/pkgconfig/rnnext.pc and the CMake package lib/cmake/rnnext. Then link with
 *     pkg-config   cc app.c $(pkg-config --cflags --libs rnnext)            (shared)
 *                  pkg-config --static --libs rnnext adds what the static library needs
 *     CMake        find_package(rnnext) and target_link_libraries(app PRIVATE rnnext::rnnext),
 *                  or rnnext::rnnext_static; or add_subdirectory(csrc) for the same targets
 *     by hand      cc app.c -I$PREFIX/include -L$PREFIX/lib -lrnnext                  (shared)
 *                  cc app.c -I$PREFIX/include $PREFIX/lib/librnnext.a -fopenmp -lm    (static)
 *   The static library calls the OpenMP runtime it was built with (GCC's libgomp with -fopenmp;
 *   a library built with OPENMP= needs only -lm). The shared library exports the rnx_* names of
 *   this header and nothing else. rnx_version_number() checks a shared library against the
 *   RNX_VERSION_NUMBER a program was compiled with.
 */
#ifndef RNNEXT_H
#define RNNEXT_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(RNNEXT_BUILD_SHARED)
#define RNX_API __declspec(dllexport)
#elif defined(__GNUC__)
#define RNX_API __attribute__((visibility("default")))
#else
#define RNX_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define RNX_VERSION_MAJOR 0
#define RNX_VERSION_MINOR 3
#define RNX_VERSION_PATCH 0
#define RNX_VERSION_NUMBER (RNX_VERSION_MAJOR * 10000 + RNX_VERSION_MINOR * 100 + RNX_VERSION_PATCH)

/* The run-time version, to check a shared library against the header it was compiled with. */
RNX_API int rnx_version_number(void);

/* Status codes. The numbers are stable. */
typedef enum rnx_status {
    RNX_OK = 0,
    RNX_ERR_NULL_ARGUMENT = 1,   /* a required pointer was NULL */
    RNX_ERR_BAD_CONFIG = 2,      /* a layer list (rnx_layer) is invalid, or asks for what this build lacks */
    RNX_ERR_BAD_ARGUMENT = 3,    /* a size, length or thread count passed to a call is out of range */
    RNX_ERR_OUT_OF_MEMORY = 4,   /* an allocation failed */
    RNX_ERR_ISA_UNAVAILABLE = 5, /* the requested instruction set is not supported by this CPU/OS */
    RNX_ERR_OVERFLOW = 6,        /* a size computation would overflow */
    RNX_ERR_FILE_LENGTH = 7,     /* a file's length disagrees with its header: truncated or trailing bytes */
    RNX_ERR_FILE_HEADER = 8,     /* a file's header is not a well-formed safetensors JSON header */
    RNX_ERR_FILE_DTYPE = 9,      /* a tensor's dtype is not one rnnext reads */
    RNX_ERR_FILE_OFFSETS = 10,   /* a tensor's byte range is out of bounds, overlaps another, leaves a
                                    gap or disagrees with its shape and dtype */
    RNX_ERR_FILE_MODEL = 11,     /* a file's metadata or tensors do not describe an rnnext model */
    RNX_ERR_FILE_VERSION = 12    /* a file was written in a newer format version than this library's */
} rnx_status;

/* A static, never-NULL description of a status code. */
RNX_API const char *rnx_status_string(rnx_status status);

/* Recurrent cells.
 *   RNX_CELL_RNN_TANH, RNX_CELL_RNN_RELU (G=1): h' = act(W_ih x + b_ih + W_hh h + b_hh)
 *   RNX_CELL_LSTM (G=4, rows i, f, g, o):      c' = f*c + i*g,  h' = o*tanh(c')
 *   RNX_CELL_GRU  (G=3, rows r, z, n):          n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),
 *                                               h' = (1-z)*n + z*h
 *   RNX_CELL_GRU_RESET_BEFORE (G=3, as GRU but  n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)
 *     the reset applied before the product: ONNX linear_before_reset=0, Keras reset_after=False)
 */
typedef enum rnx_cell {
    RNX_CELL_RNN_TANH = 0,
    RNX_CELL_RNN_RELU = 1,
    RNX_CELL_LSTM = 2,
    RNX_CELL_GRU = 3,
    RNX_CELL_GRU_RESET_BEFORE = 4
} rnx_cell;

/* Instruction sets of the compute kernels. RNX_ISA_AUTO takes the one chosen at start-up: the
 * first the CPU and OS support of avx512_bf16, avx512_vnni, avx512, avx_vnni, avx2 and scalar,
 * or the one named by the environment variable RNNEXT_ISA. RNX_ISA_SCALAR is portable C (the
 * compiler maps its 4-wide generic vectors onto the baseline instruction set) and defines
 * correctness. */
typedef enum rnx_isa {
    RNX_ISA_AUTO = 0,
    RNX_ISA_SCALAR = 1,
    RNX_ISA_AVX2 = 2,       /* AVX2 + FMA, 8 lanes */
    RNX_ISA_AVX512 = 3,     /* AVX-512F and DQ, 16 lanes */
    RNX_ISA_AVX512_VNNI = 4, /* RNX_ISA_AVX512 with AVX-512BW and VNNI: int8 products by vpdpbusd */
    RNX_ISA_AVX512_BF16 = 5, /* RNX_ISA_AVX512_VNNI with AVX512-BF16: bf16 products by vdpbf16ps */
    RNX_ISA_AVX_VNNI = 6     /* RNX_ISA_AVX2 with AVX-VNNI: int8 products by the VEX vpdpbusd */
} rnx_isa;

/* The instruction set that RNX_ISA_AUTO resolves to in this process. If RNNEXT_ISA names an
 * unknown or unsupported instruction set, rnx_model_create with RNX_ISA_AUTO fails with
 * RNX_ERR_ISA_UNAVAILABLE and this returns RNX_ISA_AUTO. */
RNX_API rnx_isa rnx_default_isa(void);
/* Whether this CPU and OS can run the kernels of `isa`. */
RNX_API int rnx_isa_supported(rnx_isa isa);
/* "auto", "scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "avx_vnni"; "unknown" for
 * other values. */
RNX_API const char *rnx_isa_name(rnx_isa isa);
/* The most threads a call may ask for: n_threads above it is RNX_ERR_BAD_ARGUMENT, and the
 * OpenMP default that n_threads <= 0 takes is capped at it. 1024 is above the hardware threads
 * of the largest shared-memory servers sold today (2 sockets x 192 cores x 2 = 768), so no
 * machine loses speed to it, and far below the counts where thread creation fails (Linux's
 * default vm.max_map_count, 65530 maps at two a thread stack, stops at about 32K threads; libgomp
 * then ends the process, which a library must never let happen). Each thread of a call also
 * takes its own workspace. */
#define RNX_MAX_THREADS 1024

/* The number of threads a call with n_threads <= 0 would use: OpenMP's default (which honours
 * OMP_NUM_THREADS) capped at RNX_MAX_THREADS, or 1 when the library was built without
 * OpenMP. */
RNX_API int rnx_max_threads(void);
/* 1 when the library was compiled with OpenMP. */
RNX_API int rnx_has_openmp(void);

/* The kernels' vectorised activation functions, exposed so their accuracy can be checked:
 * out[i] = f(in[i]) for i < n, with f RNX_FN_SIGMOID or RNX_FN_TANH, on the kernels of `isa`.
 * Maximum absolute error against the exact function: 2e-7 (sigmoid), 4e-7 (tanh) over all
 * finite floats; +-inf give the limits (0, 1; -1, 1) and NaN gives NaN. */
typedef enum rnx_function { RNX_FN_SIGMOID = 0, RNX_FN_TANH = 1 } rnx_function;
RNX_API rnx_status rnx_activation(rnx_isa isa, rnx_function function, float *out, const float *in,
                                  size_t n);

/* ---------------------------------------------------------------------------------------------
 * Models: a list of layers
 *
 * A model is an optional embedding (token ids in) or masking layer (float x in, steps masked by
 * value), one or more recurrent layers (each its own cell, sizes and direction), an optional
 * readout and dense layers. Shapes: S_k is recurrent layer k's state width (proj_size, or H_k),
 * D_k its directions (2 for a bidirectional layer, else 1), W_k its output width (2*S_k for a
 * bidirectional concat, else S_k).
 * ------------------------------------------------------------------------------------------- */

/* Sizes above this are refused (RNX_ERR_BAD_CONFIG), so that no int product of sizes can wrap. */
#define RNX_MAX_SIZE (1 << 24)
/* Calls with B * T above this are refused (RNX_ERR_OVERFLOW). */
#define RNX_MAX_ROWS 0x7fffffff
/* The most layers in a list. */
#define RNX_MAX_LAYERS 1024

typedef enum rnx_layer_kind {
    RNX_LAYER_EMBEDDING = 0, /* token ids (B, T) -> vectors (B, T, E) */
    RNX_LAYER_RECURRENT = 1, /* an RNN, LSTM or GRU layer */
    RNX_LAYER_READOUT = 2,   /* sequence -> what the dense layers see */
    RNX_LAYER_DENSE = 3,     /* y = act(W x + b), per row */
    RNX_LAYER_MASKING = 4    /* float x (B, T, I) passes unchanged; a step whose I features all
                                equal mask_value is masked (Keras's Masking) */
} rnx_layer_kind;

typedef enum rnx_direction {
    RNX_DIRECTION_FORWARD = 0,
    RNX_DIRECTION_REVERSE = 1,      /* one direction, walking t = T-1 .. 0 */
    RNX_DIRECTION_BIDIRECTIONAL = 2 /* both, outputs merged */
} rnx_direction;

typedef enum rnx_merge {
    RNX_MERGE_CONCAT = 0, /* [forward, reverse]: width 2S */
    RNX_MERGE_SUM = 1,
    RNX_MERGE_MUL = 2,
    RNX_MERGE_AVE = 3 /* (forward + reverse) / 2 */
} rnx_merge;

typedef enum rnx_readout {
    RNX_READOUT_SEQUENCE = 0, /* every step: y (B, T, F); zero at invalid steps */
    RNX_READOUT_LAST = 1,     /* each sequence's output at its last valid step */
    RNX_READOUT_FINAL = 2,    /* the top layer's final states of each direction, merged */
    RNX_READOUT_MEAN = 3,     /* mean over valid steps */
    RNX_READOUT_MAX = 4       /* max over valid steps */
} rnx_readout;

/* Activation functions (ONNX's definitions, then Keras 3's other elementwise built-ins with its
 * one parameter, where it has one, in a; a = alpha, b = beta). */
typedef enum rnx_act {
    RNX_ACT_LINEAR = 0, /* x */
    RNX_ACT_SIGMOID = 1,
    RNX_ACT_TANH = 2,
    RNX_ACT_RELU = 3,
    RNX_ACT_HARD_SIGMOID = 4,     /* max(0, min(1, a x + b)) */
    RNX_ACT_AFFINE = 5,           /* a x + b */
    RNX_ACT_LEAKY_RELU = 6,       /* x >= 0 ? x : a x */
    RNX_ACT_THRESHOLDED_RELU = 7, /* x > a ? x : 0 */
    RNX_ACT_SCALED_TANH = 8,      /* a tanh(b x) */
    RNX_ACT_ELU = 9,              /* x >= 0 ? x : a (exp(x) - 1) */
    RNX_ACT_SOFTSIGN = 10,        /* x / (1 + |x|) */
    RNX_ACT_SOFTPLUS = 11,        /* log(1 + exp(x)) */
    RNX_ACT_SOFTMAX = 12,         /* dense layers only: over the row */
    RNX_ACT_RELU6 = 13,           /* min(max(x, 0), 6) */
    RNX_ACT_SELU = 14,            /* s (x > 0 ? x : c (exp(x) - 1)), s = 1.0507.., c = 1.6733.. */
    RNX_ACT_GELU = 15,            /* x P(X <= x), X ~ N(0, 1): the exact (erf) form */
    RNX_ACT_SILU = 16,            /* x sigmoid(x) (swish) */
    RNX_ACT_EXPONENTIAL = 17,     /* exp(x) */
    RNX_ACT_MISH = 18,            /* x tanh(softplus(x)) */
    RNX_ACT_HARD_SILU = 19,       /* x min(max(x + 3, 0), 6) / 6 (hard_swish) */
    RNX_ACT_HARD_TANH = 20,       /* min(max(x, -1), 1) */
    RNX_ACT_CELU = 21,            /* x > 0 ? x : a (exp(x / a) - 1) */
    RNX_ACT_LOG_SIGMOID = 22,     /* -log(1 + exp(-x)) */
    RNX_ACT_TANH_SHRINK = 23,     /* x - tanh(x) */
    RNX_ACT_SOFT_SHRINK = 24,     /* x > a ? x - a : x < -a ? x + a : 0 */
    RNX_ACT_HARD_SHRINK = 25,     /* |x| > a ? x : 0 */
    RNX_ACT_SQUAREPLUS = 26,      /* (x + sqrt(x^2 + a)) / 2 */
    RNX_ACT_SPARSE_PLUS = 27,     /* x <= -1 ? 0 : x < 1 ? (x + 1)^2 / 4 : x */
    RNX_ACT_SPARSE_SIGMOID = 28   /* min(max((x + 1) / 2, 0), 1) */
} rnx_act;

/* One layer. Fields a kind does not use must be zero (rnx_layer_* below fill them). */
typedef struct rnx_layer {
    int kind;       /* rnx_layer_kind */
    int input_size; /* features in; an embedding's vocabulary size V; a readout's 0 */
    int units;      /* embedding: E; recurrent: H; dense: output width; readout: 0 */
    /* embedding */
    int padding_idx; /* -1 for none, else in [0, V) (a training matter: forward ignores it) */
    int mask_zero;   /* 1: id 0 marks a masked step (Keras) */
    /* recurrent */
    int cell;         /* rnx_cell */
    int direction;    /* rnx_direction */
    int merge;        /* rnx_merge (bidirectional only; 0 otherwise) */
    int proj_size;    /* LSTM: 0 or P in [1, H) (PyTorch proj_size); others 0 */
    int peepholes;    /* LSTM: 0 or 1 (ONNX P) */
    int input_forget; /* LSTM: 0 or 1 (ONNX input_forget: f = 1 - i) */
    float clip;       /* 0 or > 0 (ONNX clip) */
    int activations[3]; /* rnx_act: LSTM f, g, h; GRU f, g; RNN f (unused slots 0) */
    float alpha[3], beta[3]; /* each function's a, b (0 where the function has none; celu's
                                a != 0, soft_shrink's and squareplus's a >= 0) */
    /* readout */
    int readout; /* rnx_readout */
    /* dense */
    int activation; /* rnx_act: LINEAR, RELU, TANH, SIGMOID or SOFTMAX */
    /* masking */
    float mask_value; /* finite; compared with x as float32 (-0 equals 0, NaN equals nothing) */
} rnx_layer;

/* Layers with their defaults filled in (every other field zero). */
RNX_API rnx_layer rnx_embedding_layer(int vocab_size, int dim, int padding_idx);
/* The cell's default activations (sigmoid/tanh; RNN: tanh or relu), forward direction. */
RNX_API rnx_layer rnx_recurrent_layer(rnx_cell cell, int input_size, int hidden_size,
                                      rnx_direction direction);
RNX_API rnx_layer rnx_readout_layer(rnx_readout mode);
RNX_API rnx_layer rnx_dense_layer(int input_size, int units, rnx_act activation);
/* A masking layer (input_size and units 0: it keeps the width of x). */
RNX_API rnx_layer rnx_masking_layer(float mask_value);

/* A list is valid when: an embedding or a masking layer comes first if at all (not both); then
 * one or more recurrent layers, each input_size the width below it (E, or the previous layer's
 * output width W; a masking layer keeps the width of x); then at most one readout; then dense
 * layers, each input_size the width below it. Sizes in
 * [1, RNX_MAX_SIZE]; n_layers in [1, RNX_MAX_LAYERS]; every field of every layer in its range
 * and zero where its kind does not use it. Anything else: RNX_ERR_BAD_CONFIG.
 *
 * Recurrent layers with the default options (no proj_size, peepholes, input_forget or clip; the
 * cell's default activations) run on the packed SIMD kernels; the others on a plain exact path
 * (one row at a time, libm's functions, one thread per batch slice). */

/* The number of floats rnx_model_create reads from `params`, in *count. RNX_ERR_BAD_CONFIG for
 * an invalid list, RNX_ERR_OVERFLOW when the count does not fit a size_t. */
RNX_API rnx_status rnx_param_count(const rnx_layer *layers, int n_layers, size_t *count);

typedef struct rnx_model rnx_model;

/* Builds a model; `params` holds every layer's parameters, in the order of the list and within
 * a layer PyTorch's:
 *   embedding   weight (V, E)
 *   recurrent   for each direction it runs (forward, then reverse; a reverse-only layer has its
 *               one reverse set): weight_ih (G*H, I), weight_hh (G*H, S), bias_ih (G*H),
 *               bias_hh (G*H), [weight_hr (P, H) with proj_size], [weight_peephole (3, H):
 *               i, f, o with peepholes]; G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
 *   dense       weight (O, F), bias (O)
 * Copied and packed; the caller keeps `params`. isa: an rnx_isa (RNX_ISA_AUTO: the default).
 * With an embedding before a first recurrent layer on the packed kernels, and V*G*H*D (G*H padded
 * to the kernels' panels) at most 2^24 floats (64 MB), each token's input projection (bias
 * included) is precomputed here: the first layer's input product becomes a row copy per token
 * (info.folded; 1.2x to 2.6x faster on one core, bench/bench_fold.py).
 * On success *out owns a new model, freed with rnx_model_free; on failure *out is NULL
 * (RNX_ERR_BAD_CONFIG names no field: check the list with rnx_param_count first). */
RNX_API rnx_status rnx_model_create(rnx_model **out, const rnx_layer *layers, int n_layers,
                                    int isa, const float *params);

/* Precision of a model's packed weights (rnx_model_create_precision).
 *   RNX_PRECISION_FP32  every weight in float32 (rnx_model_create).
 *   RNX_PRECISION_BF16  the recurrent layers' weight_ih, weight_hh and weight_hr rounded to
 *                       bfloat16 (round to nearest, ties to even; NaN stays NaN, +-inf stay
 *                       infinite) and kept as 16-bit values: half the bytes a step reads. Each
 *                       input of each product with them (a step's x, h or r*h, per batch row) is
 *                       rounded to bfloat16 the same way when it is used, as PyTorch's bf16
 *                       autocast and the hardware's bfloat16 products do; the products are
 *                       summed in float32, over each pair of inputs (k even, k+1) as
 *                       vdpbf16ps does: the k+1 term added first, then the k term, each by one
 *                       fused multiply-add. RNX_ISA_AVX512_BF16 takes vdpbf16ps; the other
 *                       instruction sets with FMA compute the same sums in the same order, so
 *                       they give the same bits (except for a weight or input below 2^-126 in
 *                       magnitude, which vdpbf16ps takes as zero). Biases, peepholes, gates,
 *                       states, the embedding and the dense layers stay float32. Layers on the
 *                       plain path (see above) hold their rounded weights as float32 and round
 *                       the inputs of their products alike. Inference only: rnx_tape_create
 *                       refuses such a model (RNX_ERR_BAD_ARGUMENT).
 *   RNX_PRECISION_INT8  dynamic quantization, with the semantics of ONNX Runtime's
 *                       DynamicQuantizeLSTM at a finer grain. Each row of weight_ih and
 *                       weight_hh (one gate of one unit) is quantized symmetrically once:
 *                       s_w = max|w| / 127, q_w = round(w / s_w) in [-127, 127]. Each input of
 *                       each product (a step's x or h, per batch row) is quantized when it is
 *                       used, as ONNX's DynamicQuantizeLinear does a tensor: s_a = (max(0, max a)
 *                       - min(0, min a)) / 255, z = round(-min(0, min a) / s_a), q_a =
 *                       clamp(round(a / s_a) + z, 0, 255). The product is summed exactly in
 *                       int32 and gives (sum q_a q_w - z sum q_w) * s_a * s_w; biases, gates,
 *                       states and everything else stay float32. Rounding is to nearest, ties
 *                       to even. An all-zero row or input has scale 1; a non-finite weight or
 *                       input gives NaN outputs. Every instruction set computes the same
 *                       integers (RNX_ISA_AVX512_VNNI with vpdpbusd, the others exactly in
 *                       float32 blocks), so only the float32 parts differ between them.
 *                       Layers on the plain path, the GRU with the reset before the product
 *                       and products over more than RNX_INT8_MAX_K inputs (input_size or units)
 *                       are refused (RNX_ERR_BAD_CONFIG). Inference only, as bf16. */
/* The most inputs of an int8 product: 255 * 127 * 65536 is below 2^31, so no int32 sum
 * overflows. */
#define RNX_INT8_MAX_K 65536
typedef enum rnx_precision {
    RNX_PRECISION_FP32 = 0,
    RNX_PRECISION_BF16 = 1,
    RNX_PRECISION_INT8 = 2
} rnx_precision;

/* rnx_model_create with the weights at `precision` (an rnx_precision; another value:
 * RNX_ERR_BAD_CONFIG). RNX_PRECISION_FP32 is rnx_model_create. */
RNX_API rnx_status rnx_model_create_precision(rnx_model **out, const rnx_layer *layers,
                                              int n_layers, int isa, int precision,
                                              const float *params);

/* Frees a model; NULL is a no-op. */
RNX_API void rnx_model_free(rnx_model *model);

/* What a model takes and gives. */
typedef struct rnx_model_info {
    int isa;           /* resolved, never RNX_ISA_AUTO */
    int n_layers;
    int takes_ids;     /* 1: x is token ids (B, T) int32 (an embedding comes first) */
    int input_size;    /* I of float x, or the vocabulary size V when takes_ids */
    int per_step;      /* 1: y is (B, T, output_size); 0: (B, output_size) */
    int output_size;
    int n_recurrent;   /* recurrent layers */
    size_t state_size; /* floats of h per sequence: the sum over recurrent layers and their
                          directions of S_k */
    size_t cell_size;  /* floats of c per sequence: the same over LSTM layers of H_k */
    int streamable;    /* 1 when every recurrent layer runs forward and the readout is sequence,
                          last or final */
    int folded;        /* 1 when the embedding is folded into the first layer's input product */
    size_t recurrent_param_offset, recurrent_param_count; /* the recurrent layers' params
                          within `params` (what rnx_backward's grads hold) */
    int precision;     /* rnx_precision of its packed weights */
} rnx_model_info;

/* The model's info; all zeros for NULL. */
RNX_API rnx_model_info rnx_model_get_info(const rnx_model *model);
/* Layer `index` of the list the model was built with, into *out (RNX_ERR_BAD_ARGUMENT past the
 * end). */
RNX_API rnx_status rnx_model_layer(const rnx_model *model, int index, rnx_layer *out);

/* States: h0, h_n (and c0, c_n) hold, for each recurrent layer k and each of its directions
 * (forward, then reverse), a (B, S_k) block (c: (B, H_k), LSTM layers only), one after the
 * other: info.state_size (info.cell_size) floats per sequence, B*state_size in all. For a
 * uniform stack this is PyTorch's (L*D, B, H). */

/* Runs the whole model over a batch: embedding (or float x), every recurrent layer, readout,
 * dense layers.
 *   y          (B, T, F) when info.per_step, else (B, F), F = info.output_size; or NULL.
 *              Per step: zero at invalid steps.
 *   h_n, c_n   final states (see States) or NULL: each layer and direction's state after its
 *              last valid step (a sequence without one keeps its initial state).
 *   x          (B, T, I) float, or NULL when the model takes ids
 *   ids        (B, T) int32 in [0, V), or NULL when it takes x; any id out of range (also at
 *              invalid steps): RNX_ERR_BAD_ARGUMENT before any work. The array the model does not
 *              take must be NULL (RNX_ERR_BAD_ARGUMENT), the one it takes must not
 *              (RNX_ERR_NULL_ARGUMENT).
 *   h0, c0     initial states or NULL for zeros
 *   lengths    (B) in [1, T], or NULL: steps t >= lengths[b] are invalid.
 *   mask       (B, T) of 0/1 bytes, or NULL: a masked step leaves the states alone and outputs
 *              zeros (Keras); a reverse direction walks t = T-1 .. 0 taking the unmasked steps.
 *              lengths and mask together: RNX_ERR_BAD_ARGUMENT. An embedding with mask_zero
 *              masks the steps whose id is 0 (and with lengths, those past it too); a masking
 *              layer masks the steps of x whose features all equal its mask_value, computed
 *              here from x (and with lengths or mask, the steps they mask too).
 *   n_threads  threads to use (OpenMP over the batch), at most RNX_MAX_THREADS
 *              (RNX_ERR_BAD_ARGUMENT above it); <= 0 for rnx_max_threads(). A call starts no
 *              more threads than it has parts of work: rows of the batch, or for a small batch
 *              the panels of the recurrent product. In a process forked after this library
 *              was loaded, the forking thread's calls open their threads from a fresh thread
 *              (libgomp's threads of the parent were not copied).
 * Readouts see the valid steps only; a sequence without one gives zeros for last, mean and max,
 * and its initial states for final. The results do not depend on n_threads. Workspace is
 * allocated once per call; it does not grow with T when every recurrent layer runs forward,
 * and holds (B, T, W) sequences otherwise. Safe to call concurrently on one model. */
RNX_API rnx_status rnx_forward(const rnx_model *model, float *y, float *h_n, float *c_n,
                               const float *x, const int32_t *ids, const float *h0,
                               const float *c0, const int32_t *lengths, const uint8_t *mask,
                               int B, int T, int n_threads);

/* Streaming: one time step per call, the states kept inside.
 *
 * A stream runs an info.streamable model (RNX_ERR_BAD_CONFIG otherwise) over `batch`
 * sequences, one step at a time, on the calling thread. Its memory is allocated by
 * rnx_stream_create; rnx_stream_step allocates nothing, which suits real-time callers. The model
 * must outlive the stream. One stream belongs to one thread at a time; many streams may share a
 * model. */
typedef struct rnx_stream rnx_stream;

/* A new stream on `model` with zero states. On failure *out is NULL. */
RNX_API rnx_status rnx_stream_create(rnx_stream **out, const rnx_model *model, int batch);
/* Frees a stream; NULL is a no-op. */
RNX_API void rnx_stream_free(rnx_stream *stream);
/* Sets the states: h0, c0 as in States with B = batch, or NULL for zeros. */
RNX_API rnx_status rnx_stream_reset(rnx_stream *stream, const float *h0, const float *c0);
/* One step: x (batch, I) or ids (batch) in (the one the model takes; the other NULL, as
 * rnx_forward: an id out of range is RNX_ERR_BAD_ARGUMENT and changes nothing);
 * y (batch, output_size) or NULL: the model's output for this step, the dense layers applied to
 * the top layer's new h (with mask_zero, a step with id 0, with a masking layer, a step whose
 * features all equal mask_value, keeps the states and gives zeros for a sequence readout, the
 * kept state's output for last and final). */
RNX_API rnx_status rnx_stream_step(rnx_stream *stream, float *y, const float *x,
                                   const int32_t *ids);
/* The current states into h, c (as in States with B = batch); either may be NULL. */
RNX_API rnx_status rnx_stream_state(const rnx_stream *stream, float *h, float *c);

/* ---------------------------------------------------------------------------------------------
 * Files
 *
 * An rnnext file is a safetensors file, so the safetensors tools open it:
 *   8 bytes    N, the header's length, little-endian unsigned (at most RNX_FILE_MAX_HEADER)
 *   N bytes    a JSON object, UTF-8, optionally padded with spaces: for each tensor
 *              "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, and
 *              "__metadata__": {"key": "value", ...} with string values only
 *   the data   the tensors' raw little-endian bytes; each tensor's [begin, end) counts from the
 *              data's start, and the ranges tile the data exactly, without gaps or overlaps
 * The metadata of a model file (all values strings) describes its layers (rnx_layer).
 * Format version 2: format "rnnext", format_version "2", layers "N" (1 .. RNX_MAX_LAYERS),
 * input_size (the features of x; only without an embedding), and for each layer i, keys
 * "layer{i}.{field}" (decimal integers without sign or leading zeros; floats as Python's repr
 * writes them, finite; lists comma-separated without spaces):
 *   type       embedding | masking | rnn | lstm | gru | readout | dense, in the order
 *              [embedding | masking] (rnn|lstm|gru)+ [readout] dense*
 *   embedding  vocab_size, dim, padding_idx (in [0, vocab_size) or "none"), mask_zero "0" | "1"
 *   masking    mask_value (a float; the model's input_size is the width of x)
 *   rnn, lstm, gru
 *              units, input_size (the width below: dim, the model's input_size, or the layer
 *              below's output width), direction forward | reverse | bidirectional,
 *              merge concat | sum | mul | ave, activations (the cell's functions: rnn 1, gru 2,
 *              lstm 3, each linear | sigmoid | tanh | relu | hard_sigmoid | affine | leaky_relu |
 *              thresholded_relu | scaled_tanh | elu | softsign | softplus | relu6 | selu |
 *              gelu | silu | exponential | mish | hard_silu | hard_tanh | celu | log_sigmoid |
 *              tanh_shrink | soft_shrink | hard_shrink | squareplus | sparse_plus |
 *              sparse_sigmoid: rnx_act's names in lower case), activation_alpha,
 *              activation_beta (as many floats), clip ("none" or a float > 0);
 *              rnn: nonlinearity tanh | relu; gru: reset_after "1" | "0" ("0":
 *              RNX_CELL_GRU_RESET_BEFORE); lstm: proj_size (0 or in [1, units)), peepholes and
 *              input_forget "0" | "1"
 *   readout    mode sequence | last | final | mean | max
 *   dense      units, activation none | relu | tanh | sigmoid | softmax
 * Optionally precision fp32 | bf16 | int8 (rnx_precision; fp32 by default): the precision
 * rnx_model_load builds the model at (a bf16 file's writer stores the recurrent weights as BF16
 * tensors; tensors of any float rnx_dtype are read either way, and rounded to bfloat16 at bf16).
 * At int8 a recurrent weight_ih or weight_hh may be stored quantized, as an I8 tensor of its
 * shape holding q_w (RNX_PRECISION_INT8), with its row scales s_w in an F32 tensor of the same
 * name plus ".scale" and shape (rows), each finite and > 0; it reads as q_w * s_w row by row, which
 * rnx_model_create_precision quantizes back to the same q_w. An I8 tensor anywhere else, or in a
 * file of another precision, is refused with RNX_ERR_FILE_DTYPE, as is a scale tensor not F32; a
 * missing scale tensor, one of another shape or with a scale not finite and > 0 with
 * RNX_ERR_FILE_MODEL.
 * Other "layer{i}.*" keys are refused; other keys are ignored. Its tensors are the parameters of
 * rnx_model_create's params, with their names and shapes: embedding.weight (V, E); per recurrent
 * layer k and direction (suffix "_reverse" for the reverse one) weight_ih_l{k} (G*H, I_k),
 * weight_hh_l{k} (G*H, S), bias_ih_l{k}, bias_hh_l{k} (G*H), weight_hr_l{k} (P, H) with a
 * projection, weight_peephole_l{k} (3, H) with peepholes; per dense layer j dense{j}.weight
 * (O, F) and dense{j}.bias (O); and nothing else but the scales of I8 tensors.
 * Format version 1 (still read): format "rnnext", format_version "1", cell "rnn" | "lstm" | "gru",
 *   nonlinearity "tanh" | "relu" (optional, "tanh" by default; "relu" for "rnn" only),
 *   linear_before_reset "1" | "0" (optional, "1" by default; "gru" only: "0" is
 *   RNX_CELL_GRU_RESET_BEFORE), input_size, hidden_size, num_layers, bidirectional "0" | "1",
 *   and optionally a head: output_size, output "many_to_one" (by default) | "many_to_many",
 *   activation "none" (by default) | "softmax" | "sigmoid". Other keys are ignored. It reads as
 *   num_layers recurrent layers (forward or bidirectional with concat, the cell's default
 *   activations), then with a head a readout "last" (many_to_one; none for many_to_many) and a
 *   dense layer. Its tensors have PyTorch's names (weight_ih_l0, ..._reverse) and the head's are
 *   head.weight (O, D*H) and head.bias (O).
 * Parsing reads only the bytes it is given, checks every size with overflow-checked arithmetic,
 * and never runs code from the file. The calls below that take `message` write a NUL-terminated
 * description of a failure into it (truncated to message_size bytes; NULL or 0 for none).
 * ------------------------------------------------------------------------------------------- */

/* The largest header accepted, in bytes (as the safetensors library). */
#define RNX_FILE_MAX_HEADER 100000000u
/* The most dimensions a tensor of a file may have. */
#define RNX_FILE_MAX_DIMS 8
/* The newest format version this library reads (older ones are read too). */
#define RNX_FILE_FORMAT_VERSION 2

/* The dtypes a file's tensors may have (safetensors' names in comments); others are refused
 * with RNX_ERR_FILE_DTYPE. Every one is read as float32. */
typedef enum rnx_dtype {
    RNX_DTYPE_F32 = 0,  /* "F32" */
    RNX_DTYPE_F16 = 1,  /* "F16", IEEE half */
    RNX_DTYPE_BF16 = 2, /* "BF16" */
    RNX_DTYPE_F64 = 3,  /* "F64", rounded to float32 when read */
    RNX_DTYPE_I8 = 4    /* "I8", signed: quantized values q, read as q * scale with the scale of
                           their row (the first dimension; one row for a scalar) from the F32
                           tensor of the same name plus ".scale", of shape (rows) */
} rnx_dtype;

/* "F32", "F16", "BF16", "F64", "I8"; "unknown" for other values. */
RNX_API const char *rnx_dtype_name(rnx_dtype dtype);

/* One tensor of a parsed file. */
typedef struct rnx_tensor_info {
    const char *name;                  /* NUL-terminated UTF-8, owned by the rnx_file */
    rnx_dtype dtype;
    int ndim;                          /* 0 .. RNX_FILE_MAX_DIMS */
    uint64_t shape[RNX_FILE_MAX_DIMS]; /* the first ndim are set */
    uint64_t offset;                   /* where its bytes start, from the start of the file */
    uint64_t nbytes;                   /* product of shape times the dtype's size */
} rnx_tensor_info;

/* A parsed and checked file: its tensor table and metadata. It refers to the bytes it was parsed
 * from, which must stay unchanged and alive until rnx_file_free. Read-only: safe to share. */
typedef struct rnx_file rnx_file;

/* Parses and checks the `size` bytes at `data` as a safetensors file: the header length (at most
 * RNX_FILE_MAX_HEADER and within the buffer), well-formed JSON, dtypes, shapes (at most
 * RNX_FILE_MAX_DIMS dimensions), byte ranges (in bounds, matching shape and dtype, tiling the
 * data without gaps or overlaps), unique names and metadata keys, and the exact file length.
 * On success *out owns a new table, freed with rnx_file_free; on failure *out is NULL and
 * `message` says what is wrong, naming the tensor or key. */
RNX_API rnx_status rnx_file_parse(rnx_file **out, const void *data, size_t size, char *message,
                                  size_t message_size);

/* Frees a table; NULL is a no-op. */
RNX_API void rnx_file_free(rnx_file *file);

/* The number of tensors; the tensor of `index` in file order (by byte offset), or NULL when
 * index >= the count; the tensor called `name`, or NULL. */
RNX_API size_t rnx_file_tensor_count(const rnx_file *file);
RNX_API const rnx_tensor_info *rnx_file_tensor(const rnx_file *file, size_t index);
RNX_API const rnx_tensor_info *rnx_file_find(const rnx_file *file, const char *name);

/* The number of metadata entries; entry `index` (in key order) in *key and *value, which the
 * table owns (RNX_ERR_BAD_ARGUMENT when index >= the count); the value of `key`, or NULL. */
RNX_API size_t rnx_file_metadata_count(const rnx_file *file);
RNX_API rnx_status rnx_file_metadata(const rnx_file *file, size_t index, const char **key,
                                     const char **value);
RNX_API const char *rnx_file_metadata_get(const rnx_file *file, const char *key);

/* Reads `tensor` (one of `file`'s) as float32 into out, which holds `count` floats: count must
 * be the tensor's number of elements (RNX_ERR_BAD_ARGUMENT otherwise). An I8 tensor needs its
 * scales (rnx_dtype): without the tensor RNX_ERR_FILE_MODEL, not F32 RNX_ERR_FILE_DTYPE, of
 * another shape or with a scale not finite and > 0 RNX_ERR_FILE_MODEL. */
RNX_API rnx_status rnx_file_read_f32(const rnx_file *file, const rnx_tensor_info *tensor,
                                     float *out, size_t count);

/* The layers of the model file `file` (format version 1 or 2), from its metadata, checked
 * against its tensors: exactly the expected names, each with the expected shape, and I8
 * tensors only where the format allows them, with their scales (see "Files" above).
 * layers[0 .. *n_layers) get them; max_layers is the room in `layers` (RNX_MAX_LAYERS always
 * suffices; a file with more layers than the room: RNX_ERR_BAD_ARGUMENT). A newer format version
 * than RNX_FILE_FORMAT_VERSION is RNX_ERR_FILE_VERSION; a misplaced I8 tensor or a scale
 * tensor not F32 RNX_ERR_FILE_DTYPE; other faults RNX_ERR_FILE_MODEL, with a message that names
 * the metadata key or the tensor. */
RNX_API rnx_status rnx_file_model_layers(const rnx_file *file, rnx_layer *layers, int max_layers,
                                         int *n_layers, char *message, size_t message_size);

/* Builds a model from the `size` bytes of a model file at `data` (rnx_file_parse, then
 * rnx_file_model_layers, then rnx_model_create_precision with the tensors read as float32 in its
 * order, instruction set `isa`, an rnx_isa, and the file's precision key). The bytes are not
 * needed afterwards. On success *out owns a new model, freed with rnx_model_free; on failure
 * *out is NULL and `message` says why. */
RNX_API rnx_status rnx_model_load(rnx_model **out, const void *data, size_t size, int isa,
                                  char *message, size_t message_size);

/* ---------------------------------------------------------------------------------------------
 * Training: backpropagation through time
 *
 * A training step is rnx_forward_train, which keeps in a tape what the backward pass needs (each
 * step's activated gates and states), then rnx_backward, which turns the gradient of the loss
 * with respect to the outputs into gradients of the parameters (and of x and the initial state).
 * rnx_forward keeps nothing. Losses, heads and optimizers are the caller's.
 * ------------------------------------------------------------------------------------------- */

typedef struct rnx_tape rnx_tape;

/* Training covers the recurrent layers: the caller looks the embedding up, and computes the
 * readout's and dense layers' gradients (the Python package does this in NumPy). Every recurrent
 * layer of a list trains: any cell, size, direction (forward, reverse, bidirectional with any
 * merge) and option (the options the packed kernels lack train on the plain exact path).
 *
 * Creates a tape for training-mode passes over up to B sequences of up to T steps, with any
 * model of `model`'s layer list and instruction set, so it can be kept across parameter updates.
 * Its size grows with B*T: per recurrent layer and direction about 4*B*T*(G+2)*H bytes, and
 * 4*B*T*W for each layer's output but the top one's. On failure *out is NULL. One tape serves
 * one pass at a time. Training runs in float32 only: a model of another precision is
 * RNX_ERR_BAD_ARGUMENT here and in rnx_forward_train. */
RNX_API rnx_status rnx_tape_create(rnx_tape **out, const rnx_model *model, int B, int T);

/* Frees a tape; NULL is a no-op. */
RNX_API void rnx_tape_free(rnx_tape *tape);

/* Dropout between recurrent layers (PyTorch's nn.LSTM(dropout=p)), for the training passes of
 * `tape` from now on: recurrent layer `layer` (counted from 0 among the recurrent layers, in
 * [1, info.n_recurrent - 1]; the first layer's input is the caller's x) reads its input, the
 * merged output sequence of the layer below, multiplied element-wise by `mask` (B, T, I_layer):
 * the caller's multipliers, for inverted dropout 0 or 1/(1-p), drawn per element and step.
 * rnx_backward multiplies the gradient that reaches the layer below's outputs by the same mask.
 * The mask is copied into the tape (the first call for a layer allocates its room, B*T*I_layer
 * floats of the tape's capacity); it stays until replaced or removed with mask NULL (then B and
 * T are ignored). Each rnx_forward_train needs the B and T of every mask set
 * (RNX_ERR_BAD_ARGUMENT otherwise), and setting a mask voids the pass the tape holds.
 * RNX_ERR_BAD_ARGUMENT for a layer out of range or B, T outside [1, the tape's]. */
RNX_API rnx_status rnx_tape_set_dropout(rnx_tape *tape, int layer, const float *mask, int B,
                                        int T);

/* The recurrent layers' forward pass, filling `tape` for rnx_backward. B and T must not exceed
 * the tape's; the model must have the tape's layer list and instruction set
 * (RNX_ERR_BAD_ARGUMENT otherwise).
 *   seq        (B, T, W) or NULL: the top recurrent layer's (merged) output sequence, zero at
 *              inactive steps.
 *   h_n, c_n   final states, as rnx_forward's (see States), or NULL.
 *   x          (B, T, I_0): the first recurrent layer's input (an embedding model's embedded
 *              vectors: the caller looks them up).
 *   h0, c0     initial states (see States) or NULL for zeros.
 *   lengths    (B) in [1, T], or NULL; mask (B, T) of 0/1 bytes, or NULL: as rnx_forward's (an
 *              embedding's mask_zero and a masking layer's steps, computed from the x before
 *              any input dropout, are the caller's to turn into `mask`). Not both.
 *   n_threads  as rnx_forward; the results do not depend on it.
 * x, h0, c0, lengths and mask are not kept: rnx_backward takes x again. The dropout masks set on
 * the tape (rnx_tape_set_dropout) apply to the layers' inputs above the first. */
RNX_API rnx_status rnx_forward_train(const rnx_model *model, rnx_tape *tape, float *seq,
                                     float *h_n, float *c_n, const float *x, const float *h0,
                                     const float *c0, const int32_t *lengths, const uint8_t *mask,
                                     int B, int T, int n_threads);

/* Backpropagation through the pass that the last rnx_forward_train recorded in `tape` with the
 * same `model` (RNX_ERR_BAD_ARGUMENT otherwise, or when the tape was already used: the backward
 * pass overwrites it, so each rnx_backward needs a new rnx_forward_train).
 *   grads      (info.recurrent_param_count floats): dLoss/d(the recurrent layers' params), in
 *              the order of rnx_model_create's params from info.recurrent_param_offset on;
 *              overwritten. input_forget's unused f rows get zero.
 *   dx         (B, T, I_0) or NULL: dLoss/dx.
 *   dh0, dc0   dLoss/dh0, dLoss/dc0 (see States), or NULL.
 *   x          (B, T, I_0): the x given to rnx_forward_train.
 *   dseq       (B, T, W) or NULL for zeros: dLoss/dseq; entries at inactive steps are ignored
 *              (those outputs are constant zeros).
 *   dh_n, dc_n dLoss/dh_n, dLoss/dc_n (see States), or NULL for zeros.
 *   n_threads  as rnx_forward. The results do not depend on it: every sum runs in one order.
 * The gradient reaching a layer's outputs through a dropout mask is multiplied by the mask the
 * pass ran with.
 * Workspace (transposed weights and per-thread buffers) is allocated once per call. */
RNX_API rnx_status rnx_backward(const rnx_model *model, rnx_tape *tape, float *grads, float *dx,
                                float *dh0, float *dc0, const float *x, const float *dseq,
                                const float *dh_n, const float *dc_n, int n_threads);

#ifdef __cplusplus
}
#endif
#endif /* RNNEXT_H */
