"""bm25s's English stop lists, read without importing the bm25s package.

`STOPWORDS_EN` (the short list BM25 drops) and `STOPWORDS_EN_PLUS` (the longer one the answer checks use)
come from bm25s's own `stopwords` module, executed on its own: the package's `__init__` imports scipy, tqdm
and its numba helpers, about a second of every `rag ask` that only needs the word lists. This module holds no
words of its own and does not tokenize.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _bm25s_stopwords() -> ModuleType:
    """bm25s/stopwords.py as a module (plain tuples of words); find_spec of a top-level package runs none of it."""
    package = importlib.util.find_spec("bm25s")
    if package is None or not package.submodule_search_locations:
        raise ImportError("bm25s is not installed: it is a dependency of rag-news (pip install -e .)")
    path = Path(next(iter(package.submodule_search_locations))) / "stopwords.py"
    spec = importlib.util.spec_from_file_location("rag._bm25s_stopwords", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot read bm25s's stop lists from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_LISTS = _bm25s_stopwords()
STOPWORDS_EN: tuple[str, ...] = _LISTS.STOPWORDS_EN
STOPWORDS_EN_PLUS: tuple[str, ...] = _LISTS.STOPWORDS_EN_PLUS
del _LISTS
