"""The MuJoCo tabletop without ROS: control laws, task predicates, env stepping, experts, demos."""
from __future__ import annotations

import json
import math

import numpy as np
import pinocchio as pin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from wam_ros.control.impedance import CartesianImpedance, JointImpedance
from wam_ros.data.episodes import EpisodeDataset
from wam_ros.robot import load_robot_config
from wam_ros.sim import TASKS, SceneState, SimConfig, TabletopEnv, make_expert
from wam_ros.sim.demos import record_demo, subtask_spans
from wam_ros.sim.expert import closest_grasp_yaw, top_down_rotation
from wam_ros.sim.tasks import episode_instruction, make_task
from wam_ros.sim.video import write_episode_video

ROBOT = load_robot_config("panda_sim")
HALF = SimConfig().cube_size_m / 2
CUBES_OF_SCENE = ("red_cube", "green_cube", "blue_cube")


@pytest.fixture(scope="module")
def env():
    environment = TabletopEnv(ROBOT)
    yield environment
    environment.close()


# -- control laws -----------------------------------------------------------------------------------
finite = st.floats(-3.0, 3.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=28, max_size=28))
def test_joint_law_is_the_impedance_formula_clipped_to_effort(values):
    q, dq, q_target, dq_target = (np.array(values[i * 7 : (i + 1) * 7]) for i in range(4))
    stiffness, damping = np.array(ROBOT.gains.joint_stiffness_nm_rad), np.array(ROBOT.gains.joint_damping_nms_rad)
    effort = np.array(ROBOT.arm.effort_max_nm)
    compensation = np.linspace(-5, 5, 7)
    law = JointImpedance(stiffness, damping, effort)
    out = np.zeros(7)
    law.torque(q, dq, q_target, dq_target, compensation, out)
    expected = np.clip(stiffness * (q_target - q) + damping * (dq_target - dq) + compensation, -effort, effort)
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_joint_law_rejects_bad_gains():
    with pytest.raises(ValueError, match="stiffness"):
        JointImpedance(np.array([1.0, np.nan]), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="effort"):
        JointImpedance(np.ones(2), np.ones(2), np.array([1.0, 0.0]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3), st.floats(0.0, math.pi - 1e-3))
def test_rotation_error_log3_matches_scipy(axis, angle):
    """The axis-angle error of the impedance law and IK (pinocchio's log3) up to pi, as scipy gives it."""
    axis = np.array(axis)
    if np.linalg.norm(axis) < 1e-3:
        axis = np.array([0.0, 0.0, 1.0])
    vector = axis / np.linalg.norm(axis) * angle
    matrix = Rotation.from_rotvec(vector).as_matrix()
    np.testing.assert_allclose(pin.log3(matrix), vector, atol=1e-6)


def test_cartesian_law_clips_the_error_and_pulls_towards_the_target():
    law = CartesianImpedance(np.full(6, 100.0), np.zeros(6), 0.0, np.full(7, 1e6))
    error = law.pose_error(np.zeros(3), np.eye(3), np.array([1.0, 0.0, 0.0]), Rotation.from_rotvec([0, 0, 2.0]).as_matrix())
    np.testing.assert_allclose(error, [0.1, 0, 0, 0, 0, 0.5], atol=1e-9)  # CRISP: 0.1 m, 0.5 rad
    jacobian = np.hstack([np.eye(6), np.zeros((6, 1))])
    out = np.zeros(7)
    law.torque(np.zeros(3), np.eye(3), jacobian, np.zeros(7), np.zeros(7), np.array([0.05, 0, 0]), np.eye(3), np.zeros(7), np.zeros(7), out)
    np.testing.assert_allclose(out, [5.0, 0, 0, 0, 0, 0, 0], atol=1e-6)


