"""Our interfaces across real processes over real DDS: topic, service and action."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from rclpy.action import ActionClient

from ros_harness import wait_until
from wam_ros_interfaces.action import ExecuteTask
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
from wam_ros_interfaces.srv import SetMode

pytestmark = pytest.mark.ros
PEER = str(Path(__file__).parent / "peers" / "interface_peer.py")


def make_chunk() -> ActionChunk:
    chunk = ActionChunk()
    chunk.header.stamp.sec, chunk.header.stamp.nanosec = 12, 345_000_000
    chunk.header.frame_id = "panda_link0"
    chunk.joint_names = [f"panda_joint{i}" for i in range(1, 8)]
    chunk.control_period_s = 0.1
    chunk.horizon = 16
    chunk.joint_positions = [math.sin(i) for i in range(16 * 7)]
    chunk.gripper_widths = [0.04 + 0.001 * i for i in range(16)]
    chunk.chunk_id = 2**40 + 7
    chunk.model_id = "cpu-small@abc123"
    chunk.subtask_id = "0-pick_place-red_cube-bin"
    chunk.inference_latency_s = 0.0213
    return chunk


def test_action_chunk_crosses_processes_intact(processes, ros):
    processes.python("peer", PEER)
    received = ros.collect(ActionChunk, "/peer/chunk_out")
    publisher = ros.node.create_publisher(ActionChunk, "/peer/chunk_in", 10)
    ros.wait_for_subscribers(publisher)
    ros.wait_for_publishers("/peer/chunk_out")
    sent = make_chunk()
    wait_until(lambda: publisher.publish(sent) or received, 10.0, "the echoed chunk", poll_s=0.2)
    assert received[0] == sent


def test_set_mode_round_trip(processes, ros):
    processes.python("peer", PEER)
    client = ros.node.create_client(SetMode, "/peer/set_mode")
    accepted = ros.call(client, SetMode.Request(mode=SafetyStatus.MODE_HOLD, reason="test"))
    assert accepted.accepted and accepted.mode == SafetyStatus.MODE_HOLD and "test" in accepted.message
    refused = ros.call(client, SetMode.Request(mode=42, reason="bogus"))
    assert not refused.accepted and "unknown mode 42" in refused.message


def _send_goal(ros, instruction: str):
    client = ActionClient(ros.node, ExecuteTask, "/peer/execute_task")
    assert client.wait_for_server(timeout_sec=10.0)
    feedback: list = []
    future = client.send_goal_async(ExecuteTask.Goal(instruction=instruction), feedback_callback=feedback.append)
    handle = wait_until(lambda: future.done() and future.result(), 10.0, "goal acceptance")
    assert handle.accepted
    return handle, feedback


def test_execute_task_feedback_and_result(processes, ros):
    processes.python("peer", PEER)
    handle, feedback = _send_goal(ros, "pick red then green then blue")
    result_future = handle.get_result_async()
    result = wait_until(lambda: result_future.done() and result_future.result(), 10.0, "the result").result
    assert result.success and result.subtasks_completed == 6
    assert [f.feedback.current_subtask.instruction for f in feedback] == "pick red then green then blue".split()
    assert feedback[-1].feedback.progress == pytest.approx(1.0)


def test_execute_task_cancel(processes, ros):
    processes.python("peer", PEER)
    handle, feedback = _send_goal(ros, " ".join(["step"] * 200))
    wait_until(lambda: len(feedback) >= 2, 10.0, "feedback before cancel")
    cancel = handle.cancel_goal_async()
    wait_until(lambda: cancel.done(), 10.0, "cancel response")
    result_future = handle.get_result_async()
    result = wait_until(lambda: result_future.done() and result_future.result(), 10.0, "the canceled result").result
    assert not result.success and result.message == "canceled" and result.subtasks_completed < 200
