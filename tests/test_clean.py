"""Junk lines of scraped pages (captions, credits, teasers, headlines, boilerplate) are never quoted, while the real
sentences beside them are; the classifier both ways; HTML pages read with trafilatura (JSON-LD date and authors)."""

from __future__ import annotations

import gzip
import json
from itertools import islice

import pytest

from rag import Assistant
from rag.chunk import sentence_spans
from rag.clean import junk_reason, junk_spans, without_junk
from rag.ingest import read_file
from rag.store import Store
from tests.conftest import CORPUS, needs_corpus, write_jsonl

# a scraped page as news sites serve it: the one real report sits among captions, credits, teasers and boilerplate
# that repeat the question's words
HARBOUR = "\n\n".join([
    "Ostmark CNN —",
    "Sign up for our Harbour Brief newsletter to get the latest Ostmark harbour fire news delivered to your inbox.",
    "Firefighters battle the Ostmark harbour fire on Tuesday. Jana Petrova/AFP/Getty Images",
    "Photos: Ostmark harbour fire Smoke rises over the Ostmark harbour warehouses. Hide Caption 3 of 12",
    "\U0001F4F8 Ostmark harbour fire: 45 photos of the blaze",
    "Harbour news:Ostmark harbour fire closes the port",
    "Ostmark harbour fire: what we know",
    "A fire destroyed three warehouses at the harbour on Tuesday, and the port will stay closed until Friday, "
    "the port authority said.",
    "Read more: Ostmark harbour fire latest",
    "Dock workers said the smoke could be seen from across the bay.",
])
JUNK = ["Ostmark CNN —", "Sign up for our Harbour Brief", "Jana Petrova/AFP/Getty Images", "Hide Caption",
        "45 photos", "Harbour news:", "what we know", "Read more"]


@pytest.fixture(scope="module")
def harbour(tmp_path_factory, settings, embedder):
    work = tmp_path_factory.mktemp("clean")
    folder = work / "articles"
    folder.mkdir()
    write_jsonl(folder / "news.jsonl", [
        {"title": "Fire at Ostmark harbour", "source": "cnn.com", "published": "2022-08-02",
         "url": "https://cnn.example/ostmark-fire", "text": HARBOUR},
        {"title": "Ostmark council meets", "source": "Ostmark Post", "published": "2022-08-01",
         "url": "https://post.example/council", "text": "The Ostmark council approved the harbour budget on Monday."},
    ])
    assistant = Assistant(Store(work / "index"), embedder, settings)
    assistant.index([folder])
    yield assistant
    assistant.close()


@pytest.mark.parametrize("question", ["What happened in the Ostmark harbour fire?", "Ostmark harbour fire photos",
                                      "What do we know about the Ostmark harbour fire?"])
def test_junk_lines_are_never_quoted(harbour, question):
    answer = harbour.ask(question)
    assert not answer.abstained
    quotes = [c.quote for c in answer.citations]
    assert any(q.startswith("A fire destroyed three warehouses") for q in quotes), answer.text
    for quote in quotes:
        assert not any(junk in quote for junk in JUNK), quote
    for c in answer.citations:
        assert harbour.article(c.article_id).text[c.start:c.end] == c.quote  # quotes stay exact spans


