"""Task planner benchmark: no simulator ground truth to the planner, a language model that is needed,
imagination inside the search, replanning under perturbation, object fidelity of predicted frames.

The planner reads only what a robot has (camera frames, joint states); the sim's task status and
object poses score the outcome and time the harness's perturbations and corrections, nothing
else (``ground_truth_used: false``). Held-out seeds from ``--seed-start`` (default 6000; bin_three
used 5000-5019 before, demos and training use other ranges). Parts, each printed as it goes:

1. ``offline``: planning alone on reworded bin_three (the node's defaults: SmolLM2, no adapter
   unless ``task_planner.language_model_adapter:=DIR`` names one, rules where they resolve the instruction): plan equal to the task's subtask order,
   latency.
2. ``hard``: instructions the rule grounder cannot resolve, in wordings no training example and no
   prompt carries (wam_ros.planning.synthetic.HELD_OUT): exclusions, quantifiers, references by
   position (from the scene detector's position estimates on the first frame), corrections of a
   running task. Three rows: ``rules_only`` (the rule grounder), ``lm_uniform`` (the language
   model's sampled plans vote the goal; uniform priors), ``lm_mcts`` (the language model's
   likelihoods value and order the search). Planning correctness first, then closed loop.
3. ``closed``: planner + WAM on reworded bin_three in-process (wam_ros.planning.episodes) against
   the WAM given the whole instruction; and the ``hard`` rows executed (a refused instruction is a
   failure; corrections are sent when the planner has completed one subtask).
4. ``perturbation``: bin_three with a cube knocked out of the bin by the harness after the first
   one is in; recovery = the task still succeeds (the planner must see it from the cameras).
5. ``correlation``: subtask starts (the scripted expert completes 0, 1 or 2 subtasks) and
   candidate subtasks (each remaining cube in the planner's wording and in two paraphrases): the
   WAM's imagined success (rollouts, wam_ros.planning.imagination) against real execution
   (Pearson r), and what imagination inside the search costs in planning time.
6. ``fidelity``: each cube's position in frames the WAM predicts 0.8 s ahead against the real
   future frame (wam_ros.model.fidelity), on held-out bin_three demos recorded here.
7. ``graph`` (``--graph``, not in --quick): the same planner + WAM through the ROS graph with the
   node's defaults and ``task_status_topic`` empty.

    .venv/bin/python bench/planner.py [--quick] [--seeds N] [--parts offline,hard,...] [--graph] [name:=value ...]

``--quick``: a few seeds per part, under 10 minutes on our 2-core machine. Prints per-case lines,
then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from wam_ros.bringup import load_bringup, parse_overrides
from wam_ros.planning.domain import load_domain
from wam_ros.robot import ConfigError, load_robot_config
from wam_ros.sim.config import SimConfig
from wam_ros.sim.tasks import episode_instruction, make_task

TASK = "bin_three"
SEED_START = 6000
PARTS = ("offline", "hard", "closed", "perturbation", "correlation", "fidelity")
PARAPHRASES = ("bin the {c} cube", "move the {c} cube into the bin")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="robot:=<name> and task_planner.<parameter>:=<value> overrides")
    parser.add_argument("--quick", action="store_true", help="a few seeds per part (under 10 minutes)")
    parser.add_argument("--seeds", type=int, default=20, help="held-out seeds per part (default 20)")
    parser.add_argument("--seed-start", type=int, default=SEED_START)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--graph", action="store_true", help="also run planner + WAM through the ROS graph")
    parser.add_argument("--episode-timeout", type=float, default=150.0, metavar="S", help="sim seconds per episode")
    parser.add_argument("--correlation-seeds", type=int, default=6, help="seeds of subtask starts (18 starts each)")
    parser.add_argument("--rollout-chunks", type=int, default=8, help="imagined chunks per subtask")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_planner.json"), help="per-case records")
    return parser.parse_args()


def log(text: str) -> None:
    print(text, flush=True)


class Bench:
    """Loaded once: robot, domain, language models, WAM, scene detector, sim."""

    def __init__(self, args: argparse.Namespace, params) -> None:
        import torch

        from wam_ros.model import load_policy
        from wam_ros.nodes.task_planner_node import planner_config, resolve_path
        from wam_ros.planning.language_model import LanguageModel
        from wam_ros.planning.success import SceneDetector
        from wam_ros.sim import TabletopEnv

        torch.set_num_threads(args.threads)
        self.args, self.params = args, params
        self.robot = load_robot_config("panda_sim")
        self.domain = load_domain(self.robot.extra.get("planner"))
        started = time.perf_counter()
        adapter = str(resolve_path(params.language_model_adapter)) if params.language_model_adapter else ""
        self.model = LanguageModel.load(params.language_model_path, params.language_model_cache_dir, args.threads, adapter=adapter, log=log)
        log(f"[bench] language model {self.model.name} loaded in {time.perf_counter() - started:.1f} s")
        self.config = planner_config(params)
        checkpoint = self.robot_checkpoint()
        self.runtime = load_policy(checkpoint)
        self.runtime.warmup()
        self.detector = SceneDetector.load(resolve_path(params.scene_detector)) if params.scene_detector else None
        self.env = TabletopEnv(self.robot)
        self.task = make_task(TASK, SimConfig.from_robot(self.robot))
        self.records: dict[str, list] = {}

    def robot_checkpoint(self) -> Path:
        from wam_ros.robot import package_root

        nodes = load_bringup("panda_sim", {}).nodes
        spec = next(s for s in nodes if s.kind == "wam_inference")
        path = Path(spec.parameters["checkpoint"])
        return path if path.is_absolute() else package_root() / path

    def planner(self, **changes):
        from dataclasses import replace

        from wam_ros.planning.planner import TaskPlanner

        return TaskPlanner(self.domain, self.model, replace(self.config, **changes))

    def episodes(self, planner):
        from wam_ros.planning.episodes import PlannerEpisodes
        from wam_ros.planning.execution import ExecutionConfig
        from wam_ros.planning.success import BeliefConfig

        p = self.params
        execution = ExecutionConfig(subtask_timeout_s=p.subtask_timeout_s, task_timeout_s=self.args.episode_timeout, max_replans=max(p.max_replans, 3),
                                    progress_done_threshold=p.progress_done_threshold, progress_confirmations=p.progress_confirmations)
        belief = BeliefConfig(p.detector_done_threshold, p.detector_lost_threshold, p.detector_confirmations)
        every = max(1, int(round(p.detector_period_s / self.env.config.control_period_s)))
        return PlannerEpisodes(self.env, self.runtime, planner, self.detector, execution, belief, every, imagine=p.use_imagination,
                               log=lambda text: log(f"    {text}"))

    def first_frame_positions(self, seed: int) -> dict:
        """The scene detector's position estimates on the first frame (what the planner's words come from)."""
        observation = self.env.reset(TASK, seed)
        if self.detector is None:
            return {}
        return self.detector.predict({c: observation.images[c] for c in self.detector.config.cameras}).positions

    def true_positions(self, seed: int) -> dict:
        self.env.reset(TASK, seed)
        state = self.env.scene_state()
        positions = {c: tuple(p[:2]) for c, p in state.cube_positions.items()}
        positions["bin"] = tuple(state.bin_center[:2])
        return positions


# -- part 1 --------------------------------------------------------------------------------------------
def part_offline(bench: Bench, seeds: list[int]) -> dict:
    planner = bench.planner()
    scene = bench.domain.scene()
    latencies, right = [], 0
    for seed in seeds:
        spec = bench.task.sample(seed)
        instruction = episode_instruction(spec, "reworded")
        plan = planner.plan(instruction, scene, state=frozenset())
        ok = list(plan.instructions) == list(spec.subtask_instructions)
        right += ok
        latencies.append(plan.planning_time_s)
        log(f"[offline] seed {seed} {instruction!r}: {plan.planning_time_s:.1f} s, goal from {plan.goal_from}, "
            f"{'matches the task' if ok else 'DIFFERS'}: {[str(s) for s in plan.steps]}")
    return {"offline_seeds": len(seeds), "plan_matches_task_share": right / len(seeds),
            "planning_latency_s_p50": statistics.median(latencies), "planning_latency_s_max": max(latencies)}


# -- part 2 ------------------------------------------------------------------------------------------------
HARD_ROWS = {"rules_only": {"goal_source": "rules"}, "lm_uniform": {"language_model_mode": "vote"}, "lm_mcts": {}}


def hard_cases(bench: Bench, seeds: list[int]) -> list[dict]:
    """One held-out case per seed and kind, on that seed's bin_three layout (true positions: the meaning)."""
    from wam_ros.planning import synthetic

    cases = []
    for seed in seeds:
        spec = bench.task.sample(seed)
        truth = bench.true_positions(seed)
        for kind in synthetic.KINDS:
            example = synthetic.held_out_example(seed, kind, ("red_cube", "green_cube", "blue_cube"), "bin", truth,
                                                 running_order=tuple(spec.cubes), running_instruction=spec.instruction, done_count=1)
            cases.append({"seed": seed, "kind": kind, "example": example})
    return cases


