"""The safety bridge's ROS-free logic: kinematics, guard, chunk timing, modes, ESTOP latch, watchdogs."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ruckig
import yaml

from wam_ros.control.bridge import BridgeSettings, SafetyBridgeCore
from wam_ros.control.chunks import ChunkInput, ChunkRejected, validate_chunk
from wam_ros.control.kinematics import ChainKinematics, KinematicsError
from wam_ros.control.checker import CommandChecker
from wam_ros.control.limits import Limits, SafetyGuard
from wam_ros.control.modes import EstopLatch, LatchState, Mode, check_request
from wam_ros.robot import load_robot_config, parse_robot_config

ROBOT = load_robot_config("panda_sim")
NAMES = ROBOT.arm.joint_names
HOME = np.array(ROBOT.arm.home_rad)
KINEMATICS = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, NAMES)
LIMITS = Limits.from_robot(ROBOT)
CHECKER = CommandChecker(ROBOT, 0.004, HOME)  # check_step: one step's geometric invariants


def panda_dh(q: np.ndarray) -> np.ndarray:
    """Panda TCP pose from Franka's published (Craig) DH table, flange 0.107 m, hand -45 deg, TCP 0.1034 m."""
    a = [0, 0, 0, 0.0825, -0.0825, 0, 0.088]
    d = [0.333, 0, 0.316, 0, 0.384, 0, 0]
    alpha = [0, -math.pi / 2, math.pi / 2, math.pi / 2, -math.pi / 2, math.pi / 2, math.pi / 2]
    pose = np.eye(4)
    for i in range(7):
        ca, sa, ct, st = math.cos(alpha[i]), math.sin(alpha[i]), math.cos(q[i]), math.sin(q[i])
        pose = pose @ np.array([[ct, -st, 0, a[i]], [st * ca, ct * ca, -sa, -sa * d[i]], [st * sa, ct * sa, ca, ca * d[i]], [0, 0, 0, 1]])
    flange = np.eye(4)
    flange[2, 3] = 0.107
    hand = np.eye(4)
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    hand[:2, :2] = [[c, -s], [s, c]]
    hand[2, 3] = 0.1034
    return pose @ flange @ hand


def make_core(tmp_path: Path, **settings) -> SafetyBridgeCore:
    return SafetyBridgeCore(ROBOT, BridgeSettings(**settings), EstopLatch(tmp_path / "estop.json"), KINEMATICS)


def chunk(stamp_s: float, positions: np.ndarray, period_s: float = 0.1, widths=(), names=NAMES, chunk_id: int = 1) -> ChunkInput:
    positions = np.atleast_2d(positions)
    return ChunkInput(stamp_s, list(names), period_s, positions.shape[0], positions.ravel().tolist(), list(widths), chunk_id)


# ---------------------------------------------------------------- kinematics
def test_fk_matches_franka_dh_table():
    rng = np.random.default_rng(1)
    configurations = rng.uniform(LIMITS.lower_rad, LIMITS.upper_rad, (50, 7))
    positions, rotations = KINEMATICS.forward(configurations)
    for q, position, rotation in zip(configurations, positions, rotations):
        expected = panda_dh(q)
        assert np.allclose(position, expected[:3, 3], atol=1e-9)
        assert np.allclose(rotation, expected[:3, :3], atol=1e-9)
    single_position, _ = KINEMATICS.forward(configurations[0])
    assert np.allclose(single_position, positions[0], atol=1e-12)
    assert np.allclose(KINEMATICS.positions(HOME), [0.307, 0.0, 0.487], atol=1e-3)  # Franka's "ready" pose


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(2)
    for q in rng.uniform(LIMITS.lower_rad, LIMITS.upper_rad, (10, 7)):
        jac, position, rotation = KINEMATICS.jacobian(q)
        step = 1e-6
        for column in range(7):
            moved = q.copy()
            moved[column] += step
            moved_position, moved_rotation = KINEMATICS.forward(moved)
            assert np.allclose((moved_position - position) / step, jac[:3, column], atol=1e-5)
            spin = (moved_rotation @ rotation.T - np.eye(3)) / step
            assert np.allclose([spin[2, 1], spin[0, 2], spin[1, 0]], jac[3:, column], atol=1e-5)


