"""A generated web-novel-style text, the shape Chinese reading sites hand out: 书名/作者 lines, a contents list
at the top that repeats every heading, volumes (第一卷 …) above chapters numbered through the book in Chinese
numerals, a 序章 and a 尾声, and the sites' boilerplate (end-of-chapter and to-be-continued markers,
"remember this site" lines, advertisements with addresses, requests for votes) between the chapters.

Every word is made up here from a small original vocabulary. ``python -m tests.webnovel OUT.txt`` writes the
full-size book (2,000 chapters, about 5 million characters) for measuring ``audiobook plan`` on it.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

_DIGITS = "零一二三四五六七八九"
_UNITS = ((1000, "千"), (100, "百"), (10, "十"))


def chinese_number(n: int) -> str:
    """1 -> 一, 10 -> 十, 15 -> 十五, 105 -> 一百零五, 1203 -> 一千二百零三 (up to 9999)."""
    if not 0 < n < 10_000:
        raise ValueError(n)
    out = ""
    zero = False
    for value, unit in _UNITS:
        digit, n = divmod(n, value)
        if digit:
            if zero:
                out += "零"
            out += ("" if value == 10 and digit == 1 and not out else _DIGITS[digit]) + unit
            zero = False
        elif out:
            zero = True
    if n:
        out += ("零" if zero else "") + _DIGITS[n]
    return out


_TITLE_WORDS = (
    "风起", "云涌", "夜航", "孤灯", "旧城", "长桥", "雪落", "归途", "星火", "潮声",
    "山门", "渡口", "残碑", "铁匠", "茶馆", "古井", "烟雨", "石阶", "寒江", "灯市",
)  # fmt: skip
_VOLUME_NAMES = ("潮起", "远行", "北境", "灯海", "迷城", "归舟", "霜天", "晨钟", "长夜", "新岁")
_SUBJECTS = (
    "少年", "老船夫", "掌柜", "她", "那个陌生人", "守城的士兵", "卖花的姑娘", "他的师父", "村里的孩子", "远来的客人",
)  # fmt: skip
_ACTIONS = (
    "推开了木门", "望着河面上的雾气", "把灯放在桌上", "慢慢地走上石阶", "低声说了一句话", "数着口袋里的铜钱",
    "听见远处传来钟声", "把信折好收进怀里", "抬头看了看天色", "在渡口等了很久", "拍去肩上的雪", "想起了去年的事",
)  # fmt: skip
_ENDINGS = ("。", "。", "。", "！", "？", "……")
_DIALOGUE = ("“你来得正好。”", "“明天还会下雨吗？”", "“走吧，天快黑了。”", "“这条路我走过很多次。”")

# Site boilerplate, one line each, written in the forms such files use.
END_MARKERS = ("(本章完)", "（本章完）", "【本章完】")
CONTINUED = ("（未完待续。）", "(未完待续……)", "（未完待续，请记得收藏本书。）")
REMEMBER = "天才一秒记住本站地址：www.example.com"
ADVERT = "最新章节请到 www.example.net 阅读，更新最快。"
URL = "https://www.example.org/book/12345/"
VOTES = ("求月票！", "（求推荐票、求收藏！）", "PS：求订阅，谢谢大家！")
# A line of the story that mentions a marker inside a sentence: it must be read.
MENTION = "　　他在信的末尾写下“本章完”三个字，然后合上了本子。"


@dataclass
class WebNovel:
    text: str
    titles: list[str]  # every chapter's expected title, in order
    parts: list[str | None]  # the volume each chapter belongs to
    boilerplate: dict[str, int] = field(default_factory=dict)  # kind -> lines written


def _paragraph(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 5)):
        if rng.random() < 0.2:
            sentences.append(rng.choice(_DIALOGUE))
        else:
            sentences.append(rng.choice(_SUBJECTS) + rng.choice(_ACTIONS) + rng.choice(_ENDINGS))
    return "　　" + "".join(sentences)


def webnovel(
    chapters: int = 2000,
    characters: int = 5_000_000,
    *,
    volumes: int = 10,
    seed: int = 1,
    contents_line: bool = True,
    blank_lines: bool = True,
) -> WebNovel:
    """A book of ``chapters`` chapters (a 序章, numbered ones, a 尾声) in ``volumes`` volumes, about
    ``characters`` long. ``contents_line``: the contents list opens with 目录; ``blank_lines``: paragraphs are
    separated by blank lines (else one per line, as many downloads are)."""
    rng = random.Random(seed)
    numbered = chapters - 2
    per_volume = -(-numbered // volumes)
    volume_names = [f"第{chinese_number(v + 1)}卷 {_VOLUME_NAMES[v % len(_VOLUME_NAMES)]}" for v in range(volumes)]
    # (heading, volume it starts or None)
    headings: list[tuple[str, str | None]] = [("序章 " + "".join(rng.sample(_TITLE_WORDS, 2)), None)]
    for n in range(1, numbered + 1):
        volume = volume_names[(n - 1) // per_volume] if (n - 1) % per_volume == 0 else None
        headings.append((f"第{chinese_number(n)}章 {''.join(rng.sample(_TITLE_WORDS, 2))}", volume))
    headings.append(("尾声", None))

    gap = "\n\n" if blank_lines else "\n"
    out = ["书名：潮汐之城", "作者：试写者", "", "简介：", "　　一座被潮水围住的城，和一个想离开它的少年。", ""]
    if contents_line:
        out.append("目录")
    for heading, volume in headings:
        if volume:
            out.append(volume)
        out.append(heading)
    out.append("")

    titles: list[str] = []
    parts: list[str | None] = []
    counts = {"end-of-chapter markers": 0, "to-be-continued markers": 0, "site addresses": 0}
    counts |= {"site advertisements": 0, "remember-this-site lines": 0, "requests for votes": 0}
    body_size = characters // chapters
    current: str | None = None
    body: list[str] = []
    for n, (heading, volume) in enumerate(headings):
        if volume:
            body += [volume, ""]
            current = volume
        titles.append(heading)
        parts.append(current)
        paragraphs = []
        size = 0
        while size < body_size:
            paragraphs.append(_paragraph(rng))
            size += len(paragraphs[-1])
        if n % 97 == 5:
            paragraphs.insert(len(paragraphs) // 2, MENTION)
        if n % 7 == 3:
            paragraphs.insert(rng.randrange(len(paragraphs)), REMEMBER)
            counts["remember-this-site lines"] += 1
        if n % 11 == 4:
            paragraphs.append(ADVERT)
            counts["site advertisements"] += 1
        if n % 13 == 6:
            paragraphs.append(URL)
            counts["site addresses"] += 1
        if n % 5 == 2:
            paragraphs.append(rng.choice(VOTES))
            counts["requests for votes"] += 1
        if n % 3 == 0:
            paragraphs.append(rng.choice(CONTINUED))
            counts["to-be-continued markers"] += 1
        else:
            paragraphs.append(rng.choice(END_MARKERS))
            counts["end-of-chapter markers"] += 1
        body += [heading, "", gap.join(paragraphs), ""]
    text = "\n".join(out + body) + "\n"
    return WebNovel(text, titles, parts, {k: v for k, v in counts.items() if v})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.webnovel OUT.txt", file=sys.stderr)
        return 2
    book = webnovel()
    Path(argv[0]).write_text(book.text, encoding="utf-8")
    print(f"{argv[0]}: {len(book.titles)} chapters, {len(book.text):,} characters", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
