"""What travels between machines: every unit of work and every result, through JSON and back, unchanged.

The celery engine sends these values as JSON. Rather than build each by hand, a real run (offline voice, M4B, a
cover, subtitles, a lexicon, loudness levelling, the cache folder given as a path or a string) goes through an
executor that sends everything through the codec, and each value must come back equal to what was sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import app
from pipeline.config import load_settings
from pipeline.engines.local import LocalExecutor
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.models import PartRequest, PartResult
from pipeline.outputs import FinishJob
from pipeline.runner import Run
from pipeline.store import Stores
from pipeline.tts.registry import Synthesizers
from pipeline.wire import decode, encode
from tests.helpers import tiny_png, write_book


def over_the_wire(kind: type, value: Any, seen: list[str]) -> Any:
    sent = json.loads(json.dumps(encode(value)))
    back = decode(kind, sent)
    assert back == value, f"{kind.__name__} changed on the way"
    seen.append(kind.__name__)
    return back


class WireExecutor(LocalExecutor):
    """The local engine, with every request, job and result passed through JSON as the celery engine does."""

    seen: list[str]

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        sent = (over_the_wire(PartRequest, r, self.seen) for r in requests)
        await super().run(sent, lambda result: on_result(over_the_wire(PartResult, result, self.seen)))

    async def assemble(self, job: ChapterJob) -> ChapterDone:
        done = await super().assemble(over_the_wire(ChapterJob, job, self.seen))
        return over_the_wire(ChapterDone, done, self.seen)

    async def finish(self, job: FinishJob, note: Callable[[str], None]) -> FinishDone:
        done = await super().finish(over_the_wire(FinishJob, job, self.seen), note)
        return over_the_wire(FinishDone, done, self.seen)


@pytest.mark.parametrize("cache", ["path", "string"])
def test_every_unit_of_work_and_result_survives_json(tmp_path: Path, cache: str) -> None:
    book = write_book(tmp_path / "book.md", chapters=2, paragraphs=2, sentences=2)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("Sentence => Sentences\n", encoding="utf-8")
    cache_dir: Path | str = tmp_path / "cache" if cache == "path" else str(tmp_path / "cache")
    settings = load_settings(
        env={},
        overrides={
            "backend": "local",
            "cache_dir": cache_dir,
            "m4b": True,
            "loudness": "ebu",
            "subtitles": "srt",
            "lexicon": lexicon,
        },
    )
    stores = Stores()
    read = dataclasses.replace(app.read(book, settings.book), cover=tiny_png(), cover_mime="image/png")
    plan = app.plan(read, settings, tmp_path / "out", stores)
    synths = Synthesizers(2, {})

    async def main() -> list[str]:
        executor = WireExecutor(synths, stores, 2)
        executor.seen = []
        async with executor:
            (report,) = await Run([plan], executor, stores).execute()
        await synths.aclose()
        assert report.status.value == "done", report.problem()
        return executor.seen

    seen = asyncio.run(main())
    assert {"PartRequest", "PartResult", "ChapterJob", "ChapterDone", "FinishJob", "FinishDone"} <= set(seen)
    assert len(list((tmp_path / "out").glob("*.m4b"))) == 1


def test_a_union_of_two_types_decodes_by_what_was_sent() -> None:
    @dataclasses.dataclass(frozen=True)
    class Holder:
        where: str | Path | None
        count: int | str

    for value in (Holder("s3://bucket/parts", 3), Holder(None, "three"), Holder("/a/b", 0)):
        assert decode(Holder, json.loads(json.dumps(encode(value)))) == value
