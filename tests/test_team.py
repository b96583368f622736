"""Team mode end to end (issue 16): PostgreSQL (tests/pg_server.py) holds the catalogue and the writer lock, a
`chroma run` server (tests/chroma_server.py) the vectors, and each "host" is an `Assistant` on a folder of its own
that is only its cache. Host A indexes, host B (an empty folder) answers with exact citations and follows what host
C adds without a restart, ranking exactly like a local index of the same articles; team mode without a Chroma
server is refused; a shared collection is rebuilt only with --yes; a host's prune never removes another host's
articles; Slack feedback is shared; a writer that loses its lock stops. The heavier multi-process cases are in
tests/test_team_hosts.py."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from rag import Assistant
from rag.errors import IndexError_, UserError
from tests.chroma_server import chroma_server  # noqa: F401 - fixture
from tests.conftest import DOVRIN, check_quotes, write_collection, write_jsonl

TELESCOPE = ("Lumora observatory names its telescope\n\nThe Lumora observatory named its new telescope Hesperon on "
             "Thursday. The mirror is 4.2 metres wide.")
QUESTIONS = ["How many homes were flooded when the Brightwater dam failed?", "Dovrin bridge collapse",
             "electric ferry passengers Lake Orrin", "Which telescope did the Lumora observatory name?",
             "How many residents were evacuated?"]
_names = itertools.count(1)


@pytest.fixture
def team(settings, pg_url, chroma_server):  # noqa: F811 - chroma_server is the fixture
    """Settings of a team-mode collection of this test's own (one schema and Chroma collection per test)."""
    return settings.model_copy(update={
        "database_url": SecretStr(pg_url), "chroma_host": "127.0.0.1", "chroma_port": chroma_server.port,
        "chroma_collection": f"team-{os.getpid()}-{next(_names)}"})


def host(folder: Path, config, embedder) -> Assistant:
    return Assistant.open(folder, config, embedder=embedder)


def ranked(assistant: Assistant, question: str) -> list[tuple[str, float, float]]:
    return [(h.chunk.id, round(h.lexical, 4), round(h.dense, 4)) for h in assistant.search(question, k=8)]


def test_hosts_share_one_index_and_rank_like_a_local_one(tmp_path, team, settings, embedder):
    files = write_collection(tmp_path / "files")
    write_jsonl(files / "dovrin.jsonl", DOVRIN)
    a = host(tmp_path / "host-a", team, embedder)
    report = a.index([files])
    assert len(report.indexed) == 10
    b = host(tmp_path / "host-b", team, embedder)  # an empty folder: answers from the servers
    local = host(tmp_path / "local", settings, embedder)
    try:
        local.index([files])
        assert b.article_ids() == a.article_ids() == local.article_ids()
        answer = b.ask("How many homes were flooded when the Brightwater dam failed?")
        assert "412 homes" in answer.text and answer.citations
        check_quotes(b, answer)
        assert not (tmp_path / "host-b" / "chroma").exists() and not (tmp_path / "host-b" / "articles.sqlite").exists()

        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "telescope.txt").write_text(TELESCOPE, encoding="utf-8")
        c = host(tmp_path / "host-c", team, embedder)
        try:
            assert len(c.index([tmp_path / "c"]).indexed) == 1
        finally:
            c.close()
        local.index([tmp_path / "c"])
        answer = b.ask("Which telescope did the Lumora observatory name?")  # no restart: B follows the generation
        assert "Hesperon" in answer.text
        check_quotes(b, answer)
        for question in QUESTIONS:  # same BM25 statistics, same vectors: the same hits with the same scores
            assert ranked(b, question) == ranked(local, question), question
        assert b.stats()["articles"] == local.stats()["articles"] == 11
    finally:
        for x in (a, b, local):
            x.close()


def test_a_host_cache_follows_removals_and_a_rebuilt_collection(tmp_path, team, embedder):
    from rag.api import delete_index, has_index

    files = tmp_path / "files"
    files.mkdir()
    write_jsonl(files / "dovrin.jsonl", DOVRIN)
    (files / "telescope.txt").write_text(TELESCOPE, encoding="utf-8")
    a = host(tmp_path / "host-a", team, embedder)
    b = host(tmp_path / "host-b", team, embedder)
    try:
        a.index([files])
        telescope = next(i for i in a.article_ids() if a.article(i).title.startswith("Lumora"))
        assert b.search("Hesperon telescope")[0].article.id == telescope
        a.remove([telescope])
        assert all(h.article.id != telescope for h in b.search("Hesperon telescope"))
        assert b.retriever._snap.lexical_fits and b.retriever._snap.doc_lexical_fits
        a.close()
        at_a = team.model_copy(update={"index_dir": tmp_path / "host-a"})
        with pytest.raises(UserError, match="--yes"):
            delete_index(at_a)
        assert has_index(at_a)
        delete_index(at_a, confirmed=True)  # the schema and the server's collections go, and host A's cache
        assert not has_index(at_a) and not (tmp_path / "host-a" / "bm25").exists()
        a = host(tmp_path / "host-a", team, embedder)
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "telescope.txt").write_text(TELESCOPE, encoding="utf-8")
        a.index([tmp_path / "other"])  # the new catalogue's generations start again
        hits = b.search("Hesperon telescope Dovrin")
        assert [h.article.title for h in hits] == ["Lumora observatory names its telescope"]
        assert b.retriever._snap.lexical_fits
    finally:
        a.close()
        b.close()


