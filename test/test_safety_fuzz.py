"""Property-based fuzzing of the bridge's ROS-free command pipeline (hypothesis, >= 10^4 cases).

Each case starts a bridge core at a random arm pose (often beyond the joint margin or with the
TCP outside the workspace box), enters TELEOP or AUTONOMY and feeds a random sequence of inputs:
chunks with NaN/inf, huge jumps, wrong joint names and lengths, stale and future stamps,
out-of-box targets; teleop twists and joint commands; mode requests; joint states that stop.
After every output cycle the independent checker (:class:`wam_ros.control.checker.CommandChecker`:
limits, workspace, speed cap, acceleration, jerk, gripper width and speed) must find nothing.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wam_ros.control.bridge import BridgeSettings, SafetyBridgeCore
from wam_ros.control.chunks import ChunkInput
from wam_ros.control.checker import CommandChecker
from wam_ros.control.kinematics import ChainKinematics
from wam_ros.control.modes import MemoryLatch, Mode
from wam_ros.robot import load_robot_config

ROBOT = load_robot_config("panda_sim")
NAMES = list(ROBOT.arm.joint_names)
KINEMATICS = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, NAMES)
HARD_LOWER = np.array(ROBOT.arm.position_lower_rad)
HARD_UPPER = np.array(ROBOT.arm.position_upper_rad)
# Short timeouts: the watchdogs trip within the few cycles of a case.
SETTINGS = BridgeSettings(joint_state_timeout_s=0.008, inference_timeout_s=0.03)
CASES_PER_TEST = 5000  # two tests: 10^4 cases in CI
FUZZ = settings(max_examples=CASES_PER_TEST, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])



NASTY = (math.nan, math.inf, -math.inf, 1e6, -1e6, 1e300)
NAME_VARIANTS = (NAMES, NAMES[::-1], NAMES[:6], NAMES + ["panda_finger_joint1"], NAMES[:6] + ["elbow"])


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# Hypothesis draws the structure of a case (which inputs, in which order, each with its own
# seed); the numbers inside an input come from a numpy generator with that seed. This keeps a
# case at a few milliseconds, so CI affords 10^4 of them.
def joint_vector(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """Around ``base``: small to huge offsets, sometimes one nasty value."""
    vector = base + rng.uniform(-1.0, 1.0, 7) * pick(rng, (0.01, 0.3, 1.5, 50.0))
    if rng.integers(10) == 0:
        vector[rng.integers(7)] = pick(rng, NASTY)
    return vector


def make_chunk(rng: np.random.Generator, now_s: float, base: np.ndarray) -> ChunkInput:
    horizon = int(rng.integers(1, 13))
    names = NAME_VARIANTS[0] if rng.integers(2) else pick(rng, NAME_VARIANTS)
    rows = [joint_vector(rng, base) for _ in range(min(horizon, 2))]
    flat = np.array([rows[i % len(rows)] for i in range(horizon)]).ravel().tolist()
    length = pick(rng, ("right", "right", "short", "long"))
    flat = flat[:-1] if length == "short" else flat + [0.0] if length == "long" else flat
    period = pick(rng, (0.1, 0.05, 0.02, 0.0, -0.1, math.nan, 5.0))
    stamp = now_s + pick(rng, (0.0, -0.05, -0.5, -5.0, 0.03, 1.0, math.nan))
    widths = pick(rng, ([], [0.04] * horizon, [0.5] * horizon, [-1.0] * horizon, [math.nan] * horizon, [0.01]))
    return ChunkInput(stamp, names, period, horizon, flat, widths, int(rng.integers(2**32)))


def scenarios(teleop: bool):
    kinds = ["twist", "joints", "gripper", "cycles", "cycles", "mode", "stale"] if teleop else \
        ["chunk", "chunk", "cycles", "cycles", "mode", "stale", "impostor"]
    return st.tuples(st.integers(0, 2**32), st.booleans(), st.lists(st.sampled_from(kinds), min_size=1, max_size=5))


def _run_scenario(seed: int, near_home: bool, events: list[str], teleop: bool) -> None:
    rng = np.random.default_rng(seed)
    if near_home:  # inside the box with room to move
        start = np.array(ROBOT.arm.home_rad) + rng.uniform(-0.3, 0.3, 7)
    else:  # anywhere within the hard limits: often beyond the margin, TCP outside the box
        start = HARD_LOWER + rng.uniform(0.0, 1.0, 7) * (HARD_UPPER - HARD_LOWER)
    core = SafetyBridgeCore(ROBOT, SETTINGS, MemoryLatch(), KINEMATICS)
    now = 100.0
    core.on_joint_state(NAMES, start, [], now)
    core.request_mode(Mode.TELEOP if teleop else Mode.AUTONOMY, "fuzz", False, now)
    checker = CommandChecker(ROBOT, core.period_s, start)  # each output against those before
    feeding = True

    def cycle(count: int) -> None:
        nonlocal now
        for _ in range(count):
            now += core.period_s
            output = core.step(now)
            if output is None:
                assert core.mode in (Mode.IDLE, Mode.ESTOP)
                problems = checker.check_stop()
            else:
                problems = checker.check(output.position, output.gripper_width_m, now)
            assert not problems, f"unsafe output in {core.mode.name}: {problems}"
            if feeding:  # the arm reaches each command: the measured state is the last output
                core.on_joint_state(NAMES, checker.previous, [], now)

    for kind in events:
        event = rng
        if kind == "chunk":
            core.on_chunk(make_chunk(event, now, checker.previous), now, "model", "/wam_inference")
        elif kind == "impostor":
            core.on_chunk(make_chunk(event, now, checker.previous), now, "other", "/impostor")
        elif kind == "twist":
            linear = event.uniform(-0.5, 0.5, 3) * pick(event, (0.1, 1.0, 100.0))
            if event.integers(10) == 0:
                linear[event.integers(3)] = pick(event, NASTY)
            frame = pick(event, ("", ROBOT.base_frame, ROBOT.tcp_frame, "world"))
            core.on_teleop_twist(linear, event.uniform(-3.0, 3.0, 3), frame, now, "teleop", "/teleop")
        elif kind == "joints":
            names = pick(event, (NAMES, NAMES[::-1], NAMES[:5]))
            core.on_teleop_joints(names, joint_vector(event, checker.previous).tolist()[: len(names)], now, "leader", "/leader")
        elif kind == "gripper":
            core.on_teleop_gripper(pick(event, (0.0, 0.04, 0.08, -1.0, 1.0, *NASTY)), now, "teleop", "/teleop")
        elif kind == "mode":
            core.request_mode(int(event.integers(0, 7)), "fuzz", bool(event.integers(2)), now)
        elif kind == "stale":
            feeding = False
            cycle(int(SETTINGS.joint_state_timeout_s / core.period_s) + 2)
            feeding = True
            continue
        cycle(int(event.integers(1, 3)))
    assert np.all(np.isfinite(core.follower.position))


@FUZZ
@given(scenario=scenarios(teleop=False))
def test_fuzzed_chunks_never_produce_an_unsafe_output(scenario):
    _run_scenario(*scenario, teleop=False)


@FUZZ
@given(scenario=scenarios(teleop=True))
def test_fuzzed_teleop_never_produces_an_unsafe_output(scenario):
    _run_scenario(*scenario, teleop=True)
