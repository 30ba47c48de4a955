// The dense deltas of merges on the device. PEFT's svd-type merges (METHODS §2.2; core merge.cc's
// combine(), merge_ops.cc's operators): each input's ΔW_i = s_i B_i A_i made by a GEMM from
// its factors, pruned in place (magnitude: exactly k entries kept; DARE: Philox keep mask,
// rescaled by 1/d), combined (weighted sum or TIES election), and the result's exact SVD
// taken on the device (svd.cu) with no round trip of the [out, in] matrices. Elementwise
// steps use the CPU's fp32 operations in its order (no FMA) and the masks are integer
// exact, so only the GEMM's summation order separates the two backends. mergekit's delta
// merges (merge_delta.cc merge_deltas) use the same stack on uploaded dense deltas: the top-k
// trim, DARE with the L1 rescale (Σ|t| in double: fixed per-chunk trees, chunks in order),
// the weighted TIES election or sum, normalisation and λ.
//
// Magnitude pruning keeps the k largest |t| and, among entries equal to the k-th largest,
// the lowest indices (merge_ops.cc magnitude_mask): the k-th largest is found by an MSB-first
// radix select over the bits of |t| (non-negative floats order as their bits), four 8-bit
// digit histograms with integer atomics (exact counts); ties at the threshold are ranked in
// index order by a per-chunk count and its prefix sum.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda_ops.h"
#include "gemm.cuh"
#include "philox.cuh"
#include "solver.cuh"

using namespace lowrank::cuda;

namespace {

constexpr int kThreads = 256;
constexpr int kItems = 16;  // contiguous entries per thread in the ordered tie pass
constexpr int64_t kChunk = int64_t{kThreads} * kItems;

__device__ inline uint32_t abs_key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u & 0x7fffffffu;  // |v|'s bits: monotone in |v| for finite v, +0 for ±0
}

__device__ inline float sign_of(float v) { return static_cast<float>((v > 0.0f) - (v < 0.0f)); }

// hist[256] += counts of digit (key >> shift) & 255 over entries whose key matches prefix under mask.
__global__ void digit_hist_kernel(const float* t, int64_t n, uint32_t prefix, uint32_t mask, int shift,
                                  unsigned long long* hist) {
  __shared__ unsigned int local[256];
  for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride) {
    const uint32_t key = abs_key(t[j]);
    if ((key & mask) == prefix) atomicAdd(&local[(key >> shift) & 255u], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < 256; b += blockDim.x)
    if (local[b]) atomicAdd(&hist[b], static_cast<unsigned long long>(local[b]));
}

// Keeps key > thr, and key == thr too when all_ties; zeroes the rest.
__global__ void keep_above_kernel(float* t, int64_t n, uint32_t thr, int all_ties) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const uint32_t key = abs_key(t[j]);
  if (key < thr || (key == thr && !all_ties)) t[j] = 0.0f;
}

// The first of the kItems contiguous entries this thread holds in the ordered tie passes.
__device__ inline int64_t thread_base() {
  return static_cast<int64_t>(blockIdx.x) * kChunk + static_cast<int64_t>(threadIdx.x) * kItems;
}

// Entries equal to thr among this thread's kItems from base.
__device__ inline int64_t ties_from(const float* t, int64_t n, int64_t base, uint32_t thr) {
  int64_t c = 0;
  for (int64_t j = base; j < base + kItems && j < n; j++) c += abs_key(t[j]) == thr;
  return c;
}

// counts[c] = entries equal to thr in chunk c (kChunk entries, thread i holding kItems contiguous ones).
__global__ void tie_count_kernel(const float* t, int64_t n, uint32_t thr, int64_t* counts) {
  __shared__ int64_t per_thread[kThreads];
  const int64_t base = thread_base();
  per_thread[threadIdx.x] = ties_from(t, n, base, thr);
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (int i = 0; i < kThreads; i++) total += per_thread[i];
    counts[blockIdx.x] = total;
  }
}

