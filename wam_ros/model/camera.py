"""A static camera's calibration as the model uses it: pixels <-> points on a table plane.

:class:`TablePlaneCamera` holds a pinhole camera's intrinsics and its pose in the robot's base
frame (the optical frame: x right, y down, z forward). The calibrated goal localiser
(``GoalConfig.calibrated``) takes it as a flat vector (:meth:`TablePlaneCamera.vector`) and
casts the image point it predicts onto a plane of the height it predicts
(:func:`table_points`), so a camera that was moved and recalibrated moves the answer with it.

Image points are normalised: u = -1 at the left edge of the image and +1 at the right, v = -1
at the top and +1 at the bottom, whatever the resolution. In those units the intrinsics reduce
to the ray's slope and offset per axis, which is what the vector carries.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CAMERA_VECTOR_DIM = 16  # position (3), rotation optical -> base row by row (9), x slope and offset, y slope and offset


@dataclass(frozen=True)
class TablePlaneCamera:
    """A static pinhole camera looking at the table: pixel -> point on the plane z = ``height_m``."""

    fx: float
    fy: float
    cx: float
    cy: float
    position_m: np.ndarray  # camera origin in the base frame
    rotation: np.ndarray  # optical frame (x right, y down, z forward) -> base frame
    width: int
    height: int

    @classmethod
    def from_pose(cls, position_m: Any, quat_xyzw: Any, fovy_deg: float, width: int, height: int) -> "TablePlaneCamera":
        """A simulated camera (square pixels, centred principal point) at a pose in the base frame."""
        from scipy.spatial.transform import Rotation

        from wam_ros.sim.scene import degrees_to_fovy_intrinsics

        fx, fy, cx, cy = degrees_to_fovy_intrinsics(fovy_deg, width, height)
        rotation = Rotation.from_quat(np.asarray(quat_xyzw, float)).as_matrix()
        return cls(fx, fy, cx, cy, np.asarray(position_m, float), rotation, width, height)

    @classmethod
    def from_robot(cls, robot, camera: str = "front", sim_config=None) -> "TablePlaneCamera":
        """The robot config's calibration of ``camera``: its extrinsics, and its
        ``intrinsics_fx_fy_cx_cy`` or, for a simulated camera without them, the sim's field of view."""
        from scipy.spatial.transform import Rotation

        config = robot.camera(camera)
        if config.parent_frame not in ("", robot.base_frame):
            raise ValueError(f"camera {camera!r} moves with {config.parent_frame}: table positions need a static camera")
        if len(config.extrinsics_xyz_m) != 3 or len(config.extrinsics_quat_xyzw) != 4:
            raise ValueError(f"camera {camera!r} has no extrinsics_xyz_m / extrinsics_quat_xyzw in {robot.path}: calibrate it first (docs/real_robot.md)")
        if len(config.intrinsics_fx_fy_cx_cy) == 4:
            fx, fy, cx, cy = (float(v) for v in config.intrinsics_fx_fy_cx_cy)
            rotation = Rotation.from_quat(np.asarray(config.extrinsics_quat_xyzw, float)).as_matrix()
            return cls(fx, fy, cx, cy, np.asarray(config.extrinsics_xyz_m, float), rotation, config.width, config.height)
        if config.source != "sim":
            raise ValueError(f"camera {camera!r} has no intrinsics_fx_fy_cx_cy in {robot.path}: calibrate it first (docs/real_robot.md)")
        from wam_ros.sim.config import SimConfig

        sim_config = sim_config or SimConfig.from_robot(robot)
        return cls.from_pose(config.extrinsics_xyz_m, config.extrinsics_quat_xyzw, sim_config.fovy_deg(camera), config.width, config.height)

    def to_table(self, u: float, v: float, height_m: float) -> np.ndarray:
        """(x, y) where the ray through pixel (u, v) (pixel centres at +0.5) meets z = height_m."""
        ray = self.rotation @ np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0])
        scale = (height_m - self.position_m[2]) / ray[2]
        return (self.position_m + scale * ray)[:2]

    def to_image(self, point_m: np.ndarray) -> np.ndarray:
        """Normalised image point (u, v) of a base-frame point (see the module docstring)."""
        local = self.rotation.T @ (np.asarray(point_m, float) - self.position_m)
        pixel = np.array([self.fx * local[0] / local[2] + self.cx, self.fy * local[1] / local[2] + self.cy])
        return 2.0 * pixel / np.array([self.width, self.height]) - 1.0

    def vector(self) -> np.ndarray:
        """(CAMERA_VECTOR_DIM,) float32: what :func:`table_points` takes."""
        slopes = [self.width / (2 * self.fx), (self.width / 2 - self.cx) / self.fx, self.height / (2 * self.fy), (self.height / 2 - self.cy) / self.fy]
        return np.concatenate([self.position_m, self.rotation.reshape(-1), slopes]).astype(np.float32)


