"""SimRunner without ROS: the camera schedule in sim time, with and without lockstep."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from wam_ros.robot import load_robot_config
from wam_ros.sim.env import TabletopEnv
from wam_ros.sim.runner import CameraFrame, SimRunner

ROBOT = load_robot_config("panda_sim")
SIM_DURATION_S = 1.0


def run_for(runner: SimRunner, sim_duration_s: float) -> dict[str, list[float]]:
    """Run the loop until the sim clock passes ``sim_duration_s``; the stamps of every camera's frames."""
    stop = threading.Event()
    stamps: dict[str, list[float]] = {name: [] for name in runner.camera_periods_s}
    lock = threading.Lock()

    def on_joint_state(sample) -> None:
        if sample.clock_s >= sim_duration_s:
            stop.set()

    def on_frame(frame: CameraFrame) -> None:
        assert frame.rgb.shape == (ROBOT.camera(frame.camera).height, ROBOT.camera(frame.camera).width, 3)
        with lock:
            stamps[frame.camera].append(frame.clock_s)

    runner.reset("pick_place", 0)
    runner.run(stop, on_joint_state, on_frame, lambda status, clock_s: None)
    return stamps


@pytest.fixture(scope="module")
def env():
    return TabletopEnv(ROBOT)


def test_lockstep_gives_every_frame_on_its_period(env):
    runner = SimRunner(env, real_time_factor=0.0, camera_rates_hz={"front": 10.0, "wrist": 20.0}, camera_lockstep=True)
    stamps = run_for(runner, SIM_DURATION_S)
    for name, rate_hz in (("front", 10.0), ("wrist", 20.0)):
        # The last due frame may still be rendering when the loop stops: at most one fewer.
        expected = np.arange(0.0, SIM_DURATION_S + 1e-9, 1.0 / rate_hz)
        got = np.array(stamps[name])
        assert len(expected) - 1 <= len(got) <= len(expected), f"{name}: {len(got)} frames"
        np.testing.assert_allclose(got, expected[: len(got)], atol=runner.tick_s + 1e-9)


def test_without_lockstep_frames_come_late_but_never_faster_than_the_rate(env):
    """The physics does not wait for the renderer: a frame may be late (the schedule restarts from
    it), never early, so the camera rate is at most its configured rate."""
    runner = SimRunner(env, real_time_factor=0.0, camera_rates_hz={"front": 10.0, "wrist": 20.0})
    stamps = run_for(runner, SIM_DURATION_S)
    for name, rate_hz in (("front", 10.0), ("wrist", 20.0)):
        got = np.array(stamps[name])
        assert len(got) >= 2 and got[0] == pytest.approx(0.0, abs=runner.tick_s)
        assert np.all(np.diff(got) >= 1.0 / rate_hz - 1e-9), f"{name}: frames closer than the period: {np.diff(got)}"


def test_unknown_camera_rate_is_refused(env):
    with pytest.raises(ValueError, match="unknown cameras"):
        SimRunner(env, camera_rates_hz={"side": 10.0})
