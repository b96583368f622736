"""News-aware answers (issue 8): dates in questions, who said it, timelines, conflicting reports."""

from __future__ import annotations

import json
import shutil
from datetime import date

import pytest

from rag import Assistant, Filters
from rag.dates import find_range, sentence_date, without_phrase
from rag.news import attribution, figures
from rag.store import Store
from tests.conftest import DOVRIN, HARKAVY, MARIUPOL_SEED, check_quotes, write_jsonl

ARDELL = ("A passenger ferry sank on Lake Ardell on Wednesday morning. All 48 passengers were rescued by fishing "
          "boats, the coast guard said. The ferry Marisol had been in service for 31 years. Investigators are "
          "examining whether a cracked hull caused the sinking.")

# a three-article sequence about one town, two outlets disagreeing on one shelling, and an older story
NEWS = [
    *DOVRIN,
    *HARKAVY,
    # one wire story republished by three outlets, edited a little
    {"title": "Ferry sinks on Lake Ardell", "source": "Kestrel Wire", "published": "2022-03-02",
     "url": "https://kestrel.example/ardell-ferry", "text": ARDELL},
    {"title": "All 48 rescued as the Marisol sinks", "source": "Valley Post", "published": "2022-03-02",
     "url": "https://valley.example/marisol", "text": ARDELL + " The Valley Post contributed to this report."},
    {"title": "Lake Ardell ferry lost", "source": "Quill Herald", "published": "2022-03-03",
     "url": "https://quill.example/ardell", "text": "A PASSENGER ferry sank on Lake Ardell on Wednesday morning, "
     "officials said." + ARDELL[ARDELL.index(" All 48"):]},
    {"title": "Quarrow wins the cup", "source": "Sport Daily", "published": "2022-02-10",
     "url": "https://sport.example/quarrow",
     "text": "Quarrow Rovers won the regional cup final 2-1 in extra time. Their coach said the win was for the town."},
]


@pytest.fixture(scope="module")
def news(tmp_path_factory, settings, embedder):
    work = tmp_path_factory.mktemp("news")
    folder = work / "articles"
    folder.mkdir()
    write_jsonl(folder / "news.jsonl", NEWS)
    shutil.copy(MARIUPOL_SEED, folder / MARIUPOL_SEED.name)
    assistant = Assistant(Store(work / "index"), embedder, settings)
    assistant.index([folder])
    yield assistant
    assistant.close()


# --- dates in questions ---------------------------------------------------------------------------

REF = date(2022, 3, 5)  # a Saturday


@pytest.mark.parametrize("question, since, until", [
    ("what happened this week?", date(2022, 2, 27), REF),  # the seven days up to REF, not from Monday
    ("what happened yesterday in Kyiv?", date(2022, 3, 4), date(2022, 3, 4)),
    ("what is the news today?", REF, REF),
    ("what happened last week?", date(2022, 2, 21), date(2022, 2, 27)),
    ("what happened in March 2022?", date(2022, 3, 1), date(2022, 3, 31)),
    ("what happened in Kherson since Tuesday?", date(2022, 3, 1), None),
    ("what happened last month?", date(2022, 2, 1), date(2022, 2, 28)),
    ("what has happened to Kherson since March?", date(2022, 3, 1), None),
    ("what happened before 2022-03-01?", None, date(2022, 2, 28)),
    ("what happened after 2022-03-01?", date(2022, 3, 2), None),
    ("what happened until March 3?", None, date(2022, 3, 3)),
    ("what happened after February?", date(2022, 3, 1), None),
    ("what happened over the past 3 days?", date(2022, 3, 2), REF),
    # "the last year", like "the past year", is the days up to today; "last year" alone the calendar year before
    ("how many books were banned over the last year?", date(2021, 3, 5), REF),
    ("what happened in the last month?", date(2022, 2, 3), REF),
    ("how many books were banned last year?", date(2021, 1, 1), date(2021, 12, 31)),
])
def test_time_words_become_date_ranges(question, since, until):
    found = find_range(question, REF)
    assert (found.since, found.until) == (since, until)


