"""Local input devices read without ROS: a terminal keyboard and a 3Dconnexion SpaceMouse.

Joysticks (sensor_msgs/Joy) and leader arms (sensor_msgs/JointState) arrive as ROS messages;
their mapping is in :mod:`wam_ros.teleop.mapping`.
"""
from __future__ import annotations

import importlib
import os
import select
import sys
import termios
import tty
from typing import IO, Any


class DeviceError(RuntimeError):
    """A device cannot be opened; the message says what is missing."""


class KeyboardReader:
    """Non-blocking key reads from a terminal in cbreak mode; the terminal is restored by :meth:`close`."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdin
        if not self.stream.isatty():
            raise DeviceError("the keyboard device needs a terminal on stdin: run the teleop node directly in a terminal "
                              "(python -m wam_ros.nodes.teleop_node ...), not under wam-ros bringup")
        self.fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def read(self) -> list[str]:
        """Every key typed since the last call (empty when none)."""
        keys: list[str] = []
        while select.select([self.fd], [], [], 0.0)[0]:
            data = os.read(self.fd, 64)
            if not data:
                break
            keys.extend(data.decode(errors="ignore"))
        return keys

    def close(self) -> None:
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class SpaceMouseReader:
    """A SpaceMouse through the ``pyspacemouse`` library (optional: ``pip install pyspacemouse``).

    :meth:`read` returns six axes in [-1, 1] (x, y, z, roll, pitch, yaw) and the buttons.
    """

    def __init__(self, library: Any = None) -> None:
        if library is None:
            try:
                library = importlib.import_module("pyspacemouse")
            except ImportError:
                raise DeviceError("device spacemouse needs the pyspacemouse library (pip install pyspacemouse; "
                                  "it needs hidapi from the system)") from None
        self.library = library
        if not self.library.open():
            raise DeviceError("no SpaceMouse found (pyspacemouse.open() failed): check the USB connection and hidraw permissions")

    def read(self) -> tuple[list[float], list[int]]:
        state = self.library.read()
        axes = [float(state.x), float(state.y), float(state.z), float(state.roll), float(state.pitch), float(state.yaw)]
        return axes, [int(b) for b in getattr(state, "buttons", [])]

    def close(self) -> None:
        close = getattr(self.library, "close", None)
        if close is not None:
            close()
