"""``wam-ros view``: an episode bag or a dataset episode as a rerun recording (.rrd).

What the recording holds: :mod:`wam_ros.data.view`. Open it with ``rerun FILE.rrd`` (the viewer
comes with rerun-sdk, requirements-view.txt).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="an episode bag (directory or .mcap) or an episode dataset directory")
    parser.add_argument("--episode", type=int, default=0, help="episode index when PATH is a dataset (default 0)")
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT", help="also log the model's chunks and predicted frames")
    parser.add_argument("--out", type=Path, help="recording to write (default: <bag or dataset>/view_<episode>.rrd)")
    parser.add_argument("--robot", default="panda_sim", help="robot config of the episode (default panda_sim)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model (default 1)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wam_ros.data import BagError, ConvertError, DatasetError
    from wam_ros.data.view import import_rerun, read_bag, read_dataset_episode, write_recording
    from wam_ros.robot import ConfigError, load_robot_config

    try:
        import_rerun()
    except ImportError as error:
        print(f"wam-ros view: {error}", file=sys.stderr)
        return 2
    try:
        robot = load_robot_config(args.robot)
        is_dataset = (args.path / "meta" / "info.json").is_file()
        if is_dataset:
            episode, events = read_dataset_episode(args.path, args.episode), None
            out = args.out or args.path / f"view_{args.episode:06d}.rrd"
        else:
            episode, events = read_bag(args.path, robot)
            out = args.out or (args.path if args.path.is_dir() else args.path.parent) / "view.rrd"
        runtime = None
        if args.checkpoint is not None:
            import torch

            from wam_ros.model import load_policy

            torch.set_num_threads(args.threads)
            runtime = load_policy(args.checkpoint)
    except (BagError, ConvertError, ConfigError, DatasetError, ValueError, OSError) as error:
        print(f"wam-ros view: {error}", file=sys.stderr)
        return 2
    bar = tqdm(desc="model predictions", unit="chunk", disable=runtime is None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    write_recording(episode, robot, out, events, runtime, progress)
    bar.close()
    takeovers = episode.extra.get("takeover_count", 0)
    print(f"wrote {out}: {episode.length} frames, {takeovers} takeovers{', model predictions' if runtime else ''}; open it with: rerun {out}")
    return 0
