#!/usr/bin/env bash
# Train on several nodes with torchrun and the c10d rendezvous: run this same command on every node.
#
#   NNODES=4 RDZV_ENDPOINT=node001:29500 examples/launch/torchrun_multi_node.sh CONFIG.yaml [key.sub=value ...]
#
#   NNODES         number of nodes (required)
#   RDZV_ENDPOINT  host:port reachable from every node, normally the first node (required)
#   RDZV_ID        job id shared by all nodes of this run (default: megasnow)
#   NPROC          processes per node (default: the number of GPUs on this node, else 2 CPU processes, as
#                  torchrun_single_node.sh)
# World size = NNODES x NPROC = tensor x pipeline x data. Tensor ranks are adjacent (keep tensor <= NPROC so
# tensor-parallel traffic stays inside a node). Set NCCL_SOCKET_IFNAME / NCCL_IB_HCA for your fabric if needed.
# The config and layout are checked for NNODES x NPROC processes first (one `error:` line, exit 2). Signals and exit
# code as torchrun_single_node.sh (the exit code is the trainer's on this node, else torchrun's).
set -euo pipefail
if [[ $# -lt 1 || -z "${NNODES:-}" || -z "${RDZV_ENDPOINT:-}" ]]; then
    echo "usage: NNODES=N RDZV_ENDPOINT=host:port $0 CONFIG.yaml [key.sub=value ...]" >&2
    exit 2
fi
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m megasnow.train --check "$((NNODES * NPROC))" "$@"
# Rank 0 writes its exit code here (this node's local rank 0); torchrun itself exits 1 for any failed rank.
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
setsid python -m megasnow.train.torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC" \
    --rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-megasnow}" \
    --max-restarts=0 -m megasnow.train "$@" &
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
