"""Tabletop tasks: seeded layouts, language instructions and success predicates.

A task samples an :class:`EpisodeSpec` from a seed (object placement, which cube, which order)
and judges a :class:`SceneState` (object poses, TCP, which cubes the fingers touch). Predicates
are pure functions of that state, so they can be checked on constructed states without physics.

Every task uses the same scene: red, green and blue cubes on the table and a bin; the push zone
and the reach target are visible only in their task. Cubes that a task does not mention stay on
the table as distractors, so the instruction decides what to do.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from wam_ros.sim.config import DISTRACTOR_COLOURS, SimConfig
from wam_ros.sim.scene import CUBE_COLOURS, CUBES, ZONE_HALF_SIZE_M

COLOURS = tuple(CUBE_COLOURS)
REACH_TOLERANCE_M = 0.02
STACK_XY_TOLERANCE_M = 0.02
RESTING_TOLERANCE_M = 0.01  # how far a resting cube's height may be from its nominal height
CUBE_CLEARANCE_M = 0.085  # minimum distance between cube centres at reset
# Where a cube goes in the bin, along the bin's x axis (the base frame's: away from the robot),
# and how an instruction names it: the k-th cube of bin_three goes to slot k. A subtask
# instruction that names the slot tells the policy where to release, which the image of a bin
# already holding a cube did not (docs/planner.md).
BIN_SLOT_OFFSETS_X_M = (0.0, -0.07, 0.07)
BIN_SLOT_PHRASES = ("the bin", "the near end of the bin", "the far end of the bin")
SLOT_SLACK_M = 0.001  # insert: how far past the clearance a centre may be (contact penetration, the cube's tilt)
DISTRACTOR_SIZE_RANGE_M = (0.035, 0.05)  # edge of a distractor box
DISTRACTOR_CLEARANCE_M = 0.07  # from cube centres, the push corridor and each other
# Random streams of the scene shifts drawn with the layout (the env draws the others): a seed's
# layout stays the same with or without them.
_SIZE_STREAM, _DISTRACTOR_STREAM = 0x512E, 0xD157


@dataclass
class SceneState:
    """What the predicates look at; positions in the base frame [m], quaternions (x, y, z, w)."""

    cube_positions: dict[str, np.ndarray]
    cube_quats_xyzw: dict[str, np.ndarray]
    held: dict[str, bool]  # cube -> a finger touches it
    tcp_position: np.ndarray
    bin_center: np.ndarray  # (x, y) of the bin's centre
    zone_center: np.ndarray | None = None
    target_position: np.ndarray | None = None


@dataclass
class Distractor:
    """A box no instruction names (``SimConfig.distractor_count``)."""

    position: np.ndarray  # (3,) centre [m], resting on the table
    yaw_rad: float
    size_m: float  # edge
    rgb: tuple[float, float, float]


@dataclass
class EpisodeSpec:
    """One seeded episode: where everything starts and what has to be done."""

    task: str
    seed: int
    instruction: str
    subtask_instructions: list[str]
    cube_positions: dict[str, np.ndarray]
    cube_yaws_rad: dict[str, float]
    bin_center_xy: np.ndarray
    zone_center_xy: np.ndarray | None = None
    target_position: np.ndarray | None = None
    cubes: list[str] = field(default_factory=list)  # the cubes the task acts on, in order
    slot_pose: np.ndarray | None = None  # insert: the slot's centre x, y [m] and yaw [rad]; the bin is parked then
    cube_sizes_m: dict[str, float] = field(default_factory=dict)  # edge per cube (SimConfig.cube_size_jitter_fraction); empty: all nominal
    distractors: list[Distractor] = field(default_factory=list)

    def cube_size(self, cube: str, nominal_m: float) -> float:
        """The edge of ``cube`` in this episode [m] (``nominal_m``: SimConfig.cube_size_m)."""
        return self.cube_sizes_m.get(cube, nominal_m)


def cube_name(colour: str) -> str:
    return f"{colour}_cube"


def pick_place_instruction(cube: str, slot: int = 0) -> str:
    return f"put the {cube.removesuffix('_cube')} cube in {BIN_SLOT_PHRASES[slot]}"


class Task(ABC):
    """A task: samples episodes and counts the subtasks a scene state has satisfied in order."""

    name: str

    def __init__(self, config: SimConfig) -> None:
        self.config = config

    @abstractmethod
    def sample(self, seed: int) -> EpisodeSpec:
        """The episode for ``seed`` (deterministic)."""

    @abstractmethod
    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        """One bool per subtask: is its goal satisfied in ``state``?"""

    def subtasks_done(self, spec: EpisodeSpec, state: SceneState) -> int:
        """Number of leading subtasks whose goal holds (subtasks count in order)."""
        done = 0
        for satisfied in self.subtask_predicates(spec, state):
            if not satisfied:
                break
            done += 1
        return done

    def success(self, spec: EpisodeSpec, state: SceneState) -> bool:
        return self.subtasks_done(spec, state) == len(spec.subtask_instructions)

    def placement_error_m(self, spec: EpisodeSpec, state: SceneState) -> float | None:
        """How far the moved object is from where the task wants it, horizontally [m]; None for tasks
        without one exact place (a bin, a square)."""
        return None

    # -- shared predicates -------------------------------------------------------------------
    def resting_on_table(self, position: np.ndarray, size_m: float) -> bool:
        return abs(position[2] - size_m / 2) <= RESTING_TOLERANCE_M

    def in_bin(self, state: SceneState, cube: str) -> bool:
        """The cube's centre is inside the bin's inner walls, below the rim, and released."""
        position = state.cube_positions[cube]
        inner_x, inner_y = (s / 2 for s in self.config.bin_inner_size_m)
        offset = position[:2] - state.bin_center[:2]
        return bool(
            abs(offset[0]) <= inner_x
            and abs(offset[1]) <= inner_y
            and position[2] <= self.config.bin_wall_height_m
            and not state.held[cube]
        )

    # -- layout sampling -------------------------------------------------------------------------
    def _rng(self, seed: int) -> np.random.Generator:
        # Different tasks get different layouts for the same seed, reproducibly.
        return np.random.default_rng([int(seed) & 0xFFFFFFFF, sum(map(ord, self.name))])

    def _bin_center(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.config.bin_center_xy_m) + rng.uniform(-0.02, 0.02, 2)

    def _place_cubes(
        self,
        rng: np.random.Generator,
        fixed: dict[str, np.ndarray] | None = None,
        keep_out: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> dict[str, np.ndarray]:
        """xy positions of all cubes in the cube region, apart from each other and from the segments."""
        low, high = np.asarray(self.config.cube_region_min_xy_m), np.asarray(self.config.cube_region_max_xy_m)
        placed = dict(fixed or {})
        for cube in CUBES:
            if cube in placed:
                continue
            for _ in range(1000):
                candidate = rng.uniform(low, high)
                if all(np.linalg.norm(candidate - p) >= CUBE_CLEARANCE_M for p in placed.values()) and all(
                    _distance_to_segment(candidate, a, b) >= CUBE_CLEARANCE_M for a, b in keep_out or []
                ):
                    placed[cube] = candidate
                    break
            else:
                raise RuntimeError(f"{self.name}: no free place for {cube} (region too small for the clearance)")
        return placed

    def _spec(self, seed: int, rng: np.random.Generator, xy: dict[str, np.ndarray],
              keep_out: list[tuple[np.ndarray, np.ndarray]] | None = None, **kwargs: object) -> EpisodeSpec:
        """The episode with cubes at ``xy``; cube sizes and distractors (away from the cubes, the
        ``keep_out`` segments, the push zone and the bin) come from their own random streams."""
        config = self.config
        sizes = {c: config.cube_size_m for c in CUBES}
        if config.cube_size_jitter_fraction > 0:
            scale = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SIZE_STREAM]).uniform(-1, 1, len(CUBES))
            sizes = {c: config.cube_size_m * (1 + config.cube_size_jitter_fraction * s) for c, s in zip(CUBES, scale)}
        spec = EpisodeSpec(
            task=self.name,
            seed=seed,
            cube_positions={c: np.array([p[0], p[1], sizes[c] / 2]) for c, p in xy.items()},
            cube_yaws_rad={c: float(rng.uniform(-math.pi / 4, math.pi / 4)) for c in CUBES},
            cube_sizes_m=sizes,
            **kwargs,  # type: ignore[arg-type]
        )
        if config.distractor_count:
            spec.distractors = self._distractors(spec, keep_out or [], np.random.default_rng([int(seed) & 0xFFFFFFFF, _DISTRACTOR_STREAM]))
        return spec

    def _distractors(self, spec: EpisodeSpec, keep_out: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> list[Distractor]:
        low, high = np.asarray(self.config.cube_region_min_xy_m), np.asarray(self.config.cube_region_max_xy_m)
        taken = [p[:2] for p in spec.cube_positions.values()]
        if spec.zone_center_xy is not None:
            taken.append(np.asarray(spec.zone_center_xy))
        bin_reach = 0.5 * float(np.linalg.norm(self.config.bin_inner_size_m)) + DISTRACTOR_CLEARANCE_M
        colours = rng.permutation(len(DISTRACTOR_COLOURS))
        distractors = []
        for index in range(self.config.distractor_count):
            size = float(rng.uniform(*DISTRACTOR_SIZE_RANGE_M))
            yaw = float(rng.uniform(-math.pi / 4, math.pi / 4))
            for _ in range(1000):
                candidate = rng.uniform(low, high)
                if (all(np.linalg.norm(candidate - p) >= DISTRACTOR_CLEARANCE_M for p in taken)
                        and np.linalg.norm(candidate - spec.bin_center_xy) >= bin_reach
                        and all(_distance_to_segment(candidate, a, b) >= DISTRACTOR_CLEARANCE_M for a, b in keep_out)):
                    break
            else:
                raise RuntimeError(f"{self.name} seed {spec.seed}: no free place for distractor {index} (region too small)")
            taken.append(candidate)
            distractors.append(Distractor(np.array([candidate[0], candidate[1], size / 2]), yaw, size, DISTRACTOR_COLOURS[colours[index]]))
        return distractors


class Reach(Task):
    """Move the gripper's TCP to a yellow ball floating above the table."""

    name = "reach"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        target = np.array([rng.uniform(0.35, 0.6), rng.uniform(-0.25, 0.25), rng.uniform(0.1, 0.35)])
        instruction = "move the gripper to the yellow ball"
        return self._spec(seed, rng, self._place_cubes(rng), instruction=instruction, subtask_instructions=[instruction],
                          bin_center_xy=self._bin_center(rng), target_position=target)

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        assert state.target_position is not None
        return [bool(np.linalg.norm(state.tcp_position - state.target_position) <= REACH_TOLERANCE_M)]


