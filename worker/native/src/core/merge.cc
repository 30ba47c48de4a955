// add_weighted_adapter over plain factors: validation, the per-module dispatch to the
// factor-space, cat and svd paths, and the merged config (METHODS §2.1–2.2).
#include "lowrank/merge.h"

#include <algorithm>
#include <cmath>

#include "lowrank/error.h"
#include "lowrank/merge_ops.h"
#include "lowrank/rng.h"

namespace lowrank {

namespace {

struct NamedCombination {
  const char* name;
  Combination value;
};

constexpr NamedCombination kCombinations[] = {
    {"linear", Combination::kLinear},
    {"cat", Combination::kCat},
    {"svd", Combination::kSvd},
    {"ties", Combination::kTies},
    {"ties_svd", Combination::kTiesSvd},
    {"dare_linear", Combination::kDareLinear},
    {"dare_ties", Combination::kDareTies},
    {"dare_linear_svd", Combination::kDareLinearSvd},
    {"dare_ties_svd", Combination::kDareTiesSvd},
    {"magnitude_prune", Combination::kMagnitudePrune},
    {"magnitude_prune_svd", Combination::kMagnitudePruneSvd},
};

// The stack operator a combination applies (to A and B stacks, or to full deltas).
enum class Op { kSum, kTies, kDareLinear, kDareTies, kMagnitude };

Op op_of(Combination c) {
  switch (c) {
    case Combination::kTies:
    case Combination::kTiesSvd: return Op::kTies;
    case Combination::kDareLinear:
    case Combination::kDareLinearSvd: return Op::kDareLinear;
    case Combination::kDareTies:
    case Combination::kDareTiesSvd: return Op::kDareTies;
    case Combination::kMagnitudePrune:
    case Combination::kMagnitudePruneSvd: return Op::kMagnitude;
    default: return Op::kSum;
  }
}

bool is_svd_type(Combination c) {
  return c == Combination::kSvd || c == Combination::kTiesSvd || c == Combination::kDareLinearSvd ||
         c == Combination::kDareTiesSvd || c == Combination::kMagnitudePruneSvd;
}

bool is_factor_space(Combination c) { return c != Combination::kCat && !is_svd_type(c); }

// One input's copy of a module, with that input's weight.
struct Part {
  int64_t input;
  const LoraModule* m;
  double w;
};

// What the stack operator needs to find or draw its DARE masks.
struct StackContext {
  const MergeOptions* opts;
  const std::string* module;
  const char* tensor;
};

// The explicit DARE mask of (module, tensor, input), checked against the tensor's n entries, or null.
const std::vector<uint8_t>* explicit_dare_mask(const StackContext& ctx, int64_t input, int64_t n) {
  auto it = ctx.opts->dare_masks.find(dare_mask_key(*ctx.module, ctx.tensor, input));
  if (it == ctx.opts->dare_masks.end()) return nullptr;
  if (static_cast<int64_t>(it->second.size()) != n) {
    throw Error("invalid_argument", "dare mask " + it->first + " has " + std::to_string(it->second.size()) +
                                        " entries, the tensor " + std::to_string(n));
  }
  return &it->second;
}

std::vector<uint8_t> dare_mask_for(const StackContext& ctx, int64_t input, int64_t n) {
  if (const std::vector<uint8_t>* mask = explicit_dare_mask(ctx, input, n)) return *mask;
  return dare_mask(ctx.opts->seed, dare_stream(*ctx.module, ctx.tensor, input), n, ctx.opts->density);
}

// N x [rows, cols] with weights λ -> [rows, cols].
Matrix combine(Op op, std::vector<Matrix> stack, const std::vector<int64_t>& inputs,
               const std::vector<float>& weights, const StackContext& ctx) {
  double d = ctx.opts->density;
  for (size_t i = 0; i < stack.size(); i++) {
    Matrix& t = stack[i];
    int64_t n = static_cast<int64_t>(t.data.size());
    if (op == Op::kMagnitude || op == Op::kTies) apply_mask(&t, magnitude_mask(t.ptr(), n, d));
    if ((op == Op::kDareLinear || op == Op::kDareTies) && d < 1.0) apply_dare(&t, dare_mask_for(ctx, inputs[i], n), d);
  }
  if (op == Op::kTies || op == Op::kDareTies) return ties_merge(stack, weights, ctx.opts->sign_method);
  return weighted_sum(stack, weights);
}

// PEFT's factor-space merge: A = op({A_i}, sgn(c)√|c|), B = op({B_i}, √|c|), c_i = w_i s_i.
LoraModule merge_factor_space(const std::string& name, const std::vector<Part>& parts, const MergeOptions& opts) {
  int64_t r = parts[0].m->r;
  for (const Part& p : parts) {
    if (p.m->r != r) {
      throw Error("undefined_merge", std::string("combination '") + combination_name(opts.combination) +
                                         "' needs equal ranks, but module " + name + " has rank " +
                                         std::to_string(r) + " in input " + std::to_string(parts[0].input) +
                                         " and " + std::to_string(p.m->r) + " in input " + std::to_string(p.input) +
                                         "; use cat or an *_svd combination");
    }
  }
  std::vector<Matrix> as, bs;
  std::vector<float> wa, wb;
  std::vector<int64_t> idx;
  for (const Part& p : parts) {
    double c = p.w * p.m->scale;
    double root = std::sqrt(std::fabs(c));
    wa.push_back(static_cast<float>(c >= 0 ? root : -root));
    wb.push_back(static_cast<float>(root));
    as.push_back(p.m->a);
    bs.push_back(p.m->b);
    idx.push_back(p.input);
  }
  Op op = op_of(opts.combination);
  LoraModule out;
  out.r = r;
  out.in = parts[0].m->in;
  out.out = parts[0].m->out;
  out.a = combine(op, std::move(as), idx, wa, StackContext{&opts, &name, "A"});
  out.b = combine(op, std::move(bs), idx, wb, StackContext{&opts, &name, "B"});
  return out;
}

// A = [c_1 A_1; ...] [Σr, in], B = [B_1 ... B_N] [out, Σr], zero-padded to `rank` rows/columns.
LoraModule merge_cat(const std::vector<Part>& parts, int64_t rank, bool fold_scale) {
  int64_t total = 0;
  for (const Part& p : parts) total += p.m->r;
  LoraModule out;
  out.r = std::max(rank, total);
  out.in = parts[0].m->in;
  out.out = parts[0].m->out;
  out.a = Matrix(out.r, out.in);
  out.b = Matrix(out.out, out.r);
  int64_t row = 0;
  for (const Part& p : parts) {
    float c = static_cast<float>(fold_scale ? p.w * p.m->scale : p.w);
    for (int64_t i = 0; i < p.m->r; i++)
      for (int64_t j = 0; j < out.in; j++) out.a.at(row + i, j) = p.m->a.at(i, j) * c;
    for (int64_t i = 0; i < out.out; i++)
      for (int64_t j = 0; j < p.m->r; j++) out.b.at(i, row + j) = p.m->b.at(i, j);
    row += p.m->r;
  }
  return out;
}

// PEFT's svd_clamp: hi = quantile(signed entries of [B; A], q); both factors clipped to [-hi, hi].
void clamp_factors(LoraModule* m, double q) {
  std::vector<float> dist(m->b.data);
  dist.insert(dist.end(), m->a.data.begin(), m->a.data.end());
  float hi = quantile(std::move(dist), q);
  auto clip = [hi](float& x) { x = std::min(std::max(x, -hi), hi); };
  for (float& x : m->b.data) clip(x);
  for (float& x : m->a.data) clip(x);
}

// The dense stage of merge_svd (deltas, pruning, combination and, when `svd` is not null,
// maybe the exact SVD) on the installed backend.
DenseMergeResult device_combine(const std::string& name, const std::vector<Part>& parts, const MergeOptions& opts, Matrix* mixed,
                    Svd* svd) {
  const DenseMergeProvider& provider = dense_merge_provider();
  if (!provider) return DenseMergeResult::kNotTaken;
  const Op op = op_of(opts.combination);
  DenseMergeRequest req;
  req.magnitude = op == Op::kMagnitude || op == Op::kTies;
  req.dare = op == Op::kDareLinear || op == Op::kDareTies;
  req.ties = op == Op::kTies || op == Op::kDareTies;
  req.density = opts.density;
  req.sign = opts.sign_method;
  req.seed = opts.seed;
  const int64_t n = parts[0].m->out * parts[0].m->in;
  req.keep = magnitude_keep(opts.density, n);
  const StackContext ctx{&opts, &name, "delta"};
  for (const Part& p : parts) {
    DenseMergeTerm t;
    t.module = p.m;
    t.weight = static_cast<float>(p.w);
    if (req.dare) {
      t.dare_stream = dare_stream(name, "delta", p.input);
      t.dare_mask = explicit_dare_mask(ctx, p.input, n);
    }
    req.terms.push_back(t);
  }
  return provider(req, mixed, svd);
}

// svd types: op on the deltas s_i B_i A_i with weights w_i, truncated SVD at rank k.
// Plain svd stays factored (cat, then the factored SVD); the others need dense deltas.
LoraModule merge_svd(const std::string& name, const std::vector<Part>& parts, int64_t k, const MergeOptions& opts,
                     double* retained) {
  Svd svd;
  double total = 0;  // ‖M‖_F² = Σσ² over all singular values
  if (opts.combination == Combination::kSvd) {
    LoraModule cat = merge_cat(parts, 0, /*fold_scale=*/true);
    svd = factored_svd(cat);
  } else {
    Matrix mixed;
    const DenseMergeResult on_device = device_combine(name, parts, opts, &mixed, opts.randomized_svd ? nullptr : &svd);
    if (on_device == DenseMergeResult::kNotTaken) {
      std::vector<Matrix> deltas;
      std::vector<float> w;
      std::vector<int64_t> idx;
      for (const Part& p : parts) {
        deltas.push_back(delta_weight(*p.m));
        w.push_back(static_cast<float>(p.w));
        idx.push_back(p.input);
      }
      mixed = combine(op_of(opts.combination), std::move(deltas), idx, w, StackContext{&opts, &name, "delta"});
    }
    if (on_device == DenseMergeResult::kSvd) {
      apply_sign_rule(&svd);
    } else if (opts.randomized_svd) {
      RandomizedSvdOptions ro;
      ro.rank = std::min<int64_t>(k, std::min(mixed.rows, mixed.cols));
      ro.seed = opts.seed;
      ro.stream = stream_id("rsvd:" + name);
      svd = randomized_svd(backend_dense_operator(mixed), ro);
      for (float x : mixed.data) total += static_cast<double>(x) * x;  // ‖M‖², since σ is truncated
    } else {
      svd = svd_thin_f64(mixed);
    }
  }
  int64_t kk = std::min<int64_t>(k, std::min(parts[0].m->out, parts[0].m->in));
  double kept = 0, all = 0;
  for (size_t i = 0; i < svd.s.size(); i++) {
    double e = static_cast<double>(svd.s[i]) * svd.s[i];
    all += e;
    if (static_cast<int64_t>(i) < kk) kept += e;
  }
  if (total == 0) total = all;
  *retained = total > 0 ? kept / total : 1.0;
  Split split = opts.parity == ParityMode::kPeft ? Split::kBHeavy : Split::kBalanced;
  LoraModule out = refactor(svd, kk, 1.0, split);
  if (!std::isnan(opts.svd_clamp)) clamp_factors(&out, opts.svd_clamp);
  return out;
}

void check_finite_module(const LoraModule& m, const std::string& what) {
  for (const Matrix* f : {&m.a, &m.b})
    for (float x : f->data)
      if (!std::isfinite(x)) throw Error("invalid_argument", what + ": the factors contain NaN or Inf");
}

int64_t max_rank(const MergeInput& in) {
  int64_t r = 0;
  for (const auto& [name, m] : in.modules) r = std::max(r, m.r);
  return r;
}

void validate(const std::vector<MergeInput>& inputs, const MergeOptions& opts, Combination c) {
  if (inputs.empty()) throw Error("invalid_argument", "merge: at least one input adapter is needed");
  if (opts.weights.size() != inputs.size()) {
    throw Error("invalid_argument", "merge: " + std::to_string(opts.weights.size()) + " weights for " +
                                        std::to_string(inputs.size()) + " inputs");
  }
  for (size_t i = 0; i < inputs.size(); i++) {
    std::string who = "input " + std::to_string(i);
    if (!std::isfinite(opts.weights[i])) throw Error("invalid_argument", "merge: the weight of " + who + " is not finite");
    if (inputs[i].dora) {
      throw Error("undefined_merge", "merge: " + who + " is a DoRA adapter; its magnitude vector does not combine "
                                     "linearly, so DoRA adapters cannot be merged");
    }
    if (inputs[i].lora_bias) {
      throw Error("undefined_merge", "merge: " + who + " has lora_bias; PEFT would drop the bias silently, so it is refused");
    }
    if (inputs[i].modules.empty()) throw Error("invalid_argument", "merge: " + who + " has no modules");
    for (const auto& [name, m] : inputs[i].modules) {
      check_module(m, who + " module " + name);
      check_finite_module(m, who + " module " + name);
    }
  }
  bool needs_density = op_of(c) != Op::kSum;
  if (needs_density) {
    if (std::isnan(opts.density)) {
      throw Error("invalid_argument", std::string("merge: combination '") + combination_name(c) + "' needs a density");
    }
    if (!(opts.density >= 0.0 && opts.density <= 1.0)) {
      throw Error("invalid_argument", "merge: density must be in [0, 1], got " + std::to_string(opts.density));
    }
    bool dare = op_of(c) == Op::kDareLinear || op_of(c) == Op::kDareTies;
    if (dare && opts.density <= 0.0) {
      throw Error("invalid_argument", "merge: DARE rescales by 1/density, so density must be > 0");
    }
  }
  if (opts.svd_rank < 0) throw Error("invalid_argument", "merge: svd_rank must be >= 0 (0: the largest input rank)");
  if (!std::isnan(opts.svd_clamp) && !(opts.svd_clamp >= 0.0 && opts.svd_clamp <= 1.0)) {
    throw Error("invalid_argument", "merge: svd_clamp is a quantile and must be in [0, 1]");
  }
}

}  // namespace

Combination parse_combination(const std::string& name) {
  for (const NamedCombination& nc : kCombinations)
    if (name == nc.name) return nc.value;
  throw Error("invalid_argument", "unknown combination type '" + name +
                                      "' (linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, "
                                      "dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd)");
}

const char* combination_name(Combination c) {
  for (const NamedCombination& nc : kCombinations)
    if (c == nc.value) return nc.name;
  return "?";
}

std::string dare_mask_key(const std::string& module, const std::string& tensor, int64_t input) {
  return module + "|" + tensor + "|" + std::to_string(input);
}

MergeResult merge_adapters(const std::vector<MergeInput>& inputs, const MergeOptions& given) {
  MergeOptions opts = given;
  if (inputs.size() == 1) opts.combination = Combination::kLinear;  // as PEFT: one input is always linear
  Combination c = opts.combination;
  validate(inputs, opts, c);

  std::map<std::string, std::vector<Part>> modules;
  for (size_t i = 0; i < inputs.size(); i++)
    for (const auto& [name, m] : inputs[i].modules)
      modules[name].push_back(Part{static_cast<int64_t>(i), &m, opts.weights[i]});

  // PEFT's config rank: common r (linear family), Σ max r_i (cat), svd_rank or max r_i (svd).
  int64_t sum_rank = 0, top_rank = 0;
  for (const MergeInput& in : inputs) {
    sum_rank += max_rank(in);
    top_rank = std::max(top_rank, max_rank(in));
  }
  int64_t svd_k = opts.svd_rank > 0 ? opts.svd_rank : top_rank;
  bool peft = opts.parity == ParityMode::kPeft;

  MergeResult res;
  res.combination = c;
  for (const auto& [name, parts] : modules) {
    const LoraModule& first = *parts[0].m;
    for (const Part& p : parts) {
      if (p.m->in != first.in || p.m->out != first.out) {
        throw Error("invalid_argument", "merge: module " + name + " is [" + std::to_string(first.out) + ", " +
                                            std::to_string(first.in) + "] in input " + std::to_string(parts[0].input) +
                                            " but [" + std::to_string(p.m->out) + ", " + std::to_string(p.m->in) +
                                            "] in input " + std::to_string(p.input) + "; the bases differ");
      }
    }
    ModuleMergeInfo info;
    for (const Part& p : parts) info.inputs.push_back(p.input);
    LoraModule out;
    if (is_factor_space(c)) {
      out = merge_factor_space(name, parts, opts);
    } else if (c == Combination::kCat) {
      out = merge_cat(parts, peft ? sum_rank : 0, /*fold_scale=*/true);
    } else {
      out = merge_svd(name, parts, svd_k, opts, &info.retained_energy);
    }
    out.scale = 1.0;
    info.rank = out.r;
    res.r = std::max(res.r, out.r);
    res.modules.emplace(name, std::move(out));
    res.info.emplace(name, std::move(info));
  }

  if (peft) {
    // PEFT writes r = lora_alpha = new_rank and keeps the first input's use_rslora, so
    // the merged adapter runs at α/√r = √r instead of 1 (METHODS §2.2 defect 1).
    int64_t cfg = is_factor_space(c) ? res.r : c == Combination::kCat ? sum_rank : svd_k;
    res.r = cfg;
    res.lora_alpha = static_cast<double>(cfg);
    res.use_rslora = inputs[0].use_rslora;
    double s = res.use_rslora ? static_cast<double>(cfg) / std::sqrt(static_cast<double>(cfg)) : 1.0;
    for (auto& [name, m] : res.modules) m.scale = s;
  } else {
    res.lora_alpha = static_cast<double>(res.r);  // and alpha_pattern = rank_pattern: s = 1 everywhere
    res.use_rslora = false;
  }
  return res;
}

}  // namespace lowrank
