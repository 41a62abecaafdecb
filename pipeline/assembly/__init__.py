"""The assembly stage: a chapter's parts become one tagged MP3 (plus subtitles); a book's chapters become a
playlist and, on request, one M4B with chapter markers. What the rest of the program calls is here."""

from pipeline.assembly.chapter import (
    CUE_MAX_CHARS,
    LEVELLED_MP3_QUALITY,
    M4B_BITRATE,
    Cue,
    PartDecodeError,
    PartSource,
    assemble_chapter,
    book_stem,
    build_m4b,
    chapter_filename,
    cover_mime,
    ffmetadata,
    format_subtitles,
    segment_cues,
    write_playlist,
)

__all__ = [
    "CUE_MAX_CHARS",
    "LEVELLED_MP3_QUALITY",
    "M4B_BITRATE",
    "Cue",
    "PartDecodeError",
    "PartSource",
    "assemble_chapter",
    "book_stem",
    "build_m4b",
    "chapter_filename",
    "cover_mime",
    "ffmetadata",
    "format_subtitles",
    "segment_cues",
    "write_playlist",
]
