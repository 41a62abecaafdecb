"""``audiobook web``: a page to convert books (upload or link, plan and cost, live progress, chapters to play
as they land, the M4B and a zip to download, a library), on Starlette served by uvicorn. An optional extra:
``pip install 'audiobook-pipeline[web]'``. It calls ``pipeline.app`` only, as the command line does."""

from __future__ import annotations

import socket
from collections.abc import Callable

from pipeline.errors import UsageError
from pipeline.web.pages import WebSettings, create_app

__all__ = ["WebSettings", "create_app", "serve"]


def serve(settings: WebSettings, port: int, ready: Callable[[str], None] = lambda _url: None) -> None:
    """Serve the page until Ctrl-C; a job running then is interrupted and can be resumed later."""
    import uvicorn

    from pipeline.addresses import Reach, reach
    from pipeline.asgi import StoppableServer
    from pipeline.web import security

    security.check_reach(settings.host, settings.token)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=5,
        http="h11",  # h11 caps a request's head (16 KiB); httptools, in the extra for `serve`, caps nothing
    )  # fmt: skip
    server = StoppableServer(config)  # Ctrl-C or SIGTERM: stop, and exit 0
    sock = _bind(settings.host, port)  # here, so the port (0: any free one) is known before serving
    port = sock.getsockname()[1]
    if reach(settings.host) is Reach.EVERY_INTERFACE:
        ready(f"http://<this machine's address>:{port}/ (every interface; sign in with the token)")
    else:
        ready(f"http://{f'[{settings.host}]' if ':' in settings.host else settings.host}:{port}/")
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or UsageError in one line (uvicorn's own bind logs and exits)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        # Listening now: the address is printed before uvicorn starts, and a client sent there at once is queued
        # rather than refused.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock
