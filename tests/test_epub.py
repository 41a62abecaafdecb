"""EPUB reader: structure (spine, nav/NCX, nesting, fragments), metadata, matter filtering, hostile files.

Every EPUB here except the corpus book is built by the test itself with zipfile."""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers.epub import read_epub, safezip
from tests.conftest import corpus_file
from tests.helpers import ALICE_TOC, claim_huge_size

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="{opf}" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def xhtml(body: str, *, title: str = "Doc", lang: str = "en", head: str = "") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" lang="{lang}">
<head><title>{title}</title>{head}</head>
<body>{body}</body></html>"""


def nav(toc: str, landmarks: str = "") -> str:
    return xhtml(
        f'<nav epub:type="toc" id="toc"><h1>Contents</h1><ol>{toc}</ol></nav>'
        + (f'<nav epub:type="landmarks"><ol>{landmarks}</ol></nav>' if landmarks else ""),
        title="Contents",
    )


def opf(
    manifest: list[tuple[str, str, str, str]],
    spine: list[str],
    *,
    version: str = "3.0",
    title: str = "Test Book",
    author: str = "Ann Author",
    language: str = "en",
    extra_meta: str = "",
    guide: str = "",
    toc: str | None = None,
) -> str:
    items = "\n".join(
        f'<item id="{i}" href="{h}" media-type="{m}"' + (f' properties="{p}"' if p else "") + "/>"
        for i, h, m, p in manifest
    )
    refs = "\n".join(f'<itemref idref="{i}"/>' for i in spine)
    toc_attr = f' toc="{toc}"' if toc else ""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="{version}" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">
    <dc:identifier id="id">urn:test</dc:identifier>
    <dc:title>{title}</dc:title>
    <dc:creator>{author}</dc:creator>
    <dc:language>{language}</dc:language>
    {extra_meta}
  </metadata>
  <manifest>{items}</manifest>
  <spine{toc_attr}>{refs}</spine>
  {f"<guide>{guide}</guide>" if guide else ""}
</package>"""


def write_zip(path: Path, files: dict[str, str | bytes], *, container: str | None = "OEBPS/content.opf") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        if container:
            zf.writestr("META-INF/container.xml", CONTAINER.format(opf=container))
        for name, data in files.items():
            zf.writestr(name, data)
    return path


XHTML = "application/xhtml+xml"


def simple_epub(path: Path, chapters: dict[str, str], **opf_args: str) -> Path:
    """An EPUB 3 with one file per chapter, the nav listing them in order."""
    manifest = [("nav", "nav.xhtml", XHTML, "nav")]
    files: dict[str, str | bytes] = {}
    toc = []
    for n, (title, body) in enumerate(chapters.items()):
        manifest.append((f"c{n}", f"c{n}.xhtml", XHTML, ""))
        files[f"OEBPS/c{n}.xhtml"] = xhtml(f"<h1>{title}</h1>{body}")
        toc.append(f'<li><a href="c{n}.xhtml">{title}</a></li>')
    files["OEBPS/nav.xhtml"] = nav("".join(toc))
    files["OEBPS/content.opf"] = opf(manifest, [f"c{n}" for n in range(len(chapters))], **opf_args)
    return write_zip(path, files)


# -- the corpus book -------------------------------------------------------------------------------


def test_alice_has_its_twelve_chapters_and_no_front_or_back_matter() -> None:
    book = read_epub(corpus_file("alice-pg11.epub"))
    assert [c.title for c in book.chapters] == ALICE_TOC
    assert [c.index for c in book.chapters] == list(range(1, 13))
    assert book.title == "Alice's Adventures in Wonderland"
    assert book.author == "Lewis Carroll"
    assert book.language == "en"
    assert book.cover is not None and book.cover.startswith(b"\xff\xd8\xff") and book.cover_mime == "image/jpeg"
    assert "Contents (table of contents)" in book.skipped
    assert "Alice’s Adventures in Wonderland (title page)" in book.skipped
    assert "THE FULL PROJECT GUTENBERG LICENSE (licence)" in book.skipped
    first = book.chapters[0]
    assert first.paragraphs[0].startswith("Alice was beginning to get very tired")
    assert book.chapters[-1].paragraphs[-1] == "THE END"
    for chapter in book.chapters:
        assert chapter.paragraphs[0] != chapter.title  # the heading is spoken as the title, not twice
        assert "Gutenberg" not in chapter.text
        assert "* * *" not in chapter.text  # scene-break asterisks are not speakable
        assert all(p == p.strip() and "  " not in p for p in chapter.paragraphs)


