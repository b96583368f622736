"""The Slack bot: answers questions about the indexed news with cited passages.

`rag slack` runs it over Socket Mode (SLACK_BOT_TOKEN, SLACK_APP_TOKEN; the
websocket-client library); `rag slack --http [--host 127.0.0.1] [--port 3000]` serves the
Events API at /slack/events with uvicorn (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET),
plain HTTP behind an HTTPS proxy. RAG_SLACK_API_URL overrides the Web API base URL
(apps.connections.open included). Built with slack-bolt on top of `rag.api.Assistant` only.
Handled events, messages and threads are kept in the index's catalogue (through the facade),
so a restart neither answers a redelivered or replayed event again nor forgets its threads,
and replicas sharing a catalogue answer each event once.

Where it answers: an @mention in a channel (in that message's thread), a DM,
a follow-up in a thread it has answered (the thread is the chat context), and
`/ask QUESTION` (acknowledged at once, the answer posted with the question
restated). Each answer carries 👍/👎 buttons whose votes are kept in the index's catalogue (through the facade,
`Assistant.add_feedback`), so replicas sharing a catalogue keep them in one place.

Only `main()` reads the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slack_bolt import App
from slack_bolt.response import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from rag.config import Settings
from rag.errors import RagError
from rag.types import Answer, Citation, Message, TimelinePoint

log = logging.getLogger("rag.slack")

EVENTS_PATH = "/slack/events"
WORKING_REACTION = "hourglass_flowing_sand"
# a section block's text holds at most 3000 characters; a message's text is cut to MAX_MESSAGE_CHARS, then into
# sections (answer, timeline, sources: each no longer than the message), plus the buttons
MAX_MESSAGE_CHARS = 2900
MAX_BLOCKS = 50  # per message (the buttons take one)
MAX_TIMELINE_POINTS = 20  # timeline rows shown; the rest are counted
MAX_TIMELINE_ROW_CHARS = 600  # a row's text is cut (at a word) beyond this
DEDUPE_SECONDS = 3600  # Slack retries for a few minutes; keep event ids well past that (at least 10 minutes)
THREAD_MEMORY_SECONDS = 7 * 24 * 3600
PRUNE_SECONDS = 60  # expired rows are deleted at most this often
DM_CONTEXT_SECONDS = 3600  # earlier DMs within this window are the chat context of a DM
MAX_BODY_BYTES = 1 << 20
SOCKET_PING_SECONDS = 3.0  # Socket Mode: pings, and the check that reconnects a dead connection (Bolt's default 10)
SIGNATURE_MAX_AGE = 5 * 60  # seconds between a request's timestamp and now, either way (as Slack says)
BACKLOG = 2048  # connections waiting to be accepted: Slack delivers bursts at once
CONCURRENT_ANSWERS = 4  # questions answered at once (one slow LLM answer does not hold up the others)
ABSTAIN_TEXT = "I don't know: I couldn't find an answer to this in the indexed articles."
FEEDBACK_ACTION = re.compile(r"^rag_feedback_(up|down)$")
ANSWERED_EVENT = "rag_answer"  # message metadata event type on the bot's answers
ANSWERING_SUBTYPES = {None, "file_share", "thread_broadcast"}  # message subtypes a person typed


class IndexMissing(RagError, RuntimeError):
    """The index folder has no index yet."""


# --------------------------------------------------------------------------- formatting


def escape(text: str) -> str:
    """Slack mrkdwn control characters escaped, so article text never becomes a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_question(text: str) -> str:
    """A Slack message's text as a question: mentions and markup removed, entities decoded."""
    text = re.sub(r"<[@!][^>]*>", " ", text)  # user mentions, @channel/@here, user groups
    text = re.sub(r"<#[A-Z0-9]+\|([^>]*)>", r"#\1", text)  # channels
    text = re.sub(r"<[^>|]+\|([^>]*)>", r"\1", text)  # labelled links
    text = re.sub(r"<([^>]*)>", r"\1", text)  # bare links
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def _link(url: str, label: str) -> str:
    if url.lower().startswith(("http://", "https://")) and not re.search(r"[\s<>|]", url):
        return f"<{url.replace('&', '&amp;')}|{escape(label)}>"
    return escape(label)


