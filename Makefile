# photodedup developer entry points. Everything runs from a project-local virtual environment (.venv)
# that `make install` creates from nothing.
SHELL := /bin/bash
PY_SYS ?= python3
VENV ?= .venv
PYTHON := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
BUF := .cache/npm/node_modules/.bin/buf
DIR ?= $(HOME)/Pictures
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
PROTOS := $(wildcard proto/photodedup/v1/*.proto)

.PHONY: install proto proto-check lint buf-lint buf-breaking test test-gpu test-browser scan serve bench gpu-wheels clean deploy-check image-check image-tools

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PY_SYS) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first, pinned: on this kind of machine pip takes it from local disk.
	$(VENV)/bin/pip install -q $(TORCH_PIN)
	$(VENV)/bin/pip install -q -e '.[server,cpu,dev]'
	touch $@

install: $(VENV)/.installed

$(BUF):
	npm install --silent --no-audit --no-fund --no-save --prefix .cache/npm @bufbuild/buf@1.75.0

# Regenerates the committed stubs; CI fails when this changes them.
proto:
	$(PYTHON) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto $(PROTOS)

proto-check: install
	$(MAKE) proto PYTHON=$(VENV)/bin/python
	git diff --exit-code -- proto/ || (echo "generated stubs are stale: run 'make proto' and commit" >&2; exit 1)

buf-lint: $(BUF)
	$(BUF) lint

# Compares the protos with main's once main has them.
buf-breaking: $(BUF)
	@if git rev-parse -q --verify main >/dev/null && git ls-tree -r --name-only main | grep -q '^proto/.*\.proto$$'; then \
	  $(BUF) breaking --against '.git#branch=main'; else echo "buf breaking: main has no proto yet"; fi

lint: install buf-lint buf-breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install buf-lint buf-breaking proto-check deploy-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q

# Kubernetes manifests and Dockerfiles, offline: render every kustomization, validate the result against
# the Kubernetes schemas (strict: unknown fields fail), lint it with checkov's policies (findings are fixed
# or skipped with a reason in the manifest), lint the Dockerfiles. About 30 s, so part of `make test`.
K8S_TARGETS := base overlays/kind overlays/kind-tls overlays/gpu-queue-metric
K8S_OUT := build/k8s
deploy-check: install
	rm -rf $(K8S_OUT) && mkdir -p $(K8S_OUT)
	for t in $(K8S_TARGETS); do $(VENV)/bin/kubectl kustomize docker/k8s/$$t > $(K8S_OUT)/$${t//\//-}.yaml || exit 1; done
	$(VENV)/bin/kubernetes-validate --strict --quiet $(K8S_OUT)/*.yaml
	BC_SKIP_MAPPING=TRUE $(VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d $(K8S_OUT)
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

# Builds the CPU image from nothing with mmdebstrap + buildah (no Docker, no registry), serves from it and
# calls it with grpcurl, then removes it. Needs root (it installs buildah and mmdebstrap when missing).
# About 8 minutes on two shared cores (docs/BENCHMARKS.md): CI runs it after `make test` (.ci/run), and
# `make test` does not, so a developer's test loop stays short.
image-tools:
	command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || \
	  (apt-get update -q && apt-get install -y -q buildah mmdebstrap)

image-check: install image-tools
	docker/image-check.sh

test-gpu: install
	$(VENV)/bin/python -m pytest -q tests/gpu

# The review app in a real browser: Debian's chromium driven by Playwright (no browser download).
# `make test` runs it too when /usr/bin/chromium exists and skips it otherwise (CI does not install it).
test-browser: install
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium) || \
	  (echo "install Debian's chromium (apt-get install chromium) to run the browser test" >&2; exit 1)
	$(VENV)/bin/python -m pytest -q -rs tests/browser

scan: install
	$(VENV)/bin/photodedup scan "$(DIR)"

serve: install
	$(VENV)/bin/photodedup serve

bench: install
	$(VENV)/bin/pip install -q -e '.[server,cpu,bench]'
	$(VENV)/bin/python benchmarks/run_all.py

# Wheels for benchmarks/gpu_check.sh on an offline GPU machine that has Python 3.12 and torch but not
# open_clip and the serving dependencies. Carry the folder there: benchmarks/gpu_check.sh wheels/
GPU_WHEELS ?= wheels
GPU_PYTHON ?= 3.12
GPU_PLATFORMS := $(foreach p,manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64,--platform $(p))
GPU_DOWNLOAD := $(VENV)/bin/pip download -q --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS)
gpu-wheels: install
	mkdir -p $(GPU_WHEELS)
	$(VENV)/bin/python benchmarks/check_wheels.py --requirements > $(GPU_WHEELS)/requirements.txt
	$(GPU_DOWNLOAD) -r $(GPU_WHEELS)/requirements.txt setuptools wheel ftfy regex huggingface_hub safetensors tqdm pyyaml simplejpeg
	# These require torch, which the GPU machine has: take them without their dependencies.
	$(GPU_DOWNLOAD) --no-deps open_clip_torch timm
	$(VENV)/bin/python benchmarks/check_wheels.py $(GPU_WHEELS) --python-version $(GPU_PYTHON)

clean:
	rm -rf $(VENV) node_modules build *.egg-info
