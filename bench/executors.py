#!/usr/bin/env python3
"""CPU of an idle sim-time rclpy node per executor, against the sim node's real /clock.

Every node but the sim runs on sim time, so each one handles every /clock message. This starts
the sim node (panda_sim, default parameters unless given), then one probe process per case: a
node with ``use_sim_time`` and a coroutine service whose work runs for a few seconds in a thread
(``wam_ros.ros.node.in_thread``, what the planner's goals and the inference node's ``~/imagine``
use). Each probe reports its own CPU (user + system, share of one core) while idle and while a
request is being served, and how long the request took.

    .venv/bin/python bench/executors.py [--seconds S] [--clock-rate-hz HZ ...]

The last line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXECUTORS = ("single", "multi")
WORK_S = 3.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def probe(executor_kind: str, seconds: float) -> None:
    """One sim-time node spun by ``executor_kind``; prints its CPU share idle and while serving."""
    import threading

    import rclpy
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from wam_ros.ros.node import in_thread

    rclpy.init()
    node = rclpy.create_node(f"executor_probe_{executor_kind}", parameter_overrides=[Parameter("use_sim_time", value=True)])

    async def serve(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = await in_thread(node, lambda: time.sleep(WORK_S) or "done", "probe_work")
        response.success = True
        return response

    node.create_service(Trigger, "~/work", serve, callback_group=ReentrantCallbackGroup())
    executor = SingleThreadedExecutor() if executor_kind == "single" else MultiThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    deadline = time.monotonic() + 30.0
    while node.get_clock().now().nanoseconds == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # no /clock yet
    time.sleep(1.0)
    cpu, wall = _cpu_s(), time.monotonic()
    time.sleep(seconds)
    idle = (_cpu_s() - cpu) / (time.monotonic() - wall)
    client = rclpy.create_node(f"executor_probe_client_{executor_kind}")  # spun below by this thread alone
    trigger = client.create_client(Trigger, f"/executor_probe_{executor_kind}/work")
    served, took = float("nan"), float("nan")
    if trigger.wait_for_service(timeout_sec=20.0):
        cpu, wall = _cpu_s(), time.monotonic()
        future = trigger.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(client, future, timeout_sec=WORK_S + 20.0)
        took = time.monotonic() - wall
        served = (_cpu_s() - cpu) / took if future.done() and future.result().success else float("nan")
    print(json.dumps({"idle_cpu": idle, "serving_cpu": served, "request_s": took}), flush=True)
    os._exit(0)  # the spinning executor thread needs no orderly end here


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="idle measurement per case [s]")
    parser.add_argument("--clock-rate-hz", type=float, nargs="+", default=[250.0, 500.0], help="sim /clock rates to measure")
    parser.add_argument("--probe", choices=EXECUTORS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.seconds)
        return 0
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(120 + os.getpid() % 60), "PYTHONUNBUFFERED": "1"}
    robot = REPO / "config" / "robots" / "panda_sim.yaml"
    results: dict[str, float] = {}
    print(f"[executors] {os.cpu_count()} CPUs; idle {args.seconds:g} s, then one {WORK_S:g} s request per case", flush=True)
    for rate in args.clock_rate_hz:
        sim = subprocess.Popen(
            [sys.executable, "-m", "wam_ros.nodes.sim_node", "--ros-args", "-r", "__node:=sim", "-p", f"robot_config:={robot}",
             "-p", f"clock_rate_hz:={rate}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            for kind in EXECUTORS:
                done = subprocess.run([sys.executable, __file__, "--probe", kind, "--seconds", str(args.seconds)], env=env,
                                      capture_output=True, text=True, timeout=args.seconds + WORK_S + 90.0)
                if done.returncode != 0 or not done.stdout.strip():
                    print(f"[executors] probe {kind} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"[executors] /clock {rate:g} Hz, {kind:6s}: idle {100 * measured['idle_cpu']:5.1f} % of a core, "
                      f"serving a {WORK_S:g} s request {100 * measured['serving_cpu']:5.1f} % (answered in {measured['request_s']:.2f} s)", flush=True)
                for key, value in measured.items():
                    results[f"{kind}_{rate:g}hz_{key}"] = round(value, 3)
        finally:
            sim.send_signal(signal.SIGINT)
            try:
                sim.wait(timeout=20.0)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
