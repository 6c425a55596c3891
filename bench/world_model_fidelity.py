"""Object fidelity of the WAM's predicted frames, and the cheapest step to raise it: the autoencoder.

Part 1 (always): the checkpoint's video prediction and forward dynamics 0.8 s ahead, its
autoencoder's reconstruction of the real future and copy-the-last-frame, each scored per cube
against the real future frame (wam_ros.model.fidelity: colour mask -> table position; a cube the
real frame shows and the prediction does not is "missing").

Part 2 (``--autoencoder-variants``): the autoencoder is the floor of every prediction (the WAM
predicts its latents), so train autoencoder variants from scratch for the same number of steps on
the same frames and score their reconstructions the same way: the control (the checkpoint's
settings), a foreground-weighted loss, and the same with 8 latent channels.

    .venv/bin/python bench/world_model_fidelity.py --data TRAIN_DIR --held-out HELD_DIR [--autoencoder-variants] [--steps 600]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/cpu-small-pick-place")
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="training frames for the autoencoder variants")
    parser.add_argument("--held-out", type=Path, required=True, help="held-out episodes (bin_three demos)")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--autoencoder-variants", action="store_true")
    parser.add_argument("--steps", type=int, default=600, help="training steps per autoencoder variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def reconstruction_fidelity(autoencoder, frames: np.ndarray, camera) -> dict:
    import torch

    from wam_ros.model.autoencoder import images_to_tensor, tensor_to_images
    from wam_ros.model.fidelity import FidelityReport, compare

    report = FidelityReport()
    with torch.inference_mode():
        for start in range(0, len(frames), 32):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + 32]))
            decoded = tensor_to_images(autoencoder.decode(autoencoder.encode(images_to_tensor(batch)))).numpy()
            for real, reconstructed in zip(frames[start:start + 32], decoded):
                compare(report, "autoencoder", reconstructed, real, camera)
    return report.summary("autoencoder")


def main() -> int:
    args = parse_args()
    import torch

    from wam_ros.data import EpisodeDataset
    from wam_ros.model import load_policy
    from wam_ros.model.autoencoder import build_autoencoder, images_to_tensor
    from wam_ros.model.evaluate import offline_samples
    from wam_ros.model.fidelity import TablePlaneCamera, evaluate_fidelity
    from wam_ros.robot import load_robot_config

    torch.set_num_threads(args.threads)
    runtime = load_policy(args.checkpoint)
    robot = load_robot_config(runtime.config.robot or "panda_sim")
    held = EpisodeDataset(args.held_out)
    samples = offline_samples(runtime, held, args.samples, seed=0)
    report = evaluate_fidelity(runtime, samples, robot=robot)
    for source, summary in report.items():
        print(f"[checkpoint] {source}: {json.dumps(summary)}", flush=True)
    result: dict = {"checkpoint": args.checkpoint, "samples": len(samples), **{f"checkpoint_{k}": v for k, v in report.items()}}
    if args.autoencoder_variants:
        camera = TablePlaneCamera.from_robot(robot, "front")
        rng = np.random.default_rng(0)
        held_frames = np.concatenate([np.asarray(held.episode(i).images["front"][::10]) for i in range(len(held))])
        frames = []
        for directory in args.data:
            dataset = EpisodeDataset(directory)
            for i in range(len(dataset)):
                episode = dataset.episode(i)
                for c in runtime.config.cameras:
                    frames.append(np.asarray(episode.images[c][::3]))
        frames = np.concatenate(frames)
        print(f"[autoencoder] {len(frames)} training frames, {len(held_frames)} held-out front frames", flush=True)
        result["autoencoder_checkpoint"] = reconstruction_fidelity(runtime.autoencoder, held_frames, camera)
        print(f"[autoencoder] the checkpoint's: {json.dumps(result['autoencoder_checkpoint'])}", flush=True)
        base = runtime.config.autoencoder
        variants = {"control": base, "foreground_20": replace(base, foreground_weight=20.0),
                    "foreground_20_latent_8": replace(base, foreground_weight=20.0, latent_channels=8)}
        for name, config in variants.items():
            torch.manual_seed(0)
            autoencoder = build_autoencoder(config)
            optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=2e-3)
            cpu, wall = time.process_time(), time.perf_counter()
            for step in range(args.steps):
                batch = images_to_tensor(torch.from_numpy(frames[rng.integers(0, len(frames), args.batch_size)]))
                loss = autoencoder.reconstruction_loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step % 100 == 0:
                    print(f"[autoencoder {name}] step {step}: loss {loss.item():.4f}", flush=True)
            autoencoder.eval()
            summary = reconstruction_fidelity(autoencoder, held_frames, camera)
            summary.update(cpu_s=round(time.process_time() - cpu, 1), wall_s=round(time.perf_counter() - wall, 1), steps=args.steps)
            result[f"autoencoder_{name}"] = summary
            print(f"[autoencoder {name}] {json.dumps(summary)}", flush=True)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
