"""The scene detector: labels from subtask spans and kinematics, the belief filter, a real (tiny) training run."""
from __future__ import annotations

import numpy as np
import pytest

from wam_ros.data.episodes import Episode, SubtaskSpan
from wam_ros.planning import success
from wam_ros.planning.domain import load_domain
from wam_ros.robot import load_robot_config

RED_IN, GREEN_IN, BLUE_IN = (("in", f"{c}_cube", "bin") for c in ("red", "green", "blue"))
NAMES = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper_width"]


@pytest.fixture(scope="module")
def domain():
    return load_domain(load_robot_config("panda_sim").extra["planner"])


@pytest.fixture(scope="module")
def config(domain):
    scene = domain.scene()
    return success.DetectorConfig(facts=tuple(success.format_fact(f) for f in success.domain_facts(domain, scene)),
                                  objects=success.positioned_objects(domain, scene))


def fake_episode(length: int, spans: list[tuple[str, int, int]], grasps: list[int], releases: list[int], succeeded: bool = True) -> Episode:
    """Joint targets that move smoothly, a gripper command that closes at ``grasps`` and opens at ``releases``."""
    t = np.linspace(0.0, 1.0, length)[:, None]
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    joints = home + 0.3 * np.sin(3 * t + np.arange(7))
    width = np.full(length, 0.08)
    for grasp, release in zip(grasps, releases):
        width[grasp:release] = 0.0
    actions = np.concatenate([joints, width[:, None]], axis=1).astype(np.float32)
    return Episode(task="bin_three", instruction="x", states=actions.copy(), actions=actions, images={},
                   subtasks=[SubtaskSpan(*s) for s in spans], success=succeeded)


def test_facts_hold_from_each_span_end_and_the_last_from_its_release(domain, config):
    scene = domain.scene()
    labeller = success.Labeller(domain, scene, config, "panda_sim", NAMES, NAMES, margin_frames=2, release_delay_frames=4)
    episode = fake_episode(100, [("put the blue cube in the bin", 0, 40), ("put the red cube in the near end of the bin", 40, 100)],
                           grasps=[10, 55], releases=[30, 80])
    labels = labeller.episode(episode)
    blue, red, green = (config.facts.index(success.format_fact(f)) for f in (BLUE_IN, RED_IN, GREEN_IN))
    # blue: its span ends at 40, so its predicate first held at frame 39; +-2 frames unlabelled
    assert (labels.facts[:37, blue] == 0).all() and (labels.facts[37:42, blue] == success.UNLABELLED).all()
    assert (labels.facts[42:, blue] == 1).all()
    # red (the last span): from the last opening (80) plus the release delay (4) = 84
    assert (labels.facts[:82, red] == 0).all() and (labels.facts[87:, red] == 1).all()
    assert (labels.facts[:, green] == 0).all()  # never moved: false throughout
    assert labels.done_frames == {0: 39, 1: 84}
    # positions: where the gripper first closed in the cube's own subtask, on the frames before it
    b = config.objects.index("blue_cube")
    assert labels.position_valid[:10, b].all() and not labels.position_valid[10:, b].any()
    tcp, _ = labeller.arm.tcp(episode.actions[:, :7])
    np.testing.assert_allclose(labels.positions[0, b], tcp[10, :2], atol=1e-6)
    assert labels.position_valid[:, config.objects.index("bin")].all()  # the bin: mean of the releases, every frame
    np.testing.assert_allclose(labels.positions[0, config.objects.index("bin")], tcp[[30, 80], :2].mean(0), atol=1e-6)


def test_a_failed_last_subtask_is_unlabelled_after_its_opening(domain, config):
    labeller = success.Labeller(domain, domain.scene(), config, "panda_sim", NAMES, NAMES)
    episode = fake_episode(60, [("put the green cube in the bin", 0, 60)], grasps=[10], releases=[40], succeeded=False)
    green = config.facts.index(success.format_fact(GREEN_IN))
    labels = labeller.episode(episode)
    assert (labels.facts[:40, green] == 0).all() and (labels.facts[40:, green] == success.UNLABELLED).all()


def test_belief_flips_only_after_consecutive_confirmations():
    belief = success.FactBelief([RED_IN], success.BeliefConfig(done_threshold=0.8, lost_threshold=0.2, confirmations=3))
    readings = [0.9, 0.9, 0.1, 0.9, 0.9, 0.95]  # one dip resets the count
    states = [belief.update({RED_IN: p}) for p in readings]
    assert [RED_IN in s for s in states] == [False, False, False, False, False, True]
    for p in (0.5, 0.3, 0.1, 0.1):  # between the thresholds nothing changes; then two lows are not enough
        belief.update({RED_IN: p})
    assert RED_IN in belief.state
    belief.update({RED_IN: 0.05})
    assert RED_IN not in belief.state


def test_relation_words_name_the_extremes(domain):
    scene = domain.scene()
    positions = {"red_cube": (0.6, 0.2), "green_cube": (0.45, 0.0), "blue_cube": (0.35, -0.25), "bin": (0.45, -0.35)}
    words = success.relation_words(positions, scene, domain)
    assert "nearest to the bin" in words["blue_cube"] and "farthest from the bin" in words["red_cube"]
    assert "leftmost" in words["red_cube"] and "rightmost" in words["blue_cube"]
    assert "nearest to the robot" in words["blue_cube"] and "farthest from the robot" in words["red_cube"]
    assert "bin" not in words


def synthetic_frames(rng: np.random.Generator, count: int, size: int = 32):
    """A grey table with a red square: inside the 'bin' region (the fact holds) or elsewhere, with noise."""
    images = np.full((count, size, size, 3), 120, np.uint8)
    images += rng.integers(0, 20, images.shape, dtype=np.uint8)
    images[:, 4:14, 4:14] = (60, 60, 60)  # the bin
    inside = rng.random(count) < 0.5
    xy = np.where(inside[:, None], rng.integers(5, 9, (count, 2)), rng.integers(16, 27, (count, 2)))
    for image, (x, y) in zip(images, xy):
        image[y:y + 4, x:x + 4] = (220, 30, 30)
    return images, inside, xy


def test_a_small_detector_learns_and_survives_a_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    config = success.DetectorConfig(facts=("in(red_cube, bin)",), objects=(), cameras=("front",), image_size=32, channels=(8, 16, 16), hidden=32)
    images, inside, _ = synthetic_frames(rng, 600)
    facts = inside[:, None].astype(np.int8)
    result = success.train(config, {"front": images}, facts, np.zeros((600, 0, 2), np.float32), np.zeros((600, 0), bool),
                           steps=150, batch_size=32, learning_rate=3e-3)
    test_images, test_inside, _ = synthetic_frames(np.random.default_rng(1), 200)
    ranges = [(0, 200)]
    report = success.evaluate(result.detector, {"front": test_images}, test_inside[:, None].astype(np.int8),
                              np.zeros((200, 0, 2), np.float32), np.zeros((200, 0), bool), ranges)
    assert report["frame_precision"] > 0.9 and report["frame_recall"] > 0.9, report
    result.detector.save(tmp_path / "det", {"note": "test"})
    loaded = success.SceneDetector.load(tmp_path / "det")
    a = result.detector.predict({"front": test_images[0]})
    b = loaded.predict({"front": test_images[0]})
    assert a.facts == pytest.approx(b.facts) and loaded.metadata["note"] == "test"
    with pytest.raises(ValueError, match="camera 'front'"):
        loaded.predict({"wrist": test_images[0]})
