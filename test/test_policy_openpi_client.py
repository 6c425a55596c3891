"""The real openpi-client (PyPI, 0.1.2) talks to `wam-ros serve`: metadata, api key, chunks for a sim observation.

openpi-client needs numpy < 2, so it gets a venv of its own, built once with `python3 -m venv`
and cached under build/ (git-ignored). Skipped only when PyPI cannot be reached.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ros_harness import wait_until

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "cpu-small-pick-place"
VENV = REPO / "build" / "openpi_client_venv"
PACKAGES = ["openpi-client==0.1.2", "typing_extensions"]
SERVER_START_TIMEOUT_S = 240.0  # torch + checkpoint + warm-up on a busy 2-core machine

CLIENT_SCRIPT = """
import json, sys
import numpy as np
from openpi_client import websocket_client_policy
host, port, key, data = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, np.load(sys.argv[4])
policy = websocket_client_policy.WebsocketClientPolicy(host=host, port=port, api_key=key)
metadata = policy.get_server_metadata()
observation = {"observation/front_image": data["front"], "observation/wrist_image": data["wrist"],
               "observation/state": data["state"], "prompt": "put the red cube in the bin"}
shapes = []
for _ in range(3):
    result = policy.infer(observation)
    shapes.append(list(result["actions"].shape))
print(json.dumps({"metadata": {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, list, bool))},
                  "shapes": shapes, "dtype": str(result["actions"].dtype), "finite": bool(np.isfinite(result["actions"]).all()),
                  "first": result["actions"][0].tolist(), "infer_ms": result["server_timing"]["infer_ms"]}))
"""


def _python() -> Path:
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def openpi_python() -> Path:
    """The openpi-client venv's interpreter, built on first use (a lock keeps parallel runs from racing)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "openpi_client_venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = VENV / "installed.txt"
        if marker.is_file() and marker.read_text() == " ".join(PACKAGES) and _python().is_file():
            return _python()
        shutil.rmtree(VENV, ignore_errors=True)
        python3 = shutil.which("python3") or sys.executable
        subprocess.run([python3, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        pip = subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", *PACKAGES], capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            probe = subprocess.run([str(_python()), "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(VENV / "probe"), "typing_extensions"],
                                   capture_output=True, text=True, timeout=120)
            if probe.returncode != 0:
                pytest.skip(f"PyPI is unreachable, cannot install {PACKAGES}: {probe.stderr.strip().splitlines()[-1:]}")
            raise AssertionError(f"pip install {PACKAGES} failed although PyPI answers:\n{pip.stderr[-3000:]}")
        marker.write_text(" ".join(PACKAGES))
        return _python()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_observation(path: Path) -> None:
    """One real observation of the sim's pick-place scene: both cameras and the state."""
    from wam_ros.robot import load_robot_config
    from wam_ros.sim.env import TabletopEnv

    with TabletopEnv(load_robot_config("panda_sim")) as env:
        observation = env.reset("pick_place", 3)
        images = observation.images
        np.savez(path, front=images["front"], wrist=images["wrist"], state=observation.state.astype(np.float32))


def healthy(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_openpi_client_gets_chunks_from_wam_ros_serve(openpi_python, processes, tmp_path):
    port = free_port()
    server = processes.python("serve", "-m", "wam_ros.cli", "serve", "--checkpoint", str(CHECKPOINT), "--port", str(port), "--api-key", "k3y")
    data = tmp_path / "observation.npz"
    sim_observation(data)
    wait_until(lambda: healthy(port) or server.poll() is not None, SERVER_START_TIMEOUT_S, "wam-ros serve to answer /healthz")
    assert server.poll() is None, processes.log("serve")
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    started = time.monotonic()
    run = subprocess.run([str(openpi_python), str(script), "127.0.0.1", str(port), "k3y", str(data)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    metadata = result["metadata"]
    assert metadata["horizon"] == 16 and metadata["control_period_s"] == pytest.approx(0.1) and metadata["image_resolution"] == [96, 96]
    assert metadata["state_layout"][-1] == "gripper_width" and metadata["action_space"] == "joint_position"
    assert result["shapes"] == [[16, 8]] * 3 and result["dtype"] == "float32" and result["finite"]
    state = np.load(data)["state"]
    assert np.max(np.abs(np.asarray(result["first"][:7]) - state[:7])) < 0.2  # the chunk starts near the arm
    assert 0 < result["infer_ms"] < (time.monotonic() - started) * 1e3
    # Without the key the real client is turned away.
    run = subprocess.run([str(openpi_python), str(script), "127.0.0.1", str(port), "", str(data)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "401" in run.stderr
    assert "refused 127.0.0.1: missing or wrong api key" in processes.log("serve")
    # Ctrl-C stops the server cleanly, with the count of what it served.
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait(timeout=30) == 0, processes.log("serve")
    assert "stopped after 3 answers" in processes.log("serve")  # the keyless client got none
