"""An ActionChunk executed on the real MuJoCo sim node through the real safety bridge, on sim time."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from sensor_msgs.msg import JointState

from ros_harness import wait_until
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
from wam_ros.robot import load_robot_config, robot_config_path
from wam_ros.ros import qos
from wam_ros.ros.conversions import seconds_to_time, time_to_seconds
from wam_ros_interfaces.srv import SetMode

pytestmark = [pytest.mark.ros,
              pytest.mark.skipif(importlib.util.find_spec("wam_ros.nodes.sim_node") is None, reason="the sim node is not in this tree")]
ROBOT = load_robot_config("panda_sim")
NAMES = list(ROBOT.arm.joint_names)


def test_chunk_executes_on_the_sim_node(processes, ros, tmp_path):
    config = str(robot_config_path("panda_sim"))
    processes.start_node("sim", robot_config=config, camera_rate_hz=1.0, task="reach")
    processes.start_node("safety_bridge", robot_config=config, use_sim_time=True, estop_latch_file=str(tmp_path / "estop.json"),
                         inference_timeout_s=10.0)
    states: list[JointState] = ros.collect(JointState, "/joint_states", qos.SENSORS)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    chunks = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_until(lambda: states and statuses, 60.0, "joint states from the sim and the bridge's status")

    def measured() -> tuple[float, np.ndarray]:
        msg = states[-1]
        index = [list(msg.name).index(name) for name in NAMES]
        return time_to_seconds(msg.header.stamp), np.array(msg.position)[index]

    wait_until(lambda: 0.0 <= statuses[-1].joint_state_age_s < 0.05, 60.0, "the bridge receiving joint states on sim time")
    response = ros.call(client, SetMode.Request(mode=SafetyStatus.MODE_AUTONOMY, reason="sim test"), 20.0)
    assert response.accepted, response.message
    ros.wait_for_subscribers(chunks)
    stamp, start = measured()
    goal = start + np.array([0.25, 0.15, -0.1, 0.2, 0.0, -0.15, 0.3])
    horizon, period = 20, 0.1
    targets = start + np.linspace(0.0, 1.0, horizon)[:, None] * (goal - start)
    chunk = ActionChunk(joint_names=NAMES, control_period_s=period, horizon=horizon, joint_positions=targets.ravel().tolist(),
                        gripper_widths=[0.06] * horizon, chunk_id=1, model_id="test")
    chunk.header.stamp = seconds_to_time(stamp)
    chunks.publish(chunk)
    end_s = stamp + (horizon - 1) * period
    # The stale-chunk watchdog holds the arm right after the last action; by then it has arrived.
    hold = wait_until(lambda: next((s for s in list(statuses) if s.mode == SafetyStatus.MODE_HOLD), None), 60.0, "HOLD after the chunk")
    assert "action_chunk_stale" in hold.last_stop_reason, hold.last_stop_reason
    assert 0.0 <= time_to_seconds(hold.last_stop_stamp) - end_s <= ROBOT.safety.watchdog_margin_s
    wait_until(lambda: measured()[0] > end_s + 1.0, 60.0, "one more second of sim time")
    _, final = measured()
    assert np.max(np.abs(final - goal)) < 0.03, f"arm at {final}, goal {goal}"
    widths = [sum(m.position[list(m.name).index(f)] for f in ROBOT.gripper.joint_names) for m in states[-5:]]
    assert abs(widths[-1] - 0.06) < 0.01
    assert not any(v for s in statuses for v in s.violations if not v.startswith("multiple_publishers")), [s.violations for s in statuses]
