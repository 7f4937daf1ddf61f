# The two set-up commands: `make demo` runs the platform on its local stack, `make test` runs the tests.
# Each installs what it needs first (scripts/bootstrap.sh), so both work on a fresh machine; the demo
# installs only what the platform needs, the tests add their tools and peers' clients.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
CHECKED := shared services tests bench scripts

.PHONY: install install-dev install-test demo platform up down status test unit integration e2e \
	check lint docs bench schemas screenshots

install:
	@bash scripts/bootstrap.sh

install-dev:
	@bash scripts/bootstrap.sh --dev

install-test:
	@bash scripts/bootstrap.sh --test

up: install
	@$(BIN)/modelbus stack up

demo: install
	@$(BIN)/modelbus demo --stay

platform: install
	@$(BIN)/modelbus up

down:
	@$(BIN)/modelbus stack down

status:
	@$(BIN)/modelbus stack status

# Everything: unit, integration (the real stack) and end-to-end (the platform's processes).
test: install-test up
	@$(BIN)/modelbus schemas generate --check
	@$(BIN)/modelbus docs generate --check
	@$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Pure logic and every service's handlers on their in-memory twins: no server, the stack may be down.
unit: install-dev
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Against the real Kafka, PostgreSQL and S3 server (and the tools the tests name).
integration: install-test up
	@$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The demo and the services as processes, driven only through Kafka and HTTP.
e2e: install-test up
	@$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# What CI runs after the tests (`.ci/run` calls this): layers, lint, types, security, the docs.
check: install-dev
	@echo "== layers: import-linter (contract <- runtime <- services <- ops; services independent)"
	@$(BIN)/lint-imports --no-cache
	@echo "== lint: ruff and mypy (strict)"
	@$(BIN)/ruff check $(CHECKED)
	@$(BIN)/ruff format --check $(CHECKED)
	@$(BIN)/mypy shared services bench tests/support tests/contracts
	@echo "== security: bandit (a medium or high finding fails) and pip-audit (a known vulnerability fails)"
	@$(BIN)/bandit -q -r shared services -ll
	@$(BIN)/python scripts/audit.py
	@echo "== docs: generated pages current, mkdocs build --strict"
	@$(MAKE) --no-print-directory docs

lint: check

# The docs site into .modelbus/site/: a broken link or anchor, or a generated page out of date, fails.
docs: install-dev
	@$(BIN)/modelbus docs generate --check
	@# Not --quiet: it hides the warnings that --strict turns into a failure (a broken link would pass).
	@out=$$(NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict 2>&1); rc=$$?; \
		printf '%s\n' "$$out" | grep -v '^INFO' || true; exit $$rc
	@echo "docs: .modelbus/site/index.html"

# The benchmarks: each prints a table and writes bench/results/<name>.json (the docs' results page).
bench:
	@for f in bench/*.py; do case $$f in */common.py|*/__init__.py) ;; *) \
		printf '%-28s %s\n' "$$f" "$$(sed -n '1s/^"""//p' $$f)";; esac; done
	@echo "run one: $(BIN)/python -m bench.NAME --help"

# The console's pages in chromium after a demo lifecycle, photographed into .modelbus/screenshots/.
screenshots: install-test up
	@$(BIN)/python -m pytest tests/e2e/test_console.py $(PYTEST_ARGS)
	@ls -1 .modelbus/screenshots/*.png

schemas: install-dev
	@$(BIN)/modelbus schemas generate
	@$(BIN)/modelbus docs generate
