"""Retrieve: hybrid search over the stored chunks, ranked at article level.

Dense (Chroma, cosine) and lexical (bm25s) scores are normalised per query
and fused with a weight; chunks are then grouped by article (best chunk plus a
small bonus for further matching chunks) so one long article cannot fill the
results. Filters (sources, date range) apply to both sides.

It does not write the index (see `rag.index`) and does not pick sentences or
decide whether to answer (see `rag.answer`).
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

from rag.embed import Embedder
from rag.store import ChunkTable, Store
from rag.types import Article, Chunk, Filters, Hit

CANDIDATES = 100  # chunks taken from each side before fusion


def lexical_tokens(texts: list[str], stemmer: Stemmer.Stemmer) -> list[list[str]]:
    """Lower-cased, stop-worded, stemmed word lists (the BM25 vocabulary)."""
    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)


class Lexical:
    """A bm25s index whose document i is row i of the store's chunk table."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stemmer = Stemmer.Stemmer("english")
        self.model: bm25s.BM25 | None = None
        self.ids: list[str] = []
        if (folder / "ids.json").exists():
            self.model = bm25s.BM25.load(str(folder))
            self.ids = json.loads((folder / "ids.json").read_text())

    def build(self, store: Store, table: ChunkTable, progress: bool = False) -> None:
        """Re-index every chunk (title + passage) and save it."""
        texts = list(_chunk_texts(store, table))
        model = bm25s.BM25(k1=1.2, b=0.75)
        if texts:
            model.index(lexical_tokens(texts, self.stemmer), show_progress=progress)
        self.folder.mkdir(parents=True, exist_ok=True)
        model.save(str(self.folder))
        (self.folder / "ids.json").write_text(json.dumps(table.ids))
        self.model, self.ids = model, list(table.ids)

    def idf(self, terms: list[str]) -> dict[str, float]:
        """Inverse document frequency of stemmed terms over all chunks (unknown: highest)."""
        n = len(self.ids)
        if self.model is None or not n:
            return {t: 1.0 for t in terms}
        if not hasattr(self, "_df"):
            self._df = np.diff(self.model.scores["indptr"])
        vocab = self.model.vocab_dict
        return {t: float(np.log(1 + (n + 0.5) / (self._df[vocab[t]] + 0.5 if t in vocab else 0.5))) for t in terms}

    def scores(self, query: str) -> np.ndarray:
        if self.model is None or not self.ids:
            return np.zeros(len(self.ids), dtype=np.float32)
        tokens = lexical_tokens([query], self.stemmer)[0]
        vocab = self.model.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.model.get_scores(known), dtype=np.float32)


def _chunk_texts(store: Store, table: ChunkTable):
    current: Article | None = None
    for article_id, start, end in zip(table.article_ids, table.starts, table.ends):
        if current is None or current.id != article_id:
            current = store.article(article_id)
        yield f"{current.title}\n{current.text[start:end]}"


class Retriever:
    """Hybrid search returning `Hit`s grouped by article, best article first."""

    def __init__(self, store: Store, embedder: Embedder, dense_weight: float = 0.5) -> None:
        self.store = store
        self.embedder = embedder
        self.dense_weight = dense_weight
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Pick up what the indexer wrote (chunk table and lexical index)."""
        with self._lock:
            self.table = self.store.chunk_table()
            self.row = {cid: i for i, cid in enumerate(self.table.ids)}
            self.lexical = Lexical(self.store.dir / "bm25")
            self._article = lru_cache(maxsize=512)(self.store.article)

    def search(self, query: str, k: int = 8, filters: Filters | None = None, per_article: int = 2) -> list[Hit]:
        filters = filters or Filters()
        with self._lock:
            table, lexical, row = self.table, self.lexical, self.row
        if not table.ids:
            return []
        vector = self.embedder.embed([query])[0]
        dense = dict(self.store.dense_search(vector, CANDIDATES, filters))
        lex = lexical.scores(query) if lexical.ids == table.ids else np.zeros(len(table.ids), np.float32)
        mask = self._mask(table, filters)
        lex = np.where(mask, lex, 0.0)
        fused = self._fuse(dense, lex, row)
        return self._group(fused, dense, lex, row, table, k, per_article)

    def _mask(self, table: ChunkTable, filters: Filters) -> np.ndarray:
        mask = np.ones(len(table.ids), dtype=bool)
        if filters.sources:
            wanted = set(filters.sources)
            mask &= np.array([s in wanted for s in table.sources])
        if filters.since:
            mask &= table.published_ord >= filters.since.toordinal()
        if filters.until:
            mask &= (table.published_ord <= filters.until.toordinal()) & (table.published_ord > 0)
        return mask

    def _fuse(self, dense: dict[str, float], lex: np.ndarray, row: dict[str, int]) -> dict[str, float]:
        top_lex = [i for i in np.argsort(-lex)[:CANDIDATES] if lex[i] > 0]
        candidates = set(dense) | {self.table.ids[i] for i in top_lex}
        if not candidates:
            return {}
        floor = min(dense.values()) if dense else 0.0
        span = max(max(dense.values(), default=0.0) - floor, 1e-6)
        lex_max = max(float(lex.max()), 1e-6)
        w = self.dense_weight
        return {
            cid: w * (dense.get(cid, floor) - floor) / span + (1 - w) * float(lex[row[cid]]) / lex_max
            for cid in candidates if cid in row
        }

    def _group(self, fused: dict[str, float], dense: dict[str, float], lex: np.ndarray,
               row: dict[str, int], table: ChunkTable, k: int, per_article: int) -> list[Hit]:
        by_article: dict[str, list[tuple[float, str]]] = {}
        for cid, score in fused.items():
            by_article.setdefault(table.article_ids[row[cid]], []).append((score, cid))
        ranked = []
        for article_id, scored in by_article.items():
            scored.sort(reverse=True)
            bonus = 0.1 * sum(s for s, _ in scored[1:3])
            ranked.append((scored[0][0] + bonus, article_id, scored))
        ranked.sort(key=lambda r: -r[0])
        hits: list[Hit] = []
        for _, article_id, scored in ranked:
            article = self._article(article_id)
            if article is None:
                continue
            for score, cid in scored[:per_article]:
                i = row[cid]
                start, end = int(table.starts[i]), int(table.ends[i])
                chunk = Chunk(cid, article_id, start, end, article.text[start:end])
                hits.append(Hit(chunk, article, score, dense.get(cid, 0.0), float(lex[i])))
            if len(hits) >= k:
                break
        return hits[:k]
