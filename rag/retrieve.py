"""Retrieve: hybrid search over the stored articles, ranked at article level.

Articles are ranked by fusing two normalised scores: BM25 over the whole
article (title + text) and the best dense (Chroma, cosine) similarity among
the article's chunks. Within each ranked article, its passages are ranked by
dense similarity fused with chunk-level BM25, and at most `per_article` are
returned, so ten passages of one long article cannot crowd out the rest; a
story syndicated by several outlets (grouped at index time) takes one place.
Filters (sources, date range) apply to every side.

A two-stage index has a second vector per chunk by its full-stage model: the
dense side searches those once every chunk has one, the fast stage's before
(never a mix: the two models' similarities are not comparable), and the
question is embedded by that stage's model only.

Asked as of a day (`Recency`), an article's fused score gains a bonus that halves with every half-life of
its age before that day (a news reader's default: of two reports on a topic, the newer one is what is happening);
undated articles gain nothing. An archive search (no `Recency`) ranks by topic alone.

Question phrasing that says what kind of answer is wanted ("which", "recently",
"announced") is dropped from the lexical query; the dense side sees it whole.

Filters are applied here, against the snapshot, never by Chroma's `where` (its metadata filtering costs
10-15 times an unfiltered search on a collection of 55,000 chunks): a filter that leaves much of the
collection is served by an unfiltered search for proportionally more neighbours, kept when enough of them
pass; otherwise (a narrow date range, or too few passed) the search is restricted to the ids of the chunks in
range. Either way the dense side has the same nearest chunks in range as a filtered search.

While another process writes the index, a search serves the last complete state (the snapshot's chunks);
when the vector search fails altogether, the lexical side answers alone and the hits carry a notice saying so.

It does not write the index (see `rag.index`) and does not pick sentences or
decide whether to answer (see `rag.answer`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache, partial

import numpy as np

from rag.catalogue import ChunkTable
from rag.embed import Embedder
from rag.errors import SearchFailed
from rag.lexical import ARTICLES, PASSAGES, Lexical
from rag.store import Store
from rag.types import Article, Chunk, Filters, Hit
from rag.vectors import FULL

CANDIDATES = 100  # chunks from the dense side, articles from the lexical side
UNFILTERED = 10  # a filtered dense search searches at most this many times more chunks unfiltered
MARGIN = 2.0  # ... and only when that many should pass: MARGIN times CANDIDATES at the filter's share of chunks
# generic phrasing of questions (interrogatives, time deixis, reporting verbs): no topic in them
QUERY_NOISE = frozenset("""which what who whom whose where when why how recently recent this week weeks last
past month announced announce announces said says reported report according new newly latest following
named name became become becomes""".split())


def lexical_query(question: str) -> str:
    """The question without words that only shape it."""
    kept = [w for w in re.findall(r"\w[\w'\u2019-]*(?:[.,]\d+\b)*", question) if w.lower() not in QUERY_NOISE]
    return " ".join(kept) or question


def _passing(found: list[tuple[str, float]], row: dict[str, int], mask: np.ndarray,
             wanted: int) -> dict[str, float]:
    """The first `wanted` of `found` (nearest first) that are in the snapshot and pass the filter."""
    kept: dict[str, float] = {}
    for cid, cos in found:
        if cid in row and mask[row[cid]]:
            kept[cid] = cos
            if len(kept) >= wanted:
                break
    return kept


def _minmax(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.ones_like(values) * (1.0 if high > 0 else 0.0)


@dataclass(frozen=True)
class _Snapshot:
    """Everything a search reads from the index, loaded together."""

    table: ChunkTable
    row: dict[str, int]
    ids: np.ndarray  # the table's chunk ids as an array, to pick those passing a filter
    source_code: np.ndarray  # row -> index of its source in `sources`: a source filter is one array compare
    sources: dict[str, int]
    article_ids: list[str]
    article_pos: dict[str, int]
    first_row: np.ndarray  # article i's chunks are rows first_row[i]:first_row[i + 1]
    lexical: Lexical
    doc_lexical: Lexical
    article: Callable[[str], Article | None]  # a long text as a `StoredText`: its passages are read, not all of it
    # the BM25 indexes are of these chunks / articles (else a rebuild is pending and that side is left out)
    lexical_fits: bool
    doc_lexical_fits: bool
    story: dict[str, str]  # article id -> story id, for articles with syndicated copies
    members: dict[str, tuple[str, ...]]  # story id -> its articles
    stage: str | None = None  # whose vectors the dense side searches: None the first stage, FULL the full one

    @classmethod
    def of(cls, store: Store, stage: str | None = None) -> _Snapshot:
        table = store.catalogue.chunk_table()
        articles = list(dict.fromkeys(table.article_ids))
        first = {a: i for i, a in reversed(list(enumerate(table.article_ids)))}
        story = store.catalogue.stories()
        members: dict[str, tuple[str, ...]] = {}
        for article_id, story_id in sorted(story.items()):
            members[story_id] = (*members.get(story_id, ()), article_id)
        lexical, doc_lexical = Lexical(store.dir / PASSAGES), Lexical(store.dir / ARTICLES)
        # an index updated in place keeps its added documents last: its scores are put in the table's order
        lexical.align(table.ids), doc_lexical.align(articles)
        sources = {name: i for i, name in enumerate(dict.fromkeys(table.sources))}
        return cls(
            table=table, row={cid: i for i, cid in enumerate(table.ids)}, ids=np.array(table.ids, dtype=object),
            source_code=np.array([sources[name] for name in table.sources], dtype=np.int64), sources=sources,
            article_ids=articles,
            article_pos={a: i for i, a in enumerate(articles)},
            first_row=np.array([first[a] for a in articles] + [len(table.ids)], dtype=np.int64),
            lexical=lexical, doc_lexical=doc_lexical,
            lexical_fits=lexical.ids == table.ids, doc_lexical_fits=doc_lexical.ids == articles,
            article=lru_cache(maxsize=1024)(partial(store.catalogue.article, whole=False)), story=story,
            members=members, stage=stage,
        )


@dataclass(frozen=True)
class Recency:
    """Rank as of `today`: a bonus of `weight` for an article published that day (or later), halved every
    `half_life` days of age."""

    today: date
    weight: float = 0.3
    half_life: float = 7.0

    def bonus(self, published_ord: np.ndarray) -> np.ndarray:
        """Each article's bonus, from its publication day's ordinal (0: undated, no bonus)."""
        age = self.today.toordinal() - published_ord.astype(np.float64)
        return np.where(published_ord > 0, self.weight * np.exp2(-np.maximum(age, 0.0) / self.half_life), 0.0)


class Hits(list):
    """A search's hits (a list of `Hit`), with a `notice` for the reader when the search was degraded."""

    def __init__(self, hits: list[Hit] = (), notice: str = "") -> None:
        super().__init__(hits)
        self.notice = notice


