"""`make bench`, section `articles`: how well web pages become an article's text, on saved pages with known
main text from public extraction benchmarks. The pages belong to their publishers: they are fetched into a cache
folder by hand, never committed, and the section is skipped (saying why and how to get them) when absent.

Datasets, under ``$AUDIOBOOK_ARTICLE_BENCH`` (default ``~/.cache/audiobook-pipeline/article-bench``):

    scrapinghub/   git clone https://github.com/scrapinghub/article-extraction-benchmark
                   (html/<id>.html.gz and ground-truth.json: 181 English news, magazine and blog pages)
    chinese/       git clone https://github.com/immortal-autumn/Chinese-Web-Content-Extraction-Dataset
                   (original/<id>.html and cleaned/<id>.txt: 69 Chinese news and portal pages)

Each page is read by the reader a user gets (``read_book`` on the saved file) and by the paths it chooses
between, and scored by word F1 against the page's known text (words lower-cased; CJK by character). A page
is *refused* when the reader raises, *truncated* when it reads under half of the known text's words and says
nothing (recall < 0.5, no error, no note in the plan that the article may be only part of the page's text);
*said* counts those read in part with that note.

    .venv/bin/python bench/run.py --only articles
    .venv/bin/python -m bench.articles [--paths reader,readability,trafilatura] [--worst 10]
    .venv/bin/python -m bench.articles --page 3f65af [--paths reader,trafilatura]   # one page, paragraph by paragraph
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.errors import AudiobookError  # noqa: E402

ENV = "AUDIOBOOK_ARTICLE_BENCH"
# Resolved when imported: bench/run.py points XDG_CACHE_HOME at a scratch folder before it measures.
DEFAULT_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audiobook-pipeline" / "article-bench"
GOOD_F1 = 0.95
TRUNCATED_RECALL = 0.5

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+")


def tokens(text: str) -> Counter[str]:
    """Words lower-cased, each CJK character a word of its own."""
    return Counter(_TOKEN.findall(text.lower()))


def score(truth: str, got: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``got``'s words against ``truth``'s, as bags of words."""
    want, have = tokens(truth), tokens(got)
    common = sum((want & have).values())
    precision = common / max(1, sum(have.values()))
    recall = common / max(1, sum(want.values()))
    f1 = 2 * precision * recall / (precision + recall) if common else 0.0
    return precision, recall, f1


@dataclass(frozen=True)
class Page:
    dataset: str
    name: str
    html: bytes
    truth: str


def dataset_root() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_ROOT)


def missing_reason(root: Path) -> str | None:
    if (root / "scrapinghub" / "ground-truth.json").is_file() or (root / "chinese" / "cleaned").is_dir():
        return None
    return (
        f"no saved pages in {root} (set ${ENV}); get them with: git clone "
        f"https://github.com/scrapinghub/article-extraction-benchmark {root}/scrapinghub && git clone "
        f"https://github.com/immortal-autumn/Chinese-Web-Content-Extraction-Dataset {root}/chinese"
    )


def load_pages(root: Path) -> Iterator[Page]:
    english = root / "scrapinghub"
    if (english / "ground-truth.json").is_file():
        truth = json.loads((english / "ground-truth.json").read_text(encoding="utf-8"))
        for name, item in sorted(truth.items()):
            path = english / "html" / f"{name}.html.gz"
            if path.is_file():
                yield Page("english", name, gzip.decompress(path.read_bytes()), item["articleBody"])
    chinese = root / "chinese"
    if (chinese / "cleaned").is_dir():
        for text in sorted((chinese / "cleaned").glob("*.txt")):
            page = chinese / "original" / f"{text.stem}.html"
            if page.is_file():
                yield Page("chinese", text.stem, page.read_bytes(), text.read_text(encoding="utf-8", errors="replace"))


# ------------------------------------------------------------------------------------------- the paths


def _book_text(book: Any) -> str:
    """What the voice reads: every chapter's paragraphs, and the titles of chapters after the first (the
    first is the article's own title, which the known text leaves out)."""
    parts = []
    for n, chapter in enumerate(book.chapters):
        if n:
            parts.append(chapter.title)
        parts.extend(chapter.paragraphs)
    return "\n".join(parts)


def _via_file(reader: Callable[[Path], Any]) -> Callable[[Page, Path], tuple[str, bool]]:
    """Run a reader on the page saved as a file: what it reads, and whether it said the article may be only
    part of it (a note in the plan)."""

    def run(page: Page, scratch: Path) -> tuple[str, bool]:
        path = scratch / f"{page.name}.html"
        path.write_bytes(page.html)
        try:
            book = reader(path)
            return _book_text(book), any("of the page's prose" in note for note in book.skipped)
        finally:
            path.unlink(missing_ok=True)

    return run


def paths() -> dict[str, Callable[[Page, Path], tuple[str, bool]]]:
    from pipeline.readers import html as html_reader
    from pipeline.readers import read_book

    return {
        "reader": _via_file(read_book),  # what a user gets: trafilatura or readability, as the reader chooses
        "readability": _via_file(lambda path: html_reader.read_html(path, method="readability")),
        "trafilatura": _via_file(lambda path: html_reader.read_html(path, method="trafilatura")),
    }


# ------------------------------------------------------------------------------------------- measuring


