// Counter-based random numbers (METHODS §7 P10, §8.2): Philox4x32-10 keyed by
// (seed, stream, index). Element i of a stream depends only on (seed, stream, i), never
// on thread count, call order or backend, so CUDA can reproduce the same bytes later.
//
// Layout: key = (seed lo, seed hi); counter = (block lo, block hi, stream lo, stream hi);
// block b yields 4 words, element i reads word i % 4 of block i / 4.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace lowrank {

using PhiloxBlock = std::array<uint32_t, 4>;

/** The Philox4x32 bijection with 10 rounds (Salmon et al., SC'11; Random123). */
PhiloxBlock philox4x32_10(PhiloxBlock counter, std::array<uint32_t, 2> key);

/** The 4 raw words of block `block` of stream `stream`. */
PhiloxBlock philox_block(uint64_t seed, uint64_t stream, uint64_t block);

/** Raw 32-bit word i of the stream. */
uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t i);

/** Uniform in [0, 1): the top 24 bits of word i times 2^-24 (exact in fp32). */
float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i);

/**
 * Standard normal element i: Box–Muller on the word pair (2j, 2j+1) of block i / 4, with
 * u1 = (top24 + 1) 2^-24 in (0, 1] and u2 = top24 2^-24; element i uses cos for even
 * i % 4 and sin for odd. Computed in double, rounded once to fp32.
 */
float philox_normal(uint64_t seed, uint64_t stream, uint64_t i);

/** n normals (or uniforms) starting at element `offset` into out. */
void philox_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float* out);
void philox_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float* out);

/** 64-bit FNV-1a of a purpose string ("dare:<module>:A:<input>"), used to derive streams. */
uint64_t stream_id(const std::string& purpose);

}  // namespace lowrank
