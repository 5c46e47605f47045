"""The `remote` teacher and `rpd serve-teacher` / `rpd connect-teacher`, over real sockets on
127.0.0.1: the interface contract, served == local actions, interoperability with openpi's
client, bad metadata, timeouts, a server killed mid-run, and a cache labelled over loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from openpi_client import msgpack_numpy

from rpd.cli import main
from rpd.data.schema import TEACHER_JSON, TEACHER_WEIGHTS
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, load_teacher, teacher_kinds
from rpd.teachers.remote import RemoteTeacher, RemoteTeacherError, TeacherServer

ENV = "PickCube-v1"
STATS = {"q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0]}
FAST = dict(retries=2, backoff=0.05, connect_timeout=5.0)  # give up after 0.15 s of waiting


def local_teacher(seed: int = 3) -> Teacher:
    from rpd.teachers.simple import TinyCNNTeacher

    spec = TeacherSpec(camera=CameraSpec("render", 64, 64), control_mode="pd_ee_delta_pose",
                       action_dim=7, chunk_size=4, proprio_dim=9,
                       tasks={ENV: "pick up the red cube and move it to the goal"})
    return TinyCNNTeacher(spec, {"seed": seed, "channels": [8, 16, 16], "hidden": 64}, STATS)


def batch(n: int = 3, seed: int = 0, proprio_dim: int = 9) -> TeacherBatch:
    rng = np.random.default_rng(seed)
    return TeacherBatch(images=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
                        instructions=["pick up the red cube and move it to the goal"] * n,
                        proprio=rng.normal(size=(n, proprio_dim)).astype(np.float32))


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return local_teacher()


@pytest.fixture(scope="module")
def server(teacher: Teacher) -> Iterator[TeacherServer]:
    with TeacherServer(teacher, "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture(scope="module")
def remote_dir(server: TeacherServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rpd.teachers.remote import write_remote_teacher

    out = tmp_path_factory.mktemp("remote") / "teacher"
    write_remote_teacher(server.url, out, **FAST)
    return out


class ForeignServer:
    """A policy server written the way a user would put their own VLA behind openpi's
    protocol: websockets + openpi_client.msgpack_numpy, `reply(obs)` answering requests."""

    def __init__(self, metadata: Any, reply: Callable[[dict], Any]) -> None:
        from websockets.sync.server import serve

        def handle(ws: Any) -> None:
            ws.send(msgpack_numpy.packb(metadata))
            for message in ws:
                out = reply(msgpack_numpy.unpackb(message))
                if out is not None:
                    ws.send(msgpack_numpy.packb(out))

        self._server = serve(handle, "127.0.0.1", 0, compression=None, max_size=None)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> ForeignServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- contract ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_remote_teacher_meets_the_interface_and_acts_like_the_served_one(
        teacher: Teacher, remote_dir: Path, tmp_path: Path) -> None:
    assert "remote" in teacher_kinds()
    assert not (remote_dir / TEACHER_WEIGHTS).exists()
    meta = json.loads((remote_dir / TEACHER_JSON).read_text())
    assert meta["kind"] == "remote" and meta["config"]["url"].startswith("ws://127.0.0.1:")
    remote = load_teacher(remote_dir)
    assert isinstance(remote, RemoteTeacher) and remote.kind == "remote"
    assert remote.spec == teacher.spec and remote.action_stats == teacher.action_stats
    assert remote.fingerprint == teacher.fingerprint  # labels of the served teacher stay valid
    assert remote.config["served_kind"] == "cnn-tiny"

    chunks = remote.act_chunk(batch())
    assert chunks.shape == (3, 4, 7) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks, teacher.act_chunk(batch()))  # bit-identical
    np.testing.assert_array_equal(remote.act(batch()), chunks[:, 0])
    np.testing.assert_array_equal(remote.act_chunk(batch()), chunks)
    assert not np.allclose(remote.act(batch(seed=1)), chunks[:, 0])  # depends on its input
    one = remote.act_chunk(batch(n=1, seed=5))
    np.testing.assert_array_equal(one, teacher.act_chunk(batch(n=1, seed=5)))
    with pytest.raises(ValueError, match="proprio"):
        remote.act(TeacherBatch(images=batch().images, instructions=batch().instructions))

    again = load_teacher(remote.save(tmp_path / "copy"))
    assert again.fingerprint == teacher.fingerprint and again.spec == teacher.spec
    np.testing.assert_array_equal(again.act_chunk(batch()), chunks)
    remote.close()
    again.close()


@pytest.mark.timeout(30)
def test_openpi_client_talks_to_the_rpd_server(teacher: Teacher, server: TeacherServer) -> None:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy(server.url)
    meta = client.get_server_metadata()
    assert meta["fingerprint"] == teacher.fingerprint and meta["kind"] == "cnn-tiny"
    assert TeacherSpec.from_dict(meta["spec"]) == teacher.spec
    b = batch(n=2)
    out = client.infer(dict(images=b.images, instructions=b.instructions, proprio=b.proprio))
    np.testing.assert_array_equal(out["actions"], teacher.act_chunk(b))
    # A bad request is answered openpi's way (a text frame), which its client raises.
    with pytest.raises(RuntimeError, match="proprio must be"):
        client.infer(dict(images=b.images, instructions=b.instructions))
    port = server.url.rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200


@pytest.mark.timeout(30)
def test_server_rejects_a_bad_request_and_the_client_recovers(remote_dir: Path,
                                                               teacher: Teacher) -> None:
    remote = load_teacher(remote_dir)
    remote.spec = TeacherSpec(**{**teacher.spec.__dict__, "proprio_dim": 5})  # send P = 5
    with pytest.raises(RemoteTeacherError, match=r"failed the request: .*proprio must be"):
        remote.act(batch(proprio_dim=5))
    remote.spec = teacher.spec  # the next call reconnects and works
    np.testing.assert_array_equal(remote.act_chunk(batch()), teacher.act_chunk(batch()))
    remote.close()


@pytest.mark.timeout(30)
def test_a_user_written_openpi_style_server_works(teacher: Teacher, tmp_path: Path) -> None:
    seen: list[dict] = []

    def reply(obs: dict) -> dict:
        seen.append(obs)
        b = len(obs["images"])
        return {"actions": np.full((b, 4, 7), 0.25, np.float32)}

    meta = {"spec": teacher.spec.to_dict(), "fingerprint": "openvla-7b@abc123"}
    with ForeignServer(meta, reply) as srv:
        result = CliRunner().invoke(main, ["connect-teacher", "--url", srv.url.removeprefix(
            "ws://"), "--out", str(tmp_path / "t")])
        assert result.exit_code == 0, result.output
        assert "openvla-7b@abc123" in result.stdout and "chunk 4x7" in result.stdout
        remote = load_teacher(tmp_path / "t")
        assert remote.fingerprint == "openvla-7b@abc123"
        np.testing.assert_array_equal(remote.act_chunk(batch(n=2)), np.full((2, 4, 7), 0.25))
        remote.close()
    assert sorted(seen[0]) == ["images", "instructions", "proprio"]
    assert seen[0]["images"].dtype == np.uint8 and seen[0]["images"].shape == (2, 64, 64, 3)
    assert seen[0]["proprio"].dtype == np.float32 and seen[0]["proprio"].shape == (2, 9)
    assert seen[0]["instructions"] == batch(n=2).instructions


@pytest.mark.parametrize("metadata, message", [
    (lambda spec: {}, "lacks spec, fingerprint"),
    (lambda spec: {"fingerprint": "abc"}, "lacks spec"),
    (lambda spec: {"spec": {**spec, "action_dim": "seven"}, "fingerprint": "abc"},
     "malformed metadata spec"),
    (lambda spec: {"spec": {**spec, "camera": None}, "fingerprint": "abc"},
     "malformed metadata spec"),
    (lambda spec: {"spec": spec, "fingerprint": ""}, "fingerprint ''"),
    (lambda spec: {"spec": spec, "fingerprint": "abc", "protocol_version": 99}, "newer"),
    (lambda spec: ["not", "a", "dict"], "not a dict"),
])
@pytest.mark.timeout(30)
def test_bad_metadata_is_refused_with_one_line(teacher: Teacher, tmp_path: Path,
                                               metadata: Callable[[dict], Any],
                                               message: str) -> None:
    with ForeignServer(metadata(teacher.spec.to_dict()), lambda obs: None) as srv:
        result = CliRunner().invoke(main, ["connect-teacher", "--url", srv.url,
                                           "--out", str(tmp_path / "t")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and srv.url in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t" / TEACHER_JSON).exists()


@pytest.mark.timeout(30)
def test_a_server_serving_another_teacher_is_refused(remote_dir: Path, tmp_path: Path) -> None:
    meta = json.loads((remote_dir / TEACHER_JSON).read_text())
    meta["config"]["fingerprint"] = "0123456789abcdef"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / TEACHER_JSON).write_text(json.dumps(meta))
    with pytest.raises(RemoteTeacherError, match=r"now serves teacher .* made for teacher "
                                                 r"0123456789abcdef"):
        load_teacher(tmp_path / "t")


@pytest.mark.timeout(30)
def test_a_changed_view_reconnects_and_a_real_mismatch_names_what_differs(
        teacher: Teacher, remote_dir: Path, tmp_path: Path) -> None:
    for view in (dict(shift_deg=15.0), dict(object_color="green")):
        remote = load_teacher(remote_dir).with_view(**view)
        assert remote.fingerprint != teacher.fingerprint  # labels of views never mix
        first = remote.act_chunk(batch())
        np.testing.assert_array_equal(first, teacher.act_chunk(batch()))
        remote.close()  # the connection drops; the next call reconnects with the same view
        np.testing.assert_array_equal(remote.act_chunk(batch()), first)
        remote.close()

    meta = json.loads((remote_dir / TEACHER_JSON).read_text())
    meta["spec"]["chunk_size"] = 8
    meta["spec"]["control_mode"] = "pd_joint_pos"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / TEACHER_JSON).write_text(json.dumps(meta))
    with pytest.raises(RemoteTeacherError) as err:
        load_teacher(tmp_path / "t")
    message = str(err.value)
    assert "chunk_size 8 here, 4 on the server" in message
    assert "control_mode 'pd_joint_pos' here, 'pd_ee_delta_pose' on the server" in message
    assert "shift_deg" not in message and "\n" not in message


class FailsOnPairs:
    """A teacher that raises on a batch of 2 (its message holds a server-side path)."""

    def __init__(self, teacher: Teacher) -> None:
        self.inner = teacher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def act_chunk(self, b: TeacherBatch) -> np.ndarray:
        if len(b) == 2:
            raise RuntimeError("cannot read /srv/secret/weights.bin\nsecond line")
        return self.inner.act_chunk(b)


@pytest.mark.timeout(30)
def test_a_teacher_error_is_one_line_to_the_client_and_a_traceback_in_the_log(
        teacher: Teacher, caplog: pytest.LogCaptureFixture) -> None:
    from websockets.sync.client import connect

    b = batch(n=2)
    request = msgpack_numpy.packb(dict(images=b.images, instructions=b.instructions,
                                       proprio=b.proprio))
    caplog.set_level(logging.ERROR, logger="rpd.teachers.remote")
    with TeacherServer(FailsOnPairs(teacher), "127.0.0.1", 0) as srv:  # type: ignore[arg-type]
        with connect(srv.url, max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(request)
            reply = ws.recv(timeout=10)
        assert isinstance(reply, str) and "\n" not in reply.strip()
        assert "Traceback" not in reply and "/srv/secret" not in reply
        assert "RuntimeError" in reply and "server's log" in reply
        logged = [r for r in caplog.records if r.exc_info is not None]
        assert logged and "/srv/secret" in str(logged[0].exc_info[1])
        remote = RemoteTeacher.from_server(srv.url, **FAST)  # it keeps serving
        with pytest.raises(RemoteTeacherError, match="RuntimeError") as err:
            remote.act_chunk(b)
        assert "\n" not in str(err.value)
        np.testing.assert_array_equal(remote.act_chunk(batch()), teacher.act_chunk(batch()))
        remote.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (a state the test then relies on); the timeout is a safety net."""
    ready = threading.Event()
    for _ in range(3000):
        if condition():
            return
        ready.wait(0.01)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.timeout(30)
