#!/usr/bin/env python3
"""Image transport between two processes: 640x480 rgb8 at 30 Hz, with and without our Fast DDS profile.

Measures publish-to-receive latency (header stamp vs receive time, same host clock) and the
share of frames delivered. Reproduce: `.venv/bin/python bench/transport.py [--quick]`.
The last line is one JSON object of named numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "dds" / "fastdds_localhost.xml"


def publish(rate_hz: float, duration_s: float, width: int, height: int) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from wam_ros.ros.qos import SENSORS

    rclpy.init()
    node = rclpy.create_node("bench_image_publisher")
    publisher = node.create_publisher(Image, "/bench/image", SENSORS)
    deadline = time.monotonic() + 20.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # let the subscriber finish matching before the first frame counts
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    payload = np.random.default_rng(0).integers(0, 255, height * width * 3, dtype=np.uint8).tobytes()
    msg.data = payload
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < duration_s:
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(sent)
        publisher.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent / rate_hz - time.monotonic()))
    time.sleep(1.0)  # let the last frames arrive
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def subscribe(duration_s: float) -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from wam_ros.ros.qos import SENSORS

    rclpy.init()
    node = rclpy.create_node("bench_image_subscriber")
    latencies: list[float] = []
    received: set[str] = set()

    def on_image(msg: Image) -> None:
        now = node.get_clock().now().nanoseconds
        latencies.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
        received.add(msg.header.frame_id)

    node.create_subscription(Image, "/bench/image", on_image, SENSORS)
    end = time.monotonic() + duration_s
    try:
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    print(json.dumps({"latencies_ms": latencies, "received": len(received)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_pair(use_profile: bool, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(150 + os.getpid() % 50)}
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if use_profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    me = [sys.executable, __file__]
    sub = subprocess.Popen(me + ["--role", "sub", "--duration", str(args.duration + 25)], stdout=subprocess.PIPE, text=True, env=env)
    pub = subprocess.Popen(
        me + ["--role", "pub", "--duration", str(args.duration), "--rate", str(args.rate), "--width", str(args.width), "--height", str(args.height)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        sent = json.loads(pub.communicate(timeout=args.duration + 40)[0].strip().splitlines()[-1])["sent"]
        sub.terminate()
        result = json.loads(sub.communicate(timeout=20)[0].strip().splitlines()[-1])
    finally:
        for process in (pub, sub):
            if process.poll() is None:
                process.kill()
                process.wait()
    latencies = np.asarray(result["latencies_ms"]) if result["latencies_ms"] else np.asarray([np.nan])
    return {
        "latency_ms_p50": float(np.median(latencies)),
        "latency_ms_p99": float(np.percentile(latencies, 99)),
        "delivered_ratio": result["received"] / max(sent, 1),
        "sent": sent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s per configuration instead of 60 s")
    parser.add_argument("--duration", type=float, default=None, help="seconds of publishing per configuration")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--role", choices=["pub", "sub"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.duration = args.duration or (10.0 if args.quick else 60.0)
    if args.role == "pub":
        publish(args.rate, args.duration, args.width, args.height)
        return 0
    if args.role == "sub":
        subscribe(args.duration)
        return 0
    results = {}
    for name, use_profile in (("profile", True), ("default", False)):
        print(f"{args.width}x{args.height} rgb8 at {args.rate:g} Hz for {args.duration:g} s, {name} Fast DDS settings ...", flush=True)
        stats = run_pair(use_profile, args)
        print(f"  median {stats['latency_ms_p50']:.2f} ms, p99 {stats['latency_ms_p99']:.2f} ms, delivered {stats['delivered_ratio']:.3f} of {stats['sent']}", flush=True)
        results.update({f"{name}_{k}": v for k, v in stats.items()})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
