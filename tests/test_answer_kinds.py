"""Answers hold what the question asks for (issue 14, section 4): who -> a name, how many -> a number, when -> a
date, both parts of a two-part question, best sentence first, and "not found" when the topic is there but the
answer is not."""

from __future__ import annotations

import pytest

from rag import answer as answer_module
from rag.ground import event_years
from rag.kinds import DATE, NAME, NUMBER, PLACE, YESNO, asks, counted, given, offers
from rag.lexical import Words
from rag.types import Article, Chunk, Hit
from tests.conftest import check_quotes, indexed


def story(title: str, published: str, text: str) -> dict:
    """A Coast Courier article (its url made from its title)."""
    return {"title": title, "source": "Coast Courier", "published": published, "text": text,
            "url": f"https://coast.example/{'-'.join(title.lower().split())}"}


# each story states its topic before (and more fully than) its answer: an answer ordered by relevance and position
# alone opens with the topical sentence that answers nothing
ARTICLES = [
    {"title": "Tarnby regatta ends", "source": "Coast Courier", "published": "2022-07-04",
     "url": "https://coast.example/tarnby-regatta",
     "text": "The Tarnby regatta ended on Sunday after three days of racing in strong winds. Spectators lined the "
             "harbour walls of Tarnby for the final day of the regatta. The regatta was won by Maren Holt, who "
             "sailed alone."},
    {"title": "Lake Varn gets an electric ferry", "source": "Lake News", "published": "2022-05-12",
     "url": "https://lake.example/varn-ferry",
     "text": "The new electric ferry on Lake Varn made its first crossing on Monday. Passengers on the Lake Varn "
             "ferry praised its quiet engines and its wide passenger deck. The ferry carries up to 180 passengers."},
    {"title": "Oskil footbridge reopens", "source": "Town Crier", "published": "2022-06-20",
     "url": "https://town.example/oskil-bridge",
     "text": "The Oskil footbridge reopened to walkers and cyclists after long repairs to the reopened deck. Walkers "
             "said the reopened Oskil footbridge felt safer. The footbridge reopened on 14 June, the council said."},
    {"title": "Pellin clock museum opens", "source": "Town Crier", "published": "2022-05-09",
     "url": "https://town.example/pellin-museum",
     "text": "The Pellin clock museum opened its doors to the public in the old town hall. Crowds queued outside "
             "as the Pellin clock museum opened. Visitors to the opened Pellin clock museum admired the old "
             "clocks. The Pellin clock museum opened with free entry for children. The museum opened on 3 May. "
             "Building the museum cost 4.2 million euros, the council said."},
]


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, settings, embedder):
    with indexed(tmp_path_factory.mktemp("kinds"), ARTICLES, settings, embedder) as assistant:
        yield assistant


@pytest.mark.parametrize("question, fact", [
    ("Who won the Tarnby regatta?", "Maren Holt"),
    ("How many passengers does the Lake Varn ferry carry?", "180 passengers"),
    ("When did the Oskil footbridge reopen?", "14 June"),
])
def test_the_sentence_holding_the_kind_asked_answers_first(assistant, question, fact):
    answer = assistant.ask(question)
    assert not answer.abstained
    assert fact in answer.citations[0].quote  # the answer opens with it, not with the topical sentence before it
    assert answer.text.index(fact) < answer.text.index("[1]")
    check_quotes(assistant, answer)


def test_a_two_part_question_is_answered_in_both_parts(assistant):
    answer = assistant.ask("When did the Pellin clock museum open and how much did it cost?")
    assert not answer.abstained
    assert "3 May" in answer.text and "4.2 million euros" in answer.text
    first_two = " ".join(c.quote for c in answer.citations[:2])
    assert "3 May" in first_two and "4.2 million euros" in first_two  # the answers come before the rest
    check_quotes(assistant, answer)


