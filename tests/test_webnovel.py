"""Plain-text books as reading sites hand them out: boilerplate between the chapters, a contents list at the top
that repeats every heading, volumes above chapters, named chapters, large Chinese numerals, bare numeral
headings; and a generated 2,000-chapter, 5-million-character book. Every text is written for these tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models import Book
from pipeline.readers import read_book
from pipeline.readers.text import cn_number, parse_heading, parse_plain_text
from tests.webnovel import CONTINUED, END_MARKERS, MENTION, VOTES, WebNovel, chinese_number, webnovel

SITE_NOVEL = """书名：灯下的城
作者：试写者

第一章 夜雨
　　雨下了一整夜，他坐在窗边数着屋檐上的水滴。
天才一秒记住本站地址：www.example.com
　　她推门进来，把伞靠在墙角。
　　他在信的末尾写下“本章完”三个字，然后合上了本子。
(本章完)
求月票！

第二章 晨钟
　　钟声响起的时候，城门开了。
最新章节请到 www.example.net 阅读，更新最快。
https://www.example.org/book/1/
（未完待续。）
"""


def titles(text: str, **kwargs: bool) -> list[str]:
    return [c.title for c in parse_plain_text(text, default_title="T", **kwargs).chapters]


def test_site_boilerplate_is_left_out_and_counted_by_kind() -> None:
    book = parse_plain_text(SITE_NOVEL, default_title="T")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        (
            "第一章 夜雨",
            (
                "雨下了一整夜，他坐在窗边数着屋檐上的水滴。",
                "她推门进来，把伞靠在墙角。",
                "他在信的末尾写下“本章完”三个字，然后合上了本子。",  # a mention inside a sentence stays
            ),
        ),
        ("第二章 晨钟", ("钟声响起的时候，城门开了。",)),
    ]
    assert book.skipped == (
        "end-of-chapter markers (1 line)",
        "to-be-continued markers (1 line)",
        "remember-this-site lines (1 line)",
        "site advertisements (1 line)",
        "site addresses (1 line)",
        "requests for votes (1 line)",
    )


def test_include_matter_keeps_the_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "site.txt"
    path.write_text(SITE_NOVEL, encoding="utf-8")
    book = read_book(path, include_matter=True)
    text = "\n".join(p for c in book.chapters for p in c.paragraphs)
    assert "(本章完)" in text and "求月票！" in text and "www.example.net" in text
    assert book.skipped == ()
    assert read_book(path).skipped[0] == "end-of-chapter markers (1 line)"


CONTENTS_AT_TOP = """书名：灯下的城

{contents_line}第一卷 出城
第一章 夜雨
第二章 晨钟
第二卷 远行
第一章 渡口
第二章 山门
尾声

第一卷 出城

第一章 夜雨

　　雨下了一整夜。

第二章 晨钟

　　钟声响起。

第二卷 远行

第一章 渡口

　　船靠了岸。

第二章 山门

　　山门很高。

尾声

　　他回来了。
"""


@pytest.mark.parametrize("contents_line", ["目录\n", ""])
def test_contents_list_at_the_top_is_not_read(contents_line: str) -> None:
    """With or without a 目录 line; chapter numbers restart in each volume, so the list ends where its first
    entry comes back, not at the second volume's 第一章."""
    book = parse_plain_text(CONTENTS_AT_TOP.format(contents_line=contents_line), default_title="T")
    assert [(c.title, c.part, c.paragraphs) for c in book.chapters] == [
        ("第一章 夜雨", "第一卷 出城", ("雨下了一整夜。",)),
        ("第二章 晨钟", "第一卷 出城", ("钟声响起。",)),
        ("第一章 渡口", "第二卷 远行", ("船靠了岸。",)),
        ("第二章 山门", "第二卷 远行", ("山门很高。",)),
        ("尾声", "第二卷 远行", ("他回来了。",)),
    ]
    assert [c.index for c in book.chapters] == [1, 2, 3, 4, 5]  # numbered through the book
    lines = 8 if contents_line else 7
    assert book.skipped == (f"table of contents ({lines} lines)",)


