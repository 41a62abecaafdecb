"""The web page's routes: upload or link -> plan (nothing sent) -> start -> live progress (server-sent events)
-> chapters to play, the M4B and a zip to download; the library of converted books. Every path served is
found from a job id (checked against the store) and the job's own records, never taken from the request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline import app as library_app
from pipeline.addresses import Reach, reach
from pipeline.config import Settings, limits_file, load_settings
from pipeline.errors import AudiobookError
from pipeline.names import CHAPTER_FOLDERS
from pipeline.planning import BookPlan
from pipeline.report import clock, read_written
from pipeline.tts import registry
from pipeline.tts.registry import Synthesizers
from pipeline.web import security
from pipeline.web import store as jobs
from pipeline.web.runner import JobRunner, read_source
from pipeline.web.security import UploadRefused

log = logging.getLogger("audiobook")

EVENT_S = 0.3  # how often a job's progress is looked at for its event stream
FORM_SLACK = 64 * 1024  # the multipart form's own bytes beside the file
COVER_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}


@dataclass(frozen=True)
class WebSettings:
    data: Path  # jobs, uploads, covers and the books made, all under it
    config: Path | None = None  # the settings file every job starts from (backend, key's variable, engine...)
    host: str = "127.0.0.1"
    token: str | None = None  # required when set, and always beyond loopback
    max_upload: int = 50 * 1024 * 1024
    env: Mapping[str, str] | None = None  # where keys are read (None: the environment)


class _State:
    def __init__(self, settings: WebSettings):
        self.settings = settings
        settings.data.mkdir(parents=True, exist_ok=True)
        for sub in ("uploads", "books", "covers"):
            (settings.data / sub).mkdir(exist_ok=True)
        self.secret = security.server_secret(settings.data)
        self.store = jobs.JobStore(settings.data)
        self.runner = JobRunner(self.store, settings.data, settings.config, settings.env)
        self.templates = Environment(
            loader=PackageLoader("pipeline.web", "templates"), autoescape=select_autoescape(default=True)
        )
        self.templates.filters["clock"] = clock


def _state(request: Request) -> _State:
    state: _State = request.app.state.web
    return state


# --- guards -------------------------------------------------------------------------------------------------


class Guard:
    """Host check, sign-in and the session cookie, before any route (see ``security``)."""

    def __init__(self, app: ASGIApp, settings: WebSettings, secret: bytes):
        self.app, self.settings, self.secret = app, settings, secret
        self.loopback = reach(settings.host) is Reach.LOOPBACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "")
        if self.loopback and reach(security.host_of(host)) is not Reach.LOOPBACK:
            await _plain(400, "this page answers only to localhost")(scope, receive, send)
            return
        given = request.cookies.get(security.SESSION_COOKIE)
        fresh = given is None or not 16 <= len(given) <= 64
        session = security.new_session() if fresh or given is None else given
        scope.setdefault("state", {})["session"] = session
        token = self.settings.token
        if token is not None and not self._signed_in(request, session, token):
            path = request.url.path
            if path not in ("/login", "/static/page.css"):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    response: Response = RedirectResponse("/login", status_code=303)
                else:
                    response = _plain(401, "sign in first: the token is required", {"WWW-Authenticate": "Bearer"})
                if fresh:
                    _set_session(response, session)
                await response(scope, receive, send)
                return

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_HARDENING]
                if fresh:
                    headers.append((b"set-cookie", _session_cookie(session).encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _signed_in(self, request: Request, session: str, token: str) -> bool:
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and security.same(bearer[7:].strip(), token):
            return True
        return security.same(request.cookies.get(security.AUTH_COOKIE), _auth_value(self.secret, session, token))


# Every answer: no framing (clickjacking), no type sniffing, scripts and media from this server only.
_HARDENING = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
]


def _auth_value(secret: bytes, session: str, token: str) -> str:
    return security.sign(secret, "auth", session + ":" + security.sign(secret, "token", token))


def _session_cookie(session: str) -> str:
    return f"{security.SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"


def _set_session(response: Response, session: str) -> None:
    response.headers.append("set-cookie", _session_cookie(session))


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8", headers=headers)


def csrf_token(request: Request) -> str:
    return security.sign(_state(request).secret, "csrf", request.state.session)


async def _checked_form(request: Request, **limits: Any) -> Any:
    """The POST's form, once its Origin and CSRF token are this session's; else 403."""
    if not security.origin_matches(request.headers.get("origin"), request.headers.get("host", "")):
        raise UploadRefused(403, "this form was sent from another site")
    form = await request.form(**limits)
    given = form.get("csrf")
    if not security.same(given if isinstance(given, str) else None, csrf_token(request)):
        await form.close()
        raise UploadRefused(403, "the form's security token is missing or stale: reload the page and try again")
    return form


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    template = _state(request).templates.get_template(name)
    html = template.render(csrf=csrf_token(request), signed=_state(request).settings.token is not None, **context)
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


def _job(request: Request) -> jobs.Job | None:
    return _state(request).store.get(str(request.path_params["job"]))


# --- pages --------------------------------------------------------------------------------------------------


def _defaults(state: _State) -> Settings:
    return load_settings(state.settings.config, env=state.settings.env)


async def index(request: Request) -> Response:
    state = _state(request)
    settings = _defaults(state)
    return _page(request, "index.html", **_form_context(state, settings), jobs=state.store.all()[:20])


def _form_context(state: _State, settings: Settings, error: str | None = None) -> dict[str, Any]:
    backend = registry.get(settings.backend.name)
    voices = [v.name for v in backend.voices()] if hasattr(backend, "voices") else []
    return {
        "error": error,
        "settings": settings,
        "voices": voices,
        "max_mb": state.settings.max_upload // (1024 * 1024),
        "accept": ",".join(sorted(security.BOOK_SUFFIXES)),
        "kinds": ", ".join(sorted(security.BOOK_SUFFIXES)),
    }


def _overrides(form: Any) -> dict[str, Any]:
    """The settings chosen on the page, as config keys (validated by the loader, one line if wrong)."""
    out: dict[str, Any] = {}
    for key in ("voice", "model"):
        value = form.get(key)
        if isinstance(value, str) and value.strip():
            out[key] = value.strip()[:100]
    speed = form.get("speed")
    if isinstance(speed, str) and speed.strip():
        try:
            out["speed"] = float(speed)
        except ValueError:
            raise AudiobookError(f"speed must be a number such as 1.0, not {speed[:20]!r}") from None
    loudness = form.get("loudness")
    if isinstance(loudness, str) and loudness in ("ebu", "acx"):
        out["loudness"] = loudness
    out["m4b"] = form.get("m4b") == "on"
    return out


async def make_plan(request: Request) -> Response:
    """Read the upload or the link and plan it; sends nothing. Refusals keep nothing."""
    state = _state(request)
    cap = state.settings.max_upload
    form = None
    try:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap + FORM_SLACK:
            raise UploadRefused(413, f"the upload is over the limit of {cap // (1024 * 1024)} MB")
        body = bytearray()
        async for chunk in request.stream():  # a body sent without a length is cut off at the cap too
            body += chunk
            if len(body) > cap + FORM_SLACK:
                raise UploadRefused(413, f"the upload is over the limit of {cap // (1024 * 1024)} MB")
        request._body = bytes(body)  # the form is parsed from what was read
        form = await _checked_form(request, max_files=1, max_fields=20, max_part_size=64 * 1024)
        overrides = _overrides(form)
        settings = load_settings(state.settings.config, env=state.settings.env, overrides=overrides)
        upload, url = form.get("book"), str(form.get("url") or "").strip()
        job_id = jobs.new_id()
        if isinstance(upload, UploadFile) and upload.filename:
            suffix = security.check_upload_name(upload.filename)
            data = await upload.read()
            if len(data) > cap:
                raise UploadRefused(413, f"the upload is over the limit of {cap // (1024 * 1024)} MB")
            security.check_upload_content(suffix, data)
            source = state.settings.data / "uploads" / f"{job_id}{suffix}"
            shown = upload.filename
            source.write_bytes(data)
        elif url:
            if not url.startswith(("http://", "https://")) or len(url) > 2000:
                raise UploadRefused(400, "a link must start with http:// or https://")
            source, shown = None, url
        else:
            raise UploadRefused(400, "choose a book file or paste a link")
    except UploadRefused as exc:
        return _refused(request, exc.status, str(exc))
    except AudiobookError as exc:
        return _refused(request, 400, str(exc))
    finally:
        if form is not None:
            await form.close()  # the upload's spooled copy
    where = str(source) if source is not None else url
    try:
        plan, rate = await asyncio.to_thread(_plan, state, where, settings, job_id)
    except AudiobookError as exc:
        if source is not None:
            source.unlink(missing_ok=True)
        return _refused(request, 400, str(exc))
    cover = _keep_cover(state, plan, job_id)
    summary = plan.summary()
    summary["rate_time"] = rate
    summary["book"]["source"] = shown  # the upload's own name, not the data folder's path
    job = jobs.Job(
        job_id, jobs.now(), plan.book.title, where, shown, overrides, jobs.PLANNED, None, summary, None, cover
    )
    state.store.add(job)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _refused(request: Request, status: int, message: str) -> Response:
    if "text/html" not in request.headers.get("accept", ""):
        return _plain(status, message)
    state = _state(request)
    try:
        settings = _defaults(state)
    except AudiobookError:
        settings = Settings()
    return _page(request, "index.html", status, **_form_context(state, settings, message), jobs=state.store.all()[:20])


def _plan(state: _State, where: str, settings: Settings, job_id: str) -> tuple[BookPlan, str]:
    book = read_source(where, settings.book)
    plan = library_app.plan(book, settings, state.runner.out_dir(job_id))
    return plan, rate_time(plan, state.settings.env)


def rate_time(plan: BookPlan, env: Mapping[str, str] | None) -> str:
    """How long the key's rate limit makes the requests take at the least, in words."""
    if registry.canonical(plan.backend.name) != "openai":
        return "no rate limit (the offline voice runs on this machine)"
    stats = Synthesizers(1, env, memory=limits_file([plan.store])).governor(plan.backend).stats()
    requests, chars = len(plan.needed), plan.characters_to_send
    minutes, said = 0.0, []
    if stats.pace_rpm:
        minutes = requests / stats.pace_rpm
        said.append(f"{stats.limit_rpm:.0f} requests/min from {stats.limit_source}")
    if plan.backend.cpm:
        minutes = max(minutes, chars / plan.backend.cpm)
        said.append(f"{plan.backend.cpm:.0f} characters/min from config")
    if not said:
        return "the key's limit is not known yet: it is read from the first answer's headers"
    return f"at least {clock(minutes * 60)} at the key's limit ({', '.join(said)})"


