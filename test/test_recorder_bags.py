"""Episode bags without ROS: round trip, never overwriting, SIGKILL recovery, full disk, damaged files."""
from __future__ import annotations

import dataclasses
import json
import signal
import struct
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from wam_ros.data.bags import (
    MODE_AUTONOMY,
    MODE_HOLD,
    MODE_IDLE,
    MODE_TELEOP,
    BagError,
    BagReader,
    BagRecording,
    BagWriter,
    BoundaryAction,
    DiskFullError,
    EpisodeBoundaries,
    EpisodeExistsError,
    EpisodeLabels,
    MessageDefinitions,
    intervention_segments,
    read_labels,
    repair_bag,
    unclosed_reason,
    write_labels,
)

SHARE = [Path(sys.prefix) / "share"]


@pytest.fixture(scope="module")
def definitions() -> MessageDefinitions:
    return MessageDefinitions(SHARE)


def joint_state(definitions: MessageDefinitions, i: int) -> bytes:
    ts = definitions.typestore
    definitions.lookup("sensor_msgs/msg/JointState")
    msg = ts.types["sensor_msgs/msg/JointState"](
        header=ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=i // 100, nanosec=(i % 100) * 10_000_000), frame_id=""),
        name=[f"j{k}" for k in range(3)], position=np.array([i, i + 0.5, -i], float), velocity=np.zeros(0), effort=np.zeros(0))
    return bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def big_array(definitions: MessageDefinitions, i: int, size: int) -> bytes:
    ts = definitions.typestore
    array = ts.types["std_msgs/msg/UInt8MultiArray"](
        layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.full(size, i % 251, np.uint8))
    return bytes(ts.serialize_cdr(array, "std_msgs/msg/UInt8MultiArray"))


def safety_status(definitions: MessageDefinitions, mode: int) -> bytes:
    definitions.lookup("wam_ros_interfaces/msg/SafetyStatus")
    ts = definitions.typestore
    T = ts.types
    msg = T["wam_ros_interfaces/msg/SafetyStatus"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id=""), mode=mode,
        mode_name="X", mode_requester="test", mode_reason="", mode_stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), backend="sim", active_limits=[], violations=["a: b"], violation_count=3, action_chunk_age_s=-1.0,
        joint_state_age_s=0.01, teleop_command_age_s=-1.0, watchdogs_ok=True, last_stop_reason="",
        last_stop_stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), command_source="")
    return bytes(ts.serialize_cdr(msg, "wam_ros_interfaces/msg/SafetyStatus"))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload_sizes=st.lists(st.integers(0, 100_000), min_size=1, max_size=12),
       stamps=st.lists(st.integers(0, 2**62), min_size=12, max_size=12))
def test_round_trip_keeps_every_message_byte_for_byte(tmp_path, definitions, payload_sizes, stamps):
    path = tmp_path / uuid.uuid4().hex
    state = definitions.topic("/joint_states", "sensor_msgs/msg/JointState")
    raw = definitions.topic("/raw", "std_msgs/msg/UInt8MultiArray")
    writer = BagWriter(path, chunk_interval_s=0.05)
    writer.add_topic(state)
    writer.add_topic(raw)
    sent = []
    ts = definitions.typestore
    for i, (size, stamp) in enumerate(zip(payload_sizes, stamps)):
        array = ts.types["std_msgs/msg/UInt8MultiArray"](
            layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.full(size, i % 256, np.uint8))
        for topic, data in (("/raw", bytes(ts.serialize_cdr(array, "std_msgs/msg/UInt8MultiArray"))), ("/joint_states", joint_state(definitions, i))):
            writer.write(topic, stamp, data)
            sent.append((stamp, topic, data))
    summary = writer.close()
    assert summary.closed and summary.messages == len(sent) and not summary.error
    with BagReader(path) as reader:
        assert reader.problems == []
        assert reader.topics == {"/joint_states": ("sensor_msgs/msg/JointState", len(stamps[: len(payload_sizes)])),
                                 "/raw": ("std_msgs/msg/UInt8MultiArray", len(payload_sizes))}
        got = [(m.timestamp_ns, m.topic, m.data) for m in reader.messages()]
        assert sorted(got) == sorted(sent)
        decoded = reader.deserialize(next(m for m in reader.messages(["/joint_states"])))
        assert decoded.name == ["j0", "j1", "j2"]


