"""Clean: tell the junk lines of scraped news text from its sentences.

Scraped pages carry photo captions ("Hide Caption 1 of 49", "📸 45 photos"), credits ("Albert Retief/AFP/Getty
Images"), link teasers ("WNBA news:A look at ..."), headlines, labels and list items without a full stop,
datelines ("London CNN —"), newsletter, cookie and share boilerplate; and questions ("Is yours on it?", a news
quiz page's own question), which state nothing. `junk_reason(text, start, end)` says why
the sentence `text[start:end]` is junk (judged with the line it stands on), or "" when it is a sentence that may
be quoted; `junk_spans` gives the junk sentences of a text, and `without_junk` a text without them. The answer
uses `junk_reason` only: passages are embedded and indexed whole, junk included (8% of the shared corpus's
passage text, too little to pay for a second text per passage).

It does not rewrite stored text (quotes stay exact spans of it), and it knows no outlet's lines: the rules are
news-writing conventions, so they hold for a user's own collection. Lines repeated across an outlet's pages are
not counted here (that needs collection-level counts); most of them are caught by the rules above.
"""

from __future__ import annotations

import re
from functools import lru_cache

from rag.chunk import sentence_spans

# a line that ends a sentence: . ! ? or an ellipsis, maybe closed by quotes or brackets
_FINAL = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")
# a sentence ending in a question mark (a question quoted inside a statement, '"Why now?" she asked.', is not one)
_QUESTION = re.compile(r"\?[\"'\u201d\u2019)\]]*$")
# captions and galleries
_CAPTION_START = re.compile(
    r"\s*\(?(?:Photos?|Pictures?|Images?|Gallery|Slideshow|Video|Watch|Listen|Graphic)\s*:"
    r"|\s*(?:Photo|Image|Picture)s? (?:credit|courtesy)\b", re.I)
_CAPTION_ANYWHERE = re.compile(
    r"\bHide Caption\b|\bCaption \d+ of \d+|\bPhotos? \d+ of \d+\b|[\U0001F4F7\U0001F4F8\U0001F39E\U0001F3A5]"
    r"|\((?:Photo|Image|Picture)s?(?: credit)?:[^)]*\)"
    r"|\bClick to (?:expand|enlarge)\b|\bEnlarge this image\b|\bJUST WATCHED\b|\bReplay More Videos\b"
    r"|\bVideo Ad Feedback\b|\b\d{1,2}:\d\d - Source: ",  # a video's player: its title, length and source
    re.I,
)
_CAPTION_NEEDLES = ("caption", "photo", "image", "picture", "click to", "enlarge", "just watched", "replay more",
                    "video ad feedback", " - source: ",
                    "\U0001F4F7", "\U0001F4F8", "\U0001F39E", "\U0001F3A5")
# a credit: "Name/Agency[/Agency]", a wire or picture agency, or "Courtesy (of) X" ending a line
_AGENCY = (r"(?:Getty Images|AFP|Reuters|AP Photo|AP Images|Associated Press|EPA(?:-EFE)?|Shutterstock|Bloomberg"
           r"|Pool|Alamy|SOPA Images|LightRocket|NurPhoto|Anadolu Agency|Sipa USA|Xinhua|TASS|Sputnik|Imagn"
           r"|USA TODAY Sports|Invision|WireImage|FilmMagic)")
