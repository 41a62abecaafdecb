"""PDF -> ``Book``, with the text of each page as PDFium (pypdfium2) finds it, put back into reading order.

A page's characters come with their boxes and font sizes. We cut them into pieces of lines (PDFium's own line
ends, and gaps wider than a column gutter), read two-column pages column by column (a gutter that no line
crosses), leave out running headers and footers (lines at the top or bottom of a page whose text, digits
aside, repeats on several pages and is no larger than the body text) and page numbers, join words PDFium marks
as hyphenated across lines (U+FFFE) and lines into paragraphs (a larger gap than the line spacing, a first-line
indent, a short line ending a sentence).

Chapters come from the outline (bookmarks) at its first level with two entries or more (or, where those are
parts holding entries on pages of their own, at the entries under them), cut at the entry's page and, when it
gives one, its height on the page; without an outline, from headings: lines of a size
larger than the body text's, standing alone (the largest such size that occurs twice), else lines that read
like chapter headings ("Chapter 4", "第三章").

Refused in one line: password-protected files, damaged ones, scanned PDFs (pages with images and no text
layer: OCR them first), more than ``MAX_PAGES`` pages or ``MAX_PDF_BYTES``. PDFium is a C library running in
this process: a hostile PDF meets the same parser Chrome uses, with its fuzzing, but no sandbox of ours.
"""

from __future__ import annotations

import bisect
import ctypes
import dataclasses
import logging
import re
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.textfacts import normalize_paragraph, primary_language

log = logging.getLogger("audiobook")
# PDFium is not thread-safe: one document at a time in this process, whichever thread reads it.
_PDFIUM = threading.Lock()

MB = 1024 * 1024
MAX_PDF_BYTES = 500 * MB
MAX_PAGES = 10_000
MAX_PAGE_CHARS = 200_000  # a dense page of a dictionary holds ~15,000
MAX_TEXT_CHARS = 50_000_000  # ten times the longest web novel we read
MIN_TEXT_CHARS = 20  # letters and digits a page needs to count as having text
FRONT_MATTER_CHARS = 1500  # text before the first bookmark up to this long is a title page, not a chapter

_HYPHEN_MARK = "\ufffe"  # PDFium's mark for a hyphen that split a word at a line end (the line end dropped)
_PAGE_NUMBER = re.compile(
    r"(?:page\s+|p\.\s*|стр\.\s*|第\s*)?[-–—(\[]?\s*(?:\d{1,5}|[ivxlcdm]{1,8})\s*[-–—)\]]?"
    r"(?:\s*(?:/|of|из)\s*\d{1,5})?\s*页?",
    re.IGNORECASE,
)
_CHAPTER_LINE = re.compile(
    r"(?:chapter|part|book|prologue|epilogue|глава|часть|пролог|эпилог)\b.{0,60}|第[0-9一二三四五六七八九十百千零〇两]{1,8}[章回节卷部篇].{0,30}",
    re.IGNORECASE,
)
_NOTE_MARK_CHARS = frozenset("0123456789*†‡§¹²³⁴⁵⁶⁷⁸⁹⁰")
# The first line of a footnote: its mark, then its text ("1 See ...", "* The author ...", "¹ Ibid.").
_FOOTNOTE_START = re.compile(r"(?:\d{1,3}|[*†‡§]{1,3}|[¹²³⁴⁵⁶⁷⁸⁹⁰]{1,3})\.?\s*\S")
_BULLETS = frozenset("•◦▪▫●○■□–—►✓")
_SENTENCE_END = tuple('.!?…:»"”’)]。！？”」』）')


@dataclass
class Line:
    """A piece of a line of text on one page: PDF units, y growing upwards; ``bottom`` is its (last) baseline."""

    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    size: float
    page: int
    first: float = 0.0  # its first baseline: a piece PDFium joined at a hyphen spans two lines


@dataclass
class _Page:
    lines: list[Line]  # in reading order
    width: float
    height: float
    images: bool


@dataclass
class _Para:
    """A paragraph, with the size, page and height of its first line (where headings and chapters are told)."""

    text: str
    size: float
    page: int
    top: float


