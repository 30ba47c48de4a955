// config.json -> ModelConfig with transformers' defaults and its rope_parameters (v5) or
// rope_theta/rope_scaling (v4) spellings.
#include "config.h"

#include <cmath>

#include "jvalue.h"
#include "lowrank/error.h"

namespace lowrank::train {

const char* proj_name(int p) {
  static const char* names[kNumProj] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return p >= 0 && p < kNumProj ? names[p] : "?";
}

std::string module_path(int64_t layer, int p) {
  return "model.layers." + std::to_string(layer) + (p <= kO ? ".self_attn." : ".mlp.") + proj_name(p);
}

int64_t ModelConfig::proj_out(int p) const {
  switch (p) {
    case kQ: return q_dim();
    case kK:
    case kV: return kv_dim();
    case kO:
    case kDown: return hidden_size;
    default: return intermediate_size;
  }
}

int64_t ModelConfig::proj_in(int p) const {
  switch (p) {
    case kO: return q_dim();
    case kDown: return intermediate_size;
    default: return hidden_size;
  }
}

namespace {

class Fields {
 public:
  Fields(const JValue& root, std::string label) : root_(root), label_(std::move(label)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error("invalid_config", label_ + ": \"" + field + "\" " + what);
  }

  const JValue* find(const JValue& obj, const std::string& key) const {
    const JValue* v = obj.get(key);
    return v && !v->is_null() ? v : nullptr;
  }

  double number(const JValue& obj, const std::string& key, const std::string& path, const double* fallback) const {
    const JValue* v = find(obj, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(path, "is missing");
    }
    if (v->type != JValue::Type::Number || !std::isfinite(v->number)) fail(path, "must be a number");
    return v->number;
  }

  int64_t positive_int(const std::string& key, const int64_t* fallback = nullptr) const {
    const JValue* v = find(root_, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(key, "is missing");
    }
    if (v->type != JValue::Type::Number || v->number < 1 || v->number > 1e12 || v->number != std::floor(v->number)) {
      fail(key, "must be a positive integer");
    }
    return static_cast<int64_t>(v->number);
  }

  bool boolean(const std::string& key, bool fallback) const {
    const JValue* v = find(root_, key);
    if (!v) return fallback;
    if (v->type != JValue::Type::Bool) fail(key, "must be true or false");
    return v->boolean;
  }

  std::string string(const std::string& key) const {
    const JValue* v = find(root_, key);
    if (!v) return "";
    if (v->type != JValue::Type::String) fail(key, "must be a string");
    return v->string;
  }

  const JValue& root() const { return root_; }

