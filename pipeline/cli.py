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
from pipeline.selection import parse_length
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


def _add_library_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what players and libraries see (override the book's own metadata)")
    g.add_argument(
        "--format",
        choices=["mp3", "m4b", "both"],
        help="mp3: chapter files (default); m4b: one M4B; both: the M4B and the chapter MP3s in MP3/, which "
        "Audiobookshelf skips (--m4b is the same as --format both)",
    )
    g.add_argument("--title", help="the book's title")
    g.add_argument("--author", help="the book's author")
    g.add_argument("--narrator", help="who reads it (default: the voice and model)")
    g.add_argument("--series", help="the series the book belongs to")
    g.add_argument("--series-index", metavar="N", help="its number in the series (1, 2.5)")
    g.add_argument("--description", help="a description players show")
    g.add_argument("--subjects", metavar="A;B", help="genres, separated by ';' (default: the book's subjects)")
    g.add_argument("--publisher", help="the publisher")
    g.add_argument("--date", help="the publication date (2024 or 2024-05-01)")
    g.add_argument("--isbn", help="the ISBN")
    g.add_argument("--asin", help="the Audible ASIN")
    g.add_argument("--cover", type=Path, metavar="IMAGE", help="cover image (default: the book's, else made)")


def _add_url_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        default=None,
        help="let a URL lead to this machine or the local network (env: AUDIOBOOK_ALLOW_PRIVATE_URLS=1)",
    )


def _add_listen_flags(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("listen before you pay")
    g.add_argument(
        "--chapters",
        metavar="LIST",
        help="only these chapters, by the numbers the plan shows: 1-3,7,12- (12- is 12 to the end)",
    )
    g.add_argument(
        "--preview",
        nargs="?",
        const="",
        metavar="LENGTH",
        help="make only about the first minute (or LENGTH: 90s, 2m) of the first real chapter, as preview.mp3; "
        "the full run reuses its parts" + (" (with plan: what it would cost)" if command == "plan" else ""),
    )


def _add_sample_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("samples (--sample): one short MP3 per voice, the same passage, cached like any part")
    g.add_argument("--sample", action="store_true", help="make a sample of each voice instead of listing them")
    g.add_argument("--voices", metavar="A,B,C", help="the voices to sample (default: the backend's, for the text)")
    words = g.add_mutually_exclusive_group()
    words.add_argument("--text", help="what the voices say (default: a passage of ours, or from --book)")
    words.add_argument("--book", type=Path, metavar="FILE", help="say the start of this book's first real chapter")
    g.add_argument("-o", "--output", type=Path, help="where the samples go (default: ./voice-samples)")
    g.add_argument("--config", type=Path, help="TOML settings file (see configs/)")
    g.add_argument("--model", help="speech model")
    g.add_argument("--speed", type=float, help="0.25 to 4.0")
    g.add_argument("--instructions", help="how to speak, for models that take instructions")
    g.add_argument("--language", help="the language of the text, e.g. en or zh")
    g.add_argument("--cache-dir", help="where finished parts are kept")


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
            "book",
            help="a .txt, .md, .html, .epub, .pdf, .docx, .fb2 (.fb2.zip), .mobi or .azw3 file, "
            "or the http(s) URL of an article or a book",
        )
        p.add_argument("-o", "--output", type=Path, help="output folder (default: ./<book file name>)")
        _add_url_flags(p)
        if name == "convert":
            p.add_argument("--dry-run", action="store_true", help="read and chunk only; send nothing")
        p.add_argument("--json", action="store_true", help="print the plan or the report as JSON")
        _add_settings_flags(p)
        _add_output_flags(p)
        _add_library_flags(p)
        p.add_argument(
            "--library",
            type=Path,
            metavar="DIR",
            help="place the finished book at DIR/Author/[Series/]Title/ (made in DIR/.audiobook-work/)",
        )
        p.add_argument(
            "--abs-url", metavar="URL", help="then ask this Audiobookshelf to scan (token: $AUDIOBOOKSHELF_TOKEN)"
        )

    for name in ("convert", "plan"):
        _add_listen_flags(sub.choices[name], name)

    p = sub.add_parser(
        "voices",
        help="list the voices of a backend (the offline voice's by default)",
        description="List the voice names a backend accepts (--voice): the offline voice's by default.",
        parents=[common],
    )
    p.add_argument(
        "--backend",
        choices=registry.names() + tuple(registry.ALIASES),
        help="whose voices (default: espeak, the offline voice; with --sample: the configured backend)",
    )
    p.add_argument("--json", action="store_true")
    _add_sample_flags(p)

    p = sub.add_parser(
        "serve",
        help="serve the offline voice as an OpenAI-compatible speech API",
        description="Serve the offline voice as POST /v1/audio/speech and GET /v1/models, on this machine only "
        "unless --host says otherwise (a key from $AUDIOBOOK_SERVER_KEY or --api-key-file is then required).",
        parents=[common],
    )
    _add_bind_flags(p, port=8000)
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
    p.add_argument(
        "jobs",
        type=Path,
        help="job file (TOML, see configs/batch.example.toml), a folder of books, or a text file of URLs (one a line)",
    )
    _add_url_flags(p)
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
    p.add_argument("--library", type=Path, metavar="DIR", help="place finished books at DIR/Author/[Series/]Title/")
    p.add_argument(
        "--abs-url", metavar="URL", help="then ask this Audiobookshelf to scan (token: $AUDIOBOOKSHELF_TOKEN)"
    )
    p.add_argument(
        "--summary", type=Path, help="where to write the JSON summary (default: <output>/batch-summary.json)"
    )
    p.add_argument(
        "--feed-base-url",
        metavar="URL",
        help="at the end, write <output>/feed.xml, a podcast feed of every finished book, for the output folder "
        "served at URL (see: audiobook feed --help)",
    )

    p = sub.add_parser(
        "feed",
        help="write a podcast feed (RSS with iTunes tags) of the finished books in an output folder",
        description="Write OUTPUT_DIR/feed.xml: every finished book or article under OUTPUT_DIR as a podcast "
        "episode (its M4B, else its MP3; a book of several chapter MP3s, one episode a chapter), for the folder "
        "served by any web server at --base-url. Episodes keep their GUIDs and dates across runs; channel "
        "settings not given are kept from the previous feed.",
        parents=[common],
    )
    p.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR", help="the output folder of convert or batch")
    p.add_argument("--base-url", required=True, metavar="URL", help="where OUTPUT_DIR is served, http(s)://...")
    p.add_argument("--title", help="the podcast's title (default: Audiobooks)")
    p.add_argument("--description", help="the podcast's description")
    p.add_argument("--author", help="the podcast's author")
    p.add_argument("--image", metavar="FILE|URL", help="the podcast's art: a JPEG or PNG file, or its URL")
    p.add_argument("--language", help="the podcast's language, e.g. en (default: its episodes' most common)")
    p.add_argument("--json", action="store_true", help="print the episodes as JSON")
    _add_web_parser(sub, common)
    return parser


