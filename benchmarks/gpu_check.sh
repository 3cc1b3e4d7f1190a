#!/usr/bin/env bash
# One-shot GPU check: nvidia-smi facts, then for every engine this machine can run (torch with CUDA graphs
# and eager, ONNX Runtime CUDA / TensorRT EP with I/O binding, native TensorRT), ViT-B-32 (random weights,
# no downloads) at batch 1/32/256 in fp32 and fp16: build times, parity against torch fp32 on the CPU,
# nvJPEG against CPU decoding, engine-only and served throughput (served with GPU and with CPU JPEG
# decoding), and all visible GPUs served together when there are several. Finishes within 8 minutes.
#
# Usage: benchmarks/gpu_check.sh [WHEELS_DIR]      (or PHOTODEDUP_WHEELS=DIR)
#   Run from anywhere; needs no network. When photodedup is not importable by $PYTHON, it is installed
#   from this checkout into a venv that sees the system's packages (torch stays the machine's own),
#   taking missing dependencies only from WHEELS_DIR (`make gpu-wheels` fills it; default ./wheels).
#   GPU_CHECK_BUDGET_S (default 450) bounds the whole run: steps that no longer fit print a SKIP line.
#   Every step is guarded: a missing library or a failing runtime prints SKIP and the script goes on.
#   GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU with the tiny model and small batches, to test the
#   harness itself on a machine without a GPU.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${1:-${PHOTODEDUP_WHEELS:-$ROOT/wheels}}"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/photodedup-gpu-check.XXXXXX)"
export PHOTODEDUP_CACHE_DIR="$WORK/cache"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
SECONDS=0
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$WORK/run.log") 2>&1  # the summary at the end reads the run's own output
if [ -n "${GPU_CHECK_DRY_RUN:-}" ]; then
  ARGS=(--device cpu --model photodedup-tiny --batches 1,4)
  PREC=(fp32)
else
  ARGS=(--device cuda:0 --model ViT-B-32 --batches 1,32,256)
  PREC=(fp32 fp16)
fi

say() { printf '\n== %s (t=%ds)\n' "$*" "$SECONDS"; }
left() { echo $((BUDGET - SECONDS)); }

# run_step NEEDED_S TIMEOUT_S DESCRIPTION CMD...: runs CMD when NEEDED_S still fits in the budget.
run_step() {
  local need=$1 limit=$2 what=$3
  shift 3
  if [ "$(left)" -lt "$need" ]; then
    echo "SKIP $what: only $(left) s of the ${BUDGET} s budget left"
    return 0
  fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "SKIP $what: stopped after ${limit} s"; fi
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ]; then echo "SKIP $what: exited with status $rc"; fi
  return 0
}

say "nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit,pstate \
    --format=csv 2>&1 || echo "SKIP nvidia-smi query failed"
  nvidia-smi 2>&1 | head -n 15
else
  echo "SKIP nvidia-smi: not found (no NVIDIA driver here)"
fi

say "python environment"
if ! "$PY" -c 'import photodedup.server.app, photodedup.loadgen.command, open_clip' >/dev/null 2>&1; then
  if [ ! -d "$WHEELS" ]; then
    echo "SKIP everything below: photodedup (or open_clip) is not importable by $PY and there is no wheel folder $WHEELS"
    echo "      fetch one with 'make gpu-wheels' on a machine with network and carry it here"
    exit 1
  fi
  echo "installing photodedup from $ROOT with dependencies from $WHEELS (no network)"
  "$PY" -m venv --system-site-packages "$WORK/venv" || { echo "SKIP everything below: cannot create a venv"; exit 1; }
  if ! "$WORK/venv/bin/pip" install -q --no-index --find-links "$WHEELS" "$ROOT" >"$WORK/pip.log" 2>&1; then
    tail -n 20 "$WORK/pip.log"
    echo "SKIP everything below: the wheel folder does not complete the dependencies (see above)"
    exit 1
  fi
  PY="$WORK/venv/bin/python"
  # Optional: the server's fast JPEG thumbnail decoder.
  "$WORK/venv/bin/pip" install -q --no-index --find-links "$WHEELS" simplejpeg >/dev/null 2>&1 \
    || echo "SKIP simplejpeg: not in $WHEELS; thumbnails decode with Pillow"
fi
"$PY" "$ROOT/benchmarks/gpu_check.py" facts

if [ -z "${GPU_CHECK_DRY_RUN:-}" ] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  echo "SKIP all GPU steps: torch sees no CUDA device here"
  echo "done in ${SECONDS} s"
  exit 0
fi

