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
	$(BIN)/pip install --quiet -e '.[dev,web,slack,llm,peer,browser,api,team]'
	# the hybrid peer of `rag bench --peer`: every release pins pystemmer<3, which would re-stem our own BM25
	$(BIN)/pip install --quiet --no-deps llama-index-retrievers-bm25
	touch $(STAMP)

index: install
	$(BIN)/rag index seeds --index $(INDEX)

run: index
	$(BIN)/rag web --index $(INDEX)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check rag ui tests

# the index's files, not the articles it fetched (fetched/) or was given in the web chat (uploads/)
clean:
	rm -rf $(VENV) $(INDEX)/chroma $(INDEX)/bm25 $(INDEX)/bm25_articles $(INDEX)/.lexical.tmp \
		$(INDEX)/articles.sqlite $(INDEX)/articles.sqlite-wal $(INDEX)/articles.sqlite-shm $(INDEX)/.write.lock
