"""``wam-ros train``: train, finetune (``--init``) or resume (``--resume``) the world action model.

Stages, checkpoints and the CPU budget are described in :mod:`wam_ros.model.train`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True, metavar="DIR",
                        help="episode dataset directories (sim demos, converted bags); repeatable: --data ORIGINAL --data TAKEOVERS")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint directory to write (and to resume from)")
    parser.add_argument("--preset", default="cpu-small", help="model preset under config/model/ or a YAML path (default cpu-small)")
    parser.add_argument("--init", type=Path, metavar="CKPT", help="finetune from this checkpoint (keeps its autoencoder and normalisation)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--steps", type=int, help="transformer steps (overrides the preset)")
    parser.add_argument("--ae-steps", type=int, help="autoencoder steps (overrides the preset)")
    parser.add_argument("--goal-steps", type=int, help="goal-localiser steps (overrides the preset); with --init, train the "
                        "checkpoint's localiser on for this many steps instead of keeping it")
    parser.add_argument("--new-goal-localiser", action="store_true",
                        help="with --init and --goal-steps: replace the checkpoint's localiser by a fresh one shaped by the "
                             "preset's model.goal (e.g. more keypoints and channels), trained from scratch")
    parser.add_argument("--batch-size", type=int, help="transformer batch size (overrides the preset)")
    parser.add_argument("--max-cpu-minutes", type=float, help="stop the transformer stage once the run has used this much process CPU time")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (auto: cuda when available)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the preset)")
    parser.add_argument("--operator-weight", type=float, default=1.0, metavar="W",
                        help="HG-DAgger: policy samples are drawn W times as often from interventions (an operator's TELEOP "
                             "after AUTONOMY) as from demonstration frames (default 1)")
    parser.add_argument("--policy-weight", type=float, default=1.0, metavar="W",
                        help="... and W times as often from frames the policy drove in recorded episodes; 0 learns actions only "
                             "from demonstrations and corrections (HG-DAgger). HOLD/IDLE frames never anchor policy samples (default 1)")


def run(args: argparse.Namespace) -> int:
    from wam_ros.data import DatasetError
    from wam_ros.model.checkpoint import CheckpointError
    from wam_ros.model.train import TrainOptions, Trainer

    if args.resume and args.init is not None:
        print("wam-ros train: --resume and --init exclude each other", file=sys.stderr)
        return 2
    if args.new_goal_localiser and args.init is None:
        print("wam-ros train: --new-goal-localiser replaces the localiser of an --init checkpoint; give --init", file=sys.stderr)
        return 2
    options = TrainOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions) if hasattr(args, f.name)})
    trainer = Trainer(options)
    try:
        trainer.run()
    except (DatasetError, CheckpointError, ValueError) as error:
        print(f"wam-ros train: {error}", file=sys.stderr)
        return 2
    return 130 if trainer.interrupted else 0

