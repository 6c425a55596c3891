"""An independent check of the bridge's output stream, for the fuzz tests and the benchmark.

:class:`CommandChecker` takes the commands the bridge sends, one per output period, and lists
every invariant a command breaks. It reads its numbers from the robot config and computes the
TCP position with its own pinocchio model, so it shares no code with the guard
(:mod:`wam_ros.control.limits`), the motion generator or :mod:`wam_ros.control.kinematics`:
a bug there is not repeated here.

Invariants of command ``k`` (joint positions ``q_k``, one period ``dt`` after ``q_{k-1}``):

- finite, one value per arm joint;
- each joint in ``[lower + margin, upper - margin]``, or no farther out than ``q_{k-1}``;
- ``|q_k - q_{k-1}| <= min(max_joint_step_rad, velocity_max * dt)`` per joint;
- acceleration ``|q_k - 2 q_{k-1} + q_{k-2}| / dt^2 <= acceleration_max`` per joint;
- jerk ``|q_k - 3 q_{k-1} + 3 q_{k-2} - q_{k-3}| / dt^3 <= jerk_max`` per joint;
- the TCP inside the workspace box, or no farther from it than at ``q_{k-1}``;
- the TCP step at most ``ee_speed_max_m_s * dt``;
- a gripper width inside ``[width_min_m, width_max_m]``, changed by at most
  ``speed_max_m_s`` times the time since the previous gripper command;
- commands cease only at rest (:meth:`CommandChecker.check_stop`: the backend keeps the last target).

A stream starts at rest at ``start``; the acceleration and jerk of the first commands count the
arm as standing there before.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pinocchio as pin

from wam_ros.robot import RobotConfig

#: Relative slack on the acceleration and jerk bounds (floating-point rounding of the differences).
DYNAMIC_SLACK = 1e-6
#: Absolute slack on positions [rad] and lengths [m].
LENGTH_SLACK = 1e-7


class _TcpModel:
    """TCP position in the robot's base frame from the URDF, with every joint outside the arm at zero."""

    def __init__(self, robot: RobotConfig) -> None:
        self.model = pin.buildModelFromUrdf(str(robot.urdf_path))
        self.data = self.model.createData()
        self.q = pin.neutral(self.model)
        self.slots = []
        for name in robot.arm.joint_names:
            joint = self.model.joints[self.model.getJointId(name)]
            if joint.nq not in (1, 2):
                raise ValueError(f"{robot.urdf_path}: joint {name} is not a single-axis joint")
            self.slots.append((joint.idx_q, joint.nq))
        self.base = self.model.getFrameId(robot.base_frame)
        self.tcp = self.model.getFrameId(robot.tcp_frame)
        if self.base >= len(self.model.frames) or self.tcp >= len(self.model.frames):
            raise ValueError(f"{robot.urdf_path}: no frame {robot.base_frame!r} or {robot.tcp_frame!r}")

    def position(self, joints: np.ndarray) -> np.ndarray:
        for (index, size), value in zip(self.slots, joints):
            if size == 1:
                self.q[index] = value
            else:  # continuous joint: (cos, sin)
                self.q[index], self.q[index + 1] = math.cos(value), math.sin(value)
        pin.framesForwardKinematics(self.model, self.data, self.q)
        return self.data.oMf[self.base].actInv(self.data.oMf[self.tcp]).translation.copy()


