"""A book or an article given as a URL: fetched once, kept beside the output, read like a file.

The fetch is careful because a URL comes from anywhere (a job file, a list a script wrote): only http and https;
no address on this machine or the local network (loopback, private, link-local, unspecified: the host's
resolved addresses are checked, at every redirect) unless allowed; a bounded number of redirects (a loop is
named); connect and read timeouts; a size cap enforced while streaming (a 2 GB answer is never read, whatever
its Content-Length says); a user agent that says what we are. The type comes from the Content-Type and the
first bytes (HTML, EPUB, PDF, plain text, Markdown); anything else is refused in one line.

The copy is written into the output folder (``source.html``, ``source.epub`` ...) with a note of the URL it
came from (``.source.json``), so a rerun reads the copy and makes no request: the parts cache stays valid and a
nightly batch does not fetch a page twice. Delete the copy to fetch the page again.

The resolved addresses are checked before the request, and httpx resolves the name again to connect: a DNS
server that answers differently the second time could still lead elsewhere. The check is against mistakes and
crafted links, not against a hostile resolver.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.files import atomic_write

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"audiobook-pipeline/{__version__} (text to speech; fetches one page per book)"
MAX_BYTES = 100 * 2**20  # an EPUB with pictures fits; a video does not
MAX_REDIRECTS = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
ALLOW_PRIVATE_ENV = "AUDIOBOOK_ALLOW_PRIVATE_URLS"
NOTE = ".source.json"  # beside the copy: the URL it came from

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SUFFIXES = {"html": ".html", "epub": ".epub", "pdf": ".pdf", "text": ".txt", "markdown": ".md"}
_TYPES = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/epub+zip": "epub",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
}
_UNKNOWN = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/download"})

Resolver = Callable[[str, int], Sequence[str]]


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether a book argument is a URL (any scheme: file:// and ftp:// are refused by name, not read as paths)."""
    return isinstance(text, str) and _SCHEME.match(text.strip()) is not None


