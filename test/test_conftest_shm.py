"""The session's clean-up of Fast DDS shared-memory files left by dead processes (test/conftest.py)."""
from __future__ import annotations

import fcntl
from pathlib import Path

from conftest import remove_zombie_fastdds_shm


def _port(shm_dir: Path, number: int) -> None:
    for name in (f"fastdds_port{number}", f"fastdds_port{number}_el", f"sem.fastdds_port{number}_mutex"):
        (shm_dir / name).write_bytes(b"x")


def test_only_files_whose_lock_nobody_holds_are_removed(tmp_path: Path):
    for segment in ("0123456789abcdef", "fedcba9876543210"):
        (tmp_path / f"fastdds_{segment}").write_bytes(b"x")
        (tmp_path / f"fastdds_{segment}_el").write_bytes(b"")
    _port(tmp_path, 7411)
    _port(tmp_path, 7413)
    (tmp_path / "fastdds_port7415").write_bytes(b"x")  # no lock file: nobody can tell, so kept
    (tmp_path / "unrelated_el").write_bytes(b"")
    with open(tmp_path / "fastdds_fedcba9876543210_el", "ab") as held_segment, \
            open(tmp_path / "fastdds_port7413_el", "ab") as held_port:
        fcntl.flock(held_segment, fcntl.LOCK_EX)  # a live owner's locks
        fcntl.flock(held_port, fcntl.LOCK_EX)
        removed = remove_zombie_fastdds_shm(tmp_path)
    assert sorted(removed) == sorted(["fastdds_0123456789abcdef_el", "fastdds_0123456789abcdef",
                                      "fastdds_port7411_el", "fastdds_port7411", "sem.fastdds_port7411_mutex"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "fastdds_fedcba9876543210", "fastdds_fedcba9876543210_el", "fastdds_port7413", "fastdds_port7413_el",
        "sem.fastdds_port7413_mutex", "fastdds_port7415", "unrelated_el"])


def test_a_missing_directory_removes_nothing(tmp_path: Path):
    assert remove_zombie_fastdds_shm(tmp_path / "absent") == []
