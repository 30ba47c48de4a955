// Tensor descriptions shared by the file formats: where a tensor lives in a file
// (TensorInfo) and a borrowed in-memory tensor to write (TensorView).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lowrank/dtype.h"

namespace lowrank {

/** One tensor entry of a safetensors header: [begin, end) is relative to the data section. */
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/** A tensor to write; `data` (nbytes, little-endian) is borrowed for the call's duration. */
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

/** Product of the dimensions, or nullopt when it overflows 64 bits. */
inline std::optional<uint64_t> checked_numel(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

/** Bytes for shape x dtype, or nullopt on overflow. */
inline std::optional<uint64_t> checked_nbytes(const std::vector<uint64_t>& shape, DType t) {
  auto n = checked_numel(shape);
  uint64_t bytes;
  if (!n || __builtin_mul_overflow(*n, static_cast<uint64_t>(dtype_size(t)), &bytes)) return std::nullopt;
  return bytes;
}

}  // namespace lowrank
