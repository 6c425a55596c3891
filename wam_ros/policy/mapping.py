"""Per-policy mapping between our robot and a policy server (config/policies/<name>.yaml).

A server names its observation keys, image sizes, state layout and action space its own way
(DROID's ``observation/joint_position``, LIBERO's end-effector ``observation/state``, ...). A
:class:`PolicyMapping` says, for one server, which robot camera goes to which key and at which
size, which state vector goes to which key, where the prompt goes, and how to read the returned
actions; :class:`RobotPolicyAdapter` binds it to one robot (kinematics, gripper range) and does
the conversions both ways. The result is always what an ActionChunk carries: absolute joint
position targets and the gripper width in metres. Schema: docs/remote_policy.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from wam_ros.robot import ConfigError, RobotConfig, package_root, read_yaml, typed_entry

PROTOCOLS = ("openpi", "dreamzero")
RESIZE_MODES = ("stretch", "pad", "crop")  # pad: keep the aspect ratio, pad with black (openpi's resize_with_pad); crop: centre crop
ARM_ACTION_TYPES = ("joint_position", "joint_delta", "joint_velocity", "cartesian_pose", "cartesian_delta")
ROTATIONS = {"axis_angle": 3, "quaternion_xyzw": 4, "euler_xyz": 3}
GRIPPER_ENCODINGS = ("width_m", "closed_fraction", "open_fraction", "signed_closed")
#: State parts and their sizes (``None``: the arm's number of joints).
STATE_PARTS: dict[str, int | None] = {
    "joint_position": None,  # rad
    "gripper_width_m": 1,
    "gripper_closed_fraction": 1,  # 0 open .. 1 closed (DROID)
    "gripper_open_fraction": 1,  # 0 closed .. 1 open
    "finger_positions": 2,  # each finger's travel [m], (+w/2, -w/2) (LIBERO's robot0_gripper_qpos)
    "tcp_position": 3,  # m, base frame
    "tcp_axis_angle": 3,  # rad, base frame
    "tcp_quaternion_xyzw": 4,
}
MAX_HORIZON = 1024  # the safety bridge's limit (wam_ros.control.chunks)


class MappingError(ValueError):
    """A mapping file that is wrong, or a server reply that the mapping cannot read."""


@dataclass(frozen=True)
class ImageSpec:
    key: str
    camera: str
    size_hw: tuple[int, int] | None  # None: the server's metadata says (image_resolution)
    resize: str


@dataclass(frozen=True)
class StateSpec:
    key: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class ArmActions:
    type: str
    columns: tuple[int, int]  # [start, stop) in the action rows
    scale: float = 1.0  # joint_velocity: rad/s per unit
    rotation: str = "axis_angle"  # cartesian_*: how the rotation is written
    position_scale_m: float = 1.0  # cartesian_delta: metres per unit
    rotation_scale_rad: float = 1.0  # cartesian_delta: radians per unit
    ik_max_error_m: float = 0.01  # cartesian_*: a pose IK misses by more is an error
    ik_max_error_rad: float = 0.05


@dataclass(frozen=True)
class GripperActions:
    column: int
    encoding: str
    binarize_at: float | None = None  # in the encoding's units: at or above = the closed end (open end for open_fraction)


@dataclass(frozen=True)
class PolicyMapping:
    """One server's observation keys and action layout (see the module docstring)."""

    name: str
    path: Path
    protocol: str
    images: tuple[ImageSpec, ...]
    state: tuple[StateSpec, ...]
    prompt_key: str
    action_key: str
    arm: ArmActions
    gripper: GripperActions | None
    control_period_s: float | None  # None: from the server's metadata
    execute_actions: int | None  # None: from the server's metadata (execute_steps), else half the horizon
    frames: int  # observation frames per camera (history, oldest first)

    @property
    def cameras(self) -> list[str]:
        return list(dict.fromkeys(image.camera for image in self.images))

    def check_robot(self, robot: RobotConfig) -> None:
        """Raise MappingError when ``robot`` lacks a camera, or the action columns do not fit its arm."""
        names = {camera.name for camera in robot.cameras}
        missing = [c for c in self.cameras if c not in names]
        if missing:
            raise MappingError(f"{self.path}: cameras {missing} are not cameras of robot {robot.name} ({sorted(names)})")
        start, stop = self.arm.columns
        expected = {"joint_position": robot.arm.dof, "joint_delta": robot.arm.dof, "joint_velocity": robot.arm.dof}.get(
            self.arm.type, 3 + ROTATIONS[self.arm.rotation])
        if stop - start != expected:
            raise MappingError(f"{self.path}: actions.arm.columns {[start, stop]} hold {stop - start} values; "
                               f"{self.arm.type} for robot {robot.name} needs {expected}")


