"""News-aware reading of quoted passages: who said it, and when things happened.

`attribution` finds who a passage attributes its claim to ("according to Mariupol mayor Vadym
Boychenko", "..., the health ministry said.", "CNN reported", "officials said") and names them
("Vadym Boychenko, mayor of Mariupol", "the health ministry", "CNN", "officials"). A passage that
attributes nothing gets "". It only reads the passage: pronouns ("he said") are not resolved.

`is_timeline_question` tells questions about change over time ("what happened in Mariupol?", "what has
happened to Kherson since March?") and `timeline` groups dated sentences into `TimelinePoint`s.

`marks` and `story_groups` find syndicated copies (one wire story republished by several outlets, edited
or cut short) among a whole collection at index time: sampled shingles propose candidates, `copy_of`
confirms them. It does not find the same event told in different words: that is two stories.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date
from functools import lru_cache

from rag.chunk import sentence_spans
from rag.dates import parse_iso, sentence_date
from rag.types import Article, Citation, TimelinePoint

_TIMELINE = re.compile(r"\b(?:what\s+(?:has\s+|have\s+|had\s+)?(?:happened|happens|is\s+happening|"
                       r"has\s+been\s+happening|went\s+on|is\s+going\s+on)|timeline|chronolog\w*|over\s+time|"
                       r"latest\s+on|what'?s\s+new|developments?|unfolded|events?\s+in)\b", re.I)


_FIGURE = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?![\w.,]\d)(?:\s+(?:people|persons|civilians|residents|"
                     r"soldiers|troops|children|others))?(?:\s+(?:were|have\s+been|had\s+been|are|was))?"
                     r"\s+([a-z]+)", re.I)
# what a figure counts, normalised: "128 people were injured" and "128 persons wounded" are both "injured"
_COUNTED = {"injured": "injured", "wounded": "injured", "hurt": "injured", "injuries": "injured",
            "killed": "killed", "dead": "killed", "died": "killed", "deaths": "killed", "lives": "killed",
            "missing": "missing", "evacuated": "evacuated", "displaced": "displaced", "arrested": "arrested",
            "detained": "arrested", "rescued": "rescued"}


def figures(sentence: str) -> list[tuple[int, str]]:
    """(value, what it counts) of the counts a sentence gives: "at least 128 people were injured" -> (128, "injured").

    Only counts of people (casualties, evacuations, arrests) and of a noun right after the number ("412 homes");
    years and dates are not figures."""
    out = []
    for m in _FIGURE.finditer(sentence):
        value = int(m.group(1).replace(",", ""))
        word = m.group(2).lower()
        if 1900 <= value <= 2100 and "," not in m.group(1):
            continue  # a year
        what = _COUNTED.get(word)
        if what is None and re.fullmatch(r"[a-z]{3,}s", word) and m.group(0).split()[1].lower() == word:
            what = word  # "412 homes"
        if what:
            out.append((value, what))
    return out


def differing(value: int, what: str, terms: frozenset[str], other_terms: frozenset[str],
              other_figures: list[tuple[int, str]]) -> list[int]:
    """The other sentence's counts of `what` that are not `value`, when both sentences are about the same thing
    (they share at least 0.3 of the shorter one's terms, the figure left out); [] otherwise. The rule the
    extractive and the LLM answers use to say that reports differ."""
    shared = len((terms & other_terms) - {str(value)}) / max(min(len(terms), len(other_terms)), 1)
    if shared < 0.3:
        return []  # a count of something else
    return [other for other, kind in other_figures if kind == what and other != value]


@lru_cache(maxsize=256)  # an article is compared with each of its candidates; a set is ~100 KB, keep few
def shingles(text: str) -> frozenset[tuple[str, ...]]:
    """The article's 4-word runs (lower-cased words): what near-duplicate texts share."""
    return frozenset(_runs(text))


def _runs(text: str, k: int = 4) -> list[tuple[str, ...]]:
    words = re.findall(r"\w+", text[:6000].lower())  # the opening is enough to tell a copy, and fast
    if len(words) < k:
        return [tuple(words)]
    return list(zip(*(words[i:] for i in range(k))))


def same_story(a: frozenset, b: frozenset, threshold: float = 0.85) -> bool:
    """Near-duplicates: nearly all of the shorter text's shingles are in the other (a republished wire story,
    edited, retitled or cut short). Measured on a news corpus: copies share 0.9 or more; a roundup or photo
    gallery sharing a story's paragraphs, or another story on the same event, 0.6 to 0.8."""
    if len(a) < 8 or len(b) < 8:
        return a == b
    return len(a & b) / min(len(a), len(b)) >= threshold


MARK_EVERY = 8  # one shingle in 8 is kept as a mark (by hash, so copies keep the same ones)
COMMON_MARK = 20  # a mark in more articles than this is a template (a sign-up form, a video player), not a story


def marks(text: str) -> list[int]:
    """The sampled shingle hashes an article is found by: every shingle whose hash is a multiple of
    `MARK_EVERY`, plus the 4 lowest (so a short text has some). A copy keeps most of its original's marks."""
    hashes = sorted({zlib.crc32(" ".join(s).encode()) for s in _runs(text)})
    return sorted(set(hashes[:4]) | {h for h in hashes if h % MARK_EVERY == 0})


def story_groups(article_marks: dict[str, list[int]], order: list[str],
                 article: Callable[[str], Article]) -> dict[str, str]:
    """{article id: story id} for every article with a syndicated copy in the collection; the story id is the
    id of the group's first article in `order` (say, the earliest published). Candidates share most of their
    marks; each pair is then confirmed by `copy_of` (`article(id)` loads one). Articles without copies
    are left out. Runs in time close to linear in the number of marks, not in pairs of articles."""
    by_mark: dict[int, list[str]] = defaultdict(list)
    for article_id, hashes in article_marks.items():
        for h in hashes:
            by_mark[h].append(article_id)
    shared: Counter[tuple[str, str]] = Counter()
    for ids in by_mark.values():
        if 1 < len(ids) <= COMMON_MARK:
            shared.update(itertools.combinations(sorted(ids), 2))
    parent: dict[str, str] = {}

    def root(a: str) -> str:
        while parent.get(a, a) != a:
            a = parent[a]
        return a
    rank = {a: i for i, a in enumerate(order)}
    for (a, b), n in shared.items():
        # sampled containment well below the 0.85 that `same_story` asks: a generous filter, confirmed below
        if n < 0.5 * min(len(article_marks[a]), len(article_marks[b])) or root(a) == root(b):
            continue
        if copy_of(article(a), article(b)):
            ra, rb = sorted((root(a), root(b)), key=lambda x: (rank.get(x, len(rank)), x))
            parent[rb] = ra
    return {a: root(a) for a in set(parent) | set(parent.values())}  # each has a parent or a child


def copy_of(a: Article, b: Article) -> bool:
    """The same story: near-duplicate texts, from different outlets or under similar titles. One outlet's
    pages sharing a text under unrelated titles share a template (a sign-up form, a video player), not a story."""
    if not same_story(shingles(a.text), shingles(b.text)):
        return False
    return outlet(a) != outlet(b) or similar_titles(a.title, b.title)


def similar_titles(a: str, b: str) -> bool:
    """The titles share half the content words of the shorter one, and two of them when it has two (the
    outlet's " | The Week UK" tail left out); two empty titles count as similar."""
    wa, wb = title_words(a), title_words(b)
    if not wa or not wb:
        return wa == wb
    shortest = min(len(wa), len(wb))
    return len(wa & wb) >= max(min(2, shortest), shortest / 2)


_TITLE_TAIL = re.compile(r"\s+[|\u2013\u2014-]\s+[^|\u2013\u2014-]{1,40}$")
_TITLE_STOP = frozenset("the and for with from that this are was were has have its into over after about will "
                        "what why how who not but you your our new".split())


def title_words(title: str) -> set[str]:
    title = _TITLE_TAIL.sub("", title.strip())
    return {w for w in re.findall(r"[a-z0-9]{3,}", title.lower()) if w not in _TITLE_STOP}


def outlet(article: Article) -> str:
    """How a reader knows the outlet: its source, else its url's host, else its title."""
    if article.source:
        return article.source
    host = re.match(r"https?://(?:www\.)?([^/:]+)", article.url or "")
    return host.group(1) if host else article.title


def is_timeline_question(question: str) -> bool:
    return bool(_TIMELINE.search(question))


def event_date(sentence: str, published: str) -> date | None:
    """The day a sentence is about: the one it states ("on Tuesday", resolved), else its article's date."""
    pub = parse_iso(published)
    return sentence_date(sentence, pub) or pub


def timeline(sentences: list[tuple[str, str, int]]) -> tuple[TimelinePoint, ...]:
    """(sentence, article's published date, citation n) grouped by day, oldest first; undated ones left out.

    A sentence stating no date continues the one before it in the same quote ("The bridge collapsed on
    Wednesday. Nobody was on it."): it takes that sentence's day."""
    days: dict[date, tuple[list[str], list[int]]] = {}
    last: tuple[int, date | None] = (0, None)
    for text, published, n in sentences:
        stated = sentence_date(text, parse_iso(published))
        day = stated or (last[1] if last[0] == n else None) or parse_iso(published)
        last = (n, day)
        if day is None:
            continue
        texts, numbers = days.setdefault(day, ([], []))
        texts.append(" ".join(text.split()))
        if n not in numbers:
            numbers.append(n)
    return tuple(TimelinePoint(str(day), " ".join(texts), tuple(numbers))
                 for day, (texts, numbers) in sorted(days.items()))

def cited_timeline(question: str, citations: list[Citation] | tuple[Citation, ...]) -> tuple[TimelinePoint, ...]:
    """For a timeline question, the cited sentences by day (each quote's sentences with its article's date and
    its citation number); () for other questions."""
    if not is_timeline_question(question):
        return ()
    return timeline([(c.quote[a:b], c.published, c.n) for c in citations for a, b in sentence_spans(c.quote)])


def citation(n: int, article: Article, start: int, end: int) -> Citation:
    """Citation `n`: the exact span `article.text[start:end]`, with whom it attributes its claim to."""
    quote = article.text[start:end]
    return Citation(n=n, article_id=article.id, title=article.title, source=article.source,
                    published=article.published, url=article.url, path=article.path, quote=quote, start=start,
                    end=end, attribution=attribution(quote))


def differ_note(differ: list[tuple[str, list[tuple[int, Citation, str]]]]) -> str:
    """Our sentence (not a quote) saying the reports differ: for each thing counted, every (figure, citation of
    the sentence giving it, whom that sentence cites) with the citation's source and date."""
    notes = []
    for what, sides in differ:
        parts = [f"{value:,} {what} in " + ", ".join(x for x in (c.source or c.title, c.published) if x)
                 + (f", citing {said}" if said else "") + f" [{c.n}]" for value, c, said in sides]
        notes.append(f"the reports differ on the number {what}: " + "; ".join(parts))
    return "(Note, not a quote: " + "; ".join(notes) + ".)"


ROLES = frozenset("""mayor governor president minister spokesman spokeswoman spokesperson official officials chief
head commander secretary director master ambassador chancellor leader adviser advisor general prosecutor
manager chairman chairwoman chair ceo coach keeper premier senator lawmaker deputy envoy analyst expert
researcher professor doctor officer representative administrator""".split())
ORGS = frozenset("""ministry police army military government office agency department council committee authorities
officials service services forces command spokesperson court prosecutors union company""".split())
COMPOUND_ROLES = ("harbour master", "harbor master", "police chief", "fire chief", "prime minister",
                  "foreign minister", "defence minister", "defense minister", "press secretary", "health minister")
_VERBS = (r"(?:(?:had|has|have)\s+)?"
          r"(?:said|says|told|reported|reports|stated|announced|confirmed|claimed|warned|added|wrote|tweeted)")
_WHO = r"[A-Za-z][\w'’.-]*(?:\s+(?:of\s+|the\s+|for\s+)?[A-Za-z][\w'’.-]*){0,6}?"
_PATTERNS = [
    # "according to the city's mayor, Vadym Boychenko."
    re.compile(rf"\b[Aa]ccording\s+to\s+(?:the\s+)?(?P<who>{_WHO},\s+[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+){{0,2}})"
               r"\s*[.!?\"”]*\s*$"),
    re.compile(rf"\b[Aa]ccording\s+to\s+(?:the\s+)?(?P<who>{_WHO})(?=\s*(?:[,;:.!?)]|$|\s+(?:on|in|at|who)\b))"),
    re.compile(rf",\s*(?:the\s+)?(?P<who>{_WHO})\s+{_VERBS}\s*[.!?\"”]*\s*$"),  # "..., the ministry said."
    re.compile(rf",\s*{_VERBS}\s+(?:the\s+)?(?P<who>{_WHO})\s*[.!?\"”]*\s*$"),  # "..., said Ivan Petrov."
    re.compile(rf"^[\"“]?(?:the\s+)?(?P<who>{_WHO})\s+{_VERBS}\b", re.I),  # "CNN reported that ..."
]
_PRONOUNS = frozenset("he she they it we i you this that there who which one some".split())
_NOT_SPEAKERS = frozenset("""the a an and or but it this that there which who what when where why how
also has have had was were is are be been being not no would will could can may might""".split())
_NOT_SOURCES = frozenset("statement report reports data figures estimates estimate record records".split())


def attribution(passage: str) -> str:
    """Who the passage attributes its claims to ("; " between sentences naming different people)."""
    found: list[str] = []
    for a, b in sentence_spans(passage):
        who = sentence_attribution(passage[a:b])
        if who and not any(f.split(",")[0] == who.split(",")[0] for f in found):  # one name once
            found.append(who)
    return "; ".join(found)


def sentence_attribution(sentence: str) -> str:
    sentence = " ".join(sentence.split())
    for pattern in _PATTERNS:
        m = pattern.search(sentence)
        if m:
            who = describe(m.group("who"))
            if who:
                return who
    return ""


def describe(phrase: str) -> str:
    """A speaker phrase as a reader-facing name: "Mariupol mayor Vadym Boychenko" -> "Vadym Boychenko, mayor of
    Mariupol"; "regional governor Oleh Marchuk" -> "Oleh Marchuk, regional governor"; "CNN" -> "CNN"."""
    if "," in phrase:  # "city's mayor, Vadym Boychenko"
        role, _, name = phrase.rpartition(",")
        phrase = f"{role} {name}"
    words = phrase.strip(" ,.;:\"“”'").split()
    while words and words[0].lower() in ("the", "a", "an"):
        words = words[1:]
    if not words or words[0].lower() in _PRONOUNS or any(w.lower() in _NOT_SPEAKERS for w in words):
        return ""
    if words[-1].lower() in _NOT_SOURCES:
        return ""
    if not any(w[0].isupper() for w in words) and words[-1].lower() not in ROLES | ORGS:
        return ""  # a lower-case clause ("the river rose"), not a speaker
    if len(words) == 1 and words[0].lower() in ROLES | ORGS:
        return words[0].lower()  # "Officials said" at the start of a sentence
    name: list[str] = []
    while words and words[-1][:1].isupper() and words[-1].lower() not in ROLES and len(name) < 3:
        name.insert(0, words.pop())
    if not name or not words:
        return " ".join(words + name)
    lowered = " ".join(words).lower()
    compound = next((c for c in COMPOUND_ROLES if lowered.endswith(c)), "")
    if compound:
        role, rest = compound, words[:len(words) - len(compound.split())]
    elif words[-1].lower() in ROLES:
        role, rest = words[-1].lower(), words[:-1]
        while rest and rest[-1][:1].islower():
            role = f"{rest.pop()} {role}"
    else:
        return " ".join(words + name)
    if not rest:
        return f"{' '.join(name)}, {role}"
    place = " ".join(rest)
    if re.search(r"(?:ian|ese|ish|ean|an|ic|i)$", rest[-1]) and len(rest) == 1:
        return f"{' '.join(name)}, {place} {role}"  # "Ukrainian President X": "X, Ukrainian president"
    return f"{' '.join(name)}, {role} of {place}"
