"""Closed-loop episodes through a running graph: the sim, the safety bridge and the WAM inference node.

``run_closed_loop`` brings up a simulated robot's node set with the bringup supervisor and
drives episodes through the graph's real interfaces (ResetSim, Subtask, SetMode), measuring
what the robot sees: success, chunk latency, stamp-to-receive delay, chunk-boundary jumps and
safety events. ``wam-ros demo`` and ``bench/inference.py`` use it.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import numpy as np

from wam_ros.bringup import Bringup
from wam_ros.inference.chunking import TimedChunk, boundary_jump


@dataclass
class EpisodeReport:
    """One closed-loop episode as the graph saw it."""

    seed: int
    instruction: str
    success: bool
    sim_duration_s: float
    chunks: int
    latency_ms: list[float] = field(default_factory=list)  # inference_latency_s of every chunk
    stamp_to_receive_ms: list[float] = field(default_factory=list)  # chunk stamp (camera time) to its arrival here
    boundary_jumps: list[float] = field(default_factory=list)  # step at each chunk switch in AUTONOMY [rad or m]
    delivery_ms: list[float] = field(default_factory=list)  # wam_inference's publish -> its chunk report here (sim time)
    safety_events: list[str] = field(default_factory=list)
    video: str = ""
    inference_stages_ms: dict[str, float] = field(default_factory=dict)  # wam_inference's stage.* diagnostics at the episode's end


@dataclass
class ClosedLoopResult:
    reports: list[EpisodeReport]
    failure: str  # why the run stopped early; empty when every episode ran
    supervisor_code: int


class DemoClient:
    """A small facade over the running graph: reset, instruct, switch modes, watch."""

    def __init__(self, camera: str | None, startup_timeout_s: float, namespace: str = "") -> None:
        """``namespace``: the stack's (``/left``); its sim's clock is the stack's own ``clock``."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, Subtask, TaskStatus
        from wam_ros.ros import qos
        from wam_ros_interfaces.srv import ResetSim, SetMode

        self.startup_timeout_s = startup_timeout_s
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(
            "wam_demo", context=self.context, namespace=namespace or None,
            cli_args=["--ros-args", "-r", "/clock:=clock"] if namespace else None,
            parameter_overrides=[rclpy.parameter.Parameter("use_sim_time", value=True)],
        )
        self.lock = threading.Lock()
        self.status: TaskStatus | None = None
        self.safety: SafetyStatus | None = None
        self.chunks: list[ActionChunk] = []
        self.arrivals_ms: list[float] = []
        self.jumps: list[float] = []
        self.delivery_ms: list[float] = []
        self.last_chunk: TimedChunk | None = None
        self.subtask_id = ""  # the current episode's subtask: chunks for others are not measured
        self.events: list[str] = []
        self.inference_stages_ms: dict[str, float] = {}
        self.frames: list[np.ndarray] = []
        self.recording = False
        self.reset_client = self.node.create_client(ResetSim, "wam/sim/reset")
        self.mode_client = self.node.create_client(SetMode, "wam/set_mode")
        self.subtask_pub = self.node.create_publisher(Subtask, "wam/task/subtask", qos.LATCHED)
        self.node.create_subscription(TaskStatus, "wam/sim/task_status", self._on_status, qos.LATCHED)
        self.node.create_subscription(SafetyStatus, "wam/safety/status", self._on_safety, qos.LATCHED)
        self.node.create_subscription(ActionChunk, "wam/action_chunk", self._on_chunk, qos.COMMANDS)
        self.node.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(DiagnosticArray, "wam_inference/chunk_report", self._on_chunk_report, 10)
        if camera:
            self.node.create_subscription(Image, f"wam/cameras/{camera}/image", self._on_image, qos.SENSORS)
        # Single-threaded: every call here is made from the caller's thread; rclpy's
        # MultiThreadedExecutor would busy-wait a core away on this sim-time node (bench/executors.py).
        self.executor = SingleThreadedExecutor(context=self.context)
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

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("wam_inference"):
                stages = {kv.key[len("stage."):]: float(kv.value) for kv in status.values if kv.key.startswith("stage.")}
                with self.lock:
                    self.inference_stages_ms = stages

    def _on_chunk_report(self, msg) -> None:
        now_s = self.node.get_clock().now().nanoseconds * 1e-9
        values = {kv.key: kv.value for status in msg.status for kv in status.values}
        with self.lock:
            if self.recording and values.get("subtask_id") == self.subtask_id and "published_s" in values:
                self.delivery_ms.append((now_s - float(values["published_s"])) * 1e3)

    def _on_chunk(self, msg) -> None:
        now_s = self.node.get_clock().now().nanoseconds * 1e-9
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        dof = len(msg.joint_names)
        actions = np.asarray(msg.joint_positions).reshape(msg.horizon, dof)
        if msg.gripper_widths:
            actions = np.concatenate([actions, np.asarray(msg.gripper_widths)[:, None]], axis=1)
        chunk = TimedChunk(stamp_s, msg.control_period_s, actions)
        with self.lock:
            # A chunk computed for the previous episode can still arrive after the reset: it
            # says nothing about this episode's latency or continuity.
            if not self.recording or msg.subtask_id != self.subtask_id:
                return
            self.chunks.append(msg)
            self.arrivals_ms.append((now_s - stamp_s) * 1e3)
            # A switch the robot executes: in IDLE or HOLD the chunks plan motion that does not
            # happen, and the next one starts from where the arm really is.
            executing = self.safety is not None and self.safety.mode == self.msgs["SafetyStatus"].MODE_AUTONOMY
            if self.last_chunk is not None and executing:
                self.jumps.append(boundary_jump(self.last_chunk, chunk, now_s))
            self.last_chunk = chunk

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

    def set_mode(self, mode: int, reason: str, stale_retry_s: float = 2.0) -> None:
        """Ask the bridge for ``mode``; a refusal because its joint states are momentarily stale
        (a busy machine delays them) is asked again for up to ``stale_retry_s``."""
        deadline = time.monotonic() + stale_retry_s
        while True:
            response = self.call(self.mode_client, self.msgs["SetMode"].Request(mode=mode, reason=reason, requester=self.node.get_name()), 10.0)
            if response.accepted:
                return
            if "no fresh joint states" not in response.message or time.monotonic() > deadline:
                raise RuntimeError(f"safety bridge refused mode {mode}: {response.message}")
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for client in (self.reset_client, self.mode_client):
            if not client.wait_for_service(timeout_sec=max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"{client.srv_name} did not come up within {timeout_s:.0f} s")
        while self.status is None or self.safety is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no task status or safety status within the start-up timeout")
            time.sleep(0.05)

    def wait_for_outcome(self, start_s: float, timeout_s: float, stopping: threading.Event) -> None:
        """Until the task succeeds, ``timeout_s`` of sim time pass since ``start_s``, the bridge
        stops the arm (HOLD or ESTOP: a watchdog or limit), or ``stopping`` is set."""
        SafetyStatus = self.msgs["SafetyStatus"]
        while not self.status.success and self.sim_time_s() - start_s < timeout_s and not stopping.is_set():
            if self.safety.mode in (SafetyStatus.MODE_HOLD, SafetyStatus.MODE_ESTOP):
                return
            time.sleep(0.02)

    def reset_sim(self, task: str, seed: int):
        """Reset the sim to ``task`` with ``seed`` and wait for the new episode's first status; returns the reset's response."""
        episode = self.status.episode
        reset = self.call(self.reset_client, self.msgs["ResetSim"].Request(task=task, seed=seed), 30.0)
        if not reset.success:
            raise RuntimeError(f"sim reset failed: {reset.message}")
        deadline = time.monotonic() + 30.0
        while self.status.episode == episode:  # the first status of the new episode
            if time.monotonic() > deadline:
                raise TimeoutError("no task status for the new episode within 30 s")
            time.sleep(0.01)
        return reset

    def instruct(self, task: str, seed: int, instruction: str, stopping: threading.Event, hint: str = "") -> None:
        """Start measuring a new episode, publish its subtask and wait for its first action chunk
        (AUTONOMY only once the model streams chunks for this instruction); ``hint`` ends the timeout's message."""
        Subtask = self.msgs["Subtask"]
        subtask = Subtask(id=f"{task}-{seed}", index=0, skill=task, instruction=instruction, status=Subtask.STATUS_ACTIVE)
        subtask.header.stamp = self.status.header.stamp
        with self.lock:
            self.chunks, self.events, self.frames, self.arrivals_ms, self.jumps, self.delivery_ms = [], [], [], [], [], []
            self.last_chunk, self.recording, self.subtask_id = None, True, subtask.id
        self.subtask_pub.publish(subtask)
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.chunks:
            if time.monotonic() > deadline or stopping.is_set():
                raise TimeoutError(f"no action chunk for {subtask.id!r} within {self.startup_timeout_s:.0f} s{hint}")
            time.sleep(0.02)

    def run_episode(self, task: str, seed: int, timeout_s: float, stopping: threading.Event) -> EpisodeReport:
        SafetyStatus = self.msgs["SafetyStatus"]
        if self.safety.mode != SafetyStatus.MODE_IDLE:
            self.set_mode(SafetyStatus.MODE_IDLE, "demo: next episode")
        reset = self.reset_sim(task, seed)
        self.instruct(task, seed, reset.instruction, stopping, ": is wam_inference running?")
        self.set_mode(SafetyStatus.MODE_AUTONOMY, f"demo: {reset.instruction}")
        start = self.sim_time_s()
        self.wait_for_outcome(start, timeout_s, stopping)
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
            stamp_to_receive_ms=list(self.arrivals_ms),
            boundary_jumps=list(self.jumps),
            delivery_ms=list(self.delivery_ms),
            safety_events=list(dict.fromkeys(self.events)) + ([f"stop: {stop_reason}"] if stop_reason else []),
            inference_stages_ms=dict(self.inference_stages_ms),
        )
        return report

    def hold_if_moving(self, reason: str) -> None:
        """Best effort: HOLD when the arm is in AUTONOMY (used before the nodes stop)."""
        SafetyStatus = self.msgs["SafetyStatus"]
        try:
            if self.safety is not None and self.safety.mode == SafetyStatus.MODE_AUTONOMY:
                self.set_mode(SafetyStatus.MODE_HOLD, f"demo: {reason}")
        except (RuntimeError, TimeoutError):
            pass

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




