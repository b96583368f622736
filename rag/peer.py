"""Peers: two LlamaIndex pipelines, for side-by-side benchmarks only.

`QuickStart`: `VectorStoreIndex.from_documents` with its default `SentenceSplitter`,
the same embedder as ours (fp32, as shipped, via `HuggingFaceEmbedding`), a Chroma
vector store, and articles ranked by first appearance among its top-50 chunks.
`Hybrid`: LlamaIndex's recommended hybrid, which embeds every token:
`SentenceSplitter(chunk_size=256, chunk_overlap=20)`, the same embedder and Chroma,
a `BM25Retriever` (llama-index-retrievers-bm25) and the vector retriever fused by
`QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1)`, articles ranked the same way.
Everything is passed explicitly (embed_model=, llm=MockLLM()); LlamaIndex's global Settings are never
used. Neither reads dates in questions. Not part of the product; only imported by `rag.bench`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from rag.catalogue import date_ord
from rag.embed import DEFAULT_MODEL, resolve_model
from rag.ingest import iso_date
from rag.types import Filters

TOP_K = 50
HIDDEN = ["article_id", "published_ord"]  # metadata neither embedded, tokenized for BM25, nor shown to an LLM


class QuickStart:
    """Builds the peer index on construction; `ranked` answers like the bench expects."""

    def __init__(self, articles_file: Path, folder: Path, ids: dict[str, str] | None = None) -> None:
        """Index `articles_file` into `folder`; `ids` maps the file's article ids to the ones ranked."""
        from llama_index.core import VectorStoreIndex

        documents = _documents(articles_file, ids or {})
        storage, collection = _chroma(folder)
        self.embed_model = _embedder()
        self.index = VectorStoreIndex.from_documents(
            documents, storage_context=storage, embed_model=self.embed_model, show_progress=True,
        )
        self.articles = len(documents)
        self.chunks = collection.count()

    def ranked(self, question: str, filters: Filters | None) -> list[tuple[str, str]]:
        """(article id, title) by first appearance among the top-50 chunks."""
        retriever = self.index.as_retriever(similarity_top_k=TOP_K, filters=_metadata_filters(filters))
        return _articles(retriever.retrieve(question), filters)


class Hybrid:
    """LlamaIndex's BM25 + vector hybrid with reciprocal-rank fusion; `ranked` as `QuickStart.ranked`."""

    def __init__(self, articles_file: Path, folder: Path, ids: dict[str, str] | None = None) -> None:
        import Stemmer
        from llama_index.core import VectorStoreIndex
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.retrievers.bm25 import BM25Retriever

        documents = _documents(articles_file, ids or {})
        nodes = SentenceSplitter(chunk_size=256, chunk_overlap=20).get_nodes_from_documents(documents)
        storage, collection = _chroma(folder)
        self.embed_model = _embedder()
        self.index = VectorStoreIndex(nodes, storage_context=storage, embed_model=self.embed_model,
                                      show_progress=True)
        self.bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=TOP_K,
                                                stemmer=Stemmer.Stemmer("english"), language="en")
        self._published = [n.metadata["published_ord"] for n in nodes]
        self.articles = len(documents)
        self.chunks = collection.count()

    def ranked(self, question: str, filters: Filters | None) -> list[tuple[str, str]]:
        """(article id, title) by first appearance among the fused top-50 chunks."""
        from llama_index.core.llms import MockLLM
        from llama_index.core.retrievers import QueryFusionRetriever

        # BM25Retriever takes its filter as a weight mask over the chunks (what its `filters=` builds)
        self.bm25.corpus_weight_mask = self._mask(filters)
        fusion = QueryFusionRetriever(
            [self.index.as_retriever(similarity_top_k=TOP_K, filters=_metadata_filters(filters)), self.bm25],
            llm=MockLLM(), mode="reciprocal_rerank", num_queries=1, similarity_top_k=TOP_K,
            use_async=False,  # the same results; no event loop in a benchmark loop
        )
        return _articles(fusion.retrieve(question), filters)

    def _mask(self, filters: Filters | None) -> list[int] | None:
        if filters is None or filters.is_empty():
            return None
        low, high = _bounds(filters)
        return [int(low <= p <= high) for p in self._published]


def _documents(articles_file: Path, ids: dict[str, str]) -> list:
    from llama_index.core import Document

    documents = []
    with gzip.open(articles_file, "rt", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            documents.append(Document(
                text=item.get("text", ""),
                metadata={"title": item.get("title", ""), "article_id": ids.get(item["id"], item["id"]),
                          "published_ord": date_ord(iso_date(item.get("published")))},
                excluded_embed_metadata_keys=HIDDEN, excluded_llm_metadata_keys=HIDDEN,
            ))
    return documents


def _chroma(folder: Path):
    """(a StorageContext on a fresh Chroma collection in `folder`, the collection)."""
    import chromadb
    from llama_index.core import StorageContext
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(folder), settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("peer", metadata={"hnsw:space": "cosine"})
    return StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection)), collection


def _embedder():
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=resolve_model(DEFAULT_MODEL), device="cpu")


def _articles(nodes: list, filters: Filters | None) -> list[tuple[str, str]]:
    """Articles by first appearance among `nodes`, without those outside the filter's dates: a BM25 weight
    mask zeroes their scores, but bm25s still returns them when fewer chunks than asked match at all."""
    low, high = _bounds(filters)
    kept = (n.node.metadata for n in nodes if low <= n.node.metadata["published_ord"] <= high)
    return list(dict.fromkeys((m["article_id"], m.get("title", "")) for m in kept))


def _bounds(filters: Filters | None) -> tuple[float, float]:
    if filters is None:
        return float("-inf"), float("inf")
    return (filters.since.toordinal() if filters.since else float("-inf"),
            filters.until.toordinal() if filters.until else float("inf"))


def _metadata_filters(filters: Filters | None):
    from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

    if filters is None or filters.is_empty():
        return None
    parts = []
    if filters.since:
        parts.append(MetadataFilter(key="published_ord", value=filters.since.toordinal(), operator=FilterOperator.GTE))
    if filters.until:
        parts.append(MetadataFilter(key="published_ord", value=filters.until.toordinal(), operator=FilterOperator.LTE))
    return MetadataFilters(filters=parts)
