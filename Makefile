# medkb: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lock: every install takes exact versions from constraints.txt, so a fresh machine gets what CI tested.
LOCK := constraints.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false
# llama-cpp-python compiles from source: a portable build (no -march=native), the one that was tested.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
MEDKB_DATABASE_URL ?= sqlite:///./medkb.db
export MEDKB_DATABASE_URL

.PHONY: install run sample serve test clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.3
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[ontologies,multilingual,omop,eval,llm-local,test]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, build the sample knowledge base from committed real data, serve the API.
run: install sample serve

sample: install
	$(BIN)/medkb init
	$(BIN)/python -m medkb.sample build

serve: install
	$(BIN)/medkb serve --host $${MEDKB_API_HOST:-127.0.0.1} --port $${MEDKB_API_PORT:-8000}

## make test: install with test extras and run the whole suite (contract suite on SQLite always).
test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) medkb.db medkb.db-wal medkb.db-shm medkb.db.lexical.npz medkb.db.ann .pytest_cache
