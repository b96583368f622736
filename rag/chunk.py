"""Chunk: split article text into sentences and token-sized passages.

Passages are packed from whole sentences up to a tiktoken budget with a small
overlap, and keep exact character offsets (`text[start:end]`). A sentence
longer than the budget is cut at word boundaries. What gets embedded (title
prefix) is decided by the index, not here; this module never alters text.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rag.types import Article, Chunk

if TYPE_CHECKING:
    import tiktoken

_ABBREV = {
    "mr", "mrs", "ms", "dr", "st", "sen", "rep", "gov", "gen", "lt", "col", "sgt", "capt",
    "prof", "jr", "sr", "inc", "ltd", "co", "corp", "vs", "no", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "u.n", "e.g", "i.e",
    "approx", "est", "ft", "mt", "ave", "dept", "univ", "sec", "pres",
}
# a sentence ends at . ! ? (maybe closed by quotes/brackets) followed by space
_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9])")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text[start:end]`, trimmed of spaces."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text[start:end]):
        base = start + line.start()
        segment = line.group()
        cut = 0
        for match in _END.finditer(segment):
            if _is_abbreviation(segment, match.start()):
                continue
            spans.append((base + cut, base + match.end()))
            cut = match.end()
        spans.append((base + cut, base + len(segment)))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[1] > s[0]]


def _is_abbreviation(segment: str, dot: int) -> bool:
    if segment[dot] != ".":
        return False
    start = dot
    while start > 0 and (segment[start - 1].isalnum() or segment[start - 1] == "."):
        start -= 1  # scanning back is linear; a regex on segment[:dot] was quadratic on long lines
    token = segment[start:dot].lower()
    if not token:
        return False
    # single letters are initials ("J. K. Rowling"), not sentence ends
    return token in _ABBREV or (len(token) == 1 and token.isalpha())


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def tiktoken_dir() -> str | None:
    """The tiktoken cache that llama-index-core ships (no download needed)."""
    spec = importlib.util.find_spec("llama_index.core")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"
    return str(path) if path.is_dir() else None


def chunk_prefix(article_id: str, version: str = "") -> str:
    """What a chunk's id is before its position in the article (`Chunker.chunk`)."""
    return f"{article_id}:{version}:" if version else f"{article_id}:"


class Chunker:
    """Packs sentences into passages of at most `max_tokens` tiktoken tokens."""

    def __init__(self, max_tokens: int = 160, overlap: int = 24, encoding: str = "cl100k_base") -> None:
        if max_tokens < 16 or not 0 <= overlap < max_tokens // 2:
            raise ValueError("chunk size must be >= 16 tokens and overlap < half of it")
        self.encoding_name = encoding
        self._encoding: tiktoken.Encoding | None = None
        self.max_tokens = max_tokens
        self.overlap = overlap

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The tiktoken encoding, loaded when first used: only indexing counts tokens, so a process that only
        answers questions never imports tiktoken (nor looks for llama-index's cache of it)."""
        if self._encoding is None:
            import tiktoken

            cache = tiktoken_dir()
            if cache and "TIKTOKEN_CACHE_DIR" not in os.environ:
                # tiktoken downloads encodings on first use; the shipped cache avoids it
                os.environ["TIKTOKEN_CACHE_DIR"] = cache
            self._encoding = tiktoken.get_encoding(self.encoding_name)
        return self._encoding

    def count(self, texts: list[str]) -> list[int]:
        # a plain loop: encode_ordinary_batch's thread pool costs more than it saves on sentences
        encode = self.encoding.encode_ordinary
        return [len(encode(t)) for t in texts]

    def chunk(self, article: Article, max_tokens: int | None = None, version: str = "") -> list[Chunk]:
        """The article's passages, in order.

        Ids are `ARTICLE:VERSION:i`: stable for the same text, and distinct for
        a new version so it can be stored before the old one is removed.
        """
        prefix = chunk_prefix(article.id, version)
        return [
            Chunk(id=f"{prefix}{i}", article_id=article.id, start=a, end=b, text=article.text[a:b])
            for i, (a, b) in enumerate(self.spans(article.text, max_tokens))
        ]

    def spans(self, text: str, max_tokens: int | None = None) -> list[tuple[int, int]]:
        """The (start, end) of the passages `chunk` cuts `text` into, without their texts (a long article's
        chunk texts are made a slice at a time by the index)."""
        budget = max_tokens or self.max_tokens
        return self._pack(self._pieces(text, budget), budget, min(self.overlap, budget // 4))

    def _pieces(self, text: str, budget: int) -> list[tuple[int, int, int]]:
        """Sentences as (start, end, tokens), long ones cut into word runs."""
        spans = sentence_spans(text)
        counts = self.count([text[a:b] for a, b in spans])
        pieces: list[tuple[int, int, int]] = []
        for (a, b), n in zip(spans, counts):
            pieces += [(a, b, n)] if n <= budget else self._split_long(text, a, b, budget)
        return pieces

    def _split_long(self, text: str, a: int, b: int, budget: int) -> list[tuple[int, int, int]]:
        words = [(a + m.start(), a + m.end()) for m in re.finditer(r"\S+", text[a:b])]
        counts = self.count([text[s:e] for s, e in words])
        out: list[tuple[int, int, int]] = []
        start, total, last = words[0][0], 0, words[0][0]
        for (s, e), n in zip(words, counts):
            if total and total + n + 1 > budget:
                out.append((start, last, total))
                start, total = s, 0
            if n > budget:  # one absurdly long "word": cut it by characters
                out += self._split_chars(text, s, e, budget)
                start, total, last = e, 0, e
                continue
            total += n + (1 if total else 0)
            last = e
        if total:
            out.append((start, last, total))
        return out

    def _split_chars(self, text: str, a: int, b: int, budget: int) -> list[tuple[int, int, int]]:
        step = max(1, budget * 2)  # at least ~2 characters a token even for junk
        return [(s, min(b, s + step), budget) for s in range(a, b, step)]

    def _pack(self, pieces: list[tuple[int, int, int]], budget: int, overlap: int) -> list[tuple[int, int]]:
        chunks: list[tuple[int, int]] = []
        i = 0
        while i < len(pieces):
            j, total = i, 0
            while j < len(pieces) and (j == i or total + pieces[j][2] <= budget):
                total += pieces[j][2]
                j += 1
            chunks.append((pieces[i][0], pieces[j - 1][1]))
            if j >= len(pieces):
                break
            # start the next chunk with trailing sentences worth <= overlap tokens
            back, carried = j, 0
            while back - 1 > i and carried + pieces[back - 1][2] <= overlap:
                back -= 1
                carried += pieces[back][2]
            i = back
        return chunks
