"""Small shared helpers for the end-to-end and batch tests."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

REPO = Path(__file__).resolve().parent.parent
HUMAN_MS_PER_CHAR = 60.0  # the fake server at a human speech rate: about 14 non-space characters a second

_WORDS = [
    "river",
    "stone",
    "lantern",
    "harbour",
    "morning",
    "quiet",
    "window",
    "garden",
    "letter",
    "candle",
    "orchard",
    "meadow",
    "bridge",
    "shadow",
    "evening",
    "kettle",
    "compass",
    "paper",
    "thunder",
    "feather",
    "ladder",
    "silver",
    "market",
    "winter",
    "summer",
]


def write_book(path: Path, chapters: int = 3, paragraphs: int = 6, sentences: int = 5, seed: int = 0) -> Path:
    """A plain-text book with `Chapter N: Title` headings and distinct sentences (no two segments alike)."""
    lines: list[str] = []
    n = seed * 100_000
    for c in range(1, chapters + 1):
        lines += [f"Chapter {c}: The {_WORDS[(c + seed) % len(_WORDS)].title()}", ""]
        for _p in range(paragraphs):
            sent = []
            for _s in range(sentences):
                n += 1
                words = [_WORDS[(n * 7 + k * 3) % len(_WORDS)] for k in range(6 + n % 9)]
                sent.append(f"Sentence {n} tells of the {' '.join(words)}.")
            lines += [" ".join(sent), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# The table of contents of the corpus EPUB (alice-pg11.epub): what its chapters must be called.
ALICE_TOC = [
    "CHAPTER I. Down the Rabbit-Hole",
    "CHAPTER II. The Pool of Tears",
    "CHAPTER III. A Caucus-Race and a Long Tale",
    "CHAPTER IV. The Rabbit Sends in a Little Bill",
    "CHAPTER V. Advice from a Caterpillar",
    "CHAPTER VI. Pig and Pepper",
    "CHAPTER VII. A Mad Tea-Party",
    "CHAPTER VIII. The Queen’s Croquet-Ground",
    "CHAPTER IX. The Mock Turtle’s Story",
    "CHAPTER X. The Lobster Quadrille",
    "CHAPTER XI. Who Stole the Tarts?",
    "CHAPTER XII. Alice’s Evidence",
]


FAKE_KEY = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"  # what the fake speech server expects


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this one's, minus the user's API and program settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUDIOBOOK_"))}
    # Verification off unless a test asks for it: the fake server's usual 4 ms a character is no human rate
    # (see conftest.isolated_env).
    return {**env, "AUDIOBOOK_VERIFY": "off", **(extra or {}), "PYTHONPATH": str(REPO)}


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real program in a child process, as a user or cron runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=timeout,
        cwd=cwd,
    )


def read_report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def tiny_png() -> bytes:
    """A valid 2x2 red PNG, built by hand (no image library), that ffmpeg and players accept as cover art."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def claim_huge_size(path: Path, member: str) -> None:
    """Make the zip's central directory declare ~4 GB uncompressed for ``member`` (a zip bomb by its header)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = 0
    while (entry := data.find(b"PK\x01\x02", pos)) != -1:
        name_len = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46 : entry + 46 + name_len] == name:
            struct.pack_into("<I", data, entry + 24, 0xFFFFFFFE)  # uncompressed size
        pos = entry + 4
    path.write_bytes(bytes(data))


def run_in_threads(work: Callable[[T], R], args: Sequence[T], *, within: float) -> list[R]:
    """``work(arg)`` for each arg, each in a thread of its own, their results in order. Threads are daemons
    joined against one deadline: one that is still running after ``within`` seconds fails the test naming it,
    where ``ThreadPoolExecutor``'s exit would wait for it for ever (and no pytest timeout could end the wait)."""
    results: list[Any] = [None] * len(args)
    errors: list[BaseException] = []

    def one(i: int, arg: T) -> None:
        try:
            results[i] = work(arg)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, a), name=f"worker-{i}", daemon=True) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + within
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        raise AssertionError(f"still running after {within:g} s: {', '.join(stuck)}")
    if errors:
        raise errors[0]
    return results
