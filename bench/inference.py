#!/usr/bin/env python3
"""WAM inference through ROS 2 against the same model in-process (issue 9).

1. Policy latency per chunk at batch 1 (1 CPU thread, the node's default; also on CUDA when present), in-process.
2. The full graph (`robot:=panda_sim`: sim, safety bridge, wam_inference) on held-out
   pick-place seeds: success, chunk latency as the node reports it (compute time), camera
   stamp to chunk arrival at a subscriber (p99), the step at chunk switches (boundary jump),
   safety events, and the node's stage breakdown (docs/inference.md).
3. In-process closed-loop success on the same seeds (wam_ros.model.evaluate), for the gap.

Reproduce: `.venv/bin/python bench/inference.py [--quick]` (quick: 3 seeds instead of 20).
The last line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "cpu-small-pick-place"
SEEDS_FROM = 100000  # never used for training (the shipped checkpoint trains on seeds < 1000)


def policy_latency_ms(device: str, calls: int) -> tuple[float, float]:
    """Median and p99 [ms] of one policy call at batch 1 (1 CPU thread on cpu, as the node runs it), in this process."""
    import torch

    from model import latency  # bench/model.py (this script's directory is on sys.path)
    from wam_ros.model import load_policy

    torch.set_num_threads(1)
    runtime = load_policy(CHECKPOINT, device=device)
    runtime.warmup()
    return latency(runtime, calls, quantile=99.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds and 20 latency calls (under ~5 minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, default=None, help="number of held-out seeds (default 20, quick 3)")
    args = parser.parse_args()
    n_seeds = args.seeds or (3 if args.quick else 20)
    seeds = list(range(SEEDS_FROM, SEEDS_FROM + n_seeds))
    results: dict[str, float] = {}

    import torch

    print("policy latency at batch 1, 1 CPU thread ...", flush=True)
    p50, p99 = policy_latency_ms("cpu", 20 if args.quick else 100)
    results.update(cpu_chunk_latency_ms_p50=p50, cpu_chunk_latency_ms_p99=p99)
    print(f"  cpu: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    if torch.cuda.is_available():
        p50, p99 = policy_latency_ms("cuda", 100)
        results.update(cuda_chunk_latency_ms_p50=p50, cuda_chunk_latency_ms_p99=p99)
        print(f"  cuda: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)

    from wam_ros.bringup import load_bringup
    from wam_ros.clients.demo import run_closed_loop
    from wam_ros.sim.demos import MAX_STEPS

    episode_timeout_s = MAX_STEPS["pick_place"] * 0.1  # the in-process evaluation's step limit, in sim seconds
    print(f"full ROS graph (robot:=panda_sim), pick_place on {n_seeds} held-out seeds ...", flush=True)
    bringup = load_bringup("panda_sim", {"recorder": {"enabled": False}})
    result = run_closed_loop(
        bringup, "pick_place", seeds, episode_timeout_s, 300.0,
        on_report=lambda r: print(f"  seed {r.seed}: {'success' if r.success else 'failure'} in {r.sim_duration_s:.1f} s sim, {r.chunks} chunks", flush=True),
    )
    if result.failure:
        print(f"graph run stopped early: {result.failure}", file=sys.stderr)
        return 1
    reports = result.reports
    latencies = [v for r in reports for v in r.latency_ms]
    arrivals = [v for r in reports for v in r.stamp_to_receive_ms]
    jumps = [v for r in reports for v in r.boundary_jumps]
    graph_success = float(np.mean([r.success for r in reports]))
    results.update(
        graph_success_rate=graph_success,
        graph_chunk_latency_ms_p50=float(np.median(latencies)),
        graph_chunk_latency_ms_p99=float(np.percentile(latencies, 99)),
        stamp_to_receive_ms_p99=float(np.percentile(arrivals, 99)),
        boundary_jump_p50=float(np.median(jumps)) if jumps else 0.0,
        boundary_jump_max=float(np.max(jumps)) if jumps else 0.0,
        safety_events=float(sum(len(r.safety_events) for r in reports)),
    )
    stages = reports[-1].inference_stages_ms if reports else {}  # wam_inference's windowed stage.* diagnostics
    results.update({f"graph_stage_{name}": value for name, value in stages.items()})
    if stages:
        print("  node stages (ms, p50/p99): " + ", ".join(
            f"{name[:-7]} {stages[name]:.1f}/{stages.get(name[:-3] + 'p99', float('nan')):.1f}" for name in stages if name.endswith("_ms_p50")), flush=True)
    print(f"  success {graph_success:.2f}, chunk latency p50 {results['graph_chunk_latency_ms_p50']:.0f} ms, "
          f"stamp-to-receive p99 {results['stamp_to_receive_ms_p99']:.0f} ms, boundary jump max {results['boundary_jump_max']:.4f}", flush=True)

    from wam_ros.model import load_policy
    from wam_ros.model.evaluate import evaluate_closed_loop

    print(f"in-process closed loop on the same {n_seeds} seeds ...", flush=True)
    torch.set_num_threads(1)
    report = evaluate_closed_loop(load_policy(CHECKPOINT), "pick_place", seeds)
    results.update(inprocess_success_rate=report.success_rate, success_gap_points=100.0 * (report.success_rate - graph_success))
    print(f"  success {report.success_rate:.2f}; gap {results['success_gap_points']:.0f} points", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
