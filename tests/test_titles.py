"""Spoken titles: Roman numerals said as numbers where they are numerals, shouting capitals in sentence case,
CJK titles untouched."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.titles import roman_value, spoken_title


@pytest.mark.parametrize(
    ("title", "spoken"),
    [
        # numerals after labels
        ("CHAPTER XXXVII.", "Chapter 37"),
        ("Chapter IV: The Pool", "Chapter 4: The Pool"),
        ("CHAPTER I. Down the Rabbit-Hole", "Chapter 1. Down the Rabbit-Hole"),
        ("CHAPTER I", "Chapter 1"),
        ("Chapter I: I Remember", "Chapter 1: I Remember"),
        ("PART I", "Part 1"),
        ("Part II — The Return", "Part 2 — The Return"),
        ("chapter iv", "chapter 4"),
        ("Act V, Scene II", "Act 5, Scene 2"),
        ("BOOK I.—THE RIVER", "Book 1.—the river"),
        ("Chap. IV", "Chapter 4"),
        ("VOL. III", "Volume 3"),
        ("Vol. 3", "Volume 3"),
        ("Ch. 12", "Chapter 12"),
        ("Chapitre XII", "Chapitre 12"),
        ("Kapitel IX", "Kapitel 9"),
        ("Chapter 12", "Chapter 12"),
        ("CHAPTER 12 (CONTINUED)", "Chapter 12 (continued)"),
        # numerals opening a title
        ("I", "1"),
        ("I.", "1"),
        ("XII.", "12"),
        ("IV. The Pool", "4. The Pool"),
        ("IX: Night", "9: Night"),
        # not numerals
        ("I Remember", "I Remember"),
        ("I, Robot", "I, Robot"),
        ("A Letter I Wrote", "A Letter I Wrote"),
        ("Part I Remember", "Part I Remember"),
        ("Scene X Marks the Spot", "Scene X Marks the Spot"),
        ("Chapter IIII", "Chapter IIII"),
        ("Chapter Mix", "Chapter Mix"),
        ("MIX: Songs", "MIX: Songs"),
        ("Partial Truths", "Partial Truths"),
        ("Civil War", "Civil War"),
        # shouting capitals
        ("THE POOL OF TEARS", "The pool of tears"),
        ("CHAPTER IV. THE RABBIT SENDS IN A LITTLE BILL", "Chapter 4. The rabbit sends in a little bill"),
        ("CHAPTER XI. WHO STOLE THE TARTS?", "Chapter 11. Who stole the tarts?"),
        ("WHAT I SAW AND WHAT I’M SURE OF", "What I saw and what I’m sure of"),
        ("HENRY VIII AND HIS WIVES", "Henry VIII and his wives"),
        ("THE END. OR IS IT?", "The end. Or is it?"),
        ("PROLOGUE: How It Began", "Prologue: How It Began"),
        ("CHAPTER THE LAST", "Chapter the last"),
        ("USA", "USA"),
        ("Alice’s Evidence", "Alice’s Evidence"),
        ("  Too   many   spaces ", "Too many spaces"),
        # CJK titles are what a voice should say already
        ("第一章 风起", "第一章 风起"),
        ("第三十七章　雪落长桥", "第三十七章　雪落长桥"),
        ("序章", "序章"),
        ("第一章　始まり", "第一章　始まり"),
    ],
)
def test_spoken_title(title: str, spoken: str) -> None:
    assert spoken_title(title, "en") == spoken
    assert spoken_title(title, None) == spoken


def test_language_shapes_the_case() -> None:
    assert spoken_title("DER ZAUBERBERG", "de") == "Der Zauberberg"  # German nouns keep their capitals
    assert spoken_title("LA NUIT DES ROIS", "fr") == "La nuit des rois"
    assert spoken_title("LE I DE LA NUIT", "fr") == "Le i de la nuit"  # "I" is an English pronoun only
    assert spoken_title("CHAPTER XXXVII.", "zh") == "Chapter 37"  # numerals do not depend on the language


def to_roman(n: int) -> str:
    out = ""
    for value, letters in (
        (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
        (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
    ):  # fmt: skip
        while n >= value:
            out += letters
            n -= value
    return out


def test_roman_value() -> None:
    assert [roman_value(to_roman(n)) for n in range(1, 4000)] == list(range(1, 4000))
    assert [roman_value(x) for x in ("IIII", "VX", "IC", "MMMM", "", "ABC", "xiv")] == [None] * 6 + [14]


@given(n=st.integers(1, 3999), label=st.sampled_from(["CHAPTER", "Chapter", "Part", "BOOK", "Volume", "Act"]))
def test_every_numeral_after_a_label(n: int, label: str) -> None:
    roman = to_roman(n)
    word = label.capitalize()
    assert spoken_title(f"{label} {roman}.") == f"{word} {n}"
    assert spoken_title(f"{label} {roman}: The Long Road") == f"{word} {n}: The Long Road"
    assert spoken_title(f"{label} {roman}. THE LONG ROAD") == f"{word} {n}. The long road"


CJK = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=20)


@given(title=CJK, extra=st.sampled_from(["", " ", "　", "：", " IV", "·第XII章"]))
def test_cjk_titles_are_unchanged(title: str, extra: str) -> None:
    assert spoken_title(title + extra) == title + extra


TITLES = st.lists(
    st.sampled_from(
        [
            "CHAPTER",
            "Chapter",
            "Part",
            "IV",
            "XII",
            "I",
            "i",
            "MIX",
            "The",
            "POOL",
            "OF",
            "TEARS",
            "tears",
            ".",
            ":",
            "—",
            "-",
            ",",
            "?",
            "Vol.",
            "ch.",
            "Alice’s",
            "I’M",
            "12",
            "Robot",
            "HENRY",
            "VIII",
            "Scene",
            "X",
        ]
    ),  # fmt: skip
    max_size=8,
).map(" ".join)


def digits(text: str) -> list[str]:
    return [c for c in text if c.isdigit()]


def is_subsequence(small: list[str], big: list[str]) -> bool:
    rest = iter(big)
    return all(any(c == d for d in rest) for c in small)


@given(title=st.one_of(TITLES, st.text(max_size=30)), language=st.sampled_from([None, "en", "de", "fr"]))
def test_saying_a_spoken_title_again_changes_nothing(title: str, language: str | None) -> None:
    once = spoken_title(title, language)
    assert spoken_title(once, language) == once
    assert bool(once.strip()) == bool(title.strip())
    assert is_subsequence(digits(title), digits(once))  # numerals add digits; none is ever lost
