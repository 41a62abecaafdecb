"""Shared fixtures. Every test runs with its own cache folder and no API settings from the real environment."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline import limits
from pipeline.tts import openai_http
from tests.fakeserver import FakeSpeechServer
from tests.helpers import FAKE_KEY, HUMAN_MS_PER_CHAR
from tests.redisserver import RedisServer, require_redis_server

# Properties, not speed: a 200 ms deadline per example fails on a loaded 2-core machine (speed is make bench's).
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("AUDIOBOOK_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's keys, base URL, config or cache."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AUDIOBOOK_")):
            monkeypatch.delenv(name, raising=False)
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    # The fake voices of most tests speak at no human rate (the fake server at 4 ms a character, 250 a
    # second): verification, on by default, would rightly call every part cut short. Its own tests
    # (test_verify.py) turn it on against a server that speaks at a human rate.
    monkeypatch.setenv("AUDIOBOOK_VERIFY", "off")
    return cache


def corpus_file(name: str) -> Path:
    """A file of the shared public-domain corpus, or skip: a user's clone has no ../shared (CI always has it)."""
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus file {name} not found at {CORPUS} (../shared/corpus is absent outside CI)")
    return path


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every OpenAISpeech and rate governor built during the test records its waits instead of sleeping; the
    governors' clock jumps by each wait, so a 429's pause passes at once."""
    waits: list[float] = []
    skipped = [0.0]

    def clock() -> float:
        return time.monotonic() + skipped[0]

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        skipped[0] += max(0.0, seconds)
        await asyncio.sleep(0)

    async def governor_sleep(seconds: float) -> None:  # not recorded: a pause may be slept in several pieces
        skipped[0] += max(0.0, seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(openai_http, "OpenAISpeech", functools.partial(openai_http.OpenAISpeech, sleep=fake_sleep))
    monkeypatch.setattr(limits, "Governor", functools.partial(limits.Governor, sleep=governor_sleep, clock=clock))
    return waits


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSpeechServer]:
    """The fake speech server, with OPENAI_API_KEY and OPENAI_BASE_URL pointing the program at it."""
    with FakeSpeechServer(api_key=FAKE_KEY, ms_per_char=4.0) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (see ``tests/redisserver.py``); skips where Debian's package is missing."""
    with RedisServer(require_redis_server()) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the test's own redis-server."""
    return redis_server.url


@pytest.fixture
def human(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSpeechServer]:
    """The fake server at a human speech rate, the program pointed at it, verification at its default (the
    other tests turn it off: their fake voice speaks at no human rate)."""
    with FakeSpeechServer(api_key=FAKE_KEY, ms_per_char=HUMAN_MS_PER_CHAR) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        monkeypatch.delenv("AUDIOBOOK_VERIFY", raising=False)  # the default: timing
        yield srv