def run_closed_loop(
    bringup: Bringup,
    task: str,
    seeds: list[int],
    episode_timeout_s: float,
    startup_timeout_s: float,
    video_dir: Path | None = None,
    video_camera: str = "front",
    on_report: Callable[[EpisodeReport], None] | None = None,
) -> ClosedLoopResult:
    """Bring the node set up, run one episode per seed, stop everything (HOLD first on Ctrl-C)."""
    camera = bringup.robot.camera(video_camera) if video_dir is not None else None
    reports: list[EpisodeReport] = []

    def run_seed(client: DemoClient, seed: int, stopping: threading.Event) -> None:
        report = client.run_episode(task, seed, episode_timeout_s, stopping)
        with client.lock:
            frames = list(client.frames)
        if frames and video_dir is not None:
            report.video = str(video_dir / f"{task}_seed{seed}.mp4")
            write_video(Path(report.video), frames, camera.rate_hz)
        reports.append(report)
        if on_report is not None:
            on_report(report)

    drive = drive_graph(bringup, lambda: DemoClient(camera.name if camera else None, startup_timeout_s, bringup.namespace),
                        seeds, run_seed, startup_timeout_s, hold_wait_s=15.0)
    failure = drive.failure or ("interrupted" if len(reports) != len(seeds) else "")
    return ClosedLoopResult(reports, failure, drive.supervisor_code)


