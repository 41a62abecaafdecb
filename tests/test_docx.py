"""The DOCX reader, on documents made here with python-docx (footnotes, comments, a text box and revisions
added to the XML by hand, as Word writes them): headings make chapters, nothing from notes, comments, hidden
or deleted text is read, nothing is said twice; a zip bomb is refused in one line through the CLI."""

from __future__ import annotations

import zipfile
from pathlib import Path

import docx
import docx.enum.text
import pytest

from pipeline.errors import InputError
from pipeline.readers import read_book
from tests.helpers import claim_huge_size, run_cli

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
FOOTNOTE = "This footnote text must never be read."
COMMENT = "A reviewer's comment that must never be read."


def make_docx(path: Path) -> Path:
    doc = docx.Document()
    props = doc.core_properties
    props.title = "The Keeper's Log"
    props.author = "Mary Writer"
    props.language = "en-GB"
    props.keywords = "lighthouses; the sea"
    props.subject = "Fiction"
    doc.add_heading("The Keeper's Log", level=0)  # Title style
    doc.add_paragraph("CONTENTS_HERE")
    doc.add_paragraph("A note before the first part.")
    doc.add_heading("Part One", level=1)
    doc.add_paragraph("The part opens with a short word.")
    doc.add_heading("The Storm", level=2)
    doc.add_paragraph("Rain came at night. FOOTNOTE_HERE The lamp held.")
    doc.add_paragraph("HIDDEN_HERE The keeper slept at dawn.")
    table = doc.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Wind"
    table.cell(0, 1).text = "Force nine"
    doc.add_heading("The Calm", level=2)
    doc.add_paragraph("TEXTBOX_HERE Morning was quiet.")
    doc.add_heading("A Minor Heading", level=3)
    doc.add_paragraph("Gulls returned. DELETED_HERE")
    doc.add_heading("Part Two", level=1)
    doc.add_heading("The Ship", level=2)
    ship = doc.add_paragraph("A ship came in. COMMENT_HERE")
    ship.add_run().add_break(docx.enum.text.WD_BREAK.PAGE)
    ship.add_run("Its crew")
    ship.add_run().add_break()
    ship.add_run("went ashore.")
    doc.save(str(path))
    _inject(path)
    return path


RUN = '<w:r><w:t xml:space="preserve">{}</w:t></w:r>'
TEXTBOX = (
    '<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
    '<mc:Choice Requires="wps"><w:drawing><wps:txbx xmlns:wps="http://schemas.microsoft.com/office/word/2010/'
    'wordprocessingShape"><w:txbxContent><w:p><w:r><w:t>Boxed words.</w:t></w:r></w:p></w:txbxContent>'
    '</wps:txbx></w:drawing></mc:Choice><mc:Fallback><w:pict><v:textbox xmlns:v="urn:schemas-microsoft-com:vml">'
    "<w:txbxContent><w:p><w:r><w:t>Boxed words.</w:t></w:r></w:p></w:txbxContent></v:textbox></w:pict>"
    "</mc:Fallback></mc:AlternateContent>"
)


