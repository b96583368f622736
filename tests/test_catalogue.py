"""The catalogue interface (`rag.catalogue.Catalogue`): one conformance suite run on both catalogues.

`SqliteCatalogue` in a temporary folder and `PostgresCatalogue` on a real PostgreSQL server (tests/pg_server.py;
skipped, saying why, without one) must answer every method alike. Then what only team mode has: collections
sharing a database, migrations raced by two processes, the password kept out of messages, a server restart
survived, and the advisory writer lock (released by the server when its holder is killed).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag.catalogue import MARKS_VERSION, date_ord
from rag.errors import IndexError_
from rag.news import marks as story_marks
from rag.types import Article, Chunk
from tests.pg_server import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
_names = itertools.count(1)


def new_collection() -> str:
    """A collection (schema) no other test uses: tests share one database, as team mode's collections do."""
    return f"test-{os.getpid()}-{next(_names)}"


@pytest.fixture(params=["sqlite", "postgres"])
def cat(request, tmp_path):
    if request.param == "sqlite":
        from rag.catalogue import SqliteCatalogue

        catalogue = SqliteCatalogue(tmp_path)
    else:
        from rag.catalogue_pg import PostgresCatalogue

        catalogue = PostgresCatalogue(request.getfixturevalue("pg_url"), new_collection())
    yield catalogue
    catalogue.close()


@pytest.fixture
def pg_cat(pg_url):
    from rag.catalogue_pg import PostgresCatalogue

    catalogue = PostgresCatalogue(pg_url, new_collection())
    yield catalogue
    catalogue.close()


TEXT = ("The Brightwater dam in Velmora failed early on Tuesday, flooding 412 homes in the valley below. "
        "Engineers had warned in March that the spillway was cracked. Rescue teams evacuated 1,300 residents.")


def article(id_: str, published: str = "", source: str = "Wire", text: str = TEXT, path: str = "") -> Article:
    return Article(id=id_, title=f"Title {id_}", text=text, source=source, published=published,
                   url=f"https://example.com/{id_}", path=path or f"/data/{id_}.txt", authors=("Ann Lee", "Bo Chen"))


def chunks(a: Article, n: int = 3, prefix: str = "") -> list[Chunk]:
    """n chunks whose ids sort in the opposite order of their position (tables must keep positions)."""
    step = len(a.text) // n
    return [Chunk(id=f"{prefix or a.id}:{chr(ord('z') - i)}", article_id=a.id, start=i * step, end=(i + 1) * step,
                  text=a.text[i * step:(i + 1) * step]) for i in range(n)]


def save(cat, *arts: Article, n: int = 3) -> dict[str, list[Chunk]]:
    out = {a.id: chunks(a, n) for a in arts}
    cat.save_articles([(a, f"hash-{a.id}", out[a.id]) for a in arts])
    return out


# ---------------------------------------------------------------------------------------------- conformance


def test_meta_generation_dirty_and_runs(cat):
    assert cat.meta("embedder") is None and cat.generation() == 0 and not cat.dirty()
    cat.set_meta("embedder", "model2vec:x")
    cat.set_meta("embedder", "onnx:y")  # replaced
    assert cat.meta("embedder") == "onnx:y"
    cat.set_dirty()
    cat.set_dirty()
    assert cat.dirty()
    cat.finish_run()
    assert not cat.dirty() and cat.generation() == 1
    assert cat.meta("last_indexed").startswith(time.strftime("%Y-", time.gmtime()))
    cat.bump_generation()
    assert cat.generation() == 2 and not cat.dirty()
    cat.set_meta("last_indexed", "old")
    cat.touch()
    assert cat.meta("last_indexed") != "old"
    assert isinstance(cat.where, str) and cat.where


