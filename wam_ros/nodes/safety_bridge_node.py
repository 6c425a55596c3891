"""Safety bridge: the only path to the arm. ROS wiring around :class:`wam_ros.control.bridge.SafetyBridgeCore`.

Subscribes: ``/joint_states`` (sensor_msgs/JointState, best effort: any driver's QoS),
``/wam/action_chunk`` (ActionChunk), ``/wam/teleop/command`` (geometry_msgs/TwistStamped),
``/wam/teleop/joint_command`` (sensor_msgs/JointState), ``/wam/teleop/gripper`` (GripperCommand),
``/wam/safety/estop`` (std_msgs/Bool: true latches ESTOP; reliable and best effort).
Publishes: the backend's command topics (robot config ``backend:``), ``/wam/safety/status``
(SafetyStatus, latched). Sends the gripper's control_msgs/action/GripperCommand goals where the
robot config's ``gripper.interface`` is ``action``. Serves ``/wam/set_mode`` (SetMode). Watches the
graph: extra publishers on the command inputs, any other publisher on the backend command topics,
the publishers of ``/joint_states``. Policy and behaviour: docs/safety.md.
"""
from __future__ import annotations

import array
import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from builtin_interfaces.msg import Duration
from control_msgs.action import GripperCommand as GripperCommandAction
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.action import ActionClient
from rclpy.action.client import ClientGoalHandle
from rclpy.duration import Duration as RclpyDuration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.topic_endpoint_info import TopicEndpointInfo
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from wam_ros.control.bridge import BridgeSettings, Output, SafetyBridgeCore
from wam_ros.control.chunks import ChunkInput
from wam_ros.control.gripper import GripperGoal, GripperResult
from wam_ros.control.modes import EstopLatch, Mode
from wam_ros_interfaces.msg import ActionChunk, GripperCommand, ImpedanceGains, SafetyStatus
from wam_ros.parameters import param
from wam_ros.robot import RobotConfig
from wam_ros.ros import qos
from wam_ros.ros.names import (ACTION_CHUNK_TOPIC, ESTOP_TOPIC, JOINT_STATES_TOPIC, SAFETY_STATUS_TOPIC, SET_MODE_SERVICE, TELEOP_GRIPPER_TOPIC,
                               TELEOP_JOINT_TOPIC, TELEOP_TWIST_TOPIC)
from wam_ros.ros.conversions import seconds_to_time, time_to_seconds
from wam_ros.ros.node import RobotNode, run_node
from wam_ros_interfaces.srv import SetMode

STATUS_TOPIC = SAFETY_STATUS_TOPIC
#: On shutdown, a clock that has not moved for this long [s, wall] means the simulation ended.
SIM_CLOCK_STOPPED_S = 0.5


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    output_rate_hz: float = param(250.0, "rate of arm commands to the backend [Hz], at least 250")
    joint_state_timeout_s: float = param(0.1, "joint states older than this trip HOLD in TELEOP/AUTONOMY [s]")
    action_chunk_timeout_s: float = param(0.0, "HOLD this long after the last action of the newest chunk [s]")
    inference_timeout_s: float = param(1.0, "HOLD when no chunk arrived for this long in AUTONOMY [s]")
    teleop_timeout_s: float = param(0.1, "a teleop twist or leader-arm joint target older than this brakes the arm (TELEOP stays) [s]")
    max_future_stamp_s: float = param(0.05, "chunks stamped further ahead than this are refused [s]")
    teleop_angular_speed_max_rad_s: float = param(0.5, "cap on the teleop twist's angular speed [rad/s]")
    ik_damping: float = param(0.05, "damping of the least-squares twist-to-joint-velocity solve")
    max_tracking_error_rad: float = param(0.5, "measured-vs-commanded joint error that trips HOLD [rad]; 0 disables")
    gripper_resend_period_s: float = param(0.1, "resend an unchanged gripper command this often while commanding [s]")
    gripper_force_n: float = param(20.0, "grasp force sent with gripper commands [N], clipped into the gripper's [force_min_n, force_max_n]")
    estop_latch_file: str = param("", "file that keeps ESTOP latched across restarts; empty: $ROS_HOME/wam_ros/estop_<robot>.json")
    status_rate_hz: float = param(10.0, "SafetyStatus rate [Hz]; mode changes publish at once")
    graph_check_period_s: float = param(0.2, "how often the command inputs, the backend command topics and /joint_states are checked for other publishers [s]")
    realtime_priority: int = param(0, "SCHED_FIFO priority 1..99 of the output loop's thread (needs CAP_SYS_NICE); 0: normal scheduling")
    shutdown_brake_timeout_s: float = param(3.0, "on SIGINT/SIGTERM, wait at most this long for the braked arm to stand still before exiting [s, wall]")


