# Set-up and entry points. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# PyTorch goes in first, so that nothing pulls a multi-GB CUDA build onto a machine without a GPU.
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ITK_DATA := /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz

.PHONY: demo test test-fast lint benchmark test-data clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install "$(TORCH)"; \
	else \
		$(PY) -m pip install "$(TORCH)" --extra-index-url $(TORCH_CPU_INDEX) --retries 1; \
	fi
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install -e ".[test]"
	touch $@

# The ITK example T1 brain MRI and its label maps (Debian package insighttoolkit5-examples).
test-data:
	@if [ ! -f $(ITK_DATA) ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq insighttoolkit5-examples; \
	fi

demo: $(VENV)/.installed
	$(VENV)/bin/gmim demo --out runs/demo

# Tests in TEST_PROCESSES processes of one thread each: on two cores they fill the time one test
# spends starting processes, importing and writing files.
TEST_PROCESSES ?= 3
TEST_RUN := OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_PROCESSES) --dist worksteal

test: $(VENV)/.installed test-data
	$(TEST_RUN)

# The tests that run no training, inference or multi-process command.
test-fast: $(VENV)/.installed test-data
	$(TEST_RUN) -m "not slow"

# Lint, format and types: ruff and mypy at the versions the test extras pin (pyproject.toml).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

benchmark: $(VENV)/.installed
	$(PY) benchmarks/masking_speed.py
	$(PY) benchmarks/pretrain_step.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
