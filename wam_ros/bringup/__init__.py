"""Robot YAML -> the node set to start, shared by ``launch/bringup.launch.py`` and ``wam-ros bringup``.

A robot file has a ``robot:`` section (:mod:`wam_ros.robot`) and a ``nodes:`` section::

    nodes:
      sim:                      # node name; its kind defaults to the name
        kind: sim               # -> executable sim_node, module wam_ros.nodes.sim_node
        required: true          # its exit stops the whole bringup
        parameters: {camera_rate_hz: 15.0}

Overrides come as ``<node>.<parameter>:=<value>`` (``<node>.enabled:=false`` drops a node).
:func:`load_bringup` validates everything (kinds, parameter names and types) before anything starts.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
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
    """The validated robot config plus the node set and the process environment it runs in."""

    robot: RobotConfig
    nodes: list[NodeSpec]
    environment: dict[str, str] = field(default_factory=dict)


def known_node_kinds() -> list[str]:
    nodes_dir = Path(__file__).resolve().parents[1] / "nodes"
    return sorted(p.stem[: -len("_node")] for p in nodes_dir.glob("*_node.py"))


def node_parameters_class(kind: str) -> type:
    """The ``Parameters`` dataclass of a node kind (imports its module)."""
    module_name = f"{NODE_PACKAGE}.{kind}_node"
    if importlib.util.find_spec(module_name) is None:
        raise KeyError(kind)
    return importlib.import_module(module_name).Parameters


def parse_overrides(arguments: list[str]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Split ``name:=value`` arguments into launch arguments (``robot``) and node overrides.

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


def load_bringup(robot: str, overrides: dict[str, dict[str, Any]] | None = None) -> Bringup:
    """Read ``config/robots/<robot>.yaml`` (or a path), validate it, and return the node set.

    Raises :class:`ConfigError` naming the file and the key on any problem.
    """
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
    return Bringup(robot=robot_config, nodes=specs, environment=ros_environment())


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


def write_params_file(spec: NodeSpec, directory: Path) -> Path:
    """A ``--params-file`` YAML for one node."""
    path = directory / f"{spec.name}.params.yaml"
    path.write_text(yaml.safe_dump({spec.name: {"ros__parameters": spec.parameters}}, sort_keys=True))
    return path
