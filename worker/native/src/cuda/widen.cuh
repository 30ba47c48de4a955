// fp32 or bf16 (frozen weights) read as fp32: the one conversion every kernel that takes a
// weight in either dtype shares (bf16 values are exact in fp32).
#pragma once
#include <cuda_bf16.h>

namespace lowrank::cuda {

__device__ inline float widen(float x) { return x; }
__device__ inline float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

}  // namespace lowrank::cuda
