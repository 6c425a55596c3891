"""Bring up a robot's node set: ``ros2 launch wam_ros bringup.launch.py robot:=panda_sim``.

The node set, parameters and environment come from ``config/robots/<robot>.yaml`` through
``wam_ros.bringup.load_bringup``, the same function ``wam-ros bringup`` uses on machines
without launch_ros. Per-node overrides: ``<node>.<parameter>:=<value>``, and
``<node>.enabled:=false`` drops a node. A required node's exit shuts the launch down.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from wam_ros.bringup import load_bringup, parse_overrides


def _node_set(context, *args, **kwargs):
    configurations = context.launch_configurations
    overrides = [f"{name}:={value}" for name, value in configurations.items() if "." in name]
    _, node_overrides = parse_overrides(overrides)
    bringup = load_bringup(LaunchConfiguration("robot").perform(context), node_overrides)
    actions = [SetEnvironmentVariable(name, value) for name, value in bringup.environment.items()]
    for spec in bringup.nodes:
        actions.append(
            Node(
                package="wam_ros",
                executable=spec.executable,
                name=spec.name,
                parameters=[spec.parameters],
                output="screen",
                emulate_tty=True,
                on_exit=Shutdown(reason=f"required node {spec.name} exited") if spec.required else None,
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("robot", default_value="panda_sim", description="robot name under config/robots/ or a path to a robot YAML"),
            OpaqueFunction(function=_node_set),
        ]
    )
