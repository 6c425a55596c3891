"""Atomic file writes, shared by the dataset and checkpoint writers, the ESTOP latch and the
language-model cache (no heavy imports)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one.

    The bytes go to a temporary file beside it, are fsynced, and the temporary file replaces
    ``path`` (``os.replace``, atomic on POSIX). On any failure the temporary file is removed and
    the error propagates; ``path`` is untouched.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a staging directory beside ``target``; when the block succeeds it replaces ``target``.

    A failed block leaves ``target`` as it was and removes the staging directory.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
