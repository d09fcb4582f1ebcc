"""Atomic file writes: a file (or folder) appears whole under its name or not at all.

One helper for every writer in the package (cached volumes, NIfTI files, demo data
sets, checkpoints): write to a temporary name in the same folder, then rename it
over the target with `os.replace`, which is atomic on POSIX and Windows. The
standard library only, so every layer of the package may use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp"  # temporary names are ".<name>.<8 hex>.tmp[<suffix>]" beside the target


def temporary_name(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `path` (hidden, unique, recognisable as ours)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on failure removed.

    suffix: appended to the temporary name (writers that pick a format by extension,
    such as nibabel's `.nii.gz`). durable: fsync the file and its folder, so the new
    content survives a power cut (checkpoints). The block may create a file or a folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        if durable and tmp.is_file():
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: dict) -> Path:
    """`obj` as JSON at `path`, never half-written."""
    return write_bytes_atomic(path, json.dumps(obj, sort_keys=True, indent=1).encode())


def check_writable(folder: str | Path, what: str = "output folder") -> None:
    """Refuse (PermissionError, one sentence) a folder that cannot be created or written, before any work."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():  # the nearest existing ancestor decides whether the folder can be made
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"the {what} {folder} cannot be made: {probe} is a file")
    if probe == folder:
        test = temporary_name(folder / "write-test")
        try:
            test.touch()
            test.unlink()
        except OSError as e:
            raise PermissionError(f"the {what} {folder} is not writable ({e.strerror})") from None
    elif not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} {folder} cannot be made: {probe} is not writable")
