"""Node scaffolding: parameters declared from a dataclass, a robot's node and a lifecycle node that
release what they made, and a demo_nodes_py-style main."""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
import typing
from typing import Any, Callable, Generic, Iterable, TypeVar

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.client import Client
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.task import Future
from rclpy.timer import Timer

from wam_ros import parameters
from wam_ros.robot import RobotConfig, load_robot_config

P = TypeVar("P")
T = TypeVar("T")


def declare_parameters(node: Node, cls: type[P]) -> P:
    """Declare every field of the ``Parameters`` dataclass ``cls`` on ``node`` and return the values.

    Values come from ``--params-file`` / ``-p`` overrides, else the dataclass defaults, and are
    checked with the same rules bringup uses (:func:`wam_ros.parameters.coerce`). They are read
    once, so they are read-only from then on: ``ros2 param set`` on one of them fails with the
    reason (it used to report success and change nothing). ``use_sim_time`` stays settable.
    """
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        descriptor = ParameterDescriptor(description=field.metadata.get("description", ""))
        if isinstance(default, list) and not default:
            # An empty list has no type for ROS to infer: declare it by its annotation.
            item = typing.get_args(hints[field.name])[0]
            ptype = {float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                     str: Parameter.Type.STRING_ARRAY, bool: Parameter.Type.BOOL_ARRAY}[item]
            value = node.declare_parameter(field.name, ptype, descriptor).value
            value = [] if value is None else value
        else:
            value = node.declare_parameter(field.name, default, descriptor).value
        if isinstance(value, (tuple, list)) or type(value).__name__ == "array":
            value = list(value)
        values[field.name] = parameters.coerce(value, hints[field.name], f"{node.get_name()}.{field.name}")
    read_only = set(values) - {"use_sim_time"}

    def refuse_changes(changes: list[Parameter]) -> SetParametersResult:
        names = sorted(change.name for change in changes if change.name in read_only)
        if names:
            return SetParametersResult(successful=False, reason=f"read-only: restart the node with the new value ({', '.join(names)})")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(refuse_changes)
    return cls(**values)


class RobotNode(Node, Generic[P]):
    """A node for one robot: ``self.params`` from its ``Parameters`` dataclass, and ``self.robot``
    from the robot YAML its ``robot_config`` parameter names (required: bringup fills it in)."""

    def __init__(self, name: str, parameters_cls: type[P]) -> None:
        super().__init__(name)
        self.params: P = declare_parameters(self, parameters_cls)
        robot_config = self.params.robot_config  # type: ignore[attr-defined]
        if not robot_config:
            raise ValueError("parameter robot_config is empty: pass the robot YAML path (bringup fills it in)")
        self.robot: RobotConfig = load_robot_config(robot_config)


def destroy_entities(node: Node, entities: Iterable[Publisher | Subscription | Client | Service | Timer]) -> None:
    """Destroy publishers, subscriptions, clients, services and timers that ``node`` created."""
    destroyers = ((Publisher, node.destroy_publisher), (Subscription, node.destroy_subscription), (Client, node.destroy_client),
                  (Service, node.destroy_service), (Timer, node.destroy_timer))
    for entity in entities:
        for kind, destroy in destroyers:
            if isinstance(entity, kind):
                destroy(entity)
                break


class ReleasingLifecycleNode(LifecycleNode):
    """A lifecycle node whose cleanup and shutdown both release what configure made (:meth:`_release`, idempotent)."""

    def _release(self) -> None:
        raise NotImplementedError

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS


async def in_thread(node: Node, work: Callable[[], T], name: str) -> T:
    """Await ``work()`` run in its own thread, from a coroutine callback (service, action execute).

    Long work then leaves a SingleThreadedExecutor free for every other callback: rclpy's
    MultiThreadedExecutor busy-waits for its worker threads (a whole core with 250 /clock
    messages a second, bench/executors.py). Register the callback in a ReentrantCallbackGroup:
    a mutually exclusive group stays blocked while the coroutine waits. The executor resumes
    pending coroutines only when it wakes, so the thread wakes it when ``work`` is done.
    """
    executor = node.executor
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(work())
        except Exception as error:  # noqa: BLE001 - handed to the awaiting callback
            done.set_exception(error)
        finally:
            if executor is not None:
                executor.wake()

    threading.Thread(target=run, name=name).start()  # joined at exit (run_node gives it a grace period)
    return await done