// Keeps key > thr and the ties of global rank < keep (offsets[c]: ties before chunk c); zeroes the rest.
__global__ void keep_ties_kernel(float* t, int64_t n, uint32_t thr, int64_t keep, const int64_t* offsets) {
  __shared__ int64_t per_thread[kThreads];
  const int64_t base = thread_base();
  per_thread[threadIdx.x] = ties_from(t, n, base, thr);
  __syncthreads();
  if (threadIdx.x == 0) {  // exclusive prefix over the block's threads, in thread (= index) order
    int64_t run = offsets[blockIdx.x];
    for (int i = 0; i < kThreads; i++) {
      const int64_t here = per_thread[i];
      per_thread[i] = run;
      run += here;
    }
  }
  __syncthreads();
  int64_t rank = per_thread[threadIdx.x];
  for (int64_t j = base; j < base + kItems && j < n; j++) {
    const uint32_t key = abs_key(t[j]);
    if (key > thr) continue;
    if (key == thr && rank++ < keep) continue;
    t[j] = 0.0f;
  }
}

// PEFT's apply_dare: t = keep ? t / d : 0, keep = mask[j] or Philox u_j < density (double compare).
__global__ void dare_kernel(float* t, int64_t n, const uint8_t* mask, uint64_t seed, uint64_t stream, double density,
                            float d) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const bool keep = mask ? mask[j] != 0 : static_cast<double>(philox_uniform(seed, stream, static_cast<uint64_t>(j))) < density;
  t[j] = keep ? __fdiv_rn(t[j], d) : 0.0f;
}

// out = Σ_i t_i w_i (weighted_sum), or TIES (ties_merge): the elected sign's entries, weighted, over their count.
__global__ void combine_kernel(const float* stack, int64_t count, int64_t n, const float* w, int ties, int sign_total,
                               float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  if (!ties) {
    float acc = 0.0f;
    for (int64_t i = 0; i < count; i++) acc = __fadd_rn(acc, __fmul_rn(stack[i * n + j], w[i]));
    out[j] = acc;
    return;
  }
  float elect = 0.0f;
  for (int64_t i = 0; i < count; i++) {
    const float v = stack[i * n + j];
    elect = __fadd_rn(elect, sign_total ? v : sign_of(v));
  }
  const float majority = elect >= 0.0f ? 1.0f : -1.0f;
  float sum = 0.0f, num = 0.0f;
  for (int64_t i = 0; i < count; i++) {
    const float v = stack[i * n + j];
    if (sign_of(v) != majority) continue;
    sum = __fadd_rn(sum, __fmul_rn(v, w[i]));
    num = __fadd_rn(num, 1.0f);
  }
  out[j] = __fdiv_rn(sum, num > 1.0f ? num : 1.0f);
}

// mergekit's DARE (masked_l1_rescale's first half): partial[b] = (Σ|t|, Σ|t ⊙ keep|) in double
// over block b's chunk (a fixed tree), and t ⊙ keep in place.
__global__ void dare_l1_kernel(float* t, int64_t n, const uint8_t* mask, uint64_t seed, uint64_t stream, double density,
                               double* partial) {
  __shared__ double before[kThreads], after[kThreads];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kChunk;
  double b = 0, a = 0;
  for (int64_t j = base + threadIdx.x; j < base + kChunk && j < n; j += kThreads) {
    const bool keep = mask ? mask[j] != 0 : static_cast<double>(philox_uniform(seed, stream, static_cast<uint64_t>(j))) < density;
    b += fabs(static_cast<double>(t[j]));
    if (!keep) t[j] = 0.0f;
    a += fabs(static_cast<double>(t[j]));
  }
  before[threadIdx.x] = b;
  after[threadIdx.x] = a;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) {
      before[threadIdx.x] += before[threadIdx.x + s];
      after[threadIdx.x] += after[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = before[0];
    partial[2 * blockIdx.x + 1] = after[0];
  }
}

__global__ void scale_kernel(float* t, int64_t n, float c) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < n) t[j] = __fmul_rn(t[j], c);
}

