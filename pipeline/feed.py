"""The podcast feed: the finished books and articles under an output folder as the episodes of an RSS 2.0 feed
with Apple's iTunes tags, so that folder, served by any static web server, is a private podcast a phone subscribes to.

    result = write_feed(Path("audiobooks"), Channel(base_url="https://example.org/audiobooks/"))

A book folder is one that holds a ``report.json`` (found at any depth, so a library layout of Author/Title/
folders works too). It is an episode only when its report says ``done``; its audio is what the report names:

    the M4B, when there is one                   one episode (audio/x-m4a)
    else its one chapter MP3 (an article)        one episode (audio/mpeg)
    else its chapter MP3s                        one episode a chapter, in reading order (see ``_episodes_of``)

A folder a run is still writing, one that failed or was left unverified, or whose audio is missing is skipped and
named with the reason. The feed is its own memory: the previous ``feed.xml`` is read back before it is rewritten,
so an episode keeps its GUID and publication date for ever (an episode whose book is being made again is held,
unlisted, until it is done), and the channel keeps the title, description, author, image and language it was once
given. The file is rewritten atomically, and only when its content changes (a
podcast app's conditional GET then sees nothing new).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pipeline import __version__
from pipeline.errors import UsageError
from pipeline.files import atomic_write
from pipeline.report import REPORT_NAME, read_written

log = logging.getLogger("audiobook")

FEED_NAME = "feed.xml"
COVERS_DIR = "feed-covers"  # episode art taken out of the audio files' tags, named by its content
ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
# Each item's key, a hash of the identity its GUID was first made from, so an episode whose source has moved (a
# new identity) keeps its GUID in later runs whatever else changes; RSS 2.0 takes elements in other namespaces.
KEY_NS = "urn:audiobook-pipeline:feed"
# Apple's list of enclosure types has audio/x-m4a and not audio/mp4, and some apps (Anytime Player) refuse an
# episode typed audio/mp4; an M4B is the same MPEG-4 audio file as an M4A. AntennaPod takes any audio/* type.
MIME = {".mp3": "audio/mpeg", ".m4b": "audio/x-m4a", ".m4a": "audio/x-m4a"}
IMAGE_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png"}  # the two formats Apple's itunes:image takes
DESCRIPTION_MAX = 4000  # Apple shows up to 4,000 characters of a description
DEFAULT_TITLE = "Audiobooks"
DEFAULT_DESCRIPTION = "Books and articles read aloud, made with audiobook."
# GUIDs are name-based UUIDs (RFC 4122 version 5) of a book's identity in this namespace: the same book, the same
# GUID, on any machine and in any run; nothing of the identity (a local path) can be read back from it.
_GUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "audiobook-pipeline:feed")
# XML 1.0 cannot carry these at all (lxml refuses them): control characters, surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Channel:
    """The feed as a whole. ``base_url`` is where the output folder is served (checked by ``check_base_url``);
    every other field None means: what the previous feed said, else a default."""

    base_url: str
    title: str | None = None
    description: str | None = None
    author: str | None = None
    image: str | None = None  # an http(s) URL, or a JPEG or PNG file (copied under the folder when outside it)
    language: str | None = None


@dataclass(frozen=True)
class Episode:
    guid: str
    key: str  # the hash of its identity now (see KEY_NS)
    title: str
    description: str
    author: str | None
    language: str | None
    path: str  # the audio file under the output folder, "/"-separated
    mime: str
    length: int  # bytes
    duration_s: float | None
    published: datetime
    image: str | None = None  # the cover file under the output folder, "/"-separated
    link: str | None = None  # the article's own page, when it came from one
    new: bool = True  # not in the previous feed


@dataclass(frozen=True)
class Skipped:
    folder: str  # under the output folder
    reason: str


@dataclass(frozen=True)
class FeedResult:
    path: Path
    url: str
    episodes: tuple[Episode, ...]  # newest first, as in the feed
    skipped: tuple[Skipped, ...]
    written: bool  # False: the feed already said exactly this

    @property
    def added(self) -> int:
        return sum(e.new for e in self.episodes)


def check_base_url(text: str) -> str:
    """The URL the output folder is served at, ending in "/"; UsageError (one line) unless it is an http(s) URL
    with a host and no credentials, query or fragment (a feed is read by anyone who has it: no secret in it)."""
    url = text.strip() if isinstance(text, str) else ""

    def bad(why: str) -> UsageError:
        shown = re.sub(r"//[^/@]*@", "//***@", url)  # a password is never said back
        return UsageError(
            f"the feed's base URL must be an http(s) URL such as https://example.org/audiobooks/, not {shown!r}: {why}"
        )

    if not url:
        raise bad("it is empty")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise bad("it holds a space or a control character (a space is written %20)")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not url[len(parts.scheme) + 1 :].startswith("//"):
        raise bad("it must start with http:// or https://")
    if not parts.hostname:
        raise bad("it names no host")
    if parts.username is not None or parts.password is not None:
        raise bad("it holds a user name or password, which every subscriber would read in the feed")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise bad("a folder's URL has no query or fragment")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise bad("its port is not a number from 0 to 65535") from None
    return url if url.endswith("/") else url + "/"


def url_of(base_url: str, path: str) -> str:
    """The URL of a file under the served folder: each part of its path percent-encoded (spaces, "#", "?", "&",
    CJK as UTF-8), from its name's bytes on disk, as a static server maps a URL back to a file."""
    return base_url + "/".join(quote(os.fsencode(part), safe="") for part in PurePosixPath(path).parts)


