"""The chunk stream of the inference node, without ROS: when to ask, what to freeze, how to join.

The node's executor thread reports subtasks and the safety bridge's mode; its worker thread asks
:class:`ChunkStream` whether to request a chunk (:meth:`~ChunkStream.start_now`), takes a
:class:`Request` snapshot (the subtask the chunk is for, the executing chunk to freeze and join,
the start delay), asks the policy, and hands the answer back (:meth:`~ChunkStream.publish`). A
new subtask (id, index or instruction), or time going back, restarts the stream: the next chunk
keeps nothing of the old ones, and a chunk whose request straddled the restart is dropped rather
than published under the wrong subtask. Thread-safe.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from wam_ros.inference.chunking import LatencyEstimator, TimedChunk, boundary_jump, follows, frozen_prefix, join

JUMP_WINDOW = 200  # boundary jumps kept for diagnostics


@dataclass(frozen=True)
class StreamSettings:
    dof: int  # arm joints (the leading action columns)
    frame_period_s: float  # camera period: the fresh-frame window before a chunk is due
    rtc_enabled: bool = True
    rtc_observation_age: bool = True  # start delay = observation age + latency (False: latency alone)
    blend_s: float = 0.3  # join over this long; 0 = publish the policy's chunk unchanged
    delivery_margin_s: float = 0.1  # the join keeps the executing chunk this long past the publish time (the way to the bridge)
    tracking_tolerance_rad: float = 0.3  # without a bridge status: the arm executes a chunk it is this close to
    execute_actions: int = 0  # 0 = the policy's
    fresh_frame_trigger: bool = True  # start on the first fresh frame in the window (False: at the deadline only)


@dataclass(frozen=True)
class Request:
    """What one policy request is for, fixed when it starts."""

    stamp_s: float  # the observation's
    instruction: str
    subtask_id: str
    generation: int
    previous: TimedChunk | None  # the chunk the arm executes (frozen and joined), or None
    prefix: np.ndarray | None  # frozen actions to send (policies that accept them)
    observation_age_s: float  # at the request
    start_delay_s: float  # expected: observation stamp -> the chunk takes over
    new_episode: bool  # the policy must hear of a new episode first


@dataclass(frozen=True)
class Published:
    chunk: TimedChunk  # as published (joined)
    jump: float  # step at the switch against the chunk it replaced [rad or m]
    joined: bool


class ChunkStream:
    """See the module docstring."""

    def __init__(self, settings: StreamSettings, latency: LatencyEstimator, instruction: str = "") -> None:
        self.settings = settings
        self.latency = latency  # node clock: request start -> published
        self._lock = threading.Lock()
        self._subtask: tuple[str, int, str] = ("", 0, instruction)
        self._generation = 0
        self._new_episode = True
        self._current: TimedChunk | None = None
        self._execute = 1
        self._last_stamp_s = -1.0
        self._window_anchor_s: float | None = None
        self._bridge_executing: bool | None = None
        self.jumps: deque[float] = deque(maxlen=JUMP_WINDOW)
        self.jump_max = 0.0

    @property
    def instruction(self) -> str:
        return self._subtask[2]

    def restart(self) -> None:
        """The next chunk starts afresh: no prefix, no join, a new episode for the policy."""
        with self._lock:
            self._restart()

    def _restart(self) -> None:
        self._generation += 1
        self._current = None
        self._last_stamp_s = -1.0
        self._window_anchor_s = None
        self._new_episode = True

    def on_subtask(self, subtask_id: str, index: int, instruction: str) -> bool:
        """A Subtask message; returns whether it starts a new stream (a new id, index or instruction,
        so two episodes with the same instruction never share one)."""
        key = (subtask_id, index, instruction)
        with self._lock:
            if key == self._subtask:
                return False
            self._subtask = key
            self._restart()
            return True

    def on_bridge_mode(self, executing: bool) -> None:
        """The safety bridge's mode: whether its newest chunk drives the arm (AUTONOMY)."""
        self._bridge_executing = executing

    def start_now(self, now_s: float, newest_frame_s: float | None) -> bool:
        """Whether to request the next chunk now.

        The current chunk needs a successor by ``stamp + execute * period - latency``. From one
        camera period before that, the first fresh frame starts the request (an observation a few
        ms old instead of up to a frame period plus render time); at the deadline the newest does.
        """
        with self._lock:
            current = self._current
            if current is None:
                return True
            due_s = current.stamp_s + self._execute * current.period_s - self.latency.estimate_s()
            if now_s >= due_s:
                return True
            if not self.settings.fresh_frame_trigger or now_s < due_s - self.settings.frame_period_s:
                self._window_anchor_s = None
                return False
            if self._window_anchor_s is None:
                self._window_anchor_s = newest_frame_s if newest_frame_s is not None else -1.0
                return False
            return newest_frame_s is not None and newest_frame_s > self._window_anchor_s

    def _executing(self, current: TimedChunk | None, stamp_s: float, state_now: np.ndarray) -> bool:
        if self._bridge_executing is None:
            return follows(current, stamp_s, state_now, self.settings.dof, self.settings.tracking_tolerance_rad)
        return self._bridge_executing and current is not None and current.stamp_s <= stamp_s <= current.end_s

    def request(self, stamp_s: float, state_now: np.ndarray, now_s: float, accepts_prefix: bool, horizon: int | None) -> Request | None:
        """A request for an observation stamped ``stamp_s``; None when it is not newer than the last chunk's."""
        settings = self.settings
        with self._lock:
            if stamp_s < self._last_stamp_s - 1.0:
                self._restart()  # time went back (a sim reset): the old stream is over
            if stamp_s <= self._last_stamp_s:
                return None
            current = self._current
            previous = current if self._executing(current, stamp_s, state_now) else None
            new_episode, self._new_episode = self._new_episode, False
            subtask_id, _, instruction = self._subtask
            generation = self._generation
        age_s = now_s - stamp_s
        start_delay_s = (age_s if settings.rtc_observation_age else 0.0) + self.latency.estimate_s()
        prefix = None
        if settings.rtc_enabled and accepts_prefix and previous is not None and horizon:
            prefix = frozen_prefix(previous, stamp_s, previous.period_s, start_delay_s, horizon)
        return Request(stamp_s, instruction, subtask_id, generation, previous, prefix, age_s, start_delay_s, new_episode)

    def publish(self, request: Request, chunk: TimedChunk, execute_actions: int, now_s: float,
                send: Callable[[TimedChunk], None]) -> Published | None:
        """Join ``chunk`` (the answer to ``request``) to the executing one and ``send`` it, atomically
        with respect to a restart; None (nothing sent) when the stream restarted since the request."""
        with self._lock:
            if request.generation != self._generation:
                return None
            previous = request.previous
            current = self._current
            if previous is None and self._bridge_executing and current is not None and current.stamp_s <= now_s <= current.end_s:
                previous = current  # the bridge started executing it during the request (AUTONOMY's first chunks)
            joined = previous is not None and self.settings.blend_s > 0
            if joined:
                chunk = join(previous, chunk, now_s + self.settings.delivery_margin_s, self.settings.blend_s)
            send(chunk)
            self._current = chunk
            self._execute = self.settings.execute_actions or execute_actions
            self._last_stamp_s = request.stamp_s
            self._window_anchor_s = None
        jump = boundary_jump(previous, chunk, now_s)  # what the arm meets (0 when it executed no chunk)
        self.jumps.append(jump)
        self.jump_max = max(self.jump_max, jump)
        self.latency.add(now_s - (request.stamp_s + request.observation_age_s))
        return Published(chunk, jump, joined)
