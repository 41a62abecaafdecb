"""The run's chapter events and its interrupt hook (``Progress.chapter``, ``Progress.interrupt``), what a front
end such as the web page shows and stops a run with: against the fake speech server, through ``app.convert``."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

from pipeline import app
from pipeline.config import load_settings
from pipeline.progress import ChapterEvent, Progress
from pipeline.report import BookStatus
from tests.fakeserver import FakeSpeechServer, Fault
from tests.helpers import write_book


class Recorder(Progress):
    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.events: list[ChapterEvent] = []
        self.on_part = lambda: None

    def chapter(self, event: ChapterEvent) -> None:
        self.events.append(event)
        if event.kind == "part":
            self.on_part()

    def count(self, kind: str) -> collections.Counter[int]:
        found: collections.Counter[int] = collections.Counter()
        for e in self.events:
            if e.kind == kind:
                found[e.chapter] += e.count
        return found


def plan_of(tmp_path: Path, book: Path, name: str, **overrides: object):  # type: ignore[no-untyped-def]
    settings = load_settings(overrides={"cache_dir": str(tmp_path / "cache"), "pack": False, **overrides})
    return app.plan(app.read(book, settings.book), settings, tmp_path / name), settings


def test_each_chapter_hears_its_parts_retries_and_file(
    server: FakeSpeechServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2, sentences=2)
    plan, settings = plan_of(tmp_path, book, "out", concurrency=1)
    server.inject(Fault.status(503))
    progress = Recorder()
    result = app.convert([plan], settings.run, progress=progress)
    (report,) = result.reports
    assert report.status == BookStatus.DONE
    waiting, parts = progress.count("waiting"), progress.count("part")
    assert waiting == parts == {c.chapter.index: len(set(c.keys)) for c in plan.chapters}
    assert sum(progress.count("retry").values()) == report.retries == 1
    written = [(e.chapter, e.detail) for e in progress.events if e.kind == "written"]
    assert sorted(written) == [(c.chapter.index, c.filename) for c in plan.chapters]
    assert all(e.out_dir == tmp_path / "out" for e in progress.events)


def test_parts_made_again_by_verification_are_told_to_their_chapter(human: FakeSpeechServer, tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=4, sentences=4)
    human.lie("cut_short", 0.2, seed=3)
    plan, settings = plan_of(tmp_path, book, "out")
    progress = Recorder()
    (report,) = app.convert([plan], settings.run, progress=progress).reports
    remade = progress.count("remade")
    # The events tell what the report counts. The timing check may let a lie through (which parts the fake
    # server cuts depends on the order requests arrive), so the lies told bound the remakes rather than equal them.
    assert remade == {c.index: c.remade for c in report.chapters if c.remade}
    assert 0 < sum(remade.values()) <= sum(human.lies_told().values())


def test_interrupt_from_another_thread_stops_the_run_and_a_rerun_asks_only_for_the_rest(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    server.latency = 0.05
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=3, sentences=2)
    plan, settings = plan_of(tmp_path, book, "out", concurrency=1)
    progress = Recorder()
    progress.on_part = lambda: threading.Thread(target=progress.interrupt, args=("a cancel",)).start()
    result = app.convert([plan], settings.run, progress=progress)
    assert result.interrupted == "a cancel"
    assert result.reports[0].status == BookStatus.INTERRUPTED
    first = len(server.served_inputs())
    assert 0 < first < len(plan.needed)

    again, settings = plan_of(tmp_path, book, "out", concurrency=1)
    assert app.convert([again], settings.run).reports[0].status == BookStatus.DONE
    served = server.served_inputs()
    assert len(served) == len(plan.needed) and len(set(served)) == len(served)
