"""Ingest: turn files into `Article`s, reporting what could not be read.

Reads .txt, .md (YAML front matter), .html/.htm, .json, .jsonl and .jsonl.gz
from files and folders (recursively). Decodes UTF-8, UTF-16 (BOM) and falls
back to cp1252/latin-1 so text is never lost. Bad files and bad JSON lines
become `Skipped` entries naming the file, line and reason; the rest goes on.

It does not chunk, embed or store anything, and it does not deduplicate:
identity and change detection belong to the index.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import re
import stat
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import yaml
from dateutil import parser as date_parser

from rag.config import Settings
from rag.errors import RagError
from rag.types import Article, Skipped

if TYPE_CHECKING:
    from bs4 import BeautifulSoup

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl", ".jsonl.gz")
MB = 1024 * 1024
_TEXT_KEYS = ("text", "body", "content", "article", "maintext")
_DATE_KEYS = ("published", "published_at", "publish_date", "date", "datePublished", "pubDate")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
# control characters (C0, DEL, C1), bidi overrides and lone surrogates (undecodable bytes in a file name)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_MAX_REASONS = 50  # distinct line-skip reasons kept per file; the rest are counted as "other"


@dataclass(frozen=True)
class Limits:
    """How much of one file is read (`Settings.limits()`; the defaults are the settings' defaults).

    A .jsonl.gz is decompressed as it is read and cut at `decompressed_cap` of its compressed size: the
    articles before the cut are kept, the rest of the file is skipped with the reason."""

    max_file_bytes: int = 200 * MB  # on disk (compressed, for .jsonl.gz)
    max_decompressed_bytes: int = 1024 * MB
    decompression_ratio: float = 20.0  # decompressed at most this many times the compressed size...
    min_decompressed_bytes: int = 16 * MB  # ...but a small file may always grow to this
    max_line_bytes: int = 50 * MB  # one JSON line; a longer one is skipped

    def decompressed_cap(self, compressed: int) -> int:
        by_ratio = max(int(compressed * self.decompression_ratio), self.min_decompressed_bytes)
        return min(self.max_decompressed_bytes, by_ratio)


DEFAULT_LIMITS = Limits()


def limits_from(settings: Settings) -> Limits:
    """The reading limits of `RAG_MAX_FILE_MB`, `RAG_MAX_DECOMPRESSED_MB`, `RAG_DECOMPRESSION_RATIO` and
    `RAG_MAX_LINE_MB`."""
    return Limits(max_file_bytes=settings.max_file_mb * MB, max_decompressed_bytes=settings.max_decompressed_mb * MB,
                  decompression_ratio=settings.decompression_ratio, max_line_bytes=settings.max_line_mb * MB)


class InputError(RagError):
    """A path the user named does not exist or cannot be read at all."""


class _TooBig(Exception):
    """The decompressed stream passed its cap."""


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def find_files(paths: list[Path]) -> list[Path | Skipped]:
    """Expand folders recursively into supported files; a missing path raises.

    A path named directly is read as named (a symlink is followed). Inside a folder only regular files are
    read, and symlinks only when they point inside that folder; what is found but not read (a FIFO, a dangling
    symlink, a symlink out of the folder) is in the list as a `Skipped` with its reason, in its place."""
    found: list[Path | Skipped] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{escape(str(path))}: no such file or folder")
        if path.is_dir():
            found += _walk(path)
        else:
            found.append(path)
    return found


def _walk(root: Path) -> list[Path | Skipped]:
    real_root = root.resolve()
    found: list[tuple[Path, Path | Skipped]] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        links = [d for d in os.listdir(here) if not d.startswith(".") and (here / d).is_symlink()]
        for name in sorted(set(names) | set(links)):
            if name.startswith("."):
                continue
            path = here / name
            reason = _refusal(path, real_root)
            if reason:
                found.append((path, Skipped(display_path(path, follow=False), reason)))
            elif path.is_file() and suffix_of(path) in SUFFIXES:
                found.append((path, path))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]


def _refusal(path: Path, real_root: Path) -> str:
    """Why a folder entry is not read ("" when it is, or when it is silently not a candidate)."""
    if path.is_symlink():
        if not path.exists():
            return "dangling symlink (its target does not exist), skipped"
        target = path.resolve()
        if not target.is_relative_to(real_root):
            if target.is_dir() or suffix_of(target) in SUFFIXES or suffix_of(path) in SUFFIXES:
                return (f"symlink to {escape(target.as_posix())}, outside the folder: not followed "
                        "(name it to index it)")
            return ""
        if target.is_dir():
            return ""  # inside the folder: its files are read where they are
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"not a regular file ({_kind(mode)}), skipped"
    return ""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def escape(text: str) -> str:
    """Control characters, bidi overrides and undecodable bytes as visible escapes (\\n, \\x1b, \\u202e):
    a file name printed to a terminal or a page cannot move the cursor or fake a line."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


def display_path(path: Path, follow: bool = True, escaped: bool = True) -> str:
    """The path as stored and shown: relative to the working folder when inside it, control characters
    escaped (see `escape`). `follow=False` shows a symlink itself, not its target; `escaped=False` gives the
    name as it is on disk (the files table's key, so `--prune` can find the file again)."""
    resolved = path.resolve() if follow else Path(os.path.abspath(path))
    try:
        shown = resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = resolved.as_posix()
    return escape(shown) if escaped else shown


def file_key(path: Path) -> str:
    """The files table's key of `path`: its name as on disk, so `--prune` can look for it again; escaped only
    when it holds bytes that are not UTF-8 (SQLite stores text)."""
    raw = display_path(path, escaped=False)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return display_path(path)
    return raw


def article_id(url: str, where: str) -> str:
    """Stable id: from the url when there is one, else from the path (and line)."""
    key = url if url else f"path:{where}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def read_file(path: Path, limits: Limits = DEFAULT_LIMITS) -> Iterator[Article | Skipped]:
    """Yield the articles of one file, or `Skipped` entries for what is bad.

    Never raises: any failure while reading the file (or one of its lines) becomes a `Skipped` with its reason,
    and a reason repeated on many lines is reported once with a count."""
    shown = display_path(path)
    skips = _LineSkips(shown)
    try:
        for item in _read(path, shown, limits):
            if isinstance(item, Skipped) and item.line is not None:
                skips.add(item)
            else:
                given = [item]
                del item  # while the caller has it, this frame holds no reference: it may drop a long text
                yield given.pop()
    except Exception as exc:  # one unreadable file must not stop the batch
        yield Skipped(shown, failure_reason(exc))
    yield from skips.report()


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    if isinstance(exc, MemoryError):
        return "too large to read in memory"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return f"cannot read: {type(exc).__name__}: {exc}"


class _LineSkips:
    """Line skips of one file grouped by reason: 2,000,000 bad lines are one message with a count."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.by_reason: dict[str, list[int]] = {}  # reason: [count, first line]

    def add(self, item: Skipped) -> None:
        reason = item.reason if item.reason in self.by_reason or len(self.by_reason) < _MAX_REASONS else "other"
        entry = self.by_reason.setdefault(reason, [0, item.line or 0])
        entry[0] += 1

    def report(self) -> Iterator[Skipped]:
        for reason, (count, first) in self.by_reason.items():
            if count == 1:
                yield Skipped(self.shown, reason, line=first)
            else:
                yield Skipped(self.shown, f"{count:,} lines: {reason} (first at line {first})")


def _read(path: Path, shown: str, limits: Limits) -> Iterator[Article | Skipped]:
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:  # before reading it: a named video file is not read to be refused
        yield Skipped(shown, f"unsupported file type {suffix or '(none)'}")
        return
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # opening a FIFO would wait forever
        yield Skipped(shown, f"not a regular file ({_kind(info.st_mode)}), skipped")
        return
    if info.st_size > limits.max_file_bytes:
        yield Skipped(shown, f"file too large ({info.st_size:,} bytes > {limits.max_file_bytes:,})")
        return
    if suffix in (".jsonl", ".jsonl.gz"):
        # line by line, streamed: one bad line must not take the good ones with it, nor a bomb the memory
        yield from _read_json_stream(path, shown, suffix == ".jsonl.gz", info.st_size, limits)
        return
    raw = path.read_bytes()
    if not raw.strip():
        yield Skipped(shown, "empty file")
        return
    parts = _decoded_parts(raw)
    del raw  # the file's bytes go before its text is joined: the text (4 bytes a character with one emoji) is the
    # only whole copy held, next to the slices it is joined from
    text = None if parts is None else "".join(parts)
    del parts
    if text is None:
        yield Skipped(shown, "binary or undecodable content")
    elif suffix == ".json":
        yield from _read_json(text, shown, limits)
    else:
        given = [_checked(_read_html(text, shown) if suffix in (".html", ".htm") else _read_text(text, shown), shown)]
        del text  # while the caller has the article, this frame holds none of it: the caller may drop a long text
        yield given.pop()


def _open(path: Path, gz: bool) -> BinaryIO:
    return gzip.open(path, "rb") if gz else path.open("rb")  # type: ignore[return-value]


def _read_json_stream(path: Path, shown: str, gz: bool, size: int,
                      limits: Limits) -> Iterator[Article | Skipped]:
    cap = limits.decompressed_cap(size) if gz else size + 1
    try:
        with _open(path, gz) as f:
            head = f.read(4096)
    except (OSError, EOFError, zlib.error) as exc:
        yield Skipped(shown, f"not a valid gzip file: {exc}" if gz else failure_reason(exc))
        return
    if not head.strip():
        yield Skipped(shown, "empty file")
        return
    lineno = 0
    try:
        with _open(path, gz) as f:
            stream = io.BufferedReader(_Capped(f, cap), buffer_size=1 << 16)
            for lineno, line in _lines(stream, head, limits.max_line_bytes):
                if line is None:
                    yield Skipped(shown, f"line longer than {limits.max_line_bytes:,} bytes", line=lineno)
                elif line.strip():
                    yield _json_line(line, shown, lineno)
    except _TooBig:
        limit = "the compressed size times the decompression ratio" if gz else "the file size"
        yield Skipped(shown, f"stopped after {cap:,} bytes decompressed at line {lineno + 1} ({limit}, "
                             f"at most {limits.max_decompressed_bytes:,}): the rest of the file is skipped")
    except (OSError, EOFError, zlib.error) as exc:
        yield Skipped(shown, f"not a valid gzip file after line {lineno}: {exc}" if gz else failure_reason(exc))


class _Capped(io.RawIOBase):
    """A byte stream that raises `_TooBig` once more than `cap` bytes were read from it."""

    def __init__(self, stream: BinaryIO, cap: int) -> None:
        self.stream = stream
        self.cap = cap
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        room = self.cap - self.count
        if room <= 0:  # the lines before the cap were all given out
            if self.stream.read(1):
                raise _TooBig
            return 0
        data = self.stream.read(min(len(buffer), 1 << 16, room))
        self.count += len(data)
        buffer[:len(data)] = data
        return len(data)


def _lines(stream: BinaryIO, head: bytes, max_line: int) -> Iterator[tuple[int, bytes | str | None]]:
    """(number, line) of a stream; None for a line longer than `max_line` bytes (read past, never kept).
    UTF-16 (a BOM, or many NUL bytes at the start) is decoded as it is read and gives str lines."""
    encoding = _utf16(head[:256])
    if encoding:
        reader: BinaryIO | io.TextIOWrapper = io.TextIOWrapper(stream, encoding=encoding, errors="replace")
        limit, newline = max_line // 2, "\n"
    else:
        reader, limit, newline = stream, max_line, b"\n"  # type: ignore[assignment]
    lineno = 0
    while True:
        line = reader.readline(limit + 1)
        if not line:
            return
        lineno += 1
        if len(line) > limit:
            while line and not line.endswith(newline):  # type: ignore[arg-type]
                line = reader.readline(1 << 20)
            yield lineno, None
            continue
        yield lineno, line


def _utf16(head: bytes) -> str:
    """The UTF-16 codec the start of a file is in ("" when it is not): a BOM, or Latin text whose every
    other byte is NUL."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    odd, even = head[1::2], head[0::2]
    if len(odd) >= 2 and odd.count(0) > 0.8 * len(odd) and even.count(0) < 0.2 * len(even):
        return "utf-16-le"
    if len(even) >= 2 and even.count(0) > 0.8 * len(even) and odd.count(0) < 0.2 * len(odd):
        return "utf-16-be"
    return ""


def _json_line(line: bytes | str, shown: str, lineno: int) -> Article | Skipped:
    try:
        text = decode(line) if isinstance(line, bytes) else _checked_text(line)
        if text is None:
            return Skipped(shown, "binary or undecodable content", line=lineno)
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            return Skipped(shown, f"malformed JSON: {exc.msg}", line=lineno)
        return _json_article(item, shown, lineno, f"{shown}#{lineno}")
    except Exception as exc:  # e.g. nested too deeply: this line is skipped, the next is read
        return Skipped(shown, failure_reason(exc), line=lineno)


def _checked_text(text: str) -> str | None:
    return None if _looks_binary(text) else normalise(text)


def decode(raw: bytes) -> str | None:
    """Bytes to normalised text; None when the bytes are not text. Stray control characters (a NUL byte)
    are removed by `normalise`; only text that is mostly control characters is called binary."""
    parts = _decoded_parts(raw)
    return None if parts is None else "".join(parts)


def _decoded_parts(raw: bytes) -> list[str] | None:
    """`decode(raw)` as slices to join (None when not text): the bytes are decoded and normalised a slice at a
    time, so no whole copy of the text is made before the join (a slice is as wide as its widest character, the
    whole text as the text's: one emoji makes a 50 MB text 200 MB)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        decoded = _pieces(raw.decode("utf-16", errors="replace"))
    elif raw.count(b"\x00") > len(raw) // 4 and len(raw) > 1:
        # UTF-16 without a BOM: every other byte is NUL for Latin text
        decoded = _pieces(raw.decode("utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be", errors="replace"))
    else:
        # UTF-8, with any byte that is not UTF-8 read as cp1252: mixed files keep both parts readable
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="rag-cp1252")
        view = memoryview(raw)
        decoded = [decoder.decode(view[i:i + PIECE_CHARS], final=i + PIECE_CHARS >= len(raw))
                   for i in range(0, len(raw), PIECE_CHARS)]
    if _looks_binary_parts(decoded):
        return None
    decoded.reverse()  # taken from the end as they are normalised: the decoded and normalised slices never both
    return _normalise_stream(_popped(decoded))  # hold the whole text


def _pieces(text: str) -> list[str]:
    return [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


def _popped(items: list[str]) -> Iterator[str]:
    while items:
        yield items.pop()


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start:exc.end].decode("cp1252", errors="replace"), exc.end


codecs.register_error("rag-cp1252", _cp1252_fallback)


_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd]")


def _looks_binary(text: str) -> bool:
    # the start, middle and end: a text header does not hide a binary body
    middle = len(text) // 2
    return _bad_samples({text[:4096], text[middle:middle + 4096], text[-4096:]})


def _looks_binary_parts(parts: list[str]) -> bool:
    """`_looks_binary` of the parts joined, without joining them."""
    total = sum(map(len, parts))
    middle = total // 2
    return _bad_samples({_span(parts, 0, 4096), _span(parts, middle, middle + 4096),
                         _span(parts, max(0, total - 4096), total)})


def _span(parts: list[str], start: int, end: int) -> str:
    """`"".join(parts)[start:end]`."""
    out, offset = [], 0
    for part in parts:
        if offset >= end:
            break
        if offset + len(part) > start:
            out.append(part[max(0, start - offset):end - offset])
        offset += len(part)
    return "".join(out)


def _bad_samples(samples: set[str]) -> bool:
    for sample in samples:
        bad = len(_NOT_TEXT.findall(sample))  # a regex, not a loop per character: JSON lines come by millions
        if bad > max(8, len(sample) // 20):
            return True
    return False


def normalise(text: str) -> str:
    """NFC, Unix newlines, no control characters, no trailing spaces."""
    if len(text) <= PIECE_CHARS:
        return _normalised(text).strip()
    return "".join(_normalise_stream(iter(_pieces(text))))


# a longer text is decoded and normalised a slice of about this many characters at a time: small, so that most
# slices stay 1 byte a character when a few emoji widen the whole text to 4
PIECE_CHARS = 1 << 15
# a slice ends after a newline followed by a character no rule of `_normalised` changes or joins across
_CUT = re.compile(r"\n(?=[^\s\x00-\x1f\x7f])")


def _normalise_stream(pieces: Iterator[str]) -> list[str]:
    """`normalise` of the pieces joined, as slices to join: each slice is cut where no rule reaches across
    (`_CUT`), normalised alone, and the pieces it came from are dropped."""
    parts: list[str] = []
    pending: list[str] = []  # pieces since the last cut
    for piece in pieces:
        if not piece:
            continue
        seam = pending[-1][-1:] if pending else ""  # a cut may fall between the last pending piece and this one
        cut = _CUT.search(seam + piece)
        if cut is None:
            pending.append(piece)
            continue
        at = cut.end() - len(seam)
        parts.append(_normalised("".join(pending) + piece[:at]))
        pending = [piece[at:]] if at < len(piece) else []
    if pending:
        parts.append(_normalised("".join(pending)))
    if not parts:
        return [""]
    parts[0] = parts[0].lstrip()  # each slice after the first opens with a letter
    parts[-1] = parts[-1].rstrip()
    return parts


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t\u00a0]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def _checked(article: Article, shown: str) -> Article | Skipped:
    return article if article.text.strip() else Skipped(shown, "no article text found")


def _read_text(text: str, shown: str) -> Article:
    meta: dict = {}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
            meta = loaded if isinstance(loaded, dict) else {}
            text = text[match.end():].strip()
        except yaml.YAMLError:
            meta = {}  # not front matter after all: keep the text whole
    return make_article(meta, text, shown, where=shown)


def _read_html(html: str, shown: str) -> Article:
    """An article page: text and metadata from trafilatura (it reads JSON-LD too, and leaves out captions, share
    bars and link lists); the page's own meta tags win where they say something, and our own extraction stands in
    for a page trafilatura finds no text in."""
    from bs4 import BeautifulSoup  # here: only HTML needs it, and it costs a quarter second of every `rag ask`

    soup = BeautifulSoup(html, "lxml")
    found = _extracted(html, _canonical(soup))
    meta = {
        "title": found.get("title") or _meta(soup, "og:title", "twitter:title") or _tag_text(soup, "title")
        or _tag_text(soup, "h1"),
        "published": _meta(
            soup, "article:published_time", "og:published_time", "date", "pubdate",
            "publishdate", "dc.date", "datePublished", "sailthru.date", "parsely-pub-date",
        ) or found.get("date") or _time_tag(soup),
        "source": _meta(soup, "og:site_name", "application-name") or found.get("sitename"),
        "url": _canonical(soup),
        "authors": _meta(soup, "author", "article:author") or [a.strip() for a in (found.get("author") or "")
                                                               .split(";") if a.strip()],
    }
    text = normalise(found.get("text") or "") or html_text(soup)
    return make_article(meta, text, shown, where=shown)


def _extracted(html: str, url: str) -> dict:
    """trafilatura's reading of a page ({} when it finds nothing or fails): title, date, author ("A; B"),
    sitename, text. Dates only from the page's markup and url, not guessed from its prose."""
    import trafilatura

    try:
        document = trafilatura.bare_extraction(
            html, url=url or None, with_metadata=True, include_comments=False, include_tables=True,
            date_extraction_params={"extensive_search": False, "original_date": True}, config=_trafilatura_config())
    except Exception:  # a page trafilatura cannot parse is read by our own extraction
        return {}
    return document.as_dict() if document is not None else {}


@lru_cache(maxsize=1)
def _trafilatura_config():  # type: ignore[no-untyped-def]
    """trafilatura's settings, but a short article is kept as found: by default a text under 250 characters is
    extracted again by a fallback that keeps the navigation ("Home | World")."""
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "1")
    config.set("DEFAULT", "MIN_OUTPUT_SIZE", "1")
    return config