def policy_path(policy: str) -> Path:
    """A name under config/policies/ or a path to a YAML file."""
    candidate = Path(policy).expanduser()
    if candidate.suffix in (".yaml", ".yml") or "/" in policy:
        if not candidate.is_file():
            raise MappingError(f"{candidate}: policy mapping file not found")
        return candidate.resolve()
    folder = package_root() / "config" / "policies"
    path = folder / f"{policy}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise MappingError(f"no policy mapping named {policy!r}; known: {', '.join(known) or 'none'}")
    return path


class _Reader:
    def __init__(self, path: Path, data: dict, where: str) -> None:
        self.path, self.data, self.where = path, data, where

    def fail(self, key: str, problem: str) -> MappingError:
        return MappingError(f"{self.path}: {self.where}.{key}: {problem}" if key else f"{self.path}: {self.where}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        return typed_entry(self.data, key, kind, default, lambda problem: self.fail(key, problem))

    def choice(self, key: str, choices: tuple[str, ...] | dict, default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def child(self, key: str, value: Any) -> "_Reader":
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return _Reader(self.path, value, f"{self.where}.{key}")

    def known(self, keys: set[str]) -> None:
        unknown = sorted(set(self.data) - keys)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; known: {', '.join(sorted(keys))}")


def load_policy_mapping(policy: str) -> PolicyMapping:
    """Read and check config/policies/<policy>.yaml (or a path); errors name the file and the key."""
    path = policy_path(policy)
    try:
        data = read_yaml(path)
    except ConfigError as error:
        raise MappingError(str(error)) from None
    if not isinstance(data.get("policy"), dict):
        raise MappingError(f"{path}: expected a 'policy:' mapping at the top level")
    top = _Reader(path, data["policy"], "policy")
    top.known({"name", "description", "protocol", "images", "state", "prompt_key", "actions", "control_period_s", "execute_actions", "frames"})
    images = []
    for i, item in enumerate(top.get("images", list)):
        reader = top.child(f"images[{i}]", item)
        reader.known({"key", "camera", "size", "resize"})
        size = reader.get("size", list, None)
        if size is not None and (len(size) != 2 or not all(isinstance(v, int) and 8 <= v <= 4096 for v in size)):
            raise reader.fail("size", f"expected [height, width] in pixels (8..4096), got {size!r}")
        images.append(ImageSpec(reader.get("key", str), reader.get("camera", str), tuple(size) if size else None,
                                reader.choice("resize", RESIZE_MODES, "pad")))
    if not images:
        raise top.fail("images", "at least one image is needed")
    state = []
    for i, item in enumerate(top.get("state", list)):
        reader = top.child(f"state[{i}]", item)
        reader.known({"key", "parts"})
        parts = reader.get("parts", list)
        bad = [p for p in parts if p not in STATE_PARTS]
        if bad or not parts:
            raise reader.fail("parts", f"unknown parts {bad}; choose from {', '.join(STATE_PARTS)}" if bad else "empty")
        state.append(StateSpec(reader.get("key", str), tuple(parts)))
    actions = top.child("actions", top.get("actions", dict))
    actions.known({"key", "arm", "gripper"})
    arm_reader = actions.child("arm", actions.get("arm", dict))
    arm_reader.known({"type", "columns", "scale", "rotation", "position_scale_m", "rotation_scale_rad", "ik_max_error_m", "ik_max_error_rad"})
    columns = arm_reader.get("columns", list)
    if len(columns) != 2 or not all(isinstance(c, int) for c in columns) or not 0 <= columns[0] < columns[1]:
        raise arm_reader.fail("columns", f"expected [start, stop) column indices, got {columns!r}")
    arm = ArmActions(
        type=arm_reader.choice("type", ARM_ACTION_TYPES), columns=(columns[0], columns[1]),
        scale=arm_reader.get("scale", float, 1.0), rotation=arm_reader.choice("rotation", ROTATIONS, "axis_angle"),
        position_scale_m=arm_reader.get("position_scale_m", float, 1.0), rotation_scale_rad=arm_reader.get("rotation_scale_rad", float, 1.0),
        ik_max_error_m=arm_reader.get("ik_max_error_m", float, 0.01), ik_max_error_rad=arm_reader.get("ik_max_error_rad", float, 0.05),
    )
    gripper = None
    if "gripper" in actions.data:
        reader = actions.child("gripper", actions.data["gripper"])
        reader.known({"column", "encoding", "binarize_at"})
        column = reader.get("column", int)
        if columns[0] <= column < columns[1]:
            raise reader.fail("column", f"column {column} lies inside the arm's columns {columns}")
        gripper = GripperActions(column, reader.choice("encoding", GRIPPER_ENCODINGS), reader.get("binarize_at", float, None))
    period = top.get("control_period_s", float, None)
    if period is not None and not 1e-3 <= period <= 1.0:
        raise top.fail("control_period_s", f"must lie in [0.001, 1] s, got {period}")
    execute = top.get("execute_actions", int, None)
    if execute is not None and execute < 1:
        raise top.fail("execute_actions", f"must be at least 1, got {execute}")
    frames = top.get("frames", int, 1)
    if frames < 1:
        raise top.fail("frames", f"must be at least 1, got {frames}")
    return PolicyMapping(
        name=top.get("name", str, path.stem), path=path, protocol=top.choice("protocol", PROTOCOLS),
        images=tuple(images), state=tuple(state), prompt_key=top.get("prompt_key", str, "prompt"),
        action_key=actions.get("key", str, "actions"), arm=arm, gripper=gripper,
        control_period_s=period, execute_actions=execute, frames=frames,
    )


def resize_image(image: np.ndarray, size_hw: tuple[int, int], mode: str) -> np.ndarray:
    """uint8 (H, W, 3) -> (h, w, 3): ``stretch``, ``pad`` (aspect kept, black bars) or ``crop`` (aspect kept, centre crop)."""
    import cv2

    height, width = image.shape[:2]
    target_h, target_w = size_hw
    if (height, width) == (target_h, target_w):
        return np.ascontiguousarray(image)

    def scaled(h: int, w: int) -> np.ndarray:
        interpolation = cv2.INTER_AREA if h < height else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=interpolation)

    if mode == "stretch":
        return scaled(target_h, target_w)
    factor = (min if mode == "pad" else max)(target_h / height, target_w / width)
    h, w = max(1, round(height * factor)), max(1, round(width * factor))
    resized = scaled(h, w)
    if mode == "pad":
        out = np.zeros((target_h, target_w, 3), np.uint8)
        top, left = (target_h - h) // 2, (target_w - w) // 2
        out[top:top + h, left:left + w] = resized
        return out
    top, left = (h - target_h) // 2, (w - target_w) // 2
    return np.ascontiguousarray(resized[top:top + target_h, left:left + target_w])


class RobotPolicyAdapter:
    """A mapping bound to one robot: observations to the server's dict, its actions to joint targets."""

    def __init__(self, mapping: PolicyMapping, robot: RobotConfig) -> None:
        mapping.check_robot(robot)
        self.mapping = mapping
        self.robot = robot
        self.dof = robot.arm.dof
        self.has_gripper = bool(robot.gripper.joint_names)
        self.width_range_m = (robot.gripper.width_min_m, robot.gripper.width_max_m)
        needs_kinematics = mapping.arm.type.startswith("cartesian") or any(
            part.startswith("tcp_") for spec in mapping.state for part in spec.parts)
        self.kinematics = None
        if needs_kinematics:
            from wam_ros.control.kinematics import ChainKinematics

            self.kinematics = ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
        self.lower = np.asarray(robot.arm.position_lower_rad, float)
        self.upper = np.asarray(robot.arm.position_upper_rad, float)
        self.home = np.asarray(robot.arm.home_rad, float)
        self.server_image_size: tuple[int, int] | None = None  # from the server's metadata, for images without a size

    # -- observations ----------------------------------------------------------------------
    def _width_fraction(self, width_m: np.ndarray) -> np.ndarray:
        low, high = self.width_range_m
        return np.clip((width_m - low) / max(high - low, 1e-9), 0.0, 1.0)

    def _state_part(self, part: str, joints: np.ndarray, width_m: np.ndarray) -> np.ndarray:
        """(n, k) values of one state part for n instants."""
        if part == "joint_position":
            return joints
        if part == "gripper_width_m":
            return width_m[:, None]
        if part == "gripper_closed_fraction":
            return 1.0 - self._width_fraction(width_m)[:, None]
        if part == "gripper_open_fraction":
            return self._width_fraction(width_m)[:, None]
        if part == "finger_positions":
            return np.stack([width_m / 2, -width_m / 2], axis=1)
        assert self.kinematics is not None
        position, rotation = self.kinematics.forward(joints)
        if part == "tcp_position":
            return position
        if part == "tcp_axis_angle":
            return Rotation.from_matrix(rotation).as_rotvec()
        return Rotation.from_matrix(rotation).as_quat()  # tcp_quaternion_xyzw

    def observation(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> dict[str, Any]:
        """The server's observation dict from per-camera (n, H, W, 3) uint8 frames and (n, dof [+1]) states.

        With one frame per camera (``frames: 1``) images are (h, w, 3) and state vectors 1-D, as
        openpi servers expect; with more, both keep the leading frame axis.
        """
        frames = self.mapping.frames
        out: dict[str, Any] = {}
        for spec in self.mapping.images:
            size = spec.size_hw or self.server_image_size
            if size is None:
                raise MappingError(f"{self.mapping.path}: image {spec.key!r} has no size and the server's metadata names none")
            stack = np.asarray(images[spec.camera])[-frames:]
            resized = np.stack([resize_image(frame, size, spec.resize) for frame in stack])
            out[spec.key] = resized[0] if frames == 1 else resized
        state = np.asarray(state, dtype=np.float64)[-frames:]
        joints = state[:, :self.dof]
        width = state[:, self.dof] if self.has_gripper and state.shape[1] > self.dof else np.zeros(len(state))
        for spec in self.mapping.state:
            vector = np.concatenate([self._state_part(p, joints, width) for p in spec.parts], axis=1).astype(np.float32)
            out[spec.key] = vector[0] if frames == 1 else vector
        out[self.mapping.prompt_key] = instruction
        return out

    # -- actions ---------------------------------------------------------------------------
    def actions(self, reply: dict[str, Any], state_now: np.ndarray, period_s: float) -> np.ndarray:
        """(horizon, dof [+1]) absolute joint targets [rad] and gripper widths [m] from a server reply.

        ``state_now``: joints (+ gripper width) at the observation; deltas, velocities and
        Cartesian deltas are taken from there. Raises MappingError naming what is wrong.
        """
        key = self.mapping.action_key
        if key not in reply:
            raise MappingError(f"the reply has no {key!r} (keys: {sorted(map(str, reply))})")
        try:
            table = np.asarray(reply[key], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise MappingError(f"reply {key!r} is not numeric: {error}") from None
        arm = self.mapping.arm
        needed = max(arm.columns[1], self.mapping.gripper.column + 1 if self.mapping.gripper else 0)
        if table.ndim != 2 or not 1 <= table.shape[0] <= MAX_HORIZON or table.shape[1] < needed:
            raise MappingError(f"reply {key!r} has shape {table.shape}, expected (horizon <= {MAX_HORIZON}, >= {needed})")
        if not np.all(np.isfinite(table)):
            raise MappingError(f"reply {key!r} holds non-finite values")
        state_now = np.asarray(state_now, dtype=np.float64)
        joints = self._arm(table[:, arm.columns[0]:arm.columns[1]], state_now[:self.dof], period_s)
        if not self.has_gripper:
            return joints
        if self.mapping.gripper is None:
            width = np.full(len(table), state_now[self.dof] if len(state_now) > self.dof else self.width_range_m[1])
        else:
            width = self._gripper(table[:, self.mapping.gripper.column])
        return np.concatenate([joints, width[:, None]], axis=1)

    def _arm(self, values: np.ndarray, q_now: np.ndarray, period_s: float) -> np.ndarray:
        arm = self.mapping.arm
        if arm.type == "joint_position":
            return values
        if arm.type == "joint_delta":  # every row relative to the observation's joints (openpi's delta actions)
            return q_now + values
        if arm.type == "joint_velocity":  # row k moves for one period: the target at its end
            return q_now + np.cumsum(values * arm.scale * period_s, axis=0)
        assert self.kinematics is not None
        positions, rotations = values[:, :3], self._rotations(values[:, 3:])
        if arm.type == "cartesian_delta":  # chained from the observation's TCP pose, rotation in the base frame
            position, rotation = self.kinematics.forward(q_now)
            poses_p, poses_r = [], []
            for step_p, step_r in zip(positions, values[:, 3:]):
                position = position + step_p * arm.position_scale_m
                rotation = Rotation.from_rotvec(self._rotvec(step_r) * arm.rotation_scale_rad).as_matrix() @ rotation
                poses_p.append(position)
                poses_r.append(rotation)
            positions, rotations = np.asarray(poses_p), np.asarray(poses_r)
        return self._ik(positions, rotations, q_now)

    def _rotvec(self, values: np.ndarray) -> np.ndarray:
        return self._rotation(values).as_rotvec()

    def _rotation(self, values: np.ndarray) -> Rotation:
        kind = self.mapping.arm.rotation
        if kind == "axis_angle":
            return Rotation.from_rotvec(values)
        if kind == "quaternion_xyzw":
            if np.any(np.linalg.norm(np.atleast_2d(values), axis=-1) < 1e-6):
                raise MappingError("a returned quaternion has zero length")
            return Rotation.from_quat(values)
        return Rotation.from_euler("xyz", values)

    def _rotations(self, values: np.ndarray) -> np.ndarray:
        return self._rotation(values).as_matrix()

    def _ik(self, positions: np.ndarray, rotations: np.ndarray, q_now: np.ndarray) -> np.ndarray:
        from wam_ros.control.kinematics import inverse_kinematics

        arm = self.mapping.arm
        q = q_now
        rows = []
        for k, (position, rotation) in enumerate(zip(positions, rotations)):
            q, error_m, error_rad = inverse_kinematics(self.kinematics, position, rotation, q, self.home, self.lower, self.upper)
            if error_m > arm.ik_max_error_m or error_rad > arm.ik_max_error_rad:
                raise MappingError(f"action {k}: no joint solution for the TCP pose {np.round(position, 3).tolist()} "
                                   f"(IK misses by {error_m * 1e3:.1f} mm, {error_rad:.3f} rad)")
            rows.append(q)
        return np.asarray(rows)

    def _gripper(self, values: np.ndarray) -> np.ndarray:
        spec = self.mapping.gripper
        assert spec is not None
        low, high = self.width_range_m
        if spec.encoding == "signed_closed":
            values, threshold = (values + 1.0) / 2.0, None if spec.binarize_at is None else (spec.binarize_at + 1.0) / 2.0
        else:
            threshold = spec.binarize_at
        if threshold is not None:
            values = np.where(values >= threshold, 1.0, 0.0) if spec.encoding != "width_m" else np.where(values >= threshold, high, low)
        if spec.encoding == "width_m":
            width = values
        elif spec.encoding == "open_fraction":
            width = low + values * (high - low)
        else:  # closed_fraction, signed_closed (now 0 open .. 1 closed)
            width = high - values * (high - low)
        return np.clip(width, low, high)
