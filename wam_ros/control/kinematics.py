"""TCP forward kinematics, Jacobian and inverse kinematics of a robot arm from its URDF, with pinocchio.

The safety bridge needs the TCP pose on hardware as well as in simulation, so it computes it
from the robot's URDF (``RobotConfig.urdf_path``), never from the simulator. Pinocchio loads the
URDF; the joints outside the arm (e.g. the gripper's fingers) are locked at zero, and poses and
Jacobians are expressed in the robot config's base frame. One joint vector or a batch
``(N, dof)`` (so a search can test many candidates in one call) gives TCP positions and rotations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pinocchio as pin


class KinematicsError(ValueError):
    """The URDF does not describe a usable chain between the requested frames."""


def _chain_joints(model: pin.Model, base_frame: str, tip_frame: str, source: str) -> list[str]:
    """The movable joints from link ``base_frame`` to link ``tip_frame``, in order."""
    missing = [f for f in (base_frame, tip_frame) if not model.existFrame(f, pin.FrameType.BODY)]
    if missing:
        raise KinematicsError(f"{source}: no chain from {base_frame!r} to {tip_frame!r} (no link {missing[0]!r})")
    base, frame_id = model.getFrameId(base_frame, pin.FrameType.BODY), model.getFrameId(tip_frame, pin.FrameType.BODY)
    joints: list[str] = []
    while frame_id != base:
        if frame_id == 0:
            raise KinematicsError(f"{source}: no chain from {base_frame!r} to {tip_frame!r} ({base_frame!r} is not above it)")
        frame = model.frames[frame_id]
        if frame.type == pin.FrameType.JOINT:
            joints.append(frame.name)
        frame_id = frame.parentFrame
    return joints[::-1]


class ChainKinematics:
    """Forward kinematics and geometric Jacobian of the TCP (``tip_frame``) in ``base_frame``.

    ``joint_names`` fixes the column order of joint vectors and must be exactly the movable joints
    between the two frames; pinocchio locks every other joint at zero (``buildReducedModel``).
    One pinocchio ``Data`` serves all calls: an instance is not for concurrent use.
    """

    def __init__(self, model: pin.Model, base_frame: str, tip_frame: str, joint_names: Sequence[str], source: str = "URDF") -> None:
        chain = _chain_joints(model, base_frame, tip_frame, source)
        if sorted(chain) != sorted(joint_names):
            raise KinematicsError(f"chain joints {chain} do not match the arm joints {list(joint_names)}")
        locked = [model.getJointId(name) for name in model.names[1:] if name not in joint_names]
        self.model = pin.buildReducedModel(model, locked, pin.neutral(model))
        if self.model.nv != len(joint_names):
            raise KinematicsError(f"{source}: the joints {list(joint_names)} are not all single-axis joints")
        self.data = self.model.createData()
        self.joint_names = tuple(joint_names)
        self.dof = len(joint_names)
        # Column i of a joint vector is velocity index columns[i] of the model (its joints are in tree order).
        self._columns = np.array([self.model.joints[self.model.getJointId(name)].idx_v for name in joint_names])
        self._to_model = np.argsort(self._columns)
        self._neutral = pin.neutral(self.model)
        self._tip = self.model.getFrameId(tip_frame, pin.FrameType.BODY)
        base = self.model.getFrameId(base_frame, pin.FrameType.BODY)
        pin.framesForwardKinematics(self.model, self.data, self._neutral)
        world_to_base = self.data.oMf[base].inverse()  # constant: every joint above the base is locked
        self._base_inverse = world_to_base.homogeneous
        self._base_rotation_inverse = np.kron(np.eye(2), world_to_base.rotation)

    @classmethod
    def from_urdf(cls, urdf_path: Path | str, base_frame: str, tip_frame: str, joint_names: Sequence[str]) -> "ChainKinematics":
        try:
            model = pin.buildModelFromUrdf(str(urdf_path))
        except ValueError as error:
            raise KinematicsError(f"{urdf_path}: cannot read URDF: {error}") from None
        return cls(model, base_frame, tip_frame, joint_names, str(urdf_path))

    def _check(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape[-1] != self.dof or q.ndim not in (1, 2):
            raise ValueError(f"expected joint vectors of length {self.dof}, got shape {q.shape}")
        return q

    def _configuration(self, q: np.ndarray) -> np.ndarray:
        """Pinocchio configuration of one joint vector in model order (continuous joints become (cos, sin))."""
        return pin.integrate(self.model, self._neutral, q)

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [m] and rotation in the base frame: (3,), (3,3) for one joint vector, (N,3), (N,3,3) for (N, dof)."""
        q = self._check(q)
        batch = np.atleast_2d(q)[:, self._to_model]
        poses = np.empty((len(batch), 4, 4))
        for index, row in enumerate(batch):
            pin.forwardKinematics(self.model, self.data, self._configuration(row))
            poses[index] = pin.updateFramePlacement(self.model, self.data, self._tip).homogeneous
        poses = self._base_inverse @ poses
        if q.ndim == 1:
            poses = poses[0]
        return poses[..., :3, 3], poses[..., :3, :3]

    def positions(self, q: np.ndarray) -> np.ndarray:
        """TCP positions [m] only, (3,) or (N,3)."""
        return self.forward(q)[0]

    def jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geometric Jacobian (6, dof) of the TCP at one joint vector, with the TCP position and rotation.

        Linear rows first: the velocity of the TCP point, then the angular velocity, both in base
        frame axes (pinocchio's LOCAL_WORLD_ALIGNED, turned into the base frame).
        """
        q = self._check(q)
        if q.ndim != 1:
            raise ValueError("jacobian takes one joint vector")
        jac = pin.computeFrameJacobian(self.model, self.data, self._configuration(q[self._to_model]), self._tip, pin.LOCAL_WORLD_ALIGNED)
        pose = self._base_inverse @ self.data.oMf[self._tip].homogeneous
        return self._base_rotation_inverse @ jac[:, self._columns], pose[:3, 3], pose[:3, :3]


def damped_least_squares(jac: np.ndarray, twist: np.ndarray, damping: float) -> np.ndarray:
    """Joint velocities that best produce ``twist`` (6,) with ``jac`` (6, dof); damping keeps it finite near singularities."""
    jjt = jac @ jac.T + (damping ** 2) * np.eye(jac.shape[0])
    return jac.T @ np.linalg.solve(jjt, twist)


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
        error[3:] = pin.log3(rotation @ current_rotation.T)
        if np.linalg.norm(error[:3]) < tolerance_m and np.linalg.norm(error[3:]) < tolerance_rad:
            break
        pseudo_inverse = jac.T @ np.linalg.inv(jac @ jac.T + 1e-4 * np.eye(6))
        step = pseudo_inverse @ np.clip(error, -0.2, 0.2) + (identity - pseudo_inverse @ jac) @ (posture_gain * (q_rest - q))
        q = np.clip(q + step, lower_rad, upper_rad)
    else:
        _, current_position, current_rotation = kinematics.jacobian(q)
        error[:3] = position - current_position
        error[3:] = pin.log3(rotation @ current_rotation.T)
    return q, float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