def html_text(soup: BeautifulSoup) -> str:
    """Readable article text: no scripts, styles, navigation or page chrome."""
    for tag in soup(["script", "style", "noscript", "iframe", "nav", "header", "footer",
                     "aside", "form", "svg", "button", "template", "object", "embed"]):
        tag.decompose()
    root = soup.find("article") or soup.find("main") or soup.body or soup
    blocks = root.find_all(["p", "h1", "h2", "h3", "h4", "li", "blockquote", "pre"])
    parts = [b.get_text(" ", strip=True) for b in blocks if not b.find_parent(["p", "li", "blockquote"])]
    parts = [p for p in parts if p]
    if not parts:
        parts = [line.strip() for line in root.get_text("\n").splitlines() if line.strip()]
    return normalise("\n\n".join(re.sub(r"\s+", " ", p) for p in parts))


def _meta(soup: BeautifulSoup, *names: str) -> str:
    for name in names:
        for attr in ("property", "name", "itemprop"):
            tag = soup.find("meta", attrs={attr: name})
            if tag and tag.get("content"):
                return str(tag["content"]).strip()
    return ""


def _tag_text(soup: BeautifulSoup, name: str) -> str:
    tag = soup.find(name)
    return tag.get_text(" ", strip=True) if tag else ""


def _time_tag(soup: BeautifulSoup) -> str:
    tag = soup.find("time", attrs={"datetime": True})
    return str(tag["datetime"]) if tag else ""