def plan_for_case(bench: Bench, planner, case: dict):
    """Plan a case as the planner would meet it: the detector's words, the running task for corrections."""
    from wam_ros.planning.domain import Step
    from wam_ros.planning.proposer import RunningTask
    from wam_ros.planning.success import relation_words

    example = case["example"]
    scene = bench.domain.scene()
    words = relation_words(bench.first_frame_positions(case["seed"]), scene, bench.domain)
    state, running = frozenset(), None
    if example.running is not None:
        done = tuple(Step("pick_place", (c, "bin")) for c in example.running.done)
        planned = tuple(Step("pick_place", (c, "bin")) for c in example.running.planned)
        running = RunningTask(example.running.instruction, done, planned)
        state = frozenset(("in", c, "bin") for c in example.running.done)
    return planner.plan(example.instruction, scene, state=state, words=words, running=running)


def part_hard_planning(bench: Bench, cases: list[dict]) -> dict:
    from wam_ros.planning.synthetic import plan_satisfies

    out: dict = {}
    for row, changes in HARD_ROWS.items():
        planner = bench.planner(**changes)
        right, times = 0, []
        for case in cases:
            plan = plan_for_case(bench, planner, case)
            moved = [s.arguments[0] for s in plan.steps] if plan.ok else None
            ok = moved is not None and plan_satisfies(case["example"], moved)
            case[f"plan_{row}"] = moved
            right += ok
            times.append(plan.planning_time_s)
            log(f"[hard {row}] seed {case['seed']} {case['kind']}: {case['example'].instruction!r} -> "
                f"{moved if moved is not None else 'refused'} ({'right' if ok else 'WRONG'}; want {list(case['example'].plan())})")
        out[f"hard_plan_right_{row}"] = right / len(cases)
        out[f"hard_planning_s_p50_{row}"] = statistics.median(times)
        by_kind = {}
        for kind in sorted({c["kind"] for c in cases}):
            subset = [c for c in cases if c["kind"] == kind]
            by_kind[kind] = sum(c[f"plan_{row}"] is not None and plan_satisfies(c["example"], c[f"plan_{row}"]) for c in subset) / len(subset)
        out[f"hard_plan_right_by_kind_{row}"] = by_kind
    return out


