"""Calibrates the transcript check (pipeline/transcript.py): how its figures fall on clean and faulty parts.

Every text is cut into parts of at most 500 characters of whole sentences (as the chunker packs them). Each part
is "transcribed" with the fake server's recogniser noise (tests/fakeserver.py ``noisy``) at several word error
rates and seeds, and, when it has 3 to 5 sentences, once per sentence with that sentence left out (then noised
the same way). Prints the distributions of coverage, the longest missing run and extra, and how many parts the
rule (``Coverage.suspect``) flags: a false alarm is a clean part flagged, a miss a faulty part not flagged.

    .venv/bin/python -m bench.transcript_threshold [TEXT ...]   # default: the demo sample
    # the thresholds' figures (pipeline/transcript.py): Alice (Project Gutenberg #11), the demo sample and two
    # Chinese prose texts: .venv/bin/python -m bench.transcript_threshold alice-pg11.txt \
    #     samples/the-lantern-keeper.md chinese-prose.md zh-synth.md
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.transcript import COVERAGE_MIN, compare, tokens
from tests.fakeserver import noisy, sentences

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [ROOT / "samples" / "the-lantern-keeper.md"]
BINS = (("1-4", 4), ("5", 5), ("6-9", 9), ("10+", 10**9))
NOISE = (  # (substitute, delete, insert): a good recogniser's 3-5 % of words wrong, and twice that
    (0.03, 0.005, 0.005),
    (0.04, 0.01, 0.005),
    (0.05, 0.01, 0.01),
    (0.08, 0.02, 0.01),
)


def parts(text: str, max_chars: int = 500) -> list[str]:
    """Whole sentences packed across paragraphs up to ``max_chars``, as the chunker packs them for the API."""
    out: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split()) if not re.search(r"[\u4e00-\u9fff]", paragraph) else paragraph.strip()
        if not flat or flat.startswith(("#", "<!--")):
            continue
        for sentence in sentences(flat):
            if current and len(current) + len(sentence) + 1 > max_chars:
                out.append(current.strip())
                current = ""
            current += sentence.strip() + " "
    if current.strip():
        out.append(current.strip())
    return out


def language(part: str) -> str:
    return "zh" if len(re.findall(r"[\u4e00-\u9fff]", part)) * 2 > len(part) else "en"


def quantiles(values: Sequence[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return f"n={len(ordered)} min {ordered[0]:.3f} p1 {q[0]:.3f} p5 {q[4]:.3f} median {q[49]:.3f} " \
        f"p95 {q[94]:.3f} p99 {q[98]:.3f} max {ordered[-1]:.3f}"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="*", type=Path, default=DEFAULT)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    pieces = [p for path in args.texts for p in parts(path.read_text(encoding="utf-8"))]
    for script in ("en", "zh"):
        chosen = [p for p in pieces if language(p) == script]
        if not chosen:
            continue
        print(f"== {script}: {len(chosen)} parts, median {statistics.median(len(p) for p in chosen):.0f} chars")
        for rates in NOISE:
            cov, gap, extra, flagged = [], [], [], 0
            for seed in range(args.seeds):
                for i, part in enumerate(chosen):
                    rng = random.Random(f"{seed}:{i}")
                    c = compare(part, noisy(part, rng, substitute=rates[0], delete=rates[1], insert=rates[2]),
                                language=script)  # fmt: skip
                    cov.append(c.coverage)
                    gap.append(c.longest_gap)
                    extra.append(c.extra)
                    flagged += c.suspect
            print(f"clean, noise {rates}: false alarms {flagged}/{len(cov)}")
            print(f"  coverage {quantiles(cov)}\n  longest gap {quantiles(gap)}\n  extra {quantiles(extra)}")
        for rates in NOISE[:3]:
            cov: list[float] = []
            caught, by_cov = 0, 0
            bins: dict[str, list[int]] = {}  # words (CJK: characters) of the sentence left out -> [caught, all]
            for i, part in enumerate(chosen):
                said = sentences(part)
                if len(said) < 3 or (script == "en" and len(said) > 5):  # CJK parts hold more, shorter sentences
                    continue
                for drop in range(len(said)):
                    rest = "".join(s for j, s in enumerate(said) if j != drop)
                    c = compare(part, noisy(rest, random.Random(f"d{i}:{drop}"), substitute=rates[0],
                                            delete=rates[1], insert=rates[2]), language=script)  # fmt: skip
                    cov.append(c.coverage)
                    caught += c.suspect
                    by_cov += c.coverage < COVERAGE_MIN
                    size = len(tokens(said[drop], language=script))
                    tally = bins.setdefault(next(b for b, top in BINS if size <= top), [0, 0])
                    tally[0] += c.suspect
                    tally[1] += 1
            shown = ", ".join(f"{b}: {bins[b][0]}/{bins[b][1]}" for b, _ in BINS if b in bins)
            most = 5 if script == "en" else "n"
            print(f"one sentence left out of a part of 3-{most} sentences, noise {rates}: caught {caught}/{len(cov)} "
                  f"(by coverage alone {by_cov}); by the sentence's tokens: {shown}")  # fmt: skip
            print(f"  coverage {quantiles(cov)}")
        longest = max(chosen, key=len)
        transcript = noisy(longest, random.Random(0))
        start = time.perf_counter()
        for _ in range(200):
            compare(longest, transcript, language=script)
        print(f"compare of a {len(longest)}-char part: {(time.perf_counter() - start) / 200 * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