def test_articles_saved_read_replaced_and_deleted(cat):
    a, b = article("a1", "2022-03-01", path="/data/x.jsonl#2"), article("b2", text="Short text.")
    saved = save(cat, a, b)
    assert cat.article("a1") == a
    assert cat.article("nope") is None
    assert cat.article_hash("a1") == "hash-a1" and cat.article_hash("nope") is None
    assert cat.id_with_hash("hash-b2") == "b2" and cat.id_with_hash("nope") is None
    assert cat.counts() == (2, 6)
    assert cat.chunk_ids_of("a1") == [c.id for c in saved["a1"]]
    assert cat.marks()["a1"] == story_marks(TEXT)

    # saved again with other content: one article, its chunks and marks replaced, not added
    a2 = Article(id="a1", title="New", text="Another text about a ferry on Lake Orrin, which carries 240 people.",
                 published="", authors=())
    new = [Chunk("a1:only", "a1", 0, 10, a2.text[:10])]
    cat.save_articles([(a2, "hash-new", new)])
    assert cat.article("a1") == a2 and cat.article_hash("a1") == "hash-new" and cat.id_with_hash("hash-a1") is None
    assert cat.chunk_ids_of("a1") == ["a1:only"] and cat.counts() == (2, 4)
    assert cat.marks()["a1"] == story_marks(a2.text)

    assert cat.delete_article("b2") == [c.id for c in saved["b2"]]
    assert cat.article("b2") is None and cat.counts() == (1, 1) and "b2" not in cat.marks()
    assert cat.delete_article("b2") == []
    cat.save_articles([])  # nothing to do


def test_a_long_text_is_read_in_slices_of_the_version_read(cat, monkeypatch):
    """`article(id, whole=False)`: a text longer than WHOLE_CHARS is a `StoredText` whose slices (counted in
    characters as Python counts them, emoji too) come from `text_slice`, of that version of the article only."""
    import rag.catalogue
    from rag.types import StoredText

    text = ("Kestrelmouth \U0001f4f8 harbour. " * 40 + "\nSecond line é.") * 3
    save(cat, article("long", text=text), article("short", text="Short text."))
    monkeypatch.setattr(rag.catalogue, "WHOLE_CHARS", 100)
    monkeypatch.setattr(StoredText, "BLOCK", 16)
    if cat.__class__.__module__ == "rag.catalogue_pg":
        monkeypatch.setattr("rag.catalogue_pg.WHOLE_CHARS", 100)
    assert cat.article("long") == article("long", text=text)  # whole by default
    assert cat.article("short", whole=False) == article("short", text="Short text.")
    lazy = cat.article("long", whole=False)
    assert isinstance(lazy.text, StoredText) and len(lazy.text) == len(text) and str(lazy.text) == text
    assert lazy.id == "long" and lazy.authors == ("Ann Lee", "Bo Chen") and lazy.url == "https://example.com/long"
    for a, b in [(0, 1), (13, 14), (13, 30), (len(text) - 5, len(text)), (5, 5), (900, 2000)]:
        assert lazy.text[a:b] == text[a:b] and cat.text_slice("long", a, b, "hash-long") == text[a:b]
    assert cat.text_slice("long", 0, 5, "hash-other") is None and cat.text_slice("nope", 0, 5, "hash-long") is None
    cat.save_articles([(article("long", text="Replaced."), "hash-new", [])])
    with pytest.raises(IndexError_, match="indexed again"):
        lazy.text[2000:2100]  # not read before: the new version's would not be this text's


def test_orders_ids_dates_sources_and_the_chunk_table(cat):
    # ids in byte order ("B" before "a"), as SQLite and Python sort them, whatever the database's locale
    arts = [article("a", "2022-03-05", "Valley Post"), article("B", "", "River Times"),
            article("c", "2022-03-01", "River Times"), article("d", "2021-12-31", ""), article("_e", "", "River Times"),
            article("f", "2022-03-05", "Valley Post"), article("g", "2022-03-05", "River Times")]
    saved = save(cat, *reversed(arts))
    assert cat.article_ids() == sorted(a.id for a in arts) == ["B", "_e", "a", "c", "d", "f", "g"]
    # earliest first, a tie by id, the undated last (by id)
    assert cat.ids_by_date() == ["d", "c", "a", "f", "g", "B", "_e"]
    assert cat.sources() == ["River Times", "Valley Post"]  # the most frequent first; "" left out

    table = cat.chunk_table()
    expected = [c for aid in sorted(saved) for c in saved[aid]]  # article id order, then position in the article
    assert table.ids == [c.id for c in expected]
    assert table.article_ids == [c.article_id for c in expected]
    assert table.starts.tolist() == [c.start for c in expected] and table.ends.tolist() == [c.end for c in expected]
    by_id = {a.id: a for a in arts}
    assert table.published_ord.tolist() == [date_ord(by_id[c.article_id].published) for c in expected]
    assert table.sources == [by_id[c.article_id].source for c in expected]

    want = [saved["c"][2], saved["a"][0], Chunk("missing", "a", 0, 1, "")]
    rows = cat.chunks_by_id([c.id for c in want])
    assert sorted(rows) == sorted((c.id, c.article_id, c.start, c.end) for c in want[:2])
    assert cat.chunks_by_id([]) == []
    assert cat.chunk_id_set() == {c.id for c in expected}


