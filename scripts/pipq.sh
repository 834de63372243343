# Sourced by scripts/install.sh and .ci/clip-env.sh.
# pipq CMD…: run pip quietly; show its output (minus this machine's "Location … is ignored" notes) only on failure.
pipq() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    grep -v "Location '" "$log" >&2 || true
    rm -f "$log"
    echo "failed: $*" >&2
    return 1
  fi
  rm -f "$log"
}
