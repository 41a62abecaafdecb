"""A quick pass over HTML source for what would make a parse lose text without a word.

libxml2's HTML parser never fails: where markup is broken it recovers, and some recoveries swallow text. A
comment, a ``<script>`` (or another element whose content is raw text) or a quoted attribute value that is
never closed runs to the end of the file, or to the end tag or quote of a later one, and everything on the way
becomes a comment, a script or an attribute that no reader speaks. An element we never read (``<nav>``,
``<svg>``, a page-number ``<span>``) that is never closed takes in everything up to its parent's end. None of
this leaves a trace in the tree or the parser's error log, so we look at the source: the first kind is refused
here; the second is returned, so the tree can be marked (``UNCLOSED``) and the extractor can refuse to drop
text that only an unclosed tag put out of reach.

The scan follows the HTML tokenizer where it matters (comments, quoted attribute values, raw-text elements
with a script's "escaped" states, ``<tag/>``, which libxml2 closes at once) and is linear in the size of the
source. A ``<script`` inside a script is a sign that the script was left open only where it stands in the code:
pages write tags inside JavaScript strings, templates, comments and regular expressions all the time.
"""

from __future__ import annotations

import functools
import re

from pipeline.errors import InputError

# Set on an element whose start tag has no end tag in the source; the value is its line.
UNCLOSED = "data-audiobook-unclosed"

# libxml2 2.14 reads these as text up to their own end tag: unclosed, they take in the rest of the file.
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
# Void elements and those whose end tag HTML lets you leave out: never "unclosed".
_NO_END_TAG = frozenset(
    {
        "area", "base", "br", "col", "embed", "frame", "hr", "image", "img", "input", "keygen", "link", "meta",
        "param", "source", "track", "wbr",
        "body", "caption", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p", "rb", "rp",
        "rt", "rtc", "tbody", "td", "tfoot", "th", "thead", "tr",
    }
)  # fmt: skip
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
_AFTER_VALUE = frozenset(" \t\n\f\r/>")  # what may follow a quoted attribute value
_IN_TAG = re.compile(r"""=\s*(["'])|/?>""")  # a quoted attribute value opens, or the tag ends


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _swallowed(text: str, start: int, opened: int, what: str, closer: str, where: str) -> None:
    """``what``, opened at ``start`` (its opening ends at ``opened``), runs to the end of the file. Refuse when
    anything but whitespace follows its opening: we cannot tell its own words from the document's."""
    if text[opened:].strip():
        raise InputError(
            f"{where}: {what} on line {_line(text, start)} is never closed (no {closer}), so it would hide the "
            f"rest of the file; close it"
        )


def _tag_end(text: str, pos: int, name: str, where: str) -> re.Match[str] | None:
    """The ">" (or "/>") that ends the tag whose attributes start at ``pos``: the first one outside a quoted
    attribute value. None when the tag never ends."""
    while (part := _IN_TAG.search(text, pos)) is not None and part.group(1):
        quote = part.group(1)
        close = text.find(quote, part.end())
        if close < 0:
            what = f"an attribute value of <{name}> opened with {quote}"
            _swallowed(text, part.end() - 1, part.end(), what, quote, where)
            return None
        # A value that spans a ">" and whose closing quote runs straight into more text took the quote that
        # opens a later value: its own was never closed, and the text between went into the attribute.
        if close + 1 < len(text) and text[close + 1] not in _AFTER_VALUE and ">" in text[part.end() : close]:
            raise InputError(
                f"{where}: an attribute value of <{name}> opened with {quote} on line {_line(text, part.end())} "
                f"is never closed (the next {quote} is on line {_line(text, close)}), so it would hide the text "
                "in between; close it"
            )
        pos = close + 1
    return part


_HIDDEN_ELEMENTS = re.compile(r"<(script|style)\b.*?(?:</\1\s*>|\Z)|<!--.*?(?:-->|\Z)", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"<[A-Za-z/!?][^>]*>?")
_MARKUP = re.compile(r"<[A-Za-z/!]")
_TEXT_CHARS = 20  # more letters than a stray marker or a closing "}" holds: the page's words


def _holds_text(span: str) -> bool:
    """Whether ``span``, taken in by a comment, script or style left open, holds words a reader would read:
    the text of the markup in it (from its first tag: what comes before is the comment's or the code's own),
    without scripts, styles, comments and tags."""
    first = _MARKUP.search(span)
    span = span[first.start() :] if first else ""
    rest = _ANY_TAG.sub(" ", _HIDDEN_ELEMENTS.sub(" ", span))
    return sum(c.isalnum() for c in rest) >= _TEXT_CHARS


