# DeepSpeech2 on MindSpore: every stage runs in the pinned image. `make help` lists the targets.
#
# Variables you may set (make VAR=value ...):
#   RUNS            host folder for data, manifests, feature cache, checkpoints, logs (./runs)
#   PRESET          config preset: small (embedded synthetic corpus) or seed (the report's model)
#   CONFIG          optional YAML file (relative to the checkout) overriding the preset
#   SET             config overrides for every stage, e.g. SET="train.epochs=2 data.synth_train=500"
#   BASE_IMAGE      base for the images (default in .env; falls back to a bootstrapped one)
#   EXTRA_CA_CERTS  PEM file of CA certificates for the image build (default: the host's bundle when
#                   the host trusts extra CAs, as behind a TLS-intercepting proxy)
#   WORKERS         number of data-parallel workers for make train-dist (2)
#   SOURCE, LM      make eval-pretrained: the checkpoint to evaluate, and optionally an ARPA LM (host paths)
#   DOCKER          docker CLI to use

SHELL := /bin/bash
.DEFAULT_GOAL := help
# Stages depend on each other's files: never run them in parallel, even under make -j.
.NOTPARALLEL:

# Image tags, base images and the preset default are set in .env, which Compose reads too.
include .env
DOCKER ?= docker
IMAGE_CPU ?= $(DS2_IMAGE_CPU)
IMAGE_GPU ?= $(DS2_IMAGE_GPU)
# The CPU image plus the benchmark's current-PyTorch peer (make bench only).
IMAGE_BENCH ?= $(IMAGE_CPU)-bench
BASE_IMAGE ?= $(DS2_BASE_IMAGE)
FALLBACK_BASE_IMAGE ?= $(DS2_FALLBACK_BASE_IMAGE)
EXTRA_CA_CERTS ?=
RUNS ?= $(CURDIR)/runs
PRESET ?= $(DS2_PRESET)
CONFIG ?=
SET ?=
WORKERS ?= 2
BENCH ?= --short
HOST_VENV ?= .venv-host
PYTHON ?= python3

export BASE_IMAGE FALLBACK_BASE_IMAGE EXTRA_CA_CERTS DOCKER

# envcheck takes the same preset, file and overrides, so it checks what the stage will run.
CONFIG_ARGS = --preset $(PRESET) $(if $(CONFIG),--config /work/$(CONFIG)) $(foreach s,$(SET),--set $(s))
# The container starts as root and its entrypoint drops to the owner of $(RUNS) (see
# docker/entrypoint.sh), so everything it writes there belongs to you.
RUN_CPU = mkdir -p $(RUNS) && $(DOCKER) run --rm --init --user 0:0 $(MOUNTS) \
	-v $(RUNS):/work/runs $(if $(CONFIG),-v $(CURDIR)/$(CONFIG):/work/$(CONFIG):ro) \
	-e DS2_RUNS_DIR=/work/runs -e DS2_ENVCHECK_ARGS="$(CONFIG_ARGS)" $(if $(TTY),-t) $(IMAGE_CPU)
RUN_GPU = mkdir -p $(RUNS) && $(DOCKER) run --rm --init --user 0:0 --gpus all \
	-v $(RUNS):/work/runs $(if $(CONFIG),-v $(CURDIR)/$(CONFIG):/work/$(CONFIG):ro) \
	-e DS2_RUNS_DIR=/work/runs -e DS2_ENVCHECK_ARGS="$(CONFIG_ARGS)" $(if $(TTY),-t) $(IMAGE_GPU)
# Progress bars when make runs in a terminal.
TTY := $(shell [ -t 1 ] && echo 1)

.PHONY: help base-image image-cpu image-bench image-gpu lock envcheck envcheck-host data preprocess train \
	train-cpu train-gpu train-dist eval lm tune-lm eval-lm eval-pretrained bench test test-unit test-fast \
	test-docs test-integration clean compat-matrix export serve bench-serve fuzz

help: ## list the targets
	@echo "DeepSpeech2 on MindSpore. Start with:  make train-cpu   (whole job on the embedded data)"
	@echo "                                       make test        (unit + integration tests)"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

base-image: ## bootstrap the Python 3.9 bullseye base from Debian packages (hosts with no registry)
	docker/base-image.sh $(FALLBACK_BASE_IMAGE)

image-cpu: ## build the CPU image unless one built from the same inputs exists (base falls back to base-image)
	docker/build-image.sh cpu $(IMAGE_CPU)

image-bench: ## build the bench image: the CPU image plus a current PyTorch (torch-peer.lock) for make bench
	docker/build-image.sh bench $(IMAGE_BENCH)

