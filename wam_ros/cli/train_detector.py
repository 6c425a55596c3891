"""``wam-ros train-detector``: the planner's scene detector from labelled episodes, with held-out metrics.

Labels come from the episodes' subtask spans and the robot's kinematics (wam_ros.planning.success);
any dataset the data loop writes works: sim demos and converted bags alike. With ``--held-out``
the detector is evaluated on those episodes (frame precision / recall of every fact, completion
recall / precision through the planner's belief filter, position error) and the numbers are kept
in the detector's config.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR", help="training datasets")
    parser.add_argument("--held-out", type=Path, nargs="*", default=[], metavar="DIR", help="datasets to evaluate on (never trained on)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="detector directory to write")
    parser.add_argument("--robot", default="panda_sim", help="robot config whose robot.planner vocabulary names the facts")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--stride", type=int, default=2, metavar="K", help="use every K-th frame of the training episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--max-cpu-minutes", type=float, default=None, help="stop training after this much CPU time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the detector in --out on --held-out; no training")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from wam_ros.data import DatasetError, EpisodeDataset
    from wam_ros.planning import success
    from wam_ros.planning.domain import DomainError, format_fact, load_domain
    from wam_ros.robot import ConfigError, load_robot_config

    torch.set_num_threads(args.threads)
    try:
        robot = load_robot_config(args.robot)
        domain = load_domain(robot.extra.get("planner"), f"{robot.path}: robot.planner")
        train_sets = [EpisodeDataset(d) for d in args.data]
        held_sets = [EpisodeDataset(d) for d in args.held_out]
    except (ConfigError, DomainError, DatasetError) as error:
        print(f"wam-ros train-detector: {error}", file=sys.stderr)
        return 2
    scene = domain.scene()
    info = (train_sets or held_sets)[0].info
    if args.evaluate_only:
        detector = success.SceneDetector.load(args.out)
        config = detector.config
    else:
        config = success.DetectorConfig(
            facts=tuple(format_fact(f) for f in success.domain_facts(domain, scene)),
            objects=success.positioned_objects(domain, scene),
            cameras=tuple(c for c in ("front", "wrist") if c in info.cameras) or tuple(info.cameras),
        )
    labeller = success.Labeller(domain, scene, config, info.robot, info.state_names, info.action_names)
    episodes = [d.episode(i) for d in train_sets for i in range(min(len(d), 40))]
    labeller.release_delay = success.release_delay(labeller, episodes)
    print(f"facts {list(config.facts)}; positions of {list(config.objects)}; release delay {labeller.release_delay} frames")
    record: dict = {}
    if not args.evaluate_only:
        images, facts, positions, valid, _ = success.collect(train_sets, labeller, stride=args.stride)
        bar = tqdm(total=args.steps, desc="scene detector", unit="step")

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        result = success.train(config, images, facts, positions, valid, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               progress=progress, max_cpu_s=60 * args.max_cpu_minutes if args.max_cpu_minutes else None)
        bar.close()
        detector = result.detector
        del images
        record["training"] = {
            "datasets": [str(d) for d in args.data], "episodes": sum(len(d) for d in train_sets), "frame_stride": args.stride,
            "steps": result.steps, "batch_size": args.batch_size, "cpu_s": round(result.cpu_s, 1), "wall_s": round(result.wall_s, 1),
            "final_loss": float(sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)), "seed": args.seed,
            "release_delay_frames": labeller.release_delay,
        }
        print(f"trained {result.steps} steps in {result.cpu_s / 60:.1f} CPU-minutes")
    if held_sets:
        images, facts, positions, valid, ranges = success.collect(held_sets, labeller, stride=1)
        report = success.evaluate(detector, images, facts, positions, valid, ranges, fps=info.fps)
        report["datasets"] = [str(d) for d in args.held_out]
        report["episodes"] = len(ranges)
        record["held_out"] = report
        print(json.dumps({k: v for k, v in report.items() if k != "per_fact"}, indent=1))
        print(json.dumps(report["per_fact"], indent=1))
    if args.evaluate_only:
        return 0
    detector.save(args.out, record)
    print(f"wrote {args.out}")
    return 0
