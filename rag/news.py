"""News-aware reading of quoted passages: who said it, and when things happened.

`attribution` finds who a passage attributes its claim to ("according to Mariupol mayor Vadym
Boychenko", "..., the health ministry said.", "CNN reported", "officials said") and names them
("Vadym Boychenko, mayor of Mariupol", "the health ministry", "CNN", "officials"). A passage that
attributes nothing gets "". It only reads the passage: pronouns ("he said") are not resolved.

`is_timeline_question` tells questions about change over time ("what happened in Mariupol?", "what has
happened to Kherson since March?") and `timeline` groups dated sentences into `TimelinePoint`s.

`marks` and `story_groups` find syndicated copies (one wire story republished by several outlets, edited
or cut short) among a whole collection at index time: sampled shingles propose candidates, `copy_of`
confirms them. `update_story_groups` brings the groups up to date after some articles came, changed or went,
reading only the stored marks of those and of their candidates; its groups are exactly `story_groups`' of the
whole collection. It does not find the same event told in different words: that is two stories.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from rag.chunk import sentence_spans
from rag.dates import parse_iso, sentence_date
from rag.types import Article, Citation, TimelinePoint

_TIMELINE = re.compile(r"\b(?:what\s+(?:has\s+|have\s+|had\s+)?(?:happened|happens|is\s+happening|"
                       r"has\s+been\s+happening|went\s+on|is\s+going\s+on)|timeline|chronolog\w*|over\s+time|"
                       r"latest\s+on|what'?s\s+new|developments?|unfolded|events?\s+in)\b", re.I)
# the present forms of _TIMELINE: a question about now (it is read only for a timeline question)
_NOW = re.compile(r"\b(?:is\s+happening|is\s+going\s+on|latest\s+on|what'?s\s+new)\b", re.I)


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


@dataclass(frozen=True)
class MarkLookup:
    """How `update_story_groups` reads the stored marks of the collection as it is now: `postings(hashes)` gives
    {hash: ids of the articles with it}, `marks_of(ids)` {id: its marks}, `counted(low, high)` the hashes that
    between `low` and `high` articles have."""

    postings: Callable[[Iterable[int]], dict[int, list[str]]]
    marks_of: Callable[[list[str]], dict[str, list[int]]]
    counted: Callable[[int, int], list[int]]


class _Groups:
    """Union-find over article ids whose root is always its group's first article in `order`."""

    def __init__(self, order: list[str]) -> None:
        self.parent: dict[str, str] = {}
        self.rank = {a: i for i, a in enumerate(order)}

    def root(self, a: str) -> str:
        while self.parent.get(a, a) != a:
            a = self.parent[a]
        return a

    def join(self, a: str, b: str) -> None:
        ra, rb = sorted((self.root(a), self.root(b)), key=lambda x: (self.rank.get(x, len(self.rank)), x))
        if ra != rb:
            self.parent[rb] = ra

    def stories(self) -> dict[str, str]:
        return {a: self.root(a) for a in set(self.parent) | set(self.parent.values())}


class _Update:
    """The state of one `update_story_groups`: the marks and postings read so far (read in batches, as needed)."""

    def __init__(self, lookup: MarkLookup, article: Callable[[str], Article], groups: _Groups) -> None:
        self.lookup, self.article, self.groups = lookup, article, groups
        self.marks: dict[str, list[int]] = {}
        self.postings: dict[int, list[str]] = {}

    def read(self, ids: Iterable[str], postings: bool = True) -> None:
        """Have the marks of `ids`, and (with `postings`) the postings of those marks (to tell which are common)."""
        ids = set(ids)
        missing = sorted(ids - self.marks.keys())
        self.marks.update({a: [] for a in missing} | self.lookup.marks_of(missing))
        if postings:
            self.read_postings(h for a in ids for h in self.marks[a])

    def read_postings(self, hashes: Iterable[int]) -> None:
        missing = set(hashes) - self.postings.keys()
        if missing:
            self.postings.update(self.lookup.postings(missing))

    def candidates(self, a: str, b: str, shared: int) -> bool:
        """`story_groups`' filter: the pair shares `shared` counted marks, half of the shorter's."""
        return shared > 0 and shared >= 0.5 * min(len(self.marks[a]), len(self.marks[b]))

    def try_pair(self, a: str, b: str, shared: int | None = None) -> None:
        """Join a and b when they are candidates and `copy_of` confirms (not tried when already joined)."""
        if self.groups.root(a) == self.groups.root(b):
            return
        if shared is None:
            common = set(self.marks[a]) & set(self.marks[b])
            shared = sum(1 for h in common if len(self.postings[h]) <= COMMON_MARK)
        if self.candidates(a, b, shared) and copy_of(self.article(a), self.article(b)):
            self.groups.join(a, b)

    def try_all(self, ids: list[str]) -> None:
        """Every pair of `ids` (a group's members, or the unchanged articles with one mark: a few)."""
        self.read(ids)
        for a, b in itertools.combinations(sorted(ids), 2):
            self.try_pair(a, b)


