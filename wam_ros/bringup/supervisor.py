"""Run a bringup's nodes as child processes where launch_ros is not installed.

Deliberately small: start each node (``python -m wam_ros.nodes.<kind>_node --ros-args ...``),
prefix its output with its name, stop everything when a required node dies (exit 1), exit 0
when all nodes stopped cleanly. Ctrl-C or SIGTERM stops the nodes in stages
(:data:`wam_ros.bringup.STOP_STAGES`): command sources, then the safety bridge, which brakes the
arm to standstill and publishes HOLD, then the rest; a second Ctrl-C forces (SIGKILL). Children
die with the supervisor (PR_SET_PDEATHSIG), so no process outlives it. On a ROS 2 install use
``ros2 launch``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Sequence

from wam_ros.bringup import Bringup, NodeSpec, write_params_file
from wam_ros.processes import die_with_parent

#: A second signal sooner than this after the first is the same Ctrl-C delivered twice
#: (a terminal and a launcher both forwarding it), not a request to force [s].
FORCE_DEBOUNCE_S = 0.5


@dataclass
class _Child:
    spec: NodeSpec
    process: subprocess.Popen
    reader: threading.Thread


def node_command(spec: NodeSpec, params_file: Path, namespace: str = "", remappings: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Command line that starts one node, as ``ros2 run`` would with a params file (and a namespace)."""
    arguments = ["-r", f"__node:={spec.name}"]
    if namespace:
        arguments += ["-r", f"__ns:={namespace}"]
    for source, target in remappings:
        arguments += ["-r", f"{source}:={target}"]
    return [sys.executable, "-m", spec.module, "--ros-args", *arguments, "--params-file", str(params_file)]


class Supervisor:
    """Starts a :class:`Bringup`'s nodes and watches them until shutdown."""

    def __init__(
        self,
        bringup: Bringup,
        output: IO[str] | None = None,
        stop_timeout_s: float = 10.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.bringup = bringup
        self.output = output or sys.stdout
        self.stop_timeout_s = stop_timeout_s
        self.extra_env = extra_env or {}
        self.children: list[_Child] = []
        self._stop_requested = threading.Event()
        self._force = threading.Event()
        self._reported: set[int] = set()  # pids whose exit was logged
        self._first_signal_s = 0.0
        self._killed: list[str] = []
        self._write_lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="wam_ros_bringup_")

    def log(self, name: str, line: str) -> None:
        with self._write_lock:
            self.output.write(f"[{name}] {line}\n")
            self.output.flush()

    def _pump(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self.log(name, line.rstrip("\n"))

    def start(self) -> None:
        env = {**os.environ, **self.bringup.environment, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        for spec in self.bringup.nodes:
            params_file = write_params_file(spec, Path(self._tmp.name))
            process = subprocess.Popen(
                node_command(spec, params_file, self.bringup.namespace, self.bringup.remappings),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                start_new_session=True,  # the terminal's Ctrl-C reaches us only; we forward it
                preexec_fn=die_with_parent,  # SIGTERM to the child when the supervisor dies
            )
            reader = threading.Thread(target=self._pump, args=(spec.name, process.stdout), daemon=True)
            reader.start()
            self.children.append(_Child(spec, process, reader))
            self.log("bringup", f"started {spec.name} ({spec.kind}_node, pid {process.pid}{', required' if spec.required else ''})")

    def request_stop(self, signum: int | None = None, frame: object = None) -> None:
        """Signal handler: the first request stops in stages; a later one forces."""
        now = time.monotonic()
        if not self._stop_requested.is_set():
            self._first_signal_s = now
            self._stop_requested.set()
            if signum is not None:
                self.log("bringup", f"{signal.Signals(signum).name}: stopping {self._stop_plan()}; Ctrl-C again to force")
        elif now - self._first_signal_s > FORCE_DEBOUNCE_S and not self._force.is_set():
            self._force.set()
            self.log("bringup", "forcing: killing every node that is still running")

    def _stop_plan(self) -> str:
        stages: dict[int, list[str]] = {}
        for child in self.children:
            stages.setdefault(child.spec.stop_stage, []).append(child.spec.name)
        return ", then ".join(", ".join(names) for _, names in sorted(stages.items()))

    def stop(self) -> None:
        """Stop the nodes stage by stage: SIGINT, SIGTERM after the timeout, SIGKILL as the last resort."""
        for stage in sorted({child.spec.stop_stage for child in self.children}):
            group = [c for c in self.children if c.spec.stop_stage == stage]
            for sig, grace_s in ((signal.SIGINT, self.stop_timeout_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                if self._force.is_set():
                    sig = signal.SIGKILL
                alive = [c for c in group if c.process.poll() is None]
                if not alive:
                    break
                for child in alive:
                    try:
                        os.killpg(child.process.pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and any(c.process.poll() is None for c in alive) and (sig == signal.SIGKILL or not self._force.is_set()):
                    time.sleep(0.02)
                for child in alive:
                    if child.process.poll() is None:
                        self.log("bringup", f"{child.spec.name} did not stop after {sig.name}")
                        if sig != signal.SIGINT and child.spec.name not in self._killed:
                            self._killed.append(child.spec.name)
        if self._force.is_set():
            for child in self.children:
                if child.process.poll() is None:
                    with suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait()
        for child in self.children:
            child.reader.join(timeout=2.0)
        self._tmp.cleanup()

    def wait(self, until: Callable[[], bool] | None = None, poll_s: float = 0.05) -> int:
        """Block until a stop request, a required node's exit, every node's exit, or ``until()``.

        Returns 0 for a clean shutdown (a required node that exits 0 ends the bringup cleanly)
        and 1 when any node exited with an error.
        """
        reported = self._reported
        exit_code = 0
        while not self._stop_requested.is_set() and not (until is not None and until()):
            running = 0
            for child in self.children:
                code = child.process.poll()
                if code is None:
                    running += 1
                    continue
                if child.process.pid in reported:
                    continue
                reported.add(child.process.pid)
                self.log("bringup", f"{child.spec.name} exited with code {code}")
                exit_code = exit_code or int(code != 0)
                if child.spec.required:
                    self.log("bringup", f"required node {child.spec.name} ended: stopping all nodes")
                    return exit_code
            if running == 0:
                return exit_code
            time.sleep(poll_s)
        return exit_code

    def run(
        self,
        until: Callable[[], bool] | None = None,
        on_started: Callable[[], None] | None = None,
        before_stop: Callable[[], None] | None = None,
    ) -> int:
        """Start, call ``on_started``, wait, call ``before_stop``, stop every node.

        SIGINT and SIGTERM stop cleanly. Returns the exit code.
        """
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if on_started is not None:
                on_started()
            code = self.wait(until)
        finally:
            if before_stop is not None:
                before_stop()
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for child in self.children:
            returncode = child.process.returncode
            if child.process.pid not in self._reported and returncode not in (0, None):
                self.log("bringup", f"{child.spec.name} exited with code {returncode} while stopping")
                code = code or int(not self._force.is_set())
        if self._killed:
            self.log("bringup", f"killed after the stop timeout: {', '.join(self._killed)}")
            code = 1
        self.log("bringup", f"all nodes stopped (exit {code})")
        return code
