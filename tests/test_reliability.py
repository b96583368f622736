"""Faults: `rag index` killed with SIGKILL at several points converges to a clean build; failures in the
middle of a batch lose nothing; one writer per index; other processes' writes are seen without a restart;
a broken, read-only or full index is a clear error.

The kill test runs the real CLI on the first 150 articles of the shared rtqa2022 corpus with the static
model2vec embedder (distilled from MiniLM once, cached under ~/.cache/rag-news) and small commit batches,
so that there are many commit points to kill between.
"""

from __future__ import annotations

import errno
import gzip
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import numpy as np
import pytest

from rag import Assistant
from rag.catalogue import SqliteCatalogue
from rag.embed import make_embedder
from rag.errors import IndexError_, SearchFailed
from rag.lexical import Lexical
from rag.store import Store
from rag.vectors import ChromaVectors
from tests.conftest import CORPUS, ROOT, write_collection, write_jsonl

STATIC = "model2vec:all-MiniLM-L6-v2"
N_ARTICLES = 150


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_EMBEDDER": STATIC, "RAG_INDEX_BATCH_CHUNKS": "64", "PYTHONPATH": str(ROOT), **extra})
    return env


def _index_cmd(paths: list[Path], index: Path) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "index", *map(str, paths), "--index", str(index)]


def _query(index: Path, sql: str) -> list[tuple]:
    """A read-only look at the index database from outside the writer (empty when it is not there yet)."""
    path = index / "articles.sqlite"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def _articles(index: Path) -> int:
    rows = _query(index, "SELECT COUNT(*) FROM articles")
    return rows[0][0] if rows else 0


def _dirty(index: Path) -> bool:
    return bool(_query(index, "SELECT 1 FROM meta WHERE key = 'dirty'"))


