"""PDF books for the PDF reader's tests and bench, typeset here with reportlab: paragraphs wrapped to the
measure with words hyphenated across lines, first-line indents, running headers and page numbers on every
page, chapter headings in a larger size, an outline (bookmarks) when asked, two columns drawn row by row (so
only the reader's geometry puts them in order), image-only (scanned) and password-protected files."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

BODY = 11.0
LEADING = 14.0
HEADING = 18.0
MARGIN = 72.0
HEADER = "THE LANTERN KEEPER · A NOVEL"

_PROSE = (
    "the keeper climbed stairs every evening lighthouse lantern harbour fishermen weather storm quietly "
    "remembered mother letters winter window northern coastline beacon signal travellers afterwards "
    "everything considerable extraordinary unquestionably conversation"
)
_WORDS = _PROSE.split()


def sentences(seed: int, count: int) -> str:
    """Deterministic English-looking prose: ``count`` sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
    return " ".join(out)


@dataclass
class Typesetter:
    """Lays out paragraphs on pages of one or two columns, with a running header and a page number."""

    c: canvas.Canvas
    columns: int = 1
    header: str | None = HEADER
    numbers: bool = True
    page: int = 1
    hyphenated: int = 0  # words split across lines, to be joined by the reader
    notes: list[str] = field(default_factory=list)  # footnotes to set at the foot of this page

    def __post_init__(self) -> None:
        self.width, self.height = A4
        self.col = 0
        self._furniture()
        self.y = self.height - MARGIN - 30

    @property
    def measure(self) -> float:
        full = self.width - 2 * MARGIN
        return full if self.columns == 1 else (full - 24) / 2

    @property
    def x(self) -> float:
        return MARGIN + self.col * (self.measure + 24)

    def _furniture(self) -> None:
        self.c.setFont("Helvetica", 9)
        if self.header:
            self.c.drawCentredString(self.width / 2, self.height - 40, self.header)
        if self.numbers:
            self.c.drawCentredString(self.width / 2, 36, str(self.page))

    def foot(self) -> None:
        """The page's footnotes, small, under the text and over the page number: "1 The note's text."."""
        y = MARGIN - 16
        for n, note in enumerate(self.notes, start=1):
            self.c.setFont("Helvetica", 8)
            self.c.drawString(MARGIN, y, f"{n} {note}")
            y -= 10
        self.notes = []

    def new_page(self) -> None:
        self.foot()
        self.c.showPage()
        self.page += 1
        self.col = 0
        self._furniture()
        self.y = self.height - MARGIN - 30

    def _next_line(self) -> None:
        self.y -= LEADING
        if self.y < MARGIN:
            if self.columns == 2 and self.col == 0:
                self.col = 1
                self.y = self.height - MARGIN - 30
            else:
                self.new_page()
                self.c.setFont("Helvetica", BODY)

    def heading(self, text: str, key: str | None = None, level: int = 0) -> None:
        if self.y < self.height - MARGIN - 40:
            self.new_page()
        self.c.setFont("Helvetica-Bold", HEADING)
        self.c.drawString(self.x, self.y, text)
        if key:
            self.c.bookmarkPage(key, fit="XYZ", top=self.y + HEADING)
            self.c.addOutlineEntry(text, key, level=level)
        self.y -= LEADING * 2.5

    def lines_of(self, text: str, indent: float) -> list[str]:
        """Greedy wrapping; a long word that does not fit is split with a hyphen, as typesetters do."""
        font = ("Helvetica", BODY)
        lines: list[str] = []
        line = ""
        room = self.measure - indent
        for word in text.split():
            trial = f"{line} {word}".strip()
            if self.c.stringWidth(trial, *font) <= room:
                line = trial
                continue
            if len(word) >= 9 and word.isalpha():
                for cut in range(len(word) - 3, 3, -1):
                    head = f"{line} {word[:cut]}-".strip()
                    if self.c.stringWidth(head, *font) <= room:
                        lines.append(head)
                        self.hyphenated += 1
                        line, word = "", word[cut:]
                        break
            if line:
                lines.append(line)
            line = word
            room = self.measure
        if line:
            lines.append(line)
        return lines

    def paragraph(self, text: str, note: str | None = None) -> None:
        """``text`` may hold one "^" after a word: there a raised note mark, and ``note`` at the page's foot."""
        self.c.setFont("Helvetica", BODY)
        for n, line in enumerate(self.lines_of(text, 18.0)):
            x = self.x + (18.0 if n == 0 else 0)
            if "^" in line and note is not None:
                before, after = line.split("^", 1)
                self.c.drawString(x, self.y, before)
                x += self.c.stringWidth(before, "Helvetica", BODY)
                self.notes.append(note)
                self.c.setFont("Helvetica", 7)
                self.c.drawString(x, self.y + 4, str(len(self.notes)))
                x += self.c.stringWidth(str(len(self.notes)), "Helvetica", 7)
                self.c.setFont("Helvetica", BODY)
                self.c.drawString(x, self.y, after)
            else:
                self.c.drawString(x, self.y, line)
            self._next_line()


