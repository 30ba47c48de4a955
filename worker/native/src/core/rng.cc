// Philox4x32-10 and the distributions built on it (see rng.h for the stream layout).
#include "lowrank/rng.h"

#include <cmath>

namespace lowrank {

namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr double kTwoPi = 6.283185307179586476925286766559;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

inline double top24(uint32_t w) { return static_cast<double>(w >> 8); }

}  // namespace

PhiloxBlock philox4x32_10(PhiloxBlock c, std::array<uint32_t, 2> k) {
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k[0] += kWeyl0;
      k[1] += kWeyl1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c[0], &hi0, &lo0);
    mulhilo(kMul1, c[2], &hi1, &lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

PhiloxBlock philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  PhiloxBlock ctr = {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), static_cast<uint32_t>(stream),
                     static_cast<uint32_t>(stream >> 32)};
  return philox4x32_10(ctr, {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
}

uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t i) { return philox_block(seed, stream, i / 4)[i % 4]; }

float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  return static_cast<float>(top24(philox_u32(seed, stream, i)) * 0x1p-24);
}

// z = sqrt(-2 ln u1) * (cos | sin)(2 pi u2) for the pair holding element i.
float philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  PhiloxBlock w = philox_block(seed, stream, i / 4);
  unsigned p = static_cast<unsigned>(i % 4);
  unsigned pair = p / 2;
  double u1 = (top24(w[2 * pair]) + 1.0) * 0x1p-24;
  double u2 = top24(w[2 * pair + 1]) * 0x1p-24;
  double radius = std::sqrt(-2.0 * std::log(u1));
  double angle = kTwoPi * u2;
  return static_cast<float>(radius * (p % 2 == 0 ? std::cos(angle) : std::sin(angle)));
}

// Both fills walk whole blocks (4 elements per Philox call) but give exactly the values
// of the per-element functions.
void philox_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float* out) {
  int64_t j = 0;
  while (j < n) {
    uint64_t i = offset + static_cast<uint64_t>(j);
    if (i % 4 != 0 || n - j < 4) {
      out[j++] = philox_normal(seed, stream, i);
      continue;
    }
    PhiloxBlock w = philox_block(seed, stream, i / 4);
    for (unsigned pair = 0; pair < 2; pair++) {
      double radius = std::sqrt(-2.0 * std::log((top24(w[2 * pair]) + 1.0) * 0x1p-24));
      double angle = kTwoPi * (top24(w[2 * pair + 1]) * 0x1p-24);
      out[j++] = static_cast<float>(radius * std::cos(angle));
      out[j++] = static_cast<float>(radius * std::sin(angle));
    }
  }
}

void philox_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float* out) {
  int64_t j = 0;
  while (j < n) {
    uint64_t i = offset + static_cast<uint64_t>(j);
    if (i % 4 != 0 || n - j < 4) {
      out[j++] = philox_uniform(seed, stream, i);
      continue;
    }
    PhiloxBlock w = philox_block(seed, stream, i / 4);
    for (int q = 0; q < 4; q++) out[j++] = static_cast<float>(top24(w[q]) * 0x1p-24);
  }
}

uint64_t stream_id(const std::string& purpose) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : purpose) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace lowrank
