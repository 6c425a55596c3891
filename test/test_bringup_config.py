"""Robot configs are validated before anything starts; errors name the file and the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wam_ros.bringup import load_bringup, parse_overrides
from wam_ros.robot import ConfigError, load_robot_config

REPO = Path(__file__).resolve().parents[1]
WAM_ROS = [sys.executable, "-m", "wam_ros.cli"]
CHECKPOINT = "checkpoints/cpu-small-pick-place"  # the shipped one: --check looks for its files


def robot_yaml(tmp_path: Path, mutate=None, nodes=None) -> Path:
    data = yaml.safe_load((REPO / "config" / "robots" / "panda_sim.yaml").read_text())
    data["nodes"] = nodes if nodes is not None else {"wam_inference": {"parameters": {"checkpoint": CHECKPOINT, "cpu_threads": 2}}}
    if mutate:
        mutate(data)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def check(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(WAM_ROS + ["bringup", "--check", *arguments], capture_output=True, text=True, timeout=60)


def test_valid_config_lists_its_nodes(tmp_path):
    result = check(f"robot:={robot_yaml(tmp_path)}")
    assert result.returncode == 0, result.stderr
    assert "wam_inference: wam_inference_node" in result.stdout


def test_every_robot_config_in_the_repo_loads():
    for path in sorted((REPO / "config" / "robots").glob("*.yaml")):
        robot = load_robot_config(path)
        assert robot.arm.dof >= 6 and robot.urdf_path.is_file(), path


@pytest.mark.parametrize(
    "mutate, nodes, key, problem",
    [
        (lambda d: d["robot"]["arm"].pop("velocity_max_rad_s"), None, "robot.arm.velocity_max_rad_s", "missing"),
        (lambda d: d["robot"]["arm"].update(position_lower_rad=[0.0] * 3), None, "robot.arm.position_lower_rad", "expected 7 numbers"),
        (lambda d: d["robot"]["safety"].update(workspace_min_m=[1, 1, 1]), None, "robot.safety.workspace_min_m", "is empty"),
        (lambda d: d["robot"]["backend"].update(type="telepathy"), None, "robot.backend.type", "unknown backend"),
        (None, {"teleporter": {}}, "nodes.teleporter.kind", "unknown node kind 'teleporter'"),
        (None, {"wam_inference": {"parameters": {"cpu_threads": "two"}}}, "nodes.wam_inference.parameters.cpu_threads", "expected int, got str"),
        (None, {"wam_inference": {"parameters": {"warp_factor": 9}}}, "nodes.wam_inference.parameters.warp_factor", "unknown parameter"),
        (None, {"wam_inference": {"required": "yes"}}, "nodes.wam_inference.required", "expected bool"),
        (None, {}, "nodes", "missing or empty node set"),
    ],
)
def test_bad_configs_exit_nonzero_naming_file_and_key(tmp_path, mutate, nodes, key, problem):
    path = robot_yaml(tmp_path, mutate, nodes)
    result = check(f"robot:={path}")
    assert result.returncode != 0
    assert str(path) in result.stderr and key in result.stderr and problem in result.stderr, result.stderr


def test_missing_robot_file_and_unknown_robot_name(tmp_path):
    result = check(f"robot:={tmp_path / 'nope.yaml'}")
    assert result.returncode != 0 and "nope.yaml" in result.stderr and "not found" in result.stderr
    result = check("robot:=no_such_robot")
    assert result.returncode != 0 and "no robot named 'no_such_robot'" in result.stderr and "panda_sim" in result.stderr


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("robot: [unclosed\n")
    result = check(f"robot:={path}")
    assert result.returncode != 0 and str(path) in result.stderr and "invalid YAML" in result.stderr


def test_overrides_are_validated_and_applied(tmp_path):
    path = robot_yaml(tmp_path)
    bringup = load_bringup(str(path), parse_overrides(["wam_inference.cpu_threads:=4"])[1])
    assert bringup.nodes[0].parameters["cpu_threads"] == 4
    assert bringup.nodes[0].parameters["robot_config"] == str(path)
    assert bringup.nodes[0].parameters["use_sim_time"] is True
    assert load_bringup(str(path), parse_overrides(["wam_inference.enabled:=false"])[1]).nodes == []
    with pytest.raises(ConfigError, match="expected int"):
        load_bringup(str(path), parse_overrides(["wam_inference.cpu_threads:=many"])[1])
    with pytest.raises(ConfigError, match="unknown node 'ghost'"):
        load_bringup(str(path), parse_overrides(["ghost.rate_hz:=3"])[1])
    result = check(f"robot:={path}", "speed:=11")
    assert result.returncode != 0 and "unknown launch argument 'speed'" in result.stderr


def test_help_lists_subcommands():
    result = subprocess.run(WAM_ROS + ["--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "bringup" in result.stdout
    result = subprocess.run(WAM_ROS + ["frobnicate"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