def test_the_server_bounds_connections_and_message_size(
        teacher: Teacher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rpd.teachers.remote")
    with TeacherServer(teacher, "127.0.0.1", 0, max_connections=2, max_batch=4) as srv:
        a = RemoteTeacher.from_server(srv.url, **FAST)
        b = RemoteTeacher.from_server(srv.url, **FAST)
        with pytest.raises(RemoteTeacherError, match=r"busy.*--max-connections") as err:
            RemoteTeacher.from_server(srv.url, **{**FAST, "retries": 0})
        assert "\n" not in str(err.value)
        a.close()
        wait_until(lambda: srv.open_connections == 1, "the closed connection to be released")
        c = RemoteTeacher.from_server(srv.url, **FAST)
        np.testing.assert_array_equal(c.act_chunk(batch(n=4)), teacher.act_chunk(batch(n=4)))

        with pytest.raises(RemoteTeacherError, match=r"5 rows.*--max-batch 4"):
            c.act_chunk(batch(n=5))  # fits the frame limit, refused by the row limit
        # a bad request closes the connection; c reconnects on its next call, and would meet
        # "busy" (and retry) if the server had not yet released the closed one's slot
        wait_until(lambda: srv.open_connections == 1, "the refused connection to be released")
        caplog.clear()
        with pytest.raises(RemoteTeacherError, match=r"too big.*--max-batch"):
            c.act_chunk(batch(n=64))  # over the frame limit: cut off, not resent
        assert not [r for r in caplog.records if "retry" in r.getMessage()]
        wait_until(lambda: srv.open_connections == 1, "the cut-off connection to be released")
        np.testing.assert_array_equal(c.act_chunk(batch(n=1)), teacher.act_chunk(batch(n=1)))
        b.close()
        c.close()
    assert srv.requests == 2


def test_binding_beyond_loopback_without_a_key_warns() -> None:
    from rpd.teachers.remote import exposure_warning

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, None) is None
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "gpu-box"):
        warning = exposure_warning(host, None)
        assert warning is not None and "--api-key" in warning and "RPD_API_KEY" in warning
        assert exposure_warning(host, "a-long-secret-key") is None


