// The CPU backend's table of ops and its thread-local error message.
#include "cpu_ops.h"

namespace lowrank::cpu {

std::string& last_error_slot() {
  thread_local std::string msg;
  return msg;
}

}  // namespace lowrank::cpu

extern "C" const char* lrk_cpu_last_error(void) { return lowrank::cpu::last_error_slot().c_str(); }

extern "C" const lrk_ops* lrk_cpu_ops(void) {
  static const lrk_ops table = {lrk_cpu_lora_forward, lrk_cpu_lora_backward,   lrk_cpu_adamw,
                                lrk_cpu_rmsnorm_forward, lrk_cpu_rope_apply,    lrk_cpu_swiglu_forward,
                                lrk_cpu_attention_forward, lrk_cpu_factor_sum, lrk_cpu_rmsnorm_backward, lrk_cpu_swiglu_backward, lrk_cpu_cross_entropy, lrk_cpu_dropout_mask, lrk_cpu_attention_backward, lrk_cpu_last_error};
  return &table;
}
