"""ExecuteTask round trip on the real graph: MuJoCo sim (bin_three) + WAM inference + safety bridge + planner.

The WAM is an untrained tiny checkpoint and the language model a tiny random one, both built
here: the test checks the wiring (the plan follows the sim's instruction, the inference node is
conditioned on the planner's subtask, imagination answers and the progress head is polled, the
bridge is switched to AUTONOMY and put in HOLD on cancel, the shipped scene detector reads the
sim's cameras), not the skill. The planner is not given the task status (its default), so it plans
and monitors as it would on hardware.
"""
from __future__ import annotations

import importlib.util
import re

import pytest
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient

from ros_harness import wait_until
from test_model_core import tiny_checkpoint
from test_planner_lm import build_tiny_model
from wam_ros_interfaces.action import ExecuteTask
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, Subtask, TaskStatus
from wam_ros.robot import robot_config_path
from wam_ros.ros import qos
from wam_ros_interfaces.srv import Imagine

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(importlib.util.find_spec("wam_ros.nodes.sim_node") is None, reason="the sim node is not in this tree")]
STARTUP_TIMEOUT_S = 240.0  # torch, the text encoder and the language model on a busy 2-core machine


def test_execute_task_round_trip_with_feedback_and_cancel(processes, ros, tmp_path):
    config = str(robot_config_path("panda_sim"))
    checkpoint, _, _ = tiny_checkpoint(tmp_path)
    model_dir = build_tiny_model(tmp_path / "tiny_lm")
    processes.start_node("sim", robot_config=config, task="bin_three", seed=11)
    processes.start_node("safety_bridge", robot_config=config, use_sim_time=True, estop_latch_file=str(tmp_path / "estop.json"),
                         inference_timeout_s=30.0, max_tracking_error_rad=0.0)
    processes.start_node("wam_inference", robot_config=config, checkpoint=str(checkpoint), use_sim_time=True, cpu_threads=1)
    # The planner does not read the sim's task status (the default): completion comes from its scene
    # detector; a stuck window makes it poll the WAM's progress head too.
    processes.start_node("task_planner", robot_config=config, use_sim_time=True, language_model_path=str(model_dir),
                         proposal_samples=2, proposal_max_new_tokens=16, progress_period_s=0.5, subtask_timeout_s=120.0,
                         stuck_window_s=1000.0,
                         imagine_timeout_s=30.0)  # wiring, not speed: a starved host answered none of three within 5 s
    statuses = ros.collect(TaskStatus, "/wam/sim/task_status", qos.LATCHED)
    safety = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    subtasks = ros.collect(Subtask, "/wam/task/subtask", qos.LATCHED)
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics", 10)
    client = ActionClient(ros.node, ExecuteTask, "/wam/execute_task")
    wait_until(lambda: statuses and safety, 60.0, "task status from the sim and the bridge's status")
    wait_until(lambda: 0.0 <= safety[-1].joint_state_age_s < 0.1, 60.0, "the bridge receiving joint states")
    assert client.wait_for_server(timeout_sec=STARTUP_TIMEOUT_S), processes.log("task_planner")
    imagine = ros.node.create_client(Imagine, "/wam_inference/imagine")
    assert imagine.wait_for_service(timeout_sec=STARTUP_TIMEOUT_S)
    wait_until(lambda: ros.call(imagine, Imagine.Request(instruction="put the red cube in the bin"), 30.0).success,
               STARTUP_TIMEOUT_S, "the world model answering Imagine", poll_s=0.5)

    status = statuses[-1]
    feedback: list = []
    sent = client.send_goal_async(ExecuteTask.Goal(instruction=status.instruction), feedback_callback=feedback.append)
    handle = wait_until(lambda: sent.done() and sent.result(), 10.0, "goal response")
    assert handle.accepted
    executing = wait_until(lambda: next((f.feedback for f in list(feedback) if f.feedback.state == "executing"), None), 120.0, "execution")

    # The plan is the sim's own subtask sequence, read from the instruction alone.
    assert [s.instruction for s in executing.plan.subtasks] == list(status.subtask_instructions)
    first = executing.current_subtask
    assert first.status == Subtask.STATUS_ACTIVE and first.instruction == status.subtask_instructions[0]
    wait_until(lambda: subtasks and subtasks[-1].id == first.id, 10.0, "the first subtask on /wam/task/subtask")
    # The WAM acts on the planner's subtask, and the bridge takes its chunks.
    wait_until(lambda: any(c.subtask_id == first.id for c in list(chunks)), STARTUP_TIMEOUT_S, "a chunk conditioned on the subtask")
    wait_until(lambda: any(s.mode == SafetyStatus.MODE_AUTONOMY for s in list(safety)), 30.0, "AUTONOMY at the bridge")
    # The progress head is read on the live observation and reported in the feedback.
    wait_until(lambda: any(f.feedback.current_subtask.progress > 0 for f in list(feedback)), 60.0, "progress-head readings in the feedback")
    # The scene detector reads the cameras (no task status is subscribed).
    def detector_readings() -> int:
        values = [kv.value for d in list(diagnostics) for st in d.status if st.name.endswith(": planner") for kv in st.values
                  if kv.key == "scene_detector_readings"]
        return int(values[-1]) if values else 0

    wait_until(lambda: detector_readings() > 3, 60.0, "scene detector readings on /diagnostics")
    log = processes.log("task_planner")
    assert "scene detector" in log
    readers = [info.node_name for info in ros.node.get_subscriptions_info_by_topic("/wam/sim/task_status")]
    assert "task_planner" not in readers, readers  # ground truth stays with the sim and the test
    imagined = next(line for line in log.splitlines() if "imagined progress:" in line)
    assert re.search(r"'put the \w+ cube in the bin': [01]\.\d\d", imagined), log  # a busy model may miss some

    cancel = handle.cancel_goal_async()
    wait_until(lambda: cancel.done(), 10.0, "the cancel response")
    result_future = handle.get_result_async()
    response = wait_until(lambda: result_future.done() and result_future.result(), 30.0, "the canceled result")
    assert response.status == GoalStatus.STATUS_CANCELED and response.result.message == "canceled"
    held = wait_until(lambda: safety[-1] if safety[-1].mode == SafetyStatus.MODE_HOLD else None, 10.0, "HOLD after the cancel")
    assert held.mode_requester == "task_planner" and "task canceled" in held.last_stop_reason  # who asked: SafetyStatus.mode_requester
    assert "Traceback" not in processes.log("task_planner")
    client.destroy()
