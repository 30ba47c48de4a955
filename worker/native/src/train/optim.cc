// AdamW, gradient clipping and schedules (see optim.h).
#include "optim.h"

#include <cmath>

#include "lowrank/error.h"

namespace lowrank::train {

void check_optim(const OptimConfig& o) {
  auto bad = [](const std::string& f, const std::string& w) { throw Error("invalid_argument", "optimizer." + f + " " + w); };
  if (!(o.lr >= 0 && std::isfinite(o.lr))) bad("lr", "must be a finite number >= 0");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("beta1", "must be in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("beta2", "must be in [0, 1)");
  if (!(o.eps > 0)) bad("eps", "must be positive");
  if (!(o.weight_decay >= 0 && std::isfinite(o.weight_decay))) bad("weightDecay", "must be a finite number >= 0");
  if (!std::isfinite(o.max_grad_norm)) bad("maxGradNorm", "must be finite");
  if (o.schedule != "constant" && o.schedule != "linear" && o.schedule != "cosine") {
    bad("schedule", "must be 'constant', 'linear' or 'cosine'");
  }
  if (o.warmup_steps < 0) bad("warmupSteps", "must be >= 0");
  if (o.schedule != "constant" && o.total_steps < 1) bad("totalSteps", "must be >= 1 for the " + o.schedule + " schedule");
}

double lr_lambda(const OptimConfig& o, int64_t step) {
  const auto s = static_cast<double>(step), w = static_cast<double>(o.warmup_steps);
  if (step < o.warmup_steps) return s / std::max(1.0, w);
  if (o.schedule == "constant") return 1.0;
  const double rest = std::max(1.0, static_cast<double>(o.total_steps - o.warmup_steps));
  if (o.schedule == "linear") return std::max(0.0, static_cast<double>(o.total_steps - step) / rest);
  const double progress = (s - w) / rest;  // cosine, num_cycles = 0.5
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

namespace {

// torch _single_tensor_adamw, fp32: p *= 1 − lr·wd; m.lerp_(g, 1 − β1);
// v = v·β2 + (1 − β2)·g²; p −= (lr / bc1) · m / (√v / √bc2 + eps).
void adamw(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v, double lr,
           const OptimConfig& o, int64_t t) {
  const auto decay = static_cast<float>(1.0 - lr * o.weight_decay);
  const auto w1 = static_cast<float>(1.0 - o.beta1);
  const auto b2 = static_cast<float>(o.beta2), w2 = static_cast<float>(1.0 - o.beta2);
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(t));
  const auto step_size = static_cast<float>(lr / bc1);
  const auto bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const auto eps = static_cast<float>(o.eps);
  const size_t n = p.size();
  for (size_t i = 0; i < n; i++) {
    p[i] *= decay;
    // torch lerp with weight < 0.5: self + weight·(end − self)
    m[i] = w1 < 0.5f ? m[i] + w1 * (g[i] - m[i]) : g[i] - (g[i] - m[i]) * (1.0f - w1);
    v[i] = v[i] * b2 + w2 * g[i] * g[i];  // addcmul: self + value·t1·t2
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] = p[i] + -step_size * m[i] / denom;  // addcdiv: self + value·t1 / t2
  }
}

}  // namespace

StepResult train_step(Engine& engine, const OptimConfig& o, int64_t* step, const std::vector<Batch>& micro) {
  check_optim(o);
  if (micro.empty()) throw Error("invalid_argument", "a training step needs at least one micro-batch");
  if (engine.num_trainable() == 0) throw Error("invalid_argument", "the engine has no adapter to train");
  int64_t total = 0;
  for (const Batch& b : micro) {
    if (!b.labels) throw Error("invalid_argument", "every micro-batch of a training step needs labels");
    for (int64_t r = 0; r < b.rows; r++)
      for (int64_t t = 0; t + 1 < b.seq; t++) total += predicts(b, r, t);
  }
  if (total == 0) throw Error("invalid_argument", "the step's micro-batches have no labelled token (all labels are -100)");
  StepResult res;
  res.tokens = total;
  engine.zero_grad();
  double loss_sum = 0;
  for (size_t k = 0; k < micro.size(); k++) {
    // Dropout masks of (step, micro-batch), also for a backward that recomputes activations.
    engine.set_training(true, *step, static_cast<int64_t>(k));
    try {
      LossSum l = engine.forward(micro[k]);
      loss_sum += l.sum;
      engine.backward(static_cast<float>(1.0 / static_cast<double>(total)));
    } catch (...) {
      engine.set_training(false);
      throw;
    }
    engine.set_training(false);
  }
  res.loss = loss_sum / static_cast<double>(total);

  const ModelConfig& c = engine.model().cfg;
  // clip_grad_norm_: the norm of the per-tensor norms (fixed order: layer, projection, A, B).
  double sq = 0;
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < kNumProj; p++) {
      const LoraSlot& s = engine.slot(l, p);
      for (const auto* g : {&s.ga, &s.gb, &s.gm, &s.grc}) {
        if (g->empty()) continue;
        double t = 0;
        for (float x : *g) t += static_cast<double>(x) * x;
        const auto tn = static_cast<float>(std::sqrt(t));
        sq += static_cast<double>(tn) * tn;
      }
    }
  res.grad_norm = std::sqrt(sq);
  if (o.max_grad_norm > 0) {
    const double coef = std::min(1.0, o.max_grad_norm / (static_cast<double>(static_cast<float>(res.grad_norm)) + 1e-6));
    const auto cf = static_cast<float>(coef);
    for (int64_t l = 0; l < c.num_layers; l++)
      for (int p = 0; p < kNumProj; p++) {
        LoraSlot& s = engine.slot(l, p);
        for (auto* g : {&s.ga, &s.gb, &s.gm, &s.grc})
          for (float& x : *g) x *= cf;
      }
  }
  res.lr = o.lr * lr_lambda(o, *step);
  const int64_t t = ++*step;
  for (int64_t l = 0; l < c.num_layers; l++)
    for (int p = 0; p < kNumProj; p++) {
      LoraSlot& s = engine.slot(l, p);
      if (s.r == 0) continue;
      if (s.core) {  // LoRA-SB: only R trains
        adamw(s.rc, s.grc, s.mrc, s.vrc, res.lr, o, t);
        continue;
      }
      adamw(s.a, s.ga, s.ma, s.va, res.lr, o, t);
      adamw(s.b, s.gb, s.mb, s.vb, res.lr, o, t);
      if (s.dora) adamw(s.m, s.gm, s.mm, s.vm, res.lr, o, t);
    }
  return res;
}

}  // namespace lowrank::train
