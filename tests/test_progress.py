"""Progress: a bar on a terminal, plain timestamped-friendly log lines for cron and pipes."""

from __future__ import annotations

import logging

import pytest

from pipeline.progress import Progress


def test_without_a_terminal_progress_is_log_lines(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="audiobook")
    progress = Progress(tty=False, interval=3600)
    progress.start(total_chars=1000, done_chars=100, requests=3)
    for _ in range(3):
        progress.advance(300)
    progress.note("wrote 01 Opening.mp3")
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "3 requests to make, 100 of 1000 characters already cached"
    assert lines[1] == "3/3 requests, 1000/1000 characters"  # the interval holds back all but the last
    assert lines[2] == "wrote 01 Opening.mp3"
    assert "\r" not in capsys.readouterr().err  # no bar redraws in a log file


def test_on_a_terminal_progress_is_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(tty=True)
    progress.start(total_chars=1000, done_chars=0, requests=2)
    progress.advance(500)
    progress.advance(500)
    progress.close()
    err = capsys.readouterr().err
    assert "speaking" in err and "2/2 requests" in err and "1.00k/1.00k" in err


def test_the_line_says_when_the_rate_limit_holds_the_run_back(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    held = "held back by the rate limit: 59/min (limit 60/min from headers)"
    caplog.set_level(logging.INFO, logger="audiobook")
    progress = Progress(tty=False, interval=0)
    progress.rate = lambda: held
    progress.start(total_chars=100, done_chars=0, requests=2)
    progress.advance(50)
    progress.rate = lambda: None  # not held back any more: nothing said
    progress.advance(50)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1].startswith("1/2 requests, 50/100 characters") and lines[1].endswith(f"; {held}")
    assert "held back" not in lines[2]

    bar = Progress(tty=True)
    bar.rate = lambda: held
    bar.start(total_chars=100, done_chars=0, requests=2)
    bar.advance(50)
    bar.close()
    assert held in capsys.readouterr().err


def test_a_run_that_gets_no_answer_still_says_how_it_stands(caplog: pytest.LogCaptureFixture) -> None:
    """Against a key that answers only 429s nothing is ever answered: the line must come without answers."""
    caplog.set_level(logging.INFO, logger="audiobook")
    now = [0.0]
    progress = Progress(tty=False, interval=15, clock=lambda: now[0])
    progress.rate = lambda: "nothing but 429s for 1:05 (9 refused since the last answer)"
    progress.start(total_chars=100, done_chars=0, requests=2)
    progress.tick()  # not yet due
    now[0] = 16.0
    progress.tick()
    now[0] = 20.0
    progress.tick()  # due again only 15 s after the last line
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1:] == ["0/2 requests, 0/100 characters; nothing but 429s for 1:05 (9 refused since the last answer)"]
