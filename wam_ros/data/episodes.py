"""The wam_ros episode dataset: what sim demos and converted rosbags become, what training reads.

LeRobot-v3-like layout (see docs/dataset.md)::

    DIR/meta/info.json          fps, robot, joint names, feature shapes and units, camera sizes, totals
    DIR/meta/episodes.jsonl     one line per episode: task, instruction, length, success, subtasks, source
    DIR/meta/stats.json         normalisation statistics (mean, std, min, max, q01, q99) per feature
    DIR/data/episode_000000.parquet   per-frame table: timestamp, frame_index, observation.state, action, ...
    DIR/images/<camera>/episode_000000.npy   uint8 frames (T, H, W, 3), memory-mappable
    DIR/videos/episode_000000.mp4          optional preview for people (all cameras side by side)

Episodes are written file by file to temporary names and renamed, the episode index line is
appended last, and the statistics are rewritten after every episode: an interrupted writer
leaves every completed episode readable and never overwrites an existing one.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from wam_ros.files import write_atomic

FORMAT_NAME = "wam_ros.episodes"
FORMAT_VERSION = 1
STATE = "observation.state"
ACTION = "action"
#: Who drove the arm at a frame (the ``source`` column, int8 codes in this order): "demo" when the
#: data says nothing about it (sim demos, bags without the safety bridge's status), "policy"
#: (AUTONOMY), "operator" (TELEOP), "hold" (IDLE, HOLD, ESTOP: nobody, the arm stands or brakes).
SOURCES = ("demo", "policy", "operator", "hold")
SOURCE_DEMO, SOURCE_POLICY, SOURCE_OPERATOR, SOURCE_HOLD = range(len(SOURCES))


class DatasetError(ValueError):
    """A dataset directory is missing, malformed or inconsistent with what is being written."""


@dataclass(frozen=True)
class SubtaskSpan:
    """A subtask's instruction and its frame range [start, end) within the episode."""

    instruction: str
    start: int
    end: int


@dataclass
class Episode:
    """One episode in memory. ``actions`` is None for video-only episodes (no action labels)."""

    task: str
    instruction: str
    states: np.ndarray  # (T, state_dim) float32
    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    actions: np.ndarray | None = None  # (T, action_dim) float32; row t = target commanded at frame t
    timestamps: np.ndarray | None = None  # (T,) seconds from the episode start; default t / fps
    subtasks: list[SubtaskSpan] = field(default_factory=list)
    intervention: np.ndarray | None = None  # (T,) bool: a person was driving (TELEOP inside autonomy)
    frame_sources: np.ndarray | None = None  # (T,) int8 index into SOURCES; None: all "demo"
    success: bool | None = None
    seed: int | None = None
    source: str = "sim"  # "sim", "rosbag:<path>", ...
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable metadata

    @property
    def length(self) -> int:
        return int(self.states.shape[0])

    def subtask_index(self) -> np.ndarray:
        """Per-frame index into ``subtasks`` (-1 where no subtask is active)."""
        index = np.full(self.length, -1, dtype=np.int32)
        for i, span in enumerate(self.subtasks):
            index[span.start : span.end] = i
        return index

    def validate(self, info: "DatasetInfo") -> None:
        """Raise DatasetError when shapes or dtypes disagree with the dataset's declared features."""
        t = self.length
        if t == 0:
            raise DatasetError("episode has no frames")
        if self.states.shape != (t, len(info.state_names)):
            raise DatasetError(f"states have shape {self.states.shape}, expected ({t}, {len(info.state_names)})")
        if self.actions is not None and self.actions.shape != (t, len(info.action_names)):
            raise DatasetError(f"actions have shape {self.actions.shape}, expected ({t}, {len(info.action_names)})")
        for name, (height, width) in info.cameras.items():
            frames = self.images.get(name)
            if frames is None:
                raise DatasetError(f"episode has no frames for camera {name!r}")
            if frames.shape != (t, height, width, 3) or frames.dtype != np.uint8:
                raise DatasetError(f"camera {name!r} frames are {frames.dtype}{frames.shape}, expected uint8({t}, {height}, {width}, 3)")
        extra_cameras = set(self.images) - set(info.cameras)
        if extra_cameras:
            raise DatasetError(f"episode has frames for undeclared cameras {sorted(extra_cameras)}")
        for array, name in ((self.states, "states"), (self.actions, "actions")):
            if array is not None and not np.all(np.isfinite(array)):
                raise DatasetError(f"{name} contain non-finite values")
        if self.frame_sources is not None and (np.shape(self.frame_sources) != (t,) or not np.all(
                (np.asarray(self.frame_sources) >= 0) & (np.asarray(self.frame_sources) < len(SOURCES)))):
            raise DatasetError(f"frame sources must be {t} codes in [0, {len(SOURCES)})")
        for span in self.subtasks:
            if not 0 <= span.start < span.end <= t:
                raise DatasetError(f"subtask {span.instruction!r} spans [{span.start}, {span.end}) outside [0, {t})")


