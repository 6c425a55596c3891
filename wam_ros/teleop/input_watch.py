"""What a teleop device waits for, said at start and again while nothing arrives (no ROS)."""
from __future__ import annotations


def keyboard_command(robot_config: str) -> str:
    """The keyboard teleop, which needs a terminal of its own (bringup gives its nodes none)."""
    return (f"python -m wam_ros.nodes.teleop_node --ros-args -p device:=keyboard -p robot_config:={robot_config or '<robot yaml>'} "
            "in a terminal of its own")


def how_to_provide(device: str, robot_config: str) -> str:
    """How an operator gives ``device`` (joy or leader) its input."""
    keyboard = keyboard_command(robot_config)
    if device == "joy":
        return f"start a joystick driver (ros2 run joy joy_node), or drive with the keyboard: {keyboard}"
    if device == "leader":
        return f"start the leader arm's driver, or point leader_topic at its joint states; or drive with the keyboard: {keyboard}"
    raise ValueError(f"device {device!r} reads no topic")


class InputWatch:
    """Tracks one input stream on a monotonic clock [s]: says when it is missing, every ``period_s``.

    The stream counts as missing from the start until the first message, and again after
    ``period_s`` without one.
    """

    def __init__(self, what: str, how: str, period_s: float, now_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"warning period must be positive, got {period_s}")
        self.what, self.how, self.period_s = what, how, period_s
        self.missing = True
        self.silent_since_s = now_s
        self.said_s = now_s

    def waiting(self) -> str:
        """The first message, said at start."""
        return f"waiting for {self.what}: {self.how}"

    def arrived(self, now_s: float) -> str | None:
        """A message came: returns a line to log when it ends a gap, else None."""
        self.silent_since_s = now_s
        if not self.missing:
            return None
        self.missing = False
        return f"receiving {self.what}"

    def poll(self, now_s: float) -> str | None:
        """A warning to log when the stream has been missing for another ``period_s``, else None."""
        silent_s = now_s - self.silent_since_s
        if self.missing and now_s - self.said_s < self.period_s:
            return None
        if not self.missing and silent_s < self.period_s:
            return None
        self.missing = True
        self.said_s = now_s
        return f"no {self.what} for {silent_s:.1f} s: {self.how}"
