"""The HTTP API (`rag serve`): real uvicorn servers on 127.0.0.1, real clients (httpx, the official `openai`).

The index is real (seeds + the news fixtures, the packaged MiniLM from conftest.py); answers are extractive.
"""

from __future__ import annotations

import http.server
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest

from rag.api import Assistant
from rag.config import Settings
from rag.store import Store
from tests.conftest import DOVRIN, HARKAVY, MARIUPOL_SEED, write_jsonl

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ui.http_api import build_app, refusal  # noqa: E402

QUESTION = "How many residents were forced from their homes in Dovrin?"
LIGHTHOUSE = """---
title: Keeper leaves the Skerrin lighthouse
date: 2022-06-02
source: Coast Courier
url: https://coast.example/skerrin
---
The last keeper of the Skerrin lighthouse, Agnes Moll, retired on Thursday after 31 years on the rock.
"""


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` on uvicorn on a free 127.0.0.1 port, stopped on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def open_assistant(folder: Path, settings: Settings, embedder, articles: list[Path]) -> Assistant:
    assistant = Assistant(Store(folder / "index"), embedder, settings.model_copy(update={"index_dir": folder}))
    assistant.index(articles)
    return assistant


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, settings, embedder):
    base = tmp_path_factory.mktemp("api")
    news = write_jsonl(base / "news.jsonl", DOVRIN + HARKAVY)
    found = open_assistant(base, settings, embedder, [news, MARIUPOL_SEED])
    yield found
    found.close()


@pytest.fixture(scope="module")
def api(assistant, settings):
    with serving(build_app(assistant, settings)) as url:
        yield url


def test_ask_is_the_cli_document_and_its_quotes_are_article_spans(api, assistant):
    response = httpx.post(f"{api}/v1/ask", json={"question": QUESTION}, timeout=30)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc == assistant.ask(QUESTION).to_dict()
    assert not doc["abstained"] and "600" in doc["answer"] and doc["citations"]
    for citation in doc["citations"]:
        article = httpx.get(f"{api}/v1/articles/{citation['article_id']}", timeout=30).json()
        assert article == assistant.article(citation["article_id"]).to_dict()
        assert article["text"][citation["start"]:citation["end"]] == citation["quote"]


def test_search_stats_health_and_openapi(api, assistant):
    hits = httpx.post(f"{api}/v1/search", json={"question": "Harkavy shelling injured", "k": 3}, timeout=30).json()
    assert hits["hits"] and all(h["text"] for h in hits["hits"])
    assert {h["article_id"] for h in hits["hits"]} <= set(assistant.article_ids())
    assert httpx.post(f"{api}/v1/search", json={"question": "Harkavy", "sources": ["Valley Post"]},
                      timeout=30).json()["hits"][0]["source"] == "Valley Post"
    assert httpx.get(f"{api}/v1/stats").json() == assistant.stats()
    assert httpx.get(f"{api}/healthz").json() == {"ok": True}
    assert httpx.get(f"{api}/readyz").json()["articles"] == assistant.stats()["articles"]
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/ask", "/v1/chat", "/v1/search", "/v1/index", "/v1/articles/{article_id}",
            "/v1/chat/completions", "/v1/models"} <= set(spec["paths"])
    assert "AnswerDoc" in spec["components"]["schemas"]
    assert httpx.get(f"{api}/docs").status_code == 200


def test_chat_streams_checked_sentences_then_the_document(api, assistant):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What happened in Dovrin?"},
                {"role": "assistant", "content": "Floods."}, {"role": "user", "content": "and the bridge?"}]
    plain = httpx.post(f"{api}/v1/chat", json={"messages": messages}, timeout=30).json()
    with httpx.stream("POST", f"{api}/v1/chat", json={"messages": messages, "stream": True}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [block for block in r.read().decode().split("\n\n") if block]
    kinds = [e.split("\n")[0] for e in events]
    assert kinds[-1] == "event: answer" and set(kinds[:-1]) == {"event: text"}
    answer = json.loads(events[-1].split("data: ", 1)[1])
    assert answer == plain and not answer["abstained"]
    texts = "".join(json.loads(e.split("data: ", 1)[1])["text"] for e in events[:-1])
    assert " ".join(texts.split()) == " ".join(answer["answer"].split())


def test_the_openai_client_plain_and_streamed(api):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["rag-news"]
    messages = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="rag-news", messages=messages, temperature=0.7, top_p=0.5,
                                           max_tokens=5, user="u1")
    content = plain.choices[0].message.content
    citations = plain.model_extra["citations"]
    assert "[1]" in content and "\n\nSources:\n[1] " in content and citations
    assert all(f"\u201c{' '.join(c['quote'].split())}\u201d" in content for c in citations)
    chunks = list(client.chat.completions.create(model="rag-news", messages=messages, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == content
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["citations"] == citations
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    assert missing.value.code == "model_not_found"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="rag-news", messages=messages, tools=[tool])
    assert tools.value.body["param"] == "tools"


def test_bad_requests_are_4xx_in_openai_shape(api, settings):
    too_long = "why " * (settings.max_question_chars // 4 + 1)
    for body, status in [({"question": too_long}, 400), ({"question": "   "}, 400), ({}, 400),
                         ({"question": "x", "since": "2022-03-05", "until": "2022-03-01"}, 400),
                         ({"question": "x", "k": 0}, 400), ({"question": "x" * 300_000}, 413)]:
        r = httpx.post(f"{api}/v1/ask", json=body, timeout=30)
        assert r.status_code == status, (body if len(str(body)) < 200 else "big", r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "the limit is 2000" in httpx.post(f"{api}/v1/ask", json={"question": too_long}).json()["error"]["message"]
    assert httpx.post(f"{api}/v1/ask", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert httpx.post(f"{api}/v1/chat/completions", json={"model": "rag-news", "messages": []}).status_code == 400
    assert httpx.get(f"{api}/v1/articles/nope").json()["error"]["code"] == "article_not_found"
    assert httpx.get(f"{api}/v1/nothing").status_code == 404


def test_keys_and_rate_limit(assistant, settings, tmp_path):
    openai = pytest.importorskip("openai")
    keys_file = tmp_path / "keys"
    keys_file.write_text("# ops\nfile-key\n", encoding="utf-8")
    keyed = settings.model_copy(update={"api_keys": settings.api_keys.__class__("k1, k2"),
                                        "api_keys_file": keys_file, "api_rate_limit": 3})
    with serving(build_app(assistant, keyed)) as url:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "k3"}):
            r = httpx.get(f"{url}/v1/stats", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(f"{url}/v1/stats", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert httpx.get(f"{url}/v1/stats", headers={"x-api-key": "file-key"}).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
        codes = [httpx.get(f"{url}/v1/stats", headers={"x-api-key": "k1"}) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert int(codes[-1].headers["retry-after"]) >= 1
        assert codes[-1].json()["error"]["code"] == "rate_limit_exceeded"
        assert httpx.get(f"{url}/v1/stats", headers={"x-api-key": "file-key"}).status_code == 200  # per key


def test_no_keys_means_loopback_only(settings):
    assert refusal("127.0.0.1", settings) == "" and refusal("localhost", settings) == ""
    assert "RAG_API_KEYS" in refusal("0.0.0.0", settings)
    assert refusal("0.0.0.0", settings.model_copy(update={"api_keys": settings.api_keys.__class__("k")})) == ""


def test_serve_refuses_a_public_host_without_keys(monkeypatch, tmp_path, capsys):
    from rag.cli import main

    monkeypatch.delenv("RAG_API_KEYS", raising=False)
    monkeypatch.delenv("RAG_API_KEYS_FILE", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--index", str(tmp_path)]) == 2
    assert "without API keys the HTTP API only binds to loopback" in capsys.readouterr().err


def test_one_log_line_per_request_without_the_question(api, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="rag.http"):
        httpx.post(f"{api}/v1/ask", json={"question": "Where did the secret bridge fall?"}, timeout=30)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "rag.http"]
    assert [(x["route"], x["status"]) for x in lines] == [("/v1/ask", 200)]
    assert "secret" not in caplog.text


def test_cors_is_off_unless_configured(api, assistant, settings):
    preflight = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(f"{api}/v1/ask", headers=preflight).headers
    allowed = settings.model_copy(update={"api_cors_origins": ["https://chat.example"]})
    with serving(build_app(assistant, allowed)) as url:
        r = httpx.options(f"{url}/v1/ask", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://chat.example"


def test_metrics_count_requests_and_answers(api):
    httpx.post(f"{api}/v1/ask", json={"question": "What did the Kestrelmouth council decide?"}, timeout=30)
    text = httpx.get(f"{api}/metrics").text
    assert 'rag_http_requests_total{method="POST",route="/v1/ask",status="200"}' in text
    assert 'rag_abstentions_total{endpoint="ask"}' in text and "rag_index_generation " in text
    assert 'rag_http_request_seconds_bucket{le="1.0",route="/v1/ask"}' in text


def test_upload_answered_without_restart_then_removed(tmp_path, settings, embedder):
    own = open_assistant(tmp_path, settings, embedder, [write_jsonl(tmp_path / "news.jsonl", DOVRIN)])
    try:
        with serving(build_app(own, settings)) as url:
            files = [("files", ("skerrin.md", LIGHTHOUSE.encode(), "text/markdown")),
                     ("files", ("movie.mp4", b"\0\0", "video/mp4"))]
            results = httpx.post(f"{url}/v1/index", files=files, timeout=120).json()["results"]
            assert results[0]["item"] == "skerrin.md" and len(results[0]["indexed"]) == 1
            assert results[1]["item"] == "movie.mp4" and "unsupported" in results[1]["error"]
            article_id = results[0]["indexed"][0]
            question = {"question": "Who was the last keeper of the Skerrin lighthouse?"}
            answer = httpx.post(f"{url}/v1/ask", json=question, timeout=30).json()
            assert "Agnes Moll" in answer["answer"] and answer["citations"][0]["article_id"] == article_id
            assert httpx.delete(f"{url}/v1/articles/{article_id}", timeout=60).json() == {"removed": [article_id]}
            assert httpx.get(f"{url}/v1/articles/{article_id}").status_code == 404
            assert httpx.post(f"{url}/v1/ask", json=question, timeout=30).json()["abstained"]
            assert httpx.delete(f"{url}/v1/articles/{article_id}", timeout=60).status_code == 404
    finally:
        own.close()


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        body = (b"<html><head><title>Quarry reopens in Telmark</title></head><body><article><h1>Quarry reopens"
                b"</h1><p>The Telmark quarry reopened on Monday with 45 workers, the owner said.</p></article>"
                b"</body></html>")
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_urls_are_not_fetched_from_private_addresses_unless_allowed(tmp_path, settings, embedder):
    page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    own = open_assistant(tmp_path, settings, embedder, [write_jsonl(tmp_path / "news.jsonl", DOVRIN)])
    link = f"http://127.0.0.1:{page.server_address[1]}/quarry"
    try:
        with serving(build_app(own, settings)) as url:
            result = httpx.post(f"{url}/v1/index", json={"urls": [link, "file:///etc/passwd"]}, timeout=60).json()
            assert "non-public address (127.0.0.1)" in result["results"][0]["skipped"][0]
            assert not result["results"][0]["indexed"] and result["results"][1]["error"] == "not an http(s) url"
        with serving(build_app(own, settings.model_copy(update={"api_allow_private_urls": True}))) as url:
            result = httpx.post(f"{url}/v1/index", json={"urls": [link]}, timeout=60).json()
            assert len(result["results"][0]["indexed"]) == 1
    finally:
        own.close()
        page.shutdown()
        page.server_close()


def test_removed_article_stays_out_of_its_folder_until_its_file_is_named(tmp_path, settings, embedder):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "skerrin.md").write_text(LIGHTHOUSE, encoding="utf-8")
    news = write_jsonl(folder / "news.jsonl", DOVRIN + HARKAVY)
    own = open_assistant(tmp_path, settings, embedder, [folder])
    try:
        gone = own.search("Harkavy shelling injured 150", k=1)[0].article.id
        stories_before = own.stats()["articles"]
        assert own.remove([gone, "no-such-id"]) == [gone]
        assert own.article(gone) is None and own.stats()["articles"] == stories_before - 1
        assert gone not in {h.article.id for h in own.search("Harkavy shelling injured 150", k=8)}
        report = own.index([folder])
        assert gone not in report.indexed and own.article(gone) is None
        assert any("was removed" in str(s) for s in report.skipped)
        assert not own.index([folder]).skipped  # said once: the file's record leaves it out
        assert gone in own.index([news]).indexed  # the file named: added back
        assert own.article(gone) is not None
    finally:
        own.close()


def test_load_200_asks_at_concurrency_16(api):
    questions = [QUESTION, "How many people were injured in Harkavy?", "What happened to the Dovrin bridge?",
                 "Who is the mayor of Dovrin?"]
    with httpx.Client(base_url=api, timeout=60, limits=httpx.Limits(max_connections=16)) as client:
        alone = []
        for question in questions * 2:
            started = time.perf_counter()
            client.post("/v1/ask", json={"question": question})
            alone.append(time.perf_counter() - started)
        print(f"one at a time: median {statistics.median(alone):.3f} s")

        def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            r = client.post("/v1/ask", json={"question": questions[i % len(questions)]})
            return r.status_code, time.perf_counter() - started

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(200)))
    latencies = sorted(t for _, t in results)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(f"200 asks at concurrency 16: p50 {statistics.median(latencies):.3f} s, p95 {p95:.3f} s")
    assert [s for s, _ in results if s != 200] == []
    # issue 15's target. Concurrent questions share the embedder's model calls (rag.embed.Coalescer); before,
    # each waited for the others' encodes one by one. On the 2-core dev machine shared with other jobs (load
    # 7-14) p95 was 1.7-3.1 s before and 0.7-1.8 s after (p50 0.8-1.3 s before, 0.3-0.5 s after), so it
    # fails under such load; a calm machine gave 0.92-1.01 s before the change (not yet measured calm after it)
    assert p95 < 1.0


def test_removing_the_last_article_leaves_an_empty_index_that_answers(tmp_path, settings, embedder, capsys):
    """An index emptied by `rag remove` and by DELETE still rebuilds its (empty) lexical index and answers."""
    from rag.cli import main

    (tmp_path / "skerrin.md").write_text(LIGHTHOUSE, encoding="utf-8")
    own = open_assistant(tmp_path, settings, embedder, [tmp_path / "skerrin.md"])
    try:
        with serving(build_app(own, settings)) as url:
            (article_id,) = own.article_ids()
            assert httpx.delete(f"{url}/v1/articles/{article_id}", timeout=60).json() == {"removed": [article_id]}
            assert httpx.get(f"{url}/readyz").json()["articles"] == 0
            answer = httpx.post(f"{url}/v1/ask", json={"question": "Who kept the Skerrin lighthouse?"}, timeout=30)
            assert answer.status_code == 200 and answer.json()["abstained"]
            assert own.index([tmp_path / "skerrin.md"]).indexed == (article_id,)  # named: back again
    finally:
        own.close()
    index = str(tmp_path / "index")
    assert main(["remove", article_id, "--index", index]) == 0
    assert f"1 removed: {article_id}" in capsys.readouterr().out
    assert main(["stats", "--json", "--index", index]) == 0
    assert json.loads(capsys.readouterr().out)["articles"] == 0


def test_ask_counts_time_words_from_the_given_today(api, assistant):
    body = {"question": "What happened in Dovrin this week?", "today": "2022-03-04"}
    doc = httpx.post(f"{api}/v1/ask", json=body, timeout=30).json()
    assert doc["dates"]["reference"] == "2022-03-04" and doc["dates"]["reference_kind"] == "today"
    assert doc == assistant.ask(body["question"], today=date(2022, 3, 4)).to_dict()
    assert httpx.post(f"{api}/v1/ask", json={**body, "today": "2022-02-30"}).json()["error"]["param"] == "today"


def test_openapi_documents_the_errors_as_they_are_sent(api, settings):
    spec = httpx.get(f"{api}/openapi.json").json()
    ask = spec["paths"]["/v1/ask"]["post"]["responses"]
    assert "422" not in ask and {"200", "400", "401", "413", "429"} <= set(ask)
    assert ask["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorDoc"
    assert "404" in spec["paths"]["/v1/articles/{article_id}"]["get"]["responses"]
    question = spec["components"]["schemas"]["AskRequest"]["properties"]["question"]
    assert question["maxLength"] == settings.max_question_chars
    wrong = httpx.put(f"{api}/v1/articles/x")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET"


@pytest.mark.fuzz
def test_schemathesis_finds_no_server_error(tmp_path, settings, embedder):
    """Schemathesis' generated requests (from /openapi.json, bounded) against a real server with a key: no 5xx."""
    import shutil
    import subprocess
    import sys

    pytest.importorskip("schemathesis")
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    own = open_assistant(tmp_path, settings, embedder, [write_jsonl(tmp_path / "news.jsonl", DOVRIN + HARKAVY)])
    keyed = settings.model_copy(update={"api_keys": settings.api_keys.__class__("fuzz-key")})
    try:
        with serving(build_app(own, keyed)) as url:
            run = subprocess.run(
                [st, "run", f"{url}/openapi.json", "-H", "Authorization: Bearer fuzz-key", "--checks",
                 "not_a_server_error", "--max-examples", "6", "--phases", "coverage,fuzzing", "--workers", "2",
                 "--request-timeout", "60", "--seed", "1", "--no-color"],
                capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        own.close()
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout.rsplit("Test cases:", 1)[-1] and "failed" not in run.stdout.lower()


def test_a_draft_with_nothing_supported_gives_the_extractive_answer_with_a_notice(assistant, settings, embedder):
    """The model's only sentence is unsupported ("capital city" is in no passage): rather than "not found", the
    extractive answer, plain and streamed, saying why."""
    from tests.llm_servers import ScriptedLLM

    with ScriptedLLM("openai", ["Dovrin, Ukraine's capital city, was flooded [1]."]) as server:
        own = Assistant(assistant.store, embedder, settings.model_copy(update={
            "llm": "openai:scripted", "openai_base_url": server.url, "llm_max_retries": 0, "llm_timeout": 5.0}))
        with serving(build_app(own, own.settings)) as url:
            doc = httpx.post(f"{url}/v1/ask", json={"question": QUESTION}, timeout=30).json()
            with httpx.stream("POST", f"{url}/v1/chat", json={"messages": [{"role": "user", "content": QUESTION}],
                                                              "stream": True}, timeout=30) as r:
                events = [block for block in r.read().decode().split("\n\n") if block]
        assert len(server.requests) == 2
    assert not doc["abstained"] and "600" in doc["answer"] and "capital" not in doc["answer"]
    assert "supported" in doc["notice"] and "extractive" in doc["notice"]
    streamed = json.loads(events[-1].split("data: ", 1)[1])
    texts = "".join(json.loads(e.split("data: ", 1)[1])["text"] for e in events[:-1])
    assert not streamed["abstained"] and "extractive" in streamed["notice"] and "capital" not in texts
    assert " ".join(texts.split()) == " ".join(streamed["answer"].split())
