"""Which ffmpeg the pipeline runs: ours (imageio-ffmpeg's), whatever else is on PATH, unless told otherwise."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipeline import media
from pipeline.errors import AudioError


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
