"""What the packing chunker is judged by, shared by tests/test_chunker.py and bench/chunk_locality.py.

- Requests: segments against the ideal, Σ over chapters of ⌈characters / max_chars⌉ (plus one per spoken title).
- Edit locality: edit one paragraph (replace a word, insert a sentence, delete a sentence) and count the segment
  texts that did not exist before, i.e. the parts the cache does not hold and that must be paid for again.

The two synthetic books are generated here from small word lists (original text, deterministic): a
dialogue-heavy one, mostly short quoted lines one per paragraph, and a Chinese one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from pipeline.chunker import DEFAULT_PACKING, Packing, chunk_chapter, split_sentences
from pipeline.models import Book, Chapter
from pipeline.textfacts import is_cjk

_COMMON = (
    "the a and to of he she it was said not for on with as you at his her they be this have from or one had by "
    "word but what all were when we there can an your which their if do will each about how up out them then "
    "many some so would other into has more two like him see time could no make than first been its who now "
    "people my made over did down only way find use may water long little very after called just where most know"
)
_WORDS = tuple(_COMMON.split())
_NAMES = ("Tom", "Mary", "Alice", "John", "Kate", "Peter", "Jane", "Harry")
_VERBS = ("said", "asked", "cried", "replied", "whispered", "shouted", "answered")
_HAN = (
    "天地人山水日月风云花草木石金火土春夏秋冬东西南北大小多少上下左右前后高低长短远近来去出入开关生死老少男女"
    "父母兄弟姐妹朋友先生学校读书写字吃饭喝茶走路说话看见听到想起知道觉得喜欢时候今天明天昨天早晚中午夜里城市"
    "乡村道路河流桥梁房屋门窗桌椅"
)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join([words[0].capitalize(), *words[1:]]) + rng.choice(".....?!")


def dialogue_book(seed: int = 1, chapters: int = 10, paragraphs: int = 220) -> Book:
    """~11k characters a chapter: 70% one quoted line (half with a speech tag), 20% one to three sentences
    of narration, 10% a longer paragraph."""
    rng = random.Random(seed)
    book = []
    for index in range(1, chapters + 1):
        body = []
        for _ in range(paragraphs):
            roll = rng.random()
            if roll < 0.7:
                line = _sentence(rng, 1, 8)
                if rng.random() < 0.5:
                    body.append(f"“{line[:-1]},” {rng.choice(_VERBS)} {rng.choice(_NAMES)}.")
                else:
                    body.append(f"“{line}”")
            elif roll < 0.9:
                body.append(" ".join(_sentence(rng, 3, 12) for _ in range(rng.randint(1, 3))))
            else:
                body.append(" ".join(_sentence(rng, 3, 12) for _ in range(rng.randint(3, 8))))
        book.append(Chapter(index, f"Chapter {index}", tuple(body)))
    return Book("Dialogue", tuple(book), language="en")


def _chinese_sentence(rng: random.Random) -> str:
    text = "".join(rng.choice(_HAN) for _ in range(rng.randint(4, 28)))
    if rng.random() < 0.3:
        k = rng.randint(1, len(text) - 1)
        text = text[:k] + "，" + text[k:]
    end = rng.choice("。。。！？")
    return f"他说：“{text}{end}”" if rng.random() < 0.2 else text + end


def chinese_book(seed: int = 2, chapters: int = 10, paragraphs: int = 120) -> Book:
    """~8k characters a chapter: paragraphs of 1 to 10 sentences ending in 。！？, some quoted speech."""
    rng = random.Random(seed)
    book = [
        Chapter(
            index,
            f"第{index}章",
            tuple(
                "".join(_chinese_sentence(rng) for _ in range(rng.choice((1, 1, 2, 3, 4, 6, 10))))
                for _ in range(paragraphs)
            ),
        )
        for index in range(1, chapters + 1)
    ]
    return Book("中文", tuple(book), language="zh")


def ideal_requests(book: Book, max_chars: int, *, announce_titles: bool = False) -> int:
    return sum(math.ceil(c.characters / max_chars) + (1 if announce_titles else 0) for c in book.chapters)


def requests_ratio(
    book: Book, max_chars: int, *, announce_titles: bool = False, packing: Packing = DEFAULT_PACKING
) -> float:
    segments = sum(
        len(chunk_chapter(c, max_chars, announce_title=announce_titles, packing=packing)) for c in book.chapters
    )
    return segments / ideal_requests(book, max_chars, announce_titles=announce_titles)


# One region per chapter: the fewest segments whole sentences allow, the bound for any content-defined packing.
FEWEST = Packing(anchor_spacing=1e12, min_anchor_gap=0.0, max_region=1e12)


def paragraph_edits(paragraph: str, rng: random.Random, new_sentence: str) -> Iterator[tuple[str, str]]:
    """(kind, edited paragraph): a word replaced (a character in CJK text), ``new_sentence`` inserted between
    two sentences, and a sentence deleted when there are at least two."""
    if is_cjk(paragraph):
        k = rng.randrange(len(paragraph))
        yield "word", paragraph[:k] + ("山" if paragraph[k] != "山" else "水") + paragraph[k + 1 :]
    else:
        words = paragraph.split(" ")
        k = rng.randrange(len(words))
        words[k] = "wonderful" if words[k] != "wonderful" else "odd"
        yield "word", " ".join(words)
    sentences = split_sentences(paragraph)
    glue = "" if is_cjk(paragraph) else " "
    k = rng.randint(0, len(sentences))
    yield "insert", glue.join([*sentences[:k], new_sentence, *sentences[k:]])
    if len(sentences) > 1:
        k = rng.randrange(len(sentences))
        yield "delete", glue.join(sentences[:k] + sentences[k + 1 :])


def typical_sentences(book: Book) -> list[str]:
    """The book's sentences within 30% of its median sentence length: what an editor would insert."""
    sentences = sorted((s for c in book.chapters for p in c.paragraphs for s in split_sentences(p)), key=len)
    median = len(sentences[len(sentences) // 2])
    return [s for s in sentences if 0.7 * median <= len(s) <= 1.3 * median]


def edit_changes(
    book: Book,
    max_chars: int,
    *,
    sample: int | None = None,
    seed: int = 0,
    packing: Packing = DEFAULT_PACKING,
) -> dict[str, list[int]]:
    """For each edit kind, the number of new segment texts per edit, over every paragraph (or ``sample``
    paragraphs a chapter)."""
    rng = random.Random(seed)
    pool = typical_sentences(book)
    changes: dict[str, list[int]] = {}
    for chapter in book.chapters:
        old = {s.text for s in chunk_chapter(chapter, max_chars, packing=packing)}
        count = len(chapter.paragraphs)
        chosen = range(count) if sample is None else sorted(rng.sample(range(count), min(sample, count)))
        for i in chosen:
            for kind, edited in paragraph_edits(chapter.paragraphs[i], rng, rng.choice(pool)):
                paragraphs = (*chapter.paragraphs[:i], edited, *chapter.paragraphs[i + 1 :])
                edited_chapter = Chapter(chapter.index, chapter.title, paragraphs)
                new = {s.text for s in chunk_chapter(edited_chapter, max_chars, packing=packing)}
                changes.setdefault(kind, []).append(len(new - old))
    return changes
