# DeepSpeech2 on MindSpore: every stage runs in the pinned image. `make help` lists the targets.
#
# Variables you may set (make VAR=value ...):
#   RUNS            host folder for data, manifests, feature cache, checkpoints, logs (./runs)
#   PRESET          config preset: small (embedded synthetic corpus) or seed (the report's model)
#   CONFIG          optional YAML file overriding the preset (a relative path is relative to the checkout)
#   SET             config overrides for every stage, e.g. SET="train.epochs=2 data.synth_train=500"
#   BASE_IMAGE      base for the images (default in .env; falls back to a bootstrapped one)
#   EXTRA_CA_CERTS  PEM file of CA certificates for the image build (default: the host's bundle when
#                   the host trusts extra CAs, as behind a TLS-intercepting proxy)
#   WORKERS         number of data-parallel workers for make train-dist (2)
#   SOURCE, LM      make eval-pretrained: the checkpoint to evaluate, and optionally an ARPA LM (host paths)
#   DOCKER          docker CLI to use
# RUNS, CONFIG, SOURCE and LM are taken as typed: spaces, quotes, '$', any character but a line break.

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

# Paths are taken as typed. make expands a '$' in a value given on its command line or in the environment
# (and exports it so, running any $(shell ...) in it): these four are read unexpanded and never exported.
unexport RUNS CONFIG SOURCE LM
literal = $(if $(filter command environment,$(firstword $(origin $1))),$(value $1),$($1))
# $(call sh_word,TEXT): TEXT as one word for the recipe's shell, whatever it holds.
sh_word = '$(subst ','\'',$1)'
# $(call absolute,PATH): Docker mounts take absolute paths; a relative one is relative to the checkout.
absolute = $(if $(filter /%,$(firstword $1)),$1,$(CURDIR)/$1)
# $(call file_name,PATH): its last part (notdir would split it at spaces).
file_name = $(shell basename -- $(call sh_word,$1))
# $(call mount,HOST PATH,CONTAINER PATH[,ro]): a bind mount as one shell word. --mount, not -v, which splits
# at ':'; --mount reads its value as CSV, so each path is a CSV field in quotes ("" for ").
mount = --mount $(call sh_word,type=bind$(comma)"source=$(subst ","",$(call absolute,$1))"$(comma)"target=$(subst ","",$2)"$(if $3,$(comma)readonly))
comma := ,
define newline


endef
RUNS_PATH = $(call absolute,$(call literal,RUNS))
CONFIG_PATH = $(call literal,CONFIG)
SOURCE_PATH = $(call literal,SOURCE)
LM_PATH = $(call literal,LM)
# Where the container sees CONFIG, SOURCE and LM: their own file names (ds2 lm reads .arpa.gz by its name).
CONFIG_IN_CONTAINER = /work/config/$(call file_name,$(CONFIG_PATH))
SOURCE_IN_CONTAINER = /work/pretrained/$(call file_name,$(SOURCE_PATH))
LM_IN_CONTAINER = /work/pretrained-lm/$(call file_name,$(LM_PATH))

# Every stage runs as `ds2-stage STAGE` in a container: the image's docker/run-stage.sh holds each stage's
# command line and runs envcheck for it first; Compose calls the same. The run's configuration goes in
# the environment: DS2_PRESET, DS2_CONFIG (the file as the container sees it) and DS2_ARGS.
SET_ARGS = $(foreach s,$(SET),--set $(s))
# $(call docker_run,IMAGE,DOCKER OPTIONS[,ro]): a container of IMAGE with the runs folder (read-only: ro),
# CONFIG and the target's MOUNTS; the recipe appends the command.
docker_run = mkdir -p -- $(call sh_word,$(RUNS_PATH)) && $(DOCKER) run --rm --init $2 $(MOUNTS) \
	$(call mount,$(RUNS_PATH),/work/runs,$3) \
	$(if $(CONFIG_PATH),$(call mount,$(CONFIG_PATH),$(CONFIG_IN_CONTAINER),ro) \
	  -e $(call sh_word,DS2_CONFIG=$(CONFIG_IN_CONTAINER))) \
	-e DS2_RUNS_DIR=/work/runs -e $(call sh_word,DS2_PRESET=$(PRESET)) -e $(call sh_word,DS2_ARGS=$(SET_ARGS)) \
	$(if $(TTY),-t) $1
