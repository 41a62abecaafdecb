"""Text facts every stage shares, each in one place: CJK ranges, what a paragraph looks like once it is ready
to be spoken, language tags, decoding a file's bytes, and Project Gutenberg's boilerplate markers."""

from __future__ import annotations

import codecs
import re
import unicodedata

from pipeline.errors import InputError

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
# Unicode categories Cc, Zl and Zp (controls, line and paragraph separators), exactly: they become spaces.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_CJK = re.compile(f"[^{_CJK}]+")


def is_cjk(text: str) -> bool:
    """True when most letters of ``text`` are CJK. (Counted with C-level loops: a Python loop over every
    character was the slowest step of reading a long book.)"""
    letters = sum(map(str.isalpha, text))
    return letters > 0 and sum(map(str.isalpha, _NOT_CJK.sub("", text))) * 2 > letters


def normalize_paragraph(text: str) -> str:
    """One paragraph on one line: NFC, full-width spaces and line breaks folded, runs of spaces collapsed,
    no space left between two CJK characters (hard-wrapped Chinese must not gain spaces)."""
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    text = text.replace("\u3000", " ")
    text = _CONTROLS.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if " " not in text:  # most Chinese paragraphs: nothing below applies (it is a third of the time taken)
        return text
    text = _SPACE_BETWEEN_CJK.sub("", text)
    text = _SPACE_BEFORE_CJK_PUNCT.sub("", text)
    text = _SPACE_AFTER_CJK_OPEN.sub("", text)
    return glue_cjk_marks(text)


# --- quote and dash glue in CJK text
# Curly quotes, ellipses and dashes sit outside the CJK ranges above, so a hard wrap next to them would
# leave a space inside a Chinese sentence ("说： “你好”"). These remove it only when the other side is CJK.
_SPACE_CJK_BEFORE_MARK = re.compile(f"(?<=[{_CJK}])[ \t]+(?=[“‘”’…—])")
_SPACE_MARK_BEFORE_CJK = re.compile(f"(?<=[“‘”’…—])[ \t]+(?=[{_CJK}])")


def glue_cjk_marks(text: str) -> str:
    """Drop spaces between CJK text and the quotes, ellipses and dashes it uses (shared with Latin)."""
    return _SPACE_MARK_BEFORE_CJK.sub("", _SPACE_CJK_BEFORE_MARK.sub("", text))


# --- language
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_SAMPLE = 20_000


def detect_language(text: str) -> str | None:
    """A primary language tag guessed by counting scripts in a sample: "zh" (mostly Han), "ja" (kana present),
    "ko" (Hangul), "en" (Latin letters), or None when nothing is recognisable."""
    if len(text) > 3 * _SAMPLE:  # beginning, middle and end: front matter alone can mislead
        mid = len(text) // 2
        text = text[:_SAMPLE] + text[mid : mid + _SAMPLE] + text[-_SAMPLE:]
    han = len(_HAN.findall(text))
    kana = len(_KANA.findall(text))
    hangul = len(_HANGUL.findall(text))
    latin = len(_LATIN.findall(text))
    cjk = han + kana + hangul
    if cjk == 0 and latin == 0:
        return None
    if cjk >= latin or cjk >= 200:
        # Japanese mixes Han with kana; a few stray kana in Chinese (emoticons, names) should not flip it.
        if kana and kana * 20 >= han + kana:
            return "ja"
        if hangul > han:
            return "ko"
        if han:
            return "zh"
    return "en" if latin else None


