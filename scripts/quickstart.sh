#!/usr/bin/env bash
# The README's main job: installs megasnow, then runs the SnowCoder recipe in miniature on this machine's CPU
# (real code -> curation -> tokenizer -> binarized data -> three training phases -> samples + loss-curve PNG).
# Extra arguments go to examples/quickstart.py (e.g. --ci for the reduced setting, --workdir DIR, --fresh,
# --threads N for more training threads on an idle machine). Timing: benchmarks/results/quickstart.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Threads (benchmarks/results/annotate_throughput.md, "Threads on a busy machine"): torch may use every core, but
# its OpenMP threads must sleep while they wait. With the default spin-waiting, 2 threads beside a busy neighbour
# scored at 0.58-0.70x the rate of 1 thread (the 14-minute annotator step of issue 11); with PASSIVE, 1.16-1.29x.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec python3 examples/quickstart.py "$@"
