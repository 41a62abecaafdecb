"""The one place a part is decoded: any format to s16le mono PCM at the chapter's rate, by one ffmpeg process,
with a measuring filter at the end of its chain when levelling asks for one (``loudness.decode_and_measure``).

MP3 goes in as ``mp3.decoder_input`` makes it (exact sample counts, one-frame parts included); ``fmt`` "pcm"
is headerless s16le mono at 24 kHz (OpenAI's), anything else goes to ffmpeg's demuxer of that name.

Two kinds of failure, told apart because they call for different things: ``mp3.NotAudio`` when our own frame
check finds the part is not audio (the part is bad: the caller may drop it so it is made again), and
``ToolError`` when ffmpeg fails on a part that check accepted (the tool is at fault, not the paid part: it
must stay cached).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import mp3
from pipeline.errors import ToolError
from pipeline.media import ffmpeg_exe, run_tool

RAW_PCM_RATE = 24_000  # OpenAI's "pcm" answers: headerless s16le mono at 24 kHz
_WIDTH = 2  # s16le mono throughout
_DEMUXERS = {"mp3": "mp3", "wav": "wav", "flac": "flac", "aac": "aac", "opus": "ogg", "ogg": "ogg"}


@dataclass(frozen=True)
class Decoded:
    pcm: bytes  # s16le mono at the rate asked for
    log: str  # ffmpeg's messages (level info) when a measuring filter was given, for its summary; else ""


def decode_part(
    data: bytes, fmt: str, rate: int | None = None, *, trim: bool = True, measure: str | None = None
) -> Decoded:
    """Decode a part to s16le mono PCM at ``rate`` (an MP3's own rate when None). ``trim``: an MP3 loses its
    encoder delay and padding as ffmpeg drops them from a file (see ``mp3.DecoderInput``). ``measure``: an
    ffmpeg filter (``ebur128=...``) run on exactly the samples written out, its report in ``log``; the PCM is
    the same either way. Raises NotAudio for a bad MP3 part, ToolError when ffmpeg fails."""
    filters: list[str] = []
    expected: tuple[int, int] | None = None  # MP3: the exact sample count, and how far it may miss
    if fmt == "mp3":
        part = mp3.decoder_input(data, trim=trim)
        rate = rate or part.format.sample_rate
        stream, filters, expected = part.stream, list(part.filters), part.expected(rate)
        source = ["-f", "mp3", "-i", "pipe:0"]
        resample = rate != part.format.sample_rate
    else:
        if rate is None:
            raise ValueError(f"a {fmt} part needs the rate to decode it at")
        resample = True
        if fmt == "pcm":
            stream = data[: len(data) - len(data) % _WIDTH]
            source = ["-f", "s16le", "-ar", str(RAW_PCM_RATE), "-ac", "1", "-i", "pipe:0"]
        else:
            if fmt == "wav" and (problem := wav_problem(data)):
                raise mp3.NotAudio(f"not a WAV file: {problem}")
            stream = data
            source = ["-f", _DEMUXERS.get(fmt, fmt), "-i", "pipe:0"]
    if measure:
        # The measuring filter wants the samples as they are written: after aformat to s16 it measures exactly
        # those (s16 -> double is exact, and the output is bit-identical to a decode without it: tested).
        filters += [f"aresample={rate}", f"aformat=sample_fmts=s16:sample_rates={rate}:channel_layouts=mono", measure]
    elif resample and filters:
        filters.append(f"aresample={rate}")
    chain = ["-af", ",".join(filters)] if filters else []
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info" if measure else "error",
           *source, *chain, "-ac", "1", "-ar", str(rate), "-f", "s16le", "pipe:1"]  # fmt: skip
    try:
        proc = run_tool(cmd, stream)
    except OSError as exc:
        raise ToolError(f"cannot run ffmpeg ({cmd[0]}) to decode a part: {exc}") from exc
    log = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise ToolError(f"ffmpeg ({cmd[0]}) could not decode a part ({fmt}): {error_line(log)}")
    pcm = proc.stdout
    if expected is not None:
        count, slack = expected
        got = len(pcm) // _WIDTH
        if abs(got - count) > slack:
            raise ToolError(f"ffmpeg ({cmd[0]}) decoded {got} samples of a part where {count} were expected")
        pcm = pcm[: _WIDTH * count] + bytes(_WIDTH * max(0, count - got))
    return Decoded(pcm, log if measure else "")


def decode_part_pcm(data: bytes, rate: int | None = None, *, trim: bool = True, fmt: str = "mp3") -> bytes:
    """Just the PCM of ``decode_part``: the part as the chapter's encoder is given it."""
    return decode_part(data, fmt, rate, trim=trim).pcm


def wav_problem(data: bytes) -> str | None:
    """Why ``data`` is not a WAV file, by its structure alone, or None: what our own check can say before a tool
    is asked, so a broken part is dropped and made again rather than blamed on ffmpeg. Lenient on sizes: a
    streamed WAV (as OpenAI sends) gives its RIFF and data sizes as 0xFFFFFFFF."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return "no RIFF/WAVE header"
    at, seen = 12, set()
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if chunk == b"data":
            if "fmt " not in seen:
                return "its data comes before its format"
            return None if at + 8 < len(data) else "its data chunk is empty"
        seen.add(chunk.decode("latin-1"))
        if chunk == b"fmt " and size < 16:
            return "its format chunk is too short"
        at += 8 + size + size % 2
    return "no data chunk"


def error_line(log: str) -> str:
    """The line of ffmpeg's messages that says what went wrong (errors first, at any log level)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "[error]" in line or "[fatal]" in line]
    return (errors or lines or ["no message"])[-1][:200]
