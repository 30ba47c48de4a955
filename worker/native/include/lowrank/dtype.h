// Element types of safetensors files and the float conversions between them.
// The enum order is the Rust safetensors crate's (increasing alignment): its writer lays
// tensors out by dtype descending, and ours must produce byte-identical layouts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace lowrank {

enum class DType : uint8_t {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

/** Bytes per element. */
size_t dtype_size(DType t);
/** The safetensors spelling ("F32", "BF16", ...). */
std::string_view dtype_name(DType t);
/** Parses a safetensors dtype name; nullopt when unknown. */
std::optional<DType> parse_dtype(std::string_view name);
/** Comma-separated list of the names parse_dtype accepts, for error messages. */
std::string_view dtype_names();
/** Whether to_float32 converts this dtype (F32, F16, BF16, F64, I8, U8). */
bool dtype_converts_to_f32(DType t);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 <-> binary32, exact and branch-free (the FP16 library's float tricks,
// also used by PyTorch, so results match torch bit for bit). They rely on the default
// round-to-nearest-even mode and gradual underflow: never build with -ffast-math.
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  // Masks instead of a branch or ?: so that loops over this vectorize.
  const uint32_t is_denormal = 0u - static_cast<uint32_t>(two_w < (1u << 27));
  return f32_from_bits(sign | (f32_bits(denormalized) & is_denormal) | (f32_bits(normalized) & ~is_denormal));
}

/** Round to nearest even; overflow to inf; NaN -> sign | 0x7E00 (quiet, as torch). */
inline uint16_t f32_to_f16(float f) {
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t exp = shl1_w & 0xFF000000u;
  const uint32_t bias = exp > 0x71000000u ? exp : 0x71000000u;  // max: vectorizes
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  const uint32_t is_nan = 0u - static_cast<uint32_t>(shl1_w > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | (0x7E00u & is_nan) | (nonsign & ~is_nan));
}

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

/** Round to nearest even (overflow rounds to inf); NaN -> 0x7FC0, as torch. */
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t is_nan = 0u - static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((0x7FC0u & is_nan) | (rounded & ~is_nan));
}

// Bulk conversions over n elements (plain loops the compiler vectorizes).
void f16_to_f32(const uint16_t* in, float* out, size_t n);
void f32_to_f16(const float* in, uint16_t* out, size_t n);
void bf16_to_f32(const uint16_t* in, float* out, size_t n);
void f32_to_bf16(const float* in, uint16_t* out, size_t n);

/**
 * Converts n elements of `t` at `in` (any alignment, little-endian) to float32.
 * Throws lowrank::Error("invalid_request") for dtypes without a float conversion.
 */
void to_float32(DType t, const void* in, float* out, size_t n);

}  // namespace lowrank
