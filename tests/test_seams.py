"""The store's seams (issue 16): front ends go through `rag.api.Assistant` alone, the project's errors share one
base, and an index folder made before the catalogue had versioned migrations opens without a rebuild."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from rag.catalogue import SCHEMA_VERSION, SqliteCatalogue
from rag.types import Article, Chunk

ROOT = Path(__file__).resolve().parent.parent
FRONT_ENDS = {"rag.cli": ROOT / "rag" / "cli.py", "rag.bench": ROOT / "rag" / "bench.py",
              **{f"ui.{p.stem}": p for p in (ROOT / "ui").glob("*.py") if p.stem != "__init__"}}
INTERNALS = ("rag.store", "rag.catalogue", "rag.catalogue_pg", "rag.vectors", "rag.lock", "rag.lock_pg", "rag.index",
             "rag.retrieve")

# the schema of `articles.sqlite` as the code before migrations wrote it (rag/store.py's SCHEMA, no version)
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT, source TEXT,
    published TEXT, published_ord INTEGER, url TEXT, path TEXT, authors TEXT, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS articles_hash ON articles(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, article_id TEXT NOT NULL, seq INTEGER, start INTEGER, "end" INTEGER);
CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article_id);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, article_ids TEXT);
CREATE TABLE IF NOT EXISTS marks (article_id TEXT NOT NULL, hash INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS marks_article ON marks(article_id);
CREATE TABLE IF NOT EXISTS stories (article_id TEXT PRIMARY KEY, story TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (article_id TEXT PRIMARY KEY, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS full_chunks (id TEXT PRIMARY KEY);
"""


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at the top or inside functions), `from x import y` as x and x.y."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("module", sorted(FRONT_ENDS))
def test_front_ends_use_the_facade_alone(module: str) -> None:
    imported = _imports(FRONT_ENDS[module])
    internal = sorted(n for n in imported if n.startswith(INTERNALS))
    others = sorted(n for n in imported if n.split(".")[0] in ("rag", "ui") and any(
        n == m or n.startswith(f"{m}.") for m in FRONT_ENDS if m != module))
    assert not internal and not others, f"{module} imports {internal + others}"
    tree = ast.parse(FRONT_ENDS[module].read_text(encoding="utf-8"))
    reached = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "store"]
    assert not reached, f"{module} reaches the facade's store at lines {reached}"


def test_project_errors_share_one_base() -> None:
    from rag.api import QuestionError, RagError
    from rag.errors import IndexError_, SearchFailed, UserError
    from rag.feeds import FetchError
    from rag.ingest import InputError
    from rag.llm import LLMConfigError
    from ui.http_api import ApiError
    from ui.slack import IndexMissing

    for error in (IndexError_, SearchFailed, UserError, QuestionError, FetchError, InputError, LLMConfigError,
                  ApiError, IndexMissing):
        assert issubclass(error, RagError), error


def _old_folder(folder: Path) -> None:
    """An index folder's catalogue as the code before migrations left it: the tables, rows, no version."""
    folder.mkdir()
    with sqlite3.connect(folder / "articles.sqlite") as db:
        db.executescript(OLD_SCHEMA)
        text = "The Portvale bridge reopened on Tuesday."
        db.execute("INSERT INTO articles VALUES ('a1', 'h1', 'Bridge', 'Gazette', '2023-05-04', 738644, '', "
                   "'seeds/a.md', '[]', ?)", (text,))
        db.execute("INSERT INTO chunks VALUES ('a1:h1:0', 'a1', 0, 0, ?)", (len(text),))
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("embedder", "model2vec:x"), ("dim", "8"),
                                                          ("generation", "3")])
    db.close()


