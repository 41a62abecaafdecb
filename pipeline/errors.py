"""The one error hierarchy. Every expected failure is an ``AudiobookError``; the CLI prints its message on
one line and exits with its ``exit_code``. Anything else is a bug and gets a traceback.

    AudiobookError                 exit 1
    ├── UsageError                 exit 2   bad flags, bad config, missing key
    ├── InputError                 exit 2   the book cannot be read: missing, unreadable, empty, hostile
    ├── SynthesisError             exit 1   a speech request failed
    │   ├── RetryableError                  worth another attempt: timeouts, 408/409/429/5xx, a 200 that is not audio
    │   └── FatalAPIError                   retrying cannot fix it (400/401/403/404/422, no quota): stop the run
    ├── AudioError                 exit 1   decoding, joining, encoding or tagging failed
    ├── RunFailed                  exit 1   the run ended with segments or books not done (named in the message)
    ├── LockHeld                   exit 75  another run of the same job holds its lock
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
    """A speech request failed. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RetryableError(SynthesisError):
    """A failure another attempt may fix (the server said so, or it is transient)."""


class FatalAPIError(SynthesisError):
    """A failure no retry can fix: every further request would be wasted money."""


class AudioError(AudiobookError):
    """Audio could not be decoded, joined, encoded or tagged."""


class RunFailed(AudiobookError):
    """The run finished but left work undone; the message says what."""


class LockHeld(AudiobookError):
    """Another run of the same job is in progress."""

    exit_code = 75


class Interrupted(AudiobookError):
    """Stopped by Ctrl-C or SIGTERM. Finished parts are in the cache; the next run resumes."""

    exit_code = 130