def format_source(c: Citation) -> str:
    """`[n]` title (linked), source and date, who said it, other outlets, then the quoted passage."""
    head = " · ".join([f"*[{c.n}]* {_link(c.url, c.title or c.article_id)}"]
                      + [escape(x) for x in (c.source, c.published) if x]
                      + ([f"according to {escape(c.attribution)}"] if c.attribution else [])
                      + ([f"also reported by {escape(', '.join(c.also_reported_by))}"] if c.also_reported_by else []))
    quote = " ".join(c.quote.split())
    return f"{head}\n> {escape(quote)}" if quote else head


def format_timeline(points: tuple[TimelinePoint, ...], limit: int = MAX_TIMELINE_POINTS) -> str:
    """`*Timeline*` then one line per date, `*2022-03-01*  what happened [n]`; "" when there is none.

    At most `limit` rows (then a line counting the rest); a long row is cut at a word."""
    if not points:
        return ""
    lines = ["*Timeline*"]
    for p in points[:limit]:
        text = " ".join(p.text.split())
        if len(text) > MAX_TIMELINE_ROW_CHARS:
            text = text[:MAX_TIMELINE_ROW_CHARS].rsplit(" ", 1)[0] + "\u2026"
        marks = "".join(f" [{n}]" for n in p.citations)
        lines.append(f"*{escape(p.date)}*  {escape(text)}{marks}")
    if len(points) > limit:
        lines.append(f"_\u2026 and {len(points) - limit} more dates_")
    return "\n".join(lines)


