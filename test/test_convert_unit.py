"""Bags -> episode dataset without ROS: alignment, actions, interventions, subtasks, CLI, bad bags."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from wam_ros.cli import main as wam_ros
from wam_ros.data import DatasetWriter, EpisodeDataset
from wam_ros.data.bags import (
    MODE_AUTONOMY,
    MODE_HOLD,
    MODE_IDLE,
    MODE_TELEOP,
    BagError,
    BagReader,
    BagWriter,
    EpisodeLabels,
    MessageDefinitions,
    frame_sources,
    mode_changes,
    read_labels,
    unclosed_reason,
    write_labels,
)
from wam_ros.data.convert import (
    ConvertError,
    bag_handover_steps,
    bag_to_episode,
    default_image_sizes,
    estimated_drops,
    image_rgb,
    resize_image,
    robot_dataset_info,
    trajectory_samples,
)
from wam_ros.data.episodes import SOURCE_HOLD, SOURCE_OPERATOR, SOURCE_POLICY
from wam_ros.robot import load_robot_config

ROBOT = load_robot_config("panda_sim")
# The bridge's command topics as a stack in the root namespace records them (the config names are relative).
TRAJECTORY_TOPIC, GRIPPER_TOPIC = (f"/{name}" for name in (ROBOT.backend.joint_trajectory_topic, ROBOT.backend.gripper_command_topic))
ARM = list(ROBOT.arm.joint_names)
FINGERS = list(ROBOT.gripper.joint_names)
T0 = 1_000_000_000_000  # ns
MS = 1_000_000
DURATION_NS = 3000 * MS


class Messages:
    """sensor/command/status messages serialized with rosbags (no rclpy)."""

    def __init__(self) -> None:
        self.definitions = MessageDefinitions([Path(sys.prefix) / "share"])
        for msgtype in ("wam_ros_interfaces/msg/SafetyStatus", "wam_ros_interfaces/msg/Subtask", "wam_ros_interfaces/msg/GripperCommand", "wam_ros_interfaces/msg/TaskStatus",
                        "wam_ros_interfaces/msg/ActionChunk"):
            self.definitions.lookup(msgtype)
        self.ts = self.definitions.typestore
        self.T = self.ts.types

    def header(self, t_ns: int, frame_id: str = ""):
        return self.T["std_msgs/msg/Header"](stamp=self.T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id=frame_id)

    def serialize(self, msg, msgtype: str) -> bytes:
        return bytes(self.ts.serialize_cdr(msg, msgtype))

    def joint_state(self, t_ns: int, positions: list[float]) -> bytes:
        msg = self.T["sensor_msgs/msg/JointState"](header=self.header(t_ns), name=ARM + FINGERS, position=np.array(positions, float),
                                                   velocity=np.zeros(0), effort=np.zeros(0))
        return self.serialize(msg, "sensor_msgs/msg/JointState")

    def image(self, t_ns: int, pixels: np.ndarray, encoding: str) -> bytes:
        height, width, channels = pixels.shape
        msg = self.T["sensor_msgs/msg/Image"](header=self.header(t_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
                                              step=width * channels, data=pixels.reshape(-1).astype(np.uint8))
        return self.serialize(msg, "sensor_msgs/msg/Image")

    def trajectory(self, t_ns: int, positions: list[float], names: list[str] | None = None) -> bytes:
        point = self.T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.array(positions, float), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=self.T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
        msg = self.T["trajectory_msgs/msg/JointTrajectory"](header=self.header(t_ns), joint_names=names or ARM, points=[point])
        return self.serialize(msg, "trajectory_msgs/msg/JointTrajectory")

    def gripper(self, t_ns: int, width_m: float) -> bytes:
        return self.serialize(self.T["wam_ros_interfaces/msg/GripperCommand"](header=self.header(t_ns), width_m=width_m, force_n=20.0), "wam_ros_interfaces/msg/GripperCommand")

    def safety(self, mode: int, stamp_ns: int = 0, requester: str = "test", reason: str = "", violations: tuple[str, ...] = (),
               stop_reason: str = "") -> bytes:
        T = self.T
        msg = T["wam_ros_interfaces/msg/SafetyStatus"](
            header=self.header(0), mode=mode, mode_name="", mode_requester=requester, mode_reason=reason,
            mode_stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), backend="sim", active_limits=[],
            violations=list(violations), violation_count=len(violations), action_chunk_age_s=-1.0, joint_state_age_s=-1.0,
            teleop_command_age_s=-1.0, watchdogs_ok=not stop_reason, last_stop_reason=stop_reason,
            last_stop_stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9 if stop_reason else 0, nanosec=stamp_ns % 10**9 if stop_reason else 0),
            command_source="")
        return self.serialize(msg, "wam_ros_interfaces/msg/SafetyStatus")

    def chunk(self, t_ns: int, targets: np.ndarray) -> bytes:
        msg = self.T["wam_ros_interfaces/msg/ActionChunk"](
            header=self.header(t_ns), joint_names=ARM, control_period_s=0.1, horizon=len(targets), joint_positions=np.asarray(targets, float).ravel(),
            gripper_widths=np.full(len(targets), 0.04), chunk_id=0, model_id="test", subtask_id="0", inference_latency_s=0.01)
        return self.serialize(msg, "wam_ros_interfaces/msg/ActionChunk")

    def subtask(self, subtask_id: str, instruction: str, status: int = 1) -> bytes:
        msg = self.T["wam_ros_interfaces/msg/Subtask"](header=self.header(0), id=subtask_id, index=0, skill="pick", arguments=[],
                                            instruction=instruction, status=status, score=0.0, progress=0.0)
        return self.serialize(msg, "wam_ros_interfaces/msg/Subtask")


@pytest.fixture(scope="module")
def messages() -> Messages:
    return Messages()


def arm_state(t_ns: int) -> list[float]:
    s = (t_ns - T0) / 1e9
    return [0.1 * j + 0.2 * s for j in range(7)] + [0.02 + 0.001 * s] * 2


def commanded(t_ns: int) -> list[float]:
    return [0.5 + (t_ns - T0) / 1e9] * 7


def write_bag(path: Path, m: Messages, commands: bool = True, labels: bool = True, statuses: list[tuple[int, bytes]] | None = None,
              chunks: list[tuple[int, bytes]] = (), namespace: str = "") -> Path:
    """3 s of a synthetic episode; see each stream's comment for its rate and content. ``namespace``:
    recorded as a stack under it (``/left``) records its topics."""
    writer = BagWriter(path)
    topics = {"/wam/action_chunk": "wam_ros_interfaces/msg/ActionChunk"} if chunks else {}
    topics |= {"/joint_states": "sensor_msgs/msg/JointState", "/wam/cameras/front/image": "sensor_msgs/msg/Image",
              "/wam/cameras/wrist/image": "sensor_msgs/msg/Image", "/wam/safety/status": "wam_ros_interfaces/msg/SafetyStatus",
              "/wam/task/subtask": "wam_ros_interfaces/msg/Subtask", TRAJECTORY_TOPIC: "trajectory_msgs/msg/JointTrajectory",
              GRIPPER_TOPIC: "wam_ros_interfaces/msg/GripperCommand"}
    for topic, msgtype in topics.items():
        writer.add_topic(m.definitions.topic(namespace + topic, msgtype))
    out: list[tuple[int, str, bytes]] = []
    for i in range(300):  # joint states at 100 Hz from T0
        t = T0 + i * 10 * MS
        out.append((t, "/joint_states", m.joint_state(t, arm_state(t))))
    for i in range(89):  # front camera at 30 Hz from T0 + 10 ms, 64x48 rgb8, every pixel = i
        t = T0 + 10 * MS + round(i * 1e9 / 30)
        out.append((t, "/wam/cameras/front/image", m.image(t, np.full((48, 64, 3), i, np.uint8), "rgb8")))
    for i in range(89):  # wrist camera at 30 Hz from T0 + 20 ms, 40x40 bgr8: blue = i, red = 255
        t = T0 + 20 * MS + round(i * 1e9 / 30)
        pixels = np.zeros((40, 40, 3), np.uint8)
        pixels[..., 0], pixels[..., 2] = i, 255
        out.append((t, "/wam/cameras/wrist/image", m.image(t, pixels, "bgr8")))
    if commands:
        for i in range(59):  # arm commands at 20 Hz from T0 + 50 ms
            t = T0 + 50 * MS + i * 50 * MS
            out.append((t, TRAJECTORY_TOPIC, m.trajectory(t, commanded(t))))
        out.append((T0 + 1000 * MS, GRIPPER_TOPIC, m.gripper(T0 + 1000 * MS, 0.01)))
    if statuses is None:
        statuses = [(T0, m.safety(MODE_AUTONOMY)), (T0 + 1000 * MS, m.safety(MODE_TELEOP)), (T0 + 1500 * MS, m.safety(MODE_AUTONOMY))]
    out += [(t, "/wam/safety/status", data) for t, data in statuses] + [(t, "/wam/action_chunk", data) for t, data in chunks]
    out += [(T0, "/wam/task/subtask", m.subtask("0", "reach the cube")), (T0 + 2000 * MS, "/wam/task/subtask", m.subtask("1", "grasp it"))]
    flushed_ns = T0
    for t, topic, data in sorted(out, key=lambda item: item[0]):
        writer.write(namespace + topic, t, data)
        if t - flushed_ns >= 100 * MS:  # a chunk per 100 ms, as the recorder's chunk_interval_s would
            writer.flush()
            flushed_ns = t
    writer.close()
    if labels:
        write_labels(path, EpisodeLabels(robot="panda_sim", task="pick", instruction="pick the cube", operator_name="alice",
                                         outcome="success", state="closed", start_ns=T0, stop_ns=T0 + DURATION_NS))
    return path


def test_a_stack_recorded_in_a_namespace_converts_like_one_in_the_root(tmp_path, messages):
    episodes = []
    for namespace in ("", "/left"):
        bag = write_bag(tmp_path / f"bag{namespace.replace('/', '_')}", messages, namespace=namespace)
        with BagReader(bag) as reader:
            episodes.append(bag_to_episode(reader, ROBOT, 10.0, default_image_sizes(ROBOT), labels=read_labels(bag)))
    (root, root_report), (left, left_report) = episodes
    np.testing.assert_array_equal(left.states, root.states)
    np.testing.assert_array_equal(left.actions, root.actions)
    np.testing.assert_array_equal(left.images["front"], root.images["front"])
    np.testing.assert_array_equal(left.intervention, root.intervention)
    assert set(left_report.estimated_drops) == {"/left/joint_states", "/left/wam/cameras/front/image", "/left/wam/cameras/wrist/image"}


def test_handover_steps_are_read_under_the_namespace_the_bag_was_recorded_in(tmp_path, messages):
    """The arm commands ramp 0.05 rad per 50 ms output; the operator takes over at 1.0 s and hands back at 1.5 s."""
    m = messages
    statuses = [(T0, m.safety(MODE_AUTONOMY, T0)), (T0 + 1000 * MS, m.safety(MODE_TELEOP, T0 + 1000 * MS)),
                (T0 + 1500 * MS, m.safety(MODE_AUTONOMY, T0 + 1500 * MS))]
    for namespace in ("", "/left"):
        bag = write_bag(tmp_path / f"bag{namespace.replace('/', '_')}", m, statuses=statuses, namespace=namespace)
        with BagReader(bag) as reader:
            steps, all_steps = bag_handover_steps(reader, ROBOT)
        assert [(s.stamp_ns, s.from_mode, s.to_mode) for s in steps] == [(T0 + 1000 * MS, MODE_AUTONOMY, MODE_TELEOP),
                                                                          (T0 + 1500 * MS, MODE_TELEOP, MODE_AUTONOMY)], namespace
        assert [s.step_rad for s in steps] == pytest.approx([0.05, 0.05]) and len(all_steps) == 58


def test_episode_is_aligned_to_the_control_rate(tmp_path, messages):
    bag = write_bag(tmp_path / "bag", messages)
    with BagReader(bag) as reader:
        episode, report = bag_to_episode(reader, ROBOT, 10.0, default_image_sizes(ROBOT), labels=read_labels(bag))
    t_start = T0 + 50 * MS  # the last stream to begin: the arm commands
    t_end = min(T0 + 2990 * MS, T0 + 10 * MS + round(88e9 / 30), T0 + 20 * MS + round(88e9 / 30))
    count = (t_end - t_start) // (100 * MS) + 1
    times = t_start + np.arange(count) * 100 * MS
    assert episode.length == count == report.frames and report.has_actions
    np.testing.assert_allclose(episode.timestamps, np.arange(count) * 0.1, atol=1e-9)
    np.testing.assert_allclose(episode.states, np.array([arm_state(t)[:7] + [sum(arm_state(t)[7:])] for t in times]), atol=1e-5)
    # Row t: what was commanded for the next frame, t + 100 ms (the sim demos' convention), held after the last command.
    targets = np.minimum(times + 100 * MS, T0 + 50 * MS + 58 * 50 * MS)
    expected_gripper = np.where(targets >= T0 + 1000 * MS, 0.01, [sum(arm_state(t)[7:]) for t in times])
    np.testing.assert_allclose(episode.actions, np.column_stack([[commanded(t) for t in targets], expected_gripper]), atol=1e-5)
    assert episode.images["front"].shape == (count, 96, 96, 3) and episode.images["wrist"].shape == (count, 96, 96, 3)
    front_index = np.floor((times - T0 - 10 * MS) * 30 / 1e9 + 1e-6).astype(int)  # newest frame at or before t
    np.testing.assert_array_equal(episode.images["front"][:, 0, 0, 0], front_index)
    wrist_index = np.floor((times - T0 - 20 * MS) * 30 / 1e9 + 1e-6).astype(int)
    np.testing.assert_array_equal(episode.images["wrist"][:, 0, 0], np.column_stack([np.full(count, 255), np.zeros(count), wrist_index]))
    np.testing.assert_array_equal(episode.intervention, (times >= T0 + 1000 * MS) & (times < T0 + 1500 * MS))
    np.testing.assert_array_equal(episode.frame_sources, np.where(episode.intervention, SOURCE_OPERATOR, SOURCE_POLICY))
    split = int(np.searchsorted(times, T0 + 2000 * MS))
    assert [(s.instruction, s.start, s.end) for s in episode.subtasks] == [("reach the cube", 0, split), ("grasp it", split, count)]
    assert (episode.task, episode.instruction, episode.success, episode.extra["operator"]) == ("pick", "pick the cube", True, "alice")
    assert report.estimated_drops == {"/wam/cameras/front/image": 0, "/wam/cameras/wrist/image": 0, "/joint_states": 0}
    assert report.problems == []


def test_sources_and_takeovers_follow_the_bridges_mode_stamps(tmp_path, messages):
    """The bridge's mode_stamp times each change (the status arrives later); HOLD frames are "hold";
    the takeovers, with who took over, why and how it ended, are in the episode's metadata."""
    m = messages
    late = 30 * MS  # statuses arrive this long after the change they report
    changes = [(T0 - 5 * MS, MODE_AUTONOMY, "dagger", "go"), (T0 + 722 * MS, MODE_TELEOP, "alice", "take over: stuck"),
               (T0 + 1234 * MS, MODE_AUTONOMY, "alice", "hand back"), (T0 + 1811 * MS, MODE_TELEOP, "alice", "take over: wrong cube"),
               (T0 + 2333 * MS, MODE_HOLD, "safety_bridge", "watchdog")]
    statuses = []
    for stamp, mode, requester, reason in changes:
        for repeat in range(3):  # the bridge repeats its status every 100 ms with the same mode_stamp
            statuses.append((max(stamp, T0) + late + repeat * 100 * MS, m.safety(mode, stamp, requester, reason)))
    bag = write_bag(tmp_path / "bag", m, statuses=statuses)
    with BagReader(bag) as reader:
        episode, report = bag_to_episode(reader, ROBOT, 10.0, default_image_sizes(ROBOT), labels=read_labels(bag))
    times = T0 + 50 * MS + np.arange(episode.length) * 100 * MS
    mode_at = np.searchsorted([c[0] for c in changes], times, side="right") - 1
    expected = np.array([(SOURCE_POLICY, SOURCE_OPERATOR, SOURCE_POLICY, SOURCE_OPERATOR, SOURCE_HOLD)[i] for i in mode_at])
    np.testing.assert_array_equal(episode.frame_sources, expected)
    np.testing.assert_array_equal(episode.intervention, expected == SOURCE_OPERATOR)
    assert report.takeovers == 2 and report.operator_frames == int(np.sum(expected == SOURCE_OPERATOR))
    extra = episode.extra
    assert extra["takeover_count"] == 2 and extra["operator_share"] == round(report.operator_frames / episode.length, 4)
    first, second = extra["takeovers"]
    assert (first["requester"], first["reason"], first["ended_by"], first["handed_back"]) == ("alice", "take over: stuck", "alice", True)
    assert first["duration_s"] == pytest.approx(0.512) and first["start_s"] == pytest.approx(0.672)
    assert (second["ended_by"], second["end_reason"], second["handed_back"]) == ("safety_bridge", "watchdog", False)
    assert extra["takeover_seconds"] == pytest.approx(0.512 + 0.522)
    front = extra["camera_calibration"]["front"]  # the calibration in force at conversion, for calibrated localisers
    assert front["extrinsics_xyz_m"] == list(ROBOT.camera("front").extrinsics_xyz_m) and front["parent_frame"] == ROBOT.camera("front").parent_frame

    dataset = tmp_path / "dataset"
    writer = DatasetWriter(dataset, robot_dataset_info(ROBOT, 10.0, default_image_sizes(ROBOT)))
    writer.add(episode)
    np.testing.assert_array_equal(EpisodeDataset(dataset).episode(0).frame_sources, expected)


