"""Web chat: ask the collection in a browser and see every answer's quoted passages.

Built with gradio on top of `rag.api.Assistant` only. `rag web` calls `main()`;
tests call `build_app()` and `launch()` on an Assistant of their own.

Safety: everything that comes from an article (text, titles, sources, urls)
or from the person typing is HTML-escaped here before gradio sees it, chat
messages are not rendered as Markdown (so `![x](http://…)` stays text and no
remote image is fetched), and only http(s) article urls become links. The
server binds 127.0.0.1 unless told otherwise; another address without
`RAG_WEB_AUTH=user:password` gets a loud warning.

gradio is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rag.feeds import is_loopback
from rag.ingest import SUFFIXES
from rag.types import Answer, Citation, Filters, IndexReport, Message, TimelinePoint

if TYPE_CHECKING:
    import argparse
    from concurrent.futures import Future

    import gradio as gr

    from rag.api import Assistant
    from rag.config import Settings

UPLOAD_SUFFIXES = SUFFIXES  # what `rag index` reads
MAX_UPLOAD_MB = 25  # per file; gradio refuses bigger uploads before they reach the handler
MAX_UPLOAD_FILES = 50  # per upload
CONTEXT_CHARS = 200  # article text shown either side of a quote
CONCURRENCY = 4  # questions answered at once
QUEUE_SIZE = 64  # waiting events beyond this are refused ("queue full")
EXAMPLES = 4

_MARKER = re.compile(r"\[(\d+)\]")
_URL = re.compile(r"https?://[^\s\"'<>`\\]+", re.I)


# ---------------------------------------------------------------- pure HTML helpers

def plural(count: int, word: str) -> str:
    """"1 article", "2 articles"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def esc(text: object) -> str:
    """Text as inert HTML (quotes too, so it is safe inside attributes)."""
    return html.escape(str(text or ""), quote=True)


def safe_url(url: str) -> str:
    """The url when it is a plain http(s) url, else "" (never a javascript:/data: link)."""
    url = (url or "").strip()
    return url if _URL.fullmatch(url) else ""


def cite_link(n: int, turn: int) -> str:
    """An [n] marker linking to source card n of `turn`."""
    return f'<a class="rag-cite" href="#src-{turn}-{n}" title="show source {n}">[{n}]</a>'


def cited_html(text: str, turn: int, numbers: set[int]) -> str:
    """Text escaped, its [n] markers (for n in `numbers`) made into links to the source cards of `turn`."""
    parts: list[str] = []
    last = 0
    for match in _MARKER.finditer(text):
        parts.append(esc(text[last:match.start()]))
        n = int(match.group(1))
        parts.append(cite_link(n, turn) if n in numbers else esc(match.group(0)))
        last = match.end()
    parts.append(esc(text[last:]))
    return "".join(parts).strip()


def answer_html(text: str, turn: int, numbers: set[int], abstained: bool = False, note: str = "",
                done: bool = True, timeline: tuple[TimelinePoint, ...] = ()) -> str:
    """Answer text escaped, its [n] markers made into links to the source cards of `turn`,
    then its timeline (when it has one) and the note.

    The complete answer carries the class `rag-done` (a partial, streaming one does not).
    """
    extra = f'<div class="rag-note">{esc(note)}</div>' if note else ""
    if abstained:
        return (f'<div class="rag-abstain rag-done" data-abstained="true"><strong>Not found in the articles.</strong> '
                f'{esc(_strip_prefix(text))}{extra}</div>')
    body = f'<div class="rag-answer{" rag-done" if done else ""}">{cited_html(text, turn, numbers)}</div>'
    shown = timeline if timeline_adds(text, timeline) else ()
    return f"{body}{timeline_html(shown, turn, numbers)}{extra}"


def timeline_adds(text: str, points: tuple[TimelinePoint, ...]) -> bool:
    """Whether a timeline says more than the answer above it: it needs two dates or more, and its points must not
    be the answer's own sentences in the answer's order (then it would only repeat the answer with dates added);
    a timeline that reorders them, or quotes what an LLM's answer paraphrases, is shown."""
    if len({p.date for p in points}) < 2:
        return False
    flat = " ".join(_MARKER.sub(" ", text).split())
    at = 0
    for point in points:
        found = flat.find(" ".join(point.text.split()), at)
        if found < 0:
            return True
        at = found + len(" ".join(point.text.split()))
    return False


def timeline_html(points: tuple[TimelinePoint, ...], turn: int, numbers: set[int]) -> str:
    """The "Timeline" block under an answer: one row per date (ISO date, what happened, [n] links); "" if none."""
    if not points:
        return ""
    rows = "".join(
        f'<li class="rag-tl-row"><time class="rag-tl-date" datetime="{esc(p.date)}">{esc(p.date)}</time> '
        f'<span class="rag-tl-text">{esc(p.text)}</span>'
        f'{"".join(" " + (cite_link(n, turn) if n in numbers else esc(f"[{n}]")) for n in p.citations)}</li>'
        for p in points)
    return f'<div class="rag-timeline"><div class="rag-tl-head">Timeline</div><ol class="rag-tl">{rows}</ol></div>'


def _strip_prefix(text: str) -> str:
    rest = re.sub(r"^\s*not found in the articles\s*[:.]?\s*", "", text, flags=re.I)
    return rest[:1].upper() + rest[1:]


