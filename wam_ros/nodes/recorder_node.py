"""Recorder node: chosen topics -> one rosbag2 (MCAP) bag per episode, for finetuning.

Subscribes with ``raw=True`` to each configured topic as soon as a publisher appears (type,
definition and QoS taken from the graph) and hands the serialized bytes to
:class:`wam_ros.data.bags.BagRecording`, which writes them on its own thread. Between
episodes messages are not kept, except the newest one of every latched (transient-local) topic,
which opens the next bag so each episode holds the mode, subtask and task status it began with.

Services: ``/wam/recorder/start_episode`` (StartEpisode), ``/wam/recorder/stop_episode``
(StopEpisode), ``/wam/recorder/label_episode`` (LabelEpisode). Automatic boundaries: a sim
reset (the ``/wam/sim/task_status`` episode counter changes) and, when configured, safety
bridge mode changes. Status on ``/diagnostics``. Ctrl-C / SIGTERM close the open bag. See
docs/recorder.md.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.duration import Infinite
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from wam_ros.data.bags import (
    OUTCOMES,
    BagError,
    BagRecording,
    BoundaryAction,
    EpisodeBoundaries,
    EpisodeExistsError,
    EpisodeLabels,
    MessageDefinitions,
    TopicSpec,
    intervention_segments,
    read_labels,
    repair_bag,
    unclosed_reason,
    write_labels,
)
from wam_ros_interfaces.msg import SafetyStatus, TaskStatus
from wam_ros.parameters import param
from wam_ros.robot import RobotConfig, load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.names import SAFETY_STATUS_TOPIC, TASK_STATUS_TOPIC
from wam_ros.ros.node import declare_parameters, run_node
from wam_ros_interfaces.srv import LabelEpisode, StartEpisode, StopEpisode



@dataclass
class Parameters:
    robot_config: str = param("", "robot YAML; filled in by bringup")
    episodes_dir: str = param("~/wam_ros_episodes", "directory that receives one bag directory per episode (created on the first)")
    record_standard_topics: bool = param(True, "record cameras, joint states, action chunks, bridge commands, safety status, teleop, subtask, plan and task status")
    extra_topics: list[str] = param([], "further topics to record")
    split_on_sim_reset: bool = param(False, "end the episode and begin the next one when the simulator resets (TaskStatus.episode changes)")
    split_on_mode_change: bool = param(False, "begin an episode when the bridge enters TELEOP or AUTONOMY, end it when it leaves both or a TELEOP episode turns AUTONOMY")
    chunk_interval_s: float = param(1.0, "longest time recorded data waits in memory before reaching the disk: what a SIGKILL can lose")
    queue_limit_mb: float = param(512.0, "messages waiting for the disk beyond this are dropped (and counted)")
    min_free_space_mb: float = param(256.0, "stop recording (bag closed, data kept) when the disk has less free space than this")
    subscription_depth: int = param(1000, "queue depth of a recording subscription [messages]: a 250 Hz stream survives 4 s of a CPU-starved recorder")
    image_subscription_depth: int = param(60, "queue depth for sensor_msgs/Image and CompressedImage topics [messages]: 2 s at 30 Hz, 55 MB at 640x480")
    discovery_period_s: float = param(0.5, "how often the graph is searched for publishers of the recorded topics")
    status_period_s: float = param(1.0, "period of the recorder's status on /diagnostics")
    repair_unclosed_bags: bool = param(True, "at start-up, finish bags in episodes_dir that an earlier recorder left unclosed (killed), so rosbag2 tools open them")
    events_executor: bool = param(True, "spin rclpy's EventsExecutor (a quarter of the CPU per message); false: the SingleThreadedExecutor (see docs/recorder.md)")


def share_dirs() -> list[Path]:
    """Where ``<package>/msg/<Name>.msg`` files are installed: this Python's prefix and the ament prefixes."""
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys(Path(p) / "share" for p in prefixes))