def test_empty_catalogue(cat):
    assert cat.counts() == (0, 0) and cat.article_ids() == [] and cat.ids_by_date() == [] and cat.sources() == []
    table = cat.chunk_table()
    assert table.ids == [] and len(table.starts) == 0
    assert cat.full_progress() == (0, 0) and cat.without_full() == [] and cat.full_ids() == set()
    assert cat.marks() == {} and cat.stories() == {} and cat.files() == {} and cat.removed_ids() == set()


def test_full_stage_progress(cat):
    saved = save(cat, article("b"), article("a"))
    order = [c for aid in ("a", "b") for c in saved[aid]]
    assert cat.full_progress() == (0, 6)
    assert cat.without_full() == [(c.id, c.article_id, c.start, c.end) for c in order]
    cat.mark_full([order[0].id, order[4].id])
    cat.mark_full([order[0].id])  # twice is fine
    assert cat.full_progress() == (2, 6) and cat.full_ids() == {order[0].id, order[4].id}
    assert [r[0] for r in cat.without_full()] == [c.id for i, c in enumerate(order) if i not in (0, 4)]
    cat.forget_full([order[4].id, "never"])
    assert cat.full_ids() == {order[0].id}
    cat.mark_full([c.id for c in order])
    assert cat.full_progress() == (6, 6) and cat.without_full() == []
    cat.delete_article("a")  # its full rows may stay; progress counts the chunks that exist
    assert cat.full_progress() == (3, 3)


def test_marks_and_stories(cat):
    other = "A different story entirely: the new electric ferry Aurelia entered service on Lake Orrin on Sunday."
    save(cat, article("a"), article("b", text=other))
    cat.set_meta("marks", "0")
    cat.mark_all()
    assert cat.marks() == {"a": story_marks(TEXT), "b": story_marks(other)}
    assert cat.meta("marks") == MARKS_VERSION
    cat.save_stories({"b": "a", "a": "a"})
    assert cat.stories() == {"a": "a", "b": "a"}
    cat.save_stories({"x": "y"})  # replaced, not merged
    assert cat.stories() == {"x": "y"}
    cat.save_stories({})
    assert cat.stories() == {}


def test_removed_articles_and_restore_by_path(cat):
    removed = [article("1", path="/d/a.jsonl"), article("2", path="/d/a.jsonl#4"), article("3", path="/d/a.jsonl2"),
               article("4", path="/d/a.jsonl.gz#1"), article("5", path="/d/b.txt")]
    cat.mark_removed(removed)
    cat.mark_removed([article("5", path="/d/c.txt")])  # removed again from another file: the last path counts
    cat.mark_removed([])
    assert cat.removed_ids() == {"1", "2", "3", "4", "5"}
    cat.save_file("/d/a.jsonl", 10, 20, ["1", "2"])
    cat.save_file("/d/a.jsonl2", 10, 20, ["3"])
    # the file itself and its lines ("#N"), not another file whose name starts the same
    assert sorted(cat.restore_removed("/d/a.jsonl")) == ["1", "2"]
    assert cat.removed_ids() == {"3", "4", "5"}
    assert cat.file_record("/d/a.jsonl") is None and cat.file_record("/d/a.jsonl2") is not None
    assert cat.restore_removed("/d/b.txt") == []
    assert cat.restore_removed("/d/c.txt") == ["5"]
    cat.save_file("/d/z.txt", 1, 2, [])
    assert cat.restore_removed("/d/z.txt") == [] and cat.file_record("/d/z.txt") is not None  # nothing restored


def test_files_seen(cat):
    assert cat.file_record("/d/a.txt") is None
    cat.save_file("/d/a.txt", 120, 1_700_000_000_123_456_789, ["x", "y"])
    cat.save_file("/d/b.txt", 5, 6, [])
    assert cat.file_record("/d/a.txt") == (120, 1_700_000_000_123_456_789, ["x", "y"])
    cat.save_file("/d/a.txt", 121, 7, ["y"])
    assert cat.file_record("/d/a.txt") == (121, 7, ["y"])
    assert cat.files() == {"/d/a.txt": ["y"], "/d/b.txt": []}
    cat.forget_file("/d/a.txt")
    cat.forget_file("/d/never.txt")
    assert cat.files() == {"/d/b.txt": []}