def update_story_groups(before: dict[str, str], came: set[str], went: set[str], order: list[str],
                        lookup: MarkLookup, article: Callable[[str], Article]) -> dict[str, str]:
    """`story_groups` of the collection now (ids in `order`), from `before` (the groups before the change), the
    ids whose text is new (`came`: added or changed) and those whose text went (`went`: removed or changed).

    Why it is exact: the groups are the connected parts of the confirmed candidate pairs, and whether two
    unchanged articles are candidates changes only where a mark they share crossed `COMMON_MARK` (it stopped or
    started counting). So the groups that lost a member, or in which two members share a mark that became
    common, are recomputed from their members; pairs of unchanged articles sharing a mark that may have stopped
    being common are tried; the articles that came are compared with every article sharing a counted mark with
    them. The marks of the texts that went are not stored any more, so every mark now in as many articles as
    the ones gone could have lifted over `COMMON_MARK` is taken as possibly crossing: extra work, never a missed
    pair. Returns {article id: story id}, as `story_groups`."""
    state = _Update(lookup, article, _Groups(order))
    state.read(came)
    came_marks = {a: state.marks[a] for a in came}
    new_with = Counter(h for hs in came_marks.values() for h in hs)
    count = {h: len(ids) for h, ids in state.postings.items()}  # now, in the whole collection
    became_common = [set(state.postings[h]) - came for h, n in count.items() if n > COMMON_MARK >= n - new_with[h]]
    stopped = {h for h, n in count.items() if n <= COMMON_MARK < n - new_with[h] + len(went)}
    if went:
        stopped.update(lookup.counted(max(2, COMMON_MARK + 1 - len(went)), COMMON_MARK))
    _regroup(state, before, came | went, became_common)
    state.read_postings(stopped)
    for h in stopped:  # unchanged pairs that may have gained a counted mark
        ids = [a for a in state.postings[h] if a not in came]
        if len(state.postings[h]) <= COMMON_MARK and len(ids) > 1:
            state.try_all(ids)
    shared: Counter[tuple[str, str]] = Counter()
    for h in new_with:  # every pair with an article that came, and how many counted marks it shares
        ids = state.postings[h]
        if 1 < len(ids) <= COMMON_MARK:
            shared.update(p for p in itertools.combinations(sorted(ids), 2) if p[0] in came or p[1] in came)
    # their counted marks are counted already: how many marks each has is all `candidates` still needs (reading
    # the postings of every mark of every partner was two thirds of this function's time for ten new articles)
    state.read({a for pair in shared for a in pair}, postings=False)
    for (a, b), n in shared.items():
        state.try_pair(a, b, n)
    return state.groups.stories()


def _regroup(state: _Update, before: dict[str, str], changed: set[str], became_common: list[set[str]]) -> None:
    """The groups of `before` without the changed articles: joined as they were, or, when one lost a member or
    two of its members share a mark that became common, from their pairs tried again."""
    members: dict[str, set[str]] = defaultdict(set)
    for a, story in before.items():
        members[story].add(a)
    for group in members.values():
        left = group - changed
        if len(left) < 2:
            continue
        if len(left) < len(group) or any(len(left & ids) > 1 for ids in became_common):
            state.try_all(sorted(left))
            continue
        first, *rest = sorted(left)
        for a in rest:
            state.groups.join(first, a)


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


def asks_about_now(question: str) -> bool:
    """Whether a question asks what is going on now ("what is happening in Kherson?"), not what happened."""
    return bool(_NOW.search(question))


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
# the verbs that attribute a statement (also `rag.kinds`: "said last week" dates the statement, not the event)
REPORTING = (r"(?:(?:had|has|have)\s+)?"
             r"(?:said|says|told|reported|reports|stated|announced|confirmed|claimed|warned|added|wrote|tweeted)")
_WHO = r"[A-Za-z][\w'’.-]*(?:\s+(?:of\s+|the\s+|for\s+)?[A-Za-z][\w'’.-]*){0,6}?"
_PATTERNS = [
    # "according to the city's mayor, Vadym Boychenko."
    re.compile(rf"\b[Aa]ccording\s+to\s+(?:the\s+)?(?P<who>{_WHO},\s+[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+){{0,2}})"
               r"\s*[.!?\"”]*\s*$"),
    re.compile(rf"\b[Aa]ccording\s+to\s+(?:the\s+)?(?P<who>{_WHO})(?=\s*(?:[,;:.!?)]|$|\s+(?:on|in|at|who)\b))"),
    re.compile(rf",\s*(?:the\s+)?(?P<who>{_WHO})\s+{REPORTING}\s*[.!?\"”]*\s*$"),  # "..., the ministry said."
    re.compile(rf",\s*{REPORTING}\s+(?:the\s+)?(?P<who>{_WHO})\s*[.!?\"”]*\s*$"),  # "..., said Ivan Petrov."
    re.compile(rf"^[\"“]?(?:the\s+)?(?P<who>{_WHO})\s+{REPORTING}\b", re.I),  # "CNN reported that ..."
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
