# Two commands for a fresh machine: `make app` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: app workshop test lint model browser bench-trl

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.headless true \
		--browser.gatherUsageStats false

# Workshop mode (README, "Workshop mode"): the app to a room over HTTPS only, behind
# participant codes (`python -m core workshop codes N`) or the shared token in
# CALIBRATION_LAB_TOKEN. PORT picks the port; CERT and KEY the host's own certificate
# (default: a self-signed one made at first start, its fingerprint printed).
PORT ?= 8501
workshop: $(STAMP)
	CALIBRATION_LAB_WORKSHOP=1 $(BIN)/python -m core workshop serve --port $(PORT) \
		$(if $(CERT),--cert $(CERT)) $(if $(KEY),--key $(KEY))

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Debian's chromium for the browser test (tests/test_e2e_browser.py), installed once when
# missing. pip's playwright drives it; `playwright install` is never used.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing chromium for the browser test (apt-get)"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .

# Rebuild the embedded model (deterministic; minutes on 2 cores).
model: $(STAMP)
	$(BIN)/python -m tools.pretrain

# Benchmark against TRL's GRPOTrainer. TRL is not a project requirement: it lives
# in its own venv, .venv-trl, beside the project's pinned requirements.
.venv-trl/.installed-stamp: requirements.txt
	test -x .venv-trl/bin/python || $(PYTHON) -m venv .venv-trl
	.venv-trl/bin/python -m pip install -q -r requirements.txt trl==1.16.0
	touch $@

bench-trl: .venv-trl/.installed-stamp
	.venv-trl/bin/python -m benchmarks.vs_trl
