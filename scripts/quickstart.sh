#!/usr/bin/env bash
# The README's main job: installs megasnow, then runs the SnowCoder recipe in miniature on this machine's CPU
# (real code -> curation -> tokenizer -> binarized data -> three training phases -> samples + loss-curve PNG).
# Extra arguments go to examples/quickstart.py (e.g. --ci for the reduced setting, --workdir DIR, --fresh,
# --threads N for more training threads on an idle machine). Timing: benchmarks/results/quickstart.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec python3 examples/quickstart.py "$@"
