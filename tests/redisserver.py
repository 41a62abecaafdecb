"""A throwaway ``redis-server`` for tests: on a free loopback port, in a temporary folder, persisting nothing.

    with RedisServer() as server:          # started, answering PING
        client = redis.Redis.from_url(server.url)
        server.stop()                      # Redis going away mid-run...
        server.start()                     # ...and coming back on the same port, empty

Needs Debian's ``redis-server`` (``apt-get install redis-server``); ``require_redis_server`` skips a test without
it. It speaks RESP itself for PING, so it needs no Redis client package. The fixtures ``redis_server`` and
``redis_url`` are in ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

MISSING = "redis-server not found: install Debian's redis-server package"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The path of ``redis-server``, or skip the test."""
    path = redis_server_path()
    if path is None:
        pytest.skip(MISSING)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``start`` it (or use ``with``), ``stop`` it, start it again on the same
    port. ``url`` is ``redis://127.0.0.1:PORT/0``."""

    def __init__(self, executable: str | None = None, port: int | None = None) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError(MISSING)
        self.executable = found
        self._port_chosen = port is None  # ours to change if another process takes it before the server binds
        self.port = port or free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="redis-test-")
        self.folder = Path(self._folder.name)
        self.log = self.folder / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server (again: on the same port, empty) and wait until it answers PING."""
        if self.running:
            return self
        for attempt in range(3):
            if self._launch():
                self._port_chosen = False  # a restart comes back where the clients look
                return self
            if not self._port_chosen or attempt == 2:
                break
            self.port = free_port()
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def _launch(self) -> bool:
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                   "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log)]  # fmt: skip
        process = self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        self._folder.cleanup()

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