def test_contents_list_in_one_block_without_blank_lines() -> None:
    text = "Chapter 1: The Start\nChapter 2: The Middle\nChapter 3: The End\n\n"
    text += (
        "Chapter 1: The Start\n\nIt began.\n\nChapter 2: The Middle\n\nIt went on.\n\nChapter 3: The End\n\nIt ended.\n"
    )
    book = parse_plain_text(text, default_title="T")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("Chapter 1. The Start", ("It began.",)),
        ("Chapter 2. The Middle", ("It went on.",)),
        ("Chapter 3. The End", ("It ended.",)),
    ]
    assert book.skipped == ("table of contents (3 lines)",)


def test_a_run_of_headings_whose_first_never_comes_back_is_left_alone() -> None:
    """Three part labels in a row are not a contents list unless the first one repeats; nothing is lost."""
    text = "第一卷 出城\n第二卷 远行\n第三卷 归来\n\n第一章 夜雨\n\n　　雨下了一整夜。\n"
    book = parse_plain_text(text, default_title="T")
    assert [(c.title, c.part) for c in book.chapters] == [("第一章 夜雨", "第三卷 归来")]
    assert book.skipped == ()


def test_a_volume_with_text_of_its_own_is_a_chapter_of_that_volume() -> None:
    lines = [
        "第一卷 出城",
        "　　这一卷写他离开的那年。",
        "第一章 夜雨",
        "　　雨下了一整夜。",
        "第二卷 远行",
        "第二章 渡口",
    ]
    text = "\n\n".join([*lines, "　　船靠了岸。"])
    book = parse_plain_text(text, default_title="T")
    assert [(c.index, c.title, c.part) for c in book.chapters] == [
        (1, "第一卷 出城", "第一卷 出城"),
        (2, "第一章 夜雨", "第一卷 出城"),
        (3, "第二章 渡口", "第二卷 远行"),
    ]


def test_volumes_alone_are_the_chapters() -> None:
    """A book divided only into 卷 has no chapters below them: the volumes are the chapters, with no part."""
    text = "第一卷 出城\n\n　　他走了。\n\n第二卷 归来\n\n　　他回来了。\n"
    book = parse_plain_text(text, default_title="T")
    assert [(c.title, c.part) for c in book.chapters] == [("第一卷 出城", None), ("第二卷 归来", None)]


def test_numbered_volumes_with_only_named_chapters_beside_them_are_chapters() -> None:
    text = "序章\n\n　　开始。\n\n第一篇 出城\n\n　　他走了。\n\n第二篇 归来\n\n　　他回来了。\n"
    book = parse_plain_text(text, default_title="T")
    assert [(c.title, c.part) for c in book.chapters] == [("序章", None), ("第一篇 出城", None), ("第二篇 归来", None)]


def test_english_parts_name_their_chapters() -> None:
    text = "PART ONE\n\nCHAPTER 1\n\nIt began.\n\nCHAPTER 2\n\nIt went on.\n\nPART TWO\n\nCHAPTER 3\n\nIt ended.\n"
    book = parse_plain_text(text, default_title="T")
    assert [(c.title, c.part) for c in book.chapters] == [
        ("Chapter 1", "Part One"),
        ("Chapter 2", "Part One"),
        ("Chapter 3", "Part Two"),
    ]


def test_named_chapters_and_large_numerals() -> None:
    text = "\n\n".join(
        [
            "楔子",
            "　　很久以前。",
            "引子 山雨",
            "　　风先到了。",
            "序章：夜航",
            "　　船出发了。",
            "第一千二百零三章 远方",
            "　　他走了很远。",
            "第1204章 归途",
            "　　他往回走。",
            "尾声",
            "　　故事结束了。",
            "番外一 旧事",
            "　　那年冬天。",
            "番外篇：新年",
            "　　烟花很亮。",
            "后记",
            "　　谢谢读到这里的人。",
        ]
    )
    assert titles(text) == [
        "楔子",
        "引子 山雨",
        "序章 夜航",
        "第一千二百零三章 远方",
        "第1204章 归途",
        "尾声",
        "番外一 旧事",
        "番外篇 新年",
        "后记",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("第一千二百零三章 远方", "第一千二百零三章 远方"),
        ("第两百章", "第两百章"),
        ("第十万章", "第十万章"),
        ("第一卷　潮起", "第一卷 潮起"),
        ("番外", "番外"),
        ("番外三", "番外三"),
        ("番外篇 旧事", "番外篇 旧事"),
        ("外传：山中", "外传 山中"),
        ("简介：", "简介"),
        ("后记", "后记"),
        ("后记里他写了很多感谢的话。", None),
        ("番外的故事很多，大家都爱看，他也写了很多很多。", None),
    ],
)
def test_parse_named_and_numbered_headings(line: str, expected: str | None) -> None:
    heading = parse_heading(line)
    assert (heading.text if heading else None) == expected


