"""Forward and inverse kinematics of the arm's TCP on the scene's MuJoCo model (private MjData).

Inverse kinematics is damped least squares on the 6-D pose error with a null-space pull towards
a rest posture (keeps the elbow up and the solution continuous when warm-started), joint limits
respected with a margin.
"""
from __future__ import annotations

import mujoco
import numpy as np

from wam_ros.control.kinematics import inverse_kinematics


class IKError(RuntimeError):
    """The pose could not be reached within tolerance."""


class ArmKinematics:
    """TCP kinematics for the arm joints (the first ``dof`` joints of the model)."""

    def __init__(self, model: mujoco.MjModel, tcp_body: str, joint_names: tuple[str, ...],
                 lower_rad: np.ndarray, upper_rad: np.ndarray, margin_rad: float = 0.05) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.tcp = int(model.body(tcp_body).id)
        self.qpos = np.array([int(model.joint(n).qposadr[0]) for n in joint_names])
        self.dofs = np.array([int(model.joint(n).dofadr[0]) for n in joint_names])
        self.lower = np.asarray(lower_rad, float) + margin_rad
        self.upper = np.asarray(upper_rad, float) - margin_rad
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation matrix (3, 3) in the base frame."""
        self.data.qpos[self.qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.xpos[self.tcp].copy(), self.data.xmat[self.tcp].reshape(3, 3).copy()

    def jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geometric Jacobian (6, dof), linear rows first, with the TCP position and rotation at ``q``."""
        position, rotation = self.forward(q)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacBody(self.model, self.data, self._jacp, self._jacr, self.tcp)
        return np.vstack([self._jacp[:, self.dofs], self._jacr[:, self.dofs]]), position, rotation

    def inverse(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        q_init: np.ndarray,
        q_rest: np.ndarray,
        tolerance_m: float = 2e-4,
        tolerance_rad: float = 2e-3,
        max_iterations: int = 100,
    ) -> np.ndarray:
        """Joint positions that put the TCP at (position, rotation); raises IKError if unreachable.

        The solver is :func:`wam_ros.control.kinematics.inverse_kinematics` on this model's Jacobian.
        """
        q, position_error_m, rotation_error_rad = inverse_kinematics(
            self, position, rotation, q_init, q_rest, self.lower, self.upper, tolerance_m, tolerance_rad, max_iterations)
        if position_error_m < 5 * tolerance_m and rotation_error_rad < 5 * tolerance_rad:
            return q  # slow convergence (posture pull against the pose), still well within tracking error
        raise IKError(f"no IK solution for position {np.round(position, 3).tolist()} "
                      f"(residual {position_error_m * 1000:.1f} mm, {np.degrees(rotation_error_rad):.1f} deg)")
