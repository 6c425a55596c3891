#!/usr/bin/env python3
"""Goal localiser on bin_three: grasp and release error where each subtask starts (issue 7 diagnostics).

A bin_three subtask starts with zero, one or two cubes already in the bin, and each cube goes
to its own slot (the first in the middle, then 7 cm either side). The localiser has to name the
instructed cube (grasp) and the next free slot (release) from the static camera's frame and the
subtask's instruction. This prints, per subtask index, the mean horizontal error of both at the
first frame of every subtask of held-out DART demos (seeds from 30000, never trained on) against
their hindsight labels (``goal.py``), for each checkpoint.

Reproduce: ``.venv/bin/python bench/goal_localiser.py [--episodes N] [--data DIR] [--checkpoint DIR ...]``
(default: 20 fresh demos, about 1.5 minutes to generate, and the shipped checkpoint). The last
line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"
SEEDS_FROM = 30000


def subtask_start_errors(checkpoint: Path, data: Path) -> dict[str, float]:
    """``{"subtask{k}.grasp_cm": ..., "subtask{k}.release_cm": ...}`` for k = 1, 2, 3."""
    from wam_ros.model.checkpoint import load_checkpoint
    from wam_ros.model.data import TrainingFrames, open_datasets, subtask_goals, subtask_start_frames
    from wam_ros.model.goal import PICK, PLACE
    from wam_ros.model.text import instruction_encoder

    loaded = load_checkpoint(checkpoint)
    model, stats = loaded.model.eval(), loaded.normalization
    if model.goal is None:
        raise SystemExit(f"{checkpoint} has no goal localiser")
    datasets, _ = open_datasets([data])
    frames = TrainingFrames(datasets, model.config)
    starts = subtask_start_frames(frames)
    index_in_episode = np.array([np.sum((starts < a) & (starts >= frames.episode_start[a])) for a in starts])
    goals = subtask_goals(model.goal, frames, stats, instruction_encoder().encode(frames.instructions), starts)
    labels = frames.goal_labels[starts]
    results = {}
    for k in range(int(index_in_episode.max()) + 1):
        rows = index_in_episode == k
        for name, part in (("grasp", PICK), ("release", PLACE)):
            error = np.linalg.norm(goals[rows][:, part][:, :2] - labels[rows][:, part][:, :2], axis=1)
            results[f"subtask{k + 1}.{name}_cm"] = float(100.0 * error.mean())
        results[f"subtask{k + 1}.count"] = float(rows.sum())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, nargs="+", default=[SHIPPED], help="checkpoints (default: the shipped one)")
    parser.add_argument("--data", type=Path, help="bin_three demos to measure on (default: generate --episodes fresh ones)")
    parser.add_argument("--episodes", type=int, default=20, help="fresh held-out demos to generate (default 20)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="wam_goal_bench_") as scratch:
        data = args.data
        if data is None:
            data = Path(scratch) / "bin_three"
            subprocess.run([sys.executable, "-m", "wam_ros.cli", "sim-demos", "--task", "bin_three", "--episodes", str(args.episodes),
                            "--seed-start", str(SEEDS_FROM), "--action-noise-rad", "0.02", "--out", str(data)], check=True, cwd=REPO)
        results: dict[str, float] = {}
        for checkpoint in args.checkpoint:
            for key, value in subtask_start_errors(checkpoint, data).items():
                results[f"{checkpoint.name}.{key}"] = value
    for key, value in results.items():
        print(f"{key:50s} {value:8.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
