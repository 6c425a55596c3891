"""Evaluation (``wam-ros eval``): what a checkpoint can do, measured three ways.

* offline, on held-out episodes: action error of the policy for several sampler step counts and
  of inverse dynamics; forward-dynamics and video-prediction error of the predicted frame
  against the real one, next to the copy-the-last-frame baseline (in latent space and in
  pixels); progress error; with a goal localiser, its distance from the next real grasp and
  release (hindsight labels of the held-out episodes);
* closed loop in the MuJoCo sim, in-process (no ROS graph): success over N seeds, executing
  ``execute_steps`` actions of each chunk before asking for the next;
* a contact sheet (PNG): per sample, the current frame, the real future, the predicted future
  by video prediction and by forward dynamics, for every camera.

Everything goes through the runtime facade (``load_policy``), batch 1, as the robot runs it.
Results are written as JSON (``report.json``) next to the contact sheet.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wam_ros.data import DatasetError, EpisodeDataset
from wam_ros.model.autoencoder import images_to_tensor, tensor_to_images
from wam_ros.model.goal import PICK, PLACE, HindsightGoals
from wam_ros.model.runtime import WamRuntime
from wam_ros.sim.tasks import episode_instruction


@dataclass
class OfflineSample:
    """One evaluation window from a recorded episode."""

    images: dict[str, np.ndarray]  # camera -> (n_obs_frames, H, W, 3)
    state: np.ndarray  # (n_obs_frames, S)
    instruction: str
    actions: np.ndarray  # (horizon, A)
    future: dict[str, np.ndarray]  # camera -> (H, W, 3)
    progress: float
    goal: np.ndarray | None = None  # (GOAL_DIM,) hindsight goal label (goal.py) when the model has a localiser
    goal_valid: np.ndarray | None = None  # (2,) the pick and place parts exist


def offline_samples(runtime: WamRuntime, dataset: EpisodeDataset, count: int, seed: int = 0) -> list[OfflineSample]:
    """``count`` windows at random frames of labelled episodes (same window rules as training)."""
    config = runtime.config
    rng = np.random.default_rng(seed)
    labelled = [i for i, record in enumerate(dataset.records) if record.get("has_actions", True)]
    if not labelled:
        raise DatasetError(f"{dataset.root}: no episode with actions to evaluate on")
    labeller = HindsightGoals(dataset.info, config) if config.goal.camera else None
    samples = []
    for _ in range(count):
        episode = dataset.episode(int(rng.choice(labelled)))
        t = int(rng.integers(0, episode.length))
        goal, goal_valid = labeller.episode(episode.states, episode.actions) if labeller is not None else (None, None)
        observed = np.maximum(t - config.obs_frame_stride * np.arange(config.n_obs_frames - 1, -1, -1), 0)
        chunk = np.minimum(t + np.arange(config.horizon), episode.length - 1)
        future = min(t + config.future_offset, episode.length - 1)
        span = next((s for s in episode.subtasks if s.start <= t < s.end), None)
        start, end, instruction = (span.start, span.end, span.instruction) if span else (0, episode.length, episode.instruction)
        samples.append(
            OfflineSample(
                images={c: np.asarray(episode.images[c][observed]) for c in config.cameras},
                state=episode.states[observed],
                instruction=instruction,
                actions=episode.actions[chunk],
                future={c: np.asarray(episode.images[c][future]) for c in config.cameras},
                progress=float(np.clip((future - start) / max(end - 1 - start, 1), 0.0, 1.0)),
                goal=goal[t] if goal is not None else None,
                goal_valid=goal_valid[t] if goal_valid is not None else None,
            )
        )
    return samples


def _pixel_mse(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Mean squared error over cameras with pixels scaled to [0, 1]."""
    return float(np.mean([np.mean((a[c].astype(np.float32) / 255.0 - b[c].astype(np.float32) / 255.0) ** 2) for c in a]))


@dataclass
class OfflineReport:
    samples: int
    policy_action_rmse_by_steps: dict[int, float] = field(default_factory=dict)  # raw units (rad, m)
    policy_latency_ms_by_steps: dict[int, float] = field(default_factory=dict)
    inverse_action_rmse: float = 0.0
    forward_pixel_mse: float = 0.0
    video_pixel_mse: float = 0.0
    copy_last_frame_pixel_mse: float = 0.0
    autoencoder_pixel_mse: float = 0.0  # reconstruction of the real future: the floor of any prediction
    forward_latent_mse: float = 0.0
    video_latent_mse: float = 0.0
    copy_last_frame_latent_mse: float = 0.0
    progress_mae: float = 0.0
    goal_pick_error_m: float | None = None  # mean horizontal distance of the localiser's next grasp from the real one
    goal_place_error_m: float | None = None  # the same for the next release