# -- task predicates on constructed states ---------------------------------------------------------------
def _state(**positions: tuple[float, float, float]) -> SceneState:
    cubes = {"red_cube": (0.4, 0.0, HALF), "green_cube": (0.5, 0.1, HALF), "blue_cube": (0.6, 0.2, HALF)}
    cubes.update({k: v for k, v in positions.items() if k.endswith("_cube")})
    return SceneState(
        cube_positions={k: np.array(v) for k, v in cubes.items()},
        cube_quats_xyzw={k: np.array([0, 0, 0, 1.0]) for k in cubes},
        held={k: False for k in cubes},
        tcp_position=np.array(positions.get("tcp", (0.3, 0.0, 0.5))),
        bin_center=np.array([0.42, -0.34]),
        zone_center=np.array([0.5, -0.05]),
        target_position=np.array([0.45, 0.1, 0.2]),
    )


def test_reach_predicate():
    task = make_task("reach", SimConfig())
    spec = task.sample(0)
    assert task.success(spec, _state(tcp=(0.45, 0.1, 0.21)))
    assert not task.success(spec, _state(tcp=(0.45, 0.1, 0.25)))


def test_push_predicate():
    task = make_task("push", SimConfig())
    spec = task.sample(3)
    cube = spec.cubes[0]
    assert task.success(spec, _state(**{cube: (0.52, -0.03, HALF)}))
    assert not task.success(spec, _state(**{cube: (0.58, -0.05, HALF)}))  # outside the square
    assert not task.success(spec, _state(**{cube: (0.5, -0.05, 0.2)}))  # lifted above it


def test_pick_place_predicate_and_instruction():
    task = make_task("pick_place", SimConfig())
    spec = task.sample(5)
    cube = spec.cubes[0]
    assert spec.instruction == f"put the {cube.removesuffix('_cube')} cube in the bin" == spec.subtask_instructions[0]
    in_bin = _state(**{cube: (0.45, -0.36, 0.03)})
    assert task.success(spec, in_bin)
    in_bin.held[cube] = True
    assert not task.success(spec, in_bin)  # still in the hand
    assert not task.success(spec, _state(**{cube: (0.45, -0.2, HALF)}))  # beside the bin
    other = next(c for c in ("red_cube", "green_cube", "blue_cube") if c != cube)
    assert not task.success(spec, _state(**{other: (0.45, -0.36, 0.03)}))  # the wrong cube


def test_stack_predicate():
    task = make_task("stack", SimConfig())
    spec = task.sample(2)
    top, bottom = spec.cubes
    assert task.success(spec, _state(**{bottom: (0.5, 0.0, HALF), top: (0.505, 0.0, 3 * HALF)}))
    assert not task.success(spec, _state(**{bottom: (0.5, 0.0, HALF), top: (0.54, 0.0, 3 * HALF)}))  # beside
    assert not task.success(spec, _state(**{top: (0.5, 0.0, HALF), bottom: (0.5, 0.0, 3 * HALF)}))  # swapped


def test_insert_needs_the_cube_inside_the_slot_resting_and_released():
    task = make_task("insert", SimConfig())
    spec = task.sample(6)
    cube = spec.cubes[0]
    x, y, yaw = spec.slot_pose
    assert spec.instruction == f"put the {cube.removesuffix('_cube')} cube in the slot"
    along = np.array([math.cos(yaw), math.sin(yaw), 0.0])  # the slot's own x axis
    centre = np.array([x, y, HALF])
    assert task.success(spec, _state(**{cube: tuple(centre + 0.004 * along)}))  # 4 mm of the 5 mm clearance
    assert not task.success(spec, _state(**{cube: tuple(centre + 0.009 * along)}))  # on the wall's edge
    assert not task.success(spec, _state(**{cube: tuple(centre + np.array([0, 0, 0.03]))}))  # resting on top
    held = _state(**{cube: tuple(centre)})
    held.held[cube] = True
    assert not task.success(spec, held)


