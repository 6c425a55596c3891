"""`wam-ros bringup robot:=panda_sim` starts the sim node (its own module: no other sim may run)."""
from __future__ import annotations

import signal
import sys

import pytest
import yaml
from rosgraph_msgs.msg import Clock

from ros_harness import wait_until
from wam_ros.robot import robot_config_path
from wam_ros.ros import qos

pytestmark = pytest.mark.ros


def test_bringup_starts_the_sim_and_stops_cleanly(processes, ros):
    # Only the sim: the other nodes of the robot's node set have their own tests.
    nodes = yaml.safe_load(robot_config_path("panda_sim").read_text())["nodes"]
    others = [f"{name}.enabled:=false" for name in nodes if name != "sim"]
    command = [sys.executable, "-m", "wam_ros.cli", "bringup", "robot:=panda_sim", "sim.task:=stack", *others]
    process = processes.start("bringup", command)
    clock = ros.collect(Clock, "/clock", qos.SENSORS)
    wait_until(lambda: "[sim]" in processes.log("bringup") and "task stack" in processes.log("bringup"), 60.0,
               "the sim node's start-up line in the bringup output")
    wait_until(lambda: len(clock) > 10, 30.0, "/clock from the bringup's sim node")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20.0) == 0, processes.log("bringup")
