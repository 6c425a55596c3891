"""The real-arm robot configs: node set, URDF frames and limits, cameras, and the safety
bridge's own validation. These files drive real hardware, so every fact is cross-checked."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import yaml

from wam_ros.bringup import known_node_kinds, load_bringup
from wam_ros.cameras.realsense import RealSenseSettings
from wam_ros.control.bridge import BridgeSettings, SafetyBridgeCore
from wam_ros.control.impedance import CartesianImpedance, JointImpedance
from wam_ros.control.kinematics import ChainKinematics
from wam_ros.control.limits import Limits
from wam_ros.control.modes import EstopLatch
from wam_ros.robot import RobotConfig, load_robot_config, robot_config_path

HARDWARE = {"fr3_real": "cartesian_impedance", "fr3_real_jtc": "joint_trajectory", "ur5e_real": "joint_trajectory"}
CAMERA_KINDS = {"realsense": "realsense_camera", "opencv": "opencv_camera"}
#: Every hardware bringup runs exactly these, and never the simulator.
NON_CAMERA_KINDS = {"wam_inference", "task_planner", "safety_bridge", "recorder", "robot_state"}


@pytest.fixture(params=sorted(HARDWARE))
def robot(request) -> RobotConfig:
    return load_robot_config(request.param)


def nodes_section(robot: RobotConfig) -> dict:
    return yaml.safe_load(Path(robot.path).read_text())["nodes"]


def urdf_tree(robot: RobotConfig) -> tuple[set[str], dict[str, ElementTree.Element]]:
    root = ElementTree.parse(robot.urdf_path).getroot()
    return {link.get("name") for link in root.iter("link")}, {joint.get("name"): joint for joint in root.iter("joint")}


def test_backend_and_hardware_flags(robot):
    assert robot.backend.type == HARDWARE[robot.name]
    assert not robot.simulated  # bringup then runs every node on wall-clock time
    assert all(c.source in CAMERA_KINDS for c in robot.cameras)
    assert [c.name for c in robot.cameras] == ["front", "wrist"]


def test_node_set_is_cameras_inference_planner_bridge_recorder_robot_state(robot):
    nodes = nodes_section(robot)
    kinds = [entry.get("kind", name) for name, entry in nodes.items()]
    assert "sim" not in kinds
    assert set(kinds) - set(CAMERA_KINDS.values()) == NON_CAMERA_KINDS
    camera_nodes = {entry["parameters"]["camera"]: entry for entry in nodes.values() if entry.get("kind") in CAMERA_KINDS.values()}
    assert sorted(camera_nodes) == sorted(c.name for c in robot.cameras)  # one node per camera
    for camera in robot.cameras:
        assert camera_nodes[camera.name]["kind"] == CAMERA_KINDS[camera.source]
        assert camera_nodes[camera.name]["required"] is True
    assert nodes["safety_bridge"]["required"] is True


def test_bringup_loads_with_the_landed_node_kinds(robot):
    """Full validation through load_bringup (parameters checked against each node's Parameters).

    Node kinds not written yet are switched off (``<node>.enabled:=false``) so the rest is still
    validated; the test then reports itself skipped, naming them.
    """
    nodes = nodes_section(robot)
    missing = {name: entry.get("kind", name) for name, entry in nodes.items() if entry.get("kind", name) not in known_node_kinds()}
    bringup = load_bringup(robot.name, {name: {"enabled": False} for name in missing})
    by_name = {spec.name: spec for spec in bringup.nodes}
    disabled = {name for name, entry in nodes.items() if entry.get("enabled", True) is False}
    assert set(by_name) == set(nodes) - set(missing) - disabled
    for spec in bringup.nodes:
        assert spec.parameters["use_sim_time"] is False
        if "robot_config" in spec.parameters:
            assert spec.parameters["robot_config"] == str(robot_config_path(robot.name))
    assert by_name["front_camera"].parameters["camera"] == "front"
    assert by_name["wrist_camera"].parameters["camera"] == "wrist"
    if missing:
        pytest.skip(f"validated all but the node kinds not in wam_ros/nodes yet: {', '.join(sorted(set(missing.values())))}")


def test_fr3_files_differ_only_in_backend():
    cartesian = yaml.safe_load(robot_config_path("fr3_real").read_text())
    trajectory = yaml.safe_load(robot_config_path("fr3_real_jtc").read_text())
    for data in (cartesian, trajectory):
        del data["robot"]["name"]
        del data["robot"]["backend"]
    assert cartesian == trajectory


def test_urdf_holds_the_frames_joints_and_limits_of_the_config(robot):
    links, joints = urdf_tree(robot)
    assert robot.base_frame in links and robot.tcp_frame in links
    arm = robot.arm
    for i, name in enumerate(arm.joint_names):
        joint = joints[name]
        assert joint.get("type") == "revolute"
        limit = joint.find("limit")
        assert float(limit.get("lower")) == pytest.approx(arm.position_lower_rad[i], abs=1e-4)
        assert float(limit.get("upper")) == pytest.approx(arm.position_upper_rad[i], abs=1e-4)
        assert float(limit.get("velocity")) == pytest.approx(arm.velocity_max_rad_s[i], abs=1e-4)
        assert float(limit.get("effort")) == pytest.approx(arm.effort_max_nm[i])
    fingers = [name for name in robot.gripper.joint_names if name in joints]  # a gripper without URDF joints (Robotiq on the UR5e) is the driver's
    if fingers:
        uppers = [float(joints[name].find("limit").get("upper")) for name in fingers]
        assert robot.gripper.width_from_joint_positions(uppers) == pytest.approx(robot.gripper.width_max_m)


def test_the_gripper_is_commanded_through_its_drivers_action(robot):
    """franka_gripper takes one finger's travel (width / 2); the Robotiq driver its knuckle joint, 0.7929 rad closed, 0 open."""
    gripper = robot.gripper
    # relative, like every name in a robot config: it resolves under the stack's namespace
    assert gripper.interface == "action" and gripper.action_name and not gripper.action_name.startswith("/")
    closed, opened = gripper.position_from_width(gripper.width_min_m), gripper.position_from_width(gripper.width_max_m)
    expected = {"fr3_link0": (0.0, 0.04), "base_link": (0.7929, 0.0)}[robot.base_frame]
    assert (closed, opened) == pytest.approx(expected, abs=1e-4)
    # Each of the joints in /joint_states reads like the action's position: a Franka finger's travel, the Robotiq's knuckle.
    assert gripper.width_from_joint_positions([opened] * len(gripper.joint_names)) == pytest.approx(gripper.width_max_m, abs=1e-4)
    assert 0 <= gripper.force_min_n <= BridgeSettings().gripper_force_n <= gripper.force_max_n


def test_camera_frames_hang_off_urdf_links(robot):
    links, _ = urdf_tree(robot)
    frame_ids = [c.frame_id for c in robot.cameras]
    assert len(set(frame_ids)) == len(frame_ids)
    for camera in robot.cameras:
        assert camera.parent_frame in links, f"{camera.name}: parent_frame {camera.parent_frame!r} is not a URDF link"
        assert camera.frame_id not in links  # the camera pose comes from the config's extrinsics only
        assert len(camera.extrinsics_xyz_m) == 3
        assert np.linalg.norm(camera.extrinsics_quat_xyzw) == pytest.approx(1.0, abs=1e-5)
        settings = RealSenseSettings(serial_number=camera.device, width=camera.width, height=camera.height, rate_hz=camera.rate_hz)
        assert settings.fps == 30 and camera.depth


def test_home_pose_and_front_camera_see_the_workspace(robot):
    kinematics = ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
    tcp, _ = kinematics.forward(np.array(robot.arm.home_rad))
    low, high = np.array(robot.safety.workspace_min_m), np.array(robot.safety.workspace_max_m)
    assert np.all(low < tcp) and np.all(tcp < high), f"home TCP {tcp} outside the workspace box"
    from scipy.spatial.transform import Rotation

    front = robot.camera("front")
    assert front.parent_frame == robot.base_frame
    optical_axis = Rotation.from_quat(front.extrinsics_quat_xyzw).apply([0.0, 0.0, 1.0])
    # The optical axis (z) passes through the workspace box centre's neighbourhood.
    centre = (low + high) / 2
    to_centre = centre - np.array(front.extrinsics_xyz_m)
    miss = np.linalg.norm(np.cross(optical_axis, to_centre))
    assert optical_axis @ to_centre > 0 and miss < 0.25


def test_limits_pass_the_safety_bridges_validation(robot, tmp_path):
    limits = Limits.from_robot(robot)
    assert np.all(limits.lower_rad < robot.arm.home_rad) and np.all(np.array(robot.arm.home_rad) < limits.upper_rad)
    settings = BridgeSettings()
    settings.validate(robot.safety.watchdog_margin_s)
    core = SafetyBridgeCore(robot, settings, EstopLatch(tmp_path / "estop.json"))
    assert core.mode.name == "IDLE"
    JointImpedance(np.array(robot.gains.joint_stiffness_nm_rad), np.array(robot.gains.joint_damping_nms_rad), np.array(robot.arm.effort_max_nm))
    CartesianImpedance(np.array(robot.gains.cartesian_stiffness), np.array(robot.gains.cartesian_damping),
                       robot.gains.nullspace_stiffness_nm_rad, np.array(robot.arm.effort_max_nm))
