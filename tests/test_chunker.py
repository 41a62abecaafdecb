"""The chunker's contract: pieces are 1..max_chars stripped substrings, in order, separated only by
whitespace; nothing lost, nothing doubled. Proved with hypothesis over Latin, CJK and mixed text, and over
the real corpus."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.chunker import chunk_book, chunk_chapter, chunk_text, split_sentences
from pipeline.errors import UsageError
from pipeline.models import Book, Chapter, Pause
from tests.conftest import corpus_file


def piece_spans(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Where each piece sits in ``text``, asserting the contract on the way."""
    spans = []
    pos = 0
    for piece in pieces:
        assert piece, "empty piece"
        assert piece == piece.strip(), f"piece not stripped: {piece!r}"
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert text.startswith(piece, pos), f"piece {piece!r} is not the next text at {pos}: {text[pos : pos + 40]!r}"
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    assert text[pos:].strip() == "", f"text lost at the end: {text[pos:]!r}"
    return spans


def assert_contract(text: str, pieces: list[str], max_chars: int) -> None:
    piece_spans(text, pieces)
    assert all(1 <= len(p) <= max_chars for p in pieces), [len(p) for p in pieces]
    if not text.strip():
        assert pieces == []


LATIN_WORDS = st.sampled_from(
    [
        "Alice",
        "was",
        "tired",
        "Mr.",
        "Dr.",
        "e.g.",
        "3.14",
        "J.",
        "R.",
        "etc.",
        "I",
        "the",
        "supercalifragilistic",
        "well-known",
        "don’t",
        "U.S.A.",
        "café",
        "naïve",
        "x" * 45,
        "and",
        "Oh",
        "dear",
    ]
)
LATIN_PUNCT = st.sampled_from(
    [
        "",
        "",
        "",
        ".",
        "!",
        "?",
        "...",
        "…",
        ",",
        ";",
        ":",
        "!?",
        "?!",
        ".”",
        "!”",
        "?’",
        ")",
        ".)",
        "—",
        " “",
        '"',
    ]
)
SPACES = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", "\u3000", "\u00a0"])

CJK_CHARS = st.sampled_from(list("我你他她们说的了是在不有人这个上来到时大地为子中道出也得就要下以会可去过看"))
CJK_PUNCT = st.sampled_from(
    ["", "", "", "。", "！", "？", "，", "、", "；", "：", "……", "——", "”", "」", "“", "「", "！”"]
)


@st.composite
def latin_text(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(LATIN_WORDS, LATIN_PUNCT, SPACES), max_size=60))
    return "".join(w + p + s for w, p, s in parts)


@st.composite
def cjk_text(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(st.lists(CJK_CHARS, min_size=1, max_size=30), CJK_PUNCT), max_size=30))
    spaces = draw(st.booleans())
    return (" " if spaces else "").join("".join(chars) + p for chars, p in parts)


@st.composite
def mixed_text(draw: st.DrawFn) -> str:
    return "".join(draw(st.lists(st.one_of(latin_text(), cjk_text(), SPACES), max_size=6)))


ANY_TEXT = st.one_of(latin_text(), cjk_text(), mixed_text(), st.text(max_size=400))
MAX_CHARS = st.one_of(st.integers(min_value=20, max_value=120), st.integers(min_value=1, max_value=600))


@settings(max_examples=400, deadline=None)
@given(text=ANY_TEXT, max_chars=MAX_CHARS)
def test_chunk_text_contract(text: str, max_chars: int) -> None:
    assert_contract(text, chunk_text(text, max_chars), max_chars)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(latin_text(), cjk_text(), mixed_text()), max_chars=st.integers(min_value=20, max_value=40))
