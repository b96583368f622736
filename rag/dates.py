"""Dates in questions and in article sentences.

`find_range` turns the time words of a question ("this week", "yesterday", "last month",
"in March 2022", "since Tuesday", "before 5 March 2022") into a date range relative to a
reference date. `sentence_date` finds the date a sentence states ("on Tuesday", "on March 3"),
resolved against the article's publication date.

"This week" is the seven days up to the reference (asked on a Monday, a news reader does not mean Monday
alone; news of four days ago is "this week's" in a Thursday's quiz or digest); "last week" is the calendar
week (Monday to Sunday) before the reference's.
Only the first time expression of a question is used.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS = {m: i + 1 for i, m in enumerate(
    "january february march april may june july august september october november december".split())}
MONTHS.update({m[:3]: i for m, i in list(MONTHS.items())})
MONTHS["sept"] = 9
WEEKDAYS = {d: i for i, d in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}

_MONTH = r"(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|" \
         r"sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_WEEKDAY = r"(?P<weekday>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_NUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
        "ten": 10, "a": 1, "an": 1}


@dataclass(frozen=True)
class DateRange:
    """A question's time expression as dates (either end may be open)."""

    since: date | None
    until: date | None
    phrase: str  # as written in the question
    start: int  # its span in the question
    end: int
    relative: bool  # True when it depends on the reference date ("this week"), False for "in March 2022"


def _month_range(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, monthrange(year, month)[1])


def _recent_month(month: int, ref: date) -> int:
    """The year of the latest `month` not after the reference date."""
    return ref.year if month <= ref.month else ref.year - 1


def _last_weekday(weekday: int, ref: date, strictly_before: bool = False) -> date:
    back = (ref.weekday() - weekday) % 7
    if back == 0 and strictly_before:
        back = 7
    return ref - timedelta(days=back)


_DAY_OF_MONTH = (rf"(?:(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}|"
                 rf"{_MONTH.replace('<month>', '<month2>')}\s+(?P<day2>\d{{1,2}})"
                 rf"(?:st|nd|rd|th)?)(?:,?\s+{_YEAR})?")


def _parse_point(text: str, ref: date) -> tuple[date, date, bool] | None:
    """(first day, last day, relative) of a single point in time: a day, weekday, month or year."""
    t = text.lower().strip()
    if t == "today":
        return ref, ref, True
    if t == "yesterday":
        d = ref - timedelta(days=1)
        return d, d, True
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", t)
    if m:
        try:
            d = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            return None
        return d, d, False
    m = re.fullmatch(rf"(?:last\s+)?{_WEEKDAY}", t)
    if m:
        d = _last_weekday(WEEKDAYS[m["weekday"]], ref)
        return d, d, True
    m = re.fullmatch(_DAY_OF_MONTH, t)
    if m:
        day = m["day"] or m["day2"]
        month = MONTHS[_month_key(m["month"] or m["month2"])]
        year = int(m["year"]) if m["year"] else _recent_month(month, ref)
        try:
            d = date(year, month, int(day))
        except ValueError:
            return None
        return d, d, not m["year"]
    m = re.fullmatch(rf"{_MONTH}(?:,?\s+{_YEAR})?", t)
    if m:
        month = MONTHS[_month_key(m["month"])]
        year = int(m["year"]) if m["year"] else _recent_month(month, ref)
        return (*_month_range(year, month), not m["year"])
    m = re.fullmatch(_YEAR, t)
    if m:
        return date(int(t), 1, 1), date(int(t), 12, 31), False
    return None


def _month_key(name: str) -> str:
    name = name.lower()
    return "sept" if name.startswith("sept") else name[:3]


_POINT = (rf"(?:today|yesterday|\d{{4}}-\d\d-\d\d|(?:last\s+)?{_WEEKDAY}|{_DAY_OF_MONTH}|"
          rf"{_MONTH}(?:,?\s+{_YEAR})?|{_YEAR})")
