"""A book against a key with a rate limit: paced, never failed by 429s, the limit learned and reported.

The server is the project's fake with a requests-per-minute bucket that answers 429 with retry-after and,
unless told not to, OpenAI's x-ratelimit-* headers on every answer. Limits are high (600-900 a minute) so a
run takes seconds; the pacing arithmetic at 60 a minute is tested in virtual time in test_limits.py, and
measured against a real server by `make bench`."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.fakeserver import FakeSpeechServer, Fault
from tests.helpers import FAKE_KEY, read_report, write_book


@pytest.fixture
def limited(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSpeechServer]:
    rpm, burst, headers = request.param
    with FakeSpeechServer(api_key=FAKE_KEY, ms_per_char=1.0, rpm=rpm, burst=burst, rate_headers=headers) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def run(book: Path, out: Path, *flags: str) -> int:
    return main(["--quiet", "convert", str(book), "-o", str(out), "--concurrency", "16", "--max-retries", "0", *flags])


@pytest.mark.parametrize("limited", [(900, 2, True)], indirect=True)
def test_a_book_under_a_tight_limit_finishes_and_learns_it_from_the_headers(
    limited: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=8)
    # No retries at all: only pacing and waiting out 429s can get 16 workers through a bucket of 2.
    assert run(book, tmp_path / "out") == 0
    report = read_report(tmp_path / "out")
    assert report["status"] == "done" and report["retries"] == 0
    assert all(c["status"] == "done" for c in report["chapters"])
    stats = limited.stats()
    assert stats.served == report["plan"]["segments"] == report["requests"]  # each part paid once
    rate = report["rate"]
    assert rate["rate_limited"] == stats.rate_limited  # every 429 the server sent is in the report
    # Until the first answer only a first wave of 4 goes (16 at once into a bucket of 2 had 14 refused): a
    # bucket that small still refuses a pair now and then (the pace allows a second's worth at once), but
    # refusals stay a small share of the requests.
    statuses = [r.status for r in limited.requests]
    assert statuses.count(429) <= len(statuses) // 4
    assert rate["limit_rpm"] == 900 and rate["limit_source"] == "headers"
    assert 0 < rate["requests_per_minute"] <= 900 * 1.05


@pytest.mark.parametrize("limited", [(900, 2, False)], indirect=True)
def test_a_limit_the_server_does_not_advertise_is_learned_from_its_429s(
    limited: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=8)
    assert run(book, tmp_path / "out") == 0
    report = read_report(tmp_path / "out")
    assert report["status"] == "done" and report["retries"] == 0
    assert report["rate"]["rate_limited"] >= 1 and report["rate"]["limit_source"] == "429"
    assert limited.stats().served == report["plan"]["segments"]


@pytest.mark.parametrize("limited", [(900, 20, False)], indirect=True)
def test_a_configured_limit_paces_from_the_first_request(
    limited: FakeSpeechServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIOBOOK_RPM", "900")  # the server allows a second's worth at once, as OpenAI does
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=8)
    assert run(book, tmp_path / "out") == 0
    report = read_report(tmp_path / "out")
    assert report["rate"]["limit_rpm"] == 900 and report["rate"]["limit_source"] == "config"
    assert report["rate"]["rate_limited"] <= 1 and limited.stats().rate_limited <= 1
    assert report["rate"]["waited_s"] > 0  # the requests were held back to the pace, not refused


def test_the_next_run_remembers_the_limit_and_paces_from_its_first_request(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = [0.0]  # the server's bucket lives on this clock: a night passes between runs in no time
    with FakeSpeechServer(
        api_key=FAKE_KEY, ms_per_char=1.0, rpm=600, burst=12, clock=lambda: time.monotonic() + later[0]
    ) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        assert run(write_book(tmp_path / "first.txt", chapters=2, paragraphs=8, seed=1), tmp_path / "out1") == 0
        blind = srv.stats().rate_limited
        assert blind <= 1  # a first wave of 4 (not all 16 at once) into a bucket of 12, until the headers spoke

        memory = (isolated_env / "audiobook-pipeline" / "rate-limits.json").read_text(encoding="utf-8")
        assert '"rpm": 600' in memory and FAKE_KEY not in memory  # the endpoint and a hash of the key only

        later[0] += 3600
        assert run(write_book(tmp_path / "second.txt", chapters=2, paragraphs=8, seed=2), tmp_path / "out2") == 0
        assert srv.stats().rate_limited == blind  # paced from its first request: no refusal this time
        assert read_report(tmp_path / "out2")["rate"]["rate_limited"] == 0


# --- a key that refuses everything ------------------------------------------------------------------------


def _first_paragraph(body: dict[str, object]) -> bool:
    return "Sentence 1 " in str(body.get("input"))  # write_book's first paragraph


def test_a_key_that_answers_only_429s_stops_after_the_patience_keeping_what_was_made(
    server: FakeSpeechServer, no_backoff: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=4)
    server.inject_for(lambda body: not _first_paragraph(body), Fault.rate_limit(retry_after=20))
    code = main(["convert", str(book), "-o", str(tmp_path / "out"), "--no-titles", "--rate-limit-patience", "300"])
    err = capsys.readouterr().err
    assert code == 1
    stopping = [line for line in err.splitlines() if "stopping:" in line]
    assert len(stopping) == 1 and "nothing but 429s (rate limit) for 5:0" in stopping[0]
    assert "rate_limit_patience = 300 s" in stopping[0]
    assert "Traceback" not in err
    statuses = [r.status for r in server.requests]
    assert statuses.count(200) == 1  # the one part the key let through is paid once and kept
    # Stopped within a pause of the patience: about 300 s of 20-s pauses, not MAX_RATE_LIMITED per request.
    assert statuses.count(429) <= 2 * 300 / 20
    report = read_report(tmp_path / "out")
    assert report["status"] == "failed" and report["synthesized"] == 1 and report["retries"] == 0
    # Counted by the parts that met them; a request withdrawn at the stop reports none.
    assert 1 <= report["rate"]["rate_limited"] <= statuses.count(429)


def test_after_ctrl_c_a_refused_request_is_not_sent_again(
    server: FakeSpeechServer, no_backoff: list[float], tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=8)
    arrived = [0]
    signalled: list[int] = []

    def refuse_and_interrupt(_body: dict[str, object]) -> bool:
        arrived[0] += 1
        if arrived[0] == 12:  # the server's thread: the run is told while its requests are out
            signalled.append(arrived[0])  # (the server's lock is held here: server.requests would wait on it)
            os.kill(os.getpid(), signal.SIGINT)
        return True

    server.inject_for(refuse_and_interrupt, Fault.rate_limit(retry_after=2))
    code = main(["--quiet", "convert", str(book), "-o", str(tmp_path / "out"), "--concurrency", "8"])
    assert code == 130
    # After the signal only the requests already on their way may arrive: nothing refused goes back in line
    # (before: each refused request was sent again, up to 30 times, and only a second Ctrl-C ended it).
    assert len(server.requests) <= signalled[0] + 8
    assert read_report(tmp_path / "out")["status"] == "interrupted"


def test_a_retry_after_of_a_day_stops_the_run_saying_when(
    server: FakeSpeechServer, no_backoff: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=3)
    server.inject_for(_first_paragraph, Fault.rate_limit(retry_after=86400))
    code = main(["convert", str(book), "-o", str(tmp_path / "out"), "--no-titles", "--concurrency", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(r"tried again in 1 day 0 h \(until 20\d\d-\d\d-\d\d \d\d:\d\d UTC\)", err)
    assert [r.status for r in server.requests] == [429]  # not retried after 60 s (was), nothing else sent
    report = read_report(tmp_path / "out")
    # README: a 429 never counts as a retry; it is in the rate section.
    assert report["retries"] == 0 and report["rate"]["rate_limited"] == 1
