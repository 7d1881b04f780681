/* AVX-512F/DQ kernels; this file alone is compiled with -mavx512f -mavx512dq -mavx2 -mfma. */
#define RNX_VW 16
#define RNX_MR 6
#define RNX_SUFFIX avx512
#define RNX_ISA_ID RNX_ISA_AVX512
#include "kernel_impl.h"