def test_team_mode_without_a_chroma_server_is_refused(tmp_path, settings, pg_url, monkeypatch, capsys):
    from rag.api import open_assistant
    from rag.cli import main

    config = settings.model_copy(update={"database_url": SecretStr(pg_url), "chroma_host": "", "index_dir": tmp_path})
    with pytest.raises(UserError, match="RAG_CHROMA_HOST"):
        open_assistant(config, must_exist=False)
    monkeypatch.setenv("RAG_DATABASE_URL", pg_url)
    monkeypatch.delenv("RAG_CHROMA_HOST", raising=False)
    assert main(["stats", "--index", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "RAG_CHROMA_HOST" in err and "s3cret" not in err
    assert not (tmp_path / "articles.sqlite").exists()


def test_rebuild_of_a_shared_collection_needs_yes(tmp_path, team, embedder, monkeypatch, capsys):
    from rag.cli import main

    files = tmp_path / "files"
    files.mkdir()
    write_jsonl(files / "dovrin.jsonl", DOVRIN)
    a = host(tmp_path / "host-a", team, embedder)
    try:
        a.index([files])
    finally:
        a.close()
    for name, value in (("RAG_DATABASE_URL", team.database_url.get_secret_value()), ("RAG_CHROMA_HOST", "127.0.0.1"),
                        ("RAG_CHROMA_PORT", str(team.chroma_port)), ("RAG_CHROMA_COLLECTION", team.chroma_collection)):
        monkeypatch.setenv(name, value)
    assert main(["index", "--rebuild", str(files), "--index", str(tmp_path / "host-c")]) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "every host" in err
    assert main(["stats", "--json", "--index", str(tmp_path / "host-c")]) == 0  # nothing was deleted
    assert '"articles": 3' in capsys.readouterr().out
    monkeypatch.delenv("RAG_CHROMA_HOST")
    assert main(["ask", "Dovrin?", "--index", str(tmp_path / "host-c")]) == 2
    assert "RAG_CHROMA_HOST" in capsys.readouterr().err


def test_a_missing_shared_index_says_what_to_run(tmp_path, team):
    from rag.api import open_assistant

    with pytest.raises(UserError, match=f"no index in collection '{team.chroma_collection}'.*rag index") as caught:
        open_assistant(team.model_copy(update={"index_dir": tmp_path / "empty"}))
    assert "s3cret" not in str(caught.value)


def test_prune_on_one_host_never_removes_another_hosts_articles(tmp_path, team, embedder, monkeypatch):
    import rag.index

    shared = tmp_path / "shared"  # the same path on both hosts: host A's files there are not on host C's disk
    (shared / "a").mkdir(parents=True)
    write_jsonl(shared / "a" / "dovrin.jsonl", DOVRIN)
    (shared / "c").mkdir()
    (shared / "c" / "telescope.txt").write_text(TELESCOPE, encoding="utf-8")
    a = host(tmp_path / "host-a", team, embedder)
    c = host(tmp_path / "host-c", team, embedder)
    try:
        monkeypatch.setattr(rag.index.socket, "gethostname", lambda: "host-a")
        dovrin = a.index([shared / "a"]).indexed
        monkeypatch.setattr(rag.index.socket, "gethostname", lambda: "host-c")
        assert len(c.index([shared / "c"]).indexed) == 1
        (shared / "a" / "dovrin.jsonl").rename(tmp_path / "elsewhere.jsonl")  # on A's disk only
        (shared / "c" / "telescope.txt").unlink()
        report = c.index([shared], prune=True)  # C's telescope is gone: pruned; A's articles are not C's
        assert len(report.pruned) == 1 and set(dovrin) <= set(c.article_ids())
        assert c.index([shared / "c"], prune=True).pruned == ()
        monkeypatch.setattr(rag.index.socket, "gethostname", lambda: "host-a")
        assert sorted(a.index([shared], prune=True).pruned) == sorted(dovrin)  # A prunes its own
        assert a.article_ids() == []
    finally:
        a.close()
        c.close()


def test_feedback_is_shared_by_replicas(tmp_path, team, embedder):
    files = tmp_path / "files"
    files.mkdir()
    write_jsonl(files / "dovrin.jsonl", DOVRIN)
    one = host(tmp_path / "one", team, embedder)
    two = host(tmp_path / "two", team, embedder)
    try:
        one.add_feedback({"vote": "up", "question": "Dovrin?", "citations": [{"article_id": "x", "quote": "é"}]})
        two.add_feedback({"vote": "down", "question": "Bridge?"})
        assert [f["vote"] for f in one.feedback()] == [f["vote"] for f in two.feedback()] == ["up", "down"]
        assert one.feedback()[0]["citations"][0]["quote"] == "é"
    finally:
        one.close()
        two.close()


def test_a_writer_that_loses_its_lock_stops_and_the_next_run_converges(tmp_path, team, embedder):
    import psycopg

    files = write_collection(tmp_path / "files")
    write_jsonl(files / "dovrin.jsonl", DOVRIN)
    a = host(tmp_path / "host-a", team.model_copy(update={"index_batch_chunks": 1}), embedder)
    url = team.database_url.get_secret_value()

    def cut(stage: str, done: int, total: int) -> None:
        if stage == "embedding" and done == 0:  # as a database restart would: the lock's connection ends
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name LIKE 'rag writer%%'")
    try:
        with pytest.raises(IndexError_, match="writer lock .* was lost.*run the same `rag index` again"):
            a.index([files], on_progress=cut)
        assert a.article_ids() == []  # nothing was written after the lock was lost
        report = a.index([files])
        assert len(report.indexed) == 10 and a.store.vectors.count() == a.store.catalogue.counts()[1]
        assert "412 homes" in a.ask("How many homes were flooded when the Brightwater dam failed?").text
    finally:
        a.close()

