"""What kind of answer a question asks for, and whether a sentence offers one.

`asks(question)` reads the question words of the question's last sentence (a quiz question often opens with a
statement): who / which company -> "name", how many / how much / what percentage / what is the rate -> "number",
when / what year -> "date", where / which country -> "place", one opening with an auxiliary ("Did ...", "Is ...") ->
"yes/no", anything else -> "" (no kind: "what happened", "why"). A two-part question ("when did it open and how much
did it cost?") gives one `Ask` per part. `offers` tells whether a sentence holds such an answer that the question
does not already give: a capitalised name (not the sentence's opening word, unless the article writes it capitalised
mid-sentence too; not after "in": "in Velmora" says where), a number or amount (not a year, nor "double digits"), a
date (not the time of a statement: "Psaki said last week"), a place after a preposition. A question about an outcome
("who won", "who was elected") is answered only by a sentence that states one ("won", "beat", "were crowned
champions"): a preview ("will face", "is set to"), a title held from a past edition ("the defending champions") or a
sentence that merely names those involved offers nothing.

Cheap signals of English news writing (precompiled regexes, no language model): they do not tell a person from an
organisation, nor check that the name or number found is the one asked for (but for the noun a "how many" question
counts: `counted`, and a number followed within three words by it: `counts`); "yes/no" has no signal (the sentence
that settles it is the one that covers the question best).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rag.dates import MONTHS, WEEKDAYS, event_years, years_told
from rag.news import REPORTING
from rag.stopwords import STOPWORDS_EN_PLUS

NAME, NUMBER, DATE, PLACE, YESNO = "name", "number", "date", "place", "yes/no"

# nouns after "which"/"what" that ask for a place, a date, a number or a name (general categories of news answers)
_PLACE_NOUNS = (r"country|countries|city|cities|state|states|nation|nations|region|regions|province|town|towns|"
                r"continent|island|islands|place|places|capital|county|village|area|location|port|territory|park|"
                r"neighbou?rhood|district|sea|river|lake|mountain|volcano|airport")
_DATE_NOUNS = r"year|years|month|day|date|time|decade|century|season|week|weekday"
_NUMBER_NOUNS = (r"percentage|percent|proportion|share|number|amount|price|sum|rate|figure|total|fraction|"
                 r"magnitude|temperature|age|score|distance|speed|cost|value")
_NAME_NOUNS = (r"person|people|man|men|woman|women|company|companies|firm|firms|team|teams|club|party|parties|"
               r"organi[sz]ation|group|band|singer|artist|actor|actress|player|athlete|politician|leader|president|"
               r"senator|official|brand|network|show|series|film|movie|song|album|book|novel|airline|agency|"
               r"automaker|carmaker|retailer|bank|university|school|court|newspaper|magazine|app|platform|game|"
               r"celebrity|star|musician|rapper|author|writer|director|billionaire|ceo|executive|lawmaker|"
               r"candidate|governor|mayor|minister|judge|coach|manufacturer|chain|restaurant|store|website|"
               r"service|tech\s+giant|giant|channel|studio|label|outlet|publication|character|name")
# "which popular singer", "which US national park"; not "what did the ..."
_ADJ = (r"(?:(?!(?:is|was|are|were|do|does|did|has|have|had|will|would|can|could|should|the|a|an|of)\b)"
        r"[\w'\u2019-]+\s+){0,3}?")
_CLAUSE = r"(?:^|(?<=[,;:\u2014\u2013-])\s*|\b(?:and|but|or|so)\s+)"  # who/when/where open a clause, not a relative
_ASK = re.compile(
    rf"(?P<number>\bhow\s+(?:many|much|long|old|far|often|big|large|high|tall|fast|deep|heavy)\b|"
    rf"\b(?:what|which)\s+{_ADJ}(?:{_NUMBER_NOUNS})\b|"
    rf"\bwhat(?:['\u2019]s|\s+(?:is|was|are|were))\s+(?:the\s+|an?\s+)?{_ADJ}(?:{_NUMBER_NOUNS}|population)s?\b)"
    rf"|(?P<date>{_CLAUSE}when\b|\bhow\s+soon\b|\b(?:what|which)\s+(?:{_DATE_NOUNS})\b)"
    rf"|(?P<place>{_CLAUSE}where\b|\b(?:what|which)\s+{_ADJ}(?:{_PLACE_NOUNS})\b)"
    rf"|(?P<name>{_CLAUSE}(?:who|whom|whose)\b|\bwhat\s+is\s+the\s+name\b|\b(?:what|which)\s+{_ADJ}(?:{_NAME_NOUNS})\b)"
    rf"|(?P<none>\b(?:what|which|why|how)\b|{_CLAUSE}(?:who|when|where)\b)", re.I)
# the auxiliary verbs: one opens a yes/no question; "how many book titles have ...": one ends what is counted
_AUXILIARY = "is are was were am do does did has have had can could will would should shall may might must".split()
_YESNO = re.compile(rf"^\s*(?:{'|'.join(_AUXILIARY)}|isn't|aren't|wasn't|weren't|didn't|doesn't|don't|hasn't|haven't|"
                    r"won't)\b", re.I)
# "when did it open and how much did it cost?": a new question word after "and" starts a second part
_PARTS = re.compile(r",?\s+(?:and|but)\s+(?=(?:who|whom|whose|when|where|what|which|why|how)\b)", re.I)
_HOW_MANY = re.compile(r"\bhow\s+many\s+((?:[\w'\u2019-]+\s*){1,4})", re.I)
_AUXILIARIES = frozenset([*_AUXILIARY, "be", "been", "being"])
_SENTENCES = re.compile(r"(?<=[.!?])[\"\u201d']?\s+(?=[\"\u201c']?[A-Z0-9])")


@dataclass(frozen=True)
class Ask:
    """One part of a question: the kind of answer it wants, its question words as asked ("how many"), its text."""

    kind: str
    phrase: str
    text: str


def asks(question: str) -> list[Ask]:
    """The parts of `question` (one for most questions), each with the kind of answer it wants ("" for none)."""
    sentences = [s for s in _SENTENCES.split(question.strip()) if s.strip()]
    asked = next((s for s in reversed(sentences) if "?" in s), sentences[-1] if sentences else "")
    out: list[Ask] = []
    for part in _PARTS.split(asked):
        m = _asking(part)
        if m is not None and m.lastgroup != "none":
            out.append(Ask(m.lastgroup or "", " ".join(m.group(0).split()).lower(), part))
        elif _YESNO.match(part) and not out:
            out.append(Ask(YESNO, "whether", part))
        else:
            out.append(Ask("", "", part))
    return out or [Ask("", "", question)]


def _asking(part: str) -> re.Match[str] | None:
    """The first question words of `part`, passing over a "who", "when" or "where" after a comma when more follow:
    a relative clause ("Kanye West, who changed his name to Ye, is buying which platform?")."""
    found = list(_ASK.finditer(part))
    for m in found[:-1]:
        if not (_RELATIVE.match(m.group(0)) and part[:m.start()].rstrip().endswith((",", ";", "\u2014", "\u2013"))):
            return m
    return found[-1] if found else None


_RELATIVE = re.compile(r"\s*(?:who|whom|whose|when|where)\b", re.I)
_STOP = frozenset(w.lower() for w in STOPWORDS_EN_PLUS) | {"i", "mr", "mrs", "ms", "dr", "st"}
_TIMES = frozenset([*MONTHS, *WEEKDAYS])
# a run of capitalised words ("Anneli Kask", "Bank of England"), with the place preposition before it, if any
_NAMES = re.compile(r"(?P<where>\b(?:in|near|across|outside|inside|throughout)\s+(?:the\s+)?)?"
                    r"(?<![\w'\u2019.-])(?P<name>[A-Z][\w'\u2019&-]*(?:\s+(?:(?:of|de|da|van|von|al|bin)\s+)?"
                    r"[A-Z][\w'\u2019&-]*)*)")
_MID_CAPITAL = re.compile(r"(?<=[a-z0-9,;] )[A-Z][\w'\u2019&-]*\w")
_NUMBER_WORDS = (r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                 r"sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
                 r"hundred|hundreds|thousand|thousands|million|millions|billion|billions|trillion|dozen|dozens|"
                 r"half|twice|(?:a|one)\s+(?:third|quarter)")  # not "double digits", "the third quarter"
_NUMBER = re.compile(rf"[$\u20ac\u00a3\u00a5]\s?\d[\d,.]*|(?<![\w.,])\d[\d,.]*\d|(?<![\w.,])\d|\b(?:{_NUMBER_WORDS})\b",
                     re.I)
_YEAR = re.compile(r"(?:19|20)\d\d")
_MONTH_NAMES = (r"January|February|March|April|June|July|August|September|October|November|December|"
                r"Jan\.|Feb\.|Aug\.|Sept?\.|Oct\.|Nov\.|Dec\.")
_DATE = re.compile(
    rf"\b(?:{_MONTH_NAMES})(?!\w)|\bMay\s+\d|\d\s+May\b|\b(?:in|of|early|late|mid|since|until|by)[\s-]+May\b|"
    r"\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b|(?<![\w,.])(?:19|20)\d\d(?![\w,])|"
    r"\b\d{4}-\d\d-\d\d\b|\b(?:yesterday|today|tonight|tomorrow)\b|"
    r"\b(?:last|next|this|coming|earlier\s+this|later\s+this)\s+(?:week|weekend|month|year|spring|summer|fall|"
    r"autumn|winter|season)\b|\b\w+\s+(?:days?|weeks?|months?|years?)\s+ago\b")
# a reporting verb right before a date: the time of the statement ("said last week", "told CNN on Monday")
_SAID = re.compile(rf"\b{REPORTING}(?:\s+[A-Z][\w.]*){{0,3}}\s+(?:on\s+|late\s+|early\s+|earlier\s+)?$")
_PLACE = re.compile(r"\b(?:in|at|from|to|near|into|across|outside|inside|throughout|off|around|towards?)\s+"
                    r"(?:(?:the|northern|southern|eastern|western|central|north|south|east|west|northeast|northwest|"
                    r"southeast|southwest|rural|coastal|downtown)\s+)?(?P<place>[A-Z][\w'\u2019-]*\w)")


@lru_cache(maxsize=512)
def article_names(text: str) -> frozenset[str]:
    """The capitalised words an article writes mid-sentence (so names, not sentence openings), lower-cased."""
    return frozenset(m.group().lower() for m in _MID_CAPITAL.finditer(text))  # not a list of a long article's names


# a question about an outcome, and the words of news writing that state one
_OUTCOME_ASKED = re.compile(r"\b(?:won|beat|defeated|elected|became|crowned|clinched)\b", re.I)
_FUTURE_ASKED = re.compile(r"\b(?:will|would|could|might|expected|likely|favou?rites?|predicted|poised)\b", re.I)
_OUTCOME = re.compile(r"\b(?:won|wins|beat|beats|defeated|defeats|elected|crowned|clinched|victory|victorious|"
                      r"champions?|championship|winners?|triumph\w*|sworn\s+in|became|(?:has|have)\s+become|"
                      r"(?:claimed|captured|lifted|took\s+home)\s+the)\b", re.I)
# a title held from a past edition ("the defending champions", "the last two World Cup winners") is no outcome
_FORMER = re.compile(r"\b(?:defending|reigning|former|previous|past|last(?:\s+(?:two|three|four|five))?|"
                     r"(?:two|three|four|five|\d+)[-\s]time)\s+(?:[\w'\u2019-]+\s+){0,3}?"
                     r"(?:champions?|winners?|title[-\s]?holders?)\b", re.I)
# a preview ("will face", "is set to") names the contest ("the championship", "the winner") without its result:
# there only a verb in the past states one
_PREVIEW = re.compile(r"\b(?:will|would|could|might|(?:is|are|was|were)\s+(?:scheduled|set|expected|due|poised|"
                      r"slated|likely|projected|predicted|favou?red)\s+to|aims?\s+to|hopes?\s+to|plans?\s+to|"
                      r"upcoming|ahead\s+of)\b", re.I)
_OUTCOME_PAST = re.compile(r"\b(?:won|beat|defeated|clinched|became|(?:was|were|has\s+been|have\s+been)\s+"
                           r"(?:elected|crowned|sworn\s+in)|(?:claimed|captured|lifted|took\s+home)\s+the)\b", re.I)


@dataclass(frozen=True)
class Given:
    """What a question gives itself, lower-cased (a possessive "'s" dropped): its words and numbers, and its
    capitalised words (a name in the answer must be another; "new" asked is no reason to pass over "New York");
    `outcome`: it asks how something ended ("who won"), which a preview does not say; `years`: the years it
    names as its event's (`rag.dates.event_years`); `yes_no`: a part of it asks yes or no."""

    words: frozenset[str]
    names: frozenset[str]
    outcome: bool = False
    years: frozenset[str] = frozenset()
    yes_no: bool = False


