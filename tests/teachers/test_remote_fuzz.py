"""Hostile frames against the remote-teacher protocol, both ways, over 127.0.0.1.

A few hundred malformed frames (random bytes, every non-numeric dtype, shapes that do not
match their data, nested and non-dict payloads, missing and extra keys, wrong batch lengths)
go to a real `rpd serve-teacher` process, which must answer each with one line and then serve
a valid request exactly as before. A hostile server sends the same kind of frames to the
client, which must raise one clean error each time. The RNG seed is fixed, so a failure
replays."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec
from rpd.teachers.remote import RemoteTeacher

SEED = 20240611
ENV = "PickCube-v1"
B, H, W, P, CHUNK, A = 2, 32, 32, 9, 4, 7
INSTRUCTION = "pick up the red cube and move it to the goal"
NON_NUMERIC_DTYPES = ["|O", "|O8", "<O8", "|V8", "|V0", "|S8", "<U2", ">U4", "<c8", "<c16",
                      "<M8[ns]", "<m8[s]", "i4,O", "O,O", "(2,)O", "<f16", "<g", "T", 5, None,
                      b"|O", [["a", "|O"]], {"a": 1}]
"""dtype fields a hostile peer may send (object, void, bytes, str, complex, dates, records,
long double, string dtypes, and values that are not dtype names at all)."""
POINTERS = bytes.fromhex("4141414141414141") * 64
"""Data for an object array: what would be dereferenced as PyObject pointers."""


def nd(data: bytes, dtype: Any, shape: Any) -> dict[bytes, Any]:
    """An ndarray on the wire, built by hand (so any dtype/shape/data may disagree)."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def good_request(rng: np.random.Generator, n: int = B) -> dict[str, Any]:
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    proprio = rng.normal(size=(n, P)).astype(np.float32)
    return {"images": nd(images.tobytes(), "|u1", list(images.shape)),
            "instructions": [INSTRUCTION] * n,
            "proprio": nd(proprio.tobytes(), "<f4", list(proprio.shape))}


def structured_frames(rng: np.random.Generator) -> list[Any]:
    """Malformed payloads (before msgpack packing) covering each class of hostile input."""
    ok = good_request(rng)
    frames: list[Any] = []
    for dtype in NON_NUMERIC_DTYPES:
        bad = nd(POINTERS[:B * P * 8], dtype, [B, P])
        frames += [{**ok, "proprio": bad}, {**ok, "images": nd(POINTERS, dtype, [B, 4, 4, 3])},
                   {**ok, "instructions": bad}, bad, {**ok, "extra": bad},
                   {**ok, "proprio": {"nested": [bad]}}]
    images = ok["images"]
    for shape in ([B, H, W, 3, 1], [B * 2, H, W, 3], [2**40, 2**40, 3, 3], [2**62, 2**62],
                  [-1, H, W, 3], [B, -H, -W, 3], [1] * 70, [], "shape", None, [B, H, W, "3"],
                  [B, H, W, 3.0], [True, H, W, 3], [2**64 - 1, 1, 1, 3]):
        frames.append({**ok, "images": nd(images[b"data"], "|u1", shape)})
    frames += [
        {**ok, "images": nd(images[b"data"][:-1], "|u1", [B, H, W, 3])},  # data too short
        {**ok, "images": nd(images[b"data"] + b"x", "|u1", [B, H, W, 3])},  # too long
        {**ok, "images": nd("not bytes", "|u1", [B, H, W, 3])},
        {**ok, "images": {b"__ndarray__": True, b"data": images[b"data"]}},  # no dtype/shape
        {**ok, "images": {b"__npgeneric__": True, b"data": 5, b"dtype": "|O"}},
        {**ok, "images": {b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}},
        {**ok, "images": {b"__npgeneric__": True, b"data": [1], b"dtype": "<f4"}},
        {**ok, "images": nd(b"\0" * (B * 16 * 16 * 3), "|u1", [B, 16, 16, 3])},  # wrong size
        {**ok, "images": nd(b"\0" * (B * H * W * 3 * 4), "<f4", [B, H, W, 3])},  # float images
        {**ok, "images": nd(b"\0" * (B * H * W * 4), "|u1", [B, H, W, 4])},  # RGBA
        {**ok, "images": nd(b"", "|u1", [0, H, W, 3]), "instructions": []},  # empty batch
        {**ok, "images": [[1, 2, 3]]}, {**ok, "images": "images"}, {**ok, "images": None},
        {**ok, "instructions": [INSTRUCTION]},  # wrong batch lengths
        {**ok, "instructions": [INSTRUCTION] * (B + 1)},
        {**ok, "instructions": [1, 2]}, {**ok, "instructions": INSTRUCTION},
        {**ok, "instructions": [b"bytes"] * B}, {**ok, "instructions": ["x" * 100_000] * B},
        {**ok, "proprio": nd(b"\0" * (B * 5 * 4), "<f4", [B, 5])},
        {**ok, "proprio": nd(b"\0" * ((B + 1) * P * 4), "<f4", [B + 1, P])},
        {**ok, "proprio": nd(b"\0" * (B * P), "|u1", [B, P])},  # not float
        {**ok, "proprio": [[0.0] * P] * B},
        {k: v for k, v in ok.items() if k != "images"},  # missing keys
        {k: v for k, v in ok.items() if k != "instructions"},
        {k: v for k, v in ok.items() if k != "proprio"},
        {**ok, "unexpected": 1}, {**ok, "actions": 1},  # extra keys
        {}, [], [ok], "a string", 42, None, 3.5, True, b"bytes", [[[[[]]]]],
        {b"images": ok["images"], b"instructions": ok["instructions"]},  # byte-string keys
        {"images": {"images": {"images": ok}}},
        msgpack.ExtType(5, b"hostile"), {**ok, "proprio": msgpack.ExtType(5, b"\0" * 4)},
    ]
    nested: Any = ok
    for _ in range(3000):  # deeper than any decoder's stack
        nested = [nested]
    frames.append(nested)
    return frames


