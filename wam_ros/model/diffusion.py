"""Flow matching with two timesteps: what training draws, and the few-step samplers.

Convention: ``x_t = (1 - t) * x_0 + t * noise`` for t in [0, 1]; the network predicts the
velocity ``noise - x_0``; t = 0 is clean data, t = 1 pure noise. Sampling integrates from
t = 1 to t = 0 with Euler steps; one step returns the network's estimate of the mean of x_0.

Training batches have two parts (sizes fixed by ``policy_prob``):

* policy part: future frame removed (full noise), actions noisy; with ``prefix_prob`` a random
  prefix of the chunk is clean (t = 0): that is what a frozen prefix looks like at inference
  (real-time chunking), so inpainting is learned, not improvised;
* world part: each sample in one of forward dynamics (actions clean), inverse dynamics (future
  clean), video prediction (actions removed), scoring (future clean, actions removed: only the
  progress head learns, on the kind of input the planner scores) or joint (both noisy), in
  proportion to their probabilities. The future timestep is drawn from Beta(a, b) biased towards high noise (the
  DreamZero-Flash idea: the actions learn to be decided while the video is still noisy).
  Samples without action labels (video-only episodes) always have their actions removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wam_ros.model.config import DiffusionConfig

FORWARD, INVERSE, VIDEO, JOINT, SCORE = range(5)


@dataclass
class WorldTimesteps:
    t_future: torch.Tensor  # (B,)
    t_actions: torch.Tensor  # (B, horizon)
    actions_present: torch.Tensor  # (B,) bool
    mode: torch.Tensor  # (B,) FORWARD / INVERSE / VIDEO / JOINT / SCORE


def joint_prob(config: DiffusionConfig) -> float:
    return max(0.0, 1.0 - config.policy_prob - config.forward_prob - config.inverse_prob - config.video_prob - config.score_prob)


def split_batch(batch_size: int, config: DiffusionConfig) -> tuple[int, int]:
    """(policy part, world part) sizes; a part with positive probability gets at least one sample."""
    policy = int(round(batch_size * config.policy_prob))
    if config.policy_prob > 0:
        policy = max(policy, 1)
    if config.policy_prob < 1.0 and batch_size > 1:
        policy = min(policy, batch_size - 1)
    return policy, batch_size - policy


def sample_future_t(n: int, config: DiffusionConfig, rng: np.random.Generator) -> torch.Tensor:
    """Future timesteps ~ Beta(a, b) (biased towards full noise for a > b)."""
    a, b = config.video_noise_beta
    return torch.from_numpy(rng.beta(a, b, n).astype(np.float32)).clamp(1e-4, 1.0)


def policy_timesteps(n: int, horizon: int, max_prefix: int, config: DiffusionConfig, rng: np.random.Generator) -> torch.Tensor:
    """t_actions (n, horizon): one noise level per sample; a clean prefix of 1..max_prefix actions on some."""
    t = np.repeat(rng.uniform(1e-4, 1.0, (n, 1)), horizon, axis=1)
    lengths = rng.integers(1, max(max_prefix, 1) + 1, n) * (rng.random(n) < config.prefix_prob)
    t[np.arange(horizon)[None, :] < lengths[:, None]] = 0.0
    return torch.from_numpy(t.astype(np.float32))


def world_timesteps(has_actions: np.ndarray, horizon: int, config: DiffusionConfig, rng: np.random.Generator) -> WorldTimesteps:
    """Per-sample mode and timesteps for the world part of a batch."""
    n = len(has_actions)
    weights = np.array([config.forward_prob, config.inverse_prob, config.video_prob, joint_prob(config), config.score_prob])
    if weights.sum() <= 0:
        weights = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    mode = rng.choice(5, size=n, p=weights / weights.sum())
    mode[~np.asarray(has_actions, bool) & (mode != SCORE)] = VIDEO
    t_future = sample_future_t(n, config, rng).numpy()
    t_future[(mode == INVERSE) | (mode == SCORE)] = 0.0
    t_actions = np.repeat(rng.uniform(1e-4, 1.0, (n, 1)), horizon, axis=1)
    t_actions[mode == FORWARD] = 0.0
    t_actions[(mode == VIDEO) | (mode == SCORE)] = 1.0
    actions_present = (mode != VIDEO) & (mode != SCORE)
    return WorldTimesteps(
        torch.from_numpy(t_future),
        torch.from_numpy(t_actions.astype(np.float32)),
        torch.from_numpy(actions_present),
        torch.from_numpy(mode),
    )


def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, velocity target) for t broadcastable to x0 from the left: (B,) or (B, K)."""
    while t.dim() < x0.dim():
        t = t.unsqueeze(-1)
    return (1.0 - t) * x0 + t * noise, noise - x0


def euler_schedule(steps: int) -> list[tuple[float, float]]:
    """(t, t_next) pairs from 1 to 0 in ``steps`` equal steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
    return list(zip(grid[:-1], grid[1:]))
