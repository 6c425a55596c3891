"""Episode bags: rosbag2 directories with MCAP storage, written from raw CDR bytes (no rclpy).

Writing (:class:`BagWriter`, :class:`BagRecording`): `rosbags`' rosbag2 writer with MCAP storage,
so ``metadata.yaml``, schemas (``ros2msg`` text) and type hashes are what rosbag2 and Foxglove
expect. Messages arrive already serialized (an rclpy ``raw=True`` subscription) and are written
as they are. Crash safety comes from MCAP chunking:

- every chunk (1 MiB, or ``chunk_interval_s`` of data, whichever comes first) is handed to the
  OS as soon as it is closed, so a process killed with SIGKILL leaves a file whose complete
  chunks are all on disk; :class:`BagReader` reads such a file by scanning it (see below);
- a failed write (disk full, I/O error) rolls the file back to the end of the last complete
  chunk and then closes the bag properly (summary, footer, ``metadata.yaml``); if even that
  does not fit, the file is left ending at a chunk boundary, which the scan reads in full.

Reading (:class:`BagReader`): a closed bag goes through `rosbags`' indexed reader. A bag without
``metadata.yaml`` or whose MCAP file has no footer (the recorder was killed, or the disk filled
up while closing) is scanned record by record up to its last complete chunk; the reader says so
in :attr:`BagReader.problems`. A file that is not MCAP, or whose records are damaged, raises a
:class:`BagError` that names the file and the byte offset.

Labels (task, instruction, operator, outcome, notes, interventions) live next to the MCAP file
in ``wam_episode.yaml`` (:func:`read_labels`, :func:`write_labels`); rosbag2 tools ignore it.
"""
from __future__ import annotations

import errno
import os
import queue
import shutil
import struct
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapWriter, PendingChunk
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype, TypesysError

LABELS_FILE = "wam_episode.yaml"
MCAP_MAGIC = b"\x89MCAP0\r\n"
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class BagError(ValueError):
    """A bag cannot be written or read; the message names the path and the problem."""


class DiskFullError(BagError):
    """The file system ran out of space (or fell below the configured reserve) while recording."""


class EpisodeExistsError(BagError):
    """The bag directory exists already; bags are never overwritten."""


# --------------------------------------------------------------------------------------------
# Message definitions


@dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: its type, the type's definition and hash, and the publishers' QoS."""

    topic: str
    msgtype: str  # "sensor_msgs/msg/Image"
    msgdef: str  # ros2msg text with its dependencies, as rosbag2 stores it
    type_hash: str  # "RIHS01_..."
    offered_qos: tuple[Qos, ...] = ()


class MessageDefinitions:
    """Definition text and RIHS01 hash of ROS message types.

    Standard types come from `rosbags`' Kilted type store; other types (our own ``wam_ros/msg``)
    are parsed from ``<share>/<package>/msg/<Name>.msg`` under ``share_dirs``, dependencies too.
    """

    def __init__(self, share_dirs: Sequence[Path | str] = ()) -> None:
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.share_dirs = [Path(d) for d in share_dirs]

    def _find_msg_file(self, msgtype: str) -> Path:
        package, kind, name = _split_type(msgtype)
        for share in self.share_dirs:
            path = share / package / kind / f"{name}.msg"
            if path.is_file():
                return path
        searched = ", ".join(str(d) for d in self.share_dirs) or "no share directories"
        raise BagError(f"message type {msgtype!r} is unknown: no {package}/{kind}/{name}.msg under {searched}")

    def _load(self, msgtype: str) -> None:
        if msgtype in self.typestore.fielddefs:
            return
        types = get_types_from_msg(self._find_msg_file(msgtype).read_text(), msgtype)
        try:
            self.typestore.register(types)
        except TypesysError as error:
            raise BagError(f"message type {msgtype!r}: {error}") from None
        for _, fields in types.values():
            for _, (nodetype, details) in fields:
                while nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                    (nodetype, details), _ = details
                if nodetype == Nodetype.NAME:
                    self._load(details)

    def lookup(self, msgtype: str) -> tuple[str, str]:
        """(definition text, RIHS01 hash) of ``msgtype``; :class:`BagError` when it cannot be found."""
        self._load(msgtype)
        msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
        return msgdef, self.typestore.hash_rihs01(msgtype)

    def topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = ()) -> TopicSpec:
        msgdef, type_hash = self.lookup(msgtype)
        return TopicSpec(topic, msgtype, msgdef, type_hash, tuple(offered_qos))


def _split_type(msgtype: str) -> tuple[str, str, str]:
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts.insert(1, "msg")
    if len(parts) != 3 or not all(parts):
        raise BagError(f"malformed message type {msgtype!r}; expected <package>/msg/<Name>")
    return parts[0], parts[1], parts[2]


# --------------------------------------------------------------------------------------------
# Writing


class _CommittingMcapWriter(McapWriter):
    """`rosbags`' MCAP storage that flushes each closed chunk to the OS and can roll back to it."""

    def __init__(self, path: Path, compression: Any) -> None:
        super().__init__(path, compression)
        self.bio.flush()
        self.commits = 0
        self._commit()

    def _commit(self) -> None:
        self.committed = (self.bio.tell(), len(self.chunks), dict(self.channel_stats), self.message_start_time, self.message_end_time)
        self.commits += 1

    def close_chunk(self) -> None:
        super().close_chunk()
        self.bio.flush()
        self._commit()

    def rollback(self) -> None:
        """Cut the file back to the end of the last flushed chunk and forget everything after it."""
        offset, n_chunks, stats, start, end = self.committed
        fd = os.dup(self.bio.fileno())
        with suppress(OSError):
            self.bio.close()  # may fail flushing buffered bytes: they lie past ``offset`` anyway
        os.ftruncate(fd, offset)
        self.bio = os.fdopen(fd, "r+b")
        self.bio.seek(offset)
        del self.chunks[n_chunks:]
        self.channel_stats = {cid: stats.get(cid, 0) for cid in self.channel_stats}
        self.message_start_time, self.message_end_time = start, end
        self.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))

    @property
    def pending_bytes(self) -> int:
        return self.chunk.bio.tell()


