"""The reading-site boilerplate table, line by line: every row catches its forms as whole lines, and lines of a
story that merely mention the same words are kept. All lines are written for these tests."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.readers.boilerplate import BOILERPLATE, boilerplate_kind, describe, drop_boilerplate

CAUGHT = [
    ("end-of-chapter markers", "(本章完)"),
    ("end-of-chapter markers", "（本章完）"),
    ("end-of-chapter markers", "【本章完】"),
    ("end-of-chapter markers", "本章完。"),
    ("end-of-chapter markers", "本章完"),
    ("end-of-chapter markers", "-----本章完结-----"),
    ("end-of-chapter markers", "（本章结束）"),
    ("end-of-chapter markers", "(第十二章完)"),
    ("end-of-chapter markers", "　　(本章完)　"),
    ("to-be-continued markers", "（未完待续）"),
    ("to-be-continued markers", "(未完待续……)"),
    ("to-be-continued markers", "（未完待续。）"),
    ("to-be-continued markers", "（未完待續）"),
    ("to-be-continued markers", "（待续）"),
    ("to-be-continued markers", "未完待续"),
    ("to-be-continued markers", "（未完待续，请记得收藏本书。）"),
    ("to-be-continued markers", "（未完待续。喜欢这本书的朋友，欢迎来某某网（example.com）投票支持。）"),
    ("remember-this-site lines", "天才一秒记住本站地址：www.example.com"),
    ("remember-this-site lines", "一秒记住【某某小说网】，精彩小说无弹窗免费阅读！"),
    ("remember-this-site lines", "请记住本书首发域名：example.com。"),
    ("remember-this-site lines", "记住网址：example.net"),
    ("site advertisements", "最新章节请到 www.example.net 阅读，更新最快。"),
    ("site advertisements", "某某小说网 example.org 最快更新，无弹窗！"),
    ("site advertisements", "手机用户请浏览阅读，更优质的阅读体验。"),
    ("site advertisements", "本书首发来自某某小说网，第一时间看正版内容！"),
    ("site advertisements", "看最新章节请到某某网"),
    ("site advertisements", "更多精彩内容请关注某某网"),
    ("site addresses", "https://www.example.org/book/12345/"),
    ("site addresses", "www.example.com"),
    ("site addresses", "example.net"),
    ("site addresses", "本站网址：example.net"),
    ("site addresses", "Website: www.example.com"),
    ("site addresses", "（http://example.com/b/7.html）"),
    ("requests for votes", "求月票！"),
    ("requests for votes", "（求推荐票、求收藏！）"),
    ("requests for votes", "PS：求订阅，谢谢大家！"),
    ("requests for votes", "ps:求收藏求推荐"),
    ("requests for votes", "跪求各位的保底月票……"),
    ("requests for votes", "【求月票，求打赏！】"),
]

KEPT = [
    "他在信的末尾写下“本章完”三个字，然后合上了本子。",
    "本章完了吗？他问。",
    "这个故事未完待续，他想。",
    "待续的事情还很多。",
    "他打开 www.example.com 看新闻，心里很乱。",
    "他说：www.example.com",
    "他看着纸上的字：最新章节请到 www.example.net 阅读。",
    "一秒记住了他的脸，她就再也忘不掉。",
    "记住，明天早上六点出发。",
    "求推荐票的人很多，他却一张也没有。",
    "他求收藏家把画还给他。",
    "求你了。",
    "手机响了。",
    "最新的消息传来，城门已经关了。",
    "本书的作者很少说话。",
    "更多的人走了过来。",
    "Chapter 1",
    "The end.com of days",
    "He said: to be continued.",
    "",
    "   ",
]


@pytest.mark.parametrize(("kind", "line"), CAUGHT)
def test_each_form_is_caught_as_its_kind(kind: str, line: str) -> None:
    assert boilerplate_kind(line) == kind


@pytest.mark.parametrize("line", KEPT)
def test_lines_that_only_mention_the_words_are_kept(line: str) -> None:
    assert boilerplate_kind(line) is None


@pytest.mark.parametrize("line", [line for _, line in CAUGHT])
def test_a_marker_inside_a_sentence_is_kept(line: str) -> None:
    """Whole lines only: the same words with story around them are the story's."""
    assert boilerplate_kind(f"他看着纸上的字：{line.strip()}然后笑了，把纸折好放回了口袋里。") is None


def test_every_row_is_tested() -> None:
    assert {kind for kind, _ in BOILERPLATE} == {kind for kind, _ in CAUGHT}


def test_very_long_lines_are_not_tried() -> None:
    assert boilerplate_kind("（未完待续" + "。" * 400 + "）") is None


def test_drop_counts_by_kind_and_removes_the_line() -> None:
    lines = ["第一章 风起", "他走了，", "www.example.com", "又回来了。", "(本章完)", "", "（本章完）", "求月票！"]
    kept, dropped = drop_boilerplate(lines)
    # Removed, not blanked: the wrapped sentence around the address still joins up.
    assert kept == ["第一章 风起", "他走了，", "又回来了。", ""]
    assert dropped == Counter({"end-of-chapter markers": 2, "site addresses": 1, "requests for votes": 1})
    assert describe(dropped) == [
        "end-of-chapter markers (2 lines)",
        "site addresses (1 line)",
        "requests for votes (1 line)",
    ]
