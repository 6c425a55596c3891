"""Hindsight goals: labels from gripper events and forward kinematics, and the localiser that learns them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_model_core import one_torch_thread, tiny_config  # noqa: F401 - the autouse fixture applies here too
from wam_ros.data import DatasetError, DatasetInfo
from wam_ros.model.config import GoalConfig
from wam_ros.model.data import text_statistics
from wam_ros.model.goal import (
    GOAL_DIM,
    GOAL_SCALE_MIN_M,
    PICK,
    PLACE,
    HindsightGoals,
    decode_goal,
    goal_features,
    goal_loss,
    goal_statistics,
    gripper_events,
    next_event,
)
from wam_ros.model.network import GoalLocaliser
from wam_ros.model.text import instruction_encoder


def test_gripper_events_and_the_next_one_per_frame():
    width = np.array([0.08, 0.08, 0.0, 0.0, 0.0, 0.08, 0.08, 0.0, 0.0])
    grasps, releases = gripper_events(width, closed_below=0.04)
    assert grasps.tolist() == [2, 7] and releases.tolist() == [5]
    assert next_event(grasps, len(width)).tolist() == [2, 2, 2, 7, 7, 7, 7, 7, -1]
    assert next_event(releases, len(width)).tolist() == [5, 5, 5, 5, 5, 5, -1, -1, -1]
    assert next_event(np.array([], int), 3).tolist() == [-1, -1, -1]


def test_goal_scales_have_a_floor_so_a_part_that_hardly_moves_keeps_its_offsets_tame():
    rng = np.random.default_rng(0)
    labels = np.zeros((200, GOAL_DIM), np.float32)
    labels[:, PICK] = rng.normal([0.5, 0.0, 0.02], [0.1, 0.1, 0.001], (200, 3))  # cubes all over the table
    labels[:, PLACE] = rng.normal([0.4, -0.3, 0.1], [0.005, 0.005, 0.001], (200, 3))  # a bin that barely moves
    valid = np.ones((200, 2), bool)
    valid[150:, 0] = False
    mean, std = goal_statistics(labels, valid)
    np.testing.assert_allclose(mean[PICK], labels[:150, PICK].mean(0), rtol=1e-5)
    assert 0.08 < std[0] < 0.12 and np.all(std[PICK] == std[0])  # x and y spread, shared by z
    assert np.all(std[PLACE] == np.float32(GOAL_SCALE_MIN_M))
    # The place offsets from a TCP 40 cm away stay within a few units.
    goal = torch.from_numpy((labels[:1] - mean) / std)
    features = goal_features(goal, torch.tensor([0.4, 0.1, 0.3]), torch.from_numpy(mean), torch.from_numpy(std))
    place_offsets = features[0, GOAL_DIM + PLACE.start : GOAL_DIM + PLACE.stop]
    assert features.shape == (1, 2 * GOAL_DIM) and place_offsets.abs().max() < 10.0


@pytest.fixture(scope="module")
def sim_demo():
    """One full pick-place expert episode (no rendering) and the sim's own record of the scene."""
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.demos import dataset_info, record_demo

    robot = load_robot_config("panda_sim")
    with TabletopEnv(robot) as env:
        result = record_demo(env, "pick_place", 3, render=False)
        spec = env.spec
        info = dataset_info(robot, env)
        bin_inner_size = env.config.bin_inner_size_m
    assert result.success
    return result.episode, spec, info, bin_inner_size


def labeller_for(info) -> HindsightGoals:
    """Hindsight goal labels for a dataset like ``info``, with the tiny model config bound to it."""
    config = tiny_config()
    config.bind_dataset(list(info.cameras), (96, 96), info.state_names, info.action_names, info.fps, info.robot)
    return HindsightGoals(info, config)


def test_hindsight_labels_of_a_sim_demo_are_the_cube_then_the_bin(sim_demo):
    episode, spec, info, bin_inner_size = sim_demo
    labeller = labeller_for(info)
    labels, valid = labeller.episode(episode.states, episode.actions)
    grasps, releases = gripper_events(episode.actions[:, 7], 0.04)
    assert len(grasps) == 1 and len(releases) == 1 and grasps[0] < releases[0]

    # Before the grasp: the TCP closes on the instructed cube's centre.
    cube = spec.cubes[0]
    first = decode_goal(labels[0])
    assert np.linalg.norm(first.pick_position_m[:2] - spec.cube_positions[cube][:2]) < 0.01
    assert abs(first.pick_position_m[2] - spec.cube_positions[cube][2]) < 0.01
    # It opens over the bin, inside its walls.
    assert np.all(np.abs(first.place_position_m[:2] - spec.bin_center_xy) < np.asarray(bin_inner_size) / 2)
    # The same labels on every frame up to the event; none after it.
    assert np.all(valid[: grasps[0] + 1, 0]) and not np.any(valid[grasps[0] + 1 :, 0])
    assert np.all(valid[: releases[0] + 1, 1]) and not np.any(valid[releases[0] + 1 :, 1])
    np.testing.assert_array_equal(labels[grasps[0], PICK], labels[0, PICK])
    np.testing.assert_array_equal(labels[releases[0], PLACE], labels[0, PLACE])

    # Video-only episodes (no commands) have no labels at all.
    _, none = labeller.episode(episode.states, None)
    assert not none.any()


