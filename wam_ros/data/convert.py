"""Episode bags -> the episode dataset (the same format as the sim demos), without rclpy.

For each bag (:func:`bag_to_episode`):

- Time: every stream is put on one clock, the sensors' header stamps (a stream whose stamps are
  zero or more than a second away from the recorder's receive times uses the receive times).
  Frames are taken at ``fps`` from the first instant every camera, the joint states and (when
  there are any) the arm commands have started, to the last instant every camera and the joint
  states still cover.
- State at frame time t: arm joint positions and the gripper width (from the finger joints through
  the robot config's map: their sum for the Panda, the knuckle angle for a Robotiq),
  linearly interpolated between joint-state samples.
- Images: per camera the newest frame at or before t (what the policy would have seen), centre
  cropped to the target aspect ratio and resized to the size the model wants.
- Action at t: what the safety bridge commanded for time t + 1/fps, the next frame (as in the sim
  demos, where the arm reaches action t at the next frame; the command for t itself is about where
  the arm already is, one frame behind the demos' convention): the backend's JointTrajectory
  points (a new trajectory replaces the rest of the previous one, as in ros2_control),
  linearly interpolated, and the last GripperCommand width (the measured width before the
  first one). A bag without arm commands gives a video-only episode (``actions`` None).
- Source of every frame (policy / operator / hold) from the SafetyStatus mode in effect, timed
  by the bridge's own ``mode_stamp``; intervention = TELEOP after AUTONOMY was seen in the
  episode. The takeovers (who, why, how long, how they ended) go into the episode's metadata.
- Subtasks: runs of the active ``/wam/task/subtask``; without those, the sim's TaskStatus
  (``subtask_instructions[subtasks_done]``).
- Task, instruction, success, seed: the recorder's labels (``wam_episode.yaml``), else the sim's
  TaskStatus of the recorded sim episode.

:func:`convert_bags` appends every bag to a dataset with a progress bar, skips bags already in
it, repairs a bag whose recorder died (:func:`wam_ros.data.bags.repair_bag`; the report notes it,
and a bag it cannot repair is read as it is), keeps going past a bad bag (its report names the
error) and finishes the episode being written before it honours Ctrl-C.
"""
from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wam_ros.data.bags import (BagError, BagReader, EpisodeLabels, ModeChange, frame_sources, intervention_mask, mode_changes,
                               read_labels, repair_bag, takeover_spans, unclosed_reason)
from wam_ros.data.episodes import SOURCE_OPERATOR, DatasetError, DatasetInfo, DatasetWriter, Episode, EpisodeDataset, SubtaskSpan
from wam_ros.robot import RobotConfig
from wam_ros.ros.names import JOINT_STATES_TOPIC, SAFETY_STATUS_TOPIC, SUBTASK_TOPIC, TASK_STATUS_TOPIC

SUBTASK_TERMINAL = (2, 3, 4)  # Subtask.STATUS_SUCCEEDED, STATUS_FAILED, STATUS_SKIPPED
GRIPPER_STATE_NAME = "gripper_width"
CLOCK_MISMATCH_NS = 1_000_000_000  # header stamps this far from receive times are on another clock
FRAME_TOLERANCE_NS = 1_000_000  # a frame stamped up to 1 ms after a frame time still counts for it
RESIZE_MODES = ("crop", "stretch")


class ConvertError(ValueError):
    """A bag cannot become an episode; the message names the bag and what is missing."""


# --------------------------------------------------------------------------------------------
# Dataset layout


def robot_dataset_info(robot: RobotConfig, fps: float, image_sizes: dict[str, tuple[int, int]]) -> DatasetInfo:
    """State and action names for ``robot``: arm joints, then the gripper width when it has one."""
    names = list(robot.arm.joint_names) + ([GRIPPER_STATE_NAME] if robot.gripper.joint_names else [])
    return DatasetInfo(fps=fps, robot=robot.name, joint_names=list(robot.arm.joint_names), state_names=names,
                       action_names=list(names), cameras=dict(image_sizes))


