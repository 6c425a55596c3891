"""Bring up a robot's node set: ``ros2 launch wam_ros bringup.launch.py robot:=panda_sim``.

The node set, parameters and environment come from ``config/robots/<robot>.yaml`` through
``wam_ros.bringup.load_bringup``, the same function ``wam-ros bringup`` uses on machines
without launch_ros. ``namespace:=<ns>`` puts the whole stack under ``/<ns>``. Per-node
overrides: ``<node>.<parameter>:=<value>``, and
``<node>.enabled:=false`` drops a node. A required node's exit shuts the launch down. The
settings ``wam-ros bringup --check`` checks (checkpoint, devices, files) are checked first: a
problem of a required node stops the launch before anything starts. Where
robot_state_publisher and tf2_ros are installed they publish the robot description and TF in
place of our robot_state node (wam_ros.bringup.standard_robot_state).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from wam_ros.bringup import (STANDARD_ROBOT_STATE_PACKAGES, check_bringup, load_bringup, parse_overrides, ros_packages_installed,
                             standard_robot_state)


def _node_set(context, *args, **kwargs):
    configurations = context.launch_configurations
    overrides = [f"{name}:={value}" for name, value in configurations.items() if "." in name]
    _, node_overrides = parse_overrides(overrides)
    bringup = load_bringup(LaunchConfiguration("robot").perform(context), node_overrides, LaunchConfiguration("namespace").perform(context))
    namespace = bringup.namespace or None
    problems = check_bringup(bringup)
    if any(problem.spec.required for problem in problems):
        raise RuntimeError(f"{bringup.robot.path}: " + "; ".join(map(str, problems)))
    standard_robot_state_installed = ros_packages_installed(STANDARD_ROBOT_STATE_PACKAGES)
    actions = [LogInfo(msg=f"{problem} (optional node: starting the rest)") for problem in problems]
    actions += [SetEnvironmentVariable(name, value) for name, value in bringup.environment.items()]
    for spec in bringup.nodes:
        on_exit = Shutdown(reason=f"required node {spec.name} exited") if spec.required else None
        if spec.kind == "robot_state" and standard_robot_state_installed:
            for node in standard_robot_state(spec, bringup.robot):
                actions.append(Node(package=node.package, executable=node.executable, name=node.name, namespace=namespace,
                                    parameters=[node.parameters], arguments=node.arguments, remappings=bringup.remappings,
                                    output="screen", emulate_tty=True, on_exit=on_exit))
            continue
        actions.append(
            Node(
                package="wam_ros",
                executable=spec.executable,
                name=spec.name,
                namespace=namespace,
                parameters=[spec.parameters],
                remappings=bringup.remappings,
                output="screen",
                emulate_tty=True,
                on_exit=on_exit,
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("robot", default_value="panda_sim", description="robot name under config/robots/ or a path to a robot YAML"),
            DeclareLaunchArgument("namespace", default_value="", description="put the whole stack under /<namespace> (e.g. left, right)"),
            OpaqueFunction(function=_node_set),
        ]
    )