def given(question: str) -> Given:
    found = re.findall(r"[\w'\u2019$%.,-]*\w", question)
    parts = asks(question)
    part = parts[0].text  # "He became the youngest pilot. How old is he?" asks an age, not an outcome
    outcome = bool(_OUTCOME_ASKED.search(part)) and not _FUTURE_ASKED.search(part)
    return Given(frozenset(_norm(w) for w in found), frozenset(_norm(w) for w in found if w[:1].isupper()), outcome,
                 event_years(question), any(p.kind == YESNO for p in parts))


def offers(kind: str, sentence: str, asked: Given, names: frozenset[str], published: str = "") -> bool:
    """Whether `sentence` holds an answer of `kind` that the question (`asked`) does not already give;
    `names`: the article's mid-sentence capitalised words (`article_names`); `published`: the article's date.
    True for no kind and "yes/no"."""
    if asked.outcome and kind and kind != YESNO and (
            not _OUTCOME.search(_FORMER.sub("", sentence))
            or _PREVIEW.search(sentence) and not _OUTCOME_PAST.search(sentence)):
        return False  # "X met Y", or "the winner will be crowned on Sunday", does not say who won
    if asked.outcome and not asked.years and kind and kind != YESNO and _past_edition(sentence, published):
        return False  # "who won the World Cup?" asks about the latest: not answered by the 1966 final
    if kind == NAME:
        return _has_name(sentence, asked.names, names)
    if kind == NUMBER:
        return any(_new(m.group(0), asked.words) and not _YEAR.fullmatch(m.group(0))
                   for m in _NUMBER.finditer(sentence))
    if kind == DATE:  # not when it was said ("..., Psaki said last week"): a date of the event told
        return any(_new(m.group(0), asked.words) and not _SAID.search(sentence, 0, m.start())
                   for m in _DATE.finditer(sentence))
    if kind == PLACE:  # "in Velmora", and names written otherwise ("the city of New York", "Brazil's capital")
        return any(_name_word(m.group("place"), asked.names) for m in _PLACE.finditer(sentence)) or \
            _has_name(sentence, asked.names, names, places=True)
    return True


