"""`remote`: a teacher that runs behind a policy server, and the server that serves any teacher.

The wire protocol is openpi's policy-server protocol (Physical Intelligence's π0 servers and
`openpi-client`): a WebSocket carrying binary msgpack frames, numpy arrays encoded by
`openpi_client.msgpack_numpy`. So a VLA that cannot share rpd's environment (OpenVLA needs
transformers 4.40) runs in its own environment behind a server, and rpd talks to it.

    server -> client   on connect: metadata            {"spec", "fingerprint", "kind", ...}
    client -> server   a batched observation           {"images", "instructions", "proprio"}
    server -> client   the batched action chunks        {"actions": [B, C, A] float32}
    server -> client   on a failed request: a text frame with the error, then close

The field list is `METADATA_KEYS` / `REQUEST_KEYS` below and README "Remote teachers".

A remote teacher's checkpoint directory holds only teacher.json: kind "remote", the spec and
fingerprint the server reported when the directory was made (`rpd connect-teacher`), and the
URL. Its `fingerprint` is the served teacher's, so stores labelled by the served teacher
stay valid. Each (re)connection checks the server still serves that teacher.

Failures: a server that cannot be reached, or whose connection drops, is retried with
exponential backoff (`retries`, `backoff`); a request is idempotent (a pure function of its
inputs), so resending it after a reconnect is safe. No reply within `timeout`, a server-side
error, or bad metadata stop at once. All raise `RemoteTeacherError` (an `InputError`: one
line naming the URL and what to do).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
"""Version of the rpd fields in the metadata (`protocol_version`); a client refuses newer."""

METADATA_KEYS: dict[str, str] = {
    "spec": "TeacherSpec.to_dict(): camera {name, width, height, shift_deg[, object_color]}, "
            "control_mode, "
            "action_dim, chunk_size, proprio_dim, tasks {env id: instruction} (required)",
    "fingerprint": "a stable id of the served model and weights, <= 64 chars (required)",
    "kind": "the served teacher's backend kind (informational)",
    "action_stats": "q01/q99/mean/std per action dim (informational)",
    "protocol_version": f"rpd protocol version ({PROTOCOL_VERSION}); absent = 1",
}
"""Keys of the metadata dict the server sends on connect."""

REQUEST_KEYS: dict[str, str] = {
    "images": "uint8 [B, H, W, 3]: teacher-camera RGB at spec.camera's size",
    "instructions": "B strings: the task instruction of each row",
    "proprio": "float32 [B, P] robot joint positions then velocities (first P of them; only "
               "when spec.proprio_dim = P > 0)",
}
"""Keys of a request; the reply is {"actions": float32 [B, chunk_size, action_dim]} in env
units (a [chunk_size, action_dim] reply is accepted for B = 1)."""

DEFAULT_PORT = 8000
"""openpi's default policy-server port."""


class RemoteTeacherError(InputError):
    """The teacher server is unreachable, failed a request, or serves another teacher."""


def _codec() -> Any:
    try:
        from openpi_client import msgpack_numpy
    except ImportError:  # pragma: no cover - a declared dependency
        from rpd.errors import SetupError

        raise SetupError("remote teachers need openpi-client: pip install openpi-client") from None
    return msgpack_numpy


def normalize_url(url: str, option: str = "--url") -> str:
    """`host:port` or `ws[s]://host:port[/path]` -> a ws URL; InputError if it is not one."""
    raw = url.strip()
    if "://" not in raw:
        raw = f"ws://{raw}"
    parts = urllib.parse.urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port == -1:
        raise InputError(f"{option} {url!r}: not a teacher server address; use ws://HOST:PORT")
    return raw.rstrip("/")


# ------------------------------------------------------------------------------------------
# Metadata
# ------------------------------------------------------------------------------------------


def metadata_for(teacher: Teacher) -> dict[str, Any]:
    """The metadata `rpd serve-teacher` sends for `teacher` on every new connection."""
    return dict(protocol_version=PROTOCOL_VERSION, kind=teacher.kind,
                fingerprint=teacher.fingerprint, spec=teacher.spec.to_dict(),
                action_stats=teacher.action_stats)