def test_alice_include_matter_keeps_contents_and_licence() -> None:
    book = read_epub(corpus_file("alice-pg11.epub"), include_matter=True)
    titles = [c.title for c in book.chapters]
    assert "Contents" in titles
    assert titles[-1] == "THE FULL PROJECT GUTENBERG LICENSE"
    assert titles[titles.index(ALICE_TOC[0]) : titles.index(ALICE_TOC[-1]) + 1] == ALICE_TOC
    assert "Project Gutenberg" in book.chapters[-1].text


# -- structure -------------------------------------------------------------------------------------


def nested_epub(tmp_path: Path) -> Path:
    files: dict[str, str | bytes] = {
        "OEBPS/part1.xhtml": xhtml("<h1>Part One</h1>"),
        "OEBPS/ch1.xhtml": xhtml(
            '<section epub:type="chapter"><h2>Chapter 1</h2><p>The first chapter begins'
            '<a epub:type="noteref" href="#n1">1</a> here<sup><a href="#n2">[2]</a></sup>.</p>'
            '<p>It has <span epub:type="pagebreak" id="page7" title="7">7</span>two paragraphs [3].</p>'
            '<img src="pic.png" alt="pic.png"/><script>alert("no")</script>'
            '<aside epub:type="footnote" id="n1"><p>A footnote nobody should hear.</p></aside></section>'
        ),
        "OEBPS/ch2.xhtml": xhtml("<h2>Chapter 2</h2><p>Second chapter text.</p>"),
        "OEBPS/interlude.xhtml": xhtml("<p>An interlude the contents forgot.</p>"),
        "OEBPS/ch3.xhtml": xhtml(
            '<h2 id="top">Chapter 3</h2><p>Opening of three.</p>'
            '<h3 id="s1">Section A</h3><p>Text of section A.</p>'
            '<h3 id="s2">Section B</h3><p>Text of section B.</p>'
        ),
        "OEBPS/story.xhtml": xhtml(
            "<p>Kanji <ruby>漢<rt>kan</rt>字<rt>ji</rt></ruby> appear.</p>"
            '<div id="c4"><h2>Chapter 4</h2><p>Four, first.</p><p>Four, last.</p></div>'
            '<h2 id="c5">Chapter 5</h2><p>Five, <a id="inline"/>only.</p>'
        ),
        "OEBPS/nav.xhtml": nav(
            '<li><a href="part1.xhtml">Part One</a><ol>'
            '<li><a href="ch1.xhtml">Chapter 1</a></li>'
            '<li><a href="ch2.xhtml">Chapter 2</a></li></ol></li>'
            '<li><a href="ch3.xhtml">Chapter 3</a><ol>'
            '<li><a href="ch3.xhtml#s1">Section A</a></li>'
            '<li><a href="ch3.xhtml#s2">Section B</a></li></ol></li>'
            "<li><span>Part Two</span><ol>"
            '<li><a href="story.xhtml#c4">Chapter 4</a></li>'
            '<li><a href="story.xhtml#c5">Chapter 5</a></li></ol></li>'
        ),
    }
    names = ["part1", "ch1", "ch2", "interlude", "ch3", "story"]
    manifest = [("nav", "nav.xhtml", XHTML, "nav")] + [(n, f"{n}.xhtml", XHTML, "") for n in names]
    files["OEBPS/content.opf"] = opf(manifest, names)
    return write_zip(tmp_path / "nested.epub", files)


def test_nested_toc_parts_sections_and_fragments(tmp_path: Path) -> None:
    book = read_epub(nested_epub(tmp_path))
    got = {c.title: c.paragraphs for c in book.chapters}
    assert list(got) == ["Chapter 1", "Chapter 2", "Chapter 3", "Chapter 4", "Chapter 5"]
    # Part One has separate documents under it: a part, its entries are the chapters; its page has no text.
    assert "Part One (no text)" in book.skipped
    # Footnote markers, page numbers, images, scripts and pop-up notes are not spoken.
    assert got["Chapter 1"] == ("The first chapter begins here.", "It has two paragraphs.")
    # A spine document the TOC does not mention belongs to the chapter before it.
    assert got["Chapter 2"] == ("Second chapter text.", "An interlude the contents forgot.")
    # Sub-entries inside the chapter's own file are sections of one chapter, headings kept as text.
    assert got["Chapter 3"] == (
        "Opening of three.",
        "Section A",
        "Text of section A.",
        "Section B",
        "Text of section B.",
        # story.xhtml opens with text before its first anchor (#c4): it continues the chapter before it.
        "Kanji 漢字 appear.",
    )
    # Fragment entries cut one file in the middle: a chapter runs from its anchor to the next one.
    assert got["Chapter 4"] == ("Four, first.", "Four, last.")
    assert got["Chapter 5"] == ("Five, only.",)
    assert all("kan" not in p for c in book.chapters for p in c.paragraphs)
    assert book.author == "Ann Author" and book.title == "Test Book"


