"""Joint trajectory following with ros2_control joint_trajectory_controller semantics (no ROS).

- A new trajectory replaces the current one from its start time (header stamp; 0 = now): the
  old motion continues until then, and the new one starts from the state the old one has at
  that moment, so consecutive trajectories join without a jump in position.
- Between points the target is interpolated: linearly when the points carry positions only,
  with cubic Hermite splines when they carry velocities too.
- Points whose time has already passed when the trajectory arrives are dropped (the target
  joins the first future point from where it is instead of jumping into the middle).
- After the last point the target holds its position with zero velocity.
- An empty trajectory stops: the target holds where it is now.

Streaming (what the safety bridge does at 250 Hz or more): send each message with stamp 0 (or
now) and one to three points a few control periods ahead (e.g. 4-12 ms); each message takes
over from the currently commanded position and velocity, so the target moves continuously.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_START_DELAY_S = 10.0  # a trajectory starting later than this is almost certainly mis-stamped


class TrajectoryError(ValueError):
    """A trajectory that cannot be followed; the message says why."""


@dataclass
class _Knots:
    times_s: np.ndarray  # (k,) absolute, strictly increasing
    positions: np.ndarray  # (k, dof)
    velocities: np.ndarray  # (k, dof)
    hermite: np.ndarray  # (k,) segment ending at knot i is cubic Hermite (else linear)


class TrajectoryFollower:
    """Joint targets as a function of time from a sequence of replacing trajectories."""

    def __init__(self, hold_position: np.ndarray, lower_rad: np.ndarray | None = None, upper_rad: np.ndarray | None = None) -> None:
        self.dof = len(hold_position)
        self.lower = None if lower_rad is None else np.asarray(lower_rad, float)
        self.upper = None if upper_rad is None else np.asarray(upper_rad, float)
        self.hold(hold_position, 0.0)

    def hold(self, position: np.ndarray, now_s: float) -> None:
        """Stand still at ``position`` from now on."""
        position = np.asarray(position, float).reshape(1, self.dof)
        self._knots = _Knots(np.array([now_s]), position.copy(), np.zeros((1, self.dof)), np.zeros(1, bool))

    @property
    def end_position(self) -> np.ndarray:
        return self._knots.positions[-1].copy()

    def replace(
        self,
        now_s: float,
        start_s: float,
        times_from_start_s: np.ndarray,
        positions: np.ndarray,
        velocities: np.ndarray | None = None,
    ) -> None:
        """Take a new trajectory (arrays in this follower's joint order). Raises TrajectoryError."""
        times = np.asarray(times_from_start_s, float).reshape(-1)
        positions = np.asarray(positions, float).reshape(len(times), -1) if len(times) else np.zeros((0, self.dof))
        if positions.shape[1] != self.dof:
            raise TrajectoryError(f"points have {positions.shape[1]} positions, expected {self.dof}")
        if velocities is not None:
            velocities = np.asarray(velocities, float).reshape(positions.shape)
        for name, array in (("time_from_start", times), ("positions", positions), ("velocities", velocities)):
            if array is not None and not np.all(np.isfinite(array)):
                raise TrajectoryError(f"{name} contain non-finite values")
        if np.any(times < 0) or np.any(np.diff(times) <= 0):
            raise TrajectoryError("time_from_start must be >= 0 and strictly increasing")
        if self.lower is not None and self.upper is not None and len(positions):
            outside = (positions < self.lower - 1e-6) | (positions > self.upper + 1e-6)
            if np.any(outside):
                point, joint = map(int, np.argwhere(outside)[0])
                raise TrajectoryError(f"point {point} joint {joint} position {positions[point, joint]:.4f} outside "
                                      f"[{self.lower[joint]:.4f}, {self.upper[joint]:.4f}]")
        start = max(float(start_s), now_s) if start_s > 0 else now_s
        if start - now_s > MAX_START_DELAY_S:
            raise TrajectoryError(f"trajectory starts {start - now_s:.1f} s in the future; is the sender on the sim clock?")
        if len(times) == 0:
            position, _ = self.sample_one(now_s)
            self.hold(position, now_s)
            return
        absolute = start_s + times if start_s > 0 else now_s + times
        keep = absolute > start + 1e-9
        join_position, join_velocity = self.sample_one(start)
        if not keep.any():
            # Every point already lies in the past: go to the last one at once and hold it there.
            self.hold(positions[-1], now_s)
            return
        old = self._knots
        before = old.times_s < start - 1e-9
        segment = int(np.searchsorted(old.times_s, start, side="right"))  # old segment that contains start
        join_is_cubic = bool(old.hermite[segment]) if segment < len(old.hermite) else False
        cubic = velocities is not None
        kept = int(keep.sum())
        self._knots = _Knots(
            times_s=np.concatenate([old.times_s[before], [start], absolute[keep]]),
            positions=np.vstack([old.positions[before], join_position, positions[keep]]),
            velocities=np.vstack([old.velocities[before], join_velocity,
                                  velocities[keep] if velocities is not None else np.zeros((kept, self.dof))]),
            hermite=np.concatenate([old.hermite[before], [join_is_cubic], np.full(kept, cubic)]),
        )

    def sample_one(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        positions, velocities = np.zeros((1, self.dof)), np.zeros((1, self.dof))
        self.sample(np.array([time_s]), positions, velocities)
        return positions[0], velocities[0]

    def sample(self, times_s: np.ndarray, positions_out: np.ndarray, velocities_out: np.ndarray) -> None:
        """Targets at ``times_s`` (vectorised): fills (n, dof) positions [rad] and velocities [rad/s]."""
        knots = self._knots
        times = np.asarray(times_s, float)
        last = len(knots.times_s) - 1
        if times[0] >= knots.times_s[-1]:  # after the last point: hold it (the cheap, common case)
            positions_out[:] = knots.positions[-1]
            velocities_out[:] = 0.0
            return
        # Segment i runs from knot i to knot i + 1.
        index = np.clip(np.searchsorted(knots.times_s, times, side="right") - 1, 0, max(last - 1, 0))
        if last == 0:
            positions_out[:] = knots.positions[0]
            velocities_out[:] = 0.0
            return
        t0, t1 = knots.times_s[index], knots.times_s[index + 1]
        duration = (t1 - t0)[:, None]
        s = np.clip((times - t0) / (t1 - t0), 0.0, 1.0)[:, None]
        p0, p1 = knots.positions[index], knots.positions[index + 1]
        v0, v1 = knots.velocities[index], knots.velocities[index + 1]
        # Linear segments.
        positions_out[:] = p0 + s * (p1 - p0)
        velocities_out[:] = (p1 - p0) / duration
        cubic = knots.hermite[index + 1]
        if np.any(cubic):
            sc, dc = s[cubic], duration[cubic]
            h00, h10, h01, h11 = 2 * sc**3 - 3 * sc**2 + 1, sc**3 - 2 * sc**2 + sc, -2 * sc**3 + 3 * sc**2, sc**3 - sc**2
            d00, d10, d01, d11 = 6 * sc**2 - 6 * sc, 3 * sc**2 - 4 * sc + 1, -6 * sc**2 + 6 * sc, 3 * sc**2 - 2 * sc
            a, b, c, d = p0[cubic], v0[cubic] * dc, p1[cubic], v1[cubic] * dc
            positions_out[cubic] = h00 * a + h10 * b + h01 * c + h11 * d
            velocities_out[cubic] = (d00 * a + d10 * b + d01 * c + d11 * d) / dc
        # Before the first knot: hold it; after the last one: hold the last point.
        before = times < knots.times_s[0]
        after = times >= knots.times_s[-1]
        positions_out[before] = knots.positions[0]
        velocities_out[before] = 0.0
        positions_out[after] = knots.positions[-1]
        velocities_out[after] = 0.0

    def prune(self, now_s: float) -> None:
        """Forget knots that lie entirely in the past (keeps sampling cheap for long streams)."""
        times = self._knots.times_s
        first = int(np.searchsorted(times, now_s, side="right")) - 1
        if first > 0:
            k = self._knots
            self._knots = _Knots(k.times_s[first:], k.positions[first:], k.velocities[first:], k.hermite[first:])
