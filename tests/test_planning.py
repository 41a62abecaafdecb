"""Planning: what a book needs, looked up and sent nowhere; packing as the backend and the settings say."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.models import Book, Chapter, Pause
from pipeline.planning import plan_book
from pipeline.report import format_plan
from pipeline.store import FileStore

BOOK = Book(
    "Dialogue",
    (Chapter(1, "Talk", tuple(f'"Line {i} of the talk," she said.' for i in range(40))),),
    language="en",
)


@pytest.mark.parametrize(
    ("overrides", "packed"),
    [
        ({}, True),  # a remote speech API packs: a key's rate limit makes every request count
        ({"backend": "local"}, False),  # the offline voice has no limit: a part per paragraph
        ({"pack": False}, False),
        ({"backend": "local", "pack": True}, True),
    ],
)
def test_packing_follows_the_backend_unless_the_settings_say(
    tmp_path: Path, overrides: dict[str, object], packed: bool
) -> None:
    settings = load_settings(env={}, overrides={"announce_titles": False, **overrides})
    plan = plan_book(BOOK, settings, tmp_path / "out", FileStore(tmp_path / "cache"))
    (chapter,) = plan.chapters
    if packed:
        assert len(chapter.segments) == 3  # 40 lines of ~33 characters in requests of at most 500
        assert all("\n" in s.text for s in chapter.segments)  # paragraph breaks kept as line breaks
    else:
        assert len(chapter.segments) == 40


def test_a_plan_sends_nothing_and_counts_what_is_cached(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"announce_titles": False})
    store = FileStore(tmp_path / "cache")
    first = plan_book(BOOK, settings, tmp_path / "out", store)
    store.put(first.chapters[0].keys[1], b"ID3 part", "mp3")
    again = plan_book(BOOK, settings, tmp_path / "out", store)
    assert again.chapters[0].cached == (False, True, False)
    assert len(again.needed) == 2 and again.characters_to_send == first.characters - len(
        again.chapters[0].segments[1].text
    )
    assert not (tmp_path / "out").exists()


def test_a_language_the_offline_voice_lacks_is_said_in_the_plan_and_the_log(  # qaa: a private-use code
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env={}, overrides={"backend": "local", "language": "qaa"})
    with caplog.at_level("WARNING", logger="audiobook"):
        plan = plan_book(BOOK, settings, tmp_path / "out", FileStore(tmp_path / "cache"))
    (note,) = plan.summary()["notes"]
    assert "no voice for language 'qaa'" in note and "audiobook voices" in note
    assert any("'qaa'" in r.getMessage() for r in caplog.records)
    assert "Note:" in format_plan(plan.summary()) and "'qaa'" in format_plan(plan.summary())
    settings = load_settings(env={}, overrides={"backend": "local", "language": "fr"})
    assert plan_book(BOOK, settings, tmp_path / "out", FileStore(tmp_path / "cache")).notes == ()


def test_text_with_nothing_to_say_is_not_sent(tmp_path: Path) -> None:
    book = Book("Emoji", (Chapter(1, "Party", ("We danced all night.", "🎉🎉🎉 ✨", "Then we slept.")),))
    settings = load_settings(env={}, overrides={"announce_titles": False, "pack": False})
    plan = plan_book(book, settings, tmp_path / "out", FileStore(tmp_path / "cache"))
    texts = [s.text for s in plan.chapters[0].segments]
    assert texts == ["We danced all night.", "Then we slept."]
    assert plan.chapters[0].segments[0].pause_after == Pause.PARAGRAPH
    assert "1 segment(s) with no letter or digit to speak" in plan.notes[0]
    assert list(plan.needed.values()) == texts
