"""An episode as a rerun recording (``wam-ros view``): everything that happened on one timeline.

Entities (timeline ``time``: seconds from the episode's first frame):

- ``cameras/<camera>``: the frames the model sees (the episode's, 10 Hz);
- ``predicted/<camera>`` (with a checkpoint): the model's forward-dynamics prediction of that
  camera, logged at the time it predicts (``future_offset`` frames ahead), so it sits next to the
  real frame of the same instant;
- ``chunks/recorded`` (bags): every ActionChunk the inference node sent, as the "worm" of future
  TCP positions (URDF forward kinematics, base frame); ``chunks/policy`` (with a checkpoint): the
  chunk the model computes at the frame; ``tcp``: where the TCP was;
- ``joints/state/<name>``, ``joints/command/<name>``: measured and commanded joints and gripper;
- ``source``: who drove (``wam_ros.data.episodes.SOURCES`` index); ``events/modes``: each mode
  change with who asked and why; ``events/takeovers``: takeovers and hand-backs;
  ``events/safety``: the bridge's violations and stops (bags).

rerun (``rerun-sdk``, requirements-view.txt) is imported only here, when a recording is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wam_ros.data.bags import MODE_NAMES, BagReader, mode_changes, read_labels
from wam_ros.data.convert import SAFETY_STATUS_TOPIC, bag_namespace, bag_to_episode, default_image_sizes, recorded_topic, time_ns
from wam_ros.data.episodes import SOURCES, Episode, EpisodeDataset
from wam_ros.robot import RobotConfig

ACTION_CHUNK_TOPIC = "wam/action_chunk"
INSTALL_HINT = "wam-ros view needs rerun-sdk: .venv/bin/pip install -r requirements-view.txt (make setup installs it)"


def import_rerun() -> Any:
    """The rerun module, or ImportError with how to install it."""
    try:
        import rerun
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    return rerun


@dataclass
class BagEvents:
    """What a bag holds beyond the episode's frames: the chunks the model sent, the bridge's statuses."""

    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (stamp [ns], joint targets (H, dof))
    statuses: list[tuple[int, int, int, str, str]] = field(default_factory=list)  # as wam_ros.data.bags.mode_changes takes them
    safety: list[tuple[int, str]] = field(default_factory=list)  # (receive time [ns], violation or stop)


def read_bag(path: Path, robot: RobotConfig) -> tuple[Episode, BagEvents]:
    """The bag as an episode (what ``wam-ros convert`` would write) and its chunks and safety events."""
    events = BagEvents()
    with BagReader(path) as reader:
        episode, _ = bag_to_episode(reader, robot, 10.0, default_image_sizes(robot), labels=read_labels(path) if Path(path).is_dir() else None)
        last_stop = ""
        namespace = bag_namespace(reader.topics)
        chunk_topic, status_topic = (recorded_topic(name, namespace) for name in (ACTION_CHUNK_TOPIC, SAFETY_STATUS_TOPIC))
        for message in reader.messages([t for t in (chunk_topic, status_topic) if t in reader.topics]):
            msg = reader.deserialize(message)
            if message.topic == chunk_topic:
                targets = np.asarray(msg.joint_positions, float).reshape(int(msg.horizon), len(msg.joint_names))
                order = [list(msg.joint_names).index(j) for j in robot.arm.joint_names]
                events.chunks.append((time_ns(msg.header.stamp), targets[:, order]))
            else:
                events.statuses.append((message.timestamp_ns, time_ns(msg.mode_stamp), int(msg.mode), str(msg.mode_requester), str(msg.mode_reason)))
                events.safety += [(message.timestamp_ns, f"violation: {v}") for v in msg.violations]
                if msg.last_stop_reason and msg.last_stop_reason != last_stop:
                    events.safety.append((time_ns(msg.last_stop_stamp) or message.timestamp_ns, f"stop: {msg.last_stop_reason}"))
                    last_stop = msg.last_stop_reason
    return episode, events


def read_dataset_episode(root: Path, index: int) -> Episode:
    dataset = EpisodeDataset(root)
    if not 0 <= index < len(dataset):
        raise ValueError(f"{root}: no episode {index} (it has {len(dataset)})")
    return dataset.episode(index)


def write_recording(episode: Episode, robot: RobotConfig, out: Path, events: BagEvents | None = None, runtime: Any = None,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``out`` (.rrd) for ``episode``; see the module docstring for the entities."""
    rr = import_rerun()
    from wam_ros.control.kinematics import ChainKinematics

    kinematics = ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
    dof = robot.arm.dof
    names = [*robot.arm.joint_names, "gripper_width"][: episode.states.shape[1]]
    start_ns = int(episode.extra.get("start_ns", 0))
    rec = rr.RecordingStream("wam_ros_view")
    out.parent.mkdir(parents=True, exist_ok=True)
    rec.save(str(out))

    def at(seconds: float) -> None:
        rec.set_time("time", duration=float(seconds))

    def seconds_of(stamp_ns: int) -> float:
        return (stamp_ns - start_ns) / 1e9

    times = episode.timestamps if episode.timestamps is not None else np.arange(episode.length) / 10.0
    sources = episode.frame_sources if episode.frame_sources is not None else np.zeros(episode.length, np.int8)
    tcp = kinematics.positions(episode.states[:, :dof].astype(float))
    for t in range(episode.length):
        at(times[t])
        for camera, frames in episode.images.items():
            rec.log(f"cameras/{camera}", rr.Image(np.asarray(frames[t])))
        for j, name in enumerate(names):
            rec.log(f"joints/state/{name}", rr.Scalars([float(episode.states[t, j])]))
            if episode.actions is not None:
                rec.log(f"joints/command/{name}", rr.Scalars([float(episode.actions[t, j])]))
        rec.log("tcp", rr.Points3D([tcp[t]], radii=0.005))
        rec.log("source", rr.Scalars([float(sources[t])]))
        if t == 0 or sources[t] != sources[t - 1]:
            rec.log("events/source", rr.TextLog(f"{SOURCES[sources[t]]} drives", level="INFO"))
    if events is not None:
        for stamp, targets in events.chunks:
            at(max(seconds_of(stamp), 0.0))
            rec.log("chunks/recorded", rr.LineStrips3D([kinematics.positions(targets)], radii=0.003))
        for change in mode_changes(events.statuses):
            at(max(seconds_of(change.stamp_ns), 0.0))
            name = MODE_NAMES[change.mode] if 0 <= change.mode < len(MODE_NAMES) else str(change.mode)
            rec.log("events/modes", rr.TextLog(f"{name} (by {change.requester or '?'}: {change.reason})", level="INFO"))
        for stamp, text in events.safety:
            at(max(seconds_of(stamp), 0.0))
            rec.log("events/safety", rr.TextLog(text, level="WARN"))
    for takeover in episode.extra.get("takeovers", []):
        at(takeover["start_s"])
        rec.log("events/takeovers", rr.TextLog(f"take over by {takeover['requester']}: {takeover['reason']}", level="WARN"))
        at(takeover["start_s"] + takeover["duration_s"])
        rec.log("events/takeovers", rr.TextLog(f"{'hand back' if takeover['handed_back'] else 'ended'}: {takeover['end_reason']}", level="INFO"))
    if runtime is not None:
        _log_model(rec, rr, runtime, episode, kinematics, times, progress)
    rec.flush()
    rec.disconnect()
    return out


