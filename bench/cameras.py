#!/usr/bin/env python3
"""Camera nodes at 640x480 @ 30 Hz: capture-to-publish latency, CPU per camera, sync error.

Two realsense_camera nodes replay synthetic colour + depth recordings through the real
librealsense pipeline: front with a depth subscriber (so it aligns depth with rs.align and
publishes it), wrist without one (colour only: the node skips the alignment); and one opencv_camera node plays a 640x480 MJPG video (a USB camera's usual format); all run
as separate processes, as bringup starts them. Measured over a fixed window:

- capture_to_publish_ms: ROS time at publish minus the header stamp, reported by each node on
  /diagnostics (the stamp is the device time mapped to ROS time for a RealSense, the arrival time
  for OpenCV; see docs/real_robot.md);
- receive_latency_ms: the stamp to this process receiving the frame's CameraInfo, which each
  node publishes after the image and the depth image (so it includes their transport);
- cpu_percent: CPU time of the node process over the window, in % of one core, and
  cpu_ms_per_frame: the same per published frame (less sensitive to a busy machine);
- sync_error_ms: spread of front/wrist pairs made by wam_ros.cameras.sync.ApproximateSync
  (tolerance half a frame period). The two recordings run free, like two cameras without a
  hardware sync cable: the error is then uniform over 0..16.7 ms at 30 Hz.

Reproduce: `.venv/bin/python bench/cameras.py [--quick]`; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rclpy  # noqa: E402 - rclpy before pyrealsense2 (see wam_ros.cameras.realsense.import_pyrealsense2)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from wam_ros.bringup import NodeSpec, ros_environment, write_params_file  # noqa: E402
from wam_ros.cameras.sync import ApproximateSync  # noqa: E402
from wam_ros.cameras.synthetic import SyntheticScene, record_synthetic_rgbd  # noqa: E402
from wam_ros.robot import package_root  # noqa: E402
from wam_ros.ros import qos  # noqa: E402
from wam_ros.ros.conversions import time_to_seconds  # noqa: E402
from wam_ros.bringup.supervisor import node_command  # noqa: E402

WIDTH, HEIGHT, RATE_HZ = 640, 480, 30
CAMERAS = ("front", "wrist", "side")


def write_video(path: Path, frames: int) -> None:
    """MJPG, the format most USB cameras deliver: a gradient with a moving square."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), RATE_HZ, (WIDTH, HEIGHT))
    gradient = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    gradient[..., 1] = np.arange(WIDTH) * 255 // (WIDTH - 1)
    gradient[..., 2] = (np.arange(HEIGHT) * 255 // (HEIGHT - 1))[:, None]
    for i in range(frames):
        frame = gradient.copy()
        x = 40 + (6 * i) % (WIDTH - 120)
        frame[180:260, x:x + 80] = (255, 255, 255)
        writer.write(frame)
    writer.release()


def robot_yaml(directory: Path, video: Path) -> Path:
    data = yaml.safe_load((package_root() / "config" / "robots" / "fr3_real.yaml").read_text())
    data["robot"]["urdf"] = str(package_root() / data["robot"]["urdf"])
    cameras = data["robot"]["cameras"]
    cameras.append({"name": "side", "source": "opencv", "device": str(video), "width": WIDTH, "height": HEIGHT,
                    "rate_hz": float(RATE_HZ), "frame_id": "side_camera_optical", "parent_frame": "fr3_link0"})
    path = directory / "bench_robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s window instead of 30 s (under two minutes in all)")
    args = parser.parse_args()
    window_s = 8.0 if args.quick else 30.0
    startup_margin_s = 12.0  # the recordings must outlast node start-up plus the window
    work = Path(tempfile.mkdtemp(prefix="wam_ros_bench_cameras_"))
    os.environ.setdefault("ROS_LOG_DIR", str(work / "ros_logs"))
    os.environ.update(ros_environment())
    os.environ["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 80)

    frames = int((window_s + startup_margin_s) * RATE_HZ)
    print(f"recording two synthetic RealSense streams ({frames} framesets each, {WIDTH}x{HEIGHT} @ {RATE_HZ} Hz) ...", flush=True)
    scenes = {"front": SyntheticScene(serial_number="900000000011"),
              "wrist": SyntheticScene(serial_number="900000000022", first_device_time_ms=123456.0, device_time_scale=1.00005)}
    threads = [threading.Thread(target=record_synthetic_rgbd, args=(work / f"{name}.db3", frames, scene)) for name, scene in scenes.items()]
    for thread in threads:
        thread.start()
    write_video(work / "side.avi", 90)
    for thread in threads:
        thread.join()
    robot = robot_yaml(work, work / "side.avi")

    rclpy.init()
    node = rclpy.create_node("bench_cameras")
    stamps: dict[str, list[float]] = {name: [] for name in CAMERAS}
    receive_ms: dict[str, list[float]] = {name: [] for name in CAMERAS}
    counts: dict[str, int] = {f"{name}.{kind}": 0 for name in CAMERAS for kind in ("image", "depth")}
    diagnostics: dict[str, dict[str, str]] = {}
    measuring = threading.Event()

    def on_info(name: str):
        def callback(msg: CameraInfo) -> None:
            now = node.get_clock().now().nanoseconds * 1e-9
            if measuring.is_set():
                stamp = time_to_seconds(msg.header.stamp)
                stamps[name].append(stamp)
                receive_ms[name].append(1e3 * (now - stamp))
        return callback

    def on_count(key: str):
        def callback(_: bytes) -> None:
            if measuring.is_set():
                counts[key] += 1
        return callback

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            diagnostics[status.name.split(": camera ")[-1]] = {v.key: v.value for v in status.values}

    for name in CAMERAS:
        node.create_subscription(CameraInfo, f"/wam/cameras/{name}/camera_info", on_info(name), qos.SENSORS)
        node.create_subscription(Image, f"/wam/cameras/{name}/image", on_count(f"{name}.image"), qos.SENSORS, raw=True)
        if name == "front":  # the wrist node sees no depth subscriber and skips the alignment
            node.create_subscription(Image, f"/wam/cameras/{name}/depth", on_count(f"{name}.depth"), qos.SENSORS, raw=True)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    executor = SingleThreadedExecutor()  # a MultiThreadedExecutor busy-waits and takes CPU from the nodes measured
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    processes: dict[str, subprocess.Popen] = {}
    logs = work / "logs"
    logs.mkdir()
    try:
        for name in CAMERAS:
            kind = "opencv_camera" if name == "side" else "realsense_camera"
            parameters = {"robot_config": str(robot), "camera": name, "diagnostics_period_s": 0.5}
            if kind == "realsense_camera":
                parameters.update(serial_number=scenes[name].serial_number, playback_file=str(work / f"{name}.db3"))
            spec = NodeSpec(name=f"{name}_camera", kind=kind, required=True, parameters=parameters)
            processes[name] = subprocess.Popen(node_command(spec, write_params_file(spec, work)), stdout=open(logs / f"{name}.log", "w"),
                                               stderr=subprocess.STDOUT, start_new_session=True)
        print("waiting for the three camera nodes ...", flush=True)
        deadline = time.monotonic() + startup_margin_s - 2.0
        measuring.set()  # discard what arrives before every stream flows
        while not all(len(stamps[name]) >= 5 for name in CAMERAS):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
                raise RuntimeError("camera nodes did not start streaming; logs in " + str(logs))
            time.sleep(0.1)
        measuring.clear()
        for values in (*stamps.values(), *receive_ms.values()):
            values.clear()
        counts.update({key: 0 for key in counts})
        cpu_start = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        print(f"measuring for {window_s:.0f} s ...", flush=True)
        start = time.monotonic()
        measuring.set()
        time.sleep(window_s)
        measuring.clear()
        elapsed = time.monotonic() - start
        cpu = {name: 100.0 * (cpu_seconds(p.pid) - cpu_start[name]) / elapsed for name, p in processes.items()}
        time.sleep(0.6)  # one more diagnostics round with the window's latencies
        final_diagnostics = {name: dict(diagnostics.get(name, {})) for name in CAMERAS}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        exit_codes = {}
        for name, process in processes.items():
            try:
                exit_codes[name] = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                exit_codes[name] = process.wait()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown()

    result: dict[str, float | int | str] = {"width_px": WIDTH, "height_px": HEIGHT, "rate_hz": RATE_HZ, "window_s": round(elapsed, 2)}
    for name in CAMERAS:
        d = final_diagnostics[name]
        rate = len(stamps[name]) / elapsed
        result.update({
            f"{name}_rate_hz": round(rate, 2),
            f"{name}_capture_to_publish_ms_p50": float(d.get("capture_to_publish_ms_p50", "nan")),
            f"{name}_capture_to_publish_ms_p99": float(d.get("capture_to_publish_ms_p99", "nan")),
            f"{name}_receive_latency_ms_p50": round(percentile(receive_ms[name], 50), 2),
            f"{name}_receive_latency_ms_p99": round(percentile(receive_ms[name], 99), 2),
            f"{name}_cpu_percent": round(cpu[name], 1),
            f"{name}_cpu_ms_per_frame": round(10.0 * cpu[name] / rate, 2) if rate else float("nan"),
            f"{name}_dropped_frames": int(d.get("dropped_frames", -1)),
            f"{name}_images_received": counts[f"{name}.image"],
            f"{name}_depth_received": counts[f"{name}.depth"],
            f"{name}_exit_code": exit_codes[name],
        })
        print(f"{name:5s} ({'opencv' if name == 'side' else 'realsense'}): {rate:5.1f} Hz, capture->publish p50 "
              f"{result[f'{name}_capture_to_publish_ms_p50']:.1f} ms p99 {result[f'{name}_capture_to_publish_ms_p99']:.1f} ms, "
              f"stamp->receive p50 {result[f'{name}_receive_latency_ms_p50']:.1f} ms p99 {result[f'{name}_receive_latency_ms_p99']:.1f} ms, "
              f"CPU {cpu[name]:.0f} % of a core ({result[f'{name}_cpu_ms_per_frame']:.1f} ms per frame), exit {exit_codes[name]}", flush=True)

    sync = ApproximateSync(["front", "wrist"], tolerance_s=0.5 / RATE_HZ)
    events = sorted([(s, "front") for s in stamps["front"]] + [(s, "wrist") for s in stamps["wrist"]])
    spreads = [1e3 * synced.spread_s for stamp, name in events for synced in sync.add(name, stamp, None)]
    result.update({
        "sync_error_ms_p50": round(percentile(spreads, 50), 2),
        "sync_error_ms_p99": round(percentile(spreads, 99), 2),
        "sync_error_ms_max": round(max(spreads), 2) if spreads else float("nan"),
        "sync_matched_sets": sync.stats.matched_sets,
        "sync_dropped_frames": sum(sync.stats.dropped.values()),
    })
    print(f"front/wrist sync (tolerance {500 / RATE_HZ:.1f} ms): {len(spreads)} pairs, spread p50 {result['sync_error_ms_p50']} ms "
          f"p99 {result['sync_error_ms_p99']} ms, {result['sync_dropped_frames']} frames without a partner", flush=True)
    print(json.dumps(result))
    return 0 if all(code == 0 for code in exit_codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
