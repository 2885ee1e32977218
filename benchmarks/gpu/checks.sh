#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run, most important first, each stage under its own
# time limit so a slow one cannot starve the rest. Logs and JSON land in OUT_DIR, and a summary
# of the figures is printed at the end (benchmarks/gpu/summary.py).
#
#   bash benchmarks/gpu/checks.sh [OUT_DIR]        (default: benchmarks/results/gpu)
#
# Stages, in this order: env (GPU and versions), tests (pytest -m gpu: precision, switches),
# train (the tutorial's fp16 loop against ddpm_lightning's defaults at fp16), latent (latent
# against pixel training at 256 px with the tutorial's UNet widths, cached latents against
# encoding every step), train_fast (against ddpm_lightning's fast path without compile),
# switches (each speed switch against the defaults, loss curves included), sampling (the four
# samplers at 128 px), batch (batch 128, for MFU), data (ImageDataModule against what training
# consumes), compile (the compiled fast path; last: compiling takes minutes).
# Environment:
#   STAGES="tests train ..."   run only these stages
#   DATA_DIR                   image folder (default: .gpu-data/butterflies from bundle.sh, else
#                              ../shared/data/butterflies)
#   PEAK_TFLOPS                the GPU's dense bf16/fp16 peak, for MFU (default 989: H100/H200)
#   TRAIN_IMAGES_PER_S         training's images/s for the data stage (default: from
#                              train_fast.json of an earlier stage in OUT_DIR)
#   SMOKE=1                    tiny sizes on the CPU: checks this script, measures nothing
#   ARCHIVE=path.tar.gz        after every stage, pack OUT_DIR into this file (for machines
#                              that return only a few files: everything so far comes back)
# Wheels in .whl/ (benchmarks/gpu/bundle.sh) are installed into /tmp/site first, if present
# (not with SMOKE=1: they are for the GPU image's Python 3.12).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
python=${PYTHON:-python3}
[[ -x .venv/bin/python && -z "${PYTHON:-}" && "${SMOKE:-0}" == 1 ]] && python=.venv/bin/python
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${SMOKE:-0}" != 1 ]] && compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  # First on the path: the carried wheels win over older copies in the image (pyarrow, fsspec).
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
data=${DATA_DIR:-}
if [[ -z "$data" ]]; then
  data=.gpu-data/butterflies
  [[ -d "$data" ]] || data=../shared/data/butterflies
fi
peak=${PEAK_TFLOPS:-989}
stages=${STAGES:-env tests train latent train_fast switches sampling batch data compile}

if [[ "${SMOKE:-0}" == 1 ]]; then
  train_preset=(--preset micro --device cpu --warmup-steps 1 --timed-steps 2)
  switch_preset=(--preset micro --device cpu --warmup-steps 1 --timed-steps 2 --sampling-steps 2)
  # fp16 autocast is slow on a CPU: few images, one timing each, to fit the stage's limit.
  sampling_preset=(--preset tiny --device cpu --runs ddpm:4 ddim:2 dpm-solver++:2 unipc:2
    --num-images 4 --repeats 1)
  big_batch=(--batch 32)
  data_size=(--image-size 32)
  # The real autoencoder's architecture at 64 px and a two-level UNet: seconds per variant.
  latent_preset=(--device cpu --image-size 64 --block-out-channels 32 64 --norm-num-groups 8
    --num-images 4 --batch-size 2 --warmup-steps 1 --timed-steps 1)
  tests=(tests/test_precision.py)
else
  train_preset=(--preset tutorial --device cuda --peak-tflops "$peak")
  switch_preset=(--preset tutorial --device cuda --peak-tflops "$peak")
  sampling_preset=(--preset tutorial --device cuda)
  big_batch=(--batch 128)
  data_size=(--image-size 128)
  # The tutorial's UNet widths at 256 px; 2 + 15 steps of 16 are one epoch of bundle.sh's 278
  # photos in full batches.
  latent_preset=(--preset tutorial --device cuda --batch-size 16 --precision bf16-mixed
    --warmup-steps 2 --timed-steps 15)
  tests=(-m gpu tests/test_precision.py tests/test_ddpm_module.py tests/test_latents.py) # the gpu-marked ones
fi

status=()
stage() { # stage NAME SECONDS COMMAND...: run with a time limit, log to OUT, note the outcome
  local name=$1 limit=$2
  shift 2
  [[ " $stages " == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s): $*"
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local code=$?
  tail -n 25 "$out/$name.log"
  status+=("$name: exit $code after $((SECONDS - started)) s")
  echo "=== $name: exit $code after $((SECONDS - started)) s"
  printf '%s\n' "${status[@]}" >"$out/stages.txt"
  [[ -z "${ARCHIVE:-}" ]] || tar -czf "$ARCHIVE" -C "$out" .
}

stage env 30 bash -c "nvidia-smi; $python -c 'import torch, lightning, diffusers, datasets, pyarrow
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), lightning.__version__,
      diffusers.__version__, datasets.__version__, pyarrow.__version__)'"
stage tests 240 "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
# The tutorial's fp16 loop against ddpm_lightning at the same precision and defaults (the cost
# of Lightning and the gain of the data pipeline), then against the fast path without compile.
stage train 150 "$python" benchmarks/train_throughput.py "${train_preset[@]}" --data-dir "$data" \
  --precision fp16 --repeats 2 --output "$out/train_fp16.json"
# Latent diffusion (a random sd-vae-ft-mse) against pixels with the same UNet, each variant in a
# fresh process; the cache's one-off encoding is timed apart.
stage latent 240 "$python" benchmarks/latent_throughput.py "${latent_preset[@]}" --data-dir "$data" \
  --output "$out/latent.json"
stage train_fast 120 "$python" benchmarks/train_throughput.py "${train_preset[@]}" \
  --data-dir "$data" --precision fp16 --lightning-precision bf16 \
  --lightning-switches channels_last tf32 --repeats 2 --output "$out/train_fast.json"
stage switches 240 "$python" benchmarks/speed_switches.py "${switch_preset[@]}" --data-dir "$data" \
  --precision fp16 --repeats 1 --configs defaults channels_last unfused_adamw eager_attention \
  bf16 fp32 tf32 --output "$out/switches.json"
stage sampling 120 "$python" benchmarks/sampling.py "${sampling_preset[@]}" --precision fp16 \
  --output "$out/sampling.json"
stage batch 120 "$python" benchmarks/train_throughput.py "${train_preset[@]}" "${big_batch[@]}" \
  --data-dir "$data" --precision bf16 --variants predecoded --repeats 1 \
  --output "$out/train_batch.json"
# Training's images/s from the train stage: the data must deliver at least ten times that.
consumed=${TRAIN_IMAGES_PER_S:-$("$python" -c "import json, sys
runs = json.load(open('$out/train_fast.json'))['variants']['tutorial-data']
print(runs['ddpm_lightning']['median_images_per_s'])" 2>/dev/null || echo 0)}
stage data 120 "$python" benchmarks/data_throughput.py --data-dir "$data" "${data_size[@]}" \
  --workers 0 4 --train-images-per-s "$consumed" --output "$out/data.json"
stage compile 300 "$python" benchmarks/speed_switches.py "${switch_preset[@]}" --data-dir "$data" \
  --precision fp16 --repeats 1 --configs defaults compile fast --output "$out/compile.json"

echo
cat "$out/stages.txt"
"$python" benchmarks/gpu/summary.py "$out" | tee "$out/summary.md"
[[ -z "${ARCHIVE:-}" ]] || tar -czf "$ARCHIVE" -C "$out" .
