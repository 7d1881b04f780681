/* AVX2 kernels with AVX-VNNI: those of kernel_avx2.c, whose int8 products take the VEX vpdpbusd
 * (CPUs with AVX-VNNI and without AVX-512, such as Intel's Alder Lake and later cores); this file
 * alone is compiled with -mavxvnni -mavx2 -mfma. */
#define RNX_VW 8
#define RNX_MR 3
#define RNX_SUFFIX avx_vnni
#define RNX_ISA_ID RNX_ISA_AVX_VNNI
#include "kernel_impl.h"