def test_cli_converts_skips_known_bags_and_reports_bad_ones(tmp_path, messages, capsys):
    full = write_bag(tmp_path / "bags" / "full", messages)
    video = write_bag(tmp_path / "bags" / "video_only", messages, commands=False, labels=False)
    out = tmp_path / "dataset"
    assert wam_ros(["convert", str(tmp_path / "bags"), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["video_only_episodes"] == 1 and summary["failed"] == 0
    assert summary["intervention_share"] > 0
    dataset = EpisodeDataset(out)
    assert dataset.info.state_names == ARM + ["gripper_width"] and dataset.info.cameras == {"front": (96, 96), "wrist": (96, 96)}
    first, second = dataset.episode(0), dataset.episode(1)
    assert first.actions is not None and first.actions.shape == (first.length, 8) and first.source == f"rosbag:{full.resolve()}"
    assert second.actions is None and second.source == f"rosbag:{video.resolve()}"
    assert second.instruction == ""  # no labels and no task status: said in the report

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "damaged.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 100)
    assert wam_ros(["convert", str(full), str(damaged), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.out and "already in the dataset" in captured.out
    assert f"FAILED  {damaged}" in captured.err and "damaged record at byte 8" in captured.err
    assert len(EpisodeDataset(out)) == 2

    assert wam_ros(["convert", str(full), "--out", str(tmp_path / "other"), "--image-size", "big"]) == 2
    assert "--image-size must look like 96x96" in capsys.readouterr().err


def test_unclosed_bag_converts_with_a_note(tmp_path, messages):
    bag = write_bag(tmp_path / "bag", messages)
    mcap = bag / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.7)])
    (bag / "metadata.yaml").unlink()
    with BagReader(bag) as reader:
        episode, report = bag_to_episode(reader, ROBOT, 10.0, {"front": (32, 32)})
    assert 10 < episode.length < 30 and episode.images["front"].shape[1:] == (32, 32, 3)
    assert any("read by scanning" in p for p in report.problems)


def test_cli_repairs_an_unclosed_bag_and_says_so(tmp_path, messages, capsys, monkeypatch):
    bag = write_bag(tmp_path / "bag", messages)
    mcap = bag / "bag.mcap"
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.7)])
    (bag / "metadata.yaml").unlink()
    shutil.copytree(bag, tmp_path / "as_it_was")
    with BagReader(tmp_path / "as_it_was") as reader:  # what reading the unclosed bag as it is gives
        expected, _ = bag_to_episode(reader, ROBOT, 10.0, default_image_sizes(ROBOT), labels=read_labels(bag))

    def no_room(path: Path) -> None:
        raise BagError(f"{path}: no room")

    with monkeypatch.context() as patch:  # a bag that cannot be repaired (no room, recording) is read as it is
        patch.setattr("wam_ros.data.convert.repair_bag", no_room)
        assert wam_ros(["convert", str(bag), "--out", str(tmp_path / "unrepaired")]) == 0
    out = capsys.readouterr().out
    assert "not repaired: " in out and "no room" in out and "note: read by scanning" in out
    assert EpisodeDataset(tmp_path / "unrepaired").episode(0).length == expected.length and unclosed_reason(bag)

    assert wam_ros(["convert", str(bag), "--out", str(tmp_path / "dataset")]) == 0
    assert "note: unclosed bag (no metadata.yaml (the bag was not closed)), repaired: " in capsys.readouterr().out
    assert unclosed_reason(bag) == "" and sorted(p.name for p in bag.iterdir()) == ["bag.mcap", "metadata.yaml", "wam_episode.yaml"]
    episode = EpisodeDataset(tmp_path / "dataset").episode(0)
    assert episode.length == expected.length and episode.extra["problems"][0].startswith("unclosed bag")
    np.testing.assert_array_equal(episode.images["front"], expected.images["front"])
    np.testing.assert_array_equal(episode.actions, expected.actions)


