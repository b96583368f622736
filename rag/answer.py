"""Answer: extractive, cited answers from retrieved passages (no LLM needed).

Scores every sentence of the retrieved passages by how much of the question's
weighted vocabulary it covers (IDF over the whole index), blended with how well
its passage matched. Keeps the best sentences, drops near-duplicates, adds the
rest of a paragraph that is mostly on topic, orders them by article then
position, and cites each run of adjacent sentences with its exact span.
Abstains ("not found in the articles") when the best evidence is too weak, or
when no retrieved article mentions all the names and numbers the question
gives ("Kestrelmouth", "1954"); only articles that do are quoted.

It does not paraphrase or summarise: every word of the answer body is quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache

from rag.chunk import sentence_spans
from rag.dates import MONTHS, WEEKDAYS
from rag.news import (
    attribution,
    citation,
    cited_timeline,
    differ_note,
    differing,
    event_date,
    figures,
    is_timeline_question,
    outlet,
)
from rag.types import Answer, Citation, Hit

NOT_FOUND = "Not found in the articles: none of the indexed articles answers this question."
# words that say what kind of answer is wanted, not what it is about
QUESTION_WORDS = {
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "happen", "happened",
    "happening", "latest", "news", "tell", "know", "recent", "recently", "report", "reported",
    "say", "said", "week", "year", "day", "today", "new",
}
# names and numbers in a question ("Kestrelmouth", "1954"): capitalised words (not the first) and words with digits
_KEY = re.compile(r"(?<=\s)[A-Z][\w'\u2019-]*|(?<![\w.])\w*\d[\w-]*")
_NOT_NAMES = frozenset([*MONTHS, *WEEKDAYS, "i"])  # capitalised, but times (the date filter's), not names
Tokens = Callable[[list[str]], list[list[str]]]


def topic_terms(tokens: Tokens, text: str) -> list[str]:
    """The index terms of `text` that say what it is about, without those of `QUESTION_WORDS` (compared as
    index terms: "why" is "whi")."""
    *shaping, terms = tokens([*sorted(QUESTION_WORDS), text])
    stop = {t for words in shaping for t in words}
    return [t for t in terms if t not in stop]


@dataclass(frozen=True)
class _Sentence:
    article_rank: int
    start: int
    end: int
    terms: frozenset[str]
    score: float  # relevance: decides whether to answer at all
    rank_score: float  # relevance plus novelty: decides which sentences answer
    hit: Hit


class Extractive:
    """Picks and cites sentences; `tokens` and `idf` come from the lexical index."""

    def __init__(self, tokens: Tokens, idf: Callable[[list[str]], dict[str, float]],
                 max_sentences: int = 4, threshold: float = 0.3, novelty: float = 0.1) -> None:
        self.tokens = tokens
        self.idf = idf
        # an article's terms, for the names check: the same articles come back question after question
        self._article_terms = lru_cache(maxsize=512)(lambda title, text: frozenset(tokens([f"{title}\n{text}"])[0]))
        self.novelty = novelty
        self.max_sentences = max_sentences
        self.threshold = threshold

    def answer(self, question: str, hits: list[Hit], focus: str = "", dated: bool = False) -> Answer:
        """An answer to `question` from `hits`; `focus` (a follow-up) must be covered too. `dated`: the hits
        were filtered by the question's own time words, so a question with nothing else ("what happened this
        week?") is answered with the opening sentence of each story found."""
        topic = topic_terms(self.tokens, question)
        weights = self.idf(list(dict.fromkeys(topic)) or self._question_terms(question))
        everything = hits
        missing, hits = self.naming(question, hits)
        if missing:
            return Answer(question=question, text=missing, abstained=True, hits=tuple(everything))
        sentences: list[_Sentence] = []
        if dated and hits and not focus and not topic:
            chosen = self._leads(hits)  # "what happened?" (its date words taken as a filter): the stories found
        else:
            sentences = self._score(hits[:8], weights, self._question_terms(focus) if focus else [])
            chosen = self._choose(sentences, weights)
        if not chosen:
            return Answer(question=question, text=NOT_FOUND, abstained=True, hits=tuple(everything))
        differ: list[tuple[str, list[tuple[_Sentence, int]]]] = []
        if not focus and sentences:
            chosen, differ = _conflicts(chosen, sentences, max(self.threshold, max(s.score for s in sentences) * 0.5))
        if is_timeline_question(question):
            chosen = _chronological(chosen)
        text, citations = cite(chosen)
        if differ:
            text += " " + _differ_note(differ, chosen, citations)
        return Answer(question=question, text=text, citations=tuple(citations), hits=tuple(everything),
                      timeline=cited_timeline(question, citations))

    def naming(self, question: str, hits: list[Hit]) -> tuple[str, list[Hit]]:
        """("", the hits of the articles that mention every name and number of the question), or (the
        abstention saying which of them no article found mentions, the hits) when none does. A passage about
        another place or year does not answer: "the 1954 contest" is not "the 2022 contest"."""
        words = [w for w in _KEY.findall(question) if w.lower() not in _NOT_NAMES]
        keys = {stem: word for word in words for stem in topic_terms(self.tokens, word)}
        if not keys or not hits:
            return "", hits
        has = {h.article.id: self._article_terms(h.article.title, h.article.text) & keys.keys() for h in hits}
        kept = [h for h in hits if len(has[h.article.id]) == len(keys)]
        if kept:
            return "", kept
        nowhere = [word for stem, word in keys.items() if not any(stem in found for found in has.values())]
        if nowhere:
            return f"Not found in the articles: none of the articles found mentions {' or '.join(nowhere)}.", hits
        *most, last = keys.values()
        return f"Not found in the articles: none of the articles found mentions {', '.join(most)} and {last} " \
               "together.", hits

    def _leads(self, hits: list[Hit]) -> list[_Sentence]:
        """The opening sentence of each article found, newest last: an answer to a question with no topic."""
        leads: list[_Sentence] = []
        for hit in hits:
            if any(s.hit.article.id == hit.article.id for s in leads) or len(leads) >= self.max_sentences:
                continue
            text = hit.article.text
            spans = [(a, b) for a, b in sentence_spans(text) if _one_line(text[a:b]) != hit.article.title.strip()]
            if spans:
                a, b = spans[0]
                leads.append(_Sentence(len(leads), a, b, frozenset(), 1.0, 1.0, hit))
        return sorted(leads, key=lambda s: (s.hit.article.published or "9999", s.article_rank))

    def _question_terms(self, question: str) -> list[str]:
        """The question's topic terms, else (a question of question words only) all its terms."""
        return list(dict.fromkeys(topic_terms(self.tokens, question) or self.tokens([question])[0]))

    def _score(self, hits: list[Hit], weights: dict[str, float], focus: list[str]) -> list[_Sentence]:
        spans = [(rank, hit, a, b) for rank, hit in enumerate(hits)
                 for a, b in sentence_spans(hit.article.text, hit.chunk.start, hit.chunk.end)]
        token_lists = self.tokens([hit.article.text[a:b] for _, hit, a, b in spans])
        total = sum(weights.values()) or 1.0
        question_terms = set(weights)
        article_rank = {aid: i for i, aid in enumerate(dict.fromkeys(h.article.id for h in hits))}
        out: dict[tuple[str, int], _Sentence] = {}
        for (rank, hit, a, b), toks in zip(spans, token_lists):
            terms = frozenset(toks)
            if focus and not terms & set(focus):
                continue
            coverage = sum(w for t, w in weights.items() if t in terms) / total
            score = 0.75 * coverage + 0.25 * max(hit.dense, 0.0) - 0.02 * rank
            # a sentence that only restates the question answers nothing: favour new content
            novel = min(len(terms - question_terms) / 6, 1.0)
            key = (hit.article.id, a)
            if key not in out or out[key].score < score:
                out[key] = _Sentence(article_rank[hit.article.id], a, b, terms, score, score + self.novelty * novel,
                                     hit)
        return list(out.values())

    def _choose(self, sentences: list[_Sentence], weights: dict[str, float]) -> list[_Sentence]:
        best = max((s.score for s in sentences), default=0.0)
        if best < self.threshold:
            return []
        floor = max(self.threshold, best * 0.6)
        chosen: list[_Sentence] = []
        for sentence in sorted((s for s in sentences if s.score >= floor), key=lambda s: -s.rank_score):
            if len(chosen) >= self.max_sentences:
                break
            if not any(_similar(sentence, c) for c in chosen):
                chosen.append(sentence)
        chosen += _paragraph_neighbours(chosen, sentences)
        return sorted(chosen, key=lambda s: (s.article_rank, s.start))


