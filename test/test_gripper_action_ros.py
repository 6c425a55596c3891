"""The bridge commands grippers through control_msgs/action/GripperCommand, as real processes.

- Closed loop: the sim node serves the action (as franka_gripper does on the FR3) and the bridge
  picks a cube and puts it in the bin through it, replaying a scripted expert's actions as one
  ActionChunk: the grasp stalls on the cube (aborted with ``stalled``) and is no failure.
- A misbehaving server written here (rejects, aborts, never answers) and a missing one: each
  holds the arm, the reason naming the action and the result.
"""
from __future__ import annotations

import json
from pathlib import Path

import control_msgs
import numpy as np
import pytest
import yaml
from action_msgs.msg import GoalStatus, GoalStatusArray
from control_msgs.action import GripperCommand
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import JointState

from ros_harness import wait_until
from test_safety_ros import EchoArm, describe, make_chunk, now_s, set_mode, wait_for_joint_states
from wam_ros.robot import load_robot_config, robot_config_path
from wam_ros.ros import qos
from wam_ros.ros.conversions import time_to_seconds
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, TaskStatus
from wam_ros_interfaces.srv import SetMode

pytestmark = pytest.mark.ros
ROBOT = load_robot_config("panda_sim")
GRIPPER = ROBOT.gripper
NAMES = list(ROBOT.arm.joint_names)
PICK_SEED = 3
#: The bridge's latched status, every message kept: a violation is reported in one status only.
STATUS_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def robot_config(tmp_path: Path, **gripper) -> str:
    """panda_sim's robot file with some gripper settings changed."""
    data = yaml.safe_load(robot_config_path("panda_sim").read_text())
    data["robot"]["gripper"].update(gripper)
    path = tmp_path / "panda_sim.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def expert_actions(seed: int) -> np.ndarray:
    """The scripted expert's pick-and-place in the in-process sim: (T, 8) joint targets + gripper width, 10 Hz."""
    from wam_ros.sim import TabletopEnv, make_expert

    env = TabletopEnv(ROBOT)
    observation = env.reset("pick_place", seed)
    expert, actions = make_expert(env), []
    while not expert.done:
        actions.append(expert.act(observation))
        observation = env.step(actions[-1])
    assert env.task_status().success
    env.close()
    return np.array(actions)


def test_the_bridge_picks_through_the_sim_nodes_gripper_action(processes, ros, tmp_path):
    actions = expert_actions(PICK_SEED)
    config = str(robot_config_path("panda_sim"))
    processes.start_node("sim", robot_config=config, camera_rate_hz=1.0, task="pick_place", seed=PICK_SEED)
    processes.start_node("safety_bridge", robot_config=config, use_sim_time=True, estop_latch_file=str(tmp_path / "estop.json"),
                         inference_timeout_s=60.0)
    states: list[JointState] = ros.collect(JointState, "/joint_states", qos.SENSORS)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", STATUS_QOS)
    tasks = ros.collect(TaskStatus, "/wam/sim/task_status", qos.STATUS)
    goal_statuses = ros.collect(GoalStatusArray, f"{GRIPPER.action_name}/_action/status", qos.LATCHED)
    chunks = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    wait_until(lambda: states and statuses and 0.0 <= statuses[-1].joint_state_age_s < 0.05, 60.0, "the bridge on the sim's joint states")
    assert set_mode(ros, client, SafetyStatus.MODE_AUTONOMY).accepted
    ros.wait_for_subscribers(chunks)
    chunk = ActionChunk(joint_names=NAMES, control_period_s=0.1, horizon=len(actions), joint_positions=actions[:, :7].ravel().tolist(),
                        gripper_widths=actions[:, 7].tolist(), chunk_id=1, model_id="expert replay")
    chunk.header.stamp = states[-1].header.stamp
    chunks.publish(chunk)
    end_s = time_to_seconds(chunk.header.stamp) + len(actions) * 0.1
    wait_until(lambda: tasks and tasks[-1].success, 30.0 + 3 * len(actions) * 0.1, "the cube in the bin",
               detail=lambda: describe(statuses) + f"; sim time {time_to_seconds(states[-1].header.stamp):.1f} of {end_s:.1f} s")

    finished = {bytes(s.goal_info.goal_id.uuid): s.status for array in goal_statuses for s in array.status_list
                if s.status in (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_CANCELED)}
    assert GoalStatus.STATUS_ABORTED in finished.values(), "the grasp should stall on the cube (aborted, stalled)"
    assert GoalStatus.STATUS_SUCCEEDED in finished.values() and GoalStatus.STATUS_CANCELED not in finished.values()
    assert len(finished) < 10  # goals on change, not a 250 Hz stream
    assert not [v for s in statuses for v in s.violations if not v.startswith("multiple_publishers")], describe(statuses)
    # On the wire the action's types carry the stand-in's (or the installed control_msgs') hashes.
    (info,) = ros.node.get_publishers_info_by_topic(f"{GRIPPER.action_name}/_action/feedback")
    description = Path(control_msgs.__file__).resolve().parents[4] / "share" / "control_msgs" / "action" / "GripperCommand.json"
    hashes = {entry["type_name"]: entry["hash_string"] for entry in json.loads(description.read_text())["type_hashes"]}
    assert info.topic_type == "control_msgs/action/GripperCommand_FeedbackMessage"
    assert str(info.topic_type_hash) == hashes[info.topic_type]


