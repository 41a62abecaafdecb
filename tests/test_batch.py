"""Batch jobs and the make target, unattended, against the fake speech server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from pipeline.cli import main
from tests.fakeserver import FakeSpeechServer, Fault
from tests.helpers import FAKE_KEY as KEY
from tests.helpers import REPO, read_report, run_cli, write_book
from tests.helpers import child_env as make_child_env


def library(root: Path, count: int = 3, **kw: int) -> Path:
    books = root / "books"
    books.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_book(books / f"book{i}.txt", seed=i + 1, **{"chapters": 2, "paragraphs": 3, **kw})
    return books


def job_file(root: Path, body: str = "", top: str = "") -> Path:
    path = root / "jobs.toml"
    path.write_text(f'output = "out"\n{top}[[book]]\npath = "books/*"\n{body}', encoding="utf-8")
    return path


def summary(root: Path) -> dict[str, dict]:
    data = json.loads((root / "out" / "batch-summary.json").read_text(encoding="utf-8"))
    return {Path(b["source"]).name: b for b in data["books"]}


def test_one_bad_book_does_not_stop_the_others_and_reruns_are_free(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = library(tmp_path, count=3)
    (books / "broken.epub").write_bytes(b"PK\x03\x04 this is no zip")
    (books / "notes.log").write_text("not a book: the glob skips it")
    # The server refuses one book's text outright (a 400 is not worth retrying).
    server.inject_for(lambda body: "Sentence 200001 " in body["input"], Fault.bad_request("Input rejected."))
    jobs = job_file(tmp_path, '[[book]]\npath = "more/*.txt"\n[[book]]\npath = "gone.txt"\n')

    assert main(["batch", str(jobs)]) == 1
    err = capsys.readouterr().err
    assert "more/*.txt: no book matches" in err  # an empty glob is a warning, a missing file a failure
    assert "gone.txt: failed (no such file" in err
    assert "broken.epub" in err and "book1.txt" in err and "3 of 6 books not done" in err
    s = summary(tmp_path)
    assert s["book0.txt"]["status"] == "done" and s["book2.txt"]["status"] == "done"
    assert s["book1.txt"]["status"] == "failed" and "Input rejected" in s["book1.txt"]["error"]
    assert s["broken.epub"]["status"] == "failed" and "zip" in s["broken.epub"]["error"]
    assert s["book0.txt"]["requests"] > 0 and s["book0.txt"]["duration_s"] > 0
    assert len(list((tmp_path / "out" / "book0").glob("*.mp3"))) == 2
    assert not list((tmp_path / "out" / "book1").glob("*.m3u"))  # the failed book does not look finished

    # The server changes its mind; only the failed book's missing parts are requested.
    server.clear()
    (books / "broken.epub").unlink()
    jobs = job_file(tmp_path)
    assert main(["batch", str(jobs)]) == 0
    inputs = [r.input or "" for r in server.requests]
    assert inputs and all("Sentence 2000" in t or t.startswith("Chapter") for t in inputs)
    s = summary(tmp_path)
    assert [b["status"] for b in s.values()] == ["unchanged", "done", "unchanged"]

    # An immediate rerun sends nothing at all.
    server.clear()
    assert main(["batch", str(jobs)]) == 0
    assert server.requests == []
    assert all(b["status"] == "unchanged" for b in summary(tmp_path).values())

    # One edited paragraph costs one request.
    text = (books / "book2.txt").read_text(encoding="utf-8")
    (books / "book2.txt").write_text(text.replace("Sentence 300004 ", "Sentence 300004 (revised) "), "utf-8")
    assert main(["batch", str(jobs)]) == 0
    assert len(server.requests) == 1 and "(revised)" in (server.requests[0].input or "")
    s = summary(tmp_path)
    assert s["book2.txt"]["status"] == "done" and s["book0.txt"]["status"] == "unchanged"


def test_dry_run_and_budget(server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library(tmp_path, count=3)
    jobs = job_file(tmp_path)
    assert main(["batch", str(jobs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert server.requests == [] and out.count("Total:") == 3 and "would send" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert main(["batch", str(jobs), "--dry-run", "--json"]) == 0
    planned = {Path(b["source"]).name: b for b in json.loads(capsys.readouterr().out)}
    cost = sum(b["estimated_cost_usd"] for b in planned.values())
    assert cost > 0 and all(b["status"] == "planned" for b in planned.values())

    # A budget that covers about two books: the third is refused before a single request and named.
    budget = (
        sum(planned[f"book{i}.txt"]["estimated_cost_usd"] for i in (0, 1, 2))
        - 0.5 * planned["book2.txt"]["estimated_cost_usd"]
    )
    assert main(["batch", str(jobs), "--max-cost", f"{budget:.6f}"]) == 1
    err = capsys.readouterr().err
    s = summary(tmp_path)
    assert [b["status"] for b in s.values()] == ["done", "done", "over budget"]
    assert "book2.txt" in err and "budget" in err
    assert not (tmp_path / "out" / "book2").exists()
    assert not any("Sentence 3000" in (r.input or "") for r in server.requests)


def test_many_short_articles_share_one_busy_pool(server: FakeSpeechServer, tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    for i in range(20):
        write_book(books / f"article{i:02}.txt", chapters=1, paragraphs=1, sentences=1, seed=i + 1)
    jobs = job_file(tmp_path, "[defaults]\nannounce_titles = false\n", top="concurrency = 8\n")
    server.latency = 0.5  # long enough that every worker is busy at once, even on a loaded machine
    assert main(["batch", str(jobs)]) == 0
    assert len(server.served_inputs()) == 20
    # Twenty one-request books, eight workers: the pool never waited for one book before starting the next.
    assert server.max_in_flight == 8


def test_second_invocation_is_refused_and_a_stale_lock_is_not(tmp_path: Path) -> None:
    library(tmp_path, count=1)
    jobs = job_file(tmp_path, '[defaults]\nbackend = "local"\n')
    with FileLock(str(jobs) + ".lock"):
        proc = run_cli("batch", str(jobs))
    assert proc.returncode == 75
    assert proc.stderr.strip().splitlines() == [
        f"audiobook: error: another run of {jobs} is in progress (lock {jobs}.lock); try again later"
    ]
    assert not (tmp_path / "out").exists()
    # A lock file left behind by a killed run holds no lock: the next run goes ahead.
    (tmp_path / "jobs.toml.lock").write_text("12345")
    proc = run_cli("batch", str(jobs), "--dry-run")
    assert proc.returncode == 0, proc.stderr


def test_two_jobs_writing_to_one_output_folder_do_not_run_at_once(server: FakeSpeechServer, tmp_path: Path) -> None:
    # Two job files (their own locks), one output folder: the second would overwrite the first's books and
    # batch-summary.json. It is refused at once, in one line, before anything is read or sent.
    library(tmp_path, count=1)
    jobs = job_file(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text(jobs.read_text(encoding="utf-8"), encoding="utf-8")
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url}
    (tmp_path / "out").mkdir()
    with FileLock(str(tmp_path / "out" / ".audiobook-batch.lock")):  # what a run of jobs.toml holds
        proc = run_cli("batch", str(other), env=env)
        assert proc.returncode == 75
        assert proc.stderr.strip().splitlines() == [
            f"audiobook: error: output folder {tmp_path / 'out'} is in use by another run "
            f"(lock {tmp_path / 'out' / '.audiobook-batch.lock'}); try again later"
        ]
        assert server.requests == [] and not (tmp_path / "out" / "batch-summary.json").exists()
        proc = run_cli("batch", str(other), "--dry-run", env=env)  # a dry run writes nothing there: allowed
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("batch", str(other), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "batch-summary.json").is_file()


def test_sigterm_mid_batch_keeps_parts_and_the_next_run_resumes(tmp_path: Path) -> None:
    library(tmp_path, count=3, chapters=2, paragraphs=20, sentences=2)
    jobs = job_file(tmp_path)
    cache = tmp_path / "cache"
    with FakeSpeechServer(api_key=KEY, latency=0.05, ms_per_char=2.0) as srv:
        env = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": srv.url,
            "AUDIOBOOK_CACHE_DIR": str(cache),
            "AUDIOBOOK_CONCURRENCY": "4",
            "AUDIOBOOK_PACK": "false",  # a request per paragraph: plenty in flight when the signal comes
        }
        child_env = make_child_env(env)
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "batch", str(jobs)],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(srv.served_inputs()) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=60)
        assert child.returncode == 130, err
        assert "SIGTERM" in err and "Traceback" not in err
        first = srv.served_inputs()
        assert 30 <= len(first) < 3 * 2 * 21
        s = summary(tmp_path)
        assert "interrupted" in {b["status"] for b in s.values()}
        assert not list((tmp_path / "out").rglob("*.part"))
        assert not list((tmp_path / "out").rglob("*.m3u"))  # nothing looks finished

        srv.clear()
        proc = run_cli("batch", str(jobs), env=env)
        assert proc.returncode == 0, proc.stderr
        second = srv.served_inputs()
        # Requests in flight at SIGTERM were allowed to land: nothing answered before the stop is paid again.
        assert not set(first) & set(second)
        assert all(b["status"] == "done" for b in summary(tmp_path).values())
        assert len(list((tmp_path / "out").rglob("*.m3u"))) == 3


def test_a_job_path_that_is_a_link_loop_or_a_folder_says_so(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library(tmp_path, count=1)
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "shelf.txt").mkdir()
    jobs = job_file(
        tmp_path, '[[book]]\npath = "loop.txt"\n[[book]]\npath = "dangling.txt"\n[[book]]\npath = "shelf.txt"\n'
    )
    assert main(["batch", str(jobs)]) == 1
    err = capsys.readouterr().err
    assert "loop.txt: failed (is a symbolic link that loops back on itself" in err
    assert "dangling.txt: failed (is a symbolic link to" in err and "nowhere.txt, which does not exist" in err
    assert "shelf.txt: failed (is a folder, not a book file" in err
    assert summary(tmp_path)["book0.txt"]["status"] == "done"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_target_converts_every_good_book_and_names_the_bad_ones(tmp_path: Path) -> None:
    books = library(tmp_path, count=2, chapters=1, paragraphs=2)
    write_book(books / "book1.md", chapters=1, paragraphs=2, seed=9)  # book1.txt's namesake
    (books / "broken.epub").write_bytes(b"PK\x03\x04 this is no zip")
    stamp = tmp_path / "stamp"
    stamp.touch()
    config = tmp_path / "local.toml"
    config.write_text('backend = "local"\n', encoding="utf-8")
    out = tmp_path / "audio"

    def make() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "AUDIOBOOK_CACHE_DIR": str(tmp_path / "cache")}
        return subprocess.run(
            ["make", "-C", str(REPO), "audiobooks", f"BOOKS={books}", f"OUT={out}", f"CONFIG={config}",
             f"STAMP={stamp}", f"PY={sys.executable}"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    proc = make()
    assert proc.returncode != 0  # the target fails ...
    assert "broken.epub" in proc.stderr and "1 of 4 books not done" in proc.stderr  # ... naming the bad book
    reports = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert sorted(reports) == ["book0", "book1.md", "book1.txt"]  # every good one, each in a folder of its own

    (books / "broken.epub").unlink()
    (books / "book0.txt").write_text((books / "book0.txt").read_text() + "\nA new last line.\n", "utf-8")
    proc = make()
    assert proc.returncode == 0, proc.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert after["book0"] != reports["book0"]  # changed: rebuilt
    assert after["book1.txt"] == reports["book1.txt"]  # unchanged: left alone
    assert after["book1.md"] == reports["book1.md"]


def test_a_batch_has_as_many_requests_in_flight_as_its_concurrency(server: FakeSpeechServer, tmp_path: Path) -> None:
    # The run owns the limit: a book's backend settings (concurrency 8 by default) must not lower it.
    server.latency = 0.3
    library(tmp_path, count=2, paragraphs=10)
    jobs = job_file(tmp_path, top="concurrency = 16\n")
    assert main(["--quiet", "batch", str(jobs)]) == 0
    assert len(server.requests) >= 40 and server.max_in_flight == 16


def test_the_command_line_sets_a_batch_s_concurrency_over_the_job_file(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.latency = 0.3
    library(tmp_path, count=2, paragraphs=10)
    jobs = job_file(tmp_path, top="concurrency = 4\n")
    assert main(["--quiet", "batch", str(jobs), "--concurrency", "12"]) == 0
    assert len(server.requests) >= 40 and server.max_in_flight == 12
    assert main(["--quiet", "batch", str(jobs), "--concurrency", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "concurrency" in err[0]  # one line naming the setting, no traceback


def test_a_book_with_its_own_cache_dir_plans_and_runs_against_it(
    server: FakeSpeechServer, tmp_path: Path, isolated_env: Path
) -> None:
    library(tmp_path, count=2)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        'output = "out"\n[[book]]\npath = "books/book0.txt"\ncache_dir = "own-cache"\n'
        '[[book]]\npath = "books/book1.txt"\n',
        encoding="utf-8",
    )
    assert main(["--quiet", "batch", str(jobs)]) == 0
    first = len(server.requests)
    own = list((tmp_path / "own-cache" / "parts").rglob("*.mp3"))
    shared = list((isolated_env / "audiobook-pipeline" / "parts").rglob("*.mp3"))
    assert own and shared and len(own) + len(shared) == first
    assert not {p.name for p in own} & {p.name for p in shared}  # each book's parts in its own store

    # Outputs gone, parts kept: the plan finds every part where the run put it, and nothing is paid again.
    shutil.rmtree(tmp_path / "out")
    server.clear()
    assert main(["--quiet", "batch", str(jobs), "--dry-run", "--json"]) == 0
    assert server.requests == []
    assert main(["--quiet", "batch", str(jobs)]) == 0
    assert server.requests == []
    assert all(b["status"] == "done" and b["cache_hits"] > 0 for b in summary(tmp_path).values())


def test_a_bucket_as_a_books_cache_is_not_taken_for_a_path_of_the_job(tmp_path: Path) -> None:
    from pipeline.batch import load_jobs
    from pipeline.config import load_settings

    library(tmp_path, count=2)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        'output = "out"\n[[book]]\npath = "books/book0.txt"\ncache_dir = "s3://team-bucket/parts"\n'
        '[[book]]\npath = "books/book1.txt"\ncache_dir = "own-cache"\n',
        encoding="utf-8",
    )
    bucket, folder = load_jobs(jobs).books
    assert load_settings(env={}, overrides=bucket.overrides).book.cache_location == "s3://team-bucket/parts"
    assert load_settings(env={}, overrides=folder.overrides).book.cache_location == str(tmp_path / "own-cache")


@pytest.mark.parametrize("where", ["book", "defaults"])
def test_a_run_level_setting_inside_a_book_entry_is_refused(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    library(tmp_path, count=1)
    if where == "book":
        jobs = job_file(tmp_path, "concurrency = 4\n")
    else:
        jobs = job_file(tmp_path, top="[defaults]\nconcurrency = 4\n")
    assert main(["batch", str(jobs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'concurrency'" in err and "whole run" in err
    assert ("book #1" if where == "book" else "[defaults]") in err
    assert server.requests == []


def test_books_with_the_same_name_never_share_a_folder(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i, rel in enumerate(["a/book.txt", "b/book.txt", "a/book.md"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_book(tmp_path / rel, chapters=1, paragraphs=2, seed=i + 1)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('output = "out"\n[[book]]\npath = "*/book.*"\n', encoding="utf-8")
    assert main(["batch", str(jobs)]) == 0
    out, err = capsys.readouterr()
    assert "3 books share this folder name" in err
    # The run's lines name each apart, as their folders are named.
    done = sorted(line.split()[1] for line in out.splitlines() if line.startswith("done"))
    assert done == ["a/book.txt", "b/book.txt", "book.md"]
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert folders == ["a - book.md", "a - book.txt", "b - book.txt"]
    for folder in folders:
        source = read_report(tmp_path / "out" / folder)["plan"]["book"]["source"]
        assert source.endswith(folder.replace(" - ", "/"))  # each folder holds its own book
        assert len(list((tmp_path / "out" / folder).glob("*.mp3"))) == 1
    server.clear()
    assert main(["batch", str(jobs)]) == 0  # and the next run finds each where it left it
    assert server.requests == [] and all(b["status"] == "unchanged" for b in summary_by_source(tmp_path))


def summary_by_source(root: Path) -> list[dict]:
    return json.loads((root / "out" / "batch-summary.json").read_text(encoding="utf-8"))["books"]


def test_a_folder_holding_another_book_is_not_taken_over(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_book(tmp_path / "first.txt", chapters=2, seed=1)
    second = tmp_path / "second.txt"
    second.write_text("Title: Another Book\n\n" + (tmp_path / "first.txt").read_text().replace("Sentence", "Line"))
    assert main(["-q", "convert", str(first), "-o", str(tmp_path / "out")]) == 0
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert main(["-q", "convert", str(second), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another book" in err and "first.txt" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before  # nothing deleted, nothing added
    moved = tmp_path / "moved" / "first.txt"  # the same book from a new place is still the same book
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())
    server.clear()
    assert main(["-q", "convert", str(moved), "-o", str(tmp_path / "out")]) == 0 and server.requests == []


@pytest.mark.parametrize(
    ("top", "body", "line", "needle"),
    [
        ("concurrency = 0\n", "", 2, "concurrency must be between 1 and 64, not 0"),
        ("max_cost = -1\n", "", 2, "max_cost must be US dollars, 0 or more"),
        ("output = 5\n", "", 2, "output must be a folder name"),
        ("", 'voice = "nova"\nspeed = "fast"\n', 6, "'speed': 'fast' is not a valid float"),
        ("", 'format = "ogg"\n', 5, "format must be mp3, m4b or both"),
        ("", "concurrency = 2\n", 5, "applies to the whole run"),
    ],
)
def test_job_file_mistakes_are_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], top: str, body: str, line: int, needle: str
) -> None:
    library(tmp_path, count=1)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f'# nightly\n{top}[[book]]\npath = "books/*"\n\n{body}', encoding="utf-8")
    if not top:  # the body's keys sit under [[book]]: the book table starts on line 2
        jobs.write_text(f'# nightly\n[[book]]\npath = "books/*"\n# the voice\n{body}', encoding="utf-8")
    assert main(["batch", str(jobs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and f"{jobs}:{line}:" in err


def test_a_job_whose_paths_all_match_nothing_is_a_mistake_not_a_quiet_night(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library(tmp_path, count=1)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('output = "out"\n[[book]]\npath = "bokos/*.txt"\n', encoding="utf-8")
    assert main(["batch", str(jobs)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{jobs}:3:" in err and "no book matches 'bokos/*.txt'" in err


def test_a_part_shared_with_a_book_of_another_cache_is_copied_to_the_store_it_reads(
    server: FakeSpeechServer, tmp_path: Path, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three books whose chapters are all called "Chapter 1": the spoken title is one part, requested once on
    # behalf of the first book (the default cache), while the last book reads its parts from a cache of its own.
    books = tmp_path / "books"
    books.mkdir()
    for name in ("a", "b", "c"):
        (books / f"{name}.txt").write_text(f"Chapter 1\n\nThe tale of book {name} begins here.\n", "utf-8")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        'output = "out"\n[[book]]\npath = "books/a.txt"\n[[book]]\npath = "books/b.txt"\n'
        '[[book]]\npath = "books/c.txt"\ncache_dir = "own-cache"\n',
        encoding="utf-8",
    )
    assert main(["--quiet", "batch", str(jobs)]) == 0, capsys.readouterr().err
    assert server.served_inputs().count("Chapter 1") == 1  # still paid for once
    assert all(b["status"] == "done" for b in summary(tmp_path).values())
    assert (tmp_path / "out" / "c" / "01 Chapter 1.mp3").is_file()
    # The book with its own cache finds every part there on the next run, even with the shared cache gone.
    shutil.rmtree(isolated_env / "audiobook-pipeline")
    shutil.rmtree(tmp_path / "out" / "c")
    server.clear()
    assert main(["--quiet", "batch", str(jobs)]) == 0
    assert server.requests == []
    assert summary(tmp_path)["c.txt"]["status"] == "done"
