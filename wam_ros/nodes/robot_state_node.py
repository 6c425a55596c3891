"""Robot description and TF, where robot_state_publisher is not installed (same topics, types and QoS).

Publishes ``/robot_description`` (std_msgs/String, the URDF text; reliable, transient local),
``/tf_static`` (tf2_msgs/TFMessage, latched: the URDF's fixed joints, the cameras'
extrinsics from the robot config, and ``world_frame`` above the URDF's root link) and ``/tf``
(tf2_msgs/TFMessage: the movable joints from ``/joint_states``, stamped like the joint state, at
most ``publish_rate_hz``). The transforms are computed with pinocchio in
wam_ros.control.frames. With ``publish_urdf`` false (a robot driver that runs
robot_state_publisher itself) only the cameras and the world frame are published. On a ROS 2
install launch/bringup.launch.py starts robot_state_publisher and tf2_ros'
static_transform_publisher instead (wam_ros.bringup.standard_robot_state).
"""
from __future__ import annotations

from dataclasses import dataclass

from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from wam_ros.control.frames import RateLimit, Transform, UrdfFrames, camera_transforms, world_transform
from wam_ros.parameters import param
from wam_ros.robot import RobotConfig
from wam_ros.ros import qos
from wam_ros.ros.conversions import time_to_seconds
from wam_ros.ros.node import RobotNode, run_node

#: tf2_ros' DynamicBroadcasterQoS (reliable, volatile, 100 deep); /tf_static and
#: /robot_description use LATCHED, like tf2_ros' StaticBroadcasterQoS and robot_state_publisher.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST)


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup); its URDF and cameras give the frames")
    publish_urdf: bool = param(True, "publish /robot_description and the URDF's frames; false where the robot's driver runs "
                                     "robot_state_publisher already: then only the cameras and world_frame")
    publish_rate_hz: float = param(50.0, "most /tf messages per second, by joint-state stamps; 0: one per joint state")
    world_frame: str = param("world", "frame above the URDF's root link on /tf_static; empty: none")
    root_in_world_xyz_m: list[float] = param([0.0, 0.0, 0.0], "position of the URDF's root link in world_frame [m]")
    root_in_world_quat_xyzw: list[float] = param([0.0, 0.0, 0.0, 1.0], "orientation of the URDF's root link in world_frame")


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Problems that would stop the node at start-up (for ``wam-ros bringup --check``)."""
    try:
        static_transforms(parameters, robot, UrdfFrames(robot.urdf_path))
    except ValueError as error:
        return [str(error)]
    return []


def static_transforms(parameters: Parameters, robot: RobotConfig, frames: UrdfFrames) -> list[Transform]:
    """Everything on /tf_static: the world frame, the URDF's fixed joints (with publish_urdf), the cameras."""
    transforms = world_transform(parameters.world_frame, frames.root_link, parameters.root_in_world_xyz_m, parameters.root_in_world_quat_xyzw)
    if parameters.publish_urdf:
        transforms += frames.fixed_transforms()
    return transforms + camera_transforms(robot, frames.links)


def _message(transform: Transform, stamp: Time) -> TransformStamped:
    message = TransformStamped()
    message.header.stamp = stamp
    message.header.frame_id = transform.parent
    message.child_frame_id = transform.child
    t, r = message.transform.translation, message.transform.rotation
    t.x, t.y, t.z = transform.translation_m
    r.x, r.y, r.z, r.w = transform.rotation_xyzw
    return message


class RobotState(RobotNode[Parameters]):
    """URDF on /robot_description, fixed frames on /tf_static, joint frames on /tf."""

    def __init__(self) -> None:
        super().__init__("robot_state", Parameters)
        p, robot = self.params, self.robot
        self.frames = UrdfFrames(robot.urdf_path)
        self.rate = RateLimit(p.publish_rate_hz)
        static = static_transforms(p, robot, self.frames)
        self.static_pub = self.create_publisher(TFMessage, "tf_static", qos.LATCHED)
        stamp = self.get_clock().now().to_msg()
        self.static_pub.publish(TFMessage(transforms=[_message(t, stamp) for t in static]))
        summary = f"{robot.name}: {len(static)} static frames on /tf_static"
        if p.publish_urdf:
            self.description_pub = self.create_publisher(String, "robot_description", qos.LATCHED)
            self.description_pub.publish(String(data=self.frames.urdf_text))
            self.tf_pub = self.create_publisher(TFMessage, "tf", TF_QOS)
            self.create_subscription(JointState, "joint_states", self._on_joint_states, qos.JOINT_STATES_IN)
            rate = "every joint state" if p.publish_rate_hz == 0 else f"at most {p.publish_rate_hz:g} Hz"
            summary += (f", {robot.urdf_path.name} on /robot_description, {len(self.frames.movable_joints)} joint frames "
                        f"on /tf from /joint_states ({rate})")
        self.get_logger().info(summary)

    def _on_joint_states(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            self.get_logger().warning("joint state with names and positions of different lengths: ignored", throttle_duration_sec=5.0)
            return
        if not self.rate.due(time_to_seconds(msg.header.stamp)):
            return
        transforms = self.frames.moving_transforms(dict(zip(msg.name, msg.position)))
        if transforms:
            self.tf_pub.publish(TFMessage(transforms=[_message(t, msg.header.stamp) for t in transforms]))


def main(args: list[str] | None = None) -> int:
    return run_node(RobotState, args)


if __name__ == "__main__":
    raise SystemExit(main())
