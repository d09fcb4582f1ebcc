"""The names of a mask folder's labels: ``label_names.csv`` (header ``label,name``), optional.

The demo-chest masks come with one; a folder of the user's may have one. The names travel into the
checkpoint (the dataset summary), so a synthesis or the napari dock can say what each label is.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..files import write_bytes_atomic

LABEL_NAMES_FILE = "label_names.csv"


def write_label_names(folder: str | os.PathLike, names: dict[int, str]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "name"])
    writer.writerows(sorted(names.items()))
    path = Path(folder) / LABEL_NAMES_FILE
    write_bytes_atomic(path, out.getvalue().encode())
    return path


def read_label_names(folder: str | os.PathLike) -> dict[int, str]:
    """{label: name} of the folder's table ({} without one); ValueError naming the file for a malformed one."""
    path = Path(folder) / LABEL_NAMES_FILE
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        header = [c.strip().lower() for c in rows[0]]
        li, ni = header.index("label"), header.index("name")
        names = {int(r[li]): r[ni].strip() for r in rows[1:]}
    except (OSError, UnicodeDecodeError, csv.Error, IndexError, ValueError):
        raise ValueError(f"{path} must be a table with the header 'label,name' and one integer label "
                         "per row") from None
    if any(label < 0 for label in names):
        raise ValueError(f"{path} names a negative label; labels are 0, 1, 2, ...")
    return names
