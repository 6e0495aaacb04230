# `make run` — set everything up and serve the demo on http://127.0.0.1:8000
# `make test` — set everything up, lint, and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Local `make run` settings; a .env file (see .env.example) overrides them.
-include .env
export

.PHONY: run test lint pytest bench install system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Runs execute on a Celery worker started beside the server. With no CELERY_BROKER_URL
# (nor REDIS_URL) the broker is a folder, var/queue: no service is needed.
run: install
	DEBUG=$${DEBUG:-1} HTTPS_ONLY=$${HTTPS_ONLY:-0} EGRESS_ALLOWED_HOSTS=$${EGRESS_ALLOWED_HOSTS:-127.0.0.1} \
	  bash -c 'set -e; \
	           $(BIN)/python manage.py migrate --no-input; \
	           $(BIN)/python manage.py createcachetable; \
	           $(BIN)/python manage.py seed_demo; \
	           $(BIN)/celery -A config worker --loglevel=WARNING --concurrency=2 & worker=$$!; \
	           trap "kill -TERM $$worker 2>/dev/null; wait $$worker" EXIT; \
	           $(BIN)/python manage.py runserver 127.0.0.1:8000'

# Debian packages the suite needs (browser tests, Run Code sandbox and its JavaScript, a Redis
# for the queue tests when the machine runs none); installed when
# missing and we are root, otherwise a clear message says what to install.
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages:$$missing — install them with: sudo apt-get install$$missing"; \
	    exit 1; \
	  fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Browser tests run on their own: Playwright's event loop makes them need
# DJANGO_ALLOW_ASYNC_UNSAFE, which must not switch off Django's check for the other tests.
# Queue tests start real `celery worker` processes on the machine's Redis
# (CELERY_BROKER_URL, default redis://127.0.0.1:6379/15); on SQLite they share the test
# database with them through a file.
pytest: install
	$(BIN)/pytest -m "not browser and not queue"
	rm -f var/test-queue.sqlite3*
	TEST_SQLITE_FILE=$(CURDIR)/var/test-queue.sqlite3 $(BIN)/pytest -m queue tests/queue
	DJANGO_ALLOW_ASYNC_UNSAFE=true $(BIN)/pytest -m browser tests/browser \
	  --screenshot only-on-failure --output artifacts/playwright

test: install system-deps lint pytest

# Not part of the tests: seeds its own database, measures, prints a table, writes JSON.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
