"""Jerk-limited motion at the output rate (ruckig), braking plans, and the TCP speed cap as joint velocity limits.

The follower keeps the commanded state (position, velocity, acceleration) and, with it, a
*brake plan*: the commands of a jerk-limited stop from that state (:func:`brake_profile`, our
own closed-form profile, no ruckig). Every output cycle ruckig proposes the next state towards
the current target (:meth:`JerkLimitedFollower.track`, :meth:`~JerkLimitedFollower.track_velocity`),
each proposal with the brake plan from it. The bridge accepts a proposal only when the step and
its whole brake plan keep every limit (``SafetyGuard.path_problems``); otherwise, and whenever it
stops (HOLD, ESTOP, a watchdog, a stale teleop command, ruckig finding no trajectory), it takes
the next command of the plan it accepted a cycle earlier (:meth:`~JerkLimitedFollower.braking_step`).
So a stop always decelerates within the acceleration and jerk limits, and it never has to
cut a motion short at a joint limit, the workspace box or the speed cap.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import ruckig

from wam_ros.control.limits import Limits

#: Lowest per-joint velocity limit handed to ruckig [fraction of the joint's maximum]: a joint
#: the motion direction barely uses still gets room to correct small errors.
VELOCITY_LIMIT_FLOOR = 0.01
#: Longest brake plan [s]: far more than any stop from within the velocity limits takes.
MAX_BRAKE_S = 5.0


@dataclass(frozen=True)
class MotionStep:
    """One commanded state and the brake plan from it (the commands of a stop, one per period, ending at rest)."""

    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    plan_positions: np.ndarray  # (n, dof)
    plan_velocities: np.ndarray
    plan_accelerations: np.ndarray


def _stop_segments(velocity: float, acceleration: float, acceleration_max: float, jerk_max: float) -> list[tuple[float, float]]:
    """Constant-jerk segments (duration [s], jerk) that bring one joint from (velocity, acceleration) to rest.

    Decelerate with jerk ``-jerk_max`` to ``-m``, hold ``-m`` (``m = acceleration_max`` when
    there is room for it), release with ``+jerk_max`` so that velocity and acceleration reach
    zero together. A joint already decelerating harder than that needs (``a^2 / 2j > v``) first
    releases, passes zero velocity and then stops from the other side. (Plain floats: for a
    handful of joints this is several times faster than numpy.)
    """
    segments: list[tuple[float, float]] = []
    v, a, j = velocity, acceleration, jerk_max
    for _ in range(2):
        if v == 0.0 and a == 0.0:
            break
        sign = math.copysign(1.0, v) if v != 0.0 else math.copysign(1.0, a)
        vn, an = sign * v, sign * a  # moving forward (or about to)
        if an < 0.0 and an * an / (2.0 * j) >= vn:  # release now: passes zero velocity
            segments.append((-an / j, sign * j))
            v, a = sign * (vn - an * an / (2.0 * j)), 0.0
            continue
        peak = math.sqrt(j * vn + an * an / 2.0)
        hold_s = 0.0
        if peak > acceleration_max:
            peak = acceleration_max
            hold_s = max((vn + an * an / (2.0 * j) - peak * peak / j) / peak, 0.0)
        segments += [(max((an + peak) / j, 0.0), -sign * j), (hold_s, 0.0), (peak / j, sign * j)]
        break
    return segments


def brake_profile(velocity: np.ndarray, acceleration: np.ndarray, acceleration_max: np.ndarray, jerk_max: np.ndarray,
                  period_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Displacements, velocities and accelerations (n, dof) at ``period_s, 2 period_s, ...`` of a stop.

    Each joint follows its own jerk-limited stop (:func:`_stop_segments`), so the acceleration
    stays within ``acceleration_max`` and changes no faster than ``jerk_max``, continuing the
    given acceleration; the last sample is at rest (n = 0 when already at rest).
    """
    dof = len(velocity)
    width = 5  # at most four segments, then at rest
    starts, jerks = np.zeros((dof, width)), np.zeros((dof, width))
    p0, v0, a0 = np.zeros((dof, width)), np.zeros((dof, width)), np.zeros((dof, width))
    for joint in range(dof):
        p, v, a, start = 0.0, float(velocity[joint]), float(acceleration[joint]), 0.0
        segments = _stop_segments(v, a, float(acceleration_max[joint]), float(jerk_max[joint]))
        for index, (d, jerk) in enumerate(segments):
            starts[joint, index], jerks[joint, index] = start, jerk
            p0[joint, index], v0[joint, index], a0[joint, index] = p, v, a
            p, v, a, start = p + v * d + a * d * d / 2 + jerk * d ** 3 / 6, v + a * d + jerk * d * d / 2, a + jerk * d, start + d
        starts[joint, len(segments):], p0[joint, len(segments):] = start, p  # at rest from here on
    end = float(starts[:, -1].max(initial=0.0))
    count = min(int(math.ceil(end / period_s - 1e-9)), int(MAX_BRAKE_S / period_s))
    times = period_s * np.arange(1, count + 1)
    # Segment of each (sample, joint): the last one that started before the sample.
    index = np.sum(times[:, None, None] > starts[None, :, 1:], axis=2)
    joints = np.arange(dof)[None, :]
    tau = times[:, None] - starts[joints, index]
    jerk, a, v = jerks[joints, index], a0[joints, index], v0[joints, index]
    positions = p0[joints, index] + v * tau + a * tau ** 2 / 2 + jerk * tau ** 3 / 6
    return positions, v + a * tau + jerk * tau ** 2 / 2, a + jerk * tau