class Push(Task):
    """Push one cube (seeded colour) onto the yellow square; the cube must stay on the table."""

    name = "push"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        cube = cube_name(COLOURS[rng.integers(len(COLOURS))])
        low, high = np.asarray(self.config.cube_region_min_xy_m), np.asarray(self.config.cube_region_max_xy_m)
        for _ in range(1000):
            start = rng.uniform(low + 0.03, high - 0.03)
            angle = rng.uniform(-math.pi, math.pi)
            distance = rng.uniform(0.12, 0.18)
            zone = start + distance * np.array([math.cos(angle), math.sin(angle)])
            # The pusher starts behind the cube: keep that spot and the zone inside the region.
            behind = start - 0.08 * np.array([math.cos(angle), math.sin(angle)])
            if np.all(zone >= low) and np.all(zone <= high) and np.all(behind >= low - 0.05) and np.all(behind <= high + 0.05):
                break
        corridor = (start - 0.1 * (zone - start) / distance, zone + 0.05 * (zone - start) / distance)
        xy = self._place_cubes(rng, fixed={cube: start}, keep_out=[corridor])
        instruction = f"push the {cube.removesuffix('_cube')} cube onto the yellow square"
        return self._spec(seed, rng, xy, keep_out=[corridor], instruction=instruction, subtask_instructions=[instruction],
                          bin_center_xy=self._bin_center(rng), zone_center_xy=zone, cubes=[cube])

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        assert state.zone_center is not None
        cube = spec.cubes[0]
        position = state.cube_positions[cube]
        inside = bool(np.all(np.abs(position[:2] - state.zone_center[:2]) <= ZONE_HALF_SIZE_M))
        return [inside and self.resting_on_table(position, spec.cube_size(cube, self.config.cube_size_m)) and not state.held[cube]]