def hard_judge(example):
    from wam_ros.planning.synthetic import plan_satisfies

    def judge(outcome) -> bool:
        done = set(outcome.done_before_correction) if example.running is not None else set()
        if outcome.in_bin != set(example.targets) | done:
            return False
        order = [c for c in outcome.entered if c not in done]
        return plan_satisfies(example, order)

    return judge


def part_hard_closed(bench: Bench, cases: list[dict]) -> dict:
    from wam_ros.planning.episodes import Correction

    out: dict = {}
    for row, changes in HARD_ROWS.items():
        episodes = bench.episodes(bench.planner(**changes))
        wins = 0
        for case in cases:
            example = case["example"]
            if case.get(f"plan_{row}") is None:
                log(f"[hard closed {row}] seed {case['seed']} {case['kind']}: refused -> failure")
                continue
            if example.running is not None:  # run the task, then correct it once one subtask is done
                outcome = episodes.run(TASK, case["seed"], example.running.instruction, hard_judge(example),
                                       correction=Correction(example.instruction, after_subtasks=1))
            else:
                outcome = episodes.run(TASK, case["seed"], example.instruction, hard_judge(example))
            wins += outcome.success
            log(f"[hard closed {row}] seed {case['seed']} {case['kind']}: {'SUCCESS' if outcome.success else 'failure'} "
                f"(entered {outcome.entered}, {outcome.replans} replans; {outcome.message})")
        out[f"hard_{row}_success"] = wins / len(cases)
    return out