def _conflicts(chosen: list[_Sentence], pool: list[_Sentence], floor: float
               ) -> tuple[list[_Sentence], list[tuple[str, list[tuple[_Sentence, int]]]]]:
    """Chosen sentences plus relevant ones of other articles giving a different figure for the same thing
    ("at least 128 injured" vs "at least 150 injured"), and the disagreements: (what is counted, [(sentence,
    the figure it gives)])."""
    relevant = [s for s in pool if s.score >= floor]
    found: list[tuple[str, list[tuple[_Sentence, int]]]] = []
    chosen = list(chosen)
    for c in list(chosen):
        text = c.hit.article.text[c.start:c.end]
        for value, what in figures(text):
            if any(what == w for w, _ in found):
                continue
            others: dict[int, _Sentence] = {}
            for s in sorted(relevant, key=lambda s: -s.score):
                if s.hit.article.id == c.hit.article.id:
                    continue
                for other in differing(value, what, c.terms, s.terms, figures(s.hit.article.text[s.start:s.end])):
                    others.setdefault(other, s)
            if others:
                found.append((what, [(c, value), *((s, v) for v, s in others.items())]))
                for s in [c, *others.values()]:
                    if not any(x.hit.article.id == s.hit.article.id and x.start == s.start for x in chosen):
                        chosen.append(s)
    return sorted(chosen, key=lambda s: (s.article_rank, s.start)), found