class MisbehavingGripper:
    """A GripperCommand server in the test process that rejects, aborts or never answers with a result."""

    def __init__(self, ros, behaviour: str) -> None:
        self.behaviour = behaviour
        self.goals: list[float] = []
        self.never: Future = Future()
        # Reentrant: a coroutine waiting in a mutually exclusive group would block the echo arm's timer.
        self.server = ActionServer(ros.node, GripperCommand, GRIPPER.action_name, self.execute, goal_callback=self.on_goal,
                                   callback_group=ReentrantCallbackGroup())

    def on_goal(self, goal: GripperCommand.Goal) -> GoalResponse:
        self.goals.append(goal.command.position)
        return GoalResponse.REJECT if self.behaviour == "reject" else GoalResponse.ACCEPT

    async def execute(self, goal_handle) -> GripperCommand.Result:
        if self.behaviour == "silent":
            await self.never
        goal_handle.abort()
        return GripperCommand.Result(position=GRIPPER.position_from_width(0.03), effort=5.0, stalled=False, reached_goal=False)


@pytest.mark.parametrize(("behaviour", "expected"), [
    ("reject", "rejected"),
    ("abort", "aborted: reached_goal false, stalled false, position 0.0150 (width 0.0300 m), effort 5"),
    ("silent", "accepted but no result within command_timeout_s 1 s"),
    ("absent", "not sent: no action server"),
])
def test_a_failing_gripper_holds_the_arm_naming_the_action_and_the_result(processes, ros, tmp_path, behaviour, expected):
    processes.start_node("safety_bridge", robot_config=robot_config(tmp_path, command_timeout_s=1.0), status_rate_hz=20.0,
                         estop_latch_file=str(tmp_path / "estop.json"), joint_state_timeout_s=0.5, inference_timeout_s=30.0)
    server = None if behaviour == "absent" else MisbehavingGripper(ros, behaviour)
    EchoArm(ros)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", STATUS_QOS)
    client = ros.node.create_client(SetMode, "/wam/set_mode")
    chunks = ros.node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    wait_for_joint_states(statuses)
    if server is not None:  # the bridge's client has found the server
        wait_until(lambda: ros.node.count_subscribers(f"{GRIPPER.action_name}/_action/status") > 0, 20.0, "the bridge's action client")
    assert set_mode(ros, client, SafetyStatus.MODE_AUTONOMY).accepted
    ros.wait_for_subscribers(chunks)
    home = np.array(ROBOT.arm.home_rad)
    chunk = make_chunk(now_s(ros), np.tile(home, (40, 1)), 0.1)
    chunk.gripper_widths = [0.0] * 40  # close: one goal
    chunks.publish(chunk)
    hold = wait_until(lambda: next((s for s in list(statuses) if s.mode == SafetyStatus.MODE_HOLD), None), 20.0, "HOLD",
                      detail=lambda: describe(statuses))
    assert hold.last_stop_reason.startswith(f"gripper action {GRIPPER.action_name}: goal 1 (width 0.0000 m"), hold.last_stop_reason
    assert hold.last_stop_reason.endswith(expected), hold.last_stop_reason
    assert any(v.startswith(f"gripper: gripper action {GRIPPER.action_name}") for s in statuses for v in s.violations)
    if server is not None:
        assert server.goals == [pytest.approx(GRIPPER.position_from_width(0.0))]  # one goal, not a stream
