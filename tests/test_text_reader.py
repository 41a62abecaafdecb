"""Plain-text and Markdown readers, and ``read_book``'s dispatch, on the corpus and on files written here."""

from __future__ import annotations

import errno
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.readers import choose_reader, read_book
from pipeline.readers.common import pretty_stem
from pipeline.readers.markdown import parse_markdown, read_markdown
from pipeline.readers.text import parse_heading, parse_plain_text, read_text
from tests.conftest import corpus_file

# --- the corpus


def test_alice_plain_text() -> None:
    book = read_book(corpus_file("alice-pg11.txt"))
    assert len(book.chapters) == 12
    assert [c.index for c in book.chapters] == list(range(1, 13))
    assert book.chapters[0].title == "Chapter I"
    assert book.chapters[0].paragraphs[0].startswith("Alice was beginning to get very tired")
    assert "Pool of Tears" in book.chapters[1].title
    assert book.chapters[11].title == "Chapter XII. Alice’s Evidence"
    assert "happy summer days" in book.chapters[11].paragraphs[-1]
    assert book.language == "en"
    assert any("licence" in s for s in book.skipped)
    for chapter in book.chapters:
        assert "Project Gutenberg" not in chapter.text
        assert "_" not in chapter.text
        assert "*" not in chapter.text
        assert all(p == p.strip() and "  " not in p and "\n" not in p for p in chapter.paragraphs)
    # Hard-wrapped lines were joined with a space into whole paragraphs.
    assert book.chapters[0].paragraphs[1].startswith("So she was considering in her own mind (as well as she")
    assert "very remarkable in that; nor did Alice think it so very much out of the way" in book.chapters[0].text


# --- plain text written here

CHINESE_NOVEL = """书名：风起之时
作者：张三

目录
第一章 风起
第二章 云涌

第一章 风起

　　天色渐渐暗了下来，他站在 山顶上，望着远方的
城市。⑴风很大 ，吹得他睁不开眼。
　　他说： “你好！” 然后
走了。

第二章　云涌
　　第二天，雨下了一整天[1]。
　　①这是一个注释。

尾声

　　故事结束了。
"""


def test_chinese_novel_in_gb18030(tmp_path: Path) -> None:
    path = tmp_path / "novel.txt"
    path.write_bytes(CHINESE_NOVEL.encode("gb18030"))
    book = read_book(path)
    assert (book.title, book.author, book.language) == ("风起之时", "张三", "zh")
    assert [c.title for c in book.chapters] == ["第一章 风起", "第二章 云涌", "尾声"]
    assert book.chapters[0].paragraphs == (
        "天色渐渐暗了下来，他站在山顶上，望着远方的城市。风很大，吹得他睁不开眼。",
        "他说：“你好！”然后走了。",
    )
    assert book.chapters[1].paragraphs == ("第二天，雨下了一整天。", "这是一个注释。")
    text = "".join(c.text for c in book.chapters)
    assert " " not in text.replace("\n\n", "")
    assert not any(mark in text for mark in "⑴①[]")
    assert any("contents" in s for s in book.skipped)


def test_chinese_bare_numeral_headings_and_one_paragraph_per_line(tmp_path: Path) -> None:
    lines = [
        "楔子",
        "",
        "很久以前。",
        "",
        "一",
        "",
        "他来了。",
        "她走了。",
        "天黑了。",
        "",
        "十二",
        "",
        "完了吗？是的。",
    ]
    path = tmp_path / "bare.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    book = read_text(path)
    assert [c.title for c in book.chapters] == ["楔子", "一", "十二"]
    assert book.chapters[1].paragraphs == ("他来了。", "她走了。", "天黑了。")


