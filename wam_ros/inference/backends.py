"""Where the inference node's chunks come from: the local model process or a websocket policy server.

Both backends take the assembled observation (per camera (n, H, W, 3) uint8 frames, (n, dof+1)
states), the instruction and an optional frozen prefix, and return :class:`PolicyAnswer`:
absolute joint targets and gripper widths, with where the time went. Two kinds of failure:

* :class:`PolicyFault` (websocket: server unreachable, slow, disconnected, an error frame or a
  reply the mapping cannot read): transient. The backend closes the connection, waits a backoff
  that doubles up to ``backoff_max_s`` before it connects again, and says why; the node
  publishes nothing meanwhile, so the safety bridge's chunk watchdog holds the arm.
* :class:`~wam_ros.inference.model_process.ModelProcessError` with ``fatal()`` set (the local
  model process died): the node goes to its lifecycle error state.
No rclpy here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from wam_ros.inference.model_process import ModelProcess
from wam_ros.policy.client import PolicyClient, PolicyConnectionError
from wam_ros.policy.mapping import MappingError, RobotPolicyAdapter

#: DreamZero's action_space names -> our mapping's arm action types.
DREAMZERO_ACTION_SPACES = {"joint_position": "joint_position", "joint_velocity": "joint_velocity", "cartesian_position": "cartesian_pose"}


class PolicyFault(RuntimeError):
    """No chunk from this request; the backend retries by itself (the message says why and when)."""


@dataclass(frozen=True)
class PolicyAnswer:
    actions: np.ndarray  # (horizon, dof [+1]) absolute joint targets [rad] (+ gripper width [m])
    period_s: float  # between consecutive actions
    execute_actions: int  # actions to execute before the next chunk takes over
    round_trip_s: float  # request handed over -> answer back (local: lock wait + transfer + compute)
    server_compute_s: float  # the policy's own compute as the server reports it (nan when it does not)
    lock_wait_s: float = 0.0  # local: waiting for an ~/imagine call


class LocalBackend:
    """The checkpoint in a child process of the node (wam_ros.inference.model_process)."""

    kind = "local"
    accepts_prefix = True

    def __init__(self, process: ModelProcess, sampling_steps: int | None) -> None:
        self.process = process
        self.sampling_steps = sampling_steps
        config = process.config
        self.cameras = list(config.cameras)
        self.n_obs_frames = config.n_obs_frames
        self.frame_spacing_s = config.obs_frame_stride * config.control_period_s
        self.horizon: int | None = config.horizon
        self.model_id = process.model_id
        self.device = process.device
        self.description = f"{process.model_id} on {process.device} in model process {process.pid}"

    def infer(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str, prefix: np.ndarray | None) -> PolicyAnswer:
        config = self.process.config
        actions, timing = self.process.policy(images, state, instruction, steps=self.sampling_steps, frozen_prefix=prefix)
        return PolicyAnswer(np.asarray(actions, dtype=np.float64), config.control_period_s, config.execute_steps,
                            timing.total_s, timing.compute_s, timing.lock_wait_s)

    def new_episode(self) -> None:
        """Nothing to tell a local model."""

    def fatal(self) -> str:
        """Why the backend can never answer again ('' while it can)."""
        if self.process.alive:
            return ""
        return f"model process {self.process.pid} exited with code {self.process.exit_code}"

    def close(self) -> None:
        self.process.close()


class RemoteBackend:
    """A policy server over websocket, through a per-policy mapping; reconnects with backoff."""

    kind = "websocket"

    def __init__(self, adapter: RobotPolicyAdapter, client: PolicyClient, request_timeout_s: float,
                 backoff_min_s: float, backoff_max_s: float, warn: Callable[[str], None], info: Callable[[str], None]) -> None:
        mapping = adapter.mapping
        if mapping.frames > 1 and mapping.control_period_s is None:
            raise MappingError(f"{mapping.path}: frames > 1 needs control_period_s (the spacing of the history frames)")
        self.adapter = adapter
        self.mapping = mapping
        self.client = client
        self.request_timeout_s = request_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.warn = warn  # each fault, with why and when the next connection is tried
        self.info = info  # each connection
        self.cameras = mapping.cameras
        self.n_obs_frames = mapping.frames
        self.frame_spacing_s = mapping.control_period_s or 0.1  # used only with more than one frame
        self.model_id = f"{mapping.name}@{client.url}"
        self.device = client.url
        self.description = f"policy {mapping.name!r} ({mapping.protocol}) at {client.url}"
        self.accepts_prefix = False
        self.period_s: float | None = mapping.control_period_s
        self.horizon: int | None = None
        self.execute_hint: int | None = None
        self._backoff_s = backoff_min_s
        self._retry_at = 0.0
        self.last_error = ""
        self.failures = 0

    def fatal(self) -> str:
        return ""  # a server can come back: never fatal

    def new_episode(self) -> None:
        self.client.new_session()

    def close(self) -> None:
        self.client.close()

    def _timeout_s(self) -> float:
        if self.request_timeout_s > 0:
            return self.request_timeout_s
        if self.horizon is not None and self.period_s is not None:
            return self.horizon * self.period_s  # an answer later than the whole chunk is worthless
        return self.client.connect_timeout_s

    def _fail(self, error: Exception) -> PolicyFault:
        self.client.close()
        self.failures += 1
        self.last_error = str(error)
        self._retry_at = time.monotonic() + self._backoff_s
        message = f"{self.description}: {error}; no chunk; reconnecting in {self._backoff_s:.1f} s"
        self._backoff_s = min(self._backoff_s * 2.0, self.backoff_max_s)
        self.warn(message)
        return PolicyFault(message)

    def _connect(self) -> None:
        metadata = self.client.connect()
        mapping = self.mapping
        if self.client.protocol == "dreamzero":
            space = metadata.get("action_space")
            if space is not None and DREAMZERO_ACTION_SPACES.get(space) != mapping.arm.type:
                raise MappingError(f"the server's action_space is {space!r}; {mapping.path} reads {mapping.arm.type}")
        elif metadata.get("action_space") not in (None, mapping.arm.type):
            raise MappingError(f"the server's action_space is {metadata['action_space']!r}; {mapping.path} reads {mapping.arm.type}")
        frames = metadata.get("n_obs_frames")
        if frames is not None and frames != mapping.frames:
            raise MappingError(f"the server wants {frames} observation frames; {mapping.path} sends {mapping.frames}")
        resolution = metadata.get("image_resolution")
        self.adapter.server_image_size = tuple(int(v) for v in resolution) if isinstance(resolution, (list, tuple)) and len(resolution) == 2 else None
        period = metadata.get("control_period_s")
        if mapping.control_period_s is not None and period is not None and not math.isclose(period, mapping.control_period_s, rel_tol=1e-3):
            raise MappingError(f"the server's control_period_s is {period}; {mapping.path} says {mapping.control_period_s}")
        self.period_s = mapping.control_period_s or (float(period) if isinstance(period, (int, float)) else None)
        if self.period_s is None:
            raise MappingError(f"neither {mapping.path} nor the server's metadata gives control_period_s")
        self.horizon = int(metadata["horizon"]) if isinstance(metadata.get("horizon"), int) else None
        self.execute_hint = metadata.get("execute_steps") if isinstance(metadata.get("execute_steps"), int) else None
        arm, gripper = mapping.arm, mapping.gripper
        self.accepts_prefix = bool(metadata.get("accepts_frozen_prefix")) and arm.type == "joint_position" and (
            gripper is None or gripper.encoding == "width_m")
        self.info(f"connected to {self.description}: {metadata.get('server') or metadata.get('model_id') or 'server'}, "
                 f"period {self.period_s:g} s, {'accepts' if self.accepts_prefix else 'no'} frozen prefix")

    def infer(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str, prefix: np.ndarray | None) -> PolicyAnswer:
        if not self.client.connected:
            wait_s = self._retry_at - time.monotonic()
            if wait_s > 0:
                raise PolicyFault(f"{self.description}: reconnecting in {wait_s:.1f} s after: {self.last_error}")
            try:
                self._connect()
            except (PolicyConnectionError, MappingError) as error:
                raise self._fail(error) from None
        observation = self.adapter.observation(images, state, instruction)
        if prefix is not None and self.accepts_prefix:
            observation["frozen_prefix"] = np.asarray(prefix, dtype=np.float32)
        try:
            reply, round_trip_s = self.client.infer(observation, self._timeout_s())
            actions = self.adapter.actions(reply, state[-1], self.period_s)
        except (PolicyConnectionError, MappingError) as error:
            raise self._fail(error) from None
        self.horizon = len(actions)
        self._backoff_s = self.backoff_min_s
        execute = self.mapping.execute_actions or self.execute_hint or max(1, len(actions) // 2)
        return PolicyAnswer(actions, self.period_s, min(execute, len(actions)), round_trip_s, _infer_s(reply))


def _infer_s(reply: dict) -> float:
    """The policy's compute time from openpi's policy_timing / server_timing (seconds; nan when absent)."""
    for key in ("policy_timing", "server_timing"):
        timing = reply.get(key)
        if isinstance(timing, dict):
            value = timing.get("infer_ms")
            if isinstance(value, (int, float, np.floating)) and math.isfinite(value):
                return float(value) / 1e3
    return float("nan")