// merge_delta.cc's mix: v_i = t_i w_i; TIES: the elected sign's v summed, over the agreeing
// weights' sum (1 when none); else Σ v over Σ w; then normalize (÷) and λ (×) as asked.
__global__ void mix_kernel(const float* stack, int64_t count, int64_t n, const float* w, int ties, int sign_total,
                           int normalize, float weight_sum, int use_lambda, float lambda, float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float sum = 0.0f, divisor = 0.0f;
  if (ties) {
    float elect = 0.0f;
    for (int64_t i = 0; i < count; i++) {
      const float v = __fmul_rn(stack[i * n + j], w[i]);
      elect = __fadd_rn(elect, sign_total ? v : sign_of(v));
    }
    const float majority = elect >= 0.0f ? 1.0f : -1.0f;
    for (int64_t i = 0; i < count; i++) {
      const float v = __fmul_rn(stack[i * n + j], w[i]);
      if (sign_of(v) != majority) continue;
      sum = __fadd_rn(sum, v);
      divisor = __fadd_rn(divisor, w[i]);
    }
    if (divisor == 0.0f) divisor = 1.0f;
  } else {
    for (int64_t i = 0; i < count; i++) sum = __fadd_rn(sum, __fmul_rn(stack[i * n + j], w[i]));
    divisor = weight_sum;
  }
  if (normalize) sum = __fdiv_rn(sum, divisor);
  if (use_lambda) sum = __fmul_rn(sum, lambda);
  out[j] = sum;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

struct lrk_cuda_stack {
  int64_t count = 0, rows = 0, cols = 0;
  DeviceBuffer stack, result, factors, weights, mask, hist, chunks;
  bool combined = false;
  int64_t size() const { return rows * cols; }
  float* term(int64_t i) const { return stack.as<float>() + i * size(); }
};

namespace {

lrk_status check_term(const lrk_cuda_stack* st, int64_t i, const char* what) {
  if (!st || i < 0 || i >= st->count)
    return fail(LRK_INVALID_ARGUMENT, std::string(what) + ": a stack and an input index in [0, count)");
  return LRK_OK;
}

// The request's explicit DARE mask on the device (*out stays null without one: Philox draws it).
lrk_status device_mask(lrk_cuda_stack* st, const uint8_t* mask, const uint8_t** out) {
  *out = nullptr;
  if (!mask) return LRK_OK;
  const size_t n = static_cast<size_t>(st->size());
  if (lrk_status s = st->mask.reserve(n)) return s;
  LRK_CUDA_TRY(cudaMemcpy(st->mask.as<uint8_t>(), mask, n, cudaMemcpyHostToDevice));
  *out = st->mask.as<uint8_t>();
  return LRK_OK;
}

// Before a combination kernel: the result buffer and the weights on the device.
lrk_status prepare_result(lrk_cuda_stack* st, const float* weights) {
  if (lrk_status s = st->result.reserve(f32_bytes(st->size()))) return s;
  if (lrk_status s = st->weights.reserve(f32_bytes(st->count))) return s;
  LRK_CUDA_TRY(cudaMemcpy(st->weights.as<float>(), weights, f32_bytes(st->count), cudaMemcpyHostToDevice));
  return LRK_OK;
}

// After it: the result is combined, and copied to `out` when asked.
lrk_status finish_result(lrk_cuda_stack* st, float* out, const char* what) {
  LRK_CUDA_SYNC(what);
  st->combined = true;
  return out ? st->result.to_host(out, f32_bytes(st->size())) : LRK_OK;
}

// Keeps exactly k entries of t [n]: the k largest |t|, lowest index among those equal to the k-th.
lrk_status magnitude_keep(lrk_cuda_stack* st, float* t, int64_t n, int64_t k) {
  if (k >= n) return LRK_OK;
  if (k <= 0) {
    LRK_CUDA_TRY(cudaMemset(t, 0, f32_bytes(n)));
    return LRK_OK;
  }
  if (lrk_status s = st->hist.reserve(256 * sizeof(unsigned long long))) return s;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(blocks_for(n), 1024));
  uint32_t prefix = 0, mask = 0;
  int64_t rank = k;  // the wanted entry's rank (1-based, from the top) among those matching the prefix
  unsigned long long h[256];
  for (int shift = 24; shift >= 0; shift -= 8) {
    LRK_CUDA_TRY(cudaMemset(st->hist.as<void>(), 0, 256 * sizeof(unsigned long long)));
    LRK_LAUNCH(digit_hist_kernel, grid, kThreads, 0)(t, n, prefix, mask, shift, st->hist.as<unsigned long long>());
    LRK_CUDA_SYNC("magnitude radix histogram");
    if (lrk_status s = st->hist.to_host(h, sizeof h)) return s;
    int b = 255;
    for (; b > 0 && static_cast<int64_t>(h[b]) < rank; b--) rank -= static_cast<int64_t>(h[b]);
    prefix |= static_cast<uint32_t>(b) << shift;
    mask |= 255u << shift;
    if (shift == 0 && static_cast<int64_t>(h[b]) == rank) {  // every tie at the threshold is kept
      LRK_LAUNCH(keep_above_kernel, blocks_for(n), kThreads, 0)(t, n, prefix, 1);
      LRK_CUDA_SYNC("magnitude keep");
      return LRK_OK;
    }
  }
  // `rank` of the entries equal to the threshold are kept, the lowest indices first.
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (lrk_status s = st->chunks.reserve(static_cast<size_t>(chunks) * sizeof(int64_t))) return s;
  LRK_LAUNCH(tie_count_kernel, static_cast<unsigned>(chunks), kThreads, 0)(t, n, prefix, st->chunks.as<int64_t>());
  LRK_CUDA_SYNC("magnitude tie count");
  std::vector<int64_t> offsets(static_cast<size_t>(chunks));
  if (lrk_status s = st->chunks.to_host(offsets.data(), offsets.size() * sizeof(int64_t))) return s;
  int64_t run = 0;
  for (int64_t& c : offsets) {
    const int64_t here = c;
    c = run;
    run += here;
  }
  LRK_CUDA_TRY(cudaMemcpy(st->chunks.as<int64_t>(), offsets.data(), offsets.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
  LRK_LAUNCH(keep_ties_kernel, static_cast<unsigned>(chunks), kThreads, 0)(t, n, prefix, rank, st->chunks.as<int64_t>());
  LRK_CUDA_SYNC("magnitude keep ties");
  return LRK_OK;
}

}  // namespace

extern "C" LRK_API lrk_status lrk_cuda_stack_create(int64_t count, int64_t rows, int64_t cols, lrk_cuda_stack** out) {
  if (!out || count < 1 || rows < 1 || cols < 1) return fail(LRK_INVALID_ARGUMENT, "stack_create: out, count, rows, cols >= 1");
  auto* st = new lrk_cuda_stack;
  st->count = count;
  st->rows = rows;
  st->cols = cols;
  if (lrk_status s = st->stack.alloc(f32_bytes(count * rows * cols))) {
    delete st;
    return s;
  }
  *out = st;
  return LRK_OK;
}

extern "C" LRK_API void lrk_cuda_stack_destroy(lrk_cuda_stack* st) { delete st; }

extern "C" LRK_API lrk_status lrk_cuda_stack_delta(lrk_cuda_stack* st, int64_t i, int64_t r, float scale, const float* b,
                                                   const float* a) {
  if (lrk_status s = check_term(st, i, "stack_delta")) return s;
  if (r < 1 || !a || !b) return fail(LRK_INVALID_ARGUMENT, "stack_delta: r >= 1, b [rows, r] and a [r, cols]");
  const size_t fb = f32_bytes(st->rows * r), fa = f32_bytes(r * st->cols);
  if (lrk_status s = st->factors.reserve(fb + fa)) return s;
  float* db = st->factors.as<float>();
  float* da = db + st->rows * r;
  LRK_CUDA_TRY(cudaMemcpy(db, b, fb, cudaMemcpyHostToDevice));
  LRK_CUDA_TRY(cudaMemcpy(da, a, fa, cudaMemcpyHostToDevice));
  gemm(false, false, st->rows, st->cols, r, scale, db, r, da, st->cols, 0.0f, st->term(i), st->cols);
  LRK_CUDA_SYNC("stack_delta gemm");
  st->combined = false;
  return LRK_OK;
}

extern "C" LRK_API lrk_status lrk_cuda_stack_magnitude(lrk_cuda_stack* st, int64_t i, int64_t k) {
  if (lrk_status s = check_term(st, i, "stack_magnitude")) return s;
  st->combined = false;
  return magnitude_keep(st, st->term(i), st->size(), k);
}

extern "C" LRK_API lrk_status lrk_cuda_stack_dare(lrk_cuda_stack* st, int64_t i, double density, uint64_t seed,
                                                  uint64_t stream, const uint8_t* mask) {
  if (lrk_status s = check_term(st, i, "stack_dare")) return s;
  if (!(density > 0.0)) return fail(LRK_INVALID_ARGUMENT, "stack_dare: density > 0");
  if (density >= 1.0) return LRK_OK;  // PEFT's apply_dare: nothing dropped, nothing rescaled
  const int64_t n = st->size();
  const uint8_t* dmask = nullptr;
  if (lrk_status s = device_mask(st, mask, &dmask)) return s;
  LRK_LAUNCH(dare_kernel, blocks_for(n), kThreads, 0)(st->term(i), n, dmask, seed, stream, density,
                                                       static_cast<float>(density));
  LRK_CUDA_SYNC("stack_dare");
  st->combined = false;
  return LRK_OK;
}

extern "C" LRK_API lrk_status lrk_cuda_stack_combine(lrk_cuda_stack* st, int ties, int sign_total, const float* weights,
                                                     float* out) {
  if (!st || !weights) return fail(LRK_INVALID_ARGUMENT, "stack_combine: a stack and one weight per input");
  const int64_t n = st->size();
  if (lrk_status s = prepare_result(st, weights)) return s;
  LRK_LAUNCH(combine_kernel, blocks_for(n), kThreads, 0)(st->stack.as<float>(), st->count, n, st->weights.as<float>(),
                                                          ties ? 1 : 0, sign_total ? 1 : 0, st->result.as<float>());
  return finish_result(st, out, "stack_combine");
}

extern "C" LRK_API lrk_status lrk_cuda_stack_set(lrk_cuda_stack* st, int64_t i, const float* t) {
  if (lrk_status s = check_term(st, i, "stack_set")) return s;
  if (!t) return fail(LRK_INVALID_ARGUMENT, "stack_set: t [rows, cols] is null");
  LRK_CUDA_TRY(cudaMemcpy(st->term(i), t, f32_bytes(st->size()), cudaMemcpyHostToDevice));
  st->combined = false;
  return LRK_OK;
}

extern "C" LRK_API lrk_status lrk_cuda_stack_dare_l1(lrk_cuda_stack* st, int64_t i, double density, uint64_t seed,
                                                     uint64_t stream, const uint8_t* mask, int rescale) {
  if (lrk_status s = check_term(st, i, "stack_dare_l1")) return s;
  if (!(density > 0.0)) return fail(LRK_INVALID_ARGUMENT, "stack_dare_l1: density > 0");
  if (density >= 1.0) return LRK_OK;  // mergekit: nothing dropped
  const int64_t n = st->size(), chunks = (n + kChunk - 1) / kChunk;
  const uint8_t* dmask = nullptr;
  if (lrk_status s = device_mask(st, mask, &dmask)) return s;
  if (lrk_status s = st->chunks.reserve(static_cast<size_t>(2 * chunks) * sizeof(double))) return s;
  LRK_LAUNCH(dare_l1_kernel, static_cast<unsigned>(chunks), kThreads, 0)(st->term(i), n, dmask, seed, stream, density,
                                                                        st->chunks.as<double>());
  LRK_CUDA_SYNC("stack_dare_l1");
  std::vector<double> partial(static_cast<size_t>(2 * chunks));
  if (lrk_status s = st->chunks.to_host(partial.data(), partial.size() * sizeof(double))) return s;
  double before = 0, after = 0;  // the chunks in order
  for (int64_t c = 0; c < chunks; c++) {
    before += partial[static_cast<size_t>(2 * c)];
    after += partial[static_cast<size_t>(2 * c + 1)];
  }
  st->combined = false;
  if (!rescale || before < 1e-7 || after < 1e-7) return LRK_OK;
  const float ratio = static_cast<float>(before) / static_cast<float>(after);
  LRK_LAUNCH(scale_kernel, blocks_for(n), kThreads, 0)(st->term(i), n, ratio);
  LRK_CUDA_SYNC("stack_dare_l1 rescale");
  return LRK_OK;
}

extern "C" LRK_API lrk_status lrk_cuda_stack_mix(lrk_cuda_stack* st, int ties, int sign_total, const float* weights,
                                                 int normalize, float weight_sum, int use_lambda, float lambda,
                                                 float* out) {
  if (!st || !weights) return fail(LRK_INVALID_ARGUMENT, "stack_mix: a stack and one weight per input");
  const int64_t n = st->size();
  if (lrk_status s = prepare_result(st, weights)) return s;
  LRK_LAUNCH(mix_kernel, blocks_for(n), kThreads, 0)(st->stack.as<float>(), st->count, n, st->weights.as<float>(),
                                                      ties ? 1 : 0, sign_total ? 1 : 0, normalize ? 1 : 0, weight_sum,
                                                      use_lambda ? 1 : 0, lambda, st->result.as<float>());
  return finish_result(st, out, "stack_mix");
}

extern "C" LRK_API lrk_status lrk_cuda_stack_svd(lrk_cuda_stack* st, float* u, float* s, float* vt) {
  if (!st || !u || !s || !vt) return fail(LRK_INVALID_ARGUMENT, "stack_svd: a stack, u, s, vt");
  if (!st->combined) return fail(LRK_INVALID_ARGUMENT, "stack_svd: combine the stack first");
  return svd_f64_device(st->result.as<float>(), st->rows, st->cols, u, s, vt);
}
