"""The intervention loop through the real graph: sim, safety bridge, recorder and the scripted operator
as processes; a stalled policy (chunks that hold the arm where it is) streams from the test.

The operator must take over through SetMode TELEOP, drive with leader-arm joint targets, hand back
with AUTONOMY, and finish the task in a second takeover; the bridge's output must not jump at the
switches; the recorded bag, converted, must mark operator frames exactly where the bridge was in
TELEOP (by the mode stamps this test saw) and list the takeovers.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from ros_harness import wait_until
from wam_ros.cli import main as wam_ros
from wam_ros.data import EpisodeDataset
from wam_ros.data.bags import ModeChange, read_labels
from wam_ros.data.convert import handover_steps, time_ns
from wam_ros.data.episodes import SOURCE_HOLD, SOURCE_OPERATOR, SOURCE_POLICY
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.conversions import seconds_to_time
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, TaskStatus
from wam_ros_interfaces.srv import ResetSim, SetMode, StartEpisode, StopEpisode

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
ARM = list(ROBOT.arm.joint_names)
OPERATOR = "scripted_operator"


class StalledPolicy:
    """Streams 16-step chunks at 10 Hz that hold the arm's measured position (gripper kept as it is)."""

    def __init__(self, ros) -> None:
        self.node = rclpy.create_node("stalled_policy", context=ros.context,
                                      parameter_overrides=[Parameter("use_sim_time", value=True)])
        ros.executor.add_node(self.node)
        self.joints: np.ndarray | None = None
        self.width_m = ROBOT.gripper.width_max_m
        self.publisher = self.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
        self.node.create_subscription(JointState, "/joint_states", self._on_joints, qos.SENSORS)
        self.node.create_timer(0.1, self._publish)

    def _on_joints(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        self.joints = np.array([msg.position[index[name]] for name in ARM])
        self.width_m = float(sum(msg.position[index[name]] for name in ROBOT.gripper.joint_names))

    def _publish(self) -> None:
        if self.joints is None:
            return
        horizon = 16
        chunk = ActionChunk(joint_names=ARM, control_period_s=0.1, horizon=horizon,
                            joint_positions=np.tile(self.joints, horizon).tolist(),
                            gripper_widths=[0.0 if self.width_m < 0.07 else ROBOT.gripper.width_max_m] * horizon)
        chunk.header.stamp = seconds_to_time(self.node.get_clock().now().nanoseconds * 1e-9)
        self.publisher.publish(chunk)


def test_scripted_operator_takes_over_hands_back_and_the_bag_says_where(processes, ros, tmp_path):
    episodes, dataset = tmp_path / "episodes", tmp_path / "dataset"
    robot_path = str(ROBOT.path)
    processes.start_node("sim", robot_config=robot_path, task="pick_place", seed=7)
    processes.start_node("safety_bridge", robot_config=robot_path, use_sim_time=True, inference_timeout_s=30.0,
                         estop_latch_file=str(tmp_path / "estop.json"))
    processes.start_node("recorder", robot_config=robot_path, episodes_dir=str(episodes), use_sim_time=True, discovery_period_s=0.2)
    processes.start_node("scripted_operator", robot_config=robot_path, use_sim_time=True, no_progress_timeout_s=2.0,
                         handback_grace_s=1.0)
    lock = threading.Lock()
    statuses: list[SafetyStatus] = []
    outputs: list[tuple[int, np.ndarray]] = []
    tasks: list[TaskStatus] = []
    clock_node = rclpy.create_node("test_clock", context=ros.context, parameter_overrides=[Parameter("use_sim_time", value=True)])
    ros.executor.add_node(clock_node)

    def on_output(msg: JointTrajectory) -> None:
        with lock:
            outputs.append((clock_node.get_clock().now().nanoseconds, np.array(msg.points[0].positions)))

    ros.node.create_subscription(SafetyStatus, "/wam/safety/status", statuses.append, qos.LATCHED)
    ros.node.create_subscription(TaskStatus, "/wam/sim/task_status", tasks.append, qos.LATCHED)
    clock_node.create_subscription(JointTrajectory, ROBOT.backend.joint_trajectory_topic, on_output, qos.COMMANDS)
    mode_client = ros.node.create_client(SetMode, "/wam/set_mode")
    reset = ros.node.create_client(ResetSim, "/wam/sim/reset")
    start, stop = ros.node.create_client(StartEpisode, "/wam/recorder/start_episode"), ros.node.create_client(StopEpisode, "/wam/recorder/stop_episode")
    wait_until(lambda: statuses and statuses[-1].joint_state_age_s >= 0 and tasks, 60.0, "the bridge's status with joint states and the task status")
    wait_until(lambda: ros.node.count_publishers("/wam/cameras/front/image") and ros.node.count_subscribers("/wam/teleop/joint_command")
               and ros.node.count_publishers("/wam/teleop/joint_command"), 60.0, "the operator's teleop publisher")
    episode = tasks[-1].episode
    assert ros.call(reset, ResetSim.Request(task="pick_place", seed=11), timeout_s=30.0).success
    wait_until(lambda: tasks[-1].episode != episode, 30.0, "the reset episode's status")
    time.sleep(2.0)  # the recorder subscribes to each topic once it has seen its publisher
    started = ros.call(start, StartEpisode.Request(task="pick_place", operator_name=OPERATOR), timeout_s=10.0)
    assert started.success, started.message
    policy = StalledPolicy(ros)
    wait_until(lambda: policy.joints is not None, 10.0, "joint states for the stalled policy")
    response = ros.call(mode_client, SetMode.Request(mode=SafetyStatus.MODE_AUTONOMY, reason="test: go", requester="test"))
    assert response.accepted, response.message

    def modes() -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        for status in list(statuses):
            if not seen or seen[-1] != (status.mode, status.mode_requester):
                seen.append((status.mode, status.mode_requester))
        return seen

    wait_until(lambda: tasks[-1].success and statuses[-1].mode == SafetyStatus.MODE_AUTONOMY, 300.0,
               "the operator to finish the task and hand back", poll_s=0.2, detail=lambda: f"modes {modes()}, reason {statuses[-1].mode_reason!r}")
    assert ros.call(mode_client, SetMode.Request(mode=SafetyStatus.MODE_HOLD, reason="test: done", requester="test")).accepted
    stopped = ros.call(stop, StopEpisode.Request(outcome=1), timeout_s=20.0)
    assert stopped.success, stopped.message

    # Through the real teleop path: TELEOP and AUTONOMY requested by the operator, twice.
    teleop, autonomy = SafetyStatus.MODE_TELEOP, SafetyStatus.MODE_AUTONOMY
    seen = modes()
    first = seen.index((teleop, OPERATOR))
    takeover_count = seen.count((teleop, OPERATOR))
    assert seen[:first] == [(SafetyStatus.MODE_IDLE, "safety_bridge"), (autonomy, "test")][-first:], seen
    assert seen[first:] == [(teleop, OPERATOR), (autonomy, OPERATOR)] * takeover_count + [(SafetyStatus.MODE_HOLD, "test")], seen
    assert takeover_count >= 2, seen  # a stalled policy needs the pick and the place done for it
    changes = []
    for status in statuses:
        change = ModeChange(time_ns(status.mode_stamp), int(status.mode), status.mode_requester, status.mode_reason)
        if not changes or (changes[-1].stamp_ns, changes[-1].mode) != (change.stamp_ns, change.mode):
            changes.append(change)
    reasons = [c.reason for c in changes if c.requester == OPERATOR]
    assert [r.split(": ")[1] for r in reasons] == ["take over", "hand back"] * takeover_count, reasons
    assert reasons[-1] == f"{OPERATOR}: hand back: finished the subtask", reasons
    assert any(s.mode == teleop and s.command_source.endswith(OPERATOR) for s in statuses), "the operator's joint targets drove the arm"

    # Jump-free handovers: the step at each switch within the bridge's limit and no larger than its steps in motion.
    with lock:
        times, targets = np.array([t for t, _ in outputs]), np.array([q for _, q in outputs])
    limit = min(ROBOT.safety.max_joint_step_rad, min(ROBOT.arm.velocity_max_rad_s) / 250.0)
    # +-100 ms: the test's own subscription sees the bridge's 250 Hz outputs in bursts when the machine is loaded
    # (a full suite once left fewer than two of them within +-50 ms of a switch)
    steps = handover_steps(times, targets, changes, 100_000_000)
    switches = [s for s in steps if {s.from_mode, s.to_mode} == {teleop, autonomy}]
    assert len(switches) == 2 * takeover_count, (steps, seen)
    moving = np.max(np.abs(np.diff(targets, axis=0)), axis=1)
    assert all(s.step_rad <= limit + 1e-9 for s in switches), (switches, limit)
    assert max(s.step_rad for s in switches) <= moving.max(), (switches, moving.max())

    # The converted bag: operator frames exactly where the bridge was in TELEOP, by its mode stamps.
    labels = read_labels(stopped.episode_path)
    assert labels.outcome == "success" and labels.operator_name == OPERATOR
    assert wam_ros(["convert", stopped.episode_path, "--out", str(dataset)]) == 0
    data = EpisodeDataset(dataset)
    converted = data.episode(0)
    frame_ns = converted.extra["start_ns"] + np.round(converted.timestamps * 1e9).astype(np.int64)
    stamps = np.array([c.stamp_ns for c in changes])
    mode_at = np.array([changes[i].mode for i in np.searchsorted(stamps, frame_ns, side="right") - 1])
    expected = np.select([mode_at == autonomy, mode_at == teleop], [SOURCE_POLICY, SOURCE_OPERATOR], SOURCE_HOLD)
    np.testing.assert_array_equal(converted.frame_sources, expected)
    assert (converted.frame_sources == SOURCE_OPERATOR).sum() >= 20  # two recoveries of a few seconds at 10 Hz
    takeovers = converted.extra["takeovers"]
    assert converted.extra["takeover_count"] == takeover_count and {t["requester"] for t in takeovers} == {OPERATOR}
    assert all(t["handed_back"] and t["duration_s"] > 1.0 for t in takeovers), "\n".join(map(str, [*takeovers, frame_ns[-1], *changes]))
    assert converted.success is True and converted.actions is not None