def test_chunk_text_contract_small_limits(text: str, max_chars: int) -> None:
    assert_contract(text, chunk_text(text, max_chars), max_chars)


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT)
def test_split_sentences_keeps_everything_in_order(text: str) -> None:
    piece_spans(text, split_sentences(text))


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(latin_text(), cjk_text(), mixed_text()), max_chars=st.integers(min_value=20, max_value=300))
def test_pieces_end_at_sentence_ends_when_every_sentence_fits(text: str, max_chars: int) -> None:
    sentences = split_sentences(text)
    if not sentences or max(len(s) for s in sentences) > max_chars:
        return
    sentence_ends = {end for _, end in piece_spans(text, sentences)}
    piece_ends = {end for _, end in piece_spans(text, chunk_text(text, max_chars))}
    assert piece_ends <= sentence_ends
    # Greedy: a piece and the next sentence would not have fitted together.
    pieces = chunk_text(text, max_chars)
    spans = piece_spans(text, pieces)
    sentence_spans = piece_spans(text, sentences)
    for (start, _), (next_start, _) in zip(spans, spans[1:], strict=False):
        first_next = next(s for s in sentence_spans if s[0] == next_start)
        assert first_next[1] - start > max_chars


def test_chunk_contract_on_every_alice_paragraph() -> None:
    from pipeline.readers import read_book

    book = read_book(corpus_file("alice-pg11.txt"))
    paragraphs = [p for c in book.chapters for p in c.paragraphs]
    assert len(paragraphs) > 500
    for max_chars in (20, 57, 500):
        for paragraph in paragraphs:
            assert_contract(paragraph, chunk_text(paragraph, max_chars), max_chars)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
        (
            "Mrs. Brown lives on St. James St. in town. Hi.",
            ["Mrs. Brown lives on St. James St. in town.", "Hi."],
        ),
        ("J. R. R. Tolkien wrote it. Then he slept.", ["J. R. R. Tolkien wrote it.", "Then he slept."]),
        ("Use a tool, e.g. a hammer. Or i.e. This one.", ["Use a tool, e.g. a hammer.", "Or i.e. This one."]),
        ("Apples, pears etc. Are fruit. Cats vs. Dogs.", ["Apples, pears etc. Are fruit.", "Cats vs. Dogs."]),
        ("Pi is 3.14 or so. It costs $2.50 today.", ["Pi is 3.14 or so.", "It costs $2.50 today."]),
        ("Wait... what happened? Nothing.", ["Wait... what happened?", "Nothing."]),
        ("I wonder… and then it stopped. Fine.", ["I wonder… and then it stopped.", "Fine."]),
        ("It ended... Then another began.", ["It ended...", "Then another began."]),
        ("“Hello!” he said. “Goodbye!” She left.", ["“Hello!” he said.", "“Goodbye!”", "She left."]),
        ("He shouted “Stop!” Nobody did.", ["He shouted “Stop!”", "Nobody did."]),
        ("(Which was very likely true.) So on.", ["(Which was very likely true.)", "So on."]),
        ("Really!? Yes?! No!", ["Really!?", "Yes?!", "No!"]),
        ("他说：“你好！”然后走了。", ["他说：“你好！”", "然后走了。"]),
        ("他来了。她走了！真的吗？是的。", ["他来了。", "她走了！", "真的吗？", "是的。"]),
        ("「走吧。」他说。", ["「走吧。」", "他说。"]),
        ("他想了想……然后说不知道。好吧……", ["他想了想……然后说不知道。", "好吧……"]),
        ("真的吗！？当然。", ["真的吗！？", "当然。"]),
        ("It is 10 a.m. Now.", ["It is 10 a.m.", "Now."]),
        (
            "See No. 5 and vol. 3 here. I said no. Then left.",
            ["See No. 5 and vol. 3 here.", "I said no.", "Then left."],
        ),
        ("Go to example.com now. OK.", ["Go to example.com now.", "OK."]),
        ("No end here", ["No end here"]),
        ("  ", []),
    ],
)
def test_split_sentences_cases(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_packs_whole_sentences_greedily() -> None:
    text = "One two. Three four. Five six. Seven."
    assert chunk_text(text, 20) == ["One two. Three four.", "Five six. Seven."]
    assert chunk_text(text, 1000) == [text]


def test_long_sentence_splits_at_clause_marks_first() -> None:
    text = "Alice looked at the jury-box, and saw that, in her haste, she had put the Lizard in head downwards."
    pieces = chunk_text(text, 60)
    assert pieces[0] == "Alice looked at the jury-box, and saw that, in her haste,"
    assert_contract(text, pieces, 60)


def test_long_sentence_without_clause_marks_splits_at_spaces() -> None:
    text = "the quick brown fox jumps over the lazy dog " * 3
    pieces = chunk_text(text, 20)
    assert all(not p.startswith(" ") and " " not in (p[0], p[-1]) for p in pieces)
    assert all(word.isalpha() for p in pieces for word in p.split())  # no word was cut
    assert_contract(text, pieces, 20)


def test_long_cjk_sentence_splits_at_cjk_commas() -> None:
    text = "他站在山顶上，望着远方的城市，心里想着很多事情，却一句话也说不出来。"
    pieces = chunk_text(text, 20)
    assert pieces == ["他站在山顶上，望着远方的城市，", "心里想着很多事情，却一句话也说不出来。"]


def test_thousands_separator_is_not_a_clause() -> None:
    pieces = chunk_text("It cost 3,000,000 dollars in the end", 20)
    assert all("3,000,000" in p or "3" not in p for p in pieces)


def test_text_without_any_break_is_cut_anywhere() -> None:
    text = "a" * 95
    assert chunk_text(text, 20) == ["a" * 20] * 4 + ["a" * 15]


def test_hard_cut_does_not_separate_combining_marks() -> None:
    text = "e\u0301" * 30  # 60 code points, each e with a combining acute accent
    pieces = chunk_text(text, 21)
    assert_contract(text, pieces, 21)
    assert all(not p.startswith("\u0301") for p in pieces)


def test_rejects_non_positive_limit() -> None:
    with pytest.raises(UsageError):
        chunk_text("Hello.", 0)


def test_empty_input_gives_nothing() -> None:
    assert chunk_text("", 100) == []
    assert chunk_text(" \n\t\u3000 ", 100) == []


CHAPTER = Chapter(
    index=3,
    title="Chapter III. A Caucus-Race",
    paragraphs=("First sentence. Second sentence here.", "Only one.", "Last paragraph. Truly the end."),
)


def test_chunk_chapter_pauses_and_indexes() -> None:
    segments = chunk_chapter(CHAPTER, 25)
    assert [s.text for s in segments] == [
        "First sentence.",
        "Second sentence here.",
        "Only one.",
        "Last paragraph.",
        "Truly the end.",
    ]
    assert [s.pause_after for s in segments] == [
        Pause.SENTENCE,
        Pause.PARAGRAPH,
        Pause.PARAGRAPH,
        Pause.SENTENCE,
        Pause.END,
    ]
    assert [s.index for s in segments] == list(range(5))
    assert {s.chapter for s in segments} == {3}


def test_segments_never_span_paragraphs() -> None:
    chapter = Chapter(1, "T", ("Short.", "Also short."))
    assert [s.text for s in chunk_chapter(chapter, 500)] == ["Short.", "Also short."]


def test_announced_title_comes_first_with_title_pause() -> None:
    segments = chunk_chapter(CHAPTER, 25, announce_title=True)
    assert [s.text for s in segments[:2]] == ["Chapter III.", "A Caucus-Race"]
    assert [s.pause_after for s in segments[:2]] == [Pause.SENTENCE, Pause.TITLE]
    assert segments[2].text == "First sentence."
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[-1].pause_after is Pause.END
    untitled = Chapter(1, " ", ("Text.",))
    assert [s.text for s in chunk_chapter(untitled, 20, announce_title=True)] == ["Text."]


def test_chunk_book_one_tuple_per_chapter() -> None:
    other = Chapter(index=4, title="Chapter IV", paragraphs=("Hello there.",))
    book = Book(title="B", chapters=(CHAPTER, other))
    result = chunk_book(book, 500, announce_titles=True)
    assert len(result) == 2
    assert result[1][0].text == "Chapter IV" and result[1][0].pause_after is Pause.TITLE
    assert result[1][-1].chapter == 4 and result[1][-1].pause_after is Pause.END
    assert chunk_book(book, 500)[0][0].text == "First sentence. Second sentence here."
