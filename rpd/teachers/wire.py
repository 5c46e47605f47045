"""The frames of the remote-teacher protocol: openpi's msgpack-numpy format, decoded strictly.

An array travels as the map {"__ndarray__": True, "data": raw bytes, "dtype": numpy dtype
str, "shape": [...]} (byte-string keys), exactly as `openpi_client.msgpack_numpy` writes it.
openpi's decoder builds whatever dtype the sender names, an object array included, whose
"data" a later conversion dereferences as pointers: one frame can crash the process. Both the
server and the client decode here instead: an array is built only when its dtype is a plain
number (bool, int, uint, float of 1-8 bytes, any byte order) and its data are exactly as many
bytes as its shape needs; anything else raises `WireError` before any array exists.
`expect_array` then checks the dtype and shape a field must have.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgpack
import numpy as np

NUMERIC_DTYPE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248])")
"""The dtype strings an array may name on the wire: nothing else reaches `np.dtype`."""

MAX_NDIM = 8
MAX_CONTAINERS = 100_000
"""Lists and maps one frame may hold: each empty one is a byte on the wire but a Python object
of ~60 bytes in memory, so their number, not the frame size, bounds the memory it takes."""
MAX_ITEMS = 65_536
"""Elements of one list or map (a batch's instructions are one list)."""


class WireError(ValueError):
    """A frame that is not a well-formed protocol message; the message says what is wrong."""


def packb(obj: Any) -> bytes:
    """Encode `obj` as openpi's `msgpack_numpy.packb` does (numeric arrays only)."""
    return msgpack.packb(obj, default=_pack_array)


def _pack_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and not NUMERIC_DTYPE.fullmatch(obj.dtype.str):
        raise TypeError(f"cannot send a {obj.dtype} array: numbers only")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(),
                b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def unpackb(frame: bytes) -> Any:
    """Decode one frame; numeric arrays become read-only numpy arrays.

    Raises:
        WireError: not msgpack, an extension type, too many or too deeply nested containers,
            or an array whose dtype is not a plain number or whose data do not match its
            shape.
    """
    containers = 0

    def count(obj: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > MAX_CONTAINERS:
            raise WireError(f"more than {MAX_CONTAINERS} lists and maps")
        return obj

    def hook(obj: dict[Any, Any]) -> Any:
        count(obj)
        if b"__ndarray__" in obj:
            return _array(obj)
        if b"__npgeneric__" in obj:
            return _scalar(obj)
        return obj

    try:
        return msgpack.unpackb(frame, object_hook=hook, list_hook=count, ext_hook=_no_ext,
                               timestamp=0, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS)
    except WireError:
        raise
    except Exception as e:  # msgpack's own: ExtraData, FormatError, StackError, ValueError
        raise WireError(f"not a msgpack frame ({type(e).__name__})") from None


def _no_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not part of the protocol")


def _dtype(name: Any) -> np.dtype:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if not isinstance(name, str) or not NUMERIC_DTYPE.fullmatch(name):
        raise WireError(f"array dtype {str(name)[:40]!r} is not a plain number type "
                        "(bool, int, uint or float)")
    return np.dtype(name)


def _array(obj: dict[Any, Any]) -> np.ndarray:
    if set(obj) != {b"__ndarray__", b"data", b"dtype", b"shape"}:
        raise WireError("an array needs exactly the keys __ndarray__, data, dtype, shape")
    dtype, data, shape = _dtype(obj[b"dtype"]), obj[b"data"], obj[b"shape"]
    if not isinstance(data, bytes):
        raise WireError(f"array data is a {type(data).__name__}, not bytes")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
            type(d) is int and d >= 0 for d in shape):
        raise WireError(f"array shape {str(shape)[:80]} is not a list of at most {MAX_NDIM} "
                        "whole numbers >= 0")
    if math.prod(shape) * dtype.itemsize != len(data):
        raise WireError(f"array of shape {shape} and dtype {dtype.str} needs "
                        f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype).reshape(shape)


def _scalar(obj: dict[Any, Any]) -> np.generic:
    if set(obj) != {b"__npgeneric__", b"data", b"dtype"}:
        raise WireError("a scalar needs exactly the keys __npgeneric__, data, dtype")
    dtype, data = _dtype(obj[b"dtype"]), obj[b"data"]
    if type(data) not in (bool, int, float):
        raise WireError(f"scalar data is a {type(data).__name__}, not a number")
    try:
        return dtype.type(data)
    except (OverflowError, ValueError, TypeError):
        raise WireError(f"scalar {data!r} does not fit dtype {dtype.str}") from None


def expect_array(value: Any, name: str, dtypes: tuple[type, ...],
                 shape: tuple[int | None, ...]) -> np.ndarray:
    """`value` if it is an array of one of `dtypes` and of `shape` (None: any size there).

    Raises:
        WireError: naming `name`, the dtype and shape it needs and what it got.
    """
    need = (f"{name} must be a {'/'.join(np.dtype(d).name for d in dtypes)} array "
            f"[{', '.join('*' if d is None else str(d) for d in shape)}]")
    if not isinstance(value, np.ndarray):
        raise WireError(f"{need}, got a {type(value).__name__}")
    if value.dtype.type not in dtypes or value.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(value.shape, shape, strict=True)):
        raise WireError(f"{need}, got {value.dtype.name} {list(value.shape)}")
    return value


def one_line(text: str, limit: int = 300) -> str:
    """`text` as one printable line of at most `limit` characters (for messages that quote
    what a peer sent)."""
    flat = "".join(c if c.isprintable() else " " for c in " ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