def _keep_cover(state: _State, plan: BookPlan, job_id: str) -> str | None:
    book = plan.book
    suffix = COVER_TYPES.get(book.cover_mime or "")
    if not book.cover or suffix is None:
        return None
    name = f"{job_id}{suffix}"
    (state.settings.data / "covers" / name).write_bytes(book.cover)
    return name


async def job_page(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    progress = state.runner.snapshot(job)
    return _page(request, "job.html", job=job, progress=progress, files=_files(state, job), plan=job.plan)


def _files(state: _State, job: jobs.Job) -> dict[str, Any]:
    """What the job's folder holds that the page offers: the report's M4B, and whether a zip is worth it."""
    report = _report(state, job)
    m4b = report.get("m4b") if report else None
    return {"m4b": m4b, "report": report is not None, "finished": job.status in jobs.FINISHED}


def _report(state: _State, job: jobs.Job) -> dict[str, Any] | None:
    return read_written(state.runner.out_dir(job.id))


async def _job_form(request: Request) -> jobs.Job | Response:
    """The job a start or cancel form names, its CSRF token checked; or the refusal to answer with."""
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    try:
        await _checked_form(request, max_files=0, max_fields=5)
    except UploadRefused as exc:
        return _plain(exc.status, str(exc))
    return job


async def start(request: Request) -> Response:
    state = _state(request)
    job = await _job_form(request)
    if isinstance(job, Response):
        return job
    if job.status not in (jobs.PLANNED, *jobs.RESUMABLE):
        return _plain(409, f"this job is {job.status}")
    state.runner.start(job)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


async def cancel(request: Request) -> Response:
    state = _state(request)
    job = await _job_form(request)
    if isinstance(job, Response):
        return job
    if job.status in (jobs.QUEUED, jobs.RUNNING):
        state.runner.cancel(job.id)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


async def events(request: Request) -> Response:
    """The job's progress as server-sent events: a snapshot whenever it changes, until the job ends."""
    state = _state(request)
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    live = state.runner.live(job)
    job_id = job.id

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            snapshot = live.snapshot()
            for c in snapshot["chapters"]:
                c["audio"] = f"/jobs/{job_id}/chapters/{c['index']}" if c["written"] else None
            if snapshot["status"] in jobs.FINISHED:
                m4b = (_report(state, job) or {}).get("m4b")
                snapshot["downloads"] = {"m4b": f"/jobs/{job_id}/m4b" if m4b else None, "zip": f"/jobs/{job_id}/zip"}
            text = json.dumps(snapshot, ensure_ascii=False)
            if text != last:
                last = text
                yield f"data: {text}\n\n"
            elif snapshot["status"] not in (jobs.QUEUED, jobs.RUNNING):
                yield "event: end\ndata: {}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_S)

    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _inside(folder: Path, name: str | None) -> Path | None:
    """``folder/name`` when it is a file inside ``folder`` (a report's name is data, checked like any)."""
    if not name:
        return None
    folder_part, _, base = name.rpartition("/")  # a chapter may sit in MP3/ or .chapters/ (names.py)
    if not base or "\\" in base or base.startswith(".") or folder_part not in CHAPTER_FOLDERS.values():
        return None
    path = (folder / name).resolve()
    return path if path.is_relative_to(folder.resolve()) and path.is_file() else None


async def chapter_audio(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    index = request.path_params["index"]
    chapter = next((c for c in job.plan["chapters"] if c["index"] == index), None)
    path = _inside(state.runner.out_dir(job.id), chapter["file"] if chapter else None)
    if path is None:
        return _plain(404, "that chapter is not written yet")
    return FileResponse(path, media_type="audio/mpeg")  # answers Range requests: the player can seek


async def m4b(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    report = _report(state, job)
    path = _inside(state.runner.out_dir(job.id), report.get("m4b") if report else None)
    if path is None:
        return _plain(404, "this book has no M4B (choose M4B before starting)")
    return FileResponse(path, media_type="audio/mp4", filename=path.name)


class _Chunks:
    """A write-only file for ZipFile: what is written is taken away in chunks as it comes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def zip_folder(folder: Path, prefix: str) -> Iterator[bytes]:
    """The folder's files as a zip, made as it is sent (audio is stored, not compressed: it would not shrink)."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.is_symlink() or path.name.startswith("."):
                continue
            with path.open("rb") as src, archive.open(f"{prefix}/{path.name}", "w", force_zip64=True) as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


async def download_zip(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    if job is None:
        return _plain(404, "no such job")
    folder = state.runner.out_dir(job.id)
    if not folder.is_dir():
        return _plain(404, "nothing is written yet")
    name = f"audiobook-{job.id}"
    headers = {"content-disposition": f'attachment; filename="{name}.zip"'}
    return StreamingResponse(zip_folder(folder, name), media_type="application/zip", headers=headers)


async def cover(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    if job is None or job.cover is None:
        return _plain(404, "no cover")
    path = _inside(state.settings.data / "covers", job.cover)
    return FileResponse(path) if path else _plain(404, "no cover")


async def report_page(request: Request) -> Response:
    state = _state(request)
    job = _job(request)
    report = _report(state, job) if job else None
    if job is None or report is None:
        return _plain(404, "no report yet")
    return _page(request, "report.html", job=job, report=report, text=json.dumps(report, indent=2))


async def library(request: Request) -> Response:
    state = _state(request)
    books = []
    for job in state.store.all():
        if job.status not in jobs.FINISHED:
            continue
        report = _report(state, job)
        if report is not None:
            books.append({"job": job, "report": report})
    return _page(request, "library.html", books=books)


async def login(request: Request) -> Response:
    state = _state(request)
    token = state.settings.token
    if request.method == "GET":
        return _page(request, "login.html", error=None)
    try:
        form = await _checked_form(request, max_files=0, max_fields=5)
    except UploadRefused as exc:
        return _plain(exc.status, str(exc))
    given = form.get("token")
    if token is None or not security.same(given if isinstance(given, str) else None, token):
        return _page(request, "login.html", 401, error="that is not the token")
    response = RedirectResponse("/", status_code=303)
    value = _auth_value(state.secret, request.state.session, token)
    response.set_cookie(security.AUTH_COOKIE, value, httponly=True, samesite="strict", path="/")
    return response


def create_app(settings: WebSettings) -> Starlette:
    """The page as an ASGI app (uvicorn serves it: ``serve``); its job runner starts with it."""
    state = _State(settings)
    static = Path(__file__).parent / "static"
    routes = [
        Route("/", index),
        Route("/plan", make_plan, methods=["POST"]),
        Route("/library", library),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/jobs/{job}", job_page),
        Route("/jobs/{job}/start", start, methods=["POST"]),
        Route("/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/jobs/{job}/events", events),
        Route("/jobs/{job}/chapters/{index:int}", chapter_audio),
        Route("/jobs/{job}/m4b", m4b),
        Route("/jobs/{job}/zip", download_zip),
        Route("/jobs/{job}/cover", cover),
        Route("/jobs/{job}/report", report_page),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(state.runner.shutdown)  # the running job is interrupted: resumable

    web = Starlette(
        routes=routes, middleware=[Middleware(Guard, settings=settings, secret=state.secret)], lifespan=lifespan
    )
    web.state.web = state
    return web
