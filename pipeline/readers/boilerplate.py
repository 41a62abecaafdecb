"""Reading-site boilerplate in downloaded web novels: lines the site added, not the author.

``BOILERPLATE`` is the table: (kind, pattern) rows in the order the plan lists them. A pattern must match a
WHOLE line (after trimming its spaces, full-width ones included), so a sentence that merely mentions 本章完 or
an address is never dropped. The table is Python rather than a data file: each row needs a comment on what it
catches, the expressions are compiled once with the module, and ruff and the tests see every one of them.
Rows are bounded (``{0,80}`` rather than ``*``), so no line can make one slow.

To add a form: add it to the row of its kind (or a new row with a new kind), and add a line that it must
catch and one like it that it must keep to the tests in ``tests/test_boilerplate.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_OPEN = r"[(（【\[〔［<＜《「]?"
_CLOSE = r"[)）】\]〕］>＞》」]?"
_DECOR = r"[-－—=＝~～*＊·•.。\s]*"  # rules and stars around a marker: "------本章完------"
_STOP = r"[。.!！~～…\s]*"  # trailing punctuation
_CN_NUM = "0-9０-９零〇一二三四五六七八九十百千万两"
# An address: a URL, or a host name under a common top-level domain ("example.com/book/1").
_ADDRESS = (
    r"(?:https?://|www\.|ｗｗｗ．)[\w\-./?=&%#~+:]*"
    r"|[a-z0-9][a-z0-9\-]{0,30}(?:\.[a-z0-9\-]{1,30})*\.(?:com|net|org|cc|cn|la|me|info|co|tw|hk|io|xyz|top|vip|in)"
    r"(?:/[\w\-./?=&%#~+]*)?"
)
# Words of a site's own pitch: only with an address in the same short line do they make it an advertisement.
_PITCH = r"最新章节|最快更新|更新最快|首发|无弹窗|全文阅读|免费阅读|手机阅读|小说网|最新网址|收藏本站|请收藏|书友"
_NAME = r"[^\s:：，。！？、]{1,10}"  # a site's name before its address or pitch
_PITCH_FIRST = "".join(sorted({word[0] for word in _PITCH.split("|")}))

BOILERPLATE: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "end-of-chapter markers",
        # (本章完) 【本章完】 本章完。 -----本章完结----- (第十二章完)
        re.compile(
            rf"{_DECOR}{_OPEN}\s*(?:本[章节節回](?:已)?(?:完|完结|完結|完毕|完畢|结束|結束|终|終)"
            rf"|第[{_CN_NUM}]+[章回节節]\s*(?:完|完结|完結))\s*{_STOP}{_CLOSE}{_STOP}{_DECOR}"
        ),
    ),
    (
        "to-be-continued markers",
        # （未完待续） (未完待续……) （待续） and the long bracketed kind with a site's pitch inside, which
        # may itself hold one bracketed address: （未完待续。欢迎来某某网（example.com）投票……）
        re.compile(
            rf"{_DECOR}(?:[(（【\[〔［]\s*(?:未完待[续續]|待[续續])(?:[^()（）【】\[\]〔〕［］]|[(（][^()（）]{{0,60}}[)）])"
            rf"{{0,200}}[)）】\]〕］]|(?:未完待[续續]|待[续續])\s*{_STOP}){_DECOR}"
        ),
    ),
    (
        "remember-this-site lines",
        # 天才一秒记住本站地址：… 一秒记住【某某网】… 请记住本书首发域名：… 记住网址…
        re.compile(
            r"(?:[(（【\[]\s*)?(?:天才|天才只需)?[一1壹]秒(?:钟)?记住(?=本站|本书|【|『|「|《|[:：]|.{0,20}(?:网址|地址|域名))"
            r".{0,100}"
            r"|(?:[(（【\[]\s*)?请?(?:牢记|记住)(?:本站|本书)?(?:首发)?(?:网址|域名|地址).{0,100}"
        ),
    ),
    (
        "site advertisements",
        # A short line that names an address and pitches the site, and opens with one of them (after a site's
        # name at most, not after a sentence): 最新章节请到 www.example.net 阅读。 某某小说网 example.org 最快更新！
        # (Cheap tests first: the length, a first character of a pitch word, the pitch, then the address.)
        re.compile(
            rf"(?i:(?=.{{0,120}}$)(?=.*?[{_PITCH_FIRST}])(?=.*?(?:{_PITCH}))(?=.*?(?<![a-z0-9.\-])(?:{_ADDRESS}))"
            rf"{_OPEN}\s*(?:{_NAME}\s*[:：]?\s*(?:{_ADDRESS})|(?:{_NAME}\s+)?(?:{_ADDRESS}|{_PITCH})).*)"
        ),
    ),
    (
        "site advertisements",
        # The same without an address: 手机用户请浏览阅读… 本书首发来自某某网… 看最新章节请到…
        re.compile(
            r"(?:[(（【\[]\s*)?(?:手机(?:用户|版)?请(?:浏览|访问|到|登录|登陆)"
            r"|本[书章](?:由.{1,20})?首发(?:于|自|来自)?"
            r"|(?:看|阅读)?最新章节(?:请|就)?(?:到|上|去|在)"
            r"|(?:更多|最新)(?:精彩)?(?:内容|章节|小说)(?:请|尽在|就在|敬请)).{0,80}"
        ),
    ),
    (
        "site addresses",
        # https://example.com/book/1/  www.example.com  本站网址：example.net  (a label that says it is an address;
        # not "他说：www.example.com", a line of dialogue)
        re.compile(
            rf"(?i:{_OPEN}\s*(?:[^\s:：，。]{{0,8}}(?:网址|地址|域名|网站|官网|链接|来源|网页|url|site|website)\s*[:：]\s*)?"
            rf"(?:{_ADDRESS})\s*{_CLOSE}\s*{_STOP})"
        ),
    ),
    (
        "requests for votes",
        # 求月票！ （求推荐票、求收藏！） PS：求订阅，谢谢大家！ 跪求各位的保底月票……
        re.compile(
            rf"{_OPEN}\s*(?:(?i:PS|P\.S\.)\s*[:：]?\s*)?"
            r"(?:(?:再|跪|拜|恳|继续|在此)?求(?:一下|一波|各位|大家)?(?:的)?"
            r"(?:保底)?(?:月票|推荐票|推荐|票票|收藏|订阅|打赏|点击|书评|支持)[、,，!！。~～…\s]*)+"
            r"(?:(?:谢谢|多谢|拜谢|感谢)(?:大家|各位)?(?:了|啦)?[!！。~～…\s]*)?"
            rf"{_CLOSE}{_STOP}",
        ),
    ),
)

_LONGEST = 300  # no boilerplate line is longer; longer lines are story and are not even tried


# The whole table as one expression (one call a line instead of one a row); the row that matched names the kind.
_ANY = re.compile("|".join(f"(?P<row{n}>{pattern.pattern})" for n, (_, pattern) in enumerate(BOILERPLATE)))
_KINDS = {f"row{n}": kind for n, (kind, _) in enumerate(BOILERPLATE)}


def boilerplate_kind(line: str) -> str | None:
    """The kind of site boilerplate ``line`` is as a whole, or None for a line of the book."""
    text = line.strip()
    if not text or len(text) > _LONGEST:
        return None
    match = _ANY.fullmatch(text)
    return _KINDS[match.lastgroup] if match and match.lastgroup else None


def drop_boilerplate(lines: Iterable[str]) -> tuple[list[str], Counter[str]]:
    """``lines`` without the boilerplate ones, and how many of each kind were dropped. A dropped line is
    removed, not blanked: an advertisement inside a hard-wrapped paragraph must not split it in two."""
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    for line in lines:
        kind = boilerplate_kind(line) if line and not line.isspace() else None
        if kind is None:
            kept.append(line)
        else:
            dropped[kind] += 1
    return kept, dropped


def describe(dropped: Counter[str]) -> list[str]:
    """Plan lines for what was dropped, in table order: "end-of-chapter markers (120 lines)"."""
    kinds = dict.fromkeys(kind for kind, _ in BOILERPLATE)
    return [f"{kind} ({dropped[kind]} line{'' if dropped[kind] == 1 else 's'})" for kind in kinds if dropped[kind]]
