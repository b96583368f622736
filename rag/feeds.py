"""Feeds and pages: fetch an RSS/Atom feed's articles, or one article page, for indexing.

`fetch_articles(url, folder)` downloads the url; a feed's entries are each fetched and their article
text extracted (the entry's own summary or content when its page cannot be read); a page is one
article. Each article is written to `folder` as a JSON file named by its url, which `rag index`
then indexes like any other file (same url, same id: a re-fetched article is updated, not doubled).

Safety: only http and https, a timeout per request, a size limit per response, redirects capped
(each hop checked again), at most `max_items` entries per feed, XML parsed without entities or
network access; with `allow_private=False` (the HTTP API's default) no hop may go to a loopback, private,
link-local or other non-public address (checked on the resolved addresses before each request; a DNS answer
that changes between the check and the request is not caught).
A failing entry is a `Skipped` with its url and the reason; the others are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

from rag.errors import RagError
from rag.types import Skipped

TIMEOUT = 15.0  # seconds to connect and between bytes
MAX_BYTES = 5 * 2**20  # per response
MAX_REDIRECTS = 5
MAX_ITEMS = 200  # entries taken from one feed
USER_AGENT = "rag-news/0.1 (+https://github.com/; feed reader)"


class FetchError(RagError):
    """A url that cannot be fetched (bad scheme, network error, HTTP error, too large, too many redirects)."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


def is_url(text: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(text)))


def fetch(url: str, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES, max_redirects: int = MAX_REDIRECTS,
          allow_private: bool = True) -> Fetched:
    """GET `url` (http or https only), following at most `max_redirects` redirects, reading at most `max_bytes`;
    without `allow_private`, only from public addresses (see `check_public`)."""
    import httpx

    with httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}) as client:
        for _ in range(max_redirects + 1):
            if urlparse(url).scheme.lower() not in ("http", "https") or not urlparse(url).netloc:
                raise FetchError(f"{url}: only http and https urls can be fetched")
            if not allow_private:
                check_public(url)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise FetchError(f"{url}: redirect without a location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code >= 400:
                        raise FetchError(f"{url}: HTTP {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError(f"{url}: too large ({declared} bytes > {max_bytes})")
                    body = bytearray()
                    for piece in response.iter_bytes():
                        body += piece
                        if len(body) > max_bytes:
                            raise FetchError(f"{url}: too large (more than {max_bytes} bytes)")
                    return Fetched(str(response.url), response.headers.get("content-type", ""), bytes(body))
            except httpx.TimeoutException:
                raise FetchError(f"{url}: timed out after {timeout:g} s") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
        raise FetchError(f"{url}: more than {max_redirects} redirects")


def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 with or without brackets) is this machine's loopback: the servers
    (web chat, HTTP API) need no password or key there."""
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_public(url: str) -> None:
    """Raise FetchError unless every address the url's host resolves to is a public one (not loopback,
    private, link-local, multicast, reserved or unspecified): a server must not fetch from its own network."""
    import ipaddress
    import socket

    parts = urlparse(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise FetchError(f"{url}: cannot resolve {host!r} ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise FetchError(f"{url}: {host} is a non-public address ({address}); urls are not fetched from "
                             "loopback, private or link-local addresses (RAG_API_ALLOW_PRIVATE_URLS=1 allows it)")


def looks_like_feed(fetched: Fetched) -> bool:
    kind = fetched.content_type.lower()
    if any(x in kind for x in ("rss", "atom")):
        return True
    head = fetched.body[:512].lstrip().lower()
    return (("xml" in kind or head.startswith(b"<?xml")) and (b"<rss" in fetched.body[:2048].lower()
            or b"<feed" in fetched.body[:2048].lower() or b"<rdf" in fetched.body[:2048].lower()))


@dataclass(frozen=True)
class Entry:
    link: str
    title: str = ""
    published: str = ""
    summary: str = ""  # text of the entry's content or summary (HTML removed)


def parse_feed(body: bytes, base: str) -> tuple[str, list[Entry]]:
    """(feed title, entries) of an RSS 2.0, RSS 1.0 or Atom document."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise FetchError(f"{base}: not a readable feed ({exc})") from None
    if root is None:
        raise FetchError(f"{base}: not a readable feed")

    def local(el) -> str:
        return etree.QName(el).localname.lower() if isinstance(el.tag, str) else ""

    def child(el, *names: str):
        return next((c for c in el if local(c) in names), None)

    def text(el) -> str:
        return "".join(el.itertext()).strip() if el is not None else ""

    channel = child(root, "channel")
    title = text(child(channel if channel is not None else root, "title"))
    entries: list[Entry] = []
    for item in root.iter():
        if local(item) not in ("item", "entry"):
            continue
        link = ""
        for c in item:
            if local(c) == "link":
                href = c.get("href")
                if href and c.get("rel", "alternate") == "alternate":
                    link = href
                    break
                if not href and text(c):
                    link = text(c)
                    break
        if not link:
            guid = child(item, "guid", "id")
            link = text(guid) if guid is not None and is_url(text(guid)) else ""
        content = child(item, "encoded", "content")
        if content is None:
            content = child(item, "description", "summary")
        summary = _strip_html(text(content))
        published = text(child(item, "pubdate", "published", "updated", "date"))
        entries.append(Entry(urljoin(base, link) if link else "", text(child(item, "title")), published, summary))
        if len(entries) >= MAX_ITEMS:
            break
    return title, entries