# The container starts as root and its entrypoint drops to the owner of $(RUNS) (see
# docker/entrypoint.sh), so everything it writes there belongs to you.
RUN_CPU = $(call docker_run,$(IMAGE_CPU),--user 0:0)
RUN_GPU = $(call docker_run,$(IMAGE_GPU),--user 0:0 --gpus all)

# A path no container can be given is refused in one line, before anything runs: every target that
# runs a container lists check-paths first. (No commas in these messages: they are arguments of $(if).)
is_file = $(shell [ -f $(call sh_word,$1) ] && echo yes)
refuse_line_breaks = $(foreach v,RUNS CONFIG SOURCE LM,$(if $(findstring $(newline),$(call literal,$v)),\
	$(error $v holds a line break: give a path without one)))
refuse_missing_files = $(foreach v,CONFIG SOURCE LM,$(if $(call literal,$v),$(if $(call is_file,$(call literal,$v)),,\
	$(error $v=$(call literal,$v): no such file (a relative path is relative to the checkout)))))
refuse_runs_file = $(if $(shell [ -e $(call sh_word,$(RUNS_PATH)) ] && [ ! -d $(call sh_word,$(RUNS_PATH)) ] && echo yes),\
	$(error RUNS=$(call literal,RUNS) is a file: give a folder (it is made when missing)))
refuse_for_pretrained = $(if $(filter eval-pretrained,$(MAKECMDGOALS)),$(if $(SOURCE_PATH),,\
	$(error make eval-pretrained needs SOURCE=path/to/checkpoint)))
# Compose mounts the runs folder with -v, which splits at ':', and mounts no config file.
refuse_for_compose = $(if $(filter train-dist,$(MAKECMDGOALS)),\
	$(if $(findstring :,$(RUNS_PATH)),$(error RUNS=$(call literal,RUNS): docker compose cannot mount a path with ':' (make train-dist): use a folder without one))\
	$(if $(CONFIG_PATH),$(error make train-dist takes no CONFIG (its containers do not mount it): give the settings with SET)))
check-paths:
	$(refuse_line_breaks)$(refuse_missing_files)$(refuse_runs_file)$(refuse_for_pretrained)$(refuse_for_compose)
# Progress bars when make runs in a terminal.
TTY := $(shell [ -t 1 ] && echo 1)

.PHONY: check-paths help base-image image-cpu image-bench image-gpu lock envcheck envcheck-host data preprocess train \
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
	cd docker/requirements && for flavor in cpu gpu torch-peer onednn; do \
	  uv pip compile $$flavor.in --python-version 3.9 --python-platform x86_64-manylinux_2_28 \
	    --generate-hashes --no-header -q -o $$flavor.lock || exit 1; done
	cd docker/requirements && uv pip compile host.in --universal --python-version 3.9 \
	    --generate-hashes --no-header -q -o host.lock

envcheck: check-paths image-cpu ## diagnose the CPU image's environment (python -m envcheck)
	$(RUN_CPU) ds2-stage envcheck

envcheck-host: $(HOST_VENV) ## diagnose this host: Docker engine, Compose, GPU runtime
	$(HOST_VENV)/bin/python -m envcheck --host

data: check-paths image-cpu ## build or download the corpus and write manifests
	$(RUN_CPU) ds2-stage data

preprocess: check-paths image-cpu ## corpus + manifests + feature cache (so the first epoch does not wait on features)
	$(RUN_CPU) ds2-stage preprocess

train: check-paths image-cpu ## train on CPU (resumes when a checkpoint exists)
	$(RUN_CPU) ds2-stage train

eval: check-paths image-cpu ## WER / CER of the best checkpoint on test and test-noisy (with its tuned LM if any; SET=decode.lm=none: greedy)
	$(RUN_CPU) ds2-stage eval

lm: check-paths image-cpu ## build the n-gram LM from the training transcripts (seed preset: download LibriSpeech's official one)
	$(RUN_CPU) ds2-stage lm

tune-lm: check-paths image-cpu ## choose the LM weight and word bonus on dev for the best checkpoint; make eval then uses them
	$(RUN_CPU) ds2-stage tune-lm