def evaluate_offline(runtime: WamRuntime, samples: list[OfflineSample], steps_list: list[int], quiet: bool = False) -> OfflineReport:
    """Per-mode errors over ``samples`` (see the module docstring)."""
    import torch

    report = OfflineReport(samples=len(samples))
    errors: dict[str, list[float]] = {}
    latency: dict[int, list[float]] = {s: [] for s in steps_list}

    def add(name: str, value: float) -> None:
        errors.setdefault(name, []).append(value)

    def latent_mse(frames: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> float:
        with torch.inference_mode():
            encode = runtime.autoencoder.encode
            a = encode(images_to_tensor(torch.from_numpy(np.stack([frames[c] for c in runtime.config.cameras]))))
            b = encode(images_to_tensor(torch.from_numpy(np.stack([target[c] for c in runtime.config.cameras]))))
            scale = torch.as_tensor(runtime.stats.latent_std)[:, None, None]
            return float(((a - b) / scale).pow(2).mean())

    for sample in tqdm(samples, desc="offline eval", unit="sample", disable=quiet):
        for steps in steps_list:
            start = time.perf_counter()
            actions = runtime.policy(sample.images, sample.state, sample.instruction, steps=steps)
            latency[steps].append(1000.0 * (time.perf_counter() - start))
            add(f"policy{steps}", float(np.mean((actions - sample.actions) ** 2)))
        inverse = runtime.inverse_dynamics(sample.images, sample.state, sample.instruction, sample.future)
        add("inverse", float(np.mean((inverse - sample.actions) ** 2)))
        current = {c: sample.images[c][-1] for c in runtime.config.cameras}
        forward, _ = runtime.imagine(sample.images, sample.state, sample.instruction, actions=sample.actions)
        video, _ = runtime.imagine(sample.images, sample.state, sample.instruction)
        add("forward_pixel", _pixel_mse(forward, sample.future))
        add("video_pixel", _pixel_mse(video, sample.future))
        add("copy_pixel", _pixel_mse(current, sample.future))
        add("forward_latent", latent_mse(forward, sample.future))
        add("video_latent", latent_mse(video, sample.future))
        add("copy_latent", latent_mse(current, sample.future))
        with torch.inference_mode():
            pixels = images_to_tensor(torch.from_numpy(np.stack([sample.future[c] for c in runtime.config.cameras])))
            decoded = tensor_to_images(runtime.autoencoder.decode(runtime.autoencoder.encode(pixels))).numpy()
        add("autoencoder_pixel", _pixel_mse({c: decoded[i] for i, c in enumerate(runtime.config.cameras)}, sample.future))
        add("progress", abs(runtime.progress(sample.images, sample.state, sample.instruction, sample.future) - sample.progress))
        if sample.goal is not None and sample.goal_valid is not None:
            estimate = runtime.locate(sample.images, sample.state, sample.instruction)
            for name, position, part, valid in (("goal_pick", estimate.pick_position_m, PICK, sample.goal_valid[0]),
                                                ("goal_place", estimate.place_position_m, PLACE, sample.goal_valid[1])):
                if valid:
                    add(name, float(np.linalg.norm(position[:2] - sample.goal[part][:2])))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    report.policy_action_rmse_by_steps = {s: float(np.sqrt(mean[f"policy{s}"])) for s in steps_list}
    report.policy_latency_ms_by_steps = {s: float(np.median(latency[s])) for s in steps_list}
    report.inverse_action_rmse = float(np.sqrt(mean["inverse"]))
    report.forward_pixel_mse, report.video_pixel_mse = mean["forward_pixel"], mean["video_pixel"]
    report.copy_last_frame_pixel_mse, report.autoencoder_pixel_mse = mean["copy_pixel"], mean["autoencoder_pixel"]
    report.forward_latent_mse, report.video_latent_mse, report.copy_last_frame_latent_mse = mean["forward_latent"], mean["video_latent"], mean["copy_latent"]
    report.progress_mae = mean["progress"]
    report.goal_pick_error_m, report.goal_place_error_m = mean.get("goal_pick"), mean.get("goal_place")
    return report


def contact_sheet(runtime: WamRuntime, samples: list[OfflineSample], path: Path, scale: int = 2) -> None:
    """PNG: one row per sample and camera: current | real future | video prediction | forward dynamics."""
    import cv2

    rows = []
    for sample in samples:
        video, _ = runtime.imagine(sample.images, sample.state, sample.instruction)
        forward, _ = runtime.imagine(sample.images, sample.state, sample.instruction, actions=sample.actions)
        for camera in runtime.config.cameras:
            rows.append(np.concatenate([sample.images[camera][-1], sample.future[camera], video[camera], forward[camera]], axis=1))
    sheet = np.concatenate(rows, axis=0)
    sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    header = np.full((24, sheet.shape[1], 3), 255, np.uint8)
    width = sheet.shape[1] // 4
    for i, label in enumerate(("current", "real future", "video prediction", "forward dynamics")):
        cv2.putText(header, label, (i * width + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header, sheet]), cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write the contact sheet")


@dataclass
class ClosedLoopReport:
    task: str
    seeds: list[int]
    successes: list[bool]
    steps: list[int]
    policy_latency_ms_median: float
    policy_calls: int
    subtasks_done: list[int] = field(default_factory=list)  # per seed, of subtask_count
    subtask_count: int = 1
    placement_errors_m: list[float] = field(default_factory=list)  # per seed at the end, for tasks with one exact place (Task.placement_error_m)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else 0.0


def evaluate_closed_loop(
    runtime: WamRuntime,
    task: str,
    seeds: list[int],
    execute_steps: int | None = None,
    steps: int | None = None,
    max_steps: int | None = None,
    use_subtasks: bool = True,
    robot: str = "panda_sim",
    quiet: bool = False,
    phrasing: str = "template",
    sim_overrides: dict[str, Any] | None = None,
    camera_calibration: str = "episode",
) -> ClosedLoopReport:
    """Run the policy in the in-process sim on each seed until success or ``max_steps`` control steps.

    The instruction given to the model is the current subtask's (``use_subtasks``, as the
    planner drives it) or the task's whole instruction in ``phrasing`` (the task's own wording
    or a held-out one, see :func:`wam_ros.sim.tasks.episode_instruction`). ``sim_overrides``
    changes the scene (:meth:`wam_ros.sim.config.SimConfig.from_robot`), e.g. the cube region.
    ``camera_calibration`` (calibrated goal localisers only): ``episode`` gives the localiser each
    episode's camera pose as the scene shifts put it (a camera calibrated again after it moved),
    ``robot`` the robot config's nominal one (a camera moved since its calibration).
    """
    from wam_ros.model.camera import CALIBRATIONS, told_camera
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.config import SimConfig
    from wam_ros.sim.demos import MAX_STEPS

    config = runtime.config
    execute = execute_steps or config.execute_steps
    limit = max_steps or MAX_STEPS.get(task, 400)
    successes, lengths, latencies, subtasks_done, placement_errors = [], [], [], [], []
    subtask_count = 1
    if camera_calibration not in CALIBRATIONS:
        raise ValueError(f"camera_calibration {camera_calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
    robot_config = load_robot_config(robot)
    sim_config = SimConfig.from_robot(robot_config, sim_overrides)
    env = TabletopEnv(robot_config, sim_config)
    bar = tqdm(seeds, desc=f"closed loop {task}", unit="episode", disable=quiet)
    try:
        for seed in bar:
            # Sim observations render lazily and only until the next step: keep copies.
            observation = env.reset(task, seed)
            if config.goal.calibrated:
                runtime.set_goal_camera(told_camera(robot_config, config.goal.camera, sim_config, seed, camera_calibration))
            whole_instruction = episode_instruction(env.spec, phrasing)
            frame = ({c: observation.images[c] for c in config.cameras}, observation.state.copy())
            history = [frame] * ((config.n_obs_frames - 1) * config.obs_frame_stride + 1)
            success = False
            step = 0
            while step < limit and not success:
                frames = history[:: -config.obs_frame_stride][: config.n_obs_frames][::-1]
                images = {c: np.stack([f[0][c] for f in frames]) for c in config.cameras}
                state = np.stack([f[1] for f in frames])
                status = env.task_status()
                instruction = status.subtask_instructions[min(status.subtasks_done, len(status.subtask_instructions) - 1)] if use_subtasks else whole_instruction
                start = time.perf_counter()
                chunk = runtime.policy(images, state, instruction, steps=steps)
                latencies.append(1000.0 * (time.perf_counter() - start))
                for action in chunk[:execute]:
                    observation = env.step(action)
                    step += 1
                    if env.task_status().success:
                        success = True
                        break
                    if step >= limit:
                        break
                    history = (history + [({c: observation.images[c] for c in config.cameras}, observation.state.copy())])[-len(history) :]
            status = env.task_status()
            successes.append(success)
            lengths.append(step)
            subtasks_done.append(int(status.subtasks_done))
            subtask_count = len(status.subtask_instructions)
            error = env.task.placement_error_m(env.spec, env.scene_state())  # type: ignore[union-attr]
            if error is not None:
                placement_errors.append(error)
            bar.set_postfix(success=f"{np.mean(successes):.2f}", subtasks=f"{np.mean(subtasks_done):.2f}")
    finally:
        bar.close()
        env.close()
    median = float(np.median(latencies)) if latencies else 0.0
    return ClosedLoopReport(task, list(seeds), successes, lengths, median, len(latencies), subtasks_done, subtask_count, placement_errors)
