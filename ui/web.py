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
import ipaddress
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.ingest import SUFFIXES
from rag.types import Answer, Citation, Filters, IndexReport, Message, TimelinePoint

if TYPE_CHECKING:
    import argparse

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
    return f"{body}{timeline_html(timeline, turn, numbers)}{extra}"


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


def draft_html(text: str) -> str:
    """An LLM's answer while it is being written (its [n] markers become links once it is checked)."""
    return f'<div class="rag-draft">{esc(text)}</div>'


def message_html(text: str) -> str:
    """A person's question, shown as text."""
    return f'<div class="rag-question">{esc(text)}</div>'


def notice_html(text: str, kind: str = "error") -> str:
    return f'<div class="rag-{kind}">{esc(text)}</div>'


def context_of(article_text: str | None, citation: Citation, chars: int = CONTEXT_CHARS) -> tuple[str, str, str]:
    """(before, quote, after): the quote with up to `chars` of its article on each side."""
    text = article_text or ""
    if text[citation.start:citation.end] != citation.quote:
        return "", citation.quote, ""
    lo, hi = max(0, citation.start - chars), min(len(text), citation.end + chars)
    before, after = text[lo:citation.start], text[citation.end:hi]
    if lo > 0:  # start and end on a word boundary, marked as cut
        before = "\u2026" + before.split(" ", 1)[-1] if " " in before else "\u2026" + before
    if hi < len(text):
        after = (after.rsplit(" ", 1)[0] if " " in after else after) + "\u2026"
    return before, citation.quote, after


def card_html(turn: int, citation: Citation, context: tuple[str, str, str]) -> str:
    """One source card: title (a link only for http(s) urls), source, date, quote in its context."""
    c = citation
    url = safe_url(c.url)
    title = esc(c.title or "(untitled)")
    if url:
        title = f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer nofollow">{title}</a>'
    meta = [esc(x) for x in (c.source, c.published) if x]
    if c.attribution:
        meta.append(f"according to {esc(c.attribution)}")
    if c.also_reported_by:
        meta.append(f'<span class="rag-also">also reported by {esc(", ".join(c.also_reported_by))}</span>')
    where = c.url if c.url and not url else ("" if url else c.path)
    if where:
        meta.append(f'<span class="rag-path">{esc(where)}</span>')
    before, quote, after = context
    return (
        f'<div class="rag-card" id="src-{turn}-{c.n}" data-n="{c.n}">'
        f'<div class="rag-card-head"><span class="rag-n">[{c.n}]</span> <span class="rag-title">{title}</span></div>'
        f'<div class="rag-meta">{" · ".join(meta)}</div>'
        f'<div class="rag-quote">{esc(before)}<mark>{esc(quote)}</mark>{esc(after)}</div>'
        "</div>"
    )


