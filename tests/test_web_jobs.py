"""The web page's jobs without a browser: a link goes through app.read as given, the zip is the folder, a job
survives a restart as interrupted, and the celery engine runs a page's job when the settings name it."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install -e '.[web]'")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from pipeline.covers import to_jpeg
from pipeline.web import WebSettings, create_app  # noqa: E402
from pipeline.web import store as jobs  # noqa: E402
from pipeline.web.pages import zip_folder  # noqa: E402
from tests.fakeserver import FakeSpeechServer  # noqa: E402
from tests.helpers import tiny_png  # noqa: E402
from tests.redisserver import RedisServer  # noqa: E402
from tests.websupport import LiveServer, csrf_of, data_files  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "configs" / "local.toml"
BOOK = b"# Two Chapters\n\n## One\n\nThe first chapter speaks.\n\n## Two\n\nThe second chapter speaks too.\n"


def run_to_end(client: httpx.Client | TestClient, job_url: str, csrf: str) -> dict[str, object]:
    assert client.post(job_url + "/start", data={"csrf": csrf}).status_code == 303
    with client.stream("GET", job_url + "/events") as events:
        snapshots = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith('data: {"status')]
    return snapshots[-1]


def fake_speech_settings(tmp_path: Path, srv: FakeSpeechServer, key: str, extra: str = "") -> WebSettings:
    """The page's settings for a job against the fake speech server, with ``key`` in its environment."""
    config = tmp_path / "fake.toml"
    config.write_text(f'[api]\nbackend = "openai"\nbase_url = "{srv.url}"\n{extra}', encoding="utf-8")
    return WebSettings(data=tmp_path / "data", config=config, env={"OPENAI_API_KEY": key, "AUDIOBOOK_VERIFY": "off"})


def plan_book(client: httpx.Client, csrf: str, **choices: str) -> httpx.Response:
    """The answer to uploading the two-chapter book for a plan, with the page's ``choices``."""
    return client.post("/plan", data={"csrf": csrf, **choices}, files={"book": ("two.md", BOOK)})


def test_a_link_goes_through_app_read_and_its_one_line_error_is_shown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with TestClient(create_app(WebSettings(data=data, config=LOCAL)), base_url="http://127.0.0.1") as client:
        page = client.get("/", headers={"accept": "text/html"})
        answer = client.post(
            "/plan",
            data={"csrf": csrf_of(page.text), "url": "http://127.0.0.1:9/no-such-article"},
            headers={"accept": "text/html"},
        )
        assert answer.status_code == 400
        alert = answer.text.split('role="alert" id="error">', 1)[1].split("</p>", 1)[0]
        assert "\n" not in alert and "127.0.0.1" in alert
        assert data_files(data) == set()
        refused = client.post("/plan", data={"csrf": csrf_of(page.text), "url": "file:///etc/passwd"})
        assert refused.status_code == 400 and "http://" in refused.text


def test_a_finished_job_zips_its_folder_and_the_library_lists_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LiveServer(WebSettings(data=data, config=LOCAL)) as live, httpx.Client(base_url=live.url) as client:
        csrf = csrf_of(client.get("/").text)
        job_url = plan_book(client, csrf).headers["location"]
        last = run_to_end(client, job_url, csrf)
        assert last["status"] == "done" and last["percent"] == 100
        assert [c["written"] for c in last["chapters"]] == [True, True]  # type: ignore[index]
        answer = client.get(job_url + "/zip")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
        folder = next((data / "books").iterdir())
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            names = {Path(n).name: archive.read(n) for n in archive.namelist()}
        assert {p.name for p in folder.iterdir() if p.is_file()} == set(names)
        assert all(names[p.name] == p.read_bytes() for p in folder.iterdir() if p.is_file())
        library = client.get("/library").text
        assert "Two Chapters" in library and f'href="{job_url}/report"' in library
        assert "Status done" in client.get(job_url + "/report").text


