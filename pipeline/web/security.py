"""The web page's guards, as for any server that may face a network.

- Reach: loopback by default. Beyond it only with a token (``$AUDIOBOOK_WEB_TOKEN`` or a file, never the
  command line); a browser signs in once with it (a session cookie), a script sends ``Authorization: Bearer``.
  On loopback the Host header must name this machine too (a DNS-rebinding page cannot borrow the browser).
- CSRF: a synchronizer token. Every browser gets a random session id in an HttpOnly, SameSite=Strict cookie;
  each form carries ``csrf`` = HMAC(server secret, session id), checked on every POST (403 without it), and a
  POST whose Origin is not this server's is refused as well.
- Uploads: the size capped before anything is kept (413), the type by suffix and by content (415), a name that
  holds a path refused (400); what is kept gets a generated name under the data folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.addresses import Reach, reach
from pipeline.errors import UsageError
from pipeline.readers import BOOK_SUFFIXES, EPUB_SUFFIXES

TOKEN_ENV = "AUDIOBOOK_WEB_TOKEN"
MIN_TOKEN = 16
SESSION_COOKIE = "audiobook_session"
AUTH_COOKIE = "audiobook_auth"
SECRET_NAME = "secret.key"


def read_token(path: Path | None, env: Mapping[str, str]) -> str | None:
    """The token from ``path``'s first line, else from $AUDIOBOOK_WEB_TOKEN, else None."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        token = lines[0].strip() if lines else ""
        where = str(path)
    else:
        token = env.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < MIN_TOKEN:
        raise UsageError(f"the token in {where} is shorter than {MIN_TOKEN} characters")
    return token


def check_reach(host: str, token: str | None) -> None:
    """Refuse to bind beyond this machine without a token (UsageError, one line)."""
    if reach(host) is not Reach.LOOPBACK and token is None:
        raise UsageError(
            f"--host {host} reaches beyond this machine: set ${TOKEN_ENV} or give --token-file "
            f"({MIN_TOKEN} characters or more); everyone who can reach the page could spend your key"
        )


def server_secret(data: Path) -> bytes:
    """The key the session's CSRF token and sign-in are derived with: made once, kept in the data folder (0600),
    so a restart keeps the sessions."""
    path = data / SECRET_NAME
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex())
    return key


def sign(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def new_session() -> str:
    return secrets.token_urlsafe(24)


def host_of(header: str) -> str:
    """The host part of a Host header (``[::1]:8000`` -> ``::1``)."""
    return urlsplit(f"//{header}").hostname or ""


def origin_matches(origin: str | None, host_header: str) -> bool:
    """A POST's Origin, when the browser sent one, names this server (``null`` and others do not)."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host_header.lower()


class UploadRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_upload_name(name: str) -> str:
    """The suffix of an upload's name, or UploadRefused: a name with a path in it (400), a kind of file no
    reader takes (415)."""
    if not name or "/" in name or "\\" in name or "\x00" in name or name.strip(". ") == "":
        raise UploadRefused(400, f"the file name {name!r} holds a path; give a plain file name")
    if any(ord(c) < 32 for c in name):
        raise UploadRefused(400, "the file name holds control characters")
    suffix = Path(name).suffix.lower()
    if suffix not in BOOK_SUFFIXES:
        kinds = ", ".join(sorted(BOOK_SUFFIXES))
        raise UploadRefused(415, f"{name}: not a kind of book this reads ({kinds})")
    return suffix


def check_upload_content(suffix: str, head: bytes) -> None:
    """The bytes match the name: an EPUB is a zip, every other kind is text (no NUL byte in its start)."""
    if suffix in EPUB_SUFFIXES:
        if not head.startswith(b"PK\x03\x04"):
            raise UploadRefused(415, "the file is named .epub but is not an EPUB (a zip)")
    elif b"\x00" in head[:65536]:
        raise UploadRefused(415, f"the file is named {suffix} but holds binary data, not text")
