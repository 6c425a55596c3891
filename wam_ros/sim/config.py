"""Scene settings of the MuJoCo tabletop, read from the ``robot.sim`` section of the robot YAML.

Everything has a default, so a robot file without a ``sim:`` section still builds a scene.
Unknown keys are errors that name the file and the key, like every other robot config error.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from wam_ros.robot import ConfigError, RobotConfig


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
    camera_position_jitter_m: float = 0.0  # seeded per reset, uniform per axis
    camera_rotation_jitter_rad: float = 0.0
    light_jitter: float = 0.0  # relative change of the light intensity, seeded per reset

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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in [*section.items(), *(overrides or {}).items()]:
            if key not in fields:
                raise ConfigError(robot.path, f"{where}.{key}", f"unknown key; known: {', '.join(sorted(fields))}")
            default = getattr(cls(), key)
            values[key] = _coerce(robot, f"{where}.{key}", value, default)
        config = cls(**values)
        config.validate(robot)
        return config

    def validate(self, robot: RobotConfig | None = None) -> None:
        """Raise ConfigError (or ValueError without a robot) on settings that cannot work."""
        problems = []
        steps = self.control_period_s / self.physics_timestep_s
        if self.physics_timestep_s <= 0 or self.control_period_s <= 0:
            problems.append(("physics_timestep_s", "timestep and control period must be positive"))
        elif abs(steps - round(steps)) > 1e-6:
            problems.append(("control_period_s", f"must be a whole number of physics steps ({steps:g})"))
        for name in ("cube_size_m", "cube_mass_kg", "bin_wall_height_m", "gripper_force_n", "gripper_stiffness_n_m"):
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
        if problems:
            key, problem = problems[0]
            if robot is not None:
                raise ConfigError(robot.path, f"robot.sim.{key}", problem)
            raise ValueError(f"SimConfig.{key}: {problem}")


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


def _coerce(robot: RobotConfig, key: str, value: Any, default: Any) -> Any:
    """Check a YAML value against the type of the field's default."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and len(value) == len(default) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        )
        value = tuple(float(v) for v in value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()
        )
        value = {str(k): float(v) for k, v in value.items()} if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(robot.path, key, f"expected a value like {default!r}, got {value!r}")
    return value
