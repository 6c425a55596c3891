"""Two full panda_sim stacks under /left and /right in one ROS domain: each runs a pick-place
episode with its own sim, clock, bridge and WAM at the same time, no message crosses between
them, and a bridge refuses chunks from the other stack's inference node."""
from __future__ import annotations

import sys
import threading

import pytest
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from ros_harness import wait_until
from wam_ros.clients.demo import DemoClient
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus

pytestmark = [pytest.mark.ros, pytest.mark.slow]
NAMESPACES = ("/left", "/right")
SEEDS = {"/left": 100000, "/right": 100001}  # held out: the shipped checkpoint trains on seeds below 1000
GRAPH_TOPICS = {"/rosout", "/parameter_events"}  # every node's, by ROS design


def start_stack(processes, namespace: str):
    # Two sims, two models and two bridges share the machine's cores: at real time a starved
    # model's chunk came late (policy compute p99 0.8 s) and the bridge's stale-chunk watchdog
    # held the arm. At half speed every deadline on the stacks' sim clocks has twice the wall time.
    return processes.start(f"stack{namespace.replace('/', '_')}", [
        sys.executable, "-m", "wam_ros.cli", "bringup", "robot:=panda_sim", f"namespace:={namespace[1:]}", "recorder.enabled:=false",
        "sim.real_time_factor:=0.5"])


def test_two_namespaced_stacks_run_pick_place_at_once_without_crossing(processes, ros, tmp_path):
    for namespace in NAMESPACES:
        start_stack(processes, namespace)
    chunks = {ns: ros.collect(ActionChunk, f"{ns}/wam/action_chunk", qos.COMMANDS) for ns in NAMESPACES}
    statuses = {ns: ros.collect(SafetyStatus, f"{ns}/wam/safety/status", qos.LATCHED) for ns in NAMESPACES}
    clients = {ns: DemoClient(None, 240.0, ns) for ns in NAMESPACES}
    reports, errors = {}, {}

    def episode(namespace: str) -> None:
        try:
            clients[namespace].wait_ready(240.0)
            reports[namespace] = clients[namespace].run_episode("pick_place", SEEDS[namespace], 40.0, threading.Event())
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors[namespace] = error

    try:
        threads = [threading.Thread(target=episode, args=(ns,)) for ns in NAMESPACES]
        for thread in threads:
            thread.start()
        # While both run: a node of the right stack (named like its inference node) sends a valid
        # chunk to the left bridge, whose command lock its own inference node holds.
        wait_until(lambda: all(s and s[-1].mode == SafetyStatus.MODE_AUTONOMY and s[-1].command_source for s in statuses.values()) or errors,
                   300.0, "both bridges in AUTONOMY driven by their policies", detail=lambda: str(errors))
        assert not errors, errors
        stranger = _node_in("wam_inference", "/right")
        try:
            intruder = stranger.create_publisher(ActionChunk, "/left/wam/action_chunk", qos.COMMANDS)
            robot = load_robot_config("panda_sim")
            stray = ActionChunk(joint_names=list(robot.arm.joint_names), control_period_s=0.1, horizon=1,
                                joint_positions=list(robot.arm.home_rad))

            def intrude() -> bool:
                stray.header.stamp = statuses["/left"][-1].header.stamp  # the left stack's time: a chunk it would execute
                intruder.publish(stray)
                return any("refused messages from /right/wam_inference" in v for s in statuses["/left"][-20:] for v in s.violations)

            wait_until(intrude, 30.0, "the left bridge refusing the right stack's inference node", poll_s=0.1)
        finally:
            stranger.destroy_node()
        for thread in threads:
            thread.join(timeout=300.0)
        assert not errors, errors
    finally:
        for client in clients.values():
            client.close()
    for namespace in NAMESPACES:
        report = reports[namespace]
        assert report.chunks > 5 and report.success, f"{namespace}: {report}"
        assert {c.subtask_id for c in chunks[namespace] if c.subtask_id} == {f"pick_place-{SEEDS[namespace]}"}, namespace
        assert {s.command_source for s in statuses[namespace] if s.command_source} == {f"{namespace}/wam_inference"}
        # the demo client names itself when it asks for AUTONOMY (the bridge logs and publishes who asked)
        assert {s.mode_requester for s in statuses[namespace] if s.mode == SafetyStatus.MODE_AUTONOMY} == {"wam_demo"}
    names = {name for name, _ in ros.node.get_topic_names_and_types()}
    outside = sorted(name for name in names - GRAPH_TOPICS if not name.startswith(NAMESPACES))
    assert not outside, f"topics outside the stacks' namespaces: {outside}"


def _node_in(name: str, namespace: str):
    """A node of this test process in another namespace, spun by the probe's executor."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, namespace=namespace, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    threading.Thread(target=spin, daemon=True).start()
    original = node.destroy_node

    def destroy() -> None:
        original()
        rclpy.try_shutdown(context=context)

    node.destroy_node = destroy
    return node
