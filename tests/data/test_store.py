"""The teacher-action store (Zarr v3 parts): round trip, concurrency, kills, guardrails."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from rpd.data import store as store_mod
from rpd.data.store import (
    PARTS_DIR,
    SOURCES,
    KeySpec,
    Rows,
    StoreIdentity,
    TeacherStore,
    compact_store,
)
from rpd.errors import InputError

D, A, S = 5, 3, 7


def identity(**kw: object) -> StoreIdentity:
    base = dict(teacher_fingerprint="f" * 16, env_id="PickCube-v1",
                control_mode="pd_ee_delta_pose", key_spec=KeySpec.fixed(D, [0, 2, 4], 0.5),
                obs_dim=D, action_dim=A, state_dim=S, teacher_kind="cnn-tiny")
    base.update(kw)
    return StoreIdentity(**base)  # type: ignore[arg-type]


def make_rows(n: int, episode: int, key_spec: KeySpec, source: str = "demo") -> Rows:
    """Rows whose every value encodes (episode, step), so a reader can check them."""
    step = np.arange(n)
    obs = episode * 1000.0 + step[:, None] + np.arange(D)[None] / 10.0
    return Rows(key=key_spec.keys(obs), obs=obs, teacher_action=obs[:, :A] * 2,
                env_state=np.tile(obs[:, :1], (1, S)), episode=np.full(n, episode), step=step,
                source=np.full(n, SOURCES.index(source)))


def check_consistent(rows: Rows, key_spec: KeySpec) -> None:
    expect_obs = rows.episode[:, None] * 1000.0 + rows.step[:, None] + np.arange(D)[None] / 10.0
    np.testing.assert_allclose(rows.obs, expect_obs, rtol=1e-6)
    np.testing.assert_allclose(rows.teacher_action, expect_obs[:, :A] * 2, rtol=1e-6)
    np.testing.assert_allclose(rows.key, key_spec.keys(expect_obs), rtol=1e-5)


def test_key_spec_math_and_round_trip() -> None:
    obs = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]])
    spec = KeySpec.from_data(obs, dims=[2, 0])
    assert spec.dims == (0, 2) and spec.method == "std"
    assert spec.offset == (2.0, 4.0) and spec.scale == (1.0, 1.0)
    np.testing.assert_allclose(spec.keys(obs), [[-1, -1], [1, 1]])
    assert KeySpec.from_dict(spec.to_dict()) == spec
    const = KeySpec.from_data(np.ones((4, 2)))
    assert const.scale == (0.01, 0.01)  # constant dims floored, not divided by 0
    fixed = KeySpec.fixed(3, scale=2.0)
    np.testing.assert_allclose(fixed.keys(obs)[0], [0.5, 1.0, 1.5])
    with pytest.raises(InputError, match="--key-dims"):
        KeySpec.fixed(3, [3])


def test_round_trip_counts_and_nan_rejection(tmp_path: Path) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    rows = make_rows(10, 1, ident.key_spec)
    bad = make_rows(4, 2, ident.key_spec, source="live")
    bad.teacher_action[1, 0] = np.nan
    bad.teacher_action[3, 2] = np.inf
    assert store.write_part(rows, "demo-x-1").written == 10
    res = store.write_part(bad)
    assert (res.written, res.rejected_nonfinite) == (2, 2)
    again = store.write_part(rows, "demo-x-1")  # same unit: written at most once
    assert again.existed and again.written == 0

    reopened = TeacherStore.open(tmp_path / "s", ident)
    back = reopened.read()
    assert len(back) == 12
    check_consistent(back, ident.key_spec)
    assert np.isfinite(back.teacher_action).all()
    assert sorted(back.step[back.episode == 2].tolist()) == [0, 2]
    assert reopened.refresh_counts() == {"demo": 10, "teacher-rollout": 0,
                                         "noisy-rollout": 0, "live": 2}
    root = zarr.open_group(str(tmp_path / "s"), mode="r")
    assert root.attrs["counts"]["live"] == 2 and root.attrs["schema_version"] == 1
    assert root.attrs["key_spec"] == ident.key_spec.to_dict()
    summary = reopened.summary()
    assert summary.entries == 12 and summary.rejected_nonfinite == 2 and summary.parts == 2
    # Real Zarr v3 arrays: sharded, with the documented dtypes and shapes.
    part = zarr.open_group(str(tmp_path / "s" / PARTS_DIR / "demo-x-1"), mode="r")
    assert part["key"].shape == (10, 3) and part["key"].dtype == np.float32
    assert part["source"].dtype == np.uint8 and part["episode"].dtype == np.int64
    assert part["obs"].metadata.zarr_format == 3 and part["obs"].shards is not None


@pytest.mark.parametrize("change, match", [
    (dict(teacher_fingerprint="0" * 16), "teacher fingerprint"),
    (dict(env_id="PushCube-v1"), "env PickCube-v1"),
    (dict(control_mode="pd_joint_pos"), "control mode"),
    (dict(key_spec=KeySpec.fixed(D, [0, 2, 4], 1.0)), "key spec"),
])
def test_mismatched_store_is_refused(tmp_path: Path, change: dict, match: str) -> None:
    TeacherStore.create_or_open(tmp_path / "s", identity())
    with pytest.raises(InputError, match=match) as err:
        TeacherStore.create_or_open(tmp_path / "s", identity(**change))
    assert "--allow-mismatch" in str(err.value) and "\n" not in str(err.value)
    store = TeacherStore.create_or_open(tmp_path / "s", identity(**change), allow_mismatch=True)
    assert store.identity == identity()  # the store keeps what it was made for


def test_not_a_store_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such store"):
        TeacherStore.open(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(InputError, match="not a teacher-action store"):
        TeacherStore.open(tmp_path / "junk")
    with pytest.raises(InputError, match="choose a new path"):
        TeacherStore.create_or_open(tmp_path / "junk", identity())
    TeacherStore.create_or_open(tmp_path / "s", identity())
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    root.attrs["schema_version"] = 99
    with pytest.raises(InputError, match="upgrade rpd"):
        TeacherStore.open(tmp_path / "s")


# ---- several processes ---------------------------------------------------------------------


def _writer(path: str, writer: int, shared: list[int], delay: float) -> None:
    store = TeacherStore.open(path)
    spec = store.identity.key_spec
    for i in range(12):
        ep = writer * 100 + i
        store.write_part(make_rows(7 + i, ep, spec), f"own-{ep}")
        time.sleep(delay)
    for ep in shared:  # both writers race for the same units
        store.write_part(make_rows(5, ep, spec), f"shared-{ep}")
    for _ in range(3):
        store.write_part(make_rows(3, 900 + writer, spec, source="live"))


def test_two_processes_write_at_once_every_row_exactly_once(tmp_path: Path) -> None:
    ident = identity()
    TeacherStore.create_or_open(tmp_path / "s", ident)
    ctx = mp.get_context("spawn")
    shared = list(range(500, 510))
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "s"), w, shared, 0.0))
             for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = TeacherStore.open(tmp_path / "s").read()
    check_consistent(rows, ident.key_spec)
    live = rows.source == SOURCES.index("live")
    pairs = list(zip(rows.episode[~live].tolist(), rows.step[~live].tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # no duplicates
    expected = sum(7 + i for i in range(12)) * 2 + 5 * len(shared)
    assert int((~live).sum()) == expected
    assert sorted(set(rows.episode[rows.episode >= 500].tolist())) == [*shared, 901, 902]
    assert int(live.sum()) == 2 * 3 * 3  # live parts never collide


def _slow_writer(path: str) -> None:
    """Writes big parts forever (until killed)."""
    store = TeacherStore.open(path)
    spec = store.identity.key_spec
    ep = 0
    while True:
        store.write_part(make_rows(20_000, ep, spec), f"ep-{ep}")
        ep += 1


def test_killed_writer_leaves_a_readable_store_and_resume_completes(tmp_path: Path) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    proc = mp.get_context("spawn").Process(target=_slow_writer, args=(str(tmp_path / "s"),))
    proc.start()
    deadline = time.monotonic() + 120
    while (len(store.parts()) < 2 or not store.staging_dirs()) and time.monotonic() < deadline:
        time.sleep(0.01)  # until it is inside writing its third part or later
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    done = store.finished_units()
    assert len(done) >= 2
    rows = store.read()
    check_consistent(rows, ident.key_spec)  # no half-written part is visible
    assert len(rows) == 20_000 * len(done)
    # Resume: a new writer skips finished units and completes the rest, each exactly once.
    before = {p.name: p.path.stat().st_ino for p in store.parts()}
    wanted = [f"ep-{i}" for i in range(len(done) + 2)]
    for i, unit in enumerate(wanted):
        res = store.write_part(make_rows(20_000, i, ident.key_spec), unit)
        assert res.existed == (unit in done)
    after = {p.name: p.path.stat().st_ino for p in store.parts()}
    assert all(after[name] == ino for name, ino in before.items())  # finished parts untouched
    rows = store.read(["episode", "step"])
    assert len(rows) == 20_000 * len(wanted)
    assert sorted(set(rows.episode.tolist())) == list(range(len(wanted)))


def test_compaction_merges_parts_and_a_crashed_compaction_shows_no_duplicates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    for ep in range(4):
        store.write_part(make_rows(6, ep, ident.key_spec), f"u-{ep}")
    store.write_part(make_rows(3, 9, ident.key_spec, source="live"))
    # A compaction that dies after publishing the merged part, before deleting the old ones.
    monkeypatch.setattr(store_mod, "_remove", lambda dirs: None)
    assert compact_store(tmp_path / "s") == (5, 27)
    assert len(list((tmp_path / "s" / PARTS_DIR).iterdir())) == 6
    rows = store.read()
    assert len(rows) == 27
    check_consistent(rows, ident.key_spec)
    monkeypatch.undo()
    store.write_part(make_rows(2, 7, ident.key_spec), "u-7")  # a writer after the merge
    assert compact_store(tmp_path / "s") == (2, 29)
    parts = store.parts()
    assert len(parts) == 1 and len(list((tmp_path / "s" / PARTS_DIR).iterdir())) == 1
    assert {"u-0", "u-3", "u-7"} <= store.finished_units()
    assert store.write_part(make_rows(6, 0, ident.key_spec), "u-0").existed  # merged units too
    rows = store.read()
    check_consistent(rows, ident.key_spec)
    assert store.summary().by_source["live"] == 3


@pytest.mark.parametrize("damage", ["missing array", "empty chunk"])
def test_a_damaged_part_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    """A part that lost an array, or a chunk emptied by a power loss before its data reached
    the disk, is named in one error that says how to fix it (it used to recurse forever)."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    store.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    store.write_part(make_rows(4, 2, ident.key_spec), "demo-x-2")
    part = sorted((tmp_path / "s" / PARTS_DIR).iterdir())[0]
    if damage == "missing array":
        import shutil

        shutil.rmtree(part / "obs")
    else:
        chunk = next(p for p in (part / "teacher_action").rglob("*")
                     if p.is_file() and p.name != "zarr.json")
        chunk.write_bytes(b"")
    with pytest.raises(InputError, match=f"part {part.name} .*damaged.*delete"):
        TeacherStore.open(tmp_path / "s").read()


