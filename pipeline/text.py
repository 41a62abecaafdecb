"""Text normalization shared by every reader: what a paragraph looks like once it is ready to be spoken."""

from __future__ import annotations

import re
import unicodedata

# Han, kana, Hangul syllables and CJK/full-width punctuation: scripts written without spaces between words.
_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
)
CJK_CHAR = re.compile(f"[{_CJK}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")
_SPACE_BEFORE_CJK_PUNCT = re.compile(r"[ \t]+(?=[，。！？；：、）》」』”’])")
_SPACE_AFTER_CJK_OPEN = re.compile(r"(?<=[（《「『“‘])[ \t]+")
_WHITESPACE = re.compile(r"\s+")
# Zero-width and other invisible format characters that only confuse a speech model.
_INVISIBLE = re.compile("[\u200b-\u200d\u2060\ufeff\u00ad]")


def is_cjk(text: str) -> bool:
    """True when most letters of ``text`` are CJK."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    return sum(1 for c in letters if CJK_CHAR.match(c)) * 2 > len(letters)


def normalize_paragraph(text: str) -> str:
    """One paragraph on one line: NFC, full-width spaces and line breaks folded, runs of spaces collapsed,
    no space left between two CJK characters (hard-wrapped Chinese must not gain spaces)."""
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    text = text.replace("\u3000", " ")
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _SPACE_BETWEEN_CJK.sub("", text)
    text = _SPACE_BEFORE_CJK_PUNCT.sub("", text)
    return _SPACE_AFTER_CJK_OPEN.sub("", text)


def join_lines(lines: list[str]) -> str:
    """Join the hard-wrapped lines of one paragraph, then normalize."""
    return normalize_paragraph(" ".join(line.strip() for line in lines))
