"""Damaged PDF, DOCX, FB2 and MOBI files: bytes flipped, cut short, spliced with others. Whatever the damage,
``read_book`` gives a ``Book`` or refuses with one ``InputError`` line naming the file; never another exception
(a traceback), and never hangs."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import docx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.readers import read_book
from tests.mobibooks import mobi_file
from tests.pdfbooks import book_pdf, sentences
from tests.test_fb2 import BINARY, BODY, fb2


@functools.cache
def originals(tmp: str) -> dict[str, bytes]:
    folder = Path(tmp)
    pdf = folder / "seed.pdf"
    book_pdf(pdf, [("One", [sentences(1, 4)]), ("Two", [sentences(2, 4)])])
    document = docx.Document()
    document.add_heading("One", level=1)
    document.add_paragraph(sentences(3, 3))
    document.save(str(folder / "seed.docx"))
    markup = (
        "<html><body><h2>One</h2><p>" + sentences(4, 20) + "</p><mbp:pagebreak/><h2>Two</h2><p>Two.</p></body></html>"
    )
    return {
        ".pdf": pdf.read_bytes(),
        ".docx": (folder / "seed.docx").read_bytes(),
        ".fb2": fb2(BODY, extra=BINARY).encode(),
        ".mobi": mobi_file(markup),
    }


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "splice", "zero"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at:]
        elif kind == "splice":
            other = draw(st.binary(min_size=1, max_size=64))
            out[at:at] = other
        elif kind == "zero":
            out[at : at + draw(st.integers(1, 64))] = bytes(min(64, len(out) - at))
    return bytes(out)


@pytest.mark.parametrize("suffix", [".pdf", ".docx", ".fb2", ".mobi"])
def test_damaged_books_are_read_or_refused_in_one_line(tmp_path_factory: pytest.TempPathFactory, suffix: str) -> None:
    seeds = originals(str(tmp_path_factory.mktemp("seeds")))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        damaged = data.draw(damage(seeds[suffix]))
        path = tmp_path_factory.mktemp("fuzz") / f"book{suffix}"
        path.write_bytes(damaged)
        try:
            book = read_book(path)
        except InputError as exc:
            assert "\n" not in str(exc) and path.name in str(exc), str(exc)
        else:
            assert book.chapters

    check()


def test_a_docx_member_that_is_not_xml_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "odd.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b"\x00\x01 not xml at all")
    with pytest.raises(InputError, match="odd.docx"):
        read_book(path)
