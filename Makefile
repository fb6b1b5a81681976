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
# moto server, Azurite) and e2e; interop tests run when the handbook fixtures beside the repo are present.
test: azurite
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

# Azurite (Table Storage and Storage Queues for the Azure tests) from tools/azurite's lock,
# installed again only when the lock changed (the stamp is a copy of the lock it installed).
# Without npm it says so and the tests that need Azurite skip (CI installs npm and fails them).
AZURITE_STAMP := tools/azurite/node_modules/.regwarden-lock
.PHONY: azurite
azurite:
	@if ! command -v npm >/dev/null; then echo "azurite: npm not found: Azure storage tests will skip (apt-get install nodejs npm)"; \
	elif cmp -s tools/azurite/package-lock.json $(AZURITE_STAMP); then :; \
	else npm ci --prefix tools/azurite --no-audit --no-fund && cp tools/azurite/package-lock.json $(AZURITE_STAMP); fi

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

# The image infra/k8s deploys (kustomize images:), pinned by digest:
#   make k8s-image IMAGE=registry.example.com/regwarden@sha256:<64 hex digits>
.PHONY: k8s-image
k8s-image:
	$(PY) scripts/k8s_image.py infra/k8s/kustomization.yaml "$(IMAGE)"

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

# GCP: checkov on the Terraform in infra/gcp (0 failed; any skip is justified inline), the
# Terraform's wiring parsed with python-hcl2 (tests/integration/test_gcp_terraform.py), and
# `terraform fmt -check` where a terraform binary is on PATH. terraform comes from none of
# the package registries CI reaches, and `terraform validate` needs the google provider from
# the Terraform registry, so the hcl2 test is the structural check (docs/gcp.md).
.PHONY: gcp-check gcp-bundle
gcp-check:
	scripts/aws-tools checkov
	.tools/checkov/bin/checkov -d infra/gcp --framework terraform --quiet --compact --skip-download
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -diff -recursive infra/gcp; \
	else echo "gcp-check: no terraform on PATH: formatting not checked"; fi
	$(PY) -m pytest -q -p no:cacheprovider tests/integration/test_gcp_terraform.py

# The Cloud Run functions' source bundle (infra/gcp: source_bucket/source_object): main.py and
# requirements.txt (`.[gcp]`: regwarden with the gcp extra, built from this pyproject) at the
# root, beside the `functions.gcp` package and shared/regwarden: no other platform's adapter,
# and pip installs no AWS or Azure SDK (tests/integration/test_gcp_functions_bundle.py).
BUILD ?= build
GCP_BUNDLE := $(BUILD)/regwarden-gcp.zip
gcp-bundle:
	rm -rf $(BUILD)/gcp-bundle $(GCP_BUNDLE)
	mkdir -p $(BUILD)/gcp-bundle/functions/gcp $(BUILD)/gcp-bundle/shared
	cp functions/gcp/main.py functions/gcp/requirements.txt pyproject.toml README.md $(BUILD)/gcp-bundle/
	cp functions/__init__.py functions/_collector.py $(BUILD)/gcp-bundle/functions/
	cp functions/gcp/*.py $(BUILD)/gcp-bundle/functions/gcp/
	cp -r shared/regwarden $(BUILD)/gcp-bundle/shared/
	find $(BUILD)/gcp-bundle -name __pycache__ -prune -exec rm -rf {} +
	cd $(BUILD)/gcp-bundle && $(abspath $(PY)) -m zipfile -c $(abspath $(GCP_BUNDLE)) \
		main.py requirements.txt pyproject.toml README.md functions shared
	@echo "gcp-bundle: $(GCP_BUNDLE) sha256 $$(sha256sum $(GCP_BUNDLE) | cut -c1-64)"

# Azure: checkov on the Terraform in infra/azure (0 failed; any skip is justified inline),
# the wiring parsed with python-hcl2 against the function app it deploys
# (tests/integration/test_azure_terraform.py), and `terraform fmt -check` where a terraform
# binary is on PATH (`terraform validate` would need the azurerm provider from the Terraform
# registry, which CI does not reach).
.PHONY: azure-check
azure-check:
	scripts/aws-tools checkov
	.tools/checkov/bin/checkov -d infra/azure --framework terraform --quiet --compact --skip-download
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -diff -recursive infra/azure; \
	else echo "azure-check: no terraform on PATH: formatting not checked"; fi
	$(PY) -m pytest -q -p no:cacheprovider tests/integration/test_azure_terraform.py

# The Azure function app's bundle (zip deploy, remote build): function_app.py (the v2
# programming model's entry point), host.json and requirements.txt (`.[azure]`: regwarden
# with the azure extra, built from this pyproject) at the root, beside the `functions.azure`
# package and shared/regwarden: no other platform's adapter, and pip installs no AWS or
# Google SDK (tests/integration/test_azure_functions_bundle.py).
.PHONY: azure-bundle
AZURE_BUNDLE := $(BUILD)/regwarden-azure.zip
azure-bundle:
	rm -rf $(BUILD)/azure-bundle $(AZURE_BUNDLE)
	mkdir -p $(BUILD)/azure-bundle/functions/azure $(BUILD)/azure-bundle/shared
	cp functions/azure/function_app.py functions/azure/host.json functions/azure/requirements.txt \
		pyproject.toml README.md $(BUILD)/azure-bundle/
	cp functions/__init__.py functions/_collector.py $(BUILD)/azure-bundle/functions/
	cp functions/azure/*.py $(BUILD)/azure-bundle/functions/azure/
	cp -r shared/regwarden $(BUILD)/azure-bundle/shared/
	find $(BUILD)/azure-bundle -name __pycache__ -prune -exec rm -rf {} +
	cd $(BUILD)/azure-bundle && $(abspath $(PY)) -m zipfile -c $(abspath $(AZURE_BUNDLE)) \
		function_app.py host.json requirements.txt pyproject.toml README.md functions shared
	@echo "azure-bundle: $(AZURE_BUNDLE) sha256 $$(sha256sum $(AZURE_BUNDLE) | cut -c1-64)"
