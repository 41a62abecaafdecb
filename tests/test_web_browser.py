"""The web page in a real headless browser (Chromium via Selenium): the bundled sample through the offline voice
from upload to a played chapter and a downloaded M4B; the rate limit's hold shown live; cancel, a restart of
the server, and resume without a request for a part already made."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install -e '.[web]'")

from pipeline.web import WebSettings  # noqa: E402
from tests.fakeserver import FakeSpeechServer, Fault  # noqa: E402
from tests.websupport import SCREENSHOT, LiveServer, browser_or_skip, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "the-lantern-keeper.md"
SECRET_KEY = "sk-web-test-key-that-must-never-reach-a-page-0123456789"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser_or_skip(downloads)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


UNLABELLED = """
return Array.from(document.querySelectorAll("input:not([type=hidden]), select, button, audio, progress"))
  .filter(function (el) {
    if (el.tagName === "BUTTON") return !el.textContent.trim();
    return !(el.id && document.querySelector("label[for='" + el.id + "']")) && !el.getAttribute("aria-label");
  }).map(function (el) { return el.outerHTML; });
"""


def upload(driver: Any, url: str, book: Path, *, m4b: bool = False) -> None:
    driver.get(url + "/")
    assert driver.execute_script(UNLABELLED) == []
    by_id(driver, "book").send_keys(str(book))
    if m4b:
        by_id(driver, "m4b").click()
    by_id(driver, "see-plan").click()
    wait_for(driver, lambda d: d.find_elements("id", "plan-table"), "the plan is shown")


def status_is(driver: Any, *statuses: str) -> bool:
    return by_id(driver, "status").get_attribute("data-status") in statuses


def fake_config(tmp_path: Path, srv: FakeSpeechServer, **api: Any) -> Path:
    lines = ["[api]", 'backend = "openai"', f'base_url = "{srv.url}"', "concurrency = 1", "max_retries = 4"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in api.items()]
    lines += ["", "[speech]", "max_chars = 80", "", "[output]", 'verify = "off"']
    path = tmp_path / "fake.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def small_book(tmp_path: Path, chapters: int = 3, sentences: int = 4) -> Path:
    text = ["# The Web Test Book", ""]
    for c in range(1, chapters + 1):
        text += [f"## Chapter {c}", ""]
        text += [f"Sentence {s} of chapter {c} is here to be spoken aloud by the voice." for s in range(sentences)]
        text.append("")
    path = tmp_path / "web-test-book.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


def test_sample_from_upload_to_m4b(browser: Any, tmp_path: Path) -> None:
    settings = WebSettings(data=tmp_path / "data", config=REPO / "configs" / "local.toml")
    with LiveServer(settings) as live:
        upload(browser, live.url, SAMPLE, m4b=True)
        rows = browser.find_elements("css selector", "#plan-table tbody tr")
        titles = [r.find_elements("tag name", "td")[1].text for r in rows]
        assert titles == ["The Lighthouse at Gull Point", "A Light Made of Voices", "灯塔守护人", "Epilogue"]
        assert int(by_id(browser, "plan-requests").text) > 0
        assert by_id(browser, "plan-cost").text == "$0.00"
        assert "no rate limit" in by_id(browser, "plan-time").text
        assert not (settings.data / "books").exists() or not any((settings.data / "books").iterdir())

        from selenium.webdriver.common.keys import Keys

        by_id(browser, "start").send_keys(Keys.ENTER)  # the keyboard starts it as well as a click
        wait_for(browser, lambda d: status_is(d, "done"), "the run is done")
        assert by_id(browser, "percent").text == "100 %"
        assert by_id(browser, "bar").get_attribute("value") == "100"
        assert browser.execute_script(UNLABELLED) == []
        first = browser.find_element("css selector", "#ch-1 button.play")
        assert first.is_enabled()
        assert browser.find_element("css selector", "#ch-1 .parts").text.split(" of ")[0] != "0"

        first.click()
        duration = wait_for(
            browser,
            lambda d: d.execute_script("var p = document.getElementById('player'); return p.duration || 0"),
            "the audio element reports chapter 1's duration",
        )
        assert duration > 1.0

        wait_for(browser, lambda d: by_id(d, "m4b-link").is_displayed(), "the M4B link is offered")
        if SCREENSHOT:
            Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(SCREENSHOT)
        by_id(browser, "m4b-link").click()
        got = wait_for(
            browser,
            lambda d: [p for p in d.downloads.iterdir() if p.suffix == ".m4b"],
            "the M4B is downloaded",
        )[0]
        made = next((settings.data / "books").glob("*/*.m4b"))
        wait_for(browser, lambda d: got.stat().st_size == made.stat().st_size, "the download is complete")
        assert got.read_bytes()[4:8] == b"ftyp"

        browser.get(live.url + "/library")
        assert "The Lantern Keeper" in browser.page_source
        assert len(browser.find_elements("css selector", "#library li.book")) == 1


def test_rate_limit_hold_is_shown_and_the_key_stays_server_side(browser: Any, tmp_path: Path) -> None:
    with FakeSpeechServer(api_key=SECRET_KEY, ms_per_char=4.0) as srv:
        env = {"OPENAI_API_KEY": SECRET_KEY, "AUDIOBOOK_VERIFY": "off"}
        settings = WebSettings(data=tmp_path / "data", config=fake_config(tmp_path, srv, rpm=600), env=env)
        with LiveServer(settings) as live:
            upload(browser, live.url, small_book(tmp_path))
            pages = [browser.page_source]
            assert "600 requests/min from config" in by_id(browser, "plan-time").text
            srv.inject(Fault.rate_limit(retry_after=1.0), Fault.rate_limit(retry_after=1.0))
            by_id(browser, "start").click()
            wait_for(browser, lambda d: by_id(d, "held-count").is_displayed(), "the page says the limit held the run")
            assert "held by the rate limit" in by_id(browser, "log").text
            wait_for(browser, lambda d: status_is(d, "done"), "the run is done")
            assert by_id(browser, "percent").text == "100 %"
            assert srv.stats().rate_limited == 2
            pages.append(browser.page_source)
            job_url = browser.current_url

            # Every page and event the server sends, and every file it keeps: no key.
            cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
            with httpx.Client(base_url=live.url, cookies=cookies, timeout=30) as client:
                job = job_url.rsplit("/", 1)[1]
                for path in ("/", "/library", f"/jobs/{job}", f"/jobs/{job}/report", f"/jobs/{job}/events"):
                    answer = client.get(path)
                    assert answer.status_code == 200, path
                    pages.append(answer.text)
        for page in pages:
            assert SECRET_KEY not in page
        for path in settings.data.rglob("*"):
            if path.is_file():
                assert SECRET_KEY.encode() not in path.read_bytes(), path


def test_cancel_restart_and_resume_without_asking_again(browser: Any, tmp_path: Path) -> None:
    with FakeSpeechServer(api_key=SECRET_KEY, ms_per_char=4.0, latency=0.25) as srv:
        env = {"OPENAI_API_KEY": SECRET_KEY, "AUDIOBOOK_VERIFY": "off"}
        settings = WebSettings(data=tmp_path / "data", config=fake_config(tmp_path, srv), env=env)
        with LiveServer(settings) as live:
            upload(browser, live.url, small_book(tmp_path, chapters=4))
            needed = int(by_id(browser, "plan-requests").text)
            by_id(browser, "start").click()
            wait_for(
                browser, lambda d: d.find_element("css selector", "#ch-1 button.play").is_enabled(), "chapter 1 lands"
            )
            job_id = browser.current_url.rsplit("/", 1)[1]
            store = live.app.state.web.store
            wait_for(
                browser,
                lambda d: ((store.get(job_id).progress or {}).get("chapters") or [{}])[0].get("written"),
                "a written chapter is kept in the store at once (a killed server would lose nothing of it)",
            )
            by_id(browser, "cancel").click()
            wait_for(browser, lambda d: status_is(d, "cancelled"), "the run is cancelled")
            job_url = browser.current_url
        asked = len(srv.served_inputs())
        assert 0 < asked < needed

        with LiveServer(settings) as live:  # a new server on the same data folder
            browser.get(live.url + "/jobs/" + job_url.rsplit("/", 1)[1])
            assert status_is(browser, "cancelled")
            assert browser.find_element("css selector", "#ch-1 button.play").is_enabled()
            by_id(browser, "resume").click()
            wait_for(browser, lambda d: status_is(d, "done"), "the resumed run is done")
            assert by_id(browser, "percent").text == "100 %"
        served = srv.served_inputs()
        assert len(served) == needed
        assert len(set(served)) == len(served)  # no part asked for twice


def test_a_run_stopped_with_the_server_is_interrupted_then_resumed(tmp_path: Path) -> None:
    """No browser: the server stops mid-run (as Ctrl-C stops it); the next one shows the job interrupted, and
    resuming it asks only for the parts not made."""
    from tests.websupport import csrf_of

    with FakeSpeechServer(api_key=SECRET_KEY, ms_per_char=4.0, latency=0.25) as srv:
        env = {"OPENAI_API_KEY": SECRET_KEY, "AUDIOBOOK_VERIFY": "off"}
        settings = WebSettings(data=tmp_path / "data", config=fake_config(tmp_path, srv), env=env)
        book = small_book(tmp_path, chapters=4)
        with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as client:
            csrf = csrf_of(client.get("/").text)
            planned = client.post("/plan", data={"csrf": csrf}, files={"book": (book.name, book.read_bytes())})
            job_url = planned.headers["location"]
            assert client.post(job_url + "/start", data={"csrf": csrf}).status_code == 303
            while len(srv.served_inputs()) < 2:
                time.sleep(0.05)
        asked = len(srv.served_inputs())
        with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as client:
            page = client.get(job_url).text
            assert 'data-status="interrupted"' in page
            csrf = csrf_of(page)
            assert client.post(job_url + "/start", data={"csrf": csrf}).status_code == 303
            with client.stream("GET", job_url + "/events") as events:
                last = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith('data: {"status')][-1]
            assert last["status"] == "done"
        served = srv.served_inputs()
        assert asked < len(served)
        assert len(set(served)) == len(served)


def test_the_readme_shows_a_screenshot_of_the_page() -> None:
    picture = REPO / "docs" / "web-page.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](docs/web-page.png)" in (REPO / "README.md").read_text(encoding="utf-8")
