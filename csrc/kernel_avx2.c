/* AVX2 + FMA kernels; this file alone is compiled with -mavx2 -mfma. */
#define RNX_VW 8
#define RNX_MR 3
#define RNX_SUFFIX avx2
#define RNX_ISA_ID RNX_ISA_AVX2
#include "kernel_impl.h"
