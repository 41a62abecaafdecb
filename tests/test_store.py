"""The part store: keys that change exactly when the sound would, and writes that are all or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.models import VoiceSpec
from pipeline.store import FileStore, Stores, part_key

SPEC = VoiceSpec("gpt-4o-mini-tts", "alloy")


def test_key_changes_with_everything_that_changes_the_sound() -> None:
    base = part_key("openai:api.openai.com/v1", SPEC, "Hello.")
    variants = [
        part_key("openai:relay.example/v1", SPEC, "Hello."),
        part_key("openai:api.openai.com/v1", VoiceSpec("tts-1", "alloy"), "Hello."),
        part_key("openai:api.openai.com/v1", VoiceSpec("gpt-4o-mini-tts", "nova"), "Hello."),
        part_key("openai:api.openai.com/v1", VoiceSpec("gpt-4o-mini-tts", "alloy", "Whisper."), "Hello."),
        part_key("openai:api.openai.com/v1", VoiceSpec("gpt-4o-mini-tts", "alloy", speed=1.25), "Hello."),
        part_key("openai:api.openai.com/v1", VoiceSpec("gpt-4o-mini-tts", "alloy", response_format="wav"), "Hello."),
        part_key("openai:api.openai.com/v1", SPEC, "Hello!"),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # Spelling out the default format does not change the sound, so it does not change the key.
    assert (
        part_key("openai:api.openai.com/v1", VoiceSpec("gpt-4o-mini-tts", "alloy", response_format="mp3"), "Hello.")
        == base
    )
    assert part_key("openai:api.openai.com/v1", SPEC, "Hello.") == base


def test_keys_and_layout_are_those_earlier_versions_wrote(tmp_path: Path) -> None:
    # A cache filled by an earlier version must still hit: the key of a known request, and where it lives.
    key = part_key("openai:api.openai.com/v1", SPEC, "Hello.")
    assert key == "bb942adf681c2946809c855b85118c9a4b3ad6d4dc973c5bc5d0789729ec18f4"
    old = tmp_path / "parts" / "bb" / f"{key}.mp3"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"ID3 written by 0.1")
    store = FileStore(tmp_path)
    assert store.has(key, "mp3") and store.get(key, "mp3") == b"ID3 written by 0.1"


def test_put_is_atomic_and_get_sees_only_whole_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FileStore(tmp_path)
    key = part_key("x", SPEC, "text")
    assert cache.get(key) is None and not cache.has(key)
    cache.put(key, b"ID3 audio bytes")
    path = cache.path(key)
    assert cache.get(key) == b"ID3 audio bytes" and cache.has(key)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    # A crash between writing and renaming leaves no part under the final name and no half file.
    other = part_key("x", SPEC, "other text")

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put(other, b"ID3 more audio")
    assert cache.get(other) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_empty_files_are_not_hits_and_eviction_forgets(tmp_path: Path) -> None:
    cache = FileStore(tmp_path)
    key = part_key("x", SPEC, "text")
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(b"")
    assert cache.get(key) is None and not cache.has(key)
    cache.put(key, b"ID3 data")
    cache.evict(key)
    assert cache.get(key) is None


def test_one_store_per_distinct_location(tmp_path: Path) -> None:
    stores = Stores()
    a, b = stores.at(tmp_path / "a"), stores.at(str(tmp_path / "b"))
    assert stores.at(str(tmp_path / "a")) is a and a is not b
    assert [s.location for s in stores] == [str(tmp_path / "a"), str(tmp_path / "b")]
