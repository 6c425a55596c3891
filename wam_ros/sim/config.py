"""Scene settings of the MuJoCo tabletop, read from the ``robot.sim`` section of the robot YAML.

Everything has a default, so a robot file without a ``sim:`` section still builds a scene.
Unknown keys are errors that name the file and the key, like every other robot config error.

Scene shifts (the ``*_jitter_*`` fields and ``distractor_count``) change the scene per reset,
seeded by the episode's seed: each kind of shift draws from its own random stream, so the same
seed gives the same layout with or without them, and the same camera pose whatever else is
shifted. Every default leaves the scene as it was before shifts existed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
import typing
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from wam_ros.robot import ConfigError, RobotConfig

TABLE_TEXTURES = ("none", "checker", "noise")
# Each kind of scene shift draws from its own random stream of the episode's seed (shift_stream).
CAMERA_STREAM, LIGHT_STREAM, TABLE_STREAM, CUBE_COLOUR_STREAM = 1, 2, 3, 4


def shift_stream(seed: int, kind: int, *more: int) -> np.random.Generator:
    """The random stream of one kind of scene shift for the episode ``seed``."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 7, kind, *more])


@dataclass(frozen=True)
class CameraShift:
    """How far one episode's camera is from its nominal pose and field of view."""

    offset_m: np.ndarray  # (3,) along the axes of the camera's parent frame
    rotation_rad: np.ndarray  # (3,) rotation vector in the camera's optical frame (applied after its nominal orientation)
    fovy_deg: float  # added to the nominal field of view


