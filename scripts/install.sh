#!/usr/bin/env bash
# Installs megasnow and everything it needs into the current Python: torch (the CPU wheel where
# no NVIDIA GPU is present), the core requirements, the test requirements, and the C++ extensions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PY -m pip install -q torch
  else
    $PY -m pip install -q torch==2.13.0
  fi
fi
$PY -m pip install -q -r requirements.txt -r requirements-test.txt
# Reference tools the benchmarks and compatibility tests compare against; optional, so never fatal.
$PY -m pip install -q megatron-core datatrove 2>/dev/null || echo "note: megatron-core/datatrove not installed; their comparisons are skipped"
$PY -m pip install -q --no-build-isolation -e .
