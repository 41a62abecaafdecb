"""Progress on stderr: a tqdm bar on a terminal, plain timestamped log lines otherwise (cron, CI, pipes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("audiobook")

TICK_S = 1.0  # between answers the line is looked at this often: a run that gets none still says how it stands


@dataclass(frozen=True)
class ChapterEvent:
    """What happened to one chapter of a run, for a front end that shows chapters as they go (the web page).

    kind: "part" a part it needs is in the store (``count`` parts); "retry" a request of its took ``count``
    retries; "remade" verification asked for one of its parts again; "failed" a part failed (``detail``: why);
    "written" its file is written (``detail``: the file name); "not written" (``detail``: why)."""

    out_dir: Path  # the book's output folder: which book of the run
    chapter: int  # Chapter.index
    kind: str
    count: int = 1
    detail: str = ""


class Progress:
    """Counts characters spoken (cached ones count as done at the start) and requests left.

    A front end may subclass it: ``chapter`` hears each ChapterEvent, and ``interrupt`` (set by the run while
    it runs) stops the run from any thread as Ctrl-C does: the requests in flight land, the rest wait in the
    part cache for the next run."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        tty: bool | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.enabled = enabled
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval = interval
        self._clock = clock
        self._ticker: asyncio.Task[None] | None = None
        self._bar: tqdm | None = None
        self._total = self._done = 0
        self._requests = self._answered = 0
        self._started = self._last_log = 0.0
        # What holds the run back right now, if anything ("held back by the rate limit: 58/min ..."); the run
        # sets it to ask its rate governors.
        self.rate: Callable[[], str | None] = lambda: None
        self.interrupt: Callable[[str], None] = lambda _why: None

    def chapter(self, event: ChapterEvent) -> None:
        """A chapter's news (the terminal's line does not show chapters)."""

    def start(self, total_chars: int, done_chars: int, requests: int) -> None:
        self._total, self._done, self._requests = total_chars, done_chars, requests
        self._started = self._last_log = self._clock()
        if not self.enabled:
            return
        with contextlib.suppress(RuntimeError):  # started outside an event loop: lines come with answers only
            self._ticker = asyncio.get_running_loop().create_task(self._ticking())
        if self.tty:
            self._bar = tqdm(
                total=total_chars,
                initial=done_chars,
                unit="char",
                unit_scale=True,
                file=sys.stderr,
                dynamic_ncols=True,
                desc="speaking",
            )
            self._bar.set_postfix_str(f"0/{requests} requests")
        else:
            log.info("%d requests to make, %d of %d characters already cached", requests, done_chars, total_chars)

    def advance(self, chars: int) -> None:
        self._done += chars
        self._answered += 1
        if not self.enabled:
            return
        held = self.rate()
        if self._bar is not None:
            self._bar.update(chars)
            self._bar.set_postfix_str(self._postfix(held), refresh=False)
            return
        now = self._clock()
        if now - self._last_log >= self.interval or self._answered == self._requests:
            self._log_line(now, held)

    def tick(self) -> None:
        """Between answers: the bar's word on the rate limit is refreshed, and a log line is due every
        ``interval`` even when nothing is answered (a key that answers only 429s shows that it does)."""
        if not self.enabled:
            return
        held = self.rate()
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(held))
            return
        now = self._clock()
        if now - self._last_log >= self.interval:
            self._log_line(now, held)

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def _postfix(self, held: str | None) -> str:
        return f"{self._answered}/{self._requests} requests" + (f"; {held}" if held else "")

    def _log_line(self, now: float, held: str | None) -> None:
        self._last_log = now
        rate = (self._answered / (now - self._started)) if now > self._started else 0.0
        left = self._requests - self._answered
        eta = f", about {left / rate:.0f}s left" if rate > 0 and left else ""
        log.info(
            "%d/%d requests, %d/%d characters%s%s",
            self._answered,
            self._requests,
            self._done,
            self._total,
            eta,
            f"; {held}" if held else "",
        )

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            log.info("%s", message)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
