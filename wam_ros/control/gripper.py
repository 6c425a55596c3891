"""The bridge's side of control_msgs/action/GripperCommand, without ROS.

:class:`GripperGoals` decides when the gripper gets a new goal and judges each goal's end. One
goal is in flight at a time (franka_gripper runs concurrent goals side by side, and
gripper_action_controller cancels the older one): a new goal goes out when none is in flight and
the target width moved more than ``command_tolerance_m`` from the last goal's, so a policy's
250 Hz gripper stream becomes a few goals. Widths map to the driver's ``position`` through the
robot config (:class:`wam_ros.robot.GripperConfig`).

A goal fails when it is rejected, when no result came ``command_timeout_s`` after it was sent
(a server that never answers), when it was canceled without the bridge asking, or when it ended
without reaching its position, unless it stalled: closing with the fingers apart is a grasp on an
object, which stalls by design (gripper_action_controller aborts with ``stalled``), also when the
fingers meet the object within ``command_tolerance_m`` of the commanded width; opening short
of the target is a finger held by something (pressed on the table, against a bin wall) and the
same target is sent again until the fingers open, without holding the arm (the arm's motion is
what frees them).
Each failure is a reason naming the action and the result; the bridge then holds the arm.
"""
from __future__ import annotations

from dataclasses import dataclass

from wam_ros.robot import GripperConfig

#: action_msgs/msg/GoalStatus values of a finished goal.
STATUS_SUCCEEDED = 4
STATUS_CANCELED = 5
STATUS_ABORTED = 6
_STATUS_NAMES = {STATUS_SUCCEEDED: "succeeded", STATUS_CANCELED: "canceled", STATUS_ABORTED: "aborted"}


@dataclass(frozen=True)
class GripperGoal:
    """One control_msgs GripperCommand goal: the width it stands for and what is sent."""

    seq: int  # numbers the bridge's goals, so a late answer to an old goal is recognised
    width_m: float
    position: float  # GripperCommand.command.position, in the driver's unit
    max_effort_n: float
    sent_s: float


@dataclass(frozen=True)
class GripperResult:
    """The result of a finished goal (control_msgs GripperCommand Result, with the goal status)."""

    status: int  # action_msgs GoalStatus
    position: float
    effort: float
    stalled: bool
    reached_goal: bool


class GripperGoals:
    """When to send a GripperCommand goal, and whether its end is a failure (module docstring)."""

    def __init__(self, gripper: GripperConfig, max_effort_n: float) -> None:
        self.gripper = gripper
        self.max_effort_n = max_effort_n
        self.in_flight: GripperGoal | None = None
        self.accepted = False  # the server accepted the goal in flight
        self.last: GripperGoal | None = None  # the newest goal sent that did not fail
        self._seq = 0

    def restart(self) -> None:
        """Send the next target whatever the last goal was (a mode entry: the gripper may have moved since)."""
        self.last = None

    def next_goal(self, width_m: float, now_s: float) -> GripperGoal | None:
        """A goal for the target ``width_m`` when one is due, else None."""
        if self.in_flight is not None:
            return None
        if self.last is not None and abs(width_m - self.last.width_m) <= self.gripper.command_tolerance_m:
            return None
        self._seq += 1
        goal = GripperGoal(self._seq, width_m, self.gripper.position_from_width(width_m), self.max_effort_n, now_s)
        self.in_flight, self.accepted, self.last = goal, False, goal
        return goal

    def describe(self, goal: GripperGoal) -> str:
        return (f"gripper action {self.gripper.action_name}: goal {goal.seq} (width {goal.width_m:.4f} m, "
                f"position {goal.position:.4f}, max_effort {goal.max_effort_n:g} N)")

    def on_response(self, seq: int, accepted: bool) -> str:
        """The server's answer to goal ``seq``; returns the failure reason ("" when accepted)."""
        goal = self._current(seq)
        if goal is None:
            return ""
        if accepted:
            self.accepted = True
            return ""
        return self._failed(goal, "rejected")

    def on_result(self, seq: int, result: GripperResult) -> str:
        """Goal ``seq`` finished; returns the failure reason ("" for success or a grasp)."""
        goal = self._current(seq)
        if goal is None:
            return ""
        width = self.gripper.width_from_position(result.position)
        tolerance_m = self.gripper.command_tolerance_m
        stalled = result.status == STATUS_ABORTED and result.stalled
        if stalled and width < goal.width_m - tolerance_m:
            self.in_flight, self.last = None, None  # held while opening: the same target goes out again
            return ""
        # Stalled at or beyond the target with the fingers apart: a grasp, or the fingers met the
        # object right at the commanded width (a policy closing in steps). Fully closed is a miss.
        grasped = stalled and width > self.gripper.width_min_m + tolerance_m
        if result.status == STATUS_SUCCEEDED or grasped:
            self.in_flight = None
            return ""
        status = _STATUS_NAMES.get(result.status, f"status {result.status}")
        why = " (not by the bridge: another client's goal may have preempted it)" if result.status == STATUS_CANCELED else ""
        return self._failed(goal, f"{status}{why}: reached_goal {str(result.reached_goal).lower()}, "
                                  f"stalled {str(result.stalled).lower()}, position {result.position:.4f} "
                                  f"(width {width:.4f} m), effort {result.effort:g}")

    def fail(self, seq: int, problem: str) -> str:
        """Goal ``seq`` cannot go on (the node could not send it); returns the failure reason."""
        goal = self._current(seq)
        return "" if goal is None else self._failed(goal, problem)

    def expire(self, now_s: float) -> str:
        """The failure reason when the goal in flight has had no result for ``command_timeout_s``, else ""."""
        goal = self.in_flight
        if goal is None or now_s - goal.sent_s <= self.gripper.command_timeout_s:
            return ""
        answer = "accepted but no result" if self.accepted else "no answer to the goal request"
        return self._failed(goal, f"{answer} within command_timeout_s {self.gripper.command_timeout_s:g} s")

    def _failed(self, goal: GripperGoal, problem: str) -> str:
        """End ``goal`` as failed (its target is sent again when asked for next time); returns the reason."""
        self.in_flight, self.last = None, None
        return f"{self.describe(goal)} {problem}"

    def _current(self, seq: int) -> GripperGoal | None:
        """The goal in flight when it is ``seq`` (answers to older goals, timed out, are ignored)."""
        return self.in_flight if self.in_flight is not None and self.in_flight.seq == seq else None
