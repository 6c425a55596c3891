"""From the MuJoCo sim through the real ROS graph to training data: record on sim resets, convert, check.

The sim node and the recorder run as processes (the recorder on sim time, as bringup starts
it); the test streams JointTrajectory commands on the backend topic the way the safety bridge
does (stamp zero, one point a control period ahead) and resets the sim to begin and end an
episode. The converted episode must have the dataset's shapes, 10 Hz timing, actions equal to
what was commanded and states that follow them.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from control_msgs.action import GripperCommand as GripperAction
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_harness import wait_until
from wam_ros.cli import main as wam_ros
from wam_ros.data import EpisodeDataset
from wam_ros.data.bags import read_labels
from wam_ros_interfaces.msg import GripperCommand
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros_interfaces.srv import ResetSim

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
HOME = np.array(ROBOT.arm.home_rad)
COMMAND_PERIOD_S = 0.02
EPISODE_S = 3.0
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu-small-pick-place"


def commanded(t_s: float) -> np.ndarray:
    """Joint targets: a slow swing of joints 1 and 4 around home."""
    target = HOME.copy()
    target[0] += 0.25 * math.sin(2 * math.pi * t_s / EPISODE_S)
    target[3] += 0.15 * (1 - math.cos(2 * math.pi * t_s / EPISODE_S))
    return target


def polyline_distance(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Distance of each point to the polyline through ``vertices`` (Euclidean, all coordinates)."""
    start, step = vertices[:-1], np.diff(vertices, axis=0)
    along = np.einsum("psd,sd->ps", points[:, None] - start[None], step) / np.maximum((step**2).sum(axis=1), 1e-12)
    nearest = start[None] + np.clip(along, 0.0, 1.0)[..., None] * step[None]
    return np.linalg.norm(nearest - points[:, None], axis=2).min(axis=1)


def test_sim_episode_recorded_and_converted(processes, ros, tmp_path):
    episodes, dataset = tmp_path / "episodes", tmp_path / "dataset"
    processes.start_node("sim", robot_config=str(ROBOT.path), real_time_factor=1.0, task="pick_place", seed=1)
    processes.start_node("recorder", robot_config=str(ROBOT.path), episodes_dir=str(episodes), split_on_sim_reset=True,
                         use_sim_time=True, status_period_s=0.2, discovery_period_s=0.2)
    status: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for entry in msg.status:
            if entry.name == "wam_ros: recorder":
                status.clear()
                status.update({kv.key: kv.value for kv in entry.values})

    ros.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    trajectory = ros.node.create_publisher(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS)
    gripper = ros.node.create_publisher(GripperCommand, ROBOT.backend.gripper_command_topic, qos.COMMANDS)  # the bridge's record
    gripper_action = ActionClient(ros.node, GripperAction, ROBOT.gripper.action_name)  # what moves the sim's fingers
    reset = ros.node.create_client(ResetSim, "/wam/sim/reset")
    # joint states, 2 x (image + camera info), task status, arm and gripper commands
    wait_until(lambda: status.get("topics_recorded") == "8", 60.0, f"the recorder to find 8 topics ({status})")

    started = ros.call(reset, ResetSim.Request(task="pick_place", seed=5), timeout_s=30.0)
    assert started.success, started.message
    wait_until(lambda: list(episodes.glob("*/wam_episode.yaml")), 15.0, "the episode begun by the reset")
    point = JointTrajectoryPoint(time_from_start=Duration(nanosec=int(COMMAND_PERIOD_S * 1e9)))
    gripper.publish(GripperCommand(width_m=0.03, force_n=20.0))
    assert gripper_action.wait_for_server(timeout_sec=10.0)
    goal = GripperAction.Goal()
    goal.command.position, goal.command.max_effort = ROBOT.gripper.position_from_width(0.03), 20.0
    gripper_action.send_goal_async(goal)
    sent = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < EPISODE_S:
        sent.append(commanded(elapsed))
        point.positions = sent[-1].tolist()
        trajectory.publish(JointTrajectory(joint_names=list(ROBOT.arm.joint_names), points=[point]))
        time.sleep(COMMAND_PERIOD_S)
    assert ros.call(reset, ResetSim.Request(task="pick_place", seed=6), timeout_s=30.0).success
    wait_until(lambda: len(list(episodes.glob("*/wam_episode.yaml"))) == 2, 15.0, "the second episode begun by the next reset")

    processes.stop_all()  # the second episode closes on shutdown; the sim's CPU is better spent on training below
    first = min(episodes.iterdir())
    labels = read_labels(first)
    assert (labels.state, labels.start_reason, labels.stop_reason, labels.outcome) == ("closed", "sim_reset", "sim_reset", "failure")
    assert labels.dropped_counts == {}
    second = max(episodes.iterdir())
    assert (read_labels(second).state, read_labels(second).stop_reason) == ("closed", "shutdown")
    assert wam_ros(["convert", str(first), "--out", str(dataset)]) == 0

    data = EpisodeDataset(dataset)
    episode = data.episode(0)
    t = episode.length
    assert data.info.fps == 10.0 and data.info.state_names == [*ROBOT.arm.joint_names, "gripper_width"]
    assert 5 <= t <= EPISODE_S * 10 + 8  # sim time runs slower than wall time on a loaded machine, never faster
    np.testing.assert_allclose(np.diff(episode.timestamps), 0.1, atol=1e-6)
    assert episode.states.shape == (t, 8) and episode.actions is not None and episode.actions.shape == (t, 8)
    for camera in ("front", "wrist"):
        frames = np.asarray(episode.images[camera])
        assert frames.shape == (t, 96, 96, 3) and frames.std() > 5  # rendered scenes, not blank frames
    # Actions are what was commanded: on (within a few mrad: each message continues from where the
    # last one had brought the target) the path through the targets sent, and the last gripper width.
    assert polyline_distance(episode.actions[:, :7], np.array(sent)).max() < 0.01
    # Frames before the first gripper command in the bag take the measured width (the fingers
    # already hold 0.03 m to within 1e-7 m), so compare to the micrometre, not bit for bit.
    np.testing.assert_allclose(episode.actions[:, 7], 0.03, rtol=0, atol=1e-6)
    # Row t is the target for the next frame, where the arm then is: states and actions are on one
    # time base (a 100 ms offset either way would show as 0.05 rad at the swing's speed).
    tracking = np.abs(episode.states[1:, :7] - episode.actions[:-1, :7]).max(axis=1)
    assert np.median(tracking) < 0.02 and tracking.max() < 0.1
    assert (episode.task, episode.instruction, episode.seed, episode.success) == ("pick_place", started.instruction, 5, False)
    assert episode.subtasks and episode.subtasks[0].start == 0 and episode.subtasks[0].instruction == started.subtask_instructions[0]

    # Finetuning the shipped checkpoint on the recorded episode: `wam-ros train --init CKPT --data DIR`.
    import torch

    tuned = tmp_path / "tuned"
    threads = torch.get_num_threads()
    try:
        assert wam_ros(["train", "--init", str(SHIPPED_CHECKPOINT), "--data", str(dataset), "--out", str(tuned), "--steps", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tuned / "config.json").read_text())["training"]
    assert record["init"] == str(SHIPPED_CHECKPOINT) and record["transformer_step"] == 2 and record["finished"]
    assert record["dataset"]["frames"] == record["dataset"]["labelled_frames"] == t