@pytest.mark.timeout(30)
def test_no_reply_within_the_timeout(teacher: Teacher) -> None:
    meta = {"spec": teacher.spec.to_dict(), "fingerprint": "silent"}
    received = threading.Event()
    with ForeignServer(meta, lambda obs: received.set()) as srv:  # never answers
        remote = RemoteTeacher.from_server(srv.url, timeout=0.3, **FAST)
        with pytest.raises(RemoteTeacherError, match=r"no reply within 0.3 s.*--timeout"):
            remote.act(batch())
        assert received.is_set()  # it was sent, and the wait for its reply ended
        remote.close()


@pytest.mark.timeout(30)
def test_unreachable_server_is_one_line_after_the_retries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING, logger="rpd.teachers.remote")
    result = CliRunner().invoke(main, ["connect-teacher", "--url", url, "--out",
                                       str(tmp_path / "t"), "--retries", "3", "--backoff",
                                       "0.1"])
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("rpd: error: ") and url in line
    assert "connection refused" in line and "gave up after 4 attempts" in line
    assert "rpd serve-teacher" in line
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert [m.split("; ")[-1] for m in retries] == [  # backoff 0.1, 0.2, 0.4 s
        "retry 1/3 in 0.1 s", "retry 2/3 in 0.2 s", "retry 3/3 in 0.4 s"]
    bad = CliRunner().invoke(main, ["connect-teacher", "--url", "http://x:1", "--out",
                                    str(tmp_path / "t")])
    assert bad.exit_code == 2 and "ws://HOST:PORT" in bad.stderr
    zero = CliRunner().invoke(main, ["connect-teacher", "--url", url, "--out",
                                     str(tmp_path / "t"), "--timeout", "0"])
    assert zero.exit_code == 2 and "--timeout 0.0: must be a positive number" in zero.stderr


