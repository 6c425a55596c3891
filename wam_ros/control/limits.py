"""Hard limits on every outgoing joint command, and an independent check of them.

:class:`SafetyGuard` is the last stage before the arm. Whatever the stages before it produced,
its output keeps these invariants relative to the previous output (``previous``):

- finite values;
- each joint inside ``[lower + margin, upper - margin]``, or, where ``previous`` already lies
  outside that band (the arm was moved there by hand), not farther out than ``previous``;
- each joint step at most ``min(max_joint_step_rad, velocity_max * period)``;
- the TCP inside the workspace box, or, where ``previous`` lies outside it, not farther from the
  box than ``previous``;
- the TCP step at most ``ee_speed_max_m_s * period``.

:meth:`SafetyGuard.path_problems` applies the same invariants, plus the acceleration and jerk
limits, to a proposed step and the brake plan behind it (:mod:`wam_ros.control.motion`): the
bridge takes a step only when it could still stop from there within every limit.
:class:`wam_ros.control.checker.CommandChecker` verifies the output stream independently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from wam_ros.control.kinematics import ChainKinematics
from wam_ros.robot import RobotConfig

#: Fractions of a step the guard tries when a Cartesian limit forces it to shorten the step.
_FRACTIONS = np.linspace(0.0, 1.0, 17)[1:]
#: Numerical slack of the invariants (rounding of FK and of the clipping arithmetic).
TOLERANCE = 1e-9
#: Relative slack of the acceleration and jerk limits (rounding of the differences of commands).
DYNAMIC_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Limits:
    """Every limit the bridge enforces, from the robot config (margin already applied)."""

    joint_names: tuple[str, ...]
    lower_rad: np.ndarray
    upper_rad: np.ndarray
    velocity_max_rad_s: np.ndarray
    acceleration_max_rad_s2: np.ndarray
    jerk_max_rad_s3: np.ndarray
    max_joint_step_rad: float
    workspace_min_m: np.ndarray
    workspace_max_m: np.ndarray
    ee_speed_max_m_s: float

    @classmethod
    def from_robot(cls, robot: RobotConfig) -> "Limits":
        margin = robot.safety.position_margin_rad
        lower = np.array(robot.arm.position_lower_rad) + margin
        upper = np.array(robot.arm.position_upper_rad) - margin
        if np.any(lower >= upper):
            raise ValueError(f"{robot.path}: robot.safety.position_margin_rad {margin} leaves no room between the joint limits")
        return cls(
            joint_names=robot.arm.joint_names,
            lower_rad=lower,
            upper_rad=upper,
            velocity_max_rad_s=np.array(robot.arm.velocity_max_rad_s),
            acceleration_max_rad_s2=np.array(robot.arm.acceleration_max_rad_s2),
            jerk_max_rad_s3=np.array(robot.arm.jerk_max_rad_s3),
            max_joint_step_rad=robot.safety.max_joint_step_rad,
            workspace_min_m=np.array(robot.safety.workspace_min_m),
            workspace_max_m=np.array(robot.safety.workspace_max_m),
            ee_speed_max_m_s=robot.safety.ee_speed_max_m_s,
        )

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def step_max_rad(self, period_s: float) -> np.ndarray:
        """Largest allowed change of each joint command in one output period."""
        return np.minimum(self.max_joint_step_rad, self.velocity_max_rad_s * period_s)

    def box_distance_m(self, position_m: np.ndarray) -> np.ndarray:
        """Distance of TCP position(s) (..., 3) outside the workspace box; 0 inside."""
        outside = np.maximum(self.workspace_min_m - position_m, 0.0) + np.maximum(position_m - self.workspace_max_m, 0.0)
        return np.sqrt(np.einsum("...i,...i->...", outside, outside))

    def clip_positions(self, q: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        """Clip into the position band; with ``previous``, a joint already outside may stay where it is."""
        lower, upper = self.lower_rad, self.upper_rad
        if previous is not None:
            lower, upper = np.minimum(lower, previous), np.maximum(upper, previous)
        return np.clip(q, lower, upper)


@dataclass
class GuardResult:
    """The guarded command, its TCP position, the names of the limits that changed it (empty when
    none did) and, when the candidate passed unshortened, the TCP Jacobian and rotation at it."""

    position: np.ndarray
    tcp_position_m: np.ndarray
    clipped: list[str]
    jacobian: np.ndarray | None = None
    tcp_rotation: np.ndarray | None = None


class SafetyGuard:
    """Enforces the hard invariants on one output step (see the module docstring)."""

    def __init__(self, limits: Limits, kinematics: ChainKinematics, period_s: float) -> None:
        self.limits = limits
        self.kinematics = kinematics
        self.period_s = period_s
        self.step_max = limits.step_max_rad(period_s)
        self.tcp_step_max_m = limits.ee_speed_max_m_s * period_s
        self.second_difference_max = limits.acceleration_max_rad_s2 * period_s ** 2 * (1 + DYNAMIC_TOLERANCE)
        self.third_difference_max = limits.jerk_max_rad_s3 * period_s ** 3 * (1 + DYNAMIC_TOLERANCE)

    def apply(self, previous: np.ndarray, previous_tcp_m: np.ndarray, candidate: np.ndarray) -> GuardResult:
        """Guard ``candidate`` (the next command) given the ``previous`` command and its TCP position."""
        limits = self.limits
        clipped: list[str] = []
        if not np.all(np.isfinite(candidate)):
            return GuardResult(previous.copy(), previous_tcp_m.copy(), ["non_finite"])
        target = limits.clip_positions(candidate, previous)
        for index in np.flatnonzero(target != candidate):
            clipped.append(f"joint_position:{limits.joint_names[index]}")
        delta = target - previous
        excess = np.abs(delta) / self.step_max
        worst = int(np.argmax(excess))
        if excess[worst] > 1.0:
            clipped.append(f"joint_step:{limits.joint_names[worst]}")
            delta = delta / excess[worst]
            target = previous + delta
        jacobian, tcp, rotation = self.kinematics.jacobian(target)  # the Jacobian serves the next cycle
        if self._cartesian_ok(previous_tcp_m, tcp[None, :]).all():
            return GuardResult(target, tcp, clipped, jacobian, rotation)
        # Shorten the step: the largest fraction such that every shorter one tried is fine too.
        candidates = previous + _FRACTIONS[:, None] * delta
        tcps = self.kinematics.positions(candidates)
        box_ok, speed_ok = self._box_ok(previous_tcp_m, tcps), self._speed_ok(previous_tcp_m, tcps)
        ok = box_ok & speed_ok
        good = int(np.argmin(ok)) if not ok.all() else len(ok)
        clipped.append("ee_speed" if good < len(ok) and box_ok[good] else "workspace")
        if good == 0:
            return GuardResult(previous.copy(), previous_tcp_m.copy(), clipped)
        return GuardResult(candidates[good - 1], tcps[good - 1], clipped)

    def path_problems(self, history: Sequence[np.ndarray], path: np.ndarray) -> list[str]:
        """The limits a path of commands (n, dof) would break after the commands in ``history``
        (at least three, newest last); the path ends at rest and is then held.

        Every step must pass :meth:`apply` unchanged, and the second and third differences of the
        commands, held position included, must stay within the acceleration and jerk limits.
        """
        limits = self.limits
        previous = np.vstack([history[-1], path[:-1]])
        problems = []
        if not np.all(np.isfinite(path)):
            return ["non_finite"]
        if np.any(path < np.minimum(limits.lower_rad, previous)) or np.any(path > np.maximum(limits.upper_rad, previous)):
            problems.append("joint_position")
        if np.any(np.abs(path - previous) > self.step_max):
            problems.append("joint_step")
        commands = np.vstack([np.asarray(history)[-3:], path, path[-1], path[-1]])
        if np.any(np.abs(np.diff(commands, 2, axis=0)) > self.second_difference_max):
            problems.append("acceleration")
        if np.any(np.abs(np.diff(commands, 3, axis=0)) > self.third_difference_max):
            problems.append("jerk")
        tcps = self.kinematics.positions(np.vstack([history[-1], path]))
        box_distance = self.limits.box_distance_m(tcps)
        if np.any(box_distance[1:] > box_distance[:-1] + TOLERANCE):
            problems.append("workspace")
        if not self._speed_ok(tcps[:-1], tcps[1:]).all():
            problems.append("ee_speed")
        return problems

    def _cartesian_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        """Per candidate TCP (N,3): inside the box (or no farther out) and within the speed cap."""
        return self._box_ok(previous_tcp_m, tcps) & self._speed_ok(previous_tcp_m, tcps)

    def _box_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        return self.limits.box_distance_m(tcps) <= self.limits.box_distance_m(previous_tcp_m) + TOLERANCE

    def _speed_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        step = tcps - previous_tcp_m
        return np.einsum("...i,...i->...", step, step) <= (self.tcp_step_max_m - TOLERANCE) ** 2