def _kill_when(cmd: list[str], cwd: Path, condition, delay: float = 0.0, timeout: float = 120, **env: str) -> str:
    """Run `cmd`, SIGKILL it as soon as `condition()` holds (after `delay`); 'killed' or 'finished'."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if condition():
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return "killed" if proc.returncode == -signal.SIGKILL else "finished"
            time.sleep(0.002)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode()
    return "finished"


def _snapshot(index: Path, check: bool = True) -> dict:
    """Everything a clean build determines: articles, chunks, files, vectors, lexical ids."""
    articles = _query(index, "SELECT id, content_hash, text FROM articles ORDER BY id")
    chunks = _query(index, 'SELECT id, article_id, seq, start, "end" FROM chunks ORDER BY id')
    files = _query(index, "SELECT path, size, article_ids FROM files ORDER BY path")
    client = chromadb.PersistentClient(path=str(index / "chroma"),
                                       settings=chromadb.Settings(anonymized_telemetry=False))
    try:
        collection = client.get_collection("chunks")
        got = collection.get(include=["embeddings"], limit=100_000)
        vectors = {cid: np.asarray(v, dtype=np.float32) for cid, v in zip(got["ids"], got["embeddings"])}
        ids = list(vectors) if check else []
        own: dict[str, bool] = {}
        if ids:  # every chunk is found by its own embedding (first, or tied first with an identical twin)
            found = collection.query(query_embeddings=[vectors[c] for c in ids], n_results=2,
                                     include=["distances"])
            own = {cid: cid in found["ids"][i] and found["distances"][i][0] < 1e-4 for i, cid in enumerate(ids)}
        count = collection.count()
    finally:
        client.close()
    table = [r[0] for r in _query(index, "SELECT id FROM chunks ORDER BY article_id, seq")]
    lexical = Lexical(index / "bm25") if check else None
    if lexical is not None and not lexical.align(table):
        lexical.ids = sorted(lexical.ids)  # not the table's chunks: shown as they are
    lexical = lexical.ids if lexical is not None else []
    return {"articles": articles, "chunks": chunks, "files": files, "vectors": vectors, "own": own,
            "count": count, "lexical": lexical, "table": table, "dirty": _dirty(index)}


def _assert_same(built: dict, clean: dict) -> None:
    assert not built["dirty"]
    assert [a[:2] for a in built["articles"]] == [a[:2] for a in clean["articles"]]
    assert len({a[1] for a in built["articles"]}) == len(built["articles"])  # no article stored twice
    assert built["chunks"] == clean["chunks"]
    assert built["files"] == clean["files"]
    assert built["count"] == len(built["chunks"]) == len(built["vectors"])  # Chroma == SQLite, no duplicates
    assert set(built["vectors"]) == {c[0] for c in built["chunks"]}
    for cid, vector in clean["vectors"].items():
        assert np.allclose(built["vectors"][cid], vector, atol=1e-5), cid
    # Every vector is stored, equal to the clean build's. Chroma 1.5's persisted HNSW leaves a few records
    # unreachable by query() even in a clean build (chroma-core/chroma#7758, #3580): allow what the clean
    # build itself shows, at most 0.5% of chunks.
    lost = [c for c, ok in built["own"].items() if not ok]
    clean_lost = [c for c, ok in clean["own"].items() if not ok]
    assert len(lost) <= max(len(clean_lost), 1) * 2 and len(lost) <= 0.005 * len(built["own"]) + 1, lost
    assert built["lexical"] == built["table"] == clean["table"]


def _write_slice(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)


@pytest.mark.skipif(not CORPUS.exists(), reason="shared rtqa2022 corpus not available")
def test_sigkill_at_many_points_converges_to_a_clean_build(tmp_path):
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = list(itertools.islice(f, N_ARTICLES))
    data = tmp_path / "data"
    data.mkdir()
    corpus = data / "slice.jsonl.gz"
    _write_slice(corpus, lines)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    # the clean reference build runs beside the kill sequence (two cores)
    reference = subprocess.Popen(_index_cmd([corpus], clean), cwd=tmp_path, env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cmd = _index_cmd([corpus], killed)
    points = [
        ("first vectors written, nothing committed", lambda: _dirty(killed), 0.0),
        ("30 articles committed", lambda: _articles(killed) >= 30, 0.0),
        ("resumed run, 90 articles committed", lambda: _articles(killed) >= 90, 0.0),
        ("lexical index being built", lambda: (killed / ".lexical.tmp").exists(), 0.05),
    ]
    outcomes = {name: _kill_when(cmd, tmp_path, cond, delay) for name, cond, delay in points}
    assert list(outcomes.values()).count("killed") >= 3, outcomes
    assert _kill_when(cmd, tmp_path, lambda: False) == "finished"
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    _assert_same(_snapshot(killed), _snapshot(clean))

    # an update killed half-way, then the file changes again before the next run: the vectors of the
    # interrupted version are orphans that only reconciliation removes
    def version(n: int, every: int) -> list[str]:
        return [json.dumps({**json.loads(line), "text": json.loads(line)["text"] + f"\n\nUpdate {n}: the tally of "
                            f"Zorvath {i} was revised."}) + "\n" if i % every == 0 else line
                for i, line in enumerate(lines)]

    # one big batch, killed while its vectors are being written, before the commit. Whether a kill lands
    # in that window depends on the machine's load, so a few moments are tried; the orphans it leaves are
    # what reconciliation must remove (test_missing_and_orphan_vectors_are_reconciled covers it for sure)
    orphans, outcome = 0, ""
    for n, delay in enumerate((0.15, 0.05, 0.3, 0.6, 1.0), start=2):
        _write_slice(corpus, version(n, 5))
        started = time.monotonic()
        was_dirty = _dirty(killed)  # a killed attempt leaves the flag: then time from the start instead

        def moment(was_dirty=was_dirty, started=started) -> bool:
            return time.monotonic() - started > 1.0 if was_dirty else _dirty(killed)

        outcome = _kill_when(cmd, tmp_path, moment, delay=delay, RAG_INDEX_BATCH_CHUNKS="100000")
        try:
            interrupted = _snapshot(killed, check=False)
        except chromadb.errors.InternalError:  # killed while Chroma wrote its files: the next run embeds again
            outcome = "killed, vector files damaged"
            break
        orphans = interrupted["count"] - len(interrupted["chunks"])
        if orphans > 0:
            break
    _write_slice(corpus, version(100, 4))
    shutil.rmtree(clean)
    reference = subprocess.Popen(_index_cmd([corpus], clean), cwd=tmp_path, env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _kill_when(cmd, tmp_path, lambda: False) == "finished"
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    _assert_same(_snapshot(killed), _snapshot(clean))
    print(f"kill points: {outcomes}, update: {outcome} leaving {orphans} orphan vectors")


# ---------- failures in the middle of a run (in process, the real MiniLM) ----------

def _assistant(index: Path, settings, embedder, **changes) -> Assistant:
    return Assistant(Store(index), embedder, settings.model_copy(update=changes) if changes else settings)


def _consistent(assistant: Assistant) -> None:
    store = assistant.store
    assert store.vectors.ids() == store.catalogue.chunk_id_set()
    assert not store.catalogue.dirty()


def test_store_failure_mid_run_keeps_committed_work_and_next_run_finishes(tmp_path, settings, embedder, monkeypatch):
    folder = write_collection(tmp_path / "articles")
    assistant = _assistant(tmp_path / "index", settings, embedder, index_batch_chunks=2)
    calls = {"n": 0}
    real = ChromaVectors.add

    def full_disk(self, chunks, vectors, articles, stage=None):
        calls["n"] += 1
        if calls["n"] == 3:
            real(self, chunks[:1], vectors[:1], articles)  # part of the batch reaches Chroma, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, chunks, vectors, articles, stage)

    monkeypatch.setattr(ChromaVectors, "add", full_disk)
    with pytest.raises(IndexError_, match="disk full.*next `rag index`"):
        assistant.index([folder])
    stored = set(assistant.store.catalogue.article_ids())
    assert 0 < len(stored) < 7 and assistant.store.catalogue.dirty()
    hit = assistant.search("Brightwater dam homes flooded", k=1)  # what was committed is answerable
    assert hit or "dam.txt" not in {Path(assistant.article(a).path).name for a in stored}
    monkeypatch.setattr(ChromaVectors, "add", real)
    report = assistant.index([folder])
    assert len(stored) + len(report.indexed) == 7  # the rest, nothing twice
    _consistent(assistant)
    assert "412 homes" in assistant.ask("How many homes were flooded when the Brightwater dam failed?").text
    assistant.close()


def test_embedding_failure_skips_the_article_and_the_next_run_indexes_it(tmp_path, settings, embedder):
    folder = write_collection(tmp_path / "articles")

    class Flaky:
        name, dim, max_tokens = embedder.name, embedder.dim, embedder.max_tokens

        def embed(self, texts, progress=False):
            if any("Kestrel" in t for t in texts):
                raise RuntimeError("model crashed")
            return embedder.embed(texts)

        def token_counts(self, texts):
            return embedder.token_counts(texts)

    flaky = Assistant(Store(tmp_path / "index"), Flaky(), settings)
    report = flaky.index([folder])
    failed = [s for s in report.skipped if "embedding failed" in s.reason]
    assert len(failed) == 1 and Path(failed[0].path).name == "drone.html" and "model crashed" in failed[0].reason
    assert len(report.indexed) == 6  # the other articles of the batch
    flaky.close()
    assistant = _assistant(tmp_path / "index", settings, embedder)
    again = assistant.index([folder])
    assert len(again.indexed) == 1 and again.chunks_embedded > 0
    assert "899 euros" in assistant.ask("What does the Kestrel drone cost?").text
    _consistent(assistant)
    assistant.close()


def test_failed_update_keeps_the_old_version_answerable(tmp_path, settings, embedder, monkeypatch):
    folder = write_collection(tmp_path / "articles")
    assistant = _assistant(tmp_path / "index", settings, embedder)
    assistant.index([folder])
    ferry = folder / "ferry.md"
    ferry.write_text(ferry.read_text().replace("240 passengers", "310 passengers"), encoding="utf-8")

    def broken(self, items):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SqliteCatalogue, "save_articles", broken)
    with pytest.raises(IndexError_, match="disk full"):
        assistant.index([folder])
    question = "How many passengers does the ferry Aurelia carry?"
    assert "240 passengers" in assistant.ask(question).text
    monkeypatch.undo()
    report = assistant.index([folder])
    assert len(report.replaced) == 1
    answer = assistant.ask(question).text
    assert "310 passengers" in answer and "240" not in answer
    _consistent(assistant)  # the vectors of the failed attempt are gone
    assistant.close()


def test_missing_and_orphan_vectors_are_reconciled(tmp_path, settings, embedder):
    folder = write_collection(tmp_path / "articles")
    assistant = _assistant(tmp_path / "index", settings, embedder)
    assistant.index([folder])
    store = assistant.store
    ids = sorted(store.catalogue.chunk_id_set())
    store.delete_vectors(ids[:3])
    store.vectors.collection().upsert(ids=["ghost:0:0"], embeddings=[[1.0] + [0.0] * (embedder.dim - 1)])
    store.catalogue.set_dirty()  # as a killed run leaves it
    assistant.index([folder])
    _consistent(assistant)
    assistant.close()


def _damage_vector_files(index: Path) -> None:
    """What a kill while Chroma writes its vector files can leave: a header it cannot load (every read of the
    collection then fails, even count())."""
    for segment in (d for d in (index / "chroma").iterdir() if d.is_dir()):
        (segment / "header.bin").write_bytes(b"")


def _damaged_index(tmp_path: Path, settings, static) -> tuple[Path, Path]:
    """An index of the fixture collection and 1,200 short articles (Chroma writes its vector files once a
    collection passes 1,000 vectors; below that it keeps them in its log), closed, its vector files damaged."""
    folder = write_collection(tmp_path / "articles")
    write_jsonl(folder / "towns.jsonl", [
        {"title": f"Council of Town {i} meets", "source": "Town Wire", "published": "2022-05-01",
         "text": f"The council of Town {i} voted {i % 7 + 2} to 1 on Monday to repair road number {i * 13}."}
        for i in range(1200)])
    index = tmp_path / "index"
    assistant = _assistant(index, settings, static)
    assistant.index([folder])
    assistant.close()
    _damage_vector_files(index)
    return folder, index


def test_damaged_vector_files_are_embedded_again_and_nothing_is_lost(tmp_path, settings):
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    folder, index = _damaged_index(tmp_path, settings, static)
    assistant = _assistant(index, settings, static)
    chunk_ids = assistant.store.catalogue.chunk_id_set()
    question = "How many homes did the Brightwater dam failure flood?"
    with pytest.raises(SearchFailed):
        assistant.store.vectors.dense_search(static.embed([question])[0], 1)
    assistant.store.catalogue.set_dirty()  # as a run killed while writing vectors leaves it
    report = assistant.index([folder])
    assert any("could not be read" in n and "embedded again" in n for n in report.notices), report.notices
    assert "embedded again" in report.summary() and not report.indexed
    _consistent(assistant)
    assert assistant.store.catalogue.chunk_id_set() == chunk_ids  # no article lost, none re-chunked
    some = sorted(chunk_ids)[7]
    vector = assistant.store.vectors.collection().get(ids=[some], include=["embeddings"])["embeddings"][0]
    assert assistant.store.vectors.dense_search(np.asarray(vector), 1)[0][0] == some
    answer = assistant.ask(question)
    assert not answer.notice and "412 homes" in answer.text
    assistant.close()


def test_damaged_vector_files_of_a_finished_index_are_repaired_by_the_next_run(tmp_path, settings):
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    folder, index = _damaged_index(tmp_path, settings, static)  # no run was interrupted, yet the files are bad
    assistant = _assistant(index, settings, static)
    notice = assistant.ask("How many homes did the Brightwater dam failure flood?").notice  # keyword search alone
    assert "keyword search alone" in notice and "run `rag index`" in notice
    report = assistant.index([folder])  # nothing changed in the files: the run still finds the damage
    assert report.notices and not report.indexed
    _consistent(assistant)
    assistant.close()
    # damaged again, and a new file: storing its vectors fails (what was stored stays), the next run repairs
    _damage_vector_files(index)
    (folder / "late.txt").write_text("Title: Late news\n\nThe harbour of Ostmark reopened on Monday after repairs.\n")
    assistant = _assistant(index, settings, static)
    with pytest.raises(IndexError_, match="next `rag index` picks them up"):
        assistant.index([folder])
    report = assistant.index([folder])
    assert report.indexed and report.notices
    _consistent(assistant)
    answer = assistant.ask("When did the harbour of Ostmark reopen?")
    assert "Ostmark reopened on Monday" in answer.text and not answer.notice
    assistant.close()


def test_a_read_failing_for_a_full_disk_is_reported_and_drops_no_vector(tmp_path, settings, embedder, monkeypatch):
    folder = write_collection(tmp_path / "articles")
    assistant = _assistant(tmp_path / "index", settings, embedder)
    assistant.index([folder])
    chunk_ids = assistant.store.catalogue.chunk_id_set()
    assistant.store.catalogue.set_dirty()  # the next run reads every vector id to reconcile

    def full(*args, **kwargs):
        raise RuntimeError("Error in compaction: No space left on device (os error 28)")
    with monkeypatch.context() as patch:
        patch.setattr(ChromaVectors, "_ids", full)
        with pytest.raises(IndexError_, match="disk full"):
            assistant.index([folder])
    assert assistant.store.vectors.ids() == chunk_ids  # not taken for damaged files: nothing embedded again
    assistant.index([folder])
    _consistent(assistant)
    assistant.close()


# ---------- one writer per index ----------

HOLD_LOCK = """
import sys, time
from rag.store import Store
store = Store(sys.argv[1]); store.lock.acquire(); print("locked", flush=True); time.sleep(60)
"""


def test_second_writer_is_refused_across_processes(tmp_path, settings, embedder, monkeypatch):
    index = tmp_path / "index"
    folder = write_collection(tmp_path / "articles")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(index)], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == b"locked"
        monkeypatch.setattr("rag.lock.WRITER_WAIT", 0.2)
        assistant = _assistant(index, settings, embedder)
        with pytest.raises(IndexError_, match=rf"another process \(pid {holder.pid}\) is writing the index"):
            assistant.index([folder])
        assert assistant.store.catalogue.counts() == (0, 0)
        cli = subprocess.run(_index_cmd([folder], index), cwd=tmp_path, env=_env(RAG_EMBEDDER=settings.embedder),
                             capture_output=True, text=True)
        assert cli.returncode == 2 and "is writing the index" in cli.stderr and "Traceback" not in cli.stderr
    finally:
        holder.kill()
        holder.wait()
    assert assistant.index([folder]).indexed  # the lock is free once the holder is gone
    assistant.close()


# ---------- a running Assistant sees another process's writes ----------

def test_running_assistant_sees_articles_indexed_by_another_process(tmp_path, settings):
    from rag.embed import make_embedder

    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    index = tmp_path / "index"
    first = write_collection(tmp_path / "first")
    assistant = Assistant(Store(index), static, settings)
    assistant.index([first])
    question = "What did the Lumora observatory name its new telescope?"
    assert not any("Hesperon" in h.chunk.text for h in assistant.search(question))
    second = tmp_path / "second"
    second.mkdir()
    (second / "telescope.txt").write_text(
        "Lumora observatory names its telescope\n\nThe Lumora observatory named its new telescope Hesperon on "
        "Thursday. The mirror is 4.2 metres wide.", encoding="utf-8")
    errors: list[Exception] = []
    import threading

    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                assistant.ask("How many homes were flooded when the Brightwater dam failed?")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        writer = subprocess.run(_index_cmd([second], index), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    finally:
        stop.set()
        asker.join()
    assert writer.returncode == 0, writer.stderr
    assert not errors, errors[:3]
    answer = assistant.ask(question)
    assert "Hesperon" in answer.text and answer.citations
    assistant.close()


# ---------- broken, read-only, full ----------

def test_corrupt_database_is_a_clear_error_and_rebuild_fixes_it(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    (index / "articles.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(IndexError_, match="corrupt.*--rebuild"):
        Store(index)
    ask = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "anything", "--index", str(index)],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert ask.returncode == 2 and "corrupt" in ask.stderr and "Traceback" not in ask.stderr
    folder = write_collection(tmp_path / "articles")
    fixed = subprocess.run(_index_cmd([folder], index) + ["--rebuild"], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert Store(index).catalogue.counts()[0] == 7


def test_damaged_lexical_index_is_a_clear_error(tmp_path, settings, embedder):
    folder = write_collection(tmp_path / "articles")
    assistant = _assistant(tmp_path / "index", settings, embedder)
    assistant.index([folder])
    assistant.close()
    (tmp_path / "index" / "bm25" / "manifest.json").write_text('{"segments": ["half', encoding="utf-8")
    opened = _assistant(tmp_path / "index", settings, embedder)  # the lexical index is read when first searched
    try:
        with pytest.raises(IndexError_, match="lexical index.*--rebuild"):
            opened.ask("What did the Brightwater dam flood?")
    finally:
        opened.close()


def _unshare(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=_env(), cwd=ROOT)


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = _unshare("mount -t tmpfs -o size=1m tmpfs /mnt && echo ok")
    return probe.returncode == 0 and "ok" in probe.stdout


@pytest.mark.skipif(not _can_mount(), reason="needs unshare and mount (CAP_SYS_ADMIN)")
def test_read_only_and_full_disk_are_clear_errors(tmp_path):
    folder = write_collection(tmp_path / "articles")
    index = tmp_path / "index"
    py = sys.executable
    built = subprocess.run(_index_cmd([folder], index), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    read_only = _unshare(f"mount --bind {index} {index} && mount -o remount,bind,ro {index} && "
                         f"{py} -m rag.cli index {folder} --index {index}; echo rc=$?; "
                         f"{py} -m rag.cli ask 'Who won the Fenwick marathon?' --index {index}; echo rc=$?")
    assert "rc=2" in read_only.stdout and "read-only" in read_only.stderr, read_only.stderr
    assert "Traceback" not in read_only.stderr
    big = tmp_path / "big"
    big.mkdir()
    for i in range(40):
        (big / f"a{i}.txt").write_text(f"Article {i}\n\n" + "Plenty of words about the harvest. " * 3000)
    small = tmp_path / "small"
    small.mkdir()
    full = _unshare(f"mount -t tmpfs -o size=700k tmpfs {small} && "
                    f"{py} -m rag.cli index {big} --index {small}/index; echo rc=$?")
    assert "rc=2" in full.stdout and "disk full" in full.stderr, full.stdout + full.stderr
    assert "Traceback" not in full.stderr


def test_a_failed_write_with_no_space_left_is_called_disk_full(tmp_path, monkeypatch):
    from collections import namedtuple

    from rag.errors import storage_error

    error = Exception("Error in compaction: Failed to apply logs to the metadata segment")  # Chroma, disk full
    assert "cannot be used" in str(storage_error(error, tmp_path / "index"))  # plenty of space here
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("rag.errors.shutil.disk_usage", lambda folder: usage(700 << 10, 690 << 10, 10 << 10))
    assert str(storage_error(error, tmp_path / "index")).startswith("disk full while writing the index")
    # an error that says what it is keeps its own message, however full the disk
    assert "locked by another process" in str(storage_error(Exception("database is locked"), tmp_path))


# ---------- concurrency ----------

def test_32_concurrent_asks_from_threads(tmp_path, settings, embedder):
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import MARIUPOL_SEED

    folder = write_collection(tmp_path / "articles")
    shutil.copy(MARIUPOL_SEED, folder / MARIUPOL_SEED.name)
    assistant = _assistant(tmp_path / "index", settings, embedder)
    assistant.index([folder])
    questions = {
        "How many homes were flooded when the Brightwater dam failed?": "412 homes",
        "How many passengers does the ferry Aurelia carry?": "240 passengers",
        "What does the Kestrel drone cost?": "899 euros",
        "Who won the Fenwick marathon?": "Tomas Reyes",
    }
    expected = {q: assistant.ask(q).text for q in questions}
    asks = [q for q in questions for _ in range(8)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(assistant.ask, asks))
    seconds = time.monotonic() - started
    for question, answer in zip(asks, answers):
        assert answer.text == expected[question] and questions[question] in answer.text
        assert answer.citations
        for c in answer.citations:
            assert assistant.article(c.article_id).text[c.start:c.end] == c.quote
    assert assistant.embedder is embedder  # one model, shared
    print(f"32 concurrent asks in {seconds:.2f} s")
    assistant.close()