# One container, one envcheck: build the LM, tune it, then the test set greedy and with the tuned LM.
eval-lm: check-paths image-cpu ## LM, tuning on dev, then test and test-noisy WER / CER greedy and with the LM
	$(RUN_CPU) ds2-stage eval-lm

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
eval-pretrained: MOUNTS = $(call mount,$(SOURCE_PATH),$(SOURCE_IN_CONTAINER),ro) \
	$(if $(LM_PATH),$(call mount,$(LM_PATH),$(LM_IN_CONTAINER),ro))
eval-pretrained: check-paths image-cpu ## SOURCE=checkpoint [LM=arpa] [TUNE=1]: convert, get test data and LM, WER greedy and with the LM
	$(RUN_CPU) ds2-stage eval-pretrained $(call sh_word,$(SOURCE_IN_CONTAINER)) \
	  $(if $(LM_PATH),--lm $(call sh_word,$(LM_IN_CONTAINER))) $(if $(TUNE),--tune) \
	  $(if $(ALPHA),--alpha $(call sh_word,$(ALPHA))) $(if $(BETA),--beta $(call sh_word,$(BETA)))

# Prerequisites run left to right, each once: one image build, then the stages in order. eval-lm adds about
# 20 s to the greedy eval (docs/language-model.md).
train-cpu: check-paths image-cpu preprocess train eval-lm ## the whole job on CPU: preprocess, train, eval greedy and with a tuned LM

train-gpu: check-paths image-gpu ## the whole job on an NVIDIA GPU (needs the NVIDIA container toolkit)
	$(RUN_GPU) ds2-stage train-gpu

# Compose starts preprocess, then one scheduler and $(WORKERS) worker containers; the first one to fail
# stops the others (MindSpore's own timeouts end the job too, docs/distributed.md).
train-dist: check-paths image-cpu ## data-parallel training on CPU: 1 scheduler + WORKERS workers in containers (resumes)
	mkdir -p -- $(call sh_word,$(RUNS_PATH)) && DS2_RUNS=$(call sh_word,$(RUNS_PATH)) \
	  DS2_PRESET=$(call sh_word,$(PRESET)) DS2_WORKERS=$(WORKERS) DS2_IMAGE_CPU=$(IMAGE_CPU) \
	  DS2_ARGS=$(call sh_word,$(SET_ARGS)) $(DOCKER) compose --profile train-dist up --no-build \
	  --abort-on-container-failure dist-scheduler dist-worker

bench: check-paths image-bench ## training speed, ds2 vs PyTorch 1.7.1 and a current PyTorch (BENCH=--short: ~2 min; BENCH= : full run)
	$(call docker_run,$(IMAGE_BENCH),--user 0:0) ds2-stage bench $(BENCH)

export: check-paths image-cpu ## the best checkpoint as a MindIR graph beside it (best.mindir + .json), verified against it on test
	$(RUN_CPU) ds2-stage export

# The server runs as the image's non-root user with the runs folder read-only, published on this machine
# only (SERVE_ADDRESS=0.0.0.0: every interface); ds2-stage runs no envcheck for it, whose eval check wants
# the runs folder writable (the server writes nothing). Ctrl-C lets the requests in flight finish.
SERVE_PORT ?= 8000
SERVE_ADDRESS ?= 127.0.0.1
serve: check-paths image-cpu ## serve the best checkpoint: OpenAI's transcription API and a page on http://localhost:SERVE_PORT
	$(call docker_run,$(IMAGE_CPU),--user ds2 -p $(SERVE_ADDRESS):$(SERVE_PORT):8000,ro) ds2-stage serve

# The server and its clients in one container, side by side in one run (docs/serving.md: Benchmark).
BENCH_SERVE ?=
bench-serve: check-paths image-cpu ## serving throughput and latency: 16 concurrent clients against one at a time (minutes)
	$(RUN_CPU) ds2-stage bench-serve $(BENCH_SERVE)

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

clean: check-paths ## remove run outputs under $(RUNS) (asks first) and the host test venv
	@read -p "Delete everything under "$(call sh_word,$(RUNS_PATH))"? [y/N] " answer && [ "$$answer" = y ] && \
	  find $(call sh_word,$(RUNS_PATH)) -mindepth 1 ! -name .gitkeep -delete || true
	rm -rf $(HOST_VENV)