def format_reply(answer: Answer, asked_by: str = "", limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """The reply as mrkdwn messages of at most `limit` characters each: the answer, its notice
    (dates read from the question, or an LLM failure), its timeline, its sources."""
    parts = []
    if asked_by:
        parts.append(f"<@{asked_by}> asked:\n> {escape(answer.question)}")
    if answer.abstained:  # with the reason when it gives one ("none of the articles found mentions X")
        parts.append(f"I don't know: {escape(answer.reason)}" if answer.reason else ABSTAIN_TEXT)
    else:
        parts.append(escape(answer.text))
    if answer.notice:
        parts.append(f"_{escape(answer.notice)}_")
    if answer.timeline and not answer.abstained:
        parts.append(format_timeline(answer.timeline))
    if answer.citations:
        parts.append("*Sources*\n" + "\n".join(format_source(c) for c in answer.citations))
    return split_message("\n\n".join(parts), limit)


_TOKEN = re.compile(r"(?:<[^>]*>|\S)+|\s+")


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut between lines, else between words.

    Links (`<url|label>`) and entities (`&amp;`) are never cut; a quote line
    cut in two stays a quote on both sides.
    """
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        room = limit - len(current) - 1 if current else limit
        if len(line) <= room:
            current = f"{current}\n{line}" if current else line
            continue
        if len(line) <= limit or room < limit // 4:  # start a new piece
            if current.strip():
                pieces.append(current.strip("\n"))
            current, room = "", limit
        first, *rest = _wrap(line, limit, room)
        current = f"{current}\n{first}" if current else first
        for part in rest:
            pieces.append(current.strip("\n"))
            current = part
    if current.strip():
        pieces.append(current.strip("\n"))
    return pieces


def _wrap(line: str, limit: int, first: int) -> list[str]:
    """`line` cut between words: the first part at most `first` characters, the others at most `limit`."""
    prefix = "> " if line.startswith("> ") else ""
    out: list[str] = []
    current = prefix
    for token in _TOKEN.findall(line[len(prefix):]):
        cap = limit if out else first
        if len(current) + len(token) > cap and current.strip() not in ("", ">"):
            out.append(current.rstrip())
            current, cap = prefix, limit
            if token.isspace():
                continue
        while len(current) + len(token) > cap:  # a word longer than the room left
            cut = _safe_cut(token, cap - len(current))
            out.append(current + token[:cut])
            token, current, cap = token[cut:], prefix, limit
        current += token
    if current.strip() not in ("", ">"):
        out.append(current.rstrip())
    return out or [""]


def _safe_cut(token: str, room: int) -> int:
    """Where to cut an over-long word without splitting an `&amp;` entity."""
    amp = token.rfind("&", max(0, room - 5), room)
    return amp if amp > 0 and ";" in token[amp:amp + 6] else max(room, 1)


_HEADING = re.compile(r"\n\n(?=\*(?:Timeline|Sources)\*\n)")


def answer_blocks(text: str, feedback_value: str | None) -> list[dict]:
    """One message's blocks: a section for the answer, one for its timeline and one for its sources
    (as far as they are in this piece of the reply), then the feedback buttons."""
    sections = [part for part in _HEADING.split(text) if part.strip()][:MAX_BLOCKS - 1] or [text]
    # verbatim: Slack would otherwise turn URLs and #names in quoted article text into links
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": part, "verbatim": True}}
                          for part in sections]
    if feedback_value is not None:
        blocks.append({
            "type": "actions", "block_id": "rag_feedback",
            "elements": [
                {"type": "button", "action_id": f"rag_feedback_{vote}", "value": feedback_value,
                 "text": {"type": "plain_text", "text": emoji, "emoji": True}}
                for vote, emoji in (("up", "👍"), ("down", "👎"))
            ],
        })
    return blocks


# --------------------------------------------------------------------------- small thread-safe helpers


class HandledLog:
    """What the bot has handled (event ids, claimed messages, threads it answered), kept in the index's catalogue
    through the facade (`Assistant.remember`), so a restart does not forget it, a signed request replayed within
    Slack's 5 minutes is not answered twice, and replicas sharing a catalogue dedupe together.

    `keeper` returns the facade (opened on first use); while it cannot be had (no index yet), keys are kept
    in memory. Each key lives for its kind's time to live. It keeps no answers and nothing about the index."""

    def __init__(self, keeper: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        self.keeper = keeper
        self.clock = clock
        self._lock = threading.Lock()
        self._memory: dict[tuple[str, str], float] = {}  # (kind, key) -> until, while there is no catalogue
        self._pruned = 0.0

    def _kept(self) -> Any:
        try:
            return self.keeper()
        except Exception as exc:  # no index, or a broken one: the listener says so; dedupe goes on in memory
            log.debug("handled keys kept in memory: %s", exc)
            return None

    def add(self, kind: str, key: Any, ttl: float) -> bool:
        """Remember `key` for `ttl` seconds; False when it is already remembered (and not expired)."""
        now, text = self.clock(), _key(key)
        keeper = self._kept()
        if keeper is not None:
            return keeper.remember(kind, text, now + ttl, now)
        with self._lock:
            if now - self._pruned > PRUNE_SECONDS:
                self._memory = {k: until for k, until in self._memory.items() if until > now}
                self._pruned = now
            if self._memory.get((kind, text), 0.0) > now:
                return False
            self._memory[(kind, text)] = now + ttl
        return True

    def has(self, kind: str, key: Any) -> bool:
        now, text = self.clock(), _key(key)
        keeper = self._kept()
        if keeper is not None:
            return keeper.remembered(kind, text, now)
        with self._lock:
            return self._memory.get((kind, text), 0.0) > now


def _key(key: Any) -> str:
    return json.dumps(key) if isinstance(key, tuple | list) else str(key)


class Remembered:
    """One kind of key in a `HandledLog`, with its time to live: `add(key)` and `key in remembered`."""

    def __init__(self, handled: HandledLog, kind: str, ttl: float) -> None:
        self.handled, self.kind, self.ttl = handled, kind, ttl

    def add(self, key: Any) -> bool:
        return self.handled.add(self.kind, key, self.ttl)

    def __contains__(self, key: Any) -> bool:
        return self.handled.has(self.kind, key)


class TrackingExecutor(ThreadPoolExecutor):
    """The listeners' thread pool; knows how many jobs are queued or running."""

    def __init__(self, max_workers: int = 8) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="slack-listener")
        self._pending = 0
        self._idle = threading.Condition()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._idle:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no listener is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


# --------------------------------------------------------------------------- the bot


class SlackBot:
    """Slack listeners over one `Assistant`, opened lazily from `settings.index_dir`."""

    def __init__(self, settings: Settings, assistant: Any = None) -> None:
        self.settings = settings
        self._assistant = assistant
        self._open_lock = threading.Lock()
        # the facade is thread-safe; this only bounds the work at once, like the web chat's queue
        self._answering = threading.BoundedSemaphore(CONCURRENT_ANSWERS)
        self.handled = HandledLog(self.assistant)
        self.seen_events = Remembered(self.handled, "event", DEDUPE_SECONDS)
        self.claimed_messages = Remembered(self.handled, "message", DEDUPE_SECONDS)  # (channel, ts) answered
        self.threads = Remembered(self.handled, "thread", THREAD_MEMORY_SECONDS)  # (channel, thread_ts) answered in
        self._answers: OrderedDict[str, dict] = OrderedDict()  # feedback key -> what was answered
        self._answers_lock = threading.Lock()
        self.executor = TrackingExecutor()

    # ---- wiring

    def web_client(self, token: str) -> WebClient:
        base_url = self.settings.slack_api_url.rstrip("/") + "/"
        return WebClient(token=token, base_url=base_url, retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1), RateLimitErrorRetryHandler(max_retry_count=3)])

    def build_app(self, token: str, signing_secret: str = "", socket_mode: bool = False) -> App:
        """The Bolt app; calls auth.test (a bad token raises `slack_bolt.error.BoltError`)."""
        bolt_log = logging.getLogger("rag.slack.bolt")
        if not any(isinstance(f, _ClientGiven) for f in bolt_log.filters):
            bolt_log.addFilter(_ClientGiven())
        app = App(
            name="rag", client=self.web_client(token), signing_secret=signing_secret,
            request_verification_enabled=not socket_mode, listener_executor=self.executor, logger=bolt_log,
        )
        app.use(self._dedupe)
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event(re.compile(".*"))(lambda: None)  # acknowledge other events instead of 404 (Slack would retry)
        app.command("/ask")(self.on_ask)
        app.action(FEEDBACK_ACTION)(self.on_feedback)
        app.error(self._on_error)
        return app

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self.executor.wait_idle(timeout)

    def socket_mode(self, app: App, app_token: str, ping_interval: float = SOCKET_PING_SECONDS) -> Any:
        """Bolt's Socket Mode handler on the websocket-client library; `.start()` blocks, `.connect()` does not.

        It opens connections with apps.connections.open through the app's Web API client, so
        RAG_SLACK_API_URL applies, and reconnects after a `disconnect` message or a closed connection (a dead
        one is noticed by the check every `ping_interval` seconds).
        Not slack_sdk's built-in client: a connection dropped without a close frame kept it spinning on
        the dead socket for about a minute (6 x `ping_interval`) before it reconnected."""
        from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler

        return SocketModeHandler(app, app_token, web_client=app.client, ping_interval=ping_interval)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _dedupe(self, body: dict, next: Callable[[], Any]) -> Any:  # Bolt injects arguments by name
        """Slack redelivers events it thinks were lost: answer each event_id once."""
        event_id = body.get("event_id") if isinstance(body, dict) else None
        if event_id and not self.seen_events.add(event_id):
            log.info("ignoring redelivered event %s", event_id)
            return BoltResponse(status=200, body="")
        return next()

    def _on_error(self, error: Exception, body: dict) -> None:
        log.error("unhandled error in a Slack listener: %s", error, exc_info=error)

    # ---- the assistant

    def assistant(self):
        if self._assistant is None:
            with self._open_lock:
                if self._assistant is None:
                    from rag.api import Assistant, has_index, missing_index_message

                    folder = Path(self.settings.index_dir)
                    if not has_index(self.settings):
                        raise IndexMissing(missing_index_message(self.settings))

                    log.info("opening the index in %s", folder)
                    self._assistant = Assistant.open(folder, self.settings)
        return self._assistant

    def answer(self, messages: list[Message]) -> Answer:
        assistant = self.assistant()
        with self._answering:
            return assistant.chat(messages)

    # ---- listeners

    def on_mention(self, event: dict, context: Any, client: WebClient) -> None:
        if _from_bot(event, context) or event.get("edited"):
            return
        channel, ts = event["channel"], event["ts"]
        thread_ts = event.get("thread_ts") or ts
        self._question(client, context, channel, ts, thread_ts, event.get("user", ""), event.get("text", ""),
                       in_thread=thread_ts != ts)

    def on_message(self, event: dict, context: Any, client: WebClient) -> None:
        if event.get("subtype") not in ANSWERING_SUBTYPES or _from_bot(event, context):
            return  # edits, deletions, joins, bots (and this bot itself)
        channel, ts = event.get("channel", ""), event.get("ts", "")
        thread_ts = event.get("thread_ts")
        in_thread = bool(thread_ts) and thread_ts != ts
        if event.get("channel_type") == "im":
            self._question(client, context, channel, ts, thread_ts if in_thread else None,
                           event.get("user", ""), event.get("text", ""), in_thread=in_thread, dm=True)
        elif in_thread and _for_bot(event, context) and ((channel, thread_ts) in self.threads
                                                         or event.get("parent_user_id") == context.get("bot_user_id")):
            self._question(client, context, channel, ts, thread_ts, event.get("user", ""), event.get("text", ""),
                           in_thread=True)

    def on_ask(self, ack: Callable, command: dict, client: WebClient, respond: Callable, context: Any) -> None:
        question = plain_question(command.get("text", ""))
        if not question:
            ack("Usage: `/ask QUESTION`, for example `/ask How many people were injured in Mariupol?`")
            return
        ack(f":{WORKING_REACTION}: Looking up: {escape(question)}")
        started = time.monotonic()
        channel, user = command.get("channel_id", ""), command.get("user_id", "")
        try:
            answer = self.answer([Message("user", question)])
        except Exception as exc:  # told to the user and logged
            _quiet(respond, text=self._problem(exc), response_type="ephemeral", replace_original=True)
            return
        try:
            self.post_answer(client, channel, None, answer, asked_by=user)
        except SlackApiError as exc:
            error = exc.response.get("error", "")
            log.warning("/ask in %s: could not post the answer (%s)", channel, error)
            note = ("I can't post in this conversation (invite me with `/invite`); here is the answer just for you."
                    if error in ("not_in_channel", "channel_not_found", "is_archived")
                    else f"I couldn't post the answer here (Slack said `{escape(error)}`); here it is just for you.")
            _quiet(respond, text=note + "\n\n" + "\n\n".join(format_reply(answer)), response_type="ephemeral",
                   replace_original=True)
            return
        _quiet(respond, delete_original=True)  # the "Looking up" note
        log.info("/ask answered in %.2f s", time.monotonic() - started)

    def on_feedback(self, ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        vote = FEEDBACK_ACTION.match(action.get("action_id", "")).group(1)
        try:
            value = json.loads(action.get("value") or "{}")
        except ValueError:
            value = {}
        with self._answers_lock:
            record = self._answers.get(value.get("k", ""))
        record = record or self._answer_from_button(value, body.get("message") or {})
        user = body.get("user") or {}
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "vote": vote,
            "user": user.get("id", ""), "user_name": user.get("username") or user.get("name", ""),
            "channel": (body.get("channel") or {}).get("id", ""),
            "message_ts": (body.get("container") or {}).get("message_ts", ""), **record,
        }
        try:
            self.assistant().add_feedback(entry)
        except RagError as exc:  # the index is missing, or its catalogue cannot be written (a database outage)
            log.error("could not save feedback: %s", exc)
            _quiet(respond, text="Sorry, I couldn't save your feedback.", response_type="ephemeral",
                   replace_original=False)
            return
        _quiet(respond, text="Thanks for the feedback!", response_type="ephemeral", replace_original=False)

    # ---- answering

    def _question(self, client: WebClient, context: Any, channel: str, ts: str, reply_ts: str | None, user: str,
                  text: str, in_thread: bool, dm: bool = False) -> None:
        """Answer one message once, in `reply_ts`'s thread (or top level of a DM when None)."""
        if not self.claimed_messages.add((channel, ts)):
            return  # the same message as an app_mention and as a message event
        bot_user = context.get("bot_user_id", "")
        question = plain_question(text)
        if not question:
            self._say(client, channel, reply_ts,
                      "Ask me a question about the news, for example: _How many people were injured in Mariupol?_")
            return
        started = time.monotonic()
        with self._working(client, channel, ts):
            if in_thread:
                history = self._thread_context(client, channel, reply_ts or ts, ts, bot_user)
            elif dm:
                history = self._dm_context(client, channel, ts, bot_user)
            else:
                history = []
            try:
                answer = self.answer(history + [Message("user", question)])
            except Exception as exc:  # told to the user and logged
                self._say(client, channel, reply_ts, self._problem(exc))
                return
            try:
                self.post_answer(client, channel, reply_ts, answer)
            except SlackApiError as exc:
                error = exc.response.get("error", "")
                log.warning("could not post an answer in %s: %s", channel, error)
                self._say(client, channel, reply_ts, f"I couldn't post the answer (Slack said `{escape(error)}`).")
                return
        log.info("answered in %s in %.2f s (%s)", channel, time.monotonic() - started,
                 "abstained" if answer.abstained else f"{len(answer.citations)} citations")

    def post_answer(self, client: WebClient, channel: str, thread_ts: str | None, answer: Answer,
                    asked_by: str = "") -> list[str]:
        """Post the reply (split if long, buttons on the last piece); the ts of each message."""
        pieces = format_reply(answer, asked_by)
        key = uuid.uuid4().hex
        self._remember(key, answer)
        posted: list[str] = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            kwargs: dict[str, Any] = {}
            if i == 0:
                kwargs["metadata"] = {"event_type": ANSWERED_EVENT, "event_payload": {"question": answer.question}}
            result = client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=piece,
                blocks=answer_blocks(piece, self._button_value(key, answer) if last else None),
                unfurl_links=False, unfurl_media=False, **kwargs)
            posted.append(result["ts"])
            channel = result.get("channel") or channel
            if asked_by and thread_ts is None:
                thread_ts = result["ts"]  # the rest of a long /ask answer goes in its thread; follow-ups too
            if thread_ts:
                self.threads.add((channel, thread_ts))
        return posted

    def _remember(self, key: str, answer: Answer) -> None:
        record = {"question": answer.question, "answer": answer.text, "abstained": answer.abstained,
                  "citations": [c.to_dict() for c in answer.citations]}
        with self._answers_lock:
            self._answers[key] = record
            while len(self._answers) > 2000:
                self._answers.popitem(last=False)

    @staticmethod
    def _button_value(key: str, answer: Answer) -> str:
        """What a vote needs even after a restart (a button value holds at most 2000 characters)."""
        cited = [[c.article_id, c.start, c.end] for c in answer.citations[:12]]
        value = {"k": key, "q": answer.question[:600], "c": cited}
        return json.dumps(value, separators=(",", ":"))[:2000]

    def _answer_from_button(self, value: dict, message: dict) -> dict:
        citations = []
        for article_id, start, end in value.get("c", []):
            entry = {"article_id": article_id, "start": start, "end": end}
            try:
                article = self.assistant().article(article_id)
            except Exception:  # best effort: ids and spans are enough
                article = None
            if article is not None:
                entry.update(title=article.title, url=article.url, source=article.source,
                             published=article.published, quote=article.text[start:end])
            citations.append(entry)
        return {"question": value.get("q", ""), "answer": message.get("text", ""), "abstained": None,
                "citations": citations}

    def _thread_context(self, client: WebClient, channel: str, thread_ts: str, before: str,
                        bot_user: str) -> list[Message]:
        """The thread's earlier messages as chat turns (the bot's answers are the assistant's)."""
        try:
            result = client.conversations_replies(channel=channel, ts=thread_ts, limit=200,
                                                  include_all_metadata=True)
        except SlackApiError as exc:
            log.warning("could not read thread %s in %s: %s", thread_ts, channel, exc.response.get("error"))
            return []
        return _turns([m for m in result.get("messages", []) if _ts(m.get("ts")) < _ts(before)], bot_user)

    def _dm_context(self, client: WebClient, channel: str, before: str, bot_user: str) -> list[Message]:
        """Recent earlier messages of a DM (within DM_CONTEXT_SECONDS) as chat turns."""
        try:
            result = client.conversations_history(channel=channel, latest=before, inclusive=False, limit=10,
                                                  oldest=f"{_ts(before) - DM_CONTEXT_SECONDS:.6f}",
                                                  include_all_metadata=True)
        except SlackApiError as exc:
            log.warning("could not read DM history in %s: %s", channel, exc.response.get("error"))
            return []
        messages = sorted(result.get("messages", []), key=lambda m: _ts(m.get("ts")))
        return _turns([m for m in messages if _ts(m.get("ts")) < _ts(before)], bot_user)

    @contextmanager
    def _working(self, client: WebClient, channel: str, ts: str) -> Iterator[None]:
        added = _quiet(client.reactions_add, channel=channel, timestamp=ts, name=WORKING_REACTION)
        try:
            yield
        finally:
            if added is not None:
                _quiet(client.reactions_remove, channel=channel, timestamp=ts, name=WORKING_REACTION)

    def _say(self, client: WebClient, channel: str, thread_ts: str | None, text: str) -> None:
        _quiet(client.chat_postMessage, channel=channel, thread_ts=thread_ts, text=text,
               unfurl_links=False, unfurl_media=False)

    @staticmethod
    def _problem(exc: Exception) -> str:
        """What to tell the user about a failure (logged here)."""
        from rag.api import QuestionError

        if isinstance(exc, IndexMissing):
            log.error("%s", exc)
            return "I can't answer yet: my news index is missing. Whoever runs me needs to run `rag index` first."
        if isinstance(exc, QuestionError):
            return f"I can't answer that: {escape(str(exc))}."
        log.exception("answering failed", exc_info=exc)
        return "Sorry, something went wrong while answering. The error has been logged."


