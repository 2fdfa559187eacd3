# The two commands of the README. Each does its own set-up: a .venv with tfddim installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfddim pipeline

# Two pytest processes, not one: every tf.saved_model.load keeps the export's functions for the life of the
# process (tests/conftest.py loads each unchanged folder once), and one process for the whole suite ran out
# of the machine's 24 GB. The second half builds the tiny export fixtures again (a few minutes).
test: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_[a-n]*.py
	$(BIN)/python -m pytest -q tests/test_[o-z]*.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
