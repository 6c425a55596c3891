#!/usr/bin/env python3
"""Goal localiser under scene shifts: horizontal grasp error from each episode's first frame.

For each checkpoint and scene (bench/generalization.py's rows ``pick_place`` (nominal),
``pp_camera_1cm_1deg``, ``pp_camera_3cm_3deg``, ``pp_camera_3cm_3deg_stale`` and
``pp_table_colour``; a calibrated localiser is told the camera pose as those rows say), reset the in-process
sim on each held-out seed and ask the localiser (``WamRuntime.locate``) where the first grasp is,
given the first subtask's instruction; the error is the horizontal distance to the instructed
cube's true position. No policy runs, so this isolates what the localiser sees from what the
policy does with it (a grasp tolerates about 1-2 cm). ``--quick``: 3 seeds.

Reproduce: ``.venv/bin/python bench/localiser_shifts.py [--quick] [--checkpoint DIR ...] [--seeds N] [--seed-start S] [--task pick_place]``
(default: the shipped checkpoint, 20 seeds from 410000). The last line is one JSON object with
``<checkpoint>.<row>.median_cm`` / ``mean_cm`` / ``max_cm``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu-small-pick-place"


#: bench/generalization.py's rows whose scenes this measures (their names key the JSON)
SCENE_ROWS = ("pick_place", "pp_camera_1cm_1deg", "pp_camera_3cm_3deg", "pp_camera_3cm_3deg_stale", "pp_table_colour")


def first_grasp_errors_cm(runtime, task: str, seeds: list[int], scene: dict, calibration: str = "episode") -> np.ndarray:
    from wam_ros.model.camera import told_camera
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.config import SimConfig

    robot = load_robot_config(runtime.config.robot or "panda_sim")
    sim_config = SimConfig.from_robot(robot, scene)
    goal_camera = runtime.config.goal.camera
    errors = []
    with TabletopEnv(robot, sim_config) as env:
        for seed in seeds:
            observation = env.reset(task, seed)
            if runtime.config.goal.calibrated:
                runtime.set_goal_camera(told_camera(robot, goal_camera, sim_config, seed, calibration))
            images = {c: observation.images[c][None] for c in runtime.config.cameras}
            goal = runtime.locate(images, observation.state[None].copy(), env.spec.subtask_instructions[0])
            true = env.spec.cube_positions[env.spec.cubes[0]]
            errors.append(100.0 * float(np.linalg.norm(goal.pick_position_m[:2] - true[:2])))
    return np.asarray(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, nargs="+", default=[SHIPPED])
    parser.add_argument("--quick", action="store_true", help="3 seeds")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed-start", type=int, default=410000)
    parser.add_argument("--task", default="pick_place")
    args = parser.parse_args()
    import torch

    from generalization import ROWS  # this script's folder is on sys.path
    from wam_ros.model.runtime import load_policy

    scenes = {row.name: row for row in ROWS if row.name in SCENE_ROWS}
    torch.set_num_threads(1)
    seeds = list(range(args.seed_start, args.seed_start + (3 if args.quick else args.seeds)))
    result: dict[str, float | str] = {"task": args.task, "seeds": f"{seeds[0]}-{seeds[-1]}"}
    print(f"| checkpoint | {' | '.join(scenes)} |\n|---|{'---|' * len(scenes)}", flush=True)
    for checkpoint in args.checkpoint:
        runtime = load_policy(checkpoint)
        cells = []
        for name, row in scenes.items():
            errors = first_grasp_errors_cm(runtime, args.task, seeds, row.sim, row.calibration)
            for stat, value in (("median_cm", np.median(errors)), ("mean_cm", errors.mean()), ("max_cm", errors.max())):
                result[f"{checkpoint.name}.{name}.{stat}"] = round(float(value), 2)
            cells.append(f"{np.median(errors):.1f} ({errors.max():.1f})")
        print(f"| {checkpoint.name} | {' | '.join(cells)} |", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
