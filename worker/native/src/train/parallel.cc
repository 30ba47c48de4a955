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
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i] { loop(i); });
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

  void loop(int index) {
    uint64_t seen = 0;
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
