"""`remote`: a teacher that runs behind a policy server, and the server that serves any teacher.

The wire protocol is openpi's policy-server protocol (Physical Intelligence's π0 servers and
`openpi-client`): a WebSocket carrying binary msgpack frames, numpy arrays encoded by
`openpi_client.msgpack_numpy`. So a VLA that cannot share rpd's environment (OpenVLA needs
transformers 4.40) runs in its own environment behind a server, and rpd talks to it.

    server -> client   on connect: metadata            {"spec", "fingerprint", "kind", ...}
    client -> server   a batched observation           {"images", "instructions", "proprio"}
    server -> client   the batched action chunks        {"actions": [B, C, A] float32}
    server -> client   on a failed request: a text frame with a one-line error, then close

The field list is `METADATA_KEYS` / `REQUEST_KEYS` below and README "Remote teachers". Both
ends decode frames with `rpd.teachers.wire`, which builds numeric arrays only, and check each
field's dtype and shape before converting anything: a frame from a hostile peer is refused
with one line, never trusted. The server bounds the message size (`max_batch` rows at the
spec's image size), the number of connections, and, given an API key, checks openpi's
`Authorization: Api-Key <key>` header in constant time.

A remote teacher's checkpoint directory holds only teacher.json: kind "remote", the spec and
fingerprint the server reported when the directory was made (`rpd connect-teacher`), and the
URL. Its `fingerprint` is the served teacher's, so stores labelled by the served teacher
stay valid. Each (re)connection checks the server still serves that teacher.

Failures: a server that cannot be reached, or whose connection drops, is retried with
exponential backoff (`retries`, `backoff`); a request is idempotent (a pure function of its
inputs), so resending it after a reconnect is safe. No reply within `timeout`, a server-side
error, bad metadata, a refused API key or an oversized message stop at once. All raise
`RemoteTeacherError` (an `InputError`: one line naming the URL and what to do).

The API key never goes into teacher.json: `rpd connect-teacher` records only that the server
needs one (`needs_api_key`), and loading the directory reads it from `RPD_API_KEY`, so the
directory can be shared and copied without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher
from rpd.teachers.wire import WireError, expect_array, one_line, packb, unpackb

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

API_KEY_ENV = "RPD_API_KEY"
"""Environment variable holding the API key, for `serve-teacher`, `connect-teacher` and every
command that loads a remote teacher whose server needs one (it stays out of shell history and
out of teacher.json)."""

DEFAULT_MAX_BATCH = 256
"""Rows one request may hold (`serve-teacher --max-batch`); rpd's clients send 32-64."""

DEFAULT_MAX_CONNECTIONS = 16
"""Connections a server holds at once (`serve-teacher --max-connections`): one per
`rpd cache --workers` worker or training run."""

MAX_INSTRUCTION = 1024
"""Characters in one instruction."""

CLIENT_MAX_MESSAGE = 16 << 20
"""Bytes of one frame a client accepts: metadata, or a reply of [B, chunk, A] float32 actions
(64 x 50 x 7 of them are 90 kB)."""

MAX_SPEC_SIZE = 4096
"""The largest camera side, action_dim, chunk_size and proprio_dim a server may declare."""

FLOATS = (np.float16, np.float32, np.float64)


class RemoteTeacherError(InputError):
    """The teacher server is unreachable, failed a request, or serves another teacher."""