def byte_frames(rng: np.random.Generator) -> list[bytes]:
    """Random bytes, and valid frames with bytes flipped or cut short."""
    frames = [rng.bytes(int(n)) for n in rng.integers(0, 2048, 120)]
    frames += [b"", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
               b"\xc6\xff\xff\xff\xff", b"\x91" * 5000, b"\x81\x91\x80\xc0",
               b"\xd6\xff\0\0\0\0", b"\x81\xa7proprio\xd6\xff\0\0\0\0"]  # timestamps
    valid = msgpack.packb(good_request(rng))
    for _ in range(80):
        frame = bytearray(valid)
        for i in rng.integers(0, 300, int(rng.integers(1, 8))):
            frame[int(i)] = int(rng.integers(0, 256))
        frames.append(bytes(frame))
    frames += [valid[:int(n)] for n in rng.integers(1, len(valid), 20)]
    return frames


def spec() -> TeacherSpec:
    return TeacherSpec(camera=CameraSpec("render", W, H), control_mode="pd_ee_delta_pose",
                       action_dim=A, chunk_size=CHUNK, proprio_dim=P, tasks={ENV: INSTRUCTION})


def valid_batch() -> TeacherBatch:
    rng = np.random.default_rng(7)
    return TeacherBatch(images=rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8),
                        instructions=[INSTRUCTION] * 3,
                        proprio=rng.normal(size=(3, P)).astype(np.float32))


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    from rpd.teachers.simple import TinyCNNTeacher

    return TinyCNNTeacher(spec(), {"seed": 5, "channels": [4, 8, 8], "hidden": 16},
                          {"q01": [-1.0] * A, "q99": [1.0] * A})