def _strip_html(text: str) -> str:
    if "<" not in text:
        return text
    from bs4 import BeautifulSoup

    return BeautifulSoup(text, "lxml").get_text(" ", strip=True)


def page_article(fetched: Fetched) -> dict:
    """Title, text, source, published, url and authors of an article page."""
    from rag.ingest import _read_html, decode

    html = decode(fetched.body) or ""
    article = _read_html(html, fetched.url)
    return {"title": article.title, "text": article.text, "source": article.source, "published": article.published,
            "url": article.url or fetched.url, "authors": list(article.authors)}


def fetch_articles(url: str, folder: Path, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES,
                   max_redirects: int = MAX_REDIRECTS, allow_private: bool = True) -> tuple[list[Path], list[Skipped]]:
    """Fetch a feed's articles or one article page into `folder` as JSON files: (files written, failures);
    without `allow_private`, the feed's entries too come only from public addresses."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fetched = fetch(url, timeout, max_bytes, max_redirects, allow_private)
    except FetchError as exc:
        return [], [Skipped(url, str(exc).removeprefix(f"{url}: "))]
    written: list[Path] = []
    skipped: list[Skipped] = []
    if not looks_like_feed(fetched):
        item = page_article(fetched)
        if not item["text"].strip():
            return [], [Skipped(url, "no article text found on the page")]
        return [_write(folder, item)], []
    try:
        feed_title, entries = parse_feed(fetched.body, fetched.url)
    except FetchError as exc:
        return [], [Skipped(url, str(exc).removeprefix(f"{fetched.url}: "))]
    if not entries:
        return [], [Skipped(url, "the feed has no entries")]
    host = urlparse(fetched.url).hostname or ""
    for entry in entries:
        if not entry.link:
            skipped.append(Skipped(url, f"entry {entry.title or '(untitled)'!r} has no link"))
            continue
        try:
            item = page_article(fetch(entry.link, timeout, max_bytes, max_redirects, allow_private))
        except FetchError as exc:
            if not entry.summary:
                skipped.append(Skipped(entry.link, str(exc).removeprefix(f"{entry.link}: ")))
                continue
            item = {"text": entry.summary, "url": entry.link}  # the feed's own text, when the page fails
        if not item.get("text", "").strip():
            if not entry.summary:
                skipped.append(Skipped(entry.link, "no article text found on the page"))
                continue
            item["text"] = entry.summary
        item["url"] = item.get("url") or entry.link
        item["title"] = item.get("title") or entry.title
        item["published"] = item.get("published") or entry.published
        item["source"] = item.get("source") or feed_title or host
        written.append(_write(folder, item))
    return written, skipped


def _write(folder: Path, item: dict) -> Path:
    name = hashlib.sha1(item["url"].encode("utf-8")).hexdigest()[:16]
    path = folder / f"{name}.json"
    path.write_text(json.dumps(item, ensure_ascii=False), encoding="utf-8")
    return path
