# Two set-up commands on a fresh machine (see README):
#   make run   - install into .venv and run the agent on embedded defaults
#   make test  - install test dependencies and services, then run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench soak clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# constrained to the versions the suite last passed with (requirements/test.lock)
$(VENV)/.test-installed: pyproject.toml requirements/test.lock | $(BIN)/python
	$(BIN)/pip install -q -c requirements/test.lock -e '.[test]'
	touch $@

run: $(VENV)/.run-installed
	scripts/local-setup.sh $(BIN)/opsagent
	$(BIN)/opsagent run --config deploy/config/local.yml

test: $(VENV)/.test-installed
	scripts/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.test-installed
	scripts/test-services.sh
	scripts/bench-peers.sh
	$(BIN)/python bench/backup_vs_restic.py
	$(BIN)/python bench/backup_vs_restic.py --profile small-files --small-files 200000 \
		--size-mib $${SMALL_FILES_MIB:-10240} --only local
	$(BIN)/python bench/database_vs_restic.py
	$(BIN)/python bench/restore_test_vs_restic.py

soak: $(VENV)/.test-installed
	scripts/test-services.sh
	$(BIN)/python bench/soak.py --minutes $${MINUTES:-30}

clean:
	rm -rf $(VENV) var .pytest_cache

# the newest releases pyproject.toml allows, frozen into requirements/test.lock; run
# `make test` after it and commit the lock only when the suite passes
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e '.[test]'
	{ sed -n '/^#/p' requirements/test.lock; .venv-lock/bin/pip freeze --exclude-editable; } \
		> requirements/test.lock.new
	mv requirements/test.lock.new requirements/test.lock
	rm -rf .venv-lock
