"""Training data: episode datasets -> cached latents, normalisation, batches of training windows.

A window is anchored at frame ``t`` of an episode:

* observation: frames ``t - k * obs_frame_stride`` (k < n_obs_frames; clamped at the start);
* actions: rows ``t .. t + horizon - 1`` (the target commanded at those frames; past the end
  of the episode the last row repeats: the arm holds);
* future: the frame ``t + future_offset`` (clamped at the end), predicted as a residual from
  the current frame's latent;
* instruction: the episode's, or (with ``subtask_instruction_prob``) the subtask's active at ``t``;
* progress: how far the future frame is through that instruction's span, in [0, 1] (not
  trained on episodes marked as failed).

Actions are represented by the model's action codec (``actions.py``: joint targets relative to
the joint positions, or TCP poses relative to the TCP pose; the gripper stays absolute) and
standardised per chunk position and dimension, so every number the network predicts has unit
scale.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from wam_ros.data import DatasetError, DatasetInfo, EpisodeDataset
from wam_ros.data.episodes import SOURCE_DEMO, SOURCE_HOLD, SOURCE_POLICY
from wam_ros.model.actions import ArmModel, make_action_codec
from wam_ros.model.autoencoder import images_to_tensor
from wam_ros.model.camera import recorded_camera
from wam_ros.model.config import WamConfig
from wam_ros.model.goal import GOAL_DIM, PICK, PLACE, HindsightGoals, goal_features, goal_statistics
from wam_ros.robot import load_robot_config

STD_FLOOR = 1e-3


@dataclass
class Normalization:
    """Statistics that map raw numbers to the network's unit-scale inputs and back."""

    state_mean: np.ndarray  # (S,)
    state_std: np.ndarray  # (S,)
    action_mean: np.ndarray  # (horizon, D): of the chunk representation (actions.py)
    action_std: np.ndarray  # (horizon, D)
    latent_mean: np.ndarray  # (C,)
    latent_std: np.ndarray  # (C,)
    residual_std: np.ndarray  # (C,): of (future - current) normalised latents
    relative_action_dims: list[int]
    # Instruction embeddings are centred on the training instructions' mean and rescaled: sentences
    # such as "put the red/green/blue cube in the bin" have MiniLM cosine similarity ~0.84, and
    # what tells them apart is the small remainder. Identity (0, 1) for checkpoints without it.
    text_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (text_dim,) or empty
    text_scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))  # (1,)
    # Hindsight goal labels (goal.py) in metres -> unit scale; empty when the model has no localiser.
    goal_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (GOAL_DIM,)
    goal_std: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (GOAL_DIM,)

    def to_json(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Normalization":
        arrays = {k: np.asarray(v, np.float32) for k, v in data.items() if k != "relative_action_dims"}
        return cls(**arrays, relative_action_dims=[int(i) for i in data["relative_action_dims"]])

    def normalize_text(self, embeddings: Any) -> Any:
        """(..., text_dim) MiniLM embeddings -> centred and rescaled network input."""
        if self.text_mean.size == 0:
            return embeddings
        return (embeddings - _like(self.text_mean, embeddings)) * _like(self.text_scale, embeddings)

    def check(self, config: WamConfig) -> None:
        """Raise ValueError when the statistics do not fit the model's shapes."""
        expected = {
            "state_mean": (config.state_dim,),
            "state_std": (config.state_dim,),
            "action_mean": (config.horizon, config.action_representation_dim),
            "action_std": (config.horizon, config.action_representation_dim),
            "latent_mean": (config.autoencoder.latent_channels,),
            "latent_std": (config.autoencoder.latent_channels,),
            "residual_std": (config.autoencoder.latent_channels,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise ValueError(f"normalisation {name} has shape {value.shape}, the model needs {shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"normalisation {name} holds non-finite values")
        if self.text_mean.size not in (0, config.transformer.text_dim) or self.text_scale.shape != (1,):
            raise ValueError(f"normalisation text_mean/text_scale have shapes {self.text_mean.shape}/{self.text_scale.shape}, the model needs ({config.transformer.text_dim},)/(1,)")
        goal_shape = (GOAL_DIM,) if config.goal.camera else (0,)
        if self.goal_mean.shape != goal_shape or self.goal_std.shape != goal_shape or not np.all(np.isfinite(self.goal_std)):
            raise ValueError(f"normalisation goal_mean/goal_std have shapes {self.goal_mean.shape}/{self.goal_std.shape}, the model needs {goal_shape}")
        if self.relative_action_dims != list(config.relative_action_dims):
            raise ValueError(f"normalisation relative_action_dims {self.relative_action_dims} != model's {config.relative_action_dims}")

    # -- conversions (numpy or torch, any leading shape) ------------------------------------------
    def normalize_goal(self, goal: Any) -> Any:
        return (goal - _like(self.goal_mean, goal)) / _like(self.goal_std, goal)

    def denormalize_goal(self, goal: Any) -> Any:
        return goal * _like(self.goal_std, goal) + _like(self.goal_mean, goal)

    def normalize_state(self, state: Any) -> Any:
        return (state - _like(self.state_mean, state)) / _like(self.state_std, state)

    def standardize_actions(self, representation: Any) -> Any:
        """Chunk representation (..., horizon, D) -> unit scale."""
        horizon = representation.shape[-2]
        return (representation - _like(self.action_mean[:horizon], representation)) / _like(self.action_std[:horizon], representation)

    def unstandardize_actions(self, normalized: Any) -> Any:
        horizon = normalized.shape[-2]
        return normalized * _like(self.action_std[:horizon], normalized) + _like(self.action_mean[:horizon], normalized)

    def normalize_latents(self, latents: Any) -> Any:
        """(..., C, h, w) raw autoencoder latents -> unit scale."""
        return (latents - _like(self.latent_mean, latents)[:, None, None]) / _like(self.latent_std, latents)[:, None, None]

    def denormalize_latents(self, latents: Any) -> Any:
        return latents * _like(self.latent_std, latents)[:, None, None] + _like(self.latent_mean, latents)[:, None, None]

    def residual_scale(self, like: Any) -> Any:
        """(C, 1, 1) scale of the future-minus-current residual."""
        return _like(self.residual_std, like)[:, None, None]


def resize_frames(frames: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, h, w, 3) with area averaging; a writable copy either way."""
    if frames.shape[1:3] == tuple(size_hw):
        return np.array(frames, copy=True)
    import cv2

    return np.stack([cv2.resize(frame, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA) for frame in frames])


def _like(array: np.ndarray, reference: Any) -> Any:
    if isinstance(reference, torch.Tensor):
        return torch.as_tensor(array, dtype=reference.dtype, device=reference.device)
    return array


def _dataset_fingerprint(datasets: list[EpisodeDataset]) -> str:
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(str(dataset.root.resolve()).encode())
        digest.update((dataset.root / "meta" / "episodes.jsonl").read_bytes() if (dataset.root / "meta" / "episodes.jsonl").exists() else b"")
    return digest.hexdigest()[:16]


def open_datasets(roots: Iterable[Path | str]) -> tuple[list[EpisodeDataset], DatasetInfo]:
    """Open every dataset; they must share the robot, fps, cameras, image sizes and state/action names."""
    datasets = [EpisodeDataset(root) for root in roots]
    if not datasets:
        raise DatasetError("no dataset given")
    info = datasets[0].info
    for dataset in datasets[1:]:
        other = dataset.info
        if (other.robot, other.fps, other.cameras, other.state_names, other.action_names) != (info.robot, info.fps, info.cameras, info.state_names, info.action_names):
            raise DatasetError(f"{dataset.root}: robot, fps, cameras or state/action names differ from {datasets[0].root}")
    if not any(len(d) for d in datasets):
        raise DatasetError(f"{', '.join(str(d.root) for d in datasets)}: no episodes")
    return datasets, info


def common_image_size(info: DatasetInfo) -> tuple[int, int]:
    sizes = set(info.cameras.values())
    if len(sizes) != 1:
        raise DatasetError(f"cameras have different sizes {info.cameras}; the model needs one common size")
    return sizes.pop()


class TrainingFrames:
    """Every frame of the datasets as flat arrays indexed by a global frame number."""

    def __init__(self, datasets: list[EpisodeDataset], config: WamConfig) -> None:
        self.datasets = datasets
        self.config = config
        self.fingerprint = _dataset_fingerprint(datasets)
        states, actions, has_actions, episode_start, episode_end = [], [], [], [], []
        span_start, span_end, episode_text, subtask_text, ok, sources, intervention = [], [], [], [], [], [], []
        self.instructions: list[str] = []
        self.episode_refs: list[tuple[int, int, int]] = []  # (dataset, episode, first global frame)
        text_index: dict[str, int] = {}
        cameras: list[np.ndarray] = []  # per episode, the goal camera's calibration (calibrated localisers)
        robots = [load_robot_config(dataset.info.robot) for dataset in datasets] if config.goal.calibrated else []

        def text_id(text: str) -> int:
            if text not in text_index:
                text_index[text] = len(self.instructions)
                self.instructions.append(text)
            return text_index[text]

        offset = 0
        for d, dataset in enumerate(datasets):
            for e in range(len(dataset)):
                episode = dataset.episode(e, load_images=False)
                t = episode.length
                self.episode_refs.append((d, e, offset))
                states.append(episode.states)
                actions.append(episode.actions if episode.actions is not None else np.full((t, len(dataset.info.action_names)), np.nan, np.float32))
                has_actions.append(np.full(t, episode.actions is not None))
                episode_start.append(np.full(t, offset))
                episode_end.append(np.full(t, offset + t))
                episode_text.append(np.full(t, text_id(episode.instruction)))
                sub_text, sub_start, sub_end = np.full(t, -1), np.full(t, offset), np.full(t, offset + t)
                for span in episode.subtasks:
                    sub_text[span.start : span.end] = text_id(span.instruction)
                    sub_start[span.start : span.end] = offset + span.start
                    sub_end[span.start : span.end] = offset + span.end
                subtask_text.append(sub_text)
                span_start.append(sub_start)
                span_end.append(sub_end)
                ok.append(np.full(t, episode.success is not False))
                sources.append(episode.frame_sources if episode.frame_sources is not None else np.full(t, SOURCE_DEMO, np.int8))
                intervention.append(episode.intervention if episode.intervention is not None else np.zeros(t, bool))
                if robots:
                    cameras.append(np.repeat(recorded_camera(robots[d], config.goal.camera, episode).vector()[None], t, axis=0))
                offset += t
        self.num_frames = offset
        self.episode_first_frame = np.array([ref[2] for ref in self.episode_refs])
        self._images: dict[int, dict[str, np.ndarray]] = {}
        self.states = np.concatenate(states).astype(np.float32)
        self.actions = np.concatenate(actions).astype(np.float32)
        self.has_actions = np.concatenate(has_actions)
        self.episode_start = np.concatenate(episode_start)
        self.episode_end = np.concatenate(episode_end)
        self.episode_text = np.concatenate(episode_text)
        self.subtask_text = np.concatenate(subtask_text)
        self.subtask_start = np.concatenate(span_start)
        self.subtask_end = np.concatenate(span_end)
        self.progress_ok = np.concatenate(ok)
        self.sources = np.concatenate(sources).astype(np.int8)  # wam_ros.data.episodes.SOURCES codes
        self.intervention = np.concatenate(intervention)
        self.action_frames = np.flatnonzero(self.has_actions)
        self.frame_in_episode = np.arange(self.num_frames) - self.episode_start
        self.codec = make_action_codec(config)
        # Where the TCP is at every frame (forward kinematics), for the goal token's offsets.
        self.tcp_positions = ArmModel(config.robot, config.state_names, config.action_names).state_tcp(self.states)[0].astype(np.float32) if config.goal.camera else None
        self.goal_labels = np.zeros((self.num_frames, GOAL_DIM), np.float32)  # hindsight goals (goal.py), metres
        self.goal_valid = np.zeros((self.num_frames, 2), bool)  # (pick, place) label exists
        # (N, CAMERA_VECTOR_DIM) the goal camera's calibration at every frame; None unless the localiser is calibrated
        self.goal_cameras = np.concatenate(cameras).astype(np.float32) if cameras else None
        if config.goal.camera:
            labellers = [HindsightGoals(dataset.info, config) for dataset in datasets]
            for index, (d, _, first) in enumerate(self.episode_refs):
                end = self.episode_end[first]
                actions = self.actions[first:end] if self.has_actions[first] else None
                self.goal_labels[first:end], self.goal_valid[first:end] = labellers[d].episode(self.states[first:end], actions, self.subtask_end[first:end] - first)
        if self.states.shape[1] != config.state_dim or self.actions.shape[1] != config.action_dim:
            raise DatasetError(f"dataset has state/action dims {self.states.shape[1]}/{self.actions.shape[1]}, the model needs {config.state_dim}/{config.action_dim}")

    def policy_weights(self, operator_weight: float, policy_weight: float) -> np.ndarray | None:
        """How often each frame anchors a policy sample, relative to a demonstration frame (HG-DAgger
        style): ``operator_weight`` for interventions (TELEOP after AUTONOMY), ``policy_weight`` for
        frames the policy drove in recorded episodes, 0 for frames nobody drove (HOLD, IDLE) and for
        frames without actions, 1 for everything else. None when that weighs every labelled frame
        alike (the uniform draw, as without any recorded autonomy)."""
        if operator_weight < 0 or policy_weight < 0:
            raise ValueError(f"frame weights must not be negative (operator {operator_weight}, policy {policy_weight})")
        weights = np.ones(self.num_frames)
        weights[self.sources == SOURCE_POLICY] = policy_weight
        weights[self.sources == SOURCE_HOLD] = 0.0
        weights[self.intervention] = operator_weight
        weights[~self.has_actions] = 0.0
        labelled = weights[self.action_frames]
        if len(labelled) and np.all(labelled == 1.0):
            return None
        if not np.any(labelled > 0):
            raise DatasetError("every labelled frame has weight 0 (policy and hold frames only, --policy-weight 0): nothing to learn actions from")
        return weights

    # -- images ----------------------------------------------------------------------------------
    def in_episodes(self, episodes: np.ndarray) -> np.ndarray:
        """A mask over all frames: True for the frames of the given episodes (indices into ``episode_refs``)."""
        episode_of_frame = np.searchsorted(self.episode_first_frame, np.arange(self.num_frames), side="right") - 1
        return np.isin(episode_of_frame, episodes)

    def images(self, frames: np.ndarray, camera: str) -> np.ndarray:
        """uint8 (len(frames), H, W, 3) for global frame numbers (any order)."""
        episode_of = np.searchsorted(self.episode_first_frame, frames, side="right") - 1
        out = np.empty((len(frames), self.config.image_height, self.config.image_width, 3), np.uint8)
        for index in np.unique(episode_of):
            rows = np.flatnonzero(episode_of == index)
            stored = self.episode_images(int(index))[camera]
            out[rows] = resize_frames(np.asarray(stored[frames[rows] - self.episode_refs[index][2]]), out.shape[1:3])
        return out

    def episode_images(self, index: int) -> dict[str, np.ndarray]:
        """Memory-mapped frames of one episode (opened once)."""
        if index not in self._images:
            d, e, _ = self.episode_refs[index]
            self._images[index] = self.datasets[d].episode(e).images
        return self._images[index]

    def encode_all(self, autoencoder: torch.nn.Module, cache_dir: Path | None, weights_key: str, batch_size: int = 256) -> torch.Tensor:
        """Raw latents (num_frames, cameras, C, h, w) of every frame, cached on disk per autoencoder."""
        key = f"latents-{self.fingerprint}-{weights_key}"
        if cache_dir is not None:
            path = cache_dir / f"{key}.npy"
            if path.is_file():
                cached = np.load(path)
                if cached.shape[0] == self.num_frames:
                    return torch.from_numpy(cached)
        h, w = self.config.latent_hw
        out = np.empty((self.num_frames, len(self.config.cameras), self.config.autoencoder.latent_channels, h, w), np.float32)
        device = next(autoencoder.parameters()).device
        with torch.inference_mode(), tqdm(total=self.num_frames * len(self.config.cameras), desc="encoding frames", unit="img") as bar:
            for index, (_, _, first) in enumerate(self.episode_refs):
                images = self.episode_images(index)
                for c, camera in enumerate(self.config.cameras):
                    frames = images[camera]
                    for start in range(0, len(frames), batch_size):
                        pixels = resize_frames(np.asarray(frames[start : start + batch_size]), (self.config.image_height, self.config.image_width))
                        chunk = torch.from_numpy(pixels).to(device)
                        out[first + start : first + start + len(chunk), c] = autoencoder.encode(images_to_tensor(chunk)).float().cpu().numpy()
                        bar.update(len(chunk))
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f"{key}.npy.tmp"
            with open(tmp, "wb") as stream:
                np.save(stream, out)
            tmp.replace(cache_dir / f"{key}.npy")
        return torch.from_numpy(out)

    def small_frames(self, size: int) -> torch.Tensor:
        """uint8 (num_frames, cameras, size, size, 3): every frame resized for the keypoint encoder,
        held in memory (a few hundred MB for 200 demos at 64x64)."""
        out = np.empty((self.num_frames, len(self.config.cameras), size, size, 3), np.uint8)
        with tqdm(total=len(self.episode_refs), desc=f"frames at {size}x{size}", unit="episode") as bar:
            for index, (_, _, first) in enumerate(self.episode_refs):
                images = self.episode_images(index)
                for c, camera in enumerate(self.config.cameras):
                    frames = resize_frames(np.asarray(images[camera]), (self.config.image_height, self.config.image_width))
                    out[first : first + len(frames), c] = resize_frames(frames, (size, size))  # as the runtime does
                bar.update(1)
        return torch.from_numpy(out)

    # -- windows ---------------------------------------------------------------------------------
    def observation_frames(self, anchors: np.ndarray) -> np.ndarray:
        """(B, n_obs_frames) global frame numbers, oldest first."""
        back = self.config.obs_frame_stride * np.arange(self.config.n_obs_frames - 1, -1, -1)
        return np.maximum(anchors[:, None] - back[None, :], self.episode_start[anchors][:, None])

    def chunk_frames(self, anchors: np.ndarray) -> np.ndarray:
        """(B, horizon) global frame numbers of the action chunk."""
        return np.minimum(anchors[:, None] + np.arange(self.config.horizon)[None, :], self.episode_end[anchors][:, None] - 1)

    def future_frames(self, anchors: np.ndarray) -> np.ndarray:
        return np.minimum(anchors + self.config.future_offset, self.episode_end[anchors] - 1)

    def instructions_of(self, anchors: np.ndarray, use_subtask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instruction index per anchor, and whether it is the subtask's (asked for and one is active)."""
        subtask = use_subtask & (self.subtask_text[anchors] >= 0)
        return np.where(subtask, self.subtask_text[anchors], self.episode_text[anchors]), subtask

    def instruction_and_progress(self, anchors: np.ndarray, use_subtask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instruction index and progress target of the future frame, per anchor."""
        future = self.future_frames(anchors)
        text, subtask = self.instructions_of(anchors, use_subtask)
        start = np.where(subtask, self.subtask_start[anchors], self.episode_start[anchors])
        end = np.where(subtask, self.subtask_end[anchors], self.episode_end[anchors])
        progress = np.clip((future - start) / np.maximum(end - 1 - start, 1), 0.0, 1.0)
        return text, progress.astype(np.float32)

    def action_chunk_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale (horizon, D) of the chunk representation over every labelled frame."""
        anchors = self.action_frames
        if len(anchors) == 0:
            raise DatasetError("no episode has actions: a policy cannot be trained (video-only data needs --init)")
        chunks = self.codec.encode(self.actions[self.chunk_frames(anchors)], self.states[anchors])
        mean = chunks.mean(0)
        std = np.empty_like(mean)
        for group in self.codec.groups:  # one scale per chunk row for the dimensions of a group (actions.py)
            std[:, group] = np.sqrt(chunks[:, :, group].var(0).mean(1, keepdims=True))
        return mean, np.maximum(std, STD_FLOOR)


def text_statistics(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the training instructions' embeddings and the scale that gives the centred ones unit
    RMS per dimension (norm sqrt(text_dim)), the scale of every other network input (standardised
    state, latents, actions). At unit *norm* (0.05 per dimension) the instruction was drowned by
    the other inputs: a checkpoint trained so gave the same chunk for every colour (measured)."""
    mean = embeddings.mean(0)
    rms = float(np.sqrt(np.mean((embeddings - mean) ** 2)))
    return mean.astype(np.float32), np.array([1.0 / rms if rms > 1e-6 else 1.0], np.float32)


def compute_normalization(frames: TrainingFrames, latents: torch.Tensor, text_embeddings: np.ndarray) -> Normalization:
    """Statistics of states, action chunks, latents (raw, (N, cameras, C, h, w)) and instruction
    embeddings (one row per ``frames.instructions``)."""
    action_mean, action_std = frames.action_chunk_statistics()
    per_channel = latents.transpose(0, 2).reshape(latents.shape[2], -1)
    latent_mean = per_channel.mean(1).numpy()
    latent_std = np.maximum(per_channel.std(1).numpy(), STD_FLOOR)
    stats = Normalization(
        state_mean=frames.states.mean(0),
        state_std=np.maximum(frames.states.std(0), STD_FLOOR),
        action_mean=action_mean.astype(np.float32),
        action_std=action_std.astype(np.float32),
        latent_mean=latent_mean.astype(np.float32),
        latent_std=latent_std.astype(np.float32),
        residual_std=np.ones(latents.shape[2], np.float32),
        relative_action_dims=list(frames.config.relative_action_dims),
    )
    stats.text_mean, stats.text_scale = text_statistics(text_embeddings)
    if frames.config.goal.camera:
        stats.goal_mean, stats.goal_std = goal_statistics(frames.goal_labels, frames.goal_valid)
    normalized = stats.normalize_latents(latents)
    anchors = np.arange(frames.num_frames)
    residual = normalized[frames.future_frames(anchors)] - normalized
    stats.residual_std = np.maximum(residual.transpose(0, 2).reshape(latents.shape[2], -1).std(1).numpy(), STD_FLOOR).astype(np.float32)
    return stats


@dataclass
class Batch:
    """One batch of windows, everything normalised, on the training device."""

    context_latents: torch.Tensor  # (B, n_obs_frames, cameras, C, h, w)
    context_pixels: torch.Tensor  # uint8 (B, n_obs_frames, cameras, s, s, 3) for the keypoint encoder; (B, 0) when it is off
    state: torch.Tensor  # (B, n_obs_frames, S)
    text: torch.Tensor  # (B, text_dim)
    actions: torch.Tensor  # (B, horizon, A) (zeros where has_actions is false)
    has_actions: torch.Tensor  # (B,) bool
    future_residual: torch.Tensor  # (B, cameras, C, h, w)
    progress: torch.Tensor  # (B,)
    progress_ok: torch.Tensor  # (B,) bool
    goal: torch.Tensor  # (B, GOAL_FEATURES) the goal token's input (goal.goal_features); (B, 0) without a localiser

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})


def keypoint_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., s, s, 3) frames -> float (..., 3, s, s) in [-1, 1], the keypoint encoder's input."""
    return images_to_tensor(pixels.flatten(0, -4)).view(*pixels.shape[:-3], 3, *pixels.shape[-3:-1])


class WindowSampler:
    """Draws random training windows; ``latents`` normalised (N, cameras, C, h, w); ``pixels``
    (:meth:`TrainingFrames.small_frames`) when the model has a keypoint encoder; ``goals``
    (N, 2, GOAL_DIM), the goal localiser's normalised prediction for every frame with the
    episode's (0) and the subtask's (1) instruction, when it has one; ``policy_weights``
    (:meth:`TrainingFrames.policy_weights`) weigh the anchors of policy samples, else uniform."""

    def __init__(
        self,
        frames: TrainingFrames,
        latents: torch.Tensor,
        stats: Normalization,
        text_embeddings: np.ndarray,
        rng: np.random.Generator,
        pixels: torch.Tensor | None = None,
        goals: torch.Tensor | None = None,
        policy_weights: np.ndarray | None = None,
    ) -> None:
        self.frames = frames
        self.policy_p = None if policy_weights is None else policy_weights / policy_weights.sum()
        self.latents = latents
        self.pixels = pixels
        self.goals = goals
        self.goal_mean, self.goal_std = torch.from_numpy(stats.goal_mean), torch.from_numpy(stats.goal_std)
        self.stats = stats
        self.text = torch.from_numpy(stats.normalize_text(text_embeddings.astype(np.float32)))
        self.rng = rng
        self.noise = frames.config.context_noise_std

    def sample(self, size: int, labelled_only: bool) -> Batch:
        if labelled_only and self.policy_p is not None:
            return self.windows(self.rng.choice(self.frames.num_frames, size, p=self.policy_p))
        pool = self.frames.action_frames if labelled_only else None
        anchors = pool[self.rng.integers(0, len(pool), size)] if pool is not None else self.rng.integers(0, self.frames.num_frames, size)
        return self.windows(anchors)

    def windows(self, anchors: np.ndarray, use_subtask: np.ndarray | None = None) -> Batch:
        frames, config = self.frames, self.frames.config
        if use_subtask is None:
            use_subtask = self.rng.random(len(anchors)) < config.subtask_instruction_prob
        observed = frames.observation_frames(anchors)
        context = self.latents[torch.from_numpy(observed)]
        if self.noise > 0:
            context = context + self.noise * torch.from_numpy(self.rng.standard_normal(context.shape).astype(np.float32))
        current = self.latents[torch.from_numpy(anchors)]
        future = self.latents[torch.from_numpy(frames.future_frames(anchors))]
        residual = (future - current) / self.stats.residual_scale(future)
        state_now = frames.states[anchors]
        chunk = frames.actions[frames.chunk_frames(anchors)]
        has_actions = frames.has_actions[anchors]
        encoded = self.stats.standardize_actions(frames.codec.encode(np.nan_to_num(chunk), state_now))
        actions = np.where(has_actions[:, None, None], encoded, 0.0).astype(np.float32)
        text, progress = frames.instruction_and_progress(anchors, use_subtask)
        pixels = self.pixels[torch.from_numpy(observed)] if self.pixels is not None else torch.zeros(len(anchors), 0, dtype=torch.uint8)
        if self.goals is not None:
            _, subtask = frames.instructions_of(anchors, use_subtask)
            predicted = self.goals[torch.from_numpy(anchors), torch.from_numpy(subtask.astype(np.int64))]
            goal = goal_features(predicted, torch.from_numpy(frames.tcp_positions[anchors]), self.goal_mean, self.goal_std)
        else:
            goal = torch.zeros(len(anchors), 0)
        return Batch(
            context_latents=context,
            context_pixels=pixels,
            state=torch.from_numpy(self.stats.normalize_state(frames.states[observed]).astype(np.float32)),
            text=self.text[torch.from_numpy(text)],
            actions=torch.from_numpy(actions),
            has_actions=torch.from_numpy(has_actions),
            future_residual=residual,
            progress=torch.from_numpy(progress),
            progress_ok=torch.from_numpy(frames.progress_ok[anchors]),
            goal=goal,
        )


def goal_cameras(frames: TrainingFrames, anchors: np.ndarray) -> torch.Tensor | None:
    """(B, CAMERA_VECTOR_DIM) the goal camera's calibration at ``anchors``; None unless the localiser is calibrated."""
    return None if frames.goal_cameras is None else torch.from_numpy(frames.goal_cameras[anchors])


def goal_pixels(frames: TrainingFrames, anchors: np.ndarray, augment: ImageAugmentation | None = None,
                rng: np.random.Generator | None = None) -> torch.Tensor:
    """The goal camera's frames at ``anchors``, as the goal localiser takes them: (B, 3, s, s) in
    [-1, 1]; with ``augment`` (and ``rng``), randomly shifted and recoloured (training only)."""
    goal = frames.config.goal
    images = images_to_tensor(torch.from_numpy(resize_frames(frames.images(anchors, goal.camera), (goal.image_size, goal.image_size))))
    if augment is not None and augment.active:
        assert rng is not None
        images = augment(images, rng)
    return images


@dataclass(frozen=True)
class ImageAugmentation:
    """Random image changes a static camera meets on a real stand (training only, DrQ-style).

    ``shift_px``: a translation of up to this many pixels per axis (a replicate-padded crop), what
    a few millimetres and a degree of camera motion do to a 96x96 frame; ``colour``: brightness
    offset and contrast scale up to +-``colour`` and a per-channel gain up to +-``colour`` / 2,
    in units of the [-1, 1] pixel range. The labels stay the same: the localiser has to find the
    object relative to the scene, not at a fixed pixel.
    """

    shift_px: int = 0
    colour: float = 0.0

    @property
    def active(self) -> bool:
        return self.shift_px > 0 or self.colour > 0

    def __call__(self, pixels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(B, 3, s, s) in [-1, 1] -> the same shape, each image changed on its own."""
        b, _, h, w = pixels.shape
        if self.shift_px > 0:
            k = self.shift_px
            padded = torch.nn.functional.pad(pixels, (k, k, k, k), mode="replicate")
            dy, dx = rng.integers(0, 2 * k + 1, b), rng.integers(0, 2 * k + 1, b)
            pixels = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
        if self.colour > 0:
            c = self.colour
            offset = torch.from_numpy(rng.uniform(-c, c, (b, 1, 1, 1)).astype(np.float32))
            contrast = torch.from_numpy(rng.uniform(1 - c, 1 + c, (b, 1, 1, 1)).astype(np.float32))
            gain = torch.from_numpy(rng.uniform(1 - c / 2, 1 + c / 2, (b, 3, 1, 1)).astype(np.float32))
            mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
            pixels = (((pixels - mean) * contrast + mean) * gain + offset).clamp(-1.0, 1.0)
        return pixels


def predict_goals(localiser: torch.nn.Module, frames: TrainingFrames, stats: Normalization, text_embeddings: np.ndarray,
                  device: torch.device | str = "cpu", batch_size: int = 256, augment: ImageAugmentation | None = None,
                  rng: np.random.Generator | None = None) -> torch.Tensor:
    """(N, 2, GOAL_DIM) normalised predictions for every frame, with the episode's (0) and the
    active subtask's (1) instruction (the episode's where no subtask is active); with ``augment``,
    each frame seen once through a random augmentation (the transformer then trains on goals with
    the errors a moved or recoloured camera gives, not on the localiser's near-perfect answers on
    its own training frames)."""
    text = torch.from_numpy(stats.normalize_text(text_embeddings.astype(np.float32)))
    out = torch.empty(frames.num_frames, 2, GOAL_DIM)
    with torch.inference_mode(), tqdm(total=frames.num_frames, desc="goal predictions", unit="frame") as bar:
        for start in range(0, frames.num_frames, batch_size):
            anchors = np.arange(start, min(start + batch_size, frames.num_frames))
            pixels = goal_pixels(frames, anchors, augment, rng).to(device)
            cameras = _to(goal_cameras(frames, anchors), device)
            episode, _ = frames.instructions_of(anchors, np.zeros(len(anchors), bool))
            subtask, _ = frames.instructions_of(anchors, np.ones(len(anchors), bool))
            out[anchors, 0] = localiser(pixels, text[torch.from_numpy(episode)].to(device), cameras).float().cpu()
            out[anchors, 1] = out[anchors, 0]
            differs = np.flatnonzero(subtask != episode)  # a single-subtask episode's instructions are one
            if len(differs):
                rows = torch.from_numpy(differs)
                out[anchors[differs], 1] = localiser(pixels[rows], text[torch.from_numpy(subtask[differs])].to(device), None if cameras is None else cameras[rows]).float().cpu()
            bar.update(len(anchors))
    return out


def subtask_goals(localiser: torch.nn.Module, frames: TrainingFrames, stats: Normalization, text_embeddings: np.ndarray,
                  anchors: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 256) -> np.ndarray:
    """(len(anchors), GOAL_DIM) goals in label units [m] at ``anchors``, each with its active
    subtask's instruction (what the planner gives the model), else its episode's."""
    text = torch.from_numpy(stats.normalize_text(text_embeddings.astype(np.float32)))
    instruction, _ = frames.instructions_of(anchors, np.ones(len(anchors), bool))
    predicted = np.empty((len(anchors), GOAL_DIM), np.float32)
    with torch.inference_mode():
        for start in range(0, len(anchors), batch_size):
            rows = slice(start, start + batch_size)
            pixels = goal_pixels(frames, anchors[rows]).to(device)
            cameras = _to(goal_cameras(frames, anchors[rows]), device)
            predicted[rows] = localiser(pixels, text[torch.from_numpy(instruction[rows])].to(device), cameras).float().cpu().numpy()
    return stats.denormalize_goal(predicted)


def subtask_start_frames(frames: TrainingFrames) -> np.ndarray:
    """Frames where a subtask (or a subtask-less episode) starts, before both a grasp and a release."""
    starts = (frames.subtask_start == np.arange(frames.num_frames)) | (frames.frame_in_episode == 0)
    return np.flatnonzero(starts & frames.goal_valid.all(1))


def first_grasp_error(localiser: torch.nn.Module, frames: TrainingFrames, stats: Normalization, text_embeddings: np.ndarray,
                      device: torch.device | str = "cpu", where: np.ndarray | None = None) -> tuple[float, float]:
    """How well the localiser found each episode's first grasp from its first frame.

    The instruction is the first subtask's where the episode has subtasks (what the planner gives
    the model), else the episode's. Returns the mean horizontal distance [m] of the predicted from
    the labelled grasp over the episodes' first frames (only frames where ``where`` is true, when
    given), and the same for always answering the labels' mean position (what a localiser that has
    not locked onto the object achieves)."""
    anchors = np.flatnonzero((frames.frame_in_episode == 0) & frames.goal_valid[:, 0] & (True if where is None else where))
    if len(anchors) == 0:
        raise DatasetError("no episode starts before a grasp: the goal localiser has nothing to be checked on")
    grasp = subtask_goals(localiser, frames, stats, text_embeddings, anchors, device)[:, PICK][:, :2]
    labels = frames.goal_labels[anchors][:, PICK][:, :2]
    error = np.linalg.norm(grasp - labels, axis=1).mean()
    baseline = np.linalg.norm(labels - labels.mean(axis=0), axis=1).mean()
    return float(error), float(baseline)


def subtask_start_goal_error(localiser: torch.nn.Module, frames: TrainingFrames, stats: Normalization, text_embeddings: np.ndarray,
                             device: torch.device | str = "cpu", where: np.ndarray | None = None) -> float:
    """Mean horizontal error [m] of the grasp and release predicted where each subtask starts
    (:func:`subtask_start_frames`; only frames where ``where`` is true, when given), with that
    subtask's instruction: later subtasks included, so a scene with cubes already in the bin
    counts (the first frames alone do not show it)."""
    anchors = subtask_start_frames(frames)
    if where is not None:
        anchors = anchors[where[anchors]]
    if len(anchors) == 0:
        raise DatasetError("no subtask starts before both a grasp and a release: the goal localiser has nothing to be checked on")
    goals, labels = subtask_goals(localiser, frames, stats, text_embeddings, anchors, device), frames.goal_labels[anchors]
    return float(np.mean([np.linalg.norm(goals[:, part][:, :2] - labels[:, part][:, :2], axis=1).mean() for part in (PICK, PLACE)]))


def _to(tensor: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def holdout_episodes(num_episodes: int, fraction: float, min_episodes: int, seed: int) -> np.ndarray:
    """Indices (sorted) of the episodes held out of a stage's training for its checks: ``fraction``
    of them, at least one, drawn with ``seed``; none below ``min_episodes`` episodes."""
    if num_episodes < max(min_episodes, 2) or fraction <= 0.0:
        return np.zeros(0, np.int64)
    count = min(max(1, round(fraction * num_episodes)), num_episodes - 1)
    return np.sort(np.random.default_rng(seed).choice(num_episodes, count, replace=False))


def weights_key(module: torch.nn.Module) -> str:
    """Short content hash of a module's weights (names the latent cache)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def describe(frames: TrainingFrames) -> dict[str, Any]:
    return {
        "frames": int(frames.num_frames),
        "episodes": len(frames.episode_refs),
        "labelled_frames": int(len(frames.action_frames)),
        "instructions": len(frames.instructions),
        "datasets": [str(d.root) for d in frames.datasets],
        "fingerprint": frames.fingerprint,
    }

