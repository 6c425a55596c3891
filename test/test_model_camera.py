"""Camera calibration for the calibrated goal localiser (wam_ros.model.camera), checked against MuJoCo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from wam_ros.data import Episode
from wam_ros.model.camera import TablePlaneCamera, recorded_camera, sim_episode_camera, table_points
from wam_ros.model.fidelity import colour_masks
from wam_ros.robot import load_robot_config
from wam_ros.sim.config import SimConfig
from wam_ros.sim.scene import look_at_quat_xyzw

ROBOT = load_robot_config("panda_sim")
SHIFTS = {"camera_position_jitter_m": {"front": [0.03, 0.03, 0.03]}, "camera_rotation_jitter_deg": {"front": [3.0, 3.0, 3.0]},
          "camera_fovy_jitter_deg": {"front": 3.0}}


def test_table_points_cast_image_points_back_onto_their_plane():
    rng = np.random.default_rng(0)
    cameras, points, image_points = [], [], []
    for _ in range(64):
        eye = np.array([1.1, 0.3, 0.6]) + rng.uniform(-0.1, 0.1, 3)
        aim = Rotation.from_quat(look_at_quat_xyzw(eye, np.array([0.5, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])))
        rotation = aim * Rotation.from_rotvec(rng.uniform(-0.05, 0.05, 3))
        camera = TablePlaneCamera(rng.uniform(70, 120), rng.uniform(70, 120), rng.uniform(40, 56), rng.uniform(40, 56),
                                  eye, rotation.as_matrix(), 96, 96)
        point = np.array([*rng.uniform([0.3, -0.2], [0.7, 0.2]), rng.uniform(0.0, 0.2)])
        cameras.append(camera.vector())
        points.append(point)
        image_points.append(camera.to_image(point))
    points = np.array(points)
    cast = table_points(torch.tensor(np.array(image_points), dtype=torch.float64), torch.tensor(points[:, 2]),
                        torch.tensor(np.array(cameras), dtype=torch.float64)).numpy()
    np.testing.assert_allclose(cast, points, atol=1e-5)  # float32 camera vectors


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_shifted_sim_camera_is_where_mujoco_renders_from(seed):
    from wam_ros.sim import TabletopEnv

    sim_config = SimConfig.from_robot(ROBOT, SHIFTS)
    camera = sim_episode_camera(ROBOT, "front", sim_config, seed)
    nominal = TablePlaneCamera.from_robot(ROBOT, "front")
    with TabletopEnv(ROBOT, sim_config) as env:
        env.reset("bin_three", seed)
        index = env.model.camera("front").id
        optical = env.data.cam_xmat[index].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # MuJoCo looks along -z, y up
        np.testing.assert_allclose(camera.position_m, env.data.cam_xpos[index], atol=1e-9)
        np.testing.assert_allclose(camera.rotation, optical, atol=1e-5)  # the config's quaternion has 5 decimals
        assert camera.fy == pytest.approx(0.5 * camera.height / np.tan(np.radians(env.model.cam_fovy[index]) / 2))
        assert np.linalg.norm(camera.position_m - nominal.position_m) > 1e-3  # the shift moved it
        frame = env.render_camera("front", camera.height, camera.width)
        masks = colour_masks(frame)
        nominal_errors_px = []
        for colour in ("red", "green", "blue"):
            ys, xs = np.nonzero(masks[colour])
            centre = 2.0 * np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / np.array([camera.width, camera.height]) - 1.0
            position = env.object_pose(f"{colour}_cube")[0]
            # the cube's centre projects within 1.5 px of its pixels' centroid (its top and side faces show)
            assert np.abs(camera.to_image(position) - centre).max() * camera.width / 2 < 1.5, colour
            nominal_errors_px.append(np.abs(nominal.to_image(position) - centre).max() * camera.width / 2)
        assert max(nominal_errors_px) > 2.0  # the nominal calibration does not fit the moved camera


def test_an_episode_is_calibrated_as_it_was_recorded():
    sim_config = SimConfig.from_robot(ROBOT, SHIFTS)
    states, actions = np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)
    images = {"front": np.zeros((2, 96, 96, 3), np.uint8), "wrist": np.zeros((2, 96, 96, 3), np.uint8)}
    shifted = Episode("pick_place", "put the red cube in the bin", states, images, actions, seed=5,
                      extra={"sim_config": json.loads(json.dumps(sim_config.shifted()))})  # as episodes.jsonl keeps it
    np.testing.assert_allclose(recorded_camera(ROBOT, "front", shifted).vector(), sim_episode_camera(ROBOT, "front", sim_config, 5).vector())
    nominal = TablePlaneCamera.from_robot(ROBOT, "front").vector()
    assert not np.allclose(recorded_camera(ROBOT, "front", shifted).vector(), nominal)
    bag = Episode("pick_place", "put the red cube in the bin", states, images, actions, source="rosbag:/tmp/x")
    np.testing.assert_allclose(recorded_camera(ROBOT, "front", bag).vector(), nominal)  # the robot config's calibration

    # a converted episode keeps the calibration in force when it was converted, not today's
    from wam_ros.data.convert import camera_calibration

    before = camera_calibration(ROBOT)
    before["front"]["extrinsics_xyz_m"][2] += 0.05
    bag.extra = json.loads(json.dumps({"camera_calibration": before}))
    then = recorded_camera(ROBOT, "front", bag)
    np.testing.assert_allclose(then.position_m, np.asarray(ROBOT.camera("front").extrinsics_xyz_m) + [0.0, 0.0, 0.05])
    np.testing.assert_allclose(then.rotation, TablePlaneCamera.from_robot(ROBOT, "front").rotation)


def test_a_camera_without_a_calibration_or_on_the_arm_is_refused():
    import dataclasses

    with pytest.raises(ValueError, match="moves with panda_hand"):
        TablePlaneCamera.from_robot(ROBOT, "wrist")
    real = dataclasses.replace(ROBOT.camera("front"), source="opencv", intrinsics_fx_fy_cx_cy=())
    robot = dataclasses.replace(ROBOT, cameras=[real if c.name == "front" else c for c in ROBOT.cameras])
    with pytest.raises(ValueError, match="no intrinsics_fx_fy_cx_cy"):
        TablePlaneCamera.from_robot(robot, "front")


def test_the_shipped_calibrated_checkpoint_finds_the_cube_from_a_moved_camera_it_is_told_of():
    """checkpoints/cpu-small-calibrated under the 3 cm / 3 degree camera move: told each episode's
    camera pose, its first grasp lands on the instructed cube; told the old pose, it does not."""
    from pathlib import Path

    from wam_ros.model import load_policy
    from wam_ros.model.camera import told_camera
    from wam_ros.sim import TabletopEnv

    runtime = load_policy(Path(__file__).resolve().parents[1] / "checkpoints" / "cpu-small-calibrated")
    assert runtime.config.goal.calibrated
    sim_config = SimConfig.from_robot(ROBOT, SHIFTS)
    errors_cm: dict[str, list[float]] = {"episode": [], "robot": []}
    with TabletopEnv(ROBOT, sim_config) as env:
        for seed in (21, 22, 23, 24):
            observation = env.reset("pick_place", seed)
            true = env.spec.cube_positions[env.spec.cubes[0]]
            images = {c: observation.images[c][None] for c in runtime.config.cameras}
            for calibration in errors_cm:
                runtime.set_goal_camera(told_camera(ROBOT, "front", sim_config, seed, calibration))
                goal = runtime.locate(images, observation.state[None].copy(), env.spec.subtask_instructions[0])
                errors_cm[calibration].append(100 * float(np.linalg.norm(goal.pick_position_m[:2] - true[:2])))
    assert max(errors_cm["episode"]) < 2.0, errors_cm  # a grasp tolerates about 1-2 cm
    assert np.mean(errors_cm["robot"]) > 2 * np.mean(errors_cm["episode"]), errors_cm
