"""Node parameters declared once, as a dataclass, and checked before any process starts.

Each node module defines ``Parameters``, a dataclass whose fields are the node's ROS
parameters (units in the names, a description in the metadata). Bringup validates the robot
YAML against it; the node declares its ROS parameters from it (``wam_ros.ros.node``).
Allowed field types: bool, int, float, str and lists of those.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

SCALAR_TYPES = (bool, int, float, str)


def param(default: Any, description: str) -> Any:
    """A parameter field with a default value and a one-line description (shown by ``ros2 param describe``)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"description": description})
    return dataclasses.field(default=default, metadata={"description": description})


def field_type(cls: type, name: str) -> Any:
    """Resolved annotation of a dataclass field (``from __future__ import annotations`` safe)."""
    return typing.get_type_hints(cls)[name]


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a parameter annotation; ints are accepted for floats. Raises ValueError."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list of {item_type.__name__}, got {type(value).__name__} {value!r}")
        return [coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if annotation not in SCALAR_TYPES:
        raise TypeError(f"{where}: unsupported parameter type {annotation!r}")
    if not isinstance(value, annotation) or (annotation is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    if annotation is float and not math.isfinite(value):
        raise ValueError(f"{where}: must be finite, got {value}")
    return value


def validate(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a mapping of parameter overrides against ``cls``; returns the coerced mapping.

    ``where`` prefixes every error (e.g. ``panda_sim.yaml: nodes.sim.parameters``).
    """
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of parameters, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for name, value in values.items():
        if name not in names:
            raise ValueError(f"{where}.{name}: unknown parameter; known: {', '.join(sorted(names))}")
        out[name] = coerce(value, field_type(cls, name), f"{where}.{name}")
    return out


def defaults(cls: type) -> dict[str, Any]:
    """Default value of every parameter of ``cls``."""
    return dataclasses.asdict(cls())


def description(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("description", "")
    raise KeyError(name)