UNKNOWN_NODE_NAME = "_NODE_NAME_UNKNOWN_"  # rmw's name for an endpoint whose node is not known yet


def _node_name(endpoint: TopicEndpointInfo) -> str:
    return f"{endpoint.node_namespace.rstrip('/')}/{endpoint.node_name}"


def _gid(info: dict | None) -> str:
    """Publisher GID of a received message as hex (empty when the middleware gives none)."""
    gid = (info or {}).get("publisher_gid") or {}
    return bytes(gid.get("data", b"")).hex()


class SafetyBridge(RobotNode[Parameters]):
    """Validates every command source against the robot's limits and streams guarded targets to the backend."""

    def __init__(self) -> None:
        super().__init__("safety_bridge", Parameters)
        p = self.params
        self._set_realtime_priority(p.realtime_priority)
        settings = BridgeSettings(
            output_rate_hz=p.output_rate_hz, joint_state_timeout_s=p.joint_state_timeout_s,
            action_chunk_timeout_s=p.action_chunk_timeout_s, inference_timeout_s=p.inference_timeout_s,
            teleop_timeout_s=p.teleop_timeout_s, max_future_stamp_s=p.max_future_stamp_s,
            teleop_angular_speed_max_rad_s=p.teleop_angular_speed_max_rad_s, ik_damping=p.ik_damping,
            max_tracking_error_rad=p.max_tracking_error_rad, gripper_resend_period_s=p.gripper_resend_period_s,
            gripper_force_n=p.gripper_force_n,
        )
        latch_path = Path(p.estop_latch_file).expanduser() if p.estop_latch_file else EstopLatch.default_path(self.robot.name)
        self.core = SafetyBridgeCore(self._in_namespace(self.robot), settings, EstopLatch(latch_path),
                                     joint_states_topic=self.resolve_topic_name(JOINT_STATES_TOPIC))
        backend = self.robot.backend
        self.cartesian = backend.type == "cartesian_impedance"
        if self.cartesian:
            self.pose_pub = self.create_publisher(PoseStamped, backend.target_pose_topic, qos.COMMANDS)
            self.gains_pub = self.create_publisher(ImpedanceGains, backend.gains_topic, qos.LATCHED)
        else:
            self.trajectory_pub = self.create_publisher(JointTrajectory, backend.joint_trajectory_topic, qos.COMMANDS)
            # One message reused every cycle: header.stamp zero = start at once, one point one period ahead.
            nanoseconds = int(round(settings.period_s * 1e9))
            point = JointTrajectoryPoint(time_from_start=Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000))
            self._trajectory = JointTrajectory(joint_names=list(self.robot.arm.joint_names), points=[point])
        self.gripper_pub = self.create_publisher(GripperCommand, backend.gripper_command_topic, qos.COMMANDS)
        self.gripper_client = None if self.core.gripper_goals is None else \
            ActionClient(self, GripperCommandAction, self.robot.gripper.action_name)
        self._gripper_handles: dict[int, ClientGoalHandle] = {}  # accepted goals by their GripperGoal.seq
        # Only this node may publish here: any other publisher bypasses every limit.
        self.output_topics = [publisher.topic_name for publisher in (
            (self.pose_pub, self.gains_pub) if self.cartesian else (self.trajectory_pub,)) + (self.gripper_pub,)]
        self.status_pub = self.create_publisher(SafetyStatus, STATUS_TOPIC, qos.LATCHED)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_states, qos.SAFETY_INPUTS)
        self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self._on_chunk, qos.COMMANDS)
        self.create_subscription(TwistStamped, TELEOP_TWIST_TOPIC, self._on_twist, qos.COMMANDS)
        self.create_subscription(JointState, TELEOP_JOINT_TOPIC, self._on_teleop_joints, qos.COMMANDS)
        self.create_subscription(GripperCommand, TELEOP_GRIPPER_TOPIC, self._on_teleop_gripper, qos.COMMANDS)
        # Reliable where the publisher is (no ESTOP lost), best effort for the others; a best-effort
        # publisher is incompatible with the reliable reader only, which is no fault: not logged.
        self.create_subscription(Bool, ESTOP_TOPIC, self._on_estop, qos.COMMANDS,
                                 event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda event: None))
        self.create_subscription(Bool, ESTOP_TOPIC, self._on_estop, qos.SAFETY_INPUTS)
        self.create_service(SetMode, SET_MODE_SERVICE, self._on_set_mode)
        self.command_topics = {
            ACTION_CHUNK_TOPIC: SafetyBridgeCore.CHUNK_TOPIC, TELEOP_TWIST_TOPIC: SafetyBridgeCore.TWIST_TOPIC,
            TELEOP_JOINT_TOPIC: SafetyBridgeCore.JOINT_TOPIC, TELEOP_GRIPPER_TOPIC: SafetyBridgeCore.GRIPPER_TOPIC,
        }
        self._publishers_seen: dict[str, tuple[str, ...]] = {}
        self._publisher_names: dict[str, str] = {}
        self._joint_states: dict[str, tuple[JointState, float]] = {}  # publisher GID -> newest message, arrival time
        self._unnamed_sources: dict[str, str] = {}  # publisher GID -> topic, for GIDs the graph did not list yet
        self._last_mode = self.core.mode
        self._shutdown_requested = threading.Event()
        self._standstill = threading.Event()
        self.create_timer(settings.period_s, self._on_output_timer)
        self.create_timer(1.0 / p.status_rate_hz, self._publish_status)
        self.create_timer(p.graph_check_period_s, self._check_publishers)
        self._publish_status()
        if self.cartesian:
            self._publish_gains()
        if self.core.mode == Mode.ESTOP:
            self.get_logger().warning(f"starting in ESTOP (latched in {latch_path}): {self.core.last_stop_reason}")
        self.get_logger().info(
            f"safety bridge for {self.robot.name}: backend {backend.type}, {p.output_rate_hz:g} Hz, mode {self.core.mode.name}")

    def _in_namespace(self, robot: RobotConfig) -> RobotConfig:
        """The robot config with a relative ``safety.joint_state_publisher`` resolved in this node's namespace."""
        wanted = robot.safety.joint_state_publisher
        if not wanted or wanted.startswith("/"):
            return robot
        resolved = f"{self.get_namespace().rstrip('/')}/{wanted}"
        return dataclasses.replace(robot, safety=dataclasses.replace(robot.safety, joint_state_publisher=resolved))

    def _set_realtime_priority(self, priority: int) -> None:
        """Run this thread (the executor: output loop and watchdogs) under SCHED_FIFO, as ros2_control does."""
        if priority == 0:
            return
        if not 1 <= priority <= 99:
            raise ValueError(f"realtime_priority must be 0 or 1..99, got {priority}")
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except PermissionError:
            self.get_logger().warning(f"realtime_priority {priority} not permitted (needs CAP_SYS_NICE or an rtprio limit); "
                                      "running with normal scheduling")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ inputs
    def _on_joint_states(self, msg: JointState, info: dict) -> None:
        # Kept raw: the output cycle converts only the newest one of each publisher (joint states
        # come at up to 1 kHz; a second publisher of the arm's joints must not go unseen).
        self._joint_states[_gid(info)] = (msg, self.now_s())

    def _take_joint_state(self) -> None:
        for gid, (msg, received_s) in self._joint_states.items():
            self.core.on_joint_state(msg.name, msg.position, msg.velocity, received_s, time_to_seconds(msg.header.stamp),
                                     gid, self._publisher_name(JOINT_STATES_TOPIC, gid))
        self._joint_states.clear()

    def _on_chunk(self, msg: ActionChunk, info: dict) -> None:
        chunk = ChunkInput(
            stamp_s=time_to_seconds(msg.header.stamp), joint_names=msg.joint_names, control_period_s=msg.control_period_s,
            horizon=msg.horizon, joint_positions=msg.joint_positions, gripper_widths=msg.gripper_widths, chunk_id=msg.chunk_id,
        )
        self.core.on_chunk(chunk, self.now_s(), _gid(info), self._publisher_name(ACTION_CHUNK_TOPIC, _gid(info)))
        self._publish_if_mode_changed()

    def _on_twist(self, msg: TwistStamped, info: dict) -> None:
        linear, angular = msg.twist.linear, msg.twist.angular
        self.core.on_teleop_twist((linear.x, linear.y, linear.z), (angular.x, angular.y, angular.z), msg.header.frame_id,
                                  self.now_s(), _gid(info), self._publisher_name(TELEOP_TWIST_TOPIC, _gid(info)))
        self._publish_if_mode_changed()

    def _on_teleop_joints(self, msg: JointState, info: dict) -> None:
        self.core.on_teleop_joints(msg.name, msg.position, self.now_s(), _gid(info), self._publisher_name(TELEOP_JOINT_TOPIC, _gid(info)))
        self._publish_if_mode_changed()

    def _on_teleop_gripper(self, msg: GripperCommand, info: dict) -> None:
        self.core.on_teleop_gripper(msg.width_m, self.now_s(), _gid(info), self._publisher_name(TELEOP_GRIPPER_TOPIC, _gid(info)))

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and self.core.mode != Mode.ESTOP:
            self.core.request_mode(Mode.ESTOP, f"{ESTOP_TOPIC}", False, self.now_s(), requester="estop_topic")
            self._publish_status()

    def _on_set_mode(self, request: SetMode.Request, response: SetMode.Response) -> SetMode.Response:
        self._take_joint_state()
        result = self.core.request_mode(request.mode, request.reason, request.reset_estop, self.now_s(), request.requester)
        response.accepted, response.mode, response.message = result.accepted, int(result.mode), result.message
        asked = f"set_mode {request.mode} by {request.requester or 'an unnamed requester'} ({request.reason!r})"
        if result.accepted:
            self.get_logger().info(f"{asked} accepted: {result.message}")
        else:
            self.get_logger().warning(f"{asked} refused: {result.message}")
        self._publish_status()
        return response

    def _publisher_name(self, topic: str, gid: str) -> str:
        """Node name of the publisher that sent a message (looked up by GID in the graph, cached).

        Data can arrive before the graph lists its publisher: the name is then "" until
        :meth:`_check_publishers` finds it and names the source in the core.
        """
        if gid not in self._publisher_names:
            self._refresh_publisher_names(topic)
        if gid not in self._publisher_names:
            self._unnamed_sources[gid] = topic
            return ""
        return self._publisher_names[gid]

    def _refresh_publisher_names(self, topic: str) -> dict[str, str]:
        """Publishers on ``topic`` (GID -> node name) as the graph lists them; named ones are cached."""
        publishers = {}
        for endpoint in self.get_publishers_info_by_topic(topic):
            gid = bytes(endpoint.endpoint_gid).hex()
            # The graph can list an endpoint before its node's name arrives (DDS discovery and
            # ROS discovery info are separate): such a name is not cached, so it is looked up again.
            publishers[gid] = "" if endpoint.node_name == UNKNOWN_NODE_NAME else _node_name(endpoint)
            if publishers[gid]:
                self._publisher_names[gid] = publishers[gid]
        return publishers

    def _check_publishers(self) -> None:
        now = self.now_s()
        for gid, topic in list(self._unnamed_sources.items()):
            self._refresh_publisher_names(topic)
            if gid in self._publisher_names:
                self.core.name_source(gid, self._publisher_names[gid])
                del self._unnamed_sources[gid]
        for topic, name in self.command_topics.items():
            publishers = tuple(sorted(_node_name(e) for e in self.get_publishers_info_by_topic(topic)))
            if publishers != self._publishers_seen.get(topic, ()):
                self._publishers_seen[topic] = publishers
                self.core.observe_publishers(name, publishers)
        me = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        for topic in self.output_topics:
            publishers = self._refresh_publisher_names(topic)
            ours = [gid for gid, name in publishers.items() if name == me][:1]  # a second one is another node of this name
            self.core.observe_output_topic(topic, {gid: name for gid, name in publishers.items() if gid not in ours}, now)
        self.core.observe_joint_state_publishers(self._refresh_publisher_names(JOINT_STATES_TOPIC), now)
        self._publish_if_mode_changed()

    # ------------------------------------------------------------------ outputs
    def _on_output_timer(self) -> None:
        self._take_joint_state()
        now = self.now_s()
        # Read once: controlled_stop() sets it from another thread, possibly halfway through this cycle.
        stopping = self._shutdown_requested.is_set() and not self._standstill.is_set()
        if stopping:
            self.core.stop_for_shutdown("shutdown: the bridge is exiting", now)
        output = self.core.step(now)
        if output is not None:
            self._send(output)
        if self._gripper_handles:
            self._cancel_abandoned_gripper_goals()
        self._publish_if_mode_changed()
        if stopping and self.core.at_standstill:
            self._publish_status()
            self._standstill.set()

    def controlled_stop(self) -> None:
        """SIGINT/SIGTERM (called by run_node while the executor still spins): brake a moving arm
        to standstill in HOLD along the jerk-limited profile, publish the status, then return."""
        started = time.monotonic()
        self.get_logger().info(f"stopping: braking to standstill in HOLD (mode {self.core.mode.name}), then exiting")
        self._shutdown_requested.set()
        clock_s, clock_moved = self.now_s(), time.monotonic()
        while not self._standstill.wait(0.05):
            waited = time.monotonic() - started
            if self.now_s() != clock_s:
                clock_s, clock_moved = self.now_s(), time.monotonic()
            elif time.monotonic() - clock_moved > SIM_CLOCK_STOPPED_S:
                self.get_logger().info("the clock stopped (the simulation has ended): nothing left to brake")
                return
            if waited > self.params.shutdown_brake_timeout_s:
                self.get_logger().error(f"the arm was not at standstill after {self.params.shutdown_brake_timeout_s:g} s; "
                                        "exiting anyway (the backend holds its last target)")
                return
        self.status_pub.wait_for_all_acked(RclpyDuration(seconds=0.5))
        self.get_logger().info(f"stopped in {self.core.mode.name} after {time.monotonic() - started:.2f} s")

    def _send(self, output: Output) -> None:
        stamp = seconds_to_time(output.time_s)
        if self.cartesian:
            position, rotation = self.core.kinematics.forward(output.position)
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = stamp, self.robot.base_frame
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
            x, y, z, w = Rotation.from_matrix(rotation).as_quat()
            pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = x, y, z, w
            self.pose_pub.publish(pose)
        else:
            point = self._trajectory.points[0]
            point.positions = array.array("d", output.position.tobytes())
            point.velocities = array.array("d", output.velocity.tobytes())
            self.trajectory_pub.publish(self._trajectory)
        if output.gripper_width_m is not None:
            command = GripperCommand(width_m=float(output.gripper_width_m), force_n=self.core.gripper_force_n)
            command.header.stamp = stamp
            self.gripper_pub.publish(command)
        if output.gripper_goal is not None:
            self._send_gripper_goal(output.gripper_goal)

    # ------------------------------------------------------------------ gripper action
    def _send_gripper_goal(self, goal: GripperGoal) -> None:
        assert self.gripper_client is not None
        if not self.gripper_client.server_is_ready():
            self.core.on_gripper_not_sent(goal.seq, "not sent: no action server", self.now_s())
            return
        message = GripperCommandAction.Goal()
        message.command.position, message.command.max_effort = float(goal.position), float(goal.max_effort_n)
        self.gripper_client.send_goal_async(message).add_done_callback(lambda future: self._on_gripper_goal_response(goal.seq, future))

    def _on_gripper_goal_response(self, seq: int, future) -> None:
        handle: ClientGoalHandle = future.result()
        self.core.on_gripper_response(seq, handle.accepted, self.now_s())
        if handle.accepted:
            self._gripper_handles[seq] = handle
            handle.get_result_async().add_done_callback(lambda done: self._on_gripper_result(seq, done))
        self._publish_if_mode_changed()

    def _on_gripper_result(self, seq: int, future) -> None:
        self._gripper_handles.pop(seq, None)
        response = future.result()  # GetResult response: status and result
        r = response.result
        self.core.on_gripper_result(seq, GripperResult(response.status, r.position, r.effort, r.stalled, r.reached_goal), self.now_s())
        self._publish_if_mode_changed()

    def _cancel_abandoned_gripper_goals(self) -> None:
        """Cancel accepted goals the core gave up on (timed out): the gripper stops where it is."""
        flight = self.core.gripper_goals.in_flight if self.core.gripper_goals is not None else None
        for seq in [seq for seq in self._gripper_handles if flight is None or seq != flight.seq]:
            self._gripper_handles.pop(seq).cancel_goal_async()

    def _publish_gains(self) -> None:
        gains = self.robot.gains
        msg = ImpedanceGains(stiffness=list(gains.cartesian_stiffness), damping=list(gains.cartesian_damping),
                             nullspace_stiffness=gains.nullspace_stiffness_nm_rad)
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), self.robot.base_frame
        self.gains_pub.publish(msg)

    def _publish_if_mode_changed(self) -> None:
        if self.core.mode != self._last_mode:
            self._publish_status()

    def _publish_status(self) -> None:
        now = self.now_s()
        if self.cartesian and self.core.mode != self._last_mode and self.core.mode in (Mode.TELEOP, Mode.AUTONOMY, Mode.HOLD):
            self._publish_gains()
        if self.core.mode != self._last_mode:
            self.get_logger().info(f"mode {self._last_mode.name} -> {self.core.mode.name}"
                                   + (f": {self.core.last_stop_reason}" if self.core.mode in (Mode.HOLD, Mode.ESTOP) else ""))
        self._last_mode = self.core.mode
        status = self.core.status(now)
        msg = SafetyStatus(
            mode=int(status.mode), mode_name=status.mode.name, backend=self.robot.backend.type,
            active_limits=status.active_limits, violations=status.violations, violation_count=status.violation_count,
            action_chunk_age_s=status.action_chunk_age_s, joint_state_age_s=status.joint_state_age_s,
            teleop_command_age_s=status.teleop_command_age_s, watchdogs_ok=status.watchdogs_ok,
            last_stop_reason=status.last_stop_reason, command_source=status.command_source,
            mode_requester=status.mode_requester, mode_reason=status.mode_reason,
        )
        msg.header.stamp = seconds_to_time(now)
        msg.mode_stamp = seconds_to_time(status.mode_stamp_s)
        msg.last_stop_stamp = seconds_to_time(status.last_stop_stamp_s)
        self.status_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(SafetyBridge, args)


if __name__ == "__main__":
    raise SystemExit(main())
