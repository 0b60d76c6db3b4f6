#!/usr/bin/env bash
# Times the install step of `bash scripts/test.sh` (issue 11 §2): the install.sh before the change (git cb72b83,
# which ran pip and the C++ build every time) against the current one, first run and rerun, each in a fresh venv
# that sees this machine's packages (--system-site-packages: requirements are present, megasnow is not installed
# there), so the first run installs megasnow and builds the extensions but downloads nothing.
# Results: benchmarks/results/quickstart.md, "Test command".
#   bash benchmarks/test_command_time.sh
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/test_command_time.XXXX)
log=$work/log
git show cb72b83:scripts/install.sh > scripts/.install_before.sh
trap 'rm -f scripts/.install_before.sh' EXIT
for v in before after; do python3 -m venv --system-site-packages --without-pip "$work/venv-$v"; done
t() {  # t LABEL COMMAND...: wall seconds and the 1-minute load average
  local s e
  s=$(date +%s.%N); "${@:2}" >>"$log" 2>&1; local rc=$?; e=$(date +%s.%N)
  printf '| %s | %.1f | %s | %s |\n' "$1" "$(echo "$e - $s" | bc)" "$rc" "$(cut -d' ' -f1 /proc/loadavg)"
}
echo "| step | seconds | exit | load (1 min) |"
echo "|---|---:|---:|---:|"
t "before: install.sh, 1st run" env PYTHON="$work/venv-before/bin/python" bash scripts/.install_before.sh
t "before: install.sh, rerun (nothing changed)" env PYTHON="$work/venv-before/bin/python" bash scripts/.install_before.sh
rm -rf build/install-stamps
t "after: install.sh, 1st run (no stamp)" env PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
t "after: install.sh, rerun (nothing changed)" env PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
t "after: test.sh rerun, to the end of pytest's collection" env PYTHON="$work/venv-after/bin/python" \
  bash scripts/test.sh --collect-only -q tests/test_config.py
touch csrc/minhash.cpp
t "after: rerun after touching csrc/minhash.cpp (same content)" env PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
echo "// changed" >> csrc/minhash.cpp
t "after: rerun after changing csrc/minhash.cpp (rebuild)" env PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
git checkout -q csrc/minhash.cpp
t "after: rerun after reverting it (rebuild)" env PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
t "after: FORCE_INSTALL=1 (pip resolver + editable install + build)" \
  env FORCE_INSTALL=1 PYTHON="$work/venv-after/bin/python" bash scripts/install.sh
rm -rf "$work"
