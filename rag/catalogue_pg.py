"""PostgresCatalogue: the catalogue (see `rag.catalogue`) in a PostgreSQL database, for team mode.

Team mode (`RAG_DATABASE_URL`) keeps every piece of shared state in servers, so web chats, Slack bots, API
servers and indexers on different machines share one index. Each collection has its own PostgreSQL schema
(`schema_name`), so several collections share one database. The schema is created and upgraded by numbered
migrations, applied on open in one transaction under an advisory lock (two processes starting at once do not
race) and recorded in its `schema_version` table.

Connections: a small pool, one connection per thread at a time, so threads of a web or API server ask at
once. A connection broken by a server restart is dropped; a call during an outage raises `IndexError_`
saying the database cannot be reached, and the next call once the server is back works, without a restart.
Messages show the URL without its password (`where`).

It does not hold vectors (Chroma server), the lexical index, or the writer lock (`rag.lock_pg`); it does not
read settings: the caller passes the URL.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from rag.catalogue import MARKS_VERSION, PIECE_BYTES, WHOLE_CHARS, ChunkRow, ChunkTable, changed, date_ord, stored_text
from rag.errors import IndexError_
from rag.news import marks as story_marks
from rag.types import Article, Chunk

try:
    import psycopg
    from psycopg import sql
except ImportError:  # the `team` extra; only team mode needs it
    psycopg = None

T = TypeVar("T")
CONNECT_TIMEOUT = 10  # seconds to reach the server before a call fails
MAX_CONNECTIONS = 8  # per catalogue: more threads wait for one (a server allows ~100 in all)
IDLE_KEPT = 4  # connections kept open between calls
MARKS_BATCH = 200  # articles read at a time by mark_all

# Each migration takes the schema from the version before it to its own number (its index plus one). Text
# that is sorted is : byte order, as SQLite and Python sort, whatever the database's locale.
MIGRATIONS: list[list[str]] = [
    [  # 1: the catalogue
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        'CREATE TABLE articles (id TEXT COLLATE "C" PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT, '
        'source TEXT COLLATE "C", published TEXT COLLATE "C", published_ord INTEGER, url TEXT, path TEXT, '
        "authors TEXT[], text TEXT NOT NULL)",
        "CREATE INDEX articles_hash ON articles (content_hash)",
        'CREATE TABLE chunks (id TEXT COLLATE "C" PRIMARY KEY, article_id TEXT COLLATE "C" NOT NULL, '
        'seq INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL)',
        "CREATE INDEX chunks_article ON chunks (article_id, seq)",
        "CREATE TABLE files (path TEXT PRIMARY KEY, size BIGINT, mtime_ns BIGINT, article_ids TEXT[] NOT NULL)",
        "CREATE TABLE marks (article_id TEXT NOT NULL, hash BIGINT NOT NULL)",
        "CREATE INDEX marks_article ON marks (article_id)",
        "CREATE TABLE stories (article_id TEXT PRIMARY KEY, story TEXT NOT NULL)",
        "CREATE TABLE removed (article_id TEXT PRIMARY KEY, path TEXT NOT NULL)",
        "CREATE TABLE full_chunks (id TEXT PRIMARY KEY)",
    ],
    [  # 2: keys the Slack bot has handled, shared by every replica
        "CREATE TABLE handled (kind TEXT NOT NULL, key TEXT NOT NULL, until DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (kind, key))",
        "CREATE INDEX handled_until ON handled (until)",
    ],
    [  # 3: readers' feedback (Slack's buttons), shared by every replica
        "CREATE TABLE feedback (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now(), "
        "record JSONB NOT NULL)",
        # which catalogue this is: a rebuilt one starts its generations again (see `rag.lexical.sync_cache`)
        "INSERT INTO meta VALUES ('catalogue_id', gen_random_uuid()::TEXT) ON CONFLICT (key) DO NOTHING",
    ],
    [  # 4: marks looked up by value: an index run compares only its new articles with those sharing their marks
        "CREATE INDEX marks_hash ON marks (hash)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_name(collection: str) -> str:
    """The PostgreSQL schema of a collection: `rag_` and the name in lower-case letters, digits and `_`; a
    name that had to change gets a short hash of itself, so "a-b" and "a_b" stay apart."""
    clean = re.sub(r"[^a-z0-9_]", "_", collection.lower())
    if clean != collection:
        clean = f"{clean[:40]}_{hashlib.blake2b(collection.encode(), digest_size=4).hexdigest()}"
    return f"rag_{clean}"[:63]


def lock_key(purpose: str, schema: str) -> int:
    """A 64-bit advisory lock key for one purpose ("migrate", "writer") on one collection's schema."""
    digest = hashlib.blake2b(f"rag:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def public_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, host = netloc.rsplit("@", 1)
            netloc = f"{user.split(':', 1)[0]}@{host}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "the PostgreSQL database (RAG_DATABASE_URL)"


def secret(url: str | SecretStr) -> str:
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def password_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        return parts.password or dict(parse_qsl(parts.query)).get("password", "")
    except ValueError:
        return ""


def pg_error(exc: BaseException, where: str, password: str = "") -> IndexError_:
    """A PostgreSQL failure as an IndexError_ that says what to do; never with the password in it."""
    text = " ".join(str(exc).split())
    if password:
        text = text.replace(password, "***")
    low = text.lower()
    state = getattr(exc, "sqlstate", None) or ""
    if "password authentication failed" in low or state == "28P01" or state.startswith("28"):
        return IndexError_(f"PostgreSQL at {where} refused the login ({text}): check the user and password in "
                           "RAG_DATABASE_URL")
    if state == "3D000" or ("database" in low and "does not exist" in low):
        return IndexError_(f"the PostgreSQL database of {where} does not exist ({text}): create it "
                           "(`createdb`) or fix RAG_DATABASE_URL")
    if state == "53100" or "no space" in low or "disk full" in low:
        return IndexError_(f"the PostgreSQL server of {where} has a full disk ({text}): free space there and run "
                           "the same `rag index` again (what was not committed is redone, nothing is lost)")
    if state.startswith("42501") or "permission denied" in low:
        return IndexError_(f"the PostgreSQL user of {where} may not do this ({text}): it needs to create a schema "
                           "and tables in that database (GRANT CREATE ON DATABASE ...)")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return IndexError_(f"cannot reach the PostgreSQL database at {where} ({text}): check that the server runs "
                           "and RAG_DATABASE_URL; the next request tries again")
    return IndexError_(f"the catalogue in {where} cannot be used: {type(exc).__name__}: {text}")


def connect(url: str, where: str, application_name: str = "rag"):
    """A new autocommit connection (a psycopg Connection); IndexError_ when the server cannot be reached."""
    if psycopg is None:
        raise IndexError_("team mode (RAG_DATABASE_URL) needs psycopg: pip install 'rag-news[team]'")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=application_name)
    except psycopg.Error as exc:
        raise pg_error(exc, where, password_of(url)) from None