def test_remember_first_wins_until_expired(cat):
    assert not cat.remembered("event", "E1", now=100.0)
    assert cat.remember("event", "E1", until=160.0, now=100.0)
    assert not cat.remember("event", "E1", until=999.0, now=120.0)  # the first keeps it
    assert cat.remembered("event", "E1", now=159.0)
    assert not cat.remembered("thread", "E1", now=120.0)  # kinds are apart
    assert cat.remember("thread", "E1", until=200.0, now=120.0)
    assert not cat.remembered("event", "E1", now=160.0)  # expired at its time
    assert cat.remember("event", "E1", until=300.0, now=160.0)  # an expired key is taken again
    assert cat.remembered("event", "E1", now=299.0) and not cat.remembered("event", "E1", now=300.0)


def test_threads_use_one_catalogue_at_once(cat):
    save(cat, article("a"))
    errors: list[BaseException] = []
    wins: list[bool] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                assert cat.counts() == (1, 3) and cat.article("a").id == "a"
                cat.save_file(f"/t/{n}-{i}", n, i, [str(n)])
                wins.append(cat.remember("event", f"shared-{i}", until=1e12, now=1.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(cat.files()) == 120
    assert wins.count(True) == 10  # each shared key won by exactly one thread


# ---------------------------------------------------------------------------------------------- PostgreSQL only


def test_collections_share_one_database_apart(pg_url):
    from rag.catalogue_pg import PostgresCatalogue, schema_name

    base = new_collection()
    one, two = PostgresCatalogue(pg_url, f"{base}-news"), PostgresCatalogue(pg_url, f"{base}_news")
    try:
        assert one.schema != two.schema  # "-" and "_" made alike would collide: a hash keeps them apart
        assert schema_name("chunks") == "rag_chunks"
        save(one, article("a"))
        one.set_meta("embedder", "one")
        one.save_file("/f", 1, 2, ["a"])
        assert two.counts() == (0, 0) and two.meta("embedder") is None and two.files() == {}
        assert two.remember("event", "k", 10.0, 1.0) and one.remember("event", "k", 10.0, 1.0)
        again = PostgresCatalogue(pg_url, f"{base}-news")  # the same collection from another process or replica
        assert again.counts() == (1, 3) and again.meta("embedder") == "one"
        again.close()
    finally:
        one.close()
        two.close()


OPEN_AT_ONCE = """
import sys, time
from rag.catalogue_pg import PostgresCatalogue
start = float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
cat = PostgresCatalogue(sys.argv[1], sys.argv[2])
print(cat.version(), flush=True)
cat.close()
"""


def test_migrations_applied_once_when_two_processes_open_at_once(pg_url):
    import psycopg

    from rag.catalogue_pg import SCHEMA_VERSION, schema_name

    name = new_collection()
    start = str(time.time() + 2.0)  # both import first, then open within milliseconds of each other
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, pg_url, name, start], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert [o[0].strip() for o in outs] == [str(SCHEMA_VERSION)] * 3
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT version FROM {schema_name(name)}.schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_an_older_schema_is_migrated_and_a_newer_one_refused(pg_url):
    import psycopg

    from rag.catalogue_pg import SCHEMA_VERSION, PostgresCatalogue

    name = new_collection()
    cat = PostgresCatalogue(pg_url, name)
    save(cat, article("a"))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to version 1: before the bot's table
        conn.execute(f"SET search_path TO {cat.schema}")
        conn.execute("DROP TABLE handled, feedback")
        conn.execute("DROP INDEX marks_hash")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    cat.close()
    cat = PostgresCatalogue(pg_url, name)
    assert cat.version() == SCHEMA_VERSION and cat.counts() == (1, 3)  # kept what it had
    assert cat.remember("event", "k", 10.0, 1.0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {cat.schema}.schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    cat.close()
    with pytest.raises(IndexError_, match="newer than this rag knows.*upgrade rag"):
        PostgresCatalogue(pg_url, name)


def test_the_password_never_shows(pg_server, pg_url):
    from rag.catalogue_pg import PostgresCatalogue

    cat = PostgresCatalogue(pg_url, new_collection())
    assert PASSWORD not in cat.where and PASSWORD not in repr(cat) and "127.0.0.1" in cat.where
    cat.close()
    with pytest.raises(IndexError_) as refused:
        PostgresCatalogue(pg_server.url(password="wrong-" + PASSWORD), new_collection())
    assert "refused the login" in str(refused.value) and "RAG_DATABASE_URL" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    down = pg_url.replace(f":{pg_server.port}/", f":{_closed_port()}/")
    with pytest.raises(IndexError_, match="cannot reach the PostgreSQL database") as unreachable:
        PostgresCatalogue(down, new_collection())
    assert PASSWORD not in str(unreachable.value)


def _closed_port() -> int:
    from tests.pg_server import free_port

    return free_port()


def test_a_server_restart_is_survived_without_reopening(pg_server, pg_cat):
    save(pg_cat, article("a"))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(pg_cat.counts())) for _ in range(4)]
    for t in threads:  # several pooled connections, all broken by the restart below
        t.start()
    for t in threads:
        t.join()
    pg_server.restart()
    assert pg_cat.counts() == (1, 3)  # the broken connections are dropped and the call made again
    pg_server.stop()
    try:
        with pytest.raises(IndexError_, match="cannot reach the PostgreSQL database") as outage:
            pg_cat.article_ids()
        assert PASSWORD not in str(outage.value)
    finally:
        pg_server.start()
    assert pg_cat.article_ids() == ["a"]  # the next call after the server is back works
    assert pg_cat.remember("event", "after", 10.0, 1.0)


