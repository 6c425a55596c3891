#!/usr/bin/env python3
"""The intervention loop measured: operator takeovers through the graph become a better checkpoint.

1. The condition: cubes a third larger than the demos' (``wam-ros dagger``'s default scene,
   ``cube_size_m=0.06``; the demos had 0.045 m). Before: the shipped checkpoint's success on
   held-out seeds of the condition and nominally (in-process sim).
2. ``wam_ros.clients.dagger.run_dagger``: rounds of autonomous episodes through the real graph
   (sim + bridge + wam_inference + recorder + scripted operator), converted, finetuned from the
   shipped checkpoint on the original data plus the takeovers, validated; one row per round.
3. After: the last round's checkpoint on the same held-out seeds.

Seeds: original demos 0-79 (DART, as the shipped checkpoint's), collection 350000+, validation
360000+, held-out 340000+ (no earlier run used them). ``--sim KEY=VALUE`` replaces the condition
(give it seeds of its own). ``--quick`` (one round of two episodes, 20 finetune steps, 5
held-out seeds; about 5 minutes on 2 cores) checks that the loop runs; its numbers mean nothing.
The last line is one JSON object.

Reproduce: `.venv/bin/python bench/dagger.py [--quick] [--data ORIGINAL] [--out DIR]`; the first
condition (cubes beyond the demos' region, no gain): `--sim 'cube_region_min_xy_m=[0.40, 0.30]'
--sim 'cube_region_max_xy_m=[0.62, 0.44]' --seed-start 310000 --validation-seed-start 320000
--held-out-seed-start 300000`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from wam_ros.clients.dagger import DEFAULT_COLLECT_SEED_START, DEFAULT_CONDITION, DEFAULT_VALIDATION_SEED_START

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "cpu-small-pick-place"
HELD_OUT_FROM = 340000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of two episodes, 20 steps, 5 held-out seeds")
    parser.add_argument("--data", type=Path, help="the original demos (default: generate pick-place DART demos, seeds from 0)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_dagger")
    parser.add_argument("--held-out", type=int, default=None, help="held-out seeds per evaluation (default 50, quick 5)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (quick 1)")
    parser.add_argument("--episodes", type=int, default=None, help="graph episodes per round (default 10, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="transformer steps per finetune (default 600, quick 20)")
    parser.add_argument("--sim", action="append", metavar="KEY=VALUE", help="the condition's scene (repeatable; default: cubes a third larger)")
    parser.add_argument("--seed-start", type=int, default=DEFAULT_COLLECT_SEED_START, help="first collection seed")
    parser.add_argument("--validation-seed-start", type=int, default=DEFAULT_VALIDATION_SEED_START)
    parser.add_argument("--held-out-seed-start", type=int, default=HELD_OUT_FROM)
    args = parser.parse_args()
    quick = args.quick
    held_out = args.held_out or (5 if quick else 50)
    started = time.monotonic()

    import torch

    from wam_ros.clients.dagger import DaggerOptions, cpu_minutes, run_dagger, success_rate
    from wam_ros.sim.config import parse_overrides

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    scene = args.sim or DEFAULT_CONDITION
    condition = parse_overrides(scene)
    seeds = list(range(args.held_out_seed_start, args.held_out_seed_start + held_out))
    print(f"condition {condition}; held-out seeds {seeds[0]}-{seeds[-1]}", flush=True)
    results: dict[str, float] = {}
    results["baseline_success"] = success_rate(CHECKPOINT, "pick_place", seeds, condition, 1)
    results["nominal_before"] = success_rate(CHECKPOINT, "pick_place", seeds, None, 1)
    print(f"before: condition {results['baseline_success']:.0%}, nominal {results['nominal_before']:.0%} "
          f"({cpu_minutes():.1f} CPU-min so far)", flush=True)

    original = args.data
    if original is None:
        original = args.out / "original"
        demos = 2 if quick else 80
        subprocess.run([sys.executable, "-m", "wam_ros.cli", "sim-demos", "--task", "pick_place", "--episodes", str(demos), "--seed-start", "0",
                        "--action-noise-rad", "0.02", "--out", str(original)], check=True)
    options = DaggerOptions(init=CHECKPOINT, original=[original], out=args.out / "rounds", scene_overrides=scene,
                            rounds=args.rounds or (1 if quick else 2), episodes_per_round=args.episodes or (2 if quick else 10),
                            collect_seed_start=args.seed_start, validation_seed_start=args.validation_seed_start,
                            validation_episodes=2 if quick else 10, steps=args.steps or (20 if quick else 600))
    reports = run_dagger(options, lambda line: print(line, flush=True))
    if not reports or not reports[-1].finetuned:
        print(f"the loop stopped: {reports[-1].failure if reports else 'no round ran'}", file=sys.stderr)
        return 1
    final = Path(reports[-1].finetuned)
    results["after_success"] = success_rate(final, "pick_place", seeds, condition, 1)
    results["nominal_after"] = success_rate(final, "pick_place", seeds, None, 1)
    results["takeover_episodes"] = float(sum(r.takeover_episodes for r in reports))
    results.update({f"round{r.round}_takeovers_per_episode": r.takeovers_per_episode for r in reports})
    results.update({f"round{r.round}_operator_share": r.operator_share for r in reports})
    results["handover_step_max_rad"] = max(r.handover_step_max_rad for r in reports)
    results["cpu_minutes"] = cpu_minutes()
    results["wall_minutes"] = (time.monotonic() - started) / 60.0
    print(f"after: condition {results['after_success']:.0%} (before {results['baseline_success']:.0%}), nominal "
          f"{results['nominal_after']:.0%} (before {results['nominal_before']:.0%}); {results['takeover_episodes']:.0f} episodes with "
          f"takeovers; {results['cpu_minutes']:.1f} CPU-min", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