def _differ_note(differ: list[tuple[str, list[tuple[_Sentence, int]]]], chosen: list[_Sentence],
                 citations: list[Citation]) -> str:
    """Our sentence (not a quote) saying the sources disagree (see `rag.news.differ_note`)."""
    number = {(s.hit.article.id, s.start): n for n, run in enumerate(_runs(chosen), 1) for s in run}
    return differ_note([(what, [(value, citations[number[(s.hit.article.id, s.start)] - 1],
                                 attribution(s.hit.article.text[s.start:s.end])) for s, value in sides])
                        for what, sides in differ])


def _chronological(chosen: list[_Sentence]) -> list[_Sentence]:
    """Articles oldest first (by publication date, else the earliest date a sentence states), sentences in order."""
    first: dict[str, date] = {}
    for s in chosen:
        day = event_date(s.hit.article.text[s.start:s.end], s.hit.article.published)
        if day is not None:
            first[s.hit.article.id] = min(first.get(s.hit.article.id, day), day)
    return sorted(chosen, key=lambda s: (first.get(s.hit.article.id, date.max), s.article_rank, s.start))


def _similar(a: _Sentence, b: _Sentence) -> bool:
    """Near-duplicate sentences (syndicated copies, repeated quotes)."""
    if not a.terms or not b.terms:
        return False
    return len(a.terms & b.terms) / len(a.terms | b.terms) > 0.7


def _paragraph_neighbours(chosen: list[_Sentence], pool: list[_Sentence]) -> list[_Sentence]:
    """Sentences between or right after chosen ones in the same paragraph.

    A paragraph whose sentences were mostly chosen is about the question; its
    connecting sentences ("Electricity was also cut...") belong to the answer.
    """
    extra: list[_Sentence] = []
    picked = {(c.hit.article.id, c.start) for c in chosen}
    for c in chosen:
        text = c.hit.article.text
        para_end = text.find("\n", c.end)
        para_end = len(text) if para_end < 0 else para_end
        after = [s for s in pool if s.hit.article.id == c.hit.article.id and c.end < s.start < para_end]
        after.sort(key=lambda s: s.start)
        if after and (after[0].hit.article.id, after[0].start) not in picked:
            nxt = after[0]
            in_para = [s for s in pool if s.hit.article.id == c.hit.article.id
                       and text.rfind("\n", 0, s.start) == text.rfind("\n", 0, c.start)]
            share = sum((s.hit.article.id, s.start) in picked for s in in_para) / max(len(in_para), 1)
            if share >= 0.5 and not any(_similar(nxt, o) for o in chosen + extra):
                extra.append(nxt)
                picked.add((nxt.hit.article.id, nxt.start))
    return extra


def with_copies(answer: Answer) -> Answer:
    """The answer naming, for each cited syndicated story, the other outlets that published it (from the copies
    its hits carry): in `Citation.also_reported_by` and in a note after the text. Done once, by the facade,
    for every answerer."""
    copies = {h.article.id: h for h in answer.hits if h.copies}
    if answer.abstained or not copies or any(c.also_reported_by for c in answer.citations):
        return answer  # nothing to add, or added already
    citations = tuple(replace(c, also_reported_by=tuple(dict.fromkeys(
        outlet(a) for a in copies[c.article_id].copies if outlet(a) != outlet(copies[c.article_id].article))))
        if c.article_id in copies else c for c in answer.citations)
    also = [f"[{c.n}] was also reported by {', '.join(c.also_reported_by)}" for c in citations if c.also_reported_by]
    text = answer.text + (" (Note, not a quote: the same story " + "; ".join(also) + ".)" if also else "")
    return replace(answer, text=text, citations=citations)


def cite(chosen: list[_Sentence]) -> tuple[str, list[Citation]]:
    """Answer text with [n] after each sentence; one citation per run of adjacent sentences."""
    citations: list[Citation] = []
    parts: list[str] = []
    for run in _runs(chosen):
        article = run[0].hit.article
        start, end = run[0].start, run[-1].end
        n = len(citations) + 1
        citations.append(citation(n, article, start, end))
        parts += [f"{_one_line(article.text[s.start:s.end])} [{n}]" for s in run]
    return " ".join(parts), citations


def _runs(chosen: list[_Sentence]) -> list[list[_Sentence]]:
    """Group sentences that follow each other in one paragraph of one article."""
    runs: list[list[_Sentence]] = []
    for s in chosen:
        last = runs[-1][-1] if runs else None
        if (last is not None and last.hit.article.id == s.hit.article.id
                and not last.hit.article.text[last.end:s.start].strip()
                and "\n" not in last.hit.article.text[last.end:s.start]):
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
