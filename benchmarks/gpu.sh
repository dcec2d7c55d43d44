#!/usr/bin/env bash
# The GPU check (benchmarks/gpu.py) on a machine with CUDA PyTorch on Python 3.12 and no package
# index: everything else it needs travels in .gpu/ (git-ignored).
#
#   bash benchmarks/gpu.sh prepare     # here, with pip's index and ../shared: wheels + images into .gpu/
#   bash benchmarks/gpu.sh run [args]  # there: install the wheels into /tmp/site, run the check
#
# `run` writes results.json, results.md and infer.txt into $OUT (or gpu-results/); extra args go to gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu
SHARED=${PERCEPT_SHARED:-../shared}

# What training/ and the evaluation code import beyond a stock CUDA PyTorch image (which has
# numpy, scipy, Pillow, PyYAML, tqdm, opencv-python-headless, typing-extensions), at the
# versions constraints.txt locks. webdataset: the stream figure reads shards as training does.
PACKAGES="pydantic pydantic_core annotated-types typing-inspection albumentations albucore simsimd stringzilla webdataset braceexpand"

prepare() {
  rm -rf "$GPU" && mkdir -p "$GPU/wheels" "$GPU/datasets" "$GPU/weights"
  local pins=()
  for p in $PACKAGES; do pins+=("$(grep -i "^${p//[-_]/[-_]}==" constraints.txt)"); done
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$GPU/wheels" "${pins[@]}"
  for set in T91 Set5 Set14; do cp -r "$SHARED/datasets/$set" "$GPU/datasets/"; done
  mkdir -p "$GPU/datasets/styles"
  for style in $(grep -o 'styles/[A-Za-z0-9_.-]*' params.yaml | sort -u); do cp "$SHARED/datasets/$style" "$GPU/datasets/styles/"; done
  cp "$SHARED"/weights/*.pth "$GPU/weights/"
  du -sh "$GPU"
}

run() {
  python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU"/wheels/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 benchmarks/gpu.py --datasets "$GPU/datasets" --weights "$GPU/weights" --out "${OUT:-gpu-results}" "$@"
  # The style net at 1024², per path (compile left out: its autotuning alone may take minutes); the aim: < 2 ms.
  timeout 90 python3 benchmarks/infer.py --device cuda --sizes 1024 --nets style --repeats 5 --no-tiling \
    --paths eager,channels_last,bf16,bf16+channels_last \
    | tee "${OUT:-gpu-results}/infer.txt" || echo "infer.py did not finish (exit $?)"
}

case "${1:-run}" in
  prepare) prepare ;;
  run) shift || true; run "$@" ;;
  *) echo "usage: $0 prepare | run [gpu.py args]" >&2; exit 2 ;;
esac