 private:
  const JValue& root_;
  std::string label_;
};

void parse_rope(const Fields& f, ModelConfig& c) {
  // transformers v5 writes rope_parameters {rope_type, rope_theta, ...}; v4 wrote rope_theta
  // beside rope_scaling {rope_type|type, factor, ...} (null for plain RoPE).
  const JValue* params = f.find(f.root(), "rope_parameters");
  const JValue* scaling = f.find(f.root(), "rope_scaling");
  const char* where = params ? "rope_parameters" : "rope_scaling";
  const JValue* p = params ? params : scaling;
  if (p && p->type != JValue::Type::Object) f.fail(where, "must be an object");
  double theta_default = 10000.0;
  double theta = f.number(f.root(), "rope_theta", "rope_theta", &theta_default);
  if (params) theta = f.number(*params, "rope_theta", "rope_parameters.rope_theta", &theta);
  if (!(theta > 1.0)) f.fail("rope_theta", "must be greater than 1");
  c.rope.theta = theta;
  if (!p) return;
  const JValue* type = f.find(*p, "rope_type");
  if (!type) type = f.find(*p, "type");
  if (type && type->type != JValue::Type::String) f.fail(std::string(where) + ".rope_type", "must be a string");
  c.rope.type = type ? type->string : "default";
  const std::string pre = std::string(where) + ".";
  if (c.rope.type == "default") return;
  if (c.rope.type != "linear" && c.rope.type != "llama3") {
    f.fail(pre + "rope_type", "is '" + c.rope.type + "'; this engine supports 'default', 'linear' and 'llama3'");
  }
  c.rope.factor = f.number(*p, "factor", pre + "factor", nullptr);
  if (!(c.rope.factor >= 1.0)) f.fail(pre + "factor", "must be >= 1");
  if (c.rope.type == "llama3") {
    c.rope.low_freq_factor = f.number(*p, "low_freq_factor", pre + "low_freq_factor", nullptr);
    c.rope.high_freq_factor = f.number(*p, "high_freq_factor", pre + "high_freq_factor", nullptr);
    c.rope.original_max_position_embeddings =
        f.number(*p, "original_max_position_embeddings", pre + "original_max_position_embeddings", nullptr);
    if (!(c.rope.high_freq_factor > c.rope.low_freq_factor && c.rope.low_freq_factor > 0)) {
      f.fail(pre + "high_freq_factor", "must be greater than low_freq_factor > 0");
    }
    if (!(c.rope.original_max_position_embeddings > 0)) f.fail(pre + "original_max_position_embeddings", "must be positive");
  }
}

}  // namespace

ModelConfig parse_config(const std::string& text, const std::string& label) {
  JValue root = parse_json(text, label);
  if (root.type != JValue::Type::Object) throw Error("invalid_config", label + ": the top level must be a JSON object");
  Fields f(root, label);
  ModelConfig c;
  c.model_type = f.string("model_type");
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    f.fail("model_type", "is '" + c.model_type + "'; this engine loads 'llama' (also SmolLM), 'mistral' and 'qwen2'");
  }
  std::string act = f.string("hidden_act");
  if (!act.empty() && act != "silu") f.fail("hidden_act", "is '" + act + "'; the SwiGLU MLP here needs 'silu'");
  c.vocab_size = f.positive_int("vocab_size");
  c.hidden_size = f.positive_int("hidden_size");
  c.intermediate_size = f.positive_int("intermediate_size");
  c.num_layers = f.positive_int("num_hidden_layers");
  c.num_heads = f.positive_int("num_attention_heads");
  c.num_kv_heads = f.positive_int("num_key_value_heads", &c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0) {
    f.fail("num_key_value_heads", "(" + std::to_string(c.num_kv_heads) + ") must divide num_attention_heads (" +
                                      std::to_string(c.num_heads) + ")");
  }
  if (c.hidden_size % c.num_heads != 0 && !f.find(root, "head_dim")) {
    f.fail("head_dim", "is missing and hidden_size is not a multiple of num_attention_heads");
  }
  int64_t hd = c.hidden_size / c.num_heads;
  c.head_dim = f.positive_int("head_dim", &hd);
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for rotary embeddings");
  int64_t max_pos = 2048;
  c.max_position_embeddings = f.positive_int("max_position_embeddings", &max_pos);
  double eps_default = 1e-6;
  c.rms_norm_eps = f.number(root, "rms_norm_eps", "rms_norm_eps", &eps_default);
  if (!(c.rms_norm_eps > 0)) f.fail("rms_norm_eps", "must be positive");
  parse_rope(f, c);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);

  if (c.model_type == "qwen2") {
    c.proj_bias[kQ] = c.proj_bias[kK] = c.proj_bias[kV] = true;
  } else if (c.model_type == "llama") {
    bool attn = f.boolean("attention_bias", false), mlp = f.boolean("mlp_bias", false);
    for (int p : {kQ, kK, kV, kO}) c.proj_bias[p] = attn;
    for (int p : {kGate, kUp, kDown}) c.proj_bias[p] = mlp;
  }

  // Sliding windows: Mistral applies sliding_window to every layer; Qwen2 only with
  // use_sliding_window, to layers >= max_window_layers; layer_types (v5) overrides both.
  c.window.assign(static_cast<size_t>(c.num_layers), 0);
  int64_t window = 0;
  if (const JValue* w = f.find(root, "sliding_window")) {
    if (w->type != JValue::Type::Number || w->number < 1 || w->number != std::floor(w->number)) {
      f.fail("sliding_window", "must be a positive integer or null");
    }
    window = static_cast<int64_t>(w->number);
  }
  if (c.model_type == "mistral") {
    c.window.assign(static_cast<size_t>(c.num_layers), window);
  } else if (c.model_type == "qwen2" && f.boolean("use_sliding_window", false)) {
    int64_t from = f.positive_int("max_window_layers", &c.num_layers);
    for (int64_t l = from; l < c.num_layers; l++) c.window[static_cast<size_t>(l)] = window;
  }
  if (const JValue* types = f.find(root, "layer_types")) {
    if (types->type != JValue::Type::Array || static_cast<int64_t>(types->items.size()) != c.num_layers) {
      f.fail("layer_types", "must be an array with one entry per layer");
    }
    for (size_t l = 0; l < types->items.size(); l++) {
      const JValue& t = types->items[l];
      if (t.type == JValue::Type::String && t.string == "full_attention") {
        c.window[l] = 0;
      } else if (t.type == JValue::Type::String && t.string == "sliding_attention") {
        if (window == 0) f.fail("sliding_window", "is needed by layer_types[" + std::to_string(l) + "] = sliding_attention");
        c.window[l] = window;
      } else {
        f.fail("layer_types", "entries must be 'full_attention' or 'sliding_attention'");
      }
    }
  }
  return c;
}

}  // namespace lowrank::train
