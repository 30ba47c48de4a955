// ICM-LoRA generator (METHODS §4.2): a conditional VAE over flattened, z-normalised
// adapter parameters, as a GEMM-only MLP (the "acceptable first implementation"):
//   encoder  a1 = x W1ᵀ + b1, h1 = LeakyReLU_0.01(a1), [μ | log σ²] = [h1; c] W2ᵀ + b2
//   sample   z = μ + exp(½ log σ²) ⊙ ε
//   decoder  a3 = [z; c] W3ᵀ + b3, h2 = ELU(a3), x̂ = h2 W4ᵀ + b4
//   loss     MSE(x̂, x) (mean over all elements) + β · mean_batch Σ_j −½(1 + log σ² − μ² − σ²)
// Row-major f32, every product through cblas_sgemm: deterministic for a thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace lowrank::generate {

struct CvaeDims {
  int64_t input = 0;   // D' (padded flattened adapter length)
  int64_t cond = 0;    // C (condition embedding size)
  int64_t hidden = 0;  // H
  int64_t latent = 0;  // L
};

/** The parameters, in the order of kCvaeParamNames; PyTorch Linear layout (out x in). */
struct CvaeParams {
  std::vector<float> w1, b1, w2, b2, w3, b3, w4, b4;
  std::vector<float>* at(int i);
};

inline constexpr const char* kCvaeParamNames[8] = {"enc.w1", "enc.b1", "enc.w2", "enc.b2",
                                                   "dec.w3", "dec.b3", "dec.w4", "dec.b4"};

/** Expected element count of parameter i. */
int64_t cvae_param_size(const CvaeDims& d, int i);

/** PyTorch's Linear init: U(−1/√fan_in, 1/√fan_in) for weight and bias, from Philox(seed). */
CvaeParams cvae_init(const CvaeDims& d, uint64_t seed);

struct CvaeLoss {
  double mse = 0;
  double kl = 0;  // mean over the batch of the per-sample KL (before β)
  double total = 0;
};

/**
 * One forward and backward pass on a batch of n rows: x (n x D), c (n x C), eps (n x L).
 * Gradients of the total loss are written to grads (same shapes as params).
 */
CvaeLoss cvae_forward_backward(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* x, const float* c,
                               const float* eps, double beta, CvaeParams* grads);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

struct AdamWState {
  CvaeParams m, v;
  int64_t step = 0;  // completed steps
};

/** torch.optim.AdamW's update (decoupled decay, bias-corrected moments) with rate lr. */
void adamw_update(CvaeParams* p, const CvaeParams& g, AdamWState* s, const AdamWOptions& o, double lr);

/**
 * `steps` full-batch steps from s->step on, cosine schedule from o.lr to 0 over
 * total_steps; ε of step t is Philox(seed, stream "cvae:eps", offset t·n·L).
 * Returns the loss of each step.
 */
std::vector<CvaeLoss> cvae_train(const CvaeDims& d, CvaeParams* p, AdamWState* s, int64_t n, const float* x,
                                 const float* c, double beta, const AdamWOptions& o, int64_t total_steps,
                                 int64_t steps, uint64_t seed);

/** Encoder means and log-variances for n rows (n x L each). */
void cvae_encode(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* x, const float* c, float* mu,
                 float* logvar);

/** Decoder output x̂ (n x D) for latents z (n x L) and conditions c (n x C). */
void cvae_decode(const CvaeDims& d, const CvaeParams& p, int64_t n, const float* z, const float* c, float* out);

}  // namespace lowrank::generate
