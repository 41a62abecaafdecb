"""Atomic writes leave files any reader of the folder can open, as the chapters are."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.files import atomic_write


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_a_file_written_atomically_has_the_permissions_of_any_new_file(tmp_path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain.m3u"
    plain.write_text("x")
    written = atomic_write(tmp_path / "book.m3u", "#EXTM3U\n")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
