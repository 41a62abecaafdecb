"""Chapter titles as a voice should say them. File names and tags keep the book's own form; only the spoken
title changes: "CHAPTER XXXVII." is said "Chapter 37", and shouting capitals are said in sentence case.

The rules, in order:

1. A title with CJK letters in it is returned as it is (第一章 风起 is already what should be said, and
   第XII章 is not English shouting).
2. A Roman numeral becomes digits where it is a numeral: after a label word (Chapter, Part, Book, Volume,
   Section, Act, Scene, Canto, Stave, Letter, Episode and their abbreviations and counterparts in French,
   German, Spanish and Italian; a lone letter followed by a word is not one there: "A Letter I Wrote"), or
   opening the title when nothing or a numbering mark (``.`` ``:`` ``)`` or a dash) follows and it is not a
   word or abbreviation as well (MIX, DC, XL). "I Remember" and "I, Robot" keep their pronoun. Only well-formed
   numerals count (IV, not IIII), all capitals or all small letters. Abbreviated labels before a number are
   said in full (Chap. IV -> Chapter 4, Vol. 3 -> Volume 3).
3. A title that is only a number, or a label and its number, loses its closing period ("Chapter 37." ->
   "Chapter 37", "XII." -> "12").
4. Shouting capitals: each stretch between sentence marks (``. : ; ! ? —``) that is all capitals and more than
   an acronym (two words or more, or one of five letters or more) is put in sentence case: "THE POOL OF TEARS"
   -> "The pool of tears", "CHAPTER 1. Down the Rabbit-Hole" -> "Chapter 1. Down the Rabbit-Hole". Roman
   numerals of two letters or more stay in capitals (HENRY VIII), English "I" stays a capital, and German
   (``language`` de) capitalizes every word instead, since its nouns are capitalized. Acronyms inside a
   shouted title (THE FBI FILES) cannot be told from words and are lowered with them.
"""

from __future__ import annotations

import re

from pipeline.textfacts import CJK_CHAR, primary_language

_ROMAN = re.compile(r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
# Label words after which a numeral is a number; abbreviations map to what is said.
_LABELS = (
    "chapter|chap\\.?|ch\\.|part|pt\\.|book|bk\\.|volume|vol\\.?|section|sect?\\.|act|scene|canto|stave|letter"
    "|episode|ep\\.|chapitre|partie|livre|tome|kapitel|teil|buch|band|cap[ií]tulo|capitolo|parte|libro|tomo"
)
_SAID = {
    "chap": "chapter",
    "ch": "chapter",
    "pt": "part",
    "bk": "book",
    "vol": "volume",
    "sec": "section",
    "sect": "section",
    "ep": "episode",
}
# A numeral after a label. A single letter followed by a word is not one: "Letter I Wrote", "Scene X Marks".
_LABELLED = re.compile(
    rf"\b(?P<label>{_LABELS})(?P<space>\s+|(?<=\.))"
    r"(?P<num>\d+|[IVXLCDM]{2,}|[ivxlcdm]{2,}|[IVXLCDMivxlcdm](?!\s+[^\W\d_]))\b(?![\w'’-])",
    re.I,
)
_CAPITAL_LABEL = re.compile(rf"\b(?:{_LABELS.upper()})(?=\s+\d)")
_LEADING = re.compile(r"^(?P<num>[IVXLCDM]+)(?=$|[.:)]|\s+[-–—])")
_NUMBER_ONLY = re.compile(rf"^(?:(?:{_LABELS})\s*)?\d+\.$", re.I)
# Sentence case works stretch by stretch, cut after these marks (the separators are kept by the split).
_STRETCH = re.compile(r"((?<=[.:;!?—])\s+|\s+(?=[-–—]\s))")
_ROMAN_WORD = re.compile(r"\b[IVXLCDM]{2,}\b")
# Well-formed numerals that are more often words or abbreviations: never converted or kept in capitals.
_NOT_NUMERALS = frozenset(
    {"MIX", "DC", "CD", "MD", "MC", "CC", "CV", "CM", "XL", "LI", "MI", "DI", "DIV", "CIV", "LIV"}
)
_PRONOUN_I = re.compile(r"\bi\b(?!\.\w)")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def roman_value(numeral: str) -> int | None:
    """The value of a well-formed Roman numeral (any case), or None: "XXXVII" -> 37, "IIII" -> None."""
    upper = numeral.upper()
    if not upper or not _ROMAN.fullmatch(upper):
        return None
    total = 0
    for a, b in zip(upper, upper[1:] + " ", strict=True):
        value = _ROMAN_VALUES[a]
        total += -value if b != " " and _ROMAN_VALUES[b] > value else value
    return total


def spoken_title(title: str, language: str | None = None) -> str:
    """How a voice should say ``title`` (see the module docstring): "CHAPTER XXXVII." -> "Chapter 37"."""
    if any(c.isalpha() and CJK_CHAR.match(c) for c in title):
        return title
    text = " ".join(title.split())
    text = _LABELLED.sub(_labelled, text)
    text = _LEADING.sub(_leading, text)
    if _NUMBER_ONLY.match(text):
        text = text[:-1]
    lang = primary_language(language)
    parts = _STRETCH.split(text)  # stretches at even positions, the spaces between them at odd ones
    text = "".join(part if n % 2 else _unshout(part, lang) for n, part in enumerate(parts))
    # A label still in capitals before its number (PART 1: too short to count as shouting) is said as a word.
    return _CAPITAL_LABEL.sub(lambda m: m.group(0).capitalize(), text)


def _labelled(match: re.Match[str]) -> str:
    """The numeral in digits, an abbreviated label in full (in the same capitals); the case is settled later."""
    num = match.group("num")
    value = num if num.isdigit() else roman_value(num) if num.isupper() or num.islower() else None
    label = match.group("label")
    key = label.rstrip(".").lower()
    if key in _SAID:
        said = _SAID[key]
        shape = label.rstrip(".")
        label = said.upper() if shape.isupper() and len(shape) > 1 else said if shape.islower() else said.capitalize()
    return f"{label}{match.group('space') or ' '}{value if value is not None else num}"


def _leading(match: re.Match[str]) -> str:
    num = match.group("num")
    value = roman_value(num) if num not in _NOT_NUMERALS else None
    return str(value) if value is not None else num


def _shouting(text: str) -> bool:
    if not text.isupper():
        return False
    words = _WORD.findall(text)
    return len(words) >= 2 or any(len(w) >= 5 for w in words)


def _unshout(stretch: str, language: str | None) -> str:
    if not _shouting(stretch):
        return stretch
    keep = {
        m.start(): m.group(0)
        for m in _ROMAN_WORD.finditer(stretch)
        if m.group(0) not in _NOT_NUMERALS and roman_value(m.group(0)) is not None
    }
    lowered = stretch.lower()
    if language == "de":
        lowered = _WORD.sub(lambda m: m.group(0)[:1].upper() + m.group(0)[1:], lowered)
    else:
        first = next((i for i, c in enumerate(lowered) if c.isalpha()), None)
        if first is not None:
            lowered = lowered[:first] + lowered[first].upper() + lowered[first + 1 :]
        if language in (None, "en"):
            lowered = _PRONOUN_I.sub("I", lowered)
    for at, word in keep.items():
        lowered = lowered[:at] + word + lowered[at + len(word) :]
    return lowered
