#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang++, ASan + UBSan, coverage-instrumented
# parsers) in ${MESHD_FUZZ_BUILD_DIR:-<repo>/build-fuzz} and runs each for SECONDS (default
# 30) on a fresh copy of its seed corpus. Exits non-zero when a target crashes, leaks, hangs
# (>5 s on one input) or exceeds 2 GB, and prints where the reproducer is and how to rerun it.
#   scripts/fuzz.sh [SECONDS]        e.g. scripts/fuzz.sh 60
# MESHD_FUZZ_SEED=N fixes libFuzzer's seed (scripts/test.sh does so under CI, so a CI run
# is a reproducible regression check; exploratory runs keep libFuzzer's random seed).
# Needs clang++ and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev; scripts/setup.sh).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MESHD_FUZZ_BUILD_DIR:-$REPO/build-fuzz}
SECONDS_PER_TARGET=${1:-30}
TARGETS=(resources_fuzz http_head_fuzz http1_fuzz http2_fuzz spiffe_fuzz)

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET == 0)); then
  echo "usage: $0 [SECONDS per target, default 30]" >&2
  exit 2
fi
if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found: run scripts/setup.sh (Debian package clang)" >&2
  exit 1
fi

echo "==> configure $BUILD (clang++, MESHD_FUZZ=ON)"
# MESHD_SANITIZE=ON too, so anything else built in this dir links with the same runtimes.
cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DMESHD_FUZZ=ON -DMESHD_SANITIZE=ON -DMESHD_WERROR=ON >/dev/null
echo "==> build ${TARGETS[*]}"
ninja -C "$BUILD" -j"$(nproc)" "${TARGETS[@]}"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}

failed=()
for t in "${TARGETS[@]}"; do
  run=$BUILD/fuzz-run/$t
  rm -rf "$run"
  mkdir -p "$run/corpus" "$run/artifacts"
  cp "$REPO/tests/fuzz/corpus/$t/"* "$run/corpus/"
  echo "==> $t for ${SECONDS_PER_TARGET}s (log: $run/fuzz.log)"
  rc=0
  "$BUILD/tests/fuzz/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=5 -rss_limit_mb=2048 \
    ${MESHD_FUZZ_SEED:+-seed="$MESHD_FUZZ_SEED"} \
    -print_final_stats=1 -artifact_prefix="$run/artifacts/" "$run/corpus" >"$run/fuzz.log" 2>&1 ||
    rc=$?
  # The last status line ("#N DONE cov: C ft: F corp: ...") and the run's totals.
  grep -E '^#[0-9]+' "$run/fuzz.log" | tail -1 || true
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$run/fuzz.log" || true
  artifacts=$(find "$run/artifacts" -type f | sort)
  if ((rc != 0)) || [[ -n $artifacts ]]; then
    failed+=("$t")
    echo "fuzz.sh: $t FAILED (exit $rc); the report is in $run/fuzz.log:" >&2
    grep -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error|SUMMARY' \
      "$run/fuzz.log" | head -5 >&2 || true
    for a in $artifacts; do
      echo "  reproducer: $a" >&2
      echo "  rerun:      $BUILD/tests/fuzz/$t $a" >&2
    done
    echo "  (after fixing, add the reproducer to tests/fuzz/corpus/$t/ so the corpus test keeps it fixed)" >&2
  fi
done

if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${TARGETS[*]}: no crash, leak or hang in ${SECONDS_PER_TARGET}s each"