class _ClientGiven(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN (which it reads itself) is unused when given a client: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("As you gave `client` as well")


def _from_bot(event: dict, context: Any) -> bool:
    """Messages from bots, including this one."""
    return bool(event.get("bot_id") or event.get("bot_profile")
                or (event.get("user") and event.get("user") == context.get("bot_user_id")))


def _for_bot(event: dict, context: Any) -> bool:
    """A thread reply is for the bot unless it mentions other people and not the bot."""
    mentioned = set(re.findall(r"<@([UW][A-Z0-9]+)", event.get("text", "")))
    return not mentioned or context.get("bot_user_id") in mentioned


def _turns(messages: list[dict], bot_user: str) -> list[Message]:
    turns: list[Message] = []
    for m in messages:
        if m.get("subtype") not in ANSWERING_SUBTYPES and m.get("subtype") != "bot_message":
            continue
        mine = bool(bot_user) and m.get("user") == bot_user
        if mine:
            meta = m.get("metadata") or {}
            if meta.get("event_type") != ANSWERED_EVENT:
                continue  # the rest of a long answer, or a note
            asked = (meta.get("event_payload") or {}).get("question", "")
            if asked and not (turns and turns[-1].role == "user" and turns[-1].content == asked):
                turns.append(Message("user", asked))  # /ask: the question is only in the bot's message
            turns.append(Message("assistant", plain_question(m.get("text", ""))))
        elif not m.get("bot_id"):
            text = plain_question(m.get("text", ""))
            if text:
                turns.append(Message("user", text))
    return turns


def _ts(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _quiet(call: Callable, **kwargs: Any) -> Any:
    """A Slack call whose failure is logged, not raised (reactions, notes)."""
    try:
        return call(**kwargs)
    except SlackApiError as exc:
        log.warning("Slack %s failed: %s", getattr(call, "__name__", "call"), exc.response.get("error"))
    except Exception as exc:  # network trouble must not stop an answer
        log.warning("Slack %s failed: %s", getattr(call, "__name__", "call"), exc)
    return None


# --------------------------------------------------------------------------- HTTP mode


def signed(secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None) -> bool:
    """Slack's v0 signature of `body` checks out, and its timestamp is within 5 minutes.

    Works on the raw bytes, so nothing about the body is trusted (or parsed) before it passes."""
    if not secret or not timestamp or not signature:
        return False
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - stamp) > SIGNATURE_MAX_AGE:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + str(stamp).encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}", signature)


