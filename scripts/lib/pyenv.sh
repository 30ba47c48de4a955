# Sourced: `lowrank_ensure_pyenv` creates (once) a Python venv with the reference stack
# (torch, peft, transformers, safetensors from PyPI, pinned in
# worker/test/python/requirements.txt) under $LOWRANK_CACHE/pyenv-<hash>, and exports
# LOWRANK_PYTHON. A venv is used only once its install finished (marker file).
lowrank_ensure_pyenv() {
  local req="$LOWRANK_ROOT/worker/test/python/requirements.txt"
  local py="${LOWRANK_PYTHON_BOOTSTRAP:-python3}"
  command -v "$py" >/dev/null || { echo "error: python3 (>= 3.10, with venv) is needed for the PyTorch/PEFT reference" >&2; return 1; }
  local hash
  hash="$( (cat "$req"; "$py" --version) | sha256sum | cut -c1-16)"
  local dir="$LOWRANK_CACHE/pyenv-$hash"
  if [ ! -f "$dir/.complete" ]; then
    echo "creating the Python reference venv in $dir (torch + peft from PyPI; large, once)" >&2
    rm -rf "$dir"
    "$py" -m venv "$dir" &&
      "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" &&
      touch "$dir/.complete" || { echo "error: installing $req into $dir failed" >&2; return 1; }
  fi
  export LOWRANK_PYTHON="$dir/bin/python"
  # mergekit, the reference for the delta-space merges: its own modules only (--no-deps: the
  # venv already has what they import), beside the venv so its pins stay untouched.
  local mk="$dir/mergekit-0.1.5"
  if [ ! -f "$mk/.complete" ]; then
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$mk" mergekit==0.1.5 &&
      touch "$mk/.complete" || { echo "error: installing mergekit==0.1.5 into $mk failed" >&2; return 1; }
  fi
  export LOWRANK_MERGEKIT_PATH="$mk"
  # pyarrow, the reference writer of the Parquet and Arrow datasets the worker reads; beside
  # the venv like mergekit (it needs only numpy), so adding it rebuilt nothing.
  local pa="$dir/pyarrow-26.0.1"
  if [ ! -f "$pa/.complete" ]; then
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$pa" pyarrow==26.0.1 &&
      touch "$pa/.complete" || { echo "error: installing pyarrow==26.0.1 into $pa failed" >&2; return 1; }
  fi
  export LOWRANK_PYARROW_PATH="$pa"
}
