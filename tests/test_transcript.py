"""The transcript check's comparison (pipeline/transcript.py): normalisation, alignment and the verdict."""

from __future__ import annotations

import random

import pytest

from pipeline.transcript import COVERAGE_MIN, Coverage, aligned, compare, tokens
from tests.fakeserver import noisy, sentences, without_a_sentence

ALICE = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do. "
    "Once or twice she had peeped into the book her sister was reading, but it had no pictures or "
    "conversations in it. “And what is the use of a book,” thought Alice, “without pictures or conversations?” "
    "So she was considering in her own mind whether the pleasure of making a daisy-chain would be worth the "
    "trouble of getting up and picking the daisies."
)
ZH = (
    "小镇坐落在一条宽阔的河流旁边，河水一年四季都很清澈。每天早晨，太阳刚刚升起，镇上的人们就开始忙碌起来。"
    "卖豆浆的老王总是第一个打开店门，他把桌子和椅子一张一张地摆到街边。住在对面的李奶奶每天都来买一碗豆浆和两根油条。"
)


@pytest.mark.parametrize(
    ("text", "said", "language"),
    [
        ("Hello, World!", "hello world", "en"),
        ("“Don’t,” she said—quietly.", '"dont" She said - quietly', "en"),
        ("a well-known fact", "a well known fact", "en"),
        ("He was 42.", "He was forty-two.", "en"),
        ("the 3rd day", "the third day", "en"),
        ("In 1865 it rained.", "in eighteen sixty-five it rained", "en"),
        ("1,000 men", "one thousand men", "en"),
        ("in 1865 200 men", "in eighteen sixty-five two hundred men", "en"),  # two numbers, not 1865200
        ("1\u202f000 men", "one thousand men", "en"),
        ("100 men", "one hundred men", "en"),
        ("105 men", "one hundred five men", "en"),
        ("about 3.5 miles", "about three point five miles", "en"),
        ("50% off", "fifty percent off", "en"),
        ("ＦＵＬＬ width ２", "full width two", "en"),
        ("STRASSE", "straße", "de"),
        ("Er war 21.", "Er war einundzwanzig.", "de"),
        ("她在1865年写了三本书。", "她在一八六五年写了3本书", "zh"),
        ("一千八百六十五年", "1865年", "zh"),
        ("十五个人", "15个人", "zh"),
        ("二〇二四年春天", "2024年春天", None),  # the language unknown: CJK text reads numbers the CJK way
    ],
)
def test_normalisation_makes_equal_what_a_recogniser_writes_differently(
    text: str, said: str, language: str | None
) -> None:
    assert tokens(text, language=language) == tokens(said, language=language)
    result = compare(text, said, language=language)
    assert result.coverage == 1.0 and result.extra == 0.0 and not result.suspect


def test_a_spelt_out_and_is_extra_not_missing() -> None:
    result = compare("105 men", "one hundred and five men", language="en")
    assert result.coverage == 1.0 and result.extra == pytest.approx(0.2)


def test_cjk_is_compared_by_character_and_latin_by_word() -> None:
    assert tokens("河水很清澈。", language="zh") == ["河", "水", "很", "清", "澈"]
    assert tokens("iPhone 很好", language="zh") == ["iphone", "很", "好"]
    assert tokens("the river", language="en") == ["the", "river"]
    one_wrong = compare("河水很清澈", "河水很清撤", language="zh")
    assert one_wrong.coverage == pytest.approx(0.8) and one_wrong.by_char


def test_the_alignment_is_in_order_not_a_bag_of_words() -> None:
    text = "one two three. four five six."
    swapped = compare(text, "four five six. one two three.", language="en")
    assert swapped.coverage == 0.5 and swapped.extra == 0.5  # every word is there, but half out of order


def test_a_sentence_said_twice_is_not_coverage_of_another() -> None:
    text = "The cat sat on the mat. A dog ran by the door."
    twice = compare(text, "The cat sat on the mat. The cat sat on the mat.", language="en")
    assert twice.coverage < COVERAGE_MIN and twice.extra > 0.4 and twice.suspect
    assert twice.missing[0] in ("a dog ran by the door", "a dog ran by", "dog ran by the door")


def test_a_phrase_the_text_repeats_is_matched_to_the_right_saying() -> None:
    # difflib's greedy longest block paired the first "i didnt know that" with the transcript's second and lost
    # 11 words of a clean transcript; the longest common subsequence loses only the noise.
    text = "I didn’t know that Cheshire cats always grinned; in fact, I didn’t know that cats could grin."
    said = "I didn't know Cheshire cafs always grinned un fzct I didnt know that could grin"
    result = compare(text, said, language="en")  # 5 of 17 words mis-heard: only those are missing
    assert result.missing == ("in fact", "that", "cats") and result.coverage == pytest.approx(12 / 17)


def test_a_dropped_sentence_is_missing_as_a_run_and_named() -> None:
    text = "It was a bright cold day in April. The clocks were striking thirteen. Winston Smith slipped quickly in."
    result = compare(text, "It was a bright cold day in April. Winston Smith slipped quickly in.", language="en")
    assert result.missing == ("the clocks were striking thirteen",)
    assert result.longest_gap == 5 and result.coverage == pytest.approx(13 / 18) and not result.extra
    assert result.suspect and "the clocks were striking thirteen" in result.describe()


def test_run_on_babble_is_extra() -> None:
    text = "Short and sweet."
    result = compare(text, "short and sweet and then the voice went on and on about nothing at all", language="en")
    assert result.coverage == 1.0 and result.extra > 0.7 and result.suspect


def test_empty_sides() -> None:
    assert compare("", "", language="en") == Coverage(1.0, 0.0, (), 0, 0, False)
    nothing = compare("Some words here.", "", language="en")
    assert nothing.coverage == 0.0 and nothing.longest_gap == 3 and nothing.suspect


def test_aligned_matches_a_longest_common_subsequence() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randrange(0, 12))]
        b = [rng.choice("abcde") for _ in range(rng.randrange(0, 12))]
        hit = aligned(a, b)
        # The matched tokens of ``a`` are a subsequence of ``b`` and as many as the textbook table finds.
        matched = [t for t, ok in zip(a, hit, strict=True) if ok]
        it = iter(b)
        assert all(t in it for t in matched)
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
        assert len(matched) == table[len(a)][len(b)]


@pytest.mark.parametrize(("text", "language"), [(ALICE, "en"), (ZH, "zh")])
def test_a_good_recognisers_noise_passes_and_a_dropped_sentence_does_not(text: str, language: str) -> None:
    for seed in range(20):
        said = noisy(text, random.Random(seed), substitute=0.05, delete=0.01, insert=0.01)
        assert not compare(text, said, language=language).suspect, said
    assert len(sentences(text)) >= 3
    for drop in range(len(sentences(text))):
        rest = "".join(s for i, s in enumerate(sentences(text)) if i != drop)
        result = compare(text, noisy(rest, random.Random(drop)), language=language)
        assert result.suspect, (drop, result)


def test_without_a_sentence_is_reproducible_and_leaves_one_out() -> None:
    once = without_a_sentence(ALICE)
    assert once == without_a_sentence(ALICE) and len(sentences(once)) == len(sentences(ALICE)) - 1
    assert without_a_sentence("just one sentence here") == "just one"
