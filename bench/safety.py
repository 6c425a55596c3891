"""Safety bridge benchmark: fuzzed inputs vs unsafe outputs, output rate and period error, deadline-to-HOLD.

1. Fuzz (no ROS): random chunks, teleop twists and joint commands (NaN/inf, huge jumps, wrong
   joint names and lengths, stale and future stamps, out-of-box targets), mode requests and
   joint-state dropouts go into :class:`SafetyBridgeCore`; every output cycle is checked by the
   independent :class:`CommandChecker` (joint limits, workspace box, speed cap, acceleration,
   jerk, gripper width and speed). ``unsafe_outputs`` must be 0; ``max_acceleration_ratio`` /
   ``max_jerk_ratio`` are the worst commanded acceleration and jerk as a fraction of the limit.
2. Output rate: the bridge node as a process streams to the sim backend topic while it runs a
   chunk; intervals between received commands give the rate and the p99 period error
   (transport included).
3. Deadline-to-HOLD: repeated short chunks in AUTONOMY; the stale-chunk watchdog's HOLD stamp
   minus the chunk's deadline (bridge clock), and the HOLD status's arrival here minus the
   deadline (transport included).
4. Braking (no ROS): the core jogs the TCP at the speed cap, then HOLD; ``braking_time_s`` and
   ``braking_distance_m`` (TCP path) until the command is at rest.
5. Shutdown to standstill: the bridge process jogs the arm (this process echoes the commands
   as joint states) at the speed cap in TELEOP and gets SIGINT; ``shutdown_to_standstill_s`` is
   the time from the signal to the first command with zero velocity received here.

Usage: ``bench/safety.py [--quick]``; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wam_ros.control.bridge import BridgeSettings, SafetyBridgeCore  # noqa: E402
from wam_ros.control.chunks import ChunkInput  # noqa: E402
from wam_ros.control.checker import CommandChecker  # noqa: E402
from wam_ros.control.kinematics import ChainKinematics  # noqa: E402
from wam_ros.control.modes import MemoryLatch, Mode  # noqa: E402
from wam_ros.robot import load_robot_config, robot_config_path  # noqa: E402

ROBOT = load_robot_config("panda_sim")
NAMES = list(ROBOT.arm.joint_names)
KINEMATICS = ChainKinematics.from_urdf(ROBOT.urdf_path, ROBOT.base_frame, ROBOT.tcp_frame, NAMES)
NASTY = (math.nan, math.inf, -math.inf, 1e6, -1e6, 1e300)



def fuzz(inputs: int, seed: int = 0) -> dict:
    """Feed ``inputs`` fuzzed messages, one output cycle after each; count unsafe outputs."""
    rng = np.random.default_rng(seed)
    kinematics = KINEMATICS
    settings = BridgeSettings(joint_state_timeout_s=0.02, inference_timeout_s=0.1)
    lower, upper = np.array(ROBOT.arm.position_lower_rad), np.array(ROBOT.arm.position_upper_rad)
    unsafe, outputs, clipped_cycles, fed = 0, 0, 0, 0
    examples: list[str] = []
    core = checker = None
    worst_acceleration, worst_jerk = 0.0, 0.0
    started = time.perf_counter()
    while fed < inputs:
        if core is None or rng.random() < 0.02 or (core.mode in (Mode.IDLE, Mode.ESTOP) and rng.random() < 0.2):
            # A fresh bridge at a random pose now and then (and soon after it stopped commanding).
            core = SafetyBridgeCore(ROBOT, settings, MemoryLatch(), kinematics)
            now = 100.0
            reference = lower + rng.random(7) * (upper - lower) if rng.random() < 0.5 else \
                np.array(ROBOT.arm.home_rad) + rng.uniform(-0.3, 0.3, 7)
            if checker is not None:
                worst_acceleration = max(worst_acceleration, checker.worst_acceleration_ratio)
                worst_jerk = max(worst_jerk, checker.worst_jerk_ratio)
            checker = CommandChecker(ROBOT, core.period_s, reference)
            core.on_joint_state(NAMES, reference, [], now)
            core.request_mode(int(rng.choice([Mode.TELEOP, Mode.AUTONOMY])), "bench", False, now)
        kind = rng.choice(8, p=[0.25, 0.2, 0.15, 0.12, 0.06, 0.06, 0.06, 0.1])  # chunk x2, twist, joints, mode, dropout, gripper, none
        scale = (0.01, 0.3, 1.5, 50.0)[rng.integers(4)]
        vector = reference + rng.uniform(-1, 1, 7) * scale
        if rng.random() < 0.1:
            vector[rng.integers(7)] = NASTY[rng.integers(len(NASTY))]
        if kind <= 1:
            horizon = int(rng.integers(1, 13))
            names = NAMES if rng.random() < 0.6 else [NAMES[::-1], NAMES[:6], NAMES + ["x"], NAMES[:6] + ["elbow"]][rng.integers(4)]
            flat = np.tile(vector, horizon).tolist()
            flat = flat if rng.random() < 0.8 else flat[:-1]
            period = (0.1, 0.05, 0.02, 0.0, -0.1, math.nan, 5.0)[rng.integers(7)]
            stamp = now + (0.0, -0.05, -0.5, -5.0, 0.03, 1.0, math.nan)[rng.integers(7)]
            widths = ([], [0.04] * horizon, [0.5] * horizon, [math.nan] * horizon)[rng.integers(4)]
            core.on_chunk(ChunkInput(stamp, names, period, horizon, flat, widths, fed), now,
                          "model" if rng.random() < 0.9 else "impostor", "/bench")
        elif kind == 2:
            linear = rng.uniform(-0.5, 0.5, 3) * (0.1, 1.0, 100.0)[rng.integers(3)]
            if rng.random() < 0.1:
                linear[rng.integers(3)] = NASTY[rng.integers(len(NASTY))]
            core.on_teleop_twist(linear, rng.uniform(-3, 3, 3), ("", ROBOT.base_frame, ROBOT.tcp_frame, "world")[rng.integers(4)],
                                 now, "teleop", "/teleop")
        elif kind == 3:
            core.on_teleop_joints(NAMES if rng.random() < 0.8 else NAMES[:5], vector.tolist(), now, "leader", "/leader")
        elif kind == 4:
            core.request_mode(int(rng.integers(0, 7)), "bench", bool(rng.random() < 0.3), now)
        elif kind == 5:
            now += settings.joint_state_timeout_s * 1.5  # joint states drop out
        elif kind == 6:
            core.on_teleop_gripper(float((0.0, 0.04, 0.08, -1.0, 1.0, math.nan)[rng.integers(6)]), now, "teleop", "/teleop")
        fed += 1
        now += core.period_s
        output = core.step(now)
        if output is None:
            problems = checker.check_stop()
        else:
            outputs += 1
            clipped_cycles += bool(core.active_limits)
            problems = checker.check(output.position, output.gripper_width_m, now)
            reference = output.position
        if problems:
            unsafe += 1
            examples.append("; ".join(problems))
        core.on_joint_state(NAMES, reference, [], now)
        if fed % 20000 == 0:
            print(f"  fuzz: {fed} inputs, {outputs} outputs, {unsafe} unsafe ({time.perf_counter() - started:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started
    worst_acceleration = max(worst_acceleration, checker.worst_acceleration_ratio)
    worst_jerk = max(worst_jerk, checker.worst_jerk_ratio)
    if examples:
        print(f"  unsafe examples: {examples[:3]}", flush=True)
    return {"fuzz_inputs": fed, "fuzz_outputs_checked": outputs, "unsafe_outputs": unsafe,
            "fuzz_cycles_with_a_clip": clipped_cycles, "fuzz_us_per_input": elapsed / fed * 1e6,
            "max_acceleration_ratio": worst_acceleration, "max_jerk_ratio": worst_jerk}


def braking_from_the_speed_cap() -> dict:
    """Jog the TCP at the speed cap in TELEOP (the core, no ROS), then HOLD: time and TCP distance to rest."""
    kinematics = KINEMATICS
    core = SafetyBridgeCore(ROBOT, BridgeSettings(), MemoryLatch(), kinematics)
    home = np.array(ROBOT.arm.home_rad)
    checker = CommandChecker(ROBOT, core.period_s, home)
    core.on_joint_state(NAMES, home, [], 0.0)
    core.request_mode(Mode.TELEOP, "bench", False, 0.0)
    now, tcp, problems = 0.0, [kinematics.positions(home)], []

    def cycle() -> None:
        nonlocal now
        now += core.period_s
        output = core.step(now)
        problems.extend(checker.check(output.position))
        core.on_joint_state(NAMES, output.position, [], now)
        tcp.append(kinematics.positions(output.position))

    for _ in range(int(0.6 / core.period_s)):  # +y at the cap, 0.6 s: at full speed, still far from the wall
        core.on_teleop_twist((0.0, ROBOT.safety.ee_speed_max_m_s, 0.0), (0, 0, 0), "", now, "bench", "/bench")
        cycle()
    speed = float(np.linalg.norm(tcp[-1] - tcp[-2]) / core.period_s)
    core.request_mode(Mode.HOLD, "bench", False, now)
    stop = len(tcp) - 1
    while not core.follower.at_rest:
        cycle()
    path = np.asarray(tcp[stop:])
    return {"braking_from_tcp_speed_m_s": speed, "braking_time_s": (len(path) - 1) * core.period_s,
            "braking_distance_m": float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))),
            "braking_unsafe_outputs": len(problems), "ee_speed_max_m_s": ROBOT.safety.ee_speed_max_m_s}


def run_node_benchmarks(rate_seconds: float, hold_trials: int, realtime_priority: int) -> dict:
    """Output rate / period error and deadline-to-HOLD against the bridge node as a real process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from wam_ros.bringup import NodeSpec, ros_environment, write_params_file
    from wam_ros_interfaces.msg import ActionChunk, SafetyStatus
    from wam_ros.ros import qos
    from wam_ros.ros.conversions import seconds_to_time, time_to_seconds
    from wam_ros_interfaces.srv import SetMode
    from wam_ros.bringup.supervisor import node_command

    os.environ.update(ros_environment())
    os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(101, 200))
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="wam_ros_bench_logs_"))
    workdir = Path(tempfile.mkdtemp(prefix="wam_ros_bench_safety_"))
    spec = NodeSpec("safety_bridge", "safety_bridge", True, {
        "robot_config": str(robot_config_path("panda_sim")), "estop_latch_file": str(workdir / "estop.json"),
        "inference_timeout_s": 2.0, "status_rate_hz": 10.0, "joint_state_timeout_s": 0.25,
        "realtime_priority": realtime_priority})
    log = open(workdir / "bridge.log", "w")
    bridge = subprocess.Popen(node_command(spec, write_params_file(spec, workdir)), stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    rclpy.init()
    node = rclpy.create_node("bench_safety")
    executor = SingleThreadedExecutor()  # a MultiThreadedExecutor busy-waits and takes CPU from the nodes measured
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        home = np.array(ROBOT.arm.home_rad)
        arm = {"position": home.copy(), "velocity": np.zeros(len(NAMES))}
        arrivals: list[float] = []
        statuses: list[tuple[float, SafetyStatus]] = []
        standstill: list[float] = []  # arrival of the first command at rest, once asked for

        def on_command(msg: JointTrajectory) -> None:
            arrivals.append(time.monotonic())
            arm["position"], arm["velocity"] = np.array(msg.points[0].positions), np.array(msg.points[0].velocities)
            if standstill == [0.0] and not np.any(np.array(msg.points[0].velocities)):
                standstill[0] = arrivals[-1]

        node.create_subscription(JointTrajectory, ROBOT.backend.joint_trajectory_topic, on_command, qos.COMMANDS)
        node.create_subscription(SafetyStatus, "/wam/safety/status", lambda m: statuses.append((time.time(), m)), qos.LATCHED)
        states = node.create_publisher(JointState, "/joint_states", qos.SENSORS)
        node.create_timer(0.005, lambda: states.publish(JointState(name=NAMES, position=arm["position"].tolist())))
        chunks = node.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
        twists = node.create_publisher(TwistStamped, "/wam/teleop/command", qos.COMMANDS)
        client = node.create_client(SetMode, "/wam/set_mode")

        def wait(predicate, timeout_s: float, what: str):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                value = predicate()
                if value:
                    return value
                time.sleep(0.005)
            raise TimeoutError(f"no {what} within {timeout_s} s (bridge log: {workdir / 'bridge.log'})")

        def set_mode(mode: int) -> None:
            wait(client.service_is_ready, 60.0, "/wam/set_mode service")
            for _ in range(20):
                future = client.call_async(SetMode.Request(mode=mode, reason="bench"))
                response = wait(lambda: future.done() and future.result(), 10.0, "SetMode response")
                if response.accepted:
                    return
                if "joint states" not in response.message:
                    break
                time.sleep(0.1)  # this process's joint-state publisher stalled on the loaded machine: retry
            raise RuntimeError(f"bridge refused mode {mode}: {response.message}")

        def chunk(stamp_s: float, targets: np.ndarray, period_s: float) -> ActionChunk:
            msg = ActionChunk(joint_names=NAMES, control_period_s=period_s, horizon=len(targets), joint_positions=targets.ravel().tolist())
            msg.header.stamp = seconds_to_time(stamp_s)
            return msg

        wait(lambda: statuses, 60.0, "SafetyStatus")
        wait(lambda: chunks.get_subscription_count() > 0, 30.0, "the bridge's chunk subscription")
        time.sleep(0.3)  # joint states flowing
        set_mode(SafetyStatus.MODE_AUTONOMY)
        # Output rate: a slow sine on the wrist, re-sent every 0.5 s like a model would.
        wave = home + np.outer(0.3 * np.sin(np.linspace(0, 2 * np.pi, 40)), np.eye(7)[6])
        started = time.time()
        chunks.publish(chunk(started, wave, 0.1))
        time.sleep(0.5)
        arrivals.clear()
        while time.time() - started < rate_seconds + 0.5:
            offset = int((time.time() - started) / 0.1)
            chunks.publish(chunk(started + 0.1 * offset, np.roll(wave, -offset, axis=0), 0.1))
            time.sleep(0.5)
        count = len(arrivals)
        intervals = np.diff(np.array(arrivals[:count]))
        period = 1.0 / 250.0
        print(f"  output: {count} commands in {rate_seconds:.0f} s", flush=True)
        results = {
            "output_rate_hz": len(intervals) / float(np.sum(intervals)),
            "output_period_error_ms_p50": float(np.percentile(np.abs(intervals - period), 50) * 1e3),
            "output_period_error_ms_p99": float(np.percentile(np.abs(intervals - period), 99) * 1e3),
        }
        # Deadline-to-HOLD: a 5-action chunk per trial; deadline = its last action's time. A chunk that
        # arrives after its last action is refused (stale); the silent-inference watchdog then ends the
        # trial, which is counted as skipped.
        bridge_latency, observed_latency, skipped = [], [], 0
        for trial in range(hold_trials):
            set_mode(SafetyStatus.MODE_AUTONOMY)
            stamp = time.time()
            chunks.publish(chunk(stamp, np.tile(arm["position"], (5, 1)), 0.05))
            deadline = stamp + 4 * 0.05
            count = len(statuses)
            arrived, hold = wait(lambda: next(((t, s) for t, s in statuses[count:] if s.mode == SafetyStatus.MODE_HOLD), None),
                                 10.0, "HOLD")
            if "action_chunk_stale" not in hold.last_stop_reason:
                skipped += 1
                continue
            bridge_latency.append(time_to_seconds(hold.last_stop_stamp) - deadline)
            observed_latency.append(arrived - deadline)
            if (trial + 1) % 20 == 0:
                print(f"  deadline-to-HOLD: {trial + 1} trials", flush=True)
        results.update({
            "deadline_to_hold_ms_p50": float(np.percentile(bridge_latency, 50) * 1e3),
            "deadline_to_hold_ms_p99": float(np.percentile(bridge_latency, 99) * 1e3),
            "deadline_to_hold_observed_ms_p50": float(np.percentile(observed_latency, 50) * 1e3),
            "deadline_to_hold_observed_ms_p99": float(np.percentile(observed_latency, 99) * 1e3),
            "watchdog_margin_ms": ROBOT.safety.watchdog_margin_s * 1e3,
            "hold_trials": len(bridge_latency),
            "hold_trials_skipped_chunk_late": skipped,
        })
        # Shutdown to standstill: jog at the speed cap, SIGINT, first command at rest.
        set_mode(SafetyStatus.MODE_HOLD)
        time.sleep(0.5)  # the chunk trials' last HOLD brakes to rest
        set_mode(SafetyStatus.MODE_TELEOP)
        wait(lambda: twists.get_subscription_count() > 0, 30.0, "the bridge's twist subscription")
        direction = 1.0 if KINEMATICS.positions(arm["position"])[1] < 0 else -1.0  # along y, towards the middle
        jog = TwistStamped()
        jog.twist.linear.y = direction * ROBOT.safety.ee_speed_max_m_s
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            twists.publish(jog)
            time.sleep(0.01)
        results["shutdown_from_tcp_speed_m_s"] = float(np.linalg.norm(KINEMATICS.jacobian(arm["position"])[0][:3] @ arm["velocity"]))
        standstill.append(0.0)
        signalled = time.monotonic()
        os.killpg(bridge.pid, signal.SIGINT)
        while time.monotonic() - signalled < 1.0:  # the operator's device keeps sending during the stop
            twists.publish(jog)
            time.sleep(0.01)
        wait(lambda: standstill[0] > 0.0, 10.0, "a command at rest after SIGINT")
        results["shutdown_to_standstill_s"] = standstill[0] - signalled
        results["bridge_exit_code"] = bridge.wait(timeout=10.0)
        return results
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)  # out of spin() before its node goes (ros2/rclpy#968); bounded: a daemon thread
        node.destroy_node()
        rclpy.try_shutdown()
        for sig, grace_s in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            if bridge.poll() is None:
                os.killpg(bridge.pid, sig)
                try:
                    bridge.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs and trials (under two minutes)")
    parser.add_argument("--realtime-priority", type=int, default=0, help="the bridge's SCHED_FIFO priority (0: normal scheduling)")
    args = parser.parse_args()
    inputs, rate_seconds, trials = (20_000, 5.0, 30) if args.quick else (100_000, 20.0, 200)
    print(f"fuzzing {inputs} inputs through the bridge core ...", flush=True)
    results = fuzz(inputs)
    print(f"  {results['unsafe_outputs']} unsafe of {results['fuzz_outputs_checked']} outputs, "
          f"{results['fuzz_us_per_input']:.0f} us per input; worst acceleration {results['max_acceleration_ratio']:.3f}, "
          f"jerk {results['max_jerk_ratio']:.3f} of the limits", flush=True)
    results.update(braking_from_the_speed_cap())
    print(f"  braking from {results['braking_from_tcp_speed_m_s']:.3f} m/s: {results['braking_time_s'] * 1e3:.0f} ms, "
          f"{results['braking_distance_m'] * 1e3:.1f} mm", flush=True)
    print(f"bridge node: output rate for {rate_seconds:.0f} s, then {trials} deadline-to-HOLD trials ...", flush=True)
    results.update(run_node_benchmarks(rate_seconds, trials, args.realtime_priority))
    results["realtime_priority"] = args.realtime_priority
    print(f"  {results['output_rate_hz']:.1f} Hz, period error p99 {results['output_period_error_ms_p99']:.2f} ms; "
          f"deadline-to-HOLD p50 {results['deadline_to_hold_ms_p50']:.1f} ms, p99 {results['deadline_to_hold_ms_p99']:.1f} ms "
          f"(observed here p99 {results['deadline_to_hold_observed_ms_p99']:.1f} ms); SIGINT at "
          f"{results['shutdown_from_tcp_speed_m_s']:.3f} m/s to standstill {results['shutdown_to_standstill_s'] * 1e3:.0f} ms", flush=True)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))
    return 1 if results["unsafe_outputs"] or results["braking_unsafe_outputs"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
