"""Real-time chunking: continuity between consecutive action chunks.

A chunk computed from an observation at time ``t_obs`` holds actions for ``t_obs + k * dt``.
While the next chunk is being computed (latency L), the robot keeps executing the current
one. Following real-time chunking (RTC), the actions of the new chunk that fall inside the
expected latency window are *frozen* to what the current chunk already commands at those
times, and the model samples the rest conditioned on them (inpainting). The new chunk thus
starts exactly where the executing one is, and the switch does not jump.

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


def frozen_prefix(current: TimedChunk | None, obs_stamp_s: float, period_s: float, latency_s: float, horizon: int) -> np.ndarray | None:
    """Actions of the next chunk (stamped ``obs_stamp_s``) that execute before it can arrive.

    Returns the current chunk's actions at ``obs_stamp_s + k * period_s`` for
    ``k < ceil(latency_s / period_s) + 1`` (one action of margin), or None when there is no
    current chunk or it has already run out at the new chunk's start.
    """
    if current is None or obs_stamp_s > current.end_s:
        return None
    count = min(horizon - 1, math.ceil(latency_s / period_s) + 1)
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
