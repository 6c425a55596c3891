"""ActionChunks placed in time: validation, dropping past actions, interpolation at the output rate.

Action ``k`` of a chunk is meant for ``stamp + k * control_period_s``. A new valid chunk
replaces the plan from its first still-useful action on (the newest chunk wins, as with
receding-horizon execution); the one action just before "now" is kept so interpolation
starts from where the plan says the arm should be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Accepted range of ActionChunk.control_period_s [s].
PERIOD_RANGE_S = (1e-3, 1.0)
#: Longest chunk accepted [actions].
MAX_HORIZON = 1024


class ChunkRejected(ValueError):
    """A chunk that cannot be executed; ``check`` names the failed check (for SafetyStatus)."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        super().__init__(f"{check}: {detail}")


@dataclass(frozen=True)
class ChunkInput:
    """The fields of an ActionChunk the bridge uses, as plain Python/numpy values."""

    stamp_s: float
    joint_names: Sequence[str]
    control_period_s: float
    horizon: int
    joint_positions: Sequence[float]
    gripper_widths: Sequence[float]
    chunk_id: int = 0


@dataclass(frozen=True)
class ActionTimeline:
    """Time-stamped joint targets (in the robot's joint order) and optional gripper widths."""

    times_s: np.ndarray  # (K,)
    positions: np.ndarray  # (K, dof)
    gripper_widths: np.ndarray | None  # (K,) or None
    chunk_id: int

    @property
    def end_s(self) -> float:
        return float(self.times_s[-1])

    def sample(self, time_s: float) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Target position, velocity (slope of the current segment) and gripper width at ``time_s``."""
        times = self.times_s
        if time_s <= times[0] or len(times) == 1:
            index, fraction, slope_index = 0, 0.0, None
        elif time_s >= times[-1]:
            index, fraction, slope_index = len(times) - 1, 0.0, None
        else:
            index = int(np.searchsorted(times, time_s, side="right")) - 1
            fraction = (time_s - times[index]) / (times[index + 1] - times[index])
            slope_index = index
        position = self.positions[index]
        gripper = None if self.gripper_widths is None else float(self.gripper_widths[index])
        if slope_index is None:
            return position.copy(), np.zeros_like(position), gripper
        step = self.positions[index + 1] - position
        velocity = step / (times[index + 1] - times[index])
        if self.gripper_widths is not None:
            gripper = float(self.gripper_widths[index] + fraction * (self.gripper_widths[index + 1] - self.gripper_widths[index]))
        return position + fraction * step, velocity, gripper


def validate_chunk(chunk: ChunkInput, arm_joint_names: Sequence[str], has_gripper: bool, now_s: float, max_future_s: float) -> ActionTimeline:
    """Check a chunk and return its still-useful actions in time; raises :class:`ChunkRejected`.

    Malformed fields, non-finite numbers, a stamp more than ``max_future_s`` ahead of ``now_s``
    and a chunk whose actions are all in the past are rejected. Actions before ``now_s`` are
    dropped except the last one (the start of the current segment).
    """
    names = list(chunk.joint_names)
    if sorted(names) != sorted(arm_joint_names) or len(set(names)) != len(names):
        raise ChunkRejected("joint_names", f"expected the arm joints {list(arm_joint_names)} in any order, got {names}")
    period = chunk.control_period_s
    if not (math.isfinite(period) and PERIOD_RANGE_S[0] <= period <= PERIOD_RANGE_S[1]):
        raise ChunkRejected("control_period", f"control_period_s must lie in {PERIOD_RANGE_S} s, got {period}")
    horizon = chunk.horizon
    if not 1 <= horizon <= MAX_HORIZON:
        raise ChunkRejected("horizon", f"horizon must lie in [1, {MAX_HORIZON}], got {horizon}")
    positions = np.asarray(chunk.joint_positions, dtype=float)
    if positions.shape != (horizon * len(names),):
        raise ChunkRejected("joint_positions", f"expected horizon x joints = {horizon * len(names)} values, got {positions.size}")
    widths = np.asarray(chunk.gripper_widths, dtype=float)
    if widths.size not in (0, horizon):
        raise ChunkRejected("gripper_widths", f"expected 0 or {horizon} values, got {widths.size}")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(widths))):
        raise ChunkRejected("non_finite", "joint_positions or gripper_widths contain NaN or inf")
    if not math.isfinite(chunk.stamp_s):
        raise ChunkRejected("stamp", f"stamp is not finite: {chunk.stamp_s}")
    if chunk.stamp_s > now_s + max_future_s:
        raise ChunkRejected("future_stamp", f"stamp lies {chunk.stamp_s - now_s:.3f} s in the future (max_future_stamp_s {max_future_s} s): "
                                            "are the clocks of the model's host and the bridge's synchronized? (docs/real_robot.md)")
    times = chunk.stamp_s + period * np.arange(horizon)
    if times[-1] < now_s:
        raise ChunkRejected("stale", f"all {horizon} actions lie in the past (last {now_s - times[-1]:.3f} s ago)")
    order = [names.index(name) for name in arm_joint_names]
    table = positions.reshape(horizon, len(names))[:, order]
    first = max(int(np.searchsorted(times, now_s, side="right")) - 1, 0)
    gripper = widths[first:] if (widths.size and has_gripper) else None
    return ActionTimeline(times_s=times[first:], positions=table[first:], gripper_widths=gripper, chunk_id=chunk.chunk_id)