def measure(names: list[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    root = root or dataset_root()
    reason = missing_reason(root)
    if reason:
        return {"skipped": reason}
    pages = list(load_pages(root))
    chosen = {k: v for k, v in paths().items() if names is None or k in names}
    results: dict[str, Any] = {"root": str(root), "pages": len(pages), "paths": {}}
    with tempfile.TemporaryDirectory(prefix="article-bench-") as tmp:
        for name, run in chosen.items():
            rows = []
            started = time.perf_counter()
            for page in pages:
                error, warned = None, False
                try:
                    got, warned = run(page, Path(tmp))
                except AudiobookError as exc:
                    got, error = "", str(exc)
                precision, recall, f1 = score(page.truth, got)
                rows.append(
                    {
                        "dataset": page.dataset,
                        "page": page.name,
                        "f1": round(f1, 4),
                        "precision": round(precision, 4),
                        "recall": round(recall, 4),
                        "error": error,
                        "warned": warned,
                    }
                )
            results["paths"][name] = {"seconds": round(time.perf_counter() - started, 1), "rows": rows}
    return results


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    f1s = sorted(r["f1"] for r in rows if not r["error"])
    refused = sum(1 for r in rows if r["error"])
    short = [r for r in rows if not r["error"] and r["recall"] < TRUNCATED_RECALL]
    truncated = sum(1 for r in short if not r.get("warned"))  # read in part, and nothing said
    good = sum(1 for r in rows if not r["error"] and r["f1"] >= GOOD_F1)

    def quantile(q: float) -> float:
        return f1s[min(len(f1s) - 1, int(q * len(f1s)))] if f1s else 0.0

    return {
        "pages": len(rows),
        "good": good,
        "good_share": round(good / max(1, len(rows)), 3),
        "refused": refused,
        "truncated": truncated,
        "truncated_said": len(short) - truncated,
        "warned": sum(1 for r in rows if r.get("warned")),
        "median_f1": round(statistics.median(f1s), 3) if f1s else 0.0,
        "mean_f1": round(statistics.fmean(f1s), 3) if f1s else 0.0,
        "p10_f1": round(quantile(0.1), 3),
        "p25_f1": round(quantile(0.25), 3),
        "at_least": {str(t): sum(1 for f in f1s if f >= t) for t in (0.99, 0.95, 0.9, 0.8, 0.5)},
    }


def lines(results: dict[str, Any]) -> list[str]:
    out = ["", "Articles: word F1 of what the reader reads against each page's known main text (CJK by character)"]
    if "skipped" in results:
        return [*out, f"   skipped: {results['skipped']}"]
    out.append(f"   {results['pages']} saved pages from {results['root']}")
    out.append(
        "   path         dataset  pages  F1>=0.95        refused  truncated  said  warned  median  p25    p10    "
        "F1>=0.9  >=0.8"
    )
    for name, data in results["paths"].items():
        for dataset in ("english", "chinese", "all"):
            rows = [r for r in data["rows"] if dataset == "all" or r["dataset"] == dataset]
            if not rows:
                continue
            s = summary(rows)
            out.append(
                f"   {name:<12} {dataset:<8} {s['pages']:>5}  {s['good']:>4} ({s['good_share']:>5.0%})  "
                f"{s['refused']:>7}  {s['truncated']:>9}  {s['truncated_said']:>4}  {s['warned']:>6}  "
                f"{s['median_f1']:.3f}  {s['p25_f1']:.3f}  {s['p10_f1']:.3f}  "
                f"{s['at_least']['0.9']:>7}  {s['at_least']['0.8']:>5}"
            )
        out.append(f"   {'':12} ({data['seconds']:.1f} s for every page)")
    return out


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _TOKEN.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))} if words else set()


def show_page(prefix: str, names: list[str]) -> int:
    """Why a page scores as it does: what each path reads, paragraph by paragraph ("  " most of it in the known
    text, "x " some, "XX" little), and the known text's most common words it did not read."""
    root = dataset_root()
    pages = [p for p in load_pages(root) if p.name.startswith(prefix)] if not missing_reason(root) else []
    if len(pages) != 1:
        print(f"{len(pages)} saved pages in {root} start with {prefix!r}: give one", file=sys.stderr)
        return 2
    page, run_paths = pages[0], paths()
    known = _shingles(page.truth)
    with tempfile.TemporaryDirectory(prefix="article-bench-") as tmp:
        for name in names:
            try:
                got, _ = run_paths[name](page, Path(tmp))
            except AudiobookError as exc:
                print(f"{name}: refused: {exc}")
                continue
            precision, recall, f1 = score(page.truth, got)
            print(f"{name}: {page.dataset} {page.name}  F1 {f1:.3f}  P {precision:.3f}  R {recall:.3f}")
            for line in got.split("\n"):
                runs = _shingles(line)
                share = len(runs & known) / len(runs) if runs else 1.0
                mark = "  " if share >= 0.8 else "x " if share >= 0.3 else "XX"
                print(f"  {mark} {line[:110]}")
            left = tokens(page.truth) - tokens(got)
            print(f"  not read: {left.total()} words, most often: {' '.join(w for w, _ in left.most_common(30))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="article extraction against saved pages with known text")
    parser.add_argument("--paths", help="comma-separated: reader, readability, trafilatura (default: all)")
    parser.add_argument("--worst", type=int, default=0, help="list the N worst pages of each path")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--page",
        help="show one page (a prefix of its name): each paragraph the reader reads, marked by how much of it is in "
        "the known text, and the known words it left out",
    )
    args = parser.parse_args(argv)
    if args.page:
        return show_page(args.page, args.paths.split(",") if args.paths else ["reader"])
    results = measure(args.paths.split(",") if args.paths else None)
    print("\n".join(lines(results)))
    for name, data in results.get("paths", {}).items():
        if args.worst:
            print(f"\n{name}: worst pages")
            for r in sorted(data["rows"], key=lambda r: r["f1"])[: args.worst]:
                error = f"  {r['error'][:120]}" if r["error"] else ""
                print(f"   {r['dataset']:<8} {r['page'][:16]}  F1 {r['f1']:.3f}  P {r['precision']:.3f}  "
                      f"R {r['recall']:.3f}{error}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
