"""The web chat's polish (issue 12, items 9 and 13): one card per article, no timeline that repeats the answer,
plurals, example questions a person would ask, invalid dates said to be invalid, long questions not cut silently,
nothing covering the first message, date fields on screen, and uploads refused with their reason.

The browser tests reuse tests/test_web.py's fixtures (one app on a fresh index of seeds/ and the news fixtures).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rag.types import Citation, IndexReport, TimelinePoint
from tests.conftest import DOVRIN, MARIUPOL_SEED
from tests.test_web import DATED, ask, browser, page, served  # noqa: F401 (fixtures used by name)
from ui import web


def _cite(n: int, article_id: str, text: str, quote: str, **kw) -> Citation:
    start = text.index(quote)
    base = dict(n=n, article_id=article_id, title=f"Title {article_id}", source="Wire", published="2022-03-01",
                url="", path=f"{article_id}.txt", quote=quote, start=start, end=start + len(quote))
    base.update(kw)
    return Citation(**base)


# ---------------------------------------------------------------- one card per article

def test_two_citations_of_one_article_share_one_card_with_both_quotes_highlighted():
    text = ("Heavy shelling was reported from Mariupol. " + "Filler words here. " * 30
            + "Electricity has been restored in Mariupol. Bread was made overnight.")
    other = "The port of Velmora reopened on Wednesday."
    cites = (_cite(1, "a", text, "Heavy shelling was reported from Mariupol."),
             _cite(2, "b", other, "The port of Velmora reopened on Wednesday."),
             _cite(3, "a", text, "Electricity has been restored in Mariupol."))
    cards = web.cards_html(1, cites, {"a": text, "b": other})
    assert len(cards) == 2  # not three: [1] and [3] quote the same article
    first, second = cards
    assert first.count("Title a") == 1 and '<span class="rag-n">[1] [3]</span>' in first
    assert '<mark id="src-1-1" data-n="1">Heavy shelling' in first
    assert '<mark id="src-1-3" data-n="3">Electricity has been restored' in first
    assert first.count('class="rag-quote"') == 2  # far apart: two passages, each with its context
    assert '<sup class="rag-mark-n">[3]</sup>' in first  # which highlight is which
    assert "Velmora" in second and "[1]" not in second and '<mark id="src-1-2"' in second
    section = web.section_html({"turn": 1, "question": "q", "cards": cards, "quotes": 3, "abstained": False,
                                "seconds": 0.1, "note": ""})
    assert "2 articles, 3 quotes" in section


def test_quotes_close_together_share_one_passage():
    text = "Alpha one. Beta two. Gamma three. " * 3
    cites = [_cite(1, "a", text, "Alpha one."), _cite(2, "a", text, "Gamma three.")]
    [passage] = web.passages(text, cites, chars=50)
    assert [c.n for _, c in passage if c] == [1, 2]
    assert "".join(t for t, _ in passage).startswith("Alpha one. Beta two. Gamma three.")
    # a quote inside another keeps its own (empty) mark, so its [n] link still has a target
    inner = [_cite(1, "a", text, "Alpha one. Beta two."), _cite(2, "a", text, "Beta two.")]
    card = web.card_html(1, inner, text)
    assert 'id="src-1-1"' in card and 'id="src-1-2"' in card


# ---------------------------------------------------------------- the timeline block

ANSWER = ("Floodwater reached the town of Dovrin on Monday. [1] The river rose two metres in a day. [1] "
          "The old stone bridge in Dovrin collapsed on Wednesday. [2]")


def test_a_timeline_that_only_repeats_the_answer_is_not_shown():
    repeats = (TimelinePoint("2022-02-28", "Floodwater reached the town of Dovrin on Monday. "
                                           "The river rose two metres in a day.", (1,)),
               TimelinePoint("2022-03-02", "The old stone bridge in Dovrin collapsed on Wednesday.", (2,)))
    assert not web.timeline_adds(ANSWER, repeats)
    assert "rag-timeline" not in web.answer_html(ANSWER, 1, {1, 2}, timeline=repeats)
    one_day = (TimelinePoint("2022-03-02", "The old stone bridge in Dovrin collapsed on Wednesday.", (2,)),)
    assert "rag-timeline" not in web.answer_html("Something else. [2]", 1, {2}, timeline=one_day)
    # the same points in another order than the answer's: the timeline reorders, so it is shown
    reordered = "The old stone bridge in Dovrin collapsed on Wednesday. [2] Floodwater reached the town of " \
                "Dovrin on Monday. [1] The river rose two metres in a day. [1]"
    assert web.timeline_adds(reordered, repeats)
    assert "rag-timeline" in web.answer_html(reordered, 1, {1, 2}, timeline=repeats)
    # an answer in other words (an LLM's): the timeline's quotes add the exact passages by day
    assert web.timeline_adds("Floods came first, then the bridge fell. [1] [2]", repeats)


# ---------------------------------------------------------------- plurals

def test_counts_are_singular_for_one():
    status = web.status_html({"articles": 1, "chunks": 1, "sources": 1, "embedder": "e", "last_indexed": ""})
    assert "<b>1</b> article · <b>1</b> passage · <b>1</b> source ·" in status
    status = web.status_html({"articles": 1200, "chunks": 2, "sources": 0, "embedder": "e"})
    assert "<b>1,200</b> articles · <b>2</b> passages · embedder" in status
    one = web.section_html({"turn": 1, "question": "q", "cards": ["<div></div>"], "quotes": 1, "abstained": False,
                            "seconds": 0.1, "note": ""})
    assert "1 article · answered" in one
    dup = web.report_rows("a.jsonl", IndexReport(duplicates=("x",)))
    assert "1 duplicate (same text" in dup
    assert "2 duplicates" in web.report_rows("a.jsonl", IndexReport(duplicates=("x", "y")))


# ---------------------------------------------------------------- example questions

def test_example_questions_read_like_questions_a_person_would_ask():
    seed = MARIUPOL_SEED.read_text(encoding="utf-8")
    articles = [
        (seed.split(".")[0], seed),  # "Russia is said to have launched another attack on Kharkiv, ..."
        *[(a["title"], a["text"]) for a in DOVRIN],
        ("Port of Velmora reopens after repairs", DATED),
        ("'Blonde' review: Ana de Armas stars as Marilyn", "Ana de Armas stars in Blonde, a film by Andrew Dominik."),
        ("The biggest names in 50 years of minor league baseball in Des ...", "Baseball in Des Moines, Iowa."),
        ("Recession shock is coming, Bank of America warns | CNN Business", "The bank warned of a recession."),
        ("Roger Federer says he is retiring from pro tennis at age 41", "Federer said he would retire."),
        ("Who are Vladimir Putin's daughters? | The Week UK", "Putin has two daughters."),
        ("What next for Prince Andrew after sex abuse case ...", "Prince Andrew settled the case."),
    ]
    questions = web.example_questions(articles, limit=20)
    assert questions == ["What happened in Kharkiv?", "What happened in Dovrin?", "What happened in Velmora?",
                         "What did Roger Federer say?", "Who are Vladimir Putin's daughters?"]
    for bad in ("reported about", "What happened:", "Blonde", "Des?", "America", "\u2026", "..."):
        assert not any(bad in q for q in questions), bad


def test_example_questions_on_the_benchmark_titles_are_whole_questions():
    """Eyeball run on the shared benchmark corpus when it is there: every question ends with "?", none is cut."""
    corpus = Path(__file__).resolve().parents[2] / "shared" / "bench" / "rtqa2022" / "articles.jsonl.gz"
    if not corpus.exists():
        pytest.skip(f"no {corpus}")
    import json

    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(400), f)]
    questions = web.example_questions([(r.get("title") or "", r.get("text") or "") for r in rows], limit=40)
    print("\n".join(questions))
    assert len(questions) >= 20
    assert all(q.endswith("?") and "..." not in q and "\u2026" not in q and len(q) <= 90 for q in questions)


# ---------------------------------------------------------------- dates typed in the filters

@pytest.mark.parametrize("typed", ["last week", "14/10/2022", "2022-13-01", "2022-03-01xyz", "yesterday"])
def test_invalid_web_dates_are_said_to_be_invalid(typed):
    with pytest.raises(ValueError, match="From date .* is not a date like 2022-03-01"):
        web.filters_of([], typed, "")
    assert "is not a date like 2022-03-01" in web.date_problems("", typed)
    assert "Until date" in web.date_problems("", typed)


def test_valid_web_dates():
    assert web.date_problems("2022-03-01", " 2022-03-31 ") == "" and web.date_problems(None, "") == ""
    assert str(web.filters_of([], "2022-03-01", "2022-03-31T10:00").until) == "2022-03-31"
    assert "empty" in web.date_problems("2022-03-02", "2022-03-01")


# ---------------------------------------------------------------- uploads refused by ingest

def test_upload_refused_by_ingest_says_why_and_the_server_goes_on(served, tmp_path):  # noqa: F811
    """A gzip whose content is not JSON lines, and a file named .jsonl.gz that is not gzip: each row says why;
    the next good file is indexed and questions are still answered."""
    chat = web.WebChat(served["assistant"], served["settings"])
    not_json = tmp_path / "garbage.jsonl.gz"
    not_json.write_bytes(gzip.compress(b"this is not json\n" * 3))
    not_gzip = tmp_path / "fake.jsonl.gz"
    not_gzip.write_bytes(b"plain text, not gzip at all")
    good = tmp_path / "velmora2.md"
    good.write_text(DATED.replace("Velmora", "Ostrel"), encoding="utf-8")
    table, *_ = chat.add_files([str(not_json), str(not_gzip), str(good)])
    rows = table.split("<tr")[2:]  # after the header
    assert "garbage.jsonl.gz" in rows[0] and "rag-bad" in rows[0] and "<li>" in rows[0]
    assert "JSON" in rows[0] or "json" in rows[0]
    assert "fake.jsonl.gz" in rows[1] and "rag-bad" in rows[1] and ("gzip" in rows[1] or "<li>" in rows[1])
    assert "velmora2.md" in rows[2] and "1 indexed" in rows[2]
    *_, last = chat.respond("When did the port of Ostrel reopen?", web.new_session(), [], None, None)
    assert "Ostrel" in last[1][-1]["content"] and "rag-done" in last[1][-1]["content"]


# ---------------------------------------------------------------- in the browser

def test_nothing_covers_the_first_message(page):  # noqa: F811
    """gradio's floating "Chat" label sat over the top-left of the chat and hid the first message when scrolled."""
    for question in ("what happened in Mariupol?", "and in Kherson?"):
        ask(page, question)
    for selector in ("#rag-chat .rag-question", "#rag-chat .rag-answer"):
        covered = page.evaluate("""(el) => {
            let scroller = el.parentElement;
            while (scroller && scroller.scrollHeight <= scroller.clientHeight + 2) scroller = scroller.parentElement;
            const top = scroller.getBoundingClientRect().top;
            scroller.scrollTop += el.getBoundingClientRect().top - top - 2;  // the message's first line at the top
            const r = el.getBoundingClientRect(), hidden = [];
            for (let x = r.left + 2; x < r.right - 2; x += 8)
                for (let y = Math.max(r.top, top) + 2; y < Math.max(r.top, top) + 20; y += 6) {
                    const e = document.elementFromPoint(x, y);
                    if (e && !el.contains(e)) hidden.push(e.outerHTML.slice(0, 120));
                }
            return hidden;
        }""", page.locator(selector).first.element_handle())
        assert covered == [], (selector, covered[:3])
    assert page.locator("#rag-chat [data-testid='block-label']").filter(visible=True).count() == 0