def test_not_found_when_the_topic_is_there_but_not_what_is_asked(assistant):
    # every word occurs (Pellin, clock, museum) but no article names anyone who designed anything
    answer = assistant.ask("Who designed the Pellin clock museum?")
    assert answer.abstained and answer.citations == ()
    assert answer.text == ("Not found in the articles: the newest article found on it, \u201cPellin clock museum "
                           "opens\u201d (Town Crier, 2022-05-09), does not say who.")


def test_a_question_with_no_kind_is_answered_as_before(assistant):
    answer = assistant.ask("What happened at the Tarnby regatta?")
    assert not answer.abstained and "Tarnby regatta" in answer.text


@pytest.mark.parametrize("question, expected", [
    ("Who won the election?", [(NAME, "who")]),
    ("How many people were evacuated?", [(NUMBER, "how many")]),
    ("How much did the bridge cost?", [(NUMBER, "how much")]),
    ("What is the US inflation rate?", [(NUMBER, "what is the us inflation rate")]),
    ("What's the population of Velmora?", [(NUMBER, "what's the population")]),
    ("What is the name of the ferry?", [(NAME, "what is the name")]),
    ("When did the museum open?", [(DATE, "when")]),
    ("In what year was the treaty signed?", [(DATE, "what year")]),
    ("Where did the storm make landfall?", [(PLACE, "where")]),
    ("Floods hit the coast this week. Which country declared an emergency?", [(PLACE, "which country")]),
    ("Which popular singer announced a tour?", [(NAME, "which popular singer")]),
    ("Did the council approve the plan?", [(YESNO, "whether")]),
    ("What happened in Mariupol?", [("", "")]),
    ("The police arrested a man who fled. What did he steal?", [("", "")]),  # a relative "who" asks nothing
    ("When did it open and how much did it cost?", [(DATE, "when"), (NUMBER, "how much")]),
    # a "when" after a comma is a relative clause when other question words follow
    ("In March, when the storm hit, how many homes flooded?", [(NUMBER, "how many")]),
    ("The Velmora ferry, when it sank, carried which famous singer?", [(NAME, "which famous singer")]),
    ("The final was on Sunday, who won it?", [(NAME, "who")]),
    ("Which controversial social media platform did he buy?", [(NAME, "which controversial social media platform")]),
])
def test_what_a_question_asks_for(question, expected):
    assert [(a.kind, a.phrase) for a in asks(question)] == expected


@pytest.mark.parametrize("kind, sentence, yes", [
    (NAME, "The regatta was won by Maren Holt.", True),
    (NAME, "The Tarnby regatta ended on Sunday.", False),  # the question's own name, a weekday
    (NAME, "The dam in Velmora failed.", False),  # a place is not who
    (NUMBER, "The ferry carries up to 180 passengers.", True),
    (NUMBER, "The ferry carries passengers since 2021.", False),  # a year is not a count
    (NUMBER, "Thousands of people watched as it cost two million euros.", True),
    (NUMBER, "A third of the passengers were children.", True),
    (NUMBER, "Fares rose to double digits in the third quarter.", False),  # no count: a manner of speaking
    (DATE, "It reopened on 14 June.", True),
    (DATE, "It reopened after long repairs.", False),
    (DATE, "It will reopen, the mayor said on Monday.", False),  # when it was said, not when it reopens
    (DATE, "It will reopen in June, the mayor said on Monday.", True),
    (PLACE, "Dozens were rescued in eastern Kentucky.", True),
])
def test_what_a_sentence_offers(kind, sentence, yes):
    question = {NAME: "Who won the Tarnby regatta on Sunday?", NUMBER: "How many passengers does it carry?",
                DATE: "When did it reopen?", PLACE: "Where were people rescued?"}[kind]
    assert offers(kind, sentence, given(question), frozenset()) is yes


