"""Robot configuration: one YAML file per robot under ``config/robots/``.

The ``robot:`` section holds the facts about the arm (joints, limits, workspace, gains,
backend, cameras); the ``nodes:`` section (see :mod:`wam_ros.bringup`) lists the node set.
Every node that needs a robot fact reads it from here, through :func:`load_robot_config`.
Errors name the file and the key, e.g. ``panda_sim.yaml: robot.arm.velocity_max_rad_s: ...``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BACKEND_TYPES = ("sim", "joint_trajectory", "cartesian_impedance")
#: How the bridge commands the gripper: ``topic`` = wam_ros/GripperCommand on the backend's
#: gripper_command_topic; ``action`` = control_msgs/action/GripperCommand goals (franka_gripper,
#: ros2_controllers' gripper_action_controller, the sim node).
GRIPPER_INTERFACES = ("topic", "action")


class ConfigError(ValueError):
    """A configuration file is missing, malformed or inconsistent; the message names file and key."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


def package_root() -> Path:
    """Directory holding ``config/``, ``urdf/`` and ``launch/``.

    A source checkout (``<repo>/wam_ros/..``) wins; otherwise the ament share directory of an
    installed package; ``WAM_ROS_SHARE_DIR`` overrides both.
    """
    override = os.environ.get("WAM_ROS_SHARE_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "config" / "robots").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("wam_ros"))
    except Exception:  # noqa: BLE001 - fall through to a clear error below
        pass
    return checkout


def robot_config_path(robot: str) -> Path:
    """Path of a robot's YAML: ``robot`` is a name under config/robots/ or a path to a file."""
    candidate = Path(robot).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in robot:
        if not candidate.is_file():
            raise ConfigError(candidate, "", "robot config file not found")
        return candidate.resolve()
    robots_dir = package_root() / "config" / "robots"
    path = robots_dir / f"{robot}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in robots_dir.glob("*.yaml"))
        raise ConfigError(path, "", f"no robot named {robot!r}; known robots: {', '.join(known) or 'none'}")
    return path.resolve()


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping with errors that name the file."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(path, "", f"invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "expected a mapping at the top level")
    return data


def typed_entry(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
                error: Callable[[str], Exception], none_is_missing: bool = False) -> Any:
    """``data[key]`` checked to be ``kind`` (an int is taken as a float, a bool is no number), or
    ``default`` where it is missing (``...``: required); ``error(problem)`` is the exception raised."""
    if key not in data or (none_is_missing and data[key] is None):
        if default is ...:
            raise error("missing")
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise error(f"expected {expected}, got {type(value).__name__} {value!r}")
    return value


