"""The world action transformer: one network, two diffusion timesteps, four inference modes.

Tokens (all of width D):

* context (clean, never noised): instruction, proprioception (all observation frames) and the
  latent patches of every camera in every observation frame;
* targets: the future frame's latent patches (timestep ``t_future``), the action chunk
  (one timestep per action, so that a frozen prefix is simply clean), and one register token
  whose output is the progress estimate.

Context tokens attend only to context tokens, so their keys and values do not depend on the
noisy targets: inference computes them once per observation and every denoising step runs
only the target tokens (a key/value cache). Target tokens attend to everything that is
present. A modality at full noise carries no information and is removed from attention
(``future_present`` / ``actions_present`` false): policy inference then runs 17 target
tokens, not 89. Each token is modulated (AdaLN) by instruction + its modality + its timestep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from wam_ros.model.camera import CAMERA_VECTOR_DIM, table_points
from wam_ros.model.config import GoalConfig, WamConfig
from wam_ros.model.goal import GOAL_DIM, GOAL_FEATURES, PICK, PLACE


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000), shape (*t.shape, dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = (t.float() * 1000.0).unsqueeze(-1) * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm transformer block with AdaLN-Zero modulation given per token (or per group)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, N, D); modulation (B, N or 1, 6D) already projected; ``past`` = context keys/values.

        Returns the new tokens and this block's own (keys, values), for the context cache.
        ``key_mask`` (B, N_past + N) bool: True where a key may be attended to.
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, dim=-1)
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).chunk(3, dim=-1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        keys, values = (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)) if past is not None else (k, v)
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        b, _, n, _ = attended.shape
        x = x + gate1 * self.proj(attended.transpose(1, 2).reshape(b, n, -1))
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, (k, v)


class OutputLayer(nn.Module):
    """AdaLN final norm and a zero-initialised projection."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_dim)
        for layer in (self.modulation, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(condition)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class KeypointEncoder(nn.Module):
    """Frames -> per-image spatial-softmax keypoints, the features FiLM-modulated by the instruction.

    Three convolutions (the first with stride 2) at ``image_size``; each of ``count`` output maps
    becomes the expected (x, y) in [-1, 1] of its softmax over the positions (a learned
    temperature per map). See :class:`wam_ros.model.config.KeypointConfig`.
    """

    def __init__(self, count: int, channels: int, text_dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)]
        )
        self.norms = nn.ModuleList(nn.GroupNorm(4, channels, affine=False) for _ in self.convs)
        self.film = nn.Linear(text_dim, 2 * channels * len(self.convs))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.maps = nn.Conv2d(channels, count, 1)
        self.log_temperature = nn.Parameter(torch.zeros(count))

    def forward(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """pixels (B, N, 3, s, s) in [-1, 1], text (B, text_dim) -> keypoints (B, N, count, 2)."""
        b, n = pixels.shape[:2]
        x = pixels.flatten(0, 1)
        film = self.film(text).repeat_interleave(n, dim=0).chunk(2 * len(self.convs), dim=-1)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.silu(norm(conv(x)) * (1 + film[2 * i][:, :, None, None]) + film[2 * i + 1][:, :, None, None])
        maps = self.maps(x)
        h, w = maps.shape[-2:]
        weights = (maps.flatten(2) * self.log_temperature.exp()[:, None]).softmax(-1).view(-1, maps.shape[1], h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=weights.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=weights.dtype)
        points = torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)
        return points.view(b, n, -1, 2)