# -- part 3 -------------------------------------------------------------------------------------------------
def part_closed(bench: Bench, seeds: list[int]) -> dict:
    from wam_ros.planning.episodes import whole_instruction_episode

    episodes = bench.episodes(bench.planner())
    planned, baseline, replans, planning = [], [], [], []
    steps = int(bench.args.episode_timeout / bench.env.config.control_period_s)
    for seed in seeds:
        instruction = episode_instruction(bench.task.sample(seed), "reworded")
        outcome = episodes.run(TASK, seed, instruction)
        planned.append(outcome.success)
        replans.append(outcome.replans)
        planning += outcome.planning_s
        whole, whole_done = whole_instruction_episode(bench.env, bench.runtime, TASK, seed, instruction, steps)
        baseline.append(whole)
        log(f"[closed] seed {seed} {instruction!r}: planner + WAM {'SUCCESS' if outcome.success else 'failure'} "
            f"({outcome.sim_subtasks_done} subtasks by the sim; {outcome.replans} replans; {outcome.message}); "
            f"whole instruction {'SUCCESS' if whole else 'failure'} ({whole_done} subtasks)")
    n = len(seeds)
    return {"closed_loop_seeds": n, "planner_success": sum(planned) / n, "baseline_success": sum(baseline) / n,
            "replans_per_episode": sum(replans) / n, "closed_loop_planning_s_p50": statistics.median(planning) if planning else float("nan")}


def part_perturbation(bench: Bench, seeds: list[int]) -> dict:
    from wam_ros.planning.episodes import Perturbation

    episodes = bench.episodes(bench.planner())
    recovered, noticed = [], []
    for seed in seeds:
        instruction = episode_instruction(bench.task.sample(seed), "reworded")
        outcome = episodes.run(TASK, seed, instruction, perturbation=Perturbation(after_cubes=1))
        recovered.append(bool(outcome.perturbed) and outcome.success)
        noticed.append(outcome.replans > 0)
        log(f"[perturbation] seed {seed}: knocked out {outcome.perturbed or 'nothing (no cube got in)'}; "
            f"{'RECOVERED' if recovered[-1] else 'not recovered'} ({outcome.replans} replans; {outcome.message})")
    return {"perturbation_seeds": len(seeds), "recovery_rate": sum(recovered) / len(seeds), "perturbation_replanned_share": sum(noticed) / len(seeds)}


# -- part 4 ------------------------------------------------------------------------------------------------
def subtask_starts(bench: Bench, seed: int, done: int):
    """The sim after the scripted expert completed ``done`` subtasks of bin_three ``seed``: (observation, cubes left)."""
    from wam_ros.sim.expert import make_expert

    env = bench.env
    observation = env.reset(TASK, seed)
    expert = make_expert(env)
    steps = 0
    while env.task_status().subtasks_done < done and steps < 700:
        observation = env.step(expert.act(observation))
        steps += 1
    for _ in range(10):  # let the release settle and the arm lift a little
        observation = env.step(expert.act(observation))
    remaining = [c for c in bench.task.sample(seed).cubes if not env.task.in_bin(env.scene_state(), c)]
    return observation, remaining


