"""Scripted operator: takes over from the policy when it fails and hands back, through the real teleop path.

A stand-in for a person at a leader arm (tests, ``wam-ros dagger``, ``bench/dagger.py``); the
logic is :class:`wam_ros.teleop.scripted_operator.ScriptedOperator`. Reads what a person at the
arm sees: ``/wam/sim/task_status`` (instruction, object poses), ``/joint_states`` and
``/wam/safety/status``. Commands only as the teleop node does: ``/wam/set_mode`` (TELEOP to take
over, AUTONOMY to hand back, requester = ``operator_name``), and while it holds TELEOP
``/wam/teleop/joint_command`` (leader-arm joint targets) and ``/wam/teleop/gripper``.
It never touches the simulator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import JointState

from wam_ros.parameters import param
from wam_ros.ros import qos
from wam_ros.ros.names import SAFETY_STATUS_TOPIC, SET_MODE_SERVICE, TASK_STATUS_TOPIC, TELEOP_GRIPPER_TOPIC, TELEOP_JOINT_TOPIC
from wam_ros.ros.node import RobotNode, run_node
from wam_ros.sim.config import SimConfig, parse_overrides
from wam_ros.teleop.scripted_operator import OperatorConfig, Scene, ScriptedOperator
from wam_ros_interfaces.msg import GripperCommand, SafetyStatus, TaskStatus
from wam_ros_interfaces.srv import SetMode



@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    operator_name: str = param("scripted_operator", "requester named in SetMode (SafetyStatus.mode_requester while it drives)")
    command_rate_hz: float = param(50.0, "rate of joint targets while it drives, and of its decisions [Hz of node time]")
    no_progress_timeout_s: float = param(4.0, "take over after this long without task progress [s]")
    min_progress_m: float = param(0.02, "distance gained towards the cube (then the bin) that counts as progress [m]")
    empty_grasp_width_m: float = param(0.01, "gripper narrower than this holds nothing [m]")
    empty_grasp_s: float = param(0.5, "take over when the gripper has been closed on nothing this long [s]")
    task_region_margin_m: float = param(0.15, "take over when the TCP is this far outside the objects' bounding box [m]")
    max_tcp_height_m: float = param(0.55, "take over when the TCP is higher than this [m] (the Panda's home TCP is at 0.49 m)")
    held_distance_m: float = param(0.04, "a cube this close to the TCP with the fingers closed on it is in the hand [m]")
    handback_grace_s: float = param(1.0, "after AUTONOMY (re)starts, no rule fires for this long [s]")
    max_takeovers: int = param(3, "takeovers per episode; the last one finishes the subtask")
    speed_m_s: float = param(0.2, "TCP speed of recovery moves [m/s] (the bridge caps it too)")
    scene_overrides: list[str] = param([], "the scene as the operator sees it, SimConfig KEY=VALUE as the sim node's (cube size: how it grasps and what a closed grasp holds)")


class ScriptedOperatorNode(RobotNode[Parameters]):
    """ROS wiring of :class:`ScriptedOperator`: scene in, mode requests and teleop targets out."""

    def __init__(self) -> None:
        super().__init__("scripted_operator", Parameters)
        p, robot = self.params, self.robot
        config = OperatorConfig(**{name: getattr(p, name) for name in OperatorConfig.__dataclass_fields__})
        self.operator = ScriptedOperator(robot, SimConfig.from_robot(robot, parse_overrides(p.scene_overrides)), config, p.operator_name)
        self.arm_names = list(robot.arm.joint_names)
        self.finger_names = list(robot.gripper.joint_names)
        self.force_n = robot.gripper.force_max_n / 2
        self.task: TaskStatus | None = None
        self.safety: SafetyStatus | None = None
        self.joints: np.ndarray | None = None
        self.gripper_width_m = robot.gripper.width_max_m
        self.joint_pub = self.create_publisher(JointState, TELEOP_JOINT_TOPIC, qos.COMMANDS)
        self.gripper_pub = self.create_publisher(GripperCommand, TELEOP_GRIPPER_TOPIC, qos.COMMANDS)
        self.mode_client = self.create_client(SetMode, SET_MODE_SERVICE)
        self.create_subscription(TaskStatus, TASK_STATUS_TOPIC, self._on_task, qos.LATCHED)
        self.create_subscription(SafetyStatus, SAFETY_STATUS_TOPIC, self._on_safety, qos.LATCHED)
        self.create_subscription(JointState, "joint_states", self._on_joints, qos.JOINT_STATES_IN)
        self.create_timer(1.0 / p.command_rate_hz, self._on_timer)
        self.get_logger().info(f"{p.operator_name} watching {robot.name}: {config}")

    def _on_task(self, msg: TaskStatus) -> None:
        self.task = msg

    def _on_safety(self, msg: SafetyStatus) -> None:
        self.safety = msg

    def _on_joints(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        if all(name in index for name in self.arm_names) and len(msg.position) == len(msg.name):
            self.joints = np.array([msg.position[index[name]] for name in self.arm_names])
            if self.finger_names and all(name in index for name in self.finger_names):
                self.gripper_width_m = float(sum(msg.position[index[name]] for name in self.finger_names))

    def _scene(self, task: TaskStatus, joints: np.ndarray) -> Scene:
        done = min(task.subtasks_done, max(len(task.subtask_instructions) - 1, 0))
        instruction = task.subtask_instructions[done] if task.subtask_instructions else task.instruction
        objects = {name: (np.array([pose.position.x, pose.position.y, pose.position.z]),
                          np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]))
                   for name, pose in zip(task.object_names, task.object_poses)}
        return Scene(self.get_clock().now().nanoseconds * 1e-9, int(task.episode), instruction, bool(task.success), objects,
                     joints, self.gripper_width_m)

    def _on_timer(self) -> None:
        task, safety, joints = self.task, self.safety, self.joints
        if task is None or safety is None or joints is None:
            return
        command = self.operator.step(self._scene(task, joints), int(safety.mode), safety.mode_requester)
        if command.request_mode is not None:
            self.get_logger().info(command.reason)
            self._request(command.request_mode, command.reason)
        stamp = self.get_clock().now().to_msg()
        if command.joint_target is not None:
            message = JointState(name=self.arm_names, position=command.joint_target.tolist())
            message.header.stamp = stamp
            self.joint_pub.publish(message)
        if command.gripper_width_m is not None and self.finger_names:
            gripper = GripperCommand(width_m=command.gripper_width_m, force_n=self.force_n)
            gripper.header.stamp = stamp
            self.gripper_pub.publish(gripper)

    def _request(self, mode: int, reason: str) -> None:
        if not self.mode_client.service_is_ready():
            self.get_logger().warning(f"{SET_MODE_SERVICE} not available: {reason} not sent")
            return
        future = self.mode_client.call_async(SetMode.Request(mode=mode, reason=reason, requester=self.params.operator_name))
        future.add_done_callback(self._on_mode_response)

    def _on_mode_response(self, future) -> None:
        response = future.result()
        if response is not None and not response.accepted:
            self.get_logger().warning(f"mode request refused: {response.message}")


def main(args: list[str] | None = None) -> int:
    return run_node(ScriptedOperatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
