"""The MOBI reader, on Kindle books built by hand here (tests/mobibooks.py; no pip package writes MOBI):
chapters at page breaks (MOBI 6) or at each XHTML file of the text flow (KF8), metadata and cover from EXTH,
PalmDOC decompression and trailing entries, nothing from the CSS flow, the contents page or note references;
DRM and damage refused in one line through the CLI."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers import read_book
from pipeline.readers.mobi import palmdoc_decompress
from tests.helpers import run_cli, tiny_png
from tests.mobibooks import mobi_file, palmdoc_compress
from tests.pdfbooks import sentences

COVER = tiny_png()
CHAPTERS = [
    ("Chapter One: The Harbour", [sentences(31, 40), sentences(32, 25)]),  # over 4 KB: several text records
    ("Chapter Two: Наш маяк", ["Свет горел всю ночь — и утром тоже.", sentences(33, 30)]),
]
META = [
    (100, "Ada Example"),
    (101, "Harbour Press"),
    (103, "<p>A <b>quiet</b> book.</p>"),
    (104, "9780000000002"),
    (105, "Sea stories"),
    (106, "2020-05-01"),
    (113, "B000000001"),
    (524, "en-GB"),
    (503, "The Lantern Keeper"),
]


def mobi7_markup() -> str:
    contents = "<p><a filepos=0000000100>Chapter One</a></p><p><a filepos=0000002000>Chapter Two</a></p>"
    title_page = "<h1>The Lantern Keeper</h1><p>by Ada Example</p><p>Harbour Press, 2020</p>"
    parts = ["<html><head><guide></guide></head><body>", title_page, f"<mbp:pagebreak/><h2>Contents</h2>{contents}"]
    for title, paragraphs in CHAPTERS:
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        parts.append(f"<mbp:pagebreak/><h2>{title}</h2>{body.replace('</p>', '<sup><a filepos=9>1</a></sup></p>', 1)}")
    return "".join(parts) + "</body></html>"


def expected() -> list[tuple[str, list[str]]]:
    return [(t, p) for t, p in CHAPTERS]


def test_palmdoc_round_trip() -> None:
    rng = random.Random(5)
    for data in (
        sentences(1, 30).encode(),
        "Ünïcödé — 灯塔 text with bytes over 0x7f".encode() * 20,
        bytes(rng.randrange(256) for _ in range(3000)),
    ):
        packed = palmdoc_compress(data)
        assert palmdoc_decompress(packed) == data
    assert len(palmdoc_compress(sentences(1, 30).encode())) < len(sentences(1, 30).encode())


@pytest.mark.parametrize("compress", [True, False], ids=["palmdoc", "uncompressed"])
def test_a_mobi6_book_reads_chapters_metadata_and_cover(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "lantern.mobi"
    path.write_bytes(mobi_file(mobi7_markup(), metadata=META, compress=compress, cover=COVER))
    book = read_book(path)
    assert [(c.title, list(c.paragraphs)) for c in book.chapters] == expected()
    assert book.skipped == ("The Lantern Keeper (title page)", "Contents (contents)")
    assert (book.title, book.author, book.language) == ("The Lantern Keeper", "Ada Example", "en")
    assert (book.cover, book.cover_mime) == (COVER, "image/png")
    info = book.info
    assert (info.publisher, info.isbn, info.asin, info.date) == (
        "Harbour Press",
        "9780000000002",
        "B000000001",
        "2020-05-01",
    )
    assert (info.description, info.subjects) == ("A quiet book.", ("Sea stories",))


def test_a_kf8_book_reads_its_text_flow_only(tmp_path: Path) -> None:
    files = "".join(
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head>'
        f'<body aid="0"><h1>{title}</h1>{"".join(f"<p>{p}</p>" for p in paragraphs)}</body></html>'
        for title, paragraphs in CHAPTERS
    )
    css = "p { text-indent: 1em } h1 { font-size: 2em } .secret { content: 'never read this' }"
    path = tmp_path / "lantern.azw3"
    path.write_bytes(mobi_file(files, metadata=META, version=8, css=css))
    book = read_book(path)
    assert [(c.title, list(c.paragraphs)) for c in book.chapters] == expected()
    assert "never read" not in " ".join(p for c in book.chapters for p in c.paragraphs)


def test_a_drm_book_is_refused_in_one_line_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "locked.azw"
    path.write_bytes(mobi_file(mobi7_markup(), encryption=2))
    with pytest.raises(InputError, match="DRM-protected"):
        read_book(path)
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "locked.azw: the Kindle book is DRM-protected" in lines[0], result.stderr


def test_damaged_and_huff_cdic_books_are_refused(tmp_path: Path) -> None:
    good = mobi_file(mobi7_markup())
    cut = tmp_path / "cut.mobi"
    cut.write_bytes(good[:200])
    with pytest.raises(InputError, match="cut.mobi: the MOBI book is damaged"):
        read_book(cut)
    huff = bytearray(good)
    rec0 = int.from_bytes(huff[78:82], "big")
    huff[rec0 : rec0 + 2] = (17480).to_bytes(2, "big")
    path = tmp_path / "huff.mobi"
    path.write_bytes(bytes(huff))
    with pytest.raises(InputError, match="HUFF/CDIC"):
        read_book(path)
    bad = tmp_path / "bad.mobi"
    # A back-reference before any text: what a damaged or hostile record holds.
    bad.write_bytes(mobi_file("qqq", trailing=False).replace(b"qqq", b"\x80\x09 "))
    with pytest.raises(InputError, match="damaged"):
        read_book(bad)


def test_a_plain_palmdoc_e_text_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "etext.prc"
    path.write_bytes(
        mobi_file("First paragraph,\nhard-wrapped.\n\nSecond <one> & more.\n", palmdoc=True, trailing=False)
    )
    book = read_book(path)
    assert [c.paragraphs for c in book.chapters] == [("First paragraph, hard-wrapped.", "Second <one> & more.")]


def test_a_mobi_under_a_txt_name_is_read_as_a_mobi(tmp_path: Path) -> None:
    path = tmp_path / "lantern.txt"
    path.write_bytes(mobi_file(mobi7_markup()))
    assert [c.title for c in read_book(path).chapters] == [t for t, _ in CHAPTERS]
