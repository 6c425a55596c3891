"""The recorder node through real DDS: identical messages back, services, SIGTERM, SIGKILL, sim resets."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import wait_until
from wam_ros.data.bags import BagReader, read_labels
from wam_ros_interfaces.msg import GripperCommand, SafetyStatus, TaskStatus
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros_interfaces.srv import LabelEpisode, StartEpisode, StopEpisode

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
ARM = list(ROBOT.arm.joint_names)


def start_recorder(processes, episodes: Path, **parameters):
    return processes.start_node("recorder", robot_config=str(ROBOT.path), episodes_dir=str(episodes), status_period_s=0.1,
                                discovery_period_s=0.1, chunk_interval_s=0.2, **parameters)


class RecorderStatus:
    """The newest values of the recorder's /diagnostics status."""

    def __init__(self, ros) -> None:
        self.values: dict[str, str] = {}
        ros.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "wam_ros: recorder":
                self.values = {kv.key: kv.value for kv in status.values}

    def wait(self, key: str, value: str, timeout_s: float = 15.0) -> None:
        wait_until(lambda: self.values.get(key) == value, timeout_s, f"recorder {key} == {value} (now {self.values.get(key)!r})")


def joint_state(i: int) -> JointState:
    msg = JointState(name=ARM + list(ROBOT.gripper.joint_names), position=[0.01 * i + k for k in range(9)])
    msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + i // 100, (i % 100) * 10_000_000
    return msg


def image(i: int) -> Image:
    msg = Image(height=24, width=32, encoding="rgb8", step=96, data=bytes([i % 256]) * (24 * 96))
    msg.header.stamp.sec, msg.header.frame_id = 100 + i, "front_camera_optical"
    return msg


def trajectory(i: int) -> JointTrajectory:
    return JointTrajectory(joint_names=ARM, points=[JointTrajectoryPoint(positions=[0.1 * i] * 7)])


def bag_messages(path: Path, types: dict[str, type]) -> dict[str, list]:
    """Every message of a closed bag, decoded with rclpy (the bag holds the wire bytes as received)."""
    with BagReader(path) as reader:
        assert reader.problems == []
        out: dict[str, list] = {}
        for message in reader.messages(list(types)):
            out.setdefault(message.topic, []).append(deserialize_message(message.data, types[message.topic]))
    return out


