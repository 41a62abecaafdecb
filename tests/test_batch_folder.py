"""`audiobook batch FOLDER`: the books in the folder itself, and with --recursive the books in its subfolders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.batch import folder_job
from pipeline.cli import main
from tests.helpers import REPO, write_book


def book(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_book(path, chapters=1, paragraphs=1, seed=seed)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "books"
    book(root / "top.txt", 0)
    book(root / "tolkien" / "book.txt", 1)
    book(root / "austen" / "deep" / "book.md", 2)
    book(root / ".git" / "notes.txt", 3)  # in a hidden folder: never a book
    (root / "austen" / "cover.jpg").write_bytes(b"\xff\xd8")
    (root / "austen" / "back").symlink_to(root, target_is_directory=True)  # a loop, never walked
    return root


def test_a_folder_s_own_books_only_unless_recursive(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "audio"
    flat = folder_job(library, out, None)
    assert [b.source for b in flat.books] == [library / "top.txt"]
    deep = folder_job(library, out, None, recursive=True)
    assert [(b.source.relative_to(library), b.out_dir.relative_to(out)) for b in deep.books] == [
        (Path("austen/deep/book.md"), Path("book.md")),  # same name: each named by as much of its path as differs
        (Path("tolkien/book.txt"), Path("book.txt")),
        (Path("top.txt"), Path("top")),
    ]


def test_batch_recursive_on_the_command_line(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "local.toml")
    out = tmp_path / "audio"
    assert main(["batch", str(library), "-o", str(out), "--config", config, "--recursive", "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(Path(b["source"]).relative_to(library).as_posix() for b in summary) == [
        "austen/deep/book.md",
        "tolkien/book.txt",
        "top.txt",
    ]
    job = tmp_path / "jobs.toml"
    job.write_text('[[book]]\npath = "books/**/*.txt"\n', encoding="utf-8")
    assert main(["batch", str(job), "--recursive"]) == 2
    assert "--recursive go with a folder of books" in capsys.readouterr().err