# ------------------------------------------------------------------------------------------------ the books


@dataclass(frozen=True)
class _Found:
    """An episode before the feed's memory gives it its GUID and date."""

    identity: str  # what stays the same across reruns and re-encodes: the article's URL, else the book's source
    folder: Path
    title: str
    description: str
    author: str | None
    language: str | None
    audio: Path
    path: str
    duration_s: float | None  # from the report
    finished: datetime  # when the run that finished the book ended (a first guess at its publication date)
    link: str | None
    order: int = 0  # a chapter episode's place in its book, so dates sort the chapters in reading order


def _book_folders(root: Path) -> Iterator[Path]:
    """Every folder under ``root`` (itself included) that holds a report, hidden folders and links to folders left
    out (a loop cannot run for ever), in a stable order."""
    for top, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top == str(root) and d == COVERS_DIR))
        if REPORT_NAME in names:
            yield Path(top)


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _inside(root: Path, folder: Path, name: Any) -> Path | None:
    """The file ``name`` (as a report names it) in ``folder``, or None when it is not a plain relative path there
    (a report is data: "../x" or "/etc/x" is no file of this book) or it leads out of ``root``."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return None
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    path = folder.joinpath(*rel.parts)
    try:  # nor a link to a file outside the served folder
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return path if path.is_file() else None


def _sidecar(folder: Path) -> dict[str, Any]:
    """What a library layout's ``metadata.json`` (Audiobookshelf's schema) and ``desc.txt`` say, when present."""
    data: dict[str, Any] = {}
    try:
        loaded = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    except (OSError, ValueError):
        pass
    if not _text(data.get("description")):
        with contextlib.suppress(OSError, ValueError):
            data["description"] = (folder / "desc.txt").read_text(encoding="utf-8")[: DESCRIPTION_MAX * 2]
    return data


def _when(report: dict[str, Any], audio: Path) -> datetime:
    text = report.get("finished")
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None:
        when = datetime.fromtimestamp(audio.stat().st_mtime, UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _episodes_of(root: Path, folder: Path, report: dict[str, Any]) -> list[_Found] | str:
    """A finished book's episodes, or why it has none.

    A book of several chapter MP3s and no M4B becomes one episode a chapter, in reading order, rather than
    nothing: a long article with section headings is such a book, and a feed of articles is what this is for.
    Its chapters' dates are a second apart, so every app lists them in order; ``--m4b`` makes it one episode."""
    status = report.get("status")
    if status != "done":
        return f"not finished (report status {status!r})" if isinstance(status, str) else "report holds no status"
    plan = _table(report.get("plan"))
    book = _table(plan.get("book"))
    info = _table(book.get("info"))
    side = _sidecar(folder)
    authors = side.get("authors")
    title = _text(book.get("title")) or _text(side.get("title")) or folder.name
    author = _text(book.get("author")) or next(
        (name for a in (authors if isinstance(authors, list) else []) if (name := _text(a))), None
    )
    author = author or _text(info.get("site"))
    language = _text(book.get("language")) or _text(side.get("language"))
    url = _text(info.get("url"))
    link = url if url and urlsplit(url).scheme in ("http", "https") else None
    about = _text(info.get("description")) or _text(side.get("description"))
    chapters = [c for c in report.get("chapters", []) if isinstance(c, dict)]
    rel = folder.relative_to(root).as_posix()
    identity = f"url:{link}" if link else f"source:{s}" if (s := _text(book.get("source"))) else f"folder:{rel}"

    def found(
        audio: Path, title: str, description: str, duration: float | None, order: int = 0, key: str = ""
    ) -> _Found:
        return _Found(
            identity=identity + key,
            folder=folder,
            title=title,
            description=description,
            author=author,
            language=language,
            audio=audio,
            path=audio.relative_to(root).as_posix(),
            duration_s=duration,
            finished=_when(report, audio),
            link=link,
            order=order,
        )

    durations = [c.get("duration_s") for c in chapters]
    total = sum(d for d in durations if isinstance(d, int | float)) or None
    m4b = report.get("m4b")
    if m4b is not None:
        if (audio := _inside(root, folder, m4b)) is None:
            return f"its M4B {m4b!r} is missing"
        return [found(audio, title, about or _outline(title, author, chapters), total)]
    if not chapters:
        return "its report lists no chapter"
    files = [_inside(root, folder, c.get("file")) for c in chapters]
    if None in files:
        missing = next(c.get("file") for c, f in zip(chapters, files, strict=True) if f is None)
        return f"its chapter file {missing!r} is missing"
    if len(chapters) == 1:
        audio = files[0]
        assert audio is not None
        return [found(audio, title, about or _outline(title, author, []), total)]
    episodes = []
    for n, (c, audio) in enumerate(zip(chapters, files, strict=True), 1):
        assert audio is not None
        name = _text(c.get("title")) or f"Chapter {n}"
        head = f"Chapter {n} of {len(chapters)} of {title}" + (f" by {author}" if author else "") + "."
        d = c.get("duration_s")
        duration = float(d) if isinstance(d, int | float) else None
        episodes.append(
            found(audio, f"{title} — {name}", head + (f"\n\n{about}" if about else ""), duration, n, f"#chapter-{n}")
        )
    return episodes