@pytest.mark.parametrize("question", ["what may happen to prices?", "protesters march in Kyiv",
                                      "Which team won the 2022 Stanley Cup?", "who won the cup?"])
def test_words_that_are_not_dates_are_left_alone(question):
    assert find_range(question, REF) is None


@pytest.mark.parametrize("question, rest", [
    ("what happened in Kherson since Tuesday?", "what happened in Kherson?"),
    ("As of this week, which item can adults buy?", "Which item can adults buy?"),  # not "As of, which ..."
    ("What is the inflation rate as of today?", "What is the inflation rate?"),
])
def test_time_words_are_taken_out_of_the_question(question, rest):
    assert without_phrase(question, find_range(question, REF)) == rest


def test_sentence_dates_resolve_against_publication():
    assert sentence_date("The bridge collapsed on Wednesday.", date(2022, 3, 3)) == date(2022, 3, 2)
    assert sentence_date("Floodwater reached the town on Monday.", date(2022, 3, 1)) == date(2022, 2, 28)
    assert sentence_date("On March 3, 2022 troops entered.", None) == date(2022, 3, 3)
    assert sentence_date("It rained.", date(2022, 3, 3)) is None


def test_this_week_filters_by_date_relative_to_newest_article(news):
    answer = news.ask("what happened this week?")
    assert not answer.abstained
    # the collection is older than today: "this week" is the newest article's week (2022-02-28 to 2022-03-06)
    assert answer.dates is not None and answer.dates.reference_kind == "newest article"
    assert (answer.dates.since, answer.dates.until, answer.dates.reference) == ("2022-02-28", "2022-03-06",
                                                                              "2022-03-06")
    assert "newest article" in answer.notice and "this week" in answer.notice
    assert answer.hits and all("2022-02-28" <= h.article.published <= "2022-03-06" for h in answer.hits)
    assert "Quarrow" not in answer.text and all(c.published >= "2022-02-28" for c in answer.citations)
    assert answer.to_dict()["dates"]["since"] == "2022-02-28"
    assert answer.question == "what happened this week?"
    check_quotes(news, answer)


def test_relative_words_count_from_today_when_the_collection_is_current(news):
    newest = news.newest_published()
    assert newest == date(2022, 3, 6)
    _, filters, asked = news.question_dates("what happened over the past 3 days?", None, today=date(2022, 3, 8))
    assert (filters.since, filters.until) == (date(2022, 3, 5), date(2022, 3, 8))
    assert asked.reference_kind == "today" and "today" in asked.note()
    # nothing in the week of 2022-03-14: read against the newest article instead
    _, filters, asked = news.question_dates("what happened this week?", None, today=date(2022, 3, 14))
    assert (filters.since, asked.reference_kind) == (date(2022, 2, 28), "newest article")


def test_a_time_after_today_is_not_a_date_filter(news):
    # when an event is to be, not when it was reported: no article is published after today
    question = "Which ferry line plans to replace the Marisol in 2024?"
    assert news.question_dates(question, None, today=date(2022, 3, 8)) == (question, None, None)
    assert news.question_dates("What happened last month?", None, today=date(2022, 3, 8))[1] is not None
    _, filters, asked = news.question_dates(question, None, today=date(2024, 6, 1))  # now a time reported in
    assert (filters.since, filters.until, asked.reference_kind) == (date(2024, 1, 1), date(2024, 12, 31), "")
    assert news.ask(question, today=date(2022, 3, 8)).hits  # searched as words, not filtered to nothing


def test_an_explicit_date_filter_wins_over_the_question(news):
    answer = news.ask("what happened in Dovrin this week?", filters=Filters(since=date(2022, 3, 5)))
    assert answer.dates is None
    assert all(h.article.published >= "2022-03-05" for h in answer.hits)


