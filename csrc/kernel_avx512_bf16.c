/* AVX-512 kernels with VNNI and AVX512-BF16: those of kernel_avx512_vnni.c, whose bf16 products
 * take vdpbf16ps; this file alone is compiled with -mavx512f -mavx512dq -mavx512bw -mavx512vnni
 * -mavx512bf16 -mavx2 -mfma. */
#define RNX_VW 16
#define RNX_MR 6
#define RNX_SUFFIX avx512_bf16
#define RNX_ISA_ID RNX_ISA_AVX512_BF16
#include "kernel_impl.h"