# ---- the real commands in their own processes --------------------------------------------------


class ServeProcess:
    """`rpd serve-teacher DIR` in a subprocess; `url` once it listens."""

    def __init__(self, teacher_dir: Path, port: int = 0, env: dict[str, str] | None = None,
                 ) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpd.cli", "serve-teacher", str(teacher_dir), "--port",
             str(port), "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if "serving teacher" not in line:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split(" at ")[1].split(";")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture(scope="module")
def teacher_dir(teacher: Teacher, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return teacher.save(tmp_path_factory.mktemp("served") / "cnn-tiny")


@pytest.mark.timeout(60)
def test_serve_connect_and_a_server_killed_mid_run(teacher: Teacher, teacher_dir: Path,
                                                   tmp_path: Path) -> None:
    with ServeProcess(teacher_dir) as served:
        out = tmp_path / "remote"
        args = ["connect-teacher", "--url", served.url, "--out", str(out), "--retries", "2",
                "--backoff", "0.05"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert teacher.fingerprint in result.stdout and "cnn-tiny" in result.stdout
        again = CliRunner().invoke(main, args)  # never overwritten without --force
        assert again.exit_code == 2 and "--force" in again.stderr
        remote = load_teacher(out)
        np.testing.assert_array_equal(remote.act_chunk(batch()), teacher.act_chunk(batch()))

        served.kill()
        with pytest.raises(RemoteTeacherError) as err:
            remote.act(batch())
        message = str(err.value)
        assert served.url in message and "gave up after 3 attempts" in message
        assert "\n" not in message

    remote.close()

    taken = socket_listening()
    refused = CliRunner().invoke(main, ["serve-teacher", str(teacher_dir), "--port",
                                        str(taken.getsockname()[1])])
    taken.close()
    assert refused.exit_code == 2 and "pick another --port" in refused.stderr
    assert CliRunner().invoke(main, ["serve-teacher", str(out)]).exit_code == 2  # a remote dir


@pytest.mark.timeout(60)
def test_an_api_key_guards_the_server_and_stays_out_of_teacher_json(
        teacher: Teacher, teacher_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    key = "k3y-0f-th1s-serv3r"
    monkeypatch.delenv("RPD_API_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="rpd.teachers.remote")
    with ServeProcess(teacher_dir, env={"RPD_API_KEY": key}) as served:
        for wrong in (None, "wrong-key", key + "x"):
            with pytest.raises(RemoteTeacherError, match=r"API key.*RPD_API_KEY") as err:
                RemoteTeacher.from_server(served.url, api_key=wrong, **FAST)
            assert "\n" not in str(err.value)
        assert not [r for r in caplog.records if "retry" in r.getMessage()]  # not retried
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/healthz", timeout=10) as r:
            assert r.status == 200

        client = WebsocketClientPolicy(served.url, api_key=key)  # openpi's header works
        b = batch(n=2)
        out = client.infer(dict(images=b.images, instructions=b.instructions,
                                proprio=b.proprio))
        np.testing.assert_array_equal(out["actions"], teacher.act_chunk(b))

        out_dir = tmp_path / "remote"
        result = CliRunner().invoke(main, ["connect-teacher", "--url", served.url, "--out",
                                           str(out_dir)], env={"RPD_API_KEY": key})
        assert result.exit_code == 0, result.output
        assert key not in (out_dir / TEACHER_JSON).read_text()
        monkeypatch.setenv("RPD_API_KEY", key)
        remote = load_teacher(out_dir)
        np.testing.assert_array_equal(remote.act_chunk(batch()), teacher.act_chunk(batch()))
        remote.close()
        monkeypatch.delenv("RPD_API_KEY")
        with pytest.raises(InputError, match=r"needs an API key.*RPD_API_KEY"):
            load_teacher(out_dir)

        again = CliRunner().invoke(main, ["connect-teacher", "--url", served.url, "--out",
                                          str(out_dir), "--force", "--api-key", key])
        assert again.exit_code == 0, again.output
        refused = CliRunner().invoke(main, ["connect-teacher", "--url", served.url, "--out",
                                            str(tmp_path / "none")])
        assert refused.exit_code == 2 and "API key" in refused.stderr
        assert not (tmp_path / "none" / TEACHER_JSON).exists()


def socket_listening() -> Any:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_cache_labelled_over_loopback_keeps_finished_parts_when_the_server_dies(
        teacher: Teacher, teacher_dir: Path, tmp_path: Path) -> None:
    """`rpd cache`'s worker-side function, in this process, labels with a served teacher; the
    server is killed mid-build, restarted, and the build resumed."""
    from rpd.data.store import TeacherStore
    from rpd.pipeline import cache as cache_mod
    from rpd.teachers.remote import write_remote_teacher

    remote_dir, store_dir = tmp_path / "remote", tmp_path / "store"
    cfg = cache_mod.CacheConfig(teacher=remote_dir, env_id=ENV, out=store_dir, rollouts=3,
                                horizon=4, key_scale="1", batch_size=4)
    cli_args = ["cache", "--teacher", str(remote_dir), "--env", ENV, "--out", str(store_dir),
                "--rollouts", "3", "--horizon", "4", "--key-scale", "1", "--batch-size", "4",
                "--workers", "1"]
    units = cache_mod.plan_units(cfg)
    args = (str(remote_dir.resolve()), str(store_dir.resolve()), ENV, cfg.horizon,
            cfg.batch_size)
    labeler_key: tuple | None = None
    try:
        with ServeProcess(teacher_dir) as served:
            write_remote_teacher(served.url, remote_dir, **FAST)
            remote = load_teacher(remote_dir)
            cache_mod.open_store_for(cfg, remote)
            label = [remote.fingerprint, cfg.seed]
            # the worker's per-process labeller: keyed by the teacher's fingerprint too
            labeler_key = (args[0], ENV, cfg.horizon, cfg.batch_size, remote.fingerprint,
                           "auto", "auto")
            assert cache_mod.label_unit(units[0], *args, *label)["rows"] == 4
            served.kill()
            with pytest.raises(RemoteTeacherError, match=f"{served.url}.*gave up"):
                cache_mod.label_unit(units[1], *args, *label)
        store = TeacherStore.open(store_dir)
        assert store.finished_units() == {units[0].id} and not store.staging_dirs()
        first = store.read()  # the finished part is intact and readable
        assert len(first) == 4 and np.isfinite(first.teacher_action).all()

        with ServeProcess(teacher_dir, port=served.port):  # restarted: the build resumes
            for unit in units[1:]:
                assert cache_mod.label_unit(unit, *args, *label)["rows"] == 4
            result = CliRunner().invoke(main, cli_args)  # the command sees a finished store
        assert result.exit_code == 0, result.output
        assert "labelled 0 episodes" in result.stdout and "3 already in the store" in result.stdout

        store = TeacherStore.open(store_dir)
        assert store.finished_units() == {u.id for u in units}
        assert store.identity.teacher_fingerprint == teacher.fingerprint
        assert store.identity.teacher_kind == "remote"
        rows = store.read()
        assert len(rows) == 12
        part0 = rows.episode == first.episode[0]
        np.testing.assert_array_equal(rows.teacher_action[part0], first.teacher_action)
        # What the server labelled is what the local teacher says about those states (the
        # worker's env is reused with the local teacher swapped in).
        labeler, _ = cache_mod._LABELERS[labeler_key]  # type: ignore[index]
        labeler.teacher = teacher
        np.testing.assert_allclose(labeler.label_env_states(rows.env_state),
                                   rows.teacher_action, atol=1e-5)
    finally:
        labeler, _ = cache_mod._LABELERS.pop(labeler_key, (None, None))  # type: ignore[arg-type]
        if labeler is not None:
            labeler.close()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_rpd_train_learns_from_a_remote_teacher_over_loopback(remote_dir: Path,
                                                              tmp_path: Path) -> None:
    """The student stage with a served teacher: live labels come over the socket, are written
    to the run's store under the served teacher's fingerprint, and the run finishes."""
    from rpd.data.store import TeacherStore

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--env", ENV, "--teacher", str(remote_dir), "--steps", "128", "--envs", "1",
        "--n-steps", "64", "--batch-size", "32", "--n-epochs", "1", "--eval-every", "128",
        "--eval-episodes", "1", "--live-budget", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    student = json.loads((out / "student.json").read_text())
    assert student["metrics"]["live_teacher_calls"] == 16  # 2 rollouts x budget 8
    served = load_teacher(remote_dir).fingerprint
    assert student["teacher"]["fingerprint"] == served
    summary = TeacherStore.open(out / "cache").summary()
    assert summary.teacher_fingerprint == served and summary.entries == 16
