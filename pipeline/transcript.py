"""How much of a part's text its transcript says: the transcript check's comparison.

Both sides are normalised the same way, then aligned token by token in order (a longest common subsequence:
no match crosses another, and as many text tokens as can be are matched). A text token counts as said only
where it is matched in order; a sentence said twice matches once, and its second saying is ``extra``, not
coverage of another sentence.

Normalisation, so that what a good recogniser writes differently is not counted as missing:

- Unicode NFKC and case folding (full-width letters and digits, ligatures, "Straße"/"STRASSE");
- curly apostrophes and quotes, dashes and hyphens, all punctuation: gone (``don't``/``dont``, ``well-known``/
  ``well known`` compare equal);
- Latin-script numbers as spoken, with ``num2words`` in the book's language: ``42``/``forty-two``,
  ``3rd``/``third``, ``1,000``/``one thousand``, a year-like ``1865``/``eighteen sixty-five``; "and" is dropped
  from the spelled-out number (``one hundred and five``/``one hundred five``);
- CJK by character (Han, kana); Chinese numerals and digits both become digits, one token each
  (``一八六五``, ``一千八百六十五`` and ``1865`` are all ``1 8 6 5``): recognisers write Chinese numbers either
  way, and digits are the form both sides reach without guessing a reading;
- other scripts (Latin, Cyrillic, Greek, Hangul...) by word.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Calibrated with bench/transcript_threshold.py on Alice, the demo sample and two Chinese texts cut into parts of
# up to 500 characters, "transcribed" with the fake server's recogniser noise (3-5 % of words wrong, dropped or
# added, case, punctuation and number forms changed): over 3,654 clean transcripts (1,218 at each of three
# noise levels) coverage never fell below 0.78 and no run of more than 4 words (3 CJK characters) went missing
# in one piece; none was flagged, nor at 8 % noise. A part is suspect below this coverage...
COVERAGE_MIN = 0.75
# ...or when this many tokens of the text are missing in one run: noise misses words one or two at a time, a
# sentence left out is a run. With both rules, a sentence of 6 words or more left out of a part is caught
# (584 or 585 of 586 in English, 514 of 515 in Chinese, at each noise level); of 1 to 5 words, hardly ever: no
# threshold tells those from noise, and the timing check is what sees them, if anything does.
GAP_MIN_WORDS = 6
GAP_MIN_CHARS = 6  # CJK, by character: clean transcripts' runs were at most 3
# ...or when this share of the transcript matches nothing: the part ran on, repeated, or babbles. Clean
# transcripts stayed under 0.23 (0.25 at 8 % noise).
EXTRA_MAX = 0.30

_CJK_LANGUAGES = frozenset({"zh", "ja", "yue", "wuu", "cmn"})
_CJK_CHAR = r"\u3005-\u3007\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_TOKEN = re.compile(rf"[{_CJK_CHAR}]|[^\W_]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK_CHAR}]")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u201b\u02bc\u02bb\u00b4\u0060\u2032]")
_DIGIT_SEPARATOR = re.compile(r"(?<=\d)[,\u202f\u2009\u00a0_](?=\d{3}(?!\d))")  # 1,000 and 1 000 (not a space)
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])(?!(?:st|nd|rd|th)(?![^\W\d_]))|(?<=[^\W\d_])(?=\d)")
_NUMBER = re.compile(r"(\d++(?:\.\d+)?)(st|nd|rd|th)?(?![^\W\d_])", re.UNICODE)
_ZH_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}  # fmt: skip
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_BIG = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}
_ZH_NUMERAL = re.compile("[〇零一二两兩三四五六七八九十百千万萬亿億]+")


@dataclass(frozen=True)
class Coverage:
    """What a transcript says of a part's text (shares in [0, 1])."""

    coverage: float  # share of the text's tokens matched in order (1.0 for a text with no tokens)
    extra: float  # share of the transcript's tokens matched to nothing: run-on, babble, a repeat
    missing: tuple[str, ...]  # the longest runs of the text not said, longest first (at most 3), as tokens
    tokens: int  # the text's tokens
    longest_gap: int  # tokens in the longest run missing in one piece
    by_char: bool  # tokens are CJK characters (the gap is judged in characters)

    @property
    def suspect(self) -> bool:
        """Whether the part should be made again: too little said, a run left out, or too much said."""
        gap_min = GAP_MIN_CHARS if self.by_char else GAP_MIN_WORDS
        return self.coverage < COVERAGE_MIN or self.longest_gap >= gap_min or self.extra > EXTRA_MAX

    def describe(self) -> str:
        """One line for the report: the figures and what is missing."""
        line = f"coverage {self.coverage:.0%} of {self.tokens} tokens, extra {self.extra:.0%}"
        if self.missing:
            line += "; missing: " + "; ".join(f'"{run}"' for run in self.missing)
        return line


def compare(text: str, transcript: str, *, language: str | None) -> Coverage:
    """Align ``transcript`` with ``text`` (see the module docstring); ``language`` is ISO 639-1 when known."""
    cjk = _cjk_numbers(text, language)
    want = tokens(text, language=language, cjk=cjk)
    said = tokens(transcript, language=language, cjk=cjk)
    hit = aligned(want, said)
    matched = sum(hit)
    gaps: list[tuple[int, int]] = []  # (start, end) in ``want`` of each run not matched
    start: int | None = None
    for i, ok in enumerate([*hit, True]):
        if not ok and start is None:
            start = i
        elif ok and start is not None:
            gaps.append((start, i))
            start = None
    by_char = any(_IS_CJK.match(token) for token in want)
    joiner = "" if by_char else " "
    longest = sorted(gaps, key=lambda gap: (gap[0] - gap[1], gap[0]))[:3]
    return Coverage(
        coverage=matched / len(want) if want else 1.0,
        extra=(len(said) - matched) / len(said) if said else 0.0,
        missing=tuple(joiner.join(want[start:end]) for start, end in longest),
        tokens=len(want),
        longest_gap=max((end - start for start, end in gaps), default=0),
        by_char=by_char,
    )


