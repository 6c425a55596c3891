"""wam_inference with the websocket backend in a real graph: against `wam-ros serve` it drives the sim
through the bridge; against a misbehaving server the bridge holds and nothing from a failed request
reaches it."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray

from fake_policy_server import FakePolicyServer
from ros_harness import wait_until
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
from wam_ros_interfaces.srv import SetMode

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "cpu-small-pick-place"
ROBOT = load_robot_config("panda_sim")
HOME = np.asarray(ROBOT.arm.home_rad)
START_TIMEOUT_S = 240.0  # torch + checkpoint + warm-up, or DDS discovery, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_websocket_backend_runs_a_pick_place_episode_through_wam_ros_serve(processes):
    from wam_ros.bringup import load_bringup
    from wam_ros.clients.demo import run_closed_loop

    port = free_port()
    server = processes.python("serve", "-m", "wam_ros.cli", "serve", "--checkpoint", str(CHECKPOINT), "--port", str(port))
    wait_until(lambda: healthy(port) or server.poll() is not None, START_TIMEOUT_S, "wam-ros serve to answer /healthz")
    assert server.poll() is None, processes.log("serve")
    bringup = load_bringup("panda_sim", {"recorder": {"enabled": False}, "wam_inference": {
        "policy_backend": "websocket", "policy": "wam_ros", "server_url": f"ws://127.0.0.1:{port}"}})
    result = run_closed_loop(bringup, "pick_place", [100000], episode_timeout_s=12.0, startup_timeout_s=START_TIMEOUT_S)
    assert not result.failure, result.failure
    (report,) = result.reports
    assert report.chunks >= 8, report  # chunks flowed for the whole episode
    assert not report.safety_events, report.safety_events
    assert report.sim_duration_s > 3.0 or report.success
    max_step = ROBOT.safety.max_joint_step_rad
    assert max(report.boundary_jumps) <= max_step, report.boundary_jumps  # joined chunks: no step at the switches
    assert report.inference_stages_ms["policy_round_trip_ms_p50"] > 0 and report.inference_stages_ms["policy_compute_ms_p50"] > 0
    assert "client 127.0.0.1" in processes.log("serve")
    assert result.supervisor_code == 0


def safety_mode(statuses: list) -> int:
    return statuses[-1].mode if statuses else -1


def test_faults_give_no_chunk_the_bridge_holds_and_the_node_reconnects(processes, ros, tmp_path):
    port = free_port()  # nothing listens yet: the server is unreachable at first
    processes.start_node("sim", robot_config=str(ROBOT.path), task="pick_place", seed=3)
    processes.start_node("safety_bridge", robot_config=str(ROBOT.path), use_sim_time=True, estop_latch_file=str(tmp_path / "estop.json"))
    processes.start_node("wam_inference", robot_config=str(ROBOT.path), use_sim_time=True, instruction="put the red cube in the bin",
                         policy_backend="websocket", policy="wam_ros", server_url=f"ws://127.0.0.1:{port}", request_timeout_s=0.5,
                         reconnect_backoff_min_s=0.2, reconnect_backoff_max_s=1.0, diagnostics_period_s=0.5)
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    set_mode = ros.node.create_client(SetMode, "/wam/set_mode")

    def messages() -> list[str]:
        return [s.message for m in list(diagnostics) for s in m.status if s.name.startswith("wam_inference")]

    wait_until(lambda: any("unreachable" in m for m in messages()), START_TIMEOUT_S, "a diagnostic saying the server is unreachable",
               detail=lambda: str(messages()[-2:]))
    assert not chunks
    log = processes.log("wam_inference")
    assert f"ws://127.0.0.1:{port}: unreachable" in log and "no chunk; reconnecting in" in log, log

    with FakePolicyServer(base=HOME, slow_s=3.0, port=port) as fake:
        wait_until(lambda: len(chunks) >= 2 and statuses, 60.0, "chunks once the server is up")
        for mode, why in (("slow", "timeout: no answer within 0.50 s"), ("disconnect", "disconnected"),
                          ("garbage", "garbage"), ("nan", "non-finite"), ("error", "server_error")):
            response = ros.call(set_mode, SetMode.Request(mode=SafetyStatus.MODE_AUTONOMY, reason=f"before {mode}"))
            assert response.accepted, response.message
            wait_until(lambda: safety_mode(statuses) == SafetyStatus.MODE_AUTONOMY, 10.0, "AUTONOMY")
            fake.mode = mode
            held = wait_until(lambda: safety_mode(statuses) == SafetyStatus.MODE_HOLD and statuses[-1], 15.0,
                              f"the bridge to HOLD when the server turns {mode}")
            assert "watchdog" in held.last_stop_reason, held.last_stop_reason
            wait_until(lambda: why in processes.log("wam_inference"), 10.0, f"the node to log {why!r}")
            fake.mode = "good"
            count = len(chunks)
            wait_until(lambda: len(chunks) > count + 1, 30.0, f"chunks again after the {mode} fault")
        offsets = np.asarray([a[0, :7] - HOME for a in fake.answers])  # every good answer's offset from home
    # Every published chunk is a good answer (or a blend of two): no value of a failed request, no NaN.
    published = np.asarray([c.joint_positions for c in chunks]).reshape(len(chunks), -1, 7) - HOME
    assert np.all(np.isfinite(published))
    assert published.min() >= offsets.min() - 1e-6 and published.max() <= offsets.max() + 1e-6
    violations = [v for s in statuses for v in s.violations]
    assert not [v for v in violations if "action_chunk" in v], violations  # the bridge refused nothing: nothing bad reached it
