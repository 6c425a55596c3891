"""``wam-ros task "<instruction>"``: send a long-horizon task to the planner and show its progress.

Ctrl-C cancels the task (the planner puts the bridge in HOLD) and waits for it to end.
Exit code: 0 success, 1 the task failed or was canceled, 2 no planner or goal refused.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from wam_ros.bringup import normalize_namespace, ros_environment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instruction", help='e.g. "put the red, green and blue cubes in the bin, in that order"')
    parser.add_argument("--max-replans", type=int, default=0, metavar="N", help="bound on replanning after failures (0: the planner's default)")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="S", help="whole-task time limit in seconds (0: the planner's default)")
    parser.add_argument("--wait", type=float, default=60.0, metavar="S", help="seconds to wait for the planner to come up")
    parser.add_argument("--namespace", default="", metavar="NS", help="the stack's namespace (bringup namespace:=NS)")


def _describe(feedback) -> str:
    subtask = feedback.current_subtask
    where = f"{subtask.index + 1}/{len(feedback.plan.subtasks)} {subtask.instruction!r}" if subtask.instruction else ""
    return f"{feedback.state} {where}".strip()


def run(args: argparse.Namespace) -> int:
    if not args.instruction.strip():
        print("wam-ros task: the instruction is empty", file=sys.stderr)
        return 2
    for name, value in ros_environment().items():
        os.environ.setdefault(name, value)
    from tqdm import tqdm

    from wam_ros.clients.task_commander import TaskCommander

    try:
        namespace = normalize_namespace(args.namespace)
    except ValueError as error:
        print(f"wam-ros task: {error}", file=sys.stderr)
        return 2
    commander = TaskCommander(namespace=namespace)
    try:
        if not commander.wait_until_ready(args.wait):
            print(f"wam-ros task: no task planner on {namespace}/wam/execute_task after {args.wait:g} s "
                  "(start it: wam-ros bringup robot:=<robot> task_planner.enabled:=true)", file=sys.stderr)
            return 2
        if not commander.execute_task(args.instruction, args.max_replans, args.timeout):
            print("wam-ros task: the planner refused the goal (is another task running?)", file=sys.stderr)
            return 2
        return _follow(commander, tqdm)
    finally:
        commander.destroy()


def _follow(commander, tqdm) -> int:
    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {postfix}")
    last = ""
    canceling = False
    try:
        while True:
            try:
                if commander.is_task_complete():
                    break
                feedback = commander.get_feedback()
                if feedback is not None:
                    bar.n = round(100 * feedback.progress, 1)
                    text = _describe(feedback)
                    if text != last:
                        bar.write(f"[{time.strftime('%H:%M:%S')}] {text}")
                        last = text
                    bar.set_postfix_str(feedback.state)
            except KeyboardInterrupt:
                if canceling:
                    raise
                canceling = True
                bar.write("canceling (the bridge goes to HOLD) ...")
                commander.cancel_task()
    finally:
        bar.close()
    result = commander.get_result()
    plan = [s.instruction for s in result.final_plan.subtasks] if result is not None else []
    print(f"task {commander.status_name()}: {result.message if result else ''}")
    if result is not None:
        print(f"subtasks completed: {result.subtasks_completed} of {len(plan)} (plan revision {result.final_plan.revision})")
    return 0 if result is not None and result.success else 1