GUTENBERG = """The Project Gutenberg eBook of A Test Book

Title: A Test Book

Author: Jane Doe

*** START OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***

Produced by Somebody Kind

A TEST BOOK

by Jane Doe

CONTENTS

 CHAPTER 1   The Beginning
 CHAPTER 2   The Middle

PART ONE

CHAPTER 1

The Beginning

It was a _dark_ and *stormy* night; the rain fell in torrents, except at
occasional intervals.

*       *       *       *       *

Meanwhile, far away.

Chapter 2: The Middle
Nothing happened.

-----

PART TWO

CHAPTER THREE
It was over. The end came quickly and nobody was
sad about it at all.

*** END OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***
This licence text mentions Project Gutenberg.
"""


def test_gutenberg_header_contents_and_headings(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_bytes(GUTENBERG.replace("\n", "\r\n").encode("utf-8"))  # CRLF, as Windows saves it
    book = read_book(path)
    assert (book.title, book.author) == ("A Test Book", "Jane Doe")
    assert [c.title for c in book.chapters] == [
        "Opening",
        "Chapter 1. The Beginning",
        "Chapter 2. The Middle",
        "Chapter Three",
    ]
    assert book.chapters[0].paragraphs == ("A TEST BOOK", "by Jane Doe")
    assert book.chapters[1].paragraphs == (
        "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals.",
        "Meanwhile, far away.",
    )
    assert book.chapters[3].paragraphs == ("It was over. The end came quickly and nobody was sad about it at all.",)
    text = "".join(c.text for c in book.chapters)
    assert "Gutenberg" not in text and "Produced by" not in text and "\r" not in text
    assert len(book.skipped) == 4  # header, credits, licence, contents


def test_utf16_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "wide.txt"
    path.write_bytes("\ufeffCHAPTER I.\nThe Start\n\nHello there, reader.\n".encode("utf-16-le"))
    book = read_book(path)
    assert book.chapters[0].title == "Chapter I. The Start"
    assert book.chapters[0].paragraphs == ("Hello there, reader.",)


def test_text_without_headings_is_one_chapter_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my_short-story.txt"
    path.write_text("Just one paragraph\nwrapped over lines.\n\nAnd another.\n", encoding="utf-8")
    book = read_book(path)
    assert book.title == "My Short Story"
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("My Short Story", ("Just one paragraph wrapped over lines.", "And another."))
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("CHAPTER II.", "Chapter II"),
        ("Chapter 2: The Title", "Chapter 2. The Title"),
        ("CHAPTER IV. THE RABBIT SENDS", "Chapter IV. The Rabbit Sends"),
        ("PART ONE", "Part One"),
        ("Book the Last", None),
        ("Part one of the plan was simple", None),
        ("chapter 2 was long", None),
        ("Prologue", "Prologue"),
        ("第一章 标题", "第一章 标题"),
        ("第十二回　宝玉梦游", "第十二回 宝玉梦游"),
        ("第3节", "第3节"),
        ("序章", "序章"),
        ("楔子", "楔子"),
        ("尾声", "尾声"),
        ("序幕拉开了，观众们安静下来，等待着演员登场，一切都很好。", None),
        ("第一回合他就输了，输得很惨，大家都笑了起来，笑得很开心。", None),
        ("十二", "十二"),
        ("Alice said nothing.", None),
    ],
)
def test_parse_heading(line: str, expected: str | None) -> None:
    heading = parse_heading(line)
    assert (heading.text if heading else None) == expected


def test_pretty_stem() -> None:
    assert pretty_stem(Path("alice-pg11.txt")) == "Alice"
    assert pretty_stem(Path("War_and_Peace.txt")) == "War and Peace"


# --- Markdown

MARKDOWN = """# The Little Book

<!-- drafts:
## Not A Chapter -->

An opening line with a [link](https://example.com/a_(b)) and ![a picture](cover.png).

## The First Chapter

Some *emphasis*, some __strong__ words and `inline code`
wrapped onto a second line.

- a bullet item
- another *item*

> A quoted line
> that continues.

```python
print("code is not read aloud")
```

## The Second Chapter

1. first step
2. second step

### A Section

Text with a footnote[^1] and snake_case.

[^1]: The note itself.
[ref]: https://example.com
"""


