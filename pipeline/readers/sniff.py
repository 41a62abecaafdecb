"""What a file is, by its content: the first bytes, the root element of XML, the members of a zip. A file's
name can lie (a PDF saved as .txt, an FB2 as .xml); its bytes are what a reader would read aloud, so every
input is looked at before a reader is chosen.

``content_kind`` answers a reader's name ("pdf", "epub", "docx", "fb2", "mobi", "html", "text") or, after a
``!``, a format we know but do not read: "!RTF", "!DOC", "!DjVu", "!ODT", "!OpenDocument", "!XLSX", "!PPTX",
"!zip" (any other archive), "!xml:ROOT" (XML of another kind, by its root element).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import InputError

HEAD_BYTES = 4096

# Formats whose content says which reader takes them, whatever the file is called.
BINARY_KINDS = frozenset({"pdf", "epub", "docx", "fb2", "mobi"})

_ROOT = re.compile(r"<([A-Za-z_][\w.:-]*)")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc


def _markup_text(head: bytes) -> str | None:
    """The start of the file as text when it opens with markup ("<"), in UTF-8 or UTF-16; else None."""
    for bom, encoding in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8")):
        if head.startswith(bom):
            text = head[len(bom) :].decode(encoding, errors="ignore")
            break
    else:
        # UTF-16 without a BOM: "<" then a NUL, or a NUL then "<".
        if head[:2] == b"<\x00":
            text = head.decode("utf-16-le", errors="ignore")
        elif head[:2] == b"\x00<":
            text = head.decode("utf-16-be", errors="ignore")
        else:
            text = head.decode("latin-1")  # markup names are ASCII: any 8-bit encoding reads them
    text = text.lstrip(" \t\r\n")
    return text if text.startswith("<") else None


def root_element(text: str) -> str | None:
    """The root element's local name, lower-cased, past the XML declaration, comments, PIs and the DOCTYPE."""
    pos = 0
    while pos < len(text):
        lt = text.find("<", pos)
        if lt < 0:
            return None
        if text.startswith("<!--", lt):
            end = text.find("-->", lt + 4)
            pos = len(text) if end < 0 else end + 3
        elif text.startswith(("<?", "<!"), lt):
            end = text.find(">", lt + 2)
            pos = len(text) if end < 0 else end + 1
        else:
            found = _ROOT.match(text, lt)
            return found.group(1).rsplit(":", 1)[-1].lower() if found else None
    return None


def _zip_kind(path: Path) -> str:
    """Which e-book a zip is, by its members (read through the hardened zip reader: no bomb gets past)."""
    from pipeline.readers.epub.safezip import SafeZip

    zf = SafeZip(path, kind="e-book")
    try:
        names = zf.names()
        if "mimetype" in names:
            mimetype = zf.read("mimetype", 256).decode("ascii", "replace").strip()
            if mimetype == "application/epub+zip":
                return "epub"
            if mimetype.startswith("application/vnd.oasis.opendocument"):
                return "!ODT" if mimetype.endswith("opendocument.text") else "!OpenDocument"
        if "META-INF/container.xml" in names:
            return "epub"
        if "[Content_Types].xml" in names:
            if any(n.startswith("word/") for n in names):
                return "docx"
            return "!XLSX" if any(n.startswith("xl/") for n in names) else "!PPTX"
        books = [n for n in names if n.lower().endswith(".fb2")]
        if len(books) == 1:
            return "fb2"
    finally:
        zf.close()
    return "!zip"


def content_kind(path: Path, zip_as: str | None = None) -> str:
    """The reader the content of ``path`` calls for, or "!" and the name of a format we do not read. A zip
    whose members match no e-book, or that cannot be opened, is taken as ``zip_as`` when given (what its name
    says it is: that reader says what is wrong with it)."""
    head = read_head(path)
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if b"%PDF-" in head[:1024]:  # readers accept a PDF header after up to 1 KB of other bytes
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            found = _zip_kind(path)
        except InputError:
            if zip_as is None:
                raise
            return zip_as  # its reader opens it again and says what is wrong in its own words
        return zip_as if found == "!zip" and zip_as else found
    if head[60:68] in (b"BOOKMOBI", b"TEXtREAd"):
        return "mobi"
    if start.startswith(b"{\\rtf"):
        return "!RTF"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: .doc, old Office, and encrypted .docx
        return "!DOC"
    if head.startswith(b"AT&TFORM"):
        return "!DjVu"
    markup = _markup_text(head)
    if markup is not None:
        root = root_element(markup)
        if root == "fictionbook":
            return "fb2"
        if root == "html" or markup.lower().startswith("<!doctype html"):
            return "html"
        if markup.startswith("<?xml") and root is not None:
            # XML of another kind: its markup would be read aloud as text.
            return f"!xml:{root}"
    return "text"
