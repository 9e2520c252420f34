# `make demo`: set up .venv and run the Fashion-MNIST ONE-versus-baseline comparison.
# `make test`: set up .venv and run the test suite (CPU, a few minutes), one test file per
#   worker process, TEST_WORKERS of them (2: the CI machines' cores), each process on one
#   thread: two workers of two threads each took 2.6 times as long on 2 cores.
# `make gpu-check`: on a CUDA machine, the CUDA tests, the GPU benchmark and a real-data run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
# The tests write many checkpoints: they go to a RAM-backed /dev/shm where it has 4 GiB free
# (a tiny VGG run of the tests: 2.3 s there, 5.5 s on a slow disk), elsewhere to the usual
# temporary folder.
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 >= 4194304 {print "/dev/shm"}')

.PHONY: demo test bench fashion-mnist gpu-check

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Real Fashion-MNIST offline from Debian's package when we may install it (root); otherwise
# torchvision downloads it into ./data on first use.
fashion-mnist:
	@[ -d $(FASHION_MNIST) ] || [ "$$(id -u)" != 0 ] || \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "could not install dataset-fashion-mnist; torchvision will try to download"

demo: $(VENV)/.installed fashion-mnist
	$(PY) demo_fashion_mnist.py

test: $(VENV)/.installed fashion-mnist
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )OMP_NUM_THREADS=$(TEST_THREADS) \
	  $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(VENV)/.installed
	$(PY) benchmark.py

gpu-check: $(VENV)/.installed fashion-mnist
	$(PY) gpu_check.py $(GPU_CHECK_FLAGS)
