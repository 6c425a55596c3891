"""The planner asks a refusing Imagine service again, and says why a plan went unscored.

The test process plays the inference node's ``~/imagine`` (refusing the way it does without a
fresh observation), the scene monitor and the bridge's ``/wam/set_mode``; the planner is a real
process with a tiny causal LM.
"""
from __future__ import annotations

import re
import threading

import pytest
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient

from ros_harness import wait_until
from test_planner_lm import build_tiny_model
from wam_ros_interfaces.action import ExecuteTask
from wam_ros_interfaces.msg import TaskStatus
from wam_ros.ros import qos
from wam_ros_interfaces.srv import Imagine, SetMode

pytestmark = pytest.mark.ros
ORDER = ("green", "blue", "red")


class RefusingImagine:
    """Refuses the first ``refusals`` requests, then answers ``progress``."""

    def __init__(self, refusals: int, progress: float = 0.42) -> None:
        self.refusals = refusals
        self.progress = progress
        self.requests = 0
        self.lock = threading.Lock()

    def __call__(self, request: Imagine.Request, response: Imagine.Response) -> Imagine.Response:
        with self.lock:
            self.requests += 1
            refuse = self.requests <= self.refusals
        response.success = not refuse
        response.message = "no observation: front camera frame is 0.9 s old" if refuse else ""
        response.progress = 0.0 if refuse else self.progress
        return response


def grant(request: SetMode.Request, response: SetMode.Response) -> SetMode.Response:
    response.accepted, response.mode, response.message = True, request.mode, "ok"
    return response


def test_refused_imagine_is_asked_again_and_the_reason_is_logged(processes, ros, tmp_path):
    node = ros.node
    imagine = RefusingImagine(refusals=2)
    node.create_service(Imagine, "/wam_inference/imagine", lambda req, res: imagine(req, res))
    node.create_service(SetMode, "/wam/set_mode", grant)
    status_pub = node.create_publisher(TaskStatus, "/wam/sim/task_status", qos.LATCHED)
    status_pub.publish(TaskStatus(
        task="bin_three", instruction="put the green, blue and red cubes in the bin, in that order",
        subtask_instructions=[f"put the {c} cube in the bin" for c in ORDER], subtasks_done=0,
        object_names=["red_cube", "green_cube", "blue_cube", "bin"],
    ))
    processes.start_node("task_planner", language_model_path=str(build_tiny_model(tmp_path / "tiny_lm")), proposal_samples=2,
                         proposal_max_new_tokens=16, mcts_iterations=30, imagine_timeout_s=3.0, subtask_timeout_s=60.0)
    client = ActionClient(node, ExecuteTask, "/wam/execute_task")
    assert client.wait_for_server(timeout_sec=60.0), processes.log("task_planner")

    def plan_and_cancel(instruction: str) -> str:
        """Send a goal, wait until it executes, cancel it; the planner's log line of imagined progress."""
        feedback: list = []
        sent = client.send_goal_async(ExecuteTask.Goal(instruction=instruction), feedback_callback=feedback.append)
        handle = wait_until(lambda: sent.done() and sent.result(), 10.0, "goal response")
        assert handle.accepted
        wait_until(lambda: any(f.feedback.state == "executing" for f in list(feedback)), 60.0, "execution", detail=lambda: processes.log("task_planner"))
        canceled = handle.cancel_goal_async()
        wait_until(lambda: canceled.done(), 10.0, "cancel response")
        result = handle.get_result_async()
        wait_until(lambda: result.done() and result.result(), 30.0, "the canceled result")
        assert result.result().status == GoalStatus.STATUS_CANCELED
        lines = [line for line in processes.log("task_planner").splitlines() if "imagined progress:" in line]
        assert lines, processes.log("task_planner")
        return lines[-1]

    # Two refusals, then answers: the first plan is scored all the same.
    first = plan_and_cancel("put the green, blue and red cubes in the bin, in that order")
    assert re.search(r"'put the green cube in the bin': 0\.42", first), first
    assert "no answer" not in first, first
    assert imagine.requests >= 2 + 3, imagine.requests  # the refused ones again, then one per first step

    # Refusing for good: the plan still comes, unscored, within the timeout, and the log says why.
    imagine.refusals = 10**9
    second = plan_and_cancel("put the green, blue and red cubes in the bin, in that order")
    assert "no answer" in second, second
    log = processes.log("task_planner")
    assert re.search(r"imagine 'put the \w+ cube in the bin' within 3\.0 s: refused: no observation: front camera frame is 0\.9 s old", log), log
