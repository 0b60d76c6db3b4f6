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
# checkpoint.dir/latest on rerun. SIGTERM or SIGHUP to this script (a scheduler, `kill PID`) or Ctrl-C reach torchrun
# and the ranks once: they finish the step, save and exit, and the script exits after them. Exit code: the trainer's
# (0 done or SIGTERM after saving, 1 a rank lost contact or crashed, 2 a user error, 3 stopped on non-finite steps,
# 130 Ctrl-C after saving), else torchrun's.
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
# The trainer's exit code, signals passed on once, and the wait: examples/launch/run_and_wait.sh.
# (python -m megasnow.train.torchrun is torchrun itself, without its Python traceback for a signal or a failed rank.)
source "$(dirname "${BASH_SOURCE[0]}")/run_and_wait.sh"
run_and_wait setsid python -m megasnow.train.torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC" \
    -m megasnow.train "$@"
