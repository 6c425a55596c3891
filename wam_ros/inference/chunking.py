"""Real-time chunking: continuity between consecutive action chunks.

A chunk computed from an observation at time ``t_obs`` holds actions for ``t_obs + k * dt``.
It can start executing only when it reaches the robot, at ``t_obs + start delay``, where the
start delay is the observation's age when the request is made plus the expected latency of
the request. Until then the robot keeps executing the current chunk. Two mechanisms keep the
switch continuous:

* Real-time chunking (RTC), for policies that can inpaint: the new chunk's actions before the
  start delay are *frozen* to what the current chunk already commands at those times
  (:func:`frozen_prefix`) and the policy samples the rest conditioned on them. Sizing the
  prefix from the compute latency alone (ignoring the observation's age) let chunks switch
  after their frozen part: jumps up to 0.86 rad at chunk boundaries (docs/inference.md).
* Joining, for every policy (as LeRobot's async client merges overlapping chunks): the published
  chunk keeps the current chunk's actions up to the first action after the switch and blends
  linearly into the new one over ``blend_s`` (:func:`join`). The executed command is then
  continuous at the switch whatever the policy returned; with RTC the two agree over the
  prefix anyway.

Both apply only while the robot follows the current chunk (:func:`follows`): after a sim reset,
a HOLD or a teleop intervention the arm is elsewhere and the old plan must not be kept.

Everything here is plain numpy; the inference node supplies times and chunks.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from wam_ros.inference.timing import percentile_ms


@dataclass(frozen=True)
class TimedChunk:
    """Actions (horizon, dim) with action k meant for ``stamp_s + k * period_s``."""

    stamp_s: float
    period_s: float
    actions: np.ndarray

    @property
    def end_s(self) -> float:
        return self.stamp_s + (len(self.actions) - 1) * self.period_s

    def at(self, t_s: np.ndarray | float) -> np.ndarray:
        """Linearly interpolated actions at times ``t_s`` (held constant beyond both ends)."""
        times = self.stamp_s + self.period_s * np.arange(len(self.actions))
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        return np.stack([np.interp(t, times, self.actions[:, d]) for d in range(self.actions.shape[1])], axis=-1)


class LatencyEstimator:
    """Running estimate of inference latency: a high quantile of recent measurements."""

    def __init__(self, initial_s: float, window: int = 50, quantile: float = 0.9) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.initial_s = initial_s
        self.quantile = quantile

    def add(self, latency_s: float) -> None:
        self.samples.append(latency_s)

    def estimate_s(self) -> float:
        if not self.samples:
            return self.initial_s
        return float(np.quantile(np.asarray(self.samples), self.quantile))

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.samples, q)


def frozen_prefix(current: TimedChunk | None, obs_stamp_s: float, period_s: float, start_delay_s: float, horizon: int) -> np.ndarray | None:
    """Actions of the next chunk (stamped ``obs_stamp_s``) that execute before it can arrive.

    ``start_delay_s``: from the observation's stamp to the new chunk taking over, i.e. the
    observation's age when the request is made plus the request's expected latency. Returns the
    current chunk's actions at ``obs_stamp_s + k * period_s`` for
    ``k < ceil(start_delay_s / period_s) + 1`` (one action of margin, at most ``horizon - 1``),
    or None when there is no current chunk or it has already run out at the new chunk's start.
    """
    if current is None or obs_stamp_s > current.end_s:
        return None
    count = min(horizon - 1, math.ceil(start_delay_s / period_s) + 1)
    if count <= 0:
        return None
    times = obs_stamp_s + period_s * np.arange(count)
    return current.at(times)


def boundary_jump(previous: TimedChunk | None, new: TimedChunk, switch_s: float) -> float:
    """Largest per-dimension difference between the two chunks' commands at the switch time.

    This is the step the robot would see when the new chunk replaces the previous one at
    ``switch_s`` (rad for joints, m for the gripper); 0 for the first chunk.
    """
    if previous is None or switch_s > previous.end_s:
        return 0.0
    return float(np.max(np.abs(new.at(switch_s) - previous.at(switch_s))))


def follows(current: TimedChunk | None, obs_stamp_s: float, measured: np.ndarray, joints: int, tolerance: float) -> bool:
    """Whether the robot executes ``current``: its first ``joints`` commands at ``obs_stamp_s``
    lie within ``tolerance`` of the ``measured`` values then (the gripper is left out: fingers
    closed on an object stop short of the commanded width)."""
    if current is None or not current.stamp_s <= obs_stamp_s <= current.end_s:
        return False
    commanded = current.at(obs_stamp_s)[0, :joints]
    return bool(np.max(np.abs(commanded - np.asarray(measured, dtype=np.float64)[:joints])) <= tolerance)


def join(previous: TimedChunk | None, new: TimedChunk, switch_s: float, blend_s: float) -> TimedChunk:
    """``new`` made continuous with ``previous`` for a switch at ``switch_s``.

    Actions up to the first one after ``switch_s`` take ``previous``'s commands at their times;
    from there the weight of ``new`` rises linearly to 1 over ``blend_s``. The command at the
    switch is then ``previous``'s (up to interpolation between their action grids), and a chunk
    that arrives a few milliseconds after ``switch_s`` meets a blend that has barely started.
    Returns ``new`` unchanged without a previous chunk or once ``previous`` has run out.
    """
    if previous is None or switch_s > previous.end_s:
        return new
    if blend_s <= 0:
        raise ValueError(f"blend_s must be positive, got {blend_s}")
    times = new.stamp_s + new.period_s * np.arange(len(new.actions))
    after = np.flatnonzero(times > switch_s)
    if after.size == 0:
        return TimedChunk(new.stamp_s, new.period_s, previous.at(times))
    weight = np.clip((times - times[after[0]]) / blend_s, 0.0, 1.0)[:, None]
    return TimedChunk(new.stamp_s, new.period_s, (1.0 - weight) * previous.at(times) + weight * new.actions)
