#!/usr/bin/env bash
# Configures (CMake + Ninja, RelWithDebInfo, warnings as errors) and builds everything into
# ${MESHD_BUILD_DIR:-<repo>/build}. Extra arguments go to cmake's configure step
# (e.g. -DMESHD_SANITIZE=ON).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MESHD_BUILD_DIR:-$REPO/build}

cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMESHD_WERROR=ON "$@" >/dev/null
ninja -C "$BUILD" -j"$(nproc)"
