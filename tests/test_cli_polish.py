"""Small things a user noticed in the CLI: source ids, notices, ending a chat, failed fetches, quiet model loads,
the first distillation, `rag web --host ::`."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rag.api import Assistant
from rag.cli import main
from rag.store import Store
from tests.conftest import ROOT

QUESTION = "How many homes did the Brightwater dam flood?"


@pytest.fixture(scope="module")
def index(tmp_path_factory, settings, embedder, collection) -> Path:
    folder = tmp_path_factory.mktemp("polish") / "index"
    assistant = Assistant(Store(folder), embedder, settings)
    assistant.index([collection])
    assistant.close()
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_ask_prints_each_sources_article_id_for_rag_show(index, capsys):
    assert main(["ask", QUESTION, "--index", str(index)]) == 0
    out = capsys.readouterr().out
    ids = re.findall(r"^    id ([0-9a-f]{16}) · ", out, re.M)
    assert ids, out
    assert main(["show", ids[0], "--index", str(index)]) == 0
    assert "Brightwater dam" in capsys.readouterr().out


def test_a_notice_is_printed_as_a_note_not_like_an_error(index, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    monkeypatch.setenv("RAG_LLM_MAX_RETRIES", "0")
    assert main(["ask", QUESTION, "--index", str(index), "--llm", "openai:some-model"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("note: ") and "rag: " not in captured.err, captured.err
    assert "412" in captured.out  # the extractive answer
    assert main(["show", "no-such-id", "--index", str(index)]) == 2
    assert capsys.readouterr().err.startswith("rag: no article")  # an error keeps the program's name


@pytest.mark.parametrize("end", ["quit", "exit", "  Quit  ", None])  # None: Ctrl-D (end of input)
def test_quit_exit_and_ctrl_d_end_rag_chat(index, capsys, monkeypatch, end):
    lines = ["", QUESTION] + ([end, "Who opened the Quillon library?"] if end else [])
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert "quit, exit or Ctrl-D" in out
    assert out.count("\n> ") == 3  # the empty line is asked again; nothing after quit/exit is answered
    assert out.count("Sources:") == 1 and "Quillon" not in out


def test_index_of_a_url_that_cannot_be_fetched_exits_non_zero(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/feed.xml"
    assert main(["index", url, "--index", str(tmp_path / "index")]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "nothing could be fetched" in err


def test_loading_the_model_prints_no_progress_bar_and_leaves_transformers_settings_alone():
    code = ("from transformers.utils import logging as hf\n"
            "from rag.embed import make_embedder\n"
            "e = make_embedder('sentence-transformers:all-MiniLM-L6-v2')\n"
            "e.embed(['hello'])\n"
            "print(hf.is_progress_bar_enabled(), hf.get_verbosity())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "%|" not in done.stderr, done.stderr
    assert done.stdout.split() == ["True", "30"]  # as they were: bars on, warnings shown


def test_rag_web_listens_on_an_ipv6_host_given_without_brackets(index, tmp_path):
    port = _closed_port()
    web = subprocess.Popen([sys.executable, "-m", "rag.cli", "web", "--index", str(index), "--host", "::",
                            "--port", str(port)], cwd=tmp_path, env=_env(GRADIO_ANALYTICS_ENABLED="False"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline and web.poll() is None and status is None:
            try:
                status = urllib.request.urlopen(f"http://[::1]:{port}/", timeout=5).status
            except OSError:
                time.sleep(0.5)
        assert status == 200, web.stderr.read() if web.poll() is not None else "no answer"
    finally:
        web.terminate()
        web.communicate(timeout=30)


@pytest.mark.slow
def test_the_first_distillation_says_what_it_does_and_how_long_it_took(tmp_path, capfd):
    from rag.embed import make_embedder

    embedder = make_embedder("model2vec:all-MiniLM-L6-v2", cache_dir=tmp_path)
    err = capfd.readouterr().err
    assert "distilling all-MiniLM-L6-v2 into a static model2vec model" in err
    assert re.search(r"distilled all-MiniLM-L6-v2 in \d+ s", err)
    assert embedder.embed(["flood"]).shape == (1, embedder.dim)
    make_embedder("model2vec:all-MiniLM-L6-v2", cache_dir=tmp_path)  # cached: nothing to say
    assert "distill" not in capfd.readouterr().err