NCX = """<?xml version="1.0" encoding="UTF-8"?>
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">
  <head><meta name="dtb:uid" content="urn:test"/></head>
  <docTitle><text>Old Book</text></docTitle>
  <navMap>
    <navPoint id="p0" playOrder="0"><navLabel><text>Cover</text></navLabel>
      <content src="Text/cover.html"/></navPoint>
    <navPoint id="p1" playOrder="1"><navLabel><text>The Beginning</text></navLabel>
      <content src="Text/one.html"/>
      <navPoint id="p1a" playOrder="2"><navLabel><text>Inside</text></navLabel>
        <content src="Text/one.html#inside"/></navPoint>
    </navPoint>
    <navPoint id="p2" playOrder="3"><navLabel><text>The Middle</text></navLabel>
      <content src="Text/two.html#start"/></navPoint>
    <navPoint id="p3" playOrder="4"><navLabel><text>Copyright</text></navLabel>
      <content src="Text/legal.html"/></navPoint>
  </navMap>
</ncx>"""


def test_epub2_with_only_an_ncx(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/toc.ncx": NCX,
        "OEBPS/Images/front.png": PNG,
        "OEBPS/Text/cover.html": xhtml('<div><img src="../Images/front.png" alt="Cover"/></div>'),
        "OEBPS/Text/one.html": xhtml(
            "<h1>The Beginning</h1><p>It began &amp; it went on.</p>"
            '<h2 id="inside">Inside</h2><p>More of the beginning.</p>'
        ),
        "OEBPS/Text/two.html": xhtml('<p id="start" class="chapter-title">The Middle</p><p>Middle text.</p>'),
        "OEBPS/Text/legal.html": xhtml("<p>All rights reserved. Printed nowhere.</p>"),
    }
    manifest = [
        ("ncx", "toc.ncx", "application/x-dtbncx+xml", ""),
        ("cover-img", "Images/front.png", "image/png", ""),
        ("cover", "Text/cover.html", XHTML, ""),
        ("one", "Text/one.html", XHTML, ""),
        ("two", "Text/two.html", XHTML, ""),
        ("legal", "Text/legal.html", XHTML, ""),
    ]
    files["OEBPS/content.opf"] = opf(
        manifest,
        ["cover", "one", "two", "legal"],
        version="2.0",
        title="Old Book",
        author="Ben Older",
        language="en-US",
        extra_meta='<meta name="cover" content="cover-img"/>',
        guide='<reference type="cover" title="Cover" href="Text/cover.html"/>',
        toc="ncx",
    )
    book = read_epub(write_zip(tmp_path / "old.epub", files))
    assert [c.title for c in book.chapters] == ["The Beginning", "The Middle"]
    assert book.chapters[0].paragraphs == ("It began & it went on.", "Inside", "More of the beginning.")
    # A heading-like first paragraph equal to the title is not repeated either.
    assert book.chapters[1].paragraphs == ("Middle text.",)
    assert book.language == "en"
    assert book.author == "Ben Older"
    assert book.cover == PNG and book.cover_mime == "image/png"
    assert book.skipped == ("Cover (cover)", "Copyright (copyright)")


def test_chinese_epub_joins_wrapped_lines_without_spaces(tmp_path: Path) -> None:
    body = """<p>很久很久以前，
有一座山，
山里有一座庙。</p>
<p>庙里有个老和尚，他说：
“你好！”</p>"""
    path = simple_epub(
        tmp_path / "zh.epub",
        {"第一章 开始": body, "第二章 结束": "<p>故事讲完了。</p>"},
        title="山里的故事",
        author="佚名",
        language="zh-CN",
    )
    book = read_epub(path)
    assert book.language == "zh"
    # Titles are normalized like text: no space between two Han characters.
    assert [c.title for c in book.chapters] == ["第一章开始", "第二章结束"]
    assert book.chapters[0].paragraphs == (
        "很久很久以前，有一座山，山里有一座庙。",
        "庙里有个老和尚，他说：“你好！”",
    )
    assert book.author == "佚名"


def test_epub_without_any_toc_makes_one_chapter_per_document(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/a.xhtml": xhtml("<h1>First Light</h1><p>Dawn came.</p>", title="Test Book"),
        "OEBPS/b.xhtml": xhtml("<p>No heading in this one.</p>", title="Test Book"),
    }
    files["OEBPS/content.opf"] = opf([("a", "a.xhtml", XHTML, ""), ("b", "b.xhtml", XHTML, "")], ["a", "b"])
    book = read_epub(write_zip(tmp_path / "flat.epub", files))
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("First Light", ("Dawn came.",)),
        ("Chapter 2", ("No heading in this one.",)),
    ]