@dataclass(frozen=True)
class DatasetInfo:
    """What every episode of a dataset shares (meta/info.json)."""

    fps: float
    robot: str
    joint_names: list[str]
    state_names: list[str]
    action_names: list[str]
    cameras: dict[str, tuple[int, int]]  # name -> (height, width)
    state_units: str = "rad for arm joints, m for the gripper width"
    action_units: str = "joint position targets in rad, gripper width target in m"

    def to_json(self, totals: dict[str, int]) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **asdict(self),
            "cameras": {k: {"height": h, "width": w} for k, (h, w) in self.cameras.items()},
            "features": {
                "timestamp": {"dtype": "float64", "shape": [1], "unit": "s from the episode start"},
                "frame_index": {"dtype": "int64", "shape": [1]},
                STATE: {"dtype": "float32", "shape": [len(self.state_names)], "names": self.state_names, "unit": self.state_units},
                ACTION: {"dtype": "float32", "shape": [len(self.action_names)], "names": self.action_names, "unit": self.action_units},
                "subtask_index": {"dtype": "int32", "shape": [1]},
                "intervention": {"dtype": "bool", "shape": [1]},
                "source": {"dtype": "int8", "shape": [1], "names": list(SOURCES)},
                **{f"observation.images.{k}": {"dtype": "uint8", "shape": [h, w, 3], "unit": "rgb8"} for k, (h, w) in self.cameras.items()},
            },
            **totals,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> "DatasetInfo":
        if data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{where}: not a {FORMAT_NAME} dataset (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: dataset version {data.get('version')} is not supported (expected {FORMAT_VERSION})")
        try:
            return cls(
                fps=float(data["fps"]),
                robot=data["robot"],
                joint_names=list(data["joint_names"]),
                state_names=list(data["state_names"]),
                action_names=list(data["action_names"]),
                cameras={k: (int(v["height"]), int(v["width"])) for k, v in data["cameras"].items()},
                state_units=data.get("state_units", ""),
                action_units=data.get("action_units", ""),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{where}: malformed info ({type(error).__name__}: {error})") from None


class _RunningStats:
    """Exact mean/std/min/max and approximate quantiles (from a bounded reservoir) per feature."""

    def __init__(self, dim: int, reservoir: int = 20000, seed: int = 0) -> None:
        self.count = 0
        self.sum = np.zeros(dim)
        self.sum_sq = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.sample = np.zeros((0, dim))
        self.reservoir = reservoir
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        seen = self.count
        self.count += len(values)
        self.sum += values.sum(0)
        self.sum_sq += (values**2).sum(0)
        self.min = np.minimum(self.min, values.min(0))
        self.max = np.maximum(self.max, values.max(0))
        # Reservoir sampling (Algorithm R): every value seen so far is in the sample with the same
        # probability, so the quantiles do not lean towards the latest episodes.
        free = max(self.reservoir - len(self.sample), 0)
        self.sample = np.concatenate([self.sample, values[:free]])
        rest = values[free:]
        if len(rest):
            positions = seen + free + np.arange(len(rest))  # 0-based index of each value in the stream
            slots = (self.rng.random(len(rest)) * (positions + 1)).astype(np.int64)
            keep = slots < self.reservoir
            self.sample[slots[keep]] = rest[keep]

    def to_json(self) -> dict[str, list[float]]:
        mean = self.sum / max(self.count, 1)
        std = np.sqrt(np.maximum(self.sum_sq / max(self.count, 1) - mean**2, 0.0))
        return {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "q01": np.quantile(self.sample, 0.01, axis=0).tolist(),
            "q99": np.quantile(self.sample, 0.99, axis=0).tolist(),
            "count": [float(self.count)],
        }


def _episode_name(index: int) -> str:
    return f"episode_{index:06d}"


class DatasetWriter:
    """Append episodes to a dataset directory (created if missing, extended if it exists)."""

    def __init__(self, root: Path | str, info: DatasetInfo) -> None:
        self.root = Path(root)
        (self.root / "meta").mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        self.info = info
        self.state_stats = _RunningStats(len(info.state_names))
        self.action_stats = _RunningStats(len(info.action_names))
        self.num_episodes = 0
        self.num_frames = 0
        if (self.root / "meta" / "info.json").exists():
            existing = EpisodeDataset(self.root)
            if existing.info != info:
                raise DatasetError(f"{self.root}: exists with a different layout ({existing.info} != {info})")
            for index in range(len(existing)):
                episode = existing.episode(index, load_images=False)
                self._account(episode)
        self._write_info()

    def _account(self, episode: Episode) -> None:
        self.num_episodes += 1
        self.num_frames += episode.length
        self.state_stats.add(episode.states)
        if episode.actions is not None:
            self.action_stats.add(episode.actions)

    def add(self, episode: Episode, video_fps: float | None = None) -> int:
        """Write one episode; returns its index. ``video_fps`` also writes an mp4 preview."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        episode.validate(self.info)
        index = self.num_episodes
        name = _episode_name(index)
        if (self.root / "data" / f"{name}.parquet").exists():
            raise DatasetError(f"{self.root}: {name} already exists; refusing to overwrite it")
        t = episode.length
        timestamps = episode.timestamps if episode.timestamps is not None else np.arange(t) / self.info.fps
        actions = episode.actions if episode.actions is not None else np.full((t, len(self.info.action_names)), np.nan, np.float32)
        intervention = episode.intervention if episode.intervention is not None else np.zeros(t, bool)
        sources = episode.frame_sources if episode.frame_sources is not None else np.full(t, SOURCE_DEMO, np.int8)
        table = pa.table(
            {
                "timestamp": pa.array(np.asarray(timestamps, np.float64)),
                "frame_index": pa.array(np.arange(t, dtype=np.int64)),
                STATE: pa.FixedSizeListArray.from_arrays(pa.array(episode.states.astype(np.float32).ravel()), len(self.info.state_names)),
                ACTION: pa.FixedSizeListArray.from_arrays(pa.array(actions.astype(np.float32).ravel()), len(self.info.action_names)),
                "subtask_index": pa.array(episode.subtask_index()),
                "intervention": pa.array(np.asarray(intervention, bool)),
                "source": pa.array(np.asarray(sources, np.int8)),
            }
        )
        for camera, frames in episode.images.items():
            directory = self.root / "images" / camera
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f"{name}.npy.tmp"
            with open(tmp, "wb") as stream:
                np.save(stream, np.ascontiguousarray(frames))
            os.replace(tmp, directory / f"{name}.npy")
        if video_fps:
            write_preview_video(self.root / "videos" / f"{name}.mp4", episode.images, video_fps)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        record = {
            "episode_index": index,
            "task": episode.task,
            "instruction": episode.instruction,
            "length": t,
            "success": episode.success,
            "seed": episode.seed,
            "source": episode.source,
            "has_actions": episode.actions is not None,
            "subtasks": [asdict(s) for s in episode.subtasks],
            "extra": episode.extra,
        }
        table_path = self.root / "data" / f"{name}.parquet"
        index_path = self.root / "meta" / "episodes.jsonl"
        index_size = index_path.stat().st_size if index_path.exists() else 0
        try:
            write_atomic(table_path, sink.getvalue().to_pybytes())
            with open(index_path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException:
            # Interrupted (Ctrl-C) between the table and its index line: remove the table, or the next
            # writer would find an episode file without an index line and refuse to go on.
            if not index_path.exists() or index_path.stat().st_size == index_size:
                table_path.unlink(missing_ok=True)
            raise
        self._account(episode)
        self._write_info()
        return index

    def _write_info(self) -> None:
        totals = {"total_episodes": self.num_episodes, "total_frames": self.num_frames}
        write_atomic(self.root / "meta" / "info.json", json.dumps(self.info.to_json(totals), indent=2).encode())
        if self.num_frames:
            stats = {STATE: self.state_stats.to_json()}
            if self.action_stats.count:
                stats[ACTION] = self.action_stats.to_json()
            write_atomic(self.root / "meta" / "stats.json", json.dumps(stats, indent=2).encode())


class EpisodeDataset:
    """Read a dataset directory: metadata, statistics and episodes (images memory-mapped)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root}: not a dataset (no meta/info.json)")
        try:
            self.info = DatasetInfo.from_json(json.loads(info_path.read_text()), str(info_path))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{info_path}: invalid JSON ({error})") from None
        self.records: list[dict[str, Any]] = []
        episodes_path = self.root / "meta" / "episodes.jsonl"
        if episodes_path.exists():
            for number, line in enumerate(episodes_path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DatasetError(f"{episodes_path}:{number}: invalid JSON line") from None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Episode]:
        for index in range(len(self)):
            yield self.episode(index)

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / "meta" / "stats.json"
        if not path.is_file():
            raise DatasetError(f"{self.root}: no meta/stats.json (the dataset has no episodes)")
        return {k: {s: np.asarray(v, np.float32) for s, v in d.items()} for k, d in json.loads(path.read_text()).items()}

    def episode(self, index: int, load_images: bool = True) -> Episode:
        import pyarrow.parquet as pq

        record = self.records[index]
        name = _episode_name(record["episode_index"])
        path = self.root / "data" / f"{name}.parquet"
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: cannot read episode table ({error})") from None
        t = table.num_rows
        states = np.asarray(table.column(STATE).combine_chunks().flatten(), np.float32).reshape(t, -1)
        actions = None
        if record.get("has_actions", True):
            actions = np.asarray(table.column(ACTION).combine_chunks().flatten(), np.float32).reshape(t, -1)
        images = {}
        if load_images:
            for camera in self.info.cameras:
                image_path = self.root / "images" / camera / f"{name}.npy"
                try:
                    images[camera] = np.load(image_path, mmap_mode="r")
                except (OSError, ValueError) as error:
                    raise DatasetError(f"{image_path}: cannot read frames ({error})") from None
                if images[camera].shape[0] != t:
                    raise DatasetError(f"{image_path}: {images[camera].shape[0]} frames, table has {t}")
        return Episode(
            task=record["task"],
            instruction=record["instruction"],
            states=states,
            actions=actions,
            images=images,
            timestamps=np.asarray(table.column("timestamp"), np.float64),
            subtasks=[SubtaskSpan(**s) for s in record.get("subtasks", [])],
            intervention=np.asarray(table.column("intervention"), bool),
            frame_sources=np.asarray(table.column("source"), np.int8) if "source" in table.column_names else None,
            success=record.get("success"),
            seed=record.get("seed"),
            source=record.get("source", ""),
            extra=record.get("extra", {}),
        )


def write_preview_video(path: Path, images: dict[str, np.ndarray], fps: float) -> None:
    """All cameras side by side (scaled to the tallest) as an mp4 a person can watch."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cameras = list(images.values())
    height = max(frames.shape[1] for frames in cameras)
    scaled_width = [int(round(frames.shape[2] * height / frames.shape[1])) for frames in cameras]
    width = sum(scaled_width)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise DatasetError(f"{path}: OpenCV cannot open an mp4 writer")
    try:
        for t in range(cameras[0].shape[0]):
            row = [cv2.resize(np.asarray(frames[t]), (w, height), interpolation=cv2.INTER_NEAREST) for frames, w in zip(cameras, scaled_width)]
            writer.write(cv2.cvtColor(np.concatenate(row, axis=1), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)