class PostgresCatalogue:
    """The catalogue of one collection in the schema `schema_name(collection)` of a PostgreSQL database."""

    def __init__(self, url: str | SecretStr, collection: str) -> None:
        self._url = SecretStr(secret(url))
        self.collection = collection
        self.schema = schema_name(collection)
        self.where = f"{public_url(self._url.get_secret_value())} (collection {collection!r})"
        self._idle: list = []  # open connections not in use
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._pruned = 0.0
        self._closed = False
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresCatalogue({self.where})"

    # ---------- connections ----------
    def _new_connection(self):
        conn = connect(self._url.get_secret_value(), self.where)
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from None
        return conn

    def _error(self, exc: BaseException) -> IndexError_:
        return pg_error(exc, self.where, password_of(self._url.get_secret_value()))

    def _run(self, work: Callable[[object], T]) -> T:
        """`work(connection)` in one transaction on a pooled connection. A connection found broken (the server
        restarted since it was used) is dropped with every idle one, and the work tried once on a new one."""
        if self._closed:
            raise IndexError_(f"the catalogue in {self.where} is closed")
        if not self._slots.acquire(timeout=60):
            raise IndexError_(f"every connection to {self.where} stayed busy for a minute; try again")
        try:
            for attempt in (1, 2):
                with self._idle_lock:
                    conn = self._idle.pop() if self._idle else None
                fresh = conn is None
                conn = conn or self._new_connection()
                try:
                    with conn.transaction():
                        result = work(conn)
                except psycopg.Error as exc:
                    if not conn.broken:
                        self._give_back(conn)
                        raise self._error(exc) from None
                    conn.close()
                    self._drop_idle()
                    if fresh or attempt == 2:
                        raise self._error(exc) from None
                    continue
                except BaseException:  # our own IndexError_, or an interrupt in the middle of a statement
                    conn.close()
                    raise
                self._give_back(conn)
                return result
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def _give_back(self, conn) -> None:
        with self._idle_lock:
            if len(self._idle) < IDLE_KEPT and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_idle(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _rows(self, query: str, params: tuple | list = ()) -> list[tuple]:
        return self._run(lambda c: c.execute(query, params).fetchall())

    def _one(self, query: str, params: tuple | list = ()) -> tuple | None:
        return self._run(lambda c: c.execute(query, params).fetchone())

    def _write(self, query: str, params: tuple | list = ()) -> None:
        self._run(lambda c: c.execute(query, params))

    def _migrate(self) -> None:
        """Create the schema, or apply the migrations it has not had, under an advisory lock held to the end
        of the transaction: a second process opening it at the same time waits, then finds them applied."""
        def work(conn) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("migrate", self.schema),))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied TIMESTAMPTZ NOT NULL DEFAULT now())")
            version = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise IndexError_(f"the catalogue in {self.where} has schema version {version}, newer than this rag "
                                  f"knows ({SCHEMA_VERSION}): upgrade rag")
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
        self._run(work)

    def version(self) -> int:
        return self._one("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0]

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (key, value))

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def dirty(self) -> bool:
        return self.meta("dirty") == "1"

    def set_dirty(self) -> None:
        self.set_meta("dirty", "1")

    @staticmethod
    def _bump(conn) -> None:
        # in SQL, not read-then-write: two processes bumping at once both count
        conn.execute("INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE "
                     "SET value = (meta.value::BIGINT + 1)::TEXT")

    def finish_run(self) -> None:
        def work(conn) -> None:
            conn.execute("DELETE FROM meta WHERE key = 'dirty'")
            self._bump(conn)
            conn.execute("INSERT INTO meta VALUES ('last_indexed', %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (_now(),))
        self._run(work)

    def bump_generation(self) -> None:
        self._run(self._bump)

    def touch(self) -> None:
        self.set_meta("last_indexed", _now())

    # ---------- articles and chunks ----------
    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        """One transaction: the articles upserted, their old chunks and marks replaced (COPY: fast in bulk)."""
        latest = {article.id: (article, content_hash, chunks) for article, content_hash, chunks in items}
        if not latest:
            return
        ids = list(latest)
        rows = [(a.id, h, a.title, a.source, a.published, date_ord(a.published), a.url, a.path, list(a.authors),
                 a.text) for a, h, _ in latest.values()]
        marks = [(a.id, m) for a, _, _ in latest.values() for m in story_marks(a.text)]

        def work(conn) -> None:
            conn.execute("DELETE FROM chunks WHERE article_id = ANY(%s)", (ids,))
            conn.execute("DELETE FROM marks WHERE article_id = ANY(%s)", (ids,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO articles VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO "
                    "UPDATE SET content_hash = EXCLUDED.content_hash, title = EXCLUDED.title, "
                    "source = EXCLUDED.source, published = EXCLUDED.published, "
                    "published_ord = EXCLUDED.published_ord, url = EXCLUDED.url, path = EXCLUDED.path, "
                    "authors = EXCLUDED.authors, text = EXCLUDED.text", rows)
                with cur.copy('COPY chunks (id, article_id, seq, start, "end") FROM STDIN') as copy:
                    for _, _, chunks in latest.values():
                        for seq, c in enumerate(chunks):
                            copy.write_row((c.id, c.article_id, seq, c.start, c.end))
                with cur.copy("COPY marks (article_id, hash) FROM STDIN") as copy:
                    for row in marks:
                        copy.write_row(row)
        self._run(work)

    def delete_article(self, article_id: str) -> list[str]:
        def work(conn) -> list[str]:
            ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE article_id = %s ORDER BY seq",
                                              (article_id,))]
            conn.execute("DELETE FROM chunks WHERE article_id = %s", (article_id,))
            conn.execute("DELETE FROM articles WHERE id = %s", (article_id,))
            conn.execute("DELETE FROM marks WHERE article_id = %s", (article_id,))
            return ids
        return self._run(work)

    def article(self, article_id: str, whole: bool = True) -> Article | None:
        text = "text" if whole else "CASE WHEN length(text) <= %s THEN text END, length(text), content_hash"
        row = self._one(f"SELECT id, title, source, published, url, path, authors, {text} FROM articles "
                        "WHERE id = %s", (*(() if whole else (WHOLE_CHARS,)), article_id))
        if row is None:
            return None
        text = stored_text(self, article_id, row[7], *row[8:])  # NULL only for a long text not read whole
        return Article(*(v or "" for v in row[:2]), text, *(v or "" for v in row[2:6]), authors=tuple(row[6] or ()))

    def text_slice(self, article_id: str, start: int, end: int, content_hash: str) -> str | None:
        row = self._one("SELECT substr(text, %s, %s) FROM articles WHERE id = %s AND content_hash = %s",
                        (start + 1, max(end - start, 0), article_id, content_hash))
        return None if row is None else row[0] or ""

    def text_pieces(self, article_id: str, content_hash: str) -> Iterator[str]:
        start = 0  # the server reads the whole value for each `substr`; this process gets only the piece
        while True:
            piece = self.text_slice(article_id, start, start + PIECE_BYTES, content_hash)
            if piece is None:
                raise changed(article_id)
            if not piece:
                return
            yield piece
            start += len(piece)

    def article_hash(self, article_id: str) -> str | None:
        row = self._one("SELECT content_hash FROM articles WHERE id = %s", (article_id,))
        return row[0] if row else None

    def id_with_hash(self, content_hash: str) -> str | None:
        row = self._one("SELECT id FROM articles WHERE content_hash = %s ORDER BY id LIMIT 1", (content_hash,))
        return row[0] if row else None

    def article_ids(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM articles ORDER BY id")]

    def ids_by_date(self) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT id FROM articles ORDER BY COALESCE(published, '') = '', published, id")]

    def counts(self) -> tuple[int, int]:
        return self._one("SELECT (SELECT COUNT(*) FROM articles), (SELECT COUNT(*) FROM chunks)")

    def sources(self) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT source FROM articles WHERE source != '' GROUP BY source ORDER BY COUNT(*) DESC, source")]

    def chunk_ids_of(self, article_id: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM chunks WHERE article_id = %s ORDER BY seq", (article_id,))]

    def chunks_by_id(self, chunk_ids: list[str]) -> list[ChunkRow]:
        if not chunk_ids:
            return []
        return self._rows('SELECT id, article_id, start, "end" FROM chunks WHERE id = ANY(%s)', (list(chunk_ids),))

    def chunk_id_set(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM chunks")}

    def chunk_table(self) -> ChunkTable:
        rows = self._rows('SELECT c.id, c.article_id, c.start, c."end", a.published_ord, a.source '
                          "FROM chunks c JOIN articles a ON a.id = c.article_id ORDER BY c.article_id, c.seq")
        return ChunkTable.of_rows(rows)

    # ---------- the full stage of a two-stage index ----------
    def full_progress(self) -> tuple[int, int]:
        return self._one("SELECT (SELECT COUNT(*) FROM chunks c JOIN full_chunks f ON f.id = c.id), "
                         "(SELECT COUNT(*) FROM chunks)")

    def without_full(self) -> list[ChunkRow]:
        return self._rows('SELECT c.id, c.article_id, c.start, c."end" FROM chunks c LEFT JOIN full_chunks f '
                          "ON f.id = c.id WHERE f.id IS NULL ORDER BY c.article_id, c.seq")

    def mark_full(self, chunk_ids: list[str]) -> None:
        self._write("INSERT INTO full_chunks SELECT DISTINCT unnest(%s::TEXT[]) ON CONFLICT DO NOTHING",
                    (list(chunk_ids),))

    def forget_full(self, chunk_ids: list[str]) -> None:
        self._write("DELETE FROM full_chunks WHERE id = ANY(%s)", (list(chunk_ids),))

    def full_ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM full_chunks")}

    # ---------- syndicated stories ----------
    def mark_all(self) -> None:
        """Every article's marks recomputed, reading the texts MARKS_BATCH at a time (a server-side cursor)."""
        def work(conn) -> None:
            conn.execute("DELETE FROM marks")
            with conn.cursor(name="rag_mark_all") as texts, conn.cursor() as out:
                texts.execute("SELECT id, text FROM articles")
                while batch := texts.fetchmany(MARKS_BATCH):
                    with out.copy("COPY marks (article_id, hash) FROM STDIN") as copy:
                        for article_id, text in batch:
                            for h in story_marks(text):
                                copy.write_row((article_id, h))
            conn.execute("INSERT INTO meta VALUES ('marks', %s) ON CONFLICT (key) DO UPDATE SET value = "
                         "EXCLUDED.value", (MARKS_VERSION,))
        self._run(work)

    def marks(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for article_id, h in self._rows("SELECT article_id, hash FROM marks"):
            out.setdefault(article_id, []).append(h)
        return out

    def marks_of(self, article_ids: list[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for article_id, h in self._rows("SELECT article_id, hash FROM marks WHERE article_id = ANY(%s)",
                                        (list(article_ids),)):
            out.setdefault(article_id, []).append(h)
        return out

    def mark_postings(self, hashes: Iterable[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {h: [] for h in hashes}
        for article_id, h in self._rows("SELECT article_id, hash FROM marks WHERE hash = ANY(%s)", (list(out),)):
            out[h].append(article_id)
        return out

    def marks_counted(self, low: int, high: int) -> list[int]:
        return [r[0] for r in self._rows("SELECT hash FROM marks GROUP BY hash HAVING COUNT(*) BETWEEN %s AND %s",
                                         (low, high))]

    def save_stories(self, stories: dict[str, str]) -> None:
        def work(conn) -> None:
            conn.execute("DELETE FROM stories")
            with conn.cursor() as cur, cur.copy("COPY stories (article_id, story) FROM STDIN") as copy:
                for row in sorted(stories.items()):
                    copy.write_row(row)
        self._run(work)

    def stories(self) -> dict[str, str]:
        return dict(self._rows("SELECT article_id, story FROM stories"))

    # ---------- removed articles (`rag remove`) ----------
    def mark_removed(self, articles: list[Article]) -> None:
        latest = {a.id: a.path for a in articles}
        if latest:
            self._write("INSERT INTO removed SELECT * FROM unnest(%s::TEXT[], %s::TEXT[]) ON CONFLICT (article_id) "
                        "DO UPDATE SET path = EXCLUDED.path", (list(latest), list(latest.values())))

    def removed_ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT article_id FROM removed")}

    def restore_removed(self, path: str) -> list[str]:
        """The articles removed from `path` itself or one of its lines (`path#N`) may be indexed again."""
        def work(conn) -> list[str]:
            ids = [r[0] for r in conn.execute(
                "DELETE FROM removed WHERE path = %s OR starts_with(path, %s) RETURNING article_id",
                (path, f"{path}#"))]
            if ids:
                conn.execute("DELETE FROM files WHERE path = %s", (path,))
            return sorted(ids)
        return self._run(work)

    # ---------- files seen ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        row = self._one("SELECT size, mtime_ns, article_ids FROM files WHERE path = %s", (path,))
        return (row[0], row[1], list(row[2])) if row else None

    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None:
        self._write("INSERT INTO files VALUES (%s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET "
                    "size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, article_ids = EXCLUDED.article_ids",
                    (path, size, mtime_ns, list(article_ids)))

    def files(self) -> dict[str, list[str]]:
        return {p: list(ids) for p, ids in self._rows("SELECT path, article_ids FROM files")}

    def forget_file(self, path: str) -> None:
        self._write("DELETE FROM files WHERE path = %s", (path,))

    # ---------- keys a bot has handled ----------
    def remember(self, kind: str, key: str, until: float, now: float) -> bool:
        """One statement: new, or replacing an expired row; of replicas remembering a key at once, the first
        wins (PostgreSQL serialises the conflicting inserts)."""
        def work(conn) -> bool:
            kept = conn.execute("INSERT INTO handled VALUES (%s, %s, %s) ON CONFLICT (kind, key) DO UPDATE SET "
                                "until = EXCLUDED.until WHERE handled.until <= %s", (kind, key, until, now)).rowcount
            conn.execute("DELETE FROM handled WHERE until <= %s", (now,))  # cheap: indexed by until
            return kept == 1
        return self._run(work)

    def remembered(self, kind: str, key: str, now: float) -> bool:
        return self._one("SELECT 1 FROM handled WHERE kind = %s AND key = %s AND until > %s",
                         (kind, key, now)) is not None

    # ---------- readers' feedback ----------
    def add_feedback(self, record: dict) -> None:
        from psycopg.types.json import Jsonb

        self._write("INSERT INTO feedback (record) VALUES (%s)", (Jsonb(record),))

    def feedback(self) -> list[dict]:
        return [r[0] for r in self._rows("SELECT record FROM feedback ORDER BY id")]

    def close(self) -> None:
        self._closed = True
        self._drop_idle()


def drop_collection(url: str | SecretStr, collection: str) -> None:
    """Delete a collection's schema and everything in it (for `rag index --rebuild`); the caller holds the
    writer lock. Nothing happens when it does not exist."""
    url = secret(url)
    where = public_url(url)
    conn = connect(url, where)
    try:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_name(collection))))
    except psycopg.Error as exc:
        raise pg_error(exc, where, password_of(url)) from None
    finally:
        conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
