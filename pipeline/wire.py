"""Plain values to JSON and back, for messages between machines (the distributed engine's tasks).

The values that travel are the frozen dataclasses of ``models``, ``config`` and ``report``: their fields say
their types, so one function encodes them all and one decodes them, with nothing to register. JSON rather than
pickle: whoever can write to the broker must not be able to run code on the workers.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def encode(value: Any) -> Any:
    """A JSON-able form of ``value`` (dataclasses, enums, paths, bytes, tuples, sets, dicts, scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} for a message")


def decode(kind: type[T], data: Any) -> T:
    """``data`` (from ``encode``) back as a ``kind``, by the types its fields declare."""
    return typing.cast(T, _decode(kind, data))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(kind: Any, data: Any) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None
        if data is None:
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:
            return _decode(choices[0], data)
        # str | Path and the like: a string stays the string it was encoded as; otherwise the first that fits.
        if isinstance(data, str) and str in choices:
            return data
        for choice in choices:
            try:
                return _decode(choice, data)
            except (TypeError, ValueError, KeyError):
                continue
        raise TypeError(f"cannot decode {kind!r} from {type(data).__name__} in a message")
    if kind is Any:
        return data
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = _hints(kind)
        fields = {f.name: _decode(hints[f.name], data[f.name]) for f in dataclasses.fields(kind) if f.name in data}
        return kind(**fields)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if kind is Path:
        return Path(data)
    if kind is bytes:
        return base64.b64decode(data["b64"])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in data)
        return tuple(_decode(a, v) for a, v in zip(args, data, strict=True))
    if origin in (list, frozenset, set):
        items = [_decode(args[0], v) for v in data]
        return items if origin is list else origin(items)
    if origin is dict:
        return {_decode(args[0], k): _decode(args[1], v) for k, v in data.items()}
    if kind in (str, int, float, bool):
        return kind(data)
    raise TypeError(f"cannot decode {kind!r} from a message")
