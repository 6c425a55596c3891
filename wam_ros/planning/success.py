"""A scene monitor from the cameras: which subtask effects hold, and where the objects are (ROS-free).

On a real arm there is no task-status topic: the planner has to see for itself that "the red
cube is in the bin". This module is a small image classifier that does, trained on what the
robot records anyway: episodes with subtask spans (sim demos, converted bags), no object poses.

* **Facts** (``in(red_cube, bin)``, one output per positive effect of every step of the skill
  vocabulary in the robot's scene): labels from the subtask spans. A span's instruction names a
  step (``Domain.step_from_instruction``); its effects hold from the frame the span ends
  (sim demos end a span at the first frame its predicate holds) and are false before it. The
  last span runs to the end of the episode, so its effects are taken to hold from
  ``release_delay_frames`` after the last commanded gripper opening in it when the episode
  succeeded (the delay measured on the other spans: :func:`release_delay`), and are left
  unlabelled after that opening when it failed. Frames within ``margin_frames`` of a change are
  unlabelled (the moment a cube drops is not a label anyone can give to the frame). Facts no
  span achieves are false throughout: an episode starts with nothing done.
* **Positions** (``x, y`` of each movable object and each container on the table, base frame):
  labels from the robot's own kinematics, as the WAM's goal localiser does: a movable object
  lies where the gripper first closes in the subtask that moves it (forward kinematics of the
  commanded joints; the label holds on every frame before that grasp); a container lies at the
  mean of the episode's release points. Used to describe the scene to the language model in
  words ("nearest to the bin"), never as ground truth.

Network (:class:`SceneDetectorNet`): per camera a small strided CNN; the facts from pooled
features of every camera, the positions from spatial-softmax keypoints of one static camera
(one map per object) through a shared MLP (image plane -> table plane).

:class:`SceneDetector` is the runtime (``predict(images) -> SceneEstimate``);
:class:`FactBelief` turns a stream of estimates into a symbolic state with thresholds and
consecutive confirmations (hysteresis), which is what the execution monitor reads.
``wam-ros train-detector`` trains and evaluates one (docs/planner.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from wam_ros.planning import learning
from wam_ros.planning.domain import Domain, Fact, Scene, State, format_fact

FORMAT = "wam_ros.scene_detector"
VERSION = 1
UNLABELLED = -1


@dataclass(frozen=True)
class DetectorConfig:
    facts: tuple[str, ...]  # formatted facts, one output each: "in(red_cube, bin)"
    objects: tuple[str, ...]  # objects whose table position is estimated
    cameras: tuple[str, ...] = ("front", "wrist")
    position_camera: str = "front"  # a camera that does not move with the arm
    image_size: int = 96
    channels: tuple[int, ...] = (12, 24, 32)
    hidden: int = 64
    layout_channels: int = 0  # > 0: the static camera's feature map, reduced to this many channels, enters the fact head unpooled

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DetectorConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def parse_fact(text: str) -> Fact:
    name, _, rest = text.strip().partition("(")
    return (name.strip(), *(a.strip() for a in rest.rstrip(")").split(",") if a.strip()))


def domain_facts(domain: Domain, scene: Scene) -> tuple[Fact, ...]:
    """Every positive effect of every allowed step in ``scene``, in a fixed order."""
    facts: list[Fact] = []
    for step in domain.grounded_steps(scene):
        for template in domain.skills[step.skill].effects:
            fact = template.ground(step.arguments)
            if not template.negated and fact not in facts:
                facts.append(fact)
    return tuple(facts)


def positioned_objects(domain: Domain, scene: Scene) -> tuple[str, ...]:
    """Objects a skill moves (its first argument's category) and the containers they go to."""
    categories = {c for skill in domain.skills.values() for c in skill.argument_categories}
    return tuple(o.name for o in scene.objects if o.category in categories)


# -- labels ----------------------------------------------------------------------------------------
@dataclass
class EpisodeLabels:
    facts: np.ndarray  # (T, F) int8: 1, 0 or UNLABELLED
    positions: np.ndarray  # (T, O, 2) float32 [m]
    position_valid: np.ndarray  # (T, O) bool
    done_frames: dict[int, int] = field(default_factory=dict)  # span index -> first frame its effects hold (labelled)


class Labeller:
    """Fact and position labels for episodes of one dataset layout (see the module docstring)."""

    def __init__(self, domain: Domain, scene: Scene, config: DetectorConfig, robot: str, state_names: Sequence[str],
                 action_names: Sequence[str], margin_frames: int = 2, release_delay_frames: int = 4) -> None:
        from wam_ros.model.actions import ArmModel

        self.domain, self.scene, self.config = domain, scene, config
        self.facts = [parse_fact(f) for f in config.facts]
        self.arm = ArmModel(robot, list(state_names), list(action_names))
        gripper = self.arm.robot.gripper
        self.gripper_column = list(action_names).index("gripper_width") if "gripper_width" in action_names else None
        self.closed_below = 0.5 * (gripper.width_min_m + gripper.width_max_m)
        self.margin = margin_frames
        self.release_delay = release_delay_frames
        movable = {c for skill in domain.skills.values() for c in skill.argument_categories[:1]}
        self.movable = {o.name for o in scene.objects if o.category in movable}

    def events(self, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Grasp frames, release frames (commanded gripper crossings) and commanded TCP positions."""
        from wam_ros.model.goal import gripper_events

        if actions is None or self.gripper_column is None:
            return np.zeros(0, int), np.zeros(0, int), None
        grasps, releases = gripper_events(actions[:, self.gripper_column], self.closed_below)
        positions, _ = self.arm.tcp(actions[:, self.arm.action_joints])
        return grasps, releases, positions

    def episode(self, episode: Any) -> EpisodeLabels:
        length = len(episode.states)
        facts = np.zeros((length, len(self.facts)), np.int8)
        positions = np.zeros((length, len(self.config.objects), 2), np.float32)
        valid = np.zeros((length, len(self.config.objects)), bool)
        grasps, releases, tcp = self.events(episode.actions)
        done_frames: dict[int, int] = {}
        release_points = []
        spans = list(episode.subtasks)
        for index, span in enumerate(spans):
            step = self.domain.step_from_instruction(span.instruction, self.scene)
            if step is None:
                continue
            last = index == len(spans) - 1
            span_releases = releases[(releases >= span.start) & (releases < span.end)]
            span_grasps = grasps[(grasps >= span.start) & (grasps < span.end)]
            if tcp is not None and len(span_releases):
                release_points.append(tcp[span_releases[-1], :2])
            # Where the moved object lay: the first grasp of its subtask.
            if tcp is not None and len(span_grasps) and step.arguments[0] in self.config.objects:
                column = self.config.objects.index(step.arguments[0])
                positions[: span_grasps[0], column] = tcp[span_grasps[0], :2]
                valid[: span_grasps[0], column] = True
            effects = [t.ground(step.arguments) for t in self.domain.skills[step.skill].effects if not t.negated]
            columns = [self.facts.index(f) for f in effects if f in self.facts]
            if not last:
                done = span.end - 1
            elif episode.success and len(span_releases):
                done = min(int(span_releases[-1]) + self.release_delay, length - 1)
            elif episode.success:
                done = length - 1
            else:
                done = None
            for column in columns:
                if done is None:
                    cut = int(span_releases[-1]) if len(span_releases) else span.start
                    facts[cut:, column] = UNLABELLED
                    continue
                facts[done:, column] = 1
                low, high = max(done - self.margin, 0), min(done + self.margin + 1, length)
                facts[low:high, column] = UNLABELLED
                if last and episode.success and len(span_releases) == 0:
                    facts[span.start:done, column] = UNLABELLED  # no opening seen: when it happened is unknown
            if done is not None:
                done_frames[index] = done
        if release_points:
            centre = np.mean(release_points, axis=0)
            for name in self.config.objects:
                if name not in self.movable:
                    column = self.config.objects.index(name)
                    positions[:, column] = centre
                    valid[:, column] = True
        return EpisodeLabels(facts, positions, valid, done_frames)


def release_delay(labeller: Labeller, episodes: Iterable[Any]) -> int:
    """Median frames from a span's last commanded opening to the frame its effects first hold,
    over the spans whose end the predicate marks (every span but an episode's last)."""
    delays = []
    for episode in episodes:
        _, releases, _ = labeller.events(episode.actions)
        for span in list(episode.subtasks)[:-1]:
            inside = releases[(releases >= span.start) & (releases < span.end)]
            if len(inside):
                delays.append(span.end - 1 - int(inside[-1]))
    return int(np.median(delays)) if delays else labeller.release_delay


# -- network ---------------------------------------------------------------------------------------
def _build_net(config: DetectorConfig):
    import torch
    from torch import nn

    class Trunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = config.channels
            self.stem = nn.Sequential(nn.Conv2d(3, c[0], 5, stride=2, padding=2), nn.ReLU(),
                                      nn.Conv2d(c[0], c[1], 3, stride=2, padding=1), nn.ReLU())  # stride 4
            self.deep = nn.Sequential(nn.Conv2d(c[1], c[2], 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(c[2], c[2], 3, padding=1), nn.ReLU())  # stride 8

        def forward(self, x):
            mid = self.stem(x)
            return mid, self.deep(mid)

    class SceneDetectorNet(nn.Module):
        """Images (B, cameras, 3, H, W) in [0, 1] -> fact logits (B, F), positions (B, O, 2) [m]."""

        def __init__(self) -> None:
            super().__init__()
            self.trunks = nn.ModuleList([Trunk() for _ in config.cameras])
            c = config.channels
            self.position_camera = config.cameras.index(config.position_camera) if config.position_camera in config.cameras else -1
            # The static camera keeps its layout (where a cube is relative to the bin matters);
            # cameras that move with the arm are pooled.
            grid = (config.image_size + 7) // 8
            self.layout = nn.Conv2d(c[2], config.layout_channels, 1) if self.position_camera >= 0 and config.layout_channels else None
            features = 2 * c[2] * len(config.cameras) + (config.layout_channels * grid * grid if self.layout is not None else 0)
            self.facts = nn.Sequential(nn.Linear(features, config.hidden), nn.ReLU(), nn.Linear(config.hidden, len(config.facts)))
            self.keypoints = nn.Conv2d(c[1], max(len(config.objects), 1), 3, padding=1)
            self.plane = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
            self.register_buffer("position_mean", torch.zeros(2))
            self.register_buffer("position_scale", torch.ones(2))

        def forward(self, images):
            pooled, keypoints = [], None
            for index, trunk in enumerate(self.trunks):
                mid, deep = trunk(images[:, index])
                pooled += [deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))]
                if index == self.position_camera and self.layout is not None:
                    pooled.append(torch.relu(self.layout(deep)).flatten(1))
                if index == self.position_camera and config.objects:
                    maps = self.keypoints(mid)
                    b, o, h, w = maps.shape
                    weights = torch.softmax(maps.reshape(b, o, h * w), dim=-1).reshape(b, o, h, w)
                    ys = torch.linspace(-1.0, 1.0, h, device=images.device)
                    xs = torch.linspace(-1.0, 1.0, w, device=images.device)
                    keypoints = torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)
            logits = self.facts(nn.functional.dropout(torch.cat(pooled, dim=1), 0.1, self.training))
            if keypoints is None:
                return logits, images.new_zeros(images.shape[0], 0, 2)
            return logits, self.plane(keypoints) * self.position_scale + self.position_mean

    return SceneDetectorNet()


def images_to_input(images: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray], config: DetectorConfig):
    """{camera: (H, W, 3) or (B, H, W, 3) uint8} -> float tensor (B, cameras, 3, S, S) in [0, 1]."""
    import torch

    from wam_ros.model.data import resize_frames

    batch = []
    for camera in config.cameras:
        if camera not in images:
            raise ValueError(f"the scene detector needs camera {camera!r}; got {sorted(images)}")
        frames = np.asarray(images[camera])
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise ValueError(f"camera {camera!r}: expected uint8 (..., H, W, 3), got {frames.dtype}{frames.shape}")
        if frames.shape[1:3] != (config.image_size, config.image_size):
            frames = resize_frames(frames, (config.image_size, config.image_size))
        batch.append(frames)
    array = np.stack(batch, axis=1)  # (B, cameras, S, S, 3)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 1, 4, 2, 3).float().div_(255.0)