# a news quiz page asks the very question (and teases with another); the report answers it
QUIZ = [
    {"title": "Brenmoor weekly quiz", "source": "Brenmoor Post", "published": "2022-09-02",
     "url": "https://brenmoor.example/quiz",
     "text": "Which festival did the Brenmoor council cancel this week? Test yourself on the week's news. "
             "Did the council vote on the festival budget as well?"},
    {"title": "Brenmoor council cancels festival", "source": "Brenmoor Post", "published": "2022-09-01",
     "url": "https://brenmoor.example/festival",
     "text": "The Brenmoor council cancelled the Quorvel lantern festival on Tuesday, citing the drought. "
             "The festival had drawn large crowds to the harbour every autumn."},
]


def test_a_question_in_an_article_is_never_quoted_as_an_answer(tmp_path, settings, embedder):
    with indexed(tmp_path, QUIZ, settings, embedder) as assistant:
        for question in ("Which festival did the Brenmoor council cancel this week?",
                         "Did the Brenmoor council vote on the festival budget?"):
            answer = assistant.ask(question)
            assert answer.citations and not answer.abstained
            assert not [c.quote for c in answer.citations if c.quote.rstrip().endswith("?")]
            check_quotes(assistant, answer)
        assert "Quorvel lantern festival" in assistant.ask("Which festival did the Brenmoor council cancel?").text


# the year a question names is the event's: a sentence telling of the same event in other years answers another one
CUP = [
    {"title": "Ostmark Cup final", "source": "Coast Courier", "published": "2022-06-27",
     "url": "https://coast.example/ostmark-cup",
     "text": "The Harbour Hawks won the Ostmark Cup in 2019, their only title in the Ostmark Cup so far. "
             "This season the Valley Owls won the Ostmark Cup, beating the Hawks 3-1 on Sunday. "
             "Tickets for the 2022 final had sold out within an hour."},
    {"title": "Ostmark Cup history", "source": "Town Crier", "published": "2022-05-02",
     "url": "https://town.example/ostmark-cup-history",
     "text": "The Ostmark Cup is the oldest rowing trophy of the coast. The Harbour Hawks won the Ostmark Cup in "
             "2019 and the Mill Foxes won the Ostmark Cup in 2017."},
]


def test_a_sentence_about_another_year_does_not_answer_a_question_naming_its_year(tmp_path, settings, embedder):
    with indexed(tmp_path, CUP, settings, embedder) as assistant:
        answer = assistant.ask("Which team won the 2022 Ostmark Cup?")
        assert answer.citations and not answer.abstained
        assert "Valley Owls" in answer.citations[0].quote
        assert not [c.quote for c in answer.citations if "2019" in c.quote or "2017" in c.quote]
        check_quotes(assistant, answer)
        # no year named: a news question, answered by this season's winner before any past edition's
        assert "Valley Owls" in assistant.ask("Which team won the Ostmark Cup?").citations[0].quote
        # a year no sentence tells of: not found, rather than another year's winner
        assert assistant.ask("Which team won the 2015 Ostmark Cup?").abstained


def test_a_year_measured_from_does_not_make_a_sentence_tell_of_that_year(tmp_path, settings, embedder):
    # "the team's first Stanley Cup since 2001" tells of this season's final, not of 2001's
    final = [{**CUP[0], "text": "The Valley Owls beat the Harbour Hawks 3-1 on Sunday to win their first Ostmark Cup "
                                "since 2001. Tickets for the 2022 final had sold out within an hour."}]
    with indexed(tmp_path, final, settings, embedder) as assistant:
        for question in ("Which team won the 2022 Ostmark Cup?", "Which team won the Ostmark Cup?"):
            answer = assistant.ask(question)
            assert not answer.abstained and "Valley Owls" in answer.citations[0].quote, (question, answer.text)


@pytest.mark.parametrize("question, years", [
    ("Which team won the 2022 NHL Stanley Cup Finals?", {"2022"}),
    ("What did the mayor say in 2021?", {"2021"}),
    ("How much have prices risen since 2020?", set()),  # a span: any year in it may answer
    ("What happened between 2019 and 2021?", set()),
    ("How did the 2021-2022 season end?", set()),
    ("How many people live in Ostmark?", set()),
])
def test_the_years_a_question_names_as_its_events(question, years):
    assert event_years(question) == years


