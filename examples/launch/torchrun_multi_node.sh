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
# The trainer's exit code (this node's local rank 0 writes it), signals passed on once, and the wait:
# examples/launch/run_and_wait.sh. (python -m megasnow.train.torchrun is torchrun without its Python traceback.)
source "$(dirname "${BASH_SOURCE[0]}")/run_and_wait.sh"
run_and_wait setsid python -m megasnow.train.torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC" \
    --rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-megasnow}" \
    --max-restarts=0 -m megasnow.train "$@"
