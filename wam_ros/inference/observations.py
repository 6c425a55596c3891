"""Assemble the model's observation from asynchronous camera and joint-state streams.

The model wants, for each of its cameras, ``n_frames`` images spaced ``frame_spacing_s``
apart (newest last), plus the robot state at the same instants. Streams arrive at their own
rates and with their own stamps; :class:`ObservationAssembler` keeps a short history per
stream, pairs the newest frames across cameras within a tolerance, and refuses (with a reason
naming the input) when an input is missing or stale. All times are seconds on one clock (the
node's ROS clock: sim time in simulation).

Thread-safe: the inference node adds samples from its executor thread while its worker thread
assembles; unguarded, a history could be read between a stamp's append and its frame's,
pairing a frame with another frame's stamp.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Observation:
    """What the model consumes: per camera (n_frames, H, W, 3) uint8 and (n_frames, state_dim) states."""

    stamp_s: float  # time of the newest frame: the chunk's header stamp
    images: dict[str, np.ndarray]
    state: np.ndarray
    frame_stamps_s: dict[str, list[float]]


@dataclass(frozen=True)
class NotReady:
    """Why no observation can be formed now; ``input`` names the culprit (camera name or "joint_states")."""

    input: str
    reason: str

    def __str__(self) -> str:
        return f"{self.input}: {self.reason}"


@dataclass
class _Stream:
    stamps: deque = field(default_factory=deque)
    values: deque = field(default_factory=deque)

    def add(self, stamp_s: float, value: np.ndarray, history_s: float) -> None:
        if self.stamps and stamp_s < self.stamps[-1]:
            # Out-of-order arrival (e.g. after a reset of sim time): start the history afresh.
            self.stamps.clear()
            self.values.clear()
        self.stamps.append(stamp_s)
        self.values.append(value)
        while self.stamps and self.stamps[0] < stamp_s - history_s:
            self.stamps.popleft()
            self.values.popleft()

    def nearest(self, t_s: float) -> tuple[float, np.ndarray] | None:
        if not self.stamps:
            return None
        stamps = list(self.stamps)
        i = bisect.bisect_left(stamps, t_s)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(candidates, key=lambda k: abs(stamps[k] - t_s))
        return stamps[j], self.values[j]


class ObservationAssembler:
    """Short histories of camera frames and joint states -> the newest consistent :class:`Observation`."""

    def __init__(
        self,
        cameras: list[str],
        n_frames: int,
        frame_spacing_s: float,
        sync_tolerance_s: float,
        max_input_age_s: float,
    ) -> None:
        if n_frames < 1 or frame_spacing_s <= 0 or sync_tolerance_s < 0 or max_input_age_s <= 0:
            raise ValueError("n_frames >= 1, frame_spacing_s > 0, sync_tolerance_s >= 0 and max_input_age_s > 0 are required")
        self.cameras = list(cameras)
        self.n_frames = n_frames
        self.frame_spacing_s = frame_spacing_s
        self.sync_tolerance_s = sync_tolerance_s
        self.max_input_age_s = max_input_age_s
        self._history_s = (n_frames - 1) * frame_spacing_s + max_input_age_s + 1.0
        self._images = {name: _Stream() for name in self.cameras}
        self._states = _Stream()
        self._lock = threading.Lock()

    def add_image(self, camera: str, stamp_s: float, image: np.ndarray) -> None:
        if camera not in self._images:
            raise KeyError(f"unknown camera {camera!r}; the model uses {self.cameras}")
        with self._lock:
            self._images[camera].add(stamp_s, image, self._history_s)

    def add_state(self, stamp_s: float, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float32)
        with self._lock:
            self._states.add(stamp_s, state, self._history_s)

    def newest_frame_s(self) -> float | None:
        """Stamp of the newest frame every camera has (None before each has one)."""
        with self._lock:
            stamps = [stream.stamps[-1] for stream in self._images.values() if stream.stamps]
            return min(stamps) if len(stamps) == len(self._images) else None

    def input_ages_s(self, now_s: float) -> dict[str, float]:
        """Age of the newest sample of every input (inf when none has arrived)."""
        with self._lock:
            return self._ages(now_s)

    def _ages(self, now_s: float) -> dict[str, float]:
        ages = {name: now_s - s.stamps[-1] if s.stamps else float("inf") for name, s in self._images.items()}
        ages["joint_states"] = now_s - self._states.stamps[-1] if self._states.stamps else float("inf")
        return ages

    def assemble(self, now_s: float) -> Observation | NotReady:
        """The newest observation all inputs agree on, or why there is none."""
        with self._lock:
            return self._assemble(now_s)

    def _assemble(self, now_s: float) -> Observation | NotReady:
        for name, age in self._ages(now_s).items():
            if age == float("inf"):
                return NotReady(name, "no message received yet")
            if age > self.max_input_age_s:
                return NotReady(name, f"stale: newest message is {age:.3f} s old (limit {self.max_input_age_s:.3f} s)")
        # Anchor on the camera whose newest frame is oldest: every other camera has a frame near it.
        anchor = min(self._images[name].stamps[-1] for name in self.cameras)
        times = [anchor - (self.n_frames - 1 - k) * self.frame_spacing_s for k in range(self.n_frames)]
        images: dict[str, np.ndarray] = {}
        frame_stamps: dict[str, list[float]] = {}
        for name in self.cameras:
            frames, stamps = [], []
            for k, t in enumerate(times):
                stamp, frame = self._images[name].nearest(t)  # type: ignore[misc]
                tolerance = self.sync_tolerance_s if k == self.n_frames - 1 else self.frame_spacing_s / 2
                if abs(stamp - t) > tolerance + 1e-9:
                    what = "no frame" if k == self.n_frames - 1 else f"no history frame {self.n_frames - 1 - k}"
                    return NotReady(name, f"{what} within {tolerance:.3f} s of t={t:.3f} s (nearest {stamp - t:+.3f} s)")
                frames.append(frame)
                stamps.append(stamp)
            images[name] = np.stack(frames)
            frame_stamps[name] = stamps
        states = []
        for t in times:
            stamp, state = self._states.nearest(t)  # type: ignore[misc]
            if abs(stamp - t) > max(self.sync_tolerance_s, 0.01):
                return NotReady("joint_states", f"no joint state within {max(self.sync_tolerance_s, 0.01):.3f} s of t={t:.3f} s")
            states.append(state)
        return Observation(stamp_s=anchor, images=images, state=np.stack(states), frame_stamps_s=frame_stamps)
