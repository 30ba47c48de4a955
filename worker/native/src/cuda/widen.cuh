// fp32 or bf16 (frozen weights) read as fp32: the one conversion every kernel that takes a
// weight in either dtype shares (bf16 values are exact in fp32).
#pragma once
#include <cuda_bf16.h>

#include <type_traits>

namespace lowrank::cuda {

__device__ inline float widen(float x) { return x; }
__device__ inline float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// fp32 <-> bf16 (round to nearest even) or the identity: the GEMM's operand conversions.
template <typename To, typename From>
__device__ inline To convert(From x) {
  if constexpr (std::is_same_v<To, From>) {
    return x;
  } else if constexpr (std::is_same_v<To, float>) {
    return widen(x);
  } else {
    return __float2bfloat16(x);
  }
}

}  // namespace lowrank::cuda
