"""The WAM inference node in a real ROS graph: chunks from the sim, stale inputs, bad checkpoints, the closed loop."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.srv import GetState
from sensor_msgs.msg import Image, JointState

from ros_harness import wait_until
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
from wam_ros.robot import load_robot_config
from wam_ros.ros import qos
from wam_ros.ros.conversions import numpy_to_image, seconds_to_time
from wam_ros_interfaces.srv import Imagine, SetMode

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "cpu-small-pick-place"
ROBOT = load_robot_config("panda_sim")
INSTRUCTION = "put the red cube in the bin"
MODEL_LOAD_TIMEOUT_S = 240.0  # torch + text encoder + warm-up on a busy 2-core CI machine


def model_config() -> dict:
    return json.loads((CHECKPOINT / "config.json").read_text())["model"]


def start_inference(processes, **overrides):
    parameters = dict(robot_config=str(ROBOT.path), checkpoint=str(CHECKPOINT), instruction=INSTRUCTION, diagnostics_period_s=0.5)
    parameters.update(overrides)
    return processes.start_node("wam_inference", **parameters)


def start_sim(processes):
    return processes.start_node("sim", robot_config=str(ROBOT.path), task="pick_place", seed=3)


def diagnostics_of(messages: list, name: str = "wam_inference") -> list:
    return [s for m in list(messages) for s in m.status if s.name.startswith(name)]


def test_chunks_from_the_sim_have_correct_stamps_shapes_and_ids(processes, ros):
    config = model_config()
    start_sim(processes)
    start_inference(processes, use_sim_time=True)
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    frames = ros.collect(Image, "/wam/cameras/front/image", qos.SENSORS)
    wait_until(lambda: len(chunks) >= 4, MODEL_LOAD_TIMEOUT_S, "four action chunks")
    frame_stamps = {(f.header.stamp.sec, f.header.stamp.nanosec) for f in list(frames)}
    horizon = config["horizon"]
    for chunk in chunks[:4]:
        assert chunk.horizon == horizon and chunk.control_period_s == pytest.approx(config["control_period_s"])
        assert list(chunk.joint_names) == list(ROBOT.arm.joint_names)
        assert len(chunk.joint_positions) == horizon * ROBOT.arm.dof and len(chunk.gripper_widths) == horizon
        assert all(math.isfinite(v) for v in chunk.joint_positions) and all(math.isfinite(v) for v in chunk.gripper_widths)
        assert chunk.model_id and chunk.header.frame_id == ROBOT.base_frame and chunk.inference_latency_s > 0
        # Stamped with the time of the camera frame the chunk was computed from (sim time).
        assert (chunk.header.stamp.sec, chunk.header.stamp.nanosec) in frame_stamps
    ids = [c.chunk_id for c in chunks[:4]]
    assert ids == list(range(ids[0], ids[0] + 4))
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in chunks[:4]]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_missing_then_stale_inputs_give_no_chunk_and_a_diagnostic_naming_the_input(processes, ros):
    start_inference(processes)
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    # Diagnostics start with the node (not configured, inactive), then name the missing input.
    wait_until(lambda: any("front: no message received yet" in s.message for s in diagnostics_of(diagnostics)), MODEL_LOAD_TIMEOUT_S,
               "a diagnostic naming the missing camera", detail=lambda: str([s.message for s in diagnostics_of(diagnostics)][-3:]))
    missing = [s for s in diagnostics_of(diagnostics) if "front: no message" in s.message][-1]
    assert missing.level == missing.WARN

    # Every input arrives, but from two seconds ago: stale.
    image_pubs = {c: ros.node.create_publisher(Image, f"/wam/cameras/{c}/image", qos.SENSORS) for c in ("front", "wrist")}
    state_pub = ros.node.create_publisher(JointState, "/joint_states", qos.SENSORS)
    names = list(ROBOT.arm.joint_names) + list(ROBOT.gripper.joint_names)
    frame = np.zeros((96, 96, 3), np.uint8)

    def publish_old_inputs() -> bool:
        old = seconds_to_time(time.time() - 2.0)
        for camera, publisher in image_pubs.items():
            publisher.publish(numpy_to_image(frame, "rgb8", old, camera))
        state = JointState(name=names, position=list(ROBOT.arm.home_rad) + [0.02, 0.02])
        state.header.stamp = old
        state_pub.publish(state)
        latest = diagnostics_of(diagnostics)[-1]
        return "stale" in latest.message

    wait_until(publish_old_inputs, 30.0, "a 'stale' diagnostic", poll_s=0.1)
    latest = diagnostics_of(diagnostics)[-1]
    assert any(kv.key == "input_age_s.front" and float(kv.value) > 1.0 for kv in latest.values)
    assert not chunks, "no chunk may be computed from missing or stale inputs"


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_bad_checkpoint_fails_configure_and_never_publishes(processes, ros, tmp_path, damage):
    if damage == "missing":
        checkpoint = tmp_path / "no_such_checkpoint"
    else:
        checkpoint = tmp_path / "truncated"
        shutil.copytree(CHECKPOINT, checkpoint, ignore=shutil.ignore_patterns("cache", "resume"))
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    process = start_inference(processes, checkpoint=str(checkpoint))
    assert process.wait(timeout=MODEL_LOAD_TIMEOUT_S) == 1
    log = processes.log("wam_inference")
    assert "configure failed" in log and str(checkpoint) in log, log
    assert not chunks


def test_closed_loop_episode_through_the_bridge(processes, ros, tmp_path):
    """Sim + bridge + inference: in AUTONOMY the model's chunks move the arm, within the limits."""
    start_sim(processes)
    processes.start_node("safety_bridge", robot_config=str(ROBOT.path), use_sim_time=True, estop_latch_file=str(tmp_path / "estop.json"))
    inference = start_inference(processes, use_sim_time=True)
    chunks = ros.collect(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
    statuses = ros.collect(SafetyStatus, "/wam/safety/status", qos.LATCHED)
    states = ros.collect(JointState, "/joint_states", qos.SENSORS)
    wait_until(lambda: chunks and statuses and states, MODEL_LOAD_TIMEOUT_S, "chunks, safety status and joint states")

    start_q = np.asarray(states[-1].position[:7])
    set_mode = ros.node.create_client(SetMode, "/wam/set_mode")
    response = ros.call(set_mode, SetMode.Request(mode=SafetyStatus.MODE_AUTONOMY, reason="closed-loop test"))
    assert response.accepted, response.message
    wait_until(lambda: statuses[-1].mode == SafetyStatus.MODE_AUTONOMY, 10.0, "AUTONOMY")
    moved = wait_until(
        lambda: np.max(np.abs(np.asarray(states[-1].position[:7]) - start_q)) > 0.02 and states[-1],
        60.0,
        "the arm to move under the model's chunks",
    )
    assert statuses[-1].mode == SafetyStatus.MODE_AUTONOMY, statuses[-1].last_stop_reason
    lower = np.asarray(ROBOT.arm.position_lower_rad)
    upper = np.asarray(ROBOT.arm.position_upper_rad)
    assert np.all(np.asarray(moved.position[:7]) > lower) and np.all(np.asarray(moved.position[:7]) < upper)

    imagine = ros.node.create_client(Imagine, "/wam_inference/imagine")
    answers: list = []

    def ask() -> bool:
        answers.append(ros.call(imagine, Imagine.Request(instruction=INSTRUCTION, return_frames=True), timeout_s=60.0))
        return answers[-1].success  # an observation can be momentarily stale on a loaded machine

    wait_until(ask, 60.0, "a successful ~/imagine call", poll_s=0.2)
    imagined = answers[-1]
    assert imagined.mode == "video_prediction" and 0.0 <= imagined.progress <= 1.0
    assert {f.header.frame_id for f in imagined.frames} == {ROBOT.camera("front").frame_id, ROBOT.camera("wrist").frame_id}

    response = ros.call(set_mode, SetMode.Request(mode=SafetyStatus.MODE_HOLD, reason="closed-loop test done"))
    assert response.accepted and response.mode == SafetyStatus.MODE_HOLD

    # The model process dies: the node goes to its error state (unconfigured), says why on
    # /diagnostics and in its log, publishes no more chunks, and stays up for a lifecycle manager.
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    pid = int(re.search(r"in model process (\d+)", processes.log("wam_inference")).group(1))
    os.kill(pid, signal.SIGKILL)
    errors = wait_until(lambda: [s for s in diagnostics_of(diagnostics) if s.level == DiagnosticStatus.ERROR], 30.0, "an ERROR diagnostic")
    values = {kv.key: kv.value for kv in errors[-1].values}
    assert f"model process {pid} exited with code -9" in errors[-1].message, errors[-1].message
    assert values["lifecycle"] == "unconfigured (error)", values
    get_state = ros.node.create_client(GetState, "/wam_inference/get_state")
    assert ros.call(get_state, GetState.Request()).current_state.label == "unconfigured"
    count = len(chunks)
    time.sleep(2.0)  # more than a chunk period: nothing more comes
    assert len(chunks) == count
    assert "going to the error state" in processes.log("wam_inference")
    assert inference.poll() is None, processes.log("wam_inference")