def test_volume_labels_are_told_from_chapter_labels() -> None:
    assert [parse_heading(line).volume for line in ("第一卷 潮起", "第二部", "Part One", "Book II")] == [True] * 4  # type: ignore[union-attr]
    assert [parse_heading(line).volume for line in ("第一章 夜雨", "序章", "Chapter 3", "八")] == [False] * 4  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "value"),
    [("一", 1), ("十", 10), ("十五", 15), ("二十", 20), ("一百零五", 105), ("两百", 200), ("一千二百零三", 1203)],
)
def test_cn_number(text: str, value: int) -> None:
    assert cn_number(text) == value


def test_cn_number_round_trips_the_generator() -> None:
    assert all(cn_number(chinese_number(n)) == n for n in range(1, 10_000))
    assert cn_number("一〇五") == 105 and cn_number("１２") == 12 and cn_number("十万") == 100_000
    assert cn_number("章") is None and cn_number("") is None


@pytest.mark.parametrize("gap", ["\n\n", "\n"])
def test_a_bare_numeral_heading_is_the_whole_title(gap: str) -> None:
    """八, then the section's first line: that line is text, not part of the title (blank lines or none)."""
    text = gap.join(["七", "　　天黑了。", "八", "其实这种道理谁都明白……", "　　他点点头。", "九", "　　天亮了。"])
    book = parse_plain_text(text, default_title="T")
    assert [c.title for c in book.chapters] == ["七", "八", "九"]
    assert book.chapters[1].paragraphs[0].startswith("其实这种道理谁都明白")
    assert "他点点头。" in book.chapters[1].paragraphs[-1]


def test_a_lone_numeral_line_in_prose_is_not_a_heading() -> None:
    text = "第一章 数数\n他数道：\n一\n然后停了下来，不再数了。\n"
    book = parse_plain_text(text, default_title="T")
    assert [c.title for c in book.chapters] == ["第一章 数数"]


# --- the generated web novel


@pytest.mark.parametrize(
    "shape",
    [{}, {"contents_line": False}, {"blank_lines": False}, {"contents_line": False, "blank_lines": False}],
)
def test_generated_web_novel_shapes(shape: dict[str, bool]) -> None:
    novel = webnovel(120, 150_000, volumes=3, **shape)
    book = parse_plain_text(novel.text, default_title="T")
    check_structure(book, novel)


def test_generated_web_novel_of_two_thousand_chapters_and_five_million_characters(tmp_path: Path) -> None:
    """The full size (timing is measured outside the tests, see tests/webnovel.py)."""
    novel = webnovel()
    assert len(novel.titles) == 2000 and len(novel.text) >= 5_000_000
    path = tmp_path / "novel.txt"
    path.write_text(novel.text, encoding="utf-8")
    book = read_book(path)
    assert (book.title, book.author, book.language) == ("潮汐之城", "试写者", "zh")
    check_structure(book, novel)


def check_structure(book: Book, novel: WebNovel) -> None:
    # The synopsis is the opening chapter, then every chapter of the book in order, each in its volume.
    assert [c.title for c in book.chapters] == ["简介", *novel.titles]
    assert [c.part for c in book.chapters] == [None, *novel.parts]
    assert [c.index for c in book.chapters] == list(range(1, len(novel.titles) + 2))
    assert all(c.paragraphs and c.characters > 0 for c in book.chapters)  # no empty chapters
    markers = (*END_MARKERS, *CONTINUED, *VOTES, "example.", "记住")
    assert not [p for c in book.chapters for p in c.paragraphs if any(m in p for m in markers)]
    assert sum(p == MENTION.strip() for c in book.chapters for p in c.paragraphs) == sum(
        line == MENTION for line in novel.text.split("\n")
    )
    skipped = dict(s.rsplit(" (", 1) for s in book.skipped)
    assert skipped.pop("table of contents").endswith(" lines)")
    assert skipped == {kind: f"{n} lines)" for kind, n in novel.boilerplate.items()}
