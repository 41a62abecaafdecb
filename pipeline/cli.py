"""Command line: parse, load settings, run, map errors to exit codes. Data goes to stdout, logs to stderr."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import AudiobookError, Interrupted, RunFailed, UsageError

log = logging.getLogger("audiobook")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 with usage; keep it to one clear line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speech settings (override the config file and the environment)")
    g.add_argument("--config", type=Path, help="TOML settings file (see configs/)")
    g.add_argument(
        "--backend",
        choices=["openai", "local"],
        help="openai: any OpenAI-compatible API; local: offline voice",
    )
    g.add_argument("--base-url", help="API base URL, e.g. https://api.openai.com/v1 (env: OPENAI_BASE_URL)")
    g.add_argument("--model", help="speech model (default gpt-4o-mini-tts)")
    g.add_argument("--voice", help="voice name (default alloy)")
    g.add_argument("--instructions", help="how to speak, for models that take instructions")
    g.add_argument("--speed", type=float, help="0.25 to 4.0")
    g.add_argument("--language", help="override the book's language, e.g. en or zh")
    g.add_argument("--max-chars", type=int, help="largest segment sent in one request (default 500)")
    g.add_argument("--concurrency", type=int, help="requests in flight at once (default 8)")
    g.add_argument("--max-retries", type=int, help="retries per request (default 4)")
    g.add_argument("--timeout", type=float, help="seconds to wait for one answer (default 120)")
    g.add_argument("--cache-dir", type=Path, help="where finished parts are kept (default ~/.cache/audiobook-pipeline)")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--subtitles", choices=["srt", "vtt"], help="write subtitles next to each chapter")
    g.add_argument("--m4b", action="store_true", default=None, help="also build one M4B with chapter markers")
    g.add_argument(
        "--no-titles", dest="announce_titles", action="store_false", default=None, help="do not speak chapter titles"
    )
    g.add_argument(
        "--include-matter",
        action="store_true",
        default=None,
        help="also read front and back matter (title page, contents, licence)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="audiobook", description="Turn books and articles into chapter-by-chapter audiobooks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs, tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    # The same two flags after the command (`audiobook convert book.txt -q`); SUPPRESS keeps the top-level value.
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    for name, help_text in (("convert", "convert one book to audio"), ("plan", "show what convert would do")):
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.add_argument("book", type=Path, help="a .txt, .md, .html or .epub file")
        p.add_argument("-o", "--output", type=Path, help="output folder (default: ./<book file name>)")
        if name == "convert":
            p.add_argument("--dry-run", action="store_true", help="read and chunk only; send nothing")
        p.add_argument("--json", action="store_true", help="print the plan or the report as JSON")
        _add_settings_flags(p)
        _add_output_flags(p)

    p = sub.add_parser("voices", help="list the offline engine's voices", parents=[common])
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("serve", help="serve the offline voice as an OpenAI-compatible speech API", parents=[common])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer key (default: $AUDIOBOOK_SERVER_KEY, else none)")

    p = sub.add_parser("batch", help="convert every book a job file lists, incrementally", parents=[common])
    p.add_argument("jobs", type=Path, help="job file (TOML), see configs/batch.example.toml")
    p.add_argument("--dry-run", action="store_true", help="show every book's plan and the totals; send nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--max-cost", type=float, help="refuse work that would cost more than this (USD, estimated)")
    p.add_argument(
        "--summary", type=Path, help="where to write the JSON summary (default: <output>/batch-summary.json)"
    )
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "backend",
        "base_url",
        "model",
        "voice",
        "instructions",
        "speed",
        "language",
        "max_chars",
        "concurrency",
        "max_retries",
        "timeout",
        "cache_dir",
        "subtitles",
        "m4b",
        "announce_titles",
        "include_matter",
    )
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # cron, CI, pipes: timestamped lines, no progress-bar noise
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("audiobook")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


# ------------------------------------------------------------------------------------------------ commands


def cmd_convert(args: argparse.Namespace, dry_run: bool) -> int:
    from pipeline.cache import PartCache
    from pipeline.config import load_settings
    from pipeline.readers import read_book
    from pipeline.runner import Runner, note_retry, plan_book, prepare_output
    from pipeline.tts.factory import synth_factory

    settings = load_settings(args.config, overrides=_flag_overrides(args))
    book = read_book(args.book, include_matter=settings.include_matter, language=settings.language)
    out_dir = args.output or Path(args.book.stem)
    cache = PartCache(settings.resolved_cache_dir)
    plan = plan_book(book, settings, out_dir, cache)
    if dry_run:
        summary = plan.summary()
        print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else format_plan(summary))
        return 0
    synth_for = synth_factory(on_retry=note_retry)
    synth_for(settings)  # fail on a missing key before touching the output folder
    cache.check_writable()
    prepare_output(out_dir)
    runner = Runner(synth_for, cache, concurrency=settings.concurrency, progress=progress_for(args))
    (report,) = runner.run([plan])
    runner.check_interrupted()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report, out_dir))
    problem = report.problem()
    if problem:
        raise RunFailed(f"{book.title}: {problem}; finished parts are cached, run the same command again")
    return 0


def progress_for(args: argparse.Namespace) -> Any:
    from pipeline.progress import Progress

    return Progress(enabled=not args.quiet)


def cmd_voices(args: argparse.Namespace) -> int:
    from pipeline.tts.espeak import list_voices

    voices = list_voices()
    if args.json:
        print(json.dumps([v.__dict__ for v in voices], ensure_ascii=False, indent=2))
    else:
        for v in voices:
            print(f"{v.name:<12} {v.language:<8} {v.description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.server import serve

    key = args.api_key or os.environ.get("AUDIOBOOK_SERVER_KEY") or None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")
    serve(
        args.host,
        args.port,
        key,
        ready=lambda url: print(f"serving OpenAI-compatible speech at {url}", flush=True),
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from pipeline.batch import run_batch

    return run_batch(args)


# ------------------------------------------------------------------------------------------------ output


def format_plan(summary: dict[str, Any]) -> str:
    b = summary["book"]
    lines = [
        f"Book:     {b['title']}" + (f" — {b['author']}" if b.get("author") else "") + f" [{b.get('language') or '?'}]",
        f"Source:   {b['source']}",
        f"Output:   {summary['output']}",
        f"Speech:   {summary['backend']} {summary['endpoint']}, model {summary['model']}, voice {summary['voice']}",
        "",
        f"{'#':>3}  {'chapter':<44} {'segments':>8} {'chars':>8} {'cached':>7}",
    ]
    for c in summary["chapters"]:
        cached = "current" if c["up_to_date"] else f"{c['cached_segments']}"
        lines.append(f"{c['index']:>3}  {_fit(c['title'], 44)} {c['segments']:>8} {c['characters']:>8,} {cached:>7}")
    if summary["skipped"]:
        lines += ["", "Skipped (not read aloud; --include-matter reads them):"]
        lines += [f"  - {s}" for s in summary["skipped"]]
    lines += [
        "",
        f"Total:    {len(summary['chapters'])} chapter{'' if len(summary['chapters']) == 1 else 's'}, "
        f"{summary['segments']} segments, "
        f"{summary['characters']:,} characters; {summary['cached_segments']} segments cached",
        f"To send:  {summary['requests_needed']} requests, {summary['characters_to_send']:,} characters, "
        f"estimated cost ${summary['estimated_cost_usd']:.2f}",
    ]
    return "\n".join(lines)


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _fit(text: str, width: int) -> str:
    """Pad or cut to a terminal width; CJK characters take two columns."""
    if _columns(text) > width:
        while _columns(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _columns(text))


def format_report(report: Any, out_dir: Path) -> str:
    from pipeline.runner import _clock

    done = [c for c in report.chapters if c.status in ("done", "unchanged")]
    lines = [f"{c.file}  {_clock(c.duration_s or 0)}" for c in done]
    lines += [name for name in (report.playlist, report.m4b) if name]
    lines.append(
        f"{len(done)}/{len(report.chapters)} chapters, {_clock(report.duration_s)} of audio in {out_dir}/ — "
        f"{report.requests} requests, {report.retries} retries, {report.cache_hits} cached parts; "
        f"report: {out_dir / 'report.json'}"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv or bool(os.environ.get("AUDIOBOOK_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.verbose, args.quiet)
        if args.command in ("convert", "plan"):
            return cmd_convert(args, dry_run=args.command == "plan" or args.dry_run)
        if args.command == "voices":
            return cmd_voices(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "batch":
            return cmd_batch(args)
        build_parser().print_help(sys.stderr)
        return 2
    except AudiobookError as exc:
        if verbose:
            raise
        print(f"audiobook: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("audiobook: interrupted; finished parts are cached, run again to resume", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        return 1
    except OSError as exc:  # a disk that filled up or vanished mid-run: still one line, work already done is kept
        if verbose:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"audiobook: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