def _outline(title: str, author: str | None, chapters: list[dict[str, Any]]) -> str:
    """A description for a book whose source gave none: what it is, and its chapters."""
    text = title + (f" by {author}" if author else "")  # no "." after a title: "茶馆." reads wrong
    names = [t for c in chapters if (t := _text(c.get("title")))]
    if len(names) > 1:
        text += "\n\nChapters: " + "; ".join(f"{n}. {t}" for n, t in enumerate(names, 1))
    return text


def find_episodes(root: Path) -> tuple[list[_Found], list[Skipped]]:
    found: list[_Found] = []
    skipped: list[Skipped] = []
    for folder in _book_folders(root):
        where = folder.relative_to(root).as_posix()
        report = read_written(folder)
        result = _episodes_of(root, folder, report) if report is not None else "its report.json cannot be read"
        if isinstance(result, str):
            skipped.append(Skipped(where, result))
        else:
            found += result
    return found, skipped


# ------------------------------------------------------------------------------------------- the memory


@dataclass(frozen=True)
class _Held:
    """An episode the feed remembers without listing it: its book is being made again (or failed this time), so
    it is left out until it is finished, and then comes back with its GUID and date. A book whose folder is gone
    is forgotten."""

    guid: str
    key: str
    path: str  # its audio file under the folder
    published: datetime


