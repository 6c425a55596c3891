"""``wam-ros bringup robot:=<name> [<node>.<param>:=<value> ...]``: the launch file's node set as processes."""
from __future__ import annotations

import argparse
import sys

from wam_ros.bringup import check_bringup, load_bringup, parse_overrides
from wam_ros.robot import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "arguments",
        nargs="*",
        metavar="name:=value",
        help="robot:=<name or path> (default panda_sim), namespace:=<ns> (the whole stack under /<ns>), "
             "<node>.<parameter>:=<value>, <node>.enabled:=false",
    )
    parser.add_argument("--check", action="store_true",
                        help="validate the config and each node's settings and files (checkpoint, devices), print the node set and exit")
    parser.add_argument("--stop-timeout", type=float, default=10.0, metavar="S", help="seconds a node gets to stop on Ctrl-C")


def run(args: argparse.Namespace) -> int:
    try:
        launch_args, overrides = parse_overrides(args.arguments)
        unknown = set(launch_args) - {"robot", "namespace"}
        if unknown:
            raise ValueError(f"unknown launch argument {sorted(unknown)[0]!r}; use robot:=, namespace:= or <node>.<parameter>:=")
        bringup = load_bringup(launch_args.get("robot", "panda_sim"), overrides, launch_args.get("namespace", ""))
    except (ConfigError, ValueError) as error:
        print(f"wam-ros bringup: {error}", file=sys.stderr)
        return 2
    print(f"[bringup] robot {bringup.robot.name} ({bringup.robot.path})" + (f" in namespace {bringup.namespace}" if bringup.namespace else ""))
    for spec in bringup.nodes:
        print(f"[bringup]   {spec.name}: {spec.executable}{' (required)' if spec.required else ''}")
    problems = check_bringup(bringup)
    for problem in problems:
        print(f"wam-ros bringup: {problem}", file=sys.stderr)
    # --check fails on any problem; a bringup does not start when a required node would fail, and
    # starts without complaint from the rest otherwise (an optional node's exit does not stop it either).
    if problems and (args.check or any(p.spec.required for p in problems)):
        print(f"wam-ros bringup: {len(problems)} problem(s) would stop nodes at start-up"
              f"{'' if args.check else '; nothing started'}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    from wam_ros.bringup.supervisor import Supervisor

    return Supervisor(bringup, stop_timeout_s=args.stop_timeout).run()
