"""Episode bags: rosbag2 directories with MCAP storage, written from raw CDR bytes (no rclpy).

Writing (:class:`BagWriter`, :class:`BagRecording`): the `mcap` package's ``Writer`` writes the
MCAP file (profile ``ros2``, ``ros2msg`` schemas, ``cdr`` channels carrying the publishers' QoS
and the RIHS01 type hash as rosbag2 stores them, uncompressed chunks with CRCs) and this module
writes ``metadata.yaml`` at close as rosbag2 (version 9) does, so rosbags' standard reader and
the MCAP project's own reader open the bag. Messages arrive already serialized (an rclpy ``raw=True`` subscription)
and are written as they are. Crash safety comes from MCAP chunking:

- the Writer closes a chunk once it holds 1 MiB, and :class:`BagWriter` closes it earlier when
  it is ``chunk_interval_s`` old (``Writer.flush``). The Writer writes a closed chunk to the file
  object at once, so the file position moves; :class:`BagWriter` watches it and hands the bytes
  to the OS right then. A process killed with SIGKILL so leaves a file whose complete chunks are
  all on disk, which :class:`BagReader` reads (see below);
- a failed write (disk full, I/O error) cuts the file back to the end of the last chunk handed to
  the OS and then closes the bag properly (summary, footer, ``metadata.yaml``): as the failed
  Writer still counts the lost chunk, a fresh Writer replays the file's records into a sink that
  only counts bytes and, landing exactly on the file's end, appends its summary to the file.
  That needs no room beyond the summary; if even that does not fit, the file is left ending at
  a chunk boundary, which :class:`BagReader` reads in full. The error is raised
  (:class:`DiskFullError` or :class:`BagError`) once the bag is closed.

A bag directory is locked (``flock``) while its writer has it open, so :func:`repair_bag` never
touches a bag that is still being recorded; the lock goes with the process.

Reading (:class:`BagReader`): a closed bag goes through `rosbags`' standard reader. A bag without
``metadata.yaml`` or whose MCAP file has no footer (the recorder was killed) is read record by
record with mcap's ``StreamReader`` up to its last complete chunk; the reader says so in
:attr:`BagReader.problems`. A file that is not MCAP, or whose records are damaged (an unknown
opcode, a chunk CRC mismatch, a record that does not parse), raises a :class:`BagError` that
names the file and the byte offset.

Repair (:func:`repair_bag`): rewrites such a file with mcap's Writer up to its last complete
chunk as a finished MCAP file and writes ``metadata.yaml``, so that rosbags' standard reader opens it.

Labels (task, instruction, operator, outcome, notes, interventions) live next to the MCAP file
in ``wam_episode.yaml`` (:func:`read_labels`, :func:`write_labels`); rosbag2 tools ignore it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import queue
import shutil
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import yaml
from mcap.exceptions import (
    EndOfFile,
    InvalidMagic,
    McapError,
    RecordLengthLimitExceeded,
)
from mcap.opcode import Opcode
from mcap.records import Channel, DataEnd, Footer, Header, Message, MessageIndex, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer
from rosbags.interfaces import Nodetype, Qos
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

from wam_ros.data.episodes import SOURCE_DEMO, SOURCE_HOLD, SOURCE_OPERATOR, SOURCE_POLICY

LABELS_FILE = "wam_episode.yaml"
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


CHUNK_SIZE = 1 << 20  # bytes of records after which mcap's Writer closes a chunk
ROS_DISTRO = "kilted"  # metadata.yaml's ros_distro: the distro whose type store defines the standard types


def _lock(bag_dir: Path) -> int:
    """Take an exclusive lock on the bag directory; it holds until the descriptor is closed or the process dies."""
    try:
        fd = os.open(bag_dir, os.O_RDONLY)
    except OSError as error:
        raise _as_bag_error(error, f"{bag_dir}: cannot open the bag") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if isinstance(error, BlockingIOError):
            raise BagError(f"{bag_dir}: in use by its recorder or another repair") from None
        raise _as_bag_error(error, f"{bag_dir}: cannot lock the bag") from None
    return fd


def _as_bag_error(error: OSError, what: str) -> BagError:
    kind = DiskFullError if error.errno in _DISK_FULL_ERRNOS else BagError
    return kind(f"{what}: {error.strerror or error}")


def _qos_profiles(qos: Sequence[Qos]) -> list[dict[str, Any]]:
    """QoS profiles as rosbag2 version 9 writes them: enum names in lower case, times as sec/nsec."""
    def sec_nsec(value: Any) -> dict[str, int]:
        return {"sec": value.sec, "nsec": value.nsec}

    return [{"history": q.history.name.lower(), "depth": q.depth, "reliability": q.reliability.name.lower(),
             "durability": q.durability.name.lower(), "deadline": sec_nsec(q.deadline), "lifespan": sec_nsec(q.lifespan),
             "liveliness": q.liveliness.name.lower(), "liveliness_lease_duration": sec_nsec(q.liveliness_lease_duration),
             "avoid_ros_namespace_conventions": q.avoid_ros_namespace_conventions} for q in qos]


def _channel_metadata(spec: TopicSpec) -> dict[str, str]:
    """What rosbag2 stores with an MCAP channel (and reads back when it reindexes a bag)."""
    return {"offered_qos_profiles": yaml.safe_dump(_qos_profiles(spec.offered_qos), sort_keys=False),
            "topic_type_hash": spec.type_hash}


@dataclass
class _Tally:
    """Messages per topic and the span of their timestamps."""

    counts: dict[str, int] = field(default_factory=dict)
    start_ns: int = 2**64
    end_ns: int = 0

    def add(self, topic: str, timestamp_ns: int) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.start_ns = min(self.start_ns, timestamp_ns)
        self.end_ns = max(self.end_ns, timestamp_ns)

    def absorb(self, other: _Tally) -> None:
        for topic, count in other.counts.items():
            self.counts[topic] = self.counts.get(topic, 0) + count
        self.start_ns = min(self.start_ns, other.start_ns)
        self.end_ns = max(self.end_ns, other.end_ns)

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def span(self) -> tuple[int, int]:
        """(first, last) timestamp; (0, 0) without messages."""
        return (self.start_ns, self.end_ns) if self.messages else (0, 0)


def _write_metadata(bag_dir: Path, mcap_name: str, topics: Sequence[dict[str, Any]], tally: _Tally) -> None:
    """Write ``metadata.yaml`` as rosbag2 writes version 9 (Jazzy and later), atomically (temp file + rename).

    Fields: ``version`` 9; ``storage_identifier`` mcap; ``relative_file_paths`` and ``files`` (path,
    starting time, duration and message count per file) name the one MCAP file; ``starting_time``
    and ``duration`` span the first to the last message [ns]; ``message_count``;
    ``topics_with_message_count``: per topic its name, type, ``serialization_format`` (cdr),
    ``offered_qos_profiles`` (the publishers' QoS, enum names in lower case) and
    ``type_description_hash`` (RIHS01), with its message count; ``compression_format`` and
    ``compression_mode`` empty (chunks are not compressed); ``custom_data`` null; ``ros_distro``.
    """
    start, end = tally.span()
    count = tally.messages
    info = {
        "version": 9,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": end - start},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": list(topics),
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [mcap_name],
        "files": [{"path": mcap_name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": end - start}, "message_count": count}],
        "custom_data": None,
        "ros_distro": ROS_DISTRO,
    }
    path = bag_dir / "metadata.yaml"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
        os.replace(tmp, path)
    except OSError:
        with suppress(OSError):
            tmp.unlink()
        raise


def _topic_entry(topic: str, msgtype: str, encoding: str, metadata: dict[str, str], count: int) -> dict[str, Any]:
    """One ``topics_with_message_count`` entry, from what the MCAP channel stores (see :func:`_channel_metadata`)."""
    return {"topic_metadata": {"name": topic, "type": msgtype, "serialization_format": encoding,
                               "offered_qos_profiles": yaml.safe_load(metadata.get("offered_qos_profiles") or "[]"),
                               "type_description_hash": metadata.get("topic_type_hash", "")},
            "message_count": count}


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

    The directory is created at once and must not exist (:class:`EpisodeExistsError`); it stays
    locked until the bag is closed. A failed write raises :class:`DiskFullError` (or
    :class:`BagError` for other I/O errors) after cutting the file back to its last complete chunk
    and closing the bag there.
    """

    def __init__(self, path: Path | str, chunk_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.chunk_interval_s = chunk_interval_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            raise EpisodeExistsError(f"{self.path} exists already; bags are never overwritten") from None
        except OSError as error:
            raise _as_bag_error(error, f"{self.path}: cannot create the bag") from None
        self._lock_fd = _lock(self.path)
        try:
            self._file = open(self.mcap_path, "xb")  # noqa: SIM115 - open until close()
            self._mcap: Writer | None = Writer(self._file, chunk_size=CHUNK_SIZE, compression=CompressionType.NONE)
            self._mcap.start(profile="ros2")
            self._file.flush()
        except OSError as error:
            os.close(self._lock_fd)
            raise _as_bag_error(error, f"{self.path}: cannot create the bag") from None
        self._topics: dict[str, TopicSpec] = {}
        self._channels: dict[str, int] = {}  # topic -> channel id
        self._schemas: dict[str, int] = {}  # message type -> schema id
        self._kept = _Tally()  # messages in chunks handed to the OS
        self._pending = _Tally()  # messages mcap's Writer holds in its open chunk
        self._kept_bytes = self._file.tell()  # where the last chunk handed to the OS ends
        self._last_flush_s = time.monotonic()
        self.error: BagError | None = None
        self.summary: BagSummary | None = None

    @property
    def is_open(self) -> bool:
        return self._mcap is not None

    @property
    def mcap_path(self) -> Path:
        return self.path / f"{self.path.name}.mcap"

    def add_topic(self, spec: TopicSpec) -> None:
        if spec.topic in self._topics:
            return

        def register(writer: Writer) -> None:
            if spec.msgtype not in self._schemas:
                self._schemas[spec.msgtype] = writer.register_schema(spec.msgtype, "ros2msg", spec.msgdef.encode())
            self._channels[spec.topic] = writer.register_channel(spec.topic, "cdr", self._schemas[spec.msgtype],
                                                                 _channel_metadata(spec))
            self._topics[spec.topic] = spec

        self._guard(register)

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialized message; its chunk goes to the OS when full or ``chunk_interval_s`` old."""
        channel = self._channels.get(topic)
        if channel is None:
            raise BagError(f"{self.path}: topic {topic!r} was not added to the bag")
        timestamp_ns = int(timestamp_ns)
        self._pending.add(topic, timestamp_ns)  # before: the Writer may close the chunk with this message in it
        self._guard(lambda writer: writer.add_message(channel, timestamp_ns, data, timestamp_ns))
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush_s >= self.chunk_interval_s:
            self.flush()

    def flush(self) -> None:
        """Close the open chunk and hand it to the OS: a crash after this loses none of it."""
        if self.is_open:
            self._guard(Writer.flush)
        self._last_flush_s = time.monotonic()

    def _guard(self, action: Callable[[Writer], Any]) -> None:
        """Run ``action`` on mcap's Writer and hand a chunk it wrote to the OS; on an I/O error end the bag."""
        if self.error is not None:
            raise self.error
        if self._mcap is None:
            raise BagError(f"{self.path}: the bag is closed")
        try:
            action(self._mcap)
            if self._file.tell() != self._kept_bytes:  # the Writer closed a chunk (when full, or flushed)
                self._file.flush()
                self._kept_bytes = self._file.tell()
                self._kept.absorb(self._pending)
                self._pending = _Tally()
        except OSError as error:
            self.error = _as_bag_error(error, f"{self.path}: write failed")
            self._close_at_last_chunk()
            raise self.error from None

    def _close_at_last_chunk(self) -> None:
        """After a failed write: cut the file back to the end of its last complete chunk and close the bag there."""
        self._mcap = None
        fd = os.dup(self._file.fileno())
        try:
            with suppress(OSError):
                self._file.close()  # may flush buffered bytes of the failed chunk: they are cut off next
            os.ftruncate(fd, self._kept_bytes)
            _finish_in_place(self.mcap_path)
            finished = True
        except (OSError, BagError):
            with suppress(OSError):
                os.ftruncate(fd, self._kept_bytes)  # the summary did not fit: end with the last chunk again
            finished = False
        finally:
            os.close(fd)
        self._release(finished)

    def _release(self, finished: bool) -> None:
        """Write ``metadata.yaml`` for a finished MCAP file, unlock the bag and set :attr:`summary`."""
        try:
            if finished:
                topics = [_topic_entry(topic, spec.msgtype, "cdr", _channel_metadata(spec), self._kept.counts.get(topic, 0))
                          for topic, spec in self._topics.items()]
                _write_metadata(self.path, self.mcap_path.name, topics, self._kept)
        except OSError as error:
            self.error = self.error or _as_bag_error(error, f"{self.path}: cannot write metadata.yaml")
            finished = False
        finally:
            os.close(self._lock_fd)
        start, end = self._kept.span()
        size = self.mcap_path.stat().st_size if self.mcap_path.exists() else 0
        self.summary = BagSummary(self.path, {topic: self._kept.counts.get(topic, 0) for topic in self._topics}, start, end,
                                  size, finished, str(self.error) if self.error else "")

    def close(self) -> BagSummary:
        """Flush, write the MCAP summary and ``metadata.yaml``; returns what the bag holds."""
        with suppress(BagError):  # a failed flush has closed the bag at its last chunk already
            self.flush()
        if self.summary is not None:
            return self.summary
        assert self._mcap is not None
        try:
            self._mcap.finish()
            self._file.flush()
        except OSError as error:
            self.error = _as_bag_error(error, f"{self.path}: cannot close the bag")
            self._close_at_last_chunk()
        else:
            self._mcap = None
            self._file.close()
            self._release(finished=True)
        assert self.summary is not None
        return self.summary


class _Sink:
    """A write-only stream for mcap's Writer: counts the bytes, and passes them on to :attr:`target` once it is set."""

    def __init__(self) -> None:
        self.position = 0
        self.target: BinaryIO | None = None

    def write(self, data: bytes) -> int:
        if self.target is not None:
            self.target.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()


def _finish_in_place(path: Path) -> None:
    """Append summary and footer to a file of :class:`BagWriter` that ends with a complete chunk.

    mcap's Writer cannot take up an existing file, so the file's records are replayed into a
    Writer whose output only counts bytes: when that lands exactly on the end of the file, the
    Writer holds the file's schemas, channels, chunk indexes and statistics, and it appends its
    summary to the file. :class:`BagError` (and the file unchanged) when it does not land there.
    """
    sink = _Sink()
    writer = Writer(sink, chunk_size=CHUNK_SIZE, compression=CompressionType.NONE)
    with open(path, "rb") as stream:
        try:
            for record in StreamReader(stream).records:
                if isinstance(record, Header):
                    writer.start(record.profile, record.library)
                elif isinstance(record, Schema):
                    writer.register_schema(record.name, record.encoding, record.data)
                elif isinstance(record, Channel):
                    writer.register_channel(record.topic, record.message_encoding, record.schema_id, record.metadata)
                elif isinstance(record, Message):
                    writer.add_message(record.channel_id, record.log_time, record.data, record.publish_time, record.sequence)
                elif isinstance(record, MessageIndex):
                    writer.flush()  # the chunk before the message indexes ends here
        except EndOfFile:  # the file ends after a chunk: no data end, no footer
            pass
        except (McapError, ValueError, struct.error) as error:
            raise BagError(f"{path}: cannot finish the file in place: {error}") from None
        size = os.fstat(stream.fileno()).st_size
    if sink.tell() != size:
        raise BagError(f"{path}: cannot finish the file in place: the replay ends at byte {sink.tell()} of {size}")
    with open(path, "r+b") as target:
        target.seek(size)
        sink.target = target
        writer.finish()


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
class ModeChange:
    """The bridge entering a mode: when (its ``mode_stamp``), which mode, who asked for it and why."""

    stamp_ns: int
    mode: int
    requester: str = ""
    reason: str = ""


def mode_changes(statuses: Sequence[tuple[int, int, int, str, str]]) -> list[ModeChange]:
    """Recorded SafetyStatus messages as (receive time, mode_stamp [ns], mode, requester, reason)
    -> one :class:`ModeChange` per mode entered, in time order.

    The bridge's own ``mode_stamp`` times the change, not the arrival of the status; the periodic
    statuses repeat it and add nothing. A zero stamp (the bridge's mode since start-up) falls back
    to the receive time of the first status of that mode in a row: its repeats, received after the
    next mode's stamp (a status in flight during the switch), are not a change back.
    """
    changes: dict[tuple[int, int], ModeChange] = {}
    previous_mode: int | None = None
    for received, stamp, mode, requester, reason in sorted(statuses, key=lambda status: status[0]):
        repeat, previous_mode = mode == previous_mode, mode
        if stamp <= 0 and repeat:
            continue
        when = stamp if stamp > 0 else received
        changes.setdefault((when, mode), ModeChange(when, mode, requester, reason))
    ordered: list[ModeChange] = []
    for change in sorted(changes.values(), key=lambda c: c.stamp_ns):
        if not ordered or ordered[-1].mode != change.mode:
            ordered.append(change)
    return ordered


def frame_sources(changes: Sequence[ModeChange], times_ns: np.ndarray) -> np.ndarray:
    """Per time, who drove the arm (index into :data:`wam_ros.data.episodes.SOURCES`): policy in
    AUTONOMY, operator in TELEOP, hold otherwise (IDLE, HOLD, ESTOP, or before the first change);
    all "demo" when there are no mode changes at all (no bridge status recorded)."""
    times_ns = np.asarray(times_ns, dtype=np.int64)
    if not changes:
        return np.full(len(times_ns), SOURCE_DEMO, np.int8)
    mode, _ = _mode_at([(c.stamp_ns, c.mode) for c in changes], times_ns)
    return np.select([mode == MODE_AUTONOMY, mode == MODE_TELEOP], [SOURCE_POLICY, SOURCE_OPERATOR], SOURCE_HOLD).astype(np.int8)


@dataclass(frozen=True)
class TakeoverSpan:
    """An intervention (TELEOP after AUTONOMY) with who took over, why, and how it ended."""

    start_ns: int
    end_ns: int
    requester: str
    reason: str
    ended_by: str = ""  # the requester of the next mode ("" when the episode ended first)
    end_reason: str = ""
    handed_back: bool = False  # it ended in AUTONOMY

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def takeover_spans(changes: Sequence[ModeChange], end_ns: int) -> list[TakeoverSpan]:
    """The interventions among ``changes`` (see :func:`intervention_mask`), the last one cut at ``end_ns``."""
    spans: list[TakeoverSpan] = []
    autonomy_seen = False
    for index, change in enumerate(changes):
        autonomy_seen = autonomy_seen or change.mode == MODE_AUTONOMY
        if change.mode != MODE_TELEOP or not autonomy_seen or change.stamp_ns >= end_ns:
            continue
        following = changes[index + 1] if index + 1 < len(changes) else None
        if following is not None and following.stamp_ns < end_ns:
            spans.append(TakeoverSpan(change.stamp_ns, following.stamp_ns, change.requester, change.reason, following.requester,
                                      following.reason, following.mode == MODE_AUTONOMY))
        else:
            spans.append(TakeoverSpan(change.stamp_ns, end_ns, change.requester, change.reason))
    return spans


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


_OPCODES = frozenset(Opcode)
_MAGIC_SIZE = 8  # an MCAP file starts with 8 bytes of magic, then its header record


class _Scan:
    """One pass over an MCAP file with mcap's StreamReader, up to its last complete record.

    Iterating yields the Schema, Channel and Message records in file order (those of a chunk once
    the whole chunk is read and its CRC checked) and fills in :attr:`schemas`, :attr:`channels`
    and :attr:`counts` on the way. It stops at the data end (the file was closed) or where the
    file ends inside a record (it was not; :attr:`stop_reason` says where), and raises
    :class:`BagError` naming the byte offset for a file that is not MCAP or a damaged record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.counts: Counter[int] = Counter()  # messages per channel id
        self.end_offset = 0  # end of the last complete record
        self.complete = False  # reached the data end (or the footer)
        self.stop_reason = ""

    def __iter__(self) -> Iterator[Schema | Channel | Message]:
        with open(self.path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            records = StreamReader(stream, validate_crcs=True, record_size_limit=size).records
            start = checked = 0  # where the record read last (the chunk of the records it yields) begins; last checked
            while True:
                offset = stream.tell()
                if offset != checked:  # the reader goes on with the record here
                    checked = offset
                    self._check_opcode(stream, offset)
                try:
                    record = next(records, None)
                except InvalidMagic:
                    raise BagError(f"{self.path}: not an MCAP file (bad magic)") from None
                except (McapError, ValueError, struct.error) as error:
                    cut = isinstance(error, RecordLengthLimitExceeded) or (
                        stream.tell() >= size and isinstance(error, (EndOfFile, struct.error, UnicodeDecodeError)))
                    if not cut:
                        raise BagError(f"{self.path}: damaged record at byte {offset}: {error}") from None
                    if offset == 0:  # the first record, after the magic
                        self._check_opcode(stream, _MAGIC_SIZE)
                    self.stop_reason = (f"the file ends inside the record at byte {offset}" if offset < size else
                                        f"the file ends at byte {size}, before its summary") + " (the bag was not closed)"
                    return
                if stream.tell() != offset:
                    start, self.end_offset = offset, stream.tell()
                if record is None or isinstance(record, (DataEnd, Footer)):
                    self.complete = True
                    return
                if isinstance(record, Schema):
                    self.schemas[record.id] = record
                elif isinstance(record, Channel):
                    if record.schema_id not in self.schemas:
                        raise BagError(f"{self.path}: damaged record at byte {start}: channel {record.topic!r} refers to "
                                       f"a missing schema {record.schema_id}")
                    self.channels[record.id] = record
                elif isinstance(record, Message):
                    if record.channel_id not in self.channels:
                        raise BagError(f"{self.path}: damaged record at byte {start}: message on unknown channel {record.channel_id}")
                    self.counts[record.channel_id] += 1
                else:
                    continue
                yield record

    def _check_opcode(self, stream: BinaryIO, offset: int) -> None:
        """The stream reader skips records of unknown kinds (newer MCAP versions); here that means damage."""
        opcode = os.pread(stream.fileno(), 1, offset)
        if opcode and opcode[0] not in _OPCODES:
            raise BagError(f"{self.path}: damaged record at byte {offset} (opcode {opcode[0]:#x})")


def _mcap_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.mcap"))
    if not files:
        other = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise BagError(f"{path}: no MCAP file in the bag directory (found: {', '.join(other) or 'nothing'})")
    return files


def _open_indexed(path: Path) -> tuple[Reader | None, str]:
    """rosbags' standard reader, open on ``path``, and ''; or None and why it cannot open the bag."""
    if not ((path / "metadata.yaml").is_file() or path.suffix == ".mcap"):
        return None, "no metadata.yaml (the bag was not closed)"
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, KeyError, ValueError) as error:
        return None, str(error)
    return reader, ""


def unclosed_reason(bag_dir: Path | str) -> str:
    """Why rosbags' standard reader cannot open a bag ('' when it can); :func:`repair_bag` finishes such a bag."""
    reader, problem = _open_indexed(Path(bag_dir))
    if reader is not None:
        reader.close()
    return problem


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
        self._reader, indexed_problem = _open_indexed(self.path)
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
            scan = _Scan(mcap)
            for _ in scan:
                pass
            if not scan.complete and not scan.counts:
                raise BagError(f"{mcap}: no complete chunk to recover ({scan.stop_reason or indexed_problem})")
            if not scan.complete:
                self.problems.append(f"{mcap.name}: {scan.stop_reason}; read up to byte {scan.end_offset} "
                                     f"of {mcap.stat().st_size}")
            self._scan_files.append(mcap)
            for cid, channel in scan.channels.items():
                schema = scan.schemas[channel.schema_id]
                self._definitions[schema.name] = schema.data.decode()
                _, count = self.topics.get(channel.topic, (schema.name, 0))
                self.topics[channel.topic] = (schema.name, count + scan.counts[cid])
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
            scan = _Scan(mcap)
            for record in scan:
                if isinstance(record, Message):
                    channel = scan.channels[record.channel_id]
                    if channel.topic in wanted:
                        yield BagMessage(channel.topic, scan.schemas[channel.schema_id].name, record.log_time, record.data)

    def deserialize(self, message: BagMessage) -> Any:
        """Decode a message; :class:`BagError` naming topic and time when its bytes are damaged."""
        try:
            return self.typestore.deserialize_cdr(message.data, message.msgtype)
        except Exception as error:  # noqa: BLE001 - any decoding failure means damaged data
            raise BagError(f"{self.path}: cannot decode a {message.msgtype} on {message.topic} at "
                           f"t={message.timestamp_ns} ns: {type(error).__name__}: {error}") from None


# --------------------------------------------------------------------------------------------
# Repair


def _rihs01(schema: Schema) -> str:
    """RIHS01 hash of a ros2msg schema, for channels that do not store it (bags of older recorders)."""
    typestore = get_typestore(Stores.EMPTY)
    try:
        typestore.register(get_types_from_msg(schema.data.decode(), schema.name))
        return typestore.hash_rihs01(schema.name)
    except (TypesysError, KeyError, ValueError) as error:
        raise BagError(f"cannot hash the definition of {schema.name}: {error}") from None


def _rewrite(source: Path, target: Path) -> tuple[_Tally, list[dict[str, Any]]]:
    """Copy what :class:`_Scan` reads of ``source`` into a finished MCAP file ``target``; its tally and topics."""
    scan = _Scan(source)
    schemas: dict[int, int] = {}  # id in source -> id in target
    channels: dict[int, int] = {}
    tally = _Tally()
    with open(target, "wb") as stream:
        writer = Writer(stream, chunk_size=CHUNK_SIZE, compression=CompressionType.NONE)
        writer.start(profile="ros2")
        for record in scan:
            if isinstance(record, Schema):
                schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel):
                channels[record.id] = writer.register_channel(record.topic, record.message_encoding, schemas[record.schema_id],
                                                              record.metadata)
            else:
                writer.add_message(channels[record.channel_id], record.log_time, record.data, record.publish_time, record.sequence)
                tally.add(scan.channels[record.channel_id].topic, record.log_time)
        if not tally.messages:
            raise BagError(f"{source}: no complete chunk to recover ({scan.stop_reason or 'no messages'})")
        writer.finish()
    topics = []
    for cid, channel in scan.channels.items():
        schema = scan.schemas[channel.schema_id]
        metadata = dict(channel.metadata)
        if not metadata.get("topic_type_hash"):
            metadata["topic_type_hash"] = _rihs01(schema)
        topics.append(_topic_entry(channel.topic, schema.name, channel.message_encoding, metadata, scan.counts[cid]))
    return tally, topics


