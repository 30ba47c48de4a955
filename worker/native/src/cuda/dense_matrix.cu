// A dense fp32 matrix kept on the device for repeated products with thin host matrices:
// the randomized SVD's M Ω, Mᵀ Q, M Q (METHODS §7 P6) of merges and compressions. M goes up
// once; each product moves only the thin operand and result ([·, l], l = rank + oversample).
#include "cuda_ops.h"
#include "gemm.cuh"

using namespace lowrank::cuda;

struct lrk_cuda_matrix {
  int64_t rows = 0, cols = 0;
  DeviceBuffer m;
  Scratch x, y;  // the thin operand and result, grown to the widest seen
};

extern "C" lrk_status lrk_cuda_matrix_create(const float* host, int64_t rows, int64_t cols, lrk_cuda_matrix** out) {
  if (!host || !out || rows < 1 || cols < 1) return fail(LRK_INVALID_ARGUMENT, "matrix_create: host, out, rows >= 1, cols >= 1");
  auto* mat = new lrk_cuda_matrix;
  mat->rows = rows;
  mat->cols = cols;
  if (lrk_status s = mat->m.alloc(f32_bytes(rows * cols), host)) {
    delete mat;
    return s;
  }
  *out = mat;
  return LRK_OK;
}

extern "C" lrk_status lrk_cuda_matrix_apply(lrk_cuda_matrix* mat, int trans, const float* x, int64_t l, float* y) {
  if (!mat || !x || !y || l < 1 || (trans != 0 && trans != 1))
    return fail(LRK_INVALID_ARGUMENT, "matrix_apply: matrix, x, y, l >= 1, trans 0 or 1");
  // trans 0: y [rows, l] = M x, x [cols, l]; trans 1: y [cols, l] = Mᵀ x, x [rows, l].
  const int64_t in = trans ? mat->rows : mat->cols, out = trans ? mat->cols : mat->rows;
  if (lrk_status s = mat->x.reserve(f32_bytes(in * l))) return s;
  if (lrk_status s = mat->y.reserve(f32_bytes(out * l))) return s;
  LRK_CUDA_TRY(cudaMemcpy(mat->x.as<float>(), x, f32_bytes(in * l), cudaMemcpyHostToDevice));
  gemm(trans != 0, false, out, l, in, 1.0f, mat->m.as<float>(), mat->cols, mat->x.as<float>(), l, 0.0f,
       mat->y.as<float>(), l);
  LRK_CUDA_SYNC("matrix_apply gemm");
  LRK_CUDA_TRY(cudaMemcpy(y, mat->y.as<float>(), f32_bytes(out * l), cudaMemcpyDeviceToHost));
  return LRK_OK;
}

extern "C" void lrk_cuda_matrix_destroy(lrk_cuda_matrix* mat) { delete mat; }
