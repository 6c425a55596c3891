"""Test-wide ROS settings: DDS on loopback, a ROS_DOMAIN_ID of this run's own, logs in a temp dir.

Set at import, before any test creates a ROS context or starts a process, so every process of
this test run (and only those) shares one domain.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ["ROS_DOMAIN_ID"] = os.environ.get("WAM_ROS_TEST_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "dds" / "fastdds_localhost.xml")
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="wam_ros_test_logs_"))
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def processes(tmp_path):
    """Start real processes; every one (and its process group) is stopped when the test ends."""
    from ros_harness import Processes

    group = Processes(tmp_path / "logs")
    yield group
    group.stop_all()


@pytest.fixture
def ros(tmp_path):
    """An rclpy node in this test process, spun in a background thread, torn down afterwards."""
    from ros_harness import RosProbe

    probe = RosProbe()
    yield probe
    probe.close()
