# Sourced: `lowrank_ensure_nvcc` finds a CUDA compiler for the CUDA backend
# (worker/native/src/cuda) and exports LOWRANK_CUDA_HOME (a toolkit: bin/nvcc, include,
# lib64) and LOWRANK_NVCC. It uses $CUDA_HOME or /usr/local/cuda when they have bin/nvcc;
# otherwise it installs NVIDIA's PyPI wheels (nvcc, nvvm's cicc, the crt headers, the
# runtime, CCCL) once into $LOWRANK_CACHE/cuda-<hash> with pip --target and reuses that
# directory afterwards (a marker file says the install finished). Second run: no network,
# a few milliseconds. `lowrank_find_nvcc` only looks and installs nothing.
#
# Why CUDA 13 and not 12: the cu12 nvcc wheels (12.1 to 12.9) hold only ptxas (for
# Triton), no nvcc/cicc/fatbinary; CUDA 13's wheels are the whole compiler. 13.0 is the
# oldest 13.x: its SASS runs on every r580+ driver (minor-version compatibility). It takes
# Debian 12's g++ 12 as host compiler without -allow-unsupported-compiler. ~270 MB.
LOWRANK_CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85"

lowrank_cuda_wheel_dir() {
  echo "$LOWRANK_CACHE/cuda-$(echo "$LOWRANK_CUDA_WHEELS" | sha256sum | cut -c1-12)"
}

lowrank_use_cuda_home() {
  [ -n "$1" ] && [ -x "$1/bin/nvcc" ] || return 1
  LOWRANK_CUDA_HOME="$1"
  LOWRANK_NVCC="$1/bin/nvcc"
  export LOWRANK_CUDA_HOME LOWRANK_NVCC
}

lowrank_find_nvcc() {
  lowrank_use_cuda_home "${CUDA_HOME:-}" || lowrank_use_cuda_home /usr/local/cuda && return 0
  local w
  w="$(lowrank_cuda_wheel_dir)"
  [ -f "$w/.complete" ] && lowrank_use_cuda_home "$w/nvidia/cu13"
}

lowrank_ensure_nvcc() {
  lowrank_find_nvcc && return 0
  local dir py="${LOWRANK_PYTHON_BOOTSTRAP:-python3}"
  dir="$(lowrank_cuda_wheel_dir)"
  command -v "$py" >/dev/null || { echo "error: python3 with pip is needed to install the CUDA compiler wheels" >&2; return 1; }
  echo "installing the CUDA compiler from PyPI into $dir (once): $LOWRANK_CUDA_WHEELS" >&2
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  # shellcheck disable=SC2086
  PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" $LOWRANK_CUDA_WHEELS ||
    { echo "error: pip install of the CUDA wheels into $dir failed" >&2; return 1; }
  # nvcc.profile links from lib64 (the toolkit's name); the wheels name it lib.
  ln -sfn lib "$dir/nvidia/cu13/lib64" || return 1
  touch "$dir/.complete"
  lowrank_use_cuda_home "$dir/nvidia/cu13"
}
