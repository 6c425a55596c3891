"""Training (``wam-ros train``): autoencoder, latent cache, then the world action transformer, with checkpoints.

Stages (each with a progress bar; Ctrl-C saves what is done and a resumable state):

1. autoencoder: trained on random frames of every camera (skipped with ``--init``, which
   keeps the checkpoint's autoencoder and normalisation);
2. latents: every frame encoded once, cached under ``OUT/cache/`` (keyed by data and weights);
3. goal localiser (when ``model.goal.camera`` is set): hindsight grasp and release poses from
   the static camera (``goal.py``), then its prediction for every frame. ``--init`` keeps the
   checkpoint's localiser, or with ``--goal-steps N`` trains it on for N steps on the new data
   (new scenes move the goals: bin_three's later cubes go to other places in the bin), kept
   unless its errors where subtasks start are worse than the checkpoint's; with
   ``--new-goal-localiser`` too, a fresh localiser of the preset's shape trains from scratch;
4. transformer: flow matching over policy and world samples (see ``diffusion.py``).

Multi-GPU: the same command under ``accelerate launch`` or ``torchrun`` trains data-parallel
(each process draws its own windows; gradients are averaged). Process CPU time per stage is
recorded in ``OUT/config.json`` (``training.cpu_seconds``); ``--max-cpu-minutes`` stops the
transformer stage when the whole run has used that much CPU time.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from wam_ros.data import DatasetError
from wam_ros.model.autoencoder import images_to_tensor
from wam_ros.model.checkpoint import (
    load_checkpoint,
    load_resume_state,
    read_config,
    read_resume_progress,
    save_checkpoint,
    save_resume_state,
)
from wam_ros.model.config import GoalConfig, TrainConfig, WamConfig, config_to_dict, load_preset, model_config_from_dict
from wam_ros.model.data import (
    Batch,
    ImageAugmentation,
    Normalization,
    TrainingFrames,
    WindowSampler,
    common_image_size,
    compute_normalization,
    describe,
    first_grasp_error,
    goal_cameras,
    goal_pixels,
    holdout_episodes,
    keypoint_input,
    open_datasets,
    predict_goals,
    subtask_start_frames,
    subtask_start_goal_error,
    weights_key,
)
from wam_ros.model.diffusion import add_noise, policy_timesteps, split_batch, world_timesteps
from wam_ros.model.goal import goal_loss
from wam_ros.model.network import GoalLocaliser, Prediction, WorldActionModel, count_parameters
from wam_ros.model.text import instruction_encoder


@dataclass
class LossParts:
    total: torch.Tensor
    action: float
    future: float
    progress: float


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of weighted values, sum of weights)."""
    return (values * weight).sum(), weight.sum()


def training_loss(
    network: torch.nn.Module,
    batch: Batch,
    n_policy: int,
    config: WamConfig,
    rng: np.random.Generator,
    generator: torch.Generator | None = None,
) -> LossParts:
    """Flow-matching loss of one batch whose first ``n_policy`` rows are policy samples.

    ``network`` is the transformer (or its DistributedDataParallel wrapper).
    """
    d = config.diffusion
    b, horizon = batch.actions.shape[:2]
    device = batch.actions.device
    n_world = b - n_policy
    t_actions = torch.empty(b, horizon)
    t_future = torch.ones(b)
    actions_present = torch.ones(b, dtype=torch.bool)
    if n_policy:
        t_actions[:n_policy] = policy_timesteps(n_policy, horizon, config.execute_steps, d, rng)
    if n_world:
        world = world_timesteps(batch.has_actions[n_policy:].cpu().numpy(), horizon, d, rng)
        t_actions[n_policy:] = world.t_actions
        t_future[n_policy:] = world.t_future
        actions_present[n_policy:] = world.actions_present
    t_actions, t_future, actions_present = t_actions.to(device), t_future.to(device), actions_present.to(device)
    action_noise = torch.randn(batch.actions.shape, generator=generator, device=device)
    future_noise = torch.randn(batch.future_residual.shape, generator=generator, device=device)
    noisy_actions, action_target = add_noise(batch.actions, t_actions, action_noise)
    noisy_future, future_target = add_noise(batch.future_residual, t_future, future_noise)
    pixels = keypoint_input(batch.context_pixels) if config.keypoints.count else None
    goal = batch.goal if config.goal.camera else None
    policy, world = network(batch.context_latents, pixels, batch.state, batch.text, n_policy, noisy_future, t_future, noisy_actions, t_actions, actions_present, goal)

    zero = batch.actions.new_zeros(())
    action_sum, action_count, progress_sum, progress_count = zero, zero, zero, zero
    future_sum, future_count = zero, zero
    action_weight = ((t_actions > 0) & actions_present[:, None] & batch.has_actions[:, None]).float()
    progress_weight = batch.progress_ok.float()
    parts: list[tuple[Prediction, slice]] = []
    if policy is not None:
        parts.append((policy, slice(0, n_policy)))
    if world is not None:
        parts.append((world, slice(n_policy, b)))
        error = (world.future_velocity - future_target[n_policy:]).pow(2).flatten(1).mean(1)
        future_sum, future_count = _masked_mean(error, (t_future[n_policy:] > 0).float())
    for prediction, rows in parts:
        error = (prediction.action_velocity - action_target[rows]).pow(2).mean(-1)
        s, c = _masked_mean(error, action_weight[rows])
        action_sum, action_count = action_sum + s, action_count + c
        bce = F.binary_cross_entropy_with_logits(prediction.progress_logit.float(), batch.progress[rows], reduction="none")
        s, c = _masked_mean(bce, progress_weight[rows])
        progress_sum, progress_count = progress_sum + s, progress_count + c
    action_loss = action_sum / action_count.clamp_min(1.0)
    future_loss = future_sum / future_count.clamp_min(1.0)
    progress_loss = progress_sum / progress_count.clamp_min(1.0)
    total = d.action_loss_weight * action_loss + d.future_loss_weight * future_loss + d.progress_loss_weight * progress_loss
    return LossParts(total, float(action_loss.detach()), float(future_loss.detach()), float(progress_loss.detach()))


