# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test test-unit test-db test-service test-processes test-rabbitmq-pgbouncer test-faults lint bench bench-pipeline bench-libvips migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(RUN_STAMP) $@

## Set everything up and start the API, a worker and beat at http://127.0.0.1:5000.
run: $(RUN_STAMP)
	$(BIN)/python launcher.py

## Apply the migrations to DATABASE_URL (the SQLite file by default).
migrate: $(RUN_STAMP)
	$(BIN)/python -m flask --app app:create_app db upgrade

## The test suite, every tier but the faults: SQLite and the filesystem broker, or TEST_DATABASE_URL and TEST_BROKER_URL.
## Each tier's files run TEST_WORKERS at a time (the service and processes tiers mostly wait on processes, not
## on the CPU); every tier runs even when one before it failed, and the exit status says whether any did.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadfile
## The service tier waits on its workers more than on the CPU: three files at a time took 146 s to two's 175 s here.
SERVICE_WORKERS ?= 3
SERVICE_PARALLEL := -n $(SERVICE_WORKERS) --dist loadfile
test: $(DEV_STAMP)
	@status=0; \
	$(BIN)/pytest $(PARALLEL) tests/unit tests/db || status=1; \
	$(BIN)/pytest $(SERVICE_PARALLEL) tests/service || status=1; \
	$(BIN)/pytest $(PARALLEL) tests/processes || status=1; \
	exit $$status

## One tier alone (tests/<tier>): unit (no database, no process), db (a database, no worker),
## service (the HTTP API and a real worker), processes (launcher, CLI, newman, browser, compose).
test-unit: $(DEV_STAMP)
	$(BIN)/pytest tests/unit

test-db: $(DEV_STAMP)
	$(BIN)/pytest tests/db

test-service: $(DEV_STAMP)
	$(BIN)/pytest $(SERVICE_PARALLEL) tests/service

test-processes: $(DEV_STAMP)
	$(BIN)/pytest $(PARALLEL) tests/processes

## The service tier again on RabbitMQ (a virtual host of its own on 127.0.0.1:5672, counted through its
## management API) and through PgBouncer in transaction mode, which the tests start (Debian's pgbouncer).
RABBITMQ_TEST_URL ?= amqp://guest:guest@127.0.0.1:5672/
test-rabbitmq-pgbouncer: $(DEV_STAMP)
	TEST_BROKER_URL=$(RABBITMQ_TEST_URL) TEST_DATABASE_POOLER=pgbouncer $(BIN)/pytest $(SERVICE_PARALLEL) tests/service

## The fault suite: real processes, PostgreSQL and Redis clusters of its own (one per test worker), faults
## injected. Its modules run FAULT_WORKERS at a time, each module's tests in one test worker, so that the hosts
## test (network namespaces, as root) makes its deployment of each broker once. Three at a time took 4-5 min
## here against about 6, but the frozen workers' late stores then missed their time limits (2 CI runs of 4).
FAULT_WORKERS ?= 2
test-faults: $(DEV_STAMP)
	$(BIN)/pytest -n $(FAULT_WORKERS) --dist loadscope -o addopts="-ra --strict-markers" tests/faults

$(BENCH_STAMP): requirements.txt requirements-dev.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $(RUN_STAMP) $(DEV_STAMP) $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

## The benchmark suite: real processes, its own PostgreSQL and Redis; writes bench/RESULTS.md (BENCH_ARGS=--long).
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run_bench.py $(BENCH_ARGS)

bench-pipeline: $(DEV_STAMP)
	$(BIN)/python bench/bench_pipeline.py

bench-libvips: $(BENCH_STAMP)
	$(BIN)/python bench/bench_libvips_parity.py

clean:
	rm -rf $(VENV) instance .pytest_cache