def part_correlation(bench: Bench, seeds: list[int], max_starts: int | None = None) -> dict:
    from wam_ros.planning.domain import Step
    from wam_ros.planning.imagination import WorldModelRollouts

    runtime = bench.runtime
    imagined, real, kinds, detected = [], [], [], []
    imagine_s = []
    for seed in seeds:
        for done in range(3):
            remaining = subtask_starts(bench, seed, done)[1]
            in_bin = frozenset(("in", c, "bin") for c in ("red_cube", "green_cube", "blue_cube") if c not in remaining)
            for cube in remaining:
                colour = cube.removesuffix("_cube")
                wordings = [bench.domain.instruction(Step("pick_place", (cube, "bin")), in_bin)]  # the planner's wording
                wordings += [p.format(c=colour) for p in PARAPHRASES]
                for kind, text in zip(("planner", "paraphrase", "paraphrase"), wordings):
                    if max_starts is not None and len(real) >= max_starts:
                        break
                    observation, _ = subtask_starts(bench, seed, done)
                    images = {c: observation.images[c][None] for c in runtime.config.cameras}
                    started = time.perf_counter()
                    rollouts = WorldModelRollouts(runtime, images, observation.state[None], chunks_per_subtask=bench.args.rollout_chunks,
                                                  scorer=detector_scorer(bench, cube))
                    result = rollouts.rollout([text])[0]
                    score = result.success
                    detected.append(result.scored if result.scored is not None else float("nan"))
                    imagine_s.append(time.perf_counter() - started)
                    success = run_subtask(bench, observation, text, cube)
                    imagined.append(score)
                    real.append(float(success))
                    kinds.append(kind)
                    log(f"[correlation] seed {seed}, {done} done, {text!r}: imagined progress {score:.2f}, scene detector on the "
                        f"imagined frames {detected[-1]:.2f}, real {'success' if success else 'failure'}")
    r = pearson(imagined, real)
    r_detector = pearson(detected, real)
    planner_only = [(i, s) for i, s, k in zip(imagined, real, kinds) if k == "planner"]
    timing = planning_time_with_rollouts(bench, seeds[:2])
    return {"correlation_starts": len(real), "imagined_real_correlation": r, "imagined_detector_real_correlation": r_detector,
            "real_subtask_success_share": float(np.mean(real)),
            "real_success_planner_wording": float(np.mean([s for _, s in planner_only])) if planner_only else float("nan"),
            "imagined_rollout_s_p50": statistics.median(imagine_s), **timing}


