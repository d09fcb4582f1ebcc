"""PNG montages of volume slices, written with the standard library only."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a 2D uint8 array as an 8-bit greyscale PNG."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)
    return Path(path)


def orthogonal_slices(volume: np.ndarray) -> np.ndarray:
    """The middle axial, coronal and sagittal slices of a (D, H, W) cube side by side.

    Axial slices are flipped so anterior is up; coronal and sagittal so superior is up.
    """
    d, h, w = volume.shape
    axial = volume[d // 2][::-1]
    coronal = volume[:, h // 2][::-1]
    sagittal = volume[:, :, w // 2][::-1]
    return np.concatenate([axial, coronal, sagittal], axis=1)


def montage(rows: list[list[np.ndarray]], low: float = -1.0, high: float = 1.0, gap: int = 2) -> np.ndarray:
    """uint8 grid: one row per list, each volume shown as its three orthogonal slices."""
    tiles = [[orthogonal_slices(v) for v in row] for row in rows]
    th, tw = tiles[0][0].shape
    ncol = max(len(r) for r in tiles)
    out = np.zeros((len(tiles) * (th + gap) - gap, ncol * (tw + gap) - gap), dtype=np.float32)
    out[:] = low
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            out[i * (th + gap):i * (th + gap) + th, j * (tw + gap):j * (tw + gap) + tw] = t
    return (np.clip((out - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)
