"""The ``wam-ros`` command: one entry point, one module per subcommand in this package.

A subcommand module provides ``add_arguments(parser)`` (argparse only) and ``run(args) -> int``,
which calls library code; it is imported only when used, so ``wam-ros --help`` is instant.
Exit codes: 0 success, 1 the job ran and failed, 2 bad input or configuration, 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from wam_ros import __version__

#: name -> (module under wam_ros.cli, one-line help), in the order a user meets them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job: the learned WAM drives the simulated arm through the safety bridge"),
    "bringup": ("bringup", "start a robot's node set (robot:=<name>) without launch_ros"),
    "task": ("task", "send a long-horizon instruction to the task planner and follow its progress"),
    "serve": ("serve", "serve a checkpoint as an openpi-protocol websocket policy server (for remote inference)"),
    "cameras": ("cameras", "list, check and record the real cameras without ROS"),
    "sim-demos": ("sim_demos", "scripted expert demonstrations in the MuJoCo tabletop -> an episode dataset"),
    "convert": ("convert", "recorded episode bags -> the episode dataset for training"),
    "train": ("train", "train (or finetune, or resume) the world action model on episode datasets"),
    "eval": ("eval", "offline per-mode metrics, closed-loop sim success and a contact sheet for a checkpoint"),
    "dagger": ("dagger", "rounds of autonomous episodes with the scripted operator taking over, finetuned on its takeovers"),
    "view": ("view", "write a rerun recording of an episode bag or dataset episode (cameras, predictions, action chunks, modes)"),
    "train-planner-lm": ("train_planner_lm", "finetune the task planner's language model (a LoRA adapter) on synthetic instruction -> plan pairs"),
    "train-detector": ("train_detector", "train the task planner's scene detector (subtask success from the cameras) on episode datasets"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or not action.option_strings or default in (None, False, "", [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wam-ros",
        description="World Action Models driving robot arms through ROS 2.",
        epilog="Run 'wam-ros <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"wam-ros {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, summary) in SUBCOMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def subcommand_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The argument parser of one subcommand, and its module."""
    module_name, summary = SUBCOMMANDS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    parser = argparse.ArgumentParser(prog=f"wam-ros {name}", description=summary, formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    if argv[0] not in SUBCOMMANDS:
        if argv[0].startswith("-"):
            parser.parse_args(argv[:1])  # --help and --version exit here
        parser.print_usage(sys.stderr)
        print(f"wam-ros: unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    name = argv[0]
    sub, module = subcommand_parser(name)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"wam-ros {name}: interrupted", file=sys.stderr)
        return 130