class JerkLimitedFollower:
    """Commanded joint state advanced one output period at a time: ruckig proposes, a brake plan backs each proposal."""

    def __init__(self, limits: Limits, period_s: float) -> None:
        self.limits = limits
        self.period_s = period_s
        dof = limits.dof
        self._otg = ruckig.Ruckig(dof, period_s)
        self._input = ruckig.InputParameter(dof)
        self._output = ruckig.OutputParameter(dof)
        self._input.max_acceleration = limits.acceleration_max_rad_s2.tolist()
        self._input.max_jerk = limits.jerk_max_rad_s3.tolist()
        self.failures = 0  # cycles in which ruckig found no trajectory
        self.last_error = ""
        self.state: MotionStep
        self.history: deque[np.ndarray]
        self.reset(np.zeros(dof))

    def reset(self, position: np.ndarray, velocity: np.ndarray | None = None, acceleration: np.ndarray | None = None) -> None:
        """Start from ``position`` (the measured state on a mode switch), at rest unless a motion is given.

        ``history`` (the last three commands, newest last) is the constant-acceleration past of that state.
        """
        position = np.array(position, dtype=float)
        velocity = np.zeros_like(position) if velocity is None else np.clip(velocity, -self.limits.velocity_max_rad_s, self.limits.velocity_max_rad_s)
        acceleration = np.zeros_like(position) if acceleration is None else np.asarray(acceleration, dtype=float)
        dt = self.period_s
        self.history = deque(
            [position - 2 * velocity * dt + 2 * acceleration * dt ** 2, position - velocity * dt + acceleration * dt ** 2 / 2, position],
            maxlen=3)
        self.state = self.step_to(position, velocity, acceleration)

    @property
    def position(self) -> np.ndarray:
        return self.state.position

    @property
    def velocity(self) -> np.ndarray:
        return self.state.velocity

    @property
    def acceleration(self) -> np.ndarray:
        return self.state.acceleration

    @property
    def at_rest(self) -> bool:
        return bool(np.all(np.abs(self.velocity) < 1e-6) and np.all(np.abs(self.acceleration) < 1e-6))

    def step_to(self, position: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray) -> MotionStep:
        """The state (position, velocity, acceleration) with its brake plan."""
        limits = self.limits
        offsets, velocities, accelerations = brake_profile(velocity, acceleration, limits.acceleration_max_rad_s2,
                                                           limits.jerk_max_rad_s3, self.period_s)
        return MotionStep(position, velocity, acceleration, position + offsets, velocities, accelerations)

    def track(self, target_position: np.ndarray, target_velocity: np.ndarray, velocity_limit: np.ndarray) -> MotionStep | None:
        """Ruckig's next state towards ``target_position`` arriving with ``target_velocity`` (None: no trajectory)."""
        inp = self._input
        inp.control_interface = ruckig.ControlInterface.Position
        limit = np.maximum(velocity_limit, VELOCITY_LIMIT_FLOOR * self.limits.velocity_max_rad_s)
        inp.max_velocity = limit.tolist()
        inp.target_position = target_position.tolist()
        inp.target_velocity = np.clip(target_velocity, -limit, limit).tolist()
        inp.target_acceleration = [0.0] * self.limits.dof
        return self._update()

    def track_velocity(self, target_velocity: np.ndarray, velocity_limit: np.ndarray) -> MotionStep | None:
        """Ruckig's next state on the way to moving at ``target_velocity`` (servoing, e.g. a teleop twist)."""
        inp = self._input
        inp.control_interface = ruckig.ControlInterface.Velocity
        limit = np.maximum(velocity_limit, VELOCITY_LIMIT_FLOOR * self.limits.velocity_max_rad_s)
        inp.max_velocity = limit.tolist()
        inp.target_velocity = np.clip(target_velocity, -limit, limit).tolist()
        inp.target_acceleration = [0.0] * self.limits.dof
        return self._update()

    def braking_step(self) -> MotionStep:
        """The next command of the current brake plan (the position itself once at rest)."""
        state = self.state
        if len(state.plan_positions) == 0:
            zero = np.zeros_like(state.position)
            return MotionStep(state.position.copy(), zero, zero, state.plan_positions, state.plan_velocities, state.plan_accelerations)
        return MotionStep(state.plan_positions[0], state.plan_velocities[0], state.plan_accelerations[0],
                          state.plan_positions[1:], state.plan_velocities[1:], state.plan_accelerations[1:])

    def _update(self) -> MotionStep | None:
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
            if result is not None:
                self.last_error = f"result {result.name}"
            self.failures += 1  # the caller brakes along the current plan
            return None
        return self.step_to(np.array(out.new_position), np.array(out.new_velocity), np.array(out.new_acceleration))

    def commit(self, step: MotionStep) -> None:
        """Make ``step`` (what the guard let through unchanged) the commanded state."""
        self.history.append(step.position)
        self.state = step

    def commit_position(self, position: np.ndarray) -> None:
        """Make ``position`` (a step the guard had to change) the commanded state; its velocity and
        acceleration follow from the steps actually taken."""
        dt = self.period_s
        velocity = (position - self.position) / dt
        amax = self.limits.acceleration_max_rad_s2
        acceleration = np.clip((velocity - self.velocity) / dt, -amax, amax)
        self.history.append(position.copy())
        self.state = self.step_to(position.copy(), velocity, acceleration)


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