class CommandChecker:
    """Checks a stream of output commands against the invariants in the module docstring."""

    def __init__(self, robot: RobotConfig, period_s: float, start: np.ndarray) -> None:
        arm, safety, gripper = robot.arm, robot.safety, robot.gripper
        margin = safety.position_margin_rad
        self.robot = robot
        self.period_s = period_s
        self.lower = np.array(arm.position_lower_rad) + margin
        self.upper = np.array(arm.position_upper_rad) - margin
        self.step_max = np.minimum(safety.max_joint_step_rad, np.array(arm.velocity_max_rad_s) * period_s)
        self.second_difference_max = np.array(arm.acceleration_max_rad_s2) * period_s ** 2
        self.third_difference_max = np.array(arm.jerk_max_rad_s3) * period_s ** 3
        self.box_min = np.array(safety.workspace_min_m)
        self.box_max = np.array(safety.workspace_max_m)
        self.tcp_step_max_m = safety.ee_speed_max_m_s * period_s
        self.gripper = gripper
        self.tcp_model = _TcpModel(robot)
        self.worst_acceleration_ratio = 0.0  # largest |acceleration| / limit seen, over joints and commands
        self.worst_jerk_ratio = 0.0
        self.gripper_last: tuple[float, float] | None = None  # (time [s], width [m]) of the previous gripper command
        self.restart(start)

    def restart(self, start: np.ndarray) -> None:
        """A new stream of commands begins with the arm at rest at ``start``."""
        start = np.array(start, dtype=float)
        self.history: deque[np.ndarray] = deque([start, start, start], maxlen=3)  # newest last
        self.previous_tcp_m = self.tcp_model.position(start)

    @property
    def previous(self) -> np.ndarray:
        return self.history[-1]

    def _box_distance(self, tcp: np.ndarray) -> float:
        outside = np.maximum(self.box_min - tcp, 0.0) + np.maximum(tcp - self.box_max, 0.0)
        return float(np.sqrt(outside @ outside))

    def check(self, position: np.ndarray, gripper_width_m: float | None = None, time_s: float = 0.0) -> list[str]:
        """Problems of the next command (joint positions, and the gripper width when one is sent at ``time_s``)."""
        problems = self._check_gripper(gripper_width_m, time_s) if gripper_width_m is not None else []
        q = np.asarray(position, dtype=float)
        if q.shape != self.previous.shape or not np.all(np.isfinite(q)):
            return problems + ["non-finite or misshaped command"]
        tcp = self.tcp_model.position(q)
        problems += self._geometry(self.previous, self.previous_tcp_m, q, tcp) + self._dynamics(q)
        self.history.append(q.copy())
        self.previous_tcp_m = tcp
        return problems

    def check_step(self, previous: np.ndarray, position: np.ndarray) -> list[str]:
        """Problems of one command after ``previous`` without regard to the stream (no acceleration
        or jerk): for a guard alone, or the first command after a switch to the measured state."""
        q = np.asarray(position, dtype=float)
        if q.shape != np.shape(previous) or not np.all(np.isfinite(q)):
            return ["non-finite or misshaped command"]
        previous = np.asarray(previous, dtype=float)
        return self._geometry(previous, self.tcp_model.position(previous), q, self.tcp_model.position(q))

    def _geometry(self, q1: np.ndarray, tcp1: np.ndarray, q: np.ndarray, tcp: np.ndarray) -> list[str]:
        """Joint band, joint step, workspace box and TCP speed of the step from ``q1`` to ``q``."""
        problems = []
        lower, upper = np.minimum(self.lower, q1) - LENGTH_SLACK, np.maximum(self.upper, q1) + LENGTH_SLACK
        if np.any(q < lower) or np.any(q > upper):
            problems.append("joint position outside the limits")
        if np.any(np.abs(q - q1) > self.step_max + LENGTH_SLACK):
            problems.append("joint step above the velocity or step limit")
        if self._box_distance(tcp) > self._box_distance(tcp1) + LENGTH_SLACK:
            problems.append("TCP left the workspace box")
        if np.linalg.norm(tcp - tcp1) > self.tcp_step_max_m + LENGTH_SLACK:
            problems.append("TCP faster than the speed cap")
        return problems

    def check_stop(self) -> list[str]:
        """Commands cease: the backend keeps the last target, as if it were sent again and again.
        The acceleration and jerk of that hold must be within the limits; the next command starts
        a new stream from there."""
        last = self.history[-1]
        problems = []
        for _ in range(2):  # after two repeats every difference involves the held position only
            problems += [f"commands ceased: {problem}" for problem in self._dynamics(last)]
            self.history.append(last)
        return problems

    def _dynamics(self, q: np.ndarray) -> list[str]:
        """Acceleration and jerk of ``q`` after the history (which it does not change)."""
        q1, q2, q3 = self.history[-1], self.history[-2], self.history[-3]
        acceleration = np.abs(q - 2 * q1 + q2) / self.second_difference_max
        jerk = np.abs(q - 3 * q1 + 3 * q2 - q3) / self.third_difference_max
        self.worst_acceleration_ratio = max(self.worst_acceleration_ratio, float(acceleration.max()))
        self.worst_jerk_ratio = max(self.worst_jerk_ratio, float(jerk.max()))
        problems = []
        names = self.robot.arm.joint_names
        if acceleration.max() > 1.0 + DYNAMIC_SLACK:
            joint = int(np.argmax(acceleration))
            problems.append(f"acceleration {acceleration[joint]:.3f} x the limit on {names[joint]}")
        if jerk.max() > 1.0 + DYNAMIC_SLACK:
            joint = int(np.argmax(jerk))
            problems.append(f"jerk {jerk[joint]:.3f} x the limit on {names[joint]}")
        return problems

    def _check_gripper(self, width_m: float, time_s: float) -> list[str]:
        problems = []
        gripper = self.gripper
        if not (math.isfinite(width_m) and gripper.width_min_m - LENGTH_SLACK <= width_m <= gripper.width_max_m + LENGTH_SLACK):
            problems.append(f"gripper width {width_m} outside [{gripper.width_min_m}, {gripper.width_max_m}] m")
        elif self.gripper_last is not None:
            last_s, last_m = self.gripper_last
            if abs(width_m - last_m) > gripper.speed_max_m_s * max(time_s - last_s, 0.0) + LENGTH_SLACK:
                problems.append(f"gripper width changed {abs(width_m - last_m) * 1e3:.1f} mm in {(time_s - last_s) * 1e3:.1f} ms "
                                f"(speed limit {gripper.speed_max_m_s} m/s)")
        if math.isfinite(width_m):
            self.gripper_last = (time_s, width_m)
        return problems
