// The Llama-family decoder description read from a Hugging Face config.json: Llama,
// Mistral, Qwen2 and SmolLM share one shape (RMSNorm, RoPE, grouped-query attention,
// SwiGLU MLP) and differ only in biases, tied embeddings, RoPE scaling and sliding windows.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowrank::train {

/** The seven projections an adapter may target, in PEFT's module names. */
enum Proj : int { kQ, kK, kV, kO, kGate, kUp, kDown, kNumProj };

/** "q_proj", ..., "down_proj". */
const char* proj_name(int p);
/** The module path transformers and PEFT use: model.layers.<i>.self_attn.q_proj, ...mlp.down_proj. */
std::string module_path(int64_t layer, int p);

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

struct ModelConfig {
  std::string model_type;  // llama | mistral | qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool proj_bias[kNumProj] = {};  // which projections carry a bias (Llama attention_bias/mlp_bias, Qwen2 q/k/v)
  bool tie_word_embeddings = false;
  /** Per layer: 0 for full causal attention, else the sliding window (keys i - j < window). */
  std::vector<int64_t> window;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  /** [out, in] of a projection's weight. */
  int64_t proj_out(int p) const;
  int64_t proj_in(int p) const;
};

/**
 * Parses and validates config.json text. Throws lowrank::Error("invalid_config") naming the
 * field and what to fix (unknown architecture, missing or non-positive sizes, heads that do
 * not divide, unsupported rope_scaling or activation).
 */
ModelConfig parse_config(const std::string& text, const std::string& label);

}  // namespace lowrank::train
