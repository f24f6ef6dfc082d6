# Two entry points: `make run` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test openssh-client systemd-tools bench samples clean

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

test: $(STAMP) openssh-client systemd-tools
	$(BIN)/python -m pytest -n auto -q

bench: $(STAMP)
	$(BIN)/python bench/validate.py

samples: $(STAMP)
	$(BIN)/python samples/make_samples.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
