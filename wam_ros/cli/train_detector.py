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
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 48], help="CNN channels per stage")
    parser.add_argument("--hidden", type=int, default=96, help="fact head width")
    parser.add_argument("--layout-channels", type=int, default=8, help="channels of the static camera's unpooled feature map (0: pooled only)")
    parser.add_argument("--reading-period-s", type=float, default=0.5, help="how often the planner reads the detector (its detector_period_s), for the event metrics")
    parser.add_argument("--position-attempts", type=int, default=3, help="retrain an object's keypoint map at most this often")
    parser.add_argument("--position-accept-m", type=float, default=0.03, help="first-frame position error above which a keypoint is retrained [m]")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the detector in --out on --held-out; no training")


def run(args: argparse.Namespace) -> int:
    import numpy as np
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
            channels=tuple(args.channels), hidden=args.hidden, layout_channels=args.layout_channels,
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
        # A keypoint that settled on the wrong thing stays there: check each object's position on
        # the training episodes' first frames and train its keypoint map again where it is off.
        early = success.collect.frame_index < 12
        rows = np.flatnonzero(early)
        checks = []
        for attempt in range(args.position_attempts):
            errors = success.position_errors(detector, images, positions, valid, rows)
            checks.append({name: round(float(100 * e), 2) for name, e in zip(config.objects, errors)})
            bad = [o for o, e in enumerate(errors) if e > args.position_accept_m]
            print(f"position check {attempt}: mean error on first frames (cm) {checks[-1]}" + (f"; again: {[config.objects[o] for o in bad]}" if bad else ""))
            if not bad:
                break
            success.retrain_positions(detector, images, positions, valid, early, bad, seed=args.seed + attempt + 1)
        else:
            errors = success.position_errors(detector, images, positions, valid, rows)
            checks.append({name: round(float(100 * e), 2) for name, e in zip(config.objects, errors)})
            print(f"position check: mean error on first frames (cm) {checks[-1]}")
        del images
        record["training"] = {
            "datasets": [str(d) for d in args.data], "episodes": sum(len(d) for d in train_sets), "frame_stride": args.stride,
            "steps": result.steps, "batch_size": args.batch_size, "cpu_s": round(result.cpu_s, 1), "wall_s": round(result.wall_s, 1),
            "final_loss": float(sum(result.losses[-50:]) / max(len(result.losses[-50:]), 1)), "seed": args.seed,
            "release_delay_frames": labeller.release_delay,
            "position_checks_cm": checks,
        }
        print(f"trained {result.steps} steps in {result.cpu_s / 60:.1f} CPU-minutes")
    if held_sets:
        images, facts, positions, valid, ranges = success.collect(held_sets, labeller, stride=1)
        every = max(1, int(round(args.reading_period_s * info.fps)))
        report = success.evaluate(detector, images, facts, positions, valid, ranges, fps=info.fps, every=every)
        report["belief"] = {"done_threshold": 0.8, "lost_threshold": 0.2, "confirmations": 3, "reading_period_s": args.reading_period_s}
        report["datasets"] = [str(d) for d in args.held_out]
        report["episodes"] = len(ranges)
        record["held_out"] = report
        print(json.dumps({k: v for k, v in report.items() if k != "per_fact"}, indent=1))
        print(json.dumps(report["per_fact"], indent=1))
    if args.evaluate_only:
        if held_sets:  # keep the evaluation with the detector
            metadata = {k: v for k, v in detector.metadata.items() if k not in ("format", "version", "detector")}
            metadata.setdefault("evaluations", []).append(record["held_out"])
            detector.save(args.out, metadata)
        return 0
    detector.save(args.out, record)
    print(f"wrote {args.out}")
    return 0