def _canonical(soup: BeautifulSoup) -> str:
    tag = soup.find("link", attrs={"rel": "canonical"})
    return str(tag.get("href", "")) if tag else _meta(soup, "og:url")


def _read_json(text: str, shown: str, limits: Limits) -> Iterator[Article | Skipped]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # a .json file may still hold JSON lines
        if "\n" not in text.strip():
            yield Skipped(shown, f"malformed JSON: {exc.msg} at line {exc.lineno}")
            return
    else:
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items, 1):
            try:
                yield _json_article(item, shown, i, f"{shown}#{i}")
            except Exception as exc:  # e.g. one item nested too deeply
                yield Skipped(shown, f"item {i}: {failure_reason(exc)}")
        return
    raw = text.encode("utf-8")
    del text
    for lineno, line in _lines(io.BytesIO(raw), raw[:4096], limits.max_line_bytes):  # type: ignore[arg-type]
        if line is None:
            yield Skipped(shown, f"line longer than {limits.max_line_bytes:,} bytes", line=lineno)
        elif line.strip():
            yield _json_line(line, shown, lineno)


def _json_article(item: object, shown: str, lineno: int, where: str) -> Article | Skipped:
    if not isinstance(item, dict):
        return Skipped(shown, "expected a JSON object", line=lineno)
    body = next((item[k] for k in _TEXT_KEYS if item.get(k)), "")
    text = normalise(as_text(body, sep="\n\n"))
    if not text:
        return Skipped(shown, "no article text (text/body/content)", line=lineno)
    meta = dict(item)
    meta["published"] = next((item[k] for k in _DATE_KEYS if item.get(k)), "")
    return make_article(meta, text, shown, where=where, explicit_id=as_text(item.get("id")))


