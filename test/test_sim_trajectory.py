"""JointTrajectory semantics of the simulated arm (joint_trajectory_controller-like), without ROS."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wam_ros.sim.trajectory import TrajectoryError, TrajectoryFollower


def sample(follower: TrajectoryFollower, times: list[float]) -> tuple[np.ndarray, np.ndarray]:
    positions, velocities = np.zeros((len(times), follower.dof)), np.zeros((len(times), follower.dof))
    follower.sample(np.array(times), positions, velocities)
    return positions, velocities


def test_points_are_interpolated_linearly_from_the_current_target_and_held_after():
    follower = TrajectoryFollower(np.zeros(2))
    follower.replace(now_s=1.0, start_s=0.0, times_from_start_s=np.array([0.5, 1.0]), positions=np.array([[1.0, 2.0], [1.0, 0.0]]))
    positions, velocities = sample(follower, [1.0, 1.25, 1.5, 1.75, 2.0, 3.0])
    np.testing.assert_allclose(positions[:, 0], [0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(positions[:, 1], [0.0, 1.0, 2.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(velocities[1], [2.0, 4.0])
    np.testing.assert_allclose(velocities[-1], [0.0, 0.0])  # holds after the last point


def test_velocities_give_a_cubic_that_meets_them():
    follower = TrajectoryFollower(np.zeros(1))
    follower.replace(0.0, 0.0, np.array([1.0]), np.array([[1.0]]), velocities=np.array([[0.0]]))
    positions, velocities = sample(follower, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(positions[:, 0], [0.0, 0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(velocities[:, 0], [0.0, 1.5, 0.0], atol=1e-12)  # smoothstep: peak 1.5 at the middle


def test_a_new_trajectory_replaces_the_old_one_from_its_start_time():
    follower = TrajectoryFollower(np.zeros(1))
    follower.replace(0.0, 0.0, np.array([1.0]), np.array([[1.0]]))
    # Starts at t = 0.5 (absolute stamp); until then the old one runs, then it joins from there.
    follower.replace(0.2, 0.5, np.array([0.5]), np.array([[-1.0]]))
    positions, _ = sample(follower, [0.2, 0.4, 0.5, 0.75, 1.0, 2.0])
    np.testing.assert_allclose(positions[:, 0], [0.2, 0.4, 0.5, -0.25, -1.0, -1.0], atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=3, max_size=3), st.floats(0.001, 0.05), st.integers(2, 40))
def test_streaming_never_jumps(targets, period_s, messages):
    """Messages every period with points ahead: the target is continuous across every message."""
    follower = TrajectoryFollower(np.zeros(1))
    now = 0.0
    previous, _ = sample(follower, [now])
    for k in range(messages):
        ahead = np.array([2, 4, 6]) * period_s
        follower.replace(now, 0.0, ahead, np.array(targets).reshape(3, 1) * (k + 1) / messages)
        current, _ = sample(follower, [now])
        assert current[0, 0] == pytest.approx(previous[0, 0], abs=1e-9)  # no jump at the hand-over
        now += period_s
        previous, _ = sample(follower, [now])


def test_empty_trajectory_stops_where_the_target_is():
    follower = TrajectoryFollower(np.zeros(1))
    follower.replace(0.0, 0.0, np.array([1.0]), np.array([[1.0]]))
    follower.replace(0.5, 0.0, np.array([]), np.zeros((0, 1)))
    positions, velocities = sample(follower, [0.5, 1.0, 5.0])
    np.testing.assert_allclose(positions[:, 0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(velocities[:, 0], 0.0)


def test_points_in_the_past_are_dropped():
    follower = TrajectoryFollower(np.zeros(1))
    follower.replace(now_s=1.0, start_s=0.9, times_from_start_s=np.array([0.05, 0.2]), positions=np.array([[5.0], [1.0]]))
    positions, _ = sample(follower, [1.0, 1.05, 1.1])
    np.testing.assert_allclose(positions[:, 0], [0.0, 0.5, 1.0])  # joins the first future point, never visits 5.0


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"times_from_start_s": [0.1], "positions": [[np.nan]]}, "non-finite"),
        ({"times_from_start_s": [0.2, 0.1], "positions": [[0.0], [0.1]]}, "strictly increasing"),
        ({"times_from_start_s": [0.1], "positions": [[0.0, 0.0]]}, "expected 1"),
        ({"times_from_start_s": [0.1], "positions": [[3.0]]}, "outside"),
        ({"times_from_start_s": [0.1], "positions": [[0.0]], "start_s": 100.0}, "in the future"),
    ],
)
def test_bad_trajectories_are_refused_and_change_nothing(kwargs, reason):
    follower = TrajectoryFollower(np.zeros(1), lower_rad=np.array([-2.0]), upper_rad=np.array([2.0]))
    follower.replace(0.0, 0.0, np.array([1.0]), np.array([[1.0]]))
    before, _ = sample(follower, [0.5, 1.5])
    arguments = {"now_s": 0.0, "start_s": 0.0, **kwargs}
    arguments["times_from_start_s"] = np.array(arguments["times_from_start_s"])
    arguments["positions"] = np.array(arguments["positions"])
    with pytest.raises(TrajectoryError, match=reason):
        follower.replace(**arguments)
    after, _ = sample(follower, [0.5, 1.5])
    np.testing.assert_array_equal(before, after)