@dataclass
class DriveResult:
    supervisor_code: int
    failure: str  # the driver's error; empty when it raised none
    interrupted: bool  # Ctrl-C stopped the driver


def drive_graph(bringup: Bringup, open_client: Callable[[], DemoClient], seeds: list[int],
                run_seed: Callable[[DemoClient, int, threading.Event], None], startup_timeout_s: float,
                hold_wait_s: float, output: IO[str] | None = None) -> DriveResult:
    """Bring the node set up (its output into ``output``), call ``run_seed`` per seed from a driver
    thread with the client ``open_client`` makes, then stop the nodes. On Ctrl-C the driver stops
    after the current seed and puts the arm in HOLD (up to ``hold_wait_s``) before any node stops."""
    from wam_ros.bringup.supervisor import Supervisor

    for name, value in bringup.environment.items():  # this process talks to the nodes: same DDS settings
        os.environ.setdefault(name, value)
    done, stopping = threading.Event(), threading.Event()
    failure: list[str] = []

    def drive() -> None:
        client = None
        try:
            client = open_client()
            client.wait_ready(startup_timeout_s)
            for seed in seeds:
                if stopping.is_set():
                    break
                run_seed(client, seed, stopping)
        except Exception as error:  # noqa: BLE001 - reported, then the nodes are stopped
            failure.append(f"{type(error).__name__}: {error}")
        finally:
            if client is not None:
                client.hold_if_moving("shutting down")
                client.close()
            done.set()

    def hold_then_stop() -> None:
        stopping.set()
        done.wait(timeout=hold_wait_s)

    driver = threading.Thread(target=drive, daemon=True)
    code = Supervisor(bringup, output=output).run(until=done.is_set, on_started=driver.start, before_stop=hold_then_stop)
    driver.join(timeout=5.0)
    return DriveResult(code, failure[0] if failure else "", stopping.is_set())
