"""The house's shape, checked: which modules a light one may load, and that no module borrows another's
private names. Each import runs in a fresh interpreter, so what another test loaded cannot hide an arrow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, child_env

# (module imported, modules it must not load): the arrows that would pull heavy code into a light stage.
ARROWS = [
    # The report is read before a run and by tools: no audio code, no pydub, no ffmpeg lookup.
    ("pipeline.report", ["pipeline.assembly", "pipeline.assembly.loudness", "pipeline.media", "pydub"]),
    # Planning names chapter files without the assembly stage.
    ("pipeline.planning", ["pipeline.assembly", "pipeline.media", "pydub"]),
    # Assembly reads its options without the config loader, the backend registry or the rate governor.
    ("pipeline.assembly", ["pipeline.config", "pipeline.limits", "pipeline.tts.registry", "pydub"]),
    # The frame check is our own judge of a part: it runs no tool.
    ("pipeline.mp3", ["pipeline.media", "subprocess"]),
    # The whole program decodes parts with its one decoder, never with pydub.
    ("pipeline.app", ["pydub"]),
]


def _loaded_after(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(("module", "forbidden"), ARROWS, ids=[m for m, _ in ARROWS])
def test_a_light_module_does_not_load_heavy_ones(module: str, forbidden: list[str]) -> None:
    loaded = _loaded_after(module)
    assert module in loaded
    assert sorted(loaded & set(forbidden)) == []


def test_no_module_imports_another_modules_private_names() -> None:
    borrowed = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                borrowed += [
                    f"{path.relative_to(REPO)}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert borrowed == []


def test_parts_are_decoded_in_one_place() -> None:
    """Only the one decoder feeds a part to ffmpeg's MP3 demuxer on stdin (the M4B decodes chapter files)."""
    feeding = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if '"-f", "mp3", "-i", "pipe:0"' in text:
            feeding.append(Path(path).relative_to(REPO).as_posix())
    assert feeding == ["pipeline/assembly/decode.py"]