def test_labels_stay_inside_the_frames_subtask(sim_demo):
    """Two pick-and-place subtasks back to back: after the first grasp, the next grasp belongs to
    the second subtask, whose object the first subtask's instruction does not name."""
    episode, _, info, _ = sim_demo
    length = len(episode.states)
    states, actions = np.concatenate([episode.states] * 2), np.concatenate([episode.actions] * 2)
    labeller = labeller_for(info)
    (grasp, *_), _ = gripper_events(episode.actions[:, 7], 0.04)
    _, whole = labeller.episode(states, actions)
    assert whole[grasp + 1, 0]  # unbounded: the second subtask's grasp
    spans = np.repeat([length, 2 * length], length)
    labels, valid = labeller.episode(states, actions, spans)
    assert np.all(valid[: grasp + 1, 0]) and not np.any(valid[grasp + 1 : length, 0])
    assert np.all(valid[length : length + grasp + 1, 0])
    np.testing.assert_array_equal(labels[length, PICK], labels[0, PICK])  # the same demo twice
    np.testing.assert_array_equal(valid[length:], whole[length:])


def test_an_opening_followed_by_a_regrasp_is_a_retry_not_the_release(sim_demo):
    episode, _, info, _ = sim_demo
    labeller = labeller_for(info)
    clean, clean_valid = labeller.episode(episode.states, episode.actions)
    (grasp, *_), (release, *_) = gripper_events(episode.actions[:, 7], 0.04)
    fumbled = episode.actions.copy()
    fumbled[grasp + 2 : grasp + 5, 7] = 0.08  # let go just after the grasp, then close again
    grasps, releases = gripper_events(fumbled[:, 7], 0.04)
    assert len(grasps) == 2 and len(releases) == 2
    labels, valid = labeller.episode(episode.states, fumbled)
    np.testing.assert_array_equal(labels[0, PLACE], clean[0, PLACE])  # the bin, not the fumble
    np.testing.assert_array_equal(valid[:, 1], clean_valid[:, 1])
    assert release > grasp + 5


def test_a_grasp_that_closed_on_nothing_is_a_miss_not_the_pick(sim_demo):
    """A policy closing beside the cube before an operator's grasp (a recorded takeover): the
    early frames' pick label is the operator's grasp, the miss's opening no release."""
    episode, _, info, _ = sim_demo
    labeller = labeller_for(info)
    clean, clean_valid = labeller.episode(episode.states, episode.actions)
    (grasp, *_), _ = gripper_events(episode.actions[:, 7], 0.04)
    states, actions = episode.states.copy(), episode.actions.copy()
    actions[2:6, 7] = 0.0  # closes early, somewhere on the way ...
    states[3:6, 7] = 0.0  # ... on nothing: the fingers meet
    actions[2:6, 0] += 0.3  # and not where the cube is
    assert len(gripper_events(actions[:, 7], 0.04)[0]) == 2
    labels, valid = labeller.episode(states, actions)
    np.testing.assert_allclose(labels[0, PICK], clean[0, PICK])
    np.testing.assert_allclose(labels[0, PLACE], clean[0, PLACE])
    np.testing.assert_array_equal(valid, clean_valid)
    assert grasp > 6


def test_labels_need_the_robots_kinematics_and_a_gripper(sim_demo):
    _, _, info, _ = sim_demo
    config = tiny_config()
    unknown = DatasetInfo(fps=10.0, robot="no_such_robot", joint_names=info.joint_names, state_names=info.state_names,
                          action_names=info.action_names, cameras=info.cameras)
    with pytest.raises(DatasetError, match="goal labels: forward kinematics of robot 'no_such_robot'"):
        HindsightGoals(unknown, config)
    renamed = [f"j{i}" for i in range(7)] + ["gripper_width"]
    other_joints = DatasetInfo(fps=10.0, robot="panda_sim", joint_names=renamed[:7], state_names=renamed, action_names=renamed, cameras=info.cameras)
    with pytest.raises(DatasetError, match="no column for the joints"):
        HindsightGoals(other_joints, config)
    with pytest.raises(ValueError, match="goal.camera 'top' is not one of the cameras"):
        config.goal = GoalConfig(camera="top")
        config.validate()