def test_a_spine_item_missing_from_the_archive_is_named_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/c1.xhtml": xhtml("<h1>The Orchard</h1><p>Apples fell all night.</p>"),
        # c2.xhtml is listed in the manifest and the spine but was never put in the archive.
        "OEBPS/c3.xhtml": xhtml("<h1>The Harvest</h1><p>Baskets filled by noon.</p>"),
        "OEBPS/nav.xhtml": nav(
            '<li><a href="c1.xhtml">The Orchard</a></li><li><a href="c2.xhtml">The Storm</a></li>'
            '<li><a href="c3.xhtml">The Harvest</a></li>'
        ),
    }
    manifest = [("nav", "nav.xhtml", XHTML, "nav")] + [(f"c{n}", f"c{n}.xhtml", XHTML, "") for n in (1, 2, 3)]
    # "ghost" is in the spine but not in the manifest at all.
    files["OEBPS/content.opf"] = opf(manifest, ["c1", "c2", "ghost", "c3"])
    monkeypatch.setattr(logging.getLogger("audiobook"), "propagate", True)  # the CLI may have turned it off
    with caplog.at_level(logging.WARNING, logger="audiobook"):
        book = read_epub(write_zip(tmp_path / "holes.epub", files))
    assert [c.title for c in book.chapters] == ["The Orchard", "The Harvest"]
    assert "OEBPS/c2.xhtml (listed in the reading order but missing from the archive)" in book.skipped
    assert "ghost (listed in the reading order but not in the manifest)" in book.skipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("holes.epub" in w and "OEBPS/c2.xhtml" in w and "missing" in w for w in warnings), warnings
    assert any("holes.epub" in w and "ghost" in w for w in warnings), warnings


def test_a_spine_of_only_missing_files_says_so(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {"OEBPS/content.opf": opf([("c1", "c1.xhtml", XHTML, "")], ["c1"])}
    expect_input_error(write_zip(tmp_path / "hollow.epub", files), "OEBPS/c1.xhtml", "missing from the archive")


def test_landmarks_and_epub_types_mark_front_matter(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/title.xhtml": xhtml('<section epub:type="titlepage"><h1>Test Book</h1><p>A novel.</p></section>'),
        "OEBPS/rights.xhtml": xhtml('<section epub:type="copyright-page"><p>Copyright 2020 Ann.</p></section>'),
        "OEBPS/one.xhtml": xhtml("<h1>One</h1><p>The story.</p>"),
        "OEBPS/colophon.xhtml": xhtml("<h1>About this edition</h1><p>Set in Garamond.</p>"),
        "OEBPS/nav.xhtml": nav(
            '<li><a href="title.xhtml">Title</a></li><li><a href="rights.xhtml">Legal</a></li>'
            '<li><a href="one.xhtml">One</a></li><li><a href="colophon.xhtml">About this edition</a></li>',
            landmarks='<li><a epub:type="colophon" href="colophon.xhtml">Colophon</a></li>'
            '<li><a epub:type="bodymatter" href="one.xhtml">Start</a></li>',
        ),
    }
    names = ["title", "rights", "one", "colophon"]
    manifest = [("nav", "nav.xhtml", XHTML, "nav")] + [(n, f"{n}.xhtml", XHTML, "") for n in names]
    files["OEBPS/content.opf"] = opf(manifest, names)
    path = write_zip(tmp_path / "lm.epub", files)
    book = read_epub(path)
    assert [c.title for c in book.chapters] == ["One"]
    assert book.skipped == (
        "Title (title page)",
        "Legal (copyright)",
        "About this edition (colophon)",
    )
    assert [c.title for c in read_epub(path, include_matter=True).chapters] == [
        "Title",
        "Legal",
        "One",
        "About this edition",
    ]


def notes_epub(tmp_path: Path) -> Path:
    """Note references in every form publishers use, endnotes at the end of a chapter's own file, and a notes
    document of its own (listed in the contents, and one that is not)."""
    files: dict[str, str | bytes] = {
        "OEBPS/one.xhtml": xhtml(
            "<h1>One</h1>"
            '<p>A sup link<sup><a href="notes.xhtml#n1">1</a></sup>, a link holding a sup'
            '<a href="notes.xhtml#n2"><sup>2</sup></a>, a named one<a class="footnote-ref" href="#e1">[3]</a>,'
            ' a bare number<a href="notes.xhtml#n4">4</a>, a typed one<a epub:type="noteref" href="#e1">5</a>'
            ' and a role<a role="doc-noteref" href="#e1">6</a>.</p>'
            '<p>Kept: see <a href="two.xhtml#top">the next chapter</a>, x<sup>2</sup> and the 1<sup>st</sup>.</p>'
            '<section epub:type="endnotes" role="doc-endnotes"><ol>'
            '<li epub:type="endnote" id="e1"><p>A note at the end of the chapter.</p></li></ol></section>'
        ),
        "OEBPS/two.xhtml": xhtml('<h1 id="top">Two</h1><p>More story.</p>'),
        "OEBPS/notes.xhtml": xhtml(
            '<section epub:type="endnotes"><h1>Notes</h1><ol>'
            '<li id="n1"><p>The first note.</p></li><li id="n2"><p>The second note.</p></li>'
            '<li id="n4"><p>The fourth note.</p></li></ol></section>'
        ),
        "OEBPS/more.xhtml": xhtml(
            '<div class="footnotes"><p>Translator’s notes nobody listed.</p></div>', title="Translator’s notes"
        ),
        "OEBPS/nav.xhtml": nav(
            '<li><a href="one.xhtml">One</a></li><li><a href="two.xhtml">Two</a></li>'
            '<li><a href="notes.xhtml">Notes</a></li>'
        ),
    }
    names = ["one", "two", "notes", "more"]
    manifest = [("nav", "nav.xhtml", XHTML, "nav")] + [(n, f"{n}.xhtml", XHTML, "") for n in names]
    files["OEBPS/content.opf"] = opf(manifest, names)
    return write_zip(tmp_path / "notes.epub", files)


def test_note_references_are_not_read_and_endnotes_are_back_matter(tmp_path: Path) -> None:
    book = read_epub(notes_epub(tmp_path))
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        (
            "One",
            (
                "A sup link, a link holding a sup, a named one, a bare number, a typed one and a role.",
                "Kept: see the next chapter, x2 and the 1st.",
            ),
        ),
        ("Two", ("More story.",)),
    ]
    assert book.skipped == ("Notes in One (notes)", "Notes (notes)", "Translator’s notes (notes)")


