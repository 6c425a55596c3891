"""Node scaffolding: parameters declared from a dataclass, and a demo_nodes_py-style main."""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import typing
from typing import Any, Callable, TypeVar

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future

from wam_ros import parameters

P = TypeVar("P")
T = TypeVar("T")


def declare_parameters(node: Node, cls: type[P]) -> P:
    """Declare every field of the ``Parameters`` dataclass ``cls`` on ``node`` and return the values.

    Values come from ``--params-file`` / ``-p`` overrides, else the dataclass defaults, and are
    checked with the same rules bringup uses (:func:`wam_ros.parameters.coerce`).
    """
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        descriptor = ParameterDescriptor(description=field.metadata.get("description", ""))
        if isinstance(default, list) and not default:
            # An empty list has no type for ROS to infer: declare it by its annotation.
            from rclpy.parameter import Parameter

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
    return cls(**values)


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


def run_node(make_node: Callable[[], Node], args: list[str] | None = None,
             executor: Callable[[], Any] | None = None) -> int:
    """Init rclpy, spin the node until Ctrl-C / SIGTERM / shutdown, and return an exit code.

    ``executor`` makes the executor (anything with ``add_node`` and ``spin``, optionally
    ``shutdown(timeout_sec)``); by default a SingleThreadedExecutor (long callbacks use
    :func:`in_thread`). Construction errors (bad parameters, missing files) are logged and give
    exit code 1.
    """
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    spinner = None
    code = 0
    try:
        node = make_node()
        spinner = executor() if executor is not None else SingleThreadedExecutor()
        spinner.add_node(node)
        spinner.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # noqa: BLE001 - report any failure as a clear message and exit code
        name = node.get_name() if node is not None else "node"
        if node is not None and not node.context.ok():
            # Ctrl-C/SIGTERM shut the context down while a callback was taking its input; rclpy
            # can raise from its bindings then (seen in a test run). The stop was asked for.
            print(f"[{name}] error while shutting down (ignored): {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        else:
            print(f"[{name}] fatal: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            code = 1
    finally:
        if hasattr(spinner, "shutdown"):
            spinner.shutdown(timeout_sec=1.0)  # lets idle executor worker threads end
        if node is not None:
            code = code or getattr(node, "exit_code", 0)
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    _exit_if_callbacks_hang(code)
    return code


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