def test_who_won_is_not_answered_by_a_past_edition_alone(tmp_path, settings, embedder):
    # "Who won the World Cup?" of a collection ending before the final was answered with England's 1966 win
    with indexed(tmp_path, CUP[1:], settings, embedder) as assistant:
        latest = assistant.ask("Which team won the Ostmark Cup?")
        assert latest.abstained and "does not say" in latest.text
        # asked about the past edition itself, it answers
        assert "2019" in assistant.ask("Which team won the Ostmark Cup in 2019?", dates=False).text
        assert "2019" in assistant.ask("When did the Harbour Hawks win the Ostmark Cup?").text


# a quiz-style question opens with a sentence of the article itself; that sentence restates, it does not answer
STORM = [story("Storm season on the coast", "2022-09-12",
               "Nearly three years after the Tarnby floods began, the strongest storm yet has arrived on the coast. "
               "Forecasters named the strongest storm on the coast in three years Aurelia, and ferries to Lake Varn "
               "were cancelled.")]


def test_a_sentence_that_only_restates_the_question_does_not_answer_it(tmp_path, settings, embedder):
    with indexed(tmp_path, STORM, settings, embedder) as assistant:
        answer = assistant.ask("Nearly three years after the Tarnby floods began, the strongest storm yet has "
                               "arrived on the coast. What is it called?")
        assert answer.citations and not answer.abstained
        assert not [c.quote for c in answer.citations if c.quote.startswith("Nearly three years")]
        assert "Aurelia" in answer.citations[0].quote
        check_quotes(assistant, answer)
        # a yes/no question is settled by the sentence that says so, in its own words
        settled = assistant.ask("Has the strongest storm yet arrived on the coast?")
        assert "strongest storm yet has arrived" in settled.text


def test_a_title_held_from_a_past_edition_does_not_say_who_won(tmp_path, settings, embedder):
    # "Who won the World Cup?" of a collection ending before the final quoted "France and Germany, the last two World
    # Cup champions, ..."
    before = [{**CUP[0], "text": "The Harbour Hawks, the last two Ostmark Cup champions, joined a charity campaign "
                                 "before the Ostmark Cup final. Tickets for the final had sold out within an hour."}]
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    with indexed(tmp_path / "before", before, settings, embedder) as assistant:
        assert assistant.ask("Which team won the Ostmark Cup?").abstained
    after = [{**CUP[0], "text": "The Valley Owls beat the defending champions, the Harbour Hawks, to win the Ostmark "
                                "Cup on Sunday. Tickets for the final had sold out within an hour."}]
    with indexed(tmp_path / "after", after, settings, embedder) as assistant:
        assert "Valley Owls" in assistant.ask("Which team won the Ostmark Cup?").citations[0].quote


# news names a thing in one sentence and describes it in the next ("Squid Game" is coming back. / ... the wildly
# popular South Korean show is green lit for a second season)
SHOW = [story("Harbour Lights returns", "2022-06-12",
              "\u201cHarbour Lights\u201d is officially coming back.\n\nThe Coast Channel announced Sunday that the "
              "wildly popular fishing series is renewed for a second season.\n\nFilming starts in Tarnby in May.")]


def test_a_sentence_describing_what_is_asked_is_quoted_after_the_one_naming_it(tmp_path, settings, embedder):
    with indexed(tmp_path, SHOW, settings, embedder) as assistant:
        answer = assistant.ask("Which wildly popular series was renewed for a second season?")
        quotes = [c.quote for c in answer.citations]
        assert quotes[:2] == ["\u201cHarbour Lights\u201d is officially coming back.",
                              "The Coast Channel announced Sunday that the wildly popular fishing series is renewed "
                              "for a second season."], answer.text
        check_quotes(assistant, answer)
        # a question asking no name is answered by the description alone
        when = assistant.ask("When was the wildly popular fishing series renewed for a second season?")
        assert not any("officially coming back" in c.quote for c in when.citations), when.text


