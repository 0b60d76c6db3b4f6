#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite on CPU (Triton in interpreter mode).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
python3 -m pytest -q tests "$@"
