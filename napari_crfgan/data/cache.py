"""On-disk cache of preprocessed volumes.

Layout under :func:`cache_dir` (env var ``CRFGAN_CACHE_DIR``, else
``~/.cache/napari-crfgan``)::

    volumes/<key[:2]>/<key>.npy    the preprocessed cube, float32 [size]^3 in [-1, 1]
    volumes/<key[:2]>/<key>.json   its spacing and the raw volume's statistics
    stats/<digest[:2]>/<digest>.json  raw statistics of a file's content (for modality detection)
    demo/...                       generated demo data sets (see demo.py)

``key`` is a SHA-256 of the file's content digest, the preprocessing settings and
:data:`CACHE_VERSION`, so editing a file, changing settings or changing the format
all miss the cache. Every write goes to a temporary file in the same folder and is
moved into place with :func:`os.replace`; the metadata is written before the array,
so an existing ``.npy`` always has its ``.json``. The user's data folders are only
read, never written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..files import atomic_path, write_json_atomic

__all__ = ["CACHE_VERSION", "cache_dir", "file_digest", "cache_key", "VolumeCache"]

#: bump when the preprocessing code changes what it produces or accepts
#: (2: files with NaN voxels are refused, entries record their resampling problem)
CACHE_VERSION = 2

_DIGEST_MEMO: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """The cache root: ``$CRFGAN_CACHE_DIR`` if set, else ``~/.cache/napari-crfgan``."""
    env = os.environ.get("CRFGAN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "napari-crfgan"


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (memoised per path, size and mtime in this process)."""
    path = Path(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key in _DIGEST_MEMO:
        return _DIGEST_MEMO[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    _DIGEST_MEMO[memo_key] = digest
    return digest


def cache_key(digest: str, settings: dict) -> str:
    """Key of a preprocessed volume: hash of content digest + settings + cache version."""
    payload = json.dumps(
        {"version": CACHE_VERSION, "content": digest, "settings": settings}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class VolumeCache:
    """Preprocessed volumes (``.npy`` + ``.json``) and raw statistics, keyed by hashes."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else cache_dir()

    # preprocessed volumes
    def volume_path(self, key: str) -> Path:
        return self.root / "volumes" / key[:2] / f"{key}.npy"

    def get(self, key: str) -> tuple[Path, dict] | None:
        """``(npy path, metadata)`` of a cached volume, or None on a miss."""
        npy = self.volume_path(key)
        if not npy.is_file():
            return None
        meta = _read_json(npy.with_suffix(".json"))
        if meta is None or "spacing" not in meta:
            return None
        return npy, meta

    def put(self, key: str, array: np.ndarray, meta: dict) -> Path:
        """Store ``array`` and ``meta`` (must hold ``spacing``) under ``key``; returns the npy path."""
        npy = self.volume_path(key)
        write_json_atomic(npy.with_suffix(".json"), meta)
        arr = np.ascontiguousarray(array, dtype=np.float32)
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return npy

    # raw statistics per file content
    def stats_path(self, digest: str) -> Path:
        return self.root / "stats" / digest[:2] / f"{digest}.json"

    def get_stats(self, digest: str) -> dict | None:
        stats = _read_json(self.stats_path(digest))
        if stats is None or stats.get("version") != CACHE_VERSION:
            return None
        return stats

    def put_stats(self, digest: str, stats: dict) -> None:
        write_json_atomic(self.stats_path(digest), {**stats, "version": CACHE_VERSION})
