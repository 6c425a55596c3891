#!/usr/bin/env python3
"""Action-free video cotraining (UWM's claim), measured: few labelled demos of a skill, with and without many videos of it.

1. Demos of the skill (``--task``, default stack, which the shipped pick-place checkpoint does not
   do: docs/experiments/2026-12-07-scene-shifts.md) from the sim, DART as the shipped
   checkpoint's (0.02 rad, seeds from 16000), or ``--data DIR``.
2. Two datasets from them: the first ``--labelled`` episodes as they are, and the next
   ``--videos`` episodes with their actions dropped (``has_actions: false``: what ``wam-ros
   convert`` writes for bags without commands).
3. Two finetunes of the shipped checkpoint with the same steps, batch and seed: *labelled* on
   the labelled episodes alone, *cotrained* on them plus the videos. Policy samples come from
   labelled frames in both; the videos enter only as world samples (video prediction, actions
   removed; docs/model.md#objective-diffusionpy), so the compute per step is the same.
4. Both on the same held-out seeds (``--seed-start``, default 400000 as bench/generalization.py): success, mean
   subtasks done and the median placement error.

Every stage is kept in ``--out`` and reused by a later run with the same settings (an
interrupted finetune resumes). ``--quick`` (2 labelled, 2 videos, 20 steps, 2 seeds; about 5
minutes on 2 cores, in ``outputs/bench_cotraining_quick``) checks that it runs; its numbers mean
nothing. The last line is one JSON object.

Reproduce: ``.venv/bin/python bench/cotraining.py [--quick] [--task stack] [--labelled 20] [--videos 150] [--seed-start S] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from generalization import HELD_OUT_FROM  # this script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"
DEMO_SEEDS_FROM = 16000


def wam_ros(*arguments: str) -> None:
    print("$ wam-ros", " ".join(arguments), flush=True)
    subprocess.run([sys.executable, "-m", "wam_ros.cli", *arguments], check=True, cwd=REPO)


def demos(task: str, episodes: int, out: Path) -> Path:
    """``episodes`` DART demos of ``task`` in ``out`` (only the missing ones are recorded)."""
    from wam_ros.data import EpisodeDataset

    have = len(EpisodeDataset(out)) if (out / "meta" / "info.json").is_file() else 0
    if have < episodes:
        wam_ros("sim-demos", "--task", task, "--episodes", str(episodes - have), "--seed-start", str(DEMO_SEEDS_FROM),
                "--action-noise-rad", "0.02", "--out", str(out))
    return out


def split(source: Path, labelled: int, videos: int, out: Path) -> tuple[Path, Path]:
    """The first ``labelled`` episodes of ``source`` as they are, the next ``videos`` without actions."""
    from wam_ros.data import DatasetWriter, EpisodeDataset

    dataset = EpisodeDataset(source)
    if len(dataset) < labelled + videos:
        raise SystemExit(f"{source} has {len(dataset)} episodes; {labelled} + {videos} needed")
    paths = out / "labelled", out / "videos"
    for path, indices, keep_actions in ((paths[0], range(labelled), True), (paths[1], range(labelled, labelled + videos), False)):
        writer = DatasetWriter(path, dataset.info)
        if writer.num_episodes > len(indices):
            raise SystemExit(f"{path} holds {writer.num_episodes} episodes, {len(indices)} wanted: remove it or choose another --out")
        for index in indices[writer.num_episodes :]:  # an interrupted split goes on
            episode = dataset.episode(index)
            if not keep_actions:
                episode.actions = None
            writer.add(episode)
    return paths


def finetune(run: Path, datasets: list[Path], episodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """Finetune the ``--init`` checkpoint into ``run`` (a finished run with these settings is kept); its training record."""
    config = run / "config.json"
    training = json.loads(config.read_text())["training"] if config.is_file() else {}
    same = training.get("train_config", {}).get("steps") == args.steps and training.get("dataset", {}).get("episodes") == episodes
    if not (same and training.get("finished")):
        resume = same and (run / "resume" / "state.json").is_file()
        wam_ros("train", *(["--resume"] if resume else ["--init", str(args.init)]), "--data", *map(str, datasets), "--out", str(run),
                "--goal-steps", str(args.goal_steps), "--steps", str(args.steps), "--threads", "1", "--seed", "0")
        training = json.loads(config.read_text())["training"]
    return training


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 labelled, 2 videos, 20 steps, 2 held-out seeds")
    parser.add_argument("--task", default="stack")
    parser.add_argument("--data", type=Path, help="demos of the task (default: record them, DART, seeds from 16000)")
    parser.add_argument("--labelled", type=int, default=20, help="labelled episodes")
    parser.add_argument("--videos", type=int, default=150, help="episodes used as action-free videos")
    parser.add_argument("--goal-steps", type=int, default=600, help="goal localiser steps of each finetune")
    parser.add_argument("--steps", type=int, default=1500, help="transformer steps of each finetune")
    parser.add_argument("--seeds", type=int, default=50, help="held-out seeds")
    parser.add_argument("--seed-start", type=int, default=HELD_OUT_FROM, help="first held-out seed (default: bench/generalization.py's)")
    parser.add_argument("--init", type=Path, default=SHIPPED, help="the checkpoint both arms finetune")
    parser.add_argument("--out", type=Path, help="default outputs/bench_cotraining (quick: outputs/bench_cotraining_quick)")
    args = parser.parse_args()
    if args.quick:
        args.labelled, args.videos, args.goal_steps, args.steps, args.seeds = 2, 2, 10, 20, 2
    out: Path = args.out or REPO / "outputs" / ("bench_cotraining_quick" if args.quick else "bench_cotraining")
    out.mkdir(parents=True, exist_ok=True)
    data = args.data or demos(args.task, args.labelled + args.videos, out / "demos")
    labelled, videos = split(data, args.labelled, args.videos, out)

    import numpy as np
    import torch

    from wam_ros.model.evaluate import evaluate_closed_loop
    from wam_ros.model.runtime import load_policy

    torch.set_num_threads(1)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    results: dict[str, dict[str, Any]] = {}
    for arm, datasets in (("labelled", [labelled]), ("cotrained", [labelled, videos])):
        episodes = args.labelled + (args.videos if arm == "cotrained" else 0)
        training = finetune(out / arm, datasets, episodes, args)
        started = time.process_time()
        report = evaluate_closed_loop(load_policy(out / arm), args.task, seeds, quiet=True)
        results[arm] = {
            "success": report.success_rate, "successes": int(sum(report.successes)),
            "mean_subtasks_done": float(np.mean(report.subtasks_done)),
            "placement_error_m_median": float(np.median(report.placement_errors_m)) if report.placement_errors_m else None,
            "train_cpu_minutes": training["cpu_seconds_total"] / 60, "transformer_steps": training["transformer_step"],
            "frames": training["dataset"]["frames"], "labelled_frames": training["dataset"]["labelled_frames"],
            "eval_cpu_minutes": (time.process_time() - started) / 60,
        }
        print(f"[cotraining] {arm}: {results[arm]['successes']}/{len(seeds)} on {args.task}, seeds {seeds[0]}-{seeds[-1]}", flush=True)

    print(f"\n| arm | data | frames (labelled) | steps | train CPU-min | {args.task} success | placement error, median |\n|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        what = f"{args.labelled} labelled" + (f" + {args.videos} videos" if arm == "cotrained" else "")
        error = f"{1000 * r['placement_error_m_median']:.0f} mm" if r["placement_error_m_median"] is not None else "-"
        print(f"| {arm} | {what} | {r['frames']} ({r['labelled_frames']}) | {r['transformer_steps']} | {r['train_cpu_minutes']:.1f} | "
              f"{r['successes']} / {len(seeds)} | {error} |")
    gain = results["cotrained"]["success"] - results["labelled"]["success"]
    print(json.dumps({"task": args.task, "labelled_episodes": args.labelled, "video_episodes": args.videos, "seed_start": seeds[0],
                      "seeds": len(seeds), **{f"success_{arm}": r["success"] for arm, r in results.items()},
                      **{f"train_cpu_minutes_{arm}": r["train_cpu_minutes"] for arm, r in results.items()},
                      "gain_points": 100 * gain}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
