"""The part store: keys that change exactly when the sound would, and writes that are all or nothing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipeline import store as store_module
from pipeline.cli import main
from pipeline.models import VoiceSpec
from pipeline.store import FileStore, Stores, part_key
from tests.fakeserver import FakeSpeechServer
from tests.helpers import write_book

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


def test_a_full_cache_disk_stops_the_sending_keeps_every_stored_part_and_says_so_once(
    server: FakeSpeechServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The disk fills after eight parts: every later write fails at the os level, as ENOSPC does.
    real_write, written, stored = store_module.atomic_write, [0], 8

    def filling_write(path: Path, data: bytes | str) -> Path:
        written[0] += 1
        if written[0] > stored:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(store_module, "atomic_write", filling_write)
    concurrency = 8
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=10, sentences=3)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["-q", "convert", str(book), "-o", str(out), "--no-pack", "--cache-dir", str(cache)]
    assert main([*argv, "--concurrency", str(concurrency)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # One line says it, naming the folder and the error (not one line per answer that could not be kept).
    said = [line for line in err if "No space left on device" in line]
    assert said[-1] == err[-1] and len(said) <= 2 and f"cannot store audio in the cache {cache}" in err[-1]
    assert not any("segment" in line for line in err)
    first = len(server.requests)
    # Nothing is sent once a write failed: only what was already on its way (each worker's one request, and
    # the one it sent while its part was being written).
    assert first <= stored + 1 + 2 * concurrency
    assert len(list(cache.rglob("*.mp3"))) == stored  # every part the disk took is kept

    monkeypatch.setattr(store_module, "atomic_write", real_write)  # room again: the rest, and only the rest
    server.clear()
    assert main([*argv, "--concurrency", str(concurrency)]) == 0
    total = 3 * 10 + 3  # a request a paragraph, and each chapter's title
    assert len(server.requests) == total - stored