def test_prismatic_and_tilted_axes(tmp_path):
    urdf = tmp_path / "slider.urdf"
    urdf.write_text("""<robot name="slider">
      <link name="base"/><link name="carriage"/><link name="arm"/><link name="tip"/>
      <joint name="slide" type="prismatic"><parent link="base"/><child link="carriage"/><axis xyz="1 0 0"/>
        <limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
      <joint name="turn" type="revolute"><parent link="carriage"/><child link="arm"/>
        <origin xyz="0 0 0.5" rpy="0 0 0"/><axis xyz="0 1 0"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
      <joint name="tool" type="fixed"><parent link="arm"/><child link="tip"/><origin xyz="0 0 0.2"/></joint>
    </robot>""")
    chain = ChainKinematics.from_urdf(urdf, "base", "tip", ["turn", "slide"])
    position, _ = chain.forward(np.array([math.pi / 2, 0.3]))
    assert np.allclose(position, [0.5, 0.0, 0.5])  # slid 0.3 along x, then the 0.2 m tool turned to +x
    jac, _, _ = chain.jacobian(np.array([0.0, 0.0]))
    assert np.allclose(jac[:, 1], [1, 0, 0, 0, 0, 0])  # prismatic column: pure translation
    assert np.allclose(jac[:, 0], [0.2, 0, 0, 0, 1, 0])  # about +y at 0.2 m above the joint
    with pytest.raises(KinematicsError, match="no chain"):
        ChainKinematics.from_urdf(urdf, "base", "nowhere", ["turn", "slide"])
    with pytest.raises(KinematicsError, match="do not match"):
        ChainKinematics.from_urdf(urdf, "base", "tip", ["turn"])


# ---------------------------------------------------------------- guard
def test_guard_clips_steps_limits_box_and_speed():
    guard = SafetyGuard(LIMITS, KINEMATICS, 0.004)
    tcp = KINEMATICS.positions(HOME)
    result = guard.apply(HOME, tcp, HOME + 1.0)
    assert result.clipped and not CHECKER.check_step(HOME, result.position)
    assert np.linalg.norm(result.tcp_position_m - tcp) <= LIMITS.ee_speed_max_m_s * 0.004 + 1e-9
    nan = guard.apply(HOME, tcp, np.full(7, np.nan))
    assert nan.clipped == ["non_finite"] and np.array_equal(nan.position, HOME)
    # A joint beyond its band (moved there by hand) may come back but not go farther out.
    outside = HOME.copy()
    outside[3] = ROBOT.arm.position_upper_rad[3] - 0.01  # inside the hard limit, beyond the 0.1 rad margin
    further = guard.apply(outside, KINEMATICS.positions(outside), outside + np.eye(7)[3] * 0.01)
    assert further.position[3] == pytest.approx(outside[3])


def test_guard_stops_at_the_workspace_wall():
    guard = SafetyGuard(LIMITS, KINEMATICS, 0.004)
    q = HOME.copy()
    # Drive joint 2 forward until the TCP would cross the box floor or front (~0.5 m at 1 mm per step); never leaves the box.
    for _ in range(800):
        result = guard.apply(q, KINEMATICS.positions(q), q + np.eye(7)[1] * 0.01)
        assert not CHECKER.check_step(q, result.position)
        q = result.position
    assert LIMITS.box_distance_m(KINEMATICS.positions(q)) == 0.0
    assert "workspace" in result.clipped


# ---------------------------------------------------------------- chunks
def test_chunk_timeline_drops_past_actions_and_interpolates():
    targets = HOME + np.arange(5)[:, None] * 0.01
    timeline = validate_chunk(chunk(10.0, targets, widths=[0.0, 0.01, 0.02, 0.03, 0.04]), NAMES, True, 10.25, 0.05)
    assert np.allclose(timeline.times_s, [10.2, 10.3, 10.4])  # 10.0 and 10.1 are past; 10.2 starts the segment
    position, velocity, width = timeline.sample(10.25)
    assert np.allclose(position, HOME + 0.025) and np.allclose(velocity, 0.1) and width == pytest.approx(0.025)
    assert np.allclose(timeline.sample(99.0)[0], targets[-1]) and np.allclose(timeline.sample(99.0)[1], 0.0)
    shuffled = validate_chunk(chunk(10.0, targets[:, ::-1], names=NAMES[::-1]), NAMES, True, 10.0, 0.05)
    assert np.allclose(shuffled.positions, targets)  # columns reordered to the robot's joint order


