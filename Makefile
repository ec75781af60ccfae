# Face-alignment benchmark. `make demo` and `make test` do all the set-up on a fresh clone.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# One sub-folder per dataset (README, "Datasets").
DATA_ROOT ?= data
# make reproduce-<paper> [DATA=synthetic] [GPUS=N] [NODES=M] [ARGS="--only hgs-300w ..."]
DATA  ?= real
GPUS  ?=
NODES ?= 1

export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test test-slow bench lint clean check-data leaderboard paper-tables ci-gate ci-baseline ci-checkpoint

install: $(STAMP)

# torch first, pinned: a CPU build of 2.13.0 is provided locally; any other spec pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,peers]"
	@touch $@

demo: install
	$(PY) -m experiments.demo

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/bench.py

check-data: install
	$(PY) -m datamodules.check all --data-root $(DATA_ROOT)

# Every paper with an experiments/<paper>/manifest.yaml: train, select on validation, test, render its tables.
reproduce-%: install
	$(PY) -m leaderboard reproduce $* --data $(DATA) --data-root $(DATA_ROOT) --nodes $(NODES) \
		$(if $(GPUS),--devices $(GPUS) --accelerator gpu,) $(ARGS)

# Every table of the five papers as printed (results/paper-tables/<paper>/tables.{md,tex,html}): reported numbers,
# with the reproduced ones beside them where `make reproduce-<paper>` has recorded some (DATA=synthetic for those).
PAPERS := glomface mhhn pwc propnet tab
paper-tables: install
	@for paper in $(PAPERS); do $(PY) -m leaderboard paper-tables $$paper --data $(DATA) || exit 1; done

# Leaderboards of everything under results/ (Markdown, LaTeX, HTML with CED plots).
leaderboard: install
	$(PY) -m leaderboard render --results results --out results/leaderboard

# CI metric gate (README "Gating CI on metrics"): evaluate CKPT on the sample of the test split that BASELINE states
# (20 synthetic faces per subset by default) and fail (exit 1, with the table of what moved) on a regression.
# make ci-gate [CKPT=...] [BASELINE=...] [CI_CONFIG=...] [ARGS="--tol nme=0.1"]. ci-baseline rewrites BASELINE with
# the same command (when a change is meant to move the numbers); ci-checkpoint retrains CKPT, then rewrites BASELINE.
CKPT      ?= tests/data/ci/hourglass_synthetic.ckpt
BASELINE  ?= tests/data/ci/hourglass_synthetic_baseline.json
CI_CONFIG ?= experiments/hourglass/synthetic.yaml
CI_GATE    = $(PY) -m leaderboard ci-gate --config $(CI_CONFIG) --ckpt $(CKPT) --baseline $(BASELINE) \
	--trainer.accelerator=cpu --data.init_args.num_workers=0
ci-gate: install
	$(CI_GATE) $(ARGS)

ci-baseline: install
	$(CI_GATE) --write-baseline --per-subset 20 $(ARGS)

ci-checkpoint: install
	$(PY) tests/data/ci/make_checkpoint.py --config $(CI_CONFIG) --out $(CKPT)
	$(MAKE) ci-baseline

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
