"""The Slack bot end to end, on 127.0.0.1 with no Slack.

A stand-in Web API (`slack_fake.FakeSlack`) records the bot's calls; the bot
runs in HTTP mode on a real port over a real `Assistant` (the seeds plus a few
fixture articles); the tests POST what Slack would send, signed with the v0
scheme, to /slack/events.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("slack_bolt")

from rag.config import Settings  # noqa: E402
from rag.types import Answer, Citation, QuestionDates, TimelinePoint  # noqa: E402
from tests.conftest import DOVRIN, write_jsonl  # noqa: E402
from tests.slack_fake import (  # noqa: E402
    BOT_ID,
    BOT_USER,
    FakeSlack,
    block_action,
    event_callback,
    mention_event,
    message_event,
    post,
    sign,
    slash_command,
)
from ui.slack import (  # noqa: E402
    CONCURRENT_ANSWERS,
    HttpServer,
    SlackBot,
    answer_blocks,
    format_reply,
    split_message,
)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-0000-test"
CHANNEL = "C0000MAIN"
USER = "U0000USR"
SEED_TITLE = "Russia is said to have launched another attack on Kharkiv"
MARIUPOL = "How many people were injured in Mariupol?"

PORTVALE = """---
title: Harbour & <Bridge> reopens in Portvale
source: Portvale Gazette
published: 2023-05-04
url: https://news.example.com/portvale/bridge?id=7&ref=rss
---
The Portvale harbour swing bridge reopened to traffic on Tuesday after eight months of repairs.

The council notice announcing the Portvale bridge reopening began with <!channel> and told residents to read \
<https://evil.example/phish|the council site> for details & updates.

