"""Forward kinematics and Jacobian of a serial URDF chain, with numpy only.

The safety bridge needs the TCP pose on hardware as well as in simulation, so it computes it
from the robot's URDF (``RobotConfig.urdf_path``), never from the simulator. Only the chain
from the base frame to the TCP frame is read: fixed, revolute, continuous and prismatic joints
with their ``<origin>`` and ``<axis>``. One joint vector or a batch ``(N, dof)`` (so a
search can test many candidates in one call) gives TCP positions and rotations.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

MOVABLE_TYPES = ("revolute", "continuous", "prismatic")


class KinematicsError(ValueError):
    """The URDF does not describe a usable chain between the requested frames."""


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw -> 3x3 rotation (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


@dataclass(frozen=True)
class ChainJoint:
    """One joint of the chain: fixed transform from the parent link, then motion about ``axis``."""

    name: str
    kind: str  # fixed, revolute, continuous or prismatic
    origin: np.ndarray  # 4x4 parent link -> joint frame
    axis: np.ndarray  # unit vector in the joint frame


def _parse_floats(text: str | None, default: Sequence[float], what: str) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=float)
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError:
        raise KinematicsError(f"{what}: expected numbers, got {text!r}") from None
    if values.shape != (len(default),) or not np.all(np.isfinite(values)):
        raise KinematicsError(f"{what}: expected {len(default)} finite numbers, got {text!r}")
    return values


def parse_chain(urdf_path: Path | str, base_frame: str, tip_frame: str) -> list[ChainJoint]:
    """Joints from ``base_frame`` to ``tip_frame`` in order, read from a URDF file."""
    try:
        root = ElementTree.parse(str(urdf_path)).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise KinematicsError(f"{urdf_path}: cannot read URDF: {error}") from None
    by_child: dict[str, ElementTree.Element] = {}
    for joint in root.iter("joint"):
        child = joint.find("child")
        if child is not None:
            by_child[child.get("link", "")] = joint
    chain: list[ChainJoint] = []
    link = tip_frame
    while link != base_frame:
        joint = by_child.get(link)
        if joint is None:
            raise KinematicsError(f"{urdf_path}: no chain from {base_frame!r} to {tip_frame!r} (link {link!r} has no parent joint)")
        name, kind = joint.get("name", ""), joint.get("type", "")
        if kind not in MOVABLE_TYPES + ("fixed",):
            raise KinematicsError(f"{urdf_path}: joint {name!r} has unsupported type {kind!r}")
        origin_element = joint.find("origin")
        xyz = _parse_floats(origin_element.get("xyz") if origin_element is not None else None, (0, 0, 0), f"{name} origin xyz")
        rpy = _parse_floats(origin_element.get("rpy") if origin_element is not None else None, (0, 0, 0), f"{name} origin rpy")
        axis_element = joint.find("axis")
        axis = _parse_floats(axis_element.get("xyz") if axis_element is not None else None, (1, 0, 0), f"{name} axis")
        if kind != "fixed":
            norm = float(np.linalg.norm(axis))
            if norm < 1e-9:
                raise KinematicsError(f"{urdf_path}: joint {name!r} has a zero axis")
            axis = axis / norm
        origin = np.eye(4)
        origin[:3, :3] = rpy_to_matrix(*rpy)
        origin[:3, 3] = xyz
        chain.append(ChainJoint(name=name, kind=kind, origin=origin, axis=axis))
        parent = joint.find("parent")
        link = parent.get("link", "") if parent is not None else ""
    chain.reverse()
    return chain


def _z_to_axis(axis: np.ndarray) -> np.ndarray:
    """A rotation that maps +z onto the unit vector ``axis``."""
    z = np.array([0.0, 0.0, 1.0])
    cross, cos = np.cross(z, axis), float(np.dot(z, axis))
    if np.linalg.norm(cross) < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    skew = np.array([[0.0, -cross[2], cross[1]], [cross[2], 0.0, -cross[0]], [-cross[1], cross[0], 0.0]])
    return np.eye(3) + skew + skew @ skew * (1.0 / (1.0 + cos))


def _compose(frame: list[float], fixed: tuple[float, ...]) -> list[float]:
    """``frame @ fixed`` for frames stored as 9 row-major rotation entries then 3 translation entries."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8, t0, t1, t2 = frame
    b0, b1, b2, b3, b4, b5, b6, b7, b8, u0, u1, u2 = fixed
    return [
        a0 * b0 + a1 * b3 + a2 * b6, a0 * b1 + a1 * b4 + a2 * b7, a0 * b2 + a1 * b5 + a2 * b8,
        a3 * b0 + a4 * b3 + a5 * b6, a3 * b1 + a4 * b4 + a5 * b7, a3 * b2 + a4 * b5 + a5 * b8,
        a6 * b0 + a7 * b3 + a8 * b6, a6 * b1 + a7 * b4 + a8 * b7, a6 * b2 + a7 * b5 + a8 * b8,
        a0 * u0 + a1 * u1 + a2 * u2 + t0, a3 * u0 + a4 * u1 + a5 * u2 + t1, a6 * u0 + a7 * u1 + a8 * u2 + t2,
    ]