class PickPlace(Task):
    """Put one cube (seeded colour) in the bin."""

    name = "pick_place"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        cube = cube_name(COLOURS[rng.integers(len(COLOURS))])
        instruction = pick_place_instruction(cube)
        return self._spec(seed, rng, self._place_cubes(rng), instruction=instruction, subtask_instructions=[instruction],
                          bin_center_xy=self._bin_center(rng), cubes=[cube])

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        return [self.in_bin(state, spec.cubes[0])]


class Stack(Task):
    """Stack one cube on another (seeded pair); the bottom cube stays on the table."""

    name = "stack"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        top, bottom = (cube_name(COLOURS[i]) for i in rng.permutation(len(COLOURS))[:2])
        instruction = f"stack the {top.removesuffix('_cube')} cube on the {bottom.removesuffix('_cube')} cube"
        return self._spec(seed, rng, self._place_cubes(rng), instruction=instruction, subtask_instructions=[instruction],
                          bin_center_xy=self._bin_center(rng), cubes=[top, bottom])

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        top, bottom = spec.cubes
        upper, lower = state.cube_positions[top], state.cube_positions[bottom]
        aligned = np.linalg.norm(upper[:2] - lower[:2]) <= STACK_XY_TOLERANCE_M
        on_top = abs(upper[2] - lower[2] - (spec.cube_size(top, self.config.cube_size_m) + spec.cube_size(bottom, self.config.cube_size_m)) / 2) <= RESTING_TOLERANCE_M
        return [bool(aligned and on_top and self.resting_on_table(lower, spec.cube_size(bottom, self.config.cube_size_m)) and not state.held[top])]

    def placement_error_m(self, spec: EpisodeSpec, state: SceneState) -> float | None:
        top, bottom = spec.cubes
        return float(np.linalg.norm(state.cube_positions[top][:2] - state.cube_positions[bottom][:2]))


