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
every misreading. It knows nothing of LLMs, markers or citations: any answerer can use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

from rag.stopwords import STOPWORDS_EN_PLUS

Tokens = Callable[[list[str]], list[list[str]]]
Idf = Callable[[list[str]], dict[str, float]]

RARE_IDF = math.log(1 + 1 / 0.02)  # a term in at most ~2% of the index's passages is rare
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


__all__ = ["RARE_IDF", "RARE_SHARE", "names", "numbers", "rare_terms", "unsupported"]
