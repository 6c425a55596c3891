#!/usr/bin/env python3
"""How far a WAM checkpoint generalises: skills at nominal, pick-place under scene shifts.

One closed-loop evaluation (in-process sim, ``wam_ros.model.evaluate.evaluate_closed_loop``, one
torch thread, the sim's subtask instructions) per row, on the same held-out seeds for every row
(from 400000; no training run or earlier benchmark used them), so the rows differ only by the
task and the scene. Scene shifts are drawn per episode from the seed (docs/sim.md#scene-shifts):
``camera <d> cm <a> deg`` moves the front camera by up to d cm along each base axis and turns it
by up to a degrees about each optical axis. A checkpoint with a calibrated goal localiser
(docs/model.md) is given each episode's camera pose (the camera calibrated again after it moved),
except in the ``_stale`` row, which gives it the robot config's nominal pose (a camera bumped
since its calibration); for other checkpoints that row repeats the one before it.

Columns: success, the mean number of subtasks done (bin_three has three) and, for tasks with
one exact place (insert, stack), the median horizontal distance of the placed cube from it at the
episode's end (``Task.placement_error_m``). Each row starts the policy's sampler noise from the
same seed (``SAMPLER_SEED``), so a row's numbers do not depend on which rows ran before it in the
process. Each row's result is written to ``--out`` (``<row>.json``) and reused by a later run with
the same checkpoint and seeds, so an interrupted run goes on where it stopped. ``--quick``: 2
seeds per row (about 2 minutes on 2 cores; its numbers mean little). The last line is one JSON
object with ``success_<row>`` (fraction) and ``subtasks_<row>`` per row.

Reproduce: ``.venv/bin/python bench/generalization.py [--quick] [--checkpoint DIR] [--seeds N] [--rows ROW ...]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"
HELD_OUT_FROM = 400000
SAMPLER_SEED = 0  # the policy's diffusion noise at the start of every row


def camera(shift_cm: float, turn_deg: float) -> dict[str, Any]:
    return {"camera_position_jitter_m": {"front": [shift_cm / 100] * 3}, "camera_rotation_jitter_deg": {"front": [turn_deg] * 3}}


@dataclass(frozen=True)
class Row:
    name: str
    task: str
    sim: dict[str, Any] = field(default_factory=dict)
    what: str = ""
    calibration: str = "episode"  # evaluate_closed_loop's camera_calibration: what a calibrated localiser is told


ROWS = (
    Row("pick_place", "pick_place", what="nominal"),
    Row("stack", "stack", what="nominal"),
    Row("push", "push", what="nominal"),
    Row("bin_three", "bin_three", what="nominal, the sim's subtask instructions"),
    Row("insert", "insert", what="nominal: a cube into a slot 5 mm wider per side"),
    Row("pp_camera_1cm_1deg", "pick_place", camera(1, 1), "front camera up to 1 cm and 1 deg per axis"),
    Row("pp_camera_2cm_2deg", "pick_place", camera(2, 2), "front camera up to 2 cm and 2 deg per axis"),
    Row("pp_camera_3cm_3deg", "pick_place", camera(3, 3), "front camera up to 3 cm and 3 deg per axis"),
    Row("pp_camera_3cm_3deg_stale", "pick_place", camera(3, 3), "the same, a calibrated localiser told the nominal pose", "robot"),
    Row("pp_light_50", "pick_place", {"light_intensity_jitter_fraction": 0.5}, "every light +-50 %"),
    Row("pp_distractor", "pick_place", {"distractor_count": 1}, "one distractor box"),
    Row("pp_table_colour", "pick_place", {"table_rgb_jitter": 0.25}, "table colour +-0.25 per channel"),
    Row("pp_table_checker", "pick_place", {"table_texture": "checker"}, "checkered table (5 cm squares)"),
    Row("pp_cubes_15", "pick_place", {"cube_size_jitter_fraction": 0.15, "cube_rgb_jitter": 0.08}, "cube size +-15 %, shade +-0.08"),
    Row("pp_all_shifts", "pick_place", {**camera(3, 3), "light_intensity_jitter_fraction": 0.5, "distractor_count": 1, "table_rgb_jitter": 0.25,
                                         "cube_size_jitter_fraction": 0.15, "cube_rgb_jitter": 0.08}, "all of the above but the checker, at once"),
)


def sim_arguments(sim: dict[str, Any]) -> str:
    """The row's scene as ``wam-ros eval --sim`` arguments."""
    return " ".join(f"--sim '{key}={json.dumps(value)}'" for key, value in sim.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED)
    parser.add_argument("--quick", action="store_true", help="2 seeds per row")
    parser.add_argument("--seeds", type=int, help="held-out seeds per row (default 50, quick 2)")
    parser.add_argument("--seed-start", type=int, default=HELD_OUT_FROM)
    parser.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], help="only these rows")
    parser.add_argument("--out", type=Path, help="per-row results (default outputs/bench_generalization/<checkpoint name>)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from wam_ros.model.evaluate import evaluate_closed_loop
    from wam_ros.model.runtime import load_policy

    torch.set_num_threads(1)
    count = args.seeds or (2 if args.quick else 50)
    seeds = list(range(args.seed_start, args.seed_start + count))
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    runtime = load_policy(args.checkpoint)
    runtime.warmup()
    out = args.out or REPO / "outputs" / "bench_generalization" / args.checkpoint.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    print(f"[generalization] {runtime.model_id}: {len(rows)} rows x seeds {seeds[0]}-{seeds[-1]}; results in {out}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = out / f"{row.name}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if (saved.get("model_id"), saved.get("seeds"), saved.get("sim"), saved.get("sampler_seed"), saved.get("calibration", "episode")) == (
                    runtime.model_id, seeds, row.sim, SAMPLER_SEED, row.calibration):
                results[row.name] = saved
                print(f"[generalization] {row.name}: kept from {path}", flush=True)
                continue
        started, cpu = time.perf_counter(), time.process_time()
        runtime.generator.manual_seed(SAMPLER_SEED)
        report = evaluate_closed_loop(runtime, row.task, seeds, sim_overrides=row.sim, quiet=True, camera_calibration=row.calibration)
        results[row.name] = {
            "model_id": runtime.model_id, "task": row.task, "sim": row.sim, "seeds": seeds, "sampler_seed": SAMPLER_SEED, "calibration": row.calibration,
            "successes": [bool(s) for s in report.successes], "subtasks_done": report.subtasks_done, "subtask_count": report.subtask_count,
            "success": report.success_rate, "mean_subtasks_done": float(np.mean(report.subtasks_done)),
            "placement_errors_m": report.placement_errors_m,
            "policy_latency_ms_median": report.policy_latency_ms_median,
            "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
        }
        path.write_text(json.dumps(results[row.name], indent=1))
        r = results[row.name]
        print(f"[generalization] {row.name}: {sum(r['successes'])}/{len(seeds)}, subtasks {r['mean_subtasks_done']:.2f}/{r['subtask_count']} "
              f"({r['cpu_s'] / 60:.1f} CPU-min)  eval --task {row.task} {sim_arguments(row.sim)}"
              + (f" --camera-calibration {row.calibration}" if row.calibration != "episode" else ""), flush=True)

    print(f"\n{args.checkpoint} ({runtime.model_id}), seeds {seeds[0]}-{seeds[-1]}\n")
    print("| row | scene | success | mean subtasks done | placement error, median (successes) |\n|---|---|---|---|---|")
    for row in rows:
        r = results[row.name]
        errors = np.asarray(r.get("placement_errors_m") or [])
        placed = errors[np.asarray(r["successes"])] if len(errors) else errors
        error = f"{1000 * np.median(errors):.1f} mm ({1000 * np.median(placed):.1f} mm)" if len(placed) else (f"{1000 * np.median(errors):.1f} mm" if len(errors) else "-")
        print(f"| {row.name} | {row.what} | {sum(r['successes'])} / {len(seeds)} | {r['mean_subtasks_done']:.2f} / {r['subtask_count']} | {error} |")
    summary: dict[str, Any] = {"checkpoint": str(args.checkpoint), "model_id": runtime.model_id, "seed_start": seeds[0], "seeds": len(seeds)}
    for row in rows:
        summary[f"success_{row.name}"] = results[row.name]["success"]
        summary[f"subtasks_{row.name}"] = results[row.name]["mean_subtasks_done"]
        if results[row.name].get("placement_errors_m"):
            summary[f"placement_error_m_{row.name}"] = float(np.median(results[row.name]["placement_errors_m"]))
    summary["policy_latency_ms_median"] = float(np.median([results[r.name]["policy_latency_ms_median"] for r in rows]))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
