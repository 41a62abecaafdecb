"""The FB2 reader, on books written here: sections and titles make chapters (nested ones under their part),
notes bodies and note references are never read, the cover comes from its <binary>, <description> fills the
book's metadata; hostile files end in one line."""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.readers import read_book
from tests.helpers import run_cli, tiny_png

COVER = tiny_png()


def fb2(body: str, *, description: str | None = None, extra: str = "", declaration: str = "") -> str:
    description = (
        description
        if description is not None
        else (
            "<description><title-info><genre>sf_fantasy</genre><genre>adventure</genre>"
            "<author><first-name>Анна</first-name><last-name>Петрова</last-name></author>"
            "<book-title>Дом у моря</book-title>"
            "<annotation><p>A story of a lighthouse.</p><p>And of its keeper.</p></annotation>"
            '<date value="2021-03-04">2021</date>'
            '<coverpage><image l:href="#cover.png"/></coverpage><lang>ru</lang>'
            '<sequence name="Маяки" number="2"/></title-info>'
            "<publish-info><publisher>Северное издательство</publisher><year>2022</year><isbn>978-5-00000-000-0</isbn>"
            "</publish-info></description>"
        )
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n{declaration}'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0" xmlns:l="http://www.w3.org/1999/xlink">'
        f"{description}{body}{extra}</FictionBook>"
    )


BODY = (
    "<body><title><p>Анна Петрова</p><p>Дом у моря</p></title>"
    "<section><title><p>Часть первая</p><p>Берег</p></title>"
    "<epigraph><p>Море помнит всё.</p><text-author>Старая поговорка</text-author></epigraph>"
    "<section><title><p>Глава 1</p></title>"
    '<p>Утром пришёл корабль.<a l:href="#n1" type="note">[1]</a> Все вышли на берег.</p>'
    "<empty-line/><p>Маяк молчал.</p></section>"
    "<section><title><p>Глава 2</p></title>"
    '<p>Вечером зажгли огонь.<a l:href="#n2">2</a></p>'
    "<poem><stanza><v>Свет над водой,</v><v>свет над волной.</v></stanza></poem></section></section>"
    "<section><title><p>Часть вторая</p></title><section><title><p>Глава 3</p></title>"
    "<p>Зимой было тихо.</p><subtitle>* * *</subtitle><p>Весной вернулись птицы.</p></section></section>"
    "</body>"
    '<body name="notes"><title><p>Примечания</p></title>'
    '<section id="n1"><title><p>1</p></title><p>Корабль назывался «Надежда».</p></section>'
    '<section id="n2"><title><p>2</p></title><p>Огонь горел всю ночь.</p></section></body>'
)
BINARY = f'<binary id="cover.png" content-type="image/png">{base64.b64encode(COVER).decode()}</binary>'


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def spoken(book) -> str:
    return "\n".join(p for c in book.chapters for p in c.paragraphs)


def test_sections_make_chapters_under_their_parts_and_notes_are_not_read(tmp_path: Path) -> None:
    # Before this reader an .fb2 was read as plain text: one chapter named after the file, its markup aloud.
    book = read_book(write(tmp_path / "sea.fb2", fb2(BODY, extra=BINARY)))
    assert [(c.title, c.part) for c in book.chapters] == [
        ("Часть первая. Берег", None),  # the part's epigraph, under the part's own title
        ("Глава 1", "Часть первая. Берег"),
        ("Глава 2", "Часть первая. Берег"),
        ("Глава 3", "Часть вторая"),
    ]
    assert [list(c.paragraphs) for c in book.chapters] == [
        ["Море помнит всё.", "Старая поговорка"],
        ["Утром пришёл корабль. Все вышли на берег.", "Маяк молчал."],
        ["Вечером зажгли огонь.", "Свет над водой,", "свет над волной."],
        ["Зимой было тихо.", "Весной вернулись птицы."],
    ]
    text = spoken(book)
    assert "<" not in text and "Надежда" not in text and "всю ночь" not in text and "[1]" not in text
    assert book.skipped == ("Notes (2 notes; not read)",)


def test_description_gives_title_authors_language_cover_and_info(tmp_path: Path) -> None:
    book = read_book(write(tmp_path / "sea.fb2", fb2(BODY, extra=BINARY)))
    assert (book.title, book.author, book.language) == ("Дом у моря", "Анна Петрова", "ru")
    assert (book.cover, book.cover_mime) == (COVER, "image/png")
    info = book.info
    assert info.description == "A story of a lighthouse.\n\nAnd of its keeper."
    assert info.subjects == ("sf_fantasy", "adventure")
    assert (info.series, info.series_index) == ("Маяки", "2")
    assert (info.publisher, info.date, info.isbn) == ("Северное издательство", "2022", "978-5-00000-000-0")