@pytest.mark.parametrize("bad, check", [
    (dict(names=NAMES[:6]), "joint_names"),
    (dict(names=list(NAMES[:6]) + ["panda_joint1"]), "joint_names"),
    (dict(period_s=0.0), "control_period"),
    (dict(period_s=float("nan")), "control_period"),
    (dict(widths=[0.01, 0.02]), "gripper_widths"),
    (dict(stamp_s=20.0), "future_stamp"),
    (dict(stamp_s=5.0), "stale"),
    (dict(stamp_s=float("nan")), "stamp"),
    (dict(positions=np.full((3, 7), np.inf)), "non_finite"),
])
def test_chunk_rejections_name_the_check(bad, check):
    arguments = dict(stamp_s=10.0, positions=np.tile(HOME, (3, 1)))
    arguments.update(bad)
    with pytest.raises(ChunkRejected) as error:
        validate_chunk(chunk(**arguments), NAMES, True, 10.0, 0.05)
    assert error.value.check == check


def test_chunk_with_wrong_length_is_rejected():
    broken = ChunkInput(10.0, list(NAMES), 0.1, 3, [0.0] * 20, [], 1)
    with pytest.raises(ChunkRejected, match="joint_positions"):
        validate_chunk(broken, NAMES, True, 10.0, 0.05)


# ---------------------------------------------------------------- modes and latch
def test_transition_table():
    assert check_request(Mode.IDLE, 2, False, True)[0]
    assert not check_request(Mode.IDLE, 2, False, False)[0]  # no fresh joint states
    assert check_request(Mode.TELEOP, 2, False, True)[0] and check_request(Mode.AUTONOMY, 1, False, True)[0]
    refused, reason = check_request(Mode.AUTONOMY, 0, False, True)
    assert not refused and "HOLD first" in reason
    assert check_request(Mode.HOLD, 0, False, False)[0]
    assert not check_request(Mode.ESTOP, 3, False, True)[0]
    assert not check_request(Mode.ESTOP, 2, True, True)[0]
    assert check_request(Mode.ESTOP, 3, True, True)[0]
    assert check_request(Mode.AUTONOMY, 4, False, False)[0]
    assert "unknown mode" in check_request(Mode.IDLE, 9, False, True)[1]


def test_estop_latch_survives_and_fails_safe(tmp_path):
    latch = EstopLatch(tmp_path / "sub" / "estop.json")
    assert not latch.read().latched
    latch.write(LatchState(True, "button", 12.5))
    assert EstopLatch(latch.path).read() == LatchState(True, "button", 12.5)
    latch.path.write_text("{not json")
    state = latch.read()
    assert state.latched and "unreadable" in state.reason
    latch.path.write_text('{"latched": "yes"}')
    assert latch.read().latched


def test_estop_latched_across_core_restart(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 1.0)
    assert core.request_mode(Mode.ESTOP, "test", False, 1.0).accepted
    restarted = make_core(tmp_path)
    assert restarted.mode == Mode.ESTOP and "test" in restarted.last_stop_reason
    restarted.on_joint_state(NAMES, HOME, [], 2.0)
    assert restarted.step(2.0) is None  # latched ESTOP after a restart: the arm is not commanded
    assert not restarted.request_mode(Mode.AUTONOMY, "", True, 2.0).accepted
    assert not restarted.request_mode(Mode.HOLD, "", False, 2.0).accepted
    assert restarted.request_mode(Mode.IDLE, "reset", True, 2.0).accepted
    assert make_core(tmp_path).mode == Mode.IDLE