def parse_metadata(meta: Any, url: str) -> tuple[TeacherSpec, str, dict[str, Any]]:
    """Check a server's metadata: (spec, fingerprint, the whole dict).

    Raises:
        RemoteTeacherError: not a dict, a missing or malformed spec/fingerprint, or a newer
            protocol version.
    """
    fix = ("serve the teacher with `rpd serve-teacher`, or send the metadata keys listed in "
           "README 'Remote teachers'")
    if not isinstance(meta, dict):
        raise RemoteTeacherError(f"teacher server {url}: its metadata is a "
                                 f"{type(meta).__name__}, not a dict; {fix}")
    missing = [k for k in ("spec", "fingerprint") if k not in meta]
    if missing:
        has = ", ".join(map(str, meta)) or "nothing"
        raise RemoteTeacherError(f"teacher server {url}: its metadata lacks "
                                 f"{', '.join(missing)} (has {has}); {fix}")
    version = meta.get("protocol_version", 1)
    if not isinstance(version, int) or version > PROTOCOL_VERSION:
        raise RemoteTeacherError(f"teacher server {url}: protocol version {version!r} is newer "
                                 f"than this rpd understands ({PROTOCOL_VERSION}); upgrade rpd")
    fingerprint = meta["fingerprint"]
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= 64:
        raise RemoteTeacherError(f"teacher server {url}: metadata fingerprint {fingerprint!r} "
                                 f"must be a string of 1-64 characters; {fix}")
    try:
        spec = TeacherSpec.from_dict(meta["spec"])
        dims = (spec.action_dim, spec.chunk_size, spec.proprio_dim)
        if not (all(isinstance(d, int) for d in dims) and spec.action_dim > 0
                and spec.chunk_size > 0 and spec.proprio_dim >= 0):
            raise ValueError(f"action_dim/chunk_size/proprio_dim {dims}")
        if not isinstance(spec.tasks, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in spec.tasks.items()):
            raise ValueError("tasks must map env ids to instructions")
    except (TypeError, KeyError, ValueError, InputError) as e:
        raise RemoteTeacherError(f"teacher server {url}: malformed metadata spec ({e}); "
                                 f"{fix}") from None
    return spec, fingerprint, meta


# ------------------------------------------------------------------------------------------
# Client: the `remote` teacher
# ------------------------------------------------------------------------------------------


DEFAULT_CONFIG: dict[str, Any] = dict(timeout=300.0, connect_timeout=10.0, retries=4,
                                      backoff=0.5)
"""Config keys besides url/fingerprint/served_kind: timeout (s to wait for one reply; a VLA
on a busy GPU may need long), connect_timeout (s for the handshake + metadata), retries
(reconnect attempts after a failed connect or a dropped connection), backoff (s before the
first retry, doubled for each next one: 0.5 + 1 + 2 + 4 = 7.5 s of waiting by default)."""


