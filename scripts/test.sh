#!/usr/bin/env bash
# THE test command (README, CI): set-up, build with warnings as errors, format check, unit
# tests, the root suite (real BPF in the real kernel; it never skips), the lab smoke
# test, the unit tests again under ASan/UBSan, a bounded libFuzzer run of each parser
# (MESHD_FUZZ_SECONDS per target, default 15; 0 skips it), and the benchmark suite's quick
# mode (scripts/bench.sh --quick) and the sockmap benchmark's (scripts/bench-sockmap.sh
# --quick), both with output under the build dir, never docs/. Must run as root. Ends with "N passed, N failed" over every ctest test, the format
# check, the smoke test and the bench step; exits non-zero on any failure.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MESHD_BUILD_DIR=${MESHD_BUILD_DIR:-$REPO/build}
BUILD=$MESHD_BUILD_DIR
cd "$REPO" || exit 1

if [[ $(id -u) != 0 ]]; then
  echo "test.sh: must run as root: it installs packages (scripts/setup.sh) and the root suite" \
    "and lab need namespaces, cgroups and BPF. Run: sudo $0" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

passed=0
failed=0
step() { echo "==> $*"; }

step "setup"
bash "$REPO/scripts/setup.sh" || {
  echo "test.sh: setup failed (see above)" >&2
  echo "$passed passed, $((failed + 1)) failed"
  exit 1
}

step "build ($BUILD)"
bash "$REPO/scripts/build.sh" || {
  echo "test.sh: build failed (see above)" >&2
  echo "$passed passed, $((failed + 1)) failed"
  exit 1
}

step "format check (clang-format)"
# Tracked and new (not ignored) C/C++ sources; bpf/ has its own kernel-style .clang-format,
# which clang-format finds by itself.
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t sources < <(git -C "$REPO" ls-files -co --exclude-standard -- \
    '*.c' '*.cc' '*.cpp' '*.h' '*.hpp' | grep -v -E '(^|/)(build[^/]*|third_party)/')
else
  mapfile -t sources < <(find . -path './build*' -prune -o -type f \
    \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -print)
fi
unformatted=()
for f in "${sources[@]}"; do
  [[ -f $f ]] || continue
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || unformatted+=("$f")
done
if ((${#unformatted[@]})); then
  echo "FAIL: not clang-formatted (run clang-format -i on them):"
  printf '  %s\n' "${unformatted[@]}"
  failed=$((failed + 1))
else
  echo "PASS: ${#sources[@]} files clang-formatted"
  passed=$((passed + 1))
fi

# junit_attr FILE NAME: a numeric attribute of the <testsuite> element (0 when absent).
junit_attr() {
  local v
  v=$(tr '\n\t' '  ' <"$1" | grep -o '<testsuite [^>]*' | head -n 1 |
    grep -o "[[:space:]]$2=\"[0-9]*\"" | grep -o '[0-9][0-9]*')
  echo "${v:-0}"
}

# run_ctest LABEL ALLOW_SKIP [ctest args]: runs one label, adds its results to the totals.
# Counts come from ctest's JUnit report. A skipped test counts as a failure when
# ALLOW_SKIP=0: the root suite must really run (CI runs as root).
run_ctest() {
  local label=$1 allow_skip=$2
  shift 2
  local junit="$BUILD/ctest-$label.xml" rc tests fails skips
  rm -f "$junit"
  ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -L "^$label\$" \
    --output-junit "$junit" "$@"
  rc=$?
  if [[ ! -s $junit ]]; then
    echo "FAIL: ctest -L $label produced no results (exit $rc)"
    failed=$((failed + 1))
    return
  fi
  tests=$(junit_attr "$junit" tests)
  fails=$(junit_attr "$junit" failures)
  skips=$(($(junit_attr "$junit" skipped) + $(junit_attr "$junit" disabled)))
  passed=$((passed + tests - fails - skips))
  failed=$((failed + fails))
  if ((skips > 0)); then
    if ((allow_skip)); then
      echo "note: $skips $label test(s) skipped"
    else
      echo "FAIL: $skips $label test(s) skipped; the root suite must run in full as root"
      failed=$((failed + skips))
    fi
  fi
  if ((rc != 0 && fails == 0 && skips == 0)); then
    echo "FAIL: ctest -L $label exited $rc"
    failed=$((failed + 1))
  fi
}

step "unit tests"
run_ctest unit 1 -j"$(nproc)"

step "root suite"
# Serially: root tests create namespaces, cgroups and pins of their own.
run_ctest root 0

step "lab smoke test"
if bash "$REPO/lab/smoke.sh"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

step "unit tests under ASan/UBSan ($BUILD-asan)"
if MESHD_BUILD_DIR="$BUILD-asan" bash "$REPO/scripts/build.sh" -DMESHD_SANITIZE=ON; then
  BUILD="$BUILD-asan" run_ctest unit 1 -j"$(nproc)"
else
  echo "FAIL: sanitizer build failed (see above)"
  failed=$((failed + 1))
fi

fuzz_seconds=${MESHD_FUZZ_SECONDS:-15}
if ((fuzz_seconds > 0)); then
  step "fuzz the parsers (${fuzz_seconds}s per target)"
  # Under CI a fixed seed: the run is a reproducible regression check, not a lottery.
  if MESHD_FUZZ_SEED=${MESHD_FUZZ_SEED:-${CI:+1}} bash "$REPO/scripts/fuzz.sh" "$fuzz_seconds"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
fi

step "bench quick (scripts/bench.sh --quick: every variant and workload once, ~1-2 min)"
if MESHD_BENCH_SKIP_BUILD=1 bash "$REPO/scripts/bench.sh" --quick; then
  passed=$((passed + 1))
else
  echo "FAIL: scripts/bench.sh --quick (see above; logs in the temp dir it names)"
  failed=$((failed + 1))
fi

step "sockmap bench quick (scripts/bench-sockmap.sh --quick: 3 variants x 2 s, output in the build dir)"
if bash "$REPO/scripts/bench-sockmap.sh" --quick; then
  passed=$((passed + 1))
else
  echo "FAIL: scripts/bench-sockmap.sh --quick (see above)"
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
((failed == 0))