class _Reader:
    """Typed access to a nested YAML mapping that reports the file and dotted key on error."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str) -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def section(self, name: str, required: bool = True) -> "_Reader":
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.error(name, "missing section")
            value = {}
        if not isinstance(value, dict):
            raise self.error(name, f"expected a mapping, got {type(value).__name__}")
        return _Reader(self.path, value, self.key(name))

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        value = typed_entry(self.data, name, kind, default, lambda problem: self.error(name, problem), none_is_missing=True)
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be finite, got {value}")
        return value

    def floats(self, name: str, length: int | None = None, default: Any = ...) -> tuple[float, ...]:
        if name not in self.data and default is not ...:
            return default
        values = self._items(name, "a finite number", lambda item: not isinstance(item, bool) and isinstance(item, (int, float)) and math.isfinite(item))
        if length is not None and len(values) != length:
            raise self.error(name, f"expected {length} numbers, got {len(values)}")
        return tuple(float(value) for value in values)

    def strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        if name not in self.data and default is not ...:
            return default
        return self._items(name, "a non-empty string", lambda item: isinstance(item, str) and bool(item))

    def _items(self, name: str, expected: str, valid: Callable[[Any], bool]) -> tuple[Any, ...]:
        """The list under ``name``; an item that is not ``valid`` is reported as not ``expected``."""
        items = tuple(self.get(name, list))
        for index, item in enumerate(items):
            if not valid(item):
                raise self.error(f"{name}[{index}]", f"expected {expected}, got {item!r}")
        return items


@dataclass(frozen=True)
class ArmConfig:
    """Arm joints and their limits, in joint order."""

    joint_names: tuple[str, ...]
    home_rad: tuple[float, ...]
    position_lower_rad: tuple[float, ...]
    position_upper_rad: tuple[float, ...]
    velocity_max_rad_s: tuple[float, ...]
    acceleration_max_rad_s2: tuple[float, ...]
    jerk_max_rad_s3: tuple[float, ...]
    effort_max_nm: tuple[float, ...]

    @property
    def dof(self) -> int:
        return len(self.joint_names)


@dataclass(frozen=True)
class GripperConfig:
    """Parallel gripper; ``joint_names`` empty when the robot has none.

    Widths are the opening between the fingertips [m]. Two linear maps tie them to what the
    driver speaks: the sum of the ``joint_names`` positions in /joint_states is
    ``joint_position_per_width * width + joint_position_offset`` (finger joints in metres: 1, 0),
    and control_msgs GripperCommand's ``position`` is ``position_per_width * width + position_offset``
    (franka_gripper: one finger's travel, 0.5, 0; a Robotiq 2F-85 knuckle joint: -9.328 rad/m, 0.7929 rad).
    """

    joint_names: tuple[str, ...] = ()
    width_min_m: float = 0.0
    width_max_m: float = 0.0
    force_max_n: float = 0.0
    speed_max_m_s: float = 0.0
    force_min_n: float = 0.0  # the gripper's smallest grasp force (Robotiq 2F-85: 20 N)
    joint_position_per_width: float = 1.0
    joint_position_offset: float = 0.0
    interface: str = "topic"  # one of GRIPPER_INTERFACES
    action_name: str = ""  # the GripperCommand action (interface action)
    command_timeout_s: float = 5.0  # an action goal without a result this long after it was sent fails
    command_tolerance_m: float = 0.005  # a new action goal only when the target moved this far from the last one
    position_per_width: float = 1.0
    position_offset: float = 0.0

    def position_from_width(self, width_m: float) -> float:
        """control_msgs GripperCommand ``position`` for an opening of ``width_m``."""
        return self.position_per_width * width_m + self.position_offset

    def width_from_position(self, position: float) -> float:
        """Opening [m] for a control_msgs GripperCommand ``position`` (goal, feedback or result)."""
        return (position - self.position_offset) / self.position_per_width

    def width_from_joint_positions(self, positions: Iterable[float]) -> float:
        """Opening [m] from the positions of ``joint_names`` in /joint_states."""
        return (sum(positions) - self.joint_position_offset) / self.joint_position_per_width


@dataclass(frozen=True)
class SafetyConfig:
    """Limits the safety bridge enforces on every outgoing command."""

    position_margin_rad: float
    workspace_min_m: tuple[float, float, float]
    workspace_max_m: tuple[float, float, float]
    ee_speed_max_m_s: float
    max_joint_step_rad: float
    watchdog_margin_s: float
    joint_state_publisher: str = ""  # node whose joint_states the bridge takes ("name": in the bridge's namespace, "/ns/name"); "" = the first one heard


@dataclass(frozen=True)
class GainsConfig:
    """Impedance gains: joint space for the joint law, Cartesian (xyz then rotation) for the Cartesian law."""

    joint_stiffness_nm_rad: tuple[float, ...]
    joint_damping_nms_rad: tuple[float, ...]
    cartesian_stiffness: tuple[float, ...]
    cartesian_damping: tuple[float, ...]
    nullspace_stiffness_nm_rad: float


@dataclass(frozen=True)
class BackendConfig:
    """Where the bridge sends arm commands and with which interface."""

    type: str
    joint_trajectory_topic: str
    target_pose_topic: str
    gains_topic: str
    gripper_command_topic: str


@dataclass(frozen=True)
class CameraConfig:
    """One camera: its source, image size, rate and where it sits."""

    name: str
    source: str  # "sim", "realsense" or "opencv"
    width: int
    height: int
    rate_hz: float
    frame_id: str
    depth: bool = False
    device: str = ""  # RealSense serial number, USB index or video file path
    extrinsics_xyz_m: tuple[float, ...] = ()  # pose of the camera in its parent frame
    extrinsics_quat_xyzw: tuple[float, ...] = ()
    parent_frame: str = ""
    intrinsics_fx_fy_cx_cy: tuple[float, ...] = ()  # overrides the device's intrinsics when set

    @property
    def image_topic(self) -> str:
        return f"wam/cameras/{self.name}/image"

    @property
    def depth_topic(self) -> str:
        return f"wam/cameras/{self.name}/depth"

    @property
    def camera_info_topic(self) -> str:
        return f"wam/cameras/{self.name}/camera_info"


@dataclass(frozen=True)
class RobotConfig:
    """Everything wam_ros knows about one robot, loaded from ``config/robots/<name>.yaml``."""

    name: str
    path: Path
    urdf_path: Path
    base_frame: str
    tcp_frame: str
    simulated: bool
    arm: ArmConfig
    gripper: GripperConfig
    safety: SafetyConfig
    gains: GainsConfig
    backend: BackendConfig
    cameras: tuple[CameraConfig, ...]
    extra: dict[str, Any] = field(default_factory=dict)  # robot-specific sections (e.g. "sim")

    def camera(self, name: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"robot {self.name!r} has no camera {name!r}; cameras: {[c.name for c in self.cameras]}")


def _arm(reader: _Reader) -> ArmConfig:
    names = reader.strings("joint_names")
    if not names:
        raise reader.error("joint_names", "must list at least one joint")
    if len(set(names)) != len(names):
        raise reader.error("joint_names", "joint names must be unique")
    dof = len(names)
    arm = ArmConfig(
        joint_names=names,
        home_rad=reader.floats("home_rad", dof),
        position_lower_rad=reader.floats("position_lower_rad", dof),
        position_upper_rad=reader.floats("position_upper_rad", dof),
        velocity_max_rad_s=reader.floats("velocity_max_rad_s", dof),
        acceleration_max_rad_s2=reader.floats("acceleration_max_rad_s2", dof),
        jerk_max_rad_s3=reader.floats("jerk_max_rad_s3", dof),
        effort_max_nm=reader.floats("effort_max_nm", dof),
    )
    for i, (lo, hi) in enumerate(zip(arm.position_lower_rad, arm.position_upper_rad)):
        if lo >= hi:
            raise reader.error(f"position_lower_rad[{i}]", f"lower limit {lo} is not below upper limit {hi}")
        if not lo <= arm.home_rad[i] <= hi:
            raise reader.error(f"home_rad[{i}]", f"{arm.home_rad[i]} lies outside [{lo}, {hi}]")
    for key in ("velocity_max_rad_s", "acceleration_max_rad_s2", "jerk_max_rad_s3", "effort_max_nm"):
        for i, value in enumerate(getattr(arm, key)):
            if value <= 0:
                raise reader.error(f"{key}[{i}]", f"must be positive, got {value}")
    return arm


def _gripper(reader: _Reader) -> GripperConfig:
    if not reader.data:
        return GripperConfig()
    defaults = GripperConfig()
    gripper = GripperConfig(
        joint_names=reader.strings("joint_names"),
        width_min_m=reader.get("width_min_m", float),
        width_max_m=reader.get("width_max_m", float),
        force_max_n=reader.get("force_max_n", float),
        speed_max_m_s=reader.get("speed_max_m_s", float),
        force_min_n=reader.get("force_min_n", float, defaults.force_min_n),
        joint_position_per_width=reader.get("joint_position_per_width", float, defaults.joint_position_per_width),
        joint_position_offset=reader.get("joint_position_offset", float, defaults.joint_position_offset),
        interface=reader.get("interface", str, defaults.interface),
        action_name=reader.get("action_name", str, defaults.action_name),
        command_timeout_s=reader.get("command_timeout_s", float, defaults.command_timeout_s),
        command_tolerance_m=reader.get("command_tolerance_m", float, defaults.command_tolerance_m),
        position_per_width=reader.get("position_per_width", float, defaults.position_per_width),
        position_offset=reader.get("position_offset", float, defaults.position_offset),
    )
    if not 0 <= gripper.width_min_m < gripper.width_max_m:
        raise reader.error("width_max_m", "needs 0 <= width_min_m < width_max_m")
    if not 0 <= gripper.force_min_n <= gripper.force_max_n:
        raise reader.error("force_min_n", "needs 0 <= force_min_n <= force_max_n")
    for key in ("joint_position_per_width", "position_per_width"):
        if getattr(gripper, key) == 0:
            raise reader.error(key, "must not be 0 (the width could not be recovered)")
    if gripper.interface not in GRIPPER_INTERFACES:
        raise reader.error("interface", f"unknown gripper interface {gripper.interface!r}; expected one of {', '.join(GRIPPER_INTERFACES)}")
    if gripper.interface == "action" and not gripper.action_name:
        raise reader.error("action_name", "interface action needs the GripperCommand action's name")
    if gripper.command_timeout_s <= 0:
        raise reader.error("command_timeout_s", "must be positive")
    if gripper.command_tolerance_m < 0:
        raise reader.error("command_tolerance_m", "must not be negative")
    return gripper


def _safety(reader: _Reader) -> SafetyConfig:
    low = reader.floats("workspace_min_m", 3)
    high = reader.floats("workspace_max_m", 3)
    publisher = reader.get("joint_state_publisher", str, "")  # a node name, relative to the bridge's namespace unless it starts with /
    if any(a >= b for a, b in zip(low, high)):
        raise reader.error("workspace_min_m", f"box {low} .. {high} is empty")
    safety = SafetyConfig(
        position_margin_rad=reader.get("position_margin_rad", float),
        workspace_min_m=low,  # type: ignore[arg-type]
        workspace_max_m=high,  # type: ignore[arg-type]
        ee_speed_max_m_s=reader.get("ee_speed_max_m_s", float, 0.25),
        max_joint_step_rad=reader.get("max_joint_step_rad", float),
        watchdog_margin_s=reader.get("watchdog_margin_s", float, 0.05),
        joint_state_publisher=publisher,
    )
    for key in ("ee_speed_max_m_s", "max_joint_step_rad", "watchdog_margin_s"):
        if getattr(safety, key) <= 0:
            raise reader.error(key, "must be positive")
    if safety.position_margin_rad < 0:
        raise reader.error("position_margin_rad", "must not be negative")
    return safety


def _gains(reader: _Reader, dof: int) -> GainsConfig:
    return GainsConfig(
        joint_stiffness_nm_rad=reader.floats("joint_stiffness_nm_rad", dof),
        joint_damping_nms_rad=reader.floats("joint_damping_nms_rad", dof),
        cartesian_stiffness=reader.floats("cartesian_stiffness", 6),
        cartesian_damping=reader.floats("cartesian_damping", 6),
        nullspace_stiffness_nm_rad=reader.get("nullspace_stiffness_nm_rad", float, 10.0),
    )


def _backend(reader: _Reader) -> BackendConfig:
    backend = BackendConfig(
        type=reader.get("type", str),
        joint_trajectory_topic=reader.get("joint_trajectory_topic", str, "joint_trajectory_controller/joint_trajectory"),
        target_pose_topic=reader.get("target_pose_topic", str, "target_pose"),
        gains_topic=reader.get("gains_topic", str, "target_impedance_gains"),
        gripper_command_topic=reader.get("gripper_command_topic", str, "wam/gripper/command"),
    )
    if backend.type not in BACKEND_TYPES:
        raise reader.error("type", f"unknown backend {backend.type!r}; expected one of {', '.join(BACKEND_TYPES)}")
    return backend


def _cameras(path: Path, items: Any, prefix: str) -> tuple[CameraConfig, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError(path, prefix, "expected a list of cameras")
    cameras = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(path, f"{prefix}[{index}]", "expected a mapping")
        reader = _Reader(path, item, f"{prefix}[{index}]")
        camera = CameraConfig(
            name=reader.get("name", str),
            source=reader.get("source", str),
            width=reader.get("width", int),
            height=reader.get("height", int),
            rate_hz=reader.get("rate_hz", float),
            frame_id=reader.get("frame_id", str),
            depth=reader.get("depth", bool, False),
            device=str(reader.get("device", (str, int), "")),
            extrinsics_xyz_m=reader.floats("extrinsics_xyz_m", 3, ()),
            extrinsics_quat_xyzw=reader.floats("extrinsics_quat_xyzw", 4, ()),
            parent_frame=reader.get("parent_frame", str, ""),
            intrinsics_fx_fy_cx_cy=reader.floats("intrinsics_fx_fy_cx_cy", 4, ()),
        )
        if camera.source not in ("sim", "realsense", "opencv"):
            raise reader.error("source", f"unknown camera source {camera.source!r}; expected sim, realsense or opencv")
        if camera.width <= 0 or camera.height <= 0 or camera.rate_hz <= 0:
            raise reader.error("width", "width, height and rate_hz must be positive")
        cameras.append(camera)
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ConfigError(path, prefix, f"camera names must be unique, got {names}")
    return tuple(cameras)


def parse_robot_config(path: Path, data: dict[str, Any]) -> RobotConfig:
    """Validate the ``robot:`` section of an already parsed robot YAML."""
    reader = _Reader(path, data, "").section("robot")
    arm = _arm(reader.section("arm"))
    urdf = reader.get("urdf", str)
    urdf_path = (package_root() / urdf) if not Path(urdf).is_absolute() else Path(urdf)
    if not urdf_path.is_file():
        raise reader.error("urdf", f"URDF file not found: {urdf_path}")
    backend = _backend(reader.section("backend"))
    known = {"name", "urdf", "base_frame", "tcp_frame", "arm", "gripper", "safety", "gains", "backend", "cameras"}
    return RobotConfig(
        name=reader.get("name", str),
        path=path,
        urdf_path=urdf_path,
        base_frame=reader.get("base_frame", str),
        tcp_frame=reader.get("tcp_frame", str),
        simulated=backend.type == "sim",
        arm=arm,
        gripper=_gripper(reader.section("gripper", required=False)),
        safety=_safety(reader.section("safety")),
        gains=_gains(reader.section("gains"), arm.dof),
        backend=backend,
        cameras=_cameras(path, reader.data.get("cameras"), reader.key("cameras")),
        extra={k: v for k, v in reader.data.items() if k not in known},
    )


def load_robot_config(robot: str | Path) -> RobotConfig:
    """Load and validate a robot config by name (``panda_sim``) or path."""
    path = robot_config_path(str(robot))
    return parse_robot_config(path, read_yaml(path))
