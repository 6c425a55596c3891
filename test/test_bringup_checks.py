"""`wam-ros bringup --check` finds what would stop a node at start-up (each node kind's check()), naming the node and the path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from wam_ros.bringup import check_bringup, load_bringup, parse_overrides
from wam_ros.robot import robot_config_path

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "checkpoints/cpu-small-pick-place"
#: fr3_real with what its file leaves to the operator: camera serials and a checkpoint.
FR3_READY = ["front_camera.serial_number:='123456789012'", "wrist_camera.serial_number:='210987654321'",
             f"wam_inference.checkpoint:={CHECKPOINT}", "task_planner.enabled:=false"]


def problems(robot: str, *overrides: str) -> list[str]:
    return [str(p) for p in check_bringup(load_bringup(robot, parse_overrides(list(overrides))[1]))]


def bringup(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wam_ros.cli", "bringup", *arguments], capture_output=True, text=True, timeout=120)


def test_shipped_sim_config_and_a_filled_in_hardware_config_pass():
    assert problems("panda_sim") == []
    assert problems("fr3_real", *FR3_READY) == []
    assert problems("ur5e_real", *FR3_READY) == []


def test_missing_checkpoint_fails_the_check_with_exit_2_naming_node_and_path(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    result = bringup("robot:=panda_sim", f"wam_inference.checkpoint:={missing}", "--check")
    assert result.returncode == 2, result.stderr
    assert f"wam_inference (wam_inference_node, required): checkpoint {missing}: no such directory" in result.stderr
    # Without --check a required node's problem stops the bringup before anything starts.
    result = bringup("robot:=panda_sim", f"wam_inference.checkpoint:={missing}")
    assert result.returncode == 2 and "nothing started" in result.stderr and "started sim" not in result.stdout, result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    assert problems("panda_sim", f"wam_inference.checkpoint:={empty}") == [
        f"wam_inference (wam_inference_node, required): checkpoint {empty}: no config.json or model.safetensors (not a wam_ros checkpoint)"]
    assert "checkpoint is empty" in problems("fr3_real", *FR3_READY, "wam_inference.checkpoint:=''")[0]


def test_realsense_without_serial_among_several_and_a_missing_recording(tmp_path):
    path = robot_config_path("fr3_real")
    found = problems("fr3_real", *FR3_READY[2:])
    assert len(found) == 2 and all(f"has no serial number, and {path} has 2 RealSense cameras" in p for p in found), found
    assert found[0].startswith("front_camera (realsense_camera_node, required): camera 'front'")
    recording = tmp_path / "front.db3"
    found = problems("fr3_real", *FR3_READY, f"front_camera.playback_file:={recording}")
    assert found == [f"front_camera (realsense_camera_node, required): playback_file {recording}: no such file"]
    recording.write_bytes(b"")
    assert problems("fr3_real", *FR3_READY, f"front_camera.playback_file:={recording}") == []


def test_opencv_camera_needs_a_device_and_an_existing_video_file(tmp_path):
    data = yaml.safe_load(robot_config_path("panda_sim").read_text())
    data["robot"]["urdf"] = str(REPO / "urdf" / "panda.urdf")
    data["robot"]["cameras"].append({"name": "side", "source": "opencv", "width": 64, "height": 48, "rate_hz": 10.0,
                                     "frame_id": "side_camera_optical"})
    data["nodes"] = {"side_camera": {"kind": "opencv_camera", "parameters": {"camera": "side"}}}
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump(data))
    assert problems(str(robot)) == [
        f"side_camera (opencv_camera_node): camera 'side': no device (a USB index or a video file) in {robot} or the device parameter"]
    video = tmp_path / "side.mp4"
    assert problems(str(robot), f"side_camera.device:={video}") == [f"side_camera (opencv_camera_node): camera 'side': video file {video}: no such file"]
    assert problems(str(robot), "side_camera.device:='0'") == []  # a USB index: the device is not opened by a check
    assert "this node serves 'opencv'" in problems(str(robot), "side_camera.camera:=front")[0]


def test_planner_language_model_path_teleop_device_and_camera_frames(tmp_path):
    model = tmp_path / "no_model"
    assert problems("panda_sim", "task_planner.enabled:=true", f"task_planner.language_model_path:={model}") == [
        f"task_planner (task_planner_node): language_model_path {model}: not a Hugging Face model directory (config.json + *.safetensors)"]
    (keyboard,) = problems("panda_sim", "teleop.enabled:=true", "teleop.device:=keyboard")
    assert keyboard.startswith("teleop (teleop_node): device keyboard reads its process's terminal") and "-p device:=keyboard" in keyboard
    assert problems("panda_sim", "teleop.enabled:=true") == []  # joy: its driver may start later (the node says so)
    data = yaml.safe_load(robot_config_path("panda_sim").read_text())
    data["robot"]["urdf"] = str(REPO / "urdf" / "panda.urdf")
    data["robot"]["cameras"][1]["parent_frame"] = "gripper_mount"
    robot = tmp_path / "robot.yaml"
    robot.write_text(yaml.safe_dump(data))
    assert problems(str(robot), "wam_inference.checkpoint:=" + str(REPO / CHECKPOINT)) == [
        f"robot_state (robot_state_node): {robot}: camera 'wrist': parent_frame 'gripper_mount' is not a link of panda.urdf"]


def test_websocket_backend_is_checked_by_its_mapping_and_url_not_a_checkpoint(tmp_path):
    websocket = ["wam_inference.policy_backend:=websocket", "wam_inference.checkpoint:=''"]
    assert problems("panda_sim", *websocket) == []  # our own server's mapping fits panda_sim; no checkpoint needed
    found = problems("panda_sim", *websocket, "wam_inference.server_url:=http://gpu-host:8000", f"wam_inference.policy:={tmp_path / 'nope.yaml'}")
    assert len(found) == 2 and "is not a ws:// or wss:// URL" in found[0] and "policy mapping file not found" in found[1], found
