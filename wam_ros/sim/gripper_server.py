"""How the sim's GripperCommand action server decides that a goal has ended (no ROS).

The sim node serves control_msgs/action/GripperCommand like ros2_controllers'
gripper_action_controller: a goal succeeds once the width lies within ``tolerance_m`` of its
target (``reached_goal``), and is aborted with ``stalled`` once the fingers have not moved
faster than ``stall_speed_m_s`` for ``stall_time_s`` of sim time short of it (closing on an
object: the fingers keep squeezing with the goal's force).
"""
from __future__ import annotations

from dataclasses import dataclass

#: Ends of a goal.
REACHED = "reached"
STALLED = "stalled"


@dataclass
class GripperGoalWatch:
    """Follows the measured width of one goal; :meth:`update` says when and how it ended."""

    target_m: float
    started_s: float  # sim time the goal was taken
    tolerance_m: float = 0.002
    stall_speed_m_s: float = 0.002
    stall_time_s: float = 0.3

    def __post_init__(self) -> None:
        self._moved_s = self.started_s

    def update(self, clock_s: float, width_m: float, speed_m_s: float) -> str | None:
        """REACHED, STALLED or None (still moving) at sim time ``clock_s``."""
        if abs(width_m - self.target_m) <= self.tolerance_m:
            return REACHED
        if abs(speed_m_s) > self.stall_speed_m_s:
            self._moved_s = clock_s
        return STALLED if clock_s - self._moved_s >= self.stall_time_s else None