def test_an_unwritable_estop_latch_keeps_the_bridge_in_estop(tmp_path):
    """A latch that cannot be written could not keep an ESTOP across a restart: the bridge stays in ESTOP."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = blocker / "estop.json"  # under a regular file: not even root can create it
    core = SafetyBridgeCore(ROBOT, BridgeSettings(), EstopLatch(unwritable), KINEMATICS)
    assert core.mode == Mode.ESTOP and "cannot write the ESTOP latch" in core.last_stop_reason
    assert any(v.startswith("estop_latch") for v in core.status(0.0).violations)
    core.on_joint_state(NAMES, HOME, [], 1.0)
    refused = core.request_mode(Mode.HOLD, "operator reset", True, 1.0)
    assert not refused.accepted and refused.mode == Mode.ESTOP and "cannot write the ESTOP latch" in refused.message
    assert core.step(1.004) is None  # not commanded
    core.latch = EstopLatch(tmp_path / "estop.json")  # writable again: the reset goes through
    assert core.request_mode(Mode.HOLD, "operator reset", True, 1.0).accepted and core.mode == Mode.HOLD
    core.latch = EstopLatch(unwritable)  # the disk fails while running: ESTOP is kept, and said to be unsaved
    assert core.request_mode(Mode.ESTOP, "button", False, 1.1).accepted
    assert core.mode == Mode.ESTOP and "not persisted" in core.last_stop_reason
    assert not core.request_mode(Mode.IDLE, "operator reset", True, 1.2).accepted and core.mode == Mode.ESTOP


# ---------------------------------------------------------------- core behaviour
def run(core: SafetyBridgeCore, start_s: float, cycles: int, feed: bool = True) -> tuple[float, list]:
    outputs, now = [], start_s
    for _ in range(cycles):
        now += core.period_s
        if feed and core.commanding:
            core.on_joint_state(NAMES, core.follower.position, [], now)
        outputs.append(core.step(now))
    return now, outputs


def test_autonomy_follows_a_chunk_within_limits(tmp_path):
    core = make_core(tmp_path, inference_timeout_s=5.0)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    assert core.request_mode(Mode.AUTONOMY, "test", False, 10.0).accepted
    goal = HOME + np.array([0.2, 0.1, 0.0, 0.1, 0.0, -0.1, 0.2])
    targets = HOME + np.linspace(0, 1, 20)[:, None] * (goal - HOME)
    assert core.on_chunk(chunk(10.0, targets, widths=np.linspace(0.04, 0.0, 20)), 10.0, "a", "model")
    checker, now = CommandChecker(ROBOT, core.period_s, HOME), 10.0
    for _ in range(700):
        now, (output,) = run(core, now, 1)
        assert not checker.check(output.position, output.gripper_width_m, now)  # the HOLD at the end included
    previous = output.position
    assert core.mode == Mode.HOLD and "action_chunk_stale" in core.last_stop_reason
    assert np.allclose(previous, goal, atol=2e-3)
    assert core.deadline_to_hold_s is not None and 0 <= core.deadline_to_hold_s <= core.period_s + 1e-9


def test_watchdog_deadline_to_hold_within_one_period(tmp_path):
    core = make_core(tmp_path, inference_timeout_s=0.3)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    core.request_mode(Mode.AUTONOMY, "", False, 0.0)
    now, _ = run(core, 0.0, 100)  # no chunk at all: the silent-inference deadline is 0.3 s
    assert core.mode == Mode.HOLD and core.last_watchdog.name == "inference_silent" and not core.status(now).watchdogs_ok
    assert 0 <= core.deadline_to_hold_s <= core.period_s + 1e-9 <= ROBOT.safety.watchdog_margin_s
    core.request_mode(Mode.TELEOP, "", False, now)
    assert core.status(now).watchdogs_ok
    now, _ = run(core, now, 10)
    now, _ = run(core, now, 40, feed=False)  # joint states stop
    assert core.mode == Mode.HOLD and core.last_watchdog.name == "joint_states"
    # Confirmed on the cycle after the deadline was first seen passed: within two periods.
    assert 0 <= core.deadline_to_hold_s <= 2 * core.period_s + 1e-9 <= ROBOT.safety.watchdog_margin_s
    assert not core.request_mode(Mode.TELEOP, "", False, now).accepted  # leaving HOLD needs fresh joint states


def test_a_clock_leap_before_the_pending_joint_state_does_not_trip(tmp_path):
    """A sim-time /clock leap (or a stalled executor) runs the output cycle before the joint state
    that arrived with it: that cycle must not trip; one without any new joint state after it must."""
    core = make_core(tmp_path, inference_timeout_s=5.0)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    assert core.request_mode(Mode.TELEOP, "", False, 0.0).accepted
    now, _ = run(core, 0.0, 10)
    for leap_s in (0.15, 0.4):  # past the 0.1 s joint-state timeout
        now += leap_s
        core.step(now)  # the cycle runs first ...
        assert core.mode == Mode.TELEOP
        core.on_joint_state(NAMES, core.follower.position, [], now)  # ... then the waiting joint state is taken
        now, _ = run(core, now, 5)
        assert core.mode == Mode.TELEOP and core.status(now).watchdogs_ok
    now += 0.4
    core.step(now)
    assert core.mode == Mode.TELEOP
    core.step(now + core.period_s)  # still nothing: the stream has stopped
    assert core.mode == Mode.HOLD and core.last_watchdog.name == "joint_states"


def test_a_switch_in_motion_continues_the_command_and_one_from_rest_starts_at_the_arm(tmp_path):
    """A handover while the arm moves must not step the output back by the arm's lag (a jump of
    the controller's target); from rest the command starts where the arm is."""
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    core.request_mode(Mode.TELEOP, "", False, 0.0)
    now = 0.0
    for _ in range(50):  # jog sideways at full speed
        now += core.period_s
        core.on_teleop_twist((0.0, 0.25, 0.0), (0, 0, 0), "", now, "t", "teleop")
        core.on_joint_state(NAMES, core.follower.position, [], now)
        last = core.step(now)
    core.on_joint_state(NAMES, core.follower.position - 0.02, [], now)  # the arm lags its command by 0.02 rad per joint
    for mode in (Mode.AUTONOMY, Mode.TELEOP):
        assert core.request_mode(mode, "intervention", False, now).accepted
        now += core.period_s
        output = core.step(now)
        assert not CHECKER.check_step(last.position, output.position)  # within one step of the previous output
        assert np.max(np.abs(output.position - last.position)) > 0  # still moving: the motion carried over
        last = output
    core.request_mode(Mode.HOLD, "stop", False, now)
    while not core.follower.at_rest:
        now += core.period_s
        core.step(now)
    resting = core.follower.position - 0.01  # at rest, the held command and the arm differ (gravity sag)
    core.on_joint_state(NAMES, resting, [], now)
    assert core.request_mode(Mode.TELEOP, "", False, now).accepted
    np.testing.assert_allclose(core.follower.position, resting)


