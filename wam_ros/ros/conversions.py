"""Message <-> numpy conversions without cv_bridge (the PyPI cv-bridge is the ROS 1 package)."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1)}


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, C) or (H, W) array; copies so the result owns its memory."""
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.step < msg.width * channels * itemsize:
        raise ValueError(f"image step {msg.step} is smaller than width * channels * itemsize")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < msg.step * msg.height:
        raise ValueError(f"image data has {buffer.size} bytes, expected {msg.step * msg.height}")
    rows = buffer[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * channels * itemsize]
    array = rows.copy().view(dtype).reshape(msg.height, msg.width, channels)
    if msg.is_bigendian and itemsize > 1:
        array = array.byteswap()
    return array[:, :, 0] if channels == 1 else array


def numpy_to_image(array: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = "") -> Image:
    """(H, W, C) or (H, W) array -> sensor_msgs/Image with the given encoding."""
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}")
    dtype, channels = _ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ValueError(f"{encoding} needs shape (H, W, {channels}), got {array.shape}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * array.dtype.itemsize
    msg.data = array.tobytes()
    return msg


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_time(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
