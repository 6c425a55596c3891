"""Jerk-limited motion at the output rate (ruckig), and the TCP speed cap as joint velocity limits.

The follower keeps the commanded state (position, velocity, acceleration). Every output cycle
it moves one period along a time-optimal, jerk-limited trajectory towards the current target
(:meth:`JerkLimitedFollower.track`) or brakes to rest (:meth:`JerkLimitedFollower.brake`).
:meth:`commit` takes what the :class:`~wam_ros.control.limits.SafetyGuard` let through as the
new state, so the next cycle continues from what was really sent.
"""
from __future__ import annotations

import math

import numpy as np
import ruckig

from wam_ros.control.limits import Limits

#: Lowest per-joint velocity limit handed to ruckig [fraction of the joint's maximum]: a joint
#: the motion direction barely uses still gets room to correct small errors.
VELOCITY_LIMIT_FLOOR = 0.01


class JerkLimitedFollower:
    """Commanded joint state advanced one output period at a time with ruckig."""

    def __init__(self, limits: Limits, period_s: float) -> None:
        self.limits = limits
        self.period_s = period_s
        dof = limits.dof
        self._otg = ruckig.Ruckig(dof, period_s)
        self._input = ruckig.InputParameter(dof)
        self._output = ruckig.OutputParameter(dof)
        self._input.max_acceleration = limits.acceleration_max_rad_s2.tolist()
        self._input.max_jerk = limits.jerk_max_rad_s3.tolist()
        self.position = np.zeros(dof)
        self.velocity = np.zeros(dof)
        self.acceleration = np.zeros(dof)
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.failures = 0  # cycles in which ruckig found no trajectory
        self.last_error = ""

    def reset(self, position: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Start from ``position`` (the measured state on a mode switch), at rest unless ``velocity`` is given."""
        self.position = np.array(position, dtype=float)
        velocity = np.zeros_like(self.position) if velocity is None else np.asarray(velocity, dtype=float)
        self.velocity = np.clip(velocity, -self.limits.velocity_max_rad_s, self.limits.velocity_max_rad_s)
        self.acceleration = np.zeros_like(self.position)
        self._pending = None

    def track(self, target_position: np.ndarray, target_velocity: np.ndarray, velocity_limit: np.ndarray) -> np.ndarray:
        """Next commanded position towards ``target_position`` arriving with ``target_velocity``."""
        inp = self._input
        inp.control_interface = ruckig.ControlInterface.Position
        limit = np.maximum(velocity_limit, VELOCITY_LIMIT_FLOOR * self.limits.velocity_max_rad_s)
        inp.max_velocity = limit.tolist()
        inp.target_position = target_position.tolist()
        inp.target_velocity = np.clip(target_velocity, -limit, limit).tolist()
        inp.target_acceleration = [0.0] * self.limits.dof
        return self._update()

    def track_velocity(self, target_velocity: np.ndarray, velocity_limit: np.ndarray) -> np.ndarray:
        """Next commanded position on the way to moving at ``target_velocity`` (servoing, e.g. a teleop twist)."""
        inp = self._input
        inp.control_interface = ruckig.ControlInterface.Velocity
        limit = np.maximum(velocity_limit, VELOCITY_LIMIT_FLOOR * self.limits.velocity_max_rad_s)
        inp.max_velocity = limit.tolist()
        inp.target_velocity = np.clip(target_velocity, -limit, limit).tolist()
        inp.target_acceleration = [0.0] * self.limits.dof
        return self._update()

    def brake(self) -> np.ndarray:
        """Next commanded position of a jerk-limited stop at the acceleration limits."""
        return self.track_velocity(np.zeros(self.limits.dof), self.limits.velocity_max_rad_s)

    @property
    def at_rest(self) -> bool:
        return bool(np.all(np.abs(self.velocity) < 1e-6) and np.all(np.abs(self.acceleration) < 1e-6))

    def _update(self) -> np.ndarray:
        inp, out = self._input, self._output
        inp.current_position = self.position.tolist()
        # Rounding dust (1e-17 rad/s) can make ruckig's profile search fail: treat it as zero.
        inp.current_velocity = np.where(np.abs(self.velocity) < 1e-9, 0.0, self.velocity).tolist()
        inp.current_acceleration = np.where(np.abs(self.acceleration) < 1e-9, 0.0, self.acceleration).tolist()
        try:
            result = self._otg.update(inp, out)
        except ruckig.RuckigError as error:
            result, self.last_error = None, str(error).strip().splitlines()[0]
        if result not in (ruckig.Result.Working, ruckig.Result.Finished):
            # No trajectory this cycle: stay where we are (the guard still bounds the step) and say so.
            self.failures += 1
            self._pending = None
            return self.position.copy()
        self._pending = (np.array(out.new_position), np.array(out.new_velocity), np.array(out.new_acceleration))
        return self._pending[0]

    def commit(self, position: np.ndarray) -> None:
        """Make ``position`` (what the guard let through) the commanded state.

        When it is ruckig's own step, ruckig's velocity and acceleration are kept; otherwise they
        follow from the step actually taken.
        """
        pending, self._pending = self._pending, None
        if pending is not None and np.array_equal(position, pending[0]):
            self.position, self.velocity, self.acceleration = pending
            return
        velocity = (position - self.position) / self.period_s
        acceleration = (velocity - self.velocity) / self.period_s
        amax = self.limits.acceleration_max_rad_s2
        self.position = position.copy()
        self.velocity = velocity
        self.acceleration = np.clip(acceleration, -amax, amax)


def speed_capped_velocity_limit(limits: Limits, jacobian_linear: np.ndarray, direction: np.ndarray, safety_factor: float = 0.9) -> np.ndarray:
    """Per-joint velocity limits that keep the TCP under the speed cap when moving along ``direction``.

    ``direction`` is the joint-space direction of the coming motion; moving along it at joint
    speed ``s`` moves the TCP at ``s * |J_v u|``, so ``s`` is capped at
    ``safety_factor * ee_speed_max / |J_v u|`` and spread over the joints by ``|u_i|``.
    """
    norm = math.sqrt(float(direction @ direction))
    if norm < 1e-12:
        return limits.velocity_max_rad_s.copy()
    unit = direction / norm
    tcp_velocity = jacobian_linear @ unit
    tcp_gain = math.sqrt(float(tcp_velocity @ tcp_velocity))
    if tcp_gain < 1e-12:
        return limits.velocity_max_rad_s.copy()
    speed = safety_factor * limits.ee_speed_max_m_s / tcp_gain
    return np.minimum(limits.velocity_max_rad_s, speed * np.abs(unit))