def test_include_matter_reads_the_notes(tmp_path: Path) -> None:
    book = read_epub(notes_epub(tmp_path), include_matter=True)
    assert [c.title for c in book.chapters] == ["One", "Two", "Notes", "Translator’s notes"]
    assert book.chapters[0].paragraphs[-1] == "A note at the end of the chapter."
    assert book.chapters[2].paragraphs == ("The first note.", "The second note.", "The fourth note.")
    assert book.chapters[3].paragraphs == ("Translator’s notes nobody listed.",)
    assert book.skipped == ()


def test_a_notes_document_the_contents_do_not_list_is_left_out(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/one.xhtml": xhtml("<h1>One</h1><p>The story.</p>"),
        "OEBPS/notes.xhtml": xhtml('<aside epub:type="rearnotes"><p>An old-style note.</p></aside>', title="Notes"),
    }
    manifest = [(n, f"{n}.xhtml", XHTML, "") for n in ("one", "notes")]
    files["OEBPS/content.opf"] = opf(manifest, ["one", "notes"])
    book = read_epub(write_zip(tmp_path / "rear.epub", files))  # no contents at all: one chapter per document
    assert [c.title for c in book.chapters] == ["One"]
    assert book.skipped == ("Notes (notes)",)


def test_a_short_chapter_named_like_the_book_is_not_a_title_page(tmp_path: Path) -> None:
    """Only an entry before the story starts can be the title page; a later short chapter that shares the
    book's name is real text."""
    prose = "<p>The corridor was longer than she remembered, and colder.</p>" * 4
    path = simple_epub(
        tmp_path / "door.epub",
        {
            "The Second Door": "<p>by Ann Author</p>",
            "The First Door": prose,
            "The Second Door ": "<p>It opened inward. Nobody had oiled it in years.</p>",
            "The Third Door": prose,
        },
        title="The Second Door",
    )
    book = read_epub(path)
    assert [c.title for c in book.chapters] == ["The First Door", "The Second Door", "The Third Door"]
    assert book.chapters[1].paragraphs == ("It opened inward. Nobody had oiled it in years.",)
    assert book.skipped == ("The Second Door (title page)",)


def test_a_front_entry_named_like_the_book_needs_title_page_evidence(tmp_path: Path) -> None:
    """A short opening story that shares the book's name, with no author line under it, is kept."""
    path = simple_epub(
        tmp_path / "stories.epub",
        {
            "Lanterns": "<p>The lanterns were lit at dusk, one by one, by a boy nobody knew.</p>",
            "Harbour": "<p>The boats came in late.</p>",
            "Snow": "<p>It snowed for a week.</p>",
        },
        title="Lanterns",
    )
    book = read_epub(path)
    assert [c.title for c in book.chapters] == ["Lanterns", "Harbour", "Snow"]
    assert book.skipped == ()


