"""The sim node as a real process over real DDS: rates, sim time, commands, rejection, reset, bringup."""
from __future__ import annotations

import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import Processes, RosProbe, wait_until
from action_msgs.msg import GoalStatus
from control_msgs.action import GripperCommand
from rclpy.action import ActionClient

from wam_ros_interfaces.msg import ImpedanceGains, TaskStatus
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.conversions import image_to_numpy, time_to_seconds
from wam_ros_interfaces.srv import ResetSim

pytestmark = pytest.mark.ros
SHARED_ROS_DOMAIN = True  # the module-scoped graph fixture and its tests talk to each other
ROBOT = load_robot_config("panda_sim")
ARM = list(ROBOT.arm.joint_names)
STREAM_OFFSETS = np.array([0.3, -0.2, 0.25, 0.3, -0.3, 0.25, 0.4])
STREAM_DURATION_S = 1.5
JOINT_TOLERANCE_RAD = 0.02  # timed JointTrajectory: measured vs interpolated target at the same stamp (docs/sim.md)
STREAM_PATH_TOLERANCE_RAD = 0.05  # streamed from another process on a busy 2-core host: distance from the path


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """One sim node for the module (start-up costs seconds); every test resets it first."""
    group = Processes(tmp_path_factory.mktemp("sim_node") / "logs")
    group.start_node("sim", real_time_factor=1.0, stats_period_s=2.0)
    probe = RosProbe("sim_test_probe")
    node = probe.node
    state = {
        # Serialized messages are cheap to receive at 500 Hz: counting them measures the node, not this
        # process; _Joints deserializes on access.
        "joints": _Joints(probe.collect(JointState, "/joint_states", qos.SENSORS, raw=True)),
        "clock": probe.collect(Clock, "/clock", qos.SENSORS),
        "front": probe.collect(Image, "/wam/cameras/front/image", qos.SENSORS),
        "front_info": probe.collect(CameraInfo, "/wam/cameras/front/camera_info", qos.SENSORS),
        "wrist": probe.collect(Image, "/wam/cameras/wrist/image", qos.SENSORS),
        "status": probe.collect(TaskStatus, "/wam/sim/task_status", qos.LATCHED),
        "trajectory": node.create_publisher(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS),
        "pose": node.create_publisher(PoseStamped, ROBOT.backend.target_pose_topic, qos.COMMANDS),
        "gains": node.create_publisher(ImpedanceGains, ROBOT.backend.gains_topic, qos.COMMANDS),
        "gripper": ActionClient(node, GripperCommand, ROBOT.gripper.action_name),
        "reset": node.create_client(ResetSim, "/wam/sim/reset"),
        "probe": probe,
        "processes": group,
    }
    try:
        wait_until(lambda: state["joints"], 60.0, "the first /joint_states from the sim node")
        for name in ("trajectory", "pose", "gains"):
            probe.wait_for_subscribers(state[name], timeout_s=20.0)
        assert state["gripper"].wait_for_server(timeout_sec=20.0), f"no {ROBOT.gripper.action_name} action server"
        yield state
    finally:
        probe.close()
        group.stop_all()


def _reset(sim, task: str = "reach", seed: int = 0) -> ResetSim.Response:
    response = sim["probe"].call(sim["reset"], ResetSim.Request(task=task, seed=seed), timeout_s=20.0)
    assert response.success, response.message
    # Wait until the arm has settled at home after the reset.
    wait_until(lambda: _settled(sim), 10.0, "the arm at rest after reset")
    return response


def _settled(sim) -> bool:
    message = sim["joints"][-1]
    return bool(np.allclose(message.position[:7], ROBOT.arm.home_rad, atol=0.01) and np.abs(message.velocity[:7]).max() < 0.01)


class _Joints:
    """Received /joint_states (serialized); indexing and iteration deserialize."""

    def __init__(self, raw: list) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> JointState:
        return deserialize_message(self.raw[index], JointState)

    def between(self, start_s: float, end_s: float = math.inf) -> list[JointState]:
        """The messages stamped in [start_s, end_s] (only those get deserialized)."""
        return [deserialize_message(m, JointState) for m in list(self.raw) if start_s <= _raw_stamp(m) <= end_s]


