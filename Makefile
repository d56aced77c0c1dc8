# The two set-up commands are `make dev` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# postgresql: the tests run a cluster of their own (tests/pg_server.py) on a free port; the
# `main` cluster the package makes (and starts, where services start) is left alone.
DEB_TEST_PACKAGES := swaks libnet-ssleay-perl postfix opendkim-tools dnsmasq-base fetchmail getmail6 opendkim miltertest isync unbound ldnsutils neomutt postgresql

.PHONY: dev test venv debs lint typecheck bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

dev: $(STAMP)
	$(BIN)/poczta dev

# Debian packages the e2e tests drive as real peers; installed once, skipped when present.
debs:
	@missing=""; for p in $(DEB_TEST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# The tests run on two pytest-xdist workers, each test module whole on one of them (its
# module fixtures start a server once); most e2e time is waiting on servers and peers. Each
# worker and each server a test starts imports poczta: bytecode is written, so that each
# module is compiled once rather than by every one of them.
test: $(STAMP) debs
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/smtp_accept

clean:
	rm -rf $(VENV) poczta-dev .pytest_cache .mypy_cache .ruff_cache
