// cuBLAS behind the GEMM (blas.cuh). dlopen()ed, so liblowrank_cuda.so still links no CUDA
// library but cudart (static): where cuBLAS is absent the tiled kernel of gemm.cu runs and
// backendInfo().gemm says why. Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ,
// so each call passes B first with the operations swapped. An operand cuBLAS cannot take
// as stored (a bf16 weight against an fp32 activation: GemmEx wants both inputs of one
// type) is converted into a grow-only scratch buffer, k-chunked so that buffer stays small.
#include "blas.cuh"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <type_traits>

#include "blas_api.h"
#include "settings.cuh"
#include "widen.cuh"

namespace lowrank::cuda {
namespace {

enum class Mode { automatic, required, tiled };

struct Blas {
  bool initialised = false, usable = false;
  Mode mode = Mode::automatic;
  Matmul matmul = Matmul::fp32;
  std::string library, version, why;
  cublasCreate_fn create = nullptr;
  cublasSetMathMode_fn set_math = nullptr;
  cublasGemmEx_fn gemm_ex = nullptr;
  cublasHandle_t handle = nullptr;
  bool handle_tried = false;
  std::string error;  // sticky until take_blas_error
  Scratch a, b;       // converted operands
};

Blas& blas() {
  static Blas g;
  return g;
}

// The converted k-slice of one operand stays under this many elements (default 64 Mi: 128
// MiB in bf16, 256 MiB in fp32; LOWRANK_CUDA_GEMM_SCRATCH), whatever the matrix; a GEMM then
// runs as several k-chunks of at least 64.
int64_t g_scratch_elems = int64_t{1} << 26;

const char* matmul_name(Matmul m) { return m == Matmul::fp32 ? "fp32" : m == Matmul::tf32 ? "tf32" : "bf16"; }

std::string load(Blas& g) {
  std::string tried;
  void* lib = open_first("LOWRANK_CUBLAS_LIBRARY", {"libcublas.so.13", "libcublas.so.12"}, &g.library, &tried);
  if (!lib) return "cuBLAS not found (" + tried + "); install it (pip install nvidia-cublas) and set LOWRANK_CUBLAS_LIBRARY";
  g.create = reinterpret_cast<cublasCreate_fn>(dlsym(lib, "cublasCreate_v2"));
  g.set_math = reinterpret_cast<cublasSetMathMode_fn>(dlsym(lib, "cublasSetMathMode"));
  g.gemm_ex = reinterpret_cast<cublasGemmEx_fn>(dlsym(lib, "cublasGemmEx"));
  if (!g.create || !g.set_math || !g.gemm_ex) return g.library + " lacks cublasCreate_v2/cublasSetMathMode/cublasGemmEx";
  g.version = library_version(lib, "cublasGetProperty");
  return "";
}

// The handle needs a context, so it is made at the first GEMM, not when the library loads.
bool ready(Blas& g) {
  if (!g.usable) return false;
  if (g.handle) return true;
  if (g.handle_tried) return false;
  g.handle_tried = true;
  const cublasStatus_t s = g.create(&g.handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    g.handle = nullptr;
    g.why = "cublasCreate failed with status " + std::to_string(s);
    if (g.mode == Mode::required) g.error = g.why + " (LOWRANK_CUDA_GEMM=cublas)";
    g.usable = false;
    return false;
  }
  return true;
}

template <typename From, typename To>
__global__ void convert_kernel(int64_t rows, int64_t cols, const From* src, int64_t ld, To* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  dst[i] = convert<To>(src[(i / cols) * ld + i % cols]);
}

// dst [rows, cols] (packed) = src [rows, cols] of leading dimension ld, converted.
template <typename From, typename To>
void convert_2d(int64_t rows, int64_t cols, const From* src, int64_t ld, To* dst) {
  const int64_t n = rows * cols;
  auto kernel = convert_kernel<From, To>;
  if (n > 0) LRK_LAUNCH(kernel, static_cast<unsigned>((n + 255) / 256), 256, 0)(rows, cols, src, ld, dst);
}

// One operand's k-slice [k0, k0 + kk) as cuBLAS takes it: either the stored matrix at an
// offset, or a packed conversion. `inner` is the operand's other dimension (m for A, n for B);
// `k_major`: the operand is stored [k, inner] (A transposed, B not).
template <typename From, typename To>
const void* slice(const From* x, int64_t ld, bool k_major, int64_t inner, int64_t k0, int64_t kk, bool conv,
                  Scratch& scratch, int64_t* ld_out, Blas& g) {
  const From* at = k_major ? x + k0 * ld : x + k0;
  if (!conv) {
    *ld_out = ld;
    return at;
  }
  if (scratch.reserve(static_cast<size_t>(inner * kk) * sizeof(To)) != LRK_OK) {
    if (g.error.empty()) g.error = last_error_slot();
    return nullptr;
  }
  To* dst = scratch.as<To>();
  if (k_major) {
    convert_2d<From, To>(kk, inner, at, ld, dst);
    *ld_out = inner;
  } else {
    convert_2d<From, To>(inner, kk, at, ld, dst);
    *ld_out = kk;
  }
  return dst;
}

}  // namespace

lrk_status blas_init() {
  Blas& g = blas();
  if (g.initialised) return LRK_OK;
  std::string mode, matmul;
  if (lrk_status s = setting("LOWRANK_CUDA_GEMM", "auto", {"auto", "cublas", "tiled"}, &mode)) return s;
  if (lrk_status s = setting("LOWRANK_CUDA_MATMUL", "fp32", {"fp32", "tf32", "bf16"}, &matmul)) return s;
  g.mode = mode == "tiled" ? Mode::tiled : mode == "cublas" ? Mode::required : Mode::automatic;
  g.matmul = matmul == "tf32" ? Matmul::tf32 : matmul == "bf16" ? Matmul::bf16 : Matmul::fp32;
  if (const char* v = std::getenv("LOWRANK_CUDA_GEMM_SCRATCH"); v && *v) {
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (*end || n < 64) return fail(LRK_INVALID_ARGUMENT, std::string("LOWRANK_CUDA_GEMM_SCRATCH must be a number of elements >= 64, got \"") + v + "\"");
    g_scratch_elems = n;
  }
  g.initialised = true;
  if (g.mode == Mode::tiled) {
    g.why = "LOWRANK_CUDA_GEMM=tiled";
    return LRK_OK;
  }
  g.why = load(g);
  g.usable = g.why.empty();
  if (!g.usable && g.mode == Mode::required) return fail(LRK_DEVICE_ERROR, g.why + " (LOWRANK_CUDA_GEMM=cublas)");
  return LRK_OK;
}

std::string gemm_description() {
  const Blas& g = blas();
  if (!g.usable) return "tiled kernel, fp32 (" + (g.why.empty() ? std::string("cuBLAS not loaded") : g.why) + ")";
  return "cuBLAS " + (g.version.empty() ? std::string("(version unknown)") : g.version) + " (" + g.library +
         "), matmul " + matmul_name(g.matmul);
}

void blas_set_matmul(Matmul m) { blas().matmul = m; }
Matmul blas_matmul() { return blas().matmul; }
bool blas_in_use() { return blas().usable; }

std::string take_blas_error() {
  std::string e;
  e.swap(blas().error);
  return e;
}

template <typename TB>
bool blas_gemm(int64_t m, int64_t n, const GemmPair<TB>& p, float beta, float* c, int64_t ldc) {
  Blas& g = blas();
  if (p.k <= 0 || !ready(g)) return false;
  const int64_t dims[] = {m, n, p.k, p.lda, p.ldb, ldc};
  for (int64_t d : dims)
    if (d > INT_MAX) return false;  // cuBLAS's int dimensions: the tiled kernel takes it
  constexpr bool weight_bf16 = std::is_same_v<TB, __nv_bfloat16>;
  // bf16 matmul: a bf16 weight's GEMM takes its fp32 operand rounded to bf16. Otherwise the
  // inputs go as fp32, a bf16 weight widened (exact).
  const bool half = weight_bf16 && g.matmul == Matmul::bf16;
  const bool conv_a = half, conv_b = weight_bf16 && !half;
  const cudaDataType type = half ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = g.matmul == Matmul::tf32 && !half ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  int64_t kc = p.k;
  const int64_t width = std::max(conv_a ? m : 1, conv_b ? n : 1);
  if ((conv_a || conv_b) && width * p.k > g_scratch_elems) kc = std::max<int64_t>(64, g_scratch_elems / width / 64 * 64);
  const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t k0 = 0; k0 < p.k; k0 += kc) {
    const int64_t kk = std::min(kc, p.k - k0);
    int64_t lda = 0, ldb = 0;
    const void* a = half ? slice<float, __nv_bfloat16>(p.a, p.lda, p.trans_a, m, k0, kk, conv_a, g.a, &lda, g)
                         : slice<float, float>(p.a, p.lda, p.trans_a, m, k0, kk, false, g.a, &lda, g);
    const void* b = half ? slice<TB, __nv_bfloat16>(p.b, p.ldb, !p.trans_b, n, k0, kk, false, g.b, &ldb, g)
                         : slice<TB, float>(p.b, p.ldb, !p.trans_b, n, k0, kk, conv_b, g.b, &ldb, g);
    if (!a || !b) return true;  // the scratch failed: reported at the next sync
    const float alpha = p.alpha, b_eff = k0 == 0 ? beta : 1.0f;
    const cublasStatus_t s = g.gemm_ex(g.handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                                       static_cast<int>(kk), &alpha, b, type, static_cast<int>(ldb), a, type,
                                       static_cast<int>(lda), &b_eff, c, CUDA_R_32F, static_cast<int>(ldc), compute,
                                       CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS && g.error.empty())
      g.error = "cublasGemmEx (m " + std::to_string(n) + ", n " + std::to_string(m) + ", k " + std::to_string(kk) +
                ") failed with status " + std::to_string(s);
  }
  return true;
}

template bool blas_gemm<float>(int64_t, int64_t, const GemmPair<float>&, float, float*, int64_t);
template bool blas_gemm<__nv_bfloat16>(int64_t, int64_t, const GemmPair<__nv_bfloat16>&, float, float*, int64_t);

}  // namespace lowrank::cuda
