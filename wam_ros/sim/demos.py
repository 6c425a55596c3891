"""Expert demonstrations in the episode dataset format (what ``wam-ros sim-demos`` writes).

Frame t holds the observation at t (state, camera images) and the action the expert chose from
it (joint targets reached at t + 1 / fps). Subtask spans come from the task's predicates: a
subtask's span runs from the frame after the previous subtask was satisfied to the frame its
own predicate first holds; the last span runs to the end of the episode.
"""
from __future__ import annotations

import collections
import multiprocessing
import signal
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from wam_ros.data.episodes import DatasetInfo, Episode, SubtaskSpan
from wam_ros.robot import RobotConfig
from wam_ros.sim.config import SimConfig
from wam_ros.sim.env import TabletopEnv
from wam_ros.sim.expert import make_expert

#: Control steps an episode may take before it counts as failed, per task (at 10 Hz).
MAX_STEPS = {"reach": 100, "push": 200, "pick_place": 300, "stack": 300, "bin_three": 700, "insert": 300}
SETTLE_STEPS = 5  # frames recorded after the expert finished, so the outcome is visible
NOISE_CORRELATION_S = 0.5  # time constant of the injected action noise (record_demo)
NOISE_FADE_PER_STEP = 0.25  # how fast the noise fades out and back in around a release (record_demo)


def dataset_info(robot: RobotConfig, config: SimConfig | TabletopEnv | None = None) -> DatasetInfo:
    """The dataset layout of sim demos for ``robot``: joints + gripper width, the sim cameras.

    ``config``: the scene settings (or an env, whose settings are used); default from the robot YAML.
    """
    if isinstance(config, TabletopEnv):
        config = config.config
    config = config or SimConfig.from_robot(robot)
    names = [*robot.arm.joint_names, "gripper_width"]
    return DatasetInfo(
        fps=1.0 / config.control_period_s,
        robot=robot.name,
        joint_names=list(robot.arm.joint_names),
        state_names=names,
        action_names=list(names),
        cameras={c.name: (c.height, c.width) for c in robot.cameras if c.source == "sim"},
    )


@dataclass
class DemoResult:
    episode: Episode
    success: bool
    steps: int


def subtask_spans(done_per_frame: list[int], instructions: list[str]) -> list[SubtaskSpan]:
    """Spans [start, end) per subtask from the number of subtasks done at each frame."""
    spans: list[SubtaskSpan] = []
    start = 0
    total = len(done_per_frame)
    for index, instruction in enumerate(instructions):
        finished = next((t for t, done in enumerate(done_per_frame) if done > index), None)
        last = index == len(instructions) - 1
        end = total if (last or finished is None) else min(finished + 1, total)
        if end > start:
            spans.append(SubtaskSpan(instruction, start, end))
        if finished is None:
            break
        start = end
    return spans


def record_demo(env: TabletopEnv, task: str, seed: int, render: bool = True, max_steps: int | None = None,
                action_noise_rad: float = 0.0) -> DemoResult:
    """Run the scripted expert on (task, seed) and return the episode it produced.

    ``action_noise_rad`` > 0 (DART, Laskey et al. 2017): the arm executes the expert's joint
    targets plus smooth Gaussian noise of this standard deviation per joint (an
    Ornstein-Uhlenbeck process with a ``NOISE_CORRELATION_S`` time constant, seeded by the
    episode's seed), while the episode records the expert's own targets. The expert follows
    its plan regardless of the noise, so every recorded action leads back to the path from
    where the noise put the arm: what a learned policy has to do after its own errors, and
    something noise-free demonstrations never show. The noise fades out (``NOISE_FADE_PER_STEP``)
    while the expert lowers a held cube onto its place and lets go: the expert does not correct
    it, and a release a centimetre off missed the stack in 8 of 10 DART episodes.
    """
    observation = env.reset(task, seed)
    expert = make_expert(env)
    max_steps = max_steps or MAX_STEPS.get(task, 400)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xDA27])
    keep = float(np.exp(-env.config.control_period_s / NOISE_CORRELATION_S))
    noise = np.zeros(env.dof)
    gain = 1.0
    cameras = [c.name for c in env.robot.cameras if c.source == "sim"]
    states, actions, times, done = [], [], [], []
    frames: dict[str, list[np.ndarray]] = {name: [] for name in cameras}
    settle = 0
    while len(states) < max_steps and settle < SETTLE_STEPS:
        if render:
            for name, image in observation.images.items():
                frames[name].append(image)
        action = expert.act(observation)
        states.append(observation.state)
        actions.append(action)
        times.append(observation.time_s)
        done.append(env.task.subtasks_done(env.spec, env.scene_state()))  # type: ignore[union-attr]
        executed = action.copy()
        if action_noise_rad > 0:
            noise = keep * noise + action_noise_rad * np.sqrt(1.0 - keep**2) * rng.standard_normal(env.dof)
            gain = float(np.clip((0.0 if expert.releasing else 1.0) - gain, -NOISE_FADE_PER_STEP, NOISE_FADE_PER_STEP)) + gain
            executed[: env.dof] += gain * noise
        observation = env.step(executed)
        if expert.done:
            settle += 1
    status = env.task_status()
    scene = env.config.shifted()
    episode = Episode(
        task=task,
        instruction=status.instruction,
        states=np.asarray(states, np.float32),
        actions=np.asarray(actions, np.float32),
        images={name: np.asarray(images, np.uint8) for name, images in frames.items()} if render else {},
        timestamps=np.asarray(times, np.float64),
        subtasks=subtask_spans(done, status.subtask_instructions),
        success=status.success,
        seed=int(seed),
        source="sim",
        extra={"expert_failed": expert.failed, "expert_message": expert.message, "subtasks_done": status.subtasks_done,
               "action_noise_rad": action_noise_rad, **({"sim_config": scene} if scene else {})},
    )
    return DemoResult(episode=episode, success=status.success, steps=len(states))


def demo_results(robot: RobotConfig, task: str, seeds: Iterator[int], workers: int = 1, action_noise_rad: float = 0.0,
                 sim_overrides: dict[str, Any] | None = None) -> Iterator[DemoResult]:
    """Expert episodes for ``seeds`` in seed order; ``workers`` > 1 records them in parallel processes
    (``action_noise_rad``: see :func:`record_demo`; ``sim_overrides``: the scene, :meth:`SimConfig.from_robot`).

    The seed iterator may be endless: at most two episodes per worker are in flight, and closing
    the generator (or Ctrl-C) stops the workers.
    """
    if workers <= 1:
        env = TabletopEnv(robot, SimConfig.from_robot(robot, sim_overrides))
        try:
            for seed in seeds:
                yield record_demo(env, task, seed, action_noise_rad=action_noise_rad)
        finally:
            env.close()
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(str(robot.path), sim_overrides))
    try:
        in_flight: collections.deque = collections.deque()
        for seed in seeds:
            in_flight.append(pool.apply_async(_worker_demo, (task, seed, action_noise_rad)))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()
    finally:
        pool.terminate()
        pool.join()


_worker_env: TabletopEnv | None = None


def _start_worker(robot_path: str, sim_overrides: dict[str, Any] | None) -> None:
    from wam_ros.robot import load_robot_config

    global _worker_env
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    robot = load_robot_config(robot_path)
    _worker_env = TabletopEnv(robot, SimConfig.from_robot(robot, sim_overrides))


def _worker_demo(task: str, seed: int, action_noise_rad: float) -> DemoResult:
    assert _worker_env is not None
    return record_demo(_worker_env, task, seed, action_noise_rad=action_noise_rad)