def check_api_key(key: str, option: str = f"--api-key (or {API_KEY_ENV})") -> str:
    """`key` if it can travel in an HTTP header (printable ASCII, no spaces); else InputError
    naming `option`."""
    if not key or not key.isascii() or not key.isprintable() or " " in key:
        raise InputError(f"{option}: the API key must be printable ASCII without spaces, "
                         "e.g. from `openssl rand -hex 24`")
    return key


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What `rpd serve-teacher` warns when it listens beyond loopback without a key."""
    import ipaddress

    if api_key:
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"warning: --host {host or '*'} serves the teacher to anyone who can reach this "
            f"machine, without authentication; pass --api-key (or set {API_KEY_ENV}), or "
            "serve on 127.0.0.1 and tunnel (ssh -L)")


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
        has = one_line(", ".join(map(str, meta)), 200) or "nothing"
        raise RemoteTeacherError(f"teacher server {url}: its metadata lacks "
                                 f"{', '.join(missing)} (has {has}); {fix}")
    version = meta.get("protocol_version", 1)
    if not isinstance(version, int) or version > PROTOCOL_VERSION:
        raise RemoteTeacherError(f"teacher server {url}: protocol version "
                                 f"{one_line(repr(version), 40)} is newer "
                                 f"than this rpd understands ({PROTOCOL_VERSION}); upgrade rpd")
    fingerprint = meta["fingerprint"]
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= 64:
        raise RemoteTeacherError(f"teacher server {url}: metadata fingerprint "
                                 f"{one_line(repr(fingerprint), 80)} "
                                 f"must be a string of 1-64 characters; {fix}")
    try:
        if not isinstance(meta["spec"], dict) or not isinstance(meta["spec"].get("camera"),
                                                                 dict):
            raise ValueError("spec and spec.camera must be maps")
        spec = TeacherSpec.from_dict(meta["spec"])
        camera = spec.camera
        dims = (camera.width, camera.height, spec.action_dim, spec.chunk_size)
        if not all(type(d) is int and 0 < d <= MAX_SPEC_SIZE for d in dims):
            raise ValueError(f"camera width/height, action_dim, chunk_size {dims} must be "
                             f"whole numbers in 1-{MAX_SPEC_SIZE}")
        if type(spec.proprio_dim) is not int or not 0 <= spec.proprio_dim <= MAX_SPEC_SIZE:
            raise ValueError(f"proprio_dim {spec.proprio_dim!r}")
        if not isinstance(camera.name, str) or not isinstance(spec.control_mode, str):
            raise ValueError("camera name and control_mode must be strings")
        if type(camera.shift_deg) not in (int, float) or not math.isfinite(camera.shift_deg):
            raise ValueError(f"camera shift_deg {camera.shift_deg!r}")
        if not isinstance(spec.tasks, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in spec.tasks.items()):
            raise ValueError("tasks must map env ids to instructions")
    except (TypeError, KeyError, ValueError, InputError) as e:
        raise RemoteTeacherError(f"teacher server {url}: malformed metadata spec "
                                 f"({one_line(str(e), 200)}); {fix}") from None
    return spec, fingerprint, meta


def _action_stats(stats: Any, spec: TeacherSpec, url: str) -> dict[str, list[float]]:
    """The metadata's action_stats as {name: [action_dim floats]} (informational, so a
    malformed one is dropped with a warning rather than refused)."""
    if stats is None:
        return {}
    out: dict[str, list[float]] = {}
    if isinstance(stats, dict):
        for name, values in stats.items():
            if isinstance(values, np.ndarray) and values.ndim == 1:
                values = values.astype(np.float64).tolist()
            if not isinstance(name, str) or not isinstance(values, list) or not all(
                    type(v) in (int, float) for v in values) or len(values) != spec.action_dim:
                break
            out[name] = [float(v) for v in values]
        else:
            return out
    logger.warning("teacher server %s: ignoring malformed action_stats (want {name: "
                   "[%d numbers]})", url, spec.action_dim)
    return {}


def spec_differences(here: TeacherSpec, there: TeacherSpec) -> list[str]:
    """The fields where two specs differ, as "field HERE here, THERE on the server"."""

    def flat(spec: TeacherSpec) -> dict[str, Any]:
        d = spec.to_dict()
        camera = d.pop("camera")
        return {**d, **{f"camera.{k}": v for k, v in camera.items()}}

    a, b = flat(here), flat(there)
    return [f"{key} {a.get(key)!r} here, {b.get(key)!r} on the server"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


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

    `config` holds `url`, `fingerprint` (the served teacher's), `served_kind` and
    `needs_api_key`, plus `DEFAULT_CONFIG`'s keys. `load_teacher` connects at once (and checks
    the server); a dropped connection is reopened on the next call, and checked against the
    spec the server reported (`served_spec`), not the view `with_view` set here.
    """

    device_support = True  # no network: runs wherever it is asked to
    has_weights = False
    made_by = "rpd connect-teacher --url ws://HOST:PORT --out DIR"

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None, *,
                 api_key: str | None = None) -> None:
        config = {**DEFAULT_CONFIG, **config}
        for key in ("url", "fingerprint"):
            if not isinstance(config.get(key), str) or not config[key]:
                raise InputError(f"remote teacher config: {key!r} is missing; re-create the "
                                 "directory with `rpd connect-teacher`")
        check_config(config)
        super().__init__(spec, config, action_stats)
        self.url = normalize_url(config["url"], "teacher.json url")
        self.served_spec = spec
        """The spec the server reported; `spec` differs from it after `with_view`."""
        if api_key is None and config.get("needs_api_key"):
            api_key = os.environ.get(API_KEY_ENV) or None
        self._api_key = api_key
        self._ws: Any = None
        self._lock = threading.Lock()
        self.server_metadata: dict[str, Any] = {}

    @classmethod
    def from_server(cls, url: str, api_key: str | None = None, **config: Any) -> RemoteTeacher:
        """Ask the server at `url` what it serves and return a connected remote teacher.

        Args:
            url: ws://HOST:PORT (or HOST:PORT).
            api_key: The server's API key, if it needs one (kept out of `config`).
            **config: Overrides of `DEFAULT_CONFIG` (timeout, connect_timeout, retries,
                backoff).
        """
        url = normalize_url(url)
        cfg = {**DEFAULT_CONFIG, **config, "url": url}
        if api_key is not None:
            check_api_key(api_key)
            cfg["needs_api_key"] = True
        check_config(cfg)
        ws, meta = _retrying(url, cfg, lambda: _open(url, cfg, api_key))
        try:
            spec, fingerprint, _ = parse_metadata(meta, url)
            teacher = cls(spec, {**cfg, "fingerprint": fingerprint,
                                 "served_kind": one_line(str(meta.get("kind", "")), 64)},
                          _action_stats(meta.get("action_stats"), spec, url), api_key=api_key)
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
        if teacher.config.get("needs_api_key"):
            if teacher._api_key is None:
                raise InputError(f"{weights.parent / 'teacher.json'}: the teacher server "
                                 f"{teacher.url} needs an API key; set {API_KEY_ENV} to it")
            check_api_key(teacher._api_key, API_KEY_ENV)
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
        ws, meta = _open(self.url, self.config, self._api_key)
        try:
            spec, fingerprint, _ = parse_metadata(meta, self.url)
            # Against what the server reported, not `self.spec`/`self.fingerprint`: a view set
            # by `with_view` is rendered here and never reported by the server.
            served = str(self.config["fingerprint"])
            differences = spec_differences(self.served_spec, spec)
            if fingerprint != served:
                raise RemoteTeacherError(
                    f"teacher server {self.url} now serves teacher {fingerprint}, this "
                    f"directory was made for teacher {served}; serve that teacher again, or "
                    "re-run `rpd connect-teacher` (its labels in existing stores will not be "
                    "reused)")
            if differences:
                raise RemoteTeacherError(one_line(
                    f"teacher server {self.url} serves teacher {served} with another spec than "
                    f"this directory records ({'; '.join(differences)}); re-run `rpd "
                    "connect-teacher` to record the served spec", 600))
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
            except ConnectionClosed as e:
                self._drop()
                if payload is not None and _closed_as_too_big(e, by_peer=True):
                    raise RemoteTeacherError(
                        f"teacher server {self.url} refused a request of "
                        f"{len(payload) / 1e6:.1f} MB as too big; send smaller batches "
                        "(--batch-size, --teacher-batch) or raise the server's limit with "
                        "`rpd serve-teacher --max-batch`") from None
                if _closed_as_too_big(e, by_peer=False):
                    raise RemoteTeacherError(
                        f"teacher server {self.url}: its reply is larger than "
                        f"{CLIENT_MAX_MESSAGE >> 20} MiB; is this a policy server?") from None
                raise
            except (OSError, EOFError):
                self._drop()
                raise

        return _retrying(self.url, self.config, attempt)

    # ---- acting ------------------------------------------------------------------------------

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        """Send the batch to the server: action chunks [B, chunk_size, A] float32."""
        request: dict[str, Any] = dict(images=np.ascontiguousarray(batch.images, np.uint8),
                                       instructions=[str(s) for s in batch.instructions])
        if self.spec.proprio_dim:
            if batch.proprio is None:
                raise ValueError(f"this teacher needs proprio [B, {self.spec.proprio_dim}]")
            request["proprio"] = np.ascontiguousarray(batch.proprio, np.float32)
        payload = packb(request)
        want = (len(batch), self.spec.chunk_size, self.spec.action_dim)
        with self._lock:
            reply = self._call(payload)
            try:
                return self._actions(reply, want)
            except RemoteTeacherError:
                self._drop()  # after a bad reply, the next request starts afresh
                raise

    def _actions(self, reply: bytes | str, want: tuple[int, int, int]) -> np.ndarray:
        if isinstance(reply, str):  # openpi's convention: the server's error as text
            lines = reply.strip().splitlines()
            raise RemoteTeacherError(f"teacher server {self.url} failed the request: "
                                     f"{one_line(lines[-1] if lines else 'no detail')}; see "
                                     "the server's log")
        try:
            return _read_actions(reply, want)
        except WireError as e:
            raise RemoteTeacherError(
                f"teacher server {self.url}: unusable reply ({one_line(str(e))}); it must "
                "reply {'actions': float32 [B, chunk_size, action_dim]} with chunk_size and "
                "action_dim as in its metadata spec") from None