def _raw_stamp(serialized: bytes) -> float:
    """header.stamp of a serialized JointState (CDR: 4-byte encapsulation, then int32 sec, uint32 nanosec)."""
    sec, nanosec = struct.unpack_from("<iI", serialized, 4)
    return sec + nanosec * 1e-9


def _arm(message: JointState) -> np.ndarray:
    return np.array(message.position[:7])


def _trajectory(positions: list[np.ndarray], times_s: list[float], names: list[str] | None = None) -> JointTrajectory:
    message = JointTrajectory()
    message.joint_names = names or ARM
    for position, t in zip(positions, times_s):
        point = JointTrajectoryPoint()
        point.positions = [float(v) for v in position]
        point.time_from_start.sec = int(t)
        point.time_from_start.nanosec = int(round((t - int(t)) * 1e9))
        message.points.append(point)
    return message


def test_rates_sim_time_cameras_and_status(sim, tmp_path):
    response = _reset(sim, "pick_place", 2)
    assert response.instruction.startswith("put the ") and len(response.subtask_instructions) == 1
    joints, clock, front = sim["joints"], sim["clock"], sim["front"]
    # A lean subscriber process counts /joint_states: this busy test process would measure itself.
    stamps_file = tmp_path / "stamps.txt"
    counter = sim["processes"].python("counter", __file__, "count", str(stamps_file), "2.0")
    start_frames, start_wall = len(front), time.monotonic()
    start_clock = time_to_seconds(clock[-1].clock)
    assert counter.wait(timeout=60.0) == 0, sim["processes"].log("counter")
    wall = time.monotonic() - start_wall
    sim_elapsed = time_to_seconds(clock[-1].clock) - start_clock
    assert sim_elapsed > 0.25 * wall, f"sim time advanced {sim_elapsed:.2f} s in {wall:.2f} s of wall time"
    assert sim_elapsed < 1.3 * wall  # paced to real time (real_time_factor 1)
    stamps = [float(line.split()[0]) for line in stamps_file.read_text().splitlines()]
    assert len(stamps) > 100 and np.all(np.diff(stamps) > 0), "joint state stamps must increase"
    rate_per_sim_second = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate_per_sim_second >= 250.0, f"{rate_per_sim_second:.0f} joint states per sim second"
    # /clock ticks at clock_rate_hz (250 by default), on joint-state stamps, never faster.
    clock_stamps = np.array([time_to_seconds(m.clock) for m in list(clock)[-200:]])
    assert np.all(np.diff(clock_stamps) >= 1.0 / 250.0 - 1e-6), f"/clock closer than 4 ms: {np.diff(clock_stamps).min()}"
    frame_stamps = [time_to_seconds(m.header.stamp) for m in list(front)[start_frames:]]
    camera_rate = (len(frame_stamps) - 1) / (frame_stamps[-1] - frame_stamps[0])
    # Not in lockstep: a frame the renderer is late for comes late and the next one a full period
    # after it, so never faster than the configured rate; on a loaded CI host 7.9 of 10 Hz came
    # through (the exact schedule in lockstep is tested on SimRunner in test_sim_runner.py).
    rate_hz = ROBOT.camera("front").rate_hz
    assert np.all(np.diff(frame_stamps) >= 1.0 / rate_hz - 1e-6), f"frames closer than the camera period: {np.diff(frame_stamps)}"
    assert 0.5 * rate_hz <= camera_rate <= rate_hz + 1e-6, f"front camera at {camera_rate:.1f} Hz of sim time"
    image = image_to_numpy(front[-1])
    assert image.shape == (96, 96, 3) and image.std() > 5 and front[-1].header.frame_id == "front_camera_optical"
    info = sim["front_info"][-1]
    assert (info.width, info.height) == (96, 96) and info.k[0] > 0 and info.k[2] == pytest.approx(48.0)
    assert sim["wrist"], "no wrist camera images"
    assert set(joints[-1].name) == set(ARM) | set(ROBOT.gripper.joint_names)
    status = wait_until(lambda: [s for s in sim["status"] if s.seed == 2 and s.task == "pick_place"], 5.0, "task status")[-1]
    assert status.instruction == response.instruction and not status.success
    assert {"red_cube", "green_cube", "blue_cube", "bin"} <= set(status.object_names)