def aligned(want: list[str], said: list[str]) -> list[bool]:
    """For each token of ``want``, whether a longest common subsequence with ``said`` matches it.

    A longest common subsequence, not difflib's greedy longest block first: that one pairs a phrase the text
    says twice with the wrong saying in the transcript and then cannot match the rest (measured on Alice: a
    clean part lost 11 words so). Bit-parallel (Allison and Dix 1986, Hyyrö 2004): one row of the table is one
    integer of ``len(want)`` bits, a transcript token costs a few integer operations; the rows are kept to walk
    back through the table for which tokens matched."""
    n = len(want)
    if not n or not said:
        return [False] * n
    masks: dict[str, int] = {}
    for i, token in enumerate(want):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << n) - 1
    row = full  # a 0 bit at i: the LCS grows at want[i]; LCS(want[:i], said[:j]) = zeros in row j's low i bits
    rows = [row]
    for token in said:
        common = row & masks.get(token, 0)
        row = ((row + common) | (row - common)) & full
        rows.append(row)

    def lcs(i: int, j: int) -> int:
        return i - (rows[j] & ((1 << i) - 1)).bit_count()

    hit = [False] * n
    i, j = n, len(said)
    while i and j:
        here = lcs(i, j)
        if want[i - 1] == said[j - 1] and lcs(i - 1, j - 1) + 1 == here:
            hit[i - 1] = True
            i, j = i - 1, j - 1
        elif lcs(i - 1, j) == here:
            i -= 1
        else:
            j -= 1
    return hit


def tokens(text: str, *, language: str | None, cjk: bool | None = None) -> list[str]:
    """``text`` normalised into the tokens compared: words, and single CJK characters and digits."""
    if cjk is None:
        cjk = _cjk_numbers(text, language)
    flat = _DIGIT_SEPARATOR.sub("", text)  # before NFKC, which makes a narrow no-break space a space
    flat = unicodedata.normalize("NFKC", flat).casefold()
    flat = _APOSTROPHES.sub("", flat)
    flat = _DIGIT_LETTER.sub(" ", flat)  # "1e1" as "1.e.1" is read, "mp3" as "mp 3"; "3rd" stays
    if cjk:
        flat = _ZH_NUMERAL.sub(lambda m: _zh_to_digits(m.group()), flat)
        flat = re.sub(r"\d", lambda m: f" {m.group()} ", flat)
    else:
        if _num2words_lang(language) == "en":
            flat = flat.replace("%", " percent ")
        flat = _NUMBER.sub(lambda m: f" {_spoken(m.group(1), m.group(2), language)} ", flat)
    return _TOKEN.findall(flat)


def _cjk_numbers(text: str, language: str | None) -> bool:
    """Whether numbers are read the CJK way: the language says so, or (unknown) the text is mostly CJK."""
    if language:
        return language.lower().split("-")[0] in _CJK_LANGUAGES
    cjk = len(_IS_CJK.findall(text))
    return cjk > 0 and cjk * 2 >= len(re.findall(r"[^\W\d_]", text))  # digits are either script's


@lru_cache(maxsize=4096)
def _spoken(number: str, suffix: str | None, language: str | None) -> str:
    """A number as words: an ordinal with its suffix, a year-like 4-digit number as a year, else a cardinal."""
    from num2words import num2words  # imported on first use: most runs never compare a transcript

    lang = _num2words_lang(language)
    try:
        if "." in number:
            words = num2words(float(number), lang=lang)
        elif suffix:
            words = num2words(int(number), lang=lang, to="ordinal")
        elif len(number) == 4 and 1100 <= int(number) <= 2099 and not number.endswith("00"):
            words = num2words(int(number), lang=lang, to="year")
        else:
            words = num2words(int(number), lang=lang)
    except (NotImplementedError, OverflowError, ValueError, TypeError):  # a form the language does not have
        return number + (suffix or "")
    flat = unicodedata.normalize("NFKC", words).casefold().replace("-", " ").replace(",", " ")
    return " ".join(word for word in flat.split() if word != "and")


@lru_cache(maxsize=64)
def _num2words_lang(language: str | None) -> str:
    from num2words import CONVERTER_CLASSES

    code = (language or "en").replace("-", "_")
    for candidate in (code, code.split("_")[0].lower()):
        if candidate in CONVERTER_CLASSES:
            return candidate
    return "en"


def _zh_to_digits(numeral: str) -> str:
    """A run of Chinese numerals as digits: ``一八六五`` digit by digit, ``一千八百六十五`` by value."""
    if not any(ch in _ZH_UNITS or ch in _ZH_BIG for ch in numeral):
        return "".join(str(_ZH_DIGITS[ch]) for ch in numeral)
    total = section = digit = 0
    for ch in numeral:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            section += (digit or 1) * _ZH_UNITS[ch]  # 十五: the one before ten goes unsaid
            digit = 0
        else:  # 万 after 亿 scales only what came since: 一亿两千万 is 1.2e8
            big = _ZH_BIG[ch]
            total = (total + section + digit) * big if total < big else total + (section + digit) * big
            section = digit = 0
    return str(total + section + digit)