class GoalLocaliser(nn.Module):
    """A static camera's frame + instruction -> the normalised hindsight goal (``goal.py``).

    Instruction-FiLM spatial-softmax keypoints (:class:`KeypointEncoder`), then an MLP over the
    keypoints and the instruction; ``GOAL_DIM`` outputs in normalised label units. Calibrated
    (``GoalConfig.calibrated``): the MLP gives each position's normalised image point and its
    height, and the camera's calibration (``camera.table_points``) turns them into base-frame
    positions; the label scale (:meth:`set_label_scale`) then lives in the module. With
    ``image_points: keypoints`` the image points are keypoints 0 and 1 themselves (see
    :class:`wam_ros.model.config.GoalConfig`) and the MLP gives only the heights.
    """

    def __init__(self, config: GoalConfig, text_dim: int) -> None:
        super().__init__()
        self.calibrated = config.calibrated
        self.points_from_keypoints = config.image_points == "keypoints"
        # a keypoint spans -1 .. 1 over the feature map's cell centres (ceil(image_size / 2) per edge),
        # a normalised image point over the image's edges
        self.keypoint_to_image = 1.0 - 1.0 / ((config.image_size + 1) // 2)
        self.keypoints = KeypointEncoder(config.count, config.channels, text_dim)
        self.head = nn.Sequential(
            nn.Linear(2 * config.count + text_dim, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, GOAL_DIM)
        )
        if self.calibrated:
            self.register_buffer("label_mean", torch.zeros(GOAL_DIM))
            self.register_buffer("label_std", torch.ones(GOAL_DIM))

    def set_label_scale(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The normalisation of the goal labels (``Normalization.goal_mean/goal_std``), for a calibrated localiser."""
        if self.calibrated:
            self.label_mean.copy_(torch.as_tensor(mean))
            self.label_std.copy_(torch.as_tensor(std))

    def forward(self, pixels: torch.Tensor, text: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (B, 3, s, s) in [-1, 1], text (B, text_dim) normalised, camera (B,
        CAMERA_VECTOR_DIM) the calibration (calibrated localisers only) -> (B, GOAL_DIM)."""
        keypoints = self.keypoints(pixels.unsqueeze(1), text)[:, 0]  # (B, count, 2)
        out = self.head(torch.cat([keypoints.flatten(1), text], dim=1))
        if not self.calibrated:
            return out
        if camera is None or camera.shape != (out.shape[0], CAMERA_VECTOR_DIM):
            raise ValueError(f"this goal localiser is calibrated: it needs the camera's calibration (B, {CAMERA_VECTOR_DIM})")
        parts = []
        for part in (PICK, PLACE):
            raw = out[:, part]  # image u, v, then the height in normalised label units
            height = self.label_mean[part][2] + self.label_std[part][2] * raw[:, 2]
            image_point = keypoints[:, part.start // 3] * self.keypoint_to_image if self.points_from_keypoints else raw[:, :2]
            parts.append(table_points(image_point, height, camera.to(out.dtype)))
        return (torch.cat(parts, dim=1) - self.label_mean) / self.label_std


@dataclass
class Context:
    """What one observation contributes, computed once and reused by every denoising step."""

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per block, (B, heads, N_context, D/heads) each
    condition: torch.Tensor  # (B, D): instruction conditioning shared by all tokens

    def rows(self, start: int, stop: int) -> "Context":
        """The context of batch rows [start, stop)."""
        return Context([(k[start:stop], v[start:stop]) for k, v in self.keys_values], self.condition[start:stop])


@dataclass
class Prediction:
    future_velocity: torch.Tensor | None  # (B, cameras, C, h, w)
    action_velocity: torch.Tensor | None  # (B, horizon, action representation dim)
    progress_logit: torch.Tensor  # (B,)


GROUP_CONTEXT, GROUP_FUTURE, GROUP_ACTION, GROUP_REGISTER = range(4)


class WorldActionTransformer(nn.Module):
    """Predicts flow-matching velocities for future latents and actions, plus task progress."""

    def __init__(self, config: WamConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        t = config.transformer
        width = t.width
        self.patch = t.patch_size
        self.latent_channels = config.autoencoder.latent_channels
        patch_dim = self.latent_channels * self.patch**2
        cameras = len(config.cameras)
        self.tokens_per_frame = cameras * config.tokens_per_camera
        self.context_embed = nn.Linear(patch_dim, width)
        self.future_embed = nn.Linear(patch_dim, width)
        self.context_position = nn.Parameter(torch.randn(config.n_obs_frames * self.tokens_per_frame, width) * 0.02)
        self.future_position = nn.Parameter(torch.randn(self.tokens_per_frame, width) * 0.02)
        self.state_embed = nn.Sequential(nn.Linear(config.n_obs_frames * config.state_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.text_token = nn.Linear(t.text_dim, width)
        k = config.keypoints
        self.keypoints = KeypointEncoder(k.count, k.channels, t.text_dim) if k.count else None
        if self.keypoints is not None:
            self.keypoint_embed = nn.Sequential(nn.Linear(2 * k.count, width), nn.SiLU(), nn.Linear(width, width))
            self.keypoint_position = nn.Parameter(torch.randn(config.n_obs_frames * cameras, width) * 0.02)
        self.goal_embed = nn.Sequential(nn.Linear(GOAL_FEATURES, width), nn.SiLU(), nn.Linear(width, width)) if config.goal.camera else None
        self.text_condition = nn.Sequential(nn.Linear(t.text_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.action_embed = nn.Linear(config.action_representation_dim, width)
        self.action_position = nn.Parameter(torch.randn(config.horizon, width) * 0.02)
        self.register = nn.Parameter(torch.randn(1, width) * 0.02)
        self.group_embedding = nn.Parameter(torch.randn(4, width) * 0.02)
        self.time_embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(width, t.heads, t.mlp_ratio) for _ in range(t.depth))
        self.future_out = OutputLayer(width, patch_dim)
        self.action_out = OutputLayer(width, config.action_representation_dim)
        self.progress_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    # -- tokens ------------------------------------------------------------------------------
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, ..., C, h, w) -> (B, prod(...) * (h/p) * (w/p), C * p * p)."""
        b = latents.shape[0]
        c, h, w = latents.shape[-3:]
        p = self.patch
        x = latents.reshape(-1, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, -1, c * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, cameras * tokens_per_camera, C * p * p) -> (B, cameras, C, h, w)."""
        b = tokens.shape[0]
        h, w = self.config.latent_hw
        p, c = self.patch, self.latent_channels
        x = tokens.reshape(b, len(self.config.cameras), h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, len(self.config.cameras), c, h, w)

    def _group_condition(self, condition: torch.Tensor, group: int, t: torch.Tensor | None) -> torch.Tensor:
        """condition (B, D) + group embedding (+ timestep embedding of t with shape (B,) or (B, K))."""
        out = condition + self.group_embedding[group]
        if t is None:
            return out
        embedded = self.time_embed(timestep_features(t))
        return (out.unsqueeze(1) + embedded) if t.dim() == 2 else out + embedded

    # -- forward -----------------------------------------------------------------------------
    def encode_context(
        self, latents: torch.Tensor, state: torch.Tensor, text: torch.Tensor, pixels: torch.Tensor | None = None, goal: torch.Tensor | None = None
    ) -> Context:
        """latents (B, frames, cameras, C, h, w) normalised; state (B, frames, S) normalised; text (B, 384);
        pixels (B, frames, cameras, 3, s, s) in [-1, 1] when the keypoint encoder is on;
        goal (B, GOAL_FEATURES), the goal token's input (goal.goal_features), when the goal localiser is on."""
        b = latents.shape[0]
        image_tokens = self.context_embed(self.patchify(latents)) + self.context_position
        parts = [self.text_token(text).unsqueeze(1), self.state_embed(state.reshape(b, -1)).unsqueeze(1)]
        if self.goal_embed is not None:
            if goal is None or goal.shape != (b, GOAL_FEATURES):
                raise ValueError(f"this model's goal token needs the goal features (B, {GOAL_FEATURES})")
            parts.append(self.goal_embed(goal).unsqueeze(1))
        if self.keypoints is not None:
            if pixels is None:
                raise ValueError("this model's keypoint encoder needs the context frames as pixels")
            points = self.keypoints(pixels.flatten(1, 2), text)
            parts.append(self.keypoint_embed(points.flatten(2)) + self.keypoint_position)
        tokens = torch.cat(parts + [image_tokens], dim=1)
        condition = self.text_condition(text)
        group = F.silu(self._group_condition(condition, GROUP_CONTEXT, None)).unsqueeze(1)
        keys_values = []
        for block in self.blocks:
            tokens, kv = block(tokens, block.modulation(group))
            keys_values.append(kv)
        return Context(keys_values, condition)

    def denoise(
        self,
        context: Context,
        future: torch.Tensor | None,
        t_future: torch.Tensor,
        actions: torch.Tensor | None,
        t_actions: torch.Tensor | None,
        future_present: torch.Tensor | None = None,
        actions_present: torch.Tensor | None = None,
    ) -> Prediction:
        """Velocities for the given noisy targets.

        future (B, cameras, C, h, w) or None (removed: full noise); t_future (B,);
        actions (B, horizon, A) or None; t_actions (B, horizon) (0 for clean, frozen actions).
        ``*_present`` (B,) bool remove a modality per sample (training batches mix modes).
        """
        condition = context.condition
        b = condition.shape[0]
        device = condition.device
        # Tokens of one modality share one condition row (the future) or have their own (actions):
        # modulations are computed per distinct row and gathered per token through ``row_of_token``.
        parts, rows, row_of_token, masks = [], [], [], []
        all_present = torch.ones(b, dtype=torch.bool, device=device)
        if future is not None:
            n_future = self.tokens_per_frame
            parts.append(self.future_embed(self.patchify(future)) + self.future_position)
            rows.append(self._group_condition(condition, GROUP_FUTURE, t_future).unsqueeze(1))
            row_of_token += [0] * n_future
            masks.append((future_present if future_present is not None else all_present).unsqueeze(1).expand(b, n_future))
        if actions is not None:
            assert t_actions is not None
            horizon = actions.shape[1]
            parts.append(self.action_embed(actions) + self.action_position[:horizon])
            first = 1 if future is not None else 0
            if b == 1:
                # One sample (inference): actions share few distinct timesteps (one, or two with a
                # frozen prefix), so modulate per distinct timestep, not per action.
                distinct, which = torch.unique(t_actions[0], return_inverse=True)
                rows.append(self._group_condition(condition, GROUP_ACTION, distinct.unsqueeze(0)))
                row_of_token += (first + which).tolist()
            else:
                rows.append(self._group_condition(condition, GROUP_ACTION, t_actions))
                row_of_token += list(range(first, first + horizon))
            masks.append((actions_present if actions_present is not None else all_present).unsqueeze(1).expand(b, horizon))
        parts.append(self.register.expand(b, 1, -1))
        rows.append(self._group_condition(condition, GROUP_REGISTER, t_future).unsqueeze(1))
        row_of_token.append(sum(r.shape[1] for r in rows) - 1)
        masks.append(torch.ones(b, 1, dtype=torch.bool, device=device))
        tokens = torch.cat(parts, dim=1)
        row_condition = torch.cat(rows, dim=1)
        activated = F.silu(row_condition)
        index = torch.tensor(row_of_token, device=device)
        key_mask = None
        if future_present is not None or actions_present is not None:
            n_context = context.keys_values[0][0].shape[2]
            key_mask = torch.cat([torch.ones(b, n_context, dtype=torch.bool, device=device)] + masks, dim=1)
        for block, past in zip(self.blocks, context.keys_values):
            tokens, _ = block(tokens, block.modulation(activated)[:, index], past=past, key_mask=key_mask)
        offset = 0
        future_velocity = action_velocity = None
        if future is not None:
            n = self.tokens_per_frame
            future_velocity = self.unpatchify(self.future_out(tokens[:, :n], row_condition[:, :1]))
            offset = n
        if actions is not None:
            n = actions.shape[1]
            action_velocity = self.action_out(tokens[:, offset : offset + n], row_condition[:, index[offset : offset + n]])
        progress_logit = self.progress_out(tokens[:, -1]).squeeze(-1)
        return Prediction(future_velocity, action_velocity, progress_logit)


    def forward(
        self,
        latents: torch.Tensor,
        pixels: torch.Tensor | None,
        state: torch.Tensor,
        text: torch.Tensor,
        n_policy: int,
        future: torch.Tensor,
        t_future: torch.Tensor,
        actions: torch.Tensor,
        t_actions: torch.Tensor,
        actions_present: torch.Tensor,
        goal: torch.Tensor | None = None,
    ) -> tuple[Prediction | None, Prediction | None]:
        """Training pass over a batch whose first ``n_policy`` rows are policy samples (future
        removed) and whose other rows are world samples (future present, actions per
        ``actions_present``). One forward per step, as DistributedDataParallel needs."""
        context = self.encode_context(latents, state, text, pixels, goal)
        b = latents.shape[0]
        policy = world = None
        if n_policy > 0:
            policy = self.denoise(context.rows(0, n_policy), None, t_future[:n_policy], actions[:n_policy], t_actions[:n_policy])
        if n_policy < b:
            world = self.denoise(
                context.rows(n_policy, b),
                future[n_policy:],
                t_future[n_policy:],
                actions[n_policy:],
                t_actions[n_policy:],
                future_present=torch.ones(b - n_policy, dtype=torch.bool, device=latents.device),
                actions_present=actions_present[n_policy:],
            )
        return policy, world


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class WorldActionModel(nn.Module):
    """The autoencoder (pixels <-> latents) and the transformer, saved and loaded together."""

    def __init__(self, config: WamConfig) -> None:
        super().__init__()
        from wam_ros.model.autoencoder import build_autoencoder

        self.config = config
        self.autoencoder = build_autoencoder(config.autoencoder)
        self.goal = GoalLocaliser(config.goal, config.transformer.text_dim) if config.goal.camera else None
        self.transformer = WorldActionTransformer(config)
