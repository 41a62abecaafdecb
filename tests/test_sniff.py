"""Every input is recognised by its content before a reader is chosen: e-books under any name are routed to
their reader, and what no reader takes (another archive, other XML, old Office, binary) is refused in one line
through the CLI, never read aloud as text."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import docx
import pytest

from pipeline.errors import InputError
from pipeline.readers import BOOK_SUFFIXES, choose_reader, read_book
from tests.helpers import run_cli
from tests.mobibooks import mobi_file
from tests.pdfbooks import book_pdf, sentences


def one_line_refusal(path: Path, *expected: str) -> str:
    result = run_cli("plan", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_every_new_kind_is_a_book_suffix() -> None:
    assert {".pdf", ".docx", ".fb2", ".mobi", ".azw", ".azw3"} <= BOOK_SUFFIXES


def test_e_books_under_the_wrong_name_go_to_their_reader(tmp_path: Path) -> None:
    pdf = tmp_path / "a.txt"
    book_pdf(pdf, [("One", [sentences(1, 3)]), ("Two", [sentences(2, 3)])])
    doc = docx.Document()
    doc.add_paragraph("Words of a letter.")
    doc.save(str(tmp_path / "b.epub"))
    (tmp_path / "c.html").write_bytes(mobi_file("<p>Hello there.</p>"))
    (tmp_path / "d.md").write_text(
        '<?xml version="1.0"?><FictionBook><body><section><p>Hi.</p></section></body></FictionBook>'
    )
    assert [choose_reader(tmp_path / n) for n in ("a.txt", "b.epub", "c.html", "d.md")] == [
        "pdf",
        "docx",
        "mobi",
        "fb2",
    ]
    assert read_book(tmp_path / "b.epub").chapters[0].paragraphs == ("Words of a letter.",)


def test_a_zip_of_no_e_book_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes/one.txt", "Some notes.")
    one_line_refusal(path, "notes.txt: the file is a zip archive but no e-book", "despite its name")


def test_an_odt_and_other_xml_are_refused_in_one_line(tmp_path: Path) -> None:
    odt = tmp_path / "letter.txt"
    with zipfile.ZipFile(odt, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr("content.xml", "<office:document-content/>")
    one_line_refusal(odt, "letter.txt: ODT is not supported")
    svg = tmp_path / "drawing.md"
    svg.write_text('<?xml version="1.0"?>\n<!-- made by hand -->\n<svg><text>Hello</text></svg>')
    one_line_refusal(svg, "drawing.md: the file is an XML document (root <svg>)")


def test_binary_under_a_text_name_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "story.txt"
    path.write_bytes(random.Random(3).randbytes(4096))
    one_line_refusal(path, "story.txt:", "binary")


@pytest.mark.parametrize("name", ["book.pdf", "book.docx", "book.mobi", "book.fb2"])
def test_text_under_an_e_book_name_is_refused_not_read(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("Just a few words of plain text.\n")
    with pytest.raises(InputError, match=f"{name}: ") as info:
        read_book(path)
    assert "\n" not in str(info.value)


def test_each_new_format_plans_through_the_cli(tmp_path: Path) -> None:
    import json

    from tests.test_fb2 import BINARY, BODY, fb2

    pdf = tmp_path / "book.pdf"
    book_pdf(pdf, [("One", [sentences(1, 3)]), ("Two", [sentences(2, 3)])])
    (tmp_path / "book.fb2").write_text(fb2(BODY, extra=BINARY), encoding="utf-8")
    (tmp_path / "book.mobi").write_bytes(mobi_file("<h2>One</h2><p>A.</p><mbp:pagebreak/><h2>Two</h2><p>B.</p>"))
    document = docx.Document()
    for title in ("One", "Two"):
        document.add_heading(title, level=1)
        document.add_paragraph(f"Text of {title}.")
    document.save(str(tmp_path / "book.docx"))
    for name, titles in (
        ("book.pdf", ["One", "Two"]),
        ("book.fb2", ["Часть первая. Берег", "Глава 1", "Глава 2", "Глава 3"]),
        ("book.mobi", ["One", "Two"]),
        ("book.docx", ["One", "Two"]),
    ):
        result = run_cli("plan", str(tmp_path / name), "--json")
        assert result.returncode == 0, result.stderr
        assert [c["title"] for c in json.loads(result.stdout)["chapters"]] == titles, name