def default_image_sizes(robot: RobotConfig) -> dict[str, tuple[int, int]]:
    """(height, width) per camera from the robot config."""
    return {camera.name: (camera.height, camera.width) for camera in robot.cameras}


# --------------------------------------------------------------------------------------------
# Images

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_rgb(height: int, width: int, encoding: str, step: int, data: np.ndarray) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB."""
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise ConvertError(f"unsupported image encoding {encoding!r}; supported: {', '.join(_CHANNELS)}")
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if step < width * channels or data.size < step * height:
        raise ConvertError(f"image data ({data.size} bytes, step {step}) too small for {width}x{height} {encoding}")
    pixels = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def resize_image(image: np.ndarray, height: int, width: int, mode: str = "crop") -> np.ndarray:
    """Resize to (height, width); ``crop`` first cuts the centre to the target aspect ratio."""
    import cv2

    if mode not in RESIZE_MODES:
        raise ConvertError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if mode == "crop":
        if w * height > h * width:  # too wide
            keep = max(1, round(h * width / height))
            image = image[:, (w - keep) // 2 : (w - keep) // 2 + keep]
        else:
            keep = max(1, round(w * height / width))
            image = image[(h - keep) // 2 : (h - keep) // 2 + keep]
    shrinking = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# Reading a bag into time series


def time_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _stamp_ns(header: Any) -> int:
    return time_ns(header.stamp)


@dataclass
class _Series:
    """One stream: sample times (sensor stamps and receive times) and values."""

    stamps: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def add(self, stamp_ns: int, received_ns: int, value: Any) -> None:
        self.stamps.append(stamp_ns)
        self.received.append(received_ns)
        self.values.append(value)

    def times(self, name: str, notes: list[str]) -> np.ndarray:
        """Sample times on the common clock, in time order (values are reordered to match).

        All-zero stamps (the bridge's "start now" trajectories) mean receive times, silently;
        some zero, or stamps on another clock, also mean receive times, with a note.
        """
        stamps = np.array(self.stamps, dtype=np.int64)
        received = np.array(self.received, dtype=np.int64)
        if len(stamps) and np.all(stamps == 0):
            stamps = received
        elif len(stamps) and (np.any(stamps == 0) or abs(np.median(received - stamps)) > CLOCK_MISMATCH_NS):
            notes.append(f"{name}: header stamps unusable (some zero, or on another clock); using receive times")
            stamps = received
        order = np.argsort(stamps, kind="stable")
        self.values = [self.values[i] for i in order]
        return stamps[order]


def estimated_drops(times_ns: np.ndarray) -> int:
    """Messages missing from a periodic stream: gaps beyond 1.5 median periods, counted in periods."""
    if len(times_ns) < 3:
        return 0
    gaps = np.diff(times_ns)
    period = float(np.median(gaps))
    if period <= 0:
        return 0
    return int(np.sum(np.maximum(np.round(gaps[gaps > 1.5 * period] / period) - 1, 0)))


@dataclass
class BagStreams:
    """The streams of one bag that an episode is made of."""

    joints: dict[str, _Series]
    cameras: dict[str, _Series]  # values: resized RGB frames
    trajectories: _Series  # values: (joint_names, [(time_from_start_ns, positions)])
    gripper_commands: _Series  # values: width [m]
    modes: list[tuple[int, int, int, str, str]]  # (receive time, mode_stamp [ns], mode, requester, reason)
    subtasks: list[tuple[int, str, str, int]]  # (receive time, id, instruction, status)
    task_statuses: list[tuple[int, Any]]  # (receive time, TaskStatus)
    problems: list[str]


def bag_namespace(topics: Iterable[str]) -> str:
    """The namespace the stack was recorded under: ``/left`` for ``/left/joint_states``, "" for ``/joint_states``."""
    suffix = "/" + JOINT_STATES_TOPIC
    found = sorted(topic[: -len(suffix)] for topic in topics if topic.endswith(suffix))
    return found[0] if found else ""


def relative_topic(topic: str, namespace: str) -> str:
    """A recorded (fully qualified) name, or a config name, relative to ``namespace`` when it lies inside it."""
    if topic.startswith(namespace + "/"):
        return topic[len(namespace) + 1:]
    return topic


def recorded_topic(name: str, namespace: str) -> str:
    """A config's (relative or absolute) name as a stack under ``namespace`` records it."""
    return name if name.startswith("/") else f"{namespace}/{name}"


def read_streams(reader: BagReader, robot: RobotConfig, image_sizes: dict[str, tuple[int, int]], resize_mode: str,
                 on_message: Callable[[], None] | None = None) -> BagStreams:
    """Decode what an episode needs from an open bag (images are resized as they are read).

    Topic names are compared relative to the namespace the bag was recorded under
    (:func:`bag_namespace`), so a stack recorded under ``/left`` converts like one in the root.
    """
    namespace = bag_namespace(reader.topics)
    recorded = {relative_topic(topic, namespace): topic for topic in reader.topics}
    trajectory_topic, gripper_topic = (relative_topic(t, namespace) for t in (robot.backend.joint_trajectory_topic, robot.backend.gripper_command_topic))
    camera_topics = {relative_topic(robot.camera(name).image_topic, namespace): name for name in image_sizes}
    wanted_joints = list(robot.arm.joint_names) + list(robot.gripper.joint_names)
    streams = BagStreams({j: _Series() for j in wanted_joints}, {name: _Series() for name in image_sizes}, _Series(), _Series(),
                         [], [], [], list(reader.problems))
    topics = [JOINT_STATES_TOPIC, trajectory_topic, gripper_topic, SAFETY_STATUS_TOPIC, SUBTASK_TOPIC, TASK_STATUS_TOPIC, *camera_topics]
    for message in reader.messages([recorded[t] for t in topics if t in recorded]):
        msg = reader.deserialize(message)
        received = message.timestamp_ns
        topic = relative_topic(message.topic, namespace)
        if topic == JOINT_STATES_TOPIC:
            stamp = _stamp_ns(msg.header)
            for name, position in zip(msg.name, msg.position):
                if name in streams.joints:
                    streams.joints[name].add(stamp, received, float(position))
        elif topic in camera_topics:
            camera = camera_topics[topic]
            height, width = image_sizes[camera]
            rgb = image_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
            streams.cameras[camera].add(_stamp_ns(msg.header), received, resize_image(rgb, height, width, resize_mode))
        elif topic == trajectory_topic:
            points = [(int(p.time_from_start.sec) * 1_000_000_000 + int(p.time_from_start.nanosec), np.asarray(p.positions, float))
                      for p in msg.points]
            streams.trajectories.add(_stamp_ns(msg.header), received, (list(msg.joint_names), points))
        elif topic == gripper_topic:
            streams.gripper_commands.add(_stamp_ns(msg.header), received, float(msg.width_m))
        elif topic == SAFETY_STATUS_TOPIC:
            streams.modes.append((received, time_ns(msg.mode_stamp), int(msg.mode),
                                  str(msg.mode_requester), str(msg.mode_reason)))
        elif topic == SUBTASK_TOPIC:
            streams.subtasks.append((received, msg.id, msg.instruction, int(msg.status)))
        elif topic == TASK_STATUS_TOPIC:
            streams.task_statuses.append((received, msg))
        if on_message is not None:
            on_message()
    return streams


# --------------------------------------------------------------------------------------------
# Commands


def trajectory_samples(times_ns: np.ndarray, values: list[tuple[list[str], list[tuple[int, np.ndarray]]]],
                       joint_names: Sequence[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Commanded arm targets over time from JointTrajectory messages (already in time order).

    As in ros2_control's joint_trajectory_controller, a message starting at t replaces the rest
    of the trajectory being followed: points at or after t are dropped and, unless the new
    message has a point at t itself, the target moves on from where the old trajectory was at
    t (linear between points). Returns (times (N,), targets (N, dof)), piecewise linear.
    """
    out_times: list[int] = []
    out_targets: list[np.ndarray] = []
    for start, (names, points) in zip(times_ns.tolist(), values):
        missing = [j for j in joint_names if j not in names]
        if missing:
            raise ConvertError(f"{where}: a JointTrajectory lacks joints {missing} (has {names})")
        if any(len(positions) != len(names) for _, positions in points):
            raise ConvertError(f"{where}: a JointTrajectory point has a different number of positions than joint names ({len(names)})")
        columns = [names.index(j) for j in joint_names]
        if not points:
            continue
        current = None
        if out_times and out_times[-1] > start:  # the old trajectory was between two points at ``start``
            xp = np.array(out_times, dtype=np.float64)
            current = np.array([np.interp(float(start), xp, np.array(out_targets)[:, i]) for i in range(len(joint_names))])
        while out_times and out_times[-1] >= start:
            out_times.pop()
            out_targets.pop()
        if current is not None and start + points[0][0] > start:
            out_times.append(start)
            out_targets.append(current)
        for offset, positions in points:
            t = start + offset
            if out_times and t <= out_times[-1]:
                continue
            out_times.append(t)
            out_targets.append(positions[columns])
    return np.array(out_times, dtype=np.int64), np.array(out_targets, dtype=np.float64).reshape(len(out_times), len(joint_names))


def _interp_columns(times_ns: np.ndarray, sample_times_ns: np.ndarray, samples: np.ndarray) -> np.ndarray:
    x = (times_ns - sample_times_ns[0]).astype(np.float64)
    xp = (sample_times_ns - sample_times_ns[0]).astype(np.float64)
    return np.stack([np.interp(x, xp, samples[:, i]) for i in range(samples.shape[1])], axis=1)


# --------------------------------------------------------------------------------------------
# One bag -> one episode


@dataclass
class EpisodeReport:
    """What became of one bag."""

    bag: Path
    episode_index: int | None = None  # index in the dataset; None when not written
    frames: int = 0
    duration_s: float = 0.0
    has_actions: bool = False
    intervention_frames: int = 0
    operator_frames: int = 0
    takeovers: int = 0
    estimated_drops: dict[str, int] = field(default_factory=dict)  # per stream, from gaps in the stamps
    recorder_drops: dict[str, int] = field(default_factory=dict)  # per topic, counted by the recorder
    problems: list[str] = field(default_factory=list)  # warnings: recovered bag, clock, missing labels
    skipped: str = ""  # why the bag was not converted although it is fine (already in the dataset)
    error: str = ""  # why the bag could not be converted

    @property
    def drops(self) -> int:
        return sum(self.estimated_drops.values()) + sum(self.recorder_drops.values())


def _subtask_spans(streams: BagStreams, statuses: list[tuple[int, Any]], frame_times: np.ndarray) -> list[SubtaskSpan]:
    if streams.subtasks:
        events = sorted(streams.subtasks)
        stamps = np.array([e[0] for e in events], dtype=np.int64)
        keys = [(e[1], e[2]) if e[3] not in SUBTASK_TERMINAL else None for e in events]
    elif statuses and any(len(s.subtask_instructions) for _, s in statuses):
        stamps = np.array([t for t, _ in statuses], dtype=np.int64)
        keys = [(str(s.subtasks_done), s.subtask_instructions[s.subtasks_done]) if s.subtasks_done < len(s.subtask_instructions) else None
                for _, s in statuses]
    else:
        return []
    index = np.searchsorted(stamps, frame_times, side="right") - 1
    per_frame = [keys[i] if i >= 0 else None for i in index.tolist()]
    spans: list[SubtaskSpan] = []
    start = 0
    for k in range(1, len(per_frame) + 1):
        if k == len(per_frame) or per_frame[k] != per_frame[start]:
            if per_frame[start] is not None and per_frame[start][1]:
                spans.append(SubtaskSpan(per_frame[start][1], start, k))
            start = k
    return spans


def bag_to_episode(reader: BagReader, robot: RobotConfig, fps: float, image_sizes: dict[str, tuple[int, int]],
                   resize_mode: str = "crop", labels: EpisodeLabels | None = None,
                   on_message: Callable[[], None] | None = None) -> tuple[Episode, EpisodeReport]:
    """Turn one open bag into an :class:`Episode` at ``fps``; :class:`ConvertError` when it cannot."""
    where = str(reader.path)
    report = EpisodeReport(reader.path)
    streams = read_streams(reader, robot, image_sizes, resize_mode, on_message)
    namespace = bag_namespace(reader.topics)
    notes = streams.problems
    if labels is None:
        notes.append("no wam_episode.yaml: task, instruction and outcome come from the sim's TaskStatus if recorded")
    elif labels.state == "recording":
        notes.append("labels say the bag was still being recorded (the recorder was killed or is still writing)")

    joint_times: dict[str, np.ndarray] = {}
    for name, series in streams.joints.items():
        if not series.values:
            raise ConvertError(f"{where}: no {recorded_topic(JOINT_STATES_TOPIC, namespace)} samples for joint {name}")
        joint_times[name] = series.times(f"{recorded_topic(JOINT_STATES_TOPIC, namespace)}[{name}]", notes)
    camera_times: dict[str, np.ndarray] = {}
    for name, series in streams.cameras.items():
        if not series.values:
            raise ConvertError(f"{where}: no frames on {recorded_topic(robot.camera(name).image_topic, namespace)}")
        camera_times[name] = series.times(recorded_topic(robot.camera(name).image_topic, namespace), notes)
    has_actions = bool(streams.trajectories.values)
    if has_actions:
        command_times, command_targets = trajectory_samples(
            streams.trajectories.times(recorded_topic(robot.backend.joint_trajectory_topic, namespace), notes), streams.trajectories.values,
            robot.arm.joint_names, where)
        gripper_times = streams.gripper_commands.times(recorded_topic(robot.backend.gripper_command_topic, namespace), notes)

    starts = [t[0] for t in (*joint_times.values(), *camera_times.values())] + ([command_times[0]] if has_actions else [])
    ends = [t[-1] for t in (*joint_times.values(), *camera_times.values())]
    t_start, t_end = max(starts), min(ends)
    if t_end < t_start:
        raise ConvertError(f"{where}: the cameras, joint states{' and commands' if has_actions else ''} never overlap in time")
    period_ns = 1e9 / fps
    count = int(math.floor((t_end - t_start) / period_ns)) + 1
    frame_times = t_start + np.round(np.arange(count) * period_ns).astype(np.int64)

    arm = np.stack([np.interp((frame_times - t_start).astype(float), (joint_times[j] - t_start).astype(float),
                              streams.joints[j].values) for j in robot.arm.joint_names], axis=1)
    states = arm
    gripper_width = None
    if robot.gripper.joint_names:
        # The robot config's joint map: the sum of the Panda's finger joints, the Robotiq's knuckle angle.
        gripper_width = robot.gripper.width_from_joint_positions(
            np.interp((frame_times - t_start).astype(float), (joint_times[j] - t_start).astype(float), streams.joints[j].values)
            for j in robot.gripper.joint_names)
        states = np.concatenate([arm, np.asarray(gripper_width)[:, None]], axis=1)

    images = {}
    for name, times in camera_times.items():
        index = np.searchsorted(times, frame_times + FRAME_TOLERANCE_NS, side="right") - 1
        frames = streams.cameras[name].values
        images[name] = np.stack([frames[i] for i in index.tolist()]).astype(np.uint8)
        report.estimated_drops[recorded_topic(robot.camera(name).image_topic, namespace)] = estimated_drops(times)
    report.estimated_drops[recorded_topic(JOINT_STATES_TOPIC, namespace)] = estimated_drops(joint_times[robot.arm.joint_names[0]])

    actions = None
    if has_actions:
        target_times = frame_times + int(round(period_ns))  # the command for the next frame (module docstring)
        actions = _interp_columns(target_times, command_times, command_targets)
        if gripper_width is not None:
            gripper_action = np.asarray(gripper_width, dtype=np.float64).copy()
            if len(gripper_times):
                index = np.searchsorted(gripper_times, target_times, side="right") - 1
                widths = np.array(streams.gripper_commands.values, dtype=np.float64)
                gripper_action = np.where(index >= 0, widths[np.clip(index, 0, None)], gripper_action)
            actions = np.concatenate([actions, gripper_action[:, None]], axis=1)

    statuses = sorted(streams.task_statuses, key=lambda s: s[0])
    if labels is not None and labels.sim_episode >= 0:
        statuses = [s for s in statuses if int(s[1].episode) == labels.sim_episode]
    last_status = statuses[-1][1] if statuses else None
    changes = mode_changes(streams.modes)
    intervention = intervention_mask([(c.stamp_ns, c.mode) for c in changes], frame_times)
    sources = frame_sources(changes, frame_times)
    takeovers = takeover_spans(changes, int(max(ends)))  # to the end of the recording: a hand-back after the last frame counts
    success = None
    if labels is not None and labels.outcome != "unknown":
        success = labels.outcome == "success"
    elif last_status is not None:
        success = bool(last_status.success)
    task = (labels.task if labels else "") or (last_status.task if last_status else "")
    instruction = (labels.instruction if labels else "") or (last_status.instruction if last_status else "")
    if not instruction:
        notes.append("no instruction in the labels or the task status")
    seed = labels.seed if labels is not None and labels.seed is not None else (int(last_status.seed) if last_status else None)

    report.frames = count
    report.duration_s = (count - 1) / fps
    report.has_actions = has_actions
    report.intervention_frames = int(intervention.sum())
    report.operator_frames = int(np.sum(sources == SOURCE_OPERATOR))
    report.takeovers = len(takeovers)
    report.recorder_drops = dict(labels.dropped_counts) if labels else {}
    report.problems = notes
    episode = Episode(
        task=task, instruction=instruction, states=states.astype(np.float32), images=images,
        actions=None if actions is None else actions.astype(np.float32),
        timestamps=(frame_times - t_start) / 1e9, subtasks=_subtask_spans(streams, statuses, frame_times),
        intervention=intervention, frame_sources=sources, success=success, seed=seed, source=f"rosbag:{reader.path.resolve()}",
        extra={"bag": str(reader.path.resolve()), "start_ns": int(t_start),
               "operator": labels.operator_name if labels else "", "notes": labels.notes if labels else "",
               "start_reason": labels.start_reason if labels else "", "stop_reason": labels.stop_reason if labels else "",
               "problems": list(notes), "estimated_drops": report.estimated_drops, "recorder_drops": report.recorder_drops,
               "takeover_count": len(takeovers), "takeover_seconds": round(sum(t.duration_s for t in takeovers), 3),
               "operator_share": round(report.operator_frames / count, 4),
               "takeovers": [{"start_s": round((t.start_ns - int(t_start)) / 1e9, 3), "duration_s": round(t.duration_s, 3),
                              "requester": t.requester, "reason": t.reason, "ended_by": t.ended_by, "end_reason": t.end_reason,
                              "handed_back": t.handed_back} for t in takeovers],
               "camera_calibration": camera_calibration(robot)})
    return episode, report


def camera_calibration(robot: RobotConfig) -> dict[str, dict[str, Any]]:
    """Each camera's calibration in the robot config as the episode was converted (what a
    calibrated goal localiser trains with, docs/model.md; a later recalibration does not change it)."""
    return {c.name: {"parent_frame": c.parent_frame, "extrinsics_xyz_m": list(c.extrinsics_xyz_m), "extrinsics_quat_xyzw": list(c.extrinsics_quat_xyzw),
                     "intrinsics_fx_fy_cx_cy": list(c.intrinsics_fx_fy_cx_cy)} for c in robot.cameras}


# --------------------------------------------------------------------------------------------
# Handovers


@dataclass(frozen=True)
class HandoverStep:
    """The bridge's output around one mode switch: the largest joint step per output cycle."""

    stamp_ns: int
    from_mode: int
    to_mode: int
    step_rad: float  # max over joints and over the output pairs within the window around the switch


def cycle_steps(times_ns: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Largest joint change between consecutive outputs, per output cycle: a pair whose times lie k
    median periods apart (outputs lost by a starved recorder, or cycles a starved bridge skipped)
    counts as k cycles."""
    if len(times_ns) < 2:
        return np.zeros(0)
    gaps = np.diff(np.asarray(times_ns, dtype=np.int64)).astype(float)
    cycles = np.maximum(np.round(gaps / max(float(np.median(gaps)), 1.0)), 1.0)
    return np.max(np.abs(np.diff(targets, axis=0)), axis=1) / cycles


def handover_steps(times_ns: np.ndarray, targets: np.ndarray, changes: Sequence[ModeChange], window_ns: int) -> list[HandoverStep]:
    """For every switch between modes (after the first), the largest commanded joint step per output
    cycle (:func:`cycle_steps`) among the bridge's outputs (``times_ns`` (N,), ``targets`` (N, dof))
    within ``window_ns`` of the switch: what "jump-free" is measured by (compare with the bridge's
    step limit and its steps while moving)."""
    times_ns = np.asarray(times_ns, dtype=np.int64)
    steps_per_cycle = cycle_steps(times_ns, targets)
    result: list[HandoverStep] = []
    for previous, change in zip(changes, changes[1:]):
        inside = np.flatnonzero(np.abs(times_ns - change.stamp_ns) <= window_ns)
        if len(inside) < 2:
            continue
        result.append(HandoverStep(change.stamp_ns, previous.mode, change.mode, float(np.max(steps_per_cycle[inside[0] : inside[-1]]))))
    return result


def bag_handover_steps(reader: BagReader, robot: RobotConfig, window_s: float = 0.05) -> tuple[list[HandoverStep], np.ndarray]:
    """:func:`handover_steps` of a recorded episode (the bridge's JointTrajectory outputs and its
    SafetyStatus), and every step per output cycle (:func:`cycle_steps`) for comparison; names are
    read under the namespace the bag was recorded in (:func:`bag_namespace`)."""
    namespace = bag_namespace(reader.topics)
    topic, status_topic = (recorded_topic(name, namespace) for name in (robot.backend.joint_trajectory_topic, SAFETY_STATUS_TOPIC))
    times, targets, statuses = [], [], []
    for message in reader.messages([t for t in (topic, status_topic) if t in reader.topics]):
        msg = reader.deserialize(message)
        if message.topic == topic and msg.points:
            index = [list(msg.joint_names).index(j) for j in robot.arm.joint_names]
            times.append(message.timestamp_ns)
            targets.append(np.asarray(msg.points[0].positions, float)[index])
        elif message.topic == status_topic:
            statuses.append((message.timestamp_ns, time_ns(msg.mode_stamp), int(msg.mode), str(msg.mode_requester), str(msg.mode_reason)))
    if not targets:
        return [], np.zeros(0)
    order = np.argsort(times, kind="stable")
    times_ns, values = np.asarray(times, np.int64)[order], np.asarray(targets)[order]
    return handover_steps(times_ns, values, mode_changes(statuses), int(window_s * 1e9)), cycle_steps(times_ns, values)


# --------------------------------------------------------------------------------------------
# Many bags -> one dataset


def find_bags(paths: Sequence[Path | str]) -> list[Path]:
    """Bag directories (or bare .mcap files) named by ``paths``; a directory of bags expands to its bags."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BagError(f"{path}: no such file or directory")
        if path.is_file() or (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")):
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and ((p / "metadata.yaml").is_file() or any(p.glob("*.mcap"))))
        if not children:
            raise BagError(f"{path}: neither a bag nor a directory of bags")
        found.extend(children)
    return list(dict.fromkeys(found))


def _repair(bag: Path) -> str:
    """Finish a bag whose recorder died (:func:`repair_bag`); the note for the report, '' for a closed bag."""
    reason = unclosed_reason(bag) if bag.is_dir() else ""
    if not reason:
        return ""
    try:
        summary = repair_bag(bag)
    except BagError as error:
        return f"unclosed bag ({reason}), not repaired: {error}"
    return f"unclosed bag ({reason}), repaired: {summary.messages} messages kept, up to its last complete chunk"


@contextmanager
def _finish_before_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so an episode is never half written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def convert_bags(bags: Sequence[Path], out_dir: Path | str, robot: RobotConfig, fps: float = 10.0,
                 image_sizes: dict[str, tuple[int, int]] | None = None, resize_mode: str = "crop",
                 preview_video: bool = False, progress: bool = True) -> list[EpisodeReport]:
    """Append each bag as an episode to the dataset at ``out_dir``; one report per bag, in order."""
    from tqdm import tqdm

    image_sizes = image_sizes or default_image_sizes(robot)
    for name in image_sizes:
        robot.camera(name)  # KeyError naming the robot's cameras
    info = robot_dataset_info(robot, fps, image_sizes)
    writer = DatasetWriter(out_dir, info)
    converted = {record.get("source") for record in EpisodeDataset(out_dir).records}
    reports: list[EpisodeReport] = []
    bar = tqdm(bags, desc="bags", unit="bag", disable=not progress)
    for bag in bar:
        bar.set_postfix_str(Path(bag).name)
        source = f"rosbag:{Path(bag).resolve()}"
        if source in converted:
            reports.append(EpisodeReport(Path(bag), skipped="already in the dataset"))
            continue
        try:
            labels = read_labels(bag) if Path(bag).is_dir() else None
            note = _repair(Path(bag))
            with BagReader(bag) as reader, tqdm(total=sum(c for t, c in reader.topics.values()), desc="messages", unit="msg",
                                                leave=False, disable=not progress) as messages:
                if note:
                    reader.problems.insert(0, note)
                episode, report = bag_to_episode(reader, robot, fps, image_sizes, resize_mode, labels, lambda: messages.update())
            with _finish_before_interrupt():
                report.episode_index = writer.add(episode, video_fps=fps if preview_video else None)
            converted.add(source)
        except (BagError, ConvertError, DatasetError) as error:
            report = EpisodeReport(Path(bag), error=str(error))
        reports.append(report)
    return reports


def summarize(reports: Sequence[EpisodeReport]) -> dict[str, Any]:
    """Totals over the converted episodes: what `wam-ros convert` prints at the end."""
    done = [r for r in reports if r.episode_index is not None]
    frames = sum(r.frames for r in done)
    return {
        "episodes": len(done),
        "failed": sum(1 for r in reports if r.error),
        "skipped": sum(1 for r in reports if r.skipped),
        "duration_s": round(sum(r.duration_s for r in done), 3),
        "frames": frames,
        "video_only_episodes": sum(1 for r in done if not r.has_actions),
        "estimated_drops": sum(sum(r.estimated_drops.values()) for r in done),
        "recorder_drops": sum(sum(r.recorder_drops.values()) for r in done),
        "intervention_share": round(sum(r.intervention_frames for r in done) / frames, 4) if frames else 0.0,
        "operator_share": round(sum(r.operator_frames for r in done) / frames, 4) if frames else 0.0,
        "takeovers": sum(r.takeovers for r in done),
        "episodes_with_takeovers": sum(1 for r in done if r.takeovers),
        "episodes_with_problems": sum(1 for r in done if r.problems),
    }
