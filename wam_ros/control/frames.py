"""The robot's TF tree without ROS: every URDF joint's parent -> child transform, cameras, world.

What ``robot_state_publisher`` publishes, computed with pinocchio from the URDF: one transform
per joint, from the joint's parent link to its child link. Fixed joints are constant (``/tf_static``);
movable joints (revolute, continuous, prismatic) follow the joint positions (``/tf``), and a mimic
joint that the positions leave out follows its master (``multiplier * q + offset``), as in
robot_state_publisher. The robot config adds the cameras (``parent_frame`` -> ``frame_id`` at their
extrinsics) and an optional world frame above the URDF's root link.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pinocchio as pin

from wam_ros.robot import RobotConfig


class FramesError(ValueError):
    """The URDF or the robot config does not give a consistent frame tree; the message says where."""


@dataclass(frozen=True)
class Transform:
    """Pose of ``child`` in ``parent``: translation [m] and unit quaternion (x, y, z, w)."""

    parent: str
    child: str
    translation_m: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]

    @classmethod
    def from_placement(cls, parent: str, child: str, placement: pin.SE3) -> "Transform":
        x, y, z, w = pin.Quaternion(placement.rotation).coeffs()
        return cls(parent, child, tuple(float(v) for v in placement.translation), (float(x), float(y), float(z), float(w)))

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous transform (maps child coordinates to parent coordinates)."""
        x, y, z, w = self.rotation_xyzw
        out = np.eye(4)
        out[:3, :3] = pin.Quaternion(w, x, y, z).normalized().toRotationMatrix()
        out[:3, 3] = self.translation_m
        return out


@dataclass(frozen=True)
class Mimic:
    """A joint that copies another: q = multiplier * q_master + offset."""

    master: str
    multiplier: float
    offset: float


@dataclass(frozen=True)
class _Joint:
    name: str
    parent_frame: int  # pinocchio BODY frame of the parent link
    child_frame: int  # pinocchio BODY frame of the child link
    velocity_index: int  # -1 for a fixed joint


def _mimics(urdf_text: str) -> dict[str, Mimic]:
    """The URDF's mimic tags (pinocchio models mimic joints as independent joints unless asked)."""
    mimics = {}
    for joint in ElementTree.fromstring(urdf_text).iter("joint"):
        tag = joint.find("mimic")
        if tag is not None:
            mimics[joint.get("name")] = Mimic(tag.get("joint"), float(tag.get("multiplier", 1.0)), float(tag.get("offset", 0.0)))
    return mimics


class UrdfFrames:
    """Parent -> child transforms of every joint of a URDF, as robot_state_publisher publishes them."""

    def __init__(self, urdf_path: Path | str) -> None:
        self.urdf_path = Path(urdf_path)
        self.urdf_text = self.urdf_path.read_text(encoding="utf-8")
        try:
            self.model = pin.buildModelFromXML(self.urdf_text)
            self.mimics = _mimics(self.urdf_text)
        except (ValueError, RuntimeError, ElementTree.ParseError) as error:
            raise FramesError(f"{self.urdf_path}: cannot read URDF: {error}") from None
        self.data = self.model.createData()
        self._neutral = pin.neutral(self.model)
        frames = self.model.frames
        self.links: list[str] = []
        self._joints: list[_Joint] = []
        for index, frame in enumerate(frames):
            if frame.type != pin.FrameType.BODY:
                continue
            self.links.append(frame.name)
            if frame.parentFrame == 0:  # the root link hangs off pinocchio's universe
                self.root_link = frame.name
                continue
            joint_frame = frames[frame.parentFrame]
            if joint_frame.type == pin.FrameType.FIXED_JOINT:
                velocity_index = -1
            else:
                joint = self.model.joints[self.model.getJointId(joint_frame.name)]
                if joint.nv != 1:
                    raise FramesError(f"{self.urdf_path}: joint {joint_frame.name!r} ({joint.shortname()}) is not a single-axis joint")
                velocity_index = joint.idx_v
            self._joints.append(_Joint(joint_frame.name, joint_frame.parentFrame, index, velocity_index))
        unknown = {name: m.master for name, m in self.mimics.items() if m.master not in self.movable_joints}
        if unknown:
            name, master = next(iter(unknown.items()))
            raise FramesError(f"{self.urdf_path}: joint {name!r} mimics {master!r}, which is not a movable joint")

    @property
    def movable_joints(self) -> list[str]:
        return [joint.name for joint in self._joints if joint.velocity_index >= 0]

    @property
    def fixed_joints(self) -> list[str]:
        return [joint.name for joint in self._joints if joint.velocity_index < 0]

    def _transforms(self, joints: Sequence[_Joint], velocity: np.ndarray) -> list[Transform]:
        pin.framesForwardKinematics(self.model, self.data, pin.integrate(self.model, self._neutral, velocity))
        names = self.model.frames
        return [Transform.from_placement(names[j.parent_frame].name, names[j.child_frame].name,
                                         self.data.oMf[j.parent_frame].actInv(self.data.oMf[j.child_frame]))
                for j in joints]

    def fixed_transforms(self) -> list[Transform]:
        """One transform per fixed joint (constant)."""
        return self._transforms([j for j in self._joints if j.velocity_index < 0], np.zeros(self.model.nv))

    def moving_transforms(self, positions: Mapping[str, float]) -> list[Transform]:
        """One transform per movable joint whose position is known [rad or m].

        Joints absent from ``positions`` are left out, except mimic joints, which follow their master.
        """
        known = dict(positions)
        for name, mimic in self.mimics.items():
            if name not in known and mimic.master in known:
                known[name] = mimic.multiplier * known[mimic.master] + mimic.offset
        velocity = np.zeros(self.model.nv)
        joints = []
        for joint in self._joints:
            if joint.velocity_index >= 0 and joint.name in known:
                velocity[joint.velocity_index] = known[joint.name]
                joints.append(joint)
        return self._transforms(joints, velocity)