Ferry services across the harbour will stop running at the end of the month.
"""


WORDS = (
    "anchor barrel candle ladder mirror pillow rocket saddle tunnel wallet basket bottle bucket carpet castle cherry "
    "cookie copper cotton dragon engine fabric falcon feather forest garden ginger hammer helmet jacket kettle lantern "
    "lemon magnet meadow needle orange oyster paddle parrot pepper pencil pigeon planet pocket pretzel puzzle rabbit "
    "ribbon salmon shovel silver spider spoon stable summer tablet teapot ticket timber tomato tractor trumpet turtle "
    "velvet violin walnut window winter wizard yogurt zipper apron banjo biscuit blanket bridle cactus canvas cinnamon "
    "compass crayon cupboard diamond dolphin easel elbow envelope flannel funnel gadget goblet gravel harness hedge "
    "icicle igloo jigsaw kayak kiosk lasso lobster mango marble mitten mortar muffin napkin nickel noodle nutmeg "
    "oatmeal orchard paprika pebble piano pistachio quilt radish raisin saucer scarf sherbet skillet sparrow squash "
    "stencil sunflower thimble thistle toaster trolley tulip umbrella vinegar waffle walrus whistle wicker"
).split()


def veldmark_articles() -> dict[str, str]:
    """Four articles of long sentences on one topic: their answer is longer than one Slack message."""
    rng = random.Random(5)
    sentences = []
    for i in range(8):
        words = rng.sample(WORDS, 56)
        pairs = ", ".join(" and ".join(words[j:j + 2]) for j in range(0, 56, 2))
        sentences.append(f"The Veldmark glacier survey catalogued {pairs} at camp {i + 1}.")
    return {
        f"veldmark{k}.md": f"---\ntitle: Veldmark glacier survey, part {k + 1}\nsource: Alpine Courier\n"
                           f"published: 2024-06-0{k + 1}\n---\n" + " ".join(sentences[2 * k:2 * k + 2]) + "\n"
        for k in range(4)
    }


@dataclass
class Harness:
    fake: FakeSlack
    bot: SlackBot
    server: HttpServer
    settings: Settings

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/slack/events"

    def send(self, payload: dict, retry: int | None = None, headers: dict | None = None) -> tuple[int, str, float]:
        body = json.dumps(payload)
        signed = sign(SECRET, body) if headers is None else headers
        if retry:
            signed = {**signed, "X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return post(self.events_url, body, signed, "application/json")

    def command(self, text: str, channel: str = CHANNEL, headers: dict | None = None) -> tuple[int, str, float]:
        body = slash_command(text, channel, f"{self.fake.root}/response/cmd-{time.monotonic_ns()}")
        return post(self.events_url, body, sign(SECRET, body) if headers is None else headers,
                    "application/x-www-form-urlencoded")

    def click(self, message: dict, vote: str, channel: str = CHANNEL) -> tuple[int, str, float]:
        body = block_action(message, channel, f"rag_feedback_{vote}", f"{self.fake.root}/response/act")
        return post(self.events_url, body, sign(SECRET, body), "application/x-www-form-urlencoded")

    def mention(self, question: str, channel: str = CHANNEL, **extra) -> dict:
        """A person @mentions the bot; returns their message once the bot is done with it."""
        message = self.fake.add_message(channel, f"<@{BOT_USER}> {question}", **extra)
        status, _, _ = self.send(event_callback(mention_event(message, channel)))
        assert status == 200
        return message

    def idle(self) -> None:
        assert self.bot.wait_idle(30), "the bot did not finish its work"

    def replies(self, thread_ts: str, channel: str = CHANNEL) -> list[dict]:
        return [c.params for c in self.fake.called("chat.postMessage", channel=channel, thread_ts=thread_ts)
                if "refused" not in c.params]


@pytest.fixture(scope="module")
def slack(tmp_path_factory, embedder):
    from rag.api import Assistant

    folder = tmp_path_factory.mktemp("slack")
    articles = folder / "articles"
    shutil.copytree(SEEDS, articles)
    (articles / "portvale.md").write_text(PORTVALE, encoding="utf-8")
    for name, text in veldmark_articles().items():
        (articles / name).write_text(text, encoding="utf-8")
    write_jsonl(articles / "dovrin.jsonl", DOVRIN)
    with ExitStack() as stack:
        fake = FakeSlack()
        stack.callback(fake.stop)
        settings = Settings(index_dir=folder / "index", slack_api_url=fake.url)
        assistant = Assistant.open(settings.index_dir, settings, embedder=embedder)
        stack.callback(assistant.close)
        assistant.index([articles])
        bot = SlackBot(settings, assistant)
        stack.callback(bot.close)
        server = HttpServer(bot.build_app(TOKEN, SECRET), SECRET, "127.0.0.1", 0).start()
        stack.callback(server.stop)
        yield Harness(fake, bot, server, settings)


@pytest.fixture
def s(slack):
    slack.idle()
    slack.fake.reset()
    yield slack
    slack.idle()


def test_mention_gets_one_threaded_reply_citing_the_seed(s):
    message = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {MARIUPOL}")
    started = time.monotonic()
    status, _, ack = s.send(event_callback(mention_event(message, CHANNEL)))
    # the same message also arrives as a message.channels event (another event id)
    status2, _, _ = s.send(event_callback(message_event(message, CHANNEL)))
    assert (status, status2) == (200, 200)
    assert ack < 1.0
    posted = s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()

    replies = s.replies(message["ts"])
    assert len(replies) == 1 and len(s.fake.called("chat.postMessage")) == 1
    reply = replies[0]
    text = reply["text"]
    assert "128" in text and "Mariupol" in text and "[1]" in text
    assert "*Sources*" in text and SEED_TITLE in text
    assert "\n> According to Mariupol mayor Vadym Boychenko, at least 128 persons were injured" in text
    assert reply["unfurl_links"] is False and reply["unfurl_media"] is False
    sections = [b["text"] for b in reply["blocks"] if b["type"] == "section"]
    assert all(t["type"] == "mrkdwn" for t in sections) and len(sections) == 2  # the answer, its sources
    assert all(t["verbatim"] is True for t in sections)  # Slack links nothing by itself in quoted article text
    assert "\n\n".join(t["text"] for t in sections) == text and sections[1]["text"].startswith("*Sources*\n")
    buttons = [e["action_id"] for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["rag_feedback_up", "rag_feedback_down"]

    # working indicator: added to the question before the answer, removed after
    added = s.fake.called("reactions.add", channel=CHANNEL, timestamp=message["ts"])
    removed = s.fake.called("reactions.remove", channel=CHANNEL, timestamp=message["ts"])
    assert len(added) == len(removed) == 1
    assert added[0].at <= posted[0].at <= removed[0].at
    print(f"\nmention: ack {ack * 1000:.0f} ms, answer posted after {posted[0].at - started:.2f} s")


def test_retried_event_is_answered_once(s, caplog):
    caplog.set_level(logging.INFO, logger="rag.slack")
    message = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {MARIUPOL}")
    payload = event_callback(mention_event(message, CHANNEL))
    assert s.send(payload)[0] == 200
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    status, _, ack = s.send(payload, retry=1)
    assert status == 200 and ack < 1.0
    s.idle()
    assert len(s.replies(message["ts"])) == 1
    assert f"ignoring redelivered event {payload['event_id']}" in caplog.text

    # a retry whose original never arrived is answered, once
    lost = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> What happened in Kherson?")
    payload = event_callback(mention_event(lost, CHANNEL))
    assert s.send(payload, retry=1)[0] == 200
    s.fake.wait_for("chat.postMessage", thread_ts=lost["ts"])
    assert s.send(payload, retry=2)[0] == 200
    s.idle()
    assert len(s.replies(lost["ts"])) == 1


def test_forged_unsigned_and_stale_requests_get_401_and_no_side_effect(s):
    message = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {MARIUPOL}")
    payload = event_callback(mention_event(message, CHANNEL))
    body = json.dumps(payload)
    now = int(time.time())
    forged = sign("not-the-secret", body)
    stale = sign(SECRET, body, now - 6 * 60)
    future = sign(SECRET, body, now + 6 * 60)
    other_body = sign(SECRET, body.replace("Mariupol", "Kherson"))
    no_signature = {"X-Slack-Request-Timestamp": str(now)}
    for headers in (forged, stale, future, other_body, no_signature, {}):
        assert s.send(payload, headers=headers)[0] == 401, headers
    command = slash_command(MARIUPOL, CHANNEL, f"{s.fake.root}/response/forged")
    assert post(s.events_url, command, sign("nope", command), "application/x-www-form-urlencoded")[0] == 401
    s.idle()
    assert s.fake.calls == []

    # the rejected deliveries did not use up the event id
    assert s.send(payload)[0] == 200
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()
    assert len(s.replies(message["ts"])) == 1


def test_slash_command_is_acknowledged_at_once_and_the_answer_restates_the_question(s):
    with ExitStack() as busy:  # however long answering takes (every answering slot taken)...
        for _ in range(CONCURRENT_ANSWERS):
            busy.enter_context(s.bot._answering)
        started = time.monotonic()
        status, body, ack = s.command(MARIUPOL)
        assert status == 200 and ack < 1.0  # ...the command is acknowledged at once
        assert "Looking up: How many people were injured in Mariupol?" in body
        time.sleep(0.2)
        assert not s.fake.called("chat.postMessage")
        acked_at = time.monotonic()
    posted = s.fake.wait_for("chat.postMessage", channel=CHANNEL)
    s.idle()
    assert posted[0].at >= acked_at
    reply = posted[0].params
    assert "thread_ts" not in reply or reply["thread_ts"] is None
    assert reply["text"].startswith(f"<@{USER}> asked:\n> {MARIUPOL}")
    assert "128" in reply["text"] and SEED_TITLE in reply["text"]
    assert reply["metadata"]["event_payload"]["question"] == MARIUPOL
    assert s.fake.wait_for("response_url")[0].params.get("delete_original") is True  # the "Looking up" note

    # without the lock: ack, then the answer
    s.fake.reset()
    started = time.monotonic()
    status, _, ack = s.command("What happened in Kherson?")
    posted = s.fake.wait_for("chat.postMessage", channel=CHANNEL)
    assert status == 200 and ack < 1.0
    print(f"\n/ask: ack {ack * 1000:.0f} ms, answer posted after {posted[0].at - started:.2f} s")


def test_follow_up_in_an_answered_thread_uses_the_thread(s):
    root = s.mention("What happened in Kherson?")
    s.fake.wait_for("chat.postMessage", thread_ts=root["ts"])
    s.idle()
    # no mention: the bot answered this thread, so the reply is for it
    follow = s.fake.add_message(CHANNEL, "Who is the mayor?", thread_ts=root["ts"], parent_user_id=USER)
    assert s.send(event_callback(message_event(follow, CHANNEL)))[0] == 200
    s.fake.wait_for("chat.postMessage", count=2, thread_ts=root["ts"])
    s.idle()
    assert s.fake.called("conversations.replies", channel=CHANNEL, ts=root["ts"])
    answer = s.replies(root["ts"])[1]["text"]
    # alone, "Who is the mayor?" finds Mariupol's mayor; the thread is about Kherson
    assert "Kolyhav" in answer and "Boychenko" not in answer

    # a reply in the thread addressed to someone else is not for the bot
    aside = s.fake.add_message(CHANNEL, "<@U0000BOB> can you check?", thread_ts=root["ts"], parent_user_id=USER)
    assert s.send(event_callback(message_event(aside, CHANNEL)))[0] == 200
    # a reply in a thread the bot never answered, without a mention, is not for the bot
    other = s.fake.add_message(CHANNEL, "lunch?")
    side = s.fake.add_message(CHANNEL, "Who is the mayor?", thread_ts=other["ts"], parent_user_id=USER)
    assert s.send(event_callback(message_event(side, CHANNEL)))[0] == 200
    s.idle()
    assert s.replies(other["ts"]) == [] and len(s.replies(root["ts"])) == 2


def test_direct_messages_are_answered_with_earlier_messages_as_context(s):
    dm = "D0000DM01"
    first = s.fake.add_message(dm, "What happened in Kherson?")
    assert s.send(event_callback(message_event(first, dm, "im")))[0] == 200
    s.fake.wait_for("chat.postMessage", channel=dm)
    s.idle()
    second = s.fake.add_message(dm, "Who is the mayor?")
    assert s.send(event_callback(message_event(second, dm, "im")))[0] == 200
    posted = s.fake.wait_for("chat.postMessage", count=2, channel=dm)
    s.idle()
    assert [p.params.get("thread_ts") for p in posted] == [None, None]  # a DM is a conversation of its own
    assert "Kherson" in posted[0].params["text"]
    assert "Kolyhav" in posted[1].params["text"]
    assert s.fake.called("conversations.history", channel=dm)


def test_article_text_is_escaped_so_nothing_becomes_a_mention_or_link(s):
    message = s.mention("What did the Portvale council notice about the bridge reopening say?")
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()
    text = s.replies(message["ts"])[0]["text"]
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text
    assert "&lt;https://evil.example/phish|the council site&gt;" in text and "details &amp; updates" in text
    link = ("<https://news.example.com/portvale/bridge?id=7&amp;ref=rss"
            "|Harbour &amp; &lt;Bridge&gt; reopens in Portvale>")
    assert link in text
    assert set(re.findall(r"<[^>]*>", text)) == {link}  # the only markup is the source link


def test_long_answer_is_split_within_slack_limits(s):
    message = s.mention("What did the Veldmark glacier survey catalogue?")
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()
    replies = s.replies(message["ts"])
    assert len(replies) >= 2
    for reply in replies:
        assert 0 < len(reply["text"]) <= 3000
        assert all(len(b["text"]["text"]) <= 3000 for b in reply["blocks"] if b["type"] == "section")
        assert reply["unfurl_links"] is False
    assert [any(b["type"] == "actions" for b in r["blocks"]) for r in replies] == [False] * (len(replies) - 1) + [True]
    whole = "\n".join(r["text"] for r in replies)
    assert "*[1]*" in whole and "*[2]*" in whole
    # every sentence of the answer, and its quote, in one of the messages
    sentence = "The Veldmark glacier survey catalogued"
    sentences = s.bot.assistant().ask("What did the Veldmark glacier survey catalogue?").text.count(sentence)
    assert sentences >= 4 and whole.count(sentence) == 2 * sentences


def test_timeline_question_gets_a_timeline_section_and_the_dates_note(s):
    message = s.mention("what happened in Dovrin in March 2022?")
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()
    replies = s.replies(message["ts"])
    assert len(replies) == 1
    sections = [b["text"]["text"] for b in replies[0]["blocks"] if b["type"] == "section"]
    assert len(sections) == 3 and "\n\n".join(sections) == replies[0]["text"]
    answer, timeline, sources = sections
    assert "_Articles dated 2022-03-01 to 2022-03-31 (\u201cin March 2022\u201d)._" in answer
    rows = timeline.split("\n")
    assert rows[0] == "*Timeline*" and len(rows) == 4
    assert [row.split("*")[1] for row in rows[1:]] == ["2022-02-28", "2022-03-02", "2022-03-05"]
    assert rows[1].startswith("*2022-02-28*  Floodwater reached the town of Dovrin on Monday")
    assert all(re.search(r" \[\d\]$", row) for row in rows[1:])
    for row in rows[1:]:  # each [n] of the timeline is a source listed below, whose quote has the row's text
        n = int(row[-2])
        cited = sources.split(f"*[{n}]*", 1)[1].split("\n*[", 1)[0]
        assert row.split("*  ", 1)[1][:40] in cited
    assert "according to Lena Ostrova, mayor of Dovrin" in sources


def test_rate_limited_call_is_retried_after_the_wait(s):
    s.fake.script("chat.postMessage", {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
    message = s.mention(MARIUPOL)
    calls = s.fake.wait_for("chat.postMessage", count=2, thread_ts=message["ts"])
    s.idle()
    assert [c.params.get("refused") for c in calls] == ["ratelimited", None]
    assert calls[1].at - calls[0].at >= 1.0
    assert len(s.replies(message["ts"])) == 1


def test_slack_errors_and_a_missing_index_are_told_and_the_bot_stays_up(s, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rag.slack")
    outside = "C0OUTSIDE"
    s.fake.script("chat.postMessage", {"ok": False, "error": "not_in_channel"}, channel=outside, times=5)
    status, _, _ = s.command(MARIUPOL, channel=outside)
    assert status == 200
    told = s.fake.wait_for("response_url")
    s.idle()
    note = told[-1].params
    assert "invite" in note["text"] and "128" in note["text"] and note["response_type"] == "ephemeral"
    assert "not_in_channel" in caplog.text

    message = s.mention(MARIUPOL)  # still up
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])

    # no index yet: the user is told in the thread
    settings = s.settings.model_copy(update={"index_dir": tmp_path / "empty"})
    bot = SlackBot(settings)
    server = HttpServer(bot.build_app(TOKEN, SECRET), SECRET, "127.0.0.1", 0).start()
    try:
        asked = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {MARIUPOL}")
        body = json.dumps(event_callback(mention_event(asked, CHANNEL)))
        status, _, _ = post(f"http://127.0.0.1:{server.port}/slack/events", body, sign(SECRET, body),
                            "application/json")
        assert status == 200
        reply = s.fake.wait_for("chat.postMessage", thread_ts=asked["ts"])[0].params
        assert "index is missing" in reply["text"]
        assert bot.wait_idle(10)
    finally:
        server.stop()
        bot.close()
    assert "no index in" in caplog.text


def test_own_messages_other_bots_edits_and_deletions_are_ignored(s):
    question = f"<@{BOT_USER}> {MARIUPOL}"
    root = s.mention("What happened in Kherson?")  # a thread the bot answers
    s.fake.wait_for("chat.postMessage", thread_ts=root["ts"])
    s.idle()
    s.fake.reset()
    ts = s.fake.next_ts
    other_bot = {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "text": question, "ts": ts()}
    events = [
        message_event(other_bot, CHANNEL),
        mention_event({"user": "U0OTHERBOT", "bot_id": "B0OTHER", "text": question, "ts": ts()}, CHANNEL),
        message_event({"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": "Who is the mayor?",
                       "ts": ts(), "thread_ts": root["ts"]}, CHANNEL),
        message_event({"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": MARIUPOL, "ts": ts()},
                      "D0000DM01", "im"),
        message_event({"type": "message", "subtype": "message_changed", "hidden": True, "ts": ts(),
                       "message": {"type": "message", "user": USER, "text": question, "ts": root["ts"],
                                   "edited": {"user": USER, "ts": ts()}},
                       "previous_message": {"type": "message", "user": USER, "text": "x", "ts": root["ts"]}},
                      CHANNEL),
        message_event({"type": "message", "subtype": "message_changed", "hidden": True, "ts": ts(),
                       "message": {"type": "message", "user": USER, "text": "Who is the mayor?", "ts": ts()}},
                      "D0000DM01", "im"),
        message_event({"type": "message", "subtype": "message_deleted", "hidden": True, "ts": ts(),
                       "deleted_ts": root["ts"], "previous_message": {"type": "message", "user": USER,
                                                                      "text": question, "ts": root["ts"]}}, CHANNEL),
        message_event({"type": "message", "user": USER, "text": MARIUPOL, "ts": ts()}, CHANNEL),  # no mention
        {"type": "reaction_added", "user": USER, "reaction": "eyes", "item": {"type": "message", "channel": CHANNEL,
                                                                                "ts": root["ts"]}, "event_ts": ts()},
    ]
    for event in events:
        assert s.send(event_callback(event))[0] == 200, event
    s.idle()
    assert s.fake.called("chat.postMessage") == [] and s.fake.called("reactions.add") == []


def test_feedback_buttons_are_kept_in_the_catalogue(s):
    message = s.mention(MARIUPOL)
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()
    answer = next(m for m in s.fake.messages[CHANNEL] if m.get("thread_ts") == message["ts"])
    before = s.bot.assistant().feedback()

    status, _, ack = s.click(answer, "up")
    assert status == 200 and ack < 1.0
    s.bot._answers.clear()  # as after a restart: the button itself carries enough
    assert s.click(answer, "down")[0] == 200
    thanks = s.fake.wait_for("response_url", count=2)
    s.idle()
    assert all(t.params["text"] == "Thanks for the feedback!" for t in thanks)

    lines = s.bot.assistant().feedback()[len(before):]
    assert [line["vote"] for line in lines] == ["up", "down"]
    for line in lines:
        assert line["user"] == USER and line["question"] == MARIUPOL and line["channel"] == CHANNEL
        assert "128" in line["answer"]
        assert line["citations"][0]["article_id"] and "at least 128 persons" in line["citations"][0]["quote"]
    assert lines[0]["citations"][0]["title"].startswith(SEED_TITLE)
    assert lines[0]["abstained"] is False


def test_reply_format_and_splitting_units():
    quote = "A <b> & " + "word " * 900
    citation = Citation(1, "abc", "T <x>", "Src", "2024-01-02", "https://e.x/a?b=1&c=2", "p", quote, 0, len(quote))
    pieces = format_reply(Answer("q?", "Answer & <!here> [1]", (citation,)), asked_by="U1")
    assert len(pieces) == 2 and all(len(p) <= 2900 for p in pieces)
    assert pieces[0].startswith("<@U1> asked:\n> q?\n\nAnswer &amp; &lt;!here&gt; [1]")
    assert "*[1]* <https://e.x/a?b=1&amp;c=2|T &lt;x&gt;> · Src · 2024-01-02\n> A &lt;b&gt; &amp; word" in pieces[0]
    assert pieces[1].startswith("> word")  # a quote cut in two stays a quote
    abstained = format_reply(Answer("q?", "Not found", (), abstained=True))
    assert abstained == ["I don't know: I couldn't find an answer to this in the indexed articles."]
    named = format_reply(Answer("q?", "Not found in the articles: none of the articles found mentions Velgrave.",
                                abstained=True))
    assert named == ["I don't know: none of the articles found mentions Velgrave."]
    link = "<https://example.com/x|a title with spaces>"
    for piece in split_message(("word " * 30 + link + " ") * 20, 120):
        assert len(piece) <= 120 and piece.count("<") == piece.count(">")


def _news_answer(**kw) -> Answer:
    """An answer with everything issue 8 adds: a timeline, an attribution, syndicated copies, a dates notice."""
    cites = (Citation(1, "a1", "Floods", "River Times", "2022-03-01", "", "p", "Floodwater rose.", 0, 16,
                      attribution="Lena <!here> Ostrova, mayor of Dovrin"),
             Citation(2, "a2", "Ferry", "Kestrel Wire", "2022-03-02", "", "p", "The ferry sank.", 0, 15,
                      also_reported_by=("Valley Post", "Quill <Herald> & Co")))
    dates = QuestionDates("this week", "2022-03-01", "2022-03-07", "2022-03-07", "newest article")
    base = dict(question="what happened in Dovrin this week?", text="Floodwater rose. [1] The ferry sank. [2]",
                citations=cites, dates=dates, notice=dates.note(),
                timeline=(TimelinePoint("2022-02-28", "Floodwater <@U1> rose & fell.", (1,)),
                          TimelinePoint("2022-03-02", "The ferry sank.", (1, 2))))
    base.update(kw)
    return Answer(**base)


def test_reply_has_timeline_attribution_copies_and_dates_note():
    (text,) = format_reply(_news_answer())
    answer, notice, timeline, sources = text.split("\n\n")
    assert answer == "Floodwater rose. [1] The ferry sank. [2]"
    assert notice == ("_Articles dated 2022-03-01 to 2022-03-07 (\u201cthis week\u201d, counted from 2022-03-07: "
                      "the newest article's date, as no article is that recent)._")
    assert timeline == ("*Timeline*\n*2022-02-28*  Floodwater &lt;@U1&gt; rose &amp; fell. [1]\n"
                        "*2022-03-02*  The ferry sank. [1] [2]")
    assert sources.startswith("*Sources*\n*[1]* Floods · River Times · 2022-03-01 · "
                              "according to Lena &lt;!here&gt; Ostrova, mayor of Dovrin\n> Floodwater rose.")
    assert "*[2]* Ferry · Kestrel Wire · 2022-03-02 · also reported by Valley Post, Quill &lt;Herald&gt; &amp; Co\n" \
        in sources
    assert "according to" not in sources.split("*[2]*")[1] and "also reported by" not in sources.split("*[2]*")[0]
    blocks = answer_blocks(text, "v")
    assert [b["text"]["text"] for b in blocks if b["type"] == "section"] == [f"{answer}\n\n{notice}", timeline, sources]
    assert blocks[-1]["type"] == "actions"
    # no timeline: no timeline section; an abstention keeps its dates note and shows no timeline
    (plain,) = format_reply(_news_answer(timeline=()))
    assert "*Timeline*" not in plain and len(answer_blocks(plain, None)) == 2
    (abstained,) = format_reply(_news_answer(abstained=True, citations=()))
    assert "*Timeline*" not in abstained and "Articles dated 2022-03-01 to 2022-03-07" in abstained


def test_long_timeline_is_cut_within_slack_limits():
    points = tuple(TimelinePoint(f"2022-{1 + i // 28:02d}-{1 + i % 28:02d}", "flood " * 200, (1,)) for i in range(60))
    pieces = format_reply(_news_answer(timeline=points))
    whole = "\n".join(pieces)
    rows = [line for line in whole.split("\n") if line.startswith("*2022-")]
    assert len(rows) == 20 and "_\u2026 and 40 more dates_" in whole
    assert all(len(row) < 700 and row.endswith("\u2026 [1]") for row in rows)  # a long row is cut at a word
    for piece in pieces:
        blocks = answer_blocks(piece, "v")
        assert len(piece) <= 2900 and len(blocks) <= 50
        assert all(0 < len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


def test_event_ids_are_remembered_for_at_least_ten_minutes(tmp_path):
    from rag.catalogue import SqliteCatalogue
    from ui.slack import DEDUPE_SECONDS, PRUNE_SECONDS, HandledLog, Remembered

    now = [1_700_000_000.0]
    catalogue = SqliteCatalogue(tmp_path)  # what `Assistant.remember` keeps them in
    handled = HandledLog(lambda: catalogue, clock=lambda: now[0])
    seen = Remembered(handled, "event", DEDUPE_SECONDS)
    assert seen.add("Ev1") and not seen.add("Ev1")
    assert Remembered(handled, "thread", DEDUPE_SECONDS).add("Ev1")  # kinds are apart
    now[0] += 10 * 60 + 1
    assert not seen.add("Ev1") and "Ev1" in seen
    now[0] += DEDUPE_SECONDS
    assert "Ev1" not in seen and seen.add(("C1", "1.2")) and ("C1", "1.2") in seen
    now[0] += DEDUPE_SECONDS + PRUNE_SECONDS + 1
    assert seen.add("Ev2")  # ...and the expired rows are pruned
    catalogue.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "articles.sqlite") as db:
        assert db.execute("SELECT kind, key FROM handled").fetchall() == [("event", "Ev2")]


def test_main_needs_the_tokens(monkeypatch, tmp_path, capsys):
    from argparse import Namespace

    from ui.slack import main

    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(index_dir=tmp_path)
    assert main(Namespace(http=True, port=0), settings) == 2
    assert "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    assert main(Namespace(http=False, port=0), settings) == 2
    assert "set SLACK_APP_TOKEN" in capsys.readouterr().err


def test_manifest_asks_for_what_the_bot_uses():
    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parent.parent / "ui" / "slack_manifest.yml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "channels:history", "groups:history", "im:history", "chat:write",
            "reactions:write", "commands"} <= scopes
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {
        "app_mention", "message.channels", "message.groups", "message.im"}
    assert manifest["features"]["slash_commands"][0]["command"] == "/ask"
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True


def test_url_verification_is_answered(s):
    body = json.dumps({"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"})
    status, text, _ = post(s.events_url, body, sign(SECRET, body), "application/json")
    assert status == 200 and json.loads(text)["challenge"].startswith("3eZbrw1aBm2")


def test_unsigned_or_garbage_bodies_get_an_answer_and_no_traceback(s, caplog):
    caplog.set_level(logging.DEBUG)
    now = str(int(time.time()))
    bad = [
        (b"\xff{not json", {}),  # unsigned garbage
        (b'{"type": "event_callback", "event": [', {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=1"}),
        (b"[" * 10000, {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": "v0=" + "0" * 64}),
    ]
    for body, headers in bad:
        assert _post_bytes(s.events_url, body, headers) == 401
    # signed (so it passed the check) yet not what Slack sends: refused, not a crash
    garbage = "{not json"
    assert post(s.events_url, garbage, sign(SECRET, garbage), "application/json")[0] == 400
    too_large = http.client.HTTPConnection("127.0.0.1", s.server.port, timeout=10)
    too_large.putrequest("POST", "/slack/events")
    too_large.putheader("Content-Length", str(1 << 21))
    too_large.endheaders()  # refused on the header, before the body is sent
    assert too_large.getresponse().status == 413
    too_large.close()
    s.idle()
    assert s.fake.calls == []
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert s.send(event_callback({"type": "reaction_added", "event_ts": "1.2"}))[0] == 200  # still serving


def _post_bytes(url: str, body: bytes, headers: dict) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow  # 200 answers: about 20 s on two busy cores
def test_200_signed_events_at_concurrency_50_are_all_acked_at_once_and_answered_once(s):
    from concurrent.futures import ThreadPoolExecutor

    questions = [MARIUPOL, "What happened in Kherson?", "Who is the mayor of Kherson?",
                 "When did the Portvale bridge reopen?"]
    messages = [s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {questions[i % len(questions)]}") for i in range(200)]
    payloads = [event_callback(mention_event(m, CHANNEL)) for m in messages]
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:  # 50 deliveries in flight at any time
        results = list(pool.map(s.send, payloads))
    sent = time.monotonic() - started
    statuses = [status for status, _, _ in results]
    acks = sorted(ack for _, _, ack in results)
    assert statuses == [200] * 200
    posted = s.fake.wait_for("chat.postMessage", count=200, timeout=240)
    s.idle()
    answered = time.monotonic() - started
    per_thread = {}
    for call in s.fake.called("chat.postMessage"):
        per_thread[call.params.get("thread_ts")] = per_thread.get(call.params.get("thread_ts"), 0) + 1
    assert per_thread == {m["ts"]: 1 for m in messages} and len(posted) == 200
    p50, p99 = acks[99], acks[197]
    print(f"\n200 events at concurrency 50: sent in {sent:.1f} s, acks p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {acks[-1] * 1000:.0f} ms; all answered after {answered:.1f} s")
    # the target; measured 0.33-0.5 s with the two cores shared at load 6 to 7
    assert p99 < 1.0


def test_a_replayed_request_is_not_answered_again_after_a_restart(s):
    message = s.fake.add_message(CHANNEL, f"<@{BOT_USER}> {MARIUPOL}")
    body = json.dumps(event_callback(mention_event(message, CHANNEL)))
    captured = sign(SECRET, body)  # what an attacker (or a slow retry) replays, within Slack's 5 minutes
    assert post(s.events_url, body, captured, "application/json")[0] == 200
    s.fake.wait_for("chat.postMessage", thread_ts=message["ts"])
    s.idle()

    restarted = SlackBot(s.settings, s.bot.assistant())  # a new bot over the same index folder
    server = HttpServer(restarted.build_app(TOKEN, SECRET), SECRET, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{server.port}/slack/events"
        assert post(url, body, captured, "application/json")[0] == 200
        # the same message as a message event (another event id) is not answered either
        other = json.dumps(event_callback(message_event(message, CHANNEL)))
        assert post(url, other, sign(SECRET, other), "application/json")[0] == 200
        assert restarted.wait_idle(30)
        assert len(s.replies(message["ts"])) == 1
        # a follow-up in the thread it answered before the restart still is
        follow = s.fake.add_message(CHANNEL, "Who is the mayor?", thread_ts=message["ts"], parent_user_id=USER)
        reply = json.dumps(event_callback(message_event(follow, CHANNEL)))
        assert post(url, reply, sign(SECRET, reply), "application/json")[0] == 200
        s.fake.wait_for("chat.postMessage", count=2, thread_ts=message["ts"])
        assert restarted.wait_idle(30)
    finally:
        server.stop()
        restarted.close()
    assert len(s.replies(message["ts"])) == 2


def test_http_mode_listens_on_localhost_by_default(s):
    from rag.cli import parser

    server = HttpServer(s.bot.build_app(TOKEN, SECRET), SECRET, port=0)
    try:
        assert server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        server.socket.close()
    args = parser().parse_args(["slack", "--http"])
    assert args.host == "127.0.0.1"
    assert parser().parse_args(["slack", "--http", "--host", "0.0.0.0"]).host == "0.0.0.0"
