# The README's two commands are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_LIST := ci/apt-packages.txt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_LISTEN ?= 127.0.0.1:8088

.PHONY: demo test venv deps lint typecheck pytest pytest-real clean

demo: venv
	$(BIN)/kubeprober demo --state-dir .state/demo --listen $(DEMO_LISTEN)

test: deps venv lint typecheck pytest pytest-real

venv: $(STAMP)

$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Install the Debian packages of $(APT_LIST) that are not installed yet (nothing when all are).
deps:
	@missing=$$(grep -Ev '^\s*(#|$$)' $(APT_LIST) | while read -r pkg; do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' || echo "$$pkg"; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "Debian packages: all present"; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The Kubernetes tests again, on a real control plane from ../shared/k8s or K8S_TEST_BINARIES
# (tests/harness/README.md); without the binaries it says why and passes, except with CI=true.
# PYTEST_ARGS naming no Kubernetes test select none here (pytest's 5): nothing to run again.
pytest-real: venv
	K8S_TEST_BACKEND=real $(BIN)/pytest -q -m kube $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
