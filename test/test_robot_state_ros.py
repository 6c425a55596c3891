"""The robot_state node beside the sim, as real processes: /tf, /tf_static and /robot_description
read back the way a tf2 consumer reads them, against our kinematics and the robot config."""
from __future__ import annotations

import signal
import struct
import time

import numpy as np
import pytest
from control_msgs.action import GripperCommand
from geometry_msgs.msg import TransformStamped
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import wait_until
from test_robot_frames import compose
from wam_ros.control.frames import Transform
from wam_ros.control.kinematics import ChainKinematics
from wam_ros.nodes.robot_state_node import TF_QOS
from wam_ros.robot import load_robot_config, robot_config_path
from wam_ros.ros import qos
from wam_ros.ros.conversions import time_to_seconds

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
TOLERANCE_M = 1e-6
TF_RATE_HZ = 50.0


def transform(message: TransformStamped) -> Transform:
    t, r = message.transform.translation, message.transform.rotation
    return Transform(message.header.frame_id, message.child_frame_id, (t.x, t.y, t.z), (r.x, r.y, r.z, r.w))


def stamp_of(serialized: bytes) -> float:
    """header.stamp of a serialized JointState (CDR: 4-byte encapsulation, then int32 sec, uint32 nanosec)."""
    sec, nanosec = struct.unpack_from("<iI", serialized, 4)
    return sec + nanosec * 1e-9


def assert_pose(got: np.ndarray, position: np.ndarray, rotation: np.ndarray, what: str) -> None:
    assert np.linalg.norm(got[:3, 3] - position) < TOLERANCE_M, f"{what}: {got[:3, 3]} vs {position}"
    assert np.abs(got[:3, :3] - rotation).max() < TOLERANCE_M, f"{what}: rotation {got[:3, :3]} vs {rotation}"


