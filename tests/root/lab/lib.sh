# Shared by the lab end-to-end tests (sourced; set MESHLAB first): root check, PASS/FAIL
# counting, background processes stopped by PID, a scratch directory, and teardown of the
# lab on exit.

if [[ $(id -u) != 0 ]]; then
  echo "FAIL: needs root (network namespaces, cgroups)"
  exit 1
fi
passed=0
failed=0
pass() {
  echo "PASS: $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL: $*"
  failed=$((failed + 1))
}
check() { # DESCRIPTION CMD...
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# Background processes (servers in pods, tcpdump): stopped by PID, and the scratch directory.
bg_pids=()
TMP=$(mktemp -d)
cleanup() {
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
  "$MESHLAB" down >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

in_pod() { "$MESHLAB" exec "$@"; }
