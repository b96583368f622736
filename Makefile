# Two commands do all set-up: `make run` and `make test`. Both create .venv and install first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
INDEX ?= index

.PHONY: install run test lint index clean

install: $(STAMP)

# torch is pinned and installed first: an unpinned torch pulls several GB of CUDA packages
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,web,slack,llm,peer,browser]'
	touch $(STAMP)

index: install
	$(BIN)/rag index seeds --index $(INDEX)

run: index
	$(BIN)/rag web --index $(INDEX)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check rag ui tests

clean:
	rm -rf $(VENV) $(INDEX)/chroma $(INDEX)/bm25 $(INDEX)/articles.sqlite
