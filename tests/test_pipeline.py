"""One answer pipeline (issue 14 §5): any answerer's draft is grounded and enriched the same way.

`Paraphraser`, an answerer defined only here, writes its own sentences (neither quotes nor markers), each
resting on the passages it names; plugged into the `Assistant` it gets the names gate, grounding (its
unsupported sentences dropped, exact citations), differing figures, a timeline and the dates notice with no
change to `rag/`. The differing-figures rule is one: the extractive, the LLM and this answerer give the same note.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pytest

from rag.api import Assistant
from rag.store import Store
from rag.types import Draft, DraftSentence, Hit
from tests.conftest import DOVRIN, HARKAVY, check_quotes, write_jsonl
from tests.llm_servers import ScriptedLLM

HARKAVY_Q = "How many people were injured in the shelling of Harkavy?"
NOTE = "(Note, not a quote: the reports differ on the number injured"
Write = Callable[[str, list[Hit]], list[tuple[str, str]]]


class Paraphraser:
    """A third answerer: for each (sentence, phrase) of `write`, the sentence resting on the passage holding
    `phrase`. It checks nothing and cites nothing itself; `asked` records what it was given."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.asked: list[tuple[str, list[Hit]]] = []

    def draft(self, question: str, hits: list[Hit], focus: str = "", dated: bool = False) -> Draft:
        self.asked.append((question, hits))
        return Draft(question, tuple(hits), tuple(
            DraftSentence(text, tuple(i for i, h in enumerate(hits) if phrase in h.chunk.text)[:1])
            for text, phrase in self.write(question, hits)))


@pytest.fixture(scope="module")
def news(tmp_path_factory, settings, embedder):
    work = tmp_path_factory.mktemp("pipeline")
    (work / "articles").mkdir()
    write_jsonl(work / "articles" / "news.jsonl", [*DOVRIN, *HARKAVY])
    assistant = Assistant(Store(work / "index"), embedder, settings)
    assistant.index([work / "articles"])
    yield assistant
    assistant.close()


@pytest.fixture
def plugged(news):
    """The news assistant with a `Paraphraser` in place of the configured answerer (the LLM's place)."""
    def plug(write: Write) -> Paraphraser:
        news.llm = Paraphraser(write)
        return news.llm
    yield plug
    news.llm = None


def _harkavy(question: str, hits: list[Hit]) -> list[tuple[str, str]]:
    return [("Shelling in Harkavy injured at least 128 people.", "At least 128"),
            ("At least 300 people were injured in Harkavy.", "At least 128"),  # a number the passage lacks
            ("Mayor Ivan Petrenko of Harkavy resigned after the shelling.", "At least 128"),  # names it lacks
            ("Rebuilding Harkavy will cost millions.", "no passage says this")]  # rests on none


def test_a_third_answerer_gets_grounding_and_differing_figures(news, plugged):
    paraphraser = plugged(_harkavy)
    answer = news.ask(HARKAVY_Q)
    stream = news.stream(HARKAVY_Q)
    assert "".join(stream) == stream.answer.text == answer.text  # streamed: the same answer, a piece at a time
    assert len(paraphraser.asked) == 2 and not answer.abstained and not answer.notice
    # its supported sentence, cited; the invented number, the invented name and the unfounded claim dropped
    assert answer.text.startswith("Shelling in Harkavy injured at least 128 people. [1] " + NOTE)
    assert "300" not in answer.text and "Petrenko" not in answer.text and "millions" not in answer.text
    kestrel, valley = answer.citations
    assert kestrel.quote == ("At least 128 people were injured in the shelling of Harkavy, according to regional "
                             "governor Oleh Marchuk.")
    assert valley.source == "Valley Post" and "150 people" in valley.quote  # the other side, cited by the pipeline
    assert "128 injured in Kestrel Wire" in answer.text and "150 injured in Valley Post" in answer.text
    assert answer.timeline == ()  # "how many" is not a timeline question
    check_quotes(news, answer)