_CREDIT_END = re.compile(
    rf"(?:\b[A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*)*(?:/[A-Z][\w.'\u2019&-]*(?: [A-Z][\w.'\u2019&-]*)*)+"
    rf"|\b{_AGENCY}|\bCourtesy(?: of)? [A-Z][^.!?]*)\)?\s*$"
)
_CREDIT_ANYWHERE = re.compile(rf"\b[A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*)*/(?:[\w.' -]+/)*{_AGENCY}\b")
# boilerplate sentences: newsletters, subscriptions, cookies, sharing, links, corrections, affiliate notes
_BOILERPLATE_START = re.compile(
    r"\s*(?:subscribe\b|advertisement\b"
    r"|(?:read|see|watch|listen|click|tap) (?:more|here|now|next|also|the full)\b"
    r"|(?:related|more|also read|see also|recommended|trending|most read|updates?|contributing)\s*:"
    r"|(?:share|tweet|email|copy link|print)(?: this| on| article| story| via)?\b\s*(?:$|:|facebook|twitter)"
    r"|(?:corrections? (?:and|&) clarifications?|editor[\u2019']?s note|clarification|correction)\s*:"
    r"|(?:contact|reach|email) [A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*)* (?:at \S+@|on twitter\b))",
    re.I,
)
_BOILERPLATE_ANYWHERE = re.compile(
    r"\bsign(?:ing)? up\b[^.]*\b(?:newsletter|inbox|for (?:our|free))\b|\bsign up (?:here|now|today)\b"
    r"|\bsubscribe\b[^.]*\b(?:here|now|today|newsletter|print edition|digital subscri\w*)\b"
    r"|\bnewsletter\b[^.]*\b(?:sign|inbox|deliver|subscri|receive)|\b(?:delivered )?to your inbox\b"
    r"|\bcookies? (?:policy|settings|preferences)\b|\b(?:we|this (?:site|website)) uses? cookies\b|\bprivacy policy\b"
    r"|\bterms (?:of (?:use|service)|and conditions)\b|\barticle continues below\b|\bclick here\b"
    r"|\bfollow (?:us|him|her|them|[A-Z][\w ]{0,40}) on (?:twitter|facebook|instagram|tiktok)\b|\bon twitter: @\w+"
    r"|\ball rights reserved\b|\bcopyright \u00a9|\u00a9 ?\d{4}"
    r"|\bthis (?:story|article|report) (?:has been|was) (?:updated|corrected)\b|\bcontributed to this report\b"
    r"|\bopinions expressed in this (?:commentary|article|column)\b|\bcontent partner\b"
    r"|\b(?:purchases|products) you (?:make|buy) through our links\b|\bmay earn (?:us )?a commission\b"
    r"|\bprices were accurate at the time\b|\bsupport(?:ing)? (?:our|local) journalism\b"
    r"|\bwe will use the (?:details|information) you have shared\b|\bplease tick here\b"
    r"|\bcheck your local forecast\b|\bkeep refreshing this page\b|\bdownload (?:our|the) app\b"
    r"|\b(?:receive|get)\b[^.?]*\bnewsletter\b|\bis (?:made possible|supported|funded) in part by a grant\b"
    r"|\btext message alerts\b|\bnews quiz\b"
    r"|\bhow relevant is this ad\b|\bvideo (?:player|content) (?:was slow|never loaded|did not)",
    re.I,
)
# every match of _BOILERPLATE_ANYWHERE holds one of these (lower case): most sentences hold none, and a plain
# substring test is a hundredth of the alternation's cost (which an answer pays for each of ~50 sentences)
_BOILERPLATE_NEEDLES = (
    "sign", "subscribe", "newsletter", "inbox", "cookie", "privacy policy", "terms ", "article continues",
    "click here", "follow ", "on twitter", "all rights", "\u00a9", "updated", "corrected", "contributed to",
    "opinions expressed", "content partner", "through our links", "a commission", "prices were", "journalism",
    "you have shared", "tick here", "local forecast", "refreshing", "download", "in part by a grant", "text message",
    "news quiz", "this ad", "video ",
)
# who reported it, closing a wire story: "Barry Hatton contributed from Lisbon.", "Reporting by X; Editing by Y."
# (case-sensitive: a reporter is named, a "donor" or "local outlets" are not)
_NAME = r"[A-Z][\w.'\u2019-]*"
_BYLINE = re.compile(
    rf"\b{_NAME} {_NAME} contributed (?:reporting|from [A-Z]|to this)|\bcontributed reporting\b"
    rf"|^\s*(?:Additional r|R)eporting by {_NAME}(?: (?:{_NAME}|and|in|from))*"
    rf"(?:[;,.] ?(?:(?:Writing|Editing) by {_NAME}(?: (?:{_NAME}|and))*)?)*\s*$"
)
# a teaser: "WNBA news:A look at ..." (a label glued to a linked headline)
_TEASER = re.compile(r"^[^\W\d][^:\n]{0,60}[^\W\d?][?]?:[A-Z\"\u201c\u2018'\U0001F300-\U0001FAFF]")
# a tweet embedded in the page: "— Name (@handle) July 5, 2022" or its picture link
_EMBED = re.compile(r"\(@\w+\)\s+\w+ \d{1,2}, \d{4}\s*$|pic\.twitter\.com/|https?://t\.co/")
_WORD = re.compile(r"[^\W\d_]{2,}")
_BULLET = re.compile(r"^[\u25ba\u25b6\u00bb\u2022>]+\s*")
# a link list's item naming another page: "►Hayes Brown, MSNBC: “The bleak reality of ...”"
_LINKED = re.compile(r"^[\u25ba\u25b6\u00bb\u2022>]+\s*[^:\n]{3,80}:\s*[\"\u201c\u2018']")
# a line this long without a full stop is a paragraph cut short, not a headline: it may be quoted
SENTENCE_WORDS = 15
# ... but one with more text after it is a headline or teaser up to this long (a page's paragraph is cut short at
# its end; web headlines run to 20 words and more: "Miles Teller says he's down to do another 'Top Gun' movie if
# Tom Cruise gives the green light", followed by its blurb)
HEADLINE_WORDS = 25