def _raw_text(text: str, pos: int, name: str) -> tuple[int | None, int | None]:
    """Where the raw text of ``<name>`` that starts at ``pos`` ends (the offset of its end tag; None when it runs
    to the end of the file), and the offset of a start tag of its kind inside that looks like the real thing."""
    if name == "script":
        end, candidates = _script_data(text, pos)
    else:
        found = _end_tag(name).search(text, pos)
        end = found.start() if found else None
        candidates = [m.start() for m in _start_tag(name).finditer(text, pos, len(text) if end is None else end)]
    if end is None or not candidates:
        return end, None
    if name == "script":
        return end, _first_in_code(text, pos, end, candidates, js=True)
    if name == "style":
        return end, _first_in_code(text, pos, end, candidates, js=False)
    # Text elements (<title>, <textarea> ...): a quote or "+" just before it marks a tag written as text.
    return end, next((c for c in candidates if c == pos or text[c - 1] not in "\"'`+"), None)


@functools.cache
def _end_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{re.escape(name)}[\s/>]", re.IGNORECASE)


@functools.cache
def _start_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"<{re.escape(name)}[\s/>]", re.IGNORECASE)


_SCRIPT_MARK = re.compile(r"<!--|-->|</?script[\s/>]", re.IGNORECASE)


def _script_data(text: str, pos: int) -> tuple[int | None, list[int]]:
    """HTML's script data states, as its tokenizer (and libxml2 2.14) runs them: a script ends at the first
    ``</script``, except after a ``<!--`` inside it, where a ``<script`` opens a "double-escaped" stretch whose
    ``</script>`` is the script's own text, up to the ``-->``. Returns the end tag's offset (None: no end) and
    the offsets of ``<script`` met outside those stretches, which may be start tags of another script."""
    candidates: list[int] = []
    state = "data"  # "escaped" after <!--, "double" after <!-- ... <script
    for mark in _SCRIPT_MARK.finditer(text, pos):
        token = mark.group(0).lower()
        if token == "<!--":
            if state == "data":
                state = "escaped"
        elif token == "-->":
            state = "data"
        elif token.startswith("</"):
            if state == "double":
                state = "escaped"
            else:
                return mark.start(), candidates
        elif state == "escaped":
            state = "double"
        elif state == "data":
            candidates.append(mark.start())
    return None, candidates


# What may come before a "/" that starts a regular expression rather than a division.
# ("<" and ">" are left out: after them a "/" is far likelier an end tag's, in markup the script took in.)
_BEFORE_REGEX = frozenset("(,=:[!&|?{};+-*%~^")
_REGEX_KEYWORDS = re.compile(r"(?:^|[^\w$])(?:return|typeof|case|do|else|in|of|void|delete|throw|new|yield|await)$")
_JS_SPECIAL = re.compile(r"[\"'`/]")
_CSS_SPECIAL = re.compile(r"[\"'/]")


def _literal_end(text: str, start: int, end: int, quote: str) -> tuple[int, bool]:
    """The offset after the string opened by ``quote`` at ``start``, and whether it was closed properly. A
    quoted string ends at a line break (JavaScript and CSS have no multi-line quoted strings: it is broken,
    as prose with an apostrophe is); a template literal may span lines."""
    i = start + 1
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote:
            return i + 1, True
        if c == "\n" and quote != "`":
            return i, False
        i += 1
    return end, False


def _regex_end(text: str, start: int, end: int) -> tuple[int, bool]:
    """The offset after a regular expression literal opened at ``start``, and whether it was closed."""
    i, in_class = start + 1, False
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "\n":
            return i, False
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "/":
            return i + 1, True
        i += 1
    return end, False


def _starts_regex(text: str, content_start: int, slash: int) -> bool:
    before = text[max(content_start, slash - 64) : slash].rstrip()
    return not before or before[-1] in _BEFORE_REGEX or _REGEX_KEYWORDS.search(before) is not None