image-gpu: ## build the GPU image (CPU image + CUDA 11 / cuDNN 8 libraries for MindSpore's GPU plugin)
	docker/build-image.sh gpu $(IMAGE_GPU)

lock: ## regenerate docker/requirements/*.lock from the *.in files (needs uv: pip install uv)
	cd docker/requirements && for flavor in cpu gpu torch-peer; do \
	  uv pip compile $$flavor.in --python-version 3.9 --python-platform x86_64-manylinux_2_28 \
	    --generate-hashes --no-header -q -o $$flavor.lock || exit 1; done
	cd docker/requirements && uv pip compile host.in --universal --python-version 3.9 \
	    --generate-hashes --no-header -q -o host.lock

envcheck: image-cpu ## diagnose the CPU image's environment (python -m envcheck)
	$(RUN_CPU) python -m envcheck $(CONFIG_ARGS)

envcheck-host: $(HOST_VENV) ## diagnose this host: Docker engine, Compose, GPU runtime
	$(HOST_VENV)/bin/python -m envcheck --host

data: image-cpu ## build or download the corpus and write manifests
	$(RUN_CPU) ds2-stage preprocess ds2 preprocess $(CONFIG_ARGS)

preprocess: image-cpu ## corpus + manifests + feature cache (so the first epoch does not wait on features)
	$(RUN_CPU) ds2-stage preprocess ds2 preprocess $(CONFIG_ARGS) --warm-cache

train: image-cpu ## train on CPU (resumes when a checkpoint exists)
	$(RUN_CPU) ds2-stage train ds2 train $(CONFIG_ARGS) --resume

eval: image-cpu ## WER / CER of the best checkpoint on the test split (with its tuned LM if any; SET=decode.lm=none: greedy)
	$(RUN_CPU) ds2-stage eval ds2 eval $(CONFIG_ARGS) --checkpoint best --split test

lm: image-cpu ## build the n-gram LM from the training transcripts (seed preset: download LibriSpeech's official one)
	$(RUN_CPU) ds2-stage preprocess ds2 lm $(CONFIG_ARGS)

tune-lm: image-cpu ## choose the LM weight and word bonus on dev for the best checkpoint; make eval then uses them
	$(RUN_CPU) ds2-stage eval ds2 tune-lm $(CONFIG_ARGS) --checkpoint best

# One container, one envcheck: build the LM, tune it, then the test set greedy and with the tuned LM.
eval-lm: image-cpu ## LM, tuning on dev, then test WER / CER greedy and with the LM, side by side
	$(RUN_CPU) ds2-stage eval sh -c 'ds2 lm $(CONFIG_ARGS) && ds2 tune-lm $(CONFIG_ARGS) --checkpoint best && \
	  ds2 eval $(CONFIG_ARGS) --checkpoint best --split test --no-lm && ds2 eval $(CONFIG_ARGS) --checkpoint best --split test'

# A checkpoint trained elsewhere (deepspeech.pytorch .pth / Lightning .ckpt, MindSpore model zoo, ds2's own),
# converted into RUNS/pretrained/<its name> (once) and evaluated on the test set, greedy and with an LM: LM=FILE, else the one
# `ds2 lm` gets (the seed preset: LibriSpeech's official 3-gram). Only the test split is prepared (LibriSpeech:
# test-clean is downloaded when missing). TUNE=1 also prepares dev and tunes alpha / beta on it; otherwise
# ALPHA / BETA, else ds2's defaults. The model's architecture comes from PRESET / SET (ds2 convert says which
# --set options a source needs).
SOURCE ?=
LM ?=
TUNE ?=
ALPHA ?=
BETA ?=
comma := ,
PRETRAINED_DIR = runs/pretrained/$(basename $(notdir $(SOURCE)))
PRETRAINED_CKPT = $(PRETRAINED_DIR)/checkpoints/step-0000000.ckpt
PRETRAINED_LM = $(if $(LM),/work/pretrained-lm/$(notdir $(LM)),built)
PRETRAINED_ARGS = $(CONFIG_ARGS) --set run_dir=$(PRETRAINED_DIR)
eval-pretrained: MOUNTS = -v $(abspath $(SOURCE)):/work/pretrained/$(notdir $(SOURCE)):ro \
	$(if $(LM),-v $(abspath $(LM)):/work/pretrained-lm/$(notdir $(LM)):ro)
