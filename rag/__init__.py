"""Ask questions about a collection of news articles; answers cite exact passages.

The public surface is small: `Assistant` (the facade), `Settings`, and the
frozen result types. They are imported when first named (`from rag import
Assistant`), not by `import rag`: every `rag` command imports this package
first, and the facade pulls in the whole pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.api import Assistant, QuestionError
    from rag.config import Settings
    from rag.types import Answer, Article, Chunk, Citation, Filters, Hit, IndexReport, Message, Skipped

_HOME = {"Assistant": "rag.api", "QuestionError": "rag.api", "Settings": "rag.config",
         **dict.fromkeys(("Answer", "Article", "Chunk", "Citation", "Filters", "Hit", "IndexReport", "Message",
                          "Skipped"), "rag.types")}

__all__ = [
    "Answer", "Article", "Assistant", "Chunk", "Citation", "Filters", "Hit", "IndexReport",
    "Message", "QuestionError", "Settings", "Skipped",
]


def __getattr__(name: str) -> object:
    """The public names, imported on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