def _read_actions(reply: bytes, want: tuple[int, int, int]) -> np.ndarray:
    """A reply frame -> actions [B, chunk, A] float32; WireError says what is wrong."""
    out = unpackb(reply)
    if not isinstance(out, dict) or "actions" not in out:
        keys = ", ".join(map(repr, out)) if isinstance(out, dict) else type(out).__name__
        raise WireError(f"a reply is a map holding 'actions', got {keys or 'an empty map'}")
    raw = out["actions"]
    one = want[0] == 1 and isinstance(raw, np.ndarray) and raw.ndim == 2
    actions = expect_array(raw, "actions", FLOATS, want[1:] if one else want)
    actions = np.array(actions, np.float32).reshape(want)
    if not np.isfinite(actions).all():
        raise WireError("actions hold NaN or infinity")
    return actions


def _retrying(url: str, config: dict[str, Any], attempt: Any) -> Any:
    """Run `attempt()`; while it fails to reach the server (refused, dropped, handshake
    timeout), retry `config["retries"]` times with exponential backoff, then raise a
    RemoteTeacherError. Other errors (RemoteTeacherError included) pass through at once."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

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
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                raise RemoteTeacherError(
                    f"teacher server {url} refused the connection (HTTP {status}: no or wrong "
                    f"API key); set {API_KEY_ENV} to the key it was started with, or pass "
                    "`rpd connect-teacher --api-key`") from None
            if status != 503:
                raise RemoteTeacherError(f"teacher server {url} answered HTTP {status}; is "
                                         "this a policy server?") from None
            last = e  # busy: all its connections are taken; one may close soon
        except (OSError, ConnectionClosed, InvalidHandshake, EOFError) as e:
            last = e
    fix = ("close other clients of that server, or restart it with a larger "
           "`rpd serve-teacher --max-connections`" if _busy(last) else
           "start (or restart) `rpd serve-teacher` there, or point the teacher dir at the "
           "right server with `rpd connect-teacher`")
    raise RemoteTeacherError(
        f"teacher server {url}: {_describe(last)}; gave up after {retries + 1} attempts over "
        f"{time.monotonic() - started:.1f} s; {fix}, then re-run (work already saved is kept)")


def _open(url: str, config: dict[str, Any], api_key: str | None) -> tuple[Any, Any]:
    """Connect (sending `api_key` as openpi's client does) and read the metadata frame:
    (connection, metadata). Raises the transport's own errors (the caller retries)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    timeout = float(config["connect_timeout"])
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    ws = connect(url, open_timeout=timeout, close_timeout=1.0, compression=None,
                 max_size=CLIENT_MAX_MESSAGE, additional_headers=headers)
    try:
        try:
            frame = ws.recv(timeout=timeout)
        except ConnectionClosed as e:
            if _closed_as_too_big(e, by_peer=False):
                raise RemoteTeacherError(f"teacher server {url}: its metadata is larger than "
                                         f"{CLIENT_MAX_MESSAGE >> 20} MiB; is this a policy "
                                         "server?") from None
            raise
        if isinstance(frame, str):
            raise RemoteTeacherError(f"teacher server {url}: sent text instead of its "
                                     f"metadata ({one_line(frame, 200)!r})")
        try:
            meta = unpackb(frame)
        except WireError as e:
            raise RemoteTeacherError(f"teacher server {url}: its metadata is not a protocol "
                                     f"frame ({one_line(str(e))}); is this a policy "
                                     "server?") from None
    except BaseException:
        ws.close()
        raise
    return ws, meta


def _closed_as_too_big(e: Any, *, by_peer: bool) -> bool:
    """Whether a ConnectionClosed was a 1009 (message too big) close, sent by the peer
    (`by_peer`) or by this side."""
    frame = e.rcvd if by_peer else e.sent
    return frame is not None and frame.code == 1009


def _busy(e: BaseException | None) -> bool:
    from websockets.exceptions import InvalidStatus

    return isinstance(e, InvalidStatus) and e.response.status_code == 503


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
    if _busy(e):
        return "busy: all its connections (--max-connections) are taken"
    return f"{type(e).__name__}: {one_line(str(e), 120) or 'no detail'}"


def write_remote_teacher(url: str, out: str | Path, *, force: bool = False,
                         api_key: str | None = None, **config: Any) -> RemoteTeacher:
    """`rpd connect-teacher`: query the server at `url` and write a remote teacher dir.

    Args:
        url: ws://HOST:PORT of a running teacher server.
        out: Directory to write (teacher.json only).
        force: Overwrite an existing teacher.json in `out`.
        api_key: The server's API key, if it needs one: teacher.json records only that one
            is needed (`needs_api_key`); loading the directory reads it from `RPD_API_KEY`.
        **config: `DEFAULT_CONFIG` overrides stored in the directory.

    Raises:
        InputError: `out` holds a teacher already (without `force`), bad url or config.
        RemoteTeacherError: the server is unreachable or its metadata is not usable.
    """
    from rpd.data.schema import check_teacher_out

    out = Path(out)
    check_teacher_out(out, force)
    check_config({**DEFAULT_CONFIG, **config})
    teacher = RemoteTeacher.from_server(url, api_key=api_key, **config)
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

    Every connection gets its own thread, up to `max_connections` at once (more are answered
    HTTP 503, which clients retry); requests run one at a time in arrival order, each one
    `act_chunk` call on exactly the batch its client sent. Requests from different clients
    are not merged, so a reply never depends on what other clients ask (labels stay
    deterministic under `--seed`); clients batch for throughput (`rpd cache --batch-size`).

    A frame larger than `max_batch` rows at the spec's image size needs is cut off (close
    code 1009); any malformed request is answered with one line of text and its connection
    closed (1008); a teacher error is logged with its traceback here and answered with one
    line (1011). The server itself keeps serving.

    Use `serve_forever()`, or as a context manager that serves from a background thread.
    """

    def __init__(self, teacher: Teacher, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 *, api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        from websockets.sync.server import serve

        _check_limits(max_batch, max_connections)
        self.teacher = teacher
        self.metadata = metadata_for(teacher)
        self._packed_metadata = packb(self.metadata)
        self.max_batch, self.max_connections = max_batch, max_connections
        spec = teacher.spec
        row = spec.camera.height * spec.camera.width * 3 + 8 * spec.proprio_dim \
            + 4 * MAX_INSTRUCTION + 64
        self.max_message = max_batch * row + (1 << 16)
        """Bytes of one request frame: `max_batch` rows of images at the spec's size, their
        proprio and instructions, and room for msgpack's framing."""
        self._auth = None if api_key is None else f"Api-Key {check_api_key(api_key)}".encode()
        self._lock = threading.Lock()
        self._slots = threading.Lock()
        self._open = 0
        self._thread: threading.Thread | None = None
        self.requests = 0
        try:
            self._server = serve(self._handle, host, port, compression=None,
                                 max_size=self.max_message,
                                 process_request=self._process_request)
        except OSError as e:
            raise InputError(f"--port {port}: cannot listen on {host}:{port} "
                             f"({e.strerror or e}); pick another --port or --host") from None
        self._handle_socket = self._server.handler
        self._server.handler = self._limited
        port = self._server.socket.getsockname()[1]
        if host in ("", "0.0.0.0", "::"):  # every interface: name the machine
            import socket

            host = socket.gethostname()
        self.url = f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"

    @property
    def open_connections(self) -> int:
        """Connections being served now (their handshake included)."""
        with self._slots:
            return self._open

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

    def _limited(self, sock: Any, addr: Any) -> None:
        """Each accepted socket's thread: serve it if a connection slot is free, else answer
        503 and close at once, so a flood of connections cannot pile up threads."""
        with self._slots:
            free = self._open < self.max_connections
            if free:
                self._open += 1
        if free:
            try:
                self._handle_socket(sock, addr)
            finally:
                with self._slots:
                    self._open -= 1
            return
        logger.warning("refused %s: all %d connections taken (--max-connections)", addr,
                       self.max_connections)
        _refuse_busy(sock)
        threads = getattr(self._server, "handler_threads", None)  # websockets >= 14
        if threads is not None:  # what websockets' own handler does on its way out
            with self._server.lock:
                threads.discard(threading.current_thread())

    def _process_request(self, connection: Any, request: Any) -> Any:
        """GET /healthz -> 200 OK (openpi's servers answer it too); without the API key (if
        one is set) -> 401; else None: go on to the WebSocket."""
        import http

        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._auth is not None:
            given = request.headers.get_all("Authorization")
            sent = given[0].encode("utf-8", "surrogateescape") if len(given) == 1 else b""
            if not hmac.compare_digest(sent, self._auth):
                logger.warning("refused %s: no or wrong API key", connection.remote_address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "send the API key: Authorization: Api-Key <key>\n")
        return None

    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = ws.remote_address
        logger.info("connection from %s", peer)
        try:
            ws.send(self._packed_metadata)
            for message in ws:
                try:
                    batch = self._parse(message)
                    start = time.monotonic()
                    with self._lock:
                        actions = np.asarray(self.teacher.act_chunk(batch), np.float32)
                        self.requests += 1
                    reply = dict(actions=actions,
                                 server_timing=dict(infer_ms=(time.monotonic() - start) * 1e3))
                except _BadRequest as e:
                    detail = one_line(str(e))
                    logger.warning("bad request from %s: %s", peer, detail)
                    ws.send(f"rpd serve-teacher: bad request: {detail}")
                    ws.close(1008, "bad request")
                    return
                except Exception as e:
                    logger.exception("teacher failed a request from %s", peer)
                    ws.send(f"rpd serve-teacher: the teacher failed the request "
                            f"({type(e).__name__}); the traceback is in the server's log")
                    ws.close(1011, "teacher error")
                    return
                ws.send(packb(reply))
        except ConnectionClosed:
            pass
        logger.info("connection from %s closed", peer)

    def _parse(self, message: Any) -> TeacherBatch:
        """A request frame -> TeacherBatch; _BadRequest says what is wrong. Every field is
        checked (type, dtype, shape, batch length) before anything is converted."""
        if isinstance(message, str):
            raise _BadRequest("send binary msgpack frames, not text")
        try:
            obs = unpackb(message)
            if not isinstance(obs, dict):
                raise WireError(f"a request is a map of {', '.join(REQUEST_KEYS)}, got a "
                                f"{type(obs).__name__}")
            missing = [k for k in ("images", "instructions") if k not in obs]
            unknown = [k for k in obs if k not in REQUEST_KEYS]
            if missing or unknown:
                wrong = [f"lacks {', '.join(missing)}"] if missing else []
                wrong += [f"has unknown keys {', '.join(map(repr, unknown))}"] if unknown else []
                raise WireError(f"a request holds images, instructions[, proprio]; this one "
                                f"{' and '.join(wrong)}")
            spec = self.teacher.spec
            images = expect_array(obs["images"], "images", (np.uint8,),
                                  (None, spec.camera.height, spec.camera.width, 3))
            n = len(images)
            if not 1 <= n <= self.max_batch:
                raise WireError(f"a request of {n} rows; send 1 to --max-batch "
                                f"{self.max_batch} rows")
            instructions = obs["instructions"]
            if not isinstance(instructions, list) or len(instructions) != n or not all(
                    isinstance(t, str) and len(t) <= MAX_INSTRUCTION for t in instructions):
                raise WireError(f"instructions must be a list of {n} strings of at most "
                                f"{MAX_INSTRUCTION} characters")
            proprio = None
            if spec.proprio_dim:
                proprio = np.array(expect_array(obs.get("proprio"), "proprio", FLOATS,
                                                (n, spec.proprio_dim)), np.float32)
        except WireError as e:
            raise _BadRequest(str(e)) from None
        return TeacherBatch(images=np.array(images), instructions=list(instructions),
                            proprio=proprio)