def test_numbered_sections_inside_a_chapter_are_its_scenes(tmp_path: Path) -> None:
    body = (
        "<body><section><title><p>Глава 1</p></title><p>Начало.</p>"
        "<section><title><p>1</p></title><p>Первая сцена.</p></section>"
        "<section><title><p>* * *</p></title><p>Вторая сцена.</p></section></section>"
        "<section><title><p>Глава 2</p></title><section><p>Без заголовка.</p></section></section></body>"
    )
    book = read_book(write(tmp_path / "scenes.fb2", fb2(body)))
    assert [(c.title, c.part, c.paragraphs) for c in book.chapters] == [
        ("Глава 1", None, ("Начало.", "Первая сцена.", "Вторая сцена.")),
        ("Глава 2", None, ("Без заголовка.",)),
    ]


def test_flat_sections_without_titles_and_a_windows_1251_file(tmp_path: Path) -> None:
    body = "<body><section><p>Первый.</p></section><section><p>Второй.</p></section></body>"
    path = tmp_path / "plain.fb2"
    path.write_bytes(fb2(body, description="").replace('encoding="utf-8"', 'encoding="windows-1251"').encode("cp1251"))
    book = read_book(path)
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("Chapter 1", ("Первый.",)),
        ("Chapter 2", ("Второй.",)),
    ]
    assert book.title == "plain" and book.cover is None


def test_a_picture_over_the_parsers_text_limit_does_not_cost_the_book(tmp_path: Path) -> None:
    # 12 MB of base64 in one <binary>: past libxml2's 10 MB a text node, which would refuse the whole file.
    picture = '<binary id="map.jpg" content-type="image/jpeg">' + "QUFB" * (3 * 1024 * 1024) + "</binary>"
    book = read_book(write(tmp_path / "atlas.fb2", fb2(BODY, extra=BINARY + picture)))
    assert [c.title for c in book.chapters][1:] == ["Глава 1", "Глава 2", "Глава 3"]
    assert book.cover == COVER


def test_a_zipped_fb2_reads_the_same(tmp_path: Path) -> None:
    plain = read_book(write(tmp_path / "sea.fb2", fb2(BODY, extra=BINARY)))
    zipped = tmp_path / "sea.fb2.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sea.fb2", fb2(BODY, extra=BINARY))
    book = read_book(zipped)
    assert book.chapters == plain.chapters and book.title == plain.title and book.cover == COVER


def test_an_fb2_named_xml_or_without_suffix_is_recognised_by_its_content(tmp_path: Path) -> None:
    for name in ("sea.xml", "sea", "sea.txt"):
        book = read_book(write(tmp_path / name, fb2(BODY)))
        assert [c.title for c in book.chapters][1:] == ["Глава 1", "Глава 2", "Глава 3"], name


BOMB = (
    '<!DOCTYPE FictionBook [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>\n'
)
XXE = '<!DOCTYPE FictionBook [<!ENTITY secret SYSTEM "file:///etc/hostname">]>\n'


@pytest.mark.parametrize(("declaration", "entity"), [(BOMB, "&d;"), (XXE, "&secret;")], ids=["bomb", "xxe"])
def test_entity_bomb_and_external_entity_are_refused_in_one_line_through_the_cli(
    tmp_path: Path, declaration: str, entity: str
) -> None:
    path = write(
        tmp_path / "evil.fb2", fb2(f"<body><section><p>{entity}</p></section></body>", declaration=declaration)
    )
    with pytest.raises(InputError, match="declares XML entities"):
        read_book(path)
    result = run_cli("plan", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "evil.fb2" in lines[0] and "entities" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_zip_bomb_fb2_zip_and_a_zip_of_two_books_are_refused(tmp_path: Path) -> None:
    from tests.helpers import claim_huge_size

    bomb = tmp_path / "bomb.fb2.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.fb2", fb2(BODY))
    claim_huge_size(bomb, "bomb.fb2")
    with pytest.raises(InputError, match="zip bomb"):
        read_book(bomb)
    two = tmp_path / "two.fb2.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.fb2", fb2(BODY))
        zf.writestr("b.fb2", fb2(BODY))
    with pytest.raises(InputError, match="holds 2 .fb2 files"):
        read_book(two)


def test_notes_only_book_and_other_xml_are_refused(tmp_path: Path) -> None:
    notes_only = fb2('<body name="notes"><section id="n1"><p>A note.</p></section></body>')
    with pytest.raises(InputError, match="no readable text"):
        read_book(write(tmp_path / "notes.fb2", notes_only))
    svg = write(
        tmp_path / "drawing.txt", '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><text>Hi</text></svg>'
    )
    with pytest.raises(InputError, match=r"XML document \(root <svg>\)"):
        read_book(svg)