def check_config(config: dict[str, Any]) -> None:
    """InputError unless timeout, connect_timeout and backoff are positive numbers and
    retries a whole number >= 0 (named by their `rpd connect-teacher` options)."""
    for key, least in (("timeout", 0.0), ("connect_timeout", 0.0), ("backoff", 0.0),
                       ("retries", -1)):
        value = config[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > least
        if not ok or (key == "retries" and not isinstance(value, int)):
            need = "0 or more (a whole number)" if key == "retries" else "a positive number"
            raise InputError(f"--{key.replace('_', '-')} {value!r}: must be {need}")


@register_teacher("remote")
class RemoteTeacher(Teacher):
    """A teacher served by `rpd serve-teacher` (or any server speaking the protocol above).

    `config` holds `url`, `fingerprint` (the served teacher's) and `served_kind`, plus
    `DEFAULT_CONFIG`'s keys. `load_teacher` connects at once (and checks the server); a
    dropped connection is reopened on the next call.
    """

    device_support = True  # no network: runs wherever it is asked to
    has_weights = False
    made_by = "rpd connect-teacher --url ws://HOST:PORT --out DIR"

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        config = {**DEFAULT_CONFIG, **config}
        for key in ("url", "fingerprint"):
            if not isinstance(config.get(key), str) or not config[key]:
                raise InputError(f"remote teacher config: {key!r} is missing; re-create the "
                                 "directory with `rpd connect-teacher`")
        check_config(config)
        super().__init__(spec, config, action_stats)
        self.url = normalize_url(config["url"], "teacher.json url")
        self._ws: Any = None
        self._lock = threading.Lock()
        self.server_metadata: dict[str, Any] = {}

    @classmethod
    def from_server(cls, url: str, **config: Any) -> RemoteTeacher:
        """Ask the server at `url` what it serves and return a connected remote teacher.

        Args:
            url: ws://HOST:PORT (or HOST:PORT).
            **config: Overrides of `DEFAULT_CONFIG` (timeout, connect_timeout, retries,
                backoff).
        """
        url = normalize_url(url)
        cfg = {**DEFAULT_CONFIG, **config, "url": url}
        check_config(cfg)
        ws, meta = _retrying(url, cfg, lambda: _open(url, cfg))
        try:
            spec, fingerprint, _ = parse_metadata(meta, url)
            stats = meta.get("action_stats")
            teacher = cls(spec, {**cfg, "fingerprint": fingerprint,
                                 "served_kind": str(meta.get("kind", ""))},
                          stats if isinstance(stats, dict) else {})
        except BaseException:
            ws.close()
            raise
        teacher._ws, teacher.server_metadata = ws, meta
        return teacher

    # ---- identity and checkpoint ---------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The served teacher's fingerprint (so labels it wrote stay valid here); seen through
        a changed view (`with_view`), a fingerprint derived from it and the view."""
        served = str(self.config["fingerprint"])
        camera = self.spec.camera
        if not camera.shift_deg and camera.object_color is None:
            return served
        view = f"{served}/shift_deg={camera.shift_deg!r}/object_color={camera.object_color}"
        return hashlib.sha256(view.encode()).hexdigest()[:16]

    def _save_weights(self, path: Path) -> None:
        raise TypeError("a remote teacher has no local weights")

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> RemoteTeacher:
        try:
            teacher = cls(TeacherSpec.from_dict(meta["spec"]), dict(meta["config"]),
                          meta.get("action_stats"))
        except (TypeError, KeyError, ValueError) as e:
            raise InputError(f"{weights.parent / 'teacher.json'}: malformed remote teacher "
                             f"({type(e).__name__}: {e}); re-create it with "
                             "`rpd connect-teacher`") from None
        # Connect now, so a server that is down or serves another teacher fails at load time.
        return teacher.connect()

    # ---- connection ------------------------------------------------------------------------

    def connect(self) -> RemoteTeacher:
        """Open the connection now (with retries) and check the server; returns self."""
        with self._lock:
            self._call(None)
        return self

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __del__(self) -> None:
        try:
            self._drop()
        except Exception:
            pass

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _connect_checked(self) -> None:
        ws, meta = _open(self.url, self.config)
        try:
            spec, fingerprint, _ = parse_metadata(meta, self.url)
            if fingerprint != self.fingerprint or spec != self.spec:
                what = (f"teacher {fingerprint}" if fingerprint != self.fingerprint
                        else "the same fingerprint with another spec")
                raise RemoteTeacherError(
                    f"teacher server {self.url} now serves {what}, this directory was made "
                    f"for teacher {self.fingerprint}; serve that teacher again, or re-run "
                    "`rpd connect-teacher` (its labels in existing stores will not be reused)")
        except Exception:
            ws.close()
            raise
        self._ws, self.server_metadata = ws, meta

    def _call(self, payload: bytes | None) -> Any:
        """Send `payload` and return the reply frame (None: only connect), reconnecting with
        exponential backoff while the server is unreachable or the connection drops."""
        from websockets.exceptions import ConnectionClosed

        def attempt() -> Any:
            try:
                if self._ws is None:
                    self._connect_checked()
                if payload is None:
                    return None
                self._ws.send(payload)
                return self._ws.recv(timeout=float(self.config["timeout"]))
            except TimeoutError:
                if self._ws is None:  # the handshake timed out: retry
                    raise
                self._drop()
                raise RemoteTeacherError(
                    f"teacher server {self.url}: no reply within {self.config['timeout']:g} s"
                    "; the server is overloaded or hung: check it, or raise the timeout with "
                    "`rpd connect-teacher --timeout`") from None
            except (OSError, ConnectionClosed, EOFError):
                self._drop()
                raise

        return _retrying(self.url, self.config, attempt)

    # ---- acting ------------------------------------------------------------------------------

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        """Send the batch to the server: action chunks [B, chunk_size, A] float32."""
        codec = _codec()
        request: dict[str, Any] = dict(images=np.ascontiguousarray(batch.images, np.uint8),
                                       instructions=[str(s) for s in batch.instructions])
        if self.spec.proprio_dim:
            if batch.proprio is None:
                raise ValueError(f"this teacher needs proprio [B, {self.spec.proprio_dim}]")
            request["proprio"] = np.ascontiguousarray(batch.proprio, np.float32)
        payload = codec.packb(request)
        with self._lock:
            reply = self._call(payload)
            if isinstance(reply, str):  # openpi's convention: the server's error as text
                self._drop()
                detail = reply.strip().splitlines()[-1] if reply.strip() else "no detail"
                raise RemoteTeacherError(f"teacher server {self.url} failed the request: "
                                         f"{detail[:300]}; see the server's log")
        try:
            out = codec.unpackb(reply)
            actions = np.asarray(out["actions"], np.float32)
        except Exception as e:
            raise RemoteTeacherError(f"teacher server {self.url}: its reply has no readable "
                                     f"'actions' array ({type(e).__name__}: {e}); it must "
                                     "reply {'actions': float32 [B, chunk, A]}") from None
        want = (len(batch), self.spec.chunk_size, self.spec.action_dim)
        if actions.shape == want[1:] and len(batch) == 1:
            actions = actions[None]
        if actions.shape != want:
            raise RemoteTeacherError(f"teacher server {self.url}: replied actions of shape "
                                     f"{actions.shape}, expected {want} (batch, chunk_size, "
                                     "action_dim from its metadata spec)")
        return actions


def _retrying(url: str, config: dict[str, Any], attempt: Any) -> Any:
    """Run `attempt()`; while it fails to reach the server (refused, dropped, handshake
    timeout), retry `config["retries"]` times with exponential backoff, then raise a
    RemoteTeacherError. Other errors (RemoteTeacherError included) pass through at once."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    retries, delay = int(config["retries"]), float(config["backoff"])
    started, last = time.monotonic(), None
    for i in range(retries + 1):
        if i:
            logger.warning("teacher server %s: %s; retry %d/%d in %.1f s", url,
                           _describe(last), i, retries, delay)
            time.sleep(delay)
            delay *= 2
        try:
            return attempt()
        except InvalidURI as e:
            raise RemoteTeacherError(f"teacher server {url}: bad URL ({e}); use "
                                     "ws://HOST:PORT") from None
        except (OSError, ConnectionClosed, InvalidHandshake, EOFError) as e:
            last = e
    raise RemoteTeacherError(
        f"teacher server {url}: {_describe(last)}; gave up after {retries + 1} attempts over "
        f"{time.monotonic() - started:.1f} s; start (or restart) `rpd serve-teacher` there, "
        "or point the teacher dir at the right server with `rpd connect-teacher`, then re-run "
        "(work already saved is kept)")


def _open(url: str, config: dict[str, Any]) -> tuple[Any, Any]:
    """Connect and read the metadata frame: (connection, metadata). Raises the transport's
    own errors (the caller retries)."""
    from websockets.sync.client import connect

    timeout = float(config["connect_timeout"])
    ws = connect(url, open_timeout=timeout, close_timeout=1.0, compression=None,
                 max_size=None)
    try:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, str):
            raise RemoteTeacherError(f"teacher server {url}: sent text instead of its "
                                     f"metadata ({frame.strip()[:200]!r})")
        try:
            meta = _codec().unpackb(frame)
        except Exception as e:
            raise RemoteTeacherError(f"teacher server {url}: its metadata is not msgpack "
                                     f"({type(e).__name__}); is this a policy server?") from None
    except BaseException:
        ws.close()
        raise
    return ws, meta


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "no connection"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (no server listening)"
    if isinstance(e, TimeoutError):
        return "no handshake within the connect timeout"
    from websockets.exceptions import ConnectionClosed

    if isinstance(e, ConnectionClosed):
        return "the connection dropped (server stopped or killed?)"
    return f"{type(e).__name__}: {str(e)[:120] or 'no detail'}"


