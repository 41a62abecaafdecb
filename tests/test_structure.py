"""The house's shape, checked: which modules a light one may load, and that no module borrows another's
private names. Each import runs in a fresh interpreter, so what another test loaded cannot hide an arrow."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import Counter
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
    # Job files name the feed's base URL: checking it loads no feed writer, no tag reader, no audio code.
    ("pipeline.feed", ["pipeline.assembly", "pipeline.media", "pydub", "feedgen", "mutagen"]),
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


def _module_names(tree: ast.Module) -> list[tuple[str, bool]]:
    """Module-level functions, classes and constants, with whether each is decorated (registered by that)."""
    names: list[tuple[str, bool]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, bool(node.decorator_list)))
        elif isinstance(node, ast.Assign):
            names += [(t.id, False) for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append((node.target.id, False))
    return names


# Public names only tests call, kept on purpose: chunk_book is the chunker's whole-book entry, which its tests
# and the chunk measures drive (the pipeline chunks chapter by chapter).
_TESTED_API = {"chunk_book"}


def test_no_dead_code_in_the_pipeline() -> None:
    """A private name its module never uses, or a public name nothing in the pipeline uses, is dead code."""
    sources = {path: path.read_text(encoding="utf-8") for path in sorted((REPO / "pipeline").rglob("*.py"))}
    words = {path: Counter(re.findall(r"\w+", text)) for path, text in sources.items()}
    everywhere = sum(words.values(), Counter())
    dead = []
    for path, text in sources.items():
        for name, decorated in _module_names(ast.parse(text)):
            if name.startswith("__") or decorated or name in _TESTED_API:
                continue
            if (words[path] if name.startswith("_") else everywhere)[name] < 2:  # the definition alone
                dead.append(f"{path.relative_to(REPO)}: {name}")
    assert dead == []
