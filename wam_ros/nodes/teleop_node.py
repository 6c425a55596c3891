"""Teleop: an operator device drives the arm through the safety bridge, and switches TELEOP <-> AUTONOMY.

Devices (parameter ``device``): ``keyboard`` (this process's terminal), ``joy`` (sensor_msgs/Joy
on ``joy_topic``), ``spacemouse`` (pyspacemouse, when installed), ``leader`` (a leader arm's
sensor_msgs/JointState on ``leader_topic``).
Publishes: ``/wam/teleop/command`` (geometry_msgs/TwistStamped, frame = robot base or TCP),
``/wam/teleop/joint_command`` (sensor_msgs/JointState, leader arm), ``/wam/teleop/gripper``
(GripperCommand), ``/wam/safety/estop`` (std_msgs/Bool). Calls ``/wam/set_mode`` for the
intervention toggle and HOLD. Commands go out only while the bridge reports TELEOP. With joy
and leader it says at start which topic it waits for and how to feed it, and warns every
``input_warning_period_s`` while nothing arrives (wall clock, so also before the sim runs).
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

from geometry_msgs.msg import TwistStamped
from rclpy.clock import Clock, ClockType
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool

from wam_ros_interfaces.msg import GripperCommand, SafetyStatus
from wam_ros.parameters import param
from wam_ros.robot import RobotConfig
from wam_ros.ros import qos
from wam_ros.ros.names import (ESTOP_TOPIC, SAFETY_STATUS_TOPIC, SET_MODE_SERVICE, TELEOP_GRIPPER_TOPIC,
                               TELEOP_JOINT_TOPIC, TELEOP_TWIST_TOPIC)
from wam_ros.ros.node import RobotNode, run_node
from wam_ros_interfaces.srv import SetMode
from wam_ros.teleop.devices import KeyboardReader, SpaceMouseReader
from wam_ros.teleop.input_watch import InputWatch, how_to_provide, keyboard_command
from wam_ros.teleop.mapping import (KEY_HELP, MODE_HOLD, MODE_TELEOP, AxesMapper, AxisMapping, ButtonMapping, KeyboardMapper,
                                    LeaderArmMapper, TeleopCommand, intervention_target)

DEVICES = ("keyboard", "joy", "spacemouse", "leader")
INPUT_WATCH_PERIOD_S = 0.1  # how often the input watch looks at the clock [s]


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    device: str = param("joy", "input device: keyboard, joy, spacemouse or leader")
    rate_hz: float = param(50.0, "rate of twist commands while in TELEOP [Hz]")
    frame: str = param("base", "twist frame: base (robot base frame) or tool (TCP frame)")
    linear_speed_m_s: float = param(0.1, "TCP speed at full deflection [m/s] (the bridge caps it too)")
    angular_speed_rad_s: float = param(0.4, "TCP angular speed at full deflection [rad/s]")
    deadband: float = param(0.1, "axis deflection ignored around the centre [0, 1)")
    gripper_speed_m_s: float = param(0.05, "gripper opening change while a gripper button is held [m/s]")
    key_timeout_s: float = param(0.6, "a key moves the arm this long after its last repeat [s]")
    key_gripper_step_m: float = param(0.01, "gripper opening change per g/h key press [m]")
    joy_topic: str = param("joy", "sensor_msgs/Joy topic of the joystick")
    joy_axes: list[int] = param([1, 0, 4, -1, -1, 3], "Joy axes for x, y, z, roll, pitch, yaw (-1: none)")
    joy_axis_signs: list[float] = param([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "sign per twist component")
    joy_buttons: list[int] = param([7, 1, 6, 5, 4], "Joy buttons: intervention, HOLD, ESTOP, gripper open, gripper close (-1: none)")
    spacemouse_buttons: list[int] = param([1, -1, -1, -1, 0], "SpaceMouse buttons, same order as joy_buttons")
    leader_topic: str = param("leader/joint_states", "sensor_msgs/JointState topic of the leader arm")
    leader_joint_names: list[str] = param([], "leader joints in follower order; empty: the follower's names")
    leader_offsets_rad: list[float] = param([], "added to the leader's joint positions, follower order; empty: none")
    input_warning_period_s: float = param(5.0, "joy, leader: while their topic is silent, say so this often [s, wall clock]")


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would stop the node at start-up (for ``wam-ros bringup --check``)."""
    if parameters.device not in DEVICES:
        return [f"device must be one of {', '.join(DEVICES)}, got {parameters.device!r}"]
    if parameters.device == "keyboard":
        return [f"device keyboard reads its process's terminal, and bringup gives its nodes none: disable teleop here and run "
                f"{keyboard_command(str(robot.path))}"]
    if parameters.device == "spacemouse" and importlib.util.find_spec("pyspacemouse") is None:
        return ["device spacemouse needs the pyspacemouse library (pip install pyspacemouse; it needs hidapi from the system)"]
    return []


