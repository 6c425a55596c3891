"""File helpers shared by the dataset writer and the checkpoint writer (no heavy imports)."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one.

    The bytes go to ``<name>.tmp`` beside it, are fsynced, and the temporary file replaces
    ``path`` (``os.replace``, atomic on POSIX); a crash leaves at most a stray ``.tmp``.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
