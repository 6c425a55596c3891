#!/usr/bin/env python3
"""The MuJoCo tabletop: sim node speed with two cameras, control-loop cost, expert success, demo cost.

1. Real-time factor of the sim node process (unpaced, cameras in lockstep so both run at exactly
   15 Hz of sim time): front 640x480 (visual meshes) + wrist 96x96 (low-poly robot), with the
   node's CPU share and its own per-physics-step timing.
2. Cost of one 1 kHz physics step in-process (CPU time): MuJoCo alone vs env.advance (physics +
   the Python impedance law), i.e. the Python cost per step; render wall time per frame.
3. Scripted expert success per task over N seeds (50; --quick 2), no rendering.
4. Time to generate 200 pick-place demos in the dataset format (two 96x96 cameras): the real
   `wam-ros sim-demos --workers 2` on 200, in wall and CPU seconds (--quick: 4 demos recorded and
   written in this process, start-up excluded, projected to 200 for one process).

Reproduce: `.venv/bin/python bench/sim.py [--quick]`. Timings depend on the host's load (other
processes share the CPU); the last line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ("reach", "push", "pick_place", "stack", "bin_three", "insert")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process [s] from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_real_time_factor(duration_s: float, workdir: Path) -> dict[str, float]:
    """Start the sim node (unpaced, lockstep cameras at 15 Hz) and measure sim seconds per wall second."""
    import rclpy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from wam_ros.bringup import NodeSpec, ros_environment, write_params_file
    from wam_ros.ros.conversions import time_to_seconds
    from wam_ros.ros.qos import SENSORS
    from wam_ros.bringup.supervisor import node_command

    robot_file = REPO / "config" / "robots" / "panda_sim.yaml"
    data = yaml.safe_load(robot_file.read_text())
    front, wrist = (dict(c) for c in data["robot"]["cameras"][:2])
    front.update(width=640, height=480, rate_hz=15.0)
    wrist.update(width=96, height=96, rate_hz=15.0)
    data["robot"]["cameras"] = [front, wrist]
    robot_path = workdir / "panda_sim_bench.yaml"
    robot_path.write_text(yaml.safe_dump(data))
    spec = NodeSpec("sim", "sim", True, {"robot_config": str(robot_path), "real_time_factor": 0.0, "camera_lockstep": True,
                                         "stats_period_s": 5.0, "task": "pick_place", "seed": 0})
    env = {**os.environ, **ros_environment(), "ROS_DOMAIN_ID": str(100 + os.getpid() % 100), "ROS_LOG_DIR": str(workdir),
           "PYTHONUNBUFFERED": "1"}
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE",
                                           "RMW_IMPLEMENTATION", "ROS_LOG_DIR")})
    log = open(workdir / "sim_node.log", "w")
    process = subprocess.Popen(node_command(spec, write_params_file(spec, workdir)), stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("bench_sim_probe")
    clock: list[float] = []
    frames = {"front": 0, "wrist": 0}
    node.create_subscription(Clock, "/clock", lambda m: clock.append(time_to_seconds(m.clock)), SENSORS)
    for name in frames:
        node.create_subscription(Image, f"/wam/cameras/{name}/image", lambda m, n=name: frames.__setitem__(n, frames[n] + 1),
                                 SENSORS, raw=True)
    try:
        deadline = time.monotonic() + 60.0
        while (not clock or clock[-1] < 1.0) and time.monotonic() < deadline:  # start-up, GL contexts, first frames
            rclpy.spin_once(node, timeout_sec=0.05)
            if process.poll() is not None:
                raise RuntimeError(f"sim node exited: {(workdir / 'sim_node.log').read_text()[-2000:]}")
        if not clock:
            raise RuntimeError("no /clock from the sim node within 60 s")
        start_wall, start_sim, start_cpu = time.monotonic(), clock[-1], _cpu_seconds(process.pid)
        start_frames = dict(frames)
        while time.monotonic() - start_wall < duration_s:
            rclpy.spin_once(node, timeout_sec=0.05)
        wall, sim = time.monotonic() - start_wall, clock[-1] - start_sim
        cpu = _cpu_seconds(process.pid) - start_cpu
    finally:
        node.destroy_node()
        rclpy.shutdown()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
    stats = [line for line in (workdir / "sim_node.log").read_text().splitlines() if "real-time factor" in line and "us per" in line]
    return {
        "node_real_time_factor_two_cameras_15hz": sim / wall,
        "node_cpu_cores": cpu / wall,
        "node_front_640x480_frames_per_sim_s": (frames["front"] - start_frames["front"]) / sim,
        "node_wrist_96x96_frames_per_sim_s": (frames["wrist"] - start_frames["wrist"]) / sim,
        "node_stats_line": stats[-1].split("]: ", 1)[-1] if stats else "",
    }


def step_costs() -> dict[str, float]:
    """CPU time per 1 kHz physics step in-process, and per rendered frame."""
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv  # before mujoco: it selects headless EGL rendering

    import mujoco

    env = TabletopEnv(load_robot_config("panda_sim"))
    env.reset("pick_place", 0)

    def best(function, repeat: int, rounds: int = 5, clock=time.thread_time) -> float:
        """Fastest round: the least disturbed by other processes on the host."""
        times = []
        for _ in range(rounds):
            started = clock()
            for _ in range(repeat):
                function()
            times.append((clock() - started) / repeat)
        return min(times)

    model, data = env.model, env.data

    def mujoco_steps() -> None:
        for _ in range(100):
            mujoco.mj_step(model, data)

    # Alternate the two so that both see the same host load; keep each one's fastest round.
    mujoco_only, advance = np.inf, np.inf
    for _ in range(5):
        mujoco_only = min(mujoco_only, best(mujoco_steps, 10, rounds=1) / 100)
        advance = min(advance, best(lambda: env.advance(0.1), 10, rounds=1) / 100)
    action = np.append(env.home, 0.04)
    env.set_cartesian_target(env.observation().ee_pose[:3], env.observation().ee_pose[3:])
    cartesian = best(lambda: env.advance(0.1), 10) / 100
    env.step(action)
    # Wall time for rendering: llvmpipe (software OpenGL) renders in its own threads.
    small = best(lambda: env.render_camera("front", 96, 96), 30, clock=time.perf_counter)
    small_visual = best(lambda: env.render_camera("front", 96, 96, low_poly=False), 10, clock=time.perf_counter)
    large = best(lambda: env.render_camera("front", 480, 640), 10, clock=time.perf_counter)
    env.close()
    return {
        "mujoco_us_per_physics_step": 1e6 * mujoco_only,
        "joint_mode_us_per_physics_step": 1e6 * advance,
        "python_us_per_physics_step": 1e6 * (advance - mujoco_only),
        "cartesian_mode_us_per_physics_step": 1e6 * cartesian,
        "render_ms_96x96_low_poly": 1e3 * small,
        "render_ms_96x96_visual_meshes": 1e3 * small_visual,
        "render_ms_640x480": 1e3 * large,
    }


def expert_success(seeds: int) -> dict[str, float]:
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.demos import record_demo

    env = TabletopEnv(load_robot_config("panda_sim"))
    results = {}
    for task in TASKS:
        started, successes, failed = time.monotonic(), 0, []
        for seed in range(seeds):
            result = record_demo(env, task, seed, render=False)
            successes += result.success
            if not result.success:
                failed.append(seed)
        rate = successes / seeds
        print(f"  {task:<10} {successes}/{seeds} = {rate:.0%} ({time.monotonic() - started:.0f} s; failed seeds {failed})", flush=True)
        results[f"expert_success_{task}"] = rate
    env.close()
    return results


def demo_generation(episodes: int, workers: int, workdir: Path) -> dict[str, float]:
    """Run `wam-ros sim-demos` (the real command) and time it: wall time and CPU time of all its processes."""
    import resource

    out = workdir / "demos"
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "wam_ros.cli", "sim-demos", "--task", "pick_place", "--episodes", str(episodes),
                                "--out", str(out), "--workers", str(workers)], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if completed.returncode != 0:
        raise RuntimeError(f"sim-demos failed: {completed.stderr[-2000:]}")
    from wam_ros.data.episodes import EpisodeDataset

    dataset = EpisodeDataset(out)
    frames = sum(r["length"] for r in dataset.records)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "demos_measured": float(len(dataset)),
        "demo_seconds_per_episode": elapsed / len(dataset),
        "demo_cpu_seconds_per_episode": cpu / len(dataset),
        "demo_frames_per_episode": frames / len(dataset),
        "pick_place_200_demos_s": elapsed / len(dataset) * 200,
        "pick_place_200_demos_cpu_s": cpu / len(dataset) * 200,
        "dataset_mb_per_200_demos": size / len(dataset) * 200 / 1e6,
    }


def demo_generation_in_process(episodes: int, workdir: Path) -> dict[str, float]:
    """Record and write episodes in this process, start-up excluded, and project to 200 (one process)."""
    from wam_ros.data.episodes import DatasetWriter
    from wam_ros.robot import load_robot_config
    from wam_ros.sim import TabletopEnv
    from wam_ros.sim.demos import dataset_info, record_demo

    robot = load_robot_config("panda_sim")
    env = TabletopEnv(robot)
    writer = DatasetWriter(workdir / "demos_in_process", dataset_info(robot, env))
    frames = 0
    started, started_cpu = time.monotonic(), time.process_time()  # llvmpipe threads count in process time
    for seed in range(episodes):
        result = record_demo(env, "pick_place", seed)
        writer.add(result.episode)
        frames += result.steps
    elapsed, cpu = time.monotonic() - started, time.process_time() - started_cpu
    env.close()
    return {
        "demos_measured": float(episodes),
        "demo_seconds_per_episode": elapsed / episodes,
        "demo_cpu_seconds_per_episode": cpu / episodes,
        "demo_frames_per_episode": frames / episodes,
        "pick_place_200_demos_one_process_projected_s": elapsed / episodes * 200,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds per task, 4 demos in-process (projected to 200), 6 s node run")
    parser.add_argument("--workers", type=int, default=2, help="sim-demos worker processes (default 2, one per core here)")
    args = parser.parse_args()
    seeds, demos, node_s = (2, 4, 6.0) if args.quick else (50, 200, 30.0)
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory(prefix="wam_ros_bench_sim_") as tmp:
        workdir = Path(tmp)
        print(f"sim node, unpaced, front 640x480 + wrist 96x96 at 15 Hz in lockstep, {node_s:g} s ...", flush=True)
        node = node_real_time_factor(node_s, workdir)
        print(f"  real-time factor {node['node_real_time_factor_two_cameras_15hz']:.2f}, node CPU {node['node_cpu_cores']:.2f} cores, "
              f"front {node['node_front_640x480_frames_per_sim_s']:.1f} / wrist {node['node_wrist_96x96_frames_per_sim_s']:.1f} "
              f"frames per sim second\n  node: {node['node_stats_line']}", flush=True)
        results.update({k: v for k, v in node.items() if k != "node_stats_line"})
        print("in-process cost per 1 kHz physics step and per frame ...", flush=True)
        costs = step_costs()
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()), flush=True)
        results.update(costs)
        print(f"expert success over {seeds} seeds per task (no rendering) ...", flush=True)
        results.update(expert_success(seeds))
        if args.quick:
            print(f"{demos} pick-place demos in this process (two 96x96 cameras, start-up excluded), projected to 200 ...", flush=True)
            demo = demo_generation_in_process(demos, workdir)
            print(f"  {demo['demo_seconds_per_episode']:.2f} s wall, {demo['demo_cpu_seconds_per_episode']:.2f} s CPU per episode "
                  f"({demo['demo_frames_per_episode']:.0f} frames): about {demo['pick_place_200_demos_one_process_projected_s']:.0f} s "
                  "for 200 demos in one process", flush=True)
        else:
            print(f"wam-ros sim-demos --task pick_place --episodes {demos} --workers {args.workers} (two 96x96 cameras) ...", flush=True)
            demo = demo_generation(demos, args.workers, workdir)
            print(f"  {demo['demo_seconds_per_episode']:.2f} s wall, {demo['demo_cpu_seconds_per_episode']:.2f} s CPU per episode "
                  f"({demo['demo_frames_per_episode']:.0f} frames): {demo['pick_place_200_demos_s']:.0f} s wall "
                  f"({demo['pick_place_200_demos_cpu_s']:.0f} CPU-s) for 200 demos, {demo['dataset_mb_per_200_demos']:.0f} MB", flush=True)
        results.update(demo)
    results["quick"] = float(args.quick)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