eval-pretrained: image-cpu ## SOURCE=checkpoint [LM=arpa] [TUNE=1]: convert, get test data and LM, WER greedy and with the LM
	@[ -f "$(SOURCE)" ] || { echo "make eval-pretrained: give SOURCE=path/to/checkpoint (no file '$(SOURCE)')" >&2; exit 2; }
	@[ -z "$(LM)" ] || [ -f "$(LM)" ] || { echo "make eval-pretrained: no file LM=$(LM)" >&2; exit 2; }
	$(RUN_CPU) ds2-stage eval sh -c 'set -e; \
	  [ -f $(PRETRAINED_CKPT) ] || ds2 convert $(PRETRAINED_ARGS) /work/pretrained/$(notdir $(SOURCE)); \
	  ds2 preprocess $(PRETRAINED_ARGS) --splits $(if $(TUNE),dev$(comma))test; \
	  $(if $(LM),,ds2 lm $(PRETRAINED_ARGS);) \
	  $(if $(TUNE),ds2 tune-lm $(PRETRAINED_ARGS) --checkpoint $(PRETRAINED_CKPT) --lm $(PRETRAINED_LM);) \
	  ds2 eval $(PRETRAINED_ARGS) --checkpoint $(PRETRAINED_CKPT) --split test --no-lm; \
	  ds2 eval $(PRETRAINED_ARGS) --checkpoint $(PRETRAINED_CKPT) --split test --lm $(PRETRAINED_LM) \
	    $(if $(ALPHA),--alpha $(ALPHA)) $(if $(BETA),--beta $(BETA))'

# Prerequisites run left to right, each once: one image build, then the stages in order. eval-lm adds about
# 20 s to the greedy eval (docs/language-model.md).
train-cpu: image-cpu preprocess train eval-lm ## the whole job on CPU: preprocess, train, eval greedy and with a tuned LM

train-gpu: image-gpu ## the whole job on an NVIDIA GPU (needs the NVIDIA container toolkit)
	$(RUN_GPU) ds2-stage preprocess ds2 preprocess $(CONFIG_ARGS) --warm-cache
	$(RUN_GPU) ds2-stage train ds2 train $(CONFIG_ARGS) --set train.device=GPU --resume
	$(RUN_GPU) ds2-stage eval ds2 eval $(CONFIG_ARGS) --set train.device=GPU --checkpoint best --split test

# Compose starts preprocess, then one scheduler and $(WORKERS) worker containers; the first one to fail
# stops the others (MindSpore's own timeouts end the job too, docs/distributed.md).
train-dist: image-cpu ## data-parallel training on CPU: 1 scheduler + WORKERS workers in containers (resumes)
	mkdir -p $(RUNS) && DS2_RUNS=$(RUNS) DS2_PRESET=$(PRESET) DS2_WORKERS=$(WORKERS) DS2_IMAGE_CPU=$(IMAGE_CPU) \
	  DS2_ARGS="$(foreach s,$(SET),--set $(s))" $(DOCKER) compose --profile train-dist up --no-build \
	  --abort-on-container-failure dist-scheduler dist-worker

bench: image-bench ## training speed, ds2 vs PyTorch 1.7.1 and a current PyTorch (BENCH=--short: ~2 min; BENCH= : full run)
	$(RUN_CPU:$(IMAGE_CPU)=$(IMAGE_BENCH)) ds2-stage train python /opt/ds2/bench/train_speed.py $(BENCH) \
	  --json /work/runs/bench/train_speed.json

export: image-cpu ## the best checkpoint as a MindIR graph beside it (best.mindir + .json), verified against it on test
	$(RUN_CPU) ds2-stage eval ds2 export $(CONFIG_ARGS) --checkpoint best

# The server runs as the image's non-root user with the runs folder read-only, published on this machine
# only (SERVE_ADDRESS=0.0.0.0: every interface); not through ds2-stage, whose eval check wants the runs
# folder writable (the server writes nothing). Ctrl-C lets the requests in flight finish.
SERVE_PORT ?= 8000
SERVE_ADDRESS ?= 127.0.0.1
serve: image-cpu ## serve the best checkpoint: OpenAI's transcription API and a page on http://localhost:SERVE_PORT
	mkdir -p $(RUNS) && $(DOCKER) run --rm --init --user ds2 -p $(SERVE_ADDRESS):$(SERVE_PORT):8000 \
	  -v $(RUNS):/work/runs:ro $(if $(CONFIG),-v $(CURDIR)/$(CONFIG):/work/$(CONFIG):ro) \
	  -e DS2_RUNS_DIR=/work/runs $(if $(TTY),-t) $(IMAGE_CPU) \
	  ds2 serve $(CONFIG_ARGS) --checkpoint best --host 0.0.0.0 --port 8000