@pytest.fixture
def served(teacher: Teacher, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`rpd serve-teacher` on a free loopback port, in its own process (a crash is visible)."""
    ckpt = teacher.save(tmp_path / "teacher")
    proc = subprocess.Popen([sys.executable, "-m", "rpd.cli", "serve-teacher", str(ckpt),
                             "--host", "127.0.0.1", "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving teacher" in line, line
        yield proc, line.split(" at ")[1].split(";")[0]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def send_one(url: str, frame: bytes | str) -> Any:
    """Open a connection, send `frame`, return the reply (text, bytes, or the close code)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(url, open_timeout=20, close_timeout=5, max_size=None) as ws:
        ws.recv(timeout=20)  # metadata
        try:
            ws.send(frame)
            return ws.recv(timeout=60)
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None
        except OSError:  # the server cut a frame it will not read
            return None


@pytest.mark.timeout(120)
def test_the_server_survives_hostile_frames_and_then_serves_as_before(
        teacher: Teacher, served: tuple[subprocess.Popen, str]) -> None:
    proc, url = served
    expected = teacher.act_chunk(valid_batch())
    rng = np.random.default_rng(SEED)
    frames: list[bytes | str] = []
    for payload in structured_frames(rng):
        try:
            frames.append(msgpack.packb(payload))
        except (ValueError, TypeError):  # too deep for the packer: send it hand-nested
            frames.append(b"\x91" * 3000 + msgpack.packb(good_request(rng)))
    frames += byte_frames(rng)
    frames += ["a text frame", "\x1b[2J" * 100]
    frames.append(b"\0" * (64 << 20))  # beyond any batch the spec allows
    assert len(frames) > 300

    for i, frame in enumerate(frames):
        reply = send_one(url, frame)
        assert proc.poll() is None, f"the server died on frame {i}: {frame[:80]!r}"
        if isinstance(reply, str):  # refused: one printable line, no traceback
            assert reply.startswith("rpd serve-teacher: "), (i, reply)
            assert reply.isprintable() and len(reply) <= 400, (i, reply)
            assert "Traceback" not in reply
        elif isinstance(reply, bytes):  # a flipped byte may leave a valid request
            assert msgpack.unpackb(reply)["actions"][b"shape"] == [B, CHUNK, A], i
        else:
            assert reply == 1009, (i, reply)  # only a frame over the size limit is cut off

    remote = RemoteTeacher.from_server(url, retries=0, connect_timeout=20)
    np.testing.assert_array_equal(remote.act_chunk(valid_batch()), expected)
    remote.close()


class HostileServer:
    """A policy server on 127.0.0.1 that sends whatever frames the test sets."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.metadata: bytes | str = b""
        self.reply: Callable[[bytes], bytes | str] = lambda request: b""

        def handle(ws: Any) -> None:
            ws.send(self.metadata)
            for message in ws:
                ws.send(self.reply(message))

        self._server = serve(handle, "127.0.0.1", 0, compression=None, max_size=None)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=30)


def good_metadata() -> dict[str, Any]:
    return {"spec": spec().to_dict(), "fingerprint": "hostile-server",
            "action_stats": {"q01": [-1.0] * A, "q99": [1.0] * A}}


def hostile_metadata(rng: np.random.Generator) -> list[bytes | str]:
    meta = good_metadata()
    camera = meta["spec"]["camera"]
    payloads: list[Any] = []
    for dtype in NON_NUMERIC_DTYPES:
        bad = nd(POINTERS, dtype, [8, 8])
        payloads += [bad, {**meta, "fingerprint": bad}, {**meta, "action_stats": {"q01": bad}},
                     {**meta, "spec": {**meta["spec"], "action_dim": bad}},
                     {**meta, "spec": {**meta["spec"], "camera": {**camera, "width": bad}}}]
    payloads += [
        [], "metadata", 7, None, {}, {"spec": 1, "fingerprint": 2},
        {**meta, "spec": {**meta["spec"], "camera": {**camera, "width": 10**9}}},
        {**meta, "spec": {**meta["spec"], "camera": {**camera, "height": -4}}},
        {**meta, "spec": {**meta["spec"], "chunk_size": 10**12}},
        {**meta, "spec": {**meta["spec"], "tasks": {"x": nd(POINTERS, "|O", [8])}}},
        {**meta, "action_stats": {"q01": nd(POINTERS, "|O", [A])}},
        {**meta, "protocol_version": nd(b"", "|O", [0])},
        msgpack.ExtType(3, b"x"),
    ]
    frames: list[bytes | str] = [msgpack.packb(p) for p in payloads]
    frames += [rng.bytes(int(n)) for n in rng.integers(0, 512, 40)]
    frames += ["text instead of metadata", "\x1b[31mred\nTraceback (most recent call last)"]
    return frames


def hostile_replies(rng: np.random.Generator) -> list[bytes | str]:
    n = len(valid_batch())
    good = np.zeros((n, CHUNK, A), np.float32)
    payloads: list[Any] = []
    for dtype in NON_NUMERIC_DTYPES:
        payloads += [{"actions": nd(POINTERS[:n * CHUNK * A * 8], dtype, [n, CHUNK, A])},
                     {"actions": nd(POINTERS, dtype, [8, 8])}, nd(POINTERS, dtype, [8])]
    for shape in ([n, CHUNK, A + 1], [n + 1, CHUNK, A], [CHUNK, A], [2**40, 2**40, 2**40],
                  [-n, -CHUNK, A], [], "shape", [n, CHUNK, A, 1]):
        payloads.append({"actions": nd(good.tobytes(), "<f4", shape)})
    payloads += [
        {"actions": nd(good.tobytes()[:-4], "<f4", [n, CHUNK, A])},
        {"actions": nd(good.tobytes(), "|u1", [n, CHUNK, A * 4])},
        {"actions": nd(np.full(good.shape, np.nan, np.float32).tobytes(), "<f4", good.shape)},
        {"actions": good.tolist()}, {"actions": "actions"}, {"actions": None},
        {"action": nd(good.tobytes(), "<f4", good.shape)}, {}, [], 5, "reply", None,
        {b"actions": nd(good.tobytes(), "<f4", good.shape)}, msgpack.ExtType(9, b"x"),
    ]
    frames: list[bytes | str] = [msgpack.packb(p) for p in payloads]
    frames += [rng.bytes(int(n)) for n in rng.integers(0, 1024, 60)]
    frames += ["error", "Traceback (most recent call last):\n  File x\n\x1b[2JBoom",
               "x" * 100_000, b"\0" * (64 << 20)]
    return frames


def assert_one_clean_line(error: BaseException) -> None:
    message = str(error)
    assert isinstance(error, InputError), repr(error)
    assert "\n" not in message and message.isprintable() and len(message) < 1000, message


@pytest.mark.timeout(120)
def test_the_client_raises_one_clean_error_for_each_hostile_frame() -> None:
    rng = np.random.default_rng(SEED)
    server = HostileServer()
    fast = dict(retries=0, backoff=0.01, connect_timeout=20, timeout=60)
    try:
        metadata_frames = hostile_metadata(rng)
        for frame in metadata_frames:
            server.metadata = frame
            with pytest.raises(InputError) as err:
                RemoteTeacher.from_server(server.url, **fast).close()
            assert_one_clean_line(err.value)

        for stats in ([1, 2], {"q01": [1.0]}, {"q01": ["x"] * A}, {"q01": [[1.0]] * A}):
            server.metadata = msgpack.packb({**good_metadata(), "action_stats": stats})
            remote = RemoteTeacher.from_server(server.url, **fast)
            assert remote.action_stats == {}  # informational: a malformed one is dropped
            remote.close()

        server.metadata = msgpack.packb(good_metadata())
        reply_frames = hostile_replies(rng)
        for frame in reply_frames:
            server.reply = lambda request, frame=frame: frame
            remote = RemoteTeacher.from_server(server.url, **fast)
            with pytest.raises(InputError) as err:
                remote.act_chunk(valid_batch())
            assert_one_clean_line(err.value)
            remote.close()
        assert len(metadata_frames) + len(reply_frames) > 200

        good = np.arange(3 * CHUNK * A, dtype=np.float32).reshape(3, CHUNK, A)
        server.reply = lambda request: msgpack.packb(
            {"actions": nd(good.tobytes(), "<f4", list(good.shape))})
        remote = RemoteTeacher.from_server(server.url, **fast)
        np.testing.assert_array_equal(remote.act_chunk(valid_batch()), good)
        remote.close()
    finally:
        server.close()
