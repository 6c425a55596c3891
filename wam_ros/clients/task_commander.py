"""A small Python client for the task planner, in the style of nav2_simple_commander.

    commander = TaskCommander()
    commander.wait_until_ready()
    commander.execute_task("put the red, green and blue cubes in the bin, in that order")
    while not commander.is_task_complete():
        feedback = commander.get_feedback()
    result = commander.get_result()
    commander.destroy()

It owns its rclpy context and node, so it can live next to other rclpy code in one process.
"""
from __future__ import annotations

from typing import Any

import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor

from wam_ros_interfaces.action import ExecuteTask

ACTION_NAME = "wam/execute_task"
STATUS_NAMES = {
    GoalStatus.STATUS_SUCCEEDED: "succeeded",
    GoalStatus.STATUS_ABORTED: "aborted",
    GoalStatus.STATUS_CANCELED: "canceled",
}


class TaskCommander:
    """Send a long-horizon instruction to ``/wam/execute_task``, follow it, cancel it."""

    def __init__(self, node_name: str = "wam_task_commander", action_name: str = ACTION_NAME, namespace: str = "") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(node_name, context=self.context, namespace=namespace or None)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.client = ActionClient(self.node, ExecuteTask, action_name)
        self.goal_handle: Any = None
        self.result_future: Any = None
        self.feedback: ExecuteTask.Feedback | None = None
        self.status = GoalStatus.STATUS_UNKNOWN
        self.result: ExecuteTask.Result | None = None

    def _spin_until(self, future: Any, timeout_s: float) -> bool:
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        return future.done()

    def wait_until_ready(self, timeout_s: float = 30.0) -> bool:
        """Wait for the planner's action server (it loads its language model first)."""
        return self.client.wait_for_server(timeout_sec=timeout_s)

    def execute_task(self, instruction: str, max_replans: int = 0, timeout_s: float = 0.0, accept_timeout_s: float = 10.0) -> bool:
        """Send the goal; True when the planner accepted it (it refuses while another task runs)."""
        self.feedback, self.result, self.status = None, None, GoalStatus.STATUS_UNKNOWN
        goal = ExecuteTask.Goal(instruction=instruction, max_replans=max_replans, timeout_s=timeout_s)
        future = self.client.send_goal_async(goal, feedback_callback=self._on_feedback)
        if not self._spin_until(future, accept_timeout_s) or future.result() is None or not future.result().accepted:
            self.goal_handle = None
            return False
        self.goal_handle = future.result()
        self.result_future = self.goal_handle.get_result_async()
        return True

    def _on_feedback(self, message: Any) -> None:
        self.feedback = message.feedback

    def is_task_complete(self, spin_s: float = 0.1) -> bool:
        """Process incoming feedback for up to ``spin_s``; True once the result has arrived."""
        if self.result_future is None:
            return True
        if not self._spin_until(self.result_future, spin_s):
            return False
        response = self.result_future.result()
        self.status, self.result = response.status, response.result
        return True

    def get_feedback(self) -> ExecuteTask.Feedback | None:
        return self.feedback

    def get_result(self) -> ExecuteTask.Result | None:
        return self.result

    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "unknown")

    def cancel_task(self, timeout_s: float = 10.0) -> bool:
        """Ask the planner to cancel (it puts the bridge in HOLD); True when the request was accepted."""
        if self.goal_handle is None:
            return False
        future = self.goal_handle.cancel_goal_async()
        return self._spin_until(future, timeout_s) and bool(future.result().goals_canceling)

    def destroy(self) -> None:
        self.client.destroy()
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
