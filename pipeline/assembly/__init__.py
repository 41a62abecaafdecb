"""The assembly stage: a chapter's parts become one tagged MP3 (plus subtitles); a book's chapters become a
playlist and, on request, one M4B with chapter markers. What the rest of the program calls is here; each job
has its module:

- ``chapter``: a chapter file, joined ``lossless`` (the parts' own frames) or ``decoded`` (one encode);
- ``parts``: reading a stored part, and the error that says it is damaged; ``decode``: the one decoder;
- ``loudness``: levelling parts to a target; ``encoder``: ffmpeg as an encoder fed PCM;
- ``cues``: subtitles; ``tags``: ID3; ``playlist``: the M3U; ``m4b``: the audiobook file.

Memory stays bounded by one *part*, not one chapter: each part is decoded, its PCM written straight into
a single ffmpeg encoder's stdin, and dropped. Nothing is joined with ``+=`` (quadratic copying) and no
chapter-sized buffer is ever built. Timings are counted in samples, so cue and chapter marks are exact,
not estimates.

Every file is written under a temporary name that does not carry the final extension (``x.mp3.part``) and
renamed into place only when complete, so a crash never leaves a file that looks finished.

File names are not made here (``pipeline.names``): planning and the output folder need them without audio code.
"""

from pipeline.assembly.chapter import assemble_chapter
from pipeline.assembly.cues import CUE_MAX_CHARS, Cue, format_subtitles, segment_cues
from pipeline.assembly.decoded import LEVELLED_MP3_QUALITY
from pipeline.assembly.m4b import M4B_BITRATE, build_m4b, ffmetadata
from pipeline.assembly.parts import PartDecodeError, PartSource
from pipeline.assembly.playlist import write_playlist
from pipeline.assembly.tags import cover_mime
from pipeline.names import book_stem, chapter_filename

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
