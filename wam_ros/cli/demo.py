"""``wam-ros demo``: the main job. The learned WAM drives the simulated Panda through the safety bridge.

Brings up ``robot:=panda_sim`` (sim, safety bridge, WAM inference with the shipped checkpoint,
and whatever else the robot file enables) with the same supervisor as ``wam-ros bringup``,
then, for each seed: resets the sim to the task, gives the inference node the instruction,
switches the bridge to AUTONOMY once the model streams chunks, waits for success or a timeout,
and stops in HOLD. Prints success, chunk latencies and safety events per episode, saves a
video of every episode, and ends with one JSON line. Ctrl-C puts the arm in HOLD, then stops
every node.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from wam_ros.bringup import load_bringup, parse_overrides
from wam_ros.clients.demo import EpisodeReport, run_closed_loop
from wam_ros.robot import ConfigError

DEFAULT_SEEDS = [1000, 1001, 1002]  # held out: the shipped checkpoint trains on seeds below 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="robot:=<name> (default panda_sim), namespace:=<ns> and <node>.<parameter>:=<value> overrides")
    parser.add_argument("--task", default="pick_place", help="sim task (default pick_place)")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="episode seeds (held out from training)")
    parser.add_argument("--episode-timeout", type=float, default=40.0, metavar="S", help="sim seconds per episode before it counts as a failure")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="wall seconds for the nodes (and the model) to come up")
    parser.add_argument("--video-dir", type=Path, default=Path("outputs/demo"), help="where episode videos go")
    parser.add_argument("--video-camera", default="front", help="camera shown in the episode videos")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def print_report(report: EpisodeReport) -> None:
    print(
        f"[demo] seed {report.seed} ({report.instruction!r}): {'SUCCESS' if report.success else 'failure'} "
        f"after {report.sim_duration_s:.1f} s sim, {report.chunks} chunks, "
        f"latency p50 {percentile(report.latency_ms, 50):.0f} ms p99 {percentile(report.latency_ms, 99):.0f} ms, "
        f"safety events: {', '.join(report.safety_events) or 'none'}; video {report.video or '-'}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    try:
        launch_args, overrides = parse_overrides(args.arguments)
        bringup = load_bringup(launch_args.get("robot", "panda_sim"), overrides, launch_args.get("namespace", ""))
        bringup.robot.camera(args.video_camera)
    except (ConfigError, ValueError, KeyError) as error:
        print(f"wam-ros demo: {error}", file=sys.stderr)
        return 2
    if not bringup.robot.simulated:
        print(f"wam-ros demo: robot {bringup.robot.name} is not simulated; the demo drives the sim only", file=sys.stderr)
        return 2
    print(f"[demo] {args.task} on {bringup.robot.name}, seeds {args.seeds}; loading the model can take a minute", flush=True)
    result = run_closed_loop(
        bringup, args.task, args.seeds, args.episode_timeout, args.startup_timeout, args.video_dir, args.video_camera, print_report
    )
    if result.failure:
        print(f"[demo] stopped early: {result.failure}", file=sys.stderr)
    reports = result.reports
    latencies = [v for r in reports for v in r.latency_ms]
    successes = sum(r.success for r in reports)
    summary = {
        "episodes": len(reports),
        "successes": successes,
        "success_rate": successes / len(reports) if reports else 0.0,
        "chunk_latency_ms_p50": percentile(latencies, 50),
        "chunk_latency_ms_p99": percentile(latencies, 99),
        "safety_events": sum(len(r.safety_events) for r in reports),
    }
    print(json.dumps(summary))
    return 1 if result.failure or result.supervisor_code else 0