def private_urls_allowed(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(ALLOW_PRIVATE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Fetched:
    path: Path  # the copy in the output folder
    url: str  # as given
    final_url: str  # after redirects
    kind: str  # html, epub, pdf, text, markdown
    requested: bool  # False: the copy from an earlier run was read


def folder_name(url: str) -> str:
    """A folder name for a URL's book: its last path segment without suffix ("essay-on-rivers"), else its
    host ("example.org"); safe on every file system."""
    parts = urlsplit(url.strip())
    segments = [s for s in unquote(parts.path).split("/") if s]
    name = segments[-1] if segments else ""
    if name.lower() in ("index.html", "index.htm", "index.php", "index"):
        name = segments[-2] if len(segments) > 1 else ""
    name = re.sub(r"\.(html?|php|aspx?|jsp|shtml|epub|pdf|txt|md)$", "", name, flags=re.IGNORECASE)
    if not any(c.isalnum() for c in name):
        name = parts.hostname or "article"
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "-" for c in unicodedata.normalize("NFC", name))
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip(" .-")[:80]
    return cleaned or "article"


def _refuse(url: str, why: str) -> InputError:
    return InputError(f"{url}: {why}")


def _default_resolver(host: str, port: int) -> Sequence[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _check_address(url: str, resolve: Resolver, allow_private: bool) -> None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(url, f"only http:// and https:// addresses are fetched, not {scheme}://")
    host = parts.hostname
    if not host:
        raise _refuse(url, "names no host")
    if allow_private:
        return
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise _refuse(url, "its port is not a number from 0 to 65535") from None
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise _refuse(url, f"the host {host} cannot be found ({exc})") from None
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            what = f"{host} is {address}," if host.strip("[]") != str(address) else f"{address} is"
            raise _refuse(
                url,
                f"{what} an address on this machine or a local network; such addresses are not fetched unless "
                f"allowed (--allow-private-urls or {ALLOW_PRIVATE_ENV}=1)",
            )


def _kind(url: str, content_type: str, head: bytes) -> str:
    """The book's format from the first bytes, then the Content-Type; InputError for anything else."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if start.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if b"application/epub+zip" in head[:200] or content_type == "application/epub+zip":
            return "epub"
        raise _refuse(url, f"is a zip archive ({content_type or 'no Content-Type'}), not an EPUB")
    declared = _TYPES.get(content_type)
    lowered = start[:1024].lower()
    looks_html = lowered.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in lowered
    if declared in ("html", "text", "markdown"):
        return "html" if looks_html and declared != "markdown" else declared
    if declared is not None:  # epub or pdf said, other bytes found
        raise _refuse(url, f"is said to be {content_type}, but its content is not")
    if content_type in _UNKNOWN:
        if looks_html:
            return "html"
        if b"\x00" not in head:
            try:
                head.decode("utf-8")
                return "text"
            except UnicodeDecodeError:
                pass
    raise _refuse(url, f"is {content_type or 'of no stated type'}: not a web page, an EPUB, a PDF or text")


def _saved(out_dir: Path, url: str) -> Fetched | None:
    """The copy an earlier run fetched from ``url`` into ``out_dir``, if it is there."""
    try:
        note = json.loads((out_dir / NOTE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(note, dict) or note.get("url") != url or note.get("kind") not in _SUFFIXES:
        return None
    path = out_dir / f"source{_SUFFIXES[note['kind']]}"
    if not path.is_file():
        return None
    return Fetched(path, url, str(note.get("final_url") or url), note["kind"], requested=False)


def fetch(
    url: str,
    out_dir: Path,
    *,
    allow_private: bool = False,
    max_bytes: int = MAX_BYTES,
    transport: httpx.BaseTransport | None = None,
    resolve: Resolver = _default_resolver,
) -> Fetched:
    """The book at ``url``, as a file in ``out_dir``: the copy an earlier run kept, else fetched now.
    InputError (one line naming the URL) for what cannot be fetched or is no book."""
    url = url.strip()
    saved = _saved(out_dir, url)
    if saved is not None:
        return saved
    import httpx  # only when a page is fetched: job files and the CLI name URLs without it

    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,application/epub+zip,"
               "application/pdf,text/plain;q=0.9,*/*;q=0.5"}  # fmt: skip
    seen: list[str] = []
    current = url
    with httpx.Client(timeout=timeout, headers=headers, transport=transport, follow_redirects=False) as client:
        while True:
            _check_address(current, resolve, allow_private)
            if current in seen:
                raise _refuse(url, f"redirects in a loop ({' -> '.join([*seen[seen.index(current) :], current])})")
            seen.append(current)
            if len(seen) > MAX_REDIRECTS + 1:
                raise _refuse(url, f"redirects more than {MAX_REDIRECTS} times; give the final address")
            try:
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise _refuse(url, f"answered {response.status_code} without saying where to go")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        reason = response.reason_phrase or "error"
                        raise _refuse(url, f"the server answered {response.status_code} {reason}")
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    body = _read_capped(url, response, max_bytes)
                    break
            except httpx.TimeoutException:
                raise _refuse(url, "the server took too long to answer; try again later") from None
            except httpx.HTTPError as exc:
                raise _refuse(url, f"cannot be fetched ({type(exc).__name__}: {exc})") from None
    if not body:
        raise _refuse(url, "the server answered with nothing")
    kind = _kind(url, content_type, body[:4096])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"source{_SUFFIXES[kind]}"
    atomic_write(path, body)
    note = {"url": url, "final_url": current, "kind": kind, "content_type": content_type}
    atomic_write(out_dir / NOTE, json.dumps(note, ensure_ascii=False, indent=2) + "\n")
    return Fetched(path, url, current, kind, requested=True)


def _read_capped(url: str, response: httpx.Response, max_bytes: int) -> bytes:
    """The body, read as it streams, stopped as soon as it passes ``max_bytes``."""
    limit = f"{max_bytes // 2**20} MB"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _refuse(url, f"is {int(declared) // 2**20} MB, over the {limit} a book may be; refusing it")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _refuse(url, f"is over the {limit} a book may be; stopped reading it")
        chunks.append(chunk)
    return b"".join(chunks)
