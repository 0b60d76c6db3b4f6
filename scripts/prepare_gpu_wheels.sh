#!/usr/bin/env bash
# Fills .whl/ (git-ignored) on a machine WITH network for the GPU machine WITHOUT it (benchmarks/gpu_suite.sh):
# the wheels the GPU suite needs that the GPU image lacks (Python 3.12, x86-64), Megatron-LM's own source for its
# tools/preprocess_data.py, and the annotator encoder's config + tokenizer (its 87 MB of weights cannot travel).
# About 6.3 MB in all; the whole carried tree (tracked files + .whl) must stay under 64 MiB: checked at the end.
#
#   bash scripts/prepare_gpu_wheels.sh                      # Megatron-LM cloned from GitHub (tag below)
#   MEGATRON_LM_DIR=/path/to/Megatron-LM bash scripts/prepare_gpu_wheels.sh   # or archived from a local checkout
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=${PYTHON:-python3}
MEGATRON_TAG=${MEGATRON_TAG:-core_v0.16.1}
# The suite treats as carried exactly what is in this folder (its dry run: benchmarks/gpu/image_sim/modules.py), and
# step 5 names these wheels when they are missing (SERVE_REQUIRES in benchmarks/gpu/plan.py: keep it in step).
# Exact versions: one version of each, no resolver on the GPU machine. pydantic (+ core, annotated-types) serves
# FastAPI and Megatron-LM's import chain (megatron.rl); 2.10 needs typing-extensions >= 4.12.2, which the image's
# torch 2.11 already requires.
# fastapi/starlette/uvicorn serve megasnow.serve (step 5) and openai (+ jiter, distro, sniffio) is its client: versions
# that need nothing newer than the image's anyio/httpx/h11/click (checked: tests/serve and tests/synth's server tests
# pass with exactly these).
WHEELS=(liger-kernel==0.8.5 pydantic==2.10.6 pydantic-core==2.27.2 annotated-types==0.7.0
        fastapi==0.115.6 starlette==0.41.3 uvicorn==0.32.1 openai==1.59.7 jiter==0.8.2 distro==1.9.0 sniffio==1.3.1)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST"/megatron-lm-*.tar.gz "$DEST"/megasnow-ext-*.tar.gz
echo "downloading ${#WHEELS[@]} wheels for CPython 3.12 / manylinux x86-64 into $DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "${WHEELS[@]}"

# Megatron-LM's tools/preprocess_data.py and the megatron/ package it imports (BSD-3-Clause, NVIDIA), never
# committed here: it only travels in .whl/ for the CPU-scaling comparison.
archive="$DEST/megatron-lm-$MEGATRON_TAG.tar.gz"
src=${MEGATRON_LM_DIR:-}
tmp=""
if [ -z "$src" ]; then
  tmp=$(mktemp -d)
  if git clone -q --depth 1 --branch "$MEGATRON_TAG" https://github.com/NVIDIA/Megatron-LM.git "$tmp/Megatron-LM" 2>/dev/null; then
    src="$tmp/Megatron-LM"
  fi
fi
if [ -n "$src" ] && git -C "$src" rev-parse -q --verify "$MEGATRON_TAG^{commit}" >/dev/null; then
  git -C "$src" archive --format=tar "$MEGATRON_TAG" megatron tools/preprocess_data.py LICENSE | gzip -9 > "$archive"
  echo "Megatron-LM $MEGATRON_TAG source -> $archive"
else
  echo "warning: no Megatron-LM checkout with tag $MEGATRON_TAG (set MEGATRON_LM_DIR); its preprocess_data.py row will be NOT RUN" >&2
fi
[ -n "$tmp" ] && rm -rf "$tmp"

# A fallback for the C++ extension, should the GPU machine fail to build it (no Python.h, say): the three modules
# compiled here for CPython 3.12 (x86-64, this machine's glibc, which must not be newer than the GPU image's).
PY312=${PY312:-python3.12}
if "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && [ "$(uname -m)" = x86_64 ]; then
  inc312=$("$PY312" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  suffix=$("$PY312" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  pyb=$("$PY" -c "import pybind11; print(pybind11.get_include())")
  ext=$(mktemp -d)
  for src in csrc/*.cpp; do
    name=$(basename "$src" .cpp)
    g++ -O3 -shared -fPIC -std=c++17 -fvisibility=hidden -Icsrc -I"$pyb" -I"$inc312" "$src" -o "$ext/_$name$suffix" -lpthread &
  done
  wait
  (cd "$ext" && tar -czf - _*.so) > "$DEST/megasnow-ext-cp312-x86_64.tar.gz"
  rm -rf "$ext"
  echo "prebuilt C++ extension for CPython 3.12 (fallback) -> $DEST/megasnow-ext-cp312-x86_64.tar.gz"
else
  echo "note: no python3.12 here (set PY312): no prebuilt fallback for the C++ extension; the GPU machine builds it"
fi

# the annotator encoder without weights (the suite scores with random weights of the same architecture)
"$PY" -m benchmarks.gpu.encoder_skeleton "$DEST/encoder-minilm"

echo
ls -la "$DEST"
wheels_bytes=$(du -sb "$DEST" | cut -f1)
tree_bytes=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked_bytes=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
total=$(( wheels_bytes + tree_bytes + ${untracked_bytes:-0} ))
echo "$DEST: $(( wheels_bytes / 1024 )) KiB; carried tree with it: $(( total / 1048576 )) MiB (limit 64 MiB)"
if [ "$total" -ge $(( 64 * 1048576 )) ]; then
  echo "error: the carried tree would be $(( total / 1048576 )) MiB, over the device tool's 64 MiB" >&2
  exit 2
fi
echo "run on the GPU machine with carry [\".whl\"]: bash benchmarks/gpu_suite.sh"
