"""The web page for tests: served by a real uvicorn on 127.0.0.1 in a thread (stopped as Ctrl-C would stop it),
and a real headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from pipeline.web import WebSettings, create_app

CHROMIUM = os.environ.get("AUDIOBOOK_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AUDIOBOOK_CHROMEDRIVER", "/usr/bin/chromedriver")
# Read at import: the tests' own fixture clears AUDIOBOOK_* from the environment. CI sets it: never skip there.
REQUIRE_BROWSER = bool(os.environ.get("AUDIOBOOK_REQUIRE_BROWSER"))
SCREENSHOT = os.environ.get("AUDIOBOOK_WEB_SCREENSHOT")  # e.g. docs/web-page.png: the README's picture
MISSING = "a headless browser is needed: apt-get install chromium chromium-driver (Debian's packages)"
WAIT_S = 90  # generous: a loaded 2-core machine; nothing here is a timing assertion


class LiveServer:
    """``create_app`` under uvicorn, as ``audiobook web`` serves it."""

    def __init__(self, settings: WebSettings):
        import uvicorn

        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._sock = config.bind_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        # The socket is bound but listens only once uvicorn has started: a browser sent before that is refused.
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.02)
        if not self.server.started:
            raise RuntimeError("the web page's server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(60)
        self._sock.close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def browser_or_skip(downloads: Path) -> Any:
    """A headless Chromium that saves downloads into ``downloads``; skips (or fails in CI) without one."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) and not (
        shutil.which("chromium") and shutil.which("chromedriver")
    ):
        if REQUIRE_BROWSER:
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1500", "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else str(shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def wait_for(driver: Any, check: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws parts of itself as events arrive: an element found a moment ago may be gone; look again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(
        lambda d: check(d), message=what
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def data_files(data: Path) -> set[str]:
    """Every file under the data folder but the store and the secret (what an upload could leave behind)."""
    skip = {"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm", "secret.key"}
    return {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.name not in skip}