def _add_bind_flags(p: argparse.ArgumentParser, port: int) -> None:
    """Where `serve` and `web` listen: this machine only unless --host says otherwise."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=port)


def _check_bind(args: argparse.Namespace, flag: str, given: str | None, what: str, env: str, file_flag: str) -> None:
    """The checks `serve` and `web` share: no secret on the command line (every user can read it with ps; argparse
    would print it back), a port that exists."""
    if given is not None:
        raise UsageError(
            f"{flag} is not accepted: every user of this machine can read a command line (ps); "
            f"put the {what} in ${env} or in a file given with {file_flag}"
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")


def _add_web_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "web",
        help="a web page to convert books: upload, plan and cost, live progress, listen, download",
        description="Serve a page to convert books (pip install 'audiobook-pipeline[web]'), on this machine only "
        "unless --host says otherwise (a token from $AUDIOBOOK_WEB_TOKEN or --token-file is then required).",
        parents=[common],
    )
    _add_bind_flags(p, port=8080)
    p.add_argument(
        "--data",
        type=Path,
        help="where jobs, uploads and the books made are kept (default: ~/.local/share/audiobook-pipeline/web)",
    )
    p.add_argument("--config", type=Path, help="the settings every job starts from (see configs/)")
    p.add_argument("--token-file", type=Path, metavar="PATH", help="the sign-in token on this file's first line")
    p.add_argument("--max-upload-mb", type=int, default=50, help="largest book file taken (default 50)")
    p.add_argument("--token", help=argparse.SUPPRESS)  # only to refuse it: a command line is visible to all (ps)


def cmd_web(args: argparse.Namespace) -> int:
    import importlib.util

    missing = UsageError("the web page is not installed: pip install 'audiobook-pipeline[web]'")
    try:
        from pipeline.web import WebSettings, serve
        from pipeline.web.security import TOKEN_ENV, read_token
    except ModuleNotFoundError as exc:  # Starlette, uvicorn and Jinja2 come with the web extra
        if (exc.name or "").split(".")[0] not in {"starlette", "uvicorn", "jinja2"}:
            raise
        raise missing from None
    if not any(importlib.util.find_spec(name) for name in ("python_multipart", "multipart")):
        raise missing  # Starlette would only say so at the first upload
    _check_bind(args, "--token", args.token, "token", TOKEN_ENV, "--token-file")
    if args.max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb must be 1 or more, not {args.max_upload_mb}")
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    settings = WebSettings(
        data=args.data or Path(base) / "audiobook-pipeline" / "web",
        config=args.config,
        host=args.host,
        token=read_token(args.token_file, os.environ),
        max_upload=args.max_upload_mb * 1024 * 1024,
    )
    serve(settings, args.port, ready=lambda url: print(f"the page is at {url}", flush=True))
    return 0


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
        *("format", "title", "author", "narrator", "series", "series_index", "description", "subjects"),
        *("publisher", "date", "isbn", "asin", "cover"),
        "chapters",
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

    overrides = _flag_overrides(args)
    if args.preview:
        overrides["preview_seconds"] = parse_length(args.preview)
    settings = load_settings(args.config, overrides=overrides)
    from pipeline.fetch import folder_name, is_url

    # A URL's book is fetched into its output folder and kept there: a rerun reads the copy.
    out_dir = args.output or Path(folder_name(args.book) if is_url(args.book) else Path(args.book).stem)
    if getattr(args, "library", None) is not None and args.output is None:
        from pipeline.library import work_folder

        out_dir = work_folder(args.library, out_dir.name)  # made in the library's hidden work folder
    book = app.read(args.book, settings.book, download_to=out_dir, allow_private=args.allow_private_urls)
    if args.preview is not None:
        return cmd_preview(args, settings, book, out_dir, dry_run)
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
    if args.library is not None and report.status == BookStatus.DONE:
        from pipeline.library import place

        placed = place(out_dir, args.library, args.abs_url)
        if not args.quiet and not args.json:
            print(f"in the library: {placed}")
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


def cmd_preview(args: argparse.Namespace, settings: Any, book: Any, out_dir: Path, dry_run: bool) -> int:
    """``--preview``: say what it costs, make it (unless a dry run), say what it cost and what is left."""
    from pipeline import app
    from pipeline.selection import PREVIEW_NAME

    cut = app.preview_plan(book, settings, out_dir)
    (cp,) = cut.chapters
    summary = {**cut.summary(), "preview": {"chapter": cp.chapter.index, "file": PREVIEW_NAME}}
    said = (
        f'Preview: chapter {cp.chapter.index} "{cp.chapter.title}", its first {len(cp.segments)} segment(s), '
        f"{cp.characters:,} characters, about {_seconds(sum(_estimate(s.voice_text, cut) for s in cp.segments))}: "
        f"{len(cut.needed)} requests, {_usd(cut.estimated_cost, cut)}"
    )
    if dry_run:
        print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else said)
        return 0
    if not args.quiet:
        print(said, file=sys.stderr)  # what it will cost, before it is paid for
    results, interrupted = app.make_clips([(cut, out_dir / PREVIEW_NAME)], settings.run, progress=_progress(args))
    if interrupted:
        raise Interrupted(f"interrupted by {interrupted}; finished parts are cached, run again to resume")
    (done,) = results
    if done.clip is None:
        raise RunFailed(f"{book.title}: preview not made: {done.problem}; finished parts are cached")
    rest = app.plan(book, settings, out_dir)  # planned again: the preview's parts are now cached
    r = done.report
    if args.json:
        print(json.dumps({**summary, "made": str(done.clip.path), "duration_s": done.clip.duration_s,
                          "requests": r.requests, "characters_sent": r.characters_sent,
                          "cost_usd": r.estimated_cost_usd, "cache_hits": r.cache_hits,
                          "rest": {"requests": len(rest.needed), "cost_usd": round(rest.estimated_cost, 4)}},
                         ensure_ascii=False, indent=2))  # fmt: skip
    elif not args.quiet:
        print(f"{done.clip.path}  {_seconds(done.clip.duration_s)}")
        print(
            f"cost: {r.requests} requests, {r.characters_sent:,} characters sent, {_usd(r.estimated_cost_usd, cut)} "
            f"({r.cache_hits} parts cached); the rest"
            f"{' of the selection' if rest.selection is not None else ' of the book'}: {len(rest.needed)} requests, "
            f"{_usd(rest.estimated_cost, rest)} more (the preview's parts are reused)"
        )
    return 0


def _usd(amount: float, plan: Any) -> str:
    """An estimated cost as the preview and the samples print it; an offline voice's is free, not "$0.0000"."""
    return "free (offline voice)" if plan.cost(1_000_000) == 0 else f"estimated ${amount:.4f}"


