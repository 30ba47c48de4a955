# Sourced: `stage "name" cmd args...` runs one step, prints its duration, and fails
# the script with the step's name when it fails. `stage_summary` prints all timings.
LOWRANK_STAGES=()
stage() {
  local name="$1"; shift
  local t0=$SECONDS
  printf '\n\033[1m==> %s\033[0m\n' "$name" >&2
  if "$@"; then
    LOWRANK_STAGES+=("$(printf '%5ss  %s' $((SECONDS - t0)) "$name")")
    printf '<== %s: ok (%ss)\n' "$name" $((SECONDS - t0)) >&2
  else
    local rc=$?
    printf '\033[31m<== %s: FAILED (exit %s, %ss)\033[0m\n' "$name" "$rc" $((SECONDS - t0)) >&2
    exit "$rc"
  fi
}
stage_summary() {
  printf '\nstage timings:\n' >&2
  printf '  %s\n' "${LOWRANK_STAGES[@]}" >&2
}