def test_bin_three_counts_subtasks_in_order():
    task = make_task("bin_three", SimConfig())
    spec = task.sample(1)
    first, second, third = spec.cubes
    assert spec.subtask_instructions == [f"put the {c.removesuffix('_cube')} cube in {place}"
                                         for c, place in zip(spec.cubes, ("the bin", "the near end of the bin", "the far end of the bin"))]
    assert task.subtasks_done(spec, _state()) == 0
    assert task.subtasks_done(spec, _state(**{second: (0.42, -0.34, 0.03)})) == 0  # out of order
    assert task.subtasks_done(spec, _state(**{first: (0.42, -0.34, 0.03), second: (0.35, -0.34, 0.03)})) == 2
    everything = _state(**{first: (0.42, -0.34, 0.03), second: (0.35, -0.34, 0.03), third: (0.49, -0.34, 0.03)})
    assert task.success(spec, everything)


def test_reworded_instructions_keep_the_order_in_other_words():
    task = make_task("bin_three", SimConfig())
    specs = [task.sample(seed) for seed in range(5000, 5005)]
    reworded = [episode_instruction(spec, "reworded") for spec in specs]
    openings = {instruction[: instruction.index(spec.cubes[0].removesuffix("_cube"))] for instruction, spec in zip(reworded, specs)}
    assert len(openings) == 5  # five seeds in a row, five different wordings
    for spec, instruction in zip(specs, reworded):
        assert episode_instruction(spec) == spec.instruction and instruction != spec.instruction
        assert episode_instruction(task.sample(spec.seed), "reworded") == instruction  # the seed alone decides
        colours = [cube.removesuffix("_cube") for cube in spec.cubes]
        positions = [instruction.index(colour) for colour in colours]
        assert positions == sorted(positions), (instruction, colours)
        assert "put" not in instruction and "in that order" not in instruction  # not the demos' template
    with pytest.raises(ValueError, match="bin_three only"):
        episode_instruction(make_task("pick_place", SimConfig()).sample(0), "reworded")
    with pytest.raises(ValueError, match="unknown phrasing"):
        episode_instruction(specs[0], "shouted")


def test_layouts_are_seeded_and_tasks_named():
    assert set(TASKS) == {"reach", "push", "pick_place", "stack", "bin_three", "insert"}
    task = make_task("pick_place", SimConfig())
    a, b, c = task.sample(7), task.sample(7), task.sample(8)
    assert a.instruction == b.instruction and all(np.allclose(a.cube_positions[k], b.cube_positions[k]) for k in a.cube_positions)
    assert not all(np.allclose(a.cube_positions[k], c.cube_positions[k]) for k in a.cube_positions)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("juggle", SimConfig())


def test_subtask_spans_cover_the_episode_in_order():
    spans = subtask_spans([0, 0, 0, 1, 1, 2, 2, 3, 3], ["a", "b", "c"])
    assert [(s.instruction, s.start, s.end) for s in spans] == [("a", 0, 4), ("b", 4, 6), ("c", 6, 9)]
    unfinished = subtask_spans([0, 0, 1, 1], ["a", "b", "c"])
    assert [(s.instruction, s.start, s.end) for s in unfinished] == [("a", 0, 3), ("b", 3, 4)]


# -- the env ----------------------------------------------------------------------------------------------
def test_reset_step_observation_and_images(env):
    observation = env.reset("pick_place", 3)
    assert observation.time_s == 0.0 and observation.state.shape == (8,) and observation.ee_pose.shape == (7,)
    np.testing.assert_allclose(observation.state[:7], ROBOT.arm.home_rad, atol=0.01)
    assert observation.state[7] == pytest.approx(ROBOT.gripper.width_max_m, abs=1e-3)
    images = observation.images
    assert set(images) == {c.name for c in ROBOT.cameras}
    for camera in ROBOT.cameras:
        assert images[camera.name].shape == (camera.height, camera.width, 3) and images[camera.name].dtype == np.uint8
        assert images[camera.name].std() > 5  # a scene, not a blank frame
    stale = env.observation()
    step = env.step(np.append(ROBOT.arm.home_rad, 0.04))
    assert step.time_s == pytest.approx(SimConfig().control_period_s)
    with pytest.raises(RuntimeError, match="moved on"):
        _ = stale.images
    for bad in (np.zeros(7), np.full(8, np.nan)):
        with pytest.raises(ValueError):
            env.step(bad)
    assert env.step(np.append(ROBOT.arm.home_rad, 0.04)).time_s == pytest.approx(2 * SimConfig().control_period_s)


