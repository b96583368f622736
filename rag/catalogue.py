"""Catalogue: what the index knows besides its vectors, behind one small interface.

The catalogue holds the articles (metadata and full text, content hash), their chunks' offsets, the files
seen, the story marks and groups, the articles removed by `rag remove`, which chunks have a full-stage
vector, the index metadata (embedders, generation counter, dirty flag, last run) and the keys the Slack
bot has handled. Two implementations share this interface: `SqliteCatalogue` (a file in the index
folder, the default) and `PostgresCatalogue` (`rag.catalogue_pg`, team mode: `RAG_DATABASE_URL`).

It does not hold vectors (`rag.vectors`), the lexical index (`rag.lexical`, built from the catalogue) or
the writer lock (`rag.lock`), and it does not chunk, embed or rank. Storage failures surface as
`IndexError_` saying what to do. Schema changes go through numbered migrations, applied on open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import numpy as np

from rag.types import Article, Chunk

MARKS_VERSION = "1"  # bump when `rag.news.marks` changes: the next index run recomputes them all


def date_ord(iso: str) -> int:
    """An ISO date as an ordinal day number; 0 when unknown (filters skip it)."""
    try:
        return date.fromisoformat(iso).toordinal() if iso else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class ChunkTable:
    """All chunk offsets in memory, row i matching BM25 document i."""

    ids: list[str]
    article_ids: list[str]
    starts: np.ndarray
    ends: np.ndarray
    published_ord: np.ndarray
    sources: list[str]


ChunkRow = tuple[str, str, int, int]  # (chunk id, article id, start, end)


class Catalogue(Protocol):
    """The interface both catalogues implement; each method is one transaction."""

    where: str  # for messages: the folder or the database (without its password)

    # ---------- metadata ----------
    def meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def generation(self) -> int:
        """Bumped by every completed index run: a cheap "has anything changed?" for readers."""
    def dirty(self) -> bool:
        """True while a run writes, and after a run that did not finish (crash, failure)."""
    def set_dirty(self) -> None: ...
    def finish_run(self) -> None:
        """Clear the dirty flag, bump the generation and record the time, in one transaction."""
    def bump_generation(self) -> None: ...
    def touch(self) -> None:
        """Record now as the last index run."""

    # ---------- articles and chunks ----------
    def save_articles(self, items: list[tuple[Article, str, list[Chunk]]]) -> None:
        """Mark articles (with their content hash) indexed with these chunks, and store their story marks,
        in one transaction: the commit point (their vectors are stored before)."""
    def delete_article(self, article_id: str) -> list[str]:
        """Forget an article, its chunks and marks; the ids of the chunks it had (their vectors go next)."""
    def article(self, article_id: str) -> Article | None: ...
    def article_hash(self, article_id: str) -> str | None: ...
    def id_with_hash(self, content_hash: str) -> str | None: ...
    def article_ids(self) -> list[str]:
        """Every article id, sorted."""
    def ids_by_date(self) -> list[str]:
        """Every article id, earliest published first (undated last, then by id)."""
    def counts(self) -> tuple[int, int]:
        """(articles, chunks)."""
    def sources(self) -> list[str]:
        """Sources, the most frequent first."""
    def chunk_ids_of(self, article_id: str) -> list[str]: ...
    def chunks_by_id(self, chunk_ids: list[str]) -> list[ChunkRow]: ...
    def chunk_id_set(self) -> set[str]: ...
    def chunk_table(self) -> ChunkTable:
        """Every chunk, ordered by article id then position (the lexical index's document order)."""

    # ---------- the full stage of a two-stage index ----------
    def full_progress(self) -> tuple[int, int]:
        """(chunks with a full-stage vector, all chunks)."""
    def without_full(self) -> list[ChunkRow]:
        """The chunks without a full-stage vector, article by article."""
    def mark_full(self, chunk_ids: list[str]) -> None: ...
    def forget_full(self, chunk_ids: list[str]) -> None: ...
    def full_ids(self) -> set[str]: ...

    # ---------- syndicated stories ----------
    def mark_all(self) -> None:
        """Recompute every article's story marks (and record MARKS_VERSION)."""
    def marks(self) -> dict[str, list[int]]: ...
    def save_stories(self, stories: dict[str, str]) -> None:
        """Replace the story groups: {article id: story id}."""
    def stories(self) -> dict[str, str]: ...

    # ---------- removed articles (`rag remove`) ----------
    def mark_removed(self, articles: list[Article]) -> None: ...
    def removed_ids(self) -> set[str]: ...
    def restore_removed(self, path: str) -> list[str]:
        """Let the articles removed from the file at `path` be indexed again (and forget the file's record)."""

    # ---------- files seen ----------
    def file_record(self, path: str) -> tuple[int, int, list[str]] | None:
        """(size, mtime_ns, article ids) of a file as last indexed."""
    def save_file(self, path: str, size: int, mtime_ns: int, article_ids: list[str]) -> None: ...
    def files(self) -> dict[str, list[str]]: ...
    def forget_file(self, path: str) -> None: ...

    # ---------- keys a bot has handled (Slack events, claimed threads) ----------
    def remember(self, kind: str, key: str, until: float, now: float) -> bool:
        """Keep `key` until the time `until`; False when it is already kept and not expired at `now` (the
        first of several replicas to remember a key wins). Expired keys may be pruned."""
    def remembered(self, kind: str, key: str, now: float) -> bool: ...

    def close(self) -> None: ...
