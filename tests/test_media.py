"""Which ffmpeg the pipeline runs: ours (imageio-ffmpeg's), whatever else is on PATH, unless told otherwise."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import threading
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipeline import media
from pipeline.engines import Interruptible
from pipeline.errors import AudioError, ToolError
from pipeline.jobs import ChapterJob, assemble
from pipeline.media import encode_pcm
from pipeline.models import Book, Chapter, Pause, Segment
from pipeline.options import BookOptions
from pipeline.store import Stores
from tests.fakeserver import FakeSpeechServer
from tests.helpers import FAKE_KEY, run_cli, write_book


@pytest.fixture
def fresh_choice():
    media.ffmpeg_exe.cache_clear()
    yield
    media.ffmpeg_exe.cache_clear()


def _fake_ffmpeg(folder: Path) -> Path:
    exe = folder / "ffmpeg"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_an_ffmpeg_on_path_is_not_taken(tmp_path, monkeypatch, fresh_choice):
    _fake_ffmpeg(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv(media.FFMPEG_ENV, raising=False)
    assert media.ffmpeg_exe() == str(imageio_ffmpeg.get_ffmpeg_exe())


def test_an_explicit_ffmpeg_is_used(tmp_path, monkeypatch, fresh_choice):
    exe = _fake_ffmpeg(tmp_path)
    monkeypatch.setenv(media.FFMPEG_ENV, str(exe))
    assert media.ffmpeg_exe() == str(exe)


def test_an_explicit_ffmpeg_that_is_not_there_says_so(tmp_path, monkeypatch, fresh_choice):
    monkeypatch.setenv(media.FFMPEG_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(AudioError, match="AUDIOBOOK_FFMPEG"):
        media.ffmpeg_exe()


# --------------------------------------------------------------------------------------------- capabilities


def _ffmpeg_failing_on(folder: Path, pattern: str) -> tuple[Path, Path]:
    """An ffmpeg that is ours except that it exits 1, with a message, when its arguments contain ``pattern``
    (as a build without that filter would); it logs every call."""
    exe, calls = folder / ("ffmpeg-without-" + re.sub(r"\W+", "-", pattern).strip("-")), folder / "calls.log"
    real = imageio_ffmpeg.get_ffmpeg_exe()
    exe.write_text(
        f'#!/bin/sh\necho "$*" >> "{calls}"\n'
        f'case "$*" in *"{pattern}"*) echo "[error] No such filter: \'{pattern}\'" >&2; exit 1;; esac\n'
        f'exec "{real}" "$@"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, calls


def test_an_explicit_ffmpeg_is_probed_once_for_what_a_use_needs(tmp_path, monkeypatch, fresh_choice):
    exe, calls = _ffmpeg_failing_on(tmp_path, "ebur128")
    monkeypatch.setenv(media.FFMPEG_ENV, str(exe))
    media.require_ffmpeg("mp3", "m4b")  # all there
    with pytest.raises(ToolError) as caught:
        media.require_ffmpeg("mp3", "loudness")
    message = str(caught.value)
    assert "\n" not in message and str(exe) in message and "the ebur128 filter with framelog=quiet" in message
    probes = calls.read_text().splitlines()
    with pytest.raises(ToolError):
        media.require_ffmpeg("loudness")
    assert calls.read_text().splitlines() == probes  # each need asked once a process
    assert len(probes) == len(set(probes))


def test_ours_is_not_probed(tmp_path, monkeypatch, fresh_choice):
    monkeypatch.delenv(media.FFMPEG_ENV, raising=False)
    monkeypatch.setattr(media, "_has", lambda exe, need: pytest.fail(f"probed {need}"))
    media.require_ffmpeg("mp3", "loudness", "m4b")


@pytest.mark.skipif(not Path("/usr/bin/ffmpeg").exists(), reason="no system ffmpeg to try")
def test_a_system_ffmpeg_without_framelog_quiet_is_named_for_loudness_only(monkeypatch, fresh_choice):
    """Debian 12's ffmpeg 5.1 has ebur128 but not framelog=quiet: fine for plain chapters, not for levelling."""
    monkeypatch.setenv(media.FFMPEG_ENV, "/usr/bin/ffmpeg")
    media.require_ffmpeg("mp3", "m4b")
    version = subprocess.run(["/usr/bin/ffmpeg", "-version"], capture_output=True, text=True).stdout
    if "version 5." in version or "version 4." in version:
        with pytest.raises(ToolError, match=r"/usr/bin/ffmpeg .*lacks the ebur128 filter with framelog=quiet"):
            media.require_ffmpeg("loudness")


def _parts(cache: Path) -> set[Path]:
    return {p for p in cache.rglob("*.mp3")}