def test_the_zip_is_made_as_it_is_sent(tmp_path: Path) -> None:
    (tmp_path / "a.mp3").write_bytes(b"a" * 3_000_000)
    (tmp_path / "b.mp3").write_bytes(b"b" * 10)
    chunks = list(zip_folder(tmp_path, "book"))
    assert max(len(c) for c in chunks) <= 1_100_000  # never the whole archive in memory at once
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.read("book/a.mp3") == b"a" * 3_000_000 and archive.testzip() is None


def test_a_job_running_when_the_server_died_opens_as_interrupted(tmp_path: Path) -> None:
    store = jobs.JobStore(tmp_path)
    plan = {"chapters": []}
    for job_id, status in (("0" * 16, jobs.RUNNING), ("1" * 16, jobs.QUEUED), ("2" * 16, jobs.DONE)):
        store.add(jobs.Job(job_id, time.time(), "t", "s", "s", {}, status, None, plan, None, None))
    store.close()  # as a killed server leaves it
    again = jobs.JobStore(tmp_path)
    assert [j.status for j in sorted(again.all(), key=lambda j: j.id)] == [
        jobs.INTERRUPTED, jobs.INTERRUPTED, jobs.DONE,
    ]  # fmt: skip
    assert again.get("../../etc") is None


def test_the_celery_engine_runs_a_job_of_the_page(
    tmp_path: Path, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    pytest.importorskip("celery", reason="the celery engine needs the 'distributed' extra")
    from tests.test_celery import Workers

    workers = Workers(tmp_path, redis_server.url, server.url)
    config = tmp_path / "celery.toml"
    config.write_text(
        f'[api]\nbackend = "openai"\nbase_url = "{server.url}"\nengine = "celery"\nbroker = "{redis_server.url}"\n',
        encoding="utf-8",
    )
    try:
        workers.start()
        settings = WebSettings(data=tmp_path / "data", config=config)
        with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=60) as client:
            csrf = csrf_of(client.get("/").text)
            job_url = plan_book(client, csrf).headers["location"]
            last = run_to_end(client, job_url, csrf)
        assert last["status"] == "done", last
        served = server.served_inputs()  # made by the worker, each once
        assert sorted(served) == sorted(["One", "The first chapter speaks.", "Two", "The second chapter speaks too."])
        assert "audiobook.part" in (tmp_path / "worker0.log").read_text()
        assert len(list((tmp_path / "data" / "books").glob("*/*.mp3"))) == 2
    finally:
        workers.stop()


def test_a_refused_key_ends_the_job_failed_in_plain_words(tmp_path: Path) -> None:
    with FakeSpeechServer(api_key="sk-the-right-key-0123456789") as srv:
        settings = fake_speech_settings(tmp_path, srv, "sk-a-wrong-key-0123456789")
        with LiveServer(settings) as live, httpx.Client(base_url=live.url) as client:
            csrf = csrf_of(client.get("/").text)
            job_url = plan_book(client, csrf).headers["location"]
            last = run_to_end(client, job_url, csrf)
            page = client.get(job_url).text
        assert last["status"] == "failed"
        error = str(last["error"])
        assert "\n" not in error and "key" in error.lower() and "Traceback" not in error
        assert error in page.replace("&#39;", "'").replace("&#34;", '"')
        assert "sk-a-wrong-key-0123456789" not in page + json.dumps(last)


def epub_with_cover(path: Path) -> Path:
    from tests.test_epub import XHTML, nav, opf, write_zip, xhtml

    manifest = [
        ("nav", "nav.xhtml", XHTML, "nav"),
        ("c0", "c0.xhtml", XHTML, ""),
        ("c1", "c1.xhtml", XHTML, ""),
        ("art", "front.png", "image/png", "cover-image"),
    ]
    files: dict[str, str | bytes] = {
        "OEBPS/c0.xhtml": xhtml("<h1>Dawn</h1><p>The sun came up over the hill.</p>"),
        "OEBPS/c1.xhtml": xhtml("<h1>Dusk</h1><p>The sun went down again.</p>"),
        "OEBPS/nav.xhtml": nav('<li><a href="c0.xhtml">Dawn</a></li><li><a href="c1.xhtml">Dusk</a></li>'),
        "OEBPS/front.png": tiny_png(),
        "OEBPS/content.opf": opf(manifest, ["c0", "c1"], title="A Day", author="Ann Author"),
    }
    return write_zip(path, files)