class _EpisodeWriter(Writer):
    STORAGE_PLUGINS = {StoragePlugin.MCAP: _CommittingMcapWriter}


@dataclass
class BagSummary:
    """What a closed (or failed) bag holds."""

    path: Path
    message_counts: dict[str, int]  # per topic, messages in the bag
    start_ns: int
    end_ns: int
    bytes_on_disk: int
    closed: bool  # summary, footer and metadata.yaml written
    error: str = ""

    @property
    def messages(self) -> int:
        return sum(self.message_counts.values())


class BagWriter:
    """Write one rosbag2 MCAP bag from serialized messages; see the module docstring for safety.

    The directory is created at once and must not exist (:class:`EpisodeExistsError`).
    A failed write raises :class:`DiskFullError` (or :class:`BagError` for other I/O errors)
    after closing the bag with everything up to its last flushed chunk.
    """

    def __init__(self, path: Path | str, chunk_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.chunk_interval_s = chunk_interval_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = _EpisodeWriter(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
            self._writer.open()
        except WriterError:
            raise EpisodeExistsError(f"{self.path} exists already; bags are never overwritten") from None
        except OSError as error:
            raise self._as_bag_error(error, "cannot create the bag") from None
        self._connections: dict[str, Connection] = {}
        self._last_flush_s = time.monotonic()
        self.error: BagError | None = None
        self.summary: BagSummary | None = None

    @property
    def _storage(self) -> _CommittingMcapWriter:
        assert isinstance(self._writer.storage, _CommittingMcapWriter), "bag is closed"
        return self._writer.storage

    @property
    def is_open(self) -> bool:
        return self._writer.storage is not None

    @property
    def mcap_path(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def add_topic(self, spec: TopicSpec) -> None:
        if spec.topic in self._connections:
            return
        self._guard(lambda: self._connections.__setitem__(spec.topic, self._writer.add_connection(
            spec.topic, spec.msgtype, msgdef=spec.msgdef, rihs01=spec.type_hash, offered_qos_profiles=list(spec.offered_qos))))

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialized message; the chunk is flushed when full or ``chunk_interval_s`` old."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic {topic!r} was not added to the bag")
        self._guard(lambda: self._writer.write(connection, int(timestamp_ns), data))
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush_s >= self.chunk_interval_s:
            self.flush()

    def flush(self) -> None:
        """Close the pending chunk and hand it to the OS: a crash after this loses none of it."""
        if self.is_open and self._storage.pending_bytes:
            self._guard(self._storage.close_chunk)
        self._last_flush_s = time.monotonic()

    def _guard(self, action: Callable[[], Any]) -> None:
        if self.error is not None:
            raise self.error
        try:
            action()
        except OSError as error:
            self.error = self._as_bag_error(error, "write failed")
            self._recover()
            raise self.error from None

    def _as_bag_error(self, error: OSError, what: str) -> BagError:
        kind = DiskFullError if error.errno in _DISK_FULL_ERRNOS else BagError
        return kind(f"{self.path}: {what}: {error.strerror or error}")

    def _restore_writer_counts(self) -> None:
        storage = self._storage
        for cid in self._writer.counts:
            self._writer.counts[cid] = storage.channel_stats.get(cid, 0)
        self._writer.min_timestamp, self._writer.max_timestamp = storage.message_start_time, storage.message_end_time

    def _recover(self) -> None:
        """After a failed write: keep what was flushed and try to close the bag properly."""
        storage = self._storage
        try:
            storage.rollback()
        except OSError:
            self._writer.storage = None
            with suppress(OSError):
                storage.bio.close()
            self.summary = self._summary(closed=False)
            return
        self._restore_writer_counts()
        self._finish()

    def _finish(self) -> None:
        storage = self._storage
        counts = self._counts()
        try:
            self._writer.close()
            closed = True
        except OSError:
            closed = False
            if self._writer.storage is not None:  # the MCAP summary did not fit: cut it off again
                with suppress(OSError):
                    storage.rollback()
                with suppress(OSError):
                    storage.bio.close()
                self._writer.storage = None
            with suppress(OSError):
                (self.path / "metadata.yaml.tmp").unlink()
        self.summary = self._summary(closed=closed, counts=counts)

    def _counts(self) -> dict[str, int]:
        return {topic: self._writer.counts.get(c.id, 0) for topic, c in self._connections.items()}

    def _summary(self, closed: bool, counts: dict[str, int] | None = None) -> BagSummary:
        counts = counts if counts is not None else self._counts()
        start = self._writer.min_timestamp if sum(counts.values()) else 0
        size = self.mcap_path.stat().st_size if self.mcap_path.exists() else 0
        return BagSummary(self.path, counts, start, self._writer.max_timestamp, size, closed,
                          str(self.error) if self.error else "")

    def close(self) -> BagSummary:
        """Flush, write the MCAP summary and ``metadata.yaml``; returns what the bag holds."""
        if self.summary is not None:
            return self.summary
        try:
            self.flush()
        except BagError:
            assert self.summary is not None
            return self.summary
        self._finish()
        assert self.summary is not None
        return self.summary


@dataclass
class TopicCounts:
    """Per topic: ``received == written + dropped`` once the recording is closed."""

    received: int = 0  # handed to submit()
    written: int = 0  # handed to the bag writer; after close: in the bag
    dropped: int = 0  # refused (queue over its limit), or lost when writing failed
    lost: int = 0  # never received: reported lost by the middleware (:meth:`BagRecording.note_lost`)


class BagRecording:
    """A :class:`BagWriter` fed through a bounded queue by its own thread.

    :meth:`submit` never blocks (subscription callbacks stay fast); a message that would push
    the queue past ``queue_limit_bytes`` is dropped and counted. The thread flushes chunks on
    time, checks the free space every second and stops with a :class:`DiskFullError` when it
    falls below ``min_free_bytes``. ``on_error`` is called (from the thread) when writing stops.
    """

    _STOP = object()

    def __init__(
        self,
        path: Path | str,
        topics: Sequence[TopicSpec] = (),
        chunk_interval_s: float = 1.0,
        queue_limit_bytes: int = 512 << 20,
        min_free_bytes: int = 0,
        on_error: Callable[[BagError], None] | None = None,
    ) -> None:
        self.writer = BagWriter(path, chunk_interval_s)
        self.path = self.writer.path
        self.queue_limit_bytes = queue_limit_bytes
        self.min_free_bytes = min_free_bytes
        self.on_error = on_error
        self.counts: dict[str, TopicCounts] = defaultdict(TopicCounts)
        self.queued_bytes = 0
        self.max_queued_bytes = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._accepting = True
        self.error: BagError | None = None
        for spec in topics:
            self.writer.add_topic(spec)
        self._next_space_check_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"bag-writer:{self.path.name}", daemon=True)
        self._thread.start()

    def add_topic(self, spec: TopicSpec) -> None:
        """Add a topic; safe while recording (it is queued in order with the messages)."""
        self._queue.put(spec)

    def submit(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one serialized message; False when it was dropped."""
        size = len(data)
        with self._lock:
            counts = self.counts[topic]
            counts.received += 1
            if not self._accepting or self.queued_bytes + size > self.queue_limit_bytes:
                counts.dropped += 1
                return False
            self.queued_bytes += size
            self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
        self._queue.put((topic, timestamp_ns, data))
        return True

    def note_lost(self, topic: str, count: int) -> None:
        """Count messages the middleware reports as lost before they reached :meth:`submit`."""
        with self._lock:
            self.counts[topic].lost += count

    def _run(self) -> None:
        wait_s = max(0.05, min(0.5, self.writer.chunk_interval_s / 2))
        while True:
            try:
                item = self._queue.get(timeout=wait_s)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return
            try:
                if isinstance(item, TopicSpec):
                    self.writer.add_topic(item)
                elif item is not None:
                    topic, timestamp_ns, data = item
                    with self._lock:
                        self.queued_bytes -= len(data)
                        self.counts[topic].written += 1
                    self.writer.write(topic, timestamp_ns, data)
                else:
                    self.writer.flush_if_due()
                self._check_free_space()
            except BagError as error:
                self._fail(error)
                return

    def _check_free_space(self) -> None:
        if not self.min_free_bytes or time.monotonic() < self._next_space_check_s:
            return
        self._next_space_check_s = time.monotonic() + 1.0
        free = shutil.disk_usage(self.path).free
        if free < self.min_free_bytes:
            raise DiskFullError(f"{self.path}: only {free / 2**20:.0f} MiB free, below the "
                                f"{self.min_free_bytes / 2**20:.0f} MiB reserve; recording stopped")

    def _fail(self, error: BagError) -> None:
        """Stop accepting messages; ``on_error`` must not call :meth:`close` (it runs on this thread)."""
        self.error = error
        with self._lock:
            self._accepting = False
        self._drain_as_dropped()
        if self.on_error is not None:
            self.on_error(error)

    def _drain_as_dropped(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple):
                with self._lock:
                    self.queued_bytes -= len(item[2])
                    self.counts[item[0]].dropped += 1

    def close(self, timeout_s: float = 60.0) -> BagSummary:
        """Write everything queued, close the bag and stop the thread."""
        with self._lock:
            self._accepting = False
        self._queue.put(self._STOP)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise BagError(f"{self.path}: writer thread did not finish within {timeout_s} s")
        self._drain_as_dropped()
        summary = self.writer.close()
        summary.error = str(self.error) if self.error else summary.error
        with self._lock:  # messages of a chunk lost to a failed write count as dropped
            for topic, counts in self.counts.items():
                kept = summary.message_counts.get(topic, 0)
                counts.dropped += counts.written - kept
                counts.written = kept
        return summary


# --------------------------------------------------------------------------------------------
# Modes: interventions and automatic episode boundaries


# SafetyStatus.MODE_* (checked against the message in the tests; this module does not import ROS).
MODE_IDLE, MODE_TELEOP, MODE_AUTONOMY, MODE_HOLD, MODE_ESTOP = range(5)
MODE_NAMES = ("IDLE", "TELEOP", "AUTONOMY", "HOLD", "ESTOP")
ACTIVE_MODES = (MODE_TELEOP, MODE_AUTONOMY)


def _mode_at(mode_samples: Sequence[tuple[int, int | None]], times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode in effect at each time (-1 before the first sample) and whether AUTONOMY was seen by then."""
    samples = sorted((t, m) for t, m in mode_samples if m is not None)
    if not samples:
        return np.full(len(times_ns), -1), np.zeros(len(times_ns), bool)
    stamps = np.array([t for t, _ in samples], dtype=np.int64)
    modes = np.array([m for _, m in samples], dtype=np.int64)
    index = np.searchsorted(stamps, times_ns, side="right") - 1
    valid = index >= 0
    safe = np.clip(index, 0, None)
    return np.where(valid, modes[safe], -1), valid & (np.cumsum(modes == MODE_AUTONOMY) > 0)[safe]


def intervention_mask(mode_samples: Sequence[tuple[int, int | None]], times_ns: np.ndarray) -> np.ndarray:
    """True where a person drove: mode TELEOP after the episode had been in AUTONOMY."""
    mode, autonomy_seen = _mode_at(mode_samples, np.asarray(times_ns, dtype=np.int64))
    return (mode == MODE_TELEOP) & autonomy_seen


def intervention_segments(mode_samples: Sequence[tuple[int, int | None]], end_ns: int) -> list[tuple[int, int]]:
    """[start, end) times of the interventions (see :func:`intervention_mask`) up to ``end_ns``."""
    samples = sorted((t, m) for t, m in mode_samples if m is not None and t <= end_ns)
    if not samples:
        return []
    times = np.array([t for t, _ in samples], dtype=np.int64)
    flags = intervention_mask(samples, times)
    segments: list[tuple[int, int]] = []
    start = None
    for t, flag in zip(times.tolist(), flags.tolist()):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            segments.append((start, t))
            start = None
    if start is not None:
        segments.append((start, end_ns))
    return segments


@dataclass(frozen=True)
class BoundaryAction:
    """End the current episode (``kind == "stop"``, with an outcome) or begin one (``"start"``)."""

    kind: str
    reason: str
    outcome: str = "unknown"


class EpisodeBoundaries:
    """When the recorder ends and begins episodes by itself; only transitions it sees count.

    - Sim reset (``split_on_sim_reset``): the TaskStatus episode counter changes -> end the
      current episode with the previous sim episode's success as its outcome, begin the next.
    - Modes (``split_on_mode_change``): entering TELEOP or AUTONOMY begins an episode; leaving
      both ends it, and so does TELEOP -> AUTONOMY (a demonstration ended, a rollout begins).
      AUTONOMY -> TELEOP stays in the episode: it is an intervention.
    """

    def __init__(self, split_on_sim_reset: bool = False, split_on_mode_change: bool = False) -> None:
        self.split_on_sim_reset = split_on_sim_reset
        self.split_on_mode_change = split_on_mode_change
        self.sim_episode: int | None = None
        self.sim_success = False
        self.mode: int | None = None

    def on_task_status(self, episode: int, success: bool, recording: bool) -> list[BoundaryAction]:
        previous, previous_success = self.sim_episode, self.sim_success
        self.sim_episode, self.sim_success = episode, success
        if not self.split_on_sim_reset or previous is None or episode == previous:
            return []
        stop = [BoundaryAction("stop", "sim_reset", "success" if previous_success else "failure")] if recording else []
        return stop + [BoundaryAction("start", "sim_reset")]

    def on_mode(self, mode: int, recording: bool) -> list[BoundaryAction]:
        previous, self.mode = self.mode, mode
        if not self.split_on_mode_change or previous is None or mode == previous:
            return []
        reason = f"mode:{MODE_NAMES[mode] if 0 <= mode < len(MODE_NAMES) else mode}"
        actions = []
        if recording and (mode not in ACTIVE_MODES or (previous == MODE_TELEOP and mode == MODE_AUTONOMY)):
            actions.append(BoundaryAction("stop", reason))
            recording = False
        if not recording and mode in ACTIVE_MODES:
            actions.append(BoundaryAction("start", reason))
        return actions


# --------------------------------------------------------------------------------------------
# Labels


@dataclass
class EpisodeLabels:
    """What the recorder knows about an episode besides its messages (``wam_episode.yaml``)."""

    robot: str = ""
    task: str = ""
    instruction: str = ""
    operator_name: str = ""
    outcome: str = "unknown"  # "unknown", "success" or "failure"
    notes: str = ""
    state: str = "recording"  # "recording", "closed" or "failed"
    start_ns: int = 0  # recorder clock (sim time in simulation)
    stop_ns: int = 0
    start_reason: str = ""  # "service", "sim_reset", "mode:TELEOP", ...
    stop_reason: str = ""
    error: str = ""
    sim_episode: int = -1  # TaskStatus.episode at the start; -1 when unknown
    seed: int | None = None
    intervention_segments_ns: list[list[int]] = field(default_factory=list)  # [start, end] pairs
    message_counts: dict[str, int] = field(default_factory=dict)
    dropped_counts: dict[str, int] = field(default_factory=dict)


OUTCOMES = ("unknown", "success", "failure")


def write_labels(bag_dir: Path | str, labels: EpisodeLabels) -> None:
    """Write ``wam_episode.yaml`` atomically (temp file + rename)."""
    path = Path(bag_dir) / LABELS_FILE
    if labels.outcome not in OUTCOMES:
        raise BagError(f"{path}: outcome must be one of {', '.join(OUTCOMES)}, got {labels.outcome!r}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(yaml.safe_dump(asdict(labels), sort_keys=False))
        os.replace(tmp, path)
    except OSError as error:
        with suppress(OSError):
            tmp.unlink()
        kind = DiskFullError if error.errno in _DISK_FULL_ERRNOS else BagError
        raise kind(f"{path}: cannot write labels: {error.strerror or error}") from None


def read_labels(bag_dir: Path | str) -> EpisodeLabels | None:
    """The episode's labels, or None for a bag without ``wam_episode.yaml`` (e.g. from ``ros2 bag record``)."""
    path = Path(bag_dir) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise BagError(f"{path}: invalid YAML ({error})") from None
    known = set(EpisodeLabels.__dataclass_fields__)
    if not isinstance(data, dict):
        raise BagError(f"{path}: expected a mapping")
    return EpisodeLabels(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int  # the recorder's receive time
    data: bytes


@dataclass
class _ScanResult:
    schemas: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, definition)
    channels: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (topic, schema id)
    counts: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    end_offset: int = 0  # end of the last complete record read
    complete: bool = False  # reached the data-end record or the footer
    stop_reason: str = ""


def _string(buffer: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buffer, offset)
    end = offset + 4 + length
    if end > len(buffer):
        raise ValueError("string runs past its record")
    return buffer[offset + 4 : end].decode(), end


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        from backports import zstd

        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _records(buffer: bytes) -> Iterator[tuple[int, bytes]]:
    """(opcode, body) of the records packed in a chunk."""
    offset = 0
    while offset < len(buffer):
        opcode, length = struct.unpack_from("<BQ", buffer, offset)
        body = buffer[offset + 9 : offset + 9 + length]
        if len(body) != length:
            raise ValueError("record runs past its chunk")
        yield opcode, body
        offset += 9 + length


def _scan_mcap(path: Path, result: _ScanResult) -> Iterator[tuple[int, int, bytes]]:
    """Read an MCAP file record by record, stopping cleanly at the first incomplete record.

    Yields (channel id, log time [ns], data) per message in file order and fills ``result``
    with schemas, channels and counts as they appear. Raises :class:`BagError` for a file that
    is not MCAP or a damaged record.
    """
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if stream.read(8) != MCAP_MAGIC:
            raise BagError(f"{path}: not an MCAP file (bad magic)")
        offset = result.end_offset = 8
        while True:
            header = stream.read(9)
            if len(header) < 9 or offset + 9 + struct.unpack_from("<Q", header, 1)[0] > size:
                result.stop_reason = f"the file ends inside the record at byte {offset} (the bag was not closed)"
                return
            opcode, length = struct.unpack("<BQ", header)
            if opcode in (0x02, 0x0F):  # footer or data end: what follows is the index
                result.complete = True
                return
            if opcode == 0 or opcode > 0x0F:
                raise BagError(f"{path}: damaged record at byte {offset} (opcode {opcode:#x})")
            body = stream.read(length)
            try:
                if opcode == 0x06:
                    _, _, uncompressed_size, crc = struct.unpack_from("<QQQI", body)
                    compression, end = _string(body, 28)
                    (records_length,) = struct.unpack_from("<Q", body, end)
                    records = _decompress(body[end + 8 : end + 8 + records_length], compression)
                    if len(records) != uncompressed_size or (crc and zlib.crc32(records) != crc):
                        raise ValueError("chunk size or checksum mismatch")
                    inner: Iterator[tuple[int, bytes]] = _records(records)
                else:
                    inner = iter([(opcode, body)])
                for inner_opcode, inner_body in inner:
                    if inner_opcode == 0x03:
                        (sid,) = struct.unpack_from("<H", inner_body)
                        name, end = _string(inner_body, 2)
                        _, end = _string(inner_body, end)
                        (definition_length,) = struct.unpack_from("<I", inner_body, end)
                        result.schemas[sid] = (name, inner_body[end + 4 : end + 4 + definition_length].decode())
                    elif inner_opcode == 0x04:
                        cid, sid = struct.unpack_from("<HH", inner_body)
                        result.channels[cid] = (_string(inner_body, 4)[0], sid)
                    elif inner_opcode == 0x05:
                        cid, _, log_time, _ = struct.unpack_from("<HIQQ", inner_body)
                        if cid not in result.channels:
                            raise ValueError(f"message on unknown channel {cid}")
                        result.counts[cid] += 1
                        yield cid, log_time, inner_body[22:]
            except (ValueError, struct.error, UnicodeDecodeError, LookupError) as error:
                raise BagError(f"{path}: damaged record at byte {offset}: {error}") from None
            offset = result.end_offset = offset + 9 + length


def _mcap_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.mcap"))
    if not files:
        other = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise BagError(f"{path}: no MCAP file in the bag directory (found: {', '.join(other) or 'nothing'})")
    return files


class BagReader:
    """Messages of one bag (a rosbag2 directory or a bare ``.mcap`` file), closed or not.

    Use as a context manager. :attr:`topics` maps topic -> (type, count); :attr:`problems`
    lists what was wrong with the bag (empty for a properly closed one); :meth:`messages`
    yields :class:`BagMessage` (time order for closed bags, file order for scanned ones) and
    :meth:`deserialize` decodes one with the definitions stored in the bag.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        self.problems: list[str] = []
        self.topics: dict[str, tuple[str, int]] = {}
        self._definitions: dict[str, str] = {}
        self._reader: Reader | None = None
        self._scan_files: list[Path] = []
        self.typestore = get_typestore(Stores.EMPTY)

    def __enter__(self) -> "BagReader":
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        indexed_problem = ""
        if (self.path / "metadata.yaml").is_file() or self.path.suffix == ".mcap":
            try:
                reader = Reader(self.path)
                reader.open()
                self._reader = reader
            except (ReaderError, OSError, KeyError, ValueError) as error:
                indexed_problem = str(error)
        else:
            indexed_problem = "no metadata.yaml (the bag was not closed)"
        if self._reader is not None:
            for connection in self._reader.connections:
                self._definitions[connection.msgtype] = connection.msgdef.data
                msgtype, count = self.topics.get(connection.topic, (connection.msgtype, 0))
                self.topics[connection.topic] = (msgtype, count + connection.msgcount)
        else:
            self._open_scanned(indexed_problem)
        for msgtype, definition in self._definitions.items():
            if not definition:
                raise BagError(f"{self.path}: no definition stored for {msgtype}")
            try:
                self.typestore.register(get_types_from_msg(definition, msgtype))
            except TypesysError as error:
                raise BagError(f"{self.path}: definition of {msgtype}: {error}") from None

    def _open_scanned(self, indexed_problem: str) -> None:
        for mcap in _mcap_files(self.path):
            result = _ScanResult()
            for _ in _scan_mcap(mcap, result):
                pass
            if not result.complete and not result.counts:
                raise BagError(f"{mcap}: no complete chunk to recover ({result.stop_reason or indexed_problem})")
            if not result.complete:
                self.problems.append(f"{mcap.name}: {result.stop_reason}; read up to byte {result.end_offset} "
                                     f"of {mcap.stat().st_size}")
            self._scan_files.append(mcap)
            for cid, (topic, sid) in result.channels.items():
                if sid not in result.schemas:
                    raise BagError(f"{mcap}: channel {topic!r} refers to a missing schema {sid}")
                msgtype, definition = result.schemas[sid]
                self._definitions[msgtype] = definition
                _, count = self.topics.get(topic, (msgtype, 0))
                self.topics[topic] = (msgtype, count + result.counts.get(cid, 0))
        self.problems.insert(0, f"read by scanning: {indexed_problem}")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
        wanted = set(self.topics if topics is None else topics)
        if self._reader is not None:
            connections = [c for c in self._reader.connections if c.topic in wanted]
            if not connections:
                return
            try:
                for connection, timestamp, data in self._reader.messages(connections):
                    yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(data))
            except Exception as error:  # noqa: BLE001 - rosbags raises assorted errors on damaged chunks
                raise BagError(f"{self.path}: damaged bag: {type(error).__name__}: {error}") from None
            return
        for mcap in self._scan_files:
            result = _ScanResult()
            for cid, log_time, data in _scan_mcap(mcap, result):
                topic, sid = result.channels[cid]
                if topic in wanted:
                    yield BagMessage(topic, result.schemas[sid][0], log_time, data)

    def deserialize(self, message: BagMessage) -> Any:
        """Decode a message; :class:`BagError` naming topic and time when its bytes are damaged."""
        try:
            return self.typestore.deserialize_cdr(message.data, message.msgtype)
        except Exception as error:  # noqa: BLE001 - any decoding failure means damaged data
            raise BagError(f"{self.path}: cannot decode a {message.msgtype} on {message.topic} at "
                           f"t={message.timestamp_ns} ns: {type(error).__name__}: {error}") from None
