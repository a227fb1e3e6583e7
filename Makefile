# Two commands for a fresh machine: `make book` and `make test`. Both create .venv/ when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pip warns "Location 'file:///...' is ignored" once per package for every local index in the
# machine's pip config that lacks that package: noise nobody can act on, dropped from the output.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
PIP_NOISE   := 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
# TorchInductor (chapter 10, tests, bench) caches its compiled kernels in /tmp/torchinductor_$USER by
# default, shared by every checkout and never pruned (11 GB on this project's machine after a day of
# fresh clones). Kept inside the checkout (.cache/ is ignored by git), the cache goes away with the
# checkout, and a clean checkout really starts cold. Inductor's precompiled headers (~150 MB per
# compiler setting, 8.7 GB of those 11) still go to /tmp/torchinductor_$USER: torch keeps them global.
# The cache is not keyed on the CPU's instruction set: a graph cached on an AVX-512 CPU, found again
# by an AVX2 one, gave a wrong sum here with no error (.ci/cpu_key.py says how). So each kind of CPU
# gets its own folder, named by .ci/cpu_key.py.
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor/$(shell $(PYTHON) .ci/cpu_key.py)

.PHONY: book test test-avx2-emulated bench venv exercises sync clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $(PIP_NOISE)
	$(PY) -m pip install --quiet -r requirements.txt $(PIP_NOISE)
	$(PY) -m pip install --quiet --no-deps -e . $(PIP_NOISE)
	touch $(STAMP)

venv: $(STAMP)

## make book: build the HTML book into _build/html, executing every notebook (cached between builds)
## (each CPU gets its own execution cache: a checkout built on another CPU is re-executed, see .ci/cpu_key.py)
book: $(STAMP)
	$(PYTHON) .ci/cpu_key.py --build _build
	$(VENV)/bin/jupyter-book build . -W --keep-going

## make test: unit tests, then the book build and checks on the built HTML (all in pytest)
test: $(STAMP)
	$(PY) -m pytest

## make test-avx2-emulated: the CPU-dependent tests and chapters 7 to 10 (each with its words checked) as an AVX2-only
## Zen3 runs them, under QEMU's EPYC-Milan model (.ci/emulate-avx2; needs qemu-user and bubblewrap). Slow (hours
## on 2 cores: chapter 8 alone took 84 min on 2026-12-06, another job sharing the cores for half of it; chapter 9 22 min
## with CI sharing the cores; chapter 10 154 min, its timing cell 132 of them, hence the 4-hour cell limit), so not
## part of `make test`; for machines with AVX512-VNNI, whose x86 engine no variable can send to fbgemm's AVX2
## kernels. The executed chapters are kept in _build/emulated/ to read. (tests/test_families.py is left out: the capped families run natively in `make test`,
## and the emulated CPU's own family is the run itself. The book is not built under emulation.)
EMULATED_TESTS := tests/test_cpu_profiles.py tests/test_reference_kernels.py tests/test_quant_digits.py tests/test_deploy.py tests/test_fuse_add.py \
                  tests/test_chapters_forced_engine.py::test_chapter_as_this_cpu_runs_it
test-avx2-emulated: $(STAMP)
	RESNET_EDU_EXECUTE_CHAPTERS=7,8,9,10 RESNET_EDU_CELL_TIMEOUT=14400 RESNET_EDU_KEEP_EXECUTED=_build/emulated .ci/emulate-avx2 $(PY) -m pytest -p no:cacheprovider $(EMULATED_TESTS)

## make bench: the performance report (JSON + markdown) in bench/
bench: $(STAMP)
	$(PY) -m resnet_edu.bench --json bench/report.json

## make exercises: regenerate the student notebooks (notebooks/exercises/) and public tests
## (resnet_edu/exercise_tests/) from the otter-assign masters in exercises/, and write one otter
## autograder zip per set to _build/autograder/ (for Gradescope / otter grade; see book/teachers.md)
exercises: $(STAMP)
	$(PY) -m resnet_edu.exercises build

## make sync: rewrite every notebook's Colab badge and setup cell from _config.yml
sync: $(STAMP)
	$(PY) -m resnet_edu.book sync

clean:
	rm -rf _build
