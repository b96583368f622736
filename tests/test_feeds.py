"""Feeds and pages (issue 8, part 5): `rag index URL` from a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag import Assistant
from rag.cli import main
from rag.feeds import FetchError, fetch, fetch_articles
from rag.store import Store

PAGE = """<!doctype html><html><head><title>{title}</title>
<meta property="article:published_time" content="{date}T08:00:00Z">
<meta property="og:site_name" content="Lantern Daily"></head>
<body><nav>Home | World</nav><article><h1>{title}</h1><p>{body}</p></article></body></html>"""
PAGES = {
    "/news/bell.html": PAGE.format(title="Quarrow bell rings again", date="2022-04-02",
                                   body="The Quarrow bell was rung 77 times on Saturday to mark its repair."),
    "/news/orchard.html": PAGE.format(title="Orchard fire in Tessel", date="2022-04-03",
                                      body="A fire destroyed 140 apple trees in the Tessel orchard on Sunday."),
}
RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Lantern Daily</title><link>http://{host}/</link>
<item><title>Quarrow bell rings again</title><link>http://{host}/news/bell.html</link>
<pubDate>Sat, 02 Apr 2022 08:00:00 GMT</pubDate></item>
<item><title>Orchard fire in Tessel</title><link>/news/orchard.html</link></item>
<item><title>Gone</title><link>http://{host}/news/gone.html</link></item>
<item><title>Summary only</title><link>http://{host}/news/gone2.html</link>
<description>The Velk lighthouse was painted red and white by volunteers in April.</description></item>
</channel></rss>"""
ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Lantern Atom</title>
<entry><title>Orchard fire in Tessel</title><link rel="alternate" href="http://{host}/news/orchard.html"/>
<updated>2022-04-03T08:00:00Z</updated></entry></feed>"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        host = self.headers.get("Host")
        if self.path == "/feed.xml":
            self._send(200, RSS.format(host=host), "application/rss+xml")
        elif self.path == "/atom.xml":
            self._send(200, ATOM.format(host=host), "application/atom+xml")
        elif self.path in PAGES:
            self._send(200, PAGES[self.path], "text/html; charset=utf-8")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/news/bell.html")
            self.end_headers()
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", f"/loop{len(self.path)}")
            self.end_headers()
        elif self.path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://example.com/x")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(2)
            self._send(200, "late", "text/html")
        elif self.path == "/big":
            self._send(200, "x" * 300_000, "text/html")
        else:
            self._send(404, "not here", "text/plain")

    def _send(self, status: int, text: str, kind: str) -> None:
        data = text.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout or size limit under test)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_a_feed_is_indexed_and_answerable(server, tmp_path, settings, embedder):
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    try:
        report = assistant.index([f"{server}/feed.xml"])
        assert len(report.indexed) == 3  # two pages and one entry with only its summary
        assert [s.path for s in report.skipped] == [f"{server}/news/gone.html"]
        assert "HTTP 404" in report.skipped[0].reason
        answer = assistant.ask("How many times was the Quarrow bell rung?")
        assert not answer.abstained and "77 times" in answer.text
        cited = answer.citations[0]
        assert (cited.url, cited.source, cited.published) == (f"{server}/news/bell.html", "Lantern Daily",
                                                              "2022-04-02")
        assert assistant.article(cited.article_id).text[cited.start:cited.end] == cited.quote
        assert "140 apple trees" in assistant.ask("How many apple trees did the fire in Tessel destroy?").text
        assert "red and white" in assistant.ask("What colours was the Velk lighthouse painted?").text
        again = assistant.index([f"{server}/feed.xml"])  # the same articles again: nothing new
        assert not again.indexed and len(again.unchanged) == 3
    finally:
        assistant.close()


def test_an_atom_feed_and_a_single_page(server, tmp_path):
    files, skipped = fetch_articles(f"{server}/atom.xml", tmp_path)
    assert not skipped and len(files) == 1
    item = json.loads(files[0].read_text())
    assert item["title"] == "Orchard fire in Tessel" and "140 apple trees" in item["text"]
    files, skipped = fetch_articles(f"{server}/moved", tmp_path / "page")  # a redirect to a page
    item = json.loads(files[0].read_text())
    assert item["url"] == f"{server}/news/bell.html" and "Home | World" not in item["text"]


def test_fetch_limits(server):
    with pytest.raises(FetchError, match="redirects"):
        fetch(f"{server}/loop", max_redirects=3)
    with pytest.raises(FetchError, match="only http and https"):
        fetch(f"{server}/to-ftp")
    with pytest.raises(FetchError, match="only http and https"):
        fetch("file:///etc/passwd")
    with pytest.raises(FetchError, match="too large"):
        fetch(f"{server}/big", max_bytes=100_000)
    with pytest.raises(FetchError, match="timed out"):
        fetch(f"{server}/slow", timeout=0.5)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{server}/nothing")


def test_rag_index_url_on_the_command_line(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    assert main(["index", f"{server}/news/orchard.html"]) == 0
    assert "1 indexed" in capsys.readouterr().out
    assert main(["index", "ftp://example.com/feed.xml"]) == 1  # nothing could be fetched (issue 12, item 13)
    captured = capsys.readouterr()
    assert "only http and https" in captured.err and "0 indexed" in captured.out


def test_rag_watch_fetches_again_every_interval(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    assert main(["watch", f"{server}/atom.xml", "--every", "0.1s", "--times", "2"]) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "1 indexed" in first and "0 indexed" in second and "1 unchanged" in second
    assert main(["watch", "ftp://example.com/feed", "--times", "1"]) == 2
    assert main(["watch", f"{server}/atom.xml", "--every", "soon"]) == 2


def test_rag_ask_prints_the_timeline(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAG_INDEX_DIR", str(tmp_path / "index"))
    assert main(["index", f"{server}/feed.xml"]) == 0
    capsys.readouterr()
    assert main(["ask", "what happened in Tessel?"]) == 0
    out = capsys.readouterr().out
    timeline = out[out.index("Timeline:\n  2022-04-03  "):out.index("Sources:")]
    assert "A fire destroyed 140 apple trees" in timeline
