// LoRA-LEGO (METHODS §2.5): rank-wise clustering of minimal semantic units (b_j, a_j)
// pooled over the inputs, k-means++ from the job seed and Lloyd iterations, centroids
// assembled into a rank-k adapter. Deterministic for a given seed (Philox, fixed orders).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/adapter.h"

namespace lowrank {

struct LegoOptions {
  int64_t k = 0;                 // clusters = output rank (0: the largest input rank)
  bool cosine = true;            // cosine distance (default) or euclidean
  bool reweight_parameters = true;  // centroid rescaled to its members' mean norm
  bool reweight_output = true;      // γ = ‖Σ c_i B_i A_i‖_F / ‖B'A'‖_F, √γ on both factors
  int max_iterations = 100;
  uint64_t seed = 0;
  std::string module;  // names the Philox stream "kmeans:<module>" and errors
};

struct LegoResult {
  LoraModule module;                // rank k, scale 1
  std::vector<int64_t> assignment;  // cluster of each unit, units in input order
  std::vector<int64_t> sizes;       // members per cluster
  double gamma = 1.0;               // output reweighting factor (1 when off)
  int iterations = 0;
};

/** Merges the inputs' units (weights w_i folded as √|c| on b, sgn(c)√|c| on a, c = w_i s_i). */
LegoResult lego_merge(const std::vector<LoraModule>& inputs, const std::vector<double>& weights, const LegoOptions& opts);

}  // namespace lowrank
