"""One owner each: the limits file (its name and its place) and the list of book suffixes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import batch, readers
from pipeline.batch import folder_job
from pipeline.cli import main
from pipeline.config import LIMITS_FILE, default_cache_dir, limits_file
from tests.fakeserver import FakeSpeechServer
from tests.helpers import FAKE_KEY, write_book


@pytest.fixture
def advertised(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSpeechServer]:
    # A limit high enough never to hold the run back, told in x-ratelimit-* headers: worth remembering.
    with FakeSpeechServer(api_key=FAKE_KEY, ms_per_char=0.0, rpm=6000, burst=100, rate_headers=True) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def test_the_limits_learned_are_kept_beside_the_cache_the_run_uses(
    advertised: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=2)
    cache = tmp_path / "my-cache"
    assert main(["--quiet", "convert", str(book), "-o", str(tmp_path / "out"), "--cache-dir", str(cache)]) == 0
    kept = json.loads((cache / LIMITS_FILE).read_text(encoding="utf-8"))
    assert [entry for entry in kept.values()] and FAKE_KEY not in json.dumps(kept)
    assert not (default_cache_dir() / LIMITS_FILE).exists()  # the default folder is the user's, not this run's
    assert os.environ["XDG_CACHE_HOME"] in str(default_cache_dir())  # (the test's own, not the user's)


def test_where_the_limits_file_lives() -> None:
    folder = default_cache_dir()
    assert limits_file() == folder / "rate-limits.json"
    assert limits_file(["/srv/parts", "/other"]) == Path("/srv/parts/rate-limits.json")
    # A bucket is shared by machines that would race to rewrite one file: each keeps its own, locally.
    assert limits_file(["s3://bucket/prefix"]) == folder / "rate-limits.json"
    assert limits_file(["s3://bucket/prefix", "/srv/parts"]) == Path("/srv/parts/rate-limits.json")


def test_batch_takes_for_a_book_exactly_the_suffixes_a_reader_is_chosen_by(tmp_path: Path) -> None:
    assert batch.BOOK_SUFFIXES is readers.BOOK_SUFFIXES
    assert (
        readers.BOOK_SUFFIXES
        == (readers.TEXT_SUFFIXES | readers.MARKDOWN_SUFFIXES | readers.EPUB_SUFFIXES | readers.HTML_SUFFIXES)
        | readers.PDF_SUFFIXES
        | readers.DOCX_SUFFIXES
        | readers.FB2_SUFFIXES
        | readers.MOBI_SUFFIXES
    )
    books = tmp_path / "books"
    books.mkdir()
    for n, suffix in enumerate(sorted(readers.BOOK_SUFFIXES | {".doc", ".mp3", ".json", ".TXT", ".fb2.zip", ".zip"})):
        (books / f"book{n}{suffix}").write_text("Chapter 1\n\nWords.\n", encoding="utf-8")
    job = folder_job(books, tmp_path / "out", None)
    # .TXT too, and a zipped FB2 (".fb2.zip") but no other zip
    names = sorted(b.source.name.split(".", 1)[1].lower() for b in job.books)
    assert names == sorted([*(s[1:] for s in readers.BOOK_SUFFIXES), "txt", "fb2.zip"])
