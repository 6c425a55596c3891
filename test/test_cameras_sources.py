"""Camera sources without ROS: the real librealsense pipeline on a recorded file, OpenCV on a
video file, rate pacing, stream health and the capture loop's recovery."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from wam_ros.cameras.capture import CaptureLoop
from wam_ros.cameras.health import Level, StreamHealth
from wam_ros.cameras.opencv_source import OpenCVCamera, OpenCVSettings, RatePacer
from wam_ros.cameras.realsense import RealSenseCamera, RealSenseSettings
from wam_ros.cameras.synthetic import SyntheticScene, expected_aligned_box, record_synthetic_rgbd, synthetic_color
from wam_ros.cameras.types import CameraError, CameraFrame, DeviceNotFoundError, FrameTimeoutError, Intrinsics

FRAMES = 24


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, SyntheticScene]:
    path = tmp_path_factory.mktemp("realsense") / "synthetic.db3"
    scene = record_synthetic_rgbd(path, FRAMES)
    return path, scene


def write_video(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: float = 30.0) -> None:
    """Lossless FFV1 video; frame i is uniform with B = 10 * i (BGR order on disk)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[..., 0] = 10 * i  # blue
        frame[..., 2] = 200  # red
        writer.write(frame)
    writer.release()


def test_realsense_playback_through_the_real_pipeline(recording):
    path, scene = recording
    camera = RealSenseCamera(RealSenseSettings(serial_number=scene.serial_number, playback_file=str(path), frame_timeout_s=2.0))
    camera.open()
    try:
        assert camera.device_info.serial_number == scene.serial_number
        assert camera.intrinsics == Intrinsics(640, 480, 615.0, 615.0, 322.0, 238.0)  # colour's: depth is aligned to it
        box = expected_aligned_box(scene)
        frames = []
        while True:
            try:
                frames.append(camera.read())
            except FrameTimeoutError as error:
                assert "no frames for 2.00 s" in str(error)  # long: a starved host stalls playback
                break
        # Real-time playback: a busy machine skips stale framesets (the newest wins), never
        # repeats or reorders them, and always reaches the end of the file.
        assert len(frames) >= 5
        numbers = [f.frame_number for f in frames]
        assert numbers == sorted(set(numbers)) and numbers[-1] >= FRAMES - 3
        for frame in frames:
            assert frame.color_rgb.shape == (480, 640, 3) and frame.color_rgb.dtype == np.uint8
            np.testing.assert_array_equal(frame.color_rgb, synthetic_color(frame.frame_number, 640, 480))
            assert frame.device_time_s == pytest.approx(scene.device_times_ms[frame.frame_number] / 1000.0)
            depth = frame.depth_mm
            assert depth.dtype == np.uint16 and depth.shape == (480, 640)
            near = np.argwhere(depth == scene.box_mm)
            (r0, c0), (r1, c1) = near.min(0), near.max(0)
            # rs.align moved the rectangle where the intrinsics and extrinsic put it (one pixel of rounding).
            assert np.abs(np.array([r0, c0, r1, c1]) - np.array(box)).max() <= 1
            assert np.all(depth[r0 + 2:r1 - 1, c0 + 2:c1 - 1] == scene.box_mm)
            assert depth[240, 600] == scene.plane_mm and depth[20, 320] == scene.plane_mm
    finally:
        camera.close()
        camera.close()  # idempotent
    assert not camera.is_open


def test_realsense_colour_only_skips_alignment(recording):
    path, scene = recording
    camera = RealSenseCamera(RealSenseSettings(playback_file=str(path), frame_timeout_s=2.0))
    camera.align_depth = False
    camera.open()
    try:
        frames = [camera.read() for _ in range(5)]
    finally:
        camera.close()
    for frame in frames:
        assert frame.depth_mm is None
        np.testing.assert_array_equal(frame.color_rgb, synthetic_color(frame.frame_number, 640, 480))


