"""Follow-ups take from earlier turns only what they lack; a misspelt name gets a suggestion; a question not in
English gets a notice. Through the API, `rag chat`, the web chat's handler and a Slack thread."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest

from rag import Assistant, Message
from rag.answer import looks_english
from rag.api import standalone_question
from tests.conftest import DOVRIN, HARKAVY, SEEDS, write_jsonl
from tests.slack_fake import BOT_USER

MISSPELT = "what hapened in Mariupl?"


@pytest.fixture(scope="module")
def built(tmp_path_factory, settings, embedder):
    """The seeds (Kharkiv, Mariupol, Kherson in one article) and two fixture towns, Dovrin and Harkavy."""
    from rag.store import Store

    work = tmp_path_factory.mktemp("followups")
    articles = work / "articles"
    shutil.copytree(SEEDS, articles)
    write_jsonl(articles / "towns.jsonl", DOVRIN + HARKAVY)
    assistant = Assistant(Store(work / "index"), embedder, settings)
    assistant.index([articles])
    yield assistant, work
    assistant.close()


def turns(*texts: str) -> list[Message]:
    """Alternating user/assistant messages (the assistant's as the front ends keep them: the answer's text)."""
    return [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def talk(assistant: Assistant, *questions: str):
    """Ask the questions one after the other as a chat; the answers."""
    messages: list[Message] = []
    answers = []
    for q in questions:
        messages.append(Message("user", q))
        answer = assistant.chat(messages)
        messages.append(Message("assistant", answer.text))
        answers.append(answer)
    return answers


# ---------------------------------------------------------------- the rewrite alone

@pytest.mark.parametrize("previous, question, expected", [
    # elliptic: the question lacks its frame
    (["what happened in Mariupol?"], "and in Kherson?", ("what happened in Kherson?", "Kherson")),
    # a missing subject: the earlier subject fills it in
    (["what happened in Kherson?"], "who is the mayor?",
     ("what happened in Kherson who is the mayor?", "who is the mayor")),
    (["what happened in Kherson?"], "why?", ("what happened in Kherson why?", "")),
    (["what happened in Kherson?"], "what did he confirm there?",
     ("what happened in Kherson what did he confirm there?", "what did he confirm there")),
    # the question names its own place, person or topic (misspelt or lower-case): it stands alone
    (["what happened in Mariupol?"], "what happend in mariupol", ("what happend in mariupol", "")),
    (["what happened in Mariupol?"], "what happened in Dovrin?", ("what happened in Dovrin?", "")),
    (["what happened in Mariupol?"], "what did Kolyhav confirm?", ("what did Kolyhav confirm?", "")),
    (["what happened in Mariupol?"], "what about Dovrn?", ("what happened in Dovrn?", "Dovrn")),
    # a chain: the earlier follow-up is resolved first
    (["what happened in Mariupol?", "and in Kherson?"], "who is the mayor?",
     ("what happened in Kherson who is the mayor?", "who is the mayor")),
    ([], "and in Kherson?", ("and in Kherson?", "")),
])
def test_standalone_question_fills_in_only_what_is_missing(previous, question, expected):
    assert standalone_question(previous, question) == expected


# ---------------------------------------------------------------- the API

def test_a_standalone_question_after_an_abstention_is_not_a_follow_up(built):
    assistant, _ = built
    first, second = talk(assistant, MISSPELT, "what happend in mariupol")
    assert first.abstained
    assert not second.abstained and "128" in second.text and "Mariupl" not in second.text


def test_an_abstained_turn_is_not_carried_into_an_elliptic_follow_up(built):
    assistant, _ = built
    first, second = talk(assistant, "tell me about Mariupl", "and in Kherson?")
    assert first.abstained
    assert not second.abstained and "Kherson" in second.text and "Mariupl" not in second.text


def test_a_new_place_is_not_mixed_with_the_previous_one(built):
    assistant, _ = built
    first, second, third = talk(assistant, "what happened in Mariupol?", "what happened in Dovrin?",
                                "what happend in Dovrn")
    assert not first.abstained and not second.abstained
    assert "Dovrin" in second.text and "Mariupol" not in second.text
    assert third.abstained and "Dovrn" in third.text and "Mariupol" not in third.text


def test_a_missing_subject_comes_from_the_last_answered_turn(built):
    assistant, _ = built
    answers = talk(assistant, "what happened in Kherson?", MISSPELT, "who is the mayor?")
    assert answers[1].abstained
    assert "Kolyhav" in answers[2].text and "Boychenko" not in answers[2].text
    chained = talk(assistant, "what happened in Mariupol?", "and in Kherson?", "who is the mayor?")
    assert "Kolyhav" in chained[2].text and "Boychenko" not in chained[2].text


def test_an_abstention_is_recognised_in_each_front_ends_wording(built):
    assistant, _ = built
    for said in ("Not found in the articles: none of the articles found mentions Mariupl.",
                 "I don't know: none of the articles found mentions Mariupl.",  # a Slack thread's bot message
                 "I don't know: I couldn't find an answer to this in the indexed articles."):
        answer = assistant.chat(turns("tell me about Mariupl", said, "and in Kherson?"))
        assert not answer.abstained and "Kherson" in answer.text, said


# ---------------------------------------------------------------- did you mean, not English

def test_a_misspelt_name_gets_a_suggestion(built):
    assistant, _ = built
    answer = assistant.ask(MISSPELT)
    assert answer.abstained and "Mariupl" in answer.text and "did you mean Mariupol?" in answer.text
    assert "did you mean Dovrin?" in assistant.ask("what happened in Dovrn?").text
    plain = assistant.ask("what happened in Kestrelmouth?")  # nothing close: no suggestion
    assert plain.abstained and "did you mean" not in plain.text


def test_a_name_asked_is_not_taken_for_a_misspelt_common_word(built):
    assistant, _ = built
    named = assistant.ask("What did Mayor Bridgo say about the floods?")  # a name: not "bridge"
    assert named.abstained and "Bridgo" in named.text and "did you mean" not in named.text, named.text
    # the same word lower case, or capitalised only as the question's first word, is a misspelt word
    assert "did you mean bridge?" in assistant.ask("why was the bridgo painted red?").text
    assert "did you mean bridge?" in assistant.ask("Bridgo painted red?").text


def test_the_suggestion_is_fast(built):
    assistant, _ = built
    assistant.ask(MISSPELT)
    started = time.perf_counter()
    for _ in range(5):
        assistant.answerer.suggestions(["Mariupl", "Harkvy", "Zzyzx"])
    assert (time.perf_counter() - started) / 5 < 0.05


@pytest.mark.parametrize("question", [
    "Что случилось в Мариуполе?", "Qu'est-ce qui s'est passé à Marioupol ?", "Was ist in Mariupol passiert?",
    "¿Qué pasó en Mariupol?", "Cosa è successo a Mariupol?", "Що сталося в Херсоні?",
])
def test_a_question_not_in_english_gets_a_notice(built, question):
    assert not looks_english(question)
    answer = built[0].ask(question)
    assert "English" in answer.notice and "not look English" in answer.to_dict()["notice"]


@pytest.mark.parametrize("question", [
    "What did Volodymyr Zelenskyy say about Zaporizhzhia?", "what happened in Kraków and Łódź?",
    "Did Igor Kolyhav confirm the capture of Kherson?", "Mariupol shelling casualties", "why?",
    "what happened in Dnipro, Kyiv, Lviv and Chernihiv?", "Who is Jean-Pierre Dupont?",
])
def test_an_english_question_with_foreign_names_gets_no_notice(built, question):
    assert looks_english(question)
    assert "English" not in built[0].ask(question).notice


# ---------------------------------------------------------------- rag chat, the web chat

def test_rag_chat_answers_a_standalone_question_after_an_abstention(built):
    _, work = built
    lines = f"{MISSPELT}\nwhat happend in mariupol\ntell me about Mariupl\nand in Kherson?\n"
    done = subprocess.run([sys.executable, "-m", "rag.cli", "chat", "--index", str(work / "index")], input=lines,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAG_LLM": "extractive"})
    assert done.returncode == 0, done.stderr
    replies = done.stdout.split("\n> ")[1:]
    assert len(replies) == 5  # four answers and the prompt left when stdin ends
    assert "did you mean Mariupol?" in replies[0]
    assert "128" in replies[1] and "Mariupl" not in replies[1]
    assert "Kherson" in replies[3] and "Mariupl" not in replies[3]


def test_web_chat_answers_a_standalone_question_after_an_abstention(built, settings):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ui import web

    chat = web.WebChat(built[0], settings)
    session = web.new_session()
    shown = []
    for question in (MISSPELT, "what happend in mariupol", "tell me about Mariupl", "and in Kherson?"):
        *_, (_, view, session, _) = chat.respond(question, session, [], None, None)
        shown.append(view[-1]["content"])
    assert "did you mean Mariupol?" in shown[0]
    assert "128" in shown[1] and "Mariupl" not in shown[1]
    assert "Kherson" in shown[3] and "Mariupl" not in shown[3]


# ---------------------------------------------------------------- a Slack thread

def test_slack_thread_answers_a_standalone_question_after_an_abstention(built, tmp_path):
    pytest.importorskip("slack_bolt")
    from rag.config import Settings
    from tests.slack_fake import FakeSlack, event_callback, mention_event, message_event, post, sign
    from ui.slack import HttpServer, SlackBot

    secret, channel, user = "0123456789abcdef0123456789abcdef", "C0000MAIN", "U0000USR"
    with ExitStack() as stack:
        fake = FakeSlack()
        stack.callback(fake.stop)
        bot = SlackBot(Settings(_env_file=None, index_dir=tmp_path, slack_api_url=fake.url), built[0])
        stack.callback(bot.close)
        server = HttpServer(bot.build_app("xoxb-0000-test", secret), secret, "127.0.0.1", 0).start()
        stack.callback(server.stop)

        def send(message: dict, event: dict) -> None:
            body = json.dumps(event_callback(event))
            url = f"http://127.0.0.1:{server.port}/slack/events"
            assert post(url, body, sign(secret, body), "application/json")[0] == 200
            fake.wait_for("chat.postMessage", count=len(replies()) + 1, thread_ts=root["ts"])
            assert bot.wait_idle(30)

        def replies() -> list[str]:
            return [c.params["text"] for c in fake.called("chat.postMessage", channel=channel, thread_ts=root["ts"])]

        root = fake.add_message(channel, f"<@{BOT_USER}> {MISSPELT}")
        send(root, mention_event(root, channel))
        for question in ("what happend in mariupol", "tell me about Mariupl", "and in Kherson?"):
            message = fake.add_message(channel, question, thread_ts=root["ts"], parent_user_id=user)
            send(message, message_event(message, channel))
    texts = replies()
    assert len(texts) == 4, texts
    assert "did you mean Mariupol?" in texts[0]
    assert "128" in texts[1] and "Mariupl" not in texts[1]
    assert "Kherson" in texts[3] and "Mariupl" not in texts[3]