def test_clock_rate_above_the_joint_state_rate_is_refused(sim):
    process = sim["processes"].start_node("sim", name="sim_fast_clock", clock_rate_hz=1000.0)
    assert process.wait(timeout=60) == 1
    log = sim["processes"].log("sim_fast_clock")
    assert "configure failed" in log and "clock_rate_hz 1000 must be in (0, 500]" in log, log


def test_streamed_joint_trajectory_is_tracked(sim):
    """The streaming pattern of docs/sim.md, from its own lean process as the bridge would: a
    message every 4 ms, stamp 0 (= on arrival), the next 3 points 8 ms apart, so a late message
    finds the target still moving along the previous one instead of holding. The stream follows
    /clock (the bridge runs on sim time), so a sim slowed by a busy host gets a slowed stream.

    All joints move along one straight line in joint space; the arm must stay on that line within
    the tolerance (a hold or a jump leaves it by several centiradians: joint 7's low stiffness lags),
    move forward along it and end at its end.
    """
    _reset(sim)
    joints, clock = sim["joints"], sim["clock"]
    start = _arm(joints[-1])
    first_stamp = time_to_seconds(clock[-1].clock)
    streamer = sim["processes"].python("streamer", __file__, "stream", ",".join(f"{v:.6f}" for v in start), ",".join(map(str, STREAM_OFFSETS)))
    assert streamer.wait(timeout=60.0) == 0, sim["processes"].log("streamer")
    end = start + STREAM_OFFSETS
    wait_until(lambda: np.abs(_arm(joints[-1]) - end).max() < 0.005, 10.0, "the arm at the end of the stream")
    progress, deviation = [], []
    for state in joints.between(first_stamp):
        along = float(np.dot(_arm(state) - start, STREAM_OFFSETS) / np.dot(STREAM_OFFSETS, STREAM_OFFSETS))
        progress.append(along)
        deviation.append(np.abs(_arm(state) - (start + along * STREAM_OFFSETS)).max())
    assert len(progress) > 50
    assert max(deviation) < STREAM_PATH_TOLERANCE_RAD, f"left the streamed path by {max(deviation):.4f} rad"
    assert np.min(np.diff(progress)) > -0.01, "moved backwards along the stream"
    assert progress[-1] == pytest.approx(1.0, abs=0.02)


def test_trajectory_is_tracked_within_tolerance_and_held(sim):
    """Points are interpolated linearly from the trajectory's (sim-time) start; every measured state
    in between is compared with the interpolated target at its own stamp."""
    _reset(sim)
    publisher, joints = sim["trajectory"], sim["joints"]
    # A lean process records the measured states: this busy process's best-effort receipt kept
    # 19 of ~1200 in the window in a full run.
    record_file = sim["processes"].log_dir / "tracked_joint_states.txt"
    recorder = sim["processes"].python("tracked_recorder", __file__, "count", str(record_file), "6.0")
    wait_until(lambda: recorder.poll() is not None or Path(f"{record_file}.ready").exists(), 60.0, "the joint state recorder",
               detail=lambda: sim["processes"].log("tracked_recorder"))
    start = _arm(joints[-1])
    middle, end = start + 0.15, start + np.array([0.2, 0.1, -0.1, 0.15, 0.2, -0.1, 0.3])
    start_s = time_to_seconds(sim["clock"][-1].clock) + 0.3
    reordered = list(reversed(ARM))  # any joint order is accepted, as in joint_trajectory_controller
    message = _trajectory([middle[::-1], end[::-1]], [0.8, 1.6], names=reordered)
    message.header.stamp.sec, message.header.stamp.nanosec = int(start_s), int(round((start_s % 1) * 1e9))
    publisher.publish(message)
    assert recorder.wait(timeout=60.0) == 0, sim["processes"].log("tracked_recorder")
    recorded = np.loadtxt(record_file, ndmin=2)
    window = recorded[(recorded[:, 0] >= start_s - 0.2) & (recorded[:, 0] <= start_s + 2.2)]
    assert recorded[-1, 0] > start_s + 2.2, f"the recording ends at {recorded[-1, 0]:.2f} s, before the trajectory does"
    knots_s, knots = np.array([start_s, start_s + 0.8, start_s + 1.6]), np.array([start, middle, end])
    targets = np.stack([np.interp(window[:, 0], knots_s, knots[:, j]) for j in range(7)], axis=1)
    errors = np.abs(window[:, 1:8] - targets).max(axis=1)
    assert len(errors) > 600, f"{len(errors)} joint states in the 2.4 s window (500 Hz)"
    assert errors.max() < JOINT_TOLERANCE_RAD, f"max tracking error {errors.max():.4f} rad"
    assert np.abs(_arm(joints[-1]) - end).max() < 0.005  # holds the last point


