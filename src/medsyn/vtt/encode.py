"""One PNG form for every image of a reader study, so nothing in a served file tells real from synthetic.

Every image, real or synthetic, goes through the same steps: float [0, 1] -> 8-bit with the rounding
``imageio.to_uint`` uses for every PNG medsyn writes, then one Pillow call with one fixed setting and
no metadata. Browsers show 8 bits, so 16-bit originals are served at 8 bits like the rest.
"""
from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

from medsyn.imageio import to_uint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALLOWED_CHUNKS = ("IHDR", "IDAT", "IEND")  # no tEXt/tIME/pHYs/gAMA/iCCP: nothing but the pixels
# Stored, not deflated: a file's size then depends only on its width, height and mode, never on its content
# (deflate would make noisier images larger, and a rater's browser shows file sizes). Study sets are small.
COMPRESS_LEVEL = 0
MODES = {1: "L", 3: "RGB"}


def mode_of(channels: int) -> str:
    """The PNG mode served for images of ``channels`` channels: "L" (grey) or "RGB"."""
    if channels not in MODES:
        raise ValueError(f"reader studies show grey or RGB images, not {channels} channels")
    return MODES[channels]


def encode_png(image: np.ndarray) -> bytes:
    """The served PNG bytes of one (C, H, W) float image in [0, 1] (C = 1 or 3).

    Args:
        image: float image, intensities in [0, 1] (clipped).

    Returns:
        An 8-bit grey or RGB PNG holding only IHDR, IDAT and IEND chunks.
    """
    mode = mode_of(image.shape[0])
    pixels = to_uint(image[None], 8)[0]  # a batch of one: to_uint drops the channel axis of grey images
    picture = Image.fromarray(pixels)  # uint8 (H, W) -> "L", (H, W, 3) -> "RGB"
    assert picture.mode == mode, (picture.mode, mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=COMPRESS_LEVEL)
    data = buffer.getvalue()
    extra = sorted(set(png_chunks(data)) - set(ALLOWED_CHUNKS))
    if extra:  # a future Pillow adding a chunk by default must not leak into a study unnoticed
        raise RuntimeError(f"the PNG encoder wrote chunks {extra}; a study's images must hold only {ALLOWED_CHUNKS}")
    return data


def png_chunks(data: bytes) -> list[str]:
    """The chunk types of PNG ``data`` in file order.

    Raises:
        ValueError: not a PNG, a truncated chunk or a chunk whose CRC does not match.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"truncated chunk header at byte {pos}")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError(f"truncated {kind!r} chunk at byte {pos}")
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise ValueError(f"bad CRC in {kind!r} chunk at byte {pos}")
        chunks.append(kind.decode("latin-1"))
        pos = end
    return chunks