def counted(question: str) -> str:
    """The word a "how many" question counts ("How many book titles have been banned?": "titles"; "How many people
    died?": "people"), "" for any other question: the last of the (at most three) words after "how many" before an
    auxiliary verb, else the first of them."""
    m = _HOW_MANY.search(question)
    if m is None:
        return ""
    words = m.group(1).split()
    cut = next((i for i, w in enumerate(words) if w.lower() in _AUXILIARIES), None)
    return words[cut - 1] if cut and cut <= 3 else words[0]


def counts(sentence: str, word_of: Callable[[str], str], noun: str) -> bool:
    """Whether a number of `sentence` counts `noun` (an index term; `word_of` gives a word's): the noun within the
    three words after it ("1,648 different titles", "more than 1,000 people")."""
    return any(noun in {word_of(w) for w in sentence[m.end():m.end() + 60].split()[:3]}
               for m in _NUMBER.finditer(sentence))


def _past_edition(sentence: str, published: str) -> bool:
    """Whether `sentence` names years, all before its article's: an outcome it states is history, not the news a
    question naming no year asks about. (Four-digit years compare as text.)"""
    named = years_told(sentence)
    return bool(named) and published[:4].isdigit() and max(named) < published[:4]


def _has_name(sentence: str, asked: frozenset[str], names: frozenset[str], places: bool = False) -> bool:
    opening = len(sentence) - len(sentence.lstrip(" \"'\u201c\u2018(["))
    for m in _NAMES.finditer(sentence):
        if m.group("where") and not places:
            continue  # "in Velmora": a place, not who
        words = m.group("name").split()
        if m.start("name") == opening and words[0].lower() not in names:
            words = words[1:]  # a sentence's opening word is capitalised anyway
        if any(_name_word(w, asked) for w in words):
            return True
    return False


def _name_word(word: str, asked: frozenset[str]) -> bool:
    low = _norm(word)
    return low not in asked and low not in _STOP and low not in _TIMES


def _new(found: str, asked: frozenset[str]) -> bool:
    """Not a figure or date the question gives itself ("the 2022 final", "in March")."""
    return not all(_norm(w) in asked for w in found.split())


def _norm(word: str) -> str:
    """A word as compared with the question's: lower-cased, without currency signs, a closing full stop or a
    possessive ("Brazil's" is "brazil")."""
    return re.sub(r"['\u2019]s$", "", word.lower().strip("$\u20ac\u00a3\u00a5%.,;:'\u2019\"\u201c\u201d() "))