def section_html(section: dict, open_: bool = True) -> str:
    """The sources of one answer (a dict made by `WebChat._section`), as a foldable part of the panel."""
    turn, cards = section["turn"], section["cards"]
    if section["abstained"]:
        body = ('<div class="rag-empty">No passage in the articles answers this question, '
                'so there is nothing to cite.</div>')
        count = "no sources"
    else:
        body = "".join(cards)
        count = f"{len(cards)} source{'s' if len(cards) != 1 else ''}"
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
        return ('<div class="rag-panel-empty">Sources appear here: one card per quoted passage. '
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
        parts.append(f"{len(report.duplicates)} duplicate (same text already stored)")
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
    return (
        f'<div class="rag-status" id="rag-status"><b>{int(stats.get("articles", 0)):,}</b> articles · '
        f'<b>{int(stats.get("chunks", 0)):,}</b> passages · '
        + (f"<b>{sources:,}</b> sources · " if sources else "")
        + f'embedder <code>{esc(stats.get("embedder", ""))}</code> · last indexed {esc(when)}</div>'
    )


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
_NAME = re.compile(r"\b([A-Z][a-z]+(?:[- ][A-Z][a-z]+){0,2})\b")


def question_from_title(title: str) -> list[str]:
    """Names in a title (not its first word, which is capitalised anyway) turned into questions."""
    names = []
    for match in _NAME.finditer(title):
        name = match.group(1)
        if match.start() == 0 or len(name) < 3 or name.split()[0].lower() in _STOP:
            continue
        names.append(name)
    return [f"What is reported about {name}?" for name in names]


def example_questions(titles: list[str], limit: int = EXAMPLES) -> list[str]:
    """A few questions the collection can answer, made from article titles, no name twice.

    Names found in titles come first (one per title, then a second, ...); titles
    without names fill the rest as "What happened: <title>?".
    """
    seen: set[str] = set()
    out: list[str] = []
    rounds = [question_from_title(t) for t in titles]
    for depth in range(3):
        for questions in rounds:
            if depth < len(questions) and questions[depth] not in seen:
                seen.add(questions[depth])
                out.append(questions[depth])
                if len(out) >= limit:
                    return out
    for title, questions in zip(titles, rounds):
        if len(out) >= limit:
            break
        short = " ".join(title.split())
        if not questions and short:
            short = short if len(short) <= 70 else short[:70].rsplit(" ", 1)[0] + "\u2026"
            question = f"What happened: {short.rstrip('.?!')}?"
            if question not in seen:
                seen.add(question)
                out.append(question)
    return out


def answerable_examples(assistant: Assistant, limit: int = EXAMPLES) -> list[str]:
    """Example questions from a spread of titles, kept only when the assistant answers them."""
    out = []
    for question in example_questions(sample_titles(assistant), limit * 3):
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


def sample_titles(assistant: Assistant, limit: int = 24) -> list[str]:
    """Titles of a spread of articles (evenly over ids, so the sample does not depend on file order)."""
    ids = list(assistant.article_ids())
    if len(ids) > limit:
        step = len(ids) / limit
        ids = [ids[int(i * step)] for i in range(limit)]
    titles = []
    for article_id in ids:
        article = assistant.article(article_id)
        if article is not None and article.title:
            titles.append(article.title)
    return titles


def parse_day(value: Any, label: str) -> date | None:
    """A date from the date pickers (None when empty); ValueError naming the field when not a date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).date()
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ValueError(f"{label} date {text!r} is not a date like 2022-03-01") from None


def filters_of(sources: list[str] | None, since: Any, until: Any) -> Filters:
    return Filters(tuple(sources or ()), parse_day(since, "from"), parse_day(until, "until"))


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
.rag-draft { opacity: 0.8; }
.rag-note { font-size: 0.85em; opacity: 0.75; margin-top: 4px; }
.rag-turn { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 10px; margin-bottom: 8px; }
.rag-turn summary { cursor: pointer; display: flex; flex-direction: column; }
.rag-q { font-weight: 600; }
.rag-count { font-size: 0.8em; opacity: 0.7; }
.rag-card { border-top: 1px solid var(--border-color-primary); padding: 8px 2px; scroll-margin: 12px;
  transition: background-color 0.6s; }
.rag-card.rag-flash { background-color: rgba(250, 204, 21, 0.35); }
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
        from rag.api import QuestionError

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
        except (QuestionError, ValueError) as exc:
            view = [*view[:-1], {"role": "assistant", "content": notice_html(f"Cannot ask this: {exc}")}]
            yield keep, view, session, panel_html(session["sections"])
            return
        drafted = stream.answer is None  # an LLM writes it: show its draft as it comes, the checked answer after
        if drafted:
            shown = ""
            for piece in stream:
                shown += piece
                view = [*view[:-1], {"role": "assistant", "content": draft_html(shown)}]
                yield keep, view, session, panel_html(session["sections"])
        answer = stream.result()
        seconds = time.perf_counter() - started
        turn = len(session["sections"]) + 1
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

    def _section(self, turn: int, question: str, answer: Answer, seconds: float, note: str) -> dict:
        cards = []
        texts: dict[str, str | None] = {h.article.id: h.article.text for h in answer.hits}  # read already
        for c in answer.citations:
            if c.article_id not in texts:
                article = self.assistant.article(c.article_id)
                texts[c.article_id] = article.text if article else None
            cards.append(card_html(turn, c, context_of(texts[c.article_id], c)))
        return {"turn": turn, "question": question, "cards": cards, "abstained": answer.abstained,
                "seconds": seconds, "note": note}

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
                    elem_id="rag-chat", label="Chat", height=520, render_markdown=False, sanitize_html=True,
                    allow_tags=False, feedback_options=None, buttons=["copy"], autoscroll=True,
                    placeholder="Ask about the articles: every answer quotes them, with [n] links to the passages.",
                )
                question = gr.Textbox(
                    elem_id="rag-question", show_label=False, lines=1, max_lines=6, submit_btn="Ask",
                    placeholder="Ask a question, e.g. what happened in Mariupol?  (Enter to send)",
                    max_length=settings.max_question_chars, autofocus=True,
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
                with gr.Row():
                    since = gr.DateTime(include_time=False, type="string", label="From", elem_id="rag-since")
                    until = gr.DateTime(include_time=False, type="string", label="Until", elem_id="rag-until")
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


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    from rag.cli import UserError, open_assistant

    try:
        auth = parse_auth(settings.web_auth)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    host, port = args.host, args.port
    if not is_loopback(host) and auth is None:
        print(exposure_warning(host, port), file=sys.stderr, flush=True)
    assistant = open_assistant(settings, must_exist=False)
    stats = assistant.stats()
    print(f"{stats['articles']} articles, {stats['chunks']} passages in {stats['index_dir']}; "
          f"web chat at http://{'localhost' if is_loopback(host) else host}:{port}", file=sys.stderr, flush=True)
    try:
        warm_up(assistant)
        launch(build_app(assistant, settings), host, port, auth, block=True)
    finally:
        assistant.close()
    return 0