@dataclass(frozen=True)
class _Previous:
    """What the feed written last time says: the channel, and each episode's GUID and date."""

    base: str = ""  # the URL the folder was served at
    title: str | None = None
    description: str | None = None
    author: str | None = None
    image: str | None = None  # its URL
    language: str | None = None
    dates: dict[str, datetime] = field(default_factory=dict)  # GUID -> publication date
    by_path: dict[str, str] = field(default_factory=dict)  # audio file under the folder -> GUID
    by_key: dict[str, str] = field(default_factory=dict)  # an episode's key (its identity's hash) -> GUID
    records: tuple[_Held, ...] = ()  # every episode it remembers, listed or held


def _read_previous(path: Path) -> _Previous:
    """The last feed, or an empty memory when there is none or it cannot be read (then GUIDs are derived again,
    as they always are, and dates come from the reports)."""
    from lxml import etree

    try:
        if not path.is_file() or path.stat().st_size > 256 * 1024 * 1024:
            return _Previous()
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        channel = etree.parse(str(path), parser).getroot().find("channel")
    except (OSError, etree.XMLSyntaxError):
        log.warning("%s cannot be read; its episodes' GUIDs are derived again and dates come from the reports", path)
        return _Previous()
    if channel is None:
        return _Previous()

    def text(element: Any, name: str) -> str | None:
        found = element.find(name)
        return _text(found.text) if found is not None else None

    base = text(channel, "link") or ""
    image = channel.find(f"{{{ITUNES}}}image")
    dates: dict[str, datetime] = {}
    by_path: dict[str, str] = {}
    by_key: dict[str, str] = {}
    records: list[_Held] = []

    def remember(guid: str | None, key: str | None, path: str | None, date: str | None) -> None:
        if not guid:
            return
        with contextlib.suppress(TypeError, ValueError):
            if date:
                dates[guid] = parsedate_to_datetime(date)
        if path:
            by_path[path] = guid
        if key:
            by_key[key] = guid
        if key and path and guid in dates:
            records.append(_Held(guid, key, path, dates[guid]))

    for item in channel.iter("item"):
        enclosure = item.find("enclosure")
        url = enclosure.get("url", "") if enclosure is not None else ""
        under = unquote(url[len(base) :]) if base and url.startswith(base) else None
        remember(text(item, "guid"), text(item, f"{{{KEY_NS}}}key"), under, text(item, "pubDate"))
    for held in channel.iter(f"{{{KEY_NS}}}held"):
        remember(held.get("guid"), held.get("key"), held.get("path"), held.get("date"))
    return _Previous(
        base=base,
        title=text(channel, "title"),
        description=text(channel, "description"),
        author=text(channel, f"{{{ITUNES}}}author"),
        image=_text(image.get("href")) if image is not None else None,
        language=text(channel, "language"),
        dates=dates,
        by_path=by_path,
        by_key=by_key,
        records=tuple(records),
    )


def _guid(identity: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_GUID_NAMESPACE, identity)}"


def _remembered(found: list[_Found], previous: _Previous) -> list[tuple[_Found, str, str, datetime, bool]]:
    """Each episode's key (a hash of its identity), GUID and publication date, and whether it is new.

    An episode continues the previous feed's episode of the same key (its identity unchanged, wherever its file
    now is), else the one whose audio file was where its file is (its source moved, its file did not), keeping
    that episode's GUID and date. A new episode's GUID is its key; its date is when its book was finished, but
    after every episode the feed had: apps take an episode older than what they have seen for back catalogue and
    may not fetch it (a book finished before last night's feed and fed only now)."""
    keys: list[str] = []
    for f in found:  # two books of one identity (one source converted into two folders): told apart by folder
        key = _guid(f.identity)
        keys.append(_guid(f"{f.identity}@{f.path}") if key in keys else key)
    guids: dict[int, str] = {}
    used: set[str] = set()
    for i, key in enumerate(keys):
        old = previous.by_key.get(key) or (key if key in previous.dates else None)
        if old and old not in used:
            guids[i] = old
            used.add(old)
    for i, f in enumerate(found):
        if i not in guids and (old := previous.by_path.get(f.path)) and old not in used and old not in keys:
            guids[i] = old
            used.add(old)
    for i, key in enumerate(keys):
        if i not in guids:
            guids[i] = key if key not in used else _guid(f"{key}+{found[i].path}")
            used.add(guids[i])
    floor = max(previous.dates.values(), default=None)
    out = []
    for i, f in enumerate(found):
        date = previous.dates.get(guids[i])
        first = max(f.finished, floor + timedelta(seconds=1)) if floor else f.finished
        out.append((f, keys[i], guids[i], date or first + timedelta(seconds=f.order), date is None))
    return out


