"""The bridge's GripperCommand goals without ROS: when a goal goes out, how its end is judged
(a grasp stalls by design), and that every failure holds the arm with a reason."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wam_ros.control.bridge import BridgeSettings, SafetyBridgeCore
from wam_ros.control.chunks import ChunkInput
from wam_ros.control.gripper import STATUS_ABORTED, STATUS_CANCELED, STATUS_SUCCEEDED, GripperGoals, GripperResult
from wam_ros.control.modes import EstopLatch, Mode
from wam_ros.robot import load_robot_config

PANDA = load_robot_config("panda_sim")
FR3 = load_robot_config("fr3_real")
UR5E = load_robot_config("ur5e_real")
GRIPPER = PANDA.gripper
ACTION = GRIPPER.action_name


def result(status: int, width_m: float, stalled: bool = False, reached: bool = False, gripper=GRIPPER) -> GripperResult:
    return GripperResult(status, gripper.position_from_width(width_m), 20.0, stalled, reached)


def test_position_semantics_of_each_robot():
    assert GRIPPER.interface == FR3.gripper.interface == UR5E.gripper.interface == "action"
    # franka_gripper: position = one finger's travel (it commands width 2 * position); the sim serves the same.
    for gripper in (GRIPPER, FR3.gripper):
        assert gripper.position_from_width(0.08) == pytest.approx(0.04)
        assert gripper.width_from_joint_positions([0.02, 0.02]) == pytest.approx(0.04)  # two finger joints [m]
    # Robotiq 2F-85 (gripper_action_controller on the knuckle joint): 0 rad open (85 mm), 0.7929 rad closed.
    robotiq = UR5E.gripper
    assert (robotiq.width_max_m, robotiq.force_min_n, robotiq.force_max_n) == (0.085, 20.0, 235.0)
    assert robotiq.position_from_width(0.085) == pytest.approx(0.0, abs=1e-4)
    assert robotiq.position_from_width(0.0) == pytest.approx(0.7929)
    assert robotiq.width_from_joint_positions([0.7929 / 2]) == pytest.approx(0.085 / 2, abs=1e-4)
    for width in np.linspace(0.0, 0.085, 5):
        assert robotiq.width_from_position(robotiq.position_from_width(width)) == pytest.approx(width)


def test_one_goal_in_flight_and_only_on_change():
    goals = GripperGoals(GRIPPER, 20.0)
    first = goals.next_goal(0.08, 0.0)
    assert (first.width_m, first.position, first.max_effort_n) == (0.08, pytest.approx(0.04), 20.0)
    assert goals.next_goal(0.0, 0.01) is None  # the first one is still running
    assert goals.on_response(first.seq, True) == ""
    assert goals.on_result(first.seq, result(STATUS_SUCCEEDED, 0.08, reached=True)) == ""
    assert goals.next_goal(0.08 - 0.8 * GRIPPER.command_tolerance_m, 0.1) is None  # within the tolerance of the last goal
    second = goals.next_goal(0.0, 0.2)
    assert second.seq == first.seq + 1 and second.width_m == 0.0
    assert goals.on_response(first.seq, False) == ""  # an answer about an older goal changes nothing
    assert goals.in_flight == second


def test_a_grasp_stalls_short_of_the_goal_and_is_no_failure():
    goals = GripperGoals(GRIPPER, 20.0)
    close = goals.next_goal(0.0, 0.0)
    goals.on_response(close.seq, True)
    # gripper_action_controller aborts a stalled goal; the fingers rest on a 4.5 cm cube.
    assert goals.on_result(close.seq, result(STATUS_ABORTED, 0.045, stalled=True)) == ""
    assert goals.in_flight is None and goals.last == close  # the grasp holds: no new goal for the same target
    assert goals.next_goal(0.0, 1.0) is None


def test_fingers_that_meet_the_cube_right_at_a_partial_width_are_a_grasp():
    """A policy closes in steps: a goal of 5.15 cm on a cube the fingers meet at 5.63 cm stalls
    within command_tolerance_m of the goal (seen in bench/remote.py: 5 of 20 episodes held)."""
    goals = GripperGoals(GRIPPER, 20.0)
    close = goals.next_goal(0.0515, 0.0)
    goals.on_response(close.seq, True)
    assert goals.on_result(close.seq, result(STATUS_ABORTED, 0.0563, stalled=True)) == ""
    assert goals.in_flight is None and goals.last == close


def test_fingers_held_while_opening_are_sent_again_without_a_failure():
    """Opening with the fingers pressed on the table (or against a bin wall) stalls; the arm's next
    motion frees them, so the goal goes out again instead of holding the arm."""
    goals = GripperGoals(GRIPPER, 20.0)
    goal = goals.next_goal(0.08, 0.0)
    goals.on_response(goal.seq, True)
    assert goals.on_result(goal.seq, result(STATUS_ABORTED, 0.0444, stalled=True)) == ""
    again = goals.next_goal(0.08, 0.4)
    assert again is not None and again.seq == goal.seq + 1 and again.width_m == 0.08


@pytest.mark.parametrize(("target_m", "end", "expected"), [
    (0.0, result(STATUS_ABORTED, 0.045), "aborted: reached_goal false, stalled false, position 0.0225 (width 0.0450 m)"),
    (0.0, result(STATUS_ABORTED, 0.001, stalled=True), "aborted: reached_goal false, stalled true"),  # closed on nothing
    (0.0, result(STATUS_CANCELED, 0.03), "canceled (not by the bridge: another client's goal may have preempted it)"),
])
def test_failed_ends_name_the_action_and_the_result(target_m, end, expected):
    goals = GripperGoals(GRIPPER, 20.0)
    goal = goals.next_goal(target_m, 0.0)
    goals.on_response(goal.seq, True)
    reason = goals.on_result(goal.seq, end)
    assert reason.startswith(f"gripper action {ACTION}: goal {goal.seq} (width {target_m:.4f} m") and expected in reason
    assert goals.next_goal(target_m, 0.1) is not None  # after a failure the same target is sent again


def test_rejected_unanswered_and_late_goals():
    goals = GripperGoals(GRIPPER, 20.0)
    rejected = goals.next_goal(0.0, 0.0)
    assert goals.on_response(rejected.seq, False).endswith("rejected")
    silent = goals.next_goal(0.0, 1.0)
    assert goals.expire(1.0 + GRIPPER.command_timeout_s) == ""
    reason = goals.expire(1.01 + GRIPPER.command_timeout_s)
    assert f"no answer to the goal request within command_timeout_s {GRIPPER.command_timeout_s:g} s" in reason
    assert goals.on_result(silent.seq, result(STATUS_SUCCEEDED, 0.0)) == ""  # too late: ignored
    slow = goals.next_goal(0.0, 10.0)
    goals.on_response(slow.seq, True)
    assert "accepted but no result within" in goals.expire(10.01 + GRIPPER.command_timeout_s)


def make_core(tmp_path, robot=PANDA) -> SafetyBridgeCore:
    core = SafetyBridgeCore(robot, BridgeSettings(inference_timeout_s=60.0), EstopLatch(tmp_path / "estop.json"))
    home = np.array(robot.arm.home_rad)
    core.on_joint_state(list(robot.arm.joint_names) + list(GRIPPER.joint_names), list(home) + [0.04, 0.04], [], 0.0)
    assert core.request_mode(Mode.AUTONOMY, "test", False, 0.0).accepted
    chunk = ChunkInput(0.0, list(robot.arm.joint_names), 0.1, 100, np.tile(home, 100).tolist(), [0.08] * 10 + [0.0] * 90, 1)
    assert core.on_chunk(chunk, 0.0)
    return core


def step(core: SafetyBridgeCore, now_s: float):
    """One output cycle after the arm (tracking perfectly) reported its joint states."""
    core.on_joint_state(list(core.robot.arm.joint_names), core.follower.position, [], now_s)
    return core.step(now_s)


def step_until_goal(core: SafetyBridgeCore, now_s: float):
    for _ in range(1000):
        now_s += core.period_s
        output = step(core, now_s)
        if output.gripper_goal is not None:
            return now_s, output
    raise AssertionError("no gripper goal")


def test_the_core_sends_goals_keeps_the_record_stream_and_holds_on_failure(tmp_path):
    core = make_core(tmp_path)
    now, output = step_until_goal(core, 0.0)
    assert output.gripper_goal.width_m == pytest.approx(0.08) and output.gripper_width_m is not None  # the record for the recorder
    core.on_gripper_response(output.gripper_goal.seq, True, now)
    core.on_gripper_result(output.gripper_goal.seq, result(STATUS_SUCCEEDED, 0.08, reached=True), now)
    now, output = step_until_goal(core, now)  # the chunk closes the gripper after 1 s
    assert output.gripper_goal.width_m < 0.08 - GRIPPER.command_tolerance_m and now > 0.9
    core.on_gripper_response(output.gripper_goal.seq, True, now)
    core.on_gripper_result(output.gripper_goal.seq, result(STATUS_ABORTED, 0.03), now)
    assert core.mode == Mode.HOLD and core.last_stop_reason.startswith(f"gripper action {ACTION}") and "aborted" in core.last_stop_reason
    status = core.status(now)
    assert any(v.startswith(f"gripper: gripper action {ACTION}") for v in status.violations)


def test_a_goal_without_an_answer_holds_after_the_timeout(tmp_path):
    core = make_core(tmp_path)
    now, _ = step_until_goal(core, 0.0)
    sent = now
    while now < sent + GRIPPER.command_timeout_s - 0.01:
        now += core.period_s
        step(core, now)
        assert core.mode == Mode.AUTONOMY
    for _ in range(5):
        now += core.period_s
        step(core, now)
    assert core.mode == Mode.HOLD and "no answer to the goal request within command_timeout_s" in core.last_stop_reason


def test_a_server_that_is_not_there_holds_at_once(tmp_path):
    core = make_core(tmp_path)
    now, output = step_until_goal(core, 0.0)
    core.on_gripper_not_sent(output.gripper_goal.seq, "not sent: no action server", now)
    assert core.mode == Mode.HOLD and core.last_stop_reason.endswith("not sent: no action server")


def test_the_topic_interface_sends_no_goals(tmp_path):
    robot = dataclasses.replace(PANDA, gripper=dataclasses.replace(GRIPPER, interface="topic"))
    core = make_core(tmp_path, robot)
    outputs = [step(core, 0.004 * k) for k in range(1, 300)]
    assert core.gripper_goals is None and not any(o.gripper_goal for o in outputs) and any(o.gripper_width_m for o in outputs)


def test_the_sims_server_ends_a_goal_when_reached_or_stalled():
    from wam_ros.sim.gripper_server import REACHED, STALLED, GripperGoalWatch

    watch = GripperGoalWatch(target_m=0.0, started_s=10.0)
    assert watch.update(10.1, 0.07, -0.1) is None  # closing
    assert watch.update(10.3, 0.046, -0.01) is None
    assert watch.update(10.5, 0.045, 0.0) is None  # on the cube: not moving, not yet for stall_time_s
    assert watch.update(10.3 + watch.stall_time_s, 0.045, 0.0) == STALLED
    assert GripperGoalWatch(target_m=0.08, started_s=0.0).update(0.5, 0.079, 0.05) == REACHED
    assert GripperGoalWatch(target_m=0.08, started_s=0.0).update(0.2, 0.04, 0.0) is None  # not started moving yet