# Three-letter ISO 639-2 codes some books declare -> the two-letter tags used everywhere here.
_TWO_LETTER = {"eng": "en", "zho": "zh", "chi": "zh", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr"}
_TWO_LETTER |= {"spa": "es", "ita": "it", "jpn": "ja", "kor": "ko", "rus": "ru", "por": "pt", "nld": "nl"}
# ISO 639-1 -> ISO 639-2/T, which ID3's TLAN wants.
_THREE_LETTER = {
    "ar": "ara", "cs": "ces", "da": "dan", "de": "deu", "el": "ell", "en": "eng", "es": "spa", "fi": "fin",
    "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "ko": "kor",
    "la": "lat", "nl": "nld", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sv": "swe",
    "th": "tha", "tr": "tur", "uk": "ukr", "vi": "vie", "zh": "zho", "yue": "yue", "cmn": "cmn",
}  # fmt: skip
_TAG = re.compile("[a-z]{2,3}")


def primary_language(value: str | None) -> str | None:
    """``"en-US"`` -> ``"en"``, ``"zho"`` -> ``"zh"``; None for anything that is not a language tag."""
    tag = (value or "").strip().replace("_", "-").split("-")[0].lower()
    tag = _TWO_LETTER.get(tag, tag)
    return tag if _TAG.fullmatch(tag) else None


def iso639_2(language: str | None) -> str | None:
    """``"en-US"`` -> ``"eng"``; a three-letter code passes through; anything else is None."""
    if not language:
        return None
    primary = language.replace("_", "-").split("-")[0].lower()
    if primary in _THREE_LETTER:
        return _THREE_LETTER[primary]
    return primary if len(primary) == 3 and primary.isalpha() else None


# --- Project Gutenberg: its header ends and its licence starts at these lines, in text and in EPUBs alike
GUTENBERG_START = re.compile(r"^\W*\*{3}\s*start of (?:the|this) project gutenberg", re.IGNORECASE)
GUTENBERG_END = re.compile(r"^\W*(?:\*{3}\s*)?end of (?:the |this )?project gutenberg", re.IGNORECASE)


# --- decoding
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),  # must come before UTF-16 LE, whose BOM is its prefix
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
# The most frequent Han characters in both simplified and traditional text: real Chinese is full of them,
# a legacy encoding decoded with the wrong table is not.
_COMMON_HAN = frozenset(
    "的一是不了人我在有他这這中大来來上个個到说說们們为為子和你地出道也时時年得就那要下以生会會自着著去之过過"
    "家学學对對可她里裏后後小么麼心多天而能好都然没沒日于於起还還发發成事只作当當想看文无無开開手十用主行方又如前"
    "所本见見经經头頭面公同三已老从從动動两兩长長知民样樣现現分将將外但身些与與高意进進把法此实實回二理美点點月明"
)
_WESTERN = frozenset("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœŒšŠžŽŸ‘’“”„–—…•€™«»°§¡¿·\u00a0")
_BAD_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f]")
# Labels pages declare for encodings whose superset decodes them better.
_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "gb_2312-80": "gb18030"}


def decode_bytes(data: bytes, source: str, declared: str | None = None) -> str:
    """Bytes of a text file to str with LF line ends. Tries BOMs, the encoding the document ``declared``
    (HTML's charset), UTF-8, GB18030 (Chinese files saved on Windows), then charset-normalizer. Binary or
    undecodable data raises InputError naming ``source``."""
    text = _decode(data, source, declared)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    # Real text has almost no C0 control characters; binary that happened to decode has many.
    if text and len(_BAD_CONTROLS.findall(text[:65536])) * 100 > min(len(text), 65536):
        raise InputError(f"{source}: looks like binary data, not text; give a .txt, .md, .epub or .html book")
    return text


def _decode(data: bytes, source: str, declared: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding.replace("-sig", ""))
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{source}: starts with a {encoding} byte-order mark but is not valid "
                    f"{encoding} ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
                ) from exc
    if declared:
        label = _ALIASES.get(declared.lower(), declared.lower())
        try:
            codecs.lookup(label)
        except LookupError:
            pass  # an unknown label: guess as if none was given
        else:
            return data.decode(label, "replace")
    guessed = _utf16_without_bom(data)
    if guessed:
        try:
            return data.decode(guessed)
        except UnicodeDecodeError:
            pass
    if b"\x00" in data:
        raise InputError(f"{source}: contains NUL bytes, so it is binary, not text; give a text or e-book file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # GB18030 and Big5 accept most byte pairs, and cp1252 almost any byte: trust a decoding only when it reads
    # like the language it claims (common Han characters; Western letters and punctuation).
    for encoding in ("gb18030", "big5"):
        # A few broken pairs are damage, not another encoding: web pages cut titles in half a character.
        text = data.decode(encoding, "replace")
        if text.count("\ufffd") > 2 + len(text) // 10_000:
            continue
        wide = [c for c in text if ord(c) > 127]
        han = [c for c in wide if CJK_CHAR.match(c)]
        if wide and len(han) >= 0.9 * len(wide) and sum(c in _COMMON_HAN for c in han) >= 0.2 * len(han):
            return text
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        pass
    else:
        wide = [c for c in text if ord(c) > 127]
        if sum(c in _WESTERN for c in wide) >= 0.98 * len(wide):
            return text
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise InputError(f"{source}: cannot tell its text encoding; re-save it as UTF-8")
    return str(best)


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 saved without a BOM shows as NULs in every other byte of mostly-ASCII text."""
    sample = data[:4096]
    if len(sample) < 8 or len(sample) % 2:
        return None
    even_zero = sample[0::2].count(0)
    odd_zero = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_zero > 0.4 * half and even_zero < 0.05 * half:
        return "utf-16-le"
    if even_zero > 0.4 * half and odd_zero < 0.05 * half:
        return "utf-16-be"
    return None