def test_in_month_year_is_absolute(news):
    answer = news.ask("what happened in Harkavy in March 2022?")
    assert answer.dates.reference_kind == "" and answer.dates.until == "2022-03-31"
    assert "Harkavy" in answer.text


def test_a_question_with_no_topic_and_no_time_still_abstains(news):
    answer = news.ask("what happened?")
    assert answer.dates is None and answer.abstained


def test_dates_can_be_turned_off(news):
    assert news.ask("what happened this week?", dates=False).dates is None


# --- who said it ----------------------------------------------------------------------------------

@pytest.mark.parametrize("passage, who", [
    ("According to Mariupol mayor Vadym Boychenko, at least 128 persons were injured.",
     "Vadym Boychenko, mayor of Mariupol"),
    ("At least 128 people were injured, according to regional governor Oleh Marchuk.",
     "Oleh Marchuk, regional governor"),
    ("At least 150 people were injured when shelling struck Harkavy overnight, the health ministry said.",
     "health ministry"),
    ("CNN reported that troops entered the city.", "CNN"),
    ("The bridge collapsed after days of flooding, officials said.", "officials"),
    ("The troops are tired, said Ivan Petrov.", "Ivan Petrov"),
    ("Harbour master Piet Zoller said the old diesel ferry will be sold.", "Piet Zoller, harbour master"),
    ("Ukrainian President Volodymyr Zelensky said talks would continue.", "Volodymyr Zelensky, Ukrainian president"),
    ("The river rose two metres in a day.", ""),
    ("He said the town was safe.", ""),
    ("Mayor Ilse Varga opened the Quillon public library on Monday.", ""),
])
def test_attributions_are_named(passage, who):
    assert attribution(passage) == who


def test_mariupol_injuries_are_attributed_to_the_mayor(news):
    answer = news.ask("what happened in Mariupol?")
    cited = [c for c in answer.citations if "128" in c.quote]
    assert cited and cited[0].attribution == "Vadym Boychenko, mayor of Mariupol"
    assert "According to Mariupol mayor Vadym Boychenko" in answer.text  # the answer keeps the attribution
    assert answer.to_dict()["citations"][cited[0].n - 1]["attribution"] == "Vadym Boychenko, mayor of Mariupol"
    check_quotes(news, answer)


def test_unattributed_claims_get_no_attribution(news):
    answer = news.ask("How many residents did the floodwater force from their homes in Dovrin?")
    cited = [c for c in answer.citations if "600 residents" in c.quote]
    assert cited and all(c.attribution == "" for c in cited)


# --- timelines --------------------------------------------------------------------------------------

def test_a_story_over_three_articles_gives_a_dated_timeline_in_order(news):
    answer = news.ask("what happened in Dovrin?")
    assert not answer.abstained
    points = answer.timeline
    dates = [p.date for p in points]
    assert dates == sorted(dates) and len(points) >= 3
    # "on Monday" in an article of Tuesday 2022-03-01, "on Wednesday" on 2022-03-03, "on Saturday" on 2022-03-06
    by_date = {p.date: p for p in points}
    assert "600 residents" in by_date["2022-02-28"].text
    assert "bridge in Dovrin collapsed" in by_date["2022-03-02"].text
    assert "clearing mud" in by_date["2022-03-05"].text
    assert "Nobody was on the bridge" in by_date["2022-03-02"].text  # continues the sentence before it
    for p in points:  # every point is cited, and its text is quoted by those citations
        assert p.citations
        assert all(any(part in answer.citations[n - 1].quote for n in p.citations) for part in p.text.split(". "))
    # the answer itself reads in order too
    assert answer.text.index("600 residents") < answer.text.index("bridge in Dovrin") < answer.text.index("mud")
    assert answer.to_dict()["timeline"][0] == {"date": points[0].date, "text": points[0].text,
                                              "citations": list(points[0].citations)}
    check_quotes(news, answer)


