"""Shared text helpers: normalization, language guessing and decoding of files from anywhere."""

from __future__ import annotations

import random

import pytest

from pipeline.errors import InputError
from pipeline.textfacts import (
    GUTENBERG_END,
    GUTENBERG_START,
    decode_bytes,
    detect_language,
    is_cjk,
    iso639_2,
    normalize_paragraph,
    primary_language,
)

CHINESE = "天色渐渐暗了下来，他站在山顶上，望着远方的城市。“你好！”她说。"
ENGLISH = "Alice was beginning to get very tired of sitting by her sister on the bank."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CHINESE * 3, "zh"),
        ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。", "ja"),
        ("나는 고양이로소이다. 이름은 아직 없다.", "ko"),
        (ENGLISH, "en"),
        ("Chapter 1 " + CHINESE * 5, "zh"),  # a Latin heading does not make a Chinese book English
        (CHINESE * 50 + "カ", "zh"),  # one stray katakana is not Japanese
        ("1234 — 5678 !!!", None),
        ("", None),
    ],
)
def test_detect_language(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected


def test_detect_language_samples_long_text() -> None:
    assert detect_language(ENGLISH * 5000) == "en"


def test_hard_wrapped_lines_joined_gain_no_space_inside_chinese() -> None:
    lines = ["　　天色渐渐暗了下来，他站在 山顶上，望着远方的", "城市 。他说： ", "“你好！” ", "然后走了。"]
    joined = normalize_paragraph(" ".join(lines))
    assert joined == "天色渐渐暗了下来，他站在山顶上，望着远方的城市。他说：“你好！”然后走了。"


def test_hard_wrapped_english_lines_join_with_one_space() -> None:
    assert (
        normalize_paragraph(" ".join(["It was the best", "  of times,  it was"])) == "It was the best of times, it was"
    )


@pytest.mark.parametrize(
    ("tag", "primary", "three"),
    [("en-US", "en", "eng"), ("zho", "zh", "zho"), ("zh_Hans", "zh", "zho"), ("fr", "fr", "fra"),
     ("x", None, None), ("", None, None), ("english", None, None), ("tlh", "tlh", "tlh")],
)  # fmt: skip
def test_language_tags_in_one_place(tag: str, primary: str | None, three: str | None) -> None:
    assert primary_language(tag) == primary
    assert iso639_2(primary) == three


@pytest.mark.parametrize(
    "line",
    ["*** START OF THE PROJECT GUTENBERG EBOOK ALICE ***", "***START OF THIS PROJECT GUTENBERG EBOOK X"],
)
def test_gutenberg_start_marker(line: str) -> None:
    assert GUTENBERG_START.match(line) and not GUTENBERG_END.match(line)


@pytest.mark.parametrize(
    "line",
    [
        "*** END OF THE PROJECT GUTENBERG EBOOK ALICE ***",
        "End of Project Gutenberg's Alice",
        "End of the Project Gutenberg EBook",
    ],
)
def test_gutenberg_end_marker(line: str) -> None:
    assert GUTENBERG_END.match(line) and not GUTENBERG_START.match(line)


def test_a_declared_encoding_is_used_and_an_unknown_one_ignored() -> None:
    data = "灯塔".encode("gb18030")
    assert decode_bytes(data, "page.html", declared="GB2312") == "灯塔"
    assert decode_bytes("café".encode(), "page.html", declared="no-such-codec") == "café"


def test_normalize_keeps_spaces_around_quotes_in_english() -> None:
    assert normalize_paragraph("He said “Hello”  to  me.\u200b") == "He said “Hello” to me."
    assert is_cjk(CHINESE) and not is_cjk(ENGLISH)


@pytest.mark.parametrize(
    "encoding",
    ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32", "gb18030", "gbk"],
)
def test_decode_bytes_encodings(encoding: str) -> None:
    text = "第一章 风起\n" + CHINESE + "\nCafé “naïve” — ok\n"
    if encoding == "utf-16-le-bom":
        data = b"\xff\xfe" + text.encode("utf-16-le")
    elif encoding == "utf-16-be-bom":
        data = b"\xfe\xff" + text.encode("utf-16-be")
    elif encoding == "gbk":
        text = text.replace("“naïve”", "naive").replace("é", "e").replace("—", "-")
        data = text.encode("gbk")
    else:
        data = text.encode(encoding)
    assert decode_bytes(data, "book.txt") == text


def test_decode_bytes_utf16_without_bom() -> None:
    text = "Plain English in UTF-16 without a byte-order mark.\n" * 5
    assert decode_bytes(text.encode("utf-16-le"), "x.txt") == text
    assert decode_bytes(text.encode("utf-16-be"), "x.txt") == text


def test_decode_bytes_latin1_falls_back_to_detection() -> None:
    text = "Le cœur a ses raisons que la raison ne connaît point. Très bien, déjà vu, à côté. " * 4
    decoded = decode_bytes(text.encode("cp1252"), "pascal.txt")
    assert "connaît" in decoded and "déjà" in decoded


def test_decode_bytes_normalizes_line_ends() -> None:
    assert decode_bytes(b"a\r\nb\rc\n", "x.txt") == "a\nb\nc\n"
    assert decode_bytes(b"\xef\xbb\xbfhello\r\n", "x.txt") == "hello\n"


def test_decode_bytes_rejects_binary() -> None:
    garbage = random.Random(7).randbytes(4096)
    with pytest.raises(InputError, match="garbage.bin"):
        decode_bytes(garbage, "garbage.bin")
    with pytest.raises(InputError, match="img.png"):
        decode_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "img.png")


def test_decode_bytes_bad_bom_payload() -> None:
    with pytest.raises(InputError, match="utf-8-sig"):
        decode_bytes(b"\xef\xbb\xbf\xff\xff\xff", "bad.txt")


def test_decode_bytes_big5() -> None:
    text = "第一章 風起\n天色漸漸暗了下來，他站在山頂上，望著遠方的城市。“你好！”她說。\n"
    assert decode_bytes(text.encode("big5"), "big5.txt") == text
