"""The world action model in a process of its own, called from the inference node like the runtime.

Why a process: in the node's process the ROS executor runs a Python callback for every
``/clock`` and ``/joint_states`` message (500 Hz each from the sim) and every camera frame. A
policy call at batch 1 is hundreds of small torch operations; the calling thread gives up the
GIL around each one and then waits for the busy executor thread to hand it back (up to the
interpreter's 5 ms switch interval each time). Measured beside the sim on 2 cores
(``/tmp``-style probe, docs/inference.md): 23-33 ms per call alone, 150-400 ms p50 with
the sim's streams handled in the same process, whichever executor and thread count. In a
child process the model has an interpreter to itself; only the CPU is shared.

:class:`ModelProcess` starts the child (``python -m wam_ros.inference.model_process``: no fork
of a process with DDS threads, and unlike multiprocessing's spawn no re-import of the caller's
``__main__``), loads and warms up the checkpoint there, and proxies ``policy`` and ``imagine``. Calls are
serialised; each returns the child's own compute time next to the result, so the caller can
tell model time from lock wait and transfer. The child ends when the parent closes the pipe,
exits or dies (``PR_SET_PDEATHSIG`` on Linux). No rclpy here.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from wam_ros.processes import die_with_parent

DTYPES = ("float32", "float16", "bfloat16")  # torch dtype names the model process accepts


class ModelProcessError(RuntimeError):
    """The model process failed to start, load, or answer; the message says why."""


@dataclass(frozen=True)
class CallTiming:
    """Where the time of one proxied call went [s]."""

    lock_wait_s: float  # waiting for another caller (e.g. ~/imagine while a chunk is computed)
    compute_s: float  # the runtime call in the child: preprocessing (resize, text) + network
    transfer_s: float  # pickling, the pipe and unpickling, both ways

    @property
    def total_s(self) -> float:
        return self.lock_wait_s + self.compute_s + self.transfer_s


def _serve(conn: Connection, checkpoint: str, device: str, dtype: str, cpu_threads: int) -> None:
    """Child: load, warm up, then answer (method, args, kwargs) requests until the pipe closes."""
    die_with_parent()
    try:
        import torch

        from wam_ros.model import load_policy

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        runtime = load_policy(Path(checkpoint), device=device, dtype=getattr(torch, dtype))
        runtime.warmup()
    except Exception as error:  # noqa: BLE001 - every load failure goes back to the parent with its reason
        conn.send(("error", f"{type(error).__name__}: {error}"))
        conn.close()
        return
    conn.send(("ready", runtime.config, runtime.model_id, device))
    methods = {"policy": runtime.policy, "imagine": runtime.imagine}
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe or is gone
        started = time.perf_counter()
        try:
            result = methods[method](*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - raised again in the parent
            conn.send(("error", f"{type(error).__name__}: {error}", time.perf_counter() - started))
            continue
        conn.send(("ok", result, time.perf_counter() - started))


class ModelProcess:
    """A loaded checkpoint in a child process; ``policy``/``imagine`` as on the runtime, plus timings."""

    def __init__(self, checkpoint: Path | str, device: str = "auto", dtype: str = "float32", cpu_threads: int = 1,
                 start_timeout_s: float = 300.0) -> None:
        """Start the child and wait until it has loaded and warmed up ``checkpoint``.

        ``device``: auto (cuda when available, else cpu), cpu, cuda, cuda:N; ``self.device``
        is the one used. Raises :class:`ModelProcessError` with the child's reason on failure.
        """
        if dtype not in DTYPES:
            raise ModelProcessError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        parent_end, child_end = socket.socketpair()
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "wam_ros.inference.model_process", str(child_end.fileno()), str(checkpoint), device, dtype, str(cpu_threads)],
            pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
        )
        child_end.close()
        self._conn = Connection(parent_end.detach())
        try:
            reply = self._receive(start_timeout_s, "loading the checkpoint")
        except ModelProcessError:
            self.close()
            raise
        if reply[0] != "ready":
            self.close()
            raise ModelProcessError(f"loading {checkpoint} failed: {reply[1]}")
        _, self.config, self.model_id, self.device = reply
        self.pid = self._process.pid

    def _receive(self, timeout_s: float, what: str) -> tuple:
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(0.1):
            if self._process.poll() is not None:
                raise ModelProcessError(f"model process exited with code {self._process.returncode} while {what}")
            if time.monotonic() > deadline:
                raise ModelProcessError(f"model process gave no answer within {timeout_s:.0f} s while {what}")
        try:
            return self._conn.recv()
        except (EOFError, OSError) as error:
            raise ModelProcessError(f"model process closed the pipe while {what} (exit code {self._process.poll()})") from error

    def call(self, method: str, *args: Any, timeout_s: float = 60.0, **kwargs: Any) -> tuple[Any, CallTiming]:
        """``runtime.<method>(*args, **kwargs)`` in the child; returns (result, timing)."""
        asked = time.perf_counter()
        with self._lock:
            started = time.perf_counter()
            if self._conn.closed:
                raise ModelProcessError("model process is closed")
            self._conn.send((method, args, kwargs))
            reply = self._receive(timeout_s, f"computing {method}")
            done = time.perf_counter()
        status, payload, compute_s = reply
        timing = CallTiming(lock_wait_s=started - asked, compute_s=compute_s, transfer_s=max(0.0, done - started - compute_s))
        if status != "ok":
            raise ModelProcessError(f"{method} failed in the model process: {payload}")
        return payload, timing

    def policy(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str, **kwargs: Any) -> tuple[np.ndarray, CallTiming]:
        return self.call("policy", images, state, instruction, **kwargs)

    def imagine(self, images: dict[str, np.ndarray], state: np.ndarray, instruction: str,
                actions: np.ndarray | None = None) -> tuple[tuple[dict[str, np.ndarray], float], CallTiming]:
        return self.call("imagine", images, state, instruction, actions)

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The child's exit code (negative: the signal that ended it); None while it runs."""
        return self._process.poll()

    def close(self, timeout_s: float = 5.0) -> None:
        """End the child: close the pipe (it returns), then terminate / kill if it does not."""
        if not self._conn.closed:
            self._conn.close()
        for stop in (None, self._process.terminate, self._process.kill):
            if stop is not None:
                stop()
            try:
                self._process.wait(timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``<socket fd> <checkpoint> <device> <dtype> <cpu threads>``.

    SIGINT is ignored: the child shares the node's process group, which a terminal's Ctrl-C
    (or ``ros2 launch``) signals as a whole, and it ends when the node closes the pipe instead.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, checkpoint, device, dtype, cpu_threads = (argv if argv is not None else sys.argv[1:])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads must not spin between chunks
    _serve(Connection(int(fd)), checkpoint, device, dtype, int(cpu_threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
