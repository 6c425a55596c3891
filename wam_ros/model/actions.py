"""What the network predicts for a chunk of joint targets: the action representation.

Datasets, the runtime's callers and the safety bridge all speak joint position targets (plus the
gripper width). The network predicts one of two representations of them (``action_space``):

* ``joint``: joint targets minus the current joint positions; the gripper absolute.
* ``tcp``: TCP poses relative to the current TCP pose, in the robot's base frame: position
  difference (3) and the rotation vector of ``R_target R_current^T`` (3); the gripper absolute.
  Forward kinematics (the robot's URDF) gives the poses of recorded joint targets; damped
  least-squares IK, warm-started row by row from the current joints with a null-space pull to
  the robot's home posture (as the sim's expert solves it), gives joint targets back. Why: a
  pick is a few straight TCP lines; in joint space the same lines are curves that change with
  the arm's posture, and the policy has to learn that map too. Given the cube's true position,
  the joint-space policy missed a grasp by 3 cm in a failed episode (docs/model.md).

Every representation is then standardised per chunk row and per group of dimensions that share a
scale (``groups``): each joint on its own; the TCP position's three coordinates together and the
rotation vector's three together. A tcp chunk hardly tilts the hand, and scaled on their own the
tilt components' milliradians of tracking and IK noise weigh as much in the loss as the motion
that matters. Measured (docs/model.md): tcp scored 13/50 with per-dimension scales and 10/50
with the shared ones, against 31/50 for joint with the same localiser, so joint is the default.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy.spatial.transform import Rotation

from wam_ros.control.kinematics import ChainKinematics, inverse_kinematics
from wam_ros.model.config import WamConfig
from wam_ros.robot import ConfigError, load_robot_config

IK_JOINT_MARGIN_RAD = 0.05  # IK keeps this far inside the URDF/config joint limits


class ArmModel:
    """One robot's arm kinematics and limits, indexed by a dataset's state and action names."""

    def __init__(self, robot: str, state_names: list[str], action_names: list[str]) -> None:
        try:
            config = load_robot_config(robot)
        except ConfigError as error:
            raise ValueError(f"forward kinematics of robot {robot!r}: {error}") from None
        joints = list(config.arm.joint_names)
        for kind, names in (("state", state_names), ("action", action_names)):
            missing = [j for j in joints if j not in names]
            if missing:
                raise ValueError(f"the {kind} has no column for the joints {missing} of robot {config.name}")
        self.robot = config
        self.state_joints = [state_names.index(j) for j in joints]
        self.action_joints = [action_names.index(j) for j in joints]
        self.kinematics = ChainKinematics.from_urdf(config.urdf_path, config.base_frame, config.tcp_frame, joints)
        self.home = np.asarray(config.arm.home_rad, float)
        self.lower = np.asarray(config.arm.position_lower_rad, float) + IK_JOINT_MARGIN_RAD
        self.upper = np.asarray(config.arm.position_upper_rad, float) - IK_JOINT_MARGIN_RAD

    def tcp(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP positions (..., 3) and rotations (..., 3, 3) of arm joint vectors (..., dof)."""
        flat = np.asarray(joints, np.float64).reshape(-1, self.kinematics.dof)
        positions, rotations = self.kinematics.forward(flat)
        return positions.reshape(*joints.shape[:-1], 3), rotations.reshape(*joints.shape[:-1], 3, 3)

    def state_tcp(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP pose of states (..., S)."""
        return self.tcp(np.asarray(state)[..., self.state_joints])


class ActionCodec(Protocol):
    """Joint-target chunks <-> the network's representation (numpy, float32 out)."""

    dim: int
    groups: list[list[int]]  # dimensions that share one standardisation scale

    def encode(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Chunks (..., H, A) of targets and the current states (..., S) -> (..., H, dim)."""

    def decode(self, representation: np.ndarray, state: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """(H, dim) and the current state (S,) -> targets (H, A); ``known`` (k, A) are the first k
        rows' targets (a frozen prefix), returned as they are."""


class JointActions:
    """``joint``: the arm's targets relative to the current joint positions, the rest absolute."""

    def __init__(self, config: WamConfig) -> None:
        self.dims = list(config.relative_action_dims)
        self.dim = config.action_dim
        self.groups = [[i] for i in range(self.dim)]

    def encode(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        relative = np.array(actions, dtype=np.float32)
        relative[..., self.dims] -= np.asarray(state, np.float32)[..., None, self.dims]
        return relative

    def decode(self, representation: np.ndarray, state: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        actions = np.array(representation, dtype=np.float32)
        actions[..., self.dims] += np.asarray(state, np.float32)[..., None, self.dims]
        if known is not None and len(known):
            actions[: len(known)] = known
        return actions


class TcpActions:
    """``tcp``: relative TCP poses (see the module docstring); targets back through IK."""

    def __init__(self, config: WamConfig) -> None:
        self.arm = ArmModel(config.robot, config.state_names, config.action_names)
        if sorted(self.arm.action_joints) != sorted(config.relative_action_dims):
            raise ValueError(f"relative_action_dims {config.relative_action_dims} are not the arm joints {self.arm.action_joints} of robot {config.robot}")
        self.other = config.gripper_action_dims  # carried through absolute (the gripper width)
        self.action_dim = config.action_dim
        self.dim = 6 + len(self.other)
        self.groups = [[0, 1, 2], [3, 4, 5]] + [[i] for i in range(6, self.dim)]

    def encode(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        actions, state = np.asarray(actions), np.asarray(state)
        target_p, target_r = self.arm.tcp(actions[..., self.arm.action_joints])
        current_p, current_r = self.arm.state_tcp(state)
        out = np.empty((*actions.shape[:-1], self.dim), np.float32)
        out[..., :3] = target_p - current_p[..., None, :]
        relative = target_r @ np.swapaxes(current_r, -1, -2)[..., None, :, :]
        out[..., 3:6] = Rotation.from_matrix(relative.reshape(-1, 3, 3)).as_rotvec().reshape(*actions.shape[:-1], 3)
        out[..., 6:] = actions[..., self.other]
        return out

    def decode(self, representation: np.ndarray, state: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        representation = np.asarray(representation, np.float64)
        state = np.asarray(state, np.float64)
        current_p, current_r = self.arm.state_tcp(state)
        positions = current_p + representation[:, :3]
        rotations = Rotation.from_rotvec(representation[:, 3:6]).as_matrix() @ current_r
        actions = np.zeros((len(representation), self.action_dim), np.float32)
        actions[:, self.other] = representation[:, 6:]
        start = 0 if known is None else len(known)
        if start:
            actions[:start] = known
        q = np.asarray(known[-1], np.float64)[self.arm.action_joints] if start else state[self.arm.state_joints]
        for row in range(start, len(representation)):
            q, _, _ = inverse_kinematics(self.arm.kinematics, positions[row], rotations[row], q, self.arm.home, self.arm.lower, self.arm.upper)
            actions[row, self.arm.action_joints] = q
        return actions


def make_action_codec(config: WamConfig) -> ActionCodec:
    """The codec of ``config.action_space``; ValueError naming the problem (unknown space or robot)."""
    if config.action_space == "joint":
        return JointActions(config)
    if config.action_space == "tcp":
        return TcpActions(config)
    raise ValueError(f"action_space {config.action_space!r}: expected joint or tcp")