def learning_rate(step: int, done_fraction: float, train: TrainConfig) -> float:
    """Linear warm-up to ``learning_rate`` over ``warmup_steps``, then cosine decay to ``min_learning_rate``
    as ``done_fraction`` (of the step or CPU budget, whichever runs out first) goes to 1."""
    base = train.learning_rate
    if step < train.warmup_steps:
        return base * (step + 1) / train.warmup_steps
    done = min(1.0, max(0.0, done_fraction))
    return train.min_learning_rate + 0.5 * (base - train.min_learning_rate) * (1 + math.cos(math.pi * done))


@dataclass
class TrainOptions:
    data: list[Path]
    out: Path
    preset: str = "cpu-small"
    init: Path | None = None
    resume: bool = False
    steps: int | None = None
    ae_steps: int | None = None
    goal_steps: int | None = None  # with init: train the checkpoint's localiser on for this many steps
    new_goal_localiser: bool = False  # with init and goal_steps: a fresh localiser shaped by the preset's model.goal instead
    batch_size: int | None = None
    max_cpu_minutes: float | None = None
    threads: int | None = None
    device: str = "auto"
    seed: int | None = None
    operator_weight: float = 1.0  # policy samples: weight of intervention frames (HG-DAgger); see TrainingFrames.policy_weights
    policy_weight: float = 1.0  # ... of frames the policy drove in recorded episodes
    quiet: bool = False


class ReconstructionObjective(torch.nn.Module):
    """The autoencoder's loss as a forward pass (what DistributedDataParallel wraps)."""

    def __init__(self, autoencoder: torch.nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.reconstruction_loss(pixels)


@dataclass
class Stage:
    """What sets one optimisation stage (autoencoder, goal localiser, transformer) apart; :meth:`Trainer._optimize` runs it."""

    name: str  # its steps are counted in progress["<name>_step"]
    label: str  # for the progress bar and messages
    steps: int
    network: torch.nn.Module  # the trained module as accelerate prepared it
    optimizer: torch.optim.Optimizer  # as accelerate prepared it
    schedule: TrainConfig  # its learning_rate, warmup_steps and min_learning_rate shape the learning rate
    loss: Callable[[int], tuple[torch.Tensor, dict[str, float]]]  # batch index -> (loss to minimise, named losses to show)
    loss_smoothing: float  # weight of the newest value in the running mean of each named loss
    postfix: Callable[[int, dict[str, float], float], dict[str, str]]  # progress-bar fields from (batch index, running means, seconds of the step)
    checkpoint: bool  # its saves write the model checkpoint as well as the resumable state
    put_back: Callable[[], None] | None = None  # puts the trained module, unwrapped, back into the model (None: trained in place)
    resume_extras: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]] = lambda: ({}, {})  # tensors, progress for its resume state
    grad_clip: float = 0.0
    checkpoint_every: int = 0  # save every this many steps (0: only when it stops)
    cpu_budget: bool = False  # max_cpu_minutes stops it, and its learning rate anneals over what is left of that budget


