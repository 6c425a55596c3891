"""Helpers for tests that start real ROS 2 processes and talk to them over real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

from wam_ros.bringup import NodeSpec, node_parameters_class, write_params_file
from wam_ros.bringup.supervisor import node_command


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02,
               detail: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what`` (and
    ``detail()``, the state seen at the timeout) on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}" + (f"; {detail()}" if detail else ""))


class Processes:
    """Real child processes in their own process groups, with logs on disk."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.log_dir / f"{name}.log"
        process = subprocess.Popen(
            command,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        self.started.append((name, process, log))
        return process

    def start_node(self, kind: str, name: str | None = None, **parameters: Any) -> subprocess.Popen:
        """Start ``wam_ros.nodes.<kind>_node`` the way bringup does, with a params file."""
        name = name or kind
        node_parameters_class(kind)  # fail early on an unknown kind
        spec = NodeSpec(name=name, kind=kind, required=False, parameters=parameters)
        params_file = write_params_file(spec, self.log_dir)
        return self.start(name, node_command(spec, params_file))

    def python(self, name: str, *args: str) -> subprocess.Popen:
        return self.start(name, [sys.executable, *args])

    def log(self, name: str) -> str:
        for started_name, _, log in self.started:
            if started_name == name:
                return log.read_text(errors="replace")
        raise KeyError(name)

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGINT, then SIGTERM, then SIGKILL each process group; assert nothing is left."""
        for sig, grace_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [(n, p) for n, p, _ in self.started if p.poll() is None]
            for _, process in alive:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass
            for _, process in alive:
                try:
                    process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
        for name, process, _ in self.started:
            # Nothing of the group may survive, the process's own children included.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            assert process.poll() is not None, f"process {name} (pid {process.pid}) did not exit"


class RosProbe:
    """An rclpy node in the test process, with its own context, spinning in a thread."""

    def __init__(self, name: str = "test_probe") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node(name, context=self.context)
        # Single-threaded: rclpy's MultiThreadedExecutor busy-waits for its workers, a whole core
        # with a 250 Hz /clock (bench/executors.py), and this process shares 2 cores with the graph.
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown while spinning
            pass

    def collect(self, msg_type: type, topic: str, qos: Any = 10, raw: bool = False) -> list:
        """Subscribe and return the (growing) list of received messages."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos, raw=raw)
        return received

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout_s: float = 10.0) -> None:
        wait_until(lambda: publisher.get_subscription_count() >= count, timeout_s, f"{count} subscriber(s) on {publisher.topic_name}")

    def wait_for_publishers(self, topic: str, count: int = 1, timeout_s: float = 10.0) -> None:
        wait_until(lambda: self.node.count_publishers(topic) >= count, timeout_s, f"{count} publisher(s) on {topic}")

    def call(self, client: Any, request: Any, timeout_s: float = 10.0) -> Any:
        """Wait for the service, call it, return the response."""
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {client.srv_name} not available"
        future = client.call_async(request)
        return wait_until(lambda: future.done() and (future.result() or True), timeout_s, f"response of {client.srv_name}") and future.result()

    def graph_view(self) -> str:
        """What this probe's participant sees of the graph (for failure messages)."""
        names = self.node.get_node_names_and_namespaces()
        services = sorted(name for name, _ in self.node.get_service_names_and_types()
                          if not name.endswith(("parameters", "parameter_types", "get_type_description")))
        return (f"probe '{self.node.get_name()}' in domain {self.context.get_domain_id()} sees nodes {names}, "
                f"services other than the nodes' parameter services {services}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)
