"""The teacher-action store: a Zarr v3 group of teacher labels, written by many processes.

Layout (one directory on a local or shared POSIX filesystem)::

    STORE/zarr.json          root group; attributes (see `StoreAttrs`):
                             schema_version, teacher_fingerprint, teacher_kind, env_id,
                             control_mode, key_spec, obs_dim, action_dim, state_dim, counts,
                             created, updated
    STORE/parts/<name>/      one Zarr group per finished part, with N_p rows in the arrays
        key             [N_p, K] f32   lookup key: (obs[:, dims] - offset) / scale
        obs             [N_p, D] f32   student state observation (ManiSkill obs_mode="state")
        teacher_action  [N_p, A] f32   the teacher's action in env units
        env_state       [N_p, S] f32   flat simulator state (`rpd.data.env_state.get_env_state`)
        episode         [N_p]    i64   demo episode id / rollout reset seed / -1 for live
        step            [N_p]    i32   step within the episode
        source          [N_p]    u8    index into `SOURCES`
      and attributes: complete, unit, rows, rejected_nonfinite, teacher_fingerprint,
      supersedes (the parts a compaction merged), units (every unit the rows come from).
    STORE/.staging/          parts being written (never read)

Why parts: Zarr has no locks, so concurrent appends to one array would corrupt it. Each
writer fills its own part under `.staging/` and renames it into `parts/` when done; a rename
is atomic on POSIX, so a reader sees a part completely or not at all, and a killed writer
leaves only an unreadable-by-design staging directory behind. A part named after its unit
of work (e.g. one demo episode) exists at most once: the rename refuses an existing name,
which makes re-running a build exactly-once per unit. `compact_store` merges parts into one
part that lists the parts it supersedes, then deletes them; readers ignore superseded parts,
so a compaction killed half way never shows a row twice.

Teachers: the root names the teacher the store was made for, and every part names the teacher
that labelled it. A store opened for another teacher (`--allow-mismatch`) reads and writes only
that teacher's parts: readers never serve one teacher's action to a run of another, units are
done per teacher (another teacher's part of a unit is named `<unit>--teacher-<fingerprint>`),
and a compaction merges each teacher's parts apart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rpd.errors import InputError, disk_writes

logger = logging.getLogger(__name__)

STORE_SCHEMA_VERSION = 1
PARTS_DIR = "parts"
STAGING_DIR = ".staging"
COMPACT_LOCK = ".compact.lock"
COMPACT_PREFIX = "compact-"
"""Parts written by a compaction are named so (only they supersede other parts)."""

SOURCES: tuple[str, ...] = ("demo", "teacher-rollout", "noisy-rollout", "live")
"""Where a row's state came from; `source` stores the index into this tuple."""

ARRAYS: dict[str, str] = {
    "key": "float32",
    "obs": "float32",
    "teacher_action": "float32",
    "env_state": "float32",
    "episode": "int64",
    "step": "int32",
    "source": "uint8",
}
"""Every part's arrays and their dtypes (2-D for the first four, 1-D for the rest)."""

CHUNK_ROWS = 4096
"""Rows per Zarr chunk (compressed unit)."""
SHARD_ROWS = 65536
"""Rows per shard (one file on disk holds this many rows of chunks)."""