class Insert(Task):
    """Put one cube (seeded colour) into a square slot ``SimConfig.slot_clearance_m`` wider than the
    cube on each side (5 mm by default): a placement within half a centimetre, turned to the slot
    within about 13 degrees. The slot stands where the bin does in the other tasks (the bin is parked)."""

    name = "insert"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        cube = cube_name(COLOURS[rng.integers(len(COLOURS))])
        instruction = f"put the {cube.removesuffix('_cube')} cube in the slot"
        slot = np.array([*self._bin_center(rng) + rng.uniform(-0.02, 0.02, 2), rng.uniform(-math.pi / 4, math.pi / 4)])
        return self._spec(seed, rng, self._place_cubes(rng), instruction=instruction, subtask_instructions=[instruction],
                          bin_center_xy=slot[:2].copy(), cubes=[cube], slot_pose=slot)

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        cube = spec.cubes[0]
        position = state.cube_positions[cube]
        # Resting on the table between the walls, its centre can be at most the clearance off (1 mm of contact slack).
        return [bool(np.all(np.abs(slot_offset(spec, position)) <= self.config.slot_clearance_m + SLOT_SLACK_M)
                     and self.resting_on_table(position, spec.cube_size(cube, self.config.cube_size_m)) and not state.held[cube])]

    def placement_error_m(self, spec: EpisodeSpec, state: SceneState) -> float | None:
        return float(np.linalg.norm(slot_offset(spec, state.cube_positions[spec.cubes[0]])))


