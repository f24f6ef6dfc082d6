# Two entry points: `make run` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# test-py313 runs the outbox, intake and stop tests again on Python 3.13, in .venv313: asyncio's wait_for and
# gather behave differently from 3.12 on. It runs the OneRoster 1.2 crawl too (its client needs 3.12 or later).
# Its Python: python3.13 on PATH if it runs and can make a venv (a pyenv shim of a version not selected cannot),
# else pyenv's 3.13; looked for only when test-py313 runs.
PYTHON313 ?= $(shell for p in "$$(command -v python3.13)" \
	"$$(pyenv prefix 3.13 2>/dev/null | head -n 1)/bin/python3.13"; \
	do "$$p" -c "import ensurepip" 2>/dev/null && { echo "$$p"; break; }; done)
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed-stamp
PY313_TESTS := tests/test_outbox.py tests/test_intake.py tests/test_webhook_target.py tests/test_stop.py \
	tests/e2e/test_api_crawl_v1p2.py

.PHONY: run test test-py313 venv313 openssh-client systemd-tools chromium postgresql haproxy bench samples clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The daemon on the embedded default config (config/rosterd.toml): 127.0.0.1:2222, state in ./var, and the
# demo tenant. It prints the sftp command to type; Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/rosterd serve

# The tests drive the real OpenSSH client (sftp, ssh-keygen); install it where it is missing (Debian/Ubuntu).
openssh-client:
	@if ! command -v sftp >/dev/null || ! command -v ssh-keygen >/dev/null; then \
		echo "installing the OpenSSH client for the tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client; \
	fi

# tests/test_systemd.py checks the unit with systemd-analyze, systemd-sysusers and systemd-tmpfiles (package systemd).
systemd-tools:
	@if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null || ! command -v systemd-tmpfiles >/dev/null; then \
		echo "installing systemd's tools for the tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; \
	fi

# tests/e2e/test_console_browser.py drives the admin console in Debian's headless Chromium (through Playwright,
# which is told where it is: Playwright's own browser download is not used).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium for the console's browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

# The PostgreSQL store's tests start their own throwaway cluster (tests/postgres.py: initdb in a temporary folder,
# a free port) with Debian's server programs; the package's own cluster is not made, so no system-wide service
# runs (create_main_cluster = false, set before the install when nothing else set it).
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL's server programs for the store's tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		[ -e /etc/postgresql-common/createcluster.conf ] || { $$SUDO mkdir -p /etc/postgresql-common && \
			echo "create_main_cluster = false" | $$SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null; }; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi

# tests/e2e/test_cluster.py puts Debian's HAProxy (TCP mode, health checks on /readyz) in front of two replicas;
# the test starts it with its own config on a free port, never the package's service.
haproxy:
	@if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then \
		echo "installing HAProxy for the cluster test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; \
	fi

# lint-imports checks the layers contract in pyproject.toml (each stage imports only those before it). The
# 3.13 run (about a minute on its own) runs beside the main suite, its output shown after the main suite's;
# make test fails when either does.
# Three workers on the two cores CI has: the end-to-end tests spend much of their time waiting on daemons and
# clients, so a third worker keeps both cores busy (6.5 minutes instead of 8.5 with two; four were slower
# again, 7.4 minutes against 6.5, on 2026-12-07).
# The two venvs are installed at once (each install keeps about one core busy), then both runs at once.
test: openssh-client systemd-tools chromium postgresql haproxy
	@$(MAKE) --no-print-directory -j2 $(STAMP) venv313
	$(BIN)/lint-imports
	@$(MAKE) --no-print-directory test-py313 > .test-py313.log 2>&1 & py313=$$!; \
	$(BIN)/python -m pytest -n $$(( $$(nproc) + 1 )) --dist loadgroup -q; main=$$?; \
	wait $$py313; other=$$?; echo "--- Python 3.13 run:"; cat .test-py313.log; rm -f .test-py313.log; \
	[ $$main -eq 0 ] && [ $$other -eq 0 ]

venv313:
	@py="$(PYTHON313)"; [ -z "$$py" ] || $(MAKE) --no-print-directory $(STAMP313) PYTHON313="$$py"

test-py313:
	@py="$(PYTHON313)"; \
	if [ -z "$$py" ]; then echo "Python 3.13 not found: running the tests on 3.11 only"; exit 0; fi; \
	$(MAKE) --no-print-directory $(STAMP313) PYTHON313="$$py" && $(VENV313)/bin/python -m pytest -q -n 2 $(PY313_TESTS)

$(VENV313)/bin/python:
	$(PYTHON313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip

$(STAMP313): pyproject.toml | $(VENV313)/bin/python
	$(VENV313)/bin/python -m pip install --quiet -e '.[test-core,test-v1p2]'
	touch $(STAMP313)

bench: $(STAMP)
	$(BIN)/python bench/validate.py

samples: $(STAMP)
	$(BIN)/python samples/make_samples.py

clean:
	rm -rf $(VENV) $(VENV313) build *.egg-info .pytest_cache
