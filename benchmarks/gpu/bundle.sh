#!/usr/bin/env bash
# Prepare what a GPU machine without internet needs for benchmarks/gpu/checks.sh:
#   .whl/                      wheels of the packages its image lacks (Python 3.12, x86_64)
#   .gpu-data/butterflies/     every third butterfly photo (all ten species), read by path
# Both folders are git-ignored: they travel with the working tree, never into a commit.
# Sized so that they and the tree stay under 64 MiB (the device tool's limit): the pyarrow
# wheel alone is 49 MB. Pass --no-pyarrow where the GPU image already has pyarrow >= 24.
#
#   bash benchmarks/gpu/bundle.sh [--no-pyarrow]
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
data_dir=${DATA_DIR:-../shared/data/butterflies}

# Exact versions of what the tests and benchmarks were run with here, where the GPU image
# (torch, lightning, torchvision, torchmetrics, tensorboard, accelerate, huggingface-hub,
# safetensors, pandas, xxhash, fsspec ...) has none or one that datasets refuses.
version() { "$python" -c "from importlib.metadata import version; print(version('$1'))"; }
packages=(
  "diffusers==$(version diffusers)"
  "datasets==$(version datasets)"
  "dill==$(version dill)"
  "multiprocess==$(version multiprocess)"
  "fsspec==$(version fsspec)"
  "importlib_metadata==$(version importlib_metadata)"
  "lazy-importer==$(version lazy-importer)" # importlib_metadata imports it before Python 3.15
  "torch-fidelity==$(version torch-fidelity)"
)
if [[ "${1:-}" != "--no-pyarrow" ]]; then
  packages+=("pyarrow==24.0.0") # the oldest that datasets 5 takes: the smallest wheel
fi

rm -rf .whl && mkdir -p .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${packages[@]}"

rm -rf .gpu-data && mkdir -p .gpu-data/butterflies
find "$data_dir" -maxdepth 1 -name '*.jpg' | sort | awk 'NR % 3 == 1' |
  xargs -I{} cp {} .gpu-data/butterflies/

echo "wheels: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"
echo "images: $(ls .gpu-data/butterflies | wc -l) files, $(du -sh .gpu-data | cut -f1)"
echo "tree that travels: about $(($(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) / 1048576 + $(du -sb .whl .gpu-data | awk '{s+=$1} END {print int(s / 1048576)}'))) MiB of 64"
