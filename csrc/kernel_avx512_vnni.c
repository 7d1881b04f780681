/* AVX-512 kernels with VNNI: those of kernel_avx512.c, whose int8 products take vpdpbusd; this
 * file alone is compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vnni -mavx2 -mfma. */
#define RNX_VW 16
#define RNX_MR 6
#define RNX_SUFFIX avx512_vnni
#define RNX_ISA_ID RNX_ISA_AVX512_VNNI
#include "kernel_impl.h"
