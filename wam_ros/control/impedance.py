"""Joint and Cartesian impedance control laws with gravity compensation (no ROS, no simulator).

Both laws turn a measured state and a target into joint torques. The simulator evaluates them
at every 1 kHz physics step, so they are written for a small per-call cost: every intermediate
lives in a buffer made once (bar the 3-vector of pinocchio's ``log3``, the rotation error), and
the result is written into ``out``.

Joint law::

    tau = K (q_d - q) + D (dq_d - dq) + c(q, dq)

Cartesian law (CRISP-style; errors in the base frame, rotation as an axis-angle vector)::

    e   = [clip(p_d - p, e_max_m), clip(log(R_d R^T), e_max_rad)]
    tau = J^T (K e - D J dq) + N (k_n (q_n - q) - d_n dq) + c(q, dq)
    N   = I - J^T (J^+)^T,  J^+ = J^T (J J^T + lambda^2 I)^-1

``c`` is the compensation torque supplied by the caller: gravity (and Coriolis) of the arm, in
simulation MuJoCo's bias force. Torques are clipped to the effort limits. The error clip (0.1 m,
0.5 rad) follows CRISP, so a far target pulls with a bounded force instead of a jump.
"""
from __future__ import annotations

import numpy as np
import pinocchio as pin


class JointImpedance:
    """tau = K (q_d - q) + D (dq_d - dq) + compensation, clipped to +-effort_max."""

    def __init__(self, stiffness_nm_rad: np.ndarray, damping_nms_rad: np.ndarray, effort_max_nm: np.ndarray) -> None:
        self.stiffness = _positive_vector(stiffness_nm_rad, "stiffness_nm_rad", allow_zero=True)
        self.damping = _positive_vector(damping_nms_rad, "damping_nms_rad", allow_zero=True)
        self.effort_max = _positive_vector(effort_max_nm, "effort_max_nm")
        if not len(self.stiffness) == len(self.damping) == len(self.effort_max):
            raise ValueError("stiffness, damping and effort limits need one value per joint")
        self._effort_min = -self.effort_max
        self._error = np.zeros(len(self.stiffness))
        self._velocity_error = np.zeros(len(self.stiffness))

    @property
    def dof(self) -> int:
        return len(self.stiffness)

    def torque(
        self,
        q: np.ndarray,
        dq: np.ndarray,
        q_target: np.ndarray,
        dq_target: np.ndarray,
        compensation: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write the joint torques [N m] into ``out`` (shape (dof,)) and return it."""
        error, velocity_error = self._error, self._velocity_error
        np.subtract(q_target, q, out=error)
        np.subtract(dq_target, dq, out=velocity_error)
        error *= self.stiffness
        velocity_error *= self.damping
        np.add(error, velocity_error, out=out)
        out += compensation
        np.minimum(out, self.effort_max, out=out)  # two ufuncs: np.clip's Python wrapper costs more
        np.maximum(out, self._effort_min, out=out)
        return out


class CartesianImpedance:
    """Task-space spring-damper on the end-effector pose plus a null-space posture spring."""

    def __init__(
        self,
        stiffness: np.ndarray,
        damping: np.ndarray,
        nullspace_stiffness_nm_rad: float,
        effort_max_nm: np.ndarray,
        max_position_error_m: float = 0.1,
        max_rotation_error_rad: float = 0.5,
        pseudo_inverse_damping: float = 0.05,
    ) -> None:
        self.effort_max = _positive_vector(effort_max_nm, "effort_max_nm")
        self.max_position_error_m = float(max_position_error_m)
        self.max_rotation_error_rad = float(max_rotation_error_rad)
        self.pseudo_inverse_damping = float(pseudo_inverse_damping)
        n = len(self.effort_max)
        self.stiffness = np.zeros(6)
        self.damping = np.zeros(6)
        self.nullspace_stiffness = 0.0
        self.nullspace_damping = 0.0
        self.set_gains(stiffness, damping, nullspace_stiffness_nm_rad)
        self._error = np.zeros(6)
        self._twist = np.zeros(6)
        self._wrench = np.zeros(6)
        self._rotation_error = np.zeros((3, 3))
        self._jjt = np.zeros((6, 6))
        self._posture = np.zeros(n)
        self._projected = np.zeros(n)
        self._identity6 = np.eye(6)

    def set_gains(self, stiffness: np.ndarray, damping: np.ndarray, nullspace_stiffness_nm_rad: float) -> None:
        """Replace the gains: translational x, y, z [N/m, N s/m] then rotational [N m/rad, N m s/rad]."""
        stiffness = _positive_vector(stiffness, "stiffness", allow_zero=True)
        damping = _positive_vector(damping, "damping", allow_zero=True)
        if stiffness.shape != (6,) or damping.shape != (6,):
            raise ValueError(f"Cartesian stiffness and damping need 6 values each, got {stiffness.shape} and {damping.shape}")
        if not np.isfinite(nullspace_stiffness_nm_rad) or nullspace_stiffness_nm_rad < 0:
            raise ValueError(f"nullspace stiffness must be finite and >= 0, got {nullspace_stiffness_nm_rad}")
        self.stiffness[:] = stiffness
        self.damping[:] = damping
        self.nullspace_stiffness = float(nullspace_stiffness_nm_rad)
        self.nullspace_damping = 2.0 * np.sqrt(self.nullspace_stiffness)

    def pose_error(self, position: np.ndarray, rotation: np.ndarray, target_position: np.ndarray, target_rotation: np.ndarray) -> np.ndarray:
        """Clipped 6-vector error (target minus current) in the base frame; a view of a buffer."""
        error = self._error
        np.subtract(target_position, position, out=error[:3])
        _clip_norm(error[:3], self.max_position_error_m)
        np.matmul(target_rotation, rotation.T, out=self._rotation_error)
        error[3:] = pin.log3(self._rotation_error)
        _clip_norm(error[3:], self.max_rotation_error_rad)
        return error

    def torque(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        jacobian: np.ndarray,
        q: np.ndarray,
        dq: np.ndarray,
        target_position: np.ndarray,
        target_rotation: np.ndarray,
        nullspace_posture: np.ndarray,
        compensation: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write the joint torques [N m] into ``out`` and return it.

        ``jacobian`` (6, n) maps joint velocities to the end-effector twist (linear then angular)
        in the base frame; ``rotation`` and ``target_rotation`` are 3x3 matrices.
        """
        error = self.pose_error(position, rotation, target_position, target_rotation)
        np.matmul(jacobian, dq, out=self._twist)
        np.multiply(self.stiffness, error, out=self._wrench)
        self._twist *= self.damping
        self._wrench -= self._twist
        np.matmul(jacobian.T, self._wrench, out=out)
        # Null space: posture spring projected so that it does not disturb the end effector.
        np.subtract(nullspace_posture, q, out=self._posture)
        self._posture *= self.nullspace_stiffness
        self._posture -= self.nullspace_damping * dq
        np.matmul(jacobian, jacobian.T, out=self._jjt)
        self._jjt += (self.pseudo_inverse_damping**2) * self._identity6
        task = np.linalg.solve(self._jjt, jacobian @ self._posture)  # (J J^T)^-1 J posture
        np.matmul(jacobian.T, task, out=self._projected)
        self._posture -= self._projected
        out += self._posture
        out += compensation
        np.minimum(out, self.effort_max, out=out)
        np.maximum(out, -self.effort_max, out=out)
        return out


def _clip_norm(vector: np.ndarray, limit: float) -> None:
    norm = float(np.sqrt(vector @ vector))
    if norm > limit:
        vector *= limit / norm


def _positive_vector(values: np.ndarray, name: str, allow_zero: bool = False) -> np.ndarray:
    array = np.array(values, dtype=float)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite vector, got {values!r}")
    if np.any(array < 0) or (not allow_zero and np.any(array == 0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {array.tolist()}")
    return array
