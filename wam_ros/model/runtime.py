"""The runtime facade the inference node and the planner call: ``load_policy(checkpoint) -> WamRuntime``.

All four modes of one network, on numpy inputs:

* ``policy``: actions | observation (optionally with a frozen prefix, for real-time chunking);
* ``imagine``: future frames | observation (video prediction) or | observation, actions
  (forward dynamics), with the progress the model sees in that future;
* ``inverse_dynamics``: actions | observation, future frames;
* ``progress``: how far through the instruction the (given or expected) future frame is;
* ``locate``: where the goal localiser (if the checkpoint has one) expects the next grasp and
  release, in the robot's base frame.

Observation = per camera ``(n_obs_frames, H, W, 3)`` uint8, oldest first, spaced
``obs_frame_stride * control_period_s``; state ``(n_obs_frames, state_dim)``. Images of another
size are resized. Row ``i`` of a returned chunk is the target for time
``t_obs + i * control_period_s`` where ``t_obs`` is the time of the newest observation frame.
Calls are serialised by a lock (one model, many callers); the caller owns torch's thread count.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wam_ros.model.autoencoder import images_to_tensor, tensor_to_images
from wam_ros.model.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from wam_ros.model.config import WamConfig
from wam_ros.model.data import keypoint_input, resize_frames
from wam_ros.model.diffusion import euler_schedule
from wam_ros.model.actions import ArmModel, make_action_codec
from wam_ros.model.camera import TablePlaneCamera
from wam_ros.model.goal import GoalEstimate, decode_goal, goal_features
from wam_ros.model.network import Context
from wam_ros.model.text import instruction_encoder


@dataclass
class Observation:
    """Preprocessed observation: the transformer's context plus what decoding needs."""

    context: Context
    current_latent: torch.Tensor  # (1, cameras, C, h, w) normalised latent of the newest frame
    state_now: np.ndarray  # (S,) raw state of the newest frame
    goal: torch.Tensor | None  # (1, GOAL_DIM) the goal localiser's normalised prediction, when it has one