class Teleop(RobotNode[Parameters]):
    """Reads one operator device and turns it into teleop commands and mode requests for the bridge."""

    def __init__(self) -> None:
        super().__init__("teleop", Parameters)
        p = self.params
        if p.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {p.device!r}")
        if p.frame not in ("base", "tool"):
            raise ValueError(f"frame must be base or tool, got {p.frame!r}")
        self.frame_id = self.robot.base_frame if p.frame == "base" else self.robot.tcp_frame
        period_s = 1.0 / p.rate_hz
        self.mode: int | None = None
        self.gripper_width_m: float | None = None
        self.twist_pub = self.create_publisher(TwistStamped, TELEOP_TWIST_TOPIC, qos.COMMANDS)
        self.gripper_pub = self.create_publisher(GripperCommand, TELEOP_GRIPPER_TOPIC, qos.COMMANDS)
        self.estop_pub = self.create_publisher(Bool, ESTOP_TOPIC, qos.COMMANDS)
        self.mode_client = self.create_client(SetMode, SET_MODE_SERVICE)
        self.create_subscription(SafetyStatus, SAFETY_STATUS_TOPIC, self._on_status, qos.LATCHED)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, qos.JOINT_STATES_IN)
        self.keyboard: KeyboardReader | None = None
        self.spacemouse: SpaceMouseReader | None = None
        self.joy: Joy | None = None
        buttons = p.spacemouse_buttons if p.device == "spacemouse" else p.joy_buttons
        if len(buttons) != 5:
            raise ValueError(f"button lists need 5 entries (intervention, hold, estop, gripper open, gripper close), got {buttons}")
        self.axes = AxesMapper(AxisMapping(tuple(p.joy_axes) if p.device == "joy" else (0, 1, 2, 3, 4, 5), tuple(p.joy_axis_signs)),
                               ButtonMapping(*buttons), p.linear_speed_m_s, p.angular_speed_rad_s, p.deadband,
                               p.gripper_speed_m_s, period_s)
        self.keys = KeyboardMapper(p.linear_speed_m_s, p.angular_speed_rad_s, p.key_gripper_step_m, p.key_timeout_s)
        if p.device == "keyboard":
            self.keyboard = KeyboardReader()
            print(f"teleop keyboard: {KEY_HELP}", flush=True)
        elif p.device == "spacemouse":
            self.spacemouse = SpaceMouseReader()
        elif p.device == "joy":
            self.create_subscription(Joy, p.joy_topic, self._on_joy, qos.SENSORS)
        else:
            self.leader = LeaderArmMapper(p.leader_joint_names or self.robot.arm.joint_names, self.robot.arm.joint_names, p.leader_offsets_rad)
            self.joint_pub = self.create_publisher(JointState, TELEOP_JOINT_TOPIC, qos.COMMANDS)
            self.create_subscription(JointState, p.leader_topic, self._on_leader, qos.SENSORS)
        if p.device != "leader":
            self.create_timer(period_s, self._on_timer)
        self.get_logger().info(f"teleop with {p.device} ({p.frame} frame) for {self.robot.name}")
        self.input_watch: InputWatch | None = None
        if p.device in ("joy", "leader"):
            topic = self.resolve_topic_name(p.joy_topic if p.device == "joy" else p.leader_topic)
            what = f"sensor_msgs/Joy on {topic}" if p.device == "joy" else f"sensor_msgs/JointState on {topic}"
            how = how_to_provide(p.device, p.robot_config)
            self.input_watch = InputWatch(what, how, p.input_warning_period_s, time.monotonic())
            self.get_logger().warning(self.input_watch.waiting())
            # Wall clock: on sim time a timer would wait for /clock, and the operator for nothing.
            self.create_timer(INPUT_WATCH_PERIOD_S, self._watch_input, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _on_status(self, msg: SafetyStatus) -> None:
        self.mode = msg.mode

    def _on_joint_states(self, msg: JointState) -> None:
        fingers = self.robot.gripper.joint_names
        if self.gripper_width_m is None and fingers and all(name in msg.name for name in fingers):
            self.gripper_width_m = float(self.robot.gripper.width_from_joint_positions(msg.position[msg.name.index(name)] for name in fingers))

    def _input_arrived(self) -> None:
        line = self.input_watch.arrived(time.monotonic())
        if line is not None:
            self.get_logger().info(line)

    def _watch_input(self) -> None:
        line = self.input_watch.poll(time.monotonic())
        if line is not None:
            self.get_logger().warning(line)

    def _on_joy(self, msg: Joy) -> None:
        self._input_arrived()
        self.joy = msg

    def _on_leader(self, msg: JointState) -> None:
        self._input_arrived()
        targets = self.leader.targets(msg.name, msg.position)
        if targets is None:
            self.get_logger().warning("leader joint state without every leader joint or with non-finite values: ignored",
                                      throttle_duration_sec=5.0)
            return
        if self.mode == MODE_TELEOP:
            command = JointState(name=list(self.robot.arm.joint_names), position=targets.tolist())
            command.header.stamp = self.get_clock().now().to_msg()
            self.joint_pub.publish(command)

    def _sample(self) -> TeleopCommand:
        now_s = self.get_clock().now().nanoseconds * 1e-9
        if self.keyboard is not None:
            return self.keys.command(self.keyboard.read(), now_s)
        if self.spacemouse is not None:
            return self.axes.command(*self.spacemouse.read())
        if self.joy is None:
            return TeleopCommand()
        return self.axes.command(self.joy.axes, self.joy.buttons)

    def _on_timer(self) -> None:
        command = self._sample()
        if command.estop:
            self.estop_pub.publish(Bool(data=True))
        if command.hold:
            self._request(MODE_HOLD, "teleop: HOLD pressed")
        if command.intervention and self.mode is not None:
            target = intervention_target(self.mode)
            if target is None:
                self.get_logger().warning("intervention ignored: ESTOP is latched (reset it with SetMode reset_estop)")
            else:
                self._request(target, "teleop: intervention")
        if self.mode != MODE_TELEOP:
            return
        twist = TwistStamped()
        twist.header.stamp, twist.header.frame_id = self.get_clock().now().to_msg(), self.frame_id
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in command.linear_m_s)
        twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = (float(v) for v in command.angular_rad_s)
        self.twist_pub.publish(twist)
        gripper = self.robot.gripper
        if command.gripper_delta_m and gripper.joint_names:
            start = self.gripper_width_m if self.gripper_width_m is not None else gripper.width_max_m
            self.gripper_width_m = min(max(start + command.gripper_delta_m, gripper.width_min_m), gripper.width_max_m)
            message = GripperCommand(width_m=self.gripper_width_m, force_n=gripper.force_max_n / 2)
            message.header.stamp = twist.header.stamp
            self.gripper_pub.publish(message)

    def _request(self, mode: int, reason: str) -> None:
        if not self.mode_client.service_is_ready():
            self.get_logger().warning(f"{SET_MODE_SERVICE} not available: {reason} not sent")
            return
        future = self.mode_client.call_async(SetMode.Request(mode=mode, reason=reason, requester=self.get_name()))
        future.add_done_callback(self._on_mode_response)

    def _on_mode_response(self, future) -> None:
        response = future.result()
        if response is not None and not response.accepted:
            self.get_logger().warning(f"mode request refused: {response.message}")

    def destroy_node(self) -> None:
        if self.keyboard is not None:
            self.keyboard.close()
        if self.spacemouse is not None:
            self.spacemouse.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(Teleop, args)


if __name__ == "__main__":
    raise SystemExit(main())
