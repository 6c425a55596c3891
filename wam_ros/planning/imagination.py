"""Imagination inside the search: the WAM rolls a plan forward and its progress head scores each subtask.

World-VLA-Loop and WorldGym evaluate a policy inside a world model; here the world model
evaluates a plan for the policy it already contains. From the live observation, each subtask of
a plan prefix is imagined as the robot would run it: the WAM's policy proposes a chunk for the
subtask's instruction, forward dynamics predicts the frame ``future_offset`` steps later under
those actions, the chunk's target at that step becomes the imagined joint state, and the loop
repeats from the imagined observation, up to ``chunks_per_subtask`` chunks or until the progress
head on the imagined frame reaches ``done_progress``. The subtask's imagined success is the
highest progress reached; the next subtask starts from the last imagined observation. Results
are cached by instruction prefix, so a tree search pays for each prefix once.

``WorldModelRollouts.success(instructions)`` is what :class:`wam_ros.planning.value.PlanEvaluator`
takes as ``imagine_plan``. Needs the model in-process (the planner's benchmark and tests); the
node's ``~/imagine`` service predicts from the live observation only (an imagined observation
cannot be sent back yet: docs/planner.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class Imagined:
    success: float  # highest progress the head gave an imagined frame of this subtask
    progresses: list[float]
    images: dict[str, np.ndarray]  # the last imagined observation, {camera: (1, H, W, 3)}
    state: np.ndarray  # (1, state_dim)
    chunks: int
    scored: float | None = None  # ``scorer`` on the last imagined frames (e.g. the scene detector), when given


class WorldModelRollouts:
    """Imagined plan execution from one real observation (see the module docstring)."""

    def __init__(self, runtime: Any, images: dict[str, np.ndarray], state: np.ndarray, chunks_per_subtask: int = 8,
                 done_progress: float = 0.9, video_steps: int | None = None, max_depth: int = 3,
                 scorer: Any = None) -> None:
        """``scorer(frames: {camera: (H, W, 3)}, instruction) -> float``: a second judge of the
        imagined frames (the benchmark tries the scene detector), reported beside the progress head."""
        self.scorer = scorer
        self.runtime = runtime
        self.root_images = {c: np.asarray(images[c]) for c in runtime.config.cameras}
        self.root_state = np.asarray(state, np.float32)
        self.chunks = chunks_per_subtask
        self.done_progress = done_progress
        self.video_steps = video_steps
        self.max_depth = max_depth
        self._cache: dict[tuple[str, ...], Imagined] = {}
        self.model_calls = 0
        self.time_s = 0.0

    def subtask(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str) -> Imagined:
        """Roll one subtask forward from (images, state)."""
        runtime = self.runtime
        config = runtime.config
        step = min(config.future_offset, config.horizon) - 1
        progresses: list[float] = []
        for _ in range(self.chunks):
            chunk = runtime.policy(images, state, instruction)
            frames, progress = runtime.imagine(images, state, instruction, actions=chunk, steps=self.video_steps)
            self.model_calls += 2
            progresses.append(float(progress))
            images = {c: frames[c][None] for c in config.cameras}
            state = chunk[step][None].astype(np.float32)
            if progress >= self.done_progress:
                break
        scored = self.scorer({c: images[c][0] for c in images}, instruction) if self.scorer is not None else None
        return Imagined(max(progresses) if progresses else 0.0, progresses, images, state, len(progresses), scored)

    def rollout(self, instructions: Sequence[str]) -> list[Imagined]:
        """Each subtask of ``instructions`` imagined after the ones before it (at most ``max_depth``)."""
        started = time.perf_counter()
        results: list[Imagined] = []
        images, state = self.root_images, self.root_state
        for depth in range(min(len(instructions), self.max_depth)):
            key = tuple(instructions[: depth + 1])
            if key not in self._cache:
                self._cache[key] = self.subtask(images, state, instructions[depth])
            result = self._cache[key]
            results.append(result)
            images, state = result.images, result.state
        self.time_s += time.perf_counter() - started
        return results

    def success(self, instructions: Sequence[str]) -> list[float | None]:
        """Imagined success per subtask; None past ``max_depth`` (the evaluator counts it neutral)."""
        imagined = [r.success for r in self.rollout(instructions)]
        return imagined + [None] * (len(instructions) - len(imagined))