def sim_episode_camera(robot, camera: str, sim_config, seed: int) -> TablePlaneCamera:
    """The calibration of a simulated ``camera`` in the episode ``seed``: the robot config's
    nominal pose and the sim's field of view, moved by the sim config's camera shift of that
    episode (``SimConfig.camera_shift``), as the sim renders it."""
    from scipy.spatial.transform import Rotation

    nominal = TablePlaneCamera.from_robot(robot, camera, sim_config)
    shift = sim_config.camera_shift(camera, seed)
    rotation = nominal.rotation @ Rotation.from_rotvec(shift.rotation_rad).as_matrix()
    return TablePlaneCamera.from_pose(nominal.position_m + shift.offset_m, Rotation.from_matrix(rotation).as_quat(),
                                      sim_config.fovy_deg(camera) + shift.fovy_deg, nominal.width, nominal.height)


CALIBRATIONS = ("episode", "robot")  # what an evaluation tells a calibrated localiser (told_camera)


def told_camera(robot, camera: str, sim_config, seed: int, calibration: str) -> TablePlaneCamera:
    """What a sim evaluation tells a calibrated localiser of ``camera`` in the episode ``seed``:
    ``episode``, its pose there (calibrated again after the scene shift moved it); ``robot``, the
    robot config's nominal one (moved since its calibration)."""
    if calibration == "episode":
        return sim_episode_camera(robot, camera, sim_config, seed)
    if calibration == "robot":
        return TablePlaneCamera.from_robot(robot, camera, sim_config)
    raise ValueError(f"camera calibration {calibration!r}: expected one of {', '.join(CALIBRATIONS)}")


def recorded_camera(robot, camera: str, episode) -> TablePlaneCamera:
    """The calibration ``episode`` (``wam_ros.data.Episode``) was recorded with: a sim episode's
    camera where its seed and recorded scene shifts put it; a converted episode's as the robot
    config had it at conversion (``extra.camera_calibration``, ``wam_ros.data.convert``); else
    the robot config's now."""
    if episode.source == "sim" and episode.seed is not None:
        from wam_ros.sim.config import SimConfig

        return sim_episode_camera(robot, camera, SimConfig.from_robot(robot, episode.extra.get("sim_config") or {}), episode.seed)
    recorded = (episode.extra.get("camera_calibration") or {}).get(camera)
    if recorded:
        fields = {key: tuple(recorded[key]) for key in ("extrinsics_xyz_m", "extrinsics_quat_xyzw", "intrinsics_fx_fy_cx_cy")}
        then = dataclasses.replace(robot.camera(camera), parent_frame=recorded["parent_frame"], **fields)
        robot = dataclasses.replace(robot, cameras=[then if c.name == camera else c for c in robot.cameras])
    return TablePlaneCamera.from_robot(robot, camera)


def table_points(image_points: torch.Tensor, heights_m: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
    """Where rays through normalised image points meet horizontal planes (torch, batched).

    image_points (B, 2) normalised (u, v); heights_m (B,) the plane's height in the base frame;
    cameras (B, CAMERA_VECTOR_DIM) from :meth:`TablePlaneCamera.vector` -> (B, 3) base frame [m].
    A ray that points away from the plane meets it at the camera (its distance is clamped at 0)."""
    position, rotation, slopes = cameras[:, :3], cameras[:, 3:12].reshape(-1, 3, 3), cameras[:, 12:16]
    u, v = image_points[:, 0], image_points[:, 1]
    optical = torch.stack([slopes[:, 0] * u + slopes[:, 1], slopes[:, 2] * v + slopes[:, 3], torch.ones_like(u)], dim=-1)
    ray = (rotation @ optical.unsqueeze(-1)).squeeze(-1)
    ray_z = ray[:, 2]
    safe_z = ray_z.where(ray_z.abs() > 1e-6, ray_z.new_full((), -1e-6))
    distance = ((heights_m - position[:, 2]) / safe_z).clamp_min(0.0)
    return position + distance.unsqueeze(-1) * ray