def _open(path: Path):  # -> pdfium.PdfDocument
    import pypdfium2 as pdfium

    size = path.stat().st_size
    if size > MAX_PDF_BYTES:
        raise InputError(f"{path.name}: {size // MB} MB is too large for a PDF book (limit {MAX_PDF_BYTES // MB} MB)")
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        import pypdfium2.raw as raw

        if exc.err_code == raw.FPDF_ERR_PASSWORD:
            raise InputError(
                f"{path.name}: the PDF is encrypted with a password; open it and save a copy without one first"
            ) from None
        if exc.err_code == raw.FPDF_ERR_SECURITY:
            raise InputError(f"{path.name}: the PDF is protected by a security handler we cannot open (DRM)") from None
        raise InputError(f"{path.name}: not a readable PDF ({exc}); the file is damaged or not a PDF") from None


def _page_lines(page, number: int) -> _Page:  # page: pdfium.PdfPage
    import pypdfium2.raw as raw

    width, height = page.get_size()
    images = any(True for _ in page.get_objects(filter=(raw.FPDF_PAGEOBJ_IMAGE,), max_depth=2))
    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        if count > MAX_PAGE_CHARS:
            raise InputError(
                f"page {number + 1} holds {count:,} characters (no book's page holds over {MAX_PAGE_CHARS:,}); "
                "refusing it"
            )
        text = textpage.get_text_range(0, count) if count else ""
        if len(text) != count:  # characters beyond the BMP take two UTF-16 units: ask one by one
            text = "".join(chr(raw.FPDFText_GetUnicode(textpage, i)) for i in range(count))
        handle = textpage.raw
        get_box, get_size, get_origin = raw.FPDFText_GetCharBox, raw.FPDFText_GetFontSize, raw.FPDFText_GetCharOrigin
        left, right, bottom, top = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        origin_x, origin_y = ctypes.c_double(), ctypes.c_double()
        lines: list[Line] = []
        chars: list[str] = []
        x0 = x1 = y_top = 0.0  # the box of the piece so far
        sizes: list[float] = []
        bases: list[float] = []  # the baselines of its words
        last_x1 = last_base = last_bottom = 0.0
        size = 1.0
        word_start = True

        def flush() -> None:
            piece = "".join(chars).strip()
            if piece and sizes:
                base = bases[-1]  # where a hyphen-joined piece ends: the next line is measured from there
                lines.append(Line(piece, x0, x1, y_top, base, statistics.median(sizes), number, bases[0]))
            chars.clear()
            sizes.clear()
            bases.clear()

        for i, ch in enumerate(text):
            if ch in "\r\n":
                flush()
                word_start = True
                continue
            if ch.isspace() or ch == _HYPHEN_MARK:
                if chars:
                    chars.append(" " if ch.isspace() else ch)
                word_start = True
                continue
            if not get_box(handle, i, left, right, bottom, top):
                continue
            lv, rv, bv, tv = left.value, right.value, bottom.value, top.value
            # The size and baseline are asked for at the start of each word (and where the glyphs drop or rise
            # by more than a descender): a third of the calls into PDFium, the reader's main cost.
            if word_start or not chars or abs(bv - last_bottom) > 0.5 * size or ch in _NOTE_MARK_CHARS:
                glyph = get_size(handle, i) or (tv - bv) or 1.0
                base = origin_y.value if get_origin(handle, i, origin_x, origin_y) else bv
                if chars and ch in _NOTE_MARK_CHARS and glyph < 0.8 * size and base > last_base + 0.15 * size:
                    continue  # a note reference set small and raised after a word ("harbour¹"): not read
                size = glyph
                new_word = True
            else:
                base = last_base
                new_word = False
            if chars:
                em = size if size > 1.0 else 1.0
                if chars[-1] == _HYPHEN_MARK:
                    # PDFium joined a hyphenated word to what it took for the next line: only when that is
                    # below, at the start of the same column, is it; else (the next column) cut here.
                    if not (base < last_base and abs(lv - x0) < 3 * em):
                        chars[-1] = "-"
                        flush()
                # A column gutter, or text elsewhere on the page that PDFium put on this line.
                elif lv - last_x1 > 1.5 * em or abs(base - last_base) > 0.6 * em:
                    flush()
            if not chars:
                x0, x1, y_top = lv, rv, tv
                new_word = True
            else:
                if lv < x0:
                    x0 = lv
                if rv > x1:
                    x1 = rv
                if tv > y_top:
                    y_top = tv
            if new_word:
                sizes.append(size)
                bases.append(base)
            chars.append(ch)
            last_x1, last_base, last_bottom = rv, base, bv
            word_start = False
        flush()
    finally:
        textpage.close()
    return _Page(_reading_order(lines), width, height, images)


