"""Answer: extractive, cited answers from retrieved passages (no LLM needed).

Scores every sentence of the retrieved passages by how much of the question's
weighted vocabulary it covers (IDF over the whole index), blended with how well
its passage matched. Keeps the best sentences, drops near-duplicates, adds the
rest of a paragraph that is mostly on topic, orders them by article then
position, and cites each run of adjacent sentences with its exact span.
Abstains ("not found in the articles") when the best evidence is too weak, or
when no retrieved article mentions all the names and numbers the question
gives ("Kestrelmouth", "1954"); only articles that do are quoted. An
abstention over a word the index does not know suggests a close spelling it
does ("did you mean Mariupol?"). `looks_english` tells a question that is not
in English (the default embedder reads English).

It does not paraphrase or summarise: every word of the answer body is quoted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache

from rag.chunk import sentence_spans
from rag.clean import is_junk
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
# how each front end words an abstention (the core's NOT_FOUND, Slack's "I don't know: ..."), for chat history
_ABSTAINED = re.compile(r"\s*(?:not found in the articles\b|i don[\u2019']?t know\b)", re.I)


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
                 max_sentences: int = 4, threshold: float = 0.3, novelty: float = 0.1,
                 vocabulary: Callable[[], Collection[str]] = tuple) -> None:
        self.tokens = tokens
        self.idf = idf
        self.vocabulary = vocabulary  # the lexical index's terms, for "did you mean"
        self._spellings: tuple[tuple[int, int], dict[tuple[str, int], list[str]]] = ((0, 0), {})
        self._shaping = frozenset(t for words in tokens(sorted(QUESTION_WORDS)) for t in words)
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
            text = NOT_FOUND[:-1] + self.did_you_mean(re.findall(r"\w[\w'\u2019-]*", question), everything)
            return Answer(question=question, text=text, abstained=True, hits=tuple(everything))
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
            return (f"Not found in the articles: none of the articles found mentions {' or '.join(nowhere)}"
                    f"{self.did_you_mean(nowhere, hits)}"), hits
        *most, last = keys.values()
        return f"Not found in the articles: none of the articles found mentions {', '.join(most)} and {last} " \
               "together.", hits

    def did_you_mean(self, words: list[str], hits: list[Hit] | tuple[Hit, ...]) -> str:
        """"; did you mean Mariupol?" for the words the index has no term for but a close spelling of ("." when
        none has one), spelt as the articles found spell it."""
        found = [s for s in self.suggestions(words, hits).values() if s]
        return f"; did you mean {' and '.join(dict.fromkeys(found))}?" if found else "."

    def suggestions(self, words: list[str], hits: list[Hit] | tuple[Hit, ...] = ()) -> dict[str, str]:
        """{word: its closest index term, spelt as in the hits' articles (else as the term), or ""} for the words
        of one term that the lexical index does not know."""
        vocabulary = self.vocabulary()
        out: dict[str, str] = {}
        for word, terms in zip(words, self.tokens(words)):
            if len(terms) != 1 or terms[0] in vocabulary or len(terms[0]) < 4:
                continue
            close = difflib.get_close_matches(terms[0], self._near(vocabulary, terms[0]), n=1, cutoff=0.75)
            if close and close[0] in self._shaping:
                continue  # "hapened": a misspelt question word, not a topic to suggest
            out[word] = _spelling(close[0], word, hits, self.tokens) if close else ""
        return out

    def _near(self, vocabulary: Collection[str], term: str) -> list[str]:
        """Index terms of the same first letter, a length within 2 (buckets built once per vocabulary) and all but
        two of its letters: the only ones difflib compares, so a suggestion takes milliseconds on a large index."""
        if self._spellings[0] != (id(vocabulary), len(vocabulary)):
            buckets: dict[tuple[str, int], list[str]] = {}
            for t in vocabulary:
                if t[:1].isalpha():
                    buckets.setdefault((t[0], len(t)), []).append(t)
            self._spellings = ((id(vocabulary), len(vocabulary)), buckets)
        buckets = self._spellings[1]
        letters, need = set(term), len(set(term)) - 2  # a close spelling shares all but two of its letters
        return [t for n in range(len(term) - 2, len(term) + 3) for t in buckets.get((term[0], n), ())
                if len(letters.intersection(t)) >= need]

    def _leads(self, hits: list[Hit]) -> list[_Sentence]:
        """The opening sentence of each article found, newest last: an answer to a question with no topic."""
        leads: list[_Sentence] = []
        for hit in hits:
            if any(s.hit.article.id == hit.article.id for s in leads) or len(leads) >= self.max_sentences:
                continue
            text = hit.article.text
            spans = [(a, b) for a, b in sentence_spans(text) if _one_line(text[a:b]) != hit.article.title.strip()
                     and not is_junk(text, a, b)]  # captions, credits, headlines, boilerplate: rag.clean
            if spans:
                a, b = spans[0]
                leads.append(_Sentence(len(leads), a, b, frozenset(), 1.0, 1.0, hit))
        return sorted(leads, key=lambda s: (s.hit.article.published or "9999", s.article_rank))

    def _question_terms(self, question: str) -> list[str]:
        """The question's topic terms, else (a question of question words only) all its terms."""
        return list(dict.fromkeys(topic_terms(self.tokens, question) or self.tokens([question])[0]))

    def _score(self, hits: list[Hit], weights: dict[str, float], focus: list[str]) -> list[_Sentence]:
        spans = [(rank, hit, a, b) for rank, hit in enumerate(hits)
                 for a, b in sentence_spans(hit.article.text, hit.chunk.start, hit.chunk.end)
                 if not is_junk(hit.article.text, a, b)]  # captions, credits, headlines, boilerplate: rag.clean
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


def _spelling(term: str, asked: str, hits: list[Hit] | tuple[Hit, ...], tokens: Tokens) -> str:
    """How the hits' articles write the index term `term` (its most frequent form), else the term itself, with
    the asked word's capital."""
    seen: dict[str, int] = {}
    for hit in hits:
        for word in re.findall(rf"\b{re.escape(term[:3])}\w*", hit.article.text, re.I):
            seen[word] = seen.get(word, 0) + 1
    forms = sorted(seen, key=lambda w: -seen[w])
    for form, terms in zip(forms, tokens(forms)):
        if terms == [term]:
            return form
    if tokens([term]) != [[term]]:
        return ""  # a stem that is no word ("ukrain"): better no suggestion than a misspelt one
    return term.capitalize() if asked[:1].isupper() else term


def is_abstention(text: str) -> bool:
    """Whether an assistant's message of a chat history (as a front end shows it) says the answer was not found."""
    return bool(_ABSTAINED.match(text))


# frequent function words of other languages written in Latin letters, none an English word
_FOREIGN = frozenset("""
le la les des du une est et qui que quoi pourquoi comment où dans avec pour sur pas ce cette sont été passé
der das ist und nicht mit wie warum wer wo passiert ein eine dem den im zu auf ich sie wurde wird gibt
el los las del qué es en por para con pasó dónde cuándo cómo quién está ha sido ocurrió sucedió
il gli che è di della cosa successo perché dove quando chi sono stato
os do da em não aconteceu onde quem foi
het een wat wie waar waarom hoe gebeurd
""".split())
# (not "a", "an", "in", "is", "was": words of other languages too)
_ENGLISH = frozenset("""
the of on at to for from with about by are were be been did do does has have had what who whom
whose when where why how which that this these those it its he she they there and or not no any many much will
would can could should happened happen say said tell me after before since during
""".split())


def looks_english(question: str) -> bool:
    """False for a question mostly in non-Latin letters, or with more function words of another language than of
    English; names ("Zaporizhzhia", "Łódź") do not count against it."""
    letters = [c for c in question if c.isalpha()]
    if not letters:
        return True
    if sum(not c.isascii() for c in letters) / len(letters) > 0.4:
        return False
    words = re.findall(r"[^\W\d_]+", question.lower())
    foreign = sum(w in _FOREIGN for w in words)
    return foreign == 0 or foreign <= sum(w in _ENGLISH for w in words)


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
