// The merges' dense stages on the CUDA backend (device_merge.cc).
#pragma once

namespace lowrank::addon {

/**
 * Routes the dense stage of PEFT's svd-type merges (set_dense_merge_provider) and mergekit's
 * delta merges (set_delta_mix_provider) to the device's stack (lrk_cuda_stack_*), when the
 * library (symbols from `symbol`) has it; `solver`: cuSOLVER is in use, so the PEFT merges'
 * SVD runs there too.
 */
void install_device_merge(void* (*symbol)(const char* name), bool solver);

}  // namespace lowrank::addon