def test_realsense_errors_are_clear(recording, tmp_path):
    path, scene = recording
    with pytest.raises(DeviceNotFoundError, match="holds serial 900000000001, not 42"):
        RealSenseCamera(RealSenseSettings(serial_number="42", playback_file=str(path))).open()
    with pytest.raises(DeviceNotFoundError, match="file not found"):
        RealSenseCamera(RealSenseSettings(playback_file=str(tmp_path / "missing.db3"))).open()
    with pytest.raises(CameraError, match="cannot start 1280x720 @ 30 Hz rgb8"):
        RealSenseCamera(RealSenseSettings(width=1280, height=720, playback_file=str(path))).open()
    with pytest.raises(CameraError, match="whole number of frames per second"):
        RealSenseCamera(RealSenseSettings(rate_hz=29.5))
    with pytest.raises(DeviceNotFoundError, match="no RealSense with serial 123 is connected"):
        RealSenseCamera(RealSenseSettings(serial_number="123")).open()
    with pytest.raises(DeviceNotFoundError, match="no RealSense device is connected"):  # machines without cameras
        RealSenseCamera(RealSenseSettings()).open()
    with pytest.raises(CameraError, match="before open"):
        RealSenseCamera(RealSenseSettings()).read()


def test_opencv_file_plays_at_the_configured_rate_and_size(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, 12)
    camera = OpenCVCamera(OpenCVSettings(device=str(video), width=160, height=120, rate_hz=20.0, loop=False))
    camera.open()
    assert camera.native_size == (320, 240) and camera.source_rate_hz == pytest.approx(30.0)
    frames, times = [], []
    with pytest.raises(FrameTimeoutError, match="end of file"):
        while True:
            frames.append(camera.read())
            times.append(time.monotonic())
    camera.close()
    assert [f.frame_number for f in frames] == list(range(12))
    for i, frame in enumerate(frames):
        assert frame.color_rgb.shape == (120, 160, 3)
        assert tuple(frame.color_rgb[60, 80]) == (200, 0, 10 * i)  # RGB now
    assert np.median(np.diff(times)) == pytest.approx(0.05, abs=0.01)  # 20 Hz, not the file's 30 Hz


def test_opencv_file_loops(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, 3)
    camera = OpenCVCamera(OpenCVSettings(device=str(video), width=320, height=240, rate_hz=200.0))
    camera.open()
    blues = [camera.read().color_rgb[0, 0, 2] for _ in range(7)]
    camera.close()
    assert blues == [0, 10, 20, 0, 10, 20, 0]


def test_opencv_errors_are_clear(tmp_path):
    with pytest.raises(DeviceNotFoundError, match="file not found"):
        OpenCVCamera(OpenCVSettings(device=str(tmp_path / "none.mp4"), width=64, height=48, rate_hz=10.0)).open()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(CameraError, match="garbage.mp4"):
        OpenCVCamera(OpenCVSettings(device=str(garbage), width=64, height=48, rate_hz=10.0)).open()
    with pytest.raises(DeviceNotFoundError, match="USB camera 63: cannot open"):
        OpenCVCamera(OpenCVSettings(device="63", width=64, height=48, rate_hz=10.0)).open()
    with pytest.raises(ValueError, match="positive"):
        OpenCVCamera(OpenCVSettings(device="0", width=0, height=48, rate_hz=10.0))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_pacer_uses_absolute_deadlines_and_skips_when_late():
    clock = FakeClock()
    pacer = RatePacer(10.0, clock=clock, sleep=clock.sleep)
    deadlines = [pacer.wait() for _ in range(3)]
    assert deadlines == pytest.approx([0.0, 0.1, 0.2])
    clock.now += 0.35  # the caller stalled for three and a half periods
    assert pacer.wait() == pytest.approx(0.5) and pacer.skipped == 2
    assert pacer.wait() == pytest.approx(0.6)


def test_rate_pacer_decimates_a_faster_source_and_keeps_an_equal_one():
    pacer = RatePacer(10.0)
    arrivals = np.arange(0, 2.0, 1 / 30) + np.random.default_rng(1).uniform(0, 0.004, 60)
    used = [t for t in arrivals if pacer.due(t)]
    assert len(used) == 20 and np.allclose(np.diff(used), 0.1, atol=0.01)
    pacer = RatePacer(30.0)
    assert all(pacer.due(t) for t in arrivals)


def test_intrinsics_override():
    native = Intrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
    assert native.with_override(()) is native
    assert native.with_override((1.0, 2.0, 3.0, 4.0)).k == [1.0, 0.0, 3.0, 0.0, 2.0, 4.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="fx, fy, cx, cy"):
        native.with_override((1.0, 2.0))


