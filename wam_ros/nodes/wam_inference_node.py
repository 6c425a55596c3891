"""WAM inference: the newest observation and the current subtask in, time-stamped action chunks out.

A lifecycle node: the checkpoint is loaded once in on_configure (cuda when available), warmed
up, kept resident, and freed in on_cleanup. The model lives in a child process
(wam_ros.inference.model_process): in this process the executor handles 1000+ sensor and clock
messages a second in Python, and a model call sharing its GIL took 5-15 times as long.
A worker thread computes the next chunk while the bridge executes the current one (real-time
chunking, see wam_ros.inference.chunking).

Latency, as published: ``ActionChunk.inference_latency_s`` is the compute time of the chunk
(wall clock from assembling the observation to handing the message to the middleware). The
observation's age at that point (sim or ROS time, stamp to publish) is larger by the frame's
age when the computation started; both, and the stages in between, are on /diagnostics
(docs/inference.md).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image, JointState

from wam_ros.inference.chunking import LatencyEstimator, TimedChunk, boundary_jump, frozen_prefix
from wam_ros.inference.model_process import ModelProcess, ModelProcessError
from wam_ros.inference.observations import NotReady, ObservationAssembler
from wam_ros.inference.timing import StageTimes
from wam_ros_interfaces.msg import ActionChunk, Subtask
from wam_ros.parameters import param
from wam_ros.robot import RobotConfig, load_robot_config, package_root
from wam_ros.ros import qos
from wam_ros.ros.conversions import image_to_numpy, numpy_to_image, seconds_to_time, time_to_seconds
from wam_ros.ros.node import autostart, declare_parameters, in_thread, run_node
from wam_ros_interfaces.srv import Imagine


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup)")
    checkpoint: str = param("", "checkpoint directory (safetensors + config); relative paths are taken from the package root")
    device: str = param("auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N")
    dtype: str = param("float32", "model dtype: float32, float16 or bfloat16 (half precision on cuda only)")
    cpu_threads: int = param(1, "torch intra-op threads on cpu (in the model process); one is fastest for cpu-small on 2 cores (bench/model.py)")
    instruction: str = param("", "subtask instruction used until a Subtask message arrives")
    sampling_steps: int = param(0, "denoising steps for policy mode; 0 = the checkpoint's default")
    execute_actions: int = param(0, "actions of a chunk executed before the next one takes over; 0 = the checkpoint's execute_steps")
    rtc_enabled: bool = param(True, "freeze the actions that execute during inference (real-time chunking)")
    initial_latency_s: float = param(0.1, "latency assumed before the first measurement [s]")
    sync_tolerance_s: float = param(0.02, "largest stamp difference between paired camera frames [s]")
    max_input_age_s: float = param(0.3, "an input older than this is stale: no chunk is computed [s]")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics messages [s]")
    publish_predictions: bool = param(False, "publish the frames ~/imagine predicts on /wam/inference/prediction")
    autostart: bool = param(True, "configure and activate at start-up")


class WamInference(LifecycleNode):
    """Serves the world action model to the ROS graph: chunks, imagination and diagnostics."""

    def __init__(self) -> None:
        super().__init__("wam_inference")
        self.params = declare_parameters(self, Parameters)
        self.runtime: ModelProcess | None = None
        self.robot: RobotConfig | None = None
        self.assembler: ObservationAssembler | None = None
        self.stop_worker = threading.Event()
        self.worker: threading.Thread | None = None
        self.entities: list[Any] = []
        self.current: TimedChunk | None = None
        self.last_obs_stamp_s = -1.0
        self.chunk_id = 0
        self.subtask = Subtask(instruction=self.params.instruction)
        self.latency = LatencyEstimator(self.params.initial_latency_s)
        self.not_ready: str = "not configured"
        self.jumps: list[float] = []
        self.chunk_times: list[float] = []
        self.stages = StageTimes()  # where each chunk's time went (diagnostics)
        self._joint_index: dict[str, int] | None = None
        self.device = ""
        if self.params.autostart:
            autostart(self)

    # -- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._load()
        except Exception as error:  # noqa: BLE001 - any load failure must fail configure with its reason
            self.get_logger().error(f"configure failed: {error}")
            if self.runtime is not None:
                self.runtime.close()
            self.runtime = None
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _load(self) -> None:
        p = self.params
        if not p.checkpoint:
            raise ValueError("parameter 'checkpoint' is empty")
        checkpoint = Path(p.checkpoint) if Path(p.checkpoint).is_absolute() else package_root() / p.checkpoint
        self.robot = load_robot_config(p.robot_config) if p.robot_config else load_robot_config("panda_sim")
        started = time.perf_counter()
        self.runtime = ModelProcess(checkpoint, device=p.device, dtype=p.dtype, cpu_threads=p.cpu_threads)  # loads and warms up
        device = self.runtime.device
        config = self.runtime.config
        missing = [c for c in config.cameras if c not in {cam.name for cam in self.robot.cameras}]
        if missing:
            raise ValueError(f"the model uses cameras {missing} that robot {self.robot.name} does not have")
        state_dim = self.robot.arm.dof + (1 if self.robot.gripper.joint_names else 0)
        if len(config.state_names) != state_dim:
            raise ValueError(f"the model's state has {len(config.state_names)} values, robot {self.robot.name} gives {state_dim}")
        self.get_logger().info(
            f"loaded {self.runtime.model_id} on {device} ({p.dtype}) in model process {self.runtime.pid} "
            f"in {time.perf_counter() - started:.1f} s; "
            f"horizon {config.horizon} x {config.control_period_s:g} s, cameras {list(config.cameras)}"
        )
        self.device = device
        self.assembler = ObservationAssembler(
            list(config.cameras),
            config.n_obs_frames,
            config.obs_frame_stride * config.control_period_s,
            p.sync_tolerance_s,
            p.max_input_age_s,
        )
        for camera in config.cameras:
            topic = self.robot.camera(camera).image_topic
            self.entities.append(
                self.create_subscription(Image, topic, lambda msg, c=camera: self._on_image(c, msg), qos.SENSORS)
            )
        self.entities.append(self.create_subscription(JointState, "/joint_states", self._on_joint_state, qos.SENSORS))
        self.entities.append(self.create_subscription(Subtask, "/wam/task/subtask", self._on_subtask, qos.LATCHED))
        self.chunk_pub = self.create_publisher(ActionChunk, "/wam/action_chunk", qos.COMMANDS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.prediction_pub = self.create_publisher(Image, "/wam/inference/prediction", qos.SENSORS)
        self.entities += [self.chunk_pub, self.diag_pub, self.prediction_pub]
        # Reentrant: the executor runs every other callback while an imagination is computed.
        self.entities.append(self.create_service(Imagine, "~/imagine", self._on_imagine, callback_group=ReentrantCallbackGroup()))
        self.not_ready = "inactive"

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.stop_worker.clear()
        self.worker = threading.Thread(target=self._work, name="wam_inference_worker", daemon=True)
        self.worker.start()
        self.diag_timer = self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info("active: publishing action chunks on /wam/action_chunk")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self.destroy_timer(self.diag_timer)
        self.not_ready = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop()  # the worker must not publish through a node being destroyed
        super().destroy_node()

    def _stop(self) -> None:
        self.stop_worker.set()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
            self.worker = None

    def _release(self) -> None:
        for entity in self.entities:
            if isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            else:
                self.destroy_service(entity)
        self.entities = []
        if self.runtime is not None:
            self.runtime.close()  # the model process ends and frees its memory (GPU included)
            self.runtime = None

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
        state = np.asarray(arm + ([sum(fingers)] if fingers else []), dtype=np.float32)
        self.assembler.add_state(time_to_seconds(msg.header.stamp), state)

    def _on_subtask(self, msg: Subtask) -> None:
        if msg.instruction != self.subtask.instruction:
            self.get_logger().info(f"subtask {msg.id or msg.index}: {msg.instruction!r}")
            self.current = None  # a new subtask starts a fresh chunk stream (no freezing across subtasks)
        self.subtask = msg

    # -- chunks ----------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _due(self, now_s: float) -> bool:
        if self.current is None:
            return True
        period = self.current.period_s
        execute = self.params.execute_actions or self.runtime.config.execute_steps
        return now_s >= self.current.stamp_s + execute * period - self.latency.estimate_s()

    def _work(self) -> None:
        while not self.stop_worker.is_set() and self.context.ok():
            try:
                now = self._now_s()
                if not self.subtask.instruction:
                    self.not_ready = "no subtask: set the 'instruction' parameter or publish /wam/task/subtask"
                elif self._due(now) and self._compute_chunk(now):
                    continue
            except Exception as error:  # noqa: BLE001 - reported; at shutdown the context goes first
                if not self.context.ok():
                    return
                self.not_ready = f"inference failed: {type(error).__name__}: {error}"
                self.get_logger().error(self.not_ready, throttle_duration_sec=5.0)
                self.stop_worker.wait(0.5)
            self.stop_worker.wait(0.005)

    def _compute_chunk(self, now_s: float) -> bool:
        started = time.perf_counter()
        observation = self.assembler.assemble(now_s)
        if isinstance(observation, NotReady):
            self.not_ready = str(observation)
            return False
        if observation.stamp_s <= self.last_obs_stamp_s:
            return False  # no newer observation than the last chunk's
        assembled = time.perf_counter()
        config = self.runtime.config
        prefix = None
        if self.params.rtc_enabled:
            prefix = frozen_prefix(self.current, observation.stamp_s, config.control_period_s, self.latency.estimate_s(), config.horizon)
        actions, timing = self.runtime.policy(
            observation.images,
            observation.state,
            self.subtask.instruction,
            steps=self.params.sampling_steps or None,
            frozen_prefix=prefix,
        )
        modelled = time.perf_counter()
        actions = np.asarray(actions, dtype=np.float64)
        chunk = TimedChunk(observation.stamp_s, config.control_period_s, actions)
        msg = self._chunk_message(chunk)
        latency_s = time.perf_counter() - started  # compute time: observation assembled -> message handed over
        msg.inference_latency_s = latency_s
        self.chunk_pub.publish(msg)
        published = time.perf_counter()
        published_s = self._now_s()
        self.jumps.append(boundary_jump(self.current, chunk, published_s))
        self.latency.add(latency_s)
        self.stages.add(
            input_age_at_start=now_s - observation.stamp_s,  # node clock (sim time in simulation)
            assemble=assembled - started,
            model_lock_wait=timing.lock_wait_s,
            model_compute=timing.compute_s,
            model_transfer=timing.transfer_s,
            publish=published - modelled,
            observation_to_publish=published_s - observation.stamp_s,  # node clock
        )
        self.chunk_times.append(time.monotonic())
        self.current = chunk
        self.last_obs_stamp_s = observation.stamp_s
        self.not_ready = ""
        return True

    def _chunk_message(self, chunk: TimedChunk) -> ActionChunk:
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
        msg.model_id = self.runtime.model_id
        msg.subtask_id = self.subtask.id
        return msg

    # -- imagination -----------------------------------------------------------------------
    async def _on_imagine(self, request: Imagine.Request, response: Imagine.Response) -> Imagine.Response:
        if self.runtime is None or self.assembler is None:
            response.success, response.message = False, "model not loaded"
            return response
        observation = self.assembler.assemble(self._now_s())
        if isinstance(observation, NotReady):
            response.success, response.message = False, f"no observation: {observation}"
            return response
        config = self.runtime.config
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
        runtime, instruction = self.runtime, request.instruction or self.subtask.instruction
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
        recent = [t for t in self.chunk_times if t > now_wall - 10.0]
        self.chunk_times = recent
        values = {
            "device": self.device,
            "model_id": self.runtime.model_id if self.runtime else "",
            "chunks_published": str(self.chunk_id),
            "chunk_rate_hz": f"{len(recent) / 10.0:.2f}",
            "latency_ms_p50": f"{self.latency.percentile_ms(50):.1f}",
            "latency_ms_p99": f"{self.latency.percentile_ms(99):.1f}",
            **{f"stage.{k}": f"{v:.1f}" for k, v in self.stages.summary_ms().items()},
            "boundary_jump_last": f"{self.jumps[-1]:.4f}" if self.jumps else "nan",
            "boundary_jump_max": f"{max(self.jumps):.4f}" if self.jumps else "nan",
            "subtask": self.subtask.instruction,
            "not_ready": self.not_ready,
        }
        for name, age in self.assembler.input_ages_s(self._now_s()).items():
            values[f"input_age_s.{name}"] = f"{age:.3f}"
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if self.not_ready else DiagnosticStatus.OK,
            name=f"{self.get_name()}: policy",
            message=self.not_ready or "publishing chunks",
            hardware_id=self.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(diagnostics)


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would fail configure (for ``wam-ros bringup --check``): the checkpoint's files, without loading it."""
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
