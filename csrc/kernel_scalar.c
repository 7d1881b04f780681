/* Portable kernels: 4-lane generic vectors that the compiler maps onto the baseline
 * instruction set (SSE2 on x86-64, NEON on aarch64, scalar code elsewhere). */
#define RNX_VW 4
#define RNX_MR 4
#define RNX_SUFFIX scalar
#define RNX_ISA_ID RNX_ISA_SCALAR
#include "kernel_impl.h"
