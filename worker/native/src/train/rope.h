// Rotary position embeddings as transformers computes them (fp32 inverse frequencies,
// rotate_half on the two halves of each head), with 'linear' and 'llama3' scaling.
#pragma once
#include <cstdint>
#include <vector>

#include "config.h"

namespace lowrank::train {

/** cos/sin tables [positions, head_dim / 2] for positions [first, first + count). */
void rope_tables(const ModelConfig& cfg, int64_t first, int64_t count, std::vector<float>* cos, std::vector<float>* sin);

/**
 * Rotates n rows of `heads` heads each (row stride `ld` floats) in place; row i has
 * position pos[i] (an index into the tables). inverse = true applies the transpose (backward).
 */
void rope_apply(float* x, int64_t n, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* pos, const float* cos,
                const float* sin, bool inverse);

}  // namespace lowrank::train