class WamRuntime:
    """A loaded world action model; see the module docstring for the calling conventions."""

    def __init__(self, checkpoint: LoadedCheckpoint, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
        self.checkpoint = checkpoint
        self.config: WamConfig = checkpoint.config
        self.model_id = checkpoint.model_id
        self.device = device
        self.dtype = dtype
        self.stats = checkpoint.normalization
        self.autoencoder = checkpoint.model.autoencoder
        self.network = checkpoint.model.transformer
        self.goal_localiser = checkpoint.model.goal
        self.codec = make_action_codec(self.config)
        self.arm = ArmModel(self.config.robot, self.config.state_names, self.config.action_names) if self.goal_localiser is not None else None
        self._goal_stats = tuple(torch.from_numpy(v).to(device, dtype) for v in (self.stats.goal_mean, self.stats.goal_std))
        self._goal_camera: torch.Tensor | None = None
        if self.goal_localiser is not None and self.config.goal.calibrated:
            self.set_goal_camera(TablePlaneCamera.from_robot(self.arm.robot, self.config.goal.camera))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._lock = threading.Lock()

    def set_goal_camera(self, camera: TablePlaneCamera) -> None:
        """The goal camera's calibration a calibrated localiser casts its image points with: by
        default the robot config's (``extrinsics_*``, ``intrinsics_fx_fy_cx_cy``); set it after
        calibrating a camera that moved (the sim's evaluation gives each episode's true pose)."""
        if self.goal_localiser is None or not self.config.goal.calibrated:
            raise ValueError(f"checkpoint {self.model_id} has no calibrated goal localiser: it takes no camera calibration")
        self._goal_camera = torch.from_numpy(camera.vector()).to(self.device, self.dtype).unsqueeze(0)

    # -- public modes --------------------------------------------------------------------------
    def policy(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        steps: int | None = None,
        frozen_prefix: np.ndarray | None = None,
    ) -> np.ndarray:
        """(horizon, action_dim) float32 action chunk.

        ``steps``: Euler steps of the action sampler (default ``diffusion.policy_steps``).
        ``frozen_prefix`` (k, action_dim), k < horizon: the first k actions are fixed to these
        values (they will be executed while this chunk is computed) and the rest is sampled
        conditioned on them; the prefix enters the network as clean tokens (timestep 0), as it
        did in training, and the returned chunk starts with exactly these rows.
        """
        return self._actions(images, state, instruction, None, steps, frozen_prefix)

    def inverse_dynamics(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        future_images: dict[str, np.ndarray],
        steps: int | None = None,
    ) -> np.ndarray:
        """(horizon, action_dim) actions that lead from the observation to ``future_images``.

        ``future_images``: per camera (H, W, 3), the frame ``future_offset`` steps ahead.
        """
        return self._actions(images, state, instruction, future_images, steps, None)

    def imagine(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        actions: np.ndarray | None = None,
        steps: int | None = None,
    ) -> tuple[dict[str, np.ndarray], float]:
        """Predicted frames ``future_offset`` steps ahead {camera: (H, W, 3) uint8} and their progress.

        With ``actions`` (horizon, action_dim) this is forward dynamics (what these actions
        lead to); without, video prediction (what the model expects to happen).
        """
        with self._lock, torch.inference_mode():
            observation = self._observe(images, state, instruction)
            clean_actions = self._encode_actions(actions, observation) if actions is not None else None
            residual = self._sample_future(observation, clean_actions, steps or self.config.diffusion.video_steps)
            progress = self._progress(observation, residual)
            return self._decode_future(residual, observation), progress

    def progress(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        future_images: dict[str, np.ndarray] | None = None,
    ) -> float:
        """Progress in [0, 1] through ``instruction`` at ``future_images`` (per camera (H, W, 3),
        the frame ``future_offset`` steps ahead); without them, of the future ``imagine`` predicts."""
        if future_images is None:
            return self.imagine(images, state, instruction)[1]
        with self._lock, torch.inference_mode():
            observation = self._observe(images, state, instruction)
            return self._progress(observation, self._future_residual(future_images, observation))

    def locate(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> GoalEstimate:
        """Where the goal localiser expects the next grasp and release (base frame, metres).

        Same inputs as ``policy``; raises ValueError for a checkpoint without a localiser.
        """
        if self.goal_localiser is None:
            raise ValueError(f"checkpoint {self.model_id} has no goal localiser (model.goal.camera is empty)")
        with self._lock, torch.inference_mode():
            observation = self._observe(images, state, instruction)
            assert observation.goal is not None
            return decode_goal(self.stats.denormalize_goal(observation.goal[0].float().cpu().numpy()))

    def warmup(self, instruction: str = "warm up") -> None:
        """Load the text encoder and run every mode once, so the first real call is not slow."""
        n, h, w = self.config.n_obs_frames, self.config.image_height, self.config.image_width
        images = {camera: np.zeros((n, h, w, 3), np.uint8) for camera in self.config.cameras}
        state = np.tile(self.stats.state_mean, (n, 1))
        actions = self.policy(images, state, instruction)
        self.imagine(images, state, instruction, actions=actions)

    # -- internals -----------------------------------------------------------------------------
    def _actions(
        self,
        images: dict[str, np.ndarray],
        state: np.ndarray,
        instruction: str,
        future_images: dict[str, np.ndarray] | None,
        steps: int | None,
        frozen_prefix: np.ndarray | None,
    ) -> np.ndarray:
        """Sampled action chunk: the policy's, or with ``future_images`` the inverse dynamics'."""
        with self._lock, torch.inference_mode():
            observation = self._observe(images, state, instruction)
            future = self._future_residual(future_images, observation) if future_images is not None else None
            prefix = self._check_prefix(frozen_prefix)
            normalized = self._sample_actions(observation, future, steps or self.config.diffusion.policy_steps, prefix)
            representation = self.stats.unstandardize_actions(normalized[0].float().cpu().numpy())
            return self.codec.decode(representation, observation.state_now, prefix)

    def _camera_images(self, images: dict[str, np.ndarray], what: str, leading: tuple[int, ...]) -> list[np.ndarray]:
        """``images[camera]`` for each of the model's cameras, uint8 ``leading + (H, W, 3)``, resized to the model's H, W."""
        config = self.config
        size = (config.image_height, config.image_width)
        resized = []
        for camera in config.cameras:
            if camera not in images:
                raise ValueError(f"no {what} for camera {camera!r}; the model needs {config.cameras}")
            array = np.asarray(images[camera])
            if array.dtype != np.uint8 or array.ndim != len(leading) + 3 or array.shape[: len(leading)] != leading or array.shape[-1] != 3:
                expected = ", ".join([*map(str, leading), "H", "W", "3"])
                raise ValueError(f"camera {camera!r}: {what} {array.dtype}{array.shape}, expected uint8 ({expected})")
            resized.append(resize_frames(array.reshape(-1, *array.shape[-3:]), size).reshape(*leading, *size, 3))
        return resized

    def _observe(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> Observation:
        config = self.config
        n = config.n_obs_frames
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (n, config.state_dim):
            raise ValueError(f"state has shape {state.shape}, expected ({n}, {config.state_dim}) (n_obs_frames, state_dim)")
        if not np.all(np.isfinite(state)):
            raise ValueError("state holds non-finite values")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        frames = self._camera_images(images, "images", (n,))
        pixels = torch.from_numpy(np.stack(frames, axis=1).reshape(-1, config.image_height, config.image_width, 3)).to(self.device)
        latents = self.autoencoder.encode(images_to_tensor(pixels).to(self.dtype))
        latents = self.stats.normalize_latents(latents).reshape(1, n, len(config.cameras), *latents.shape[1:])
        text = torch.from_numpy(self.stats.normalize_text(instruction_encoder().encode_one(instruction))).to(self.device, self.dtype).unsqueeze(0)
        state_in = torch.from_numpy(self.stats.normalize_state(state)).to(self.device, self.dtype).unsqueeze(0)
        small = None
        if config.keypoints.count:
            size = (config.keypoints.image_size,) * 2
            small = np.stack([resize_frames(frame, size) for frame in frames], axis=1)[None]  # (1, n, cameras, s, s, 3)
            small = keypoint_input(torch.from_numpy(small).to(self.device)).to(self.dtype)
        goal = features = None
        if self.goal_localiser is not None:
            assert self.arm is not None
            goal = self._goal(frames[config.cameras.index(config.goal.camera)][-1], text)
            tcp = torch.from_numpy(self.arm.state_tcp(state[-1:])[0].astype(np.float32)).to(self.device, self.dtype)
            features = goal_features(goal, tcp, *self._goal_stats)
        context = self.network.encode_context(latents, state_in, text, small, features)
        return Observation(context, latents[:, -1], state[-1].copy(), goal)

    def _goal(self, frame: np.ndarray, text: torch.Tensor) -> torch.Tensor:
        """(1, GOAL_DIM) normalised goal from the goal camera's newest frame (H, W, 3)."""
        size = (self.config.goal.image_size,) * 2
        pixels = images_to_tensor(torch.from_numpy(resize_frames(frame[None], size)).to(self.device)).to(self.dtype)
        return self.goal_localiser(pixels, text, self._goal_camera)

    def _represent(self, actions: np.ndarray, observation: Observation) -> torch.Tensor:
        """Joint-target rows (k, A) -> (1, k, D) standardised representation relative to the observation."""
        representation = self.codec.encode(actions[None], observation.state_now[None])
        return torch.from_numpy(self.stats.standardize_actions(representation)).to(self.device, self.dtype)

    def _noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32).to(self.dtype)

    def _check_prefix(self, frozen_prefix: np.ndarray | None) -> np.ndarray | None:
        if frozen_prefix is None:
            return None
        prefix = np.asarray(frozen_prefix, dtype=np.float32)
        if prefix.ndim != 2 or prefix.shape[1] != self.config.action_dim or not 0 <= prefix.shape[0] < self.config.horizon:
            raise ValueError(f"frozen_prefix has shape {prefix.shape}, expected (k, {self.config.action_dim}) with 0 <= k < {self.config.horizon}")
        if not np.all(np.isfinite(prefix)):
            raise ValueError("frozen_prefix holds non-finite values")
        return prefix if len(prefix) else None

    def _encode_actions(self, actions: np.ndarray, observation: Observation) -> torch.Tensor:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.config.horizon, self.config.action_dim):
            raise ValueError(f"actions have shape {actions.shape}, expected ({self.config.horizon}, {self.config.action_dim})")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions hold non-finite values")
        return self._represent(actions, observation)

    def _future_residual(self, future_images: dict[str, np.ndarray], observation: Observation) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack(self._camera_images(future_images, "future image", ()))).to(self.device)
        future = self.stats.normalize_latents(self.autoencoder.encode(images_to_tensor(pixels).to(self.dtype))).unsqueeze(0)
        return (future - observation.current_latent) / self.stats.residual_scale(future)

    def _sample_actions(self, observation: Observation, future: torch.Tensor | None, steps: int, prefix: np.ndarray | None) -> torch.Tensor:
        horizon, dim = self.config.horizon, self.config.action_representation_dim
        x = self._noise((1, horizon, dim))
        frozen = 0
        if prefix is not None:
            frozen = len(prefix)
            x[:, :frozen] = self._represent(prefix, observation)
        t_actions = torch.zeros(1, horizon, device=self.device, dtype=self.dtype)
        t_future = torch.full((1,), 0.0 if future is not None else 1.0, device=self.device, dtype=self.dtype)
        for t, t_next in euler_schedule(steps):
            t_actions[:, frozen:] = t
            velocity = self.network.denoise(observation.context, future, t_future, x, t_actions).action_velocity
            x[:, frozen:] = x[:, frozen:] + (t_next - t) * velocity[:, frozen:]
        return x

    def _sample_future(self, observation: Observation, clean_actions: torch.Tensor | None, steps: int) -> torch.Tensor:
        shape = tuple(observation.current_latent.shape)
        x = self._noise(shape)
        t_actions = torch.zeros(1, self.config.horizon, device=self.device, dtype=self.dtype)
        for t, t_next in euler_schedule(steps):
            t_future = torch.full((1,), t, device=self.device, dtype=self.dtype)
            velocity = self.network.denoise(observation.context, x, t_future, clean_actions, t_actions).future_velocity
            x = x + (t_next - t) * velocity
        return x

    def _progress(self, observation: Observation, future: torch.Tensor) -> float:
        """Progress head on a clean future (timestep 0) without actions, as trained in the scoring mode."""
        t_future = torch.zeros(1, device=self.device, dtype=self.dtype)
        logit = self.network.denoise(observation.context, future, t_future, None, None).progress_logit
        return float(torch.sigmoid(logit.float())[0])

    def _decode_future(self, residual: torch.Tensor, observation: Observation) -> dict[str, np.ndarray]:
        latents = self.stats.denormalize_latents(observation.current_latent + residual * self.stats.residual_scale(residual))
        frames = tensor_to_images(self.autoencoder.decode(latents[0]).float()).cpu().numpy()
        return {camera: frames[i] for i, camera in enumerate(self.config.cameras)}


def load_policy(checkpoint_dir: Path | str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> WamRuntime:
    """Load a checkpoint once (safetensors, checked) and return the runtime facade.

    Raises :class:`wam_ros.model.CheckpointError` for a missing, truncated or mismatched checkpoint.
    """
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    checkpoint = load_checkpoint(checkpoint_dir, torch_device, dtype)
    try:
        return WamRuntime(checkpoint, torch_device, dtype)
    except ValueError as error:  # the kinematics of the robot it was trained for are not here
        raise CheckpointError(f"{checkpoint_dir}: {error}") from None