def _estimate(text: str, plan: Any) -> float:
    from pipeline.listen import seconds_of

    return seconds_of(text, plan.options.voice_spec.speed)


def _seconds(seconds: float) -> str:
    from pipeline.report import clock

    return f"{seconds:.0f} s" if seconds < 60 else clock(seconds)


def cmd_samples(args: argparse.Namespace) -> int:
    """``voices --sample``: the cost of each sample first, then the samples."""
    from pipeline import app
    from pipeline.config import load_settings
    from pipeline.listen import sample_name

    names = ("backend", "model", "speed", "instructions", "language", "cache_dir")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    settings = load_settings(args.config, overrides=given)
    book = app.read(args.book, settings.book) if args.book is not None else None
    out_dir = args.output or Path("voice-samples")
    voices = args.voices.split(",") if args.voices is not None else None
    plans = app.sample_plans(settings, voices, out_dir, text=args.text, book=book)
    words = plans[0].chapters[0].segments[0].voice_text if plans[0].chapters[0].segments else ""
    width = max(len(p.options.voice) for p in plans)
    lines = [f'Samples of {len(words)} characters ("{" ".join(words.split()[:8])} …") into {out_dir}/:']
    for p in plans:
        cost = "cached, free" if not p.needed else f"{p.characters_to_send:,} characters, {_usd(p.estimated_cost, p)}"
        lines.append(f"  {p.options.voice:<{width}}  {cost}")
    to_send = sum(len(p.needed) for p in plans)
    lines.append(f"  total: {to_send} requests, {_usd(sum(p.estimated_cost for p in plans), plans[0])}")
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout, flush=True)
    clips = [(p, out_dir / sample_name(p.options.voice)) for p in plans]
    results, interrupted = app.make_clips(clips, settings.run, progress=_progress(args))
    if interrupted:
        raise Interrupted(f"interrupted by {interrupted}; finished parts are cached, run again to resume")
    if args.json:
        print(json.dumps([{"voice": r.plan.options.voice, "file": str(r.clip.path) if r.clip else None,
                           "duration_s": r.clip.duration_s if r.clip else None, "requests": r.report.requests,
                           "cost_usd": r.report.estimated_cost_usd, "error": r.problem} for r in results],
                         ensure_ascii=False, indent=2))  # fmt: skip
    else:
        for r in results:
            print(f"{r.clip.path}  {_seconds(r.clip.duration_s)}" if r.clip else f"{r.plan.options.voice}: {r.problem}")
        spent = sum(r.plan.cost(r.report.characters_sent) for r in results)
        made = sum(r.report.requests for r in results)
        print(f"{len(results)} samples — {made} requests, {_usd(spent, plans[0])}")
    failed = [r for r in results if r.clip is None]
    if failed:
        raise RunFailed(f"{len(failed)} sample(s) not made, first {failed[0].plan.options.voice}: {failed[0].problem}")
    return 0