def test_questions_not_about_change_over_time_have_no_timeline(news):
    answer = news.ask("How many residents did the floodwater force from their homes in Dovrin?")
    assert answer.timeline == () and answer.to_dict()["timeline"] == []


def test_no_timeline_when_no_dates_are_known(news):
    answer = news.ask("what happened in Mariupol?")  # the seed article has no publication date
    assert not answer.abstained and answer.timeline == ()


# --- conflicting reports ----------------------------------------------------------------------------

def test_two_casualty_figures_for_one_shelling_are_both_given_with_sources(news):
    answer = news.ask("How many people were injured in the shelling of Harkavy?")
    assert not answer.abstained
    assert "128 people were injured" in answer.text and "150 people were injured" in answer.text
    by_source = {c.source: c for c in answer.citations}
    assert "128" in by_source["Kestrel Wire"].quote and "150" in by_source["Valley Post"].quote
    note = answer.text[answer.text.index("(Note, not a quote:"):]
    assert "differ" in note
    assert f"128 injured in Kestrel Wire, 2022-03-04, citing Oleh Marchuk, regional governor " \
           f"[{by_source['Kestrel Wire'].n}]" in note
    assert f"150 injured in Valley Post, 2022-03-05, citing health ministry [{by_source['Valley Post'].n}]" in note
    check_quotes(news, answer)


def test_agreeing_or_single_reports_get_no_note(news):
    for question in ("what happened in Mariupol?", "How many residents did the floodwater force from their homes?"):
        answer = news.ask(question)
        assert not answer.abstained and "Note, not a quote" not in answer.text


@pytest.mark.parametrize("sentence, found", [
    ("At least 128 persons were injured in the shelling.", [(128, "injured")]),
    ("Three soldiers and 12 civilians were killed.", [(12, "killed")]),
    ("The dam failed, flooding 412 homes.", [(412, "homes")]),
    ("In 2022 the town had a festival.", []),
])
def test_figures_are_read_from_sentences(sentence, found):
    assert figures(sentence) == found


# --- syndicated copies ------------------------------------------------------------------------------

def test_copies_of_one_story_are_cited_once_and_named(news):
    answer = news.ask("How many passengers were rescued when the ferry Marisol sank on Lake Ardell?")
    assert not answer.abstained and "48 passengers" in answer.text
    ardell = [c for c in answer.citations if "Ardell" in c.quote or "Marisol" in c.quote or "48" in c.quote]
    assert len({c.article_id for c in ardell}) == 1  # one copy quoted
    outlets = {"Kestrel Wire", "Valley Post", "Quill Herald"}
    cited = ardell[0]
    assert set(cited.also_reported_by) == outlets - {cited.source}
    assert "also reported by" in answer.text
    assert answer.to_dict()["citations"][cited.n - 1]["also_reported_by"] == list(cited.also_reported_by)
    check_quotes(news, answer)


def test_search_does_not_fill_its_top_results_with_copies(news):
    stories = [h.article.id for h in news.search("ferry Marisol sank on Lake Ardell", k=4)]
    copies = [h.article.id for h in news.search("ferry Marisol sank on Lake Ardell", k=4, one_copy=False)]
    ardell = {a.id for a in (h.article for h in news.search("ferry Marisol", k=20, one_copy=False))
              if "Ardell" in a.text}
    assert len(ardell) == 3
    assert len(set(copies[:4]) & ardell) >= 2  # without grouping, copies crowd the top
    assert len(set(stories) & ardell) == 1


def test_copies_are_grouped_at_index_time_and_counted(news):
    ardell = {a for a in news.article_ids() if "Ardell" in news.article(a).text}
    stories = news.store.catalogue.stories()
    assert set(stories) == ardell and len(set(stories.values())) == 1
    # the story is named after its earliest copy
    earliest = min(ardell, key=lambda a: (news.article(a).published, a))
    assert set(stories.values()) == {earliest}
    stats = news.stats()
    assert (stats["story_groups"], stats["syndicated_copies"]) == (1, 2)
    top = news.search("ferry Marisol sank on Lake Ardell", k=4)[0]
    assert top.article.id in ardell and {a.id for a in top.copies} == ardell - {top.article.id}