def _first_in_code(text: str, start: int, end: int, candidates: list[int], *, js: bool) -> int | None:
    """The first of ``candidates`` (offsets of a start tag inside a script or style that spans
    ``text[start:end]``) that lies in the code: not inside a string, template, comment or regular expression
    that is closed as the language wants (one that a line break or the end cuts off is no string but text the
    missing end tag took in, such as a paragraph with an apostrophe)."""
    special = _JS_SPECIAL if js else _CSS_SPECIAL
    pending = iter(candidates)
    candidate = next(pending, None)
    i = start
    while candidate is not None:
        found = special.search(text, i, end)
        if found is None:
            return candidate  # the rest is code
        j, c = found.start(), found.group(0)
        if c == "/" and text.startswith("/*", j):
            close = text.find("*/", j + 2, end)
            after, closed = (close + 2, True) if close >= 0 else (end, False)
        elif c == "/" and js and text.startswith("//", j) and text[j - 1] != ":":  # "https://" is no comment
            newline = text.find("\n", j, end)
            after, closed = (end if newline < 0 else newline), True
        elif c == "/":
            if not (js and _starts_regex(text, start, j)):
                i = j + 1
                continue
            after, closed = _regex_end(text, j, end)
        else:
            after, closed = _literal_end(text, j, end, c)
        if candidate < j:
            return candidate  # in the code before this literal
        while candidate is not None and candidate < after:
            if not closed:
                return candidate
            candidate = next(pending, None)
        i = after
    return None


def scan(text: str, where: str) -> set[tuple[str, int]]:
    """Raise InputError where a construct that is never closed would swallow the rest of ``text``; return the
    (tag name, line) of start tags that have no end tag."""
    open_tags: dict[str, list[int]] = {}
    pos = 0
    while (lt := text.find("<", pos)) >= 0:
        if text.startswith("<!--", lt):
            end = text.find("-->", lt + 4)
            if end < 0:
                _swallowed(text, lt, lt + 4, "a comment (<!--)", "-->", where)
                break
            # Another comment opens inside: the "-->" found is that one's, this one was never closed, and the
            # text between became comment (HTML has no nested comments; browsers hide it too). Unless that is
            # what the page means: an Internet Explorer conditional comment, or markup commented out whole
            # (an ad's code, a script) with no text in it to read.
            inner = text.find("<!--", lt + 4, end)
            if inner >= 0 and not text.startswith("<!--[if", lt) and _holds_text(text[lt + 4 : end]):
                raise InputError(
                    f"{where}: a comment (<!--) on line {_line(text, lt)} is never closed (the --> after it closes "
                    f"the comment on line {_line(text, inner)}), so it would hide the text between; close it"
                )
            pos = end + 3
            continue
        tag = _TAG.match(text, lt)
        if tag is None:
            if text.startswith(("<!", "<?", "</"), lt):  # doctype, processing instruction, bogus comment
                end = text.find(">", lt + 2)
                if end < 0:
                    _swallowed(text, lt, lt + 2, text[lt : lt + 2], ">", where)
                    break
                pos = end + 1
            else:
                pos = lt + 1  # a "<" in text
            continue
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        tag_end = _tag_end(text, tag.end(), name, where)
        if tag_end is None:
            _swallowed(text, lt, tag.end(), f"the tag <{name}", ">", where)
            break
        pos = tag_end.end()
        if closing:
            if open_tags.get(name):
                open_tags[name].pop()
        elif tag_end.group(0) == "/>":
            pass  # libxml2 closes <tag/> at once, as XHTML means it
        elif name in _RAW_TEXT:
            raw_end, nested = _raw_text(text, pos, name)
            if raw_end is None:
                _swallowed(text, lt, pos, f"<{name}>", f"</{name}>", where)
                break
            # Another start tag of its kind inside, in the code and not in a string, comment or regular
            # expression: the end tag found is that one's, its own is missing, and all the markup between
            # became its text.
            if nested is not None and _holds_text(text[pos:nested]):
                raise InputError(
                    f"{where}: <{name}> on line {_line(text, lt)} is never closed (the </{name}> after it belongs "
                    f"to the <{name}> on line {_line(text, nested)}), so it would hide the text between; close it"
                )
            pos = raw_end
        elif name == "plaintext":
            break  # everything after it is its text, and is read
        elif name not in _NO_END_TAG:
            open_tags.setdefault(name, []).append(lt)
    unclosed: set[tuple[str, int]] = set()
    line, counted = 1, 0
    for offset, name in sorted((offset, name) for name, offsets in open_tags.items() for offset in offsets):
        line += text.count("\n", counted, offset)
        counted = offset
        unclosed.add((name, line))
    return unclosed