def test_tf_and_robot_description_match_the_kinematics_and_the_config(processes, ros):
    path = str(robot_config_path("panda_sim"))
    processes.start_node("sim", robot_config=path, real_time_factor=1.0)
    processes.start_node("robot_state", robot_config=path, publish_rate_hz=TF_RATE_HZ, use_sim_time=True)
    joint_states = ros.collect(JointState, "/joint_states", qos.SENSORS, raw=True)
    tf_messages = ros.collect(TFMessage, "/tf", TF_QOS)
    static = ros.collect(TFMessage, "/tf_static", qos.LATCHED)
    wait_until(lambda: static and len(tf_messages) > 5, 90.0, "/tf_static and /tf from the robot_state node",
               detail=lambda: processes.log("robot_state")[-2000:])

    # The arm and the fingers move, so the frames are checked away from home too.
    trajectory = ros.node.create_publisher(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS)
    gripper = ActionClient(ros.node, GripperCommand, ROBOT.gripper.action_name)
    ros.wait_for_subscribers(trajectory, timeout_s=20.0)
    assert gripper.wait_for_server(timeout_sec=20.0)
    target = np.array(ROBOT.arm.home_rad) + np.array([0.4, -0.3, 0.3, 0.4, -0.4, 0.3, 0.5])
    message = JointTrajectory(joint_names=list(ROBOT.arm.joint_names))
    message.points = [JointTrajectoryPoint(positions=[float(v) for v in target])]
    message.points[0].time_from_start.sec = 2
    trajectory.publish(message)
    goal = GripperCommand.Goal()
    goal.command.position, goal.command.max_effort = ROBOT.gripper.position_from_width(0.03), 20.0
    gripper.send_goal_async(goal)
    first = len(tf_messages)
    wait_until(lambda: len(tf_messages) > first + 1.5 * TF_RATE_HZ, 60.0, "1.5 s of /tf while the arm moves")

    (static_message,) = static
    static_transforms = [transform(t) for t in static_message.transforms]
    assert sorted((t.parent, t.child) for t in static_transforms) == sorted(
        [("world", "panda_link0"), ("panda_link7", "panda_link8"), ("panda_link8", "panda_hand"), ("panda_hand", "panda_hand_tcp")]
        + [(c.parent_frame, c.frame_id) for c in ROBOT.cameras])

    kinematics = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, ROBOT.arm.joint_names)
    hand = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, "panda_hand", ROBOT.arm.joint_names)
    wrist = ROBOT.camera("wrist")
    wrist_in_hand = Transform("panda_hand", wrist.frame_id, wrist.extrinsics_xyz_m, wrist.extrinsics_quat_xyzw).matrix()
    states = {round(stamp_of(raw), 6): raw for raw in list(joint_states)}
    checked, moving = 0, False
    stamps = []
    for tf in list(tf_messages)[first:]:
        stamp = time_to_seconds(tf.transforms[0].header.stamp)
        stamps.append(stamp)
        assert {time_to_seconds(t.header.stamp) for t in tf.transforms} == {stamp}  # one joint state per message
        assert sorted(t.child_frame_id for t in tf.transforms) == sorted(
            [f"panda_link{i}" for i in range(1, 8)] + ["panda_leftfinger", "panda_rightfinger"])
        raw = states.get(round(stamp, 6))
        if raw is None:
            continue  # this process missed that joint state
        state = deserialize_message(raw, JointState)
        positions = dict(zip(state.name, state.position))
        q = np.array([positions[name] for name in ROBOT.arm.joint_names])
        moving |= bool(np.abs(q - ROBOT.arm.home_rad).max() > 0.05)
        frames = static_transforms + [transform(t) for t in tf.transforms]
        assert_pose(compose(frames, "panda_link0", "panda_hand_tcp"), *kinematics.forward(q), "TCP")
        hand_position, hand_rotation = hand.forward(q)
        base_to_hand = np.eye(4)
        base_to_hand[:3, :3], base_to_hand[:3, 3] = hand_rotation, hand_position
        expected = base_to_hand @ wrist_in_hand
        assert_pose(compose(frames, "panda_link0", wrist.frame_id), expected[:3, 3], expected[:3, :3], "wrist camera")
        fingers = {t.child: t for t in frames if t.parent == "panda_hand"}
        assert abs(fingers["panda_leftfinger"].translation_m[1] - positions["panda_finger_joint1"]) < TOLERANCE_M
        assert abs(fingers["panda_rightfinger"].translation_m[1] + positions["panda_finger_joint2"]) < TOLERANCE_M
        checked += 1
    assert checked >= 20 and moving, (checked, moving)
    assert min(np.diff(stamps)) >= 1.0 / TF_RATE_HZ - 1e-6  # publish_rate_hz, by joint-state stamps

    front = ROBOT.camera("front")
    front_pose = compose(static_transforms, "panda_link0", front.frame_id)
    expected = Transform("panda_link0", front.frame_id, front.extrinsics_xyz_m, front.extrinsics_quat_xyzw).matrix()
    assert_pose(front_pose, expected[:3, 3], expected[:3, :3], "front camera")

    # Latched like robot_state_publisher: a subscriber that comes late still gets the URDF.
    description = ros.collect(String, "/robot_description", qos.LATCHED)
    wait_until(lambda: description, 10.0, "/robot_description for a late subscriber")
    assert description[0].data == ROBOT.urdf_path.read_text()

    # What a tf2 listener on a ROS install checks: the type (and its hash, Kilted's tf2_msgs) and the QoS.
    from rosbags.typesys import Stores, get_typestore

    kilted = get_typestore(Stores.ROS2_KILTED)
    for topic, durability in (("/tf", DurabilityPolicy.VOLATILE), ("/tf_static", DurabilityPolicy.TRANSIENT_LOCAL)):
        (info,) = ros.node.get_publishers_info_by_topic(topic)
        assert info.topic_type == "tf2_msgs/msg/TFMessage"
        assert str(info.topic_type_hash) == kilted.hash_rihs01("tf2_msgs/msg/TFMessage")
        assert (info.qos_profile.reliability, info.qos_profile.durability) == (ReliabilityPolicy.RELIABLE, durability)
    (info,) = ros.node.get_publishers_info_by_topic("/robot_description")
    assert info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_launch_style_double_sigint_stops_it_with_exit_0(processes, ros):
    """Under ros2 launch a terminal's Ctrl-C reaches a node twice (ros2/launch#830)."""
    node = processes.start_node("robot_state", robot_config=str(robot_config_path("fr3_real")), publish_urdf=False, world_frame="")
    static = ros.collect(TFMessage, "/tf_static", qos.LATCHED)
    wait_until(lambda: static, 60.0, "/tf_static from the robot_state node")
    assert sorted(t.child_frame_id for t in static[0].transforms) == ["front_camera_color_optical_frame", "wrist_camera_color_optical_frame"]
    assert not ros.node.get_publishers_info_by_topic("/tf") and not ros.node.get_publishers_info_by_topic("/robot_description")
    node.send_signal(signal.SIGINT)
    time.sleep(0.02)
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=20) == 0, processes.log("robot_state")
    assert "Traceback" not in processes.log("robot_state")