def write_remote_teacher(url: str, out: str | Path, *, force: bool = False,
                         **config: Any) -> RemoteTeacher:
    """`rpd connect-teacher`: query the server at `url` and write a remote teacher dir.

    Args:
        url: ws://HOST:PORT of a running teacher server.
        out: Directory to write (teacher.json only).
        force: Overwrite an existing teacher.json in `out`.
        **config: `DEFAULT_CONFIG` overrides stored in the directory.

    Raises:
        InputError: `out` holds a teacher already (without `force`), bad url or config.
        RemoteTeacherError: the server is unreachable or its metadata is not usable.
    """
    from rpd.data.schema import check_teacher_out

    out = Path(out)
    check_teacher_out(out, force)
    check_config({**DEFAULT_CONFIG, **config})
    teacher = RemoteTeacher.from_server(url, **config)
    teacher.close()
    teacher.save(out)
    return teacher


# ------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------


class _BadRequest(ValueError):
    pass


class TeacherServer:
    """Serves one teacher over the protocol above (`rpd serve-teacher`).

    Every connection gets its own thread; requests run one at a time in arrival order, each
    one `act_chunk` call on exactly the batch its client sent. Requests from different
    clients are not merged, so a reply never depends on what other clients ask (labels stay
    deterministic under `--seed`); clients batch for throughput (`rpd cache --batch-size`).

    Use `serve_forever()`, or as a context manager that serves from a background thread.
    """

    def __init__(self, teacher: Teacher, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 ) -> None:
        from websockets.sync.server import serve

        self.teacher = teacher
        self.metadata = metadata_for(teacher)
        self._packed_metadata = _codec().packb(self.metadata)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.requests = 0
        try:
            self._server = serve(self._handle, host, port, compression=None, max_size=None,
                                 process_request=_health_check)
        except OSError as e:
            raise InputError(f"--port {port}: cannot listen on {host}:{port} "
                             f"({e.strerror or e}); pick another --port or --host") from None
        port = self._server.socket.getsockname()[1]
        if host in ("", "0.0.0.0", "::"):  # every interface: name the machine
            import socket

            host = socket.gethostname()
        self.url = f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TeacherServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name="rpd-teacher-server")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        codec = _codec()
        peer = ws.remote_address
        logger.info("connection from %s", peer)
        try:
            ws.send(self._packed_metadata)
            for message in ws:
                try:
                    batch = self._parse(message, codec)
                    start = time.monotonic()
                    with self._lock:
                        actions = np.asarray(self.teacher.act_chunk(batch), np.float32)
                        self.requests += 1
                    reply = dict(actions=actions,
                                 server_timing=dict(infer_ms=(time.monotonic() - start) * 1e3))
                except _BadRequest as e:
                    logger.warning("bad request from %s: %s", peer, e)
                    ws.send(f"rpd serve-teacher: bad request: {e}")
                    ws.close(1008, "bad request")
                    return
                except Exception:
                    logger.exception("teacher failed a request from %s", peer)
                    ws.send(traceback.format_exc())
                    ws.close(1011, "teacher error; traceback in the previous frame")
                    return
                ws.send(codec.packb(reply))
        except ConnectionClosed:
            pass
        logger.info("connection from %s closed", peer)

    def _parse(self, message: Any, codec: Any) -> TeacherBatch:
        """A request frame -> TeacherBatch; _BadRequest says what is wrong."""
        if isinstance(message, str):
            raise _BadRequest("send binary msgpack frames, not text")
        try:
            obs = codec.unpackb(message)
        except Exception as e:
            raise _BadRequest(f"not msgpack ({type(e).__name__})") from None
        if not isinstance(obs, dict) or "images" not in obs or "instructions" not in obs:
            keys = ", ".join(map(str, obs)) if isinstance(obs, dict) else type(obs).__name__
            raise _BadRequest(f"needs keys images, instructions[, proprio]; got {keys}")
        images = obs["images"]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[-1] != 3:
            raise _BadRequest("images must be a uint8 array [B, H, W, 3], got "
                              f"{getattr(images, 'dtype', type(images).__name__)} "
                              f"{getattr(images, 'shape', '')}")
        instructions = obs["instructions"]
        if not isinstance(instructions, list | tuple) or len(instructions) != len(images) \
                or not all(isinstance(s, str) for s in instructions):
            raise _BadRequest(f"instructions must be {len(images)} strings")
        p = self.teacher.spec.proprio_dim
        proprio = obs.get("proprio")
        if p:
            if not isinstance(proprio, np.ndarray) or proprio.shape != (len(images), p):
                raise _BadRequest(f"proprio must be a float array [{len(images)}, {p}], got "
                                  f"{getattr(proprio, 'shape', type(proprio).__name__)}")
            proprio = np.array(proprio, np.float32)
        else:
            proprio = None
        return TeacherBatch(images=np.array(images), instructions=list(instructions),
                            proprio=proprio)


def _health_check(connection: Any, request: Any) -> Any:
    """GET /healthz -> 200 OK (openpi's servers answer it too); other paths: the WebSocket."""
    import http

    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


def open_server(ckpt_dir: str | Path, host: str = "127.0.0.1",
                port: int = DEFAULT_PORT) -> TeacherServer:
    """`rpd serve-teacher`: load the teacher in `ckpt_dir` and bind a server for it (call
    `serve_forever()` on the result).

    Raises:
        InputError: not a teacher checkpoint, a remote or state-reading teacher, or the port
            is taken.
    """
    from rpd.teachers.base import load_teacher

    teacher = load_teacher(ckpt_dir, option="DIR")
    if isinstance(teacher, RemoteTeacher):
        raise InputError(f"DIR {ckpt_dir}: is itself a remote teacher (of {teacher.url}); "
                         "serve the checkpoint it points to instead")
    if teacher.uses_env_state:
        raise InputError(f"DIR {ckpt_dir}: a {teacher.kind} teacher reads simulator states, "
                         "which the protocol does not carry; use the directory directly")
    return TeacherServer(teacher, host, port)