def test_metadata_is_rosbag2_v9_with_type_hashes(tmp_path, definitions):
    writer = BagWriter(tmp_path / "bag")
    writer.add_topic(definitions.topic("/wam/safety/status", "wam_ros_interfaces/msg/SafetyStatus"))
    writer.write("/wam/safety/status", 5, safety_status(definitions, MODE_AUTONOMY))
    writer.close()
    import yaml

    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == "mcap" and info["relative_file_paths"] == ["bag.mcap"]
    topic = info["topics_with_message_count"][0]
    assert topic["message_count"] == 1 and topic["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
    from mcap.reader import make_reader  # the MCAP project's own reader, as Foxglove reads the file

    with open(tmp_path / "bag" / "bag.mcap", "rb") as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == 1
        (schema,) = summary.schemas.values()
        (channel,) = summary.channels.values()
        assert (schema.name, schema.encoding, channel.topic, channel.message_encoding) == (
            "wam_ros_interfaces/msg/SafetyStatus", "ros2msg", "/wam/safety/status", "cdr")
        assert b"uint8 MODE_AUTONOMY=2" in schema.data and b"MSG: std_msgs/Header" in schema.data
        assert [message.data for _, _, message in reader.iter_messages()] == [safety_status(definitions, MODE_AUTONOMY)]
    from wam_ros_interfaces.msg import SafetyStatus

    assert (SafetyStatus.MODE_IDLE, SafetyStatus.MODE_TELEOP, SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD) == (
        MODE_IDLE, MODE_TELEOP, MODE_AUTONOMY, MODE_HOLD)


def test_existing_bag_is_never_overwritten(tmp_path, definitions):
    writer = BagWriter(tmp_path / "episode")
    writer.add_topic(definitions.topic("/joint_states", "sensor_msgs/msg/JointState"))
    writer.write("/joint_states", 1, joint_state(definitions, 1))
    writer.close()
    before = {p.name: p.read_bytes() for p in (tmp_path / "episode").iterdir()}
    with pytest.raises(EpisodeExistsError, match="exists already"):
        BagWriter(tmp_path / "episode")
    assert {p.name: p.read_bytes() for p in (tmp_path / "episode").iterdir()} == before


def test_unknown_message_type_is_a_clear_error(definitions):
    with pytest.raises(BagError, match="no_such_pkg/msg/Thing.msg"):
        definitions.lookup("no_such_pkg/msg/Thing")


KILLED_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {test_dir!r})
    from pathlib import Path
    from test_recorder_bags import SHARE, joint_state
    from wam_ros.data.bags import BagWriter, MessageDefinitions
    definitions = MessageDefinitions(SHARE)
    writer = BagWriter(Path(sys.argv[1]), chunk_interval_s=0.05)
    writer.add_topic(definitions.topic("/joint_states", "sensor_msgs/msg/JointState"))
    size, i = writer.mcap_path.stat().st_size, 0
    while True:
        writer.write("/joint_states", 1_000 + i, joint_state(definitions, i))
        i += 1
        if writer.mcap_path.stat().st_size != size:  # a chunk reached the OS: report how much
            size = writer.mcap_path.stat().st_size
            print(i, flush=True)