class Retriever:
    """Hybrid search returning `Hit`s grouped by article, best article first."""

    def __init__(self, store: Store, embedder: Embedder, dense_weight: float = 0.5,
                 full: tuple[Embedder, float] | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.dense_weight = dense_weight
        self.full = full  # a two-stage index: the full stage's embedder and dense weight
        self.reload()

    def dense_stage(self) -> str | None:
        """The stage the dense side should search now: FULL once every chunk has its full-stage vector."""
        return FULL if self.full is not None and self.store.full_complete() else None

    def reload(self, stage: str | None = None) -> None:
        """Pick up what the indexer wrote: a new snapshot, swapped in whole (searching `stage`'s vectors; by
        default the one `dense_stage` says)."""
        self._snap = _Snapshot.of(self.store, stage if stage is not None else self.dense_stage())

    @property
    def stage(self) -> str | None:
        """The stage the current snapshot searches (None: the first, or only, one)."""
        return self._snap.stage

    def _side(self, snap: _Snapshot) -> tuple[Embedder, float]:
        """The embedder and dense weight of the stage `snap` searches."""
        return self.full if snap.stage == FULL and self.full is not None else (self.embedder, self.dense_weight)

    @property
    def table(self) -> ChunkTable:
        return self._snap.table

    @property
    def lexical(self) -> Lexical:
        """The passage-level BM25 index (its `words` and `idf` serve answer scoring)."""
        return self._snap.lexical

    def mentions(self, article_ids: list[str], terms: list[str]) -> dict[str, frozenset[str]] | None:
        """{article id: those of `terms` (index terms) its title or text holds}, read from the article index's
        postings; None when that index is not of the current articles (or an id is not among them)."""
        snap = self._snap
        if not snap.doc_lexical_fits or any(a not in snap.article_pos for a in article_ids):
            return None
        holding = {t: snap.doc_lexical.holding(t) for t in dict.fromkeys(terms)}
        return {a: frozenset(t for t, has in holding.items() if has[snap.article_pos[a]]) for a in article_ids}

    def search(self, query: str, k: int = 8, filters: Filters | None = None, per_article: int = 2,
               one_copy: bool = True, recency: Recency | None = None) -> Hits:
        """Up to `k` passages, at most `per_article` of each article; with `one_copy` a syndicated story
        takes one place (its best-ranked copy, with the others in `Hit.copies`); with `recency`, ranked as of
        its day (see the module's docstring). When the vector search failed, the passages come from BM25 alone
        and `Hits.notice` says so."""
        filters = filters or Filters()
        snap = self._snap  # one consistent view, even if a reload swaps it meanwhile
        table = snap.table
        if not table.ids:
            return Hits()
        mask = self._mask(snap, filters)
        embedder, weight = self._side(snap)
        vector = embedder.embed([query])[0]
        dense, notice = self._dense(snap, vector, filters, mask)
        words = lexical_query(query)
        lexical, doc_lexical = snap.lexical, snap.doc_lexical
        chunk_lex = np.where(mask, lexical.scores(words), 0.0) if snap.lexical_fits else np.zeros(len(mask))
        doc_lex = doc_lexical.scores(words) if snap.doc_lexical_fits else np.zeros(len(snap.article_ids))
        doc_lex = np.where(mask[snap.first_row[:-1]], doc_lex, 0.0)
        ranked = self._rank_articles(snap, dense, doc_lex, weight, recency)
        hits = self._hits(snap, ranked, dense, chunk_lex, k, per_article, one_copy, weight)
        if notice and hits:  # found by BM25 alone: their own similarity, for the answer's evidence score
            similarity = embedder.embed([h.chunk.text for h in hits]) @ vector
            hits = [replace(h, dense=float(cos)) for h, cos in zip(hits, similarity)]
        return Hits(hits, notice)

    def _dense(self, snap: _Snapshot, vector: np.ndarray, filters: Filters,
               mask: np.ndarray) -> tuple[dict[str, float], str]:
        """{chunk id: cosine} of the nearest chunks passing the filters, and a notice when there are none to have.

        Filtered here, against the snapshot (see the module's docstring). When the vector search fails, the
        answer comes from BM25 alone, and says so."""
        try:
            if filters.is_empty():
                return dict(self._nearest(snap, vector, CANDIDATES)), ""
            return self._dense_in(snap, vector, mask), ""
        except SearchFailed as exc:
            # a failure that lasts is an embedded index's damaged files, which the next `rag index` repairs
            repair = "" if self.store.vectors.server is not None else " If this keeps happening, run `rag index`."
            return {}, (f"The vector search failed ({str(exc)[:200]}), so this answer comes from keyword search "
                        f"alone.{repair}")

    def _dense_in(self, snap: _Snapshot, vector: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        """The CANDIDATES nearest chunks among those `mask` keeps: from an unfiltered search for more neighbours
        when enough of them should pass, else (or when too few did) from a search among the kept chunks' ids."""
        passing = int(mask.sum())
        if not passing:
            return {}
        wanted = min(CANDIDATES, passing)
        n = int(np.ceil(MARGIN * CANDIDATES * len(mask) / passing))
        kept: dict[str, float] = {}
        if n <= CANDIDATES * UNFILTERED:
            found = self._nearest(snap, vector, n)
            kept = _passing(found, snap.row, mask, wanted)
            if len(kept) >= wanted or len(found) < n:  # enough, or every chunk was searched
                return kept
        try:
            return _passing(self._nearest(snap, vector, CANDIDATES, snap.ids[mask].tolist()), snap.row, mask, wanted)
        except SearchFailed:
            if kept:  # the unfiltered search's few are better than none
                return kept
            return _passing(self._nearest(snap, vector, CANDIDATES * UNFILTERED), snap.row, mask, wanted)

    def _nearest(self, snap: _Snapshot, vector: np.ndarray, n: int,
                 ids: list[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine) of the `n` nearest chunks, or of the `n` nearest of `ids`; raises SearchFailed."""
        n = min(n, len(snap.ids) if ids is None else len(ids))
        return self.store.vectors.dense_search(vector, n, stage=snap.stage, ids=ids)

    def _mask(self, snap: _Snapshot, filters: Filters) -> np.ndarray:
        table = snap.table
        mask = np.ones(len(table.ids), dtype=bool)
        if filters.sources:
            mask &= np.isin(snap.source_code, [snap.sources[s] for s in filters.sources if s in snap.sources])
        if filters.since:
            mask &= table.published_ord >= filters.since.toordinal()
        if filters.until:
            mask &= (table.published_ord <= filters.until.toordinal()) & (table.published_ord > 0)
        return mask

    def _rank_articles(self, snap: _Snapshot, dense: dict[str, float], doc_lex: np.ndarray,
                       weight: float, recency: Recency | None = None) -> list[tuple[int, float]]:
        """(article position, fused score), best first."""
        best_dense: dict[int, float] = {}
        for cid, cos in dense.items():
            if cid in snap.row:
                pos = snap.article_pos[snap.table.article_ids[snap.row[cid]]]
                best_dense[pos] = max(best_dense.get(pos, -1.0), cos)
        lex_top = [int(i) for i in np.argsort(-doc_lex)[:CANDIDATES] if doc_lex[i] > 0]
        candidates = np.array(sorted(set(best_dense) | set(lex_top)), dtype=np.int64)
        if candidates.size == 0:
            return []
        floor = min(best_dense.values(), default=0.0)
        dense_part = _minmax(np.array([best_dense.get(int(p), floor) for p in candidates]))
        lex_part = _minmax(doc_lex[candidates])
        fused = weight * dense_part + (1 - weight) * lex_part
        if recency is not None:
            fused = fused + recency.bonus(snap.table.published_ord[snap.first_row[candidates]])
        order = np.argsort(-fused)
        return [(int(candidates[i]), float(fused[i])) for i in order]

    def _hits(self, snap: _Snapshot, ranked: list[tuple[int, float]], dense: dict[str, float],
              chunk_lex: np.ndarray, k: int, per_article: int, one_copy: bool, weight: float) -> list[Hit]:
        table, first_row = snap.table, snap.first_row
        lex_max = max(float(chunk_lex.max()), 1e-6) if chunk_lex.size else 1.0
        hits: list[Hit] = []
        told: set[str] = set()  # stories already given a place
        for pos, article_score in ranked:
            article = snap.article(snap.article_ids[pos])
            if article is None:
                continue
            story = snap.story.get(article.id, article.id)
            if one_copy and story in told:
                continue
            told.add(story)
            copies = tuple(a for a in map(snap.article, snap.members.get(story, ()))
                           if a is not None and a.id != article.id)
            rows = range(int(first_row[pos]), int(first_row[pos + 1]))
            scored = sorted(
                ((weight * dense.get(table.ids[i], 0.0) + (1 - weight) * chunk_lex[i] / lex_max,
                  i) for i in rows),
                key=lambda x: (-x[0], x[1]),
            )
            for _, i in scored[:per_article]:
                start, end = int(table.starts[i]), int(table.ends[i])
                chunk = Chunk(table.ids[i], article.id, start, end, article.text[start:end])
                hits.append(Hit(chunk, article, article_score, dense.get(table.ids[i], 0.0), float(chunk_lex[i]),
                                copies))
            if len(hits) >= k:
                break
        return hits[:k]
