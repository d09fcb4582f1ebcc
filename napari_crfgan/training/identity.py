"""Run identity: what a run folder was started with, so it is never resumed as something else.

A checkpoint records the identity of its run (the data source, demo count, seed, batch
size, conditioning) and a digest of the content of the volumes it trained on. Resuming
with other values would turn the run into another experiment while its folder still
claims the first one, so it is refused with a sentence naming each difference, unless
the user asks for a fine-tune (`--fine-tune`): then the earlier identity is kept in the
checkpoint's options under "history".
"""
from __future__ import annotations

import hashlib

from ..data import VolumeDataset
from ..data.cache import file_digest
from .options import IDENTITY_FIELDS


def recorded_identity(options_record: dict) -> dict:
    """The identity a checkpoint's options record says it was started with ({} for old files: no check)."""
    return dict(options_record.get("identity") or {})


def differences(recorded: dict, now: dict) -> list[str]:
    """'seed 0 (now 1)' for each field recorded with another value than now."""
    return [f"{name.replace('_', ' ')} {recorded[name]!r} (now {now[name]!r})"
            for name in IDENTITY_FIELDS if name in recorded and recorded[name] != now.get(name)]


def data_digest(dataset: VolumeDataset) -> str:
    """SHA-256 over the names and contents of the files a run trains on, the volumes (and their masks)
    (the file digests are memoised by the data preparation, so this reads nothing twice)."""
    h = hashlib.sha256()
    for name, path in dataset.content_files():
        h.update(name.encode() + b"\0" + file_digest(path).encode() + b"\n")
    return h.hexdigest()
