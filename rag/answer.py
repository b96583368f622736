"""Answer: extractive drafts from retrieved passages (no LLM needed): quotes, picked and ordered.

Scores every sentence of the retrieved passages (but those `rag.clean` says are not to be quoted: junk lines and
questions) by how much of the question's weighted vocabulary it covers (IDF over the whole index; a question that
states its context before asking weighs the asking sentence's words twice), blended with how well its passage
matched, an article's opening sentence (its lede: news states the event first) ahead of an equally relevant later
one. Keeps the best sentences, drops near-duplicates, adds the rest of a paragraph that is mostly on topic, and puts
the best first (each run of adjacent sentences kept together; a timeline question's oldest first, one about now,
"what is happening?", newest first; its quotes, and those of a question in the present tense, "who is ...?", come
from the newest reports before better-matching older ones). What the question asks for (`rag.kinds`: who -> a name,
how many -> a number, when -> a date, where -> a place; "how many titles?" -> a number counting titles) is
preferred: the best sentence offering it answers first, one for each part of a two-part question, looked for past
the passages found (the top articles' whole text, the further hits) when they offer none; when that sentence refers
to what is asked by description ("which show?": "... the wildly popular South Korean show is green lit") or, asked
who, by a pronoun ("She was picked by ..."), the sentence before it, naming it ("Squid Game is officially coming
back."), is quoted first. A sentence naming years, none of them a year the question names ("the 2022 Stanley Cup"),
tells of another time and is not quoted (a year it measures from, "the first title since 2001", is not a time it
tells of); asked "who won?" with no year, one whose years all precede its article's tells of a past edition and does
not offer the outcome asked. Drafts an abstention ("not found in the articles") when the best evidence is too weak
or shares only one word with the question ("bones", asked about the human hand, of a dinosaur's skull), or when no
sentence on the topic offers the kind of answer asked (saying what the newest article found lacks). An abstention
over a word the index does not know suggests a close spelling it does ("did you mean Mariupol?"; not a common word
for a name asked). `naming` is the pipeline's names-and-numbers gate: no article found mentions all the names and
numbers the question gives ("Kestrelmouth", "1954"; "US" is mentioned as "U.S." too). `looks_english` tells a
question that is not in English (the default embedder reads English).

It does not paraphrase or summarise: every sentence of its draft is a quote
(`DraftSentence.span`). Citing the quotes (`rag.ground`), differing figures,
timelines and syndicated copies (`rag.enrich`) are the pipeline's, as for
every answerer.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property, lru_cache
from itertools import chain
from weakref import WeakKeyDictionary

from rag import kinds
from rag.chunk import sentence_spans
from rag.clean import is_junk
from rag.dates import MONTHS, WEEKDAYS, other_years, parse_iso
from rag.ground import NOT_FOUND
from rag.lexical import slices
from rag.news import asks_about_now, event_date, is_timeline_question, outlet
from rag.types import Answer, Article, Draft, DraftSentence, Hit, StoredText

# prefer, and require, sentences that offer the kind of answer asked (False: the plain coverage ranking; `rag bench`
# figures before and after are compared with it)
KIND_PREFERENCE = True
# kinds whose absence is a reason to abstain; a place is only preferred, as places are also written in lower
# case ("at pier nine", "at home") where our signals cannot see them
STRICT_KINDS = frozenset({kinds.NAME, kinds.NUMBER, kinds.DATE})
KIND_BONUS = 0.1  # a sentence offering the kind asked outranks one as relevant that does not
COUNT_BONUS = 0.1  # ... and one whose number counts what "how many" asks, one whose number counts something else
# an article's opening sentence (its lede: news states the event first) outranks one as relevant further down;
# relevance alone still decides whether to answer
LEDE_BONUS = 0.1
# an answer shares this many of the question's topic terms (when it has more), in its sentence or its article's title
SHARED_TERMS = 2
LOOSE = 0.5  # a sentence offering the kind asked may answer down to this share of the best relevance (others: 0.6)
LEDE_CHARS = 5000  # an article's opening sentence starts this early (the captions and credits before it included)
LEAD_CHARS = 1 << 16  # an article's opening looked in for its first sentence (doubled until one is found)
# "what is happening?", "who is ...?": a sentence of the newest relevant report outranks an older one this much more
# relevant
NOW_BONUS = 0.3
NOW_HALF_LIFE = 7.0  # days
# a question that states what it knows before asking ("Judge hit his 62nd home run this week. Who holds the record
# of 73?"): the asking sentence's terms weigh this many times the others', whose every report restates the context
ASKING = 2.0
WIDER_ARTICLES = 3  # articles read whole when their passages found offer no sentence of the kind asked
WIDER_CHARS = 50_000  # ... or this much either side of the best passage of a longer article
# words that say what kind of answer is wanted, not what it is about
QUESTION_WORDS = {
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "happen", "happened",
    "happening", "latest", "news", "tell", "know", "recent", "recently", "report", "reported",
    "say", "said", "week", "year", "day", "today", "new",
}
# names and numbers in a question ("Kestrelmouth", "1954"): capitalised words (not the first) and words with digits
_KEY = re.compile(r"(?<=\s)[A-Z][\w'\u2019-]*|(?<![\w.,])\w*\d[\w-]*(?:[.,]\d+\b)*")
_ABBREVIATION = re.compile(r"[A-Z]{2}")  # "US", "UK", "EU": often written "U.S.", "U.K.", "E.U."
_NOT_NAMES = frozenset([*MONTHS, *WEEKDAYS, "i"])  # capitalised, but times (the date filter's), not names
# a question in the present tense ("who is the prime minister?", "what are the rates?") asks what holds now
_PRESENT = re.compile(r"\s*(?:what|who|which|where|how\s+\w+)(?:\s+[\w'\u2019-]+){0,2}?\s+(?:is|are)\b", re.I)
_FUNCTION = r"(?:of|any|in|on|at|to|for|with|and|or|by|from|a|an|the|its|their|his|her)\b"
Tokens = Callable[[list[str]], list[list[str]]]
_PRONOUN = re.compile(r"[\"'\u201c\u2018(]?(?:he|she|they)\b", re.I)  # a sentence whose subject is a pronoun
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
    offers: frozenset[str] = frozenset()  # the kinds of answer asked (`rag.kinds`) that it holds
    before: tuple[str, int] | None = None  # (article id, start) of the sentence it names the subject of


class Extractive:
    """Picks and cites sentences; `tokens` and `idf` come from the lexical index."""

    def __init__(self, tokens: Tokens, idf: Callable[[list[str]], dict[str, float]],
                 max_sentences: int = 4, threshold: float = 0.3, novelty: float = 0.1,
                 vocabulary: Callable[[], Collection[str]] = tuple,
                 mentions: Callable[[list[str], list[str]], dict[str, frozenset[str]] | None] = lambda ids, terms: None
                 ) -> None:
        self.tokens = tokens
        # which of some terms each article holds, from the lexical index (None: not known there, read the text)
        self.mentions = mentions
        self.idf = idf
        self.vocabulary = vocabulary  # the lexical index's terms, for "did you mean"
        self._spellings: tuple[tuple[int, int], dict[tuple[str, int], list[str]]] = ((0, 0), {})
        # an article's terms, for the names check: the same articles come back question after question
        # (a slice at a time: neither a copy of a long article's text nor a list of all its words)
        self._article_terms = lru_cache(maxsize=512)(
            lambda title, text: frozenset(t for part in chain([title], text_slices(text)) for t in tokens([part])[0]))
        # a title's terms, for the shared-terms check (`_on_topic`)
        self._title_terms = lru_cache(maxsize=4096)(lambda title: frozenset(tokens([title])[0]))
        self.novelty = novelty
        self.max_sentences = max_sentences
        self.threshold = threshold

    @cached_property
    def _shaping(self) -> frozenset[str]:
        """The terms of question words (computed when first needed: the tokenizer lives in the lexical index,
        which a process that only indexes never loads)."""
        return frozenset(t for words in self.tokens(sorted(QUESTION_WORDS)) for t in words)

    def draft(self, question: str, hits: list[Hit], focus: str = "", dated: bool = False) -> Draft:
        """The quotes answering `question` from `hits` (the gate's: `naming`), best first; `focus` (a follow-up)
        must be covered too. `dated`: the hits were filtered by the question's own time words, so a question with
        nothing else ("what happened this week?") is answered with the opening sentence of each story found."""
        topic = topic_terms(self.tokens, question)
        weights = self.idf(list(dict.fromkeys(topic)) or self._question_terms(question))
        sentences: list[_Sentence] = []
        parts = kinds.asks(question) if KIND_PREFERENCE and not focus else []
        weights = self._asking_first(weights, question, parts)
        wanted = [p for p in parts if p.kind and p.kind != kinds.YESNO]
        on_topic = True
        if dated and hits and not focus and not topic:
            chosen = self._leads(hits)  # "what happened?" (its date words taken as a filter): the stories found
        else:
            focus_terms = self._question_terms(focus) if focus else []
            sentences = self._score(hits[:8], weights, focus_terms, question, wanted)
            if wanted and not self._offered(sentences, wanted):  # look past the passages found
                wider, ranks = _wider(hits)
                sentences = self._score(wider, weights, focus_terms, question, wanted, ranks)
            if asks_about_now(question) or (_PRESENT.match(question) and not is_timeline_question(question)):
                # about now; a story ("what is the timeline of ...?") is told from all its reports
                sentences = _newest_first(sentences, self._floor(sentences))
            on_topic = self._on_topic(sentences, weights)
            chosen = self._choose(sentences, weights, parts) if on_topic else []
        if not chosen:
            lacking = self._lacking(sentences, wanted) if wanted and on_topic else ""
            words = re.findall(r"\w[\w'\u2019-]*", question)
            words[:1] = [w.lower() for w in words[:1]]  # capitalised as the question's first word, not as a name
            text = lacking or NOT_FOUND[:-1] + self.did_you_mean(words, hits)
            return Draft(question, tuple(hits), abstention=text)
        chosen = _best_first(chosen) if KIND_PREFERENCE else sorted(chosen, key=lambda s: (s.article_rank, s.start))
        if is_timeline_question(question):
            # "what happened?" reads as a story, oldest first; "what is happening?" wants now: newest first
            chosen = _chronological(chosen, newest_first=asks_about_now(question))
        chosen = _antecedents_first(chosen)
        passage = {}
        for i, hit in enumerate(hits):
            passage.setdefault(hit.article.id, i)
        return Draft(question, tuple(hits), tuple(
            DraftSentence(_one_line(s.hit.article.text[s.start:s.end]), (passage[s.hit.article.id],), (s.start, s.end))
            for s in chosen))

    def naming(self, question: str, hits: list[Hit]) -> tuple[str, list[Hit]]:
        """("", the hits of the articles that mention every name and number of the question), or (the
        abstention saying which of them no article found mentions, the hits) when none does. A passage about
        another place or year does not answer: "the 1954 contest" is not "the 2022 contest"."""
        words = [w for w in _KEY.findall(question) if w.lower() not in _NOT_NAMES]
        keys = {stem: word for word in words for stem in topic_terms(self.tokens, word)}
        if not keys or not hits:
            return "", hits
        has = self.mentions(list(dict.fromkeys(h.article.id for h in hits)), list(keys)) or \
            {h.article.id: self._article_terms(h.article.title, h.article.text) & keys.keys() for h in hits}
        has = _with_dotted(has, keys, hits)
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
        """Index terms of the same first letter, a length within 2 (1 for a short term; buckets built once per
        vocabulary) and all but two of its letters: the only ones difflib compares, so a suggestion takes
        milliseconds on a large index."""
        if self._spellings[0] != (id(vocabulary), len(vocabulary)):
            buckets: dict[tuple[str, int], list[str]] = {}
            for t in vocabulary:
                if t[:1].isalpha():
                    buckets.setdefault((t[0], len(t)), []).append(t)
            self._spellings = ((id(vocabulary), len(vocabulary)), buckets)
        buckets = self._spellings[1]
        letters, need = set(term), len(set(term)) - 2  # a close spelling shares all but two of its letters
        span = 1 if len(term) < 6 else 2  # two letters more or fewer is another word when five are asked ("aphid")
        return [t for n in range(len(term) - span, len(term) + span + 1) for t in buckets.get((term[0], n), ())
                if len(letters.intersection(t)) >= need]

    def _leads(self, hits: list[Hit]) -> list[_Sentence]:
        """The opening sentence of each article found, newest last: an answer to a question with no topic."""
        leads: list[_Sentence] = []
        for hit in hits:
            if any(s.hit.article.id == hit.article.id for s in leads) or len(leads) >= self.max_sentences:
                continue
            lead = _lead(hit)
            if lead is not None:
                leads.append(_Sentence(len(leads), *lead, frozenset(), 1.0, 1.0, hit))
        return sorted(leads, key=lambda s: (s.hit.article.published or "9999", s.article_rank))

    def _asking_first(self, weights: dict[str, float], question: str, parts: list[kinds.Ask]) -> dict[str, float]:
        """`weights` with the terms of the sentence asking (`parts`, when the question says more) weighing ASKING
        times the rest."""
        asking = " ".join(p.text for p in parts)
        own = frozenset(topic_terms(self.tokens, asking)) if asking.strip() != question.strip() else frozenset()
        if not own or own >= weights.keys():
            return weights
        return {t: w * (ASKING if t in own else 1.0) for t, w in weights.items()}

    def _question_terms(self, question: str) -> list[str]:
        """The question's topic terms, else (a question of question words only) all its terms."""
        return list(dict.fromkeys(topic_terms(self.tokens, question) or self.tokens([question])[0]))

    def _score(self, hits: list[Hit], weights: dict[str, float], focus: list[str], question: str = "",
               wanted: list[kinds.Ask] | tuple[kinds.Ask, ...] = (), ranks: list[int] | None = None
               ) -> list[_Sentence]:
        """Every sentence of the hits' passages, scored; `ranks`: each hit's place in the search (its index)."""
        spans = [(rank, hit, a, b) for rank, hit in enumerate(hits)
                 for a, b in sentence_spans(hit.article.text, hit.chunk.start, hit.chunk.end)
                 if not is_junk(hit.article.text, a, b)]  # captions, credits, headlines, questions: rag.clean
        token_lists = self.tokens([hit.article.text[a:b] for _, hit, a, b in spans])
        total = sum(weights.values()) or 1.0
        question_terms = set(weights)
        article_rank = {aid: i for i, aid in enumerate(dict.fromkeys(h.article.id for h in hits))}
        asked = kinds.given(question)
        # a sentence with no term the question lacks only restates it ("... the most transmissible variant yet has
        # arrived. What is it called?"): it answers nothing, but a yes/no question, which it may settle
        restated = frozenset(self.tokens([question])[0])
        # "how many book titles?": "1,648 different titles" counts what is asked, "2,532 book bans" does not
        noun = self._term(kinds.counted(question)) if any(p.kind == kinds.NUMBER for p in wanted) else ""
        out: dict[tuple[str, int], _Sentence] = {}
        first: dict[str, int] = {}  # where each article's first sentence found starts: the only one that may open it
        for _, hit, a, _ in spans:
            first[hit.article.id] = min(first.get(hit.article.id, a), a)
        for (rank, hit, a, b), toks in zip(spans, token_lists):
            terms = frozenset(toks)
            if focus and not terms & set(focus):
                continue
            if not asked.yes_no and terms <= restated:
                continue
            if asked.years and other_years(hit.article.text[a:b], asked.years):
                continue  # "the 2022 Stanley Cup": "the Blues won the Stanley Cup in 2019" is another one
            coverage = sum(w for t, w in weights.items() if t in terms) / total
            score = 0.75 * coverage + 0.25 * max(hit.dense, 0.0) - 0.02 * (ranks[rank] if ranks else rank)
            # a sentence that only restates the question answers nothing: favour new content
            novel = min(len(terms - question_terms) / 6, 1.0)
            key = (hit.article.id, a)
            lede = LEDE_BONUS * (a == first[hit.article.id] and _opens(hit.article, a, b))
            if key not in out or out[key].score < score:
                offers = _offers(wanted, hit.article.text[a:b], asked, hit.article)  # names: read once
                counting = COUNT_BONUS * bool(noun and kinds.NUMBER in offers
                                              and kinds.counts(hit.article.text[a:b], self._term, noun))
                out[key] = _Sentence(article_rank[hit.article.id], a, b, terms, score,
                                     score + self.novelty * novel + KIND_BONUS * bool(offers) + lede + counting,
                                     hit, offers)
        return list(out.values())

    def _term(self, word: str) -> str:
        """The index term of one word ("" for none: a stop word)."""
        return next(iter(self.tokens([word])[0]), "")

    def _offered(self, sentences: list[_Sentence], wanted: list[kinds.Ask]) -> bool:
        """Whether, for every part asked, a sentence relevant enough to answer offers its kind."""
        loose = self._loose(sentences)
        return all(any(p.kind in s.offers and s.score >= loose for s in sentences) for p in wanted)

    def _on_topic(self, sentences: list[_Sentence], weights: dict[str, float]) -> bool:
        """Whether a sentence relevant enough to answer shares SHARED_TERMS of the question's topic terms, or half
        their weight (its article's title counted: "the Texas drought" may be the title's), when the question has
        more: one word in common is a coincidence ("How many bones are in the adult human hand?": "the three major
        bones" of a dinosaur skull)."""
        if len(weights) <= SHARED_TERMS:
            return True
        total = sum(weights.values())

        def shares(s: _Sentence) -> bool:
            shared = (s.terms | self._title_terms(s.hit.article.title)) & weights.keys()
            return len(shared) >= SHARED_TERMS or sum(weights[t] for t in shared) >= total / 2
        return any(s.score >= self.threshold and shares(s) for s in sentences)

    def _floor(self, sentences: list[_Sentence]) -> float:
        """The relevance a sentence needs to be quoted at all: the threshold, or 0.6 of the best one's."""
        return max(self.threshold, max((s.score for s in sentences), default=0.0) * 0.6)

    def _loose(self, sentences: list[_Sentence]) -> float:
        return max(self.threshold, max((s.score for s in sentences), default=0.0) * LOOSE)

    def _choose(self, sentences: list[_Sentence], weights: dict[str, float],
                parts: list[kinds.Ask] | tuple[kinds.Ask, ...] = ()) -> list[_Sentence]:
        """The answering sentences, most important first: for each part asked, the best sentence offering its
        kind (none at all: [], an abstention), then the most relevant others, then paragraph neighbours."""
        if max((s.score for s in sentences), default=0.0) < self.threshold:
            return []
        floor = self._floor(sentences)
        chosen = self._answering(sentences, parts)
        if any(p.kind in STRICT_KINDS for p in parts) and not chosen:
            return []  # on the topic, but no sentence offers the name, number or date asked
        for sentence in sorted((s for s in sentences if s.score >= floor), key=lambda s: -s.rank_score):
            if len(chosen) >= self.max_sentences:
                break
            if not any(_similar(sentence, c) or sentence is c for c in chosen):
                chosen.append(sentence)
        return chosen + _paragraph_neighbours(chosen, sentences)

    def _answering(self, sentences: list[_Sentence], parts: list[kinds.Ask] | tuple[kinds.Ask, ...]
                   ) -> list[_Sentence]:
        """For each part of the question, the best relevant sentence of the kind it asks: a yes/no question's
        is the one covering it best; a part of a two-part question's, the one covering that part best."""
        loose = self._loose(sentences)
        chosen: list[_Sentence] = []
        for part in parts:
            if not part.kind:
                continue
            pool = [s for s in sentences if s.score >= loose and (part.kind == kinds.YESNO or part.kind in s.offers)]
            if part.kind == kinds.YESNO:
                floor = self._floor(sentences)
                pool = [s for s in pool if s.score >= floor]
            if len(parts) > 1:
                own = self.idf(list(dict.fromkeys(topic_terms(self.tokens, part.text))))
                total = sum(own.values()) or 1.0
                key = {id(s): s.rank_score + 0.5 * sum(w for t, w in own.items() if t in s.terms) / total
                       for s in pool}
            else:
                key = {id(s): s.score if part.kind == kinds.YESNO else s.rank_score for s in pool}
            pick = max((s for s in pool if not any(_similar(s, c) or s is c for c in chosen)),
                       key=lambda s: key[id(s)], default=None)
            if pick is not None:
                chosen.append(pick)
                before = self._antecedent(pick, part)
                if before is not None and not any(_similar(before, c) or _same(before, c) for c in chosen):
                    chosen.append(before)
        return chosen

    def _antecedent(self, pick: _Sentence, part: kinds.Ask) -> _Sentence | None:
        """The sentence before `pick` when `pick` refers to the name or place asked by description ("which show?":
        "... the wildly popular South Korean show is green lit", after "Squid Game is officially coming back."), or
        to the name asked by a pronoun ("She was picked by ..."; the names it offers are others), and that sentence
        offers one; else None."""
        words = part.phrase.split()
        text = pick.hit.article.text
        # "She was picked by the party's members ...": who she is, the sentence before may say
        if not (part.kind == kinds.NAME and _PRONOUN.match(text[pick.start:pick.end])):
            if part.kind not in (kinds.NAME, kinds.PLACE) or len(words) < 2 or words[-1] == "name":
                return None
            if not re.search(rf"\b(?:the|this|that)\s+(?:(?!{_FUNCTION})[\w'\u2019-]+\s+){{0,4}}?"
                             rf"{re.escape(words[-1])}\b(?!['\u2019]s)", text[pick.start:pick.end], re.I):
                return None  # "the South Korean show", not "the city's police chief" nor "the most of any show"
        spans = [(a, b) for a, b in sentence_spans(text, max(0, pick.start - 2000), pick.start)
                 if b <= pick.start and not is_junk(text, a, b)]
        if not spans:
            return None
        a, b = spans[-1]
        if not kinds.offers(part.kind, text[a:b], kinds.given(part.text), _article_names(text),
                            pick.hit.article.published):
            return None
        return replace(pick, start=a, end=b, terms=frozenset(self.tokens([_one_line(text[a:b])])[0]),
                       offers=frozenset({part.kind}), before=(pick.hit.article.id, pick.start))

    def _lacking(self, sentences: list[_Sentence], wanted: list[kinds.Ask]) -> str:
        """The abstention for a question whose topic was found without what it asks: which article (the newest
        of those on the topic) was read, and what it does not say."""
        loose = self._loose(sentences)
        relevant = [s for s in sentences if s.score >= loose]
        if not relevant:
            return ""
        newest = max(relevant, key=lambda s: (s.hit.article.published or "", s.score)).hit.article
        what = " or ".join(dict.fromkeys(p.phrase for p in wanted))
        which = "newest article found on it" if newest.published else "closest article found"
        where = ", ".join(x for x in (newest.source, newest.published[:10]) if x)
        return (f"Not found in the articles: the {which}, \u201c{_one_line(newest.title)}\u201d"
                f"{f' ({where})' if where else ''}, does not say {what}.")


def _best_first(chosen: list[_Sentence]) -> list[_Sentence]:
    """The chosen sentences (listed most important first) as runs of adjacent sentences in article order, each
    run opening with its most important sentence (a run is cut before it: the sentences leading up to the answer
    follow as a run of their own), the run of the most important first: the answer reads best sentence first."""
    order = {(s.hit.article.id, s.start): i for i, s in reversed(list(enumerate(chosen)))}

    def cut(run: list[_Sentence]) -> list[list[_Sentence]]:
        ranks = [order[(s.hit.article.id, s.start)] for s in run]
        top = ranks.index(min(ranks))
        return [run] if top == 0 else [run[top:], *cut(run[:top])]
    runs = [part for run in _runs(sorted(chosen, key=lambda s: (s.article_rank, s.start))) for part in cut(run)]
    runs.sort(key=lambda run: min(order[(s.hit.article.id, s.start)] for s in run))
    return [s for run in runs for s in run]


def _offers(wanted: list[kinds.Ask] | tuple[kinds.Ask, ...], sentence: str, asked: kinds.Given,
            article: Article) -> frozenset[str]:
    """The kinds asked that `sentence` (of `article`) holds an answer of."""
    if not wanted:
        return frozenset()
    names = _article_names(article.text) if any(p.kind in (kinds.NAME, kinds.PLACE) for p in wanted) else frozenset()
    return frozenset(p.kind for p in wanted if kinds.offers(p.kind, sentence, asked, names, article.published))


def _with_dotted(has: dict[str, frozenset[str]], keys: dict[str, str], hits: list[Hit]
                 ) -> dict[str, frozenset[str]]:
    """`has` (each article's keys) with the two-letter abbreviations ("US", "UK") of `keys` an article writes with
    dots ("U.S."): a spelling that leaves no index term to find it by."""
    dotted = {stem: re.compile(rf"\b{word[0]}\.\s?{word[1]}\.") for stem, word in keys.items()
              if _ABBREVIATION.fullmatch(word)}
    if not dotted:
        return has
    articles = {h.article.id: h.article for h in hits}

    def writes(article: Article, pattern: re.Pattern[str]) -> bool:  # a long stored text a slice at a time
        return any(pattern.search(part) for part in chain([article.title], text_slices(article.text)))
    return {aid: found | {stem for stem, pattern in dotted.items()
                          if stem not in found and aid in articles and writes(articles[aid], pattern)}
            for aid, found in has.items()}


def _opens(article: Article, start: int, end: int) -> bool:
    """Whether `article.text[start:end]` is its first sentence that is not its title nor junk (read up to it, and
    only in an article's first LEDE_CHARS)."""
    if start > LEDE_CHARS:
        return False
    text, title = article.text, article.title.strip()
    return next(((a, b) for a, b in sentence_spans(text, 0, end) if _may_open(text, title, a, b)), None) == (start, end)


def _may_open(text: str, title: str, a: int, b: int) -> bool:
    """Whether `text[a:b]` may be an article's opening sentence: neither its title nor junk."""
    return _one_line(text[a:b]) != title and not is_junk(text, a, b)


def _lead(hit: Hit) -> tuple[int, int] | None:
    """The article's first sentence that is not its title nor junk (captions, credits, headlines, boilerplate:
    `rag.clean`), looked for in whole lines of a growing opening, not in the whole of a long text."""
    text, title = hit.article.text, hit.article.title.strip()
    end, width = 0, LEAD_CHARS
    while end < len(text):
        start, cut = end, text.find("\n", end + width)
        end = len(text) if cut < 0 else cut
        for a, b in sentence_spans(text, start, end):
            if _may_open(text, title, a, b):
                return a, b
        width *= 2
    return None


def text_slices(text: str | StoredText) -> Iterator[str]:
    """`text` in slices of about `rag.lexical.SLICE_CHARS`, each ending at a space (as `rag.lexical.slices`), a
    long stored text read a bounded part at a time: no word is cut, so their words are the text's."""
    if isinstance(text, str):
        yield from slices(text)
        return
    carry = ""
    for part in text.slices():
        part = carry + part
        cut = max(part.rfind(c) for c in " \n\t")
        carry, part = (part, "") if cut < 0 else (part[cut + 1:], part[:cut + 1])
        yield from slices(part)
    yield from slices(carry)


_NAMES: WeakKeyDictionary[StoredText, frozenset[str]] = WeakKeyDictionary()


def _article_names(text: str | StoredText) -> frozenset[str]:
    """`kinds.article_names` of the text; a long stored text's a slice at a time (each slice with the two
    characters before it, which the pattern looks behind to), kept while the text is."""
    if isinstance(text, str):
        return kinds.article_names(text)
    if text not in _NAMES:
        names: set[str] = set()
        before = ""
        for part in text_slices(text):
            names |= kinds.article_names.__wrapped__(before + part)  # uncached: each slice is read once
            before = (before + part)[-2:]
        _NAMES[text] = frozenset(names)
    return _NAMES[text]


def _wider(hits: list[Hit]) -> tuple[list[Hit], list[int]]:
    """The hits to look past the passages found with: the first hits, the text of the first `WIDER_ARTICLES`
    articles (whole, or WIDER_CHARS either side of their best passage in a longer one: reading a book-length
    text whole would cost memory in proportion to it) as hits of their best passage's scores, then the further
    hits; and each one's place in the search (a whole article's is its best passage's)."""
    first: dict[str, int] = {}
    for i, h in enumerate(hits):
        first.setdefault(h.article.id, i)
    top = list(first.items())[:WIDER_ARTICLES]
    whole = [replace(hits[i], chunk=replace(hits[i].chunk, start=max(0, hits[i].chunk.start - WIDER_CHARS),
                                            end=min(len(hits[i].article.text), hits[i].chunk.end + WIDER_CHARS)))
             for _, i in top]
    ranked = [*hits[:8], *whole, *hits[8:]]
    return ranked, [*range(min(len(hits), 8)), *(i for _, i in top), *range(8, len(hits))]


def _chronological(chosen: list[_Sentence], newest_first: bool = False) -> list[_Sentence]:
    """Articles oldest first (by publication date, else the earliest date a sentence states; with `newest_first`,
    newest first by the latest), sentences in order; articles of no date last."""
    days: dict[str, list[date]] = {}
    for s in chosen:
        day = event_date(s.hit.article.text[s.start:s.end], s.hit.article.published)
        if day is not None:
            days.setdefault(s.hit.article.id, []).append(day)

    def when(s: _Sentence) -> int:
        found = days.get(s.hit.article.id)
        if not found:
            return date.max.toordinal()
        return -max(found).toordinal() if newest_first else min(found).toordinal()
    return sorted(chosen, key=lambda s: (when(s), s.article_rank, s.start))


def _newest_first(sentences: list[_Sentence], floor: float) -> list[_Sentence]:
    """`sentences` with a bonus for the newest reports among those relevant enough to answer (`floor`), halved
    every `NOW_HALF_LIFE` days older than the newest: "what is happening in Kherson?" is answered from this week's
    reports, not the month's best match. Relevance still decides whether to answer at all."""
    days = {id(s): parse_iso(s.hit.article.published) for s in sentences if s.score >= floor}
    newest = max((d for d in days.values() if d is not None), default=None)
    if newest is None:
        return sentences
    bonus = {key: NOW_BONUS * 2 ** (-(newest - day).days / NOW_HALF_LIFE) for key, day in days.items() if day}
    return [replace(s, rank_score=s.rank_score + bonus.get(id(s), 0.0)) for s in sentences]


def _antecedents_first(chosen: list[_Sentence]) -> list[_Sentence]:
    """`chosen` with each sentence that names what another refers to (`_antecedent`) right before it."""
    leads = {s.before: s for s in chosen if s.before is not None}
    out: list[_Sentence] = []
    for s in chosen:
        if s.before is None:
            lead = leads.pop((s.hit.article.id, s.start), None)
            out.extend([lead, s] if lead is not None else [s])
    return out + list(leads.values())


def _same(a: _Sentence, b: _Sentence) -> bool:
    return (a.hit.article.id, a.start) == (b.hit.article.id, b.start)


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
    the asked word's capital; "" for a capitalised word (a name) the articles write in lower case."""
    seen: dict[str, int] = {}
    for hit in hits:
        for word in (w for part in text_slices(hit.article.text)
                     for w in re.findall(rf"\b{re.escape(term[:3])}\w*", part, re.I)):
            seen[word] = seen.get(word, 0) + 1
    forms = sorted(seen, key=lambda w: -seen[w])
    for form, terms in zip(forms, tokens(forms)):
        if terms == [term]:
            # a name asked ("Ostrander Vale") is no misspelt common word ("valet")
            return "" if asked[:1].isupper() and form[:1].islower() else form
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
    its hits carry): in `Citation.also_reported_by` and in a note after the text. A step of the enrichment
    chain (`rag.enrich`), for every answerer."""
    copies = {h.article.id: h for h in answer.hits if h.copies}
    if answer.abstained or not copies or any(c.also_reported_by for c in answer.citations):
        return answer  # nothing to add, or added already
    citations = tuple(replace(c, also_reported_by=tuple(dict.fromkeys(
        outlet(a) for a in copies[c.article_id].copies if outlet(a) != outlet(copies[c.article_id].article))))
        if c.article_id in copies else c for c in answer.citations)
    also = [f"[{c.n}] was also reported by {', '.join(c.also_reported_by)}" for c in citations if c.also_reported_by]
    text = answer.text + (" (Note, not a quote: the same story " + "; ".join(also) + ".)" if also else "")
    return replace(answer, text=text, citations=citations)


def _runs(chosen: list[_Sentence]) -> list[list[_Sentence]]:
    """Group sentences that follow each other in one paragraph of one article."""
    runs: list[list[_Sentence]] = []
    for s in chosen:
        last = runs[-1][-1] if runs else None
        if (last is not None and last.hit.article.id == s.hit.article.id and last.end <= s.start
                and not last.hit.article.text[last.end:s.start].strip()
                and "\n" not in last.hit.article.text[last.end:s.start]):
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
