"""The intervention loop (HG-DAgger) measured: autonomous episodes with an operator, finetune, evaluate, repeat.

One round (:func:`run_dagger`):

1. **collect** through the real graph (:func:`collect_episodes`): the sim on the condition's scene,
   the safety bridge, wam_inference with the current checkpoint, the recorder and the scripted
   operator (``wam_ros.nodes.scripted_operator_node``). Per seed: reset, start a recorded episode,
   give the instruction, AUTONOMY; the operator takes over when the policy fails and hands back;
   on success or timeout HOLD, and the episode's bag is closed with its outcome;
2. **convert** the round's bags into the takeover dataset (every frame's source, the takeovers);
3. **finetune** from the initial checkpoint on the original data plus every round's takeovers,
   interventions weighted (``operator_weight``), the policy's own frames not trained on
   (``policy_weight``, HG-DAgger);
4. **validate** in the in-process sim on the condition and nominally (validation seeds, not the
   held-out ones of the final measurement).

Each round prints one table row: success in collection (with the operator's help) and without any
takeover, takeovers per episode, the operator's share of the time, the largest commanded joint
step at a handover, validation success, CPU minutes (this process and the nodes).
"""
from __future__ import annotations

import dataclasses
import json
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wam_ros.bringup import Bringup, load_bringup
from wam_ros.clients.demo import DemoClient, drive_graph

OPERATOR_NAME = "scripted_operator"
# cubes a third larger than the demos' (0.045 m): the shipped checkpoint does 54 % there, and the
# cameras see every cube (the first condition, cubes beyond the demos' region, put half of them
# outside the front image; docs/intervention.md#measured)
DEFAULT_CONDITION = ["cube_size_m=0.06"]
DEFAULT_COLLECT_SEED_START = 350000
DEFAULT_VALIDATION_SEED_START = 360000


def cpu_minutes() -> float:
    """CPU time of this process and of its finished children (the nodes of past rounds) [min]."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) / 60.0


@dataclass
class CollectedEpisode:
    seed: int
    success: bool
    bag: str
    sim_duration_s: float
    failure: str = ""  # why the episode could not run; empty when it did


class DaggerClient(DemoClient):
    """The demo client plus the recorder's services: one recorded autonomous episode per seed."""

    def __init__(self, startup_timeout_s: float) -> None:
        super().__init__(None, startup_timeout_s)
        from wam_ros_interfaces.srv import StartEpisode, StopEpisode

        self.start_client = self.node.create_client(StartEpisode, "wam/recorder/start_episode")
        self.stop_client = self.node.create_client(StopEpisode, "wam/recorder/stop_episode")
        self.msgs.update(StartEpisode=StartEpisode, StopEpisode=StopEpisode)

    def request_mode(self, mode: int, reason: str) -> bool:
        response = self.call(self.mode_client, self.msgs["SetMode"].Request(mode=mode, reason=reason, requester="dagger"), 10.0)
        return bool(response.accepted)

    def run_recorded_episode(self, task: str, seed: int, timeout_s: float, stopping: threading.Event) -> CollectedEpisode:
        SafetyStatus = self.msgs["SafetyStatus"]
        # IDLE before the reset: a bridge in HOLD would keep commanding where the last episode ended and
        # pull the arm away from the home pose the reset puts it in (IDLE is reached from HOLD only).
        if self.safety.mode in (SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_TELEOP):
            self.request_mode(SafetyStatus.MODE_HOLD, "dagger: next episode")
        if self.safety.mode != SafetyStatus.MODE_IDLE and not self.request_mode(SafetyStatus.MODE_IDLE, "dagger: next episode"):
            raise RuntimeError(f"the bridge refused IDLE before the reset ({self.safety.mode_reason})")
        reset = self.reset_sim(task, seed)
        started = self.call(self.start_client, self.msgs["StartEpisode"].Request(task=task, instruction=reset.instruction,
                                                                               operator_name=OPERATOR_NAME), 10.0)
        if not started.success:
            raise RuntimeError(f"the recorder did not start an episode: {started.message}")
        self.instruct(task, seed, reset.instruction, stopping)
        if not self.request_mode(SafetyStatus.MODE_AUTONOMY, f"dagger: {reset.instruction}"):
            raise RuntimeError(f"the bridge refused AUTONOMY ({self.safety.last_stop_reason})")
        start = self.sim_time_s()
        self.wait_for_outcome(start, timeout_s, stopping)
        grace_s = self.sim_time_s() + 5.0  # let an operator who finished the task hand back, so its takeover ends in the bag
        while self.safety.mode == SafetyStatus.MODE_TELEOP and self.status.success and self.sim_time_s() < grace_s:
            time.sleep(0.02)
        success = bool(self.status.success)
        if self.safety.mode in (SafetyStatus.MODE_AUTONOMY, SafetyStatus.MODE_TELEOP):
            self.request_mode(SafetyStatus.MODE_HOLD, "dagger: episode over")
        time.sleep(0.3)  # the HOLD's brake into the bag
        with self.lock:
            self.recording = False
        stopped = self.call(self.stop_client, self.msgs["StopEpisode"].Request(outcome=1 if success else 2), 30.0)
        return CollectedEpisode(seed, success, stopped.episode_path, self.sim_time_s() - start, "" if stopped.success else stopped.message)