def test_a_third_answerer_gets_a_timeline_and_the_dates_notice(news, plugged):
    plugged(lambda q, hits: [  # out of order: the timeline puts them by date
        ("Residents of Dovrin began clearing mud from the streets.", "clearing mud"),
        ("Floodwater forced 600 residents of Dovrin from their homes.", "Floodwater reached"),
        ("The old stone bridge in Dovrin collapsed after days of flooding.", "stone bridge")])
    answer = news.ask("what happened in Dovrin in March 2022?", today=date(2022, 3, 10))
    assert not answer.abstained
    assert answer.text.startswith("Residents of Dovrin began clearing mud from the streets. [1] Floodwater")
    assert [p.date for p in answer.timeline] == ["2022-02-28", "2022-03-02", "2022-03-05"]
    assert answer.dates is not None and answer.notice.startswith("Articles dated 2022-03-01 to 2022-03-31")
    check_quotes(news, answer)


def test_the_names_gate_comes_before_any_answerer(news, plugged):
    paraphraser = plugged(_harkavy)
    answer = news.ask("How many people were injured in the shelling of Kestrelmouth?")
    assert answer.abstained and answer.reason.startswith("none of the articles found mentions Kestrelmouth")
    assert paraphraser.asked == []  # not asked to draft from articles about another place


def test_an_answerer_citing_an_article_without_the_names_asked_is_gated(news):
    """The gate also runs on what an answer cites: a draft resting on an article that does not name the
    question's place abstains (a hand-made draft, as an answerer could give one)."""
    from rag.enrich import chain, enrich
    from rag.ground import ground

    hits = news.search("floodwater residents homes")
    draft = Paraphraser(lambda q, h: [("Floodwater forced 600 residents from their homes.", "Floodwater")])
    question = "How many residents of Harkavy left their homes?"
    grounded = ground(draft.draft(question, hits), news.answerer.tokens, news.answerer.idf)
    assert not grounded.abstained  # supported by its passage...
    answer = enrich(grounded, chain(news.answerer.tokens, news.answerer.naming))
    assert answer.abstained and "Harkavy" in answer.text  # ...which is not about Harkavy


def test_one_differing_figures_rule_for_every_answerer(news, plugged, settings):
    """The extractive answer, an LLM citing only one side, and the third answerer give the same note: the same
    figures, sources and quoted sentences (numbered by each answer's own citations)."""
    def sides(answer) -> set[tuple[str, str, str]]:
        note = answer.text[answer.text.index(NOTE):]
        return {(value, source, answer.citations[int(n) - 1].quote.split(". ")[0].rstrip("."))
                for value, source, n in re.findall(r"(\d+) injured in ([^,]+), [^\[]*\[(\d+)\]", note)}

    extractive = news.ask(HARKAVY_Q, use_llm=False)

    def reply(body: dict) -> str:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        n = re.search(r"\[(\d+)\] Shelling hits Harkavy", prompt).group(1)
        return f"At least 128 people were injured in the shelling of Harkavy, according to the regional governor [{n}]."

    with ScriptedLLM("openai", [reply]) as server:
        llm = Assistant(news.store, news.embedder, settings.model_copy(update={
            "llm": "openai:m", "llm_max_retries": 0, "llm_timeout": 5.0, "openai_base_url": server.url}))
        by_llm = llm.ask(HARKAVY_Q)
    plugged(_harkavy)
    third = news.ask(HARKAVY_Q)
    assert not by_llm.notice  # the LLM answered
    assert sides(extractive) == sides(by_llm) == sides(third) == {
        ("128", "Kestrel Wire", "At least 128 people were injured in the shelling of Harkavy, according to regional "
                                "governor Oleh Marchuk"),
        ("150", "Valley Post", "At least 150 people were injured when shelling struck Harkavy overnight, the health "
                               "ministry said")}
    for answer in (extractive, by_llm, third):
        check_quotes(news, answer)
