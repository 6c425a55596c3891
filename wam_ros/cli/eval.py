"""``wam-ros eval``: offline metrics, closed-loop sim success and a contact sheet for a checkpoint.

What each number means: :mod:`wam_ros.model.evaluate`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from wam_ros.sim.tasks import PHRASINGS, BinThree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="checkpoint directory (e.g. checkpoints/cpu-small-pick-place)")
    parser.add_argument("--data", type=Path, metavar="DIR", help="held-out episodes for the offline metrics and the contact sheet")
    parser.add_argument("--samples", type=int, default=64, help="offline windows (default 64)")
    parser.add_argument("--steps", default="1,2,4,8", help="policy sampler step counts to compare offline (default 1,2,4,8)")
    parser.add_argument("--sim-episodes", type=int, default=0, metavar="N", help="closed-loop episodes in the sim (default 0: none)")
    parser.add_argument("--task", default="pick_place", help="sim task for the closed loop (default pick_place)")
    parser.add_argument("--seed-start", type=int, default=100000, help="first sim seed; use seeds not used for training (default 100000)")
    parser.add_argument("--whole-instruction", action="store_true",
                        help="closed loop: give the model the task's whole instruction instead of the current subtask's (the planner's baseline)")
    parser.add_argument("--phrasing", choices=PHRASINGS, default="template",
                        help="with --whole-instruction: the task's own wording or one of five held-out ones (bin_three only; default template)")
    parser.add_argument("--sim", action="append", default=[], metavar="KEY=VALUE",
                        help="closed loop: change the scene (a SimConfig field and a YAML value, repeatable), e.g. "
                             "--sim 'cube_region_min_xy_m=[0.40, 0.30]' --sim 'cube_region_max_xy_m=[0.62, 0.44]' (cubes beyond the demos' region)")
    parser.add_argument("--sim-config", type=Path, action="append", default=[], metavar="YAML",
                        help="closed loop: scene settings from a YAML mapping of SimConfig fields (repeatable; --sim wins), "
                             "e.g. config/sim/randomized.yaml")
    parser.add_argument("--camera-calibration", choices=("episode", "robot"), default="episode",
                        help="what a calibrated goal localiser is told of the shifted camera: each episode's pose (calibrated again after the "
                             "move) or the robot config's nominal one (moved since calibration) (default episode)")
    parser.add_argument("--policy-steps", type=int, help="sampler steps in the closed loop (default: the checkpoint's)")
    parser.add_argument("--execute-steps", type=int, help="actions executed per chunk (default: the checkpoint's)")
    parser.add_argument("--out", type=Path, default=Path("eval"), metavar="DIR", help="where report.json and contact_sheet.png go (default ./eval)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")


def run(args: argparse.Namespace) -> int:
    import torch

    from wam_ros.data import DatasetError, EpisodeDataset
    from wam_ros.model.checkpoint import CheckpointError
    from wam_ros.model.evaluate import contact_sheet, evaluate_closed_loop, evaluate_offline, offline_samples
    from wam_ros.model.runtime import load_policy
    from wam_ros.robot import ConfigError, load_robot_config
    from wam_ros.sim.config import SimConfig, scene_overrides

    torch.set_num_threads(args.threads)
    try:
        steps_list = sorted({int(s) for s in args.steps.split(",") if s.strip()})
        if not steps_list or min(steps_list) < 1:
            raise ValueError("--steps must list positive integers")
        if args.phrasing != "template" and not (args.whole_instruction and args.sim_episodes > 0):
            raise ValueError(f"--phrasing {args.phrasing} words the whole instruction: give it with --whole-instruction and --sim-episodes")
        if args.phrasing == "reworded" and args.task != BinThree.name:
            raise ValueError(f"--phrasing reworded exists for --task {BinThree.name} only")
        sim_overrides = scene_overrides(args.sim_config, args.sim)
        SimConfig.from_robot(load_robot_config("panda_sim"), sim_overrides)  # a bad override fails before the model loads
        runtime = load_policy(args.checkpoint, device=args.device)
        dataset = EpisodeDataset(args.data) if args.data else None
    except (CheckpointError, ConfigError, DatasetError, ValueError) as error:
        print(f"wam-ros eval: {error}", file=sys.stderr)
        return 2
    if dataset is None and args.sim_episodes <= 0:
        print("wam-ros eval: nothing to do; give --data and/or --sim-episodes", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "model_id": runtime.model_id}
    args.out.mkdir(parents=True, exist_ok=True)
    runtime.warmup()
    if dataset is not None:
        samples = offline_samples(runtime, dataset, args.samples)
        offline = evaluate_offline(runtime, samples, steps_list)
        report["offline"] = offline.__dict__
        contact_sheet(runtime, samples[:6], args.out / "contact_sheet.png")
        report["contact_sheet"] = str(args.out / "contact_sheet.png")
        print(f"[eval] policy action RMSE by steps {offline.policy_action_rmse_by_steps}; inverse {offline.inverse_action_rmse:.4f}")
        print(
            f"[eval] pixel MSE: forward {offline.forward_pixel_mse:.5f}, video {offline.video_pixel_mse:.5f}, "
            f"copy-last-frame {offline.copy_last_frame_pixel_mse:.5f} (autoencoder floor {offline.autoencoder_pixel_mse:.5f})"
        )
        if offline.goal_pick_error_m is not None or offline.goal_place_error_m is not None:
            errors = {k: f"{100 * v:.1f} cm" for k, v in (("next grasp", offline.goal_pick_error_m), ("next release", offline.goal_place_error_m)) if v is not None}
            print(f"[eval] goal localiser, horizontal error: {errors}")
    if args.sim_episodes > 0:
        seeds = list(range(args.seed_start, args.seed_start + args.sim_episodes))
        closed = evaluate_closed_loop(runtime, args.task, seeds, args.execute_steps, args.policy_steps, use_subtasks=not args.whole_instruction,
                                      phrasing=args.phrasing, sim_overrides=sim_overrides, camera_calibration=args.camera_calibration)
        report["closed_loop"] = {**closed.__dict__, "success_rate": closed.success_rate, "sim_overrides": sim_overrides}
        given = (f"scene {sim_overrides}, " if sim_overrides else "") + (f"the whole instruction, {args.phrasing} wording" if args.whole_instruction else "the current subtask")
        print(
            f"[eval] closed loop {args.task} ({given}): {sum(closed.successes)}/{len(seeds)} successes ({closed.success_rate:.0%}); "
            f"subtasks done {sum(closed.subtasks_done)}/{closed.subtask_count * len(seeds)}; policy median {closed.policy_latency_ms_median:.1f} ms"
        )
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"[eval] wrote {args.out / 'report.json'}")
    return 0