def test_records_identical_messages_labels_and_closes_on_sigterm(processes, ros, tmp_path):
    status = RecorderStatus(ros)
    node = ros.node
    # The robot config's names are relative; in the root namespace they resolve to "/<name>", as the bag stores them.
    image_topic, trajectory_topic, gripper_topic = (f"/{name}" for name in (
        ROBOT.camera("front").image_topic, ROBOT.backend.joint_trajectory_topic, ROBOT.backend.gripper_command_topic))
    pubs = {
        "/joint_states": node.create_publisher(JointState, "/joint_states", qos.SENSORS),
        image_topic: node.create_publisher(Image, image_topic, qos.SENSORS),
        trajectory_topic: node.create_publisher(JointTrajectory, trajectory_topic, qos.COMMANDS),
        gripper_topic: node.create_publisher(GripperCommand, gripper_topic, qos.COMMANDS),
    }
    safety = node.create_publisher(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    latched = SafetyStatus(mode=SafetyStatus.MODE_AUTONOMY, mode_name="AUTONOMY", backend="sim")
    safety.publish(latched)
    recorder = start_recorder(processes, tmp_path)
    for publisher in pubs.values():
        ros.wait_for_subscribers(publisher)
    status.wait("topics_recorded", "5")
    status.wait("latched_messages_held", "1")
    start = node.create_client(StartEpisode, "/wam/recorder/start_episode")
    stop = node.create_client(StopEpisode, "/wam/recorder/stop_episode")
    label = node.create_client(LabelEpisode, "/wam/recorder/label_episode")

    started = ros.call(start, StartEpisode.Request(task="pick", instruction="pick the cube", operator_name="alice"))
    assert started.success, started.message
    refused = ros.call(start, StartEpisode.Request(task="again"))
    assert not refused.success and "already recording" in refused.message
    sent = {
        "/joint_states": [joint_state(i) for i in range(60)],
        image_topic: [image(i) for i in range(12)],
        trajectory_topic: [trajectory(i) for i in range(8)],
        gripper_topic: [GripperCommand(width_m=0.01 * i, force_n=20.0) for i in range(4)],
    }
    for i in range(60):
        for topic, messages in sent.items():
            if i < len(messages):
                pubs[topic].publish(messages[i])
    status.wait("messages_written", str(sum(map(len, sent.values())) + 1))
    stopped = ros.call(stop, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_SUCCESS, notes="clean grasp"))
    assert stopped.success and stopped.episode_path == started.episode_path

    types = {topic: type(messages[0]) for topic, messages in sent.items()} | {"/wam/safety/status": SafetyStatus}
    recorded = bag_messages(Path(started.episode_path), types)
    for topic, messages in sent.items():
        assert recorded[topic] == messages, topic
    assert recorded["/wam/safety/status"] == [latched]  # the latched mode opens the episode
    with BagReader(started.episode_path) as reader:  # the stored definitions decode our own types too
        assert reader.deserialize(next(reader.messages(["/wam/safety/status"]))).mode_name == "AUTONOMY"
    labels = read_labels(started.episode_path)
    assert (labels.task, labels.instruction, labels.operator_name, labels.outcome, labels.notes, labels.state) == (
        "pick", "pick the cube", "alice", "success", "clean grasp", "closed")
    assert labels.message_counts["/joint_states"] == 60 and labels.dropped_counts == {} and labels.stop_reason == "service"

    relabelled = ros.call(label, LabelEpisode.Request(outcome=StopEpisode.Request.OUTCOME_FAILURE, notes="dropped it later"))
    assert relabelled.success, relabelled.message
    labels = read_labels(started.episode_path)
    assert (labels.task, labels.outcome, labels.notes) == ("pick", "failure", "dropped it later")
    missing = ros.call(label, LabelEpisode.Request(episode_path=str(tmp_path / "nope"), task="x"))
    assert not missing.success and "not an episode bag" in missing.message
    not_recording = ros.call(stop, StopEpisode.Request())
    assert not not_recording.success and "no episode is being recorded" in not_recording.message

    second = ros.call(start, StartEpisode.Request(task="place"))
    assert second.success and second.episode_path != started.episode_path
    for i in range(10):
        pubs["/joint_states"].publish(joint_state(1000 + i))
    status.wait("messages_written", "11")
    recorder.send_signal(signal.SIGTERM)
    assert recorder.wait(timeout=15) == 0
    recorded = bag_messages(Path(second.episode_path), {"/joint_states": JointState})
    assert recorded["/joint_states"] == [joint_state(1000 + i) for i in range(10)]
    labels = read_labels(second.episode_path)
    assert labels.state == "closed" and labels.stop_reason == "shutdown" and labels.task == "place"
    assert (Path(started.episode_path) / "metadata.yaml").is_file()