def test_plain_gutenberg_markers_cut_header_and_licence(tmp_path: Path) -> None:
    """Older Gutenberg EPUBs mark their boilerplate only with the START/END lines."""
    path = simple_epub(
        tmp_path / "pg.epub",
        {
            "Chapter 1": "<p>The Project Gutenberg eBook of Test, free to use.</p>"
            "<p>*** START OF THE PROJECT GUTENBERG EBOOK TEST ***</p><p>Once upon a time.</p>",
            "Chapter 2": "<p>They lived happily.</p><p>*** END OF THE PROJECT GUTENBERG EBOOK TEST ***</p>"
            "<p>Section 1. General Terms of Use of Project Gutenberg-tm electronic works.</p>",
        },
        language="eng",
    )
    book = read_epub(path)
    assert [c.paragraphs for c in book.chapters] == [("Once upon a time.",), ("They lived happily.",)]
    assert book.skipped == (
        "Project Gutenberg notice in Chapter 1 (licence)",
        "Project Gutenberg notice in Chapter 2 (licence)",
    )
    assert book.language == "en"  # "eng" is mapped to its two-letter tag
    kept = read_epub(path, include_matter=True)
    assert kept.chapters[1].paragraphs[-1].startswith("Section 1. General Terms")


def test_xhtml_named_entities_without_a_loaded_dtd(tmp_path: Path) -> None:
    """XHTML 1.1 books use &nbsp; and friends, defined in a DTD we never load; sloppy ones omit the DTD."""
    path = simple_epub(tmp_path / "ent.epub", {"One": "<p>x</p>", "Two": "<p>y</p>"})
    with_dtd = (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" '
        '"http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
        "<body><h1>One</h1><p>Caf&eacute;&nbsp;au&nbsp;lait &amp; cr&egrave;me.</p></body></html>"
    )
    without = (
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Two</h1>'
        "<p>Wait&mdash;what&hellip;<br>no XML here</p></body></html>"
    )
    rewrite(path, "OEBPS/c0.xhtml", with_dtd)
    rewrite(path, "OEBPS/c1.xhtml", without)
    book = read_epub(path)
    assert book.chapters[0].paragraphs == ("Café au lait & crème.",)
    assert book.chapters[1].paragraphs == ("Wait—what… no XML here",)


# -- hostile structure in content documents: the whole text, or one clear error ----------------------

ONE = "<p>The ferry left at six, heavy with crates of apples and one patient goat.</p>"
TWO = "<p>Halfway across the fog came down, and the captain rang the bell every minute.</p>"
THREE = "<p>They landed at noon, and the goat was the first one down the gangway.</p>"
STORY = ["The ferry left", "Halfway across", "They landed"]


def story_epub(tmp_path: Path, middle: str, *, sloppy: bool = False, name: str = "ferry.epub") -> Path:
    """A one-chapter EPUB whose second paragraph sits inside ``middle`` (where "{}" is). ``sloppy`` adds a
    stray <br>, so the XHTML is not well-formed and goes to the forgiving HTML parser."""
    path = simple_epub(tmp_path / name, {"The Ferry": "<p>x</p>"})
    body = "<h1>The Ferry</h1>" + ("<br>" if sloppy else "") + ONE + middle.replace("{}", TWO) + THREE
    rewrite(path, "OEBPS/c0.xhtml", xhtml(body))
    return path


def story_read_whole(path: Path) -> None:
    paragraphs = read_epub(path).chapters[0].paragraphs
    assert [p.split(",")[0] for p in paragraphs] == [
        "The ferry left at six",
        "Halfway across the fog came down",
        "They landed at noon",
    ], paragraphs


@pytest.mark.parametrize("sloppy", [False, True])
def test_deep_nesting_in_a_chapter_is_refused_not_cut_short(tmp_path: Path, sloppy: bool) -> None:
    # The XML parser failed at 256 levels and the HTML fallback stopped there: the rest of the chapter was gone.
    path = story_epub(tmp_path, "<div>" * 300 + "{}" + "</div>" * 300, sloppy=sloppy)
    expect_input_error(path, "OEBPS/c0.xhtml", "nested more than 256 levels", "the limit is 256")


@pytest.mark.parametrize("sloppy", [False, True])
def test_nesting_within_the_limit_is_read_whole(tmp_path: Path, sloppy: bool) -> None:
    # html, body and 253 divs around the paragraph: 256 levels.
    story_read_whole(story_epub(tmp_path, "<div>" * 253 + "{}" + "</div>" * 253, sloppy=sloppy))


def test_a_text_over_ten_megabytes_in_a_chapter_is_refused(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "OEBPS/content.opf": opf([("c0", "c0.xhtml", XHTML, ""), ("c1", "c1.xhtml", XHTML, "")], ["c0", "c1"]),
        "OEBPS/c0.xhtml": xhtml("<h1>The Ferry</h1>" + ONE),
    }
    path = write_zip(tmp_path / "long.epub", files)
    huge = " ".join(f"word{n % 1000}" for n in range(1_500_000))  # ~11 MB in one text node
    with zipfile.ZipFile(path, "a") as zf:  # stored, so the zip-bomb ratio check does not get there first
        zf.writestr("OEBPS/c1.xhtml", xhtml(f"<p>{huge}</p>"), compress_type=zipfile.ZIP_STORED)
    expect_input_error(path, "OEBPS/c1.xhtml", "10 MB")


