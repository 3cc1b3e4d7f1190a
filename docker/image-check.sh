#!/usr/bin/env bash
# Build the CPU image without a container engine or a registry, start it, and call it:
#   1. export the model to ONNX with the dev environment's torch (the image has none);
#   2. build a Debian base image with mmdebstrap (no registry is needed for base images);
#   3. build docker/Dockerfile.cpu on it with buildah (chroot isolation, vfs storage, as root);
#   4. run `photodedup serve` inside it, wait for SERVING, call GetInfo with grpcurl, check that
#      torch is absent; then remove the container, the images and the storage.
# Usage (repository root, as root): docker/image-check.sh   (`make image-check`)
# BASE_TAR=FILE skips mmdebstrap and uses that root filesystem tarball (for iterating on the Dockerfile).
# IMAGE_ARCHIVE=FILE also saves the image as a docker archive (for `kind load image-archive`).
# KEEP_IMAGE=1 keeps the image in build/image/storage (buildah --root build/image/storage ...).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
MODEL=${IMAGE_MODEL:-photodedup-tiny}
WEIGHTS=${IMAGE_WEIGHTS:-random}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=build/image
TAG=localhost/photodedup:cpu
BASE_TAG=localhost/photodedup-base:$SUITE
BUILDAH=(buildah --root "$PWD/$WORK/storage" --runroot "$PWD/$WORK/run" --storage-driver vfs)

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install buildah mmdebstrap" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "image-check builds a root filesystem: run it as root" >&2; exit 2; }

start=$(date +%s)
load=$(cut -d' ' -f1 /proc/loadavg)
steps=()
step() { steps+=("$(( $(date +%s) - start ))s $*"); echo "== $(( $(date +%s) - start ))s: $*"; }
container=""
server=""
descendants() {  # every process under $1, parents first
  local child
  for child in $(ps -o pid= --ppid "$1"); do echo "$child"; descendants "$child"; done
}
server_pid() {  # the deepest process under $1 running $2 (buildah's own helpers above it carry the command too)
  local pid found=""
  for pid in $(descendants "$1"); do
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2" && found=$pid
  done
  echo "$found"
}
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  [ -n "$container" ] && "${BUILDAH[@]}" rm "$container" >/dev/null 2>&1
  if [ -z "${KEEP_IMAGE:-}" ]; then
    "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$WORK/storage" "$WORK/run"
  fi
}
trap cleanup EXIT

step "export $MODEL ($WEIGHTS) to ONNX"
rm -rf "$WORK/model" && mkdir -p "$WORK"
"$VENV/bin/photodedup" --log-level WARNING export-onnx "$WORK/model/model.onnx" --model "$MODEL" --weights "$WEIGHTS" \
  --cache-dir "$WORK/export-cache"

base_tar=${BASE_TAR:-$WORK/base.tar}
if [ -z "${BASE_TAR:-}" ]; then
  step "Debian $SUITE base with mmdebstrap"
  rm -f "$base_tar"
  # Documentation, manual pages and translations are of no use in a server image.
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$base_tar" "$MIRROR"
fi
step "import the base image"
base=$("${BUILDAH[@]}" from scratch)
"${BUILDAH[@]}" add --quiet "$base" "$base_tar" /
"${BUILDAH[@]}" commit --quiet --rm "$base" "$BASE_TAG" >/dev/null

step "build docker/Dockerfile.cpu"
# The host's CA certificates, read-only, so pip in the build reaches the package index.
"${BUILDAH[@]}" build --quiet --format docker --isolation chroot --layers=false --volume /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg BASE_IMAGE="$BASE_TAG" -f docker/Dockerfile.cpu -t "$TAG" . >/dev/null
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$TAG")
base_size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$BASE_TAG")
echo "image $TAG: $size (base $base_size)"

if [ -n "${IMAGE_ARCHIVE:-}" ]; then  # IMAGE_ARCHIVE=FILE saves the image for `kind load image-archive FILE`
  "${BUILDAH[@]}" push --quiet "$TAG" "docker-archive:$IMAGE_ARCHIVE:photodedup:cpu"
fi

step "run photodedup serve in the image"
container=$("${BUILDAH[@]}" from "$TAG")
if "${BUILDAH[@]}" run --isolation chroot "$container" -- python3 -c "import torch" 2>/dev/null; then
  echo "torch is installed in the CPU image: it must not be" >&2; exit 1
fi
log="$WORK/serve.log"
# chroot isolation shares the host's network: port 0 lets the server pick a free port and log it.
"${BUILDAH[@]}" run --isolation chroot "$container" -- \
  photodedup serve --host 127.0.0.1 --port 0 --metrics-port 0 >"$log" 2>&1 &
server=$!
port=""
for _ in $(seq 300); do
  grep -q "serving photodedup.v1.EmbedService" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "the server exited" >&2; exit 1; }
  sleep 0.5
done
port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$log" | head -1)
[ -n "$port" ] || { cat "$log" >&2; echo "no port in the server's log" >&2; exit 1; }
health=$("$VENV/bin/grpcurl" -plaintext -d '{"service": "photodedup.v1.EmbedService"}' "127.0.0.1:$port" \
  grpc.health.v1.Health/Check)
echo "$health"
grep -q '"SERVING"' <<<"$health" || { echo "not SERVING" >&2; exit 1; }
info=$("$VENV/bin/grpcurl" -plaintext "127.0.0.1:$port" photodedup.v1.EmbedService/GetInfo)
echo "$info" | head -8
grep -q "\"model_name\": \"$MODEL\"" <<<"$info" || { echo "GetInfo names another model" >&2; exit 1; }
# SIGTERM the server itself (buildah answers a signal with SIGKILL): it must drain and exit 0.
pid=$(server_pid "$server" "photodedup serve")
[ -n "$pid" ] || { echo "cannot find the server process" >&2; exit 1; }
kill -TERM "$pid"
wait "$server" || { cat "$log" >&2; echo "the server did not exit 0 on SIGTERM" >&2; exit 1; }
server=""
grep -q "stopped" "$log" || { cat "$log" >&2; echo "no drain in the server's log" >&2; exit 1; }
step "image-check passed"
total=$(( $(date +%s) - start ))
if [ -n "${RECORD:-}" ]; then
  # docs/BENCHMARKS.md keeps the wall time and the sizes, with the machine line every section has.
  "$VENV/bin/python" - "$total" "$size" "$base_size" "$MODEL" "$load" "${steps[@]}" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from record import machine_line, write_section
total, size, base, model, load, *steps = sys.argv[1:]
rows = "\n".join(f"| {s.split(' ', 1)[1]} | {s.split(' ', 1)[0]} |" for s in steps)
write_section("image_check", f"""## CPU image build and run (`make image-check`, `docker/image-check.sh`)
{machine_line()}

Wall time from nothing (no cached base or layers) to a GetInfo answer from the running image, then
cleanup: **{total} s** (1-minute load average at the start: {load}; the cores are shared). Image {size} (Debian base {base}, no torch), serving `{model}` with random weights.
CI runs it after `make test` (`.ci/run`); it is not part of `make test` itself.

| step | starts at |
|---|---|
{rows}
""")
PY
fi
