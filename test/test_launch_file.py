"""launch/bringup.launch.py run against stand-ins for launch and launch_ros (not installable here):
which nodes it starts with and without robot_state_publisher in the ament index, and its checks."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from wam_ros.control.frames import Transform
from wam_ros.robot import load_robot_config

REPO = Path(__file__).resolve().parents[1]
FR3_READY = {"front_camera.serial_number": "'123456789012'", "wrist_camera.serial_number": "'210987654321'",
             "wam_inference.checkpoint": "checkpoints/cpu-small-pick-place", "task_planner.enabled": "false"}


class Action:
    """Records how the launch file constructed it."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _stub(name: str, **members) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(members)
    return module


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's module, importing stand-in ``launch`` and ``launch_ros`` modules."""
    actions = {name: type(name, (Action,), {}) for name in
               ("DeclareLaunchArgument", "LogInfo", "OpaqueFunction", "SetEnvironmentVariable", "Shutdown", "Node")}
    configuration = type("LaunchConfiguration", (Action,), {"perform": lambda self, context: context.launch_configurations[self.args[0]]})
    modules = {
        "launch": _stub("launch", LaunchDescription=lambda entities: entities),
        "launch.actions": _stub("launch.actions", **{k: v for k, v in actions.items() if k != "Node"}),
        "launch.substitutions": _stub("launch.substitutions", LaunchConfiguration=configuration),
        "launch_ros": _stub("launch_ros"),
        "launch_ros.actions": _stub("launch_ros.actions", Node=actions["Node"]),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("bringup_launch", REPO / "launch" / "bringup.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ament_prefix(tmp_path: Path, monkeypatch, packages: tuple[str, ...]) -> None:
    """An ament index holding ``packages`` (what a ROS install's AMENT_PREFIX_PATH shows)."""
    index = tmp_path / "prefix" / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    for name in packages:
        (index / name).write_text("")
        (tmp_path / "prefix" / "share" / name).mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))


def launch(module, **configurations: str) -> list[Action]:
    (opaque,) = [entity for entity in module.generate_launch_description() if type(entity).__name__ == "OpaqueFunction"]
    # launch fills in declared arguments' defaults; the stand-in context does it here
    context = SimpleNamespace(launch_configurations={"robot": "panda_sim", "namespace": "", **configurations})
    return opaque.kwargs["function"](context)


def nodes(actions: list[Action]) -> dict[str, Action]:
    return {a.kwargs["name"]: a for a in actions if type(a).__name__ == "Node"}


def static_transform(node: Action) -> Transform:
    """The transform a static_transform_publisher command line publishes."""
    args = node.kwargs["arguments"]
    value = {flag: args[i + 1] for i, flag in enumerate(args) if flag.startswith("--")}
    return Transform(value["--frame-id"], value["--child-frame-id"], tuple(float(value[f"--{k}"]) for k in "xyz"),
                     tuple(float(value[f"--q{k}"]) for k in "xyzw"))


def test_without_robot_state_publisher_our_node_publishes_the_frames(launch_file, tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, ())
    started = nodes(launch(launch_file))
    assert started["robot_state"].kwargs["package"] == "wam_ros"
    assert started["robot_state"].kwargs["executable"] == "robot_state_node"
    assert {n.kwargs["package"] for n in started.values()} == {"wam_ros"}


def test_with_robot_state_publisher_the_standard_nodes_publish_the_same_frames(launch_file, tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, ("robot_state_publisher", "tf2_ros"))
    robot = load_robot_config("panda_sim")
    started = nodes(launch(launch_file))
    assert "robot_state" not in started
    rsp = started["robot_state_publisher"]
    assert (rsp.kwargs["package"], rsp.kwargs["executable"]) == ("robot_state_publisher", "robot_state_publisher")
    (parameters,) = rsp.kwargs["parameters"]
    assert parameters == {"robot_description": robot.urdf_path.read_text(), "publish_frequency": 50.0, "use_sim_time": True}
    static = {n.kwargs["name"]: static_transform(n) for n in started.values() if n.kwargs["executable"] == "static_transform_publisher"}
    assert sorted(static) == ["robot_state_front_camera_optical", "robot_state_panda_link0", "robot_state_wrist_camera_optical"]
    assert (static["robot_state_panda_link0"].parent, static["robot_state_panda_link0"].translation_m) == ("world", (0.0, 0.0, 0.0))
    for camera in robot.cameras:
        transform = static[f"robot_state_{camera.frame_id}"]
        assert (transform.parent, transform.child) == (camera.parent_frame, camera.frame_id)
        expected = Transform(camera.parent_frame, camera.frame_id, camera.extrinsics_xyz_m, camera.extrinsics_quat_xyzw).matrix()
        np.testing.assert_allclose(transform.matrix(), expected, atol=1e-12)
    assert all(n.kwargs["parameters"] == [{"use_sim_time": True}] for n in started.values() if n.kwargs["package"] == "tf2_ros")


def test_hardware_keeps_the_drivers_robot_state_publisher_and_adds_the_cameras(launch_file, tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, ("robot_state_publisher", "tf2_ros"))
    started = nodes(launch(launch_file, robot="fr3_real", **FR3_READY))
    assert "robot_state_publisher" not in started  # franka_bringup runs one (publish_urdf: false)
    cameras = [static_transform(n) for n in started.values() if n.kwargs["package"] == "tf2_ros"]
    assert sorted((t.parent, t.child) for t in cameras) == [("fr3_hand", "wrist_camera_color_optical_frame"),
                                                            ("fr3_link0", "front_camera_color_optical_frame")]


def test_a_required_nodes_problem_stops_the_launch_an_optional_one_is_logged(launch_file, tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, ())
    with pytest.raises(RuntimeError, match=r"wam_inference \(wam_inference_node, required\): checkpoint .*nothing_here: no such directory"):
        launch(launch_file, **{"wam_inference.checkpoint": str(tmp_path / "nothing_here")})
    actions = launch(launch_file, **{"task_planner.enabled": "true", "task_planner.language_model_path": str(tmp_path / "no_model")})
    (log,) = [a for a in actions if type(a).__name__ == "LogInfo"]
    assert "task_planner (task_planner_node): language_model_path" in log.kwargs["msg"] and "starting the rest" in log.kwargs["msg"]
    assert "task_planner" in nodes(actions)


def test_a_namespace_puts_every_node_under_it_with_the_global_names_remapped(launch_file, tmp_path, monkeypatch):
    ament_prefix(tmp_path, monkeypatch, ("robot_state_publisher", "tf2_ros"))
    started = nodes(launch(launch_file, namespace="left"))
    assert {n.kwargs["namespace"] for n in started.values()} == {"/left"}
    assert all(n.kwargs["remappings"] == [("/clock", "clock"), ("/tf", "tf"), ("/tf_static", "tf_static")] for n in started.values())
    assert {n.kwargs["namespace"] for n in nodes(launch(launch_file)).values()} == {None}
    with pytest.raises(ValueError, match="namespace 'left arm'"):
        launch(launch_file, namespace="left arm")
