#!/usr/bin/env bash
# Times the quickstart after the install (what `bash scripts/quickstart.sh` runs once scripts/install.sh is done),
# idle or beside a CPU-bound neighbour, and reports its longest silence (benchmarks/log_gaps.py).
#   bash benchmarks/quickstart_time.sh idle   OUTDIR
#   bash benchmarks/quickstart_time.sh loaded OUTDIR     # neighbour: python -c 'while True: pass' for the whole run
# OUTDIR gets run.tsv (timestamped output), time.txt (/usr/bin/time -v), load.txt (uptime before/after) and the
# quickstart's workdir (work/). Results: benchmarks/results/quickstart.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?idle or loaded}
out=$(mkdir -p "${2:?OUTDIR}" && cd "$2" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # as scripts/quickstart.sh
export HF_HUB_OFFLINE=1
neighbour=
if [ "$mode" = loaded ]; then
  python3 -c 'while True: pass' &
  neighbour=$!
  trap 'kill $neighbour 2>/dev/null || true' EXIT
elif [ "$mode" != idle ]; then
  echo "error: mode must be idle or loaded, got '$mode'" >&2; exit 2
fi
echo "before: $(uptime)" > "$out/load.txt"
/usr/bin/time -v -o "$out/time.txt" python3 benchmarks/log_gaps.py --log "$out/run.tsv" -- \
  python3 examples/quickstart.py --workdir "$out/work" --fresh > "$out/run.out" 2>&1
echo "after:  $(uptime)" >> "$out/load.txt"
cat "$out/load.txt"
grep -E "Elapsed|Maximum resident|User time|System time" "$out/time.txt"
grep -E "^stage times|^total time|^phase 3|^HumanEval" "$out/run.out"
python3 benchmarks/log_gaps.py --read "$out/run.tsv" --top 3
