"""Is a claim grounded in the passages it cites? Its numbers, names and rare words must all be there.

`unsupported(claim, passages, tokens, idf)` lists what the claim states that the passages (taken
together) do not:

- every number of the claim, compared by value: "1,100" = "1100", "three" = "3", "1.3 million" =
  "1,300,000", "40%" = "40 per cent" = "40"; years, days of the month and times are numbers too
  ("one" alone is not, in a claim: "one of the ..." counts nothing);
- every name: a capitalised word that does not start a sentence ("Mariupol", "Tuesday"), found as a whole
  word, in any case, in the passages ("Brandt's" is "Brandt");
- every rare word: an index term of the claim (`tokens`) that few passages of the index contain (its
  `idf` at least `RARE_IDF`, or `RARE_SHARE` of an unseen word's idf on a small index), found among the
  passages' index terms; function words (bm25s's longer English stop list: "were", "after") and words
  that link or attribute rather than state (`LINKING`: "earlier", "meanwhile", "reportedly") are not
  content, however rare they are in a small index.

An empty list means grounded. It does not judge what the claim says about those words (a sentence
that rearranges the passage's words can still pass): it catches invented figures, names and facts, not
every misreading.

`ground(draft, tokens, idf)` is the one step that turns any answerer's `Draft` into an `Answer`, one
sentence at a time (`Grounder`, also fed sentence by sentence by a stream):

- a quote (`DraftSentence.span`) is kept when it is exactly that span of its passage's article, and cited
  as it is (its own evidence: nothing of it is missing from itself); quotes that follow each other in one
  paragraph share one citation;
- any other sentence is kept when each `[n]` marker (or, with none, its `passages` as a whole) names a
  passage whose sentences cover at least `min_support` of the claim's IDF-weighted words (other markers are
  removed; none left: dropped) and `unsupported` finds nothing of it missing from the passages it still
  cites; each kept marker becomes a citation whose quote is the sentence run of that passage covering the
  claim best, an exact span; citations are numbered by first use;
- a sentence naming years, none of them a year the question names as its event's ("the 2022 Stanley Cup"),
  is dropped: it tells of another time;
- the caps of the draft (sentences, characters) end it; nothing kept: the draft's abstention (or
  `NOT_FOUND`), or its `fallback` grounded instead when that keeps something.

It does not pick, order or write sentences (the answerers do) nor add notes, timelines or notices
(`rag.enrich`); it knows nothing of LLMs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from rag.chunk import sentence_spans
from rag.dates import event_years, other_years
from rag.news import citation
from rag.stopwords import STOPWORDS_EN_PLUS
from rag.types import Answer, Citation, Draft, DraftSentence, Hit

Tokens = Callable[[list[str]], list[list[str]]]
Idf = Callable[[list[str]], dict[str, float]]

RARE_IDF = math.log(1 + 1 / 0.02)  # a term in at most ~2% of the index's passages is rare
NOT_FOUND = "Not found in the articles: none of the indexed articles answers this question."
MAX_QUOTE_SENTENCES = 3  # sentences of a passage one citation may quote
EXTEND_GAIN = 0.15  # a neighbouring sentence joins a quote when it covers this much more of the claim
RARE_SHARE = 0.6  # ... or, on a small index, one whose idf is this share of an unseen term's
_UNSEEN = "\x00unseen"  # no index term looks like this: its idf is the highest the index gives

LINKING = frozenset("""earlier later meanwhile however also additionally furthermore moreover then subsequently
previously afterwards reportedly according said says stated states reported reports added adds overall both
respectively instead still yet already further finally first second third would could may might must shall also
""".split()) | frozenset(w for w in STOPWORDS_EN_PLUS if w.isalpha())
_NOT_CONTENT = " ".join(sorted(LINKING))
_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12}
_SCALE_ABBR = {"m": 1_000_000, "mn": 1_000_000, "bn": 1_000_000_000, "k": 1_000}
_WORDS = "|".join(sorted([*_SMALL, *_TENS], key=len, reverse=True))
_SCALE = "|".join(_SCALES)
_NUMBER = re.compile(
    rf"(?<![\w.,])(?P<digits>\d{{1,3}}(?:,\d{{3}})+|\d+)(?P<frac>\.\d+)?(?!\.\d)"
    rf"(?:\s*(?P<scale>{_SCALE})s?\b|(?P<abbr>m|mn|bn|k)\b)?(?:\s*(?:%|per\s?cent\b|percent\b))?"
    rf"|\b(?P<words>(?:{_WORDS})(?:[\s-](?:{_WORDS}))?)(?:\s+(?P<wscale>{_SCALE})s?)?\b",
    re.I)
_MARKER = re.compile(r"\[\d+(?:\s*[,\u2013-]\s*\d+)*\]")
# the markers an answerer may end its claims with: "[2]", "[1, 3]", "[2-4]", "[passage 2]"
MARKER_NUMBERS = r"\d+(?:\s*(?:,|;|-|\u2013|and)\s*\d+)*"
MARKERS = re.compile(rf"\s*\[(?:(?:passages?|sources?|articles?)\s*)?({MARKER_NUMBERS})\]", re.I)
NOT_FOUND_REPLY = re.compile(r"^\W*not\s+found\s+in\s+the\s+articles?\b", re.I)
_BLANK_LINE = re.compile(r"\n\s*\n")  # a quote does not run across paragraphs
_NAME = re.compile(r"[^\W\d_]+", re.U)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"\u201c(]\s*)$")


def numbers(text: str, one: bool = True) -> set[float]:
    """The values of the numbers written in `text` (digits or simple words; see the module doc). `one`:
    whether the word "one" counts (it does in a passage, not in a claim)."""
    found: set[float] = set()
    for m in _NUMBER.finditer(text):
        if m.group("digits"):
            value = float(m.group("digits").replace(",", "") + (m.group("frac") or ""))
            scale = m.group("scale") or m.group("abbr")
            if scale:
                value *= _SCALES.get(scale.lower()) or _SCALE_ABBR[scale.lower()]
        else:
            words = re.split(r"[\s-]+", m.group("words").lower())
            if words == ["one"] and not one and not m.group("wscale"):
                continue
            value = float(sum(_SMALL.get(w, _TENS.get(w, 0)) for w in words))
            if m.group("wscale"):
                value *= _SCALES[m.group("wscale").lower()]
        found.add(round(value, 6))
    return found


def names(text: str) -> list[str]:
    """The capitalised words of `text` that do not start a sentence (nor follow a colon or an opening quote)."""
    out = []
    for m in _NAME.finditer(text):
        word = m.group()
        if word[0].isupper() and not _SENTENCE_START.search(text[:m.start()]) and word not in out:
            if not (m.start() > 0 and text[m.start() - 1] in "'\u2019"):  # "Brandt's": the s is no name
                out.append(word)
    return out


def rare_terms(terms: Iterable[str], idf: Idf) -> list[str]:
    """The terms few passages of the index contain (see the module doc), in their order."""
    terms = list(dict.fromkeys(terms))
    if not terms:
        return []
    weights = idf([*terms, _UNSEEN])
    bar = min(RARE_IDF, RARE_SHARE * weights[_UNSEEN])
    return [t for t in terms if weights.get(t, 0.0) >= bar - 1e-9]


def unsupported(claim: str, passages: Sequence[str], tokens: Tokens, idf: Idf) -> list[str]:
    """What `claim` states that `passages` (together) do not: its missing numbers (as written in the
    claim's value, e.g. "15000.0" shown as "15000"), names and rare index terms. Empty: grounded.
    Citation markers ("[1]") in the claim are ignored."""
    claim = _MARKER.sub(" ", claim)
    text = "\n".join(passages)
    missing: list[str] = []
    have = numbers(text)
    missing += [_show(v) for v in sorted(numbers(claim, one=False)) if v not in have]
    words = {w.lower() for w in _NAME.findall(text)}
    missing += [w for w in names(claim) if w.lower() not in words]
    # numbers were compared by value: their words and digits ("1300", "three") are not terms to find
    claim_terms, passage_terms, linking = tokens([_NUMBER.sub(" ", claim), text, _NOT_CONTENT])
    known = {*passage_terms, *linking, *(w.lower() for w in missing)}
    missing += [t for t in rare_terms(claim_terms, idf) if t not in known]
    return missing


def _show(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


# ---------------------------------------------------------------- drafts to answers


def ground(draft: Draft, tokens: Tokens, idf: Idf, min_support: float = 0.2) -> Answer:
    """The answer `draft` grounds to (see the module doc): its supported sentences with exact citations, else
    its abstention, or its fallback's answer when that keeps something."""
    grounder = Grounder(list(draft.hits), tokens, idf, min_support, draft.cap_sentences, draft.cap_chars,
                        question=draft.question)
    for sentence in draft.sentences:
        grounder.add(sentence)
        if grounder.full:
            break
    return grounder.answer(draft)


class Grounder:
    """A draft's sentences checked one at a time (as an LLM completes them); keeps those that pass (see the
    module doc). `add` returns the sentence as kept (markers renumbered as citations) or "" when it is dropped.
    `full` once `cap_sentences` sentences are kept, a sentence would pass `cap_chars`, or the draft said "not
    found" first: take no more (caps of 0: none). `text` is the kept sentences, joined by spaces. With
    `question`, a sentence naming years, none of them one the question names as its event's, is dropped
    (`other_years`: it tells of another time)."""

    def __init__(self, hits: list[Hit], tokens: Tokens, idf: Idf, min_support: float = 0.2,
                 cap_sentences: int = 0, cap_chars: int = 0, question: str = "") -> None:
        self.hits = hits
        self.years = event_years(question)
        self.tokens = tokens
        self.idf = idf
        self.min_support = min_support
        self.cap_sentences = cap_sentences
        self.cap_chars = cap_chars
        self.quotes = _Quotes(hits, tokens, idf)
        self.keys: dict[tuple[str, int, int], int] = {}
        self.citations: list[Citation] = []
        self.kept: list[str] = []
        self.full = False
        self._run: tuple[str, int] | None = None  # (article id, end) of the last kept quote: the next may join it

    @property
    def text(self) -> str:
        return " ".join(self.kept)

    def pieces(self, sentence: DraftSentence | str) -> Iterator[str]:
        """The sentence as it should be streamed when it passes (after a space unless first); else nothing."""
        kept = self.add(sentence)
        if kept:
            yield kept if len(self.kept) == 1 else " " + kept

    def answer(self, draft: Draft) -> Answer:
        """The answer from the sentences kept so far; when none was, the draft's fallback grounded, if that keeps
        something, else the draft's abstention (or `NOT_FOUND`)."""
        if self.citations:
            return Answer(question=draft.question, text=self.text, citations=tuple(self.citations), hits=draft.hits,
                          notice=draft.notice)
        if draft.fallback is not None:
            instead = ground(draft.fallback(), self.tokens, self.idf, self.min_support)
            if not instead.abstained:
                return instead
        return Answer(question=draft.question, text=draft.abstention or NOT_FOUND, abstained=True, hits=draft.hits,
                      notice=draft.notice)

    def add(self, sentence: DraftSentence | str) -> str:
        if isinstance(sentence, str):
            sentence = DraftSentence(sentence)
        if self.full:
            return ""
        if not self.kept and NOT_FOUND_REPLY.match(sentence.text):
            self.full = True
            return ""
        if self.years and other_years(MARKERS.sub("", sentence.text), self.years):
            return ""  # "the 1990 Nobel Peace Prize" does not answer a question about the 2022 one
        if sentence.span is not None:
            return self._quote(sentence)
        text = sentence.text
        if sentence.passages and not MARKERS.search(text):  # it rests on its passages as a whole
            text = f"{text} " + "".join(f"[{i + 1}]" for i in sentence.passages)
        groups = list(MARKERS.finditer(text))
        if not groups:
            return ""  # a sentence resting on no passage is not supported
        whole = MARKERS.sub("", text)
        cited: list[list[tuple[int, int, int]]] = []  # per marker: (passage index, quote start, quote end)
        for g, last in zip(groups, [0, *(g.end() for g in groups)]):
            claim = MARKERS.sub("", text[last:g.start()])
            if len(self.tokens([claim])[0]) < 2:
                claim = whole  # a marker after the full stop, or right after another one
            found = []
            for n in passage_numbers(g.group(1)):
                if not 1 <= n <= len(self.hits):
                    continue  # names no passage
                best = self.quotes.best(n - 1, claim)
                if best is not None and best[2] >= self.min_support:  # else the passage does not say it
                    found.append((n - 1, best[0], best[1]))
            cited.append(found)
        passages = sorted({i for found in cited for i, _, _ in found})
        if not passages or unsupported(whole, [self.hits[i].chunk.text for i in passages], self.tokens, self.idf):
            return ""  # nothing cited that says it, or a number, name or rare word no cited passage has
        return self._keep(text, groups, cited)

    def _quote(self, sentence: DraftSentence) -> str:
        """A quote kept as it is when it is the span it says it is; one citation for a run of quotes that follow
        each other in one paragraph of one article."""
        if not sentence.passages or not 0 <= sentence.passages[0] < len(self.hits) or sentence.span is None:
            return ""
        article = self.hits[sentence.passages[0]].article
        start, end = sentence.span
        quote = article.text[start:end] if 0 <= start < end <= len(article.text) else ""
        if not quote or _one_line(quote) != _one_line(sentence.text):
            return ""  # not a quote of its passage's article
        gap = article.text[self._run[1]:start] if self._run and self._run[0] == article.id else None
        joins = gap is not None and self._run is not None and self._run[1] <= start and not gap.strip() \
            and "\n" not in gap
        n = self.citations[-1].n if joins else len(self.citations) + 1
        kept = f"{_one_line(quote)} [{n}]"
        if self.cap_chars and len(self.text) + len(kept) + 1 > self.cap_chars:
            self.full = True
            return ""
        if joins:
            self.citations[-1] = citation(n, article, self.citations[-1].start, end)
        else:
            self.citations.append(citation(n, article, start, end))
        self._run = (article.id, end)
        return self._kept(kept)

    def _keep(self, sentence: str, groups: list[re.Match], cited: list[list[tuple[int, int, int]]]) -> str:
        """The sentence with its markers renumbered, and its citations recorded (unless it breaks a cap)."""
        keys, new = dict(self.keys), []
        out, last = [], 0
        for g, found in zip(groups, cited):
            numbers: list[int] = []
            for i, start, end in found:
                key = (self.hits[i].article.id, start, end)
                if key not in keys:
                    keys[key] = len(self.citations) + len(new) + 1
                    new.append(citation(keys[key], self.hits[i].article, start, end))
                if keys[key] not in numbers:
                    numbers.append(keys[key])
            out.append(sentence[last:g.start()])
            if numbers:
                out.append(" " + "".join(f"[{m}]" for m in numbers))
            last = g.end()
        out.append(sentence[last:])
        kept = _tidy("".join(out))
        if self.cap_chars and len(self.text) + len(kept) + 1 > self.cap_chars:
            self.full = True
            return ""
        self.keys = keys
        self.citations += new
        self._run = None
        return self._kept(kept)

    def _kept(self, kept: str) -> str:
        self.kept.append(kept)
        if self.cap_sentences and len(self.kept) >= self.cap_sentences:
            self.full = True
        return kept


def passage_numbers(group: str) -> list[int]:
    """Passage numbers in "1", "1, 3", "2-4" (a short range cites the passages between too)."""
    values: list[int] = []
    for m in re.finditer(r"(\d+)(?:\s*[-\u2013]\s*(\d+))?", group):
        lo = int(m.group(1))
        values.append(lo)
        if m.group(2):
            hi = int(m.group(2))
            values += range(lo + 1, hi + 1) if 0 < hi - lo <= 5 else [hi]
    return list(dict.fromkeys(values))


def _tidy(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    return re.sub(r"\s+([.,;:!?])(?=\s|$)", r"\1", sentence)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class _Quotes:
    """The best-supporting sentence run of each passage for a claim (passage sentences tokenised once)."""

    def __init__(self, hits: list[Hit], tokens: Tokens, idf: Idf) -> None:
        self.hits = hits
        self.tokens = tokens
        self.idf = idf
        self._sentences: dict[int, tuple[list[tuple[int, int]], list[set[str]]]] = {}

    def sentences(self, i: int) -> tuple[list[tuple[int, int]], list[set[str]]]:
        if i not in self._sentences:
            hit = self.hits[i]
            spans = sentence_spans(hit.article.text, hit.chunk.start, hit.chunk.end)
            terms = [set(t) for t in self.tokens([hit.article.text[a:b] for a, b in spans])] if spans else []
            self._sentences[i] = (spans, terms)
        return self._sentences[i]

    def best(self, i: int, claim: str) -> tuple[int, int, float] | None:
        """(start, end, coverage): the run of passage i's sentences covering most of the claim's weighted terms."""
        claim_terms = set(self.tokens([claim])[0])
        spans, terms = self.sentences(i)
        if not claim_terms or not spans:
            return None
        weights = self.idf(sorted(claim_terms))
        total = sum(weights.values()) or 1.0

        def coverage(lo: int, hi: int) -> float:
            covered = set().union(*terms[lo:hi + 1]) & claim_terms
            return sum(weights.get(t, 0.0) for t in covered) / total

        scores = [coverage(j, j) for j in range(len(spans))]
        lo = hi = max(range(len(spans)), key=lambda j: (scores[j], -j))
        score = scores[lo]
        if score <= 0:
            return None
        text = self.hits[i].article.text
        while hi - lo + 1 < MAX_QUOTE_SENTENCES:
            options = []
            if lo > 0 and not _BLANK_LINE.search(text[spans[lo - 1][1]:spans[lo][0]]):
                options.append((coverage(lo - 1, hi), lo - 1, hi))
            if hi + 1 < len(spans) and not _BLANK_LINE.search(text[spans[hi][1]:spans[hi + 1][0]]):
                options.append((coverage(lo, hi + 1), lo, hi + 1))
            if not options:
                break
            gain, new_lo, new_hi = max(options, key=lambda o: (o[0], -o[1]))
            if gain - score < EXTEND_GAIN - 1e-9:
                break
            lo, hi, score = new_lo, new_hi, gain
        return spans[lo][0], spans[hi][1], score


__all__ = ["MARKERS", "NOT_FOUND", "RARE_IDF", "RARE_SHARE", "Grounder", "ground", "names", "numbers",
           "passage_numbers", "rare_terms", "unsupported"]