def test_a_long_question_is_not_cut_silently(page, served):  # noqa: F811
    """The browser used to cut a pasted question at 2,000 characters without a word: now the whole question
    reaches the server, which says it is too long, and the text stays in the box to be shortened."""
    limit = served["settings"].max_question_chars
    box = page.locator("#rag-question textarea")
    long_question = ("why did the port of Velmora close " * 200)[: limit + 500]
    box.fill(long_question)
    assert box.get_attribute("maxlength") is None and len(box.input_value()) == limit + 500
    box.press("Enter")
    page.locator("#rag-chat .rag-error").last.wait_for()
    message = page.locator("#rag-chat .rag-error").last.inner_text()
    assert "Cannot ask this" in message and f"the limit is {limit}" in message
    page.wait_for_function(f"document.querySelector('#rag-question textarea').value.length == {limit + 500}")


def test_dates_typed_in_the_filters_stay_on_screen_and_invalid_ones_are_said(browser, served, tmp_path):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(served["url"])
        pg.wait_for_selector("#rag-question textarea")
        pg.locator("#rag-filters").get_by_text("Filters").first.click()
        since = pg.locator("#rag-since input, #rag-since textarea").first
        since.scroll_into_view_if_needed()
        since.click()
        for button in pg.locator("#rag-filters button.calendar").all():  # gradio's picker, where there is one
            button.click()
        pg.wait_for_timeout(500)
        shown = "#rag-since *, #rag-until *, .picker-container *"  # the date fields and gradio's picker, if any
        offscreen = pg.evaluate(f"""() => [...document.querySelectorAll('{shown}')]
            .filter(e => e.offsetParent !== null)
            .map(e => e.getBoundingClientRect())
            .filter(r => r.width > 0 && (r.bottom > innerHeight + 1 || r.top < -1 || r.left < -1
                                         || r.right > innerWidth + 1)).length""")
        pg.screenshot(path=str(tmp_path / "dates.png"))
        assert offscreen == 0
        since.fill("last week")
        since.press("Tab")
        problem = pg.locator("#rag-date-problem .rag-error")
        problem.wait_for()
        assert "From date 'last week' is not a date like 2022-03-01" in problem.inner_text()
        box = pg.locator("#rag-question textarea")
        box.fill("When did the port of Velmora reopen?")
        box.press("Enter")
        pg.locator("#rag-chat .rag-error").wait_for()
        assert "Cannot ask this: From date 'last week'" in pg.locator("#rag-chat .rag-error").inner_text()
        since.fill("2022-01-01")
        since.press("Tab")
        pg.wait_for_function("!document.querySelector('#rag-date-problem .rag-error')")
        pg.screenshot(path=str(tmp_path / "dates-fixed.png"))
    finally:
        context.close()