def test_deep_nesting_in_the_package_document_says_so(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "deepopf.epub", {"One": "<p>Text.</p>"})
    deep = opf([("c0", "c0.xhtml", XHTML, "")], ["c0"], extra_meta="<meta>" * 300 + "</meta>" * 300)
    rewrite(path, "OEBPS/content.opf", deep)
    expect_input_error(path, "content.opf", "nested more than 256 levels")


@pytest.mark.parametrize("end", ["</body></html>", "</html>"])
def test_text_after_a_closing_html_tag_in_sloppy_xhtml_is_read(tmp_path: Path, end: str) -> None:
    story_read_whole(story_epub(tmp_path, end + "{}", sloppy=True))


def test_self_closed_page_markers_in_sloppy_xhtml_hide_nothing(tmp_path: Path) -> None:
    marker = '<span epub:type="pagebreak" id="p7" title="7"/><a id="here"/>'
    story_read_whole(story_epub(tmp_path, marker + "{}" + marker, sloppy=True))


@pytest.mark.parametrize(
    ("opening", "what"),
    [("<script>", "<script>"), ("<!--", "comment"), ('<span epub:type="pagebreak" title="7">', "<span>")],
)
def test_an_unclosed_construct_in_sloppy_xhtml_is_refused(tmp_path: Path, opening: str, what: str) -> None:
    path = story_epub(tmp_path, opening + "{}", sloppy=True)
    expect_input_error(path, "OEBPS/c0.xhtml", what, "never closed")


def test_a_nul_byte_in_a_chapter_is_dropped_not_the_chapter(tmp_path: Path) -> None:
    story_read_whole(story_epub(tmp_path, "{}".replace("{}", "{}\x00")))


def test_sloppy_xhtml_is_decoded_in_its_declared_encoding(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "latin.epub", {"One": "<p>x</p>"})
    page = (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body>'
        "<h1>One</h1><p>Cr\u00e8me br\u00fbl\u00e9e<br>for the na\u00efve.</p></body></html>"
    )
    rewrite(path, "OEBPS/c0.xhtml", page.encode("iso-8859-1"))
    assert read_epub(path).chapters[0].paragraphs == ("Crème brûlée for the naïve.",)


def test_titles_are_kept_as_data(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "t.epub", {"../../etc/passwd": "<p>One.</p>", "CON": "<p>Two.</p>"})
    assert [c.title for c in read_epub(path).chapters] == ["../../etc/passwd", "CON"]


