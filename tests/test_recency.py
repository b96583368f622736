"""Recency (issue 14, section 3): asked with dates on, a question that names no period of its own ranks the newer
of two reports first, counted from the day it is asked; asked as on a past day, what was published later is not
searched; an archive search (dates off) and a question naming its own period rank by topic alone."""

from __future__ import annotations

from datetime import date

import pytest

from rag import Assistant
from tests.conftest import indexed

# the older report says more about the strike (a topic-only ranking puts it first); the newer one says what is
# happening now
ARTICLES = [
    {"title": "Kessel dock strike begins", "source": "Port Gazette", "published": "2022-10-03",
     "url": "https://port.example/kessel-strike-begins",
     "text": "Dock workers in Kessel began a strike on Monday over pay. The Kessel dock strike closed the "
             "container terminal. Union leaders said the Kessel dock strike would go on until pay rose."},
    {"title": "Kessel port reopens", "source": "Harbour Times", "published": "2022-10-27",
     "url": "https://harbour.example/kessel-reopens",
     "text": "The port of Kessel reopened on Wednesday after the dock strike ended with a pay deal of 6 percent. "
             "Ships queued to unload."},
    {"title": "Orlen bakery wins prize", "source": "Town Crier", "published": "2022-10-20",
     "url": "https://town.example/orlen-bakery",
     "text": "The Orlen bakery won the regional bread prize for its rye loaf. The baker thanked her staff."},
]
QUESTION = "What is happening with the Kessel dock strike?"
OLD, NEW = "Kessel dock strike begins", "Kessel port reopens"


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, settings, embedder):
    with indexed(tmp_path_factory.mktemp("recency"), ARTICLES, settings, embedder) as assistant:
        yield assistant


def titles(answer) -> list[str]:
    return list(dict.fromkeys(h.article.title for h in answer.hits))


def test_topic_alone_ranks_the_fuller_older_report_first(assistant):
    # the premise of the other tests: without recency the older report leads
    assert titles(assistant.ask(QUESTION, dates=False))[0] == OLD


def test_the_newer_report_leads_when_asked_as_of_today(assistant):
    asked = titles(assistant.ask(QUESTION, today=date(2022, 10, 28)))
    assert asked.index(NEW) < asked.index(OLD)


def test_no_recency_when_turned_off(assistant):
    off = Assistant(assistant.store, assistant.embedder, assistant.settings.model_copy(update={"recency_weight": 0.0}))
    assert titles(off.ask(QUESTION, today=date(2022, 10, 28)))[0] == OLD


def test_what_was_published_after_the_day_asked_is_not_searched(assistant):
    asked = titles(assistant.ask(QUESTION, today=date(2022, 10, 10)))
    assert NEW not in asked and asked[0] == OLD


def test_a_question_naming_its_own_period_is_ranked_by_topic(assistant):
    asked = titles(assistant.ask("What happened with the Kessel dock strike in October 2022?",
                                 today=date(2022, 10, 28)))
    assert asked[0] == OLD


def test_a_collection_older_than_today_counts_from_its_newest_article(assistant):
    # asked years later, the newest report still leads: "today" for ranking is the collection's newest day
    asked = titles(assistant.ask(QUESTION, today=date(2026, 11, 30)))
    assert asked.index(NEW) < asked.index(OLD)


def test_what_is_happening_is_answered_newest_first_and_what_happened_oldest_first(assistant):
    # the user's "what is happening in Kherson?" opened with the March protests though the November withdrawal was
    # found: a question about now leads with the newest report; a question about the story reads it in order
    now = assistant.ask(QUESTION, today=date(2022, 10, 28))
    assert {c.title for c in now.citations} == {OLD, NEW}
    assert now.citations[0].title == NEW
    story = assistant.ask("What happened with the Kessel dock strike?", today=date(2022, 10, 28))
    assert story.citations[0].title == OLD
    assert [p.date for p in now.timeline] == sorted(p.date for p in now.timeline)  # the timeline stays a timeline


def test_what_is_happening_quotes_the_newest_report_though_an_older_one_says_more(tmp_path, settings, embedder):
    # the user's "what is happening in Kherson?" quoted four sentences of the March protests and none of the November
    # withdrawal: the older report matched better, sentence after sentence
    older = {**ARTICLES[0], "text": " ".join(
        f"The Kessel dock strike {what}." for what in (
            "began on Monday over pay", "closed the container terminal of Kessel",
            "drew hundreds of dock workers to the Kessel gates", "left ships waiting outside Kessel",
            "was the first Kessel dock strike in a decade", "split the Kessel dock workers' union"))}
    newer = {**ARTICLES[1], "text": "The port of Kessel reopened on Wednesday after the dock strike ended with a "
                                    "pay deal of 6 percent."}
    with indexed(tmp_path, [older, newer], settings, embedder) as assistant:
        now = assistant.ask(QUESTION, today=date(2022, 10, 28))
        assert now.citations[0].title == NEW, now.text
        # a question about the story is still told from its fullest report, oldest first
        story = assistant.ask("What happened with the Kessel dock strike?", today=date(2022, 10, 28))
        assert story.citations[0].title == OLD


def test_a_present_tense_question_is_answered_from_the_newest_report(tmp_path, settings, embedder):
    # "who is ...?" asks who is now: the newest report's answer first, though an older one matches more closely
    older = {**ARTICLES[0], "title": "Kessel harbour master", "text":
             "Anna Berg is the harbour master of Kessel. As harbour master of Kessel, Anna Berg runs the Kessel "
             "docks and the Kessel pilots."}
    newer = {**ARTICLES[1], "title": "New Kessel harbour master", "text":
             "Jonas Lind took over on Wednesday as harbour master of Kessel after Anna Berg retired."}
    with indexed(tmp_path, [older, newer], settings, embedder) as assistant:
        now = assistant.ask("Who is the harbour master of Kessel?", today=date(2022, 10, 28))
        assert "Jonas Lind" in now.citations[0].quote, now.text
        # asked in the past tense, the closest match answers
        then = assistant.ask("Who was the harbour master of Kessel in early October?", dates=False)
        assert "Anna Berg" in then.citations[0].quote, then.text
