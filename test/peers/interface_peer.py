"""A peer process for the interface tests: serves SetMode and ExecuteTask, echoes ActionChunks.

- /peer/chunk_in (ActionChunk) is republished unchanged on /peer/chunk_out.
- /peer/set_mode (SetMode) accepts modes 0..4 and refuses anything else with a reason.
- /peer/execute_task (ExecuteTask) sends one feedback per 50 ms for 'steps' subtasks (from the
  instruction's word count) and honours cancel.
"""
import time

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from wam_ros_interfaces.action import ExecuteTask
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, Subtask
from wam_ros_interfaces.srv import SetMode


class InterfacePeer(Node):
    def __init__(self) -> None:
        super().__init__("interface_peer")
        group = ReentrantCallbackGroup()
        self.echo = self.create_publisher(ActionChunk, "/peer/chunk_out", 10)
        self.create_subscription(ActionChunk, "/peer/chunk_in", self.echo.publish, 10)
        self.create_service(SetMode, "/peer/set_mode", self.set_mode)
        ActionServer(self, ExecuteTask, "/peer/execute_task", self.execute, callback_group=group,
                     goal_callback=lambda _: GoalResponse.ACCEPT, cancel_callback=lambda _: CancelResponse.ACCEPT)

    def set_mode(self, request: SetMode.Request, response: SetMode.Response) -> SetMode.Response:
        response.accepted = request.mode <= SafetyStatus.MODE_ESTOP
        response.mode = request.mode if response.accepted else SafetyStatus.MODE_IDLE
        response.message = f"mode {request.mode} ({request.reason})" if response.accepted else f"unknown mode {request.mode}"
        return response

    def execute(self, goal_handle):
        words = goal_handle.request.instruction.split()
        feedback = ExecuteTask.Feedback()
        for index, word in enumerate(words):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return ExecuteTask.Result(success=False, subtasks_completed=index, message="canceled")
            feedback.current_subtask = Subtask(id=str(index), index=index, instruction=word, status=Subtask.STATUS_ACTIVE)
            feedback.progress = (index + 1) / len(words)
            feedback.state = "executing"
            goal_handle.publish_feedback(feedback)
            time.sleep(0.05)
        goal_handle.succeed()
        return ExecuteTask.Result(success=True, subtasks_completed=len(words), message="done")


def main() -> None:
    rclpy.init()
    node = InterfacePeer()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