def test_missing_streams_are_named(tmp_path, messages):
    writer = BagWriter(tmp_path / "bag")
    writer.add_topic(messages.definitions.topic("/joint_states", "sensor_msgs/msg/JointState"))
    writer.write("/joint_states", T0, messages.joint_state(T0, arm_state(T0)))
    writer.close()
    with BagReader(tmp_path / "bag") as reader, pytest.raises(ConvertError, match="no frames on /wam/cameras/front/image"):
        bag_to_episode(reader, ROBOT, 10.0, default_image_sizes(ROBOT))


def test_a_new_trajectory_replaces_the_rest_of_the_previous_one():
    names = ["a", "b"]
    first = (names, [(0, np.array([0.0, 0.0])), (100, np.array([1.0, 1.0])), (200, np.array([2.0, 2.0]))])
    second = (["b", "a"], [(0, np.array([5.0, 4.0])), (50, np.array([6.0, 5.0]))])
    times, targets = trajectory_samples(np.array([1000, 1150]), [first, second], ["a", "b"], "test")
    assert times.tolist() == [1000, 1100, 1150, 1200]
    assert targets.tolist() == [[0, 0], [1, 1], [4, 5], [5, 6]]
    # Streaming like the safety bridge: one point a period ahead; each new message starts from
    # where the previous one had brought the target.
    stream = [(names, [(20, np.array([float(i), 0.0]))]) for i in range(1, 4)]
    times, targets = trajectory_samples(np.array([0, 10, 20]), stream, names, "test")
    assert times.tolist() == [10, 20, 40]
    # Before the first point nothing was commanded: the target holds it; then half way from 1 to 2.
    np.testing.assert_allclose(targets[:, 0], [1.0, 1.5, 3.0])
    with pytest.raises(ConvertError, match="lacks joints"):
        trajectory_samples(np.array([0]), [(["a"], [(0, np.array([1.0]))])], ["a", "b"], "test")


