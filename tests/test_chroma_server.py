"""Chroma server mode: a real `chroma run` started by the test; index, ask, and index from a second process
while the first answers. SQLite and BM25 stay in the (shared) local index folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rag import Assistant
from rag.api import open_store
from tests.conftest import ROOT, write_collection

CHROMA = Path(sys.executable).parent / "chroma"
STATIC = "model2vec:all-MiniLM-L6-v2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMA.exists():
        pytest.skip("no chroma CLI in the venv")
    port = _free_port()
    proc = subprocess.Popen([str(CHROMA), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", str(tmp_path_factory.mktemp("chroma-server"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("chroma run did not start")
            time.sleep(0.2)
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_index_and_ask_through_a_chroma_server_while_another_process_indexes(tmp_path, server, settings):
    from rag.embed import make_embedder

    config = settings.model_copy(update={"chroma_host": "127.0.0.1", "chroma_port": server,
                                         "chroma_collection": "team-news"})
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    index = tmp_path / "index"
    assistant = Assistant(open_store(index, config), static, config)
    report = assistant.index([write_collection(tmp_path / "first")])
    assert len(report.indexed) == 7
    assert not (index / "chroma").exists()  # the vectors are on the server
    assert assistant.store.vectors.count() == assistant.store.catalogue.counts()[1]
    assert "412 homes" in assistant.ask("How many homes were flooded when the Brightwater dam failed?").text

    second = tmp_path / "second"
    second.mkdir()
    (second / "telescope.txt").write_text(
        "Lumora observatory names its telescope\n\nThe Lumora observatory named its new telescope Hesperon on "
        "Thursday.", encoding="utf-8")
    errors: list[Exception] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                assert "Tomas Reyes" in assistant.ask("Who won the Fenwick marathon?").text
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(PYTHONPATH=str(ROOT), RAG_EMBEDDER=STATIC, RAG_CHROMA_HOST="127.0.0.1",
               RAG_CHROMA_PORT=str(server), RAG_CHROMA_COLLECTION="team-news")
    try:
        writer = subprocess.run([sys.executable, "-m", "rag.cli", "index", str(second), "--index", str(index)],
                                cwd=tmp_path, env=env, capture_output=True, text=True)
    finally:
        stop.set()
        asker.join()
    assert writer.returncode == 0, writer.stderr
    assert not errors, errors[:3]
    answer = assistant.ask("What did the Lumora observatory name its new telescope?")
    assert "Hesperon" in answer.text and answer.citations
    assert assistant.store.vectors.count() == assistant.store.catalogue.counts()[1]
    assistant.close()


def test_a_new_index_folder_refuses_a_collection_that_holds_vectors(tmp_path, server, settings):
    from rag.embed import make_embedder
    from rag.errors import IndexError_

    config = settings.model_copy(update={"chroma_host": "127.0.0.1", "chroma_port": server,
                                         "chroma_collection": "shared-one"})
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    first = Assistant(open_store(tmp_path / "a", config), static, config)
    first.index([write_collection(tmp_path / "articles")])
    first.close()
    with pytest.raises(IndexError_, match="already holds .* vectors"):
        Assistant(open_store(tmp_path / "b", config), static, config)


def test_unreachable_server_is_a_clear_error(tmp_path, settings):
    from rag.embed import make_embedder
    from rag.errors import IndexError_

    config = settings.model_copy(update={"chroma_host": "127.0.0.1", "chroma_port": _free_port()})
    static = make_embedder(STATIC, cache_dir=settings.cache_dir)
    with pytest.raises(IndexError_, match="Chroma server"):
        Assistant(open_store(tmp_path / "index", config), static, config)
