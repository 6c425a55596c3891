"""Object fidelity of predicted frames (wam_ros.model.fidelity) on real sim frames."""
from __future__ import annotations

import numpy as np
import pytest

from wam_ros.model.camera import TablePlaneCamera
from wam_ros.model.fidelity import FidelityReport, colour_masks, compare, locate_cubes
from wam_ros.robot import load_robot_config

COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def scenes():
    """Front frames of two bin_three seeds with the sim's cube positions, and the front camera."""
    from wam_ros.sim import TabletopEnv

    robot = load_robot_config("panda_sim")
    env = TabletopEnv(robot)
    try:
        frames = []
        for seed in (3, 4):
            env.reset("bin_three", seed)
            truth = {c: env.object_pose(f"{c}_cube")[0][:2] for c in COLOURS}
            frames.append((env.render(["front"])["front"], truth))
    finally:
        env.close()
    return frames, TablePlaneCamera.from_robot(robot, "front")


def test_cubes_are_located_on_the_table_within_a_centimetre(scenes):
    frames, camera = scenes
    for frame, truth in frames:
        found = locate_cubes(frame, camera)
        for colour in COLOURS:
            assert found[colour] is not None, colour
            assert 100.0 * np.linalg.norm(found[colour] - truth[colour]) < 1.0, (colour, found[colour], truth[colour])


def test_a_cube_missing_from_the_prediction_counts_as_not_located(scenes):
    frames, camera = scenes
    real = frames[0][0]
    erased = real.copy()
    erased[colour_masks(real)["blue"]] = np.median(real.reshape(-1, 3), axis=0).astype(real.dtype)  # paint blue over with the table
    report = FidelityReport()
    compare(report, "copy", real, real, camera)
    compare(report, "erased", erased, real, camera)
    assert locate_cubes(erased, camera)["blue"] is None
    copy, missing = report.summary("copy"), report.summary("erased")
    assert copy == {"cube_observations": 3, "missing_share": 0.0, "error_cm_median": 0.0, "error_cm_mean": 0.0, "within_1cm_share": 1.0}
    assert missing["cube_observations"] == 3 and missing["missing_share"] == pytest.approx(1 / 3)
    assert missing["within_1cm_share"] == pytest.approx(2 / 3) and missing["error_cm_median"] == 0.0
