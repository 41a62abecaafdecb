"""The PDF reader, on books typeset here (tests/pdfbooks.py): chapters from the outline or from headings, the
text of every paragraph exactly as written (words hyphenated across lines joined, paragraphs across pages
joined), nothing from running headers, footers or page numbers, two columns in order; scanned and encrypted
PDFs refused in one line through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers import read_book
from pipeline.readers.pdf import read_pdf
from tests.helpers import run_cli
from tests.pdfbooks import book_pdf, encrypted_pdf, scanned_pdf, sentences, two_column_pdf

CHAPTERS = [
    ("The Harbour", [sentences(1, 4), sentences(2, 9), sentences(3, 3)]),
    # Long enough to run over two pages: its paragraphs continue across the page break.
    ("The Storm", [sentences(4, 30), sentences(5, 12), sentences(6, 25)]),
    ("The Beacon", [sentences(7, 5), sentences(8, 2)]),
]


def spoken(book) -> str:
    return "\n".join(p for c in book.chapters for p in c.paragraphs)


def test_outline_chapters_with_every_paragraph_as_written_and_no_headers_or_page_numbers(tmp_path: Path) -> None:
    path = tmp_path / "lantern.pdf"
    hyphenated = book_pdf(path, CHAPTERS)
    assert hyphenated >= 5  # the typesetter split words across lines: the reader had to join them
    book = read_book(path)
    assert [(c.title, list(c.paragraphs)) for c in book.chapters] == [(t, p) for t, p in CHAPTERS]
    text = spoken(book)
    assert "LANTERN KEEPER" not in text and "NOVEL" not in text  # the running header, on every page
    assert "-" not in text  # no hyphen left where a word was split
    assert (book.title, book.author, book.language) == ("The Lantern Keeper", "Ada Example", "en")
    assert book.info.subjects == ("sea", "lighthouses")
    assert read_pdf(path).language == "en"  # the document's own /Lang, not a guess from its text
    assert book.skipped[0].endswith("running header, footer and page-number lines")
    assert "before the first bookmark" in book.skipped[1]  # the title page
    with_matter = read_book(path, include_matter=True)
    assert [c.paragraphs for c in with_matter.chapters][0] == ("The Lantern Keeper",)


def test_an_outline_of_parts_gives_their_chapters_each_naming_its_part(tmp_path: Path) -> None:
    path = tmp_path / "parts.pdf"
    chapters = [*CHAPTERS, ("The Return", [sentences(9, 4)])]
    book_pdf(path, chapters, parts={0: "Part One", 2: "Part Two"})
    book = read_book(path)
    assert [(c.title, c.part, list(c.paragraphs)) for c in book.chapters] == [
        (t, "Part One" if n < 2 else "Part Two", p) for n, (t, p) in enumerate(chapters)
    ]


def test_footnotes_and_their_marks_are_not_read(tmp_path: Path) -> None:
    # The marked paragraph runs on to the next page, past the note at the foot of the first.
    marked = sentences(40, 8) + " The harbour^ was quiet. " + sentences(41, 30)
    chapters = [("The Harbour", [sentences(42, 20), marked, sentences(43, 3)]), ("The Storm", [sentences(44, 3)])]
    note = "The harbour was rebuilt in 1890 after the great storm."
    path = tmp_path / "notes.pdf"
    book_pdf(path, chapters, notes={marked: note})
    book = read_book(path)
    assert [list(c.paragraphs) for c in book.chapters] == [[p.replace("^", "") for p in ps] for _, ps in chapters]
    assert "1890" not in " ".join(book.chapters[0].paragraphs)
    assert "1 footnote line (notes)" in book.skipped


def test_without_an_outline_chapters_come_from_the_larger_headings(tmp_path: Path) -> None:
    path = tmp_path / "lantern.pdf"
    book_pdf(path, CHAPTERS, outline=False, title_page=None)
    book = read_book(path)
    assert [(c.title, list(c.paragraphs)) for c in book.chapters] == [(t, p) for t, p in CHAPTERS]


def test_page_numbers_go_even_without_a_running_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.pdf"
    book_pdf(path, CHAPTERS, header=None)
    book = read_book(path)
    assert [list(c.paragraphs) for c in book.chapters] == [p for _, p in CHAPTERS]
    assert not any(p.strip().isdigit() for c in book.chapters for p in c.paragraphs)


def test_two_columns_are_read_column_by_column(tmp_path: Path) -> None:
    left = [sentences(11, 6), sentences(12, 4)]
    right = [sentences(13, 5), sentences(14, 3)]
    path = tmp_path / "columns.pdf"
    two_column_pdf(path, "Two Columns", left, right)
    book = read_book(path)
    assert [c.title for c in book.chapters] == ["A Page in Columns"]
    assert list(book.chapters[0].paragraphs) == ["Two Columns", *left, *right]


def test_a_scanned_pdf_is_refused_in_one_line_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    scanned_pdf(path)
    with pytest.raises(InputError, match="a scanned PDF"):
        read_book(path)
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scan.pdf: a scanned PDF" in lines[0] and "OCR" in lines[0], result.stderr


def test_an_encrypted_pdf_is_refused_in_one_line_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    encrypted_pdf(path)
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "locked.pdf: the PDF is encrypted with a password" in lines[0], result.stderr


def test_a_page_of_absurd_length_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    import pipeline.readers.pdf as pdf_reader

    monkeypatch.setattr(pdf_reader, "MAX_PAGE_CHARS", 5_000)  # the real limit, 200,000, makes a slow test
    path = tmp_path / "dense.pdf"
    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont("Helvetica", 2)
    for row in range(60):
        c.drawString(10, 800 - row * 3, "word " * 20)
    c.save()
    with pytest.raises(InputError, match=r"dense.pdf: page 1 holds 6,\d{3} characters"):
        read_book(path)


def test_a_pdf_under_another_name_is_read_as_a_pdf_and_a_broken_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "lantern.txt"
    book_pdf(path, CHAPTERS)
    assert [c.title for c in read_book(path).chapters] == [t for t, _ in CHAPTERS]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    with pytest.raises(InputError, match="broken.pdf"):
        read_book(broken)
    text = tmp_path / "notes.pdf"
    text.write_text("Just some notes.\n")
    with pytest.raises(InputError, match="the file is text, not a PDF"):
        read_book(text)
