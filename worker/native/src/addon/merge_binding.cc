// N-API binding of merge_adapters: arguments are copied on the JS thread, the merge runs
// on a libuv worker thread (Napi::AsyncWorker), and the promise settles with the merged
// factors or a JS Error carrying the core's `.code`.
#include <string>

#include "bindings.h"
#include "lowrank/merge.h"
#include "napi_convert.h"

namespace lowrank::addon {

namespace {

MergeInput get_input(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsObject()) type_error(env, what + " must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value mods = o.Get("modules");
  if (!mods.IsObject()) type_error(env, what + ".modules must be an object of modules by name");
  MergeInput in;
  Napi::Object m = mods.As<Napi::Object>();
  Napi::Array names = m.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).ToString().Utf8Value();
    in.modules.emplace(name, get_module(env, m.Get(name), what + ".modules['" + name + "']"));
  }
  in.use_rslora = o.Get("useRslora").ToBoolean();
  in.dora = o.Get("dora").ToBoolean();
  in.lora_bias = o.Get("loraBias").ToBoolean();
  return in;
}

MergeOptions get_options(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) type_error(env, "options must be an object");
  Napi::Object o = v.As<Napi::Object>();
  MergeOptions opts;
  opts.combination = parse_combination(o.Get("combination").ToString().Utf8Value());
  Napi::Value w = o.Get("weights");
  if (!w.IsArray()) type_error(env, "options.weights must be an array of numbers");
  Napi::Array wa = w.As<Napi::Array>();
  for (uint32_t i = 0; i < wa.Length(); i++) opts.weights.push_back(get_double(env, wa.Get(i), "options.weights[i]"));
  if (o.Has("density") && !o.Get("density").IsUndefined()) opts.density = get_double(env, o.Get("density"), "options.density");
  if (o.Has("majoritySignMethod") && !o.Get("majoritySignMethod").IsUndefined()) {
    std::string s = o.Get("majoritySignMethod").ToString().Utf8Value();
    if (s != "total" && s != "frequency") type_error(env, "options.majoritySignMethod must be 'total' or 'frequency'");
    opts.sign_method = s == "total" ? SignMethod::kTotal : SignMethod::kFrequency;
  }
  if (o.Has("svdRank") && !o.Get("svdRank").IsUndefined()) opts.svd_rank = get_int(env, o.Get("svdRank"), "options.svdRank");
  if (o.Has("svdClamp") && !o.Get("svdClamp").IsUndefined()) opts.svd_clamp = get_double(env, o.Get("svdClamp"), "options.svdClamp");
  if (o.Has("seed") && !o.Get("seed").IsUndefined()) opts.seed = get_u64(env, o.Get("seed"), "options.seed");
  if (o.Has("parityMode") && !o.Get("parityMode").IsUndefined()) {
    std::string p = o.Get("parityMode").ToString().Utf8Value();
    if (p != "intended" && p != "peft") type_error(env, "options.parityMode must be 'intended' or 'peft'");
    opts.parity = p == "peft" ? ParityMode::kPeft : ParityMode::kIntended;
  }
  if (o.Has("svdMethod") && !o.Get("svdMethod").IsUndefined()) {
    std::string m = o.Get("svdMethod").ToString().Utf8Value();
    if (m != "exact" && m != "randomized") type_error(env, "options.svdMethod must be 'exact' or 'randomized'");
    opts.randomized_svd = m == "randomized";
  }
  if (o.Has("dareMasks") && o.Get("dareMasks").IsObject()) {
    Napi::Object masks = o.Get("dareMasks").As<Napi::Object>();
    Napi::Array keys = masks.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string key = keys.Get(i).ToString().Utf8Value();
      Napi::Value mv = masks.Get(key);
      if (!mv.IsTypedArray() || mv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        type_error(env, "options.dareMasks['" + key + "'] must be a Uint8Array");
      }
      Napi::Uint8Array a = mv.As<Napi::Uint8Array>();
      opts.dare_masks[key] = std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
    }
  }
  return opts;
}

Napi::Object to_result(Napi::Env env, const MergeResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("combination", Napi::String::New(env, combination_name(r.combination)));
  o.Set("r", Napi::Number::New(env, static_cast<double>(r.r)));
  o.Set("loraAlpha", Napi::Number::New(env, r.lora_alpha));
  o.Set("useRslora", Napi::Boolean::New(env, r.use_rslora));
  Napi::Object mods = Napi::Object::New(env), infos = Napi::Object::New(env);
  for (const auto& [name, m] : r.modules) mods.Set(name, to_module(env, m));
  for (const auto& [name, info] : r.info) {
    Napi::Object i = Napi::Object::New(env);
    Napi::Array inputs = Napi::Array::New(env, info.inputs.size());
    for (size_t k = 0; k < info.inputs.size(); k++) inputs.Set(static_cast<uint32_t>(k), static_cast<double>(info.inputs[k]));
    i.Set("inputs", inputs);
    i.Set("rank", Napi::Number::New(env, static_cast<double>(info.rank)));
    i.Set("retainedEnergy", info.retained_energy == info.retained_energy ? Napi::Number::New(env, info.retained_energy)
                                                                          : env.Null());
    infos.Set(name, i);
  }
  o.Set("modules", mods);
  o.Set("info", infos);
  return o;
}

class MergeWorker : public Napi::AsyncWorker {
 public:
  MergeWorker(Napi::Env env, std::vector<MergeInput> inputs, MergeOptions opts)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), inputs_(std::move(inputs)),
        opts_(std::move(opts)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = merge_adapters(inputs_, opts_);
    } catch (const lowrank::Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "out_of_memory";
      SetError("out of memory in the native core");
    }
  }

  void OnOK() override { deferred_.Resolve(to_result(Env(), result_)); }

  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<MergeInput> inputs_;
  MergeOptions opts_;
  MergeResult result_;
  std::string code_ = "internal";
};

// mergeAdapters(inputs, options) -> Promise<result>.
Napi::Value MergeAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsArray()) type_error(env, "inputs must be an array");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<MergeInput> inputs;
    for (uint32_t i = 0; i < arr.Length(); i++) inputs.push_back(get_input(env, arr.Get(i), "inputs[" + std::to_string(i) + "]"));
    MergeOptions opts = get_options(env, info[1]);
    auto* worker = new MergeWorker(env, std::move(inputs), std::move(opts));
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

}  // namespace

void InitMerge(Napi::Env env, Napi::Object exports) {
  exports.Set("mergeAdapters", Napi::Function::New(env, MergeAdapters));
}

}  // namespace lowrank::addon
