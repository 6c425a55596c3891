"""The ``wam-ros`` command: one entry point, one subcommand per job.

Subcommands live in their own modules and are imported only when used, so ``wam-ros --help``
is instant. A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module, one-line help). Keep sorted by the order a user meets them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("wam_ros.cli_demo", "the main job: the learned WAM drives the simulated arm through the safety bridge"),
    "bringup": ("wam_ros.cli_bringup", "start a robot's node set (robot:=<name>) without launch_ros"),
    "task": ("wam_ros.cli_task", "send a long-horizon instruction to the task planner and follow its progress"),
    "sim-demos": ("wam_ros.sim.cli", "scripted expert demonstrations in the MuJoCo tabletop -> an episode dataset"),
    "convert": ("wam_ros.cli_convert", "recorded episode bags -> the episode dataset for training"),
    "train": ("wam_ros.model.train", "train (or finetune, or resume) the world action model on episode datasets"),
    "eval": ("wam_ros.model.evaluate", "offline per-mode metrics, closed-loop sim success and a contact sheet for a checkpoint"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wam-ros",
        description="World Action Models driving robot arms through ROS 2.",
        epilog="Run 'wam-ros <command> --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, summary) in SUBCOMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"wam-ros: unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module_name, summary = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"wam-ros {name}", description=summary)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"wam-ros {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