def test_a_part_is_flushed_to_disk_before_it_becomes_visible(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Every file of a part is fsynced before the rename that publishes it, and the parts
    directory after it (what power loss needs; os.fsync is observed, not replaced)."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    res = store.write_part(make_rows(5, 1, ident.key_spec), "demo-x-1")
    final = str(tmp_path / "s" / PARTS_DIR / res.name)
    i = events.index(("rename", final))
    synced_before = {path for kind, path in events[:i] if kind == "fsync"}
    files = {str(p).split(res.name, 1)[1] for p in Path(final).rglob("*") if p.is_file()}
    synced = {p.split(".staging", 1)[-1].split("/", 2)[-1] for p in synced_before}
    assert files and all(f.lstrip("/") in synced for f in files), (files, synced)
    assert len([p for p in synced_before if "teacher_action" in p]) >= 1
    assert len(synced_before) >= len(files)  # every file (and directory) of the part
    assert ("fsync", str(tmp_path / "s" / PARTS_DIR)) in events[i + 1:]


def test_a_slow_duplicate_writer_after_a_compaction_leaves_no_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer B checked that unit U was not written, then slept; meanwhile writer A wrote U and
    a compaction merged it (removing U's own part). B's rename then succeeds (the name is free
    again): B must notice the merged copy and take its part back."""
    ident = identity()
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    store.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    store.write_part(make_rows(4, 2, ident.key_spec), "demo-x-2")
    assert compact_store(tmp_path / "s")[0] == 2
    slow = TeacherStore.open(tmp_path / "s")
    monkeypatch.setattr(slow, "has_unit", lambda unit: False)  # B's check ran before A wrote
    res = slow.write_part(make_rows(6, 1, ident.key_spec), "demo-x-1")
    assert res.existed and res.written == 0
    rows = TeacherStore.open(tmp_path / "s").read()
    assert len(rows) == 10  # every row once
    check_consistent(rows, ident.key_spec)


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 kB tmpfs (needs the right to mount, as root on the test machine)."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_while_writing_a_part_is_one_error_and_loses_nothing(tiny_disk: Path
                                                                         ) -> None:
    from rpd.errors import StorageError

    ident = identity()
    store = TeacherStore.create_or_open(tiny_disk / "s", ident)
    store.write_part(make_rows(10, 1, ident.key_spec), "demo-x-1")
    with pytest.raises(StorageError, match=r"store part .* No space left on device.*intact"):
        for episode in range(2, 200):  # ~100 kB per part (7 arrays x 1000 rows)
            store.write_part(make_rows(1000, episode, ident.key_spec), f"demo-x-{episode}")
    rows = TeacherStore.open(tiny_disk / "s").read()
    check_consistent(rows, ident.key_spec)  # every published part whole, nothing half-written
    assert len(rows) >= 10 and not any((tiny_disk / "s" / ".staging").iterdir())
