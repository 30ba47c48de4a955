// dtype names/sizes and the bulk float conversions.
#include "lowrank/dtype.h"

#include <string>

#include "lowrank/error.h"

namespace lowrank {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};

// Same order as the enum (the Rust crate's alignment order).
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1},   {DType::U8, "U8", 1},     {DType::I8, "I8", 1},
    {DType::F8_E5M2, "F8_E5M2", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I16, "I16", 2},     {DType::U16, "U16", 2},   {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},   {DType::I32, "I32", 4},   {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},     {DType::C64, "C64", 8},   {DType::F64, "F64", 8},
    {DType::I64, "I64", 8},     {DType::U64, "U64", 8},
};

// Loads through memcpy so sources need no alignment; compilers emit plain vector loads.
template <typename T>
inline T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

size_t dtype_size(DType t) { return kDTypes[static_cast<size_t>(t)].size; }
std::string_view dtype_name(DType t) { return kDTypes[static_cast<size_t>(t)].name; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (d.name == name) return d.type;
  }
  return std::nullopt;
}

std::string_view dtype_names() {
  return "BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64";
}

bool dtype_converts_to_f32(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::F64:
    case DType::I8:
    case DType::U8:
      return true;
    default:
      return false;
  }
}

void f16_to_f32(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}
void f32_to_f16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}
void bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}
void f32_to_bf16(const float* in, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

void to_float32(DType t, const void* in, float* out, size_t n) {
  const auto* p = static_cast<const unsigned char*>(in);
  switch (t) {
    case DType::F32:
      std::memcpy(out, p, n * 4);
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
      return;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int8_t>(p[i]));
      return;
    case DType::U8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      return;
    default:
      throw Error("invalid_request", "cannot convert " + std::string(dtype_name(t)) +
                                         " to F32: only F32, F16, BF16, F64, I8 and U8 convert");
  }
}

}  // namespace lowrank
