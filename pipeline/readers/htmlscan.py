"""A quick pass over HTML source for what would make a parse lose text without a word.

libxml2's HTML parser never fails: where markup is broken it recovers, and some recoveries swallow text. A
comment, a ``<script>`` (or another element whose content is raw text) or a quoted attribute value that is
never closed runs to the end of the file, or to the end tag or quote of a later one, and everything on the way
becomes a comment, a script or an attribute that no reader speaks. An element we never read (``<nav>``,
``<svg>``, a page-number ``<span>``) that is never closed takes in everything up to its parent's end. None of
this leaves a trace in the tree or the parser's error log, so we look at the source: the first kind is refused
here; the second is returned, so the tree can be marked (``UNCLOSED``) and the extractor can refuse to drop
text that only an unclosed tag put out of reach.

The scan follows the HTML tokenizer where it matters (comments, quoted attribute values, raw-text elements,
``<tag/>``, which libxml2 closes at once) and is linear in the size of the source.
"""

from __future__ import annotations

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
            # text between became comment (HTML has no nested comments; browsers hide it too).
            nested = text.find("<!--", lt + 4, end)
            if nested >= 0:
                raise InputError(
                    f"{where}: a comment (<!--) on line {_line(text, lt)} is never closed (the --> after it closes "
                    f"the comment on line {_line(text, nested)}), so it would hide the text between; close it"
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
            end_tag = re.compile(rf"</{re.escape(name)}[\s/>]", re.IGNORECASE).search(text, pos)
            if end_tag is None:
                _swallowed(text, lt, pos, f"<{name}>", f"</{name}>", where)
                break
            # Another start tag of its kind inside, not in a string ('<script', `<script`, "<scr" + "ipt>"): the
            # end tag found is that one's, its own is missing, and all the markup between became its text.
            nested = re.compile(rf"(?<![\"'`+])<{re.escape(name)}[\s/>]", re.IGNORECASE).search(
                text, pos, end_tag.start()
            )
            if nested:
                raise InputError(
                    f"{where}: <{name}> on line {_line(text, lt)} is never closed (the </{name}> after it belongs "
                    f"to the <{name}> on line {_line(text, nested.start())}), so it would hide the text between; "
                    "close it"
                )
            pos = end_tag.start()
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