# ---------------------------------------------------------------------------------------------- covers


def _image_ext(data: bytes) -> str | None:
    return next((ext for magic, ext in IMAGE_MAGIC.items() if data.startswith(magic)), None)


def _embedded_cover(audio: Path) -> bytes | None:
    """The front cover in an MP3's ID3 tags or an M4B's ``covr`` atom, if it is a JPEG or PNG."""
    import mutagen

    try:
        tagged = mutagen.File(audio)
    except (mutagen.MutagenError, OSError):
        return None
    tags = getattr(tagged, "tags", None)
    if tags is None:
        return None
    pictures: list[bytes] = []
    if hasattr(tags, "getall"):  # ID3
        frames = sorted(tags.getall("APIC"), key=lambda f: f.type != 3)  # the front cover first
        pictures = [bytes(f.data) for f in frames]
    elif "covr" in tags:  # MP4
        pictures = [bytes(c) for c in tags["covr"]]
    return next((p for p in pictures if _image_ext(p)), None)


class _Covers:
    """Episode art: the book folder's own cover file when there is one, else the picture in the audio's tags,
    written once under ``feed-covers/`` and named by its content (so a new picture is a new URL, as Apple asks)."""

    def __init__(self, root: Path):
        self.root = root
        self.used: set[str] = set()
        self._by_folder: dict[Path, str | None] = {}

    def of(self, f: _Found) -> str | None:
        for name in ("cover.jpg", "cover.png"):  # Apple takes an image URL ending in .jpg or .png only
            path = f.folder / name
            if path.is_file():
                return path.relative_to(self.root).as_posix()
        if f.folder in self._by_folder:  # a book's chapters share its cover: read it from the first only
            return self._by_folder[f.folder]
        data = _embedded_cover(f.audio)
        kept = self.keep(data) if data else None
        self._by_folder[f.folder] = kept
        return kept

    def keep(self, data: bytes) -> str | None:
        ext = _image_ext(data)
        if ext is None:
            return None
        name = f"{COVERS_DIR}/{hashlib.sha256(data).hexdigest()[:20]}{ext}"
        target = self.root / name
        if not (target.is_file() and target.stat().st_size == len(data)):
            atomic_write(target, data)
        self.used.add(name)
        return name

    def tidy(self) -> None:
        """Remove the pictures no episode or channel uses any more (only names this module writes)."""
        folder = self.root / COVERS_DIR
        if not folder.is_dir():
            return
        for p in folder.iterdir():
            name = f"{COVERS_DIR}/{p.name}"
            if re.fullmatch(r"[0-9a-f]{20}\.(jpg|png)", p.name) and name not in self.used:
                p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ the feed


def _clean(text: str | None, limit: int | None = None) -> str:
    """Text XML can carry, at most ``limit`` characters (cut at a word where it can)."""
    text = _NOT_XML.sub("", text or "").strip()
    if limit is not None and len(text) > limit:
        cut = text[: limit - 1]
        text = (cut.rsplit(" ", 1)[0] if " " in cut[-80:] else cut) + "…"
    return text


def _html(text: str) -> str:
    """Plain text as the HTML podcast apps read a description as: "<tag>" shown, not taken for markup; a blank
    line a new paragraph."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) < 2:
        return html.escape(" ".join(paragraphs), quote=False)
    return "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)


def _duration(f: _Found) -> float | None:
    """The audio's own length (its header, by mutagen: the M4B's includes the encoder's priming), else the
    report's."""
    import mutagen

    try:
        tagged = mutagen.File(f.audio)
        length = float(tagged.info.length) if tagged is not None else 0.0
    except (mutagen.MutagenError, OSError, AttributeError):
        length = 0.0
    return length if length > 0 else f.duration_s