def collect_episodes(bringup: Bringup, task: str, seeds: list[int], episode_timeout_s: float, startup_timeout_s: float,
                     log_path: Path, on_episode: Callable[[CollectedEpisode], None] | None = None) -> tuple[list[CollectedEpisode], str]:
    """Bring the node set up (its output into ``log_path``), record one episode per seed, stop it.
    Returns the episodes and why collection stopped early ('' when it did not)."""
    episodes: list[CollectedEpisode] = []

    def run_seed(client: DaggerClient, seed: int, stopping: threading.Event) -> None:
        episodes.append(client.run_recorded_episode(task, seed, episode_timeout_s, stopping))
        if on_episode is not None:
            on_episode(episodes[-1])

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        drive = drive_graph(bringup, lambda: DaggerClient(startup_timeout_s), seeds, run_seed, startup_timeout_s,
                            hold_wait_s=30.0, output=log)
    failure = drive.failure
    if not failure and len(episodes) != len(seeds):
        failure = "interrupted" if drive.interrupted else f"supervisor exited with {drive.supervisor_code}"
    return episodes, failure


@dataclass
class DaggerOptions:
    """One measurement: the condition, the data, the budget per round (see the module docstring)."""

    init: Path  # the checkpoint the rounds start from (every finetune starts here)
    original: list[Path]  # the data it was trained on, mixed into every finetune
    out: Path
    scene_overrides: list[str]  # the condition: SimConfig KEY=VALUE
    rounds: int = 2
    episodes_per_round: int = 10
    max_takeover_episodes: int = 20  # collection stops once this many recorded episodes had a takeover
    collect_seed_start: int = DEFAULT_COLLECT_SEED_START
    validation_seed_start: int = DEFAULT_VALIDATION_SEED_START
    validation_episodes: int = 10  # per round, on the condition and nominally (0: no validation)
    task: str = "pick_place"
    episode_timeout_s: float = 30.0  # sim seconds
    startup_timeout_s: float = 300.0
    steps: int = 600  # transformer steps per finetune
    goal_steps: int = 0  # > 0: the localiser trains on too (kept as it is by default: see wam-ros dagger --goal-steps)
    operator_weight: float = 4.0
    policy_weight: float = 0.0
    threads: int = 1
    operator_parameters: dict[str, Any] = field(default_factory=dict)  # scripted_operator node parameters


@dataclass
class RoundReport:
    round: int
    checkpoint_used: str
    episodes: int
    collected_success: int  # task done at the end, with the operator's help
    autonomous_success: int  # ... without any takeover
    takeover_episodes: int
    takeovers: int
    operator_share: float  # of the recorded frames
    handover_step_max_rad: float
    motion_step_max_rad: float  # the largest step per output cycle anywhere in the round's episodes
    finetuned: str = ""
    validation_condition: float | None = None
    validation_nominal: float | None = None
    cpu_minutes: dict[str, float] = field(default_factory=dict)
    failure: str = ""

    @property
    def takeovers_per_episode(self) -> float:
        return self.takeovers / self.episodes if self.episodes else 0.0


