#!/usr/bin/env bash
# One prepared GPU run (issue 12): build, correctness on the device, kernel / training / annotator / serving
# benchmarks, CPU scaling and a summary against the targets, in at most 9 minutes on one H100/H200 without network.
#
#   bash benchmarks/gpu_suite.sh              # on the GPU machine (outputs in $OUT, default out/gpu_suite)
#   bash benchmarks/gpu_suite.sh --dry-run    # the same steps on CPU at the smallest sizes (CI runs this)
#   bash benchmarks/gpu_suite.sh --list       # the plan: tasks, time caps, commands
#
# Wheels it cannot download there come from .whl/ (scripts/prepare_gpu_wheels.sh). Documentation, budget per step
# and what each summary row means: benchmarks/results/gpu_suite.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu.suite "$@"
