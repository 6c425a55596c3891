"""The TF tree computed from the URDFs and robot configs (wam_ros.control.frames), without ROS."""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wam_ros.control.frames import FramesError, RateLimit, Transform, UrdfFrames, camera_transforms, world_transform
from wam_ros.control.kinematics import ChainKinematics
from wam_ros.robot import load_robot_config

ROBOTS = ["panda_sim", "fr3_real", "ur5e_real"]


def compose(transforms: list[Transform], base: str, tip: str) -> np.ndarray:
    """The pose of ``tip`` in ``base`` from parent -> child transforms (the way a tf2 lookup chains them)."""
    by_child = {t.child: t for t in transforms}
    pose = np.eye(4)
    frame = tip
    while frame != base:
        if frame not in by_child:
            raise AssertionError(f"no chain from {base} to {tip}: nothing publishes {frame}'s parent")
        pose = by_child[frame].matrix() @ pose
        frame = by_child[frame].parent
    return pose


def urdf_joints(path: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (type, parent link, child link), read with ElementTree."""
    root = ElementTree.parse(path).getroot()
    return {j.get("name"): (j.get("type"), j.find("parent").get("link"), j.find("child").get("link")) for j in root.iter("joint")}


@pytest.mark.parametrize("name", ROBOTS)
def test_every_urdf_joint_gives_one_parent_child_transform(name):
    robot = load_robot_config(name)
    frames = UrdfFrames(robot.urdf_path)
    joints = urdf_joints(robot.urdf_path)
    assert sorted(frames.fixed_joints) == sorted(n for n, (kind, _, _) in joints.items() if kind == "fixed")
    assert sorted(frames.movable_joints) == sorted(n for n, (kind, _, _) in joints.items() if kind != "fixed")
    positions = {joint: 0.1 for joint in frames.movable_joints}
    published = frames.fixed_transforms() + frames.moving_transforms(positions)
    assert sorted((t.parent, t.child) for t in published) == sorted((parent, child) for _, parent, child in joints.values())
    children = {t.child for t in published}
    assert set(frames.links) == children | {frames.root_link} and frames.root_link not in children


@pytest.mark.parametrize("name", ROBOTS)
def test_base_to_tcp_chain_equals_the_kinematics(name):
    robot = load_robot_config(name)
    frames = UrdfFrames(robot.urdf_path)
    kinematics = ChainKinematics.from_urdf(robot.urdf_path, robot.base_frame, robot.tcp_frame, robot.arm.joint_names)
    rng = np.random.default_rng(3)
    lower, upper = np.array(robot.arm.position_lower_rad), np.array(robot.arm.position_upper_rad)
    fixed = frames.fixed_transforms()
    for q in rng.uniform(lower, upper, size=(50, robot.arm.dof)):
        positions = dict(zip(robot.arm.joint_names, q))
        positions.update({finger: 0.02 for finger in robot.gripper.joint_names})
        pose = compose(fixed + frames.moving_transforms(positions), robot.base_frame, robot.tcp_frame)
        position, rotation = kinematics.forward(q)
        np.testing.assert_allclose(pose[:3, 3], position, atol=1e-12)
        np.testing.assert_allclose(pose[:3, :3], rotation, atol=1e-12)


def test_fingers_move_along_their_axes_and_the_mimic_finger_follows_its_master():
    robot = load_robot_config("panda_sim")
    frames = UrdfFrames(robot.urdf_path)
    assert frames.mimics["panda_finger_joint2"].master == "panda_finger_joint1"
    by_child = {t.child: t for t in frames.moving_transforms({"panda_finger_joint1": 0.03})}
    assert by_child["panda_leftfinger"].parent == "panda_hand"
    np.testing.assert_allclose(by_child["panda_leftfinger"].translation_m, [0.0, 0.03, 0.0584], atol=1e-12)
    np.testing.assert_allclose(by_child["panda_rightfinger"].translation_m, [0.0, -0.03, 0.0584], atol=1e-12)  # axis 0 -1 0
    by_child = {t.child: t for t in frames.moving_transforms({"panda_finger_joint1": 0.03, "panda_finger_joint2": 0.01})}
    np.testing.assert_allclose(by_child["panda_rightfinger"].translation_m, [0.0, -0.01, 0.0584], atol=1e-12)
    assert [t.child for t in frames.moving_transforms({"panda_joint1": 0.5})] == ["panda_link1"]  # unknown joints are left out


def test_continuous_and_mimic_joints_with_multiplier_and_offset(tmp_path):
    urdf = tmp_path / "toy.urdf"
    urdf.write_text("""<robot name="toy"><link name="a"/><link name="b"/><link name="c"/>
      <joint name="spin" type="continuous"><parent link="a"/><child link="b"/><origin xyz="0 0 1"/><axis xyz="0 0 1"/></joint>
      <joint name="tilt" type="revolute"><parent link="b"/><child link="c"/><axis xyz="0 1 0"/>
        <limit lower="-1" upper="1" effort="1" velocity="1"/><mimic joint="spin" multiplier="0.5" offset="0.1"/></joint>
    </robot>""")
    frames = UrdfFrames(urdf)
    spin, tilt = frames.moving_transforms({"spin": 2.5})
    np.testing.assert_allclose(spin.translation_m, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(spin.matrix()[:3, :3], Rotation.from_euler("z", 2.5).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(tilt.matrix()[:3, :3], Rotation.from_euler("y", 0.5 * 2.5 + 0.1).as_matrix(), atol=1e-12)


def test_cameras_hang_off_their_parent_links_at_the_configured_extrinsics():
    robot = load_robot_config("panda_sim")
    frames = UrdfFrames(robot.urdf_path)
    cameras = camera_transforms(robot, frames.links)
    assert [(t.parent, t.child) for t in cameras] == [(c.parent_frame, c.frame_id) for c in robot.cameras]
    for transform, camera in zip(cameras, robot.cameras):
        np.testing.assert_allclose(transform.translation_m, camera.extrinsics_xyz_m)
        np.testing.assert_allclose(transform.matrix()[:3, :3], Rotation.from_quat(camera.extrinsics_quat_xyzw).as_matrix(), atol=1e-12)


def test_a_camera_on_an_unknown_link_or_named_like_a_link_is_refused(tmp_path):
    import dataclasses

    robot = load_robot_config("panda_sim")
    links = UrdfFrames(robot.urdf_path).links
    wrong_parent = dataclasses.replace(robot, cameras=(dataclasses.replace(robot.cameras[0], parent_frame="table"),))
    with pytest.raises(FramesError, match=r"panda_sim.yaml: camera 'front': parent_frame 'table' is not a link of panda.urdf"):
        camera_transforms(wrong_parent, links)
    clash = dataclasses.replace(robot, cameras=(dataclasses.replace(robot.cameras[0], frame_id="panda_hand"),))
    with pytest.raises(FramesError, match="frame_id 'panda_hand' is a link"):
        camera_transforms(clash, links)


def test_world_frame_above_the_root_link(tmp_path):
    (transform,) = world_transform("world", "panda_link0", [0.1, 0.0, 0.7], [0.0, 0.0, 0.0, 1.0])
    assert (transform.parent, transform.child, transform.translation_m) == ("world", "panda_link0", (0.1, 0.0, 0.7))
    assert world_transform("", "panda_link0", [0, 0, 0], [0, 0, 0, 1]) == []
    with pytest.raises(FramesError, match="norm 2.0000, not a rotation"):
        world_transform("world", "panda_link0", [0, 0, 0], [0, 0, 0, 2])
    robot = load_robot_config("panda_sim")
    mounted = tmp_path / "mounted.urdf"
    mounted.write_text(Path(robot.urdf_path).read_text().replace('<robot name="panda">', """<robot name="panda">
      <link name="world"/><joint name="mount" type="fixed"><parent link="world"/><child link="panda_link0"/>
      <origin xyz="0.2 0 0.7" rpy="0 0 0.5"/></joint>"""))
    frames = UrdfFrames(mounted)
    assert frames.root_link == "world" and world_transform("world", frames.root_link, [0, 0, 0], [0, 0, 0, 1]) == []
    pose = compose(frames.fixed_transforms(), "world", "panda_link0")
    np.testing.assert_allclose(pose[:3, 3], [0.2, 0.0, 0.7], atol=1e-12)


def test_rate_limit_by_stamps():
    limit = RateLimit(50.0)
    stamps = np.arange(0.0, 1.0, 0.002)  # joint states at 500 Hz
    due = [s for s in stamps if limit.due(float(s))]
    assert len(due) == 50 and np.allclose(np.diff(due), 0.02)
    assert limit.due(0.5)  # time went back (a reset or a replayed bag): publish, restart
    every = RateLimit(0.0)
    assert all(every.due(float(s)) for s in stamps[:10])