TABLE_HEADER = ("round  checkpoint            episodes  success(with op)  success(no takeover)  takeover eps  takeovers/ep  "
                "operator share  handover step [rad]  val cond  val nominal  CPU min (collect/train/val)")


def table_row(r: RoundReport) -> str:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    cpu = r.cpu_minutes
    return (f"{r.round:5d}  {Path(r.checkpoint_used).name[:20]:20s}  {r.episodes:8d}  {r.collected_success:16d}  {r.autonomous_success:20d}  "
            f"{r.takeover_episodes:12d}  {r.takeovers_per_episode:12.2f}  {r.operator_share:14.1%}  "
            f"{r.handover_step_max_rad:9.4f} (max {r.motion_step_max_rad:.4f})  {rate(r.validation_condition):>8s}  "
            f"{rate(r.validation_nominal):>11s}  {cpu.get('collect', 0):.1f}/{cpu.get('train', 0):.1f}/{cpu.get('validate', 0):.1f}")


def round_nodes(options: DaggerOptions, checkpoint: Path, bags: Path) -> dict[str, dict[str, Any]]:
    """The bringup's node settings for one round's collection: the sim on the condition, the
    policy, the recorder, and the scripted operator, who sees the condition's scene as a person
    at the arm would (the cubes' size, which its grasps depend on)."""
    return {
        "sim": {"scene_overrides": list(options.scene_overrides)},
        "wam_inference": {"checkpoint": str(checkpoint.resolve())},
        "recorder": {"episodes_dir": str(bags.resolve())},
        "scripted_operator": {"enabled": True, "operator_name": OPERATOR_NAME, "scene_overrides": list(options.scene_overrides),
                              **options.operator_parameters},
    }


def success_rate(checkpoint: Path, task: str, seeds: list[int], sim_overrides: dict[str, Any] | None, threads: int) -> float:
    import torch

    from wam_ros.model import load_policy
    from wam_ros.model.evaluate import evaluate_closed_loop

    torch.set_num_threads(threads)
    return evaluate_closed_loop(load_policy(checkpoint), task, seeds, sim_overrides=sim_overrides).success_rate


def _bag_stats(bags: list[str], robot: Any) -> tuple[float, np.ndarray]:
    """The largest commanded joint step per output cycle at a TELEOP <-> AUTONOMY switch, and every step, over the bags.

    Other switches do not count: after a sim reset the arm stands at home while the bridge, in
    HOLD, still commands where it was, and entering AUTONOMY from rest starts at the measured state."""
    from wam_ros.data.bags import MODE_AUTONOMY, MODE_TELEOP, BagReader
    from wam_ros.data.convert import bag_handover_steps

    handover, motion = [0.0], [np.zeros(0)]
    for bag in bags:
        with BagReader(bag) as reader:
            steps, all_steps = bag_handover_steps(reader, robot)
        handover += [s.step_rad for s in steps if {s.from_mode, s.to_mode} == {MODE_TELEOP, MODE_AUTONOMY}]
        motion.append(all_steps)
    return max(handover), np.concatenate(motion)