# Engines to try: torch always; ONNX Runtime with each GPU provider this build has.
CONFIGS=("torch:cuda")
PROVIDERS="$("$PY" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' 2>/dev/null || true)"
if [[ "$PROVIDERS" == *CUDAExecutionProvider* ]]; then CONFIGS+=("onnx:cuda"); else
  echo "SKIP onnx cuda: this onnxruntime has no CUDAExecutionProvider (providers: ${PROVIDERS:-none})"; fi
if [[ "$PROVIDERS" == *TensorrtExecutionProvider* ]]; then CONFIGS+=("onnx:tensorrt"); else
  echo "SKIP onnx tensorrt: this onnxruntime has no TensorrtExecutionProvider"; fi
# Native TensorRT (FP16 only): its wheels are larger than what can be carried here, so it runs only where
# TensorRT is already installed. The engine checks its plan against fp32 (cosine >= 0.999) before serving.
if [ -z "${GPU_CHECK_DRY_RUN:-}" ]; then
  if TRT_VERSION="$("$PY" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null)"; then
    echo "native TensorRT $TRT_VERSION found"; CONFIGS+=("tensorrt:native")
  else
    echo "SKIP native tensorrt: the tensorrt Python package is not installed here (its wheels exceed the carry limit)"
  fi
fi

if ! "$PY" -c 'from torchvision.io import decode_jpeg' >/dev/null 2>&1; then
  echo "SKIP nvJPEG decoding: torchvision is not importable here; served JPEG thumbnails decode on the CPU"
fi

say "engine only (${ARGS[*]}, random weights)"
for cfg in "${CONFIGS[@]}"; do
  engine=${cfg%%:*}; prov=${cfg##*:}
  precs=("${PREC[@]}"); [ "$engine" = "tensorrt" ] && precs=(fp16)
  for prec in "${precs[@]}"; do
    limit=90; [ "$prov" = "tensorrt" ] || [ "$engine" = "tensorrt" ] && limit=240  # TensorRT builds its plan first
    run_step 40 $limit "engine $engine/$prov $prec" \
      "$PY" "$ROOT/benchmarks/gpu_check.py" engine --engine "$engine" --providers "$prov" --precision "$prec" --seconds 4 "${ARGS[@]}"
  done
done

if [ -z "${GPU_CHECK_DRY_RUN:-}" ]; then
  say "torch fp16 without CUDA graphs (eager), to compare"
  run_step 40 90 "engine torch/cuda fp16 eager" \
    "$PY" "$ROOT/benchmarks/gpu_check.py" engine --engine torch --precision fp16 --eager --seconds 4 "${ARGS[@]}"
fi

say "served through EmbedStream (224 px JPEG thumbnails, max batch = batch; ${ARGS[*]})"
for cfg in "${CONFIGS[@]}"; do
  engine=${cfg%%:*}; prov=${cfg##*:}
  precs=("${PREC[@]}"); [ "$engine" = "tensorrt" ] && precs=(fp16)
  for prec in "${precs[@]}"; do
    run_step 60 150 "served $engine/$prov $prec" \
      "$PY" "$ROOT/benchmarks/gpu_check.py" served --engine "$engine" --providers "$prov" --precision "$prec" --seconds 5 "${ARGS[@]}"
  done
done

say "served, JPEG thumbnails decoded on the CPU instead of nvJPEG (torch fp16), to compare"
if [ -z "${GPU_CHECK_DRY_RUN:-}" ]; then
  run_step 60 150 "served torch/cuda fp16 cpu-decode" \
    "$PY" "$ROOT/benchmarks/gpu_check.py" served --engine torch --precision fp16 --cpu-decode --seconds 5 "${ARGS[@]}"
else
  run_step 30 120 "served torch cpu-decode (dry run)" \
    "$PY" "$ROOT/benchmarks/gpu_check.py" served --engine torch --precision fp32 --cpu-decode --seconds 2 "${ARGS[@]}"
fi

GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
if [ "${GPUS:-0}" -gt 1 ]; then
  say "all $GPUS GPUs served together (torch fp16, batch 256)"
  DEVS="$(seq -s, -f 'cuda:%g' 0 $((GPUS - 1)))"
  run_step 60 150 "served torch fp16 on $DEVS" \
    "$PY" "$ROOT/benchmarks/gpu_check.py" served --engine torch --precision fp16 --seconds 5 \
    --device "$DEVS" --model ViT-B-32 --batches 256
else
  echo "SKIP multi-GPU served: ${GPUS:-0} CUDA device(s) here; benchmarks/bench_scheduling.py simulates 1 vs 4"
fi

say "summary"
"$PY" "$ROOT/benchmarks/gpu_check.py" summary "$WORK/run.log"

say "nvidia-smi after the run"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.used,temperature.gpu,clocks.sm --format=csv 2>&1
echo "done in ${SECONDS} s"
