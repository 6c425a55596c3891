"""The scripted operator's rules and recoveries without ROS: constructed scenes, then the in-process sim."""
from __future__ import annotations

import numpy as np
import pytest

from wam_ros.robot import load_robot_config
from wam_ros.sim import SimConfig, TabletopEnv
from wam_ros.teleop.mapping import MODE_AUTONOMY, MODE_HOLD, MODE_TELEOP
from wam_ros.teleop.scripted_operator import (FailureMonitor, OperatorConfig, OperatorView, Scene, ScriptedOperator,
                                              UrdfArmIK, instruction_target)

ROBOT = load_robot_config("panda_sim")
SIM = SimConfig.from_robot(ROBOT)
HOME = np.array(ROBOT.arm.home_rad)
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def test_instruction_target():
    assert instruction_target("put the red cube in the bin") == ("red_cube", 0)
    assert instruction_target("put the green cube in the near end of the bin") == ("green_cube", 1)
    assert instruction_target("put the blue cube in the far end of the bin") == ("blue_cube", 2)
    assert instruction_target("stack the red cube on the green cube") is None
    assert instruction_target("move the gripper to the yellow ball") is None


def scene(t_s: float, tcp_target: np.ndarray | None = None, width_m: float = 0.08, red=(0.5, 0.0, 0.0225), green=(0.5, 0.2, 0.0225)) -> Scene:
    objects = {"red_cube": (np.array(red), IDENTITY), "green_cube": (np.array(green), IDENTITY),
               "blue_cube": (np.array([0.4, 0.1, 0.0225]), IDENTITY), "bin": (np.array([0.42, -0.34, 0.0]), IDENTITY)}
    return Scene(t_s, 1, "put the red cube in the bin", False, objects, HOME.copy(), width_m)


def view(s: Scene, tcp: np.ndarray) -> OperatorView:
    return OperatorView(s, np.asarray(tcp, float), SIM.cube_size_m, 0.04)


def test_failure_rules_on_constructed_scenes():
    config = OperatorConfig(no_progress_timeout_s=2.0, handback_grace_s=0.5)
    monitor = FailureMonitor(config, SIM.cube_size_m)
    monitor.restart(0.0)
    # Approaching the cube is progress: nothing fires.
    for k in range(30):
        t = 0.1 * k
        s = scene(t)
        assert monitor.check(s, view(s, [0.5, 0.0, 0.4 - 0.01 * k]), "red_cube") == ""
    # Standing still: no progress after the timeout, not before.
    last_progress_s = 2.9
    s = scene(last_progress_s + 1.9)
    assert monitor.check(s, view(s, [0.5, 0.0, 0.11]), "red_cube") == ""
    s = scene(last_progress_s + 2.1)
    assert monitor.check(s, view(s, [0.5, 0.0, 0.11]), "red_cube").startswith("no progress")

    monitor.restart(10.0)
    for t in (10.0, 10.3, 10.6):  # closed on nothing: fires once empty_grasp_s has passed after the grace
        s = scene(t, width_m=0.002)
        reason = monitor.check(s, view(s, [0.5, 0.0, 0.1 - (t - 10.0) * 0.1]), "red_cube")
    assert reason.startswith("gripper closed on nothing"), reason

    monitor.restart(20.0)
    s = scene(21.0, width_m=0.045, green=(0.5, 0.2, 0.12))  # its last reported pose 3 cm below the TCP: still in the hand
    assert monitor.check(s, view(s, [0.5, 0.2, 0.15]), "red_cube") == "holding green_cube instead of red_cube"
    assert not view(scene(21.0, width_m=0.002, green=(0.5, 0.2, 0.15)), [0.5, 0.2, 0.15]).held("green_cube")  # closed on nothing

    monitor.restart(30.0)
    s = scene(31.0)
    assert monitor.check(s, view(s, [0.5, -0.7, 0.2]), "red_cube").startswith("TCP left the task region")
    monitor.restart(40.0)
    s = scene(41.0)
    assert monitor.check(s, view(s, [0.5, 0.0, 0.7]), "red_cube").startswith("TCP left the task region")