# The server and its clients in one container, side by side in one run (docs/serving.md: Benchmark).
BENCH_SERVE ?=
bench-serve: image-cpu ## serving throughput and latency: 16 concurrent clients against one at a time (minutes)
	$(RUN_CPU) ds2-stage eval python /opt/ds2/bench/serve_bench.py $(CONFIG_ARGS) \
	  --json /work/runs/bench/serve_bench.json $(BENCH_SERVE)

# Real installs of mindspore x numpy x numba in throwaway Python 3.9 venvs (uv from host.lock, one wheel
# cache outside the checkout), probed by envcheck; resumes where it stopped. The heat map is drawn in the image.
COMPAT_PYTHON ?= python3.9
COMPAT_CACHE ?= $(HOME)/.cache/ds2-compat
compat-matrix: $(HOST_VENV) image-cpu ## measure which mindspore x numpy x numba work: envcheck/data/compat-matrix.json + .png (~1 h)
	$(HOST_VENV)/bin/python bench/compat_matrix.py --python $(COMPAT_PYTHON) --uv $(HOST_VENV)/bin/uv --cache $(COMPAT_CACHE)
	$(DOCKER) run --rm --user $$(id -u):$$(id -g) -e MPLBACKEND=Agg -v $(CURDIR):/opt/ds2 -w /opt/ds2 $(IMAGE_CPU) \
	  python bench/compat_heatmap.py

# pytest exits 5 when it collected nothing: a test run that tests nothing must not pass.
NO_TESTS_IS_FAILURE = || { status=$$?; [ $$status -eq 5 ] && echo "pytest collected no tests" >&2; exit $$status; }

$(HOST_VENV): docker/requirements/host.lock
	$(PYTHON) -m venv $(HOST_VENV)
	$(HOST_VENV)/bin/pip install -q --require-hashes --no-deps -r docker/requirements/host.lock
	touch $(HOST_VENV)

test-unit: image-cpu ## unit tests, inside the CPU image
	$(DOCKER) run --rm --init -w /opt/ds2 $(IMAGE_CPU) \
	  python -m pytest -p no:cacheprovider -m "not integration" tests $(NO_TESTS_IS_FAILURE)

# The checkout is mounted over the image's copy, so an edit is tested without rebuilding the image.
test-fast: image-cpu ## unit tests without the slow ones, on the checkout as it is (the edit-test loop)
	$(DOCKER) run --rm --init -v $(CURDIR):/opt/ds2 -w /opt/ds2 $(IMAGE_CPU) \
	  python -m pytest -p no:cacheprovider -q -m "not integration and not slow" tests $(NO_TESTS_IS_FAILURE)

# The host venv has only pytest, the Docker SDK and PyYAML: collect only the files written for it.
HOST_TEST_FILES = tests/integration tests/test_envcheck_docker.py

test-integration: image-cpu $(HOST_VENV) ## integration tests: images and stages driven from the host
	DS2_IMAGE=$(IMAGE_CPU) $(HOST_VENV)/bin/python -m pytest -p no:cacheprovider -m integration \
	  $(HOST_TEST_FILES) \
	  $(NO_TESTS_IS_FAILURE)

# The property tests of the readers (tests/property) run a few dozen examples each in test-unit; here each
# searches with fresh random inputs until its share of FUZZ_MINUTES is used (docs/reliability.md: Reading).
FUZZ_MINUTES ?= 30
fuzz: image-cpu ## search every file reader for inputs that break it, for FUZZ_MINUTES minutes (30), in the CPU image
	$(DOCKER) run --rm --init -e DS2_HYPOTHESIS_PROFILE=fuzz -e DS2_FUZZ_SECONDS=$$(( $(FUZZ_MINUTES) * 60 )) \
	  -w /opt/ds2 $(IMAGE_CPU) python -m pytest -p no:cacheprovider -q tests/property $(NO_TESTS_IS_FAILURE)

# The documentation's checks read the checkout (README, docs/, Makefile, Dockerfiles), which the image does not hold.
test-docs: $(HOST_VENV) ## documentation checks on the host: links, paths, targets and commands exist; docs are no image input
	$(HOST_VENV)/bin/python -m pytest -p no:cacheprovider -q tests/test_docs.py $(NO_TESTS_IS_FAILURE)

test: test-unit test-docs test-integration ## all tests: unit tests in the CPU image, the documentation checks, then the integration tests

clean: ## remove run outputs under $(RUNS) (asks first) and the host test venv
	@read -p "Delete everything under $(RUNS)? [y/N] " answer && [ "$$answer" = y ] && \
	  find $(RUNS) -mindepth 1 ! -name .gitkeep -delete || true
	rm -rf $(HOST_VENV)
