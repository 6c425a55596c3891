"""Robot YAML -> the node set to start, shared by ``launch/bringup.launch.py`` and ``wam-ros bringup``.

A robot file has a ``robot:`` section (:mod:`wam_ros.robot`) and a ``nodes:`` section::

    nodes:
      sim:                      # node name; its kind defaults to the name
        kind: sim               # -> executable sim_node, module wam_ros.nodes.sim_node
        required: true          # its exit stops the whole bringup
        parameters: {camera_rate_hz: 15.0}

Overrides come as ``<node>.<parameter>:=<value>`` (``<node>.enabled:=false`` drops a node).
:func:`load_bringup` validates everything (kinds, parameter names and types) before anything starts;
:func:`check_bringup` then asks each node kind's ``check(parameters, robot)`` (next to its
``Parameters``) for what would stop it at start-up: a missing checkpoint, device or file.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wam_ros import parameters as params
from wam_ros.robot import ConfigError, RobotConfig, package_root, parse_robot_config, read_yaml, robot_config_path

NODE_PACKAGE = "wam_ros.nodes"
DDS_PROFILE = Path("config") / "dds" / "fastdds_localhost.xml"
#: The order in which ``wam-ros bringup`` stops nodes on Ctrl-C: command sources first, then the
#: safety bridge (it brakes the arm to standstill and publishes HOLD), then everything that
#: observes or simulates the arm (the recorder keeps recording the brake). Other kinds: last stage.
STOP_STAGES = {"wam_inference": 0, "task_planner": 0, "teleop": 0, "scripted_operator": 0, "safety_bridge": 1}
LAST_STOP_STAGE = 2
#: Absolute names used by programs we do not write, remapped into a stack's namespace.
GLOBAL_NAMES = ("/clock", "/tf", "/tf_static")


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: what runs, under which name, with which parameters."""

    name: str
    kind: str
    required: bool
    parameters: dict[str, Any]

    @property
    def executable(self) -> str:
        """Executable in ``lib/wam_ros`` on a ROS 2 install (see CMakeLists.txt)."""
        return f"{self.kind}_node"

    @property
    def module(self) -> str:
        return f"{NODE_PACKAGE}.{self.kind}_node"

    @property
    def stop_stage(self) -> int:
        """When the supervisor stops this node on Ctrl-C (lower first, see :data:`STOP_STAGES`)."""
        return STOP_STAGES.get(self.kind, LAST_STOP_STAGE)


@dataclass(frozen=True)
class Bringup:
    """The validated robot config plus the node set, its namespace and the process environment it runs in."""

    robot: RobotConfig
    nodes: list[NodeSpec]
    environment: dict[str, str] = field(default_factory=dict)
    namespace: str = ""  # "" or "/left": every node, topic, service and action of the stack lives under it

    @property
    def remappings(self) -> list[tuple[str, str]]:
        """Names that other programs publish absolute, kept inside the namespace (none without one):
        the sim's ``/clock`` (two simulated stacks would share one clock) and ``/tf``, ``/tf_static``
        (robot_state_publisher's and tf2's defaults)."""
        return [(name, name[1:]) for name in GLOBAL_NAMES] if self.namespace else []


def known_node_kinds() -> list[str]:
    nodes_dir = Path(__file__).resolve().parents[1] / "nodes"
    return sorted(p.stem[: -len("_node")] for p in nodes_dir.glob("*_node.py"))


def node_parameters_class(kind: str) -> type:
    """The ``Parameters`` dataclass of a node kind (imports its module)."""
    module_name = f"{NODE_PACKAGE}.{kind}_node"
    if importlib.util.find_spec(module_name) is None:
        raise KeyError(kind)
    return importlib.import_module(module_name).Parameters