def _channel_image(
    channel: Channel, previous: _Previous, base_url: str, root: Path, covers: _Covers, episodes: list[Episode]
) -> str | None:
    """The channel's art as a URL: the one given (a URL, or a file: used where it is under the folder, else copied
    under it), else the one the previous feed had while it is still there, else the newest episode's."""
    given = channel.image
    if given is not None:
        if not given.strip():
            return None
        if urlsplit(given).scheme in ("http", "https"):
            if not urlsplit(given).path.lower().endswith((".jpg", ".png")):
                raise UsageError(f"feed image {given}: podcast apps want the URL of a .jpg or .png file")
            return given
        path = Path(given).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"feed image {given}: cannot be read ({exc.strerror or exc})") from None
        if _image_ext(data) is None:
            raise UsageError(f"feed image {given}: not a JPEG or PNG file (podcast apps take no other)")
        try:
            inside: str | None = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            inside = None
        if inside is None or not inside.lower().endswith((".jpg", ".png")):  # else a copy, named as apps want
            inside = covers.keep(data)
        return url_of(base_url, inside or "")
    old = previous.image
    if old:
        if not (previous.base and old.startswith(previous.base)):
            return old  # somewhere else on the web
        path_under = unquote(old[len(previous.base) :])
        if (root / path_under).is_file():  # under the folder, wherever it is served now
            if path_under.startswith(f"{COVERS_DIR}/"):
                covers.used.add(path_under)
            return url_of(base_url, path_under)
    newest = next((e.image for e in episodes if e.image), None)
    return url_of(base_url, newest) if newest else None


def _key_extension() -> tuple[type, type]:
    """feedgen's extension for each item's ``<audiobook:key>`` and the channel's ``<audiobook:held>`` (KEY_NS)."""
    from feedgen.ext.base import BaseEntryExtension, BaseExtension
    from lxml import etree

    class Feed(BaseExtension):
        held: tuple[_Held, ...] = ()

        def extend_ns(self) -> dict[str, str]:
            return {"audiobook": KEY_NS}

        def extend_rss(self, rss: Any) -> Any:
            channel = rss.find("channel")
            for h in self.held:
                attributes = {"guid": h.guid, "key": h.key, "path": h.path, "date": format_datetime(h.published)}
                etree.SubElement(channel, f"{{{KEY_NS}}}held", attributes)
            return rss

    class Entry(BaseEntryExtension):
        key: str | None = None

        def extend_ns(self) -> dict[str, str]:
            return {"audiobook": KEY_NS}

        def extend_rss(self, item: Any) -> Any:
            if self.key:
                etree.SubElement(item, f"{{{KEY_NS}}}key").text = self.key
            return item

    return Feed, Entry


