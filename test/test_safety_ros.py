"""The safety bridge node as a real process over real DDS: watchdogs, ESTOP latch, switching, command lock.

The arm is a small echo in the test process (:class:`EchoArm`): it publishes /joint_states with
the last commanded positions (perfect tracking), or a frozen pose when asked to.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from ros_harness import wait_until
from wam_ros.control.kinematics import ChainKinematics
from wam_ros.control.limits import Limits
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
from wam_ros.robot import load_robot_config, robot_config_path
from wam_ros.ros import qos
from wam_ros.ros.conversions import seconds_to_time, time_to_seconds
from wam_ros_interfaces.srv import SetMode

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
NAMES = list(ROBOT.arm.joint_names)
HOME = np.array(ROBOT.arm.home_rad)
LIMITS = Limits.from_robot(ROBOT)
KINEMATICS = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, NAMES)
PERIOD_S = 1.0 / 250.0
STEP_MAX = LIMITS.step_max_rad(PERIOD_S)
JOINT_STATE_TIMEOUT_S = 0.5
DELIVERY_ALLOWANCE_S = 0.25  # a loaded host's DDS delivery between two processes, at most (watchdog checks)
LOST_JOINT_STATES_S = 0.05  # ten 200 Hz joint states lost at the end of the stream, at most
LOST_COMMANDS_TOLERATED = 2  # consecutive 250 Hz commands the test process may miss on a busy host


def start_bridge(processes, tmp_path: Path, name: str = "safety_bridge", **overrides):
    # joint_state_timeout_s above the default 0.1 s: the test process that plays the arm stalls for
    # 80 ms on a loaded 2-core host (measured) and more on CI, and a spurious HOLD would hide what a
    # test checks.
    parameters = dict(robot_config=str(robot_config_path("panda_sim")), estop_latch_file=str(tmp_path / "estop.json"),
                      status_rate_hz=20.0, joint_state_timeout_s=JOINT_STATE_TIMEOUT_S)
    parameters.update(overrides)
    return processes.start_node("safety_bridge", name=name, **parameters)


class EchoArm:
    """A perfectly tracking arm: /joint_states = the last commanded positions, published at 200 Hz."""

    def __init__(self, ros, start: np.ndarray = HOME, profile: QoSProfile = qos.SENSORS) -> None:
        self.ros = ros
        self.position = start.copy()
        self.frozen = False
        self.commands: list[tuple[float, np.ndarray]] = []  # (receive time, commanded positions)
        self.published: list[tuple[float, np.ndarray]] = []  # (header stamp [s, ROS time], positions)
        self.lock = threading.Lock()
        self.publisher = ros.node.create_publisher(JointState, "/joint_states", profile)
        ros.node.create_subscription(JointTrajectory, ROBOT.backend.joint_trajectory_topic, self._on_command, qos.COMMANDS)
        self.timer = ros.node.create_timer(0.005, self._publish)

    def _on_command(self, msg: JointTrajectory) -> None:
        positions = np.array(msg.points[0].positions)
        with self.lock:
            self.commands.append((time.monotonic(), positions))
            if not self.frozen:
                self.position = positions

    def _publish(self) -> None:
        with self.lock:
            position = self.position.copy()
        msg = JointState(name=NAMES, position=position.tolist())
        msg.header.stamp = self.ros.node.get_clock().now().to_msg()
        self.publisher.publish(msg)
        self.published.append((time_to_seconds(msg.header.stamp), position))

    def stop(self) -> None:
        self.timer.cancel()


def status_listener(ros) -> list:
    return ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)


def wait_for_joint_states(statuses: list) -> None:
    """Until the bridge reports fresh joint states (modes that move the arm need them)."""
    wait_until(lambda: statuses and 0.0 <= statuses[-1].joint_state_age_s < JOINT_STATE_TIMEOUT_S, 30.0, "the bridge receiving joint states")


def set_mode(ros, client, mode: int, reason: str = "test", reset_estop: bool = False) -> SetMode.Response:
    return ros.call(client, SetMode.Request(mode=mode, reason=reason, reset_estop=reset_estop), timeout_s=20.0)


def make_chunk(stamp_s: float, targets: np.ndarray, period_s: float) -> ActionChunk:
    chunk = ActionChunk(joint_names=NAMES, control_period_s=period_s, horizon=len(targets), joint_positions=targets.ravel().tolist())
    chunk.header.stamp = seconds_to_time(stamp_s)
    chunk.header.frame_id = ROBOT.base_frame
    return chunk


def describe(statuses: list) -> str:
    """The newest status, for failure messages."""
    if not statuses:
        return "no status received"
    s = statuses[-1]
    sources = sorted({x.command_source for x in list(statuses)})
    return (f"command sources seen {sources}; last status: mode {s.mode_name}, stop reason {s.last_stop_reason!r}, source {s.command_source!r}, "
            f"violations {list(s.violations)}, joint state age {s.joint_state_age_s:.3f} s")


def now_s(ros) -> float:
    return ros.node.get_clock().now().nanoseconds * 1e-9


def test_watchdogs_trip_hold_within_the_margin(processes, ros, tmp_path):
    start_bridge(processes, tmp_path)
    arm = EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    chunks = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    wait_for_joint_states(statuses)
    assert set_mode(ros, client, SafetyStatus.MODE_AUTONOMY).accepted
    ros.wait_for_subscribers(chunks)
    # One chunk: 10 actions 50 ms apart; the stale-chunk deadline is its last action's time.
    stamp = now_s(ros)
    targets = HOME + np.linspace(0.0, 0.05, 10)[:, None]
    chunks.publish(make_chunk(stamp, targets, 0.05))
    deadline = stamp + 9 * 0.05
    hold = wait_until(lambda: next((s for s in list(statuses) if s.mode == SafetyStatus.MODE_HOLD), None), 10.0, "HOLD")
    bridge_latency_s = time_to_seconds(hold.last_stop_stamp) - deadline
    assert "action_chunk_stale" in hold.last_stop_reason and not hold.watchdogs_ok, hold.last_stop_reason
    # The bridge's own stop stamp: what the margin bounds (the status then takes a starved test
    # process up to 0.6 s to receive, measured in full runs: the executor's latency, not the watchdog's).
    assert 0.0 <= bridge_latency_s <= ROBOT.safety.watchdog_margin_s, f"deadline-to-HOLD {bridge_latency_s * 1e3:.1f} ms"
    # The commands come to rest: the last ones repeat the held position.
    wait_until(lambda: len(arm.commands) > 20 and np.allclose(arm.commands[-1][1], arm.commands[-10][1]), 5.0, "a held position")

    # Stale joint states: the arm goes silent; deadline = last joint state + joint_state_timeout_s.
    def after_first_teleop_status() -> int | None:
        return next((i + 1 for i, s in enumerate(list(statuses)) if s.mode == SafetyStatus.MODE_TELEOP), None)

    # On a starved host this process can publish the arm's joint states late enough for the bridge
    # to trip HOLD right after the switch, before any TELEOP status (seen in a full run): switch again.
    for attempt in range(3):
        assert set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted
        try:
            teleop_at = wait_until(after_first_teleop_status, 5.0, "TELEOP", detail=lambda: describe(statuses))
            break
        except AssertionError:
            if attempt == 2:
                raise
    arm.stop()
    last_stamp = arm.published[-1][0]
    # Statuses after the first TELEOP one: HOLD statuses of the first part can still be in flight.
    hold = wait_until(lambda: next((s for s in list(statuses)[teleop_at:] if s.mode == SafetyStatus.MODE_HOLD), None), 10.0, "HOLD")
    assert "joint_states" in hold.last_stop_reason, hold.last_stop_reason
    # The bridge's own stop stamp against the stamp of the last joint state this arm sent. The
    # deadline runs from when the bridge received it: DELIVERY_ALLOWANCE_S covers DDS delivery to a
    # bridge process starved by a full run on 2 cores; LOST_JOINT_STATES_S, the last few of them
    # lost on the best-effort topic (the bridge then trips that much earlier).
    silent_for_s = time_to_seconds(hold.last_stop_stamp) - last_stamp
    assert JOINT_STATE_TIMEOUT_S - LOST_JOINT_STATES_S <= silent_for_s <= JOINT_STATE_TIMEOUT_S + ROBOT.safety.watchdog_margin_s + DELIVERY_ALLOWANCE_S, \
        f"joint states silent {silent_for_s:.3f} s before HOLD"
    assert not set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted  # needs fresh joint states


def test_estop_stays_latched_across_a_restart(processes, ros, tmp_path):
    bridge = start_bridge(processes, tmp_path)
    EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_for_joint_states(statuses)
    response = set_mode(ros, client, SafetyStatus.MODE_ESTOP, "operator pressed e-stop")
    assert response.accepted and response.mode == SafetyStatus.MODE_ESTOP
    bridge.send_signal(2)
    assert bridge.wait(timeout=20) == 0
    assert (tmp_path / "estop.json").is_file()

    statuses.clear()
    start_bridge(processes, tmp_path, name="safety_bridge_restarted")
    restarted = wait_until(lambda: next((s for s in list(statuses) if s.header.stamp.sec > 0), None), 30.0, "status after restart")
    assert restarted.mode == SafetyStatus.MODE_ESTOP and "operator pressed e-stop" in restarted.last_stop_reason
    refused = set_mode(ros, client, SafetyStatus.MODE_AUTONOMY)
    assert not refused.accepted and "latched" in refused.message
    assert not set_mode(ros, client, SafetyStatus.MODE_IDLE).accepted  # no reset flag
    reset = set_mode(ros, client, SafetyStatus.MODE_IDLE, "operator reset", reset_estop=True)
    assert reset.accepted and reset.mode == SafetyStatus.MODE_IDLE
    assert set_mode(ros, client, SafetyStatus.MODE_AUTONOMY).accepted


def test_an_unwritable_estop_latch_keeps_the_bridge_in_estop(processes, ros, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    start_bridge(processes, tmp_path, estop_latch_file=str(blocker / "estop.json"))  # under a regular file: unwritable, even for root
    EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    status = wait_until(lambda: next((s for s in list(statuses) if s.header.stamp.sec > 0), None), 30.0, "a status")
    assert status.mode == SafetyStatus.MODE_ESTOP and "cannot write the ESTOP latch" in status.last_stop_reason, describe(statuses)
    wait_for_joint_states(statuses)
    refused = set_mode(ros, client, SafetyStatus.MODE_HOLD, "operator reset", reset_estop=True)
    assert not refused.accepted and refused.mode == SafetyStatus.MODE_ESTOP and "cannot write the ESTOP latch" in refused.message
    assert statuses[-1].mode == SafetyStatus.MODE_ESTOP


def test_teleop_autonomy_switches_in_motion_continue_the_command(processes, ros, tmp_path):
    """A handover while the arm moves and lags its command: the bridge's output goes on from its
    last command (no step back to the arm, which a controller would take as a jump of its target)."""
    start_bridge(processes, tmp_path, inference_timeout_s=5.0)
    arm = EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    twists = ros.node.create_publisher(TwistStamped, "/wam/teleop/command", qos.COMMANDS)
    chunks = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    wait_for_joint_states(statuses)
    assert set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted
    ros.wait_for_subscribers(twists)
    ros.wait_for_subscribers(chunks)

    def jog(duration_s: float, velocity_y: float) -> None:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            twist = TwistStamped()
            twist.header.frame_id = ROBOT.base_frame
            twist.twist.linear.y = velocity_y
            twists.publish(twist)
            time.sleep(0.02)

    def switch(mode: int) -> None:
        """Freeze the arm (it lags its command), switch, and check the output continues from its last command."""
        with arm.lock:
            arm.frozen = True
        time.sleep(0.15)  # the command runs ahead of the frozen arm, by more steps than the tolerance below
        sent = time.monotonic()
        assert set_mode(ros, client, mode, "intervention").accepted
        time.sleep(0.2)
        with arm.lock:
            before = [q for t, q in arm.commands if t < sent][-1]
            after = [q for t, q in arm.commands if t >= sent]
            frozen = arm.position.copy()
            arm.frozen = False
        # Between two received commands: at most LOST_COMMANDS_TOLERATED + 1 periods of motion at
        # the limits (a starved test process misses some of the 250 Hz commands; the exact
        # per-cycle limits are checked on every cycle by the fuzz tests).
        periods = LOST_COMMANDS_TOLERATED + 1
        steps = np.abs(np.diff(np.array([before, *after]), axis=0)) / STEP_MAX
        assert steps.max() <= periods + 1e-6, f"the output stepped {steps.max():.2f} limit steps at the switch"
        lag_steps = float(np.max(np.abs(before - frozen) / STEP_MAX))
        assert lag_steps > periods, f"the arm lagged only {lag_steps:.1f} steps: the test did not make a lag to step back over"
        tcp = KINEMATICS.positions(np.array([before, *after]))
        assert np.all(np.linalg.norm(np.diff(tcp, axis=0), axis=1) <= periods * ROBOT.safety.ee_speed_max_m_s * PERIOD_S + 1e-7)

    jog(0.6, 0.2)  # moving when the switch comes
    threading.Thread(target=jog, args=(0.5, 0.2), daemon=True).start()
    stamp = now_s(ros)
    chunks.publish(make_chunk(stamp, np.tile(HOME, (60, 1)), 0.1))  # the model wants the arm back home
    switch(SafetyStatus.MODE_AUTONOMY)
    # The service answered 'accepted'; the 20 Hz status reaches this busy process some time later.
    wait_until(lambda: any(s.mode == SafetyStatus.MODE_AUTONOMY for s in list(statuses)), 10.0, "an AUTONOMY status",
               detail=lambda: describe(statuses))
    chunks.publish(make_chunk(now_s(ros), np.tile(HOME, (60, 1)), 0.1))
    time.sleep(0.3)
    switch(SafetyStatus.MODE_TELEOP)  # the operator takes over again mid-motion


def test_a_second_publisher_is_refused_and_reported(processes, ros, tmp_path):
    start_bridge(processes, tmp_path, inference_timeout_s=5.0)
    arm = EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    model = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    impostor_node = rclpy.create_node("impostor", context=ros.context)
    ros.executor.add_node(impostor_node)
    try:
        impostor = impostor_node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
        wait_for_joint_states(statuses)
        assert set_mode(ros, client, SafetyStatus.MODE_AUTONOMY).accepted
        ros.wait_for_subscribers(model)
        ros.wait_for_subscribers(impostor)
        goal = HOME + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3])  # wrist roll: no TCP travel
        model.publish(make_chunk(now_s(ros), np.tile(goal, (40, 1)), 0.1))
        wait_until(lambda: any(s.command_source.endswith("test_probe") for s in list(statuses)), 10.0, "the lock for the first publisher",
                   detail=lambda: describe(statuses))
        wrong = HOME + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.3])
        impostor.publish(make_chunk(now_s(ros), np.tile(wrong, (40, 1)), 0.1))
        # The graph can name a publisher only after its node's discovery info arrives: until then
        # reports say _NODE_NAME_UNKNOWN_, and a later one names the impostor.
        wait_until(lambda: [v for s in list(statuses) for v in s.violations if "multiple_publishers" in v and "impostor" in v], 10.0,
                   "a multiple_publishers violation naming the impostor", detail=lambda: describe(statuses))
        time.sleep(1.2)
        assert np.allclose(arm.commands[-1][1], goal, atol=1e-3)  # the impostor's chunk never moved the arm
        # The impostor is refused, not a reason to stop. (A clean-clone CI run saw a joint-state
        # watchdog HOLD here: this process, the arm, stalled past 0.5 s. That is not what is tested.)
        last = statuses[-1]
        assert last.mode == SafetyStatus.MODE_AUTONOMY or last.last_stop_reason.startswith("watchdog joint_states"), describe(statuses)
    finally:
        ros.executor.remove_node(impostor_node)
        impostor_node.destroy_node()


def test_cartesian_impedance_backend_streams_poses_and_gains(processes, ros, tmp_path):
    import yaml
    from geometry_msgs.msg import PoseStamped
    from scipy.spatial.transform import Rotation

    from wam_ros_interfaces.msg import ImpedanceGains

    data = yaml.safe_load(robot_config_path("panda_sim").read_text())
    data["robot"]["backend"]["type"] = "cartesian_impedance"
    config = tmp_path / "panda_cartesian.yaml"
    config.write_text(yaml.safe_dump(data))
    start_bridge(processes, tmp_path, robot_config=str(config))
    arm = EchoArm(ros)  # no joint trajectory comes back: the arm stays at HOME
    statuses = status_listener(ros)
    poses = ros.collect(PoseStamped, ROBOT.backend.target_pose_topic, qos.COMMANDS)
    gains = ros.collect(ImpedanceGains, ROBOT.backend.gains_topic, qos.LATCHED)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_for_joint_states(statuses)
    assert statuses[-1].backend == "cartesian_impedance"
    wait_until(lambda: gains, 10.0, "latched impedance gains")
    assert list(gains[-1].stiffness) == list(ROBOT.gains.cartesian_stiffness)
    assert list(gains[-1].damping) == list(ROBOT.gains.cartesian_damping)
    assert set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted
    pose = wait_until(lambda: poses and poses[-1], 10.0, "a target pose")
    position, rotation = KINEMATICS.forward(HOME)
    p, o = pose.pose.position, pose.pose.orientation
    assert pose.header.frame_id == ROBOT.base_frame
    assert np.allclose([p.x, p.y, p.z], position, atol=1e-6)
    assert np.allclose(Rotation.from_quat([o.x, o.y, o.z, o.w]).as_matrix(), rotation, atol=1e-6)
    assert arm.commands == []  # nothing on the joint trajectory topic with this backend


BEST_EFFORT = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)  # what many drivers and e-stop button nodes use


def test_best_effort_joint_states_reach_the_bridge(processes, ros, tmp_path):
    start_bridge(processes, tmp_path)
    EchoArm(ros, profile=BEST_EFFORT)
    statuses = status_listener(ros)
    wait_for_joint_states(statuses)  # a reliable reader never hears a best-effort writer
    assert set_mode(ros, ros.node.create_client(SetMode, "/wam/set_mode"), SafetyStatus.MODE_TELEOP).accepted


def test_a_best_effort_estop_reaches_the_bridge(processes, ros, tmp_path):
    start_bridge(processes, tmp_path)
    statuses = status_listener(ros)
    estop = ros.node.create_publisher(Bool, "/wam/safety/estop", BEST_EFFORT)
    ros.wait_for_subscribers(estop, timeout_s=30.0)

    def pressed() -> bool:
        estop.publish(Bool(data=True))  # best effort: a button node repeats it
        return any(s.mode == SafetyStatus.MODE_ESTOP for s in list(statuses))

    wait_until(pressed, 10.0, "ESTOP from a best-effort publisher", poll_s=0.1, detail=lambda: describe(statuses))


def with_node(ros, name: str):
    """Another node in the test process (a second driver, a rogue commander), spun with the probe."""
    node = rclpy.create_node(name, context=ros.context)
    ros.executor.add_node(node)
    return node


def drop_node(ros, node) -> None:
    ros.executor.remove_node(node)
    node.destroy_node()


def motion_accepted_again(ros, client, mode: int) -> bool:
    return set_mode(ros, client, mode, "the other publisher is gone").accepted


def test_another_publisher_on_a_backend_command_topic_holds_and_blocks_motion(processes, ros, tmp_path):
    start_bridge(processes, tmp_path, inference_timeout_s=5.0)
    EchoArm(ros)
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_for_joint_states(statuses)
    assert set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted
    rogue = with_node(ros, "rogue_commander")
    try:
        rogue.create_publisher(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS)  # bypasses every limit
        hold = wait_until(lambda: next((s for s in list(statuses) if s.mode == SafetyStatus.MODE_HOLD), None), 10.0,
                          "HOLD", detail=lambda: describe(statuses))
        assert "/rogue_commander" in hold.last_stop_reason and ROBOT.backend.joint_trajectory_topic in hold.last_stop_reason
        assert any("foreign_publisher" in v and "/rogue_commander" in v for s in list(statuses) for v in s.violations)
        refused = set_mode(ros, client, SafetyStatus.MODE_AUTONOMY)
        assert not refused.accepted and "/rogue_commander" in refused.message
    finally:
        drop_node(ros, rogue)
    wait_until(lambda: motion_accepted_again(ros, client, SafetyStatus.MODE_AUTONOMY), 20.0, "AUTONOMY accepted once it is gone", poll_s=0.3)


def test_a_second_publisher_of_the_arms_joint_states_holds_and_is_refused(processes, ros, tmp_path):
    start_bridge(processes, tmp_path)
    arm = EchoArm(ros)  # this process's node is the arm's driver: the first publisher heard
    statuses = status_listener(ros)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_for_joint_states(statuses)
    assert set_mode(ros, client, SafetyStatus.MODE_TELEOP).accepted
    rogue = with_node(ros, "rogue_driver")
    try:
        states = rogue.create_publisher(JointState, "/joint_states", qos.SENSORS)
        elsewhere = JointState(name=NAMES, position=(HOME + 0.3).tolist())

        def held() -> SafetyStatus | None:
            states.publish(elsewhere)
            # Its data can arrive before the graph names its node: the stop reason names it from then on.
            return next((s for s in list(statuses) if s.mode == SafetyStatus.MODE_HOLD and "/rogue_driver" in s.last_stop_reason), None)

        hold = wait_until(held, 10.0, "a HOLD naming the second publisher", poll_s=0.05, detail=lambda: describe(statuses))
        assert "/joint_states" in hold.last_stop_reason, hold.last_stop_reason
        time.sleep(0.3)
        assert np.allclose(arm.commands[-1][1], HOME, atol=1e-6)  # its joint states never became the measured state
        refused = set_mode(ros, client, SafetyStatus.MODE_TELEOP)
        assert not refused.accepted and "/rogue_driver" in refused.message
    finally:
        drop_node(ros, rogue)
    wait_until(lambda: motion_accepted_again(ros, client, SafetyStatus.MODE_TELEOP), 20.0, "TELEOP accepted once it is gone", poll_s=0.3)