def message_html(text: str) -> str:
    """A person's question, shown as text."""
    return f'<div class="rag-question">{esc(text)}</div>'


def notice_html(text: str, kind: str = "error") -> str:
    return f'<div class="rag-{kind}">{esc(text)}</div>'


Piece = tuple[str, Citation | None]  # a stretch of article text, and the citation it quotes (None: context)


def _cut_before(text: str, cut: bool) -> str:
    """Context before a quote, starting on a word boundary and marked as cut when the article goes on."""
    if not cut:
        return text
    return "\u2026" + (text.split(" ", 1)[-1] if " " in text else text)


def _cut_after(text: str, cut: bool) -> str:
    if not cut:
        return text
    return (text.rsplit(" ", 1)[0] if " " in text else text) + "\u2026"


def passages(article_text: str | None, citations: list[Citation], chars: int = CONTEXT_CHARS) -> list[list[Piece]]:
    """The quotes of one article in up to `chars` of their context, in article order; quotes whose contexts
    overlap share one passage. A quote whose offsets do not match the text is shown alone, never a wrong passage."""
    text = article_text or ""
    found = sorted((c for c in citations if text[c.start:c.end] == c.quote), key=lambda c: (c.start, c.end))
    groups: list[list[Citation]] = []
    for c in found:
        if groups and c.start - chars <= max(g.end for g in groups[-1]) + chars:
            groups[-1].append(c)
        else:
            groups.append([c])
    out: list[list[Piece]] = []
    for group in groups:
        lo, hi = max(0, group[0].start - chars), min(len(text), max(c.end for c in group) + chars)
        pieces: list[Piece] = [(_cut_before(text[lo:group[0].start], lo > 0), None)]
        cursor = group[0].start
        for c in group:
            if c.start > cursor:
                pieces.append((text[cursor:c.start], None))
            start = max(c.start, cursor)  # a quote inside another: an empty mark keeps its [n] target
            pieces.append((text[start:c.end] if c.end > start else "", c))
            cursor = max(cursor, c.end)
        out.append([*pieces, (_cut_after(text[cursor:hi], hi < len(text)), None)])
    return out + [[("", None), (c.quote, c), ("", None)] for c in citations if text[c.start:c.end] != c.quote]


def _piece_html(turn: int, text: str, citation: Citation | None, numbered: bool) -> str:
    if citation is None:
        return esc(text)
    label = f'<sup class="rag-mark-n">[{citation.n}]</sup>' if numbered else ""
    return f'{label}<mark id="src-{turn}-{citation.n}" data-n="{citation.n}">{esc(text)}</mark>'


def card_html(turn: int, citations: list[Citation], article_text: str | None, chars: int = CONTEXT_CHARS) -> str:
    """One source card per article: title (a link only for http(s) urls), source, date, and each of its quotes
    highlighted in the article text around it. A [n] link targets its quote's mark (`#src-<turn>-<n>`)."""
    c = citations[0]
    url = safe_url(c.url)
    title = esc(c.title or "(untitled)")
    if url:
        title = f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer nofollow">{title}</a>'
    several = len(citations) > 1
    meta = [esc(x) for x in (c.source, c.published) if x]
    meta += [f"{f'[{x.n}] ' if several else ''}according to {esc(x.attribution)}" for x in citations if x.attribution]
    outlets = list(dict.fromkeys(o for x in citations for o in x.also_reported_by))
    if outlets:
        meta.append(f'<span class="rag-also">also reported by {esc(", ".join(outlets))}</span>')
    where = c.url if c.url and not url else ("" if url else c.path)
    if where:
        meta.append(f'<span class="rag-path">{esc(where)}</span>')
    quotes = "".join(
        f'<div class="rag-quote">{"".join(_piece_html(turn, text, x, several) for text, x in passage)}</div>'
        for passage in passages(article_text, citations, chars))
    numbers = " ".join(f"[{x.n}]" for x in citations)
    return (
        f'<div class="rag-card" id="card-{turn}-{c.n}" data-n="{" ".join(str(x.n) for x in citations)}">'
        f'<div class="rag-card-head"><span class="rag-n">{numbers}</span> <span class="rag-title">{title}</span></div>'
        f'<div class="rag-meta">{" · ".join(meta)}</div>{quotes}</div>'
    )


def cards_html(turn: int, citations: tuple[Citation, ...], texts: dict[str, str | None]) -> list[str]:
    """One card per cited article (several citations of one article share it), in the order first cited."""
    by_article: dict[str, list[Citation]] = {}
    for c in citations:
        by_article.setdefault(c.article_id, []).append(c)
    return [card_html(turn, cs, texts.get(article_id)) for article_id, cs in by_article.items()]


def section_html(section: dict, open_: bool = True) -> str:
    """The sources of one answer (a dict made by `WebChat._section`), as a foldable part of the panel."""
    turn, cards = section["turn"], section["cards"]
    if section["abstained"]:
        body = ('<div class="rag-empty">No passage in the articles answers this question, '
                'so there is nothing to cite.</div>')
        count = "no sources"
    else:
        body = "".join(cards)
        quotes = section.get("quotes", len(cards))
        count = plural(len(cards), "article") + (f", {plural(quotes, 'quote')}" if quotes != len(cards) else "")
    note = f" · {esc(section['note'])}" if section.get("note") else ""
    return (
        f'<details class="rag-turn" id="turn-{turn}" data-turn="{turn}"{" open" if open_ else ""}>'
        f'<summary><span class="rag-q">{esc(section["question"])}</span>'
        f'<span class="rag-count">{count} · answered in {section["seconds"]:.2f} s{note}</span></summary>'
        f"{body}</details>"
    )


