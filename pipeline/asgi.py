"""uvicorn's server as both of our ASGI apps run it (``audiobook serve`` and ``audiobook web``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn


class StoppableServer(uvicorn.Server):
    """uvicorn's server, but Ctrl-C and SIGTERM only stop it (a second Ctrl-C stops waiting for the requests in
    progress): uvicorn would raise the signal again once stopped, and SIGTERM would then kill the process
    instead of letting the command return and exit 0 (a service manager would count that a failure)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