def test_markdown_book(tmp_path: Path) -> None:
    path = tmp_path / "book.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    book = read_book(path)
    assert book.title == "The Little Book"
    assert [c.title for c in book.chapters] == ["Opening", "The First Chapter", "The Second Chapter"]
    assert book.chapters[0].paragraphs == ("An opening line with a link and.",)
    assert book.chapters[1].paragraphs == (
        "Some emphasis, some strong words and inline code wrapped onto a second line.",
        "a bullet item",
        "another item",
        "A quoted line that continues.",
    )
    assert book.chapters[2].paragraphs == (
        "first step",
        "second step",
        "A Section",
        "Text with a footnote and snake case.",
    )  # footnote definitions are left out with their markers
    text = "".join(c.text for c in book.chapters)
    assert not any(mark in text for mark in ("#", "*", "`", "http", "print", "Not A Chapter", ">"))


def test_markdown_front_matter_and_single_level(tmp_path: Path) -> None:
    path = tmp_path / "notes.markdown"
    path.write_text("---\ntitle: Meta Title\nauthor: Ann\n---\nPart\n====\n\nOne.\n\nPart Two\n===\n\nTwo.\n")
    book = read_markdown(path)
    assert (book.title, book.author) == ("Meta Title", "Ann")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("Part", ("One.",)), ("Part Two", ("Two.",))]


# --- read_book


def test_empty_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.txt"):
        read_book(path)
    blank = tmp_path / "blank.md"
    blank.write_text("\n\n   \n* * *\n<!-- only a comment -->\n")
    with pytest.raises(InputError, match="blank.md"):
        read_book(blank)


def test_missing_file_and_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.txt"):
        read_book(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="folder"):
        read_book(tmp_path)


def one_line_error(path: Path) -> str:
    """The InputError ``read_book`` raises for ``path``: one line that names the file."""
    with pytest.raises(InputError) as info:
        read_book(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def test_a_dangling_symlink_names_its_missing_target(tmp_path: Path) -> None:
    link = tmp_path / "book.txt"
    link.symlink_to(tmp_path / "moved-away.txt")
    message = one_line_error(link)
    assert "symbolic link" in message and "moved-away.txt" in message and "does not exist" in message


def test_a_symlink_loop_is_not_reported_as_missing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    (tmp_path / "self.txt").symlink_to(tmp_path / "self.txt")
    for link in (tmp_path / "a.txt", tmp_path / "self.txt"):
        message = one_line_error(link)
        assert "loop" in message and "no such file" not in message


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "book.txt"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes: reaching the message proves it was not opened.
    assert "named pipe" in one_line_error(fifo)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "book.epub"
    folder.mkdir()
    assert "is a folder" in one_line_error(folder)


def test_a_file_that_cannot_be_read_says_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("A story nobody may read.\n", encoding="utf-8")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the refusal the kernel would give
        real_open = Path.open

        def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    assert "permission denied" in one_line_error(path).lower()


def test_a_folder_that_cannot_be_searched_is_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    path = locked / "book.txt"
    path.write_text("A story behind a locked door.\n", encoding="utf-8")
    locked.chmod(0)
    try:
        if os.geteuid() == 0:  # root passes any folder: make stat fail as it would for anyone else
            real_stat = os.stat

            def refuse(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
                if os.fspath(target) == str(path):
                    raise PermissionError(errno.EACCES, "Permission denied", str(target))
                return real_stat(target, *args, **kwargs)

            monkeypatch.setattr(os, "stat", refuse)
        message = one_line_error(path)
        assert "permission denied" in message.lower() and "no such file" not in message
    finally:
        locked.chmod(0o755)


def test_binary_garbage_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.txt"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(InputError, match="garbage.txt"):
        read_book(path)


def test_language_override_and_detection(tmp_path: Path) -> None:
    path = tmp_path / "story"  # no suffix: sniffed as text
    path.write_text("Once upon a time.\n", encoding="utf-8")
    assert read_book(path).language == "en"
    assert read_book(path, language="fr").language == "fr"
    assert read_book(path).source == path


def test_sniffing_unknown_suffixes(tmp_path: Path) -> None:
    epub = tmp_path / "book.bin"
    with zipfile.ZipFile(epub, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    html = tmp_path / "page.dat"
    html.write_text("\ufeff  <!DOCTYPE html><html><body>Hi</body></html>")
    text = tmp_path / "notes.log"
    text.write_text("A story that mentions <html> tags in passing.")
    assert [choose_reader(p) for p in (epub, html, text)] == ["epub", "html", "text"]


def expect_unsupported(path: Path, fmt: str) -> str:
    with pytest.raises(InputError) as info:
        read_book(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {fmt} is not supported"), message
    assert "convert it to EPUB, PDF or text" in message
    assert "(supported: .txt .md .html .epub .pdf .docx .fb2 .mobi .azw3)" in message
    return message


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("book.doc", "DOC"), ("book.ODT", "ODT"), ("book.rtf", "RTF"), ("book.djvu", "DjVu")],
)
def test_unsupported_formats_are_named_by_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"Some words that look like text.\n")
    expect_unsupported(path, fmt)


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"{\\rtf1\\ansi Hello}", "RTF"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "DOC"),
        (b"AT&TFORM" + b"\x00" * 64, "DjVu"),
    ],
)
def test_other_unsupported_formats_are_known_by_their_bytes(tmp_path: Path, content: bytes, fmt: str) -> None:
    path = tmp_path / "book.txt"
    path.write_bytes(content)
    article = "an" if fmt == "RTF" else "a"
    assert f"the file is {article} {fmt} despite its name" in expect_unsupported(path, fmt)