def test_stream_health_levels():
    health = StreamHealth("cam", expected_rate_hz=30.0, rate_window_s=1.0)
    health.connected_now(0.0)
    for i in range(60):
        health.frame(i / 30, frame_number=i)
    report = health.report(2.0)
    assert report.level == Level.OK and report.values["rate_hz"] == "30.00"
    health.frame(2.1, frame_number=70)  # 70 - 59 - 1 frames never arrived
    assert health.dropped == 10
    health.lost(3.0, "no frames for 1.00 s")
    report = health.report(3.5)
    assert report.level == Level.ERROR and "no frames for 1.4 s" in report.message  # since the last frame at 2.1 s
    health.connected_now(4.0)
    for i in range(10):
        health.frame(4.0 + i / 10)
    report = health.report(5.5)
    assert report.level == Level.WARN and "below the configured 30.0 Hz" in report.message
    assert report.values["reconnects"] == "1" and report.values["last_outage_s"] == "1.90"


class FlakyCamera:
    """Delivers ``burst`` frames, then fails ``outages`` times before opening again."""

    def __init__(self, burst: int, failed_opens: int) -> None:
        self.burst, self.failed_opens = burst, failed_opens
        self.is_open = False
        self.opens = self.reads = 0

    def open(self) -> None:
        self.opens += 1
        if 1 < self.opens <= 1 + self.failed_opens:
            raise DeviceNotFoundError("unplugged")
        self.is_open = True

    def read(self) -> CameraFrame:
        self.reads += 1
        if self.reads == self.burst + 1:
            raise FrameTimeoutError("no frames for 0.10 s")
        time.sleep(0.002)
        return CameraFrame(color_rgb=np.zeros((2, 2, 3), np.uint8), frame_number=self.reads, received_monotonic_s=time.monotonic())

    def close(self) -> None:
        self.is_open = False


def test_capture_loop_recovers_after_an_outage():
    camera = FlakyCamera(burst=5, failed_opens=2)
    camera.open()
    health = StreamHealth("flaky", 500.0)
    received, logs = [], []
    enough = threading.Event()

    def on_frame(frame: CameraFrame) -> None:
        received.append(frame.frame_number)
        if len(received) == 10:
            enough.set()

    loop = CaptureLoop(camera, on_frame, health, reconnect_interval_s=0.01, log=lambda level, message: logs.append((level, message)))
    loop.start()
    assert enough.wait(5.0)
    loop.stop()
    assert not loop.running
    assert received[:5] == [1, 2, 3, 4, 5] and received[5:10] == [7, 8, 9, 10, 11]
    assert camera.opens == 4 and health.reconnects == 1 and health.connected
    assert [level for level, _ in logs] == ["error", "info"] and "streaming again" in logs[1][1]


def test_camera_check_cli_measures_configured_cameras(tmp_path, capsys):
    import yaml

    from wam_ros.cli import main as wam_ros
    from wam_ros.robot import package_root

    video = tmp_path / "side.avi"
    write_video(video, 10, fps=30.0)
    data = yaml.safe_load((package_root() / "config" / "robots" / "fr3_real.yaml").read_text())
    data["robot"]["urdf"] = str(package_root() / data["robot"]["urdf"])
    side = {"name": "side", "source": "opencv", "device": str(video), "width": 160, "height": 120, "rate_hz": 30.0, "frame_id": "side_optical"}
    data["robot"]["cameras"] = [side]
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(data))
    data["robot"]["cameras"] = [side, {**side, "name": "gone", "device": str(tmp_path / "gone.avi")}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    assert wam_ros(["cameras", "check", "--robot", str(tmp_path / "ok.yaml"), "--seconds", "0.5"]) == 0
    assert wam_ros(["cameras", "check", "--robot", str(tmp_path / "bad.yaml"), "--seconds", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "[ok] side" in out and "Hz of 30" in out
    assert f"[FAIL] gone: video file {tmp_path / 'gone.avi'}: file not found" in out
    assert wam_ros(["cameras", "list"]) == 0 and "RealSense devices:" in capsys.readouterr().out