# -- runtime -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneEstimate:
    """What the cameras show now: each fact's probability and each object's table position [m]."""

    facts: dict[Fact, float]
    positions: dict[str, tuple[float, float]]
    latency_s: float = 0.0


class SceneDetector:
    """A trained detector; ``predict`` takes the newest frame of each camera."""

    def __init__(self, net: Any, config: DetectorConfig, metadata: Mapping[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.config = config
        self.facts = tuple(parse_fact(f) for f in config.facts)
        self.metadata = dict(metadata or {})

    @classmethod
    def load(cls, directory: Path | str) -> "SceneDetector":
        from safetensors.torch import load_file

        data, weights_path = learning.read_record(Path(directory), "config.json", "model.safetensors", FORMAT, "scene detector")
        config = DetectorConfig.from_json(data["detector"])
        net = _build_net(config)
        net.load_state_dict(load_file(str(weights_path)))
        return cls(net, config, data)

    def save(self, directory: Path, extra: Mapping[str, Any] | None = None) -> None:
        record = {"format": FORMAT, "version": VERSION, "detector": self.config.to_json(), **dict(extra or {})}
        learning.write(Path(directory), "config.json", record, "model.safetensors",
                       {k: v.detach().contiguous() for k, v in self.net.state_dict().items()})

    def predict_batch(self, images: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """{camera: (B, H, W, 3)} -> fact probabilities (B, F), positions (B, O, 2)."""
        import torch

        with torch.inference_mode():
            logits, positions = self.net(images_to_input(images, self.config))
            return torch.sigmoid(logits).numpy(), positions.numpy()

    def predict(self, images: Mapping[str, np.ndarray]) -> SceneEstimate:
        """The newest frame of each camera {camera: (H, W, 3) uint8} -> one estimate."""
        started = time.perf_counter()
        batch = {camera: np.asarray(frame)[None] if np.asarray(frame).ndim == 3 else np.asarray(frame) for camera, frame in images.items()}
        probabilities, positions = self.predict_batch(batch)
        return SceneEstimate(
            facts={fact: float(p) for fact, p in zip(self.facts, probabilities[0])},
            positions={name: (float(x), float(y)) for name, (x, y) in zip(self.config.objects, positions[0])},
            latency_s=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class BeliefConfig:
    done_threshold: float = 0.8  # a fact becomes true after `confirmations` readings at or above this
    lost_threshold: float = 0.2  # ... and false again after `confirmations` readings at or below this
    confirmations: int = 3


class FactBelief:
    """Symbolic state from a stream of detector estimates, with hysteresis.

    A fact flips only after ``confirmations`` consecutive readings past its threshold: one frame
    with the arm in front of the bin changes nothing. Facts start false (``initial``: a
    known starting state, e.g. from before a replan)."""

    def __init__(self, facts: Sequence[Fact], config: BeliefConfig = BeliefConfig(), initial: Iterable[Fact] = ()) -> None:
        self.config = config
        self.facts = tuple(facts)
        self.true = {fact: fact in set(initial) for fact in self.facts}
        self._streak = {fact: 0 for fact in self.facts}
        self.probabilities: dict[Fact, float] = {}
        self.readings = 0

    def update(self, probabilities: Mapping[Fact, float]) -> State:
        config = self.config
        self.readings += 1
        for fact in self.facts:
            if fact not in probabilities:
                continue
            p = float(probabilities[fact])
            self.probabilities[fact] = p
            against = p <= config.lost_threshold if self.true[fact] else p >= config.done_threshold
            self._streak[fact] = self._streak[fact] + 1 if against else 0
            if self._streak[fact] >= config.confirmations:
                self.true[fact] = not self.true[fact]
                self._streak[fact] = 0
        return self.state

    @property
    def settled(self) -> bool:
        """Enough readings for a fact that was true from the start to have been confirmed."""
        return self.readings >= self.config.confirmations

    @property
    def state(self) -> State:
        return frozenset(f for f, true in self.true.items() if true)


# -- training and evaluation -----------------------------------------------------------------------------
@dataclass
class _Frames:
    images: dict[str, list[np.ndarray]]
    facts: list[np.ndarray]
    positions: list[np.ndarray]
    valid: list[np.ndarray]


def collect(datasets: Sequence[Any], labeller: Labeller, stride: int = 1, log: Callable[[str], None] = print) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Every ``stride``-th frame of every episode with its labels; episodes (start, length) in the arrays.

    The frame numbers within their episodes are kept in ``collect.frame_index`` (the last call's)."""
    images: dict[str, list[np.ndarray]] = {c: [] for c in labeller.config.cameras}
    facts, positions, valid, ranges, frame_index = [], [], [], [], []
    total = 0
    for dataset in datasets:
        for index in range(len(dataset)):
            episode = dataset.episode(index)
            labels = labeller.episode(episode)
            frames = np.arange(0, len(episode.states), stride)
            for camera in images:
                if camera not in episode.images:
                    raise ValueError(f"{dataset.root}: episode {index} has no camera {camera!r}")
                images[camera].append(np.asarray(episode.images[camera][frames]))
            facts.append(labels.facts[frames])
            positions.append(labels.positions[frames])
            valid.append(labels.position_valid[frames])
            frame_index.append(frames)
            ranges.append((total, len(frames)))
            total += len(frames)
    log(f"scene detector data: {len(ranges)} episodes, {total} frames")
    collect.frame_index = np.concatenate(frame_index) if frame_index else np.zeros(0, int)  # type: ignore[attr-defined]
    return ({c: np.concatenate(v) for c, v in images.items()}, np.concatenate(facts), np.concatenate(positions),
            np.concatenate(valid), ranges)


def augment(batch, rng: np.random.Generator, shift: int = 3):
    """Random shifts of up to ``shift`` pixels per camera and brightness/contrast jitter (training only)."""
    import torch

    b, cams, _, h, w = batch.shape
    out = torch.empty_like(batch)
    padded = torch.nn.functional.pad(batch.reshape(b * cams, 3, h, w), (shift,) * 4, mode="replicate")
    offsets = rng.integers(0, 2 * shift + 1, size=(b * cams, 2))
    for i, (dy, dx) in enumerate(offsets):
        out.view(b * cams, 3, h, w)[i] = padded[i, :, dy:dy + h, dx:dx + w]
    gain = torch.from_numpy(rng.uniform(0.85, 1.15, size=(b, cams, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.05, 0.05, size=(b, cams, 1, 1, 1)).astype(np.float32))
    return (out * gain + bias).clamp_(0.0, 1.0)


@dataclass
class TrainResult:
    detector: SceneDetector
    steps: int
    cpu_s: float
    wall_s: float
    losses: list[float]


def train(
    config: DetectorConfig,
    images: Mapping[str, np.ndarray],
    facts: np.ndarray,
    positions: np.ndarray,
    valid: np.ndarray,
    steps: int = 1500,
    batch_size: int = 48,
    learning_rate: float = 2e-3,
    seed: int = 0,
    position_weight: float = 1.0,
    progress: Callable[[int, float], None] | None = None,
    max_cpu_s: float | None = None,
) -> TrainResult:
    """Train a detector on labelled frames (from :func:`collect`): BCE on labelled facts, with
    positives and negatives of each fact weighted equally, plus MSE on valid positions."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _build_net(config)
    if config.objects and valid.any():
        rows = positions[valid]
        net.position_mean.copy_(torch.from_numpy(rows.mean(0).astype(np.float32)))
        net.position_scale.copy_(torch.from_numpy(np.maximum(rows.std(0), 0.02).astype(np.float32)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    labelled = facts != UNLABELLED
    positive = (facts == 1) & labelled
    pos_weight = torch.from_numpy(((labelled.sum(0) - positive.sum(0)) / np.maximum(positive.sum(0), 1)).clip(0.2, 20.0).astype(np.float32))
    count = len(facts)
    losses: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    net.train()
    step = 0
    for step in range(1, steps + 1):
        index = np.sort(rng.choice(count, size=min(batch_size, count), replace=False))
        batch = augment(images_to_input({c: images[c][index] for c in config.cameras}, config), rng)
        logits, predicted = net(batch)
        target = torch.from_numpy(facts[index].astype(np.float32))
        mask = torch.from_numpy(labelled[index].astype(np.float32))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.clamp(0, 1), pos_weight=pos_weight, reduction="none")
        loss = (bce * mask).sum() / mask.sum().clamp_min(1.0)
        if config.objects:
            v = torch.from_numpy(valid[index].astype(np.float32))
            error = ((predicted - torch.from_numpy(positions[index])) / net.position_scale).pow(2).sum(-1)
            loss = loss + position_weight * (error * v).sum() / v.sum().clamp_min(1.0)
        learning.optimizer_step(loss, optimizer, schedule, step, losses, progress)
        if max_cpu_s is not None and time.process_time() - cpu_started > max_cpu_s:
            break
    net.eval()
    return TrainResult(SceneDetector(net, config), step, time.process_time() - cpu_started, time.perf_counter() - started, losses)


def position_errors(detector: SceneDetector, images: Mapping[str, np.ndarray], positions: np.ndarray, valid: np.ndarray,
                    rows: np.ndarray) -> np.ndarray:
    """Mean error [m] per object over ``rows`` where its position label is valid (nan: none)."""
    _, predicted = detector.predict_batch({c: images[c][rows] for c in detector.config.cameras})
    errors = np.linalg.norm(predicted - positions[rows], axis=-1)
    return np.array([errors[valid[rows, o], o].mean() if valid[rows, o].any() else np.nan for o in range(positions.shape[1])])


def retrain_positions(detector: SceneDetector, images: Mapping[str, np.ndarray], positions: np.ndarray, valid: np.ndarray,
                      early: np.ndarray, objects: Sequence[int], steps: int = 400, batch_size: int = 48, seed: int = 1,
                      learning_rate: float = 3e-3) -> None:
    """Train the keypoint maps of ``objects`` again from a fresh start, the cameras' features frozen,
    on early frames (the arm at rest, nothing occluded; ``early`` marks them), as the WAM's goal
    localiser's curriculum does: a spatial-softmax keypoint that settled on the wrong thing does not
    move off it by itself."""
    import torch

    net = detector.net
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fresh = torch.nn.Conv2d(net.keypoints.in_channels, net.keypoints.out_channels, 3, padding=1)
    with torch.no_grad():
        for o in objects:
            net.keypoints.weight[o] = fresh.weight[o]
            net.keypoints.bias[o] = fresh.bias[o]
    parameters = [net.keypoints.weight, net.keypoints.bias, *net.plane.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    rows = np.flatnonzero(early & valid.any(1))
    net.train()
    for _ in range(steps):
        index = np.sort(rng.choice(rows, size=min(batch_size, len(rows)), replace=False))
        batch = augment(images_to_input({c: images[c][index] for c in detector.config.cameras}, detector.config), rng)
        with torch.no_grad():
            features = [trunk.stem(batch[:, i]) for i, trunk in enumerate(net.trunks)]
        maps = net.keypoints(features[net.position_camera])
        b, o, h, w = maps.shape
        weights = torch.softmax(maps.reshape(b, o, h * w), dim=-1).reshape(b, o, h, w)
        xs, ys = torch.linspace(-1.0, 1.0, w), torch.linspace(-1.0, 1.0, h)
        keypoints = torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)
        predicted = net.plane(keypoints) * net.position_scale + net.position_mean
        v = torch.from_numpy(valid[index].astype(np.float32))
        error = ((predicted - torch.from_numpy(positions[index])) / net.position_scale).pow(2).sum(-1)
        loss = (error * v).sum() / v.sum().clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()


def evaluate(detector: SceneDetector, images: Mapping[str, np.ndarray], facts: np.ndarray, positions: np.ndarray,
             valid: np.ndarray, ranges: Sequence[tuple[int, int]], belief: BeliefConfig = BeliefConfig(),
             fps: float = 10.0, batch_size: int = 128, every: int = 1) -> dict[str, Any]:
    """Held-out metrics: per-frame precision and recall of each fact at ``belief.done_threshold``
    (labelled frames only), the position error, and event-level numbers of the belief filter run
    over each episode in time order, reading every ``every``-th frame (the planner reads
    ``detector_period_s``: 5 frames at 10 fps): see below."""
    probabilities, predicted = [], []
    for start in range(0, len(facts), batch_size):
        p, q = detector.predict_batch({c: images[c][start:start + batch_size] for c in detector.config.cameras})
        probabilities.append(p)
        predicted.append(q)
    probabilities = np.concatenate(probabilities)
    predicted = np.concatenate(predicted)
    labelled = facts != UNLABELLED
    said = probabilities >= belief.done_threshold
    truth = facts == 1
    tp = int((said & truth & labelled).sum())
    fp = int((said & ~truth & labelled).sum())
    fn = int((~said & truth & labelled).sum())
    report: dict[str, Any] = {
        "frames": int(len(facts)),
        "labelled_fact_frames": int(labelled.sum()),
        "frame_precision": tp / max(tp + fp, 1),
        "frame_recall": tp / max(tp + fn, 1),
    }
    per_fact = {}
    for column, fact in enumerate(detector.facts):
        m = labelled[:, column]
        s, t = said[m, column], truth[m, column]
        per_fact[format_fact(fact)] = {"precision": float((s & t).sum() / max(s.sum(), 1)), "recall": float((s & t).sum() / max(t.sum(), 1)),
                                       "positives": int(t.sum()), "negatives": int((~t).sum())}
    report["per_fact"] = per_fact
    if detector.config.objects and valid.any():
        errors = np.linalg.norm(predicted - positions, axis=-1)[valid]
        report["position_error_cm_mean"] = float(100 * errors.mean())
        report["position_error_cm_p90"] = float(100 * np.quantile(errors, 0.9))
    # Event level, through the belief filter, episode by episode, as the planner runs it. A
    # completion is detected when the belief turns true within [-1 s, +3 s] of the label's onset
    # (labels of a last subtask are themselves a release-time estimate); turning true earlier, or
    # for a fact that never holds, is a false alarm; turning false while the label still holds
    # (an occlusion) is a false loss: each would make the planner replan. A completion whose label
    # turns true too close to the end of its recorded episode for the filter to confirm it (demos
    # stop half a second after the last release) is counted apart as unobservable, not as missed.
    detected = missed = false_alarms = false_losses = unobservable = 0
    delays = []
    early = int(round(1.0 * fps))
    for start, length in ranges:
        filt = FactBelief(detector.facts, belief)
        events: dict[int, list[tuple[str, int]]] = {c: [] for c in range(len(detector.facts))}
        for t in range(0, length, every):
            before = filt.state
            after = filt.update({fact: float(probabilities[start + t, c]) for c, fact in enumerate(detector.facts)})
            for c, fact in enumerate(detector.facts):
                if fact in after and fact not in before:
                    events[c].append(("on", t))
                elif fact in before and fact not in after:
                    events[c].append(("off", t))
        for c in range(len(detector.facts)):
            column = facts[start:start + length, c]
            onset = np.flatnonzero(column == 1)
            first_true = int(onset[0]) if len(onset) else None
            found = None
            for kind, t in events[c]:
                if kind == "on":
                    if first_true is None or t < first_true - early:
                        false_alarms += 1
                    elif found is None and t <= first_true + 3 * fps + every:
                        found = t
                elif first_true is not None and t > first_true and column[t] != 0:
                    false_losses += 1
            if first_true is not None and found is None and length - first_true <= belief.confirmations * every + early:
                unobservable += 1
            elif first_true is not None:
                if found is not None:
                    detected += 1
                    delays.append((found - first_true) / fps)
                else:
                    missed += 1
    report.update({
        "completions": detected + missed,
        "completions_unobservable": unobservable,
        "completion_recall": detected / max(detected + missed, 1),
        "completion_precision": detected / max(detected + false_alarms, 1),
        "false_alarms": false_alarms,
        "false_losses": false_losses,
        "detection_delay_s_median": float(np.median(delays)) if delays else float("nan"),
    })
    return report


def relation_words(positions: Mapping[str, tuple[float, float]], scene: Scene, domain: Domain) -> dict[str, list[str]]:
    """Words for the language model's object list, from estimated positions: nearest to / farthest
    from each container and the robot, leftmost / rightmost (the robot's left is +y)."""
    movable_categories = {c for skill in domain.skills.values() for c in skill.argument_categories[:1]}
    movable = [o.name for o in scene.objects if o.category in movable_categories and o.name in positions]
    containers = [o.name for o in scene.objects if o.category not in movable_categories and o.name in positions]
    words: dict[str, list[str]] = {name: [] for name in movable}
    if len(movable) < 2:
        return words

    def mark(key: Callable[[str], float], low: str, high: str) -> None:
        ordered = sorted(movable, key=key)
        words[ordered[0]].append(low)
        words[ordered[-1]].append(high)

    for container in containers:
        cx, cy = positions[container]
        mark(lambda n: math.hypot(positions[n][0] - cx, positions[n][1] - cy), f"nearest to the {container.replace('_', ' ')}",
             f"farthest from the {container.replace('_', ' ')}")
    mark(lambda n: math.hypot(*positions[n]), "nearest to the robot", "farthest from the robot")
    mark(lambda n: -positions[n][1], "leftmost", "rightmost")
    return words