REQUIRED_ATTRS = ("schema_version", "teacher_fingerprint", "env_id", "control_mode", "key_spec",
                  "obs_dim", "action_dim", "state_dim")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeySpec:
    """How a student state observation becomes a lookup key, stored so the trainer matches.

    key = (obs[:, dims] - offset) / scale, all float32. The distance used for the hit radius
    is the RMS over key dims, ||k1 - k2||_2 / sqrt(K): "how many scales apart, per dim, on average".

    Attributes:
        dims: Observation dims forming the key (ascending); None = all D dims.
        offset: [K] subtracted per key dim (the mean of the labelled observations, or 0).
        scale: [K] divides per key dim (their std, floored at `min_scale`, or 1).
        method: How offset/scale were obtained: "std" (from labelled data) or "fixed".
    """

    dims: tuple[int, ...] | None
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    method: str = "fixed"

    def __post_init__(self) -> None:
        if len(self.offset) != len(self.scale):
            raise InputError(f"key spec: {len(self.offset)} offsets but {len(self.scale)} scales")
        if self.dims is not None and len(self.dims) != len(self.scale):
            raise InputError(f"key spec: {len(self.dims)} dims but {len(self.scale)} scales")
        if any(not np.isfinite(s) or s <= 0 for s in self.scale):
            raise InputError("key spec: every scale must be a positive finite number")

    @property
    def key_dim(self) -> int:
        """K."""
        return len(self.scale)

    def keys(self, obs: np.ndarray) -> np.ndarray:
        """Keys for observations.

        Args:
            obs: [B, D] student state observations.

        Returns:
            [B, K] float32 keys.
        """
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2:
            raise ValueError(f"obs must be [B, D], got {obs.shape}")
        x = obs if self.dims is None else obs[:, list(self.dims)]
        if x.shape[1] != self.key_dim:
            raise ValueError(f"obs gives {x.shape[1]} key dims, key spec has {self.key_dim}")
        return ((x - np.asarray(self.offset, np.float32)) / np.asarray(self.scale, np.float32)
                ).astype(np.float32)

    @classmethod
    def fixed(cls, obs_dim: int, dims: Iterable[int] | None = None,
              scale: float = 1.0) -> KeySpec:
        """Offset 0 and one scale for every dim."""
        dims_t = _check_dims(dims, obs_dim)
        k = obs_dim if dims_t is None else len(dims_t)
        return cls(dims_t, (0.0,) * k, (float(scale),) * k, "fixed")

    @classmethod
    def from_data(cls, obs: np.ndarray, dims: Iterable[int] | None = None,
                  min_scale: float = 1e-2) -> KeySpec:
        """Mean/std of labelled observations [N, D]; std floored at `min_scale` so constant
        dims (e.g. a fixed goal in the demos) do not blow up distances later."""
        obs = np.asarray(obs, dtype=np.float64)
        dims_t = _check_dims(dims, obs.shape[1])
        x = obs if dims_t is None else obs[:, list(dims_t)]
        mean, std = x.mean(0), np.maximum(x.std(0), min_scale)
        return cls(dims_t, tuple(float(v) for v in mean), tuple(float(v) for v in std), "std")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dims"] = None if self.dims is None else list(self.dims)
        d["offset"], d["scale"] = list(self.offset), list(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeySpec:
        dims = d.get("dims")
        return cls(None if dims is None else tuple(int(i) for i in dims),
                   tuple(float(v) for v in d["offset"]), tuple(float(v) for v in d["scale"]),
                   str(d.get("method", "fixed")))


def _check_dims(dims: Iterable[int] | None, obs_dim: int) -> tuple[int, ...] | None:
    if dims is None:
        return None
    dims_t = tuple(sorted({int(i) for i in dims}))
    if not dims_t or dims_t[0] < 0 or dims_t[-1] >= obs_dim:
        raise InputError(f"--key-dims {list(dims_t)}: need dims in 0..{obs_dim - 1}")
    return dims_t


@dataclass(frozen=True)
class StoreIdentity:
    """What a store is for: labels are only valid for this teacher, task and key.

    Attributes:
        teacher_fingerprint: `Teacher.fingerprint` of the labelling teacher.
        env_id: ManiSkill task id.
        control_mode: Control mode of the stored actions.
        key_spec: How keys are computed from observations.
        obs_dim: D. action_dim: A. state_dim: S.
        teacher_kind: The teacher's backend kind (informational).
    """

    teacher_fingerprint: str
    env_id: str
    control_mode: str
    key_spec: KeySpec
    obs_dim: int
    action_dim: int
    state_dim: int
    teacher_kind: str = ""


@dataclass
class Rows:
    """A batch of store rows (all arrays share N).

    Attributes:
        key: [N, K] f32. obs: [N, D] f32. teacher_action: [N, A] f32. env_state: [N, S] f32.
        episode: [N] i64. step: [N] i32. source: [N] u8 (index into SOURCES).
    """

    key: np.ndarray
    obs: np.ndarray
    teacher_action: np.ndarray
    env_state: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    source: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in ARRAYS.items():
            setattr(self, name, np.asarray(getattr(self, name), dtype=dtype))
        n = len(self.key)
        for name in ARRAYS:
            a = getattr(self, name)
            if len(a) != n:
                raise ValueError(f"rows: {name} has {len(a)} rows, key has {n}")
            if a.ndim != (2 if name in ("key", "obs", "teacher_action", "env_state") else 1):
                raise ValueError(f"rows: {name} has shape {a.shape}")

    def __len__(self) -> int:
        return len(self.key)

    def take(self, mask: np.ndarray) -> Rows:
        return Rows(**{name: getattr(self, name)[mask] for name in ARRAYS})

    @classmethod
    def concat(cls, parts: list[Rows], identity: StoreIdentity) -> Rows:
        if not parts:
            return cls.empty(identity)
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS})

    @classmethod
    def empty(cls, identity: StoreIdentity) -> Rows:
        shapes = dict(key=identity.key_spec.key_dim, obs=identity.obs_dim,
                      teacher_action=identity.action_dim, env_state=identity.state_dim)
        return cls(**{name: np.zeros((0, shapes[name]) if name in shapes else (0,), dtype)
                      for name, dtype in ARRAYS.items()})