def camera_transforms(robot: RobotConfig, links: Sequence[str]) -> list[Transform]:
    """``parent_frame`` -> ``frame_id`` of every camera with extrinsics in the robot config."""
    transforms = []
    for camera in robot.cameras:
        if not camera.parent_frame or not camera.extrinsics_xyz_m or not camera.extrinsics_quat_xyzw:
            continue
        where = f"{robot.path}: camera {camera.name!r}"
        if camera.parent_frame not in links:
            raise FramesError(f"{where}: parent_frame {camera.parent_frame!r} is not a link of {robot.urdf_path.name}")
        if camera.frame_id in links:
            raise FramesError(f"{where}: frame_id {camera.frame_id!r} is a link of {robot.urdf_path.name}: its pose would be published twice")
        quat = np.array(camera.extrinsics_quat_xyzw)
        norm = float(np.linalg.norm(quat))
        if not math.isclose(norm, 1.0, abs_tol=1e-3):
            raise FramesError(f"{where}: extrinsics_quat_xyzw has norm {norm:.4f}, not a rotation")
        transforms.append(Transform(camera.parent_frame, camera.frame_id, camera.extrinsics_xyz_m, tuple(float(v) for v in quat / norm)))
    return transforms


def world_transform(world_frame: str, root_link: str, xyz_m: Sequence[float], quat_xyzw: Sequence[float]) -> list[Transform]:
    """``world_frame`` -> the URDF's root link at the given pose; none when the frame is empty or is the root."""
    if not world_frame or world_frame == root_link:
        return []
    if len(xyz_m) != 3 or len(quat_xyzw) != 4:
        raise FramesError(f"the root link's pose in {world_frame!r} needs 3 coordinates and a quaternion (x, y, z, w)")
    quat = np.asarray(quat_xyzw, dtype=float)
    norm = float(np.linalg.norm(quat))
    if not math.isclose(norm, 1.0, abs_tol=1e-3):
        raise FramesError(f"the root link's orientation in {world_frame!r} has norm {norm:.4f}, not a rotation")
    return [Transform(world_frame, root_link, tuple(float(v) for v in xyz_m), tuple(float(v) for v in quat / norm))]


class RateLimit:
    """Publish at most ``rate_hz`` (0: every time), by the message stamps [s]; time going back restarts it."""

    def __init__(self, rate_hz: float) -> None:
        if rate_hz < 0:
            raise ValueError(f"rate must be >= 0 Hz, got {rate_hz}")
        self.period_s = 1.0 / rate_hz if rate_hz > 0 else 0.0
        self.last_s: float | None = None

    def due(self, stamp_s: float) -> bool:
        if self.last_s is not None and self.last_s <= stamp_s < self.last_s + self.period_s - 1e-9:
            return False
        self.last_s = stamp_s
        return True