# ---------------------------------------------------------------------------------------------- the writer lock


HOLD = """
import sys, time
from rag.lock_pg import AdvisoryLock
lock = AdvisoryLock(sys.argv[1], sys.argv[2])
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_advisory_lock_one_writer_named_and_readers_told(pg_url):
    from rag.lock_pg import AdvisoryLock

    name = new_collection()
    writer, other, reader = (AdvisoryLock(pg_url, name) for _ in range(3))
    try:
        with reader.quiet() as free:
            assert free
            with pytest.raises(IndexError_, match="writing the index"):  # a reader reopening holds a writer off
                writer.acquire(wait=0.2)
        writer.acquire(wait=2)
        assert writer.held() and not other.held()
        with pytest.raises(IndexError_, match=f"pid {os.getpid()} on .* is writing the index") as busy:
            other.acquire(wait=0.3)
        assert PASSWORD not in str(busy.value) and name in str(busy.value)
        with reader.quiet() as free:
            assert not free
        with writer.quiet() as free:
            assert free  # the writer itself knows what it wrote
        AdvisoryLock(pg_url, new_collection()).acquire(wait=0)  # another collection has a lock of its own
        writer.check()
        writer.release()
        assert not writer.held()
        other.acquire(wait=1)
        with pytest.raises(IndexError_):
            with writer.exclusive_now():
                pass
        other.release()
        with writer.exclusive_now():
            assert writer.held()
        assert not writer.held()
    finally:
        for lock in (writer, other, reader):
            lock.close()


def test_advisory_lock_of_a_killed_writer_is_released_by_the_server(pg_url):
    from rag.lock_pg import AdvisoryLock

    name = new_collection()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, pg_url, name], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lock = AdvisoryLock(pg_url, name)
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read() if proc.poll() is not None else ""
        with pytest.raises(IndexError_, match=f"pid {proc.pid} on "):
            lock.acquire(wait=0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        lock.acquire(wait=10)  # no stale lock: the server ended the dead writer's session
        assert lock.held()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        lock.close()


def test_a_lock_lost_with_a_server_restart_is_reported(pg_server, pg_url):
    from rag.lock_pg import AdvisoryLock

    lock = AdvisoryLock(pg_url, new_collection())
    lock.acquire(wait=1)
    pg_server.restart()
    with pytest.raises(IndexError_, match="writer lock .* was lost"):
        lock.check()
    assert not lock.held()
    pg_server.stop()
    try:
        with lock.quiet() as free:  # a reader keeps its view while the server is away
            assert not free
        with pytest.raises(IndexError_, match="cannot reach the PostgreSQL database") as outage:
            lock.acquire(wait=1)
        assert PASSWORD not in str(outage.value)
    finally:
        pg_server.start()
    lock.acquire(wait=1)  # taken again once the server is back
    lock.close()
