#!/usr/bin/env bash
# Train on one node with torchrun: one process per GPU (NCCL), or CPU processes joined by gloo.
#
#   examples/launch/torchrun_single_node.sh CONFIG.yaml [key.sub=value ...]
#
#   NPROC      processes on this node (default: the number of GPUs, else 2 CPU processes)
#   e.g. NPROC=8 examples/launch/torchrun_single_node.sh run.yaml parallel.tensor=2 parallel.pipeline=2
#        -> 8 ranks = tensor 2 x pipeline 2 x data 2 (data = NPROC / (tensor x pipeline)).
# The config and layout are checked for NPROC processes first, in one process (one `error:` line, exit 2).
# A rank that fails makes torchrun stop the others (torchrun then prints its own report); the trainer resumes from
# checkpoint.dir/latest on rerun. Exit code: the trainer's (0 done or SIGTERM after saving, 1 a rank lost contact
# or crashed, 2 a user error, 3 stopped on non-finite steps, 130 Ctrl-C after saving), else torchrun's.
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 CONFIG.yaml [key.sub=value ...]" >&2
    exit 2
fi
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
# One CPU thread per rank unless told otherwise (torchrun would warn and pick 1 anyway).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m megasnow.train --check "$NPROC" "$@"
# Rank 0 writes its exit code here; torchrun itself exits 1 for any failed rank.
MEGASNOW_EXIT_STATUS_FILE=$(mktemp)
export MEGASNOW_EXIT_STATUS_FILE
trap 'rm -f "$MEGASNOW_EXIT_STATUS_FILE"' EXIT
rc=0
torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC" -m megasnow.train "$@" || rc=$?
if [[ -s $MEGASNOW_EXIT_STATUS_FILE ]]; then
    rc=$(<"$MEGASNOW_EXIT_STATUS_FILE")
fi
exit "$rc"
