"""``audiobook web``: a page to convert books (upload or link, plan and cost, live progress, chapters to play
as they land, the M4B and a zip to download, a library), on Starlette served by uvicorn. An optional extra:
``pip install 'audiobook-pipeline[web]'``. It calls ``pipeline.app`` only, as the command line does."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.web.pages import WebSettings, create_app

__all__ = ["WebSettings", "create_app", "serve"]


def serve(settings: WebSettings, port: int, ready: Callable[[str], None] = lambda _url: None) -> None:
    """Serve the page until Ctrl-C; a job running then is interrupted and can be resumed later."""
    import uvicorn

    from pipeline.web import security

    security.check_reach(settings.host, settings.token)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    server = uvicorn.Server(config)
    sock = config.bind_socket()  # bound here, so the port (0: any free one) is known before serving
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    ready(f"http://{host}:{sock.getsockname()[1]}/")
    server.run(sockets=[sock])
