"""Packing chunker: requests against the ideal, edit locality and speed, for several packing parameters.

    PYTHONPATH=. .venv/bin/python bench/chunk_locality.py [--max-chars 500] [--sample 40] [--quick]

Requests are segments / Σ⌈chapter characters / max_chars⌉ (no spoken titles) on Alice (the corpus, when
present), the synthetic dialogue book and the synthetic Chinese book. "One region a chapter" is the least any
packing of whole sentences can reach, and shows what edits cost without anchors. Locality edits every paragraph
of Alice (``--sample`` paragraphs a chapter of the synthetic books) three ways and counts new segment texts per
edit: mean, max, and the share above 6. Speed is chunk_book on Alice, best of 7, packed and per paragraph.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.chunker import DEFAULT_PACKING, Packing, chunk_book  # noqa: E402
from pipeline.models import Book  # noqa: E402
from pipeline.readers import read_book  # noqa: E402
from tests.chunk_measures import FEWEST, chinese_book, dialogue_book, edit_changes, requests_ratio  # noqa: E402

CORPUS_BOOK = REPO.parent / "shared" / "corpus" / "alice-pg11.txt"
CHOICES = {
    "default": DEFAULT_PACKING,
    "denser": Packing(anchor_spacing=5.0, min_anchor_gap=2.0, max_region=8.0),
    "sparser": Packing(anchor_spacing=8.0, min_anchor_gap=3.0, max_region=10.0),
    "no max region": Packing(max_region=1e12),
    "one region a chapter (fewest)": FEWEST,
}


def locality(book: Book, max_chars: int, sample: int | None, packing: Packing) -> str:
    per_kind = edit_changes(book, max_chars, sample=sample, packing=packing)
    every = [n for counts in per_kind.values() for n in counts]
    over = sum(1 for n in every if n > 6) / len(every)
    return f"{statistics.mean(every):.2f}/{max(every)} ({over:.1%} >6, {len(every)} edits)"


def speed(book: Book, max_chars: int, pack: bool) -> float:
    best = math.inf
    for _ in range(7):
        t0 = time.perf_counter()
        chunk_book(book, max_chars, announce_titles=True, pack=pack)
        best = min(best, time.perf_counter() - t0)
    return book.characters / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-chars", type=int, default=500)
    parser.add_argument("--sample", type=int, default=40, help="paragraphs edited per synthetic chapter")
    parser.add_argument("--quick", action="store_true", help="the default packing only")
    args = parser.parse_args()
    books = {"dialogue": dialogue_book(), "chinese": chinese_book()}
    if CORPUS_BOOK.is_file():
        books = {"alice": read_book(CORPUS_BOOK), **books}
    else:
        print(f"(corpus absent: {CORPUS_BOOK})")
    choices = {"default": DEFAULT_PACKING} if args.quick else CHOICES
    for name, packing in choices.items():
        print(f"{name}: {packing}")
        for title, book in books.items():
            ratio = requests_ratio(book, args.max_chars, packing=packing)
            sample = None if title == "alice" else args.sample
            edits = "  edits changed " + locality(book, args.max_chars, sample, packing)
            print(f"  {title:9s} requests/ideal {ratio:.3f}{edits}")
    if "alice" in books:
        alice = books["alice"]
        packed, flat = speed(alice, args.max_chars, True), speed(alice, args.max_chars, False)
        print(f"speed on alice: packed {packed / 1e6:.1f}M chars/s, per paragraph {flat / 1e6:.1f}M chars/s")


if __name__ == "__main__":
    main()
