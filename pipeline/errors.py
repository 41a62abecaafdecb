"""The one error hierarchy. Every expected failure is an ``AudiobookError``; the CLI prints its message on
one line and exits with its ``exit_code``. Anything else is a bug and gets a traceback.

    AudiobookError                 exit 1
    ├── UsageError                 exit 2   bad flags, bad config, missing key
    ├── InputError                 exit 2   the book cannot be read: missing, unreadable, empty, hostile
    ├── SynthesisError             exit 1   a speech request failed (``attempts`` says how many were made)
    │   ├── RetryableError                  worth another attempt: timeouts, 408/409/5xx, a 200 that is not audio
    │   │   └── RateLimited                 429 from the key's rate limit: the governor paces, the request waits again
    │   └── FatalAPIError                   retrying cannot fix it: stop instead of paying for the same error again
    │       ├── AuthError                   401/403: every request with this key fails, so the whole run stops
    │       ├── QuotaError                  429 insufficient_quota: no credit left, so the whole run stops
    │       ├── KeyResting                  429 asking to wait over 2 minutes, or only 429s for long: the run stops
    │       └── BadRequestError             400/404/422, an unknown voice: this book's settings are wrong, it stops
    ├── AudioError                 exit 1   decoding, joining, encoding or tagging failed
    │   └── ToolError                       a local tool (ffmpeg) failed or lacks what we use: the parts stay cached
    ├── RunFailed                  exit 1   the run ended with segments or books not done (named in the message)
    ├── LockHeld                   exit 75  another run of the job or its output folder holds the lock
    └── Interrupted                exit 130 Ctrl-C or SIGTERM; finished work is kept
"""

from __future__ import annotations


class AudiobookError(Exception):
    """Base of every expected failure."""

    exit_code = 1


class UsageError(AudiobookError):
    """The command line or configuration is wrong; nothing was attempted."""

    exit_code = 2


class InputError(AudiobookError):
    """The book cannot be read or holds nothing to speak."""

    exit_code = 2


class SynthesisError(AudiobookError):
    """A speech request failed. ``status`` is the HTTP status when there was one; ``attempts`` the requests
    made for this segment, retries included (each was sent, so each may be billed)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts
        self.rate_limited = 0  # 429s of the rate limit met on the way (not attempts: they are not billed)
        self.waited_s = 0.0  # seconds held back by the rate governor


class RetryableError(SynthesisError):
    """A failure another attempt may fix (the server said so, or it is transient)."""


class RateLimited(RetryableError):
    """429 ``rate_limit_exceeded``: the key's requests (or tokens) per minute are used up for now. Not a failed
    attempt: the rate governor pauses and paces, and the request waits for its turn again."""


class FatalAPIError(SynthesisError):
    """A failure no retry can fix: every further request would be wasted money."""

    # Whether every request of the run would fail alike (a bad key) or only this book's (a bad voice).
    stops_run = False


class AuthError(FatalAPIError):
    """The key is missing, wrong or lacks access (401/403)."""

    stops_run = True


class QuotaError(FatalAPIError):
    """The account has no credit left (429 ``insufficient_quota``)."""

    stops_run = True


class KeyResting(FatalAPIError):
    """The key cannot be used for a long while: a 429 whose ``Retry-After`` is longer than the SDK waits
    (``limits.MAX_RETRY_AFTER``), or nothing but 429s for the run's patience. Every request would meet it."""

    stops_run = True


class BadRequestError(FatalAPIError):
    """The request itself is wrong for this server: model, voice, format, speed, base URL (400/404/422)."""


class AudioError(AudiobookError):
    """Audio could not be decoded, joined, encoded or tagged."""


class ToolError(AudioError):
    """A local tool failed on audio our own checks accept, or lacks a capability we use: the machine's fault,
    never the paid part's, so the part is kept and the run fails naming the tool."""


class RunFailed(AudiobookError):
    """The run finished but left work undone; the message says what."""


class LockHeld(AudiobookError):
    """Another run of the same job, or another run writing to the same output folder, is in progress."""

    exit_code = 75


class Interrupted(AudiobookError):
    """Stopped by Ctrl-C or SIGTERM. Finished parts are in the cache; the next run resumes."""

    exit_code = 130
