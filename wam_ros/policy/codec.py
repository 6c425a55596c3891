"""msgpack with numpy arrays, framed as openpi's policy servers and clients frame them.

An array travels as a map ``{b"__ndarray__": True, b"data": <bytes>, b"dtype": "<f4", b"shape": [...]}``
and a numpy scalar as ``{b"__npgeneric__": True, b"data": <value>, b"dtype": "<i8"}`` (byte-string
keys, as openpi-client writes and reads them). Object, void and complex dtypes are refused both
ways: they cannot cross languages, and an object array would need pickle. Decoding checks that
the data matches dtype and shape, so a malformed message is a :class:`CodecError` naming the
problem, never a numpy crash deep in a model.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

REFUSED_DTYPE_KINDS = "OVc"  # object, void (structured), complex


class CodecError(ValueError):
    """A value that cannot be encoded, or bytes that are not a valid message."""


def _encode(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in REFUSED_DTYPE_KINDS:
        raise CodecError(f"dtype {value.dtype} cannot be sent (object, void and complex arrays are refused)")
    if isinstance(value, np.ndarray):
        return {b"__ndarray__": True, b"data": value.tobytes(), b"dtype": value.dtype.str, b"shape": list(value.shape)}
    if isinstance(value, np.generic):
        return {b"__npgeneric__": True, b"data": value.item(), b"dtype": value.dtype.str}
    raise CodecError(f"cannot encode a {type(value).__name__}")


def _field(mapping: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in mapping:
            return mapping[key]
    raise CodecError(f"array map without {name!r}")


def _dtype(text: Any) -> np.dtype:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError) as error:
        raise CodecError(f"unknown dtype {text!r}: {error}") from None
    if dtype.kind in REFUSED_DTYPE_KINDS:
        raise CodecError(f"dtype {dtype} is refused (object, void and complex arrays cannot be received)")
    return dtype


def _decode(mapping: dict) -> Any:
    if b"__ndarray__" in mapping or "__ndarray__" in mapping:
        dtype = _dtype(_field(mapping, "dtype"))
        data, shape = _field(mapping, "data"), _field(mapping, "shape")
        if not isinstance(data, bytes):
            raise CodecError(f"array data must be bytes, got {type(data).__name__}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CodecError(f"array shape must be a list of non-negative integers, got {shape!r}")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise CodecError(f"array of shape {list(shape)} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in mapping or "__npgeneric__" in mapping:
        dtype = _dtype(_field(mapping, "dtype"))
        try:
            return dtype.type(_field(mapping, "data"))
        except (TypeError, ValueError, OverflowError) as error:
            raise CodecError(f"scalar of dtype {dtype}: {error}") from None
    return mapping


def pack(value: Any) -> bytes:
    """One message: dicts, lists, str, bytes, numbers, numpy arrays and scalars."""
    try:
        return msgpack.packb(value, default=_encode, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        if isinstance(error, CodecError):
            raise
        raise CodecError(str(error)) from None


def unpack(data: bytes) -> Any:
    """The value of one message; arrays come back as read-only numpy arrays."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except CodecError:
        raise
    except Exception as error:  # noqa: BLE001 - msgpack raises many kinds for malformed input
        raise CodecError(f"not a msgpack message: {type(error).__name__}: {error}") from None
