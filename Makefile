# regwarden developer targets. `scripts/bootstrap` installs system packages and the venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint format typecheck bench clean

setup:
	scripts/bootstrap

demo: setup
	$(VENV)/bin/regwarden demo

# The README's test command. Unit, integration (real docker-registry on loopback,
# moto server) and e2e; interop tests run when the handbook fixtures beside the repo are present.
test:
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) imports

# The architecture's import rules (contracts in pyproject.toml, see docs/architecture.md).
.PHONY: imports
imports:
	PYTHONPATH=shared:. $(VENV)/bin/lint-imports --no-cache

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck:
	$(VENV)/bin/mypy --strict shared/ functions/ bench/

bench:
	$(PY) bench/oci_list.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache

# AWS: lint the SAM template (sam, cfn-lint, checkov), build it without Docker, and check
# the bundle (no GCP/Azure SDK, code + layer <= 40 MB). The tools live in their own venvs
# under .tools/ (scripts/aws-tools installs them from PyPI on first use).
.PHONY: aws-check
aws-check:
	scripts/aws-tools
	SAM_CLI_TELEMETRY=0 .tools/sam/bin/sam validate --lint
	.tools/cfn-lint/bin/cfn-lint template.yaml
	.tools/checkov/bin/checkov -f template.yaml --quiet --compact --skip-download
	SAM_CLI_TELEMETRY=0 .tools/sam/bin/sam build
	$(PY) scripts/package_report.py