def standard_topics(robot: RobotConfig) -> list[str]:
    """What a finetuning episode needs: observations, commands at every stage, modes and task context."""
    topics = ["joint_states", "wam/action_chunk", robot.backend.joint_trajectory_topic, robot.backend.gripper_command_topic,
              robot.backend.target_pose_topic, robot.backend.gains_topic, SAFETY_STATUS_TOPIC, "wam/teleop/command",
              "wam/teleop/joint_command", "wam/teleop/gripper", "wam/task/subtask", "wam/task/plan", TASK_STATUS_TOPIC]
    for camera in robot.cameras:
        topics += [camera.image_topic, camera.camera_info_topic] + ([camera.depth_topic] if camera.depth else [])
    return list(dict.fromkeys(topics))


def _bag_time(duration: Any) -> QosTime:
    if duration == Infinite:
        return QosTime(2147483647, 4294967295)
    sec, nsec = divmod(duration.nanoseconds, 1_000_000_000)
    return QosTime(sec, nsec)


def bag_qos(profile: QoSProfile) -> Qos:
    """rclpy QoS -> the rosbags record stored in metadata.yaml (same enum numbering as rmw)."""
    return Qos(QosHistory(int(profile.history)), profile.depth, QosReliability(int(profile.reliability)),
               QosDurability(int(profile.durability)), _bag_time(profile.deadline), _bag_time(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), _bag_time(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def message_class(msgtype: str) -> type:
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _outcome(index: int) -> str:
    """The outcome a service request's ``outcome`` field names (its index in OUTCOMES)."""
    if index >= len(OUTCOMES):
        raise BagError(f"unknown outcome {index}; expected 0 (unknown), 1 (success) or 2 (failure)")
    return OUTCOMES[index]


class Recorder(Node):
    """Records episodes into rosbag2 MCAP bags; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.params = declare_parameters(self, Parameters)
        self.robot = load_robot_config(self.params.robot_config or "panda_sim")
        self.episodes_dir = Path(self.params.episodes_dir).expanduser()
        self.definitions = MessageDefinitions(share_dirs())
        wanted = standard_topics(self.robot) if self.params.record_standard_topics else []
        # Relative names resolve in this node's namespace; the bag stores the fully qualified ones.
        self.wanted = list(dict.fromkeys(self.resolve_topic_name(topic) for topic in wanted + list(self.params.extra_topics)))
        if not self.wanted:
            raise ValueError("nothing to record: record_standard_topics is false and extra_topics is empty")
        self.topics: dict[str, TopicSpec] = {}
        self.skipped: dict[str, str] = {}  # topic -> why it is not recorded
        self.latched_last: dict[str, bytes] = {}
        self.recording: BagRecording | None = None
        self.labels: EpisodeLabels | None = None
        self.mode_samples: list[tuple[int, int]] = []
        self.last_closed: Path | None = None
        self.last_error = ""
        self.mode: int | None = None
        self.task_status: TaskStatus | None = None
        self.boundaries = EpisodeBoundaries(self.params.split_on_sim_reset, self.params.split_on_mode_change)

        self.create_service(StartEpisode, "wam/recorder/start_episode", self._on_start)
        self.create_service(StopEpisode, "wam/recorder/stop_episode", self._on_stop)
        self.create_service(LabelEpisode, "wam/recorder/label_episode", self._on_label)
        # Latched, but deeper than one: a success status followed at once by a reset must both arrive.
        status_qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(SafetyStatus, SAFETY_STATUS_TOPIC, self._on_safety_status, status_qos)
        self.create_subscription(TaskStatus, TASK_STATUS_TOPIC, self._on_task_status, status_qos)
        self.diagnostics = self.create_publisher(DiagnosticArray, "diagnostics", qos.COMMANDS)
        self.create_timer(self.params.discovery_period_s, self._discover)
        self.create_timer(0.2, self._check_writer)
        self.create_timer(self.params.status_period_s, self._publish_status)
        self.get_logger().info(f"recording {len(self.wanted)} topics into {self.episodes_dir} once publishers appear")
        if self.params.repair_unclosed_bags:
            threading.Thread(target=self._repair_unclosed_bags, name="bag_repair", daemon=True).start()

    def _repair_unclosed_bags(self) -> None:
        """Finish the bags of an earlier recorder that died (SIGKILL, power loss), so standard readers open them."""
        if not self.episodes_dir.is_dir():
            return
        for bag in sorted(path for path in self.episodes_dir.iterdir() if path.is_dir()):
            reason = unclosed_reason(bag)
            if not reason:
                continue
            try:
                summary = repair_bag(bag)
                self.get_logger().warning(f"repaired {bag} ({reason}): {summary.messages} messages kept")
            except BagError as error:
                self.get_logger().error(f"cannot repair {bag}: {error}")

    # ---------------------------------------------------------------- topics

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.topics or topic in self.skipped or topic not in types:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            if len(types[topic]) != 1:
                self._skip(topic, f"published with several types {types[topic]}")
                continue
            msgtype = types[topic][0]
            try:
                spec = self.definitions.topic(topic, msgtype, [bag_qos(p.qos_profile) for p in publishers])
                cls = message_class(msgtype)
            except (BagError, ImportError, AttributeError, ValueError) as error:
                self._skip(topic, str(error))
                continue
            hashes = {str(p.topic_type_hash) for p in publishers} - {""}
            if any(h.startswith("RIHS01_") for h in hashes) and spec.type_hash not in hashes:
                self._skip(topic, f"publishers use {msgtype} hashes {sorted(hashes)}, this install defines {spec.type_hash}")
                continue
            reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
            latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
            image = msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
            profile = QoSProfile(
                depth=self.params.image_subscription_depth if image else self.params.subscription_depth, history=HistoryPolicy.KEEP_LAST,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.topics[topic] = spec
            events = SubscriptionEventCallbacks(message_lost=lambda info, t=topic: self._on_lost(t, info.total_count_change))
            self.create_subscription(cls, topic, lambda data, t=topic, keep=latched: self._on_message(t, data, keep), profile,
                                     raw=True, event_callbacks=events)
            if self.recording is not None:
                self.recording.add_topic(spec)
            self.get_logger().info(f"recording {topic} ({msgtype}{', latched' if latched else ''})")

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic] = reason
        self.get_logger().warning(f"not recording {topic}: {reason}")

    def _on_message(self, topic: str, data: bytes, latched: bool) -> None:
        if latched:
            self.latched_last[topic] = data
        if self.recording is not None:
            self.recording.submit(topic, self.get_clock().now().nanoseconds, data)

    def _on_lost(self, topic: str, count: int) -> None:
        if self.recording is not None:
            self.recording.note_lost(topic, count)

    # ---------------------------------------------------------------- episodes

    def _episode_path(self) -> Path:
        base = f"{self.robot.name}_{time.strftime('%Y%m%d-%H%M%S')}"
        path, index = self.episodes_dir / base, 1
        while path.exists():
            path, index = self.episodes_dir / f"{base}_{index}", index + 1
        return path

    def start_episode(self, task: str, instruction: str, operator_name: str, reason: str) -> Path:
        """Open a new bag; raises BagError (recording already, no clock, disk full) with the reason."""
        if self.recording is not None:
            raise BagError(f"already recording {self.recording.path}; stop that episode first")
        now_ns = self.get_clock().now().nanoseconds
        if now_ns == 0:
            raise BagError("the clock is not running (use_sim_time without /clock)")
        try:
            self.episodes_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BagError(f"{self.episodes_dir}: cannot create the episodes directory: {error.strerror}") from None
        free = shutil.disk_usage(self.episodes_dir).free
        if free < self.params.min_free_space_mb * 2**20:
            raise BagError(f"{self.episodes_dir}: only {free / 2**20:.0f} MiB free, below the {self.params.min_free_space_mb:.0f} MiB reserve")
        status = self.task_status
        for _ in range(10):
            try:
                recording = BagRecording(self._episode_path(), list(self.topics.values()), self.params.chunk_interval_s,
                                         int(self.params.queue_limit_mb * 2**20), int(self.params.min_free_space_mb * 2**20))
                break
            except EpisodeExistsError:  # another recorder took the name in the meantime
                continue
        else:
            raise BagError(f"{self.episodes_dir}: no free episode name")
        labels = EpisodeLabels(
            robot=self.robot.name, task=task or (status.task if status else ""),
            instruction=instruction or (status.instruction if status else ""), operator_name=operator_name,
            start_ns=now_ns, start_reason=reason, sim_episode=int(status.episode) if status else -1,
            seed=int(status.seed) if status else None)
        try:
            write_labels(recording.path, labels)
        except BagError:
            recording.close()
            raise
        for topic, data in self.latched_last.items():
            recording.submit(topic, now_ns, data)
        self.recording, self.labels = recording, labels
        self.mode_samples = [(now_ns, self.mode)] if self.mode is not None else []
        self.get_logger().info(f"episode started ({reason}): {recording.path}")
        return recording.path

    def stop_episode(self, outcome: str, notes: str, reason: str) -> Path:
        """Close the bag and write its labels; returns the bag directory."""
        recording, labels = self.recording, self.labels
        if recording is None or labels is None:
            raise BagError("no episode is being recorded")
        self.recording = None
        summary = recording.close()
        labels.stop_ns = self.get_clock().now().nanoseconds
        labels.outcome = outcome if outcome != "unknown" else labels.outcome
        labels.notes = notes or labels.notes
        labels.stop_reason = reason
        labels.error = summary.error
        labels.state = "failed" if summary.error else "closed"
        labels.message_counts = summary.message_counts
        labels.dropped_counts = {t: c.dropped + c.lost for t, c in recording.counts.items() if c.dropped + c.lost}
        labels.intervention_segments_ns = [list(s) for s in intervention_segments(self.mode_samples, labels.stop_ns)]
        self.last_closed = recording.path
        try:
            write_labels(recording.path, labels)
        except BagError as error:
            self.last_error = str(error)
            self.get_logger().error(str(error))
        dropped = sum(labels.dropped_counts.values())
        log = self.get_logger().error if summary.error else self.get_logger().info
        log(f"episode stopped ({reason}): {recording.path}: {summary.messages} messages, {dropped} dropped"
            + (f"; {summary.error}" if summary.error else ""))
        return recording.path

    def _check_writer(self) -> None:
        """A failed writer (disk full, I/O error) ends the episode with its error in the labels."""
        if self.recording is not None and self.recording.error is not None:
            self.last_error = str(self.recording.error)
            self.stop_episode("unknown", "", "write error")

    # ---------------------------------------------------------------- automatic boundaries

    def _on_task_status(self, msg: TaskStatus) -> None:
        self.task_status = msg
        self._apply(self.boundaries.on_task_status(int(msg.episode), bool(msg.success), self.recording is not None))

    def _on_safety_status(self, msg: SafetyStatus) -> None:
        if msg.mode != self.mode and self.recording is not None:
            self.mode_samples.append((self.get_clock().now().nanoseconds, int(msg.mode)))
        self.mode = int(msg.mode)
        self._apply(self.boundaries.on_mode(self.mode, self.recording is not None))

    def _apply(self, actions: list[BoundaryAction]) -> None:
        for action in actions:
            try:
                if action.kind == "stop":
                    self.stop_episode(action.outcome, "", action.reason)
                else:
                    operator = "autonomy" if self.mode == SafetyStatus.MODE_AUTONOMY else ""
                    self.start_episode("", "", operator, action.reason)
            except BagError as error:
                self._report(error)

    def _report(self, error: Exception) -> None:
        self.last_error = str(error)
        self.get_logger().error(str(error))

    # ---------------------------------------------------------------- services

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        try:
            path = self.start_episode(request.task, request.instruction, request.operator_name, "service")
            response.success, response.message, response.episode_path = True, "recording", str(path)
        except BagError as error:
            self._report(error)
            response.success, response.message = False, str(error)
        return response

    def _on_stop(self, request: StopEpisode.Request, response: StopEpisode.Response) -> StopEpisode.Response:
        try:
            path = self.stop_episode(_outcome(request.outcome), request.notes, "service")
            labels = read_labels(path)
            response.success = labels is not None and labels.state == "closed"
            response.message = labels.error if labels and labels.error else "closed"
            response.episode_path = str(path)
        except BagError as error:
            response.success, response.message = False, str(error)
        return response

    def _on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        recording = self.recording
        path = Path(request.episode_path) if request.episode_path else self.last_closed
        if path is not None and not path.is_absolute():
            path = self.episodes_dir / path
        current = recording is not None and (path is None or path == recording.path)
        try:
            outcome = _outcome(request.outcome)
            if current:
                assert recording is not None and self.labels is not None
                path, labels = recording.path, self.labels
            elif path is None:
                raise BagError("no episode recorded yet; give episode_path")
            else:
                labels = read_labels(path)
                if labels is None:
                    raise BagError(f"{path}: not an episode bag (no labels file)")
            labels.task = request.task or labels.task
            labels.instruction = request.instruction or labels.instruction
            labels.operator_name = request.operator_name or labels.operator_name
            labels.outcome = outcome if request.outcome else labels.outcome
            labels.notes = request.notes or labels.notes
            write_labels(path, labels)
            response.success, response.message = True, f"labelled {path}"
        except BagError as error:
            response.success, response.message = False, str(error)
        return response

    # ---------------------------------------------------------------- status and shutdown

    def _publish_status(self) -> None:
        status = DiagnosticStatus(name="wam_ros: recorder", hardware_id=self.robot.name)
        recording = self.recording
        values = {"episodes_dir": str(self.episodes_dir), "topics_recorded": str(len(self.topics)),
                  "topics_skipped": ", ".join(sorted(self.skipped)), "latched_messages_held": str(len(self.latched_last)),
                  "last_error": self.last_error,
                  "last_episode": str(self.last_closed or "")}
        if recording is not None:
            counts = list(recording.counts.values())
            dropped = sum(c.dropped + c.lost for c in counts)
            values.update(episode=str(recording.path), messages_written=str(sum(c.written for c in counts)),
                          messages_dropped=str(sum(c.dropped for c in counts)), messages_lost=str(sum(c.lost for c in counts)),
                          queue_mb=f"{recording.queued_bytes / 2**20:.1f}",
                          queue_peak_mb=f"{recording.max_queued_bytes / 2**20:.1f}")
            status.level = DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK
            status.message = f"recording {recording.path.name}"
        else:
            status.level = DiagnosticStatus.ERROR if self.last_error else DiagnosticStatus.OK
            status.message = self.last_error or "idle"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(array)

    def destroy_node(self) -> None:
        """Ctrl-C, SIGTERM or shutdown: close the open bag properly first."""
        if self.recording is not None:
            try:
                self.stop_episode("unknown", "", "shutdown")
            except BagError as error:
                self.get_logger().error(str(error))
        super().destroy_node()


class EventsSpinner:
    """rclpy's EventsExecutor, driven by ``spin_once``.

    It takes a third of the CPU per message of the SingleThreadedExecutor (16 % vs 44 % of a
    core for 500 Hz joint states + /clock), which matters for a node that sees every message;
    its own ``spin()`` in this rclpy neither runs timers nor returns on shutdown.
    """

    def __init__(self) -> None:
        from rclpy.experimental import EventsExecutor

        self.executor = EventsExecutor()
        self.context: Any = None

    def add_node(self, node: Node) -> None:
        self.executor.add_node(node)
        self.context = node.context

    def spin(self) -> None:
        while self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)


def main() -> int:
    made: list[Recorder] = []

    def make_node() -> Recorder:
        made.append(Recorder())
        return made[-1]

    # run_node makes the executor after the node, so the node's parameter can choose it.
    return run_node(make_node, executor=lambda: EventsSpinner() if made[0].params.events_executor else SingleThreadedExecutor())


if __name__ == "__main__":
    sys.exit(main())
