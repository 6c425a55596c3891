"""The arm kinematics on pinocchio: every URDF and robot config loads, and the Panda's TCP pose and
Jacobian equal MuJoCo's on the sim's own model."""
from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pinocchio as pin
import pytest

from wam_ros.control.kinematics import ChainKinematics
from wam_ros.robot import RobotConfig, load_robot_config, package_root
from wam_ros.sim.config import SimConfig
from wam_ros.sim.kinematics import ArmKinematics
from wam_ros.sim.scene import build_scene_xml

URDFS = sorted((package_root() / "urdf").glob("*.urdf"))
ROBOTS = sorted(p.stem for p in (package_root() / "config" / "robots").glob("*.yaml"))
TOLERANCE = 1e-6  # m, rad (and m/rad, rad/rad for Jacobian entries)


def kinematics_of(robot: RobotConfig) -> ChainKinematics:
    return ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)


def random_joints(robot: RobotConfig, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(robot.arm.position_lower_rad, robot.arm.position_upper_rad, (count, robot.arm.dof))


@pytest.mark.parametrize("urdf", URDFS, ids=lambda p: p.name)
def test_every_urdf_loads_in_pinocchio(urdf: Path):
    model = pin.buildModelFromUrdf(str(urdf))
    assert model.njoints > 1


@pytest.mark.parametrize("name", ROBOTS)
def test_every_robot_config_has_finite_kinematics(name: str):
    robot = load_robot_config(name)
    kinematics = kinematics_of(robot)
    positions, rotations = kinematics.forward(random_joints(robot, 100, seed=3))
    assert np.all(np.isfinite(positions)) and np.all(np.isfinite(rotations))
    assert np.allclose(rotations @ np.swapaxes(rotations, 1, 2), np.eye(3), atol=1e-12)
    jac, position, _ = kinematics.jacobian(np.array(robot.arm.home_rad))
    assert jac.shape == (6, robot.arm.dof) and np.all(np.isfinite(jac)) and np.all(np.isfinite(position))


def test_panda_tcp_and_jacobian_match_mujoco():
    """The URDF's panda_hand_tcp and the MJCF's TCP body are the same frame (MuJoCo's world is panda_link0)."""
    robot = load_robot_config("panda_sim")
    model = mujoco.MjModel.from_xml_string(build_scene_xml(robot, SimConfig.from_robot(robot)))
    mujoco_kinematics = ArmKinematics(model, robot.tcp_frame, robot.arm.joint_names,
                                      robot.arm.position_lower_rad, robot.arm.position_upper_rad)
    kinematics = kinematics_of(robot)
    for q in random_joints(robot, 1000, seed=4):
        jac, position, rotation = kinematics.jacobian(q)
        expected_jac, expected_position, expected_rotation = mujoco_kinematics.jacobian(q)
        assert np.linalg.norm(position - expected_position) < TOLERANCE
        # The MJCF's hand quaternion (0.9238795, -0.3826834) rounds -pi/4 by 3.5e-8 rad.
        assert np.linalg.norm(pin.log3(rotation.T @ expected_rotation)) < TOLERANCE
        assert np.abs(jac - expected_jac).max() < TOLERANCE


def test_poses_are_relative_to_the_base_frame_below_a_world_link(tmp_path):
    """A URDF whose root is a 'world' link with the robot mounted somewhere gives the same TCP in the base frame."""
    robot = load_robot_config("panda_sim")
    mounted = tmp_path / "mounted.urdf"
    mounted.write_text(Path(robot.urdf_path).read_text().replace('<robot name="panda">', """<robot name="panda">
      <link name="world"/>
      <joint name="mount" type="fixed"><parent link="world"/><child link="panda_link0"/>
        <origin xyz="0.4 -0.2 0.7" rpy="0.3 -0.5 2.0"/></joint>"""))
    plain, world = kinematics_of(robot), ChainKinematics.from_urdf(mounted, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
    joints = random_joints(robot, 20, seed=5)
    for expected, got in zip(plain.forward(joints), world.forward(joints)):
        assert np.allclose(got, expected, atol=1e-12)
    for q in joints:
        for expected, got in zip(plain.jacobian(q), world.jacobian(q)):
            assert np.allclose(got, expected, atol=1e-12)