def build(
    channel: Channel,
    episodes: list[Episode],
    *,
    image: str | None,
    previous: _Previous,
    held: tuple[_Held, ...] = (),
) -> bytes:
    """The feed's XML (RSS 2.0 with the iTunes namespace), newest episode first. Everything in it is derived
    from the episodes, so the same books give the same bytes (lastBuildDate is the newest episode's date)."""
    from feedgen.feed import FeedGenerator

    base = check_base_url(channel.base_url)
    title = _clean(channel.title if channel.title is not None else previous.title or DEFAULT_TITLE, 255)
    about = channel.description if channel.description is not None else previous.description
    description = _clean(about or DEFAULT_DESCRIPTION, DESCRIPTION_MAX) or DEFAULT_DESCRIPTION
    author = _clean(channel.author if channel.author is not None else previous.author, 255)
    languages = Counter(e.language for e in episodes if e.language)
    language = channel.language if channel.language is not None else previous.language
    language = _clean(language if language is not None else (languages.most_common(1)[0][0] if languages else ""))

    fg = FeedGenerator()
    fg.load_extension("podcast")
    fg.register_extension("audiobook", *_key_extension(), atom=False)
    fg.audiobook.held = held
    fg.title(title or DEFAULT_TITLE)
    fg.description(_html(description))
    fg.link(href=base + FEED_NAME, rel="self", type="application/rss+xml")
    fg.link(href=base, rel="alternate")  # last: feedgen makes the last link the channel's <link>
    fg.generator(f"audiobook {__version__}")
    fg.lastBuildDate(episodes[0].published if episodes else datetime.now(UTC))
    if language:
        fg.language(language)
    fg.podcast.itunes_category("Arts", "Books")
    fg.podcast.itunes_explicit("no")
    fg.podcast.itunes_type("episodic")
    if author:
        fg.podcast.itunes_author(author)
    if image and image.lower().endswith((".jpg", ".png")):
        fg.podcast.itunes_image(image)
        fg.image(url=image, title=title or DEFAULT_TITLE, link=base)
    for e in episodes:
        fe = fg.add_entry(order="append")
        fe.guid(e.guid, permalink=False)
        fe.title(_clean(e.title, 255) or "Untitled")
        fe.description(_html(_clean(e.description, DESCRIPTION_MAX) or _clean(e.title)))
        fe.enclosure(url_of(base, e.path), str(e.length), e.mime)
        fe.pubDate(e.published)
        if e.duration_s:
            fe.podcast.itunes_duration(max(1, round(e.duration_s)))
        if e.author:
            fe.podcast.itunes_author(_clean(e.author, 255))
        if e.image:
            fe.podcast.itunes_image(url_of(base, e.image))
        if e.link:
            fe.link(href=e.link)
        fe.podcast.itunes_episode_type("full")
        fe.audiobook.key = e.key
    xml: bytes = fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return xml


def _held(previous: _Previous, episodes: list[Episode], skipped: list[Skipped]) -> tuple[_Held, ...]:
    """What the previous feed remembered of episodes whose books are skipped now (being made again, or failed):
    kept, so they come back as they were. Episodes of books that are gone are forgotten."""
    listed = {e.guid for e in episodes}
    folders = [s.folder for s in skipped]
    out: dict[str, _Held] = {}
    for h in previous.records:
        if h.guid not in listed and any(f == "." or h.path.startswith(f + "/") for f in folders):
            out.setdefault(h.guid, h)
    return tuple(sorted(out.values(), key=lambda h: h.path))


def write_feed(root: Path, channel: Channel) -> FeedResult:
    """Write ``root/feed.xml`` for every finished book under ``root`` (UsageError when ``root`` is no folder or
    the base URL or image is not usable). Pictures the episodes need are written under ``root/feed-covers/``."""
    base = check_base_url(channel.base_url)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder (give the output folder of convert or batch)")
    path = root / FEED_NAME
    previous = _read_previous(path)
    found, skipped = find_episodes(root)
    for s in skipped:
        log.warning("feed: skipped %s: %s", s.folder or ".", s.reason)
    if not found and not skipped:  # a quiet night is no error, but a wrong folder should be seen
        log.warning("feed: %s holds no book folder (no report.json): the feed has no episodes", root)
    covers = _Covers(root)
    episodes = [
        Episode(
            guid=guid,
            key=key,
            title=f.title,
            description=f.description,
            author=f.author,
            language=f.language,
            path=f.path,
            mime=MIME.get(f.audio.suffix.lower(), "audio/mpeg"),
            length=f.audio.stat().st_size,
            duration_s=_duration(f),
            published=published.astimezone(UTC),
            image=covers.of(f),
            link=f.link,
            new=new,
        )
        for f, key, guid, published, new in _remembered(found, previous)
    ]
    episodes.sort(key=lambda e: (e.published, e.path), reverse=True)
    image = _channel_image(channel, previous, base, root, covers, episodes)
    xml = build(channel, episodes, image=image, previous=previous, held=_held(previous, episodes, skipped))
    try:
        same = path.read_bytes() == xml
    except OSError:
        same = False
    if not same:
        atomic_write(path, xml)
    covers.tidy()
    return FeedResult(path, base + FEED_NAME, tuple(episodes), tuple(skipped), written=not same)