def _log_model(rec: Any, rr: Any, runtime: Any, episode: Episode, kinematics: Any, times: np.ndarray,
               progress: Callable[[int, int], None] | None) -> None:
    """At every ``execute_steps``-th frame: the policy's chunk (worm) and the forward-dynamics frames."""
    config = runtime.config
    dof = kinematics.dof
    anchors = list(range(0, episode.length, config.execute_steps))
    for done, t in enumerate(anchors):
        observed = np.maximum(t - config.obs_frame_stride * np.arange(config.n_obs_frames - 1, -1, -1), 0)
        images = {c: np.asarray(episode.images[c][observed]) for c in config.cameras}
        state = episode.states[observed]
        span = next((s for s in episode.subtasks if s.start <= t < s.end), None)
        instruction = span.instruction if span else episode.instruction
        chunk = runtime.policy(images, state, instruction)
        rec.set_time("time", duration=float(times[t]))
        rec.log("chunks/policy", rr.LineStrips3D([kinematics.positions(np.asarray(chunk)[:, :dof].astype(float))], radii=0.003))
        executed = episode.actions[np.minimum(t + np.arange(config.horizon), episode.length - 1)] if episode.actions is not None else chunk
        predicted, _ = runtime.imagine(images, state, instruction, actions=executed)
        future = min(t + config.future_offset, episode.length - 1)
        rec.set_time("time", duration=float(times[future]))
        for camera, frame in predicted.items():
            rec.log(f"predicted/{camera}", rr.Image(np.asarray(frame)))
        if progress is not None:
            progress(done + 1, len(anchors))


def recording_entities(path: Path) -> dict[str, tuple[int, set[str]]]:
    """What a recording holds, read back from the file: entity -> (rows, component columns)."""
    import_rerun()
    from rerun.chunk import RrdReader

    entities: dict[str, tuple[int, set[str]]] = {}
    for chunk in RrdReader(path).stream():
        rows, columns = entities.get(chunk.entity_path, (0, set()))
        names = {name for name in chunk.to_record_batch().schema.names if ":" in name}
        entities[chunk.entity_path] = (rows + chunk.num_rows, columns | names)
    return entities