def test_font_obfuscation_is_not_drm(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "fonts.epub", {"One": "<p>Readable.</p>"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(
            "META-INF/encryption.xml",
            encryption("OEBPS/fonts/serif.otf", "http://www.idpf.org/2008/embedding"),
        )
    assert read_epub(path).chapters[0].paragraphs == ("Readable.",)


# -- hostile and broken files ----------------------------------------------------------------------


def encryption(uri: str, algorithm: str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc") -> str:
    return f"""<?xml version="1.0"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
            xmlns:enc="http://www.w3.org/2001/04/xmlenc#">
  <enc:EncryptedData><enc:EncryptionMethod Algorithm="{algorithm}"/>
    <enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData>
</encryption>"""


def expect_input_error(path: Path, *words: str) -> str:
    with pytest.raises(InputError) as info:
        read_epub(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "plain.epub"
    path.write_text("just some text, not a zip")
    expect_input_error(path, "not an EPUB")


def test_corrupt_zip(tmp_path: Path) -> None:
    good = simple_epub(tmp_path / "good.epub", {"One": "<p>Text.</p>" * 50})
    path = tmp_path / "cut.epub"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect_input_error(path, "not an EPUB")


def test_corrupt_member_data(tmp_path: Path) -> None:
    good = simple_epub(tmp_path / "good.epub", {"One": "<p>Some text that compresses a bit.</p>" * 200})
    data = bytearray(good.read_bytes())
    # Scribble over the middle of the compressed chapter, leaving the directory intact.
    offset = data.find(b"OEBPS/c0.xhtml") + 200
    data[offset : offset + 40] = b"\xff" * 40
    path = tmp_path / "scribbled.epub"
    path.write_bytes(bytes(data))
    expect_input_error(path, "c0.xhtml")


def test_drm_encrypted_content(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "drm.epub", {"One": "<p>Secret.</p>"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("META-INF/encryption.xml", encryption("OEBPS/c0.xhtml"))
    expect_input_error(path, "DRM", "c0.xhtml")


def test_drm_rights_file(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "adept.epub", {"One": "<p>Secret.</p>"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("META-INF/rights.xml", "<rights/>")
    expect_input_error(path, "DRM", "rights.xml")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT-42")
    return path


def test_xxe_in_the_package_document(tmp_path: Path, secret: Path) -> None:
    path = simple_epub(tmp_path / "xxe.epub", {"One": "<p>Text.</p>"})
    hostile = opf([("c0", "c0.xhtml", XHTML, "")], ["c0"], title="&xxe;").replace(
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE package [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    )
    rewrite(path, "OEBPS/content.opf", hostile)
    message = expect_input_error(path, "entities")
    assert "TOP-SECRET" not in message


def test_xxe_in_a_content_document_never_reaches_the_text(tmp_path: Path, secret: Path) -> None:
    path = simple_epub(tmp_path / "xxe2.epub", {"One": "<p>Text.</p>", "Two": "<p>More.</p>"})
    hostile = (
        f'<?xml version="1.0"?>\n<!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><h1>Two</h1><p>&xxe;</p></body></html>'
    )
    rewrite(path, "OEBPS/c1.xhtml", hostile)
    message = expect_input_error(path, "entities", "c1.xhtml")
    assert "TOP-SECRET" not in message


def test_billion_laughs(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "lol.epub", {"One": "<p>Text.</p>"})
    entities = '<!ENTITY lol0 "lol">' + "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    hostile = (
        f'<?xml version="1.0"?>\n<!DOCTYPE html [{entities}]>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>&lol9;</p></body></html>'
    )
    rewrite(path, "OEBPS/c0.xhtml", hostile)
    expect_input_error(path, "entities")


def rewrite(path: Path, member: str, data: str | bytes) -> None:
    """Replace one member of a zip (zipfile cannot overwrite in place)."""
    with zipfile.ZipFile(path) as zf:
        contents = {info.filename: zf.read(info) for info in zf.infolist()}
    contents[member] = data.encode() if isinstance(data, str) else data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in contents.items():
            zf.writestr(name, content)


def test_zip_bomb_declared_size(tmp_path: Path) -> None:
    """A small member whose central directory claims 4 GB: refused before a byte is inflated."""
    path = simple_epub(tmp_path / "liar.epub", {"One": "<p>Text.</p>"})
    claim_huge_size(path, "OEBPS/c0.xhtml")
    expect_input_error(path, "zip bomb", "c0.xhtml")


def test_zip_bomb_compression_ratio(tmp_path: Path) -> None:
    """10 MB of zeros deflate to ~10 KB: refused by its ratio although under the size limit."""
    path = simple_epub(tmp_path / "zeros.epub", {"One": "<p>Text.</p>"})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("OEBPS/padding.xhtml", bytes(10 * 1024 * 1024))
    expect_input_error(path, "zip bomb", "expands")


def test_too_many_members_is_refused_before_listing_them(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "many.epub", {"One": "<p>Text.</p>"})
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, eocd + 8, 60000, 60000)  # entries on this disk, entries in total
    path.write_bytes(bytes(data))
    expect_input_error(path, "60000 files")


def test_total_uncompressed_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safezip, "MAX_TOTAL_BYTES", 2000)
    path = simple_epub(tmp_path / "big.epub", {"One": "<p>Words and more words.</p>" * 100})
    expect_input_error(path, "in total")


@pytest.mark.parametrize("name", ["../../evil.xhtml", "/etc/evil.xhtml", "OEBPS/../../evil.xhtml", "C:/evil"])
def test_member_names_that_climb_out(tmp_path: Path, name: str) -> None:
    path = simple_epub(tmp_path / "climb.epub", {"One": "<p>Text.</p>"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name), "<p>evil</p>")
    expect_input_error(path, "outside the book")
    assert not (tmp_path.parent / "evil.xhtml").exists()


def test_missing_container(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {"OEBPS/content.opf": opf([], [])}
    expect_input_error(write_zip(tmp_path / "nocontainer.epub", files, container=None), "container.xml")


def test_missing_package_document(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "noopf.epub", {"OEBPS/c0.xhtml": xhtml("<p>x</p>")})
    expect_input_error(path, "content.opf", "missing")


def test_malformed_package_document(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "badopf.epub", {"OEBPS/content.opf": "<package><manifest>"})
    expect_input_error(path, "content.opf", "XML")


def test_no_readable_text(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "empty.epub", {"Pictures": '<img src="a.png" alt="a.png"/>'})
    expect_input_error(path, "no readable text")


def test_only_matter_says_so(tmp_path: Path) -> None:
    path = simple_epub(tmp_path / "matter.epub", {"Contents": "<p>One, Two, Three</p>"})
    expect_input_error(path, "no readable text", "table of contents")
