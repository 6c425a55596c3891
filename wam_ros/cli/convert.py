"""``wam-ros convert BAGS... --out DIR``: recorded episode bags -> the episode dataset for training."""
from __future__ import annotations

import argparse
import json
import re
import sys

from wam_ros.data.bags import BagError, read_labels
from wam_ros.data.convert import RESIZE_MODES, convert_bags, default_image_sizes, find_bags, summarize
from wam_ros.data.episodes import DatasetError
from wam_ros.robot import ConfigError, load_robot_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG", help="bag directories, .mcap files, or directories of bags")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory (created, or extended if it exists)")
    parser.add_argument("--robot", default="", help="robot name or YAML (default: the robot named in the first bag's labels, else panda_sim)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of the dataset (default 10, the control rate)")
    parser.add_argument("--image-size", default="", metavar="HxW", help="size of every camera's frames (default: the robot config's camera sizes)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="crop", help="crop the centre to the target aspect ratio, or stretch")
    parser.add_argument("--preview", action="store_true", help="also write an mp4 preview per episode")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")


def _image_sizes(text: str, cameras: list[str]) -> dict[str, tuple[int, int]] | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or not all(int(v) > 0 for v in match.groups()):
        raise ValueError(f"--image-size must look like 96x96 (height x width), got {text!r}")
    return {name: (int(match.group(1)), int(match.group(2))) for name in cameras}


def run(args: argparse.Namespace) -> int:
    try:
        if args.fps <= 0:
            raise ValueError(f"--fps must be positive, got {args.fps}")
        bags = find_bags(args.bags)
        robot_name = args.robot
        if not robot_name:
            labels = read_labels(bags[0]) if bags[0].is_dir() else None
            robot_name = labels.robot if labels and labels.robot else "panda_sim"
        robot = load_robot_config(robot_name)
        sizes = _image_sizes(args.image_size, list(default_image_sizes(robot)))
        reports = convert_bags(bags, args.out, robot, args.fps, sizes, args.resize, args.preview, progress=sys.stderr.isatty())
    except (BagError, ConfigError, DatasetError, ValueError, KeyError) as error:
        print(f"wam-ros convert: {error}", file=sys.stderr)
        return 2
    for report in reports:
        if report.error:
            print(f"FAILED  {report.bag}: {report.error}", file=sys.stderr)
        elif report.skipped:
            print(f"skipped {report.bag}: {report.skipped}")
        else:
            kind = "actions" if report.has_actions else "video only"
            print(f"episode {report.episode_index:6d}  {report.frames:5d} frames  {report.duration_s:7.1f} s  {kind:10s}"
                  f"  drops {report.drops:4d}  intervention {report.intervention_frames:4d} frames  takeovers {report.takeovers}  {report.bag}")
            for problem in report.problems:
                print(f"        note: {problem}")
    summary = summarize(reports)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['episodes']} episodes ({summary['duration_s']:.1f} s, {summary['frames']} frames, "
              f"{summary['video_only_episodes']} video only) written to {args.out}; {summary['skipped']} skipped, "
              f"{summary['failed']} failed; drops: {summary['estimated_drops']} estimated from stamps, "
              f"{summary['recorder_drops']} counted by the recorder; intervention share {summary['intervention_share']:.1%}, "
              f"{summary['takeovers']} takeovers in {summary['episodes_with_takeovers']} episodes")
    return 1 if summary["failed"] else 0