def _scene(rng: np.random.Generator, n: int, size: int = 32, columns: tuple[int, int] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Grey frames with a red and a blue 4-pixel cube and a green 8-pixel bin, apart; pixels in
    [-1, 1] and centres (n, 3, 2) in [0, 1] image coordinates (red, blue, bin). ``columns``: the
    range of the objects' left edges (default: anywhere in the frame)."""
    low, high = columns or (0, size - 8)
    frames = np.full((n, size, size, 3), 110, np.uint8)
    centres = np.empty((n, 3, 2), np.float32)
    for i in range(n):
        while True:
            corners = np.stack([rng.integers(low, high, 3), rng.integers(0, size - 8, 3)], axis=1)
            if all(np.any(np.abs(corners[a] - corners[b]) >= 9) for a, b in ((0, 1), (0, 2), (1, 2))):
                break
        for k, (rgb, edge) in enumerate((((220, 30, 30), 4), ((30, 30, 220), 4), ((30, 200, 30), 8))):
            x, y = corners[k]
            frames[i, y : y + edge, x : x + edge] = rgb
            centres[i, k] = (np.array([x, y]) + (edge - 1) / 2) / (size - 1)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0, centres


def test_the_goal_loss_ignores_missing_parts():
    prediction = torch.randn(4, GOAL_DIM, requires_grad=True)
    target = torch.randn(4, GOAL_DIM)
    valid = torch.tensor([[True, True], [False, True], [True, False], [False, False]])
    loss = goal_loss(prediction, target, valid)
    loss.backward()
    squared = (prediction.detach() - target).pow(2)
    expected = (squared[0].sum() + squared[1, PLACE].sum() + squared[2, PICK].sum()) / (GOAL_DIM + 3 + 3)
    torch.testing.assert_close(loss.detach(), expected)
    assert torch.all(prediction.grad[1, PICK] == 0) and torch.all(prediction.grad[2, PLACE] == 0) and torch.all(prediction.grad[3] == 0)
    assert torch.all(prediction.grad[0] != 0)


def test_the_localiser_learns_where_the_instructed_object_is():
    """Pick = the instructed cube's centre, place = the bin's: FiLM by the instruction and
    spatial softmax find both to about a pixel of 32."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texts = instruction_encoder().encode(["put the red cube in the bin", "put the blue cube in the bin"])
    mean, scale = text_statistics(texts)
    text = torch.from_numpy((texts - mean) * scale).float()
    localiser = GoalLocaliser(GoalConfig(camera="front", image_size=32, count=8, channels=8, hidden=64), text.shape[1])
    optimizer = torch.optim.Adam(localiser.parameters(), lr=3e-3)
    valid = torch.ones(32, 2, dtype=torch.bool)

    def targets(centres: np.ndarray, which: np.ndarray) -> torch.Tensor:
        n = len(which)
        goal = np.zeros((n, GOAL_DIM), np.float32)
        goal[:, 0:2] = centres[np.arange(n), which]
        goal[:, 3:5] = centres[:, 2]
        return torch.from_numpy((goal - 0.5) * 4)  # about unit scale, as normalised labels are

    for _ in range(500):
        pixels, centres = _scene(rng, 32)
        which = rng.integers(0, 2, 32)
        loss = goal_loss(localiser(pixels, text[torch.from_numpy(which)]), targets(centres, which), valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pixels, centres = _scene(rng, 200)
    which = rng.integers(0, 2, 200)
    with torch.no_grad():
        predicted = localiser(pixels, text[torch.from_numpy(which)]).numpy() / 4 + 0.5
    pick_error_px = np.abs(predicted[:, 0:2] - centres[np.arange(200), which]).mean() * 31
    place_error_px = np.abs(predicted[:, 3:5] - centres[:, 2]).mean() * 31
    # 0.3-1.3 pixels over four seeds (measured); the mean position is 8 pixels off
    assert pick_error_px < 1.5 and place_error_px < 1.5, (pick_error_px, place_error_px)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_localiser_whose_image_points_are_keypoints_finds_objects_where_it_never_saw_one(seed):
    """Calibrated, image points from keypoints 0 and 1: trained with every object in the left half
    of the frame, it still finds them in the right half (convolutions move with the object)."""
    from wam_ros.model.camera import TablePlaneCamera

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = 32
    # looking straight down from 1 m: normalised image (u, v) is the table's (x, -y) at height 0
    overhead = TablePlaneCamera(size / 2, size / 2, size / 2, size / 2, np.array([0.0, 0.0, 1.0]), np.diag([1.0, -1.0, -1.0]), size, size)
    texts = instruction_encoder().encode(["put the red cube in the bin", "put the blue cube in the bin"])
    mean, scale = text_statistics(texts)
    text = torch.from_numpy((texts - mean) * scale).float()
    config = GoalConfig(camera="front", image_size=size, count=4, channels=8, hidden=64, calibrated=True, image_points="keypoints")
    localiser = GoalLocaliser(config, text.shape[1])
    optimizer = torch.optim.Adam(localiser.parameters(), lr=3e-3)
    valid = torch.ones(32, 2, dtype=torch.bool)

    def labels(centres: np.ndarray, which: np.ndarray) -> torch.Tensor:
        n = len(which)
        points = 2 * (centres * (size - 1) + 0.5) / size - 1  # pixel-index centres -> normalised image points
        goal = np.zeros((n, GOAL_DIM), np.float32)
        goal[:, 0], goal[:, 1] = points[np.arange(n), which, 0], -points[np.arange(n), which, 1]
        goal[:, 3], goal[:, 4] = points[:, 2, 0], -points[:, 2, 1]
        return torch.from_numpy(goal)

    def located(pixels: torch.Tensor, which: np.ndarray) -> torch.Tensor:
        cameras = torch.from_numpy(np.tile(overhead.vector(), (len(which), 1)))
        return localiser(pixels, text[torch.from_numpy(which)], cameras)

    for _ in range(400):
        pixels, centres = _scene(rng, 32, size, columns=(0, size // 2 - 8))  # the left half only
        which = rng.integers(0, 2, 32)
        loss = goal_loss(located(pixels, which), labels(centres, which), valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pixels, centres = _scene(rng, 200, size, columns=(size // 2 + 1, size - 8))  # the right half
    which = rng.integers(0, 2, 200)
    with torch.no_grad():
        predicted = located(pixels, which).numpy()
    truth = labels(centres, which).numpy()
    pick_error_px = np.abs(predicted[:, 0:2] - truth[:, 0:2]).mean() * size / 2
    place_error_px = np.abs(predicted[:, 3:5] - truth[:, 3:5]).mean() * size / 2
    assert pick_error_px < 1.5 and place_error_px < 1.5, (pick_error_px, place_error_px)
    assert np.abs(predicted[:, [2, 5]]).max() < 0.05  # the MLP's heights: the table, 0 m


def test_image_points_from_keypoints_need_a_calibrated_localiser_with_two_keypoints():
    config = tiny_config(goal=True)
    config.goal = GoalConfig(camera="front", image_points="keypoints")
    with pytest.raises(ValueError, match="needs goal.calibrated"):
        config.validate()
    config.goal = GoalConfig(camera="front", calibrated=True, image_points="heatmap")
    with pytest.raises(ValueError, match="expected mlp or keypoints"):
        config.validate()


def test_image_augmentation_shifts_and_recolours_each_image_on_its_own():
    from wam_ros.model.data import ImageAugmentation

    pixels = torch.full((4, 3, 16, 16), -1.0)
    pixels[:, :, 6:10, 6:10] = 1.0  # a bright square in the middle of every image
    assert ImageAugmentation().active is False
    shifted = ImageAugmentation(shift_px=3)(pixels, np.random.default_rng(0))
    assert shifted.shape == pixels.shape
    centres = [tuple(int(v) for v in torch.nonzero(image[0] > 0).float().mean(0)) for image in shifted]
    assert all(max(abs(y - 7), abs(x - 7)) <= 3 for y, x in centres) and len(set(centres)) > 1  # moved, each its own way
    assert all(int((image[0] > 0).sum()) == 16 for image in shifted)  # the square is whole: translated, not resampled
    recoloured = ImageAugmentation(colour=0.2)(torch.zeros(8, 3, 4, 4), np.random.default_rng(1))
    assert recoloured.abs().max() <= 0.2 + 1e-6 and len(set(recoloured[:, 0, 0, 0].tolist())) == 8


def test_a_pushs_gripper_events_mark_where_it_starts_and_ends():
    """The push expert closes its fingers where the push starts and opens them where it ends, so the
    hindsight labels are the push's two ends: behind the cube, and just short of the square."""
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.demos import dataset_info, record_demo

    robot = load_robot_config("panda_sim")
    with TabletopEnv(robot) as env:
        result = record_demo(env, "push", 3, render=False)
        spec, info = env.spec, dataset_info(robot, env)
    assert result.success
    labels, valid = labeller_for(info).episode(result.episode.states, result.episode.actions)
    assert valid[0].all()
    goal = decode_goal(labels[0])
    cube, zone = spec.cube_positions[spec.cubes[0]][:2], np.asarray(spec.zone_center_xy)
    direction = (zone - cube) / np.linalg.norm(zone - cube)
    start, end = goal.pick_position_m[:2], goal.place_position_m[:2]
    assert 0.04 < (cube - start) @ direction < 0.1 and np.linalg.norm((cube - start) - ((cube - start) @ direction) * direction) < 0.01
    assert 0.02 < (zone - end) @ direction < 0.05 and np.linalg.norm((zone - end) - ((zone - end) @ direction) * direction) < 0.01
