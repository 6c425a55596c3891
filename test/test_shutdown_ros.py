"""Ctrl-C and SIGTERM on a running graph: every node exits 0 without a traceback, the arm is
braked to standstill in HOLD, the model process stays quiet and the recorder closes its bag.

Two ways a graph is stopped: ``wam-ros bringup`` stops the nodes in stages (command sources,
then the safety bridge, then the rest); ``ros2 launch`` signals every node at once, twice
within milliseconds (it forwards SIGINT and the terminal signals the process group,
ros2/launch#830). launch_ros is not installable here: ``peers/launch_like.py`` starts the nodes
in one process group and forwards signals exactly as launch does.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import TwistStamped
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from ros_harness import wait_until
from wam_ros.bringup import load_bringup, write_params_file
from wam_ros.bringup.supervisor import node_command
from wam_ros.control.limits import Limits
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros_interfaces.msg import SafetyStatus
from wam_ros_interfaces.srv import SetMode, StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
ROBOT = load_robot_config("panda_sim")
LIMITS = Limits.from_robot(ROBOT)
LAUNCH_LIKE = str(Path(__file__).parent / "peers" / "launch_like.py")


def robot_file(tmp_path: Path, nodes: dict) -> Path:
    data = yaml.safe_load((REPO / "config" / "robots" / "panda_sim.yaml").read_text())
    data["nodes"] = nodes
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bridge_entry(tmp_path: Path) -> dict:
    return {"kind": "safety_bridge", "required": True, "parameters": {"estop_latch_file": str(tmp_path / "estop.json")}}


def teleop_motion(ros, statuses: list) -> None:
    """TELEOP with a twist streamed from this process: the arm moves when the stop comes."""
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_until(lambda: statuses and 0.0 <= statuses[-1].joint_state_age_s < 0.1, 90.0, "the bridge receiving joint states")
    response = ros.call(client, SetMode.Request(mode=SafetyStatus.MODE_TELEOP, reason="shutdown test"), timeout_s=20.0)
    assert response.accepted, response.message
    publisher = ros.node.create_publisher(TwistStamped, "/wam/teleop/command", qos.COMMANDS)

    def send() -> None:
        twist = TwistStamped()
        twist.header.stamp = ros.node.get_clock().now().to_msg()
        twist.header.frame_id = ROBOT.base_frame
        twist.twist.linear.y = 0.2
        publisher.publish(twist)

    ros.node.create_timer(0.02, send)


def assert_no_traceback(logs: dict[str, str]) -> None:
    for name, text in logs.items():
        assert "Traceback" not in text and "terminate called" not in text, f"{name} printed a traceback:\n{text[-3000:]}"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_bringup_stop_brakes_the_arm_to_standstill_in_hold(processes, ros, tmp_path, stop_signal):
    robot = robot_file(tmp_path, {"sim": {"kind": "sim", "required": True}, "safety_bridge": bridge_entry(tmp_path)})
    bringup = processes.start("bringup", [sys.executable, "-m", "wam_ros.cli", "bringup", f"robot:={robot}"])
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    commands = ros.collect(JointTrajectory, ROBOT.backend.joint_trajectory_topic, qos.COMMANDS)
    teleop_motion(ros, statuses)
    wait_until(lambda: len(commands) > 50 and np.max(np.abs(commands[-1].points[0].velocities)) > 0.05, 30.0,
               "the arm moving under the teleop twist")
    moving_from = len(commands)
    bringup.send_signal(stop_signal)
    assert bringup.wait(timeout=60) == 0, processes.log("bringup")
    log = processes.log("bringup")
    assert_no_traceback({"bringup": log})
    assert f"{signal.Signals(stop_signal).name}: stopping safety_bridge, then sim" in log
    assert re.search(r"\[safety_bridge\].*stopped in HOLD", log), log[-3000:]
    hold = [s for s in statuses if s.mode == SafetyStatus.MODE_HOLD]
    assert hold and "shutdown" in hold[-1].last_stop_reason
    # The brake: velocities fall to zero without a step beyond the acceleration limit.
    braking = commands[moving_from:]
    velocities = np.array([c.points[0].velocities for c in braking])
    assert np.max(np.abs(velocities[-1])) < 1e-6, "the last command still moves the arm"
    dt = 1.0 / 250.0
    steps = np.abs(np.diff(velocities, axis=0)) / dt
    assert np.all(steps <= LIMITS.acceleration_max_rad_s2 * 1.01 + 1e-9), f"deceleration above the limit: {steps.max(axis=0)}"


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGINT",), ("SIGTERM",)], ids=["double-sigint", "sigint", "sigterm"])
def test_launch_style_stop_every_node_exits_0_and_the_bag_reads_back(processes, ros, tmp_path, signals):
    episodes = tmp_path / "episodes"
    robot = robot_file(tmp_path, {
        "sim": {"kind": "sim", "required": True},
        "safety_bridge": bridge_entry(tmp_path),
        "recorder": {"kind": "recorder", "parameters": {"episodes_dir": str(episodes), "chunk_interval_s": 0.5}},
        "wam_inference": {"kind": "wam_inference", "parameters": {"checkpoint": "checkpoints/cpu-small-pick-place"}},
    })
    bringup = load_bringup(str(robot))
    arguments = []
    for spec in bringup.nodes:
        arguments.append(f"{spec.name}={json.dumps(node_command(spec, write_params_file(spec, tmp_path)))}")
    logs = tmp_path / "launch_logs"
    logs.mkdir()
    launcher = processes.start("launch", [sys.executable, LAUNCH_LIKE, str(logs), *arguments], env=bringup.environment)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    joint_states = ros.collect(JointState, "/joint_states", qos.SENSORS)
    start = ros.node.create_client(StartEpisode, "/wam/recorder/start_episode")
    teleop_motion(ros, statuses)
    request = StartEpisode.Request(task="pick_place", instruction="shutdown test", operator_name="test")

    def started() -> StartEpisode.Response | None:
        response = ros.call(start, request, timeout_s=30.0)
        # On a loaded host the recorder can hear /clock later than the bridge does: ask again.
        return None if "the clock is not running" in response.message else response

    response = wait_until(started, 30.0, "an episode started (the recorder on sim time needs /clock)")
    assert response.success, response.message
    wait_until(lambda: "active: publishing" in (logs / "wam_inference.log").read_text(),
               180.0, "the inference node to load its model", detail=lambda: (logs / "wam_inference.log").read_text()[-2000:])
    time.sleep(2.0)  # something recorded while the arm moves
    first, *second = (signal.Signals[name] for name in signals)
    os.kill(launcher.pid, first)  # launch forwards it to every node ...
    if second:
        time.sleep(0.02)
        os.killpg(launcher.pid, second[0])  # ... and the terminal signals the whole process group
    assert launcher.wait(timeout=90) == 0, processes.log("launch")
    node_logs = {path.stem: path.read_text(errors="replace") for path in logs.glob("*.log")}
    assert set(node_logs) == {"sim", "safety_bridge", "recorder", "wam_inference"}
    assert_no_traceback(node_logs)
    bag = Path(response.episode_path)
    assert (bag / "metadata.yaml").is_file(), f"the recorder did not close {bag}: {sorted(p.name for p in bag.iterdir())}"
    with Reader(bag) as reader:  # rosbags' standard reader, as `ros2 bag info` would
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts.get("/joint_states", 0) > 100 and counts.get("/wam/safety/status", 0) > 0, counts
        last_recorded_ns = max(t for c, t, _ in reader.messages([c for c in reader.connections if c.topic == "/joint_states"]))
    last_published_ns = max(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in list(joint_states))
    assert last_published_ns - last_recorded_ns <= 1e9, "the bag lost more than the last second of joint states"