def test_regrouping_follows_edits_prunes_and_old_indexes(tmp_path, settings, embedder):
    folder = tmp_path / "articles"
    folder.mkdir()
    wire = [a for a in NEWS if "Ardell" in a["text"]]
    for i, a in enumerate(wire):
        (folder / f"copy{i}.json").write_text(json.dumps(a), encoding="utf-8")
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    try:
        assistant.index([folder])
        assert assistant.stats()["syndicated_copies"] == 2
        # one outlet rewrites its version into another story: it leaves the group
        (folder / "copy2.json").write_text(json.dumps({**wire[2], "text": NEWS[-1]["text"]}), encoding="utf-8")
        assistant.index([folder])
        assert (assistant.stats()["story_groups"], assistant.stats()["syndicated_copies"]) == (1, 1)
        (folder / "copy1.json").unlink()
        assistant.index([folder], prune=True)
        assert assistant.stats()["story_groups"] == 0 and assistant.store.catalogue.stories() == {}
        # an index written before story marks were kept gets them on its next run, with nothing re-embedded
        (folder / "copy1.json").write_text(json.dumps(wire[1]), encoding="utf-8")
        assistant.index([folder])
        with assistant.store.catalogue.db as db:
            db.execute("DELETE FROM marks")
            db.execute("DELETE FROM stories")
            db.execute("DELETE FROM meta WHERE key = 'marks'")
        before = assistant.store.catalogue.generation()
        report = assistant.index([folder])
        assert report.chunks_embedded == 0 and assistant.stats()["story_groups"] == 1
        assert assistant.store.catalogue.generation() == before + 1  # other processes reload to see the groups
    finally:
        assistant.close()


def test_one_outlets_template_pages_are_not_one_story():
    """Scraped pages whose text is only a sign-up form or a video player share it word for word, under
    unrelated titles: they are not copies of one story. The same text from two outlets, or under one
    title, is."""
    from rag.news import marks, story_groups
    from rag.types import Article

    form = ("We will use the details you have shared to manage your registration. You agree to the processing, "
            "storage, sharing and use of this information for the purposes described in the privacy notice. "
            "You can unsubscribe at any time using the link in any newsletter.")
    pages = [Article("a", "Rides continue at Shanghai Disney | The Week UK", form, "theweek.co.uk"),
             Article("b", "Will Omicron trigger a lockdown? | The Week UK", form, "theweek.co.uk"),
             Article("c", "Rides continue at Shanghai Disney - The Week", form, "theweek.co.uk"),
             Article("d", "Ferry sinks on Lake Ardell", ARDELL, "Kestrel Wire"),
             Article("e", "All 48 rescued as the Marisol sinks", ARDELL, "Valley Post"),
             Article("f", "Quarrow wins the cup", NEWS[-1]["text"], "Sport Daily")]
    by_id = {a.id: a for a in pages}
    groups = story_groups({a.id: marks(a.text) for a in pages}, list(by_id), by_id.__getitem__)
    assert groups == {"a": "a", "c": "a", "d": "d", "e": "d"}


def test_llm_answers_name_the_other_outlets_too():
    from rag.answer import with_copies
    from rag.types import Answer, Article, Chunk, Citation, Hit

    wire = [Article(f"w{i}", a["title"], a["text"], a["source"], a["published"], a["url"])
            for i, a in enumerate(a for a in NEWS if "Ardell" in a["text"])]
    hit = Hit(Chunk("c", "w0", 0, 40, wire[0].text[:40]), wire[0], 1.0, copies=tuple(wire[1:]))
    cited = Citation(1, "w0", wire[0].title, wire[0].source, wire[0].published, wire[0].url, "",
                     wire[0].text[:40], 0, 40)
    answer = with_copies(Answer("q", "A passenger ferry sank on Lake Ardell [1].", (cited,), hits=(hit,)))
    assert answer.citations[0].also_reported_by == ("Valley Post", "Quill Herald")
    assert answer.text.endswith("(Note, not a quote: the same story [1] was also reported by Valley Post, "
                                "Quill Herald.)")
    assert with_copies(answer) == answer  # once