def test_teleop_twist_moves_the_tcp_and_stops_when_stale(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    core.request_mode(Mode.TELEOP, "", False, 0.0)
    start = KINEMATICS.positions(HOME)
    now = 0.0
    for _ in range(250):  # 1 s of +x at 0.1 m/s
        now += core.period_s
        core.on_teleop_twist((0.1, 0.0, 0.0), (0, 0, 0), ROBOT.base_frame, now, "t", "teleop")
        now, _ = run(core, now - core.period_s, 1)
    moved = KINEMATICS.positions(core.follower.position) - start
    assert 0.08 < moved[0] < 0.11 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    now, _ = run(core, now, 100)  # no more twists: stop within the timeout plus braking
    assert core.follower.at_rest and core.mode == Mode.TELEOP
    assert not core.on_teleop_twist((0.1, 0, 0), (0, 0, 0), "camera_frame", now, "t", "teleop")
    assert core.on_teleop_twist((1.0, 0, 0), (0, 0, 0), "", now, "t", "teleop")  # clipped to the speed cap
    assert any("ee_speed" in v for v in core.status(now).violations)


def test_second_publisher_is_refused_and_reported(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    core.request_mode(Mode.AUTONOMY, "", False, 10.0)
    first = chunk(10.0, np.tile(HOME, (10, 1)))
    assert core.on_chunk(first, 10.0, "gid-a", "/wam_inference")
    assert not core.on_chunk(first, 10.01, "gid-b", "/impostor")
    status = core.status(10.01)
    assert status.command_source == "/wam_inference"
    assert any("multiple_publishers" in v and "/impostor" in v for v in status.violations)
    core.observe_publishers(core.CHUNK_TOPIC, ["/impostor", "/wam_inference"])
    assert any("2 publishers" in v for v in core.status(10.02).violations)


def test_a_refused_publisher_is_named_once_the_graph_knows_it(tmp_path):
    """A new publisher's first message can arrive before discovery names its node: the refusal is
    reported by its id, and once more by name when the name is known; then no more."""
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    core.request_mode(Mode.AUTONOMY, "", False, 10.0)
    first = chunk(10.0, np.tile(HOME, (10, 1)))
    assert core.on_chunk(first, 10.0, "gid-a", "/wam_inference")
    refusals = []
    for step, name in enumerate(("", "", "/right/wam_inference", "/right/wam_inference")):
        assert not core.on_chunk(first, 10.01 + step * 0.01, "gid-b", name)
        refusals += [v for v in core.status(10.01 + step * 0.01).violations if "refused messages" in v]
    assert len(refusals) == 2 and "gid-b" in refusals[0] and "/right/wam_inference" in refusals[1]


def test_a_refused_chunk_does_not_take_the_command_lock(tmp_path):
    """A stray node's stale chunk arriving first (another stack's inference node, a replayed bag)
    used to take the free lock and lock out the policy that followed it."""
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    core.request_mode(Mode.AUTONOMY, "", False, 10.0)
    assert not core.on_chunk(chunk(0.0, HOME), 10.0, "gid-stray", "/right/wam_inference")  # stamped 10 s ago: stale
    assert any("/right/wam_inference refused: stale" in v for v in core.status(10.0).violations)
    assert core.on_chunk(chunk(10.0, np.tile(HOME, (10, 1))), 10.01, "gid-a", "/left/wam_inference")
    assert core.status(10.01).command_source == "/left/wam_inference"


def test_joint_states_come_from_one_publisher(tmp_path):
    core = make_core(tmp_path)
    assert core.on_joint_state(NAMES, HOME, [], 10.0, 0.0, "gid-arm", "/driver")  # the first publisher holds the lock
    assert core.request_mode(Mode.TELEOP, "", False, 10.0).accepted
    rogue = HOME + 0.3
    assert not core.on_joint_state(NAMES, rogue, [], 10.01, 0.0, "gid-rogue", "/rogue")
    assert np.array_equal(core.measured.position, HOME)  # its joint states are refused ...
    assert core.mode == Mode.HOLD and "/rogue" in core.last_stop_reason  # ... and the arm stops
    assert any("foreign_publisher" in v and "/rogue" in v for v in core.status(10.01).violations)
    core.on_joint_state(NAMES, HOME, [], 10.02, 0.0, "gid-arm", "/driver")
    refused = core.request_mode(Mode.TELEOP, "", False, 10.02)
    assert not refused.accepted and "/rogue" in refused.message
    core.observe_joint_state_publishers({"gid-arm": "/driver", "gid-rogue": "/rogue"}, 10.5)  # still there
    assert not core.request_mode(Mode.TELEOP, "", False, 10.02).accepted
    core.observe_joint_state_publishers({"gid-arm": "/driver"}, 10.5)  # gone
    core.on_joint_state(NAMES, HOME, [], 10.5, 0.0, "gid-arm", "/driver")
    assert core.request_mode(Mode.TELEOP, "", False, 10.5).accepted
    # Publishers of other joints (a gripper) are no second arm.
    assert not core.on_joint_state(["finger"], [0.01], [], 10.51, 0.0, "gid-hand", "/hand") and core.mode == Mode.TELEOP
    # The driver restarts (a new GID): the lock is released once the old one has left the graph.
    core.request_mode(Mode.HOLD, "", False, 10.6)
    core.observe_joint_state_publishers({"gid-arm-2": "/driver"}, 11.0)
    assert core.on_joint_state(NAMES, HOME, [], 11.0, 0.0, "gid-arm-2", "/driver") and not core.foreign


def test_the_robot_config_names_the_joint_state_publisher(tmp_path):
    data = yaml.safe_load(ROBOT.path.read_text())
    data["robot"]["safety"]["joint_state_publisher"] = "/driver"  # a fully qualified node name (the node resolves relative ones)
    robot = parse_robot_config(ROBOT.path, data)
    assert robot.safety.joint_state_publisher == "/driver" and ROBOT.safety.joint_state_publisher == ""
    core = SafetyBridgeCore(robot, BridgeSettings(), EstopLatch(tmp_path / "estop.json"), KINEMATICS)
    assert not core.on_joint_state(NAMES, HOME, [], 10.0, 0.0, "gid-x", "")  # not identified yet: waits for the graph
    assert core.measured is None and not core.foreign
    assert not core.on_joint_state(NAMES, HOME, [], 10.0, 0.0, "gid-x", "/early_bird")  # first, but not the one named
    assert core.measured is None and "/driver" in core.status(10.0).violations[-1]
    assert core.on_joint_state(NAMES, HOME, [], 10.0, 0.0, "gid-d", "/driver")


def test_joint_state_ages_come_from_the_header_stamp(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0, stamp_s=9.95)  # measured 50 ms before it arrived
    assert core.status(10.0).joint_state_age_s == pytest.approx(0.05)
    core.on_joint_state(NAMES, HOME, [], 10.0, stamp_s=0.0)  # no stamp: its arrival counts
    assert core.status(10.0).joint_state_age_s == 0.0
    core.on_joint_state(NAMES, HOME, [], 10.0, stamp_s=10.5)  # ahead of this clock: counts as now, and is reported
    status = core.status(10.0)
    assert status.joint_state_age_s == 0.0 and any("synchronized" in v for v in status.violations)
    core.on_joint_state(NAMES, HOME, [], 10.0, stamp_s=7.0)  # 3 s old when it arrives (a host clock behind)
    refused = core.request_mode(Mode.TELEOP, "", False, 10.0)
    assert not refused.accepted and "3.000 s old" in refused.message
    # A stream that arrives on time but is stamped too long ago trips the joint-state watchdog.
    core.on_joint_state(NAMES, HOME, [], 10.0, stamp_s=10.0)
    assert core.request_mode(Mode.TELEOP, "", False, 10.0).accepted
    now = 10.0
    for _ in range(10):
        now += core.period_s
        core.on_joint_state(NAMES, core.follower.position, [], now, stamp_s=now - 0.2)
        core.step(now)
    assert core.mode == Mode.HOLD and core.last_watchdog.name == "joint_states"


def test_a_chunk_stamped_in_the_future_is_refused_with_the_reason(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    core.request_mode(Mode.AUTONOMY, "", False, 10.0)
    assert not core.on_chunk(chunk(10.3, np.tile(HOME, (5, 1))), 10.0, "m", "model")  # 0.3 s ahead, more than 0.05 s
    violation = core.status(10.0).violations[-1]
    assert "future_stamp" in violation and "max_future_stamp_s" in violation and "synchronized" in violation


def test_non_finite_inputs_hold_and_lose_nothing(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 10.0)
    core.request_mode(Mode.AUTONOMY, "", False, 10.0)
    bad = np.tile(HOME, (4, 1))
    bad[2, 3] = np.nan
    assert not core.on_chunk(chunk(10.0, bad), 10.0, "a", "model")
    assert core.mode == Mode.HOLD and "non-finite" in core.last_stop_reason
    assert not core.on_joint_state(NAMES, np.full(7, np.inf), [], 10.0)
    assert np.all(np.isfinite(core.measured.position))  # the last good measurement is kept
    assert core.step(10.004) is not None  # HOLD keeps commanding the held position
    assert core.status(10.004).violation_count >= 2


def run_checked(core: SafetyBridgeCore, checker: CommandChecker, start_s: float, cycles: int, feed=None) -> float:
    """Output cycles, each checked by the independent checker; ``feed(now)`` sends inputs before each cycle."""
    now = start_s
    for _ in range(cycles):
        now += core.period_s
        if feed is not None:
            feed(now)
        output = core.step(now)
        problems = checker.check_stop() if output is None else checker.check(output.position, output.gripper_width_m, now)
        assert not problems, f"{core.mode.name} at {now:.3f} s: {problems}"
        core.on_joint_state(NAMES, checker.previous, [], now)  # the arm reaches each command
    return now


WRIST_GOAL = HOME + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5])  # wrist roll only: no TCP travel


def wrist_spinning(tmp_path: Path) -> tuple[SafetyBridgeCore, CommandChecker, float]:
    """A core in TELEOP whose wrist turns fast towards WRIST_GOAL (the leader arm sending it every cycle)."""
    core = make_core(tmp_path)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    core.request_mode(Mode.TELEOP, "", False, 0.0)
    checker = CommandChecker(ROBOT, core.period_s, HOME)
    now = run_checked(core, checker, 0.0, 60, lambda t: core.on_teleop_joints(NAMES, WRIST_GOAL, t, "t", "leader"))
    assert abs(core.follower.velocity[6]) > 0.5
    return core, checker, now


def test_hold_brakes_smoothly_from_motion(tmp_path):
    core, checker, now = wrist_spinning(tmp_path)
    assert not core.at_standstill  # what a shutdown waits for: an arm moving in TELEOP is not at standstill
    core.request_mode(Mode.HOLD, "test", False, now)
    run_checked(core, checker, now, 100)  # every command within the acceleration and jerk limits
    assert core.follower.at_rest and core.at_standstill


def test_a_ruckig_failure_mid_motion_brakes_within_the_limits(tmp_path, monkeypatch):
    core, checker, now = wrist_spinning(tmp_path)
    speed = abs(core.follower.velocity[6])

    def no_trajectory(*args):
        raise ruckig.RuckigError("injected failure")

    monkeypatch.setattr(core.follower, "_otg", SimpleNamespace(update=no_trajectory))
    start = core.follower.position[6]
    now = run_checked(core, checker, now, 100, lambda t: core.on_teleop_joints(NAMES, WRIST_GOAL, t, "t", "leader"))
    assert core.follower.at_rest and core.mode == Mode.TELEOP
    # It braked at the acceleration limit, not instantly: the stop took about v^2 / 2a.
    braking_rad = abs(core.follower.position[6] - start)
    assert braking_rad == pytest.approx(speed ** 2 / (2 * ROBOT.arm.acceleration_max_rad_s2[6]), rel=0.2)
    assert any(v.startswith("motion_generator") for v in core.status(now).violations)


def test_leader_joint_targets_expire_like_twists(tmp_path):
    core, checker, now = wrist_spinning(tmp_path)  # the leader arm goes silent here
    now = run_checked(core, checker, now, 100)
    assert core.follower.at_rest and core.mode == Mode.TELEOP
    assert core.follower.position[6] < WRIST_GOAL[6] - 0.5  # stopped on the way, not at the last target


def test_switches_while_braking_neither_jump_nor_stop_the_command(tmp_path):
    core, checker, now = wrist_spinning(tmp_path)
    core.request_mode(Mode.HOLD, "test", False, now)
    now = run_checked(core, checker, now, 5)
    assert core.request_mode(Mode.AUTONOMY, "resume", False, now).accepted  # carries on from the braking state
    now = run_checked(core, checker, now, 5)
    core.request_mode(Mode.HOLD, "test", False, now)
    now = run_checked(core, checker, now, 5)
    assert core.request_mode(Mode.IDLE, "done", False, now).accepted  # commands cease once braked to rest
    now = run_checked(core, checker, now, 100)
    assert core.step(now + core.period_s) is None and not core.commanding


def test_limit_trips_brake_within_the_limits(tmp_path):
    """A twist into the workspace wall, and a chunk past a joint limit: the arm stops at them, braking within the limits."""
    core = make_core(tmp_path, inference_timeout_s=5.0)
    core.on_joint_state(NAMES, HOME, [], 0.0)
    core.request_mode(Mode.TELEOP, "", False, 0.0)
    checker = CommandChecker(ROBOT, core.period_s, HOME)
    now = run_checked(core, checker, 0.0, 500, lambda t: core.on_teleop_twist((-0.25, 0.0, 0.0), (0, 0, 0), "", t, "t", "teleop"))
    tcp = KINEMATICS.positions(core.follower.position)
    assert tcp[0] == pytest.approx(ROBOT.safety.workspace_min_m[0], abs=1e-3) and core.follower.at_rest  # at the back wall
    core.request_mode(Mode.AUTONOMY, "", False, now)
    beyond = core.follower.position + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0])  # far past joint 7's limit
    core.on_chunk(chunk(now, np.vstack([core.follower.position] + [beyond] * 9), period_s=0.5), now, "m", "model")
    run_checked(core, checker, now, 500)
    assert core.follower.position[6] == pytest.approx(LIMITS.upper_rad[6], abs=1e-3)