def events_app(app: App, signing_secret: str, path: str = EVENTS_PATH) -> Starlette:
    """The ASGI app: `POST path` for Slack (signature first, then Bolt's starlette adapter), `GET /healthz`.

    Bolt's dispatch is synchronous, so it runs in the thread pool and never holds up the event loop."""
    from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response

    def dispatch(request: Request, body: bytes) -> Response:
        try:
            bolt_request = to_bolt_request(request, body)
        except ValueError as exc:  # signed, yet not what Slack sends
            log.warning("ignoring a signed request whose body cannot be read: %s", exc)
            return PlainTextResponse("bad request", status_code=400)
        return to_starlette_response(app.dispatch(bolt_request))

    async def events(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return PlainTextResponse("too large", status_code=413)
        if not signed(signing_secret, body, request.headers.get("x-slack-request-timestamp"),
                      request.headers.get("x-slack-signature")):
            log.info("refused a request without a valid Slack signature from %s",
                     request.client.host if request.client else "?")
            return PlainTextResponse("invalid signature", status_code=401)
        return await run_in_threadpool(dispatch, request, body)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(path, events, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])])


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is longer than MAX_BODY_BYTES (read no further)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class HttpServer:
    """Serves a Bolt app's Events API endpoint (POST /slack/events) with uvicorn.

    Plain HTTP only: Slack needs HTTPS, which the proxy in front of it provides (hence 127.0.0.1 by default)."""

    def __init__(self, app: App, signing_secret: str, host: str = "127.0.0.1", port: int = 3000,
                 path: str = EVENTS_PATH) -> None:
        import uvicorn

        # bound here, so a busy port is an OSError at once and port 0 has its number before serving
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        config = uvicorn.Config(events_app(app, signing_secret, path), log_config=None, lifespan="off",
                                backlog=BACKLOG, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C, SIGTERM) or `stop()`."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self) -> HttpServer:
        """Serve in a thread; returns once requests are answered."""
        self._thread = threading.Thread(target=self.serve_forever, name="slack-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the Slack HTTP server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


# --------------------------------------------------------------------------- entry point


def main(args: Any, settings: Settings) -> int:
    """`rag slack [--index DIR] [--http] [--port 3000]`: run until interrupted."""
    token = os.environ.get("SLACK_BOT_TOKEN", "")
    app_token = os.environ.get("SLACK_APP_TOKEN", "")
    secret = os.environ.get("SLACK_SIGNING_SECRET", "")
    needed = ["SLACK_BOT_TOKEN"] + (["SLACK_SIGNING_SECRET"] if args.http else ["SLACK_APP_TOKEN"])
    missing = [name for name, value in zip(needed, (token, secret if args.http else app_token)) if not value]
    if missing:
        print(f"rag slack: set {' and '.join(missing)} (see the README's Slack bot section)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # a line per Slack delivery says nothing

    bot = SlackBot(settings)
    try:
        stats = bot.assistant().stats()
        log.info("index %s: %s articles, %s passages", stats["index_dir"], stats["articles"], stats["chunks"])
    except IndexMissing as exc:
        log.error("%s; the bot will start and tell users the index is missing", exc)
    except Exception as exc:  # the bot starts anyway and tells users what is wrong
        log.error("could not open the index in %s: %s", settings.index_dir, exc)
    from slack_bolt.error import BoltError

    try:
        app = bot.build_app(token, secret, socket_mode=not args.http)
    except BoltError as exc:
        print(f"rag slack: Slack rejected the bot token: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rag slack: cannot reach the Slack API at {settings.slack_api_url}: {exc}", file=sys.stderr)
        return 1
    try:
        if args.http:
            host = getattr(args, "host", None) or "127.0.0.1"
            try:
                server = HttpServer(app, secret, host, args.port)
            except (OSError, ValueError) as exc:  # busy port, unknown host
                print(f"rag slack: cannot listen on {host} port {args.port}: {exc}", file=sys.stderr)
                return 1
            log.info("serving the Events API on %s port %d at %s", host, server.port, EVENTS_PATH)
            server.serve_forever()
        else:
            log.info("connecting over Socket Mode")
            bot.socket_mode(app, app_token).start()
    except KeyboardInterrupt:
        pass
    except SlackApiError as exc:
        print(f"rag slack: Slack refused to open a Socket Mode connection: {exc.response.get('error')} "
              "(is SLACK_APP_TOKEN an app-level token with connections:write?)", file=sys.stderr)
        return 1
    finally:
        bot.close()
    return 0
