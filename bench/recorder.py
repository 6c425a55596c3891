#!/usr/bin/env python3
"""Recorder under load: two 640x480 rgb8 cameras at 30 Hz plus joint states at 250 Hz into one episode.

A publisher process (this script, ``--role pub``) sends the streams for the chosen duration and
counts what it published; the recorder node runs as its own process, as bringup starts it, with
the Fast DDS profile of config/dds. Reported: messages published vs. found in the bag (drops),
the recorder's own drop count and peak queue, bag size and write rate, the recorder's CPU time
as a share of one core, and how long closing the bag took. The bag is deleted afterwards.
Reproduce: `.venv/bin/python bench/recorder.py [--quick]`; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("front", "wrist")


def publish(duration_s: float, image_rate_hz: float, joint_rate_hz: float, width: int, height: int) -> None:
    """Publish the streams on a fixed schedule; print the counts as JSON when done."""
    import rclpy
    from rclpy.duration import Duration
    from sensor_msgs.msg import Image, JointState

    from wam_ros.robot import load_robot_config
    from wam_ros.ros.qos import SENSORS

    robot = load_robot_config("panda_sim")
    rclpy.init()
    node = rclpy.create_node("bench_recorder_publisher")
    images = {name: node.create_publisher(Image, robot.camera(name).image_topic, SENSORS) for name in CAMERAS}
    joints = node.create_publisher(JointState, "/joint_states", SENSORS)
    deadline = time.monotonic() + 30.0
    for publisher in (*images.values(), joints):
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, height * width * 3, dtype=np.uint8).tobytes() for _ in range(8)]
    image_msgs = {name: Image(height=height, width=width, encoding="rgb8", step=width * 3) for name in CAMERAS}
    state = JointState(name=list(robot.arm.joint_names) + list(robot.gripper.joint_names), position=[0.0] * 9)
    counts = {"images": 0, "joint_states": 0}
    start = time.monotonic()
    next_image, next_joint = start, start
    while True:
        now = time.monotonic()
        if now - start >= duration_s:
            break
        if now >= next_joint:
            state.header.stamp = node.get_clock().now().to_msg()
            state.position = [0.001 * counts["joint_states"]] * 9
            joints.publish(state)
            counts["joint_states"] += 1
            next_joint = start + counts["joint_states"] / joint_rate_hz
        if now >= next_image:
            frame = frames[(counts["images"] // 2) % len(frames)]
            for name, msg in image_msgs.items():
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.data = frame
                images[name].publish(msg)
                counts["images"] += 1
            next_image = start + (counts["images"] // 2) / image_rate_hz
        time.sleep(max(0.0, min(next_image, next_joint) - time.monotonic()))
    counts["duration_s"] = time.monotonic() - start
    counts["cpu_s"] = sum(os.times()[:2])
    for publisher in (*images.values(), joints):  # reliable: hand over everything before leaving
        publisher.wait_for_all_acked(Duration(seconds=10))
    print(json.dumps(counts), flush=True)
    node.destroy_node()
    rclpy.shutdown()


class Control:
    """An rclpy node in this process: the recorder's services and its /diagnostics values."""

    def __init__(self) -> None:
        import threading

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from wam_ros_interfaces.srv import StartEpisode, StopEpisode

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_recorder_control", context=self.context)
        self.values: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.start_client = self.node.create_client(StartEpisode, "/wam/recorder/start_episode")
        self.stop_client = self.node.create_client(StopEpisode, "/wam/recorder/stop_episode")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "wam_ros: recorder":
                self.values = {kv.key: kv.value for kv in status.values}

    def wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.05)

    def call(self, client, request, timeout_s: float = 60.0):
        if not client.wait_for_service(timeout_sec=30.0):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        self.wait(future.done, timeout_s, f"{client.srv_name} response")
        return future.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        # shutdown() returns while spin() may still be inside its wait: let the thread leave before
        # its node and context are destroyed under it (ros2/rclpy#968). Bounded: it is a daemon.
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def stop(process: subprocess.Popen | None, name: str, grace_s: float = 20.0) -> None:
    """SIGINT to the process group, then SIGKILL; every wait has a timeout, so cleanup cannot hang."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass
    print(f"{name} (pid {process.pid}) still running after SIGKILL; not waiting for it", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, float]:
    import psutil

    from wam_ros.bringup import NodeSpec, ros_environment, write_params_file
    from wam_ros.data.bags import BagReader, read_labels
    from wam_ros.robot import load_robot_config
    from wam_ros_interfaces.srv import StartEpisode, StopEpisode
    from wam_ros.bringup.supervisor import node_command

    robot = load_robot_config("panda_sim")
    workdir = Path(tempfile.mkdtemp(prefix="wam_ros_bench_recorder_", dir=args.dir))
    os.environ.update(ros_environment())
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    os.environ.setdefault("ROS_LOG_DIR", str(workdir / "logs"))
    spec = NodeSpec("recorder", "recorder", False, {"robot_config": str(robot.path), "episodes_dir": str(workdir / "episodes"),
                                                      "status_period_s": 0.2, "min_free_space_mb": 1024.0})
    recorder = subprocess.Popen(node_command(spec, write_params_file(spec, workdir)), stdout=open(workdir / "recorder.log", "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
    publisher = None
    control = Control()
    try:
        print(f"recorder pid {recorder.pid}; publisher: {len(CAMERAS)} x {args.width}x{args.height} rgb8 at {args.image_rate_hz:g} Hz "
              f"+ joint states at {args.joint_rate_hz:g} Hz for {args.duration:g} s", flush=True)
        episode = Path(control.call(control.start_client, StartEpisode.Request(task="bench", operator_name="bench")).episode_path)
        publisher = subprocess.Popen([sys.executable, __file__, "--role", "pub", "--duration", str(args.duration), "--width", str(args.width),
                                      "--height", str(args.height), "--image-rate-hz", str(args.image_rate_hz),
                                      "--joint-rate-hz", str(args.joint_rate_hz)], start_new_session=True,
                                     # A file, not a pipe: a pipe nobody reads until the end fills up with
                                     # middleware log lines, and the publisher then blocks writing them.
                                     stdout=open(workdir / "publisher.log", "w"))
        control.wait(lambda: control.values.get("topics_recorded") == "3", 30.0, "the recorder to subscribe to the 3 streams")
        process = psutil.Process(recorder.pid)
        cpu_start, wall_start = process.cpu_times(), time.monotonic()
        peak_queue_mb = 0.0
        deadline = time.monotonic() + args.duration + 60.0  # it waits up to 30 s for its messages to be acknowledged
        while publisher.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the publisher is still running {args.duration + 60.0:g} s after it started")
            time.sleep(1.0)
            peak_queue_mb = max(peak_queue_mb, float(control.values.get("queue_peak_mb", "0")))
            print(f"  {time.monotonic() - wall_start:5.1f} s: written {control.values.get('messages_written', '?')}, "
                  f"dropped {control.values.get('messages_dropped', '?')}, lost in transport {control.values.get('messages_lost', '?')}, "
                  f"queue {control.values.get('queue_mb', '?')} MiB", flush=True)
        published = json.loads((workdir / "publisher.log").read_text().strip().splitlines()[-1])
        expected = published["images"] + published["joint_states"]
        taken = lambda: int(control.values.get("messages_written", "0")) + int(control.values.get("messages_dropped", "0"))  # noqa: E731
        last, last_change = taken(), time.monotonic()
        while taken() < expected and time.monotonic() - last_change < 5.0:  # all in, or nothing more for 5 s
            time.sleep(0.2)
            if taken() != last:
                last, last_change = taken(), time.monotonic()
        peak_queue_mb = max(peak_queue_mb, float(control.values.get("queue_peak_mb", "0")))
        lost = int(control.values.get("messages_lost", "0"))
        stop_start = time.monotonic()
        stopped = control.call(control.stop_client, StopEpisode.Request(outcome=StopEpisode.Request.OUTCOME_SUCCESS))
        stop_s = time.monotonic() - stop_start
        cpu_end, wall_s = process.cpu_times(), time.monotonic() - wall_start
        user_s, system_s = cpu_end.user - cpu_start.user, cpu_end.system - cpu_start.system
        if not stopped.success:
            raise RuntimeError(f"stop_episode failed: {stopped.message}")
        with BagReader(episode) as reader:
            counts = {topic: count for topic, (_, count) in reader.topics.items()}
        images = sum(counts.get("/" + robot.camera(name).image_topic, 0) for name in CAMERAS)
        joint_states = counts.get("/joint_states", 0)
        labels = read_labels(episode)
        bag_mb = sum(f.stat().st_size for f in episode.iterdir()) / 2**20
        for name in CAMERAS:
            print(f"  /{robot.camera(name).image_topic}: {counts.get('/' + robot.camera(name).image_topic, 0)} of {published['images'] // len(CAMERAS)}")
        print(f"  /joint_states: {joint_states} of {published['joint_states']}", flush=True)
        return {
            "duration_s": round(published["duration_s"], 2),
            "images_published": published["images"],
            "images_recorded": images,
            "joint_states_published": published["joint_states"],
            "joint_states_recorded": joint_states,
            "drops": expected - images - joint_states,
            "recorder_dropped_or_lost": sum(labels.dropped_counts.values()) if labels else -1,
            "recorder_lost_in_transport": lost,
            "image_rate_hz_published": round(published["images"] / len(CAMERAS) / published["duration_s"], 2),
            "joint_state_rate_hz_published": round(published["joint_states"] / published["duration_s"], 1),
            "bag_mb": round(bag_mb, 1),
            "write_rate_mb_s": round(bag_mb / published["duration_s"], 1),
            "recorder_cpu_percent_of_one_core": round(100 * (user_s + system_s) / wall_s, 1),
            "recorder_cpu_system_percent_of_one_core": round(100 * system_s / wall_s, 1),
            "publisher_cpu_percent_of_one_core": round(100 * published["cpu_s"] / published["duration_s"], 1),
            "queue_peak_mb": peak_queue_mb,
            "stop_episode_s": round(stop_s, 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    finally:
        stop(publisher, "publisher")
        stop(recorder, "recorder")
        control.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s of streams instead of 60 s")
    parser.add_argument("--duration", type=float, default=None, help="seconds of publishing")
    parser.add_argument("--image-rate-hz", type=float, default=30.0)
    parser.add_argument("--joint-rate-hz", type=float, default=250.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--dir", default=None, help="where the bag is written (default: the system temp directory)")
    parser.add_argument("--role", choices=["pub"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.duration = args.duration or (15.0 if args.quick else 60.0)
    if args.role == "pub":
        publish(args.duration, args.image_rate_hz, args.joint_rate_hz, args.width, args.height)
        return 0
    results = run(args)
    print(f"published {results['images_published']} images + {results['joint_states_published']} joint states, "
          f"recorded {results['images_recorded']} + {results['joint_states_recorded']}: {results['drops']} drops; "
          f"{results['bag_mb']} MiB at {results['write_rate_mb_s']} MiB/s; recorder CPU {results['recorder_cpu_percent_of_one_core']} % "
          f"of one core (load average {results['load_average_1min']})", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
