#!/usr/bin/env bash
# Train on one node with torchrun: one process per GPU (NCCL), or CPU processes joined by gloo.
#
#   examples/launch/torchrun_single_node.sh CONFIG.yaml [key.sub=value ...]
#
#   NPROC      processes on this node (default: the number of GPUs, else 2 CPU processes)
#   e.g. NPROC=8 examples/launch/torchrun_single_node.sh run.yaml parallel.tensor=2 parallel.pipeline=2
#        -> 8 ranks = tensor 2 x pipeline 2 x data 2 (data = NPROC / (tensor x pipeline)).
# A rank that fails makes torchrun stop the others; the trainer resumes from checkpoint.dir/latest on rerun.
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 CONFIG.yaml [key.sub=value ...]" >&2
    exit 2
fi
CONFIG=$1
shift
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
# One CPU thread per rank unless told otherwise (torchrun would warn and pick 1 anyway).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC" -m megasnow.train "$CONFIG" "$@"