def test_a_sentence_naming_who_as_he_or_she_is_quoted_after_the_one_naming_them(tmp_path, settings, embedder):
    # the pick names someone else ("after Piet Lund retired"): who "she" is, only the sentence before says
    harbour = [story("Tarnby harbour", "2022-06-13",
                     "Anna Sorel grew up on a fishing boat and sailed before she could ride a bike. She was chosen "
                     "as the new harbour master of Tarnby by the town council after Piet Lund retired.")]
    first, text = _first_quote(tmp_path, settings, embedder, harbour, "Who is the harbour master of Tarnby?")
    assert first.startswith("Anna Sorel grew up") and "She was chosen" in text, text


# news states the event first: the opening sentence (the lede) answers before an equally relevant later one
FERRY = [story("Kessel ferry", "2022-06-13",
               "Photo: Coast Courier\n\nThe Kessel ferry ran aground near Tarnby.\n\n"
               "Passengers of the Kessel ferry near Tarnby were later taken ashore by lifeboats from Orlen.")]


def _first_quote(work, settings, embedder, articles: list[dict], question: str, **options) -> tuple[str, str]:
    """(the first quote, the whole answer) of `question` asked of `articles`, its quotes checked."""
    with indexed(work, articles, settings, embedder) as assistant:
        answer = assistant.ask(question, **options)
        check_quotes(assistant, answer)
        return answer.citations[0].quote, answer.text


@pytest.mark.parametrize("bonus", [answer_module.LEDE_BONUS, 0.0])
def test_the_opening_sentence_answers_before_an_equally_relevant_later_one(tmp_path, settings, embedder, monkeypatch,
                                                                           bonus):
    monkeypatch.setattr(answer_module, "LEDE_BONUS", bonus)
    first, text = _first_quote(tmp_path, settings, embedder, FERRY, "Tell me about the Kessel ferry near Tarnby.")
    # the premise: without the bonus the later sentence leads
    assert first.startswith("The Kessel ferry ran aground" if bonus else "Passengers"), text


def test_the_number_a_question_names_is_found_whole(tmp_path, settings, embedder):
    # the names gate looks for each number of the question: "200,000" as one ("200" and "000" matched "1,200")
    recalls = [story("Kessel recall", "2022-09-16", "Kessel Motors recalled 200,000 pickup trucks over a brake "
                     "fault, the company said on Monday."),
               story("Orlen recall", "2022-09-15", "Orlen Auto recalled 1,200 pickup trucks over a faulty "
                     "tailgate, and 000 units were spared.")]
    with indexed(tmp_path, recalls, settings, embedder) as assistant:
        answer = assistant.ask("Which automaker recalled 200,000 pickup trucks?")
        assert answer.citations and answer.citations[0].quote.startswith("Kessel Motors recalled"), answer.text
        check_quotes(assistant, answer)
        assert assistant.ask("Which automaker recalled 300,000 pickup trucks?").abstained


def test_an_abbreviation_written_with_dots_counts_as_mentioned(tmp_path, settings, embedder):
    # the names gate dropped every article writing "U.S." for a question naming "US" (the tokenizer keeps no term
    # of "U.S.")
    films = [story("Weekend box office", "2022-07-11",
                   "The fishing film Harbour Lights led the U.S. box office this weekend with $40 million.")]
    with indexed(tmp_path, films, settings, embedder) as assistant:
        answer = assistant.ask("Which film led the US box office this weekend?", dates=False)
        assert not answer.abstained and "Harbour Lights" in answer.text, answer.text
        # a name no article holds is still reported
        assert "none of the articles found mentions UK" in assistant.ask(
            "Which film led the UK box office this weekend?", dates=False).text


