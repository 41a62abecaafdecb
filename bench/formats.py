"""What reading a long PDF costs: a 300-page book typeset by tests/pdfbooks.py (reportlab, a dev dependency),
read by the PDF reader in a child process of its own, so its peak memory (ru_maxrss) is the reader's alone.

    python -m bench.formats [--pages 300]

Prints pages, chapters, characters, wall and CPU seconds, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, sys, time
from pathlib import Path
start_wall, start_cpu = time.perf_counter(), time.process_time()

def hwm():  # VmHWM: the peak resident size of this process since exec (ru_maxrss carries the parent's over)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
before = hwm()
from pipeline.readers import read_book
book = read_book(Path(sys.argv[1]))
print(json.dumps({
    "chapters": len(book.chapters),
    "characters": book.characters,
    "wall_s": round(time.perf_counter() - start_wall, 2),
    "cpu_s": round(time.process_time() - start_cpu, 2),
    "peak_rss_mb": round(hwm(), 1),
    "rss_before_import_mb": round(before, 1),
}))
"""


def make_book(path: Path, pages: int) -> int:
    """A book of about ``pages`` pages: chapters of about 9.4 pages (44 paragraphs of 9 sentences)."""
    import pypdfium2 as pdfium

    from tests.pdfbooks import book_pdf, sentences

    chapters = [
        (f"Chapter {n}", [sentences(n * 100 + k, 9) for k in range(44)])
        for n in range(1, max(1, round(pages * 30 / 283)) + 1)
    ]
    book_pdf(path, chapters)
    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf)
    finally:
        pdf.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.pdf"
        pages = make_book(path, args.pages)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True)
        result = {"pages": pages, "pdf_mb": round(path.stat().st_size / 2**20, 2), **json.loads(out.stdout)}
    print(
        f"PDF reader: {result['pages']} pages ({result['pdf_mb']} MB), {result['chapters']} chapters, "
        f"{result['characters']:,} characters: {result['wall_s']} s wall, {result['cpu_s']} s CPU "
        f"({result['pages'] / max(result['cpu_s'], 0.01):.0f} pages per CPU second), peak RSS "
        f"{result['peak_rss_mb']} MB"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
