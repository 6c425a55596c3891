"""The task planner node with a tiny causal LM (random weights, from a temp dir), over real DDS.

The test process plays an external scene monitor (it publishes TaskStatus the way the sim does,
on the topic the planner is configured to read: by default it reads none and uses its scene
detector) and the safety bridge: it serves /wam/set_mode, so the planner's requests can be
checked one by one, and publishes SafetyStatus with who set the mode, as the bridge does; an
operator's mode change is a status naming another requester.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient

from ros_harness import Processes, RosProbe, wait_until
from test_planner_lm import build_tiny_model
from wam_ros_interfaces.action import ExecuteTask
from wam_ros_interfaces.msg import SafetyStatus, Subtask, TaskPlan, TaskStatus
from wam_ros.ros import qos
from wam_ros.sim.tasks import pick_place_instruction
from wam_ros_interfaces.srv import SetMode

pytestmark = pytest.mark.ros
SHARED_ROS_DOMAIN = True  # the module-scoped graph fixture and its tests talk to each other
ORDER = ("green", "blue", "red")
INSTRUCTION = "put the green, blue and red cubes in the bin, in that order"
SUBTASKS = tuple(pick_place_instruction(f"{colour}_cube", slot) for slot, colour in enumerate(ORDER))  # as the sim words them


class Graph:
    """The planner process plus a probe that is its scene monitor, bridge and action client."""

    def __init__(self, probe: RosProbe, processes: Processes) -> None:
        self.probe = probe
        self.processes = processes
        node = probe.node
        self.modes: list[int] = []
        self.mode_lock = threading.Lock()
        self.safety_pub = node.create_publisher(SafetyStatus, "/wam/safety/status", qos.LATCHED)
        node.create_service(SetMode, "/wam/set_mode", self._set_mode)
        self.status_pub = node.create_publisher(TaskStatus, "/wam/sim/task_status", qos.LATCHED)
        self.subtasks = probe.collect(Subtask, "/wam/task/subtask", qos.LATCHED)
        self.plans = probe.collect(TaskPlan, "/wam/task/plan", qos.LATCHED)
        self.client = ActionClient(node, ExecuteTask, "/wam/execute_task")

    def _set_mode(self, request: SetMode.Request, response: SetMode.Response) -> SetMode.Response:
        with self.mode_lock:
            self.modes.append(request.mode)
        self.bridge_mode(request.mode, request.requester, request.reason)
        response.accepted, response.mode, response.message = True, request.mode, "ok"
        return response

    def bridge_mode(self, mode: int, requester: str, reason: str) -> None:
        """The bridge entering ``mode`` for ``requester`` (the planner through SetMode, or an operator)."""
        names = {SafetyStatus.MODE_IDLE: "IDLE", SafetyStatus.MODE_TELEOP: "TELEOP", SafetyStatus.MODE_AUTONOMY: "AUTONOMY",
                 SafetyStatus.MODE_HOLD: "HOLD", SafetyStatus.MODE_ESTOP: "ESTOP"}
        status = SafetyStatus(mode=mode, mode_name=names[mode], mode_requester=requester, mode_reason=reason)
        status.header.stamp = status.mode_stamp = self.probe.node.get_clock().now().to_msg()
        self.safety_pub.publish(status)

    def publish_status(self, done: int) -> None:
        self.status_pub.publish(TaskStatus(
            task="bin_three", instruction=INSTRUCTION, subtask_instructions=list(SUBTASKS), subtasks_done=done,
            success=done == len(ORDER), object_names=["red_cube", "green_cube", "blue_cube", "bin"],
        ))

    def send(self, instruction: str, **goal_fields):
        assert self.client.wait_for_server(timeout_sec=60.0), "the planner's action server did not appear"
        feedback: list = []
        future = self.client.send_goal_async(ExecuteTask.Goal(instruction=instruction, **goal_fields), feedback_callback=feedback.append)
        handle = wait_until(lambda: future.done() and future.result(), 10.0, "goal response",
                            detail=lambda: f"{self.probe.graph_view()}\n{self.processes.log('task_planner')}")
        return handle, feedback

    def result(self, handle, timeout_s: float = 60.0):
        future = handle.get_result_async()
        return wait_until(lambda: future.done() and future.result(), timeout_s, "the task result")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))
    processes = Processes(tmp_path_factory.mktemp("logs"))
    processes.start_node(
        "task_planner", language_model_path=str(model_dir), proposal_samples=2, proposal_max_new_tokens=24,
        mcts_iterations=60, use_imagination=False, monitor_period_s=0.05, feedback_period_s=0.1,
        task_status_topic="/wam/sim/task_status", scene_detector="", min_plan_probability=0.0,
        # a subtask times out while a busy CI host still delivers Ctrl-C or a status (seen at 1.5 s)
        subtask_timeout_s=5.0,
        max_replans=1, service_timeout_s=2.0,
    )
    # goals sent before the node is active would be rejected, or lost on a slow host
    wait_until(lambda: "ready:" in processes.log("task_planner"), 120.0, "the planner to be active",
               detail=lambda: processes.log("task_planner"))
    probe = RosProbe("planner_test_probe")
    try:
        yield Graph(probe, processes)
    finally:
        probe.close()
        processes.stop_all()
        log = processes.log("task_planner")
        assert "Traceback" not in log, log


def test_plans_publishes_subtasks_in_order_and_succeeds(graph):
    graph.publish_status(0)
    handle, feedback = graph.send(INSTRUCTION)
    assert handle.accepted
    for done, subtask in enumerate(SUBTASKS):
        wait_for_subtask(graph, subtask)
        graph.publish_status(done + 1)
    response = graph.result(handle)
    result = response.result
    assert response.status == GoalStatus.STATUS_SUCCEEDED and result.success and result.subtasks_completed == 3
    assert [s.arguments[0] for s in result.final_plan.subtasks] == [f"{c}_cube" for c in ORDER]
    assert all(s.status == Subtask.STATUS_SUCCEEDED for s in result.final_plan.subtasks)
    assert [f.feedback.state for f in feedback][0] == "planning" and "executing" in {f.feedback.state for f in feedback}
    assert feedback[-1].feedback.plan.subtasks and max(f.feedback.progress for f in feedback) <= 1.0
    assert graph.modes[:1] == [SafetyStatus.MODE_AUTONOMY] and graph.modes[-1] == SafetyStatus.MODE_HOLD
    assert graph.plans[-1].current_index == 3


def test_cancel_holds_the_bridge_and_ends_cleanly(graph):
    graph.publish_status(0)
    graph.modes.clear()
    handle, feedback = graph.send(INSTRUCTION, timeout_s=120.0)
    wait_until(lambda: any(f.feedback.state == "executing" for f in feedback), 60.0, "execution to start")
    assert graph.client.wait_for_server(1.0)
    cancel = handle.cancel_goal_async()
    wait_until(lambda: cancel.done(), 10.0, "the cancel response")
    response = graph.result(handle)
    assert response.status == GoalStatus.STATUS_CANCELED and not response.result.success and response.result.message == "canceled"
    assert graph.modes == [SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD]


def test_timeouts_replan_then_fail(graph):
    graph.publish_status(1)  # green is in: the plan starts at blue
    revisions = len(graph.plans)
    graph.modes.clear()
    handle, _ = graph.send(INSTRUCTION)
    response = graph.result(handle)
    result = response.result
    assert response.status == GoalStatus.STATUS_ABORTED and not result.success
    assert "timed out" in result.message and "no replans left" in result.message
    assert result.final_plan.revision == 1 and result.final_plan.subtasks[0].instruction == SUBTASKS[1]
    assert any(plan.revision == 1 for plan in graph.plans[revisions:])
    # Replanning keeps the arm in AUTONOMY: AUTONOMY is asked for once, HOLD once at the end.
    assert graph.modes == [SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD]


@pytest.mark.parametrize(("mode", "requester"), [(SafetyStatus.MODE_HOLD, "operator"), (SafetyStatus.MODE_TELEOP, "teleop"),
                                                 (SafetyStatus.MODE_HOLD, "safety_bridge")])
def test_a_mode_change_the_planner_did_not_ask_for_ends_the_task(graph, mode, requester):
    """The operator always wins: after their HOLD or takeover (or the bridge's own stop) the task
    ends, the result names who stopped it, and AUTONOMY is never requested again."""
    graph.publish_status(0)
    graph.modes.clear()
    handle, feedback = graph.send(INSTRUCTION, timeout_s=120.0, max_replans=3)
    wait_until(lambda: any(f.feedback.state == "executing" for f in feedback), 60.0, "execution to start")
    graph.bridge_mode(mode, requester, "hands off")
    response = graph.result(handle)
    assert response.status == GoalStatus.STATUS_ABORTED and not response.result.success
    assert response.result.stopped_by == requester and f"stopped by {requester}" in response.result.message
    time.sleep(1.0)  # a planner that would re-arm does it within a monitor period or a replan
    assert graph.modes == [SafetyStatus.MODE_AUTONOMY]  # no second AUTONOMY, and no HOLD forced on the operator


def test_bad_goals_are_refused_with_a_reason(graph):
    graph.publish_status(0)
    for instruction, reason in (("   ", "empty instruction"), ("make me a sandwich", "names no goal"), ("x" * 600, "longer than")):
        handle, _ = graph.send(instruction)
        response = graph.result(handle)
        assert response.status == GoalStatus.STATUS_ABORTED and reason in response.result.message
    graph.publish_status(3)
    response = graph.result(graph.send(INSTRUCTION)[0])
    assert response.result.success and "already reached" in response.result.message


def test_a_second_goal_preempts_the_running_one_as_a_correction(graph):
    """The operator's correction: the running goal ends with HOLD, the new one is read against it
    (by the language model) and asks for AUTONOMY once at its own start."""
    graph.publish_status(1)  # green is in
    graph.modes.clear()
    first, feedback = graph.send(INSTRUCTION, timeout_s=120.0)
    wait_until(lambda: any(f.feedback.state == "executing" for f in feedback), 60.0, "execution to start")
    second, second_feedback = graph.send("no, the red one first", timeout_s=120.0)
    assert second.accepted
    response = graph.result(first)
    assert response.status == GoalStatus.STATUS_ABORTED and "preempted by a new goal (correction): no, the red one first" in response.result.message
    second_result = second.get_result_async()
    wait_until(lambda: any(f.feedback.state == "executing" for f in second_feedback) or second_result.done(), 60.0,
               "the correction to run or end")
    if not second_result.done():
        plan = second_feedback[-1].feedback.plan
        assert "green_cube" not in [s.arguments[0] for s in plan.subtasks]  # done before the correction: not redone
        cancel = second.cancel_goal_async()
        wait_until(lambda: cancel.done(), 10.0, "the cancel response")
        assert graph.modes == [SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD, SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD]
    log = graph.processes.log("task_planner")
    assert "preempts" in log and "a correction of the running task" in log


def wait_for_subtask(graph: Graph, wanted: str) -> None:
    wait_until(lambda: graph.subtasks and graph.subtasks[-1].instruction == wanted, 60.0, f"subtask {wanted!r}")


def test_task_command_follows_the_task_to_success(graph):
    graph.publish_status(0)
    count = len(graph.subtasks)
    cli = graph.processes.python("task_cli", "-m", "wam_ros.cli", "task", INSTRUCTION, "--wait", "30")
    wait_until(lambda: len(graph.subtasks) > count, 60.0, "the first subtask")
    for done, subtask in enumerate(SUBTASKS):
        wait_for_subtask(graph, subtask)
        shown = f"executing {done + 1}/3 '{subtask}'"
        wait_until(lambda: shown in graph.processes.log("task_cli"), 30.0, f"the command showing {shown!r}")
        graph.publish_status(done + 1)
    assert cli.wait(timeout=30) == 0, graph.processes.log("task_cli")
    output = graph.processes.log("task_cli")
    assert "task succeeded" in output
    assert "subtasks completed: 3 of 3" in output


def test_task_command_cancels_on_ctrl_c(graph):
    graph.publish_status(0)
    graph.modes.clear()
    count = len(graph.subtasks)
    cli = graph.processes.python("task_cli_cancel", "-m", "wam_ros.cli", "task", INSTRUCTION, "--wait", "30")
    wait_until(lambda: len(graph.subtasks) > count, 60.0, "the first subtask")
    os.killpg(cli.pid, signal.SIGINT)
    assert cli.wait(timeout=30) == 1
    output = graph.processes.log("task_cli_cancel")
    assert "canceling" in output and "task canceled" in output
    assert graph.modes == [SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_HOLD]


def test_task_command_without_a_planner_says_so(tmp_path):
    import subprocess

    env = {**os.environ, "ROS_DOMAIN_ID": str((int(os.environ["ROS_DOMAIN_ID"]) + 50) % 100 + 1)}  # an empty domain
    done = subprocess.run([sys.executable, "-m", "wam_ros.cli", "task", "put the red cube in the bin", "--wait", "1"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "no task planner" in done.stderr


def test_configure_says_why_it_failed(tmp_path):
    """A bad setting ends the node at configure with the reason, not just 'configure failed'."""
    processes = Processes(tmp_path)
    try:
        node = processes.start_node("task_planner", language_model_path=str(tmp_path / "no_model"), scene_detector="", task_status_topic="")
        assert node.wait(timeout=120) == 1
        log = processes.log("task_planner")
        assert "configure failed: LanguageModelError" in log and str(tmp_path / "no_model") in log, log
        node = processes.start_node("task_planner", "planner_bad_detector", language_model_path=str(tmp_path / "no_model"),
                                    scene_detector=str(tmp_path / "no_detector"), goal_source="oracle")
        assert node.wait(timeout=120) == 1
        log = processes.log("planner_bad_detector")
        assert "configure failed: ValueError: goal_source must be one of rules, auto, language_model, got 'oracle'" in log, log
    finally:
        processes.stop_all()