def book_pdf(
    path: Path,
    chapters: list[tuple[str, list[str]]],
    *,
    outline: bool = True,
    title_page: str | None = "The Lantern Keeper",
    header: str | None = HEADER,
    parts: dict[int, str] | None = None,
    notes: dict[str, str] | None = None,
) -> int:
    """A one-column book; returns how many words were hyphenated across lines. ``parts`` puts a part's title
    page (and outline entry, one level above its chapters') before the chapter of that index. ``notes`` maps a
    paragraph that holds a "^" to the footnote its mark refers to."""
    c = canvas.Canvas(str(path), pagesize=A4, lang="en-GB")
    c.setTitle("The Lantern Keeper")
    c.setAuthor("Ada Example")
    c.setKeywords("sea, lighthouses")
    t = Typesetter(c, header=header)
    if title_page:
        c.setFont("Helvetica-Bold", 28)
        c.drawCentredString(t.width / 2, t.height / 2, title_page)
        t.new_page()
    for n, (title, paragraphs) in enumerate(chapters):
        if parts and n in parts:
            t.heading(parts[n], f"part{n}" if outline else None)
            t.new_page()
        t.heading(title, f"ch{n}" if outline else None, level=1 if parts else 0)
        for text in paragraphs:
            t.paragraph(text, (notes or {}).get(text))
    t.foot()
    c.save()
    return t.hyphenated


def two_column_pdf(path: Path, title: str, left: list[str], right: list[str]) -> None:
    """One page: a heading across the page, then two columns whose lines are drawn row by row (left line 1,
    right line 1, ...), so the content stream interleaves them and only geometry gives the order."""
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setTitle("A Page in Columns")
    t = Typesetter(c, columns=2, header=None, numbers=True)
    c.setFont("Helvetica-Bold", HEADING)
    c.drawString(MARGIN, t.y, title)
    y0 = t.y - LEADING * 2.5
    left_lines = [line for text in left for line in t.lines_of(text, 0)]
    t.col = 1
    right_lines = [line for text in right for line in t.lines_of(text, 0)]
    c.setFont("Helvetica", BODY)
    for row in range(max(len(left_lines), len(right_lines))):
        y = y0 - row * LEADING
        if row < len(left_lines):
            c.drawString(MARGIN, y, left_lines[row])
        if row < len(right_lines):
            c.drawString(MARGIN + t.measure + 24, y, right_lines[row])
    c.save()


def scanned_pdf(path: Path, pages: int = 2) -> None:
    """Pages that are pictures only: what a scanner makes without OCR."""
    from PIL import Image
    from reportlab.lib.utils import ImageReader

    c = canvas.Canvas(str(path), pagesize=A4)
    for _ in range(pages):
        image = Image.new("L", (200, 280), 255)
        for x in range(20, 180):
            for y in range(40, 240, 12):
                image.putpixel((x, y), 0)  # lines of "text" as a scanner sees them
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        buffer.seek(0)
        c.drawImage(ImageReader(buffer), 0, 0, *A4)
        c.showPage()
    c.save()


def encrypted_pdf(path: Path) -> None:
    from reportlab.lib.pdfencrypt import StandardEncryption

    c = canvas.Canvas(str(path), pagesize=A4, encrypt=StandardEncryption("secret", canPrint=0))
    c.drawString(MARGIN, 700, "Locked words.")
    c.save()
