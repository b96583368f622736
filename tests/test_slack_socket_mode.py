"""The Slack bot over Socket Mode, end to end, against a stand-in of Slack on 127.0.0.1.

`slack_fake.FakeSlack` answers apps.connections.open with the `ws://` URL of
`slack_fake.FakeSocketMode`, which greets each connection with `hello`, sends
event envelopes and records the bot's acks; the answers arrive at the fake Web API.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

pytest.importorskip("slack_bolt")
pytest.importorskip("websockets")  # the stand-in
pytest.importorskip("websocket")  # websocket-client, the bot's Socket Mode client

from rag.config import Settings  # noqa: E402
from tests.slack_fake import BOT_USER, FakeSlack, FakeSocketMode, event_callback, mention_event  # noqa: E402
from ui.slack import SlackBot  # noqa: E402

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
APP_TOKEN = "xapp-1-A0000001-0000-test"
CHANNEL = "C0000SOCK"
MARIUPOL = "How many people were injured in Mariupol?"


def test_socket_mode_acks_answers_and_reconnects(tmp_path, embedder):
    from rag.api import Assistant

    with ExitStack() as stack:
        fake = FakeSlack()
        stack.callback(fake.stop)
        socket_mode = FakeSocketMode(fake)
        stack.callback(socket_mode.stop)
        settings = Settings(index_dir=tmp_path / "index", slack_api_url=fake.url)
        shutil.copytree(SEEDS, tmp_path / "articles")
        assistant = Assistant.open(settings.index_dir, settings, embedder=embedder)
        stack.callback(assistant.close)
        assistant.index([tmp_path / "articles"])
        bot = SlackBot(settings, assistant)
        stack.callback(bot.close)
        handler = bot.socket_mode(bot.build_app("xoxb-0000-test", socket_mode=True), APP_TOKEN)
        started = time.monotonic()
        handler.connect()  # what `start()` does, without blocking
        stack.callback(handler.close)
        socket_mode.wait_connections(1)
        assert fake.called("apps.connections.open")  # through RAG_SLACK_API_URL
        print(f"\nconnected in {time.monotonic() - started:.1f} s")

        def ask(question: str) -> tuple[dict, str, dict]:
            message = fake.add_message(CHANNEL, f"<@{BOT_USER}> {question}")
            payload = event_callback(mention_event(message, CHANNEL))
            return message, socket_mode.deliver(payload), payload

        first, envelope, payload = ask(MARIUPOL)
        socket_mode.wait_ack(envelope)
        reply = fake.wait_for("chat.postMessage", thread_ts=first["ts"])[0].params
        assert "128" in reply["text"] and "[1]" in reply["text"]

        # Slack retires a host: it says `disconnect`, the bot opens a new connection
        made, opened = len(socket_mode.connections), len(fake.called("apps.connections.open"))
        socket_mode.ask_to_reconnect()
        socket_mode.wait_connections(made + 1)
        second, envelope2, _ = ask("What happened in Mariupol?")
        socket_mode.wait_ack(envelope2)
        fake.wait_for("chat.postMessage", thread_ts=second["ts"])

        # the connection dies without a word: the bot notices and reconnects
        made = len(socket_mode.connections)
        dropped = time.monotonic()
        socket_mode.drop()
        socket_mode.wait_connections(made + 1, timeout=40)
        reconnected = time.monotonic() - dropped
        print(f"\nreconnected {reconnected:.1f} s after the connection dropped")
        # within a few checks (3 s apart; ~0.5 s on a calm machine, 20 s seen under load 15), not after the minute
        # of missed pings slack_sdk's built-in client took
        assert reconnected < 28
        assert len(fake.called("apps.connections.open")) >= opened + 2  # a new URL for each new connection
        # Slack redelivers the first envelope (it counts it as lost): acked again, not answered again
        socket_mode.deliver(payload, envelope, retry_attempt=1)
        socket_mode.wait_ack(envelope, count=2)
        third, envelope3, _ = ask(MARIUPOL)  # and the new connection serves new questions
        socket_mode.wait_ack(envelope3)
        fake.wait_for("chat.postMessage", thread_ts=third["ts"])
        assert bot.wait_idle(30)
        assert len(fake.called("chat.postMessage", thread_ts=first["ts"])) == 1
        assert len(fake.called("chat.postMessage", thread_ts=second["ts"])) == 1
