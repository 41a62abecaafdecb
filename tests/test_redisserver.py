"""The throwaway redis-server that tests of Redis-backed parts start (``tests/redisserver.py``)."""

from __future__ import annotations

import pytest

from tests.redisserver import MISSING, RedisServer, ping, require_redis_server


def test_the_test_server_starts_stops_and_comes_back_on_its_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0" and ping(port)
    redis_server.stop()
    assert not ping(port) and not redis_server.running
    redis_server.start()
    assert ping(port) and redis_server.port == port
    assert not list(redis_server.folder.glob("*.rdb")) and not list(redis_server.folder.glob("appendonly*"))


def test_without_redis_server_the_tests_skip_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="redis-server not found: install Debian's redis-server"):
        require_redis_server()
    with pytest.raises(FileNotFoundError, match=MISSING):
        RedisServer()


def test_leaving_the_block_stops_the_server_and_removes_its_folder(redis_url: str) -> None:
    with RedisServer(require_redis_server()) as server:
        folder, port = server.folder, server.port
        assert ping(port) and server.url != redis_url  # a server of its own, beside the fixture's
    assert not ping(port) and not folder.exists()