class ChainKinematics:
    """Forward kinematics and geometric Jacobian of the TCP of one serial chain.

    ``joint_names`` fixes the column order of joint vectors; every movable joint of the chain
    must be among them (extra names, e.g. gripper joints, are not allowed). Internally every
    joint moves about (or along) its local z axis: each joint's axis is folded into the fixed
    transforms around it, so one joint costs a few multiplications. A single joint vector is
    evaluated with plain floats (fast for one pose); a batch with numpy.
    """

    def __init__(self, chain: list[ChainJoint], joint_names: Sequence[str]) -> None:
        movable = [j.name for j in chain if j.kind != "fixed"]
        if sorted(movable) != sorted(joint_names):
            raise KinematicsError(f"chain joints {movable} do not match the arm joints {list(joint_names)}")
        self.joint_names = tuple(joint_names)
        self.dof = len(joint_names)
        fixed: list[np.ndarray] = []  # 4x4 transform before each movable joint, then the tip offset
        prismatic: list[bool] = []
        self._columns: list[int] = []
        pending = np.eye(4)
        for joint in chain:
            pending = pending @ joint.origin
            if joint.kind == "fixed":
                continue
            align = np.eye(4)
            align[:3, :3] = _z_to_axis(joint.axis)
            fixed.append(pending @ align)
            prismatic.append(joint.kind == "prismatic")
            self._columns.append(self.joint_names.index(joint.name))
            pending = align.T.copy()
        fixed.append(pending)
        self._fixed = np.array(fixed)  # (J + 1, 4, 4)
        self._fixed_flat = [tuple(f[:3, :3].ravel()) + tuple(f[:3, 3]) for f in fixed]
        self._prismatic = np.array(prismatic, dtype=bool)
        self._prismatic_list = prismatic

    @classmethod
    def from_urdf(cls, urdf_path: Path | str, base_frame: str, tip_frame: str, joint_names: Sequence[str]) -> "ChainKinematics":
        return cls(parse_chain(urdf_path, base_frame, tip_frame), joint_names)

    def _single(self, q: np.ndarray) -> tuple[list[float], list[list[float]]]:
        """Tip frame and the frame of each joint before its motion (flat lists), for one joint vector."""
        values = [float(q[column]) for column in self._columns]
        frame = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        joints = []
        for value, fixed, prismatic in zip(values, self._fixed_flat, self._prismatic_list):
            frame = _compose(frame, fixed)
            joints.append(frame)
            if prismatic:
                frame = frame[:9] + [frame[9] + value * frame[2], frame[10] + value * frame[5], frame[11] + value * frame[8]]
            else:
                c, s = math.cos(value), math.sin(value)
                r0, r1, r3, r4, r6, r7 = frame[0], frame[1], frame[3], frame[4], frame[6], frame[7]
                frame = [c * r0 + s * r1, c * r1 - s * r0, frame[2], c * r3 + s * r4, c * r4 - s * r3, frame[5],
                         c * r6 + s * r7, c * r7 - s * r6, frame[8], frame[9], frame[10], frame[11]]
        return _compose(frame, self._fixed_flat[-1]), joints

    def _batch(self, q: np.ndarray) -> np.ndarray:
        """Tip frames (N, 4, 4) for joint vectors (N, dof)."""
        values = q[:, self._columns]
        cos, sin = np.cos(values), np.sin(values)
        motion = np.zeros(values.shape + (4, 4))
        motion[..., 2, 2] = motion[..., 3, 3] = 1.0
        revolute = ~self._prismatic
        motion[..., 0, 0] = motion[..., 1, 1] = np.where(revolute, cos, 1.0)
        motion[..., 0, 1] = np.where(revolute, -sin, 0.0)
        motion[..., 1, 0] = np.where(revolute, sin, 0.0)
        motion[..., 2, 3] = np.where(revolute, 0.0, values)
        frame = np.broadcast_to(np.eye(4), (q.shape[0], 4, 4))
        for index in range(len(self._columns)):
            frame = frame @ self._fixed[index] @ motion[:, index]
        return frame @ self._fixed[-1]

    def _check(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape[-1] != self.dof or q.ndim not in (1, 2):
            raise ValueError(f"expected joint vectors of length {self.dof}, got shape {q.shape}")
        return q

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [m] and rotation in the base frame: (3,), (3,3) for one joint vector, (N,3), (N,3,3) for (N, dof)."""
        q = self._check(q)
        if q.ndim == 1:
            tip, _ = self._single(q)
            return np.array(tip[9:]), np.array(tip[:9]).reshape(3, 3)
        tip = self._batch(q)
        return tip[:, :3, 3], tip[:, :3, :3]

    def positions(self, q: np.ndarray) -> np.ndarray:
        """TCP positions [m] only, (3,) or (N,3)."""
        return self.forward(q)[0]

    def jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geometric Jacobian (6, dof) of the TCP (linear rows first) at one joint vector, with the TCP position and rotation."""
        q = self._check(q)
        if q.ndim != 1:
            raise ValueError("jacobian takes one joint vector")
        tip, joints = self._single(q)
        px, py, pz = tip[9], tip[10], tip[11]
        jac = np.zeros((6, self.dof))
        for frame, prismatic, column in zip(joints, self._prismatic_list, self._columns):
            ax, ay, az = frame[2], frame[5], frame[8]
            if prismatic:
                jac[:3, column] = (ax, ay, az)
                continue
            dx, dy, dz = px - frame[9], py - frame[10], pz - frame[11]
            jac[:, column] = (ay * dz - az * dy, az * dx - ax * dz, ax * dy - ay * dx, ax, ay, az)
        return jac, np.array(tip[9:]), np.array(tip[:9]).reshape(3, 3)


def damped_least_squares(jac: np.ndarray, twist: np.ndarray, damping: float) -> np.ndarray:
    """Joint velocities that best produce ``twist`` (6,) with ``jac`` (6, dof); damping keeps it finite near singularities."""
    jjt = jac @ jac.T + (damping ** 2) * np.eye(jac.shape[0])
    return jac.T @ np.linalg.solve(jjt, twist)


def rotation_vector(rotation: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Axis-angle vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    out = np.zeros(3) if out is None else out
    out[0] = rotation[2, 1] - rotation[1, 2]
    out[1] = rotation[0, 2] - rotation[2, 0]
    out[2] = rotation[1, 0] - rotation[0, 1]
    sin_twice = float(np.sqrt(out[0] ** 2 + out[1] ** 2 + out[2] ** 2))  # 2 sin(angle)
    cos_angle = 0.5 * (rotation[0, 0] + rotation[1, 1] + rotation[2, 2] - 1.0)
    angle = float(np.arctan2(0.5 * sin_twice, cos_angle))
    if sin_twice > 1e-9:
        out *= angle / sin_twice
    elif cos_angle < 0.0:
        # Angle near pi: the axis is the column of R + I with the largest norm.
        symmetric = rotation + np.eye(3)
        column = symmetric[:, int(np.argmax(np.linalg.norm(symmetric, axis=0)))]
        out[:] = column / np.linalg.norm(column) * np.pi
    else:
        out *= 0.5  # small angle: R - R^T = 2 [axis * angle]_x
    return out


class JacobianSource(Protocol):
    """What inverse_kinematics needs: ChainKinematics (URDF) or the sim's ArmKinematics (MuJoCo)."""

    def jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Jacobian (6, dof), linear rows first, TCP position (3,) and rotation (3, 3) at ``q``."""


def inverse_kinematics(
    kinematics: JacobianSource,
    position: np.ndarray,
    rotation: np.ndarray,
    q_init: np.ndarray,
    q_rest: np.ndarray,
    lower_rad: np.ndarray,
    upper_rad: np.ndarray,
    tolerance_m: float = 2e-4,
    tolerance_rad: float = 2e-3,
    max_iterations: int = 50,
    posture_gain: float = 0.1,
) -> tuple[np.ndarray, float, float]:
    """Joint positions that put the TCP at (position, rotation), warm-started from ``q_init``.

    Damped least squares on the 6-D pose error, with a null-space pull towards ``q_rest`` (keeps a
    redundant arm's elbow where the demonstrations had it) and the joints clipped to
    [lower, upper]. Returns the joints and the remaining position [m] and rotation [rad] errors;
    an unreachable pose gives the closest joints found, and the caller judges the residual.
    """
    q = np.clip(np.asarray(q_init, float), lower_rad, upper_rad)
    error = np.zeros(6)
    identity = np.eye(len(q))
    for _ in range(max_iterations):
        jac, current_position, current_rotation = kinematics.jacobian(q)
        error[:3] = position - current_position
        rotation_vector(rotation @ current_rotation.T, out=error[3:])
        if np.linalg.norm(error[:3]) < tolerance_m and np.linalg.norm(error[3:]) < tolerance_rad:
            break
        pseudo_inverse = jac.T @ np.linalg.inv(jac @ jac.T + 1e-4 * np.eye(6))
        step = pseudo_inverse @ np.clip(error, -0.2, 0.2) + (identity - pseudo_inverse @ jac) @ (posture_gain * (q_rest - q))
        q = np.clip(q + step, lower_rad, upper_rad)
    else:
        _, current_position, current_rotation = kinematics.jacobian(q)
        error[:3] = position - current_position
        rotation_vector(rotation @ current_rotation.T, out=error[3:])
    return q, float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