def panel_html(sections: list[dict]) -> str:
    """Newest answer first and open; earlier ones folded (a click on their [n] unfolds them)."""
    if not sections:
        return ('<div class="rag-panel-empty">Sources appear here: one card per quoted article. '
                "Click a [n] in an answer to bring its card into view.</div>")
    ordered = list(reversed(sections))
    return "".join(section_html(s, open_=i == 0) for i, s in enumerate(ordered))


def report_rows(name: str, report: IndexReport | None, error: str = "") -> str:
    """One row of the upload result table, for one file."""
    if error:
        return f'<tr class="rag-bad"><td>{esc(name)}</td><td>not indexed: {esc(error)}</td></tr>'
    assert report is not None
    parts = []
    if report.indexed:
        parts.append(f"{len(report.indexed)} indexed")
    if report.replaced:
        parts.append(f"{len(report.replaced)} updated")
    if report.unchanged:
        parts.append(f"{len(report.unchanged)} unchanged (already in the collection)")
    if report.duplicates:
        parts.append(f"{plural(len(report.duplicates), 'duplicate')} (same text already stored)")
    problems = [s for s in report.skipped if not s.reason.startswith("same text as")]
    if problems:
        parts.append(f"{len(problems)} skipped")
    status = "rag-ok" if report.indexed or report.replaced else ("rag-bad" if problems and not (
        report.unchanged or report.duplicates) else "rag-same")
    reasons = "".join(
        f"<li>{'line ' + str(s.line) + ': ' if s.line else ''}{esc(s.reason)}</li>" for s in problems[:5])
    if len(problems) > 5:
        reasons += f"<li>\u2026 and {len(problems) - 5} more</li>"
    detail = f"<ul>{reasons}</ul>" if reasons else ""
    summary = ", ".join(parts) or "nothing to index"
    return f'<tr class="{status}"><td>{esc(name)}</td><td>{esc(summary)}{detail}</td></tr>'