def test_cartesian_target_reached_within_5_mm(sim):
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.kinematics import ArmKinematics

    _reset(sim)
    env = TabletopEnv(ROBOT)  # only for forward kinematics of the measured joints
    kinematics = ArmKinematics(env.model, ROBOT.tcp_frame, ROBOT.arm.joint_names,
                               np.array(ROBOT.arm.position_lower_rad), np.array(ROBOT.arm.position_upper_rad))
    position, rotation = kinematics.forward(_arm(sim["joints"][-1]))
    target = position + np.array([0.05, 0.08, -0.1])
    gains = ImpedanceGains(stiffness=[1500.0] * 3 + [150.0] * 3, damping=[80.0] * 3 + [12.0] * 3, nullspace_stiffness=10.0)
    sim["gains"].publish(gains)
    pose = PoseStamped()
    pose.header.frame_id = ROBOT.base_frame
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in target)
    pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = 1.0, 0.0, 0.0, 0.0
    sim["pose"].publish(pose)

    def error() -> float:
        return float(np.linalg.norm(kinematics.forward(_arm(sim["joints"][-1]))[0] - target))

    wait_until(lambda: error() < 0.005, 10.0, "the TCP within 5 mm of the Cartesian target")
    env.close()


def test_bad_commands_are_rejected_and_the_sim_runs_on(sim):
    _reset(sim)
    joints, clock = sim["joints"], sim["clock"]
    home = _arm(joints[-1])
    bad = [
        (sim["trajectory"], _trajectory([home + np.nan], [0.1]), "non-finite"),
        (sim["trajectory"], _trajectory([home], [0.1], names=ARM[:6] + ["elbow"]), "unknown joint names"),
        (sim["trajectory"], _trajectory([home[:6]], [0.1], names=ARM[:6]), "the arm needs all 7"),
        (sim["trajectory"], _trajectory([home[:6]], [0.1]), "has 6 positions for 7 joints"),
        (sim["trajectory"], _trajectory([home + np.array([5.0, 0, 0, 0, 0, 0, 0])], [0.1]), "outside"),
        (sim["gains"], ImpedanceGains(stiffness=[-1.0] * 6, damping=[1.0] * 6), "stiffness"),
    ]
    wrong_frame = PoseStamped()
    wrong_frame.header.frame_id = "camera"
    wrong_frame.pose.orientation.w = 1.0
    bad.append((sim["pose"], wrong_frame, "send it in 'panda_link0'"))
    for publisher, message, _ in bad:
        publisher.publish(message)
    for position, max_effort, reason in ((0.1, 20.0, "gripper width 0.2 m (position 0.1)"), (0.02, 100.0, "gripper force 100.0 N above 70.0")):
        goal = GripperCommand.Goal()
        goal.command.position, goal.command.max_effort = position, max_effort
        sim["gripper"].send_goal_async(goal)
        bad.append((None, None, f"rejected GripperCommand goal: {reason}"))
    log = lambda: sim["processes"].log("sim")  # noqa: E731
    for _, _, reason in bad:
        wait_until(lambda r=reason: r in log(), 10.0, f"a logged rejection containing {reason!r}")
    before = time_to_seconds(clock[-1].clock)
    wait_until(lambda: time_to_seconds(clock[-1].clock) > before + 0.2, 5.0, "sim time still advancing")
    assert np.abs(_arm(joints[-1]) - home).max() < 0.01, "a rejected command moved the arm"
    assert sim["processes"].started[0][1].poll() is None, "the sim node died"


