// The decoding loop of generation, shared by the CPU engine (generate.cc) and the CUDA
// device engine (addon/device_trainer.cc): the argument checks, each new token's position
// and first visible key (left padding), the next-token choice (greedy, or temperature +
// top-p with Philox uniforms), EOS. Only the model's forward over the new tokens differs.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "config.h"
#include "engine.h"

namespace lowrank::train {

/** The new tokens of one step: t per row at positions p0 .. p0 + t − 1 of each row's KV cache. */
struct GenerateStep {
  int64_t rows = 0, t = 0, p0 = 0, max_len = 0;  // max_len: the caches' length (prompt + new tokens)
  const std::vector<int32_t>* tokens = nullptr;  // [rows · t]
  const std::vector<int64_t>* pos = nullptr;     // [rows · t] RoPE positions (within each row's real tokens)
  // [rows · t] the first key each new token may attend to (its row's first real token;
  // 0 for a pad), before the sliding window.
  const std::vector<int64_t>* key_start = nullptr;
};

/** A model's forward over a step's tokens: logits [rows, vocab] of each row's last new token. */
using GenerateForward = std::function<void(const GenerateStep& step, float* logits)>;

/**
 * The next token from one row of logits [V]: argmax (first on ties) at temperature 0, else
 * temperature + top-p (transformers' order) with the uniform u in [0, 1).
 */
int32_t choose_token(const float* logits, int64_t V, const SampleOptions& o, float u);

/**
 * The loop: checks the arguments (as Engine::generate documents them), then a prefill of
 * the prompt (the step with p0 = 0) and one token per step; [rows, max_new] tokens.
 */
std::vector<int32_t> generate_loop(const ModelConfig& c, const int32_t* prompt, int64_t rows, int64_t prompt_len,
                                   int64_t max_new, const SampleOptions& o, const int64_t* left_pad,
                                   const GenerateForward& forward);

}  // namespace lowrank::train