@dataclass(frozen=True)
class SimConfig:
    """Physics, scene layout and rendering settings of :class:`wam_ros.sim.TabletopEnv`."""

    physics_timestep_s: float = 0.001
    control_period_s: float = 0.1  # one env.step(); the dataset rate is 1 / control_period_s
    cube_size_m: float = 0.045  # edge length of the red, green and blue cubes
    cube_mass_kg: float = 0.08
    bin_center_xy_m: tuple[float, float] = (0.42, -0.34)
    bin_inner_size_m: tuple[float, float] = (0.22, 0.17)  # inner x, y extent
    bin_wall_height_m: float = 0.06
    cube_region_min_xy_m: tuple[float, float] = (0.36, -0.14)  # where cubes are placed at reset
    cube_region_max_xy_m: tuple[float, float] = (0.62, 0.26)
    gripper_force_n: float = 40.0  # grasp force until a gripper command sets another
    gripper_stiffness_n_m: float = 3000.0  # force per metre of width error, before the force limit
    gripper_damping_ns_m: float = 60.0
    # Cameras whose width * height is at most this render the robot from its low-poly collision
    # meshes (about ten times faster than the visual meshes); larger cameras use the visual meshes.
    low_poly_max_pixels: int = 160 * 160
    camera_fovy_deg: dict[str, float] = field(default_factory=lambda: {"front": 50.0, "wrist": 75.0})
    slot_clearance_m: float = 0.005  # insert task: gap between the cube and the slot's walls, per side
    table_rgb: tuple[float, float, float] = (0.62, 0.5, 0.38)  # table top colour, each channel in [0, 1]
    table_texture: str = "none"  # none, checker (5 cm squares) or noise (speckled grain), tinted by table_rgb
    # Scene shifts, drawn per reset (seeded by the episode's seed), uniform in +- the value:
    # camera -> max offset [m] along the x, y, z axes of its parent frame (the base for a static camera)
    camera_position_jitter_m: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # camera -> max rotation [deg] about its optical frame's x (right: tilt), y (down: pan) and z (forward: roll)
    camera_rotation_jitter_deg: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    camera_fovy_jitter_deg: dict[str, float] = field(default_factory=dict)  # camera -> max change of its field of view
    light_intensity_jitter_fraction: float = 0.0  # relative change of every light (key light, headlight ambient and diffuse)
    light_position_jitter_m: float = 0.0  # key light position, per axis
    table_rgb_jitter: float = 0.0  # per channel, added to table_rgb
    cube_rgb_jitter: float = 0.0  # per channel and cube, added to its colour (a shade of it)
    cube_size_jitter_fraction: float = 0.0  # relative change of each cube's edge (and mass), per cube
    distractor_count: int = 0  # boxes of other colours (purple, orange, white, cyan, pink) no instruction names, on the table

    @property
    def physics_steps_per_control(self) -> int:
        return int(round(self.control_period_s / self.physics_timestep_s))

    def fovy_deg(self, camera: str) -> float:
        return self.camera_fovy_deg.get(camera, 60.0)

    @classmethod
    def from_robot(cls, robot: RobotConfig, overrides: dict[str, Any] | None = None) -> "SimConfig":
        """Defaults overridden by the ``robot.sim`` mapping of the robot YAML, then by ``overrides``
        (an evaluation condition such as cubes beyond the demos' region, :func:`parse_overrides`)."""
        section = robot.extra.get("sim") or {}
        where = "robot.sim"
        if not isinstance(section, dict):
            raise ConfigError(robot.path, where, f"expected a mapping, got {type(section).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        overrides = overrides or {}
        values: dict[str, Any] = {}
        for origin, items in ((str(robot.path), section.items()), (OVERRIDE_ORIGIN, overrides.items())):
            for key, value in items:
                name = f"{where}.{key}" if origin != OVERRIDE_ORIGIN else key
                if key not in fields:
                    raise ConfigError(origin, name, f"unknown key; known: {', '.join(sorted(fields))}")
                coerced = _coerce(value, hints[key])
                if coerced is None:
                    raise ConfigError(origin, name, f"expected {_describe(hints[key])}, got {value!r}")
                values[key] = coerced
        config = cls(**values)
        try:
            config.validate(robot)
        except ConfigError as error:  # a problem of an overridden field is the override's, not the robot file's
            key = error.key.removeprefix(f"{where}.")
            if key.split(".")[0] in overrides:
                raise ConfigError(OVERRIDE_ORIGIN, key, error.problem) from None
            raise
        return config

    def camera_shift(self, camera: str, seed: int) -> CameraShift:
        """The shift of ``camera`` in the episode ``seed`` (zero where the config shifts nothing)."""
        rng = shift_stream(seed, CAMERA_STREAM, zlib.crc32(camera.encode()))
        offset = rng.uniform(-1, 1, 3) * np.asarray(self.camera_position_jitter_m.get(camera, (0.0, 0.0, 0.0)))
        rotation = np.radians(rng.uniform(-1, 1, 3) * np.asarray(self.camera_rotation_jitter_deg.get(camera, (0.0, 0.0, 0.0))))
        return CameraShift(offset, rotation, float(rng.uniform(-1, 1) * self.camera_fovy_jitter_deg.get(camera, 0.0)))

    def shifted(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what an episode records of its scene)."""
        default = SimConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def validate(self, robot: RobotConfig | None = None) -> None:
        """Raise ConfigError (or ValueError without a robot) on settings that cannot work."""
        problems = []
        steps = self.control_period_s / self.physics_timestep_s
        if self.physics_timestep_s <= 0 or self.control_period_s <= 0:
            problems.append(("physics_timestep_s", "timestep and control period must be positive"))
        elif abs(steps - round(steps)) > 1e-6:
            problems.append(("control_period_s", f"must be a whole number of physics steps ({steps:g})"))
        for name in ("cube_size_m", "cube_mass_kg", "bin_wall_height_m", "gripper_force_n", "gripper_stiffness_n_m", "slot_clearance_m"):
            if getattr(self, name) <= 0:
                problems.append((name, "must be positive"))
        if robot is not None and robot.gripper.joint_names and self.cube_size_m >= robot.gripper.width_max_m:
            problems.append(("cube_size_m", f"cube {self.cube_size_m} m does not fit the gripper ({robot.gripper.width_max_m} m)"))
        if any(lo >= hi for lo, hi in zip(self.cube_region_min_xy_m, self.cube_region_max_xy_m)):
            problems.append(("cube_region_min_xy_m", "empty cube region"))
        if any(size <= 2 * self.cube_size_m for size in self.bin_inner_size_m):
            problems.append(("bin_inner_size_m", "the bin must be wider than two cubes"))
        for name, fovy in self.camera_fovy_deg.items():
            if not 1.0 <= fovy <= 170.0:
                problems.append((f"camera_fovy_deg.{name}", f"{fovy} is not in [1, 170]"))
        if not all(0.0 <= c <= 1.0 for c in self.table_rgb):
            problems.append(("table_rgb", "channels must lie in [0, 1]"))
        if self.table_texture not in TABLE_TEXTURES:
            problems.append(("table_texture", f"{self.table_texture!r}: expected one of {', '.join(TABLE_TEXTURES)}"))
        jitters: list[tuple[str, tuple[float, ...], float]] = [
            ("light_intensity_jitter_fraction", (self.light_intensity_jitter_fraction,), 1.0),
            ("light_position_jitter_m", (self.light_position_jitter_m,), 1.0),
            ("table_rgb_jitter", (self.table_rgb_jitter,), 1.0),
            ("cube_rgb_jitter", (self.cube_rgb_jitter,), 1.0),
            ("cube_size_jitter_fraction", (self.cube_size_jitter_fraction,), 0.5),
        ]
        jitters += [(f"camera_position_jitter_m.{n}", v, 0.5) for n, v in self.camera_position_jitter_m.items()]
        jitters += [(f"camera_rotation_jitter_deg.{n}", v, 45.0) for n, v in self.camera_rotation_jitter_deg.items()]
        jitters += [(f"camera_fovy_jitter_deg.{n}", (v,), 30.0) for n, v in self.camera_fovy_jitter_deg.items()]
        for name, values, limit in jitters:
            if not all(0.0 <= v <= limit for v in values):
                problems.append((name, f"{', '.join(f'{v:g}' for v in values)}: each must lie in [0, {limit:g}]"))
        if not 0 <= self.distractor_count <= len(DISTRACTOR_COLOURS):
            problems.append(("distractor_count", f"{self.distractor_count} is not in [0, {len(DISTRACTOR_COLOURS)}]"))
        if robot is not None:
            known = {c.name for c in robot.cameras if c.source == "sim"}
            for key in ("camera_position_jitter_m", "camera_rotation_jitter_deg", "camera_fovy_jitter_deg"):
                unknown = sorted(set(getattr(self, key)) - known)
                if unknown:
                    problems.append((f"{key}.{unknown[0]}", f"no simulated camera of that name; cameras: {', '.join(sorted(known))}"))
            largest = self.cube_size_m * (1 + self.cube_size_jitter_fraction)
            if robot.gripper.joint_names and largest >= robot.gripper.width_max_m:
                problems.append(("cube_size_jitter_fraction", f"cubes up to {largest:.3f} m do not fit the gripper ({robot.gripper.width_max_m} m)"))
        if problems:
            key, problem = problems[0]
            if robot is not None:
                raise ConfigError(robot.path, f"robot.sim.{key}", problem)
            raise ValueError(f"SimConfig.{key}: {problem}")


OVERRIDE_ORIGIN = "scene override (--sim, --sim-config)"  # where ConfigError says an override's problem comes from

DISTRACTOR_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.55, 0.2, 0.7),  # purple
    (0.95, 0.5, 0.1),  # orange
    (0.9, 0.9, 0.88),  # white
    (0.1, 0.75, 0.8),  # cyan
    (0.95, 0.5, 0.7),  # pink
)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["cube_region_min_xy_m=[0.36, 0.26]", ...]`` -> ``{key: YAML value}`` for :meth:`SimConfig.from_robot`."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"sim override {item!r}: expected key=value (a SimConfig field and a YAML value)")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"sim override {item!r}: the value is not YAML ({error})") from None
    return overrides


def read_scene_file(path: Path | str) -> dict[str, Any]:
    """A YAML mapping of SimConfig fields (a scene condition, e.g. ``config/sim/randomized.yaml``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"sim config {path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"sim config {path}: expected a mapping of SimConfig fields, got {type(data).__name__}")
    return data


def scene_overrides(files: list[Path] | tuple[Path, ...] = (), items: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The overrides of ``--sim-config FILE`` (in order) and then ``--sim KEY=VALUE`` (which win)."""
    overrides: dict[str, Any] = {}
    for path in files:
        overrides.update(read_scene_file(path))
    overrides.update(parse_overrides(items))
    return overrides


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(value: Any, annotation: Any) -> Any:
    """A YAML value as the field's type (float, int, str, fixed-length float tuple, or a mapping of
    those by name); None when it does not fit."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return value if isinstance(value, bool) else None
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if annotation is float:
        return float(value) if _number(value) else None
    if annotation is str:
        return value if isinstance(value, str) else None
    if origin is tuple:
        ok = isinstance(value, (list, tuple)) and len(value) == len(args) and all(_number(v) for v in value)
        return tuple(float(v) for v in value) if ok else None
    if origin is dict:
        if not isinstance(value, dict):
            return None
        items = {str(k): _coerce(v, args[1]) for k, v in value.items()}
        return None if any(v is None for v in items.values()) else items
    return None


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is dict:
        return f"a mapping of camera names to {_describe(args[1])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))
