"""The project's own frozen result types.

Every public function of `rag` returns these, never framework objects
(chromadb records, LlamaIndex nodes). They carry no behaviour beyond small
conveniences; they do not know how they were produced.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date


class StoredText:
    """A long article's text left where it is stored, read a slice at a time: what an answer needs of it (its
    passages, their sentences and lines) costs memory in proportion to that, not to the article (a long text
    held whole as a `str` takes up to 4 bytes a character).

    It answers `len`, slicing, indexing, `find` and `rfind` as the `str` would, so code that only does these
    (sentence splitting, the junk checks, citations) takes it as it is; `str()` reads it whole, and `slices` in
    order a bounded piece at a time. Recently read blocks are kept (a few, of BLOCK characters); longer reads
    are not. It does not check that the stored text stays the same: `read` and `pieces` (the catalogue's) do."""

    BLOCK = 1 << 16  # characters read at a time for slices and indexing
    KEPT = 8  # blocks kept
    SCAN = 1 << 20  # at most this many characters read at a time by find, rfind and slices

    def __init__(self, size: int, read: Callable[[int, int], str],
                 pieces: Callable[[], Iterator[str]] | None = None) -> None:
        self.size = size
        self._read = read  # (start, end) -> the text's characters start:end
        self._pieces = pieces  # the whole text in order, a bounded piece at a time (else read by SCAN)
        self._blocks: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.size

    def __str__(self) -> str:
        return self[0:self.size]

    def __repr__(self) -> str:
        return f"StoredText({self.size} characters)"

    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, int):
            index = key + self.size if key < 0 else key
            if not 0 <= index < self.size:
                raise IndexError("string index out of range")
            return self._block(index // self.BLOCK)[index % self.BLOCK]
        start, end, step = key.indices(self.size)
        if step != 1:
            return self[start:end][::step] if step > 0 else str(self)[key]
        if end <= start:
            return ""
        first, last = start // self.BLOCK, (end - 1) // self.BLOCK
        if last - first >= self.KEPT // 2:
            return self._read(start, end)  # a long read: not kept
        text = "".join(self._block(b) for b in range(first, last + 1))
        return text[start - first * self.BLOCK:end - first * self.BLOCK]

    def find(self, sub: str, start: int = 0, end: int | None = None) -> int:
        """As `str.find`: read forward in windows that double, so a near match costs a block."""
        start, end = self._bounds(start, end)
        if end - start < len(sub) or not sub:
            return -1 if end - start < len(sub) else start
        width, pos = self.BLOCK, start
        while pos + len(sub) <= end:
            stop = min(end, pos + width)
            found = self[pos:min(end, stop + len(sub) - 1)].find(sub)
            if found >= 0:
                return pos + found
            pos, width = stop, min(width * 2, self.SCAN)
        return -1

    def rfind(self, sub: str, start: int = 0, end: int | None = None) -> int:
        """As `str.rfind`: read backward in windows that double."""
        start, end = self._bounds(start, end)
        if end - start < len(sub) or not sub:
            return -1 if end - start < len(sub) else end
        width, stop = self.BLOCK, end
        while stop >= start + len(sub) and stop > start:
            pos = max(start, stop - width)
            found = self[pos:min(end, stop + len(sub) - 1)].rfind(sub)
            if found >= 0:
                return pos + found
            stop, width = pos, min(width * 2, self.SCAN)
        return -1

    def _bounds(self, start: int, end: int | None) -> tuple[int, int]:
        """`str.find`'s start and end: negative ones from the end, `end` at most the length (`start` may pass it)."""
        end = self.size if end is None else max(end + self.size, 0) if end < 0 else min(end, self.size)
        return (max(start + self.size, 0) if start < 0 else start), end

    def slices(self) -> Iterator[str]:
        """The whole text in consecutive bounded slices (cut anywhere)."""
        if self._pieces is not None:
            yield from self._pieces()
            return
        for start in range(0, self.size, self.SCAN):
            yield self[start:min(self.size, start + self.SCAN)]

    def _block(self, n: int) -> str:
        with self._lock:  # the search's articles are shared by the questions answered at once
            block = self._blocks.get(n)
            if block is not None:
                self._blocks.move_to_end(n)
                return block
        block = self._read(n * self.BLOCK, min(self.size, (n + 1) * self.BLOCK))
        with self._lock:
            self._blocks[n] = block
            while len(self._blocks) > self.KEPT:
                self._blocks.popitem(last=False)
        return block


@dataclass(frozen=True)
class Article:
    """One news article as stored: `text` is what every quote is a span of. An article the search read has a
    long text as a `StoredText` (read in slices as needed): `str(article.text)` when the text itself is needed."""

    id: str
    title: str
    text: str | StoredText
    source: str = ""
    published: str = ""  # ISO YYYY-MM-DD, or "" when unknown
    url: str = ""
    path: str = ""  # file it came from (with "#line" for json lines)
    authors: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The `rag show --json` shape."""
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "published": self.published,
            "url": self.url,
            "path": self.path,
            "text": str(self.text),
        }


@dataclass(frozen=True)
class Chunk:
    """A passage of an article: `article.text[start:end] == text`."""

    id: str
    article_id: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score and the article it belongs to."""

    chunk: Chunk
    article: Article
    score: float  # fused, normalised per query: comparable within one search only
    dense: float = 0.0  # cosine similarity of the chunk to the question
    lexical: float = 0.0  # raw BM25 score of the chunk
    # the other copies of a syndicated story (grouped at index time), which the search leaves out
    copies: tuple[Article, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Citation:
    """An exact quote: `article text[start:end] == quote`."""

    n: int
    article_id: str
    title: str
    source: str
    published: str
    url: str
    path: str
    quote: str
    start: int
    end: int
    # who the quote attributes its claim to ("Vadym Boychenko, mayor of Mariupol", "CNN"); "" when nobody
    attribution: str = ""
    # outlets that published a copy of the same (syndicated) story, which is cited once
    also_reported_by: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "also_reported_by": list(self.also_reported_by)}


@dataclass(frozen=True)
class TimelinePoint:
    """One day of a timeline answer: what the cited sentences say happened then."""

    date: str  # ISO YYYY-MM-DD: stated in the sentence ("on Tuesday", resolved) or the article's publication
    text: str
    citations: tuple[int, ...] = ()  # the `n` of the citations quoting `text`

    def to_dict(self) -> dict:
        return {"date": self.date, "text": self.text, "citations": list(self.citations)}


@dataclass(frozen=True)
class QuestionDates:
    """The dates a question's time words ("this week", "in March 2022") were read as, and against what."""

    phrase: str
    since: str = ""  # ISO dates, "" for an open end
    until: str = ""
    reference: str = ""  # the day relative words were read against ("" when the phrase is absolute)
    reference_kind: str = ""  # "today", or "newest article" when the collection is older than the phrase

    def note(self) -> str:
        span = (self.since if self.since == self.until else f"{self.since} to {self.until}") if self.since and \
            self.until else f"since {self.since}" if self.since else f"until {self.until}"
        where = ""
        if self.reference_kind == "today":
            where = f", counted from today, {self.reference}"
        elif self.reference_kind:
            where = f", counted from {self.reference}: the newest article's date, as no article is that recent"
        return f"Articles dated {span} (\u201c{self.phrase}\u201d{where})."

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """An answer whose sentences end with `[n]` markers into `citations`."""

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    abstained: bool = False
    hits: tuple[Hit, ...] = field(default=(), repr=False, compare=False)
    # one line for the reader when the answer is not what was configured (the LLM failed: extractive instead)
    notice: str = ""
    # the date filter read from the question's own words ("this week"), when the caller gave none
    dates: QuestionDates | None = None
    # for questions about change over time ("what happened in X?"): the cited sentences by date, oldest first
    timeline: tuple[TimelinePoint, ...] = ()

    @property
    def reason(self) -> str:
        """Why an abstention abstained ("none of the articles found mentions Kestrelmouth."), without its
        "Not found in the articles" prefix; "" when it does not say."""
        said = re.match(r"\s*not found in the articles\s*[:.]\s*(\S.*)", self.text, flags=re.I | re.S)
        return said.group(1) if self.abstained and said else ""

    def to_dict(self) -> dict:
        """The `rag ask --json` shape (with "notice" and "dates" only when there are some)."""
        out = {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [c.to_dict() for c in self.citations],
            "timeline": [p.to_dict() for p in self.timeline],
        }
        if self.notice:
            out["notice"] = self.notice
        if self.dates is not None:
            out["dates"] = self.dates.to_dict()
        return out


@dataclass(frozen=True)
class DraftSentence:
    """One sentence an answerer wrote, and the passages it rests on, before it is checked (`rag.ground`).

    `text` is the sentence as written. Its claims may end with `[n]` markers naming passages (1-based in
    `Draft.hits`: how an LLM cites); a sentence with no marker rests on `passages` (0-based indexes into
    `Draft.hits`) as a whole. `span`: the sentence is a quote, `article.text[start:end]` of its first passage's
    article (how the extractive answerer writes): grounding checks that and cites the span as it is."""

    text: str
    passages: tuple[int, ...] = ()
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Draft:
    """What an answerer wrote for a question, before grounding turns it into an `Answer` with exact citations
    (`rag.ground`) and enrichment adds what every answer gets (`rag.enrich`).

    `abstention`: the answerer's own "Not found in the articles ..." when it drafted nothing; `notice`: one line
    for the reader (an LLM failed: this is the extractive draft). `fallback`: the draft to ground instead when
    nothing of this one is supported (an LLM's: the extractive one), made only then. `cap_sentences`,
    `cap_chars`: keep at most that many sentences, characters (0: no cap)."""

    question: str
    hits: tuple[Hit, ...]
    sentences: tuple[DraftSentence, ...] = ()
    abstention: str = ""
    notice: str = ""
    fallback: Callable[[], Draft] | None = field(default=None, repr=False, compare=False)
    cap_sentences: int = 0
    cap_chars: int = 0


@dataclass(frozen=True)
class Filters:
    """Search restrictions; empty fields restrict nothing."""

    sources: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"the date range is empty: {self.since} is after {self.until}")

    def is_empty(self) -> bool:
        return not self.sources and self.since is None and self.until is None


@dataclass(frozen=True)
class Message:
    """One chat turn: role is "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Skipped:
    """An input that was not indexed, and why (file, optional line, reason)."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class IndexReport:
    """What one `index` call did, by article id."""

    indexed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    chunks_embedded: int = 0
    notices: tuple[str, ...] = ()  # what else the run did and why (vectors embedded again after damage)

    def summary(self) -> str:
        return (
            f"{len(self.indexed)} indexed, {len(self.replaced)} replaced, "
            f"{len(self.unchanged)} unchanged, {len(self.duplicates)} duplicate, "
            f"{len(self.pruned)} pruned, {len(self.skipped)} skipped; "
            f"{self.chunks_embedded} chunks embedded"
        ) + "".join(f"; {notice}" for notice in self.notices)
