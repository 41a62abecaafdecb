"""Addresses, one truth each: whether a host is this machine, and what a speech endpoint's base URL is.

``reach`` is the one table of hosts (the server's bind check and the client's "a server here may need no key"
both read it)::

    localhost (any case, a final dot), 127.0.0.0/8, ::1, ::ffff:127.x.x.x   LOOPBACK         this machine only
    0.0.0.0, ::, "" (as a bind address: every interface)                    EVERY_INTERFACE
    anything else (names, other addresses, 127.1 and other short forms)      ELSEWHERE

A server bound to EVERY_INTERFACE is reachable from the network, so ``serve`` wants a key there as anywhere
but loopback. A client sent to 0.0.0.0 or :: reaches this machine (Linux and macOS connect it to the local
host), so like loopback it may talk to a local server that needs no key: ``is_this_machine``.

``parse_base_url`` checks a base URL and gives it one normal form; the config loader validates with it, the
HTTP client sends to it, and ``BaseUrl.where`` names the endpoint in cache keys, rate governors and messages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from pipeline.errors import UsageError


class Reach(Enum):
    LOOPBACK = "loopback"  # this machine only
    EVERY_INTERFACE = "every interface"  # 0.0.0.0 or :: : every address this machine has
    ELSEWHERE = "elsewhere"


def reach(host: str) -> Reach:
    """Where ``host`` (a name or an address, IPv6 with or without brackets) leads; see the module's table."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "":
        return Reach.EVERY_INTERFACE
    if name.lower().rstrip(".") == "localhost":
        return Reach.LOOPBACK
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return Reach.ELSEWHERE  # a name other than localhost, or a form (127.1) not every resolver reads alike
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return Reach.LOOPBACK
    if address.is_unspecified:
        return Reach.EVERY_INTERFACE
    return Reach.ELSEWHERE


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only."""
    return reach(host) is Reach.LOOPBACK


def is_this_machine(host: str) -> bool:
    """Whether a client sent to ``host`` talks to this machine (loopback, or the unspecified address)."""
    return reach(host) is not Reach.ELSEWHERE


DEFAULT_PORTS = {"http": 80, "https": 443}
EXAMPLE = "https://api.openai.com/v1"


@dataclass(frozen=True)
class BaseUrl:
    """A base URL in normal form: scheme and host lower-case, the scheme's default port left out, no
    credentials (a key never rides in a URL), no trailing slash. The query is kept: some relays want one
    (``?api-version=...``)."""

    scheme: str
    host: str  # IPv6 without brackets
    port: int | None  # None: the scheme's default
    path: str  # "" or "/..." without a trailing slash
    query: str = ""

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def where(self) -> str:
        """Host and path, without scheme or query: what names the endpoint (``api.openai.com/v1``)."""
        return self.netloc + self.path

    def url(self, tail: str = "") -> str:
        """The full URL of ``tail`` under this base (``/audio/speech``), the query last."""
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{self.path}{tail}{query}"


def parse_base_url(text: str) -> BaseUrl:
    """``text`` checked and in normal form; UsageError (one line naming ``base_url``) if it is not an http(s)
    URL with a host, a valid port and no spaces or control characters."""

    def bad(why: str) -> UsageError:
        return UsageError(f"base_url must be an http(s) URL such as {EXAMPLE}, not {text!r}: {why}")

    stripped = text.strip() if isinstance(text, str) else ""
    if not stripped:
        raise bad("it is empty")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise bad("it holds a space or a control character")
    parts = urlsplit(stripped)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not stripped[len(scheme) + 1 :].startswith("//"):
        raise bad("it must start with http:// or https://")
    host = parts.hostname or ""
    if not host:
        raise bad("it names no host")
    try:
        port = parts.port
    except ValueError:
        raise bad("its port is not a number from 0 to 65535") from None
    if port == DEFAULT_PORTS[scheme]:
        port = None
    return BaseUrl(scheme, host, port, parts.path.rstrip("/"), parts.query)


def endpoint(base_url: str) -> str:
    """Host and path of a valid base URL in normal form (``api.openai.com/v1``): the endpoint's name."""
    return parse_base_url(base_url).where