class StopSignals:
    """SIGINT and SIGTERM as a stop request, delivered once.

    A terminal's Ctrl-C under ``ros2 launch`` reaches every node twice within milliseconds
    (launch forwards it and the terminal sends it to the process group, ros2/launch#830): the
    first signal starts the node's controlled stop, later ones are noted and ignored, so a stop
    in progress (a brake, a bag being closed) is never cut short by a traceback.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.requested = threading.Event()
        self.signal_name = ""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.requested.is_set():
            print(f"[{self.name}] {name} again: already stopping", file=sys.stderr, flush=True)
            return
        self.signal_name = name
        self.requested.set()

    @staticmethod
    def ignore_from_now_on() -> None:
        """The process is exiting: ignore further signals. (A Python handler would be reset to the
        default during interpreter finalization, and a late second SIGINT would kill the process.)"""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             executor: Callable[[], Any] | None = None) -> int:
    """Init rclpy, spin the node until SIGINT / SIGTERM / shutdown, and return an exit code.

    The executor spins in a thread of its own while the main thread waits for a signal (a
    Python signal handler cannot run while the main thread blocks in the middleware). On the
    first SIGINT or SIGTERM the node's ``controlled_stop()`` runs, if it has one, while the
    executor still spins (the safety bridge brakes the arm and publishes HOLD, the recorder
    closes its bag); then rclpy shuts down and the node is destroyed. ``executor`` makes the
    executor (anything with ``add_node`` and ``spin``, optionally ``shutdown(timeout_sec)``);
    by default a SingleThreadedExecutor (long callbacks use :func:`in_thread`). Construction
    errors (bad parameters, missing files) and exceptions escaping a callback are logged and
    give exit code 1.
    """
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    signals = StopSignals("node")
    node = None
    spinner = None
    spin_errors: list[BaseException] = []
    thread: threading.Thread | None = None
    code = 0
    try:
        node = make_node()
        signals.name = node.get_name()
        spinner = executor() if executor is not None else SingleThreadedExecutor()
        spinner.add_node(node)
        thread = threading.Thread(target=_spin, args=(spinner, spin_errors), name="executor")
        thread.start()
        while thread.is_alive() and not signals.requested.wait(0.1):
            pass
        if signals.requested.is_set() and thread.is_alive():
            node.get_logger().info(f"{signals.signal_name}: stopping")
            controlled_stop = getattr(node, "controlled_stop", None)
            if controlled_stop is not None:
                controlled_stop()
    except Exception as error:  # noqa: BLE001 - report any failure as a clear message and exit code
        name = node.get_name() if node is not None else "node"
        print(f"[{name}] fatal: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        code = 1
    finally:
        rclpy.try_shutdown()  # wakes the executor, whose spin() then returns
        if thread is not None:
            thread.join(timeout=5.0)
        if hasattr(spinner, "shutdown"):
            spinner.shutdown(timeout_sec=1.0)  # lets idle executor worker threads end
        if node is not None:
            code = code or getattr(node, "exit_code", 0)
            node.destroy_node()
        signals.ignore_from_now_on()
    for error in spin_errors:
        name = node.get_name() if node is not None else "node"
        print(f"[{name}] fatal: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        code = code or 1
    _exit_if_callbacks_hang(code)
    return code


def _spin(spinner: Any, errors: list[BaseException]) -> None:
    """Executor thread: spin until rclpy shuts down; an exception escaping a callback is kept for the exit code."""
    try:
        spinner.spin()
    except ExternalShutdownException:
        pass
    except Exception as error:  # noqa: BLE001 - handed to run_node
        if rclpy.ok():
            errors.append(error)
        # else: shutdown while a callback was taking its input (rclpy can raise from its bindings then)
    finally:
        rclpy.try_shutdown()  # a failed executor ends the node


def _exit_if_callbacks_hang(code: int, grace_s: float = 5.0) -> None:
    """A callback still running after shutdown (e.g. loading a model) must not keep the process alive.

    Executor worker threads are joined at interpreter exit; give them ``grace_s``, then exit hard.
    """
    deadline = time.monotonic() + grace_s
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in busy:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    still = [t.name for t in busy if t.is_alive()]
    if still:
        print(f"callbacks still running {grace_s:.0f} s after shutdown ({', '.join(still)}); exiting now", file=sys.stderr, flush=True)
        os._exit(code or 1)


def autostart(node: Any) -> None:
    """Configure and activate a lifecycle node right after start-up (what a lifecycle manager would do).

    A failed configure leaves the node unconfigured and ends the process with exit code 1,
    so a bad checkpoint or a missing device never looks like a running node.
    """
    from rclpy.lifecycle import TransitionCallbackReturn

    def start() -> None:
        timer.cancel()
        node.destroy_timer(timer)
        for transition, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"{transition} failed; exiting")
                # Ends executor.spin() in run_node from any executor thread; run_node returns this code.
                node.exit_code = 1
                node.context.try_shutdown()
                return

    timer = node.create_timer(0.0, start)
