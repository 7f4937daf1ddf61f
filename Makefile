# The two set-up commands: `make demo` runs the platform on its local stack, `make test` runs the tests.
# Each installs what it needs first (scripts/bootstrap.sh), so both work on a fresh machine.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo platform up down status test unit lint schemas screenshots

install:
	@bash scripts/bootstrap.sh

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

test: up
	@$(BIN)/modelbus schemas generate --check
	@$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Pure logic and every service's handlers on their in-memory twins: no server, the stack may be down.
unit: install
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# The console's pages in chromium after a demo lifecycle, photographed into .modelbus/screenshots/.
screenshots: up
	@$(BIN)/python -m pytest tests/e2e/test_console.py $(PYTEST_ARGS)
	@ls -1 .modelbus/screenshots/*.png

lint: install
	@$(BIN)/ruff check shared services tests bench scripts
	@$(BIN)/lint-imports

schemas: install
	@$(BIN)/modelbus schemas generate
