"""``wam-ros dagger``: rounds of autonomous episodes with the scripted operator, conversion, finetuning, validation.

The loop and its table: :mod:`wam_ros.clients.dagger`; the measurement: ``bench/dagger.py`` and
docs/intervention.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wam_ros.clients.dagger import DEFAULT_COLLECT_SEED_START, DEFAULT_CONDITION, DEFAULT_VALIDATION_SEED_START, DaggerOptions, run_dagger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", type=Path, default=Path("checkpoints/cpu-small-pick-place"), metavar="CKPT",
                        help="checkpoint to start from; every round finetunes it anew on all takeovers so far")
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True, metavar="DIR",
                        help="the original training data, mixed into every finetune so nominal success holds")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="bags, the takeover dataset, checkpoints, rounds.jsonl")
    parser.add_argument("--sim", action="append", metavar="KEY=VALUE",
                        help="the condition's scene (SimConfig field = YAML value, repeatable); default: cubes a third larger "
                             f"than the demos', {' '.join(DEFAULT_CONDITION)}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=10, help="episodes through the graph per round")
    parser.add_argument("--max-takeover-episodes", type=int, default=20, help="stop once this many episodes had a takeover")
    parser.add_argument("--seed-start", type=int, default=DEFAULT_COLLECT_SEED_START, help="first collection seed (rounds continue from it)")
    parser.add_argument("--validation-seed-start", type=int, default=DEFAULT_VALIDATION_SEED_START)
    parser.add_argument("--validation-episodes", type=int, default=10, help="per round, on the condition and nominally; 0: none")
    parser.add_argument("--episode-timeout", type=float, default=30.0, metavar="S", help="sim seconds per episode")
    parser.add_argument("--steps", type=int, default=600, help="transformer steps per finetune")
    parser.add_argument("--goal-steps", type=int, default=0,
                        help="goal-localiser steps per finetune (default 0: keep the checkpoint's; trained on ~20 takeover "
                             "episodes it lost nominal accuracy, docs/experiments/2026-12-07-intervention-loop.md)")
    parser.add_argument("--operator-weight", type=float, default=4.0, help="weight of intervention frames in policy samples")
    parser.add_argument("--policy-weight", type=float, default=0.0, help="weight of the policy's own frames (HG-DAgger: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training and validation")
    parser.add_argument("--operator", action="append", default=[], metavar="PARAM=VALUE",
                        help="a scripted_operator node parameter, e.g. no_progress_timeout_s=3.0 (repeatable)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from wam_ros.data import DatasetError
    from wam_ros.robot import ConfigError

    try:
        operator = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.operator)}
        options = DaggerOptions(
            init=args.init, original=args.data, out=args.out, scene_overrides=args.sim or DEFAULT_CONDITION, rounds=args.rounds,
            episodes_per_round=args.episodes, max_takeover_episodes=args.max_takeover_episodes, collect_seed_start=args.seed_start,
            validation_seed_start=args.validation_seed_start, validation_episodes=args.validation_episodes,
            episode_timeout_s=args.episode_timeout, steps=args.steps, goal_steps=args.goal_steps, operator_weight=args.operator_weight,
            policy_weight=args.policy_weight, threads=args.threads, operator_parameters=operator)
        args.out.mkdir(parents=True, exist_ok=True)
        reports = run_dagger(options, lambda line: print(line, flush=True))
    except (ConfigError, DatasetError, ValueError) as error:
        print(f"wam-ros dagger: {error}", file=sys.stderr)
        return 2
    return 0 if reports and not reports[-1].failure else 1
