"""The web page under hostile use, over plain HTTP (httpx through Starlette's TestClient): each refusal has its
status and leaves nothing behind; the token beyond loopback; paths from requests never reach the disk."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install -e '.[web]'")

from starlette.testclient import TestClient  # noqa: E402

from pipeline.errors import UsageError  # noqa: E402
from pipeline.web import WebSettings, create_app  # noqa: E402
from pipeline.web.security import check_reach, read_token  # noqa: E402
from tests.websupport import csrf_of, data_files  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "configs" / "local.toml"
BOOK = b"# A Small Book\n\n## One\n\nThe first chapter has a sentence.\n"
TOKEN = "household-token-0123456789"


def client_for(settings: WebSettings, base: str = "http://127.0.0.1") -> TestClient:
    return TestClient(create_app(settings), base_url=base, follow_redirects=False)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path / "data"
    with client_for(WebSettings(data=data, config=LOCAL, max_upload=4096)) as client:
        yield client, data


def jobs_in(client: TestClient) -> list[object]:
    return client.app.state.web.store.all()  # type: ignore[attr-defined, no-any-return]


def plan(client: TestClient, name: str, body: bytes, csrf: str | None = None, **headers: str) -> object:
    data = {"csrf": csrf} if csrf is not None else {}
    return client.post("/plan", data=data, files={"book": (name, body)}, headers=headers)


def test_a_good_upload_is_planned_under_a_generated_name(web: tuple[TestClient, Path]) -> None:
    client, data = web
    csrf = csrf_of(client.get("/").text)
    answer = plan(client, "my book.md", BOOK, csrf)
    assert answer.status_code == 303
    job_id = answer.headers["location"].rsplit("/", 1)[1]
    (kept,) = {f for f in data_files(data) if f != f"covers/{job_id}.jpg"}  # every book has a cover (made)
    assert kept == f"uploads/{job_id}.md"
    assert "A Small Book" in client.get(answer.headers["location"]).text


def test_an_upload_over_the_cap_is_refused_with_413(web: tuple[TestClient, Path]) -> None:
    client, data = web
    csrf = csrf_of(client.get("/").text)
    answer = plan(client, "big.txt", b"word " * 20_000, csrf)
    assert answer.status_code == 413
    assert "limit" in answer.text
    # A body sent without a length is cut off at the cap as well.
    chunked = client.post(
        "/plan",
        content=iter([b"x" * 50_000] * 4),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert chunked.status_code == 413
    assert data_files(data) == set() and jobs_in(client) == []


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("book.rtf", b"{\\rtf1\\ansi whatever}"),  # a kind no reader takes (a PDF is read now)
        ("book.exe", b"MZ\x90\x00"),
        ("book.txt", b"text\x00\x01\x02 binary"),
        ("book.epub", b"not a zip at all"),
    ],
)
def test_a_wrong_type_is_refused_with_415(web: tuple[TestClient, Path], name: str, body: bytes) -> None:
    client, data = web
    csrf = csrf_of(client.get("/").text)
    answer = plan(client, name, body, csrf)
    assert answer.status_code == 415
    assert data_files(data) == set() and jobs_in(client) == []


@pytest.mark.parametrize("name", ["../../escape.txt", "sub/dir/book.md", "..\\..\\win.txt", "..", "/etc/passwd.txt"])
def test_a_path_in_the_file_name_is_refused_with_400(web: tuple[TestClient, Path], name: str) -> None:
    client, data = web
    csrf = csrf_of(client.get("/").text)
    answer = plan(client, name, BOOK, csrf)
    assert answer.status_code == 400
    assert data_files(data) == set() and jobs_in(client) == []
    assert not (data.parent / "escape.txt").exists()


def test_a_form_without_its_csrf_token_is_refused_with_403(web: tuple[TestClient, Path]) -> None:
    client, data = web
    client.get("/")  # the session cookie
    assert plan(client, "book.md", BOOK).status_code == 403
    assert plan(client, "book.md", BOOK, "0" * 64).status_code == 403
    assert data_files(data) == set() and jobs_in(client) == []
    # Another session's token is not this one's.
    with client_for(WebSettings(data=data, config=LOCAL)) as other:
        stranger = csrf_of(other.get("/").text)
    assert plan(client, "book.md", BOOK, stranger).status_code == 403
    # The right token from another site's page (its Origin) is refused too.
    csrf = csrf_of(client.get("/").text)
    assert plan(client, "book.md", BOOK, csrf, origin="https://evil.example").status_code == 403
    assert data_files(data) == set() and jobs_in(client) == []
    # And starting a planned job needs it.
    job = plan(client, "book.md", BOOK, csrf).headers["location"]
    assert client.post(job + "/start", data={}).status_code == 403
    assert client.post(job + "/cancel", data={"csrf": "nope"}).status_code == 403
    assert 'id="start"' in client.get(job).text  # still planned: nothing was started
    assert not (data / "books").exists() or list((data / "books").iterdir()) == []


def test_beyond_loopback_every_request_needs_the_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = WebSettings(data=data, config=LOCAL, host="0.0.0.0", token=TOKEN)
    with client_for(settings, "http://192.0.2.10:8080") as client:
        assert client.get("/").status_code == 401
        assert client.get("/library", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.post("/plan", files={"book": ("b.md", BOOK)}).status_code == 401
        assert client.get("/jobs/0123456789abcdef/events").status_code == 401
        assert client.get("/", headers={"accept": "text/html"}).headers["location"] == "/login"
        assert data_files(data) == set()
        # With the token: a script's bearer header, or a browser's sign-in.
        assert client.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        csrf = csrf_of(client.get("/login").text)
        assert client.post("/login", data={"csrf": csrf, "token": "not-it-0123456789"}).status_code == 401
        assert client.post("/login", data={"csrf": csrf, "token": TOKEN}).status_code == 303
        assert client.get("/").status_code == 200


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(UsageError, match="AUDIOBOOK_WEB_TOKEN"):
        check_reach("0.0.0.0", None)
    with pytest.raises(UsageError):
        check_reach("192.0.2.10", None)
    check_reach("127.0.0.1", None)
    check_reach("::1", None)
    check_reach("0.0.0.0", TOKEN)
    with pytest.raises(UsageError, match="shorter than 16"):
        read_token(None, {"AUDIOBOOK_WEB_TOKEN": "short"})
    assert read_token(None, {"AUDIOBOOK_WEB_TOKEN": f" {TOKEN} "}) == TOKEN


def test_the_command_line_refuses_a_token_or_an_open_bind(tmp_path: Path) -> None:
    def web(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pipeline", "web", "--data", str(tmp_path / "d"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)

    open_bind = web("--host", "0.0.0.0", "--port", "0")
    assert open_bind.returncode == 2
    assert open_bind.stderr.count("\n") == 1 and "AUDIOBOOK_WEB_TOKEN" in open_bind.stderr
    given = web("--token", TOKEN)
    assert given.returncode == 2 and TOKEN not in given.stderr and "--token is not accepted" in given.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = web("--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and busy.stderr.startswith("audiobook: error: cannot listen on 127.0.0.1 port")
    assert busy.stderr.count("\n") == 1


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_command_stops_cleanly_on_ctrl_c_or_sigterm(tmp_path: Path, stop: signal.Signals) -> None:
    # A service manager stops the page with SIGTERM: it must end as a clean stop (exit 0), not killed by it.
    command = [sys.executable, "-m", "pipeline", "web", "--port", "0", "--data", str(tmp_path / "d")]
    command += ["--config", str(REPO / "configs" / "local.toml")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the page never said where it is"
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        proc.send_signal(stop)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_every_answer_forbids_framing_and_foreign_scripts(web: tuple[TestClient, Path]) -> None:
    client, _data = web
    for answer in (client.get("/"), client.get("/jobs/0123456789abcdef"), client.get("/static/page.js")):
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_on_loopback_a_foreign_host_header_is_refused(web: tuple[TestClient, Path]) -> None:
    client, _data = web
    assert client.get("/", headers={"host": "rebind.example:8080"}).status_code == 400
    assert client.get("/", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8080"}).status_code == 200


def test_no_path_from_a_request_reaches_the_disk(web: tuple[TestClient, Path]) -> None:
    client, data = web
    (data / "books" / "secret.mp3").write_bytes(b"not yours")
    csrf = csrf_of(client.get("/").text)
    job = plan(client, "book.md", BOOK, csrf).headers["location"]
    for path in (
        "/jobs/../secret.key",
        "/jobs/..%2Fsecret.key/cover",
        "/jobs/0123/chapters/1",
        f"{job}/chapters/1",  # planned, not written
        f"{job}/chapters/99",
        f"{job}/m4b",
        "/static/../jobs.sqlite3",
        "/static/%2e%2e/pages.py",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert b"not yours" not in answer.content


def test_without_the_web_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if Starlette were not installed
        "from pipeline.cli import main; sys.exit(main(['web', '--data', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 2
    assert done.stderr == "audiobook: error: the web page is not installed: pip install 'audiobook-pipeline[web]'\n"
    assert not (tmp_path / "d").exists()


def test_a_form_with_neither_a_file_nor_a_link_says_so(web: tuple[TestClient, Path]) -> None:
    client, data = web
    page = client.get("/", headers={"accept": "text/html"})
    answer = client.post("/plan", data={"csrf": csrf_of(page.text)}, headers={"accept": "text/html"})
    assert answer.status_code == 400 and "choose a book file or paste a link" in answer.text
    assert data_files(data) == set() and jobs_in(client) == []
