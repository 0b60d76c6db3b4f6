#!/usr/bin/env bash
# Installs what the tests need (a rerun with nothing changed skips it in seconds; see install.sh), then runs the
# whole test suite on CPU (Triton in interpreter mode). Extra arguments go to pytest. Under CI (CI=true) a
# missing anchor (a reference implementation a test compares against) fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/install.sh
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
exec $PY -m pytest -q tests "$@"
