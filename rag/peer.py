"""Peer: the LlamaIndex quick-start pipeline, for side-by-side benchmarks only.

`VectorStoreIndex.from_documents` with its default `SentenceSplitter`, the same
embedder as ours (fp32, as shipped, via `HuggingFaceEmbedding`), a Chroma
vector store, and articles ranked by first appearance among its top-50 chunks.
Everything is passed explicitly; LlamaIndex's global Settings are never used.
It is not part of the product and is only imported by `rag.bench`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from rag.embed import DEFAULT_MODEL, resolve_model
from rag.ingest import iso_date
from rag.store import date_ord
from rag.types import Filters

TOP_K = 50


class QuickStart:
    """Builds the peer index on construction; `ranked` answers like the bench expects."""

    def __init__(self, articles_file: Path, folder: Path, ids: dict[str, str] | None = None) -> None:
        """Index `articles_file` into `folder`; `ids` maps the file's article ids to the ones ranked."""
        import chromadb
        from llama_index.core import Document, StorageContext, VectorStoreIndex
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.chroma import ChromaVectorStore

        documents = []
        with gzip.open(articles_file, "rt", encoding="utf-8") as f:
            for line in f:
                item = json.loads(line)
                documents.append(Document(
                    text=item.get("text", ""),
                    metadata={"title": item.get("title", ""), "article_id": (ids or {}).get(item["id"], item["id"]),
                              "published_ord": date_ord(iso_date(item.get("published")))},
                    excluded_embed_metadata_keys=["article_id", "published_ord"],
                    excluded_llm_metadata_keys=["article_id", "published_ord"],
                ))
        client = chromadb.PersistentClient(path=str(folder), settings=chromadb.Settings(anonymized_telemetry=False))
        collection = client.get_or_create_collection("peer", metadata={"hnsw:space": "cosine"})
        self.embed_model = HuggingFaceEmbedding(model_name=resolve_model(DEFAULT_MODEL), device="cpu")
        storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
        self.index = VectorStoreIndex.from_documents(
            documents, storage_context=storage, embed_model=self.embed_model, show_progress=True,
        )
        self.articles = len(documents)
        self.chunks = collection.count()

    def ranked(self, question: str, filters: Filters | None) -> tuple[list[str], str]:
        """Article ids by first appearance among the top-50 chunks (no answer text)."""
        retriever = self.index.as_retriever(similarity_top_k=TOP_K, filters=_metadata_filters(filters))
        nodes = retriever.retrieve(question)
        return list(dict.fromkeys(n.node.metadata["article_id"] for n in nodes)), ""


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
