"""WAM inference: the newest observation and the current subtask in, time-stamped action chunks out.

A lifecycle node. Chunks come from a policy backend (``policy_backend``): ``local`` loads the
checkpoint once in on_configure (cuda when available) into a child process
(wam_ros.inference.model_process: in this process the executor handles 1000+ sensor and clock
messages a second in Python, and a model call sharing its GIL took 5-15 times as long), freed in
on_cleanup; ``websocket`` asks an openpi-protocol policy server through a per-policy mapping
(config/policies/, wam_ros.policy), reconnecting with backoff after any fault. A worker thread
computes the next chunk while the bridge executes the current one; the frozen prefix (RTC) and
the join with the executing chunk keep the switch continuous (wam_ros.inference.chunking).
If the local model process dies the node goes to its lifecycle error state (unconfigured) and
says so on /diagnostics; a faulty server only stops the chunks until it answers again.

Latency, as published: ``ActionChunk.inference_latency_s`` is the compute time of the chunk
(wall clock from assembling the observation to handing the message to the middleware). The
observation's age at that point (sim or ROS time, stamp to publish) is larger by the frame's
age when the computation started; both, and the stages in between, are on /diagnostics
(docs/inference.md).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState

from wam_ros.inference.backends import LocalBackend, PolicyAnswer, PolicyFault, RemoteBackend
from wam_ros.inference.chunking import LatencyEstimator, TimedChunk
from wam_ros.inference.model_process import ModelProcess, ModelProcessError
from wam_ros.inference.observations import NotReady, ObservationAssembler
from wam_ros.inference.stream import ChunkStream, Request, StreamSettings
from wam_ros.inference.timing import StageTimes
from wam_ros_interfaces.msg import ActionChunk, SafetyStatus, Subtask
from wam_ros.parameters import param
from wam_ros.policy.client import API_KEY_ENV, PolicyClient
from wam_ros.policy.mapping import MappingError, RobotPolicyAdapter, load_policy_mapping
from wam_ros.robot import RobotConfig, load_robot_config, package_root
from wam_ros.ros import qos
from wam_ros.ros.conversions import image_to_numpy, numpy_to_image, seconds_to_time, time_to_seconds
from wam_ros.ros.node import ReleasingLifecycleNode, autostart, declare_parameters, destroy_entities, in_thread, run_node
from wam_ros_interfaces.srv import Imagine


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    policy_backend: str = param("local", "where chunks come from: local (the checkpoint in a child process) or websocket (a policy server)")
    checkpoint: str = param("", "local: checkpoint directory (safetensors + config); relative paths are taken from the package root")
    device: str = param("auto", "local: torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N")
    dtype: str = param("float32", "local: model dtype: float32, float16 or bfloat16 (half precision on cuda only)")
    cpu_threads: int = param(1, "local: torch intra-op threads on cpu (in the model process); one is fastest for cpu-small on 2 cores (bench/model.py)")
    policy: str = param("wam_ros", "websocket: the policy mapping, a name under config/policies/ or a YAML path (docs/remote_policy.md)")
    server_url: str = param("ws://127.0.0.1:8000", "websocket: the policy server")
    api_key: str = param("", f"websocket: sent as 'Authorization: Api-Key <key>'; empty: ${API_KEY_ENV}, else none")
    connect_timeout_s: float = param(5.0, "websocket: longest wait for the connection and the server's metadata [s]")
    request_timeout_s: float = param(0.0, "websocket: an answer later than this is dropped and the connection renewed [s]; 0 = the chunk's duration")
    reconnect_backoff_min_s: float = param(0.5, "websocket: wait after the first failure before connecting again; doubles per failure [s]")
    reconnect_backoff_max_s: float = param(10.0, "websocket: longest wait between connection attempts [s]")
    instruction: str = param("", "subtask instruction used until a Subtask message arrives")
    sampling_steps: int = param(0, "local: denoising steps for policy mode; 0 = the checkpoint's default")
    execute_actions: int = param(0, "actions of a chunk executed before the next one takes over; 0 = the policy's (checkpoint execute_steps, mapping or server)")
    rtc_enabled: bool = param(True, "freeze the actions that execute before a chunk arrives (real-time chunking; policies that accept a prefix)")
    rtc_observation_age: bool = param(True, "size the frozen prefix from the observation's age at the request plus the expected latency "
                                            "(false: the latency alone, as before 2026-12; bench/remote.py's 'before')")
    rtc_tracking_tolerance_rad: float = param(0.3, "without a safety bridge status: keep (freeze, blend) the last chunk only while the arm is within "
                                                   "this of its command at the observation [rad]")
    fresh_frame_trigger: bool = param(True, "start the next chunk on the first camera frame that arrives in the last camera period before it is due "
                                            "(false: at the deadline from the newest frame, up to a period plus render time old, as before 2026-12)")
    chunk_blend_s: float = param(0.3, "after a switch, blend from the executing chunk into the new one over this long [s]; 0 = publish the policy's chunk unchanged")
    chunk_delivery_margin_s: float = param(0.1, "the join keeps the executing chunk's actions this long past the publish time, so a chunk that "
                                                "reaches the bridge late (a busy machine) still meets no step [s]")
    initial_latency_s: float = param(0.1, "latency assumed before the first measurement [s]")
    sync_tolerance_s: float = param(0.02, "largest stamp difference between paired camera frames [s]")
    max_input_age_s: float = param(0.3, "an input older than this is stale: no chunk is computed [s]")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics messages [s]")
    publish_predictions: bool = param(False, "publish the frames ~/imagine predicts on /wam/inference/prediction")
    autostart: bool = param(True, "configure and activate at start-up")


BACKENDS = ("local", "websocket")


class WamInference(ReleasingLifecycleNode):
    """Serves a policy to the ROS graph: chunks, imagination (local backend) and diagnostics."""

    def __init__(self) -> None:
        super().__init__("wam_inference")
        self.params = declare_parameters(self, Parameters)
        if self.params.policy_backend not in BACKENDS:
            raise ValueError(f"policy_backend must be one of {', '.join(BACKENDS)}, got {self.params.policy_backend!r}")
        p = self.params
        if p.chunk_blend_s < 0 or p.chunk_delivery_margin_s < 0 or p.rtc_tracking_tolerance_rad <= 0:
            raise ValueError("chunk_blend_s and chunk_delivery_margin_s must be >= 0 and rtc_tracking_tolerance_rad > 0")
        if p.connect_timeout_s <= 0 or p.request_timeout_s < 0 or not 0 < p.reconnect_backoff_min_s <= p.reconnect_backoff_max_s:
            raise ValueError("connect_timeout_s > 0, request_timeout_s >= 0 and 0 < reconnect_backoff_min_s <= reconnect_backoff_max_s are required")
        self.backend: LocalBackend | RemoteBackend | None = None
        self.robot: RobotConfig | None = None
        self.assembler: ObservationAssembler | None = None
        self.stop_worker = threading.Event()
        self.new_frame = threading.Event()  # wakes the worker when a camera frame arrives
        self.worker: threading.Thread | None = None
        self.entities: list[Any] = []
        self.latency = LatencyEstimator(self.params.initial_latency_s)  # node clock: request start -> published
        self.stream: ChunkStream | None = None  # made on configure (it needs the robot and the cameras)
        self.subtask = Subtask(instruction=self.params.instruction)
        self.chunk_id = 0
        self.chunk_times: deque[float] = deque()
        self.stages = StageTimes()  # where each chunk's time went (diagnostics)
        self.not_ready: str = "not configured"
        self.fault = ""  # why the node left the active state for good (the model process died)
        self.lifecycle = "unconfigured"
        self._joint_index: dict[str, int] | None = None
        self.device = ""
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.diag_timer = self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics)
        self.fault_signal = self.create_guard_condition(self._on_fault)
        if self.params.autostart:
            autostart(self)

    # -- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self.fault = ""
        try:
            self._load()
        except Exception as error:  # noqa: BLE001 - any load failure must fail configure with its reason
            self.get_logger().error(f"configure failed: {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.lifecycle = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _make_backend(self) -> LocalBackend | RemoteBackend:
        p, robot = self.params, self.robot
        if p.policy_backend == "local":
            if not p.checkpoint:
                raise ValueError("parameter 'checkpoint' is empty (policy_backend local)")
            checkpoint = Path(p.checkpoint) if Path(p.checkpoint).is_absolute() else package_root() / p.checkpoint
            started = time.perf_counter()
            process = ModelProcess(checkpoint, device=p.device, dtype=p.dtype, cpu_threads=p.cpu_threads)  # loads and warms up
            backend = LocalBackend(process, p.sampling_steps or None)
            config = process.config
            state_dim = robot.arm.dof + (1 if robot.gripper.joint_names else 0)
            try:
                missing = [c for c in config.cameras if c not in {cam.name for cam in robot.cameras}]
                if missing:
                    raise ValueError(f"the model uses cameras {missing} that robot {robot.name} does not have")
                if len(config.state_names) != state_dim:
                    raise ValueError(f"the model's state has {len(config.state_names)} values, robot {robot.name} gives {state_dim}")
            except ValueError:
                backend.close()
                raise
            self.get_logger().info(
                f"loaded {backend.description} ({p.dtype}) in {time.perf_counter() - started:.1f} s; "
                f"horizon {config.horizon} x {config.control_period_s:g} s, cameras {list(config.cameras)}")
            return backend
        mapping = load_policy_mapping(p.policy)
        adapter = RobotPolicyAdapter(mapping, robot)
        client = PolicyClient(p.server_url, p.api_key or os.environ.get(API_KEY_ENV, ""), mapping.protocol, p.connect_timeout_s)
        logger = self.get_logger()
        backend = RemoteBackend(adapter, client, p.request_timeout_s, p.reconnect_backoff_min_s, p.reconnect_backoff_max_s,
                                warn=logger.warning, info=logger.info)
        self.get_logger().info(f"remote {backend.description}: cameras {mapping.cameras}; connects when active")
        return backend

    def _load(self) -> None:
        p = self.params
        self.robot = load_robot_config(p.robot_config) if p.robot_config else load_robot_config("panda_sim")
        self.backend = backend = self._make_backend()
        self.device = backend.device
        self.assembler = ObservationAssembler(list(backend.cameras), backend.n_obs_frames, backend.frame_spacing_s,
                                              p.sync_tolerance_s, p.max_input_age_s)
        self.stream = ChunkStream(StreamSettings(
            dof=self.robot.arm.dof, frame_period_s=1.0 / min(self.robot.camera(c).rate_hz for c in backend.cameras),
            rtc_enabled=p.rtc_enabled, rtc_observation_age=p.rtc_observation_age, blend_s=p.chunk_blend_s, delivery_margin_s=p.chunk_delivery_margin_s,
            tracking_tolerance_rad=p.rtc_tracking_tolerance_rad, execute_actions=p.execute_actions, fresh_frame_trigger=p.fresh_frame_trigger),
            self.latency, self.subtask.instruction)
        for camera in backend.cameras:
            topic = self.robot.camera(camera).image_topic
            self.entities.append(
                self.create_subscription(Image, topic, lambda msg, c=camera: self._on_image(c, msg), qos.SENSORS)
            )
        self.entities.append(self.create_subscription(JointState, "joint_states", self._on_joint_state, qos.JOINT_STATES_IN))
        self.entities.append(self.create_subscription(Subtask, "wam/task/subtask", self._on_subtask, qos.LATCHED))
        self.entities.append(self.create_subscription(SafetyStatus, "wam/safety/status", self._on_safety, qos.LATCHED))
        self.chunk_pub = self.create_publisher(ActionChunk, "wam/action_chunk", qos.COMMANDS)
        self.report_pub = self.create_publisher(DiagnosticArray, "~/chunk_report", 10)
        self.prediction_pub = self.create_publisher(Image, "wam/inference/prediction", qos.SENSORS)
        self.entities += [self.chunk_pub, self.report_pub, self.prediction_pub]
        # Reentrant: the executor runs every other callback while an imagination is computed.
        self.entities.append(self.create_service(Imagine, "~/imagine", self._on_imagine, callback_group=ReentrantCallbackGroup()))
        self.not_ready = "inactive"

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.stop_worker.clear()
        self.worker = threading.Thread(target=self._work, name="wam_inference_worker", daemon=True)
        self.worker.start()
        self.lifecycle = "active"
        self.get_logger().info(f"active: publishing action chunks from {self.backend.description} on /wam/action_chunk")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        if self.fault:
            return TransitionCallbackReturn.ERROR  # -> on_error: release, unconfigured
        self.lifecycle = "inactive"
        self.not_ready = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle = "unconfigured (error)"
        self.not_ready = f"error: {self.fault or 'a transition failed'}; no chunks until configured again"
        self.get_logger().error(self.not_ready)
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self.lifecycle = "unconfigured"
        self.not_ready = "not configured"
        return result

    def destroy_node(self) -> None:
        self._stop()  # the worker must not publish through a node being destroyed
        super().destroy_node()

    def _stop(self) -> None:
        self.stop_worker.set()
        if self.worker is not None and self.worker is not threading.current_thread():
            self.worker.join(timeout=5.0)
            self.worker = None

    def _release(self) -> None:
        """Stop the worker, destroy what configure made and close the backend (idempotent)."""
        self._stop()
        destroy_entities(self, self.entities)
        self.entities = []
        if self.backend is not None:
            self.backend.close()  # the model process ends and frees its memory (GPU included); a connection closes
            self.backend = None

    def _fail(self, reason: str) -> None:
        """Worker: the backend can never answer again. The executor takes the node to its error state."""
        self.fault = reason
        self.not_ready = f"error: {reason}"
        self.get_logger().error(f"{reason}: no more chunks; going to the error state (configure again to restart)")
        self.fault_signal.trigger()

    def _on_fault(self) -> None:
        if self.fault and self.lifecycle == "active":
            self.trigger_deactivate()

    # -- inputs ----------------------------------------------------------------------------
    def _on_image(self, camera: str, msg: Image) -> None:
        started = time.perf_counter()
        try:
            frame = image_to_numpy(msg)
        except ValueError as error:
            self.not_ready = f"{camera}: {error}"
            return
        if frame.ndim != 3 or frame.shape[2] != 3 or msg.encoding not in ("rgb8", "bgr8"):
            self.not_ready = f"{camera}: expected an rgb8 image, got {msg.encoding} {frame.shape}"
            return
        if msg.encoding == "bgr8":
            frame = frame[:, :, ::-1]
        self.assembler.add_image(camera, time_to_seconds(msg.header.stamp), frame)
        self.new_frame.set()
        self.stages.add(image_conversion=time.perf_counter() - started)

    def _on_joint_state(self, msg: JointState) -> None:
        robot = self.robot
        if self._joint_index is None or len(self._joint_index) != len(msg.name):
            self._joint_index = {name: i for i, name in enumerate(msg.name)}
        try:
            arm = [msg.position[self._joint_index[name]] for name in robot.arm.joint_names]
            fingers = [msg.position[self._joint_index[name]] for name in robot.gripper.joint_names]
        except (KeyError, IndexError):
            self._joint_index = None
            return  # another publisher's joint set (e.g. a leader arm): not ours
        state = np.asarray(arm + ([robot.gripper.width_from_joint_positions(fingers)] if fingers else []), dtype=np.float32)
        self.assembler.add_state(time_to_seconds(msg.header.stamp), state)

    def _on_safety(self, msg: SafetyStatus) -> None:
        self.stream.on_bridge_mode(msg.mode == SafetyStatus.MODE_AUTONOMY)

    def _on_subtask(self, msg: Subtask) -> None:
        self.subtask = msg
        if self.stream.on_subtask(msg.id, msg.index, msg.instruction):
            self.get_logger().info(f"subtask {msg.id or msg.index}: {msg.instruction!r}")

    # -- chunks ----------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _work(self) -> None:
        while not self.stop_worker.is_set() and self.context.ok():
            try:
                fatal = self.backend.fatal()
                if fatal:
                    self._fail(fatal)
                    return
                now = self._now_s()
                if not self.stream.instruction:
                    self.not_ready = "no subtask: set the 'instruction' parameter or publish /wam/task/subtask"
                elif self.stream.start_now(now, self.assembler.newest_frame_s()) and self._compute_chunk(now):
                    continue
            except PolicyFault as error:
                self.not_ready = str(error)  # the backend logged it; it reconnects after its backoff
                self.stop_worker.wait(0.05)
            except ModelProcessError as error:
                fatal = self.backend.fatal()
                if fatal:
                    self._fail(f"{fatal} ({error})")
                    return
                self.not_ready = f"inference failed: {error}"
                self.get_logger().error(self.not_ready, throttle_duration_sec=5.0)
                self.stop_worker.wait(0.5)
            except Exception as error:  # noqa: BLE001 - reported; at shutdown the context goes first
                if not self.context.ok():
                    return
                self.not_ready = f"inference failed: {type(error).__name__}: {error}"
                self.get_logger().error(self.not_ready, throttle_duration_sec=5.0)
                self.stop_worker.wait(0.5)
            self.new_frame.wait(0.005)
            self.new_frame.clear()

    def _compute_chunk(self, now_s: float) -> bool:
        started = time.perf_counter()
        observation = self.assembler.assemble(now_s)
        if isinstance(observation, NotReady):
            self.not_ready = str(observation)
            return False
        backend = self.backend
        request = self.stream.request(observation.stamp_s, observation.state[-1], now_s, backend.accepts_prefix, backend.horizon)
        if request is None:
            return False  # no newer observation than the last chunk's
        if request.new_episode:
            backend.new_episode()
        assembled = time.perf_counter()
        answer = backend.infer(observation.images, observation.state, request.instruction, request.prefix)
        answered = time.perf_counter()
        sent: list[ActionChunk] = []

        def send(chunk: TimedChunk) -> None:
            msg = self._chunk_message(chunk, request.subtask_id)
            msg.inference_latency_s = time.perf_counter() - started  # compute time: observation assembled -> message handed over
            self.chunk_pub.publish(msg)
            sent.append(msg)

        published_s = self._now_s()
        published = self.stream.publish(request, TimedChunk(observation.stamp_s, answer.period_s, answer.actions),
                                        answer.execute_actions, published_s, send)
        if published is None:
            return True  # the stream restarted meanwhile (a new subtask): this chunk belonged to the old one
        done = time.perf_counter()
        compute_s = answer.server_compute_s if np.isfinite(answer.server_compute_s) else 0.0
        self.stages.add(
            input_age_at_start=request.observation_age_s,  # node clock (sim time in simulation)
            assemble=assembled - started,
            model_lock_wait=answer.lock_wait_s,
            policy_round_trip=answer.round_trip_s,
            policy_transfer=max(0.0, answer.round_trip_s - answer.lock_wait_s - compute_s),
            publish=done - answered,
            observation_to_publish=published_s - observation.stamp_s,  # node clock
        )
        if np.isfinite(answer.server_compute_s):
            self.stages.add(policy_compute=answer.server_compute_s)
        self.chunk_times.append(time.monotonic())
        self._report(sent[0], answer, request, published_s, published.jump, published.joined)
        self.not_ready = ""
        return True

    def _report(self, msg: ActionChunk, answer: PolicyAnswer, request: Request, published_s: float, jump: float, joined: bool) -> None:
        """One DiagnosticStatus per chunk on ~/chunk_report: where its time went and how it joined."""
        values = {
            "chunk_id": str(msg.chunk_id),
            "subtask_id": msg.subtask_id,
            "round_trip_ms": f"{answer.round_trip_s * 1e3:.2f}",
            "server_compute_ms": f"{answer.server_compute_s * 1e3:.2f}",
            "observation_age_ms": f"{request.observation_age_s * 1e3:.1f}",
            "start_delay_estimate_ms": f"{request.start_delay_s * 1e3:.1f}",
            "frozen_actions": str(0 if request.prefix is None else len(request.prefix)),
            "joined": str(joined).lower(),
            "boundary_jump_rad": f"{jump:.5f}",
            "published_s": f"{published_s:.4f}",  # node clock (sim time in simulation)
        }
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: chunk {msg.chunk_id}", message="chunk published",
                                  hardware_id=self.device, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        report = DiagnosticArray(status=[status])
        report.header.stamp = msg.header.stamp
        self.report_pub.publish(report)

    def _chunk_message(self, chunk: TimedChunk, subtask_id: str) -> ActionChunk:
        robot = self.robot
        dof = robot.arm.dof
        msg = ActionChunk()
        msg.header.stamp = seconds_to_time(chunk.stamp_s)
        msg.header.frame_id = robot.base_frame
        msg.joint_names = list(robot.arm.joint_names)
        msg.control_period_s = chunk.period_s
        msg.horizon = len(chunk.actions)
        msg.joint_positions = chunk.actions[:, :dof].ravel().tolist()
        if robot.gripper.joint_names:
            msg.gripper_widths = chunk.actions[:, dof].tolist()
        msg.chunk_id = self.chunk_id
        self.chunk_id += 1
        msg.model_id = self.backend.model_id
        msg.subtask_id = subtask_id
        return msg

    # -- imagination -----------------------------------------------------------------------
    async def _on_imagine(self, request: Imagine.Request, response: Imagine.Response) -> Imagine.Response:
        backend = self.backend
        if not isinstance(backend, LocalBackend) or self.assembler is None:
            response.success = False
            response.message = ("~/imagine needs policy_backend local: a websocket policy server serves actions only"
                                if backend is not None else f"model not loaded ({self.not_ready})")
            return response
        observation = self.assembler.assemble(self._now_s())
        if isinstance(observation, NotReady):
            response.success, response.message = False, f"no observation: {observation}"
            return response
        runtime = backend.process
        config = runtime.config
        actions = None
        if request.joint_positions:
            dof = self.robot.arm.dof
            joints = np.asarray(request.joint_positions, dtype=np.float64)
            if joints.size != config.horizon * dof or not np.all(np.isfinite(joints)):
                response.success = False
                response.message = f"joint_positions must hold {config.horizon} x {dof} finite values, got {joints.size}"
                return response
            grippers = np.asarray(request.gripper_widths, dtype=np.float64)
            if grippers.size not in (0, config.horizon):
                response.success, response.message = False, f"gripper_widths must hold 0 or {config.horizon} values"
                return response
            if grippers.size == 0:
                grippers = np.full(config.horizon, observation.state[-1, dof])
            actions = np.concatenate([joints.reshape(config.horizon, dof), grippers[:, None]], axis=1)
        started = time.perf_counter()
        instruction = request.instruction or self.subtask.instruction
        try:
            (frames, progress), _ = await in_thread(
                self, lambda: runtime.imagine(observation.images, observation.state, instruction, actions), "wam_inference_imagine")
        except ModelProcessError as error:
            response.success, response.message = False, f"imagine failed: {error}"
            self.get_logger().error(response.message, throttle_duration_sec=5.0)
            return response
        response.latency_s = time.perf_counter() - started
        response.success = True
        response.progress = float(progress)
        response.mode = "forward_dynamics" if actions is not None else "video_prediction"
        stamp = seconds_to_time(observation.stamp_s)
        images = [numpy_to_image(frame, "rgb8", stamp, self.robot.camera(name).frame_id) for name, frame in frames.items()]
        if request.return_frames:
            response.frames = images
        if self.params.publish_predictions:
            for image in images:
                self.prediction_pub.publish(image)
        return response

    # -- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now_wall = time.monotonic()
        while self.chunk_times and self.chunk_times[0] <= now_wall - 10.0:
            self.chunk_times.popleft()
        backend, stream = self.backend, self.stream
        values = {
            "lifecycle": self.lifecycle,
            "policy_backend": self.params.policy_backend,
            "policy": backend.description if backend is not None else "",
            "device": self.device,
            "model_id": backend.model_id if backend is not None else "",
            "chunks_published": str(self.chunk_id),
            "chunk_rate_hz": f"{len(self.chunk_times) / 10.0:.2f}",
            "latency_ms_p50": f"{self.latency.percentile_ms(50):.1f}",
            "latency_ms_p99": f"{self.latency.percentile_ms(99):.1f}",
            **{f"stage.{k}": f"{v:.1f}" for k, v in self.stages.summary_ms().items()},
            "boundary_jump_last": f"{stream.jumps[-1]:.4f}" if stream and stream.jumps else "nan",
            "boundary_jump_max": f"{stream.jump_max:.4f}" if stream and stream.jumps else "nan",
            "subtask": self.subtask.instruction,
            "not_ready": self.not_ready,
            "fault": self.fault,
        }
        if isinstance(backend, RemoteBackend):
            values.update(policy_failures=str(backend.failures), last_policy_error=backend.last_error)
        if self.assembler is not None:
            for name, age in self.assembler.input_ages_s(self._now_s()).items():
                values[f"input_age_s.{name}"] = f"{age:.3f}"
        level = DiagnosticStatus.ERROR if self.fault else DiagnosticStatus.WARN if self.not_ready else DiagnosticStatus.OK
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: policy",
            message=self.not_ready or "publishing chunks",
            hardware_id=self.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diagnostics)


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would fail configure (for ``wam-ros bringup --check``): the backend, the
    checkpoint's files (local) or the policy mapping and server URL (websocket), without loading or connecting."""
    if parameters.policy_backend not in BACKENDS:
        return [f"policy_backend must be one of {', '.join(BACKENDS)}, got {parameters.policy_backend!r}"]
    if parameters.policy_backend == "websocket":
        problems = [] if parameters.server_url.startswith(("ws://", "wss://")) else [f"server_url {parameters.server_url!r} is not a ws:// or wss:// URL"]
        try:
            load_policy_mapping(parameters.policy).check_robot(robot)
        except (MappingError, OSError) as error:
            problems.append(f"policy {parameters.policy!r}: {error}")
        return problems
    if not parameters.checkpoint:
        return ["checkpoint is empty: give the checkpoint directory (wam_inference.checkpoint:=<dir>)"]
    path = Path(parameters.checkpoint) if Path(parameters.checkpoint).is_absolute() else package_root() / parameters.checkpoint
    if not path.is_dir():
        return [f"checkpoint {path}: no such directory"]
    missing = [name for name in ("config.json", "model.safetensors") if not (path / name).is_file()]
    return [f"checkpoint {path}: no {' or '.join(missing)} (not a wam_ros checkpoint)"] if missing else []


def main(args: list[str] | None = None) -> int:
    return run_node(WamInference, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
