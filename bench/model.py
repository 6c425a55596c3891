#!/usr/bin/env python3
"""The world action model against its targets (issue 4).

Full run (about an hour of a 2-core machine; numbers in README):
  1. expert demos: ``--demos`` pick-place DART episodes from the sim (seeds 0..N-1, joint noise
     ``--action-noise-rad``, as the shipped checkpoint's), or ``--data DIR``;
  2. ``wam-ros train --preset cpu-small --max-cpu-minutes 30`` on them (or ``--checkpoint DIR``);
  3. closed-loop success in the in-process sim over ``--seeds`` unseen seeds (from 100000);
  4. offline: forward-dynamics and video-prediction pixel error against copy-the-last-frame on
     held-out demos (seeds from 200000), action error by sampler steps;
  5. policy latency per chunk at batch 1 on 2 CPU threads (median and p90), and on 1.

``--quick`` (under two minutes): the shipped checkpoint, latency, offline metrics on 2 fresh
held-out demos and 2 closed-loop seeds. Reproduce: ``.venv/bin/python bench/model.py [--quick]``.
The last line is one JSON object of named numbers. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"
TRAIN_SEEDS_FROM, CLOSED_LOOP_SEEDS_FROM, HELD_OUT_SEEDS_FROM = 0, 100000, 200000


def wam_ros(*arguments: str) -> None:
    command = [str(REPO / ".venv" / "bin" / "wam-ros"), *arguments]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def latency(runtime, repeats: int, steps: int | None = None, quantile: float = 90.0) -> tuple[float, float]:
    """Median and ``quantile`` percentile wall time [ms] of one policy call (batch 1).

    Inputs of the model's shapes (random frames, the mean state); ``steps`` None = the
    checkpoint's default sampler steps. One untimed call first. bench/inference.py uses it too.
    """
    config = runtime.config
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 255, (config.n_obs_frames, config.image_height, config.image_width, 3), dtype=np.uint8) for c in config.cameras}
    state = np.tile(runtime.stats.state_mean, (config.n_obs_frames, 1))
    runtime.policy(images, state, "put the red cube in the bin", steps=steps)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.policy(images, state, "put the red cube in the bin", steps=steps)
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times)), float(np.percentile(times, quantile))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--demos", type=int, default=200, help="expert demos to train on (default 200)")
    parser.add_argument("--seeds", type=int, default=50, help="closed-loop seeds (default 50)")
    parser.add_argument("--action-noise-rad", type=float, default=0.02, help="DART noise of the generated training demos (default 0.02; 0: clean)")
    parser.add_argument("--data", type=Path, help="use these demos instead of generating them")
    parser.add_argument("--checkpoint", type=Path, help="evaluate this checkpoint instead of training one")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    parser.add_argument("--cpu-minutes", type=float, default=30.0, help="training budget in process CPU minutes (default 30)")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from wam_ros.data import EpisodeDataset
    from wam_ros.model import load_policy
    from wam_ros.model.evaluate import evaluate_closed_loop, evaluate_offline, offline_samples

    work = args.work or Path(tempfile.mkdtemp(prefix="wam_bench_model_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, float] = {}
    checkpoint = args.checkpoint or (SHIPPED if args.quick else None)
    if checkpoint is None:
        data = args.data or work / "demos"
        if args.data is None:
            wam_ros("sim-demos", "--task", "pick_place", "--episodes", str(args.demos), "--seed-start", str(TRAIN_SEEDS_FROM),
                    "--action-noise-rad", str(args.action_noise_rad), "--out", str(data))
        checkpoint = work / "checkpoint"
        wam_ros("train", "--data", str(data), "--out", str(checkpoint), "--preset", "cpu-small", "--max-cpu-minutes", str(args.cpu_minutes))
        training = json.loads((checkpoint / "config.json").read_text())["training"]
        results["train_cpu_minutes"] = training["cpu_seconds_total"] / 60.0
        results["train_demos"] = float(training["dataset"]["episodes"])
        results["train_steps"] = float(training["transformer_step"])
        print(f"[bench] trained {results['train_steps']:.0f} steps on {results['train_demos']:.0f} demos in {results['train_cpu_minutes']:.1f} CPU-minutes")

    torch.set_num_threads(2)
    runtime = load_policy(checkpoint)
    runtime.warmup()
    for steps in (1, 2, 4, 8):
        p50, p90 = latency(runtime, 30 if args.quick else 100, steps)
        print(f"[bench] policy latency, {steps} sampler steps, batch 1, 2 threads: median {p50:.1f} ms, p90 {p90:.1f} ms")
        if steps == runtime.config.diffusion.policy_steps:
            results["policy_latency_ms_p50"], results["policy_latency_ms_p90"] = p50, p90
    torch.set_num_threads(1)  # this small model runs faster on one thread (idle OpenMP threads sleep: OMP_WAIT_POLICY)
    p50, p90 = latency(runtime, 30 if args.quick else 100)
    print(f"[bench] policy latency, {runtime.config.diffusion.policy_steps} sampler steps, batch 1, 1 thread: median {p50:.1f} ms, p90 {p90:.1f} ms")
    results["policy_latency_1thread_ms_p50"], results["policy_latency_1thread_ms_p90"] = p50, p90
    torch.set_num_threads(2)

    held_out = work / "held_out"
    n_held_out = 2 if args.quick else 10
    if not (held_out / "meta" / "info.json").is_file():
        wam_ros("sim-demos", "--task", "pick_place", "--episodes", str(n_held_out), "--seed-start", str(HELD_OUT_SEEDS_FROM), "--out", str(held_out))
    samples = offline_samples(runtime, EpisodeDataset(held_out), 8 if args.quick else 64)
    offline = evaluate_offline(runtime, samples, [1, 2, 4, 8])
    for steps, rmse in offline.policy_action_rmse_by_steps.items():
        print(f"[bench] policy action RMSE with {steps} steps: {rmse:.4f} (rad/m)")
    print(
        f"[bench] pixel MSE of the frame {runtime.config.future_offset} steps ahead: forward dynamics {offline.forward_pixel_mse:.5f}, "
        f"video prediction {offline.video_pixel_mse:.5f}, copy-last-frame {offline.copy_last_frame_pixel_mse:.5f}, "
        f"autoencoder floor {offline.autoencoder_pixel_mse:.5f}"
    )
    results.update(
        forward_pixel_mse=offline.forward_pixel_mse,
        video_pixel_mse=offline.video_pixel_mse,
        copy_last_frame_pixel_mse=offline.copy_last_frame_pixel_mse,
        forward_latent_mse=offline.forward_latent_mse,
        video_latent_mse=offline.video_latent_mse,
        copy_last_frame_latent_mse=offline.copy_last_frame_latent_mse,
        inverse_action_rmse=offline.inverse_action_rmse,
        progress_mae=offline.progress_mae,
        **{f"policy_action_rmse_steps{k}": v for k, v in offline.policy_action_rmse_by_steps.items()},
    )

    seeds = list(range(CLOSED_LOOP_SEEDS_FROM, CLOSED_LOOP_SEEDS_FROM + (2 if args.quick else args.seeds)))
    closed = evaluate_closed_loop(runtime, "pick_place", seeds)
    print(f"[bench] closed-loop pick-place: {sum(closed.successes)}/{len(seeds)} unseen seeds succeeded")
    results["closed_loop_success_rate"] = closed.success_rate
    results["closed_loop_episodes"] = float(len(seeds))
    print(json.dumps({k: round(v, 6) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
