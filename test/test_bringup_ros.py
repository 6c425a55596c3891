"""`wam-ros bringup` with real nodes: start, clean shutdown, no orphans, required-node death."""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
import yaml
from sensor_msgs.msg import JointState

from ros_harness import wait_until
from wam_ros_interfaces.msg import SafetyStatus
from wam_ros.ros import qos

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


def two_node_robot(tmp_path: Path) -> Path:
    """panda_sim with only the sim and the safety bridge, both required, cameras slowed down."""
    data = yaml.safe_load((REPO / "config" / "robots" / "panda_sim.yaml").read_text())
    data["nodes"] = {
        "sim": {"kind": "sim", "required": True},
        "safety_bridge": {"kind": "safety_bridge", "required": True, "parameters": {"estop_latch_file": str(tmp_path / "estop.json")}},
    }
    path = tmp_path / "two_nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def child_pids(log: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"\[bringup\] started (\w+) \(\w+, pid (\d+)", log)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_bringup(processes, ros, tmp_path):
    process = processes.start("bringup", [sys.executable, "-m", "wam_ros.cli", "bringup", f"robot:={two_node_robot(tmp_path)}"])
    joint_states = ros.collect(JointState, "/joint_states", qos.SENSORS)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    wait_until(lambda: joint_states and statuses, 90.0, "joint states from the sim and a status from the bridge")
    pids = wait_until(lambda: len(child_pids(processes.log("bringup"))) == 2 and child_pids(processes.log("bringup")), 10.0, "both pids")
    return process, pids


def test_bringup_runs_two_nodes_and_shuts_down_cleanly(processes, ros, tmp_path):
    process, pids = start_bringup(processes, ros, tmp_path)
    assert all(alive(pid) for pid in pids.values())
    log = processes.log("bringup")
    assert "[sim]" in log and "[safety_bridge]" in log  # prefixed node output
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, processes.log("bringup")
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), 5.0, "no orphan node processes")


def test_required_node_death_stops_everything_with_an_error(processes, ros, tmp_path):
    process, pids = start_bringup(processes, ros, tmp_path)
    os.kill(pids["sim"], signal.SIGKILL)
    assert process.wait(timeout=30) != 0
    log = processes.log("bringup")
    assert "required node sim ended" in log
    wait_until(lambda: not alive(pids["safety_bridge"]), 5.0, "the safety bridge to be stopped")
