"""Two-stage indexes: without RAG_EMBEDDER a new index is answerable after the fast (static model2vec) pass and
switches its dense side to the full model's vectors once every passage has one; Ctrl-C during the full stage
leaves a usable index that the next `rag index` completes; an explicit embedder, or an index that records one,
stays one stage.

Most tests use the static model for both stages (RAG_FULL_EMBEDDER) to stay fast; one uses the real default pair
(model2vec then the packaged MiniLM) on a handful of articles.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from rag import Assistant
from rag.config import Settings
from rag.embed import make_embedder
from rag.store import Store
from rag.vectors import FULL
from tests.conftest import CORPUS, ROOT, interruptible_cli, needs_corpus, write_collection
from tests.test_chroma_server import server  # noqa: F401 - the fixture: a real `chroma run`

STATIC = "model2vec:all-MiniLM-L6-v2"


def _settings(settings: Settings, **update) -> Settings:
    """Settings with RAG_EMBEDDER unset (so not explicit) and the given fields."""
    return Settings(_env_file=None, cache_dir=settings.cache_dir, **update)


def _corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = list(itertools.islice(f, n))
    (folder / "articles.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"PYTHONPATH": str(ROOT), **extra})
    return env


def test_answers_during_and_after_the_full_stage(tmp_path: Path, settings: Settings) -> None:
    folder = write_collection(tmp_path / "docs")
    # no passage is computed inline by a call that shows no progress: the index stays in its fast stage
    two = _settings(settings, full_embedder=STATIC, stage_inline_chunks=0)
    writer = Assistant.open(tmp_path / "index", two)
    reader = Assistant.open(tmp_path / "index", two)  # stands for another process (its own Store and models)
    try:
        writer.index([folder])
        stats = writer.stats()
        articles, chunks = writer.store.catalogue.counts()
        assert stats["stage"] == "fast" and stats["full_vectors"] == f"0 of {chunks}"
        assert stats["fast_embedder"] == STATIC and stats["full_embedder"] == STATIC
        answer = reader.ask("How many homes did the Brightwater dam failure flood?")
        assert "412" in answer.text and answer.citations
        assert reader.retriever.stage is None  # the fast stage's vectors
        phases: list[tuple[str, int, int]] = []
        writer.index([], on_progress=lambda *p: phases.append(p))  # a batch caller: the full stage runs
        assert ("MiniLM vectors", chunks, chunks) in phases
        assert writer.stats()["stage"] == "full" and writer.stats()["full_vectors"] == f"{chunks} of {chunks}"
        answer = reader.ask("How many homes did the Brightwater dam failure flood?")
        assert "412" in answer.text and answer.citations
        assert reader.retriever.stage == FULL and reader.stats()["stage"] == "full"
        assert writer.store.vectors.ids(stage=FULL) == writer.store.catalogue.chunk_id_set()
        # a deleted article loses both stages' vectors; the index stays complete
        gone = writer.store.catalogue.chunk_ids_of(answer.citations[0].article_id)
        writer.remove([answer.citations[0].article_id])
        assert not set(gone) & (writer.store.vectors.ids() | writer.store.vectors.ids(stage=FULL))
        assert writer.stats()["stage"] == "full" and writer.store.catalogue.counts()[0] == articles - 1
    finally:
        writer.close()
        reader.close()


def test_new_articles_get_both_stages_in_the_same_call(tmp_path: Path, settings: Settings) -> None:
    folder = write_collection(tmp_path / "docs")
    assistant = Assistant.open(tmp_path / "index", _settings(settings, full_embedder=STATIC))
    try:
        assistant.index([folder / "dam.txt"])  # a small backlog is done inline, even without progress
        assert assistant.stats()["stage"] == "full"
        assistant.index([folder])
        done, total = assistant.store.catalogue.full_progress()
        assert done == total > 1 and assistant.retriever.stage == FULL
    finally:
        assistant.close()


@needs_corpus
def test_default_pair_switches_models(tmp_path: Path, settings: Settings) -> None:
    """The real default (model2vec, then MiniLM): each process loads only the stage it searches."""
    folder = _corpus(tmp_path / "docs", 6)
    first = json.loads((folder / "articles.jsonl").read_text().splitlines()[0])
    question = f"What happened: {first['title']}?"
    defaults = Settings(_env_file=None, cache_dir=settings.cache_dir, stage_inline_chunks=0)
    assert "embedder" not in defaults.model_fields_set and defaults.full_embedder.endswith("all-MiniLM-L6-v2")
    writer = Assistant.open(tmp_path / "index", defaults)
    try:
        writer.index([folder])  # fast pass only (no progress shown, backlog over the inline limit)
        during = Assistant.open(tmp_path / "index", defaults)
        try:
            hits = during.search(question)
            assert hits and hits[0].article.title == first["title"] and during.retriever.stage is None
            assert during.embedder.loaded and not during.full.loaded
            assert during.stats()["stage"] == "fast"
        finally:
            during.close()
        writer.index([], progress=True)  # `rag index` runs the full stage
        after = Assistant.open(tmp_path / "index", defaults)
        try:
            hits = after.search(question)
            assert hits and hits[0].article.title == first["title"] and after.retriever.stage == FULL
            assert after.full.loaded and not after.embedder.loaded  # the static model is never loaded
            assert after.stats()["embedder"] == defaults.full_embedder and after.stats()["dim"] == 384
        finally:
            after.close()
    finally:
        writer.close()


def _full_vectors(index: Path, settings: Settings, first: Path, added: Path,
                  calls: list[tuple[str, int]] | None = None) -> dict[str, list[float]]:
    """The full-stage vectors of an index of `first`, then `added` indexed in a second call (`rag index`'s way:
    with progress); `calls` hears (thread, texts) of each full-model embedding of the second call."""
    assistant = Assistant.open(index, settings)
    try:
        assistant.index([first], on_progress=lambda *p: None)
        if calls is not None:
            model = assistant.full.model
            embed = model.embed
            model.embed = lambda texts, progress=False: (calls.append((threading.current_thread().name,
                                                                       len(texts))), embed(texts, progress))[1]
        assistant.index([added], on_progress=lambda *p: None)
        assert assistant.stats()["stage"] == "full"
        got = assistant.store.vectors.collection(FULL).get(include=["embeddings"])
        return dict(zip(got["ids"], (list(map(float, v)) for v in got["embeddings"])))
    finally:
        assistant.close()


@needs_corpus
def test_added_articles_are_embedded_by_the_full_model_while_the_fast_pass_stores_them(
        tmp_path: Path, settings: Settings) -> None:
    """Adding a few articles to a complete two-stage index (the real default pair): their full-stage vectors are
    computed in a thread while the fast pass stores, lexical-indexes and groups them (the full stage then waits
    only for what is left), and they are exactly the vectors the full stage computes itself."""
    lines = _corpus(tmp_path / "corpus", 7).joinpath("articles.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "first").mkdir()
    (tmp_path / "added").mkdir()
    first, added = tmp_path / "first" / "a.jsonl", tmp_path / "added" / "b.jsonl"
    first.write_text("".join(lines[:4]))
    added.write_text("".join(lines[4:]))
    calls: list[tuple[str, int]] = []
    ahead = _full_vectors(tmp_path / "ahead", Settings(_env_file=None, cache_dir=settings.cache_dir), first, added,
                          calls)
    assert calls and all(name == "rag-full-ahead" for name, _ in calls)  # none waits in the full stage
    # no chunk embedded ahead (0 allowed): the full stage embeds them all after the fast pass
    alone = _full_vectors(tmp_path / "alone", Settings(_env_file=None, cache_dir=settings.cache_dir,
                                                        stage_inline_chunks=0), first, added)
    assert ahead.keys() == alone.keys() and ahead == alone


def test_explicit_embedder_is_one_stage(tmp_path: Path, settings: Settings) -> None:
    folder = write_collection(tmp_path / "docs")
    explicit = Settings(_env_file=None, cache_dir=settings.cache_dir, embedder=STATIC)
    assistant = Assistant.open(tmp_path / "index", explicit)
    try:
        assistant.index([folder], progress=True)
        assert assistant.full is None and not assistant.store.two_stage()
        assert assistant.stats()["stage"] == "single" and "full_vectors" not in assistant.stats()
        assert not assistant.store.catalogue.full_ids()
    finally:
        assistant.close()


def test_single_stage_index_opens_unchanged(tmp_path: Path, settings: Settings) -> None:
    """An index that records one embedder (made before stages, or with RAG_EMBEDDER) stays one stage when
    opened with RAG_EMBEDDER unset, and new articles go to it as before."""
    folder = write_collection(tmp_path / "docs")
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    old = Assistant.open(tmp_path / "index", settings, embedder=static)
    try:
        old.index([folder / "dam.txt"])
    finally:
        old.close()
    store = Store(tmp_path / "index")
    assert store.catalogue.meta("full_embedder") is None
    store.close()
    opened = Assistant.open(tmp_path / "index", _settings(settings))
    try:
        assert opened.full is None and opened.embedder.name == STATIC and opened.stats()["stage"] == "single"
        opened.index([folder], progress=True)
        assert not opened.store.two_stage() and not opened.store.catalogue.full_ids()
        assert "412" in opened.ask("How many homes did the Brightwater dam failure flood?").text
    finally:
        opened.close()


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@needs_corpus
def test_ctrl_c_during_full_stage_resumes(tmp_path: Path, settings: Settings) -> None:
    """SIGINT to `rag index` in the full stage: exit 130, an answerable index, and the next run embeds only the
    full-stage vectors still missing (no fast vector again). The static model serves both stages, committed a
    chunk at a time so the stage lasts long enough to be interrupted."""
    folder = _corpus(tmp_path / "docs", 15)
    index = tmp_path / "index"
    env = _env(RAG_FULL_EMBEDDER=STATIC, RAG_INDEX_BATCH_CHUNKS="1", RAG_PROGRESS_EVERY="0.05",
               RAG_CACHE_DIR=str(settings.cache_dir))
    cmd = interruptible_cli("index", str(folder), "--index", str(index))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(ln.startswith("MiniLM vectors: ") and not ln.startswith("MiniLM vectors: 0 ")
                      for ln in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert "stopped:" in "".join(lines)
    store = Store(index)
    done, total = store.catalogue.full_progress()
    articles = store.catalogue.counts()[0]
    store.close()
    assert 0 < done < total and articles >= 12
    opened = Assistant.open(index, _settings(settings, full_embedder=STATIC))
    try:
        assert opened.stats()["stage"] == "fast"
        assert opened.search("Ukraine")  # usable: the fast stage answers
    finally:
        opened.close()
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "0 chunks embedded" in again.stdout and "embedding:" not in again.stderr  # no fast vector again
    assert f"MiniLM vectors: {total - done:,} of {total - done:,} chunks in" in again.stderr
    store = Store(index)
    assert store.catalogue.full_progress() == (total, total)
    store.close()


def test_web_status_line_says_the_stage() -> None:
    from ui.web import status_html

    base = {"articles": 3, "chunks": 9, "sources": 1, "embedder": STATIC, "last_indexed": ""}
    assert "fast stage; full vectors 4 of 9" in status_html({**base, "stage": "fast", "full_vectors": "4 of 9"})
    assert "(full stage)" in status_html({**base, "stage": "full", "full_vectors": "9 of 9"})
    assert "stage" not in status_html({**base, "stage": "single"})


def test_stage_collections_on_a_chroma_server(tmp_path: Path, settings: Settings, server: int) -> None:  # noqa: F811
    """Server mode: each stage in its own collection named after RAG_CHROMA_COLLECTION; --rebuild removes both."""
    import chromadb

    from rag.store import remove_index

    folder = write_collection(tmp_path / "docs")
    two = _settings(settings, full_embedder=STATIC, chroma_host="127.0.0.1", chroma_port=server,
                    chroma_collection="staged-news")
    assistant = Assistant.open(tmp_path / "index", two)
    try:
        assistant.index([folder], progress=True)
        assert assistant.stats()["stage"] == "full"
        assert "412" in assistant.ask("How many homes did the Brightwater dam failure flood?").text
        chunks = assistant.store.catalogue.chunk_id_set()
    finally:
        assistant.close()
    client = chromadb.HttpClient(host="127.0.0.1", port=server)
    names = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
    assert {"staged-news", "staged-news-full"} <= names
    assert set(client.get_collection("staged-news-full").get(include=[])["ids"]) == chunks
    remove_index(tmp_path / "index", assistant.store.vectors.server, "staged-news")
    names = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
    assert not {"staged-news", "staged-news-full"} & names
