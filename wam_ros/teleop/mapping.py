"""Device input -> teleop command: axes with deadband and scaling, keys, button edges, leader arms.

A :class:`TeleopCommand` is what one device sample asks for: a Cartesian twist (m/s, rad/s),
a gripper width change, and requests (intervention toggle, HOLD, ESTOP) that fire once per
press (rising edge).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

#: Mode numbers of wam_ros/SafetyStatus (kept here so this module stays ROS-free).
MODE_IDLE, MODE_TELEOP, MODE_AUTONOMY, MODE_HOLD, MODE_ESTOP = range(5)


@dataclass
class TeleopCommand:
    """One sample of operator intent."""

    linear_m_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_rad_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    gripper_delta_m: float = 0.0
    intervention: bool = False
    hold: bool = False
    estop: bool = False

    @property
    def moving(self) -> bool:
        return bool(np.any(self.linear_m_s) or np.any(self.angular_rad_s))


def intervention_target(mode: int) -> int | None:
    """The mode an intervention press asks for: AUTONOMY <-> TELEOP; IDLE/HOLD -> TELEOP; none from ESTOP."""
    if mode == MODE_TELEOP:
        return MODE_AUTONOMY
    if mode in (MODE_AUTONOMY, MODE_IDLE, MODE_HOLD):
        return MODE_TELEOP
    return None


def deadband(value: float, width: float) -> float:
    """Zero inside ``width``, then rescaled so the output still reaches +-1 at full deflection."""
    if not math.isfinite(value) or abs(value) <= width:
        return 0.0
    return math.copysign((min(abs(value), 1.0) - width) / (1.0 - width), value)


class EdgeDetector:
    """Turns held buttons into one event per press."""

    def __init__(self) -> None:
        self._previous: dict[str, bool] = {}

    def rising(self, name: str, pressed: bool) -> bool:
        fired = pressed and not self._previous.get(name, False)
        self._previous[name] = pressed
        return fired


@dataclass(frozen=True)
class AxisMapping:
    """Which device axes drive x, y, z, roll, pitch, yaw (-1: none) and with which sign."""

    axes: tuple[int, int, int, int, int, int]
    signs: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.axes) != 6 or len(self.signs) != 6:
            raise ValueError(f"axis mapping needs 6 axes and 6 signs (x y z roll pitch yaw), got {self.axes} / {self.signs}")


@dataclass(frozen=True)
class ButtonMapping:
    """Device button indices (-1: unused)."""

    intervention: int = -1
    hold: int = -1
    estop: int = -1
    gripper_open: int = -1
    gripper_close: int = -1


class AxesMapper:
    """Joystick / SpaceMouse axes and buttons -> :class:`TeleopCommand`."""

    def __init__(self, axes: AxisMapping, buttons: ButtonMapping, linear_speed_m_s: float, angular_speed_rad_s: float,
                 deadband_width: float, gripper_speed_m_s: float, period_s: float) -> None:
        if not 0.0 <= deadband_width < 1.0:
            raise ValueError(f"deadband must lie in [0, 1), got {deadband_width}")
        self.axes, self.buttons = axes, buttons
        self.linear_speed_m_s, self.angular_speed_rad_s = linear_speed_m_s, angular_speed_rad_s
        self.deadband_width = deadband_width
        self.gripper_step_m = gripper_speed_m_s * period_s
        self.edges = EdgeDetector()

    def command(self, axis_values: Sequence[float], button_values: Sequence[int]) -> TeleopCommand:
        def axis(index: int) -> float:
            return float(axis_values[index]) if 0 <= index < len(axis_values) else 0.0

        def button(index: int) -> bool:
            return 0 <= index < len(button_values) and bool(button_values[index])

        values = [sign * deadband(axis(index), self.deadband_width) for index, sign in zip(self.axes.axes, self.axes.signs)]
        b = self.buttons
        return TeleopCommand(
            linear_m_s=np.array(values[:3]) * self.linear_speed_m_s,
            angular_rad_s=np.array(values[3:]) * self.angular_speed_rad_s,
            gripper_delta_m=self.gripper_step_m * (button(b.gripper_open) - button(b.gripper_close)),
            intervention=self.edges.rising("intervention", button(b.intervention)),
            hold=self.edges.rising("hold", button(b.hold)),
            estop=button(b.estop),  # not edge-triggered: an ESTOP is repeated while held
        )


#: Keyboard layout: key -> (twist component 0..5, direction). Upper/lower case alike.
KEY_AXES = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
}
KEY_HELP = ("w/s: +x/-x  a/d: +y/-y  r/f: up/down  u/o: roll  i/k: pitch  j/l: yaw  "
            "g/h: open/close gripper  t: intervention (TELEOP <-> AUTONOMY)  space: HOLD  e: ESTOP")


class KeyboardMapper:
    """Key presses -> :class:`TeleopCommand`; a key moves the arm while its auto-repeat keeps arriving.

    Terminals repeat a held key after an initial delay (about 0.5 s); ``key_timeout_s`` bridges
    that gap, and the bridge's own teleop timeout stops the arm once the key is released.
    """

    def __init__(self, linear_speed_m_s: float, angular_speed_rad_s: float, gripper_step_m: float, key_timeout_s: float) -> None:
        self.linear_speed_m_s, self.angular_speed_rad_s = linear_speed_m_s, angular_speed_rad_s
        self.gripper_step_m = gripper_step_m
        self.key_timeout_s = key_timeout_s
        self._last_pressed: dict[str, float] = {}

    def command(self, keys: Sequence[str], now_s: float) -> TeleopCommand:
        """``keys``: characters read since the last sample (possibly none)."""
        command = TeleopCommand()
        for key in keys:
            key = key.lower()
            if key in KEY_AXES:
                # A new direction key replaces the others on the same axis (no fighting opposites).
                component = KEY_AXES[key][0]
                for other, (other_component, _) in KEY_AXES.items():
                    if other_component == component:
                        self._last_pressed.pop(other, None)
                self._last_pressed[key] = now_s
            elif key == "g":
                command.gripper_delta_m += self.gripper_step_m
            elif key == "h":
                command.gripper_delta_m -= self.gripper_step_m
            elif key == "t":
                command.intervention = True
            elif key == " ":
                command.hold = True
                self._last_pressed.clear()
            elif key == "e":
                command.estop = True
                self._last_pressed.clear()
        twist = np.zeros(6)
        for key, pressed_s in list(self._last_pressed.items()):
            if now_s - pressed_s > self.key_timeout_s:
                del self._last_pressed[key]
                continue
            component, direction = KEY_AXES[key]
            twist[component] = direction
        command.linear_m_s = twist[:3] * self.linear_speed_m_s
        command.angular_rad_s = twist[3:] * self.angular_speed_rad_s
        return command


class LeaderArmMapper:
    """Leader-arm joint states -> follower joint targets (by name, with optional offsets)."""

    def __init__(self, leader_joint_names: Sequence[str], follower_joint_names: Sequence[str], offsets_rad: Sequence[float] = ()) -> None:
        if len(leader_joint_names) != len(follower_joint_names):
            raise ValueError(f"{len(leader_joint_names)} leader joints for {len(follower_joint_names)} follower joints")
        if offsets_rad and len(offsets_rad) != len(follower_joint_names):
            raise ValueError(f"expected {len(follower_joint_names)} offsets, got {len(offsets_rad)}")
        self.leader_joint_names = list(leader_joint_names)
        self.follower_joint_names = list(follower_joint_names)
        self.offsets = np.array(offsets_rad, dtype=float) if offsets_rad else np.zeros(len(follower_joint_names))

    def targets(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray | None:
        """Follower joint targets in follower order, or None when the message lacks a leader joint or a finite value."""
        index = {name: i for i, name in enumerate(names)}
        if len(positions) != len(names) or any(name not in index for name in self.leader_joint_names):
            return None
        values = np.array([positions[index[name]] for name in self.leader_joint_names], dtype=float) + self.offsets
        return values if np.all(np.isfinite(values)) else None