def test_sigkilled_recorder_leaves_a_readable_bag(processes, ros, tmp_path):
    status = RecorderStatus(ros)
    publisher = ros.node.create_publisher(JointState, "/joint_states", qos.SENSORS)
    recorder = start_recorder(processes, tmp_path, events_executor=False)  # the other executor, covered here
    ros.wait_for_subscribers(publisher)
    status.wait("topics_recorded", "1")
    started = ros.call(ros.node.create_client(StartEpisode, "/wam/recorder/start_episode"), StartEpisode.Request(task="t"))
    assert started.success
    sent: list[JointState] = []
    running = threading.Event()
    running.set()

    def publish() -> None:
        while running.is_set():
            sent.append(joint_state(len(sent)))
            publisher.publish(sent[-1])
            time.sleep(0.005)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        wait_until(lambda: int(status.values.get("messages_written", "0")) >= 150, 20.0, "150 messages written")
        written_before_s = int(status.values["messages_written"])
        time.sleep(0.5)  # longer than chunk_interval_s: those messages must have reached the disk
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(timeout=10)
    finally:
        running.clear()
        thread.join()
    path = Path(started.episode_path)
    assert not (path / "metadata.yaml").exists()
    with BagReader(path) as reader:
        assert any("not closed" in p for p in reader.problems), reader.problems
        got = [deserialize_message(m.data, JointState) for m in reader.messages(["/joint_states"])]
    assert len(got) >= written_before_s
    assert got == sent[: len(got)]
    assert read_labels(path).state == "recording"
    # A recorder started on the same episodes directory finishes the bag: rosbag2 tools open it.
    processes.stop_all()
    start_recorder(processes, tmp_path)
    wait_until(lambda: (path / "metadata.yaml").is_file(), 30.0, "the restarted recorder to repair the bag")
    with Reader(path) as reader:
        assert sum(c.msgcount for c in reader.connections if c.topic == "/joint_states") == len(got)


def test_sim_resets_split_episodes_and_interventions_are_marked(processes, ros, tmp_path):
    status = RecorderStatus(ros)
    node = ros.node
    task_status = node.create_publisher(TaskStatus, "/wam/sim/task_status", qos.LATCHED)
    safety = node.create_publisher(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    joints = node.create_publisher(JointState, "/joint_states", qos.SENSORS)
    task_status.publish(TaskStatus(task="stack", episode=0))
    safety.publish(SafetyStatus(mode=SafetyStatus.MODE_IDLE))
    episodes = tmp_path / "episodes"
    start_recorder(processes, episodes, split_on_sim_reset=True)
    ros.wait_for_subscribers(joints)
    ros.wait_for_subscribers(task_status, count=2)  # the recorder's raw and typed subscriptions
    ros.wait_for_subscribers(safety, count=2)
    status.wait("topics_recorded", "3")
    assert not episodes.exists()  # the sim episode under way when the recorder started is not recorded

    task_status.publish(TaskStatus(task="stack", instruction="stack the red cube on the blue one", seed=7, episode=1))
    wait_until(lambda: len(list(episodes.glob("*/wam_episode.yaml"))) == 1, 15.0, "the first episode's labels")
    first = next(episodes.iterdir())
    written = lambda: int(status.values.get("messages_written", "0")) if status.values.get("episode") == str(first) else 0  # noqa: E731
    wait_until(lambda: written() >= 2, 15.0, "the latched task status and mode opening the episode")
    for mode in (SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_TELEOP, SafetyStatus.MODE_AUTONOMY):
        before = written()
        safety.publish(SafetyStatus(mode=mode))
        for i in range(5):
            joints.publish(joint_state(i))
        wait_until(lambda: written() >= before + 6, 15.0, f"mode {mode} and 5 joint states written")
    task_status.publish(TaskStatus(task="stack", instruction="stack the red cube on the blue one", seed=7, episode=1, success=True))
    task_status.publish(TaskStatus(task="stack", instruction="stack again", seed=8, episode=2))
    wait_until(lambda: len(list(episodes.glob("*/wam_episode.yaml"))) == 2, 15.0, "the second episode's labels")
    labels = read_labels(first)
    assert (labels.task, labels.instruction, labels.seed, labels.sim_episode) == ("stack", "stack the red cube on the blue one", 7, 1)
    assert (labels.outcome, labels.start_reason, labels.stop_reason, labels.state) == ("success", "sim_reset", "sim_reset", "closed")
    assert len(labels.intervention_segments_ns) == 1
    teleop, autonomy = labels.intervention_segments_ns[0]
    assert labels.start_ns < teleop < autonomy < labels.stop_ns
    second = next(p for p in episodes.iterdir() if p != first)
    assert read_labels(second).sim_episode == 2 and read_labels(second).instruction == "stack again"
