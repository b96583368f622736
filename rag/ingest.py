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
import json
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import yaml
from bs4 import BeautifulSoup
from dateutil import parser as date_parser

from rag.types import Article, Skipped

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl", ".jsonl.gz")
MAX_FILE_BYTES = 200 * 1024 * 1024
_TEXT_KEYS = ("text", "body", "content", "article", "maintext")
_DATE_KEYS = ("published", "published_at", "publish_date", "date", "datePublished", "pubDate")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)


class InputError(Exception):
    """A path the user named does not exist or cannot be read at all."""


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def find_files(paths: list[Path]) -> list[Path]:
    """Expand folders recursively into supported files; a missing path raises."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and suffix_of(p) in SUFFIXES and not _hidden(p, path)
            )
        else:
            found.append(path)
    return found


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def display_path(path: Path) -> str:
    """The path as stored: relative to the working folder when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def article_id(url: str, where: str) -> str:
    """Stable id: from the url when there is one, else from the path (and line)."""
    key = url if url else f"path:{where}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def read_file(path: Path) -> Iterator[Article | Skipped]:
    """Yield the articles of one file, or `Skipped` entries for what is bad."""
    shown = display_path(path)
    suffix = suffix_of(path)
    if suffix not in SUFFIXES:  # before reading it: a named video file is not read to be refused
        yield Skipped(shown, f"unsupported file type {suffix or '(none)'}")
        return
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            yield Skipped(shown, f"file too large ({size} bytes > {MAX_FILE_BYTES})")
            return
        raw = path.read_bytes()
    except OSError as exc:
        yield Skipped(shown, f"cannot read: {exc.strerror or exc}")
        return
    if suffix == ".jsonl.gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            yield Skipped(shown, f"not a valid gzip file: {exc}")
            return
    if not raw.strip():
        yield Skipped(shown, "empty file")
        return
    if suffix in (".jsonl", ".jsonl.gz") and not raw.startswith((b"\xff\xfe", b"\xfe\xff")) \
            and raw.count(b"\x00") <= len(raw) // 4:
        # line by line: one binary or mis-encoded line must not take the good ones with it
        yield from _read_json_lines(raw, shown)
        return
    text = decode(raw)
    if text is None:
        yield Skipped(shown, "binary or undecodable content")
        return
    if suffix in (".json", ".jsonl", ".jsonl.gz"):
        yield from _read_json(text, shown, whole=suffix == ".json")
    elif suffix in (".html", ".htm"):
        yield _checked(_read_html(text, shown), shown)
    else:
        yield _checked(_read_text(text, shown), shown)


def decode(raw: bytes) -> str | None:
    """Bytes to normalised text; None when the bytes are not text."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16", errors="replace")
    elif raw.count(b"\x00") > len(raw) // 4 and len(raw) > 1:
        # UTF-16 without a BOM: every other byte is NUL for Latin text
        text = raw.decode("utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be", errors="replace")
    else:
        if b"\x00" in raw:
            return None
        # UTF-8, with any byte that is not UTF-8 read as cp1252: mixed files keep both parts readable
        text = raw.decode("utf-8-sig", errors="rag-cp1252")
    if _looks_binary(text):
        return None
    return normalise(text)


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start:exc.end].decode("cp1252", errors="replace"), exc.end


codecs.register_error("rag-cp1252", _cp1252_fallback)


def _looks_binary(text: str) -> bool:
    sample = text[:4096]
    bad = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\n\r\t\f") or ch == "\ufffd")
    return bad > max(8, len(sample) // 20)


def normalise(text: str) -> str:
    """NFC, Unix newlines, no control characters, no trailing spaces."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t\u00a0]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


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
    soup = BeautifulSoup(html, "lxml")
    meta = {
        "title": _meta(soup, "og:title", "twitter:title") or _tag_text(soup, "title") or _tag_text(soup, "h1"),
        "published": _meta(
            soup, "article:published_time", "og:published_time", "date", "pubdate",
            "publishdate", "dc.date", "datePublished", "sailthru.date", "parsely-pub-date",
        ) or _time_tag(soup),
        "source": _meta(soup, "og:site_name", "application-name"),
        "url": _canonical(soup),
        "authors": _meta(soup, "author", "article:author"),
    }
    return make_article(meta, html_text(soup), shown, where=shown)


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


def _read_json(text: str, shown: str, whole: bool) -> Iterator[Article | Skipped]:
    if whole:
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
                yield _json_article(item, shown, i, f"{shown}#{i}")
            return
    yield from _read_json_lines(text.encode("utf-8"), shown)


def _read_json_lines(raw: bytes, shown: str) -> Iterator[Article | Skipped]:
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        text = decode(line)
        if text is None:
            yield Skipped(shown, "binary or undecodable content", line=lineno)
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Skipped(shown, f"malformed JSON: {exc.msg}", line=lineno)
            continue
        yield _json_article(item, shown, lineno, f"{shown}#{lineno}")


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


def title_from_text(text: str) -> str:
    """A title for an untitled article: its first line, or its first sentence."""
    first = text.strip().split("\n", 1)[0].strip()
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
