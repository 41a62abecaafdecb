"""A chapter's parts as the assembly stage reads them, and the one error that says a stored part is bad."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.errors import AudioError
from pipeline.models import Chapter

# A part's bytes, read when the assembler reaches it (so a chapter never holds all of them at once); None when
# the part is gone from the store.
PartSource = Callable[[], bytes | None]


class PartDecodeError(AudioError):
    """A stored part is not decodable audio. The runner evicts that segment's part so it is made again."""

    def __init__(self, message: str, *, chapter: int, segment: int):
        super().__init__(message)
        self.chapter = chapter
        self.segment = segment


def part_error(chapter: Chapter, index: int, reason: str) -> PartDecodeError:
    return PartDecodeError(
        f"chapter {chapter.index} ({chapter.title!r}), segment {index}: its part is not usable audio "
        f"({reason}); it must be synthesized again",
        chapter=chapter.index,
        segment=index,
    )


def read_part(chapter: Chapter, index: int, part: PartSource) -> bytes:
    data = part()
    if data is None:
        raise part_error(chapter, index, "it is no longer in the cache")
    return data