LINES = st.sampled_from(
    [
        "",
        "",
        "CHAPTER II.",
        "The Pool of Tears",
        "Contents",
        "PART ONE",
        "第一章 风起",
        "一",
        "序章",
        "* * *",
        "-----",
        "It was a _dark_ night[1].",
        "　　他说：“你好！”",
        "THE END",
        "# Heading",
        "I.",
        "Prologue",
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***",
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***",
        "Title: X",
        "plain words here and there",
        "⑴",
        "...",
    ]
)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.one_of(LINES, st.text(max_size=40)), max_size=40))
@example(lines=["# Heading", "...", "-----"])  # "..." underlined is a section heading with nothing to say
def test_readers_never_crash_and_give_clean_paragraphs(lines: list[str]) -> None:
    text = "\n".join(lines)
    for parse in (parse_plain_text, parse_markdown):
        book = parse(text, default_title="Fuzz")
        assert [c.index for c in book.chapters] == list(range(1, len(book.chapters) + 1))
        for chapter in book.chapters:
            assert chapter.title and chapter.paragraphs
            for paragraph in chapter.paragraphs:
                assert paragraph == paragraph.strip() and "\n" not in paragraph
                assert any(c.isalnum() for c in paragraph)


def test_chinese_file_without_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dense.txt"
    path.write_text("第一章 风起\n　　天色暗了。\n　　他走了。\n第二章 云涌\n　　雨下了。\n", encoding="utf-8")
    book = read_text(path)
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        ("第一章 风起", ("天色暗了。", "他走了。")),
        ("第二章 云涌", ("雨下了。",)),
    ]


def test_chinese_hard_wrapped_lines_that_mostly_end_sentences_are_joined_mid_sentence(tmp_path: Path) -> None:
    """Most lines end a sentence, so each is a paragraph, but a line that stops mid-sentence continues on
    the next one."""
    path = tmp_path / "wrapped.txt"
    lines = [
        "第一章 山中",
        "",
        "他走进山里，看见一盏",
        "灯。他说：“你好！”然后走了。",
        "她问：“你是谁？”没有人回答。",
        "天亮了。",
    ]
    path.write_bytes("\n".join(lines).encode("gb18030"))
    book = read_book(path)
    assert [(c.title, c.paragraphs) for c in book.chapters] == [
        (
            "第一章 山中",
            ("他走进山里，看见一盏灯。他说：“你好！”然后走了。", "她问：“你是谁？”没有人回答。", "天亮了。"),
        ),
    ]
