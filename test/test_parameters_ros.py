"""Node parameters are read once at start-up: a set request from another process is refused with the reason."""
from __future__ import annotations

import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from ros_harness import wait_until
from wam_ros.robot import robot_config_path

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("kind", ["safety_bridge", "teleop"])
def test_parameters_are_read_only_except_use_sim_time(processes, ros, tmp_path, kind):
    parameters = {"robot_config": str(robot_config_path("panda_sim"))}
    if kind == "safety_bridge":
        parameters["estop_latch_file"] = str(tmp_path / "estop.json")
    processes.start_node(kind, **parameters)
    client = AsyncParameterClient(ros.node, f"/{kind}")
    assert client.wait_for_services(timeout_sec=60.0), processes.log(kind)

    def call(future_of):
        future = future_of()
        return wait_until(lambda: future.done() and (future.result() or True), 20.0, "a parameter service response") and future.result()

    name = "robot_config"
    before = call(lambda: client.get_parameters([name])).values[0].string_value
    results = call(lambda: client.set_parameters([Parameter(name, value="elsewhere.yaml")])).results
    assert not results[0].successful and results[0].reason.startswith("read-only: restart the node with the new value"), results
    assert call(lambda: client.get_parameters([name])).values[0].string_value == before
    assert call(lambda: client.set_parameters([Parameter("use_sim_time", value=False)])).results[0].successful