def normalize_namespace(namespace: str) -> str:
    """``left``, ``/left/`` -> ``/left``; empty -> ""; ValueError for a name ROS would refuse."""
    name = namespace.strip().strip("/")
    if not name:
        return ""
    if not all(part and (part[0].isalpha() or part[0] == "_") and all(c.isalnum() or c == "_" for c in part) for part in name.split("/")):
        raise ValueError(f"namespace {namespace!r}: use letters, digits and underscores, each part starting with a letter, e.g. left or cell_2/arm")
    return "/" + name


def parse_overrides(arguments: list[str]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Split ``name:=value`` arguments into launch arguments (``robot``, ``namespace``) and node overrides.

    Values are parsed as YAML scalars, as ``ros2 launch`` does for parameters.
    """
    launch_args: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for argument in arguments:
        if ":=" not in argument:
            raise ValueError(f"expected <name>:=<value>, got {argument!r}")
        name, raw = argument.split(":=", 1)
        if "." in name:
            node, parameter = name.split(".", 1)
            overrides.setdefault(node, {})[parameter] = yaml.safe_load(raw) if raw else ""
        else:
            launch_args[name] = raw
    return launch_args, overrides


def load_bringup(robot: str, overrides: dict[str, dict[str, Any]] | None = None, namespace: str = "") -> Bringup:
    """Read ``config/robots/<robot>.yaml`` (or a path), validate it, and return the node set.

    ``namespace`` puts the whole stack under ``/<namespace>`` (every name our nodes use is
    relative). Raises :class:`ConfigError` naming the file and the key on any problem, ValueError
    for a bad namespace.
    """
    namespace = normalize_namespace(namespace)
    path = robot_config_path(robot)
    data = read_yaml(path)
    robot_config = parse_robot_config(path, data)
    overrides = dict(overrides or {})

    nodes_section = data.get("nodes")
    if not isinstance(nodes_section, dict) or not nodes_section:
        raise ConfigError(path, "nodes", "missing or empty node set")
    kinds = known_node_kinds()
    specs = []
    for name, entry in nodes_section.items():
        key = f"nodes.{name}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(path, key, f"expected a mapping, got {type(entry).__name__}")
        unknown_keys = set(entry) - {"kind", "required", "enabled", "parameters"}
        if unknown_keys:
            raise ConfigError(path, f"{key}.{sorted(unknown_keys)[0]}", "unknown key; expected kind, required, enabled, parameters")
        node_overrides = dict(overrides.pop(name, {}))
        enabled = node_overrides.pop("enabled", entry.get("enabled", True))
        if not isinstance(enabled, bool):
            raise ConfigError(path, f"{key}.enabled", f"expected bool, got {enabled!r}")
        if not enabled:
            continue
        kind = entry.get("kind", name)
        if kind not in kinds:
            raise ConfigError(path, f"{key}.kind", f"unknown node kind {kind!r}; known: {', '.join(kinds)}")
        required = entry.get("required", False)
        if not isinstance(required, bool):
            raise ConfigError(path, f"{key}.required", f"expected bool, got {required!r}")
        cls = node_parameters_class(kind)
        values = entry.get("parameters") or {}
        try:
            values = params.validate(cls, values, f"{key}.parameters")
            values.update(params.validate(cls, node_overrides, f"{name} (override)"))
        except ValueError as error:
            raise ConfigError(path, "", str(error)) from None
        if "robot_config" in params.defaults(cls):
            values["robot_config"] = str(path)
        # Simulated robots run every node on /clock, except the node that publishes it.
        values["use_sim_time"] = robot_config.simulated and not getattr(cls, "PROVIDES_CLOCK", False)
        specs.append(NodeSpec(name=name, kind=kind, required=required, parameters=values))
    if overrides:
        raise ConfigError(path, "nodes", f"override for unknown node {sorted(overrides)[0]!r}")
    return Bringup(robot=robot_config, nodes=specs, environment=ros_environment(), namespace=namespace)


def ros_environment() -> dict[str, str]:
    """DDS settings for processes on one host: the shared-memory + loopback Fast DDS profile.

    Variables already set by the user win.
    """
    env = {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(package_root() / DDS_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    return {name: os.environ.get(name, value) for name, value in env.items()}


def node_parameters(spec: NodeSpec) -> Any:
    """The node's ``Parameters`` dataclass with the spec's values over the defaults."""
    cls = node_parameters_class(spec.kind)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in spec.parameters.items() if name in names})


@dataclass(frozen=True)
class NodeProblem:
    """A setting or file that would stop a node at start-up."""

    spec: NodeSpec
    problem: str

    def __str__(self) -> str:
        return f"{self.spec.name} ({self.spec.kind}_node{', required' if self.spec.required else ''}): {self.problem}"


def check_bringup(bringup: Bringup) -> list[NodeProblem]:
    """What would stop a node at start-up: a missing checkpoint, device setting or file (empty: none found).

    A node module may define ``check(parameters, robot) -> list[str]`` next to its ``Parameters``;
    it looks at settings and files only (no devices are opened, no model is loaded).
    """
    problems = []
    for spec in bringup.nodes:
        check = getattr(importlib.import_module(spec.module), "check", None)
        if check is not None:
            problems += [NodeProblem(spec, problem) for problem in check(node_parameters(spec), bringup.robot)]
    return problems


@dataclass(frozen=True)
class ExternalNode:
    """A node of another ROS package that launch/bringup.launch.py starts in place of one of ours."""

    package: str
    executable: str
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)


#: On a ROS 2 install with these, the launch file replaces our robot_state node with them.
STANDARD_ROBOT_STATE_PACKAGES = ("robot_state_publisher", "tf2_ros")


def ros_packages_installed(names: tuple[str, ...]) -> bool:
    """True when the ament index (AMENT_PREFIX_PATH) has every package in ``names``."""
    try:
        from ament_index_python.packages import get_package_share_directory

        for name in names:
            get_package_share_directory(name)
    except (ImportError, LookupError, OSError, ValueError):  # not installed, or no AMENT_PREFIX_PATH
        return False
    return True


def standard_robot_state(spec: NodeSpec, robot: RobotConfig) -> list[ExternalNode]:
    """robot_state_publisher and tf2_ros' static_transform_publisher, publishing what ``spec`` (a robot_state node) would.

    robot_state_publisher takes the URDF, the joint frames and the fixed joints (with ``publish_urdf``);
    one static_transform_publisher per camera and for the world frame.
    """
    from wam_ros.control.frames import UrdfFrames, camera_transforms, world_transform

    p = node_parameters(spec)
    use_sim_time = spec.parameters.get("use_sim_time", False)
    frames = UrdfFrames(robot.urdf_path)
    nodes = []
    if p.publish_urdf:
        nodes.append(ExternalNode("robot_state_publisher", "robot_state_publisher", "robot_state_publisher", {
            "robot_description": frames.urdf_text,
            "publish_frequency": p.publish_rate_hz if p.publish_rate_hz > 0 else 1000.0,  # its range is (0, 1000]
            "use_sim_time": use_sim_time,
        }))
    static = world_transform(p.world_frame, frames.root_link, p.root_in_world_xyz_m, p.root_in_world_quat_xyzw)
    for transform in static + camera_transforms(robot, frames.links):
        values = [*transform.translation_m, *transform.rotation_xyzw]
        arguments = [item for flag, value in zip(("--x", "--y", "--z", "--qx", "--qy", "--qz", "--qw"), values) for item in (flag, repr(value))]
        name = f"{spec.name}_{re.sub(r'[^A-Za-z0-9_]', '_', transform.child)}"
        nodes.append(ExternalNode("tf2_ros", "static_transform_publisher", name, {"use_sim_time": use_sim_time},
                                  arguments + ["--frame-id", transform.parent, "--child-frame-id", transform.child]))
    return nodes


def write_params_file(spec: NodeSpec, directory: Path) -> Path:
    """A ``--params-file`` YAML for one node."""
    path = directory / f"{spec.name}.params.yaml"
    # "/**": the file is this node's alone, and the wildcard matches it in any namespace.
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": spec.parameters}}, sort_keys=True))
    return path
