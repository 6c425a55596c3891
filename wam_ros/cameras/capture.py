"""The capture thread shared by the camera nodes: read, hand over, recover (no ROS).

A :class:`CaptureLoop` owns one camera (anything with ``open()``, ``read()``, ``close()`` and
``is_open``), reads frames in its own thread and passes each to ``on_frame`` (the node
converts and publishes it). When ``read()`` fails (FrameTimeoutError: unplugged, stalled, a
file that ended) it closes the camera, marks the stream lost in :class:`StreamHealth`, and
tries to open it again every ``reconnect_interval_s`` (first after one interval) until it
succeeds or the loop stops.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

from wam_ros.cameras.health import StreamHealth
from wam_ros.cameras.types import CameraError, CameraFrame


class Camera(Protocol):
    settings: Any  # has ``source``: a human-readable name for messages

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def read(self) -> CameraFrame: ...

    def close(self) -> None: ...


Logger = Callable[[str, str], None]  # (level: "info" | "warn" | "error", message)


class CaptureLoop:
    """Reads ``camera`` in a thread; recovers from outages; records everything in ``health``."""

    def __init__(
        self,
        camera: Camera,
        on_frame: Callable[[CameraFrame], None],
        health: StreamHealth,
        reconnect_interval_s: float = 1.0,
        log: Logger = lambda level, message: None,
    ) -> None:
        self.camera = camera
        self.on_frame = on_frame
        self.health = health
        self.reconnect_interval_s = reconnect_interval_s
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        if self.camera.is_open:
            self.health.connected_now(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait for it (a blocked read ends within the camera's timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.camera.is_open and not self._reopen():
                self._stop.wait(self.reconnect_interval_s)
                continue
            try:
                frame = self.camera.read()
            except CameraError as error:
                if self._stop.is_set():
                    break
                self.camera.close()
                self.health.lost(time.monotonic(), str(error))
                self.log("error", f"{error}; closed, reconnecting every {self.reconnect_interval_s:.1f} s")
                self._stop.wait(self.reconnect_interval_s)  # let a replugged device enumerate first
                continue
            if self._stop.is_set():
                break
            try:
                self.on_frame(frame)
            except Exception as error:  # noqa: BLE001 - a publish failure must not kill the capture thread
                if self._stop.is_set():
                    break
                self.log("error", f"handling a frame failed: {type(error).__name__}: {error}")
                continue
            self.health.frame(time.monotonic(), frame.frame_number)

    def _reopen(self) -> bool:
        try:
            self.camera.open()
        except CameraError as error:
            self.health.lost(time.monotonic(), str(error))
            return False
        self.health.connected_now(time.monotonic())
        self.log("info", f"{self.health.source}: streaming again after {self.health.last_outage_s:.1f} s (reconnect {self.health.reconnects})")
        return True