def slot_offset(spec: EpisodeSpec, position: np.ndarray) -> np.ndarray:
    """(2,) a position's horizontal offset from the slot's centre along the slot's own axes [m]."""
    assert spec.slot_pose is not None
    x, y, yaw = spec.slot_pose
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dy = position[0] - x, position[1] - y
    return np.array([c * dx + s * dy, -s * dx + c * dy])


class BinThree(Task):
    """Put all three cubes in the bin in a seeded order: one pick-and-place subtask per cube.

    Subtask k puts its cube in bin slot k and says so ("put the green cube in the near end of
    the bin"); the success predicate asks only that every cube is in the bin.
    """

    name = "bin_three"

    def sample(self, seed: int) -> EpisodeSpec:
        rng = self._rng(seed)
        order = [cube_name(COLOURS[i]) for i in rng.permutation(len(COLOURS))]
        colours = [c.removesuffix("_cube") for c in order]
        instruction = f"put the {colours[0]}, {colours[1]} and {colours[2]} cubes in the bin, in that order"
        return self._spec(seed, rng, self._place_cubes(rng), instruction=instruction,
                          subtask_instructions=[pick_place_instruction(c, slot) for slot, c in enumerate(order)],
                          bin_center_xy=self._bin_center(rng), cubes=order)

    def subtask_predicates(self, spec: EpisodeSpec, state: SceneState) -> list[bool]:
        return [self.in_bin(state, cube) for cube in spec.cubes]


TASKS: dict[str, type[Task]] = {task.name: task for task in (Reach, Push, PickPlace, Stack, BinThree, Insert)}

PHRASINGS = ("template", "reworded")
# Held-out wordings of bin_three's whole instruction: no demo or config carries them, so they
# ask what a person at the arm would say of a model trained on the template. {0}, {1}, {2}: the
# cube colours in the task's order; the seed picks the wording.
BIN_THREE_REWORDINGS = (
    "first the {0} cube, then the {1} one, then the {2} one: all of them into the bin",
    "tidy up the table: the {0} cube goes in the bin first, the {1} cube next and the {2} cube last",
    "drop the {0} cube in the bin, after that the {1} cube, and finally the {2} cube",
    "bin the {0} cube, then bin the {1} cube, then bin the {2} cube",
    "clear the cubes into the bin starting with {0}, then {1}, ending with {2}",
)


def episode_instruction(spec: EpisodeSpec, phrasing: str = "template") -> str:
    """The whole instruction for ``spec`` in ``phrasing``: the task's own, or a held-out wording."""
    if phrasing == "template":
        return spec.instruction
    if phrasing != "reworded":
        raise ValueError(f"unknown phrasing {phrasing!r}; known: {', '.join(PHRASINGS)}")
    if spec.task != BinThree.name:
        raise ValueError(f"reworded instructions exist for {BinThree.name} only, not {spec.task!r}")
    colours = [cube.removesuffix("_cube") for cube in spec.cubes]
    return BIN_THREE_REWORDINGS[spec.seed % len(BIN_THREE_REWORDINGS)].format(*colours)


def make_task(name: str, config: SimConfig) -> Task:
    try:
        return TASKS[name](config)
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def _distance_to_segment(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    direction = b - a
    length_sq = float(direction @ direction)
    s = 0.0 if length_sq == 0 else float(np.clip((point - a) @ direction / length_sq, 0.0, 1.0))
    return float(np.linalg.norm(point - (a + s * direction)))
