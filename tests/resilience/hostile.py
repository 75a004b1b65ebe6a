"""Hostile payloads, built in memory: decompression bombs and garbage that looks like an image."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels (400 Mpx for 20k) that compresses to ~100 KB: a decoder
    that does not check the pixel count before decoding allocates ~400 MB."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts += [comp.compress(row * (side % 1000)), comp.flush()]
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def png_header_only() -> bytes:
    """PNG magic and a header, then garbage: passes a magic-number check, fails to decode."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"not zlib at all") + _chunk(b"IEND", b"")


def small_png(side: int = 48) -> bytes:
    """A real, decodable RGB PNG (a gradient)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 5 % 256, y * 5 % 256, 128)) for x in range(side)) for y in range(side)
    )
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
