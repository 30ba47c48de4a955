// The dense stages of merges on the CUDA backend, installed once when it is chosen, for
// modules of kDeviceMinElements or more (smaller ones cost more in launches than on the CPU):
// - PEFT's svd-type merges (ties_svd, dare_*_svd, magnitude_prune_svd; merge.cc): only the
//   factors go up; the deltas are made, pruned and combined on the device, and their exact
//   SVD taken there when cuSOLVER is in use (else the combined matrix comes back for LAPACK
//   or the randomized SVD);
// - mergekit's delta merges (task_arithmetic, ties, dare_*; merge_delta.cc): the dense
//   deltas go up, are trimmed / DARE-masked with the L1 rescale, weighted and mixed there,
//   and the mix comes back.
#include "device_merge.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device_linalg.h"
#include "lowrank/adapter.h"
#include "lowrank/backend_ops.h"
#include "lowrank/merge_delta.h"
#include "lowrank/merge_ops.h"

namespace lowrank::addon {
namespace {

struct StackFns {
  lrk_status (*create)(int64_t, int64_t, int64_t, lrk_cuda_stack**);
  void (*destroy)(lrk_cuda_stack*);
  lrk_status (*delta)(lrk_cuda_stack*, int64_t, int64_t, float, const float*, const float*);
  lrk_status (*magnitude)(lrk_cuda_stack*, int64_t, int64_t);
  lrk_status (*dare)(lrk_cuda_stack*, int64_t, double, uint64_t, uint64_t, const uint8_t*);
  lrk_status (*combine)(lrk_cuda_stack*, int, int, const float*, float*);
  lrk_status (*svd)(lrk_cuda_stack*, float*, float*, float*);
  lrk_status (*set)(lrk_cuda_stack*, int64_t, const float*);
  lrk_status (*dare_l1)(lrk_cuda_stack*, int64_t, double, uint64_t, uint64_t, const uint8_t*, int);
  lrk_status (*mix)(lrk_cuda_stack*, int, int, const float*, int, float, int, float, float*);
  const char* (*last_error)();
};

void check(const StackFns& f, lrk_status s) { check_device(s, f.last_error, "CUDA merge stack"); }

using Stack = std::unique_ptr<lrk_cuda_stack, void (*)(lrk_cuda_stack*)>;

Stack make_stack(const StackFns& f, size_t count, int64_t rows, int64_t cols) {
  lrk_cuda_stack* h = nullptr;
  check(f, f.create(static_cast<int64_t>(count), rows, cols, &h));
  return Stack(h, f.destroy);
}

DenseMergeResult peft_dense_stage(const StackFns& f, bool solver, const DenseMergeRequest& req, Matrix* mixed,
                                  Svd* svd) {
  const LoraModule& m0 = *req.terms.at(0).module;
  const int64_t rows = m0.out, cols = m0.in, n = rows * cols;
  if (n < kDeviceMinElements) return DenseMergeResult::kNotTaken;
  std::lock_guard<std::mutex> lock(device_mutex());
  Stack stack = make_stack(f, req.terms.size(), rows, cols);
  lrk_cuda_stack* h = stack.get();
  std::vector<float> weights;
  for (size_t i = 0; i < req.terms.size(); i++) {
    const DenseMergeTerm& t = req.terms[i];
    const LoraModule& m = *t.module;
    const auto idx = static_cast<int64_t>(i);
    check(f, f.delta(h, idx, m.r, static_cast<float>(m.scale), m.b.ptr(), m.a.ptr()));
    if (req.magnitude) check(f, f.magnitude(h, idx, req.keep));
    if (req.dare && req.density < 1.0)
      check(f, f.dare(h, idx, req.density, req.seed, t.dare_stream, t.dare_mask ? t.dare_mask->data() : nullptr));
    weights.push_back(t.weight);
  }
  const int sign_total = req.sign == SignMethod::kTotal ? 1 : 0;
  if (svd && solver) {
    check(f, f.combine(h, req.ties ? 1 : 0, sign_total, weights.data(), nullptr));
    const int64_t k = std::min(rows, cols);
    *svd = Svd{Matrix(rows, k), std::vector<float>(static_cast<size_t>(k)), Matrix(k, cols)};
    check(f, f.svd(h, svd->u.ptr(), svd->s.data(), svd->vt.ptr()));
    return DenseMergeResult::kSvd;
  }
  *mixed = Matrix(rows, cols);
  check(f, f.combine(h, req.ties ? 1 : 0, sign_total, weights.data(), mixed->ptr()));
  return DenseMergeResult::kMixed;
}

bool mergekit_mix(const StackFns& f, const DeltaMixRequest& req, Matrix* mix) {
  const std::vector<Matrix>& deltas = *req.deltas;
  const int64_t rows = deltas.at(0).rows, cols = deltas.at(0).cols, n = rows * cols;
  if (n < kDeviceMinElements) return false;
  std::lock_guard<std::mutex> lock(device_mutex());
  Stack stack = make_stack(f, deltas.size(), rows, cols);
  lrk_cuda_stack* h = stack.get();
  for (size_t i = 0; i < deltas.size(); i++) {
    const auto idx = static_cast<int64_t>(i);
    check(f, f.set(h, idx, deltas[i].ptr()));
    if (req.trim) check(f, f.magnitude(h, idx, req.keep));
    if (req.dare && req.density < 1.0)
      check(f, f.dare_l1(h, idx, req.density, req.seed, req.streams[i], req.masks ? (*req.masks)[i].data() : nullptr,
                         req.rescale ? 1 : 0));
  }
  *mix = Matrix(rows, cols);
  check(f, f.mix(h, req.ties ? 1 : 0, req.sign == SignMethod::kTotal ? 1 : 0, req.weights.data(), req.normalize ? 1 : 0,
                 req.weight_sum, req.lambda != 1.0 ? 1 : 0, static_cast<float>(req.lambda), mix->ptr()));
  return true;
}

}  // namespace

void install_device_merge(void* (*symbol)(const char* name), bool solver) {
  StackFns f{};
  f.create = reinterpret_cast<decltype(f.create)>(symbol("lrk_cuda_stack_create"));
  f.destroy = reinterpret_cast<decltype(f.destroy)>(symbol("lrk_cuda_stack_destroy"));
  f.delta = reinterpret_cast<decltype(f.delta)>(symbol("lrk_cuda_stack_delta"));
  f.magnitude = reinterpret_cast<decltype(f.magnitude)>(symbol("lrk_cuda_stack_magnitude"));
  f.dare = reinterpret_cast<decltype(f.dare)>(symbol("lrk_cuda_stack_dare"));
  f.combine = reinterpret_cast<decltype(f.combine)>(symbol("lrk_cuda_stack_combine"));
  f.svd = reinterpret_cast<decltype(f.svd)>(symbol("lrk_cuda_stack_svd"));
  f.set = reinterpret_cast<decltype(f.set)>(symbol("lrk_cuda_stack_set"));
  f.dare_l1 = reinterpret_cast<decltype(f.dare_l1)>(symbol("lrk_cuda_stack_dare_l1"));
  f.mix = reinterpret_cast<decltype(f.mix)>(symbol("lrk_cuda_stack_mix"));
  f.last_error = reinterpret_cast<decltype(f.last_error)>(symbol("lrk_cuda_last_error"));
  if (!f.create || !f.destroy || !f.magnitude) return;  // an older library: the CPU keeps both
  if (f.delta && f.dare && f.combine && f.svd)
    set_dense_merge_provider([f, solver](const DenseMergeRequest& req, Matrix* mixed, Svd* svd) {
      return peft_dense_stage(f, solver, req, mixed, svd);
    });
  if (f.set && f.dare_l1 && f.mix)
    set_delta_mix_provider([f](const DeltaMixRequest& req, Matrix* mix) { return mergekit_mix(f, req, mix); });
}

}  // namespace lowrank::addon
