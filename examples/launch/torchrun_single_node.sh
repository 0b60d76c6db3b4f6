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
# Rank 0 writes its exit code here; torchrun itself exits 1 for any failed rank.
MEGASNOW_EXIT_STATUS_FILE=$(mktemp)
export MEGASNOW_EXIT_STATUS_FILE
# torchrun gives the ranks this long to finish their step and save after a signal, then SIGKILLs them (its default,
# 30 s, can be shorter than a step plus a checkpoint save of a large model).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-600}
# Signals: torchrun runs in its own session (setsid), so each one reaches it once, from the traps below, whether it
# was sent to this script alone (kill, a scheduler) or to the terminal's whole process group (Ctrl-C); torchrun
# passes it on to the ranks, which finish the step and save. The script waits until torchrun has exited.
# (python -m megasnow.train.torchrun is torchrun itself, without its Python traceback for a signal or a failed rank.)
TORCHRUN_PID=
STOP_SIGNAL=
stop() {
    STOP_SIGNAL=$1
    if [[ -n $TORCHRUN_PID ]]; then kill -"$1" "$TORCHRUN_PID" 2>/dev/null || true; fi
}
trap 'stop TERM' TERM HUP
trap 'stop INT' INT
cleanup() {  # the status file goes once torchrun (and so every rank) has exited
    if [[ -z $TORCHRUN_PID ]] || ! kill -0 "$TORCHRUN_PID" 2>/dev/null; then rm -f "$MEGASNOW_EXIT_STATUS_FILE"; fi
}
trap cleanup EXIT
setsid python -m megasnow.train.torchrun --standalone --nnodes=1 --nproc-per-node="$NPROC" -m megasnow.train "$@" &
TORCHRUN_PID=$!
if [[ -n $STOP_SIGNAL ]]; then stop "$STOP_SIGNAL"; fi  # a signal that came before torchrun started
rc=0
while true; do  # `wait` returns early when a trap runs: wait again until torchrun has really exited
    wait "$TORCHRUN_PID" && rc=0 || rc=$?
    if ! kill -0 "$TORCHRUN_PID" 2>/dev/null; then
        break
    fi
done
if [[ -s $MEGASNOW_EXIT_STATUS_FILE ]]; then
    rc=$(<"$MEGASNOW_EXIT_STATUS_FILE")
fi
exit "$rc"
