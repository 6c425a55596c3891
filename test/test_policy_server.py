"""``wam-ros serve``'s server with the real model over real loopback sockets, and the client side's
fault handling against misbehaving servers (no ROS)."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fake_policy_server import FakePolicyServer
from wam_ros.inference.backends import PolicyFault, RemoteBackend
from wam_ros.policy import codec
from wam_ros.policy.client import PolicyClient, PolicyConnectionError
from wam_ros.policy.mapping import RobotPolicyAdapter, load_policy_mapping
from wam_ros.policy.server import PolicyServer
from wam_ros.policy.wam import ServedWam
from wam_ros.robot import load_robot_config

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "cpu-small-pick-place"
ROBOT = load_robot_config("panda_sim")
HOME = np.asarray(ROBOT.arm.home_rad)
PROMPT = "put the red cube in the bin"


@pytest.fixture(scope="module")
def served():
    import torch

    from wam_ros.model import load_policy

    torch.set_num_threads(1)
    runtime = load_policy(CHECKPOINT)
    runtime.warmup()
    return ServedWam(runtime, max_message_bytes=1 << 20)


@pytest.fixture
def server(served):
    server = PolicyServer(served, port=0, max_message_bytes=1 << 20, log=lambda text: None).start()
    yield server
    server.stop()


def observation(**changes):
    obs = {"observation/front_image": np.zeros((96, 96, 3), np.uint8), "observation/wrist_image": np.zeros((96, 96, 3), np.uint8),
           "observation/state": np.r_[HOME, 0.08].astype(np.float32), "prompt": PROMPT}
    obs.update(changes)
    return {k: v for k, v in obs.items() if v is not None}


def test_metadata_chunks_and_frozen_prefix(server, served):
    client = PolicyClient(server.url)
    metadata = client.connect()
    assert metadata["horizon"] == 16 and metadata["control_period_s"] == pytest.approx(0.1)
    assert metadata["image_resolution"] == [96, 96] and metadata["accepts_frozen_prefix"] is True
    reply, round_trip_s = client.infer(observation(), 30.0)
    assert reply["actions"].shape == (16, 8) and reply["actions"].dtype == np.float32 and np.all(np.isfinite(reply["actions"]))
    assert 0 < reply["policy_timing"]["infer_ms"] <= reply["server_timing"]["infer_ms"] <= round_trip_s * 1e3
    prefix = np.tile(np.r_[HOME, 0.05], (3, 1)).astype(np.float32)
    reply, _ = client.infer(observation(frozen_prefix=prefix), 30.0)
    np.testing.assert_allclose(reply["actions"][:3], prefix, atol=1e-5)
    client.close()


def test_healthz_and_api_key(served):
    server = PolicyServer(served, port=0, api_key="s3cret", log=lambda text: None).start()
    try:
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.bound_port}/healthz", timeout=5).status == 200
        with pytest.raises(PolicyConnectionError, match="refused: .*HTTP 401 .*api key"):
            PolicyClient(server.url).connect()
        with pytest.raises(PolicyConnectionError, match="HTTP 401"):
            PolicyClient(server.url, api_key="wrong").connect()
        client = PolicyClient(server.url, api_key="s3cret")
        assert client.connect()["horizon"] == 16
        assert client.infer(observation(), 30.0)[0]["actions"].shape == (16, 8)
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("bad, match", [
    (observation(prompt=None), r"missing keys \['prompt'\]"),
    (observation(**{"observation/wrist_image": np.zeros((96, 96, 3), np.float32)}), "'observation/wrist_image': expected a uint8 array, got float32"),
    (observation(**{"observation/front_image": np.zeros((64, 96, 3), np.uint8)}), r"'observation/front_image': expected shape \(96, 96, 3\)"),
    (observation(**{"observation/state": np.zeros(7, np.float32)}), r"'observation/state': expected shape \(8,\)"),
    (observation(frozen_prefix=np.zeros((16, 8), np.float32)), "'frozen_prefix': expected shape"),
    (observation(**{"observation/front_image": np.zeros((700, 700, 3), np.uint8)}), r"message of \d+ bytes exceeds the limit of 1048576 bytes"),
])
def test_a_bad_observation_gets_an_error_frame_naming_it_and_others_are_served_meanwhile(server, bad, match):
    other = PolicyClient(server.url)
    other.connect()
    client = PolicyClient(server.url)
    client.connect()
    with pytest.raises(PolicyConnectionError, match="server_error: observation refused: " + match):
        client.infer(bad, 30.0)
    assert not client.connected
    assert other.infer(observation(), 30.0)[0]["actions"].shape == (16, 8)  # the other connection is unaffected
    client.connect()  # and new ones are accepted
    assert client.infer(observation(), 30.0)[0]["actions"].shape == (16, 8)
    other.close()
    client.close()


def test_text_and_undecodable_frames_are_refused_with_close_1011(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    for frame, match in (("hello", "expected a binary msgpack frame"), (b"\xc1\xc1", "undecodable message")):
        with connect(server.url) as connection:
            codec.unpack(connection.recv(timeout=10))
            connection.send(frame)
            text = connection.recv(timeout=10)
            assert isinstance(text, str) and match in text
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv(timeout=10)
            assert closed.value.rcvd.code == 1011


# -- the client side: faults never give a chunk, and the backend reconnects with backoff ------------

def remote(url: str, request_timeout_s: float = 0.5, policy: str = "wam_ros", protocol_log: list | None = None) -> RemoteBackend:
    mapping = load_policy_mapping(policy)
    client = PolicyClient(url, protocol=mapping.protocol, connect_timeout_s=2.0)
    log = protocol_log if protocol_log is not None else []
    return RemoteBackend(RobotPolicyAdapter(mapping, ROBOT), client, request_timeout_s, 0.2, 0.8, warn=log.append, info=lambda text: None)


def inputs():
    images = {c: np.zeros((1, 96, 96, 3), np.uint8) for c in ("front", "wrist")}
    return images, np.r_[HOME, 0.08][None].astype(np.float32)


def test_unreachable_server_backs_off_and_says_why():
    log: list[str] = []
    with FakePolicyServer() as fake:
        url = fake.url
    backend = remote(url, protocol_log=log)  # the port is closed again: nothing listens
    with pytest.raises(PolicyFault, match="unreachable"):
        backend.infer(*inputs(), "go", None)
    started = time.monotonic()
    with pytest.raises(PolicyFault, match=r"reconnecting in 0\.\d s after: unreachable"):
        backend.infer(*inputs(), "go", None)
    assert time.monotonic() - started < 0.05  # no connection attempt during the backoff
    waits = []
    for _ in range(3):
        time.sleep(backend._retry_at - time.monotonic() + 0.01)
        with pytest.raises(PolicyFault, match="unreachable"):
            backend.infer(*inputs(), "go", None)
        waits.append(float(log[-1].rsplit("reconnecting in ", 1)[1].split(" s")[0]))
    assert waits == [0.4, 0.8, 0.8]  # doubles, up to the maximum
    assert "no chunk" in log[0] and url in log[0]


@pytest.mark.parametrize("mode, match", [
    ("slow", "timeout: no answer within 0.50 s"),
    ("disconnect", "disconnected: the server closed the connection"),
    ("garbage", "garbage: the result is not a valid message"),
    ("nan", "holds non-finite values"),
    ("error", "(?s)server_error: Traceback.*CUDA out of memory"),
])
def test_a_fault_mid_episode_gives_no_chunk_and_the_next_connection_recovers(mode, match):
    with FakePolicyServer(slow_s=1.5) as fake:
        backend = remote(fake.url)
        first = backend.infer(*inputs(), "go", None)
        np.testing.assert_allclose(first.actions[:, :7], fake.good_actions(1)[:, :7], atol=1e-6)
        fake.mode = mode
        started = time.monotonic()
        with pytest.raises(PolicyFault, match=match):
            backend.infer(*inputs(), "go", None)
        assert time.monotonic() - started < 1.2  # a slow answer is given up at the timeout
        fake.mode = "good"
        time.sleep(0.25)  # the backoff
        answer = backend.infer(*inputs(), "go", None)
        # The answer of the request just sent, never the late one of the failed request.
        np.testing.assert_allclose(answer.actions[:, :7], fake.good_actions(len(fake.requests))[:, :7], atol=1e-6)
        assert fake.connections == 2


def test_dreamzero_profile_resets_sessions_and_reads_action():
    config = {"image_resolution": [180, 320], "n_external_cameras": 1, "needs_wrist_camera": True, "needs_session_id": True,
              "action_space": "joint_position"}
    with FakePolicyServer(metadata=config, horizon=24, base=HOME, action_key="action") as fake:
        backend = remote(fake.url, request_timeout_s=5.0, policy="dreamzero_droid")
        backend.new_episode()
        answer = backend.infer(*inputs(), "pick it up", None)
        assert answer.actions.shape == (24, 8) and answer.period_s == pytest.approx(1 / 15, rel=1e-3)
        reset, infer = fake.requests
        assert reset["endpoint"] == "reset" and infer["endpoint"] == "infer" and infer["session_id"] == reset["session_id"]
        assert infer["observation/exterior_image_0_left"].shape == (180, 320, 3) and infer["prompt"] == "pick it up"
        backend.infer(*inputs(), "pick it up", None)
        backend.new_episode()
        backend.infer(*inputs(), "pick it up", None)
        endpoints = [r["endpoint"] for r in fake.requests]
        assert endpoints == ["reset", "infer", "infer", "reset", "infer"]
        assert fake.requests[3]["session_id"] != reset["session_id"]
    with FakePolicyServer(metadata={**config, "action_space": "cartesian_velocity"}, action_key="action") as fake:
        with pytest.raises(PolicyFault, match="action_space is 'cartesian_velocity'"):
            remote(fake.url, policy="dreamzero_droid").infer(*inputs(), "go", None)


def test_concurrent_clients_are_each_answered(server):
    results: list[tuple] = []

    def ask() -> None:
        client = PolicyClient(server.url)
        client.connect()
        results.extend(client.infer(observation(), 60.0)[0]["actions"].shape for _ in range(3))
        client.close()

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [(16, 8)] * 9
