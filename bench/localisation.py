#!/usr/bin/env python3
"""Where is the cube? Linear probes of a checkpoint's visual features (issue 4 diagnostics).

Closed-loop pick-place fails when the policy cannot tell where the instructed cube is, so this
measures how much of the cube's position the model's context features carry, at the first
frame of unseen pick-place episodes (sim seeds from 300000, never used for training):

* ``latents``: the autoencoder's normalised latents of every camera -> the (x, y) of all three
  cubes (ridge regression; the latents do not know the instruction), error on the instructed one;
* ``keypoints`` (checkpoints with ``keypoints.count`` > 0): the instruction-conditioned
  spatial-softmax keypoints -> the instructed cube's (x, y);
* ``mean``: always answering the mean training position (the floor any feature must beat).

Probes are fitted on the first half of the seeds, the ridge strength chosen on the next quarter
and the error (mean absolute, cm) reported on the last quarter. The sim's object poses are used
only as evaluation labels here; nothing is trained on them.

Reproduce: ``.venv/bin/python bench/localisation.py [--quick] [--checkpoint DIR ...]``
(quick: 120 seeds instead of 400). The last line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"
SEEDS_FROM = 300000
RIDGE_STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def probe_error_cm(features: np.ndarray, targets: np.ndarray, instructed: np.ndarray | None = None) -> float:
    """Ridge probe features -> targets (N, 2k); mean absolute error [cm] of the instructed (x, y)
    on the last quarter (``instructed`` (N,) picks one of the k positions; None: k = 1)."""
    n = len(features)
    fit, choose = slice(0, n // 2), slice(n // 2, 3 * n // 4)
    test = slice(3 * n // 4, n)
    mean, std = features[fit].mean(0), features[fit].std(0) + 1e-6
    x = np.c_[(features - mean) / std, np.ones(n)]

    def error(weights: np.ndarray, rows: slice) -> float:
        predicted = (x[rows] @ weights).reshape(-1, targets.shape[1] // 2, 2)
        actual = targets[rows].reshape(predicted.shape)
        pick = instructed[rows] if instructed is not None else np.zeros(len(predicted), int)
        index = np.arange(len(predicted))
        return float(np.abs(predicted[index, pick] - actual[index, pick]).mean() * 100.0)

    candidates = [np.linalg.solve(x[fit].T @ x[fit] + s * np.eye(x.shape[1]), x[fit].T @ targets[fit]) for s in RIDGE_STRENGTHS]
    best = min(candidates, key=lambda w: error(w, choose))
    return error(best, test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="120 seeds instead of 400")
    parser.add_argument("--checkpoint", type=Path, nargs="+", default=[SHIPPED], help="checkpoints to probe (default: the shipped one)")
    parser.add_argument("--seeds", type=int, help="episodes to probe (default 400, quick 120)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from tqdm import tqdm

    from wam_ros.model import load_policy
    from wam_ros.model.autoencoder import images_to_tensor
    from wam_ros.model.data import keypoint_input, resize_frames
    from wam_ros.model.text import instruction_encoder
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.tasks import COLOURS, cube_name

    torch.set_num_threads(2)
    n_seeds = args.seeds or (120 if args.quick else 400)
    cubes = [cube_name(colour) for colour in COLOURS]
    env = TabletopEnv(load_robot_config("panda_sim"))
    scenes = []
    for seed in tqdm(range(SEEDS_FROM, SEEDS_FROM + n_seeds), desc="sim resets", unit="episode"):
        observation = env.reset("pick_place", seed)
        state = env.scene_state()
        scenes.append((observation.images, env.task_status().instruction, cubes.index(env.spec.cubes[0]),
                       np.concatenate([state.cube_positions[c][:2] for c in cubes])))
    env.close()
    positions = np.array([s[3] for s in scenes])
    instructed = np.array([s[2] for s in scenes])
    target = positions.reshape(-1, len(cubes), 2)[np.arange(len(scenes)), instructed]
    half = len(scenes) // 2
    results: dict[str, float] = {"seeds": float(len(scenes)), "mean_cm": float(np.abs(target[3 * len(scenes) // 4 :] - target[:half].mean(0)).mean() * 100.0)}
    for checkpoint in args.checkpoint:
        runtime = load_policy(checkpoint)
        config, stats = runtime.config, runtime.stats
        latents, keypoints = [], []
        with torch.inference_mode():
            for images, instruction, _, _ in tqdm(scenes, desc=f"features {checkpoint.name}", unit="episode"):
                frames = [resize_frames(images[c][None], (config.image_height, config.image_width)) for c in config.cameras]
                latent = runtime.autoencoder.encode(images_to_tensor(torch.from_numpy(np.concatenate(frames))))
                latents.append(stats.normalize_latents(latent).flatten().numpy())
                if config.keypoints.count:
                    size = (config.keypoints.image_size,) * 2
                    small = keypoint_input(torch.from_numpy(np.stack([resize_frames(f, size)[0] for f in frames])))[None]
                    text = torch.from_numpy(stats.normalize_text(instruction_encoder().encode_one(instruction))).float()[None]
                    keypoints.append(runtime.network.keypoints(small, text).flatten().numpy())
        name = runtime.model_id
        results[f"{name}.latents_cm"] = probe_error_cm(np.array(latents), positions, instructed)
        if keypoints:
            results[f"{name}.keypoints_cm"] = probe_error_cm(np.array(keypoints), target)
    for key, value in results.items():
        print(f"{key:40s} {value:8.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
