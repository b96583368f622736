"""Ask questions about a collection of news articles; answers cite exact passages.

The public surface is small: `Assistant` (the facade), `Settings`, and the
frozen result types.
"""

from rag.api import Assistant, QuestionError
from rag.config import Settings
from rag.types import Answer, Article, Chunk, Citation, Filters, Hit, IndexReport, Message, Skipped

__all__ = [
    "Answer", "Article", "Assistant", "Chunk", "Citation", "Filters", "Hit", "IndexReport",
    "Message", "QuestionError", "Settings", "Skipped",
]
