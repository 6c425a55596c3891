"""``wam-ros sim-demos``: scripted expert demonstrations written as an episode dataset.

Seeds run from ``--seed-start`` upwards; seeds already in the dataset for the task are skipped,
so an interrupted run continues where it stopped. Ctrl-C keeps every finished episode (the
writer renames each file into place and appends the episode's index line last).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wam_ros.sim.tasks import TASKS

    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="task to demonstrate")
    parser.add_argument("--episodes", type=int, required=True, metavar="N", help="episodes to write")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset directory (created or extended)")
    parser.add_argument("--seed-start", type=int, default=0, metavar="S", help="first seed (default 0)")
    parser.add_argument("--robot", default="panda_sim", help="robot config name or path (default panda_sim)")
    parser.add_argument("--video", action="store_true", help="also write an mp4 preview per episode (videos/)")
    parser.add_argument("--keep-failures", action="store_true",
                        help="write failed expert episodes too (success=false); by default they are skipped")
    parser.add_argument("--max-attempts", type=int, default=None, metavar="M",
                        help="give up after this many seeds (default 2 * episodes + 10)")
    parser.add_argument("--action-noise-rad", type=float, default=0.0, metavar="SIGMA",
                        help="DART: execute the expert's joint targets plus smooth noise of this std [rad] and record the "
                             "clean targets, so the demos show the way back to the path (default 0: none)")
    parser.add_argument("--sim-config", type=Path, action="append", default=[], metavar="YAML",
                        help="scene settings: a YAML mapping of SimConfig fields, e.g. config/sim/randomized.yaml (randomised scenes); repeatable")
    parser.add_argument("--sim", action="append", default=[], metavar="KEY=VALUE",
                        help="scene setting, a SimConfig field and a YAML value (repeatable; wins over --sim-config), e.g. "
                             "--sim 'camera_position_jitter_m={front: [0.03, 0.03, 0.03]}' --sim distractor_count=1")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="parallel processes recording episodes (default 1; up to the number of CPU cores helps)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wam_ros.data.episodes import DatasetError, DatasetWriter, EpisodeDataset
    from wam_ros.robot import ConfigError, load_robot_config
    from wam_ros.sim.config import SimConfig, scene_overrides
    from wam_ros.sim.demos import dataset_info, demo_results

    if args.episodes <= 0 or args.workers <= 0:
        print("wam-ros sim-demos: --episodes and --workers must be positive", file=sys.stderr)
        return 2
    if not 0.0 <= args.action_noise_rad <= 0.2:
        print("wam-ros sim-demos: --action-noise-rad must lie in [0, 0.2] rad", file=sys.stderr)
        return 2
    try:
        robot = load_robot_config(args.robot)
        overrides = scene_overrides(args.sim_config, args.sim)
        config = SimConfig.from_robot(robot, overrides)
        writer = DatasetWriter(args.out, dataset_info(robot, config))
    except (ConfigError, DatasetError, ValueError) as error:
        print(f"wam-ros sim-demos: {error}", file=sys.stderr)
        return 2
    done_seeds = {r.get("seed") for r in EpisodeDataset(args.out).records if r.get("task") == args.task}
    max_attempts = args.max_attempts or 2 * args.episodes + 10
    seeds = (s for s in itertools.count(args.seed_start) if s not in done_seeds)
    written = attempted = failed = 0
    seed = args.seed_start
    started = time.monotonic()
    progress = tqdm(total=args.episodes, desc=f"sim-demos {args.task}", unit="episode")
    results = demo_results(robot, args.task, itertools.islice(seeds, max_attempts), args.workers, args.action_noise_rad, overrides)
    try:
        for result in results:
            attempted += 1
            seed = int(result.episode.seed or 0)
            if result.success or args.keep_failures:
                writer.add(result.episode, video_fps=writer.info.fps if args.video else None)
                written += 1
                progress.update(1)
            if not result.success:
                failed += 1
            progress.set_postfix(seed=seed, failed=failed)
            if written >= args.episodes:
                break
    except KeyboardInterrupt:
        progress.close()
        print(f"wam-ros sim-demos: interrupted; {written} episodes written to {args.out} (episodes in progress were dropped)",
              file=sys.stderr)
        return 130
    finally:
        results.close()
        progress.close()
    elapsed = time.monotonic() - started
    print(f"wam-ros sim-demos: {written} episodes of {args.task} in {args.out} ({attempted} seeds, {failed} expert failures, "
          f"{elapsed:.1f} s, next seed {seed + 1})")
    if written < args.episodes:
        print(f"wam-ros sim-demos: gave up after {attempted} seeds with {written}/{args.episodes} episodes", file=sys.stderr)
        return 1
    return 0