def test_near_duplicates_are_grouped_and_different_stories_are_not():
    from rag.news import same_story, shingles

    a = shingles(ARDELL)
    assert same_story(a, shingles(ARDELL + " The Valley Post contributed to this report."))
    assert same_story(a, shingles("A PASSENGER ferry sank on Lake Ardell on Wednesday morning, officials said."
                                  + ARDELL[ARDELL.index(" All 48"):]))
    assert not same_story(a, shingles(NEWS[0]["text"] * 2))


def test_chat_and_stream_read_time_words_too(news):
    from rag import Message

    chat = news.chat([Message("user", "what happened in Harkavy in March 2022?")])
    assert chat.dates is not None and chat.dates.since == "2022-03-01" and "Harkavy" in chat.text
    streamed = news.stream("what happened this week?").result()
    assert streamed.dates is not None and streamed.dates.reference_kind == "newest article"
    assert streamed.question == "what happened this week?" and "this week" in streamed.notice
    follow = news.stream_chat([Message("user", "what happened in Dovrin?"), Message("assistant", "..."),
                               Message("user", "and in Harkavy last week?")]).result()
    assert follow.dates is not None and follow.dates.phrase == "last week"


# --- story groups kept up to date (issue 13: adding a few articles does not regroup the whole collection) -----

class _StoredMarks:
    """The stored marks of an in-memory collection, read the way the catalogue gives them."""

    def __init__(self, articles: dict) -> None:
        from rag.news import marks

        self.marks = {a.id: marks(a.text) for a in articles.values()}

    def postings(self, hashes) -> dict[int, list[str]]:
        out = {h: [] for h in hashes}
        for a, hs in self.marks.items():
            for h in hs:
                if h in out:
                    out[h].append(a)
        return out

    def marks_of(self, ids) -> dict[str, list[int]]:
        return {a: self.marks[a] for a in ids if a in self.marks}

    def counted(self, low: int, high: int) -> list[int]:
        from collections import Counter

        return [h for h, n in Counter(h for hs in self.marks.values() for h in hs).items() if low <= n <= high]


def _regroup(before: dict, articles: dict, came: set, went: set) -> tuple[dict, dict]:
    """(the groups brought up to date from `before`, the groups of the whole collection)."""
    from rag.news import MarkLookup, story_groups, update_story_groups

    stored = _StoredMarks(articles)
    order = sorted(articles, key=lambda a: (articles[a].published, a))
    lookup = MarkLookup(stored.postings, stored.marks_of, stored.counted)
    return (update_story_groups(before, came, went, order, lookup, articles.__getitem__),
            story_groups(stored.marks, order, articles.__getitem__))


def test_story_groups_updated_a_batch_at_a_time_equal_a_full_regrouping():
    """Two wire stories with copies; an article carrying both joins their groups into one; removing it splits
    them again; an edited copy leaves its group. After each change the updated groups are the full ones."""
    from rag.types import Article

    other = NEWS[-1]["text"] + " " + NEWS[0]["text"]
    joiner = ARDELL + " " + other
    arts = {}
    steps = [  # (articles that come, ids that go)
        ([Article("k", "Ferry sinks", ARDELL, "Kestrel", "2022-03-02"), Article("z", "Cup", "Nothing alike.", "Z")],
         []),
        ([Article("v", "Marisol sinks", ARDELL + " More.", "Valley", "2022-03-03"),
          Article("s", "Rovers win", other, "Sport", "2022-02-10")], []),
        ([Article("q", "Rovers win the cup", other + " Report.", "Quill", "2022-02-11")], []),
        ([Article("j", "Ferry and cup", joiner, "Joined Press", "2022-01-01")], []),  # joins the two groups
        ([], ["j"]),  # removed: two groups again
        ([Article("v", "Marisol sinks", NEWS[1]["text"], "Valley", "2022-03-03")], ["v"]),  # edited: it leaves
    ]
    before: dict = {}
    seen = []
    for came, went in steps:
        for gone in went:
            arts.pop(gone)
        arts.update({a.id: a for a in came})
        before, full = _regroup(before, arts, {a.id for a in came}, set(went))
        assert before == full
        seen.append(len(set(full.values())))
    assert seen == [0, 1, 2, 1, 2, 1]
    assert before == {"s": "s", "q": "s"}


