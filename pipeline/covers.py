"""A book's cover as players show it: always a JPEG. The book's own image whatever its format (SVG rendered,
PNG, WebP, GIF converted), else one made from its title and author.

Players and libraries read JPEG best (Audiobookshelf takes ``cover.jpg`` in the folder first; ID3 and MP4
cover art in other formats is shown unevenly), so everything is converted once, when the book is read.
Renderers come from pip alone: Pillow for bitmaps and the made cover, resvg (resvg-py, a Rust build with no
system library) for SVG, and Noto Sans CJK (OFL 1.1, packaged as manimgx-fonts-cjk) for titles in any script.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import textwrap
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

log = logging.getLogger("audiobook")

JPEG_MIME = "image/jpeg"
SVG_MIME = "image/svg+xml"
MADE_SIZE = (1000, 1500)  # 2:3, a printed book's shape; Audiobookshelf shows covers at this ratio or square
MAX_SIDE = 3000  # larger covers are scaled down: every chapter MP3 carries one
_QUALITY = 90
# Plain backgrounds dark enough for white text; one per book, chosen by its title so a rerun matches.
_BACKGROUNDS = ("#2f4858", "#33658a", "#55286f", "#7a3b2e", "#1d4e3f", "#5c4742", "#3d3b8e", "#6b2737")


class CoverError(ValueError):
    """The image cannot be read or rendered."""


def is_jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8\xff")


def looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") or head.startswith(b"<!doctype")) and b"<svg" in head


def to_jpeg(data: bytes, mime: str | None = None) -> bytes:
    """The image as a JPEG (a JPEG no larger than ``MAX_SIDE`` is kept byte for byte). CoverError when it is not
    an image this can read."""
    if mime == SVG_MIME or looks_like_svg(data):
        data = render_svg(data)
    elif is_jpeg(data):
        try:
            with Image.open(io.BytesIO(data)) as probe:
                if max(probe.size) <= MAX_SIDE:
                    return data
        except (UnidentifiedImageError, OSError) as exc:
            raise CoverError(f"not a readable JPEG: {exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _encode(img)
    except UnidentifiedImageError:
        raise CoverError("not a picture in a format it knows (JPEG, PNG, WebP, GIF, SVG)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CoverError(f"a damaged picture ({exc})") from None


def _encode(img: Image.Image) -> bytes:
    if img.mode in ("RGBA", "LA", "P", "PA"):  # transparency onto white, as a page would show it
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=_QUALITY, optimize=True)
    return out.getvalue()


def render_svg(svg: bytes, width: int = 1400) -> bytes:
    """PNG bytes of an SVG at ``width`` pixels wide. Images it references must be inlined (data: URIs) first:
    nothing outside the SVG is read. Its text is set in the bundled CJK font when it names none we have."""
    try:
        import resvg_py
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise CoverError(f"SVG covers need resvg-py ({exc})") from None
    text = svg.decode("utf-8", errors="replace")
    try:
        font = cjk_font()
        png = resvg_py.svg_to_bytes(svg_string=text, width=width, font_files=[str(font)] if font else None)
    except Exception as exc:  # resvg raises a plain exception for an SVG it cannot parse
        raise CoverError(f"cannot render the SVG: {exc}") from None
    return bytes(png)


def cjk_font() -> Path | None:
    """Noto Sans CJK (covers Latin, Greek, Cyrillic too), from its pip package; None when it is not installed."""
    try:
        path = Path(str(resources.files("manimgx_fonts_cjk") / "NotoSansCJK-VF.otf.ttc"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


@functools.lru_cache(maxsize=8)
def _font(size: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = cjk_font()
    if path is None:
        log.debug("no CJK font installed: the made cover uses Pillow's own font (Latin only)")
        return ImageFont.load_default(size)
    font = ImageFont.truetype(str(path), size, index=_SC_INDEX)
    with contextlib.suppress(OSError, ValueError):  # a static build of the font has its one weight
        font.set_variation_by_axes([700 if bold else 400])
    return font


# The collection's faces: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK. Simplified Chinese shapes for Han text by default.
_SC_INDEX = 2


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Lines no wider than ``width`` px: at spaces for spaced scripts, anywhere between CJK characters."""
    words = re.findall(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]|[^\s\u2e80-\u9fff]+", text)
    lines: list[str] = []
    line = ""
    for word in words:
        cjk = len(word) == 1 and ord(word) >= 0x2E80
        candidate = line + word if (cjk or not line or ord(line[-1]) >= 0x2E80 and cjk) else f"{line} {word}"
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines or [""]


def make_cover(title: str, author: str | None) -> bytes:
    """A plain cover: the title large and the author below it, white on a colour the title picks."""
    width, height = MADE_SIZE
    background = _BACKGROUNDS[sum(title.encode("utf-8")) % len(_BACKGROUNDS)]
    img = Image.new("RGB", MADE_SIZE, background)
    draw = ImageDraw.Draw(img)
    margin = 90
    size = 110
    title_text = " ".join(title.split()) or "Audiobook"
    while True:  # the largest size at which the title fits in eight lines
        font = _font(size, bold=True)
        lines = _wrap(title_text, font, width - 2 * margin)
        if len(lines) <= 8 or size <= 40:
            break
        size -= 10
    lines = lines[:8] if len(lines) <= 8 else [*lines[:7], textwrap.shorten(" ".join(lines[7:]), 40)]
    y = int(height * 0.22)
    for line in lines:
        w = draw.textlength(line, font=font)
        draw.text(((width - w) / 2, y), line, font=font, fill="white")
        y += int(size * 1.3)
    draw.line([(width / 2 - 80, y + 40), (width / 2 + 80, y + 40)], fill="white", width=4)
    if author:
        small = _font(60, bold=False)
        y += 110
        for line in _wrap(" ".join(author.split()), small, width - 2 * margin)[:3]:
            w = draw.textlength(line, font=small)
            draw.text(((width - w) / 2, y), line, font=small, fill="#f0f0f0")
            y += 80
    out = io.BytesIO()
    img.save(out, "JPEG", quality=_QUALITY, optimize=True)
    return out.getvalue()