def _inject(path: Path) -> None:
    """What python-docx cannot write: a footnote and its reference, a comment, hidden and deleted text, a text
    box with Word's fallback copy."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    xml = members["word/document.xml"].decode()
    replacements = {
        "FOOTNOTE_HERE ": '</w:t></w:r><w:r><w:rPr><w:rStyle w:val="FootnoteReference"/></w:rPr>'
        '<w:footnoteReference w:id="1"/></w:r><w:r><w:t xml:space="preserve"> ',
        "HIDDEN_HERE ": "</w:t></w:r><w:r><w:rPr><w:vanish/></w:rPr><w:t>Secret hidden words.</w:t></w:r>"
        '<w:r><w:t xml:space="preserve">',
        "TEXTBOX_HERE ": f'</w:t></w:r><w:r>{TEXTBOX}</w:r><w:r><w:t xml:space="preserve"> ',
        " DELETED_HERE": '</w:t></w:r><w:del w:id="9" w:author="Ed"><w:r><w:delText>Struck words.</w:delText>'
        '</w:r></w:del><w:ins w:id="10" w:author="Ed"><w:r><w:t xml:space="preserve"> Added words.</w:t></w:r>'
        "</w:ins><w:r><w:t>",
        " COMMENT_HERE": '</w:t></w:r><w:commentRangeStart w:id="0"/><w:r><w:t xml:space="preserve"> It anchored.'
        '</w:t></w:r><w:commentRangeEnd w:id="0"/><w:r><w:commentReference w:id="0"/></w:r><w:r><w:t>',
    }
    contents = (
        '<w:sdt><w:sdtPr><w:docPartObj><w:docPartGallery w:val="Table of Contents"/><w:docPartUnique/>'
        "</w:docPartObj></w:sdtPr><w:sdtContent><w:p><w:r><w:t>Contents</w:t></w:r></w:p>"
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> TOC \\o "1-3" </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>Part One 1</w:t></w:r></w:p>'
        '<w:p><w:r><w:t>The Storm 2</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        "</w:sdtContent></w:sdt>"
    )
    start = xml.index("CONTENTS_HERE")
    xml = xml[: xml.rindex("<w:p>", 0, start)] + contents + xml[xml.index("</w:p>", start) + len("</w:p>") :]
    for marker, xml_part in replacements.items():
        assert marker in xml, marker
        xml = xml.replace(marker, xml_part)
    members["word/document.xml"] = xml.encode()
    members["word/footnotes.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:footnotes xmlns:w="{W_NS}"><w:footnote w:id="1"><w:p><w:r>'
        f"<w:t>{FOOTNOTE}</w:t></w:r></w:p></w:footnote></w:footnotes>"
    ).encode()
    members["word/comments.xml"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:comments xmlns:w="{W_NS}"><w:comment w:id="0" w:author="R">'
        f"<w:p><w:r><w:t>{COMMENT}</w:t></w:r></w:p></w:comment></w:comments>"
    ).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_headings_make_chapters_and_notes_comments_hidden_and_deleted_text_are_not_read(tmp_path: Path) -> None:
    book = read_book(make_docx(tmp_path / "log.docx"))
    assert [(c.title, c.part, list(c.paragraphs)) for c in book.chapters] == [
        ("The Keeper's Log", None, ["A note before the first part."]),
        ("Part One", None, ["The part opens with a short word."]),
        (
            "The Storm",
            "Part One",
            ["Rain came at night. The lamp held.", "The keeper slept at dawn.", "Wind", "Force nine"],
        ),
        (
            "The Calm",
            "Part One",
            ["Boxed words. Morning was quiet.", "A Minor Heading", "Gulls returned. Added words."],
        ),
        ("The Ship", "Part Two", ["A ship came in. It anchored. Its crew went ashore."]),
    ]
    text = " ".join(p for c in book.chapters for p in c.paragraphs)
    assert text.count("Boxed words") == 1  # Word's fallback copy of the text box is not read again
    for never in (FOOTNOTE, COMMENT, "Secret hidden", "Struck words", "Contents", "TOC", "Storm 2"):
        assert never not in text
    assert book.skipped == ("Table of contents (contents)", "1 footnote (not read)", "1 comment (not read)")


def test_include_matter_reads_the_table_of_contents(tmp_path: Path) -> None:
    book = read_book(make_docx(tmp_path / "log.docx"), include_matter=True)
    assert book.chapters[0].paragraphs[:3] == ("Contents", "Part One 1", "The Storm 2")
    assert book.skipped == ("1 footnote (not read)", "1 comment (not read)")


def test_core_properties_fill_the_book(tmp_path: Path) -> None:
    book = read_book(make_docx(tmp_path / "log.docx"))
    assert (book.title, book.author, book.language) == ("The Keeper's Log", "Mary Writer", "en")
    assert book.info.subjects == ("Fiction", "lighthouses", "the sea")
    assert book.info.date and book.info.date[:2] == "20"


def test_only_heading_1_or_none_at_all(tmp_path: Path) -> None:
    doc = docx.Document()
    for n in (1, 2):
        doc.add_heading(f"Chapter {n}", level=1)
        doc.add_paragraph(f"Text of chapter {n}.")
    doc.save(str(tmp_path / "flat.docx"))
    book = read_book(tmp_path / "flat.docx")
    assert [(c.title, c.part, c.paragraphs) for c in book.chapters] == [
        ("Chapter 1", None, ("Text of chapter 1.",)),
        ("Chapter 2", None, ("Text of chapter 2.",)),
    ]
    plain = docx.Document()
    plain.add_paragraph("Just a letter.")
    plain.save(str(tmp_path / "letter.docx"))
    book = read_book(tmp_path / "letter.docx")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("letter", ("Just a letter.",))]


def test_a_docx_with_a_huge_member_is_refused_in_one_line_through_the_cli(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "bomb.docx")
    claim_huge_size(path, "word/document.xml")
    with pytest.raises(InputError, match="zip bomb"):
        read_book(path)
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bomb.docx" in lines[0] and "zip bomb" in lines[0], result.stderr


def test_a_docx_named_epub_is_read_as_docx_and_an_entity_in_its_xml_is_refused(tmp_path: Path) -> None:
    named = make_docx(tmp_path / "log.docx").rename(tmp_path / "log.bin")
    assert [c.title for c in read_book(named).chapters][-1] == "The Ship"
    evil = make_docx(tmp_path / "evil.docx")
    with zipfile.ZipFile(evil) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    xml = members["word/document.xml"].decode()
    head, rest = xml.split("?>", 1)
    members["word/document.xml"] = (
        head + '?><!DOCTYPE w:document [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + rest
    ).encode()
    with zipfile.ZipFile(evil, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(InputError, match="declares XML entities"):
        read_book(evil)