def pearson(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def detector_scorer(bench: Bench, cube: str):
    """The scene detector's probability that ``cube`` is in the bin, on imagined frames."""
    if bench.detector is None:
        return None
    fact = ("in", cube, "bin")

    def score(frames, instruction: str) -> float:
        return bench.detector.predict({c: frames[c] for c in bench.detector.config.cameras}).facts.get(fact, float("nan"))

    return score


def run_subtask(bench: Bench, observation, instruction: str, cube: str, limit_steps: int = 250) -> bool:
    """Execute one subtask with the WAM from ``observation``; the sim says whether ``cube`` got in the bin."""
    env, runtime = bench.env, bench.runtime
    step = 0
    while step < limit_steps:
        images = {c: observation.images[c][None] for c in runtime.config.cameras}
        for action in runtime.policy(images, observation.state[None], instruction)[: runtime.config.execute_steps]:
            observation = env.step(action)
            step += 1
            if env.task.in_bin(env.scene_state(), cube):
                for _ in range(5):  # released and resting, not just passing
                    observation = env.step(action)
                return env.task.in_bin(env.scene_state(), cube)
    return False


def planning_time_with_rollouts(bench: Bench, seeds: list[int]) -> dict:
    """Planning time of reworded bin_three with and without imagination inside the search."""
    from wam_ros.planning.imagination import WorldModelRollouts

    scene = bench.domain.scene()
    times = {"off": [], "on": []}
    for seed in seeds:
        observation = bench.env.reset(TASK, seed)
        instruction = episode_instruction(bench.task.sample(seed), "reworded")
        images = {c: observation.images[c][None] for c in bench.runtime.config.cameras}
        for mode in ("off", "on"):
            planner = bench.planner()
            if mode == "on":
                planner.imagine_plan = WorldModelRollouts(bench.runtime, images, observation.state[None],
                                                          chunks_per_subtask=bench.args.rollout_chunks).success
            started = time.perf_counter()
            plan = planner.plan(instruction, scene, state=frozenset())
            times[mode].append(time.perf_counter() - started)
            log(f"[correlation] seed {seed} planning with imagination inside the search {mode}: {times[mode][-1]:.1f} s, {[str(s) for s in plan.steps]}")
    return {"planning_s_without_rollouts_p50": statistics.median(times["off"]), "planning_s_with_rollouts_p50": statistics.median(times["on"])}


# -- part 5 -----------------------------------------------------------------------------------------------
def part_fidelity(bench: Bench, seeds: list[int], samples: int) -> dict:
    from wam_ros.data.episodes import DatasetWriter, EpisodeDataset
    from wam_ros.model.evaluate import offline_samples
    from wam_ros.model.fidelity import evaluate_fidelity
    from wam_ros.sim.demos import dataset_info, record_demo

    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_planner_fidelity_") as folder:
        writer = DatasetWriter(Path(folder), dataset_info(bench.robot, bench.env))
        for seed in seeds:
            writer.add(record_demo(bench.env, TASK, seed).episode)
        chosen = offline_samples(bench.runtime, EpisodeDataset(folder), samples, seed=0)
        report = evaluate_fidelity(bench.runtime, chosen, robot=bench.robot)
    for source, summary in report.items():
        log(f"[fidelity] {source}: {json.dumps(summary)}")
    video = report["video_prediction"]
    return {"predicted_cube_error_cm": video["error_cm_median"], "predicted_cube_missing_share": video["missing_share"],
            "predicted_cube_within_1cm_share": video["within_1cm_share"], "fidelity": report}


# -- part 6: the graph ----------------------------------------------------------------------------------------
def part_graph(bringup, seeds: list[int], timeout_s: float) -> dict:
    """Planner + WAM through the ROS graph; the sim's status scores, the planner has task_status_topic empty."""
    from wam_ros.bringup.supervisor import Supervisor
    from wam_ros.clients.demo import DemoClient
    from wam_ros.clients.task_commander import TaskCommander
    from wam_ros_interfaces.msg import SafetyStatus

    from dataclasses import replace

    Path("outputs").mkdir(exist_ok=True)
    log_path = Path("outputs/bench_planner_nodes.log")
    log_file = open(log_path, "w")
    # The planner is required here: if it ends (a configure failure), the bench stops at once and says why.
    bringup.nodes = [replace(s, required=True) if s.kind == "task_planner" else s for s in bringup.nodes]
    supervisor = Supervisor(bringup, output=log_file)
    done, stopping = threading.Event(), threading.Event()
    result: dict = {}
    failure: list[str] = []
    task = make_task(TASK, SimConfig.from_robot(bringup.robot))

    def drive() -> None:
        demo = commander = None
        try:
            demo = DemoClient(camera=None, startup_timeout_s=60.0)
            commander = TaskCommander("wam_planner_bench")
            deadline = time.monotonic() + 300.0
            while not (demo.reset_client.service_is_ready() and demo.status is not None and demo.safety is not None
                       and commander.client.server_is_ready()):
                if time.monotonic() > deadline or stopping.is_set() or not supervisor_alive():
                    raise RuntimeError("the nodes did not come up (outputs/bench_planner_nodes.log says why)")
                time.sleep(0.2)
            wins = []
            for seed in seeds:
                if demo.safety.mode != SafetyStatus.MODE_IDLE:
                    demo.set_mode(SafetyStatus.MODE_IDLE, "planner bench: next episode")
                episode = demo.status.episode
                demo.call(demo.reset_client, demo.msgs["ResetSim"].Request(task=TASK, seed=seed), 30.0)
                while demo.status.episode == episode:
                    time.sleep(0.01)
                instruction = episode_instruction(task.sample(seed), "reworded")
                if not commander.execute_task(instruction, timeout_s=timeout_s):
                    raise RuntimeError("the planner refused the goal")
                while not commander.is_task_complete():
                    if stopping.is_set():
                        commander.cancel_task()
                    time.sleep(0.1)
                wins.append(bool(demo.status.success))
                log(f"[graph] seed {seed}: {'SUCCESS' if wins[-1] else 'failure'} ({commander.get_result().message})")
            result.update(graph_seeds=len(wins), graph_planner_success=sum(wins) / max(len(wins), 1))
        except Exception as error:  # noqa: BLE001
            failure.append(f"{type(error).__name__}: {error}")
        finally:
            if commander is not None:
                commander.destroy()
            if demo is not None:
                demo.close()
            done.set()

    def supervisor_alive() -> bool:
        planner = [c for c in supervisor.children if c.spec.kind == "task_planner"]
        if planner and planner[0].process.poll() is not None:
            log_file.flush()
            reasons = [line for line in log_path.read_text(errors="replace").splitlines() if "configure failed" in line or "fatal" in line]
            raise RuntimeError(f"the task planner exited with code {planner[0].process.returncode}: " + (reasons[-1] if reasons else f"see {log_path}"))
        return not done.is_set()

    try:
        supervisor.run(until=done.is_set, on_started=threading.Thread(target=drive, daemon=True).start,
                       before_stop=lambda: (stopping.set(), done.wait(30.0)))
    finally:
        log_file.close()
    if failure:
        raise RuntimeError(failure[0])
    return result


def main() -> int:
    args = parse_args()
    from wam_ros.nodes.task_planner_node import Parameters, check_parameters

    try:
        launch_args, overrides = parse_overrides(args.arguments)
        overrides.setdefault("sim", {})["task"] = TASK
        planner_overrides = overrides.setdefault("task_planner", {})
        planner_overrides["enabled"] = True
        if planner_overrides.get("task_status_topic"):
            print("bench/planner.py: the planner must not read the sim's task status (ground truth); leave task_status_topic empty", file=sys.stderr)
            return 2
        bringup = load_bringup(launch_args.get("robot", "panda_sim"), overrides)
        spec = next(s for s in bringup.nodes if s.kind == "task_planner")
        params = Parameters(**{k: v for k, v in spec.parameters.items() if k in Parameters.__dataclass_fields__})
        problems = check_parameters(params)
        if problems:
            raise ValueError("; ".join(problems))
    except (ConfigError, ValueError, StopIteration) as error:
        print(f"bench/planner.py: {error}", file=sys.stderr)
        return 2
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"bench/planner.py: unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    n = 2 if args.quick else args.seeds
    seeds = list(range(args.seed_start, args.seed_start + n))
    summary: dict = {"task": TASK, "seeds": f"{seeds[0]}-{seeds[-1]}", "quick": args.quick, "ground_truth_used": False,
                     "task_status_topic": params.task_status_topic}
    started = time.perf_counter()
    bench = Bench(args, params)
    cases = None
    if "offline" in parts:
        summary.update(part_offline(bench, seeds))
    if "hard" in parts:
        hard_seeds = seeds[:1] if args.quick else seeds
        cases = hard_cases(bench, hard_seeds)
        summary.update(part_hard_planning(bench, cases))
    if "closed" in parts:
        summary.update(part_closed(bench, seeds[:1] if args.quick else seeds))
        if cases is not None:
            chosen = [c for c in cases if c["kind"] in ("exclusion", "correction")][:2] if args.quick else cases
            summary.update(part_hard_closed(bench, chosen))
            summary["hard_closed_cases"] = len(chosen)
    if "perturbation" in parts:
        summary.update(part_perturbation(bench, seeds[:1] if args.quick else seeds))
    if "correlation" in parts:
        count = 1 if args.quick else args.correlation_seeds
        summary.update(part_correlation(bench, list(range(args.seed_start + 500, args.seed_start + 500 + count)), 4 if args.quick else None))
    if "fidelity" in parts:
        summary.update(part_fidelity(bench, list(range(args.seed_start + 900, args.seed_start + 900 + (2 if args.quick else 10))),
                                     16 if args.quick else 64))
    if args.graph and not args.quick:
        for name, value in bringup.environment.items():
            os.environ.setdefault(name, value)
        summary.update(part_graph(bringup, seeds, args.episode_timeout))
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