def _check_limits(max_batch: int, max_connections: int) -> None:
    for name, value in (("--max-batch", max_batch), ("--max-connections", max_connections)):
        if type(value) is not int or value < 1:
            raise InputError(f"{name} {value!r}: must be a whole number >= 1")


def _refuse_busy(sock: Any) -> None:
    """Answer a connection the server has no slot for with HTTP 503, then close it."""
    body = b"all connections of this teacher server are taken; retry later\n"
    try:
        sock.settimeout(0.5)
        sock.recv(65536)  # the request: closing with it unread would reset the connection
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    finally:
        sock.close()


def open_server(ckpt_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                max_connections: int = DEFAULT_MAX_CONNECTIONS) -> TeacherServer:
    """`rpd serve-teacher`: load the teacher in `ckpt_dir` and bind a server for it (call
    `serve_forever()` on the result). See `TeacherServer` for the options.

    Raises:
        InputError: not a teacher checkpoint, a remote or state-reading teacher, a bad
            option, or the port is taken.
    """
    from rpd.teachers.base import load_teacher

    if api_key is not None:
        check_api_key(api_key)
    _check_limits(max_batch, max_connections)  # before a slow load
    teacher = load_teacher(ckpt_dir, option="DIR")
    if isinstance(teacher, RemoteTeacher):
        raise InputError(f"DIR {ckpt_dir}: is itself a remote teacher (of {teacher.url}); "
                         "serve the checkpoint it points to instead")
    if teacher.uses_env_state:
        raise InputError(f"DIR {ckpt_dir}: a {teacher.kind} teacher reads simulator states, "
                         "which the protocol does not carry; use the directory directly")
    return TeacherServer(teacher, host, port, api_key=api_key, max_batch=max_batch,
                         max_connections=max_connections)