def _progress(args: argparse.Namespace) -> Any:
    from pipeline.progress import Progress

    return Progress(enabled=not args.quiet)


def cmd_voices(args: argparse.Namespace) -> int:
    from pipeline.tts import registry

    if args.sample:
        return cmd_samples(args)
    voices = registry.get(args.backend or "espeak").voices()
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in voices], ensure_ascii=False, indent=2))
    else:
        for v in voices:
            print(f"{v.name:<12} {v.language:<8} {v.description}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from pipeline.server import KEY_ENV, read_api_key, serve
    except ModuleNotFoundError as exc:  # Starlette and uvicorn come with the web extra
        if exc.name not in {"starlette", "uvicorn", "httptools"}:
            raise
        raise UsageError("the speech server is not installed: pip install 'audiobook-pipeline[web]'") from None

    _check_bind(args, "--api-key", args.api_key, "key", KEY_ENV, "--api-key-file")
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
    from pipeline.batch import folder_job, format_failures, format_summary, is_url_list, load_jobs, url_list_job
    from pipeline.report import format_plan

    if args.jobs.is_dir():
        job = folder_job(args.jobs, args.output or Path("audiobooks"), args.config, recursive=args.recursive)
    elif is_url_list(args.jobs):  # a plain list of URLs: each article or book in a folder of its own
        job = url_list_job(args.jobs, args.output or Path("audiobooks"), args.config)
    elif args.output or args.config or args.recursive:
        raise UsageError(
            "--output, --config and --recursive go with a folder of books (--output and --config with a list of "
            "URLs too); a job file sets output, settings and its books' paths (a glob such as library/**/*.epub "
            "reaches into subfolders)"
        )
    else:
        job = load_jobs(args.jobs)
    given = (("concurrency", args.concurrency), ("engine", args.engine), ("broker", args.broker))
    flags = {k: v for k, v in given if v is not None}
    job = dataclasses.replace(job, run={**job.run, **flags})  # the command line wins over the job file
    if args.library is not None or args.abs_url is not None:
        job = dataclasses.replace(job, library=args.library or job.library, abs_url=args.abs_url or job.abs_url)
    if args.feed_base_url is not None:
        from pipeline.feed import check_base_url

        job = dataclasses.replace(job, feed_base_url=check_base_url(args.feed_base_url))
    result = app.run_batch(
        job,
        dry_run=args.dry_run,
        max_cost=args.max_cost,
        summary_path=args.summary,
        progress=_progress(args),
        allow_private_urls=args.allow_private_urls,
    )
    books = list(result.books)
    if args.json:
        print(json.dumps([dataclasses.asdict(b) for b in books], ensure_ascii=False, indent=2))
    else:
        if args.dry_run:
            for plan in result.planned:
                print(format_plan(plan.summary()) + "\n")
        print(format_summary(books, result.summary_path, dry_run=args.dry_run))
        if result.feed is not None:
            print(_feed_line(result.feed))
    if result.interrupted:
        raise Interrupted(f"batch interrupted by {result.interrupted}; finished parts are cached, run again to resume")
    if result.feed_error:
        print(f"audiobook: error: feed not written: {result.feed_error}", file=sys.stderr)
    failures = format_failures(books)
    if failures:
        print(f"audiobook: error: {failures}", file=sys.stderr)
        # Every book written, some with unverified parts: the exit code of an unverified run (3), not a failure.
        return Unverified.exit_code if all(b.status in _WRITTEN for b in books) else 1
    return 1 if result.feed_error else 0


_WRITTEN = ("done", "unchanged", "unverified", "no match")


def cmd_feed(args: argparse.Namespace) -> int:
    from pipeline.feed import Channel, write_feed

    fields = ("title", "description", "author", "image", "language")
    result = write_feed(args.output_dir, Channel(args.base_url, **{k: getattr(args, k) for k in fields}))
    if args.json:
        episodes = [{**dataclasses.asdict(e), "published": e.published.isoformat()} for e in result.episodes]
        print(json.dumps({"feed": result.url, "episodes": episodes}, ensure_ascii=False, indent=2))
    elif not args.quiet:
        print(_feed_line(result))
    return 0


def _feed_line(result: Any) -> str:
    n, skipped = len(result.episodes), len(result.skipped)
    return (
        f"{result.path}: {n} episode{'' if n == 1 else 's'} ({result.added} new)"
        + (f", {skipped} folder{'' if skipped == 1 else 's'} skipped" if skipped else "")
        + ("" if result.written else ", unchanged")
        + f"; subscribe to {result.url}"
    )


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
        if args.command == "feed":
            return cmd_feed(args)
        if args.command == "web":
            return cmd_web(args)
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