# a quiz-style question states what it knows before asking: every report of the event restates that context, and
# only the asking sentence says which of them answers
RECORD = [story("Lind scores her 40th", "2022-10-05",
                "Fans filled the stadium in Tarnby on Tuesday night.\n\n"
                "Valley Owls striker Anna Lind scored her 40th goal against the Harbour Hawks in Tarnby, coach Per "
                "Olsen said.\n\n"
                "The Valley Owls striker's 40th goal came in the second half in Tarnby.\n\n"
                "Greta Moss holds the overall league record of 52 goals in a season.")]


@pytest.mark.parametrize("asking", [answer_module.ASKING, 1.0])
def test_the_asking_sentence_of_a_question_weighs_more_than_its_context(tmp_path, settings, embedder, monkeypatch,
                                                                        asking):
    monkeypatch.setattr(answer_module, "ASKING", asking)
    first, text = _first_quote(tmp_path, settings, embedder, RECORD, "Valley Owls striker Anna Lind scored her 40th "
                               "goal this week. Who holds the overall league record for a season?", dates=False)
    # the premise: weighed alike, a sentence restating the context leads
    assert ("Greta Moss" in first) == (asking > 1.0), text


def _hit(article_id: str, title: str, text: str, dense: float) -> Hit:
    article = Article(article_id, title, text, source="Coast Courier", published="2022-07-01")
    return Hit(Chunk(f"{article_id}:0", article_id, 0, len(text), text), article, 1.0, dense=dense)


@pytest.mark.parametrize("shared", [answer_module.SHARED_TERMS, 99])
def test_one_word_in_common_with_the_question_does_not_answer_it(monkeypatch, shared):
    # "How many bones are in the adult human hand?" was answered with "the three major bones" of a dinosaur skull,
    # a passage close enough to the question to pass the relevance threshold on that one word
    monkeypatch.setattr(answer_module, "SHARED_TERMS", shared)
    answerer = answer_module.Extractive(Words().tokens, lambda terms: {t: 2.0 for t in terms})  # words weigh alike
    skull = _hit("s", "Dinosaur skeleton sold", "The skull holds three major bones around the eye, the auction house "
                 "said.", dense=0.9)
    draft = answerer.draft("How many bones are in the adult human hand?", [skull])
    # the premise: without the rule, the one word answers
    assert bool(draft.abstention) == (shared < 99), draft
    # two words in common, or the article's title holding the second, answer
    hand = _hit("h", "Hand surgery", "An adult hand holds 27 bones, the surgeon said.", dense=0.9)
    assert not answerer.draft("How many bones are in the adult human hand?", [hand]).abstention
    titled = _hit("t", "The human hand", "It holds 27 bones, the surgeon said.", dense=0.9)
    assert not answerer.draft("How many bones are in the adult human hand?", [titled]).abstention


@pytest.mark.parametrize("question, noun", [
    ("Approximately how many book titles have been banned in US schools?", "titles"),
    ("How many months was her detention extended?", "months"),
    ("How many people died in the crush?", "people"),
    ("How many of the hostages were freed?", "hostages"),
    ("How much did the bridge cost?", ""),
])
def test_the_word_a_how_many_question_counts(question, noun):
    assert counted(question) == noun


# "how many book titles?": of two sentences with numbers, the one whose number counts titles answers first
BANS = [story("Library challenges", "2022-09-20",
              "Library challenges rose sharply in Tarnby schools this year, the Tarnby readers' group said.\n\n"
              "The Tarnby readers' group counted 2,532 book challenges in Tarnby schools this year.\n\n"
              "Those challenges were aimed at 1,648 different titles, the group said.")]


@pytest.mark.parametrize("bonus", [answer_module.COUNT_BONUS, 0.0])
def test_a_number_counting_what_is_asked_answers_first(tmp_path, settings, embedder, monkeypatch, bonus):
    monkeypatch.setattr(answer_module, "COUNT_BONUS", bonus)
    first, text = _first_quote(tmp_path, settings, embedder, BANS, "How many book titles were challenged in Tarnby "
                               "schools this year?", dates=False)
    # the premise: without the bonus the sentence counting challenges leads
    assert ("1,648" in first) == (bonus > 0), text