def test_an_index_folder_made_before_migrations_opens_and_is_migrated(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    _old_folder(folder)
    catalogue = SqliteCatalogue(folder)
    try:
        assert catalogue.version() == SCHEMA_VERSION == 4
        assert catalogue.article_ids() == ["a1"] and catalogue.article("a1").title == "Bridge"
        assert catalogue.counts() == (1, 1) and catalogue.generation() == 3 and catalogue.meta("embedder")
        assert catalogue.remember("event", "Ev1", until=110.0, now=100.0)  # migration 2's table
        assert not catalogue.remember("event", "Ev1", until=120.0, now=105.0)
        catalogue.add_feedback({"vote": "up"})  # migration 3's table
        assert catalogue.feedback() == [{"vote": "up"}]
    finally:
        catalogue.close()
    with sqlite3.connect(folder / "articles.sqlite") as db:  # opened again: nothing left to migrate
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "marks_hash" in {row[1] for row in db.execute("PRAGMA index_list(marks)")}  # migration 4's index
    db.close()
    again = SqliteCatalogue(folder)
    assert again.remembered("event", "Ev1", now=109.0) and not again.remembered("event", "Ev1", now=111.0)
    again.close()


def test_a_catalogue_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    from rag.errors import IndexError_

    SqliteCatalogue(tmp_path).close()
    with sqlite3.connect(tmp_path / "articles.sqlite") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(IndexError_, match="newer than this rag knows"):
        SqliteCatalogue(tmp_path)


def test_an_old_index_answers_through_the_facade_without_a_rebuild(tmp_path: Path, settings, embedder) -> None:
    """A real index, its catalogue put back to the unversioned schema (version and the new table dropped):
    the facade opens it, answers, and the migration added the handled keys."""
    from rag.api import Assistant

    folder = tmp_path / "index"
    text = "The Portvale harbour swing bridge reopened to traffic on Tuesday after eight months of repairs."
    (tmp_path / "a.md").write_text(f"---\ntitle: Portvale bridge\nsource: Gazette\n---\n{text}\n", encoding="utf-8")
    assistant = Assistant.open(folder, settings, embedder=embedder)
    assistant.index([tmp_path / "a.md"])
    assistant.close()
    with sqlite3.connect(folder / "articles.sqlite") as db:
        db.execute("DROP TABLE handled")
        db.execute("PRAGMA user_version = 0")
    db.close()
    assistant = Assistant.open(folder, settings, embedder=embedder)
    try:
        assert "eight months" in assistant.ask("When did the Portvale bridge reopen?").text
        assert assistant.remember("event", "Ev1", 200.0, 100.0) and assistant.remembered("event", "Ev1", 150.0)
    finally:
        assistant.close()


def test_two_slack_replicas_sharing_a_catalogue_handle_an_event_once(tmp_path: Path) -> None:
    from ui.slack import DEDUPE_SECONDS, HandledLog, Remembered

    first, second = SqliteCatalogue(tmp_path), SqliteCatalogue(tmp_path)  # two processes' connections
    try:
        one = Remembered(HandledLog(lambda: first), "event", DEDUPE_SECONDS)
        two = Remembered(HandledLog(lambda: second), "event", DEDUPE_SECONDS)
        assert one.add("Ev1") and not two.add("Ev1") and "Ev1" in two
        assert two.add("Ev2") and "Ev2" in one
    finally:
        first.close()
        second.close()


def test_deleting_an_article_from_the_catalogue_gives_its_chunk_ids(tmp_path: Path) -> None:
    catalogue = SqliteCatalogue(tmp_path)
    article = Article("a1", "T", "one two three", "S", "2024-01-02", "", "p")
    chunks = [Chunk("a1:h:0", "a1", 0, 7, "one two"), Chunk("a1:h:1", "a1", 8, 13, "three")]
    try:
        catalogue.save_articles([(article, "h", chunks)])
        assert sorted(catalogue.delete_article("a1")) == ["a1:h:0", "a1:h:1"]
        assert catalogue.counts() == (0, 0) and catalogue.delete_article("a1") == []
    finally:
        catalogue.close()
