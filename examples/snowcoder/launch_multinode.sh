#!/usr/bin/env bash
# Train Arctic-SnowCoder-1.3B through its three phases on several nodes of 8 GPUs (torchrun, c10d rendezvous).
#
# Plain nodes: run the same command on every node, e.g. on 8 nodes with node 0 at 10.0.0.1:
#   NNODES=8 MASTER_ADDR=10.0.0.1 bash examples/snowcoder/launch_multinode.sh [key=value overrides ...]
# Slurm: `sbatch --nodes=8 --gpus-per-node=8 --ntasks-per-node=1 examples/snowcoder/launch_multinode.sh`
#   (NNODES and MASTER_ADDR come from the allocation). Slurm's SIGTERM before preemption makes megasnow save a
#   checkpoint and exit cleanly; resubmitting the same job resumes exactly from <checkpoint.dir>/latest.
#SBATCH --job-name=snowcoder-1.3b
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ ! -f $ROOT/examples/launch/run_and_wait.sh && -n ${SLURM_SUBMIT_DIR:-} ]]; then
  ROOT=$SLURM_SUBMIT_DIR  # sbatch runs a copy of this script from its spool folder: submit from the repository root
fi
cd "$ROOT"
CONFIG=${CONFIG:-examples/snowcoder/snowcoder-1.3b.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
  NNODES=${SLURM_NNODES}
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
  LAUNCH=(srun --kill-on-bad-exit=1 --ntasks-per-node=1)
else
  NNODES=${NNODES:-1}
  MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
  LAUNCH=()
fi
MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export NCCL_ASYNC_ERROR_HANDLING=1
python -m megasnow.train --check "$((NNODES * GPUS_PER_NODE))" "$CONFIG" "$@"  # one `error:` line, exit 2
# 512 sequences per step over NNODES x 8 GPUs: gradient accumulation fills the rest (64 GPUs -> 8 micro-batches).
# The launcher runs in its own session and SIGTERM/SIGHUP/Ctrl-C reach it once; the script waits for it and exits
# with the trainer's code (examples/launch/run_and_wait.sh; megasnow.train.torchrun is torchrun without its traceback).
source examples/launch/run_and_wait.sh
run_and_wait setsid ${LAUNCH[@]+"${LAUNCH[@]}"} python -m megasnow.train.torchrun \
  --nnodes="$NNODES" --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="${SLURM_JOB_ID:-snowcoder}" \
  --max_restarts=0 \
  -m megasnow.train "$CONFIG" "$@"