def _read_back(bag_dir: Path, expected: dict[str, int]) -> None:
    """Read every message of ``bag_dir`` with rosbags' standard reader; BagError unless the counts are ``expected``."""
    try:
        reader = Reader(bag_dir)
        reader.open()
        try:
            got = Counter(connection.topic for connection, _, _ in reader.messages())
        finally:
            reader.close()
    except Exception as error:  # noqa: BLE001 - rosbags raises assorted errors on a bad bag
        raise BagError(f"{type(error).__name__}: {error}") from None
    if got != Counter(expected):
        raise BagError(f"read {dict(got)} messages per topic, wrote {expected}")


def repair_bag(bag_dir: Path | str) -> BagSummary:
    """Finish a bag whose recorder died, so that rosbags' and rosbag2's standard readers open it.

    The MCAP file is rewritten with mcap's Writer up to its last complete chunk (what
    :class:`BagReader` reads of it) with a summary and footer, and ``metadata.yaml`` is written.
    The original file (and ``metadata.yaml``, if any) is kept as ``*.orig`` until the repaired bag
    has been read back in full with rosbags' reader; if that fails they are put back and
    :class:`BagError` is raised. A closed bag is left as it is. Needs free space for a copy of the
    bag; refuses a bag whose recorder is still writing it (the directory is locked).
    """
    path = Path(bag_dir)
    if not path.is_dir():
        raise BagError(f"{path}: not a bag directory")
    lock = _lock(path)
    try:
        reader, _ = _open_indexed(path)
        if reader is not None:
            counts: dict[str, int] = {}
            for connection in reader.connections:
                counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
            span = (reader.start_time, reader.end_time - 1) if reader.message_count else (0, 0)
            reader.close()
            return BagSummary(path, counts, *span, sum(p.stat().st_size for p in _mcap_files(path)), closed=True)
        files = _mcap_files(path)
        if len(files) != 1:
            raise BagError(f"{path}: {len(files)} MCAP files; only a bag of one file can be repaired")
        mcap = files[0]
        repaired = mcap.with_name(mcap.name + ".repaired")
        try:
            tally, topics = _rewrite(mcap, repaired)
        except BaseException:
            with suppress(OSError):
                repaired.unlink()
            raise
        kept = [(p, p.with_name(p.name + ".orig")) for p in (mcap, path / "metadata.yaml") if p.exists()]
        for original, backup in kept:
            os.replace(original, backup)
        os.replace(repaired, mcap)
        try:
            _write_metadata(path, mcap.name, topics, tally)
            _read_back(path, tally.counts)
        except (OSError, BagError) as error:
            with suppress(OSError):
                (path / "metadata.yaml").unlink()
            for original, backup in kept:
                os.replace(backup, original)
            raise BagError(f"{path}: the repaired bag did not read back ({error}); left as it was") from None
        for _, backup in kept:
            backup.unlink()
        names = [topic["topic_metadata"]["name"] for topic in topics]
        return BagSummary(path, {name: tally.counts.get(name, 0) for name in names}, *tally.span(), mcap.stat().st_size,
                          closed=True)
    except OSError as error:
        raise _as_bag_error(error, f"{path}: cannot repair the bag") from None
    finally:
        os.close(lock)