def _found(start: re.Pattern[str], anywhere: re.Pattern[str], needles: tuple[str, ...], text: str) -> bool:
    """Whether `text` begins with `start` or holds `anywhere` (searched only when it holds one of `needles`)."""
    if start.match(text):
        return True
    low = text.lower()
    return any(n in low for n in needles) and anywhere.search(text) is not None


def junk_reason(text: str, start: int, end: int) -> str:
    """Why the sentence `text[start:end]` is not to be quoted ("caption", "credit", "boilerplate", "teaser",
    "embedded post", "lead-in", "no final punctuation", "label", "fragment", "question"), judged with its line; ""
    when it may be."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start:len(text) if line_end < 0 else line_end].strip()
    followed = line_end >= 0 and bool(text[line_end:line_end + 256].strip())  # more text after its line
    reason = _line_reason(line) or _sentence_reason(text[start:end].strip(),
                                                    HEADLINE_WORDS if followed else SENTENCE_WORDS)
    if reason == "no final punctuation" and _wrapped(text, end, line_end):
        return ""  # hard-wrapped prose ("It carries 240 passengers\nand crosses the lake"): the sentence goes on
    return reason


def _wrapped(text: str, end: int, line_end: int) -> bool:
    """Whether the sentence ending at `end` goes on in the next line: no blank line between, and the next line
    starts in lower case or the sentence is too long for a list item."""
    if line_end < 0 or text[end:line_end].strip() or text[line_end + 1:line_end + 2] in ("", "\n"):
        return False
    following = text[line_end + 1:line_end + 2]
    return following.islower() or following.isdigit() or len(_WORD.findall(text[text.rfind("\n", 0, end) + 1:end])) >= 8


@lru_cache(maxsize=8192)
def _line_reason(line: str) -> str:
    """Junk whatever its sentences are: the whole line is a caption, a credit or an ALL CAPS label."""
    if _found(_CAPTION_START, _CAPTION_ANYWHERE, _CAPTION_NEEDLES, line):
        return "caption"
    if _EMBED.search(line):
        return "embedded post"
    if _LINKED.match(line):
        return "teaser"
    if not _FINAL.search(line) and _CREDIT_END.search(line) and ("/" in line or len(_WORD.findall(line)) < 30):
        return "credit"  # a caption ending in its credit: "... on March 18. Adrian Dennis/AFP/Getty Images"
    if len(line.split()) > 12:  # first: most lines are prose, with too many letters to count for nothing
        return ""
    letters = [c for c in line if c.isalpha()]
    if len(letters) >= 4 and sum(c.isupper() for c in letters) / len(letters) > 0.8:
        return "label"  # ALL CAPS
    return ""


def _sentence_reason(sentence: str, headline_words: int = SENTENCE_WORDS) -> str:
    sentence = _BULLET.sub("", sentence)  # "►Related: ...", "► MORE: ...": the marker of a link list
    words = len(_WORD.findall(sentence))
    if sentence.endswith(":"):
        return "lead-in"  # "Our experts predict the winners:": what it introduces follows, in lines of their own
    if not _FINAL.search(sentence) and words < headline_words:
        return "no final punctuation"  # headlines, labels, datelines, list items
    if _found(_BOILERPLATE_START, _BOILERPLATE_ANYWHERE, _BOILERPLATE_NEEDLES, sentence) or _BYLINE.search(sentence):
        return "boilerplate"
    if _TEASER.match(sentence):
        return "teaser"
    if _CREDIT_ANYWHERE.search(sentence):
        return "credit"
    if words < 3:
        return "fragment"  # "9:30 p.m.", "___", "Yes."
    if _QUESTION.search(sentence):
        return "question"
    return ""


def is_junk(text: str, start: int, end: int) -> bool:
    """Whether the sentence `text[start:end]` is junk (see `junk_reason`)."""
    return bool(junk_reason(text, start, end))


def junk_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """The (start, end) spans of the junk sentences of `text[start:end]`."""
    return [(a, b) for a, b in sentence_spans(text, start, end) if is_junk(text, a, b)]


def without_junk(text: str, start: int = 0, end: int | None = None) -> str:
    """`text[start:end]` with its junk sentences left out (what is embedded or indexed; never what is stored)."""
    end = len(text) if end is None else end
    parts: list[str] = []
    cursor = start
    for a, b in junk_spans(text, start, end):
        parts.append(text[cursor:a])
        cursor = b
    parts.append(text[cursor:end])
    return "\n".join(line.strip() for line in "".join(parts).splitlines() if line.strip())