def test_gripper_action_moves_the_fingers_and_reports_the_width(sim):
    """The GripperCommand action as franka_gripper serves it: position = one finger's travel (width / 2)."""
    _reset(sim)
    goal = GripperCommand.Goal()
    goal.command.position, goal.command.max_effort = ROBOT.gripper.position_from_width(0.03), 20.0
    sent = sim["gripper"].send_goal_async(goal)
    handle = wait_until(lambda: sent.done() and sent.result(), 10.0, "the goal accepted")
    assert handle.accepted
    finished = handle.get_result_async()
    response = wait_until(lambda: finished.done() and finished.result(), 20.0, "the goal's result")
    assert response.status == GoalStatus.STATUS_SUCCEEDED and response.result.reached_goal and not response.result.stalled
    assert ROBOT.gripper.width_from_position(response.result.position) == pytest.approx(0.03, abs=0.002)
    message = sim["joints"][-1]
    width = sum(message.position[list(message.name).index(name)] for name in ROBOT.gripper.joint_names)
    assert width == pytest.approx(0.03, abs=0.002)


def test_reset_service_switches_task_and_refuses_unknown_ones(sim):
    response = _reset(sim, "bin_three", 5)
    assert len(response.subtask_instructions) == 3 and "in that order" in response.instruction
    wait_until(lambda: [s for s in sim["status"] if s.task == "bin_three" and s.seed == 5], 5.0, "bin_three status")
    refused = sim["probe"].call(sim["reset"], ResetSim.Request(task="juggle", seed=1))
    assert not refused.success and "unknown task" in refused.message


# -- lean peer processes (this file run as a script) ---------------------------------------------------
def _count(path: str, duration_s: float) -> None:
    """Write the /joint_states received in ``duration_s`` of wall time, one per line: stamp and
    arm positions. ``<path>.ready`` appears when the first one has arrived."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("joint_state_counter")
    received: list[bytes] = []  # serialized: cheap to receive at 500 Hz, deserialized at the end
    # A deep reader history: DDS receives in its own threads, so a briefly descheduled process loses nothing.
    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    node.create_subscription(JointState, "/joint_states", received.append, deep, raw=True)
    wait_until(lambda: rclpy.spin_once(node, timeout_sec=0.01) or received, 30.0, "joint states")
    received.clear()
    Path(f"{path}.ready").touch()
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.01)
    with open(path, "w") as stream:
        for raw in received:
            stream.write(" ".join(f"{v:.6f}" for v in (_raw_stamp(raw), *_arm(deserialize_message(raw, JointState)))) + "\n")
    node.destroy_node()
    rclpy.shutdown()


def _stream(start_csv: str, offsets_csv: str) -> None:
    """Stream a cosine profile from start to start + offsets over STREAM_DURATION_S of sim time."""
    import rclpy

    start, offsets = (np.array([float(v) for v in csv.split(",")]) for csv in (start_csv, offsets_csv))
    rclpy.init()
    node = rclpy.create_node("trajectory_streamer")
    clock: list[float] = []
    node.create_subscription(Clock, "/clock", lambda m: clock.append(time_to_seconds(m.clock)), qos.SENSORS)
    publisher = node.create_publisher(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS)
    wait_until(lambda: rclpy.spin_once(node, timeout_sec=0.01) or (clock and publisher.get_subscription_count()), 30.0, "the sim")
    first = clock[-1]

    def profile(t: float) -> np.ndarray:
        return start + offsets * (0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0) / STREAM_DURATION_S, 1.0)))

    ahead = [0.008, 0.016, 0.024]
    while clock[-1] - first < STREAM_DURATION_S + 0.2:
        elapsed = clock[-1] - first
        publisher.publish(_trajectory([profile(elapsed + dt) for dt in ahead], ahead))
        deadline = time.monotonic() + 0.004
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=max(deadline - time.monotonic(), 0.0))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "count":
        _count(sys.argv[2], float(sys.argv[3]))
    else:
        _stream(sys.argv[2], sys.argv[3])