def _short_schedule(train: TrainConfig, base: float, steps: int) -> TrainConfig:
    """The learning rate of the autoencoder and goal stages: warm-up over at most 50 steps, cosine decay to 5 % of ``base``."""
    return dataclasses.replace(train, learning_rate=base, warmup_steps=min(50, steps), min_learning_rate=base * 0.05)


class Trainer:
    """One training run (see the module docstring). ``run()`` returns the output directory.

    ``progress`` is the run's record: configs, stage steps, CPU seconds per stage (summed over
    resumed runs), stop reason, smoothed losses. It goes into config.json (``training``) and
    into the resume state.
    """

    def __init__(self, options: TrainOptions) -> None:
        self.options = options
        self.interrupted = False
        self.progress: dict[str, Any] = {}
        self.previous_cpu_s = 0.0  # process CPU time of earlier runs of a resumed training
        self.wall_start = time.perf_counter()
        self.say = (lambda text: None) if options.quiet else (lambda text: print(text, flush=True))
        self._cpu_stage: str | None = None  # where process CPU time is booked (progress["cpu_seconds"])
        self._cpu_since = 0.0

    def cpu_used_s(self) -> float:
        """Process CPU time of this training (all threads, all stages, earlier runs included)."""
        return self.previous_cpu_s + time.process_time()

    def _book_cpu(self, stage: str | None = None) -> None:
        """Book the process CPU time since the last call to the stage it went to; from now on, book to ``stage`` (None: the same)."""
        now = time.process_time()
        if self._cpu_stage is not None:
            seconds = self.progress.setdefault("cpu_seconds", {})
            seconds[self._cpu_stage] = seconds.get(self._cpu_stage, 0.0) + now - self._cpu_since
        self._cpu_since = now
        self._cpu_stage = stage or self._cpu_stage

    def _summary(self) -> dict[str, Any]:
        return {
            **self.progress,
            "cpu_seconds_total": self.cpu_used_s(),
            "wall_seconds_total": self.progress.get("wall_seconds_before", 0.0) + time.perf_counter() - self.wall_start,
        }

    # -- setup -----------------------------------------------------------------------------------
    def _configs(self, info: Any) -> tuple[WamConfig, TrainConfig]:
        o = self.options
        if o.resume:
            self.progress = read_resume_progress(o.out)
            weights = self.progress.get("frame_weights", {})  # a resumed run samples as it began
            o.operator_weight, o.policy_weight = weights.get("operator", o.operator_weight), weights.get("policy", o.policy_weight)
            self.previous_cpu_s = float(self.progress.get("cpu_seconds_total", 0.0))
            self.progress["wall_seconds_before"] = float(self.progress.get("wall_seconds_total", 0.0))
            model = model_config_from_dict(self.progress["model_config"])
            train = TrainConfig(**self.progress["train_config"])
        else:
            _, train = load_preset(o.preset)
            if o.init is not None:
                model, _ = read_config(o.init)  # the architecture is the checkpoint's; the optimisation the preset's
                if o.new_goal_localiser:
                    model.goal = self._new_goal_config(model.goal)
            else:
                model, _ = load_preset(o.preset)
                model.bind_dataset(list(info.cameras), common_image_size(info), info.state_names, info.action_names, info.fps, info.robot)
        if model.cameras != list(info.cameras) or model.state_names != list(info.state_names) or model.action_names != list(info.action_names):
            raise DatasetError(
                f"the model was made for cameras {model.cameras} and {len(model.state_names)}/{len(model.action_names)} "
                f"state/action names; the data has {list(info.cameras)} and {len(info.state_names)}/{len(info.action_names)}"
            )
        if o.init is not None and (model.action_space == "tcp" or model.goal.camera) and model.robot != info.robot:
            raise DatasetError(f"{o.init} predicts through the kinematics of robot {model.robot!r}; the data comes from {info.robot!r}")
        overrides = {k: v for k, v in (("steps", o.steps), ("ae_steps", o.ae_steps), ("goal_steps", o.goal_steps), ("batch_size", o.batch_size), ("seed", o.seed)) if v is not None}
        train = dataclasses.replace(train, **overrides)
        if model.goal.calibrated and train.goal_augment_shift_px:
            raise ValueError("goal_augment_shift_px must be 0 for a calibrated goal localiser: a shifted image no longer matches its camera's calibration")
        self.progress["model_config"] = config_to_dict(model)
        self.progress["train_config"] = dataclasses.asdict(train)
        if o.init is not None:
            self.progress["init"] = str(o.init)
            if o.new_goal_localiser:
                self.progress["new_goal_localiser"] = True
        return model, train

    def _new_goal_config(self, current: GoalConfig) -> GoalConfig:
        """The preset's localiser shape for ``--new-goal-localiser``, on the checkpoint's camera."""
        o = self.options
        if not o.goal_steps:
            raise ValueError("--new-goal-localiser trains the new localiser from scratch: give --goal-steps")
        if not current.camera:
            raise ValueError(f"{o.init} has no goal localiser (model.goal.camera is empty) to replace")
        preset_goal = load_preset(o.preset)[0].goal
        return dataclasses.replace(preset_goal, camera=current.camera)

    def run(self) -> Path:
        """Train; SIGTERM is handled like Ctrl-C (checkpoint and resumable state are saved)."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
        try:
            return self._run()
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)

    def _run(self) -> Path:
        from accelerate import Accelerator

        o = self.options
        datasets, info = open_datasets(o.data)
        model_config, train = self._configs(info)
        if o.threads or train.num_threads:
            torch.set_num_threads(o.threads or train.num_threads)
        cpu_only = o.device == "cpu" or (o.device == "auto" and not torch.cuda.is_available())
        self.accelerator = accelerator = Accelerator(cpu=cpu_only, mixed_precision=train.mixed_precision)
        if not accelerator.is_main_process:
            self.say = lambda text: None
        torch.manual_seed(train.seed + accelerator.process_index)
        rng = np.random.default_rng(train.seed + 1000 * accelerator.process_index)

        self._book_cpu("setup")
        frames = TrainingFrames(datasets, model_config)
        self.progress["dataset"] = describe(frames)
        self.say(f"[train] {len(frames.episode_refs)} episodes, {frames.num_frames} frames ({len(frames.action_frames)} with actions), {len(frames.instructions)} instructions")
        policy_weights = frames.policy_weights(o.operator_weight, o.policy_weight)
        self.progress["frame_weights"] = {"operator": o.operator_weight, "policy": o.policy_weight}
        if policy_weights is not None:
            share = float(policy_weights[frames.intervention].sum() / policy_weights.sum())
            self.progress["frame_weights"]["intervention_sample_share"] = share
            self.say(f"[train] policy samples weighted: interventions x{o.operator_weight:g} ({int(frames.intervention.sum())} frames, "
                     f"{share:.1%} of the draws), policy-driven frames x{o.policy_weight:g}, HOLD/IDLE frames x0")
        self.model = model = WorldActionModel(model_config)
        normalization: Normalization | None = None
        source = o.out if o.resume and (o.out / "model.safetensors").is_file() else o.init
        if source is not None:
            loaded = load_checkpoint(source)
            weights = loaded.model.state_dict()
            if self.progress.get("new_goal_localiser") and source == o.init:  # everything but the localiser
                weights = {k: v for k, v in weights.items() if not k.startswith("goal.")}
                missing, unexpected = model.load_state_dict(weights, strict=False)
                if unexpected or any(not k.startswith("goal.") for k in missing):
                    raise ValueError(f"{o.init}: weights do not fit the model: missing {missing}, unexpected {unexpected}")
            else:
                model.load_state_dict(weights)
            normalization = loaded.normalization
        if o.init is not None or model_config.autoencoder.kind == "diffusers":
            self.progress["autoencoder_done"] = True
        if o.init is not None and not o.goal_steps:
            self.progress["goal_done"] = True  # finetuning keeps the goal localiser, like the autoencoder
        self.say(
            f"[train] model {model_config.name}: transformer {count_parameters(model.transformer) / 1e6:.2f}M parameters, "
            f"autoencoder {count_parameters(model.autoencoder) / 1e6:.2f}M; device {accelerator.device}, {torch.get_num_threads()} CPU threads"
        )
        o.out.mkdir(parents=True, exist_ok=True)

        if not self.progress.get("autoencoder_done"):
            self._book_cpu("autoencoder")
            if not self._train_autoencoder(frames, train, rng):
                return o.out

        self._book_cpu("encode")
        autoencoder = model.autoencoder.to(accelerator.device).eval()
        with accelerator.main_process_first():
            latents = frames.encode_all(autoencoder, o.out / "cache", weights_key(autoencoder))
        text = instruction_encoder().encode(frames.instructions)
        if normalization is None:
            normalization = compute_normalization(frames, latents, text)
        self.normalization = normalization
        pixels = frames.small_frames(model_config.keypoints.image_size) if model_config.keypoints.count else None
        goals = None
        if model.goal is not None:
            self._book_cpu("goal")
            if not self.progress.get("goal_done") and not self._train_goal(frames, text, train, rng):
                return o.out
        if model.goal is not None and train.steps > 0:  # the transformer trains on the localiser's answers
            augment = ImageAugmentation(train.goal_augment_shift_px, train.goal_augment_colour) if train.goal_augment_predictions else None
            goals = predict_goals(model.goal.to(accelerator.device).eval(), frames, normalization, text, accelerator.device, augment=augment, rng=rng)
        self._book_cpu("transformer")
        sampler = WindowSampler(frames, normalization.normalize_latents(latents), normalization, text, rng, pixels, goals, policy_weights)
        self._train_transformer(sampler, train)
        return o.out

    # -- the training loop, for every stage ------------------------------------------------------
    def _resumed(self, stage: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """When this run continues ``stage`` mid-way: restores ``optimizer``; returns the saved (extra tensors, progress)."""
        if int(self.progress.get(f"{stage}_step", 0)) == 0:
            return None
        return load_resume_state(self.options.out, optimizer)

    def _optimize(self, stage: Stage) -> tuple[str, dict[str, float]]:
        """Train ``stage`` on from the step in ``progress`` to its end, with a progress bar.

        Returns why it stopped (``"steps"``, ``"cpu budget"`` or ``"interrupted"``, when Ctrl-C or
        SIGTERM came; what to save then is the caller's) and the running means of its losses.
        """
        accelerator, o = self.accelerator, self.options
        step = self.progress.setdefault(f"{stage.name}_step", 0)
        budget_s = 60.0 * o.max_cpu_minutes if stage.cpu_budget and o.max_cpu_minutes is not None else None
        # the learning rate anneals over the CPU budget left when the stage began
        budget_start_s = self.progress.setdefault(f"{stage.name}_budget_start_s", self.cpu_used_s()) if stage.cpu_budget else 0.0
        smoothed: dict[str, float] = {}
        stop_reason = "steps"
        bar = tqdm(total=stage.steps, initial=step, desc=stage.label, unit="step", disable=not accelerator.is_main_process or o.quiet)
        tick = time.perf_counter()
        try:
            while step < stage.steps:
                if budget_s is not None and self.cpu_used_s() >= budget_s:
                    stop_reason = "cpu budget"
                    break
                done = step / stage.steps
                if budget_s is not None:
                    done = max(done, (self.cpu_used_s() - budget_start_s) / max(budget_s - budget_start_s, 1e-9))
                for group in stage.optimizer.param_groups:
                    group["lr"] = learning_rate(step, done, stage.schedule)
                loss, losses = stage.loss(step)
                stage.optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if stage.grad_clip > 0:
                    accelerator.clip_grad_norm_(stage.network.parameters(), stage.grad_clip)
                stage.optimizer.step()
                step += 1
                self.progress[f"{stage.name}_step"] = step
                for name, value in losses.items():
                    smoothed[name] = value if name not in smoothed else (1 - stage.loss_smoothing) * smoothed[name] + stage.loss_smoothing * value
                now = time.perf_counter()
                bar.set_postfix(**stage.postfix(step - 1, smoothed, now - tick))
                tick = now
                bar.update(1)
                if stage.checkpoint_every and step % stage.checkpoint_every == 0 and step < stage.steps:
                    self._save(stage)
        except KeyboardInterrupt:
            self.interrupted = True
            stop_reason = "interrupted"
            saved = "the checkpoint and a resumable state" if stage.checkpoint else "a resumable state"
            print(f"\n[train] interrupted in the {stage.label} stage at step {step}; saving {saved} (--resume)", file=sys.stderr)
        finally:
            bar.close()
        return stop_reason, smoothed

    def _save(self, stage: Stage) -> None:
        """Save what is done: the checkpoint (when ``stage.checkpoint``) and the resumable state (from the main process)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        if stage.put_back is not None:
            stage.put_back()
        self._book_cpu()
        summary = self._summary()
        if stage.checkpoint:
            save_checkpoint(self.options.out, self.model, self.normalization, summary)
        tensors, progress = stage.resume_extras()
        save_resume_state(self.options.out, stage.optimizer, tensors, {**summary, **progress})

    # -- autoencoder -----------------------------------------------------------------------------
    def _train_autoencoder(self, frames: TrainingFrames, train: TrainConfig, rng: np.random.Generator) -> bool:
        """Train (or continue training) the autoencoder; False when interrupted."""
        accelerator, autoencoder = self.accelerator, self.model.autoencoder
        optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=train.ae_learning_rate, weight_decay=0.0)
        resumed = self._resumed("autoencoder", optimizer)
        if resumed is not None:
            autoencoder.load_state_dict({k[len("autoencoder.") :]: v for k, v in resumed[0].items() if k.startswith("autoencoder.")})
        objective, optimizer = accelerator.prepare(ReconstructionObjective(autoencoder), optimizer)
        cameras = frames.config.cameras
        height, width = frames.config.image_height, frames.config.image_width

        def loss(batch_index: int) -> tuple[torch.Tensor, dict[str, float]]:
            anchors = rng.integers(0, frames.num_frames, train.ae_batch_size)
            which = rng.integers(0, len(cameras), train.ae_batch_size)
            images = np.empty((train.ae_batch_size, height, width, 3), np.uint8)
            for c, camera in enumerate(cameras):
                rows = np.flatnonzero(which == c)
                if len(rows):
                    images[rows] = frames.images(anchors[rows], camera)
            with accelerator.autocast():
                value = objective(images_to_tensor(torch.from_numpy(images)).to(accelerator.device))
            return value, {"loss": value.item()}

        stage = Stage(
            name="autoencoder", label="autoencoder", steps=train.ae_steps, network=objective, optimizer=optimizer,
            schedule=_short_schedule(train, train.ae_learning_rate, train.ae_steps), loss=loss, loss_smoothing=0.05,
            postfix=lambda _, smoothed, seconds: {"loss": f"{smoothed['loss']:.4f}", "img_s": f"{train.ae_batch_size / max(seconds, 1e-9):.0f}"},
            checkpoint=False,  # the normalisation comes from the latents of the finished autoencoder
            resume_extras=lambda: ({f"autoencoder.{k}": v for k, v in autoencoder.state_dict().items()}, {}),
        )
        stop_reason, smoothed = self._optimize(stage)
        if stop_reason == "interrupted":
            self._save(stage)
            return False
        self.progress["autoencoder_done"] = True
        self.progress["autoencoder_loss"] = smoothed.get("loss")
        return True

    # -- goal localiser --------------------------------------------------------------------------
    def _train_goal(self, frames: TrainingFrames, text: np.ndarray, train: TrainConfig, rng: np.random.Generator) -> bool:
        """Train (or continue training) the hindsight goal localiser (goal.py); False when interrupted.

        After each attempt the localiser is checked on the episodes' first frames
        (:func:`first_grasp_error`); one that is not clearly better than always answering the mean
        position starts again from a fresh initialisation, at most ``goal_attempts`` times (also
        under ``--init --new-goal-localiser``). When finetuning (``--init``), the checkpoint's
        localiser trains on from its weights once, without
        the first-frames warm-up, and the result is kept unless its grasp and release errors at
        the subtasks' starts (:func:`subtask_start_goal_error`) are worse than the checkpoint's
        (a resumed finetune compares with the localiser it resumed from). The checks run on the
        held-out episodes (:meth:`_goal_holdout`) where there are any, else on the training ones.
        """
        held_out = self._goal_holdout(frames, train)
        if self._finetuning_goal():
            return self._finetune_goal(frames, text, train, rng, held_out)
        model, normalization = self.model, self.normalization
        checked_on = self._goal_checked_on(held_out)
        attempt = int(self.progress.get("goal_attempt", 1))
        while True:
            if not self._train_goal_attempt(frames, text, train, rng, held_out):
                return False
            error_m, baseline_m = first_grasp_error(model.goal.eval(), frames, normalization, text, self.accelerator.device, where=held_out)
            model.goal.train()
            accepted = error_m <= train.goal_accept_ratio * baseline_m
            self.progress["goal_checks"] = [*self.progress.get("goal_checks", []), {"attempt": attempt, "first_grasp_error_m": error_m,
                                                                                    "mean_position_error_m": baseline_m, "accepted": accepted,
                                                                                    "checked_on": checked_on}]
            self.say(f"[train] goal localiser, attempt {attempt} of {train.goal_attempts}: first grasps {100 * error_m:.1f} cm off on the "
                     f"{checked_on} (always the mean position: {100 * baseline_m:.1f} cm); "
                     + ("accepted" if accepted else f"above {train.goal_accept_ratio:g} of that"))
            if not accepted and attempt >= train.goal_attempts and self.accelerator.is_main_process:
                print(f"[train] WARNING: the goal localiser did not lock onto the object in {attempt} attempts; the policy will grasp "
                      "off the object. Train again with another --seed or more goal_steps.", file=sys.stderr)
            if accepted or attempt >= train.goal_attempts:
                self.progress["goal_done"] = True
                return True
            attempt += 1
            self.progress.update(goal_attempt=attempt, goal_step=0)
            torch.manual_seed(train.seed + 1009 * attempt)
            model.goal = GoalLocaliser(model.config.goal, model.config.transformer.text_dim)

    def _goal_holdout(self, frames: TrainingFrames, train: TrainConfig) -> np.ndarray | None:
        """Mask over the frames of the episodes the localiser is checked on and never trains on
        (None with fewer than ``goal_holdout_min_episodes`` episodes); drawn from the seed, so a
        resumed run holds out the same ones."""
        episodes = holdout_episodes(len(frames.episode_refs), train.goal_holdout_fraction, train.goal_holdout_min_episodes, train.seed)
        held_out = frames.in_episodes(episodes)
        if self._finetuning_goal():  # checked at the subtasks' starts, else at the first grasps
            checked = held_out[subtask_start_frames(frames)].any()
        else:
            checked = (held_out & (frames.frame_in_episode == 0) & frames.goal_valid[:, 0]).any()
        self.progress["goal_holdout_episodes"] = len(episodes) if checked else 0
        return held_out if checked else None  # None: nothing there to check on (too few episodes, or only action-free ones drawn)

    def _finetuning_goal(self) -> bool:
        """The checkpoint's localiser trains on (``--init``), rather than a fresh one from scratch."""
        return "init" in self.progress and not self.progress.get("new_goal_localiser")

    def _goal_checked_on(self, held_out: np.ndarray | None) -> str:
        count = self.progress["goal_holdout_episodes"]
        return "training episodes (none held out to check on)" if held_out is None else f"{count} held-out episodes"

    def _finetune_goal(self, frames: TrainingFrames, text: np.ndarray, train: TrainConfig, rng: np.random.Generator,
                       held_out: np.ndarray | None) -> bool:
        model, normalization, device = self.model, self.normalization, self.accelerator.device
        checked_on = self._goal_checked_on(held_out)
        initial = {k: v.detach().clone() for k, v in model.goal.state_dict().items()}
        before_m = subtask_start_goal_error(model.goal.eval(), frames, normalization, text, device, where=held_out)
        model.goal.train()
        if not self._train_goal_attempt(frames, text, dataclasses.replace(train, goal_warmup_steps=0), rng, held_out):
            return False
        error_m = subtask_start_goal_error(model.goal.eval(), frames, normalization, text, device, where=held_out)
        model.goal.train()
        kept = error_m <= before_m
        self.progress["goal_checks"] = [*self.progress.get("goal_checks", []), {
            "finetune": True, "subtask_start_error_before_m": before_m, "subtask_start_error_m": error_m, "accepted": kept,
            "checked_on": checked_on}]
        self.say(f"[train] goal localiser finetuned for {train.goal_steps} steps: grasps and releases {100 * error_m:.1f} cm off at the "
                 f"subtasks' starts of the {checked_on} ({100 * before_m:.1f} cm before); "
                 + ("kept" if kept else "worse, so the checkpoint's localiser is kept"))
        if not kept:
            model.goal.load_state_dict(initial)
        self.progress["goal_done"] = True
        return True

    def _train_goal_attempt(self, frames: TrainingFrames, text: np.ndarray, train: TrainConfig, rng: np.random.Generator,
                            held_out: np.ndarray | None) -> bool:
        """One run of the localiser's stage from ``progress["goal_step"]``; False when interrupted.

        The first ``goal_warmup_steps`` draw only from the first ``goal_warmup_frames`` frames of
        each episode, the rest from every labelled frame; never from the ``held_out`` frames.
        """
        accelerator, model, normalization = self.accelerator, self.model, self.normalization
        labelled = frames.goal_valid.any(1) & (True if held_out is None else ~held_out)
        everywhere = np.flatnonzero(labelled)
        early = np.flatnonzero(labelled & (frames.frame_in_episode < train.goal_warmup_frames))
        if len(everywhere) == 0:
            raise DatasetError("the goal localiser needs episodes with gripper commands (a grasp or a release); these have none")
        model.goal.set_label_scale(torch.from_numpy(normalization.goal_mean), torch.from_numpy(normalization.goal_std))
        optimizer = torch.optim.AdamW(model.goal.parameters(), lr=train.goal_learning_rate, weight_decay=0.0)
        self._resumed("goal", optimizer)
        objective, optimizer = accelerator.prepare(model.goal, optimizer)
        embeddings = torch.from_numpy(normalization.normalize_text(text.astype(np.float32)))
        targets = torch.from_numpy(normalization.normalize_goal(frames.goal_labels).astype(np.float32))
        augment = ImageAugmentation(train.goal_augment_shift_px, train.goal_augment_colour)
        valid = torch.from_numpy(frames.goal_valid)

        def first_frames(batch_index: int) -> bool:
            return batch_index < train.goal_warmup_steps and len(early) > 0

        def loss(batch_index: int) -> tuple[torch.Tensor, dict[str, float]]:
            pool = early if first_frames(batch_index) else everywhere
            anchors = pool[rng.integers(0, len(pool), train.goal_batch_size)]
            instruction, _ = frames.instructions_of(anchors, rng.random(len(anchors)) < model.config.subtask_instruction_prob)
            device = accelerator.device
            with accelerator.autocast():
                cameras = goal_cameras(frames, anchors)
                prediction = objective(goal_pixels(frames, anchors, augment, rng).to(device), embeddings[torch.from_numpy(instruction)].to(device),
                                       None if cameras is None else cameras.to(device))
                value = goal_loss(prediction.float(), targets[anchors].to(device), valid[anchors].to(device))
            return value, {"loss": value.item()}

        def put_back() -> None:
            model.goal = accelerator.unwrap_model(objective)

        stage = Stage(
            name="goal", label="goal localiser", steps=train.goal_steps, network=objective, optimizer=optimizer,
            schedule=_short_schedule(train, train.goal_learning_rate, train.goal_steps), loss=loss, loss_smoothing=0.05,
            postfix=lambda batch_index, smoothed, _: {"loss": f"{smoothed['loss']:.4f}", "phase": "first frames" if first_frames(batch_index) else "all frames"},
            checkpoint=True, put_back=put_back,
        )
        stop_reason, smoothed = self._optimize(stage)
        if stop_reason == "interrupted":
            self._save(stage)
            return False
        put_back()
        self.progress["goal_loss"] = smoothed.get("loss")
        return True

    # -- transformer -----------------------------------------------------------------------------
    def _train_transformer(self, sampler: WindowSampler, train: TrainConfig) -> None:
        accelerator, model, o = self.accelerator, self.model, self.options
        optimizer = torch.optim.AdamW(model.transformer.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay, betas=(0.9, 0.99))
        resumed = self._resumed("transformer", optimizer)
        if resumed is not None:
            extra, saved = resumed
            sampler.rng.bit_generator.state = saved["numpy_rng"]
            torch.set_rng_state(extra["torch_rng"])
        network, optimizer = accelerator.prepare(model.transformer, optimizer)
        n_policy, _ = split_batch(train.batch_size, model.config.diffusion)
        if len(sampler.frames.action_frames) == 0:
            n_policy = 0

        def loss(batch_index: int) -> tuple[torch.Tensor, dict[str, float]]:
            parts_of_batch = []
            if n_policy:
                parts_of_batch.append(sampler.sample(n_policy, labelled_only=True))
            if n_policy < train.batch_size:
                parts_of_batch.append(sampler.sample(train.batch_size - n_policy, labelled_only=False))
            batch = _concat(parts_of_batch).to(accelerator.device)
            with accelerator.autocast():
                parts = training_loss(network, batch, n_policy, model.config, sampler.rng)
            return parts.total, {"action": parts.action, "future": parts.future, "progress": parts.progress}

        def postfix(batch_index: int, smoothed: dict[str, float], seconds: float) -> dict[str, str]:
            return {
                "act": f"{smoothed['action']:.3f}",
                "fut": f"{smoothed['future']:.3f}",
                "prog": f"{smoothed['progress']:.3f}",
                "samples_s": f"{train.batch_size * accelerator.num_processes / max(seconds, 1e-9):.0f}",
                "cpu_min": f"{self.cpu_used_s() / 60:.1f}",
            }

        def put_back() -> None:
            model.transformer = accelerator.unwrap_model(network)

        stage = Stage(
            name="transformer", label="transformer", steps=train.steps, network=network, optimizer=optimizer, schedule=train, loss=loss,
            loss_smoothing=0.03, postfix=postfix, checkpoint=True, put_back=put_back,
            resume_extras=lambda: ({"torch_rng": torch.get_rng_state()}, {"numpy_rng": sampler.rng.bit_generator.state}),
            grad_clip=train.grad_clip, checkpoint_every=train.checkpoint_every, cpu_budget=True,
        )
        self.progress["finished"] = False  # until this last stage ends by its steps or the CPU budget
        stop_reason, smoothed = self._optimize(stage)
        self.progress.update(stop_reason=stop_reason, losses=smoothed, finished=stop_reason != "interrupted")
        self._save(stage)
        self.say(
            f"[train] saved {o.out} at step {self.progress['transformer_step']} ({stop_reason}); {self.cpu_used_s() / 60:.1f} CPU-minutes in all; "
            f"losses {', '.join(f'{k} {v:.4f}' for k, v in smoothed.items())}"
        )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _concat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(**{name: torch.cat([getattr(b, name) for b in batches]) for name in batches[0].__dict__})