def make_article(meta: dict, text: str, path: str, where: str, explicit_id: str = "") -> Article:
    """Normalise loose metadata (wrong types, odd dates) into an Article."""
    url = as_text(meta.get("url") or meta.get("link"))
    if not url.lower().startswith(("http://", "https://")):
        url = ""
    title = re.sub(r"\s+", " ", as_text(meta.get("title"))).strip() or url_title(url) or title_from_text(text)
    source = as_text(meta.get("source") or meta.get("site") or meta.get("publisher"))
    if not source and url:
        source = re.sub(r"^www\.", "", url.split("/")[2].lower())
    authors = meta.get("authors") or meta.get("author") or []
    authors = tuple(as_text(a) for a in (authors if isinstance(authors, list) else [authors]) if as_text(a))
    ident = article_id(url, where) if url or not explicit_id else explicit_id
    return Article(
        id=ident, title=title[:500], text=text, source=source[:200],
        published=iso_date(meta.get("published") or meta.get("date")),
        url=url, path=path,
        authors=authors,
    )


def as_text(value: object, sep: str = ", ") -> str:
    """Any JSON value as plain text: lists joined, dicts by their values, None empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return sep.join(t for t in (as_text(v, sep) for v in value) if t)
    if isinstance(value, dict):
        for key in ("name", "text", "value", "title"):
            if key in value:
                return as_text(value[key], sep)
        return sep.join(t for t in (as_text(v, sep) for v in value.values()) if t)
    return str(value)


def url_title(url: str) -> str:
    """A title from a news url's slug (".../sprite-green-bottle/index.html" gives
    "Sprite green bottle"); "" when the url has no slug of two or more words."""
    segments = [re.sub(r"\.\w{2,5}$", "", seg) for seg in url.split("?")[0].split("#")[0].split("/")[3:]]
    slugs = [seg for seg in segments if len(re.findall(r"[A-Za-z]{2,}", seg)) >= 2 and re.search(r"[-_]", seg)]
    if not slugs:
        return ""
    words = [w for w in re.split(r"[-_+]+", max(slugs, key=len)) if w and not re.fullmatch(r"[0-9a-f]{6,}|\d+", w)]
    return " ".join(words).capitalize()[:200]


_VISIBLE = re.compile(r"\S")


def title_from_text(text: str) -> str:
    """A title for an untitled article: its first line, or its first sentence."""
    start = _VISIBLE.search(text)
    # the first line of the text's opening (a title is at most 120 characters of it): not a copy of a long text
    first = text[start.start():start.start() + 4096].split("\n", 1)[0].strip() if start else ""
    sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    title = sentence if len(sentence) <= 120 else sentence[:117].rsplit(" ", 1)[0] + "..."
    return title.lstrip("#").strip()


def iso_date(value: object) -> str:
    """Any usual date form (or epoch seconds) as YYYY-MM-DD; "" when unknown."""
    if value is None or value == "" or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / (1000 if value > 1e11 else 1), UTC).date().isoformat()
        except (OverflowError, OSError, ValueError):
            return ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    text = as_text(value)
    match = re.match(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text)
    try:
        if match:
            return date(*map(int, match.groups())).isoformat()
        return date_parser.parse(text, fuzzy=False).date().isoformat()
    except (ValueError, OverflowError, TypeError):
        return ""