def _reading_order(lines: list[Line]) -> list[Line]:
    """Top to bottom; where the page has two columns (a gutter near the middle that no line crosses, with
    lines on both sides), each run of column lines is read left column first."""
    lines.sort(key=lambda ln: (-round(ln.first), ln.x0))
    if len(lines) < 6:
        return lines
    lo, hi = min(ln.x0 for ln in lines), max(ln.x1 for ln in lines)
    best: tuple[int, float] | None = None
    for step in range(11):  # gutter positions across the middle fifth of the text area
        g = lo + (hi - lo) * (0.4 + 0.02 * step)
        crossing = sum(1 for ln in lines if ln.x0 < g < ln.x1)
        left = sum(1 for ln in lines if ln.x1 <= g)
        right = sum(1 for ln in lines if ln.x0 >= g)
        if min(left, right) >= 3 and (best is None or crossing < best[0]):
            best = (crossing, g)
    if best is None or best[0] > len(lines) // 3:
        return lines
    gutter = best[1]
    ordered: list[Line] = []
    band: list[Line] = []
    for ln in [*lines, None]:
        if ln is not None and not (ln.x0 < gutter < ln.x1):
            band.append(ln)
            continue
        ordered += [b for b in band if b.x1 <= gutter] + [b for b in band if b.x1 > gutter]
        band = []
        if ln is not None:
            ordered.append(ln)
    return ordered