@pytest.mark.parametrize("line, reason", [
    ("Photos: Russia invades Ukraine Staff members attend to a child at a hospital on March 18. Hide Caption 79 of "
     "226", "caption"),
    ("\U0001F4F8 Gallery: Evacuations, destruction seen after the earthquake.", "caption"),
    ("Johnson attends a press conference ahead of the event. Adrian Dennis/AFP/Getty Images", "credit"),
    ("The bridge, seen from the river. (Photo: Jack Gruber, USA TODAY)", "caption"),
    # a video player's line: its title, length and source
    ("Video Ad Feedback Big blow to Putin as Russia orders to withdraw from Kherson 02:30 - Source: CNN", "caption"),
    ("Flyers promote messages from students at the school. Courtesy Jessica Martin", "credit"),
    ("WNBA news:A look at the career of the league's top scorer.", "teaser"),
    # a link list's marker does not hide what the line is
    ("\u25baRelated: Google Trends' FrightGeist lists the most popular Halloween costumes of 2022.", "boilerplate"),
    ("\u25baBeijing Olympics less than 100 days away:Here are some of the storylines you might have missed.", "teaser"),
    # an opinion roundup's link: author, outlet and the other page's title
    ("\u25baHayes Brown, MSNBC: \u201cThe bleak reality of a GOP midterms win is hard to process.\u201d", "teaser"),
    ("\u25ba MORE: What is social distancing? A glossary of terms.", "boilerplate"),
    # a line introducing a list answers nothing by itself
    ("USA TODAY Sports' NHL experts predict the winners for the first round and the Stanley Cup:", "lead-in"),
    ("Kanye West postpones concerts after robbery", "no final punctuation"),
    ("Alabama \u2013 Bulldog", "no final punctuation"),
    ("London CNN \u2014", "no final punctuation"),
    ("UPDATES:", "label"),
    ("Sign up for CNN's Wonder Theory science newsletter. Explore the universe with news of discoveries.",
     "boilerplate"),
    ("We use cookies to improve your experience. See our cookie policy.", "boilerplate"),
    ("Read more here.", "boilerplate"),
    ("Follow Jane Doe on Twitter: @janedoe.", "boilerplate"),
    ("This story has been updated to correct the date.", "boilerplate"),
    ("Would you like to receive the Weekday newsletter?", "boilerplate"),
    ("Our coverage is supported in part by a grant from the Example Foundation.", "boilerplate"),
    ("Contact Karen Weintraub at kweintraub@example.com.", "boilerplate"),
    # who reported it: the wires' closing lines
    ("Barry Hatton contributed from Lisbon, Portugal.", "boilerplate"),
    ("Associated Press writers Jill Lawless and Sylvia Hui contributed reporting.", "boilerplate"),
    ("Reporting by Dan Williams; Editing by Mark Heinrich.", "boilerplate"),
    ("Additional reporting by Ana Silva.", "boilerplate"),
    ("Advertisement - Article continues below", "no final punctuation"),
    ("BREAKING NEWS.", "label"),
    ("9:30 p.m.", "fragment"),
    ("It wasn't a cover-up. pic.twitter.com/abc123 \u2014 Jo Smith (@josmith) July 5, 2022", "embedded post"),
    # a question states nothing: a news quiz page's own question, a reader teaser
    ("Which festival did the Brenmoor council cancel this week?", "question"),
    ("Is yours on it?", "question"),
])
def test_junk_lines_are_classed(line, reason):
    assert junk_reason(line, 0, len(line)) == reason


@pytest.mark.parametrize("line", [
    "WASHINGTON (AP) \u2014 The Senate voted 52-48 on Tuesday to confirm the nominee.",
    "No, they do not.",
    "The newsletter, founded in 1998, now has 40,000 readers.",
    "More than 2 million people subscribe to the streaming service, the company said.",
    "The photos were taken by a drone over the valley, police said.",
    "Reuters reported that the talks would resume on Monday.",
    "\u201cWe are horrified and heartbroken,\u201d she said.",
    "Thousands signed up for the program in its first week, officials said.",
    "The foundation gave the hospital a grant of 2 million dollars, its director said.",
    "Police asked witnesses to contact the station at once.",
    "Donors contributed from their own pockets, raising 2 million dollars for the shelter.",
    "Reporting by local outlets suggested the talks had stalled.",
    "\u201cWhy now?\u201d she asked the mayor.",  # a question quoted inside a statement
    # a paragraph cut short by the scraper is still a report, not a headline
    "Then if someone made her mad, Gretta would slam the shutters on the windows and sway the chandeliers in the "
    "old house on the hill",
    "\u2022 The World Health Organization on Saturday declared the outbreak a global public health emergency.",
    "\u25baActing ambassador Kristina Kvien has temporarily returned to the U.S. Embassy in Kyiv.",
])
def test_real_sentences_are_kept(line):
    assert junk_reason(line, 0, len(line)) == ""


