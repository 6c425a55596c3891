"""``wam-ros demo``: the main job. The learned WAM drives the simulated Panda through the safety bridge.

Brings up ``robot:=panda_sim`` (sim, safety bridge, WAM inference with the shipped checkpoint,
and whatever else the robot file enables) with the same supervisor as ``wam-ros bringup``,
then, for each seed: resets the sim to the task, gives the inference node the instruction,
switches the bridge to AUTONOMY, waits for success or a timeout, and stops in HOLD. Prints
success, chunk latencies and safety events per episode, saves a video of every episode, and
ends with one JSON line. Ctrl-C stops the arm (HOLD), then every node, cleanly.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wam_ros.bringup import load_bringup, parse_overrides
from wam_ros.robot import ConfigError

DEFAULT_SEEDS = [1000, 1001, 1002]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="robot:=<name> (default panda_sim) and <node>.<parameter>:=<value> overrides")
    parser.add_argument("--task", default="pick_place", help="sim task (default pick_place)")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="episode seeds (held out from training)")
    parser.add_argument("--episode-timeout", type=float, default=40.0, metavar="S", help="sim seconds per episode before it counts as a failure")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="wall seconds for the nodes (and the model) to come up")
    parser.add_argument("--video-dir", type=Path, default=Path("outputs/demo"), help="where episode videos go")
    parser.add_argument("--video-camera", default="front", help="camera shown in the episode videos")


@dataclass
class EpisodeReport:
    seed: int
    instruction: str
    success: bool
    sim_duration_s: float
    chunks: int
    latency_ms: list[float] = field(default_factory=list)
    safety_events: list[str] = field(default_factory=list)
    video: str = ""


class DemoClient:
    """A small facade over the running graph: reset, instruct, switch modes, watch."""

    def __init__(self, camera: str, startup_timeout_s: float) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import Image

        from wam_ros.msg import ActionChunk, SafetyStatus, Subtask, TaskStatus
        from wam_ros.ros import qos
        from wam_ros.srv import ResetSim, SetMode

        self.startup_timeout_s = startup_timeout_s
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("wam_demo", context=self.context, parameter_overrides=[])
        self.lock = threading.Lock()
        self.status: TaskStatus | None = None
        self.safety: SafetyStatus | None = None
        self.chunks: list[ActionChunk] = []
        self.events: list[str] = []
        self.frames: list[np.ndarray] = []
        self.recording = False
        self.reset_client = self.node.create_client(ResetSim, "/wam/sim/reset")
        self.mode_client = self.node.create_client(SetMode, "/wam/set_mode")
        self.subtask_pub = self.node.create_publisher(Subtask, "/wam/task/subtask", qos.LATCHED)
        self.node.create_subscription(TaskStatus, "/wam/sim/task_status", self._on_status, qos.LATCHED)
        self.node.create_subscription(SafetyStatus, "/wam/safety/status", self._on_safety, qos.LATCHED)
        self.node.create_subscription(ActionChunk, "/wam/action_chunk", self._on_chunk, qos.COMMANDS)
        self.node.create_subscription(Image, f"/wam/cameras/{camera}/image", self._on_image, qos.SENSORS)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.msgs = {"Subtask": Subtask, "SetMode": SetMode, "ResetSim": ResetSim, "SafetyStatus": SafetyStatus}

    def _on_status(self, msg) -> None:
        self.status = msg

    def _on_safety(self, msg) -> None:
        with self.lock:
            if self.recording and msg.violations:
                self.events.extend(msg.violations)
        self.safety = msg

    def _on_chunk(self, msg) -> None:
        with self.lock:
            if self.recording:
                self.chunks.append(msg)

    def _on_image(self, msg) -> None:
        from wam_ros.ros.conversions import image_to_numpy

        with self.lock:
            if self.recording:
                self.frames.append(image_to_numpy(msg))

    def sim_time_s(self) -> float:
        return self.status.header.stamp.sec + self.status.header.stamp.nanosec * 1e-9 if self.status else 0.0

    def call(self, client, request, timeout_s: float):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout_s:.0f} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no response from {client.srv_name}")
            time.sleep(0.01)
        return future.result()

    def set_mode(self, mode: int, reason: str) -> None:
        response = self.call(self.mode_client, self.msgs["SetMode"].Request(mode=mode, reason=reason), 10.0)
        if not response.accepted:
            raise RuntimeError(f"safety bridge refused mode {mode}: {response.message}")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for client in (self.reset_client, self.mode_client):
            if not client.wait_for_service(timeout_sec=max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"{client.srv_name} did not come up within {timeout_s:.0f} s")
        while self.status is None or self.safety is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no task status or safety status within the start-up timeout")
            time.sleep(0.05)

    def run_episode(self, task: str, seed: int, timeout_s: float, stopping: threading.Event) -> EpisodeReport:
        SafetyStatus, Subtask = self.msgs["SafetyStatus"], self.msgs["Subtask"]
        if self.safety.mode != SafetyStatus.MODE_IDLE:
            self.set_mode(SafetyStatus.MODE_IDLE, "demo: next episode")
        episode = self.status.episode
        reset = self.call(self.reset_client, self.msgs["ResetSim"].Request(task=task, seed=seed), 30.0)
        if not reset.success:
            raise RuntimeError(f"sim reset failed: {reset.message}")
        deadline = time.monotonic() + 30.0
        while self.status.episode == episode:  # the first status of the new episode
            if time.monotonic() > deadline:
                raise TimeoutError("no task status for the new episode within 30 s")
            time.sleep(0.01)
        subtask = Subtask(id=f"{task}-{seed}", index=0, skill=task, instruction=reset.instruction, status=Subtask.STATUS_ACTIVE)
        subtask.header.stamp = self.status.header.stamp
        with self.lock:
            self.chunks, self.events, self.frames, self.recording = [], [], [], True
        self.subtask_pub.publish(subtask)
        # AUTONOMY only once the model streams chunks for this episode's instruction.
        deadline = time.monotonic() + self.startup_timeout_s
        while not any(c.subtask_id == subtask.id for c in list(self.chunks)):
            if time.monotonic() > deadline or stopping.is_set():
                raise TimeoutError(f"no action chunk for {subtask.id!r} within {self.startup_timeout_s:.0f} s: is wam_inference running?")
            time.sleep(0.02)
        self.set_mode(SafetyStatus.MODE_AUTONOMY, f"demo: {reset.instruction}")
        start = self.sim_time_s()
        while not self.status.success and self.sim_time_s() - start < timeout_s and not stopping.is_set():
            if self.safety.mode in (SafetyStatus.MODE_HOLD, SafetyStatus.MODE_ESTOP):
                break  # a watchdog or limit stopped the arm
            time.sleep(0.02)
        stop_reason = self.safety.last_stop_reason if self.safety.mode != SafetyStatus.MODE_AUTONOMY else ""
        if self.safety.mode == SafetyStatus.MODE_AUTONOMY:
            self.set_mode(SafetyStatus.MODE_HOLD, "demo: episode over")
        time.sleep(0.5)  # let the video show the end
        with self.lock:
            self.recording = False
        report = EpisodeReport(
            seed=seed,
            instruction=reset.instruction,
            success=bool(self.status.success),
            sim_duration_s=self.sim_time_s() - start,
            chunks=len(self.chunks),
            latency_ms=[c.inference_latency_s * 1e3 for c in self.chunks],
            safety_events=list(dict.fromkeys(self.events)) + ([f"stop: {stop_reason}"] if stop_reason else []),
        )
        return report

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def write_video(path: Path, frames: list[np.ndarray], fps: float, scale: int = 4) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width * scale, height * scale))
    for frame in frames:
        big = cv2.resize(frame, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    writer.release()


def run(args: argparse.Namespace) -> int:
    from wam_ros.supervisor import Supervisor

    try:
        launch_args, overrides = parse_overrides(args.arguments)
        bringup = load_bringup(launch_args.get("robot", "panda_sim"), overrides)
    except (ConfigError, ValueError) as error:
        print(f"wam-ros demo: {error}", file=sys.stderr)
        return 2
    if not bringup.robot.simulated:
        print(f"wam-ros demo: robot {bringup.robot.name} is not simulated; the demo drives the sim only", file=sys.stderr)
        return 2
    camera = bringup.robot.camera(args.video_camera)
    supervisor = Supervisor(bringup)
    reports: list[EpisodeReport] = []
    done = threading.Event()
    stopping = threading.Event()
    failure: list[str] = []

    def drive() -> None:
        client = None
        try:
            client = DemoClient(camera.name, args.startup_timeout)
            print("[demo] waiting for the nodes ...", flush=True)
            client.wait_ready(args.startup_timeout)
            for seed in args.seeds:
                if stopping.is_set():
                    break
                report = client.run_episode(args.task, seed, args.episode_timeout, stopping)
                with client.lock:
                    frames = list(client.frames)
                if frames:
                    report.video = str(args.video_dir / f"{args.task}_seed{seed}.mp4")
                    write_video(Path(report.video), frames, camera.rate_hz)
                reports.append(report)
                latency = np.asarray(report.latency_ms) if report.latency_ms else np.asarray([np.nan])
                print(
                    f"[demo] seed {seed}: {'SUCCESS' if report.success else 'failure'} in {report.sim_duration_s:.1f} s sim, "
                    f"{report.chunks} chunks, latency p50 {np.median(latency):.0f} ms p99 {np.percentile(latency, 99):.0f} ms, "
                    f"safety events: {', '.join(report.safety_events) or 'none'}; video {report.video or '-'}",
                    flush=True,
                )
        except Exception as error:  # noqa: BLE001 - reported, then everything is stopped
            failure.append(f"{type(error).__name__}: {error}")
        finally:
            if client is not None:
                try:
                    from wam_ros.msg import SafetyStatus

                    if client.safety is not None and client.safety.mode == SafetyStatus.MODE_AUTONOMY:
                        client.set_mode(SafetyStatus.MODE_HOLD, "demo: shutting down")
                except Exception:  # noqa: BLE001 - best effort before the nodes stop
                    pass
                client.close()
            done.set()

    driver = threading.Thread(target=drive, daemon=True)
    def hold_then_stop() -> None:
        """Ctrl-C: the driver puts the arm in HOLD before any node is stopped."""
        stopping.set()
        done.wait(timeout=15.0)

    supervisor_code = supervisor.run(until=done.is_set, on_started=driver.start, before_stop=hold_then_stop)
    driver.join(timeout=5.0)
    if failure:
        print(f"[demo] failed: {failure[0]}", file=sys.stderr)
    successes = sum(r.success for r in reports)
    latencies = [v for r in reports for v in r.latency_ms] or [float("nan")]
    summary = {
        "episodes": len(reports),
        "successes": successes,
        "success_rate": successes / len(reports) if reports else 0.0,
        "chunk_latency_ms_p50": float(np.median(latencies)),
        "chunk_latency_ms_p99": float(np.percentile(latencies, 99)),
        "safety_events": sum(len(r.safety_events) for r in reports),
    }
    print(json.dumps(summary))
    return 1 if failure or supervisor_code or len(reports) != len(args.seeds) else 0