""")


def test_sigkilled_writer_leaves_a_bag_readable_up_to_its_last_chunk(tmp_path, definitions):
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER.format(test_dir=str(Path(__file__).parent)))
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed")], stdout=subprocess.PIPE, text=True)
    try:
        flushed = 0
        for line in process.stdout:  # type: ignore[union-attr]
            flushed = int(line)
            if flushed >= 300:
                break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (tmp_path / "killed" / "metadata.yaml").exists()
    with BagReader(tmp_path / "killed") as reader:
        assert any("not closed" in p for p in reader.problems), reader.problems
        got = list(reader.messages())
    assert len(got) >= flushed
    assert [m.timestamp_ns for m in got] == [1_000 + i for i in range(len(got))]
    assert [m.data for m in got[:50]] == [joint_state(definitions, i) for i in range(50)]

    summary = repair_bag(tmp_path / "killed")  # what the reader recovered, as a bag every tool opens
    assert summary.closed and summary.message_counts == {"/joint_states": len(got)}
    assert standard_read(tmp_path / "killed") == [("/joint_states", m.timestamp_ns, m.data) for m in got]
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["killed.mcap", "metadata.yaml"]


def test_truncated_or_damaged_files_give_clear_errors_or_recover(tmp_path, definitions):
    writer = BagWriter(tmp_path / "bag", chunk_interval_s=0.0)
    writer.add_topic(definitions.topic("/joint_states", "sensor_msgs/msg/JointState"))
    for i in range(200):
        writer.write("/joint_states", i + 1, joint_state(definitions, i))
        writer.flush()
    writer.close()
    mcap = tmp_path / "bag" / "bag.mcap"
    data = mcap.read_bytes()

    # Cut in the middle with metadata.yaml still present: recovered up to the cut, and said so.
    mcap.write_bytes(data[: len(data) // 2])
    with BagReader(tmp_path / "bag") as reader:
        assert reader.problems and "read by scanning" in reader.problems[0]
        count = len(list(reader.messages()))
    assert 50 < count < 200

    # Nothing complete left: a clear error.
    mcap.write_bytes(data[:40])
    with pytest.raises(BagError, match="no complete chunk"):
        BagReader(tmp_path / "bag").open()

    # Not MCAP at all.
    mcap.write_bytes(b"hello, this is not a bag" * 10)
    with pytest.raises(BagError, match="not an MCAP file"):
        BagReader(tmp_path / "bag").open()

    # A damaged record in the middle of an unclosed bag: the third chunk's opcode overwritten.
    damaged = bytearray(data[: len(data) // 2])
    offset, chunks = 8, 0
    while chunks < 3:
        opcode, length = struct.unpack_from("<BQ", damaged, offset)
        chunks += opcode == 0x06
        offset += 0 if chunks == 3 else 9 + length
    damaged[offset] = 0x00
    mcap.write_bytes(bytes(damaged))
    (tmp_path / "bag" / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=f"bag.mcap: damaged record at byte {offset}"):
        BagReader(tmp_path / "bag").open()

    # A flipped byte inside that chunk's messages: its checksum no longer matches.
    damaged = bytearray(data[: len(data) // 2])
    damaged[offset + 9 + length - 1] ^= 0xFF  # the last byte of its last message
    mcap.write_bytes(bytes(damaged))
    with pytest.raises(BagError, match=f"bag.mcap: damaged record at byte {offset}: crc validation failed"):
        BagReader(tmp_path / "bag").open()

    # Damaged message bytes: decoding names the topic and the time.
    mcap.write_bytes(data[: len(data) // 2])
    with BagReader(tmp_path / "bag") as reader:
        message = next(reader.messages())
        with pytest.raises(BagError, match="cannot decode a sensor_msgs/msg/JointState on /joint_states at t=1 ns"):
            reader.deserialize(dataclasses.replace(message, data=message.data[:4] + b"\xff" * 12))

    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "missing").open()


FILE_SIZE_LIMITED_WRITER = textwrap.dedent("""
    import json, resource, signal, sys
    sys.path.insert(0, {test_dir!r})
    from pathlib import Path
    from test_recorder_bags import SHARE, big_array
    from wam_ros.data.bags import BagWriter, DiskFullError, MessageDefinitions
    definitions = MessageDefinitions(SHARE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    writer = BagWriter(Path(sys.argv[1]), chunk_interval_s=0.0)  # a chunk per message
    writer.add_topic(definitions.topic("/big", "std_msgs/msg/UInt8MultiArray"))
    for i in range(5):
        writer.write("/big", 10 + i, big_array(definitions, i, 50_000))
    limit = writer.mcap_path.stat().st_size + 20_000  # the sixth chunk fails part way
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        writer.write("/big", 15, big_array(definitions, 5, 50_000))
    except DiskFullError as error:
        print(json.dumps({{"error": str(error), "closed": writer.summary.closed, "messages": writer.summary.messages, "limit": limit}}))
""")


def test_failed_write_closes_the_bag_at_its_last_chunk(tmp_path, definitions):
    script = tmp_path / "writer.py"
    script.write_text(FILE_SIZE_LIMITED_WRITER.format(test_dir=str(Path(__file__).parent)))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "bag")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "File too large" in report["error"] and report["closed"] and report["messages"] == 5
    assert (tmp_path / "bag" / "bag.mcap").stat().st_size <= report["limit"]
    reader = Reader(tmp_path / "bag")  # rosbags' standard reader: summary, footer and metadata.yaml are there
    reader.open()
    try:
        assert [(t, bytes(d)) for _, t, d in reader.messages()] == [(10 + i, big_array(definitions, i, 50_000)) for i in range(5)]
    finally:
        reader.close()


def standard_read(bag: Path) -> list[tuple[str, int, bytes]]:
    """Every message of ``bag`` through rosbags' standard reader (which needs metadata.yaml, summary and footer)."""
    reader = Reader(bag)
    reader.open()
    try:
        return [(connection.topic, t, bytes(data)) for connection, t, data in reader.messages()]
    finally:
        reader.close()


QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, QosTime(2147483647, 4294967295),
          QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(2147483647, 4294967295), False)


