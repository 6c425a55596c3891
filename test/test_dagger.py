"""wam-ros dagger without a graph: a bad condition is refused before anything starts; the round table."""
from __future__ import annotations

from wam_ros.cli import main as wam_ros
from pathlib import Path

from wam_ros.bringup import load_bringup
from wam_ros.clients.dagger import TABLE_HEADER, DaggerOptions, RoundReport, round_nodes, table_row


def test_a_bad_condition_is_refused_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "out"
    assert wam_ros(["dagger", "--data", str(tmp_path), "--out", str(out), "--sim", "cube_region_typo=[0.4, 0.3]"]) == 2
    assert "scene override (--sim, --sim-config): cube_region_typo: unknown key" in capsys.readouterr().err
    assert not (out / "round1").exists()


def test_round_table_row():
    report = RoundReport(2, "runs/round1/checkpoint", 10, 9, 4, 6, 8, 0.25, 0.0042, 0.0087, validation_condition=0.7,
                         validation_nominal=1.0, cpu_minutes={"collect": 20.5, "train": 9.0, "validate": 3.2})
    row = table_row(report)
    assert report.takeovers_per_episode == 0.8
    assert row.split()[:9] == ["2", "checkpoint", "10", "9", "4", "6", "0.80", "25.0%", "0.0042"]
    assert row.endswith("70%         100%  20.5/9.0/3.2") and "val cond" in TABLE_HEADER


def test_the_operator_sees_the_conditions_scene(tmp_path):
    """The sim and the scripted operator get the same scene: an operator that assumed the default
    cube could not grasp the condition's larger cubes (it judged each grasp empty)."""
    condition = ["cube_size_m=0.06"]
    options = DaggerOptions(init=Path("ckpt"), original=[tmp_path], out=tmp_path, scene_overrides=condition,
                            operator_parameters={"no_progress_timeout_s": 3.0})
    bringup = load_bringup("panda_sim", round_nodes(options, Path("ckpt"), tmp_path / "bags"))
    nodes = {node.name: node for node in bringup.nodes}
    assert nodes["sim"].parameters["scene_overrides"] == condition
    assert nodes["scripted_operator"].parameters["scene_overrides"] == condition
    assert nodes["scripted_operator"].parameters["no_progress_timeout_s"] == 3.0