def test_an_ffmpeg_without_ebur128_fails_a_levelled_run_in_one_line_and_no_paid_part_is_dropped(
    server: FakeSpeechServer, tmp_path: Path, isolated_env: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2, sentences=2)
    env = {"OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": server.url}
    first = run_cli("convert", str(book), "-o", str(tmp_path / "plain"), env=env)
    assert first.returncode == 0, first.stderr
    paid, parts = len(server.requests), _parts(isolated_env)
    assert paid and len(parts) == paid

    fake, _ = _ffmpeg_failing_on(tmp_path, "ebur128")
    out = tmp_path / "levelled"
    failed = run_cli(
        "convert", str(book), "-o", str(out), "--loudness", "ebu", env={**env, media.FFMPEG_ENV: str(fake)}
    )
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fake) in lines[0] and "ebur128" in lines[0] and "Traceback" not in failed.stderr
    assert len(server.requests) == paid and _parts(isolated_env) == parts  # nothing sent, nothing dropped

    again = run_cli("convert", str(book), "-o", str(out), "--loudness", "ebu", env=env)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == paid  # every part came from the cache


def test_an_ffmpeg_failing_while_levelling_keeps_the_part_and_fails_the_run_naming_it(
    server: FakeSpeechServer, tmp_path: Path, isolated_env: Path
) -> None:
    """A tool that passes the probe and fails on the parts all the same: the run fails, the parts stay."""
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2, sentences=2)
    env = {"OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": server.url}
    fake, _ = _ffmpeg_failing_on(tmp_path, "framelog=quiet")
    out = tmp_path / "out"
    failed = run_cli(
        "convert", str(book), "-o", str(out), "--loudness", "ebu", env={**env, media.FFMPEG_ENV: str(fake)}
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "finished parts are cached" in last and "run again to fetch" not in failed.stderr
    assert str(fake) in failed.stderr and "the part is kept" in failed.stderr
    paid = len(server.requests)
    assert paid and len(_parts(isolated_env)) == paid

    again = run_cli("convert", str(book), "-o", str(out), "--loudness", "ebu", env=env)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == paid


def _wav_chapter_job(tmp_path: Path, parts: list[bytes], loudness: str | None) -> tuple[ChapterJob, Stores]:
    stores = Stores()
    store = stores.at(str(tmp_path / "cache"))
    keys = tuple(f"{i:064x}" for i in range(len(parts)))
    for key, data in zip(keys, parts, strict=True):
        store.put(key, data, "wav")
    chapter = Chapter(1, "One", ("x",))
    segments = tuple(Segment(1, i, f"Part {i}.", Pause.END if i == len(parts) - 1 else Pause.SENTENCE)
                     for i in range(len(parts)))  # fmt: skip
    options = BookOptions(response_format="wav", loudness=loudness)
    job = ChapterJob(Book("B", ()), chapter, segments, keys, str(tmp_path / "cache"), tmp_path / "out", options, 1)
    return job, stores


@pytest.mark.parametrize("loudness", [None, "ebu"])
def test_a_wav_part_is_dropped_only_when_it_is_not_wav_not_when_ffmpeg_fails_on_it(
    tmp_path, monkeypatch, fresh_choice, loudness
):
    good = encode_pcm(bytes(2 * 24_000), in_rate=24_000, fmt="wav")
    broken = b"RIFF\xff\xff\xff\xffWAVE" + b"junk" * 10  # a RIFF header and nothing a WAV holds
    job, stores = _wav_chapter_job(tmp_path / "broken", [good, broken], loudness)
    done = assemble(job, stores)
    assert done.audio is None and "not a WAV file" in (done.error or "") and "dropped from the cache" in done.error
    assert stores.at(job.store).get(job.keys[1], "wav") is None and stores.at(job.store).get(job.keys[0], "wav")

    fake, _ = _ffmpeg_failing_on(tmp_path, "-f wav")  # ffmpeg fails on WAV input: a tool's failure
    monkeypatch.setenv(media.FFMPEG_ENV, str(fake))
    media.ffmpeg_exe.cache_clear()
    job, stores = _wav_chapter_job(tmp_path / "tool", [good, good], loudness)
    done = assemble(job, stores)
    assert done.audio is None and str(fake) in (done.error or "") and "the part is kept" in done.error
    assert not done.rerun_helps and all(stores.at(job.store).get(key, "wav") == good for key in job.keys)


def test_a_second_signal_ends_the_ffmpeg_a_thread_waits_on_and_starts_no_other() -> None:
    """An M4B or a chapter encoded in a thread (no cancel reaches it) ends when the run is abandoned."""
    long_encode = [media.ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "anullsrc=r=24000:cl=mono",
                   "-t", "36000", "-c:a", "libmp3lame", "-f", "null", "-"]  # fmt: skip
    outcome: list[subprocess.CompletedProcess[bytes]] = []
    encoding = threading.Thread(target=lambda: outcome.append(media.run_tool(long_encode)), daemon=True)

    async def main() -> None:
        async with Interruptible() as run:
            encoding.start()
            while not media._tools:  # started
                await asyncio.sleep(0.01)
            run._on_signal(signal.SIGINT)
            assert encoding.is_alive()  # the first lets work in flight finish
            run._on_signal(signal.SIGINT)
            await asyncio.to_thread(encoding.join, 30)
        assert not encoding.is_alive() and outcome[0].returncode != 0
        with pytest.raises(ToolError, match="abandoned"):
            media.run_tool([media.ffmpeg_exe(), "-version"])

    try:
        asyncio.run(main())
    finally:
        media.allow_tools()
    assert media.run_tool([media.ffmpeg_exe(), "-version"]).returncode == 0  # the next run may start tools