def table_html(rows: list[str]) -> str:
    if not rows:
        return ""
    return ('<table class="rag-report"><thead><tr><th>file</th><th>result</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def status_html(stats: dict) -> str:
    when = stats.get("last_indexed") or ""
    try:
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M %Z").strip() if when else "never"
    except ValueError:
        pass
    sources = int(stats.get("sources", 0))
    counts = [plural(int(stats.get("articles", 0)), "article"), plural(int(stats.get("chunks", 0)), "passage")]
    counts += [plural(sources, "source")] if sources else []
    shown = " · ".join(re.sub(r"^([\d,]+)", r"<b>\1</b>", c) for c in counts)
    return (f'<div class="rag-status" id="rag-status">{shown} · '
            f'embedder <code>{esc(stats.get("embedder", ""))}</code>{stage_note(stats)} · '
            f'last indexed {esc(when)}</div>')


def stage_note(stats: dict) -> str:
    """Which stage a two-stage index answers from (nothing for one stage): "fast stage, full vectors 12,000 of
    55,427" while the full stage is computed, "full stage" once it is complete."""
    if stats.get("stage") == "fast":
        return f" (fast stage; full vectors {esc(stats.get('full_vectors', ''))})"
    return " (full stage)" if stats.get("stage") == "full" else ""


# ---------------------------------------------------------------- what the page needs from the collection

_STOP = {
    "the", "a", "an", "in", "on", "at", "of", "and", "or", "to", "for", "with", "by", "from", "as", "is", "are",
    "was", "were", "be", "it", "its", "this", "that", "after", "before", "over", "under", "new", "news", "how",
    "why", "what", "who", "when", "where", "says", "said", "live", "update", "updates", "breaking", "video",
    "watch", "opinion", "analysis", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "mr", "mrs", "ms", "dr", "but", "not", "no", "he", "she", "they", "we", "i", "you",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "today", "yesterday",
    "here", "there", "his", "her", "their", "our", "my", "your", "all", "one", "two", "first", "last",
}
# a name: capitalised words, not inside quotes (a film or book title) and not a possessive ("Ukraine's")
_NAME = re.compile(r"(?<![\w'\"\u2018\u201c])([A-Z][a-z]+(?:[- ][A-Z][a-z]+){0,2})\b(?!['\u2019]\w)")
_SITE_TAIL = re.compile(r"\s+[|\u2013\u2014-]\s+[^|\u2013\u2014]{1,40}$")  # "... | CNN", "... - The Week UK"
_CUT = re.compile(r"\s*(?:\.\.\.|\u2026)\s*$")  # a title cut short by its feed
_ASKS = re.compile(r"(?:what|who|whom|whose|why|how|when|where|which|is|are|was|were|can|could|does|do|did|will|"
                   r"would|should|has|have)\b", re.I)
_VERBS = {"say": r"says|said|tells|told|claims|insists|admits|vows", "warn about": r"warns|warned",
          "announce": r"announces|announced|unveils|unveiled"}
_IN = r"\b(?:in|near|outside|across)\s+"
# what may follow a place named after "in": punctuation, the end, a small word ("in Kharkiv and ...") or more of
# its name ("in Yellowstone National Park"), not a noun ("in Russian forces")
_AFTER = (r"(?=\s*(?:[,.;:!?)]|$|\s[A-Z]|\s(?:and|or|on|in|at|as|after|before|where|when|while|to|from|for|with|"
          r"last|this|that|but|since|until|during|over|is|was|has|have|had)\b))")
_OF = r"\b(?:town|city|village|port|capital|region|province|state|country|island|county|district)\s+of\s+"


def place_name(name: str, text: str) -> str:
    """`name` as a place ("Kharkiv", "the Americas") when the article's text uses it as one ("in Kharkiv,", "the
    town of Dovrin"), else ""."""
    quoted = re.escape(name)
    bare = len(re.findall(_IN + quoted + _AFTER, text))
    the = len(re.findall(_IN + r"the\s+" + quoted + _AFTER, text))
    if not (bare or the or re.search(_OF + quoted + r"\b", text)):
        return ""
    return f"the {name}" if the > bare else name


def title_questions(title: str, text: str = "") -> list[str]:
    """Questions a person would ask about an article, from its title and text: the title itself when it is a
    whole question, "What did <name> say?" when the title reports what someone said, and "What happened in
    <place>?" for each name in the title that its text uses as a place. A title gives none when nothing fits."""
    whole = " ".join((title or "").split())
    for _ in range(2):  # "Headline | Section | Site"
        whole = _SITE_TAIL.sub("", whole)
    out = []
    asked = re.split(r"(?<=\?)\s", whole, maxsplit=1)[0]
    if asked.endswith("?") and _ASKS.match(asked) and len(asked) <= 90 and not re.search(r"\.\.\.|\u2026", asked):
        out.append(asked)
    body = _CUT.sub("", whole)
    if re.match(r"how to \w", body, re.I) and len(body) == len(whole) and len(body) <= 80:
        out.append(body.rstrip(".!?:") + "?")  # "How to save money on groceries"
    for match in _NAME.finditer(body):
        words = match.group(1).split(" ")
        while words and words[0].lower() in _STOP:  # "At Des Moines rally" names Des Moines
            words.pop(0)
        name = " ".join(words)
        if len(name) < 3:
            continue
        if len(body) < len(whole) and match.end() == len(body):  # the title was cut: so may its last name be
            continue
        verb = next((v for v, forms in _VERBS.items() if re.match(rf"\s+(?:{forms})\b", body[match.end():])), "")
        if verb and not re.search(r"\b(?:of|the|and|de)\s$", body[:match.start()]):  # not "Bank of America warns"
            out.append(f"What did {name} {verb}?")
        elif place := place_name(name, text):
            out.append(f"What happened in {place}?")
    return list(dict.fromkeys(out))


def example_questions(articles: list[tuple[str, str]], limit: int = EXAMPLES) -> list[str]:
    """A few questions made from (title, text) pairs, no question twice: each article's first question, then
    their second ones, and so on (so the examples spread over the articles)."""
    rounds = [title_questions(title, text) for title, text in articles]
    out: list[str] = []
    for depth in range(max((len(r) for r in rounds), default=0)):
        for questions in rounds:
            if depth < len(questions) and questions[depth].lower() not in {q.lower() for q in out}:
                out.append(questions[depth])
                if len(out) >= limit:
                    return out
    return out


def answerable_examples(assistant: Assistant, limit: int = EXAMPLES) -> list[str]:
    """Example questions from a spread of articles, kept only when the assistant answers them."""
    out = []
    for question in example_questions(sample_articles(assistant), limit * 3):
        try:
            if not assistant.ask(question, use_llm=False).abstained:  # extractive: quick, and no LLM calls
                out.append(question)
        except Exception:  # an example is a nicety: never fail the page for one
            continue
        if len(out) >= limit:
            break
    return out


def collection_sources(assistant: Assistant) -> list[str]:
    """Sources in the index, most articles first."""
    return list(assistant.sources())


def sample_articles(assistant: Assistant, limit: int = 48) -> list[tuple[str, str]]:
    """(title, text) of a spread of articles (evenly over ids, so the sample does not depend on file order)."""
    ids = list(assistant.article_ids())
    if len(ids) > limit:
        step = len(ids) / limit
        ids = [ids[int(i * step)] for i in range(limit)]
    articles = []
    for article_id in ids:
        article = assistant.article(article_id)
        if article is not None and article.title:
            articles.append((article.title, article.text))
    return articles


def parse_day(value: Any, label: str) -> date | None:
    """A date typed in a date field (None when empty); ValueError naming the field and the text when it is
    anything but a date like 2022-03-01 ("last week" and "14/10/2022" included: never silently ignored)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).date()
    text = str(value).strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
    except ValueError:
        raise ValueError(f"{label} date {text!r} is not a date like 2022-03-01 (year-month-day)") from None


def date_problems(since: Any, until: Any) -> str:
    """What is wrong with the date fields ("" when nothing), shown under them as soon as one is left."""
    try:
        filters_of([], since, until)
    except ValueError as exc:
        return notice_html(str(exc))
    return ""


def filters_of(sources: list[str] | None, since: Any, until: Any) -> Filters:
    return Filters(tuple(sources or ()), parse_day(since, "From"), parse_day(until, "Until"))


def describe(filters: Filters) -> str:
    parts = []
    if filters.sources:
        parts.append("sources: " + ", ".join(filters.sources))
    if filters.since:
        parts.append(f"from {filters.since}")
    if filters.until:
        parts.append(f"until {filters.until}")
    return "filtered by " + "; ".join(parts) if parts else ""


def pieces(text: str) -> Iterator[str]:
    """The answer in pieces, one cited sentence run at a time (as `Assistant.stream` cuts it)."""
    for piece in re.split(r"(?<=\])\s+", text):
        yield piece + " "


def upload_name(name: str) -> str:
    """A safe file name for the uploads folder (no path, no leading dot)."""
    base = Path(name).name
    suffix = next((s for s in sorted(UPLOAD_SUFFIXES, key=len, reverse=True) if base.lower().endswith(s)), "")
    stem = base[: len(base) - len(suffix)] if suffix else base
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:100] or "upload"
    return stem + suffix.lower()


def allowed_upload(name: str) -> bool:
    return name.lower().endswith(UPLOAD_SUFFIXES)


# ---------------------------------------------------------------- the page

CSS = """
#rag-sources { max-height: 72vh !important; overflow-y: auto !important; }
.rag-status { font-size: 0.9em; opacity: 0.85; }
.rag-answer a.rag-cite, a.rag-cite { font-weight: 600; text-decoration: none; padding: 0 1px; cursor: pointer; }
.rag-abstain { border-left: 4px solid #d97706; padding: 6px 10px; background: rgba(217, 119, 6, 0.08); }
.rag-error { border-left: 4px solid #dc2626; padding: 6px 10px; background: rgba(220, 38, 38, 0.08); }
.rag-pending { opacity: 0.7; font-style: italic; }
.rag-note { font-size: 0.85em; opacity: 0.75; margin-top: 4px; }
.rag-turn { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 10px; margin-bottom: 8px; }
.rag-turn summary { cursor: pointer; display: flex; flex-direction: column; }
.rag-q { font-weight: 600; }
.rag-count { font-size: 0.8em; opacity: 0.7; }
.rag-card { border-top: 1px solid var(--border-color-primary); padding: 8px 2px; scroll-margin: 12px;
  transition: background-color 0.6s; }
.rag-card.rag-flash { background-color: rgba(250, 204, 21, 0.35); }
.rag-quote mark { scroll-margin: 40px; transition: outline-color 0.6s; outline: 3px solid transparent; }
.rag-quote mark.rag-flash { outline-color: #f59e0b; }
.rag-quote + .rag-quote { margin-top: 6px; }
.rag-mark-n { color: var(--color-accent); font-weight: 600; margin-right: 2px; }
.rag-card-head { font-weight: 600; }
.rag-n { color: var(--color-accent); }
.rag-meta { font-size: 0.82em; opacity: 0.75; margin: 2px 0 4px; }
.rag-path { font-family: var(--font-mono); }
.rag-quote { font-size: 0.92em; line-height: 1.45; white-space: pre-wrap; }
.rag-quote mark { background: #fde68a; color: #111; padding: 0 1px; border-radius: 2px; }
.rag-timeline { margin-top: 8px; border-left: 3px solid var(--color-accent); padding: 2px 0 2px 10px; }
.rag-tl-head { font-weight: 600; margin-bottom: 2px; }
.rag-timeline ol.rag-tl { list-style: none; margin: 0; padding: 0; }
.rag-tl-row { margin: 3px 0; line-height: 1.4; }
.rag-tl-date { font-family: var(--font-mono); font-weight: 600; margin-right: 6px; white-space: nowrap; }
.rag-also { font-style: italic; }
.rag-empty, .rag-panel-empty { opacity: 0.75; font-style: italic; padding: 6px 0; }
.rag-report { width: 100%; font-size: 0.9em; border-collapse: collapse; }
.rag-report td, .rag-report th { text-align: left; padding: 3px 6px; vertical-align: top;
  border-bottom: 1px solid var(--border-color-primary); }
.rag-report tr.rag-ok td:last-child { color: #15803d; }
.rag-report tr.rag-bad td:last-child { color: #b91c1c; }
.rag-report ul { margin: 2px 0 0 16px; }
"""

# Runs once when the page loads: a click on an [n] marker (anywhere, now or later)
# unfolds and scrolls to its source card instead of following the link.
JS = """
() => {
  if (window.__ragCites) return;
  window.__ragCites = true;
  document.addEventListener('click', (event) => {
    const link = event.target && event.target.closest ? event.target.closest('a[href^="#src-"]') : null;
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const card = document.getElementById(link.getAttribute('href').slice(1));
    if (!card) return;
    const turn = card.closest('details');
    if (turn) turn.open = true;
    card.scrollIntoView({behavior: 'smooth', block: 'center'});
    card.classList.remove('rag-flash');
    void card.offsetWidth;
    card.classList.add('rag-flash');
    setTimeout(() => card.classList.remove('rag-flash'), 1600);
  }, true);
}
"""


def theme():
    """A theme with local fonts only: the default one fetches Google Fonts."""
    import gradio as gr

    return gr.themes.Soft(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def _keep() -> Any:
    """gradio's "leave this output as it is"."""
    import gradio as gr

    return gr.skip()


def new_session() -> dict:
    return {"messages": [], "view": [], "sections": []}


class WebChat:
    """The handlers behind the page, around one shared Assistant."""

    def __init__(self, assistant: Assistant, settings: Settings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.uploads = Path(assistant.stats()["index_dir"]) / "uploads"
        self._index_lock = threading.Lock()  # one indexing run at a time (the index has one writer)
        self.examples = answerable_examples(assistant)  # recomputed when articles are added

    # ---- chat
    def respond(self, question: str, session: dict, sources: list[str] | None, since: Any, until: Any):
        """Generator: show the question, then the answer as it streams, then its source cards.

        Only the first update clears the question box: later ones leave it alone, so
        typing the next question while an answer streams is not wiped out.
        """
        from rag.api import QuestionError, RagError

        keep = _keep()

        session = session or new_session()
        view = list(session["view"])
        question = (question or "").strip()
        if not question:
            yield question, view, session, panel_html(session["sections"])
            return
        view.append({"role": "user", "content": message_html(question)})
        view.append({"role": "assistant", "content": '<div class="rag-pending">Searching the articles\u2026</div>'})
        yield "", view, session, panel_html(session["sections"])

        started = time.perf_counter()
        try:
            filters = filters_of(sources, since, until)
            messages = [Message(role, content) for role, content in session["messages"]]
            stream = self.assistant.stream_chat([*messages, Message("user", question)], filters)
        except (QuestionError, ValueError) as exc:  # the question goes back in its box, to be shortened or resent
            view = [*view[:-1], {"role": "assistant", "content": notice_html(f"Cannot ask this: {exc}")}]
            yield question, view, session, panel_html(session["sections"])
            return
        except RagError as exc:  # the index cannot be used now (its database is down, say): said, to ask again later
            yield question, self._unavailable(view, exc), session, panel_html(session["sections"])
            return
        turn = len(session["sections"]) + 1
        drafted = stream.answer is None  # an LLM writes it: its sentences come as each passes the check
        try:
            if drafted:
                shown = ""
                for piece in stream:
                    shown += piece
                    cited = {int(n) for n in re.findall(r"\[(\d+)\]", shown)}
                    view = [*view[:-1], {"role": "assistant", "content": answer_html(shown, turn, cited, done=False)}]
                    yield keep, view, session, panel_html(session["sections"])
            answer = stream.result()
        except RagError as exc:
            yield question, self._unavailable(view, exc), session, panel_html(session["sections"])
            return
        seconds = time.perf_counter() - started
        note = describe(filters)
        sections = [*session["sections"], self._section(turn, question, answer, seconds, note)]
        numbers = {c.n for c in answer.citations}
        hint = f"{note}: clearing the filters may find more." if note and answer.abstained else note
        hint = " ".join(x for x in (answer.notice, hint) if x)  # the LLM failed: say the answer is extractive
        if answer.abstained:
            view = [*view[:-1], {"role": "assistant", "content": answer_html(answer.text, turn, numbers, True, hint)}]
            yield keep, view, session, panel_html(sections)
        else:
            shown = ""
            for piece in [] if drafted else pieces(answer.text):
                shown += piece
                view = [*view[:-1], {"role": "assistant", "content": answer_html(shown, turn, numbers, done=False)}]
                yield keep, view, session, panel_html(sections)
            final = answer_html(answer.text, turn, numbers, note=hint, timeline=answer.timeline)
            view = [*view[:-1], {"role": "assistant", "content": final}]
        session = {
            "messages": [*session["messages"], ("user", question), ("assistant", answer.text)],
            "view": view,
            "sections": sections,
        }
        yield keep, view, session, panel_html(sections)

    @staticmethod
    def _unavailable(view: list[dict], exc: Exception) -> list[dict]:
        """The chat with the pending answer replaced by why the index cannot answer now (no traceback)."""
        return [*view[:-1], {"role": "assistant",
                             "content": notice_html(f"Cannot answer right now: {exc}. Ask again in a moment.")}]

    def _section(self, turn: int, question: str, answer: Answer, seconds: float, note: str) -> dict:
        texts: dict[str, str | None] = {h.article.id: h.article.text for h in answer.hits}  # read already
        for c in answer.citations:
            if c.article_id not in texts:
                article = self.assistant.article(c.article_id)
                texts[c.article_id] = article.text if article else None
        return {"turn": turn, "question": question, "cards": cards_html(turn, answer.citations, texts),
                "quotes": len(answer.citations), "abstained": answer.abstained, "seconds": seconds, "note": note}

    # ---- uploads
    def add_files(self, files: list[Any] | None, progress: Any = None):
        """Copy uploads into <index>/uploads/, index each, and report per file."""
        paths = [Path(getattr(f, "name", f)) for f in (files or [])]
        rows: list[str] = []
        if len(paths) > MAX_UPLOAD_FILES:
            rows.append(report_rows(f"{len(paths)} files", None, f"at most {MAX_UPLOAD_FILES} files per upload"))
            paths = []
        self.uploads.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(paths):
            name = upload_name(path.name)
            if progress is not None:
                progress((i, len(paths)), desc=f"indexing {name}")
            if not allowed_upload(path.name):
                kinds = " ".join(UPLOAD_SUFFIXES)
                rows.append(report_rows(path.name, None, f"unsupported file type (use {kinds})"))
                continue
            try:
                size = path.stat().st_size
            except OSError as exc:
                rows.append(report_rows(path.name, None, f"cannot read the upload: {exc.strerror or exc}"))
                continue
            if size > MAX_UPLOAD_MB * 1024 * 1024:
                rows.append(report_rows(path.name, None, f"larger than {MAX_UPLOAD_MB} MB"))
                continue
            target = self.uploads / name
            try:
                with self._index_lock:
                    if not target.exists() or target.read_bytes() != path.read_bytes():
                        shutil.copyfile(path, target)
                    report = self.assistant.index([target])
            except Exception as exc:  # one bad file must not stop the others or the server
                rows.append(report_rows(path.name, None, str(exc) or type(exc).__name__))
                continue
            rows.append(report_rows(path.name, report))
        if progress is not None and paths:
            progress((len(paths), len(paths)), desc="done")
        if paths:
            self.examples = answerable_examples(self.assistant)
        return (table_html(rows), None, *self.refresh())

    # ---- page state
    def refresh(self) -> tuple:
        """Status line, source choices and example questions, from the collection as it is now."""
        import gradio as gr

        return (
            status_html(self.assistant.stats()),
            gr.Dropdown(choices=collection_sources(self.assistant)),
            gr.Dataset(samples=[[q] for q in self.examples]),
            list(self.examples),
        )


def build_app(assistant: Assistant, settings: Settings) -> gr.Blocks:
    """The gradio Blocks of the web chat (not launched)."""
    import gradio as gr

    chat = WebChat(assistant, settings)
    initial = list(chat.examples)
    with gr.Blocks(title="News QA", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        session = gr.State(new_session())
        examples_state = gr.State(initial)
        with gr.Row(equal_height=False):
            gr.Markdown("### Ask the news articles", elem_id="rag-title")
            status = gr.HTML(status_html(assistant.stats()), elem_id="rag-status-box", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                chatbot = gr.Chatbot(
                    elem_id="rag-chat", label="Chat", show_label=False, height=520, render_markdown=False,
                    sanitize_html=True, allow_tags=False, feedback_options=None, buttons=["copy"], autoscroll=True,
                    placeholder="Ask about the articles: every answer quotes them, with [n] links to the passages.",
                )
                question = gr.Textbox(
                    elem_id="rag-question", show_label=False, lines=1, max_lines=6, submit_btn="Ask",
                    placeholder="Ask a question, e.g. what happened in Mariupol?  (Enter to send)", autofocus=True,
                )
                examples = gr.Dataset(
                    elem_id="rag-examples", label="Examples from the collection", components=[question],
                    samples=[[q] for q in initial], type="index", layout="gallery",
                )
            with gr.Column(scale=4):
                gr.Markdown("**Sources**")
                panel = gr.HTML(panel_html([]), elem_id="rag-sources", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Accordion("Filters (apply to the next questions)", open=False, elem_id="rag-filters"):
                sources = gr.Dropdown(
                    choices=collection_sources(assistant), value=[], multiselect=True, label="Sources",
                    elem_id="rag-filter-sources", info="only these sources (none selected: all)",
                )
                # plain text fields: gradio's date picker opened off-screen and dropped text it could not read
                with gr.Row():
                    since = gr.Textbox(label="From", placeholder="YYYY-MM-DD", elem_id="rag-since", max_lines=1)
                    until = gr.Textbox(label="Until", placeholder="YYYY-MM-DD", elem_id="rag-until", max_lines=1)
                dates_note = gr.HTML("", elem_id="rag-date-problem", js_on_load=None)
            with gr.Accordion("Add articles", open=False, elem_id="rag-add"):
                files = gr.File(
                    label=f"Upload {' '.join(UPLOAD_SUFFIXES)} (up to {MAX_UPLOAD_MB} MB each)",
                    file_count="multiple", file_types=list(UPLOAD_SUFFIXES) + [".gz"], elem_id="rag-upload",
                )
                report = gr.HTML("", elem_id="rag-report", js_on_load=None)

        ask_io = dict(inputs=[question, session, sources, since, until], outputs=[question, chatbot, session, panel])
        question.submit(chat.respond, **ask_io, api_name="ask")
        examples.click(lambda i, qs: qs[i] if qs and i is not None and i < len(qs) else "",
                       inputs=[examples, examples_state], outputs=question, queue=False, api_visibility="private"
                       ).then(chat.respond, **ask_io, api_visibility="private")
        chatbot.clear(lambda: (new_session(), panel_html([])), outputs=[session, panel], queue=False,
                      api_visibility="private")
        for field in (since, until):
            field.blur(date_problems, inputs=[since, until], outputs=dates_note, queue=False, api_visibility="private")

        def add(uploaded, progress=gr.Progress()):  # noqa: B008 (gradio's way to ask for a progress bar)
            return chat.add_files(uploaded, progress)

        files.upload(add, inputs=files, outputs=[report, files, status, sources, examples, examples_state],
                     concurrency_limit=1, concurrency_id="index", api_name="add_files")
        demo.load(chat.refresh, outputs=[status, sources, examples, examples_state], api_visibility="private")
    return demo


def warm_up(assistant: Assistant) -> None:
    """One search before the first visitor, so the first answer does not pay for lazy loading."""
    try:
        assistant.search("news")
    except Exception:  # warming up is an optimisation only
        pass


def parse_auth(value: str) -> tuple[str, str] | None:
    """RAG_WEB_AUTH "user:password" as a pair; None when unset; ValueError when malformed."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("RAG_WEB_AUTH must look like user:password")
    return user, password


def exposure_warning(host: str, port: int) -> str:
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"WARNING: the web chat listens on {host}:{port} WITHOUT a password.\n"
        "Anyone who can reach this address can read every indexed article and add files.\n"
        "Set RAG_WEB_AUTH=user:password to require a login (and put TLS in front of it).\n"
        f"{bar}"
    )


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           block: bool = True, quiet: bool = False):
    """Queue (bounded) and serve the app; with block=False return at once (call demo.close() later)."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo.launch(
        server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block,
        max_file_size=f"{MAX_UPLOAD_MB}mb", ssr_mode=False, share=False, inbrowser=False, quiet=quiet,
        theme=theme(), css=CSS, js=JS, footer_links=["settings"], show_error=False,
        auth_message="News QA: log in with the RAG_WEB_AUTH user and password." if auth else None,
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`rag web`: open the index (created empty when missing), then serve until Ctrl-C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from rag.errors import UserError

    try:
        auth = parse_auth(settings.web_auth)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    host, port = args.host, args.port
    if not is_loopback(host) and auth is None:
        print(exposure_warning(host, port), file=sys.stderr, flush=True)
    opening = open_in_background(settings)
    try:
        import_gradio()
    finally:  # the index is opened, and closed below, even when gradio cannot be imported
        assistant = opened(opening, settings)
    try:
        stats = assistant.stats()
        print(f"{plural(stats['articles'], 'article')}, {plural(stats['chunks'], 'passage')} in "
              f"{stats['index_dir']}; web chat at http://{'localhost' if is_loopback(host) else host}:{port}",
              file=sys.stderr, flush=True)
        launch(build_app(assistant, settings), host, port, auth, block=True)
    finally:
        assistant.close()
    return 0


def open_in_background(settings: Settings) -> Future[Assistant]:
    """Open the index and answer one search in a thread of its own, while the caller imports gradio.

    Both take seconds; on two cores they overlap where either leaves the interpreter (the ONNX session and
    Chroma's files load outside the GIL), so the page is up and answering sooner than one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="rag-web-open")
    try:
        return pool.submit(_open_warm, settings)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


def _open_warm(settings: Settings) -> Assistant:
    from rag.api import open_assistant

    assistant = open_assistant(settings, must_exist=False)
    warm_up(assistant)
    return assistant


def opened(opening: Future[Assistant], settings: Settings) -> Assistant:
    """The Assistant the background thread opened. A RagError (a bad or busy index) is raised as it is; any other
    failure there (two threads importing one module can, rarely, meet in the import lock) is retried here once,
    so a real problem is raised from this thread as it would be without the background start."""
    from rag.errors import RagError

    try:
        return opening.result()
    except RagError:
        raise
    except Exception:
        return _open_warm(settings)


def _skip_stub_writes(module: ModuleType) -> None:
    """gradio.component_meta: `create_or_modify_pyi` does nothing. gradio calls it for every component class it
    defines, to read the class's module source, parse it and rewrite the .pyi stub next to it (for gradio's own
    type checking): half of `import gradio`, two seconds and more of CPU here; nothing at run time reads a stub."""
    if callable(getattr(module, "create_or_modify_pyi", None)):
        module.create_or_modify_pyi = _nothing


def _skip_listener_docs(module: ModuleType) -> None:
    """gradio.events: `EventListener.set_doc` does nothing. It renders a Jinja template into the docstring of each
    event method of each component class (`help(gr.Textbox.submit)` then shows "{{ component }}" unfilled):
    a third of a second of `import gradio`, for `help()` only."""
    listener = getattr(module, "EventListener", None)
    if callable(getattr(listener, "set_doc", None)):
        listener.set_doc = _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


# what `import_gradio` changes, by module: each change is skipped when gradio no longer has what it replaces
_SKIPS = {"gradio.component_meta": _skip_stub_writes, "gradio.events": _skip_listener_docs}


class _Skipping:
    """A meta path finder for the modules of `_SKIPS`: each is found and run as usual, then changed before the
    next line of gradio uses it. (Duck-typed: importlib.abc costs more to import than some of what it saves.)"""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _SKIPS:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and hasattr(spec.loader, "exec_module"):  # an ordinary module file (else: untouched)
            spec.loader = _SkippingLoader(spec.loader, _SKIPS[fullname])
        return spec


class _SkippingLoader:
    """The module's own loader, then its change from `_SKIPS`."""

    def __init__(self, loader: Any, change: Any) -> None:
        self.loader, self.change = loader, change

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # the real loader from now on
        self.change(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename...: the real loader's, while it runs
        if name in ("loader", "change"):
            raise AttributeError(name)
        return getattr(self.loader, name)


def import_gradio() -> ModuleType:
    """`import gradio` without the two things its import does for gradio's developers only (`_SKIPS`): about 60%
    of its time. A gradio already imported is returned as it is."""
    if "gradio" in sys.modules:
        return sys.modules["gradio"]
    finder = _Skipping()
    sys.meta_path.insert(0, finder)
    try:
        import gradio
    finally:
        sys.meta_path.remove(finder)
    return gradio