def source_code(source: str) -> int:
    """Index of `source` in SOURCES."""
    try:
        return SOURCES.index(source)
    except ValueError:
        raise ValueError(f"source {source!r}: use one of {', '.join(SOURCES)}") from None


@dataclass
class PartInfo:
    """A finished part as a reader sees it."""

    name: str
    path: Path
    rows: int
    unit: str
    units: list[str]
    supersedes: list[str]
    rejected_nonfinite: int
    teacher_fingerprint: str


@dataclass
class WriteResult:
    """What `TeacherStore.write_part` did.

    Attributes:
        name: Part name. written: rows written. rejected_nonfinite: rows dropped for NaN/inf
        teacher actions. existed: the part already existed (nothing written, not an error).
    """

    name: str
    written: int
    rejected_nonfinite: int
    existed: bool = False


@dataclass
class StoreSummary:
    """`rpd cache info`."""

    path: str
    schema_version: int
    teacher_fingerprint: str
    teacher_kind: str
    env_id: str
    control_mode: str
    key_dim: int
    key_method: str
    obs_dim: int
    action_dim: int
    state_dim: int
    entries: int
    by_source: dict[str, int]
    parts: int
    units: int
    rejected_nonfinite: int
    staging: int
    size_bytes: int
    created: str
    updated: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


READ_ATTEMPTS = 20
"""Reads (and listings) retried when a concurrent compaction moves parts away meanwhile."""


