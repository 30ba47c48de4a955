// Hugging Face model directory -> Model (see model.h).
#include "model.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "jvalue.h"
#include "lowrank/error.h"
#include "lowrank/safetensors.h"

namespace lowrank::train {

int64_t Model::num_params() const {
  int64_t n = static_cast<int64_t>(embed.size() + norm.size() + lm_head.size());
  for (const Layer& l : layers) {
    n += static_cast<int64_t>(l.input_norm.size() + l.post_norm.size());
    for (const Linear& p : l.proj) n += static_cast<int64_t>(p.w.size() + p.b.size());
  }
  return n;
}

namespace {

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("not_found", path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string shape_text(const std::vector<uint64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); i++) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

/** Every tensor of the directory by name, with the (shared) file it lives in. */
class WeightIndex {
 public:
  explicit WeightIndex(const std::string& dir) : dir_(dir) {
    const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
    if (exists(index)) {
      JValue root = parse_json(read_text(index), index);
      const JValue* map = root.get("weight_map");
      if (!map || map->type != JValue::Type::Object) {
        throw Error("invalid_file", index + ": \"weight_map\" must be an object of tensor name -> shard file");
      }
      for (const auto& [name, file] : map->members) {
        if (file.type != JValue::Type::String || file.string.find('/') != std::string::npos || file.string.empty()) {
          throw Error("invalid_file", index + ": weight_map[\"" + name + "\"] must be a file name in the directory");
        }
        shard_of_[name] = file.string;
      }
    } else if (exists(single)) {
      open_shard("model.safetensors");
      for (const TensorInfo& t : files_.at("model.safetensors").header().tensors) shard_of_[t.name] = "model.safetensors";
    } else {
      throw Error("not_found", dir + ": neither model.safetensors nor model.safetensors.index.json is present");
    }
  }

  bool has(const std::string& name) const { return shard_of_.count(name) != 0; }

  /** The tensor as fp32, checked against `shape`. */
  std::vector<float> load(const std::string& name, const std::vector<uint64_t>& shape) {
    auto it = shard_of_.find(name);
    if (it == shard_of_.end()) throw Error("invalid_file", dir_ + ": tensor \"" + name + "\" is missing");
    const safetensors::File& f = open_shard(it->second);
    const TensorInfo* info = nullptr;
    for (const TensorInfo& t : f.header().tensors)
      if (t.name == name) info = &t;
    if (!info) throw Error("invalid_file", dir_ + "/" + it->second + ": tensor \"" + name + "\" is missing (the index lists it here)");
    if (info->shape != shape) {
      throw Error("invalid_file", dir_ + ": tensor \"" + name + "\" has shape " + shape_text(info->shape) + ", expected " +
                                      shape_text(shape) + " from config.json");
    }
    if (info->dtype != DType::F32 && info->dtype != DType::BF16 && info->dtype != DType::F16) {
      throw Error("invalid_file", dir_ + ": tensor \"" + name + "\" has dtype " + std::string(dtype_name(info->dtype)) +
                                      "; weights must be F32, BF16 or F16");
    }
    std::vector<float> out(static_cast<size_t>(*checked_numel(shape)));
    to_float32(info->dtype, f.data(*info), out.data(), out.size());
    used_.insert(name);
    return out;
  }

 private:
  const safetensors::File& open_shard(const std::string& file) {
    auto it = files_.find(file);
    if (it != files_.end()) return it->second;
    const std::string path = dir_ + "/" + file;
    if (!exists(path)) throw Error("not_found", path + ": shard named by model.safetensors.index.json is missing");
    return files_.emplace(file, safetensors::File::open(path)).first->second;
  }

  std::string dir_;
  std::map<std::string, std::string> shard_of_;
  std::map<std::string, safetensors::File> files_;
  std::set<std::string> used_;
};

}  // namespace

std::shared_ptr<const Model> load_model(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  if (!exists(cfg_path)) throw Error("not_found", dir + ": config.json is missing (expected a Hugging Face model directory)");
  auto m = std::make_shared<Model>();
  m->dir = dir;
  m->cfg = parse_config(read_text(cfg_path), cfg_path);
  const ModelConfig& c = m->cfg;
  WeightIndex w(dir);
  const auto V = static_cast<uint64_t>(c.vocab_size), H = static_cast<uint64_t>(c.hidden_size);
  m->embed = w.load("model.embed_tokens.weight", {V, H});
  m->norm = w.load("model.norm.weight", {H});
  if (!c.tie_word_embeddings) m->lm_head = w.load("lm_head.weight", {V, H});
  m->layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; l++) {
    Layer& layer = m->layers[static_cast<size_t>(l)];
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    layer.input_norm = w.load(pre + "input_layernorm.weight", {H});
    layer.post_norm = w.load(pre + "post_attention_layernorm.weight", {H});
    for (int p = 0; p < kNumProj; p++) {
      Linear& lin = layer.proj[p];
      lin.out = c.proj_out(p);
      lin.in = c.proj_in(p);
      const std::string path = module_path(l, p);
      lin.w = w.load(path + ".weight", {static_cast<uint64_t>(lin.out), static_cast<uint64_t>(lin.in)});
      if (c.proj_bias[p]) lin.b = w.load(path + ".bias", {static_cast<uint64_t>(lin.out)});
    }
  }
  return m;
}

}  // namespace lowrank::train