def test_images_decode_and_resize():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 7
    assert image_rgb(2, 3, "bgr8", 12, np.pad(bgr, ((0, 0), (0, 1), (0, 0))).reshape(-1))[0, 0].tolist() == [0, 0, 7]
    assert image_rgb(1, 2, "mono8", 2, np.array([3, 4], np.uint8)).tolist() == [[[3, 3, 3], [4, 4, 4]]]
    with pytest.raises(ConvertError, match="unsupported image encoding '16UC1'"):
        image_rgb(1, 1, "16UC1", 2, np.zeros(2, np.uint8))
    wide = np.zeros((480, 640, 3), np.uint8)
    wide[:, 80:560] = 200  # the centre square survives the crop, the sides do not
    assert np.all(resize_image(wide, 96, 96, "crop") == 200)
    assert resize_image(wide, 96, 96, "stretch")[:, 0].max() == 0


def test_estimated_drops_count_missing_periods():
    times = np.arange(0, 100) * 10
    assert estimated_drops(times) == 0
    assert estimated_drops(np.delete(times, [10, 11, 50])) == 3


def test_a_status_in_flight_during_a_switch_from_the_start_up_mode_is_not_a_change_back():
    """Seen in a graph test: the bridge's start-up IDLE (mode_stamp 0) repeated once more after
    AUTONOMY's stamp; read by its receive time it made a second IDLE that marked 2 s of policy frames "hold"."""
    ms = 1_000_000
    statuses = [(4896 * ms, 0, MODE_IDLE, "safety_bridge", ""), (4916 * ms, 0, MODE_IDLE, "safety_bridge", ""),
                (5024 * ms, 0, MODE_IDLE, "safety_bridge", ""), (5040 * ms, 5004 * ms, MODE_AUTONOMY, "test", "go"),
                (5100 * ms, 5004 * ms, MODE_AUTONOMY, "test", "go"), (7050 * ms, 7032 * ms, MODE_TELEOP, "alice", "take over")]
    changes = mode_changes(statuses)
    assert [(c.stamp_ns, c.mode) for c in changes] == [(4896 * ms, MODE_IDLE), (5004 * ms, MODE_AUTONOMY), (7032 * ms, MODE_TELEOP)]
    sources = frame_sources(changes, np.array([4950, 5050, 6000, 7000, 7100]) * ms)
    np.testing.assert_array_equal(sources, [SOURCE_HOLD, SOURCE_POLICY, SOURCE_POLICY, SOURCE_POLICY, SOURCE_OPERATOR])
    assert [(c.stamp_ns, c.mode) for c in mode_changes(statuses[::-1])] == [(c.stamp_ns, c.mode) for c in changes]  # any order
    restarted = statuses[:2] + [(9000 * ms, 0, MODE_IDLE, "safety_bridge", "")]  # a new IDLE run after another mode stays a change
    assert [c.mode for c in mode_changes(restarted[:1] + statuses[3:4] + restarted[2:])] == [MODE_IDLE, MODE_AUTONOMY, MODE_IDLE]
