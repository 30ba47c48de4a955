// The engine's thread pool (see parallel.h).
#include "parallel.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "lowrank/error.h"

namespace lowrank::train {

namespace {

class Pool {
 public:
  Pool() { resize(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))); }
  ~Pool() { stop(); }

  int size() const { return size_; }

  void resize(int n) {
    stop();
    std::lock_guard<std::mutex> lock(call_mu_);
    size_ = n;
    quit_ = false;
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, g = generation_] { loop(i, g); });
  }

  void run(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    const int parts = static_cast<int>(std::min<int64_t>(size_, n));
    if (parts <= 1) {
      fn(0, n);
      return;
    }
    std::lock_guard<std::mutex> call(call_mu_);  // one parallel_for at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      generation_++;
    }
    cv_.notify_all();
    chunk(0, parts, n, fn);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  static void chunk(int part, int parts, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t b = n * part / parts, e = n * (part + 1) / parts;
    if (b < e) fn(b, e);
  }

  // `seen` starts at the generation current when the worker was made: earlier calls are not its to run.
  void loop(int index, uint64_t seen) {
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      int parts;
      int64_t n;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        fn = fn_;
        parts = parts_;
        n = n_;
      }
      if (index >= parts) continue;  // this call has fewer chunks than threads
      chunk(index, parts, n, *fn);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 0, pending_ = 0, size_ = 1;
  uint64_t generation_ = 0;
  bool quit_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) { pool().run(n, fn); }

void set_num_threads(int n) {
  if (n < 1) throw Error("invalid_argument", "threads must be >= 1");
  if (n != pool().size()) pool().resize(n);
}

int num_threads() { return pool().size(); }

}  // namespace lowrank::train

#include "lowrank/linalg.h"

namespace lowrank::train {

void pgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int threads = num_threads();
  // Below ~1 MFLOP a split costs more than it saves.
  if (threads == 1 || m * n * k < (int64_t{1} << 19) || (m < 2 && n < 2)) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m >= n) {
    parallel_for(m, [&](int64_t i0, int64_t i1) {
      const float* ab = trans_a ? a + i0 : a + i0 * lda;  // op(A) rows i0..i1
      gemm(trans_a, trans_b, i1 - i0, n, k, alpha, ab, lda, b, ldb, beta, c + i0 * ldc, ldc);
    });
  } else {
    parallel_for(n, [&](int64_t j0, int64_t j1) {
      const float* bb = trans_b ? b + j0 * ldb : b + j0;  // op(B) columns j0..j1
      gemm(trans_a, trans_b, m, j1 - j0, k, alpha, a, lda, bb, ldb, beta, c + j0, ldc);
    });
  }
}

BlasSingleThread::BlasSingleThread() : previous_(blas_threads()) {
  if (previous_ != 1) set_blas_threads(1);
}

BlasSingleThread::~BlasSingleThread() {
  if (previous_ != 1) set_blas_threads(previous_);
}

}  // namespace lowrank::train
