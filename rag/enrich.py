"""The one answer pipeline: any answerer's draft, grounded, then enriched the same way.

`respond(answerer, question, hits, ...)` is what every answer goes through:

1. the names-and-numbers gate (`Gate`, `Extractive.naming`): only passages of articles that mention every
   name and number of the question reach the answerer; when none does, the answer abstains saying which
   is missing, without drafting;
2. the answerer's `draft(question, hits, focus=..., dated=...)` (`Answerer`; a `Draft`: sentences, each with the
   passages it rests on; the extractive answerer's are exact quotes, an LLM's are checked claims);
3. `rag.ground.ground`: exact-span citations, every unsupported sentence dropped (numbers, names, rare
   words; `fallback` drafts);
4. the enrichment `chain`, small steps `Answer -> Answer`, each one job, in this order: the gate again on
   what the answer cites, differing figures (`differing_figures`), the timeline, syndicated copies
   (`rag.answer.with_copies`), the turn's notices, the dates the question's time words were read as.

Enrichment steps only append to the answer's text (notes marked "(Note, not a quote: ...)"), so a
stream that has shown the grounded sentences shows the rest after them. A new answerer needs only a
`draft` method; a new step, a function in `chain`. This module does not retrieve, write sentences or
check them (`rag.ground`), and knows nothing of LLMs.

The differing-figures rule (one, for every answerer): when retrieved passages of different articles, of
articles that pass the gate, give different figures for the same counted thing ("128 injured" /
"150 injured": same kind of count, different value, sentences sharing at least 0.3 of their terms, the
other one naming a word of the question) and the answer cites one of those sentences or states one of
those figures, the other side(s) are cited too (exact sentence spans, numbered after the answer's own
citations) and a note of ours gives each figure with its source, date, attribution and citation number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

from rag.answer import topic_terms, with_copies
from rag.chunk import sentence_spans
from rag.ground import MARKERS, Idf, Tokens, ground
from rag.news import attribution, citation, cited_timeline, differ_note, differing, figures
from rag.types import Answer, Article, Citation, Draft, Hit, QuestionDates

Step = Callable[[Answer], Answer]
# (question, hits) -> ("", the hits of articles naming every name and number of the question), or (why not, hits)
Gate = Callable[[str, list[Hit]], tuple[str, list[Hit]]]


class Answerer(Protocol):
    """What the pipeline needs of an answerer: a draft from the passages it is given (already gated)."""

    def draft(self, question: str, hits: list[Hit], focus: str = "", dated: bool = False) -> Draft: ...


def respond(draft: Callable[..., Draft], question: str, hits: list[Hit], tokens: Tokens, idf: Idf, gate: Gate,
            steps: Sequence[Step], focus: str = "", dated: bool = False, min_support: float = 0.2,
            listed: Sequence[Hit] | None = None) -> Answer:
    """The answer to `question` from `hits` by an answerer's `draft` (`Answerer.draft`): gated, drafted,
    grounded and enriched (module doc). `focus` (a follow-up) and `dated` (the hits were filtered by the
    question's own time words) are passed on to it. `Answer.hits` are those it was drafted from, or `listed`."""
    answer = ground(gated(draft, question, hits, gate, focus, dated), tokens, idf, min_support)
    return enrich(answer, steps, listed)


def gated(draft: Callable[..., Draft], question: str, hits: list[Hit], gate: Gate, focus: str = "",
          dated: bool = False) -> Draft:
    """The draft from the hits that pass the gate; the gate's abstention when none does."""
    missing, named = gate(question, hits)
    if missing:
        return Draft(question, tuple(hits), abstention=missing)
    return draft(question, named, focus=focus, dated=dated)


def enrich(answer: Answer, steps: Sequence[Step], hits: Sequence[Hit] | None = None) -> Answer:
    """`answer` through each step in turn; with `hits`, the answer's hits are those (all the turn retrieved)."""
    if hits is not None:
        answer = replace(answer, hits=tuple(hits))
    for step in steps:
        answer = step(answer)
    return answer


def chain(tokens: Tokens, gate: Gate, asked: QuestionDates | None = None, note: str = "") -> list[Step]:
    """The enrichment steps of one turn: `asked`, the dates its time words were read as; `note`, its notice."""
    return [partial(names_gate, gate=gate), partial(figures_step, tokens=tokens, gate=gate), timeline_step,
            with_copies, partial(noticed, note=note), partial(dated, asked=asked)]


def names_gate(answer: Answer, gate: Gate) -> Answer:
    """The gate's abstention when no article the answer cites mentions every name and number of the question
    (a passage about another place or year does not answer it)."""
    cited = {c.article_id for c in answer.citations}
    if answer.abstained or not cited:
        return answer
    missing, _ = gate(answer.question, [h for h in answer.hits if h.article.id in cited])
    if not missing:
        return answer
    return Answer(question=answer.question, text=missing, abstained=True, hits=answer.hits, notice=answer.notice)


def figures_step(answer: Answer, tokens: Tokens, gate: Gate) -> Answer:
    """The other side of any figure the answer gives that the gated passages disagree on (module doc)."""
    if answer.abstained:
        return answer
    _, named = gate(answer.question, list(answer.hits))
    text, citations = differing_figures(answer.question, answer.text, list(answer.citations), named, tokens)
    if text == answer.text:
        return answer
    return replace(answer, text=text, citations=tuple(citations))


def timeline_step(answer: Answer) -> Answer:
    """For a timeline question, the cited sentences by the day they happened, oldest first."""
    return answer if answer.abstained else replace(answer, timeline=cited_timeline(answer.question, answer.citations))


def noticed(answer: Answer, note: str) -> Answer:
    """The turn's notice (a question not in English, a search from BM25 alone) before the answerer's own."""
    if not note or note in answer.notice:
        return answer
    return replace(answer, notice=" ".join(x for x in (note, answer.notice) if x))


def dated(answer: Answer, asked: QuestionDates | None) -> Answer:
    """The answer saying which dates its question's time words were read as."""
    if asked is None:
        return answer
    return replace(answer, dates=asked, notice=" ".join(x for x in (asked.note(), answer.notice) if x))


# ---------------------------------------------------------------- differing figures


@dataclass(frozen=True)
class _Figure:
    """A sentence of a retrieved passage that gives counts ("at least 128 people were injured")."""

    article: Article
    start: int
    end: int
    terms: frozenset[str]
    figures: tuple[tuple[int, str], ...]

    @property
    def text(self) -> str:
        return self.article.text[self.start:self.end]


def differing_figures(question: str, text: str, citations: list[Citation], hits: list[Hit], tokens: Tokens
                      ) -> tuple[str, list[Citation]]:
    """(text, citations) showing both sides when passages `hits` of different articles give different figures
    for what the answer counts (the rule of the module doc): a figure sentence the answer cites, or whose
    figure it states, is set against the others; the sentences not cited yet get citations (numbered after
    the existing ones) and a note of ours, marked as not a quote, names each figure with its source."""
    pool = _figure_sentences(hits, tokens)
    if len(pool) < 2:
        return text, citations
    stated = set(figures(MARKERS.sub("", text)))
    anchors = [s for s in pool if _cited(s, citations) is not None or stated & set(s.figures)]
    asked = set(topic_terms(tokens, question))
    differ: list[tuple[str, list[tuple[_Figure, int]]]] = []
    for anchor in anchors:
        for value, what in anchor.figures:
            if any(w == what for w, _ in differ):
                continue
            others: dict[int, _Figure] = {}
            for s in pool:
                if s.article.id == anchor.article.id or (asked and not asked & s.terms):
                    continue  # the same article, or not about the question
                for other in differing(value, what, anchor.terms, s.terms, list(s.figures)):
                    others.setdefault(other, s)
            if others:
                differ.append((what, [(anchor, value), *((s, v) for v, s in others.items())]))
    if not differ:
        return text, citations
    citations = list(citations)
    for _, sides in differ:
        for s, _ in sides:
            if _cited(s, citations) is None:
                citations.append(citation(len(citations) + 1, s.article, s.start, s.end))
    note = differ_note([(what, [(value, _cited(s, citations), attribution(s.text)) for s, value in sides])
                        for what, sides in differ])
    return f"{text} {note}", citations


def _figure_sentences(hits: list[Hit], tokens: Tokens) -> list[_Figure]:
    """The sentences of the retrieved passages that give counts, in retrieval order, each once."""
    found: list[tuple[Article, int, int, tuple[tuple[int, str], ...]]] = []
    seen: set[tuple[str, int]] = set()
    for hit in hits:
        text = hit.article.text
        for a, b in sentence_spans(text, hit.chunk.start, hit.chunk.end):
            if (hit.article.id, a) in seen:
                continue
            seen.add((hit.article.id, a))
            counts = tuple(figures(text[a:b]))
            if counts:
                found.append((hit.article, a, b, counts))
    terms = tokens([article.text[a:b] for article, a, b, _ in found]) if found else []
    return [_Figure(article, a, b, frozenset(t), counts) for (article, a, b, counts), t in zip(found, terms)]


def _cited(s: _Figure, citations: list[Citation]) -> Citation | None:
    """The citation whose quote contains sentence `s`, if any."""
    return next((c for c in citations if c.article_id == s.article.id and c.start <= s.start and s.end <= c.end),
                None)


__all__ = ["Answerer", "Gate", "Step", "chain", "dated", "differing_figures", "enrich", "figures_step", "gated",
           "names_gate", "noticed", "respond", "timeline_step"]