def run_dagger(options: DaggerOptions, say: Callable[[str], None] = print) -> list[RoundReport]:
    """Rounds of collect -> convert -> finetune -> validate (module docstring); reports, also in OUT/rounds.jsonl."""
    from wam_ros.data import EpisodeDataset
    from wam_ros.data.convert import convert_bags
    from wam_ros.model.train import TrainOptions, Trainer
    from wam_ros.sim.config import SimConfig, parse_overrides

    o = options
    overrides = parse_overrides(o.scene_overrides)
    takeover_data = o.out / "takeovers"
    checkpoint = o.init
    reports: list[RoundReport] = []
    takeover_episodes = 0
    say(TABLE_HEADER)
    for number in range(1, o.rounds + 1):
        budget = o.max_takeover_episodes - takeover_episodes  # an episode adds at most one: the budget holds
        if budget <= 0:
            say(f"[dagger] {o.max_takeover_episodes} episodes with takeovers collected: no more rounds")
            break
        cpu_start = cpu_minutes()
        bringup = load_bringup("panda_sim", round_nodes(o, Path(checkpoint), o.out / f"round{number}" / "bags"))
        SimConfig.from_robot(bringup.robot, overrides)  # a bad condition fails before anything starts
        first = o.collect_seed_start + (number - 1) * o.episodes_per_round
        seeds = list(range(first, first + min(o.episodes_per_round, budget)))
        say(f"[dagger] round {number}: {len(seeds)} episodes through the graph with {checkpoint}, seeds {seeds[0]}-{seeds[-1]}")
        episodes, failure = collect_episodes(
            bringup, o.task, seeds, o.episode_timeout_s, o.startup_timeout_s, o.out / f"round{number}" / "nodes.log",
            lambda e: say(f"[dagger]   seed {e.seed}: {'success' if e.success else 'failure'} in {e.sim_duration_s:.1f} s sim{e.failure and ' (' + e.failure + ')'}"))
        bags = [e.bag for e in episodes if e.bag]
        known = len(EpisodeDataset(takeover_data)) if (takeover_data / "meta" / "info.json").is_file() else 0
        converted = convert_bags([Path(b) for b in bags], takeover_data, bringup.robot, progress=False) if bags else []
        records = EpisodeDataset(takeover_data).records[known:] if bags else []
        with_takeovers = [r for r in records if r["extra"].get("takeover_count", 0) > 0]
        frames = sum(r["length"] for r in records)
        handover_max, motion = _bag_stats(bags, bringup.robot)
        cpu_collect = cpu_minutes() - cpu_start
        report = RoundReport(
            number, str(checkpoint), len(episodes), sum(e.success for e in episodes),
            sum(1 for r in records if r["success"] and r["extra"].get("takeover_count", 0) == 0), len(with_takeovers),
            sum(r["extra"].get("takeover_count", 0) for r in records),
            sum(r["extra"].get("operator_share", 0.0) * r["length"] for r in records) / frames if frames else 0.0,
            handover_max, float(motion.max()) if len(motion) else 0.0, failure=failure or "; ".join(c.error for c in converted if c.error))
        report.cpu_minutes["collect"] = cpu_collect
        takeover_episodes += len(with_takeovers)
        if failure or not records:
            reports.append(report)
            say(table_row(report))
            say(f"[dagger] round {number} stopped: {report.failure or 'no episode recorded'}")
            break
        cpu_start = cpu_minutes()
        out = o.out / f"round{number}" / "checkpoint"
        say(f"[dagger] round {number}: finetuning {o.init} on {[str(p) for p in o.original]} + {takeover_data} "
            f"({takeover_episodes} episodes with takeovers so far), {o.steps} steps")
        Trainer(TrainOptions(data=[*o.original, takeover_data], out=out, init=o.init, steps=o.steps, goal_steps=o.goal_steps or None,
                             threads=o.threads, operator_weight=o.operator_weight, policy_weight=o.policy_weight)).run()
        report.finetuned = str(out)
        report.cpu_minutes["train"] = cpu_minutes() - cpu_start
        checkpoint = out
        if o.validation_episodes:
            cpu_start = cpu_minutes()
            seeds = list(range(o.validation_seed_start, o.validation_seed_start + o.validation_episodes))
            report.validation_condition = success_rate(out, o.task, seeds, overrides, o.threads)
            report.validation_nominal = success_rate(out, o.task, seeds, None, o.threads)
            report.cpu_minutes["validate"] = cpu_minutes() - cpu_start
        reports.append(report)
        say(table_row(report))
        with open(o.out / "rounds.jsonl", "a") as stream:
            stream.write(json.dumps({**dataclasses.asdict(report), "takeovers_per_episode": report.takeovers_per_episode}) + "\n")
    return reports