def test_urdf_ik_round_trip():
    ik = UrdfArmIK(ROBOT)
    position, rotation = ik.forward(HOME)
    q = ik.inverse(position + [0.05, -0.05, -0.1], rotation, HOME, HOME)
    np.testing.assert_allclose(ik.forward(q)[0], position + [0.05, -0.05, -0.1], atol=1e-3)


def env_scene(env: TabletopEnv) -> Scene:
    status = env.task_status()
    objects = {name: (pose[:3].copy(), pose[3:].copy()) for name, pose in zip(status.object_names, status.object_poses)}
    state = env.observation().state
    return Scene(env.time_s, status.episode, status.subtask_instructions[min(status.subtasks_done, 0)], status.success, objects,
                 state[:7].copy(), float(state[7]))


@pytest.mark.parametrize("cube_size_m", [SIM.cube_size_m, 0.06])
def test_operator_recovers_a_stalled_policy_in_the_sim(cube_size_m):
    """A policy that never moves: the operator takes over, picks the cube, hands back, takes over
    again (the cube held, no progress), puts it in the bin, and hands back; every request names it.
    With cubes a third larger than the default too (the operator sees the scene's cube size)."""
    sim = SimConfig.from_robot(ROBOT, {"cube_size_m": cube_size_m})
    operator = ScriptedOperator(ROBOT, sim, OperatorConfig(no_progress_timeout_s=1.5, handback_grace_s=0.5), name="op")
    requests: list[tuple[int, str]] = []
    with TabletopEnv(ROBOT, sim) as env:
        env.reset("pick_place", 7)
        mode, requester = MODE_AUTONOMY, "dagger"
        stalled = (HOME.copy(), ROBOT.gripper.width_max_m)  # the "policy": hold where the arm was when it got control
        period = 0.02
        while env.time_s < 60.0 and not (env.task_status().success and mode == MODE_AUTONOMY):
            command = operator.step(env_scene(env), mode, requester)
            if command.request_mode is not None:
                requests.append((command.request_mode, command.reason))
                mode, requester = command.request_mode, "op"  # the bridge grants at once
                if mode == MODE_AUTONOMY:
                    stalled = (env.observation().state[:7].copy(), 0.0 if command.gripper_width_m == 0.0 else ROBOT.gripper.width_max_m)
            if mode == MODE_TELEOP and command.joint_target is not None:
                env.set_joint_target(command.joint_target, command.gripper_width_m)
            elif mode == MODE_AUTONOMY:
                env.set_joint_target(*stalled)
            env.advance(period)
        assert env.task_status().success, requests
    assert [m for m, _ in requests] == [MODE_TELEOP, MODE_AUTONOMY, MODE_TELEOP, MODE_AUTONOMY], requests
    assert "no progress" in requests[0][1] and requests[1][1] == "op: hand back: recovered", requests
    assert requests[3][1] == "op: hand back: finished the subtask", requests
    assert [t.outcome for t in operator.takeovers] == ["recovered", "finished the subtask"]
    assert all(t.end_s is not None and t.end_s > t.start_s for t in operator.takeovers)


def test_operator_stops_driving_when_someone_else_takes_the_arm():
    operator = ScriptedOperator(ROBOT, SIM, OperatorConfig(no_progress_timeout_s=0.5, handback_grace_s=0.0), name="op")
    with TabletopEnv(ROBOT) as env:
        env.reset("pick_place", 3)
        t0 = env.time_s
        while operator.state == operator.WATCHING and env.time_s < t0 + 3.0:
            command = operator.step(env_scene(env), MODE_AUTONOMY, "dagger")
            env.advance(0.02)
        assert command.request_mode == MODE_TELEOP
        assert operator.step(env_scene(env), MODE_TELEOP, "op").joint_target is not None
        env.advance(0.02)
        assert operator.step(env_scene(env), MODE_HOLD, "teleop") == type(command)()  # a person's HOLD: nothing more
        assert operator.takeovers[-1].outcome == "interrupted"
        assert operator.step(env_scene(env), MODE_HOLD, "teleop").request_mode is None


def test_config_is_checked():
    with pytest.raises(ValueError, match="max_takeovers"):
        OperatorConfig(max_takeovers=0).validate()