def write_closed_bag(path: Path, definitions: MessageDefinitions) -> list[tuple[str, int, bytes]]:
    """60 joint states (with the publishers' QoS) and 60 arrays of 20 kB, a chunk per 5 messages; what was written."""
    writer = BagWriter(path, chunk_interval_s=3600)
    writer.add_topic(definitions.topic("/joint_states", "sensor_msgs/msg/JointState", [QOS]))
    writer.add_topic(definitions.topic("/raw", "std_msgs/msg/UInt8MultiArray"))
    sent = []
    for i in range(120):
        topic, data = ("/joint_states", joint_state(definitions, i)) if i % 2 else ("/raw", big_array(definitions, i, 20_000))
        writer.write(topic, 100 + i, data)
        sent.append((topic, 100 + i, data))
        if i % 5 == 4:
            writer.flush()
    assert writer.close().closed
    return sent


def test_repair_finishes_an_unclosed_bag_for_the_standard_reader(tmp_path, definitions):
    bag = tmp_path / "bag"
    sent = write_closed_bag(bag, definitions)
    mcap = bag / "bag.mcap"
    closed = mcap.read_bytes()
    reader = Reader(bag)  # metadata.yaml and the channels agree on the QoS: rosbags matches them to read messages
    reader.open()
    assert {c.topic: (c.digest, c.ext.offered_qos_profiles) for c in reader.connections} == {
        "/joint_states": (definitions.lookup("sensor_msgs/msg/JointState")[1], [QOS]),
        "/raw": (definitions.lookup("std_msgs/msg/UInt8MultiArray")[1], [])}
    reader.close()
    assert repair_bag(bag).message_counts == {"/joint_states": 60, "/raw": 60}  # closed: left as it is
    assert mcap.read_bytes() == closed and unclosed_reason(bag) == ""

    # Killed mid-chunk: no metadata.yaml, the file ends inside a chunk.
    mcap.write_bytes(closed[: len(closed) * 2 // 3])
    (bag / "metadata.yaml").unlink()
    assert "no metadata.yaml" in unclosed_reason(bag)
    with BagReader(bag) as scanned:
        expected = [(m.topic, m.timestamp_ns, m.data) for m in scanned.messages()]
    assert 0 < len(expected) < len(sent) and expected == sent[: len(expected)]
    summary = repair_bag(bag)
    assert summary.closed and summary.messages == len(expected) and (summary.start_ns, summary.end_ns) == (100, expected[-1][1])
    assert summary.message_counts == {t: sum(1 for m in expected if m[0] == t) for t in ("/joint_states", "/raw")}
    assert unclosed_reason(bag) == "" and standard_read(bag) == expected
    with BagReader(bag) as reader:
        assert reader.problems == [] and reader.deserialize(next(reader.messages(["/joint_states"]))).name == ["j0", "j1", "j2"]
    assert sorted(p.name for p in bag.iterdir()) == ["bag.mcap", "metadata.yaml"]

    # Cut again with a stale metadata.yaml beside it (the footer is missing): that is replaced too.
    mcap.write_bytes(closed[: len(closed) // 3])
    assert unclosed_reason(bag)
    summary = repair_bag(bag)
    assert 0 < summary.messages < len(expected) and standard_read(bag) == sent[: summary.messages]


def test_repair_leaves_a_bag_alone_when_it_cannot_finish_it(tmp_path, definitions, monkeypatch):
    writer = BagWriter(tmp_path / "recording")
    writer.add_topic(definitions.topic("/joint_states", "sensor_msgs/msg/JointState"))
    writer.write("/joint_states", 1, joint_state(definitions, 1))
    writer.flush()
    with pytest.raises(BagError, match="in use by its recorder"):  # still being recorded
        repair_bag(tmp_path / "recording")
    writer.close()
    assert repair_bag(tmp_path / "recording").messages == 1

    bag = tmp_path / "bag"
    write_closed_bag(bag, definitions)
    mcap = bag / "bag.mcap"
    closed = mcap.read_bytes()
    (bag / "metadata.yaml").unlink()
    for content, error in ((closed[:40], "no complete chunk"), (b"not a bag" * 10, "not an MCAP file")):
        mcap.write_bytes(content)
        with pytest.raises(BagError, match=error):
            repair_bag(bag)
        assert mcap.read_bytes() == content and sorted(p.name for p in bag.iterdir()) == ["bag.mcap"]

    # The repaired file does not read back as written: the original is put back.
    cut = closed[: len(closed) // 2]
    mcap.write_bytes(cut)

    def read_back_fails(*_: object) -> None:
        raise BagError("simulated")

    monkeypatch.setattr("wam_ros.data.bags._read_back", read_back_fails)
    with pytest.raises(BagError, match=r"did not read back \(simulated\); left as it was"):
        repair_bag(bag)
    assert mcap.read_bytes() == cut and sorted(p.name for p in bag.iterdir()) == ["bag.mcap"]


def test_repair_finishes_bags_of_the_rosbags_based_recorder(tmp_path, definitions):
    """Bags recorded before the mcap-based writer: rosbags' Writer, no type hash stored with the channels."""
    spec = definitions.topic("/raw", "std_msgs/msg/UInt8MultiArray", [QOS])
    with Writer(tmp_path / "old", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(spec.topic, spec.msgtype, msgdef=spec.msgdef, rihs01=spec.type_hash, offered_qos_profiles=[QOS])
        for i in range(30):  # rosbags closes a chunk per MiB
            writer.write(connection, 10 + i, big_array(definitions, i, 200_000))
    mcap = next((tmp_path / "old").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 3 // 4])
    (tmp_path / "old" / "metadata.yaml").unlink()
    summary = repair_bag(tmp_path / "old")
    assert 10 <= summary.messages < 30
    assert standard_read(tmp_path / "old") == [("/raw", 10 + i, big_array(definitions, i, 200_000)) for i in range(summary.messages)]
    reader = Reader(tmp_path / "old")
    reader.open()
    assert [(c.digest, c.ext.offered_qos_profiles) for c in reader.connections] == [(spec.type_hash, [QOS])]
    reader.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(definitions: MessageDefinitions, recording: BagRecording, first: int, count: int) -> list[bytes]:
    """Submit up to ``count`` 200 kB messages numbered from ``first``; returns those accepted."""
    sent = []
    for i in range(first, first + count):
        data = big_array(definitions, i, 200_000)
        if not recording.submit("/big", 10 + i, data):
            break
        sent.append(data)
    return sent


def test_full_disk_stops_recording_with_a_clear_error_and_keeps_earlier_data(small_disk, definitions):
    errors: list[BagError] = []
    spec = definitions.topic("/big", "std_msgs/msg/UInt8MultiArray")
    recording = BagRecording(small_disk / "episode", [spec], chunk_interval_s=0.05, on_error=errors.append)
    sent = []
    import time

    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        sent += _fill(definitions, recording, len(sent), 5)
        time.sleep(0.01)
    summary = recording.close()
    assert errors and isinstance(errors[0], DiskFullError) and "No space left" in str(errors[0])
    assert str(small_disk / "episode") in summary.error
    assert 0 < summary.messages < len(sent)
    counts = recording.counts["/big"]
    assert counts.dropped > 0 and counts.written == summary.messages and counts.received == counts.written + counts.dropped
    with BagReader(small_disk / "episode") as reader:
        got = [m.data for m in reader.messages()]
    assert got == sent[: len(got)] and len(got) == summary.messages
    assert summary.closed == (small_disk / "episode" / "metadata.yaml").exists()


def test_free_space_reserve_stops_before_the_disk_is_full(small_disk, definitions):
    errors: list[BagError] = []
    spec = definitions.topic("/big", "std_msgs/msg/UInt8MultiArray")
    recording = BagRecording(small_disk / "episode", [spec], chunk_interval_s=0.05, min_free_bytes=2 << 20, on_error=errors.append)
    import time

    deadline, sent = time.monotonic() + 20, 0
    while not errors and time.monotonic() < deadline:
        sent += len(_fill(definitions, recording, sent, 2))
        time.sleep(0.05)
    summary = recording.close()
    assert errors and "reserve" in str(errors[0])
    assert summary.closed and summary.messages > 0
    with BagReader(small_disk / "episode") as reader:
        assert reader.problems == [] and len(list(reader.messages())) == summary.messages


def test_labels_round_trip_and_reject_bad_input(tmp_path):
    labels = EpisodeLabels(robot="panda_sim", task="pick", instruction="pick the cube", outcome="success",
                           intervention_segments_ns=[[1, 2]], seed=3)
    write_labels(tmp_path, labels)
    assert read_labels(tmp_path) == labels
    assert read_labels(tmp_path / "nowhere") is None
    with pytest.raises(BagError, match="outcome must be one of"):
        write_labels(tmp_path, EpisodeLabels(outcome="great"))
    (tmp_path / "wam_episode.yaml").write_text("task: [unclosed")
    with pytest.raises(BagError, match="invalid YAML"):
        read_labels(tmp_path)


def test_intervention_is_teleop_after_autonomy():
    samples = [(0, MODE_TELEOP), (10, MODE_AUTONOMY), (20, MODE_TELEOP), (30, MODE_AUTONOMY), (40, MODE_TELEOP)]
    assert intervention_segments(samples, 50) == [(20, 30), (40, 50)]
    assert intervention_segments([(0, MODE_TELEOP), (5, MODE_HOLD)], 9) == []


def test_boundaries_on_sim_reset_and_mode_changes():
    sim = EpisodeBoundaries(split_on_sim_reset=True)
    assert sim.on_task_status(4, False, recording=False) == []  # first status seen: mid-episode, no start
    assert sim.on_task_status(4, True, recording=False) == []
    assert sim.on_task_status(5, False, recording=False) == [BoundaryAction("start", "sim_reset")]
    assert sim.on_task_status(5, True, recording=True) == []
    assert sim.on_task_status(6, False, recording=True) == [BoundaryAction("stop", "sim_reset", "success"), BoundaryAction("start", "sim_reset")]
    assert sim.on_mode(MODE_AUTONOMY, recording=True) == []  # mode boundaries off

    modes = EpisodeBoundaries(split_on_mode_change=True)
    assert modes.on_mode(MODE_IDLE, recording=False) == []
    assert modes.on_mode(MODE_TELEOP, recording=False) == [BoundaryAction("start", "mode:TELEOP")]
    assert modes.on_mode(MODE_AUTONOMY, recording=True) == [BoundaryAction("stop", "mode:AUTONOMY"), BoundaryAction("start", "mode:AUTONOMY")]
    assert modes.on_mode(MODE_TELEOP, recording=True) == []  # an intervention, same episode
    assert modes.on_mode(MODE_HOLD, recording=True) == [BoundaryAction("stop", "mode:HOLD")]
    assert modes.on_task_status(1, True, recording=False) == [] and modes.on_task_status(2, True, recording=False) == []