def test_gripper_commands_are_rate_limited_and_clipped(tmp_path):
    core = make_core(tmp_path)
    core.on_joint_state(list(NAMES) + list(ROBOT.gripper.joint_names), list(HOME) + [0.0, 0.0], [], 0.0)
    core.request_mode(Mode.TELEOP, "", False, 0.0)
    core.on_teleop_gripper(1.0, 0.0, "g", "teleop")  # far beyond the 0.08 m opening
    widths = [o.gripper_width_m for o in run(core, 0.0, 400)[1] if o.gripper_width_m is not None]
    assert widths[-1] == pytest.approx(ROBOT.gripper.width_max_m)
    assert np.all(np.diff(widths) <= ROBOT.gripper.speed_max_m_s * core.period_s + 1e-12)
    assert widths[0] <= ROBOT.gripper.speed_max_m_s * core.period_s + 1e-12  # starts from the measured 0 m


def test_settings_are_checked():
    with pytest.raises(ValueError, match="at least 250 Hz"):
        BridgeSettings(output_rate_hz=100.0).validate(0.05)
    with pytest.raises(ValueError, match="joint_state_timeout_s"):
        BridgeSettings(joint_state_timeout_s=-1.0).validate(0.05)
    with pytest.raises(ValueError, match="watchdog margin"):
        BridgeSettings(output_rate_hz=250.0).validate(0.005)