def test_hard_wrapped_prose_is_not_a_headline():
    text = ("The new electric ferry Aurelia entered service on Lake Orrin on Sunday. It carries 240 passengers\n"
            "and crosses the lake in 35 minutes. The old diesel ferry will be sold to a museum, the harbour\n"
            "master Piet Zoller said.\n\nFerry Aurelia enters service\n\nAlabama \u2013 Bulldog\nAlaska \u2013 Husky")
    assert [text[a:b] for a, b in junk_spans(text)] == ["Ferry Aurelia enters service", "Alabama \u2013 Bulldog",
                                                        "Alaska \u2013 Husky"]


def test_a_long_headline_followed_by_its_blurb_is_junk_but_a_page_cut_short_is_not():
    # a roundup's item: its headline (18 words, no full stop), then its blurb; quoted as the answer to "which movie
    # is top of the box office?"
    headline = ("Harbour Lights star says she is ready to make another fishing movie if the studio gives her the "
                "green light")
    text = f"{headline}\n\nFans have waited years for a sequel. Am I right?\n\nOther stories follow"
    assert junk_reason(text, 0, len(headline)) == "no final punctuation"
    # the same words ending the page: a paragraph the scraper cut short, still a report
    cut = f"Fans have waited years for a sequel.\n\n{headline}"
    assert junk_reason(cut, cut.index(headline), len(cut)) == ""


def test_a_caption_line_is_junk_whatever_its_sentences_and_spans_are_exact():
    text = ("Heavy rain flooded the town on Monday.\n"
            "Residents wade through water on Monday. Their homes were flooded. Jo Lee/Reuters\n"
            "The mayor said 300 homes were damaged.")
    spans = junk_spans(text)
    assert [text[a:b] for a, b in spans] == ["Residents wade through water on Monday.", "Their homes were flooded.",
                                             "Jo Lee/Reuters"]
    assert without_junk(text) == "Heavy rain flooded the town on Monday.\nThe mayor said 300 homes were damaged."


PAGE = """<!doctype html><html><head><title>Bridge closed | Example News</title>
<script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle",
 "headline": "Council closes the old bridge", "datePublished": "2022-11-11T10:00:00Z",
 "author": {"@type": "Person", "name": "Jane Doe"}, "publisher": {"@type": "Organization", "name": "Example News"}}
</script></head><body><nav>Home | World | Sport</nav>
<div class="share">Share on Facebook</div>
<article><h1>Council closes the old bridge</h1>
<p>The city council voted on Tuesday to close the old bridge after engineers found cracks in two of its pillars.</p>
<figure><img src="bridge.jpg"><figcaption>The bridge in 2019.</figcaption></figure>
<p>Repairs are expected to take at least eight months and cost about 12 million dollars, officials said.</p>
</article><aside><h3>Most read</h3><ul><li>Storm hits the coast</li></ul></aside>
<footer>Cookie settings | Privacy policy</footer></body></html>"""


def test_html_pages_are_read_with_trafilatura(tmp_path):
    path = tmp_path / "bridge.html"
    path.write_text(PAGE, encoding="utf-8")
    [article] = list(read_file(path))
    assert article.published == "2022-11-11"  # from JSON-LD: no meta tag says it
    assert article.authors == ("Jane Doe",)
    assert article.title == "Council closes the old bridge"
    assert "engineers found cracks" in article.text and "12 million dollars" in article.text
    for chrome in ("Share on Facebook", "Most read", "Storm hits the coast", "Cookie settings", "Home | World"):
        assert chrome not in article.text


@needs_corpus
def test_every_anywhere_match_holds_one_of_its_needles():
    # the needles skip the costly alternations for most sentences: a pattern they do not cover would go unseen
    from rag.clean import _BOILERPLATE_ANYWHERE, _BOILERPLATE_NEEDLES, _CAPTION_ANYWHERE, _CAPTION_NEEDLES

    checked = 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as lines:
        for line in islice(lines, 300):
            text = json.loads(line)["text"]
            for a, b in sentence_spans(text):
                for pattern, needles in ((_BOILERPLATE_ANYWHERE, _BOILERPLATE_NEEDLES),
                                         (_CAPTION_ANYWHERE, _CAPTION_NEEDLES)):
                    if pattern.search(text[a:b]):
                        checked += 1
                        assert any(n in text[a:b].lower() for n in needles), text[a:b]
    assert checked > 100  # the sample holds enough junk to check
