// A Llama-family decoder's frozen weights, loaded from a Hugging Face model directory
// (config.json + model.safetensors, or shards listed by model.safetensors.index.json).
// Weights are held in fp32 whatever the file's dtype (f32, bf16, f16): the GEMMs run in
// fp32, as PyTorch does for an fp32 model, and bf16 inputs convert exactly.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace lowrank::train {

struct Linear {
  int64_t out = 0, in = 0;
  std::vector<float> w;  // [out, in] (nn.Linear.weight)
  std::vector<float> b;  // [out], empty without a bias
};

struct Layer {
  std::vector<float> input_norm;  // input_layernorm.weight [hidden]
  std::vector<float> post_norm;   // post_attention_layernorm.weight [hidden]
  Linear proj[kNumProj];
};

struct Model {
  ModelConfig cfg;
  std::string dir;
  std::vector<float> embed;    // [vocab, hidden]
  std::vector<float> norm;     // [hidden]
  std::vector<float> lm_head;  // [vocab, hidden]; empty when tied to embed
  std::vector<Layer> layers;

  const float* head() const { return cfg.tie_word_embeddings ? embed.data() : lm_head.data(); }
  /** Parameters counted once (tied embeddings once). */
  int64_t num_params() const;
};

/**
 * Loads `dir`. Errors: "not_found" (no config.json / weights), "invalid_config",
 * "invalid_file" naming the tensor that is missing, mis-shaped or of an unusable dtype,
 * or a shard the index names that is absent.
 */
std::shared_ptr<const Model> load_model(const std::string& dir);

}  // namespace lowrank::train
