"""Questions about an outcome the collection cannot know (issue 14, section 4: abstain when nothing answers): a
preview ("is set to take place") does not say who won, and a past-tense question about a year after the newest
article is answered "not found", saying why."""

from __future__ import annotations

from datetime import date

import pytest

from rag.dates import later_year
from rag.kinds import NAME, given, offers
from tests.conftest import indexed

ARTICLES = [
    {"title": "Harbin cup final on Sunday", "source": "Sport Daily", "published": "2022-05-06",
     "url": "https://sport.example/harbin-final",
     "text": "The Harbin cup final is set to take place in Orlen on Sunday between Kessel United and Varn Rovers. "
             "Tickets for the Harbin cup final sold out in a day."},
    {"title": "Varn mayoral race takes shape", "source": "Town Crier", "published": "2022-06-01",
     "url": "https://town.example/varn-race",
     "text": "Lisa Brandt and Tomas Eek are the candidates in the 2024 Varn mayoral election. Both candidates "
             "promised a new ferry for Varn."},
    {"title": "Pellin regatta won by Maren Holt", "source": "Coast Courier", "published": "2022-07-04",
     "url": "https://coast.example/pellin-regatta",
     "text": "The Pellin regatta was won by Maren Holt on Sunday. The next Pellin regatta will be held in July."},
]


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, settings, embedder):
    with indexed(tmp_path_factory.mktemp("outcomes"), ARTICLES, settings, embedder) as assistant:
        yield assistant


def test_a_preview_does_not_say_who_won():
    preview = "The final is set to take place in Orlen on Sunday between Kessel United and Varn Rovers."
    assert not offers(NAME, preview, given("Who won the final?"), frozenset())
    assert offers(NAME, "Kessel United beat Varn Rovers in the final.", given("Who won the final?"), frozenset())
    # a question about what is coming is answered by the preview
    assert offers(NAME, preview, given("Who will play in the final?"), frozenset())


def test_who_won_is_answered_by_a_sentence_saying_how_it_ended():
    """Naming the people around an event is not saying who won it (an unanswerable "Which team won Super Bowl
    LVII?" was answered with who would headline its halftime show)."""
    asked = given("Which team won the Harbin cup?")
    assert not offers(NAME, "Officials confirmed that Anna Berg agreed to sing at the Harbin cup.", asked, frozenset())
    assert not offers(NAME, "Kessel United met Varn Rovers at the Harbin cup.", asked, frozenset())
    assert offers(NAME, "Kessel United were crowned champions of the Harbin cup.", asked, frozenset())
    assert offers(NAME, "Varn Rovers claimed the Harbin cup on Sunday.", asked, frozenset())
    # a preview that names the contest or its winner-to-be states no outcome, unless it also tells one
    assert not offers(NAME, "Kessel United will face Varn Rovers in the championship game on Sunday.", asked,
                      frozenset())
    assert not offers(NAME, "The winner of the Harbin cup is set to be crowned in Orlen on Sunday.", asked, frozenset())
    assert offers(NAME, "Kessel United, who won the semifinal, will face Varn Rovers in the Harbin cup.", asked,
                  frozenset())
    # the outcome word in a statement before the question is not what is asked
    age = given("A Kessel pilot became the youngest person to fly solo around the world. How old is he?")
    assert not age.outcome


def test_an_unrelated_sentence_with_names_does_not_answer_who_won(assistant):
    answer = assistant.ask("Who won the Varn mayoral election?")
    assert answer.abstained, answer.text


def test_who_won_is_not_answered_from_a_preview(assistant):
    answer = assistant.ask("Who won the Harbin cup final?")
    assert answer.abstained, answer.text


def test_who_won_is_answered_from_a_report(assistant):
    answer = assistant.ask("Who won the Pellin regatta?")
    assert not answer.abstained and "Maren Holt" in answer.text


@pytest.mark.parametrize("question, year", [
    ("Who won the 2024 election?", 2024), ("What happened at the 2023 summit?", 2023),
    ("Who will win the 2024 election?", None), ("Who won the 2022 final?", None), ("Who won the final?", None),
])
def test_later_year(question, year):
    assert later_year(question, date(2022, 11, 11)) == year


def test_a_past_year_the_collection_cannot_have_reached_is_not_found(assistant):
    answer = assistant.ask("Who won the 2024 Varn mayoral election?", today=date(2024, 11, 14))
    assert answer.abstained and "the newest article is of 2022-07-04" in answer.text and "2024" in answer.text
    # what is coming may be asked: the candidates are in the articles
    assert not assistant.ask("Who are the candidates in the 2024 Varn mayoral election?").abstained