@pytest.mark.parametrize("seed", range(6))
def test_story_groups_updated_through_common_marks_equal_a_full_regrouping(seed, monkeypatch):
    """With a low `COMMON_MARK`, marks keep crossing it as articles come and go (a pair of unchanged articles
    gains or loses a counted mark): random collections of shared paragraphs, changed a few at a time, end
    every step with exactly the full groups."""
    import random

    from rag import news
    from rag.types import Article

    monkeypatch.setattr(news, "COMMON_MARK", 3)
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    paragraphs = [" ".join(rng.choices(words, k=40)) for _ in range(5)]

    def fresh(i: int) -> Article:
        text = " ".join(rng.sample(paragraphs, rng.randint(1, 3))) + " " * rng.randint(0, 1) + rng.choice(words)
        return Article(f"a{i}", f"title {rng.randint(0, 3)}", text, rng.choice("PQR"), f"2022-01-{rng.randint(1, 9)}")

    arts: dict = {}
    before: dict = {}
    for step in range(12):
        came = [fresh(rng.randint(0, 14)) for _ in range(rng.randint(1, 3))]
        went = rng.sample(sorted(arts), min(len(arts), rng.randint(0, 2)))
        went = [a for a in went if a not in {c.id for c in came}]
        for gone in went:
            arts.pop(gone)
        replaced = {c.id for c in came} & set(arts)
        arts.update({a.id: a for a in came})
        before, full = _regroup(before, arts, {a.id for a in came}, set(went) | replaced)
        assert before == full, step


def test_an_index_run_regroups_only_what_changed(tmp_path, settings, embedder, monkeypatch):
    """`rag index` adding, editing or pruning a few articles reads the marks of those and their candidates, not
    of the whole collection, and stores the groups a full regrouping finds."""
    from rag.catalogue import SqliteCatalogue
    from rag.news import story_groups

    folder = tmp_path / "articles"
    folder.mkdir()
    write_jsonl(folder / "rest.jsonl", [a for a in NEWS if "Ardell" not in a["text"]])
    assistant = Assistant(Store(tmp_path / "index"), embedder, settings)
    whole_reads, read_whole = [], SqliteCatalogue.marks
    monkeypatch.setattr(SqliteCatalogue, "marks", lambda self: whole_reads.append(1) or {})
    wire = [a for a in NEWS if "Ardell" in a["text"]]
    try:
        assistant.index([folder])
        steps = [lambda i=i: write_jsonl(folder / f"copy{i}.jsonl", [wire[i]]) for i in range(3)]
        steps.append(lambda: write_jsonl(folder / "copy1.jsonl", [{**wire[1], "text": NEWS[-1]["text"]}]))
        steps.append(lambda: (folder / "copy0.jsonl").unlink())
        found = []
        for step in steps:
            step()
            assistant.index([folder], prune=True)
            catalogue = assistant.store.catalogue
            stored = catalogue.stories()
            full = story_groups(read_whole(catalogue), catalogue.ids_by_date(), catalogue.article)
            assert stored == full
            found.append(len(stored))
        assert whole_reads == [] and found == [0, 2, 3, 4, 2]  # the edited copy is now the cup story's
    finally:
        assistant.close()
