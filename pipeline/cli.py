"""Command line: parse, load settings, run, map errors to exit codes. Data goes to stdout, logs to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import AudiobookError, Interrupted, RunFailed, Unverified, UsageError
from pipeline.tts import registry

log = logging.getLogger("audiobook")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 with usage; keep it to one clear line
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speech settings (override the config file and the environment)")
    g.add_argument("--config", type=Path, help="TOML settings file (see configs/)")
    g.add_argument(
        "--backend",
        choices=registry.names() + tuple(registry.ALIASES),
        help="openai: any OpenAI-compatible API; espeak: offline voice (local: its old name)",
    )
    g.add_argument("--base-url", help="API base URL, e.g. https://api.openai.com/v1 (env: OPENAI_BASE_URL)")
    g.add_argument("--model", help="speech model (default gpt-4o-mini-tts)")
    g.add_argument("--voice", help="voice name (default alloy)")
    g.add_argument("--instructions", help="how to speak, for models that take instructions")
    g.add_argument("--speed", type=float, help="0.25 to 4.0")
    g.add_argument("--language", help="override the book's language, e.g. en or zh")
    g.add_argument("--max-chars", type=int, help="largest segment sent in one request (default 500)")
    g.add_argument(
        "--no-pack",
        dest="pack",
        action="store_false",
        default=None,
        help="one paragraph at a time instead of packing sentences across paragraphs (more requests)",
    )
    g.add_argument("--concurrency", type=int, help="requests in flight at once (default 8)")
    g.add_argument(
        "--engine", choices=["local", "celery"], help="local: this process (default); celery: workers via --broker"
    )
    g.add_argument("--broker", help="redis://HOST:6379/0: where the celery engine's workers take their work")
    g.add_argument("--max-retries", type=int, help="retries per request (default 4)")
    g.add_argument("--timeout", type=float, help="seconds to wait for one answer (default 120)")
    g.add_argument(
        "--rate-limit-patience",
        type=float,
        metavar="SECONDS",
        help="stop when the key has answered nothing but 429s this long (default 600)",
    )
    g.add_argument(
        "--cache-dir",
        help="where finished parts are kept: a folder (default ~/.cache/audiobook-pipeline) or s3://bucket/prefix",
    )
    g.add_argument(
        "--lexicon", type=Path, metavar="FILE", help="pronunciation rules for what the voice says (see README)"
    )


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--subtitles", choices=["srt", "vtt"], help="write subtitles next to each chapter")
    g.add_argument("--m4b", action="store_true", default=None, help="also build one M4B with chapter markers")
    g.add_argument(
        "--loudness",
        choices=["ebu", "acx"],
        help="even loudness, part by part: ebu (-18 LUFS, peaks to -1 dBTP) or acx (RMS -20 dB, peaks to -3 dBFS)",
    )
    g.add_argument(
        "--verify",
        choices=["timing", "off", "transcribe"],
        help="check each part says its text: timing (default, free), transcribe (timing + a transcript), or off",
    )
    g.add_argument(
        "--verify-retries",
        type=int,
        metavar="N",
        help="fresh requests for a part verification finds suspect, before it is reported (default 2)",
    )
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
        p.add_argument(
            "book", type=Path, help="a .txt, .md, .html, .epub, .pdf, .docx, .fb2 (.fb2.zip), .mobi or .azw3 file"
        )
        p.add_argument("-o", "--output", type=Path, help="output folder (default: ./<book file name>)")
        if name == "convert":
            p.add_argument("--dry-run", action="store_true", help="read and chunk only; send nothing")
        p.add_argument("--json", action="store_true", help="print the plan or the report as JSON")
        _add_settings_flags(p)
        _add_output_flags(p)

    p = sub.add_parser(
        "voices",
        help="list the voices of a backend (the offline voice's by default)",
        description="List the voice names a backend accepts (--voice): the offline voice's by default.",
        parents=[common],
    )
    p.add_argument(
        "--backend",
        choices=registry.names() + tuple(registry.ALIASES),
        default="espeak",
        help="whose voices (default: espeak, the offline voice)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "serve",
        help="serve the offline voice as an OpenAI-compatible speech API",
        description="Serve the offline voice as POST /v1/audio/speech and GET /v1/models, on this machine only "
        "unless --host says otherwise (a key from $AUDIOBOOK_SERVER_KEY or --api-key-file is then required).",
        parents=[common],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help="require the bearer key on this file's first line (default: $AUDIOBOOK_SERVER_KEY, else no key); "
        "16 characters or more",
    )
    p.add_argument(
        "--allow-no-key",
        action="store_true",
        help="serve beyond this machine (a --host other than loopback) without a key: anyone who can reach it "
        "may use it",
    )
    # Only to refuse it in words: argv is visible to every user (ps), and argparse's own "unrecognized
    # arguments" error would print the key back.
    p.add_argument("--api-key", help=argparse.SUPPRESS)

    p = sub.add_parser(
        "worker",
        help="take work from a batch run on another machine (the celery engine)",
        description="A worker of the celery engine: takes part requests, chapters and books from --broker and does "
        "them here, with this machine's keys (from its environment) and settings. Stop it with Ctrl-C.",
        parents=[common],
    )
    p.add_argument("--broker", help="redis://HOST:6379/0 (env: AUDIOBOOK_BROKER)")
    p.add_argument("--concurrency", type=int, help="tasks at once in this worker (default 8)")
    p.add_argument("--config", type=Path, help="settings file (see configs/)")

    p = sub.add_parser(
        "batch",
        help="convert every book a job file (or a folder) lists, incrementally",
        description="Convert every book a job file (TOML) lists, or every book in a folder, through one shared "
        "pool: unchanged books are settled without a request, a book that fails does not stop the others, work "
        "past --max-cost is refused by name, and a JSON summary is written. One run at a time per job (exit 75 "
        "otherwise).",
        parents=[common],
    )
    p.add_argument("jobs", type=Path, help="job file (TOML, see configs/batch.example.toml) or a folder of books")
    p.add_argument("-o", "--output", type=Path, help="with a folder of books: where their audio goes (./audiobooks)")
    p.add_argument("--config", type=Path, help="with a folder of books: the settings file (see configs/)")
    p.add_argument("--recursive", action="store_true", help="with a folder of books: the books in its subfolders too")
    p.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight at once for the whole batch (with --engine celery: across every worker); "
        "default: the job file's, else 8",
    )
    p.add_argument("--engine", choices=["local", "celery"], help="local: this process (default); celery: workers")
    p.add_argument("--broker", help="redis://HOST:6379/0: where the celery engine's workers take their work")
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
        "pack",
        "concurrency",
        "engine",
        "broker",
        "max_retries",
        "timeout",
        "rate_limit_patience",
        "cache_dir",
        "lexicon",
        "subtitles",
        "loudness",
        "verify",
        "verify_retries",
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
    from pipeline import app
    from pipeline.config import load_settings
    from pipeline.report import REPORT_NAME, BookStatus, format_plan, format_report

    settings = load_settings(args.config, overrides=_flag_overrides(args))
    book = app.read(args.book, settings.book)
    out_dir = args.output or Path(args.book.stem)
    plan = app.plan(book, settings, out_dir)
    if dry_run:
        summary = plan.summary()
        print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else format_plan(summary))
        return 0
    result = app.convert([plan], settings.run, progress=_progress(args))
    if result.interrupted:
        raise Interrupted(f"interrupted by {result.interrupted}; finished parts are cached, run again to resume")
    (report,) = result.reports
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    elif not args.quiet:  # -q: only warnings and errors; the files are in the folder and the report
        print(format_report(report, out_dir))
    problem = report.problem()
    if problem and report.status == BookStatus.UNVERIFIED and report.verification is not None:
        count = report.verification.suspect
        raise Unverified(
            f"{book.title}: {count} part{'' if count == 1 else 's'} unverified, first {problem.split(': ', 1)[0]} "
            f"(named in {out_dir / REPORT_NAME})"
        )
    if problem:
        advice = "run the same command again" if report.rerun_helps else "they are kept for when that is fixed"
        raise RunFailed(f"{book.title}: {problem}; finished parts are cached, {advice}")
    return 0


def _progress(args: argparse.Namespace) -> Any:
    from pipeline.progress import Progress

    return Progress(enabled=not args.quiet)


def cmd_voices(args: argparse.Namespace) -> int:
    from pipeline.tts import registry

    voices = registry.get(args.backend).voices()
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in voices], ensure_ascii=False, indent=2))
    else:
        for v in voices:
            print(f"{v.name:<12} {v.language:<8} {v.description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.server import KEY_ENV, read_api_key, serve

    if args.api_key is not None:
        raise UsageError(
            f"--api-key is not accepted: every user of this machine can read a command line (ps); "
            f"put the key in ${KEY_ENV} or in a file given with --api-key-file"
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")
    serve(
        args.host,
        args.port,
        read_api_key(args.api_key_file, os.environ),
        allow_no_key=args.allow_no_key,
        ready=lambda url: print(f"serving OpenAI-compatible speech at {url}", flush=True),
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.config import load_settings

    try:
        from pipeline.engines.celery import run_worker
    except ImportError:
        raise UsageError("the celery engine is not installed: pip install 'audiobook-pipeline[distributed]'") from None
    overrides = {"broker": args.broker, "concurrency": args.concurrency}
    run_worker(load_settings(args.config, overrides=overrides).run, verbose=args.verbose)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from pipeline import app
    from pipeline.batch import folder_job, format_failures, format_summary, load_jobs
    from pipeline.report import format_plan

    if args.jobs.is_dir():
        job = folder_job(args.jobs, args.output or Path("audiobooks"), args.config, recursive=args.recursive)
    elif args.output or args.config or args.recursive:
        raise UsageError(
            "--output, --config and --recursive go with a folder of books; a job file sets output, settings "
            "and its books' paths (a glob such as library/**/*.epub reaches into subfolders)"
        )
    else:
        job = load_jobs(args.jobs)
    given = (("concurrency", args.concurrency), ("engine", args.engine), ("broker", args.broker))
    flags = {k: v for k, v in given if v is not None}
    job = dataclasses.replace(job, run={**job.run, **flags})  # the command line wins over the job file
    result = app.run_batch(
        job, dry_run=args.dry_run, max_cost=args.max_cost, summary_path=args.summary, progress=_progress(args)
    )
    books = list(result.books)
    if args.json:
        print(json.dumps([dataclasses.asdict(b) for b in books], ensure_ascii=False, indent=2))
    else:
        if args.dry_run:
            for plan in result.planned:
                print(format_plan(plan.summary()) + "\n")
        print(format_summary(books, result.summary_path, dry_run=args.dry_run))
    if result.interrupted:
        raise Interrupted(f"batch interrupted by {result.interrupted}; finished parts are cached, run again to resume")
    failures = format_failures(books)
    if failures:
        print(f"audiobook: error: {failures}", file=sys.stderr)
        # Every book written, some with unverified parts: the exit code of an unverified run (3), not a failure.
        return Unverified.exit_code if all(b.status in _WRITTEN for b in books) else 1
    return 0


_WRITTEN = ("done", "unchanged", "unverified", "no match")


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
        if args.command == "worker":
            return cmd_worker(args)
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