def test_depth_and_large_views(env):
    env.reset("reach", 0)
    depth = env.render_depth(["front"])["front"]
    assert depth.shape == (96, 96) and depth.dtype == np.float32
    assert 0.5 < float(depth[48, 48]) < 2.0  # the table centre, about 1.2 m from the front camera
    view = env.render_camera("front", 240, 320)
    assert view.shape == (240, 320, 3) and view.std() > 5
    with pytest.raises(KeyError, match="no simulated camera"):
        env.render(["side"])


def test_sim_config_errors_name_the_key():
    import dataclasses

    from wam_ros.robot import ConfigError

    with pytest.raises(ConfigError, match=r"robot\.sim\.bogus: unknown key"):
        SimConfig.from_robot(dataclasses.replace(ROBOT, extra={"sim": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=r"robot\.sim\.cube_size_m"):
        SimConfig.from_robot(dataclasses.replace(ROBOT, extra={"sim": {"cube_size_m": 0.09}}))
    assert SimConfig.from_robot(dataclasses.replace(ROBOT, extra={"sim": {"cube_mass_kg": 0.1}})).cube_mass_kg == 0.1


def test_joint_targets_are_tracked_within_10_mrad(env):
    observation = env.reset("reach", 0)
    start = observation.state[:7].copy()
    errors = []
    for k in range(30):
        target = start + 0.25 * np.sin(0.15 * k + np.arange(7)) * min(1.0, k / 8)
        observation = env.step(np.append(target, 0.04))
        errors.append(np.max(np.abs(observation.state[:7] - target)))
    assert max(errors) < 0.01, errors


def test_cartesian_target_reached_within_5_mm(env):
    observation = env.reset("reach", 1)
    target = observation.ee_pose[:3] + np.array([0.06, -0.08, -0.1])
    yawed = (Rotation.from_quat(observation.ee_pose[3:]) * Rotation.from_rotvec([0, 0, 0.3])).as_quat()
    env.set_cartesian_target(target, yawed)
    env.advance(2.0)
    reached = env.observation().ee_pose
    assert np.linalg.norm(reached[:3] - target) < 0.005
    assert (Rotation.from_quat(reached[3:]).inv() * Rotation.from_quat(yawed)).magnitude() < 0.02
    with pytest.raises(ValueError, match="unit"):
        env.set_cartesian_target(target, np.array([0, 0, 0, 2.0]))


def test_task_status_reports_objects_and_progress(env):
    env.reset("pick_place", 4)
    status = env.task_status()
    assert status.task == "pick_place" and status.seed == 4 and not status.success and status.subtasks_done == 0
    assert {"red_cube", "green_cube", "blue_cube", "bin"} <= set(status.object_names)
    cube = env.spec.cubes[0]
    bin_position, _ = env.object_pose("bin")
    env.set_object_pose(cube, bin_position + np.array([0.0, 0.0, HALF + 0.01]))
    env.advance(0.3)
    assert env.task_status().success


@pytest.mark.parametrize("task,seeds", [("reach", [0, 1]), ("push", [0, 1]), ("pick_place", [0, 1]), ("stack", [0]), ("bin_three", [0]),
                                        ("insert", [0, 1])])
def test_expert_succeeds(env, task, seeds):
    for seed in seeds:
        result = record_demo(env, task, seed, render=False)
        assert result.success, f"{task} seed {seed}: {result.episode.extra}"


def test_dart_demos_execute_noisy_targets_and_record_the_experts_own(env):
    """With action noise the arm leaves the commanded path by about a centimetre and the episode
    still records the expert's targets (their path is the noise-free one until the grasp); the
    noise is the same for the same seed."""
    clean = record_demo(env, "pick_place", 4, render=False)
    noisy = record_demo(env, "pick_place", 4, render=False, action_noise_rad=0.02)
    again = record_demo(env, "pick_place", 4, render=False, action_noise_rad=0.02)
    assert clean.success and noisy.success and noisy.episode.extra["action_noise_rad"] == 0.02
    np.testing.assert_array_equal(noisy.episode.states, again.episode.states)

    def tracking_error(episode) -> float:  # commanded target at t against the joints measured at t + 1
        return float(np.abs(episode.actions[:-1, :7] - episode.states[1:, :7]).mean())

    assert tracking_error(noisy.episode) > 4 * tracking_error(clean.episode)
    grasp = int(np.argmax(clean.episode.actions[:, 7] < 0.04))
    np.testing.assert_allclose(noisy.episode.actions[:grasp], clean.episode.actions[:grasp], atol=1e-6)
    # The noise is gone by the release (the expert lowers the cube noise-free): the arm reaches its targets there.
    release = int(np.flatnonzero(np.diff((noisy.episode.actions[:, 7] > 0.04).astype(int)) == 1)[0]) + 1
    assert np.abs(noisy.episode.actions[release - 2 : release, :7] - noisy.episode.states[release - 1 : release + 1, :7]).max() < 0.004


def test_the_expert_puts_the_held_cube_not_the_tcp_where_it_belongs(env):
    """DART noise during the grasp leaves the cube off-centre in the fingers; the insert expert makes
    up for it on the way down and lands it within the slot's clearance."""
    from wam_ros.sim.tasks import slot_offset

    result = record_demo(env, "insert", 3, render=False, action_noise_rad=0.02)
    assert result.success, result.episode.extra
    assert np.abs(slot_offset(env.spec, env.object_pose(env.spec.cubes[0])[0])).max() < 0.004


def test_expert_moves_are_straight_and_below_the_speed_cap():
    assert closest_grasp_yaw(math.radians(80)) == pytest.approx(math.radians(-10))
    rotation = top_down_rotation(0.3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    env = TabletopEnv(ROBOT)
    try:
        env.reset("reach", 2)
        expert = make_expert(env)
        positions = []
        while not expert.done:
            expert.act(None)
            positions.append(expert.position.copy())
        speeds = np.linalg.norm(np.diff(positions, axis=0), axis=1) / env.config.control_period_s
        assert speeds.max() <= ROBOT.safety.ee_speed_max_m_s
    finally:
        env.close()


# -- demonstrations and videos -------------------------------------------------------------------------------
def test_sim_demos_writes_a_readable_dataset(tmp_path, monkeypatch, capsys):
    from wam_ros.cli import main

    out = tmp_path / "demos"
    assert main(["sim-demos", "--task", "reach", "--episodes", "2", "--out", str(out), "--seed-start", "10", "--video"]) == 0
    dataset = EpisodeDataset(out)
    assert len(dataset) == 2 and dataset.info.fps == 10.0
    assert dataset.info.state_names == [*ROBOT.arm.joint_names, "gripper_width"] == dataset.info.action_names
    assert dataset.info.cameras == {c.name: (c.height, c.width) for c in ROBOT.cameras}
    episode = dataset.episode(1)
    assert episode.success and episode.seed == 11 and episode.instruction == "move the gripper to the yellow ball"
    assert episode.subtasks[0].start == 0 and episode.subtasks[-1].end == episode.length
    assert episode.images["front"].shape[0] == episode.length == episode.actions.shape[0]
    np.testing.assert_allclose(episode.timestamps[:3], [0.0, 0.1, 0.2], atol=1e-9)
    assert (out / "videos" / "episode_000001.mp4").stat().st_size > 1000
    assert json.loads((out / "meta" / "info.json").read_text())["total_episodes"] == 2

    # A rerun continues with new seeds; Ctrl-C keeps the finished episodes.
    import wam_ros.sim.demos as demos

    calls = []
    original = demos.record_demo

    def interrupted(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(demos, "record_demo", interrupted)
    assert main(["sim-demos", "--task", "reach", "--episodes", "3", "--out", str(out), "--seed-start", "10"]) == 130
    assert calls == [12, 13]
    assert [e.seed for e in EpisodeDataset(out)] == [10, 11, 12]


def test_sim_demos_with_worker_processes_keeps_seed_order(tmp_path):
    from wam_ros.cli import main

    out = tmp_path / "parallel"
    assert main(["sim-demos", "--task", "reach", "--episodes", "2", "--out", str(out), "--workers", "2"]) == 0
    assert [e.seed for e in EpisodeDataset(out)] == [0, 1]


def test_sim_demos_rejects_bad_arguments(tmp_path, capsys):
    from wam_ros.cli import main

    assert main(["sim-demos", "--task", "reach", "--episodes", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--episodes and --workers must be positive" in capsys.readouterr().err
    assert main(["sim-demos", "--task", "reach", "--episodes", "1", "--out", str(tmp_path / "x"), "--action-noise-rad", "0.5"]) == 2
    assert "--action-noise-rad must lie in [0, 0.2] rad" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_episode_video_from_observations(env, tmp_path):
    import cv2

    observations = [env.reset("reach", 0)]
    for _ in range(4):
        observations[-1].images  # render before stepping on
        observations.append(env.step(np.append(ROBOT.arm.home_rad, 0.04)))
    path = write_episode_video(tmp_path / "episode.mp4", observations, fps=10, captions=["reach"] * 5)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    ok, frame = capture.read()
    assert ok and frame.shape[0] == 384
    with pytest.raises(ValueError, match="captions"):
        write_episode_video(tmp_path / "bad.mp4", observations, fps=10, captions=["x"])
    assert not (tmp_path / "bad.mp4").exists()


# -- scene shifts ------------------------------------------------------------------------------------------
CAMERA_SHIFT = {"camera_position_jitter_m": {"front": [0.03, 0.03, 0.03]}, "camera_rotation_jitter_deg": {"front": [3.0, 3.0, 3.0]}}


def _shifted_env(**overrides) -> TabletopEnv:
    return TabletopEnv(ROBOT, SimConfig.from_robot(ROBOT, overrides))


def _front_pose(env: TabletopEnv) -> tuple[np.ndarray, np.ndarray]:
    """Position and rotation (columns: optical x right, y down, z forward) of the front camera in the base frame."""
    camera = env.model.camera("front").id
    rotation = env.data.cam_xmat[camera].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # MuJoCo camera frame -> optical
    return env.data.cam_xpos[camera].copy(), rotation


def test_scene_shifts_default_to_the_nominal_scene():
    config = SimConfig.from_robot(ROBOT)
    assert config.shifted() == {}
    assert config.distractor_count == 0 and config.table_texture == "none"
    plain, with_distractor = TabletopEnv(ROBOT), _shifted_env(distractor_count=1)
    try:  # the default model has no distractor bodies
        assert with_distractor.model.nbody == plain.model.nbody + 1 and with_distractor.model.body("distractor_0")
    finally:
        plain.close()
        with_distractor.close()


def test_a_moved_camera_renders_another_image_seeded_per_episode(env):
    shifted = _shifted_env(**CAMERA_SHIFT)
    try:
        nominal_image = env.reset("pick_place", 11).images["front"]
        nominal_position, nominal_rotation = _front_pose(env)
        first = shifted.reset("pick_place", 11)
        image = first.images["front"]
        position, rotation = _front_pose(shifted)
        assert np.abs(image.astype(int) - nominal_image).mean() > 2  # the view moved
        np.testing.assert_array_equal(first.images["wrist"], env.reset("pick_place", 11).images["wrist"])  # only the front camera
        offset = position - nominal_position
        assert 0 < np.abs(offset).max() <= 0.03 + 1e-9
        angle = Rotation.from_matrix(nominal_rotation.T @ rotation).magnitude()
        assert 0 < angle <= math.radians(3.0) * math.sqrt(3) + 1e-9
        for cube in CUBES_OF_SCENE:  # the layout is the seed's, with or without the shift
            np.testing.assert_allclose(shifted.spec.cube_positions[cube], env.spec.cube_positions[cube])
        other = shifted.reset("pick_place", 12).images["front"]
        assert np.abs(other.astype(int) - image).mean() > 0.5
        again = shifted.reset("pick_place", 11)  # the same seed after another: the same camera pose and image
        np.testing.assert_array_equal(again.images["front"], image)
    finally:
        shifted.close()


def test_camera_rotation_axes_are_the_optical_frames(env):
    """A roll (about the optical z axis) keeps the viewing direction; a tilt (about x) keeps the image's x axis."""
    env.reset("pick_place", 5)
    _, nominal = _front_pose(env)
    for axis, kept, moved in ((2, 2, 0), (0, 0, 2)):
        limits = [0.0, 0.0, 0.0]
        limits[axis] = 5.0
        shifted = _shifted_env(camera_rotation_jitter_deg={"front": limits})
        try:
            shifted.reset("pick_place", 5)
            _, rotation = _front_pose(shifted)
        finally:
            shifted.close()
        np.testing.assert_allclose(rotation[:, kept], nominal[:, kept], atol=1e-9)
        assert 0 < math.degrees(math.acos(np.clip(rotation[:, moved] @ nominal[:, moved], -1, 1))) <= 5.0 + 1e-6


def test_light_table_and_cube_colour_shifts_change_what_the_camera_sees(env):
    nominal = {seed: env.reset("pick_place", seed).images["front"].astype(float) for seed in (21, 22)}
    for overrides in ({"light_intensity_jitter_fraction": 0.5}, {"table_rgb_jitter": 0.3}, {"table_texture": "checker"},
                      {"cube_rgb_jitter": 0.2}, {"camera_fovy_jitter_deg": {"front": 5.0}}):
        shifted = _shifted_env(**overrides)
        try:
            change = max(np.abs(shifted.reset("pick_place", seed).images["front"] - image).max() for seed, image in nominal.items())
        finally:
            shifted.close()
        assert change > 20, overrides
    light = _shifted_env(light_intensity_jitter_fraction=0.5)
    try:  # brightness moves with the drawn scale, the same per seed
        means = [light.reset("pick_place", seed).images["front"].mean() for seed in (1, 2, 3, 1)]
    finally:
        light.close()
    assert means[0] == means[3] and max(means) - min(means) > 5


def test_cube_sizes_are_drawn_per_cube_and_the_experts_follow_them():
    shifted = _shifted_env(cube_size_jitter_fraction=0.15)
    try:
        shifted.reset("stack", 4)
        sizes = shifted.spec.cube_sizes_m
        assert len(set(sizes.values())) == 3 and all(0.85 * 0.045 - 1e-9 <= s <= 1.15 * 0.045 + 1e-9 for s in sizes.values())
        for cube, size in sizes.items():
            assert shifted.model.geom_size[shifted.model.geom(cube).id][0] == pytest.approx(size / 2)
            assert shifted.object_pose(cube)[0][2] == pytest.approx(size / 2, abs=2e-3)  # resting on the table
        for task, seed in (("stack", 4), ("pick_place", 4)):
            result = record_demo(shifted, task, seed, render=False)
            assert result.success, (task, result.episode.extra)
    finally:
        shifted.close()
    assert make_task("stack", SimConfig()).sample(4).cube_sizes_m == {c: 0.045 for c in CUBES_OF_SCENE}


def test_distractors_stand_apart_named_by_no_instruction():
    shifted = _shifted_env(distractor_count=2)
    try:
        for task, seed in (("pick_place", 31), ("push", 32), ("stack", 33)):
            shifted.reset(task, seed)
            status = shifted.task_status()
            assert status.object_names[-2:] == ["distractor_0", "distractor_1"]
            assert "distractor" not in status.instruction
            spots = [shifted.object_pose(name)[0] for name in ("distractor_0", "distractor_1")]
            for spot, distractor in zip(spots, shifted.spec.distractors):
                assert spot[2] == pytest.approx(distractor.size_m / 2, abs=2e-3)  # on the table
                assert min(np.linalg.norm(spot[:2] - shifted.object_pose(c)[0][:2]) for c in CUBES_OF_SCENE) >= 0.069
        assert record_demo(shifted, "pick_place", 31, render=False).success
    finally:
        shifted.close()


def test_scene_shift_settings_are_checked():
    from wam_ros.robot import ConfigError
    from wam_ros.sim.config import scene_overrides

    with pytest.raises(ConfigError, match=r"camera_position_jitter_m: expected a mapping of camera names to a list of 3 numbers"):
        SimConfig.from_robot(ROBOT, {"camera_position_jitter_m": {"front": [0.03, 0.03]}})
    with pytest.raises(ConfigError, match=r"camera_rotation_jitter_deg\.side: no simulated camera"):
        SimConfig.from_robot(ROBOT, {"camera_rotation_jitter_deg": {"side": [1, 1, 1]}})
    with pytest.raises(ConfigError, match=r"light_intensity_jitter_fraction: -0.1: each must lie in \[0, 1\]"):
        SimConfig.from_robot(ROBOT, {"light_intensity_jitter_fraction": -0.1})
    with pytest.raises(ConfigError, match=r"table_texture: 'marble'"):
        SimConfig.from_robot(ROBOT, {"table_texture": "marble"})
    with pytest.raises(ConfigError, match=r"cube_size_jitter_fraction: cubes up to"):
        SimConfig.from_robot(ROBOT, {"cube_size_m": 0.07, "cube_size_jitter_fraction": 0.2})
    assert scene_overrides(items=["distractor_count=1"]) == {"distractor_count": 1}
    # a bad override is the override's problem, not the robot file's
    with pytest.raises(ConfigError, match=r"^scene override \(--sim, --sim-config\): bogus: unknown key; known: .*distractor_count"):
        SimConfig.from_robot(ROBOT, {"bogus": 1})
    with pytest.raises(ConfigError, match=r"^scene override \(--sim, --sim-config\): distractor_count: 9 is not in \[0, 5\]"):
        SimConfig.from_robot(ROBOT, {"distractor_count": 9})
    with pytest.raises(ConfigError, match=r"^scene override \(--sim, --sim-config\): table_rgb_jitter: expected a number"):
        SimConfig.from_robot(ROBOT, {"table_rgb_jitter": "lots"})


def test_sim_demos_take_scene_settings_from_a_file_and_the_command_line(tmp_path, capsys):
    from wam_ros.cli import main

    scene = tmp_path / "scene.yaml"
    scene.write_text("camera_rotation_jitter_deg: {front: [2, 2, 2]}\nlight_intensity_jitter_fraction: 0.3\n")
    out = tmp_path / "shifted"
    assert main(["sim-demos", "--task", "reach", "--episodes", "1", "--out", str(out), "--seed-start", "10000",
                 "--sim-config", str(scene), "--sim", "light_intensity_jitter_fraction=0.4"]) == 0
    extra = EpisodeDataset(out).episode(0).extra
    assert extra["sim_config"] == {"camera_rotation_jitter_deg": {"front": [2.0, 2.0, 2.0]}, "light_intensity_jitter_fraction": 0.4}
    capsys.readouterr()
    assert main(["sim-demos", "--task", "reach", "--episodes", "1", "--out", str(tmp_path / "bad"), "--sim", "bogus=1"]) == 2
    assert "scene override (--sim, --sim-config): bogus: unknown key" in capsys.readouterr().err
    assert main(["sim-demos", "--task", "reach", "--episodes", "1", "--out", str(tmp_path / "bad"), "--sim", "distractor_count"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing written
