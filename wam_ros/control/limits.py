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

:func:`check_output` verifies these invariants without using the guard; tests and the
benchmark count its findings as unsafe outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wam_ros.control.kinematics import ChainKinematics
from wam_ros.robot import RobotConfig

#: Fractions of a step the guard tries when a Cartesian limit forces it to shorten the step.
_FRACTIONS = np.linspace(0.0, 1.0, 17)[1:]
#: Numerical slack of the invariants (rounding of FK and of the clipping arithmetic).
TOLERANCE = 1e-9


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
            delta = delta / excess[worst]
            clipped.append(f"joint_step:{limits.joint_names[worst]}")
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

    def _cartesian_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        """Per candidate TCP (N,3): inside the box (or no farther out) and within the speed cap."""
        return self._box_ok(previous_tcp_m, tcps) & self._speed_ok(previous_tcp_m, tcps)

    def _box_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        return self.limits.box_distance_m(tcps) <= self.limits.box_distance_m(previous_tcp_m) + TOLERANCE

    def _speed_ok(self, previous_tcp_m: np.ndarray, tcps: np.ndarray) -> np.ndarray:
        step = tcps - previous_tcp_m
        return np.einsum("...i,...i->...", step, step) <= (self.tcp_step_max_m - TOLERANCE) ** 2


def check_output(limits: Limits, kinematics: ChainKinematics, period_s: float, previous: np.ndarray, output: np.ndarray) -> list[str]:
    """Every invariant ``output`` breaks relative to ``previous`` (empty list: safe). Independent of the guard."""
    return _check(limits, kinematics, period_s, previous, kinematics.positions(previous), output)[0]


def _check(limits: Limits, kinematics: ChainKinematics, period_s: float, previous: np.ndarray, previous_tcp_m: np.ndarray,
           output: np.ndarray) -> tuple[list[str], np.ndarray | None]:
    """Problems of ``output`` and its TCP position (None when it is not even finite)."""
    if output.shape != previous.shape or not np.all(np.isfinite(output)):
        return ["non-finite or misshaped output"], None
    problems: list[str] = []
    lower = np.minimum(limits.lower_rad, previous) - TOLERANCE
    upper = np.maximum(limits.upper_rad, previous) + TOLERANCE
    if np.any(output < lower) or np.any(output > upper):
        problems.append("joint position outside the limits")
    if np.any(np.abs(output - previous) > limits.step_max_rad(period_s) + TOLERANCE):
        problems.append("joint step above the velocity or step limit")
    tcp = kinematics.positions(output)
    if limits.box_distance_m(tcp) > limits.box_distance_m(previous_tcp_m) + 1e-7:
        problems.append("TCP left the workspace box")
    if np.linalg.norm(tcp - previous_tcp_m) > limits.ee_speed_max_m_s * period_s + 1e-7:
        problems.append("TCP faster than the speed cap")
    return problems, tcp


class OutputChecker:
    """:func:`check_output` over a stream of outputs, each against the one before (one FK per output)."""

    def __init__(self, limits: Limits, kinematics: ChainKinematics, period_s: float, start: np.ndarray) -> None:
        self.limits, self.kinematics, self.period_s = limits, kinematics, period_s
        self.previous = np.array(start, dtype=float)
        self.previous_tcp_m = kinematics.positions(self.previous)

    def check(self, output: np.ndarray) -> list[str]:
        """Problems of ``output``; it then becomes the reference for the next one."""
        problems, tcp = _check(self.limits, self.kinematics, self.period_s, self.previous, self.previous_tcp_m, output)
        if tcp is not None:
            self.previous, self.previous_tcp_m = np.array(output, dtype=float), tcp
        return problems