def test_the_library_shows_each_book_with_its_cover_length_chapters_and_report(tmp_path: Path) -> None:
    data = tmp_path / "data"
    book = epub_with_cover(tmp_path / "day.epub")
    with LiveServer(WebSettings(data=data, config=LOCAL)) as live, httpx.Client(base_url=live.url) as client:
        csrf = csrf_of(client.get("/").text)
        job_url = client.post("/plan", data={"csrf": csrf}, files={"book": (book.name, book.read_bytes())}).headers[
            "location"
        ]
        assert run_to_end(client, job_url, csrf)["status"] == "done"
        library = client.get("/library").text
        cover = client.get(job_url + "/cover")
    assert cover.status_code == 200 and cover.content == to_jpeg(tiny_png())  # every cover is made a JPEG
    assert cover.headers["content-type"] == "image/jpeg"
    assert f'<img src="{job_url}/cover" alt="Cover of A Day"' in library
    assert "Ann Author" in library and "2 chapters" in library
    assert "<li>Dawn (0:" in library and "<li>Dusk (0:" in library
    assert f'href="{job_url}/report"' in library


def test_a_part_that_keeps_failing_is_named_in_its_chapter_and_the_rest_is_written(
    tmp_path: Path, no_backoff: list[float]
) -> None:
    from tests.fakeserver import Fault

    with FakeSpeechServer(api_key="sk-web-0123456789abcdef") as srv:
        srv.inject_for(lambda body: "second chapter" in body["input"], Fault.status(500))
        settings = fake_speech_settings(tmp_path, srv, "sk-web-0123456789abcdef", "max_retries = 2\n")
        with LiveServer(settings) as live, httpx.Client(base_url=live.url) as client:
            csrf = csrf_of(client.get("/").text)
            job_url = plan_book(client, csrf).headers["location"]
            last = run_to_end(client, job_url, csrf)
            page = client.get(job_url).text
    one, two = last["chapters"]  # type: ignore[misc]
    assert last["status"] == "failed" and "Resume" in page
    assert one["written"] and not one["errors"]
    assert not two["written"] and two["retries"] == 2  # max_retries = 2: three attempts, then the error
    (error,) = two["errors"]
    assert "500" in error and "\n" not in error
    assert error in page


def test_the_choices_on_the_page_reach_every_request_and_the_book(tmp_path: Path) -> None:
    with FakeSpeechServer(api_key="sk-web-0123456789abcdef") as srv:
        settings = fake_speech_settings(tmp_path, srv, "sk-web-0123456789abcdef")
        with LiveServer(settings) as live, httpx.Client(base_url=live.url) as client:
            csrf = csrf_of(client.get("/").text)
            choices = {"voice": "nova", "model": "tts-1", "speed": "1.25", "loudness": "ebu", "m4b": "on"}
            job_url = plan_book(client, csrf, **choices).headers["location"]
            plan = client.get(job_url).text
            assert "voice nova, model tts-1" in plan and "speed 1.25" in plan and "loudness ebu" in plan
            assert srv.requests == []  # the plan sent nothing
            assert run_to_end(client, job_url, csrf)["status"] == "done"
            assert client.get(job_url + "/m4b").status_code == 200
            bad = plan_book(client, csrf, speed="fast")
            assert bad.status_code == 400 and "speed" in bad.text
    bodies = [r.body for r in srv.requests if r.body]
    assert bodies and all((b["voice"], b["model"], b["speed"]) == ("nova", "tts-1", 1.25) for b in bodies)
    report = json.loads(next((tmp_path / "data" / "books").glob("*/report.json")).read_text(encoding="utf-8"))
    assert report["m4b"] and all(c.get("loudness") for c in report["chapters"])