def _key(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def _drop_furniture(pages: list[_Page], body_size: float) -> int:
    """Leave out running headers and footers and page numbers; return how many lines went."""
    zone: dict[int, list[Line]] = {}
    for n, page in enumerate(pages):
        by_height = sorted(page.lines, key=lambda ln: -ln.top)
        zone[n] = by_height[:2] + by_height[-2:] if len(by_height) > 4 else by_height
    repeats: Counter[str] = Counter()
    for lines in zone.values():
        repeats.update({_key(ln.text) for ln in lines})
    need = 3 if len(pages) >= 6 else 2
    dropped = 0
    for n, page in enumerate(pages):
        doomed = {
            id(ln)
            for ln in zone[n]
            if _PAGE_NUMBER.fullmatch(ln.text.strip())
            or (repeats[_key(ln.text)] >= need and ln.size <= body_size * 1.1 and len(ln.text) <= 120)
        }
        if doomed:
            dropped += len(doomed)
            page.lines = [ln for ln in page.lines if id(ln) not in doomed]
    return dropped


def _drop_footnotes(pages: list[_Page], body_size: float) -> int:
    """Leave out footnotes: the lines at the foot of a page set smaller than the body text, the first of them
    starting with a note's mark, under text of the body's size. Returns how many lines went."""
    dropped = 0
    for page in pages:
        lines = sorted(page.lines, key=lambda ln: -ln.first)
        n = len(lines)
        while n > 0 and lines[n - 1].size <= body_size * 0.85:
            n -= 1
        block = lines[n:]
        if not block or n == 0 or not _FOOTNOTE_START.match(block[0].text):
            continue
        doomed = {id(ln) for ln in block}
        page.lines = [ln for ln in page.lines if id(ln) not in doomed]
        dropped += len(block)
    return dropped


def _in_order(starts: list[_Start]) -> list[_Start]:
    """Chapter starts in reading order: by page, then from the top (a start without a height is the page's top)."""
    return sorted(starts, key=lambda t: (t.page, -(t.y if t.y is not None else float("inf"))))


class _Sections:
    """Which outline chapter a point of the book is in: the number of chapter starts at or before it."""

    def __init__(self, starts: list[_Start]) -> None:
        self.before: Counter[int] = Counter()  # page -> starts on earlier pages
        self.on: dict[int, list[float | None]] = {}
        for start in starts:
            self.on.setdefault(start.page, []).append(start.y)
        total = 0
        for page in sorted(self.on):
            self.before[page] = total
            total += len(self.on[page])
        self.pages = sorted(self.on)
        self.total = total

    def of(self, page: int, top: float) -> int:
        at = bisect.bisect_right(self.pages, page)
        if at == 0:
            return 0
        last = self.pages[at - 1]
        if last < page:
            return self.before[last] + len(self.on[last])
        here = sum(1 for y in self.on[page] if y is None or top <= y + 2)
        return self.before[page] + here


def _paragraphs(pages: list[_Page], body_size: float, sections: _Sections | None = None) -> list[_Para]:
    """Lines into paragraphs, in reading order; a paragraph never runs across an outline chapter's start."""
    paras: list[_Para] = []
    parts: list[str] = []
    first: Line | None = None
    prev: Line | None = None

    def flush() -> None:
        nonlocal first
        if parts and first is not None:
            text = normalize_paragraph(_join(parts))
            if any(c.isalnum() for c in text):
                paras.append(_Para(text, first.size, first.page, first.top))
        parts.clear()
        first = None

    for page in pages:
        lines = page.lines
        if not lines:
            continue
        left_edges = Counter(round(ln.x0) for ln in lines)
        pitch = _pitch(lines, body_size)
        for ln in lines:
            if prev is not None and (
                _breaks(prev, ln, pitch, left_edges, body_size)
                or (sections is not None and sections.of(prev.page, prev.top) != sections.of(ln.page, ln.top))
            ):
                flush()
            if first is None:
                first = ln
            parts.append(ln.text)
            prev = ln
    flush()
    return paras


def _pitch(lines: list[Line], body_size: float) -> float:
    """The usual distance between the baselines of consecutive lines of body text on a page."""
    steps = [
        a.bottom - b.first
        for a, b in zip(lines, lines[1:], strict=False)
        if 0 < a.bottom - b.first < 3 * body_size and abs(a.size - body_size) < 0.5
    ]
    return statistics.median(steps) if steps else body_size * 1.2


def _breaks(prev: Line, ln: Line, pitch: float, left_edges: Counter[int], body_size: float) -> bool:
    """Whether ``ln`` starts a new paragraph after ``prev``."""
    if abs(prev.size - ln.size) > 0.8 or ln.text[:1] in _BULLETS:
        return True  # a heading and the text around it; an item of a list
    step = prev.bottom - ln.first
    if prev.page != ln.page or step < -pitch:  # the next page, or the top of the next column
        return prev.text.endswith(_SENTENCE_END) and not ln.text[:1].islower()
    if step > 1.6 * pitch:
        return True  # a blank line
    margin = min((x for x, n in left_edges.items() if abs(x - ln.x0) < 30 and n >= 2), default=round(ln.x0))
    if ln.x0 - margin > 0.8 * body_size and ln.text[:1].isupper():
        return True  # a first-line indent
    return prev.text.endswith(_SENTENCE_END) and prev.x1 < ln.x1 - 4 * body_size  # a short last line


def _join(parts: list[str]) -> str:
    """Lines of one paragraph into one text: PDFium's hyphen marks and line-end hyphens before a lower-case
    letter join the word; anything else is a space."""
    text = parts[0]
    for part in parts[1:]:
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and part[:1].islower():
            text = text[:-1] + part
        elif _is_cjk_join(text, part):
            text += part
        else:
            text += " " + part
    return re.sub(rf"{_HYPHEN_MARK}\s*(?=\w)", "", text).replace(_HYPHEN_MARK, "-")


def _is_cjk_join(a: str, b: str) -> bool:
    """Chinese and Japanese lines join without a space."""
    return bool(a) and bool(b) and "\u2e80" <= a[-1] <= "\u9fff" and "\u2e80" <= b[0] <= "\uffef"


@dataclass(frozen=True)
class _Start:
    """Where an outline entry's chapter starts: its page and, when the entry gives one, its height there."""

    title: str
    page: int
    y: float | None
    part: str | None = None


def _toc(pdf, pages: int) -> list[_Start]:
    """The outline entries that start chapters: those of the first level with two entries or more. Where most
    of them hold two entries or more on pages of their own (a part and its chapters), those are the chapters,
    each naming its part, and the part's own entry starts the text it has before them."""
    entries: list[tuple[int, _Start]] = []
    try:
        for item in pdf.get_toc(max_depth=6):
            dest = item.get_dest()
            index = dest.get_index() if dest is not None else None
            if index is None or not 0 <= index < pages:
                continue
            y: float | None = None
            if dest is not None:
                _mode, view = dest.get_view()
                if len(view) >= 2 and view[1]:
                    y = float(view[1])
            entries.append((item.level, _Start(normalize_paragraph(item.get_title() or ""), index, y)))
    except Exception:  # a broken outline is not worth failing the book over: headings will do
        return []
    levels = Counter(level for level, _ in entries)
    level = next((lv for lv in sorted(levels) if levels[lv] >= 2), None)
    if level is None:
        return []
    tops: list[tuple[_Start, list[_Start]]] = []
    for lv, start in entries:
        if lv == level:
            tops.append((start, []))
        elif lv == level + 1 and tops:
            tops[-1][1].append(start)
    parts = [kids for _, kids in tops if len(kids) >= 2 and len({k.page for k in kids}) == len(kids)]
    if len(parts) * 2 < len(tops):
        return [top for top, _ in tops]
    starts: list[_Start] = []
    for top, kids in tops:
        starts.append(top)
        if len(kids) >= 2:
            starts += [dataclasses.replace(kid, part=top.title) for kid in kids]
    return starts


def _title_key(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _by_outline(paras: list[_Para], toc: list[_Start], skipped: list[str], include_matter: bool) -> list[Chapter]:
    ordered = _in_order(toc)
    sections = _Sections(ordered)
    groups: list[tuple[_Start | None, list[_Para]]] = [(None, [])] + [(start, []) for start in ordered]
    for para in paras:
        groups[sections.of(para.page, para.top)][1].append(para)
    lead = groups.pop(0)[1]
    chapters: list[Chapter] = []
    if lead:
        chars = sum(len(p.text) for p in lead)
        if chars <= FRONT_MATTER_CHARS and not include_matter:
            many = "paragraphs" if len(lead) > 1 else "paragraph"
            skipped.append(f"{len(lead)} {many} before the first bookmark ({chars} characters: title page)")
        else:
            groups.insert(0, (None, lead))
    for start, group in groups:
        title = start.title if start else ""
        texts = [p.text for p in group]
        # The chapter's heading on the page says its title again: spoken once, as the title.
        while texts and title and _title_key(texts[0]) and _title_key(texts[0]) in _title_key(title):
            texts.pop(0)
        if texts:
            n = len(chapters) + 1
            chapters.append(Chapter(n, title or f"Chapter {n}", tuple(texts), start.part if start else None))
    return chapters


def _by_headings(paras: list[_Para], body_size: float, title: str) -> list[Chapter]:
    sizes = Counter(round(p.size, 1) for p in paras if p.size >= body_size * 1.15 and len(p.text) <= 120)
    level = max((s for s, n in sizes.items() if n >= 2), default=None)
    if level is not None:
        is_heading = [round(p.size, 1) == level and len(p.text) <= 120 for p in paras]
    else:
        is_heading = [len(p.text) <= 80 and bool(_CHAPTER_LINE.fullmatch(p.text)) for p in paras]
        if sum(is_heading) < 2:
            is_heading = [False] * len(paras)
    chapters: list[tuple[str, list[str]]] = [(title, [])]
    for para, heading in zip(paras, is_heading, strict=True):
        if heading:
            chapters.append((para.text, []))
        else:
            chapters[-1][1].append(para.text)
    kept = [(t, p) for t, p in chapters if p]
    return [Chapter(n, t, tuple(p)) for n, (t, p) in enumerate(kept, start=1)]


def _date(value: str | None) -> str | None:
    found = re.match(r"D:(\d{4})(\d{2})?(\d{2})?", value or "")
    if not found:
        return None
    return "-".join(g for g in found.groups() if g)


def _language(pdf) -> str | None:
    import pypdfium2.raw as raw

    try:
        size = raw.FPDFCatalog_GetLanguage(pdf, None, 0)
        if size <= 2:
            return None
        buffer = (ctypes.c_ushort * (size // 2))()
        raw.FPDFCatalog_GetLanguage(pdf, buffer, size)
        return primary_language(bytes(buffer)[: size - 2].decode("utf-16-le", "ignore"))
    except (AttributeError, ctypes.ArgumentError):
        return None


@dataclass
class _Read:
    pages: list[_Page] = field(default_factory=list)
    without_text: list[int] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    images: int = 0  # pages without text that hold a picture: a scan
    chars: int = 0


def read_pdf(path: Path, *, include_matter: bool = False) -> Book:
    """Read a PDF's text into a ``Book``; ``include_matter`` keeps a title page before the first bookmark.
    Raises InputError, one line, for what cannot be read."""
    import pypdfium2 as pdfium

    where = path.name
    with _PDFIUM:
        read, count, meta, toc, language = _extract(path, pdfium)
    return _book(path, where, read, count, meta, toc, language, include_matter)


def _extract(path: Path, pdfium) -> tuple[_Read, int, dict[str, str], list[_Start], str | None]:
    """Everything taken from PDFium: each page's lines, the page count, metadata, outline and language."""
    where = path.name
    pdf = _open(path)
    try:
        count = len(pdf)
        if count > MAX_PAGES:
            raise InputError(f"{where}: {count} pages is more than a book has (limit {MAX_PAGES}); refusing it")
        read = _Read()
        for n in range(count):
            try:
                page = pdf[n]
            except pdfium.PdfiumError:
                read.damaged.append(n)  # a page object the file has lost: its text is gone, the rest is not
                continue
            try:
                got = _page_lines(page, n)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            except pdfium.PdfiumError:
                read.damaged.append(n)
                continue
            finally:
                page.close()
            if sum(sum(map(str.isalnum, ln.text)) for ln in got.lines) < MIN_TEXT_CHARS:
                read.without_text.append(n)
                read.images += got.images
            read.pages.append(got)
            read.chars += sum(len(ln.text) for ln in got.lines)
            if read.chars > MAX_TEXT_CHARS:
                raise InputError(f"{where}: more than {MAX_TEXT_CHARS:,} characters of text; refusing it")
        meta = pdf.get_metadata_dict(skip_empty=True)
        toc = _toc(pdf, count)
        language = _language(pdf)
    finally:
        pdf.close()
    return read, count, meta, toc, language


def _book(
    path: Path,
    where: str,
    read: _Read,
    count: int,
    meta: dict[str, str],
    toc: list[_Start],
    language: str | None,
    include_matter: bool,
) -> Book:
    if count == 0:
        raise InputError(f"{where}: the PDF has no pages")
    if len(read.damaged) == count:
        raise InputError(f"{where}: none of the PDF's {count} pages can be read; the file is damaged")
    if len(read.without_text) + len(read.damaged) == count:
        if read.images:
            raise InputError(
                f"{where}: a scanned PDF (its {count} page{'s are' if count > 1 else ' is an'} image"
                f"{'s' if count > 1 else ''} with no text layer); run OCR on it first (e.g. ocrmypdf) and read that"
            )
        raise InputError(f"{where}: the PDF holds no text to read")
    skipped: list[str] = []
    if read.damaged:
        first = ", ".join(str(n + 1) for n in read.damaged[:5])
        skipped.append(f"{len(read.damaged)} damaged page{'s' if len(read.damaged) > 1 else ''} ({first})")
        log.warning("%s: %d page(s) could not be read (damaged): %s", where, len(read.damaged), first)
    if len(read.without_text) > max(2, count // 10):
        skipped.append(f"{len(read.without_text)} pages without text (scanned images or pictures)")
    sizes: Counter[float] = Counter()  # the body text's size: the one most characters are set in
    for page in read.pages:
        for ln in page.lines:
            sizes[round(ln.size, 1)] += len(ln.text)
    body_size = sizes.most_common(1)[0][0] if sizes else 10.0
    dropped = _drop_furniture(read.pages, body_size)
    if dropped:
        skipped.append(f"{dropped} running header, footer and page-number lines")
    notes = _drop_footnotes(read.pages, body_size)
    if notes:
        skipped.append(f"{notes} footnote line{'s' if notes > 1 else ''} (notes)")
    paras = _paragraphs(read.pages, body_size, _Sections(_in_order(toc)))
    title = meta.get("Title") or path.stem
    chapters = _by_outline(paras, toc, skipped, include_matter) if toc else []
    if not chapters:
        chapters = _by_headings(paras, body_size, title)
    if not chapters:
        raise InputError(f"{where}: the PDF holds no text to read")
    keywords = [k.strip() for k in re.split(r"[,;]", meta.get("Keywords", "")) if k.strip()]
    return Book(
        title=title,
        chapters=tuple(chapters),
        author=meta.get("Author") or None,
        language=language,
        source=path,
        skipped=tuple(skipped),
        info=BookInfo(
            description=meta.get("Subject") or None, date=_date(meta.get("CreationDate")), subjects=tuple(keywords)
        ),
    )