def _empty_files(root: Path) -> list[Path]:
    """Files of zero bytes under `root`: a Zarr chunk is never empty, unless a power loss hit
    it before its data reached the disk (Zarr would read it as fill values, silently)."""
    return [Path(d) / f for d, _, files in os.walk(root) for f in files
            if os.path.getsize(os.path.join(d, f)) == 0]


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root`, then every directory, to the disk: after a power loss a
    part renamed into place holds its data, not empty chunks."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


class TeacherStore:
    """A teacher-action store on disk. Cheap to open; every method re-reads the directory.

    Use `create_or_open` (writers) or `open` (readers); both check the identity.
    """

    def __init__(self, path: Path, attrs: dict[str, Any],
                 teacher_fingerprint: str | None = None) -> None:
        self.path = path
        self.attrs = attrs
        self.teacher_fingerprint: str = teacher_fingerprint or attrs["teacher_fingerprint"]
        """The teacher whose parts this handle reads and writes (default: the store's own)."""
        self.identity = StoreIdentity(
            teacher_fingerprint=attrs["teacher_fingerprint"], env_id=attrs["env_id"],
            control_mode=attrs["control_mode"], key_spec=KeySpec.from_dict(attrs["key_spec"]),
            obs_dim=int(attrs["obs_dim"]), action_dim=int(attrs["action_dim"]),
            state_dim=int(attrs["state_dim"]), teacher_kind=attrs.get("teacher_kind", ""))

    # ---- open / create ----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, expect: StoreIdentity | None = None, *,
             allow_mismatch: bool = False, option: str = "STORE",
             mismatch_fix: str = "pass --allow-mismatch to use it anyway") -> TeacherStore:
        """Open an existing store; with `expect`, refuse one made for something else
        (`mismatch_fix` ends the message: what the calling command offers).

        The handle reads and writes the parts of `expect`'s teacher (of the store's own
        teacher without `expect`): with `allow_mismatch`, another teacher's labels are kept
        apart from the store's, never served in their place.

        Raises:
            InputError: not a store, newer schema, or identity mismatch (unless allowed).
        """
        path = Path(path)
        attrs = read_root_attrs(path, option)
        store = cls(path, attrs, None if expect is None else expect.teacher_fingerprint)
        if expect is not None:
            problem = identity_mismatch(store.identity, expect)
            if problem and not allow_mismatch:
                raise InputError(f"{option} {path}: {problem}; use another store, or "
                                 f"{mismatch_fix}")
            if problem:
                logger.warning("%s: %s (allowed by --allow-mismatch)", path, problem)
        return store

    @classmethod
    def create_or_open(cls, path: str | Path, identity: StoreIdentity, *,
                       allow_mismatch: bool = False, option: str = "--out") -> TeacherStore:
        """Open the store at `path`, creating it for `identity` if it does not exist."""
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise InputError(f"{option} {path}: exists and is not a teacher-action store; "
                                 "choose a new path")
            now = _now()
            attrs = dict(schema_version=STORE_SCHEMA_VERSION,
                         teacher_fingerprint=identity.teacher_fingerprint,
                         teacher_kind=identity.teacher_kind, env_id=identity.env_id,
                         control_mode=identity.control_mode,
                         key_spec=identity.key_spec.to_dict(), obs_dim=identity.obs_dim,
                         action_dim=identity.action_dim, state_dim=identity.state_dim,
                         sources=list(SOURCES), counts={s: 0 for s in SOURCES},
                         created=now, updated=now)
            # Written via a staging dir + rename so two creators cannot interleave.
            staging = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.creating"
            zarr.open_group(str(staging), mode="w", zarr_format=3, attributes=attrs)
            (staging / PARTS_DIR).mkdir()
            (staging / STAGING_DIR).mkdir()
            try:
                if path.exists():
                    path.rmdir()  # the empty directory checked above
                os.rename(staging, path)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # another process created it first
        return cls.open(path, identity, allow_mismatch=allow_mismatch, option=option)

    # ---- reading ----------------------------------------------------------------------------

    def parts(self) -> list[PartInfo]:
        """Finished, not superseded parts of this handle's teacher (sorted by name)."""
        return [p for p in self._visible_parts()
                if p.teacher_fingerprint == self.teacher_fingerprint]

    def _visible_parts(self) -> list[PartInfo]:
        """Finished, not superseded parts of every teacher."""
        found = self._all_parts()
        superseded = {s for part in found for s in part.supersedes}
        return [part for part in found if part.name not in superseded]

    def _all_parts(self, prefix: str = "") -> list[PartInfo]:
        """Every finished part (whose name starts with `prefix`), superseded ones included.

        Raises:
            InputError: parts kept moving away through `READ_ATTEMPTS` listings.
        """
        for _ in range(READ_ATTEMPTS):
            found = self._list_parts_once(prefix)
            if found is not None:
                return found
        raise self._kept_moving("listed")

    def _list_parts_once(self, prefix: str) -> list[PartInfo] | None:
        """One listing; None when a listed part moved away and no listed part holds its rows.

        A compaction publishes the merged part, then deletes the parts it merged: a listing
        taken before the merged part appeared, whose parts then vanish, would miss their rows.
        A vanished part is harmless only when a listed part supersedes it.
        """
        parts_dir = self.path / PARTS_DIR
        found: list[PartInfo] = []
        vanished: set[str] = set()
        for entry in sorted(os.listdir(parts_dir)) if parts_dir.is_dir() else []:
            p = parts_dir / entry
            if entry.startswith(".") or not entry.startswith(prefix):
                continue
            a = _part_attrs(p)
            if a is None:
                if not p.exists():
                    vanished.add(entry)  # moved away since the listing
                continue  # not a part
            if not a.get("complete"):
                continue
            found.append(self._part_info(p, a))
        if vanished - {s for part in found for s in part.supersedes}:
            return None
        return found

    def _part_info(self, path: Path, a: dict[str, Any]) -> PartInfo:
        return PartInfo(name=path.name, path=path, rows=int(a["rows"]),
                        unit=a.get("unit", ""),
                        units=list(a.get("units", [a.get("unit", path.name)])),
                        supersedes=list(a.get("supersedes", [])),
                        rejected_nonfinite=int(a.get("rejected_nonfinite", 0)),
                        teacher_fingerprint=(a.get("teacher_fingerprint")
                                             or self.attrs["teacher_fingerprint"]))

    def _kept_moving(self, what: str) -> InputError:
        return InputError(f"STORE {self.path}: parts kept moving while being {what} "
                          f"({READ_ATTEMPTS} attempts); is a compaction looping? Let it finish "
                          "(or stop it) and run the same command again")

    def finished_units(self) -> set[str]:
        """Units of work whose rows this handle's teacher has in the store (what a resumed
        build skips)."""
        return {u for part in self.parts() for u in part.units}

    def has_unit(self, unit: str, teacher_fingerprint: str | None = None) -> bool:
        """Whether `unit` is finished for a teacher (default: this handle's): its own part
        exists or a compaction merged it (cheaper than `finished_units` on stores with many
        parts)."""
        fingerprint = teacher_fingerprint or self.teacher_fingerprint
        own = self.path / PARTS_DIR / self._unit_part_name(unit, fingerprint)
        a = _part_attrs(own)
        if a is not None and a.get("complete") and \
                self._part_info(own, a).teacher_fingerprint == fingerprint:
            return True
        return any(unit in p.units and p.teacher_fingerprint == fingerprint
                   for p in self._all_parts(prefix=COMPACT_PREFIX))

    def _unit_part_name(self, unit: str, teacher_fingerprint: str) -> str:
        """The part name of a unit: the unit for the store's own teacher, the unit and the
        teacher for another one (so both can label the same unit)."""
        name = _part_name(unit)
        if teacher_fingerprint == self.attrs["teacher_fingerprint"]:
            return name
        return f"{name}--teacher-{_part_name(teacher_fingerprint)}"

    def read(self, arrays: Iterable[str] | None = None) -> Rows:
        """Every row of this handle's teacher's finished parts, in part-name order.

        Args:
            arrays: Only these arrays (others come back empty-shaped [N, 0] / zeros); all if None.
        """

        for _ in range(READ_ATTEMPTS):
            rows = self._read_once(set(ARRAYS if arrays is None else arrays))
            if rows is not None:
                return rows
        raise self._kept_moving("read")

    def _read_once(self, wanted: set[str]) -> Rows | None:
        """One pass over the parts; None when a compaction moved a part away meanwhile (its
        rows are then in the merged part, and the caller reads again)."""
        import zarr

        chunks: list[Rows] = []
        for part in self.parts():
            try:
                g = zarr.open_group(str(part.path), mode="r")
                data = {name: (g[name][...] if name in wanted else
                               np.zeros((part.rows, 0) if name in ("key", "obs", "teacher_action",
                                                                   "env_state") else part.rows,
                                        ARRAYS[name]))
                        for name in ARRAYS}
            except (FileNotFoundError, KeyError, ValueError, OSError) as e:
                if not (part.path / "zarr.json").is_file():
                    return None  # moved away by a compaction
                raise InputError(f"{self.path}: part {part.path.name} is damaged "
                                 f"({type(e).__name__}: {str(e)[:100]}); delete {part.path} and "
                                 "re-run the stage that wrote it (`rpd cache` redoes its missing "
                                 "units)") from None
            if not (part.path / "zarr.json").is_file():
                return None  # moved away while we read it: what we read may be incomplete
            bad = [n for n in wanted if len(data[n]) != part.rows]
            bad += [f"{f.parent.name} (an empty chunk file)" for f in _empty_files(part.path)]
            if bad:
                raise InputError(f"{self.path}: part {part.path.name} is damaged (should hold "
                                 f"{part.rows} rows; bad: {', '.join(sorted(bad))}); delete "
                                 f"{part.path} and re-run the stage that wrote it")
            chunks.append(Rows(**data))
        if not chunks:
            return Rows.empty(self.identity)
        return Rows(**{n: np.concatenate([getattr(c, n) for c in chunks]) for n in ARRAYS})

    def staging_dirs(self) -> list[Path]:
        d = self.path / STAGING_DIR
        return sorted(d.iterdir()) if d.is_dir() else []

    # ---- writing ----------------------------------------------------------------------------

    def write_part(self, rows: Rows, unit: str | None = None, *,
                   teacher_fingerprint: str | None = None) -> WriteResult:
        """Write `rows` as one part, visible atomically when complete.

        Rows whose teacher action is NaN/inf are dropped and counted. With `unit` (a unit of
        work such as "demo-3fa2c1d0-7"), the part is named after it and written at most once:
        if that part already exists nothing is written.

        Args:
            rows: The rows (keys must be computed with this store's key spec).
            unit: Unit-of-work id; None for live labels (a fresh unique name).
            teacher_fingerprint: The labelling teacher, recorded in the part (its units are
                its own); defaults to this handle's.
        """
        import zarr

        self._check_rows(rows)
        fingerprint = teacher_fingerprint or self.teacher_fingerprint
        name = (self._unit_part_name(unit, fingerprint) if unit is not None
                else f"live-{_stamp()}")
        final = self.path / PARTS_DIR / name
        if final.exists() or (unit is not None and self.has_unit(unit, fingerprint)):
            return WriteResult(name, 0, 0, existed=True)  # also when merged by a compaction
        finite = np.isfinite(rows.teacher_action).all(axis=1)
        rejected = int((~finite).sum())
        if rejected:
            logger.warning("%s: rejected %d rows with NaN/inf teacher actions", name, rejected)
            rows = rows.take(finite)
        staging = self.path / STAGING_DIR / f"{name}.{socket.gethostname()}.{os.getpid()}." \
                                            f"{uuid.uuid4().hex[:6]}"
        attrs = dict(complete=True, unit=unit or name, units=[unit or name], rows=len(rows),
                     rejected_nonfinite=rejected, supersedes=[], teacher_fingerprint=fingerprint,
                     writer=f"{socket.gethostname()}:{os.getpid()}", created=_now())
        with disk_writes(f"writing store part {name} in {self.path}",
                         "every part published before is intact"):
            try:
                g = zarr.open_group(str(staging), mode="w", zarr_format=3)
                for arr_name, dtype in ARRAYS.items():
                    _write_array(g, arr_name, getattr(rows, arr_name), dtype)
                g.attrs.update(attrs)
                fsync_tree(staging)  # the data reaches the disk before the part is visible
            except BaseException:
                _discard(staging)  # never published: nothing lost
                raise
        try:
            os.rename(staging, final)
        except OSError:
            # Someone finished the same unit first (rename onto a non-empty dir fails).
            shutil.rmtree(staging, ignore_errors=True)
            if final.exists():
                return WriteResult(name, 0, rejected, existed=True)
            raise
        fsync_dir(final.parent)  # ... and so does its new name
        if unit is not None and self._held_elsewhere(unit, final, fingerprint):
            # A compaction merged this unit (and removed its part) after our check above, and
            # our duplicate landed beside the merged copy: take ours back. Another part holding
            # the unit is visible at every moment of a compaction (the merged part appears
            # before the old ones go), so the check cannot miss it.
            _remove([final])
            return WriteResult(name, 0, rejected, existed=True)
        return WriteResult(name, len(rows), rejected)

    def _held_elsewhere(self, unit: str, part_path: Path, teacher_fingerprint: str) -> bool:
        """Whether a part of the teacher other than `part_path` holds `unit`'s rows."""
        return any(unit in p.units and p.teacher_fingerprint == teacher_fingerprint
                   for p in self._visible_parts() if p.path != part_path)

    def _check_rows(self, rows: Rows) -> None:
        ident = self.identity
        want = dict(key=ident.key_spec.key_dim, obs=ident.obs_dim,
                    teacher_action=ident.action_dim, env_state=ident.state_dim)
        for name, dim in want.items():
            got = getattr(rows, name).shape[1]
            if got != dim:
                raise ValueError(f"rows.{name} has {got} columns; the store {self.path} has {dim}")

    def refresh_counts(self) -> dict[str, int]:
        """This handle's teacher's rows by source; recorded in the root attributes (with
        `updated`) when that is the teacher the store was made for, whose rows they count."""
        import zarr

        source = self.read(["source"]).source
        counts = {s: int((source == i).sum()) for i, s in enumerate(SOURCES)}
        root = zarr.open_group(str(self.path), mode="r+")
        if self.teacher_fingerprint == root.attrs["teacher_fingerprint"]:
            root.attrs.update(counts=counts, updated=_now())
        else:
            root.attrs.update(updated=_now())
        self.attrs = dict(root.attrs)
        return counts

    # ---- summary ----------------------------------------------------------------------------

    def summary(self) -> StoreSummary:
        """This handle's teacher's rows; `extra["other_teachers"]` counts the rows other
        teachers labelled into the store (with --allow-mismatch), by fingerprint."""
        visible = self._visible_parts()
        parts = [p for p in visible if p.teacher_fingerprint == self.teacher_fingerprint]
        others: dict[str, int] = {}
        for p in visible:
            if p.teacher_fingerprint != self.teacher_fingerprint:
                others[p.teacher_fingerprint] = others.get(p.teacher_fingerprint, 0) + p.rows
        source = self.read(["source"]).source
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        a = self.attrs
        return StoreSummary(
            path=str(self.path), schema_version=int(a["schema_version"]),
            teacher_fingerprint=a["teacher_fingerprint"], teacher_kind=a.get("teacher_kind", ""),
            env_id=a["env_id"], control_mode=a["control_mode"],
            key_dim=self.identity.key_spec.key_dim, key_method=self.identity.key_spec.method,
            obs_dim=self.identity.obs_dim, action_dim=self.identity.action_dim,
            state_dim=self.identity.state_dim, entries=len(source),
            by_source={s: int((source == i).sum()) for i, s in enumerate(SOURCES)},
            parts=len(parts), units=len({u for p in parts for u in p.units}),
            rejected_nonfinite=sum(p.rejected_nonfinite for p in parts),
            staging=len(self.staging_dirs()), size_bytes=size, created=a.get("created", ""),
            updated=a.get("updated", ""),
            extra={"other_teachers": dict(sorted(others.items()))} if others else {})


def _write_array(g: Any, name: str, data: np.ndarray, dtype: str) -> None:
    n = max(len(data), 1)
    chunk_rows = min(CHUNK_ROWS, n)
    shard_rows = chunk_rows * max(1, min(SHARD_ROWS // CHUNK_ROWS, -(-n // chunk_rows)))
    tail = data.shape[1:]
    arr = g.create_array(name, shape=data.shape, dtype=dtype,
                         chunks=(chunk_rows, *tail), shards=(shard_rows, *tail))
    if len(data):
        arr[...] = data


def _stamp() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:10]}"


def _part_attrs(path: Path) -> dict[str, Any] | None:
    """A part's attributes, from its group's zarr.json read directly (much faster than
    zarr.open_group); None if there is none (not a part, or moved away)."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return meta.get("attributes", {}) if isinstance(meta, dict) else None


def _part_name(unit: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in unit)
    if not safe or safe.startswith("."):
        raise ValueError(f"unit {unit!r}: not a usable part name")
    return safe


def read_root_attrs(path: Path, option: str = "STORE") -> dict[str, Any]:
    """Read and validate the root attributes of a store.

    Raises:
        InputError: missing directory, not a store, missing keys or a newer schema version.
    """
    meta_path = path / "zarr.json"
    if not path.is_dir():
        raise InputError(f"{option} {path}: no such store; build one with `rpd cache`")
    if not meta_path.is_file():
        raise InputError(f"{option} {path}: not a teacher-action store (no zarr.json); "
                         "pass a directory written by `rpd cache`")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{meta_path}: not valid JSON ({e}); rebuild the store") from None
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise InputError(f"{option} {path}: not a teacher-action store (attributes lack "
                         f"{', '.join(missing)}); pass a directory written by `rpd cache`")
    version = attrs["schema_version"]
    if not isinstance(version, int) or version > STORE_SCHEMA_VERSION:
        raise InputError(f"{option} {path}: store schema version {version} is newer than this "
                         f"rpd understands ({STORE_SCHEMA_VERSION}); upgrade rpd")
    try:
        KeySpec.from_dict(attrs["key_spec"])
    except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
        raise InputError(f"{option} {path}: the key_spec in {meta_path} is not a valid key spec "
                         f"({type(e).__name__}: {str(e)[:80]}); rebuild the store with "
                         "`rpd cache`") from None
    return attrs


def identity_mismatch(have: StoreIdentity, want: StoreIdentity) -> str | None:
    """A short description of the first difference that makes labels invalid, or None."""
    checks = [
        ("teacher fingerprint", have.teacher_fingerprint, want.teacher_fingerprint),
        ("env", have.env_id, want.env_id),
        ("control mode", have.control_mode, want.control_mode),
    ]
    for what, h, w in checks:
        if h != w:
            return f"made for {what} {h}, not {w}"
    if have.key_spec != want.key_spec:
        return (f"made with another key spec ({_describe(have.key_spec)}) than requested "
                f"({_describe(want.key_spec)})")
    if have.obs_dim != want.obs_dim or have.action_dim != want.action_dim:
        return (f"made for obs/action dims {have.obs_dim}/{have.action_dim}, not "
                f"{want.obs_dim}/{want.action_dim}")
    return None


def _describe(spec: KeySpec) -> str:
    dims = "all dims" if spec.dims is None else f"dims {','.join(map(str, spec.dims))}"
    if spec.method == "fixed" and len(set(spec.scale)) == 1:
        return f"{dims}, fixed scale {spec.scale[0]:g}"
    return f"{dims}, {spec.method} scale"


def _discard(staging: Path) -> None:
    """Remove an unpublished part. zarr writes chunks concurrently on its own event-loop
    thread, and a failed write (a full disk) does not cancel its siblings, so files can still
    appear for a moment after the first removal."""
    for _ in range(20):
        shutil.rmtree(staging, ignore_errors=True)
        time.sleep(0.05)
        if not staging.exists():
            return


def compact_store(path: str | Path, *, stale_staging_s: float = 3600.0) -> tuple[int, int]:
    """Merge every teacher's finished parts into one part per teacher; delete merged parts
    and stale staging dirs. Parts of different teachers are never merged.

    Safe beside running writers (their new parts are left alone) and readers (superseded
    parts are ignored before they are deleted). One compaction at a time (a lock file).

    Returns:
        (parts merged, rows of every teacher in the store).
    """
    store = TeacherStore.open(path)
    lock = store.path / COMPACT_LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise InputError(f"STORE {store.path}: another compaction is running ({lock} exists); "
                         "wait, or delete that file if no compaction is running") from None
    try:
        os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
        os.close(fd)
        now = time.time()
        for d in store.staging_dirs():
            with contextlib.suppress(OSError):
                if now - d.stat().st_mtime > stale_staging_s:
                    shutil.rmtree(d, ignore_errors=True)
        found = store._all_parts()
        superseded = {s for part in found for s in part.supersedes}
        parts = [p for p in found if p.name not in superseded]
        by_teacher: dict[str, list[PartInfo]] = {}
        for p in parts:
            by_teacher.setdefault(p.teacher_fingerprint, []).append(p)
        # Only parts known now are ever deleted: writers may add new ones meanwhile.
        old = [p.path for p in found if p.name in superseded]
        merged = [group for group in by_teacher.values() if len(group) > 1]
        for group in merged:
            _merge(store, group)
        _remove(old + [p.path for group in merged for p in group])
        store.refresh_counts()
        return sum(len(group) for group in merged), sum(p.rows for p in parts)
    finally:
        lock.unlink(missing_ok=True)


def _merge(store: TeacherStore, parts: list[PartInfo]) -> None:
    """Publish one part holding the rows of `parts` (all of one teacher) and superseding them.
    The old parts stay until the caller removes them."""
    import zarr

    rows = Rows.concat([_read_part(p.path) for p in parts], store.identity)
    name = f"{COMPACT_PREFIX}{_stamp()}"
    staging = store.path / STAGING_DIR / name
    g = zarr.open_group(str(staging), mode="w", zarr_format=3)
    for arr_name, dtype in ARRAYS.items():
        _write_array(g, arr_name, getattr(rows, arr_name), dtype)
    g.attrs.update(dict(complete=True, unit=name, units=sorted({u for p in parts
                                                                for u in p.units}),
                        rows=len(rows),
                        rejected_nonfinite=sum(p.rejected_nonfinite for p in parts),
                        supersedes=sorted(p.name for p in parts),
                        teacher_fingerprint=parts[0].teacher_fingerprint,
                        writer=f"{socket.gethostname()}:{os.getpid()}", created=_now()))
    fsync_tree(staging)
    os.rename(staging, store.path / PARTS_DIR / name)
    fsync_dir(store.path / PARTS_DIR)  # the merged part is on disk before the old go


def _remove(dirs: list[Path]) -> None:
    """Delete parts: first renamed out of parts/ (atomic), so a reader that read a part and
    then finds it still in place knows it read it whole (Zarr reads missing chunks as 0)."""
    for d in dirs:
        trash = d.parent.parent / STAGING_DIR / f".trash-{d.name}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(d, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


def _read_part(path: Path) -> Rows:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return Rows(**{name: g[name][...] for name in ARRAYS})