_POINT_PLAIN = re.sub(r"\?P<\w+>", "", _POINT)
_PATTERNS = [
    ("span", re.compile(r"\b(?:(?:in|over|during)\s+)?(?P<the>the\s+)?(?P<which>this|last|past|previous)\s+"
                        r"(?:(?P<n>\d+|one|two|three|four|five|six|seven|eight|nine|ten|few)\s+)?"
                        r"(?P<unit>days?|weeks?|months?|years?)\b", re.I)),
    ("since", re.compile(rf"\b(?:since|after|from)\s+(?:the\s+)?(?P<point>{_POINT_PLAIN})\b", re.I)),
    ("until", re.compile(rf"\b(?:before|until|till|up\s+to)\s+(?:the\s+)?(?P<point>{_POINT_PLAIN})\b", re.I)),
    ("point", re.compile(rf"\b(?:(?:in|on|during|of)\s+)?(?P<point>{_POINT_PLAIN})\b", re.I)),
]


def find_range(question: str, reference: date) -> DateRange | None:
    """The date range a question asks about, relative to `reference`, or None when it names no time."""
    found: list[tuple[int, DateRange]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(question):
            rng = _range_of(kind, m, reference)
            if rng is not None:
                found.append((m.start(), rng))
                break
    if not found:
        return None
    # the earliest expression; "since"/"until" win over the bare point inside them
    return min(found, key=lambda x: (x[0], -(x[1].end - x[1].start)))[1]


def _range_of(kind: str, m: re.Match, ref: date) -> DateRange | None:
    phrase = m.group(0)
    if kind == "span":
        which, unit = m["which"].lower(), m["unit"].lower().rstrip("s")
        n_text = (m["n"] or "").lower()
        n = 3 if n_text == "few" else int(n_text) if n_text.isdigit() else _NUM.get(n_text, 1)
        explicit_n = bool(n_text)
        if which == "this" or (which == "past" and not explicit_n and unit == "day"):
            since = {"day": ref, "week": ref - timedelta(days=6), "month": ref.replace(day=1),
                     "year": ref.replace(month=1, day=1)}[unit]
            return DateRange(since, ref, phrase, m.start(), m.end(), True)
        # "the past year", "over the last year", "the last 12 months": the days up to the reference ("last year"
        # alone is the calendar year before it)
        if which in ("past", "last") and (explicit_n or which == "past" or m["the"]):
            days = {"day": 1, "week": 7, "month": 30, "year": 365}[unit] * n
            return DateRange(ref - timedelta(days=days), ref, phrase, m.start(), m.end(), True)
        # "last week", "previous month": the whole calendar unit before the reference's
        if unit == "day":
            d = ref - timedelta(days=1)
            return DateRange(d, d, phrase, m.start(), m.end(), True)
        if unit == "week":
            monday = ref - timedelta(days=ref.weekday() + 7)
            return DateRange(monday, monday + timedelta(days=6), phrase, m.start(), m.end(), True)
        if unit == "month":
            last = ref.replace(day=1) - timedelta(days=1)
            return DateRange(last.replace(day=1), last, phrase, m.start(), m.end(), True)
        return DateRange(date(ref.year - 1, 1, 1), date(ref.year - 1, 12, 31), phrase, m.start(), m.end(), True)
    bare = m["point"].strip().lower()
    if kind == "point" and m.start("point") == m.start() and not re.search(r"\d|today|yesterday", bare):
        return None  # a bare "may" or "march" is a word, not a date: "in March" is one
    if kind == "point" and re.fullmatch(r"\d{4}", bare) and not re.match(r"(?i)in|during", phrase):
        return None  # "the 2022 Stanley Cup" names an event, "in 2022" a time
    point = _parse_point(m["point"], ref)
    if point is None:
        return None
    first, last, relative = point
    word = phrase.split()[0].lower()
    if kind == "since":  # "since/from March" counts March, "after March" starts in April
        return DateRange(last + timedelta(days=1) if word == "after" else first, None, phrase, m.start(), m.end(),
                         relative)
    if kind == "until":  # "before March" ends in February, "until/up to March" counts March
        return DateRange(None, first - timedelta(days=1) if word == "before" else last, phrase, m.start(), m.end(),
                         relative)
    return DateRange(first, last, phrase, m.start(), m.end(), relative)


def without_phrase(question: str, rng: DateRange) -> str:
    """The question with its time expression removed ("what happened this week?" -> "what happened?")."""
    # "As of this week, which ...?": the "as of" leading to the phrase goes with it, and a comma left opening
    lead = re.search(r"\bas(?:\s+of)?\s*$", question[:rng.start], re.I)
    rest = question[:lead.start() if lead else rng.start] + question[rng.end:]
    rest = re.sub(r"\s+([?.!,])", r"\1", " ".join(rest.split())).lstrip(", ")
    if rest[:1].islower() and question[:1].isupper():
        rest = rest[0].upper() + rest[1:]
    return rest if rest.strip(" ?.!") else question


_SENTENCE_DATE = re.compile(rf"\b(?:on|since|last|this|until|by|from)\s+(?:the\s+)?(?P<point>{_POINT_PLAIN})\b"
                            r"|\b(?P<rel>yesterday|today)\b", re.I)


def sentence_date(sentence: str, published: date | None) -> date | None:
    """The day a sentence explicitly says something happened ("on Tuesday", "on March 3, 2022", "yesterday"),
    resolved against the publication date; None when it says none or the day is not a single day."""
    for m in _SENTENCE_DATE.finditer(sentence):
        text = m["point"] or m["rel"]
        if re.fullmatch(_YEAR, text.strip()):
            continue
        if published is None and not re.search(r"\d{4}", text):
            continue
        point = _parse_point(text, published or date.today())
        if point is None or point[0] != point[1]:
            continue
        day = point[0]
        if m["point"] and re.fullmatch(_WEEKDAY, text.strip().lower()) and published is not None:
            day = _last_weekday(WEEKDAYS[text.strip().lower()], published)  # "on Tuesday": that week's Tuesday
        if published is None or day <= published:
            return day
    return None


# a year a text names: not "$2,022" or "2022.5"; "2022," and "in 2019." are
_YEAR_NAMED = re.compile(r"(?<![\w.$])(?:19|20)\d\d(?![\w.,]\d|\d)")
_SPAN_WORD = re.compile(r"\b(?:since|after|before|from|until|till|through|between|by|and|to)\W+$|[-\u2013/]\s*$",
                        re.I)
# what precedes a year a sentence measures from or against ("since 2001", "than in 2019", "compared with 2020")
_REFERENCE = re.compile(r"\b(?:since|than(?:\s+(?:in|at|during))?|compared\s+(?:with|to)(?:\s+in)?)\W+$", re.I)
_PAST_ASKED = re.compile(r"\b(?:did|was|were|won|became|happened|had|has\s+been|have\s+been|[a-z]{3,}ed)\b", re.I)
_FUTURE_ASKED = re.compile(r"\b(?:will|would|could|might|may|going\s+to|expected|upcoming|next|plans?|scheduled)\b",
                           re.I)


def later_year(question: str, newest: date | None) -> int | None:
    """The year a past-tense question asks about ("Who won the 2024 election?") when it is after the year of the
    newest article (no article can report it), else None. A question about what is coming ("will", "expected")
    may be answered by a preview, and is left alone."""
    if newest is None or not _PAST_ASKED.search(question) or _FUTURE_ASKED.search(question):
        return None
    years = [int(y) for y in years_named(question)]
    return max(years) if years and max(years) > newest.year else None


def parse_iso(text: str) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def event_years(question: str) -> frozenset[str]:
    """The years a question names as its event's ("the 2022 Stanley Cup", "in 2020"); none when it names a span
    ("since 2020", "between 2019 and 2021": any year in it may answer)."""
    found = list(_YEAR_NAMED.finditer(question))
    if any(_SPAN_WORD.search(question[:m.start()]) for m in found):
        return frozenset()
    return frozenset(m.group(0) for m in found)


def years_named(text: str) -> set[str]:
    """The years `text` names ("2019", not "$2,022")."""
    return set(_YEAR_NAMED.findall(text))


def years_told(sentence: str) -> set[str]:
    """The years `sentence` tells of: those it names but the ones it measures from or against ("the first title
    since 2001", "higher than in 2019"), which date a comparison, not what it tells."""
    return {m.group(0) for m in _YEAR_NAMED.finditer(sentence) if not _REFERENCE.search(sentence[:m.start()])}


def other_years(sentence: str, years: frozenset[str]) -> bool:
    """Whether `sentence` tells of years (`years_told`), none of them one of `years` (the question's): it tells of
    another time."""
    named = years_told(sentence)
    return bool(named) and not named & years
