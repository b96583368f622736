"""News-aware reading of quoted passages: who said it.

`attribution` finds who a passage attributes its claim to ("according to Mariupol mayor Vadym
Boychenko", "..., the health ministry said.", "CNN reported", "officials said") and names them
("Vadym Boychenko, mayor of Mariupol", "the health ministry", "CNN", "officials"). A passage that
attributes nothing gets "". It only reads the passage: pronouns ("he said") are not resolved.
"""

from __future__ import annotations

import re

from rag.chunk import sentence_spans

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
